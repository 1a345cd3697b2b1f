//! Snapshots of a [`MmioTransport`] and the device behind it
//! (`state.rs` types): [`MmioTransport::save_state`] reads the registers
//! and the device's ring positions; [`MmioTransport::restore_state`]
//! validates a saved state against this transport, its device and guest
//! memory, then puts it back and, if the device was active, activates it
//! again with its rings where they were.

use std::sync::atomic::Ordering;

use virtio_queue::{Queue, QueueT};

use super::{status, MmioTransport, QueueRegs};
use crate::virtio::state::{QueueState, StateError, TransportState, VirtioState};
use crate::virtio::{int_status, VirtioDevice, VIRTIO_F_VERSION_1};

/// Status bits a driver can set (DEVICE_NEEDS_RESET is the device's).
const DRIVER_STATUS: u32 =
    status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK | status::FAILED;

/// Whether `s` is a status the state machine of `write_status` reaches:
/// each bit set only after the one before it.
fn status_reachable(s: u32) -> bool {
    let has = |b| s & b != 0;
    s & !DRIVER_STATUS == 0
        && (!has(status::DRIVER) || has(status::ACKNOWLEDGE))
        && (!has(status::FEATURES_OK) || has(status::DRIVER))
        && (!has(status::DRIVER_OK) || has(status::FEATURES_OK))
}

impl MmioTransport {
    /// The transport's and its device's state. `device` is the device this
    /// transport fronts, locked by the caller, who keeps it locked until
    /// guest memory is saved too (with the vCPUs paused, nothing else moves
    /// the rings then).
    pub fn save_state(&self, device: &dyn VirtioDevice) -> Result<VirtioState, StateError> {
        let (state, positions) = device
            .save_state()
            .ok_or(StateError::Unsupported(self.device_id))?;
        let queues = self
            .queues
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let pos = positions
                    .get(i)
                    .copied()
                    .filter(|_| self.activated)
                    .unwrap_or_default();
                let size_ok =
                    q.size != 0 && q.size.is_power_of_two() && q.size <= u32::from(q.max_size);
                QueueState {
                    size: if size_ok { q.size as u16 } else { 0 },
                    ready: q.ready,
                    desc: q.desc,
                    avail: q.avail,
                    used: q.used,
                    next_avail: pos.next_avail,
                    next_used: pos.next_used,
                }
            })
            .collect();
        Ok(VirtioState {
            transport: TransportState {
                device_type: self.device_id,
                status: self.status,
                activated: self.activated,
                needs_reset: self.interrupt.needs_reset.load(Ordering::SeqCst),
                driver_features: self.driver_features,
                queue_select: self.queue_select,
                device_features_select: self.device_features_select,
                driver_features_select: self.driver_features_select,
                interrupt_status: self.interrupt.status(),
                config_generation: self.interrupt.config_generation.load(Ordering::SeqCst),
                queues,
            },
            device: state,
        })
    }

    /// Puts `s` into this freshly built transport and its device, before
    /// the VM runs. Everything is checked first (device type, queue count,
    /// sizes against each queue's maximum, the status, features against
    /// those offered, and for an active device every queue ready, aligned
    /// and inside guest memory); an error leaves the transport as it was.
    pub fn restore_state(&mut self, s: &VirtioState) -> Result<(), StateError> {
        let t = &s.transport;
        if t.device_type != self.device_id {
            return Err(StateError::DeviceType {
                saved: t.device_type,
                actual: self.device_id,
            });
        }
        if t.queues.len() != self.queues.len() {
            return Err(StateError::QueueCount {
                saved: t.queues.len(),
                actual: self.queues.len(),
            });
        }
        if !status_reachable(t.status) || (t.activated && t.status & status::DRIVER_OK == 0) {
            return Err(StateError::Status(t.status));
        }
        let version_missing =
            t.status & status::FEATURES_OK != 0 && t.driver_features & VIRTIO_F_VERSION_1 == 0;
        if t.driver_features & !self.avail_features != 0 || version_missing {
            return Err(StateError::Features {
                acked: t.driver_features,
                offered: self.avail_features,
            });
        }
        if t.interrupt_status & !(int_status::USED_RING | int_status::CONFIG_CHANGE) != 0 {
            return Err(StateError::InterruptStatus(t.interrupt_status));
        }
        let mut regs = Vec::with_capacity(t.queues.len());
        for (index, (q, cur)) in t.queues.iter().zip(&self.queues).enumerate() {
            if q.size != 0 && (!q.size.is_power_of_two() || q.size > cur.max_size) {
                return Err(StateError::QueueSize {
                    index,
                    size: q.size,
                    max: cur.max_size,
                });
            }
            regs.push(QueueRegs {
                max_size: cur.max_size,
                size: u32::from(q.size),
                ready: q.ready,
                desc: q.desc,
                avail: q.avail,
                used: q.used,
            });
        }
        // The features decide event-idx, which the queues are built with.
        let old_features = self.driver_features;
        self.driver_features = t.driver_features;
        let queues = if t.activated {
            match self.live_queues(&regs, &t.queues) {
                Ok(q) => q,
                Err(e) => {
                    self.driver_features = old_features;
                    return Err(e);
                }
            }
        } else {
            Vec::new()
        };
        {
            let mut dev = self.lock_device();
            if let Err(e) = dev.restore_state(&s.device) {
                drop(dev);
                self.driver_features = old_features;
                return Err(e);
            }
            if t.status & status::FEATURES_OK != 0 {
                dev.ack_features(t.driver_features);
            }
        }
        self.queues = regs;
        self.status = t.status;
        self.queue_select = t.queue_select;
        self.device_features_select = t.device_features_select;
        self.driver_features_select = t.driver_features_select;
        self.interrupt
            .status
            .store(t.interrupt_status, Ordering::SeqCst);
        self.interrupt
            .config_generation
            .store(t.config_generation, Ordering::SeqCst);
        self.interrupt
            .needs_reset
            .store(t.needs_reset, Ordering::SeqCst);
        if t.activated {
            self.start_device(queues)
                .map_err(|e| StateError::Activate(e.to_string()))?;
            self.activated = true;
        }
        Ok(())
    }

    /// The queues of an active device, at their saved ring positions.
    fn live_queues(
        &self,
        regs: &[QueueRegs],
        saved: &[QueueState],
    ) -> Result<Vec<Queue>, StateError> {
        regs.iter()
            .zip(saved)
            .enumerate()
            .map(|(index, (r, q))| {
                let mut queue = self
                    .queue_from(r)
                    .map_err(|what| StateError::Queue { index, what })?;
                queue.set_next_avail(q.next_avail);
                queue.set_next_used(q.next_used);
                Ok(queue)
            })
            .collect()
    }
}
