//! Unit tests of the audit trail: chaining, digests, the signed head,
//! rotation, crash repair, and `verify` naming the first bad record for
//! every kind of tampering (done on the bytes, as an attacker would).

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::record;
use super::verify::{verify_dir, Finding};
use super::*;
use crate::store::sha256_hex as sha;

fn cfg(every: u64) -> AuditConfig {
    AuditConfig {
        digest_every: every,
        digest_interval: std::time::Duration::from_secs(3600),
        rotate_bytes: 1 << 30,
        data_events: false,
    }
}

fn call(op: &str, status: u16) -> Call {
    Call {
        who: Who {
            access_key_id: Some("AKIDTEST".into()),
            account: Some("000000000000".into()),
            claimed_access_key_id: None,
            source: "127.0.0.1:4242".into(),
        },
        operation: op.into(),
        resource: Some("fn".into()),
        method: "POST".into(),
        path: "/2015-03-31/functions".into(),
        params: json!({"body": {"FunctionName": "fn"}}),
        status,
        error: None,
        message: None,
    }
}

/// A closed trail of `n` calls (plus start/stop events and digests).
fn trail(n: usize, c: AuditConfig) -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("audit");
    let log = AuditLog::open(&dir, c).unwrap();
    for i in 0..n {
        log.record_call(call(&format!("Op{i}"), 200)).unwrap();
    }
    log.close().unwrap();
    (t, dir)
}

fn log_path(dir: &Path, i: u64) -> PathBuf {
    dir.join(log_file_name(i))
}

fn lines(dir: &Path, i: u64) -> Vec<String> {
    fs::read_to_string(log_path(dir, i))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(dir: &Path, i: u64, l: &[String]) {
    let mut s = l.join("\n");
    s.push('\n');
    fs::write(log_path(dir, i), s).unwrap();
}

/// Recomputes a line's own hash after an edit (what a keyless forger can do).
fn rehash(line: &str) -> String {
    let body = &line[..line.len() - 75];
    let h = sha(format!("{body}}}").as_bytes());
    format!("{body},\"hash\":\"{h}\"}}")
}

fn seq_of(line: &str) -> u64 {
    serde_json::from_str::<Value>(line).unwrap()["seq"]
        .as_u64()
        .unwrap()
}

fn bad(dir: &Path) -> Finding {
    let r = verify_dir(dir).unwrap();
    match r.first_bad {
        Some(f) => f,
        None => panic!("verify passed: {r:?}"),
    }
}

/// Index of the first call line whose operation is `op`.
fn find(l: &[String], op: &str) -> usize {
    l.iter()
        .position(|x| x.contains(&format!("\"operation\":\"{op}\"")))
        .unwrap()
}

#[test]
fn chain_digests_and_head_verify() {
    let (_t, dir) = trail(10, cfg(4));
    let l = lines(&dir, 1);
    // start + 10 calls + stop = 12 records, digests after every 4.
    let kinds: Vec<String> = l.iter().map(|x| record::parse(x).unwrap().kind).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "digest").count(), 3);
    assert_eq!(kinds.last().unwrap(), "digest", "close ends with a digest");
    let mut prev = record::GENESIS.to_string();
    for (i, x) in l.iter().enumerate() {
        let p = record::parse(x).unwrap();
        assert!(p.hash_ok());
        assert_eq!(p.seq, i as u64 + 1);
        assert_eq!(p.prev, prev);
        prev = p.stored_hash;
    }
    let r = verify_dir(&dir).unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!((r.records, r.digests, r.last_seq), (15, 3, 15));
    assert_eq!(r.head_seq, Some(15));
    let mode = fs::metadata(log_path(&dir, 1)).unwrap().permissions();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.mode() & 0o777, 0o600);
    let key_mode = fs::metadata(dir.join(KEY_FILE)).unwrap().permissions();
    assert_eq!(key_mode.mode() & 0o777, 0o600);
}

#[test]
fn naive_field_change_is_named() {
    let (_t, dir) = trail(6, cfg(100));
    let mut l = lines(&dir, 1);
    let i = find(&l, "Op3");
    l[i] = l[i].replace("\"status\":200", "\"status\":201");
    write_lines(&dir, 1, &l);
    let f = bad(&dir);
    assert_eq!(f.seq, Some(seq_of(&l[i])));
    assert!(f.reason.contains("changed"), "{f:?}");
}

#[test]
fn rehashed_field_change_is_named() {
    let (_t, dir) = trail(6, cfg(3));
    let mut l = lines(&dir, 1);
    let i = find(&l, "Op4");
    l[i] = rehash(&l[i].replace("Op4", "OpX"));
    write_lines(&dir, 1, &l);
    let f = bad(&dir);
    assert_eq!((f.seq, f.line), (Some(seq_of(&l[i])), i + 1), "{f:?}");
}

