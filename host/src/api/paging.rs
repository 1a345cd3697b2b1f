//! Paging of the small list replies (`Marker`/`MaxItems` in, `NextMarker`
//! out).

use serde_json::{json, Value};

use super::{ApiError, Reply, Req};

/// A 200 listing one page of `all` under `key`, with `NextMarker` when
/// more follow (see [`paginate`]).
pub fn page_reply(key: &str, all: Vec<Value>, req: &Req) -> Result<Reply, ApiError> {
    let (page, next) = paginate(all, req)?;
    let mut body = json!({ (key): page });
    if let Some(m) = next {
        body["NextMarker"] = Value::from(m);
    }
    Ok(Reply::json(200, body))
}

/// Index-based pagination for small per-function lists: the marker is the
/// position of the next item.
pub fn paginate(all: Vec<Value>, req: &Req) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let start = match req.q("Marker") {
        Some(m) => m
            .parse::<usize>()
            .map_err(|_| ApiError::InvalidParameter("Marker is invalid".into()))?,
        None => 0,
    };
    let max = req.max_items()?;
    let total = all.len();
    let page: Vec<Value> = all.into_iter().skip(start).take(max).collect();
    let next = (start + page.len() < total).then(|| (start + page.len()).to_string());
    Ok((page, next))
}
