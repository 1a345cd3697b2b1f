//! virtio-net queue tests over an in-memory guest and an in-memory backend
//! (the real TAP is exercised by the microVM tests in `tests/tests/net.rs`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress};

use super::handler::*;
use super::parse_mac;
use super::tap::{NetBackend, VNET_HDR_LEN};
use crate::rate_limiter::{RateLimiter, RateLimiterConfig};
use crate::virtio::block::test_guest::{TestGuest, DATA};

const W: bool = true;
const R: bool = false;

#[derive(Default)]
struct Wire {
    to_guest: VecDeque<Vec<u8>>,
    from_guest: Vec<Vec<u8>>,
}

#[derive(Clone, Default)]
struct MemBackend(Arc<Mutex<Wire>>);

impl NetBackend for MemBackend {
    fn read_frame(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(f) = self.0.lock().unwrap().to_guest.pop_front() else {
            return Err(std::io::ErrorKind::WouldBlock.into());
        };
        let n = f.len().min(buf.len());
        buf[..n].copy_from_slice(&f[..n]);
        Ok(n)
    }
    fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<()> {
        self.0.lock().unwrap().from_guest.push(frame.to_vec());
        Ok(())
    }
}

fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect();
    f[..VNET_HDR_LEN].fill(0);
    f
}

struct Rig {
    g: TestGuest,
    q: virtio_queue::Queue,
    be: MemBackend,
    rl: RateLimiter,
    m: NetMetrics,
    buf: Vec<u8>,
    pending: RxPending,
}

impl Rig {
    fn new() -> Self {
        let g = TestGuest::new(1 << 20, 16);
        let q = g.queue();
        Rig {
            g,
            q,
            be: MemBackend::default(),
            rl: RateLimiter::new(&RateLimiterConfig::default()).unwrap(),
            m: NetMetrics::default(),
            buf: Vec::new(),
            pending: RxPending::new(),
        }
    }
    fn tx(&mut self, budget: u32) -> NetRun {
        process_tx(
            &mut self.q,
            &self.g.mem,
            &mut self.be,
            &mut self.rl,
            &mut self.buf,
            &mut self.m,
            budget,
        )
    }
    fn rx(&mut self, budget: u32) -> NetRun {
        process_rx(
            &mut self.q,
            &self.g.mem,
            &mut self.be,
            &mut self.rl,
            &mut self.pending,
            &mut self.m,
            budget,
        )
    }
    fn sent(&self) -> Vec<Vec<u8>> {
        self.be.0.lock().unwrap().from_guest.clone()
    }
    fn inject(&self, f: Vec<u8>) {
        self.be.0.lock().unwrap().to_guest.push_back(f);
    }
}

#[test]
fn tx_sends_gathered_frames_and_drops_lies() {
    let mut r = Rig::new();
    let f = frame(1000, 1);
    r.g.mem.write_slice(&f, GuestAddress(DATA)).unwrap();
    r.g.add_chain(&[(DATA, 12, R), (DATA + 12, 500, R), (DATA + 512, 488, R)]);
    r.g.add_chain(&[(DATA, 100, R), (DATA + 0x1000, 10, W)]); // writable on tx
    r.g.add_chain(&[(DATA, 20, R)]); // shorter than header + Ethernet
    r.g.add_chain(&[(DATA, 0x1_0000, R), (DATA, 0x1_0000, R)]); // beyond MAX_FRAME
    r.g.add_chain(&[(0xffff_0000, 100, R)]); // outside memory
    r.g.add_chain(&[(DATA, 60, R)]);
    let run = r.tx(64);
    assert_eq!((run.completed, run.more, run.broken), (6, false, false));
    assert!(run.first_error.is_some());
    assert_eq!(r.sent(), vec![f.clone(), f[..60].to_vec()]);
    assert_eq!(
        (r.m.tx_frames, r.m.tx_dropped, r.m.tx_bytes),
        (2, 4, 988 + 48)
    );
    assert!(r.g.used().iter().all(|u| u.1 == 0));
}

#[test]
fn tx_budget_stops_and_resumes() {
    let mut r = Rig::new();
    r.g.mem
        .write_slice(&frame(64, 3), GuestAddress(DATA))
        .unwrap();
    for _ in 0..5 {
        r.g.add_chain(&[(DATA, 64, R)]);
    }
    let run = r.tx(2);
    assert_eq!((run.completed, run.more), (2, true));
    let run = r.tx(10);
    assert_eq!((run.completed, run.more), (3, false));
    assert_eq!(r.sent().len(), 5);
}

