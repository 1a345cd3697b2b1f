//! Environment specs from resolved versions: the pool's provisioned
//! targets ([`reconcile`]) and the spec of an on-demand environment
//! ([`lazy_spec`]).

use std::sync::Arc;

use super::{resolve, Resolved};
use crate::env::{EnvError, EnvSpec, LaunchError};
use crate::pool::{Pool, SpecFn, Target};
use crate::snapstart::vault::SnapKey;
use crate::store::{Store, StoreError, VersionState};

/// Rebuilds the pool's provisioned targets from the store (after any change
/// to provisioned configs, aliases or versions). The code is loaded and
/// verified once here; every environment of a target shares it.
pub fn reconcile(store: &Store, pool: &Pool) -> Result<(), StoreError> {
    let mut targets = Vec::new();
    for rec in store.list_provisioned()? {
        let Ok(r) = resolve(store, &rec.function, Some(&rec.qualifier)) else {
            continue;
        };
        let code = Arc::new(store.read_blob(&r.code.blob).map_err(StoreError::from)?);
        let template = spec_template(&r, code);
        targets.push(Target {
            function: rec.function.clone(),
            qualifier: rec.qualifier.clone(),
            key: r.key(),
            count: rec.requested,
            memory_mib: r.config.memory_size,
            spec: Arc::new(move || -> SpecFn {
                let t = template.clone();
                Box::new(move |env_id, work_dir| {
                    Ok(EnvSpec {
                        env_id,
                        work_dir,
                        ..t
                    })
                })
            }),
        });
    }
    pool.set_targets(targets);
    Ok(())
}

/// An environment spec for `r` minus the per-environment id and directory.
pub fn spec_template(r: &Resolved, code: Arc<Vec<u8>>) -> EnvSpec {
    EnvSpec {
        env_id: 0,
        function_name: r.name.clone(),
        function_version: r.version.clone(),
        handler: r.config.handler.clone(),
        runtime: r.config.runtime.clone(),
        code,
        code_blob: r.code.blob.clone(),
        layers: r.config.layers.clone(),
        ephemeral_mib: r.config.ephemeral_storage,
        env_vars: r.config.environment.clone(),
        memory_mib: r.config.memory_size,
        timeout_ms: r.config.timeout.saturating_mul(1000),
        work_dir: Default::default(),
        // A SnapStart version restores its snapshot once it is stored.
        snapshot: (r.snap_start() && r.state == VersionState::Active).then(|| SnapKey {
            function: r.name.clone(),
            version: r.version.clone(),
            revision: r.revision_id.clone(),
        }),
    }
}

/// A spec builder for an on-demand environment: loads (and verifies) the
/// code only if no warm environment is available.
pub fn lazy_spec(store: &Arc<Store>, r: &Resolved) -> SpecFn {
    let store = store.clone();
    let template = spec_template(r, Arc::new(Vec::new()));
    let blob = r.code.blob.clone();
    Box::new(move |env_id, work_dir| {
        let code = store
            .read_blob(&blob)
            .map_err(|e| EnvError::Launch(LaunchError::CodeBlob(e)))?;
        Ok(EnvSpec {
            env_id,
            work_dir,
            code: Arc::new(code),
            ..template
        })
    })
}
