//! Code blobs on disk: content-addressed by the SHA-256 of their plaintext,
//! encrypted at rest with AES-256-GCM under emberd's key file, verified on
//! every load. A blob is written to a temporary file, fsync'd, renamed into
//! place and the directory fsync'd, so the metadata that names it is only
//! ever committed after the blob is durable.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

/// File header of an encrypted blob (format version 1).
const MAGIC: &[u8; 4] = b"EMB1";
const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob store I/O on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {0} is malformed or readable by others (must be 32 bytes, mode 0600)")]
    BadKey(PathBuf),
    #[error("blob {0} failed its integrity check (tampered or corrupt)")]
    Integrity(String),
    #[error("blob {0} does not exist")]
    Missing(String),
    #[error("not a blob address: {0:?}")]
    BadAddress(String),
    #[error("no entropy for a nonce")]
    Entropy,
    /// Fetching the blob from a fleet's shared code store failed.
    #[error("fetching the blob from the fleet's code store")]
    Remote(#[source] Box<super::StoreError>),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.to_path_buf(),
        source,
    }
}

use crate::digest::is_hex64 as valid_address;
/// A blob's address: the hex SHA-256 of its plaintext.
pub use crate::digest::sha256_hex;

/// The encrypted, content-addressed blob directory.
pub struct BlobStore {
    dir: PathBuf,
    cipher: Aes256Gcm,
}

impl BlobStore {
    /// Opens `dir` (created if missing), loading or creating the 0600 key file
    /// `key_path`. A key readable by group or others is refused.
    pub fn open(dir: &Path, key_path: &Path) -> Result<Self, BlobError> {
        fs::create_dir_all(dir.join("tmp")).map_err(io(dir))?;
        let key = load_or_create_key(key_path)?;
        let cipher =
            Aes256Gcm::new_from_slice(&key).map_err(|_| BlobError::BadKey(key_path.into()))?;
        // Leftover temporaries are blobs whose write never finished: no
        // metadata can name them, so they are garbage.
        if let Ok(entries) = fs::read_dir(dir.join("tmp")) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            cipher,
        })
    }

    /// Opens `dir` with the operator's existing key file (a fleet: every
    /// host must use the same key, so none is ever created here).
    pub fn open_with_existing_key(dir: &Path, key_path: &Path) -> Result<Self, BlobError> {
        fs::create_dir_all(dir.join("tmp")).map_err(io(dir))?;
        let key = crate::keyfile::load(key_path).map_err(key_error)?;
        let cipher =
            Aes256Gcm::new_from_slice(&key).map_err(|_| BlobError::BadKey(key_path.into()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            cipher,
        })
    }

    fn path_of(&self, hex: &str) -> PathBuf {
        self.dir.join(hex)
    }

    /// Stores `data` durably and returns its address. Idempotent: storing the
    /// same content twice keeps one file. Outside the store, blobs are put
    /// through `Store::put_blob`, which pins them against collection.
    #[cfg(test)]
    pub(super) fn put(&self, data: &[u8]) -> Result<String, BlobError> {
        let hex = sha256_hex(data);
        self.put_as(&hex, data)?;
        Ok(hex)
    }

    /// [`Self::put`] for a blob directory that no garbage collection walks
    /// (the compiled-wasm cache, `crate::aot`, has its own store): nothing
    /// there needs pinning.
    pub fn put_uncollected(&self, data: &[u8]) -> Result<String, BlobError> {
        let hex = sha256_hex(data);
        self.put_as(&hex, data)?;
        Ok(hex)
    }

    /// [`Self::put`] for a caller that has computed `hex = sha256_hex(data)`.
    pub(super) fn put_as(&self, hex: &str, data: &[u8]) -> Result<(), BlobError> {
        let hex = hex.to_string();
        let path = self.path_of(&hex);
        if path.exists() && self.get(&hex).is_ok() {
            return Ok(());
        }
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|_| BlobError::Entropy)?;
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: data,
                    aad: hex.as_bytes(),
                },
            )
            .map_err(|_| BlobError::Integrity(hex.clone()))?;
        write_durably(&self.dir, &path, &[MAGIC, &nonce, &ct])
            .map_err(|(path, source)| BlobError::Io { path, source })?;
        Ok(())
    }

    /// Writes a sealed blob durably at `path` ([`write_durably`]).
    fn write_file(&self, path: &Path, sealed: &[u8]) -> Result<(), BlobError> {
        write_durably(&self.dir, path, &[sealed])
            .map_err(|(path, source)| BlobError::Io { path, source })
    }

    /// The sealed bytes of blob `hex` as stored (what a fleet uploads: code
    /// leaves the host encrypted exactly as it is on disk).
    pub fn sealed(&self, hex: &str) -> Result<Vec<u8>, BlobError> {
        if !valid_address(hex) {
            return Err(BlobError::BadAddress(hex.into()));
        }
        let path = self.path_of(hex);
        match fs::read(&path) {
            Ok(raw) => Ok(raw),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(BlobError::Missing(hex.into()))
            }
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Stores sealed bytes fetched from elsewhere at `hex`, after checking
    /// they open under this host's key to content with that address (a
    /// tampered or foreign blob is refused and never written).
    pub fn put_sealed(&self, hex: &str, sealed: &[u8]) -> Result<Vec<u8>, BlobError> {
        if !valid_address(hex) {
            return Err(BlobError::BadAddress(hex.into()));
        }
        let plain = self.open_sealed(hex, sealed)?;
        self.write_file(&self.path_of(hex), sealed)?;
        Ok(plain)
    }

    /// Loads and decrypts blob `hex`, checking the GCM tag (bound to the
    /// address) and the plaintext's SHA-256.
    pub fn get(&self, hex: &str) -> Result<Vec<u8>, BlobError> {
        if !valid_address(hex) {
            return Err(BlobError::BadAddress(hex.into()));
        }
        let path = self.path_of(hex);
        let mut raw = Vec::new();
        match File::open(&path) {
            Ok(mut f) => f.read_to_end(&mut raw).map_err(io(&path))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BlobError::Missing(hex.into()))
            }
            Err(e) => return Err(io(&path)(e)),
        };
        self.open_sealed(hex, &raw)
    }

    /// Decrypts sealed bytes claimed to be blob `hex`, checking the GCM tag
    /// (bound to the address) and the plaintext's SHA-256.
    fn open_sealed(&self, hex: &str, raw: &[u8]) -> Result<Vec<u8>, BlobError> {
        if raw.len() < MAGIC.len() + NONCE_LEN || &raw[..4] != MAGIC {
            return Err(BlobError::Integrity(hex.into()));
        }
        let (nonce, ct) = raw[4..].split_at(NONCE_LEN);
        let pt = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: hex.as_bytes(),
                },
            )
            .map_err(|_| BlobError::Integrity(hex.into()))?;
        if sha256_hex(&pt) != hex {
            return Err(BlobError::Integrity(hex.into()));
        }
        Ok(pt)
    }

    /// Removes blob `hex` (a missing blob is not an error).
    pub fn remove(&self, hex: &str) -> Result<(), BlobError> {
        if !valid_address(hex) {
            return Err(BlobError::BadAddress(hex.into()));
        }
        match fs::remove_file(self.path_of(hex)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&self.dir)(e)),
            _ => Ok(()),
        }
    }

    /// Whether a blob is stored at `hex` (its content is not checked).
    pub fn exists(&self, hex: &str) -> bool {
        valid_address(hex) && self.path_of(hex).is_file()
    }

    /// Addresses of every stored blob.
    pub fn list(&self) -> Result<Vec<String>, BlobError> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir).map_err(io(&self.dir))?.flatten() {
            if let Some(name) = e.file_name().to_str() {
                if valid_address(name) {
                    out.push(name.to_string());
                }
            }
        }
        Ok(out)
    }

    /// Where blob `hex` lives (tests tamper with it).
    pub fn file_path(&self, hex: &str) -> PathBuf {
        self.path_of(hex)
    }
}

