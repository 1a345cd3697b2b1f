//! emberd as one host of a fleet on NATS JetStream (`--cluster`): the
//! connection, the shared buckets, and the pieces built on them — records
//! and code ([`records`], the store's [`crate::store::SharedBackend`]),
//! membership ([`members`]) and invocation placement ([`placement`]). Without `--cluster` none of this runs and the
//! embedded single-host store is used.

mod bridge;
mod buckets;
mod checked;
mod keys;
pub mod members;
pub mod placement;
mod read;
mod records;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::ServerAddr;

pub use bridge::Bridge;
pub use buckets::Buckets;
pub use members::{Load, Member, Members, Report, WarmVersion};
pub use placement::{InFlight, Placement, Target};
pub use records::FleetRecords;

/// How long one call into the cluster may take before it fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the first connection may take before emberd gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// `emberd`'s fleet flags.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    /// Join a fleet: NATS servers (JetStream enabled), comma-separated,
    /// e.g. `nats://h1:4222,nats://h2:4222`. Functions, versions, aliases,
    /// layers and code are then shared by every host of the cluster.
    #[arg(
        long,
        env = "EMBER_CLUSTER",
        value_delimiter = ',',
        requires = "node_id"
    )]
    pub cluster: Vec<String>,
    /// This host's name in the fleet (unique; `[A-Za-z0-9_-]`).
    #[arg(long, env = "EMBER_NODE_ID")]
    pub node_id: Option<String>,
    /// The fleet's code encryption key: a 32-byte file, mode 0600, the same
    /// on every host (the operator distributes it; it is never stored in
    /// NATS). Default: `<data-dir>/store/master.key`, which must then exist.
    #[arg(long, env = "EMBER_CLUSTER_KEY")]
    pub cluster_key: Option<PathBuf>,
    /// Replicas of each shared bucket (default: the number of --cluster
    /// servers, at most 3).
    #[arg(long)]
    pub cluster_replicas: Option<usize>,
}

impl FleetArgs {
    pub fn enabled(&self) -> bool {
        !self.cluster.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("--cluster: {0:?} is not a NATS server address")]
    BadAddress(String, #[source] async_nats::Error),
    #[error("--node-id {0:?}: must be 1-64 characters of [A-Za-z0-9_-]")]
    BadNodeId(String),
    #[error("cannot reach the NATS cluster {0}")]
    Connect(String, #[source] async_nats::ConnectError),
    #[error("the fleet client's runtime")]
    Runtime(#[source] std::io::Error),
    #[error("the NATS cluster did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("JetStream bucket {0}")]
    Bucket(String, #[source] async_nats::Error),
    #[error("JetStream {op} {key}")]
    Kv {
        op: &'static str,
        key: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("code object {0}")]
    Object(String, #[source] async_nats::Error),
    #[error("corrupt record {0}")]
    Json(String, #[source] serde_json::Error),
}

impl FleetError {
    /// A KV operation `op` on `key` that failed.
    pub fn kv<E>(op: &'static str, key: &str, e: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        FleetError::Kv {
            op,
            key: key.to_string(),
            source: Box::new(e),
        }
    }
}

/// The connection to the cluster and its buckets.
pub struct Fleet {
    pub node_id: String,
    pub bridge: Arc<Bridge>,
    pub buckets: Buckets,
}

impl Fleet {
    /// Connects to `args.cluster` and opens (or creates) the shared buckets.
    /// An unreachable cluster is an error after [`CONNECT_TIMEOUT`].
    pub fn connect(args: &FleetArgs) -> Result<Self, FleetError> {
        let node_id = args.node_id.clone().unwrap_or_default();
        if node_id.is_empty()
            || node_id.len() > 64
            || !node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(FleetError::BadNodeId(node_id));
        }
        let addrs = args
            .cluster
            .iter()
            .map(|u| {
                ServerAddr::from_str(u).map_err(|e| FleetError::BadAddress(u.clone(), e.into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let replicas = args
            .cluster_replicas
            .unwrap_or(addrs.len().min(3))
            .clamp(1, 5);
        let shown = args.cluster.join(",");
        let bridge = Arc::new(Bridge::new(CALL_TIMEOUT)?);
        // Named per host, so that a server's /connz shows who is attached.
        let name = format!("emberd-{node_id}");
        let client = bridge.call(async move {
            async_nats::ConnectOptions::new()
                .name(name)
                .connection_timeout(CONNECT_TIMEOUT)
                .connect(addrs)
                .await
        })?;
        let client = client.map_err(|e| FleetError::Connect(shown, e))?;
        let js = async_nats::jetstream::new(client);
        let buckets = bridge.call(Buckets::open(js, replicas))??;
        Ok(Self {
            node_id,
            bridge,
            buckets,
        })
    }
}
