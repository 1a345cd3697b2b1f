//! Placement of a synchronous invocation in the fleet: this host's view of
//! every other host's latest heartbeat (kept current by a watch on the
//! membership bucket, see [`super::members`]) and the choice of where a
//! call that finds no idle warm environment here should run. The choice
//! only; sending the call there is the HTTP layer's (`api::forward`).
//!
//! Order: a live host whose beat shows an idle warm environment of the
//! version (most idle first, then least busy); else the least busy live
//! host below its capacity, if it is strictly less busy than this one;
//! else none (run here). Beats are at most [`FRESH`] old when used, so a
//! target may have become busy since: it then starts the call cold or
//! throttles it, as it would a call made to it directly. Calls this host
//! has forwarded and not yet seen answered count against the target's
//! idle and busy numbers, so a burst does not all go to the one host the
//! last beat showed idle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::members::Member;

/// A beat older than this (received here more than this long ago) is not
/// placed on: hosts beat every second, so this is two missed beats.
pub const FRESH: Duration = Duration::from_millis(2500);

/// Where a call goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub node_id: String,
    /// Its API's base URL (`http://host:port`).
    pub url: String,
    /// Whether its beat showed an idle warm environment of the version.
    pub warm: bool,
}

struct Seen {
    member: Member,
    at: Instant,
}

#[derive(Default)]
struct Inner {
    hosts: HashMap<String, Seen>,
    /// Calls forwarded and not yet answered, per target node.
    inflight: HashMap<String, u32>,
    /// The same, per (node, function, version): they take an idle
    /// environment each.
    inflight_warm: HashMap<(String, String, String), u32>,
}

/// This host's view of the fleet, for placement.
pub struct Placement {
    me: String,
    inner: Mutex<Inner>,
}

