//! Prometheus metrics: Raft and state gauges refreshed on scrape, and per-RPC request counts
//! and latency histograms recorded by a tower layer on the gRPC server. The `method` label
//! only takes the names of methods the node serves (anything else is `unknown`), so callers
//! cannot grow the number of series.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use openraft::ServerState;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::node::Node;

/// The node's metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    term: IntGauge,
    leader: IntGauge,
    is_leader: IntGauge,
    applied: IntGauge,
    last_log: IntGauge,
    snapshot: IntGauge,
    tokens: IntGauge,
    rules: IntGauge,
    watch_window_start: IntGauge,
    replicas: IntGauge,
    replica_lag: IntGaugeVec,
    peer_rtt: GaugeVec,
    watchers: IntGauge,
    watchers_dropped: IntGauge,
    insecure: IntGauge,
    snapshot_streams: IntGauge,
    snapshot_streams_dropped: IntGauge,
    quorum_lost: IntGauge,
    pre_votes: IntGauge,
    campaigns: IntGauge,
    hand_offs: IntGauge,
    holds: IntGauge,
    lease_reads: IntGauge,
    read_rounds: IntGauge,
    clock_step: IntGauge,
    superseded: IntGauge,
    connections: IntGauge,
    /// The accept loop's count, read into `connections` on each render.
    accepted: std::sync::OnceLock<Arc<std::sync::atomic::AtomicU64>>,
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(g.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    g
}

