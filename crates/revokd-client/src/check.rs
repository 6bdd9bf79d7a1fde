//! The revocation-check interface: what a token looks like to a revocation check
//! ([`TokenQuery`] and [`RuleKind`], shared with the node), and the verdict. The local replica implements it; the validator consumes it.

use std::sync::Arc;
use std::time::Duration;

pub use revokd_core::{RuleKind, TokenQuery};

/// What revoked a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokedBy {
    /// Its `jti` is in the revocation set.
    Jti,
    /// A rule: every token with this claim value issued before `not_before`.
    Rule {
        /// The claim.
        kind: RuleKind,
        /// The claim's value.
        value: Arc<str>,
        /// Unix seconds: tokens issued before this are revoked.
        not_before: i64,
    },
}

/// Why a token is revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// What matched.
    pub by: RevokedBy,
    /// The reason the admin gave (may be empty).
    pub reason: Arc<str>,
}

/// The answer of a revocation check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not revoked. `stale` is set when the answer came from a replica past its staleness
    /// bound under the fail-open policy: how long it has not been known to be up to date.
    Allowed {
        /// Set when answered from a stale replica (fail open).
        stale: Option<Duration>,
    },
    /// Revoked.
    Revoked(Revocation),
    /// The replica is past its staleness bound and the policy is fail closed: treat the token
    /// as rejected.
    Stale {
        /// How long the replica has not been known to be up to date.
        staleness: Duration,
    },
}

impl Verdict {
    /// Whether the token must be rejected (revoked, or unknown because the replica is too stale
    /// under fail closed).
    pub fn is_rejected(&self) -> bool {
        !matches!(self, Verdict::Allowed { .. })
    }
}

/// Something that can say whether a token is revoked: the local [`crate::Replica`], or a test
/// double. Implementations must be cheap and must not block: validators call it per request.
pub trait RevocationCheck: Send + Sync + 'static {
    /// Checks one token.
    fn check(&self, token: &TokenQuery<'_>) -> Verdict;
}

impl<T: RevocationCheck + ?Sized> RevocationCheck for Arc<T> {
    fn check(&self, token: &TokenQuery<'_>) -> Verdict {
        (**self).check(token)
    }
}
