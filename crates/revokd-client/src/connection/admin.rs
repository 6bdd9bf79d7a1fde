//! The calls an admin or a service makes: writes (revoke, rules, unrevoke), remote reads, and
//! the cluster-management calls.
//!
//! They take and return domain types (`revokd-core`'s, re-exported by this crate); the
//! protobuf messages are built and read back through `revokd_proto::convert` and never appear
//! in a signature, except the raw `snapshot` and `watch` streams (see there why).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use revokd_proto::v1 as pb;
use tokio::task::JoinSet;

use crate::check::{RuleKind, TokenQuery};
use crate::error::{from_status, Error};

use revokd_core::types::MAX_BATCH;
use revokd_core::{CheckAnswer, Consistency, Membership, NodeStatus};
use revokd_proto::convert;
use revokd_proto::convert::rule_kind_pb;

use super::results::{read, write_result};

use super::*;
use crate::clock::unix_now;

impl Client {
    /// Revokes one token id. Retrying is safe: a second attempt answers `AlreadyPresent` with
    /// the first one's revision and creates no second event.
    pub async fn revoke(&self, token: Revoke) -> Result<WriteResult, Error> {
        let spec = convert::token_spec_pb(&token);
        let ticket = self.begin_write();
        let r = self
            .call("Revoke", Target::Leader, |node, left| {
                let req = self.write_request(
                    pb::RevokeRequest {
                        token: Some(spec.clone()),
                    },
                    left,
                    &ticket,
                );
                async move { node.revocation().revoke(req).await }
            })
            .await?;
        write_result("Revoke", &r)
    }

    /// Revokes many token ids, in atomic batches of up to [`MAX_BATCH`]. One result per token,
    /// in order.
    pub async fn revoke_many(&self, tokens: &[Revoke]) -> Result<Vec<WriteResult>, Error> {
        let mut out = Vec::with_capacity(tokens.len());
        for chunk in tokens.chunks(MAX_BATCH) {
            let specs: Vec<pb::RevokedTokenSpec> =
                chunk.iter().map(convert::token_spec_pb).collect();
            let ticket = self.begin_write();
            let r = self
                .call("RevokeBatch", Target::Leader, |node, left| {
                    let req = self.write_request(
                        pb::RevokeBatchRequest {
                            tokens: specs.clone(),
                        },
                        left,
                        &ticket,
                    );
                    async move { node.revocation().revoke_batch(req).await }
                })
                .await?;
            for r in &r.results {
                out.push(write_result("RevokeBatch", r)?);
            }
        }
        Ok(out)
    }

    /// Revokes every token whose `kind` claim equals `value` and that was issued before
    /// `not_before` (unix seconds; `None`: now, by this machine's clock, fixed before the first
    /// attempt so that retries are identical).
    pub async fn revoke_rule(
        &self,
        kind: RuleKind,
        value: &str,
        not_before: Option<i64>,
        reason: &str,
    ) -> Result<WriteResult, Error> {
        let msg = pb::RevokeRuleRequest {
            kind: rule_kind_pb(kind) as i32,
            value: value.to_owned(),
            not_before: not_before.unwrap_or_else(unix_now),
            reason: reason.to_owned(),
        };
        let ticket = self.begin_write();
        let r = self
            .call("RevokeRule", Target::Leader, |node, left| {
                let req = self.write_request(msg.clone(), left, &ticket);
                async move { node.revocation().revoke_rule(req).await }
            })
            .await?;
        write_result("RevokeRule", &r)
    }

    /// Removes a rule.
    pub async fn remove_rule(&self, kind: RuleKind, value: &str) -> Result<WriteResult, Error> {
        let msg = pb::RemoveRuleRequest {
            kind: rule_kind_pb(kind) as i32,
            value: value.to_owned(),
        };
        let ticket = self.begin_write();
        let r = self
            .call("RemoveRule", Target::Leader, |node, left| {
                let req = self.write_request(msg.clone(), left, &ticket);
                async move { node.revocation().remove_rule(req).await }
            })
            .await?;
        write_result("RemoveRule", &r)
    }