#[test]
fn removed_record_is_named() {
    let (_t, dir) = trail(6, cfg(100));
    let mut l = lines(&dir, 1);
    let i = find(&l, "Op2");
    let gone = seq_of(&l[i]);
    l.remove(i);
    write_lines(&dir, 1, &l);
    let f = bad(&dir);
    assert_eq!(f.seq, Some(gone));
    assert!(f.reason.contains("missing"), "{f:?}");
}

#[test]
fn inserted_forgery_is_named() {
    let (_t, dir) = trail(6, cfg(100));
    let mut l = lines(&dir, 1);
    let i = find(&l, "Op2");
    let p = record::parse(&l[i]).unwrap();
    // A forged record that fits perfectly after `i`: next seq, right prev,
    // correct own hash. Only the signatures can tell.
    let forged = l[i]
        .replace(
            &format!("\"seq\":{},", p.seq),
            &format!("\"seq\":{},", p.seq + 1),
        )
        .replace(&p.prev, &p.stored_hash)
        .replace("Op2", "DeleteFunction");
    l.insert(i + 1, rehash(&forged));
    write_lines(&dir, 1, &l);
    let f = bad(&dir);
    assert_eq!((f.seq, f.line), (Some(p.seq + 1), i + 2), "{f:?}");
    assert!(f.reason.contains("inserted"), "{f:?}");
}

#[test]
fn reordered_records_are_named() {
    let (_t, dir) = trail(6, cfg(100));
    let mut l = lines(&dir, 1);
    let i = find(&l, "Op1");
    l.swap(i, i + 1);
    write_lines(&dir, 1, &l);
    let f = bad(&dir);
    assert_eq!(f.line, i + 1, "{f:?}");
    assert_eq!(f.seq, Some(seq_of(&l[i + 1])), "the record expected there");
}

#[test]
fn cut_tail_is_detected() {
    let (_t, dir) = trail(6, cfg(2));
    let mut l = lines(&dir, 1);
    let last = seq_of(l.last().unwrap());
    l.truncate(l.len() - 3);
    write_lines(&dir, 1, &l);
    let f = bad(&dir);
    assert_eq!(f.seq, Some(last - 2), "{f:?}");
    assert!(f.reason.contains("cut off"), "{f:?}");
}

#[test]
fn forged_or_missing_signatures_fail() {
    let (_t, dir) = trail(6, cfg(3));
    let mut l = lines(&dir, 1);
    let i = l
        .iter()
        .position(|x| x.contains("\"type\":\"digest\""))
        .unwrap();
    // Re-sign the digest with a key of our own, fix its hash.
    let p = record::parse(&l[i]).unwrap();
    let (body, _) = p.mac.clone().unwrap();
    let (forged, _) = record::seal_text(body, Some(&[7u8; 32]));
    l[i] = forged;
    write_lines(&dir, 1, &l);
    let f = bad(&dir);
    assert_eq!(f.seq, Some(p.seq));
    assert!(f.reason.contains("HMAC"), "{f:?}");

    let (_t2, dir2) = trail(3, cfg(100));
    fs::remove_file(dir2.join(HEAD_FILE)).unwrap();
    assert!(bad(&dir2).reason.contains("signed head"));
}

#[test]
fn rotation_keeps_one_chain_across_files() {
    let mut c = cfg(100);
    c.rotate_bytes = 2000;
    let (_t, dir) = trail(30, c);
    let files = reader::log_files(&dir).unwrap();
    assert!(files.len() >= 4, "{files:?}");
    let r = verify_dir(&dir).unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.files, files.len());
    // Every file but the last ends with a digest.
    for (i, _) in &files[..files.len() - 1] {
        assert!(lines(&dir, *i)
            .last()
            .unwrap()
            .contains("\"type\":\"digest\""));
    }
    // Remove a whole middle file: the next file's first record is named.
    let second = lines(&dir, 2);
    let first_of_third = seq_of(&lines(&dir, 3)[0]);
    fs::remove_file(log_path(&dir, 2)).unwrap();
    let f = bad(&dir);
    assert_eq!(f.file, log_file_name(3));
    assert_eq!(
        f.seq,
        Some(seq_of(&second[0])),
        "{f:?} (3rd starts at {first_of_third})"
    );
}

#[test]
fn reopen_continues_and_repairs_a_torn_line() {
    let (_t, dir) = trail(3, cfg(100));
    let before = lines(&dir, 1).len();
    // A crash mid-write leaves half a line with no newline.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(log_path(&dir, 1))
        .unwrap();
    std::io::Write::write_all(&mut f, b"{\"seq\":99,\"time\":\"2").unwrap();
    assert!(verify_dir(&dir).unwrap().notes[0].contains("incomplete"));
    let log = AuditLog::open(&dir, cfg(100)).unwrap();
    log.record_call(call("After", 200)).unwrap();
    log.close().unwrap();
    let l = lines(&dir, 1);
    assert!(l[before].contains("recovered-torn-tail"), "{}", l[before]);
    let r = verify_dir(&dir).unwrap();
    assert!(r.ok() && r.notes.is_empty(), "{r:?}");
}