#[test]
fn rx_delivers_sets_num_buffers_and_drops_oversize() {
    let mut r = Rig::new();
    let f = frame(1514 + VNET_HDR_LEN, 9);
    r.inject(f.clone());
    r.inject(frame(3000, 4)); // will not fit the next buffer
    r.inject(frame(100, 5));
    r.g.add_chain(&[(DATA, 800, W), (DATA + 0x1000, 1000, W)]);
    r.g.add_chain(&[(DATA + 0x2000, 1526, W)]);
    r.g.add_chain(&[(DATA + 0x3000, 1526, W)]);
    let run = r.rx(64);
    assert_eq!((run.completed, run.starved), (3, false));
    let mut got = vec![0u8; f.len()];
    r.g.mem
        .read_slice(&mut got[..800], GuestAddress(DATA))
        .unwrap();
    r.g.mem
        .read_slice(&mut got[800..], GuestAddress(DATA + 0x1000))
        .unwrap();
    assert_eq!(&got[10..12], &[1, 0], "num_buffers = 1");
    assert_eq!(got[12..], f[12..]);
    assert_eq!(r.g.used(), vec![(0, f.len() as u32), (2, 0), (3, 100)]);
    assert_eq!((r.m.rx_frames, r.m.rx_dropped), (2, 1));
}

#[test]
fn rx_keeps_frame_until_guest_posts_a_buffer() {
    let mut r = Rig::new();
    r.inject(frame(200, 1));
    let run = r.rx(64);
    assert!(run.starved);
    assert_eq!(run.completed, 0);
    // Readable buffer on rx: refused; the frame is lost with it.
    r.g.add_chain(&[(DATA, 1526, R)]);
    assert_eq!(r.rx(64).completed, 1);
    r.inject(frame(200, 2));
    r.g.add_chain(&[(DATA, 1526, W)]);
    assert_eq!(r.rx(64).completed, 1);
    let mut got = vec![0u8; 200];
    r.g.mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got[12..], frame(200, 2)[12..]);
    assert_eq!(r.g.used(), vec![(0, 0), (1, 200)]);
}

#[test]
fn tx_limiter_throttles_in_order() {
    let mut r = Rig::new();
    let now = Arc::new(AtomicU64::new(0));
    let c = now.clone();
    let cfg: RateLimiterConfig =
        serde_json::from_str(r#"{"bandwidth":{"size":1000,"refill_time":100}}"#).unwrap();
    r.rl = RateLimiter::with_clock(&cfg, Arc::new(move || c.load(Ordering::SeqCst))).unwrap();
    for i in 0..3u8 {
        r.g.mem
            .write_slice(&frame(612, i), GuestAddress(DATA + 0x1000 * u64::from(i)))
            .unwrap();
        r.g.add_chain(&[(DATA + 0x1000 * u64::from(i), 612, R)]);
    }
    let run = r.tx(64);
    assert_eq!((run.completed, run.throttled), (1, true));
    assert_eq!(
        r.rl.blocked_for(),
        Some(std::time::Duration::from_millis(20))
    );
    r.rl.force_unblock();
    now.store(20_000_000, Ordering::SeqCst);
    assert_eq!(r.tx(64).completed, 1);
    let sent = r.sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1], frame(612, 1));
}

#[test]
fn macs_parse_strictly() {
    assert_eq!(
        parse_mac("06:00:ac:10:00:02"),
        Some([6, 0, 0xac, 0x10, 0, 2])
    );
    for bad in [
        "06:00:ac:10:00",
        "06:00:ac:10:00:02:03",
        "6:00:ac:10:00:02",
        "zz:00:ac:10:00:02",
        "",
    ] {
        assert_eq!(parse_mac(bad), None, "{bad}");
    }
}

