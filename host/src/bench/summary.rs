//! A benchmark's results: per-case statistics over the measured runs
//! (latency, peak RSS, boot timer, phase medians, ramp throughput), ratios
//! against the `--baseline` case, and the Markdown table shown on the
//! terminal and written to summary.md.

use serde::{Deserialize, Serialize};

use super::context::Context;
use super::record::Record;
use super::stats::{self, Dist};

/// One case's statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseSummary {
    pub case: String,
    /// Measured runs that succeeded.
    pub ok: usize,
    /// Measured and warm-up runs that failed.
    pub failed: usize,
    /// The headline latency (ms).
    pub wall_ms: Option<Dist>,
    pub peak_rss_mib: Option<Dist>,
    pub boot_timer_ms: Option<Dist>,
    /// Median of each phase (ms), in the order the runs reported them.
    pub phase_medians_ms: Vec<(String, f64)>,
    /// Ramp: N simultaneous starts.
    pub step: Option<u32>,
    /// Ramp: environments started per second (N / median batch time).
    pub starts_per_sec: Option<f64>,
    /// Median of this case / median of the baseline (and p90 / p90).
    pub ratio_median: Option<f64>,
    pub ratio_p90: Option<f64>,
    /// The last error seen, if any run failed.
    pub last_error: Option<String>,
}

/// Everything summary.json holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub scenario: String,
    pub context: Context,
    pub runs: usize,
    pub warmup: usize,
    pub seed: u64,
    /// The case ratios are taken against.
    pub baseline: Option<String>,
    pub cases: Vec<CaseSummary>,
    /// What the reader must know (a peer that fell back or failed, ...).
    pub notes: Vec<String>,
    /// Cases dropped after repeated failures, and why.
    pub dropped: Vec<(String, String)>,
}

impl Summary {
    /// Summarizes `records` per case (`cases` in presentation order).
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        scenario: &str,
        context: Context,
        plan: super::runner::Plan,
        cases: &[String],
        records: &[Record],
        baseline: Option<&str>,
        notes: Vec<String>,
        dropped: Vec<(String, String)>,
    ) -> Summary {
        let mut out: Vec<CaseSummary> = cases.iter().map(|c| case_summary(c, records)).collect();
        // The baseline: the one named, else the first case with results.
        let base = match baseline {
            Some(b) => out.iter().find(|c| c.case == b),
            None => out.iter().find(|c| c.wall_ms.is_some()),
        }
        .and_then(|c| c.wall_ms.map(|d| (c.case.clone(), d)));
        if let Some((_, b)) = &base {
            for c in &mut out {
                if let Some(d) = c.wall_ms {
                    c.ratio_median = Some(d.median / b.median);
                    c.ratio_p90 = Some(d.p90 / b.p90);
                }
            }
        }
        Summary {
            scenario: scenario.into(),
            context,
            runs: plan.runs,
            warmup: plan.warmup,
            seed: plan.seed,
            baseline: base.map(|(n, _)| n),
            cases: out,
            notes,
            dropped,
        }
    }

    /// The Markdown table (plus context, notes and failures).
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "## ember bench {}\n\n{} measured runs per case after {} warm-up, interleaved, seed {}. \
             Nearest-rank percentiles; ratios are medians (and p90s) over the baseline `{}` from the same run.\n\n\
             Machine: {}\n\n",
            self.scenario,
            self.runs,
            self.warmup,
            self.seed,
            self.baseline.as_deref().unwrap_or("-"),
            self.context.one_line()
        );
        for w in &self.context.warnings {
            s.push_str(&format!("> **WARNING:** {w}\n\n"));
        }
        let ramp = self.cases.iter().any(|c| c.step.is_some());
        s.push_str("| case | ok | failed | median ms | p90 ms | p99 ms | min ms | max ms | ratio (median) | ratio (p90) | peak RSS MiB | boot timer ms |");
        s.push_str(if ramp { " starts/s |\n" } else { "\n" });
        s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        s.push_str(if ramp { "---:|\n" } else { "\n" });
        let f = |v: Option<f64>, unit: &str| v.map_or("-".to_string(), |x| format!("{x:.2}{unit}"));
        for c in &self.cases {
            let w = c.wall_ms;
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.case,
                c.ok,
                c.failed,
                f(w.map(|d| d.median), ""),
                f(w.map(|d| d.p90), ""),
                f(w.map(|d| d.p99), ""),
                f(w.map(|d| d.min), ""),
                f(w.map(|d| d.max), ""),
                f(c.ratio_median, "x"),
                f(c.ratio_p90, "x"),
                f(c.peak_rss_mib.map(|d| d.median), ""),
                f(c.boot_timer_ms.map(|d| d.median), ""),
            ));
            if ramp {
                s.push_str(&format!(" {} |", f(c.starts_per_sec, "")));
            }
            s.push('\n');
        }
        let phased: Vec<&CaseSummary> = self
            .cases
            .iter()
            .filter(|c| !c.phase_medians_ms.is_empty())
            .collect();
        if !phased.is_empty() {
            s.push_str("\nPhase medians (ms):\n\n");
            for c in phased {
                let parts: Vec<String> = c
                    .phase_medians_ms
                    .iter()
                    .map(|(n, v)| format!("{n} {v:.2}"))
                    .collect();
                s.push_str(&format!("- {}: {}\n", c.case, parts.join(" · ")));
            }
        }
        for n in &self.notes {
            s.push_str(&format!("\nNote: {n}\n"));
        }
        for (case, why) in &self.dropped {
            s.push_str(&format!(
                "\n**FAILED:** {case} was dropped after repeated failures: {why}\n"
            ));
        }
        s
    }
}

