//! `ember bench function`: invocations through emberd's HTTP API, SigV4
//! signed like any client — cold with a VM booted on the critical path (a
//! 256 MiB function: no spare VM matches), cold from a spare VM (128 MiB,
//! emberd's spare size), and warm at each payload size. A cold run follows
//! a configuration change, so no environment can be reused; every run checks
//! emberd's `X-Amz-Ember-Cold-Start` says what the case claims. With the
//! log tail (`X-Amz-Log-Type: Tail`) each run is split into phases from
//! emberd's REPORT line: `init` (Init Duration), `invoke` (Duration) and
//! `platform` (the rest: routing, jail, VMM setup, guest entry → agent
//! ready, transport).

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::json;

use super::super::record::{Phase, Sample};
use super::super::runner::{Scenario, SplitMix64};
use super::emberd::{expect_ok, send, Emberd};
use super::ScenarioError;
use crate::cli::client::{function_path, Conn};

/// The 128 MiB function (emberd's default spare VMs fit it).
pub const SPARE_FN: &str = "ember-bench-spare";
/// The 256 MiB function: every cold start boots a VM.
pub const BOOT_FN: &str = "ember-bench-boot";
/// The warm function.
pub const WARM_FN: &str = "ember-bench-warm";

#[derive(Debug, Clone, clap::Args)]
pub struct FunctionArgs {
    #[command(flatten)]
    pub emberd: super::emberd::EmberdArgs,
    /// Payload sizes in bytes for the warm cases (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0,65536")]
    pub payload_sizes: Vec<usize>,
    /// Before each cold run, wait this long (untimed) so emberd can refill
    /// its spare VMs, as between sporadic real cold starts.
    #[arg(long, default_value_t = 300)]
    pub settle_ms: u64,
    /// Leave the log tail off (no phase breakdown; slightly less work per
    /// invoke for emberd).
    #[arg(long)]
    pub no_phases: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    ColdBoot,
    ColdSpare,
    Warm(usize),
}

pub struct FunctionBench {
    emberd: Emberd,
    conn: Option<Conn>,
    cases: Vec<(String, Kind)>,
    payloads: Vec<Vec<u8>>,
    settle: Duration,
    phases: bool,
    iteration: u64,
}

/// A JSON payload of exactly `size` bytes (at least `{}`), its filler
/// drawn from `rng` so a seed fixes it.
pub fn payload(size: usize, rng: &mut SplitMix64) -> Vec<u8> {
    if size < 12 {
        return b"{}".to_vec();
    }
    let filler: String = (0..size - 10)
        .map(|_| (b'a' + (rng.next_u64() % 26) as u8) as char)
        .collect();
    format!("{{\"pad\":\"{filler}\"}}").into_bytes()
}

impl FunctionBench {
    pub async fn new(emberd: Emberd, a: &FunctionArgs, seed: u64) -> Result<Self, ScenarioError> {
        let code = super::emberd::function_code(&a.emberd)?;
        emberd.create_function(SPARE_FN, 128, &code).await?;
        emberd.create_function(BOOT_FN, 256, &code).await?;
        emberd.create_function(WARM_FN, 128, &code).await?;
        let mut rng = SplitMix64::new(seed);
        let mut cases = vec![
            ("cold, VM boot".to_string(), Kind::ColdBoot),
            ("cold, spare VM".to_string(), Kind::ColdSpare),
        ];
        let mut payloads = Vec::new();
        for (i, &size) in a.payload_sizes.iter().enumerate() {
            cases.push((
                format!("warm, {} payload", human_bytes(size)),
                Kind::Warm(i),
            ));
            payloads.push(payload(size, &mut rng));
        }
        if payloads.is_empty() {
            payloads.push(b"{}".to_vec());
        }
        // The warm function's environment exists before the first run (its
        // cold start is not a warm run, warm-up or not).
        let mut c = emberd.conn().await?;
        invoke(&mut c, WARM_FN, b"{}".to_vec(), false, true).await?;
        Ok(FunctionBench {
            emberd,
            conn: None,
            cases,
            payloads,
            settle: Duration::from_millis(a.settle_ms),
            phases: !a.no_phases,
            iteration: 0,
        })
    }

    async fn run(&mut self, kind: Kind) -> Result<Sample, ScenarioError> {
        if self.conn.is_none() {
            self.conn = Some(self.emberd.conn().await?);
        }
        let Some(c) = self.conn.as_mut() else {
            return Err(ScenarioError::Api("no connection".into()));
        };
        let (name, body, want_cold) = match kind {
            Kind::ColdBoot | Kind::ColdSpare => {
                let name = if kind == Kind::ColdBoot {
                    BOOT_FN
                } else {
                    SPARE_FN
                };
                self.iteration += 1;
                new_configuration(c, name, self.iteration).await?;
                tokio::time::sleep(self.settle).await;
                (name, self.payloads[0].clone(), true)
            }
            Kind::Warm(i) => (WARM_FN, self.payloads[i].clone(), false),
        };
        invoke(c, name, body, self.phases, want_cold).await
    }
}

