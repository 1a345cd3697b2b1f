//! The file system a wasm function sees: read-only trees from ZIP archives
//! (`/var/runtime`, `/var/task`, `/opt`, several archives at one mount
//! merged in order) and a writable in-memory `/tmp` capped by
//! `EphemeralStorage`, each a WASI preopened directory (fds 3, 4, ... in
//! mount order), plus the table of files the function opened. Pure logic:
//! `wasi_fs` moves bytes between these calls and linear memory. Every path
//! is relative to a directory fd and checked by [`tree::Tree::walk`].

pub mod tree;
pub mod zip;

use alloc::string::String;
use alloc::vec::Vec;

use tree::{Data, MountError, Node, Tree};

/// Why a file operation failed; [`FsError::errno`] is its WASI errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FsError {
    #[error("bad file descriptor")]
    BadF,
    #[error("no such file or directory")]
    NoEnt,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("file exists")]
    Exist,
    #[error("directory not empty")]
    NotEmpty,
    #[error("read-only file system")]
    ReadOnly,
    #[error("no space left (EphemeralStorage)")]
    NoSpace,
    #[error("invalid argument")]
    Inval,
    #[error("path escapes its preopened directory")]
    NotCapable,
    #[error("symbolic links are not followed")]
    Loop,
    #[error("name too long")]
    NameTooLong,
    #[error("not permitted")]
    Perm,
    #[error("I/O error (corrupt archive member)")]
    Io,
    #[error("too many open files")]
    MFile,
    #[error("file too large")]
    FBig,
    #[error("cross-device link")]
    XDev,
}

impl FsError {
    /// The WASI errno (wasi/api.h).
    pub fn errno(self) -> i32 {
        match self {
            FsError::BadF => 8,
            FsError::NoEnt => 44,
            FsError::NotDir => 54,
            FsError::IsDir => 31,
            FsError::Exist => 20,
            FsError::NotEmpty => 55,
            FsError::ReadOnly => 69,
            FsError::NoSpace => 51,
            FsError::Inval => 28,
            FsError::NotCapable => 76,
            FsError::Loop => 32,
            FsError::NameTooLong => 37,
            FsError::Perm => 63,
            FsError::Io => 29,
            FsError::MFile => 33,
            FsError::FBig => 22,
            FsError::XDev => 75,
        }
    }
}

/// WASI file types.
pub mod filetype {
    pub const DIRECTORY: u8 = 3;
    pub const REGULAR: u8 = 4;
    pub const SYMLINK: u8 = 7;
}

/// Most files a function may hold open at once.
pub const MAX_OPEN: usize = 1024;
/// The first fd after stdin, stdout and stderr: the first preopen.
pub const FIRST_FD: u32 = 3;

/// A mounted tree.
#[derive(Debug)]
struct Mount {
    path: String,
    tree: Tree,
}

/// An open file or directory.
#[derive(Debug)]
struct Open {
    mount: usize,
    /// The node's ancestry in its tree, root first, itself last.
    stack: Vec<usize>,
    pos: u64,
    read: bool,
    write: bool,
    append: bool,
    /// A deflated archive member, inflated at open.
    inflated: Option<Vec<u8>>,
}

impl Open {
    fn node(&self) -> usize {
        self.stack.last().copied().unwrap_or(0)
    }
}

/// How a file is opened (`path_open`'s flags, decoded).
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenFlags {
    pub create: bool,
    pub directory: bool,
    pub exclusive: bool,
    pub truncate: bool,
    pub read: bool,
    pub write: bool,
    pub append: bool,
}

/// What `fd_filestat_get`/`path_filestat_get` report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub filetype: u8,
    pub size: u64,
}

/// One `fd_readdir` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub ino: u64,
    pub filetype: u8,
}

/// The function's file system: mounts (preopens) and open files.
#[derive(Debug, Default)]
pub struct Files {
    archives: Vec<Vec<u8>>,
    mounts: Vec<Mount>,
    /// fd - FIRST_FD - mounts.len() → open file.
    open: Vec<Option<Open>>,
}