/// One forwarded call in flight; dropping it (the answer came, or the
/// forward failed) gives back what it took from the target's numbers.
pub struct InFlight {
    placement: Arc<Placement>,
    node: String,
    warm: Option<(String, String)>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut inner = self.placement.lock();
        if let Some(n) = inner.inflight.get_mut(&self.node) {
            *n = n.saturating_sub(1);
        }
        if let Some((f, v)) = self.warm.take() {
            let k = (self.node.clone(), f, v);
            if let Some(n) = inner.inflight_warm.get_mut(&k) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

impl Placement {
    pub fn new(me: &str) -> Arc<Self> {
        Arc::new(Self {
            me: me.to_string(),
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain numbers: a panic elsewhere leaves them usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A host's beat, as received now.
    pub fn observe(&self, member: Member) {
        let node = member.node_id.clone();
        self.lock().hosts.insert(
            node,
            Seen {
                member,
                at: Instant::now(),
            },
        );
    }

    /// A host that left (its entry was deleted).
    pub fn forget(&self, node: &str) {
        self.lock().hosts.remove(node);
    }

    /// Whether `node`'s latest beat is fresh: a host that stopped beating
    /// is dead or cut off.
    pub fn is_live(&self, node: &str) -> bool {
        self.lock()
            .hosts
            .get(node)
            .is_some_and(|s| s.at.elapsed() < FRESH)
    }

    /// Whether `node` stopped beating while this host still hears its own
    /// beats (so the view is current, not a stalled watch): it died or was
    /// cut off from the cluster.
    pub fn lost(&self, node: &str) -> bool {
        let inner = self.lock();
        let fresh = |n: &str| inner.hosts.get(n).is_some_and(|s| s.at.elapsed() < FRESH);
        fresh(&self.me) && !fresh(node)
    }

    /// Where a call of `function` `version` should run, given that this
    /// host has no idle warm environment for it and `local_busy`
    /// environments busy or starting; None: here. The returned guard
    /// counts the call against the target until dropped.
    pub fn choose(
        self: &Arc<Self>,
        function: &str,
        version: &str,
        local_busy: u32,
    ) -> Option<(Target, InFlight)> {
        let mut inner = self.lock();
        let pick = pick(&inner, &self.me, function, version, local_busy)?;
        *inner.inflight.entry(pick.node_id.clone()).or_insert(0) += 1;
        let warm = pick
            .warm
            .then(|| (function.to_string(), version.to_string()));
        if let Some((f, v)) = &warm {
            *inner
                .inflight_warm
                .entry((pick.node_id.clone(), f.clone(), v.clone()))
                .or_insert(0) += 1;
        }
        let guard = InFlight {
            placement: self.clone(),
            node: pick.node_id.clone(),
            warm,
        };
        Some((pick, guard))
    }
}

/// The placement rule (see the module doc), on a locked view.
fn pick(inner: &Inner, me: &str, function: &str, version: &str, local_busy: u32) -> Option<Target> {
    let live = inner.hosts.values().filter(|s| {
        s.member.node_id != me && s.at.elapsed() < FRESH && s.member.url.starts_with("http://")
    });
    let busy = |m: &Member| m.busy + inner.inflight.get(&m.node_id).copied().unwrap_or(0);
    let idle = |m: &Member| {
        let taken = inner
            .inflight_warm
            .get(&(m.node_id.clone(), function.to_string(), version.to_string()))
            .copied()
            .unwrap_or(0);
        m.warm
            .iter()
            .find(|w| w.function == function && w.version == version)
            .map_or(0, |w| w.idle.saturating_sub(taken))
    };
    let candidates: Vec<&Member> = live.map(|s| &s.member).collect();
    let target = |m: &Member, warm| Target {
        node_id: m.node_id.clone(),
        url: m.url.clone(),
        warm,
    };
    if let Some(m) = candidates
        .iter()
        .filter(|m| idle(m) > 0)
        .max_by_key(|m| (idle(m), std::cmp::Reverse(busy(m))))
    {
        return Some(target(m, true));
    }
    candidates
        .iter()
        .filter(|m| busy(m) < m.capacity && busy(m) < local_busy)
        .min_by_key(|m| (busy(m), m.node_id.clone()))
        .map(|m| target(m, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::WarmVersion;

    fn member(node: &str, warm: &[(&str, &str, u32)], busy: u32, capacity: u32) -> Member {
        Member {
            node_id: node.into(),
            url: format!("http://{node}:1"),
            started_ms: 0,
            beat_ms: 0,
            warm: warm
                .iter()
                .map(|(f, v, n)| WarmVersion {
                    function: (*f).into(),
                    version: (*v).into(),
                    idle: *n,
                })
                .collect(),
            busy,
            capacity,
        }
    }

    fn node(p: &Arc<Placement>, f: &str, v: &str, busy: u32) -> Option<(String, InFlight)> {
        p.choose(f, v, busy).map(|(t, g)| (t.node_id, g))
    }

    #[test]
    fn warm_host_first_then_none_once_its_idle_are_taken() {
        let p = Placement::new("b");
        p.observe(member("a", &[("f", "1", 1)], 5, 10));
        p.observe(member("c", &[], 0, 10));
        p.observe(member("b", &[("f", "1", 3)], 0, 10));
        let (n, g) = node(&p, "f", "1", 0).expect("a is warm");
        assert_eq!(n, "a");
        // A's one idle environment is taken by the call in flight; C is
        // not less busy than this host (0), so: here.
        assert!(node(&p, "f", "1", 0).is_none());
        drop(g);
        assert_eq!(node(&p, "f", "1", 0).map(|x| x.0), Some("a".into()));
        // Another version is not warm anywhere else.
        assert!(node(&p, "f", "2", 0).is_none());
    }

    #[test]
    fn least_busy_below_capacity_when_less_busy_than_here() {
        let p = Placement::new("b");
        p.observe(member("a", &[], 3, 4));
        p.observe(member("c", &[], 4, 4));
        assert!(node(&p, "f", "1", 3).is_none(), "A is as busy as here");
        let (n, _g) = node(&p, "f", "1", 5).expect("A is less busy");
        assert_eq!(n, "a");
        // A (3 + 1 in flight) is now at capacity, C is full.
        assert!(node(&p, "f", "1", 9).is_none());
    }

    #[test]
    fn stale_forgotten_and_non_http_hosts_are_not_used() {
        let p = Placement::new("b");
        p.observe(member("a", &[("f", "1", 1)], 0, 4));
        {
            let mut inner = p.lock();
            let seen = inner.hosts.get_mut("a").expect("observed");
            seen.at = seen.at.checked_sub(FRESH).expect("uptime over 2.5 s");
        }
        assert!(!p.is_live("a"));
        assert!(node(&p, "f", "1", 0).is_none());
        let mut tls = member("c", &[("f", "1", 1)], 0, 4);
        tls.url = "https://c:1".into();
        p.observe(tls);
        assert!(node(&p, "f", "1", 0).is_none());
        p.observe(member("d", &[("f", "1", 1)], 0, 4));
        p.forget("d");
        assert!(node(&p, "f", "1", 0).is_none());
    }
}
