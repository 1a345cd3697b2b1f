//! `ember audit verify`: walks the chain from the first file to the signed
//! head and names the first bad record. A forward pass checks each line
//! (hash, digest MAC, sequence, link to its predecessor); where a link
//! breaks, a backward walk from the next signature (a valid digest or the
//! head) tells which side of the break is authentic, so an inserted record
//! or a changed one whose hash was recomputed is named, not its neighbour.

use std::path::Path;

use serde::Serialize;

use super::reader::{read_lines, RawLine};
use super::record::{Head, Parsed, GENESIS};
use super::{AuditError, DAMAGE_EVENTS, HEAD_FILE, KEY_FILE};

/// The first problem found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub file: String,
    pub line: usize,
    /// The sequence number of the bad (or missing) record.
    pub seq: Option<u64>,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub files: usize,
    pub records: usize,
    pub digests: usize,
    pub last_seq: u64,
    pub head_seq: Option<u64>,
    pub first_bad: Option<Finding>,
    /// Things worth knowing that are not tampering (a torn write by a crash).
    pub notes: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// Verifies the trail in `dir` with its key file.
pub fn verify_dir(dir: &Path) -> Result<Report, AuditError> {
    let key = crate::keyfile::load(&dir.join(KEY_FILE))?;
    let lines = read_lines(dir)?;
    let head = std::fs::read(dir.join(HEAD_FILE)).ok();
    let files = super::reader::log_files(dir)?.len();
    let mut r = verify_lines(&lines, head.as_deref(), &key);
    r.files = files;
    Ok(r)
}

struct Walk<'a> {
    lines: &'a [RawLine],
    parsed: Vec<Result<Parsed, &'static str>>,
    key: &'a [u8; 32],
    head: Option<Head>,
}

impl Walk<'_> {
    fn bad(&self, i: usize, seq: Option<u64>, reason: String) -> Finding {
        Finding {
            file: self.lines[i].file.clone(),
            line: self.lines[i].line,
            seq,
            reason,
        }
    }

    fn ok(&self, i: usize) -> Option<&Parsed> {
        self.parsed[i].as_ref().ok()
    }

    fn hash(&self, i: usize) -> Option<&str> {
        self.ok(i).map(|p| p.computed_hash.as_str())
    }

    fn valid_digest(&self, i: usize) -> bool {
        self.ok(i)
            .is_some_and(|p| p.is_digest() && p.hash_ok() && p.mac_ok(self.key))
    }

    /// The first signature after line `i`: (lines it covers end before this
    /// index, the hash it names for the line before that).
    fn anchor_after(&self, i: usize) -> Option<(usize, String)> {
        if let Some(j) = (i + 1..self.lines.len()).find(|&j| self.valid_digest(j)) {
            return self.ok(j).map(|p| (j, p.prev.clone()));
        }
        let head = self.head.as_ref()?;
        (i..self.lines.len())
            .any(|k| self.hash(k) == Some(head.hash.as_str()))
            .then(|| (self.lines.len(), head.hash.clone()))
    }

    /// Line `i` hashes correctly but does not continue the chain. Decide
    /// whether `i` or something before it is the bad record; `floor` is the
    /// last line known good (a valid digest), if any.
    fn break_at(&self, i: usize, floor: Option<usize>) -> Finding {
        let seq = self.ok(i).map(|p| p.seq);
        if i > 0 && self.hash(i) == self.hash(i - 1) {
            return self.bad(i, seq, "duplicate of the previous record".into());
        }
        let unlinked = "does not link to the record before it (inserted, or a record before it was changed or removed)";
        let Some((end, mut want)) = self.anchor_after(i) else {
            return self.bad(i, seq, unlinked.into());
        };
        let mut i_signed = false;
        for k in (i..end).rev() {
            if let Some(p) = self.ok(k).filter(|p| p.computed_hash == want) {
                want = p.prev.clone();
                i_signed = k == i;
            }
        }
        if !i_signed {
            return self.bad(i, seq, unlinked.into());
        }
        // `i` is authentic: the bad records sit between the floor and `i`.
        let low = floor.map_or(0, |f| f + 1);
        let rematch = (low..i)
            .rev()
            .find(|&k| self.hash(k) == Some(want.as_str()));
        let first_unsigned = match rematch {
            Some(k) => Some(k + 1),
            // Nothing before `i` belongs to the chain at all.
            None if floor.is_none() && want == GENESIS && i > 0 => Some(0),
            None => None,
        };
        match first_unsigned {
            Some(b) if b < i => self.bad(
                b,
                self.ok(b).map(|p| p.seq),
                "not part of the signed chain (inserted or replaced)".into(),
            ),
            _ if i == low => self.bad(i, seq, "a record before this one was removed".into()),
            _ => self.bad(
                i - 1,
                self.ok(i - 1).map(|p| p.seq),
                "changed: the next record, which a later signature authenticates, names a different hash for it".into(),
            ),
        }
    }
}

