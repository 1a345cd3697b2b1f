//! The one place that maps emberd's errors to HTTP: status code, the
//! `X-Amzn-ErrorType` header and the JSON body (`Type`, `message`, and
//! `Reason` for throttles) that the AWS SDKs parse into exceptions.

use crate::catalog::CatalogError;
use crate::functions::FunctionsError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// An invoke of a SnapStart version whose snapshot is still being taken.
    #[error("{0}")]
    SnapStartNotReady(String),
    /// A restored environment's after-restore hook failed.
    #[error("{0}")]
    SnapStart(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("{0}")]
    InvalidRequestContent(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{message}")]
    TooManyRequests {
        reason: &'static str,
        message: String,
    },
    #[error("{0}")]
    UnknownOperation(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    Service(String),
    /// The store refuses writes for now (low disk space, an I/O error):
    /// 503, retryable; reads go on.
    #[error("{0}")]
    Unavailable(String),
    /// An account's code or layer storage quota (Lambda's code storage).
    #[error("{0}")]
    CodeStorageExceeded(String),
    /// A code-signing config that does not exist (emberd has none).
    #[error("{0}")]
    CodeSigningConfigNotFound(String),
    /// A policy document over Lambda's size limit.
    #[error("{0}")]
    PolicyLengthExceeded(String),
    /// Authenticated, but not allowed (another account's function without
    /// a policy statement granting the call).
    #[error("{0}")]
    AccessDenied(String),
    /// A request that failed authentication (403).
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
}

/// Reasons Lambda gives for a 429.
pub const REASON_RESERVED: &str = "ReservedFunctionConcurrentInvocationLimitExceeded";
pub const REASON_ACCOUNT: &str = "ConcurrentInvocationLimitExceeded";
/// The caller's account has too many bytes of async events queued.
pub const REASON_CALLER: &str = "CallerRateLimitExceeded";

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::NotFound(_)
            | ApiError::UnknownOperation(_)
            | ApiError::CodeSigningConfigNotFound(_) => 404,
            ApiError::Conflict(_) | ApiError::SnapStartNotReady(_) => 409,
            ApiError::InvalidParameter(_)
            | ApiError::SnapStart(_)
            | ApiError::InvalidRequestContent(_)
            | ApiError::CodeStorageExceeded(_)
            | ApiError::PolicyLengthExceeded(_) => 400,
            ApiError::TooLarge(_) => 413,
            ApiError::PreconditionFailed(_) => 412,
            ApiError::TooManyRequests { .. } => 429,
            ApiError::Service(_) => 500,
            ApiError::Unavailable(_) => 503,
            ApiError::Auth(_) | ApiError::AccessDenied(_) => 403,
        }
    }

    pub fn error_type(&self) -> &'static str {
        match self {
            ApiError::NotFound(_) => "ResourceNotFoundException",
            ApiError::Conflict(_) => "ResourceConflictException",
            ApiError::SnapStartNotReady(_) => "SnapStartNotReadyException",
            ApiError::SnapStart(_) => "SnapStartException",
            ApiError::InvalidParameter(_) => "InvalidParameterValueException",
            ApiError::InvalidRequestContent(_) => "InvalidRequestContentException",
            ApiError::TooLarge(_) => "RequestTooLargeException",
            ApiError::TooManyRequests { .. } => "TooManyRequestsException",
            ApiError::UnknownOperation(_) => "UnknownOperationException",
            ApiError::PreconditionFailed(_) => "PreconditionFailedException",
            ApiError::Service(_) | ApiError::Unavailable(_) => "ServiceException",
            ApiError::CodeStorageExceeded(_) => "CodeStorageExceededException",
            ApiError::CodeSigningConfigNotFound(_) => "CodeSigningConfigNotFoundException",
            ApiError::PolicyLengthExceeded(_) => "PolicyLengthExceededException",
            ApiError::AccessDenied(_) => "AccessDeniedException",
            ApiError::Auth(e) => e.error_type(),
        }
    }

    /// JSON body in the shape of Lambda's modeled exceptions.
    pub fn body(&self) -> serde_json::Value {
        let kind = if matches!(self, ApiError::Service(_) | ApiError::Unavailable(_)) {
            "Service"
        } else {
            "User"
        };
        let mut v = serde_json::json!({ "Type": kind, "message": self.to_string() });
        if let ApiError::TooManyRequests { reason, .. } = self {
            v["Reason"] = serde_json::Value::from(*reason);
        }
        v
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ApiError::NotFound(m),
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::Quota(m) => ApiError::CodeStorageExceeded(m),
            StoreError::QueueQuota(m) => ApiError::TooManyRequests {
                reason: REASON_CALLER,
                message: m,
            },
            StoreError::Unavailable(m) => ApiError::Unavailable(m),
            e @ StoreError::Shared(_) => {
                let detail = crate::util::error_chain(&e);
                eprintln!("emberd: fleet store: {detail}");
                ApiError::Unavailable(format!(
                    "The fleet's shared store (NATS JetStream) did not answer: {detail}. Retry later."
                ))
            }
            other if other.is_storage() => {
                // The disk failed (full, say): the store reopens by itself;
                // the client may retry.
                eprintln!(
                    "emberd: store write failed: {}",
                    crate::util::error_chain(&other)
                );
                ApiError::Unavailable(
                    "The function store cannot write to its disk right now. Retry later.".into(),
                )
            }
            other => {
                // Internal detail goes to the log, not to the client.
                eprintln!("emberd: store error: {}", crate::util::error_chain(&other));
                ApiError::Service("An internal error occurred in the function store.".into())
            }
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Store(e) => e.into(),
            CatalogError::MalformedAlias => ApiError::Service(e.to_string()),
            CatalogError::InvalidQualifier(_)
            | CatalogError::MalformedLayerArn(_)
            | CatalogError::NoSuchLayer(_) => ApiError::InvalidParameter(e.to_string()),
        }
    }
}

