//! The authenticator end to end on header maps: a request signed by
//! `sigv4::sign` with a key from the credentials file passes; every way of
//! getting it wrong is refused with the AWS error type the SDKs expect.

use super::*;

const NOW: i64 = 1_795_775_445; // 2026-11-27T10:30:45Z

fn setup() -> (tempfile::TempDir, Authenticator, AccessKey) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(creds::FILE_NAME);
    let key = creds::ensure_initial(&path).unwrap().unwrap();
    (dir, Authenticator::new(path), key)
}

fn signed(key: &AccessKey, at: i64, body: &[u8]) -> hyper::HeaderMap {
    let mut h = hyper::HeaderMap::new();
    h.insert("host", "127.0.0.1:9000".parse().unwrap());
    let req = RequestParts {
        method: "POST",
        path: "/2015-03-31/functions",
        query: None,
        headers: &h,
    };
    let added = sigv4::sign(
        &key.credentials(),
        "us-east-1",
        &format_amz_date(at),
        &req,
        body,
    );
    for (k, v) in added {
        h.insert(k, v.parse().unwrap());
    }
    h
}

fn check(
    a: &Authenticator,
    h: &hyper::HeaderMap,
    at: i64,
    path: &str,
    body: &[u8],
) -> Result<Caller, AuthError> {
    let p = a.begin_at(h, at)?;
    let req = RequestParts {
        method: "POST",
        path,
        query: None,
        headers: h,
    };
    let src: SocketAddr = "127.0.0.1:5555".parse().unwrap();
    a.finish(p, &req, &crate::digest::sha256_hex(body), src)
}

#[test]
fn dates_round_trip() {
    assert_eq!(format_amz_date(NOW), "20261127T103045Z");
    assert_eq!(parse_amz_date("20261127T103045Z"), Some(NOW));
    assert_eq!(parse_amz_date("20240229T000000Z"), Some(1_709_164_800));
    assert_eq!(parse_amz_date("2026-11-27T10:30"), None);
    assert_eq!(parse_amz_date("20261327T103045Z"), None);
}

#[test]
fn good_signature_names_the_caller() {
    let (_d, a, key) = setup();
    let h = signed(&key, NOW, b"{}");
    let c = check(&a, &h, NOW + 10, "/2015-03-31/functions", b"{}").unwrap();
    assert_eq!(c.access_key_id.as_deref(), Some(key.access_key_id.as_str()));
    assert_eq!(c.account(), creds::DEFAULT_ACCOUNT);
}

#[test]
fn every_wrong_request_is_refused_with_its_type() {
    let (d, a, key) = setup();
    let path = "/2015-03-31/functions";
    let h = signed(&key, NOW, b"{}");
    let err = |r: Result<Caller, AuthError>| r.unwrap_err().error_type();
    assert_eq!(
        err(check(&a, &h, NOW, path, b"{ }")),
        "InvalidSignatureException"
    );
    assert_eq!(
        err(check(&a, &h, NOW, "/2015-03-31/functionz", b"{}")),
        "InvalidSignatureException"
    );
    let skewed = check(&a, &h, NOW + 6 * 60, path, b"{}").unwrap_err();
    assert!(
        skewed
            .to_string()
            .starts_with("Signature expired: 20261127T103045Z"),
        "{skewed}"
    );
    let early = check(&a, &h, NOW - 6 * 60, path, b"{}").unwrap_err();
    assert!(
        early.to_string().starts_with("Signature not yet current"),
        "{early}"
    );
    assert_eq!(
        err(check(&a, &hyper::HeaderMap::new(), NOW, path, b"")),
        "MissingAuthenticationTokenException"
    );
    let mut partial = h.clone();
    partial.insert(
        "authorization",
        "AWS4-HMAC-SHA256 Credential=x".parse().unwrap(),
    );
    assert_eq!(
        err(check(&a, &partial, NOW, path, b"{}")),
        "IncompleteSignatureException"
    );
    let mut wrong_secret = key.clone();
    wrong_secret.secret_access_key = "x".repeat(40);
    assert_eq!(
        err(check(
            &a,
            &signed(&wrong_secret, NOW, b"{}"),
            NOW,
            path,
            b"{}"
        )),
        "InvalidSignatureException"
    );
    let mut unknown = key.clone();
    unknown.access_key_id = "AKIAUNKNOWNUNKNOWN00".into();
    assert_eq!(
        err(check(&a, &signed(&unknown, NOW, b"{}"), NOW, path, b"{}")),
        "UnrecognizedClientException"
    );
    let mut unsigned = h.clone();
    unsigned.insert("x-amz-content-sha256", "UNSIGNED-PAYLOAD".parse().unwrap());
    assert_eq!(
        err(check(&a, &unsigned, NOW, path, b"{}")),
        "InvalidSignatureException"
    );
    // Revoked while "emberd" runs: refused on the next request.
    creds::revoke(&d.path().join(creds::FILE_NAME), &key.access_key_id).unwrap();
    assert_eq!(
        err(check(&a, &h, NOW, path, b"{}")),
        "UnrecognizedClientException"
    );
}

#[test]
fn metrics_exemption_is_loopback_get_only_and_off_by_default() {
    let (_d, mut a, _) = setup();
    let lo: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let remote: SocketAddr = "10.0.0.2:1".parse().unwrap();
    let none = hyper::HeaderMap::new();
    assert!(!a.exempt(&hyper::Method::GET, "/metrics", &lo, &none));
    a.metrics_open_on_loopback = true;
    assert!(a.exempt(&hyper::Method::GET, "/metrics", &lo, &none));
    assert!(!a.exempt(&hyper::Method::GET, "/metrics", &remote, &none));
    assert!(!a.exempt(&hyper::Method::GET, "/2015-03-31/functions", &lo, &none));
}

#[test]
fn metrics_bearer_token_opens_get_metrics_only() {
    use std::os::unix::fs::PermissionsExt;
    let (d, mut a, _) = setup();
    let path = d.path().join("metrics.token");
    std::fs::write(&path, "prometheus-scrape-token\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let remote: SocketAddr = "10.0.0.2:1".parse().unwrap();
    let mut good = hyper::HeaderMap::new();
    good.insert(
        "authorization",
        "Bearer prometheus-scrape-token".parse().unwrap(),
    );
    let mut bad = hyper::HeaderMap::new();
    bad.insert(
        "authorization",
        "Bearer prometheus-scrape-tokem".parse().unwrap(),
    );
    // No token configured: a bearer header is no exemption.
    assert!(!a.exempt(&hyper::Method::GET, "/metrics", &remote, &good));
    a.metrics_token = Some(crate::auth::bearer::MetricsToken::load(&path).unwrap());
    assert!(a.exempt(&hyper::Method::GET, "/metrics", &remote, &good));
    assert!(!a.exempt(&hyper::Method::GET, "/metrics", &remote, &bad));
    assert!(!a.exempt(&hyper::Method::POST, "/metrics", &remote, &good));
    assert!(!a.exempt(&hyper::Method::GET, "/2015-03-31/functions", &remote, &good));
}
