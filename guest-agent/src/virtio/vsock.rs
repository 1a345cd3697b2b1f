//! The guest's virtio-vsock driver (virtio 1.x §5.10): stream connections to
//! the host (CID 2) over the rx / tx / event queues, with credit-based flow
//! control. A small poll API: [`Vsock::poll`] moves packets; `connect`,
//! `listen`/`accept`, `send`, `recv`, `shutdown`, `close` never block; the
//! `*_blocking` helpers loop on `poll` and a [`Wait`] hook.
//!
//! Buffers: `rx_buffers` device-writable buffers of `HDR_LEN + buf_size`
//! stay posted on the rx queue; `tx_buffers` slots carry one packet each.
//! Each connection buffers at most `conn_buf_alloc` received bytes (the
//! credit it advertises), so the host can never make the guest allocate more.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::alloc::Layout;

use super::mmio::MmioTransport;
use super::queue::{Buf, VirtQueue};
use super::{DriverError, Wait};
pub use ember_abi::vsock::{op, shut, Hdr, HDR_LEN, TYPE_STREAM};

/// The host's CID.
pub const HOST_CID: u64 = 2;
/// virtio device id of vsock.
pub const DEVICE_ID: u32 = 19;
const RX_Q: u16 = 0;
const TX_Q: u16 = 1;
const EVT_Q: u16 = 2;
const EVENT_BUFS: usize = 4;
/// `virtio_vsock_event.id`: the device lost every connection (after a
/// snapshot restore); listeners stay, the CID is read again (§5.10.6.7).
const EVENT_TRANSPORT_RESET: u32 = 0;
const FIRST_EPHEMERAL_PORT: u32 = 49152;

/// Sizes of the driver's buffers.
#[derive(Clone, Copy, Debug)]
pub struct VsockConfig {
    /// Receive buffers kept posted (≤ 256, rounded to a power of two queue).
    pub rx_buffers: u16,
    /// Transmit slots (≤ 256).
    pub tx_buffers: u16,
    /// Payload bytes per rx buffer / tx slot.
    pub buf_size: u32,
    /// Receive credit per connection (bytes buffered before the peer must wait).
    pub conn_buf_alloc: u32,
}

impl Default for VsockConfig {
    /// 64 rx buffers and 32 tx slots of 64 KiB, 1 MiB of credit per
    /// connection: throughput settings (about 6 MiB of guest memory).
    fn default() -> Self {
        VsockConfig {
            rx_buffers: 64,
            tx_buffers: 32,
            buf_size: 64 * 1024,
            conn_buf_alloc: 1024 * 1024,
        }
    }
}

/// Errors of the vsock driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VsockError {
    /// Nothing can be done now; poll and retry.
    #[error("operation would block")]
    WouldBlock,
    /// No such connection (closed and freed, or never opened).
    #[error("no such connection")]
    NoSuchConn,
    /// The peer refused or reset the connection.
    #[error("connection reset")]
    Reset,
    /// The connection was shut down for this direction.
    #[error("connection shut down")]
    Shutdown,
    /// The port already has a listener or the connection exists.
    #[error("port in use")]
    PortInUse,
    /// Out of memory for the driver's buffers.
    #[error("out of memory")]
    NoMemory,
    /// The device or transport failed.
    #[error("driver: {0}")]
    Driver(#[from] DriverError),
}

/// A connection handle (an index in the driver's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConnId(usize);

/// Where a connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// REQUEST sent, no answer yet.
    Connecting,
    /// Data flows (maybe in one direction only after a shutdown).
    Connected,
    /// The peer reset or refused; only `close` remains.
    Reset,
    /// We closed it and wait for the peer's RST.
    Closing,
}

struct Conn {
    local_port: u32,
    peer_port: u32,
    state: ConnState,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    tx_cnt: u32,
    rx: VecDeque<u8>,
    fwd_cnt: u32,
    fwd_cnt_sent: u32,
    peer_shut: u32,
    our_shut: u32,
    /// A CREDIT_REQUEST went out and the peer has given no credit since:
    /// send no other. The peer sends a CREDIT_UPDATE by itself once it has
    /// read, so asking again would only ping-pong an answer that says "none
    /// yet" as fast as the two sides can wake each other (about 15,000 round
    /// trips a second under ember-vmm, which starved the host's other work).
    credit_requested: bool,
}

