//! `ember-agent` as PID 1 of a real Linux microVM under `ember-vmm`, driven over
//! virtio-vsock by the host library (`Environment`): ember's kernel boots the
//! initramfs whose /init is the agent; the agent mounts the runtime image
//! (drive 0) and the function's code image (drive 1, built from a ZIP) and
//! serves the Lambda Runtime API to the function's runtime. For a `provided`
//! shell `bootstrap` and for `python3.11` (AWS's awslambdaric + boto3): Init,
//! invoke, function error, init error, timeout (process tree killed,
//! environment re-initialised), crash (re-initialised), and 6 MiB payloads
//! both ways. Needs hardware-backed KVM: `#[ignore]`d in a plain `cargo
//! test`, run by tests/hvhost (suite `agent-pid1`).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ember_host::env::{
    AgentError, Code, Console, Environment, FunctionError, Guest, InitSpec, InvokeRequest,
    LaunchConfig, LogStream, MAX_PAYLOAD,
};
use ember_tests::linux_guest::{build, code_image_of, require_hardware_kvm, unix_ms};
use sha2::{Digest, Sha256};

/// A `provided` runtime in busybox sh: `{"echo":...}` returns the payload as
/// is; `{"fail":1}` posts a function error; `{"sleep":1}` starts a child and
/// hangs (for the timeout); `{"crash":1}` kills the runtime; anything else
/// answers facts about the guest. `FAIL_INIT=1` in the environment makes it
/// report an init error and exit. Each start is counted in /tmp/starts.
const SHELL_BOOTSTRAP: &str = r#"#!/bin/sh
api=http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime
echo start >> /tmp/starts
if [ -n "$FAIL_INIT" ]; then
  wget -q -O /dev/null --header 'Lambda-Runtime-Function-Error-Type: Custom.InitRefused' \
    --post-data '{"errorMessage":"init refused on purpose","errorType":"Custom.InitRefused"}' $api/init/error
  exit 1
fi
while true; do
  wget -S -q -O /tmp/ev $api/invocation/next 2> /tmp/hdrs
  id=$(grep -i 'Lambda-Runtime-Aws-Request-Id' /tmp/hdrs | sed 's/.*: *//' | tr -d '\r')
  echo "guest got $id"
  case "$(head -c 12 /tmp/ev)" in
    '{"echo"'*) mv /tmp/ev /tmp/out ;;
    '{"fail"'*)
      wget -q -O /dev/null --header 'Lambda-Runtime-Function-Error-Type: Custom.Failure' \
        --post-data '{"errorMessage":"failed on purpose","errorType":"Custom.Failure"}' $api/invocation/$id/error
      continue ;;
    '{"sleep"'*) sleep 600 & wait ;;
    '{"crash"'*) kill -9 $$ ;;
    *) printf '{"kernel":"%s","pid1":"%s","starts":%s,"sleepers":%s,"event":%s}' "$(uname -r)" \
         "$(cat /proc/1/comm)" "$(wc -l < /tmp/starts)" "$(ps | grep -c '[s]leep 600')" "$(cat /tmp/ev)" > /tmp/out ;;
  esac
  wget -q -O /tmp/resp --post-file=/tmp/out $api/invocation/$id/response
done
"#;

/// The same cases for python3.11 under awslambdaric. boto3 is looked up,
/// not imported: importing it takes ~90 s under nested TCG (the import itself
/// is checked in the image by linux_agent_images).
const PY_APP: &str = r#"
import importlib.metadata, os, subprocess, sys, time
STARTS = open("/tmp/starts", "a+")
STARTS.write("start\n"); STARTS.flush()
if os.environ.get("FAIL_INIT"):
    raise RuntimeError("init refused on purpose")
def handler(event, context):
    print("py got", context.aws_request_id)
    if "echo" in event:
        return event["echo"]
    if "fail" in event:
        raise ValueError("failed on purpose")
    if "sleep" in event:
        subprocess.Popen(["sleep", "600"])
        time.sleep(600)
    if "crash" in event:
        os._exit(3)
    starts = len(open("/tmp/starts").read().split())
    sleepers = sum(1 for p in os.listdir("/proc") if p.isdigit() and
                   open("/proc/%s/cmdline" % p, "rb").read().startswith(b"sleep\0600"))
    return {"py": sys.version.split()[0], "boto3": importlib.metadata.version("boto3"), "pid1": open("/proc/1/comm").read().strip(),
            "starts": starts, "sleepers": sleepers, "fn": context.function_name,
            "remaining_ok": 0 < context.get_remaining_time_in_millis() <= 60000, "event": event}
"#;

