//! Execution environments: a pool per function *version* (keyed by its
//! revision, so updating `$LATEST` retires its environments and nothing is
//! ever reused across versions), one invocation per environment at a time,
//! warm reuse, idle reaping, a maximum lifetime (idle environments are
//! retired, busy ones when their invocation ends), provisioned concurrency
//! (see [`maintain`]), concurrency admission ([`policy`]) and memory
//! admission ([`claim`], [`reserve`]: every environment, warm idle ones too,
//! holds a claim on the host's memory budget; least recently used idle ones
//! are evicted to make room).

pub mod claim;
mod maintain;
pub mod policy;
mod reserve;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::env::pidfile::PidFile;
use crate::env::{
    EnvError, EnvLauncher, EnvSpec, Fault, InvokeOutput, InvokeRequest, LaunchError, OnSpawn,
    RunningEnv,
};
use claim::Claims;
pub use maintain::Target;
use policy::{Admission, Throttle};
pub use reserve::{budget, Aside, Slot};

/// Identity of a pool: environments are only ever reused under the same key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VersionKey {
    pub function: String,
    /// `$LATEST` or a version number.
    pub version: String,
    /// The revision id of `$LATEST` or of the published version.
    pub revision: String,
}

/// Extra time past the environment's own backstop before the pool kills the
/// VM (short under test so that the backstop's tests run quickly).
const HOST_GRACE: Duration = if cfg!(test) {
    Duration::from_millis(50)
} else {
    Duration::from_secs(3)
};

#[derive(Clone, Debug)]
pub struct PoolConfig {
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub host_limit: u32,
    /// Bytes all environments together may claim (see [`claim`]).
    pub memory_budget: u64,
    /// Where work directories and the pid file live.
    pub run_dir: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnvState {
    Starting,
    Idle,
    Busy,
    Stopping,
}

impl EnvState {
    pub fn as_str(self) -> &'static str {
        match self {
            EnvState::Starting => "starting",
            EnvState::Idle => "idle",
            EnvState::Busy => "busy",
            EnvState::Stopping => "stopping",
        }
    }
}

/// What `ember env list` shows about one environment.
#[derive(Clone, Debug)]
pub struct EnvInfo {
    pub id: u64,
    pub key: VersionKey,
    pub state: EnvState,
    pub created: Instant,
    pub invocations: u64,
    /// Known from the moment the process is spawned (while Starting too).
    pub pid: Option<u32>,
    pub provisioned: bool,
}

/// A running environment while it is out of the idle list.
pub struct Warm {
    pub id: u64,
    env: Box<dyn RunningEnv>,
    key: VersionKey,
    created: Instant,
    last_used: Instant,
    provisioned: bool,
}

impl Warm {
    pub fn pid(&self) -> Option<u32> {
        self.env.pid()
    }
}

#[derive(Default)]
struct Inner {
    idle: HashMap<VersionKey, Vec<Warm>>,
    info: BTreeMap<u64, EnvInfo>,
    stale: HashSet<VersionKey>,
    admission: Admission,
    /// Memory claimed by every environment that exists, by id.
    claims: Claims,
    targets: Vec<Target>,
    /// Provisioned keys whose last start failed, and when: no new start
    /// for them until [`maintain::RETRY_AFTER`] has passed.
    failed_starts: HashMap<VersionKey, Instant>,
    closed: bool,
    /// Shutdown began: no environment starts any more, and any that was
    /// starting has been killed (see [`Pool::stop_starts`]).
    stopping: bool,
}

pub struct Pool {
    launcher: Arc<dyn EnvLauncher>,
    cfg: PoolConfig,
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    pids: PidFile,
}

/// Holds one unit of admitted concurrency; dropping it gives it back.
pub struct Admitted {
    pool: Arc<Pool>,
    function: String,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.pool.lock().admission.release(&self.function);
    }
}

/// Builds the spec of a new environment (loads and decrypts the code), run
/// only when no warm environment is available.
pub type SpecFn = Box<dyn FnOnce(u64, PathBuf) -> Result<EnvSpec, EnvError> + Send>;

