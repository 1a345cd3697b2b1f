//! The host end of the protocol against hostile agents on a real Unix socket
//! pair (issue 13, items 3 and 4): frames trickled a byte at a time, lengths
//! announced but never sent, host-only kinds sent by the agent, an agent that
//! stops reading. Each test fails without the fix it names.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ember_abi::protocol::{read_frame, write_frame, Message, ProtocolError, VERSION};

use super::*;

fn ready() -> Message {
    Message::Ready {
        protocol_version: VERSION,
        agent: AgentKind::Wasm,
        agent_version: "hostile".into(),
        boot_us: 1,
        timings: vec![],
    }
}

fn spec() -> InitSpec {
    InitSpec {
        function_name: "f".into(),
        function_version: "1".into(),
        handler: "h".into(),
        code: Code::Inline(vec![0; 16]),
        env: vec![],
        memory_mib: 128,
        timeout_ms: 1000,
        random_seed: Some([1; 32]),
        trees: Vec::new(),
        ephemeral_mib: 0,
    }
}

/// A frame header: magic, version, kind, body length.
fn header(kind: u8, len: u32) -> Vec<u8> {
    let mut h = b"EM".to_vec();
    h.extend([VERSION, kind]);
    h.extend(len.to_le_bytes());
    h
}

/// Writes `bytes` one at a time, `gap` apart, until the peer goes away.
fn trickle(s: &mut UnixStream, bytes: &[u8], gap: Duration) {
    for b in bytes {
        if s.write_all(&[*b]).is_err() {
            return;
        }
        thread::sleep(gap);
    }
}

/// An agent that answers `Ready` and `Init` honestly, then runs `then`.
fn honest_until_invoke(
    then: impl FnOnce(UnixStream) + Send + 'static,
) -> (UnixStream, thread::JoinHandle<()>) {
    let (host, mut guest) = UnixStream::pair().unwrap();
    let t = thread::spawn(move || {
        write_frame(&mut guest, &ready()).unwrap();
        let _ = read_frame(&mut guest);
        write_frame(&mut guest, &Message::InitDone { init_us: 1 }).unwrap();
        let _ = read_frame(&mut guest);
        then(guest)
    });
    (host, t)
}

fn invoke(
    conn: &mut AgentConn<impl Transport>,
    timeout: Duration,
) -> Result<InvokeReply, AgentError> {
    let req = InvokeRequest {
        request_id: "r".into(),
        payload: b"{}".to_vec().into(),
        ..Default::default()
    };
    conn.invoke(&req, timeout)
}

#[test]
fn a_trickled_ready_is_cut_off_at_the_handshake_deadline() {
    let (host, mut guest) = UnixStream::pair().unwrap();
    let frame = ready().to_frame().unwrap();
    // One byte every 100 ms: each read() sees data well within any per-read
    // timeout, so only a deadline over the whole frame stops it.
    let t =
        thread::spawn(move || trickle(&mut guest, &frame.repeat(100), Duration::from_millis(100)));
    let start = Instant::now();
    let r = AgentConn::handshake(host, Duration::from_millis(500));
    let took = start.elapsed();
    assert!(matches!(r, Err(AgentError::Timeout)), "{:?}", r.err());
    // Without the deadline over the whole frame it never ends.
    assert!(took < Duration::from_secs(3), "cut off after {took:?}");
    drop(r);
    t.join().unwrap();
}

#[test]
fn a_trickled_result_is_cut_off_at_the_invocation_deadline() {
    let (host, agent) = honest_until_invoke(|mut s| {
        // A Result announcing 64 KiB, then a byte every 50 ms forever.
        let mut bytes = header(6, 64 * 1024);
        bytes.extend(vec![0u8; 64 * 1024]);
        trickle(&mut s, &bytes, Duration::from_millis(50));
    });
    let mut conn = AgentConn::handshake(host, Duration::from_secs(5)).unwrap();
    conn.init(&spec(), Duration::from_secs(5)).unwrap();
    let start = Instant::now();
    let r = invoke(&mut conn, Duration::from_millis(600));
    let took = start.elapsed();
    assert!(matches!(r, Err(AgentError::Timeout)), "{:?}", r.err());
    assert!(took < Duration::from_secs(3), "cut off after {took:?}");
    drop(conn);
    agent.join().unwrap();
}

