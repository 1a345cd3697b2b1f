//! Turning an uploaded deployment package into the artifact an environment
//! runs: either a raw wasm module, or a ZIP holding one. The ZIP reader is
//! bounded: entry count, names (no `..`, no absolute paths), the bytes
//! actually inflated (never trusting the header sizes) and the compression
//! ratio are capped, so a hostile archive costs little and stores nothing.

use std::io::{Cursor, Read};

/// Largest wasm module accepted (Lambda's unzipped limit is 250 MB; the
/// kernel-less agent receives code inline in `Init`, capped at 64 MiB).
pub const MAX_MODULE: u64 = 48 * 1024 * 1024;
/// Most entries a ZIP may list.
pub const MAX_ENTRIES: usize = 10_000;
/// Largest uncompressed/compressed ratio tolerated for entries over 1 MiB.
pub const MAX_RATIO: u64 = 200;

const WASM_MAGIC: &[u8; 8] = b"\0asm\x01\0\0\0";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodeError {
    #[error("Could not unzip uploaded file. Please check your file, then try to upload again.")]
    BadZip,
    #[error("The ZIP entry name {0:?} is not allowed (absolute paths and '..' are refused).")]
    BadEntryName(String),
    #[error("The ZIP holds more than {MAX_ENTRIES} entries.")]
    TooManyEntries,
    #[error("Unzipped size must be smaller than {MAX_MODULE} bytes, and the archive must not be a decompression bomb.")]
    TooLarge,
    #[error("The ZIP entry {0:?} is a symbolic link; store the file itself.")]
    Symlink(String),
    #[error("The deployment package must be a wasm module or a ZIP holding exactly one .wasm file ({0}).")]
    NoModule(String),
}

/// The module to run, extracted from `package`. `handler` (e.g. `app.wasm` or
/// `app.handler`) picks the entry when the ZIP holds several modules.
pub fn extract_module(package: &[u8], handler: &str) -> Result<Vec<u8>, CodeError> {
    if package.starts_with(WASM_MAGIC) {
        if package.len() as u64 > MAX_MODULE {
            return Err(CodeError::TooLarge);
        }
        return Ok(package.to_vec());
    }
    if !package.starts_with(b"PK\x03\x04") && !package.starts_with(b"PK\x05\x06") {
        return Err(CodeError::NoModule("neither wasm nor ZIP".into()));
    }
    let mut zip = zip::ZipArchive::new(Cursor::new(package)).map_err(|_| CodeError::BadZip)?;
    if zip.len() > MAX_ENTRIES {
        return Err(CodeError::TooManyEntries);
    }
    let mut modules = Vec::new();
    for i in 0..zip.len() {
        let entry = zip.by_index_raw(i).map_err(|_| CodeError::BadZip)?;
        let name = entry.name().to_string();
        let bad = name.starts_with('/')
            || name.contains('\\')
            || name.contains('\0')
            || name.split('/').any(|c| c == "..")
            || entry.enclosed_name().is_none();
        if bad {
            return Err(CodeError::BadEntryName(name));
        }
        if entry.is_file() && name.ends_with(".wasm") {
            modules.push((i, name));
        }
    }
    let stem = handler.split('.').next().unwrap_or_default();
    let pick = match modules.as_slice() {
        [] => return Err(CodeError::NoModule("no .wasm entry".into())),
        [one] => one.0,
        many => {
            let by_handler = many
                .iter()
                .find(|(_, n)| n == handler || n.trim_end_matches(".wasm") == stem);
            by_handler.map(|m| m.0).ok_or_else(|| {
                CodeError::NoModule("several .wasm entries; name one in Handler".into())
            })?
        }
    };
    let entry = zip.by_index(pick).map_err(|_| CodeError::BadZip)?;
    let compressed = entry.compressed_size().max(1);
    let mut out = Vec::new();
    // Read one byte past the cap so "exactly at the cap" and "over" differ.
    entry
        .take(MAX_MODULE + 1)
        .read_to_end(&mut out)
        .map_err(|_| CodeError::BadZip)?;
    let n = out.len() as u64;
    if n > MAX_MODULE || (n > 1024 * 1024 && n / compressed > MAX_RATIO) {
        return Err(CodeError::TooLarge);
    }
    if !out.starts_with(WASM_MAGIC) {
        return Err(CodeError::NoModule(
            "the .wasm entry is not a wasm module".into(),
        ));
    }
    Ok(out)
}

