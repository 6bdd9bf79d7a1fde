//! What the client's writes take and give back: [`Revoke`], [`WriteResult`], [`WriteOutcome`].

use revokd_proto::v1 as pb;

use crate::error::Error;

/// A token id to revoke.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revoke {
    /// The token's `jti` (1-256 bytes).
    pub jti: String,
    /// Unix seconds: the token's own `exp`; the entry is dropped after it.
    pub expires_at: i64,
    /// Why (free text, up to 1024 bytes).
    pub reason: String,
    /// The token's subject, for audit.
    pub subject: String,
}

impl Revoke {
    /// Revoke `jti` until `expires_at` (unix seconds).
    pub fn new(jti: impl Into<String>, expires_at: i64) -> Self {
        Revoke {
            jti: jti.into(),
            expires_at,
            ..Revoke::default()
        }
    }

    /// Sets the reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

    /// Sets the subject.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = subject.into();
        self
    }

    pub(super) fn pb(&self) -> pb::RevokedTokenSpec {
        pb::RevokedTokenSpec {
            jti: self.jti.clone(),
            expires_at: self.expires_at,
            reason: self.reason.clone(),
            subject: self.subject.clone(),
        }
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The change was applied at `revision`.
    Applied,
    /// Nothing changed: it was already in force since `revision` (an idempotent retry).
    AlreadyPresent,
    /// Nothing changed: the token has already expired.
    AlreadyExpired,
    /// Nothing changed: there was nothing to remove.
    NotFound,
}

/// A write the cluster committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteResult {
    /// What it did.
    pub outcome: WriteOutcome,
    /// The revision the outcome refers to.
    pub revision: u64,
    /// The revision of the log entry that carried the request (>= `revision`): every node and
    /// replica that has applied it reflects the write.
    pub committed_revision: u64,
    /// The leader that committed it.
    pub leader_id: u64,
}

impl WriteResult {
    /// The answer to the write `op`; an outcome this client does not know is an error, not
    /// a guess.
    pub(super) fn from_pb(op: &'static str, r: &pb::WriteResponse) -> Result<Self, Error> {
        let outcome = match pb::WriteOutcome::try_from(r.outcome) {
            Ok(pb::WriteOutcome::Applied) => WriteOutcome::Applied,
            Ok(pb::WriteOutcome::AlreadyPresent) => WriteOutcome::AlreadyPresent,
            Ok(pb::WriteOutcome::AlreadyExpired) => WriteOutcome::AlreadyExpired,
            Ok(pb::WriteOutcome::NotFound) => WriteOutcome::NotFound,
            _ => {
                return Err(Error::Unexpected {
                    op,
                    what: format!("write outcome {}", r.outcome),
                })
            }
        };
        Ok(WriteResult {
            outcome,
            revision: r.revision,
            committed_revision: r.committed_revision.max(r.revision),
            leader_id: r.leader_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_outcome_is_an_error_not_a_guess() {
        let answer = |outcome| pb::WriteResponse {
            revision: 7,
            leader_id: 1,
            outcome,
            committed_revision: 7,
        };
        let known = WriteResult::from_pb("Revoke", &answer(pb::WriteOutcome::NotFound as i32));
        assert_eq!(known.unwrap().outcome, WriteOutcome::NotFound);
        for unknown in [0, 99] {
            let e = WriteResult::from_pb("Revoke", &answer(unknown)).unwrap_err();
            assert!(matches!(e, Error::Unexpected { op: "Revoke", .. }), "{e}");
        }
    }
}
