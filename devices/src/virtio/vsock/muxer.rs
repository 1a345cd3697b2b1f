//! The hybrid Unix-socket backend, wire-compatible with Firecracker's
//! (docs/vsock.md, `unix/muxer.rs`):
//! - host-initiated: a host process connects to `uds_path` and writes
//!   `CONNECT <port>\n`; we send the guest a REQUEST from a fresh host port;
//!   on RESPONSE we write `OK <host_port>\n` and then relay bytes; a guest
//!   RST (nobody listening) closes the stream;
//! - guest-initiated: a REQUEST to CID 2 port P connects (nonblocking) to
//!   `<uds_path>_<P>`: RESPONSE on success, RST otherwise.
//!
//! Connections are keyed by (host port, guest port). Streams are
//! nonblocking and edge-triggered on the event loop; host bytes are read only
//! while the guest has credit, guest bytes are buffered at most up to the
//! credit we advertise ([`CONN_TX_BUF`]), so memory stays bounded.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use event_manager::{EventOps, EventSet, Events};

use super::muxer_conn::{Conn, Io, State, CONN_TX_BUF};
use super::{op, shut, Hdr, VsockBackend, VsockError, HOST_CID, TYPE_STREAM};
use crate::virtio::log_limit::LogLimiter;
use crate::warn_limited;

/// Most connections at once (as Firecracker).
pub const MAX_CONNS: usize = 1023;
/// Most host connections still sending their CONNECT line.
const MAX_HANDSHAKES: usize = 64;
/// Longest CONNECT line accepted.
const MAX_LINE: usize = 32;
/// Most control packets waiting for guest RX buffers: a guest that floods
/// requests without reading its RX queue loses replies instead of growing us.
pub const MAX_CTRL: usize = 4096;
/// Host ports handed to host-initiated connections start here.
const FIRST_HOST_PORT: u32 = 1 << 30;

type Key = (u32, u32);

enum Ctrl {
    /// A packet about a live connection, built when sent (fresh credit).
    Conn(Key, u16, u32),
    /// A reply to a packet that matched no connection.
    Raw(Hdr),
}

struct Handshake {
    stream: UnixStream,
    line: Vec<u8>,
}

/// The Firecracker-style hybrid vsock backend.
pub struct UnixMuxer {
    cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    registered: bool,
    handshakes: HashMap<RawFd, Handshake>,
    conns: HashMap<Key, Conn>,
    by_fd: HashMap<RawFd, Key>,
    ctrl: VecDeque<Ctrl>,
    read_queue: VecDeque<Key>,
    next_port: u32,
    complaints: LogLimiter,
}

/// Connects to a Unix socket without ever blocking: a listener whose
/// backlog is full counts as absent (the guest gets RST).
fn connect_nonblocking(path: &Path) -> std::io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(std::io::Error::from(ErrorKind::InvalidInput));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket we own; OwnedFd closes it on every path.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes that outlives the call.
    let rc = unsafe { libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), len) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(UnixStream::from(owned))
}

fn conn_events(stream: &UnixStream) -> Events {
    Events::new(
        stream,
        EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED,
    )
}

impl UnixMuxer {
    /// Listens on `uds_path` for host-initiated connections of guest `cid`.
    pub fn new(cid: u64, uds_path: &Path) -> Result<Self, VsockError> {
        let bind_err = |source| VsockError::Bind {
            path: uds_path.display().to_string(),
            source,
        };
        let listener = UnixListener::bind(uds_path).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        Ok(UnixMuxer {
            cid,
            uds_path: uds_path.to_path_buf(),
            listener,
            registered: false,
            handshakes: HashMap::new(),
            conns: HashMap::new(),
            by_fd: HashMap::new(),
            ctrl: VecDeque::new(),
            read_queue: VecDeque::new(),
            next_port: FIRST_HOST_PORT,
            complaints: LogLimiter::new(),
        })
    }

    /// Live connections.
    pub fn conn_count(&self) -> usize {
        self.conns.len()
    }

    /// Control packets waiting for guest RX buffers.
    pub fn pending_control(&self) -> usize {
        self.ctrl.len()
    }