impl Files {
    /// Mounts `trees` (mount path, ZIP archive; archives at one path merge
    /// in order) read-only, then a writable `/tmp` of `tmp_bytes` if non-zero.
    pub fn new(trees: Vec<(String, Vec<u8>)>, tmp_bytes: usize) -> Result<Files, MountError> {
        let mut files = Files::default();
        for (path, archive) in trees {
            let path = normalize_mount(&path).ok_or(MountError::Escapes(path.clone()))?;
            let m = match files.mounts.iter().position(|m| m.path == path) {
                Some(m) => m,
                None => {
                    files.mounts.push(Mount {
                        path,
                        tree: Tree::new(false, 0),
                    });
                    files.mounts.len() - 1
                }
            };
            let n = files.archives.len();
            files.mounts[m].tree.merge_archive(n, &archive)?;
            files.archives.push(archive);
        }
        if tmp_bytes > 0 {
            files.mounts.push(Mount {
                path: "/tmp".into(),
                tree: Tree::new(true, tmp_bytes),
            });
        }
        Ok(files)
    }

    /// Closes every file the function opened (a new instance starts with
    /// only the preopens); the trees and `/tmp`'s contents stay.
    pub fn close_all(&mut self) {
        self.open.clear();
    }

    /// The mount path of preopen `fd`.
    pub fn preopen(&self, fd: u32) -> Option<&str> {
        let i = fd.checked_sub(FIRST_FD)? as usize;
        self.mounts.get(i).map(|m| m.path.as_str())
    }

    /// Whether `fd` is a preopen or an open file here.
    pub fn owns(&self, fd: u32) -> bool {
        self.get(fd).is_ok()
    }

    /// The mount and ancestry of directory-or-file `fd` (a preopen is its
    /// mount's root), and the open file if it is one.
    fn get(&self, fd: u32) -> Result<(usize, Vec<usize>, Option<&Open>), FsError> {
        let i = fd.checked_sub(FIRST_FD).ok_or(FsError::BadF)? as usize;
        if i < self.mounts.len() {
            return Ok((i, alloc::vec![0], None));
        }
        let o = self
            .open
            .get(i - self.mounts.len())
            .and_then(Option::as_ref)
            .ok_or(FsError::BadF)?;
        Ok((o.mount, o.stack.clone(), Some(o)))
    }

    fn get_open(&mut self, fd: u32) -> Result<&mut Open, FsError> {
        open_slot(&mut self.open, self.mounts.len(), fd)
    }

    /// `fd` as a directory to resolve paths from.
    fn dir(&self, fd: u32) -> Result<(usize, Vec<usize>), FsError> {
        let (m, stack, _) = self.get(fd)?;
        let node = stack.last().copied().unwrap_or(0);
        match self.mounts[m].tree.nodes.get(node) {
            Some(Node::Dir(_)) => Ok((m, stack)),
            _ => Err(FsError::NotDir),
        }
    }