impl Metrics {
    /// Registers every metric in a fresh registry: one registration after another, a flat
    /// list that is long but has no steps to name (splitting it would only scatter the
    /// metric names).
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "revokd_grpc_requests_total",
                "gRPC requests by method and status code",
            ),
            &["method", "code"],
        )
        .unwrap_or_else(|e| panic!("metric: {e}"));
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "revokd_grpc_request_duration_seconds",
                "gRPC latency until response headers",
            )
            .buckets(prometheus::exponential_buckets(0.000_05, 2.0, 18).unwrap_or_default()),
            &["method"],
        )
        .unwrap_or_else(|e| panic!("metric: {e}"));
        let replica_lag = IntGaugeVec::new(
            Opts::new(
                "revokd_replica_lag_revisions",
                "revisions a validator replica is behind this node's applied revision, from its last heartbeat",
            ),
            &["replica"],
        )
        .unwrap_or_else(|e| panic!("metric: {e}"));
        registry
            .register(Box::new(replica_lag.clone()))
            .unwrap_or_else(|e| panic!("metric: {e}"));
        let peer_rtt = GaugeVec::new(
            Opts::new(
                "revokd_peer_rtt_seconds",
                "smoothed round trip of heartbeats to each peer, as this node's Raft transport measured it",
            ),
            &["peer"],
        )
        .unwrap_or_else(|e| panic!("metric: {e}"));
        registry
            .register(Box::new(peer_rtt.clone()))
            .unwrap_or_else(|e| panic!("metric: {e}"));
        registry
            .register(Box::new(requests.clone()))
            .unwrap_or_else(|e| panic!("metric: {e}"));
        registry
            .register(Box::new(latency.clone()))
            .unwrap_or_else(|e| panic!("metric: {e}"));
        Arc::new(Metrics {
            term: gauge(&registry, "revokd_raft_term", "current Raft term"),
            leader: gauge(
                &registry,
                "revokd_raft_leader_id",
                "leader id as known to this node (0: none)",
            ),
            is_leader: gauge(
                &registry,
                "revokd_raft_is_leader",
                "1 when this node is the leader",
            ),
            applied: gauge(
                &registry,
                "revokd_applied_revision",
                "last applied revision",
            ),
            last_log: gauge(&registry, "revokd_last_log_revision", "last log index"),
            snapshot: gauge(
                &registry,
                "revokd_snapshot_revision",
                "revision of the newest snapshot",
            ),
            tokens: gauge(
                &registry,
                "revokd_revoked_tokens",
                "revoked token ids in the set",
            ),
            rules: gauge(&registry, "revokd_rules", "rule revocations in the set"),
            watch_window_start: gauge(
                &registry,
                "revokd_watch_window_start",
                "oldest revision Watch can resume after",
            ),
            replicas: gauge(
                &registry,
                "revokd_replicas",
                "validator replicas that sent a heartbeat recently",
            ),
            watchers: gauge(&registry, "revokd_watchers", "open Watch streams"),
            watchers_dropped: gauge(
                &registry,
                "revokd_watchers_dropped_total",
                "Watch streams ended because the watcher read nothing for the stall timeout",
            ),
            snapshot_streams: gauge(
                &registry,
                "revokd_snapshot_streams",
                "open Snapshot streams",
            ),
            snapshot_streams_dropped: gauge(
                &registry,
                "revokd_snapshot_streams_dropped_total",
                "Snapshot streams ended because the reader took nothing for the stall timeout",
            ),
            insecure: gauge(
                &registry,
                "revokd_insecure",
                "1 when the node serves a non-loopback address without TLS (--insecure)",
            ),
            quorum_lost: gauge(
                &registry,
                "revokd_raft_quorum_lost",
                "1 when this node leads but no majority acknowledged it within the election timeout (it refuses writes)",
            ),
            superseded: gauge(
                &registry,
                "revokd_writes_superseded_total",
                "write items applied by this process as skipped: their client had given up on them and a later write of that client was applied first",
            ),
            connections: gauge(
                &registry,
                "revokd_connections_accepted_total",
                "TCP connections this node's gRPC listener accepted (clients and peers; a steady climb means callers reconnect instead of reusing connections)",
            ),
            accepted: std::sync::OnceLock::new(),
            clock_step: gauge(
                &registry,
                "revokd_clock_step_seconds",
                "how far the system clock is from the time the node keeps (positive: ahead), when over a second; restart the node once the clock is right",
            ),
            pre_votes: gauge(
                &registry,
                "revokd_election_pre_votes_total",
                "pre-vote rounds this node started",
            ),
            campaigns: gauge(
                &registry,
                "revokd_election_campaigns_total",
                "campaigns this node started (pre-votes won, hand-offs taken)",
            ),
            hand_offs: gauge(
                &registry,
                "revokd_election_hand_offs_total",
                "times this node, stopping as leader, handed leadership over",
            ),
            holds: gauge(
                &registry,
                "revokd_election_replication_holds_total",
                "times this node, leading without a quorum, held its replication back so that followers could elect another leader",
            ),
            lease_reads: gauge(
                &registry,
                "revokd_read_index_leased_total",
                "read indexes this node answered as leader under its lease, with no round",
            ),
            read_rounds: gauge(
                &registry,
                "revokd_read_index_rounds_total",
                "read indexes this node answered as leader after a read-index round (its lease did not hold)",
            ),
            replica_lag,
            peer_rtt,
            registry,
            requests,
            latency,
        })
    }

    /// Exports `accepted` (the accept loop's count of connections) from now on.
    pub fn count_accepted(&self, accepted: Arc<std::sync::atomic::AtomicU64>) {
        let _ = self.accepted.set(accepted);
    }

    /// Marks the node as serving without TLS on a non-loopback address.
    pub fn set_insecure(&self) {
        self.insecure.set(1);
    }

    /// Reads the node's current figures into the gauges and renders the text format.
    pub fn render(&self, node: &Node) -> String {
        let m = node.raft.metrics().borrow().clone();
        self.term.set(m.current_term as i64);
        self.leader.set(m.current_leader.unwrap_or(0) as i64);
        self.is_leader
            .set(i64::from(m.state == ServerState::Leader));
        self.last_log.set(m.last_log_index.unwrap_or(0) as i64);
        self.snapshot
            .set(m.snapshot.map(|l| l.index).unwrap_or(0) as i64);
        let elections = &node.elections;
        self.quorum_lost.set(i64::from(elections.quorum_lost()));
        let count =
            |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed) as i64;
        self.pre_votes.set(count(&elections.counters.pre_votes));
        self.campaigns.set(count(&elections.counters.campaigns));
        self.hand_offs.set(count(&elections.counters.hand_offs));
        self.holds.set(count(&elections.counters.holds));
        self.lease_reads.set(count(&elections.counters.lease_reads));
        self.read_rounds.set(count(&elections.counters.read_rounds));
        self.clock_step.set(node.clock.step_secs() as i64);
        self.superseded.set(node.sm.superseded() as i64);
        if let Some(a) = self.accepted.get() {
            self.connections.set(count(a));
        }
        {
            let st = node.sm.read();
            self.applied.set(st.set.revision() as i64);
            self.tokens.set(st.set.token_count() as i64);
            self.rules.set(st.set.rule_count() as i64);
        }
        self.watch_window_start.set(node.sm.window().start() as i64);
        self.watchers.set(node.watchers.open() as i64);
        self.watchers_dropped.set(node.watchers.dropped() as i64);
        self.snapshot_streams.set(node.snapshots.open() as i64);
        self.snapshot_streams_dropped
            .set(node.snapshots.stalled() as i64);
        let replicas = node.replicas.list(self.applied.get() as u64);
        self.replicas.set(replicas.len() as i64);
        for (peer, rtt) in node.links.rtts() {
            self.peer_rtt
                .with_label_values(&[peer.to_string().as_str()])
                .set(rtt.as_secs_f64());
        }
        // Replicas come and go: export exactly the current ones.
        self.replica_lag.reset();
        for r in &replicas {
            self.replica_lag
                .with_label_values(&[r.replica_id.as_str()])
                .set(r.lag as i64);
        }
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            return format!("# metrics encoding failed: {e}\n");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    fn observe(&self, method: &str, code: &str, started: Instant) {
        self.requests.with_label_values(&[method, code]).inc();
        self.latency
            .with_label_values(&[method])
            .observe(started.elapsed().as_secs_f64());
    }
}

