//! What an audit record says about a request: the AWS operation name, the
//! resource it names, and its parameters with code and secrets replaced by
//! a placeholder (ZIP contents, environment variable values, anything whose
//! name says secret/password/token/credential), long strings shortened.

use serde_json::{Map, Value};

use super::Route;

/// Longest string value kept whole (descriptions and such); longer ones
/// are cut, so one call cannot grow the trail by megabytes.
const MAX_STRING: usize = 512;

/// Parameter names whose values are code or blobs.
const CODE_KEYS: &[&str] = &["ZipFile"];

/// Name fragments (lower case) that mark a value as secret.
const SECRET_WORDS: &[&str] = &[
    "secret",
    "password",
    "passwd",
    "token",
    "credential",
    "privatekey",
    "signature",
];

/// The operation name and the resource (function or layer) of a route.
pub fn operation(route: &Route) -> (String, Option<String>) {
    use Route as R;
    let (name, res): (&str, Option<&String>) = match route {
        R::ListFunctions => ("ListFunctions", None),
        R::CreateFunction => ("CreateFunction", None),
        R::GetFunction(f) => ("GetFunction", Some(f)),
        R::DeleteFunction(f) => ("DeleteFunction", Some(f)),
        R::GetConfiguration(f) => ("GetFunctionConfiguration", Some(f)),
        R::UpdateConfiguration(f) => ("UpdateFunctionConfiguration", Some(f)),
        R::UpdateCode(f) => ("UpdateFunctionCode", Some(f)),
        R::ListVersions(f) => ("ListVersionsByFunction", Some(f)),
        R::PublishVersion(f) => ("PublishVersion", Some(f)),
        R::ListAliases(f) => ("ListAliases", Some(f)),
        R::CreateAlias(f) | R::GetAlias(f, _) | R::UpdateAlias(f, _) | R::DeleteAlias(f, _) => {
            (alias_op(route), Some(f))
        }
        R::Invoke(f, super::invoke::Answer::Whole) => ("Invoke", Some(f)),
        R::Invoke(f, super::invoke::Answer::Stream) => ("InvokeWithResponseStream", Some(f)),
        R::PutConcurrency(f) => ("PutFunctionConcurrency", Some(f)),
        R::GetConcurrency(f) => ("GetFunctionConcurrency", Some(f)),
        R::DeleteConcurrency(f) => ("DeleteFunctionConcurrency", Some(f)),
        R::PutProvisioned(f) => ("PutProvisionedConcurrencyConfig", Some(f)),
        R::GetProvisioned(f) => ("GetProvisionedConcurrencyConfig", Some(f)),
        R::DeleteProvisioned(f) => ("DeleteProvisionedConcurrencyConfig", Some(f)),
        R::PublishLayer(l) => ("PublishLayerVersion", Some(l)),
        R::ListLayerVersions(l) => ("ListLayerVersions", Some(l)),
        R::GetLayerVersion(l, _) => ("GetLayerVersion", Some(l)),
        R::DeleteLayerVersion(l, _) => ("DeleteLayerVersion", Some(l)),
        R::ListEnvironments => ("ListEnvironments", None),
        R::GetCode(f, _) => ("GetFunctionCode", Some(f)),
        R::Events(e) => super::events::operation(e),
        // Routes added later are named after their variant (the resource
        // is still in the recorded path).
        #[allow(unreachable_patterns)]
        _ => return (variant_name(route), None),
    };
    (name.to_string(), res.cloned())
}

fn alias_op(route: &Route) -> &'static str {
    match route {
        Route::CreateAlias(_) => "CreateAlias",
        Route::GetAlias(..) => "GetAlias",
        Route::UpdateAlias(..) => "UpdateAlias",
        _ => "DeleteAlias",
    }
}

/// `Foo` for `Route::Foo(..)`, from its Debug form.
fn variant_name(route: &Route) -> String {
    let d = format!("{route:?}");
    d.split(['(', ' ', '{'])
        .next()
        .unwrap_or("Unknown")
        .to_string()
}

/// Whether a parameter name marks its value as secret.
fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace(['_', '-'], "");
    SECRET_WORDS.iter().any(|w| k.contains(w))
}

