//! Host metrics read at scrape time: environments by state, provisioned
//! concurrency utilization per function version, the memory budget and what
//! environments claim of it, and the resident memory
//! of every environment's processes (its `ember-jailer` and the jailed
//! `ember-vmm` under it), from `/proc`.

use std::collections::BTreeMap;

use super::expo::{Encoder, Kind};
use crate::pool::{EnvInfo, EnvState};

/// One live environment's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvMemory {
    pub id: u64,
    pub function: String,
    pub version: String,
    pub rss_bytes: u64,
}

/// What the pool and `/proc` say right now.
#[derive(Clone, Debug, Default)]
pub struct HostView {
    /// Environments per state; every state is listed (0 included) so the
    /// series do not appear and vanish.
    pub by_state: Vec<(&'static str, u64)>,
    /// (function, version) -> (busy provisioned, ready provisioned).
    pub provisioned: BTreeMap<(String, String), (u64, u64)>,
    pub memory: Vec<EnvMemory>,
    /// The pool's memory admission: (budget, claimed) bytes (host-wide:
    /// `None` in an account's scoped view).
    pub claims: Option<(u64, u64)>,
    /// Compiled wasm artefacts held in memory: (bytes, entries) (host-wide,
    /// with `--wasm-engine wasmtime` only).
    pub wasm_artefacts: Option<(usize, usize)>,
}

const STATES: [EnvState; 4] = [
    EnvState::Starting,
    EnvState::Idle,
    EnvState::Busy,
    EnvState::Stopping,
];

impl HostView {
    /// Builds the view from the pool's environment list. Reads `/proc`
    /// (blocking; call off the async runtime).
    pub fn collect(envs: &[EnvInfo]) -> Self {
        let mut view = Self::from_envs(envs);
        view.memory = envs
            .iter()
            .filter_map(|e| {
                Some(EnvMemory {
                    id: e.id,
                    function: e.key.function.clone(),
                    version: e.key.version.clone(),
                    rss_bytes: tree_rss(e.pid?)?,
                })
            })
            .collect();
        view
    }

    /// The parts that need no `/proc`.
    pub fn from_envs(envs: &[EnvInfo]) -> Self {
        let by_state = STATES
            .iter()
            .map(|s| {
                (
                    s.as_str(),
                    envs.iter().filter(|e| e.state == *s).count() as u64,
                )
            })
            .collect();
        let mut provisioned: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        for e in envs.iter().filter(|e| e.provisioned) {
            let ready = matches!(e.state, EnvState::Idle | EnvState::Busy);
            if !ready {
                continue;
            }
            let slot = provisioned
                .entry((e.key.function.clone(), e.key.version.clone()))
                .or_default();
            slot.1 += 1;
            if e.state == EnvState::Busy {
                slot.0 += 1;
            }
        }
        Self {
            by_state,
            provisioned,
            memory: vec![],
            claims: None,
            wasm_artefacts: None,
        }
    }

    pub(super) fn render(&self, e: &mut Encoder) {
        e.family(
            "ember_provisioned_concurrency_utilization",
            Kind::Gauge,
            "Busy provisioned environments / ready provisioned environments.",
        );
        for ((f, v), (busy, ready)) in &self.provisioned {
            let ratio = if *ready == 0 {
                0.0
            } else {
                *busy as f64 / *ready as f64
            };
            e.sample(
                "ember_provisioned_concurrency_utilization",
                &[("function", f), ("version", v)],
                ratio,
            );
        }
        e.family(
            "ember_environments",
            Kind::Gauge,
            "Execution environments (one microVM each) by state.",
        );
        for (state, n) in &self.by_state {
            e.sample("ember_environments", &[("state", state)], *n as f64);
        }
        if let Some((budget, claimed)) = self.claims {
            e.gauge(
                "ember_memory_budget_bytes",
                "Memory all execution environments together may claim.",
                budget as f64,
            );
            e.gauge(
                "ember_memory_claimed_bytes",
                "Memory claimed by existing environments (function memory + overhead each, idle ones included).",
                claimed as f64,
            );
        }
        if let Some((bytes, entries)) = self.wasm_artefacts {
            e.gauge(
                "ember_wasm_artefact_cache_bytes",
                "Compiled wasm artefacts emberd holds in memory (bounded; artefacts of deleted code are dropped).",
                bytes as f64,
            );
            e.gauge(
                "ember_wasm_artefact_cache_entries",
                "Compiled wasm artefacts emberd holds in memory.",
                entries as f64,
            );
        }
        e.family(
            "ember_vmm_rss_bytes",
            Kind::Gauge,
            "Resident memory of an environment's processes (jailer and ember-vmm).",
        );
        for m in &self.memory {
            let id = m.id.to_string();
            e.sample(
                "ember_vmm_rss_bytes",
                &[
                    ("function", &m.function),
                    ("version", &m.version),
                    ("environment", &id),
                ],
                m.rss_bytes as f64,
            );
        }
    }
}

/// `VmRSS` of a process in bytes (None if it is gone or a kernel thread).
fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Direct children of `pid` (over all its threads).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return vec![];
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// RSS summed over `pid` and its descendants (the jailer's VMM is its
/// child), bounded in depth and breadth against a runaway tree.
pub fn tree_rss(pid: u32) -> Option<u64> {
    let mut total = rss(pid)?;
    let mut frontier = children(pid);
    for _depth in 0..4 {
        let mut next = Vec::new();
        for c in frontier.into_iter().take(64) {
            total += rss(c).unwrap_or(0);
            next.extend(children(c));
        }
        frontier = next;
    }
    Some(total)
}
