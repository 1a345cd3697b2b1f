//! The wasm agent under load and under attack: 1,000 sequential invocations
//! without ember-vmm memory growth, and a hostile "host" that speaks raw
//! bytes to the agent (malformed bodies, lying lengths, garbage, out-of-order
//! messages) — the agent must answer or exit cleanly, never crash or hang.

mod agent_common;

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_common::*;
use ember_abi::protocol::{read_frame, write_frame, Code, Message, AGENT_PORT, MAGIC, VERSION};

#[test]
fn thousand_invocations_without_vmm_memory_growth() {
    let mut env = environment(echo(), 32, 5000);
    let payload = vec![b'a'; 4096];
    let mut rss_after_warmup = 0;
    for i in 0..1000 {
        let inv = env
            .invoke(&request(&format!("r{i}"), &payload, 5000))
            .unwrap();
        assert_eq!(inv.result.as_deref(), Ok(&payload[..]), "invocation {i}");
        if i == 99 {
            rss_after_warmup = rss_kib(env.pid());
        }
    }
    let rss_end = rss_kib(env.pid());
    assert!(rss_after_warmup > 0);
    let growth = rss_end.saturating_sub(rss_after_warmup);
    assert!(growth <= 1024, "ember-vmm RSS grew by {growth} KiB over 900 invocations ({rss_after_warmup} -> {rss_end} KiB)");
}

/// An agent VM wired to a listener this test controls directly.
struct RawAgent {
    child: Child,
    stream: UnixStream,
    dir: PathBuf,
}

impl RawAgent {
    fn start(tag: &str) -> RawAgent {
        let dir = std::env::temp_dir().join(format!("ember-hostile-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let uds = dir.join("v.sock");
        let listener = UnixListener::bind(format!("{}_{AGENT_PORT}", uds.display())).unwrap();
        let child = Command::new(ember_tests::probes::ember_vmm())
            .args([
                "--no-api",
                "--kernelless",
                "--mem-mib",
                "64",
                "--console",
                "off",
                "--kernel",
            ])
            .arg(agent_elf())
            .arg("--vsock")
            .arg(format!("3:{}", uds.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut a = RawAgent { child, stream, dir };
        assert!(matches!(
            read_frame(&mut a.stream).unwrap(),
            Message::Ready { .. }
        ));
        a
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn send(&mut self, m: &Message) {
        write_frame(&mut self.stream, m).unwrap();
    }

    fn recv(&mut self) -> Message {
        read_frame(&mut self.stream).unwrap()
    }

    /// The VM's exit code, waiting at most 10 s (a hang fails the test).
    fn exit_code(mut self) -> Option<i32> {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return st.code();
            }
            assert!(Instant::now() < until, "the agent VM hung");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RawAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn raw_frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut f = MAGIC.to_vec();
    f.push(VERSION);
    f.push(kind);
    f.extend_from_slice(&(body.len() as u32).to_le_bytes());
    f.extend_from_slice(body);
    f
}

fn init(code: Vec<u8>) -> Message {
    Message::Init {
        function_name: "f".into(),
        function_version: "1".into(),
        handler: "handle".into(),
        code: Code::Inline(code),
        env: vec![],
        memory_mib: 8,
        timeout_ms: 2000,
        random_seed: [5; 32],
        trees: Vec::new(),
        ephemeral_mib: 0,
    }
}

fn invoke(id: &str, payload: &[u8]) -> Message {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    Message::Invoke {
        request_id: id.into(),
        payload: payload.to_vec(),
        deadline_ms: now + 2000,
        invoked_function_arn: String::new(),
        trace_id: String::new(),
        client_context: String::new(),
        cognito_identity: String::new(),
    }
}

#[test]
fn malformed_frames_from_a_hostile_host_do_not_crash_the_agent() {
    let mut a = RawAgent::start("skip");
    // Invoke before Init: an error reply.
    a.send(&invoke("early", b"x"));
    assert!(
        matches!(a.recv(), Message::Error { error_type, .. } if error_type == "Runtime.NotInitialized")
    );
    // Frames with a valid header but a bad body: a string length that lies,
    // bad UTF-8, trailing bytes, an unknown kind, an agent-only message.
    for f in [
        raw_frame(5, &u32::MAX.to_le_bytes()),
        raw_frame(10, &[1, 0, 0, 0, 0xff]),
        raw_frame(9, &[1, 2, 3]),
        raw_frame(77, &[0; 16]),
        Message::InitDone { init_us: 1 }.to_frame().unwrap(),
    ] {
        a.send_raw(&f);
        assert!(
            matches!(a.recv(), Message::Log { .. }),
            "each bad frame is reported as a log line"
        );
    }
    // The agent still works: Init, then invocations, then a second Init is refused.
    a.send(&init(echo()));
    assert!(matches!(a.recv(), Message::InitDone { .. }));
    a.send(&invoke("r1", b"still alive"));
    assert!(matches!(a.recv(), Message::Result { payload, .. } if payload == b"still alive"));
    a.send(&init(echo()));
    assert!(matches!(a.recv(), Message::InitError { .. }));
    a.send(&Message::Shutdown);
    assert_eq!(a.exit_code(), Some(0));
}

#[test]
fn garbage_and_lying_lengths_end_the_agent_cleanly() {
    // Bytes that are not a frame: the agent says why and exits with code 12.
    let mut a = RawAgent::start("garbage");
    a.send_raw(b"GET / HTTP/1.1\r\nHost: agent\r\n\r\n");
    assert!(matches!(a.recv(), Message::Fatal { .. }));
    assert_eq!(a.exit_code(), Some(12));
    // A length over the cap.
    let mut a = RawAgent::start("cap");
    let mut f = raw_frame(5, &[]);
    f[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    a.send_raw(&f);
    assert!(matches!(a.recv(), Message::Fatal { .. }));
    assert_eq!(a.exit_code(), Some(12));
    // A frame that promises 5 MiB and then the host hangs up: clean exit.
    let mut a = RawAgent::start("eof");
    let mut f = raw_frame(5, &[0; 1000]);
    f[4..8].copy_from_slice(&(5u32 << 20).to_le_bytes());
    a.send_raw(&f);
    a.stream.shutdown(std::net::Shutdown::Both).unwrap();
    assert_eq!(a.exit_code(), Some(0));
}
