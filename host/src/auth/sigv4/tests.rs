//! SigV4 against signatures botocore 1.44 computed for the same requests
//! (`SigV4Auth(creds, "lambda", "us-east-1").add_auth(AWSRequest(...))` with
//! its clock pinned to 2026-11-27T10:30:45Z): if our canonicalisation differs
//! from botocore's in any byte, the signature differs.

use super::*;

const CREDS: (&str, &str) = ("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
const DATE: &str = "20261127T103045Z";

fn headers(pairs: &[(&str, &str)]) -> hyper::HeaderMap {
    let mut h = hyper::HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            hyper::header::HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

/// Our signature for the request, signing exactly `signed` headers.
fn our_signature(
    method: &str,
    path: &str,
    query: Option<&str>,
    h: &hyper::HeaderMap,
    signed: &[&str],
    body: &[u8],
) -> String {
    let req = RequestParts {
        method,
        path,
        query,
        headers: h,
    };
    let signed: Vec<String> = signed.iter().map(|s| s.to_string()).collect();
    let canonical = canonical_request(&req, &signed, &sha256_hex(body));
    let key = signing_key(CREDS.1, "20261127", "us-east-1", "lambda");
    let sts = string_to_sign(DATE, "20261127/us-east-1/lambda/aws4_request", &canonical);
    hex(&signature(&key, &sts))
}

#[test]
fn invoke_with_arn_path_query_and_odd_header_matches_botocore() {
    let h = headers(&[
        ("host", "127.0.0.1:9000"),
        ("x-amz-date", DATE),
        ("x-amz-invocation-type", "RequestResponse"),
        ("content-type", "application/json"),
        ("x-odd", "  a   b  "),
        ("user-agent", "not signed"),
    ]);
    let sig = our_signature(
        "POST",
        "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Af/invocations",
        Some("Qualifier=%24LATEST"),
        &h,
        &["content-type", "host", "x-amz-date", "x-amz-invocation-type", "x-odd"],
        br#"{"k": "v w"}"#,
    );
    assert_eq!(
        sig,
        "c2cd1859deb20da1e942e1645a6d8e3d17a47ceda8a7d55d477e1b2d32bdf930"
    );
}

#[test]
fn sorted_encoded_query_matches_botocore() {
    let h = headers(&[("host", "localhost:9000"), ("x-amz-date", DATE)]);
    // Sent in the opposite order and with a `+`-free, already canonical encoding.
    let sig = our_signature(
        "GET",
        "/2015-03-31/functions/",
        Some("MaxItems=5&Marker=a%2Fb%20c"),
        &h,
        &["x-amz-date", "host"],
        b"",
    );
    assert_eq!(
        sig,
        "76a32be914a57de7e0d0866fb6e6d5a8743076496885191cc40871ddd41f0f21"
    );
}

#[test]
fn dot_segments_and_double_slashes_match_botocore() {
    let h = headers(&[("host", "localhost:9000"), ("x-amz-date", DATE)]);
    let sig = our_signature(
        "GET",
        "/a/./b/../c//d/",
        None,
        &h,
        &["host", "x-amz-date"],
        b"",
    );
    assert_eq!(
        sig,
        "77a79a4e4cfcd29e3a9bc37a48380ddd1c6344ae2d3cda8bfc6c120555eb2a3c"
    );
    assert_eq!(canonical_uri(""), "/");
    assert_eq!(canonical_uri("/"), "/");
    assert_eq!(canonical_uri("/x/../.."), "/");
}

#[test]
fn sign_then_parse_and_verify_round_trip() {
    let creds = Credentials {
        access_key_id: CREDS.0.into(),
        secret_access_key: CREDS.1.into(),
    };
    let h = headers(&[("host", "h:1"), ("content-type", "application/json")]);
    let req = RequestParts {
        method: "PUT",
        path: "/2015-03-31/functions/f/code",
        query: None,
        headers: &h,
    };
    let added = sign(&creds, "eu-west-1", DATE, &req, b"{}");
    let mut full = h.clone();
    for (k, v) in &added {
        full.insert(*k, v.parse().unwrap());
    }
    let auth = parse_authorization(full["authorization"].to_str().unwrap()).unwrap();
    assert_eq!(auth.access_key_id, CREDS.0);
    assert_eq!(auth.scope(), "20261127/eu-west-1/lambda/aws4_request");
    let key = signing_key(CREDS.1, &auth.date, &auth.region, &auth.service);
    let check = |body: &[u8], path: &str| {
        let req = RequestParts {
            path,
            headers: &full,
            ..req
        };
        let c = canonical_request(&req, &auth.signed_headers, &sha256_hex(body));
        verify(
            &key,
            &string_to_sign(DATE, &auth.scope(), &c),
            &auth.signature,
        )
    };
    assert!(check(b"{}", "/2015-03-31/functions/f/code"));
    assert!(!check(b"{ }", "/2015-03-31/functions/f/code"));
    assert!(!check(b"{}", "/2015-03-31/functions/g/code"));
}

#[test]
fn malformed_authorization_headers_are_named() {
    let ok = "AWS4-HMAC-SHA256 Credential=AK/20261127/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=";
    let sig = "0".repeat(64);
    assert!(parse_authorization(&format!("{ok}{sig}")).is_ok());
    assert!(matches!(
        parse_authorization("AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00"),
        Err(SigV4Error::MissingParam("Credential", _))
    ));
    assert!(matches!(
        parse_authorization(&format!("AWS4-HMAC-SHA1 Credential=x, Signature={sig}")),
        Err(SigV4Error::Algorithm(_))
    ));
    assert_eq!(
        parse_authorization(&format!("{ok}{}", "0".repeat(63))),
        Err(SigV4Error::SignatureHex)
    );
    let no_host = format!(
        "AWS4-HMAC-SHA256 Credential=AK/20261127/us-east-1/lambda/aws4_request, SignedHeaders=x-amz-date, Signature={sig}"
    );
    assert_eq!(parse_authorization(&no_host), Err(SigV4Error::HostUnsigned));
    let bad_scope = format!(
        "AWS4-HMAC-SHA256 Credential=AK/2026112/us-east-1/lambda/aws4_request, SignedHeaders=host, Signature={sig}"
    );
    assert!(matches!(
        parse_authorization(&bad_scope),
        Err(SigV4Error::Scope(_))
    ));
}
