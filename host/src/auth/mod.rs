//! Who is calling, and whether to believe it: the [`Caller`] every request
//! carries from the front door (`server.rs`) to its handler, and the
//! [`Authenticator`] that verifies a request's AWS Signature Version 4
//! against the keys in the credentials file ([`creds`]) before any handler
//! runs. Verification is two steps so that Invoke can verify the headers,
//! start its environment and only then read a body whose hash was signed.

pub mod bearer;
pub mod creds;
pub mod replay;
pub mod sigv4;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use creds::{AccessKey, KeyRing};
use sigv4::{Authorization, RequestParts};

/// How far a request's `X-Amz-Date` may be from emberd's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);

/// The identity behind one API request.
///
/// `source` is the peer address of the accepted connection. The key id and
/// account are `None` only for requests exempt from authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The access key id that signed the request.
    pub access_key_id: Option<String>,
    /// The 12-digit account the key belongs to.
    pub account: Option<String>,
    /// The connection's peer address.
    pub source: SocketAddr,
    /// Signed with an operator key: host-wide views (`/metrics`,
    /// `/ember/*` listings) show every account, not only the caller's.
    pub operator: bool,
}

impl Caller {
    /// A caller nothing is known about yet but its address.
    pub fn anonymous(source: SocketAddr) -> Self {
        Caller {
            access_key_id: None,
            account: None,
            source,
            operator: false,
        }
    }

    /// The account whose resources this caller sees (the default account
    /// for an unauthenticated, exempt caller).
    pub fn account(&self) -> &str {
        self.account.as_deref().unwrap_or(creds::DEFAULT_ACCOUNT)
    }

    /// Whether a host-wide view shows this caller what belongs to `account`
    /// (its own; everything for an operator).
    pub fn sees(&self, account: &str) -> bool {
        self.operator || self.account() == account
    }
}

/// Why a request was refused; every one is a 403 in the AWS error shape.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("Missing Authentication Token")]
    Missing,
    #[error("{0}")]
    Incomplete(String),
    #[error("The security token included in the request is invalid.")]
    UnknownKey,
    #[error("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")]
    BadSignature,
    #[error("{0}")]
    Invalid(String),
}

impl AuthError {
    /// The exception name the AWS SDKs map this to.
    pub fn error_type(&self) -> &'static str {
        match self {
            AuthError::Missing => "MissingAuthenticationTokenException",
            AuthError::Incomplete(_) => "IncompleteSignatureException",
            AuthError::UnknownKey => "UnrecognizedClientException",
            AuthError::BadSignature | AuthError::Invalid(_) => "InvalidSignatureException",
        }
    }
}

/// A request whose headers passed every check but the signature itself,
/// which needs the payload hash.
pub struct Unverified {
    key: AccessKey,
    auth: Authorization,
    amz_date: String,
    /// The `x-amz-content-sha256` header, if the client sent one.
    pub declared_sha256: Option<String>,
}

/// Verifies requests against the credentials file.
pub struct Authenticator {
    keys: KeyRing,
    /// Serve `GET /metrics` without a signature to loopback peers.
    pub metrics_open_on_loopback: bool,
    /// Serve `GET /metrics` to a client presenting this bearer token.
    pub metrics_token: Option<bearer::MetricsToken>,
    /// Refuse a second request with an already accepted signature.
    pub replay: Option<replay::ReplayCache>,
}

