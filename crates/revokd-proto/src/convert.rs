//! Every conversion between the domain types of `revokd-core` and their protobuf form, for
//! the node (answers, watch events, snapshots) and for clients (requests they send, answers
//! and replicas they read back).
//!
//! Names: `x_pb` builds the wire form of `x`; `x` reads it back. Reading an answer never
//! guesses: an enum value this side does not know (a newer peer's) or a field the answer must
//! carry is an [`Unreadable`], not a default.

use revokd_core::{
    CheckAnswer, Consistency, Event, InvalidInput, Match, Matched, Member, Membership, NodeStatus,
    Outcome, ReplicaInfo, RevokedToken, Role, Rule, RuleKind, StoredToken, TokenQuery, TokenSpec,
    WriteOutcome, WriteResult,
};

use crate::v1 as pb;

/// Why an answer from a node cannot be read as its domain type. Usually the node is newer than
/// this side and sends a value it does not know yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    /// An enum value this side does not know, or `UNSPECIFIED` where the answer must say.
    #[error("unknown {field} {value}")]
    Unknown {
        /// Which field.
        field: &'static str,
        /// The value on the wire.
        value: i32,
    },
    /// A field the answer must carry is absent.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// The fields contradict each other.
    #[error("{0}")]
    Inconsistent(&'static str),
}

/// A rule kind from the wire; `UNSPECIFIED` and unknown values are invalid.
pub fn rule_kind(v: i32) -> Result<RuleKind, InvalidInput> {
    match pb::RuleKind::try_from(v) {
        Ok(pb::RuleKind::Subject) => Ok(RuleKind::Subject),
        Ok(pb::RuleKind::Client) => Ok(RuleKind::Client),
        Ok(pb::RuleKind::Key) => Ok(RuleKind::Key),
        Ok(pb::RuleKind::Issuer) => Ok(RuleKind::Issuer),
        _ => Err(InvalidInput::Unspecified(
            "rule kind (SUBJECT, CLIENT, KEY or ISSUER)",
        )),
    }
}

/// A rule kind for the wire.
pub fn rule_kind_pb(k: RuleKind) -> pb::RuleKind {
    match k {
        RuleKind::Subject => pb::RuleKind::Subject,
        RuleKind::Client => pb::RuleKind::Client,
        RuleKind::Key => pb::RuleKind::Key,
        RuleKind::Issuer => pb::RuleKind::Issuer,
    }
}

/// A revoked token, as the set keeps it, for the wire.
pub fn token_pb(t: &StoredToken) -> pb::RevokedToken {
    pb::RevokedToken {
        jti: t.jti().to_owned(),
        expires_at: t.expires_at(),
        reason: t.reason().to_owned(),
        subject: t.subject().to_owned(),
        revoked_by: t.revoked_by().to_owned(),
        revision: t.revision(),
    }
}

/// A rule for the wire.
pub fn rule_pb(r: &Rule) -> pb::Rule {
    pb::Rule {
        kind: rule_kind_pb(r.kind) as i32,
        value: r.value.clone(),
        not_before: r.not_before,
        reason: r.reason.clone(),
        revoked_by: r.revoked_by.clone(),
        revision: r.revision,
        drop_at: r.drop_at,
    }
}

/// A check result for the wire.
pub fn check_result_pb(m: Option<Match<'_>>) -> pb::CheckResult {
    match m {
        None => pb::CheckResult {
            revoked: false,
            matched: None,
        },
        Some(Match::Token(t)) => pb::CheckResult {
            revoked: true,
            matched: Some(pb::check_result::Matched::Token(token_pb(t))),
        },
        Some(Match::Rule(r)) => pb::CheckResult {
            revoked: true,
            matched: Some(pb::check_result::Matched::Rule(rule_pb(r))),
        },
    }
}

/// Checks a wire query before it is answered: a `jti` within bounds, or none when a claim
/// that rules match on is given.
pub fn validate_query(q: &pb::TokenQuery) -> Result<(), InvalidInput> {
    revokd_core::validate_jti_query(
        &q.jti,
        [&q.sub, &q.azp, &q.kid, &q.iss]
            .iter()
            .any(|s| !s.is_empty()),
    )
}

