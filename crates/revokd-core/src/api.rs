//! What the API's reads and writes take and answer, beyond the revocation data itself: how
//! fresh a read must be ([`Consistency`]), a remote check's answer ([`CheckAnswer`]) and a
//! committed write's result ([`WriteResult`]).
//!
//! These are the domain side of the `Revocation` service: clients take and return them, and
//! `revokd-proto`'s `convert` module is the one place that maps them to and from the wire.
//! They live here, not in the client, because both sides of the wire speak them: the node
//! decides consistency and builds the answers that clients read back.

use crate::types::{RevokedToken, Rule};

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Consistency {
    /// The answering node's applied state: cheap, possibly behind the leader.
    Local,
    /// Reflects every write acknowledged before the call started (a Raft read index).
    Linearizable,
}

/// What revoked a token, as a remote check reports it: the owned form of
/// [`Match`](crate::Match), with who revoked it and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Matched {
    /// Its `jti` is in the revocation set.
    Token(RevokedToken),
    /// A rule covers it.
    Rule(Rule),
}

/// A node's answer to "is this token revoked?".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckAnswer {
    /// What revoked the token; `None` when it is not revoked.
    pub matched: Option<Matched>,
    /// The revision at which the node computed the answer.
    pub revision: u64,
}

impl CheckAnswer {
    /// Whether the token is revoked.
    pub fn is_revoked(&self) -> bool {
        self.matched.is_some()
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The change was applied at `revision`.
    Applied,
    /// Nothing changed: it was already in force since `revision` (an idempotent retry).
    AlreadyPresent,
    /// Nothing changed: the token has already expired.
    AlreadyExpired,
    /// Nothing changed: there was nothing to remove.
    NotFound,
}

/// A write the cluster committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteResult {
    /// What it did.
    pub outcome: WriteOutcome,
    /// The revision the outcome refers to.
    pub revision: u64,
    /// The revision of the log entry that carried the request (>= `revision`): every node and
    /// replica that has applied it reflects the write.
    pub committed_revision: u64,
    /// The leader that committed it.
    pub leader_id: u64,
}