impl Conn {
    /// A header from this connection's side, carrying our credit.
    fn hdr(&self, cid: u64, buf_alloc: u32, op: u16, len: u32, flags: u32) -> Hdr {
        Hdr {
            src_cid: cid,
            dst_cid: HOST_CID,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len,
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc,
            fwd_cnt: self.fwd_cnt,
        }
    }

    fn credit(&self) -> u32 {
        self.peer_buf_alloc
            .saturating_sub(self.tx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }
}

fn leak_zeroed(len: usize, align: usize) -> Result<&'static mut [u8], VsockError> {
    let layout = Layout::from_size_align(len.max(1), align).map_err(|_| VsockError::NoMemory)?;
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
    if p.is_null() {
        return Err(VsockError::NoMemory);
    }
    // SAFETY: `p` points to `len` fresh zeroed bytes that are never freed, so
    // the slice is valid and exclusively ours for 'static.
    Ok(unsafe { core::slice::from_raw_parts_mut(p, len) })
}

/// The vsock driver.
pub struct Vsock {
    t: MmioTransport,
    cid: u64,
    cfg: VsockConfig,
    rxq: VirtQueue,
    txq: VirtQueue,
    evq: VirtQueue,
    rx_bufs: Vec<&'static mut [u8]>,
    rx_head_to_buf: Vec<u16>,
    tx_slots: Vec<&'static mut [u8]>,
    tx_free: Vec<u16>,
    tx_head_to_slot: Vec<u16>,
    ev_bufs: Vec<&'static mut [u8]>,
    ev_head_to_buf: Vec<u16>,
    /// Transport resets seen (VIRTIO_VSOCK_EVENT_TRANSPORT_RESET).
    resets: u64,
    conns: Vec<Option<Conn>>,
    by_ports: BTreeMap<(u32, u32), usize>,
    listeners: BTreeMap<u32, VecDeque<ConnId>>,
    ctrl: VecDeque<Hdr>,
    next_port: u32,
}

impl Vsock {
    /// Brings up the vsock device whose MMIO window is at `base`.
    ///
    /// # Safety
    /// As [`MmioTransport::probe`]: `base` is a virtio-mmio window nothing
    /// else drives, in an identity-mapped guest.
    pub unsafe fn new(base: usize, cfg: VsockConfig) -> Result<Self, VsockError> {
        // SAFETY: forwarded from this function's contract.
        let mut t = unsafe { MmioTransport::probe(base, DEVICE_ID)? };
        t.negotiate(0)?;
        let qsize = |n: u16| n.clamp(1, 256).next_power_of_two();
        let mk = |n: u16| -> Result<VirtQueue, VsockError> {
            Ok(VirtQueue::new(
                leak_zeroed(VirtQueue::mem_size(n), 4096)?,
                n,
            )?)
        };
        let (rxq, txq, evq) = (
            mk(qsize(cfg.rx_buffers))?,
            mk(qsize(cfg.tx_buffers))?,
            mk(EVENT_BUFS as u16)?,
        );
        t.setup_queue(RX_Q, &rxq)?;
        t.setup_queue(TX_Q, &txq)?;
        t.setup_queue(EVT_Q, &evq)?;
        t.driver_ok()?;
        let cid = t.config_u64(0);
        let buf_len = HDR_LEN + cfg.buf_size as usize;
        let mut v = Vsock {
            t,
            cid,
            cfg,
            rx_head_to_buf: alloc::vec![0; rxq.size() as usize],
            tx_head_to_slot: alloc::vec![0; txq.size() as usize],
            ev_head_to_buf: alloc::vec![0; evq.size() as usize],
            resets: 0,
            rxq,
            txq,
            evq,
            rx_bufs: Vec::new(),
            tx_slots: Vec::new(),
            tx_free: Vec::new(),
            ev_bufs: Vec::new(),
            conns: Vec::new(),
            by_ports: BTreeMap::new(),
            listeners: BTreeMap::new(),
            ctrl: VecDeque::new(),
            next_port: FIRST_EPHEMERAL_PORT,
        };
        for i in 0..cfg.rx_buffers.min(v.rxq.size()) {
            v.rx_bufs.push(leak_zeroed(buf_len, 64)?);
            v.post_rx(i);
        }
        for i in 0..cfg.tx_buffers.min(v.txq.size()) {
            v.tx_slots.push(leak_zeroed(buf_len, 64)?);
            v.tx_free.push(i);
        }
        for i in 0..EVENT_BUFS {
            v.ev_bufs.push(leak_zeroed(8, 8)?);
            v.post_event(i as u16);
        }
        v.t.notify(RX_Q);
        v.t.notify(EVT_Q);
        Ok(v)
    }