    /// `path_open`: returns the new fd.
    pub fn open(&mut self, dirfd: u32, path: &str, f: OpenFlags) -> Result<u32, FsError> {
        let (m, from) = self.dir(dirfd)?;
        let writable = self.mounts[m].tree.writable;
        if (f.write || f.create || f.truncate || f.append) && !writable {
            return Err(FsError::ReadOnly);
        }
        let live = self.open.iter().filter(|o| o.is_some()).count();
        if live >= MAX_OPEN {
            return Err(FsError::MFile);
        }
        let tree = &mut self.mounts[m].tree;
        let (parent, last) = tree.walk(&from, path)?;
        let mut stack = parent.clone();
        match last {
            None => {
                if f.create && f.exclusive {
                    return Err(FsError::Exist);
                }
            }
            Some(name) => {
                let dir = *parent.last().ok_or(FsError::NotCapable)?;
                let existing = tree
                    .children(dir)
                    .ok_or(FsError::NotDir)?
                    .get(name)
                    .copied();
                match existing {
                    Some(_) if f.create && f.exclusive => return Err(FsError::Exist),
                    Some(id) => stack.push(id),
                    None if f.create && !f.directory => {
                        let id = tree.add(Node::File(Data::Owned(Vec::new())))?;
                        if let Some(c) = tree.children_mut(dir) {
                            c.insert(name.into(), id);
                        }
                        stack.push(id);
                    }
                    None => return Err(FsError::NoEnt),
                }
            }
        }
        let node = stack.last().copied().unwrap_or(0);
        let mut inflated = None;
        match tree.nodes.get_mut(node) {
            Some(Node::Dir(_)) => {
                if f.write || f.truncate || f.append {
                    return Err(FsError::IsDir);
                }
            }
            Some(_) if f.directory => return Err(FsError::NotDir),
            Some(Node::Symlink(_)) => return Err(FsError::Loop),
            Some(Node::File(Data::Owned(v))) => {
                if f.truncate {
                    tree.used = tree.used.saturating_sub(v.len());
                    *v = Vec::new();
                }
            }
            Some(Node::File(Data::Member { archive, entry })) => {
                if entry.method == zip::Method::Deflate {
                    let bytes = self.archives.get(*archive).ok_or(FsError::Io)?;
                    inflated = Some(zip::inflate(bytes, entry).map_err(|_| FsError::Io)?);
                }
            }
            Some(Node::Free) | None => return Err(FsError::NoEnt),
        }
        let o = Open {
            mount: m,
            stack,
            pos: 0,
            read: f.read,
            write: f.write || f.append,
            append: f.append,
            inflated,
        };
        let slot = match self.open.iter().position(Option::is_none) {
            Some(i) => {
                self.open[i] = Some(o);
                i
            }
            None => {
                self.open.push(Some(o));
                self.open.len() - 1
            }
        };
        Ok(FIRST_FD + (self.mounts.len() + slot) as u32)
    }

    /// `fd_close`. A preopen stays open (EPERM): its fd number names the
    /// mount for the instance's whole life.
    pub fn close(&mut self, fd: u32) -> Result<(), FsError> {
        let i = fd.checked_sub(FIRST_FD).ok_or(FsError::BadF)? as usize;
        if i < self.mounts.len() {
            return Err(FsError::Perm);
        }
        let slot = self
            .open
            .get_mut(i - self.mounts.len())
            .ok_or(FsError::BadF)?;
        slot.take().map(|_| ()).ok_or(FsError::BadF)
    }

