//! Snapshots of a kernel-less VM: [`create`] writes a paused [`Vm`] to a
//! state file (`state.rs`: vCPUs, devices, layout; versioned, checksummed,
//! validated on load) and a sparse memory file (`memory_file.rs`);
//! [`load`] builds a new `Vm` from them in this process, its memory mapped
//! private and lazily from the memory file, its start-info renewed
//! (generation + 1, a fresh seed, the wall clock) so clones differ.
//! DESIGN.md "Snapshots" has the formats and the clone contract.

pub(crate) mod codec;
pub mod memory_file;
pub mod state;
pub mod uffd;
pub(crate) mod vcpu_state;
pub mod virtio_state;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ember_abi::guest::{self, MmioDevice, StartInfo};
use ember_devices::legacy::serial::{SerialState, SerialStateError};
use ember_devices::virtio::device_type;
use ember_devices::virtio::state::StateError as DeviceStateError;
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::boot::cpl3;
use crate::boot::kernelless::{self, KernellessError, STACK_SIZE, START_INFO_ADDR};
use crate::config::{ConfigError, ConsoleConfig, VmConfig};
use crate::phases::Phases;
use crate::vm::{Origin, Vm, VmError};
use memory_file::MemoryFileError;
use state::{GuestKind, SerialRegs, StateError, VmState, MAX_STATE_FILE};
pub(crate) use vcpu_state::{SaveError, VcpuState};
use virtio_state::SavedVirtio;