fn launch(images: &Path, runtime: &str, code: &Path, dir: &Path) -> Environment {
    let kernel = build("kernel-config/build.sh", &[]);
    let console = dir.join(format!("{runtime}.console"));
    let cfg = LaunchConfig {
        vmm: ember_tests::probes::ember_vmm(),
        guest: Guest::Linux {
            kernel,
            initrd: Some(images.join("initramfs.cpio")),
            // Nested TCG: importing awslambdaric alone can exceed Lambda's
            // 10 s init phase there.
            cmdline: "console=ttyS0 reboot=k panic=-1 quiet ember_init_timeout_ms=120000".into(),
        },
        mem_mib: 256,
        vcpus: 1,
        work_root: dir.join("env"),
        console: Console::File(console.clone()),
        // Nested TCG on a loaded 2-core host: boots take 5-90 s.
        boot_timeout: Duration::from_secs(150),
        // emberd's rule for Linux guests: the grace covers the re-init the
        // agent does after a timeout or crash before it answers (the init
        // phase's limit, raised on the command line above).
        deadline_grace: Duration::from_secs(5 + 120),
        drives: vec![
            images.join(format!("{runtime}.squashfs")),
            code.to_path_buf(),
        ],
        extra_args: vec![],
        jail: None,
        api: false,
        restore: None,
        slot: None,
    };
    let env = Environment::launch(&cfg).unwrap_or_else(|e| {
        panic!(
            "launch {runtime}: {e}; console:\n{}",
            fs::read_to_string(&console).unwrap_or_default()
        )
    });
    println!(
        "{runtime}: boot to Ready {:?} (nested TCG: functional evidence only)",
        env.launch_time()
    );
    env
}

fn spec(handler: &str, env: &[(&str, &str)]) -> InitSpec {
    InitSpec {
        function_name: "vm-fn".into(),
        function_version: "1".into(),
        handler: handler.into(),
        code: Code::Path("/var/task".into()),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        memory_mib: 256,
        timeout_ms: 60_000,
        random_seed: None,
        trees: Vec::new(),
        ephemeral_mib: 0,
    }
}

fn request(id: &str, payload: &[u8], ms: u64) -> InvokeRequest {
    InvokeRequest {
        request_id: id.into(),
        payload: payload.to_vec().into(),
        deadline_ms: unix_ms() + ms,
        invoked_function_arn: "arn:aws:lambda:local:000000000000:function:vm-fn".into(),
        ..Default::default()
    }
}

fn json(inv: &ember_host::env::InvokeReply) -> serde_json::Value {
    let body = inv
        .result
        .clone()
        .unwrap_or_else(|e| panic!("function error: {e:?}"));
    serde_json::from_slice(&body).expect("JSON response")
}

