//! The log writer thread: appends each invocation's framed lines to its
//! environment's stream file, rotates a stream when the next block would
//! pass the size limit, and applies retention (total bytes per function
//! version, and age). It alone assigns timestamps, strictly increasing, and
//! publishes the highest one fully written (the watermark) so readers can
//! return "everything up to T" without ever missing a line written later
//! with an earlier time.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::time::{date_of, format_us, now_us};
use super::{LogConfig, Shared};
use crate::metrics::Metrics;

/// One invocation's lines for one stream.
pub struct Block {
    pub function: String,
    pub version: String,
    /// The environment (None: no environment could be started).
    pub env: Option<u64>,
    /// (event time in Unix µs, line)
    pub lines: Vec<(u64, String)>,
}

pub enum Msg {
    Block(Block),
    /// Answered once everything sent before it is on disk.
    Flush(SyncSender<()>),
}

/// Open streams are closed after this long without a write.
const CLOSE_IDLE: Duration = Duration::from_secs(60);
/// Stream entries (name, sequence) are forgotten after this long.
const FORGET_IDLE: Duration = Duration::from_secs(3600);
/// How often idle streams are closed and the age limit applied.
const HOUSEKEEPING: Duration = Duration::from_secs(30);

/// The directory name of a version (`$LATEST` is awkward in a shell).
pub fn version_dir(version: &str) -> &str {
    if version == "$LATEST" {
        "latest"
    } else {
        version
    }
}

/// The inverse of [`version_dir`].
pub fn version_of_dir(dir: &str) -> String {
    if dir == "latest" {
        "$LATEST".into()
    } else {
        dir.into()
    }
}

/// `<stream>.<seq>.log` → (stream, seq)
pub fn parse_file_name(name: &str) -> Option<(&str, u32)> {
    let base = name.strip_suffix(".log")?;
    let (stream, seq) = base.rsplit_once('.')?;
    Some((stream, seq.parse().ok()?))
}

struct Stream {
    dir: PathBuf,
    name: String,
    seq: u32,
    file: Option<File>,
    size: u64,
    last_write: Instant,
}

impl Stream {
    fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.{:04}.log", self.name, self.seq))
    }
}

type StreamKey = (String, String, Option<u64>);

pub struct Writer {
    root: PathBuf,
    cfg: LogConfig,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    streams: HashMap<StreamKey, Stream>,
    last_ts: u64,
    last_error_report: Option<Instant>,
}

impl Writer {
    pub fn new(root: PathBuf, cfg: LogConfig, shared: Arc<Shared>, metrics: Arc<Metrics>) -> Self {
        let last_ts = shared.watermark();
        Self {
            root,
            cfg,
            shared,
            metrics,
            streams: HashMap::new(),
            last_ts,
            last_error_report: None,
        }
    }

    /// Serves `rx` until every sender is gone.
    pub fn run(mut self, rx: Receiver<Msg>) {
        let mut next_housekeeping = Instant::now() + HOUSEKEEPING;
        loop {
            let wait = next_housekeeping.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Msg::Block(b)) => self.write(b),
                Ok(Msg::Flush(ack)) => {
                    let _ = ack.try_send(());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if Instant::now() >= next_housekeeping {
                self.housekeeping();
                next_housekeeping = Instant::now() + HOUSEKEEPING;
            }
        }
    }

    fn write(&mut self, b: Block) {
        let mut text = String::new();
        let mut ts = self.last_ts;
        for (t, line) in &b.lines {
            ts = (*t).max(ts + 1);
            text.push_str(&format_us(ts));
            text.push('\t');
            text.push_str(line);
            text.push('\n');
        }
        let n = b.lines.len() as u64;
        let key = (b.function, b.version, b.env);
        if let Err(e) = self.append(&key, text.as_bytes()) {
            self.failed(&key, n, &e);
            return;
        }
        self.last_ts = ts;
        self.shared.publish(ts);
    }

