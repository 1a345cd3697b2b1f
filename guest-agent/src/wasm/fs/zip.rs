//! A ZIP archive's central directory, read without trusting it: the
//! end-of-central-directory record, then every entry's name, method, sizes
//! and where its data starts, each offset and length checked against the
//! archive's bytes. Members are stored or deflated (miniz_oxide inflates
//! them with the size the directory promised as the limit). No ZIP64, no
//! encryption, no multi-disk archives: those are refused with a message.

use alloc::string::String;
use alloc::vec::Vec;

/// Why an archive or a member cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZipError {
    #[error("not a ZIP archive (no end-of-central-directory record)")]
    NotZip,
    #[error("ZIP64 and multi-disk archives are not supported")]
    Zip64,
    #[error("the central directory is truncated or points outside the archive")]
    Truncated,
    #[error("{0}: encrypted members are not supported")]
    Encrypted(String),
    #[error("{name}: compression method {method} is not supported (stored and deflate are)")]
    Method { name: String, method: u16 },
    #[error("{0}: the member's data does not inflate to its recorded size")]
    Corrupt(String),
    #[error("{0}: the member name is not UTF-8")]
    Name(String),
}

/// One member of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name as stored (`/`-separated; directories end in `/`).
    pub name: String,
    pub method: Method,
    /// Where the member's (possibly compressed) data starts in the archive.
    pub data_start: usize,
    pub compressed: usize,
    pub size: usize,
    /// A Unix symbolic link (its data is the target).
    pub symlink: bool,
    pub crc32: u32,
}

/// How a member's data is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Stored,
    Deflate,
}

const EOCD_SIG: u32 = 0x0605_4b50;
const CDH_SIG: u32 = 0x0201_4b50;
const LFH_SIG: u32 = 0x0403_4b50;
const EOCD_LEN: usize = 22;
const CDH_LEN: usize = 46;
const LFH_LEN: usize = 30;

