//! The store's [`SharedBackend`] on JetStream: records as JSON values in KV
//! buckets (every update carries the revision it read; a lost race is
//! `StoreError::Conflict`), sealed code blobs in the object store.
//!
//! Not atomic across keys (KV has no transactions): a function is created
//! before its version 1, deleted before its children, so a crash in between
//! leaves a function without version 1 or orphaned children, never a child
//! without its function being checked first.

use std::sync::Arc;

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::checked;
use super::keys;
use super::read;
use super::{Bridge, Buckets, FleetError};
use crate::store::model::{
    AliasRecord, FunctionRecord, LayerVersionRecord, ProvisionedRecord, VersionRecord,
};
use crate::store::shared::{Edit, SharedBackend};
use crate::store::{
    not_found_alias, not_found_fn, version_from, version_unreferenced, Result, StoreError,
};
use crate::util::{function_arn, layer_arn};

impl From<FleetError> for StoreError {
    fn from(e: FleetError) -> Self {
        StoreError::Shared(Box::new(e))
    }
}

/// How often a layer version number is retried when hosts race for it.
const NUMBER_RETRIES: usize = 32;

/// Records and code of a fleet.
pub struct FleetRecords {
    bridge: Arc<Bridge>,
    b: Buckets,
}

/// A record and the revision it was read at.
type Rev<T> = Option<(T, u64)>;

async fn entry<T: DeserializeOwned>(kv: &kv::Store, key: &str) -> Result<Rev<T>> {
    match read::entry(kv, key).await? {
        Some(e) if e.live => {
            let v = serde_json::from_slice(&e.value)
                .map_err(|j| FleetError::Json(key.to_string(), j))?;
            Ok(Some((v, e.revision)))
        }
        _ => Ok(None),
    }
}

async fn value<T: DeserializeOwned>(kv: &kv::Store, key: &str) -> Result<Option<T>> {
    Ok(entry(kv, key).await?.map(|(v, _)| v))
}

/// Keys of `kv` starting with `prefix` (but the seed), sorted; deleted
/// keys too (callers read each).
async fn keys_with(kv: &kv::Store, prefix: &str) -> Result<Vec<String>> {
    let mut out = read::keys(kv, prefix).await?;
    out.retain(|k| k != checked::SEED);
    Ok(out)
}

/// Records under keys starting with `prefix`, in key order (a key deleted
/// between the listing and the read is skipped).
async fn list<T: DeserializeOwned>(kv: &kv::Store, prefix: &str) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for k in keys_with(kv, prefix).await? {
        if let Some(v) = value(kv, &k).await? {
            out.push(v);
        }
    }
    Ok(out)
}

fn json<T: Serialize>(v: &T) -> Result<Bytes> {
    Ok(Bytes::from(serde_json::to_vec(v)?))
}

async fn put<T: Serialize>(kv: &kv::Store, key: &str, v: &T) -> Result<()> {
    let v = json(v)?;
    checked::again("put", key, || kv.put(key, v.clone())).await?;
    Ok(())
}

/// Writes `v` at `key` only if `key` is still at `revision`; `conflict` is
/// the error of a lost race.
async fn update<T: Serialize>(
    b: &Buckets,
    kv: &kv::Store,
    key: &str,
    v: &T,
    revision: u64,
    conflict: impl FnOnce() -> StoreError,
) -> Result<()> {
    match checked::write(&b.js, kv, key, json(v)?, Some(revision)).await? {
        true => Ok(()),
        false => Err(conflict()),
    }
}

/// Creates `key`; `conflict` if it exists.
async fn create<T: Serialize>(
    b: &Buckets,
    kv: &kv::Store,
    key: &str,
    v: &T,
    conflict: impl FnOnce() -> StoreError,
) -> Result<()> {
    match checked::write(&b.js, kv, key, json(v)?, None).await? {
        true => Ok(()),
        false => Err(conflict()),
    }
}

async fn delete(kv: &kv::Store, key: &str) -> Result<()> {
    checked::again("delete", key, || kv.delete(key)).await?;
    Ok(())
}

