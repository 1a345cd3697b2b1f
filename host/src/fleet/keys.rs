//! JetStream KV keys of ember's records. KV keys allow `[-/_=.a-zA-Z0-9]`
//! and use `.` as a token separator; stored names may hold `:` (an account
//! scope), so every name is escaped (`=XX` for any byte outside
//! `[A-Za-z0-9_-]`) and joined with `.`.

/// `name` with every byte outside `[A-Za-z0-9_-]` as `=XX`.
pub fn enc(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

/// The key of `child` under `parent`.
pub fn child(parent: &str, child: &str) -> String {
    format!("{}.{}", enc(parent), enc(child))
}

/// The key of version `v` under `parent` (zero-padded: key order is
/// version order).
pub fn version(parent: &str, v: u64) -> String {
    format!("{}.{v:012}", enc(parent))
}

/// The prefix every child key of `parent` starts with.
pub fn children_of(parent: &str) -> String {
    format!("{}.", enc(parent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_escape_to_valid_distinct_keys() {
        assert_eq!(enc("hello-fn_1"), "hello-fn_1");
        assert_eq!(enc("123456789012:f"), "123456789012=3Af");
        assert_eq!(enc("a.b"), "a=2Eb");
        assert_ne!(enc("a:b"), enc("a=3Ab"));
        assert_eq!(version("f", 7), "f.000000000007");
        assert_eq!(child("f", "$LATEST"), "f.=24LATEST");
        assert!(child("f", "prod").starts_with(&children_of("f")));
        assert!(!version("fx", 1).starts_with(&children_of("f")));
    }
}
