//! Restore slots (`emberd --restore-slots N`): up to N jailed `ember-vmm`
//! processes started ahead of need in API-socket mode, bound to no function
//! (no snapshot loaded, no guest memory, the least memory and CPU limits),
//! so that a cold SnapStart restore without a restored spare only links the
//! decrypted snapshot into the slot's read-only `/snap` directory, raises
//! the slot's cgroup limits to the function's, and sends `PUT
//! /snapshot/load`: the jailer's set-up and the VMM's start leave the
//! critical path. A slot is used once (after its load it is that
//! environment's VMM); a refill thread starts the next one
//! [`REFILL_DELAY`] after a take. Slots are kept only while the vault holds
//! a sealed snapshot (SnapStart is in use). Their pids live in
//! `run/slots.pids` for crash cleanup.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::jail::{self, JAIL_SLOT_DIR};
use super::pidfile::PidFile;
use super::spawn::{self, LoadPaths, Started, API_SOCK};
use super::{kill_started, AgentError, Environment, LaunchConfig};
use crate::metrics::Metrics;
use crate::snapstart::vault::{Plain, Vault};
use crate::util::OnSpawn;

/// How often the refill thread looks again when it has nothing to do.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How long after a take the refill waits before starting the next slot: a
/// jailer + VMM start (~20 ms of CPU) at once would compete with the taken
/// slot's restore and first invocation for the host's CPUs (the restored
/// spares' reason, measured there).
const REFILL_DELAY: Duration = Duration::from_millis(100);

