//! The `revokd.v1.Cluster` service: status, membership changes (through the leader), and
//! snapshots on demand.

use std::collections::BTreeSet;

use openraft::{BasicNode, ServerState};
use revokd_proto::v1 as pb;
use revokd_proto::v1::cluster_client::ClusterClient;
use revokd_proto::v1::cluster_server::Cluster;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use super::caller;
use super::{deadline, routed};
use crate::error::{Error, Waited};
use crate::node::Node;
use crate::typ::{ClientWriteError, ClientWriteResponse, RaftError};

/// Serves `revokd.v1.Cluster`.
pub struct ClusterService {
    node: Node,
}

impl ClusterService {
    /// A service for `node`.
    pub fn new(node: Node) -> Self {
        ClusterService { node }
    }

    /// The members and learners as this node knows them, with the leader's replication view.
    fn members(&self) -> (Vec<pb::Member>, Vec<pb::Member>) {
        let m = self.node.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let matched = |id: u64| {
            m.replication
                .as_ref()
                .and_then(|r| r.get(&id).copied().flatten())
                .map(|l| l.index)
                .or_else(|| (id == m.id).then(|| m.last_log_index.unwrap_or(0)))
                .unwrap_or(0)
        };
        let mut members = Vec::new();
        let mut learners = Vec::new();
        for (id, node) in membership.nodes() {
            let member = pb::Member {
                id: *id,
                address: node.addr.clone(),
                voter: voters.contains(id),
                matched_revision: matched(*id),
            };
            if member.voter {
                members.push(member);
            } else {
                learners.push(member);
            }
        }
        (members, learners)
    }

    /// The highest log index this node knows to be committed.
    async fn committed(&self) -> Result<u64, Error> {
        Ok(self
            .node
            .raft
            .with_raft_state(|st| st.committed.map(|l| l.index))
            .await?
            .unwrap_or(0))
    }

    /// Runs a membership change on this node (the leader) within the deadline.
    async fn change(
        &self,
        fut: impl std::future::Future<Output = Result<ClientWriteResponse, RaftError<ClientWriteError>>>,
        deadline: Instant,
    ) -> Result<pb::MembershipResponse, Error> {
        let resp = tokio::time::timeout_at(deadline, fut)
            .await
            .map_err(|_| Error::Deadline(Waited::Membership))??;
        let (members, learners) = self.members();
        Ok(pb::MembershipResponse {
            revision: resp.log_id.index,
            leader_id: self.node.id,
            members,
            learners,
        })
    }
}

type Client = ClusterClient<tonic::transport::Channel>;

fn role(s: ServerState) -> pb::Role {
    match s {
        ServerState::Leader => pb::Role::Leader,
        ServerState::Follower => pb::Role::Follower,
        ServerState::Candidate => pb::Role::Candidate,
        ServerState::Learner => pb::Role::Learner,
        ServerState::Shutdown => pb::Role::Shutdown,
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let committed = self.committed().await?;
        let m = self.node.raft.metrics().borrow().clone();
        let (members, learners) = self.members();
        let leader = self.node.leader_in_contact();
        let (tokens, rules, applied) = {
            let st = self.node.sm.read();
            (st.set.token_count(), st.set.rule_count(), st.set.revision())
        };
        Ok(Response::new(pb::StatusResponse {
            id: self.node.id,
            address: self.node.config.advertise.clone(),
            role: role(m.state) as i32,
            term: m.current_term,
            leader_id: leader.as_ref().map(|l| l.id).unwrap_or(0),
            leader_address: leader.map(|l| l.addr).unwrap_or_default(),
            commit_revision: committed,
            applied_revision: applied,
            last_log_revision: m.last_log_index.unwrap_or(0),
            snapshot_revision: m.snapshot.map(|l| l.index).unwrap_or(0),
            members,
            learners,
            revoked_tokens: tokens as u64,
            rules: rules as u64,
            watch_window_start: self.node.sm.window().start(),
            replicas: self.node.replicas.list(committed),
            quorum_lost: self.node.elections.quorum_lost(),
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let (by, authenticated) = caller::reporter(req.extensions());
        let r = req.into_inner();
        let committed = self.committed().await?;
        if !r.replica_id.is_empty() {
            let read_scope = self
                .node
                .config
                .auth
                .as_ref()
                .and_then(|a| a.read_scope.as_deref());
            // The gate verified any credential sent; a replica's report needs one when reads
            // do: its revision counts towards receipts.
            if let (Some(scope), false) = (read_scope, authenticated) {
                return Err(Error::HeartbeatNeedsScope(scope.to_string()).into());
            }
        }
        self.node.replicas.report(
            &r.replica_id,
            &r.description,
            r.applied_revision,
            committed,
            &by,
        )?;
        let m = self.node.raft.metrics().borrow().clone();
        let leader = self.node.leader_in_contact();
        Ok(Response::new(pb::HeartbeatResponse {
            node_id: self.node.id,
            role: role(m.state) as i32,
            term: m.current_term,
            leader_id: leader.as_ref().map(|l| l.id).unwrap_or(0),
            leader_address: leader.map(|l| l.addr).unwrap_or_default(),
            commit_revision: committed,
            applied_revision: *self.node.sm.applied().borrow(),
            watch_window_start: self.node.sm.window().start(),
        }))
    }

    async fn add_learner(
        &self,
        req: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let r = req.get_ref();
        if r.node_id == 0 {
            return Err(Error::ZeroNodeId.into());
        }
        crate::config::parse_initial_cluster(&format!("{}={}", r.node_id, r.address))
            .map_err(|e| Error::BadAddress(e.to_string()))?;
        routed(
            &self.node,
            req,
            |r, _origin, d| async move {
                let raft = &self.node.raft;
                let add = raft.add_learner(r.node_id, BasicNode::new(&r.address), r.blocking);
                self.change(add, d).await
            },
            |ch, fwd| async move { Client::new(ch).add_learner(fwd).await },
        )
        .await
    }

    async fn change_membership(
        &self,
        req: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        if req.get_ref().voters.is_empty() {
            return Err(Error::NoVoters.into());
        }
        routed(
            &self.node,
            req,
            |r, _origin, d| async move {
                let voters: BTreeSet<u64> = r.voters.iter().copied().collect();
                let change = self.node.raft.change_membership(voters, r.retain);
                self.change(change, d).await
            },
            |ch, fwd| async move { Client::new(ch).change_membership(fwd).await },
        )
        .await
    }

    async fn trigger_snapshot(
        &self,
        req: Request<pb::TriggerSnapshotRequest>,
    ) -> Result<Response<pb::TriggerSnapshotResponse>, Status> {
        let deadline = deadline(req.metadata(), self.node.config.default_deadline);
        let target = *self.node.sm.applied().borrow();
        self.node
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(Error::from)?;
        let mut rx = self.node.raft.metrics();
        let done = tokio::time::timeout_at(
            deadline,
            rx.wait_for(|m| m.snapshot.map(|l| l.index).unwrap_or(0) >= target),
        )
        .await;
        match done {
            Ok(Ok(m)) => Ok(Response::new(pb::TriggerSnapshotResponse {
                snapshot_revision: m.snapshot.map(|l| l.index).unwrap_or(0),
            })),
            Ok(Err(_)) => Err(Error::Stopped("raft metrics closed").into()),
            Err(_) => Err(Error::Deadline(Waited::Snapshot { target }).into()),
        }
    }
}
