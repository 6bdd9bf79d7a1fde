//! The one place where node errors become gRPC statuses: the code for each [`Error`], and
//! the metadata a client acts on (the leader's address and id, a retry hint).

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::error::Error;
use revokd_proto::wire::{
    LEADER_ADDR_HEADER, LEADER_ID_HEADER, QUORUM_LOST_HEADER, RETRY_AFTER_HEADER,
};

/// The gRPC code a caller is given for `e`.
fn code(e: &Error) -> Code {
    match e {
        Error::Invalid(_)
        | Error::InvalidToken { .. }
        | Error::TooLong { .. }
        | Error::UnknownConsistency(_)
        | Error::BadWriteOrder(_)
        | Error::UnknownLearner(_)
        | Error::NoVoters
        | Error::ZeroNodeId
        | Error::BadAddress(_) => Code::InvalidArgument,
        Error::NoLeader(_)
        | Error::QuorumLost(_)
        | Error::NoQuorum(_)
        | Error::NotLeader(_)
        | Error::Stopped(_)
        | Error::Fatal(_)
        | Error::Forward { .. } => Code::Unavailable,
        Error::Deadline(_) => Code::DeadlineExceeded,
        Error::MembershipInProgress(_) => Code::FailedPrecondition,
        Error::Superseded => Code::Aborted,
        Error::OutOfRange { .. } => Code::OutOfRange,
        Error::TooManyReplicasFrom { .. }
        | Error::TooManyReplicas(_)
        | Error::SnapshotsBusy { .. }
        | Error::RateLimited { .. } => Code::ResourceExhausted,
        Error::ReplicaIdTaken { .. } => Code::PermissionDenied,
        Error::HeartbeatNeedsScope(_) => Code::Unauthenticated,
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let mut status = Status::new(code(&e), e.to_string());
        let meta = status.metadata_mut();
        match &e {
            Error::SnapshotsBusy { retry_after, .. } | Error::RateLimited { retry_after, .. } => {
                if let Ok(v) = retry_after.as_millis().max(1).to_string().parse() {
                    meta.insert(RETRY_AFTER_HEADER, v);
                }
            }
            Error::QuorumLost(_) => {
                meta.insert(QUORUM_LOST_HEADER, MetadataValue::from_static("1"));
            }
            Error::NotLeader(Some(leader)) => {
                if let Ok(addr) = leader.addr.parse() {
                    meta.insert(LEADER_ADDR_HEADER, addr);
                    meta.insert(LEADER_ID_HEADER, MetadataValue::from(leader.id));
                }
            }
            _ => {}
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::error::{Fatal, QuorumNotEnough};
    use revokd_core::InvalidInput;

    use super::*;
    use crate::error::{Leader, Waited};

    #[test]
    fn every_error_carries_the_wire_marker_clients_look_for() {
        let s = || "x".to_owned();
        let invalid = || InvalidInput::Empty("jti");
        let all = [
            Error::Invalid(invalid()),
            Error::InvalidToken {
                index: 3,
                cause: invalid(),
            },
            Error::TooLong {
                field: "replica_id",
                max: 128,
                len: 129,
            },
            Error::UnknownConsistency(9),
            Error::NoLeader(Duration::from_secs(1)),
            Error::QuorumLost(Duration::from_millis(300)),
            Error::NotLeader(Some(Leader { id: 2, addr: s() })),
            Error::NotLeader(None),
            Error::NoQuorum(QuorumNotEnough {
                cluster: s(),
                got: Default::default(),
            }),
            Error::Deadline(Waited::Commit),
            Error::UnknownLearner(4),
            Error::NoVoters,
            Error::ZeroNodeId,
            Error::BadAddress(s()),
            Error::OutOfRange { from: 1, start: 2 },
            Error::Stopped("x"),
            Error::BadWriteOrder(s()),
            Error::Superseded,
            Error::Fatal(Box::new(Fatal::Stopped)),
            Error::Forward {
                addr: s(),
                message: s(),
            },
            Error::ReplicaIdTaken {
                id: s(),
                free_after: Duration::from_secs(10),
            },
            Error::HeartbeatNeedsScope(s()),
            Error::TooManyReplicasFrom {
                client: s(),
                max: 256,
                ttl: Duration::from_secs(30),
            },
            Error::TooManyReplicas(10),
            Error::SnapshotsBusy {
                max: 32,
                retry_after: Duration::from_millis(5),
            },
            Error::RateLimited {
                per_second: 5,
                kind: "writes",
                client: s(),
                retry_after: Duration::from_millis(5),
            },
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

    #[test]
    fn the_error_stays_small_on_the_write_path() {
        // Every proposal's reply and every handler's Result carry an `Error`.
        assert!(
            std::mem::size_of::<Error>() <= 80,
            "{}",
            std::mem::size_of::<Error>()
        );
    }

    #[test]
    fn a_known_leader_and_a_retry_hint_travel_as_metadata() {
        let s = Status::from(Error::NotLeader(Some(Leader {
            id: 2,
            addr: "10.0.0.2:50051".into(),
        })));
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(
            s.message(),
            "revokd: not leader; leader is node 2 at 10.0.0.2:50051"
        );
        assert_eq!(
            s.metadata().get(LEADER_ADDR_HEADER).unwrap(),
            "10.0.0.2:50051"
        );
        assert_eq!(s.metadata().get(LEADER_ID_HEADER).unwrap(), "2");
        let s = Status::from(Error::QuorumLost(Duration::from_millis(300)));
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.message().contains("lost its quorum"), "{}", s.message());
        assert!(s.metadata().get(LEADER_ADDR_HEADER).is_none());
        assert_eq!(s.metadata().get(QUORUM_LOST_HEADER).unwrap(), "1");
        let s = Status::from(Error::SnapshotsBusy {
            max: 32,
            retry_after: Duration::from_millis(500),
        });
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(s.metadata().get(RETRY_AFTER_HEADER).unwrap(), "500");
    }
}
