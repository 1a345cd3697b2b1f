//! What a dynamically linked `ember-vmm` needs inside its jail: the program
//! interpreter (PT_INTERP) and the shared libraries it names (DT_NEEDED,
//! recursively), found where the loader looks for them without an
//! ld.so.cache. They are bind-mounted read-only at the same paths. A static
//! binary needs nothing.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where the loader searches when /etc/ld.so.cache is absent (Debian
/// multiarch first).
const LIB_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// Why the binary's dependencies could not be found.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("cannot read {0}")]
    Read(PathBuf, #[source] io::Error),
    #[error("{0} is not a valid 64-bit ELF: {1}")]
    Bad(PathBuf, &'static str),
    #[error("{0} needs {1}, which is in none of the library directories")]
    Missing(PathBuf, String),
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

fn cstr_at(b: &[u8], off: usize) -> Option<String> {
    let s = b.get(off..)?;
    let end = s.iter().position(|&c| c == 0)?;
    std::str::from_utf8(&s[..end]).ok().map(str::to_string)
}

/// Reads `len` bytes at `off` (short at end of file); None on I/O error.
type ReadAt<'a> = dyn FnMut(u64, usize) -> Option<Vec<u8>> + 'a;

/// (interpreter, needed library names) of one ELF image, reading only its
/// headers, dynamic section and string table (a libc is megabytes).
fn parse(read: &mut ReadAt) -> Result<(Option<String>, Vec<String>), &'static str> {
    let h = read(0, 64).ok_or("unreadable")?;
    if h.get(..4) != Some(b"\x7fELF") || h.get(4) != Some(&2) {
        return Err("no ELF64 magic");
    }
    let phoff = u64_at(&h, 0x20).ok_or("short header")?;
    let phentsize = u16_at(&h, 0x36).ok_or("short header")? as usize;
    let phnum = u16_at(&h, 0x38).ok_or("short header")? as usize;
    if phentsize < 56 || phnum > 256 {
        return Err("bad program header table");
    }
    let ph = read(phoff, phentsize * phnum).ok_or("unreadable program headers")?;
    let mut interp = None;
    let mut dynamic = None;
    let mut loads = Vec::new();
    for i in 0..phnum {
        let p = i * phentsize;
        let kind = u32_at(&ph, p).ok_or("short program header")?;
        let offset = u64_at(&ph, p + 8).ok_or("short program header")?;
        let vaddr = u64_at(&ph, p + 16).ok_or("short program header")?;
        let filesz = u64_at(&ph, p + 32).ok_or("short program header")?;
        let small = usize::try_from(filesz).ok().filter(|&n| n <= 1 << 20);
        match kind {
            1 => loads.push((vaddr, offset, filesz)),
            2 => dynamic = Some((offset, small.ok_or("huge PT_DYNAMIC")?)),
            3 => {
                let b = read(offset, small.ok_or("huge PT_INTERP")?).ok_or("bad PT_INTERP")?;
                interp = Some(cstr_at(&b, 0).ok_or("bad PT_INTERP")?);
            }
            _ => {}
        }
    }
    let Some((dyn_off, dyn_len)) = dynamic else {
        return Ok((interp, Vec::new()));
    };
    let d = read(dyn_off, dyn_len).ok_or("unreadable dynamic section")?;
    let (mut strtab_vaddr, mut strsz) = (None, None);
    let mut needed_offsets = Vec::new();
    for e in (0..d.len()).step_by(16) {
        let tag = u64_at(&d, e).ok_or("short dynamic section")?;
        let val = u64_at(&d, e + 8).ok_or("short dynamic section")?;
        match tag {
            0 => break,
            1 => needed_offsets.push(val as usize),
            5 => strtab_vaddr = Some(val),
            10 => strsz = usize::try_from(val).ok().filter(|&n| n <= 1 << 20),
            _ => {}
        }
    }
    if needed_offsets.is_empty() {
        return Ok((interp, Vec::new()));
    }
    let (strtab_vaddr, strsz) = strtab_vaddr.zip(strsz).ok_or("no DT_STRTAB/DT_STRSZ")?;
    let strtab_off = loads
        .iter()
        .find(|(v, _, sz)| strtab_vaddr >= *v && strtab_vaddr < v + sz)
        .map(|(v, off, _)| strtab_vaddr - v + off)
        .ok_or("DT_STRTAB outside the file")?;
    let strtab = read(strtab_off, strsz).ok_or("unreadable string table")?;
    let needed = needed_offsets
        .iter()
        .map(|&o| cstr_at(&strtab, o).ok_or("bad DT_NEEDED"))
        .collect::<Result<_, _>>()?;
    Ok((interp, needed))
}

fn parse_file(path: &Path) -> Result<(Option<String>, Vec<String>), ElfError> {
    use std::os::unix::fs::FileExt;
    let f = fs::File::open(path).map_err(|e| ElfError::Read(path.to_path_buf(), e))?;
    let mut read = |off: u64, len: usize| {
        let mut buf = vec![0u8; len];
        let n = f.read_at(&mut buf, off).ok()?;
        buf.truncate(n);
        Some(buf)
    };
    parse(&mut read).map_err(|why| ElfError::Bad(path.to_path_buf(), why))
}

/// Host paths (as the loader will open them) of everything `exe` needs to
/// start: interpreter first, then the libraries.
pub fn runtime_deps(exe: &Path) -> Result<Vec<PathBuf>, ElfError> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut todo = vec![exe.to_path_buf()];
    while let Some(file) = todo.pop() {
        let (interp, needed) = parse_file(&file)?;
        if let Some(i) = interp {
            if seen.insert(i.clone()) {
                out.push(PathBuf::from(i));
            }
        }
        for name in needed {
            if !seen.insert(name.clone()) {
                continue;
            }
            let path = LIB_DIRS
                .iter()
                .map(|d| Path::new(d).join(&name))
                .find(|p| p.is_file())
                .ok_or_else(|| ElfError::Missing(file.clone(), name.clone()))?;
            out.push(path.clone());
            todo.push(path);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_loader_and_libc_of_this_test_binary() {
        let exe = std::env::current_exe().expect("exe");
        let deps = runtime_deps(&exe).expect("deps");
        // This test binary is a dynamically linked glibc program.
        assert!(deps[0].to_string_lossy().contains("ld-linux"), "{deps:?}");
        assert!(deps.iter().any(|p| p.ends_with("libc.so.6")), "{deps:?}");
    }

    fn parse_bytes(b: &[u8]) -> Result<(Option<String>, Vec<String>), &'static str> {
        parse(&mut |off: u64, len: usize| {
            let start = usize::try_from(off).ok()?.min(b.len());
            Some(b[start..(start + len).min(b.len())].to_vec())
        })
    }

    #[test]
    fn rejects_non_elf_and_truncated_input() {
        assert!(parse_bytes(b"#!/bin/sh\n").is_err());
        assert!(parse_bytes(b"\x7fELF\x02\x01").is_err());
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[0x20..0x28].copy_from_slice(&1000u64.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&3u16.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        assert!(parse_bytes(&b).is_err());
    }
}
