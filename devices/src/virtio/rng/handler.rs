//! The virtio-rng queue loop, without fds: pops each request chain, checks
//! every descriptor is device-writable and inside guest memory, charges the
//! rate limiter one op plus the bytes it will write, fills the buffers from
//! the [`RandomSource`] and returns the chain with the count written. A
//! refused chain goes back with length 0; nothing a driver puts on the ring
//! makes the device panic or loop.

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

use super::MAX_CHAIN_FILL;
use crate::rate_limiter::RateLimiter;
pub use crate::virtio::block::handler::QueueRun;

/// Where random bytes come from (tests inject a failing one).
pub type RandomSource = fn(&mut [u8]) -> std::io::Result<()>;

/// Fills `buf` from the host kernel's CSPRNG (`getrandom(2)`, blocking only
/// until the pool is first initialised, which a running host is past).
pub fn host_random(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a valid writable buffer of `rest.len()` bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

/// Counters of the entropy device (Firecracker's `entropy` metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntropyMetrics {
    /// Random bytes handed to the guest.
    pub entropy_bytes: u64,
    /// Requests answered with data.
    pub requests: u64,
    /// Chains refused (a read-only descriptor, a buffer outside memory).
    pub bad_requests: u64,
    /// The host's random source failed.
    pub host_rng_fails: u64,
    /// Times the rate limiter held the queue.
    pub throttled: u64,
}

/// Why a chain got nothing.
#[derive(Debug, thiserror::Error)]
enum ChainError {
    #[error("descriptor {0} is not device-writable")]
    ReadOnly(usize),
    #[error("descriptor {index} ({len} bytes at {addr:#x}) is not inside guest memory")]
    OutOfMemory { index: usize, addr: u64, len: u32 },
    #[error("the host's random source failed")]
    Source(#[source] std::io::Error),
    #[error("cannot write the random bytes into guest memory")]
    Write,
}

/// The writable segments of one chain, at most [`MAX_CHAIN_FILL`] bytes.
fn segments(
    mem: &GuestMemoryMmap,
    chain: impl Iterator<Item = Descriptor>,
) -> Result<Vec<(GuestAddress, u32)>, ChainError> {
    let mut segs = Vec::new();
    let mut total: u32 = 0;
    for (index, d) in chain.enumerate() {
        if !d.is_write_only() {
            return Err(ChainError::ReadOnly(index));
        }
        if d.len() > 0 && !mem.check_range(d.addr(), d.len() as usize, Permissions::Write) {
            return Err(ChainError::OutOfMemory {
                index,
                addr: d.addr().0,
                len: d.len(),
            });
        }
        let take = d.len().min(MAX_CHAIN_FILL - total);
        if take > 0 {
            segs.push((d.addr(), take));
            total += take;
        }
    }
    Ok(segs)
}

/// Writes random bytes into `segs`; returns how many.
fn fill(
    mem: &GuestMemoryMmap,
    segs: &[(GuestAddress, u32)],
    source: RandomSource,
) -> Result<u32, ChainError> {
    let mut buf = [0u8; 4096];
    let mut written = 0u32;
    for &(addr, len) in segs {
        let mut off = 0u32;
        while off < len {
            let n = (len - off).min(buf.len() as u32) as usize;
            let chunk = &mut buf[..n];
            source(chunk).map_err(ChainError::Source)?;
            let at = addr.checked_add(u64::from(off)).ok_or(ChainError::Write)?;
            mem.write_slice(chunk, at).map_err(|_| ChainError::Write)?;
            off += n as u32;
            written += n as u32;
        }
    }
    Ok(written)
}

/// Answers every available request on `queue`.
pub fn process_queue(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    limiter: &mut RateLimiter,
    source: RandomSource,
    metrics: &mut EntropyMetrics,
) -> QueueRun {
    let mut run = QueueRun::default();
    while let Some(chain) = queue.pop_descriptor_chain(mem) {
        let head = chain.head_index();
        if head >= queue.size() {
            // No descriptor to give back: the used ring cannot name it.
            metrics.bad_requests += 1;
            run.first_error
                .get_or_insert(format!("head index {head} is past the queue"));
            continue;
        }
        let result = segments(mem, chain).map(|segs| {
            let bytes: u64 = segs.iter().map(|s| u64::from(s.1)).sum();
            (segs, bytes)
        });
        let written = match result {
            Ok((segs, bytes)) => {
                if !limiter.is_unlimited() && !limiter.consume_request(bytes) {
                    // Leave the chain on the ring; the timer resumes from it.
                    queue.go_to_previous_position();
                    metrics.throttled += 1;
                    run.throttled = true;
                    break;
                }
                match fill(mem, &segs, source) {
                    Ok(n) => {
                        metrics.entropy_bytes += u64::from(n);
                        metrics.requests += 1;
                        n
                    }
                    Err(e) => {
                        if matches!(e, ChainError::Source(_)) {
                            metrics.host_rng_fails += 1;
                        } else {
                            metrics.bad_requests += 1;
                        }
                        run.first_error.get_or_insert(e.to_string());
                        0
                    }
                }
            }
            Err(e) => {
                metrics.bad_requests += 1;
                run.first_error.get_or_insert(e.to_string());
                0
            }
        };
        if queue.add_used(mem, head, written).is_err() {
            run.broken = true;
            break;
        }
        run.completed += 1;
    }
    run
}
