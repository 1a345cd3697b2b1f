//! The kernel-less wasm agent (`ember-wasm-agent`) snapshotted after Init
//! and restored in new `ember-vmm` processes, all through the API socket
//! (what SnapStart needs): [`boot`] starts the agent with a vsock device and
//! Inits it, [`take`] pauses it and writes a Full snapshot, [`restore`]
//! loads that snapshot in a fresh VMM whose vsock listens on its own
//! `uds_path` (`vsock_override`) and waits for the restored agent to
//! connect again. Used by tests/tests/snapshot_agent.rs and the
//! `bench_snapshot` vsock case.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ember_host::env::{AgentConn, InitSpec, InvokeRequest};

use crate::fc_api::ApiVmm;
use crate::linux_guest::accept_agent;

/// The guest CID every agent VM here uses.
pub const CID: u64 = 3;
/// vCPUs of an agent VM (vCPU 1 is the agent's epoch timer, as emberd runs it).
const VCPUS: u32 = 2;

/// A running agent VM and the host end of its agent connection.
pub struct AgentVm {
    pub vmm: ApiVmm,
    pub conn: AgentConn<UnixStream>,
    /// From spawning `ember-vmm` to the agent's `Ready`.
    pub ready_after: Duration,
}

/// A snapshot's files (in the directory of the VMMs' API sockets, which
/// their Landlock sandbox leaves writable).
pub struct AgentSnapshot {
    pub dir: PathBuf,
    pub state: PathBuf,
    pub mem: PathBuf,
}

/// A host listener for the agent of the VM whose vsock `uds_path` is `uds`.
fn agent_listener(uds: &Path) -> UnixListener {
    let path = format!("{}_{}", uds.display(), ember_abi::protocol::AGENT_PORT);
    let _ = std::fs::remove_file(&path);
    UnixListener::bind(&path).expect("bind the agent listener")
}

/// Boots `elf` (the wasm agent) with `mem_mib` of memory and a vsock device
/// through the API in `dir` (files named after `tag`); returns once the
/// agent said `Ready`.
pub fn boot(dir: &Path, tag: &str, elf: &Path, mem_mib: u32) -> AgentVm {
    let uds = dir.join(format!("{tag}.vsock"));
    let listener = agent_listener(&uds);
    let t = Instant::now();
    let vmm = ApiVmm::spawn(
        &dir.join(format!("{tag}.api")),
        &dir.join(format!("{tag}.log")),
    );
    let body = serde_json::json!({ "kernel_image_path": elf }).to_string();
    vmm.ok("PUT", "/boot-source", &body);
    let body = serde_json::json!({ "vcpu_count": VCPUS, "mem_size_mib": mem_mib }).to_string();
    vmm.ok("PUT", "/machine-config", &body);
    let body = serde_json::json!({ "guest_cid": CID, "uds_path": uds }).to_string();
    vmm.ok("PUT", "/vsock", &body);
    vmm.ok("PUT", "/actions", r#"{"action_type":"InstanceStart"}"#);
    let conn = accept_agent(&listener, "the booted agent");
    AgentVm {
        vmm,
        conn,
        ready_after: t.elapsed(),
    }
}

/// Pauses `vm` and writes a Full snapshot of it into `dir`.
pub fn take(vm: &AgentVm, dir: &Path, tag: &str) -> AgentSnapshot {
    let snap = AgentSnapshot {
        dir: dir.to_path_buf(),
        state: dir.join(format!("{tag}.state")),
        mem: dir.join(format!("{tag}.mem")),
    };
    vm.vmm.ok("PATCH", "/vm", r#"{"state":"Paused"}"#);
    let body = serde_json::json!({
        "snapshot_type": "Full",
        "snapshot_path": snap.state,
        "mem_file_path": snap.mem,
    })
    .to_string();
    vm.vmm.ok("PUT", "/snapshot/create", &body);
    snap
}

impl AgentSnapshot {
    /// The `PUT /snapshot/load` body for a clone listening on `uds`.
    pub fn load_body(&self, uds: &Path) -> String {
        serde_json::json!({
            "snapshot_path": self.state,
            "mem_backend": { "backend_type": "File", "backend_path": self.mem },
            "resume_vm": true,
            "vsock_override": { "uds_path": uds },
        })
        .to_string()
    }
}

/// Loads `snap` in a new `ember-vmm` (its vsock at `<dir>/<tag>.vsock`) and
/// waits for the restored agent to connect again and say `Ready`.
pub fn restore(snap: &AgentSnapshot, tag: &str) -> AgentVm {
    let uds = snap.dir.join(format!("{tag}.vsock"));
    let listener = agent_listener(&uds);
    let t = Instant::now();
    let vmm = ApiVmm::spawn(
        &snap.dir.join(format!("{tag}.api")),
        &snap.dir.join(format!("{tag}.log")),
    );
    vmm.ok("PUT", "/snapshot/load", &snap.load_body(&uds));
    let conn = accept_agent(&listener, "the restored agent");
    AgentVm {
        vmm,
        conn,
        ready_after: t.elapsed(),
    }
}

/// The value of timing `name` in the agent's `Ready`.
pub fn ready_timing(conn: &AgentConn<UnixStream>, name: &str) -> Option<u64> {
    conn.ready()
        .timings
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
}

/// Runs one invocation and returns the function's response.
pub fn invoke(conn: &mut AgentConn<UnixStream>, req: &InvokeRequest) -> Vec<u8> {
    let reply = conn
        .invoke(req, Duration::from_secs(20))
        .expect("the invocation");
    reply.result.expect("the function's response")
}

/// Sends `Init` and expects `InitDone`.
pub fn init(conn: &mut AgentConn<UnixStream>, spec: &InitSpec) {
    conn.init(spec, Duration::from_secs(30)).expect("Init");
}
