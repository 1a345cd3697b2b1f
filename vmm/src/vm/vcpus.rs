//! The vCPUs of a [`super::Vm`]: their fds with CPUID and entry state (boot
//! or snapshot), their threads with per-vCPU ABI ports, waiting for the
//! first exit, and stopping them within a grace period.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ember_devices::bus::Bus;
use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

use super::{Guest, VmError};
use crate::abi_ports::{AbiPorts, Doorbell, ABI_PORT_BASE, ABI_PORT_LEN};
use crate::boot::linux;
use crate::exit::{ExitNotifier, VmExit};
use crate::log_warn;
use crate::snapshot::RestoreError;
use crate::vcpu::{Vcpu, VcpuEvent, VcpuHandle};

/// How long stopping vCPUs may take before the process exits anyway.
pub(super) const STOP_GRACE: Duration = Duration::from_millis(200);

/// One vCPU fd per index, with its CPUID and entry state.
pub(super) fn create_vcpus(
    kvm: &Kvm,
    vm: &VmFd,
    guest: &Guest,
    count: u8,
) -> Result<Vec<VcpuFd>, VmError> {
    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| VmError::KvmCall("get CPUID", e))?;
    let mut fds = Vec::with_capacity(count as usize);
    for index in 0..count {
        let fd = vm
            .create_vcpu(index as u64)
            .map_err(|e| VmError::KvmCall("create vCPU", e))?;
        match guest {
            Guest::Snapshot(states) => {
                set_kernelless_cpuid(&supported, &fd, index, count)?;
                let state = states
                    .get(index as usize)
                    .ok_or(RestoreError::VcpuCount(count, states.len()))?;
                state
                    .restore(&fd)
                    .map_err(|e| RestoreError::Vcpu(index, e))?;
            }
            Guest::Kernelless(image) => {
                let cpuid = set_kernelless_cpuid(&supported, &fd, index, count)?;
                image.configure_vcpu(&cpuid, &fd, index)?;
            }
            Guest::Linux(entry) => linux::configure_vcpu(kvm, &fd, index, count, entry)?,
        }
        fds.push(fd);
    }
    Ok(fds)
}

/// Gives a kernel-less guest's vCPU the host's CPUID, normalized for its
/// index (the same at boot and at snapshot load).
fn set_kernelless_cpuid(
    supported: &CpuId,
    fd: &VcpuFd,
    index: u8,
    count: u8,
) -> Result<CpuId, VmError> {
    let entries = crate::boot::kernelless::cpuid(supported.as_slice(), index, count);
    let cpuid = CpuId::from_entries(&entries)
        .map_err(|_| VmError::Io("CPUID", std::io::Error::other("too many entries")))?;
    fd.set_cpuid2(&cpuid)
        .map_err(|e| VmError::KvmCall("set CPUID", e))?;
    Ok(cpuid)
}

pub(super) fn start_vcpus(
    fds: Vec<VcpuFd>,
    pio: &Bus,
    mmio: &Bus,
    exits: &ExitNotifier,
    doorbell: &Doorbell,
    paused: bool,
) -> Result<Vec<VcpuHandle>, VmError> {
    let mut handles = Vec::with_capacity(fds.len());
    for (index, fd) in fds.into_iter().enumerate() {
        // Each vCPU gets its own ABI ports, so one blocked in wait/park does
        // not hold a lock another vCPU needs.
        let mut own_pio = pio.clone();
        let kick = Doorbell::new().map_err(|e| VmError::Io("eventfd", e))?;
        let ports = AbiPorts::new(exits.clone(), doorbell.clone(), kick.clone());
        own_pio.insert(ABI_PORT_BASE, ABI_PORT_LEN, Arc::new(Mutex::new(ports)))?;
        let vcpu = Vcpu {
            index: index as u8,
            fd,
            pio: own_pio,
            mmio: mmio.clone(),
            exits: exits.clone(),
            kick,
        };
        match vcpu.start(paused) {
            Ok(h) => handles.push(h),
            Err(e) => {
                stop_vcpus(&handles);
                return Err(VmError::Io("cannot start a vCPU thread", e));
            }
        }
    }
    Ok(handles)
}

pub(super) fn wait_for_exit(
    exits: &ExitNotifier,
    rx: &std::sync::mpsc::Receiver<VmExit>,
    timeout_ms: Option<u64>,
) -> VmExit {
    if let Some(ms) = timeout_ms {
        if let Ok(exit) = rx.recv_timeout(Duration::from_millis(ms)) {
            return exit;
        }
        exits.notify(VmExit::Timeout(ms));
    }
    // The notifier in `exits` keeps the channel open, so recv cannot fail.
    rx.recv()
        .unwrap_or_else(|_| VmExit::Error("exit channel closed".into()))
}

pub(super) fn stop_vcpus(handles: &[VcpuHandle]) {
    for h in handles {
        h.send(VcpuEvent::Stop);
    }
    let deadline = Instant::now() + STOP_GRACE;
    for h in handles {
        let left = deadline.saturating_duration_since(Instant::now());
        if h.response(left).is_none() {
            log_warn!("vCPU {} did not stop within {:?}", h.index, STOP_GRACE);
        }
    }
}