fn u16_at(b: &[u8], at: usize) -> Result<u16, ZipError> {
    let s = b.get(at..at.checked_add(2).ok_or(ZipError::Truncated)?);
    let s = s.ok_or(ZipError::Truncated)?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, ZipError> {
    let s = b.get(at..at.checked_add(4).ok_or(ZipError::Truncated)?);
    let s = s.ok_or(ZipError::Truncated)?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Finds the end-of-central-directory record: the last signature whose
/// comment length reaches exactly to the end of the archive.
fn find_eocd(b: &[u8]) -> Result<usize, ZipError> {
    if b.len() < EOCD_LEN {
        return Err(ZipError::NotZip);
    }
    let lowest = b.len().saturating_sub(EOCD_LEN + 0xffff);
    let mut at = b.len() - EOCD_LEN;
    loop {
        if u32_at(b, at)? == EOCD_SIG {
            let comment = u16_at(b, at + 20)? as usize;
            if at + EOCD_LEN + comment == b.len() {
                return Ok(at);
            }
        }
        if at == lowest {
            return Err(ZipError::NotZip);
        }
        at -= 1;
    }
}

/// Reads the central directory of `b`.
pub fn entries(b: &[u8]) -> Result<Vec<Entry>, ZipError> {
    let eocd = find_eocd(b)?;
    let disk = u16_at(b, eocd + 4)?;
    let cd_disk = u16_at(b, eocd + 6)?;
    let count = u16_at(b, eocd + 10)? as usize;
    let cd_size = u32_at(b, eocd + 12)?;
    let cd_offset = u32_at(b, eocd + 16)?;
    if disk != 0 || cd_disk != 0 || count == 0xffff || cd_offset == u32::MAX {
        return Err(ZipError::Zip64);
    }
    let cd_start = cd_offset as usize;
    let cd_end = cd_start
        .checked_add(cd_size as usize)
        .filter(|&e| e <= eocd)
        .ok_or(ZipError::Truncated)?;
    // Each entry takes at least CDH_LEN bytes: a lying count fails here.
    if count.saturating_mul(CDH_LEN) > cd_end - cd_start {
        return Err(ZipError::Truncated);
    }
    let mut out = Vec::with_capacity(count);
    let mut at = cd_start;
    for _ in 0..count {
        if at.checked_add(CDH_LEN).is_none_or(|e| e > cd_end) || u32_at(b, at)? != CDH_SIG {
            return Err(ZipError::Truncated);
        }
        let made_by_unix = u16_at(b, at + 4)? >> 8 == 3;
        let flags = u16_at(b, at + 8)?;
        let method = u16_at(b, at + 10)?;
        let crc32 = u32_at(b, at + 16)?;
        let compressed = u32_at(b, at + 20)?;
        let size = u32_at(b, at + 24)?;
        let name_len = u16_at(b, at + 28)? as usize;
        let extra_len = u16_at(b, at + 30)? as usize;
        let comment_len = u16_at(b, at + 32)? as usize;
        let external = u32_at(b, at + 38)?;
        let local = u32_at(b, at + 42)?;
        let name_at = at + CDH_LEN;
        let raw_name = b
            .get(name_at..name_at + name_len)
            .filter(|_| name_at + name_len <= cd_end)
            .ok_or(ZipError::Truncated)?;
        let name = core::str::from_utf8(raw_name)
            .map_err(|_| ZipError::Name(String::from_utf8_lossy(raw_name).into_owned()))?
            .into();
        at = name_at + name_len + extra_len + comment_len;
        if at > cd_end {
            return Err(ZipError::Truncated);
        }
        if compressed == u32::MAX || size == u32::MAX || local == u32::MAX {
            return Err(ZipError::Zip64);
        }
        if flags & 1 != 0 {
            return Err(ZipError::Encrypted(name));
        }
        let method = match method {
            0 => Method::Stored,
            8 => Method::Deflate,
            m => return Err(ZipError::Method { name, method: m }),
        };
        // The data follows the local header, whose name and extra lengths
        // may differ from the central directory's.
        let local = local as usize;
        if local.checked_add(LFH_LEN).is_none_or(|e| e > b.len()) || u32_at(b, local)? != LFH_SIG {
            return Err(ZipError::Truncated);
        }
        let data_start =
            local + LFH_LEN + u16_at(b, local + 26)? as usize + u16_at(b, local + 28)? as usize;
        let compressed = compressed as usize;
        if data_start
            .checked_add(compressed)
            .is_none_or(|e| e > b.len())
        {
            return Err(ZipError::Truncated);
        }
        let size = size as usize;
        if method == Method::Stored && size != compressed {
            return Err(ZipError::Corrupt(name));
        }
        out.push(Entry {
            name,
            method,
            data_start,
            compressed,
            size,
            symlink: made_by_unix && (external >> 16) & 0o170000 == 0o120000,
            crc32,
        });
    }
    Ok(out)
}

/// The raw (possibly compressed) bytes of `e` in `archive`.
pub fn raw<'a>(archive: &'a [u8], e: &Entry) -> &'a [u8] {
    // entries() checked the range against this archive.
    archive
        .get(e.data_start..e.data_start + e.compressed)
        .unwrap_or(&[])
}

/// Inflates a deflated member (exactly `e.size` bytes or an error).
pub fn inflate(archive: &[u8], e: &Entry) -> Result<Vec<u8>, ZipError> {
    let data = miniz_oxide::inflate::decompress_to_vec_with_limit(raw(archive, e), e.size)
        .map_err(|_| ZipError::Corrupt(e.name.clone()))?;
    if data.len() != e.size {
        return Err(ZipError::Corrupt(e.name.clone()));
    }
    Ok(data)
}

/// The bytes of a member of at most `max` bytes (a link target), inflated
/// if needed.
pub fn read_small(archive: &[u8], e: &Entry, max: usize) -> Result<Vec<u8>, ZipError> {
    if e.size > max {
        return Err(ZipError::Corrupt(e.name.clone()));
    }
    match e.method {
        Method::Stored => Ok(raw(archive, e).to_vec()),
        Method::Deflate => inflate(archive, e),
    }
}
