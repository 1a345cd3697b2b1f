//! Appending to the audit trail. One mutex orders every append; each
//! record is written with one `write` and made durable (`fdatasync`) before
//! the signed head is advanced (pwrite into the slot `seq % 2`, another
//! `fdatasync`), so a call's record is on disk before its response leaves.
//! [`AuditLog::append_batch`] (group commit, fed by `group.rs`) writes many
//! records and makes them durable with one sync of each file.
//! Opening repairs a torn last line (crash mid-write) and checks the log
//! against the signed head; what it finds is itself recorded.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::record::{self, Head, GENESIS, HEAD_SLOT};
use super::{io_err, AuditConfig, AuditError, Body, Call, HEAD_FILE, KEY_FILE};

/// The JSON object of one record, in field order; `prev` must stay last
/// (the hash, and for digests the mac, are appended after it).
#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    time: String,
    time_ms: u64,
    #[serde(flatten)]
    body: &'a Body,
    prev: &'a str,
}

struct State {
    file: File,
    path: PathBuf,
    index: u64,
    size: u64,
    next_seq: u64,
    last_hash: String,
    /// First seq not yet covered by a digest.
    window_start: u64,
    last_digest: Instant,
    head: File,
    /// Calls whose records could not be written (reported by the next
    /// successful append as a `write-failures` event).
    lost: u64,
    last_error: String,
    /// `(size, next_seq, last_hash)` as of the last sync: what a failed
    /// sync rolls back to.
    durable: (u64, u64, String),
}

/// The open audit trail of a running emberd.
pub struct AuditLog {
    dir: PathBuf,
    key: [u8; 32],
    cfg: AuditConfig,
    state: Mutex<State>,
    /// Mirrors `State::lost > 0`, readable without the lock.
    failing: AtomicBool,
    /// The group-commit queue, started by the first async record.
    pub(super) group: std::sync::OnceLock<Option<super::group::Group>>,
}

fn now() -> (String, u64) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let ms = d.as_millis() as u64;
    let t = crate::util::format_lambda_time(d.as_secs(), d.subsec_millis());
    (t.replace("+0000", "Z"), ms)
}

fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Creates the next log file (never overwriting one) and makes its name durable.
fn create_log(dir: &Path, index: u64) -> Result<(File, PathBuf), AuditError> {
    let path = dir.join(super::log_file_name(index));
    let file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err(&path))?;
    sync_dir(dir)?;
    Ok((file, path))
}

