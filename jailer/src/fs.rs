//! The jail directory on the host: `<base>/<id>/root` with `/dev/kvm` (and
//! `/dev/net/tun` when asked), empty placeholders where the child bind-mounts
//! the VMM binary and the images, and the VM's writable directories. Only
//! root can write to the jail outside those directories.

use std::ffi::CString;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{chown, fchown, DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{JailConfig, JAILED_EXEC};

/// Why the jail directory could not be built.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("jail {0} is in use by a running jailer")]
    InUse(PathBuf),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0} is not a regular file")]
    NotFile(PathBuf),
    #[error("{0} is a symlink: the jailer takes only real files (it would chown or mount what the link names)")]
    Symlink(PathBuf),
    #[error("{0} is not readable by the VM's uid {1}: make it world-readable or pass --file-rw")]
    NotReadable(PathBuf, u32),
    #[error(transparent)]
    Elf(#[from] super::elf::ElfError),
    #[error("{0} is not a directory")]
    NotDir(PathBuf),
    #[error("path {0} contains a NUL byte")]
    Nul(PathBuf),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FsError + 'a {
    move |source| FsError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// One bind mount the child performs: host source → path under the jail root.
#[derive(Clone, Debug)]
pub struct BindMount {
    pub src: CString,
    pub target: CString,
    pub writable: bool,
    /// Mapped executable: the VMM binary, its loader and libraries.
    pub exec: bool,
    /// (st_dev, st_ino) of the image the jailer checked: the child mounts
    /// the source only if, opened without following symlinks, it is still
    /// that file (a path swapped for a link after the checks is refused).
    pub ident: Option<(u64, u64)>,
}

/// Checks that `src` is a directory itself, not a symlink to one.
fn real_dir(src: &Path) -> Result<(), FsError> {
    let meta = fs::symlink_metadata(src).map_err(io_err("cannot stat", src))?;
    if meta.file_type().is_symlink() {
        return Err(FsError::Symlink(src.to_path_buf()));
    }
    if !meta.is_dir() {
        return Err(FsError::NotDir(src.to_path_buf()));
    }
    Ok(())
}

/// A built jail directory.
#[derive(Debug)]
pub struct Jail {
    /// `<base>/<id>`: the jail root's parent, holding the jailer's pid.
    pub dir: PathBuf,
    /// `<base>/<id>/root`: becomes `/` for the VMM.
    pub root_c: CString,
    /// In order: the VMM binary first, then the images.
    pub binds: Vec<BindMount>,
}

fn cstr(p: &Path) -> Result<CString, FsError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| FsError::Nul(p.to_path_buf()))
}

fn mkdir(path: &Path, mode: u32) -> Result<(), FsError> {
    match DirBuilder::new().mode(mode).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err("cannot create directory", path)(e)),
    }
}

/// Creates `root/rel`'s missing parent directories (root-owned, 0755).
fn mkdirs_under(root: &Path, rel: &Path) -> Result<PathBuf, FsError> {
    let mut cur = root.to_path_buf();
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    let parts: Vec<_> = rel.components().collect();
    for c in parts.iter().take(parts.len().saturating_sub(1)) {
        cur.push(c);
        mkdir(&cur, 0o755)?;
    }
    Ok(root.join(rel))
}

/// An empty root-owned file a bind mount will cover.
fn placeholder(path: &Path) -> Result<(), FsError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o444)
        .open(path)
        .map(drop)
        .map_err(io_err("cannot create mount point", path))
}

/// Creates a character device node like the host's `host_dev`, owned by uid.
fn device_node(host_dev: &str, path: &Path, uid: u32, gid: u32) -> Result<(), FsError> {
    let meta = fs::metadata(host_dev).map_err(io_err("cannot stat", Path::new(host_dev)))?;
    let c = cstr(path)?;
    // SAFETY: c is a valid NUL-terminated path; mknod does not retain it.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, meta.rdev()) };
    if rc != 0 {
        return Err(io_err("cannot create device node", path)(
            io::Error::last_os_error(),
        ));
    }
    chown(path, Some(uid), Some(gid)).map_err(io_err("cannot chown", path))
}

/// Opens an image given by `--file`/`--file-rw` without following a
/// symlink in its last component (O_NOFOLLOW; O_NONBLOCK so a FIFO planted
/// there cannot block the jailer), and checks it is a regular file.
fn open_image(path: &Path) -> Result<(fs::File, fs::Metadata), FsError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                FsError::Symlink(path.to_path_buf())
            } else {
                io_err("cannot open", path)(e)
            }
        })?;
    let meta = file.metadata().map_err(io_err("cannot stat", path))?;
    if !meta.is_file() {
        return Err(FsError::NotFile(path.to_path_buf()));
    }
    Ok((file, meta))
}

/// Could `uid`/`gid` (no capabilities, no supplementary groups) read this file?
fn readable_by(meta: &fs::Metadata, uid: u32, gid: u32) -> bool {
    let mode = meta.mode();
    (meta.uid() == uid && mode & 0o400 != 0)
        || (meta.gid() == gid && mode & 0o040 != 0)
        || mode & 0o004 != 0
}

/// Gives a per-VM host directory (and what is in it, e.g. the host's vsock
/// listener socket, which the VM must be able to connect to) to the VM's uid.
fn chown_dir_and_entries(dir: &Path, uid: u32, gid: u32) -> Result<(), FsError> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid)).map_err(io_err("cannot chown", dir))?;
    for entry in fs::read_dir(dir).map_err(io_err("cannot list", dir))? {
        let path = entry.map_err(io_err("cannot list", dir))?.path();
        // lchown: a symlink planted there must not redirect the chown.
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
            .map_err(io_err("cannot chown", &path))?;
    }
    Ok(())
}

