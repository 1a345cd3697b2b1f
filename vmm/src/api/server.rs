//! The API thread: accepts connections on the Unix socket, frames and routes
//! requests ([`super::http`], [`super::request`]), hands each [`Action`] to
//! the VMM thread and writes its answer back. One `poll` loop over
//! non-blocking sockets, so a client that sends half a request (or never
//! reads its answer) holds only its own connection: it is dropped after
//! [`STALL_TIMEOUT`] without progress, and the oldest idle connection makes
//! room when [`MAX_CONNECTIONS`] are open. Registers: the listener, every
//! connection, and the reply eventfd the VMM thread signals.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use super::http::{self, Parsed, Response, MAX_BODY, MAX_HEAD};
use super::request::{self, Action};

/// Open connections at most; a new one replaces the oldest idle one.
pub const MAX_CONNECTIONS: usize = 16;
/// A connection with a partial request, or an unread answer, that makes no
/// progress for this long is closed.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// A keep-alive connection with nothing pending is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// After its last answer, a connection being closed is read (and the bytes
/// dropped) for at most this long, so that the client reads the answer
/// rather than a reset for the bytes it sent that were never read.
const LINGER: Duration = Duration::from_secs(1);
/// How long answers given before the VM ended may take to reach their
/// clients when the process exits.
pub(super) const EXIT_FLUSH: Duration = Duration::from_millis(500);
/// Longest sleep of the loop (the stall sweep runs at least this often).
const POLL_MS: i32 = 250;

/// A routed request on its way to the VMM thread.
pub struct Job {
    pub conn: u64,
    pub action: Action,
}

/// The API thread's ends of the two channels.
pub struct Channels {
    pub jobs: Sender<Job>,
    /// Written after each job is sent: the VMM thread polls it.
    pub job_evt: EventFd,
    pub replies: Receiver<(u64, Response)>,
    /// The VMM thread writes it after each reply.
    pub reply_evt: EventFd,
}

struct Conn {
    stream: UnixStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// A request of this connection is with the VMM thread.
    waiting: bool,
    /// Close once `outbuf` is written.
    closing: bool,
    continue_sent: bool,
    last_progress: Instant,
    /// When the write side was shut down (closing, everything answered).
    shut: Option<Instant>,
    /// The client hung up while its request was with the VMM thread.
    hung_up: bool,
}

impl Conn {
    fn idle(&self) -> bool {
        !self.waiting && self.inbuf.is_empty() && self.outbuf.is_empty()
    }

    fn expired(&self, now: Instant) -> bool {
        if let Some(t) = self.shut {
            return now.duration_since(t) > LINGER;
        }
        let limit = if self.idle() {
            IDLE_TIMEOUT
        } else {
            STALL_TIMEOUT
        };
        !self.waiting && now.duration_since(self.last_progress) > limit
    }

    /// Closing, and nothing left to answer: shut the write side (once) and
    /// only drain what the client still sends.
    fn lingering(&mut self) -> bool {
        if !self.closing || self.waiting || !self.outbuf.is_empty() {
            return false;
        }
        if self.shut.is_none() {
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
            self.shut = Some(Instant::now());
        }
        true
    }
}

/// Serves the listener until the VMM thread hangs up (its ends dropped).
pub fn run(listener: UnixListener, ch: Channels) {
    if let Err(e) = listener.set_nonblocking(true) {
        crate::log_error!("API socket: cannot make it non-blocking: {e}");
        return;
    }
    let mut conns: BTreeMap<u64, Conn> = BTreeMap::new();
    let mut next_id = 0u64;
    loop {
        let mut fds = vec![
            pollfd(listener.as_raw_fd(), libc::POLLIN),
            pollfd(ch.reply_evt.as_raw_fd(), libc::POLLIN),
        ];
        let ids: Vec<u64> = conns.keys().copied().collect();
        for id in &ids {
            let Some(c) = conns.get_mut(id).filter(|c| !c.hung_up) else {
                // Nothing to wait for (a hung-up socket would wake the loop
                // until its answer is dropped).
                fds.push(pollfd(-1, 0));
                continue;
            };
            let mut ev = 0;
            if (!c.waiting && !c.closing) || c.lingering() {
                ev |= libc::POLLIN;
            }
            if !c.outbuf.is_empty() {
                ev |= libc::POLLOUT;
            }
            fds.push(pollfd(c.stream.as_raw_fd(), ev));
        }
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, POLL_MS) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            crate::log_error!("API socket: poll failed: {e}");
            return;
        }
        if fds[1].revents != 0 {
            let _ = ch.reply_evt.read();
            loop {
                match ch.replies.try_recv() {
                    Ok((id, resp)) => {
                        if conns.get(&id).is_some_and(|c| c.hung_up) {
                            conns.remove(&id);
                        } else if let Some(c) = conns.get_mut(&id) {
                            c.waiting = false;
                            c.outbuf.extend_from_slice(&resp.to_bytes(c.closing));
                            c.last_progress = Instant::now();
                        }
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        // The VM ended: answers already given still reach
                        // their clients before the process exits.
                        flush_all(&mut conns);
                        return;
                    }
                }
            }
        }
        for (i, id) in ids.iter().enumerate() {
            let revents = fds[i + 2].revents;
            if revents == 0 {
                continue;
            }
            let Some(c) = conns.get_mut(id) else { continue };
            let alive = service(*id, c, revents, &ch);
            if !alive {
                conns.remove(id);
            }
        }
        // Answers that arrived may unblock pipelined requests.
        for (id, c) in conns.iter_mut() {
            if !c.waiting && !c.closing && !c.inbuf.is_empty() {
                if let Err(()) = process(*id, c, &ch) {
                    c.closing = true;
                }
            }
        }
        let now = Instant::now();
        conns.retain(|_, c| !c.expired(now));
        if fds[0].revents != 0 {
            accept_all(&listener, &mut conns, &mut next_id);
        }
    }
}

