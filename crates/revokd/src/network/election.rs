//! The wire side of revokd's own additions to Raft, which openraft 0.9 lacks: the `PreVote`
//! and `TimeoutNow` messages (carried in `RaftPayload` like openraft's own), the trait the
//! Raft service answers them through, and the calls that send them. What they decide is
//! `consensus::election`'s.

use std::future::Future;
use std::time::Duration;

use revokd_proto::v1::raft_client::RaftClient;
use revokd_proto::v1::RaftPayload;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use super::codec::{decode_raw, encode};
use crate::typ::{LogId, NodeId};

/// "Would you vote for me?", asked by a node about to campaign (Raft dissertation, 9.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteRequest {
    /// The node asking.
    pub candidate: NodeId,
    /// The term it would campaign in (its own plus one); no one's term changes.
    pub term: u64,
    /// Its last log id: a voter grants only to a log at least as up to date as its own.
    pub last_log_id: Option<LogId>,
    /// The log id of the membership it campaigns under.
    pub membership_log_id: Option<LogId>,
}

/// A voter's answer to a [`PreVoteRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PreVoteResponse {
    /// It would vote for the candidate.
    Granted,
    /// It follows a leader it heard from this long ago, within the election timeout.
    LeaderAlive {
        /// The leader.
        leader: NodeId,
        /// Milliseconds since it last heard from it.
        heard_ms: u64,
    },
    /// It voted for another candidate in the candidate's term or a later one, within the
    /// election timeout: a campaign is under way, and a second one would split its votes.
    Campaigning {
        /// The candidate it voted for (itself, if it is campaigning).
        candidate: NodeId,
        /// The term of that vote.
        term: u64,
    },
    /// Its log is ahead of the candidate's.
    LogBehind {
        /// Its last log id.
        last_log_id: Option<LogId>,
    },
    /// A committed membership newer than the candidate's has no vote for it: it was removed
    /// and should stop campaigning.
    Removed {
        /// The log id of that membership.
        membership_log_id: Option<LogId>,
    },
}

/// "Campaign now": a stopping leader hands leadership to an up-to-date voter (dissertation,
/// 3.10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutNowRequest {
    /// The leader handing over.
    pub leader: NodeId,
    /// Its term.
    pub term: u64,
    /// Its last log id, which the target must have.
    pub last_log_id: Option<LogId>,
}

/// The target's answer to a [`TimeoutNowRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeoutNowResponse {
    /// It campaigns now, and once more after this many milliseconds if that did not
    /// take (the other voters' leases on the old leader had not run out).
    Campaigning {
        /// When it tries again, if it has to.
        in_ms: u64,
    },
    /// It refused, and why (not a voter, its log is behind, it follows another leader).
    Refused(String),
}

/// What the Raft service asks the election driver to answer.
#[tonic::async_trait]
pub trait Elections: Send + Sync + 'static {
    /// Answers a pre-vote.
    async fn pre_vote(&self, req: PreVoteRequest) -> PreVoteResponse;
    /// Answers a leadership hand-off.
    async fn timeout_now(&self, req: TimeoutNowRequest) -> TimeoutNowResponse;
    /// Check-quorum, before this node serves a follower's read index as leader.
    fn check_quorum(&self) -> Result<(), crate::error::Error>;
    /// A read index on this node as leader (under its lease, or after a read-index round).
    async fn read_index(&self) -> Result<u64, crate::error::Error>;
}

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The peer did not answer (transport error, or no answer within the timeout).
    #[error("{0}")]
    Transport(#[from] tonic::Status),
    /// The answer did not decode.
    #[error("malformed answer: {0}")]
    Malformed(String),
}

/// Sends a pre-vote to the peer behind `channel`, waiting at most `timeout`.
pub async fn send_pre_vote(
    channel: Channel,
    req: &PreVoteRequest,
    timeout: Duration,
) -> Result<PreVoteResponse, CallError> {
    call(channel, req, timeout, |mut c, r| async move {
        c.pre_vote(r).await
    })
    .await
}

/// Sends a hand-off to the peer behind `channel`, waiting at most `timeout`.
pub async fn send_timeout_now(
    channel: Channel,
    req: &TimeoutNowRequest,
    timeout: Duration,
) -> Result<TimeoutNowResponse, CallError> {
    call(channel, req, timeout, |mut c, r| async move {
        c.timeout_now(r).await
    })
    .await
}

/// Encodes `req`, sends it with `send` under `timeout` and decodes the answer.
async fn call<Req, Resp, F, Fut>(
    channel: Channel,
    req: &Req,
    timeout: Duration,
    send: F,
) -> Result<Resp, CallError>
where
    Req: Serialize,
    Resp: DeserializeOwned,
    F: FnOnce(RaftClient<Channel>, tonic::Request<RaftPayload>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<RaftPayload>, tonic::Status>>,
{
    let payload = encode(req).map_err(|e| CallError::Malformed(e.to_string()))?;
    let mut request = tonic::Request::new(payload);
    request.set_timeout(timeout);
    let resp = tokio::time::timeout(timeout, send(RaftClient::new(channel), request))
        .await
        .map_err(|_| tonic::Status::deadline_exceeded(format!("no answer within {timeout:?}")))??;
    decode_raw(&resp.get_ref().data).map_err(|e| CallError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    #[test]
    fn messages_survive_the_codec() {
        let log = LogId::new(CommittedLeaderId::new(3, 2), 41);
        let req = PreVoteRequest {
            candidate: 2,
            term: 4,
            last_log_id: Some(log),
            membership_log_id: None,
        };
        let back: PreVoteRequest = decode_raw(&encode(&req).unwrap().data).unwrap();
        assert_eq!(back, req);
        let resp = PreVoteResponse::LeaderAlive {
            leader: 1,
            heard_ms: 120,
        };
        let back: PreVoteResponse = decode_raw(&encode(&resp).unwrap().data).unwrap();
        assert_eq!(back, resp);
    }
}