    /// Removes a token id from the revocation set.
    pub async fn unrevoke(&self, jti: &str) -> Result<WriteResult, Error> {
        let msg = pb::UnrevokeRequest {
            jti: jti.to_owned(),
        };
        let ticket = self.begin_write();
        let r = self
            .call("Unrevoke", Target::Leader, |node, left| {
                let req = self.write_request(msg.clone(), left, &ticket);
                async move { node.revocation().unrevoke(req).await }
            })
            .await?;
        write_result("Unrevoke", &r)
    }

    /// Asks the cluster whether a token is revoked (a network round trip; validators use the
    /// local replica instead). Sent to the healthy node with the fewest requests in flight.
    /// The query is the one local checks take: an absent claim is `None`.
    ///
    /// ```no_run
    /// # async fn demo(client: revokd_client::Client) -> Result<(), revokd_client::Error> {
    /// use revokd_client::{Consistency, TokenQuery};
    /// let token = TokenQuery { jti: "token-id", ..Default::default() };
    /// let answer = client.check(&token, Consistency::Linearizable).await?;
    /// println!("revoked: {} (at revision {})", answer.is_revoked(), answer.revision);
    /// # Ok(()) }
    /// ```
    pub async fn check(
        &self,
        token: &TokenQuery<'_>,
        consistency: Consistency,
    ) -> Result<CheckAnswer, Error> {
        let msg = pb::CheckRequest {
            token: Some(convert::query_pb(token)),
            consistency: convert::consistency_pb(consistency) as i32,
            min_revision: 0,
        };
        let r = self
            .call("Check", Target::LeastLoaded, |node, left| {
                let req = self.request(msg.clone(), left);
                async move { node.revocation().check(req).await }
            })
            .await?;
        read("Check", r, convert::check_answer)
    }

    /// One healthy node's view of the cluster. A role this client does not know (from a newer
    /// node) is [`Error::Unexpected`].
    pub async fn status(&self) -> Result<NodeStatus, Error> {
        let s = self
            .call("Status", Target::LeastLoaded, |node, left| {
                let req = self.request(pb::StatusRequest {}, left);
                async move { node.cluster().status(req).await }
            })
            .await?;
        // The members are learned whatever the node's role says.
        self.learn_members(&s);
        read("Status", s, convert::node_status)
    }

    /// Every known node's own status (or why it could not be had), by address.
    pub async fn statuses(&self) -> Vec<(String, Result<NodeStatus, Error>)> {
        self.statuses_pb()
            .await
            .into_iter()
            .map(|(addr, s)| {
                (
                    addr,
                    s.and_then(|s| read("Status", s, convert::node_status)),
                )
            })
            .collect()
    }

    /// [`Client::statuses`] as the nodes sent them, for what only needs the replicas' reports
    /// (receipts poll it every few milliseconds, and a role they do not read must not hide a
    /// node's reports).
    pub(super) async fn statuses_pb(&self) -> Vec<(String, Result<pb::StatusResponse, Error>)> {
        self.on_every_node("Status", |n, req_timeout| async move {
            let mut req = tonic::Request::new(pb::StatusRequest {});
            req.set_timeout(req_timeout);
            n.cluster().status(req).await
        })
        .await
    }

