//! The one place where node errors become gRPC statuses. Every message names the subsystem
//! and, where there is one, what to do about it.

use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use revokd_core::InvalidInput;
use tonic::{Code, Status};

use crate::consensus::typ::{CheckIsLeaderError, Node, NodeId};

pub use revokd_proto::wire::{LEADER_ADDR_HEADER, LEADER_ID_HEADER};

/// Why a request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// A request field is out of bounds.
    #[error("revokd: invalid argument: {0}")]
    Invalid(String),
    /// No leader became known before the deadline.
    #[error("revokd: no leader known after waiting {0:?}; the cluster may have lost quorum")]
    NoLeader(Duration),
    /// This node is not the leader (answered to forwarded requests, which are not forwarded
    /// twice).
    #[error("revokd: not leader; leader is node {id} at {addr}")]
    NotLeader {
        /// The leader's id.
        id: NodeId,
        /// The leader's address.
        addr: String,
    },
    /// The leader could not confirm its leadership with a quorum.
    #[error("revokd: read index: leader could not reach a quorum: {0}")]
    NoQuorum(String),
    /// The deadline passed while waiting.
    #[error("revokd: deadline exceeded: {0}")]
    Deadline(String),
    /// A membership change cannot be made as asked.
    #[error("revokd: membership: {0}")]
    Membership(String),
    /// A membership argument names an unknown node.
    #[error("revokd: membership: {0}")]
    MembershipArgument(String),
    /// Watch cannot resume from that revision.
    #[error("revokd: watch: revision {from} is older than this node's change window (starts after {start}); bootstrap again from Snapshot")]
    OutOfRange {
        /// The revision asked for.
        from: u64,
        /// The oldest revision a watch can start after.
        start: u64,
    },
    /// The node is stopping or Raft has stopped.
    #[error("revokd: node is shutting down or stopped: {0}")]
    Stopped(String),
    /// Forwarding to the leader failed.
    #[error("revokd: forwarding to leader at {addr} failed: {message}")]
    Forward {
        /// The leader's address.
        addr: String,
        /// What went wrong.
        message: String,
    },
    /// The caller may not do this (an identity or a name that belongs to someone else).
    #[error("revokd: permission denied: {0}")]
    Forbidden(String),
    /// The call needs a credential the caller did not present.
    #[error("revokd: auth: {0}")]
    Unauthenticated(String),
    /// A bounded resource is full.
    #[error("revokd: overloaded: {0}")]
    Overloaded(String),
    /// A bounded resource is full for now: retry after the hint (sent in
    /// `x-revokd-retry-after-ms`).
    #[error("revokd: busy: {message}; retry after {} ms", retry_after.as_millis())]
    Busy {
        /// What is full.
        message: String,
        /// When a retry is likely to succeed.
        retry_after: Duration,
    },
    /// Anything else (a bug or a storage failure).
    #[error("revokd: internal error: {0}")]
    Internal(String),
}

impl From<InvalidInput> for ApiError {
    fn from(e: InvalidInput) -> Self {
        ApiError::Invalid(e.to_string())
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let code = match &e {
            ApiError::Invalid(_) | ApiError::MembershipArgument(_) => Code::InvalidArgument,
            ApiError::NoLeader(_)
            | ApiError::NoQuorum(_)
            | ApiError::NotLeader { .. }
            | ApiError::Stopped(_)
            | ApiError::Forward { .. } => Code::Unavailable,
            ApiError::Deadline(_) => Code::DeadlineExceeded,
            ApiError::Membership(_) => Code::FailedPrecondition,
            ApiError::OutOfRange { .. } => Code::OutOfRange,
            ApiError::Overloaded(_) | ApiError::Busy { .. } => Code::ResourceExhausted,
            ApiError::Forbidden(_) => Code::PermissionDenied,
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::Internal(_) => Code::Internal,
        };
        let mut status = Status::new(code, e.to_string());
        if let ApiError::Busy { retry_after, .. } = &e {
            if let Ok(v) = retry_after.as_millis().max(1).to_string().parse() {
                status
                    .metadata_mut()
                    .insert(super::limits::RETRY_AFTER_HEADER, v);
            }
        }
        if let ApiError::NotLeader { id, addr } = &e {
            if let (Ok(a), Ok(i)) = (addr.parse(), id.to_string().parse()) {
                status.metadata_mut().insert(LEADER_ADDR_HEADER, a);
                status.metadata_mut().insert(LEADER_ID_HEADER, i);
            }
        }
        status
    }
}

/// What a failed local write means for routing.
pub enum WriteFailure {
    /// Leadership moved: retry through the new leader (if known).
    NotLeader(Option<NodeId>),
    /// A final error.
    Fatal(ApiError),
}

/// Classifies an openraft write error.
pub fn write_failure(e: RaftError<NodeId, ClientWriteError<NodeId, Node>>) -> WriteFailure {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            WriteFailure::NotLeader(f.leader_id)
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            WriteFailure::Fatal(match c {
                ChangeMembershipError::LearnerNotFound(l) => ApiError::MembershipArgument(format!(
                    "node {} is neither a member nor a learner; add it with AddLearner first",
                    l.node_id
                )),
                ChangeMembershipError::EmptyMembership(_) => {
                    ApiError::MembershipArgument("the set of voters must not be empty".into())
                }
                ChangeMembershipError::InProgress(p) => ApiError::Membership(format!(
                    "a membership change is already in progress ({p}); retry when it completes"
                )),
            })
        }
        RaftError::Fatal(f) => WriteFailure::Fatal(ApiError::Stopped(f.to_string())),
    }
}

/// Classifies a failed leadership check (read index). Every case but a stopped node is
/// transient: leadership is moving or the leader cannot reach a quorum right now.
pub fn read_index_error(e: RaftError<NodeId, CheckIsLeaderError>) -> ApiError {
    match e {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => {
            match (f.leader_id, f.leader_node) {
                (Some(id), Some(n)) => ApiError::NotLeader { id, addr: n.addr },
                _ => ApiError::NoLeader(Duration::ZERO),
            }
        }
        RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)) => {
            ApiError::NoQuorum(q.to_string())
        }
        RaftError::Fatal(f) => ApiError::Stopped(f.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_carries_the_wire_marker_clients_look_for() {
        let s = || "x".to_owned();
        let all = [
            ApiError::Invalid(s()),
            ApiError::NoLeader(Duration::from_secs(1)),
            ApiError::NotLeader { id: 2, addr: s() },
            ApiError::NoQuorum(s()),
            ApiError::Deadline(s()),
            ApiError::Membership(s()),
            ApiError::MembershipArgument(s()),
            ApiError::OutOfRange { from: 1, start: 2 },
            ApiError::Stopped(s()),
            ApiError::Forward {
                addr: s(),
                message: s(),
            },
            ApiError::Forbidden(s()),
            ApiError::Unauthenticated(s()),
            ApiError::Overloaded(s()),
            ApiError::Busy {
                message: s(),
                retry_after: Duration::from_millis(5),
            },
            ApiError::Internal(s()),
        ];
        for e in all {
            let status = Status::from(e.clone());
            assert!(
                revokd_proto::wire::is_node_error(status.message()),
                "{e:?}: {}",
                status.message()
            );
        }
    }
}
