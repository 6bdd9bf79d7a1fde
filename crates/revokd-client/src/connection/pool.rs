//! The nodes a client talks to: one [`NodeConn`] per member (learned from `Status`), which one
//! gets a call, and the background prober whose heartbeats decide which nodes are up (and carry
//! an attached replica's progress).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use revokd_proto::v1 as pb;
use revokd_proto::v1::cluster_client::ClusterClient;
use revokd_proto::v1::revocation_client::RevocationClient;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::error::Error;

use super::config::endpoint;
use super::*;

/// The result of one successful heartbeat. Internal: the replica reads it to decide
/// staleness (it was public by accident, with nothing public returning it).
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    /// When the heartbeat was sent: a replica that has applied `response.commit_revision` was
    /// up to date at this instant.
    pub(crate) sent_at: Instant,
    /// The node's answer.
    pub(crate) response: pb::HeartbeatResponse,
}

/// One node as the client sees it.
pub(crate) struct NodeConn {
    pub(crate) addr: String,
    pub(super) channel: Channel,
    pub(super) auth: Bearer,
    pub(super) id: AtomicU64,
    pub(super) healthy: AtomicBool,
    pub(super) outstanding: AtomicUsize,
    pub(super) last: Mutex<Option<Probe>>,
}

impl NodeConn {
    /// A node at `addr` (`host:port`, with or without a scheme) with id `id` (0 until known),
    /// dialed lazily as `config` says.
    pub(super) fn new(addr: &str, id: u64, config: &ClientConfig) -> Result<NodeConn, Error> {
        Ok(NodeConn {
            channel: config.dialer.connect_lazy(endpoint(addr, config)?),
            auth: Bearer::new(config)?,
            addr: strip_scheme(addr).to_owned(),
            id: AtomicU64::new(id),
            healthy: AtomicBool::new(true),
            outstanding: AtomicUsize::new(0),
            last: Mutex::new(None),
        })
    }

    pub(crate) fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    pub(crate) fn last_probe(&self) -> Option<Probe> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn revocation(&self) -> RevocationClient<InterceptedService<Channel, Bearer>> {
        RevocationClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_RESPONSE)
    }

    pub(crate) fn cluster(&self) -> ClusterClient<InterceptedService<Channel, Bearer>> {
        ClusterClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }
}

/// Largest answer the client decodes: a `Snapshot` chunk of many long entries, which the
/// node bounds at half this (`revokd::MAX_API_RESPONSE`); anything larger is not a node.
const MAX_RESPONSE: usize = 64 << 20;
/// Longest a heartbeat round waits for a node's answer, whatever the interval: a node that
/// takes longer is marked down, so calls stop picking it within a couple of seconds.
const MAX_PROBE_WAIT: Duration = Duration::from_secs(2);

