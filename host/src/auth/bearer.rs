//! The metrics bearer token (`--metrics-token-file`): a stock Prometheus
//! cannot sign SigV4, so `GET /metrics` with `Authorization: Bearer <token>`
//! is served as the operator's (host-wide) view. The token comes from a file
//! the operator owns (not readable by others), is at least 16 characters and
//! is compared in constant time.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Shortest token accepted.
const MIN_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("reading the metrics token file {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("the metrics token file {0} is readable by other users (mode {1:o}): chmod o-rwx it")]
    Exposed(PathBuf, u32),
    #[error("the metrics token in {0} must be {MIN_LEN} or more printable ASCII characters without spaces")]
    Weak(PathBuf),
}

/// The token `GET /metrics` may present instead of a signature.
pub struct MetricsToken(Vec<u8>);

impl MetricsToken {
    /// Reads and checks the token file (surrounding whitespace trimmed).
    pub fn load(path: &Path) -> Result<Self, TokenError> {
        let read = |e| TokenError::Read(path.to_path_buf(), e);
        let meta = std::fs::metadata(path).map_err(read)?;
        if meta.mode() & 0o007 != 0 {
            return Err(TokenError::Exposed(path.to_path_buf(), meta.mode() & 0o777));
        }
        let text = std::fs::read(path).map_err(read)?;
        let token = text.trim_ascii();
        if token.len() < MIN_LEN || !token.iter().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Weak(path.to_path_buf()));
        }
        Ok(Self(token.to_vec()))
    }

    /// Whether an `Authorization` header value is `Bearer <this token>`
    /// (the scheme case-insensitive, as RFC 6750 says).
    pub fn accepts(&self, header: &[u8]) -> bool {
        let Some((scheme, given)) = split_scheme(header) else {
            return false;
        };
        scheme.eq_ignore_ascii_case(b"bearer") && constant_time_eq(given, &self.0)
    }
}

fn split_scheme(header: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = header.iter().position(|&b| b == b' ')?;
    Some((&header[..at], header[at + 1..].trim_ascii()))
}

/// Compares without an early exit on the first differing byte (the length
/// is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn file(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let p = dir.join("token");
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn only_the_exact_bearer_token_is_accepted() {
        let d = tempfile::tempdir().unwrap();
        let t = MetricsToken::load(&file(d.path(), "s3cret-token-0123\n", 0o600)).unwrap();
        assert!(t.accepts(b"Bearer s3cret-token-0123"));
        assert!(t.accepts(b"bearer s3cret-token-0123"));
        assert!(!t.accepts(b"Bearer s3cret-token-012"));
        assert!(!t.accepts(b"Bearer s3cret-token-01234"));
        assert!(!t.accepts(b"Basic s3cret-token-0123"));
        assert!(!t.accepts(b"s3cret-token-0123"));
        assert!(!t.accepts(b""));
    }

    #[test]
    fn exposed_short_or_missing_token_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let exposed = MetricsToken::load(&file(d.path(), "s3cret-token-0123", 0o644));
        assert!(matches!(exposed, Err(TokenError::Exposed(_, 0o644))));
        let short = MetricsToken::load(&file(d.path(), "short", 0o600));
        assert!(matches!(short, Err(TokenError::Weak(_))));
        let spaced = MetricsToken::load(&file(d.path(), "two words in a token", 0o600));
        assert!(matches!(spaced, Err(TokenError::Weak(_))));
        let missing = MetricsToken::load(&d.path().join("none"));
        assert!(matches!(missing, Err(TokenError::Read(..))));
    }
}
