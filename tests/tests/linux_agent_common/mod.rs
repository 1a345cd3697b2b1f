//! The Linux agent (`ember-agent`) as an ordinary host process, for the
//! `linux_agent*.rs` tests: the binary (built on demand), a scratch task
//! root, and [`Agent`]: the agent started with its host transport on a Unix
//! socket, driven by ember-host's `AgentConn` (the same protocol code as
//! over vsock).
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ember_host::env::{
    AgentConn, AgentError, AgentKind, Code, InitSpec, InvokeReply, InvokeRequest, LogStream,
};
use ember_tests::linux_guest::{accept_agent, free_port};

pub static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// `$EMBER_AGENT`, else `ember-agent` beside the test binary, else built
/// into a private target dir (so no cargo lock is shared with this run).
pub fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("EMBER_AGENT") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let beside = dir.join("ember-agent");
    if beside.exists() {
        return beside;
    }
    let target = dir.join("ember-agent-build");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "-p",
            "ember-guest",
            "--features",
            "linux-agent",
        ])
        .args(["--bin", "ember-agent", "--target-dir"])
        .arg(&target)
        .status()
        .expect("run cargo build for ember-agent");
    assert!(status.success(), "building ember-agent failed");
    target.join("release/ember-agent")
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new() -> Scratch {
        let n = NEXT_DIR.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("ember-la-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("task")).unwrap();
        Scratch(dir)
    }
    pub fn task(&self) -> PathBuf {
        self.0.join("task")
    }
    /// Writes an executable file into the task root.
    pub fn exec(&self, name: &str, text: &str) {
        let p = self.task().join(name);
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A running agent and the host end of its connection.
pub struct Agent {
    pub child: Child,
    pub conn: AgentConn<UnixStream>,
    pub api_port: u16,
    pub scratch: Scratch,
}

impl Agent {
    pub fn start(scratch: Scratch, extra: &[&str]) -> Agent {
        let sock = scratch.0.join("host.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let api_port = free_port();
        let stderr = fs::File::create(scratch.0.join("agent.stderr")).unwrap();
        let child = Command::new(agent_bin())
            .args(["--unix"])
            .arg(&sock)
            .args(["--runtime-api", &format!("127.0.0.1:{api_port}")])
            .args(["--runtime-dir"])
            .arg(scratch.0.join("runtime"))
            .args(extra)
            .stdin(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn ember-agent");
        let conn = accept_agent(&listener, "agent");
        assert_eq!(conn.ready().agent, AgentKind::Linux);
        assert!(conn.ready().agent_version.starts_with("ember-agent "));
        Agent {
            child,
            conn,
            api_port,
            scratch,
        }
    }

    pub fn init(&mut self, handler: &str, timeout_ms: u32) -> Result<u64, AgentError> {
        let spec = InitSpec {
            function_name: "fn-under-test".into(),
            function_version: "7".into(),
            handler: handler.into(),
            code: Code::Path(self.scratch.task().display().to_string()),
            env: vec![("GREETING".into(), "hello".into())],
            memory_mib: 256,
            timeout_ms,
            random_seed: None,
            trees: Vec::new(),
            ephemeral_mib: 0,
        };
        self.conn
            .init(&spec, Duration::from_secs(20))
            .map(|r| r.init_us)
    }

    pub fn invoke(&mut self, id: &str, payload: &[u8], timeout_ms: u64) -> InvokeReply {
        let req = InvokeRequest {
            request_id: id.into(),
            payload: payload.to_vec().into(),
            deadline_ms: unix_ms() + timeout_ms,
            invoked_function_arn: "arn:aws:lambda:local:000000000000:function:fn-under-test".into(),
            trace_id: "Root=1-abc-def;Sampled=0".into(),
            client_context: String::new(),
            cognito_identity: String::new(),
        };
        self.conn
            .invoke(&req, Duration::from_millis(timeout_ms + 20_000))
            .unwrap_or_else(|e| panic!("invoke {id}: {e}; agent stderr: {}", self.stderr()))
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(self.scratch.0.join("agent.stderr")).unwrap_or_default()
    }

    /// Shutdown must make the agent exit 0 promptly.
    pub fn shutdown(mut self) {
        self.conn.shutdown().unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "agent exit {st}; stderr: {}", self.stderr());
                return;
            }
            assert!(Instant::now() < until, "agent ignored Shutdown");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn lines(inv: &InvokeReply, stream: LogStream) -> Vec<&str> {
    inv.logs
        .lines
        .iter()
        .filter(|l| l.stream == stream)
        .map(|l| l.line.as_str())
        .collect()
}
