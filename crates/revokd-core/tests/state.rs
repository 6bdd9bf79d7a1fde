//! Unit and property tests of the revocation state machine.

use std::collections::BTreeMap;

use proptest::prelude::*;
use revokd_core::{
    ChangeSet, Command, Event, Match, Outcome, RevocationSet, RuleKind, RuleSpec, SnapshotError,
    TokenQuery, TokenSpec, WriteOrder,
};

fn spec(jti: &str, expires_at: i64) -> TokenSpec {
    TokenSpec {
        jti: jti.into(),
        expires_at,
        reason: "stolen".into(),
        subject: "alice".into(),
    }
}

fn revoke(jti: &str, expires_at: i64, now: i64) -> Command {
    Command::Revoke {
        tokens: vec![spec(jti, expires_at)],
        now,
        by: "admin".into(),
    }
}

fn q(jti: &str) -> TokenQuery<'_> {
    TokenQuery {
        jti,
        ..Default::default()
    }
}

#[test]
fn revoke_is_idempotent_and_keeps_the_original_revision() {
    let mut set = RevocationSet::new();
    let (a, ev) = set.apply(3, &revoke("t1", 100, 10));
    assert_eq!(a.outcomes, vec![Outcome::Applied(3)]);
    assert_eq!(ev.events.len(), 1);
    let (a, ev) = set.apply(4, &revoke("t1", 200, 10));
    assert_eq!(a.outcomes, vec![Outcome::AlreadyPresent(3)]);
    assert!(ev.events.is_empty(), "a retry must not create an event");
    assert_eq!(set.token("t1").map(|t| t.expires_at()), Some(100));
    assert_eq!(set.revision(), 4);
}

#[test]
fn revoking_an_expired_token_is_a_noop_that_says_so() {
    let mut set = RevocationSet::new();
    let (a, ev) = set.apply(1, &revoke("old", 10, 10));
    assert_eq!(a.outcomes, vec![Outcome::AlreadyExpired]);
    assert!(ev.events.is_empty());
    assert_eq!(set.token_count(), 0);
}

#[test]
fn batch_applies_every_item_at_one_revision() {
    let mut set = RevocationSet::new();
    let cmd = Command::Revoke {
        tokens: vec![spec("a", 50), spec("b", 5), spec("a", 60)],
        now: 10,
        by: String::new(),
    };
    let (a, ev) = set.apply(9, &cmd);
    assert_eq!(
        a.outcomes,
        vec![
            Outcome::Applied(9),
            Outcome::AlreadyExpired,
            Outcome::AlreadyPresent(9)
        ]
    );
    assert_eq!(ev.revision, 9);
    assert_eq!(ev.events.len(), 1);
}

#[test]
fn rules_revoke_tokens_issued_before_not_before() {
    let mut set = RevocationSet::new();
    let rule = RuleSpec::new(
        RuleKind::Subject,
        "alice".into(),
        1_000,
        "logout".into(),
        1_000,
        3_600,
    )
    .expect("valid rule");
    assert_eq!(rule.drop_at, 4_600);
    set.apply(
        2,
        &Command::RevokeRule {
            rule,
            by: "ops".into(),
        },
    );
    let token = |iat| TokenQuery {
        jti: "x",
        sub: Some("alice"),
        iat,
        ..Default::default()
    };
    assert!(matches!(set.check(&token(Some(999))), Some(Match::Rule(r)) if r.revision == 2));
    assert_eq!(
        set.check(&token(Some(1_000))),
        None,
        "issued at not_before is valid"
    );
    assert!(set.check(&token(None)).is_some(), "no iat: fail closed");
    let other = TokenQuery {
        jti: "x",
        sub: Some("bob"),
        iat: Some(1),
        ..Default::default()
    };
    assert_eq!(set.check(&other), None);
}

