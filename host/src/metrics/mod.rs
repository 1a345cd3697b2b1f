//! emberd's metrics registry: per function version counters, gauges and
//! histograms recorded where invocations end (sync and async alike), host
//! metrics read at scrape time ([`host`]), rendered in the Prometheus text
//! format ([`expo`]) at `GET /metrics`.
//!
//! Hand-written rather than the `prometheus-client` crate: the families are
//! few and fixed, half of them are read from the pool and `/proc` at scrape
//! time (which a push-style registry would need collectors for anyway), and
//! dropping a deleted function's series is one `retain` here. The format is
//! small and is pinned by the unit tests and by the API tests, which parse
//! it with the reference Python parser.

pub mod expo;
pub mod host;
pub mod process;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use expo::{Encoder, Histogram, Kind};
pub use host::HostView;

/// Invocation duration buckets (seconds): sub-millisecond warm calls up to
/// Lambda's 900 s maximum timeout.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 900.0,
];
/// Init phase and VM boot buckets (seconds).
pub const STARTUP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Async event age buckets (seconds), up to the 6 h maximum event age.
pub const AGE_BUCKETS: &[f64] = &[
    0.01, 0.1, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 10800.0, 21600.0,
];

/// How an invocation ended, for `invocations` / `errors`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// A function error, a timeout, a VM that died, or an environment that
    /// could not start: anything that is not a successful response.
    Error,
}

/// What became of an Invoke that placement sent to another fleet host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forward {
    /// The target answered (whatever the answer).
    Sent,
    /// The target could not be reached: the call ran here.
    Fallback,
    /// The call reached the target and then failed (no answer).
    Failed,
}

impl Forward {
    const ALL: [Forward; 3] = [Forward::Sent, Forward::Fallback, Forward::Failed];

    fn label(self) -> &'static str {
        match self {
            Forward::Sent => "forwarded",
            Forward::Fallback => "fallback",
            Forward::Failed => "failed",
        }
    }
}

/// One function version's series.
#[derive(Clone, Debug)]
struct Series {
    invocations: u64,
    errors: u64,
    throttles: u64,
    duration: Histogram,
    init_duration: Histogram,
    concurrent: u64,
    async_received: u64,
    async_age: Histogram,
    async_dropped: u64,
    dead_letter_errors: u64,
    destination_failures: u64,
}

impl Default for Series {
    fn default() -> Self {
        Self {
            invocations: 0,
            errors: 0,
            throttles: 0,
            duration: Histogram::new(DURATION_BUCKETS),
            init_duration: Histogram::new(STARTUP_BUCKETS),
            concurrent: 0,
            async_received: 0,
            async_age: Histogram::new(AGE_BUCKETS),
            async_dropped: 0,
            dead_letter_errors: 0,
            destination_failures: 0,
        }
    }
}

/// (function, version)
type Key = (String, String);

struct Inner {
    series: BTreeMap<Key, Series>,
    vmm_boot: Histogram,
    snapstart_restore: Histogram,
    snapstart_restore_failures: u64,
    snapstart_spares_taken: u64,
    restore_slots_taken: u64,
    restore_slots_discarded: u64,
    restore_slots_ready: u64,
    log_lines_dropped: u64,
    log_write_errors: u64,
    audit_write_errors: u64,
    forwards: [u64; 3],
}

/// The registry. One per emberd (in [`crate::api::App`]); cheap to share.
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Holds one unit of `concurrent_executions`; dropping it gives it back.
pub struct Executing {
    metrics: Arc<Metrics>,
    key: Key,
}

impl Drop for Executing {
    fn drop(&mut self) {
        if let Some(s) = self.metrics.lock().series.get_mut(&self.key) {
            s.concurrent = s.concurrent.saturating_sub(1);
        }
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                series: BTreeMap::new(),
                vmm_boot: Histogram::new(STARTUP_BUCKETS),
                snapstart_restore: Histogram::new(STARTUP_BUCKETS),
                snapstart_restore_failures: 0,
                snapstart_spares_taken: 0,
                restore_slots_taken: 0,
                restore_slots_discarded: 0,
                restore_slots_ready: 0,
                log_lines_dropped: 0,
                log_write_errors: 0,
                audit_write_errors: 0,
                forwards: [0; 3],
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain counters: a panic elsewhere while holding the lock leaves
        // them consistent enough to keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with(&self, function: &str, version: &str, f: impl FnOnce(&mut Series)) {
        let mut inner = self.lock();
        let s = inner
            .series
            .entry((function.to_string(), version.to_string()))
            .or_default();
        f(s);
    }

