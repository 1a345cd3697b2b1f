//! One mounted tree: directories, files and (never followed) symbolic links
//! as nodes in a vector, built from ZIP archives merged in order (read-only
//! mounts) or written by the function (the in-memory `/tmp`, whose bytes
//! are counted against its cap). Path lookup lives here: relative paths
//! only, `.` and `..` resolved against the opening directory's ancestry and
//! never above the mount's root, symbolic links never followed.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::zip::{self, Entry, ZipError};
use super::FsError;

/// Longest path a function may pass (PATH_MAX).
pub const MAX_PATH: usize = 4096;
/// Longest path component (NAME_MAX).
pub const MAX_NAME: usize = 255;
/// Most nodes one tree holds (files in /tmp included): bounds the index a
/// function can make the agent keep.
pub const MAX_NODES: usize = 1 << 20;

/// A file's bytes.
#[derive(Debug)]
pub enum Data {
    /// Member `entry` of archive number `archive` (read-only trees).
    Member { archive: usize, entry: Entry },
    /// Bytes the function wrote (`/tmp`).
    Owned(Vec<u8>),
}

#[derive(Debug)]
pub enum Node {
    Dir(BTreeMap<String, usize>),
    File(Data),
    Symlink(String),
    /// A removed node's slot (its number is not reused while open fds may
    /// still name it).
    Free,
}

/// One mount's nodes; node 0 is the root directory.
#[derive(Debug)]
pub struct Tree {
    pub nodes: Vec<Node>,
    pub writable: bool,
    /// Bytes of file data this tree may hold (writable trees).
    pub cap: usize,
    pub used: usize,
    /// Slots of removed nodes, reused by [`Tree::add`].
    free: Vec<usize>,
}

/// Why an archive could not be mounted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Zip(#[from] ZipError),
    #[error("member {0:?} has an absolute path or a '..' component")]
    Escapes(String),
    #[error("the tree has more than {MAX_NODES} entries")]
    TooManyEntries,
}

/// The components of an archive member name, refusing names that could
/// escape the mount (zip-slip): absolute paths and `..` components.
fn member_components(name: &str) -> Result<Vec<&str>, MountError> {
    if name.starts_with('/') {
        return Err(MountError::Escapes(name.into()));
    }
    let mut out = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(MountError::Escapes(name.into())),
            c => out.push(c),
        }
    }
    Ok(out)
}

impl Tree {
    pub fn new(writable: bool, cap: usize) -> Tree {
        Tree {
            nodes: vec![Node::Dir(BTreeMap::new())],
            writable,
            cap,
            used: 0,
            free: Vec::new(),
        }
    }

    /// Adds the members of `bytes` (archive number `archive`); a member
    /// replaces what an earlier archive put at the same path.
    pub fn merge_archive(&mut self, archive: usize, bytes: &[u8]) -> Result<(), MountError> {
        for entry in zip::entries(bytes)? {
            let name = entry.name.clone();
            let parts = member_components(&name)?;
            let Some((last, dirs)) = parts.split_last() else {
                continue; // the archive's root itself
            };
            let mut at = 0;
            for d in dirs {
                at = self.ensure_dir(at, d)?;
            }
            if name.ends_with('/') {
                self.ensure_dir(at, last)?;
                continue;
            }
            let node = if entry.symlink {
                let target = zip::read_small(bytes, &entry, MAX_PATH)?;
                Node::Symlink(String::from_utf8_lossy(&target).into_owned())
            } else {
                Node::File(Data::Member { archive, entry })
            };
            let id = self.push(node)?;
            if let Node::Dir(children) = &mut self.nodes[at] {
                children.insert((*last).into(), id);
            }
        }
        Ok(())
    }

    /// The directory `name` under directory `at`, made if missing (a file
    /// of that name from an earlier archive is replaced).
    fn ensure_dir(&mut self, at: usize, name: &str) -> Result<usize, MountError> {
        if let Some(&id) = self.children(at).and_then(|c| c.get(name)) {
            if matches!(self.nodes[id], Node::Dir(_)) {
                return Ok(id);
            }
        }
        let id = self.push(Node::Dir(BTreeMap::new()))?;
        if let Node::Dir(children) = &mut self.nodes[at] {
            children.insert(name.into(), id);
        }
        Ok(id)
    }

