//! HTTP/1.1 framing for the API socket, pure (no fds): [`parse`] checks
//! that a request is complete before it builds one (request line, headers
//! up to [`MAX_HEAD`], a `Content-Length` body up to [`MAX_BODY`]), and
//! [`Response::to_bytes`] writes an answer in the shape Firecracker's
//! micro_http writes it. Only what Firecracker's clients send is accepted:
//! GET/PUT/PATCH, origin-form paths, `Content-Length` bodies (no chunked
//! encoding), `Expect: 100-continue`, `Connection: close`.

/// Longest request line plus headers.
pub const MAX_HEAD: usize = 8 * 1024;
/// Largest body: Firecracker's default `--http-api-max-payload-size`.
pub const MAX_BODY: usize = 51_200;

/// Why bytes on a connection are not a request. The connection gets a 400
/// (see [`HttpError::response`]) and is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error(
        "Request payload with size {size} is larger than the limit of {limit} allowed by server."
    )]
    TooLarge { size: usize, limit: usize },
    #[error("Request headers are larger than the limit of {MAX_HEAD} bytes allowed by server.")]
    HeadTooLarge,
    #[error("Invalid request line.")]
    RequestLine,
    #[error("Invalid HTTP Method.")]
    Method,
    #[error("Invalid URI.")]
    Uri,
    #[error("Invalid HTTP Version.")]
    Version,
    #[error("Invalid header: {0}")]
    Header(&'static str),
}

impl HttpError {
    /// Firecracker's answer to a request it could not parse: 400 with a body
    /// in micro_http's own shape (not a `fault_message`).
    pub fn response(&self) -> Response {
        let body = format!(
            "{{ \"error\": \"{self}\nAll previous unanswered requests will be dropped.\" }}"
        );
        Response::new(400, Some(body.into_bytes()))
    }
}

/// The request methods the API knows; anything else is [`HttpError::Method`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Put,
    Patch,
}

impl Method {
    /// The method as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
        }
    }
}

/// One complete request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The path, without query string.
    pub path: String,
    /// None when there is no body or it is empty.
    pub body: Option<Vec<u8>>,
    /// The client asked to close the connection after the answer.
    pub close: bool,
}

/// What the bytes received so far hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole request yet. `continue_100`: the headers are complete and
    /// the client waits for `100 Continue` before it sends the body.
    Incomplete { continue_100: bool },
    /// A request and how many bytes of the buffer it took.
    Complete(Request, usize),
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Parses the first request in `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed, HttpError> {
    let Some(head_len) = find_head_end(buf) else {
        if buf.len() > MAX_HEAD {
            return Err(HttpError::HeadTooLarge);
        }
        return Ok(Parsed::Incomplete {
            continue_100: false,
        });
    };
    if head_len > MAX_HEAD {
        return Err(HttpError::HeadTooLarge);
    }
    let head = std::str::from_utf8(&buf[..head_len]).map_err(|_| HttpError::RequestLine)?;
    let mut lines = head.split("\r\n");
    let line = lines.next().ok_or(HttpError::RequestLine)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::RequestLine);
    };
    let method = match method {
        "GET" => Method::Get,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        _ => return Err(HttpError::Method),
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(HttpError::Version);
    }
    let path = origin_path(uri)?;
    let mut length: Option<usize> = None;
    let mut close = version == "HTTP/1.0";
    let mut expect = false;
    for h in lines {
        let (name, value) = h.split_once(':').ok_or(HttpError::Header("no colon"))?;
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => {
                let n = value
                    .parse::<usize>()
                    .map_err(|_| HttpError::Header("bad Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(HttpError::Header("conflicting Content-Length"));
                }
                length = Some(n);
            }
            "transfer-encoding" => return Err(HttpError::Header("Transfer-Encoding")),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            "expect" => expect = value.eq_ignore_ascii_case("100-continue"),
            _ => {}
        }
    }
    let length = length.unwrap_or(0);
    if length > MAX_BODY {
        return Err(HttpError::TooLarge {
            size: length,
            limit: MAX_BODY,
        });
    }
    let body_start = head_len + 4;
    let total = body_start + length;
    if buf.len() < total {
        return Ok(Parsed::Incomplete {
            continue_100: expect,
        });
    }
    let body = (length > 0).then(|| buf[body_start..total].to_vec());
    Ok(Parsed::Complete(
        Request {
            method,
            path,
            body,
            close,
        },
        total,
    ))
}

/// The path of an origin-form (`/a/b?q`) or absolute-form
/// (`http://localhost/a/b`) request target, query string dropped.
fn origin_path(uri: &str) -> Result<String, HttpError> {
    let rest = match uri.strip_prefix("http://") {
        Some(after) => after.find('/').map_or("/", |i| &after[i..]),
        None => uri,
    };
    if !rest.starts_with('/') {
        return Err(HttpError::Uri);
    }
    let path = rest.split('?').next().unwrap_or("/");
    if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(HttpError::Uri);
    }
    Ok(path.to_string())
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Option<Vec<u8>>,
}