    /// Guest bytes buffered for host peers, over all connections.
    pub fn buffered_bytes(&self) -> usize {
        self.conns.values().map(Conn::pending_tx).sum()
    }

    fn hdr(&mut self, key: Key, op: u16, len: u32, flags: u32) -> Hdr {
        let fwd_cnt = match self.conns.get_mut(&key) {
            Some(c) => {
                c.fwd_cnt_sent = c.fwd_cnt;
                c.fwd_cnt
            }
            None => 0,
        };
        Hdr {
            src_cid: HOST_CID,
            dst_cid: self.cid,
            src_port: key.0,
            dst_port: key.1,
            len,
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc: CONN_TX_BUF,
            fwd_cnt,
        }
    }

    /// Queues a control packet for the guest, bounded, one credit update per
    /// connection at a time.
    fn push_ctrl(&mut self, c: Ctrl) {
        if let Ctrl::Conn(key, op::CREDIT_UPDATE, _) = c {
            let dup = self
                .ctrl
                .iter()
                .any(|q| matches!(q, Ctrl::Conn(k, op::CREDIT_UPDATE, _) if *k == key));
            if dup {
                return;
            }
        }
        if self.ctrl.len() >= MAX_CTRL {
            warn_limited!(
                self.complaints,
                "vsock: guest is not taking control packets; dropping one"
            );
            return;
        }
        self.ctrl.push_back(c);
    }

    fn rst_reply(&mut self, h: &Hdr) {
        if h.op != op::RST {
            let r = Hdr {
                src_cid: HOST_CID,
                dst_cid: self.cid,
                src_port: h.dst_port,
                dst_port: h.src_port,
                type_: TYPE_STREAM,
                op: op::RST,
                ..Hdr::default()
            };
            self.push_ctrl(Ctrl::Raw(r));
        }
    }

    fn close(&mut self, key: Key, ops: &mut EventOps) {
        if let Some(c) = self.conns.remove(&key) {
            self.by_fd.remove(&c.stream.as_raw_fd());
            let _ = ops.remove(Events::empty(&c.stream));
        }
    }

    fn reset_conn(&mut self, key: Key, ops: &mut EventOps) {
        let rst = self.hdr(key, op::RST, 0, 0);
        self.close(key, ops);
        self.push_ctrl(Ctrl::Raw(rst));
    }

    fn add_conn(&mut self, key: Key, stream: UnixStream, state: State, ops: &mut EventOps) -> bool {
        if let Err(e) = ops.add(conn_events(&stream)) {
            warn_limited!(self.complaints, "vsock: cannot watch a connection: {e:?}");
            return false;
        }
        self.by_fd.insert(stream.as_raw_fd(), key);
        self.conns.insert(key, Conn::new(stream, state));
        true
    }

