//! CPython 3.11 for wasm32-wasi (scripts/build-python-wasm.sh, issue 19) as
//! a client of the wasm file system in a real microVM: the interpreter
//! (compiled ahead of time, as emberd runs it) finds its zipped stdlib in
//! /var/runtime, imports a handler module from /var/task, writes and reads
//! /tmp, lists /var/task, and an escape attempt is refused (errno 76).

mod agent_common;

use std::path::PathBuf;
use std::process::Command;

use agent_common::*;
use ember_abi::protocol::Tree;
use ember_host::env::Environment;

/// The cached CPython build (built on first use, ~4 min once).
fn python_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("bash")
        .arg(root.join("scripts/build-python-wasm.sh"))
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// `zip` (stored with -0) of `dir`'s `what` entries.
fn zip_dir(dir: &std::path::Path, what: &str, stored: bool, name: &str) -> Vec<u8> {
    let out = std::env::temp_dir().join(format!("ember-py-{}-{name}.zip", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let mut c = Command::new("zip");
    c.current_dir(dir).args(["-q", "-r"]);
    if stored {
        c.arg("-0");
    }
    assert!(c.arg(&out).arg(what).status().unwrap().success());
    let b = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    b
}

const SCRIPT: &str = r#"
import sys, json, os, hashlib
sys.path.insert(0, "/var/task")
import lambda_function
with open("/tmp/x.txt", "w") as f:
    f.write("hello")
r = {"v": sys.version.split()[0], "h": lambda_function.handler(1),
     "tmp": open("/tmp/x.txt").read(), "task": sorted(os.listdir("/var/task")),
     "sha": hashlib.sha256(b"a").hexdigest()[:8]}
try:
    open("/var/task/../../etc/passwd").read()
    r["escape"] = "read"
except OSError as e:
    r["escape"] = e.errno
print(json.dumps(r, sort_keys=True))
"#;

#[test]
fn cpython_reads_its_stdlib_and_task_and_writes_tmp_in_a_microvm() {
    let py = python_dir();
    let runtime = zip_dir(&py, "lib", true, "runtime");
    let task_dir = std::env::temp_dir().join(format!("ember-py-task-{}", std::process::id()));
    std::fs::create_dir_all(&task_dir).unwrap();
    std::fs::write(
        task_dir.join("lambda_function.py"),
        "def handler(e):\n    return {'echo': e}\n",
    )
    .unwrap();
    let task = zip_dir(&task_dir, "lambda_function.py", false, "task");
    let _ = std::fs::remove_dir_all(&task_dir);
    let code = std::fs::read(py.join("python.wasm")).unwrap();
    let mut env = Environment::launch(&config(256)).expect("launch");
    let mut s = spec(code, 256, 60_000);
    // argv[0] is the handler; stdin (the payload) is the script.
    s.handler = "python".into();
    s.env = vec![("PYTHONHOME".into(), "/var/runtime".into())];
    s.trees = vec![
        Tree {
            mount: "/var/runtime".into(),
            archive: runtime,
        },
        Tree {
            mount: "/var/task".into(),
            archive: task,
        },
    ];
    s.ephemeral_mib = 64;
    let s = compiled(&env, s);
    env.init(&s).expect("init");
    let inv = env
        .invoke(&request("py", SCRIPT.as_bytes(), 60_000))
        .unwrap();
    let out = match inv.result {
        Ok(p) => String::from_utf8(p).unwrap(),
        Err(e) => panic!("{}: {}", e.error_type, e.message),
    };
    assert_eq!(
        out.trim(),
        r#"{"escape": 76, "h": {"echo": 1}, "sha": "ca978112", "task": ["lambda_function.py"], "tmp": "hello", "v": "3.11.2"}"#
    );
    assert_eq!(env.shutdown(), "exit status: 0");
}

const HANDLER: &str = r#"
import hashlib
COUNT = 0
def lambda_handler(event, context):
    global COUNT
    COUNT += 1
    print("log line", COUNT)
    return {"count": COUNT, "event": event, "rid": context.aws_request_id,
            "fn": context.function_name, "version": context.function_version,
            "mem": context.memory_limit_in_mb,
            "arn": context.invoked_function_arn,
            "left": 0 < context.get_remaining_time_in_millis() <= 60000,
            "sha": hashlib.sha256(b"a").hexdigest()[:8]}
"#;

/// The reactor build (python-reactor.wasm, runtime.zip + the bootstrap):
/// the interpreter starts and imports the handler once, at Init; each
/// invocation calls `lambda_handler(event, context)` with that invocation's
/// context; module state persists across warm invocations; print → logs.
#[test]
fn the_reactor_imports_the_handler_once_and_serves_warm_invocations() {
    let py = python_dir();
    let task_dir = std::env::temp_dir().join(format!("ember-py-rtask-{}", std::process::id()));
    std::fs::create_dir_all(&task_dir).unwrap();
    std::fs::write(task_dir.join("lambda_function.py"), HANDLER).unwrap();
    let task = zip_dir(&task_dir, "lambda_function.py", false, "rtask");
    let _ = std::fs::remove_dir_all(&task_dir);
    let code = std::fs::read(py.join("python-reactor.wasm")).unwrap();
    let mut env = Environment::launch(&config(256)).expect("launch");
    let mut s = spec(code, 256, 60_000);
    s.handler = "lambda_function.lambda_handler".into();
    s.env = vec![
        ("PYTHONHOME".into(), "/var/runtime".into()),
        ("PYTHONPATH".into(), "/var/runtime:/var/task".into()),
    ];
    s.trees = vec![
        Tree {
            mount: "/var/runtime".into(),
            archive: std::fs::read(py.join("runtime.zip")).unwrap(),
        },
        // emberd sends the bootstrap as a second archive at /var/runtime.
        Tree {
            mount: "/var/runtime".into(),
            archive: zip_dir(
                &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../images/python-wasm"),
                "ember_bootstrap.py",
                true,
                "boot",
            ),
        },
        Tree {
            mount: "/var/task".into(),
            archive: task,
        },
    ];
    s.ephemeral_mib = 64;
    let s = compiled(&env, s);
    env.init(&s).expect("init");
    for i in 1..=3 {
        let id = format!("req-{i}");
        let inv = env
            .invoke(&request(&id, format!("{{\"n\": {i}}}").as_bytes(), 60_000))
            .unwrap();
        let out = match inv.result {
            Ok(p) => String::from_utf8(p).unwrap(),
            Err(e) => panic!("{}: {}", e.error_type, e.message),
        };
        let v: serde_json::Value = serde_json::from_str(&out).expect(&out);
        assert_eq!(v["count"], i, "{out}");
        assert_eq!(v["event"]["n"], i, "{out}");
        assert_eq!(v["rid"], id.as_str(), "{out}");
        assert_eq!(v["fn"], "test-fn", "{out}");
        assert_eq!(v["version"], "3", "{out}");
        assert_eq!(v["mem"], "256", "{out}");
        assert_eq!(v["left"], true, "{out}");
        assert_eq!(v["sha"], "ca978112", "{out}");
        let logs = format!("{:?}", inv.logs);
        assert!(logs.contains(&format!("log line {i}")), "{logs}");
    }
    assert_eq!(env.shutdown(), "exit status: 0");
}