/// Borrows a wire query as a core query. Empty strings mean "claim absent".
pub fn query(q: &pb::TokenQuery) -> TokenQuery<'_> {
    fn opt(s: &str) -> Option<&str> {
        if s.is_empty() {
            None
        } else {
            Some(s)
        }
    }
    TokenQuery {
        jti: &q.jti,
        sub: opt(&q.sub),
        azp: opt(&q.azp),
        kid: opt(&q.kid),
        iss: opt(&q.iss),
        iat: q.iat,
    }
}

/// A write outcome for the wire.
pub fn write_response(outcome: Outcome, committed: u64, leader_id: u64) -> pb::WriteResponse {
    let (revision, outcome) = match outcome {
        Outcome::Applied(r) => (r, pb::WriteOutcome::Applied),
        Outcome::AlreadyPresent(r) => (r, pb::WriteOutcome::AlreadyPresent),
        Outcome::AlreadyExpired => (committed, pb::WriteOutcome::AlreadyExpired),
        Outcome::NotFound => (committed, pb::WriteOutcome::NotFound),
        // Never sent as an outcome: the node answers ABORTED instead (`revokd::api`).
        Outcome::Superseded => (committed, pb::WriteOutcome::Unspecified),
    };
    pb::WriteResponse {
        revision,
        leader_id,
        outcome: outcome as i32,
        committed_revision: committed,
    }
}

/// A change event for the wire.
pub fn event_pb(e: &Event) -> pb::Event {
    use pb::event::Change;
    let change = match e {
        Event::Revoked(t) => Change::Revoked(token_pb(t)),
        Event::Unrevoked { jti } => Change::Unrevoked(pb::Unrevoked { jti: jti.clone() }),
        Event::RuleAdded(r) => Change::RuleAdded(rule_pb(r)),
        Event::RuleRemoved { kind, value } => Change::RuleRemoved(pb::RuleRemoved {
            kind: rule_kind_pb(*kind) as i32,
            value: value.clone(),
        }),
        Event::Purged { now, jtis, rules } => Change::Purged(pb::Purged {
            now: *now,
            jtis: jtis.clone(),
            rules: rules
                .iter()
                .map(|(k, v)| pb::RuleRemoved {
                    kind: rule_kind_pb(*k) as i32,
                    value: v.clone(),
                })
                .collect(),
        }),
    };
    pb::Event {
        change: Some(change),
    }
}

/// A token to revoke, for the wire.
pub fn token_spec_pb(t: &TokenSpec) -> pb::RevokedTokenSpec {
    pb::RevokedTokenSpec {
        jti: t.jti.clone(),
        expires_at: t.expires_at,
        reason: t.reason.clone(),
        subject: t.subject.clone(),
    }
}

/// A query for the wire: an absent claim is an empty string (what [`query`] reads back as
/// absent).
pub fn query_pb(q: &TokenQuery<'_>) -> pb::TokenQuery {
    let own = |s: Option<&str>| s.unwrap_or_default().to_owned();
    pb::TokenQuery {
        jti: q.jti.to_owned(),
        sub: own(q.sub),
        azp: own(q.azp),
        kid: own(q.kid),
        iss: own(q.iss),
        iat: q.iat,
    }
}

/// A read consistency for the wire.
pub fn consistency_pb(c: Consistency) -> pb::Consistency {
    match c {
        Consistency::Local => pb::Consistency::Local,
        Consistency::Linearizable => pb::Consistency::Linearizable,
    }
}

/// A revoked token from the wire.
pub fn token(t: pb::RevokedToken) -> RevokedToken {
    RevokedToken {
        jti: t.jti,
        expires_at: t.expires_at,
        reason: t.reason,
        subject: t.subject,
        revoked_by: t.revoked_by,
        revision: t.revision,
    }
}