/// Why a slot could not take a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("cannot link the snapshot into the slot's {0}")]
    Link(PathBuf, #[source] std::io::Error),
    #[error("cannot set the slot's cgroup limits")]
    Limits(#[source] ember_jailer::CgroupError),
    #[error("the slot's VMM")]
    Agent(#[source] AgentError),
}

/// One started, unbound VMM.
pub struct Slot {
    /// `None` once it became an environment.
    started: Option<Started>,
    /// The host directory bound read-only at `/snap` in its jail.
    snap_dir: Option<PathBuf>,
}

impl Slot {
    pub fn pid(&self) -> Option<u32> {
        self.started.as_ref().map(|s| s.child.id())
    }

    /// Whether its VMM still runs (a jailer whose VMM died is on its way out).
    fn alive(&mut self) -> bool {
        let Some(s) = self.started.as_mut() else {
            return false;
        };
        if !matches!(s.child.try_wait(), Ok(None)) {
            return false;
        }
        !s.jailed
            || jail::children(s.child.id())
                .into_iter()
                .any(crate::procfs::running)
    }

    /// Makes `plain` visible to the slot's VMM, gives its cgroups the limits
    /// `cfg` asks for, and loads it: the environment `cfg` describes, with
    /// its agent `Ready`. On failure the slot's VMM is gone.
    pub fn restore(mut self, plain: &Plain, cfg: &LaunchConfig) -> Result<Environment, SlotError> {
        let Some(started) = self.started.take() else {
            return Err(SlotError::Agent(AgentError::Broken));
        };
        let load = match self.prepare(&started, plain, cfg) {
            Ok(l) => l,
            Err(e) => {
                started.discard();
                return Err(e);
            }
        };
        let env = Environment::restore_into(started, cfg, &load).map_err(SlotError::Agent);
        // The VMM has read the state file and mapped the memory file (or
        // failed): the links are no longer needed.
        self.remove_snap_dir();
        env
    }

    fn prepare(
        &self,
        started: &Started,
        plain: &Plain,
        cfg: &LaunchConfig,
    ) -> Result<LoadPaths, SlotError> {
        let uds = started.dir.join("v.sock").display().to_string();
        let (Some(dir), Some(j)) = (&self.snap_dir, &cfg.jail) else {
            // Unjailed: the VMM reads the decrypted files where they are.
            return Ok(LoadPaths {
                state: plain.state.display().to_string(),
                mem: plain.mem.display().to_string(),
                uds,
            });
        };
        // Hard links: the files stay root's and 0644 (the jail's uid reads,
        // never writes them) and the bind is read-only; no copy is made.
        for (from, name) in [(&plain.state, "state"), (&plain.mem, "mem")] {
            let to = dir.join(name);
            fs::hard_link(from, &to).map_err(|e| SlotError::Link(to, e))?;
        }
        let cpu = j
            .cpu_quota_us
            .map(|q| (q.into(), jail::CPU_PERIOD_US.into()));
        ember_jailer::relimit(&started.id, Some(jail::mem_limit_mib(cfg.mem_mib, j)), cpu)
            .map_err(SlotError::Limits)?;
        let in_jail = |name: &str| Path::new(JAIL_SLOT_DIR).join(name).display().to_string();
        Ok(LoadPaths {
            state: in_jail("state"),
            mem: in_jail("mem"),
            uds: jail::jail_uds(),
        })
    }

    fn remove_snap_dir(&mut self) {
        if let Some(d) = self.snap_dir.take() {
            let _ = fs::remove_dir_all(d);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(s) = self.started.take() {
            s.discard();
        }
        self.remove_snap_dir();
    }
}

#[derive(Default)]
struct State {
    ready: Vec<Slot>,
    /// The pid of the slot being started, until it is ready.
    starting: Option<u32>,
    /// When a slot was last taken ([`REFILL_DELAY`]).
    last_take: Option<Instant>,
}

/// The slots and their refill thread.
pub struct Slots {
    n: usize,
    /// The slot VMMs' launch config (work root, jail, least limits).
    cfg: LaunchConfig,
    /// Where slots' snapshot directories are made: in the vault's tmpfs
    /// directory, so the decrypted files can be hard-linked into them.
    snap_root: PathBuf,
    vault: Arc<Vault>,
    metrics: Option<Arc<Metrics>>,
    state: Mutex<State>,
    wake: Condvar,
    closed: AtomicBool,
    pids: PidFile,
}

impl Slots {
    /// Starts keeping `n` slots of `cfg`'s VMM (`cfg.work_root` is set to
    /// `run_dir/slots`) while `vault` holds a sealed snapshot.
    pub fn start(
        mut cfg: LaunchConfig,
        n: usize,
        run_dir: &Path,
        vault: Arc<Vault>,
        metrics: Option<Arc<Metrics>>,
    ) -> Arc<Self> {
        cfg.work_root = run_dir.join("slots");
        cfg.restore = None;
        let s = Arc::new(Self {
            n,
            snap_root: vault.plain_root().join("slots"),
            cfg,
            vault,
            metrics,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            closed: AtomicBool::new(false),
            pids: PidFile::named(run_dir, "slots.pids"),
        });
        let me = s.clone();
        let spawned = std::thread::Builder::new()
            .name("restore-slots".into())
            .spawn(move || me.refill());
        if let Err(e) = spawned {
            eprintln!("emberd: no restore slots: {e}");
        }
        s
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write_pids(&self, st: &State) {
        let pids: Vec<u32> = (st.ready.iter())
            .filter_map(Slot::pid)
            .chain(st.starting)
            .collect();
        self.pids.write(&pids);
        if let Some(m) = &self.metrics {
            m.restore_slots_ready(st.ready.len());
        }
    }

    /// A live slot, if one is ready (dead ones are discarded and counted).
    pub fn take(&self) -> Option<Slot> {
        let mut dead = Vec::new();
        let mut st = self.lock();
        let mut found = None;
        while let Some(mut s) = st.ready.pop() {
            if s.alive() {
                found = Some(s);
                break;
            }
            dead.push(s);
        }
        if found.is_some() {
            st.last_take = Some(Instant::now());
        }
        self.write_pids(&st);
        drop(st);
        self.wake.notify_one();
        for _ in &dead {
            self.discarded();
        }
        // Dropping reaps them and removes their directories.
        drop(dead);
        found
    }

    /// Counts a slot that was dead or failed its load.
    pub fn discarded(&self) {
        if let Some(m) = &self.metrics {
            m.restore_slot_discarded();
        }
    }

    fn refill(self: Arc<Self>) {
        loop {
            {
                let mut st = self.lock();
                loop {
                    if self.closed.load(Ordering::Acquire) {
                        return;
                    }
                    let before = st.ready.len();
                    st.ready.retain_mut(Slot::alive);
                    for _ in st.ready.len()..before {
                        self.discarded();
                    }
                    let settle = (st.last_take)
                        .map(|t| REFILL_DELAY.saturating_sub(t.elapsed()))
                        .unwrap_or_default();
                    let short = st.ready.len() < self.n;
                    if settle.is_zero() && short && self.vault.any() {
                        break;
                    }
                    let wait = if settle.is_zero() { IDLE_POLL } else { settle };
                    st = (self.wake.wait_timeout(st, wait))
                        .map(|r| r.0)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
            }
            match self.make() {
                Ok(slot) => {
                    let mut st = self.lock();
                    st.starting = None;
                    if self.closed.load(Ordering::Acquire) {
                        drop(st);
                        drop(slot);
                        return;
                    }
                    st.ready.push(slot);
                    self.write_pids(&st);
                }
                Err(e) => {
                    let mut st = self.lock();
                    st.starting = None;
                    self.write_pids(&st);
                    drop(st);
                    eprintln!(
                        "emberd: restore slot failed: {}",
                        crate::util::error_chain(&e)
                    );
                    std::thread::sleep(IDLE_POLL);
                }
            }
        }
    }

    /// Starts one slot and waits until its VMM's API socket answers.
    fn make(self: &Arc<Self>) -> Result<Slot, AgentError> {
        let mut cfg = self.cfg.clone();
        let mut slot = Slot {
            started: None,
            snap_dir: None,
        };
        let dir = self
            .cfg
            .jail
            .as_ref()
            .map(|_| self.snap_root.join(crate::util::uuid4()));
        if let Some(d) = &dir {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(d)
                .map_err(|e| AgentError::WorkDir(d.clone(), e))?;
            slot.snap_dir = Some(d.clone());
            cfg.slot = Some(d.clone());
        } else {
            cfg.slot = Some(self.cfg.work_root.clone());
        }
        let me = self.clone();
        let on_spawn = OnSpawn::new(move |pid| me.spawned(pid));
        let mut started = spawn::start(&cfg, &on_spawn)?;
        let until = Instant::now() + cfg.boot_timeout;
        let up = super::vmm_api::connect(&started.dir.join(API_SOCK), &mut started.child, until);
        slot.started = Some(started);
        up.map_err(AgentError::VmmApi)?;
        Ok(slot)
    }

    /// A slot's process exists: record it; kill it if the slots closed.
    fn spawned(&self, pid: u32) {
        let mut st = self.lock();
        st.starting = Some(pid);
        self.write_pids(&st);
        drop(st);
        if self.closed.load(Ordering::Acquire) {
            kill_started(pid);
        }
    }

    /// Stops the refill thread and every slot.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_all();
        let (ready, starting) = {
            let mut st = self.lock();
            (std::mem::take(&mut st.ready), st.starting)
        };
        if let Some(pid) = starting {
            kill_started(pid);
        }
        drop(ready);
        self.pids.write(&[]);
    }
}
