//! Log framing, the writer's rotation and retention, reading back with the
//! watermark, and the full path through [`Logs`] (record → flush → read).

use std::collections::HashSet;
use std::fs;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;

use super::frame::{framed, tail_base64, TAIL_BYTES};
use super::read::{read, Query};
use super::writer::{enforce, parse_file_name, Block, Msg, Writer};
use super::*;
use crate::env::Report;
use crate::invoker::call::{CallResult, Outcome};

fn decode(b64: &str) -> String {
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn tail_is_bounded_base64_of_the_framed_lines() {
    let logs = vec!["hello".to_string(); 2000];
    let lines = framed(
        "rid",
        "$LATEST",
        &logs,
        Report::default(),
        Duration::from_micros(1500),
        128,
    );
    let text = decode(&tail_base64(&lines));
    assert!(text.len() <= TAIL_BYTES);
    assert!(text.contains("END RequestId: rid") && text.contains("Billed Duration: 2 ms"));
    assert!(!text.contains("Max Memory Used") && !text.contains("Init Duration"));
    let measured = Report {
        duration_us: Some(2_500),
        max_memory_kib: Some(3_000),
        init_us: Some(1_250),
        restore_us: None,
        init_log_lines: 0,
    };
    let lines = framed(
        "r",
        "1",
        &["x\ny\n".into(), "z\r\n".into()],
        measured,
        Duration::ZERO,
        128,
    );
    assert_eq!(
        &lines[..5],
        [
            "START RequestId: r Version: 1",
            "x",
            "y",
            "z",
            "END RequestId: r"
        ]
    );
    let text = decode(&tail_base64(&lines));
    assert!(text.starts_with("START RequestId: r Version: 1\nx\ny\nz\nEND"));
    assert!(
        text.contains("Duration: 2.50 ms\tBilled Duration: 3 ms\tMemory Size: 128 MB")
            && text.contains("Max Memory Used: 3 MB")
            && text.contains("Init Duration: 1.25 ms"),
        "{text}"
    );
    // What the function printed during init goes before START (Lambda's
    // stream order); a count past the lines is clamped.
    let cold = Report {
        init_us: Some(900),
        restore_us: None,
        init_log_lines: 1,
        ..Default::default()
    };
    let lines = framed(
        "c",
        "1",
        &["init\nphase".into(), "call".into()],
        cold,
        Duration::ZERO,
        128,
    );
    assert_eq!(
        &lines[..5],
        [
            "init",
            "phase",
            "START RequestId: c Version: 1",
            "call",
            "END RequestId: c"
        ]
    );
    let over = Report {
        init_log_lines: 9,
        ..Default::default()
    };
    let lines = framed("o", "1", &["a".into()], over, Duration::ZERO, 128);
    assert_eq!(
        &lines[..3],
        ["a", "START RequestId: o Version: 1", "END RequestId: o"]
    );
    // Sub-millisecond runs bill 1 ms.
    let quick = Report {
        duration_us: Some(40),
        ..Default::default()
    };
    let text = framed("q", "1", &[], quick, Duration::ZERO, 128).join("\n");
    assert!(
        text.contains("Duration: 0.04 ms\tBilled Duration: 1 ms"),
        "{text}"
    );
}

fn shared() -> Arc<Shared> {
    Arc::new(Shared::new(1_000))
}

fn block(env: u64, lines: &[&str], t: u64) -> Block {
    Block {
        function: "f".into(),
        version: "$LATEST".into(),
        env: Some(env),
        lines: lines.iter().map(|l| (t, l.to_string())).collect(),
    }
}

/// Writes `blocks` through a writer thread and waits until they are on disk.
fn write_all(root: &std::path::Path, cfg: LogConfig, sh: &Arc<Shared>, blocks: Vec<Block>) {
    let (tx, rx) = std::sync::mpsc::sync_channel(16);
    let w = Writer::new(root.to_path_buf(), cfg, sh.clone(), Default::default());
    let t = std::thread::spawn(move || w.run(rx));
    for b in blocks {
        tx.send(Msg::Block(b)).unwrap();
    }
    drop(tx);
    t.join().unwrap();
}

fn files(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn streams_rotate_at_the_size_limit_and_retention_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        max_file_bytes: 400,
        retention_bytes: 1_000,
        retention_age: Duration::from_secs(3600),
        ..LogConfig::default()
    };
    let sh = shared();
    let line = "x".repeat(60); // ~90 bytes with its timestamp
    let blocks = (0..30)
        .map(|i| block(7, &[&format!("{i:02} {line}"), "second"], 2_000))
        .collect();
    write_all(dir.path(), cfg, &sh, blocks);
    let vdir = dir.path().join("f/latest");
    let listed = files(&vdir);
    let total: u64 = listed.iter().map(|f| f.1).sum();
    assert!(listed.iter().all(|(_, len)| *len <= 400), "{listed:?}");
    assert!(total <= 1_000 + 400, "{listed:?}");
    let seqs: Vec<u32> = listed
        .iter()
        .map(|(n, _)| parse_file_name(n).unwrap().1)
        .collect();
    assert!(
        seqs.len() >= 2 && !seqs.contains(&0),
        "rotated, oldest deleted: {seqs:?}"
    );
    let streams: HashSet<&str> = listed
        .iter()
        .map(|(n, _)| parse_file_name(n).unwrap().0)
        .collect();
    assert_eq!(streams.len(), 1, "one environment, one stream");
    // What is left reads back in order, ending with the last block.
    let q = Query {
        function: "f",
        version: None,
        after: 0,
        until: sh.watermark(),
        limit: 1000,
    };
    let (events, truncated) = read(dir.path(), &q);
    assert!(!truncated);
    let msgs: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(msgs.last(), Some(&"second"));
    assert!(msgs[msgs.len() - 2].starts_with("29 "), "{msgs:?}");
    assert!(
        !msgs.iter().any(|m| m.starts_with("00 ")),
        "oldest lines deleted"
    );
    assert!(events.windows(2).all(|w| w[0].ts_us < w[1].ts_us));
    assert!(events.iter().all(|e| e.version == "$LATEST"));
}

