//! The node's one error type, [`Error`], and the classification of openraft's errors into it.
//!
//! Every layer returns it (routing, the proposer, the replica registry, the gRPC services, the
//! gate), so none of them imports the edge to report a failure; `api::error` maps it to a
//! gRPC status in one place. Each variant keeps its cause typed and says, in its message,
//! which subsystem failed and what to do (`revokd: not leader; leader is node 2 at ...`).

use std::fmt;
use std::time::Duration;

use openraft::error::{ChangeMembershipError, Fatal, InProgress, QuorumNotEnough};
use revokd_core::InvalidInput;

use crate::typ::{CheckIsLeaderError, ClientWriteError, Node, NodeId, RaftError};

/// The leader as a node knows it: its id and the address it advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The leader's node id.
    pub id: NodeId,
    /// The address it advertises.
    pub addr: String,
}

/// What a deadline ran out waiting for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waited {
    /// A proposed write to be committed.
    Commit,
    /// This node to apply a revision.
    Applied {
        /// The revision waited for.
        revision: u64,
        /// This node.
        node: NodeId,
        /// What it had applied when the deadline passed.
        applied: u64,
    },
    /// A read index from the leader.
    ReadIndex,
    /// The leader to answer a forwarded write.
    ForwardedWrite {
        /// The leader's address.
        addr: String,
        /// What the transport said.
        detail: String,
    },
    /// A membership change to complete.
    Membership,
    /// A snapshot to be built.
    Snapshot {
        /// The revision it must cover.
        target: u64,
    },
}

impl fmt::Display for Waited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Waited::Commit => f.write_str(
                "the write was proposed but not committed in time; it may still be applied",
            ),
            Waited::Applied {
                revision,
                node,
                applied,
            } => write!(
                f,
                "revision {revision} not applied on node {node} in time (applied {applied})"
            ),
            Waited::ReadIndex => f.write_str("no read index from the leader in time"),
            Waited::ForwardedWrite { addr, detail } => write!(
                f,
                "the leader at {addr} did not answer the forwarded write in time; it may still be applied ({detail})"
            ),
            Waited::Membership => f.write_str(
                "the membership change did not complete in time; check Status before retrying",
            ),
            Waited::Snapshot { target } => write!(
                f,
                "snapshot at revision {target} not finished before the deadline; it continues in the background"
            ),
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A request field is out of bounds.
    #[error("revokd: invalid argument: {0}")]
    Invalid(#[from] InvalidInput),
    /// One token of a batch is out of bounds.
    #[error("revokd: invalid argument: tokens[{index}]: {cause}")]
    InvalidToken {
        /// Its position in the batch.
        index: usize,
        /// What is wrong with it.
        cause: InvalidInput,
    },
    /// A field is longer than its limit (a heartbeat's replica id or description).
    #[error("revokd: invalid argument: {field} must be at most {max} bytes, got {len}")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// The limit in bytes.
        max: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// A consistency level this node does not know.
    #[error("revokd: invalid argument: unknown consistency {0}")]
    UnknownConsistency(i32),
    /// The write-order header ([`revokd_proto::wire::WRITE_ORDER_HEADER`]) is malformed.
    #[error("revokd: invalid argument: {0}")]
    BadWriteOrder(String),
    /// The write was skipped: its client had given up on it and a later write of the same
    /// client was applied first (`revokd_core::order`).
    #[error("revokd: aborted: a later write of the same client was applied first, so this one (which that client had already given up on) changed nothing")]
    Superseded,
    /// No leader became known before the deadline.
    #[error("revokd: no leader known after waiting {0:?}; the cluster may have lost quorum")]
    NoLeader(Duration),
    /// This node is not the leader. With the leader known, the status carries its address
    /// and id; a local write retries through it, and a forwarded request (never forwarded
    /// twice) is answered with this.
    #[error("revokd: not leader; {}", match .0 {
        Some(l) => format!("leader is node {} at {}", l.id, l.addr),
        None => "no leader is known yet".to_owned(),
    })]
    NotLeader(Option<Leader>),
    /// This node leads but no majority acknowledged it within the election timeout
    /// (check-quorum): it refuses writes and linearizable reads, without a leader hint, so
    /// the caller tries another node.
    #[error("revokd: this node lost its quorum (no majority acknowledged it within {0:?}); try another node")]
    QuorumLost(Duration),
    /// The leader could not confirm its leadership with a quorum.
    #[error("revokd: read index: leader could not reach a quorum: {0}")]
    NoQuorum(QuorumNotEnough<NodeId>),
    /// The deadline passed while waiting.
    #[error("revokd: deadline exceeded: {0}")]
    Deadline(Waited),
    /// A membership change is already under way.
    #[error("revokd: membership: a membership change is already in progress ({0}); retry when it completes")]
    MembershipInProgress(InProgress<NodeId>),
    /// A membership change names a node that is neither a member nor a learner.
    #[error("revokd: membership: node {0} is neither a member nor a learner; add it with AddLearner first")]
    UnknownLearner(NodeId),
    /// A membership change leaves no voters.
    #[error("revokd: membership: the set of voters must not be empty")]
    NoVoters,
    /// A learner was given node id 0.
    #[error("revokd: membership: node_id must be at least 1")]
    ZeroNodeId,
    /// A learner's address is not `HOST:PORT`.
    #[error("revokd: membership: address: {0}")]
    BadAddress(String),
    /// Watch cannot resume from that revision.
    #[error("revokd: watch: revision {from} is older than this node's change window (starts after {start}); bootstrap again from Snapshot")]
    OutOfRange {
        /// The revision asked for.
        from: u64,
        /// The oldest revision a watch can start after.
        start: u64,
    },
    /// A part of the node has stopped (it is shutting down).
    #[error("revokd: node is shutting down or stopped: {0}")]
    Stopped(&'static str),
    /// Raft stopped on a fatal error (boxed: openraft's `Fatal` is several times the size of
    /// every other cause, and each `Result` on the write path would carry it).
    #[error("revokd: node is shutting down or stopped: {0}")]
    Fatal(Box<Fatal<NodeId>>),
    /// Forwarding to the leader failed.
    #[error("revokd: forwarding to leader at {addr} failed: {message}")]
    Forward {
        /// The leader's address.
        addr: String,
        /// What the transport or the leader's connection said.
        message: String,
    },
    /// A replica id is held by another client.
    #[error("revokd: permission denied: replica_id {id:?} is reported by another client; give every replica an id of its own (the id is free again {} s after its owner stops reporting)", free_after.as_secs())]
    ReplicaIdTaken {
        /// The id.
        id: String,
        /// When an id whose owner went silent may be taken.
        free_after: Duration,
    },
    /// A heartbeat that names a replica needs the read scope.
    #[error("revokd: auth: a heartbeat with a replica_id needs a credential with scope {0}, as reads do (probes without a replica_id stay open)")]
    HeartbeatNeedsScope(String),
    /// One client reports as many replicas as it may.
    #[error("revokd: overloaded: {client} already reports {max} replicas to this node; reuse replica ids, or wait {} s for unused ones to expire", ttl.as_secs())]
    TooManyReplicasFrom {
        /// The client (principal or address).
        client: String,
        /// Its quota.
        max: usize,
        /// When an unused id expires.
        ttl: Duration,
    },
    /// The replica registry is full.
    #[error("revokd: overloaded: this node already tracks {0} replicas; retry later")]
    TooManyReplicas(usize),
    /// Every `Snapshot` stream slot is taken: retry after the hint (sent in
    /// `x-revokd-retry-after-ms`).
    #[error("revokd: busy: this node already serves {max} Snapshot streams; retry after {} ms", retry_after.as_millis())]
    SnapshotsBusy {
        /// The slots.
        max: usize,
        /// When a retry is likely to succeed.
        retry_after: Duration,
    },
    /// A client made more calls than its rate allows: retry after the hint.
    #[error("revokd: rate limit: more than {per_second} {kind} per second from {client}; retry after {} ms", retry_after.as_millis().max(1))]
    RateLimited {
        /// The limit.
        per_second: u32,
        /// `writes` or `reads`.
        kind: &'static str,
        /// The client (principal or address).
        client: String,
        /// When the next call is allowed.
        retry_after: Duration,
    },
}

