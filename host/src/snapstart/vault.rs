//! SnapStart snapshots at rest and in use. At rest: one file per version
//! under `<store>/snapshots/`, `EMS1 ‖ nonce ‖ AES-256-GCM(body)` under the
//! store's master key, the tag bound to (function, version, revision) by
//! the associated data, so a snapshot copied onto another version fails its
//! check. The body holds the state file and the memory file's data extents
//! only (the memory file is sparse: a 560 MiB VM with 20 MiB written stores
//! 20 MiB). In use: decrypted once per emberd run into a private tmpfs
//! directory (`/dev/shm/ember-snapstart-<pid>/`, mode 0700), which every
//! restore of that version maps read-only and private; removed when the
//! version is deleted and when emberd stops. Plaintext never reaches disk.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

/// Header of a sealed snapshot (format 1).
const MAGIC: &[u8; 4] = b"EMS1";
const NONCE_LEN: usize = 12;
/// The body's own magic, inside the encryption.
const BODY_MAGIC: &[u8; 8] = b"EMBSNAP1";
/// Largest state file ember-vmm writes or reads (its load reads ≤ 4 MiB).
const MAX_STATE: u64 = 4 << 20;
/// Largest guest memory a snapshot may describe (ember-vmm's kernel-less cap).
const MAX_MEM: u64 = 3 << 30;
/// At most this many extents (a pathological file is refused, not parsed).
const MAX_EXTENTS: u64 = 1 << 20;

/// Which version a snapshot belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SnapKey {
    pub function: String,
    pub version: String,
    /// The version's revision id (unique per publish).
    pub revision: String,
}

impl SnapKey {
    /// File name: hex SHA-256 of the function and version (revisions of one
    /// version replace each other).
    fn file_name(&self) -> String {
        crate::digest::sha256_hex(format!("{}\0{}", self.function, self.version).as_bytes())
    }

    /// The GCM associated data: the tag holds only for this exact version.
    fn aad(&self) -> Vec<u8> {
        format!(
            "ember-snapstart\0{}\0{}\0{}",
            self.function, self.version, self.revision
        )
        .into_bytes()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("snapshot I/O on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file")]
    Key(#[source] crate::keyfile::KeyFileError),
    #[error("no snapshot stored for {0}:{1}")]
    Missing(String, String),
    #[error(
        "snapshot of {0}:{1} failed its integrity check (tampered, corrupt or another version's)"
    )]
    Integrity(String, String),
    #[error("snapshot of {function}:{version} is malformed: {why}")]
    Malformed {
        function: String,
        version: String,
        why: &'static str,
    },
    #[error("snapshot files are too large ({0} bytes)")]
    TooLarge(u64),
    #[error("no entropy for a nonce")]
    Entropy,
}

