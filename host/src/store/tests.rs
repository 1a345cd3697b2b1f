//! Store tests: CRUD, publish semantics, pagination, crash-safety invariants
//! (orphan blobs collected, a reopened store keeps committed state).

use super::*;

fn func(store: &Store, name: &str, code: &[u8]) -> FunctionRecord {
    let mut r = record(name, &store.blobs.put(code).unwrap());
    r.code.size = code.len() as u64;
    r
}

/// A wasm function record whose code is blob `blob`.
pub(super) fn record(name: &str, blob: &str) -> FunctionRecord {
    FunctionRecord {
        name: name.into(),
        config: FunctionConfig {
            runtime: "wasm".into(),
            timeout: 3,
            memory_size: 128,
            ..Default::default()
        },
        code: CodeRef {
            blob: blob.into(),
            package_sha256: "pkg".into(),
            size: 1,
            native: Vec::new(),
        },
        revision_id: crate::util::uuid4(),
        last_modified: crate::util::now_lambda(),
        next_version: 1,
        reserved_concurrency: None,
        tags: Default::default(),
        policy: Vec::new(),
        policy_revision: String::new(),
        urls: Vec::new(),
    }
}

/// An unpublished version of layer `L` holding `bytes`.
fn layer(s: &Store, bytes: &[u8]) -> LayerVersionRecord {
    let mut l = layer_record(&s.blobs.put(bytes).unwrap());
    l.code.size = bytes.len() as u64;
    l
}

/// An unpublished version of layer `L` whose content is blob `blob`.
pub(super) fn layer_record(blob: &str) -> LayerVersionRecord {
    LayerVersionRecord {
        layer_name: "L".into(),
        version: 0,
        description: String::new(),
        compatible_runtimes: vec![],
        license_info: None,
        code: CodeRef {
            blob: blob.into(),
            package_sha256: "p".into(),
            size: 1,
            native: Vec::new(),
        },
        created: crate::util::now_lambda(),
    }
}

#[test]
fn create_get_conflict_delete() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let f = func(&s, "a", b"code-a");
    s.create_function(&f, false).unwrap();
    assert_eq!(s.get_function("a").unwrap(), f);
    assert!(matches!(
        s.create_function(&f, false),
        Err(StoreError::Conflict(_))
    ));
    s.delete_function("a").unwrap();
    assert!(matches!(s.get_function("a"), Err(StoreError::NotFound(_))));
    assert!(
        s.blobs.list().unwrap().is_empty(),
        "code blob collected with its function"
    );
}

#[test]
fn publish_is_idempotent_until_latest_changes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.create_function(&func(&s, "f", b"v1"), true).unwrap();
    assert_eq!(
        s.publish_version("f", None, None).unwrap().version,
        1,
        "unchanged $LATEST republishes v1"
    );
    let blob = s.blobs.put(b"v2").unwrap();
    s.update_function("f", |r| {
        r.code.blob = blob.clone();
        Ok(())
    })
    .unwrap();
    assert_eq!(s.publish_version("f", None, None).unwrap().version, 2);
    assert!(matches!(
        s.publish_version("f", None, Some("other")),
        Err(StoreError::Conflict(_))
    ));
    let vs: Vec<u64> = s
        .list_versions("f")
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(vs, vec![1, 2]);
    assert_eq!(s.get_version("f", 1).unwrap().code.blob, sha256_hex(b"v1"));
}

#[test]
fn aliases_guard_versions() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.create_function(&func(&s, "f", b"x"), true).unwrap();
    let a = AliasRecord {
        name: "live".into(),
        function_version: "1".into(),
        description: String::new(),
        revision_id: "r".into(),
    };
    s.put_alias("f", &a, true).unwrap();
    assert!(matches!(
        s.put_alias("f", &a, true),
        Err(StoreError::Conflict(_))
    ));
    let bad = AliasRecord {
        function_version: "9".into(),
        ..a.clone()
    };
    assert!(matches!(
        s.put_alias("f", &bad, false),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.delete_version("f", 1),
        Err(StoreError::Conflict(_))
    ));
    s.delete_alias("f", "live").unwrap();
    s.delete_version("f", 1).unwrap();
    assert!(s.list_versions("f").unwrap().is_empty());
}

#[test]
fn list_paginates_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    for n in ["c", "a", "b", "d"] {
        s.create_function(&func(&s, n, n.as_bytes()), false)
            .unwrap();
    }
    let (p1, m1) = s.list_functions(None, 3).unwrap();
    assert_eq!(
        p1.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    assert_eq!(m1.as_deref(), Some("c"));
    let (p2, m2) = s.list_functions(m1.as_deref(), 3).unwrap();
    assert_eq!(
        p2.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        ["d"]
    );
    assert_eq!(m2, None);
}

