//! `revokd.v1.Revocation`'s read RPCs answered from the agent's replica: `Check` and
//! `CheckBatch` with `LOCAL` consistency (and `min_revision`, waited for up to the call's
//! deadline), with the replica's revision. A gRPC validator in any language points the
//! client it generated from `proto/` at the agent and pays a loopback hop instead of a
//! cluster round trip.
//!
//! What the replica does not keep is left out of a matched entry: `revoked_by` and
//! `revision` of a token id, and a rule's `revoked_by`, `revision` and `drop_at`. Every other
//! RPC answers `UNIMPLEMENTED` naming the cluster as the place to call; `LINEARIZABLE`
//! answers `FAILED_PRECONDITION` (it needs a Raft read index, which only the cluster has).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use revokd_client::{Replica, RevokedBy, Verdict, MAX_BATCH};
use revokd_proto::convert::{query, rule_kind_pb, validate_query};
use revokd_proto::v1 as pb;
use revokd_proto::v1::revocation_server::Revocation;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::metrics::Metrics;

/// How long `min_revision` is waited for when the call has no deadline.
const DEFAULT_WAIT: Duration = Duration::from_secs(1);

/// The local read service.
pub struct LocalRevocation {
    replica: Replica,
    metrics: Arc<Metrics>,
}

impl LocalRevocation {
    /// Answers from `replica`.
    pub fn new(replica: Replica, metrics: Arc<Metrics>) -> LocalRevocation {
        LocalRevocation { replica, metrics }
    }

    /// Checks consistency and waits for `min_revision`.
    async fn settle<T>(
        &self,
        req: &Request<T>,
        consistency: i32,
        min_revision: u64,
    ) -> Result<(), Status> {
        match pb::Consistency::try_from(consistency) {
            Ok(pb::Consistency::Unspecified | pb::Consistency::Local) => {}
            Ok(pb::Consistency::Linearizable) => return Err(Status::failed_precondition(
                "the agent answers LOCAL reads from its replica; ask the cluster for LINEARIZABLE",
            )),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "consistency {consistency} is not a Consistency value"
                )))
            }
        }
        if min_revision > 0 {
            let wait = grpc_timeout(req).unwrap_or(DEFAULT_WAIT);
            if !self.replica.wait_for_revision(min_revision, wait).await {
                return Err(Status::deadline_exceeded(format!(
                    "the replica did not reach revision {min_revision} within {wait:?} (it is at {})",
                    self.replica.revision()
                )));
            }
        }
        Ok(())
    }

    fn result(&self, q: &pb::TokenQuery) -> Result<pb::CheckResult, Status> {
        let matched = match self.replica.check(&query(q)) {
            Verdict::Allowed { .. } => None,
            Verdict::Stale { staleness } => {
                return Err(Status::unavailable(format!(
                    "the agent's replica has not been known up to date for {staleness:?} \
                     (fail closed); retry, or check the agent's connection to the cluster"
                )))
            }
            Verdict::Revoked(r) => Some(match r.by {
                RevokedBy::Jti => {
                    let expires_at = self.replica.get(&q.jti).map_or(0, |e| e.expires_at);
                    pb::check_result::Matched::Token(pb::RevokedToken {
                        jti: q.jti.clone(),
                        expires_at,
                        reason: r.reason.to_string(),
                        ..Default::default()
                    })
                }
                RevokedBy::Rule {
                    kind,
                    value,
                    not_before,
                } => pb::check_result::Matched::Rule(pb::Rule {
                    kind: rule_kind_pb(kind) as i32,
                    value: value.to_string(),
                    not_before,
                    reason: r.reason.to_string(),
                    ..Default::default()
                }),
            }),
        };
        Ok(pb::CheckResult {
            revoked: matched.is_some(),
            matched,
        })
    }

    fn count<T>(&self, rpc: &str, result: &Result<T, Status>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(s) if s.code() == tonic::Code::Unavailable => "unavailable",
            Err(_) => "error",
        };
        self.metrics
            .local_checks
            .with_label_values(&[rpc, outcome])
            .inc();
    }
}

/// The call's `grpc-timeout`, if it sent one.
fn grpc_timeout<T>(req: &Request<T>) -> Option<Duration> {
    let v = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn not_here(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "revokd-agent answers only Check and CheckBatch (LOCAL); send {rpc} to the cluster"
    ))
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Revocation for LocalRevocation {
    async fn revoke(
        &self,
        _: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        Err(not_here("Revoke"))
    }

    async fn revoke_batch(
        &self,
        _: Request<pb::RevokeBatchRequest>,
    ) -> Result<Response<pb::RevokeBatchResponse>, Status> {
        Err(not_here("RevokeBatch"))
    }

    async fn revoke_rule(
        &self,
        _: Request<pb::RevokeRuleRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        Err(not_here("RevokeRule"))
    }

    async fn unrevoke(
        &self,
        _: Request<pb::UnrevokeRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        Err(not_here("Unrevoke"))
    }

    async fn remove_rule(
        &self,
        _: Request<pb::RemoveRuleRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        Err(not_here("RemoveRule"))
    }

    async fn check(
        &self,
        req: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let answer = async {
            let r = req.get_ref();
            let q = r
                .token
                .as_ref()
                .ok_or_else(|| Status::invalid_argument("token is required"))?;
            validate_query(q).map_err(|e| Status::invalid_argument(e.to_string()))?;
            self.settle(&req, r.consistency, r.min_revision).await?;
            Ok(Response::new(pb::CheckResponse {
                result: Some(self.result(q)?),
                revision: self.replica.revision(),
            }))
        }
        .await;
        self.count("Check", &answer);
        answer
    }

    async fn check_batch(
        &self,
        req: Request<pb::CheckBatchRequest>,
    ) -> Result<Response<pb::CheckBatchResponse>, Status> {
        let answer = async {
            let r = req.get_ref();
            if r.tokens.len() > MAX_BATCH {
                return Err(Status::invalid_argument(format!(
                    "{} tokens in one CheckBatch; at most {MAX_BATCH}",
                    r.tokens.len()
                )));
            }
            for (i, q) in r.tokens.iter().enumerate() {
                validate_query(q)
                    .map_err(|e| Status::invalid_argument(format!("tokens[{i}]: {e}")))?;
            }
            self.settle(&req, r.consistency, r.min_revision).await?;
            let revision = self.replica.revision();
            let results = r
                .tokens
                .iter()
                .map(|q| self.result(q))
                .collect::<Result<_, _>>()?;
            Ok(Response::new(pb::CheckBatchResponse { results, revision }))
        }
        .await;
        self.count("CheckBatch", &answer);
        answer
    }

    type SnapshotStream = BoxStream<pb::SnapshotChunk>;

    async fn snapshot(
        &self,
        _: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(not_here("Snapshot"))
    }

    type WatchStream = BoxStream<pb::WatchResponse>;

    async fn watch(
        &self,
        _: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(not_here("Watch"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        let mut req = Request::new(());
        assert_eq!(grpc_timeout(&req), None);
        for (v, d) in [
            ("250m", Duration::from_millis(250)),
            ("2S", Duration::from_secs(2)),
            ("1M", Duration::from_secs(60)),
            ("500u", Duration::from_micros(500)),
        ] {
            req.metadata_mut()
                .insert("grpc-timeout", v.parse().unwrap());
            assert_eq!(grpc_timeout(&req), Some(d), "{v}");
        }
        req.metadata_mut()
            .insert("grpc-timeout", "x".parse().unwrap());
        assert_eq!(grpc_timeout(&req), None);
    }
}