#[test]
fn retention_deletes_files_past_the_age_limit_but_not_open_ones() {
    let dir = tempfile::tempdir().unwrap();
    let old = SystemTime::now() - Duration::from_secs(7200);
    for name in ["a.0000.log", "b.0000.log", "c.0000.log"] {
        let f = fs::File::create(dir.path().join(name)).unwrap();
        f.set_modified(old).unwrap();
    }
    fs::write(dir.path().join("d.0000.log"), "fresh").unwrap();
    fs::write(dir.path().join("notes.txt"), "not a log file").unwrap();
    let cfg = LogConfig {
        max_file_bytes: 100,
        retention_bytes: 1 << 20,
        retention_age: Duration::from_secs(3600),
        ..LogConfig::default()
    };
    let open: HashSet<_> = [dir.path().join("b.0000.log")].into();
    enforce(dir.path(), &cfg, &open, SystemTime::now());
    let left: Vec<String> = files(dir.path()).into_iter().map(|f| f.0).collect();
    assert_eq!(left, ["b.0000.log", "d.0000.log", "notes.txt"]);
}

#[test]
fn reads_filter_by_time_version_and_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let sh = shared();
    let mut one = block(1, &["v1 line"], 5_000);
    one.version = "1".into();
    write_all(
        dir.path(),
        LogConfig::default(),
        &sh,
        vec![block(2, &["a", "b"], 3_000), one, block(3, &["c"], 4_000)],
    );
    let all = |after, until, version| {
        let q = Query {
            function: "f",
            version,
            after,
            until,
            limit: 100,
        };
        read(dir.path(), &q)
            .0
            .into_iter()
            .map(|e| e.message)
            .collect::<Vec<_>>()
    };
    let w = sh.watermark();
    assert_eq!(all(0, w, None), ["a", "b", "v1 line", "c"]);
    assert_eq!(all(0, w, Some("1")), ["v1 line"]);
    assert_eq!(all(0, w, Some("$LATEST")), ["a", "b", "c"]);
    // Timestamps are strictly increasing: `after` the 2nd line's leaves two.
    let q = Query {
        function: "f",
        version: None,
        after: 0,
        until: w,
        limit: 2,
    };
    let (first, truncated) = read(dir.path(), &q);
    assert!(truncated && first.len() == 2);
    assert_eq!(all(first[1].ts_us, w, None), ["v1 line", "c"]);
    // Nothing past the watermark is returned.
    assert_eq!(all(0, first[0].ts_us, None), ["a"]);
    assert!(all(0, w, None).len() == 4 && all(w, u64::MAX, None).is_empty());
}