#[test]
fn a_rule_only_moves_forward() {
    let mut set = RevocationSet::new();
    let mk = |nb| RuleSpec::new(RuleKind::Key, "k1".into(), nb, String::new(), 100, 1_000).unwrap();
    set.apply(
        1,
        &Command::RevokeRule {
            rule: mk(50),
            by: String::new(),
        },
    );
    let (a, ev) = set.apply(
        2,
        &Command::RevokeRule {
            rule: mk(40),
            by: String::new(),
        },
    );
    assert_eq!(a.outcomes, vec![Outcome::AlreadyPresent(1)]);
    assert!(ev.events.is_empty());
    let (a, _) = set.apply(
        3,
        &Command::RevokeRule {
            rule: mk(60),
            by: String::new(),
        },
    );
    assert_eq!(a.outcomes, vec![Outcome::Applied(3)]);
    assert_eq!(
        set.rule(RuleKind::Key, "k1").map(|r| r.not_before),
        Some(60)
    );
}

#[test]
fn purge_drops_exactly_what_has_expired() {
    let mut set = RevocationSet::new();
    set.apply(
        1,
        &Command::Revoke {
            tokens: vec![spec("a", 10), spec("b", 20), spec("c", 30)],
            now: 0,
            by: String::new(),
        },
    );
    let rule = RuleSpec::new(RuleKind::Issuer, "iss".into(), 5, String::new(), 0, 10).unwrap();
    set.apply(
        2,
        &Command::RevokeRule {
            rule,
            by: String::new(),
        },
    );
    let (a, ev) = set.apply(3, &Command::Purge { now: 20 });
    assert_eq!(a.outcomes, vec![Outcome::Applied(3)]);
    assert_eq!(
        ev.events,
        vec![Event::Purged {
            now: 20,
            jtis: vec!["a".into(), "b".into()],
            rules: vec![(RuleKind::Issuer, "iss".into())]
        }]
    );
    assert!(set.token("c").is_some());
    assert_eq!(set.rule_count(), 0);
    let (a, ev) = set.apply(4, &Command::Purge { now: 20 });
    assert_eq!(a.outcomes, vec![Outcome::NotFound]);
    assert!(ev.events.is_empty());
    // A leader whose clock is behind (or was stepped back) purges nothing, even what expired
    // by its clock: the purge times the watchers see never go backwards.
    set.apply(
        5,
        &Command::Revoke {
            tokens: vec![spec("d", 15)],
            now: 12,
            by: String::new(),
        },
    );
    let (a, ev) = set.apply(6, &Command::Purge { now: 18 });
    assert_eq!(a.outcomes, vec![Outcome::NotFound]);
    assert!(ev.events.is_empty());
    assert!(set.token("d").is_some());
    assert_eq!(set.purged_through(), 20);
    assert!(!set.purge_due(18) && !set.purge_due(20) && set.purge_due(30));
}

#[test]
fn unrevoke_and_remove_rule_report_not_found() {
    let mut set = RevocationSet::new();
    let (a, _) = set.apply(
        1,
        &Command::Unrevoke {
            jti: "nope".into(),
            by: String::new(),
        },
    );
    assert_eq!(a.outcomes, vec![Outcome::NotFound]);
    set.apply(2, &revoke("t", 100, 0));
    let (a, ev) = set.apply(
        3,
        &Command::Unrevoke {
            jti: "t".into(),
            by: String::new(),
        },
    );
    assert_eq!(a.outcomes, vec![Outcome::Applied(3)]);
    assert_eq!(ev.events, vec![Event::Unrevoked { jti: "t".into() }]);
    assert_eq!(set.check(&q("t")), None);
    let (a, _) = set.apply(
        4,
        &Command::RemoveRule {
            kind: RuleKind::Client,
            value: "c".into(),
            by: String::new(),
        },
    );
    assert_eq!(a.outcomes, vec![Outcome::NotFound]);
}

#[test]
fn a_batch_applies_in_order_at_one_revision() {
    let mut set = RevocationSet::new();
    let cmd = Command::Batch(vec![
        revoke("x", 100, 0),
        Command::Unrevoke {
            jti: "x".into(),
            by: String::new(),
        },
        Command::Revoke {
            tokens: vec![spec("y", 100), spec("z", 100)],
            now: 0,
            by: String::new(),
        },
    ]);
    assert_eq!(cmd.outcome_count(), 4);
    let (a, ev) = set.apply(5, &cmd);
    assert_eq!(
        a.outcomes,
        vec![
            Outcome::Applied(5),
            Outcome::Applied(5),
            Outcome::Applied(5),
            Outcome::Applied(5)
        ]
    );
    assert_eq!(ev.events.len(), 4);
    assert!(set.token("x").is_none() && set.token("z").is_some());
}

