//! The measurement loop every scenario shares: warm-up rounds first
//! (recorded, never counted), then rounds in which each case runs once —
//! interleaved (A B C, A B C, ...) so drift and background load hit every
//! case alike — in an order shuffled per round from a fixed seed (so no case
//! always runs right after the same neighbour), a case that keeps failing
//! dropped with a clear error while the others go on.

use super::progress::Progress;
use super::record::{Record, Sample};

/// A case failing this many runs in a row (without any success) is dropped.
pub const DROP_AFTER_FAILURES: usize = 3;

/// A scenario: a set of cases and how to run one of them once.
#[allow(async_fn_in_trait)] // only used generically, never boxed
pub trait Scenario {
    /// The scenario's name (`vmm-boot`, ...).
    fn name(&self) -> &'static str;
    /// The cases' labels, in presentation order.
    fn cases(&self) -> Vec<String>;
    /// Runs case `case` once; a ramp step reports one sample per start.
    async fn once(&mut self, case: usize) -> Vec<Sample>;
    /// Ramp: the N of each case (`None` for others).
    fn step(&self, _case: usize) -> Option<u32> {
        None
    }
}

/// How many runs, in what order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub runs: usize,
    pub warmup: usize,
    pub seed: u64,
}

/// What the loop produced.
#[derive(Debug, Default)]
pub struct Outcome {
    pub records: Vec<Record>,
    /// Cases dropped after repeated failures, with why.
    pub dropped: Vec<(String, String)>,
}

/// A small deterministic PRNG (SplitMix64): the round order depends only on
/// the seed.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// Runs `plan` over `scenario`'s cases.
pub async fn run<S: Scenario>(scenario: &mut S, plan: Plan) -> Outcome {
    let labels = scenario.cases();
    let n = labels.len();
    let rounds = plan.warmup + plan.runs;
    let mut progress = Progress::new(scenario.name(), rounds * n);
    let mut rng = SplitMix64::new(plan.seed);
    let mut out = Outcome::default();
    let mut active = vec![true; n];
    let mut streak = vec![0usize; n];
    let mut ever_ok = vec![false; n];
    let mut seq = 0;
    for round in 0..rounds {
        let warmup = round < plan.warmup;
        let mut order: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut order);
        for c in order {
            if !active[c] {
                continue;
            }
            let (k, of) = if warmup {
                (round + 1, plan.warmup)
            } else {
                (round - plan.warmup + 1, plan.runs)
            };
            progress.show(&labels[c], k, of, warmup);
            let start_ms = progress.elapsed().as_secs_f64() * 1e3;
            let samples = scenario.once(c).await;
            progress.tick();
            let mut last_error = None;
            let mut any_ok = false;
            for s in samples {
                match &s.error {
                    Some(e) => last_error = Some(e.clone()),
                    None => any_ok = true,
                }
                out.records.push(record(
                    scenario, &labels[c], c, round, seq, warmup, start_ms, s,
                ));
                seq += 1;
            }
            if any_ok {
                ever_ok[c] = true;
                streak[c] = 0;
            } else {
                streak[c] += 1;
            }
            if let Some(e) = last_error {
                if streak[c] == 1 || !ever_ok[c] && streak[c] >= DROP_AFTER_FAILURES {
                    eprintln!("\nbench: {}: run failed: {e}", labels[c]);
                }
                if !ever_ok[c] && streak[c] >= DROP_AFTER_FAILURES {
                    eprintln!(
                        "bench: {}: dropped after {} failed runs in a row; the other cases go on",
                        labels[c], streak[c]
                    );
                    active[c] = false;
                    out.dropped.push((labels[c].clone(), e));
                }
            }
        }
    }
    progress.finish();
    out
}

#[allow(clippy::too_many_arguments)]
fn record<S: Scenario>(
    scenario: &S,
    label: &str,
    case: usize,
    round: usize,
    seq: usize,
    warmup: bool,
    start_ms: f64,
    s: Sample,
) -> Record {
    Record {
        scenario: scenario.name().into(),
        case: label.into(),
        round,
        seq,
        warmup,
        ok: s.error.is_none(),
        start_ms,
        wall_ms: s.wall_ms,
        peak_rss_kib: s.peak_rss_kib,
        boot_timer_ms: s.boot_timer_ms,
        phases: s.phases,
        step: scenario.step(case),
        batch_ms: s.batch_ms,
        error: s.error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cases whose runs are instantaneous: `bad` always fails.
    struct Fake {
        calls: Vec<usize>,
    }

    impl Scenario for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn cases(&self) -> Vec<String> {
            vec!["a".into(), "b".into(), "bad".into()]
        }
        async fn once(&mut self, case: usize) -> Vec<Sample> {
            self.calls.push(case);
            if case == 2 {
                return vec![Sample::failed("no such peer")];
            }
            vec![Sample {
                wall_ms: Some(case as f64 + 1.0),
                ..Sample::default()
            }]
        }
    }

    #[tokio::test]
    async fn rounds_interleave_warmups_come_first_and_a_failing_case_is_dropped() {
        let mut f = Fake { calls: vec![] };
        let plan = Plan {
            runs: 5,
            warmup: 1,
            seed: 7,
        };
        let out = run(&mut f, plan).await;
        // Every round runs each live case exactly once.
        for round in f.calls.chunks(3).take(DROP_AFTER_FAILURES) {
            let mut r = round.to_vec();
            r.sort();
            assert_eq!(r, vec![0, 1, 2]);
        }
        assert_eq!(
            f.calls.iter().filter(|&&c| c == 2).count(),
            DROP_AFTER_FAILURES
        );
        assert_eq!(out.dropped, vec![("bad".into(), "no such peer".into())]);
        let measured = |case: &str| {
            out.records
                .iter()
                .filter(|r| r.case == case && r.measured())
                .count()
        };
        assert_eq!((measured("a"), measured("b"), measured("bad")), (5, 5, 0));
        assert!(out
            .records
            .iter()
            .filter(|r| r.warmup)
            .all(|r| r.round == 0));
        // Same seed, same order.
        let mut g = Fake { calls: vec![] };
        run(&mut g, plan).await;
        assert_eq!(f.calls, g.calls);
    }
}