    /// An admitted invocation starts running: `concurrent_executions` + 1
    /// until the returned guard is dropped.
    pub fn executing(self: &Arc<Self>, function: &str, version: &str) -> Executing {
        self.with(function, version, |s| s.concurrent += 1);
        Executing {
            metrics: self.clone(),
            key: (function.to_string(), version.to_string()),
        }
    }

    /// One finished invocation: `invocations`, `errors`, the `duration`
    /// histogram, and `init_duration` on a cold start.
    pub fn invocation(
        &self,
        function: &str,
        version: &str,
        outcome: Outcome,
        duration: Duration,
        init: Option<Duration>,
    ) {
        self.with(function, version, |s| {
            s.invocations += 1;
            if outcome == Outcome::Error {
                s.errors += 1;
            }
            s.duration.observe_duration(duration);
            if let Some(i) = init {
                s.init_duration.observe_duration(i);
            }
        });
    }

    /// The invocation core's outcome (sync and async): the agent's measured
    /// duration, or the caller's round trip when there is none.
    pub fn record(&self, o: &crate::invoker::call::Outcome) {
        let outcome = match o.result {
            crate::invoker::call::CallResult::Success(_) => Outcome::Success,
            _ => Outcome::Error,
        };
        let us = |v: Option<u64>| v.map(Duration::from_micros);
        let duration = us(o.report.duration_us).unwrap_or(o.elapsed);
        self.invocation(
            &o.function,
            &o.version,
            outcome,
            duration,
            us(o.report.init_us),
        );
    }

    /// An invocation refused by admission (429).
    pub fn throttle(&self, function: &str, version: &str) {
        self.with(function, version, |s| s.throttles += 1);
    }

    /// An asynchronous event was accepted (stored, 202).
    pub fn async_event_received(&self, function: &str, version: &str) {
        self.with(function, version, |s| s.async_received += 1);
    }

    /// Age of an async event when a worker picked it up for an attempt.
    pub fn async_event_age(&self, function: &str, version: &str, age: Duration) {
        self.with(function, version, |s| s.async_age.observe_duration(age));
    }

    /// An async event dropped without being processed successfully (too old
    /// or out of retries), whether or not a destination received it.
    pub fn async_event_dropped(&self, function: &str, version: &str) {
        self.with(function, version, |s| s.async_dropped += 1);
    }

    /// Delivering a failed event to its on-failure destination failed.
    pub fn dead_letter_error(&self, function: &str, version: &str) {
        self.with(function, version, |s| s.dead_letter_errors += 1);
    }

    /// A destination record was not delivered (its account's queue quota
    /// was full): Lambda's `DestinationDeliveryFailures`.
    pub fn destination_delivery_failure(&self, function: &str, version: &str) {
        self.with(function, version, |s| s.destination_failures += 1);
    }

    /// An `ember-vmm` took `d` from spawn to its agent's Ready.
    pub fn vmm_booted(&self, d: Duration) {
        self.lock().vmm_boot.observe_duration(d);
    }

    /// An environment was restored from its SnapStart snapshot in `d`
    /// (spawn of the VMM to the restored agent's Ready).
    pub fn snapstart_restored(&self, d: Duration) {
        self.lock().snapstart_restore.observe_duration(d);
    }

    /// A cold start took an environment restored ahead of need.
    pub fn snapstart_spare_taken(&self) {
        self.lock().snapstart_spares_taken += 1;
    }

    /// A SnapStart restore loaded its snapshot into a restore slot's VMM.
    pub fn restore_slot_taken(&self) {
        self.lock().restore_slots_taken += 1;
    }

    /// A restore slot was found dead or failed its load (the restore went on
    /// in a freshly started VMM).
    pub fn restore_slot_discarded(&self) {
        self.lock().restore_slots_discarded += 1;
    }

    /// How many restore slots wait, started and answering on their API socket.
    pub fn restore_slots_ready(&self, n: usize) {
        self.lock().restore_slots_ready = n as u64;
    }

    /// A SnapStart restore failed (the environment booted instead).
    pub fn snapstart_restore_failed(&self) {
        self.lock().snapstart_restore_failures += 1;
    }

    /// Log lines the writer could not keep up with.
    pub fn log_lines_dropped(&self, n: u64) {
        self.lock().log_lines_dropped += n;
    }

    /// Log files that could not be written (disk full, permissions...).
    pub fn log_write_error(&self) {
        self.lock().log_write_errors += 1;
    }

