//! What a function URL call becomes and what comes back: the request as
//! Lambda's payload format 2.0 event ([`request_event`]) and the function's
//! answer as an HTTP response ([`Answer::from_payload`]), both as the
//! Lambda developer guide ("Invoking Lambda function URLs") defines them.

use base64::Engine;
use serde_json::{json, Map, Value};

/// The parts of a URL request the event is made of.
pub struct UrlRequest<'a> {
    pub method: &'a str,
    /// The path the function sees.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a hyper::HeaderMap,
    pub body: &'a [u8],
    pub source_ip: String,
    pub url_id: &'a str,
    pub request_id: &'a str,
    /// The signer of an `AWS_IAM` URL's request.
    pub iam: Option<Iam<'a>>,
    /// Unix milliseconds.
    pub now_ms: u64,
}

/// The `requestContext.authorizer.iam` facts of a signed call.
pub struct Iam<'a> {
    pub access_key: &'a str,
    pub account: &'a str,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `07/Dec/2026:18:03:58 +0000`, the event's `requestContext.time`.
fn clf_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = crate::util::civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let month = MONTHS.get((m as usize).saturating_sub(1)).unwrap_or(&"Jan");
    format!(
        "{d:02}/{month}/{y}:{:02}:{:02}:{:02} +0000",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Whether a body of this content type reaches the function as text
/// (otherwise base64, `isBase64Encoded: true`).
fn is_text(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return false;
    };
    let ct = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    ct.starts_with("text/")
        || ct == "application/json"
        || ct == "application/javascript"
        || ct == "application/xml"
        || ct.ends_with("+json")
        || ct.ends_with("+xml")
}

/// A query string's key or value as the event carries it: `+` is a space,
/// a malformed escape stays as written.
fn query_part(s: &str) -> String {
    crate::pct::lenient(&s.replace('+', " "))
}

/// Adds `value` under `key`, comma-joined to a value already there (how
/// the 2.0 event carries repeated headers and query parameters).
fn join(map: &mut Map<String, Value>, key: String, value: &str) {
    match map.get_mut(&key) {
        Some(Value::String(prev)) => {
            prev.push(',');
            prev.push_str(value);
        }
        _ => {
            map.insert(key, Value::from(value));
        }
    }
}

/// The payload format 2.0 event of `r`.
pub fn request_event(r: &UrlRequest<'_>) -> Value {
    let mut headers = Map::new();
    let mut cookies = Vec::new();
    for (name, value) in r.headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == hyper::header::COOKIE {
            cookies.extend(
                v.split(';')
                    .map(|c| Value::from(c.trim()))
                    .filter(|c| c != ""),
            );
            continue;
        }
        join(&mut headers, name.as_str().to_string(), &v);
    }
    let mut params = Map::new();
    for pair in r.query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (query_part(k), query_part(v));
        join(&mut params, k, &v);
    }
    let host = r
        .headers
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let domain = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let user_agent = r
        .headers
        .get(hyper::header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let mut context = json!({
        "accountId": r.iam.as_ref().map_or("anonymous", |i| i.account),
        "apiId": r.url_id,
        "domainName": domain,
        "domainPrefix": r.url_id,
        "http": {
            "method": r.method,
            "path": r.path,
            "protocol": "HTTP/1.1",
            "sourceIp": r.source_ip,
            "userAgent": user_agent,
        },
        "requestId": r.request_id,
        "routeKey": "$default",
        "stage": "$default",
        "time": clf_time(r.now_ms),
        "timeEpoch": r.now_ms,
    });
    if let Some(iam) = &r.iam {
        context["authorizer"] = json!({ "iam": {
            "accessKey": iam.access_key,
            "accountId": iam.account,
            "callerId": iam.account,
            "cognitoIdentity": null,
            "principalOrgId": null,
            "userArn": format!("arn:aws:iam::{}:root", iam.account),
            "userId": iam.account,
        }});
    }
    let mut event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": r.path,
        "rawQueryString": r.query.unwrap_or(""),
        "headers": headers,
        "requestContext": context,
        "isBase64Encoded": false,
    });
    if !cookies.is_empty() {
        event["cookies"] = Value::Array(cookies);
    }
    if !params.is_empty() {
        event["queryStringParameters"] = Value::Object(params);
    }
    if !r.body.is_empty() {
        let ct = r
            .headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        match std::str::from_utf8(r.body) {
            Ok(text) if is_text(ct) => event["body"] = Value::from(text),
            _ => {
                event["body"] =
                    Value::from(base64::engine::general_purpose::STANDARD.encode(r.body));
                event["isBase64Encoded"] = Value::from(true);
            }
        }
    }
    event
}

