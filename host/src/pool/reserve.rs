//! Reserving an environment for one invocation, synchronously (so a refusal
//! is the caller's 429, not a failed start): a warm idle environment of the
//! version, or a claim on the memory budget for a new one. When the claim
//! does not fit, least-recently-used idle environments (of any function,
//! never provisioned ones) are evicted until it does; if even evicting all
//! of them would not make room, nothing is evicted and the start is refused.

use std::sync::Arc;
use std::time::Instant;

use super::claim::claim_bytes;
use super::{EnvError, EnvState, Inner, Pool, SpecFn, Throttle, VersionKey, Warm};

/// What [`Pool::reserve`] set aside.
pub enum Slot {
    /// A warm environment, now busy.
    Warm(Warm),
    /// A new environment registered as Starting, its memory claimed.
    Cold(u64),
}

impl Pool {
    /// A warm environment of `key`, or room for a new one of a `memory_mib`
    /// function (evicting idle environments, least recently used first).
    /// `Throttle::Memory` when there is no room even then.
    pub fn reserve(self: &Arc<Self>, key: &VersionKey, memory_mib: u32) -> Result<Slot, Throttle> {
        let mut discard: Vec<Warm> = Vec::new();
        let slot = {
            let mut inner = self.lock();
            let found = self.take_warm(&mut inner, key, &mut discard);
            match found {
                Some(w) => Ok(Slot::Warm(w)),
                None => self.cold_slot(&mut inner, key, memory_mib, false, &mut discard),
            }
        };
        for w in discard {
            self.discard(w);
        }
        slot
    }

    /// Starts what `slot` reserved (nothing to start for a warm one).
    /// Returns the environment, busy, and whether it was a cold start.
    pub async fn start(
        self: &Arc<Self>,
        key: &VersionKey,
        slot: Slot,
        spec: SpecFn,
    ) -> Result<(Warm, bool), EnvError> {
        let id = match slot {
            Slot::Warm(w) => return Ok((w, false)),
            Slot::Cold(id) => id,
        };
        let w = self.launch(id, key, spec, false).await?;
        if let Some(i) = self.lock().info.get_mut(&w.id) {
            i.state = EnvState::Busy;
        }
        Ok((w, true))
    }

    /// (budget, claimed) bytes of the memory admission.
    pub fn memory(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.claims.budget(), inner.claims.claimed())
    }

    /// Pops the most recently used idle environment of `key` that is young
    /// enough, marked busy; those past their lifetime go to `discard`.
    fn take_warm(
        &self,
        inner: &mut Inner,
        key: &VersionKey,
        discard: &mut Vec<Warm>,
    ) -> Option<Warm> {
        let list = inner.idle.get_mut(key)?;
        let mut found = None;
        while let Some(w) = list.pop() {
            if w.created.elapsed() >= self.cfg.max_lifetime {
                discard.push(w);
            } else {
                found = Some(w);
                break;
            }
        }
        for w in discard.iter() {
            inner.claims.release(w.id);
        }
        let w = found?;
        if let Some(i) = inner.info.get_mut(&w.id) {
            i.state = EnvState::Busy;
        }
        Some(w)
    }

    /// Registers a new environment of `key` with its memory claimed, making
    /// room by evicting idle environments into `discard`.
    pub(super) fn cold_slot(
        &self,
        inner: &mut Inner,
        key: &VersionKey,
        memory_mib: u32,
        provisioned: bool,
        discard: &mut Vec<Warm>,
    ) -> Result<Slot, Throttle> {
        let bytes = claim_bytes(memory_mib);
        let what = format!("{}:{}", key.function, key.version);
        evict_for(inner, bytes, &what, discard)?;
        let id = self.register(inner, key, provisioned);
        if !inner.claims.claim(id, bytes) {
            // make_room just freed enough; unreachable unless the budget is
            // smaller than one claim, which make_room refuses.
            inner.info.remove(&id);
            return Err(Throttle::Memory);
        }
        Ok(Slot::Cold(id))
    }
}