#[test]
fn tail_cut_while_stopped_is_recorded_at_start() {
    let (_t, dir) = trail(4, cfg(100));
    let mut l = lines(&dir, 1);
    l.truncate(l.len() - 2);
    write_lines(&dir, 1, &l);
    // emberd starts again and overwrites the head: the damage must stay visible.
    let log = AuditLog::open(&dir, cfg(100)).unwrap();
    log.close().unwrap();
    let f = bad(&dir);
    assert!(
        f.reason.contains("tail-mismatch") || f.reason.contains("signed head names"),
        "{f:?}"
    );
    assert_eq!(f.seq, Some(seq_of(&l[l.len() - 1]) + 1));
}

#[test]
fn write_failure_is_counted_then_recorded() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("audit");
    let log = AuditLog::open(&dir, cfg(100)).unwrap();
    log.break_file_for_tests(Path::new("/dev/full"));
    assert!(log.record_call(call("Lost", 200)).is_err());
    assert!(log.failing());
    assert!(log.ready().is_err(), "still failing");
    log.repair_file_for_tests();
    log.ready().unwrap();
    assert!(!log.failing());
    log.close().unwrap();
    let f = bad(&dir);
    assert!(
        f.reason.contains("1 call record(s) could not be written"),
        "{f:?}"
    );
}

/// Cost of one audited call against its peer, a bare append + fdatasync of
/// the same bytes (what any durable log pays). Run with
/// `cargo test --release -p ember-host audit_append_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn audit_append_cost() {
    use std::io::Write;
    use std::time::Instant;
    let t = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&t.path().join("audit"), AuditConfig::default()).unwrap();
    let line = serde_json::to_string(&call("CreateFunction", 201)).unwrap() + "\n";
    let mut plain = fs::File::create(t.path().join("plain")).unwrap();
    let (mut a, mut p) = (Vec::new(), Vec::new());
    for _ in 0..200 {
        let s = Instant::now();
        log.record_call(call("CreateFunction", 201)).unwrap();
        a.push(s.elapsed().as_secs_f64() * 1e6);
        let s = Instant::now();
        plain.write_all(line.as_bytes()).unwrap();
        plain.sync_data().unwrap();
        p.push(s.elapsed().as_secs_f64() * 1e6);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (ma, mp) = (median(&mut a), median(&mut p));
    println!(
        "audit append median {ma:.0} us, bare append+fdatasync median {mp:.0} us, ratio {:.2}",
        ma / mp
    );
}

#[test]
fn a_batch_is_chained_digested_rotated_and_verifies_like_single_appends() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("audit");
    let mut c = cfg(4);
    c.rotate_bytes = 2_000;
    let log = AuditLog::open(&dir, c).unwrap();
    let calls = (0..10).map(|i| call(&format!("Op{i}"), 200)).collect();
    let out = log.append_batch(calls);
    assert_eq!(out.len(), 10);
    assert!(out.iter().all(|r| r.is_ok()), "{out:?}");
    log.close().unwrap();
    let r = verify_dir(&dir).unwrap();
    assert!(r.ok(), "{r:?}");
    // start + 10 calls + stop, a digest after every 4 records (or rotation).
    assert_eq!(r.records - r.digests, 12, "{r:?}");
    assert_eq!(r.head_seq, Some(r.last_seq));
    assert!(log_path(&dir, 2).exists(), "rotated within the batch");
}

#[test]
fn a_failed_batch_fails_each_call_and_records_the_gap() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("audit");
    let log = AuditLog::open(&dir, cfg(100)).unwrap();
    log.break_file_for_tests(Path::new("/dev/full"));
    let out = log.append_batch(vec![call("Lost1", 200), call("Lost2", 200)]);
    assert!(out.iter().all(|r| r.is_err()), "{out:?}");
    assert!(log.failing());
    log.repair_file_for_tests();
    let out = log.append_batch(vec![call("After", 200)]);
    assert!(out[0].is_ok(), "{out:?}");
    assert!(!log.failing());
    log.close().unwrap();
    let f = bad(&dir);
    assert!(
        f.reason.contains("2 call record(s) could not be written"),
        "{f:?}"
    );
    assert!(lines(&dir, 1).iter().any(|l| l.contains("\"After\"")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_records_through_the_group_commit_all_land_in_order_of_the_chain() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("audit");
    let log = std::sync::Arc::new(AuditLog::open(&dir, cfg(50)).unwrap());
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.record(call(&format!("Op{i}"), 200)).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    log.close().unwrap();
    let r = verify_dir(&dir).unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.records - r.digests, 202, "{r:?}");
    let l = lines(&dir, 1);
    for i in 0..200 {
        find(&l, &format!("Op{i}"));
    }
}
