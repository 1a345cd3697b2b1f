//! Garbage collection against in-flight puts (issue 13 item 1): a blob put
//! for a record that has not committed yet must survive any collection that
//! runs in between, on every path that stores a blob and then commits a
//! record naming it — fresh or deduplicated.

use std::sync::Arc;

use super::tests::{layer_record as layer_rec, record};
use super::*;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    (dir, s)
}

#[test]
fn fresh_put_survives_a_collection_before_its_commit() {
    let (_d, s) = open();
    let pin = s.put_blob(b"new code").unwrap();
    assert_eq!(s.collect_garbage().unwrap(), 0);
    s.create_function(&record("f", pin.hex()), false).unwrap();
    drop(pin);
    assert_eq!(s.blobs.get(&sha256_hex(b"new code")).unwrap(), b"new code");
}

#[test]
fn deduplicated_put_survives_the_delete_of_the_other_owner() {
    let (_d, s) = open();
    let a = s.put_blob(b"shared").unwrap();
    s.create_function(&record("a", a.hex()), false).unwrap();
    drop(a);
    // b's put finds the blob already stored (the dedup early return) ...
    let b = s.put_blob(b"shared").unwrap();
    // ... then a's delete collects before b's record commits.
    s.delete_function("a").unwrap();
    s.create_function(&record("b", b.hex()), false).unwrap();
    drop(b);
    assert_eq!(s.blobs.get(&sha256_hex(b"shared")).unwrap(), b"shared");
}

#[test]
fn update_code_put_survives_a_collection() {
    let (_d, s) = open();
    let v1 = s.put_blob(b"v1").unwrap();
    s.create_function(&record("f", v1.hex()), false).unwrap();
    drop(v1);
    let v2 = s.put_blob(b"v2").unwrap();
    s.collect_garbage().unwrap();
    s.update_function("f", |r| {
        r.code.blob = v2.hex().to_string();
        Ok(())
    })
    .unwrap();
    drop(v2);
    s.collect_garbage().unwrap();
    assert_eq!(s.blobs.get(&sha256_hex(b"v2")).unwrap(), b"v2");
    assert!(matches!(
        s.blobs.get(&sha256_hex(b"v1")),
        Err(BlobError::Missing(_))
    ));
}

#[test]
fn layer_put_survives_a_collection() {
    let (_d, s) = open();
    let pin = s.put_blob(b"layer zip").unwrap();
    s.collect_garbage().unwrap();
    let rec = s.publish_layer(layer_rec(pin.hex())).unwrap();
    drop(pin);
    assert_eq!(s.blobs.get(&rec.code.blob).unwrap(), b"layer zip");
}

#[test]
fn a_dropped_pin_leaves_an_orphan_to_collect() {
    let (_d, s) = open();
    let pin = s.put_blob(b"abandoned").unwrap();
    drop(pin);
    assert_eq!(s.collect_garbage().unwrap(), 1);
    assert!(s.blobs.list().unwrap().is_empty());
    assert_eq!(s.pins.len(), 0);
}

/// Creates and deletes from several threads at once; step `i` of every
/// thread uses the same code, so threads both write fresh blobs and hit
/// blobs another thread stored (and may be deleting): every create that
/// committed still has its code, checked right after the commit and again
/// at the end.
#[test]
fn create_delete_storm_loses_no_committed_code() {
    let (_d, s) = open();
    let s = Arc::new(s);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut lost = Vec::new();
                for i in 0..60 {
                    let code = format!("code-{i}").into_bytes();
                    let name = format!("t{t}-f{i}");
                    let pin = s.put_blob(&code).unwrap();
                    s.create_function(&record(&name, pin.hex()), false).unwrap();
                    drop(pin);
                    if s.blobs.get(&sha256_hex(&code)).is_err() {
                        lost.push(name.clone());
                    }
                    // Every other function goes again, collecting garbage.
                    if i % 2 == 1 {
                        s.delete_function(&name).unwrap();
                    }
                }
                lost
            })
        })
        .collect();
    let mut lost: Vec<String> = Vec::new();
    for t in threads {
        lost.extend(t.join().unwrap());
    }
    let (left, _) = s.list_functions(None, usize::MAX).unwrap();
    assert_eq!(left.len(), 4 * 30);
    for f in &left {
        if s.blobs.get(&f.code.blob).is_err() {
            lost.push(f.name.clone());
        }
    }
    assert!(
        lost.is_empty(),
        "committed functions lost their code: {lost:?}"
    );
}
