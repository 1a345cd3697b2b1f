//! wasmtime's custom-platform hooks (its `capi.rs`: "virtual memory", TLS)
//! over this runtime's heap. The guest is identity-mapped with user RWX pages
//! and no page-table changes, so "virtual memory" is heap memory:
//! `wasmtime_mmap_new` hands out a page-aligned zeroed block, `mprotect` is a
//! no-op, `remap` zeroes in place, `munmap` keeps the block for reuse.
//!
//! Zeroing is the cost to avoid: a linear memory is *reserved* at its full
//! size (the function's memory) but only the part made accessible can ever be
//! written, and touching a guest page for the first time is slow under PVM.
//! So every block remembers how far it was ever writable (`dirty`); a block
//! reused for a new mapping has only that prefix zeroed. Large blocks (linear
//! memories, code) are carved at their exact size from the top of the heap
//! ([`crate::heap::alloc_top`]) rather than rounded up to a power-of-two size
//! class, and are kept for reuse rather than freed; small ones come from and
//! go back to the ordinary allocator.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

const PAGE: usize = 4096;
const PROT_WRITE: u32 = 1 << 1;
/// Blocks of at least this size are "large" (see the module comment).
const LARGE: usize = 1 << 20;
/// Error code returned to wasmtime (it only reports it as "os error N").
const ENOMEM: i32 = 12;

#[derive(Clone, Copy)]
struct Block {
    size: usize,
    /// Bytes from the start that may have been written.
    dirty: usize,
}

struct Blocks {
    live: BTreeMap<usize, Block>,
    spare: Vec<(usize, Block)>,
}

struct Lock {
    held: AtomicBool,
    inner: core::cell::UnsafeCell<Option<Blocks>>,
}

// SAFETY: `inner` is only touched while `held` is set (see `with`).
unsafe impl Sync for Lock {}

static BLOCKS: Lock = Lock {
    held: AtomicBool::new(false),
    inner: core::cell::UnsafeCell::new(None),
};

fn with<R>(f: impl FnOnce(&mut Blocks) -> R) -> R {
    while BLOCKS
        .held
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    // SAFETY: the lock is held, so this is the only reference.
    let inner = unsafe { &mut *BLOCKS.inner.get() };
    let r = f(inner.get_or_insert_with(|| Blocks {
        live: BTreeMap::new(),
        spare: Vec::new(),
    }));
    BLOCKS.held.store(false, Ordering::Release);
    r
}

fn layout(size: usize) -> Option<Layout> {
    Layout::from_size_align(size, PAGE).ok()
}

/// Zeroes `len` bytes at `addr`.
///
/// # Safety
/// The range must be memory this module handed out and nobody else uses.
unsafe fn zero(addr: usize, len: usize) {
    // SAFETY: forwarded to the caller.
    unsafe { core::ptr::write_bytes(addr as *mut u8, 0, len) };
}

/// # Safety
/// Called by wasmtime with a valid `ret` pointer.
#[no_mangle]
pub unsafe extern "C" fn wasmtime_mmap_new(size: usize, prot: u32, ret: &mut *mut u8) -> i32 {
    let size = size.next_multiple_of(PAGE).max(PAGE);
    let dirty = if prot & PROT_WRITE != 0 { size } else { 0 };
    let reused = with(|b| {
        let i = b.spare.iter().position(|(_, s)| s.size == size)?;
        Some(b.spare.swap_remove(i))
    });
    let p = match reused {
        Some((addr, old)) => {
            // SAFETY: a spare block of `size` bytes that this module owns.
            unsafe { zero(addr, old.dirty.min(size)) };
            addr as *mut u8
        }
        None if size >= LARGE => crate::heap::alloc_top(size),
        None => match layout(size) {
            // SAFETY: non-zero size.
            Some(l) => unsafe { alloc_zeroed(l) },
            None => core::ptr::null_mut(),
        },
    };
    if p.is_null() {
        return ENOMEM;
    }
    let addr = p as usize;
    with(|b| b.live.insert(addr, Block { size, dirty }));
    *ret = addr as *mut u8;
    0
}

