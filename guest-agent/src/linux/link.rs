//! The agent's sending side of the host connection: frames from any thread
//! (the event loop, the output pumps) go out whole, one at a time, and log
//! lines are tagged with the invocation currently running.

use std::io::Write;
use std::sync::{Mutex, MutexGuard};

use ember_abi::protocol::{write_frame, FrameIoError, LogStream, Message};

/// Longest log line sent in one frame (the protocol's cap); longer lines are split.
pub use ember_abi::protocol::MAX_LOG_LINE;

/// The write half of the host connection plus the current request id.
pub struct HostLink {
    writer: Mutex<Box<dyn Write + Send>>,
    request_id: Mutex<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Holders only write whole frames or swap a string: a panic in one
    // cannot leave the value half-updated.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HostLink {
    pub fn new(writer: Box<dyn Write + Send>) -> Self {
        HostLink {
            writer: Mutex::new(writer),
            request_id: Mutex::new(String::new()),
        }
    }

    pub fn send(&self, msg: &Message) -> Result<(), FrameIoError> {
        write_frame(&mut *lock(&self.writer), msg)
    }

    /// Tags subsequent log lines with `id` (empty: init / between invocations).
    pub fn set_request_id(&self, id: &str) {
        *lock(&self.request_id) = id.to_string();
    }

    /// Sends one line of output (without its newline), split if too long. A
    /// host that went away is noticed by the event loop, not here.
    pub fn log(&self, stream: LogStream, line: &[u8]) {
        let request_id = lock(&self.request_id).clone();
        // Split after the lossy conversion, on character boundaries: invalid
        // bytes grow into 3-byte replacement characters, and a piece over
        // the protocol's line cap could not be sent at all.
        let text = String::from_utf8_lossy(line);
        let mut rest: &str = &text;
        while !rest.is_empty() {
            let mut end = rest.len().min(MAX_LOG_LINE);
            while !rest.is_char_boundary(end) {
                end -= 1;
            }
            let (piece, tail) = rest.split_at(end);
            let msg = Message::Log {
                request_id: request_id.clone(),
                stream,
                line: piece.to_string(),
            };
            let _ = self.send(&msg);
            rest = tail;
        }
    }

    /// An agent-authored line (START/END/REPORT, warnings).
    pub fn agent_log(&self, line: &str) {
        self.log(LogStream::Agent, line.as_bytes());
    }
}
