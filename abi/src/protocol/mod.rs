//! The host↔agent protocol: the messages `emberd` (host) and a runtime agent
//! (the kernel-less wasm agent or the Linux agent) exchange over one vsock
//! stream, and their framing. `no_std` + `alloc`; with the `std` feature,
//! [`read_frame`]/[`write_frame`] work over any `std::io` stream.
//!
//! Wire format (DESIGN.md, "Host↔agent protocol", is the prose version):
//! every frame is an 8-byte header — magic `"EM"`, version [`VERSION`], message
//! kind, body length (u32, little-endian) — then the body. Bodies are fields in a
//! fixed order per kind: integers little-endian, byte strings and UTF-8 strings
//! as a u32 length then the bytes, lists as a u32 count then the items. The
//! decoder first checks a frame is complete, then parses it; every length is
//! checked against the bytes actually present and against a size cap, so no
//! input makes it panic or allocate more than the cap.

mod codec;
mod frame;
#[cfg(feature = "std")]
mod io;
mod message;

pub use frame::{decode, frame_cap, Decode, FrameDecoder, HEADER_LEN, MAGIC};
#[cfg(feature = "std")]
pub use io::{read_frame, read_frame_from, write_frame, FrameIoError};
pub use message::{sender, AgentKind, Code, InvokeRef, LogStream, Message, Sender, Tree};

/// Protocol version carried in every frame header and in `Ready`.
pub const VERSION: u8 = 3;
/// The vsock port the agent connects to on the host (CID 2). The host listens
/// on `<uds_path>_9000` (Firecracker hybrid vsock).
pub const AGENT_PORT: u32 = 9000;
/// Largest invocation request or response payload (Lambda's 6 MiB synchronous limit).
pub const MAX_PAYLOAD: usize = 6 * 1024 * 1024;
/// Largest body of a frame that carries a payload or an error report
/// (`Invoke`, `Result`, `Error`, `InitError`): a full payload plus room for
/// the other fields (request id, ARN, client context...).
pub const MAX_FRAME: usize = MAX_PAYLOAD + 256 * 1024;
/// Largest body of an `Init` frame, which may carry the function code inline.
pub const MAX_INIT_FRAME: usize = 64 * 1024 * 1024;
/// Largest code (inline module or compiled artefact) the host puts in an
/// `Init`: the `Init` cap less 1 MiB for the other fields (names, handler,
/// environment — Lambda caps the environment at 4 KiB). emberd refuses to
/// send more (a module whose artefact is larger cannot run kernel-less).
pub const MAX_INIT_CODE: usize = MAX_INIT_FRAME - 1024 * 1024;
/// Longest `Log` line an agent sends (longer output is split into lines of
/// this size; the wasm agent already cuts lines at 16 KiB).
pub const MAX_LOG_LINE: usize = 64 * 1024;
/// Largest body of a `Log` frame: one line plus its request id and stream.
pub const MAX_LOG_FRAME: usize = MAX_LOG_LINE + 4 * 1024;
/// Largest body of the small control messages (`Ready`, `InitDone`,
/// `Shutdown`, `Fatal`).
pub const MAX_SMALL_FRAME: usize = 64 * 1024;

/// Why bytes could not be decoded (or a message could not be encoded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("bad frame magic {0:#06x}")]
    BadMagic(u16),
    #[error("unsupported protocol version {0} (this side speaks {VERSION})")]
    UnsupportedVersion(u8),
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("frame body of {len} bytes exceeds the {max}-byte cap")]
    FrameTooLarge { len: usize, max: usize },
    /// A message kind the reading side itself sends (e.g. `Init` from an
    /// agent): its body is never read.
    #[error("message kind {0} is never sent in this direction")]
    WrongDirection(u8),
    #[error("payload of {len} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    PayloadTooLarge { len: usize },
    #[error("frame body truncated: field needs {needed} bytes, {left} left")]
    Truncated { needed: usize, left: usize },
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    #[error("a string field is not valid UTF-8")]
    BadUtf8,
    #[error("invalid value {value} for field {field}")]
    BadValue { field: &'static str, value: u64 },
}

impl ProtocolError {
    /// Whether the stream is still in sync after this error: errors inside a
    /// frame whose header was valid can be skipped; header errors cannot.
    pub fn is_recoverable(&self) -> bool {
        !matches!(
            self,
            ProtocolError::BadMagic(_)
                | ProtocolError::UnsupportedVersion(_)
                | ProtocolError::FrameTooLarge { .. }
                | ProtocolError::WrongDirection(_)
        )
    }
}

#[cfg(test)]
mod tests;