/// A rule from the wire; a rule kind this side does not know is [`Unreadable`].
pub fn rule(r: pb::Rule) -> Result<Rule, Unreadable> {
    Ok(Rule {
        kind: rule_kind(r.kind).map_err(|_| Unreadable::Unknown {
            field: "rule kind",
            value: r.kind,
        })?,
        value: r.value,
        not_before: r.not_before,
        reason: r.reason,
        revoked_by: r.revoked_by,
        revision: r.revision,
        drop_at: r.drop_at,
    })
}

/// A check answer from the wire. `revoked` and what matched must agree: a revoked answer
/// that does not say why (or the reverse) is [`Unreadable`], never read as "not revoked".
pub fn check_answer(r: pb::CheckResponse) -> Result<CheckAnswer, Unreadable> {
    use pb::check_result::Matched as M;
    let result = r.result.ok_or(Unreadable::Missing("check result"))?;
    let matched = match (result.revoked, result.matched) {
        (false, None) => None,
        (true, Some(M::Token(t))) => Some(Matched::Token(token(t))),
        (true, Some(M::Rule(r))) => Some(Matched::Rule(rule(r)?)),
        (true, None) => {
            return Err(Unreadable::Inconsistent(
                "check result says revoked but not what matched",
            ))
        }
        (false, Some(_)) => {
            return Err(Unreadable::Inconsistent(
                "check result says not revoked but names a match",
            ))
        }
    };
    Ok(CheckAnswer {
        matched,
        revision: r.revision,
    })
}

/// A write's result from the wire; an outcome this side does not know is [`Unreadable`].
pub fn write_result(r: &pb::WriteResponse) -> Result<WriteResult, Unreadable> {
    let outcome = match pb::WriteOutcome::try_from(r.outcome) {
        Ok(pb::WriteOutcome::Applied) => WriteOutcome::Applied,
        Ok(pb::WriteOutcome::AlreadyPresent) => WriteOutcome::AlreadyPresent,
        Ok(pb::WriteOutcome::AlreadyExpired) => WriteOutcome::AlreadyExpired,
        Ok(pb::WriteOutcome::NotFound) => WriteOutcome::NotFound,
        Ok(pb::WriteOutcome::Unspecified) | Err(_) => {
            return Err(Unreadable::Unknown {
                field: "write outcome",
                value: r.outcome,
            })
        }
    };
    Ok(WriteResult {
        outcome,
        revision: r.revision,
        // A node older than `committed_revision` sends 0: the write's own revision is then
        // the best bound known.
        committed_revision: r.committed_revision.max(r.revision),
        leader_id: r.leader_id,
    })
}

/// A node's role from the wire; `UNSPECIFIED` and values this side does not know are
/// [`Unreadable`].
pub fn role(v: i32) -> Result<Role, Unreadable> {
    match pb::Role::try_from(v) {
        Ok(pb::Role::Leader) => Ok(Role::Leader),
        Ok(pb::Role::Follower) => Ok(Role::Follower),
        Ok(pb::Role::Candidate) => Ok(Role::Candidate),
        Ok(pb::Role::Learner) => Ok(Role::Learner),
        Ok(pb::Role::Shutdown) => Ok(Role::Shutdown),
        Ok(pb::Role::Unspecified) | Err(_) => Err(Unreadable::Unknown {
            field: "role",
            value: v,
        }),
    }
}

/// A cluster member from the wire.
pub fn member(m: pb::Member) -> Member {
    Member {
        id: m.id,
        address: m.address,
        voter: m.voter,
        matched_revision: m.matched_revision,
    }
}

/// A validator replica, as a node reports it, from the wire.
pub fn replica_info(r: pb::ReplicaInfo) -> ReplicaInfo {
    ReplicaInfo {
        replica_id: r.replica_id,
        description: r.description,
        applied_revision: r.applied_revision,
        lag: r.lag,
        last_seen_ms: r.last_seen_ms,
        follows_this_node: r.follows_this_node,
    }
}

