//! The agent's Prometheus metrics, registered with the replica's and the client's in one
//! registry that `/metrics` serves.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use revokd_client::Replica;

/// Every metric the agent exports.
pub struct Metrics {
    registry: Registry,
    /// Decisions by front end (`forward_auth`, `ext_authz`), outcome (`allow`, `deny`,
    /// `unavailable`) and reason (`ok`, `revoked`, `expired`, ...).
    pub decisions: IntCounterVec,
    /// Time to decide, by front end.
    pub decision_seconds: HistogramVec,
    /// Local `Check` / `CheckBatch` calls answered, by RPC and outcome.
    pub local_checks: IntCounterVec,
    /// Keys in each issuer's current set.
    pub keys: IntGaugeVec,
    /// When each issuer's set last loaded (unix seconds).
    pub jwks_loaded_at: IntGaugeVec,
    /// Failed loads of each issuer's set (the last good set stays in use).
    pub jwks_failures: IntCounterVec,
}

impl Metrics {
    /// The metrics, with the replica's and its client's in the same registry.
    pub fn new(replica: &Replica) -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let decisions = IntCounterVec::new(
            Opts::new(
                "revokd_agent_decisions_total",
                "Authorization decisions by front end, outcome and reason.",
            ),
            &["frontend", "outcome", "reason"],
        )?;
        let decision_seconds = HistogramVec::new(
            HistogramOpts::new(
                "revokd_agent_decision_seconds",
                "Time from a request's arrival to its decision.",
            )
            .buckets(vec![
                1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 0.025, 0.1, 1.0,
            ]),
            &["frontend"],
        )?;
        let local_checks = IntCounterVec::new(
            Opts::new(
                "revokd_agent_local_checks_total",
                "Check and CheckBatch calls answered from the replica, by RPC and outcome.",
            ),
            &["rpc", "outcome"],
        )?;
        let keys = IntGaugeVec::new(
            Opts::new(
                "revokd_agent_issuer_keys",
                "Keys in each issuer's current set.",
            ),
            &["issuer"],
        )?;
        let jwks_loaded_at = IntGaugeVec::new(
            Opts::new(
                "revokd_agent_issuer_keys_loaded_timestamp_seconds",
                "When each issuer's key set last loaded.",
            ),
            &["issuer"],
        )?;
        let jwks_failures = IntCounterVec::new(
            Opts::new(
                "revokd_agent_jwks_fetch_failures_total",
                "Failed loads of each issuer's key set; the last good set stays in use.",
            ),
            &["issuer"],
        )?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(decision_seconds.clone()))?;
        registry.register(Box::new(local_checks.clone()))?;
        registry.register(Box::new(keys.clone()))?;
        registry.register(Box::new(jwks_loaded_at.clone()))?;
        registry.register(Box::new(jwks_failures.clone()))?;
        replica.metrics().register(&registry)?;
        replica.client().metrics().register(&registry)?;
        Ok(Metrics {
            registry,
            decisions,
            decision_seconds,
            local_checks,
            keys,
            jwks_loaded_at,
            jwks_failures,
        })
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail on I/O; a metric that cannot be encoded is a bug
        // worth an empty scrape rather than a panic.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
