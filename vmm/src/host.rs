//! What kind of KVM this host has: hardware-assisted (VMX/SVM) or PVM
//! (software virtualization, `kvm_pvm`), and what that means for Linux guests.

use std::path::Path;

/// The host's KVM flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKvm {
    /// Intel VMX or AMD SVM.
    Hardware,
    /// PVM: guest CPL3 code runs natively, guest CPL0 code is emulated.
    Pvm,
    /// Neither module is visible (e.g. KVM built in): assume hardware.
    Unknown,
}

/// Detects the flavour from the loaded kernel modules.
pub fn detect() -> HostKvm {
    detect_in(Path::new("/sys/module"))
}

fn detect_in(modules: &Path) -> HostKvm {
    if modules.join("kvm_pvm").exists() {
        HostKvm::Pvm
    } else if modules.join("kvm_intel").exists() || modules.join("kvm_amd").exists() {
        HostKvm::Hardware
    } else {
        HostKvm::Unknown
    }
}

impl HostKvm {
    /// A short description for the log.
    pub fn describe(self) -> &'static str {
        match self {
            HostKvm::Hardware => "hardware-assisted KVM (VMX/SVM)",
            HostKvm::Pvm => "PVM (kvm_pvm, software virtualization: guest CPL0 code is emulated)",
            HostKvm::Unknown => "KVM of unknown flavour (assuming hardware-assisted)",
        }
    }
}

/// What to tell a user who boots a Linux kernel on a PVM host.
pub const PVM_LINUX_WARNING: &str =
    "this host's KVM is PVM: a Linux guest needs a kernel built with \
CONFIG_PVM_GUEST, because PVM runs guest kernel (CPL0) code through KVM's instruction emulator, \
which lacks xsave/xrstor, int3, popcnt, clac and fwait, so a stock kernel stops with \
KVM_EXIT_INTERNAL_ERROR early in boot; trying anyway";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_from_module_dirs() {
        let dir = std::env::temp_dir().join(format!("ember-host-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("kvm_intel")).unwrap();
        assert_eq!(detect_in(&dir), HostKvm::Hardware);
        std::fs::create_dir_all(dir.join("kvm_pvm")).unwrap();
        assert_eq!(detect_in(&dir), HostKvm::Pvm);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(detect_in(&dir), HostKvm::Unknown);
    }
}
