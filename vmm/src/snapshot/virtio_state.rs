//! The virtio device records of the state file: per device, the config
//! section it was built from, the devices crate's state version, the
//! virtio-mmio transport (registers, per-queue state) and the device's own
//! state (`ember_devices::virtio::state`). Decoding checks only shape and
//! bounds; what the values mean is checked against the rebuilt device and
//! guest memory by `MmioTransport::restore_state` at load.

use ember_devices::virtio::state::{
    DeviceState, EntropyState, QueueState, TransportState, VirtioState, VsockState, STATE_VERSION,
};

use super::codec::{Reader, Writer};
use super::state::{invalid, StateError};
pub use crate::device_manager::SavedVirtio;

/// Most virtio devices in one VM (the MMIO windows' interrupt lines 5..=23).
pub const MAX_VIRTIO_DEVICES: usize = 19;
/// Most queues of one device (vsock has 3; net 2, block 1).
const MAX_QUEUES: usize = 8;
/// Longest config section name.
const MAX_SECTION: usize = 64;
/// Device-state kinds.
const KIND_VSOCK: u8 = 1;
const KIND_ENTROPY: u8 = 2;

/// Appends `devices` (count, then each record).
pub fn encode(w: &mut Writer, devices: &[SavedVirtio]) {
    w.u32(devices.len() as u32);
    for d in devices {
        w.bytes(d.section.as_bytes());
        w.u16(STATE_VERSION);
        let t = &d.state.transport;
        w.u32(t.device_type);
        w.u32(t.status);
        w.bool(t.activated);
        w.bool(t.needs_reset);
        w.u64(t.driver_features);
        w.u32(t.queue_select);
        w.u32(t.device_features_select);
        w.u32(t.driver_features_select);
        w.u32(t.interrupt_status);
        w.u32(t.config_generation);
        w.u32(t.queues.len() as u32);
        for q in &t.queues {
            w.u16(q.size);
            w.bool(q.ready);
            w.u64(q.desc);
            w.u64(q.avail);
            w.u64(q.used);
            w.u16(q.next_avail);
            w.u16(q.next_used);
        }
        match &d.state.device {
            DeviceState::Vsock(v) => {
                w.u8(KIND_VSOCK);
                w.u64(v.guest_cid);
                w.u64(v.acked_features);
            }
            DeviceState::Entropy(e) => {
                w.u8(KIND_ENTROPY);
                w.u64(e.acked_features);
            }
        }
    }
}

/// Reads the records [`encode`] wrote.
pub fn decode(r: &mut Reader) -> Result<Vec<SavedVirtio>, StateError> {
    let n = r.count("virtio device count", MAX_VIRTIO_DEVICES)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let section = std::str::from_utf8(r.bytes("virtio device section", MAX_SECTION)?)
            .map_err(|_| invalid("virtio device section", "not UTF-8"))?
            .to_string();
        let version = r.u16("virtio state version")?;
        if version != STATE_VERSION {
            return Err(invalid(
                "virtio state version",
                format!("{version} (this ember-vmm reads {STATE_VERSION})"),
            ));
        }
        let mut t = TransportState {
            device_type: r.u32("virtio device type")?,
            status: r.u32("virtio status")?,
            activated: r.bool("virtio activated")?,
            needs_reset: r.bool("virtio needs reset")?,
            driver_features: r.u64("virtio driver features")?,
            queue_select: r.u32("virtio queue select")?,
            device_features_select: r.u32("virtio device features select")?,
            driver_features_select: r.u32("virtio driver features select")?,
            interrupt_status: r.u32("virtio interrupt status")?,
            config_generation: r.u32("virtio config generation")?,
            queues: Vec::new(),
        };
        let queues = r.count("virtio queue count", MAX_QUEUES)?;
        for _ in 0..queues {
            t.queues.push(QueueState {
                size: r.u16("queue size")?,
                ready: r.bool("queue ready")?,
                desc: r.u64("queue descriptor table")?,
                avail: r.u64("queue available ring")?,
                used: r.u64("queue used ring")?,
                next_avail: r.u16("queue next avail")?,
                next_used: r.u16("queue next used")?,
            });
        }
        let device = match r.u8("virtio device kind")? {
            KIND_VSOCK => DeviceState::Vsock(VsockState {
                guest_cid: r.u64("vsock guest CID")?,
                acked_features: r.u64("vsock acked features")?,
            }),
            KIND_ENTROPY => DeviceState::Entropy(EntropyState {
                acked_features: r.u64("entropy acked features")?,
            }),
            k => return Err(invalid("virtio device kind", format!("unknown kind {k}"))),
        };
        out.push(SavedVirtio {
            section,
            state: VirtioState {
                transport: t,
                device,
            },
        });
    }
    Ok(out)
}