/// Code keeps its size (useful, not secret); a secret keeps nothing, not
/// even its length.
fn placeholder(v: &Value, code: bool) -> Value {
    match v {
        Value::Null => Value::Null,
        Value::String(s) if code => Value::String(format!("(redacted, {} bytes)", s.len())),
        _ => Value::String("(redacted)".into()),
    }
}

/// The longest prefix of `s` of at most `max` bytes.
pub fn cut(s: &str, max: usize) -> &str {
    let mut at = max.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    &s[..at]
}

/// Redacts a JSON request value in place.
pub fn redact(v: &mut Value) {
    match v {
        Value::Object(map) => redact_map(map),
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(s) if s.len() > MAX_STRING => {
            *s = format!("{}… ({} bytes)", cut(s, MAX_STRING), s.len());
        }
        _ => {}
    }
}

fn redact_map(map: &mut Map<String, Value>) {
    for (k, v) in map.iter_mut() {
        if CODE_KEYS.contains(&k.as_str()) {
            *v = placeholder(v, true);
        } else if is_secret(k) {
            *v = placeholder(v, false);
        } else if k == "Variables" {
            // Environment variables: names are kept, every value hidden.
            if let Value::Object(vars) = v {
                vars.values_mut().for_each(|x| *x = placeholder(x, false));
            } else {
                *v = placeholder(v, false);
            }
        } else {
            redact(v);
        }
    }
}

/// The recorded parameters of a request: `{"query": …, "body": …}`, each
/// redacted; a body that is not JSON is described by its size only.
pub fn params(query: &super::Query, body: &[u8]) -> Value {
    let mut out = Map::new();
    if !query.is_empty() {
        let mut q: Map<String, Value> = query
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        redact_map(&mut q);
        let mut sorted: Vec<_> = q.into_iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        out.insert("query".into(), Value::Object(sorted.into_iter().collect()));
    }
    if !body.is_empty() {
        let b = match serde_json::from_slice::<Value>(body) {
            Ok(mut v) => {
                redact(&mut v);
                v
            }
            Err(_) => Value::String(format!("(not JSON, {} bytes)", body.len())),
        };
        out.insert("body".into(), b);
    }
    Value::Object(out)
}

/// The access key id an `Authorization: AWS4-HMAC-SHA256 Credential=KEY/…`
/// header claims (recorded for refused requests; never the signature).
pub fn claimed_key(authorization: Option<&str>) -> Option<String> {
    let cred = authorization?.split("Credential=").nth(1)?;
    let key = cred.split('/').next()?.trim();
    (!key.is_empty() && key.len() <= 128 && key.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| key.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn redacts_code_env_values_and_secrets() {
        let body = json!({
            "FunctionName": "f", "Code": {"ZipFile": "UEsDBAoAAAAAAA=="},
            "Environment": {"Variables": {"DB_PASSWORD": "hunter2", "MODE": "prod"}},
            "Layers": ["arn:x"], "SecretAccessKey": "abc", "Description": "d".repeat(2000),
        });
        let q: crate::api::Query = [("Qualifier".to_string(), "3".to_string())]
            .into_iter()
            .collect();
        let p = params(&q, body.to_string().as_bytes());
        let s = p.to_string();
        for secret in ["UEsDBAoAAAAAAA", "hunter2", "prod", "abc\""] {
            assert!(!s.contains(secret), "{secret} leaked: {s}");
        }
        assert!(p["body"]["Environment"]["Variables"]["MODE"].is_string());
        assert_eq!(p["body"]["FunctionName"], "f");
        assert_eq!(p["query"]["Qualifier"], "3");
        assert!(p["body"]["Description"].as_str().unwrap().len() < 600);
        assert_eq!(
            params(&Default::default(), b"\0asm")["body"],
            "(not JSON, 4 bytes)"
        );
        assert_eq!(
            claimed_key(Some("AWS4-HMAC-SHA256 Credential=AKID1/20240101/us-east-1/lambda/aws4_request, SignedHeaders=host, Signature=ff")),
            Some("AKID1".into())
        );
    }
}
