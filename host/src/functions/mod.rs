//! The functions service: every operation on a function that touches more
//! than the store. Creating, updating or deleting a function, a version, an
//! alias or a concurrency setting also retires environments (`pool`),
//! forgets metrics and async configs (`metrics`, `events`), starts image
//! builds or compiles (`linux`, `aot`) and reconciles provisioned
//! concurrency (`catalog`); the HTTP handlers call one operation here and
//! render its result. Reads go to [`Functions::store`] directly.

mod code;
mod concurrency;

use std::sync::Arc;

pub use code::Package;

use crate::catalog::{reconcile, CatalogError};
use crate::events::Events;
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::store::{
    AliasRecord, CodeRef, FunctionConfig, FunctionRecord, Store, StoreError, VersionRecord,
    VersionState,
};
use crate::util::{now_lambda, uuid4};

/// What the host can run, decided at startup.
#[derive(Clone, Default)]
pub struct Capabilities {
    /// The Linux runtimes this host can boot (none, with the reason, when
    /// it has no hardware virtualization or no kernel and images).
    pub linux: crate::linux::Offer,
    /// The Linux side of the launcher, when offered (images are prepared
    /// as soon as a function's code or layers change).
    pub linux_guests: Option<Arc<crate::linux::LinuxGuests>>,
    /// The wasm compiler (None: wasm runs interpreted), for compiling as
    /// soon as a function's code or memory changes.
    pub aot: Option<Arc<crate::aot::Aot>>,
    /// SnapStart (None: versions published with SnapStart fail, `InternalError`).
    pub snapstart: Option<Arc<crate::snapstart::SnapStart>>,
    /// Where python3.11 runs (None: on a Linux guest only, as offered).
    pub python: Option<Arc<crate::python::Python>>,
}

impl Capabilities {
    /// The guest of a function of `runtime` whose ZIP holds the native
    /// extensions `native`, or why it cannot run here.
    pub fn guest(
        &self,
        runtime: &str,
        native: &[String],
    ) -> Result<crate::python::Guest, crate::python::PythonError> {
        use crate::python::{Guest, PythonError, RUNTIME};
        match &self.python {
            Some(p) if runtime == RUNTIME => p.choose(native),
            _ if crate::linux::is_linux_runtime(runtime) => self
                .linux
                .check(runtime)
                .map(|_| Guest::Linux)
                .map_err(PythonError::Linux),
            _ => Ok(Guest::Wasm),
        }
    }
}

/// Why an operation on a function failed.
#[derive(Debug, thiserror::Error)]
pub enum FunctionsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The deployment package is missing, not base64, or holds nothing
    /// this runtime can run (see [`Package`]).
    #[error(transparent)]
    Package(#[from] code::PackageError),
    /// Reserving this many would leave other functions less than nothing.
    #[error("Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [0] (host limit {host_limit}).")]
    ReservedAboveLimit { host_limit: u32 },
    #[error("ProvisionedConcurrentExecutions must be 1..{host_limit}")]
    ProvisionedOutOfRange { host_limit: u32 },
}

/// The functions service (see the module comment).
pub struct Functions {
    store: Arc<Store>,
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    events: Arc<Events>,
    caps: Capabilities,
}

/// A function to create: everything but its code and revision.
pub struct NewFunction {
    pub name: String,
    pub config: FunctionConfig,
    pub tags: std::collections::BTreeMap<String, String>,
}

impl Functions {
    pub fn new(
        store: Arc<Store>,
        pool: Arc<Pool>,
        metrics: Arc<Metrics>,
        events: Arc<Events>,
        caps: Capabilities,
    ) -> Arc<Self> {
        Arc::new(Functions {
            store,
            pool,
            metrics,
            events,
            caps,
        })
    }

    /// The function store, for reads.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The environment pool, for its state (limits, targets, memory).
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// What this host can run.
    pub fn caps(&self) -> &Capabilities {
        &self.caps
    }

    /// Starts the pool's targets over from the stored provisioned configs.
    pub fn reconcile(&self) -> Result<(), StoreError> {
        reconcile(&self.store, &self.pool)
    }