/// Adds `authorization: Bearer <token>` to every call when the client has a token.
#[derive(Clone)]
pub(crate) struct Bearer(pub(super) Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    pub(super) fn new(config: &ClientConfig) -> Result<Bearer, Error> {
        match &config.bearer_token {
            None => Ok(Bearer(None)),
            Some(t) => format!("Bearer {}", t.trim())
                .parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>()
                .map(|mut v| {
                    // Kept out of HPACK's dynamic table and of debug output.
                    v.set_sensitive(true);
                    Bearer(Some(v))
                })
                .map_err(|_| Error::Config("bearer_token is not a valid header value".into())),
        }
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// What a replica attached to this client reports in its heartbeats.
pub(crate) struct Reporter {
    pub(crate) replica_id: String,
    pub(crate) description: String,
    pub(crate) applied: Arc<AtomicU64>,
}

/// Which node a call goes to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// The leader if known and healthy (writes), else any healthy node (it forwards).
    Leader,
    /// The healthy node with the fewest requests in flight.
    LeastLoaded,
}

/// Decrements a node's in-flight count when the call ends, however it ends.
pub(super) struct InFlight(pub(super) Arc<NodeConn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Client {
    pub(crate) fn nodes(&self) -> Vec<Arc<NodeConn>> {
        self.inner
            .nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A receiver that changes after every probe round.
    pub(crate) fn probe_rounds(&self) -> watch::Receiver<u64> {
        self.inner.rounds.subscribe()
    }

    /// Probes every node now (as the background prober does each interval).
    pub(crate) async fn probe_now(&self) {
        probe_round(&self.inner).await;
    }

    /// Attaches a replica's report to the heartbeats. One replica per client.
    pub(crate) fn attach(&self, reporter: Arc<Reporter>) -> Result<(), Error> {
        let mut slot = self
            .inner
            .reporter
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return Err(Error::Config(
                "this client already feeds a replica; connect another client for a second one"
                    .into(),
            ));
        }
        *slot = Some(reporter);
        Ok(())
    }

    /// Sends one heartbeat with the replica's current revision to `node` now (a progress
    /// report, so receipts see it without waiting for the next probe).
    pub(crate) async fn report_to(&self, node: &NodeConn) {
        let reporter = self
            .inner
            .reporter
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(r) = reporter {
            let mut req = tonic::Request::new(heartbeat_request(Some(&r)));
            req.set_timeout(self.inner.config.heartbeat_interval);
            let _ = node.cluster().heartbeat(req).await;
        }
    }

    pub(super) fn learn_members(&self, status: &pb::StatusResponse) {
        let mut nodes = self.inner.nodes.write().unwrap_or_else(|p| p.into_inner());
        for m in status.members.iter().chain(&status.learners) {
            if let Some(n) = nodes.iter().find(|n| n.addr == m.address) {
                n.id.store(m.id, Ordering::Release);
                continue;
            }
            match NodeConn::new(&m.address, m.id, &self.inner.config) {
                Ok(node) => {
                    tracing::info!(node = m.id, addr = %m.address, "revokd-client: learned member");
                    nodes.push(Arc::new(node));
                }
                Err(e) => {
                    tracing::warn!(addr = %m.address, error = %e, "revokd-client: ignoring member")
                }
            }
        }
        if !status.leader_address.is_empty() {
            self.set_leader(&status.leader_address);
        }
    }

    pub(super) fn set_leader(&self, addr: &str) {
        *self.inner.leader.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr.to_owned());
    }

    /// Stops aiming writes at `addr` if it is the leader this client knows.
    pub(super) fn forget_leader(&self, addr: &str) {
        let mut leader = self.inner.leader.lock().unwrap_or_else(|p| p.into_inner());
        if leader.as_deref() == Some(addr) {
            *leader = None;
        }
    }

    /// Picks a node for `target`, or `None` when no node is healthy.
    pub(super) fn pick(&self, target: Target) -> Option<Arc<NodeConn>> {
        let nodes = self.nodes();
        if target == Target::Leader {
            let leader = self
                .inner
                .leader
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(l) = leader {
                if let Some(n) = nodes.iter().find(|n| n.addr == l && n.healthy()) {
                    return Some(n.clone());
                }
            }
        }
        // Least outstanding requests; ties broken at random so load spreads.
        let start = fastrand::usize(..nodes.len().max(1));
        nodes
            .iter()
            .cycle()
            .skip(start)
            .take(nodes.len())
            .filter(|n| n.healthy())
            .min_by_key(|n| n.outstanding.load(Ordering::Acquire))
            .cloned()
    }

    /// A healthy node to stream from, other than `avoid` unless it is the only one.
    pub(crate) fn pick_for_stream(&self, avoid: Option<&str>) -> Option<Arc<NodeConn>> {
        let healthy: Vec<Arc<NodeConn>> =
            self.nodes().into_iter().filter(|n| n.healthy()).collect();
        let preferred: Vec<&Arc<NodeConn>> = healthy
            .iter()
            .filter(|n| Some(n.addr.as_str()) != avoid)
            .collect();
        let pool: Vec<&Arc<NodeConn>> = if preferred.is_empty() {
            healthy.iter().collect()
        } else {
            preferred
        };
        if pool.is_empty() {
            return None;
        }
        Some(pool[fastrand::usize(..pool.len())].clone())
    }
}

pub(super) fn heartbeat_request(reporter: Option<&Reporter>) -> pb::HeartbeatRequest {
    match reporter {
        Some(r) => pb::HeartbeatRequest {
            replica_id: r.replica_id.clone(),
            applied_revision: r.applied.load(Ordering::Acquire),
            description: r.description.clone(),
        },
        None => pb::HeartbeatRequest::default(),
    }
}

/// Records a node's health, logging and counting changes.
pub(super) fn mark(inner: &Inner, node: &NodeConn, healthy: bool, why: &str) {
    let was = node.healthy.swap(healthy, Ordering::AcqRel);
    inner
        .metrics
        .node_up
        .with_label_values(&[node.addr.as_str()])
        .set(i64::from(healthy));
    if was != healthy {
        inner.metrics.node_transitions.inc();
        if healthy {
            tracing::info!(node = %node.addr, "revokd-client: node is up");
        } else {
            tracing::warn!(node = %node.addr, reason = %why, "revokd-client: node is down; no requests go to it until a heartbeat succeeds");
        }
    }
}

/// Whether a heartbeat's error is the node refusing the report (so the node is up), rather
/// than the node failing to answer.
pub(super) fn refused_report(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unauthenticated
            | tonic::Code::PermissionDenied
            | tonic::Code::ResourceExhausted
            | tonic::Code::InvalidArgument
    )
}

