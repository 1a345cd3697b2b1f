//! The guest's virtio-net driver (virtio 1.x §5.1) for kernel-less guests:
//! raw Ethernet frames in and out. Every frame on the wire to the device is
//! preceded by a 12-byte `virtio_net_hdr_v1`, which this driver sets to zero
//! (no offloads) on transmit and strips on receive.
//!
//! Receive buffers (`RX_BUFS` of [`RX_BUF_LEN`] bytes) stay posted; transmit
//! uses `TX_SLOTS` slots, reclaimed as the device returns them, so several
//! frames can be in flight.

use alloc::vec::Vec;

use super::block::dma_zeroed;
use super::mmio::MmioTransport;
use super::queue::{Buf, VirtQueue};
use super::{DriverError, Wait};

/// virtio device id of net.
pub const DEVICE_ID: u32 = 1;
/// Feature bit: the device has a MAC address in its config space.
pub const F_MAC: u64 = 1 << 5;
/// Bytes of the virtio 1.x net header.
pub const HDR_LEN: usize = 12;
/// Largest Ethernet frame (no VLAN tag) this driver sends or receives.
pub const MAX_FRAME: usize = 1514;
/// Receive buffer: header plus a full frame.
pub const RX_BUF_LEN: usize = HDR_LEN + MAX_FRAME;
const RX_Q: u16 = 0;
const TX_Q: u16 = 1;
const RX_BUFS: u16 = 64;
const TX_SLOTS: u16 = 64;

/// Errors of the net driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// The frame is empty or longer than [`MAX_FRAME`].
    #[error("frame length {0} out of range")]
    BadLength(usize),
    /// No memory for the driver's buffers.
    #[error("out of memory")]
    NoMemory,
    /// The transport failed.
    #[error("driver: {0}")]
    Driver(#[from] DriverError),
}

/// A virtio-net interface.
pub struct NetDevice {
    t: MmioTransport,
    rxq: VirtQueue,
    txq: VirtQueue,
    mac: Option<[u8; 6]>,
    rx_bufs: Vec<&'static mut [u8]>,
    /// rx descriptor head → buffer index.
    rx_head_to_buf: Vec<u16>,
    tx_slots: Vec<&'static mut [u8]>,
    tx_free: Vec<u16>,
    tx_head_to_slot: Vec<u16>,
    /// Buffers reposted to the rx queue since the last rx notification.
    rx_unkicked: u16,
}

