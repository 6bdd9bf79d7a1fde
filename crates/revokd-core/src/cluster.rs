//! What the `Cluster` service answers, in domain form: one node's [`NodeStatus`] (its
//! [`Role`], the [`Member`]s it knows, the validator replicas that report to it) and the
//! [`Membership`] after a change.
//!
//! Clients read these; the node describes itself with the same facts, and `revokd-proto`'s
//! `convert` module is the one place that maps them to and from the wire, so they live in the
//! crate both sides share. Revisions and ids are `u64` as on the wire, with `0` meaning
//! "unknown" where the field says so.

use std::fmt;

/// A node's part in Raft.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// It accepts writes and replicates the log.
    Leader,
    /// A voter that follows a leader.
    Follower,
    /// A voter asking for votes: there is no leader it knows of.
    Candidate,
    /// A non-voting member that receives the log.
    Learner,
    /// The node is stopping.
    Shutdown,
}

impl Role {
    /// The role in lower case, as `revokctl` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cluster member as one node knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member's node id.
    pub id: u64,
    /// `host:port` of its gRPC listener.
    pub address: String,
    /// Whether it votes (a learner does not).
    pub voter: bool,
    /// The leader's view of how far this member has the log (0 if unknown, or when the
    /// answering node is not the leader).
    pub matched_revision: u64,
}

/// A validator's replica as one node knows it from its heartbeats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaInfo {
    /// The replica's id (stable for its lifetime).
    pub replica_id: String,
    /// Free text its operator gave (host, process, version).
    pub description: String,
    /// The revision the replica reported it has applied.
    pub applied_revision: u64,
    /// The node's commit revision minus `applied_revision` (0 if the replica is ahead).
    pub lag: u64,
    /// Milliseconds since the node last heard from the replica.
    pub last_seen_ms: u64,
    /// Whether the replica reads the set from this node (watches or snapshots here); only
    /// such a node can cap a report at what it sent, so receipts count only these reports.
    pub follows_this_node: bool,
}

/// One node's view of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node's id.
    pub id: u64,
    /// Its gRPC address.
    pub address: String,
    /// Its part in Raft.
    pub role: Role,
    /// Its current Raft term.
    pub term: u64,
    /// The leader it knows of; 0 when none.
    pub leader_id: u64,
    /// The leader's address; empty when none is known.
    pub leader_address: String,
    /// The highest revision the node knows to be committed.
    pub commit_revision: u64,
    /// The highest revision it has applied.
    pub applied_revision: u64,
    /// The revision of the last entry in its log.
    pub last_log_revision: u64,
    /// The revision of its newest snapshot.
    pub snapshot_revision: u64,
    /// The voters.
    pub members: Vec<Member>,
    /// The learners.
    pub learners: Vec<Member>,
    /// Revoked token ids in its set.
    pub revoked_tokens: u64,
    /// Rules in its set.
    pub rules: u64,
    /// The oldest revision `Watch` on this node can still resume after.
    pub watch_window_start: u64,
    /// Validator replicas that sent it a heartbeat recently.
    pub replicas: Vec<ReplicaInfo>,
    /// It leads, but no majority acknowledged it within the election timeout: it refuses
    /// writes and linearizable reads until one does.
    pub quorum_lost: bool,
}

/// The membership after a change (`AddLearner`, `ChangeMembership`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// The revision of the log entry that carried the change.
    pub revision: u64,
    /// The leader that committed it.
    pub leader_id: u64,
    /// The voters.
    pub members: Vec<Member>,
    /// The learners.
    pub learners: Vec<Member>,
}