impl AuditLog {
    /// Opens (or creates) the trail in `dir`, creating the 0600 key at first
    /// start, and records a `start` event.
    pub fn open(dir: &Path, cfg: AuditConfig) -> Result<AuditLog, AuditError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
        let key = crate::keyfile::load_or_create(&dir.join(KEY_FILE))?;
        let tail = super::reader::open_tail(dir)?;
        let head_path = dir.join(HEAD_FILE);
        let head_bytes = fs::read(&head_path).ok();
        let head = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&head_path)
            .map_err(io_err(&head_path))?;
        let (file, path, index, size) = match tail.file {
            Some(t) => t,
            None => {
                let (f, p) = create_log(dir, 1)?;
                (f, p, 1, 0)
            }
        };
        let next_seq = tail.last.as_ref().map_or(1, |(s, _)| s + 1);
        let last_hash = tail
            .last
            .as_ref()
            .map_or(GENESIS.to_string(), |(_, h)| h.clone());
        let log = AuditLog {
            dir: dir.to_path_buf(),
            key,
            cfg,
            state: Mutex::new(State {
                file,
                path,
                index,
                size,
                next_seq,
                last_hash: last_hash.clone(),
                window_start: next_seq,
                last_digest: Instant::now(),
                head,
                lost: 0,
                last_error: String::new(),
                durable: (size, next_seq, last_hash),
            }),
            failing: AtomicBool::new(false),
            group: Default::default(),
        };
        if tail.torn_bytes > 0 {
            log.event(
                "recovered-torn-tail",
                &format!(
                    "discarded {} bytes of a record whose write did not complete (crash)",
                    tail.torn_bytes
                ),
            )?;
        }
        let signed = head_bytes.as_deref().and_then(|b| Head::newest(b, &key));
        if let Some(finding) = check_head(signed.as_ref(), &tail.last, tail.last_prev.as_deref()) {
            eprintln!("emberd: WARNING: audit trail: {}", finding.1);
            log.event(finding.0, &finding.1)?;
        }
        log.event(
            "start",
            &format!("emberd started (pid {})", std::process::id()),
        )?;
        Ok(log)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &AuditConfig {
        &self.cfg
    }

    /// Whether calls have gone unrecorded since the last successful append.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Appends one call; the record is durable when this returns `Ok`.
    pub fn record_call(&self, call: Call) -> Result<(), AuditError> {
        self.append(Body::Call(Box::new(call)))
    }

    /// Appends an event of emberd's own.
    pub fn event(&self, event: &str, detail: &str) -> Result<(), AuditError> {
        self.append(Body::Event {
            event: event.into(),
            detail: detail.into(),
        })
    }

    /// Whether appends currently work; if earlier ones failed, the failure
    /// is recorded first (so a gap is never silent).
    pub fn ready(&self) -> Result<(), AuditError> {
        let mut st = self.lock();
        if st.lost == 0 {
            return Ok(());
        }
        self.flush_lost(&mut st)
    }

    /// Writes a digest if any record is unsigned and the interval has passed.
    pub fn digest_if_due(&self) -> Result<(), AuditError> {
        let mut st = self.lock();
        if st.next_seq > st.window_start && st.last_digest.elapsed() >= self.cfg.digest_interval {
            self.digest(&mut st)?;
        }
        Ok(())
    }

    /// Records the `stop` event and a final digest (graceful shutdown).
    pub fn close(&self) -> Result<(), AuditError> {
        self.event("stop", "emberd stopped")?;
        let mut st = self.lock();
        if st.next_seq > st.window_start {
            self.digest(&mut st)?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent (every
        // field is updated only after its write succeeded), so keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn append(&self, body: Body) -> Result<(), AuditError> {
        let mut st = self.lock();
        if st.lost > 0 {
            if let Err(e) = self.flush_lost(&mut st) {
                // This record cannot be written either; count it.
                st.lost += 1;
                return Err(e);
            }
        }
        self.write_or_count(&mut st, &body)?;
        if st.next_seq - st.window_start >= self.cfg.digest_every {
            self.digest(&mut st)?;
        }
        if st.size >= self.cfg.rotate_bytes {
            self.rotate(&mut st)?;
        }
        Ok(())
    }

    fn flush_lost(&self, st: &mut State) -> Result<(), AuditError> {
        let detail = format!(
            "{} call record(s) could not be written: {}",
            st.lost, st.last_error
        );
        let lost = st.lost;
        st.lost = 0;
        let body = Body::Event {
            event: "write-failures".into(),
            detail,
        };
        let r = self.write(st, &body, None);
        if let Err(e) = &r {
            st.last_error = crate::util::error_chain(e);
            if !matches!(e, AuditError::Head(_)) {
                st.lost += lost;
            }
        }
        self.failing.store(st.lost > 0, Ordering::Relaxed);
        r
    }

    /// Writes one record; a failure is counted so the gap gets recorded.
    fn write_or_count(&self, st: &mut State, body: &Body) -> Result<(), AuditError> {
        let r = self.write(st, body, None);
        if let Err(e) = &r {
            // A head that could not be advanced leaves the record written
            // (verify then reports it as unsigned), so nothing is lost.
            if !matches!(e, AuditError::Head(_)) {
                st.lost += 1;
                self.failing.store(true, Ordering::Relaxed);
            }
            st.last_error = crate::util::error_chain(e);
        }
        r
    }

    fn digest(&self, st: &mut State) -> Result<(), AuditError> {
        let body = Body::Digest {
            first_seq: st.window_start,
            records: st.next_seq - st.window_start,
        };
        self.write(st, &body, Some(&self.key))?;
        st.window_start = st.next_seq;
        st.last_digest = Instant::now();
        Ok(())
    }

    /// Ends the current file with a digest and continues in a new one; the
    /// chain runs on unbroken (the new file's first `prev` is this hash).
    fn rotate(&self, st: &mut State) -> Result<(), AuditError> {
        if st.next_seq > st.window_start {
            self.digest(st)?;
        }
        let (file, path) = create_log(&self.dir, st.index + 1)?;
        st.index += 1;
        st.file = file;
        st.path = path;
        st.size = 0;
        st.durable.0 = 0;
        Ok(())
    }

    /// Writes one record and makes it durable.
    fn write(
        &self,
        st: &mut State,
        body: &Body,
        mac_key: Option<&[u8; 32]>,
    ) -> Result<(), AuditError> {
        self.write_line(st, body, mac_key)?;
        self.sync(st).map_err(|(e, _)| e)
    }

    /// Writes one record without syncing it ([`Self::sync`] does).
    fn write_line(
        &self,
        st: &mut State,
        body: &Body,
        mac_key: Option<&[u8; 32]>,
    ) -> Result<(), AuditError> {
        let (time, time_ms) = now();
        let line = Line {
            seq: st.next_seq,
            time,
            time_ms,
            body,
            prev: &st.last_hash,
        };
        let (mut text, hash) = record::seal(&line, mac_key)?;
        text.push('\n');
        let path = st.path.clone();
        if let Err(e) = st.file.write_all(text.as_bytes()) {
            // Cut off whatever part of the line reached the file, so the
            // next record starts on a clean line.
            let _ = st.file.set_len(st.size);
            return Err(io_err(&path)(e));
        }
        st.size += text.len() as u64;
        st.next_seq += 1;
        st.last_hash = hash;
        Ok(())
    }

    /// Makes the lines written since the last sync durable, then advances
    /// the signed head to the last of them. If the log cannot be synced,
    /// those lines are cut off again (the state rolls back to the last
    /// sync) and the error comes with how many were cut; a head that
    /// cannot be advanced leaves them written (`verify` reports them as
    /// unsigned), cutting none.
    fn sync(&self, st: &mut State) -> Result<(), (AuditError, u64)> {
        let unsynced = st.next_seq - st.durable.1;
        if unsynced == 0 {
            return Ok(());
        }
        if let Err(e) = st.file.sync_data() {
            let (size, next_seq, hash) = st.durable.clone();
            let _ = st.file.set_len(size);
            st.size = size;
            st.next_seq = next_seq;
            st.last_hash = hash;
            return Err((io_err(&st.path.clone())(e), unsynced));
        }
        st.durable = (st.size, st.next_seq, st.last_hash.clone());
        let seq = st.next_seq - 1;
        let hash = st.last_hash.clone();
        let slot = Head { seq, hash }.encode(&self.key);
        let offset = (seq % 2) * HEAD_SLOT as u64;
        st.head
            .write_all_at(&slot, offset)
            .and_then(|()| st.head.sync_data())
            .map_err(|e| (AuditError::Head(e), 0))
    }

    /// Appends many calls with one sync of the log and one of the head for
    /// all of them (group commit); each call gets its own outcome, as
    /// [`Self::record_call`] would have given it. Digests and rotation
    /// happen between calls exactly as for single appends.
    pub fn append_batch(&self, calls: Vec<Call>) -> Vec<Result<(), String>> {
        let mut st = self.lock();
        let mut out: Vec<Result<(), String>> = Vec::with_capacity(calls.len());
        // Indices of `out` whose lines await the next sync.
        let mut pending: Vec<usize> = Vec::new();
        for call in calls {
            let body = Body::Call(Box::new(call));
            if st.lost > 0 {
                // (Its sync would take the pending lines along.)
                self.settle(&mut st, &mut pending, &mut out);
                if let Err(e) = self.flush_lost(&mut st) {
                    st.lost += 1;
                    out.push(Err(crate::util::error_chain(&e)));
                    continue;
                }
            }
            match self.write_line(&mut st, &body, None) {
                Ok(()) => {
                    pending.push(out.len());
                    out.push(Ok(()));
                }
                Err(e) => {
                    st.lost += 1;
                    self.failing.store(true, Ordering::Relaxed);
                    st.last_error = crate::util::error_chain(&e);
                    out.push(Err(st.last_error.clone()));
                    continue;
                }
            }
            let digest_due = st.next_seq - st.window_start >= self.cfg.digest_every;
            if digest_due || st.size >= self.cfg.rotate_bytes {
                self.settle(&mut st, &mut pending, &mut out);
                let r = if digest_due {
                    self.digest(&mut st)
                } else {
                    self.rotate(&mut st)
                };
                if let Err(e) = r {
                    eprintln!(
                        "emberd: ERROR: audit digest/rotation: {}",
                        crate::util::error_chain(&e)
                    );
                }
            }
        }
        self.settle(&mut st, &mut pending, &mut out);
        out
    }

    /// Syncs the `pending` lines and marks their outcome in `out`.
    fn settle(&self, st: &mut State, pending: &mut Vec<usize>, out: &mut [Result<(), String>]) {
        let Err((e, cut)) = self.sync(st) else {
            pending.clear();
            return;
        };
        let msg = crate::util::error_chain(&e);
        if cut > 0 {
            st.lost += cut;
            self.failing.store(true, Ordering::Relaxed);
        }
        st.last_error = msg.clone();
        for i in pending.drain(..) {
            out[i] = Err(msg.clone());
        }
    }
}

#[cfg(test)]
impl AuditLog {
    /// Makes appends fail (e.g. with `/dev/full`: ENOSPC).
    pub(super) fn break_file_for_tests(&self, path: &Path) {
        if let Ok(f) = OpenOptions::new().write(true).open(path) {
            self.lock().file = f;
        }
    }

    pub(super) fn repair_file_for_tests(&self) {
        let mut st = self.lock();
        if let Ok(f) = OpenOptions::new().append(true).open(&st.path) {
            st.file = f;
        }
    }
}

/// Compares the log's end with the signed head found at startup; a finding
/// is (event name, detail).
fn check_head(
    head: Option<&Head>,
    last: &Option<(u64, String)>,
    last_prev: Option<&str>,
) -> Option<(&'static str, String)> {
    let (seq, hash) = match last {
        Some((s, h)) => (*s, h.as_str()),
        None => (0, GENESIS),
    };
    let Some(head) = head else {
        return (seq > 0).then(|| {
            (
                "head-missing",
                format!("the signed head is missing or invalid; the log ends at seq {seq}"),
            )
        });
    };
    if head.seq == seq && head.hash == hash {
        return None;
    }
    if head.seq + 1 == seq && last_prev == Some(head.hash.as_str()) {
        return Some((
            "unsigned-tail",
            format!("record seq {seq} was written but the previous run ended before signing it"),
        ));
    }
    Some((
        "tail-mismatch",
        format!(
            "the signed head names seq {} ({}) but the log ends at seq {seq} ({hash}): records were removed or appended while emberd was not running",
            head.seq, head.hash
        ),
    ))
}
