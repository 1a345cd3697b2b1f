//! `ember bench`: cold-start benchmarks whose output can be published.
//! Scenarios (`vmm-boot`, `function`, `ramp`) share one loop (warm-up runs
//! discarded, cases interleaved, a fixed seed: runner.rs), record the
//! machine (context.rs), and write raw per-run records, a summary, plots and
//! report.html into `--out DIR` (output.rs, summary.rs, plots.rs,
//! report.rs); `compare` judges two result directories (compare.rs).
//! Field reference: docs in README.md ("Benchmarks").

pub mod compare;
pub mod context;
pub mod guest;
pub mod load;
pub mod output;
pub mod plots;
pub mod process;
pub mod progress;
pub mod record;
pub mod report;
pub mod runner;
pub mod scenarios;
pub mod stats;
pub mod summary;

use std::path::PathBuf;
use std::process::ExitCode;

use context::Context;
use record::Record;
use runner::{Plan, Scenario};
use scenarios::emberd::Emberd;
use scenarios::function::{FunctionArgs, FunctionBench};
use scenarios::ramp::{Ramp, RampArgs};
use scenarios::snapshot::{SnapshotArgs, SnapshotRestore};
use scenarios::vmm_boot::{VmmBoot, VmmBootArgs};
use scenarios::ScenarioError;
use summary::Summary;

/// What every scenario takes.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Measured runs per case (after the warm-up).
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Warm-up runs per case, recorded as such and left out of every
    /// statistic.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Seed of the per-round case order (and of generated payloads).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Result directory (default: bench-results/<scenario>-<unix time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The case ratios are taken against (default: the first case with
    /// results).
    #[arg(long)]
    pub baseline: Option<String>,
    /// Skip the plots (and their PNG/SVG files).
    #[arg(long)]
    pub no_plots: bool,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum BenchCmd {
    /// exec → guest exit for the same null guest under ember-vmm, QEMU
    /// microvm and any Firecracker-compatible `--peer NAME=PATH`; peak RSS.
    VmmBoot {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        args: VmmBootArgs,
    },
    /// Invocations through emberd (SigV4-signed): cold with VM boot, cold
    /// from a spare VM, warm at each payload size; phase breakdown.
    Function {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        args: FunctionArgs,
    },
    /// N simultaneous cold starts per step: latency and starts per second.
    Ramp {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        args: RampArgs,
    },
    /// Through ember-vmm's API socket: snapshot load → guest exit against a
    /// fresh boot of the same guest.
    SnapshotRestore {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        args: SnapshotArgs,
    },
    /// The change per case between two result directories, with a
    /// Mann–Whitney U test.
    Compare {
        a: PathBuf,
        b: PathBuf,
        /// Significance level.
        #[arg(long, default_value_t = 0.05)]
        alpha: f64,
        /// Print JSON instead of the Markdown table.
        #[arg(long)]
        json: bool,
    },
    /// The plain load generator behind scripts/bench-emberd.sh.
    #[command(hide = true)]
    Load(load::LoadArgs),
}