/// Names of jails under `base` whose jailer is gone, after removing their
/// directories (their VMs died with their jailer: PR_SET_PDEATHSIG).
pub fn stale_jails(base: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(base) else {
        return Vec::new();
    };
    let mut stale = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !e.path().is_dir() {
            continue;
        }
        if !super::ids::holder_alive(&e.path().join("jailer.pid"))
            && fs::remove_dir_all(e.path()).is_ok()
        {
            stale.push(name);
        }
    }
    stale
}

impl Jail {
    /// Builds `<base>/<id>/root` for `cfg`; a stale jail of a dead jailer with
    /// the same id is replaced, a live one is an error. On any failure after
    /// `<base>/<id>` was made, it is removed again (with its `/dev/kvm` node
    /// owned by the uid the failed jailer is about to release).
    pub fn create(cfg: &JailConfig, uid: u32, gid: u32) -> Result<Self, FsError> {
        fs::create_dir_all(&cfg.chroot_base).map_err(io_err("cannot create", &cfg.chroot_base))?;
        let dir = cfg.chroot_base.join(&cfg.id);
        let owner = dir.join("jailer.pid");
        if dir.exists() {
            if super::ids::holder_alive(&owner) {
                return Err(FsError::InUse(dir));
            }
            fs::remove_dir_all(&dir).map_err(io_err("cannot remove stale jail", &dir))?;
        }
        DirBuilder::new()
            .mode(0o711)
            .create(&dir)
            .map_err(io_err("cannot create jail", &dir))?;
        Self::build(cfg, dir.clone(), uid, gid).inspect_err(|_| {
            if let Err(e) = fs::remove_dir_all(&dir) {
                eprintln!("ember-jailer: cannot remove {}: {e}", dir.display());
            }
        })
    }

    /// Fills the fresh jail directory `dir`.
    fn build(cfg: &JailConfig, dir: PathBuf, uid: u32, gid: u32) -> Result<Self, FsError> {
        let owner = dir.join("jailer.pid");
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        fs::write(&owner, pid.to_string()).map_err(io_err("cannot write", &owner))?;
        let root = dir.join("root");
        mkdir(&root, 0o755)?;
        let dev = root.join("dev");
        mkdir(&dev, 0o755)?;
        device_node("/dev/kvm", &dev.join("kvm"), uid, gid)?;
        if cfg.tun {
            mkdir(&dev.join("net"), 0o755)?;
            device_node("/dev/net/tun", &dev.join("net/tun"), uid, gid)?;
        }

        let mut binds = Vec::with_capacity(cfg.files.len() + 1);
        let exec_meta =
            fs::metadata(&cfg.exec_file).map_err(io_err("cannot stat", &cfg.exec_file))?;
        if !exec_meta.is_file() {
            return Err(FsError::NotFile(cfg.exec_file.clone()));
        }
        let target = mkdirs_under(&root, Path::new(JAILED_EXEC))?;
        placeholder(&target)?;
        binds.push(BindMount {
            src: cstr(&cfg.exec_file)?,
            target: cstr(&target)?,
            writable: false,
            exec: true,
            ident: None,
        });
        // A dynamically linked VMM also needs its loader and libraries.
        for dep in super::elf::runtime_deps(&cfg.exec_file)? {
            let real = fs::canonicalize(&dep).map_err(io_err("cannot resolve", &dep))?;
            let target = mkdirs_under(&root, &dep)?;
            placeholder(&target)?;
            binds.push(BindMount {
                src: cstr(&real)?,
                target: cstr(&target)?,
                writable: false,
                exec: true,
                ident: None,
            });
        }
        for f in &cfg.files {
            let (file, meta) = open_image(&f.src)?;
            if f.writable {
                // A writable image is the VM's own (e.g. its /tmp disk).
                // fchown: the file just opened, never what a link names.
                fchown(&file, Some(uid), Some(gid)).map_err(io_err("cannot chown", &f.src))?;
            } else if !readable_by(&meta, uid, gid) {
                return Err(FsError::NotReadable(f.src.clone(), uid));
            }
            let target = mkdirs_under(&root, &f.dst)?;
            placeholder(&target)?;
            binds.push(BindMount {
                src: cstr(&f.src)?,
                target: cstr(&target)?,
                writable: f.writable,
                exec: false,
                ident: Some((meta.dev(), meta.ino())),
            });
            drop(file);
        }
        for (src, dst) in &cfg.bind_dirs {
            real_dir(src)?;
            chown_dir_and_entries(src, uid, gid)?;
            let target = mkdirs_under(&root, dst)?;
            mkdir(&target, 0o755)?;
            binds.push(BindMount {
                src: cstr(src)?,
                target: cstr(&target)?,
                writable: true,
                exec: false,
                ident: None,
            });
        }
        for (src, dst) in &cfg.ro_dirs {
            real_dir(src)?;
            let target = mkdirs_under(&root, dst)?;
            mkdir(&target, 0o755)?;
            binds.push(BindMount {
                src: cstr(src)?,
                target: cstr(&target)?,
                writable: false,
                exec: false,
                ident: None,
            });
        }
        for d in &cfg.rw_dirs {
            let path = mkdirs_under(&root, d)?;
            mkdir(&path, 0o700)?;
            chown(&path, Some(uid), Some(gid)).map_err(io_err("cannot chown", &path))?;
        }
        let root_c = cstr(&root)?;
        Ok(Self { dir, root_c, binds })
    }

    /// Removes the jail directory (sockets and logs the VM left included).
    /// `remove_dir_all` does not follow symlinks the VM may have planted.
    pub fn remove(&self, keep: bool) {
        if keep {
            return;
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("ember-jailer: cannot remove {}: {e}", self.dir.display());
        }
    }
}
