//! Lambda's JSON shapes: request bodies (strict: unknown fields are refused)
//! and the responses built from store records.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::store::{
    AliasRecord, CodeRef, FunctionConfig, FunctionRecord, LayerVersionRecord, SnapStartApplyOn,
    VersionRecord, VersionState,
};
use crate::util::{function_arn, layer_arn};

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct CodeIn {
    pub zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    pub s3_bucket: Option<String>,
    #[serde(rename = "S3Key")]
    pub s3_key: Option<String>,
    pub image_uri: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct EnvironmentIn {
    pub variables: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct EphemeralStorageIn {
    pub size: u32,
}

/// Lambda's `SnapStart` request member.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct SnapStartIn {
    pub apply_on: Option<String>,
}

impl SnapStartIn {
    /// The setting, or why it is invalid (Lambda's validation message).
    pub fn apply_on(&self) -> Result<SnapStartApplyOn, String> {
        match self.apply_on.as_deref() {
            None => Ok(SnapStartApplyOn::None),
            Some(s) => SnapStartApplyOn::parse(s).ok_or_else(|| {
                format!("1 validation error detected: Value '{s}' at 'snapStart.applyOn' failed to satisfy constraint: Member must satisfy enum value set: [PublishedVersions, None]")
            }),
        }
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct CreateFunctionIn {
    pub function_name: String,
    pub runtime: Option<String>,
    pub role: Option<String>,
    pub handler: Option<String>,
    pub code: CodeIn,
    pub description: Option<String>,
    pub timeout: Option<u32>,
    pub memory_size: Option<u32>,
    pub publish: Option<bool>,
    pub environment: Option<EnvironmentIn>,
    pub ephemeral_storage: Option<EphemeralStorageIn>,
    pub layers: Option<Vec<String>>,
    pub package_type: Option<String>,
    pub architectures: Option<Vec<String>>,
    pub tags: Option<BTreeMap<String, String>>,
    pub snap_start: Option<SnapStartIn>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct UpdateCodeIn {
    pub zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    pub s3_bucket: Option<String>,
    #[serde(rename = "S3Key")]
    pub s3_key: Option<String>,
    pub image_uri: Option<String>,
    pub publish: Option<bool>,
    pub dry_run: Option<bool>,
    pub revision_id: Option<String>,
    pub architectures: Option<Vec<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct UpdateConfigIn {
    pub role: Option<String>,
    pub handler: Option<String>,
    pub description: Option<String>,
    pub timeout: Option<u32>,
    pub memory_size: Option<u32>,
    pub environment: Option<EnvironmentIn>,
    pub runtime: Option<String>,
    pub revision_id: Option<String>,
    pub layers: Option<Vec<String>>,
    pub ephemeral_storage: Option<EphemeralStorageIn>,
    pub snap_start: Option<SnapStartIn>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct PublishVersionIn {
    pub code_sha256: Option<String>,
    pub description: Option<String>,
    pub revision_id: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct AliasIn {
    pub name: Option<String>,
    pub function_version: Option<String>,
    pub description: Option<String>,
    pub revision_id: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct LayerContentIn {
    pub zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    pub s3_bucket: Option<String>,
    #[serde(rename = "S3Key")]
    pub s3_key: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct PublishLayerIn {
    pub description: Option<String>,
    pub content: LayerContentIn,
    pub compatible_runtimes: Option<Vec<String>>,
    pub license_info: Option<String>,
    pub compatible_architectures: Option<Vec<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct ReservedIn {
    pub reserved_concurrent_executions: u32,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct ProvisionedIn {
    pub provisioned_concurrent_executions: u32,
}

/// `FunctionConfiguration` for `$LATEST` or a version.
pub fn function_configuration(
    name: &str,
    version: &str,
    cfg: &FunctionConfig,
    code: &CodeRef,
    revision: &str,
    modified: &str,
    state: &VersionState,
    layer_sizes: &[(String, u64)],
) -> Value {
    let qualifier = (version != "$LATEST").then_some(version);
    // Lambda: SnapStart is on for published versions only, never $LATEST.
    let optimized = qualifier.is_some() && cfg.snap_start == SnapStartApplyOn::PublishedVersions;
    let layers: Vec<Value> = layer_sizes
        .iter()
        .map(|(arn, size)| json!({"Arn": arn, "CodeSize": size}))
        .collect();
    let mut v = json!({
        "FunctionName": crate::util::split_scoped(name).1,
        "FunctionArn": function_arn(name, qualifier),
        "Runtime": cfg.runtime,
        "Role": cfg.role,
        "Handler": cfg.handler,
        "CodeSize": code.size,
        "Description": cfg.description,
        "Timeout": cfg.timeout,
        "MemorySize": cfg.memory_size,
        "LastModified": modified,
        "CodeSha256": code.package_sha256,
        "Version": version,
        "RevisionId": revision,
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "SnapStart": {
            "ApplyOn": cfg.snap_start.as_str(),
            "OptimizationStatus": if optimized { "On" } else { "Off" },
        },
        "PackageType": "Zip",
        "Architectures": ["x86_64"],
        "EphemeralStorage": {"Size": cfg.ephemeral_storage},
        "Layers": layers,
    });
    if !cfg.environment.is_empty() {
        v["Environment"] = json!({"Variables": cfg.environment});
    }
    match state {
        VersionState::Active => {}
        VersionState::Pending => {
            v["State"] = json!("Pending");
            v["StateReason"] = json!("Lambda is creating the SnapStart snapshot of this version.");
            v["StateReasonCode"] = json!("Creating");
        }
        VersionState::Failed { code, reason } => {
            v["State"] = json!("Failed");
            v["StateReason"] = json!(reason);
            v["StateReasonCode"] = json!(code);
        }
    }
    v
}

pub fn latest_configuration(f: &FunctionRecord, layer_sizes: &[(String, u64)]) -> Value {
    function_configuration(
        &f.name,
        "$LATEST",
        &f.config,
        &f.code,
        &f.revision_id,
        &f.last_modified,
        &VersionState::Active,
        layer_sizes,
    )
}

pub fn version_configuration(
    name: &str,
    v: &VersionRecord,
    layer_sizes: &[(String, u64)],
) -> Value {
    function_configuration(
        name,
        &v.version.to_string(),
        &v.config,
        &v.code,
        &v.revision_id,
        &v.last_modified,
        &v.state,
        layer_sizes,
    )
}

pub fn alias_configuration(function: &str, a: &AliasRecord) -> Value {
    json!({
        "AliasArn": function_arn(function, Some(&a.name)),
        "Name": a.name,
        "FunctionVersion": a.function_version,
        "Description": a.description,
        "RevisionId": a.revision_id,
    })
}

pub fn layer_version(l: &LayerVersionRecord, location: &str) -> Value {
    json!({
        "Content": {"Location": location, "CodeSha256": l.code.package_sha256, "CodeSize": l.code.size},
        "LayerArn": layer_arn(&l.layer_name, None),
        "LayerVersionArn": layer_arn(&l.layer_name, Some(l.version)),
        "Description": l.description,
        "CreatedDate": l.created,
        "Version": l.version,
        "CompatibleRuntimes": l.compatible_runtimes,
        "LicenseInfo": l.license_info,
    })
}

pub fn layer_list_item(l: &LayerVersionRecord) -> Value {
    json!({
        "LayerVersionArn": layer_arn(&l.layer_name, Some(l.version)),
        "Version": l.version,
        "Description": l.description,
        "CreatedDate": l.created,
        "CompatibleRuntimes": l.compatible_runtimes,
        "LicenseInfo": l.license_info,
    })
}
