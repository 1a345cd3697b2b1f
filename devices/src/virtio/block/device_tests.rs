//! The block and net devices through their event-loop glue: activation
//! registers the queue fds (and handles requests queued before), notifies
//! drive the queues, interrupts fire, reset unregisters, re-activation works.
//! Runs a real `EventManager` over an in-memory guest; no KVM.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::test_guest::{TestGuest, DATA};
use super::tests::TempFile;
use super::{Block, BlockConfig, CacheType};
use crate::virtio::{
    ActivationContext, ActiveQueue, VirtioDevice, VirtioInterrupt, VIRTIO_F_VERSION_1,
};

type Em = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

/// Counts interrupts per queue.
#[derive(Default)]
pub(crate) struct CountIrq(pub [AtomicU32; 2]);
impl VirtioInterrupt for CountIrq {
    fn signal_used_queue(&self, queue: u16) {
        if let Some(c) = self.0.get(queue as usize) {
            c.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn signal_config_change(&self) {}
}

fn active_queue(g: &TestGuest) -> (ActiveQueue, EventFd) {
    let notify = EventFd::new(EFD_NONBLOCK).unwrap();
    let kick = notify.try_clone().unwrap();
    (
        ActiveQueue {
            queue: g.queue(),
            notify,
        },
        kick,
    )
}

fn write_request(g: &mut TestGuest, at: u64, sector: u64, data: u64) {
    g.mem.write_obj(1u32, GuestAddress(at)).unwrap();
    g.mem.write_obj(0u32, GuestAddress(at + 4)).unwrap();
    g.mem.write_obj(sector, GuestAddress(at + 8)).unwrap();
    g.add_chain(&[(at, 16, false), (data, 512, false), (at + 0x80, 1, true)]);
}

#[test]
fn block_device_activates_processes_resets_and_reactivates() {
    let file = TempFile::new("dev", &[0u8; 8 * 512]);
    let cfg = BlockConfig {
        drive_id: "d0".into(),
        path: file.0.clone(),
        read_only: false,
        cache_type: CacheType::Writeback,
        rate_limiter: Default::default(),
    };
    let blk = Arc::new(Mutex::new(Block::new(&cfg).unwrap()));
    {
        let b = blk.lock().unwrap();
        assert_eq!(
            b.avail_features(),
            VIRTIO_F_VERSION_1 | 1 << 9,
            "VERSION_1 + FLUSH, not RO"
        );
        let mut cap = [0u8; 8];
        b.read_config(0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 8);
        let mut past = [0xffu8; 4];
        b.read_config(6, &mut past);
        assert_eq!(past, [0, 0, 0, 0]);
    }
    let mut em = Em::new().unwrap();
    em.add_subscriber(blk.clone());
    let mut g = TestGuest::new(1 << 20, 16);
    g.mem
        .write_slice(&[0xab; 512], GuestAddress(DATA + 0x1000))
        .unwrap();
    // A request queued before activation is handled once the loop registers the queue.
    write_request(&mut g, DATA, 1, DATA + 0x1000);
    let irq = Arc::new(CountIrq::default());
    let (q, kick) = active_queue(&g);
    let ctx = ActivationContext {
        mem: g.mem.clone(),
        queues: vec![q],
        interrupt: irq.clone(),
        acked_features: VIRTIO_F_VERSION_1,
    };
    blk.lock().unwrap().activate(ctx).unwrap();
    em.run_with_timeout(100).unwrap();
    assert_eq!(g.used_idx(), 1);
    assert_eq!(irq.0[0].load(Ordering::SeqCst), 1);
    // A notify drives the next one.
    write_request(&mut g, DATA + 0x100, 2, DATA + 0x1000);
    kick.write(1).unwrap();
    em.run_with_timeout(100).unwrap();
    assert_eq!(g.used_idx(), 2);
    let disk = std::fs::read(&file.0).unwrap();
    assert!(disk[512..1536].iter().all(|&b| b == 0xab) && disk[..512].iter().all(|&b| b == 0));
    // Reset: the queue fd is unregistered; a late notify does nothing.
    blk.lock().unwrap().reset();
    em.run_with_timeout(100).unwrap();
    write_request(&mut g, DATA + 0x200, 3, DATA + 0x1000);
    kick.write(1).unwrap();
    em.run_with_timeout(50).unwrap();
    assert_eq!(g.used_idx(), 2);
    // Activate again on a fresh queue.
    let g2 = TestGuest::new(1 << 20, 16).second_queue();
    let (q, _kick2) = active_queue(&g2);
    let ctx = ActivationContext {
        mem: g2.mem.clone(),
        queues: vec![q],
        interrupt: irq,
        acked_features: VIRTIO_F_VERSION_1,
    };
    blk.lock().unwrap().activate(ctx).unwrap();
    assert!(em.run_with_timeout(100).is_ok());
    assert_eq!(blk.lock().unwrap().metrics().write_bytes, 1024);
}
