//! The load generator (`ember bench load`, hidden; scripts/bench-emberd.sh
//! drives it): warm invoke
//! latency and throughput at a given concurrency, cold invoke latency (each
//! call after a configuration change, so no environment can be reused), and
//! DryRun (the HTTP + routing floor, the peer the others are compared with).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::cli::client::{function_path, Conn};

#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    name: String,
    #[arg(long, default_value = "warm")]
    mode: String,
    #[arg(long, default_value_t = 200)]
    requests: usize,
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    #[arg(long, default_value = "{}")]
    payload: String,
    /// Cold mode: pause between cold calls (lets emberd refill its spare VMs,
    /// as between sporadic real cold starts).
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
}

/// Nearest-rank percentile of sorted durations, in ms.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let ms: Vec<f64> = sorted.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    let v = super::stats::percentile(&ms, p * 100.0);
    if v.is_nan() {
        0.0
    } else {
        v
    }
}

async fn one(
    c: &mut Conn,
    path: &str,
    headers: &[(&str, &str)],
    payload: &[u8],
) -> Result<Duration, String> {
    let t = Instant::now();
    let r = c
        .send("POST", path, headers, payload.to_vec())
        .await
        .map_err(|e| e.to_string())?;
    let d = t.elapsed();
    if r.status >= 300 || r.header("x-amz-function-error").is_some() {
        return Err(format!(
            "invoke failed: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    Ok(d)
}

pub async fn run(ep: &str, a: LoadArgs) -> Result<(), String> {
    let path = function_path(&a.name, "/invocations");
    let payload = a.payload.clone().into_bytes();
    let mut lat = Vec::with_capacity(a.requests);
    let started = Instant::now();
    match a.mode.as_str() {
        "cold" => {
            let mut c = Conn::connect(ep).await.map_err(|e| e.to_string())?;
            let cfg_path = function_path(&a.name, "/configuration");
            for i in 0..a.requests {
                let body =
                    json!({"Environment": {"Variables": {"BENCH_ITERATION": i.to_string()}}})
                        .to_string();
                let r = c
                    .send("PUT", &cfg_path, &[], body.into_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                if r.status != 200 {
                    return Err(format!(
                        "update failed: {}",
                        String::from_utf8_lossy(&r.body)
                    ));
                }
                lat.push(one(&mut c, &path, &[], &payload).await?);
                tokio::time::sleep(Duration::from_millis(a.pause_ms)).await;
            }
        }
        "warm" | "dryrun" => {
            let headers: &'static [(&'static str, &'static str)] = if a.mode == "dryrun" {
                &[("x-amz-invocation-type", "DryRun")]
            } else {
                &[]
            };
            let mut conns = Vec::new();
            for _ in 0..a.concurrency {
                conns.push(Conn::connect(ep).await.map_err(|e| e.to_string())?);
            }
            // Warm-up: one concurrent round so every worker has an environment.
            let warm: Vec<_> = conns
                .into_iter()
                .map(|mut c| {
                    let (path, payload) = (path.clone(), payload.clone());
                    tokio::spawn(
                        async move { one(&mut c, &path, headers, &payload).await.map(|_| c) },
                    )
                })
                .collect();
            let mut conns = Vec::new();
            for w in warm {
                conns.push(w.await.map_err(|e| e.to_string())??);
            }
            let per = a.requests.div_ceil(a.concurrency);
            let t0 = Instant::now();
            let workers: Vec<_> = conns
                .into_iter()
                .map(|mut c| {
                    let (path, payload) = (path.clone(), payload.clone());
                    tokio::spawn(async move {
                        let mut v = Vec::with_capacity(per);
                        for _ in 0..per {
                            v.push(one(&mut c, &path, headers, &payload).await?);
                        }
                        Ok::<_, String>(v)
                    })
                })
                .collect();
            for w in workers {
                lat.extend(w.await.map_err(|e| e.to_string())??);
            }
            let wall = t0.elapsed();
            lat.sort();
            let out = json!({
                "mode": a.mode, "concurrency": a.concurrency, "requests": lat.len(),
                "p50_ms": percentile(&lat, 0.5), "p99_ms": percentile(&lat, 0.99),
                "throughput_rps": lat.len() as f64 / wall.as_secs_f64(),
            });
            println!("{out}");
            return Ok(());
        }
        other => return Err(format!("unknown mode {other:?} (warm, cold, dryrun)")),
    }
    lat.sort();
    let out = json!({
        "mode": a.mode, "concurrency": 1, "requests": lat.len(),
        "p50_ms": percentile(&lat, 0.5), "p99_ms": percentile(&lat, 0.99),
        "throughput_rps": lat.len() as f64 / started.elapsed().as_secs_f64(),
    });
    println!("{out}");
    Ok(())
}
