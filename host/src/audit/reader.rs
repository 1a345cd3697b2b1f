//! Reading the audit files: the ordered file list, every line with its
//! place (for verify and list), and the tail emberd continues from.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use super::record::{self, Parsed};
use super::{io_err, log_file_index, AuditError};

/// The log files of `dir`, in chain order.
pub fn log_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, AuditError> {
    let mut files = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        if let Some(i) = entry.file_name().to_str().and_then(log_file_index) {
            files.push((i, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// One line of one file.
pub struct RawLine {
    /// The file's name (`audit-000001.log`).
    pub file: String,
    /// 1-based line number in that file.
    pub line: usize,
    pub text: String,
    /// False for a last line without its newline (a write cut short).
    pub complete: bool,
}

impl RawLine {
    pub fn parse(&self) -> Result<Parsed, &'static str> {
        record::parse(&self.text)
    }
}

/// Every line of every log file, in order.
pub fn read_lines(dir: &Path) -> Result<Vec<RawLine>, AuditError> {
    let mut out = Vec::new();
    for (_, path) in log_files(dir)? {
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let ends_clean = text.ends_with('\n');
        let lines: Vec<&str> = text.lines().collect();
        let n = lines.len();
        for (i, l) in lines.into_iter().enumerate() {
            out.push(RawLine {
                file: file.clone(),
                line: i + 1,
                text: l.to_string(),
                complete: ends_clean || i + 1 < n,
            });
        }
    }
    Ok(out)
}

/// Where an opening emberd continues the chain.
pub struct Tail {
    /// The last log file, opened for appending: (file, path, index, size).
    pub file: Option<(File, PathBuf, u64, u64)>,
    /// Seq and hash of the last record.
    pub last: Option<(u64, String)>,
    /// The last record's `prev`.
    pub last_prev: Option<String>,
    /// Bytes of a torn last line that were cut off.
    pub torn_bytes: u64,
}

/// Finds the end of the chain, cutting off a torn last line (a write that a
/// crash interrupted before it was acknowledged).
pub fn open_tail(dir: &Path) -> Result<Tail, AuditError> {
    let files = log_files(dir)?;
    let Some((index, path)) = files.last().cloned() else {
        return Ok(Tail {
            file: None,
            last: None,
            last_prev: None,
            torn_bytes: 0,
        });
    };
    let mut bytes = fs::read(&path).map_err(io_err(&path))?;
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let torn_bytes = (bytes.len() - keep) as u64;
    let file = OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(io_err(&path))?;
    if torn_bytes > 0 {
        file.set_len(keep as u64)
            .and_then(|()| file.sync_all())
            .map_err(io_err(&path))?;
        bytes.truncate(keep);
    }
    let size = bytes.len() as u64;
    // The last complete line, from this file or (after a rotation that
    // crashed before its first record) from an earlier one.
    let mut last_line = last_line_of(&bytes);
    for (_, p) in files.iter().rev().skip(1) {
        if last_line.is_some() {
            break;
        }
        last_line = last_line_of(&fs::read(p).map_err(io_err(p))?);
    }
    let (last, last_prev) = match last_line {
        None => (None, None),
        Some(l) => {
            let p = record::parse(&l).map_err(|why| AuditError::Corrupt {
                file: path.display().to_string(),
                why,
            })?;
            (Some((p.seq, p.stored_hash)), Some(p.prev))
        }
    };
    Ok(Tail {
        file: Some((file, path, index, size)),
        last,
        last_prev,
        torn_bytes,
    })
}

fn last_line_of(bytes: &[u8]) -> Option<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .last()
        .map(str::to_string)
}
