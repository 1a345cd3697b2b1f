//! A split virtqueue (virtio 1.x §2.7) driven from the guest, in memory the
//! caller provides: descriptor table, available ring and used ring laid out
//! back to back. No allocation: the free list and chain lengths live in
//! fixed arrays inside [`VirtQueue`] (queues hold at most [`MAX_QUEUE_SIZE`]).
//!
//! Memory shared with the device is only touched with volatile accesses;
//! `fence`s order the ring-index updates against the entries they publish.

use core::sync::atomic::{fence, Ordering};

use super::DriverError;

/// Largest queue this driver sets up.
pub const MAX_QUEUE_SIZE: u16 = 256;

const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
/// Used-ring flag: the device does not need notifications now.
const USED_F_NO_NOTIFY: u16 = 1;

/// One buffer of a chain: guest-physical address, length, and whether the
/// device writes it (true) or reads it (false).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buf {
    pub addr: u64,
    pub len: u32,
    pub device_writes: bool,
}

/// A split virtqueue of `size` entries.
pub struct VirtQueue {
    base: usize,
    size: u16,
    avail_off: usize,
    used_off: usize,
    free_head: u16,
    num_free: u16,
    avail_idx: u16,
    last_used: u16,
    next: [u16; MAX_QUEUE_SIZE as usize],
    chain_len: [u16; MAX_QUEUE_SIZE as usize],
}

impl VirtQueue {
    /// Bytes of memory a queue of `size` entries needs.
    pub const fn mem_size(size: u16) -> usize {
        let n = size as usize;
        Self::used_offset(n) + 6 + 8 * n
    }

    const fn used_offset(n: usize) -> usize {
        (16 * n + 6 + 2 * n + 3) & !3
    }

    /// A queue of `size` entries (a power of two ≤ [`MAX_QUEUE_SIZE`]) in
    /// `mem`, which must be 16-byte aligned and at least [`Self::mem_size`]
    /// bytes. The memory is zeroed. Its address is handed to the device as
    /// a guest-physical address (identity-mapped guests).
    pub fn new(mem: &'static mut [u8], size: u16) -> Result<Self, DriverError> {
        let n = size as usize;
        if size == 0 || !size.is_power_of_two() || size > MAX_QUEUE_SIZE {
            return Err(DriverError::QueueMemory);
        }
        if mem.len() < Self::mem_size(size) || !(mem.as_ptr() as usize).is_multiple_of(16) {
            return Err(DriverError::QueueMemory);
        }
        mem.fill(0);
        let mut q = VirtQueue {
            base: mem.as_mut_ptr() as usize,
            size,
            avail_off: 16 * n,
            used_off: Self::used_offset(n),
            free_head: 0,
            num_free: size,
            avail_idx: 0,
            last_used: 0,
            next: [0; MAX_QUEUE_SIZE as usize],
            chain_len: [0; MAX_QUEUE_SIZE as usize],
        };
        for i in 0..size {
            q.next[i as usize] = (i + 1) % size;
        }
        Ok(q)
    }

    /// Number of entries.
    pub fn size(&self) -> u16 {
        self.size
    }
    /// Free descriptors.
    pub fn num_free(&self) -> u16 {
        self.num_free
    }
    /// Guest-physical address of the descriptor table.
    pub fn desc_addr(&self) -> u64 {
        self.base as u64
    }
    /// Guest-physical address of the available ring.
    pub fn avail_addr(&self) -> u64 {
        (self.base + self.avail_off) as u64
    }
    /// Guest-physical address of the used ring.
    pub fn used_addr(&self) -> u64 {
        (self.base + self.used_off) as u64
    }

    fn write16(&self, off: usize, v: u16) {
        // SAFETY: `off` + 2 is within the mem_size() bytes `new` took as
        // `&'static mut` (exclusively ours and the device's), 2-aligned.
        unsafe { core::ptr::write_volatile((self.base + off) as *mut u16, v) }
    }
    fn read16(&self, off: usize) -> u16 {
        // SAFETY: as in write16.
        unsafe { core::ptr::read_volatile((self.base + off) as *const u16) }
    }
    fn read32(&self, off: usize) -> u32 {
        // SAFETY: as in write16, 4-aligned (used ring entries).
        unsafe { core::ptr::read_volatile((self.base + off) as *const u32) }
    }
    fn write_desc(&self, i: u16, b: &Buf, next: Option<u16>) {
        let off = 16 * i as usize;
        let mut flags = if b.device_writes { DESC_F_WRITE } else { 0 };
        if next.is_some() {
            flags |= DESC_F_NEXT;
        }
        // SAFETY: descriptor `i` < size lies in the table at the start of our
        // memory; the table is 16-aligned, so each field is aligned.
        unsafe {
            core::ptr::write_volatile((self.base + off) as *mut u64, b.addr);
            core::ptr::write_volatile((self.base + off + 8) as *mut u32, b.len);
            core::ptr::write_volatile((self.base + off + 12) as *mut u16, flags);
            core::ptr::write_volatile((self.base + off + 14) as *mut u16, next.unwrap_or(0));
        }
    }

