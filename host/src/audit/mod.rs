//! The audit trail: every control-plane call (who, what with secrets and
//! code redacted, when, outcome) appended to hash-chained JSON-lines files
//! in `<data>/audit/`, with periodic HMAC-signed digests and a signed head
//! (so changed, removed, inserted or reordered records and a cut tail are
//! detected by `ember audit verify`). Format: DESIGN.md "Audit trail".

mod group;
pub mod reader;
pub mod record;
pub mod tasks;
pub mod verify;
mod writer;

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

pub use writer::AuditLog;

/// The audit directory inside emberd's data directory.
pub fn audit_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("audit")
}

/// The HMAC key file inside the audit directory.
pub const KEY_FILE: &str = "audit.key";
/// The two-slot signed head file inside the audit directory.
pub const HEAD_FILE: &str = "head";

/// `audit-000001.log`, `audit-000002.log`, …: the order of the chain.
pub fn log_file_name(index: u64) -> String {
    format!("audit-{index:06}.log")
}

/// The index of a log file name, if it is one.
pub fn log_file_index(name: &str) -> Option<u64> {
    let n = name.strip_prefix("audit-")?.strip_suffix(".log")?;
    (n.len() == 6 && n.bytes().all(|b| b.is_ascii_digit()))
        .then(|| n.parse().ok())
        .flatten()
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log I/O on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("audit key")]
    Key(#[from] crate::keyfile::KeyFileError),
    #[error("encoding an audit record")]
    Encode(#[from] serde_json::Error),
    #[error("{file}: the last record cannot be read ({why}); run `ember audit verify`")]
    Corrupt { file: String, why: &'static str },
    #[error("advancing the signed head")]
    Head(#[source] std::io::Error),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// When digests are written and files rotated.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// A digest after this many records since the previous one.
    pub digest_every: u64,
    /// A digest at least this often while records keep coming (checked by
    /// the timer task of [`tasks::digest_timer`]).
    pub digest_interval: std::time::Duration,
    /// A new file once the current one reaches this size.
    pub rotate_bytes: u64,
    /// Also record allowed data-plane calls (`Invoke`,
    /// `InvokeWithResponseStream`, `InvokeFunctionUrl`): CloudTrail's data
    /// events, which it too logs only when asked to.
    pub data_events: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            digest_every: 100,
            digest_interval: std::time::Duration::from_secs(60),
            rotate_bytes: 16 << 20,
            data_events: false,
        }
    }
}

/// emberd's audit flags.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// Audit trail: a signed digest after this many records.
    #[arg(long, default_value_t = 100)]
    pub audit_digest_every: u64,
    /// Audit trail: a signed digest at least this often (seconds) while
    /// records are unsigned.
    #[arg(long, default_value_t = 60)]
    pub audit_digest_secs: u64,
    /// Audit trail: start a new file after this many bytes.
    #[arg(long, default_value_t = 16 << 20)]
    pub audit_rotate_bytes: u64,
    /// Audit trail: also record every allowed data-plane call (Invoke,
    /// InvokeWithResponseStream, InvokeFunctionUrl: who, which function,
    /// status; never the payload), as CloudTrail's data events. Off by
    /// default, as in CloudTrail: each record costs an fsync before the
    /// response.
    #[arg(long)]
    pub audit_data_events: bool,
}

impl AuditArgs {
    pub fn config(&self) -> AuditConfig {
        AuditConfig {
            digest_every: self.audit_digest_every.max(1),
            digest_interval: std::time::Duration::from_secs(self.audit_digest_secs.max(1)),
            rotate_bytes: self.audit_rotate_bytes.max(1024),
            data_events: self.audit_data_events,
        }
    }
}

/// Who made a call.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Who {
    /// The access key that signed the request (after its signature verified).
    pub access_key_id: Option<String>,
    pub account: Option<String>,
    /// The key id a refused request claimed in its `Authorization` header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed_access_key_id: Option<String>,
    /// The connection's peer address.
    pub source: String,
}

/// One control-plane call.
#[derive(Debug, Clone, Serialize)]
pub struct Call {
    pub who: Who,
    /// The AWS operation name (`CreateFunction`, …), or `Unknown`.
    pub operation: String,
    /// The function or layer the call names, if any.
    pub resource: Option<String>,
    pub method: String,
    pub path: String,
    /// Query and body parameters, secrets and code redacted.
    pub params: Value,
    pub status: u16,
    /// The AWS error type of a failed call.
    pub error: Option<String>,
    pub message: Option<String>,
}

/// What a record says.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Body {
    Call(Box<Call>),
    /// Signs the chain up to here; covers records `first_seq..seq`.
    Digest {
        first_seq: u64,
        records: u64,
    },
    /// Something emberd itself did or found (start, stop, a repaired tail…).
    Event {
        event: String,
        detail: String,
    },
}

/// Events that mean the trail was damaged or incomplete: verify fails on them.
pub const DAMAGE_EVENTS: &[&str] = &["tail-mismatch", "head-missing", "write-failures"];

#[cfg(test)]
mod tests;