/// Lambda's answer when another update got there first.
fn update_conflict(name: &str) -> StoreError {
    StoreError::Conflict(format!(
        "The operation cannot be performed at this time. An update is in progress for resource: {}",
        function_arn(name, None)
    ))
}

fn version_not_found(name: &str, version: u64) -> StoreError {
    StoreError::NotFound(format!(
        "Function not found: {}",
        function_arn(name, Some(&version.to_string()))
    ))
}

impl FleetRecords {
    pub fn new(bridge: Arc<Bridge>, b: Buckets) -> Self {
        Self { bridge, b }
    }

    /// Runs `f(buckets)` on the fleet runtime and waits for it.
    fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Buckets) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        self.bridge.call(f(self.b.clone()))?
    }
}

impl SharedBackend for FleetRecords {
    fn create_function(
        &self,
        rec: &FunctionRecord,
        publish: bool,
    ) -> Result<Option<VersionRecord>> {
        let mut rec = rec.clone();
        let v = publish.then(|| version_from(&rec));
        if publish {
            rec.next_version += 1;
        }
        self.run(|b| async move {
            let name = rec.name.clone();
            create(&b, &b.functions, &keys::enc(&name), &rec, || {
                StoreError::Conflict(format!("Function already exist: {name}"))
            })
            .await?;
            if let Some(v) = &v {
                put(&b.versions, &keys::version(&rec.name, v.version), v).await?;
            }
            Ok(v)
        })
    }

    fn get_function(&self, name: &str) -> Result<FunctionRecord> {
        let name = name.to_string();
        self.run(|b| async move {
            value(&b.functions, &keys::enc(&name))
                .await?
                .ok_or_else(|| not_found_fn(&name))
        })
    }

    fn update_function(&self, name: &str, edit: Edit<'_>) -> Result<FunctionRecord> {
        let key = keys::enc(name);
        let k = key.clone();
        let (mut rec, rev) = self
            .run(|b| async move { entry::<FunctionRecord>(&b.functions, &k).await })?
            .ok_or_else(|| not_found_fn(name))?;
        edit(&mut rec)?;
        let (n, out) = (name.to_string(), rec.clone());
        self.run(|b| async move {
            update(&b, &b.functions, &key, &out, rev, || update_conflict(&n)).await
        })?;
        Ok(rec)
    }

    fn list_functions(&self) -> Result<Vec<FunctionRecord>> {
        self.run(|b| async move { list(&b.functions, "").await })
    }

    fn delete_function(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.run(|b| async move {
            let key = keys::enc(&name);
            if value::<FunctionRecord>(&b.functions, &key).await?.is_none() {
                return Err(not_found_fn(&name));
            }
            delete(&b.functions, &key).await?;
            let prefix = keys::children_of(&name);
            for kv in [&b.versions, &b.aliases, &b.provisioned] {
                for k in keys_with(kv, &prefix).await? {
                    if value::<serde_json::Value>(kv, &k).await?.is_some() {
                        delete(kv, &k).await?;
                    }
                }
            }
            Ok(())
        })
    }

    fn publish_version(
        &self,
        name: &str,
        description: Option<&str>,
        expected_sha: Option<&str>,
    ) -> Result<VersionRecord> {
        let (name, description) = (name.to_string(), description.map(str::to_string));
        let expected_sha = expected_sha.map(str::to_string);
        self.run(|b| async move {
            let key = keys::enc(&name);
            let (mut rec, rev) = entry::<FunctionRecord>(&b.functions, &key)
                .await?
                .ok_or_else(|| not_found_fn(&name))?;
            if expected_sha.is_some_and(|sha| sha != rec.code.package_sha256) {
                return Err(StoreError::Conflict(
                    "CodeSha256 does not match $LATEST".into(),
                ));
            }
            let newest = list::<VersionRecord>(&b.versions, &keys::children_of(&name))
                .await?
                .pop();
            let mut v = version_from(&rec);
            if let Some(d) = description {
                v.config.description = d;
            }
            match newest {
                Some(n) if n.code == v.code && n.config == v.config => Ok(n),
                _ => {
                    rec.next_version += 1;
                    update(&b, &b.functions, &key, &rec, rev, || update_conflict(&name)).await?;
                    put(&b.versions, &keys::version(&name, v.version), &v).await?;
                    Ok(v)
                }
            }
        })
    }

