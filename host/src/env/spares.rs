//! Spare VMs: a small stock of booted, never-initialized environments
//! (`ember-vmm` + agent up to `Ready`, no function code yet) kept by a refill
//! thread, so a cold start only pays for `Init`. A spare is handed out once,
//! initialized with exactly one function version and never returned to the
//! stock, so it is as fresh as a VM booted on demand (the function's random
//! seed arrives with `Init`, so spares share nothing). Their pids live in
//! `run/spare.pids` for crash cleanup.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::pidfile::PidFile;
use super::{kill_started, Environment, LaunchConfig};
use crate::util::OnSpawn;

pub struct Spares {
    cfg: LaunchConfig,
    want: usize,
    stock: Mutex<Vec<Environment>>,
    wake: Condvar,
    closed: AtomicBool,
    pids: PidFile,
    /// The pid of the spare being booted, from its spawn until it joins the
    /// stock (so close and crash cleanup see it too).
    starting: Mutex<Option<u32>>,
    /// Told of every spare that booted (the AOT compiler learns the guest's
    /// CPU features from its `Ready` before any function launches).
    on_ready: Option<OnReady>,
}

/// What [`Spares`] calls with each booted spare.
pub type OnReady = Box<dyn Fn(&Environment) + Send + Sync>;

impl Spares {
    /// Starts keeping `want` spares booted with `base` (their memory size is
    /// `base.mem_mib`; only functions of that size use them).
    pub fn start(
        mut base: LaunchConfig,
        want: usize,
        run_dir: &Path,
        on_ready: Option<OnReady>,
    ) -> Arc<Self> {
        base.work_root = run_dir.join("spares");
        let s = Arc::new(Self {
            cfg: base,
            want,
            stock: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            closed: AtomicBool::new(false),
            pids: PidFile::named(run_dir, "spare.pids"),
            starting: Mutex::new(None),
            on_ready,
        });
        if want > 0 {
            let me = s.clone();
            let spawned = std::thread::Builder::new()
                .name("spare-vms".into())
                .spawn(move || me.refill());
            if let Err(e) = spawned {
                eprintln!("emberd: no spare VMs: {e}");
            }
        }
        s
    }

    pub fn mem_mib(&self) -> u32 {
        self.cfg.mem_mib
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Environment>> {
        self.stock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write_pids(&self, stock: &[Environment]) {
        let starting = *self.starting.lock().unwrap_or_else(|p| p.into_inner());
        let pids: Vec<u32> = stock.iter().map(|e| e.pid()).chain(starting).collect();
        self.pids.write(&pids);
    }

    /// A spare's process exists: record it; kill it if the stock closed.
    fn spawned(&self, pid: u32) {
        *self.starting.lock().unwrap_or_else(|p| p.into_inner()) = Some(pid);
        self.write_pids(&self.lock());
        if self.closed.load(Ordering::Acquire) {
            kill_started(pid);
        }
    }

    /// A live spare, if one is ready.
    pub fn take(&self) -> Option<Environment> {
        let mut stock = self.lock();
        let mut found = None;
        while let Some(env) = stock.pop() {
            if env.is_usable() && crate::procfs::running(env.pid()) {
                found = Some(env);
                break;
            }
            // Dead spare: dropping it reaps the process and removes its dir.
        }
        self.write_pids(&stock);
        drop(stock);
        self.wake.notify_one();
        found
    }

    fn refill(self: Arc<Self>) {
        loop {
            {
                let mut stock = self.lock();
                while !self.closed.load(Ordering::Acquire) && stock.len() >= self.want {
                    stock = self
                        .wake
                        .wait_timeout(stock, Duration::from_secs(1))
                        .map(|r| r.0)
                        .unwrap_or_else(|p| p.into_inner().0);
                    // Periodically drop spares that died while waiting.
                    stock.retain(|e| e.is_usable() && crate::procfs::running(e.pid()));
                }
                if self.closed.load(Ordering::Acquire) {
                    return;
                }
            }
            let me = self.clone();
            let launched =
                Environment::launch_with(&self.cfg, &OnSpawn::new(move |p| me.spawned(p)));
            *self.starting.lock().unwrap_or_else(|p| p.into_inner()) = None;
            match launched {
                Ok(env) => {
                    if let Some(f) = &self.on_ready {
                        f(&env);
                    }
                    let mut stock = self.lock();
                    if self.closed.load(Ordering::Acquire) {
                        drop(stock);
                        env.shutdown();
                        return;
                    }
                    stock.push(env);
                    self.write_pids(&stock);
                }
                Err(e) => {
                    eprintln!(
                        "emberd: spare VM failed to boot: {}",
                        crate::util::error_chain(&e)
                    );
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    /// Stops the refill thread and every spare.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_all();
        if let Some(pid) = *self.starting.lock().unwrap_or_else(|p| p.into_inner()) {
            kill_started(pid);
        }
        let stock: Vec<Environment> = std::mem::take(&mut *self.lock());
        for env in stock {
            env.shutdown();
        }
        self.pids.write(&[]);
    }
}
