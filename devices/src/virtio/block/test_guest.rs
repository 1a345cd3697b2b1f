//! Test support: an in-memory guest that lays out a split virtqueue in guest
//! memory the way a driver would, so queue handlers (block and net) run on
//! real descriptor chains, including broken ones, without KVM.

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

/// Descriptor table address.
pub const DESC: u64 = 0x0;
/// Available ring address.
pub const AVAIL: u64 = 0x1000;
/// Used ring address.
pub const USED: u64 = 0x2000;
/// First address free for buffers.
pub const DATA: u64 = 0x10000;

/// A guest with one queue of `size` entries at fixed addresses.
pub struct TestGuest {
    pub mem: GuestMemoryMmap,
    /// Offset of this queue's rings from the fixed addresses above.
    base: u64,
    pub size: u16,
    next_desc: u16,
    avail_idx: u16,
}

impl TestGuest {
    /// `mem_size` bytes of guest memory and a queue of `size` (≤ 256) entries.
    pub fn new(mem_size: usize, size: u16) -> Self {
        let mem: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), mem_size)]).unwrap();
        TestGuest {
            mem,
            base: 0,
            size,
            next_desc: 0,
            avail_idx: 0,
        }
    }

    /// A second queue in the same memory, its rings 0x8000 above the first's.
    pub fn second_queue(&self) -> Self {
        TestGuest {
            mem: self.mem.clone(),
            base: 0x8000,
            size: self.size,
            next_desc: 0,
            avail_idx: 0,
        }
    }

    /// The device's view of the queue, as the transport would build it.
    pub fn queue(&self) -> Queue {
        let mut q = Queue::new(self.size).unwrap();
        q.set_size(self.size);
        q.set_desc_table_address(Some((self.base + DESC) as u32), Some(0));
        q.set_avail_ring_address(Some((self.base + AVAIL) as u32), Some(0));
        q.set_used_ring_address(Some((self.base + USED) as u32), Some(0));
        q.set_ready(true);
        assert!(q.is_valid(&self.mem));
        q
    }

    /// Writes one raw descriptor at `index`.
    pub fn write_desc(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = GuestAddress(self.base + DESC + 16 * u64::from(index));
        self.mem.write_obj(addr, at).unwrap();
        self.mem.write_obj(len, at.unchecked_add(8)).unwrap();
        self.mem.write_obj(flags, at.unchecked_add(12)).unwrap();
        self.mem.write_obj(next, at.unchecked_add(14)).unwrap();
    }

    /// Publishes `head` in the available ring.
    pub fn publish(&mut self, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        self.mem
            .write_obj(head, GuestAddress(self.base + AVAIL + 4 + 2 * slot))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(self.base + AVAIL + 2))
            .unwrap();
    }

    /// Sets the available index directly (to lie about it).
    pub fn set_avail_idx(&mut self, idx: u16) {
        self.avail_idx = idx;
        self.mem
            .write_obj(idx, GuestAddress(self.base + AVAIL + 2))
            .unwrap();
    }

    /// Adds a well-linked chain of `(addr, len, device_writable)` and publishes it.
    pub fn add_chain(&mut self, descs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc % self.size;
        for (i, &(addr, len, w)) in descs.iter().enumerate() {
            let idx = (self.next_desc + i as u16) % self.size;
            let last = i + 1 == descs.len();
            let mut flags = if w { VRING_DESC_F_WRITE as u16 } else { 0 };
            if !last {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            self.write_desc(idx, addr, len, flags, (idx + 1) % self.size);
        }
        self.next_desc = (self.next_desc + descs.len() as u16) % self.size;
        self.publish(head);
        head
    }

    /// The used ring's index.
    pub fn used_idx(&self) -> u16 {
        self.mem
            .read_obj(GuestAddress(self.base + USED + 2))
            .unwrap()
    }

    /// The used ring entries `(id, len)` so far.
    pub fn used(&self) -> Vec<(u32, u32)> {
        let n: u16 = self
            .mem
            .read_obj(GuestAddress(self.base + USED + 2))
            .unwrap();
        (0..n)
            .map(|i| {
                let at = GuestAddress(self.base + USED + 4 + 8 * u64::from(i % self.size));
                (
                    self.mem.read_obj(at).unwrap(),
                    self.mem.read_obj(at.unchecked_add(4)).unwrap(),
                )
            })
            .collect()
    }
}
