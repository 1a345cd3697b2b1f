//! Small helpers shared by emberd's modules: Lambda-style timestamps, random
//! ids (request ids, revision ids) and ARNs.

use std::time::{SystemTime, UNIX_EPOCH};

/// The region and account that appear in every ARN emberd hands out.
pub const REGION: &str = "us-east-1";
/// The default account: the first access key's, and the owner of every
/// record stored before emberd had tenants.
pub const ACCOUNT: &str = "000000000000";

/// Now, in Unix milliseconds (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Current time as Lambda prints `LastModified`: `2024-05-01T12:00:00.000+0000`.
pub fn now_lambda() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_lambda_time(d.as_secs(), d.subsec_millis())
}

/// Formats Unix seconds + milliseconds as Lambda's timestamp shape (UTC).
pub fn format_lambda_time(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}+0000",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

pub(crate) use ember_abi::civil::civil_from_days;

/// A random UUID (version 4) string, used for request and revision ids.
pub fn uuid4() -> String {
    let mut b = [0u8; 16];
    // getrandom only fails if the OS has no entropy source at all; fall back
    // to the clock so an id is still unique enough for a revision id.
    if getrandom::getrandom(&mut b).is_err() {
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b = n.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The name a function or layer of `account` is stored (and its environments
/// keyed) under: the default account's bare, as before tenants; another
/// account's as `ACCOUNT:NAME`. `:` is in no valid name, so two accounts'
/// names can never meet.
pub fn scoped_name(account: &str, name: &str) -> String {
    if account == ACCOUNT {
        name.to_string()
    } else {
        format!("{account}:{name}")
    }
}

/// A stored name → (account, name as the client sees it).
pub fn split_scoped(scoped: &str) -> (&str, &str) {
    scoped.split_once(':').unwrap_or((ACCOUNT, scoped))
}

/// `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]` of a stored name.
pub fn function_arn(scoped: &str, qualifier: Option<&str>) -> String {
    let (account, name) = split_scoped(scoped);
    match qualifier {
        Some(q) => format!("arn:aws:lambda:{REGION}:{account}:function:{name}:{q}"),
        None => format!("arn:aws:lambda:{REGION}:{account}:function:{name}"),
    }
}

/// `arn:aws:lambda:REGION:ACCOUNT:layer:NAME[:VERSION]` of a stored name.
pub fn layer_arn(scoped: &str, version: Option<u64>) -> String {
    let (account, name) = split_scoped(scoped);
    match version {
        Some(v) => format!("arn:aws:lambda:{REGION}:{account}:layer:{name}:{v}"),
        None => format!("arn:aws:lambda:{REGION}:{account}:layer:{name}"),
    }
}

/// The account a full or partial function ARN names, if it names one.
pub fn arn_account(input: &str) -> Option<&str> {
    let parts: Vec<&str> = input.split(':').collect();
    match parts.as_slice() {
        ["arn", _, "lambda", _, a, "function", ..] => Some(a),
        [a, "function", ..] => Some(a),
        _ => None,
    }
}

/// Accepts a function name, a full ARN or a partial ARN (`ACCOUNT:function:NAME`)
/// and returns the bare name and the qualifier embedded in it, if any.
pub fn split_function_name(input: &str) -> (String, Option<String>) {
    let parts: Vec<&str> = input.split(':').collect();
    match parts.as_slice() {
        ["arn", _, "lambda", _, _, "function", name] => (name.to_string(), None),
        ["arn", _, "lambda", _, _, "function", name, q] => (name.to_string(), Some(q.to_string())),
        [_, "function", name] => (name.to_string(), None),
        [_, "function", name, q] => (name.to_string(), Some(q.to_string())),
        [name, q] => (name.to_string(), Some(q.to_string())),
        _ => (input.to_string(), None),
    }
}

/// Function, alias and layer names: `[A-Za-z0-9_-]{1,64}`. This is also what
/// keeps names from ever reaching a filesystem path or a store key separator.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// An error and its sources on one line ("a: b: c"), for logs: the one
/// format every ember binary prints (`ember_abi::error`).
pub use ember_abi::error::chain as error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_dates() {
        assert_eq!(format_lambda_time(0, 0), "1970-01-01T00:00:00.000+0000");
        assert_eq!(
            format_lambda_time(951_782_400, 5),
            "2000-02-29T00:00:00.005+0000"
        );
        assert_eq!(
            format_lambda_time(1_700_000_000, 123),
            "2023-11-14T22:13:20.123+0000"
        );
    }

    #[test]
    fn uuids_are_v4_and_distinct() {
        let (a, b) = (uuid4(), uuid4());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn splits_arns_and_validates_names() {
        assert_eq!(split_function_name("f"), ("f".into(), None));
        assert_eq!(
            split_function_name(&function_arn("f", Some("3"))),
            ("f".into(), Some("3".into()))
        );
        assert_eq!(
            split_function_name("000000000000:function:f"),
            ("f".into(), None)
        );
        assert!(valid_name("my-func_1"));
        assert!(!valid_name("../etc"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"x".repeat(65)));
    }
}

/// Called with a child's pid the moment it is spawned, before it is ready:
/// how the pool and the spare stock learn the pid of an environment that is
/// still starting (so shutdown and crash cleanup can kill it). Empty by
/// default.
#[derive(Clone, Default)]
pub struct OnSpawn(Option<std::sync::Arc<dyn Fn(u32) + Send + Sync>>);

impl OnSpawn {
    pub fn new(f: impl Fn(u32) + Send + Sync + 'static) -> Self {
        Self(Some(std::sync::Arc::new(f)))
    }

    pub fn call(&self, pid: u32) {
        if let Some(f) = &self.0 {
            f(pid);
        }
    }
}

impl std::fmt::Debug for OnSpawn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "OnSpawn(set)"
        } else {
            "OnSpawn(none)"
        })
    }
}