    /// Creates a function from `package` (and publishes version 1 with
    /// `publish`): the record and the version published, if any.
    pub fn create(
        &self,
        account: &str,
        new: NewFunction,
        package: Package<'_>,
        publish: bool,
    ) -> Result<(FunctionRecord, Option<VersionRecord>), FunctionsError> {
        // Cheap existence check first, so a duplicate create stores no blob.
        if self.store.get_function(&new.name).is_ok() {
            return Err(
                StoreError::Conflict(format!("Function already exist: {}", new.name)).into(),
            );
        }
        let (code, pin) = self.store_code((account, 0), package, &new.config)?;
        let rec = FunctionRecord {
            name: new.name,
            config: new.config,
            code,
            revision_id: uuid4(),
            last_modified: now_lambda(),
            next_version: 1,
            reserved_concurrency: None,
            tags: new.tags,
            policy: Vec::new(),
            policy_revision: String::new(),
            urls: Vec::new(),
        };
        let published = self.store.create_function(&rec, publish)?;
        drop(pin);
        self.prepare_images(&rec.config, &rec.code);
        if let Some(v) = &published {
            self.after_publish(&rec.name, v);
        }
        Ok((rec, published))
    }

    /// Checks that `package` holds what `current`'s runtime runs, storing
    /// nothing (UpdateFunctionCode's `DryRun`).
    pub fn check_code(
        &self,
        current: &FunctionRecord,
        zip_b64: Option<&str>,
    ) -> Result<(), FunctionsError> {
        let package = code::decode_required(zip_b64)?;
        code::runnable(&package, &current.config.runtime, &current.config.handler)?;
        Ok(())
    }

    /// Replaces the code of `current`'s `$LATEST` (if its revision is still
    /// `expected`, when given) and publishes it with `publish`. `$LATEST`'s
    /// environments retire.
    pub fn replace_code(
        &self,
        account: &str,
        current: &FunctionRecord,
        expected: Option<String>,
        package: Package<'_>,
        publish: bool,
    ) -> Result<(FunctionRecord, Option<VersionRecord>), FunctionsError> {
        let name = &current.name;
        let (code, pin) =
            self.store_code((account, current.code.size), package, &current.config)?;
        let rec = self.store.update_function(name, |r| {
            if expected.as_deref().is_some_and(|e| e != r.revision_id) {
                return Err(StoreError::Conflict(
                    "The function changed while the code was being updated".into(),
                ));
            }
            r.code = code;
            r.revision_id = uuid4();
            r.last_modified = now_lambda();
            Ok(())
        })?;
        drop(pin);
        self.pool.retire(name, Some("$LATEST"));
        self.prepare_images(&rec.config, &rec.code);
        let published = match publish {
            true => Some(self.publish(name, None, None)?),
            false => None,
        };
        Ok((rec, published))
    }

    /// Publishes `$LATEST` as a version (see `Store::publish_version`); a
    /// new SnapStart version is `Pending` and its snapshot is taken now.
    pub fn publish(
        &self,
        name: &str,
        description: Option<&str>,
        expected_sha: Option<&str>,
    ) -> Result<VersionRecord, FunctionsError> {
        let v = self
            .store
            .publish_version(name, description, expected_sha)?;
        self.after_publish(name, &v);
        Ok(v)
    }

    /// Starts the snapshot of a version that is `Pending` (a version
    /// returned again because nothing changed is left as it is).
    fn after_publish(&self, name: &str, v: &VersionRecord) {
        if v.state != VersionState::Pending {
            return;
        }
        match &self.caps.snapstart {
            Some(s) => s.start(name, v),
            None => {
                let failed = VersionState::Failed {
                    code: "InternalError".into(),
                    reason: "This emberd cannot take SnapStart snapshots (no vault)".into(),
                };
                let _ = self
                    .store
                    .set_version_state(name, v.version, &v.revision_id, failed);
            }
        }
    }

