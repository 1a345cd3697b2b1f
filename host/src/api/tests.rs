//! API tests over real HTTP on 127.0.0.1:0: routing, Lambda wire shapes,
//! error types and status codes, and "bad input stores nothing". The
//! launcher here cannot start VMs (these tests need none); invocations on
//! real microVMs are in `tests/api`.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use super::*;
use crate::cli::client::{Conn, Response};
use crate::env::{EnvError, EnvLauncher, EnvSpec, LaunchError, RunningEnv};
use crate::functions::Capabilities;
use crate::pool::PoolConfig;
use crate::store::Store;

struct NoVm;
impl EnvLauncher for NoVm {
    fn launch(
        &self,
        _: &EnvSpec,
        _: &crate::util::OnSpawn,
    ) -> Result<Box<dyn RunningEnv>, EnvError> {
        Err(EnvError::Launch(LaunchError::Unavailable(
            "no VMs in API unit tests".into(),
        )))
    }
}

struct Server {
    endpoint: String,
    /// The key every request of these tests is signed with.
    key: crate::auth::creds::AccessKey,
    dir: tempfile::TempDir,
    _stop: tokio::sync::watch::Sender<bool>,
}

async fn server() -> Server {
    server_with(Capabilities::default()).await
}

async fn server_with(caps: Capabilities) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("store")).unwrap());
    let cfg = PoolConfig {
        idle_timeout: Duration::from_secs(60),
        max_lifetime: Duration::from_secs(600),
        host_limit: 8,
        memory_budget: 1 << 40,
        run_dir: dir.path().join("run"),
    };
    let pool = crate::pool::Pool::new(Arc::new(NoVm), cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let creds_file = dir.path().join(crate::auth::creds::FILE_NAME);
    let key = crate::auth::creds::ensure_initial(&creds_file)
        .unwrap()
        .unwrap();
    let metrics: Arc<crate::metrics::Metrics> = Default::default();
    let logs = Arc::new(
        crate::logs::Logs::start(dir.path().join("logs"), Default::default(), metrics.clone())
            .unwrap(),
    );
    let events = crate::events::Events::open(
        &dir.path().join("events.redb"),
        &crate::events::EventArgs::default(),
    )
    .unwrap();
    let app = Arc::new(App {
        invoker: crate::invoker::Invoker::new(
            store.clone(),
            pool.clone(),
            metrics.clone(),
            logs.clone(),
        ),
        functions: crate::functions::Functions::new(
            store,
            pool,
            metrics.clone(),
            events.clone(),
            caps,
        ),
        events,
        base_url: format!("http://{addr}"),
        metrics,
        auth: Arc::new(crate::auth::Authenticator::new(creds_file)),
        logs,
        audit: None,
        fleet: None,
        urls: Arc::new(crate::urls::Urls::new(None)),
    });
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(crate::server::run(
        listener,
        app,
        rx,
        Duration::from_secs(1),
    ));
    Server {
        endpoint: format!("http://{addr}"),
        key,
        dir,
        _stop: tx,
    }
}

impl Server {
    /// A connection that signs its requests with the server's key.
    async fn conn(&self) -> Conn {
        Conn::connect(&self.endpoint)
            .await
            .unwrap()
            .with_credentials(Some(self.key.credentials()))
    }
}

const MODULE: &[u8] = b"\0asm\x01\0\0\0";

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

async fn req(s: &Server, method: &str, path: &str, body: Value) -> (Response, Value) {
    let mut c = s.conn().await;
    let body = if body.is_null() {
        vec![]
    } else {
        body.to_string().into_bytes()
    };
    let r = c.send(method, path, &[], body).await.unwrap();
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r, v)
}

fn assert_error(r: &Response, v: &Value, status: u16, kind: &str) {
    assert_eq!(r.status, status, "body: {v}");
    assert_eq!(r.header("x-amzn-errortype"), Some(kind));
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message: {v}"
    );
}

