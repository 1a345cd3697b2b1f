//! Snapshots of the real wasm agent (`ember-wasm-agent`, kernel-less) with
//! its vsock device, through the API socket: booted, Init'ed and invoked,
//! paused and snapshotted; loaded in new `ember-vmm` processes, each
//! restored agent connects to the host again (the device sent
//! VIRTIO_VSOCK_EVENT_TRANSPORT_RESET), says it is restored and
//! initialised, and serves invocations without a second Init. Two clones of
//! one snapshot serve side by side while the source VM, resumed, keeps its
//! own connection. Hostile device state in the state file (queue size over
//! the maximum, rings outside guest memory, misaligned rings) is refused
//! with the typed error and the VMM serves on.

mod agent_common;

use std::path::PathBuf;

use ember_tests::agent_snapshot::{self, AgentSnapshot, AgentVm};
use ember_tests::fc_api::ApiVmm;
use ember_tests::vmm::scratch;
use ember_vmm::snapshot::state::VmState;

const FN_MIB: u32 = 16;

/// A fresh directory (removed at drop) for one test's sockets and files.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = scratch(tag);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The agent booted with the echo module, Init'ed, invoked once, then
/// snapshotted (the source VM stays paused).
fn initialized_snapshot(dir: &Dir) -> (AgentVm, AgentSnapshot) {
    let mem = ember_host::env::vm_memory_mib(FN_MIB);
    let mut vm = agent_snapshot::boot(&dir.0, "source", &agent_common::agent_elf(), mem);
    assert_eq!(agent_snapshot::ready_timing(&vm.conn, "initialized"), None);
    agent_snapshot::init(
        &mut vm.conn,
        &agent_common::spec(agent_common::echo(), FN_MIB, 10_000),
    );
    let req = agent_common::request("before", b"before the snapshot", 10_000);
    assert_eq!(
        agent_snapshot::invoke(&mut vm.conn, &req),
        b"before the snapshot"
    );
    let snap = agent_snapshot::take(&vm, &dir.0, "snap");
    (vm, snap)
}

/// A restored agent is initialised, says so, and answers.
fn check_restored(clone: &mut AgentVm, tag: &str) {
    assert_eq!(
        agent_snapshot::ready_timing(&clone.conn, "initialized"),
        Some(1),
        "{tag}: {:?}",
        clone.conn.ready()
    );
    assert_eq!(
        agent_snapshot::ready_timing(&clone.conn, "restored_generation"),
        Some(1)
    );
    for i in 0..2 {
        let payload = format!("{tag} invocation {i}");
        let req = agent_common::request(&format!("{tag}-{i}"), payload.as_bytes(), 10_000);
        assert_eq!(
            agent_snapshot::invoke(&mut clone.conn, &req),
            payload.as_bytes(),
            "{tag}"
        );
    }
}

#[test]
fn a_restored_agent_reconnects_and_serves_without_a_second_init() {
    let dir = Dir::new("snap-agent");
    let (source, snap) = initialized_snapshot(&dir);
    drop(source);
    let mut clone = agent_snapshot::restore(&snap, "clone");
    check_restored(&mut clone, "clone");
}

#[test]
fn two_clones_of_one_snapshot_each_serve_and_the_source_keeps_its_connection() {
    let dir = Dir::new("snap-clones");
    let (mut source, snap) = initialized_snapshot(&dir);
    let mut a = agent_snapshot::restore(&snap, "clone-a");
    let mut b = agent_snapshot::restore(&snap, "clone-b");
    check_restored(&mut a, "clone-a");
    check_restored(&mut b, "clone-b");
    check_restored(&mut a, "clone-a again");
    // The reset is sent at load, not at create: the source, resumed, still
    // talks on the connection it had.
    source.vmm.ok("PATCH", "/vm", r#"{"state":"Resumed"}"#);
    let req = agent_common::request("source-after", b"source after", 10_000);
    assert_eq!(
        agent_snapshot::invoke(&mut source.conn, &req),
        b"source after"
    );
}

#[test]
fn hostile_device_state_in_the_state_file_is_refused_with_the_typed_error() {
    let dir = Dir::new("snap-hostile");
    let (source, snap) = initialized_snapshot(&dir);
    drop(source);
    let good = std::fs::read(&snap.state).unwrap();
    let state = VmState::from_bytes(&good).unwrap();
    assert_eq!(state.virtio.len(), 1);
    assert!(state.virtio[0].state.transport.activated);
    let mem_size = state.mem_size;
    type Edit = fn(&mut VmState, u64);
    let cases: [(&str, Edit, &str); 4] = [
        (
            "size over the maximum",
            |s, _| s.virtio[0].state.transport.queues[0].size = 1024,
            "queue 0: size 1024 is not a power of two up to the maximum 256",
        ),
        (
            "descriptor table outside memory",
            |s, mem| s.virtio[0].state.transport.queues[1].desc = mem - 16,
            "queue 1: rings outside guest memory",
        ),
        (
            "used ring at the top of the address space",
            |s, _| s.virtio[0].state.transport.queues[2].used = !3,
            "queue 2: rings outside guest memory",
        ),
        (
            "misaligned available ring",
            |s, _| s.virtio[0].state.transport.queues[0].avail |= 1,
            "queue 0: misaligned ring",
        ),
    ];
    for (i, (what, edit, want)) in cases.into_iter().enumerate() {
        let mut s = state.clone();
        edit(&mut s, mem_size);
        std::fs::write(&snap.state, s.to_bytes()).unwrap();
        let tag = format!("hostile{i}");
        let vmm = ApiVmm::spawn(
            &dir.0.join(format!("{tag}.api")),
            &dir.0.join(format!("{tag}.log")),
        );
        let uds = dir.0.join(format!("{tag}.vsock"));
        let (status, body) = vmm.call("PUT", "/snapshot/load", &snap.load_body(&uds));
        assert_eq!(status, 400, "{what}: {body}");
        assert!(body.contains(want), "{what}: {body}");
        assert!(
            body.contains("cannot restore the saved device state"),
            "{body}"
        );
        // The VMM serves on.
        let (status, _) = vmm.call("GET", "/", "");
        assert_eq!(status, 200, "{what}");
    }
    // The untouched file still loads.
    std::fs::write(&snap.state, &good).unwrap();
    let mut clone = agent_snapshot::restore(&snap, "good");
    check_restored(&mut clone, "good");
}
