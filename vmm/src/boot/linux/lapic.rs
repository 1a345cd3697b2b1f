//! Local APIC LVT setup: LINT0 in ExtINT mode (the 8259 PIC's output) and
//! LINT1 in NMI mode, as a PC BIOS leaves them and as the MP table says.

use kvm_bindings::kvm_lapic_state;
use kvm_ioctls::VcpuFd;

use super::LinuxBootError;

/// LVT LINT0 register offset.
pub const APIC_LVT0: usize = 0x350;
/// LVT LINT1 register offset.
pub const APIC_LVT1: usize = 0x360;
/// Delivery modes (bits 8..10 of an LVT entry).
pub const APIC_MODE_NMI: u32 = 0x4;
pub const APIC_MODE_EXTINT: u32 = 0x7;

fn get_reg(state: &kvm_lapic_state, off: usize) -> u32 {
    let b = &state.regs[off..off + 4];
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

fn set_reg(state: &mut kvm_lapic_state, off: usize, value: u32) {
    for (dst, src) in state.regs[off..off + 4].iter_mut().zip(value.to_le_bytes()) {
        *dst = src as _;
    }
}

/// Sets the delivery mode of LVT register `off`, keeping its other bits.
fn set_mode(state: &mut kvm_lapic_state, off: usize, mode: u32) {
    let v = get_reg(state, off);
    set_reg(state, off, (v & !0x700) | (mode << 8));
}

/// Applies LINT0 = ExtINT, LINT1 = NMI to a register image (pure, tested).
pub fn apply(state: &mut kvm_lapic_state) {
    set_mode(state, APIC_LVT0, APIC_MODE_EXTINT);
    set_mode(state, APIC_LVT1, APIC_MODE_NMI);
}

/// Reads, updates and writes back the vCPU's in-kernel local APIC (needs the
/// in-kernel irqchip).
pub fn set_lint(vcpu: &VcpuFd) -> Result<(), LinuxBootError> {
    let mut state = vcpu.get_lapic().map_err(LinuxBootError::Lapic)?;
    apply(&mut state);
    vcpu.set_lapic(&state).map_err(LinuxBootError::Lapic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lint_modes_keep_other_bits() {
        let mut s = kvm_lapic_state::default();
        set_reg(&mut s, APIC_LVT0, 0x0001_0700 | 0x20); // masked, some vector, mode bits set
        set_reg(&mut s, APIC_LVT1, 0x0001_0000);
        apply(&mut s);
        assert_eq!(get_reg(&s, APIC_LVT0), 0x0001_0720);
        assert_eq!(get_reg(&s, APIC_LVT1), 0x0001_0400);
    }
}