#[test]
fn reopen_keeps_committed_state_and_drops_orphan_blobs() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        s.create_function(&func(&s, "kept", b"kept-code"), true)
            .unwrap();
        // A blob written by a create that crashed before its metadata commit.
        s.blobs.put(b"orphan").unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.get_function("kept").unwrap().next_version, 2);
    assert_eq!(
        s.blobs.get(&sha256_hex(b"kept-code")).unwrap(),
        b"kept-code"
    );
    assert!(matches!(
        s.blobs.get(&sha256_hex(b"orphan")),
        Err(BlobError::Missing(_))
    ));
}

#[test]
fn layers_number_from_one_and_provisioned_roundtrips() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let rec = layer(&s, b"layer");
    assert_eq!(s.publish_layer(rec.clone()).unwrap().version, 1);
    assert_eq!(s.publish_layer(rec).unwrap().version, 2);
    s.delete_layer("L", 1).unwrap();
    assert_eq!(s.list_layer_versions("L").unwrap().len(), 1);
    s.create_function(&func(&s, "f", b"x"), true).unwrap();
    let p = ProvisionedRecord {
        function: "f".into(),
        qualifier: "1".into(),
        requested: 3,
        last_modified: String::new(),
    };
    s.put_provisioned(&p).unwrap();
    assert_eq!(s.get_provisioned("f", "1").unwrap(), Some(p));
    assert!(s.delete_provisioned("f", "1").unwrap());
}

#[test]
fn deleted_layer_stays_usable_by_the_functions_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let used = s.publish_layer(layer(&s, b"used layer")).unwrap();
    let unused = s.publish_layer(layer(&s, b"unused layer")).unwrap();
    let mut f = func(&s, "f", b"zip");
    f.config.layers = vec![crate::util::layer_arn("L", Some(used.version))];
    s.create_function(&f, true).unwrap();

    s.delete_layer("L", used.version).unwrap();
    s.delete_layer("L", unused.version).unwrap();
    // Gone from the API, still there for f (and its version 1).
    assert!(matches!(s.get_layer("L", 1), Err(StoreError::NotFound(_))));
    assert!(s.list_layer_versions("L").unwrap().is_empty());
    let kept = s.get_layer_for_use("L", used.version).unwrap();
    assert_eq!(s.blobs.get(&kept.code.blob).unwrap(), b"used layer");
    assert!(s.get_layer_for_use("L", unused.version).is_err());
    assert!(!s.blobs.list().unwrap().contains(&unused.code.blob));
    // A reopened store keeps it; new versions never reuse the number.
    drop(s);
    let s = Store::open(dir.path()).unwrap();
    assert!(s.get_layer_for_use("L", used.version).is_ok());
    assert_eq!(s.publish_layer(layer(&s, b"third")).unwrap().version, 3);

    // Once nothing names it, it is collected.
    s.delete_function("f").unwrap();
    s.collect_garbage().unwrap();
    assert!(s.get_layer_for_use("L", used.version).is_err());
    assert!(!s.blobs.list().unwrap().contains(&kept.code.blob));
}

#[test]
fn usage_and_quotas_count_each_account_apart() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap().with_limits(Limits {
        account_code: Some(1000),
        account_layers: Some(100),
        ..Default::default()
    });
    let sized = |name: &str, size: u64| {
        let mut r = record(name, &"0".repeat(64));
        r.code.size = size;
        r
    };
    // The default account's names carry no prefix; "22222222222" is a
    // prefix of "222222222222" but another account.
    s.create_function(&sized("f", 100), true).unwrap();
    s.create_function(&sized("222222222222:f", 300), false)
        .unwrap();
    s.create_function(&sized("22222222222:f", 50), false)
        .unwrap();
    let mut l = layer_record(&"1".repeat(64));
    l.code.size = 40;
    l.layer_name = "222222222222:L".into();
    s.publish_layer(l.clone()).unwrap();
    s.publish_layer(l.clone()).unwrap();
    let usage = |a: &str| s.account_usage(a).unwrap().total_code_bytes;
    assert_eq!(usage(crate::util::ACCOUNT), 200); // $LATEST + version 1
    assert_eq!(usage("222222222222"), 380);
    assert_eq!(usage("22222222222"), 50);
    // Past the quota: refused, nothing written; other accounts unaffected.
    assert!(matches!(
        s.create_function(&sized("222222222222:g", 701), false),
        Err(StoreError::Quota(_))
    ));
    assert!(s.get_function("222222222222:g").is_err());
    s.create_function(&sized("222222222222:g", 700), false)
        .unwrap();
    assert!(matches!(
        s.publish_layer(l.clone()),
        Err(StoreError::Quota(_))
    ));
    l.layer_name = "L".into();
    s.publish_layer(l).unwrap();
    assert!(matches!(
        s.publish_version("222222222222:g", None, None),
        Err(StoreError::Quota(_))
    ));
    assert!(s.precheck_code(crate::util::ACCOUNT, 800).is_ok());
    assert!(s.precheck_code(crate::util::ACCOUNT, 801).is_err());
}
