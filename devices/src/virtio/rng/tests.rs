//! virtio-rng tests over an in-memory guest: buffers filled with distinct
//! random bytes, every hostile chain refused with length 0 and the queue
//! going on, the per-chain cap, a failing host source, the rate limiter on
//! a manual clock, and the device through a real event loop (activation,
//! notify, interrupt, reset, snapshot state).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::handler::{host_random, process_queue, EntropyMetrics};
use super::{Entropy, EntropyConfig, MAX_CHAIN_FILL};
use crate::rate_limiter::{RateLimiter, RateLimiterConfig, TokenBucketConfig};
use crate::virtio::block::test_guest::{TestGuest, DATA};
use crate::virtio::state::{DeviceState, EntropyState, StateError};
use crate::virtio::{
    device_type, ActivationContext, ActiveQueue, VirtioDevice, VirtioInterrupt, VIRTIO_F_VERSION_1,
};

const W: bool = true;
const R: bool = false;
const MEM: usize = 1 << 20;

fn unlimited() -> RateLimiter {
    RateLimiter::new(&RateLimiterConfig::default()).unwrap()
}

fn failing(_: &mut [u8]) -> std::io::Result<()> {
    Err(std::io::Error::other("no entropy"))
}

fn read(g: &TestGuest, at: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    g.mem.read_slice(&mut v, GuestAddress(at)).unwrap();
    v
}

#[test]
fn fills_each_buffer_with_fresh_random_bytes() {
    let mut g = TestGuest::new(MEM, 16);
    let mut q = g.queue();
    let a = g.add_chain(&[(DATA, 64, W)]);
    let b = g.add_chain(&[(DATA + 0x100, 32, W), (DATA + 0x200, 32, W)]);
    let mut m = EntropyMetrics::default();
    let run = process_queue(&mut q, &g.mem, &mut unlimited(), host_random, &mut m);
    assert_eq!(run.completed, 2);
    assert_eq!(g.used(), vec![(u32::from(a), 64), (u32::from(b), 64)]);
    let x = read(&g, DATA, 64);
    let y = [read(&g, DATA + 0x100, 32), read(&g, DATA + 0x200, 32)].concat();
    assert_ne!(x, vec![0u8; 64]);
    assert_ne!(x, y, "two requests got the same bytes");
    assert_eq!(m.entropy_bytes, 128);
    assert_eq!(m.requests, 2);
}

#[test]
fn hostile_chains_get_nothing_and_the_queue_goes_on() {
    let mut g = TestGuest::new(MEM, 16);
    let mut q = g.queue();
    // A device-readable buffer: the device must not write into it.
    g.mem.write_slice(&[7u8; 16], GuestAddress(DATA)).unwrap();
    g.add_chain(&[(DATA, 16, R)]);
    // Writable then readable.
    g.add_chain(&[(DATA + 0x100, 16, W), (DATA + 0x200, 16, R)]);
    // Past the end of guest memory, and straddling it.
    g.add_chain(&[(MEM as u64 + 0x1000, 64, W)]);
    g.add_chain(&[(MEM as u64 - 8, 64, W)]);
    // An address that wraps around.
    g.add_chain(&[(u64::MAX - 3, 64, W)]);
    // Zero length: answered with 0, not refused.
    g.add_chain(&[(DATA + 0x300, 0, W)]);
    // A descriptor linked to itself (a loop): the chain ends at the queue size.
    let head = 10;
    g.write_desc(
        head,
        DATA + 0x400,
        8,
        (VRING_DESC_F_WRITE | VRING_DESC_F_NEXT) as u16,
        head,
    );
    g.publish(head);
    // A head index past the queue.
    g.publish(200);
    // And a good one after all of them.
    let good = 12;
    g.write_desc(good, DATA + 0x500, 16, VRING_DESC_F_WRITE as u16, 0);
    g.publish(good);
    let mut m = EntropyMetrics::default();
    let run = process_queue(&mut q, &g.mem, &mut unlimited(), host_random, &mut m);
    assert!(!run.broken);
    assert_eq!(
        read(&g, DATA, 16),
        vec![7u8; 16],
        "wrote into a readable buffer"
    );
    assert_eq!(read(&g, DATA + 0x100, 16), vec![0u8; 16]);
    let used = g.used();
    assert_eq!(used.len(), run.completed as usize);
    let good_entry = used.iter().find(|(id, _)| *id == u32::from(good));
    assert_eq!(good_entry, Some(&(u32::from(good), 16)));
    for (id, len) in &used {
        if *id != u32::from(good) && *id != u32::from(head) {
            assert_eq!(*len, 0, "chain {id} got {len} bytes");
        }
    }
    assert!(m.bad_requests >= 5, "{m:?}");
    assert!(run.first_error.is_some());
}

#[test]
fn one_chain_gets_at_most_the_cap() {
    let mut g = TestGuest::new(4 << 20, 16);
    let mut q = g.queue();
    // Four descriptors of 1 MiB over the same memory.
    let big = 1 << 20;
    g.add_chain(&[
        (DATA, big, W),
        (DATA, big, W),
        (DATA, big, W),
        (DATA, big, W),
    ]);
    let mut m = EntropyMetrics::default();
    process_queue(&mut q, &g.mem, &mut unlimited(), host_random, &mut m);
    assert_eq!(g.used()[0].1, MAX_CHAIN_FILL);
    assert_eq!(m.entropy_bytes, u64::from(MAX_CHAIN_FILL));
}

