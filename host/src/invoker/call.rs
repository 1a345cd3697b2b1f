//! What an invocation ends as ([`Outcome`], its [`CallResult`]): the types
//! the invoker's observers (metrics, log streams) and callers (the HTTP
//! `Invoke`, the event workers) share. What it carries in is
//! [`crate::env::InvokeRequest`], the one request type down to the agent.

use std::time::Duration;

use crate::env::Report;

/// How an invocation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallResult {
    Success(Vec<u8>),
    /// The function (or its environment) failed: Lambda's `Unhandled` error.
    FunctionError {
        error_type: String,
        message: String,
        /// The runtime's own error document (empty when none).
        document: Vec<u8>,
    },
    /// No environment could be started; not the function's fault (HTTP 500,
    /// retried with backoff for events).
    ServiceError(String),
}

/// Everything known about one finished invocation.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub request_id: String,
    pub function: String,
    /// The version that ran (`$LATEST` or a number).
    pub version: String,
    pub memory_size: u32,
    /// The environment that served it (None when none could be started).
    pub env_id: Option<u64>,
    pub cold: bool,
    pub result: CallResult,
    pub logs: Vec<String>,
    pub report: Report,
    /// From admission to outcome, as the caller experienced it.
    pub elapsed: Duration,
}

/// The payload a caller gets for a function error: the runtime's own error
/// document unchanged when it sent one (as AWS returns it), else Lambda's
/// `{"errorMessage", "errorType"}` made from what the agent or emberd saw.
pub fn error_payload(error_type: &str, message: &str, document: &[u8]) -> Vec<u8> {
    if !document.is_empty() {
        return document.to_vec();
    }
    serde_json::json!({ "errorMessage": message, "errorType": error_type })
        .to_string()
        .into_bytes()
}
