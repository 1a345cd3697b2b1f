//! Pool-policy tests with a fake launcher (the real one is exercised by the
//! microVM tests in `tests/api`): reuse, version isolation, faults, reaping,
//! lifetime and provisioned concurrency.

use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::Mutex as StdMutex;

use super::*;
use crate::env::Report;

#[derive(Default)]
struct Fake {
    attempts: AtomicU32,
    launched: AtomicU32,
    alive: StdMutex<Vec<Arc<AtomicBool>>>,
}

struct FakeEnv {
    id: u64,
    alive: Arc<AtomicBool>,
    /// The environment's own backstop allowance (handler "grace" → 1 s).
    grace: Duration,
}

impl EnvLauncher for Arc<Fake> {
    fn launch(
        &self,
        spec: &EnvSpec,
        _: &crate::util::OnSpawn,
    ) -> Result<Box<dyn RunningEnv>, EnvError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if spec.handler == "fail" {
            return Err(EnvError::Launch(LaunchError::Unavailable("boom".into())));
        }
        self.launched.fetch_add(1, Ordering::SeqCst);
        let alive = Arc::new(AtomicBool::new(true));
        self.alive.lock().unwrap().push(alive.clone());
        let grace = if spec.handler == "grace" {
            Duration::from_secs(1)
        } else {
            Duration::ZERO
        };
        Ok(Box::new(FakeEnv {
            id: spec.env_id,
            alive,
            grace,
        }))
    }
}

fn success(payload: Vec<u8>) -> InvokeOutput {
    InvokeOutput {
        result: Ok(payload),
        logs: vec![],
        report: Report::default(),
    }
}

impl RunningEnv for FakeEnv {
    fn invoke(&mut self, input: &InvokeRequest) -> Result<InvokeOutput, EnvError> {
        match &input.payload[..] {
            b"die" => {
                self.alive.store(false, Ordering::SeqCst);
                Err(EnvError::Died(Fault::Agent(crate::env::AgentError::Closed)))
            }
            b"sleep300" => {
                std::thread::sleep(Duration::from_millis(300));
                Ok(success(b"done".to_vec()))
            }
            b"slow" => {
                std::thread::sleep(Duration::from_millis(100));
                Ok(success(self.id.to_string().into_bytes()))
            }
            // Where the payload's bytes live (the request reaches the
            // environment without a copy).
            p if p.starts_with(b"addr") => Ok(success(format!("{:p}", p.as_ptr()).into_bytes())),
            _ => Ok(success(self.id.to_string().into_bytes())),
        }
    }
    fn deadline_grace(&self) -> Duration {
        self.grace
    }
    fn pid(&self) -> Option<u32> {
        None
    }
    fn is_alive(&mut self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }
    fn shutdown(self: Box<Self>) {}
}

fn pool(idle: Duration, life: Duration) -> (Arc<Pool>, Arc<Fake>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::default());
    let cfg = PoolConfig {
        idle_timeout: idle,
        max_lifetime: life,
        host_limit: 100,
        memory_budget: 1 << 40,
        run_dir: dir.path().to_path_buf(),
    };
    (Pool::new(Arc::new(fake.clone()), cfg), fake, dir)
}

/// Polls `cond` for up to 5 s (the machine may be busy; the condition, not
/// the wait, is what is tested).
async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn key(v: &str, rev: &str) -> VersionKey {
    VersionKey {
        function: "f".into(),
        version: v.into(),
        revision: rev.into(),
    }
}

fn spec(handler: &'static str) -> SpecFn {
    Box::new(move |env_id, work_dir| {
        Ok(EnvSpec {
            env_id,
            function_name: "f".into(),
            function_version: "1".into(),
            handler: handler.into(),
            runtime: "wasm".into(),
            code: Arc::new(vec![]),
            code_blob: String::new(),
            layers: Vec::new(),
            ephemeral_mib: 512,
            env_vars: Default::default(),
            memory_mib: 128,
            timeout_ms: 1000,
            work_dir,
            snapshot: None,
        })
    })
}

fn input(p: &[u8]) -> InvokeRequest {
    InvokeRequest {
        request_id: "r".into(),
        payload: bytes::Bytes::copy_from_slice(p),
        deadline_ms: 0,
        ..Default::default()
    }
}

