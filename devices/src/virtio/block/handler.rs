//! The virtio-block queue loop, without fds: pops chains, charges the rate
//! limiter, runs each request on the [`Disk`] and returns it to the used ring
//! with its status byte. The event-loop glue (`device.rs`) calls it when the
//! queue's notify fd or the limiter's timer fires.

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestMemoryMmap};

use super::disk::{Disk, DiskError};
use super::request::{self, RequestKind, STATUS_IOERR, STATUS_OK};
use crate::rate_limiter::RateLimiter;

/// Counters kept by the block device (read by tests and metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockMetrics {
    /// Requests completed with status OK.
    pub ok: u64,
    /// Requests refused by the parser or failed on the host.
    pub errors: u64,
    /// Bytes read from the drive into the guest.
    pub read_bytes: u64,
    /// Bytes written from the guest to the drive.
    pub write_bytes: u64,
    /// Times the rate limiter held the queue.
    pub throttled: u64,
}

/// What one run over the queue did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueRun {
    /// Chains returned to the used ring.
    pub completed: u32,
    /// The limiter stopped the run; its timer fd will fire.
    pub throttled: bool,
    /// The used ring could not be written: the queue is broken and the
    /// device should ask for a reset.
    pub broken: bool,
    /// The first error of this run, for a rate-limited log line.
    pub first_error: Option<String>,
}

/// Processes every available request on `queue`.
pub fn process_queue(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    disk: &mut Disk,
    limiter: &mut RateLimiter,
    metrics: &mut BlockMetrics,
) -> QueueRun {
    let mut run = QueueRun::default();
    while let Some(chain) = queue.pop_descriptor_chain(mem) {
        let head = chain.head_index();
        let parsed = request::parse(mem, chain, disk.geometry());
        let bytes = match &parsed.request {
            Ok(r) if matches!(r.kind, RequestKind::In | RequestKind::Out) => r.data_len,
            _ => 0,
        };
        if !limiter.is_unlimited() && !limiter.consume_request(bytes) {
            // Leave the chain on the ring; the timer resumes from it.
            queue.go_to_previous_position();
            metrics.throttled += 1;
            run.throttled = true;
            break;
        }
        let result = parsed.request.map_err(DiskError::from).and_then(|r| {
            let written = disk.execute(mem, &r)?;
            match r.kind {
                RequestKind::In => metrics.read_bytes += r.data_len,
                RequestKind::Out => metrics.write_bytes += r.data_len,
                _ => {}
            }
            Ok(written)
        });
        let (status, data_written) = match result {
            Ok(n) => {
                metrics.ok += 1;
                (STATUS_OK, n)
            }
            Err(e) => {
                metrics.errors += 1;
                let status = match &e {
                    DiskError::Request(r) => r.status(),
                    _ => STATUS_IOERR,
                };
                if run.first_error.is_none() {
                    run.first_error = Some(e.to_string());
                }
                (status, 0)
            }
        };
        let used_len = match parsed.status {
            Some(addr) if mem.write_obj(status, addr).is_ok() => data_written.saturating_add(1),
            _ => 0,
        };
        if queue.add_used(mem, head, used_len).is_err() {
            run.broken = true;
            break;
        }
        run.completed += 1;
    }
    run
}