/// The leader named by an openraft forward-to-leader answer, when it names one.
fn leader_of(id: Option<NodeId>, node: Option<Node>) -> Option<Leader> {
    match (id, node) {
        (Some(id), Some(n)) => Some(Leader { id, addr: n.addr }),
        _ => None,
    }
}

impl From<RaftError<ClientWriteError>> for Error {
    /// Classifies a failed write or membership change.
    fn from(e: RaftError<ClientWriteError>) -> Self {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                Error::NotLeader(leader_of(f.leader_id, f.leader_node))
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => match c {
                ChangeMembershipError::LearnerNotFound(l) => Error::UnknownLearner(l.node_id),
                ChangeMembershipError::EmptyMembership(_) => Error::NoVoters,
                ChangeMembershipError::InProgress(p) => Error::MembershipInProgress(p),
            },
            RaftError::Fatal(f) => Error::Fatal(Box::new(f)),
        }
    }
}

impl From<RaftError<CheckIsLeaderError>> for Error {
    /// Classifies a failed leadership check (read index). Every case but a stopped node is
    /// transient: leadership is moving or the leader cannot reach a quorum right now.
    fn from(e: RaftError<CheckIsLeaderError>) -> Self {
        match e {
            RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => {
                Error::NotLeader(leader_of(f.leader_id, f.leader_node))
            }
            RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)) => Error::NoQuorum(q),
            RaftError::Fatal(f) => Error::Fatal(Box::new(f)),
        }
    }
}

impl From<Fatal<NodeId>> for Error {
    fn from(f: Fatal<NodeId>) -> Self {
        Error::Fatal(Box::new(f))
    }
}
