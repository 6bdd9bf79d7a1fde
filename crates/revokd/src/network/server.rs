//! The receiving side of the Raft transport. Who may call it is decided before a message is
//! read, in the gate in front of every service (`api::caller::Identify`): with TLS on, only
//! holders of a cluster certificate.

use std::sync::Arc;

use revokd_proto::v1::raft_server::Raft as RaftApi;
use revokd_proto::v1::{RaftPayload, ReadIndexRequest, ReadIndexResponse};
use tonic::{Request, Response, Status};

use super::codec::{decode, encode};
use super::election::{Elections, PreVoteRequest, TimeoutNowRequest};
use crate::typ::{AppendEntriesRequest, InstallSnapshotRequest, Raft, VoteRequest};

/// Serves `revokd.v1.Raft` for a local Raft instance: openraft's RPCs go to it, pre-votes
/// and hand-offs to the election driver.
pub struct RaftService {
    raft: Raft,
    elections: Arc<dyn Elections>,
}

impl RaftService {
    /// Wraps a Raft instance and its election driver.
    pub fn new(raft: Raft, elections: Arc<dyn Elections>) -> Self {
        RaftService { raft, elections }
    }
}

fn reply<T: serde::Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    encode(value)
        .map(Response::new)
        .map_err(|e| Status::internal(format!("raft: cannot encode response: {e}")))
}

#[tonic::async_trait]
impl RaftApi for RaftService {
    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: AppendEntriesRequest = decode(req.get_ref(), "AppendEntries")?;
        reply(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: VoteRequest = decode(req.get_ref(), "Vote")?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: InstallSnapshotRequest = decode(req.get_ref(), "InstallSnapshot")?;
        reply(&self.raft.install_snapshot(rpc).await)
    }

    async fn pre_vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: PreVoteRequest = decode(req.get_ref(), "PreVote")?;
        reply(&self.elections.pre_vote(rpc).await)
    }

    async fn timeout_now(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: TimeoutNowRequest = decode(req.get_ref(), "TimeoutNow")?;
        reply(&self.elections.timeout_now(rpc).await)
    }

    async fn read_index(
        &self,
        _req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        self.elections.check_quorum()?;
        let read_revision = self.elections.read_index().await?;
        Ok(Response::new(ReadIndexResponse {
            read_revision,
            leader_id: self.raft.metrics().borrow().id,
        }))
    }
}