/// Memory claimed for a VM the pool does not keep (the environment a
/// SnapStart snapshot is taken from); given back when dropped.
pub struct Aside {
    pool: Arc<Pool>,
    id: u64,
}

impl Drop for Aside {
    fn drop(&mut self) {
        self.pool.lock().claims.release(self.id);
    }
}

impl Pool {
    /// Claims room for a VM of a `memory_mib` function that is not one of
    /// the pool's environments, evicting idle ones as a cold start would.
    /// `Throttle::Memory` when even that leaves no room.
    pub fn claim_aside(self: &Arc<Self>, memory_mib: u32, what: &str) -> Result<Aside, Throttle> {
        let mut discard = Vec::new();
        let claimed = {
            let mut inner = self.lock();
            let bytes = claim_bytes(memory_mib);
            evict_for(&mut inner, bytes, what, &mut discard).and_then(|()| {
                let id = self
                    .next_id
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match inner.claims.claim(id, bytes) {
                    true => Ok(Aside {
                        pool: self.clone(),
                        id,
                    }),
                    false => Err(Throttle::Memory),
                }
            })
        };
        for w in discard {
            self.discard(w);
        }
        claimed
    }
}

/// Room for restored spares ([`crate::env::restored::Budget`]): free room
/// only, never an idle environment evicted for a spare.
struct SpareBudget(std::sync::Weak<Pool>);

impl crate::env::restored::Budget for SpareBudget {
    fn claim(&self, memory_mib: u32, _what: &str) -> Option<Box<dyn Send>> {
        let pool = self.0.upgrade()?;
        let bytes = claim_bytes(memory_mib);
        let id = pool
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !pool.lock().claims.claim(id, bytes) {
            return None;
        }
        Some(Box::new(Aside { pool, id }))
    }
}

/// The budget restored spares claim from (see [`SpareBudget`]).
pub fn budget(pool: &Arc<Pool>) -> Arc<dyn crate::env::restored::Budget> {
    Arc::new(SpareBudget(Arc::downgrade(pool)))
}

/// [`make_room`] for `bytes`, the evicted environments (logged, as making
/// room for `what`) into `discard`.
fn evict_for(
    inner: &mut Inner,
    bytes: u64,
    what: &str,
    discard: &mut Vec<Warm>,
) -> Result<(), Throttle> {
    let evicted = make_room(inner, bytes).ok_or(Throttle::Memory)?;
    for w in evicted {
        eprintln!(
            "emberd: evicting idle environment {} ({}:{}) to make room for {what}",
            w.id, w.key.function, w.key.version
        );
        discard.push(w);
    }
    Ok(())
}

/// Frees at least `bytes` of the budget by taking idle, unprovisioned
/// environments out of `inner` (least recently used first) and releasing
/// their claims. None (and nothing taken) if that cannot free enough.
fn make_room(inner: &mut Inner, bytes: u64) -> Option<Vec<Warm>> {
    let mut free = inner.claims.free();
    if bytes <= free {
        return Some(Vec::new());
    }
    let mut idle: Vec<(Instant, u64)> = inner
        .idle
        .values()
        .flatten()
        .filter(|w| !w.provisioned)
        .map(|w| (w.last_used, w.id))
        .collect();
    idle.sort();
    let mut chosen = Vec::new();
    for (_, id) in idle {
        if free >= bytes {
            break;
        }
        free += inner.claims.of(id);
        chosen.push(id);
    }
    if free < bytes {
        return None;
    }
    let mut out = Vec::new();
    for list in inner.idle.values_mut() {
        let mut i = 0;
        while i < list.len() {
            if chosen.contains(&list[i].id) {
                out.push(list.remove(i));
            } else {
                i += 1;
            }
        }
    }
    inner.idle.retain(|_, v| !v.is_empty());
    for w in &out {
        inner.claims.release(w.id);
    }
    Some(out)
}