fn create_body(name: &str, code: &[u8]) -> Value {
    json!({"FunctionName": name, "Runtime": "wasm", "Role": "r", "Handler": "h", "Code": {"ZipFile": b64(code)}})
}

#[test]
fn routes_and_targets() {
    let (segs, q) = parse_target(
        "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A0%3Afunction%3Af/invocations",
        Some("Qualifier=%24LATEST"),
    )
    .unwrap();
    assert_eq!(
        route(&hyper::Method::POST, &segs).unwrap(),
        Route::Invoke(
            "arn:aws:lambda:us-east-1:0:function:f".into(),
            invoke::Answer::Whole
        )
    );
    assert_eq!(q["Qualifier"], "$LATEST");
    let (segs, _) = parse_target("/2015-03-31/functions/", None).unwrap();
    assert_eq!(
        route(&hyper::Method::GET, &segs).unwrap(),
        Route::ListFunctions
    );
    let (segs, _) = parse_target("/2018-10-31/layers/L/versions/3", None).unwrap();
    assert_eq!(
        route(&hyper::Method::DELETE, &segs).unwrap(),
        Route::DeleteLayerVersion("L".into(), "3".into())
    );
    assert!(parse_target("/a%zz", None).is_err());
    assert!(matches!(
        route(&hyper::Method::PATCH, &segs),
        Err(ApiError::UnknownOperation(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_lifecycle_over_http() {
    let s = server().await;
    let (r, v) = req(
        &s,
        "POST",
        "/2015-03-31/functions",
        create_body("f1", MODULE),
    )
    .await;
    assert_eq!(r.status, 201, "{v}");
    assert_eq!(v["Version"], "$LATEST");
    assert_eq!(
        v["CodeSha256"],
        b64(&<sha2::Sha256 as sha2::Digest>::digest(MODULE))
    );
    let (r, v) = req(
        &s,
        "POST",
        "/2015-03-31/functions",
        create_body("f1", MODULE),
    )
    .await;
    assert_error(&r, &v, 409, "ResourceConflictException");
    let (r, v) = req(&s, "GET", "/2015-03-31/functions/f1", Value::Null).await;
    assert_eq!(
        (r.status, v["Configuration"]["FunctionName"].as_str()),
        (200, Some("f1"))
    );
    let (r, v) = req(&s, "POST", "/2015-03-31/functions/f1/versions", json!({})).await;
    assert_eq!((r.status, v["Version"].as_str()), (201, Some("1")));
    let (r, v) = req(
        &s,
        "POST",
        "/2015-03-31/functions/f1/aliases",
        json!({"Name": "live", "FunctionVersion": "1"}),
    )
    .await;
    assert_eq!(
        (r.status, v["AliasArn"].as_str()),
        (
            201,
            Some("arn:aws:lambda:us-east-1:000000000000:function:f1:live")
        )
    );
    let (r, v) = req(
        &s,
        "GET",
        "/2015-03-31/functions/f1/configuration?Qualifier=live",
        Value::Null,
    )
    .await;
    assert_eq!((r.status, v["Version"].as_str()), (200, Some("1")));
    let (r, v) = req(
        &s,
        "PUT",
        "/2015-03-31/functions/f1/aliases/live",
        json!({"FunctionVersion": "7"}),
    )
    .await;
    assert_error(&r, &v, 404, "ResourceNotFoundException");
    let (r, v) = req(
        &s,
        "DELETE",
        "/2015-03-31/functions/f1?Qualifier=1",
        Value::Null,
    )
    .await;
    assert_error(&r, &v, 409, "ResourceConflictException");
    let (r, _) = req(
        &s,
        "DELETE",
        "/2015-03-31/functions/f1/aliases/live",
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 204);
    let (r, v) = req(&s, "GET", "/2015-03-31/functions/f1/versions", Value::Null).await;
    assert_eq!(
        (r.status, v["Versions"].as_array().map(Vec::len)),
        (200, Some(2))
    );
    for n in ["f2", "f3"] {
        req(&s, "POST", "/2015-03-31/functions", create_body(n, MODULE)).await;
    }
    let (_, v) = req(&s, "GET", "/2015-03-31/functions/?MaxItems=2", Value::Null).await;
    assert_eq!(
        (
            v["Functions"].as_array().map(Vec::len),
            v["NextMarker"].as_str()
        ),
        (Some(2), Some("f2"))
    );
    let (_, v) = req(
        &s,
        "GET",
        "/2015-03-31/functions/?MaxItems=2&Marker=f2",
        Value::Null,
    )
    .await;
    assert_eq!(
        (
            v["Functions"][0]["FunctionName"].as_str(),
            v.get("NextMarker")
        ),
        (Some("f3"), None)
    );
    let (r, _) = req(&s, "DELETE", "/2015-03-31/functions/f1", Value::Null).await;
    assert_eq!(r.status, 204);
    let (r, v) = req(&s, "GET", "/2015-03-31/functions/f1", Value::Null).await;
    assert_error(&r, &v, 404, "ResourceNotFoundException");
}

/// Every bad request gets a clean 4xx, and nothing reaches the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_nothing_is_stored() {
    let s = server().await;
    let zip_with = |name: &str| {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(MODULE).unwrap();
        w.finish().unwrap().into_inner()
    };
    let mut bomb = MODULE.to_vec();
    bomb.resize(16 << 20, 0);
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"FunctionName": "x", "Code": {"ZipFile": b64(MODULE)}, "Bogus": 1}),
            "InvalidParameterValueException",
        ),
        (
            json!({"FunctionName": "../../etc/passwd", "Code": {"ZipFile": b64(MODULE)}}),
            "InvalidParameterValueException",
        ),
        (
            json!({"FunctionName": "x", "Code": {"ZipFile": b64(&zip_with("../evil.wasm"))}}),
            "InvalidParameterValueException",
        ),
        (
            json!({"FunctionName": "x", "Code": {"ZipFile": b64(&zip_with("/abs.wasm"))}}),
            "InvalidParameterValueException",
        ),
        (
            create_body("x", &{
                use std::io::Write;
                let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
                w.start_file("f.wasm", zip::write::SimpleFileOptions::default())
                    .unwrap();
                w.write_all(&bomb).unwrap();
                w.finish().unwrap().into_inner()
            }),
            "InvalidParameterValueException",
        ),
        (
            json!({"FunctionName": "x", "Runtime": "python3.11", "Code": {"ZipFile": b64(MODULE)}}),
            "InvalidParameterValueException",
        ),
        (
            json!({"FunctionName": "x", "Code": {"ZipFile": "!!!not base64"}}),
            "InvalidParameterValueException",
        ),
        (
            json!({"FunctionName": "x", "MemorySize": 1, "Code": {"ZipFile": b64(MODULE)}}),
            "InvalidParameterValueException",
        ),
    ];
    for (body, kind) in cases {
        let (r, v) = req(&s, "POST", "/2015-03-31/functions", body.clone()).await;
        assert_error(&r, &v, 400, kind);
    }
    let mut c = s.conn().await;
    let r = c
        .send("POST", "/2015-03-31/functions", &[], b"{not json".to_vec())
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.header("x-amzn-errortype")),
        (400, Some("InvalidParameterValueException"))
    );
    let (_, v) = req(
        &s,
        "POST",
        "/2015-03-31/functions",
        json!({"FunctionName": "x", "Runtime": "python3.11", "Code": {"ZipFile": b64(MODULE)}}),
    )
    .await;
    assert!(v["message"].as_str().unwrap().contains("Linux"), "{v}");
    let (_, v) = req(&s, "GET", "/2015-03-31/functions/", Value::Null).await;
    assert_eq!(v["Functions"], json!([]));
    let blobs: Vec<_> = std::fs::read_dir(s.dir.path().join("store/blobs"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .collect();
    assert!(blobs.is_empty(), "a refused request left a blob behind");
    let (r, v) = req(
        &s,
        "GET",
        "/2015-03-31/functions/..%2F..%2Fetc",
        Value::Null,
    )
    .await;
    assert_error(&r, &v, 400, "InvalidParameterValueException");
    let (r, v) = req(&s, "GET", "/2015-03-31/nothing", Value::Null).await;
    assert_error(&r, &v, 404, "UnknownOperationException");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_errors_and_concurrency_controls() {
    let s = server().await;
    req(
        &s,
        "POST",
        "/2015-03-31/functions",
        create_body("f", MODULE),
    )
    .await;
    let mut c = s.conn().await;
    let inv = "/2015-03-31/functions/f/invocations";
    let r = c
        .send("POST", inv, &[], vec![b'1'; 6 * 1024 * 1024 + 1])
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.header("x-amzn-errortype")),
        (413, Some("RequestTooLargeException"))
    );
    let mut c = s.conn().await;
    let r = c.send("POST", inv, &[], b"{oops".to_vec()).await.unwrap();
    assert_eq!(
        (r.status, r.header("x-amzn-errortype")),
        (400, Some("InvalidRequestContentException"))
    );
    let r = c
        .send("POST", inv, &[("x-amz-invocation-type", "DryRun")], vec![])
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.header("x-amz-executed-version")),
        (204, Some("$LATEST"))
    );
    let r = c.send("POST", inv, &[], b"{}".to_vec()).await.unwrap();
    assert_eq!(
        (r.status, r.header("x-amzn-errortype")),
        (500, Some("ServiceException")),
        "launcher failure is a service error"
    );
    let r = c
        .send(
            "POST",
            "/2015-03-31/functions/nope/invocations",
            &[],
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 404);

    let (r, v) = req(
        &s,
        "PUT",
        "/2017-10-31/functions/f/concurrency",
        json!({"ReservedConcurrentExecutions": 9}),
    )
    .await;
    assert_error(&r, &v, 400, "InvalidParameterValueException");
    let (r, v) = req(
        &s,
        "PUT",
        "/2017-10-31/functions/f/concurrency",
        json!({"ReservedConcurrentExecutions": 0}),
    )
    .await;
    assert_eq!(
        (r.status, v["ReservedConcurrentExecutions"].as_u64()),
        (200, Some(0))
    );
    let (_, v) = req(
        &s,
        "GET",
        "/2019-09-30/functions/f/concurrency",
        Value::Null,
    )
    .await;
    assert_eq!(v["ReservedConcurrentExecutions"], 0);
    let r = c.send("POST", inv, &[], b"{}".to_vec()).await.unwrap();
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (r.status, v["Reason"].as_str()),
        (
            429,
            Some("ReservedFunctionConcurrentInvocationLimitExceeded")
        )
    );
    let (r, _) = req(
        &s,
        "DELETE",
        "/2017-10-31/functions/f/concurrency",
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 204);

    let (r, v) = req(
        &s,
        "PUT",
        "/2019-09-30/functions/f/provisioned-concurrency?Qualifier=%24LATEST",
        json!({"ProvisionedConcurrentExecutions": 1}),
    )
    .await;
    assert_error(&r, &v, 400, "InvalidParameterValueException");
    req(&s, "POST", "/2015-03-31/functions/f/versions", json!({})).await;
    let (r, v) = req(
        &s,
        "PUT",
        "/2019-09-30/functions/f/provisioned-concurrency?Qualifier=1",
        json!({"ProvisionedConcurrentExecutions": 2}),
    )
    .await;
    assert_eq!(
        (
            r.status,
            v["Status"].as_str(),
            v["RequestedProvisionedConcurrentExecutions"].as_u64()
        ),
        (202, Some("IN_PROGRESS"), Some(2))
    );
    let (r, _) = req(
        &s,
        "DELETE",
        "/2019-09-30/functions/f/provisioned-concurrency?Qualifier=1",
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 204);
    let (r, v) = req(
        &s,
        "GET",
        "/2019-09-30/functions/f/provisioned-concurrency?Qualifier=1",
        Value::Null,
    )
    .await;
    assert_error(&r, &v, 404, "ResourceNotFoundException");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_publish_get_list_delete() {
    let s = server_with(Capabilities {
        linux: crate::linux::Offer::offering(&["provided.al2023"]),
        ..Default::default()
    })
    .await;
    let zip = {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.start_file("lib/data.txt", zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(b"shared").unwrap();
        w.finish().unwrap().into_inner()
    };
    for expected in [1, 2] {
        let (r, v) = req(
            &s,
            "POST",
            "/2018-10-31/layers/L/versions",
            json!({"Content": {"ZipFile": b64(&zip)}, "CompatibleRuntimes": ["wasm"]}),
        )
        .await;
        assert_eq!(
            (r.status, v["Version"].as_u64()),
            (201, Some(expected)),
            "{v}"
        );
    }
    let (r, v) = req(&s, "GET", "/2018-10-31/layers/L/versions/2", Value::Null).await;
    assert_eq!(
        (r.status, v["LayerVersionArn"].as_str()),
        (200, Some("arn:aws:lambda:us-east-1:000000000000:layer:L:2"))
    );
    let (_, v) = req(&s, "GET", "/2018-10-31/layers/L/versions", Value::Null).await;
    assert_eq!(v["LayerVersions"][0]["Version"], 2);
    // A wasm function takes layers (its environments see them at /opt).
    let mut body = create_body("withlayer", MODULE);
    body["Layers"] = json!(["arn:aws:lambda:us-east-1:000000000000:layer:L:1"]);
    let (r, v) = req(&s, "POST", "/2015-03-31/functions", body.clone()).await;
    assert_eq!(
        (r.status, v["Layers"][0]["CodeSize"].as_u64()),
        (201, Some(zip.len() as u64)),
        "{v}"
    );
    // So does a Linux function (its code is a ZIP).
    body["FunctionName"] = json!("withlayer-linux");
    body["Runtime"] = json!("provided.al2023");
    body["Code"] = json!({"ZipFile": b64(&zip)});
    let (r, v) = req(&s, "POST", "/2015-03-31/functions", body.clone()).await;
    assert_eq!(
        (r.status, v["Layers"][0]["CodeSize"].as_u64()),
        (201, Some(zip.len() as u64)),
        "{v}"
    );
    body["FunctionName"] = json!("badlayer");
    body["Layers"] = json!(["arn:aws:lambda:us-east-1:000000000000:layer:L:9"]);
    let (r, v) = req(&s, "POST", "/2015-03-31/functions", body).await;
    assert_error(&r, &v, 400, "InvalidParameterValueException");
    let (r, _) = req(&s, "DELETE", "/2018-10-31/layers/L/versions/1", Value::Null).await;
    assert_eq!(r.status, 204);
    let (r, v) = req(&s, "GET", "/2018-10-31/layers/L/versions/1", Value::Null).await;
    assert_error(&r, &v, 404, "ResourceNotFoundException");
}

#[tokio::test]
async fn unsigned_or_badly_signed_requests_are_refused_and_change_nothing() {
    let s = server().await;
    let body = create_body("f", MODULE).to_string().into_bytes();
    let mut unsigned = Conn::connect(&s.endpoint).await.unwrap();
    let r = unsigned
        .send("POST", "/2015-03-31/functions", &[], body.clone())
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(
        r.header("x-amzn-errortype"),
        Some("MissingAuthenticationTokenException")
    );
    let mut wrong = s.key.credentials();
    wrong.secret_access_key = "not-the-secret".into();
    let mut c = Conn::connect(&s.endpoint)
        .await
        .unwrap()
        .with_credentials(Some(wrong));
    let r = c
        .send("POST", "/2015-03-31/functions", &[], body)
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(
        r.header("x-amzn-errortype"),
        Some("InvalidSignatureException")
    );
    let (r, v) = req(&s, "GET", "/2015-03-31/functions", Value::Null).await;
    assert_eq!(r.status, 200);
    assert_eq!(v["Functions"], json!([]));
}