    fn get_version(&self, name: &str, version: u64) -> Result<VersionRecord> {
        let name = name.to_string();
        self.run(|b| async move {
            value(&b.versions, &keys::version(&name, version))
                .await?
                .ok_or_else(|| version_not_found(&name, version))
        })
    }

    fn list_versions(&self, name: &str) -> Result<Vec<VersionRecord>> {
        let prefix = keys::children_of(name);
        self.run(|b| async move { list(&b.versions, &prefix).await })
    }

    fn delete_version(&self, name: &str, version: u64) -> Result<()> {
        let name = name.to_string();
        self.run(|b| async move {
            let aliases: Vec<AliasRecord> = list(&b.aliases, &keys::children_of(&name)).await?;
            version_unreferenced(&aliases, version)?;
            let key = keys::version(&name, version);
            if value::<VersionRecord>(&b.versions, &key).await?.is_none() {
                return Err(version_not_found(&name, version));
            }
            delete(&b.versions, &key).await?;
            delete(&b.provisioned, &keys::child(&name, &version.to_string())).await
        })
    }

    fn put_alias(&self, function: &str, alias: &AliasRecord, create_new: bool) -> Result<()> {
        let (function, alias) = (function.to_string(), alias.clone());
        self.run(|b| async move {
            if value::<FunctionRecord>(&b.functions, &keys::enc(&function))
                .await?
                .is_none()
            {
                return Err(not_found_fn(&function));
            }
            if alias.function_version != "$LATEST" {
                let missing = || {
                    StoreError::NotFound(format!(
                        "Function not found: {}",
                        function_arn(&function, Some(&alias.function_version))
                    ))
                };
                let v: u64 = alias.function_version.parse().map_err(|_| missing())?;
                if value::<VersionRecord>(&b.versions, &keys::version(&function, v))
                    .await?
                    .is_none()
                {
                    return Err(missing());
                }
            }
            let key = keys::child(&function, &alias.name);
            let arn = function_arn(&function, Some(&alias.name));
            if create_new {
                return create(&b, &b.aliases, &key, &alias, || {
                    StoreError::Conflict(format!("Alias already exists: {arn}"))
                })
                .await;
            }
            let (_, rev) = entry::<AliasRecord>(&b.aliases, &key)
                .await?
                .ok_or_else(|| not_found_alias(&function, &alias.name))?;
            update(&b, &b.aliases, &key, &alias, rev, || {
                StoreError::Conflict(format!(
                    "The operation cannot be performed at this time. An update is in progress for resource: {arn}"
                ))
            })
            .await
        })
    }

    fn get_alias(&self, function: &str, alias: &str) -> Result<AliasRecord> {
        let (function, alias) = (function.to_string(), alias.to_string());
        self.run(|b| async move {
            value(&b.aliases, &keys::child(&function, &alias))
                .await?
                .ok_or_else(|| not_found_alias(&function, &alias))
        })
    }

    fn list_aliases(&self, function: &str) -> Result<Vec<AliasRecord>> {
        let prefix = keys::children_of(function);
        self.run(|b| async move { list(&b.aliases, &prefix).await })
    }

    fn delete_alias(&self, function: &str, alias: &str) -> Result<()> {
        let key = keys::child(function, alias);
        self.run(|b| async move {
            delete(&b.aliases, &key).await?;
            delete(&b.provisioned, &key).await
        })
    }