impl BenchCmd {
    /// Whether the command talks to emberd (and so needs credentials).
    pub fn needs_emberd(&self) -> bool {
        match self {
            BenchCmd::VmmBoot { .. }
            | BenchCmd::SnapshotRestore { .. }
            | BenchCmd::Compare { .. } => false,
            BenchCmd::Function { args, .. } => !args.emberd.throwaway,
            BenchCmd::Ramp { args, .. } => !args.emberd.throwaway,
            BenchCmd::Load(_) => true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error(transparent)]
    Output(#[from] output::OutputError),
    #[error("{0}")]
    Load(String),
}

/// Runs `cmd`; `endpoint` is emberd's (`--endpoint`).
pub async fn run(endpoint: &str, cmd: BenchCmd) -> Result<ExitCode, BenchError> {
    match cmd {
        BenchCmd::Load(a) => load::run(endpoint, a)
            .await
            .map(|()| ExitCode::SUCCESS)
            .map_err(BenchError::Load),
        BenchCmd::Compare { a, b, alpha, json } => {
            let (changes, unmatched) = compare::compare(&a, &b, alpha)?;
            if json {
                let v = serde_json::json!({"a": a, "b": b, "alpha": alpha, "cases": changes, "not_compared": unmatched});
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print!("{}", compare::markdown(&a, &b, alpha, &changes, &unmatched));
            }
            Ok(ExitCode::SUCCESS)
        }
        BenchCmd::VmmBoot { common, args } => {
            let context = Context::capture();
            let mut notes = Vec::new();
            let mut s = match VmmBoot::new(&args, &mut notes) {
                Ok(s) => s,
                Err(e) => return setup_failed("vmm-boot", &common, context, notes, e),
            };
            let broken = s.broken().to_vec();
            measure(&mut s, &common, context, notes, broken).await
        }
        BenchCmd::SnapshotRestore { common, args } => {
            let context = Context::capture();
            match SnapshotRestore::new(&args).await {
                Ok(mut s) => measure(&mut s, &common, context, Vec::new(), Vec::new()).await,
                Err(e) => setup_failed("snapshot-restore", &common, context, Vec::new(), e),
            }
        }
        BenchCmd::Function { common, args } => {
            let context = Context::capture();
            let setup = async {
                let e = Emberd::open(endpoint, &args.emberd).await?;
                FunctionBench::new(e, &args, common.seed).await
            };
            match setup.await {
                Ok(mut s) => measure(&mut s, &common, context, Vec::new(), Vec::new()).await,
                Err(e) => setup_failed("function", &common, context, Vec::new(), e),
            }
        }
        BenchCmd::Ramp { common, args } => {
            let context = Context::capture();
            let setup = async {
                let e = Emberd::open(endpoint, &args.emberd).await?;
                Ramp::new(e, &args).await
            };
            match setup.await {
                Ok(mut s) => measure(&mut s, &common, context, Vec::new(), Vec::new()).await,
                Err(e) => setup_failed("ramp", &common, context, Vec::new(), e),
            }
        }
    }
}

fn out_dir(scenario: &str, common: &CommonArgs) -> PathBuf {
    common.out.clone().unwrap_or_else(|| {
        PathBuf::from("bench-results").join(format!("{scenario}-{}", crate::util::unix_ms() / 1000))
    })
}

fn plan(common: &CommonArgs) -> Plan {
    Plan {
        runs: common.runs.max(1),
        warmup: common.warmup,
        seed: common.seed,
    }
}

/// Runs the scenario's plan and writes everything. `broken`: cases that
/// could not be set up (reported as failed and dropped).
async fn measure<S: Scenario>(
    s: &mut S,
    common: &CommonArgs,
    context: Context,
    notes: Vec<String>,
    broken: Vec<(String, String)>,
) -> Result<ExitCode, BenchError> {
    let outcome = runner::run(s, plan(common)).await;
    let mut cases = s.cases();
    let mut records = outcome.records;
    let mut dropped = broken.clone();
    dropped.extend(outcome.dropped);
    for (label, why) in broken {
        cases.push(label.clone());
        records.push(Record {
            scenario: s.name().into(),
            case: label,
            round: 0,
            seq: records.len(),
            warmup: false,
            ok: false,
            start_ms: 0.0,
            wall_ms: None,
            peak_rss_kib: None,
            boot_timer_ms: None,
            phases: Vec::new(),
            step: None,
            batch_ms: None,
            error: Some(why),
        });
    }
    finish(s.name(), common, context, &cases, &records, notes, dropped)
}

/// A scenario that could not start: its context and the error still go to
/// the result directory, and the exit status says it failed.
fn setup_failed(
    scenario: &str,
    common: &CommonArgs,
    context: Context,
    notes: Vec<String>,
    e: ScenarioError,
) -> Result<ExitCode, BenchError> {
    let why = crate::util::error_chain(&e);
    eprintln!("ember bench {scenario}: {why}");
    let dropped = vec![("(setup)".to_string(), why)];
    finish(scenario, common, context, &[], &[], notes, dropped)?;
    Ok(ExitCode::FAILURE)
}

fn finish(
    scenario: &str,
    common: &CommonArgs,
    mut context: Context,
    cases: &[String],
    records: &[Record],
    notes: Vec<String>,
    dropped: Vec<(String, String)>,
) -> Result<ExitCode, BenchError> {
    context.finish();
    let dir = out_dir(scenario, common);
    let summary = Summary::build(
        scenario,
        context,
        plan(common),
        cases,
        records,
        common.baseline.as_deref(),
        notes,
        dropped,
    );
    output::write(&dir, records, &summary)?;
    let (plots, plot_error) = if common.no_plots {
        (Vec::new(), None)
    } else {
        match plots::write_all(&dir, &summary, records) {
            Ok(p) => (p, None),
            Err(e) => {
                eprintln!("ember bench: no plots: {e}");
                (Vec::new(), Some(e.to_string()))
            }
        }
    };
    report::write(&dir, &summary, &plots, plot_error.as_deref())?;
    println!("{}", summary.markdown());
    println!("results: {}", dir.display());
    let any_empty = summary.cases.iter().any(|c| c.ok == 0);
    Ok(
        if summary.dropped.is_empty() && !any_empty && plot_error.is_none() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}