fn outcome(request_id: &str, env: u64, logs: &[&str]) -> Outcome {
    Outcome {
        request_id: request_id.into(),
        function: "fn".into(),
        version: "$LATEST".into(),
        memory_size: 128,
        env_id: Some(env),
        cold: false,
        result: CallResult::Success(vec![]),
        logs: logs.iter().map(|s| s.to_string()).collect(),
        report: Report::default(),
        elapsed: Duration::from_millis(3),
    }
}

#[test]
fn recorded_invocations_are_framed_on_disk_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let logs = Logs::start(
        dir.path().to_path_buf(),
        LogConfig::default(),
        Default::default(),
    )
    .unwrap();
    let before = logs.shared().watermark();
    logs.record(&outcome("r1", 1, &["hello from r1"]));
    logs.record(&outcome("r2", 2, &[]));
    assert!(logs.flush(Duration::from_secs(10)));
    let after = logs.shared().watermark();
    assert!(after > before);
    let q = Query {
        function: "fn",
        version: Some("$LATEST"),
        after: before,
        until: after,
        limit: 100,
    };
    let (events, _) = read(logs.root(), &q);
    let msgs: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(msgs.len(), 7, "{msgs:?}");
    assert_eq!(msgs[0], "START RequestId: r1 Version: $LATEST");
    assert_eq!(msgs[1], "hello from r1");
    assert_eq!(msgs[2], "END RequestId: r1");
    assert!(msgs[3].starts_with("REPORT RequestId: r1\tDuration: 3.00 ms\tBilled Duration: 3 ms"));
    assert_eq!(msgs[4], "START RequestId: r2 Version: $LATEST");
    // Two environments, two streams.
    let streams: HashSet<&str> = events.iter().map(|e| e.stream.as_str()).collect();
    assert_eq!(streams.len(), 2);
    assert!(
        streams.iter().any(|s| s.contains("-e1-")) && streams.iter().any(|s| s.contains("-e2-"))
    );
}

#[test]
fn follows_are_capped_per_account_and_given_back_on_drop() {
    let f = Arc::new(follows::Follows::new(2));
    let a1 = f.acquire("a").unwrap();
    let _a2 = f.acquire("a").unwrap();
    assert!(f.acquire("a").is_none());
    let _b = f.acquire("b").unwrap();
    drop(a1);
    assert!(f.acquire("a").is_some());
}

#[tokio::test(flavor = "current_thread")]
async fn a_wait_for_the_watermark_ends_when_it_moves_or_at_the_deadline() {
    let sh = shared();
    let until = tokio::time::Instant::now() + Duration::from_millis(100);
    // Nothing moves: the wait ends at the deadline with the same watermark.
    assert_eq!(sh.wait_past(1_000, until).await, 1_000);
    assert!(tokio::time::Instant::now() >= until);
    let waiter = {
        let sh = sh.clone();
        let until = tokio::time::Instant::now() + Duration::from_secs(20);
        tokio::spawn(async move { sh.wait_past(1_000, until).await })
    };
    tokio::task::yield_now().await;
    sh.publish(2_000);
    assert_eq!(waiter.await.unwrap(), 2_000);
}
