//! The `revokd.v1.Revocation` service: writes (through the leader), checks, snapshots and
//! watches (streamed by [`crate::watch`]).

use std::pin::Pin;

use revokd_core::{
    Applied, Command, InvalidInput, Outcome, RuleSpec, TokenSpec, MAX_BATCH, MAX_BATCH_BYTES,
};
use revokd_proto::v1 as pb;
use revokd_proto::v1::revocation_client::RevocationClient;
use revokd_proto::v1::revocation_server::Revocation;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::caller;
use super::{deadline, routed, Origin};
use crate::error::Error;
use crate::node::Node;
use crate::watch::snapshots;
use crate::watch::Feed;
use revokd_proto::convert::{check_result_pb, query, rule_kind, validate_query, write_response};

/// Serves `revokd.v1.Revocation`.
pub struct RevocationService {
    node: Node,
}

impl RevocationService {
    /// A service for `node`.
    pub fn new(node: Node) -> Self {
        RevocationService { node }
    }

    fn max_lifetime(&self) -> i64 {
        self.node.config.max_token_lifetime.as_secs() as i64
    }

    fn spec(&self, t: &pb::RevokedTokenSpec, now: i64) -> Result<TokenSpec, InvalidInput> {
        let spec = TokenSpec {
            jti: t.jti.clone(),
            expires_at: t.expires_at,
            reason: t.reason.clone(),
            subject: t.subject.clone(),
        };
        spec.validate(now, self.max_lifetime())?;
        Ok(spec)
    }

    /// Proposes `cmd` from `origin` and waits for its outcomes; a write skipped because its
    /// client had given up on it ([`revokd_core::order`]) is an error.
    async fn write(
        &self,
        cmd: Command,
        origin: &Origin,
        deadline: Instant,
    ) -> Result<Applied, Error> {
        let applied = self.node.propose(origin.command(cmd), deadline).await?;
        if applied.outcomes.contains(&Outcome::Superseded) {
            return Err(Error::Superseded);
        }
        Ok(applied)
    }

    /// Proposes a single-item command and shapes the reply.
    async fn write_one(
        &self,
        cmd: Command,
        origin: &Origin,
        deadline: Instant,
    ) -> Result<pb::WriteResponse, Error> {
        let applied = self.write(cmd, origin, deadline).await?;
        Ok(single_response(&applied, self.node.id))
    }

    /// Waits as the requested consistency demands, then returns nothing: the caller reads.
    async fn settle(
        &self,
        consistency: i32,
        min_revision: u64,
        deadline: Instant,
    ) -> Result<(), Error> {
        match pb::Consistency::try_from(consistency) {
            Ok(pb::Consistency::Linearizable) => {
                let read = self.node.read_index(deadline).await?;
                self.node
                    .wait_applied(read.max(min_revision), deadline)
                    .await
            }
            Ok(pb::Consistency::Local | pb::Consistency::Unspecified) => {
                if min_revision > 0 {
                    self.node.wait_applied(min_revision, deadline).await?;
                }
                Ok(())
            }
            Err(_) => Err(Error::UnknownConsistency(consistency)),
        }
    }
}

