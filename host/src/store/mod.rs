//! emberd's store: function, version, alias, layer and concurrency metadata in
//! redb (an embedded, pure-Rust, ACID key-value store: every write transaction
//! is fsync'd on commit), and code in the encrypted blob directory
//! ([`blob`]). Writes go blob first (durable), metadata second (one commit),
//! so a create or update either happened or did not; blobs no record names
//! are collected at open and after deletes, except those an in-flight put
//! has pinned ([`pins`]) until its record commits.

pub mod blob;
pub mod dbfile;
mod layers;
pub mod limits;
pub mod model;
pub mod pins;
mod retired;
pub mod shared;
pub mod usage;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use blob::{sha256_hex, BlobError, BlobStore};
pub use limits::{Limits, StoreArgs};
pub use model::*;
pub use pins::Pin;
pub use shared::SharedBackend;

const FUNCTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("functions");
const VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("versions");
const ALIASES: TableDefinition<&str, &[u8]> = TableDefinition::new("aliases");
const LAYERS: TableDefinition<&str, &[u8]> = TableDefinition::new("layers");
const LAYER_NEXT: TableDefinition<&str, u64> = TableDefinition::new("layer_next");
const PROVISIONED: TableDefinition<&str, &[u8]> = TableDefinition::new("provisioned");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("metadata store")]
    Db(#[source] Box<redb::Error>),
    #[error("blob store")]
    Blob(#[from] BlobError),
    #[error("corrupt metadata record")]
    Json(#[from] serde_json::Error),
    #[error("creating {0}")]
    Io(PathBuf, #[source] std::io::Error),
    /// Writes are refused for now (free-space floor); retryable.
    #[error("{0}")]
    Unavailable(String),
    /// An account's code or layer storage quota.
    #[error("{0}")]
    Quota(String),
    /// An account's quota of queued async event bytes.
    #[error("{0}")]
    QueueQuota(String),
    /// A fleet's shared backend failed (unreachable, timed out): retryable.
    #[error("the fleet's shared store")]
    Shared(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// True for errors of the disk rather than of the request: the store
    /// answers them as retryable (503) and recovers by itself.
    pub fn is_storage(&self) -> bool {
        match self {
            StoreError::Unavailable(_) | StoreError::Io(..) => true,
            StoreError::Blob(BlobError::Io { .. }) => true,
            other => dbfile::is_io(other),
        }
    }
}

macro_rules! db_err {
    ($($t:ty),*) => {$(impl From<$t> for StoreError {
        fn from(e: $t) -> Self { StoreError::Db(Box::new(e.into())) }
    })*};
}
db_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub type Result<T> = std::result::Result<T, StoreError>;

/// Key of a per-function child record: `function/child`. Names never hold
/// `/` (see `util::valid_name`), so a prefix scan of `function/` is exact.
fn child_key(function: &str, child: &str) -> String {
    format!("{function}/{child}")
}

/// Versions are stored zero-padded so the key order is numeric order.
fn version_key(function: &str, v: u64) -> String {
    child_key(function, &format!("{v:012}"))
}

fn get_json<T: DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    k: &str,
) -> Result<Option<T>> {
    match t.get(k)? {
        Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
        None => Ok(None),
    }
}

/// Every record whose key starts with `prefix` (also used by the event store).
pub(crate) fn scan_prefix<T: DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for item in t.range(prefix..)? {
        let (k, v) = item?;
        if !k.value().starts_with(prefix) {
            break;
        }
        out.push(serde_json::from_slice(v.value())?);
    }
    Ok(out)
}

fn put_json<T: Serialize>(
    t: &mut redb::Table<&'static str, &'static [u8]>,
    k: &str,
    v: &T,
) -> Result<()> {
    t.insert(k, serde_json::to_vec(v)?.as_slice())?;
    Ok(())
}

/// The open store.
pub struct Store {
    db: dbfile::DbFile,
    pub blobs: BlobStore,
    pins: pins::Pins,
    dir: PathBuf,
    limits: Limits,
    /// A fleet's shared records and code (None: this host's own store).
    shared: Option<Arc<dyn SharedBackend>>,
}

impl Store {
    /// Opens (or creates) the store under `dir`: `meta.redb`, `blobs/`, and
    /// the 0600 key file `master.key`. Unreferenced blobs are removed.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(dir.into(), e))?;
        let blobs = BlobStore::open(&dir.join("blobs"), &dir.join("master.key"))?;
        let db = dbfile::DbFile::open(&dir.join("meta.redb"))?;
        let w = db.begin_write()?;
        w.open_table(FUNCTIONS)?;
        w.open_table(VERSIONS)?;
        w.open_table(ALIASES)?;
        w.open_table(LAYERS)?;
        w.open_table(LAYER_NEXT)?;
        w.open_table(PROVISIONED)?;
        w.open_table(retired::LAYERS_RETIRED)?;
        w.commit()?;
        Self::assemble(dir, db, blobs, None)
    }

    fn assemble(
        dir: &Path,
        db: dbfile::DbFile,
        blobs: BlobStore,
        shared: Option<Arc<dyn SharedBackend>>,
    ) -> Result<Self> {
        let store = Self {
            db,
            blobs,
            pins: pins::Pins::default(),
            dir: dir.to_path_buf(),
            limits: Limits::default(),
            shared,
        };
        store.collect_garbage()?;
        Ok(store)
    }

    /// A fleet host's store: records in `shared`, code blobs cached under
    /// `dir/blobs` sealed with the operator's key file `key` (which must
    /// exist: every host of a fleet uses the same one). The local database
    /// is still opened (it holds nothing the fleet shares).
    pub fn open_shared(dir: &Path, key: &Path, shared: Arc<dyn SharedBackend>) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(dir.into(), e))?;
        let blobs = BlobStore::open_with_existing_key(&dir.join("blobs"), key)?;
        let db = dbfile::DbFile::open(&dir.join("meta.redb"))?;
        Self::assemble(dir, db, blobs, Some(shared))
    }

    /// Whether this store is a fleet's (records shared with other hosts).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// The plaintext of code blob `hex`, verified. A fleet host fetches a
    /// blob it has not seen from the shared code store on first use and
    /// keeps it (sealed) in its blob directory.
    pub fn read_blob(&self, hex: &str) -> std::result::Result<Vec<u8>, BlobError> {
        match (self.blobs.get(hex), &self.shared) {
            (Err(BlobError::Missing(_)), Some(shared)) => {
                let sealed = shared
                    .download_code(hex)
                    .map_err(|e| BlobError::Remote(Box::new(e)))?
                    .ok_or_else(|| BlobError::Missing(hex.into()))?;
                self.blobs.put_sealed(hex, &sealed)
            }
            (r, _) => r,
        }
    }

    /// The same store enforcing `limits` (free-space floor, quotas).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Refuses writes while the data directory is below the free-space floor.
    pub fn check_space(&self) -> Result<()> {
        limits::check_space(&self.dir, self.limits.min_free)
    }

    /// Refuses (before any blob is written) code that would take `account`
    /// over its code storage quota with `add` more bytes.
    pub fn precheck_code(&self, account: &str, add: u64) -> Result<()> {
        if self.shared.is_some() {
            // Per-account quotas are not enforced across a fleet yet.
            return Ok(());
        }
        if self.limits.account_code.is_none() {
            return Ok(());
        }
        let used = self.db.read(|r| {
            limits::code_bytes(&r.open_table(FUNCTIONS)?, &r.open_table(VERSIONS)?, account)
        })?;
        limits::within(
            used.saturating_add(add),
            self.limits.account_code,
            account,
            "function code",
        )
    }

    /// [`Self::precheck_code`] for layers.
    pub fn precheck_layers(&self, account: &str, add: u64) -> Result<()> {
        if self.shared.is_some() {
            // Per-account quotas are not enforced across a fleet yet.
            return Ok(());
        }
        if self.limits.account_layers.is_none() {
            return Ok(());
        }
        let used = self.db.read(|r| {
            limits::layer_bytes(
                &r.open_table(LAYERS)?,
                &r.open_table(retired::LAYERS_RETIRED)?,
                account,
            )
        })?;
        limits::within(
            used.saturating_add(add),
            self.limits.account_layers,
            account,
            "layers",
        )
    }

    /// Inside write `w`: `account`'s code storage after the change.
    fn check_code_quota(&self, w: &redb::WriteTransaction, account: &str) -> Result<()> {
        if self.limits.account_code.is_none() {
            return Ok(());
        }
        let used =
            limits::code_bytes(&w.open_table(FUNCTIONS)?, &w.open_table(VERSIONS)?, account)?;
        limits::within(used, self.limits.account_code, account, "function code")
    }

    /// Stores `data` as a blob and pins it: the returned pin keeps garbage
    /// collection off the blob until it is dropped, which the caller does
    /// only after the record naming the blob has committed (or failed). The
    /// pin is taken before the blob store looks for an existing copy, so a
    /// deduplicated put is as safe as a fresh write.
    pub fn put_blob(&self, data: &[u8]) -> Result<Pin> {
        self.check_space()?;
        let hex = sha256_hex(data);
        let pin = self.pins.pin(&hex);
        self.blobs.put_as(&hex, data)?;
        if let Some(shared) = &self.shared {
            // Uploaded before any record names it, as on disk.
            shared.upload_code(&hex, &self.blobs.sealed(&hex)?)?;
        }
        Ok(pin)
    }

    /// Whether the code blob `hex` is still stored (not yet collected).
    pub fn has_blob(&self, hex: &str) -> bool {
        self.blobs.exists(hex)
    }

    /// Removes blobs that no function, version or layer names and no
    /// in-flight put has pinned.
    pub fn collect_garbage(&self) -> Result<usize> {
        if let Some(shared) = &self.shared {
            // A fleet host's blob directory is a cache of the shared code:
            // what no shared record names goes (the shared copy is not
            // collected yet).
            let held = self.pins.hold();
            let live = shared::live_blobs(shared.as_ref())?;
            return self.remove_blobs_except(&live, &held);
        }
        self.drop_unnamed_retired()?;
        // Pin set locked before the snapshot and until the removals are done
        // (see `Pins::hold`): pins and unpins wait, so "named or pinned" is
        // decided on one consistent view.
        let held = self.pins.hold();
        let live = self.db.read(|r| {
            let mut live = HashSet::new();
            for f in scan_prefix::<FunctionRecord>(&r.open_table(FUNCTIONS)?, "")? {
                live.insert(f.code.blob);
            }
            for v in scan_prefix::<VersionRecord>(&r.open_table(VERSIONS)?, "")? {
                live.insert(v.code.blob);
            }
            for t in [LAYERS, retired::LAYERS_RETIRED] {
                for l in scan_prefix::<LayerVersionRecord>(&r.open_table(t)?, "")? {
                    live.insert(l.code.blob);
                }
            }
            Ok(live)
        })?;
        self.remove_blobs_except(&live, &held)
    }

    /// Removes every blob neither `live` nor `held` names.
    fn remove_blobs_except(&self, live: &HashSet<String>, held: &pins::Held<'_>) -> Result<usize> {
        let mut removed = 0;
        for b in self.blobs.list()? {
            if !live.contains(&b) && !held.contains(&b) {
                self.blobs.remove(&b)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Drops retired layer versions that no function or version names any
    /// more (their blobs are then collected).
    fn drop_unnamed_retired(&self) -> Result<()> {
        let w = self.db.begin_write()?;
        {
            let named = retired::named_layers(&w.open_table(FUNCTIONS)?, &w.open_table(VERSIONS)?)?;
            let mut t = w.open_table(retired::LAYERS_RETIRED)?;
            let unnamed: Vec<String> = scan_prefix::<LayerVersionRecord>(&t, "")?
                .iter()
                .filter(|l| !named.contains(&retired::arn_of(l)))
                .map(|l| version_key(&l.layer_name, l.version))
                .collect();
            if unnamed.is_empty() {
                return Ok(());
            }
            for k in &unnamed {
                t.remove(k.as_str())?;
            }
        }
        w.commit()?;
        Ok(())
    }

    // ---- functions -------------------------------------------------------

    /// Creates a function (its code blob must already be stored); conflict if
    /// the name exists. With `publish`, version 1 is created in the same commit.
    pub fn create_function(
        &self,
        rec: &FunctionRecord,
        publish: bool,
    ) -> Result<Option<VersionRecord>> {
        if let Some(shared) = &self.shared {
            return shared.create_function(rec, publish);
        }
        self.check_space()?;
        let w = self.db.begin_write()?;
        let mut published = None;
        {
            let mut t = w.open_table(FUNCTIONS)?;
            if get_json::<FunctionRecord>(&t, &rec.name)?.is_some() {
                return Err(StoreError::Conflict(format!(
                    "Function already exist: {}",
                    rec.name
                )));
            }
            let mut rec = rec.clone();
            if publish {
                let v = version_from(&rec);
                rec.next_version += 1;
                put_json(
                    &mut w.open_table(VERSIONS)?,
                    &version_key(&rec.name, v.version),
                    &v,
                )?;
                published = Some(v);
            }
            put_json(&mut t, &rec.name, &rec)?;
        }
        self.check_code_quota(&w, crate::util::split_scoped(&rec.name).0)?;
        w.commit()?;
        Ok(published)
    }

    pub fn get_function(&self, name: &str) -> Result<FunctionRecord> {
        if let Some(shared) = &self.shared {
            return shared.get_function(name);
        }
        self.db
            .read(|r| get_json(&r.open_table(FUNCTIONS)?, name)?.ok_or_else(|| not_found_fn(name)))
    }

    /// Read-modify-write of `$LATEST` in one transaction. `edit` may refuse.
    pub fn update_function<F>(&self, name: &str, edit: F) -> Result<FunctionRecord>
    where
        F: FnOnce(&mut FunctionRecord) -> Result<()>,
    {
        if let Some(shared) = &self.shared {
            return shared.update_function(name, &mut shared::once(edit));
        }
        self.check_space()?;
        let w = self.db.begin_write()?;
        let (rec, grew) = {
            let mut t = w.open_table(FUNCTIONS)?;
            let mut rec: FunctionRecord = get_json(&t, name)?.ok_or_else(|| not_found_fn(name))?;
            let before = rec.code.size;
            edit(&mut rec)?;
            put_json(&mut t, name, &rec)?;
            let grew = rec.code.size > before;
            (rec, grew)
        };
        if grew {
            self.check_code_quota(&w, crate::util::split_scoped(name).0)?;
        }
        w.commit()?;
        Ok(rec)
    }

    /// Functions in name order, starting after `marker`, at most `max`.
    pub fn list_functions(
        &self,
        marker: Option<&str>,
        max: usize,
    ) -> Result<(Vec<FunctionRecord>, Option<String>)> {
        if let Some(shared) = &self.shared {
            let mut all = shared.list_functions()?;
            all.sort_by(|a, b| a.name.cmp(&b.name));
            let page: Vec<_> = all
                .into_iter()
                .filter(|f| marker.is_none_or(|m| f.name.as_str() > m))
                .take(max.saturating_add(1))
                .collect();
            return Ok(page_of(page, max));
        }
        self.db.read(|r| {
            let t = r.open_table(FUNCTIONS)?;
            let mut out = Vec::new();
            let start = marker.unwrap_or("");
            for item in t.range(start..)? {
                let (k, v) = item?;
                if marker.is_some() && k.value() == start {
                    continue;
                }
                if out.len() == max {
                    return Ok((out, Some(k.value().to_string())).map_marker());
                }
                out.push(serde_json::from_slice(v.value())?);
            }
            Ok((out, None))
        })
    }

    /// Deletes a function with all its versions, aliases and provisioned
    /// concurrency, then collects its blobs.
    pub fn delete_function(&self, name: &str) -> Result<()> {
        if let Some(shared) = &self.shared {
            return shared.delete_function(name);
        }
        let w = self.db.begin_write()?;
        {
            let mut t = w.open_table(FUNCTIONS)?;
            if t.remove(name)?.is_none() {
                return Err(not_found_fn(name));
            }
            let prefix = child_key(name, "");
            for table in [VERSIONS, ALIASES, PROVISIONED] {
                let mut t = w.open_table(table)?;
                let keys: Vec<String> = t
                    .range(prefix.as_str()..)?
                    .filter_map(|i| i.ok())
                    .map(|(k, _)| k.value().to_string())
                    .take_while(|k| k.starts_with(&prefix))
                    .collect();
                for k in keys {
                    t.remove(k.as_str())?;
                }
            }
        }
        w.commit()?;
        self.collect_garbage()?;
        Ok(())
    }

    // ---- versions --------------------------------------------------------

    /// Publishes `$LATEST` as a new version, unless the newest version already
    /// has the same code and configuration (then that one is returned, as
    /// Lambda does). `expected_sha` guards against publishing other code.
    pub fn publish_version(
        &self,
        name: &str,
        description: Option<&str>,
        expected_sha: Option<&str>,
    ) -> Result<VersionRecord> {
        if let Some(shared) = &self.shared {
            return shared.publish_version(name, description, expected_sha);
        }
        self.check_space()?;
        let w = self.db.begin_write()?;
        let v = {
            let mut ft = w.open_table(FUNCTIONS)?;
            let mut rec: FunctionRecord = get_json(&ft, name)?.ok_or_else(|| not_found_fn(name))?;
            if let Some(sha) = expected_sha {
                if sha != rec.code.package_sha256 {
                    return Err(StoreError::Conflict(
                        "CodeSha256 does not match $LATEST".into(),
                    ));
                }
            }
            let mut vt = w.open_table(VERSIONS)?;
            let newest: Option<VersionRecord> = scan_prefix(&vt, &child_key(name, ""))?.pop();
            let mut v = version_from(&rec);
            if let Some(d) = description {
                v.config.description = d.to_string();
            }
            match newest {
                Some(n) if n.code == v.code && n.config == v.config => n,
                _ => {
                    rec.next_version += 1;
                    put_json(&mut vt, &version_key(name, v.version), &v)?;
                    put_json(&mut ft, name, &rec)?;
                    v
                }
            }
        };
        self.check_code_quota(&w, crate::util::split_scoped(name).0)?;
        w.commit()?;
        Ok(v)
    }

    pub fn get_version(&self, name: &str, version: u64) -> Result<VersionRecord> {
        if let Some(shared) = &self.shared {
            return shared.get_version(name, version);
        }
        self.db.read(|r| {
            get_json(&r.open_table(VERSIONS)?, &version_key(name, version))?.ok_or_else(|| {
                StoreError::NotFound(format!(
                    "Function not found: {}",
                    crate::util::function_arn(name, Some(&version.to_string()))
                ))
            })
        })
    }

    pub fn list_versions(&self, name: &str) -> Result<Vec<VersionRecord>> {
        if let Some(shared) = &self.shared {
            return shared.list_versions(name);
        }
        self.db
            .read(|r| scan_prefix(&r.open_table(VERSIONS)?, &child_key(name, "")))
    }

    /// Sets a version's `State` (its SnapStart snapshot is stored, or its
    /// Init failed). A version deleted meanwhile is `NotFound`; one
    /// published anew (another revision) is left alone.
    pub fn set_version_state(
        &self,
        name: &str,
        version: u64,
        revision_id: &str,
        state: VersionState,
    ) -> Result<()> {
        let w = self.db.begin_write()?;
        {
            let mut t = w.open_table(VERSIONS)?;
            let key = version_key(name, version);
            let mut v: VersionRecord = get_json(&t, &key)?.ok_or_else(|| {
                StoreError::NotFound(format!("Function not found: {name}:{version}"))
            })?;
            if v.revision_id != revision_id {
                return Ok(());
            }
            v.state = state;
            put_json(&mut t, &key, &v)?;
        }
        w.commit()?;
        Ok(())
    }

    /// Deletes one published version; refused while an alias points at it.
    pub fn delete_version(&self, name: &str, version: u64) -> Result<()> {
        if let Some(shared) = &self.shared {
            return shared.delete_version(name, version);
        }
        let w = self.db.begin_write()?;
        {
            let aliases: Vec<AliasRecord> =
                scan_prefix(&w.open_table(ALIASES)?, &child_key(name, ""))?;
            version_unreferenced(&aliases, version)?;
            if w.open_table(VERSIONS)?
                .remove(version_key(name, version).as_str())?
                .is_none()
            {
                return Err(StoreError::NotFound(format!(
                    "Function not found: {}",
                    crate::util::function_arn(name, Some(&version.to_string()))
                )));
            }
            w.open_table(PROVISIONED)?
                .remove(child_key(name, &version.to_string()).as_str())?;
        }
        w.commit()?;
        self.collect_garbage()?;
        Ok(())
    }

    // ---- aliases ---------------------------------------------------------

    /// Creates (`create`) or replaces an alias after checking its version exists.
    pub fn put_alias(&self, function: &str, alias: &AliasRecord, create: bool) -> Result<()> {
        if let Some(shared) = &self.shared {
            return shared.put_alias(function, alias, create);
        }
        self.check_space()?;
        let w = self.db.begin_write()?;
        {
            if get_json::<FunctionRecord>(&w.open_table(FUNCTIONS)?, function)?.is_none() {
                return Err(not_found_fn(function));
            }
            if alias.function_version != "$LATEST" {
                let v: u64 = alias
                    .function_version
                    .parse()
                    .map_err(|_| StoreError::NotFound("Function version not found".into()))?;
                if get_json::<VersionRecord>(&w.open_table(VERSIONS)?, &version_key(function, v))?
                    .is_none()
                {
                    return Err(StoreError::NotFound(format!(
                        "Function not found: {}",
                        crate::util::function_arn(function, Some(&alias.function_version))
                    )));
                }
            }
            let mut t = w.open_table(ALIASES)?;
            let key = child_key(function, &alias.name);
            let exists = get_json::<AliasRecord>(&t, &key)?.is_some();
            if create && exists {
                return Err(StoreError::Conflict(format!(
                    "Alias already exists: {}",
                    crate::util::function_arn(function, Some(&alias.name))
                )));
            }
            if !create && !exists {
                return Err(not_found_alias(function, &alias.name));
            }
            put_json(&mut t, &key, alias)?;
        }
        w.commit()?;
        Ok(())
    }

    pub fn get_alias(&self, function: &str, alias: &str) -> Result<AliasRecord> {
        if let Some(shared) = &self.shared {
            return shared.get_alias(function, alias);
        }
        self.db.read(|r| {
            get_json(&r.open_table(ALIASES)?, &child_key(function, alias))?
                .ok_or_else(|| not_found_alias(function, alias))
        })
    }

    pub fn list_aliases(&self, function: &str) -> Result<Vec<AliasRecord>> {
        if let Some(shared) = &self.shared {
            return shared.list_aliases(function);
        }
        self.db
            .read(|r| scan_prefix(&r.open_table(ALIASES)?, &child_key(function, "")))
    }

    pub fn delete_alias(&self, function: &str, alias: &str) -> Result<()> {
        if let Some(shared) = &self.shared {
            return shared.delete_alias(function, alias);
        }
        let w = self.db.begin_write()?;
        {
            w.open_table(ALIASES)?
                .remove(child_key(function, alias).as_str())?;
            w.open_table(PROVISIONED)?
                .remove(child_key(function, alias).as_str())?;
        }
        w.commit()?;
        Ok(())
    }
}

/// A page of at most `max` of `items` (one more than `max` means more follow).
fn page_of(mut items: Vec<FunctionRecord>, max: usize) -> (Vec<FunctionRecord>, Option<String>) {
    if items.len() > max {
        items.truncate(max);
        return (items, None).map_marker();
    }
    (items, None)
}

trait MapMarker {
    fn map_marker(self) -> Self;
}
impl MapMarker for (Vec<FunctionRecord>, Option<String>) {
    /// The marker handed back is the last name returned (the next page starts
    /// after it), so it stays valid even if that next function is deleted.
    fn map_marker(self) -> Self {
        let m = self.0.last().map(|f| f.name.clone());
        (self.0, m)
    }
}

pub(crate) fn version_from(rec: &FunctionRecord) -> VersionRecord {
    VersionRecord {
        version: rec.next_version,
        config: rec.config.clone(),
        code: rec.code.clone(),
        revision_id: crate::util::uuid4(),
        last_modified: crate::util::now_lambda(),
        // A SnapStart version serves once its snapshot is stored.
        state: match rec.config.snap_start {
            SnapStartApplyOn::PublishedVersions => VersionState::Pending,
            SnapStartApplyOn::None => VersionState::Active,
        },
    }
}

/// Refuses to delete `version` while one of `aliases` points at it.
pub(crate) fn version_unreferenced(aliases: &[AliasRecord], version: u64) -> Result<()> {
    match aliases
        .iter()
        .find(|a| a.function_version == version.to_string())
    {
        Some(a) => Err(StoreError::Conflict(format!(
            "Unable to delete version because the following aliases reference it: [{}]",
            a.name
        ))),
        None => Ok(()),
    }
}

pub(crate) fn not_found_fn(name: &str) -> StoreError {
    StoreError::NotFound(format!(
        "Function not found: {}",
        crate::util::function_arn(name, None)
    ))
}

pub(crate) fn not_found_alias(function: &str, alias: &str) -> StoreError {
    StoreError::NotFound(format!(
        "Alias not found: {}",
        crate::util::function_arn(function, Some(alias))
    ))
}

#[cfg(test)]
mod gc_tests;
#[cfg(test)]
mod tests;