/// A node's status from the wire; a role this side does not know is [`Unreadable`].
pub fn node_status(s: pb::StatusResponse) -> Result<NodeStatus, Unreadable> {
    Ok(NodeStatus {
        id: s.id,
        address: s.address,
        role: role(s.role)?,
        term: s.term,
        leader_id: s.leader_id,
        leader_address: s.leader_address,
        commit_revision: s.commit_revision,
        applied_revision: s.applied_revision,
        last_log_revision: s.last_log_revision,
        snapshot_revision: s.snapshot_revision,
        members: s.members.into_iter().map(member).collect(),
        learners: s.learners.into_iter().map(member).collect(),
        revoked_tokens: s.revoked_tokens,
        rules: s.rules,
        watch_window_start: s.watch_window_start,
        replicas: s.replicas.into_iter().map(replica_info).collect(),
        quorum_lost: s.quorum_lost,
    })
}

/// The membership after a change, from the wire.
pub fn membership(m: pb::MembershipResponse) -> Membership {
    Membership {
        revision: m.revision,
        leader_id: m.leader_id,
        members: m.members.into_iter().map(member).collect(),
        learners: m.learners.into_iter().map(member).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_write_outcome_is_unreadable_not_a_guess() {
        let answer = |outcome| pb::WriteResponse {
            revision: 7,
            leader_id: 1,
            outcome,
            committed_revision: 0,
        };
        let known = write_result(&answer(pb::WriteOutcome::NotFound as i32)).unwrap();
        assert_eq!(known.outcome, WriteOutcome::NotFound);
        assert_eq!(
            known.committed_revision, 7,
            "an old node's 0 reads as the revision"
        );
        for unknown in [0, 99] {
            assert_eq!(
                write_result(&answer(unknown)),
                Err(Unreadable::Unknown {
                    field: "write outcome",
                    value: unknown
                })
            );
        }
    }

    #[test]
    fn an_unknown_role_is_unreadable_not_a_default() {
        assert_eq!(role(pb::Role::Learner as i32), Ok(Role::Learner));
        for unknown in [0, 6, 99] {
            assert!(matches!(
                role(unknown),
                Err(Unreadable::Unknown { field: "role", .. })
            ));
            let status = pb::StatusResponse {
                role: unknown,
                ..Default::default()
            };
            assert!(node_status(status).is_err());
        }
    }

    #[test]
    fn a_check_answer_never_reads_as_not_revoked_unless_it_says_so() {
        let answer = |revoked, matched| pb::CheckResponse {
            result: Some(pb::CheckResult { revoked, matched }),
            revision: 9,
        };
        let ok = check_answer(answer(false, None)).unwrap();
        assert!(!ok.is_revoked());
        assert_eq!(ok.revision, 9);
        let token = pb::check_result::Matched::Token(pb::RevokedToken {
            jti: "t".into(),
            ..Default::default()
        });
        let got = check_answer(answer(true, Some(token.clone()))).unwrap();
        assert!(matches!(got.matched, Some(Matched::Token(t)) if t.jti == "t"));
        let unknown_rule = pb::check_result::Matched::Rule(pb::Rule {
            kind: 42,
            ..Default::default()
        });
        for bad in [
            answer(true, None),
            answer(false, Some(token)),
            answer(true, Some(unknown_rule)),
            pb::CheckResponse {
                result: None,
                revision: 9,
            },
        ] {
            assert!(check_answer(bad).is_err());
        }
    }

    #[test]
    fn a_query_round_trips_through_the_wire() {
        let q = TokenQuery {
            jti: "j",
            sub: Some("alice"),
            azp: None,
            kid: Some("k1"),
            iss: None,
            iat: Some(5),
        };
        let wire = query_pb(&q);
        assert_eq!(query(&wire), q);
        let bare = query_pb(&TokenQuery {
            jti: "j",
            ..Default::default()
        });
        assert_eq!(
            bare,
            pb::TokenQuery {
                jti: "j".into(),
                ..Default::default()
            }
        );
    }
}
