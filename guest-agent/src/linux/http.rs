//! A small, bounded HTTP/1.1 server codec for the Runtime API: it reads a
//! request head only once it is complete (up to [`MAX_HEAD`] bytes), then a
//! body framed by `Content-Length` or chunked encoding up to a caller-given
//! cap, and writes fixed-length responses. Keep-alive is supported; anything
//! it cannot frame closes the connection.

use std::io::{self, Read, Write};

/// Largest request line + headers accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most headers accepted in one request.
const MAX_HEADERS: usize = 64;

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connection I/O failed")]
    Io(#[from] io::Error),
    /// The client closed the connection between requests.
    #[error("connection closed")]
    Closed,
    #[error("request head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("request body larger than the {cap}-byte limit")]
    BodyTooLarge { cap: usize },
}

/// A parsed request line and headers.
#[derive(Debug, Clone)]
pub struct Head {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the client asked to close after this request.
    pub fn wants_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// One server-side connection with its read buffer.
pub struct Conn<S> {
    stream: S,
    buf: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl<S: Read + Write> Conn<S> {
    pub fn new(stream: S) -> Self {
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Reads more bytes into the buffer; `Ok(0)` is EOF.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the next request head: check complete (blank line within
    /// [`MAX_HEAD`]), then parse.
    pub fn read_head(&mut self) -> Result<Head, HttpError> {
        let end = loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                break pos;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(HttpError::HeadTooLarge);
            }
            if self.fill()? == 0 {
                return Err(if self.buf.is_empty() {
                    HttpError::Closed
                } else {
                    HttpError::Malformed("connection closed inside the head")
                });
            }
        };
        if end > MAX_HEAD {
            return Err(HttpError::HeadTooLarge);
        }
        let head = parse_head(&self.buf[..end])?;
        self.buf.drain(..end + 4);
        Ok(head)
    }

    /// Reads exactly `n` more buffered-or-streamed bytes.
    fn take(&mut self, n: usize) -> Result<Vec<u8>, HttpError> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(HttpError::Malformed("connection closed inside the body"));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    fn take_line(&mut self) -> Result<Vec<u8>, HttpError> {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n") {
                let line = self.buf.drain(..pos + 2).take(pos).collect();
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(HttpError::Malformed("chunk line too long"));
            }
            if self.fill()? == 0 {
                return Err(HttpError::Malformed("connection closed inside a chunk"));
            }
        }
    }