/// `YYYYMMDDTHHMMSSZ` → Unix seconds.
fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant), the inverse of util's civil_from_days.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Unix seconds → `YYYYMMDDTHHMMSSZ`.
pub fn format_amz_date(secs: i64) -> String {
    let t = crate::util::format_lambda_time(secs.max(0) as u64, 0);
    // `2026-11-27T10:30:45.000+0000` → `20261127T103045Z`.
    let digits: String = t[..19].chars().filter(|c| c.is_ascii_digit()).collect();
    format!("{}T{}Z", &digits[..8], &digits[8..14])
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Authenticator {
    pub fn new(credentials_file: PathBuf) -> Self {
        Authenticator {
            keys: KeyRing::new(credentials_file),
            metrics_open_on_loopback: false,
            metrics_token: None,
            replay: None,
        }
    }

    pub fn credentials_file(&self) -> &std::path::Path {
        self.keys.path()
    }

    /// Whether this request may skip the signature: `GET /metrics` from
    /// loopback when the operator opened it, or with the metrics bearer
    /// token.
    pub fn exempt(
        &self,
        method: &hyper::Method,
        path: &str,
        source: &SocketAddr,
        headers: &hyper::HeaderMap,
    ) -> bool {
        if method != hyper::Method::GET || path != "/metrics" {
            return false;
        }
        let token = || {
            let header = headers.get("authorization").map(|v| v.as_bytes());
            self.metrics_token
                .as_ref()
                .zip(header)
                .is_some_and(|(t, h)| t.accepts(h))
        };
        (self.metrics_open_on_loopback && source.ip().is_loopback()) || token()
    }

    /// Step one: the `Authorization` header parsed, the key known, the scope
    /// and the clock checked. Nothing of the body is needed yet.
    pub fn begin(&self, headers: &hyper::HeaderMap) -> Result<Unverified, AuthError> {
        self.begin_at(headers, now_secs())
    }

    fn begin_at(&self, headers: &hyper::HeaderMap, now: i64) -> Result<Unverified, AuthError> {
        let value = headers.get("authorization").ok_or(AuthError::Missing)?;
        let value = value
            .to_str()
            .map_err(|_| AuthError::Incomplete("The Authorization header is not ASCII".into()))?;
        let auth =
            sigv4::parse_authorization(value).map_err(|e| AuthError::Incomplete(e.to_string()))?;
        let amz_date = headers
            .get("x-amz-date")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                AuthError::Incomplete(
                    "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
                        .into(),
                )
            })?
            .to_string();
        if !auth.signed_headers.iter().any(|h| h == "x-amz-date") {
            return Err(AuthError::Invalid(
                "'X-Amz-Date' must be a signed header".into(),
            ));
        }
        // An unsigned x-amz-* header could change what a signed request
        // does (X-Amz-Invocation-Type turned a sync invoke into an Event).
        let mut unsigned: Vec<&str> = headers
            .keys()
            .map(|k| k.as_str())
            .filter(|k| k.starts_with("x-amz-") && !auth.signed_headers.iter().any(|h| h == k))
            .collect();
        if !unsigned.is_empty() {
            unsigned.dedup();
            return Err(AuthError::Invalid(format!(
                "There were headers present in the request which were not signed: {}",
                unsigned.join(", ")
            )));
        }
        let key = self
            .keys
            .lookup(&auth.access_key_id)
            .ok_or(AuthError::UnknownKey)?;
        if auth.service != sigv4::SERVICE {
            return Err(AuthError::Invalid(format!(
                "Credential should be scoped to correct service: '{}'. ",
                sigv4::SERVICE
            )));
        }
        let signed_at = parse_amz_date(&amz_date)
            .ok_or_else(|| AuthError::Invalid(format!("Invalid X-Amz-Date {amz_date:?}")))?;
        if amz_date.get(..8) != Some(auth.date.as_str()) {
            return Err(AuthError::Invalid(format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{amz_date}'.",
                auth.date,
                amz_date.get(..8).unwrap_or(""),
            )));
        }
        let skew = MAX_SKEW.as_secs() as i64;
        if signed_at < now - skew {
            return Err(AuthError::Invalid(format!(
                "Signature expired: {amz_date} is now earlier than {} ({} - 5 min.)",
                format_amz_date(now - skew),
                format_amz_date(now)
            )));
        }
        if signed_at > now + skew {
            return Err(AuthError::Invalid(format!(
                "Signature not yet current: {amz_date} is still later than {} ({} + 5 min.)",
                format_amz_date(now + skew),
                format_amz_date(now)
            )));
        }
        let declared_sha256 = headers
            .get("x-amz-content-sha256")
            .map(|v| v.to_str().unwrap_or("").to_string());
        match declared_sha256.as_deref() {
            None => {}
            Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {}
            Some(sigv4::UNSIGNED_PAYLOAD) => {
                return Err(AuthError::Invalid(
                    "UNSIGNED-PAYLOAD is not accepted: emberd requires the payload to be signed"
                        .into(),
                ))
            }
            Some(_) => {
                return Err(AuthError::Invalid(
                    "x-amz-content-sha256 must be the hex SHA-256 of the payload".into(),
                ))
            }
        }
        Ok(Unverified {
            key,
            auth,
            amz_date,
            declared_sha256,
        })
    }

    /// Step two: the signature over the canonical request, with
    /// `payload_sha256` the hex hash of the body (the declared one, which
    /// the caller must then check against the body it reads).
    pub fn finish(
        &self,
        p: Unverified,
        req: &RequestParts<'_>,
        payload_sha256: &str,
        source: SocketAddr,
    ) -> Result<Caller, AuthError> {
        let canonical = sigv4::canonical_request(req, &p.auth.signed_headers, payload_sha256);
        let sts = sigv4::string_to_sign(&p.amz_date, &p.auth.scope(), &canonical);
        let key = sigv4::signing_key(
            &p.key.secret_access_key,
            &p.auth.date,
            &p.auth.region,
            &p.auth.service,
        );
        if !sigv4::verify(&key, &sts, &p.auth.signature) {
            return Err(AuthError::BadSignature);
        }
        if let Some(cache) = &self.replay {
            // Past signed_at + skew the clock check refuses it anyway.
            let expires = parse_amz_date(&p.amz_date).unwrap_or(0) + MAX_SKEW.as_secs() as i64;
            cache
                .admit(p.auth.signature, expires, now_secs())
                .map_err(|e| AuthError::Invalid(e.to_string()))?;
        }
        Ok(Caller {
            access_key_id: Some(p.key.access_key_id),
            account: Some(p.key.account),
            source,
            operator: p.key.operator,
        })
    }
}

/// The error for a body whose hash differs from the signed `x-amz-content-sha256`.
pub fn payload_mismatch() -> AuthError {
    AuthError::Invalid(
        "The provided 'x-amz-content-sha256' header does not match what was computed.".into(),
    )
}

#[cfg(test)]
mod tests;
