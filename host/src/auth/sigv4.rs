//! AWS Signature Version 4 (`AWS4-HMAC-SHA256`), both directions: the
//! canonical request exactly as botocore builds it for non-S3 services
//! (path with dot segments removed and URI-encoded once more, sorted query,
//! signed headers with collapsed whitespace, payload hash), the string to
//! sign, the derived signing key, parsing of the `Authorization` header, and
//! signing for emberd's own clients (the `ember` CLI, tests, benchmark).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::digest::{hex, sha256_hex, unhex};

type HmacSha256 = Hmac<Sha256>;

/// The only algorithm accepted.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The service name in every credential scope.
pub const SERVICE: &str = "lambda";
/// The payload hash a client sends when it chose not to sign the body.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigV4Error {
    #[error("Authorization header requires '{0}' parameter. Authorization={1}")]
    MissingParam(&'static str, String),
    #[error("Unsupported signing algorithm {0:?}; only AWS4-HMAC-SHA256 is accepted")]
    Algorithm(String),
    #[error("Credential should be scoped to a valid region, service and date: {0}")]
    Scope(String),
    #[error("The signature must be 64 hexadecimal digits")]
    SignatureHex,
    #[error("'Host' must be a signed header")]
    HostUnsigned,
}

/// The parsed `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    /// `YYYYMMDD` from the credential scope.
    pub date: String,
    pub region: String,
    pub service: String,
    /// Lower-case header names, in the order the client listed them.
    pub signed_headers: Vec<String>,
    pub signature: [u8; 32],
}

impl Authorization {
    /// `date/region/service/aws4_request`.
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// Parses `AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request,
/// SignedHeaders=a;b, Signature=hex` (parameters in any order, spaces optional).
pub fn parse_authorization(value: &str) -> Result<Authorization, SigV4Error> {
    let value = value.trim();
    let (alg, rest) = value.split_once(' ').unwrap_or((value, ""));
    if alg != ALGORITHM {
        return Err(SigV4Error::Algorithm(alg.to_string()));
    }
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=').unwrap_or((part.trim(), ""));
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    let missing = |p| SigV4Error::MissingParam(p, value.to_string());
    let credential = credential
        .filter(|c| !c.is_empty())
        .ok_or(missing("Credential"))?;
    let signed = signed
        .filter(|s| !s.is_empty())
        .ok_or(missing("SignedHeaders"))?;
    let signature = signature
        .filter(|s| !s.is_empty())
        .ok_or(missing("Signature"))?;
    let parts: Vec<&str> = credential.split('/').collect();
    let [key, date, region, service, "aws4_request"] = parts.as_slice() else {
        return Err(SigV4Error::Scope(credential.to_string()));
    };
    let valid_date = date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit());
    if key.is_empty() || !valid_date || region.is_empty() || service.is_empty() {
        return Err(SigV4Error::Scope(credential.to_string()));
    }
    let signed_headers: Vec<String> = signed.split(';').map(str::to_ascii_lowercase).collect();
    if !signed_headers.iter().any(|h| h == "host") {
        return Err(SigV4Error::HostUnsigned);
    }
    Ok(Authorization {
        access_key_id: key.to_string(),
        date: date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers,
        signature: hex32(signature).ok_or(SigV4Error::SignatureHex)?,
    })
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    unhex(s)?.try_into().ok()
}

/// Percent-encodes every byte but the unreserved ones (and `/` when
/// `keep_slash`), upper-case hex: Python's `quote(s, safe='/~')` or
/// `quote(s, safe='-_.~')`, which is what botocore uses.
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decodes `%XX` escapes; a malformed escape is kept literally (the request
/// is then rejected by routing, or its signature simply does not match).
fn uri_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .filter(|_| b[i] == b'%')
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// RFC 3986 §5.2.4 dot-segment removal, plus the collapse of empty segments
/// AWS requires (botocore's `remove_dot_segments`).
fn remove_dot_segments(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let first = if path.starts_with('/') { "/" } else { "" };
    let last = if path.ends_with('/') && !out.is_empty() {
        "/"
    } else {
        ""
    };
    format!("{first}{}{last}", out.join("/"))
}

/// The canonical URI of a raw (already percent-encoded) request path: non-S3
/// services encode it a second time.
pub fn canonical_uri(raw_path: &str) -> String {
    uri_encode(&remove_dot_segments(raw_path), true)
}

/// The canonical query string of a raw query: each key and value decoded and
/// re-encoded with the strict unreserved set, pairs sorted by key then value.
pub fn canonical_query(raw_query: Option<&str>) -> String {
    let mut pairs: Vec<(String, String)> = raw_query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&uri_decode(k), false),
                uri_encode(&uri_decode(v), false),
            )
        })
        .collect();
    pairs.sort();
    let joined: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    joined.join("&")
}

