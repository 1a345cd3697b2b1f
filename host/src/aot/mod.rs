//! Ahead-of-time compiled wasm functions for the kernel-less guest's wasmtime
//! (sealed in the `ember_abi::artefact` format). The compiler runs as a child
//! process (`ember-wasm-compile`, with address-space, CPU-time and wall-clock
//! limits), so cranelift and a hostile module's compile cost stay outside
//! emberd. Artefacts are cached by (code, wasmtime version, artefact format,
//! function memory, guest CPU features): in memory, and optionally on disk
//! encrypted with the store's master key (a `BlobStore` of its own, apart
//! from the function blobs and their garbage collection), with a plaintext
//! index of cache key → artefact blob address and code id (hashes only).
//! Both caches follow the live code: see [`cache`].
//!
//! The guest announces its CPU feature mask in `Ready`
//! (`agent_version` "… cpu=0x…"); the launcher asks for the artefact of
//! exactly that mask, so code is never compiled for features the guest lacks.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ember_abi::artefact;

use crate::store::blob::{sha256_hex, BlobError, BlobStore};

mod cache;
use cache::{Liveness, MemoryCache};

/// How long a background compile waits for the first guest to announce its
/// CPU features before guessing with the host's (see `Aot::default_features`).
const GUEST_WAIT: Duration = Duration::from_secs(5);
/// Wall-clock limit of one compilation (a 5 MB module takes seconds).
const COMPILE_TIMEOUT: Duration = Duration::from_secs(300);
/// Address-space limit of the compiler process.
const COMPILE_MAX_AS: u64 = 8 << 30;
/// Most artefact bytes kept in memory; beyond, the least recently used go
/// (the disk cache, when configured, still holds them).
const MAX_MEMORY_CACHE: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum AotError {
    #[error("cannot run the wasm compiler {0}")]
    Spawn(PathBuf, #[source] std::io::Error),
    #[error("{0}")]
    Compile(String),
    #[error("compiling took longer than {0:?}")]
    TimedOut(Duration),
    #[error("reading the module: {0}")]
    Load(String),
    #[error("artefact cache")]
    Cache(#[from] BlobError),
    #[error("artefact cache index {0}")]
    Index(PathBuf, #[source] std::io::Error),
}

/// The compiler and its caches.
pub struct Aot {
    exe: PathBuf,
    disk: Option<(BlobStore, PathBuf)>,
    memory: Mutex<MemoryCache>,
    /// Which code still exists (None: all of it, as in `ember-run`).
    live: Option<Liveness>,
    /// One lock per cache key: concurrent cold starts compile once.
    building: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// The last CPU feature mask a guest announced (None until one has):
    /// background compiles wait a little for it, see [`Aot::default_features`].
    guest_features: Mutex<Option<u64>>,
    announced: Condvar,
    pub compiled: AtomicU64,
}

/// `$EMBER_WASM_COMPILE`, `ember-wasm-compile` beside this executable, or on $PATH.
pub fn default_compiler() -> PathBuf {
    if let Some(p) = std::env::var_os("EMBER_WASM_COMPILE") {
        return p.into();
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("ember-wasm-compile")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| "ember-wasm-compile".into())
}

/// The CPU feature mask in a wasm agent's `Ready.agent_version`, if any.
pub fn guest_features(agent_version: &str) -> Option<u64> {
    let hex = agent_version
        .split_whitespace()
        .find_map(|w| w.strip_prefix("cpu=0x"))?;
    u64::from_str_radix(hex, 16).ok()
}

/// The cache key of `code_id`'s artefact.
pub fn cache_key(code_id: &str, memory_mib: u32, features: u64) -> String {
    sha256_hex(
        format!(
            "{code_id}|wasmtime {}|format {}|{memory_mib} MiB|cpu {features:#x}",
            artefact::WASMTIME_VERSION,
            artefact::FORMAT
        )
        .as_bytes(),
    )
}

impl Aot {
    /// A compiler at `exe` with an in-memory cache only.
    pub fn new(exe: PathBuf) -> Self {
        Aot {
            exe,
            disk: None,
            memory: Mutex::new(MemoryCache::new(MAX_MEMORY_CACHE)),
            live: None,
            building: Mutex::new(HashMap::new()),
            guest_features: Mutex::new(None),
            announced: Condvar::new(),
            compiled: AtomicU64::new(0),
        }
    }

    /// Adds the encrypted disk cache under `dir`, keyed with `key_path`.
    pub fn with_disk_cache(mut self, dir: &Path, key_path: &Path) -> Result<Self, AotError> {
        let index = dir.join("index");
        std::fs::create_dir_all(&index).map_err(|e| AotError::Index(index.clone(), e))?;
        self.disk = Some((BlobStore::open(&dir.join("blobs"), key_path)?, index));
        Ok(self)
    }

    /// Lets the caches forget the artefacts of code for which `live` is false.
    pub fn with_liveness(mut self, live: Liveness) -> Self {
        self.live = Some(live);
        self
    }

    /// Artefact bytes and entries held in memory.
    pub fn memory_use(&self) -> (usize, usize) {
        let m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        (m.bytes(), m.len())
    }

    /// Forgets, in memory and on disk, the artefacts of code that no longer
    /// exists (deleted or replaced functions).
    pub fn forget_dead(&self) {
        let Some(live) = &self.live else {
            return;
        };
        self.memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain_live(live);
        let Some((blobs, index)) = &self.disk else {
            return;
        };
        for (path, addr) in cache::dead_index_entries(index, live) {
            let _ = std::fs::remove_file(&path);
            if !addr.is_empty() {
                let _ = blobs.remove(&addr);
            }
        }
    }

    pub fn compiler(&self) -> &Path {
        &self.exe
    }

    /// The mask to compile for ahead of a launch: the last one a guest
    /// announced. Before any guest has booted (a create right after emberd
    /// started), wait up to `GUEST_WAIT` for the first one (emberd boots its
    /// spares at start), then fall back to this host CPU's mask (asked of the
    /// compiler). The host's mask is only a guess: the guest's differs where
    /// the VMM does not pass a feature on (on PVM hosts: AVX and LZCNT), and
    /// an artefact compiled for it would be compiled again at the launch.
    pub fn default_features(&self) -> u64 {
        let seen = self
            .guest_features
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (seen, _) = self
            .announced
            .wait_timeout_while(seen, GUEST_WAIT, |f| f.is_none())
            .unwrap_or_else(|e| e.into_inner());
        if let Some(f) = *seen {
            return f;
        }
        drop(seen);
        let out = Command::new(&self.exe).arg("--print-features").output();
        out.ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok())
            .unwrap_or(0)
    }

    /// Records the mask a booted guest announced.
    pub fn saw_guest(&self, features: u64) {
        *self
            .guest_features
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(features);
        self.announced.notify_all();
    }

    /// Runs the compiler on `module`. The module and the artefact travel
    /// through pipes: no plaintext code touches the disk.
    pub fn compile(
        &self,
        module: &[u8],
        memory_mib: u32,
        features: u64,
    ) -> Result<Vec<u8>, AotError> {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--memory-mib")
            .arg(memory_mib.to_string())
            .arg("--features")
            .arg(format!("{features:#x}"))
            .args(["-", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: setrlimit is async-signal-safe and touches no memory of
        // the parent; it runs in the child between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let cpu = COMPILE_TIMEOUT.as_secs();
                for (res, lim) in [(libc::RLIMIT_AS, COMPILE_MAX_AS), (libc::RLIMIT_CPU, cpu)] {
                    let r = libc::rlimit {
                        rlim_cur: lim,
                        rlim_max: lim,
                    };
                    if libc::setrlimit(res, &r) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            })
        };
        let mut child = cmd
            .spawn()
            .map_err(|e| AotError::Spawn(self.exe.clone(), e))?;
        let pid = child.id() as libc::pid_t;
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let module = module.to_vec();
        let writer = std::thread::spawn(move || {
            if let Some(mut w) = stdin {
                let _ = std::io::Write::write_all(&mut w, &module);
            }
        });
        let errors = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(e) = stderr {
                let _ = e.take(64 * 1024).read_to_string(&mut s);
            }
            s
        });
        // The wall-clock limit: kill the child (still unreaped, so the pid
        // is still its own) if it outlives COMPILE_TIMEOUT.
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            let late = wait.recv_timeout(COMPILE_TIMEOUT).is_err();
            if late {
                // SAFETY: plain syscall on our unreaped child's pid.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            late
        });
        let mut out = Vec::new();
        if let Some(o) = stdout {
            let _ = o.take(artefact::MAX_LEN as u64 + 1).read_to_end(&mut out);
        }
        let status = child.wait();
        let _ = done.send(());
        let late = watchdog.join().unwrap_or(false);
        let _ = writer.join();
        let msg = errors.join().unwrap_or_default();
        let status = status.map_err(|e| AotError::Spawn(self.exe.clone(), e))?;
        if late {
            return Err(AotError::TimedOut(COMPILE_TIMEOUT));
        }
        if !status.success() {
            let msg = msg.trim().trim_start_matches("ember-wasm-compile: ");
            return Err(AotError::Compile(if msg.is_empty() {
                format!("the compiler failed ({status})")
            } else {
                msg.to_string()
            }));
        }
        if out.len() > artefact::MAX_LEN {
            return Err(AotError::Compile(format!(
                "the compiled module exceeds {} bytes",
                artefact::MAX_LEN
            )));
        }
        self.compiled.fetch_add(1, Ordering::Relaxed);
        Ok(out)
    }

    /// The artefact of the code `code_id` (whose module `load` returns) for
    /// `memory_mib` and `features`: from memory, from disk, or compiled now.
    pub fn artefact(
        &self,
        code_id: &str,
        memory_mib: u32,
        features: u64,
        load: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> Result<Arc<Vec<u8>>, AotError> {
        let key = cache_key(code_id, memory_mib, features);
        if let Some(a) = self.cached(&key, code_id) {
            return Ok(a);
        }
        let lock = {
            let mut b = self.building.lock().unwrap_or_else(|e| e.into_inner());
            b.entry(key.clone()).or_default().clone()
        };
        let held = lock.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.build(&key, code_id, memory_mib, features, load);
        drop(held);
        // Later callers find the artefact cached (or compile anew if it
        // was evicted meanwhile): the lock is not kept for every key ever seen.
        self.building
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        result
    }

    /// [`Self::artefact`] under the key's build lock.
    fn build(
        &self,
        key: &str,
        code_id: &str,
        memory_mib: u32,
        features: u64,
        load: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> Result<Arc<Vec<u8>>, AotError> {
        if let Some(a) = self.cached(key, code_id) {
            return Ok(a);
        }
        let module = load().map_err(AotError::Load)?;
        let a = Arc::new(self.compile(&module, memory_mib, features)?);
        self.remember(key, code_id, a.clone());
        if let Some((blobs, index)) = &self.disk {
            let addr = blobs.put_uncollected(&a)?;
            let path = index.join(key);
            let tmp = index.join(format!("{key}.tmp"));
            std::fs::write(&tmp, cache::index_line(&addr, code_id))
                .and_then(|_| std::fs::rename(&tmp, &path))
                .map_err(|e| AotError::Index(path, e))?;
        }
        Ok(a)
    }

    /// Compiles in the background (a function was created or changed), so
    /// its first cold start finds the artefact. Failures are only logged: the
    /// launch compiles again and reports them.
    pub fn prepare(
        self: &Arc<Self>,
        code_id: &str,
        memory_mib: u32,
        load: impl FnOnce() -> Result<Vec<u8>, String> + Send + 'static,
    ) {
        let (me, id) = (self.clone(), code_id.to_string());
        std::thread::spawn(move || {
            let features = me.default_features();
            if let Err(e) = me.artefact(&id, memory_mib, features, load) {
                eprintln!(
                    "emberd: compiling code {id}: {}",
                    crate::util::error_chain(&e)
                );
            }
            // A create or update may have replaced code: drop what is dead.
            me.forget_dead();
        });
    }

    fn cached(&self, key: &str, code_id: &str) -> Option<Arc<Vec<u8>>> {
        if let Some(a) = self
            .memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
        {
            return Some(a);
        }
        let (blobs, index) = self.disk.as_ref()?;
        let line = std::fs::read_to_string(index.join(key)).ok()?;
        // A missing or damaged blob is a cache miss: compile again.
        let a = Arc::new(blobs.get(cache::index_addr(&line)?).ok()?);
        artefact::open(&a).ok()?;
        self.remember(key, code_id, a.clone());
        Some(a)
    }

    fn remember(&self, key: &str, code_id: &str, a: Arc<Vec<u8>>) {
        let mut m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(live) = &self.live {
            m.retain_live(live);
        }
        m.insert(key, code_id, a);
    }
}

/// emberd's compiler for `--wasm-engine` (None: wasmi), with its encrypted
/// disk cache under `store_dir/aot` (keyed with the store's master key).
/// Its caches forget the artefacts of code the store no longer holds.
pub fn setup(
    engine: &str,
    compiler: Option<PathBuf>,
    store: &Arc<crate::store::Store>,
    store_dir: &Path,
) -> Option<Arc<Aot>> {
    if engine != "wasmtime" {
        eprintln!("emberd: --wasm-engine {engine}: wasm functions are interpreted");
        return None;
    }
    let exe = compiler.unwrap_or_else(default_compiler);
    let liveness = || -> Liveness {
        let store = store.clone();
        // Runtime artefacts (`runtime:` ids: python3.11's reactor) belong
        // to the host, not to a function: never dead.
        Box::new(move |code: &str| code.starts_with("runtime:") || store.has_blob(code))
    };
    let aot = Aot::new(exe.clone()).with_liveness(liveness());
    let aot = match aot.with_disk_cache(&store_dir.join("aot"), &store_dir.join("master.key")) {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "emberd: WARNING: no disk cache for compiled wasm ({}); compiling into memory only",
                crate::util::error_chain(&e)
            );
            Aot::new(exe).with_liveness(liveness())
        }
    };
    aot.forget_dead();
    Some(Arc::new(aot))
}

