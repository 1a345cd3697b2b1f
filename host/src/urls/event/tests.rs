//! The payload format 2.0 event and the answer mapping, against the shapes
//! in Lambda's developer guide ("Invoking Lambda function URLs").

use super::*;

fn headers(pairs: &[(&'static str, &str)]) -> hyper::HeaderMap {
    let mut m = hyper::HeaderMap::new();
    for (k, v) in pairs {
        m.append(*k, v.parse().unwrap());
    }
    m
}

fn req<'a>(h: &'a hyper::HeaderMap, body: &'a [u8], query: Option<&'a str>) -> UrlRequest<'a> {
    UrlRequest {
        method: "POST",
        path: "/my/path",
        query,
        headers: h,
        body,
        source_ip: "127.0.0.1".into(),
        url_id: "abc123",
        request_id: "rid-1",
        iam: None,
        now_ms: 1_583_348_638_390,
    }
}

#[test]
fn the_event_has_lambdas_v2_shape() {
    let h = headers(&[
        ("host", "abc123.lambda-url.us-east-1.localhost:9001"),
        ("content-type", "application/json"),
        ("x-multi", "a"),
        ("x-multi", "b"),
        ("cookie", "c1=v1; c2=v2"),
        ("user-agent", "curl/8"),
    ]);
    let e = request_event(&req(&h, br#"{"k":1}"#, Some("p1=v%201&p1=v2&q")));
    assert_eq!(e["version"], "2.0");
    assert_eq!(e["routeKey"], "$default");
    assert_eq!(e["rawPath"], "/my/path");
    assert_eq!(e["rawQueryString"], "p1=v%201&p1=v2&q");
    assert_eq!(e["cookies"], json!(["c1=v1", "c2=v2"]));
    assert_eq!(e["headers"]["x-multi"], "a,b");
    assert!(e["headers"].get("cookie").is_none());
    assert_eq!(e["queryStringParameters"], json!({"p1": "v 1,v2", "q": ""}));
    assert_eq!(e["body"], r#"{"k":1}"#);
    assert_eq!(e["isBase64Encoded"], false);
    let c = &e["requestContext"];
    assert_eq!(c["accountId"], "anonymous");
    assert_eq!(c["apiId"], "abc123");
    assert_eq!(c["domainName"], "abc123.lambda-url.us-east-1.localhost");
    assert_eq!(c["domainPrefix"], "abc123");
    assert_eq!(c["http"]["method"], "POST");
    assert_eq!(c["http"]["path"], "/my/path");
    assert_eq!(c["http"]["sourceIp"], "127.0.0.1");
    assert_eq!(c["http"]["userAgent"], "curl/8");
    assert_eq!(c["requestId"], "rid-1");
    assert_eq!(c["time"], "04/Mar/2020:19:03:58 +0000");
    assert_eq!(c["timeEpoch"], 1_583_348_638_390u64);
    assert!(c.get("authorizer").is_none());
}

#[test]
fn binary_bodies_are_base64_and_iam_callers_are_named() {
    let h = headers(&[("content-type", "application/octet-stream")]);
    let mut r = req(&h, &[0, 159, 146, 150], None);
    r.iam = Some(Iam {
        access_key: "AKIDEXAMPLE",
        account: "111122223333",
    });
    let e = request_event(&r);
    assert_eq!(e["isBase64Encoded"], true);
    assert_eq!(e["body"], "AJ+Slg==");
    assert!(e.get("queryStringParameters").is_none());
    assert_eq!(e["requestContext"]["accountId"], "111122223333");
    let iam = &e["requestContext"]["authorizer"]["iam"];
    assert_eq!(iam["accessKey"], "AKIDEXAMPLE");
    assert_eq!(iam["accountId"], "111122223333");
}

#[test]
fn a_response_with_a_status_code_is_the_http_response() {
    let p = json!({
        "statusCode": 201,
        "headers": {"X-Custom": "yes", "Content-Type": "text/plain"},
        "cookies": ["a=1", "b=2; Secure"],
        "body": "hello",
    });
    let a = Answer::from_payload(p.to_string().as_bytes());
    assert_eq!(a.status, 201);
    assert_eq!(a.body, b"hello");
    assert!(a.headers.contains(&("x-custom".into(), "yes".into())));
    assert!(a
        .headers
        .contains(&("content-type".into(), "text/plain".into())));
    let cookies: Vec<_> = a
        .headers
        .iter()
        .filter(|(k, _)| k == "set-cookie")
        .collect();
    assert_eq!(cookies.len(), 2);
    let b = json!({"statusCode": 200, "body": "AAEC", "isBase64Encoded": true});
    assert_eq!(
        Answer::from_payload(b.to_string().as_bytes()).body,
        vec![0, 1, 2]
    );
}

#[test]
fn other_answers_are_json_bodies_and_nonsense_is_a_502() {
    let a = Answer::from_payload(br#"{"message":"hi"}"#);
    assert_eq!(a.status, 200);
    assert_eq!(a.body, br#"{"message":"hi"}"#);
    assert_eq!(
        a.headers,
        vec![("content-type".into(), "application/json".into())]
    );
    assert_eq!(Answer::from_payload(br#"{"statusCode":"x"}"#).status, 502);
    assert_eq!(Answer::from_payload(br#"{"statusCode":999}"#).status, 502);
    let bad64 = json!({"statusCode": 200, "body": "***", "isBase64Encoded": true});
    assert_eq!(
        Answer::from_payload(bad64.to_string().as_bytes()).status,
        502
    );
}

#[test]
fn a_streamed_answer_splits_its_prelude_from_the_body() {
    let mut out = br#"{"statusCode":202,"headers":{"x-s":"1"}}"#.to_vec();
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(b"raw body \x00 bytes");
    let a = Answer::from_stream(&out);
    assert_eq!(a.status, 202);
    assert_eq!(a.body, b"raw body \x00 bytes");
    assert!(a.headers.contains(&("x-s".into(), "1".into())));
    let plain = Answer::from_stream(b"just bytes");
    assert_eq!(plain.status, 200);
    assert_eq!(plain.body, b"just bytes");
}
