//! Snapshots of the vsock device behind virtio-mmio, in process: a guest
//! with a live connection is saved (`MmioTransport::save_state`) and
//! restored into a new device over a copy of its memory: the rings go on
//! where they were, the driver gets VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, no
//! connection survives, new ones work. Hostile states are refused with a
//! typed error and leave the new device inactive.

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use vm_memory::{Bytes, GuestAddress};

use super::device::EVENT_TRANSPORT_RESET;
use super::test_guest::{guest_hdr, tmp_uds, TestGuest, EVENT_BUFS, MEM_SIZE, QSIZE};
use super::{op, Hdr};
use crate::virtio::state::{DeviceState, StateError, VirtioState};

const CID: u64 = 7;

fn tmp_path(name: &str) -> PathBuf {
    tmp_uds(&format!("snap-{name}"))
}

fn pkt(src_port: u32, dst_port: u32, op: u16, len: u32) -> Hdr {
    guest_hdr(CID, src_port, dst_port, op, len)
}

/// A guest connected to the host's port 9000 that exchanged a few packets,
/// with event buffers posted, and its saved state.
fn snapshotted(tag: &str) -> (TestGuest, VirtioState, PathBuf) {
    let uds = tmp_path(tag);
    let listener = UnixListener::bind(format!("{}_9000", uds.display())).unwrap();
    let mut g = TestGuest::new(CID, &uds);
    g.post_event_buffers(2);
    g.send(&pkt(49152, 9000, op::REQUEST, 0), &[]);
    assert_eq!(g.recv()[0].0.op, op::RESPONSE);
    let (mut s, _) = listener.accept().unwrap();
    g.send(&pkt(49152, 9000, op::RW, 5), b"ready");
    let mut b = [0u8; 5];
    s.read_exact(&mut b).unwrap();
    let dev = g.dev.clone();
    let state = g.transport.save_state(&*dev.lock().unwrap()).unwrap();
    assert!(state.transport.activated);
    // RX buffers posted and one used, TX at 2 packets.
    assert_eq!(state.transport.queues[1].next_avail, 2);
    assert_eq!(state.transport.queues[1].next_used, 2);
    assert_eq!(state.transport.queues[0].next_used, 1);
    assert_eq!(
        state.device,
        DeviceState::Vsock(crate::virtio::state::VsockState {
            guest_cid: CID,
            acked_features: crate::virtio::VIRTIO_F_VERSION_1,
        })
    );
    (g, state, uds)
}

#[test]
fn a_restored_device_resumes_its_rings_and_posts_a_transport_reset() {
    let (g, state, _uds) = snapshotted("resume");
    let uds2 = tmp_path("resume2");
    let listener = UnixListener::bind(format!("{}_9000", uds2.display())).unwrap();
    let mut r = g.restored(&uds2, &state).unwrap();
    assert!(r.transport.is_activated());
    // The event: one used entry in the first event buffer, id 0, 4 bytes.
    assert_eq!(r.take_used(2), vec![(0, 4)]);
    let mut ev = [0u8; 8];
    r.mem.read_slice(&mut ev, GuestAddress(EVENT_BUFS)).unwrap();
    assert_eq!(ev[..4], EVENT_TRANSPORT_RESET.to_le_bytes());
    assert_eq!(ev[4..], [0xff; 4], "only the event was written");
    // No connection survived: a packet on the old one is answered by RST.
    r.send(&pkt(49152, 9000, op::RW, 3), b"old");
    let pkts = r.recv();
    assert_eq!((pkts[0].0.op, pkts[0].0.dst_port), (op::RST, 49152));
    // The TX ring went on from where it was (its used index continues).
    let used_tx: u16 = r
        .mem
        .read_obj(GuestAddress(0x1000 + 0x2000 + 0x1000 + 2))
        .unwrap();
    assert_eq!(used_tx, 3);
    // A new connection to the (new) host listener works.
    r.send(&pkt(49153, 9000, op::REQUEST, 0), &[]);
    assert_eq!(r.recv()[0].0.op, op::RESPONSE);
    let (mut s, _) = listener.accept().unwrap();
    r.send(&pkt(49153, 9000, op::RW, 5), b"again");
    let mut b = [0u8; 5];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"again");
    // The source guest was not disturbed: no event there.
    let mut g = g;
    assert!(g.take_used(2).is_empty());
}

