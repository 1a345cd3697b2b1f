//! Test support: an in-memory guest that drives a real [`MmioTransport`] and
//! a real vsock device on a real event manager, writing descriptors and rings
//! into `GuestMemoryMmap` the way a driver would. Used by the unit tests and
//! by the fuzz harness (which also writes arbitrary descriptors).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{Hdr, UnixMuxer, Vsock, HDR_LEN, HOST_CID, TYPE_STREAM};
use crate::bus::BusDevice;
use crate::irq::IrqLine;
use crate::virtio::mmio::MmioTransport;
use crate::virtio::state::{StateError, VirtioState};

pub const MEM_SIZE: u64 = 32 << 20;
pub const QSIZE: u16 = 64;
const RING_BASE: u64 = 0x1000;
const RX_BUFS: u64 = 0x10_0000;
const TX_BUFS: u64 = 0x90_0000;
/// Event buffers (8 bytes each, as the kernel-less driver posts them).
pub const EVENT_BUFS: u64 = 0x8f_0000;
pub const BUF_LEN: u64 = HDR_LEN as u64 + 64 * 1024;

/// Counts interrupts.
#[derive(Default)]
pub struct Wire(pub AtomicUsize);
impl IrqLine for Wire {
    fn trigger(&self) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

pub type Device = Arc<Mutex<Vsock<UnixMuxer>>>;

struct Ring {
    desc: u64,
    avail: u64,
    used: u64,
    avail_idx: u16,
    last_used: u16,
}

pub struct TestGuest {
    pub mem: GuestMemoryMmap,
    pub transport: MmioTransport,
    pub em: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>,
    pub dev: Device,
    pub wire: Arc<Wire>,
    rings: Vec<Ring>,
    tx_next: u16,
}

fn wr(t: &mut MmioTransport, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

impl TestGuest {
    /// A guest with CID `cid` whose device listens on `uds`, fully
    /// initialised, all RX buffers posted.
    pub fn new(cid: u64, uds: &std::path::Path) -> TestGuest {
        let mem: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap();
        let mut g = Self::build(mem, cid, uds, |_| Ok(())).unwrap();
        g.init();
        g
    }

    /// A guest over `mem` with a new device and transport, `prepare`d
    /// before the device joins the event loop; no rings yet.
    fn build(
        mem: GuestMemoryMmap,
        cid: u64,
        uds: &std::path::Path,
        prepare: impl FnOnce(&mut MmioTransport) -> Result<(), StateError>,
    ) -> Result<TestGuest, StateError> {
        let dev: Device = Arc::new(Mutex::new(
            Vsock::new(cid, UnixMuxer::new(cid, uds).unwrap()).unwrap(),
        ));
        let wire = Arc::new(Wire::default());
        let mut transport = MmioTransport::new(mem.clone(), dev.clone(), wire.clone()).unwrap();
        prepare(&mut transport)?;
        let mut em = EventManager::new().unwrap();
        let sub: Arc<Mutex<dyn MutEventSubscriber + Send>> = dev.clone();
        em.add_subscriber(sub);
        Ok(TestGuest {
            mem,
            transport,
            em,
            dev,
            wire,
            rings: Vec::new(),
            tx_next: 0,
        })
    }

    /// Resets the device and runs the driver initialisation again (§3.1.1),
    /// with fresh rings and all RX buffers posted.
    pub fn init(&mut self) {
        let t = &mut self.transport;
        wr(t, 0x70, 0);
        wr(t, 0x70, 1);
        wr(t, 0x70, 3);
        wr(t, 0x24, 1);
        wr(t, 0x20, 1);
        wr(t, 0x70, 11);
        self.rings.clear();
        for q in 0..3u64 {
            let base = RING_BASE + q * 0x2000;
            self.mem
                .write_slice(&[0u8; 0x2000], GuestAddress(base))
                .unwrap();
            let r = Ring {
                desc: base,
                avail: base + 0x800,
                used: base + 0x1000,
                avail_idx: 0,
                last_used: 0,
            };
            wr(t, 0x30, q as u32);
            wr(t, 0x38, u32::from(QSIZE));
            wr(t, 0x80, r.desc as u32);
            wr(t, 0x90, r.avail as u32);
            wr(t, 0xa0, r.used as u32);
            wr(t, 0x44, 1);
            self.rings.push(r);
        }
        wr(t, 0x70, 15);
        self.tx_next = 0;
        for i in 0..QSIZE {
            self.put_desc(0, i, RX_BUFS + u64::from(i) * BUF_LEN, BUF_LEN as u32, 2, 0);
            self.publish(0, i);
        }
        self.pump();
    }

    /// Writes descriptor `i` of queue `q`.
    pub fn put_desc(&self, q: usize, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = self.rings[q].desc + 16 * u64::from(i % QSIZE);
        self.mem.write_obj(addr, GuestAddress(at)).unwrap();
        self.mem.write_obj(len, GuestAddress(at + 8)).unwrap();
        self.mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
        self.mem.write_obj(next, GuestAddress(at + 14)).unwrap();
    }

    /// Publishes chain head `head` on queue `q` and notifies.
    pub fn publish(&mut self, q: usize, head: u16) {
        self.publish_quietly(q, head);
        wr(&mut self.transport, 0x50, q as u32);
    }

    /// Publishes chain head `head` on queue `q` without notifying.
    pub fn publish_quietly(&mut self, q: usize, head: u16) {
        let r = &mut self.rings[q];
        let slot = u64::from(r.avail_idx % QSIZE);
        self.mem
            .write_obj(head, GuestAddress(r.avail + 4 + 2 * slot))
            .unwrap();
        r.avail_idx = r.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(r.avail_idx, GuestAddress(r.avail + 2))
            .unwrap();
    }

    /// Sets the avail index of queue `q` directly (the fuzzer lies with it).
    pub fn set_avail_idx(&mut self, q: usize, idx: u16) {
        self.rings[q].avail_idx = idx;
        self.mem
            .write_obj(idx, GuestAddress(self.rings[q].avail + 2))
            .unwrap();
        wr(&mut self.transport, 0x50, q as u32);
    }

    /// Runs the event loop until it has nothing more to do.
    pub fn pump(&mut self) {
        // Every event source here is synchronous (eventfds written by the
        // transport, Unix sockets written by the test), so no waiting.
        for _ in 0..2 {
            while self.em.run_with_timeout(0).unwrap() > 0 {}
        }
    }

    /// Sends one packet on TX (one descriptor: header + payload).
    pub fn send(&mut self, hdr: &Hdr, payload: &[u8]) {
        self.stage(hdr, payload);
        self.notify(1);
        self.pump();
    }

    /// Queues one packet on TX without notifying the device; returns its
    /// descriptor index.
    pub fn stage(&mut self, hdr: &Hdr, payload: &[u8]) -> u16 {
        let i = self.tx_next % QSIZE;
        self.tx_next = self.tx_next.wrapping_add(1);
        let addr = TX_BUFS + u64::from(i) * BUF_LEN;
        let mut b = [0u8; HDR_LEN];
        hdr.encode(&mut b);
        self.mem.write_slice(&b, GuestAddress(addr)).unwrap();
        self.mem
            .write_slice(payload, GuestAddress(addr + HDR_LEN as u64))
            .unwrap();
        self.put_desc(1, i, addr, (HDR_LEN + payload.len()) as u32, 0, 0);
        self.publish_quietly(1, i);
        i
    }

    /// Notifies queue `q` (the driver's QueueNotify write).
    pub fn notify(&mut self, q: usize) {
        wr(&mut self.transport, 0x50, q as u32);
    }

    /// Used entries of queue `q` not seen yet: (id, len).
    pub fn take_used(&mut self, q: usize) -> Vec<(u32, u32)> {
        let r = &mut self.rings[q];
        let idx: u16 = self.mem.read_obj(GuestAddress(r.used + 2)).unwrap();
        let mut out = Vec::new();
        while r.last_used != idx {
            let e = r.used + 4 + 8 * u64::from(r.last_used % QSIZE);
            out.push((
                self.mem.read_obj(GuestAddress(e)).unwrap(),
                self.mem.read_obj(GuestAddress(e + 4)).unwrap(),
            ));
            r.last_used = r.last_used.wrapping_add(1);
        }
        out
    }

    /// Packets the device delivered, RX buffers reposted.
    pub fn recv(&mut self) -> Vec<(Hdr, Vec<u8>)> {
        let mut pkts = Vec::new();
        for (id, len) in self.take_used(0) {
            let addr = RX_BUFS + u64::from(id) * BUF_LEN;
            let mut b = vec![0u8; len as usize];
            self.mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
            let h = Hdr::decode(&b).unwrap();
            pkts.push((h, b[HDR_LEN..HDR_LEN + h.len as usize].to_vec()));
            self.put_desc(0, id as u16, addr, BUF_LEN as u32, 2, 0);
            self.publish(0, id as u16);
        }
        self.pump();
        pkts
    }
}

/// A fresh directory for one test's sockets, and the `uds_path` in it.
pub fn tmp_uds(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ember-vsock-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("v.sock")
}

/// A stream packet header from guest `cid` to the host (1 MiB of credit).
pub fn guest_hdr(cid: u64, src_port: u32, dst_port: u32, op: u16, len: u32) -> Hdr {
    Hdr {
        src_cid: cid,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: 1 << 20,
        fwd_cnt: 0,
    }
}

impl TestGuest {
    /// Posts `n` 8-byte event buffers on the event queue (filled with 0xff).
    pub fn post_event_buffers(&mut self, n: u16) {
        for i in 0..n {
            let addr = EVENT_BUFS + 8 * u64::from(i);
            self.mem_write(addr, &[0xff; 8]);
            self.put_desc(2, i, addr, 8, 2, 0);
            self.publish(2, i);
        }
        self.pump();
    }

    /// What a snapshot of this guest restores: a copy of its memory and
    /// ring bookkeeping, with a new device (listening on `uds`) and
    /// transport built from `state` (`Err`: the transport refused it).
    pub fn restored(
        &self,
        uds: &std::path::Path,
        state: &VirtioState,
    ) -> Result<TestGuest, StateError> {
        let mem: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap();
        let mut page = vec![0u8; 1 << 20];
        for off in (0..MEM_SIZE).step_by(page.len()) {
            self.mem.read_slice(&mut page, GuestAddress(off)).unwrap();
            mem.write_slice(&page, GuestAddress(off)).unwrap();
        }
        let cid = self.dev.lock().unwrap().cid();
        let mut g = Self::build(mem, cid, uds, |t| t.restore_state(state))?;
        g.rings = self
            .rings
            .iter()
            .map(|r| Ring {
                desc: r.desc,
                avail: r.avail,
                used: r.used,
                avail_idx: r.avail_idx,
                last_used: r.last_used,
            })
            .collect();
        g.tx_next = self.tx_next;
        g.pump();
        Ok(g)
    }

    /// Writes raw bytes into guest memory.
    pub fn mem_write(&self, addr: u64, data: &[u8]) {
        self.mem.write_slice(data, GuestAddress(addr)).unwrap();
    }
}
