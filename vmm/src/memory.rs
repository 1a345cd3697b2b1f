//! Guest memory: the guest-physical RAM layout around the 32-bit MMIO gap, its
//! anonymous (lazily faulted, MAP_NORESERVE) host mapping, and its registration
//! with KVM.
//!
//! ```text
//! [0, min(size, 3 GiB))            RAM
//! [0xC000_0000, 4 GiB)             MMIO gap: boot timer at 0xC000_0000,
//!                                  virtio-mmio windows from 0xD000_0000,
//!                                  IOAPIC/LAPIC at 0xFEC0_0000/0xFEE0_0000
//! [4 GiB, 4 GiB + size - 3 GiB)    the rest of RAM, if any
//! ```

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Start of the 32-bit MMIO gap (where RAM stops below 4 GiB).
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO gap.
pub const MMIO_GAP_END: u64 = 1 << 32;
/// Smallest guest memory ember accepts, in MiB (each boot path checks that its
/// own image and structures fit).
pub const MIN_MEM_MIB: u64 = 2;
/// Largest guest memory ember accepts, in MiB.
pub const MAX_MEM_MIB: u64 = 256 * 1024;

/// Errors from setting up guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot map {mib} MiB of guest memory")]
    Map {
        mib: u64,
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    #[error("cannot register guest memory with KVM")]
    Register(#[source] kvm_ioctls::Error),
}

/// The RAM ranges for `size` bytes of guest memory.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, usize)> {
    let low = size.min(MMIO_GAP_START);
    let mut ranges = vec![(GuestAddress(0), low as usize)];
    if size > low {
        ranges.push((GuestAddress(MMIO_GAP_END), (size - low) as usize));
    }
    ranges
}

/// Maps `mib` MiB of guest memory (anonymous, private, not reserved: pages are
/// only backed when first touched).
pub fn create(mib: u64) -> Result<GuestMemoryMmap, MemoryError> {
    GuestMemoryMmap::from_ranges(&ram_ranges(mib << 20))
        .map_err(|source| MemoryError::Map { mib, source })
}

/// Registers every region of `mem` with the VM, one KVM slot each (slot i
/// = region i); `log_dirty`: KVM logs the pages the guest writes.
pub fn register(vm: &VmFd, mem: &GuestMemoryMmap, log_dirty: bool) -> Result<(), MemoryError> {
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|_| MemoryError::Register(kvm_ioctls::Error::new(libc::EFAULT)))?;
        let desc = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: if log_dirty {
                kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES
            } else {
                0
            },
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the host range belongs to `mem`, which the VM keeps alive
        // for as long as the VM fd exists (both live until the process exits),
        // and slots do not overlap (one per distinct region).
        unsafe { vm.set_user_memory_region(desc) }.map_err(MemoryError::Register)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_skips_the_mmio_gap() {
        assert_eq!(ram_ranges(128 << 20), vec![(GuestAddress(0), 128 << 20)]);
        assert_eq!(
            ram_ranges(4 << 30),
            vec![
                (GuestAddress(0), MMIO_GAP_START as usize),
                (GuestAddress(MMIO_GAP_END), 1 << 30)
            ]
        );
        assert_eq!(
            ram_ranges(MMIO_GAP_START),
            vec![(GuestAddress(0), MMIO_GAP_START as usize)]
        );
    }

    #[test]
    fn creates_lazily_mapped_memory() {
        let mem = create(64).unwrap();
        assert_eq!(mem.iter().map(|r| r.len()).sum::<u64>(), 64 << 20);
    }
}
