//! `GET /ember/fleet`: the hosts of this emberd's fleet that are alive now
//! (their heartbeats in JetStream), or a clear error on a single host.

use serde_json::json;

use super::{ApiError, App, Reply};

pub fn status(app: &App) -> Result<Reply, ApiError> {
    let Some(members) = &app.fleet else {
        return Err(ApiError::InvalidParameter(
            "This emberd is not part of a fleet (started without --cluster).".into(),
        ));
    };
    let hosts = members.list().map_err(|e| {
        ApiError::Unavailable(format!(
            "The fleet's membership bucket did not answer: {}. Retry later.",
            crate::util::error_chain(&e)
        ))
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let hosts: Vec<_> = hosts
        .iter()
        .map(|m| {
            json!({
                "NodeId": m.node_id,
                "Url": m.url,
                "StartedMs": m.started_ms,
                "LastBeatAgeMs": now.saturating_sub(m.beat_ms),
                "Warm": m.warm.iter().map(|w| json!({
                    "FunctionName": w.function,
                    "Version": w.version,
                    "Idle": w.idle,
                })).collect::<Vec<_>>(),
                "Busy": m.busy,
                "Capacity": m.capacity,
            })
        })
        .collect();
    Ok(Reply::json(
        200,
        json!({ "NodeId": members.node_id(), "Hosts": hosts }),
    ))
}
