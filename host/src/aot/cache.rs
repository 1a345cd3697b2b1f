//! The compiled-artefact caches of [`super::Aot`]: a byte-bounded,
//! least-recently-used cache in memory and the index of the encrypted disk
//! cache. Both forget the artefacts of code the store no longer holds, so
//! emberd's memory and disk follow the live functions, not their history.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Whether the code `code_id` (a store blob address) still exists.
pub type Liveness = Box<dyn Fn(&str) -> bool + Send + Sync>;

struct Entry {
    code_id: String,
    artefact: Arc<Vec<u8>>,
    used: u64,
}

/// Artefacts in memory, at most `cap` bytes; the least recently used go first.
pub struct MemoryCache {
    entries: HashMap<String, Entry>,
    bytes: usize,
    cap: usize,
    clock: u64,
}

impl MemoryCache {
    pub fn new(cap: usize) -> Self {
        MemoryCache {
            entries: HashMap::new(),
            bytes: 0,
            cap,
            clock: 0,
        }
    }

    pub fn get(&mut self, key: &str) -> Option<Arc<Vec<u8>>> {
        self.clock += 1;
        let e = self.entries.get_mut(key)?;
        e.used = self.clock;
        Some(e.artefact.clone())
    }

    /// Keeps `artefact` unless it alone exceeds the cap; evicts the least
    /// recently used entries until it fits.
    pub fn insert(&mut self, key: &str, code_id: &str, artefact: Arc<Vec<u8>>) {
        self.remove(key);
        if artefact.len() > self.cap {
            return;
        }
        while self.bytes + artefact.len() > self.cap {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.remove(&oldest);
        }
        self.clock += 1;
        self.bytes += artefact.len();
        self.entries.insert(
            key.to_string(),
            Entry {
                code_id: code_id.to_string(),
                artefact,
                used: self.clock,
            },
        );
    }

    /// Drops the artefacts of code that no longer exists.
    pub fn retain_live(&mut self, live: &Liveness) {
        let dead: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| !live(&e.code_id))
            .map(|(k, _)| k.clone())
            .collect();
        for k in dead {
            self.remove(&k);
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.remove(key) {
            self.bytes -= e.artefact.len();
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// One disk index entry: the file `index/<key>` holds `<artefact blob> <code_id>`.
pub fn index_line(artefact_addr: &str, code_id: &str) -> String {
    format!("{artefact_addr} {code_id}")
}

/// The artefact blob address an index line names.
pub fn index_addr(line: &str) -> Option<&str> {
    line.split_whitespace().next()
}

/// Index entries (path, artefact address) whose code is no longer live. An
/// entry without a code id (an older emberd wrote it) counts as dead: its
/// artefact is compiled again on the next cold start.
pub fn dead_index_entries(index: &Path, live: &Liveness) -> Vec<(PathBuf, String)> {
    let Ok(dir) = std::fs::read_dir(index) else {
        return Vec::new();
    };
    let mut dead = Vec::new();
    for e in dir.flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "tmp") {
            continue;
        }
        let Ok(line) = std::fs::read_to_string(&path) else {
            continue;
        };
        let mut words = line.split_whitespace();
        let (addr, code) = (words.next(), words.next());
        if code.is_none_or(|c| !live(c)) {
            dead.push((path, addr.unwrap_or_default().to_string()));
        }
    }
    dead
}

#[cfg(test)]
mod tests {
    use super::*;

    fn art(n: usize) -> Arc<Vec<u8>> {
        Arc::new(vec![0u8; n])
    }

    #[test]
    fn least_recently_used_goes_first_and_bytes_stay_under_the_cap() {
        let mut c = MemoryCache::new(100);
        c.insert("a", "ca", art(40));
        c.insert("b", "cb", art(40));
        assert!(c.get("a").is_some()); // b is now the oldest
        c.insert("c", "cc", art(40));
        assert!(c.get("b").is_none());
        assert!(c.get("a").is_some() && c.get("c").is_some());
        assert_eq!(c.bytes(), 80);
        c.insert("huge", "ch", art(101));
        assert!(c.get("huge").is_none());
        assert_eq!((c.len(), c.bytes()), (2, 80));
        c.insert("a", "ca", art(10));
        assert_eq!(c.bytes(), 50);
    }

    #[test]
    fn artefacts_of_dead_code_are_forgotten() {
        let mut c = MemoryCache::new(1000);
        c.insert("k1", "live", art(10));
        c.insert("k2", "gone", art(10));
        c.insert("k3", "gone", art(10));
        let live: Liveness = Box::new(|code| code == "live");
        c.retain_live(&live);
        assert_eq!((c.len(), c.bytes()), (1, 10));
        assert!(c.get("k1").is_some());
    }

    #[test]
    fn disk_index_entries_of_dead_or_unlabelled_code_are_found() {
        let dir = std::env::temp_dir().join(format!("ember-aot-index-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("k1"), index_line("aaaa", "live")).unwrap();
        std::fs::write(dir.join("k2"), index_line("bbbb", "gone")).unwrap();
        std::fs::write(dir.join("k3"), "cccc").unwrap();
        std::fs::write(dir.join("k4.tmp"), "dddd gone").unwrap();
        let live: Liveness = Box::new(|code| code == "live");
        let mut dead = dead_index_entries(&dir, &live);
        dead.sort();
        let names: Vec<_> = dead
            .iter()
            .map(|(p, a)| {
                (
                    p.file_name().unwrap().to_str().unwrap().to_string(),
                    a.clone(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [("k2".into(), "bbbb".into()), ("k3".into(), "cccc".into())]
        );
        assert_eq!(index_addr(&index_line("aaaa", "live")), Some("aaaa"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
