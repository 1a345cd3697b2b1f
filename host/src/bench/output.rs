//! The result directory (`--out DIR`): raw per-run records as JSON Lines
//! (raw.jsonl) and CSV (raw.csv), the summary as JSON (summary.json) and a
//! Markdown table (summary.md); and reading them back for `compare`.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::record::{Record, CSV_COLUMNS};
use super::summary::Summary;

pub const RAW_JSONL: &str = "raw.jsonl";
pub const RAW_CSV: &str = "raw.csv";
pub const SUMMARY_JSON: &str = "summary.json";
pub const SUMMARY_MD: &str = "summary.md";

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("writing {0}")]
    Write(PathBuf, #[source] std::io::Error),
    #[error("reading {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("{0} line {1} is not a benchmark record")]
    BadRecord(PathBuf, usize, #[source] serde_json::Error),
    #[error("{0} is not a benchmark summary")]
    BadSummary(PathBuf, #[source] serde_json::Error),
}

/// Writes the four data files into `dir` (created if missing).
pub fn write(dir: &Path, records: &[Record], summary: &Summary) -> Result<(), OutputError> {
    std::fs::create_dir_all(dir).map_err(|e| OutputError::Write(dir.into(), e))?;
    let mut jsonl = String::new();
    for r in records {
        // A Record is plain data: serializing it cannot fail.
        jsonl.push_str(&serde_json::to_string(r).unwrap_or_default());
        jsonl.push('\n');
    }
    put(&dir.join(RAW_JSONL), jsonl.as_bytes())?;
    put(&dir.join(RAW_CSV), csv(records).as_bytes())?;
    let json = serde_json::to_string_pretty(summary).unwrap_or_default();
    put(&dir.join(SUMMARY_JSON), json.as_bytes())?;
    put(&dir.join(SUMMARY_MD), summary.markdown().as_bytes())
}

/// Writes `bytes` to `path`.
pub fn put(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| OutputError::Write(path.into(), e))
}

/// raw.csv's text: [`CSV_COLUMNS`], then one `phase_<name>_ms` column per
/// phase any record has.
pub fn csv(records: &[Record]) -> String {
    let mut phases: Vec<String> = Vec::new();
    for r in records {
        for p in &r.phases {
            if !phases.contains(&p.name) {
                phases.push(p.name.clone());
            }
        }
    }
    let mut header: Vec<String> = CSV_COLUMNS.iter().map(|c| c.to_string()).collect();
    header.extend(phases.iter().map(|p| format!("phase_{p}_ms")));
    let mut out = csv_line(&header);
    for r in records {
        out.push_str(&csv_line(&r.csv_cells(&phases)));
    }
    out
}

/// One RFC 4180 line: cells holding a comma, quote or line break quoted.
fn csv_line(cells: &[String]) -> String {
    let quoted: Vec<String> = cells
        .iter()
        .map(|c| {
            if c.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c.clone()
            }
        })
        .collect();
    quoted.join(",") + "\r\n"
}

/// Reads raw.jsonl back.
pub fn read_records(dir: &Path) -> Result<Vec<Record>, OutputError> {
    let path = dir.join(RAW_JSONL);
    let text = std::fs::read_to_string(&path).map_err(|e| OutputError::Read(path.clone(), e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| OutputError::BadRecord(path.clone(), i + 1, e))
        })
        .collect()
}

/// Reads summary.json back.
pub fn read_summary(dir: &Path) -> Result<Summary, OutputError> {
    let path = dir.join(SUMMARY_JSON);
    let text = std::fs::read_to_string(&path).map_err(|e| OutputError::Read(path.clone(), e))?;
    serde_json::from_str(&text).map_err(|e| OutputError::BadSummary(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::record::Phase;

    #[test]
    fn csv_quotes_and_flattens_phases() {
        let r = Record {
            scenario: "s".into(),
            case: "a, \"b\"".into(),
            round: 1,
            seq: 2,
            warmup: false,
            ok: false,
            start_ms: 1.0,
            wall_ms: Some(2.5),
            peak_rss_kib: None,
            boot_timer_ms: None,
            phases: vec![Phase {
                name: "init".into(),
                ms: 1.25,
            }],
            step: None,
            batch_ms: None,
            error: Some("line1\nline2".into()),
        };
        let text = csv(std::slice::from_ref(&r));
        let mut lines = text.split("\r\n");
        let header = lines.next().unwrap();
        assert!(
            header.starts_with("scenario,case,round") && header.ends_with(",error,phase_init_ms")
        );
        let row = lines.next().unwrap();
        assert!(
            row.starts_with("s,\"a, \"\"b\"\"\",1,2,false,false,1.000,2.5000,"),
            "{row}"
        );
        assert!(row.ends_with(",\"line1\nline2\",1.2500"), "{row}");
    }
}
