//! The progress line on stderr while a benchmark runs: case, run k of n,
//! elapsed time and ETA. Redrawn in place on a terminal; on a pipe (CI logs)
//! printed at most every few seconds so logs stay short.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often a non-terminal gets a progress line.
const PIPE_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    scenario: String,
    start: Instant,
    total: usize,
    done: usize,
    tty: bool,
    last: Option<Instant>,
}

impl Progress {
    /// `total` runs (warm-up included) are expected.
    pub fn new(scenario: &str, total: usize) -> Self {
        Progress {
            scenario: scenario.into(),
            start: Instant::now(),
            total,
            done: 0,
            tty: std::io::stderr().is_terminal(),
            last: None,
        }
    }

    /// Time since the benchmark started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// About to run `case`'s run `k` of `n` (1-based; `warmup` for a
    /// discarded warm-up run).
    pub fn show(&mut self, case: &str, k: usize, n: usize, warmup: bool) {
        let now = Instant::now();
        if !self.tty && self.last.is_some_and(|t| now - t < PIPE_EVERY) {
            return;
        }
        self.last = Some(now);
        let line = self.line(case, k, n, warmup);
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r\x1b[K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }

    /// The text of one progress line.
    pub fn line(&self, case: &str, k: usize, n: usize, warmup: bool) -> String {
        let elapsed = self.start.elapsed().as_secs_f64();
        let eta = if self.done == 0 {
            "?".to_string()
        } else {
            let per = elapsed / self.done as f64;
            format!("{:.0}s", per * self.total.saturating_sub(self.done) as f64)
        };
        let kind = if warmup { "warm-up" } else { "run" };
        format!(
            "[{}] {case}: {kind} {k}/{n} · {}/{} overall · elapsed {elapsed:.0}s · ETA {eta}",
            self.scenario, self.done, self.total
        )
    }

    /// One run finished.
    pub fn tick(&mut self) {
        self.done += 1;
    }

    /// Clears the in-place line.
    pub fn finish(&self) {
        if self.tty {
            eprint!("\r\x1b[K");
        }
        eprintln!(
            "[{}] {} runs in {:.1}s",
            self.scenario,
            self.done,
            self.start.elapsed().as_secs_f64()
        );
    }
}