/// Changes `name`'s configuration (an environment variable) so that no
/// environment of the new one exists yet: the next invoke is a cold start.
pub async fn new_configuration(
    c: &mut Conn,
    name: &str,
    iteration: u64,
) -> Result<(), ScenarioError> {
    let cfg = json!({"Environment": {"Variables": {"BENCH_ITERATION": iteration.to_string()}}});
    let r = send(
        c,
        "PUT",
        &function_path(name, "/configuration"),
        cfg.to_string().into_bytes(),
    )
    .await?;
    expect_ok(&r, "UpdateFunctionConfiguration")
}

/// Invokes `name` once and times it; the sample's error says so when
/// emberd's cold-start header is not `want_cold`.
pub async fn invoke(
    c: &mut Conn,
    name: &str,
    body: Vec<u8>,
    with_phases: bool,
    want_cold: bool,
) -> Result<Sample, ScenarioError> {
    let headers: &[(&str, &str)] = if with_phases {
        &[("x-amz-log-type", "Tail")]
    } else {
        &[]
    };
    let path = function_path(name, "/invocations");
    let t = Instant::now();
    let r = c
        .send("POST", &path, headers, body)
        .await
        .map_err(|e| ScenarioError::Api(crate::util::error_chain(&e)))?;
    let wall_ms = t.elapsed().as_secs_f64() * 1e3;
    expect_ok(&r, "Invoke")?;
    if let Some(e) = r.header("x-amz-function-error") {
        return Err(ScenarioError::Api(format!(
            "the function failed ({e}): {}",
            String::from_utf8_lossy(&r.body)
        )));
    }
    let cold = r.header("x-amz-ember-cold-start") == Some("true");
    let mut sample = Sample {
        wall_ms: Some(wall_ms),
        ..Sample::default()
    };
    if cold != want_cold {
        sample.error = Some(format!(
            "emberd reports cold start = {cold}, the case expects {want_cold}"
        ));
    }
    if let Some(report) = r
        .header("x-amz-log-result")
        .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
    {
        sample.phases = phases(&String::from_utf8_lossy(&report), wall_ms);
    }
    Ok(sample)
}

/// Phases from a REPORT line: `platform` (the rest of `wall_ms`), `init`
/// (Init Duration, cold only) and `invoke` (Duration).
pub fn phases(log_tail: &str, wall_ms: f64) -> Vec<Phase> {
    let Some(report) = log_tail.lines().rev().find(|l| l.starts_with("REPORT ")) else {
        return Vec::new();
    };
    let field = |key: &str| {
        report.split('\t').find_map(|f| {
            let v = f.trim().strip_prefix(key)?.strip_suffix(" ms")?;
            v.trim().parse::<f64>().ok()
        })
    };
    let Some(invoke) = field("Duration:") else {
        return Vec::new();
    };
    let init = field("Init Duration:");
    let platform = (wall_ms - invoke - init.unwrap_or(0.0)).max(0.0);
    let mut out = vec![Phase {
        name: "platform".into(),
        ms: platform,
    }];
    if let Some(i) = init {
        out.push(Phase {
            name: "init".into(),
            ms: i,
        });
    }
    out.push(Phase {
        name: "invoke".into(),
        ms: invoke,
    });
    out
}

/// `65536` → `64 KiB`.
pub fn human_bytes(n: usize) -> String {
    match n {
        0 => "empty".into(),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

impl Scenario for FunctionBench {
    fn name(&self) -> &'static str {
        "function"
    }

    fn cases(&self) -> Vec<String> {
        self.cases.iter().map(|c| c.0.clone()).collect()
    }

    async fn once(&mut self, case: usize) -> Vec<Sample> {
        let Some(&(_, kind)) = self.cases.get(case) else {
            return vec![Sample::failed("no such case")];
        };
        match self.run(kind).await {
            Ok(s) => vec![s],
            Err(e) => {
                // The connection may be what broke: a fresh one next time.
                self.conn = None;
                vec![Sample::failed(crate::util::error_chain(&e))]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_line_becomes_phases() {
        let tail = "START RequestId: x Version: $LATEST\nEND RequestId: x\n\
                    REPORT RequestId: x\tDuration: 0.50 ms\tBilled Duration: 1 ms\tMemory Size: 128 MB\tInit Duration: 2.25 ms\t\n";
        let p = phases(tail, 10.0);
        let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["platform", "init", "invoke"]);
        assert_eq!((p[0].ms, p[1].ms, p[2].ms), (7.25, 2.25, 0.5));
        let warm = phases(
            "REPORT RequestId: y\tDuration: 1.00 ms\tBilled Duration: 1 ms\t",
            3.0,
        );
        assert_eq!(warm.len(), 2);
        assert!(phases("no report", 1.0).is_empty());
    }

    #[test]
    fn payloads_have_the_asked_size_and_depend_only_on_the_seed() {
        let a = payload(1000, &mut SplitMix64::new(1));
        assert_eq!(a.len(), 1000);
        assert!(serde_json::from_slice::<serde_json::Value>(&a).is_ok());
        assert_eq!(a, payload(1000, &mut SplitMix64::new(1)));
        assert_ne!(a, payload(1000, &mut SplitMix64::new(2)));
        assert_eq!(payload(0, &mut SplitMix64::new(1)), b"{}");
        assert_eq!(human_bytes(65536), "64 KiB");
    }
}
