//! SnapStart (Lambda's model): a version published with `SnapStart.ApplyOn
//! = PublishedVersions` is `Pending` while a fresh environment initialises
//! it and ember-vmm snapshots it; the snapshot is sealed in the [`vault`]
//! and the version becomes `Active` (or `Failed` with the reason when its
//! Init fails). Cold starts of the version then restore the snapshot
//! (`env::snapstart`). This module owns the lifecycle: taking snapshots in
//! the background (the snapshotting VM holds a claim on the pool's memory
//! budget like any environment, waiting for room), resuming the ones an
//! earlier emberd left `Pending`, and deleting snapshots with their
//! versions. DESIGN.md, "emberd: SnapStart".

pub mod vault;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::catalog::{spec_template, Resolved};
use crate::env::{EnvError, EnvLauncher};
use crate::pool::Pool;
use crate::store::{Store, VersionRecord, VersionState};
use vault::{SnapKey, Vault};

/// Why a snapshot could not be taken (the version is then `Failed`).
#[derive(Debug, thiserror::Error)]
pub enum TakeError {
    #[error("code blob")]
    Code(#[source] crate::store::BlobError),
    #[error("work directory {0}")]
    WorkDir(PathBuf, #[source] std::io::Error),
    #[error(transparent)]
    Env(EnvError),
    #[error("sealing the snapshot")]
    Seal(#[source] vault::VaultError),
    #[error("no room in this host's memory budget for its environment within {0:?}")]
    NoMemory(Duration),
}

/// How long a snapshot waits for room in the memory budget (busy
/// environments finishing, idle ones evicted) before its version fails.
const ROOM_WAIT: Duration = Duration::from_secs(120);
/// How often it looks again meanwhile.
const ROOM_POLL: Duration = Duration::from_millis(100);

impl TakeError {
    /// Lambda's `StateReasonCode` and `StateReason` for a failed version.
    fn state(&self) -> VersionState {
        let (code, reason) = match self {
            TakeError::Env(EnvError::Init(f, _)) => {
                let code = match f.error_type.as_str() {
                    "Sandbox.Timedout" => "FunctionError.InitTimeout",
                    t if t.starts_with("Runtime.") => "FunctionError.RuntimeInitError",
                    _ => "FunctionError",
                };
                (
                    code,
                    format!(
                        "Init failed while creating the SnapStart snapshot: {}: {}",
                        f.error_type, f.message
                    ),
                )
            }
            e => (
                "InternalError",
                format!(
                    "Could not create the SnapStart snapshot: {}",
                    crate::util::error_chain(e)
                ),
            ),
        };
        VersionState::Failed {
            code: code.into(),
            reason,
        }
    }
}

/// The SnapStart service (see the module comment).
pub struct SnapStart {
    store: Arc<Store>,
    launcher: Arc<dyn EnvLauncher>,
    /// Whose memory budget the snapshotting VMs count in.
    pool: Arc<Pool>,
    vault: Arc<Vault>,
    next: AtomicU64,
}

impl SnapStart {
    pub fn new(
        store: Arc<Store>,
        launcher: Arc<dyn EnvLauncher>,
        pool: Arc<Pool>,
        vault: Arc<Vault>,
    ) -> Arc<Self> {
        Arc::new(SnapStart {
            store,
            launcher,
            pool,
            vault,
            next: AtomicU64::new(0),
        })
    }

    pub fn vault(&self) -> &Arc<Vault> {
        &self.vault
    }

    /// Takes the snapshot of `function`'s `Pending` version `v` on a
    /// thread of its own; the version's state follows the outcome.
    pub fn start(self: &Arc<Self>, function: &str, v: &VersionRecord) {
        let me = self.clone();
        let function = function.to_string();
        let v = v.clone();
        let spawned = std::thread::Builder::new()
            .name("snapstart".into())
            .spawn(move || me.run(&function, &v));
        if let Err(e) = spawned {
            eprintln!("emberd: ERROR: cannot start a SnapStart snapshot thread: {e}");
        }
    }

    fn run(&self, function: &str, v: &VersionRecord) {
        let state = match self.take(function, v) {
            Ok(()) => VersionState::Active,
            Err(e) => {
                eprintln!(
                    "emberd: SnapStart snapshot of {function}:{} failed: {}",
                    v.version,
                    crate::util::error_chain(&e)
                );
                e.state()
            }
        };
        let set = self
            .store
            .set_version_state(function, v.version, &v.revision_id, state);
        if let Err(e) = set {
            // Deleted meanwhile: its snapshot goes with it.
            self.vault.remove(function, &v.version.to_string());
            if !matches!(e, crate::store::StoreError::NotFound(_)) {
                eprintln!(
                    "emberd: ERROR: SnapStart state of {function}:{}: {}",
                    v.version,
                    crate::util::error_chain(&e)
                );
            }
        }
    }

    fn take(&self, function: &str, v: &VersionRecord) -> Result<(), TakeError> {
        let code = self
            .store
            .read_blob(&v.code.blob)
            .map_err(TakeError::Code)?;
        let r = Resolved {
            name: function.into(),
            version: v.version.to_string(),
            config: v.config.clone(),
            code: v.code.clone(),
            revision_id: v.revision_id.clone(),
            last_modified: v.last_modified.clone(),
            state: VersionState::Pending,
        };
        let mut spec = spec_template(&r, Arc::new(code));
        spec.snapshot = None;
        let what = format!("the SnapStart snapshot of {function}:{}", v.version);
        let _room = self.room(spec.memory_mib, &what)?;
        // Short: the environment's vsock socket path lives below it.
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.vault.plain_root().join(format!("t{n}"));
        std::fs::create_dir(&dir).map_err(|e| TakeError::WorkDir(dir.clone(), e))?;
        spec.work_dir = dir.clone();
        let sealed = self
            .launcher
            .take_snapshot(&spec, &dir)
            .map_err(TakeError::Env)
            .and_then(|()| {
                let key = SnapKey {
                    function: function.into(),
                    version: v.version.to_string(),
                    revision: v.revision_id.clone(),
                };
                self.vault
                    .seal(&key, &dir.join("state"), &dir.join("mem"))
                    .map_err(TakeError::Seal)
            });
        let _ = std::fs::remove_dir_all(&dir);
        sealed
    }

    /// A claim on the pool's memory budget for the snapshotting VM of a
    /// `memory_mib` function, waiting up to [`ROOM_WAIT`] for room.
    fn room(&self, memory_mib: u32, what: &str) -> Result<crate::pool::Aside, TakeError> {
        let start = Instant::now();
        loop {
            match self.pool.claim_aside(memory_mib, what) {
                Ok(claim) => return Ok(claim),
                Err(_) if start.elapsed() < ROOM_WAIT => std::thread::sleep(ROOM_POLL),
                Err(_) => return Err(TakeError::NoMemory(ROOM_WAIT)),
            }
        }
    }

    /// Starts again the snapshots an earlier emberd left `Pending`.
    pub fn resume_pending(self: &Arc<Self>) {
        let Ok((funcs, _)) = self.store.list_functions(None, usize::MAX) else {
            return;
        };
        for f in funcs {
            for v in self.store.list_versions(&f.name).unwrap_or_default() {
                if v.state == VersionState::Pending {
                    self.start(&f.name, &v);
                }
            }
        }
    }
}