    /// This guest's CID (from the device config).
    pub fn guest_cid(&self) -> u64 {
        self.cid
    }

    /// The transport (e.g. to ack interrupts).
    pub fn transport(&self) -> &MmioTransport {
        &self.t
    }

    /// Transport resets seen so far: a change means every connection
    /// (not the listeners) is gone, e.g. after a snapshot restore, and a
    /// client must connect again.
    pub fn transport_resets(&self) -> u64 {
        self.resets
    }

    fn post_event(&mut self, buf: u16) {
        let Some(b) = self.ev_bufs.get_mut(buf as usize) else {
            return;
        };
        b.fill(0xff);
        let d = Buf {
            addr: b.as_ptr() as u64,
            len: b.len() as u32,
            device_writes: true,
        };
        if let Ok(head) = self.evq.add(&[d]) {
            if let Some(slot) = self.ev_head_to_buf.get_mut(head as usize) {
                *slot = buf;
            }
        }
    }

    /// A device event: on TRANSPORT_RESET every connection is reset, no
    /// control packet for them is sent any more, and the CID is re-read.
    fn handle_event(&mut self, buf: u16, len: usize) {
        let id = self
            .ev_bufs
            .get(buf as usize)
            .filter(|_| len >= 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if id != Some(EVENT_TRANSPORT_RESET) {
            return;
        }
        // Closing ones waited only for the peer's RST: done. The rest wait
        // for their owner's `close`.
        let closing: Vec<usize> = (0..self.conns.len())
            .filter(|&i| self.state(ConnId(i)) == Some(ConnState::Closing))
            .collect();
        for i in closing {
            self.free(i);
        }
        for c in self.conns.iter_mut().flatten() {
            c.state = ConnState::Reset;
        }
        self.ctrl.clear();
        self.cid = self.t.config_u64(0);
        self.resets += 1;
    }

    fn post_rx(&mut self, buf: u16) {
        let b = &self.rx_bufs[buf as usize];
        let d = Buf {
            addr: b.as_ptr() as u64,
            len: b.len() as u32,
            device_writes: true,
        };
        if let Ok(head) = self.rxq.add(&[d]) {
            self.rx_head_to_buf[head as usize] = buf;
        }
    }

    fn conn(&mut self, id: ConnId) -> Result<&mut Conn, VsockError> {
        self.conns
            .get_mut(id.0)
            .and_then(Option::as_mut)
            .ok_or(VsockError::NoSuchConn)
    }

    /// The state of a connection.
    pub fn state(&self, id: ConnId) -> Option<ConnState> {
        self.conns.get(id.0)?.as_ref().map(|c| c.state)
    }

    /// Bytes received and not yet read on `id`.
    pub fn readable(&self, id: ConnId) -> usize {
        self.conns
            .get(id.0)
            .and_then(Option::as_ref)
            .map_or(0, |c| c.rx.len())
    }

    /// Asks the peer for a credit update on `id` now, even when one is out
    /// and unanswered. [`Vsock::send`] asks once by itself; this is for test
    /// guests that play a driver asking without end.
    pub fn request_credit(&mut self, id: ConnId) -> Result<(), VsockError> {
        self.conn(id)?;
        self.control(id.0, op::CREDIT_REQUEST, 0);
        Ok(())
    }

    /// Queues a control packet for `id` (sent by `poll`, or now if a slot is free).
    fn control(&mut self, id: usize, op: u16, flags: u32) {
        let (cid, alloc) = (self.cid, self.cfg.conn_buf_alloc);
        let Some(c) = self.conns.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        c.fwd_cnt_sent = c.fwd_cnt;
        let h = c.hdr(cid, alloc, op, 0, flags);
        self.ctrl.push_back(h);
        self.flush_ctrl();
    }

    fn send_raw(&mut self, hdr: &Hdr, payload: &[u8]) -> bool {
        let Some(slot) = self.tx_free.pop() else {
            return false;
        };
        let buf = &mut self.tx_slots[slot as usize];
        hdr.encode(buf);
        buf[HDR_LEN..HDR_LEN + payload.len()].copy_from_slice(payload);
        let d = Buf {
            addr: buf.as_ptr() as u64,
            len: (HDR_LEN + payload.len()) as u32,
            device_writes: false,
        };
        match self.txq.add(&[d]) {
            Ok(head) => {
                self.tx_head_to_slot[head as usize] = slot;
                if self.txq.should_notify() {
                    self.t.notify(TX_Q);
                }
                true
            }
            Err(_) => {
                self.tx_free.push(slot);
                false
            }
        }
    }

    fn flush_ctrl(&mut self) {
        while let Some(h) = self.ctrl.front().copied() {
            if !self.send_raw(&h, &[]) {
                return;
            }
            self.ctrl.pop_front();
        }
    }

    fn new_conn(
        &mut self,
        local_port: u32,
        peer_port: u32,
        state: ConnState,
        peer: Option<&Hdr>,
    ) -> usize {
        let conn = Conn {
            local_port,
            peer_port,
            state,
            peer_buf_alloc: peer.map_or(0, |h| h.buf_alloc),
            peer_fwd_cnt: peer.map_or(0, |h| h.fwd_cnt),
            tx_cnt: 0,
            rx: VecDeque::new(),
            fwd_cnt: 0,
            fwd_cnt_sent: 0,
            peer_shut: 0,
            our_shut: 0,
            credit_requested: false,
        };
        let id = match self.conns.iter().position(Option::is_none) {
            Some(i) => {
                self.conns[i] = Some(conn);
                i
            }
            None => {
                self.conns.push(Some(conn));
                self.conns.len() - 1
            }
        };
        self.by_ports.insert((local_port, peer_port), id);
        id
    }

    /// Starts a connection to the host's `port` (Firecracker: the host
    /// listener on `<uds_path>_<port>`). Poll until `state` leaves Connecting.
    pub fn connect(&mut self, port: u32) -> Result<ConnId, VsockError> {
        let mut local = self.next_port;
        while self.listeners.contains_key(&local) || self.by_ports.contains_key(&(local, port)) {
            local = local.wrapping_add(1).max(FIRST_EPHEMERAL_PORT);
        }
        self.next_port = local.wrapping_add(1).max(FIRST_EPHEMERAL_PORT);
        let id = self.new_conn(local, port, ConnState::Connecting, None);
        self.control(id, op::REQUEST, 0);
        Ok(ConnId(id))
    }

    /// Accepts host connections to `port` from now on.
    pub fn listen(&mut self, port: u32) -> Result<(), VsockError> {
        if self.listeners.contains_key(&port) {
            return Err(VsockError::PortInUse);
        }
        self.listeners.insert(port, VecDeque::new());
        Ok(())
    }

    /// A connection made to listening `port`, if one is waiting.
    pub fn accept(&mut self, port: u32) -> Option<ConnId> {
        self.listeners.get_mut(&port)?.pop_front()
    }

    /// Sends what credit and tx slots allow of `data`; returns the bytes taken
    /// (`WouldBlock` if none could be).
    pub fn send(&mut self, id: ConnId, data: &[u8]) -> Result<usize, VsockError> {
        let max = self.cfg.buf_size;
        self.flush_ctrl();
        let c = self.conn(id)?;
        match c.state {
            ConnState::Connected
                if c.our_shut & shut::SEND == 0 && c.peer_shut & shut::RCV == 0 => {}
            ConnState::Connecting => return Err(VsockError::WouldBlock),
            ConnState::Reset => return Err(VsockError::Reset),
            _ => return Err(VsockError::Shutdown),
        }
        let n = (data.len() as u64)
            .min(u64::from(c.credit()))
            .min(u64::from(max)) as usize;
        if n == 0 {
            if data.is_empty() {
                return Ok(0);
            }
            // Out of credit: ask the peer where it stands (it answers with
            // CREDIT_UPDATE once it has read something).
            if !c.credit_requested {
                c.credit_requested = true;
                self.control(id.0, op::CREDIT_REQUEST, 0);
            }
            return Err(VsockError::WouldBlock);
        }
        if !self.ctrl.is_empty() {
            return Err(VsockError::WouldBlock);
        }
        let (cid, alloc) = (self.cid, self.cfg.conn_buf_alloc);
        let c = self.conn(id)?;
        let h = c.hdr(cid, alloc, op::RW, n as u32, 0);
        if !self.send_raw(&h, &data[..n]) {
            return Err(VsockError::WouldBlock);
        }
        let c = self.conn(id)?;
        c.fwd_cnt_sent = c.fwd_cnt;
        c.tx_cnt = c.tx_cnt.wrapping_add(n as u32);
        Ok(n)
    }

    /// Reads received bytes into `buf`. `Ok(0)` means end of stream (the
    /// peer shut down sending, or reset) once everything was read;
    /// `WouldBlock` means nothing yet.
    pub fn recv(&mut self, id: ConnId, buf: &mut [u8]) -> Result<usize, VsockError> {
        let alloc = self.cfg.conn_buf_alloc;
        let c = self.conn(id)?;
        if c.rx.is_empty() {
            return match c.state {
                ConnState::Connected if c.peer_shut & shut::SEND == 0 => {
                    Err(VsockError::WouldBlock)
                }
                ConnState::Connecting => Err(VsockError::WouldBlock),
                _ => Ok(0),
            };
        }
        let n = buf.len().min(c.rx.len());
        let (a, b) = c.rx.as_slices();
        let from_a = n.min(a.len());
        buf[..from_a].copy_from_slice(&a[..from_a]);
        buf[from_a..n].copy_from_slice(&b[..n - from_a]);
        c.rx.drain(..n);
        c.fwd_cnt = c.fwd_cnt.wrapping_add(n as u32);
        // Tell the peer about freed space once half the window is free again.
        let stale = c.fwd_cnt.wrapping_sub(c.fwd_cnt_sent) >= alloc / 2;
        if stale && c.state == ConnState::Connected {
            self.control(id.0, op::CREDIT_UPDATE, 0);
        }
        Ok(n)
    }

    /// Shuts down one or both directions (`shut::RCV`, `shut::SEND`).
    pub fn shutdown(&mut self, id: ConnId, how: u32) -> Result<(), VsockError> {
        let c = self.conn(id)?;
        c.our_shut |= how & (shut::RCV | shut::SEND);
        let flags = c.our_shut;
        if c.state == ConnState::Connected {
            self.control(id.0, op::SHUTDOWN, flags);
        }
        Ok(())
    }

    /// Closes `id`: a full shutdown, then the handle is freed when the
    /// peer's RST arrives (at once if the connection is already reset).
    pub fn close(&mut self, id: ConnId) -> Result<(), VsockError> {
        let c = self.conn(id)?;
        if matches!(c.state, ConnState::Connected | ConnState::Connecting) {
            c.state = ConnState::Closing;
            c.our_shut = shut::RCV | shut::SEND;
            self.control(id.0, op::SHUTDOWN, shut::RCV | shut::SEND);
        } else {
            self.free(id.0);
        }
        Ok(())
    }

    fn free(&mut self, id: usize) {
        if let Some(c) = self.conns.get_mut(id).and_then(Option::take) {
            self.by_ports.remove(&(c.local_port, c.peer_port));
        }
    }

    /// Moves packets: reclaims sent slots, handles received packets and
    /// device events, sends queued control packets. Returns whether anything happened.
    pub fn poll(&mut self) -> bool {
        let mut progress = false;
        while let Some((head, _)) = self.txq.pop_used() {
            let slot = self.tx_head_to_slot[head as usize];
            self.tx_free.push(slot);
            progress = true;
        }
        let mut reposted = false;
        while let Some((head, len)) = self.rxq.pop_used() {
            let buf = self.rx_head_to_buf[head as usize];
            self.handle_rx(buf, len as usize);
            self.post_rx(buf);
            reposted = true;
        }
        if reposted && self.rxq.should_notify() {
            self.t.notify(RX_Q);
        }
        let mut events = false;
        while let Some((head, len)) = self.evq.pop_used() {
            let buf = self.ev_head_to_buf.get(head as usize).copied().unwrap_or(0);
            self.handle_event(buf, len as usize);
            self.post_event(buf);
            events = true;
        }
        if events {
            self.t.notify(EVT_Q);
            progress = true;
        }
        self.flush_ctrl();
        progress || reposted
    }

    fn handle_rx(&mut self, buf: u16, len: usize) {
        let b = &self.rx_bufs[buf as usize];
        let Some(h) = Hdr::decode(&b[..len.min(b.len())]) else {
            return;
        };
        if h.type_ != TYPE_STREAM || h.dst_cid != self.cid {
            return;
        }
        let payload_len = (h.len as usize)
            .min(len.saturating_sub(HDR_LEN))
            .min(b.len() - HDR_LEN);
        let key = (h.dst_port, h.src_port);
        let Some(&id) = self.by_ports.get(&key) else {
            self.handle_new(&h);
            return;
        };
        let Some(c) = self.conns[id].as_mut() else {
            return;
        };
        c.peer_buf_alloc = h.buf_alloc;
        c.peer_fwd_cnt = h.fwd_cnt;
        if c.credit() > 0 {
            c.credit_requested = false;
        }
        match h.op {
            op::RESPONSE if c.state == ConnState::Connecting => c.state = ConnState::Connected,
            op::RW if c.state == ConnState::Connected || c.state == ConnState::Closing => {
                let room = (self.cfg.conn_buf_alloc as usize).saturating_sub(c.rx.len());
                if payload_len > room {
                    // The peer ignored our credit: refuse the connection.
                    c.state = ConnState::Reset;
                    self.control(id, op::RST, 0);
                    return;
                }
                if c.our_shut & shut::RCV == 0 {
                    let data = &self.rx_bufs[buf as usize][HDR_LEN..HDR_LEN + payload_len];
                    c.rx.extend(data);
                } else {
                    c.fwd_cnt = c.fwd_cnt.wrapping_add(payload_len as u32);
                }
            }
            op::CREDIT_REQUEST => self.control(id, op::CREDIT_UPDATE, 0),
            op::SHUTDOWN => {
                c.peer_shut |= h.flags & (shut::RCV | shut::SEND);
                if c.peer_shut == shut::RCV | shut::SEND {
                    // §5.10.6.6: after a full shutdown the connection ends with RST.
                    let closing = c.state == ConnState::Closing;
                    c.state = ConnState::Reset;
                    self.control(id, op::RST, 0);
                    if closing {
                        self.free(id);
                    }
                }
            }
            op::RST => {
                if c.state == ConnState::Closing {
                    self.free(id);
                } else {
                    c.state = ConnState::Reset;
                }
            }
            op::CREDIT_UPDATE => {}
            _ => {
                c.state = ConnState::Reset;
                self.control(id, op::RST, 0);
            }
        }
    }

    /// A packet for no known connection: a REQUEST to a listener, or RST.
    fn handle_new(&mut self, h: &Hdr) {
        if h.op == op::RST {
            return;
        }
        if h.op == op::REQUEST && self.listeners.contains_key(&h.dst_port) {
            let id = self.new_conn(h.dst_port, h.src_port, ConnState::Connected, Some(h));
            self.control(id, op::RESPONSE, 0);
            if let Some(q) = self.listeners.get_mut(&h.dst_port) {
                q.push_back(ConnId(id));
            }
            return;
        }
        let rst = Hdr {
            src_cid: self.cid,
            dst_cid: h.src_cid,
            src_port: h.dst_port,
            dst_port: h.src_port,
            type_: TYPE_STREAM,
            op: op::RST,
            ..Hdr::default()
        };
        self.ctrl.push_back(rst);
    }

    /// Polls, and calls `w` if nothing happened.
    pub fn poll_or_wait(&mut self, w: &mut dyn Wait) {
        if !self.poll() {
            w.wait();
        }
    }

    /// Connects and waits until the host answers.
    pub fn connect_blocking(&mut self, port: u32, w: &mut dyn Wait) -> Result<ConnId, VsockError> {
        let id = self.connect(port)?;
        loop {
            match self.state(id) {
                Some(ConnState::Connecting) => self.poll_or_wait(w),
                Some(ConnState::Connected) => return Ok(id),
                _ => {
                    self.free(id.0);
                    return Err(VsockError::Reset);
                }
            }
        }
    }

    /// Waits for a connection on listening `port`.
    pub fn accept_blocking(&mut self, port: u32, w: &mut dyn Wait) -> ConnId {
        loop {
            if let Some(id) = self.accept(port) {
                return id;
            }
            self.poll_or_wait(w);
        }
    }

    /// Sends all of `data`.
    pub fn send_all(
        &mut self,
        id: ConnId,
        mut data: &[u8],
        w: &mut dyn Wait,
    ) -> Result<(), VsockError> {
        while !data.is_empty() {
            match self.send(id, data) {
                Ok(n) => data = &data[n..],
                Err(VsockError::WouldBlock) => self.poll_or_wait(w),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Closes `id` and waits until the peer acknowledged (its RST arrived),
    /// so everything sent before was taken by the host side.
    pub fn close_blocking(&mut self, id: ConnId, w: &mut dyn Wait) -> Result<(), VsockError> {
        self.close(id)?;
        while self.state(id).is_some() {
            self.poll_or_wait(w);
        }
        Ok(())
    }

    /// Receives at least one byte, or `Ok(0)` at end of stream.
    pub fn recv_blocking(
        &mut self,
        id: ConnId,
        buf: &mut [u8],
        w: &mut dyn Wait,
    ) -> Result<usize, VsockError> {
        loop {
            match self.recv(id, buf) {
                Err(VsockError::WouldBlock) => self.poll_or_wait(w),
                r => return r,
            }
        }
    }
}