impl NetDevice {
    /// Brings up the interface whose MMIO window is at `base`.
    ///
    /// # Safety
    /// As [`MmioTransport::probe`]: `base` is a virtio-mmio window nothing
    /// else drives, in an identity-mapped guest.
    pub unsafe fn new(base: usize) -> Result<Self, NetError> {
        // SAFETY: forwarded from this function's contract.
        let mut t = unsafe { MmioTransport::probe(base, DEVICE_ID)? };
        let features = t.negotiate(F_MAC)?;
        let mk = |n: u16| -> Result<VirtQueue, NetError> {
            let mem = dma_zeroed(VirtQueue::mem_size(n), 4096).ok_or(NetError::NoMemory)?;
            Ok(VirtQueue::new(mem, n)?)
        };
        let (rxq, txq) = (mk(RX_BUFS)?, mk(TX_SLOTS)?);
        t.setup_queue(RX_Q, &rxq)?;
        t.setup_queue(TX_Q, &txq)?;
        t.driver_ok()?;
        let mac = (features & F_MAC != 0).then(|| {
            let lo = t.config_u32(0).to_le_bytes();
            let hi = t.config_u32(4).to_le_bytes();
            [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1]]
        });
        let mut d = NetDevice {
            t,
            mac,
            rx_head_to_buf: alloc::vec![0; rxq.size() as usize],
            tx_head_to_slot: alloc::vec![0; txq.size() as usize],
            rxq,
            txq,
            rx_bufs: Vec::new(),
            tx_slots: Vec::new(),
            tx_free: Vec::new(),
            rx_unkicked: 0,
        };
        for i in 0..RX_BUFS {
            d.rx_bufs
                .push(dma_zeroed(RX_BUF_LEN, 64).ok_or(NetError::NoMemory)?);
            d.post_rx(i)?;
        }
        for i in 0..TX_SLOTS {
            d.tx_slots
                .push(dma_zeroed(HDR_LEN + MAX_FRAME, 64).ok_or(NetError::NoMemory)?);
            d.tx_free.push(i);
        }
        d.t.notify(RX_Q);
        Ok(d)
    }

    /// The MAC the host configured, if any.
    pub fn mac(&self) -> Option<[u8; 6]> {
        self.mac
    }

    /// The transport (e.g. to ack interrupts).
    pub fn transport(&self) -> &MmioTransport {
        &self.t
    }

    fn post_rx(&mut self, buf: u16) -> Result<(), NetError> {
        let b = &self.rx_bufs[buf as usize];
        let d = Buf {
            addr: b.as_ptr() as u64,
            len: b.len() as u32,
            device_writes: true,
        };
        let head = self.rxq.add(&[d])?;
        self.rx_head_to_buf[head as usize] = buf;
        Ok(())
    }

    fn reclaim_tx(&mut self) {
        while let Some((head, _)) = self.txq.pop_used() {
            self.tx_free.push(self.tx_head_to_slot[head as usize]);
        }
    }

    /// Queues one Ethernet frame and tells the device; waits (with `wait`)
    /// only while every transmit slot is in flight.
    pub fn send(&mut self, frame: &[u8], wait: &mut dyn Wait) -> Result<(), NetError> {
        self.send_batched(frame, wait)?;
        self.kick_tx();
        Ok(())
    }

    /// Queues one frame without telling the device (each notification is a
    /// VM exit): call [`Self::kick_tx`] after a batch. Waiting for a free
    /// slot kicks first, so a full ring always drains.
    pub fn send_batched(&mut self, frame: &[u8], wait: &mut dyn Wait) -> Result<(), NetError> {
        if frame.is_empty() || frame.len() > MAX_FRAME {
            return Err(NetError::BadLength(frame.len()));
        }
        let slot = loop {
            self.reclaim_tx();
            if let Some(s) = self.tx_free.pop() {
                break s;
            }
            self.kick_tx();
            wait.wait();
        };
        let buf = &mut self.tx_slots[slot as usize];
        buf[..HDR_LEN].fill(0);
        buf[HDR_LEN..HDR_LEN + frame.len()].copy_from_slice(frame);
        let d = Buf {
            addr: buf.as_ptr() as u64,
            len: (HDR_LEN + frame.len()) as u32,
            device_writes: false,
        };
        let head = self.txq.add(&[d])?;
        self.tx_head_to_slot[head as usize] = slot;
        Ok(())
    }

    /// Tells the device about queued frames (unless it asked not to be told).
    pub fn kick_tx(&mut self) {
        if self.txq.should_notify() {
            self.t.notify(TX_Q);
        }
    }

    /// Sends one transmit chain exactly as given (tests of a hostile guest:
    /// any addresses, lengths and directions) once every slot is back, and
    /// waits for the device to return it.
    pub fn send_raw(&mut self, bufs: &[Buf], wait: &mut dyn Wait) -> Result<(), NetError> {
        self.flush_tx(wait);
        self.txq.add(bufs)?;
        self.t.notify(TX_Q);
        while self.txq.pop_used().is_none() {
            wait.wait();
        }
        Ok(())
    }

    /// Waits until every queued frame has left.
    pub fn flush_tx(&mut self, wait: &mut dyn Wait) {
        self.kick_tx();
        loop {
            self.reclaim_tx();
            if self.tx_free.len() == self.tx_slots.len() {
                return;
            }
            wait.wait();
        }
    }

    /// Copies the next received frame (without its header) into `out` and
    /// returns its length (frames longer than `out` are cut), or `None` if
    /// none has arrived.
    pub fn recv(&mut self, out: &mut [u8]) -> Result<Option<usize>, NetError> {
        let Some((head, len)) = self.rxq.pop_used() else {
            return Ok(None);
        };
        let idx = self.rx_head_to_buf[head as usize];
        let buf = &self.rx_bufs[idx as usize];
        // The device reports what it wrote; never trust it past our buffer.
        let len = (len as usize).min(buf.len());
        let frame = &buf[HDR_LEN.min(len)..len];
        let n = frame.len().min(out.len());
        // pop_used's Acquire fence orders this read after the device's write.
        out[..n].copy_from_slice(&frame[..n]);
        let frame_len = frame.len();
        self.post_rx(idx)?;
        // Reposted buffers are announced in batches; `recv` finding nothing
        // announces the rest, so a starved device is always told.
        self.rx_unkicked += 1;
        if self.rx_unkicked >= RX_BUFS / 4 {
            self.kick_rx();
        }
        Ok(Some(frame_len))
    }

    fn kick_rx(&mut self) {
        self.rx_unkicked = 0;
        if self.rxq.should_notify() {
            self.t.notify(RX_Q);
        }
    }

    /// Like [`Self::recv`], but calls `wait` until a frame arrives or `tries`
    /// waits passed.
    pub fn recv_blocking(
        &mut self,
        out: &mut [u8],
        wait: &mut dyn Wait,
        tries: u32,
    ) -> Result<Option<usize>, NetError> {
        for _ in 0..=tries {
            if let Some(n) = self.recv(out)? {
                return Ok(Some(n));
            }
            wait.wait();
        }
        Ok(None)
    }
}