#[test]
fn the_reset_event_waits_for_an_event_buffer() {
    let uds = tmp_path("noevbuf");
    let mut g = TestGuest::new(CID, &uds);
    let dev = g.dev.clone();
    let state = g.transport.save_state(&*dev.lock().unwrap()).unwrap();
    let mut r = g.restored(&tmp_path("noevbuf2"), &state).unwrap();
    assert!(r.take_used(2).is_empty());
    r.post_event_buffers(1);
    assert_eq!(r.take_used(2), vec![(0, 4)]);
    // Sent once only: a buffer posted later stays unused.
    r.post_event_buffers(1);
    assert!(r.take_used(2).is_empty());
    // The source guest never got one.
    g.post_event_buffers(1);
    assert!(g.take_used(2).is_empty());
}

/// Each hostile change to a valid state, and the error it must give.
#[test]
fn hostile_device_states_are_refused_with_typed_errors() {
    let (g, good, _uds) = snapshotted("hostile");
    type Edit = fn(&mut VirtioState);
    type Want = fn(&StateError) -> bool;
    let cases: Vec<(&str, Edit, Want)> = vec![
        (
            "size > max",
            |s| s.transport.queues[0].size = QSIZE * 8,
            |e| matches!(e, StateError::QueueSize { index: 0, .. }),
        ),
        (
            "size not a power of two",
            |s| s.transport.queues[1].size = 3,
            |e| matches!(e, StateError::QueueSize { index: 1, .. }),
        ),
        (
            "size 0 on an active device",
            |s| s.transport.queues[2].size = 0,
            |e| matches!(e, StateError::Queue { index: 2, .. }),
        ),
        (
            "descriptor table outside memory",
            |s| s.transport.queues[0].desc = MEM_SIZE - 16,
            |e| matches!(e, StateError::Queue { index: 0, what } if what.contains("outside")),
        ),
        (
            "used ring far outside memory",
            |s| s.transport.queues[1].used = u64::MAX - 3,
            |e| matches!(e, StateError::Queue { index: 1, .. }),
        ),
        (
            "misaligned descriptor table",
            |s| s.transport.queues[0].desc += 8,
            |e| matches!(e, StateError::Queue { index: 0, what } if what.contains("misaligned")),
        ),
        (
            "active queue not ready",
            |s| s.transport.queues[2].ready = false,
            |e| matches!(e, StateError::Queue { index: 2, .. }),
        ),
        (
            "DRIVER_OK without FEATURES_OK",
            |s| s.transport.status = 1 | 2 | 4,
            |e| matches!(e, StateError::Status(_)),
        ),
        (
            "active without DRIVER_OK",
            |s| s.transport.status = 1 | 2 | 8,
            |e| matches!(e, StateError::Status(_)),
        ),
        (
            "unknown status bit",
            |s| s.transport.status |= 0x10,
            |e| matches!(e, StateError::Status(_)),
        ),
        (
            "features never offered",
            |s| s.transport.driver_features |= 1 << 40,
            |e| matches!(e, StateError::Features { .. }),
        ),
        (
            "device acked features never offered",
            |s| {
                if let DeviceState::Vsock(v) = &mut s.device {
                    v.acked_features |= 1;
                }
            },
            |e| matches!(e, StateError::Features { .. }),
        ),
        (
            "another guest CID",
            |s| {
                if let DeviceState::Vsock(v) = &mut s.device {
                    v.guest_cid = 99;
                }
            },
            |e| matches!(e, StateError::Cid { saved: 99, .. }),
        ),
        (
            "another device type",
            |s| s.transport.device_type = 2,
            |e| matches!(e, StateError::DeviceType { saved: 2, .. }),
        ),
        (
            "a queue too many",
            |s| s.transport.queues.push(Default::default()),
            |e| matches!(e, StateError::QueueCount { saved: 4, .. }),
        ),
        (
            "unknown interrupt status bits",
            |s| s.transport.interrupt_status = 0x80,
            |e| matches!(e, StateError::InterruptStatus(0x80)),
        ),
    ];
    for (i, (what, edit, want)) in cases.into_iter().enumerate() {
        let mut s = good.clone();
        edit(&mut s);
        match g.restored(&tmp_path(&format!("hostile{i}")), &s) {
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => assert!(want(&e), "{what}: wrong error {e:?}"),
        }
    }
    // The good state still restores.
    assert!(g.restored(&tmp_path("hostile-good"), &good).is_ok());
}