    /// Audit records that could not be written (see `api::audit`).
    pub fn audit_write_error(&self) {
        self.lock().audit_write_errors += 1;
    }

    /// An Invoke placement sent to another fleet host, and what became of it.
    pub fn forwarded(&self, f: Forward) {
        self.lock().forwards[f as usize] += 1;
    }

    /// Drops the series of a deleted function (every version when `version`
    /// is None), so deleted functions do not grow the exposition forever.
    pub fn forget(&self, function: &str, version: Option<&str>) {
        self.lock()
            .series
            .retain(|(f, v), _| f != function || version.is_some_and(|q| q != v));
    }

    /// `invocations` of one series (for tests and `ember` summaries).
    pub fn invocations(&self, function: &str, version: &str) -> u64 {
        self.lock()
            .series
            .get(&(function.to_string(), version.to_string()))
            .map_or(0, |s| s.invocations)
    }

    /// The whole exposition: the registry's series plus the host view.
    pub fn render(&self, host: &HostView) -> String {
        self.render_scoped(host, None)
    }

    /// The exposition as `account` may see it (`None`: everything, the
    /// operator's view): only that account's function series, and none of
    /// the host-wide families, which count every account's activity. The
    /// caller passes a `host` view built from that account's environments.
    pub fn render_scoped(&self, host: &HostView, account: Option<&str>) -> String {
        let mut inner = self.lock().clone_for_render();
        if let Some(a) = account {
            inner
                .series
                .retain(|(f, _), _| crate::util::split_scoped(f).0 == a);
        }
        let mut e = Encoder::new();
        render_series(&mut e, &inner.series);
        host.render(&mut e);
        if account.is_some() {
            return e.finish();
        }
        e.family(
            "ember_vmm_boot_seconds",
            Kind::Histogram,
            "Time from spawning an ember-vmm to its agent's Ready.",
        );
        e.histogram("ember_vmm_boot_seconds", &[], &inner.vmm_boot);
        e.family(
            "ember_snapstart_restore_seconds",
            Kind::Histogram,
            "SnapStart restores: spawn of an ember-vmm to the restored agent's Ready (the count is the number of restores).",
        );
        e.histogram(
            "ember_snapstart_restore_seconds",
            &[],
            &inner.snapstart_restore,
        );
        e.family(
            "ember_snapstart_restore_failures_total",
            Kind::Counter,
            "SnapStart restores that failed (missing, corrupt or unloadable snapshot); the environment booted instead.",
        );
        e.sample(
            "ember_snapstart_restore_failures_total",
            &[],
            inner.snapstart_restore_failures as f64,
        );
        e.family(
            "ember_snapstart_spares_taken_total",
            Kind::Counter,
            "Cold starts of SnapStart versions served by an environment restored ahead of need (--snapstart-spares).",
        );
        e.sample(
            "ember_snapstart_spares_taken_total",
            &[],
            inner.snapstart_spares_taken as f64,
        );
        e.family(
            "ember_restore_slots_taken_total",
            Kind::Counter,
            "SnapStart restores that loaded into a jailed ember-vmm started ahead of need (--restore-slots).",
        );
        e.sample(
            "ember_restore_slots_taken_total",
            &[],
            inner.restore_slots_taken as f64,
        );
        e.family(
            "ember_restore_slots_discarded_total",
            Kind::Counter,
            "Restore slots found dead or failing their load; the restore went on in a freshly started ember-vmm.",
        );
        e.sample(
            "ember_restore_slots_discarded_total",
            &[],
            inner.restore_slots_discarded as f64,
        );
        e.family(
            "ember_restore_slots_ready",
            Kind::Gauge,
            "Restore slots waiting: jailed ember-vmm processes started, API socket answering, bound to no function.",
        );
        e.sample(
            "ember_restore_slots_ready",
            &[],
            inner.restore_slots_ready as f64,
        );
        e.family(
            "ember_log_lines_dropped_total",
            Kind::Counter,
            "Function log lines not written because the log writer was behind.",
        );
        e.sample(
            "ember_log_lines_dropped_total",
            &[],
            inner.log_lines_dropped as f64,
        );
        e.family(
            "ember_log_write_errors_total",
            Kind::Counter,
            "Failed writes to the on-disk function logs.",
        );
        e.sample(
            "ember_log_write_errors_total",
            &[],
            inner.log_write_errors as f64,
        );
        e.family(
            "ember_audit_write_errors_total",
            Kind::Counter,
            "Control-plane calls whose audit record could not be written.",
        );
        e.sample(
            "ember_audit_write_errors_total",
            &[],
            inner.audit_write_errors as f64,
        );
        e.family(
            "ember_invoke_forwards_total",
            Kind::Counter,
            "Invokes this fleet host placed on another host: answered there (forwarded), run here because the target could not be reached (fallback), or lost after they were sent (failed).",
        );
        for f in Forward::ALL {
            e.sample(
                "ember_invoke_forwards_total",
                &[("outcome", f.label())],
                inner.forwards[f as usize] as f64,
            );
        }
        process::Usage::collect().render(&mut e);
        process::render_build_info(&mut e);
        e.finish()
    }
}