fn case_summary(case: &str, records: &[Record]) -> CaseSummary {
    let mine: Vec<&Record> = records.iter().filter(|r| r.case == case).collect();
    let measured: Vec<&Record> = mine.iter().copied().filter(|r| r.measured()).collect();
    let mut phase_names: Vec<String> = Vec::new();
    for r in &measured {
        for p in &r.phases {
            if !phase_names.contains(&p.name) {
                phase_names.push(p.name.clone());
            }
        }
    }
    let phase_medians_ms = phase_names
        .into_iter()
        .filter_map(|n| {
            let v = stats::sorted(
                measured
                    .iter()
                    .filter_map(|r| r.phases.iter().find(|p| p.name == n).map(|p| p.ms)),
            );
            (!v.is_empty()).then(|| (n, stats::median(&v)))
        })
        .collect();
    let step = mine.iter().find_map(|r| r.step);
    // Batches: one per (round), each record of a batch carries its time.
    let mut batches: Vec<(usize, f64)> = measured
        .iter()
        .filter_map(|r| r.batch_ms.map(|b| (r.round, b)))
        .collect();
    batches.dedup_by_key(|b| b.0);
    let batch = stats::sorted(batches.into_iter().map(|b| b.1));
    CaseSummary {
        case: case.into(),
        ok: measured.len(),
        failed: mine.iter().filter(|r| !r.ok).count(),
        wall_ms: Dist::of(measured.iter().filter_map(|r| r.wall_ms)),
        peak_rss_mib: Dist::of(
            measured
                .iter()
                .filter_map(|r| r.peak_rss_kib.map(|k| k as f64 / 1024.0)),
        ),
        boot_timer_ms: Dist::of(measured.iter().filter_map(|r| r.boot_timer_ms)),
        phase_medians_ms,
        step,
        starts_per_sec: match (step, batch.is_empty()) {
            (Some(n), false) => Some(n as f64 / (stats::median(&batch) / 1e3)),
            _ => None,
        },
        ratio_median: None,
        ratio_p90: None,
        last_error: mine.iter().rev().find_map(|r| r.error.clone()),
    }
}
