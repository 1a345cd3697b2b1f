//! Tags on functions: TagResource, UntagResource, ListTags, and the checks
//! CreateFunction's `Tags` share (Lambda's limits: 50 tags, keys of 1-128
//! characters not starting with `aws:`, values of up to 256).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::json;

use super::{function_name, ApiError, App, Reply, Req};

const MAX_TAGS: usize = 50;
const MAX_KEY: usize = 128;
const MAX_VALUE: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TagIn {
    #[serde(rename = "Tags")]
    tags: BTreeMap<String, String>,
}

/// Refuses tags Lambda would refuse.
pub fn check(tags: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if tags.len() > MAX_TAGS {
        return Err(ApiError::InvalidParameter(format!(
            "A resource can have at most {MAX_TAGS} tags ({} given)",
            tags.len()
        )));
    }
    for (k, v) in tags {
        let n = k.chars().count();
        if n == 0 || n > MAX_KEY {
            return Err(ApiError::InvalidParameter(format!(
                "Tag key {k:?} must be 1 to {MAX_KEY} characters long"
            )));
        }
        if k.to_ascii_lowercase().starts_with("aws:") {
            return Err(ApiError::InvalidParameter(format!(
                "Tag key {k:?} uses the reserved prefix aws:"
            )));
        }
        if v.chars().count() > MAX_VALUE {
            return Err(ApiError::InvalidParameter(format!(
                "The value of tag {k:?} is longer than {MAX_VALUE} characters"
            )));
        }
    }
    Ok(())
}

/// The stored function a taggable resource ARN names (functions are the
/// only taggable resource emberd has; versions and aliases take no tags).
fn function_of(req: &Req, arn: &str) -> Result<String, ApiError> {
    if !arn.starts_with("arn:") || !arn.contains(":function:") {
        return Err(ApiError::InvalidParameter(format!(
            "{arn:?} is not a function ARN (only functions take tags on this host)"
        )));
    }
    let (name, qualifier) = function_name(arn, req.account())?;
    if qualifier.is_some() {
        return Err(ApiError::InvalidParameter(format!(
            "Tags apply to the function, not to a version or alias: {arn}"
        )));
    }
    Ok(name)
}

pub fn tag(app: &App, req: &Req, arn: &str) -> Result<Reply, ApiError> {
    let name = function_of(req, arn)?;
    let input: TagIn = req.json()?;
    check(&input.tags)?;
    // The 50-tag limit counts the tags already there: checked in the same
    // transaction as the write, which a refusal abandons.
    super::update_function(app, &name, |f| {
        let mut merged = f.tags.clone();
        merged.extend(input.tags);
        check(&merged)?;
        f.tags = merged;
        Ok(())
    })?;
    Ok(Reply::empty(204))
}

pub fn untag(app: &App, req: &Req, arn: &str) -> Result<Reply, ApiError> {
    let name = function_of(req, arn)?;
    let keys: Vec<&str> = req.query.all("tagKeys").collect();
    if keys.is_empty() {
        return Err(ApiError::InvalidParameter("tagKeys is required".into()));
    }
    app.functions.store().update_function(&name, |f| {
        for k in &keys {
            f.tags.remove(*k);
        }
        Ok(())
    })?;
    Ok(Reply::empty(204))
}

pub fn list(app: &App, req: &Req, arn: &str) -> Result<Reply, ApiError> {
    let name = function_of(req, arn)?;
    let f = app.functions.store().get_function(&name)?;
    Ok(Reply::json(200, json!({ "Tags": f.tags })))
}