/// The HTTP answer a function's response becomes.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The 8 NUL bytes a streaming function writes between its HTTP prelude
/// (status, headers, cookies as JSON) and the body.
const PRELUDE_END: [u8; 8] = [0; 8];

impl Answer {
    /// A buffered function's response: an object with `statusCode` is the
    /// response (`headers`, `cookies`, `body`, `isBase64Encoded`); any other
    /// answer is a 200 `application/json` body as it came.
    pub fn from_payload(payload: &[u8]) -> Answer {
        let parsed: Option<Map<String, Value>> = serde_json::from_slice(payload).ok();
        let Some(obj) = parsed.filter(|o| o.contains_key("statusCode")) else {
            return Answer::json(200, payload.to_vec());
        };
        let Some(status) = obj
            .get("statusCode")
            .and_then(Value::as_u64)
            .filter(|s| (100..=599).contains(s))
        else {
            return Answer::bad_gateway();
        };
        let mut headers = Vec::new();
        if let Some(Value::Object(h)) = obj.get("headers") {
            for (k, v) in h {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                headers.push((k.to_ascii_lowercase(), v));
            }
        }
        if let Some(Value::Array(c)) = obj.get("cookies") {
            for cookie in c.iter().filter_map(Value::as_str) {
                headers.push(("set-cookie".into(), cookie.to_string()));
            }
        }
        if !headers.iter().any(|(k, _)| k == "content-type") {
            headers.push(("content-type".into(), "application/json".into()));
        }
        let body = match obj.get("body") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) if obj.get("isBase64Encoded") == Some(&Value::Bool(true)) => {
                match base64::engine::general_purpose::STANDARD.decode(s) {
                    Ok(b) => b,
                    Err(_) => return Answer::bad_gateway(),
                }
            }
            Some(Value::String(s)) => s.clone().into_bytes(),
            Some(other) => other.to_string().into_bytes(),
        };
        Answer {
            status: status as u16,
            headers,
            body,
        }
    }

    /// A `RESPONSE_STREAM` function's output: the HTTP prelude, 8 NULs,
    /// then the body; without a prelude, the whole output is a 200 body.
    pub fn from_stream(output: &[u8]) -> Answer {
        let split = output
            .windows(PRELUDE_END.len())
            .position(|w| w == PRELUDE_END);
        let prelude = split.and_then(|at| {
            serde_json::from_slice::<Map<String, Value>>(&output[..at])
                .ok()
                .map(|p| (p, &output[at + PRELUDE_END.len()..]))
        });
        let Some((mut meta, body)) = prelude else {
            let mut a = Answer::json(200, output.to_vec());
            a.headers = vec![("content-type".into(), "application/octet-stream".into())];
            return a;
        };
        meta.remove("body");
        meta.remove("isBase64Encoded");
        meta.entry("statusCode").or_insert(Value::from(200));
        let mut a = Answer::from_payload(Value::Object(meta).to_string().as_bytes());
        a.body = body.to_vec();
        a
    }

    fn json(status: u16, body: Vec<u8>) -> Answer {
        Answer {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        }
    }

    /// What a caller gets when the function failed or answered nonsense.
    pub fn bad_gateway() -> Answer {
        Answer::message(502, "Internal Server Error")
    }

    /// Lambda's `{"Message": …}` error body.
    pub fn message(status: u16, message: &str) -> Answer {
        Answer::json(
            status,
            json!({ "Message": message }).to_string().into_bytes(),
        )
    }
}

#[cfg(test)]
mod tests;
