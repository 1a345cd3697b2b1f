//! The MSRs every vCPU gets before its first run (Firecracker's boot MSR
//! list): syscall/sysenter MSRs cleared, TSC at 0, fast strings enabled and
//! the default memory type write-back with MTRRs enabled.

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::VcpuFd;

use super::LinuxBootError;

pub const MSR_IA32_TSC: u32 = 0x10;
pub const MSR_IA32_SYSENTER_CS: u32 = 0x174;
pub const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
pub const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
pub const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
pub const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
pub const MSR_STAR: u32 = 0xc000_0081;
pub const MSR_LSTAR: u32 = 0xc000_0082;
pub const MSR_CSTAR: u32 = 0xc000_0083;
pub const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
pub const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// MISC_ENABLE: fast-string operations.
pub const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRdefType: MTRRs enabled (bit 11), default type write-back (6).
pub const MTRR_DEF_WRITEBACK: u64 = (1 << 11) | 6;

/// (index, value) pairs written at boot.
pub fn boot_msrs() -> Vec<(u32, u64)> {
    vec![
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_DEF_WRITEBACK),
    ]
}

/// KVM's entries for (index, value) pairs.
pub fn entries(list: &[(u32, u64)]) -> Vec<kvm_msr_entry> {
    list.iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect()
}

/// Writes [`boot_msrs`]; every one must be accepted.
pub fn set_boot_msrs(vcpu: &VcpuFd) -> Result<(), LinuxBootError> {
    let list = boot_msrs();
    let entries = entries(&list);
    let msrs = Msrs::from_entries(&entries).map_err(|_| LinuxBootError::MsrsTooMany)?;
    let written = vcpu.set_msrs(&msrs).map_err(LinuxBootError::Msrs)?;
    if written != list.len() {
        // KVM stops at the first MSR it refuses: name it.
        let refused = list.get(written).map_or(0, |m| m.0);
        return Err(LinuxBootError::MsrRefused(refused));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_has_the_boot_set() {
        let l = boot_msrs();
        assert_eq!(l.len(), 11);
        assert!(l.contains(&(MSR_MTRR_DEF_TYPE, 0x806)));
        assert!(l.contains(&(MSR_IA32_MISC_ENABLE, 1)));
        let mut idx: Vec<u32> = l.iter().map(|m| m.0).collect();
        idx.sort();
        idx.dedup();
        assert_eq!(idx.len(), l.len(), "no MSR twice");
    }
}
