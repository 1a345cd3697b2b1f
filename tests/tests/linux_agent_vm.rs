//! The full Linux path under `ember-vmm`: ember's kernel boots the initramfs
//! whose /init is `ember-agent`; the agent mounts the runtime image (drive 0)
//! and the function's code image (drive 1, built from a ZIP), connects to the
//! host over virtio-vsock, and the host-side library (`Environment`) runs
//! invocations of a shell function (`provided`) and a Python function
//! (`python3.11`). Needs hardware virtualization: stock Linux cannot boot on
//! a PVM host, so there the test prints `SKIPPED: <reason>` and returns.

use std::fs;
use std::path::Path;
use std::time::Duration;

use ember_host::agent::{
    Code, Console, Environment, Guest, InitSpec, InvokeRequest, LaunchConfig, LogStream,
};
use ember_tests::linux_guest::{build, code_image_of, unix_ms, BUSYBOX_BOOTSTRAP};

fn skip_reason() -> Option<String> {
    if !Path::new("/dev/kvm").exists() {
        return Some("no /dev/kvm".into());
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        return Some(
            "host KVM is PVM (software virtualization): a stock Linux guest cannot boot; \
             the agent's PID 1 path is covered by linux_qemu_tcg instead"
                .into(),
        );
    }
    if !Path::new("/sys/module/kvm_intel").exists() && !Path::new("/sys/module/kvm_amd").exists() {
        return Some("KVM is neither kvm_intel nor kvm_amd (not hardware-backed)".into());
    }
    None
}

fn launch(kernel: &Path, images: &Path, runtime: &str, code: &Path, dir: &Path) -> Environment {
    let cfg = LaunchConfig {
        vmm: ember_tests::probes::ember_vmm(),
        guest: Guest::Linux {
            kernel: kernel.to_path_buf(),
            initrd: Some(images.join("initramfs.cpio")),
            cmdline: "console=ttyS0 reboot=k panic=-1 quiet".into(),
        },
        mem_mib: 256,
        vcpus: 1,
        work_root: dir.join("env"),
        console: Console::File(dir.join(format!("{runtime}.console"))),
        boot_timeout: Duration::from_secs(30),
        deadline_grace: Duration::from_secs(2),
        drives: vec![
            images.join(format!("{runtime}.squashfs")),
            code.to_path_buf(),
        ],
        extra_args: vec![],
        jail: None,
    };
    Environment::launch(&cfg).unwrap_or_else(|e| {
        let console =
            fs::read_to_string(dir.join(format!("{runtime}.console"))).unwrap_or_default();
        panic!("launch {runtime}: {e}; console:\n{console}")
    })
}

fn spec(handler: &str) -> InitSpec {
    InitSpec {
        function_name: "vm-fn".into(),
        function_version: "1".into(),
        handler: handler.into(),
        code: Code::Path("/var/task".into()),
        env: vec![],
        memory_mib: 256,
        timeout_ms: 10_000,
        random_seed: None,
    }
}

fn request(id: &str, payload: &[u8]) -> InvokeRequest {
    let now = unix_ms();
    InvokeRequest {
        request_id: id.into(),
        payload: payload.to_vec(),
        deadline_ms: now + 10_000,
        invoked_function_arn: "arn:aws:lambda:local:000000000000:function:vm-fn".into(),
        ..Default::default()
    }
}

#[test]
fn shell_and_python_functions_run_in_a_linux_microvm() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let kernel = build("kernel-config/build.sh", &[]);
    let images = build("images/build-images.sh", &["--python"]);
    let dir = std::env::temp_dir().join(format!("ember-lvm-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();

    let code = code_image_of(&dir, "shell", &[("bootstrap", 0o100755, BUSYBOX_BOOTSTRAP)]);
    let mut env = launch(&kernel, &images, "provided", &code, &dir);
    eprintln!(
        "Linux boot to Ready: {:?} (guest says {} us)",
        env.launch_time(),
        env.ready().boot_us
    );
    env.init(&spec("unused")).expect("init shell function");
    let inv = env.invoke(&request("vm-1", br#"{"n":1}"#)).expect("invoke");
    let v: serde_json::Value =
        serde_json::from_slice(&inv.result.clone().expect("response")).unwrap();
    assert_eq!(v["pid1"], "init");
    assert!(
        v["kernel"].as_str().is_some_and(|k| k.starts_with("6.1.")),
        "{v}"
    );
    assert_eq!(v["event"]["n"], 1);
    assert!(inv
        .logs
        .lines
        .iter()
        .any(|l| l.stream == LogStream::Stdout && l.line == "guest got vm-1"));
    env.shutdown();

    let app = "def handler(event, context):\n    return {'py': event['x'] * 2, 'id': context.aws_request_id}\n";
    let code = code_image_of(&dir, "py", &[("app.py", 0o100644, app)]);
    let mut env = launch(&kernel, &images, "python3.11", &code, &dir);
    env.init(&spec("app.handler"))
        .expect("init python function");
    let inv = env
        .invoke(&request("vm-py", br#"{"x":21}"#))
        .expect("invoke");
    let v: serde_json::Value = serde_json::from_slice(&inv.result.expect("response")).unwrap();
    assert_eq!(v["py"], 42);
    assert_eq!(v["id"], "vm-py");
    env.shutdown();
    let _ = fs::remove_dir_all(&dir);
}
