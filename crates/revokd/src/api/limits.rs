//! Per-client rate limits: a token bucket per client identity for writes (revokes, rules,
//! membership) and one for reads (checks, snapshots, watches, status), applied in front of
//! the gRPC services. Over its budget a client gets RESOURCE_EXHAUSTED with a retry hint,
//! while every other client keeps its own budget, so one flooding client cannot starve the
//! rest.
//!
//! The identity is the authenticated [`Principal`] when the authorizer (which runs first)
//! verified one, so admins sharing an address (behind a NAT or a proxy) have a budget each
//! and one admin cannot escape its budget by changing address; otherwise it is the client's
//! IP address. Raft traffic between nodes, health checks and reflection are never limited;
//! nor are writes another node forwards to the leader (they were limited where they arrived;
//! with TLS on, only a peer's forwarding counts, see [`Caller::forwarded`]).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use super::caller::{Caller, Principal};
use super::gate::Gate;
use crate::error::Error;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Which budget a call draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Changes the revocation set or the membership.
    Write,
    /// Reads state or streams it.
    Read,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Write => "writes",
            Kind::Read => "reads",
        }
    }
}

/// Which budget a gRPC path draws from; `None` for calls that are never limited.
pub fn classify(path: &str) -> Option<Kind> {
    let (service, method) = path.trim_start_matches('/').split_once('/')?;
    match (service, method) {
        (
            "revokd.v1.Revocation",
            "Revoke" | "RevokeBatch" | "RevokeRule" | "Unrevoke" | "RemoveRule",
        ) => Some(Kind::Write),
        ("revokd.v1.Cluster", "AddLearner" | "ChangeMembership" | "TriggerSnapshot") => {
            Some(Kind::Write)
        }
        ("revokd.v1.Revocation" | "revokd.v1.Cluster", _) => Some(Kind::Read),
        _ => None,
    }
}

/// The configured budgets. Cheap to clone.
#[derive(Clone, Default)]
pub struct RateLimits {
    writes: Option<(u32, Arc<DefaultKeyedRateLimiter<String>>)>,
    reads: Option<(u32, Arc<DefaultKeyedRateLimiter<String>>)>,
}

impl RateLimits {
    /// Budgets of `writes` and `reads` calls per second per client, each with a
    /// burst of one second's worth; 0 means unlimited.
    pub fn new(writes: u32, reads: u32) -> Self {
        let limiter = |per_second: u32| {
            NonZeroU32::new(per_second).map(|n| {
                (
                    per_second,
                    Arc::new(RateLimiter::keyed(Quota::per_second(n))),
                )
            })
        };
        RateLimits {
            writes: limiter(writes),
            reads: limiter(reads),
        }
    }

    /// Whether any budget is set.
    pub fn enabled(&self) -> bool {
        self.writes.is_some() || self.reads.is_some()
    }

    /// Takes one call of `kind` from `client`'s budget (a principal, or `ip:<address>`), or
    /// says how long to wait.
    pub fn check(&self, kind: Kind, client: &str) -> Result<(), (u32, Duration)> {
        let limiter = match kind {
            Kind::Write => &self.writes,
            Kind::Read => &self.reads,
        };
        let Some((per_second, limiter)) = limiter else {
            return Ok(());
        };
        // `check_key` wants an owned key; the lookup itself is by hash.
        limiter.check_key(&client.to_owned()).map_err(|not_until| {
            (
                *per_second,
                not_until.wait_time_from(DefaultClock::default().now()),
            )
        })
    }

    /// Drops the state of clients whose buckets are full again (bounded memory under many
    /// client identities).
    pub fn shrink(&self) {
        for (_, l) in [&self.writes, &self.reads].into_iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

impl Gate for RateLimits {
    /// Refuses, with RESOURCE_EXHAUSTED, a call over its client's budget.
    fn admit(&self, head: &mut http::request::Parts) -> Result<(), tonic::Status> {
        if !self.enabled() {
            return Ok(());
        }
        let Some(kind) = classify(head.uri.path()) else {
            return Ok(());
        };
        let caller = head.extensions.get::<Caller>();
        if caller.is_some_and(|c| c.forwarded) {
            return Ok(());
        }
        let client = match (
            head.extensions.get::<Principal>(),
            caller.and_then(|c| c.addr),
        ) {
            (Some(Principal(p)), _) => p.clone(),
            (None, Some(addr)) => format!("ip:{addr}"),
            (None, None) => return Ok(()),
        };
        let client = client.as_str();
        let Err((per_second, wait)) = self.check(kind, client) else {
            return Ok(());
        };
        tracing::debug!(%client, kind = kind.name(), "api: rate limit exceeded");
        Err(Error::RateLimited {
            per_second,
            kind: kind.name(),
            client: client.to_owned(),
            retry_after: wait,
        }
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_draw_from_the_right_budget() {
        assert_eq!(classify("/revokd.v1.Revocation/Revoke"), Some(Kind::Write));
        assert_eq!(
            classify("/revokd.v1.Revocation/RevokeBatch"),
            Some(Kind::Write)
        );
        assert_eq!(
            classify("/revokd.v1.Cluster/ChangeMembership"),
            Some(Kind::Write)
        );
        assert_eq!(classify("/revokd.v1.Revocation/Check"), Some(Kind::Read));
        assert_eq!(classify("/revokd.v1.Revocation/Watch"), Some(Kind::Read));
        assert_eq!(classify("/revokd.v1.Cluster/Heartbeat"), Some(Kind::Read));
        assert_eq!(classify("/revokd.v1.Raft/AppendEntries"), None);
        assert_eq!(classify("/grpc.health.v1.Health/Check"), None);
        assert_eq!(classify("garbage"), None);
    }

    #[test]
    fn each_client_has_its_own_bucket() {
        let limits = RateLimits::new(5, 0);
        let (a, b) = ("ip:10.0.0.1", "sub:alice");
        for _ in 0..5 {
            assert!(limits.check(Kind::Write, a).is_ok());
        }
        let (per_second, wait) = limits.check(Kind::Write, a).unwrap_err();
        assert_eq!(per_second, 5);
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
        assert!(
            limits.check(Kind::Write, b).is_ok(),
            "another client is unaffected"
        );
        assert!(
            limits.check(Kind::Read, a).is_ok(),
            "reads are unlimited here"
        );
        assert!(!RateLimits::new(0, 0).enabled());
    }
}
