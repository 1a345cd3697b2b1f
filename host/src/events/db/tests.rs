//! Event store tests on a real redb file: group commit under concurrency,
//! crash recovery of open attempts, atomic settles, queues and configs.

use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::events::model::{AttemptRecord, EventRecord, InvokeConfig};

fn event(rid: &str) -> EventRecord {
    EventRecord {
        seq: 0,
        request_id: rid.into(),
        function: "f".into(),
        qualifier: None,
        received_ms: 1,
        not_before_ms: 1,
        invocations: 0,
        errors: 0,
        transient: 0,
        open_attempt: None,
        last_error: None,
    }
}

fn attempt(ev: &EventRecord) -> AttemptRecord {
    AttemptRecord {
        id: 0,
        request_id: ev.request_id.clone(),
        function: ev.function.clone(),
        attempt: ev.invocations,
        boot: 1,
        start_ms: 10,
        end_ms: None,
        env_id: None,
        result: None,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn concurrent_enqueues_commit_with_distinct_seqs_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let db = Arc::new(Db::open(&path).unwrap());
    let seqs = rt().block_on(async {
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    let payload = bytes::Bytes::from(format!("{{\"i\":{i}}}"));
                    db.submit(Op::Enqueue(event(&format!("r{i}")), payload))
                        .await
                })
            })
            .collect();
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.unwrap().unwrap());
        }
        seqs
    });
    let mut sorted = seqs.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 200);
    drop(db);
    let db = Db::open(&path).unwrap();
    let (boot, events) = db.recover(99).unwrap();
    assert_eq!((boot, events.len()), (1, 200));
    let ev = events.iter().find(|e| e.request_id == "r7").unwrap();
    assert_eq!(db.payload(ev.seq).unwrap().unwrap(), br#"{"i":7}"#);
}

#[test]
fn an_attempt_left_open_by_a_crash_is_closed_as_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let db = Db::open(&path).unwrap();
    let rt = rt();
    let mut ev = event("a");
    ev.seq = rt
        .block_on(db.submit(Op::Enqueue(ev.clone(), bytes::Bytes::from_static(b"{}"))))
        .unwrap();
    ev.invocations = 1;
    let id = rt
        .block_on(db.submit(Op::Start(ev.clone(), attempt(&ev))))
        .unwrap();
    // "Crash": the process goes away with the attempt open.
    drop(db);
    let db = Db::open(&path).unwrap();
    let (boot, events) = db.recover(500).unwrap();
    assert_eq!(
        boot, 1,
        "recover counts runs (the first run never recovered)"
    );
    let [back] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!((back.open_attempt, back.invocations), (None, 1));
    assert_eq!(back.not_before_ms, 500, "due again at once");
    let [a] = db
        .attempts(|a| a.request_id == "a", 0, 10)
        .unwrap()
        .try_into()
        .unwrap();
    assert_eq!(
        (a.id, a.end_ms, a.result.as_deref()),
        (id, Some(500), Some("Interrupted"))
    );
    let (boot2, _) = db.recover(600).unwrap();
    assert_eq!(boot2, 2);
}

#[test]
fn settle_removes_the_event_ends_the_attempt_and_sends_one_record_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("events.redb")).unwrap();
    let rt = rt();
    let mut ev = event("s");
    ev.seq = rt
        .block_on(db.submit(Op::Enqueue(ev.clone(), bytes::Bytes::from_static(b"[1]"))))
        .unwrap();
    let id = rt
        .block_on(db.submit(Op::Start(ev.clone(), attempt(&ev))))
        .unwrap();
    let msg = message(json!({"requestContext": {"requestId": "s"}}));
    let settle = Op::Settle {
        event: Settled::Remove(ev.seq),
        end: Some(AttemptEnd {
            id,
            end_ms: 20,
            env_id: Some(3),
            result: "Success".into(),
        }),
        message: Some(Record::new("ok".into(), &msg).unwrap()),
    };
    rt.block_on(db.submit(settle)).unwrap();
    assert_eq!(db.pending_count().unwrap(), 0);
    assert!(db.payload(ev.seq).unwrap().is_none());
    let [a] = db.attempts(|_| true, 0, 10).unwrap().try_into().unwrap();
    assert_eq!((a.end_ms, a.env_id), (Some(20), Some(3)));
    assert_eq!(db.queues().unwrap(), vec![("ok".to_string(), 1)]);
    let (msgs, next) = db.read_queue("ok", None, 10).unwrap();
    assert_eq!((msgs, next), (vec![msg.clone()], None));
    assert_eq!(db.delete_messages("ok", Some("nope")).unwrap(), 0);
    assert_eq!(db.delete_messages("ok", Some(&msg.message_id)).unwrap(), 1);
    assert_eq!(db.queues().unwrap(), vec![("ok".to_string(), 0)]);
}