/// Bounded random run over both directions: random descriptor tables and
/// random frame sizes. Every popped chain comes back; nothing panics; frames
/// that reach the wire are exactly what the guest wrote.
#[test]
fn fuzz_random_frames_bounded() {
    use crate::virtio::block::tests::Rng;
    let iterations: u64 = std::env::var("EMBER_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut r = Rig::new();
    for i in 0..iterations {
        let rx = i % 2 == 0;
        if rx {
            let len = [
                rng.below(20) as usize,
                60,
                1526,
                rng.below(MAX_FRAME as u64 + 10) as usize,
            ][rng.below(4) as usize];
            r.inject(frame(len.max(VNET_HDR_LEN), rng.next() as u8));
        } else {
            r.g.mem
                .write_slice(&frame(2048, rng.next() as u8), GuestAddress(DATA))
                .unwrap();
        }
        let n = 1 + rng.below(4) as u16;
        let head = rng.below(16) as u16;
        for k in 0..n {
            let idx = (head + k) % 16;
            let addr = match rng.below(5) {
                0 => rng.next(),
                1 => (1 << 20) - rng.below(2048),
                _ => DATA + rng.below(0x800),
            };
            let len = match rng.below(4) {
                0 => rng.next() as u32,
                1 => 1526,
                _ => rng.below(2048) as u32,
            };
            let mut flags = rng.below(8) as u16 & 0x6;
            if rng.below(3) != 0 {
                flags = (flags & !2) | if rx { 2 } else { 0 };
            }
            if k + 1 < n {
                flags |= 1;
            }
            let next = if rng.below(10) == 0 {
                rng.below(20) as u16
            } else {
                (idx + 1) % 16
            };
            r.g.write_desc(idx, addr, len, flags, next);
        }
        r.g.publish(head);
        let before = r.g.used_idx();
        let run = if rx { r.rx(64) } else { r.tx(64) };
        assert!(!run.broken);
        assert_eq!(r.g.used_idx(), before.wrapping_add(run.completed as u16));
        // One frame per rx chain (frames are never shorter than a header).
        assert_eq!(run.completed, 1);
    }
    assert!(
        r.m.tx_frames > 0 && r.m.tx_dropped > 0 && r.m.rx_frames > 0 && r.m.rx_dropped > 0,
        "{:?}",
        r.m
    );
    for f in r.sent() {
        assert!(f.len() >= MIN_TX_FRAME && f.len() <= MAX_FRAME);
    }
}

/// The net device through its event loop: a readiness fd (an eventfd here,
/// the TAP in production) wakes rx, queue notifies wake tx.
#[test]
fn net_device_moves_frames_through_the_event_loop() {
    use crate::virtio::block::device_tests::CountIrq;
    use crate::virtio::{ActivationContext, ActiveQueue, VirtioDevice, VIRTIO_F_VERSION_1};
    use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
    use std::os::fd::AsRawFd;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    let be = MemBackend::default();
    let ready = EventFd::new(EFD_NONBLOCK).unwrap();
    let cfg = super::NetConfig {
        iface_id: "eth0".into(),
        guest_mac: Some([6, 0, 0, 0, 0, 9]),
        ..Default::default()
    };
    let net = super::Net::with_backend(&cfg, Box::new(be.clone()), ready.as_raw_fd()).unwrap();
    let net = Arc::new(Mutex::new(net));
    {
        let n = net.lock().unwrap();
        assert_eq!(
            n.avail_features(),
            VIRTIO_F_VERSION_1 | 1 << 5,
            "VERSION_1 + MAC, no offloads without a TAP"
        );
        let mut mac = [0u8; 8];
        n.read_config(0, &mut mac);
        assert_eq!(mac, [6, 0, 0, 0, 0, 9, 0, 0]);
    }
    let mut em = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new().unwrap();
    em.add_subscriber(net.clone());
    let mut rxg = TestGuest::new(1 << 20, 16);
    let mut txg = rxg.second_queue();
    let rx_kick = EventFd::new(EFD_NONBLOCK).unwrap();
    let tx_kick = EventFd::new(EFD_NONBLOCK).unwrap();
    let irq = Arc::new(CountIrq::default());
    let ctx = ActivationContext {
        mem: rxg.mem.clone(),
        queues: vec![
            ActiveQueue {
                queue: rxg.queue(),
                notify: rx_kick.try_clone().unwrap(),
            },
            ActiveQueue {
                queue: txg.queue(),
                notify: tx_kick.try_clone().unwrap(),
            },
        ],
        interrupt: irq.clone(),
        acked_features: VIRTIO_F_VERSION_1 | 1 << 5,
    };
    net.lock().unwrap().activate(ctx).unwrap();
    em.run_with_timeout(100).unwrap();
    // A frame arrives before the guest posted a buffer: kept, then delivered
    // when the rx queue is notified.
    be.0.lock().unwrap().to_guest.push_back(frame(300, 1));
    ready.write(1).unwrap();
    em.run_with_timeout(100).unwrap();
    assert_eq!(rxg.used_idx(), 0);
    rxg.add_chain(&[(DATA, 1526, W)]);
    rx_kick.write(1).unwrap();
    em.run_with_timeout(100).unwrap();
    assert_eq!(rxg.used(), vec![(0, 300)]);
    assert_eq!(irq.0[0].load(Ordering::SeqCst), 1);
    // Transmit.
    rxg.mem
        .write_slice(&frame(200, 2), GuestAddress(DATA + 0x4000))
        .unwrap();
    txg.add_chain(&[(DATA + 0x4000, 200, R)]);
    tx_kick.write(1).unwrap();
    em.run_with_timeout(100).unwrap();
    assert_eq!(be.0.lock().unwrap().from_guest, vec![frame(200, 2)]);
    assert_eq!(irq.0[1].load(Ordering::SeqCst), 1);
    let m = net.lock().unwrap().metrics();
    assert_eq!((m.rx_frames, m.tx_frames), (1, 1));
}
