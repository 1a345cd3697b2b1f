//! The global allocator over `[heap_start, heap_end)` from the start-info page:
//! power-of-two size classes, each with a free list, fed by a bump pointer.
//! O(1), never coalesces; a freed block is reused by the next request of its
//! class, which suits guests that repeat the same work (one invocation after
//! another) and wastes at most half of each block.
//!
//! `alloc_zeroed` does not write blocks fresh from the bump pointer: the
//! heap range is guest RAM the VMM never wrote (DESIGN.md, kernel-less ABI),
//! so it reads as zero, and not touching it matters — a guest's first touch
//! of a page is expensive under PVM (about 0.1 ms), and the vsock driver's
//! buffers alone are 64 pages that the device, not the guest, fills.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::null_mut;
use core::sync::atomic::{AtomicBool, Ordering};

const MIN_CLASS: u32 = 4; // 16-byte blocks
const CLASSES: usize = 48; // up to 2^51 bytes
const PAGE: usize = 4096;

struct Inner {
    next: usize,
    end: usize,
    free: [usize; CLASSES],
}

struct Heap {
    lock: AtomicBool,
    inner: core::cell::UnsafeCell<Inner>,
}

// SAFETY: `inner` is only touched while `lock` is held (see `with`).
unsafe impl Sync for Heap {}

#[global_allocator]
static HEAP: Heap = Heap {
    lock: AtomicBool::new(false),
    inner: core::cell::UnsafeCell::new(Inner {
        next: 0,
        end: 0,
        free: [0; CLASSES],
    }),
};

/// `size` bytes (a multiple of the page size) carved from the top of the
/// heap, never freed: for the few large blocks a guest keeps for its whole
/// life (wasmtime's linear-memory reservations, see `wasmtime_platform`),
/// which must not be rounded up to a power of two. Fresh, so still zero.
/// Null when the heap cannot hold it.
pub(crate) fn alloc_top(size: usize) -> *mut u8 {
    HEAP.with(|h| {
        let Some(start) = h.end.checked_sub(size).map(|p| p & !(PAGE - 1)) else {
            return null_mut();
        };
        if start < h.next {
            return null_mut();
        }
        h.end = start;
        start as *mut u8
    })
}

/// Hands the allocator its memory; called once by `__start`.
pub(crate) fn init(start: u64, end: u64) {
    HEAP.with(|h| {
        h.next = start as usize;
        h.end = (end as usize).max(start as usize);
    });
}

fn class_of(layout: Layout) -> Option<u32> {
    let size = layout.size().max(layout.align()).max(1 << MIN_CLASS);
    let class = size.checked_next_power_of_two()?.trailing_zeros();
    ((class as usize) < CLASSES).then_some(class)
}

impl Heap {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        while self
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        // SAFETY: the lock is held, so this is the only reference to inner.
        let r = f(unsafe { &mut *self.inner.get() });
        self.lock.store(false, Ordering::Release);
        r
    }
}

impl Inner {
    /// A block of `class`, and whether it is fresh from the bump pointer
    /// (never handed out before, so still zero).
    fn alloc(&mut self, class: u32, align: usize) -> (*mut u8, bool) {
        let head = self.free[class as usize];
        if head != 0 && head % align == 0 {
            // SAFETY: every free-list block is at least 16 bytes of heap that
            // we own; its first word links to the next free block.
            self.free[class as usize] = unsafe { *(head as *const usize) };
            return (head as *mut u8, false);
        }
        let size = 1usize << class;
        // Blocks are aligned to their size up to a page, so that any layout
        // whose alignment is within its size class is satisfied.
        let align = align.max(size.min(PAGE));
        let Some(start) = self.next.checked_add(align - 1).map(|p| p & !(align - 1)) else {
            return (null_mut(), false);
        };
        match start.checked_add(size) {
            Some(end) if end <= self.end => {
                self.next = end;
                (start as *mut u8, true)
            }
            _ => (null_mut(), false),
        }
    }

    fn free(&mut self, ptr: *mut u8, class: u32) {
        // SAFETY: ptr is a block of this class we handed out (GlobalAlloc
        // contract), at least 16 bytes and 8-aligned.
        unsafe { *(ptr as *mut usize) = self.free[class as usize] };
        self.free[class as usize] = ptr as usize;
    }
}

// SAFETY: blocks come from the heap range the VMM reserved for us, are handed
// out to one owner at a time, and satisfy the layout's size and alignment.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            Some(class) => self.with(|h| h.alloc(class, layout.align())).0,
            None => null_mut(),
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(layout) else {
            return null_mut();
        };
        let (ptr, fresh) = self.with(|h| h.alloc(class, layout.align()));
        if !ptr.is_null() && !fresh {
            // SAFETY: a reused block of at least `layout.size()` bytes that
            // is now exclusively the caller's.
            unsafe { core::ptr::write_bytes(ptr, 0, layout.size()) };
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(class) = class_of(layout) {
            self.with(|h| h.free(ptr, class));
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return null_mut();
        };
        if class_of(layout) == class_of(new_layout) {
            return ptr; // still fits its block
        }
        // SAFETY: GlobalAlloc contract, forwarded.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the smaller of the two sizes
            // and distinct (the old one is still allocated).
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}