#[test]
fn a_log_flood_does_not_outlive_the_invocation_deadline() {
    let (host, agent) = honest_until_invoke(|mut s| {
        let log = Message::Log {
            request_id: "r".into(),
            stream: LogStream::Stdout,
            line: "x".repeat(1000),
        };
        let frame = log.to_frame().unwrap();
        while s.write_all(&frame).is_ok() {}
    });
    let mut conn = AgentConn::handshake(host, Duration::from_secs(5)).unwrap();
    conn.init(&spec(), Duration::from_secs(5)).unwrap();
    let start = Instant::now();
    let r = invoke(&mut conn, Duration::from_millis(500));
    assert!(matches!(r, Err(AgentError::Timeout)), "{:?}", r.err());
    assert!(start.elapsed() < Duration::from_secs(3));
    drop(conn);
    agent.join().unwrap();
}

#[test]
fn an_agent_that_stops_reading_cannot_block_init() {
    let (host, mut guest) = UnixStream::pair().unwrap();
    write_frame(&mut guest, &ready()).unwrap();
    let mut conn = AgentConn::handshake(host, Duration::from_secs(5)).unwrap();
    // 8 MiB of inline code: far more than the socket buffer holds, and the
    // agent never reads it.
    let mut s = spec();
    s.code = Code::Inline(vec![0; 8 << 20]);
    let start = Instant::now();
    let r = conn.init(&s, Duration::from_millis(500));
    assert!(matches!(r, Err(AgentError::Timeout)), "{:?}", r.err());
    assert!(start.elapsed() < Duration::from_secs(3));
    drop(guest);
}

#[test]
fn host_only_kinds_from_the_agent_are_refused_from_their_header() {
    // An agent announcing a 64 MiB `Init` (the one kind allowed that much)
    // must not make the host allocate it, or wait for it.
    let (host, agent) = honest_until_invoke(|mut s| {
        let _ = s.write_all(&header(2, 64 << 20));
        thread::sleep(Duration::from_secs(2));
    });
    let mut conn = AgentConn::handshake(host, Duration::from_secs(5)).unwrap();
    conn.init(&spec(), Duration::from_secs(5)).unwrap();
    let start = Instant::now();
    let r = invoke(&mut conn, Duration::from_secs(5));
    assert!(
        matches!(
            r,
            Err(AgentError::Protocol(ProtocolError::WrongDirection(2)))
        ),
        "{:?}",
        r.err()
    );
    assert!(start.elapsed() < Duration::from_secs(1));
    drop(conn);
    agent.join().unwrap();
}

#[test]
fn agent_frames_are_capped_by_what_their_kind_needs() {
    // A Log frame bigger than one line needs: refused from the header.
    let (host, agent) = honest_until_invoke(|mut s| {
        let _ = s.write_all(&header(8, 1 << 20));
        thread::sleep(Duration::from_millis(500));
    });
    let mut conn = AgentConn::handshake(host, Duration::from_secs(5)).unwrap();
    conn.init(&spec(), Duration::from_secs(5)).unwrap();
    let r = invoke(&mut conn, Duration::from_secs(5));
    assert!(
        matches!(
            r,
            Err(AgentError::Protocol(ProtocolError::FrameTooLarge { .. }))
        ),
        "{:?}",
        r.err()
    );
    drop(conn);
    agent.join().unwrap();
}

/// A transport that records the largest buffer any `read` was given: the
/// host's memory for a frame is what it hands to `read`.
struct Recording {
    s: UnixStream,
    largest: Arc<AtomicUsize>,
}

impl Read for Recording {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.largest.fetch_max(buf.len(), Ordering::Relaxed);
        self.s.read(buf)
    }
}

impl Write for Recording {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.s.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.s.flush()
    }
}

impl Transport for Recording {
    fn set_read_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        self.s.set_read_timeout(t)
    }
    fn set_write_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        self.s.set_write_timeout(t)
    }
}

#[test]
fn an_announced_frame_costs_only_the_bytes_that_arrived() {
    let (host, agent) = honest_until_invoke(|mut s| {
        // The largest Result a frame may announce, then 1 KiB, then silence.
        let mut bytes = header(6, ember_abi::protocol::MAX_FRAME as u32);
        bytes.extend([0u8; 1024]);
        let _ = s.write_all(&bytes);
        thread::sleep(Duration::from_secs(1));
    });
    let largest = Arc::new(AtomicUsize::new(0));
    let t = Recording {
        s: host,
        largest: largest.clone(),
    };
    let mut conn = AgentConn::handshake(t, Duration::from_secs(5)).unwrap();
    conn.init(&spec(), Duration::from_secs(5)).unwrap();
    let r = invoke(&mut conn, Duration::from_millis(300));
    assert!(matches!(r, Err(AgentError::Timeout)), "{:?}", r.err());
    let largest = largest.load(Ordering::Relaxed);
    assert!(
        largest <= 64 * 1024,
        "a read buffer of {largest} bytes for 1 KiB received"
    );
    drop(conn);
    agent.join().unwrap();
}