#[test]
fn input_limits() {
    assert!(spec("", 10).validate(0, 100).is_err());
    assert!(spec(&"x".repeat(256), 10).validate(0, 100).is_ok());
    let err = spec(&"x".repeat(257), 10).validate(0, 100).unwrap_err();
    assert_eq!(err.to_string(), "jti is 257 bytes; the limit is 256");
    assert!(spec("a", 101).validate(0, 100).is_err());
    assert!(
        spec("a", -5).validate(0, 100).is_ok(),
        "past expiry is a no-op, not an error"
    );
    assert!(RuleSpec::new(RuleKind::Subject, String::new(), 0, String::new(), 0, 10).is_err());
    let mut bad = spec("a", 10);
    bad.reason = "line\nbreak".into();
    assert!(bad.validate(0, 100).is_err());
}

#[test]
fn snapshot_detects_corruption_and_truncation() {
    let mut set = RevocationSet::new();
    set.apply(5, &revoke("t1", 100, 0));
    let bytes = set.encode_snapshot();
    assert_eq!(RevocationSet::decode_snapshot(&bytes).unwrap(), set);
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    assert!(matches!(
        RevocationSet::decode_snapshot(&flipped),
        Err(SnapshotError::Checksum { .. })
    ));
    assert!(matches!(
        RevocationSet::decode_snapshot(&bytes[..bytes.len() - 3]),
        Err(SnapshotError::Truncated { .. })
    ));
    assert!(matches!(
        RevocationSet::decode_snapshot(b"garbage"),
        Err(SnapshotError::BadMagic)
    ));
}

fn ordered(seq: u64, settled_below: u64, cmd: Command) -> Command {
    Command::Ordered {
        order: WriteOrder {
            client: 42,
            seq,
            settled_below,
        },
        cmd: Box::new(cmd),
    }
}

// Seed 3169 of the simulation: a client's RevokeRule timed out, the client removed the rule
// (acknowledged), and the held RevokeRule then reached a leader and brought the rule back.
#[test]
fn a_write_its_client_gave_up_on_never_applies_after_that_clients_next_write() {
    let mut set = RevocationSet::new();
    let add = Command::RevokeRule {
        rule: RuleSpec::new(
            RuleKind::Subject,
            "w2-s87".into(),
            10,
            String::new(),
            10,
            100,
        )
        .unwrap(),
        by: "w2".into(),
    };
    let remove = Command::RemoveRule {
        kind: RuleKind::Subject,
        value: "w2-s87".into(),
        by: "w2".into(),
    };
    // Write 0 (the add) failed at the client; write 1 (the remove) says so.
    let (a, _) = set.apply(1, &ordered(1, 1, remove));
    assert_eq!(a.outcomes, vec![Outcome::NotFound]);
    let (a, changes) = set.apply(2, &ordered(0, 0, add.clone()));
    assert_eq!(a.outcomes, vec![Outcome::Superseded]);
    assert!(changes.events.is_empty());
    assert_eq!(set.rule_count(), 0);
    assert_eq!(
        set.revision(),
        2,
        "the skipped entry still advances the revision"
    );
    // The floor survives a snapshot; a write without an order is applied as before.
    let mut back = RevocationSet::decode_snapshot(&set.encode_snapshot()).unwrap();
    assert_eq!(back, set);
    let (a, _) = back.apply(3, &ordered(0, 0, add.clone()));
    assert_eq!(a.outcomes, vec![Outcome::Superseded]);
    let (a, _) = back.apply(4, &add);
    assert_eq!(a.outcomes, vec![Outcome::Applied(4)]);
}

// ------------------------------------------------------------------------------------------
// Property tests

fn arb_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        8 => arb_single(),
        1 => prop::collection::vec(arb_single(), 0..4).prop_map(Command::Batch),
        3 => arb_ordered(),
        1 => prop::collection::vec(arb_ordered(), 0..4).prop_map(Command::Batch),
    ]
}

