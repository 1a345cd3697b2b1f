//! The credentials file: `<data>/credentials.json` (0600), the access keys
//! emberd accepts, each belonging to one 12-digit account. emberd only reads
//! it, and re-reads it whenever it changed (a cheap `stat` per request), so
//! `ember creds add|revoke` take effect without a restart; writers take a
//! lock file and replace the file atomically (write, fsync, rename).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::sigv4::Credentials;

/// The file's name inside the data directory.
pub const FILE_NAME: &str = "credentials.json";
/// The account of the first key and of every record stored before tenants.
pub const DEFAULT_ACCOUNT: &str = crate::util::ACCOUNT;

#[derive(Debug, thiserror::Error)]
pub enum CredError {
    #[error("reading {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("writing {0}")]
    Write(PathBuf, #[source] std::io::Error),
    #[error("{0} is not a valid credentials file")]
    Parse(PathBuf, #[source] serde_json::Error),
    #[error("no entropy source for a new key")]
    Random,
    #[error("account id {0:?} must be 12 digits")]
    Account(String),
    #[error("no access key {0:?}")]
    NoSuchKey(String),
}

/// One access key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct AccessKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub account: String,
    pub created: String,
    /// An operator key: its requests see every account in host-wide views
    /// (`/metrics`, `/ember/*` listings). The key emberd creates first is one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub operator: bool,
}

impl AccessKey {
    pub fn credentials(&self) -> Credentials {
        Credentials {
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct FileBody {
    keys: Vec<AccessKey>,
}

/// A 12-digit account id.
pub fn valid_account(a: &str) -> bool {
    a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit())
}

fn random_string(len: usize, alphabet: &[u8]) -> Result<String, CredError> {
    // Bytes at or above the largest multiple of the alphabet's length are
    // skipped, so every character is equally likely.
    let limit = 256 - 256 % alphabet.len();
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::getrandom(&mut buf).map_err(|_| CredError::Random)?;
        for &x in buf.iter().filter(|&&x| usize::from(x) < limit) {
            if out.len() == len {
                break;
            }
            out.push(char::from(alphabet[usize::from(x) % alphabet.len()]));
        }
    }
    Ok(out)
}

/// A fresh key pair for `account`, shaped like AWS's (`AKIA` + 16, 40-char secret).
pub fn new_key(account: &str) -> Result<AccessKey, CredError> {
    if !valid_account(account) {
        return Err(CredError::Account(account.into()));
    }
    const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    Ok(AccessKey {
        access_key_id: format!("AKIA{}", random_string(16, UPPER)?),
        secret_access_key: random_string(40, SECRET)?,
        account: account.into(),
        created: crate::util::now_lambda(),
        operator: false,
    })
}

fn read(path: &Path) -> Result<Option<FileBody>, CredError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(
            serde_json::from_slice(&b).map_err(|e| CredError::Parse(path.into(), e))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CredError::Read(path.into(), e)),
    }
}

/// Writes `body` to `path` atomically with mode 0600.
fn write(path: &Path, body: &FileBody) -> Result<(), CredError> {
    let werr = |e| CredError::Write(path.into(), e);
    let tmp = path.with_extension("json.tmp");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(werr)?;
    // The mode above applies only when the file is new.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(werr)?;
    let json = serde_json::to_vec_pretty(body).map_err(|e| CredError::Parse(path.into(), e))?;
    f.write_all(&json).map_err(werr)?;
    f.sync_all().map_err(werr)?;
    std::fs::rename(&tmp, path).map_err(werr)?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(werr)?;
    }
    Ok(())
}

/// Runs `change` on the file's keys under an exclusive lock and saves them.
fn modify<T>(
    path: &Path,
    change: impl FnOnce(&mut Vec<AccessKey>) -> Result<T, CredError>,
) -> Result<T, CredError> {
    let lock_path = path.with_extension("lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| CredError::Write(lock_path.clone(), e))?;
    // SAFETY: flock on a descriptor we own; it blocks until other writers are
    // done and is released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(CredError::Write(lock_path, std::io::Error::last_os_error()));
    }
    let mut body = read(path)?.unwrap_or_default();
    let out = change(&mut body.keys)?;
    write(path, &body)?;
    Ok(out)
}