    /// The bytes of open file `o` (read-only view).
    fn content<'a>(
        archives: &'a [Vec<u8>],
        tree: &'a Tree,
        o: &'a Open,
    ) -> Result<&'a [u8], FsError> {
        if let Some(v) = &o.inflated {
            return Ok(v);
        }
        match tree.nodes.get(o.node()) {
            Some(Node::File(Data::Owned(v))) => Ok(v),
            Some(Node::File(Data::Member { archive, entry })) => {
                Ok(zip::raw(archives.get(*archive).ok_or(FsError::Io)?, entry))
            }
            Some(Node::Dir(_)) => Err(FsError::IsDir),
            _ => Err(FsError::BadF),
        }
    }

    /// `fd_read`/`fd_pread` into `buf`: from the file position (advancing
    /// it) or from `at`.
    pub fn read(&mut self, fd: u32, buf: &mut [u8], at: Option<u64>) -> Result<usize, FsError> {
        // Borrows only the fd table: the trees stay readable beside it.
        let o = open_slot(&mut self.open, self.mounts.len(), fd)?;
        if !o.read {
            return Err(FsError::BadF);
        }
        let data = Self::content(&self.archives, &self.mounts[o.mount].tree, o)?;
        let start = usize::try_from(at.unwrap_or(o.pos)).unwrap_or(usize::MAX);
        let src = data.get(start..).unwrap_or(&[]);
        let k = src.len().min(buf.len());
        buf[..k].copy_from_slice(&src[..k]);
        if at.is_none() {
            o.pos += k as u64;
        }
        Ok(k)
    }

    /// `fd_write`/`fd_pwrite` of `bytes` at the file position (or the end,
    /// in append mode), or at `at`.
    pub fn write(&mut self, fd: u32, bytes: &[u8], at: Option<u64>) -> Result<usize, FsError> {
        // Borrows only the fd table: the trees stay readable beside it.
        let o = open_slot(&mut self.open, self.mounts.len(), fd)?;
        if !o.write {
            return Err(FsError::BadF);
        }
        let tree = &mut self.mounts[o.mount].tree;
        let (cap, used) = (tree.cap, tree.used);
        let Some(Node::File(Data::Owned(v))) = tree.nodes.get_mut(o.node()) else {
            return Err(FsError::BadF);
        };
        let start = match (at, o.append) {
            (Some(p), _) => p,
            (None, true) => v.len() as u64,
            (None, false) => o.pos,
        };
        let start = usize::try_from(start).map_err(|_| FsError::FBig)?;
        let end = start.checked_add(bytes.len()).ok_or(FsError::FBig)?;
        let grow = end.saturating_sub(v.len());
        if used.saturating_add(grow) > cap {
            return Err(FsError::NoSpace);
        }
        if grow > 0 {
            v.try_reserve(grow).map_err(|_| FsError::NoSpace)?;
            v.resize(end, 0);
        }
        v[start..end].copy_from_slice(bytes);
        tree.used = used + grow;
        if at.is_none() {
            o.pos = end as u64;
        }
        Ok(bytes.len())
    }

    /// `fd_seek`: the new position.
    pub fn seek(&mut self, fd: u32, offset: i64, whence: u8) -> Result<u64, FsError> {
        let size = {
            let (m, stack, o) = self.get(fd)?;
            if o.is_none() {
                return Err(FsError::BadF);
            }
            let node = stack.last().copied().unwrap_or(0);
            if matches!(self.mounts[m].tree.nodes.get(node), Some(Node::Dir(_))) {
                return Err(FsError::BadF);
            }
            self.mounts[m].tree.size(node) as u64
        };
        let o = self.get_open(fd)?;
        let base = match whence {
            0 => 0,
            1 => o.pos,
            2 => size,
            _ => return Err(FsError::Inval),
        };
        let pos = i128::from(base) + i128::from(offset);
        if pos < 0 || pos > i128::from(i64::MAX) {
            return Err(FsError::Inval);
        }
        o.pos = pos as u64;
        Ok(o.pos)
    }

    /// `fd_fdstat_get`: file type and whether writes append.
    pub fn fdstat(&self, fd: u32) -> Result<(u8, bool), FsError> {
        let (m, stack, o) = self.get(fd)?;
        let st = self.stat_node(m, stack.last().copied().unwrap_or(0))?;
        Ok((st.filetype, o.is_some_and(|o| o.append)))
    }

    fn stat_node(&self, m: usize, node: usize) -> Result<Stat, FsError> {
        let tree = &self.mounts[m].tree;
        let filetype = match tree.nodes.get(node) {
            Some(Node::Dir(_)) => filetype::DIRECTORY,
            Some(Node::File(_)) => filetype::REGULAR,
            Some(Node::Symlink(_)) => filetype::SYMLINK,
            Some(Node::Free) | None => return Err(FsError::NoEnt),
        };
        Ok(Stat {
            dev: m as u64 + 1,
            ino: node as u64 + 1,
            filetype,
            size: tree.size(node) as u64,
        })
    }

    /// `fd_filestat_get`.
    pub fn fd_stat(&self, fd: u32) -> Result<Stat, FsError> {
        let (m, stack, _) = self.get(fd)?;
        self.stat_node(m, stack.last().copied().unwrap_or(0))
    }

    /// `path_filestat_get` (links are reported, not followed).
    pub fn path_stat(&self, dirfd: u32, path: &str) -> Result<Stat, FsError> {
        let (m, from) = self.dir(dirfd)?;
        let stack = self.mounts[m].tree.lookup(&from, path)?;
        self.stat_node(m, stack.last().copied().unwrap_or(0))
    }

    /// `fd_readdir`: the entries of directory `fd`, `.` and `..` first, in
    /// a stable order (cookie n = the n-th entry).
    pub fn readdir(&self, fd: u32) -> Result<Vec<DirEntry>, FsError> {
        let (m, stack, _) = self.get(fd)?;
        let node = stack.last().copied().unwrap_or(0);
        let tree = &self.mounts[m].tree;
        let children = tree.children(node).ok_or(FsError::NotDir)?;
        let parent = stack.len().checked_sub(2).map_or(node, |i| stack[i]);
        let mut out = alloc::vec![
            DirEntry {
                name: ".".into(),
                ino: node as u64 + 1,
                filetype: filetype::DIRECTORY,
            },
            DirEntry {
                name: "..".into(),
                ino: parent as u64 + 1,
                filetype: filetype::DIRECTORY,
            },
        ];
        for (name, &id) in children {
            out.push(DirEntry {
                name: name.clone(),
                ino: id as u64 + 1,
                filetype: self.stat_node(m, id)?.filetype,
            });
        }
        Ok(out)
    }

    /// The writable tree and parent directory for creating or removing
    /// `path` under `dirfd`, with the last component.
    fn parent_of<'p>(
        &mut self,
        dirfd: u32,
        path: &'p str,
    ) -> Result<(usize, Vec<usize>, &'p str), FsError> {
        let (m, from) = self.dir(dirfd)?;
        let tree = &self.mounts[m].tree;
        let (parent, last) = tree.walk(&from, path)?;
        let name = last.ok_or(FsError::Inval)?;
        if !tree.writable {
            return Err(FsError::ReadOnly);
        }
        Ok((m, parent, name))
    }

    /// `path_create_directory`.
    pub fn mkdir(&mut self, dirfd: u32, path: &str) -> Result<(), FsError> {
        let (m, parent, name) = self.parent_of(dirfd, path)?;
        let dir = parent.last().copied().unwrap_or(0);
        let tree = &mut self.mounts[m].tree;
        if tree
            .children(dir)
            .ok_or(FsError::NotDir)?
            .contains_key(name)
        {
            return Err(FsError::Exist);
        }
        let id = tree.add(Node::Dir(Default::default()))?;
        if let Some(c) = tree.children_mut(dir) {
            c.insert(name.into(), id);
        }
        Ok(())
    }

    /// `path_unlink_file` (`dir` false) or `path_remove_directory` (true).
    pub fn remove(&mut self, dirfd: u32, path: &str, dir_wanted: bool) -> Result<(), FsError> {
        let (m, parent, name) = self.parent_of(dirfd, path)?;
        let dir = parent.last().copied().unwrap_or(0);
        let tree = &mut self.mounts[m].tree;
        let id = *tree
            .children(dir)
            .ok_or(FsError::NotDir)?
            .get(name)
            .ok_or(FsError::NoEnt)?;
        match (&tree.nodes[id], dir_wanted) {
            (Node::Dir(c), true) if !c.is_empty() => return Err(FsError::NotEmpty),
            (Node::Dir(_), true) => {}
            (Node::Dir(_), false) => return Err(FsError::IsDir),
            (_, true) => return Err(FsError::NotDir),
            (_, false) => {}
        }
        let size = tree.size(id);
        tree.used = tree.used.saturating_sub(size);
        tree.free(id);
        if let Some(c) = tree.children_mut(dir) {
            c.remove(name);
        }
        Ok(())
    }

    /// `path_rename` within one mount.
    pub fn rename(&mut self, fd1: u32, old: &str, fd2: u32, new: &str) -> Result<(), FsError> {
        let (m1, p1, n1) = self.parent_of(fd1, old)?;
        let (m2, p2, n2) = self.parent_of(fd2, new)?;
        let (d1, d2) = (
            p1.last().copied().unwrap_or(0),
            p2.last().copied().unwrap_or(0),
        );
        if m1 != m2 {
            return Err(FsError::XDev);
        }
        let tree = &mut self.mounts[m1].tree;
        let id = *tree
            .children(d1)
            .ok_or(FsError::NotDir)?
            .get(n1)
            .ok_or(FsError::NoEnt)?;
        // A directory cannot move below itself (the new parent's ancestry
        // would hold it).
        if matches!(tree.nodes[id], Node::Dir(_)) && p2.contains(&id) {
            return Err(FsError::Inval);
        }
        if let Some(&old_target) = tree.children(d2).ok_or(FsError::NotDir)?.get(n2) {
            if old_target == id {
                return Ok(());
            }
            match (&tree.nodes[old_target], &tree.nodes[id]) {
                (Node::Dir(c), Node::Dir(_)) if !c.is_empty() => return Err(FsError::NotEmpty),
                (Node::Dir(_), Node::Dir(_)) => {}
                (Node::Dir(_), _) => return Err(FsError::IsDir),
                (_, Node::Dir(_)) => return Err(FsError::NotDir),
                _ => {}
            }
            let size = tree.size(old_target);
            tree.used = tree.used.saturating_sub(size);
            tree.free(old_target);
        }
        if let Some(c) = tree.children_mut(d1) {
            c.remove(n1);
        }
        if let Some(c) = tree.children_mut(d2) {
            c.insert(n2.into(), id);
        }
        Ok(())
    }

    /// `fd_filestat_set_size` (truncate or extend with zeros).
    pub fn set_size(&mut self, fd: u32, size: u64) -> Result<(), FsError> {
        let o = self.get_open(fd)?;
        if !o.write {
            return Err(FsError::BadF);
        }
        let (m, node) = (o.mount, o.node());
        let tree = &mut self.mounts[m].tree;
        let (cap, used) = (tree.cap, tree.used);
        let Some(Node::File(Data::Owned(v))) = tree.nodes.get_mut(node) else {
            return Err(FsError::BadF);
        };
        let size = usize::try_from(size).map_err(|_| FsError::FBig)?;
        let grow = size.saturating_sub(v.len());
        if used.saturating_add(grow) > cap {
            return Err(FsError::NoSpace);
        }
        v.try_reserve(grow).map_err(|_| FsError::NoSpace)?;
        let shrink = v.len().saturating_sub(size);
        v.resize(size, 0);
        tree.used = used + grow - shrink;
        Ok(())
    }

    /// `path_readlink`: a link's target.
    pub fn readlink(&self, dirfd: u32, path: &str) -> Result<String, FsError> {
        let (m, from) = self.dir(dirfd)?;
        let tree = &self.mounts[m].tree;
        let stack = tree.lookup(&from, path)?;
        match tree.nodes.get(stack.last().copied().unwrap_or(0)) {
            Some(Node::Symlink(t)) => Ok(t.clone()),
            _ => Err(FsError::Inval),
        }
    }

    /// Bytes `/tmp` holds now (tests and reports).
    pub fn tmp_used(&self) -> usize {
        self.mounts
            .iter()
            .filter(|m| m.tree.writable)
            .map(|m| m.tree.used)
            .sum()
    }
}

/// The open file `fd` names (fds past the `mounts` preopens).
fn open_slot(open: &mut [Option<Open>], mounts: usize, fd: u32) -> Result<&mut Open, FsError> {
    let i = fd.checked_sub(FIRST_FD).ok_or(FsError::BadF)? as usize;
    i.checked_sub(mounts)
        .and_then(|j| open.get_mut(j))
        .and_then(Option::as_mut)
        .ok_or(FsError::BadF)
}

/// A mount path from the host: absolute, no `.`/`..`/empty components.
fn normalize_mount(path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if !path.starts_with('/') || parts.is_empty() || parts.iter().any(|c| *c == "." || *c == "..") {
        return None;
    }
    Some(alloc::format!("/{}", parts.join("/")))
}

#[cfg(test)]
pub(crate) mod tests;