/// Header values of one name joined by `,`, each trimmed with inner runs of
/// whitespace collapsed to one space.
fn canonical_header_value<'a>(values: impl Iterator<Item = &'a [u8]>) -> String {
    let vals: Vec<String> = values
        .map(|v| {
            String::from_utf8_lossy(v)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    vals.join(",")
}

/// The parts of a request that are signed.
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// The raw request path, as sent on the wire.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    pub headers: &'a hyper::HeaderMap,
}

/// The canonical request over `signed_headers` (lower-case names; listed in
/// sorted order as the spec requires, whatever order the client used).
pub fn canonical_request(
    req: &RequestParts<'_>,
    signed_headers: &[String],
    payload_hash: &str,
) -> String {
    let mut names: Vec<&str> = signed_headers.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    let mut headers = String::new();
    for n in &names {
        let value = canonical_header_value(req.headers.get_all(*n).iter().map(|v| v.as_bytes()));
        headers.push_str(&format!("{n}:{value}\n"));
    }
    format!(
        "{}\n{}\n{}\n{headers}\n{}\n{payload_hash}",
        req.method.to_ascii_uppercase(),
        canonical_uri(req.path),
        canonical_query(req.query),
        names.join(";"),
    )
}

/// `AWS4-HMAC-SHA256 \n amz_date \n scope \n hex(sha256(canonical))`.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    )
}

fn hmac(key: &[u8], data: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length; new_from_slice cannot fail for it.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
    m.update(data);
    m
}

/// `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes()).finalize();
    let k = hmac(&k.into_bytes(), region.as_bytes()).finalize();
    let k = hmac(&k.into_bytes(), service.as_bytes()).finalize();
    hmac(&k.into_bytes(), b"aws4_request")
        .finalize()
        .into_bytes()
        .into()
}

/// The signature of `string_to_sign` under `key`.
pub fn signature(key: &[u8; 32], string_to_sign: &str) -> [u8; 32] {
    hmac(key, string_to_sign.as_bytes())
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `provided` is the signature of `string_to_sign`, compared in
/// constant time (`Mac::verify_slice`) so timing leaks nothing about it.
pub fn verify(key: &[u8; 32], string_to_sign: &str, provided: &[u8; 32]) -> bool {
    hmac(key, string_to_sign.as_bytes())
        .verify_slice(provided)
        .is_ok()
}

/// A key pair to sign with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// Signs a request for emberd's own clients: returns the `x-amz-date` and
/// `authorization` headers to add. `headers` must already hold `host` (and
/// every other header that is to be signed); all of them are signed.
pub fn sign(
    creds: &Credentials,
    region: &str,
    amz_date: &str,
    req: &RequestParts<'_>,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let mut headers = req.headers.clone();
    if let Ok(v) = hyper::header::HeaderValue::from_str(amz_date) {
        headers.insert("x-amz-date", v);
    }
    let signed: Vec<String> = headers.keys().map(|k| k.as_str().to_string()).collect();
    let parts = RequestParts {
        headers: &headers,
        ..*req
    };
    let canonical = canonical_request(&parts, &signed, &sha256_hex(body));
    let date = amz_date.get(..8).unwrap_or(amz_date);
    let scope = format!("{date}/{region}/{SERVICE}/aws4_request");
    let key = signing_key(&creds.secret_access_key, date, region, SERVICE);
    let sig = signature(&key, &string_to_sign(amz_date, &scope, &canonical));
    let mut names: Vec<&str> = signed.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    vec![
        ("x-amz-date", amz_date.to_string()),
        (
            "authorization",
            format!(
                "{ALGORITHM} Credential={}/{scope}, SignedHeaders={}, Signature={}",
                creds.access_key_id,
                names.join(";"),
                hex(&sig)
            ),
        ),
    ]
}

#[cfg(test)]
mod tests;
