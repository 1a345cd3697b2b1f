//! The interrupt wiring of a [`super::Vm`]: the in-kernel irqchip and PIT
//! Linux guests need, and irqfd lines for the legacy devices.

use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use super::VmError;

/// COM1's interrupt line.
const SERIAL_IRQ: u32 = 4;
/// KVM's TSS for real-mode emulation on VMX hosts: three pages just below the
/// LAPIC/IOAPIC area, inside the MMIO gap.
const KVM_TSS_ADDR: usize = 0xfffb_d000;

/// The in-kernel interrupt controllers (PIC, IOAPIC, LAPICs) and PIT that
/// Linux guests need.
pub(super) fn create_irqchip(vm: &VmFd) -> Result<(), VmError> {
    // Only VMX needs it, and only for real-mode emulation: failure elsewhere is fine.
    let _ = vm.set_tss_address(KVM_TSS_ADDR);
    vm.create_irq_chip()
        .map_err(|e| VmError::KvmCall("create the in-kernel irqchip", e))?;
    let pit = kvm_bindings::kvm_pit_config {
        flags: kvm_bindings::KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit)
        .map_err(|e| VmError::KvmCall("create the in-kernel PIT", e))
}

pub(super) fn serial_irq(vm: &VmFd, irqchip: bool) -> Result<Option<EventFd>, VmError> {
    irq_line(vm, irqchip, SERIAL_IRQ, "register serial irqfd")
}

/// An eventfd registered as the irqfd of `gsi` (None without an irqchip).
pub(super) fn irq_line(
    vm: &VmFd,
    irqchip: bool,
    gsi: u32,
    what: &'static str,
) -> Result<Option<EventFd>, VmError> {
    if !irqchip {
        return Ok(None);
    }
    let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| VmError::Io("eventfd", e))?;
    vm.register_irqfd(&evt, gsi)
        .map_err(|e| VmError::KvmCall(what, e))?;
    Ok(Some(evt))
}
