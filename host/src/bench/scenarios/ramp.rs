//! `ember bench ramp`: N simultaneous cold starts (N = 1, 2, 4, ...) of the
//! 256 MiB function (no spare VM fits it, so each boots a VM): after a
//! configuration change, N clients on N open connections invoke at once.
//! Each start is one record (its latency); the batch time (first sent → last
//! answered) gives environments started per second.

use std::time::Instant;

use super::super::record::Sample;
use super::super::runner::Scenario;
use super::emberd::Emberd;
use super::function::{invoke, new_configuration, BOOT_FN};
use super::ScenarioError;

#[derive(Debug, Clone, clap::Args)]
pub struct RampArgs {
    #[command(flatten)]
    pub emberd: super::emberd::EmberdArgs,
    /// The steps: simultaneous cold starts per batch (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub steps: Vec<u32>,
}

pub struct Ramp {
    emberd: Emberd,
    steps: Vec<u32>,
    iteration: u64,
}

impl Ramp {
    pub async fn new(emberd: Emberd, a: &RampArgs) -> Result<Self, ScenarioError> {
        if a.steps.is_empty() || a.steps.contains(&0) {
            return Err(ScenarioError::Usage(
                "--steps must be positive numbers".into(),
            ));
        }
        let code = super::emberd::function_code(&a.emberd)?;
        emberd.create_function(BOOT_FN, 256, &code).await?;
        Ok(Ramp {
            emberd,
            steps: a.steps.clone(),
            iteration: 0,
        })
    }

    async fn batch(&mut self, n: u32) -> Result<Vec<Sample>, ScenarioError> {
        let mut c = self.emberd.conn().await?;
        self.iteration += 1;
        new_configuration(&mut c, BOOT_FN, self.iteration).await?;
        let mut conns = vec![c];
        for _ in 1..n {
            conns.push(self.emberd.conn().await?);
        }
        let t0 = Instant::now();
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|mut c| {
                tokio::spawn(
                    async move { invoke(&mut c, BOOT_FN, b"{}".to_vec(), false, true).await },
                )
            })
            .collect();
        let mut samples = Vec::new();
        for t in tasks {
            samples.push(match t.await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => Sample::failed(crate::util::error_chain(&e)),
                Err(e) => Sample::failed(format!("client task: {e}")),
            });
        }
        let batch_ms = t0.elapsed().as_secs_f64() * 1e3;
        for s in &mut samples {
            s.batch_ms = Some(batch_ms);
        }
        Ok(samples)
    }
}

impl Scenario for Ramp {
    fn name(&self) -> &'static str {
        "ramp"
    }

    fn cases(&self) -> Vec<String> {
        self.steps
            .iter()
            .map(|n| format!("{n} simultaneous"))
            .collect()
    }

    fn step(&self, case: usize) -> Option<u32> {
        self.steps.get(case).copied()
    }

    async fn once(&mut self, case: usize) -> Vec<Sample> {
        let Some(&n) = self.steps.get(case) else {
            return vec![Sample::failed("no such case")];
        };
        match self.batch(n).await {
            Ok(s) => s,
            Err(e) => vec![Sample::failed(crate::util::error_chain(&e))],
        }
    }
}
