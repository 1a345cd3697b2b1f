//! The records emberd keeps in its metadata store (serialized as JSON values
//! in redb tables). These are emberd's own shapes; `api::wire` turns them into
//! the Lambda wire format.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Configuration of `$LATEST`, snapshotted into every published version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionConfig {
    pub runtime: String,
    pub role: String,
    pub handler: String,
    pub description: String,
    /// Seconds.
    pub timeout: u32,
    /// MiB.
    pub memory_size: u32,
    pub environment: BTreeMap<String, String>,
    /// MiB of `/tmp`.
    pub ephemeral_storage: u32,
    /// Layer version ARNs.
    pub layers: Vec<String>,
    /// Lambda's `SnapStart.ApplyOn`: snapshot published versions.
    #[serde(default)]
    pub snap_start: SnapStartApplyOn,
}

/// Lambda's `SnapStartApplyOn`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapStartApplyOn {
    #[default]
    None,
    PublishedVersions,
}

impl SnapStartApplyOn {
    /// Lambda's spelling (`None`, `PublishedVersions`).
    pub fn as_str(self) -> &'static str {
        match self {
            SnapStartApplyOn::None => "None",
            SnapStartApplyOn::PublishedVersions => "PublishedVersions",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "None" => Some(SnapStartApplyOn::None),
            "PublishedVersions" => Some(SnapStartApplyOn::PublishedVersions),
            _ => None,
        }
    }
}

/// A published version's `State`: SnapStart versions are `Pending` until
/// their snapshot is stored, `Failed` when their Init failed; all others
/// are `Active` from the start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum VersionState {
    #[default]
    Active,
    Pending,
    Failed {
        /// Lambda's `StateReasonCode`.
        code: String,
        /// `StateReason`.
        reason: String,
    },
}

/// Where a function's (or layer's) code lives.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeRef {
    /// Blob address (hex SHA-256) of the runnable artifact (the wasm module).
    pub blob: String,
    /// Base64 SHA-256 of the uploaded package, as Lambda reports `CodeSha256`.
    pub package_sha256: String,
    /// Bytes of the uploaded package.
    pub size: u64,
    /// The package's native extension modules (`*.so`; python3.11 only):
    /// they decide which guest runs it (`crate::python`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub native: Vec<String>,
}

/// A function and its `$LATEST`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRecord {
    pub name: String,
    pub config: FunctionConfig,
    pub code: CodeRef,
    /// Changes on every update of `$LATEST`; environments of `$LATEST` are
    /// keyed by it, so an update retires them.
    pub revision_id: String,
    pub last_modified: String,
    /// Number the next PublishVersion gets.
    pub next_version: u64,
    pub reserved_concurrency: Option<u32>,
    pub tags: BTreeMap<String, String>,
    /// The resource-based policy's statements (AddPermission).
    #[serde(default)]
    pub policy: Vec<PolicyStatement>,
    /// Changes with every policy change (GetPolicy's `RevisionId`); apart
    /// from `revision_id`, which keys `$LATEST`'s environments.
    #[serde(default)]
    pub policy_revision: String,
    /// Function URLs (at most one per qualifier: `$LATEST` or an alias).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<UrlConfig>,
}

/// A function URL's configuration (CreateFunctionUrlConfig).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlConfig {
    /// The alias it serves (`None`: the unqualified function, `$LATEST`).
    pub qualifier: Option<String>,
    /// The URL's id: 32 lowercase letters and digits, the host name's
    /// first label.
    pub url_id: String,
    /// `NONE` or `AWS_IAM`.
    pub auth_type: String,
    /// `BUFFERED` or `RESPONSE_STREAM`.
    pub invoke_mode: String,
    pub cors: Option<Cors>,
    pub creation_time: String,
    pub last_modified_time: String,
}

/// Lambda's `Cors` of a function URL.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cors {
    pub allow_credentials: bool,
    pub allow_headers: Vec<String>,
    pub allow_methods: Vec<String>,
    pub allow_origins: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age: Option<u32>,
}

/// One statement of a function's resource-based policy, as AddPermission
/// gave it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyStatement {
    pub sid: String,
    pub action: String,
    pub principal: String,
    /// The version or alias it applies to (`None`: the unqualified function).
    pub qualifier: Option<String>,
    pub source_account: Option<String>,
    pub source_arn: Option<String>,
    /// `lambda:FunctionUrlAuthType` condition (`NONE` or `AWS_IAM`):
    /// the statement grants only calls through a function URL of that type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_url_auth_type: Option<String>,
    /// `lambda:InvokedViaFunctionUrl` condition: the statement grants
    /// `InvokeFunction` only to calls through a function URL.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invoked_via_function_url: bool,
}

/// A published, immutable version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub version: u64,
    pub config: FunctionConfig,
    pub code: CodeRef,
    pub revision_id: String,
    pub last_modified: String,
    #[serde(default)]
    pub state: VersionState,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasRecord {
    pub name: String,
    pub function_version: String,
    pub description: String,
    pub revision_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerVersionRecord {
    pub layer_name: String,
    pub version: u64,
    pub description: String,
    pub compatible_runtimes: Vec<String>,
    pub license_info: Option<String>,
    pub code: CodeRef,
    pub created: String,
}

/// Provisioned concurrency asked for one (function, qualifier).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionedRecord {
    pub function: String,
    pub qualifier: String,
    pub requested: u32,
    pub last_modified: String,
}
