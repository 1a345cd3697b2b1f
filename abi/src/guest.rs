//! The kernel-less guest ABI: how `ember-vmm` starts a freestanding ELF at CPL3
//! and what the guest may ask of it. `ember-vmm` writes these structures; the
//! guest reads them. Everything is little-endian, `repr(C)`, and versioned.
//! DESIGN.md ("Kernel-less guest ABI") is the prose version of this file.
//!
//! Entry state: 64-bit mode, CPL3, identity-mapped memory (user pages),
//! RFLAGS.IOPL=3 (port I/O exits to the VMM), interrupts off, SSE (and AVX where
//! the host has it) enabled, `rdi` = guest-physical address of [`StartInfo`],
//! `rsi` = vCPU index, `rsp` = top of that vCPU's stack minus 8 (as after a call).

/// Port: write a 32-bit (or 8-bit) exit code; the VM stops and `ember-vmm`
/// exits with that code (masked to 0..=255). Same port as QEMU's isa-debug-exit.
pub const PORT_EXIT: u16 = 0xf4;
/// Port: write a 32-bit timeout in microseconds (0 = no timeout). The vCPU
/// sleeps until a device raises its interrupt (or the timeout passes), then the
/// `out` returns. A device interrupt raised before the wait is not lost.
pub const PORT_WAIT: u16 = 0xf5;
/// Port: any write parks this vCPU until the VM stops (for secondary vCPUs).
pub const PORT_PARK: u16 = 0xf6;
/// Port: write a 32-bit duration in microseconds (0 = return at once); the
/// vCPU sleeps that long, or until the VM stops. Unlike `PORT_WAIT` it ignores
/// device interrupts and never consumes them, so a secondary vCPU can tick (the
/// wasm agent's epoch timer) without stealing the primary's wake-ups.
pub const PORT_SLEEP: u16 = 0xf7;
/// Port: the first 8250 UART; guest bytes written here go to the console.
pub const PORT_SERIAL: u16 = 0x3f8;

/// `StartInfo::magic`: "EMBERSI1".
pub const START_INFO_MAGIC: u64 = u64::from_le_bytes(*b"EMBERSI1");
/// Current `StartInfo::version`.
pub const START_INFO_VERSION: u32 = 2;
/// Most MMIO devices announced in one start-info page.
pub const MAX_DEVICES: usize = 16;
/// Most bytes of arguments (the command line) in the start-info page.
pub const MAX_ARGS: usize = 2048;

/// virtio device ids as announced in [`MmioDevice::device_id`] (virtio 1.x §5).
pub mod device_id {
    pub const NET: u32 = 1;
    pub const BLOCK: u32 = 2;
    pub const RNG: u32 = 4;
    pub const VSOCK: u32 = 19;
}

/// One virtio-mmio window.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmioDevice {
    /// Guest-physical base of the 4 KiB register window.
    pub base: u64,
    /// Window length in bytes.
    pub len: u64,
    /// The device's interrupt line (meaningful to Linux; kernel-less guests use
    /// PORT_WAIT and the InterruptStatus register).
    pub irq: u32,
    /// virtio device id (see [`device_id`]).
    pub device_id: u32,
}