    /// Publishes a chain of buffers; returns its head index. The caller
    /// keeps the buffers alive and untouched until [`Self::pop_used`] returns it.
    pub fn add(&mut self, bufs: &[Buf]) -> Result<u16, DriverError> {
        let n = bufs.len();
        if n == 0 || n > self.num_free as usize {
            return Err(DriverError::QueueFull);
        }
        let head = self.free_head;
        let mut i = head;
        for (k, b) in bufs.iter().enumerate() {
            let next = self.next[i as usize];
            self.write_desc(i, b, (k + 1 < n).then_some(next));
            if k + 1 < n {
                i = next;
            }
        }
        self.free_head = self.next[i as usize];
        self.num_free -= n as u16;
        self.chain_len[head as usize] = n as u16;
        let slot = (self.avail_idx % self.size) as usize;
        self.write16(self.avail_off + 4 + 2 * slot, head);
        // The ring entry (and descriptors) must be visible before the index.
        fence(Ordering::Release);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.write16(self.avail_off + 2, self.avail_idx);
        Ok(head)
    }

    /// Whether the device wants a notification for what was just added
    /// (it clears VRING_USED_F_NO_NOTIFY when it may be idle).
    pub fn should_notify(&self) -> bool {
        // Order our avail-index store before the flag load (StoreLoad).
        fence(Ordering::SeqCst);
        self.read16(self.used_off) & USED_F_NO_NOTIFY == 0
    }

    /// Whether the device has returned buffers not yet popped.
    pub fn has_used(&self) -> bool {
        self.read16(self.used_off + 2) != self.last_used
    }

    /// Takes the next used chain: `(head, bytes the device wrote)`. Entries
    /// naming a descriptor that is not the head of a chain in flight are
    /// skipped (a broken device must not corrupt the free list).
    pub fn pop_used(&mut self) -> Option<(u16, u32)> {
        loop {
            if !self.has_used() {
                return None;
            }
            // Read the entry only after seeing the index that covers it.
            fence(Ordering::Acquire);
            let slot = (self.last_used % self.size) as usize;
            let off = self.used_off + 4 + 8 * slot;
            let id = self.read32(off);
            let len = self.read32(off + 4);
            self.last_used = self.last_used.wrapping_add(1);
            let Some(head) = u16::try_from(id).ok().filter(|&h| h < self.size) else {
                continue;
            };
            let count = self.chain_len[head as usize];
            if count == 0 {
                continue;
            }
            self.chain_len[head as usize] = 0;
            let mut tail = head;
            for _ in 1..count {
                tail = self.next[tail as usize];
            }
            self.next[tail as usize] = self.free_head;
            self.free_head = head;
            self.num_free += count;
            return Some((head, len));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(size: u16) -> VirtQueue {
        let mem = std::vec![0u128; VirtQueue::mem_size(size) / 16 + 1].leak();
        // SAFETY: reinterpreting a leaked, 16-aligned u128 slice as bytes.
        let bytes = unsafe {
            core::slice::from_raw_parts_mut(mem.as_mut_ptr().cast::<u8>(), mem.len() * 16)
        };
        VirtQueue::new(bytes, size).unwrap()
    }

    /// Plays the device: returns head `id` with `len` in the used ring.
    fn device_return(q: &VirtQueue, id: u32, len: u32) {
        let idx = q.read16(q.used_off + 2);
        let off = q.used_off + 4 + 8 * (idx % q.size) as usize;
        // SAFETY: inside the queue memory, aligned.
        unsafe {
            core::ptr::write_volatile((q.base + off) as *mut u32, id);
            core::ptr::write_volatile((q.base + off + 4) as *mut u32, len);
        }
        q.write16(q.used_off + 2, idx.wrapping_add(1));
    }

    #[test]
    fn chains_are_published_and_recycled() {
        let mut q = queue(4);
        let b = |a| Buf {
            addr: a,
            len: 8,
            device_writes: a % 2 == 1,
        };
        let h1 = q.add(&[b(0x1000), b(0x2001)]).unwrap();
        let h2 = q.add(&[b(0x3000), b(0x4000)]).unwrap();
        assert_eq!(q.num_free(), 0);
        assert_eq!(q.add(&[b(0x5000)]), Err(DriverError::QueueFull));
        assert_eq!(q.read16(q.avail_off + 2), 2);
        assert_eq!(q.read16(q.avail_off + 4), h1);
        // First descriptor of chain 1 links to the second, which is device-writable.
        let d = |i: u16, f: usize| q.read16(16 * i as usize + f);
        assert_eq!(d(h1, 12), DESC_F_NEXT);
        assert_eq!(d(d(h1, 14), 12), DESC_F_WRITE);
        assert!(q.pop_used().is_none());
        device_return(&q, 99, 0); // bogus id: skipped
        device_return(&q, u32::from(h2), 5);
        assert_eq!(q.pop_used(), Some((h2, 5)));
        device_return(&q, u32::from(h2), 5); // returned twice: skipped
        assert_eq!(q.pop_used(), None);
        assert_eq!(q.num_free(), 2);
        let h3 = q.add(&[b(0x6000), b(0x7000)]).unwrap();
        device_return(&q, u32::from(h1), 1);
        device_return(&q, u32::from(h3), 2);
        assert_eq!(q.pop_used(), Some((h1, 1)));
        assert_eq!(q.pop_used(), Some((h3, 2)));
        assert_eq!(q.num_free(), 4);
        assert!(q.should_notify());
        q.write16(q.used_off, USED_F_NO_NOTIFY);
        assert!(!q.should_notify());
    }

    #[test]
    fn refuses_bad_sizes_and_memory() {
        let mem = std::vec![0u8; 64].leak();
        assert_eq!(VirtQueue::new(mem, 8).err(), Some(DriverError::QueueMemory));
        let mem = std::vec![0u8; 4096].leak();
        assert_eq!(VirtQueue::new(mem, 3).err(), Some(DriverError::QueueMemory));
    }
}