    /// Reads the body of `head`, refusing more than `cap` bytes. On
    /// [`HttpError::BodyTooLarge`] the connection is out of sync and must close.
    pub fn read_body(&mut self, head: &Head, cap: usize) -> Result<Vec<u8>, HttpError> {
        let chunked = head
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            return self.read_chunked(cap);
        }
        let len = match head.header("content-length") {
            None => return Ok(Vec::new()),
            Some(v) => v
                .trim()
                .parse::<usize>()
                .map_err(|_| HttpError::Malformed("bad Content-Length"))?,
        };
        if len > cap {
            return Err(HttpError::BodyTooLarge { cap });
        }
        self.take(len)
    }

    fn read_chunked(&mut self, cap: usize) -> Result<Vec<u8>, HttpError> {
        let mut body = Vec::new();
        loop {
            let line = self.take_line()?;
            let text =
                std::str::from_utf8(&line).map_err(|_| HttpError::Malformed("chunk size"))?;
            let size_hex = text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| HttpError::Malformed("chunk size"))?;
            if size == 0 {
                // Trailers, if any, end with an empty line.
                while !self.take_line()?.is_empty() {}
                return Ok(body);
            }
            if body.len().saturating_add(size) > cap {
                return Err(HttpError::BodyTooLarge { cap });
            }
            body.extend_from_slice(&self.take(size)?);
            if !self.take(2)?.eq(b"\r\n") {
                return Err(HttpError::Malformed("chunk not followed by CRLF"));
            }
        }
    }

    /// Best effort after a refused body: reads and drops a `Content-Length`
    /// body of at most `limit` bytes so the peer is not reset mid-send.
    pub fn discard_body(&mut self, head: &Head, limit: usize) {
        let len = head
            .header("content-length")
            .and_then(|v| v.trim().parse::<usize>().ok());
        let Some(mut left) = len.filter(|n| *n <= limit) else {
            return;
        };
        let buffered = left.min(self.buf.len());
        self.buf.drain(..buffered);
        left -= buffered;
        let mut chunk = [0u8; 64 * 1024];
        while left > 0 {
            match self.stream.read(&mut chunk[..left.min(64 * 1024)]) {
                Ok(0) | Err(_) => return,
                Ok(n) => left -= n,
            }
        }
    }

    /// Writes a complete response with a `Content-Length` body.
    pub fn respond(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<()> {
        let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
        for (name, value) in headers {
            // Values come from the host (request ids, ARNs...): a CR or LF
            // would split the header, so they are dropped.
            let clean: String = value.chars().filter(|c| *c != '\r' && *c != '\n').collect();
            out.push_str(&format!("{name}: {clean}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes)?;
        self.stream.flush()
    }
}

fn parse_head(raw: &[u8]) -> Result<Head, HttpError> {
    let text = std::str::from_utf8(raw).map_err(|_| HttpError::Malformed("head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let request = lines.next().unwrap_or("");
    let mut parts = request.split(' ');
    let (Some(method), Some(path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed("request line"));
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !path.starts_with('/') {
        return Err(HttpError::Malformed("request line"));
    }
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or(HttpError::Malformed("header line"))?;
        if headers.len() == MAX_HEADERS {
            return Err(HttpError::Malformed("too many headers"));
        }
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(Head {
        method: method.to_string(),
        path: path.to_string(),
        headers,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A read/write pair over fixed input, recording what is written.
    struct Pipe {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }
    impl Read for Pipe {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            // One byte at a time: every framing path must survive split reads.
            let n = b.len().min(1);
            self.input.read(&mut b[..n])
        }
    }
    impl Write for Pipe {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    fn conn(input: &[u8]) -> Conn<Pipe> {
        Conn::new(Pipe {
            input: Cursor::new(input.to_vec()),
            output: Vec::new(),
        })
    }

    #[test]
    fn content_length_and_keep_alive() {
        let mut c =
            conn(b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n\r\n");
        let h = c.read_head().unwrap();
        assert_eq!((h.method.as_str(), h.path.as_str()), ("POST", "/a"));
        assert_eq!(c.read_body(&h, 10).unwrap(), b"abc");
        let h2 = c.read_head().unwrap();
        assert_eq!(h2.path, "/b");
        assert!(c.read_body(&h2, 10).unwrap().is_empty());
        assert!(matches!(c.read_head(), Err(HttpError::Closed)));
    }

    #[test]
    fn chunked_bodies_and_caps() {
        let req = b"POST /r HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        let mut c = conn(req);
        let h = c.read_head().unwrap();
        assert_eq!(c.read_body(&h, 5).unwrap(), b"abcde");
        let mut c = conn(req);
        let h = c.read_head().unwrap();
        assert!(matches!(
            c.read_body(&h, 4),
            Err(HttpError::BodyTooLarge { cap: 4 })
        ));
        let mut c = conn(b"POST / HTTP/1.1\r\nContent-Length: 99\r\n\r\n");
        let h = c.read_head().unwrap();
        assert!(matches!(
            c.read_body(&h, 98),
            Err(HttpError::BodyTooLarge { .. })
        ));
    }

    #[test]
    fn hostile_heads_are_refused() {
        for bad in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let mut c = conn(bad);
            let r = c.read_head().and_then(|h| c.read_body(&h, 100));
            assert!(r.is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        assert!(matches!(
            conn(&huge).read_head(),
            Err(HttpError::HeadTooLarge)
        ));
    }

    /// Seeded fuzzing: mutated valid requests never panic the codec, and
    /// no accepted body exceeds its cap.
    #[test]
    fn fuzzed_requests_never_panic_or_exceed_caps() {
        let corpus: [&[u8]; 3] = [
            b"POST /2018-06-01/runtime/invocation/1/response HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\nT: 1\r\n\r\n",
            b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: a\r\n\r\n",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..5_000 {
            let mut input = corpus[(rnd() % 3) as usize].to_vec();
            for _ in 0..(rnd() % 6) {
                let at = (rnd() as usize) % (input.len() + 1);
                match rnd() % 4 {
                    0 if at < input.len() => input[at] ^= 1 << (rnd() % 8),
                    1 => input.insert(at, (rnd() % 256) as u8),
                    2 => input.truncate(at),
                    _ => {
                        let dup = input[at..].to_vec();
                        input.extend_from_slice(&dup);
                    }
                }
            }
            let mut c = Conn::new(Pipe {
                input: Cursor::new(input),
                output: Vec::new(),
            });
            // Keep reading requests until the codec gives up.
            for _ in 0..4 {
                let Ok(h) = c.read_head() else { break };
                match c.read_body(&h, 8) {
                    Ok(body) => assert!(body.len() <= 8),
                    Err(_) => break,
                }
            }
        }
    }

    #[test]
    fn responses_strip_header_injection() {
        let mut c = conn(b"");
        c.respond(200, &[("X-Id", "a\r\nEvil: 1")], b"hi").unwrap();
        let out = String::from_utf8(c.stream.output.clone()).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\nX-Id: aEvil: 1\r\nContent-Length: 2\r\n\r\nhi"));
    }
}