/// Writes what every connection still has to send, for at most
/// [`EXIT_FLUSH`] in all (a client that does not read is left behind).
fn flush_all(conns: &mut BTreeMap<u64, Conn>) {
    let end = Instant::now() + EXIT_FLUSH;
    for c in conns.values_mut() {
        while !c.outbuf.is_empty() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let mut fd = [pollfd(c.stream.as_raw_fd(), libc::POLLOUT)];
            // SAFETY: `fd` is a valid array of one pollfd.
            let n = unsafe { libc::poll(fd.as_mut_ptr(), 1, left.as_millis().max(1) as i32) };
            if n <= 0 || fd[0].revents & libc::POLLOUT == 0 {
                break;
            }
            match c.stream.write(&c.outbuf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    c.outbuf.drain(..n);
                }
            }
        }
    }
}

fn pollfd(fd: i32, events: i16) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

fn accept_all(listener: &UnixListener, conns: &mut BTreeMap<u64, Conn>, next_id: &mut u64) {
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) => {
                crate::log_warn!("API socket: accept failed: {e}");
                return;
            }
        };
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        if conns.len() >= MAX_CONNECTIONS {
            // Make room: a connection whose client left, else the one
            // without a request in flight that has been quiet longest
            // (clients keep idle keep-alive connections open). None (every
            // slot has a request with the VMM): the new client is turned away.
            let victim = conns
                .iter()
                .find(|(_, c)| c.hung_up)
                .or_else(|| {
                    conns
                        .iter()
                        .filter(|(_, c)| !c.waiting)
                        .min_by_key(|(_, c)| c.last_progress)
                })
                .map(|(id, _)| *id);
            match victim {
                Some(id) => {
                    conns.remove(&id);
                }
                None => continue,
            }
        }
        conns.insert(
            *next_id,
            Conn {
                stream,
                inbuf: Vec::new(),
                outbuf: Vec::new(),
                waiting: false,
                closing: false,
                continue_sent: false,
                last_progress: Instant::now(),
                shut: None,
                hung_up: false,
            },
        );
        *next_id += 1;
    }
}

/// Reads and writes what the socket allows. False: drop the connection.
fn service(id: u64, c: &mut Conn, revents: i16, ch: &Channels) -> bool {
    if revents & libc::POLLOUT != 0 && !c.outbuf.is_empty() {
        match c.stream.write(&c.outbuf) {
            Ok(n) => {
                c.outbuf.drain(..n);
                c.last_progress = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return false,
        }
    }
    if c.waiting && revents & (libc::POLLHUP | libc::POLLERR) != 0 {
        c.hung_up = true;
    }
    let readable = revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0;
    if readable && c.lingering() {
        let mut buf = [0u8; 8192];
        return match c.stream.read(&mut buf) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => e.kind() == ErrorKind::WouldBlock,
        };
    }
    if readable && !c.waiting && !c.closing {
        let mut buf = [0u8; 8192];
        match c.stream.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                c.inbuf.extend_from_slice(&buf[..n]);
                c.last_progress = Instant::now();
                if c.inbuf.len() > MAX_HEAD + MAX_BODY + 4 {
                    // Only a pipelining client gets here: framing below
                    // refuses any single request this large.
                    c.closing = true;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return false,
        }
        if process(id, c, ch).is_err() {
            c.closing = true;
        }
    }
    true
}

/// Frames the next request of `c`: routed to the VMM thread, answered here
/// when it is not a valid request. `Err`: close after the answer.
fn process(id: u64, c: &mut Conn, ch: &Channels) -> Result<(), ()> {
    match http::parse(&c.inbuf) {
        Ok(Parsed::Incomplete { continue_100 }) => {
            if continue_100 && !c.continue_sent {
                c.outbuf.extend_from_slice(http::CONTINUE);
                c.continue_sent = true;
            }
            Ok(())
        }
        Ok(Parsed::Complete(req, used)) => {
            c.inbuf.drain(..used);
            c.continue_sent = false;
            c.closing = req.close;
            match request::route(&req) {
                Ok(action) => {
                    if ch.jobs.send(Job { conn: id, action }).is_err() {
                        return Err(());
                    }
                    let _ = ch.job_evt.write(1);
                    c.waiting = true;
                }
                Err(e) => c
                    .outbuf
                    .extend_from_slice(&e.response().to_bytes(req.close)),
            }
            Ok(())
        }
        Err(e) => {
            c.inbuf.clear();
            c.outbuf.extend_from_slice(&e.response().to_bytes(true));
            Err(())
        }
    }
}