    /// Puts `key` in the read queue if the guest can take bytes from it now.
    fn maybe_queue(&mut self, key: Key) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        let can = c.state == State::Established
            && c.readable
            && !c.host_eof
            && c.guest_shut & shut::RCV == 0
            && c.guest_credit() > 0;
        if can && !c.queued {
            c.queued = true;
            self.read_queue.push_back(key);
        }
    }

    /// After the guest shut down (part of) its side: half-close or finish.
    fn maybe_finish(&mut self, key: Key, ops: &mut EventOps) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if c.pending_tx() > 0 {
            return; // flushed first, on the next writable event
        }
        if c.guest_shut & shut::SEND != 0 {
            let _ = c.stream.shutdown(std::net::Shutdown::Write);
        }
        if c.guest_shut == shut::SEND | shut::RCV {
            // §5.10.6.6: a full shutdown ends with our RST.
            self.reset_conn(key, ops);
        }
    }

    fn accept_all(&mut self, ops: &mut EventOps) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.handshakes.len() >= MAX_HANDSHAKES
                        || stream.set_nonblocking(true).is_err()
                    {
                        continue; // dropped: the host sees EOF
                    }
                    if ops.add(Events::new(&stream, EventSet::IN)).is_ok() {
                        self.handshakes.insert(
                            stream.as_raw_fd(),
                            Handshake {
                                stream,
                                line: Vec::new(),
                            },
                        );
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return, // WouldBlock, or a transient accept error
            }
        }
    }

    /// Reads the `CONNECT <port>\n` line byte by byte, so no relayed byte
    /// after it is consumed here.
    fn handshake(&mut self, fd: RawFd, ops: &mut EventOps) {
        let Some(hs) = self.handshakes.get_mut(&fd) else {
            return;
        };
        let mut byte = [0u8; 1];
        let done = loop {
            match hs.stream.read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => break true,
                Ok(1) if hs.line.len() < MAX_LINE => hs.line.push(byte[0]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                _ => break false, // EOF, error or an overlong line
            }
        };
        let Some(hs) = self.handshakes.remove(&fd) else {
            return;
        };
        let _ = ops.remove(Events::empty(&hs.stream));
        let port = std::str::from_utf8(&hs.line)
            .ok()
            .and_then(|l| l.trim_end().strip_prefix("CONNECT "))
            .and_then(|p| p.trim().parse::<u32>().ok());
        let Some(guest_port) = port.filter(|_| done && self.conns.len() < MAX_CONNS) else {
            return; // dropped: the host sees EOF
        };
        let mut host_port = self.next_port;
        while self.conns.contains_key(&(host_port, guest_port)) {
            host_port = host_port.wrapping_add(1).max(FIRST_HOST_PORT);
        }
        self.next_port = host_port.wrapping_add(1).max(FIRST_HOST_PORT);
        let key = (host_port, guest_port);
        if self.add_conn(key, hs.stream, State::LocalInit, ops) {
            self.push_ctrl(Ctrl::Conn(key, op::REQUEST, 0));
        }
    }

    fn guest_connect(&mut self, key: Key, h: &Hdr, ops: &mut EventOps) {
        let path = PathBuf::from(format!("{}_{}", self.uds_path.display(), key.0));
        let stream = match connect_nonblocking(&path) {
            Ok(s) if self.conns.len() < MAX_CONNS => s,
            _ => return self.rst_reply(h),
        };
        if !self.add_conn(key, stream, State::Established, ops) {
            return self.rst_reply(h);
        }
        if let Some(c) = self.conns.get_mut(&key) {
            (c.guest_buf_alloc, c.guest_fwd_cnt) = (h.buf_alloc, h.fwd_cnt);
        }
        self.push_ctrl(Ctrl::Conn(key, op::RESPONSE, 0));
    }

    fn conn_event(&mut self, key: Key, set: EventSet, ops: &mut EventOps) {
        log::trace!("vsock: host stream {key:?} events {:#x}", set.bits());
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if set.intersects(EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP) {
            c.readable = true;
        }
        if set.contains(EventSet::ERROR) {
            return self.reset_conn(key, ops);
        }
        if set.contains(EventSet::OUT) && c.pending_tx() > 0 {
            if c.flush_tx() == Io::Error {
                return self.reset_conn(key, ops);
            }
            if c.credit_update_due() {
                self.push_ctrl(Ctrl::Conn(key, op::CREDIT_UPDATE, 0));
            }
            self.maybe_finish(key, ops);
        }
        self.maybe_queue(key);
    }
}

impl VsockBackend for UnixMuxer {
    fn send_pkt(&mut self, h: &Hdr, payload: &[u8], ops: &mut EventOps) {
        log::trace!(
            "vsock: guest -> host op {} {}:{} -> {} len {}",
            h.op,
            h.src_cid,
            h.src_port,
            h.dst_port,
            h.len
        );
        if h.type_ != TYPE_STREAM {
            return self.rst_reply(h);
        }
        let key = (h.dst_port, h.src_port);
        let Some(c) = self.conns.get_mut(&key) else {
            return match h.op {
                op::REQUEST => self.guest_connect(key, h, ops),
                _ => self.rst_reply(h),
            };
        };
        (c.guest_buf_alloc, c.guest_fwd_cnt) = (h.buf_alloc, h.fwd_cnt);
        match (h.op, c.state) {
            (op::RESPONSE, State::LocalInit) => {
                c.state = State::Established;
                let ok = format!("OK {}\n", key.0);
                if c.push_own(ok.as_bytes()) != Ok(true) {
                    return self.reset_conn(key, ops);
                }
            }
            (op::RW, State::Established) if c.guest_shut & shut::SEND == 0 => {
                match c.push_tx(payload) {
                    Ok(true) if c.credit_update_due() => {
                        self.push_ctrl(Ctrl::Conn(key, op::CREDIT_UPDATE, 0))
                    }
                    Ok(true) => {}
                    Ok(false) => {
                        warn_limited!(
                            self.complaints,
                            "vsock: guest overran its credit on {key:?}"
                        );
                        return self.reset_conn(key, ops);
                    }
                    Err(()) => return self.reset_conn(key, ops),
                }
            }
            (op::SHUTDOWN, _) => {
                c.guest_shut |= h.flags & (shut::RCV | shut::SEND);
                self.maybe_finish(key, ops);
            }
            (op::RST, _) => return self.close(key, ops),
            (op::CREDIT_REQUEST, _) => self.push_ctrl(Ctrl::Conn(key, op::CREDIT_UPDATE, 0)),
            (op::CREDIT_UPDATE, _) => {}
            _ => return self.reset_conn(key, ops),
        }
        self.maybe_queue(key);
    }