/// Writes `parts` to `path` (in `dir`) durably: a temporary file in
/// `dir/tmp`, fsync'd, renamed into place, the directory fsync'd; a failed
/// write leaves no half-written copy. The error names the file it concerns.
pub fn write_durably(
    dir: &Path,
    path: &Path,
    parts: &[&[u8]],
) -> Result<(), (PathBuf, std::io::Error)> {
    let tmp = dir.join("tmp").join(crate::util::uuid4());
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            for p in parts {
                f.write_all(p)?;
            }
            f.sync_all()
        })
        .map_err(|e| (tmp.clone(), e))
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| (path.to_path_buf(), e)));
    if let Err(e) = written {
        // A full disk must not keep the half-written copy.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| (dir.to_path_buf(), e))
}

/// emberd's shared key-file rules, with the errors blob callers expect.
fn load_or_create_key(path: &Path) -> Result<[u8; 32], BlobError> {
    crate::keyfile::load_or_create(path).map_err(key_error)
}

fn key_error(e: crate::keyfile::KeyFileError) -> BlobError {
    use crate::keyfile::KeyFileError;
    match e {
        KeyFileError::Io { path, source } => BlobError::Io { path, source },
        KeyFileError::Bad(p) => BlobError::BadKey(p),
        KeyFileError::Entropy => BlobError::Entropy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn roundtrip_encrypted_and_tamper_detected() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&dir.path().join("blobs"), &dir.path().join("key")).unwrap();
        let data = b"\0asm\x01\0\0\0 secret code".to_vec();
        let hex = store.put(&data).unwrap();
        assert_eq!(hex, sha256_hex(&data));
        let raw = fs::read(store.file_path(&hex)).unwrap();
        assert!(
            !raw.windows(11).any(|w| w == b"secret code"),
            "plaintext on disk"
        );
        assert_eq!(store.get(&hex).unwrap(), data);
        let mode = fs::metadata(dir.path().join("key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let mut bad = raw.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        fs::write(store.file_path(&hex), &bad).unwrap();
        assert!(matches!(store.get(&hex), Err(BlobError::Integrity(_))));

        // A valid blob copied under another address is also caught (AAD binds the address).
        let other = store.put(b"other").unwrap();
        fs::copy(store.file_path(&other), store.file_path(&hex)).unwrap();
        assert!(matches!(store.get(&hex), Err(BlobError::Integrity(_))));
        assert!(matches!(store.get("../key"), Err(BlobError::BadAddress(_))));
    }

    #[test]
    fn reopen_uses_same_key_and_refuses_open_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        let hex = BlobStore::open(&dir.path().join("b"), &key)
            .unwrap()
            .put(b"x")
            .unwrap();
        assert_eq!(
            BlobStore::open(&dir.path().join("b"), &key)
                .unwrap()
                .get(&hex)
                .unwrap(),
            b"x"
        );
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            BlobStore::open(&dir.path().join("b"), &key),
            Err(BlobError::BadKey(_))
        ));
    }
}
