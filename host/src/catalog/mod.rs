//! What a function name and qualifier mean, apart from HTTP: resolving a
//! qualifier to the version it runs ([`resolve`]), the layers a
//! configuration names ([`layers`]), and the environment specs the pool
//! starts from them, provisioned ([`provisioned::reconcile`]) or on demand
//! ([`provisioned::lazy_spec`]). The API handlers, the invoker and the event
//! workers all come here; nothing here knows of requests or replies.

pub mod layers;
pub mod provisioned;
pub mod resolve;

pub use layers::{layer_blobs, layer_sizes};
pub use provisioned::{lazy_spec, reconcile, spec_template};
pub use resolve::{resolve, resolve_record, Resolved};

use crate::store::StoreError;

/// Why a name, qualifier or layer ARN names nothing runnable.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A qualifier that is neither `$LATEST`, a version number nor an alias name.
    #[error("Qualifier {0:?} is invalid")]
    InvalidQualifier(String),
    /// An alias whose stored version is not a number (never written so).
    #[error("alias points at a malformed version")]
    MalformedAlias,
    #[error("Layer version ARN {0} is malformed")]
    MalformedLayerArn(String),
    #[error("Layer version {0} does not exist.")]
    NoSuchLayer(String),
}
