//! emberd's 32-byte secret key files (the store's encryption key, the audit
//! trail's HMAC key): created at first start with mode 0600 and fsync'd
//! (file and directory), refused later if anyone but the owner can read them.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("key file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {0} is malformed or readable by others (must be 32 bytes, mode 0600)")]
    Bad(PathBuf),
    #[error("no entropy for a new key")]
    Entropy,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Loads the key at `path`, creating a random one if the file does not exist.
pub fn load_or_create(path: &Path) -> Result<[u8; 32], KeyFileError> {
    let mut key = [0u8; 32];
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            getrandom::getrandom(&mut key).map_err(|_| KeyFileError::Entropy)?;
            f.write_all(&key).map_err(io(path))?;
            f.sync_all().map_err(io(path))?;
            if let Some(parent) = path.parent() {
                File::open(parent)
                    .and_then(|d| d.sync_all())
                    .map_err(io(parent))?;
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load(path),
        Err(e) => Err(io(path)(e)),
    }
}

/// Loads an existing key (never creates one).
pub fn load(path: &Path) -> Result<[u8; 32], KeyFileError> {
    let mut key = [0u8; 32];
    let meta = fs::metadata(path).map_err(io(path))?;
    if meta.permissions().mode() & 0o077 != 0 || meta.len() != 32 {
        return Err(KeyFileError::Bad(path.into()));
    }
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(io(path))?;
    Ok(key)
}
