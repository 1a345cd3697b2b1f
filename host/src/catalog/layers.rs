//! The layer versions a function configuration names.

use super::CatalogError;
use crate::store::Store;
use crate::util::{scoped_name, valid_name};

/// Each layer ARN must name a layer version (live, or retired while a
/// function named it); returns (arn, size).
pub fn layer_sizes(store: &Store, arns: &[String]) -> Result<Vec<(String, u64)>, CatalogError> {
    arns.iter()
        .map(|arn| {
            let Some((account, name, v)) =
                crate::linux::parse_layer_arn(arn).filter(|(_, n, _)| valid_name(n))
            else {
                return Err(CatalogError::MalformedLayerArn(arn.clone()));
            };
            // Stored ARNs were checked against their function's account
            // when written (`api::functions`).
            let l = store
                .get_layer_for_use(&scoped_name(account, name), v)
                .map_err(|_| CatalogError::NoSuchLayer(arn.clone()))?;
            Ok((arn.clone(), l.code.size))
        })
        .collect()
}
