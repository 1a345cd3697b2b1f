//! Fleet membership: every host puts a heartbeat into the `ember-hosts` KV
//! bucket each second; the bucket's maximum age ([`super::buckets::MEMBER_TTL`])
//! drops a host that stopped beating (killed, cut off), and a host that
//! shuts down deletes its entry at once. `GET /ember/fleet` lists the live
//! hosts.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Bridge, Fleet, FleetError};

/// How often a host beats.
const BEAT: Duration = Duration::from_secs(1);

/// One host's heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node_id: String,
    /// Where its API answers.
    pub url: String,
    /// Unix milliseconds of its start and of this beat.
    pub started_ms: u64,
    pub beat_ms: u64,
    /// Its idle warm environments, by function and version (what placement
    /// looks for first), as of this beat.
    #[serde(default)]
    pub warm: Vec<WarmVersion>,
    /// Its environments running an invocation or starting (its load).
    #[serde(default)]
    pub busy: u32,
}

/// Idle warm environments of one function version on one host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmVersion {
    pub function: String,
    /// `$LATEST` or a version number.
    pub version: String,
    pub idle: u32,
}

/// What a host reports about its environments at each beat: its idle warm
/// versions and how many environments are busy or starting.
pub type Report = Arc<dyn Fn() -> (Vec<WarmVersion>, u32) + Send + Sync>;

/// This host's membership: its heartbeat task and the fleet's view.
pub struct Members {
    bridge: Arc<Bridge>,
    hosts: kv::Store,
    me: Member,
    report: Report,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Members {
    pub fn new(fleet: &Fleet, url: String, report: Report) -> Self {
        let now = now_ms();
        Self {
            bridge: fleet.bridge.clone(),
            hosts: fleet.buckets.hosts.clone(),
            me: Member {
                node_id: fleet.node_id.clone(),
                url,
                started_ms: now,
                beat_ms: now,
                warm: Vec::new(),
                busy: 0,
            },
            report,
        }
    }

    /// Beats once now (so the host is listed as soon as it serves), then
    /// every second until `shutdown`, when its entry is deleted.
    pub fn start(&self, mut shutdown: watch::Receiver<bool>) -> Result<(), FleetError> {
        let (hosts, me, report) = (self.hosts.clone(), self.me.clone(), self.report.clone());
        self.bridge
            .call(beat(hosts.clone(), me.clone(), report.clone()))??;
        self.bridge.spawn(async move {
            let mut tick = tokio::time::interval(BEAT);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(e) = beat(hosts.clone(), me.clone(), report.clone()).await {
                            eprintln!("emberd: fleet heartbeat: {}", crate::util::error_chain(&e));
                        }
                    }
                    _ = shutdown.changed() => {
                        let _ = hosts.delete(&me.node_id).await;
                        return;
                    }
                }
            }
        });
        Ok(())
    }

    /// The live hosts, by node id.
    pub fn list(&self) -> Result<Vec<Member>, FleetError> {
        let hosts = self.hosts.clone();
        self.bridge.call(list(hosts))?
    }

    pub fn node_id(&self) -> &str {
        &self.me.node_id
    }
}

async fn beat(hosts: kv::Store, mut me: Member, report: Report) -> Result<(), FleetError> {
    (me.warm, me.busy) = report();
    me.beat_ms = now_ms();
    let v = serde_json::to_vec(&me).map_err(|e| FleetError::Json(me.node_id.clone(), e))?;
    hosts
        .put(&me.node_id, Bytes::from(v))
        .await
        .map_err(|e| FleetError::Kv {
            op: "put",
            key: me.node_id.clone(),
            source: Box::new(e),
        })?;
    Ok(())
}

async fn list(hosts: kv::Store) -> Result<Vec<Member>, FleetError> {
    let mut out = Vec::new();
    for k in super::read::keys(&hosts, "").await? {
        // A member that expired between the listing and the read is gone.
        if let Some(e) = super::read::entry(&hosts, &k).await?.filter(|e| e.live) {
            if let Ok(m) = serde_json::from_slice::<Member>(&e.value) {
                out.push(m);
            }
        }
    }
    out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    Ok(out)
}
