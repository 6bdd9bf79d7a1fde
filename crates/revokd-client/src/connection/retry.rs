//! Deadlines and retries: every call runs under the client's timeout, attempt by attempt,
//! following leader hints and backing off with jitter on `UNAVAILABLE`.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::{from_status, Error};

use revokd_proto::wire::{
    is_node_error, ACTOR_HEADER, LEADER_ADDR_HEADER, QUORUM_LOST_HEADER, WRITE_ORDER_HEADER,
};

use super::pool::{mark, probe_round, InFlight};
use super::*;

/// One call's progress through its retries.
struct Retry {
    op: &'static str,
    started: Instant,
    deadline: Instant,
    /// The next backoff (doubling up to the configured maximum).
    backoff: Duration,
    /// What the last failed attempt said, for the error if the deadline passes.
    last: String,
}

impl Retry {
    fn new(op: &'static str, timeout: Duration, backoff: Duration) -> Self {
        let started = Instant::now();
        Retry {
            op,
            started,
            deadline: started + timeout,
            backoff,
            last: String::from("no healthy node"),
        }
    }

    /// The error once the call has run out of time, with what the cluster last said.
    fn unavailable(&self, last: String) -> Error {
        Error::Unavailable {
            op: self.op,
            waited: self.started.elapsed(),
            last,
        }
    }
}

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

    /// Like [`Client::call`], under `timeout` instead of the configured one.
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
        let mut retry = Retry::new(op, timeout, self.inner.config.initial_backoff);
        let mut rounds = self.probe_rounds();
        loop {
            let remaining = retry.deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                let last = std::mem::take(&mut retry.last);
                return Err(retry.unavailable(last));
            }
            let Some(node) = self.pick(target) else {
                self.await_healthy_node(&mut retry, &mut rounds).await;
                continue;
            };
            node.outstanding.fetch_add(1, Ordering::AcqRel);
            let guard = InFlight(node.clone());
            let attempt = remaining.min(self.inner.config.attempt_timeout);
            let result = self.attempt(&node, attempt, f(node.clone(), attempt)).await;
            drop(guard);
            match result {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(status) => self.after_failure(&mut retry, &node, status).await?,
            }
        }
    }

    /// No node is healthy: waits for the next heartbeat round, or, while still connecting
    /// (no prober runs yet, and the cluster may be starting), backs off and probes itself
    /// rather than wait out the timeout for a round that would never come.
    async fn await_healthy_node(&self, retry: &mut Retry, rounds: &mut watch::Receiver<u64>) {
        if self.inner.probing.load(Ordering::Acquire) {
            rounds.borrow_and_update();
            let _ = tokio::time::timeout_at(retry.deadline, rounds.changed()).await;
        } else {
            tokio::time::sleep_until((Instant::now() + retry.backoff).min(retry.deadline)).await;
            retry.backoff = (retry.backoff * 2).min(self.inner.config.max_backoff);
            probe_round(&self.inner).await;
        }
    }

    /// Decides what a failed attempt on `node` means: `Ok` to try again (at once towards a
    /// leader hint, otherwise after a jittered backoff), or the error the caller gets. A
    /// transport failure (not the node speaking) also marks the node down until a heartbeat
    /// succeeds again.
    async fn after_failure(
        &self,
        retry: &mut Retry,
        node: &Arc<NodeConn>,
        status: tonic::Status,
    ) -> Result<(), Error> {
        let transient = matches!(
            status.code(),
            tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
                | tonic::Code::DeadlineExceeded
        );
        if !transient {
            return Err(from_status(retry.op, status));
        }
        let said = format!("{}: {}", node.addr, status.message());
        if Instant::now() >= retry.deadline {
            return Err(retry.unavailable(said));
        }
        self.inner.metrics.retries.inc();
        retry.last = said;
        let hint = status
            .metadata()
            .get(LEADER_ADDR_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if !is_node_error(status.message()) {
            mark(&self.inner, node, false, &retry.last);
        }
        if status.metadata().get(QUORUM_LOST_HEADER).is_some() {
            // A leader cut off from the majority: no use until a heartbeat round says it is
            // back, and no longer the leader to aim writes at.
            self.forget_leader(&node.addr);
            mark(&self.inner, node, false, &retry.last);
            return Ok(());
        }
        if let Some(h) = hint.filter(|h| *h != node.addr) {
            self.set_leader(&h);
            return Ok(());
        }
        let jitter = retry.backoff.mul_f64(fastrand::f64() * 0.5);
        tokio::time::sleep_until((Instant::now() + retry.backoff + jitter).min(retry.deadline))
            .await;
        retry.backoff = (retry.backoff * 2).min(self.inner.config.max_backoff);
        Ok(())
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

    /// Numbers a new write ([`order`]); the write is in flight until the ticket drops.
    pub(super) fn begin_write(&self) -> order::Ticket {
        self.inner.writes.begin()
    }

    /// A write's request: [`Client::request`] with the write's order.
    pub(super) fn write_request<T>(
        &self,
        msg: T,
        remaining: Duration,
        ticket: &order::Ticket,
    ) -> tonic::Request<T> {
        let mut req = self.request(msg, remaining);
        if let Ok(v) = ticket.order().to_string().parse() {
            req.metadata_mut().insert(WRITE_ORDER_HEADER, v);
        }
        req
    }
}
