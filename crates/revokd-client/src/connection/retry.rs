//! Deadlines and retries: every call runs under the client's timeout, attempt by attempt,
//! following leader hints and backing off with jitter on `UNAVAILABLE`.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{from_status, Error};

use revokd_proto::wire::{is_node_error, ACTOR_HEADER, LEADER_ADDR_HEADER};

use super::pool::{mark, probe_round, InFlight};
use super::*;

impl Client {
    /// Runs `f` on a node chosen for `target`, retrying UNAVAILABLE answers with backoff
    /// (following a leader hint at once) until the configured timeout.
    pub(super) async fn call<T, F, Fut>(
        &self,
        op: &'static str,
        target: Target,
        f: F,
    ) -> Result<T, Error>
    where
        F: Fn(Arc<NodeConn>, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_within(op, target, self.inner.config.timeout, f)
            .await
    }

    pub(super) async fn call_within<T, F, Fut>(
        &self,
        op: &'static str,
        target: Target,
        timeout: Duration,
        f: F,
    ) -> Result<T, Error>
    where
        F: Fn(Arc<NodeConn>, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut backoff = self.inner.config.initial_backoff;
        let mut last = String::from("no healthy node");
        let mut rounds = self.probe_rounds();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Error::Unavailable {
                    op,
                    waited: started.elapsed(),
                    last,
                });
            }
            let Some(node) = self.pick(target) else {
                if self.inner.probing.load(Ordering::Acquire) {
                    // Every node failed its last heartbeat: wait for the next probe round.
                    rounds.borrow_and_update();
                    let _ = tokio::time::timeout_at(deadline, rounds.changed()).await;
                } else {
                    // Still connecting, so no prober runs (the cluster may be starting):
                    // back off, then probe by ourselves, rather than wait out the timeout
                    // for a round that would never come.
                    tokio::time::sleep_until((Instant::now() + backoff).min(deadline)).await;
                    backoff = (backoff * 2).min(self.inner.config.max_backoff);
                    probe_round(&self.inner).await;
                }
                continue;
            };
            node.outstanding.fetch_add(1, Ordering::AcqRel);
            let guard = InFlight(node.clone());
            let attempt = remaining.min(self.inner.config.attempt_timeout);
            let result = self.attempt(&node, attempt, f(node.clone(), attempt)).await;
            drop(guard);
            let status = match result {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(status) => status,
            };
            match status.code() {
                tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
                | tonic::Code::DeadlineExceeded
                    if Instant::now() < deadline =>
                {
                    self.inner.metrics.retries.inc();
                    last = format!("{}: {}", node.addr, status.message());
                    let hint = status
                        .metadata()
                        .get(LEADER_ADDR_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    if !is_node_error(status.message()) {
                        // Not the node speaking: the connection failed. Stop using the node
                        // until a heartbeat succeeds again.
                        mark(&self.inner, &node, false, &last);
                    }
                    if let Some(h) = hint.filter(|h| *h != node.addr) {
                        self.set_leader(&h);
                        continue;
                    }
                    let jitter = backoff.mul_f64(fastrand::f64() * 0.5);
                    tokio::time::sleep_until((Instant::now() + backoff + jitter).min(deadline))
                        .await;
                    backoff = (backoff * 2).min(self.inner.config.max_backoff);
                }
                tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
                | tonic::Code::DeadlineExceeded => {
                    return Err(Error::Unavailable {
                        op,
                        waited: started.elapsed(),
                        last: format!("{}: {}", node.addr, status.message()),
                    })
                }
                _ => return Err(from_status(op, status)),
            }
        }
    }

    /// Runs one attempt on `node` for at most `timeout`, giving up early when a heartbeat
    /// round finds the node down.
    pub(super) async fn attempt<T>(
        &self,
        node: &NodeConn,
        timeout: Duration,
        fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<tonic::Response<T>, tonic::Status> {
        let mut rounds = self.probe_rounds();
        let node_down = async {
            loop {
                if rounds.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                if !node.healthy() {
                    return;
                }
            }
        };
        tokio::select! {
            r = tokio::time::timeout(timeout, fut) => r.unwrap_or_else(|_| {
                Err(tonic::Status::deadline_exceeded(format!("no answer within {timeout:?}")))
            }),
            _ = node_down => Err(tonic::Status::unavailable(format!(
                "{} stopped answering heartbeats", node.addr
            ))),
        }
    }

    pub(super) fn request<T>(&self, msg: T, remaining: Duration) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(remaining);
        if let Ok(v) = self.inner.config.actor.parse() {
            req.metadata_mut().insert(ACTOR_HEADER, v);
        }
        req
    }
}
