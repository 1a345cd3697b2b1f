//! Restored spares (SnapStart restore slots, `emberd --snapstart-spares N`):
//! per SnapStart version, up to N environments restored from its snapshot
//! ahead of need (jailed `ember-vmm` started, `PUT /snapshot/load` done, the
//! agent back with the clone's fresh seed and its after-restore hook run),
//! kept by a refill thread, so a cold start of the version takes one instead
//! of paying the VMM start and the load on its critical path. A version is
//! stocked once it has had a cold start (demand), and dropped when its
//! sealed snapshot is gone. Each spare is handed out once and never returns
//! to the stock (it is a fresh clone: its own seed, its own pages), and while
//! it waits it holds a claim on the pool's memory budget ([`Budget`]); with
//! no room, no spare is made. Their pids live in `run/restored.pids` for
//! crash cleanup.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::pidfile::PidFile;
use super::snapstart::Restorer;
use super::{kill_started, EnvSpec, Environment};
use crate::snapstart::vault::SnapKey;
use crate::util::OnSpawn;

/// Room in the host's memory budget, for VMs the pool does not keep.
pub trait Budget: Send + Sync {
    /// A claim for one VM of a `memory_mib` function, given back when the
    /// returned value is dropped; `None` when there is no room.
    fn claim(&self, memory_mib: u32, what: &str) -> Option<Box<dyn Send>>;
}

/// One restored environment waiting for its first invocation.
struct Spare {
    env: Environment,
    /// How long its restore took (reported with its first invocation).
    restore: Duration,
    _claim: Box<dyn Send>,
}

#[derive(Default)]
struct State {
    stock: HashMap<SnapKey, Vec<Spare>>,
    /// The versions to keep stocked, with the spec their restores use.
    wanted: HashMap<SnapKey, EnvSpec>,
    /// The pid of the spare being restored, until it joins the stock.
    starting: Option<u32>,
    /// When a spare was last taken ([`REFILL_DELAY`]).
    last_take: Option<Instant>,
}

pub struct Restored {
    per_version: usize,
    work_root: PathBuf,
    restorer: Restorer,
    state: Mutex<State>,
    wake: Condvar,
    closed: AtomicBool,
    pids: PidFile,
    budget: OnceLock<Arc<dyn Budget>>,
}

/// How often the refill thread looks again when it has nothing to do.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How long after a spare is taken the refill waits before restoring the
/// next: a restore (jailer, VMM start, load: ~20 ms of CPU) started at once
/// competes with the taken spare's first invocation for the host's CPUs
/// (measured on 2 cores: restored-spare cold start 5.25 ms p50 with the
/// refill at once).
const REFILL_DELAY: Duration = Duration::from_millis(100);

impl Restored {
    /// Starts keeping up to `per_version` restored spares of each wanted
    /// version, restored with `restorer`, below `run_dir/restored`.
    pub fn start(restorer: Restorer, per_version: usize, run_dir: &Path) -> Arc<Self> {
        let r = Arc::new(Self {
            per_version,
            work_root: run_dir.join("restored"),
            restorer,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            closed: AtomicBool::new(false),
            pids: PidFile::named(run_dir, "restored.pids"),
            budget: OnceLock::new(),
        });
        let me = r.clone();
        let spawned = std::thread::Builder::new()
            .name("restored-spares".into())
            .spawn(move || me.refill());
        if let Err(e) = spawned {
            eprintln!("emberd: no restored spares: {e}");
        }
        r
    }

