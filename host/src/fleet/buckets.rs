//! The JetStream buckets a fleet shares, opened (or created, replicated
//! `replicas` times) by every host at start: KV buckets for records and
//! membership, an object store for sealed code blobs.

use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store};

use super::FleetError;

/// How long a host's heartbeat stays in the membership bucket: a host that
/// stops beating is gone from the fleet after this.
pub const MEMBER_TTL: Duration = Duration::from_secs(3);

/// Every shared bucket (cheap to clone: handles).
#[derive(Clone)]
pub struct Buckets {
    /// The JetStream context the buckets were opened on (revision-checked
    /// writes publish through it: [`super::checked`]).
    pub js: jetstream::Context,
    pub functions: kv::Store,
    pub versions: kv::Store,
    pub aliases: kv::Store,
    pub layers: kv::Store,
    /// Layer name -> the number its next version gets.
    pub layer_next: kv::Store,
    pub provisioned: kv::Store,
    /// Node id -> its latest heartbeat, expiring after [`MEMBER_TTL`].
    pub hosts: kv::Store,
    pub code: object_store::ObjectStore,
}

impl Buckets {
    pub async fn open(js: jetstream::Context, replicas: usize) -> Result<Self, FleetError> {
        let kv = |name: &'static str, max_age: Duration| {
            let js = js.clone();
            async move { open_kv(&js, name, replicas, max_age).await }
        };
        let forever = Duration::ZERO;
        Ok(Self {
            js: js.clone(),
            functions: kv("ember-functions", forever).await?,
            versions: kv("ember-versions", forever).await?,
            aliases: kv("ember-aliases", forever).await?,
            layers: kv("ember-layers", forever).await?,
            layer_next: kv("ember-layer-next", forever).await?,
            provisioned: kv("ember-provisioned", forever).await?,
            hosts: kv("ember-hosts", MEMBER_TTL).await?,
            code: open_objects(&js, "ember-code", replicas).await?,
        })
    }
}

/// The KV bucket `name`, created if no host has yet. Two hosts creating it
/// at once with the same configuration both succeed.
async fn open_kv(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
    max_age: Duration,
) -> Result<kv::Store, FleetError> {
    if let Ok(s) = js.get_key_value(name).await {
        return allow_direct(js, name, s).await;
    }
    // The stream a KV bucket is, as async-nats' `create_key_value` builds
    // it; created directly because that call first asks for the account's
    // info, whose reply from nats-server 2.9 (Debian's) it cannot parse.
    let created = js
        .create_stream(jetstream::stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_age,
            storage: jetstream::stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            // Reads go to the stream's leader first, and to any replica
            // only when the leader does not answer (super::read): a direct
            // get may be answered by a replica that has not seen the last
            // write yet (seen: a tag written on one host missing from the
            // next read, when every read was a direct get).
            allow_direct: true,
            num_replicas: replicas,
            discard: jetstream::stream::DiscardPolicy::New,
            duplicate_window: match max_age {
                Duration::ZERO => Duration::from_secs(120),
                age => age.min(Duration::from_secs(120)),
            },
            ..Default::default()
        })
        .await;
    let created = created.map(|_| ());
    // Created here or by another host at the same moment: open it.
    js.get_key_value(name).await.map_err(|e| match created {
        Err(c) => FleetError::Bucket(name.into(), c.into()),
        Ok(()) => FleetError::Bucket(name.into(), e.into()),
    })
}

/// A bucket created by an earlier emberd, without direct gets: allowed now
/// (a stream's configuration may change in place), so that its reads can
/// fall back to a replica.
async fn allow_direct(
    js: &jetstream::Context,
    name: &str,
    mut kv: kv::Store,
) -> Result<kv::Store, FleetError> {
    let info = kv
        .stream
        .info()
        .await
        .map_err(|e| FleetError::Bucket(name.into(), e.into()))?;
    if info.config.allow_direct {
        return Ok(kv);
    }
    let config = jetstream::stream::Config {
        allow_direct: true,
        ..info.config.clone()
    };
    js.update_stream(config)
        .await
        .map_err(|e| FleetError::Bucket(name.into(), e.into()))?;
    js.get_key_value(name)
        .await
        .map_err(|e| FleetError::Bucket(name.into(), e.into()))
}

async fn open_objects(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
) -> Result<object_store::ObjectStore, FleetError> {
    if let Ok(s) = js.get_object_store(name).await {
        return Ok(s);
    }
    let created = js
        .create_object_store(object_store::Config {
            bucket: name.to_string(),
            num_replicas: replicas,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await;
    match created {
        Ok(s) => Ok(s),
        Err(e) => js
            .get_object_store(name)
            .await
            .map_err(|_| FleetError::Bucket(name.into(), e.into())),
    }
}