    fn append(&mut self, key: &StreamKey, bytes: &[u8]) -> std::io::Result<()> {
        let max = self.cfg.max_file_bytes;
        let dir = self.root.join(&key.0).join(version_dir(&key.1));
        let s = self.streams.entry(key.clone()).or_insert_with(|| Stream {
            name: stream_name(key.2),
            dir,
            seq: 0,
            file: None,
            size: 0,
            last_write: Instant::now(),
        });
        let mut rotated = false;
        if s.size > 0 && s.size + bytes.len() as u64 > max {
            s.file = None;
            s.seq += 1;
            s.size = 0;
            rotated = true;
        }
        if s.file.is_none() {
            fs::create_dir_all(&s.dir)?;
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(s.path())?;
            s.size = f.metadata()?.len();
            s.file = Some(f);
        }
        if let Some(f) = s.file.as_mut() {
            f.write_all(bytes)?;
        }
        s.size += bytes.len() as u64;
        s.last_write = Instant::now();
        if rotated {
            let dir = s.dir.clone();
            self.retain(&dir);
        }
        Ok(())
    }

    /// Counts the lost lines; reports on stderr at most once a minute.
    fn failed(&mut self, key: &StreamKey, lines: u64, e: &std::io::Error) {
        self.metrics.log_write_error();
        self.metrics.log_lines_dropped(lines);
        if let Some(s) = self.streams.get_mut(key) {
            s.file = None; // reopen (maybe elsewhere) next time
        }
        let quiet = self
            .last_error_report
            .is_some_and(|t| t.elapsed() < Duration::from_secs(60));
        if !quiet {
            eprintln!(
                "emberd: writing the logs of {} {}: {e} ({lines} lines lost)",
                key.0, key.1
            );
            self.last_error_report = Some(Instant::now());
        }
    }

    fn open_files(&self) -> HashSet<PathBuf> {
        self.streams
            .values()
            .filter(|s| s.file.is_some())
            .map(Stream::path)
            .collect()
    }

    /// Applies retention to one version directory.
    fn retain(&self, dir: &Path) {
        enforce(dir, &self.cfg, &self.open_files(), SystemTime::now());
    }

    fn housekeeping(&mut self) {
        self.streams.retain(|_, s| {
            if s.last_write.elapsed() >= CLOSE_IDLE {
                s.file = None;
            }
            s.last_write.elapsed() < FORGET_IDLE
        });
        let open = self.open_files();
        let now = SystemTime::now();
        for f in fs::read_dir(&self.root).into_iter().flatten().flatten() {
            for v in fs::read_dir(f.path()).into_iter().flatten().flatten() {
                enforce(&v.path(), &self.cfg, &open, now);
            }
        }
    }
}

/// A new stream's name: its UTC date, its environment and a random part
/// (environment ids restart with emberd).
fn stream_name(env: Option<u64>) -> String {
    let mut r = [0u8; 4];
    let _ = getrandom::getrandom(&mut r);
    let env = env.map_or_else(|| "noenv".to_string(), |id| format!("e{id}"));
    format!("{}-{env}-{:08x}", date_of(now_us()), u32::from_le_bytes(r))
}

/// Retention for one version directory: files last written longer ago than
/// the age limit go, then the oldest files until the directory fits the
/// byte limit. Files open for writing are kept.
pub fn enforce(dir: &Path, cfg: &LogConfig, open: &HashSet<PathBuf>, now: SystemTime) {
    let mut files: Vec<(SystemTime, String, u64, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            parse_file_name(&name)?;
            let m = e.metadata().ok()?;
            Some((m.modified().ok()?, name, m.len(), e.path()))
        })
        .collect();
    files.sort();
    let mut total: u64 = files.iter().map(|f| f.2).sum();
    for (mtime, _, len, path) in &files {
        if open.contains(path) {
            continue;
        }
        let too_old = now
            .duration_since(*mtime)
            .is_ok_and(|age| age > cfg.retention_age);
        if (too_old || total > cfg.retention_bytes) && fs::remove_file(path).is_ok() {
            total -= len;
        }
    }
}
