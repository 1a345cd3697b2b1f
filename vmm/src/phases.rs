//! Where the time of building and starting one VM goes: named marks, each
//! the time since the VM's start instant (the process start, or the start
//! of a snapshot load), in the order they were reached. `ember-snapshot
//! --report` prints them; benchmarks split a load or a boot with them.

use std::time::{Duration, Instant};

/// The marks of one VM, from `start`.
#[derive(Debug, Clone)]
pub struct Phases {
    start: Instant,
    marks: Vec<(&'static str, Duration)>,
}

impl Phases {
    /// No marks yet; times count from `start`.
    pub fn new(start: Instant) -> Phases {
        Phases {
            start,
            marks: Vec::with_capacity(16),
        }
    }

    /// Records that `name` was reached now.
    pub fn mark(&mut self, name: &'static str) {
        self.marks.push((name, self.start.elapsed()));
    }

    /// Records `name` at `at` (a time taken by another thread).
    pub fn mark_at(&mut self, name: &'static str, at: Instant) {
        self.marks
            .push((name, at.saturating_duration_since(self.start)));
    }

    /// Puts the marks in time order (marks taken by other threads may have
    /// been added late); equal times keep their order.
    pub fn sort(&mut self) {
        self.marks.sort_by_key(|(_, at)| *at);
    }

    /// Every mark, in order: name and time since the start.
    pub fn marks(&self) -> &[(&'static str, Duration)] {
        &self.marks
    }

    /// `name=us` pairs, each the microseconds since the previous mark (the
    /// first: since the start), space-separated.
    pub fn describe(&self) -> String {
        let mut last = Duration::ZERO;
        let mut out = Vec::with_capacity(self.marks.len());
        for (name, at) in &self.marks {
            out.push(format!("{name}={}", at.saturating_sub(last).as_micros()));
            last = *at;
        }
        out.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_gives_each_step_since_the_previous_mark() {
        let start = Instant::now();
        let mut p = Phases::new(start);
        p.mark_at("a", start + Duration::from_micros(100));
        p.mark_at("b", start + Duration::from_micros(350));
        assert_eq!(p.describe(), "a=100 b=250");
        assert_eq!(p.marks()[1], ("b", Duration::from_micros(350)));
    }
}
