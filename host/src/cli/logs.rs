//! `ember logs NAME [--version V] [--since 10m|RFC3339|@SECS] [--follow]`: prints
//! a function's log lines (`TIMESTAMP [VERSION] STREAM MESSAGE`, or one
//! JSON object per line with `--json`). `--follow` keeps asking emberd for
//! lines after the last `NextToken`, each request waiting server-side for
//! new lines, until interrupted.

use std::io::Write;
use std::process::ExitCode;

use serde_json::Value;

use super::client::{enc, ClientError, Conn};
use crate::since::Since;

#[derive(Debug, Clone, clap::Args)]
pub struct LogsArgs {
    /// The function.
    pub name: String,
    /// Only this version ($LATEST or a number); default all.
    #[arg(long)]
    pub version: Option<String>,
    /// Start here: a duration back from now (30s, 10m, 2h, 1d, 1w), an RFC
    /// 3339 time (no zone is UTC) or @UNIX-SECONDS.
    #[arg(long, default_value = "10m")]
    pub since: Since,
    /// Keep printing new lines as they are written.
    #[arg(long)]
    pub follow: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LogsCliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{kind}: {message}")]
    Api { kind: String, message: String },
    #[error("emberd answered without a NextToken")]
    NoToken,
}

/// How long each `--follow` request waits server-side for new lines.
const FOLLOW_WAIT_SECS: u32 = 10;

pub async fn run(endpoint: &str, json: bool, a: LogsArgs) -> Result<ExitCode, LogsCliError> {
    let mut conn = Conn::connect(endpoint).await?;
    let base = format!("/ember/logs/{}?limit=10000", enc(&a.name));
    let version = a
        .version
        .as_ref()
        .map(|v| format!("&version={}", enc(v)))
        .unwrap_or_default();
    // Resolved here, so a duration counts from when the command started.
    let since = crate::logs::time::format_us(a.since.unix_us);
    let mut cursor = format!("&since={}", enc(&since));
    loop {
        let mut path = format!("{base}{version}{cursor}");
        let following = a.follow && !cursor.starts_with("&since=");
        if following {
            path.push_str(&format!("&wait={FOLLOW_WAIT_SECS}"));
        }
        let r = match conn.send("GET", &path, &[], Vec::new()).await {
            Ok(r) => r,
            // A kept-alive connection emberd closed while we waited: reconnect once.
            Err(ClientError::Http(_)) if following => {
                conn = Conn::connect(endpoint).await?;
                conn.send("GET", &path, &[], Vec::new()).await?
            }
            Err(e) => return Err(e.into()),
        };
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        if r.status == 429 && following {
            // The account has its most follows open: wait for a place.
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            continue;
        }
        if r.status >= 400 {
            return Err(LogsCliError::Api {
                kind: r.header("x-amzn-errortype").unwrap_or("Error").into(),
                message: v["message"].as_str().unwrap_or("").into(),
            });
        }
        print_events(json, &v);
        let token = v["NextToken"].as_str().ok_or(LogsCliError::NoToken)?;
        cursor = format!("&next={}", enc(token));
        if !a.follow && v["Truncated"] != true {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

fn print_events(json: bool, v: &Value) {
    let mut out = std::io::stdout().lock();
    for e in v["Events"].as_array().into_iter().flatten() {
        let _ = if json {
            writeln!(out, "{e}")
        } else {
            writeln!(
                out,
                "{} [{}] {} {}",
                e["Timestamp"].as_str().unwrap_or(""),
                e["Version"].as_str().unwrap_or(""),
                e["Stream"].as_str().unwrap_or(""),
                e["Message"].as_str().unwrap_or("")
            )
        };
    }
    let _ = out.flush();
}