/// A copy taken under the lock, so rendering (string building) does not
/// hold up invocations.
struct Snapshot {
    series: BTreeMap<Key, Series>,
    vmm_boot: Histogram,
    snapstart_restore: Histogram,
    snapstart_restore_failures: u64,
    snapstart_spares_taken: u64,
    restore_slots_taken: u64,
    restore_slots_discarded: u64,
    restore_slots_ready: u64,
    log_lines_dropped: u64,
    log_write_errors: u64,
    audit_write_errors: u64,
    forwards: [u64; 3],
}

impl Inner {
    fn clone_for_render(&self) -> Snapshot {
        Snapshot {
            series: self.series.clone(),
            vmm_boot: self.vmm_boot.clone(),
            snapstart_restore: self.snapstart_restore.clone(),
            snapstart_restore_failures: self.snapstart_restore_failures,
            snapstart_spares_taken: self.snapstart_spares_taken,
            restore_slots_taken: self.restore_slots_taken,
            restore_slots_discarded: self.restore_slots_discarded,
            restore_slots_ready: self.restore_slots_ready,
            log_lines_dropped: self.log_lines_dropped,
            log_write_errors: self.log_write_errors,
            audit_write_errors: self.audit_write_errors,
            forwards: self.forwards,
        }
    }
}

type Counter = fn(&Series) -> u64;
type Hist = fn(&Series) -> &Histogram;

const COUNTERS: &[(&str, &str, Counter)] = &[
    (
        "ember_invocations_total",
        "Invocations that ran (successful or not; throttles excluded).",
        |s| s.invocations,
    ),
    (
        "ember_errors_total",
        "Invocations that ended in a function error, timeout or dead environment.",
        |s| s.errors,
    ),
    (
        "ember_throttles_total",
        "Invocation requests refused for lack of concurrency (429).",
        |s| s.throttles,
    ),
    (
        "ember_async_events_received_total",
        "Asynchronous events accepted and stored.",
        |s| s.async_received,
    ),
    (
        "ember_async_events_dropped_total",
        "Asynchronous events given up on (too old or out of retries).",
        |s| s.async_dropped,
    ),
    (
        "ember_dead_letter_errors_total",
        "Failed deliveries of dropped events to their on-failure destination.",
        |s| s.dead_letter_errors,
    ),
    (
        "ember_destination_delivery_failures_total",
        "Destination records not delivered (the account's queue quota was full).",
        |s| s.destination_failures,
    ),
];

const HISTOGRAMS: &[(&str, &str, Hist)] = &[
    (
        "ember_duration_seconds",
        "Time the function spent on an invocation.",
        |s| &s.duration,
    ),
    (
        "ember_init_duration_seconds",
        "Init phase of a new execution environment (cold starts).",
        |s| &s.init_duration,
    ),
    (
        "ember_async_event_age_seconds",
        "Age of an asynchronous event when an attempt to process it began.",
        |s| &s.async_age,
    ),
];

fn render_series(e: &mut Encoder, series: &BTreeMap<Key, Series>) {
    for (name, help, get) in COUNTERS {
        e.family(name, Kind::Counter, help);
        for ((f, v), s) in series {
            e.sample(name, &[("function", f), ("version", v)], get(s) as f64);
        }
    }
    e.family(
        "ember_concurrent_executions",
        Kind::Gauge,
        "Invocations running now.",
    );
    for ((f, v), s) in series {
        e.sample(
            "ember_concurrent_executions",
            &[("function", f), ("version", v)],
            s.concurrent as f64,
        );
    }
    for (name, help, get) in HISTOGRAMS {
        e.family(name, Kind::Histogram, help);
        for ((f, v), s) in series {
            e.histogram(name, &[("function", f), ("version", v)], get(s));
        }
    }
}

#[cfg(test)]
mod tests;
