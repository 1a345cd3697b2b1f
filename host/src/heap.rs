//! emberd's heap: keeps glibc's malloc from hoarding freed memory. emberd
//! allocates on many threads (tokio workers, blocking launches) and frees
//! on others; with glibc's default of up to 8 arenas per core, the pages
//! freed in each arena stayed mapped, so RSS climbed for as long as the load
//! ran (soak: 9.8 -> 49 MiB in 10 minutes, 7 MiB of it in use, the rest
//! given back by one malloc_trim). Fewer arenas and a periodic trim keep RSS
//! near what is in use.

use std::time::Duration;

/// Arenas malloc may create (glibc's default: 8 per core).
const ARENAS: i32 = 2;
/// How often freed pages are handed back to the kernel.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Bytes malloc has handed out and not taken back (glibc's `mallinfo2`:
/// chunks in use in every arena plus the ones it mmapped directly). Unlike
/// RSS it counts no freed-but-kept pages, no thread stacks and no code, so a
/// leak shows here first. None where the allocator is not glibc's.
pub fn in_use_bytes() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 takes no arguments and returns a struct by
        // value; it only reads malloc's own statistics under its locks.
        let info = unsafe { libc::mallinfo2() };
        Some((info.uordblks + info.hblkhd) as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// Caps the arenas; call before the runtime's threads start.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; no memory is passed.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// Starts the thread that returns freed heap pages every [`TRIM_EVERY`]
/// (it lives as long as the process).
pub fn start_trimming() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let spawned = std::thread::Builder::new()
            .name("heap-trim".into())
            .spawn(|| loop {
                std::thread::sleep(TRIM_EVERY);
                // SAFETY: malloc_trim only releases free pages of malloc's
                // own arenas; it takes their locks itself.
                unsafe {
                    libc::malloc_trim(0);
                }
            });
        if let Err(e) = spawned {
            eprintln!("emberd: no heap-trim thread ({e}): RSS may keep freed memory");
        }
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    #[test]
    fn an_allocation_is_counted_until_it_is_freed() {
        let before = in_use_bytes().unwrap_or(0);
        let block = std::hint::black_box(vec![7u8; 16 << 20]);
        let during = in_use_bytes().unwrap_or(0);
        assert!(during >= before + (16 << 20), "{before} -> {during}");
        drop(block);
        let after = in_use_bytes().unwrap_or(u64::MAX);
        assert!(after + (16 << 20) <= during, "{during} -> {after}");
    }
}
