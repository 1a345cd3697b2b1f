//! Layers: PublishLayerVersion, GetLayerVersion, GetLayerVersionByArn,
//! ListLayerVersions, ListLayers, DeleteLayerVersion. Layer content is stored like function code
//! (encrypted, content-addressed); the archive's shape is checked.

use base64::Engine;
use serde_json::{json, Value};

use super::wire::{self, PublishLayerIn};
use super::{ApiError, App, Reply, Req};
use crate::store::{CodeRef, LayerVersionRecord};
use crate::util::{now_lambda, scoped_name, split_scoped, valid_name};

/// The stored (account-scoped) name of a layer named by name or ARN; an ARN
/// of another account names nothing this caller can see.
fn layer_name(raw: &str, account: &str) -> Result<String, ApiError> {
    let (arn_account, name) = match raw.split(':').collect::<Vec<_>>().as_slice() {
        ["arn", _, "lambda", _, a, "layer", n] => (Some(a.to_string()), n.to_string()),
        _ => (None, raw.to_string()),
    };
    if !valid_name(&name) {
        return Err(ApiError::InvalidParameter(format!(
            "Layer name {raw:?} is invalid"
        )));
    }
    if arn_account.is_some_and(|a| a != account) {
        return Err(ApiError::NotFound(format!("Layer not found: {raw}")));
    }
    Ok(scoped_name(account, &name))
}

fn version_number(v: &str) -> Result<u64, ApiError> {
    v.parse()
        .map_err(|_| ApiError::InvalidParameter(format!("Layer version {v:?} is not a number")))
}

pub fn publish(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let input: PublishLayerIn = req.json()?;
    let name = layer_name(raw, req.account())?;
    let b64 = input.content.zip_file.as_deref().ok_or_else(|| {
        let why = if input.content.s3_bucket.is_some() || input.content.s3_key.is_some() {
            "S3 content is not supported by emberd"
        } else {
            "Content.ZipFile is required"
        };
        ApiError::InvalidParameter(format!("{why}; upload the layer as ZipFile."))
    })?;
    if input
        .compatible_architectures
        .as_ref()
        .is_some_and(|a| a.iter().any(|x| x != "x86_64"))
    {
        return Err(ApiError::InvalidParameter(
            "Only the x86_64 architecture is available on this host".into(),
        ));
    }
    let package = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| ApiError::InvalidParameter("ZipFile is not valid base64".into()))?;
    crate::code::check_archive(&package).map_err(|e| ApiError::InvalidParameter(e.to_string()))?;
    app.functions
        .store()
        .precheck_layers(req.account(), package.len() as u64)?;
    // Pinned until the layer version record naming the blob has committed.
    let pin = app.functions.store().put_blob(&package)?;
    let digest = <sha2::Sha256 as sha2::Digest>::digest(&package);
    let rec = LayerVersionRecord {
        layer_name: name,
        version: 0,
        description: input.description.unwrap_or_default(),
        compatible_runtimes: input.compatible_runtimes.unwrap_or_default(),
        license_info: input.license_info,
        code: CodeRef {
            blob: pin.hex().to_string(),
            package_sha256: base64::engine::general_purpose::STANDARD.encode(digest),
            size: package.len() as u64,
            native: Vec::new(),
        },
        created: now_lambda(),
    };
    let rec = app.functions.store().publish_layer(rec)?;
    drop(pin);
    Ok(Reply::json(
        201,
        wire::layer_version(&rec, &location(app, &rec)),
    ))
}

fn location(app: &App, l: &LayerVersionRecord) -> String {
    format!(
        "{}/ember/layers/{}/{}",
        app.base_url,
        split_scoped(&l.layer_name).1,
        l.version
    )
}

pub fn get(app: &App, req: &Req, raw: &str, v: &str) -> Result<Reply, ApiError> {
    let name = layer_name(raw, req.account())?;
    let rec = app.functions.store().get_layer(&name, version_number(v)?)?;
    Ok(Reply::json(
        200,
        wire::layer_version(&rec, &location(app, &rec)),
    ))
}

pub fn list(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let name = layer_name(raw, req.account())?;
    // Newest first, as Lambda lists them.
    let mut all: Vec<Value> = app
        .functions
        .store()
        .list_layer_versions(&name)?
        .iter()
        .map(wire::layer_list_item)
        .collect();
    all.reverse();
    super::paging::page_reply("LayerVersions", all, req)
}

pub fn delete(app: &App, req: &Req, raw: &str, v: &str) -> Result<Reply, ApiError> {
    let name = layer_name(raw, req.account())?;
    app.functions
        .store()
        .delete_layer(&name, version_number(v)?)?;
    Ok(Reply::empty(204))
}

/// ListLayers: each of the caller's layers with its newest version that
/// matches the filters (all layers here are x86_64).
pub fn list_layers(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let runtime = req.q("CompatibleRuntime");
    let arch_ok = req
        .q("CompatibleArchitecture")
        .is_none_or(|a| a == "x86_64");
    let mut latest: std::collections::BTreeMap<String, LayerVersionRecord> = Default::default();
    for l in app
        .functions
        .store()
        .account_layer_versions(req.account())?
    {
        if !arch_ok || runtime.is_some_and(|r| !l.compatible_runtimes.iter().any(|c| c == r)) {
            continue;
        }
        match latest.get(&l.layer_name) {
            Some(have) if have.version >= l.version => {}
            _ => {
                latest.insert(l.layer_name.clone(), l);
            }
        }
    }
    let all: Vec<Value> = latest
        .values()
        .map(|l| {
            json!({
                "LayerName": split_scoped(&l.layer_name).1,
                "LayerArn": crate::util::layer_arn(&l.layer_name, None),
                "LatestMatchingVersion": wire::layer_list_item(l),
            })
        })
        .collect();
    super::paging::page_reply("Layers", all, req)
}

/// GetLayerVersionByArn (`GET /2018-10-31/layers?find=LayerVersion&Arn=`).
pub fn get_by_arn(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let arn = req
        .q("Arn")
        .ok_or_else(|| ApiError::InvalidParameter("Arn is required".into()))?;
    match arn.split(':').collect::<Vec<_>>().as_slice() {
        ["arn", _, "lambda", _, _, "layer", _, v] => {
            let unversioned = &arn[..arn.len() - v.len() - 1];
            get(app, req, unversioned, v)
        }
        _ => Err(ApiError::InvalidParameter(format!(
            "{arn:?} is not a layer version ARN (arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION)"
        ))),
    }
}

/// `GET /2018-10-31/layers`: ListLayers, or GetLayerVersionByArn when the
/// query says `find=LayerVersion` (both operations share the path).
pub fn list_or_find(app: &App, req: &Req) -> Result<Reply, ApiError> {
    match req.q("find") {
        Some("LayerVersion") => get_by_arn(app, req),
        Some(other) => Err(ApiError::InvalidParameter(format!(
            "find={other} is not an operation (find=LayerVersion is)"
        ))),
        None => list_layers(app, req),
    }
}
