//! The layer versions a function configuration names.

use super::CatalogError;
use crate::store::Store;
use crate::util::{scoped_name, valid_name};

/// Each layer ARN must name a layer version (live, or retired while a
/// function named it); returns (arn, size).
pub fn layer_sizes(store: &Store, arns: &[String]) -> Result<Vec<(String, u64)>, CatalogError> {
    arns.iter()
        .map(|arn| Ok((arn.clone(), layer_code(store, arn)?.size)))
        .collect()
}

/// The blob addresses of the layer versions `arns` (their ZIPs), in order.
pub fn layer_blobs(store: &Store, arns: &[String]) -> Result<Vec<String>, CatalogError> {
    arns.iter()
        .map(|arn| Ok(layer_code(store, arn)?.blob))
        .collect()
}

/// The code of the layer version `arn` names.
fn layer_code(store: &Store, arn: &str) -> Result<crate::store::CodeRef, CatalogError> {
    let Some((account, name, v)) =
        crate::linux::parse_layer_arn(arn).filter(|(_, n, _)| valid_name(n))
    else {
        return Err(CatalogError::MalformedLayerArn(arn.to_string()));
    };
    // Stored ARNs were checked against their function's account
    // when written (`api::functions`).
    let l = store
        .get_layer_for_use(&scoped_name(account, name), v)
        .map_err(|_| CatalogError::NoSuchLayer(arn.to_string()))?;
    Ok(l.code)
}