/// Verifies `lines` (all files, in order) against the head file's bytes.
pub fn verify_lines(lines: &[RawLine], head_file: Option<&[u8]>, key: &[u8; 32]) -> Report {
    let w = Walk {
        lines,
        parsed: lines.iter().map(RawLine::parse).collect(),
        key,
        head: head_file.and_then(|b| Head::newest(b, key)),
    };
    let mut report = Report {
        files: 0,
        records: 0,
        digests: 0,
        last_seq: 0,
        head_seq: w.head.as_ref().map(|h| h.seq),
        first_bad: None,
        notes: Vec::new(),
    };
    let (mut seq_want, mut prev_want) = (1u64, GENESIS.to_string());
    let mut floor = None;
    let mut last = None;
    for (i, l) in lines.iter().enumerate() {
        if !l.complete {
            report.notes.push(format!(
                "{} line {}: an incomplete record (a write cut short by a crash; emberd discards it at its next start)",
                l.file, l.line
            ));
            break;
        }
        let p = match &w.parsed[i] {
            Ok(p) => p,
            Err(why) => {
                report.first_bad = Some(w.bad(i, None, format!("malformed record ({why})")));
                return report;
            }
        };
        let finding = if !p.hash_ok() {
            Some(w.bad(
                i,
                Some(p.seq),
                "changed: its contents do not match its hash".into(),
            ))
        } else if p.is_digest() && !p.mac_ok(key) {
            Some(w.bad(
                i,
                Some(p.seq),
                "digest signature (HMAC) does not verify: forged or altered".into(),
            ))
        } else if p.seq > seq_want {
            Some(w.bad(i, Some(seq_want), format!(
                "record seq {seq_want} is missing (seq {} found in its place): removed or reordered",
                p.seq
            )))
        } else if p.seq < seq_want || p.prev != prev_want {
            Some(w.break_at(i, floor))
        } else if p.kind == "event"
            && DAMAGE_EVENTS.contains(&p.value["event"].as_str().unwrap_or(""))
        {
            Some(w.bad(
                i,
                Some(p.seq),
                format!(
                    "emberd recorded damage to the trail: {}",
                    p.value["detail"].as_str().unwrap_or("")
                ),
            ))
        } else {
            None
        };
        if finding.is_some() {
            report.first_bad = finding;
            return report;
        }
        if p.is_digest() {
            floor = Some(i);
            report.digests += 1;
        }
        report.records += 1;
        seq_want = p.seq + 1;
        prev_want = p.stored_hash.clone();
        last = Some(i);
    }
    report.last_seq = seq_want - 1;
    report.first_bad = check_tail(&w, last, &prev_want);
    report
}

/// The end of the log against the signed head.
fn check_tail(w: &Walk<'_>, last: Option<usize>, last_hash: &str) -> Option<Finding> {
    let Some(last) = last else {
        return w.head.as_ref().map(|h| Finding {
            file: String::new(),
            line: 0,
            seq: Some(1),
            reason: format!(
                "the log is empty but the signed head names seq {}: every record was removed",
                h.seq
            ),
        });
    };
    let last_seq = w.ok(last).map_or(0, |p| p.seq);
    let Some(head) = &w.head else {
        return Some(w.bad(
            last,
            Some(last_seq),
            "the signed head is missing or invalid, so a cut tail cannot be ruled out".into(),
        ));
    };
    if head.seq > last_seq {
        return Some(w.bad(
            last,
            Some(last_seq + 1),
            format!(
            "the tail was cut off: the log ends at seq {last_seq} but the signed head names seq {}",
            head.seq
        ),
        ));
    }
    let at = (0..=last)
        .rev()
        .find(|&k| w.ok(k).is_some_and(|p| p.seq == head.seq));
    let signed = at.and_then(|k| w.hash(k)) == Some(head.hash.as_str());
    if !signed {
        let k = at.unwrap_or(last);
        return Some(w.bad(
            k,
            Some(head.seq),
            "not the record the signed head names (the tail was replaced)".into(),
        ));
    }
    if head.seq < last_seq {
        let k = at.map_or(last, |k| k + 1).min(last);
        return Some(w.bad(k, Some(head.seq + 1), format!(
            "records after seq {} are not covered by the signed head (appended by someone else, or written just before a crash; emberd records the latter at its next start)",
            head.seq
        )));
    }
    debug_assert_eq!(head.hash, last_hash);
    None
}
