//! The memory file: guest RAM as the guest left it, its regions one after
//! another (the layout the state file records), with holes where the guest
//! never wrote a page. Written from a paused VM (only the pages the process
//! has resident, or that the file it was restored from holds, and only those
//! that are not all zeros); mapped back private and lazily at load, so a
//! restored guest's resident memory is what it touches, and clones of one
//! snapshot share the file's page cache.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    Address, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap,
};

const PAGE: usize = 4096;
/// Most pages written with one pwrite.
const RUN_MAX: usize = 256;

/// One RAM region and where it lies in the memory file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub guest_addr: u64,
    pub len: u64,
    pub file_offset: u64,
}

/// Why the memory file could not be written or mapped.
#[derive(Debug, thiserror::Error)]
pub enum MemoryFileError {
    #[error("cannot write the memory file")]
    Write(#[source] std::io::Error),
    #[error("cannot read guest memory at {0:#x}")]
    Read(u64),
    #[error("mincore on guest memory")]
    Mincore(#[source] std::io::Error),
    #[error("memory file is {actual} bytes, the state file describes {expected}")]
    Size { actual: u64, expected: u64 },
    #[error("cannot map the memory file")]
    Map(#[source] std::io::Error),
    #[error("bad memory layout: {0}")]
    Layout(String),
}

/// What a memory file write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Bytes of data written (the rest of the file is holes).
    pub data_bytes: u64,
}

/// Whether `path` is the file some region of `mem` is mapped from (a VM
/// loaded from a snapshot): truncating it would pull the pages the guest
/// has not touched out from under the mapping (SIGBUS, lost memory).
pub fn backs(mem: &GuestMemoryMmap, path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(target) = std::fs::metadata(path) else {
        return false;
    };
    mem.iter().any(|r| {
        r.file_offset()
            .and_then(|fo| fo.file().metadata().ok())
            .is_some_and(|m| (m.dev(), m.ino()) == (target.dev(), target.ino()))
    })
}

/// The regions of `mem`, laid out back to back.
pub fn layout(mem: &GuestMemoryMmap) -> Vec<Region> {
    let mut offset = 0;
    mem.iter()
        .map(|r| {
            let region = Region {
                guest_addr: r.start_addr().raw_value(),
                len: r.len(),
                file_offset: offset,
            };
            offset += r.len();
            region
        })
        .collect()
}

/// Writes `mem` into `file` (truncated first), sparse. The VM must be
/// paused and have no device that writes guest memory (`create` checks
/// both): the pages are read in place, without a copy.
pub fn write(mem: &GuestMemoryMmap, file: &File) -> Result<Written, MemoryFileError> {
    let total: u64 = layout(mem).iter().map(|r| r.len).sum();
    file.set_len(0).map_err(MemoryFileError::Write)?;
    file.set_len(total).map_err(MemoryFileError::Write)?;
    let wanted = mem
        .iter()
        .map(|region| pages_to_save(mem, region))
        .collect::<Result<Vec<_>, _>>()?;
    write_pages(mem, file, &wanted, true)
}

/// Writes the pages of `mem` that `dirty` marks (one KVM dirty bitmap per
/// region, bit i = page i), plus the pages in `always` (guest-physical,
/// what the VMM itself wrote), over the memory file `file` of an earlier
/// snapshot of this VM: a diff snapshot. Zero pages are written too (the
/// file below may hold data there). An empty `file` becomes a sparse file
/// holding only these pages.
pub fn write_diff(
    mem: &GuestMemoryMmap,
    file: &File,
    dirty: &[Vec<u64>],
    always: std::ops::Range<u64>,
) -> Result<Written, MemoryFileError> {
    let regions = layout(mem);
    let total: u64 = regions.iter().map(|r| r.len).sum();
    match file.metadata().map_err(MemoryFileError::Write)?.len() {
        0 => file.set_len(total).map_err(MemoryFileError::Write)?,
        n if n == total => {}
        actual => {
            return Err(MemoryFileError::Size {
                actual,
                expected: total,
            })
        }
    }
    let wanted: Vec<Vec<bool>> = regions
        .iter()
        .enumerate()
        .map(|(slot, r)| {
            let bits = dirty.get(slot).map_or(&[][..], Vec::as_slice);
            (0..r.len.div_ceil(PAGE as u64))
                .map(|i| {
                    let gpa = r.guest_addr + i * PAGE as u64;
                    let word = bits.get(i as usize / 64).copied().unwrap_or(0);
                    word >> (i % 64) & 1 == 1 || always.contains(&gpa)
                })
                .collect()
        })
        .collect();
    write_pages(mem, file, &wanted, false)
}

/// Writes the `wanted` pages of each region at their place in `file`, in
/// runs of up to [`RUN_MAX`] pages; `skip_zero`: all-zero pages are left
/// as holes.
fn write_pages(
    mem: &GuestMemoryMmap,
    file: &File,
    wanted: &[Vec<bool>],
    skip_zero: bool,
) -> Result<Written, MemoryFileError> {
    let mut written = Written::default();
    for ((region, r), wanted) in mem.iter().zip(layout(mem)).zip(wanted) {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|_| MemoryFileError::Read(r.guest_addr))?;
        // SAFETY: `host..host + len` is this region's live mapping, kept by
        // `mem` for this call; nothing writes it meanwhile (the VM is paused
        // and has no devices), so reading it as bytes races with nobody.
        let bytes = unsafe { std::slice::from_raw_parts(host.cast_const(), r.len as usize) };
        // Runs of consecutive pages to keep, written with one pwrite each.
        let mut run: Option<(usize, usize)> = None;
        for (i, &want) in wanted.iter().enumerate() {
            let page = &bytes[i * PAGE..((i + 1) * PAGE).min(bytes.len())];
            if !want || (skip_zero && is_zero(page)) {
                flush(file, r.file_offset, bytes, run.take(), &mut written)?;
                continue;
            }
            match run {
                Some((start, end)) if end == i && end - start < RUN_MAX => {
                    run = Some((start, end + 1))
                }
                _ => {
                    flush(file, r.file_offset, bytes, run.take(), &mut written)?;
                    run = Some((i, i + 1));
                }
            }
        }
        flush(file, r.file_offset, bytes, run, &mut written)?;
    }
    Ok(written)
}

fn is_zero(page: &[u8]) -> bool {
    // SAFETY: u64 is valid for any bit pattern; align_to returns the aligned
    // middle and the unaligned ends, which are checked bytewise.
    let (head, words, tail) = unsafe { page.align_to::<u64>() };
    head.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

fn flush(
    file: &File,
    region_offset: u64,
    bytes: &[u8],
    run: Option<(usize, usize)>,
    written: &mut Written,
) -> Result<(), MemoryFileError> {
    let Some((first, end)) = run else {
        return Ok(());
    };
    let data = &bytes[first * PAGE..(end * PAGE).min(bytes.len())];
    file.write_all_at(data, region_offset + (first * PAGE) as u64)
        .map_err(MemoryFileError::Write)?;
    written.data_bytes += data.len() as u64;
    Ok(())
}

/// Which pages of `region` may hold data: those resident in this process
/// (touched since the VM was built or loaded) and, for a region mapped from
/// an earlier memory file, those that file holds data for.
fn pages_to_save(
    mem: &GuestMemoryMmap,
    region: &GuestRegionMmap,
) -> Result<Vec<bool>, MemoryFileError> {
    let len = region.len() as usize;
    let pages = len.div_ceil(PAGE);
    let host = mem
        .get_host_address(region.start_addr())
        .map_err(|_| MemoryFileError::Read(region.start_addr().raw_value()))?;
    let mut vec = vec![0u8; pages];
    // SAFETY: `host..host+len` is this region's live mapping (page aligned,
    // from mmap); `vec` has one byte per page of it.
    let rc = unsafe { libc::mincore(host.cast(), len, vec.as_mut_ptr()) };
    if rc != 0 {
        return Err(MemoryFileError::Mincore(std::io::Error::last_os_error()));
    }
    let mut wanted: Vec<bool> = vec.iter().map(|b| b & 1 != 0).collect();
    if let Some(fo) = region.file_offset() {
        for (start, end) in data_ranges(fo.file(), fo.start(), len as u64) {
            let first = (start as usize / PAGE).min(pages);
            let last = (end as usize).div_ceil(PAGE).min(pages);
            wanted[first..last].fill(true);
        }
    }
    Ok(wanted)
}

/// The data (non-hole) ranges of `file` within `[start, start+len)`, as
/// offsets relative to `start`. A file system without SEEK_DATA: all of it.
fn data_ranges(file: &File, start: u64, len: u64) -> Vec<(u64, u64)> {
    let fd = file.as_raw_fd();
    let end = start + len;
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        // SAFETY: lseek on an fd we hold; no memory is involved.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENXIO) {
                out.push((pos - start, len));
            }
            break;
        }
        let data = data as u64;
        if data >= end {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
        let hole = if hole < 0 {
            end
        } else {
            (hole as u64).min(end)
        };
        out.push((data - start, hole - start));
        pos = hole;
    }
    out
}

