//! Blocking frame I/O over `std::io` streams (host side, Linux agent).

use std::io::{self, Read, Write};
use std::vec::Vec;

use super::frame::{decode, parse_header, Decode, HEADER_LEN};
use super::{sender, Message, ProtocolError, Sender};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameIoError {
    #[error("stream I/O failed")]
    Io(#[from] io::Error),
    #[error("malformed frame")]
    Protocol(#[from] ProtocolError),
    /// The peer closed the stream cleanly between frames.
    #[error("peer closed the connection")]
    Closed,
}

/// Writes one message as a frame (one `write_all`, then flush).
pub fn write_frame<W: Write + ?Sized>(w: &mut W, msg: &Message) -> Result<(), FrameIoError> {
    let frame = msg.to_frame()?;
    w.write_all(&frame)?;
    w.flush()?;
    Ok(())
}

/// Reads exactly one frame. EOF before the first header byte is
/// [`FrameIoError::Closed`]; EOF inside a frame is an `UnexpectedEof` I/O error.
/// The body buffer grows as bytes arrive (never sized from the header alone),
/// so a peer that announces a large frame and sends little costs little.
pub fn read_frame<R: Read + ?Sized>(r: &mut R) -> Result<Message, FrameIoError> {
    read_frame_checked(r, None)
}

/// [`read_frame`] for frames sent by `from`: a kind the other side sends
/// (e.g. `Init` arriving at the host) is refused from its header, before
/// any of its body is read.
pub fn read_frame_from<R: Read + ?Sized>(r: &mut R, from: Sender) -> Result<Message, FrameIoError> {
    read_frame_checked(r, Some(from))
}

/// First read of a body, and the smallest later growth step.
const BODY_STEP: usize = 16 * 1024;

fn read_frame_checked<R: Read + ?Sized>(
    r: &mut R,
    from: Option<Sender>,
) -> Result<Message, FrameIoError> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Err(FrameIoError::Closed),
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let (kind, body_len) = parse_header(&header)?;
    if let Some(from) = from {
        if sender(kind).is_some_and(|s| s != from) {
            return Err(ProtocolError::WrongDirection(kind).into());
        }
    }
    let total = HEADER_LEN + body_len;
    let mut frame = Vec::with_capacity(HEADER_LEN + body_len.min(BODY_STEP));
    frame.extend_from_slice(&header);
    while frame.len() < total {
        // Grow by what already arrived (at least BODY_STEP): memory follows
        // the bytes received, at most twice over.
        let step = (total - frame.len()).min(frame.len().max(BODY_STEP));
        let at = frame.len();
        frame.resize(at + step, 0);
        let mut filled = at;
        while filled < at + step {
            match r.read(&mut frame[filled..at + step]) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    match decode(&frame) {
        Decode::Frame { message, .. } => Ok(message),
        Decode::Error { error, .. } => Err(error.into()),
        // Unreachable: the buffer holds exactly the length the header gave.
        Decode::Incomplete { .. } => Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
    }
}