/// Serves `/metrics` over HTTP until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    node: Node,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            let node = node.clone();
            async move { metrics.render(&node) }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The label of calls to a path the node does not serve.
const UNKNOWN_METHOD: &str = "unknown";

/// The gRPC paths the node serves (`/package.Service/Method`), read from the descriptors of
/// its services, so the set follows the protos.
fn served_paths() -> HashSet<String> {
    use prost::Message;
    let mut paths = HashSet::new();
    for set in [
        revokd_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ] {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
            continue;
        };
        for file in set.file {
            for svc in &file.service {
                for m in &svc.method {
                    paths.insert(format!("/{}.{}/{}", file.package(), svc.name(), m.name()));
                }
            }
        }
    }
    for reflection in ["v1", "v1alpha"] {
        paths.insert(format!(
            "/grpc.reflection.{reflection}.ServerReflection/ServerReflectionInfo"
        ));
    }
    paths
}

/// Tower layer that records every gRPC call in [`Metrics`].
#[derive(Clone)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
    served: Arc<HashSet<String>>,
}

impl MetricsLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        MetricsLayer {
            metrics,
            served: Arc::new(served_paths()),
        }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
            served: self.served.clone(),
        }
    }
}

/// The service [`MetricsLayer`] wraps around the gRPC router.
#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
    served: Arc<HashSet<String>>,
}

impl<S> MetricsService<S> {
    /// The `method` label of a call to `path`: the method's name if the node serves it.
    fn label(&self, path: &str) -> String {
        if self.served.contains(path) {
            path.rsplit('/').next().unwrap_or(UNKNOWN_METHOD).to_owned()
        } else {
            UNKNOWN_METHOD.to_owned()
        }
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = self.label(req.uri().path());
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            if let Ok(resp) = &res {
                // Errors of unary calls travel in the headers (trailers-only responses);
                // successful calls carry their status in trailers, after the headers.
                let code = resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("0")
                    .to_owned();
                metrics.observe(&method, &code, started);
            }
            res
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::Layer as _;

    #[test]
    fn only_served_methods_get_a_label_of_their_own() {
        let svc = MetricsLayer::new(Metrics::new()).layer(());
        assert_eq!(svc.label("/revokd.v1.Revocation/Revoke"), "Revoke");
        assert_eq!(svc.label("/revokd.v1.Raft/AppendEntries"), "AppendEntries");
        assert_eq!(svc.label("/grpc.health.v1.Health/Check"), "Check");
        assert_eq!(
            svc.label("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            "ServerReflectionInfo"
        );
        for junk in ["/revokd.v1.Revocation/Nope", "/x/y", "/", "", "/a/b/c"] {
            assert_eq!(svc.label(junk), UNKNOWN_METHOD, "{junk:?}");
        }
    }
}