/// Layers and Linux function packages hold arbitrary files; only the
/// archive's shape is checked (names, entry count, size, ratio, and no
/// symlinks: the code-image tool extracts on the host and refuses them, so
/// refusing here turns a later launch failure into a clean 400).
pub fn check_archive(package: &[u8]) -> Result<(), CodeError> {
    let mut zip = zip::ZipArchive::new(Cursor::new(package)).map_err(|_| CodeError::BadZip)?;
    if zip.len() > MAX_ENTRIES {
        return Err(CodeError::TooManyEntries);
    }
    let mut total = 0u64;
    for i in 0..zip.len() {
        let entry = zip.by_index_raw(i).map_err(|_| CodeError::BadZip)?;
        let name = entry.name().to_string();
        if entry.enclosed_name().is_none()
            || name.split('/').any(|c| c == "..")
            || name.starts_with('/')
        {
            return Err(CodeError::BadEntryName(name));
        }
        if entry.unix_mode().is_some_and(|m| m & 0o170000 == 0o120000) {
            return Err(CodeError::Symlink(name));
        }
        total = total.saturating_add(entry.size());
        if total > MAX_MODULE * 5 || entry.size() / entry.compressed_size().max(1) > MAX_RATIO * 5 {
            return Err(CodeError::TooLarge);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use zip::write::SimpleFileOptions;

    fn make_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data) in entries {
            w.start_file(*name, SimpleFileOptions::default()).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    const MODULE: &[u8] = b"\0asm\x01\0\0\0";

    #[test]
    fn raw_and_zipped_modules() {
        assert_eq!(extract_module(MODULE, "x").unwrap(), MODULE);
        let z = make_zip(&[("readme.txt", b"hi"), ("fn.wasm", MODULE)]);
        assert_eq!(extract_module(&z, "whatever").unwrap(), MODULE);
        let two = make_zip(&[("a.wasm", MODULE), ("b.wasm", b"\0asm\x01\0\0\0\x01")]);
        assert_eq!(
            extract_module(&two, "b.handler").unwrap(),
            b"\0asm\x01\0\0\0\x01"
        );
        assert!(matches!(
            extract_module(&two, "c.handler"),
            Err(CodeError::NoModule(_))
        ));
    }

    #[test]
    fn hostile_archives_refused() {
        let z = make_zip(&[("../evil.wasm", MODULE)]);
        assert_eq!(
            extract_module(&z, "h"),
            Err(CodeError::BadEntryName("../evil.wasm".into()))
        );
        let z = make_zip(&[("a/../../b.wasm", MODULE)]);
        assert!(matches!(
            extract_module(&z, "h"),
            Err(CodeError::BadEntryName(_))
        ));
        assert_eq!(
            extract_module(b"PK\x03\x04garbage", "h"),
            Err(CodeError::BadZip)
        );
        assert!(matches!(
            extract_module(b"not code", "h"),
            Err(CodeError::NoModule(_))
        ));
        // A bomb: 8 MiB of zeros deflates to a few KiB.
        let mut bomb = MODULE.to_vec();
        bomb.resize(8 * 1024 * 1024, 0);
        let z = make_zip(&[("f.wasm", &bomb)]);
        assert!(z.len() < 100_000);
        assert_eq!(extract_module(&z, "h"), Err(CodeError::TooLarge));
        assert!(matches!(
            check_archive(&make_zip(&[("../x", b"1")])),
            Err(CodeError::BadEntryName(_))
        ));
        assert!(check_archive(&make_zip(&[("lib/x.txt", b"1")])).is_ok());
    }
}
