//! emberd's 32-byte secret key files (the store's encryption key, the audit
//! trail's HMAC key): created at first start, atomically (a whole 0600 key
//! or none: written to a temp file beside it, fsync'd, linked into place,
//! directory fsync'd), refused later if anyone but the owner can read them.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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
///
/// Creation cannot leave a short key at `path` (a crash between creating and
/// writing it made emberd refuse to start for good): the key is written to
/// `<name>.tmp.<pid>.<n>` beside it (mode 0600 from its creation), fsync'd, and
/// hard-linked to `path`, which fails if the name exists (a concurrent
/// creator won: its key is loaded); then the directory is fsync'd. Temp
/// files a crashed creator left (their pid is gone) are removed first.
pub fn load_or_create(path: &Path) -> Result<[u8; 32], KeyFileError> {
    remove_stale_temps(path);
    match load(path) {
        Err(KeyFileError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {}
        other => return other,
    }
    let mut key = [0u8; 32];
    getrandom::getrandom(&mut key).map_err(|_| KeyFileError::Entropy)?;
    let tmp = temp_path(path, std::process::id());
    let linked = write_synced(&tmp, &key).and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return load(path),
        Err(e) => return Err(io(path)(e)),
    }
    let dir = parent(path);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(key)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `<dir>/<name>.tmp.<pid>.<n>`: where process `pid` writes a new key for
/// `path` (`n` tells its threads apart).
fn temp_path(path: &Path, pid: u32) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{pid}.{n}"));
    parent(path).join(name)
}

/// Creates `tmp` (0600, never through a link), writes `key`, fsyncs it.
fn write_synced(tmp: &Path, key: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)?;
    f.write_all(key)?;
    f.sync_all()
}

/// Removes the temp files of `path` whose writer is gone (best effort: one
/// left in place only delays nothing, the key's name is never a temp's).
fn remove_stale_temps(path: &Path) {
    let (Some(name), Ok(entries)) = (
        path.file_name().and_then(|n| n.to_str()),
        fs::read_dir(parent(path)),
    ) else {
        return;
    };
    let prefix = format!("{name}.tmp.");
    for entry in entries.flatten() {
        let pid = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|rest| rest.split('.').next())
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| p > 0 && !alive(p)) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that `pid` exists; nothing is sent.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};

    const CRASH_PATH: &str = "EMBER_KEYFILE_CRASH_PATH";

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Not a test of its own: the child process of
    /// `a_crash_while_writing_a_new_key_leaves_no_short_key`. Its file-size
    /// limit (16 bytes) kills it with SIGXFSZ halfway through writing the key.
    #[test]
    fn crash_child() {
        let Some(path) = std::env::var_os(CRASH_PATH) else {
            return;
        };
        let fsize = libc::rlimit {
            rlim_cur: 16,
            rlim_max: 16,
        };
        let core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: setrlimit reads the structs we pass; it limits only this
        // process (no core file, files cut at 16 bytes).
        unsafe {
            libc::setrlimit(libc::RLIMIT_CORE, &core);
            libc::setrlimit(libc::RLIMIT_FSIZE, &fsize);
        }
        let _ = load_or_create(Path::new(&path));
        std::process::exit(3);
    }

    #[test]
    fn a_crash_while_writing_a_new_key_leaves_no_short_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let st = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "keyfile::tests::crash_child", "--test-threads=1"])
            .env(CRASH_PATH, &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(
            st.signal(),
            Some(libc::SIGXFSZ),
            "the child was to die halfway through writing the key: {st:?}"
        );
        // emberd's next start: a whole new key (the crash left at most a
        // short temp file, which is removed), 0600, the same at every start.
        let key = load_or_create(&path).expect("a crash mid-write must not keep emberd down");
        assert_eq!(fs::read(&path).unwrap(), key);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(entries(dir.path()), ["master.key"]);
        assert_eq!(load_or_create(&path).unwrap(), key);
    }

    #[test]
    fn stale_temp_files_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        let mut gone = Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        let stale = dir.path().join(format!("audit.key.tmp.{}.0", gone.id()));
        let live = dir.path().join("audit.key.tmp.1.0"); // pid 1 is alive
        let other = dir.path().join("other.key.tmp.999999.0");
        for p in [&stale, &live, &other] {
            fs::write(p, b"short").unwrap();
        }
        let key = load_or_create(&path).unwrap();
        assert_eq!(
            entries(dir.path()),
            ["audit.key", "audit.key.tmp.1.0", "other.key.tmp.999999.0"]
        );
        // A stale temp beside a whole key (a crash after the link) goes too.
        fs::write(&stale, b"x").unwrap();
        assert_eq!(load_or_create(&path).unwrap(), key);
        assert!(!stale.exists());
    }

    #[test]
    fn concurrent_creators_all_get_the_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let keys: Vec<[u8; 32]> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load_or_create(&path).unwrap()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.iter().all(|k| *k == keys[0]));
        assert_eq!(fs::read(&path).unwrap(), keys[0]);
        assert_eq!(entries(dir.path()), ["master.key"]);
    }

    #[test]
    fn a_short_or_open_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        fs::write(&path, [0u8; 31]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(load_or_create(&path), Err(KeyFileError::Bad(_))));
        fs::write(&path, [0u8; 32]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(load(&path), Err(KeyFileError::Bad(_))));
    }
}
