//! Consensus: the openraft type configuration, short aliases for its generic types, and the
//! Raft timing configuration.
//!
//! [`proposer`] batches concurrent writes into log entries. The Raft log, vote and state
//! machine live in [`crate::storage`]; the transport between
//! nodes lives in [`crate::network`].

pub mod proposer;

use std::io::Cursor;

use revokd_core::{Applied, Command};

openraft::declare_raft_types!(
    /// The openraft types of revokd: commands in, per-item outcomes out, u64 node ids.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Aliases so the rest of the crate says `typ::LogId`, not `LogId<NodeId>`.
pub mod typ {
    use super::TypeConfig;

    /// A node id.
    pub type NodeId = u64;
    /// A node's address record.
    pub type Node = openraft::BasicNode;
    /// The running Raft instance.
    pub type Raft = openraft::Raft<TypeConfig>;
    /// A log entry.
    pub type Entry = openraft::Entry<TypeConfig>;
    /// A log id (term, leader, index).
    pub type LogId = openraft::LogId<NodeId>;
    /// A vote.
    pub type Vote = openraft::Vote<NodeId>;
    /// Storage error.
    pub type StorageError = openraft::StorageError<NodeId>;
    /// Membership as stored with its log id.
    pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
    /// Snapshot metadata.
    pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
    /// A snapshot with its data.
    pub type Snapshot = openraft::Snapshot<TypeConfig>;
    /// Raft error with an API-specific part.
    pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
    /// Error of a client write or membership change.
    pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, Node>;
    /// Error of a leadership check (linearizable read).
    pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<NodeId, Node>;
    /// Response of a committed write.
    pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;
    /// AppendEntries request.
    pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
    /// AppendEntries response.
    pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<NodeId>;
    /// Vote request.
    pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
    /// Vote response.
    pub type VoteResponse = openraft::raft::VoteResponse<NodeId>;
    /// InstallSnapshot request (one chunk).
    pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
    /// InstallSnapshot response.
    pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<NodeId>;
    /// InstallSnapshot error.
    pub type InstallSnapshotError = openraft::error::InstallSnapshotError;
}

/// Raft timing and log-compaction settings derived from the node configuration.
pub fn raft_config(
    heartbeat_ms: u64,
    election_timeout_ms: u64,
    election_timeout_max_ms: Option<u64>,
    snapshot_logs: u64,
    snapshot_keep_logs: u64,
) -> Result<openraft::Config, openraft::ConfigError> {
    openraft::Config {
        cluster_name: "revokd".into(),
        heartbeat_interval: heartbeat_ms,
        election_timeout_min: election_timeout_ms,
        // openraft's leader lease equals the maximum election timeout: a voter refuses other
        // candidates until it expires. A narrow range lets the first candidate after a leader
        // dies win in one round (failover well under a second) while keeping enough spread to
        // avoid split votes.
        election_timeout_max: election_timeout_max_ms
            .unwrap_or(election_timeout_ms + election_timeout_ms / 3),
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_logs),
        max_in_snapshot_log_to_keep: snapshot_keep_logs,
        // Entries can carry up to 10,000 tokens each: a catching-up follower gets a few at a
        // time (the network layer splits further by size).
        max_payload_entries: 64,
        snapshot_max_chunk_size: 4 * 1024 * 1024,
        ..Default::default()
    }
    .validate()
}