/// How long a paused vCPU may take to hand over its registers.
const SAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a snapshot could not be created or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshots of {0} are not supported yet")]
    Unsupported(&'static str),
    #[error("a diff snapshot needs a VM built or loaded with track_dirty_pages")]
    DiffWithoutDirtyTracking,
    #[error("{0} is the memory file this VM runs from: a full snapshot must go to another file")]
    MemoryFileInUse(PathBuf),
    #[error("cannot {what} {path}")]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Memory(#[from] MemoryFileError),
    #[error(transparent)]
    Uffd(#[from] uffd::UffdError),
    #[error("snapshot config")]
    Config(#[from] ConfigError),
    #[error("cannot save a virtio device")]
    Device(#[source] DeviceStateError),
    #[error("the vsock override needs the snapshot to have a vsock device")]
    NoVsockToOverride,
    #[error(transparent)]
    Vm(#[from] VmError),
}

/// Why a validated snapshot could not be put into a new VM.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Serial(#[from] SerialStateError),
    #[error("{0} vCPUs configured, {1} saved")]
    VcpuCount(u8, usize),
    #[error("cannot restore vCPU {0}")]
    Vcpu(u8, #[source] SaveError),
    #[error("the start-info page in the memory file {0}")]
    StartInfo(&'static str),
    #[error(transparent)]
    Kernelless(#[from] KernellessError),
}

/// What `Vm::build_from` takes from a snapshot.
pub(crate) struct Restore {
    pub memory: GuestMemoryMmap,
    pub vcpus: Vec<VcpuState>,
    pub serial: SerialState,
    /// The virtio devices' states, put into the rebuilt devices.
    pub virtio: Vec<SavedVirtio>,
    /// The load's marks so far (`Vm::build_from` goes on with them).
    pub phases: Phases,
}

/// What [`create`] wrote.
#[derive(Debug, Clone, Copy)]
pub struct CreateReport {
    pub state_bytes: u64,
    /// Bytes of guest memory stored (the rest of the memory file is holes).
    pub memory_data_bytes: u64,
    pub elapsed: Duration,
}

/// Full or diff (Firecracker's `snapshot_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotType {
    /// All of guest memory (sparse).
    Full,
    /// Only the pages written since the last snapshot (or load), written
    /// over that snapshot's memory file.
    Diff,
}

/// Writes a full snapshot of `vm`, which must be paused ([`Vm::pause`]),
/// to `state_path` and `mem_path` (both created or truncated, mode 0600).
pub fn create(vm: &Vm, state_path: &Path, mem_path: &Path) -> Result<CreateReport, SnapshotError> {
    create_typed(vm, state_path, mem_path, SnapshotType::Full)
}

/// [`create`], full or diff. A diff needs `track_dirty_pages` and goes over
/// the memory file of this VM's last snapshot (or the one it was loaded
/// from: copy that first if it must stay); the state file is always whole.
pub fn create_typed(
    vm: &Vm,
    state_path: &Path,
    mem_path: &Path,
    kind: SnapshotType,
) -> Result<CreateReport, SnapshotError> {
    let t = Instant::now();
    if kind == SnapshotType::Diff && !vm.config.track_dirty_pages {
        return Err(SnapshotError::DiffWithoutDirtyTracking);
    }
    // A diff over that file is fine: it writes only pages the guest (or the
    // VMM) wrote, which the private mapping holds as its own copies.
    if kind == SnapshotType::Full && memory_file::backs(vm.memory(), mem_path) {
        return Err(SnapshotError::MemoryFileInUse(mem_path.to_path_buf()));
    }
    if !vm.kernelless {
        return Err(SnapshotError::Unsupported("Linux guests"));
    }
    let vcpus = vm.save_vcpus(SAVE_TIMEOUT)?;
    // Quiesce the devices: hold every transport and device lock until guest
    // memory is written. The event loop blocks at its next device event, so
    // no ring moves between the saved state and the saved memory (the
    // vCPUs are paused: nothing else touches a transport).
    let held: Vec<_> = vm
        .virtio_slots()
        .iter()
        .map(|slot| {
            let t = slot.transport.lock().unwrap_or_else(|e| e.into_inner());
            let d = slot.device.lock().unwrap_or_else(|e| e.into_inner());
            (slot.section, t, d)
        })
        .collect();
    let mut virtio = Vec::with_capacity(held.len());
    for (section, t, d) in &held {
        let state = t.save_state(&**d).map_err(|e| match e {
            DeviceStateError::Unsupported(device_type::BLOCK) => {
                SnapshotError::Unsupported("VMs with virtio-block devices")
            }
            DeviceStateError::Unsupported(device_type::NET) => {
                SnapshotError::Unsupported("VMs with virtio-net devices")
            }
            other => SnapshotError::Device(other),
        })?;
        virtio.push(SavedVirtio {
            section: section.to_string(),
            state,
        });
    }
    let state = VmState {
        kind: GuestKind::Kernelless,
        mem_size: vm.config.mem_mib << 20,
        smt: vm.config.smt,
        regions: memory_file::layout(vm.memory()),
        vcpus,
        serial: serial_regs(&vm.serial_state()),
        device_config: serde_json::to_string(&vm.config.devices)
            .unwrap_or_else(|_| "{}".to_string()),
        virtio,
    };
    let bytes = state.to_bytes();
    // Never write a snapshot this VMM would refuse to load.
    VmState::from_bytes(&bytes)?;
    // The dirty log restarts at every snapshot: a later diff holds what
    // the guest wrote after this one.
    let dirty = if vm.config.track_dirty_pages {
        vm.dirty_log()?
    } else {
        Vec::new()
    };
    let written = match kind {
        SnapshotType::Full => memory_file::write(vm.memory(), &create_file(mem_path)?)?,
        SnapshotType::Diff => {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(mem_path)
                .map_err(|source| SnapshotError::File {
                    what: "open the memory file",
                    path: mem_path.to_path_buf(),
                    source,
                })?;
            // The pages the VMM itself wrote at load (tables, start-info)
            // are not in KVM's log.
            let vmm_pages = cpl3::GDT_ADDR..START_INFO_ADDR + 0x1000;
            memory_file::write_diff(vm.memory(), &file, &dirty, vmm_pages)?
        }
    };
    // Memory is written: the event loop may move the rings again.
    drop(held);
    let mut state_file = create_file(state_path)?;
    state_file
        .write_all(&bytes)
        .map_err(|source| SnapshotError::File {
            what: "write the state file",
            path: state_path.to_path_buf(),
            source,
        })?;
    Ok(CreateReport {
        state_bytes: bytes.len() as u64,
        memory_data_bytes: written.data_bytes,
        elapsed: t.elapsed(),
    })
}

fn create_file(path: &Path) -> Result<File, SnapshotError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| SnapshotError::File {
            what: "create",
            path: path.to_path_buf(),
            source,
        })
}

/// Where a loaded guest's memory comes from (Firecracker's
/// `mem_backend.backend_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemBackend {
    /// `mem_path` is the memory file, mapped private and lazily.
    File,
    /// `mem_path` is the Unix socket of a page-fault handler that gets a
    /// userfaultfd for the guest's memory (`uffd.rs`).
    Uffd,
}

/// What [`load`] needs besides the two files: where the console goes and
/// how long the restored guest may run.
#[derive(Debug, Clone)]
pub struct LoadParams {
    pub state_path: PathBuf,
    /// The memory file, or the handler's socket (`backend`).
    pub mem_path: PathBuf,
    pub backend: MemBackend,
    pub console: ConsoleConfig,
    pub timeout_ms: Option<u64>,
    /// Log the pages the guest writes, for diff snapshots of the loaded VM
    /// (Firecracker's `enable_diff_snapshots` / `track_dirty_pages`).
    pub track_dirty_pages: bool,
    /// Where the restored vsock device listens instead of the snapshot's
    /// `uds_path` (Firecracker's `vsock_override`): clones of one snapshot
    /// each need their own.
    pub vsock_uds_override: Option<PathBuf>,
}

/// Reads and validates a snapshot and builds a VM from it (not started:
/// [`Vm::start`] resumes the guest where it was paused). Its memory is the
/// memory file mapped private and lazily (`mem_backend` File).
pub fn load(params: &LoadParams, start: Instant) -> Result<Vm, SnapshotError> {
    let mut phases = Phases::new(start);
    let bytes = read_state_file(&params.state_path)?;
    phases.mark("state_read");
    let state = VmState::from_bytes(&bytes)?;
    phases.mark("state_parse");
    let memory = match params.backend {
        MemBackend::File => {
            let mem_file = open_regular(&params.mem_path, "open the memory file")?;
            memory_file::map_private(&mem_file, &state.regions)?
        }
        MemBackend::Uffd => uffd::map(&params.mem_path, state.mem_size >> 20, &state.regions)?,
    };
    phases.mark("memory_map");
    let mut devices: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&state.device_config).unwrap_or_default();
    if let Some(uds) = &params.vsock_uds_override {
        let section = devices
            .get_mut(crate::device_manager::vsock::NAME)
            .and_then(|v| v.as_object_mut())
            .ok_or(SnapshotError::NoVsockToOverride)?;
        section.insert("uds_path".into(), uds.to_string_lossy().into_owned().into());
    }
    let cfg = VmConfig {
        // Never opened: the guest image is in the memory file.
        kernel: params.state_path.clone(),
        vcpus: state.vcpus.len() as u64,
        mem_mib: state.mem_size >> 20,
        smt: state.smt,
        console: params.console.clone(),
        force_kernelless: true,
        devices,
        timeout_ms: params.timeout_ms,
        track_dirty_pages: params.track_dirty_pages,
        ..VmConfig::default()
    };
    let valid = cfg.validate()?;
    let restore = Restore {
        memory,
        vcpus: state.vcpus,
        serial: serial_state(&state.serial),
        virtio: state.virtio,
        phases,
    };
    Ok(Vm::build_from(&valid, start, Origin::Snapshot(restore))?)
}

/// Opens a snapshot file for reading; it must be a regular file (a FIFO or
/// a device there would block or stream forever). O_NONBLOCK keeps the open
/// itself from waiting on a FIFO's writer.
fn open_regular(path: &Path, what: &'static str) -> Result<File, SnapshotError> {
    let err = |source| SnapshotError::File {
        what,
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(err)?;
    if !file.metadata().map_err(err)?.is_file() {
        return Err(err(std::io::Error::other("not a regular file")));
    }
    Ok(file)
}

fn read_state_file(path: &Path) -> Result<Vec<u8>, SnapshotError> {
    let err = |source| SnapshotError::File {
        what: "read the state file",
        path: path.to_path_buf(),
        source,
    };
    let file = open_regular(path, "read the state file")?;
    let mut bytes = Vec::new();
    file.take(MAX_STATE_FILE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(err)?;
    Ok(bytes)
}

/// At load, before any vCPU runs: checks the start-info page of the memory
/// file against the config, rewrites the VMM's own structures (page
/// tables, GDT, TSS: never taken from the file), and renews what must
/// differ between clones: generation + 1, a fresh random seed, the wall
/// clock paired with the restored TSC (`vcpu0`'s, set before this).
pub(crate) fn renew_start_info(
    mem: &GuestMemoryMmap,
    vcpu0: &VcpuFd,
    cfg: &VmConfig,
    devices: &[MmioDevice],
) -> Result<(), RestoreError> {
    let mut page = vec![0u8; std::mem::size_of::<StartInfo>()];
    mem.read_slice(&mut page, GuestAddress(START_INFO_ADDR))
        .map_err(|_| RestoreError::StartInfo("cannot be read"))?;
    let mut info = StartInfo::from_bytes(&page).ok_or(RestoreError::StartInfo("is short"))?;
    let mem_size = cfg.mem_mib << 20;
    let heap_end = mem_size.saturating_sub(cfg.vcpus * STACK_SIZE) & !0xfff;
    if info.magic != guest::START_INFO_MAGIC || info.version != guest::START_INFO_VERSION {
        return Err(RestoreError::StartInfo("has a bad magic or version"));
    }
    if info.mem_size != mem_size || info.vcpu_count as u64 != cfg.vcpus {
        return Err(RestoreError::StartInfo(
            "describes another memory size or vCPU count",
        ));
    }
    if info.heap_end != heap_end || info.heap_start > heap_end || info.stack_size != STACK_SIZE {
        return Err(RestoreError::StartInfo("describes another memory layout"));
    }
    if info.device_count as usize != devices.len()
        || info.devices.get(..devices.len()) != Some(devices)
    {
        return Err(RestoreError::StartInfo(
            "lists other devices than the VM has",
        ));
    }
    kernelless::write_tables(mem, mem_size)?;
    info.generation = info.generation.saturating_add(1);
    kernelless::getrandom(&mut info.random_seed)?;
    info.tsc_khz = vcpu0.get_tsc_khz().map(u64::from).unwrap_or(0);
    info.wallclock_tsc = kernelless::guest_tsc(vcpu0).unwrap_or(0);
    info.wallclock_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    mem.write_slice(info.as_bytes(), GuestAddress(START_INFO_ADDR))
        .map_err(|_| RestoreError::StartInfo("cannot be written"))
}

fn serial_regs(s: &SerialState) -> SerialRegs {
    SerialRegs {
        regs: [
            s.baud_divisor_low,
            s.baud_divisor_high,
            s.interrupt_enable,
            s.interrupt_identification,
            s.line_control,
            s.line_status,
            s.modem_control,
            s.modem_status,
            s.scratch,
        ],
        fifo: s.in_buffer.clone(),
    }
}

fn serial_state(s: &SerialRegs) -> SerialState {
    let [dll, dlh, ier, iir, lcr, lsr, mcr, msr, scr] = s.regs;
    SerialState {
        baud_divisor_low: dll,
        baud_divisor_high: dlh,
        interrupt_enable: ier,
        interrupt_identification: iir,
        line_control: lcr,
        line_status: lsr,
        modem_control: mcr,
        modem_status: msr,
        scratch: scr,
        in_buffer: s.fifo.clone(),
    }
}

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod uffd_tests;