/// Compiles the wasm code stored at `blob` in the background (create,
/// update, configuration change), for `memory_mib`.
pub fn prepare(aot: &Arc<Aot>, store: &Arc<crate::store::Store>, blob: &str, memory_mib: u32) {
    let (store, id) = (store.clone(), blob.to_string());
    aot.prepare(blob, memory_mib, move || {
        store
            .read_blob(&id)
            .map_err(|e| crate::util::error_chain(&e))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_features_are_read_from_ready() {
        assert_eq!(
            guest_features("ember-wasm-agent 0.1.0 cpu=0x1f"),
            Some(0x1f)
        );
        assert_eq!(guest_features("ember-wasm-agent 0.1.0"), None);
        assert_eq!(guest_features("x cpu=0xzz"), None);
    }

    /// A create right after start compiled for the host's mask, and the
    /// first launch compiled again for the guest's (on PVM hosts the guest
    /// lacks AVX): the background compile now waits for the first guest.
    #[test]
    fn background_compiles_wait_for_the_first_guests_features() {
        let aot = Arc::new(Aot::new("/nonexistent/ember-wasm-compile".into()));
        let waiter = {
            let aot = aot.clone();
            std::thread::spawn(move || aot.default_features())
        };
        std::thread::sleep(Duration::from_millis(50));
        aot.saw_guest(0x63f);
        assert_eq!(waiter.join().unwrap(), 0x63f);
        aot.saw_guest(0x1f);
        assert_eq!(aot.default_features(), 0x1f);
    }

    #[test]
    fn cache_key_covers_memory_and_features() {
        let k = cache_key("abc", 128, 0x3);
        assert_ne!(k, cache_key("abc", 256, 0x3));
        assert_ne!(k, cache_key("abc", 128, 0x7));
        assert_ne!(k, cache_key("abd", 128, 0x3));
        assert_eq!(k, cache_key("abc", 128, 0x3));
    }
}