impl From<FunctionsError> for ApiError {
    fn from(e: FunctionsError) -> Self {
        match e {
            FunctionsError::Store(e) => e.into(),
            FunctionsError::Catalog(e) => e.into(),
            FunctionsError::Package(_)
            | FunctionsError::ReservedAboveLimit { .. }
            | FunctionsError::ProvisionedOutOfRange { .. } => {
                ApiError::InvalidParameter(e.to_string())
            }
        }
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(e: serde_json::Error) -> Self {
        ApiError::InvalidParameter(format!("Could not parse request body: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_status_type_and_reason() {
        let e = ApiError::TooManyRequests {
            reason: REASON_RESERVED,
            message: "Rate Exceeded.".into(),
        };
        assert_eq!(
            (e.status(), e.error_type()),
            (429, "TooManyRequestsException")
        );
        assert_eq!(e.body()["Reason"], REASON_RESERVED);
        let e: ApiError = StoreError::Conflict("exists".into()).into();
        assert_eq!(
            (e.status(), e.error_type()),
            (409, "ResourceConflictException")
        );
        assert_eq!(e.body()["message"], "exists");
        let e: ApiError = StoreError::Json(serde_json::from_str::<u8>("x").unwrap_err()).into();
        assert_eq!(
            (e.status(), e.body()["Type"].as_str()),
            (500, Some("Service"))
        );
        let e: ApiError = StoreError::Unavailable("low".into()).into();
        assert_eq!((e.status(), e.error_type()), (503, "ServiceException"));
        let e: ApiError = StoreError::Quota("full".into()).into();
        assert_eq!(
            (e.status(), e.error_type()),
            (400, "CodeStorageExceededException")
        );
        let e: ApiError = StoreError::QueueQuota("queue".into()).into();
        assert_eq!(
            (e.status(), e.body()["Reason"].as_str()),
            (429, Some(REASON_CALLER))
        );
    }
}
