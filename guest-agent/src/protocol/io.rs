//! Blocking frame I/O over `std::io` streams (host side, Linux agent).

use std::io::{self, Read, Write};
use std::vec::Vec;

use super::frame::{decode, Decode, HEADER_LEN};
use super::{Message, ProtocolError};

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
/// The body buffer is sized from the header only after the cap check.
pub fn read_frame<R: Read + ?Sized>(r: &mut R) -> Result<Message, FrameIoError> {
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
    let needed = match decode(&header) {
        Decode::Incomplete { needed } => needed,
        Decode::Frame { message, .. } => return Ok(message),
        Decode::Error { error, .. } => return Err(error.into()),
    };
    let mut frame = Vec::with_capacity(HEADER_LEN + needed);
    frame.extend_from_slice(&header);
    frame.resize(HEADER_LEN + needed, 0);
    r.read_exact(&mut frame[HEADER_LEN..])?;
    match decode(&frame) {
        Decode::Frame { message, .. } => Ok(message),
        Decode::Error { error, .. } => Err(error.into()),
        // Unreachable: the buffer holds exactly the length the header gave.
        Decode::Incomplete { .. } => Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
    }
}