/// Probes every node once, concurrently.
pub(super) async fn probe_round(inner: &Arc<Inner>) {
    let nodes = inner
        .nodes
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let reporter = inner
        .reporter
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let timeout = inner.config.heartbeat_interval.min(MAX_PROBE_WAIT);
    let mut set = JoinSet::new();
    for node in nodes {
        let msg = heartbeat_request(reporter.as_deref());
        set.spawn(async move {
            let sent_at = Instant::now();
            let mut req = tonic::Request::new(msg);
            req.set_timeout(timeout);
            let r = tokio::time::timeout(timeout, node.cluster().heartbeat(req)).await;
            (node, sent_at, r)
        });
    }
    let mut leader: Option<(u64, String)> = None;
    while let Some(Ok((node, sent_at, r))) = set.join_next().await {
        match r {
            Ok(Ok(resp)) => {
                let response = resp.into_inner();
                node.id.store(response.node_id, Ordering::Release);
                if !response.leader_address.is_empty()
                    && leader.as_ref().is_none_or(|(t, _)| response.term > *t)
                {
                    leader = Some((response.term, response.leader_address.clone()));
                }
                *node.last.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(Probe { sent_at, response });
                mark(inner, &node, true, "");
            }
            // The node answered but refused this client's report (a credential it does not
            // accept, another client's replica id, a full registry): it is up, and calls
            // sent to it get their own answer, which says what is wrong, instead of "no
            // healthy node". The probe confirms no progress, so a replica's staleness grows.
            Ok(Err(status)) if refused_report(&status) => {
                tracing::warn!(node = %node.addr, reason = %status.message(), "revokd-client: the node refused this client's heartbeat");
                mark(inner, &node, true, "");
            }
            Ok(Err(status)) => mark(inner, &node, false, status.message()),
            Err(_) => mark(inner, &node, false, "heartbeat timed out"),
        }
    }
    if let Some((_, addr)) = leader {
        *inner.leader.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr);
    }
    inner.rounds.send_modify(|r| *r += 1);
}

/// Probes every node each interval until the client is dropped; refreshes the member list
/// every ten rounds.
pub(super) async fn prober(inner: Weak<Inner>) {
    let Some(interval) = inner.upgrade().map(|i| i.config.heartbeat_interval) else {
        return;
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut round = 0u64;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        probe_round(&inner).await;
        round += 1;
        if round.is_multiple_of(10) {
            let client = Client { inner };
            if let Ok(Ok(s)) =
                tokio::time::timeout(interval, async {
                    client
                        .call_within("Status", Target::LeastLoaded, interval, |node, _| async move {
                            node.cluster().status(pb::StatusRequest {}).await
                        })
                        .await
                })
                .await
            {
                client.learn_members(&s);
            }
        }
    }
}
