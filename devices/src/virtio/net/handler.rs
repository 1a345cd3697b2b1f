//! virtio-net queue processing without fds (virtio 1.x §5.1.6): the transmit
//! queue turns device-readable chains into frames for the backend, the
//! receive queue puts backend frames into device-writable chains. Every frame
//! starts with the 12-byte `virtio_net_hdr_v1`, passed through unchanged
//! (except `num_buffers`, which the device sets to 1 on receive).
//!
//! A guest that lies (wrong directions, lengths beyond guest memory or the
//! largest frame, tiny receive buffers) loses that frame; the chain is still
//! returned, so the guest can neither wedge the queue nor make the device
//! work without bound.

use std::io::ErrorKind;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestMemoryMmap};

use super::tap::{NetBackend, VNET_HDR_LEN};
use crate::rate_limiter::RateLimiter;

/// Largest frame with its header: a 64 KiB GSO frame plus Ethernet and VLAN
/// headers (Firecracker's `MAX_BUFFER_SIZE`).
pub const MAX_FRAME: usize = VNET_HDR_LEN + 65550;
/// Shortest transmit frame worth sending: a header and an Ethernet header.
pub const MIN_TX_FRAME: usize = VNET_HDR_LEN + 14;

/// Counters kept by the net device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetMetrics {
    pub tx_frames: u64,
    pub tx_bytes: u64,
    pub tx_dropped: u64,
    pub tx_throttled: u64,
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub rx_dropped: u64,
    pub rx_throttled: u64,
}

/// What one pass over a queue did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetRun {
    /// Chains returned to the used ring.
    pub completed: u32,
    /// The rate limiter stopped the pass; its timer will resume it.
    pub throttled: bool,
    /// The pass stopped at its budget with work left: call again.
    pub more: bool,
    /// Receive only: frames wait but the guest posted no buffer.
    pub starved: bool,
    /// The used ring could not be written.
    pub broken: bool,
    /// The first guest or backend error, for a rate-limited log line.
    pub first_error: Option<String>,
}

impl NetRun {
    fn error(&mut self, e: impl FnOnce() -> String) {
        if self.first_error.is_none() {
            self.first_error = Some(e());
        }
    }
}

/// Why a chain carried no frame.
fn chain_error(what: &str, addr: u64, len: u32) -> String {
    format!("{what} (descriptor {addr:#x}+{len:#x})")
}

/// Sends every frame the guest queued on `queue`, at most `budget` of them.
pub fn process_tx(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    backend: &mut dyn NetBackend,
    limiter: &mut RateLimiter,
    buf: &mut Vec<u8>,
    metrics: &mut NetMetrics,
    budget: u32,
) -> NetRun {
    let mut run = NetRun::default();
    while let Some(chain) = queue.pop_descriptor_chain(mem) {
        if run.completed >= budget {
            queue.go_to_previous_position();
            run.more = true;
            break;
        }
        let head = chain.head_index();
        // Gather first: the limiter needs the length, and a broken chain must
        // not cost tokens.
        buf.clear();
        let mut bad = None;
        for d in chain {
            if d.is_write_only() {
                bad = Some(chain_error(
                    "device-writable descriptor on tx",
                    d.addr().0,
                    d.len(),
                ));
                break;
            }
            let len = d.len() as usize;
            if buf.len() + len > MAX_FRAME {
                bad = Some(chain_error(
                    "tx frame longer than the largest frame",
                    d.addr().0,
                    d.len(),
                ));
                break;
            }
            let at = buf.len();
            buf.resize(at + len, 0);
            if mem.read_slice(&mut buf[at..], d.addr()).is_err() {
                bad = Some(chain_error(
                    "tx descriptor outside guest memory",
                    d.addr().0,
                    d.len(),
                ));
                break;
            }
        }
        if bad.is_none() && buf.len() < MIN_TX_FRAME {
            bad = Some(format!("tx frame of {} bytes is too short", buf.len()));
        }
        if let Some(e) = bad {
            metrics.tx_dropped += 1;
            run.error(|| e);
        } else {
            let bytes = (buf.len() - VNET_HDR_LEN) as u64;
            if !limiter.is_unlimited() && !limiter.consume_request(bytes) {
                queue.go_to_previous_position();
                metrics.tx_throttled += 1;
                run.throttled = true;
                break;
            }
            match backend.write_frame(buf) {
                Ok(()) => {
                    metrics.tx_frames += 1;
                    metrics.tx_bytes += bytes;
                }
                Err(e) => {
                    // The TAP refused it (bad GSO header, interface down):
                    // the frame is lost, as on a real wire.
                    metrics.tx_dropped += 1;
                    run.error(|| format!("tap write: {e}"));
                }
            }
        }
        if queue.add_used(mem, head, 0).is_err() {
            run.broken = true;
            break;
        }
        run.completed += 1;
    }
    run
}