impl VaultError {
    /// Whether the stored snapshot itself is bad (an integrity failure to
    /// log as such), not a missing file or the host's I/O.
    pub fn is_integrity(&self) -> bool {
        matches!(
            self,
            VaultError::Integrity(..) | VaultError::Malformed { .. }
        )
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VaultError + '_ {
    move |source| VaultError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A decrypted snapshot in tmpfs: the files a restore loads. Shared by every
/// restore of its version (the memory file is mapped private: guest writes
/// never reach it).
#[derive(Debug)]
pub struct Plain {
    pub state: PathBuf,
    pub mem: PathBuf,
    /// Guest memory size in MiB (the memory file's size).
    pub mem_mib: u32,
}

/// The sealed snapshots and their decrypted copies.
pub struct Vault {
    dir: PathBuf,
    plain_root: PathBuf,
    cipher: Aes256Gcm,
    plain: Mutex<HashMap<SnapKey, Arc<Plain>>>,
}

impl Vault {
    /// Opens `<store_dir>/snapshots` with the store's key file; decrypted
    /// copies go under `plain_root` (a tmpfs directory this emberd owns; it
    /// is emptied now and removed by [`Vault::close`]).
    pub fn open(store_dir: &Path, plain_root: &Path) -> Result<Self, VaultError> {
        let dir = store_dir.join("snapshots");
        fs::create_dir_all(dir.join("tmp")).map_err(io(&dir))?;
        let key = crate::keyfile::load_or_create(&store_dir.join("master.key"))
            .map_err(VaultError::Key)?;
        let cipher = Aes256Gcm::new_from_slice(&key).map_err(|_| VaultError::Entropy)?;
        let _ = fs::remove_dir_all(plain_root);
        fs::create_dir_all(plain_root).map_err(io(plain_root))?;
        fs::set_permissions(plain_root, fs::Permissions::from_mode(0o700))
            .map_err(io(plain_root))?;
        Ok(Vault {
            dir,
            plain_root: plain_root.to_path_buf(),
            cipher,
            plain: Mutex::new(HashMap::new()),
        })
    }

    /// Where this emberd keeps decrypted snapshots (tmpfs); snapshots are
    /// also taken there, so their plaintext never touches a disk.
    pub fn plain_root(&self) -> &Path {
        &self.plain_root
    }

    /// The sealed file of `key` (tests tamper with it).
    pub fn sealed_path(&self, key: &SnapKey) -> PathBuf {
        self.dir.join(key.file_name())
    }

    /// Encrypts the state file and the memory file's data into the sealed
    /// file of `key`, durably (temporary file, fsync, rename, fsync dir).
    pub fn seal(&self, key: &SnapKey, state: &Path, mem: &Path) -> Result<(), VaultError> {
        let body = body(state, mem)?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|_| VaultError::Entropy)?;
        let aad = key.aad();
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &body,
                    aad: &aad,
                },
            )
            .map_err(|_| VaultError::Integrity(key.function.clone(), key.version.clone()))?;
        drop(body);
        crate::store::blob::write_durably(&self.dir, &self.sealed_path(key), &[MAGIC, &nonce, &ct])
            .map_err(|(path, source)| VaultError::Io { path, source })?;
        self.forget_plain(key);
        Ok(())
    }

    /// The decrypted snapshot of `key`: from this run's tmpfs copy, or
    /// decrypted and checked now (GCM tag bound to the version, then every
    /// length and extent bounded) and written to tmpfs.
    pub fn open_plain(&self, key: &SnapKey) -> Result<Arc<Plain>, VaultError> {
        if let Some(p) = self.lock().get(key) {
            return Ok(p.clone());
        }
        let path = self.sealed_path(key);
        let mut raw = Vec::new();
        match File::open(&path) {
            Ok(mut f) => f.read_to_end(&mut raw).map_err(io(&path))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(VaultError::Missing(
                    key.function.clone(),
                    key.version.clone(),
                ))
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let bad = || VaultError::Integrity(key.function.clone(), key.version.clone());
        if raw.len() < MAGIC.len() + NONCE_LEN || &raw[..4] != MAGIC {
            return Err(bad());
        }
        let (nonce, ct) = raw[4..].split_at(NONCE_LEN);
        let aad = key.aad();
        let body = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| bad())?;
        drop(raw);
        let dir = self
            .plain_root
            .join(format!("{}-{}", key.file_name(), crate::util::uuid4()));
        let plain = write_plain(&body, &dir).map_err(|e| match e {
            Unpack::Malformed(why) => VaultError::Malformed {
                function: key.function.clone(),
                version: key.version.clone(),
                why,
            },
            Unpack::Io(e) => io(&dir)(e),
        });
        let plain = match plain {
            Ok(p) => Arc::new(p),
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        // Two first restores may race: keep the first copy, drop ours.
        let mut map = self.lock();
        if let Some(p) = map.get(key) {
            let _ = fs::remove_dir_all(&dir);
            return Ok(p.clone());
        }
        map.insert(key.clone(), plain.clone());
        Ok(plain)
    }

    /// Deletes the sealed snapshot and the decrypted copy of
    /// `function:version`.
    pub fn remove(&self, function: &str, version: &str) {
        let k = SnapKey {
            function: function.into(),
            version: version.into(),
            revision: String::new(),
        };
        self.forget_plain(&k);
        let _ = fs::remove_file(self.sealed_path(&k));
    }

    /// Whether any sealed snapshot exists (SnapStart is in use here).
    pub fn any(&self) -> bool {
        fs::read_dir(&self.dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_type().is_ok_and(|t| t.is_file()))
        })
    }

    /// Whether a sealed snapshot exists for `function:version`.
    pub fn has(&self, function: &str, version: &str) -> bool {
        let k = SnapKey {
            function: function.into(),
            version: version.into(),
            revision: String::new(),
        };
        self.sealed_path(&k).is_file()
    }

    fn forget_plain(&self, key: &SnapKey) {
        let old = self
            .lock()
            .iter()
            .filter(|(k, _)| k.function == key.function && k.version == key.version)
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>();
        let mut map = self.lock();
        for k in old {
            if let Some(p) = map.remove(&k) {
                if let Some(d) = p.state.parent() {
                    let _ = fs::remove_dir_all(d);
                }
            }
        }
    }

    /// Removes every decrypted copy (emberd is stopping).
    pub fn close(&self) {
        self.lock().clear();
        let _ = fs::remove_dir_all(&self.plain_root);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SnapKey, Arc<Plain>>> {
        self.plain
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Removes decrypted-snapshot directories (`ember-ss-<pid>` under `base`)
/// whose emberd is gone (it crashed before removing them).
pub fn sweep_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("ember-ss-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// The body: magic, state length, memory size, extent count, (offset,
/// length) per extent, the state bytes, then each extent's bytes.
fn body(state: &Path, mem: &Path) -> Result<Vec<u8>, VaultError> {
    let (mut sf, state_len) = open_regular(state)?;
    if state_len > MAX_STATE {
        return Err(VaultError::TooLarge(state_len));
    }
    let mut state_bytes = Vec::with_capacity(state_len as usize);
    (&mut sf)
        .take(MAX_STATE + 1)
        .read_to_end(&mut state_bytes)
        .map_err(io(state))?;
    if state_bytes.len() as u64 > MAX_STATE {
        return Err(VaultError::TooLarge(state_bytes.len() as u64));
    }
    let (f, size) = open_regular(mem)?;
    if size > MAX_MEM {
        return Err(VaultError::TooLarge(size));
    }
    let extents = data_extents(&f, size).map_err(io(mem))?;
    let data: u64 = extents.iter().map(|e| e.1).sum();
    let mut out = Vec::with_capacity(
        BODY_MAGIC.len() + 24 + extents.len() * 16 + state_bytes.len() + data as usize,
    );
    out.extend_from_slice(BODY_MAGIC);
    out.extend_from_slice(&(state_bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&(extents.len() as u64).to_le_bytes());
    for (off, len) in &extents {
        out.extend_from_slice(&off.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
    }
    out.extend_from_slice(&state_bytes);
    for (off, len) in &extents {
        let start = out.len();
        out.resize(start + *len as usize, 0);
        f.read_exact_at(&mut out[start..], *off).map_err(io(mem))?;
    }
    Ok(out)
}

/// Opens a file the VMM wrote, never following a link it may have put
/// there (O_NOFOLLOW), and only if it is a regular file; with its size.
fn open_regular(path: &Path) -> Result<(File, u64), VaultError> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(io(path))?;
    let meta = f.metadata().map_err(io(path))?;
    if !meta.is_file() {
        return Err(io(path)(std::io::Error::from(
            std::io::ErrorKind::InvalidInput,
        )));
    }
    Ok((f, meta.len()))
}

/// The (offset, length) runs of `f` that hold data (SEEK_DATA/SEEK_HOLE;
/// the whole file on file systems without them).
fn data_extents(f: &File, size: u64) -> std::io::Result<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: u64 = 0;
    while pos < size {
        // SAFETY: lseek on a file descriptor we own; no memory is passed.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // no data past pos
            }
            if e.raw_os_error() == Some(libc::EINVAL) {
                return Ok(vec![(0, size)]);
            }
            return Err(e);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let (d, h) = (data as u64, (hole as u64).min(size));
        if h > d {
            out.push((d, h - d));
        }
        pos = h.max(d + 1);
    }
    Ok(out)
}

enum Unpack {
    Malformed(&'static str),
    Io(std::io::Error),
}

impl From<std::io::Error> for Unpack {
    fn from(e: std::io::Error) -> Self {
        Unpack::Io(e)
    }
}

fn take_u64(b: &[u8], at: &mut usize) -> Result<u64, Unpack> {
    let s = b
        .get(*at..*at + 8)
        .ok_or(Unpack::Malformed("truncated header"))?;
    *at += 8;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}

/// Writes the body's state and memory files into `dir` (a new tmpfs
/// directory), checking every length against the body and the limits.
fn write_plain(b: &[u8], dir: &Path) -> Result<Plain, Unpack> {
    if b.get(..8) != Some(BODY_MAGIC.as_slice()) {
        return Err(Unpack::Malformed("bad body magic"));
    }
    let mut at = 8;
    let state_len = take_u64(b, &mut at)?;
    let size = take_u64(b, &mut at)?;
    let n = take_u64(b, &mut at)?;
    if state_len > MAX_STATE || size > MAX_MEM || n > MAX_EXTENTS || size % (1 << 20) != 0 {
        return Err(Unpack::Malformed("a length is out of range"));
    }
    let mut extents = Vec::with_capacity(n as usize);
    let mut end_prev = 0u64;
    for _ in 0..n {
        let off = take_u64(b, &mut at)?;
        let len = take_u64(b, &mut at)?;
        let end = off
            .checked_add(len)
            .ok_or(Unpack::Malformed("extent overflows"))?;
        if off < end_prev || end > size {
            return Err(Unpack::Malformed("extents out of order or past the end"));
        }
        end_prev = end;
        extents.push((off, len));
    }
    let state = b
        .get(at..at + state_len as usize)
        .ok_or(Unpack::Malformed("truncated state"))?;
    at += state_len as usize;
    fs::create_dir(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    let state_path = dir.join("state");
    let mem_path = dir.join("mem");
    // Readable by the jailed VMM's uid (the jailer binds them read-only);
    // the 0700 root above keeps every other host user out.
    let open = |p: &Path| {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(p)
    };
    open(&state_path)?.write_all(state)?;
    let mem = open(&mem_path)?;
    mem.set_len(size)?;
    for (off, len) in extents {
        let data = b
            .get(at..at + len as usize)
            .ok_or(Unpack::Malformed("truncated memory data"))?;
        at += len as usize;
        mem.write_all_at(data, off)?;
    }
    if at != b.len() {
        return Err(Unpack::Malformed("trailing bytes"));
    }
    Ok(Plain {
        state: state_path,
        mem: mem_path,
        mem_mib: (size >> 20) as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(v: &str) -> SnapKey {
        SnapKey {
            function: "f".into(),
            version: v.into(),
            revision: "r1".into(),
        }
    }

    /// Seal, open, compare; a flipped bit or another version's key is an
    /// integrity error, never a decrypted snapshot.
    #[test]
    fn sealed_snapshots_round_trip_and_refuse_tampering() {
        let root = std::env::temp_dir().join(format!("ember-vault-{}", crate::util::uuid4()));
        let store = root.join("store");
        fs::create_dir_all(&store).unwrap();
        let v = Vault::open(&store, &root.join("plain")).unwrap();
        let src = root.join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("state"), b"STATE").unwrap();
        let mem = File::create(src.join("mem")).unwrap();
        mem.set_len(4 << 20).unwrap();
        mem.write_all_at(b"page one", 4096).unwrap();
        mem.write_all_at(b"page two", 3 << 20).unwrap();
        drop(mem);
        v.seal(&key("1"), &src.join("state"), &src.join("mem"))
            .unwrap();
        let p = v.open_plain(&key("1")).unwrap();
        assert_eq!(fs::read(&p.state).unwrap(), b"STATE");
        assert_eq!(
            fs::read(&p.mem).unwrap(),
            fs::read(src.join("mem")).unwrap()
        );
        assert_eq!(p.mem_mib, 4);
        // Another revision's key: the tag does not hold.
        let mut other = key("1");
        other.revision = "r2".into();
        assert!(v.open_plain(&other).unwrap_err().is_integrity());
        // One flipped bit in the stored file.
        v.close();
        let v = Vault::open(&store, &root.join("plain")).unwrap();
        let path = v.sealed_path(&key("1"));
        let mut raw = fs::read(&path).unwrap();
        let i = raw.len() / 2;
        raw[i] ^= 1;
        fs::write(&path, raw).unwrap();
        assert!(v.open_plain(&key("1")).unwrap_err().is_integrity());
        v.remove("f", "1");
        assert!(matches!(
            v.open_plain(&key("1")),
            Err(VaultError::Missing(..))
        ));
        v.close();
        let _ = fs::remove_dir_all(&root);
    }
}