/// The live block holding `addr`, as (base, block).
fn containing(b: &Blocks, addr: usize) -> Option<(usize, Block)> {
    let (&base, &blk) = b.live.range(..=addr).next_back()?;
    (addr < base + blk.size).then_some((base, blk))
}

/// # Safety
/// Called by wasmtime on a range it mapped.
#[no_mangle]
pub unsafe extern "C" fn wasmtime_mmap_remap(addr: *mut u8, size: usize, prot: u32) -> i32 {
    let at = addr as usize;
    let zero_len = with(|b| {
        let (base, mut blk) = containing(b, at)?;
        let end = (at + size).min(base + blk.size);
        let dirty_end = base + blk.dirty;
        if prot & PROT_WRITE != 0 {
            blk.dirty = blk.dirty.max(end - base);
            b.live.insert(base, blk);
        }
        Some(dirty_end.min(end).saturating_sub(at))
    });
    match zero_len {
        Some(n) => {
            // SAFETY: inside a live block wasmtime owns and asked to reset.
            unsafe { zero(at, n) };
            0
        }
        None => ENOMEM,
    }
}

/// # Safety
/// Called by wasmtime on a range it mapped and no longer uses.
#[no_mangle]
pub unsafe extern "C" fn wasmtime_munmap(ptr: *mut u8, _size: usize) -> i32 {
    let small = with(|b| {
        let blk = b.live.remove(&(ptr as usize))?;
        if blk.size >= LARGE {
            b.spare.push((ptr as usize, blk));
            return None;
        }
        Some(blk.size)
    });
    if let Some(l) = small.and_then(layout) {
        // SAFETY: allocated by alloc_zeroed with this layout, no longer live.
        unsafe { dealloc(ptr, l) };
    }
    0
}

/// Guest pages are all user RWX: only the writable extent is tracked.
///
/// # Safety
/// Called by wasmtime on a range it mapped.
#[no_mangle]
pub unsafe extern "C" fn wasmtime_mprotect(ptr: *mut u8, size: usize, prot: u32) -> i32 {
    if prot & PROT_WRITE != 0 {
        let at = ptr as usize;
        with(|b| {
            if let Some((base, mut blk)) = containing(b, at) {
                blk.dirty = blk.dirty.max((at + size - base).min(blk.size));
                b.live.insert(base, blk);
            }
        });
    }
    0
}

#[no_mangle]
pub extern "C" fn wasmtime_page_size() -> usize {
    PAGE
}

/// No copy-on-write images: wasmtime initialises memories by copying.
///
/// # Safety
/// Called by wasmtime with a valid `ret` pointer.
#[no_mangle]
pub unsafe extern "C" fn wasmtime_memory_image_new(
    _ptr: *const u8,
    _len: usize,
    ret: &mut *mut u8,
) -> i32 {
    *ret = core::ptr::null_mut();
    0
}

/// Never called: no image is ever created.
#[no_mangle]
pub extern "C" fn wasmtime_memory_image_map_at(_image: *mut u8, _addr: *mut u8, _len: usize) -> i32 {
    ENOMEM
}

#[no_mangle]
pub extern "C" fn wasmtime_memory_image_free(_image: *mut u8) {}

/// Only vCPU 0 runs wasm (secondary vCPUs tick the epoch), so one static per
/// slot is this "thread's" TLS.
static TLS: [AtomicPtr<u8>; 2] = [
    AtomicPtr::new(core::ptr::null_mut()),
    AtomicPtr::new(core::ptr::null_mut()),
];

#[no_mangle]
pub extern "C" fn wasmtime_tls_get(slot: usize) -> *mut u8 {
    TLS.get(slot)
        .map_or(core::ptr::null_mut(), |p| p.load(Ordering::Relaxed))
}

#[no_mangle]
pub extern "C" fn wasmtime_tls_set(slot: usize, ptr: *mut u8) {
    if let Some(p) = TLS.get(slot) {
        p.store(ptr, Ordering::Relaxed);
    }
}
