//! Framing: the 8-byte header, the "check complete, then parse" decoder and
//! the encoder. The decoder never trusts a length before checking it against
//! the cap, and never reads a body before all of it has arrived.

use alloc::vec::Vec;

use super::codec::Writer;
use super::message::{kind, InvokeRef};
use super::{
    Message, ProtocolError, MAX_FRAME, MAX_INIT_FRAME, MAX_LOG_FRAME, MAX_SMALL_FRAME, VERSION,
};

/// Frame magic, the first two header bytes: "EM".
pub const MAGIC: [u8; 2] = *b"EM";
/// Header length: magic (2), version (1), kind (1), body length (u32 LE).
pub const HEADER_LEN: usize = 8;

/// The result of looking at the front of a byte buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decode {
    /// Not a whole frame yet; at least `needed` more bytes must arrive.
    Incomplete { needed: usize },
    /// A whole frame of `len` bytes (header included) was decoded.
    Frame { message: Message, len: usize },
    /// The bytes are not a valid frame. If `skip` is `Some(n)`, the header was
    /// valid and the stream continues after `n` bytes; if `None`, the stream
    /// is out of sync and must be closed.
    Error {
        error: ProtocolError,
        skip: Option<usize>,
    },
}

/// The size cap of a frame body, by kind: what that message can legitimately
/// need (only `Init` carries code; only payload and error frames carry 6 MiB;
/// a `Log` carries one line). Encoder and decoder apply the same caps, so a
/// reader never buffers more for a kind than its sender could write. Unknown
/// kinds get the payload cap (their body is skipped).
pub fn frame_cap(kind: u8) -> usize {
    match kind {
        kind::INIT => MAX_INIT_FRAME,
        kind::LOG => MAX_LOG_FRAME,
        kind::READY | kind::INIT_DONE | kind::SHUTDOWN | kind::FATAL => MAX_SMALL_FRAME,
        _ => MAX_FRAME,
    }
}

/// Checks a header; returns (kind, body length).
pub(crate) fn parse_header(h: &[u8; HEADER_LEN]) -> Result<(u8, usize), ProtocolError> {
    if h[0..2] != MAGIC {
        return Err(ProtocolError::BadMagic(u16::from_le_bytes([h[0], h[1]])));
    }
    if h[2] != VERSION {
        return Err(ProtocolError::UnsupportedVersion(h[2]));
    }
    let kind = h[3];
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
    let max = frame_cap(kind);
    if len > max {
        return Err(ProtocolError::FrameTooLarge { len, max });
    }
    Ok((kind, len))
}

/// Decodes the frame at the front of `buf`, if it is complete.
pub fn decode(buf: &[u8]) -> Decode {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        // Reject garbage as early as the magic byte allows.
        if (!buf.is_empty() && buf[0] != MAGIC[0]) || (buf.len() >= 2 && buf[1] != MAGIC[1]) {
            let found = u16::from_le_bytes([buf[0], buf.get(1).copied().unwrap_or(0)]);
            return Decode::Error {
                error: ProtocolError::BadMagic(found),
                skip: None,
            };
        }
        return Decode::Incomplete {
            needed: HEADER_LEN - buf.len(),
        };
    };
    let (kind, body_len) = match parse_header(header) {
        Ok(v) => v,
        Err(error) => return Decode::Error { error, skip: None },
    };
    let total = HEADER_LEN + body_len;
    if buf.len() < total {
        return Decode::Incomplete {
            needed: total - buf.len(),
        };
    }
    match Message::read_body(kind, &buf[HEADER_LEN..total]) {
        Ok(message) => Decode::Frame {
            message,
            len: total,
        },
        Err(error) => Decode::Error {
            error,
            skip: Some(total),
        },
    }
}

impl Message {
    /// Appends this message as one frame to `out`. Fails (leaving `out` as it
    /// was) if a payload or the frame exceeds its cap.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        encode_frame(self.kind(), out, |w| self.write_body(w))
    }

    /// This message as a new frame.
    pub fn to_frame(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }
}

impl InvokeRef<'_> {
    /// Appends this `Invoke` as one frame to `out`, byte for byte what
    /// [`Message::Invoke`] with the same fields encodes to.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        encode_frame(kind::INVOKE, out, |w| self.write_body(w))
    }

    /// This `Invoke` as a new frame, allocated once at its final size (the
    /// payload's one copy).
    pub fn to_frame(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.body_len());
        self.encode(&mut out)?;
        Ok(out)
    }
}

/// Appends one frame of `kind` whose body `write` produces; checks the
/// kind's cap and leaves `out` as it was on any error.
fn encode_frame(
    kind: u8,
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut Writer<'_>) -> Result<(), ProtocolError>,
) -> Result<(), ProtocolError> {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&[0; 4]);
    let written = write(&mut Writer { out: &mut *out });
    let body_len = out.len() - start - HEADER_LEN;
    let max = frame_cap(kind);
    let result = match written {
        Err(e) => Err(e),
        Ok(()) if body_len > max => Err(ProtocolError::FrameTooLarge { len: body_len, max }),
        Ok(()) => Ok(()),
    };
    match result {
        Ok(()) => {
            // Cannot truncate: body_len <= MAX_INIT_FRAME < u32::MAX.
            let len = (body_len as u32).to_le_bytes();
            out[start + 4..start + HEADER_LEN].copy_from_slice(&len);
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// A streaming decoder: push bytes as they arrive, pull whole messages out.
/// After an unrecoverable error it stays failed (the stream is out of sync).
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already consumed.
    pos: usize,
    failed: Option<ProtocolError>,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds received bytes. Call [`FrameDecoder::next_message`] until it
    /// returns `Ok(None)` after each push, so at most one partial frame (at
    /// most the cap) stays buffered.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as messages.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Bytes still needed to complete the frame at the front (0 if a whole
    /// frame is already buffered or the decoder failed).
    pub fn needed(&self) -> usize {
        match decode(&self.buf[self.pos..]) {
            Decode::Incomplete { needed } => needed,
            _ => 0,
        }
    }

    /// The next whole message, `Ok(None)` if more bytes are needed. A
    /// recoverable error drops that one frame and decoding goes on.
    pub fn next_message(&mut self) -> Result<Option<Message>, ProtocolError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = match decode(&self.buf[self.pos..]) {
            Decode::Incomplete { .. } => Ok(None),
            Decode::Frame { message, len } => {
                self.pos += len;
                Ok(Some(message))
            }
            Decode::Error {
                error,
                skip: Some(len),
            } => {
                self.pos += len;
                Err(error)
            }
            Decode::Error { error, skip: None } => {
                self.failed = Some(error.clone());
                self.buf = Vec::new();
                self.pos = 0;
                Err(error)
            }
        };
        self.compact();
        result
    }

    /// Drops consumed bytes once they dominate the buffer, so a long stream
    /// of frames does not grow it.
    fn compact(&mut self) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }
}