/// A received frame waiting for a guest buffer or for the rate limiter.
#[derive(Default)]
pub struct RxPending {
    buf: Vec<u8>,
    len: Option<usize>,
}

impl RxPending {
    /// An empty slot with room for the largest frame.
    pub fn new() -> Self {
        RxPending {
            buf: vec![0; MAX_FRAME],
            len: None,
        }
    }

    /// Forgets a waiting frame (device reset).
    pub fn clear(&mut self) {
        self.len = None;
    }
}

/// Moves frames from the backend into the guest's receive buffers until the
/// backend has none, the guest has no buffer, the limiter says stop, or
/// `budget` frames were delivered.
pub fn process_rx(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    backend: &mut dyn NetBackend,
    limiter: &mut RateLimiter,
    pending: &mut RxPending,
    metrics: &mut NetMetrics,
    budget: u32,
) -> NetRun {
    let mut run = NetRun::default();
    loop {
        let len = match pending.len {
            Some(len) => len,
            None => match backend.read_frame(&mut pending.buf) {
                Ok(n) if n < VNET_HDR_LEN => {
                    metrics.rx_dropped += 1;
                    continue;
                }
                Ok(n) => {
                    pending.len = Some(n);
                    n
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    run.error(|| format!("tap read: {e}"));
                    break;
                }
            },
        };
        if run.completed >= budget {
            run.more = true;
            break;
        }
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            run.starved = true;
            break;
        };
        let head = chain.head_index();
        let bytes = (len - VNET_HDR_LEN) as u64;
        if !limiter.is_unlimited() && !limiter.consume_request(bytes) {
            queue.go_to_previous_position();
            metrics.rx_throttled += 1;
            run.throttled = true;
            break;
        }
        // virtio 1.x: num_buffers is 1 when MRG_RXBUF is not negotiated.
        pending.buf[10..12].copy_from_slice(&1u16.to_le_bytes());
        let frame = &pending.buf[..len];
        let mut written = 0usize;
        let mut bad = None;
        for d in chain {
            if written == len {
                break;
            }
            if !d.is_write_only() {
                bad = Some(chain_error(
                    "device-readable descriptor on rx",
                    d.addr().0,
                    d.len(),
                ));
                break;
            }
            let n = (d.len() as usize).min(len - written);
            let ok = d.addr().checked_add(n as u64).is_some()
                && mem
                    .write_slice(&frame[written..written + n], d.addr())
                    .is_ok();
            if !ok {
                bad = Some(chain_error(
                    "rx descriptor outside guest memory",
                    d.addr().0,
                    d.len(),
                ));
                break;
            }
            written += n;
        }
        if bad.is_none() && written < len {
            bad = Some(format!(
                "rx buffer of {written} bytes for a {len}-byte frame"
            ));
        }
        pending.len = None;
        let used = match bad {
            None => {
                metrics.rx_frames += 1;
                metrics.rx_bytes += bytes;
                len as u32
            }
            Some(e) => {
                metrics.rx_dropped += 1;
                limiter.manual_replenish(bytes, crate::rate_limiter::TokenType::Bytes);
                run.error(|| e);
                0
            }
        };
        if queue.add_used(mem, head, used).is_err() {
            run.broken = true;
            break;
        }
        run.completed += 1;
    }
    run
}
