//! `ember audit verify|list`. Both read the files in the data directory
//! directly rather than asking emberd: verification must not trust the
//! daemon whose trail it checks, it has to work while emberd is stopped
//! (after an incident), and it needs the HMAC key, which only the data
//! directory's owner (root for /var/lib/ember) can read.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

use crate::audit::reader::read_lines;
use crate::audit::verify::verify_dir;

#[derive(Debug, clap::Subcommand)]
pub enum AuditCmd {
    /// Check the whole trail (chain, digests, signed head); exit 1 naming the
    /// first bad record.
    Verify {
        /// emberd's data directory (default: emberd's default).
        #[arg(long, env = "EMBER_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Print the records (oldest first).
    List {
        #[arg(long, env = "EMBER_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Only records at or after this time: 90s, 10m, 2h, 3d, a Unix
        /// time in seconds, or YYYY-MM-DDTHH:MM:SS[.mmm][Z] (UTC).
        #[arg(long)]
        since: Option<String>,
        /// Also show digests.
        #[arg(long)]
        all: bool,
    },
}

/// Runs an audit subcommand; `json` is the CLI's global `--json`.
pub fn run(cmd: AuditCmd, json: bool) -> ExitCode {
    match cmd {
        AuditCmd::Verify { data_dir } => verify(data_dir, json),
        AuditCmd::List {
            data_dir,
            since,
            all,
        } => list(data_dir, since.as_deref(), all, json),
    }
}

fn dir_of(data_dir: Option<PathBuf>) -> PathBuf {
    crate::audit::audit_dir(&data_dir.unwrap_or_else(crate::daemon::default_data_dir))
}

fn verify(data_dir: Option<PathBuf>, json: bool) -> ExitCode {
    let dir = dir_of(data_dir);
    let report = match verify_dir(&dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "ember audit verify: {}: {}",
                dir.display(),
                crate::util::error_chain(&e)
            );
            return ExitCode::FAILURE;
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        for n in &report.notes {
            println!("note: {n}");
        }
        match &report.first_bad {
            None => println!(
                "audit trail OK: {} records ({} digests) in {} file(s), seq 1..{}, signed head at seq {}",
                report.records,
                report.digests,
                report.files,
                report.last_seq,
                report.head_seq.map_or("-".into(), |s| s.to_string())
            ),
            Some(f) => println!(
                "audit trail FAILED: first bad record: {} seq {} (line {}): {}",
                f.file,
                f.seq.map_or("?".into(), |s| s.to_string()),
                f.line,
                f.reason
            ),
        }
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn list(data_dir: Option<PathBuf>, since: Option<&str>, all: bool, json: bool) -> ExitCode {
    let now_ms = crate::util::unix_ms();
    let since_ms = match since.map(|s| parse_since(s, now_ms)) {
        None => 0,
        Some(Some(ms)) => ms,
        Some(None) => {
            eprintln!("ember audit list: --since {since:?}: expected 10m, 2h, 3d, Unix seconds or YYYY-MM-DDTHH:MM:SS");
            return ExitCode::from(2);
        }
    };
    let dir = dir_of(data_dir);
    let lines = match read_lines(&dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ember audit list: {}", crate::util::error_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    let records: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(&l.text).ok())
        .filter(|v| v["time_ms"].as_u64().unwrap_or(0) >= since_ms)
        .filter(|v| all || v["type"] != "digest")
        .collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&records).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "{:<24} {:>6}  {:<34} {:<30} {:<20} {:>6}  ERROR",
        "TIME", "SEQ", "WHO", "OPERATION", "RESOURCE", "STATUS"
    );
    for v in &records {
        let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
        let (who, op, res, status, err) = match v["type"].as_str() {
            Some("call") => {
                let w = &v["who"];
                let key = w["access_key_id"]
                    .as_str()
                    .or(w["claimed_access_key_id"].as_str())
                    .unwrap_or("-");
                (
                    format!("{key}@{}", w["source"].as_str().unwrap_or("?")),
                    s("operation"),
                    s("resource"),
                    v["status"].to_string(),
                    s("error"),
                )
            }
            Some("digest") => (
                "emberd".into(),
                "(digest)".into(),
                format!("seq {}..", v["first_seq"]),
                String::new(),
                String::new(),
            ),
            _ => (
                "emberd".into(),
                format!("({})", s("event")),
                String::new(),
                String::new(),
                s("detail"),
            ),
        };
        println!(
            "{:<24} {:>6}  {who:<34} {op:<30} {res:<20} {status:>6}  {err}",
            s("time"),
            v["seq"].as_u64().unwrap_or(0)
        );
    }
    ExitCode::SUCCESS
}

/// `--since` as Unix milliseconds.
pub fn parse_since(s: &str, now_ms: u64) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    if let (Ok(n), true) = (
        num.parse::<u64>(),
        unit.chars().all(|c| c.is_ascii_alphabetic()),
    ) {
        let secs = match unit {
            "s" => n,
            "m" => n * 60,
            "h" => n * 3600,
            "d" => n * 86_400,
            _ => return None,
        };
        return Some(now_ms.saturating_sub(secs * 1000));
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Some(secs * 1000);
    }
    parse_utc(s)
}

/// `YYYY-MM-DDTHH:MM:SS[.mmm][Z]` (UTC) as Unix milliseconds.
fn parse_utc(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = s.split_once(['T', ' '])?;
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<u64> = hms
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let (&[y, m, day], &[hh, mm, ss]) = (d.as_slice(), t.as_slice()) else {
        return None;
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let ms: u64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    let days = days_from_civil(y, m as u32, day as u32);
    let secs = u64::try_from(days).ok()? * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(secs * 1000 + ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm; the inverse of `util::format_lambda_time`'s).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