/// Maps `file` as guest memory laid out as `regions`: private (guest writes
/// never reach the file) and lazy (nothing is read until touched).
pub fn map_private(file: &File, regions: &[Region]) -> Result<GuestMemoryMmap, MemoryFileError> {
    let expected: u64 = regions.iter().map(|r| r.len).sum();
    let actual = file.metadata().map_err(MemoryFileError::Map)?.len();
    if actual != expected {
        return Err(MemoryFileError::Size { actual, expected });
    }
    let mut mapped = Vec::with_capacity(regions.len());
    for r in regions {
        let fo = FileOffset::new(
            file.try_clone().map_err(MemoryFileError::Map)?,
            r.file_offset,
        );
        let mapping = MmapRegionBuilder::new(r.len as usize)
            .with_file_offset(fo)
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
            .build()
            .map_err(|e| MemoryFileError::Map(std::io::Error::other(e.to_string())))?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(r.guest_addr))
            .ok_or_else(|| MemoryFileError::Layout(format!("region at {:#x}", r.guest_addr)))?;
        mapped.push(region);
    }
    GuestMemoryMmap::from_regions(mapped).map_err(|e| MemoryFileError::Layout(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    fn temp(tag: &str) -> (File, std::path::PathBuf) {
        let p = std::env::temp_dir().join(format!("ember-memfile-{tag}-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        (f, p)
    }

    fn allocated(f: &File) -> u64 {
        use std::os::unix::fs::MetadataExt;
        f.metadata().unwrap().blocks() * 512
    }

    #[test]
    fn only_written_pages_take_space_and_the_mapping_reads_them_back() {
        let mem = crate::memory::create(64).unwrap();
        mem.write_slice(&[7u8; 3 * PAGE], GuestAddress(0x10_0000))
            .unwrap();
        mem.write_obj(0xdead_beef_u64, GuestAddress(0x300_0008))
            .unwrap();
        // Touched, but zero: a hole too.
        mem.write_obj(0u64, GuestAddress(0x200_0000)).unwrap();
        let (f, p) = temp("write");
        let w = write(&mem, &f).unwrap();
        assert_eq!(w.data_bytes, 4 * PAGE as u64);
        assert_eq!(f.metadata().unwrap().len(), 64 << 20);
        assert!(
            allocated(&f) <= 64 * 1024,
            "{} bytes allocated",
            allocated(&f)
        );

        let back = map_private(&f, &layout(&mem)).unwrap();
        assert_eq!(
            back.read_obj::<u64>(GuestAddress(0x300_0008)).unwrap(),
            0xdead_beef
        );
        assert_eq!(back.read_obj::<u8>(GuestAddress(0x10_2fff)).unwrap(), 7);
        assert_eq!(back.read_obj::<u8>(GuestAddress(0x10_3000)).unwrap(), 0);
        // Private: a write to the restored memory never reaches the file.
        back.write_obj(1u64, GuestAddress(0x10_0000)).unwrap();
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, 0x10_0000).unwrap();
        assert_eq!(b, [7u8; 8]);

        // Saving the restored memory again keeps the untouched file pages.
        let (f2, p2) = temp("again");
        write(&back, &f2).unwrap();
        let again = map_private(&f2, &layout(&back)).unwrap();
        assert_eq!(
            again.read_obj::<u64>(GuestAddress(0x300_0008)).unwrap(),
            0xdead_beef
        );
        assert_eq!(again.read_obj::<u64>(GuestAddress(0x10_0000)).unwrap(), 1);
        std::fs::remove_file(p).unwrap();
        std::fs::remove_file(p2).unwrap();
    }

    #[test]
    fn a_memory_file_of_the_wrong_size_is_refused() {
        let mem = crate::memory::create(4).unwrap();
        let (f, p) = temp("size");
        write(&mem, &f).unwrap();
        f.set_len(3 << 20).unwrap();
        let e = map_private(&f, &layout(&mem)).unwrap_err();
        assert!(
            matches!(e, MemoryFileError::Size { actual, expected }
            if actual == 3 << 20 && expected == 4 << 20),
            "{e}"
        );
        std::fs::remove_file(p).unwrap();
    }
}