    /// Spares are made only with room in `budget` (none before this is set).
    pub fn set_budget(&self, budget: Arc<dyn Budget>) {
        let _ = self.budget.set(budget);
        self.wake.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write_pids(&self, st: &State) {
        let pids: Vec<u32> = st
            .stock
            .values()
            .flatten()
            .map(|s| s.env.pid())
            .chain(st.starting)
            .collect();
        self.pids.write(&pids);
    }

    /// A spare restored from `key`'s snapshot, with its restore time, if
    /// one waits; either way `key` is kept stocked from now on (`spec` is
    /// what its restores use).
    pub fn take(&self, key: &SnapKey, spec: &EnvSpec) -> Option<(Environment, Duration)> {
        let mut st = self.lock();
        if !st.wanted.contains_key(key) {
            let mut template = spec.clone();
            template.work_dir = self.work_root.clone();
            st.wanted.insert(key.clone(), template);
        }
        let mut found = None;
        if let Some(list) = st.stock.get_mut(key) {
            while let Some(s) = list.pop() {
                if s.env.is_usable() && crate::procfs::running(s.env.pid()) {
                    found = Some((s.env, s.restore));
                    break;
                }
                // A dead spare: dropping it reaps it and gives its claim back.
            }
        }
        if found.is_some() {
            st.last_take = Some(Instant::now());
        }
        self.write_pids(&st);
        drop(st);
        self.wake.notify_one();
        found
    }

    /// The next version short of spares, if any (versions whose snapshot
    /// is gone are dropped, their spares with them).
    fn next_wanted(&self, st: &mut State) -> Option<(SnapKey, EnvSpec)> {
        let vault = self.restorer.vault();
        st.wanted.retain(|k, _| vault.has(&k.function, &k.version));
        let wanted = &st.wanted;
        st.stock.retain(|k, _| wanted.contains_key(k));
        for list in st.stock.values_mut() {
            list.retain(|s| s.env.is_usable() && crate::procfs::running(s.env.pid()));
        }
        st.wanted
            .iter()
            .find(|(k, _)| st.stock.get(*k).map_or(0, Vec::len) < self.per_version)
            .map(|(k, s)| (k.clone(), s.clone()))
    }

    fn refill(self: Arc<Self>) {
        loop {
            let next = {
                let mut st = self.lock();
                loop {
                    if self.closed.load(Ordering::Acquire) {
                        return;
                    }
                    let settle = st
                        .last_take
                        .map(|t| REFILL_DELAY.saturating_sub(t.elapsed()))
                        .unwrap_or_default();
                    if settle.is_zero() {
                        if let Some(n) = self.next_wanted(&mut st) {
                            break n;
                        }
                    }
                    let wait = if settle.is_zero() { IDLE_POLL } else { settle };
                    st = self
                        .wake
                        .wait_timeout(st, wait)
                        .map(|r| r.0)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
            };
            let (key, spec) = next;
            let what = format!("a restored spare of {}:{}", key.function, key.version);
            let claim = self
                .budget
                .get()
                .and_then(|b| b.claim(spec.memory_mib, &what));
            let Some(claim) = claim else {
                // No room (or no budget yet): look again later.
                std::thread::sleep(IDLE_POLL);
                continue;
            };
            let me = self.clone();
            let on_spawn = OnSpawn::new(move |pid| me.spawned(pid));
            let restored = self.restorer.restore(&spec, &key, &on_spawn, None);
            let mut st = self.lock();
            st.starting = None;
            match restored {
                Ok(env) if !self.closed.load(Ordering::Acquire) => {
                    let restore = env.launch_time();
                    st.stock.entry(key).or_default().push(Spare {
                        env,
                        restore,
                        _claim: claim,
                    });
                    self.write_pids(&st);
                }
                Ok(env) => {
                    drop(st);
                    env.shutdown();
                    return;
                }
                Err(e) => {
                    // Not stocked again until its next cold start.
                    st.wanted.remove(&key);
                    self.write_pids(&st);
                    drop(st);
                    eprintln!(
                        "emberd: restored spare of {}:{} failed: {}",
                        key.function,
                        key.version,
                        crate::util::error_chain(&e)
                    );
                }
            }
        }
    }

    /// A spare's process exists: record it; kill it if the stock closed.
    fn spawned(&self, pid: u32) {
        let mut st = self.lock();
        st.starting = Some(pid);
        self.write_pids(&st);
        drop(st);
        if self.closed.load(Ordering::Acquire) {
            kill_started(pid);
        }
    }

    /// Stops the refill thread and every spare.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_all();
        let (stock, starting) = {
            let mut st = self.lock();
            (std::mem::take(&mut st.stock), st.starting)
        };
        if let Some(pid) = starting {
            kill_started(pid);
        }
        for s in stock.into_values().flatten() {
            s.env.shutdown();
        }
        self.pids.write(&[]);
    }
}
