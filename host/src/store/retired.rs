//! Retired layer versions: a layer version deleted while a function or a
//! published version still names it leaves the API (Get/List answer
//! ResourceNotFound, as in Lambda) but keeps its record and blob here, so
//! those functions keep working; garbage collection drops it once nothing
//! names it any more.

use std::collections::HashSet;

use redb::{ReadableTable, TableDefinition};

use super::model::{FunctionRecord, LayerVersionRecord, VersionRecord};
use super::{get_json, scan_prefix, Result, Store, StoreError, LAYERS};
use crate::util::layer_arn;

pub(super) const LAYERS_RETIRED: TableDefinition<&str, &[u8]> =
    TableDefinition::new("layers_retired");

/// Every layer version ARN a function's `$LATEST` or a version names.
pub(super) fn named_layers(
    functions: &impl ReadableTable<&'static str, &'static [u8]>,
    versions: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<HashSet<String>> {
    let mut named = HashSet::new();
    for f in scan_prefix::<FunctionRecord>(functions, "")? {
        named.extend(f.config.layers);
    }
    for v in scan_prefix::<VersionRecord>(versions, "")? {
        named.extend(v.config.layers);
    }
    Ok(named)
}

/// The ARN of a stored layer version record.
pub(super) fn arn_of(l: &LayerVersionRecord) -> String {
    layer_arn(&l.layer_name, Some(l.version))
}

impl Store {
    /// A layer version for a function that names it: live, or retired.
    pub fn get_layer_for_use(&self, layer: &str, version: u64) -> Result<LayerVersionRecord> {
        if self.shared.is_some() {
            // A fleet keeps no retired layer versions yet: live ones only.
            return self.get_layer(layer, version);
        }
        self.db.read(|r| {
            let key = super::version_key(layer, version);
            if let Some(l) = get_json(&r.open_table(LAYERS)?, &key)? {
                return Ok(l);
            }
            get_json(&r.open_table(LAYERS_RETIRED)?, &key)?.ok_or_else(|| {
                StoreError::NotFound(format!(
                    "Layer version {} does not exist.",
                    layer_arn(layer, Some(version))
                ))
            })
        })
    }
}