/// A write of one of three clients, with its place in that client's sequence.
fn arb_ordered() -> impl Strategy<Value = Command> {
    (0u64..3, 0u64..8, 0u64..8, arb_single()).prop_map(|(client, seq, settled, cmd)| {
        Command::Ordered {
            order: WriteOrder {
                client,
                seq,
                settled_below: settled.min(seq),
            },
            cmd: Box::new(cmd),
        }
    })
}

fn arb_single() -> impl Strategy<Value = Command> {
    let jti = prop::sample::select(vec!["a", "b", "c", "d", "e", "f"]).prop_map(String::from);
    let kind = prop::sample::select(RuleKind::ALL.to_vec());
    let value = prop::sample::select(vec!["u1", "u2", "u3"]).prop_map(String::from);
    prop_oneof![
        4 => (prop::collection::vec((jti.clone(), 0i64..200), 1..4), 0i64..100).prop_map(|(ts, now)| Command::Revoke {
            tokens: ts.into_iter().map(|(j, e)| spec(&j, e)).collect(),
            now,
            by: "p".into(),
        }),
        2 => (kind.clone(), value.clone(), 0i64..100, 0i64..100).prop_map(|(kind, value, nb, now)| Command::RevokeRule {
            rule: RuleSpec::new(kind, value, nb, String::new(), now, 100).unwrap(),
            by: "p".into(),
        }),
        1 => jti.prop_map(|jti| Command::Unrevoke { jti, by: String::new() }),
        1 => (kind, value).prop_map(|(kind, value)| Command::RemoveRule { kind, value, by: String::new() }),
        1 => (0i64..300).prop_map(|now| Command::Purge { now }),
    ]
}

/// A deliberately naive reference model of the same rules.
#[derive(Default)]
struct Model {
    tokens: BTreeMap<String, (i64, u64)>,
    rules: BTreeMap<(RuleKind, String), (i64, i64)>,
    /// The latest purge time: an earlier purge does nothing.
    purged_through: i64,
    /// Per client, the highest `settled_below` seen: its writes numbered below are skipped.
    floors: BTreeMap<u64, u64>,
}

