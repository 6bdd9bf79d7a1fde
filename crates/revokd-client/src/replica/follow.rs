//! The replica's background work: bootstrap from `Snapshot`, follow `Watch`, resume on another
//! node from the applied revision when the watched node fails, re-bootstrap on OUT_OF_RANGE,
//! report progress to the watched node, and decide staleness from the client's heartbeats.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use revokd_proto::v1 as pb;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Streaming;

use super::table::{LocalRule, TokenOp, Writer};
use super::{StalenessPolicy, State};
use crate::connection::{Client, NodeConn};
use crate::error::Error;
use revokd_proto::convert::rule_kind;

/// How often staleness and the watched node's health are re-evaluated.
const TICK: Duration = Duration::from_millis(50);
/// Longest wait for a snapshot or the first watch answer from one node.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Least time between two progress reports.
const REPORT_GAP: Duration = Duration::from_millis(50);
/// The deadline a `Watch` carries: a watch runs until it breaks, but a channel may impose a
/// default deadline on calls without one, so it asks for a year.
const WATCH_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

/// A rule from the wire, as the replica keeps it; `None` for a rule kind this client does not
/// know (from a newer node), which is skipped.
fn local_rule(r: &pb::Rule) -> Option<LocalRule> {
    Some(LocalRule {
        kind: rule_kind(r.kind).ok()?,
        value: Arc::from(r.value.as_str()),
        not_before: r.not_before,
        drop_at: r.drop_at,
        reason: Arc::from(r.reason.as_str()),
    })
}

/// Why following one node stopped.
enum Stop {
    /// The task should end.
    Shutdown,
    /// The node cannot continue the watch from our revision: bootstrap again.
    OutOfRange,
    /// The node failed, fell behind or broke the stream: resume elsewhere.
    NodeFailed(String),
}

