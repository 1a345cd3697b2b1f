//! Loading the kernel image with linux-loader: an ELF `vmlinux` (64-bit entry
//! at `e_entry`, PVH entry when the `XEN_ELFNOTE_PHYS32_ENTRY` note is there)
//! or a `bzImage` (64-bit entry at the protected-mode code + 0x200, per
//! Documentation/arch/x86/boot.rst "64-bit Boot Protocol").

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{self, BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::layout::HIMEM_START;
use super::LinuxBootError;

/// "HdrS" at offset 0x202 of a bzImage.
const BZIMAGE_MAGIC: u32 = 0x5372_6448;
/// xloadflags bit: the kernel has the 64-bit entry at +0x200.
pub const XLF_KERNEL_64: u16 = 1 << 0;
/// Offset of startup_64 from the start of the protected-mode code.
pub const BZIMAGE_ENTRY64_OFFSET: u64 = 0x200;

/// What kind of image was loaded and where it starts.
#[derive(Clone, Copy, Debug)]
pub enum KernelKind {
    /// ELF vmlinux; `pvh_entry` is the 32-bit PVH entry if the note is present.
    Elf {
        entry64: u64,
        pvh_entry: Option<u64>,
    },
    /// bzImage with its setup header (to be copied into the zero page).
    BzImage { entry64: u64, header: setup_header },
}

/// The loaded kernel.
#[derive(Clone, Copy, Debug)]
pub struct LoadedKernel {
    pub kind: KernelKind,
    /// First guest-physical byte of the kernel.
    pub start: u64,
    /// End (exclusive) of what the kernel occupies, including room it needs to
    /// decompress/initialize (bzImage `init_size`).
    pub end: u64,
}

/// Loads `path` into `mem`, choosing the format from the file's magic.
pub fn load(
    mem: &GuestMemoryMmap,
    path: &Path,
    ram_end: u64,
) -> Result<LoadedKernel, LinuxBootError> {
    let open_err = |e| LinuxBootError::KernelOpen(path.to_path_buf(), e);
    let mut file = File::open(path).map_err(open_err)?;
    let mut magic = [0u8; 4];
    let is_elf = file.read_exact(&mut magic).is_ok() && magic == *b"\x7fELF";
    let mut hdrs = [0u8; 4];
    let is_bzimage = !is_elf
        && file.seek(SeekFrom::Start(0x202)).is_ok()
        && file.read_exact(&mut hdrs).is_ok()
        && u32::from_le_bytes(hdrs) == BZIMAGE_MAGIC;

    let himem = Some(GuestAddress(HIMEM_START));
    if is_elf {
        let r = Elf::load(mem, None, &mut file, himem).map_err(map_loader_err)?;
        let pvh_entry = match r.pvh_boot_cap {
            PvhBootCapability::PvhEntryPresent(a) => Some(a.0),
            _ => None,
        };
        if r.kernel_end > ram_end {
            return Err(LinuxBootError::KernelTooBig {
                end: r.kernel_end,
                ram_end,
            });
        }
        let start = r.kernel_load.0;
        Ok(LoadedKernel {
            kind: KernelKind::Elf {
                entry64: start,
                pvh_entry,
            },
            start,
            end: r.kernel_end,
        })
    } else if is_bzimage {
        let r = BzImage::load(mem, None, &mut file, himem).map_err(map_loader_err)?;
        let header = r.setup_header.ok_or(LinuxBootError::KernelFormat)?;
        if header.xloadflags & XLF_KERNEL_64 == 0 {
            return Err(LinuxBootError::BzImageNot64Bit);
        }
        let start = r.kernel_load.0;
        let end = start
            .saturating_add(u64::from(header.init_size))
            .max(r.kernel_end);
        if end > ram_end {
            return Err(LinuxBootError::KernelTooBig { end, ram_end });
        }
        Ok(LoadedKernel {
            kind: KernelKind::BzImage {
                entry64: start + BZIMAGE_ENTRY64_OFFSET,
                header,
            },
            start,
            end,
        })
    } else {
        Err(LinuxBootError::KernelFormat)
    }
}

/// linux-loader errors, sorted into "does not fit in memory" and "bad image".
fn map_loader_err(e: loader::Error) -> LinuxBootError {
    use linux_loader::loader::bzimage::Error as BzErr;
    use linux_loader::loader::elf::Error as ElfErr;
    match e {
        loader::Error::Elf(ElfErr::ReadKernelImage)
        | loader::Error::Bzimage(BzErr::ReadBzImageCompressedKernel)
        | loader::Error::MemoryOverflow => LinuxBootError::KernelDoesNotFit(e),
        other => LinuxBootError::KernelLoad(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::linux::boot_test::{temp_file, tiny_elf};

    fn mem(size: usize) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap()
    }

    #[test]
    fn elf_with_and_without_pvh_note() {
        let m = mem(8 << 20);
        let p = temp_file("plain", &tiny_elf(0x200000, &[0xf4; 32], None));
        let k = load(&m, &p, 8 << 20).unwrap();
        assert!(matches!(
            k.kind,
            KernelKind::Elf {
                entry64: 0x200000,
                pvh_entry: None
            }
        ));
        assert_eq!((k.start, k.end), (0x200000, 0x200020));

        let p = temp_file("pvh", &tiny_elf(0x200000, &[0xf4; 32], Some(0x200010)));
        let k = load(&m, &p, 8 << 20).unwrap();
        assert!(matches!(
            k.kind,
            KernelKind::Elf {
                pvh_entry: Some(0x200010),
                ..
            }
        ));
    }

    #[test]
    fn bad_images_are_typed_errors() {
        let m = mem(8 << 20);
        let p = temp_file("garbage", b"this is not a kernel at all, not even close");
        assert!(matches!(
            load(&m, &p, 8 << 20),
            Err(LinuxBootError::KernelFormat)
        ));
        let p = temp_file("empty", b"");
        assert!(matches!(
            load(&m, &p, 8 << 20),
            Err(LinuxBootError::KernelFormat)
        ));
        let mut elf = tiny_elf(0x200000, &[0xf4; 32], None);
        elf.truncate(80);
        let p = temp_file("trunc", &elf);
        assert!(matches!(
            load(&m, &p, 8 << 20),
            Err(LinuxBootError::KernelLoad(_))
        ));
        // Entry below 1 MiB would overlap the boot structures.
        let p = temp_file("low", &tiny_elf(0x8000, &[0xf4; 32], None));
        assert!(matches!(
            load(&m, &p, 8 << 20),
            Err(LinuxBootError::KernelLoad(_))
        ));
        // Segment outside guest memory.
        let p = temp_file("high", &tiny_elf(0x4000_0000, &[0xf4; 32], None));
        assert!(matches!(
            load(&m, &p, 8 << 20),
            Err(LinuxBootError::KernelDoesNotFit(_))
        ));
        let missing = std::path::Path::new("/nonexistent/ember/vmlinux");
        assert!(matches!(
            load(&m, missing, 8 << 20),
            Err(LinuxBootError::KernelOpen(..))
        ));
    }

    #[test]
    fn bzimage_header_and_entry() {
        // A synthetic bzImage: 1 setup sector + boot sector, then the payload.
        let mut img = vec![0u8; 2 * 512 + 4096];
        img[0x1f1] = 1; // setup_sects
        img[0x202..0x206].copy_from_slice(&BZIMAGE_MAGIC.to_le_bytes());
        img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes()); // version 2.15
        img[0x211] = 1; // loadflags: LOADED_HIGH
        img[0x214..0x218].copy_from_slice(&0x100000u32.to_le_bytes()); // code32_start
        img[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
        img[0x236..0x238].copy_from_slice(&XLF_KERNEL_64.to_le_bytes());
        img[0x238..0x23c].copy_from_slice(&4095u32.to_le_bytes()); // cmdline_size
        img[0x260..0x264].copy_from_slice(&0x40_0000u32.to_le_bytes()); // init_size
        let m = mem(16 << 20);
        let p = temp_file("bz", &img);
        let k = load(&m, &p, 16 << 20).unwrap();
        match k.kind {
            KernelKind::BzImage { entry64, header } => {
                assert_eq!(entry64, 0x100200);
                assert_eq!({ header.cmdline_size }, 4095);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!((k.start, k.end), (0x100000, 0x500000));
        // init_size beyond memory: too small.
        let m4 = mem(4 << 20);
        assert!(matches!(
            load(&m4, &p, 4 << 20),
            Err(LinuxBootError::KernelTooBig { .. })
        ));
        // A 32-bit-only bzImage cannot take the 64-bit entry.
        img[0x236] = 0;
        let p = temp_file("bz32", &img);
        assert!(matches!(
            load(&m, &p, 16 << 20),
            Err(LinuxBootError::BzImageNot64Bit)
        ));
    }
}