fn single_response(applied: &Applied, leader: u64) -> pb::WriteResponse {
    let outcome = applied
        .outcomes
        .first()
        .copied()
        .unwrap_or(Outcome::NotFound);
    write_response(outcome, applied.revision, leader)
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl RevocationService {
    async fn local_revoke(
        &self,
        r: &pb::RevokeRequest,
        origin: &Origin,
        deadline: Instant,
    ) -> Result<pb::WriteResponse, Error> {
        let t = r.token.as_ref().ok_or(InvalidInput::Unspecified("token"))?;
        let now = self.node.clock.now();
        let cmd = Command::Revoke {
            tokens: vec![self.spec(t, now)?],
            now,
            by: origin.actor.to_string(),
        };
        self.write_one(cmd, origin, deadline).await
    }

    async fn local_revoke_batch(
        &self,
        r: &pb::RevokeBatchRequest,
        origin: &Origin,
        deadline: Instant,
    ) -> Result<pb::RevokeBatchResponse, Error> {
        if r.tokens.is_empty() {
            return Err(InvalidInput::Empty("tokens").into());
        }
        if r.tokens.len() > MAX_BATCH {
            return Err(InvalidInput::BatchTooLarge {
                len: r.tokens.len(),
                max: MAX_BATCH,
            }
            .into());
        }
        let now = self.node.clock.now();
        let tokens = r
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                self.spec(t, now)
                    .map_err(|cause| Error::InvalidToken { index: i, cause })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cmd = Command::Revoke {
            tokens,
            now,
            by: origin.actor.to_string(),
        };
        if cmd.approx_size() > MAX_BATCH_BYTES {
            return Err(InvalidInput::BatchTooBig {
                len: cmd.approx_size(),
                max: MAX_BATCH_BYTES,
            }
            .into());
        }
        let leader = self.node.id;
        let a = self.write(cmd, origin, deadline).await?;
        Ok(pb::RevokeBatchResponse {
            revision: a.revision,
            leader_id: leader,
            results: a
                .outcomes
                .iter()
                .map(|o| write_response(*o, a.revision, leader))
                .collect(),
        })
    }

    async fn local_revoke_rule(
        &self,
        r: &pb::RevokeRuleRequest,
        origin: &Origin,
        deadline: Instant,
    ) -> Result<pb::WriteResponse, Error> {
        let now = self.node.clock.now();
        let not_before = if r.not_before == 0 { now } else { r.not_before };
        let rule = RuleSpec::new(
            rule_kind(r.kind)?,
            r.value.clone(),
            not_before,
            r.reason.clone(),
            now,
            self.max_lifetime(),
        )?;
        self.write_one(
            Command::RevokeRule {
                rule,
                by: origin.actor.to_string(),
            },
            origin,
            deadline,
        )
        .await
    }

    async fn local_unrevoke(
        &self,
        r: &pb::UnrevokeRequest,
        origin: &Origin,
        deadline: Instant,
    ) -> Result<pb::WriteResponse, Error> {
        revokd_core::validate_jti(&r.jti)?;
        let cmd = Command::Unrevoke {
            jti: r.jti.clone(),
            by: origin.actor.to_string(),
        };
        self.write_one(cmd, origin, deadline).await
    }

    async fn local_remove_rule(
        &self,
        r: &pb::RemoveRuleRequest,
        origin: &Origin,
        deadline: Instant,
    ) -> Result<pb::WriteResponse, Error> {
        let kind = rule_kind(r.kind)?;
        if r.value.is_empty() {
            return Err(InvalidInput::Empty("rule value").into());
        }
        let cmd = Command::RemoveRule {
            kind,
            value: r.value.clone(),
            by: origin.actor.to_string(),
        };
        self.write_one(cmd, origin, deadline).await
    }
}

type Client = RevocationClient<tonic::transport::Channel>;

#[tonic::async_trait]
impl Revocation for RevocationService {
    async fn revoke(
        &self,
        req: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        routed(
            &self.node,
            req,
            |r, o, d| async move { self.local_revoke(&r, &o, d).await },
            |ch, fwd| async move { Client::new(ch).revoke(fwd).await },
        )
        .await
    }

    async fn revoke_batch(
        &self,
        req: Request<pb::RevokeBatchRequest>,
    ) -> Result<Response<pb::RevokeBatchResponse>, Status> {
        routed(
            &self.node,
            req,
            |r, o, d| async move { self.local_revoke_batch(&r, &o, d).await },
            |ch, fwd| async move { Client::new(ch).revoke_batch(fwd).await },
        )
        .await
    }

    async fn revoke_rule(
        &self,
        req: Request<pb::RevokeRuleRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        routed(
            &self.node,
            req,
            |r, o, d| async move { self.local_revoke_rule(&r, &o, d).await },
            |ch, fwd| async move { Client::new(ch).revoke_rule(fwd).await },
        )
        .await
    }

    async fn unrevoke(
        &self,
        req: Request<pb::UnrevokeRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        routed(
            &self.node,
            req,
            |r, o, d| async move { self.local_unrevoke(&r, &o, d).await },
            |ch, fwd| async move { Client::new(ch).unrevoke(fwd).await },
        )
        .await
    }

    async fn remove_rule(
        &self,
        req: Request<pb::RemoveRuleRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        routed(
            &self.node,
            req,
            |r, o, d| async move { self.local_remove_rule(&r, &o, d).await },
            |ch, fwd| async move { Client::new(ch).remove_rule(fwd).await },
        )
        .await
    }

    async fn check(
        &self,
        req: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let deadline = deadline(req.metadata(), self.node.config.default_deadline);
        let r = req.into_inner();
        let q = r
            .token
            .ok_or(Error::from(InvalidInput::Unspecified("token")))?;
        validate_query(&q).map_err(Error::from)?;
        self.settle(r.consistency, r.min_revision, deadline).await?;
        let st = self.node.sm.read();
        Ok(Response::new(pb::CheckResponse {
            result: Some(check_result_pb(st.set.check(&query(&q)))),
            revision: st.set.revision(),
        }))
    }

    async fn check_batch(
        &self,
        req: Request<pb::CheckBatchRequest>,
    ) -> Result<Response<pb::CheckBatchResponse>, Status> {
        let deadline = deadline(req.metadata(), self.node.config.default_deadline);
        let r = req.into_inner();
        if r.tokens.len() > MAX_BATCH {
            return Err(Error::from(InvalidInput::BatchTooLarge {
                len: r.tokens.len(),
                max: MAX_BATCH,
            })
            .into());
        }
        for (i, q) in r.tokens.iter().enumerate() {
            validate_query(q).map_err(|cause| Error::InvalidToken { index: i, cause })?;
        }
        self.settle(r.consistency, r.min_revision, deadline).await?;
        let st = self.node.sm.read();
        Ok(Response::new(pb::CheckBatchResponse {
            results: r
                .tokens
                .iter()
                .map(|q| check_result_pb(st.set.check(&query(q))))
                .collect(),
            revision: st.set.revision(),
        }))
    }

    type SnapshotStream = BoxStream<pb::SnapshotChunk>;

    async fn snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let deadline = deadline(req.metadata(), self.node.config.default_deadline);
        if req.get_ref().min_revision > 0 {
            self.node
                .wait_applied(req.get_ref().min_revision, deadline)
                .await?;
        }
        let chunk = snapshots::chunk_size(req.get_ref().chunk_size);
        let reservation = self.node.snapshots.reserve(|| self.node.sm.read_set())?;
        let (reader, _) = caller::reporter(req.extensions());
        let sending = self.node.replicas.sending(&reader, reservation.revision());
        // One chunk waits while the next is built: a reader that stops holds two at most.
        let (tx, rx) = mpsc::channel(1);
        let (snapshots, stall) = (
            self.node.snapshots.clone(),
            self.node.config.watch_stall_timeout,
        );
        tokio::spawn(async move {
            let _sending = sending;
            if reservation.send(chunk, stall, tx).await {
                snapshots.record_stalled();
                tracing::warn!(?stall, "snapshot: ended a stream whose reader took nothing");
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type WatchStream = BoxStream<pb::WatchResponse>;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let from = req.get_ref().from_revision;
        let (reader, _) = caller::reporter(req.extensions());
        let feed = Feed::subscribe(self.node.sm.window().clone(), self.node.sm.applied(), from)?;
        // What this stream sends caps what its reader's replicas may report (receipts).
        let sending = self.node.replicas.sending(&reader, from);
        let rx = feed.spawn(
            self.node.watchers.clone(),
            self.node.config.watch_stall_timeout,
            sending,
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