/// One invocation through the pool; returns the serving environment's id.
async fn call(p: &Arc<Pool>, k: &VersionKey, payload: &[u8]) -> Result<u64, EnvError> {
    let (w, _) = p.checkout(k, 128, spec("h")).await?;
    match p.invoke(w, input(payload), Duration::from_secs(5)).await? {
        InvokeOutput {
            result: Ok(payload),
            ..
        } => Ok(String::from_utf8(payload).unwrap().parse().unwrap()),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_reuse_within_a_version_never_across() {
    let (p, fake, _d) = pool(Duration::from_secs(60), Duration::from_secs(600));
    let a = call(&p, &key("1", "r1"), b"x").await.unwrap();
    assert_eq!(
        call(&p, &key("1", "r1"), b"x").await.unwrap(),
        a,
        "warm reuse"
    );
    let b = call(&p, &key("2", "r2"), b"x").await.unwrap();
    assert_ne!(a, b, "version 2 got version 1's environment");
    p.retire("f", Some("1"));
    let c = call(&p, &key("1", "r1"), b"x").await.unwrap();
    assert_ne!(c, a, "retired environment reused");
    assert_eq!(fake.launched.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_get_distinct_environments() {
    let (p, _fake, _d) = pool(Duration::from_secs(60), Duration::from_secs(600));
    let k = key("1", "r");
    let calls: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn({
                let (p, k) = (p.clone(), k.clone());
                async move { call(&p, &k, b"slow").await.unwrap() }
            })
        })
        .collect();
    let mut ids = Vec::new();
    for c in calls {
        ids.push(c.await.unwrap());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 8, "two concurrent calls shared an environment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_environment_is_discarded() {
    let (p, _fake, _d) = pool(Duration::from_secs(60), Duration::from_secs(600));
    let k = key("1", "r");
    let a = call(&p, &k, b"x").await.unwrap();
    assert!(matches!(call(&p, &k, b"die").await, Err(EnvError::Died(_))));
    let b = call(&p, &k, b"x").await.unwrap();
    assert_ne!(a, b);
    let failing = p.checkout(&key("9", "r"), 128, spec("fail")).await;
    assert!(matches!(failing, Err(EnvError::Launch(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_reaping_and_max_lifetime() {
    let (p, _fake, _d) = pool(Duration::from_millis(400), Duration::from_secs(600));
    let k = key("1", "r");
    call(&p, &k, b"x").await.unwrap();
    p.maintain().await;
    assert_eq!(p.list().len(), 1, "reaped before the idle timeout");
    tokio::time::sleep(Duration::from_millis(450)).await;
    p.maintain().await;
    assert!(
        eventually(|| p.list().is_empty()).await,
        "idle environment not reaped"
    );

    let (p, _fake, _d) = pool(Duration::from_secs(60), Duration::from_millis(50));
    let a = call(&p, &k, b"x").await.unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_ne!(
        call(&p, &k, b"x").await.unwrap(),
        a,
        "environment outlived its max lifetime"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioned_targets_are_kept_ready() {
    let (p, fake, _d) = pool(Duration::from_millis(10), Duration::from_secs(600));
    let k = key("1", "r");
    p.set_targets(vec![Target {
        function: "f".into(),
        qualifier: "1".into(),
        key: k.clone(),
        count: 3,
        memory_mib: 128,
        spec: Arc::new(|| spec("h")),
    }]);
    assert_eq!(p.target_status("f", "1"), Some((0, 3)));
    p.maintain().await;
    p.maintain().await; // must not double-start while the first three are starting
    assert!(eventually(|| p.target_status("f", "1") == Some((3, 3))).await);
    assert_eq!(fake.launched.load(Ordering::SeqCst), 3);
    p.maintain().await; // provisioned environments are exempt from idle reaping
    assert_eq!(p.provisioned_ready(&k), 3);
    fake.alive.lock().unwrap()[0].store(false, Ordering::SeqCst);
    p.maintain().await;
    let replaced =
        eventually(|| p.target_status("f", "1") == Some((3, 3)) && p.list().len() == 3).await;
    assert!(replaced, "dead provisioned environment not replaced");
    assert_eq!(fake.launched.load(Ordering::SeqCst), 4);
    p.set_targets(vec![]);
    tokio::time::sleep(Duration::from_millis(20)).await;
    p.maintain().await;
    assert!(
        eventually(|| p.list().is_empty()).await,
        "unprovisioned environments kept past idle timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_provisioned_starts_back_off() {
    let (p, fake, _d) = pool(Duration::from_secs(60), Duration::from_secs(600));
    p.set_targets(vec![Target {
        function: "f".into(),
        qualifier: "1".into(),
        key: key("1", "r"),
        count: 2,
        memory_mib: 128,
        spec: Arc::new(|| spec("fail")),
    }]);
    p.maintain().await;
    let failed = || p.lock().failed_starts.contains_key(&key("1", "r"));
    assert!(
        eventually(|| fake.attempts.load(Ordering::SeqCst) == 2 && p.list().is_empty() && failed())
            .await
    );
    for _ in 0..5 {
        p.maintain().await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        fake.attempts.load(Ordering::SeqCst),
        2,
        "retried a failing start without backing off"
    );
    assert_eq!(p.target_status("f", "1"), Some((0, 2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_environments_count_and_the_least_recently_used_make_room() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::default());
    let one = claim::claim_bytes(128);
    let cfg = PoolConfig {
        idle_timeout: Duration::from_secs(60),
        max_lifetime: Duration::from_secs(600),
        host_limit: 100,
        memory_budget: 2 * one,
        run_dir: dir.path().to_path_buf(),
    };
    let p = Pool::new(Arc::new(fake.clone()), cfg);
    let (f, g) = (key("1", "r"), key("2", "r"));
    // Two environments of f, both idle afterwards: they keep their claims.
    let (w1, _) = p.checkout(&f, 128, spec("h")).await.unwrap();
    let (w2, _) = p.checkout(&f, 128, spec("h")).await.unwrap();
    let (old, recent) = (w1.id, w2.id);
    p.checkin(w1, true);
    tokio::time::sleep(Duration::from_millis(5)).await;
    p.checkin(w2, true);
    assert_eq!(p.memory(), (2 * one, 2 * one));
    // g needs room: the least recently used idle environment of f goes.
    let (wg, cold) = p.checkout(&g, 128, spec("h")).await.unwrap();
    assert!(cold);
    let ids: Vec<u64> = p
        .list()
        .iter()
        .filter(|i| i.state != EnvState::Stopping)
        .map(|i| i.id)
        .collect();
    assert!(ids.contains(&recent) && !ids.contains(&old), "{ids:?}");
    assert_eq!(p.memory().1, 2 * one);
    // Both claims are busy now: a third environment has no room.
    let (wf, cold) = p.checkout(&f, 128, spec("h")).await.unwrap();
    assert!(!cold, "the warm one is reused without a claim");
    assert!(matches!(p.reserve(&g, 128), Err(Throttle::Memory)));
    // A claim larger than the whole budget never evicts anything.
    p.checkin(wf, true);
    assert!(matches!(p.reserve(&g, 1024), Err(Throttle::Memory)));
    assert_eq!(
        p.list()
            .iter()
            .filter(|i| i.state == EnvState::Idle)
            .count(),
        1
    );
    p.checkin(wg, true);
    assert!(eventually(|| p.list().len() == 2).await);
    assert_eq!(fake.launched.load(Ordering::SeqCst), 3);
}

/// Regression (nested emberd-linux run G): the pool's backstop fired at
/// timeout + 3 s while a Linux environment still waited, as it should, for
/// its runtime's re-init (its own grace is 11 s), so every timed-out python
/// function lost its VM and its logs. The backstop now allows the
/// environment's grace on top of the function's timeout.
#[tokio::test]
async fn backstop_allows_the_environments_own_grace() {
    let (p, _, _d) = pool(Duration::from_secs(60), Duration::from_secs(600));
    let k = key("1", "a");
    let (w, _) = p.checkout(&k, 128, spec("grace")).await.unwrap();
    // 300 ms > timeout (100 ms) + HOST_GRACE (50 ms under test), < + 1 s grace.
    let out = p.invoke(w, input(b"sleep300"), Duration::from_millis(100));
    match out.await.unwrap() {
        InvokeOutput {
            result: Ok(payload),
            ..
        } => assert_eq!(payload, b"done"),
        other => panic!("the backstop fired inside the environment's grace: {other:?}"),
    }
}

/// The backstop's timeout names the function's timeout (it named the
/// backstop: "Task timed out after 18.00 seconds" for a 15 s function, when
/// the invoker passed timeout + grace; the pool now adds the graces itself).
#[tokio::test]
async fn backstop_timeout_names_the_function_timeout() {
    let (p, _, _d) = pool(Duration::from_secs(60), Duration::from_secs(600));
    let k = key("1", "a");
    let (w, _) = p.checkout(&k, 128, spec("h")).await.unwrap();
    let out = p.invoke(w, input(b"sleep300"), Duration::from_millis(100));
    match out.await.unwrap() {
        InvokeOutput { result: Err(f), .. } => {
            assert_eq!(f.message, "Task timed out after 0.10 seconds");
            assert!(f.fatal);
        }
        other => panic!("no timeout: {other:?}"),
    }
}

/// The payload the caller hands the pool is the one the environment sees:
/// the same bytes, not a copy (the agent connection copies it once, into
/// the frame).
#[tokio::test]
async fn the_payload_reaches_the_environment_uncopied() {
    let (p, _, _d) = pool(Duration::from_secs(60), Duration::from_secs(600));
    let k = key("f", "1");
    let (w, _) = p.checkout(&k, 128, spec("h")).await.unwrap();
    let payload = bytes::Bytes::from(b"addr of this payload".to_vec());
    let at = format!("{:p}", payload.as_ptr());
    let req = InvokeRequest {
        payload,
        ..input(b"")
    };
    match p.invoke(w, req, Duration::from_secs(5)).await.unwrap() {
        InvokeOutput {
            result: Ok(payload),
            ..
        } => assert_eq!(String::from_utf8(payload).unwrap(), at),
        other => panic!("{other:?}"),
    }
}
