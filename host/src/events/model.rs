//! What the event queue stores (queued events, event invoke configs, attempt
//! log entries, destination-queue messages) and the wire shapes built from
//! them: `FunctionEventInvokeConfig` and Lambda's destination record.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::util::function_arn;

/// One accepted event, until it is delivered or given up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Queue order (and the key of its payload).
    pub seq: u64,
    /// The event's idempotency key: the request id the function sees on
    /// every attempt, and the `x-amzn-RequestId` the caller got.
    pub request_id: String,
    pub function: String,
    /// What the caller invoked (None: `$LATEST`), resolved at each attempt.
    pub qualifier: Option<String>,
    pub received_ms: u64,
    /// Not to be attempted before this time (retry delays, backoff).
    pub not_before_ms: u64,
    /// Invocations started so far (`approximateInvokeCount`).
    pub invocations: u32,
    /// Function errors so far.
    pub errors: u32,
    /// Consecutive throttles / service errors.
    pub transient: u32,
    /// The attempt-log entry of the invocation in progress; one left behind
    /// by a crash marks an interrupted attempt.
    pub open_attempt: Option<u64>,
    /// The last function error (for an on-failure record after expiry).
    pub last_error: Option<LastError>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    pub version: String,
    pub response: Value,
}

impl EventRecord {
    pub fn qualifier_or_latest(&self) -> &str {
        self.qualifier.as_deref().unwrap_or("$LATEST")
    }
}

/// `PutFunctionEventInvokeConfig` for one function qualifier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InvokeConfig {
    pub function: String,
    /// `$LATEST`, a version number or an alias.
    pub qualifier: String,
    pub maximum_retry_attempts: u32,
    pub maximum_event_age_in_seconds: u32,
    /// Destination ARNs as given (validated; see [`super::dest`]).
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
    /// Unix seconds.
    pub last_modified: f64,
}

pub const DEFAULT_RETRIES: u32 = 2;
pub const DEFAULT_MAX_AGE: u32 = 21600;

impl InvokeConfig {
    /// What applies when no config was put.
    pub fn default_for(function: &str, qualifier: &str) -> Self {
        Self {
            function: function.into(),
            qualifier: qualifier.into(),
            maximum_retry_attempts: DEFAULT_RETRIES,
            maximum_event_age_in_seconds: DEFAULT_MAX_AGE,
            on_success: None,
            on_failure: None,
            last_modified: 0.0,
        }
    }

    /// The `FunctionEventInvokeConfig` shape.
    pub fn wire(&self) -> Value {
        let dest = |q: &Option<String>| match q {
            Some(arn) => json!({ "Destination": arn }),
            None => json!({}),
        };
        json!({
            "LastModified": self.last_modified,
            "FunctionArn": function_arn(&self.function, Some(&self.qualifier)),
            "MaximumRetryAttempts": self.maximum_retry_attempts,
            "MaximumEventAgeInSeconds": self.maximum_event_age_in_seconds,
            "DestinationConfig": {
                "OnSuccess": dest(&self.on_success),
                "OnFailure": dest(&self.on_failure),
            },
        })
    }
}

/// One delivery attempt in the attempt log: written (durably) before the
/// payload goes to an environment, completed when the outcome is known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub id: u64,
    pub request_id: String,
    pub function: String,
    /// 1 for the first invocation of the event.
    pub attempt: u32,
    /// Which emberd run made it (increments at every start).
    pub boot: u64,
    pub start_ms: u64,
    pub end_ms: Option<u64>,
    pub env_id: Option<u64>,
    /// `Success`, `FunctionError:<type>`, `ServiceError`, or `Interrupted`
    /// (emberd stopped mid-attempt; closed at the next start).
    pub result: Option<String>,
}

impl AttemptRecord {
    pub fn wire(&self) -> Value {
        json!({
            "Id": self.id,
            "RequestId": self.request_id,
            "FunctionName": crate::util::split_scoped(&self.function).1,
            "Attempt": self.attempt,
            "Boot": self.boot,
            "StartMs": self.start_ms,
            "EndMs": self.end_ms,
            "Environment": self.env_id,
            "Result": self.result,
        })
    }
}

/// A message in one of emberd's local destination queues.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueMessage {
    pub message_id: String,
    pub sent_ms: u64,
    pub body: Value,
}

impl QueueMessage {
    pub fn wire(&self) -> Value {
        json!({
            "MessageId": self.message_id,
            "SentTimestamp": self.sent_ms,
            "Body": self.body,
        })
    }
}

/// Why a record goes to a destination (`requestContext.condition`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    Success,
    RetriesExhausted,
    EventAgeExceeded,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Success => "Success",
            Condition::RetriesExhausted => "RetriesExhausted",
            Condition::EventAgeExceeded => "EventAgeExceeded",
        }
    }
}

/// The response side of a destination record: executed version, whether
/// it was a function error, and the response (or error) payload.
pub struct Response<'a> {
    pub version: &'a str,
    pub function_error: bool,
    pub payload: &'a Value,
}

/// A payload as it appears in a record: its JSON, or a string if it is not
/// JSON (responses need not be), or null when empty.
pub fn payload_value(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// Lambda's destination record for `ev`.
pub fn destination_record(
    ev: &EventRecord,
    condition: Condition,
    timestamp: &str,
    request_payload: &[u8],
    response: Option<Response<'_>>,
) -> Value {
    let mut v = json!({
        "version": "1.0",
        "timestamp": timestamp,
        "requestContext": {
            "requestId": ev.request_id,
            "functionArn": function_arn(&ev.function, Some(ev.qualifier_or_latest())),
            "condition": condition.as_str(),
            "approximateInvokeCount": ev.invocations,
        },
        "requestPayload": payload_value(request_payload),
    });
    if let Some(r) = response {
        let mut ctx = json!({ "statusCode": 200, "executedVersion": r.version });
        if r.function_error {
            ctx["functionError"] = Value::from("Unhandled");
        }
        v["responseContext"] = ctx;
        v["responsePayload"] = r.payload.clone();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_has_lambdas_shape() {
        let ev = EventRecord {
            seq: 1,
            request_id: "rid".into(),
            function: "f".into(),
            qualifier: None,
            received_ms: 0,
            not_before_ms: 0,
            invocations: 3,
            errors: 3,
            transient: 0,
            open_attempt: None,
            last_error: None,
        };
        let err = json!({"errorType": "Runtime.Trap", "errorMessage": "boom"});
        let r = destination_record(
            &ev,
            Condition::RetriesExhausted,
            "2026-01-01T00:00:00.000Z",
            br#"{"a":1}"#,
            Some(Response {
                version: "$LATEST",
                function_error: true,
                payload: &err,
            }),
        );
        assert_eq!(r["requestContext"]["condition"], "RetriesExhausted");
        assert_eq!(r["requestContext"]["approximateInvokeCount"], 3);
        assert!(r["requestContext"]["functionArn"]
            .as_str()
            .unwrap()
            .ends_with(":function:f:$LATEST"));
        assert_eq!(r["requestPayload"], json!({"a": 1}));
        assert_eq!(r["responseContext"]["functionError"], "Unhandled");
        assert_eq!(r["responsePayload"], err);
        let ok = destination_record(&ev, Condition::Success, "t", b"", None);
        assert!(ok["requestPayload"].is_null() && ok.get("responseContext").is_none());
        assert_eq!(payload_value(b"not json"), Value::from("not json"));
    }
}
