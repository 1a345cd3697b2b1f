//! The guests `vmm-boot` feeds every VMM, and the one Firecracker-format
//! config it feeds them in. The PVH null guest is generated here byte for
//! byte (the same image tests/guests/probes/null_pvh.S assembles to, so no
//! assembler is needed): it writes 123 to the boot-timer byte, resets through
//! the i8042 (ember-vmm and Firecracker exit 0), and where there is no i8042
//! (QEMU `-M microvm`) leaves through isa-debug-exit (QEMU exits 99).

use std::path::{Path, PathBuf};

/// Where the PVH null guest is loaded (and entered, in 32-bit protected
/// mode, per the Xen note).
const LOAD_ADDR: u64 = 0x10_0000;
/// File offset of the loaded image (page-aligned, congruent with LOAD_ADDR).
const IMAGE_OFF: u64 = 0x1000;

/// The null guest's code (32-bit):
/// `movb $123, 0xc0000000; mov $0xfe, %al; out %al, $0x64; mov $0x31, %al;
/// out %al, $0xf4; 1: hlt; jmp 1b`, padded to 4 bytes.
const CODE: [u8; 20] = [
    0xc6, 0x05, 0x00, 0x00, 0x00, 0xc0, 0x7b, // movb $123, 0xc0000000
    0xb0, 0xfe, 0xe6, 0x64, // i8042 reset
    0xb0, 0x31, 0xe6, 0xf4, // isa-debug-exit 0x31 -> QEMU status 99
    0xf4, 0xeb, 0xfd, // hlt; jmp back
    0x00, 0x00,
];

/// XEN_ELFNOTE_PHYS32_ENTRY: the PVH entry point note.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// The PVH null guest as an ELF64 file: one PT_LOAD (code + note) at 1 MiB
/// and a PT_NOTE over the Xen note.
pub fn pvh_null_elf() -> Vec<u8> {
    let mut note = Vec::new();
    note.extend_from_slice(&4u32.to_le_bytes()); // namesz ("Xen\0")
    note.extend_from_slice(&4u32.to_le_bytes()); // descsz
    note.extend_from_slice(&XEN_ELFNOTE_PHYS32_ENTRY.to_le_bytes());
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&(LOAD_ADDR as u32).to_le_bytes());
    let image_len = (CODE.len() + note.len()) as u64;
    let note_addr = LOAD_ADDR + CODE.len() as u64;
    let mut f = vec![0u8; IMAGE_OFF as usize];
    // ELF header.
    f[0..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // ELFCLASS64
    f[5] = 1; // little endian
    f[6] = 1; // EV_CURRENT
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&LOAD_ADDR.to_le_bytes()); // e_entry
    f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    f[56..58].copy_from_slice(&2u16.to_le_bytes()); // e_phnum
    f[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
    let phdr = |f: &mut Vec<u8>,
                at: usize,
                kind: u32,
                flags: u32,
                off: u64,
                addr: u64,
                len: u64,
                align: u64| {
        f[at..at + 4].copy_from_slice(&kind.to_le_bytes());
        f[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
        f[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
        f[at + 16..at + 24].copy_from_slice(&addr.to_le_bytes());
        f[at + 24..at + 32].copy_from_slice(&addr.to_le_bytes());
        f[at + 32..at + 40].copy_from_slice(&len.to_le_bytes());
        f[at + 40..at + 48].copy_from_slice(&len.to_le_bytes());
        f[at + 48..at + 56].copy_from_slice(&align.to_le_bytes());
    };
    phdr(&mut f, 64, 1, 5, IMAGE_OFF, LOAD_ADDR, image_len, 0x1000); // PT_LOAD, R+X
    let note_off = IMAGE_OFF + CODE.len() as u64;
    phdr(&mut f, 120, 4, 4, note_off, note_addr, note.len() as u64, 4); // PT_NOTE, R
    f.extend_from_slice(&CODE);
    f.extend_from_slice(&note);
    f
}

/// Writes the PVH null guest into `dir`; returns its path.
pub fn write_pvh_null(dir: &Path) -> std::io::Result<PathBuf> {
    let p = dir.join("null-pvh.elf");
    std::fs::write(&p, pvh_null_elf())?;
    Ok(p)
}

/// One Firecracker-format VM config (`--config-file`) for `kernel`: 1 vCPU,
/// 128 MiB, no devices — what every Firecracker-compatible VMM is fed.
pub fn firecracker_config(kernel: &Path) -> serde_json::Value {
    serde_json::json!({
        "boot-source": {
            "kernel_image_path": kernel.display().to_string(),
            "boot_args": "console=ttyS0 reboot=k panic=1"
        },
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
        "drives": []
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvh_null_guest_has_the_assembled_layout() {
        let f = pvh_null_elf();
        // What `as` + `ld -T probe.ld` make of null_pvh.S: LOAD at file
        // 0x1000 -> 0x100000, 0x28 bytes; NOTE at 0x1014 -> 0x100014, 0x14.
        assert_eq!(f.len(), 0x1028);
        let u64_at = |o: usize| u64::from_le_bytes(f[o..o + 8].try_into().unwrap());
        assert_eq!(
            (u64_at(64 + 8), u64_at(64 + 16), u64_at(64 + 32)),
            (0x1000, 0x10_0000, 0x28)
        );
        assert_eq!(
            (u64_at(120 + 8), u64_at(120 + 16), u64_at(120 + 32)),
            (0x1014, 0x10_0014, 0x14)
        );
        assert_eq!(&f[0x1014 + 12..0x1014 + 16], b"Xen\0");
        assert_eq!(&f[0x1024..0x1028], &0x10_0000u32.to_le_bytes());
    }
}
