//! Connections to the cluster: the node set (learned from `Status`), node health (from
//! heartbeats), the leader for writes, deadlines and retries with backoff, admin calls, reads
//! spread over healthy nodes, and revocation receipts.
//!
//! One background task per [`Client`] probes every node on an interval with `Heartbeat`. A node
//! whose last probe failed is not sent anything until a probe succeeds again.
//!
//! Layout: [`config`] (what a client is told), `pool` (nodes, picking, the prober), `retry`
//! (deadlines, backoff, leader hints), `admin` (the calls), `order` (each write's place in the
//! client's sequence), `receipts`, [`results`] (the types writes take and return).

mod admin;
pub mod config;
mod order;
pub(crate) mod pool;
mod receipts;
pub mod results;
mod retry;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use revokd_proto::v1 as pb;
use tokio::sync::watch;

use crate::error::Error;
use crate::metrics::ClientMetrics;

use config::strip_scheme;
pub use config::{ClientConfig, ClientTls};
use pool::{probe_round, prober, Bearer, Target};
pub(crate) use pool::{NodeConn, Reporter};
pub use receipts::{Receipt, ReceiptedWrite, ReplicaQuorum};
pub use results::{Revoke, WriteOutcome, WriteResult};
/// What the calls take and answer besides writes: `revokd-core`'s types.
pub use revokd_core::{
    CheckAnswer, Consistency, Matched, Member, Membership, NodeStatus, ReplicaInfo, Role,
};

struct Inner {
    config: ClientConfig,
    nodes: RwLock<Vec<Arc<NodeConn>>>,
    leader: Mutex<Option<String>>,
    reporter: RwLock<Option<Arc<Reporter>>>,
    metrics: ClientMetrics,
    /// Counts finished probe rounds.
    rounds: watch::Sender<u64>,
    /// Whether the background prober runs (from the end of `connect`): before, a call that
    /// finds no node up probes by itself.
    probing: AtomicBool,
    /// This client's write sequence.
    writes: Arc<order::Sequence>,
}

/// A connection to a revokd cluster. Cheap to clone; clones share connections and the
/// background prober, which stops when the last clone is dropped.
///
/// ```no_run
/// # async fn demo() -> Result<(), revokd_client::Error> {
/// use revokd_client::{Client, ClientConfig, Revoke};
/// let client = Client::connect(ClientConfig::new(["127.0.0.1:50051"])).await?;
/// let done = client.revoke(Revoke::new("token-id", 1_900_000_000).reason("logout")).await?;
/// println!("revoked at revision {}", done.revision);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Connects: learns the members from the first endpoint that answers `Status`, probes
    /// every node once, and starts the background prober. Fails if no endpoint answers within
    /// the configured timeout.
    pub async fn connect(config: ClientConfig) -> Result<Client, Error> {
        config.validate()?;
        let mut nodes = Vec::new();
        for e in &config.endpoints {
            if !nodes
                .iter()
                .any(|n: &Arc<NodeConn>| n.addr == strip_scheme(e))
            {
                nodes.push(Arc::new(NodeConn::new(e, 0, &config)?));
            }
        }
        let (rounds, _) = watch::channel(0);
        let client = Client {
            inner: Arc::new(Inner {
                metrics: ClientMetrics::new(),
                config,
                nodes: RwLock::new(nodes),
                leader: Mutex::new(None),
                reporter: RwLock::new(None),
                rounds,
                probing: AtomicBool::new(false),
                writes: order::Sequence::new(),
            }),
        };
        let status = client
            .call("Status", Target::LeastLoaded, |node, _| async move {
                node.cluster().status(pb::StatusRequest {}).await
            })
            .await?;
        client.learn_members(&status);
        probe_round(&client.inner).await;
        client.inner.probing.store(true, Ordering::Release);
        tokio::spawn(prober(Arc::downgrade(&client.inner)));
        Ok(client)
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The client's metrics (node liveness, retries), to register in a Prometheus registry.
    pub fn metrics(&self) -> &ClientMetrics {
        &self.inner.metrics
    }

    /// Addresses of the nodes this client knows, each with whether its last heartbeat
    /// succeeded.
    pub fn node_health(&self) -> Vec<(String, bool)> {
        self.nodes()
            .iter()
            .map(|n| (n.addr.clone(), n.healthy()))
            .collect()
    }
}
