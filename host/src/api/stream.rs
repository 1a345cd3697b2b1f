//! `InvokeWithResponseStream`'s answer: the AWS event-stream encoding
//! (`application/vnd.amazon.eventstream`) of a `PayloadChunk` per piece of
//! the response and one closing `InvokeComplete`, as botocore's
//! `EventStream` parser reads them. Guests return their response whole, so
//! the chunks are cut from it after the invocation ends (no time to first
//! byte gained yet); the wire format is Lambda's.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::json;

use super::Reply;
use crate::env::FunctionError;
use crate::invoker::CallResult;

/// The content type of an event stream.
pub const CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";
/// Response bytes per `PayloadChunk` event.
const CHUNK: usize = 32 * 1024;
/// Event-stream header value type 7: a string.
const STRING: u8 = 7;

/// One event-stream message: the prelude (total length, headers length,
/// their CRC32), the string headers, the payload and the message's CRC32.
fn message(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let mut h = BytesMut::new();
    for (name, value) in headers {
        // Names and values here are this module's constants (< 255 bytes).
        h.put_u8(name.len() as u8);
        h.put_slice(name.as_bytes());
        h.put_u8(STRING);
        h.put_u16(value.len() as u16);
        h.put_slice(value.as_bytes());
    }
    let total = 12 + h.len() + payload.len() + 4;
    let mut m = BytesMut::with_capacity(total);
    m.put_u32(total as u32);
    m.put_u32(h.len() as u32);
    let prelude_crc = crc32fast::hash(&m);
    m.put_u32(prelude_crc);
    m.put_slice(&h);
    m.put_slice(payload);
    let crc = crc32fast::hash(&m);
    m.put_u32(crc);
    m.freeze()
}

fn event(kind: &str, content_type: &str, payload: &[u8]) -> Bytes {
    message(
        &[
            (":event-type", kind),
            (":content-type", content_type),
            (":message-type", "event"),
        ],
        payload,
    )
}

/// The streamed reply to an invocation that ran: its response in
/// `PayloadChunk`s, then `InvokeComplete` (with `ErrorCode` = the error's
/// type and `ErrorDetails` = its message for a function error, and the
/// log tail when asked for).
pub fn reply(version: &str, result: &CallResult, log_tail: Option<String>) -> Reply {
    let mut body = BytesMut::new();
    let mut complete = serde_json::Map::new();
    match result {
        CallResult::Success(payload) => {
            for chunk in payload.chunks(CHUNK) {
                body.put(event("PayloadChunk", "application/octet-stream", chunk));
            }
        }
        CallResult::FunctionError(f) => error_fields(f, &mut complete),
        CallResult::ServiceError(m) => {
            complete.insert("ErrorCode".into(), json!("ServiceException"));
            complete.insert("ErrorDetails".into(), json!(m));
        }
        CallResult::SnapStartError(m) => {
            complete.insert("ErrorCode".into(), json!("SnapStartException"));
            complete.insert("ErrorDetails".into(), json!(m));
        }
    }
    if let Some(tail) = log_tail {
        complete.insert("LogResult".into(), json!(tail));
    }
    let done = serde_json::Value::Object(complete).to_string();
    body.put(event("InvokeComplete", "application/json", done.as_bytes()));
    Reply {
        status: 200,
        headers: vec![
            ("Content-Type", CONTENT_TYPE.to_string()),
            ("X-Amz-Executed-Version", version.to_string()),
        ],
        body: body.freeze(),
        json: false,
    }
}

fn error_fields(f: &FunctionError, out: &mut serde_json::Map<String, serde_json::Value>) {
    let doc: serde_json::Value = serde_json::from_slice(&f.payload()).unwrap_or_default();
    let field = |k: &str| doc.get(k).and_then(|v| v.as_str()).map(str::to_string);
    out.insert(
        "ErrorCode".into(),
        json!(field("errorType").unwrap_or_else(|| "Unhandled".into())),
    );
    out.insert(
        "ErrorDetails".into(),
        json!(field("errorMessage").unwrap_or_default()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits an event stream back into (headers, payload) per message,
    /// checking both CRCs, as a client would.
    fn decode(mut b: &[u8]) -> Vec<(Vec<(String, String)>, Vec<u8>)> {
        let mut out = vec![];
        while !b.is_empty() {
            let total = u32::from_be_bytes(b[0..4].try_into().unwrap()) as usize;
            let hlen = u32::from_be_bytes(b[4..8].try_into().unwrap()) as usize;
            assert_eq!(
                crc32fast::hash(&b[..8]),
                u32::from_be_bytes(b[8..12].try_into().unwrap())
            );
            assert_eq!(
                crc32fast::hash(&b[..total - 4]),
                u32::from_be_bytes(b[total - 4..total].try_into().unwrap())
            );
            let (mut h, mut headers) = (&b[12..12 + hlen], vec![]);
            while !h.is_empty() {
                let n = h[0] as usize;
                let name = String::from_utf8(h[1..1 + n].to_vec()).unwrap();
                assert_eq!(h[1 + n], STRING);
                let vl = u16::from_be_bytes([h[2 + n], h[3 + n]]) as usize;
                let value = String::from_utf8(h[4 + n..4 + n + vl].to_vec()).unwrap();
                headers.push((name, value));
                h = &h[4 + n + vl..];
            }
            out.push((headers, b[12 + hlen..total - 4].to_vec()));
            b = &b[total..];
        }
        out
    }

    fn kind(h: &[(String, String)]) -> &str {
        &h.iter().find(|(k, _)| k == ":event-type").unwrap().1
    }

    #[test]
    fn a_large_response_is_chunked_and_completed() {
        let payload = vec![b'x'; CHUNK * 2 + 5];
        let r = reply("3", &CallResult::Success(payload), None);
        let events = decode(&r.body);
        let kinds: Vec<&str> = events.iter().map(|(h, _)| kind(h)).collect();
        assert_eq!(
            kinds,
            [
                "PayloadChunk",
                "PayloadChunk",
                "PayloadChunk",
                "InvokeComplete"
            ]
        );
        let joined: usize = events[..3].iter().map(|(_, p)| p.len()).sum();
        assert_eq!(joined, CHUNK * 2 + 5);
        assert_eq!(events[3].1, b"{}");
    }

    #[test]
    fn a_function_error_completes_with_its_type_and_message() {
        let f = FunctionError::new("ValueError", "bad input".into());
        let r = reply("1", &CallResult::FunctionError(f), Some("dGFpbA==".into()));
        let events = decode(&r.body);
        assert_eq!(events.len(), 1);
        let done: serde_json::Value = serde_json::from_slice(&events[0].1).unwrap();
        assert_eq!(done["ErrorCode"], "ValueError");
        assert_eq!(done["ErrorDetails"], "bad input");
        assert_eq!(done["LogResult"], "dGFpbA==");
    }
}