/// Runs until `stop` fires.
pub(super) async fn run(
    state: Arc<State>,
    mut writer: Writer,
    client: Client,
    mut stop: watch::Receiver<bool>,
) {
    let mut need_snapshot = true;
    let mut avoid: Option<String> = None;
    let mut backoff = client.config().initial_backoff;
    loop {
        if *stop.borrow() {
            return;
        }
        let node = match client.pick_for_stream(avoid.as_deref()) {
            Some(n) => n,
            None => {
                // No healthy node: keep the staleness clock honest while waiting.
                if wait(&state, &client, &mut stop, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(client.config().max_backoff);
                continue;
            }
        };
        if need_snapshot {
            match bootstrap(&state, &mut writer, &node).await {
                Ok(()) => {
                    need_snapshot = false;
                    state.ready.send_replace(true);
                    evaluate(&state, &client);
                }
                Err(e) => {
                    tracing::warn!(node = %node.addr, error = %e, "revokd-client: bootstrap failed; trying another node");
                    avoid = Some(node.addr.clone());
                    if wait(&state, &client, &mut stop, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(client.config().max_backoff);
                    continue;
                }
            }
        }
        match follow(&state, &mut writer, &client, &node, &mut stop).await {
            Stop::Shutdown => return,
            Stop::OutOfRange => {
                tracing::info!(node = %node.addr, revision = state.applied.load(Ordering::Acquire), "revokd-client: watch window passed our revision; bootstrapping again");
                need_snapshot = true;
            }
            Stop::NodeFailed(why) => {
                tracing::warn!(node = %node.addr, reason = %why, revision = state.applied.load(Ordering::Acquire), "revokd-client: resuming the watch on another node");
                state.metrics.resumes.inc();
                avoid = Some(node.addr.clone());
                if wait(&state, &client, &mut stop, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(client.config().max_backoff);
                continue;
            }
        }
        backoff = client.config().initial_backoff;
    }
}

/// Sleeps `d` while keeping staleness current. Returns true when the task should stop.
async fn wait(
    state: &State,
    client: &Client,
    stop: &mut watch::Receiver<bool>,
    d: Duration,
) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        evaluate(state, client);
        tokio::select! {
            _ = tokio::time::sleep(TICK.min(until - Instant::now())) => {}
            _ = stop.changed() => return true,
        }
    }
    *stop.borrow()
}

/// Loads a snapshot from `node` at a revision no older than the one applied (revisions never
/// go backwards).
async fn bootstrap(state: &State, writer: &mut Writer, node: &NodeConn) -> Result<(), Error> {
    let applied = state.applied.load(Ordering::Acquire);
    let mut req = tonic::Request::new(pb::SnapshotRequest {
        chunk_size: state.config.snapshot_chunk,
        min_revision: applied,
    });
    req.set_timeout(OPEN_TIMEOUT);
    let started = Instant::now();
    let load = async {
        let mut stream = node
            .revocation()
            .snapshot(req)
            .await
            .map_err(|s| Error::Stream(format!("Snapshot from {}: {}", node.addr, s.message())))?
            .into_inner();
        let mut replacement = writer.replace();
        let mut rules = Vec::new();
        let mut revision = None;
        loop {
            let chunk = stream
                .message()
                .await
                .map_err(|s| {
                    Error::Stream(format!("Snapshot from {}: {}", node.addr, s.message()))
                })?
                .ok_or_else(|| {
                    Error::Stream(format!(
                        "Snapshot from {} ended before its last chunk",
                        node.addr
                    ))
                })?;
            if *revision.get_or_insert(chunk.revision) != chunk.revision {
                return Err(Error::Stream(format!(
                    "Snapshot from {} changed revision mid-stream",
                    node.addr
                )));
            }
            for t in &chunk.tokens {
                replacement.push(&t.jti, t.expires_at, &t.reason);
            }
            rules.extend(chunk.rules.iter().filter_map(local_rule));
            if chunk.last {
                let revision = revision.unwrap_or(0);
                if revision < applied {
                    return Err(Error::Stream(format!(
                        "Snapshot from {} is at revision {revision}, older than ours ({applied})",
                        node.addr
                    )));
                }
                replacement.finish(rules);
                return Ok(revision);
            }
        }
    };
    let revision = tokio::time::timeout(OPEN_TIMEOUT, load)
        .await
        .map_err(|_| Error::Stream(format!("Snapshot from {} timed out", node.addr)))??;
    set_applied(state, revision);
    state.metrics.bootstraps.inc();
    state.metrics.entries.set(writer_len(state));
    state.metrics.rules.set(state.store.rule_count() as i64);
    tracing::info!(node = %node.addr, revision, tokens = state.store.len(), rules = state.store.rule_count(), took = ?started.elapsed(), "revokd-client: replica bootstrapped");
    Ok(())
}

fn writer_len(state: &State) -> i64 {
    state.store.len() as i64
}

fn set_applied(state: &State, revision: u64) {
    state.applied.store(revision, Ordering::Release);
    state.applied_tx.send_replace(revision);
    state.metrics.applied_revision.set(revision as i64);
}

/// Follows `node`'s watch from the applied revision until something stops it.
async fn follow(
    state: &State,
    writer: &mut Writer,
    client: &Client,
    node: &Arc<NodeConn>,
    stop: &mut watch::Receiver<bool>,
) -> Stop {
    let from = state.applied.load(Ordering::Acquire);
    let mut req = tonic::Request::new(pb::WatchRequest {
        from_revision: from,
    });
    req.set_timeout(WATCH_DEADLINE);
    let opened = tokio::time::timeout(OPEN_TIMEOUT, node.revocation().watch(req)).await;
    let mut stream: Streaming<pb::WatchResponse> = match opened {
        Err(_) => return Stop::NodeFailed("watch did not open in time".into()),
        Ok(Err(s)) if s.code() == tonic::Code::OutOfRange => return Stop::OutOfRange,
        Ok(Err(s)) => return Stop::NodeFailed(s.message().to_owned()),
        Ok(Ok(r)) => r.into_inner(),
    };
    *state.watching.lock().unwrap_or_else(|p| p.into_inner()) = Some(node.clone());
    client.report_to(node).await;
    let stop_reason = follow_stream(state, writer, client, node, &mut stream, stop).await;
    *state.watching.lock().unwrap_or_else(|p| p.into_inner()) = None;
    stop_reason
}

async fn follow_stream(
    state: &State,
    writer: &mut Writer,
    client: &Client,
    node: &NodeConn,
    stream: &mut Streaming<pb::WatchResponse>,
    stop: &mut watch::Receiver<bool>,
) -> Stop {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut progressed_at = Instant::now();
    let stuck_after = client.config().heartbeat_interval * 3;
    loop {
        tokio::select! {
            msg = stream.message() => match msg {
                Ok(Some(resp)) => {
                    if let Err(e) = apply(state, writer, &resp) {
                        return Stop::NodeFailed(e);
                    }
                    progressed_at = Instant::now();
                    evaluate(state, client);
                }
                Ok(None) => return Stop::NodeFailed("watch stream ended".into()),
                Err(s) if s.code() == tonic::Code::OutOfRange => return Stop::OutOfRange,
                Err(s) => return Stop::NodeFailed(s.message().to_owned()),
            },
            _ = tick.tick() => {
                evaluate(state, client);
                if !node.healthy() {
                    return Stop::NodeFailed("its heartbeat failed".into());
                }
                // The cluster has moved on but this node sends nothing: it may be cut off from
                // the leader while still answering us.
                let behind = state.commit_seen.load(Ordering::Acquire) > state.applied.load(Ordering::Acquire);
                if behind && progressed_at.elapsed() > stuck_after {
                    return Stop::NodeFailed(format!("no progress for {stuck_after:?} while the cluster is ahead"));
                }
                if !behind {
                    progressed_at = Instant::now();
                }
            }
            _ = stop.changed() => return Stop::Shutdown,
        }
    }
}

/// Applies one revision's changes. Revisions at or below the applied one are skipped (a resumed
/// watch never repeats a change); a gap is an error.
fn apply(state: &State, writer: &mut Writer, resp: &pb::WatchResponse) -> Result<(), String> {
    let applied = state.applied.load(Ordering::Acquire);
    if resp.revision <= applied {
        return Ok(());
    }
    let mut ops = Vec::new();
    let mut added = Vec::new();
    let mut removed = Vec::new();
    for event in &resp.events {
        use pb::event::Change;
        match &event.change {
            Some(Change::Revoked(t)) => ops.push(TokenOp::Insert {
                jti: &t.jti,
                expires_at: t.expires_at,
                reason: &t.reason,
            }),
            Some(Change::Unrevoked(u)) => ops.push(TokenOp::Remove(&u.jti)),
            Some(Change::RuleAdded(r)) => added.extend(local_rule(r)),
            Some(Change::RuleRemoved(r)) => {
                if let Ok(k) = rule_kind(r.kind) {
                    removed.push((k, r.value.as_str()));
                }
            }
            Some(Change::Purged(p)) => {
                ops.extend(p.jtis.iter().map(|j| TokenOp::Remove(j)));
                removed.extend(
                    p.rules
                        .iter()
                        .filter_map(|r| Some((rule_kind(r.kind).ok()?, r.value.as_str()))),
                );
            }
            None => return Err(format!("revision {} carries an empty event", resp.revision)),
        }
    }
    writer.apply_tokens(&ops);
    writer.apply_rules(added, &removed);
    set_applied(state, resp.revision);
    state.metrics.entries.set(writer_len(state));
    state.metrics.rules.set(state.store.rule_count() as i64);
    Ok(())
}

/// Learns the cluster's progress from the latest heartbeats and updates freshness, lag and the
/// stale flag (logging and counting transitions).
fn evaluate(state: &State, client: &Client) {
    state.clock.store(super::unix_now(), Ordering::Relaxed);
    let applied = state.applied.load(Ordering::Acquire);
    let bootstrapped = *state.ready.borrow();
    let mut commit = state.commit_seen.load(Ordering::Acquire);
    let mut fresh_at: Option<Instant> = None;
    for node in client.nodes() {
        let Some(p) = node.last_probe() else { continue };
        commit = commit.max(p.response.commit_revision);
        // Only a node that follows a leader speaks for the cluster's progress.
        let follows_leader =
            p.response.leader_id != 0 && p.response.role != pb::Role::Candidate as i32;
        if bootstrapped && follows_leader && p.response.commit_revision <= applied {
            fresh_at = Some(fresh_at.map_or(p.sent_at, |f| f.max(p.sent_at)));
        }
    }
    state.commit_seen.store(commit, Ordering::Release);
    state.metrics.lag.set(commit.saturating_sub(applied) as i64);
    if let Some(at) = fresh_at {
        let ms = at.saturating_duration_since(state.base).as_millis() as u64;
        let prev = state.fresh_at_ms.load(Ordering::Acquire);
        if prev == u64::MAX || ms > prev {
            state.fresh_at_ms.store(ms, Ordering::Release);
        }
    }
    let staleness = state.staleness();
    state.metrics.staleness.set(staleness.as_secs_f64());
    let bound = Duration::from_millis(state.max_staleness_ms.load(Ordering::Relaxed));
    let stale = !bootstrapped || staleness > bound;
    if state.stale.swap(stale, Ordering::AcqRel) != stale {
        state.metrics.stale.set(i64::from(stale));
        state.metrics.stale_transitions.inc();
        let id = &state.config.replica_id;
        if stale {
            match state.policy() {
                StalenessPolicy::FailClosed => {
                    tracing::warn!(replica = %id, ?staleness, ?bound, applied, commit, "revokd-client: replica is stale; failing closed (every check rejects)")
                }
                StalenessPolicy::FailOpen => {
                    tracing::warn!(replica = %id, ?staleness, ?bound, applied, commit, "revokd-client: replica is stale; failing open (answers flagged stale)")
                }
            }
        } else {
            tracing::info!(replica = %id, applied, commit, "revokd-client: replica is up to date again");
        }
    }
}

/// Tells the watched node about new revisions promptly (at most one report in flight, at least
/// [`REPORT_GAP`] apart), so receipts do not wait for the next heartbeat.
pub(super) async fn report_progress(
    state: Arc<State>,
    client: Client,
    mut stop: watch::Receiver<bool>,
) {
    let mut revisions = state.applied_tx.subscribe();
    loop {
        tokio::select! {
            changed = revisions.changed() => if changed.is_err() { return },
            _ = stop.changed() => return,
        }
        revisions.borrow_and_update();
        let node = state
            .watching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(node) = node {
            client.report_to(&node).await;
        }
        tokio::time::sleep(REPORT_GAP).await;
    }
}