impl Pool {
    pub fn new(launcher: Arc<dyn EnvLauncher>, cfg: PoolConfig) -> Arc<Self> {
        let _ = std::fs::create_dir_all(cfg.run_dir.join("envs"));
        let inner = Inner {
            admission: Admission::new(cfg.host_limit),
            claims: Claims::new(cfg.memory_budget),
            ..Default::default()
        };
        Arc::new(Self {
            pids: PidFile::new(&cfg.run_dir),
            launcher,
            cfg,
            inner: Mutex::new(inner),
            next_id: AtomicU64::new(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters behind; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn config(&self) -> &PoolConfig {
        &self.cfg
    }

    pub fn admit(self: &Arc<Self>, function: &str) -> Result<Admitted, Throttle> {
        self.lock().admission.admit(function)?;
        Ok(Admitted {
            pool: self.clone(),
            function: function.to_string(),
        })
    }

    pub fn can_reserve(&self, function: &str, n: u32) -> bool {
        self.lock().admission.can_reserve(function, n)
    }

    pub fn set_reserved(&self, function: &str, n: Option<u32>) {
        self.lock().admission.set_reserved(function, n);
    }

    pub fn host_limit(&self) -> u32 {
        self.lock().admission.host_limit()
    }

    /// A warm environment of `key`, or a new one (of a `memory_mib`
    /// function) started with `spec`. Returns whether it was a cold start.
    /// [`Pool::reserve`] then [`Pool::start`], for callers that need not
    /// tell a memory throttle from a failed start.
    pub async fn checkout(
        self: &Arc<Self>,
        key: &VersionKey,
        memory_mib: u32,
        spec: SpecFn,
    ) -> Result<(Warm, bool), EnvError> {
        let slot = self
            .reserve(key, memory_mib)
            .map_err(|_| EnvError::Launch(LaunchError::NoMemory))?;
        self.start(key, slot, spec).await
    }

    /// Registers a new environment of `key` in state Starting and returns its id.
    fn register(&self, inner: &mut Inner, key: &VersionKey, provisioned: bool) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let info = EnvInfo {
            id,
            key: key.clone(),
            state: EnvState::Starting,
            created: Instant::now(),
            invocations: 0,
            pid: None,
            provisioned,
        };
        inner.info.insert(id, info);
        id
    }

    /// Launches environment `id` (registered by [`Pool::begin`]).
    async fn launch(
        self: &Arc<Self>,
        id: u64,
        key: &VersionKey,
        spec: SpecFn,
        provisioned: bool,
    ) -> Result<Warm, EnvError> {
        let work_dir = self.cfg.run_dir.join("envs").join(id.to_string());
        let launcher = self.launcher.clone();
        let wd = work_dir.clone();
        let pool = self.clone();
        let on_spawn = OnSpawn::new(move |pid| pool.spawned(id, pid));
        let stopping = self.lock().stopping;
        let launched = tokio::task::spawn_blocking(move || {
            if stopping {
                return Err(EnvError::Launch(LaunchError::ShuttingDown));
            }
            std::fs::create_dir_all(&wd).map_err(|e| EnvError::Launch(LaunchError::WorkDir(e)))?;
            let spec = spec(id, wd)?;
            launcher.launch(&spec, &on_spawn)
        })
        .await
        .unwrap_or_else(|e| Err(EnvError::Launch(LaunchError::Panicked(e))));
        match launched {
            Ok(env) => {
                let pid = env.pid();
                let now = Instant::now();
                let w = Warm {
                    id,
                    env,
                    key: key.clone(),
                    created: now,
                    last_used: now,
                    provisioned,
                };
                let mut inner = self.lock();
                if let Some(i) = inner.info.get_mut(&id) {
                    i.pid = pid;
                    i.created = now;
                }
                self.write_pids(&inner);
                Ok(w)
            }
            Err(e) => {
                let stopping = {
                    let mut inner = self.lock();
                    inner.info.remove(&id);
                    inner.claims.release(id);
                    inner.stopping
                };
                let _ = std::fs::remove_dir_all(&work_dir);
                // A start killed by shutdown says so, not how its VM died.
                Err(if stopping {
                    EnvError::Launch(LaunchError::ShuttingDown)
                } else {
                    e
                })
            }
        }
    }

    /// Records the pid of environment `id` the moment its process exists, so
    /// the pid file, shutdown and crash cleanup see it while it starts. A
    /// process spawned after shutdown began is killed at once.
    fn spawned(&self, id: u64, pid: u32) {
        let mut inner = self.lock();
        if let Some(i) = inner.info.get_mut(&id) {
            i.pid = Some(pid);
        }
        self.write_pids(&inner);
        if inner.stopping {
            drop(inner);
            crate::env::kill_started(pid);
        }
    }

    /// The first step of shutdown, taken as soon as it is asked for: no
    /// environment starts any more, and those starting are killed now (their
    /// launches then fail at once) instead of being waited for. Warm
    /// environments keep serving the invocations being drained.
    pub fn stop_starts(&self) {
        let starting: Vec<u32> = {
            let mut inner = self.lock();
            inner.stopping = true;
            inner
                .info
                .values()
                .filter(|i| i.state == EnvState::Starting)
                .filter_map(|i| i.pid)
                .collect()
        };
        for pid in starting {
            crate::env::kill_started(pid);
        }
    }

    /// Runs one invocation on `w`, whose function has `timeout`. The
    /// environment enforces the deadline itself; the pool's backstop (for an
    /// agent that ignores it) kills the VM once the environment's own grace
    /// and [`HOST_GRACE`] have passed too, and reports Lambda's timeout
    /// naming the function's `timeout`. The environment goes back to the
    /// pool if it is healthy, current and young enough; otherwise it is
    /// discarded.
    pub async fn invoke(
        self: &Arc<Self>,
        mut w: Warm,
        input: InvokeRequest,
        timeout: Duration,
    ) -> Result<InvokeOutput, EnvError> {
        let pid = w.env.pid();
        let backstop = timeout + w.env.deadline_grace() + HOST_GRACE;
        let task = tokio::task::spawn_blocking(move || {
            let r = w.env.invoke(&input);
            (w, r)
        });
        tokio::pin!(task);
        let (w, result, timed_out) = match tokio::time::timeout(backstop, &mut task).await {
            Ok(joined) => match joined {
                Ok((w, r)) => (Some(w), r, false),
                Err(e) => (None, Err(EnvError::Died(Fault::Task(e))), false),
            },
            Err(_) => {
                // Backstop for an agent that ignores its deadline: kill the
                // VM so the blocked invoke returns, then discard it.
                if let Some(pid) = pid {
                    // SAFETY: kill(2) on our own child's pid; no memory involved.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                }
                let w = task.await.ok().map(|(w, _)| w);
                (w, Err(EnvError::Died(Fault::TimedOut)), true)
            }
        };
        let Some(mut w) = w else { return result };
        if let Err(EnvError::Died(fault)) = &result {
            let why = crate::util::error_chain(fault);
            // An environment fault (its VM died, e.g. killed by seccomp, or
            // broke the conversation): the caller gets a function error, the
            // operator this line; the environment is discarded below.
            eprintln!(
                "emberd: environment {} ({}:{}) fault: {why}",
                w.id, w.key.function, w.key.version
            );
        }
        w.last_used = Instant::now();
        if let Some(i) = self.lock().info.get_mut(&w.id) {
            i.invocations += 1;
        }
        let healthy = match &result {
            Ok(out) => out.reusable(),
            Err(_) => false,
        };
        self.checkin(w, healthy);
        if timed_out {
            return Ok(InvokeOutput::timed_out(timeout));
        }
        result
    }

    /// Returns `w` to its idle list, or discards it.
    pub fn checkin(self: &Arc<Self>, mut w: Warm, healthy: bool) {
        let mut inner = self.lock();
        // The target may have changed while it was busy.
        w.provisioned = inner.info.get(&w.id).is_some_and(|i| i.provisioned);
        let keep = healthy
            && !inner.closed
            && !inner.stale.contains(&w.key)
            && w.created.elapsed() < self.cfg.max_lifetime;
        if keep {
            if let Some(i) = inner.info.get_mut(&w.id) {
                i.state = EnvState::Idle;
            }
            inner.idle.entry(w.key.clone()).or_default().push(w);
        } else {
            drop(inner);
            self.discard(w);
        }
    }

    /// Stops `w` on a blocking thread; it is listed as Stopping (and stays
    /// in the pid file) until its process is gone. Its memory claim is
    /// given back now: the VM is being killed, and a start that evicted it
    /// must not wait for the reaping.
    fn discard(self: &Arc<Self>, w: Warm) {
        let work_dir = self.cfg.run_dir.join("envs").join(w.id.to_string());
        {
            let mut inner = self.lock();
            if let Some(i) = inner.info.get_mut(&w.id) {
                i.state = EnvState::Stopping;
            }
            inner.claims.release(w.id);
        }
        let (pool, id, env) = (self.clone(), w.id, w.env);
        let stop = move || {
            env.shutdown();
            let _ = std::fs::remove_dir_all(&work_dir);
            let mut inner = pool.lock();
            inner.info.remove(&id);
            pool.write_pids(&inner);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(stop)),
            Err(_) => stop(),
        }
    }

    fn write_pids(&self, inner: &Inner) {
        let pids: Vec<u32> = inner.info.values().filter_map(|i| i.pid).collect();
        self.pids.write(&pids);
    }

    /// Retires every environment of `function` (all versions when `version`
    /// is None): idle ones stop now, busy ones when their invocation ends.
    pub fn retire(self: &Arc<Self>, function: &str, version: Option<&str>) {
        let matches =
            |k: &VersionKey| k.function == function && version.is_none_or(|v| k.version == v);
        let victims: Vec<Warm> = {
            let mut inner = self.lock();
            let keys: Vec<VersionKey> = inner
                .info
                .values()
                .map(|i| i.key.clone())
                .chain(inner.idle.keys().cloned())
                .filter(|k| matches(k))
                .collect();
            inner.stale.extend(keys);
            let idle_keys: Vec<VersionKey> =
                inner.idle.keys().filter(|k| matches(k)).cloned().collect();
            idle_keys
                .iter()
                .filter_map(|k| inner.idle.remove(k))
                .flatten()
                .collect()
        };
        for w in victims {
            self.discard(w);
        }
    }

    pub fn list(&self) -> Vec<EnvInfo> {
        self.lock().info.values().cloned().collect()
    }

    /// Idle environments per (function, version), and how many
    /// environments are busy or starting: what a fleet host publishes.
    pub fn load(&self) -> (BTreeMap<(String, String), u32>, u32) {
        let inner = self.lock();
        let mut idle = BTreeMap::new();
        let mut busy = 0;
        for i in inner.info.values() {
            match i.state {
                EnvState::Idle => {
                    *idle
                        .entry((i.key.function.clone(), i.key.version.clone()))
                        .or_insert(0) += 1
                }
                EnvState::Busy | EnvState::Starting => busy += 1,
                EnvState::Stopping => {}
            }
        }
        (idle, busy)
    }

    /// Whether an idle environment of `key` waits here, and how many
    /// environments are busy or starting: what placement weighs against
    /// the other hosts' beats.
    pub fn local_load(&self, key: &VersionKey) -> (bool, u32) {
        let inner = self.lock();
        let idle = inner.idle.get(key).is_some_and(|v| !v.is_empty());
        let busy = inner
            .info
            .values()
            .filter(|i| matches!(i.state, EnvState::Busy | EnvState::Starting))
            .count() as u32;
        (idle, busy)
    }

    /// Provisioned environments of `key` that are ready (idle or busy).
    pub fn provisioned_ready(&self, key: &VersionKey) -> u32 {
        self.lock()
            .info
            .values()
            .filter(|i| {
                i.provisioned && &i.key == key && matches!(i.state, EnvState::Idle | EnvState::Busy)
            })
            .count() as u32
    }

    /// Stops accepting environments back and stops every idle one; busy ones
    /// stop when their invocation returns. Returns once all are gone or
    /// `grace` has passed, then kills whatever is left.
    pub async fn shutdown(self: &Arc<Self>, grace: Duration) {
        self.stop_starts();
        let idle: Vec<Warm> = {
            let mut inner = self.lock();
            inner.closed = true;
            inner.targets.clear();
            inner.idle.drain().flat_map(|(_, v)| v).collect()
        };
        for w in idle {
            self.discard(w);
        }
        let until = Instant::now() + grace;
        while !self.lock().info.is_empty() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for i in self.list() {
            if let Some(pid) = i.pid {
                // SAFETY: kill(2) on a child pid we launched; no memory involved.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        // Give the blocking shutdowns a moment to reap what was just killed.
        let until = Instant::now() + Duration::from_secs(2);
        while !self.lock().info.is_empty() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.pids.write(&[]);
        let launcher = self.launcher.clone();
        let _ = tokio::task::spawn_blocking(move || launcher.close()).await;
    }
}

#[cfg(test)]
mod tests;
