//! The pool's background pass: reaps idle environments past the idle
//! timeout, retires idle ones past their maximum lifetime or whose VM died,
//! and keeps each provisioned-concurrency target topped up with ready
//! environments (replacing any that die or age out).

use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a provisioned target waits after a failed start before trying again.
pub(super) const RETRY_AFTER: Duration = Duration::from_secs(2);

use super::{EnvState, Pool, Slot, SpecFn, VersionKey, Warm};

/// Provisioned concurrency for one (function, qualifier), resolved to the
/// version it runs.
#[derive(Clone)]
pub struct Target {
    pub function: String,
    pub qualifier: String,
    pub key: VersionKey,
    pub count: u32,
    /// The function's memory (MiB): what each environment claims.
    pub memory_mib: u32,
    /// Makes the spec for each new environment of this target.
    pub spec: Arc<dyn Fn() -> SpecFn + Send + Sync>,
}

impl Pool {
    /// Replaces the provisioned targets. Environments no longer needed lose
    /// their provisioned mark and age out like on-demand ones.
    pub fn set_targets(&self, targets: Vec<Target>) {
        let mut inner = self.lock();
        let mut keep: std::collections::HashMap<VersionKey, u32> = Default::default();
        for t in &targets {
            *keep.entry(t.key.clone()).or_default() += t.count;
        }
        let mut seen: std::collections::HashMap<VersionKey, u32> = Default::default();
        for i in inner.info.values_mut().filter(|i| i.provisioned) {
            let n = seen.entry(i.key.clone()).or_default();
            *n += 1;
            if *n > keep.get(&i.key).copied().unwrap_or(0) {
                i.provisioned = false;
            }
        }
        let inner = &mut *inner;
        for w in inner.idle.values_mut().flatten() {
            w.provisioned = inner.info.get(&w.id).is_some_and(|i| i.provisioned);
        }
        inner.targets = targets;
    }

    /// Status of a provisioned target: (ready, requested).
    pub fn target_status(&self, function: &str, qualifier: &str) -> Option<(u32, u32)> {
        let t = self
            .lock()
            .targets
            .iter()
            .find(|t| t.function == function && t.qualifier == qualifier)
            .cloned()?;
        Some((self.provisioned_ready(&t.key).min(t.count), t.count))
    }

    /// One maintenance pass.
    pub async fn maintain(self: &Arc<Self>) {
        let (reap, starts) = {
            let mut inner = self.lock();
            if inner.closed {
                return;
            }
            let mut reap: Vec<Warm> = Vec::new();
            for list in inner.idle.values_mut() {
                let mut i = 0;
                while i < list.len() {
                    let w = &mut list[i];
                    let idle_out = !w.provisioned && w.last_used.elapsed() >= self.cfg.idle_timeout;
                    let too_old = w.created.elapsed() >= self.cfg.max_lifetime;
                    if idle_out || too_old || !w.env.is_alive() {
                        reap.push(list.swap_remove(i));
                    } else {
                        i += 1;
                    }
                }
            }
            inner.idle.retain(|_, v| !v.is_empty());
            // Reaped provisioned environments no longer count toward their target.
            for w in &reap {
                if let Some(i) = inner.info.get_mut(&w.id) {
                    i.provisioned = false;
                }
                inner.claims.release(w.id);
            }
            let mut starts: Vec<(u64, VersionKey, SpecFn)> = Vec::new();
            let now = Instant::now();
            inner
                .failed_starts
                .retain(|_, at| now.duration_since(*at) < RETRY_AFTER);
            let targets: Vec<Target> = inner
                .targets
                .iter()
                .filter(|t| !inner.failed_starts.contains_key(&t.key))
                .cloned()
                .collect();
            for t in targets {
                let have = inner
                    .info
                    .values()
                    .filter(|i| i.provisioned && i.key == t.key && i.state != EnvState::Stopping)
                    .count() as u32;
                for _ in have..t.count {
                    // Provisioned environments claim memory like any other
                    // (evicting idle on-demand ones); no room: back off.
                    match self.cold_slot(&mut inner, &t.key, t.memory_mib, true, &mut reap) {
                        Ok(Slot::Cold(id)) => starts.push((id, t.key.clone(), (t.spec)())),
                        Ok(Slot::Warm(_)) | Err(_) => {
                            eprintln!(
                                "emberd: no memory left for a provisioned environment of {}:{}",
                                t.key.function, t.key.version
                            );
                            inner.failed_starts.insert(t.key.clone(), now);
                            break;
                        }
                    }
                }
            }
            (reap, starts)
        };
        for w in reap {
            self.discard(w);
        }
        for (id, key, spec) in starts {
            let pool = self.clone();
            tokio::spawn(async move {
                match pool.launch(id, &key, spec, true).await {
                    Ok(w) => pool.checkin(w, true),
                    Err(e) => {
                        eprintln!(
                            "emberd: provisioned environment for {}:{} failed: {}",
                            key.function,
                            key.version,
                            crate::util::error_chain(&e)
                        );
                        pool.lock().failed_starts.insert(key, Instant::now());
                    }
                }
            });
        }
    }

    /// Runs [`Pool::maintain`] every `period` until `shutdown` fires.
    pub async fn run_maintenance(
        self: Arc<Self>,
        period: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.maintain().await,
                _ = shutdown.changed() => return,
            }
        }
    }
}
