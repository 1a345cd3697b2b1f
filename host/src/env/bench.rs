//! Measurements of one environment's cold start and warm round trip, shared
//! by `ember-run --bench` (scripts/bench-agent.sh) and emberd's benchmarks.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{AgentError, Environment, InitSpec, InvokeRequest, LaunchConfig};

/// Order statistics of a set of durations.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub n: usize,
    pub min: Duration,
    pub median: Duration,
    pub p99: Duration,
}

impl Stats {
    /// `None` for an empty set.
    pub fn of(mut v: Vec<Duration>) -> Option<Stats> {
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
        Some(Stats {
            n: v.len(),
            min: v[0],
            median: at(0.5),
            p99: at(0.99),
        })
    }
}

/// One cold start, split into its phases (host clock).
#[derive(Debug, Clone, Copy)]
pub struct ColdSample {
    /// Spawn of `ember-vmm` → first response received.
    pub total: Duration,
    /// Spawn → `Ready`.
    pub ready: Duration,
    /// `Init` sent → `InitDone`.
    pub init: Duration,
    /// First `Invoke` round trip.
    pub first_invoke: Duration,
}

fn deadline_ms(timeout_ms: u32) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    now + u64::from(timeout_ms)
}

fn request(id: String, payload: &[u8], timeout_ms: u32) -> InvokeRequest {
    InvokeRequest {
        request_id: id,
        payload: payload.to_vec().into(),
        deadline_ms: deadline_ms(timeout_ms),
        ..Default::default()
    }
}

/// Boots an environment, initialises it, invokes it once, shuts it down.
/// A function error on that first invocation counts as a failure.
pub fn cold_start(
    cfg: &LaunchConfig,
    spec: &InitSpec,
    payload: &[u8],
) -> Result<ColdSample, AgentError> {
    let t0 = Instant::now();
    let mut env = Environment::launch(cfg)?;
    let ready = t0.elapsed();
    let t1 = Instant::now();
    env.init(spec)?;
    let init = t1.elapsed();
    let t2 = Instant::now();
    let inv = env.invoke(&request("cold".into(), payload, spec.timeout_ms))?;
    let first_invoke = t2.elapsed();
    let total = t0.elapsed();
    if let Err(e) = inv.result {
        return Err(AgentError::AgentFatal(format!(
            "{}: {}",
            e.error_type, e.message
        )));
    }
    env.shutdown();
    Ok(ColdSample {
        total,
        ready,
        init,
        first_invoke,
    })
}

/// `n` invocations in one warm environment; the host-measured round trips.
pub fn warm(
    env: &mut Environment,
    payload: &[u8],
    timeout_ms: u32,
    n: usize,
) -> Result<Vec<Duration>, AgentError> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let inv = env.invoke(&request(format!("warm-{i}"), payload, timeout_ms))?;
        if let Err(e) = inv.result {
            return Err(AgentError::AgentFatal(format!(
                "{}: {}",
                e.error_type, e.message
            )));
        }
        out.push(inv.round_trip);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_pick_order_statistics() {
        let v: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let s = Stats::of(v).unwrap();
        assert_eq!(
            (s.n, s.min, s.median, s.p99),
            (
                100,
                Duration::from_micros(1),
                Duration::from_micros(50),
                Duration::from_micros(99)
            )
        );
        assert!(Stats::of(Vec::new()).is_none());
        let one = Stats::of(vec![Duration::from_millis(3)]).unwrap();
        assert_eq!(
            (one.median, one.p99),
            (Duration::from_millis(3), Duration::from_millis(3))
        );
    }
}
