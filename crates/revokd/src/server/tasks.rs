//! The node's background tasks, each until the stop signal: keeping `grpc.health.v1` in step
//! with the node's state (and warning of a stepped clock or a peer too far for the timing),
//! purging expired entries on the leader, stopping the node when Raft
//! fails, and dropping idle rate-limit buckets.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use revokd_core::Command;
use tokio::sync::watch;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::ServingStatus;

use crate::api;
use crate::consensus::Timing;
use crate::node::Node;
use crate::typ::{NodeId, Raft};

/// How often the health task looks at the node's state: a client that polls health learns of
/// a change within this (plus its own interval).
const HEALTH_INTERVAL: Duration = Duration::from_millis(200);

/// The `grpc.health.v1` service, NOT_SERVING until the health task (started here) finds the
/// node ready.
pub(super) async fn start_health(
    node: &Node,
    stop: watch::Receiver<bool>,
) -> HealthServer<impl Health> {
    let (health, health_svc) = tonic_health::server::health_reporter();
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    tokio::spawn(health_task(node.clone(), health, stop));
    health_svc
}

/// Keeps `grpc.health.v1` SERVING exactly while the node is in contact with a leader (it
/// leads with a quorum, or heard from its leader within the election timeout) and has
/// applied everything it knows to be committed.
async fn health_task(
    node: Node,
    health: tonic_health::server::HealthReporter,
    mut stop: watch::Receiver<bool>,
) {
    let mut last = None;
    let mut stepped = false;
    let mut too_far = BTreeSet::new();
    loop {
        warn_of_far_peers(&node, &mut too_far);
        let step = node.clock.step_secs();
        if (step != 0.0) != stepped {
            stepped = step != 0.0;
            match stepped {
                true => tracing::warn!(
                    step_secs = step,
                    kept = node.clock.now(),
                    "clock: the system clock was stepped; this node keeps its time from the monotonic clock (restart it once the clock is right)"
                ),
                false => tracing::info!("clock: the system clock agrees with the kept time again"),
            }
        }
        let leader = node.leader_in_contact().map(|l| l.id);
        let committed = node
            .raft
            .with_raft_state(|st| st.committed.map(|l| l.index).unwrap_or(0))
            .await
            .unwrap_or(u64::MAX);
        let applied = *node.sm.applied().borrow();
        let serving = leader.is_some() && applied >= committed;
        if last != Some(serving) {
            let status = if serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for svc in ["", "revokd.v1.Revocation", "revokd.v1.Cluster"] {
                health.set_service_status(svc, status).await;
            }
            tracing::info!(serving, leader = ?leader, applied, committed, "health: status changed");
            last = Some(serving);
        }
        tokio::select! {
            _ = tokio::time::sleep(HEALTH_INTERVAL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Logs once per peer (until it comes back within bounds) a measured round trip longer than
/// this node's heartbeat allows by the timing rule: its AppendEntries would time out.
fn warn_of_far_peers(node: &Node, warned: &mut BTreeSet<NodeId>) {
    for (peer, rtt) in node.links.rtts() {
        let needs = Timing::for_rtt(rtt).heartbeat;
        let far = needs > node.config.heartbeat;
        if far && warned.insert(peer) {
            tracing::warn!(
                peer,
                rtt_ms = rtt.as_millis() as u64,
                heartbeat_ms = node.config.heartbeat.as_millis() as u64,
                needs_ms = needs.as_millis() as u64,
                "timing: the round trip to this peer is too long for the heartbeat; set --max-peer-rtt-ms to the largest round trip on every node"
            );
        } else if !far {
            warned.remove(&peer);
        }
    }
}

/// On the leader, periodically proposes a purge of entries that have expired by its clock.
pub(super) async fn purge_task(node: Node, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(node.config.purge_interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let leads = node.leader().is_some_and(|l| l.id == node.id);
        if !leads || node.elections.handing_off() || node.elections.quorum_lost() {
            continue;
        }
        let now = node.clock.now();
        if !node.sm.read().set.purge_due(now) {
            continue;
        }
        let deadline = tokio::time::Instant::now() + node.config.default_deadline;
        match node.propose(Command::Purge { now }, deadline).await {
            Ok(a) => tracing::debug!(revision = a.revision, now, "purge: committed"),
            // Leadership moved: the new leader purges.
            Err(crate::error::Error::NotLeader(_)) => {}
            Err(e) => tracing::warn!(error = %e, "purge: failed"),
        }
    }
}

/// Fail-stop: if Raft stops on its own (a storage error, a corrupt snapshot), the node stops
/// serving instead of answering from a state it can no longer keep. Returns where the fatal
/// error is left for the caller to report once the node has stopped.
pub(super) fn stop_on_fatal(
    raft: &Raft,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
) -> Arc<Mutex<Option<String>>> {
    let fatal: Arc<Mutex<Option<String>>> = Arc::default();
    let (mut metrics, slot) = (raft.metrics(), fatal.clone());
    tokio::spawn(async move {
        let Ok(m) = metrics.wait_for(|m| m.running_state.is_err()).await else {
            return;
        };
        if let (Err(e), false) = (&m.running_state, *stop_rx.borrow()) {
            tracing::error!(error = %e, "raft: fatal error; stopping the node");
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            let _ = stop_tx.send(true);
        }
    });
    fatal
}

/// How often idle rate-limit buckets are dropped.
const SHRINK_EVERY: Duration = Duration::from_secs(60);

/// Drops the rate limiter's idle buckets every [`SHRINK_EVERY`] (one per caller seen), so
/// its memory follows the callers of the last minute.
pub(super) async fn shrink_limits(
    limits: api::limits::RateLimits,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(SHRINK_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => limits.shrink(),
            _ = stop.changed() => return,
        }
    }
}
