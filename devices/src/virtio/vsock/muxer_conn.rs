//! One muxed connection: the host Unix stream, the credit both ways, and the
//! bounded buffer of guest bytes the host has not read yet. The guest may
//! have at most [`CONN_TX_BUF`] bytes in flight (the credit we advertise), so
//! a host peer that never reads costs at most that much memory.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;

/// Receive credit we advertise to the guest per connection.
pub const CONN_TX_BUF: u32 = 1024 * 1024;

/// Where the connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Host-initiated: REQUEST sent to the guest, waiting for RESPONSE.
    LocalInit,
    /// Data flows.
    Established,
}

/// What a flush or read did.
#[derive(Debug, PartialEq, Eq)]
pub enum Io {
    /// Moved this many bytes (maybe 0 when the socket is full / empty).
    Bytes(usize),
    /// End of stream (read side).
    Eof,
    /// The socket failed: reset the connection.
    Error,
}

/// One connection's host side.
pub struct Conn {
    pub stream: UnixStream,
    pub state: State,
    /// The guest's advertised buffer and how much of it it consumed.
    pub guest_buf_alloc: u32,
    pub guest_fwd_cnt: u32,
    /// Bytes sent to the guest.
    pub rx_cnt: u32,
    /// Guest bytes not yet written to the host.
    tx_buf: VecDeque<u8>,
    /// Guest bytes written to the host (our fwd_cnt).
    pub fwd_cnt: u32,
    /// Bytes at the front of `tx_buf` that are ours, not the guest's (the
    /// `OK <port>` line): writing them does not advance `fwd_cnt`.
    own_bytes: u32,
    /// The fwd_cnt the guest last heard from us.
    pub fwd_cnt_sent: u32,
    /// The guest's SHUTDOWN flags so far.
    pub guest_shut: u32,
    /// The host closed its write side (we told the guest SHUTDOWN SEND).
    pub host_eof: bool,
    /// The stream may have bytes to read (edge-triggered readiness).
    pub readable: bool,
    /// The connection is in the muxer's round-robin read queue.
    pub queued: bool,
}

impl Conn {
    pub fn new(stream: UnixStream, state: State) -> Self {
        Conn {
            stream,
            state,
            guest_buf_alloc: 0,
            guest_fwd_cnt: 0,
            rx_cnt: 0,
            tx_buf: VecDeque::new(),
            fwd_cnt: 0,
            own_bytes: 0,
            fwd_cnt_sent: 0,
            guest_shut: 0,
            host_eof: false,
            readable: false,
            queued: false,
        }
    }

    /// Bytes the guest can still take (its credit for us).
    pub fn guest_credit(&self) -> u32 {
        self.guest_buf_alloc
            .saturating_sub(self.rx_cnt.wrapping_sub(self.guest_fwd_cnt))
    }

    /// Guest bytes buffered for the host.
    pub fn pending_tx(&self) -> usize {
        self.tx_buf.len()
    }

    /// Whether a credit update is worth sending (a quarter of the window freed).
    pub fn credit_update_due(&self) -> bool {
        self.fwd_cnt.wrapping_sub(self.fwd_cnt_sent) >= CONN_TX_BUF / 4
    }

    /// Counts `n` bytes written to the host: ours first, then the guest's.
    fn wrote(&mut self, n: usize) {
        let own = (n as u32).min(self.own_bytes);
        self.own_bytes -= own;
        self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32 - own);
    }

    /// Queues the muxer's own bytes (the `OK` line) for the host; they use no guest credit.
    pub fn push_own(&mut self, line: &[u8]) -> Result<bool, ()> {
        self.own_bytes += line.len() as u32;
        self.push_tx(line)
    }

    /// Queues guest bytes for the host and writes what the socket takes.
    /// Returns `false` if the guest overran its credit (reset it).
    pub fn push_tx(&mut self, data: &[u8]) -> Result<bool, ()> {
        let in_flight = self.tx_buf.len() + data.len();
        if in_flight > CONN_TX_BUF as usize {
            return Ok(false);
        }
        let mut data = data;
        if self.tx_buf.is_empty() {
            match self.stream.write(data) {
                Ok(n) => {
                    self.wrote(n);
                    data = &data[n..];
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
        self.tx_buf.extend(data);
        Ok(true)
    }

    /// Writes buffered guest bytes to the host until the socket is full.
    pub fn flush_tx(&mut self) -> Io {
        let mut total = 0;
        while !self.tx_buf.is_empty() {
            let (a, _) = self.tx_buf.as_slices();
            match self.stream.write(a) {
                Ok(0) => return Io::Error,
                Ok(n) => {
                    self.tx_buf.drain(..n);
                    self.wrote(n);
                    total += n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Io::Error,
            }
        }
        if self.tx_buf.is_empty() && self.tx_buf.capacity() > 64 * 1024 {
            // Give back what a burst grew; a stalled peer keeps its bound anyway.
            self.tx_buf.shrink_to(64 * 1024);
        }
        Io::Bytes(total)
    }

    /// Reads host bytes for the guest into `buf` (already capped by credit).
    pub fn read_rx(&mut self, buf: &mut [u8]) -> Io {
        loop {
            match self.stream.read(buf) {
                Ok(0) => return Io::Eof,
                Ok(n) => {
                    self.rx_cnt = self.rx_cnt.wrapping_add(n as u32);
                    #[cfg(feature = "test-hooks")]
                    crate::test_tap::host_to_guest(&buf[..n]);
                    return Io::Bytes(n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.readable = false;
                    return Io::Bytes(0);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Io::Error,
            }
        }
    }
}