impl Response {
    pub fn new(status: u16, body: Option<Vec<u8>>) -> Response {
        Response { status, body }
    }

    /// A JSON answer.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response::new(status, Some(value.to_string().into_bytes()))
    }

    /// Firecracker's error answer: `{"fault_message": ...}`.
    pub fn fault(status: u16, message: &str) -> Response {
        Response::json(status, &serde_json::json!({ "fault_message": message }))
    }

    /// The bytes on the wire (Firecracker's shape: no reason phrase,
    /// keep-alive unless `close`).
    pub fn to_bytes(&self, close: bool) -> Vec<u8> {
        let conn = if close { "close" } else { "keep-alive" };
        let mut out = format!(
            "HTTP/1.1 {} \r\nServer: Firecracker API\r\nConnection: {conn}\r\n",
            self.status
        )
        .into_bytes();
        match &self.body {
            Some(b) => {
                out.extend_from_slice(
                    format!(
                        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        b.len()
                    )
                    .as_bytes(),
                );
                out.extend_from_slice(b);
            }
            None => out.extend_from_slice(b"\r\n"),
        }
        out
    }
}

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(raw: &str) -> (Request, usize) {
        match parse(raw.as_bytes()).unwrap() {
            Parsed::Complete(r, n) => (r, n),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_requests_with_and_without_bodies() {
        let (r, n) = complete("GET /vm/config HTTP/1.1\r\nHost: localhost\r\n\r\nGET");
        assert_eq!(
            (r.method, r.path.as_str(), r.body, r.close),
            (Method::Get, "/vm/config", None, false)
        );
        assert_eq!(n, 44);
        let (r, _) = complete(
            "PUT http://localhost/actions?x=1 HTTP/1.1\r\ncontent-length: 2\r\nConnection: close\r\n\r\n{}",
        );
        assert_eq!(
            (r.path.as_str(), r.body.as_deref(), r.close),
            ("/actions", Some(&b"{}"[..]), true)
        );
    }

    #[test]
    fn incomplete_until_the_body_is_there() {
        let head = "PUT /x HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n";
        assert_eq!(
            parse(head.as_bytes()),
            Ok(Parsed::Incomplete { continue_100: true })
        );
        assert_eq!(
            parse(b"PUT /x HTTP/1.1\r\nContent-Le"),
            Ok(Parsed::Incomplete {
                continue_100: false
            })
        );
        assert!(matches!(
            parse(format!("{head}abcd").as_bytes()),
            Ok(Parsed::Complete(..))
        ));
    }

    #[test]
    fn refuses_what_firecracker_refuses() {
        let big = format!(
            "PUT /x HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        let e = parse(big.as_bytes()).unwrap_err();
        assert_eq!(
            e,
            HttpError::TooLarge {
                size: MAX_BODY + 1,
                limit: MAX_BODY
            }
        );
        assert!(e.to_string().contains("is larger than the limit of 51200"));
        assert_eq!(parse(b"POST / HTTP/1.1\r\n\r\n"), Err(HttpError::Method));
        assert_eq!(parse(b"GET / HTTP/2\r\n\r\n"), Err(HttpError::Version));
        assert_eq!(parse(b"GET x HTTP/1.1\r\n\r\n"), Err(HttpError::Uri));
        assert_eq!(
            parse(b"GET / HTTP/1.1 x\r\n\r\n"),
            Err(HttpError::RequestLine)
        );
        assert!(matches!(
            parse(b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HttpError::Header(_))
        ));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nbad\r\n\r\n"),
            Err(HttpError::Header(_))
        ));
        let long = vec![b'a'; MAX_HEAD + 1];
        assert_eq!(parse(&long), Err(HttpError::HeadTooLarge));
    }

    #[test]
    fn responses_have_firecrackers_shape() {
        let r = Response::new(204, None).to_bytes(false);
        assert_eq!(
            r,
            b"HTTP/1.1 204 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n"
        );
        let r = String::from_utf8(Response::fault(400, "no").to_bytes(true)).unwrap();
        assert!(
            r.ends_with("Content-Length: 22\r\n\r\n{\"fault_message\":\"no\"}"),
            "{r}"
        );
    }
}
