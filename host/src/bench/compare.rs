//! `ember bench compare A B`: the change per case between two result
//! directories, judged by a two-sided Mann–Whitney U test on the measured
//! runs' latencies — "no significant change" when noise explains the
//! difference.

use std::path::Path;

use serde::Serialize;

use super::output::{self, OutputError};
use super::stats::{self, mann_whitney};

/// Below this many runs a side, the normal approximation is rough.
const FEW: usize = 8;

/// One case's comparison.
#[derive(Debug, Clone, Serialize)]
pub struct CaseChange {
    pub case: String,
    pub n_a: usize,
    pub n_b: usize,
    pub median_a_ms: f64,
    pub median_b_ms: f64,
    /// median B / median A - 1.
    pub change: f64,
    pub u: f64,
    pub p: f64,
    pub significant: bool,
    pub verdict: String,
}

/// Compares the runs in `a` and `b` (result directories) at level `alpha`.
pub fn compare(
    a: &Path,
    b: &Path,
    alpha: f64,
) -> Result<(Vec<CaseChange>, Vec<String>), OutputError> {
    let ra = output::read_records(a)?;
    let rb = output::read_records(b)?;
    let mut cases: Vec<String> = Vec::new();
    for r in ra.iter().chain(&rb) {
        if !cases.contains(&r.case) {
            cases.push(r.case.clone());
        }
    }
    let mut out = Vec::new();
    let mut unmatched = Vec::new();
    for case in cases {
        let va = stats::sorted(
            ra.iter()
                .filter(|r| r.case == case && r.measured())
                .filter_map(|r| r.wall_ms),
        );
        let vb = stats::sorted(
            rb.iter()
                .filter(|r| r.case == case && r.measured())
                .filter_map(|r| r.wall_ms),
        );
        let Some(mw) = mann_whitney(&va, &vb) else {
            unmatched.push(format!(
                "{case}: {} runs in A, {} in B — nothing to compare",
                va.len(),
                vb.len()
            ));
            continue;
        };
        let (ma, mb) = (stats::median(&va), stats::median(&vb));
        let change = mb / ma - 1.0;
        let significant = mw.p < alpha;
        let few = if va.len() < FEW || vb.len() < FEW {
            " (few runs: p is approximate)"
        } else {
            ""
        };
        let verdict = if significant {
            format!(
                "significant: B is {:.1}% {} (p = {:.4}){few}",
                change.abs() * 100.0,
                if change > 0.0 { "slower" } else { "faster" },
                mw.p
            )
        } else {
            format!("no significant change (p = {:.3}){few}", mw.p)
        };
        out.push(CaseChange {
            case,
            n_a: va.len(),
            n_b: vb.len(),
            median_a_ms: ma,
            median_b_ms: mb,
            change,
            u: mw.u,
            p: mw.p,
            significant,
            verdict,
        });
    }
    Ok((out, unmatched))
}

/// The comparison as a Markdown table.
pub fn markdown(
    a: &Path,
    b: &Path,
    alpha: f64,
    changes: &[CaseChange],
    unmatched: &[String],
) -> String {
    let mut s = format!(
        "## ember bench compare\n\nA = {}, B = {}; two-sided Mann–Whitney U on the measured runs' latency, alpha {alpha}.\n\n\
         | case | runs A | runs B | median A ms | median B ms | change | p | verdict |\n|---|---:|---:|---:|---:|---:|---:|---|\n",
        a.display(),
        b.display()
    );
    for c in changes {
        s.push_str(&format!(
            "| {} | {} | {} | {:.3} | {:.3} | {:+.1}% | {:.4} | {} |\n",
            c.case,
            c.n_a,
            c.n_b,
            c.median_a_ms,
            c.median_b_ms,
            c.change * 100.0,
            c.p,
            c.verdict
        ));
    }
    for u in unmatched {
        s.push_str(&format!("\nNot compared: {u}\n"));
    }
    if changes.iter().all(|c| !c.significant) && !changes.is_empty() {
        s.push_str("\nOverall: no significant change in any case.\n");
    }
    s
}
