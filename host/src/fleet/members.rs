//! Fleet membership: every host puts a heartbeat into the `ember-hosts` KV
//! bucket each second; the bucket's maximum age ([`super::buckets::MEMBER_TTL`])
//! drops a host that stopped beating (killed, cut off), and a host that
//! shuts down deletes its entry at once. `GET /ember/fleet` lists the live
//! hosts. A watch on the bucket keeps this host's [`Placement`] view of the
//! others' latest beats current.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::placement::Placement;
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
    /// The most environments it runs at once (`--max-concurrency`); 0 from
    /// a host that does not say.
    #[serde(default)]
    pub capacity: u32,
}

/// Idle warm environments of one function version on one host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmVersion {
    pub function: String,
    /// `$LATEST` or a version number.
    pub version: String,
    pub idle: u32,
}

/// What a host reports about its environments at each beat.
#[derive(Clone, Debug, Default)]
pub struct Load {
    /// Its idle warm versions.
    pub warm: Vec<WarmVersion>,
    /// Environments busy or starting.
    pub busy: u32,
    /// The most it runs at once.
    pub capacity: u32,
}

/// Reads this host's [`Load`] at each beat.
pub type Report = Arc<dyn Fn() -> Load + Send + Sync>;

/// This host's membership: its heartbeat task and the fleet's view.
pub struct Members {
    bridge: Arc<Bridge>,
    hosts: kv::Store,
    me: Member,
    report: Report,
    placement: Arc<Placement>,
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
                capacity: 0,
            },
            report,
            placement: Placement::new(&fleet.node_id),
        }
    }

    /// This host's view of the others, for placing invocations.
    pub fn placement(&self) -> &Arc<Placement> {
        &self.placement
    }

    /// Beats once now (so the host is listed as soon as it serves), then
    /// every second until `shutdown`, when its entry is deleted; and
    /// watches the others' beats until then.
    pub fn start(&self, mut shutdown: watch::Receiver<bool>) -> Result<(), FleetError> {
        let (hosts, me, report) = (self.hosts.clone(), self.me.clone(), self.report.clone());
        self.bridge.spawn(follow(
            hosts.clone(),
            self.placement.clone(),
            shutdown.clone(),
        ));
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
    let load = report();
    (me.warm, me.busy, me.capacity) = (load.warm, load.busy, load.capacity);
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

/// Feeds every beat and departure in the bucket into `placement` until
/// `shutdown`. A watch that fails or ends (its NATS server died, an
/// election) is opened again a second later; meanwhile the view ages and
/// placement stops using it after [`super::placement::FRESH`], so calls run
/// where they land.
async fn follow(hosts: kv::Store, placement: Arc<Placement>, mut shutdown: watch::Receiver<bool>) {
    loop {
        match hosts.watch_with_history(">").await {
            Ok(mut w) => loop {
                tokio::select! {
                    e = w.next() => match e {
                        Some(Ok(e)) => apply(&placement, e),
                        Some(Err(e)) => {
                            eprintln!("emberd: fleet membership watch: {e}");
                            break;
                        }
                        None => break,
                    },
                    _ = shutdown.changed() => return,
                }
            },
            Err(e) => eprintln!("emberd: fleet membership watch: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(BEAT) => {}
            _ = shutdown.changed() => return,
        }
    }
}

fn apply(placement: &Placement, e: kv::Entry) {
    match e.operation {
        kv::Operation::Put => {
            // A value that is not a beat, or names another host than its
            // key, is ignored.
            if let Ok(m) = serde_json::from_slice::<Member>(&e.value) {
                if m.node_id == e.key {
                    placement.observe(m);
                }
            }
        }
        kv::Operation::Delete | kv::Operation::Purge => placement.forget(&e.key),
    }
}
