//! One measured run: what a scenario reports ([`Sample`]) and the raw record
//! the runner writes for it ([`Record`], one line of raw.jsonl / raw.csv).

use serde::{Deserialize, Serialize};

/// One named phase of a run (e.g. a cold start's `init`), in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    pub ms: f64,
}

/// What one run of a case measured, as a scenario reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// The headline latency (exec → exit, request → response, ...).
    pub wall_ms: Option<f64>,
    /// Peak resident set size of the measured process (wait4's ru_maxrss).
    pub peak_rss_kib: Option<u64>,
    /// The guest's boot-timer figure (`Guest-boot-time`), when it printed one.
    pub boot_timer_ms: Option<f64>,
    /// Parts of `wall_ms`, in order (they need not sum to it exactly).
    pub phases: Vec<Phase>,
    /// Ramp: the whole batch's wall time (all N started → all N answered).
    pub batch_ms: Option<f64>,
    /// Why the run failed (`None`: it succeeded).
    pub error: Option<String>,
}

impl Sample {
    /// A failed run.
    pub fn failed(why: impl Into<String>) -> Self {
        Sample {
            error: Some(why.into()),
            ..Sample::default()
        }
    }
}

/// One raw per-run record (the documented fields of raw.jsonl; raw.csv has
/// the same columns, phases flattened to `phase_<name>_ms`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The scenario (`vmm-boot`, `function`, `ramp`, ...).
    pub scenario: String,
    /// The case's label (one column of the comparison).
    pub case: String,
    /// Round number: 0-based, warm-up rounds included (they come first).
    pub round: usize,
    /// Order of execution over the whole benchmark (0-based).
    pub seq: usize,
    /// A warm-up run: recorded, excluded from every statistic.
    pub warmup: bool,
    /// Whether the run succeeded.
    pub ok: bool,
    /// Milliseconds from the benchmark's start to this run's start.
    pub start_ms: f64,
    pub wall_ms: Option<f64>,
    pub peak_rss_kib: Option<u64>,
    pub boot_timer_ms: Option<f64>,
    #[serde(default)]
    pub phases: Vec<Phase>,
    /// Ramp: N simultaneous starts in this run's batch.
    pub step: Option<u32>,
    pub batch_ms: Option<f64>,
    pub error: Option<String>,
}

/// The fixed columns of raw.csv, before the phase columns.
pub const CSV_COLUMNS: &[&str] = &[
    "scenario",
    "case",
    "round",
    "seq",
    "warmup",
    "ok",
    "start_ms",
    "wall_ms",
    "peak_rss_kib",
    "boot_timer_ms",
    "step",
    "batch_ms",
    "error",
];

impl Record {
    /// The record's CSV cells for [`CSV_COLUMNS`] then `phase_names`.
    pub fn csv_cells(&self, phase_names: &[String]) -> Vec<String> {
        let f = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_default();
        let mut cells = vec![
            self.scenario.clone(),
            self.case.clone(),
            self.round.to_string(),
            self.seq.to_string(),
            self.warmup.to_string(),
            self.ok.to_string(),
            format!("{:.3}", self.start_ms),
            f(self.wall_ms),
            self.peak_rss_kib.map(|v| v.to_string()).unwrap_or_default(),
            f(self.boot_timer_ms),
            self.step.map(|v| v.to_string()).unwrap_or_default(),
            f(self.batch_ms),
            self.error.clone().unwrap_or_default(),
        ];
        for name in phase_names {
            let v = self.phases.iter().find(|p| &p.name == name).map(|p| p.ms);
            cells.push(f(v));
        }
        cells
    }

    /// Whether this record counts in the statistics.
    pub fn measured(&self) -> bool {
        self.ok && !self.warmup && self.wall_ms.is_some()
    }
}
