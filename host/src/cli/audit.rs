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
use crate::since::Since;

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
        /// Only records at or after this time: a duration back from now
        /// (30s, 10m, 2h, 1d, 1w), an RFC 3339 time (no zone is UTC) or
        /// @UNIX-SECONDS.
        #[arg(long)]
        since: Option<Since>,
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
        } => list(data_dir, since, all, json),
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

fn list(data_dir: Option<PathBuf>, since: Option<Since>, all: bool, json: bool) -> ExitCode {
    let since_ms = since.map_or(0, Since::unix_ms);
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