impl Model {
    fn apply(&mut self, rev: u64, cmd: &Command) {
        match cmd {
            Command::Revoke { tokens, now, .. } => {
                for t in tokens {
                    if !self.tokens.contains_key(&t.jti) && t.expires_at > *now {
                        self.tokens.insert(t.jti.clone(), (t.expires_at, rev));
                    }
                }
            }
            Command::RevokeRule { rule, .. } => {
                let key = (rule.kind, rule.value.clone());
                if self
                    .rules
                    .get(&key)
                    .is_none_or(|(nb, _)| *nb < rule.not_before)
                {
                    self.rules.insert(key, (rule.not_before, rule.drop_at));
                }
            }
            Command::Unrevoke { jti, .. } => {
                self.tokens.remove(jti);
            }
            Command::RemoveRule { kind, value, .. } => {
                self.rules.remove(&(*kind, value.clone()));
            }
            Command::Purge { now } if *now > self.purged_through => {
                self.purged_through = *now;
                self.tokens.retain(|_, (exp, _)| *exp > *now);
                self.rules.retain(|_, (_, drop)| *drop > *now);
            }
            Command::Purge { .. } => {}
            Command::Batch(cmds) => {
                for c in cmds {
                    self.apply(rev, c);
                }
            }
            Command::Ordered { order, cmd } => {
                let floor = self.floors.entry(order.client).or_default();
                let admitted = order.seq >= *floor;
                *floor = (*floor).max(order.settled_below);
                if admitted {
                    self.apply(rev, cmd);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Two replicas applying the same log agree on state and events, including one that
    /// restarts from a snapshot half way; and both agree with the reference model.
    #[test]
    fn replicas_agree(cmds in prop::collection::vec(arb_command(), 1..60), cut in 0usize..60) {
        let mut a = RevocationSet::new();
        let mut b = RevocationSet::new();
        let mut model = Model::default();
        let mut events_a: Vec<ChangeSet> = Vec::new();
        let mut events_b: Vec<ChangeSet> = Vec::new();
        for (i, cmd) in cmds.iter().enumerate() {
            let rev = i as u64 + 1;
            if i == cut.min(cmds.len() - 1) {
                b = RevocationSet::decode_snapshot(&b.encode_snapshot()).unwrap();
            }
            let (oa, ea) = a.apply(rev, cmd);
            let (ob, eb) = b.apply(rev, cmd);
            prop_assert_eq!(oa, ob);
            events_a.push(ea);
            events_b.push(eb);
            model.apply(rev, cmd);
        }
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.digest(), b.digest());
        prop_assert_eq!(a.encode_snapshot(), b.encode_snapshot());
        prop_assert_eq!(events_a, events_b);
        let got: BTreeMap<String, (i64, u64)> =
            a.tokens().map(|t| (t.jti().to_owned(), (t.expires_at(), t.revision()))).collect();
        prop_assert_eq!(got, model.tokens);
        let got_rules: BTreeMap<(RuleKind, String), (i64, i64)> =
            a.rules().map(|r| ((r.kind, r.value.clone()), (r.not_before, r.drop_at))).collect();
        prop_assert_eq!(got_rules, model.rules);
        let floors: BTreeMap<u64, u64> = a.writers().iter().map(|w| (w.client, w.floor)).collect();
        prop_assert_eq!(floors, model.floors);
    }

    /// Replaying the events of each revision on a copy reproduces the state (what a watching
    /// client does).
    #[test]
    fn events_reproduce_state(cmds in prop::collection::vec(arb_command(), 1..60)) {
        let mut a = RevocationSet::new();
        let mut follower: BTreeMap<String, u64> = BTreeMap::new();
        for (i, cmd) in cmds.iter().enumerate() {
            let (_, changes) = a.apply(i as u64 + 1, cmd);
            for e in changes.events {
                match e {
                    Event::Revoked(t) => { follower.insert(t.jti().to_owned(), t.revision()); }
                    Event::Unrevoked { jti } => { follower.remove(&jti); }
                    Event::Purged { jtis, .. } => for j in jtis { follower.remove(&j); },
                    Event::RuleAdded(_) | Event::RuleRemoved { .. } => {}
                }
            }
        }
        let want: BTreeMap<String, u64> = a.tokens().map(|t| (t.jti().to_owned(), t.revision())).collect();
        prop_assert_eq!(follower, want);
    }

    /// After a purge at `now` later than every earlier purge, nothing with `expires_at <= now`
    /// is left; the purge watermark only moves forward, and a purge at or before it changes
    /// nothing (a leader whose clock went back).
    #[test]
    fn purge_leaves_nothing_expired(cmds in prop::collection::vec(arb_command(), 1..40), now in 0i64..300) {
        let mut a = RevocationSet::new();
        for (i, cmd) in cmds.iter().enumerate() {
            a.apply(i as u64 + 1, cmd);
        }
        let before = a.purged_through();
        let mut untouched = a.clone();
        untouched.advance(1_000);
        let (applied, changes) = a.apply(1_000, &Command::Purge { now });
        prop_assert_eq!(a.purged_through(), before.max(now));
        if now > before {
            prop_assert!(a.tokens().all(|t| t.expires_at() > now));
            prop_assert!(a.rules().all(|r| r.drop_at > now));
        } else {
            prop_assert_eq!(applied.outcomes, vec![Outcome::NotFound]);
            prop_assert!(changes.events.is_empty());
            prop_assert!(a == untouched);
        }
    }
}

// Found by the `apply` fuzz target (crates/revokd-fuzz; the input is in its corpus): apply
// accepted a subject rule with an empty value, which the API never proposes, but the
// snapshot loader refused it, so a node holding such a state could not restore its own
// snapshot. Whatever apply can produce must survive a snapshot.
#[test]
fn every_state_apply_can_reach_restores_from_its_snapshot() {
    let mut set = RevocationSet::new();
    set.apply(1, &revoke("", 100, 10));
    set.apply(
        2,
        &Command::RevokeRule {
            rule: RuleSpec {
                kind: RuleKind::Subject,
                value: String::new(),
                not_before: 50,
                reason: String::new(),
                drop_at: 200,
            },
            by: String::new(),
        },
    );
    let restored = RevocationSet::decode_snapshot(&set.encode_snapshot()).expect("own snapshot");
    assert_eq!(restored.digest(), set.digest());
    assert_eq!(restored.token_count(), 1);
}
