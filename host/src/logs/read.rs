//! Reading the on-disk log streams of one function back: every line with a
//! timestamp in `(after, until]`, merged across versions and streams in
//! time order, at most `limit` of them.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::UNIX_EPOCH;

use super::writer::{parse_file_name, version_dir, version_of_dir};
use crate::since::parse_rfc3339;

/// One log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub ts_us: u64,
    pub version: String,
    pub stream: String,
    pub message: String,
}

pub struct Query<'a> {
    pub function: &'a str,
    /// Only this version (`$LATEST` or a number), or all.
    pub version: Option<&'a str>,
    /// Exclusive lower bound (Unix µs).
    pub after: u64,
    /// Inclusive upper bound: the writer's watermark when reading began.
    pub until: u64,
    pub limit: usize,
}

/// A file whose last write is this much older than `after` cannot hold a
/// line after it (timestamps run at most slightly ahead of the clock, and
/// mtimes use the kernel's coarse clock).
const MTIME_SLACK_US: u64 = 5_000_000;

/// The matching events in time order, and whether `limit` cut them short.
pub fn read(root: &Path, q: &Query) -> (Vec<Event>, bool) {
    let fdir = root.join(q.function);
    let mut events = Vec::new();
    let versions: Vec<String> = match q.version {
        Some(v) => vec![version_dir(v).to_string()],
        None => fs::read_dir(&fdir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
    };
    for vdir in versions {
        let version = version_of_dir(&vdir);
        for f in fs::read_dir(fdir.join(&vdir))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = f.file_name().to_string_lossy().into_owned();
            let Some((stream, _)) = parse_file_name(&name) else {
                continue;
            };
            let modified_us = f
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(u64::MAX, |d| d.as_micros() as u64);
            if modified_us.saturating_add(MTIME_SLACK_US) < q.after {
                continue;
            }
            // A file deleted by retention meanwhile simply yields nothing.
            let Ok(file) = fs::File::open(f.path()) else {
                continue;
            };
            for line in BufReader::new(file).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line);
                let Some((ts, message)) = line.split_once('\t') else {
                    continue;
                };
                let Some(ts) = parse_rfc3339(ts) else {
                    continue;
                };
                if ts > q.after && ts <= q.until {
                    events.push(Event {
                        ts_us: ts,
                        version: version.clone(),
                        stream: stream.to_string(),
                        message: message.to_string(),
                    });
                }
            }
        }
    }
    events.sort_by_key(|e| e.ts_us);
    let truncated = events.len() > q.limit;
    events.truncate(q.limit);
    (events, truncated)
}
