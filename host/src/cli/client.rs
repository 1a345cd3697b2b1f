//! A minimal HTTP/1.1 client for the `ember` CLI and the benchmark: one
//! keep-alive connection to emberd, requests sent one after another, each
//! signed with SigV4 when the connection has credentials.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::auth::format_amz_date;
use crate::auth::sigv4::{sign, Credentials, RequestParts};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("endpoint {0:?} must look like http://HOST:PORT or https://HOST:PORT")]
    Endpoint(String),
    #[error("TLS to emberd")]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot connect to emberd at {0}")]
    Connect(String, #[source] std::io::Error),
    #[error("HTTP exchange with emberd failed")]
    Http(#[from] hyper::Error),
    #[error("building the request")]
    Request(#[from] hyper::http::Error),
    #[error("signing the request")]
    Sign(#[from] hyper::header::InvalidHeaderValue),
}

pub struct Response {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers.get(k).and_then(|v| v.to_str().ok())
    }
}

pub struct Conn {
    host: String,
    sender: SendRequest<Full<Bytes>>,
    creds: Option<Credentials>,
}

/// The key every new [`Conn`] signs with unless told otherwise (the `ember`
/// CLI sets it once from its flags, environment or credentials file).
static DEFAULT_CREDENTIALS: std::sync::OnceLock<Credentials> = std::sync::OnceLock::new();

/// Sets the process's default signing key (first call wins).
pub fn set_default_credentials(creds: Option<Credentials>) {
    if let Some(c) = creds {
        let _ = DEFAULT_CREDENTIALS.set(c);
    }
}

/// The region emberd's own clients put in their credential scope.
pub const REGION: &str = crate::util::REGION;

/// The CA bundle `https://` endpoints are checked against (the `ember` CLI
/// sets it from `--ca-cert`; default [`crate::tls::SYSTEM_CA_BUNDLE`]).
static CA_BUNDLE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Sets the process's CA bundle for `https://` endpoints (first call wins).
pub fn set_ca_bundle(path: Option<std::path::PathBuf>) {
    if let Some(p) = path {
        let _ = CA_BUNDLE.set(p);
    }
}

/// `http[s]://host:port[/]` → (TLS?, `host:port`).
pub fn authority(endpoint: &str) -> Result<(bool, String), ClientError> {
    let (tls, a) = match endpoint.strip_prefix("https://") {
        Some(a) => (true, a),
        None => (
            false,
            endpoint
                .strip_prefix("http://")
                .ok_or_else(|| ClientError::Endpoint(endpoint.into()))?,
        ),
    };
    Ok((tls, a.trim_end_matches('/').to_string()))
}

/// The TLS server name of `host:port` (an IP address or a DNS name).
fn server_name(host: &str) -> Option<rustls_pki_types::ServerName<'static>> {
    let name = host
        .rsplit_once(':')
        .map_or(host, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    rustls_pki_types::ServerName::try_from(name.to_string()).ok()
}

impl Conn {
    pub async fn connect(endpoint: &str) -> Result<Self, ClientError> {
        let (tls, host) = authority(endpoint)?;
        let stream = TcpStream::connect(&host)
            .await
            .map_err(|e| ClientError::Connect(host.clone(), e))?;
        let _ = stream.set_nodelay(true);
        let sender = if tls {
            let ca = CA_BUNDLE
                .get()
                .cloned()
                .unwrap_or_else(|| crate::tls::SYSTEM_CA_BUNDLE.into());
            let name = server_name(&host).ok_or_else(|| ClientError::Endpoint(endpoint.into()))?;
            let stream = crate::tls::connector(&ca)?
                .connect(name, stream)
                .await
                .map_err(|e| ClientError::Connect(host.clone(), e))?;
            let (sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            sender
        } else {
            let (sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            sender
        };
        Ok(Self {
            host,
            sender,
            creds: DEFAULT_CREDENTIALS.get().cloned(),
        })
    }

    /// Signs every request from now on with `creds`.
    pub fn with_credentials(mut self, creds: Option<Credentials>) -> Self {
        self.creds = creds;
        self
    }

    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Response, ClientError> {
        // A fresh id in every request (signed, as the AWS SDKs do), so two
        // identical calls in one second differ for emberd's --replay-cache.
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("content-type", "application/json")
            .header("amz-sdk-invocation-id", crate::util::uuid4());
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let mut req = b.body(Full::new(Bytes::from(body.clone())))?;
        if let Some(creds) = &self.creds {
            let uri = req.uri().clone();
            let parts = RequestParts {
                method,
                path: uri.path(),
                query: uri.query(),
                headers: req.headers(),
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let added = sign(creds, REGION, &format_amz_date(now), &parts, &body);
            for (k, v) in added {
                req.headers_mut().insert(k, v.parse()?);
            }
        }
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Response {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }
}

/// The API path of function `name` followed by `tail` (a sub-resource,
/// a query).
pub fn function_path(name: &str, tail: &str) -> String {
    format!("/2015-03-31/functions/{}{tail}", enc(name))
}

/// Percent-encodes one path segment or query value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