#[test]
fn queue_pages_and_config_prefixes_stay_within_their_owner() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("events.redb")).unwrap();
    let rt = rt();
    for (q, n) in [("a", 5), ("ab", 2)] {
        for i in 0..n {
            let op = Op::Settle {
                event: Settled::Remove(0),
                end: None,
                message: Some(Record::new(q.into(), &message(json!(i))).unwrap()),
            };
            rt.block_on(db.submit(op)).unwrap();
        }
    }
    let (p1, m1) = db.read_queue("a", None, 2).unwrap();
    let (p2, m2) = db.read_queue("a", m1, 2).unwrap();
    let (p3, m3) = db.read_queue("a", m2, 2).unwrap();
    let bodies: Vec<_> = p1
        .iter()
        .chain(&p2)
        .chain(&p3)
        .map(|m| m.body.clone())
        .collect();
    assert_eq!(bodies, (0..5).map(|i| json!(i)).collect::<Vec<_>>());
    assert!(m3.is_none());
    assert_eq!(db.delete_messages("a", None).unwrap(), 5);
    assert_eq!(db.read_queue("ab", None, 10).unwrap().0.len(), 2);

    for (f, q) in [("f", "$LATEST"), ("f", "1"), ("f2", "$LATEST")] {
        db.put_config(&InvokeConfig::default_for(f, q)).unwrap();
    }
    assert_eq!(db.list_configs("f").unwrap().len(), 2);
    assert_eq!(db.delete_configs("f", None).unwrap(), 2);
    assert!(db.get_config("f2", "$LATEST").unwrap().is_some());
}

/// Regression (issue 13): destination records counted against no quota, so
/// a tenant whose queues nobody read could fill the disk through them. Now
/// unread records share the account's queue quota with its queued events:
/// a record over it is refused, deleting records frees their bytes, and the
/// count survives a reopen.
#[test]
fn unread_destination_records_count_against_the_accounts_quota() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let rt = rt();
    let settle_with = |db: &Db, queue: &str, msg: &QueueMessage| {
        let record = Record::new(queue.to_string(), msg)?;
        let held = db.admit_record(&record)?;
        let op = Op::Settle {
            event: Settled::Remove(999),
            end: None,
            message: Some(record),
        };
        rt.block_on(db.submit(op)).unwrap();
        db.kept(held);
        Ok::<(), StoreError>(())
    };
    // Each record its own message id, all of one size.
    let big = || message(json!({"pad": "x".repeat(600)}));
    let size = serde_json::to_vec(&big()).unwrap().len() as u64;
    {
        let db = Db::open(&path)
            .unwrap()
            .with_queue_quota(Some(2 * size + size / 2));
        settle_with(&db, "111111111111:q", &big()).unwrap();
        settle_with(&db, "111111111111:q", &big()).unwrap();
        // The third would exceed 2.5 records' worth: refused, not written.
        let refused = settle_with(&db, "111111111111:q", &big());
        assert!(
            matches!(refused, Err(StoreError::QueueQuota(_))),
            "{:?}",
            refused.err()
        );
        assert_eq!(
            db.queues().unwrap(),
            vec![("111111111111:q".to_string(), 2)]
        );
        // Another account is not affected, and neither are its events.
        settle_with(&db, "222222222222:q", &big()).unwrap();
        // Records held also refuse the account's new events.
        let mut ev = event("e");
        ev.function = "111111111111:f".into();
        let payload = bytes::Bytes::from(vec![b'1'; size as usize]);
        let r = rt.block_on(db.submit(Op::Enqueue(ev, payload)));
        assert!(matches!(r, Err(DbError::Store(StoreError::QueueQuota(_)))));
    }
    // Reopened: the two unread records still count.
    let db = Db::open(&path)
        .unwrap()
        .with_queue_quota(Some(2 * size + size / 2));
    db.recover(1).unwrap();
    assert!(settle_with(&db, "111111111111:q", &big()).is_err());
    // Reading does not free them; deleting one does.
    let (msgs, _) = db.read_queue("111111111111:q", None, 10).unwrap();
    assert_eq!(msgs.len(), 2);
    assert!(settle_with(&db, "111111111111:q", &big()).is_err());
    assert_eq!(
        db.delete_messages("111111111111:q", Some(&msgs[0].message_id))
            .unwrap(),
        1
    );
    settle_with(&db, "111111111111:q", &big()).unwrap();
}