    fn push(&mut self, node: Node) -> Result<usize, MountError> {
        if self.nodes.len() >= MAX_NODES {
            return Err(MountError::TooManyEntries);
        }
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    /// A new node for the function (`/tmp`): ENOSPC past [`MAX_NODES`].
    pub fn add(&mut self, node: Node) -> Result<usize, FsError> {
        if let Some(id) = self.free.pop() {
            self.nodes[id] = node;
            return Ok(id);
        }
        self.push(node).map_err(|_| FsError::NoSpace)
    }

    /// Removes node `id` (already unlinked from its directory). An fd still
    /// naming it sees EBADF, or whatever later reuses the slot, within the
    /// same function's own `/tmp`.
    pub fn free(&mut self, id: usize) {
        if let Some(n) = self.nodes.get_mut(id) {
            *n = Node::Free;
            self.free.push(id);
        }
    }

    pub fn children(&self, id: usize) -> Option<&BTreeMap<String, usize>> {
        match self.nodes.get(id) {
            Some(Node::Dir(c)) => Some(c),
            _ => None,
        }
    }

    pub fn children_mut(&mut self, id: usize) -> Option<&mut BTreeMap<String, usize>> {
        match self.nodes.get_mut(id) {
            Some(Node::Dir(c)) => Some(c),
            _ => None,
        }
    }

    /// Walks `path` from the directory whose ancestry (root first, itself
    /// last) is `from`. Returns the ancestry of the parent directory and the
    /// last component (`None` when the path names the directory itself, e.g.
    /// `.` or `a/..`). Intermediate components must be directories; `..`
    /// never climbs above the mount's root (ENOTCAPABLE), a symbolic link is
    /// never followed (ELOOP), absolute paths are refused (ENOTCAPABLE).
    pub fn walk<'p>(
        &self,
        from: &[usize],
        path: &'p str,
    ) -> Result<(Vec<usize>, Option<&'p str>), FsError> {
        if path.len() > MAX_PATH {
            return Err(FsError::NameTooLong);
        }
        if path.is_empty() {
            return Err(FsError::NoEnt);
        }
        if path.starts_with('/') {
            return Err(FsError::NotCapable);
        }
        let mut stack: Vec<usize> = from.to_vec();
        let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let mut last = None;
        for c in &parts {
            if c.len() > MAX_NAME {
                return Err(FsError::NameTooLong);
            }
            // A pending component must be a directory to go on.
            if let Some(name) = last.take() {
                let dir = *stack.last().ok_or(FsError::NotCapable)?;
                stack.push(self.step(dir, name)?);
            }
            match *c {
                "." => {}
                ".." => {
                    if stack.len() <= 1 {
                        return Err(FsError::NotCapable);
                    }
                    stack.pop();
                }
                name => last = Some(name),
            }
        }
        Ok((stack, last))
    }

    /// The child `name` of directory `dir`, which must itself be a
    /// directory to walk through.
    fn step(&self, dir: usize, name: &str) -> Result<usize, FsError> {
        let id = *self
            .children(dir)
            .ok_or(FsError::NotDir)?
            .get(name)
            .ok_or(FsError::NoEnt)?;
        match self.nodes.get(id) {
            Some(Node::Dir(_)) => Ok(id),
            Some(Node::Symlink(_)) => Err(FsError::Loop),
            _ => Err(FsError::NotDir),
        }
    }

    /// Resolves `path` to a node: its ancestry, itself last.
    pub fn lookup(&self, from: &[usize], path: &str) -> Result<Vec<usize>, FsError> {
        let (mut stack, last) = self.walk(from, path)?;
        if let Some(name) = last {
            let dir = *stack.last().ok_or(FsError::NotCapable)?;
            let id = *self
                .children(dir)
                .ok_or(FsError::NotDir)?
                .get(name)
                .ok_or(FsError::NoEnt)?;
            stack.push(id);
        }
        Ok(stack)
    }

    /// Bytes of file data in node `id` (0 for directories and links).
    pub fn size(&self, id: usize) -> usize {
        match self.nodes.get(id) {
            Some(Node::File(Data::Member { entry, .. })) => entry.size,
            Some(Node::File(Data::Owned(v))) => v.len(),
            Some(Node::Symlink(t)) => t.len(),
            _ => 0,
        }
    }
}