    fn recv_pkt(&mut self, buf: &mut [u8], ops: &mut EventOps) -> Option<(Hdr, usize)> {
        while let Some(c) = self.ctrl.pop_front() {
            match c {
                Ctrl::Raw(h) => return Some((h, 0)),
                Ctrl::Conn(key, op, flags) if self.conns.contains_key(&key) => {
                    return Some((self.hdr(key, op, 0, flags), 0));
                }
                Ctrl::Conn(..) => {} // the connection is gone (its RST was queued)
            }
        }
        while let Some(key) = self.read_queue.pop_front() {
            let Some(c) = self.conns.get_mut(&key) else {
                continue;
            };
            c.queued = false;
            if c.state != State::Established || c.host_eof || c.guest_shut & shut::RCV != 0 {
                continue;
            }
            let max = (c.guest_credit() as usize).min(buf.len());
            if max == 0 {
                continue; // requeued by the guest's next credit update
            }
            match c.read_rx(&mut buf[..max]) {
                Io::Bytes(0) => continue,
                Io::Bytes(n) => {
                    self.maybe_queue(key);
                    return Some((self.hdr(key, op::RW, n as u32, 0), n));
                }
                Io::Eof => {
                    c.host_eof = true;
                    return Some((self.hdr(key, op::SHUTDOWN, 0, shut::SEND), 0));
                }
                Io::Error => {
                    let rst = self.hdr(key, op::RST, 0, 0);
                    self.close(key, ops);
                    return Some((rst, 0));
                }
            }
        }
        None
    }

    fn has_pending_rx(&self) -> bool {
        !self.ctrl.is_empty() || !self.read_queue.is_empty()
    }

    fn activate(&mut self, ops: &mut EventOps) {
        if !self.registered {
            match ops.add(Events::new(&self.listener, EventSet::IN)) {
                Ok(()) => self.registered = true,
                Err(e) => log::error!("vsock: cannot watch {}: {e:?}", self.uds_path.display()),
            }
        }
    }

    fn process(&mut self, events: &Events, ops: &mut EventOps) -> bool {
        let fd = events.fd();
        if fd == self.listener.as_raw_fd() {
            self.accept_all(ops);
        } else if self.handshakes.contains_key(&fd) {
            self.handshake(fd, ops);
        } else if let Some(&key) = self.by_fd.get(&fd) {
            self.conn_event(key, events.event_set(), ops);
        } else {
            return false;
        }
        true
    }

    fn reset(&mut self, ops: &mut EventOps) {
        let keys: Vec<Key> = self.conns.keys().copied().collect();
        for key in keys {
            self.close(key, ops);
        }
        for (_, hs) in self.handshakes.drain() {
            let _ = ops.remove(Events::empty(&hs.stream));
        }
        self.ctrl.clear();
        self.read_queue.clear();
    }

    fn undelivered_bytes(&self) -> usize {
        self.buffered_bytes()
    }
}

impl Drop for UnixMuxer {
    fn drop(&mut self) {
        // The socket file is ours; leave no stale path behind.
        let _ = std::fs::remove_file(&self.uds_path);
    }
}
