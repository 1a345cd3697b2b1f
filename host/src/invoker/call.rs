//! What an invocation ends as ([`Outcome`], its [`CallResult`]): the types
//! the invoker's observers (metrics, log streams) and callers (the HTTP
//! `Invoke`, the event workers) share. What it carries in is
//! [`crate::env::InvokeRequest`], the one request type down to the agent.

use std::time::Duration;

use crate::env::{FunctionError, Report};

/// How an invocation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallResult {
    Success(Vec<u8>),
    /// The function (or its environment) failed: Lambda's `Unhandled` error.
    FunctionError(FunctionError),
    /// No environment could be started; not the function's fault (HTTP 500,
    /// retried with backoff for events).
    ServiceError(String),
    /// A restored SnapStart environment's after-restore hook failed
    /// (Lambda's `SnapStartException`, HTTP 400).
    SnapStartError(String),
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