/// Creates the file with one operator key of the default account if there
/// is none; returns that key only when it was created now (to be printed
/// once). A file written before operator keys existed gets its first key
/// marked as the operator (once, so revoking it promotes no other key).
pub fn ensure_initial(path: &Path) -> Result<Option<AccessKey>, CredError> {
    // Most starts change nothing: no rewrite (and no audit record) then.
    if read(path)?.is_some_and(|b| b.keys.iter().any(|k| k.operator)) {
        return Ok(None);
    }
    modify(path, |keys| {
        if keys.iter().any(|k| k.operator) {
            return Ok(None);
        }
        if let Some(first) = keys.first_mut() {
            first.operator = true;
            return Ok(None);
        }
        let mut k = new_key(DEFAULT_ACCOUNT)?;
        k.operator = true;
        keys.push(k.clone());
        Ok(Some(k))
    })
}

/// Adds a key for `account` (the default account if none), an operator key
/// if `operator`, and returns it.
pub fn add(path: &Path, account: Option<&str>, operator: bool) -> Result<AccessKey, CredError> {
    let mut k = new_key(account.unwrap_or(DEFAULT_ACCOUNT))?;
    k.operator = operator;
    modify(path, |keys| {
        keys.push(k.clone());
        Ok(k)
    })
}

/// Removes a key; requests signed with it are refused from then on.
pub fn revoke(path: &Path, access_key_id: &str) -> Result<AccessKey, CredError> {
    modify(path, |keys| {
        let i = keys
            .iter()
            .position(|k| k.access_key_id == access_key_id)
            .ok_or_else(|| CredError::NoSuchKey(access_key_id.into()))?;
        Ok(keys.remove(i))
    })
}

/// Every key in the file.
pub fn list(path: &Path) -> Result<Vec<AccessKey>, CredError> {
    Ok(read(path)?.unwrap_or_default().keys)
}

/// What identifies one version of the file: a rewrite renames a new inode
/// over it, so the inode alone would do; size and mtime guard hand edits.
type Stamp = (u64, u64, i64, i64);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// emberd's read side: the keys, reloaded whenever the file changed.
pub struct KeyRing {
    path: PathBuf,
    cache: Mutex<(Option<Stamp>, BTreeMap<String, AccessKey>)>,
}

impl KeyRing {
    pub fn new(path: PathBuf) -> Self {
        KeyRing {
            path,
            cache: Mutex::new((None, BTreeMap::new())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key with this id, if the file (as it is now) holds it. A file
    /// that cannot be read or parsed holds no keys: emberd fails closed.
    pub fn lookup(&self, access_key_id: &str) -> Option<AccessKey> {
        let now = stamp(&self.path);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0 != now || now.is_none() {
            let keys = match read(&self.path) {
                Ok(body) => body.unwrap_or_default().keys,
                Err(e) => {
                    eprintln!("emberd: {}", crate::util::error_chain(&e));
                    Vec::new()
                }
            };
            *cache = (
                now,
                keys.into_iter()
                    .map(|k| (k.access_key_id.clone(), k))
                    .collect(),
            );
        }
        cache.1.get(access_key_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_0600_added_revoked_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let first = ensure_initial(&path).unwrap().expect("created");
        assert!(ensure_initial(&path).unwrap().is_none());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(first.account, DEFAULT_ACCOUNT);
        assert!(first.access_key_id.starts_with("AKIA") && first.access_key_id.len() == 20);
        assert_eq!(first.secret_access_key.len(), 40);

        let ring = KeyRing::new(path.clone());
        assert_eq!(ring.lookup(&first.access_key_id), Some(first.clone()));
        assert!(first.operator, "the first key is the operator");
        let second = add(&path, Some("111111111111"), false).unwrap();
        assert!(!second.operator);
        assert_eq!(
            ring.lookup(&second.access_key_id).unwrap().account,
            "111111111111"
        );
        revoke(&path, &first.access_key_id).unwrap();
        assert_eq!(ring.lookup(&first.access_key_id), None);
        assert!(matches!(
            revoke(&path, &first.access_key_id),
            Err(CredError::NoSuchKey(_))
        ));
        assert!(matches!(
            add(&path, Some("12"), false),
            Err(CredError::Account(_))
        ));
        assert_eq!(list(&path).unwrap(), vec![second]);
    }

    #[test]
    fn unreadable_file_holds_no_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let k = ensure_initial(&path).unwrap().unwrap();
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(KeyRing::new(path).lookup(&k.access_key_id), None);
    }
}