#[test]
fn a_failing_host_source_answers_zero_bytes() {
    let mut g = TestGuest::new(MEM, 16);
    let mut q = g.queue();
    g.add_chain(&[(DATA, 64, W)]);
    let mut m = EntropyMetrics::default();
    let run = process_queue(&mut q, &g.mem, &mut unlimited(), failing, &mut m);
    assert_eq!(g.used()[0].1, 0);
    assert_eq!(read(&g, DATA, 64), vec![0u8; 64]);
    assert_eq!(m.host_rng_fails, 1);
    assert!(run.first_error.unwrap().contains("random source"));
}

#[test]
fn the_rate_limiter_holds_requests_until_its_timer() {
    let now = Arc::new(AtomicU64::new(0));
    let c = now.clone();
    // 100 bytes per 100 ms, and 2 requests per 100 ms.
    let cfg = RateLimiterConfig {
        bandwidth: Some(TokenBucketConfig {
            size: 100,
            one_time_burst: 0,
            refill_time: 100,
        }),
        ops: Some(TokenBucketConfig {
            size: 2,
            one_time_burst: 0,
            refill_time: 100,
        }),
    };
    let mut rl = RateLimiter::with_clock(&cfg, Arc::new(move || c.load(Ordering::SeqCst))).unwrap();
    let mut g = TestGuest::new(MEM, 16);
    let mut q = g.queue();
    for i in 0..3 {
        g.add_chain(&[(DATA + 0x100 * i, 40, W)]);
    }
    let mut m = EntropyMetrics::default();
    let run = process_queue(&mut q, &g.mem, &mut rl, host_random, &mut m);
    assert_eq!(run.completed, 2, "the ops bucket allows 2");
    assert!(run.throttled && rl.is_blocked());
    assert!(rl.blocked_for().unwrap().as_millis() > 0);
    // Still blocked: nothing moves, and the held chain is not lost.
    let run = process_queue(&mut q, &g.mem, &mut rl, host_random, &mut m);
    assert_eq!(run.completed, 0);
    now.store(100_000_000, Ordering::SeqCst);
    rl.force_unblock();
    let run = process_queue(&mut q, &g.mem, &mut rl, host_random, &mut m);
    assert_eq!(run.completed, 1);
    assert_eq!(g.used_idx(), 3);
    assert_eq!(m.entropy_bytes, 120);
    assert!(m.throttled >= 1);
}

#[derive(Default)]
struct CountIrq(AtomicU32);
impl VirtioInterrupt for CountIrq {
    fn signal_used_queue(&self, _queue: u16) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn signal_config_change(&self) {}
}

type Em = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

#[test]
fn the_device_runs_on_the_event_loop_and_saves_its_state() {
    let dev = Arc::new(Mutex::new(Entropy::new(&EntropyConfig::default()).unwrap()));
    {
        let d = dev.lock().unwrap();
        assert_eq!(d.device_type(), device_type::RNG);
        assert_eq!(d.avail_features(), VIRTIO_F_VERSION_1);
        assert_eq!(d.queue_max_sizes(), &[super::QUEUE_SIZE]);
    }
    let mut em = Em::new().unwrap();
    em.add_subscriber(dev.clone());
    let mut g = TestGuest::new(MEM, 16);
    // Queued before activation: answered once the loop registers the queue.
    g.add_chain(&[(DATA, 32, W)]);
    let notify = EventFd::new(EFD_NONBLOCK).unwrap();
    let kick = notify.try_clone().unwrap();
    let irq = Arc::new(CountIrq::default());
    let ctx = ActivationContext {
        mem: g.mem.clone(),
        queues: vec![ActiveQueue {
            queue: g.queue(),
            notify,
        }],
        interrupt: irq.clone(),
        acked_features: VIRTIO_F_VERSION_1,
    };
    dev.lock().unwrap().ack_features(VIRTIO_F_VERSION_1);
    dev.lock().unwrap().activate(ctx).unwrap();
    em.run_with_timeout(100).unwrap();
    assert_eq!(g.used_idx(), 1);
    assert_eq!(irq.0.load(Ordering::SeqCst), 1);
    g.add_chain(&[(DATA + 0x100, 32, W)]);
    kick.write(1).unwrap();
    em.run_with_timeout(100).unwrap();
    assert_eq!(g.used_idx(), 2);
    assert_eq!(dev.lock().unwrap().metrics().entropy_bytes, 64);
    let (state, pos) = dev.lock().unwrap().save_state().unwrap();
    assert_eq!(
        state,
        DeviceState::Entropy(EntropyState {
            acked_features: VIRTIO_F_VERSION_1
        })
    );
    assert_eq!((pos[0].next_avail, pos[0].next_used), (2, 2));
    // Restore checks the features against the offer.
    let mut fresh = Entropy::new(&EntropyConfig::default()).unwrap();
    assert!(fresh.restore_state(&state).is_ok());
    let bad = DeviceState::Entropy(EntropyState { acked_features: 1 });
    assert!(matches!(
        fresh.restore_state(&bad),
        Err(StateError::Features { .. })
    ));
    let vsock = DeviceState::Vsock(Default::default());
    assert_eq!(fresh.restore_state(&vsock), Err(StateError::DeviceKind));
    // Reset: a late notify does nothing.
    dev.lock().unwrap().reset();
    em.run_with_timeout(100).unwrap();
    g.add_chain(&[(DATA + 0x200, 32, W)]);
    kick.write(1).unwrap();
    em.run_with_timeout(50).unwrap();
    assert_eq!(g.used_idx(), 2);
}