    /// Replaces the configuration of `current`'s `$LATEST`, if nobody
    /// changed it since `current` was read. `$LATEST`'s environments retire.
    pub fn reconfigure(
        &self,
        current: &FunctionRecord,
        cfg: FunctionConfig,
    ) -> Result<FunctionRecord, FunctionsError> {
        let expected = current.revision_id.clone();
        let rec = self.store.update_function(&current.name, |r| {
            if r.revision_id != expected {
                return Err(StoreError::Conflict(
                    "The function changed while its configuration was being updated".into(),
                ));
            }
            r.config = cfg;
            r.revision_id = uuid4();
            r.last_modified = now_lambda();
            Ok(())
        })?;
        self.pool.retire(&current.name, Some("$LATEST"));
        self.prepare_images(&rec.config, &rec.code);
        Ok(rec)
    }

    /// Deletes a function with everything that follows it: its
    /// environments, reservation, metrics and async configs.
    pub fn delete(&self, name: &str) -> Result<(), FunctionsError> {
        let versions = self.store.list_versions(name).unwrap_or_default();
        self.store.delete_function(name)?;
        if let Some(s) = &self.caps.snapstart {
            for v in versions {
                s.vault().remove(name, &v.version.to_string());
            }
        }
        self.pool.retire(name, None);
        self.pool.set_reserved(name, None);
        self.metrics.forget(name, None);
        // Its async configs go with it (a new function of the same name
        // starts from the defaults); failing that is only logged.
        if let Err(e) = self.events.forget_function(name) {
            eprintln!("emberd: {}", crate::util::error_chain(&e));
        }
        Ok(self.reconcile()?)
    }

    /// Deletes one published version, its environments and its metrics.
    pub fn delete_version(&self, name: &str, version: u64) -> Result<(), FunctionsError> {
        self.store.delete_version(name, version)?;
        let q = version.to_string();
        if let Some(s) = &self.caps.snapstart {
            s.vault().remove(name, &q);
        }
        self.pool.retire(name, Some(&q));
        self.metrics.forget(name, Some(&q));
        Ok(self.reconcile()?)
    }

    /// Stores an alias that already exists (it may point elsewhere now:
    /// provisioned concurrency follows).
    pub fn update_alias(&self, function: &str, alias: &AliasRecord) -> Result<(), FunctionsError> {
        self.store.put_alias(function, alias, false)?;
        Ok(self.reconcile()?)
    }

    /// Deletes an alias, and its function URL config as Lambda does (a
    /// URL left behind would answer 404 and still be listed).
    pub fn delete_alias(&self, function: &str, alias: &str) -> Result<(), FunctionsError> {
        self.store.delete_alias(function, alias)?;
        let serves = |u: &crate::store::UrlConfig| u.qualifier.as_deref() == Some(alias);
        if self.store.get_function(function)?.urls.iter().any(serves) {
            self.store.update_function(function, |f| {
                f.urls.retain(|u| !serves(u));
                Ok(())
            })?;
        }
        Ok(self.reconcile()?)
    }

    /// Starts building a Linux function's code and layer images, or compiling a
    /// wasm function (no-op when the host offers neither).
    fn prepare_images(&self, cfg: &FunctionConfig, code: &CodeRef) {
        let guest = self.caps.guest(&cfg.runtime, &code.native);
        let linux = guest == Ok(crate::python::Guest::Linux);
        if let (true, Some(g)) = (linux, &self.caps.linux_guests) {
            g.prepare(&code.blob, &cfg.layers);
        }
        let python = self.caps.python.as_ref().and_then(|p| p.wasm.clone());
        match (&self.caps.aot, python) {
            (Some(aot), Some(py)) if !linux && cfg.runtime == crate::python::RUNTIME => {
                // The runtime's artefact, shared by every python function of this size.
                let reactor = py.reactor.clone();
                aot.prepare(&py.code_id, cfg.memory_size, move || Ok(reactor.to_vec()));
            }
            (Some(aot), _) if guest == Ok(crate::python::Guest::Wasm) => {
                crate::aot::prepare(aot, &self.store, &code.blob, cfg.memory_size);
            }
            _ => {}
        }
    }
}