/// The page `ember-vmm` hands the guest in `rdi`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StartInfo {
    /// [`START_INFO_MAGIC`].
    pub magic: u64,
    /// [`START_INFO_VERSION`].
    pub version: u32,
    /// Number of vCPUs started (each enters the ELF entry with its index in rsi).
    pub vcpu_count: u32,
    /// Guest memory size in bytes; memory is `[0, mem_size)`, identity-mapped.
    pub mem_size: u64,
    /// First free byte after the ELF image and the VMM's own structures.
    pub heap_start: u64,
    /// End (exclusive) of the free area; the stacks live above it.
    pub heap_end: u64,
    /// Size of each vCPU's stack (vCPU i's stack top is `heap_end + (i+1)*stack_size`).
    pub stack_size: u64,
    /// TSC frequency in kHz (0 if the host could not tell).
    pub tsc_khz: u64,
    /// Host wall-clock time (ns since the Unix epoch) when the guest was entered.
    pub wallclock_ns: u64,
    /// The guest's TSC value at that same moment.
    pub wallclock_tsc: u64,
    /// 32 random bytes from the host, fresh for every VM.
    pub random_seed: [u8; 32],
    /// Number of valid entries in `devices`.
    pub device_count: u32,
    /// Length of the valid prefix of `args`.
    pub args_len: u32,
    /// The MMIO devices, in the order they were configured.
    pub devices: [MmioDevice; MAX_DEVICES],
    /// The command line given to `ember-vmm` (`--cmdline`/`boot_args`), UTF-8.
    pub args: [u8; MAX_ARGS],
    /// 0 at boot. Each time a snapshot is loaded, before any vCPU runs again,
    /// the VMM sets it to the snapshot's value + 1 and writes a fresh
    /// `random_seed` and a new `wallclock_ns`/`wallclock_tsc` pair. Clones
    /// of one snapshot share everything the guest derived before it: a guest
    /// that hands out randomness or unique ids reads this field (volatile)
    /// and, when it changed, reseeds from `random_seed` first (DESIGN.md,
    /// "Snapshots": the clone-distinctness contract).
    pub generation: u64,
}

impl StartInfo {
    /// A start-info page with no devices and no arguments.
    pub const fn empty() -> Self {
        StartInfo {
            magic: START_INFO_MAGIC,
            version: START_INFO_VERSION,
            vcpu_count: 1,
            mem_size: 0,
            heap_start: 0,
            heap_end: 0,
            stack_size: 0,
            tsc_khz: 0,
            wallclock_ns: 0,
            wallclock_tsc: 0,
            random_seed: [0; 32],
            device_count: 0,
            args_len: 0,
            devices: [MmioDevice {
                base: 0,
                len: 0,
                irq: 0,
                device_id: 0,
            }; MAX_DEVICES],
            args: [0; MAX_ARGS],
            generation: 0,
        }
    }

    /// The valid devices.
    pub fn devices(&self) -> &[MmioDevice] {
        let n = (self.device_count as usize).min(MAX_DEVICES);
        &self.devices[..n]
    }

    /// The arguments, or "" if they are not valid UTF-8.
    pub fn args(&self) -> &str {
        let n = (self.args_len as usize).min(MAX_ARGS);
        core::str::from_utf8(&self.args[..n]).unwrap_or("")
    }

    /// A start-info read back from its bytes (the VMM reads the page of a
    /// snapshot's memory); `None` if `bytes` is too short. The caller checks
    /// magic, version and every field it uses.
    pub fn from_bytes(bytes: &[u8]) -> Option<StartInfo> {
        if bytes.len() < core::mem::size_of::<StartInfo>() {
            return None;
        }
        // SAFETY: `bytes` holds at least size_of::<StartInfo>() bytes;
        // StartInfo is repr(C) of integers and byte arrays only, so every bit
        // pattern is a value; read_unaligned has no alignment requirement.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<StartInfo>()) })
    }

    /// The bytes of this structure, as written into guest memory.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: StartInfo is repr(C), made only of integers and byte arrays,
        // with no padding holes that could leak uninitialised memory (fields
        // are laid out to be naturally aligned; see the size test below).
        unsafe {
            core::slice::from_raw_parts(
                (self as *const StartInfo).cast::<u8>(),
                core::mem::size_of::<StartInfo>(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_info_fits_a_page_and_has_no_padding() {
        let size = core::mem::size_of::<StartInfo>();
        let fields = 8 + 4 + 4 + 8 * 7 + 32 + 4 + 4 + 24 * MAX_DEVICES + MAX_ARGS + 8;
        assert_eq!(size, fields);
        assert!(size <= 4096);
        assert_eq!(core::mem::size_of::<MmioDevice>(), 24);
    }
}