    /// Runs `f` on every known node at once, each bounded by the configured timeout; the
    /// answers (or why there was none) by address.
    pub(super) async fn on_every_node<T, F, Fut>(
        &self,
        op: &'static str,
        f: F,
    ) -> Vec<(String, Result<T, Error>)>
    where
        T: Send + 'static,
        F: Fn(Arc<NodeConn>, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send + 'static,
    {
        let mut set = JoinSet::new();
        let timeout = self.inner.config.timeout;
        for n in self.nodes() {
            let addr = n.addr.clone();
            let fut = f(n, timeout);
            set.spawn(async move {
                let r = match tokio::time::timeout(timeout, fut).await {
                    Ok(Ok(r)) => Ok(r.into_inner()),
                    Ok(Err(s)) => Err(from_status(op, s)),
                    Err(_) => Err(Error::Unavailable {
                        op,
                        waited: timeout,
                        last: "no answer".into(),
                    }),
                };
                (addr, r)
            });
        }
        let mut out: Vec<_> = set.join_all().await;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Streams the whole revocation set from one healthy node, in chunks of `chunk_size` ids
    /// (0: the node's default), at a revision no older than `min_revision`.
    ///
    /// This and [`Client::watch`] are the wire-level escape hatch: the stream yields the
    /// protobuf messages ([`pb::SnapshotChunk`]) as the node sent
    /// them, on purpose. They carry the whole set (millions of ids) and every change, and
    /// their users consume them as they arrive (an export re-encodes each chunk, a replica
    /// hashes each id): a domain copy of every message would cost one more allocation per id
    /// for nothing. Read them with `revokd_proto::convert` (`token`, `rule`) if you need the
    /// domain types; to follow the set, use [`crate::Replica`], which does all of this.
    pub async fn snapshot(
        &self,
        chunk_size: u32,
        min_revision: u64,
    ) -> Result<tonic::Streaming<pb::SnapshotChunk>, Error> {
        self.call("Snapshot", Target::LeastLoaded, |node, left| {
            let mut req = tonic::Request::new(pb::SnapshotRequest {
                chunk_size,
                min_revision,
            });
            // The deadline bounds waiting for `min_revision`, not reading the stream.
            req.set_timeout(left);
            async move { node.revocation().snapshot(req).await }
        })
        .await
    }

    /// Streams every change after `from_revision` from one healthy node, until the stream
    /// breaks (resume from the last revision seen, on this or another client call).
    ///
    /// Like [`Client::snapshot`], the raw wire-level stream
    /// ([`pb::WatchResponse`]), for the same reasons.
    pub async fn watch(
        &self,
        from_revision: u64,
    ) -> Result<tonic::Streaming<pb::WatchResponse>, Error> {
        self.call("Watch", Target::LeastLoaded, |node, _| async move {
            node.revocation()
                .watch(pb::WatchRequest { from_revision })
                .await
        })
        .await
    }

    /// Builds a snapshot on every known node now; per node address, the snapshot's revision
    /// or why it failed.
    pub async fn trigger_snapshots(&self) -> Vec<(String, Result<u64, Error>)> {
        self.on_every_node("TriggerSnapshot", |n, req_timeout| async move {
            let mut req = tonic::Request::new(pb::TriggerSnapshotRequest {});
            req.set_timeout(req_timeout);
            n.cluster().trigger_snapshot(req).await
        })
        .await
        .into_iter()
        .map(|(addr, r)| (addr, r.map(|s| s.snapshot_revision)))
        .collect()
    }

    /// Adds a learner (a non-voting member that receives the log) and answers the membership
    /// after the change; `blocking`: wait until it has caught up with the log.
    pub async fn add_learner(
        &self,
        node_id: u64,
        address: &str,
        blocking: bool,
    ) -> Result<Membership, Error> {
        let msg = pb::AddLearnerRequest {
            node_id,
            address: address.to_owned(),
            blocking,
        };
        self.call("AddLearner", Target::Leader, |node, left| {
            let req = self.request(msg.clone(), left);
            async move { node.cluster().add_learner(req).await }
        })
        .await
        .map(convert::membership)
    }

    /// Replaces the set of voters (`retain`: keep removed voters as learners) and answers the
    /// membership after the change.
    pub async fn change_membership(
        &self,
        voters: &[u64],
        retain: bool,
    ) -> Result<Membership, Error> {
        let msg = pb::ChangeMembershipRequest {
            voters: voters.to_vec(),
            retain,
        };
        self.call("ChangeMembership", Target::Leader, |node, left| {
            let req = self.request(msg.clone(), left);
            async move { node.cluster().change_membership(req).await }
        })
        .await
        .map(convert::membership)
    }
}
