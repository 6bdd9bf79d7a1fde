//! The openraft type configuration of revokd, declared once, and short aliases for its
//! generic types, so the rest of the crate says `typ::LogId`, not `LogId<NodeId>`.

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
