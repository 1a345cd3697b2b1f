//! Qualifier resolution: `$LATEST`, a version number or an alias, to the
//! version record it runs ([`Resolved`]).

use super::CatalogError;
use crate::pool::VersionKey;
use crate::store::{CodeRef, FunctionConfig, FunctionRecord, Store, StoreError, VersionState};
use crate::util::valid_name;

/// A qualifier resolved to the version it runs.
pub struct Resolved {
    pub name: String,
    /// `$LATEST` or the version number.
    pub version: String,
    pub config: FunctionConfig,
    pub code: CodeRef,
    pub revision_id: String,
    pub last_modified: String,
    /// `Active` for `$LATEST`; a version's own state (SnapStart).
    pub state: VersionState,
}

impl Resolved {
    /// The pool key: environments are reused only within this exact revision.
    /// Whether environments of this version start from its SnapStart
    /// snapshot (a published version of a SnapStart function).
    pub fn snap_start(&self) -> bool {
        self.version != "$LATEST"
            && self.config.snap_start == crate::store::SnapStartApplyOn::PublishedVersions
    }

    pub fn key(&self) -> VersionKey {
        VersionKey {
            function: self.name.clone(),
            version: self.version.clone(),
            revision: self.revision_id.clone(),
        }
    }
}

/// The version `qualifier` (default `$LATEST`) of function `name` runs.
pub fn resolve(
    store: &Store,
    name: &str,
    qualifier: Option<&str>,
) -> Result<Resolved, CatalogError> {
    resolve_in(store, name, qualifier, || store.get_function(name))
}

/// [`resolve`] for a caller that has just read the function's record `f`
/// (a function URL call): `$LATEST` is not read again.
pub fn resolve_record(
    store: &Store,
    f: FunctionRecord,
    qualifier: Option<&str>,
) -> Result<Resolved, CatalogError> {
    let name = f.name.clone();
    resolve_in(store, &name, qualifier, move || Ok(f))
}

/// `latest` reads the function's record, when `$LATEST` is what runs.
fn resolve_in(
    store: &Store,
    name: &str,
    qualifier: Option<&str>,
    latest: impl FnOnce() -> Result<FunctionRecord, StoreError>,
) -> Result<Resolved, CatalogError> {
    let q = qualifier.unwrap_or("$LATEST");
    if q == "$LATEST" {
        let f = latest()?;
        return Ok(Resolved {
            name: name.into(),
            version: "$LATEST".into(),
            config: f.config,
            code: f.code,
            revision_id: f.revision_id,
            last_modified: f.last_modified,
            state: VersionState::Active,
        });
    }
    let version = match q.parse::<u64>() {
        Ok(v) => v,
        Err(_) => {
            if !valid_name(q) {
                return Err(CatalogError::InvalidQualifier(q.to_string()));
            }
            let a = store.get_alias(name, q)?;
            if a.function_version == "$LATEST" {
                return resolve_in(store, name, None, latest);
            }
            a.function_version
                .parse::<u64>()
                .map_err(|_| CatalogError::MalformedAlias)?
        }
    };
    let v = store.get_version(name, version)?;
    Ok(Resolved {
        name: name.into(),
        version: version.to_string(),
        config: v.config,
        code: v.code,
        revision_id: v.revision_id,
        last_modified: v.last_modified,
        state: v.state,
    })
}