    fn publish_layer(&self, mut rec: LayerVersionRecord) -> Result<LayerVersionRecord> {
        self.run(|b| async move {
            let counter = keys::enc(&rec.layer_name);
            let mut number = None;
            for _ in 0..NUMBER_RETRIES {
                let taken = match entry::<u64>(&b.layer_next, &counter).await? {
                    Some((n, rev)) => update(&b, &b.layer_next, &counter, &(n + 1), rev, || {
                        StoreError::Conflict(String::new())
                    })
                    .await
                    .map(|()| n),
                    None => create(&b, &b.layer_next, &counter, &2u64, || {
                        StoreError::Conflict(String::new())
                    })
                    .await
                    .map(|()| 1),
                };
                match taken {
                    Ok(n) => {
                        number = Some(n);
                        break;
                    }
                    Err(StoreError::Conflict(_)) => continue,
                    Err(e) => return Err(e),
                }
            }
            rec.version = number.ok_or_else(|| {
                StoreError::Conflict(format!(
                    "Too many concurrent publications of layer {}. Retry.",
                    layer_arn(&rec.layer_name, None)
                ))
            })?;
            put(
                &b.layers,
                &keys::version(&rec.layer_name, rec.version),
                &rec,
            )
            .await?;
            Ok(rec)
        })
    }

    fn get_layer(&self, layer: &str, version: u64) -> Result<LayerVersionRecord> {
        let layer = layer.to_string();
        self.run(|b| async move {
            value(&b.layers, &keys::version(&layer, version))
                .await?
                .ok_or_else(|| {
                    StoreError::NotFound(format!(
                        "Layer version {} does not exist.",
                        layer_arn(&layer, Some(version))
                    ))
                })
        })
    }

    fn list_layers(&self, layer: Option<&str>) -> Result<Vec<LayerVersionRecord>> {
        let prefix = layer.map(keys::children_of).unwrap_or_default();
        self.run(|b| async move { list(&b.layers, &prefix).await })
    }

    fn delete_layer(&self, layer: &str, version: u64) -> Result<()> {
        let key = keys::version(layer, version);
        self.run(|b| async move { delete(&b.layers, &key).await })
    }

    fn put_provisioned(&self, rec: &ProvisionedRecord) -> Result<()> {
        let rec = rec.clone();
        self.run(|b| async move {
            if value::<FunctionRecord>(&b.functions, &keys::enc(&rec.function))
                .await?
                .is_none()
            {
                return Err(not_found_fn(&rec.function));
            }
            put(
                &b.provisioned,
                &keys::child(&rec.function, &rec.qualifier),
                &rec,
            )
            .await
        })
    }

    fn get_provisioned(
        &self,
        function: &str,
        qualifier: &str,
    ) -> Result<Option<ProvisionedRecord>> {
        let key = keys::child(function, qualifier);
        self.run(|b| async move { value(&b.provisioned, &key).await })
    }

    fn delete_provisioned(&self, function: &str, qualifier: &str) -> Result<bool> {
        let key = keys::child(function, qualifier);
        self.run(|b| async move {
            let existed = value::<ProvisionedRecord>(&b.provisioned, &key)
                .await?
                .is_some();
            delete(&b.provisioned, &key).await?;
            Ok(existed)
        })
    }

    fn list_provisioned(&self) -> Result<Vec<ProvisionedRecord>> {
        self.run(|b| async move { list(&b.provisioned, "").await })
    }

    fn upload_code(&self, hex: &str, sealed: &[u8]) -> Result<()> {
        let (hex, sealed) = (hex.to_string(), sealed.to_vec());
        self.run(|b| async move {
            if b.code.info(&hex).await.is_ok() {
                return Ok(());
            }
            b.code
                .put(hex.as_str(), &mut sealed.as_slice())
                .await
                .map_err(|e| FleetError::Object(hex.clone(), Box::new(e)))?;
            Ok(())
        })
    }

    fn download_code(&self, hex: &str) -> Result<Option<Vec<u8>>> {
        use async_nats::jetstream::object_store::GetErrorKind;
        use tokio::io::AsyncReadExt;
        let hex = hex.to_string();
        self.run(|b| async move {
            let mut obj = match b.code.get(&hex).await {
                Ok(o) => o,
                Err(e) if e.kind() == GetErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(FleetError::Object(hex, Box::new(e)).into()),
            };
            let mut out = Vec::new();
            obj.read_to_end(&mut out)
                .await
                .map_err(|e| FleetError::Object(hex.clone(), Box::new(e)))?;
            Ok(Some(out))
        })
    }
}
