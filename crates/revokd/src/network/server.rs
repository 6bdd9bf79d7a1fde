//! The receiving side of the Raft transport. Who may call it is decided before a message is
//! read, in the gate in front of every service (`api::caller::Identify`): with TLS on, only
//! holders of a cluster certificate.

use revokd_proto::v1::raft_server::Raft as RaftApi;
use revokd_proto::v1::{RaftPayload, ReadIndexRequest, ReadIndexResponse};
use tonic::{Request, Response, Status};

use super::codec::{decode, encode};
use crate::typ::{AppendEntriesRequest, InstallSnapshotRequest, Raft, VoteRequest};

/// Serves `revokd.v1.Raft` for a local Raft instance.
pub struct RaftService {
    raft: Raft,
}

impl RaftService {
    /// Wraps a Raft instance.
    pub fn new(raft: Raft) -> Self {
        RaftService { raft }
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

    async fn read_index(
        &self,
        _req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        match self.raft.get_read_log_id().await {
            Ok((read, _applied)) => Ok(Response::new(ReadIndexResponse {
                read_revision: read.map(|l| l.index).unwrap_or(0),
                leader_id: self.raft.metrics().borrow().id,
            })),
            Err(e) => Err(crate::error::Error::from(e).into()),
        }
    }
}
