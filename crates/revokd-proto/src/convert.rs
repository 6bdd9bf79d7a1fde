//! Every conversion between the domain types of `revokd-core` and their protobuf form, for
//! the node (answers, watch events, snapshots) and for clients (replicas reading them back).

use revokd_core::{Event, InvalidInput, Match, Outcome, RevokedToken, Rule, RuleKind, TokenQuery};

use crate::v1 as pb;

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

/// A revoked token for the wire.
pub fn token_pb(t: &RevokedToken) -> pb::RevokedToken {
    pb::RevokedToken {
        jti: t.jti.clone(),
        expires_at: t.expires_at,
        reason: t.reason.clone(),
        subject: t.subject.clone(),
        revoked_by: t.revoked_by.clone(),
        revision: t.revision,
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
