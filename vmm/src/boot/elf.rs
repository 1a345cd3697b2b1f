//! A strict reader for the static x86-64 ELF executables ember boots as
//! kernel-less guests: header and program-header checks, PT_LOAD segments, and
//! PT_NOTE scanning (the `EMBER` note that marks a kernel-less ELF). Every
//! offset and length comes from an untrusted file, so all arithmetic is checked.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

/// ELF note name and type that mark a kernel-less guest (`ember_rt::entry!` emits it).
pub const EMBER_NOTE_NAME: &[u8] = b"EMBER";
/// See [`EMBER_NOTE_NAME`].
pub const EMBER_NOTE_TYPE: u32 = 1;

const EHDR_LEN: usize = 64;
const PHDR_LEN: usize = 56;
const MAX_PHDRS: usize = 64;
const MAX_NOTES_BYTES: u64 = 64 * 1024;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;

/// Why an ELF was refused.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("cannot read the ELF file")]
    Io(#[source] std::io::Error),
    #[error("not an ELF file (bad magic)")]
    NotElf,
    #[error("unsupported ELF: {0}")]
    Unsupported(&'static str),
    #[error("corrupt ELF: {0}")]
    Corrupt(&'static str),
    #[error("truncated ELF: {what} needs bytes up to {need}, the file has {have}")]
    Truncated {
        what: &'static str,
        need: u64,
        have: u64,
    },
}

/// One program header (the fields ember uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub kind: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

/// A parsed, checked ELF header and program-header table.
#[derive(Debug)]
pub struct Elf {
    pub entry: u64,
    pub segments: Vec<Segment>,
    pub file_len: u64,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

fn read_at(file: &mut File, offset: u64, buf: &mut [u8]) -> Result<(), ElfError> {
    file.seek(SeekFrom::Start(offset)).map_err(ElfError::Io)?;
    file.read_exact(buf).map_err(ElfError::Io)
}

impl Elf {
    /// Reads and checks the headers of `file` and every segment's bounds (what
    /// loading it as a kernel-less guest needs). Does not read segment contents.
    pub fn parse(file: &mut File) -> Result<Elf, ElfError> {
        let elf = Self::parse_headers(file)?;
        elf.check_segments()?;
        Ok(elf)
    }

    /// Reads the ELF header and program-header table only: enough to look for
    /// notes in any x86-64 executable, e.g. a vmlinux, whose entry point is a
    /// physical address outside its (virtual) segments.
    pub fn parse_headers(file: &mut File) -> Result<Elf, ElfError> {
        let file_len = file.metadata().map_err(ElfError::Io)?.len();
        if file_len < 4 {
            return Err(ElfError::NotElf);
        }
        let mut eh = [0u8; EHDR_LEN];
        let n = (file_len as usize).min(EHDR_LEN);
        read_at(file, 0, &mut eh[..n])?;
        if &eh[..4] != b"\x7fELF" {
            return Err(ElfError::NotElf);
        }
        if file_len < EHDR_LEN as u64 {
            return Err(ElfError::Truncated {
                what: "ELF header",
                need: EHDR_LEN as u64,
                have: file_len,
            });
        }
        Self::parse_header(&eh).and_then(|(entry, phoff, phnum)| {
            let table_len = phnum * PHDR_LEN;
            let end = phoff
                .checked_add(table_len as u64)
                .ok_or(ElfError::Corrupt("program headers overflow"))?;
            if end > file_len {
                return Err(ElfError::Truncated {
                    what: "program headers",
                    need: end,
                    have: file_len,
                });
            }
            let mut table = vec![0u8; table_len];
            read_at(file, phoff, &mut table)?;
            let segments = table
                .chunks_exact(PHDR_LEN)
                .map(parse_phdr)
                .collect::<Vec<_>>();
            Ok(Elf {
                entry,
                segments,
                file_len,
            })
        })
    }

    /// Header checks; returns (entry, phoff, phnum).
    fn parse_header(eh: &[u8; EHDR_LEN]) -> Result<(u64, u64, usize), ElfError> {
        if eh[4] != 2 {
            return Err(ElfError::Unsupported("not a 64-bit ELF"));
        }
        if eh[5] != 1 {
            return Err(ElfError::Unsupported("not little-endian"));
        }
        if u16_at(eh, 18) != EM_X86_64 {
            return Err(ElfError::Unsupported("not an x86-64 ELF"));
        }
        match u16_at(eh, 16) {
            ET_EXEC => {}
            ET_DYN => {
                return Err(ElfError::Unsupported(
                    "position-independent ELF (link it static, non-PIE)",
                ))
            }
            _ => return Err(ElfError::Unsupported("not an executable ELF")),
        }
        let phoff = u64_at(eh, 32);
        let phentsize = u16_at(eh, 54) as usize;
        let phnum = u16_at(eh, 56) as usize;
        if phentsize != PHDR_LEN {
            return Err(ElfError::Corrupt("bad program header size"));
        }
        if phnum == 0 || phnum > MAX_PHDRS {
            return Err(ElfError::Corrupt("bad program header count"));
        }
        Ok((u64_at(eh, 24), phoff, phnum))
    }

    fn check_segments(&self) -> Result<(), ElfError> {
        for s in &self.segments {
            let end = s
                .offset
                .checked_add(s.filesz)
                .ok_or(ElfError::Corrupt("segment offset overflows"))?;
            if end > self.file_len {
                return Err(ElfError::Truncated {
                    what: "a segment",
                    need: end,
                    have: self.file_len,
                });
            }
            if s.kind == PT_LOAD {
                if s.filesz > s.memsz {
                    return Err(ElfError::Corrupt(
                        "segment file size exceeds its memory size",
                    ));
                }
                s.vaddr
                    .checked_add(s.memsz)
                    .ok_or(ElfError::Corrupt("segment address overflows"))?;
            }
        }
        if !self.loads().any(|s| s.memsz > 0) {
            return Err(ElfError::Corrupt("no loadable segment"));
        }
        let entry_inside = self
            .loads()
            .any(|s| s.vaddr <= self.entry && self.entry < s.vaddr + s.memsz);
        if !entry_inside {
            return Err(ElfError::Corrupt(
                "entry point outside every loadable segment",
            ));
        }
        Ok(())
    }

    /// The PT_LOAD segments.
    pub fn loads(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter().filter(|s| s.kind == PT_LOAD)
    }

    /// `[lowest vaddr, highest vaddr + memsz)` over the PT_LOAD segments.
    pub fn image_range(&self) -> (u64, u64) {
        let lo = self.loads().map(|s| s.vaddr).min().unwrap_or(0);
        let hi = self.loads().map(|s| s.vaddr + s.memsz).max().unwrap_or(0);
        (lo, hi)
    }

    /// Whether a PT_NOTE segment holds a note with this name and type.
    pub fn has_note(&self, file: &mut File, name: &[u8], kind: u32) -> Result<bool, ElfError> {
        for s in self.segments.iter().filter(|s| s.kind == PT_NOTE) {
            // Only what the file really holds (parse_headers does not check).
            let len = s
                .filesz
                .min(MAX_NOTES_BYTES)
                .min(self.file_len.saturating_sub(s.offset)) as usize;
            let mut buf = vec![0u8; len];
            read_at(file, s.offset, &mut buf)?;
            if notes(&buf).any(|(n, t)| n == name && t == kind) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn parse_phdr(p: &[u8]) -> Segment {
    Segment {
        kind: u32_at(p, 0),
        flags: u32_at(p, 4),
        offset: u64_at(p, 8),
        vaddr: u64_at(p, 16),
        filesz: u64_at(p, 32),
        memsz: u64_at(p, 40),
    }
}

/// Iterates over (name without NUL, type) of the notes in a PT_NOTE blob,
/// stopping at the first malformed one.
fn notes(buf: &[u8]) -> impl Iterator<Item = (&[u8], u32)> {
    let align4 = |x: usize| x.checked_add(3).map(|v| v & !3);
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let hdr = buf.get(pos..pos.checked_add(12)?)?;
        let (namesz, descsz, kind) = (
            u32_at(hdr, 0) as usize,
            u32_at(hdr, 4) as usize,
            u32_at(hdr, 8),
        );
        let name_start = pos + 12;
        let name = buf.get(name_start..name_start.checked_add(namesz)?)?;
        let desc_start = align4(name_start + namesz)?;
        let next = align4(desc_start.checked_add(descsz)?)?;
        if next > buf.len() {
            return None;
        }
        pos = next;
        let name = name.strip_suffix(&[0]).unwrap_or(name);
        Some((name, kind))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A minimal ET_EXEC with one PT_LOAD (code at 0x400000) and optionally a note.
    pub(crate) fn build(note: Option<(&[u8], u32)>) -> Vec<u8> {
        build_with_code(note, &[0xf4u8; 16])
    }

    /// As [`build`], with `code` as the loaded bytes (entry = first byte).
    pub(crate) fn build_with_code(note: Option<(&[u8], u32)>, code: &[u8]) -> Vec<u8> {
        let phnum = if note.is_some() { 2 } else { 1 };
        let data_off = (EHDR_LEN + phnum * PHDR_LEN) as u64;
        let mut f = vec![0u8; EHDR_LEN];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[6] = 1;
        f[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        f[24..32].copy_from_slice(&0x40_0000u64.to_le_bytes());
        f[32..40].copy_from_slice(&(EHDR_LEN as u64).to_le_bytes());
        f[54..56].copy_from_slice(&(PHDR_LEN as u16).to_le_bytes());
        f[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
        let ph = |kind: u32, off: u64, vaddr: u64, len: u64| {
            let mut p = vec![0u8; PHDR_LEN];
            p[0..4].copy_from_slice(&kind.to_le_bytes());
            p[8..16].copy_from_slice(&off.to_le_bytes());
            p[16..24].copy_from_slice(&vaddr.to_le_bytes());
            p[32..40].copy_from_slice(&len.to_le_bytes());
            p[40..48].copy_from_slice(&len.to_le_bytes());
            p
        };
        let mut note_bytes = Vec::new();
        if let Some((name, kind)) = note {
            let mut n = name.to_vec();
            n.push(0);
            note_bytes.extend_from_slice(&(n.len() as u32).to_le_bytes());
            note_bytes.extend_from_slice(&4u32.to_le_bytes());
            note_bytes.extend_from_slice(&kind.to_le_bytes());
            note_bytes.extend_from_slice(&n);
            while note_bytes.len() % 4 != 0 {
                note_bytes.push(0);
            }
            note_bytes.extend_from_slice(&1u32.to_le_bytes());
        }
        let code_off = data_off + note_bytes.len() as u64;
        let load = ph(PT_LOAD, code_off, 0x40_0000, code.len() as u64);
        f.extend_from_slice(&load);
        if note.is_some() {
            let n = ph(PT_NOTE, data_off, 0, note_bytes.len() as u64);
            f.extend_from_slice(&n);
        }
        f.extend_from_slice(&note_bytes);
        f.extend_from_slice(code);
        f
    }

    pub(crate) fn temp_file(bytes: &[u8], tag: &str) -> (File, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("ember-elf-{}-{tag}", std::process::id()));
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        (File::open(&path).unwrap(), path)
    }

    fn parse(bytes: &[u8], tag: &str) -> Result<(Elf, File), ElfError> {
        let (mut f, path) = temp_file(bytes, tag);
        std::fs::remove_file(path).unwrap();
        Elf::parse(&mut f).map(|e| (e, f))
    }

    #[test]
    fn parses_and_finds_the_ember_note() {
        let (elf, mut f) = parse(&build(Some((EMBER_NOTE_NAME, EMBER_NOTE_TYPE))), "note").unwrap();
        assert_eq!(elf.entry, 0x40_0000);
        assert_eq!(elf.image_range(), (0x40_0000, 0x40_0010));
        assert!(elf
            .has_note(&mut f, EMBER_NOTE_NAME, EMBER_NOTE_TYPE)
            .unwrap());
        assert!(!elf.has_note(&mut f, b"Xen", 18).unwrap());
        let (elf, mut f) = parse(&build(None), "nonote").unwrap();
        assert!(!elf
            .has_note(&mut f, EMBER_NOTE_NAME, EMBER_NOTE_TYPE)
            .unwrap());
    }

    #[test]
    fn refuses_bad_files() {
        let good = build(None);
        assert!(matches!(
            parse(b"MZ\x90\x00junk", "mz"),
            Err(ElfError::NotElf)
        ));
        assert!(matches!(
            parse(&good[..40], "short"),
            Err(ElfError::Truncated { .. })
        ));
        assert!(matches!(
            parse(&good[..good.len() - 4], "cut"),
            Err(ElfError::Truncated { .. })
        ));
        let mut dyn_ = good.clone();
        dyn_[16] = ET_DYN as u8;
        assert!(matches!(parse(&dyn_, "dyn"), Err(ElfError::Unsupported(_))));
        let mut bad_entry = good.clone();
        bad_entry[24..32].copy_from_slice(&0x1000u64.to_le_bytes());
        assert!(matches!(
            parse(&bad_entry, "entry"),
            Err(ElfError::Corrupt(_))
        ));
        let mut many = good.clone();
        many[56..58].copy_from_slice(&0xffffu16.to_le_bytes());
        assert!(matches!(parse(&many, "many"), Err(ElfError::Corrupt(_))));
        let mut wrap = good;
        let ph = EHDR_LEN;
        wrap[ph + 16..ph + 24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(parse(&wrap, "wrap"), Err(ElfError::Corrupt(_))));
    }

    #[test]
    fn notes_are_found_without_the_loading_checks() {
        // Like a vmlinux: entry outside the segments. Loading refuses it, the
        // note scan still works.
        let mut v = build(Some((b"Xen", 18)));
        v[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes());
        let (mut f, path) = temp_file(&v, "vmlinux-like");
        std::fs::remove_file(path).unwrap();
        assert!(matches!(Elf::parse(&mut f), Err(ElfError::Corrupt(_))));
        let elf = Elf::parse_headers(&mut f).unwrap();
        assert!(elf.has_note(&mut f, b"Xen", 18).unwrap());
    }

    #[test]
    fn malformed_notes_stop_the_scan() {
        assert_eq!(notes(&[0xff; 12]).count(), 0);
        assert_eq!(notes(&[]).count(), 0);
        let mut one = Vec::new();
        one.extend_from_slice(&2u32.to_le_bytes());
        one.extend_from_slice(&0u32.to_le_bytes());
        one.extend_from_slice(&7u32.to_le_bytes());
        one.extend_from_slice(b"A\0\0\0");
        assert_eq!(notes(&one).collect::<Vec<_>>(), vec![(&b"A"[..], 7)]);
    }
}