struct Scratch(PathBuf);
impl Scratch {
    fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("ember-lvm-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("scratch");
        Scratch(d)
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `{"echo":"xxx..."}` of exactly MAX_PAYLOAD bytes, and its SHA-256.
fn max_event() -> (Vec<u8>, [u8; 32]) {
    let mut p = b"{\"echo\":\"".to_vec();
    p.resize(MAX_PAYLOAD - 2, b'x');
    p.extend_from_slice(b"\"}");
    let sum = Sha256::digest(&p).into();
    (p, sum)
}

/// The checks both runtimes share, after a successful Init.
fn common_cases(env: &mut Environment, runtime: &str, fail_type: &str) {
    // Invoke.
    let inv = env
        .invoke(&request("r-1", br#"{"n":1}"#, 60_000))
        .expect("invoke");
    let v = json(&inv);
    assert_eq!(v["pid1"], "init", "{runtime}: the agent is PID 1");
    assert_eq!(v["event"]["n"], 1);
    assert_eq!(v["starts"], 1);
    assert!(
        inv.max_memory_kib > 0,
        "{runtime}: Max Memory Used measured"
    );

    // Function error: reported, environment still serves.
    let inv = env
        .invoke(&request("r-fail", br#"{"fail":1}"#, 60_000))
        .expect("invoke");
    let err = inv.result.expect_err("function error");
    assert_eq!(err.error_type, fail_type, "{runtime}");
    assert!(err.message.contains("failed on purpose"), "{}", err.message);
    assert!(!err.fatal);

    // 6 MiB in, ~6 MiB out, byte-exact.
    let (event, sum) = max_event();
    let inv = env
        .invoke(&request("r-big", &event, 120_000))
        .expect("invoke 6 MiB");
    let out = inv.result.expect("6 MiB response");
    if runtime == "provided" {
        assert_eq!(out.len(), MAX_PAYLOAD);
        assert_eq!(
            <[u8; 32]>::from(Sha256::digest(&out)),
            sum,
            "payload changed on the way"
        );
    } else {
        // The handler returns the string: the same bytes minus `{"echo":` and `}`.
        assert_eq!(
            out,
            &event[8..event.len() - 1],
            "payload changed on the way"
        );
    }

    // Timeout: the runtime and the child it started are killed, the runtime
    // is started again, and the environment serves the next call.
    let inv = env
        .invoke(&request("r-sleep", br#"{"sleep":1}"#, 4_000))
        .expect("invoke");
    let err = inv.result.expect_err("timeout");
    assert_eq!(err.error_type, "Sandbox.Timedout", "{runtime}");
    assert!(
        !err.fatal,
        "{runtime}: re-init after a timeout must succeed"
    );
    let v = json(
        &env.invoke(&request("r-2", br#"{"n":2}"#, 60_000))
            .expect("invoke after timeout"),
    );
    assert_eq!(
        v["sleepers"], 0,
        "{runtime}: the timed-out process tree was killed"
    );
    assert_eq!(v["starts"], 2, "{runtime}: re-initialised once");

    // Crash: Runtime.ExitError, re-initialised, serves again.
    let inv = env
        .invoke(&request("r-crash", br#"{"crash":1}"#, 60_000))
        .expect("invoke");
    let err = inv.result.expect_err("crash");
    assert_eq!(err.error_type, "Runtime.ExitError", "{runtime}");
    assert!(!err.fatal);
    let v = json(
        &env.invoke(&request("r-3", br#"{"n":3}"#, 60_000))
            .expect("invoke after crash"),
    );
    assert_eq!(v["starts"], 3);
}

/// Init with FAIL_INIT=1 must fail with the runtime's own error.
fn init_error(images: &Path, runtime: &str, code: &Path, dir: &Path, handler: &str, want: &str) {
    let mut env = launch(images, runtime, code, dir);
    match env.init(&spec(handler, &[("FAIL_INIT", "1")])) {
        Err(AgentError::InitFailed {
            error:
                FunctionError {
                    error_type,
                    message,
                    ..
                },
            ..
        }) => {
            assert_eq!(error_type, want, "{runtime}: {message}");
            assert!(message.contains("init refused on purpose"), "{message}");
        }
        other => panic!("{runtime}: expected InitFailed, got {other:?}"),
    }
    env.shutdown();
}

#[test]
#[ignore = "boots Linux: needs VMX/SVM-backed KVM; run by tests/hvhost/hvhost.sh"]
fn provided_shell_bootstrap_under_the_agent_as_pid1() {
    require_hardware_kvm();
    let images = build("images/build-images.sh", &[]);
    let s = Scratch::new("sh");
    let code = code_image_of(&s.0, "shell", &[("bootstrap", 0o100755, SHELL_BOOTSTRAP)]);
    let mut env = launch(&images, "provided", &code, &s.0);
    env.init(&spec("unused", &[])).expect("init shell function");
    let inv = env
        .invoke(&request("r-0", br#"{"n":0}"#, 60_000))
        .expect("invoke");
    let v = json(&inv);
    assert!(
        v["kernel"].as_str().is_some_and(|k| k.starts_with("6.1.")),
        "{v}"
    );
    assert!(inv
        .logs
        .lines
        .iter()
        .any(|l| l.stream == LogStream::Stdout && l.line == "guest got r-0"));
    // r-0 was a first invoke; the shared cases expect starts == 1 still.
    common_cases(&mut env, "provided", "Custom.Failure");
    env.shutdown();
    init_error(
        &images,
        "provided",
        &code,
        &s.0,
        "unused",
        "Custom.InitRefused",
    );
}

#[test]
#[ignore = "boots Linux: needs VMX/SVM-backed KVM; run by tests/hvhost/hvhost.sh"]
fn python311_awslambdaric_under_the_agent_as_pid1() {
    require_hardware_kvm();
    let images = build("images/build-images.sh", &["--python"]);
    let s = Scratch::new("py");
    let code = code_image_of(&s.0, "py", &[("app.py", 0o100644, PY_APP)]);
    let mut env = launch(&images, "python3.11", &code, &s.0);
    let init = env
        .init(&spec("app.handler", &[]))
        .expect("init python function");
    println!(
        "python3.11 init {} us in the guest (TCG: functional only)",
        init.init_us
    );
    let inv = env
        .invoke(&request("r-0", br#"{"n":0}"#, 60_000))
        .expect("invoke");
    let v = json(&inv);
    assert_eq!(
        v["py"].as_str().map(|s| s.starts_with("3.11.")),
        Some(true),
        "{v}"
    );
    assert!(
        v["boto3"].as_str().is_some_and(|b| !b.is_empty()),
        "boto3 installed in the image: {v}"
    );
    assert_eq!(v["fn"], "vm-fn");
    assert_eq!(v["remaining_ok"], true);
    assert!(inv.logs.lines.iter().any(|l| l.line.contains("py got r-0")));
    common_cases(&mut env, "python3.11", "ValueError");
    env.shutdown();
    // awslambdaric reports an exception raised at import under its class name.
    init_error(
        &images,
        "python3.11",
        &code,
        &s.0,
        "app.handler",
        "RuntimeError",
    );
}
