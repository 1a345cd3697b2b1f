//! The store's layer versions and provisioned-concurrency records (beside
//! the functions, versions and aliases of `mod.rs`): each operation on the
//! embedded database, or on a fleet's shared backend.

use super::*;

impl Store {
    // ---- layers ----------------------------------------------------------

    /// Publishes the next version of layer `rec.layer_name` (its number is
    /// assigned here) and returns the stored record.
    pub fn publish_layer(&self, mut rec: LayerVersionRecord) -> Result<LayerVersionRecord> {
        if let Some(shared) = &self.shared {
            return shared.publish_layer(rec);
        }
        self.check_space()?;
        let w = self.db.begin_write()?;
        {
            let mut next = w.open_table(LAYER_NEXT)?;
            let n = next
                .get(rec.layer_name.as_str())?
                .map(|g| g.value())
                .unwrap_or(1);
            next.insert(rec.layer_name.as_str(), n + 1)?;
            rec.version = n;
            put_json(
                &mut w.open_table(LAYERS)?,
                &version_key(&rec.layer_name, n),
                &rec,
            )?;
        }
        if self.limits.account_layers.is_some() {
            let account = crate::util::split_scoped(&rec.layer_name).0;
            let used = limits::layer_bytes(
                &w.open_table(LAYERS)?,
                &w.open_table(retired::LAYERS_RETIRED)?,
                account,
            )?;
            limits::within(used, self.limits.account_layers, account, "layers")?;
        }
        w.commit()?;
        Ok(rec)
    }

    pub fn get_layer(&self, layer: &str, version: u64) -> Result<LayerVersionRecord> {
        if let Some(shared) = &self.shared {
            return shared.get_layer(layer, version);
        }
        self.db.read(|r| {
            get_json(&r.open_table(LAYERS)?, &version_key(layer, version))?.ok_or_else(|| {
                StoreError::NotFound(format!(
                    "Layer version {} does not exist.",
                    crate::util::layer_arn(layer, Some(version))
                ))
            })
        })
    }

    pub fn list_layer_versions(&self, layer: &str) -> Result<Vec<LayerVersionRecord>> {
        if let Some(shared) = &self.shared {
            return shared.list_layers(Some(layer));
        }
        self.db
            .read(|r| scan_prefix(&r.open_table(LAYERS)?, &child_key(layer, "")))
    }

    /// Deletes a layer version (idempotent, as in Lambda). If a function or
    /// version still names it, it is retired instead (see [`retired`]).
    pub fn delete_layer(&self, layer: &str, version: u64) -> Result<()> {
        if let Some(shared) = &self.shared {
            return shared.delete_layer(layer, version);
        }
        let key = version_key(layer, version);
        let w = self.db.begin_write()?;
        {
            let mut t = w.open_table(LAYERS)?;
            let rec: Option<LayerVersionRecord> = get_json(&t, &key)?;
            t.remove(key.as_str())?;
            if let Some(rec) = rec {
                let named =
                    retired::named_layers(&w.open_table(FUNCTIONS)?, &w.open_table(VERSIONS)?)?;
                if named.contains(&retired::arn_of(&rec)) {
                    put_json(&mut w.open_table(retired::LAYERS_RETIRED)?, &key, &rec)?;
                }
            }
        }
        w.commit()?;
        self.collect_garbage()?;
        Ok(())
    }

    // ---- provisioned concurrency ----------------------------------------

    pub fn put_provisioned(&self, rec: &ProvisionedRecord) -> Result<()> {
        if let Some(shared) = &self.shared {
            return shared.put_provisioned(rec);
        }
        self.check_space()?;
        let w = self.db.begin_write()?;
        {
            if get_json::<FunctionRecord>(&w.open_table(FUNCTIONS)?, &rec.function)?.is_none() {
                return Err(not_found_fn(&rec.function));
            }
            put_json(
                &mut w.open_table(PROVISIONED)?,
                &child_key(&rec.function, &rec.qualifier),
                rec,
            )?;
        }
        w.commit()?;
        Ok(())
    }

    pub fn get_provisioned(
        &self,
        function: &str,
        qualifier: &str,
    ) -> Result<Option<ProvisionedRecord>> {
        if let Some(shared) = &self.shared {
            return shared.get_provisioned(function, qualifier);
        }
        self.db
            .read(|r| get_json(&r.open_table(PROVISIONED)?, &child_key(function, qualifier)))
    }

    pub fn delete_provisioned(&self, function: &str, qualifier: &str) -> Result<bool> {
        if let Some(shared) = &self.shared {
            return shared.delete_provisioned(function, qualifier);
        }
        let w = self.db.begin_write()?;
        let existed = w
            .open_table(PROVISIONED)?
            .remove(child_key(function, qualifier).as_str())?
            .is_some();
        w.commit()?;
        Ok(existed)
    }

    pub fn list_provisioned(&self) -> Result<Vec<ProvisionedRecord>> {
        if let Some(shared) = &self.shared {
            return shared.list_provisioned();
        }
        self.db
            .read(|r| scan_prefix(&r.open_table(PROVISIONED)?, ""))
    }

    /// Sum of reserved concurrency over all functions except `except`.
    pub fn reserved_total(&self, except: &str) -> Result<u64> {
        if let Some(shared) = &self.shared {
            return Ok(shared
                .list_functions()?
                .iter()
                .filter(|f| f.name != except)
                .filter_map(|f| f.reserved_concurrency)
                .map(u64::from)
                .sum());
        }
        self.db.read(|r| {
            let all: Vec<FunctionRecord> = scan_prefix(&r.open_table(FUNCTIONS)?, "")?;
            Ok(all
                .iter()
                .filter(|f| f.name != except)
                .filter_map(|f| f.reserved_concurrency)
                .map(u64::from)
                .sum())
        })
    }
}
