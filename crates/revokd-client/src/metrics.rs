//! Prometheus metrics of a client and its replica. They are created unregistered: call
//! `register` with the registry your process exports, once per client or replica.

use prometheus::{Gauge, IntCounter, IntGauge, IntGaugeVec, Opts, Registry};

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

/// Node liveness as the client's heartbeats see it, and retries.
pub struct ClientMetrics {
    /// `revokd_client_node_up{node}`: 1 when the node's last heartbeat succeeded.
    pub node_up: IntGaugeVec,
    /// `revokd_client_node_transitions_total`: nodes going down or up.
    pub node_transitions: IntCounter,
    /// `revokd_client_retries_total`: calls retried after UNAVAILABLE or a broken connection.
    pub retries: IntCounter,
}

impl ClientMetrics {
    pub(crate) fn new() -> Self {
        ClientMetrics {
            node_up: IntGaugeVec::new(
                Opts::new(
                    "revokd_client_node_up",
                    "1 when the node's last heartbeat succeeded",
                ),
                &["node"],
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
            node_transitions: counter(
                "revokd_client_node_transitions_total",
                "nodes going down or coming back up",
            ),
            retries: counter(
                "revokd_client_retries_total",
                "calls retried after UNAVAILABLE or a broken connection",
            ),
        }
    }

    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.node_up.clone()))?;
        registry.register(Box::new(self.node_transitions.clone()))?;
        registry.register(Box::new(self.retries.clone()))
    }
}

/// The local replica's progress and freshness.
pub struct ReplicaMetrics {
    /// `revokd_replica_applied_revision`.
    pub applied_revision: IntGauge,
    /// `revokd_replica_lag_revisions`: the highest commit revision heard minus the applied one.
    pub lag: IntGauge,
    /// `revokd_replica_staleness_seconds`: time since the replica was last known up to date.
    pub staleness: Gauge,
    /// `revokd_replica_stale`: 1 while past the staleness bound (the policy is in effect).
    pub stale: IntGauge,
    /// `revokd_replica_stale_transitions_total`: entering or leaving the stale state.
    pub stale_transitions: IntCounter,
    /// `revokd_replica_entries`: revoked token ids held.
    pub entries: IntGauge,
    /// `revokd_replica_rules`: rules held.
    pub rules: IntGauge,
    /// `revokd_replica_bootstraps_total`: snapshots loaded.
    pub bootstraps: IntCounter,
    /// `revokd_replica_watch_resumes_total`: watches resumed on a node after a failure.
    pub resumes: IntCounter,
}

impl ReplicaMetrics {
    pub(crate) fn new() -> Self {
        ReplicaMetrics {
            applied_revision: gauge(
                "revokd_replica_applied_revision",
                "revision the local replica has applied",
            ),
            lag: gauge(
                "revokd_replica_lag_revisions",
                "highest commit revision heard from a node minus the applied revision",
            ),
            staleness: Gauge::new(
                "revokd_replica_staleness_seconds",
                "time since the replica was last known to be up to date",
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
            stale: gauge(
                "revokd_replica_stale",
                "1 while the replica is past its staleness bound",
            ),
            stale_transitions: counter(
                "revokd_replica_stale_transitions_total",
                "times the replica entered or left the stale state",
            ),
            entries: gauge("revokd_replica_entries", "revoked token ids held locally"),
            rules: gauge("revokd_replica_rules", "rules held locally"),
            bootstraps: counter(
                "revokd_replica_bootstraps_total",
                "snapshots loaded into the replica",
            ),
            resumes: counter(
                "revokd_replica_watch_resumes_total",
                "watches resumed after a node failed or fell behind",
            ),
        }
    }

    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.applied_revision.clone()))?;
        registry.register(Box::new(self.lag.clone()))?;
        registry.register(Box::new(self.staleness.clone()))?;
        registry.register(Box::new(self.stale.clone()))?;
        registry.register(Box::new(self.stale_transitions.clone()))?;
        registry.register(Box::new(self.entries.clone()))?;
        registry.register(Box::new(self.rules.clone()))?;
        registry.register(Box::new(self.bootstraps.clone()))?;
        registry.register(Box::new(self.resumes.clone()))
    }
}
