//! The revocation set: the replicated state machine itself.
//!
//! It never reads a clock and iterates only over ordered collections where order is
//! observable, so applying the same commands at the same revisions gives the same state and
//! the same events everywhere.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::command::{Applied, Command, Outcome};
use crate::event::{ChangeSet, Event};
use crate::order::Writers;
use crate::types::{
    issued_before, Match, RevokedToken, Rule, RuleKind, RuleSpec, TokenQuery, TokenSpec,
};

/// The set of revoked token ids and rules at one revision.
#[derive(Debug, Default, Clone)]
pub struct RevocationSet {
    /// Token ids, keyed by a shared string so the expiry index costs a pointer, not a copy.
    tokens: HashMap<Arc<str>, RevokedToken>,
    /// `(expires_at, jti)` for every token: what a purge drops is a prefix.
    by_expiry: BTreeSet<(i64, Arc<str>)>,
    /// Rules per kind (indexed by [`RuleKind::index`]), keyed by claim value.
    rules: [BTreeMap<String, Rule>; 4],
    /// The last applied revision.
    revision: u64,
    /// The latest time (unix seconds) a purge ran at: see [`RevocationSet::purged_through`].
    purged_through: i64,
    /// Each recent client's write order ([`crate::order`]).
    writers: Writers,
}

impl RevocationSet {
    /// An empty set at revision 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last applied revision.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The latest proposer time (unix seconds) a purge ran at. It only moves forward: a purge
    /// proposed at or before it (a leader whose clock is behind, or was stepped back) changes
    /// nothing, so what the purges tell watchers never goes back in time. 0 before the first.
    pub fn purged_through(&self) -> i64 {
        self.purged_through
    }

    /// Whether a purge at `now` would drop something: something expired by `now`, and `now`
    /// later than the last purge.
    pub fn purge_due(&self, now: i64) -> bool {
        now > self.purged_through && self.next_expiry().is_some_and(|t| t <= now)
    }

    /// Each recent client's write order.
    pub fn writers(&self) -> &Writers {
        &self.writers
    }

    /// Number of revoked token ids.
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.rules.iter().map(BTreeMap::len).sum()
    }

    /// The entry for a token id, if revoked.
    pub fn token(&self, jti: &str) -> Option<&RevokedToken> {
        self.tokens.get(jti)
    }

    /// The rule for a claim value, if any.
    pub fn rule(&self, kind: RuleKind, value: &str) -> Option<&Rule> {
        self.rules[kind.index()].get(value)
    }

    /// Every token, ordered by expiry then id: the same state always lists the same way (a
    /// node's `Snapshot` stream, a simulation replaying a seed).
    pub fn tokens(&self) -> impl Iterator<Item = &RevokedToken> + '_ {
        self.by_expiry
            .iter()
            .filter_map(|(_, jti)| self.tokens.get(jti))
    }

    /// Every rule, ordered by kind then value.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> + '_ {
        self.rules.iter().flat_map(BTreeMap::values)
    }

    /// The earliest `expires_at` of any token, and the earliest `drop_at` of any rule: a
    /// purge proposed at or after the smaller one will drop something.
    pub fn next_expiry(&self) -> Option<i64> {
        let token = self.by_expiry.first().map(|(t, _)| *t);
        let rule = self.rules().map(|r| r.drop_at).min();
        match (token, rule) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Is the token revoked, and why? A `jti` match wins over a rule match.
    pub fn check(&self, q: &TokenQuery<'_>) -> Option<Match<'_>> {
        if !q.jti.is_empty() {
            if let Some(t) = self.tokens.get(q.jti) {
                return Some(Match::Token(t));
            }
        }
        for kind in RuleKind::ALL {
            let Some(claim) = q.claim(kind) else { continue };
            if let Some(rule) = self.rules[kind.index()].get(claim) {
                if issued_before(q.iat, rule.not_before) {
                    return Some(Match::Rule(rule));
                }
            }
        }
        None
    }

    /// Moves to `revision` without a change (Raft entries that carry no command).
    pub fn advance(&mut self, revision: u64) {
        debug_assert!(revision >= self.revision, "revisions never go backwards");
        self.revision = self.revision.max(revision);
    }

    /// Applies `cmd` at `revision` and returns the outcome per item and the changes made.
    pub fn apply(&mut self, revision: u64, cmd: &Command) -> (Applied, ChangeSet) {
        self.advance(revision);
        let mut events = Vec::new();
        let mut outcomes = Vec::with_capacity(cmd.outcome_count());
        self.apply_into(revision, cmd, &mut outcomes, &mut events);
        (
            Applied { revision, outcomes },
            ChangeSet { revision, events },
        )
    }

    fn apply_into(
        &mut self,
        revision: u64,
        cmd: &Command,
        outcomes: &mut Vec<Outcome>,
        events: &mut Vec<Event>,
    ) {
        match cmd {
            Command::Revoke { tokens, now, by } => {
                for t in tokens {
                    outcomes.push(self.revoke(revision, t, *now, by, events));
                }
            }
            Command::RevokeRule { rule, by } => {
                outcomes.push(self.add_rule(revision, rule, by, events))
            }
            Command::Unrevoke { jti, .. } => outcomes.push(self.unrevoke(revision, jti, events)),
            Command::RemoveRule { kind, value, .. } => {
                outcomes.push(self.remove_rule(revision, *kind, value, events))
            }
            Command::Purge { now } => outcomes.push(self.purge(revision, *now, events)),
            Command::Batch(cmds) => {
                for c in cmds {
                    self.apply_into(revision, c, outcomes, events);
                }
            }
            Command::Ordered { order, cmd } => match self.writers.admit(order, revision) {
                true => self.apply_into(revision, cmd, outcomes, events),
                false => outcomes.extend((0..cmd.outcome_count()).map(|_| Outcome::Superseded)),
            },
        }
    }

    fn revoke(
        &mut self,
        revision: u64,
        spec: &TokenSpec,
        now: i64,
        by: &str,
        events: &mut Vec<Event>,
    ) -> Outcome {
        if let Some(existing) = self.tokens.get(spec.jti.as_str()) {
            return Outcome::AlreadyPresent(existing.revision);
        }
        if spec.expires_at <= now {
            return Outcome::AlreadyExpired;
        }
        let token = RevokedToken {
            jti: spec.jti.clone(),
            expires_at: spec.expires_at,
            reason: spec.reason.clone(),
            subject: spec.subject.clone(),
            revoked_by: by.to_owned(),
            revision,
        };
        events.push(Event::Revoked(token.clone()));
        self.insert_token(token);
        Outcome::Applied(revision)
    }

    fn insert_token(&mut self, token: RevokedToken) {
        let key: Arc<str> = Arc::from(token.jti.as_str());
        self.by_expiry.insert((token.expires_at, key.clone()));
        self.tokens.insert(key, token);
    }

    fn add_rule(
        &mut self,
        revision: u64,
        spec: &RuleSpec,
        by: &str,
        events: &mut Vec<Event>,
    ) -> Outcome {
        let rules = &mut self.rules[spec.kind.index()];
        if let Some(existing) = rules.get(&spec.value) {
            if existing.not_before >= spec.not_before {
                return Outcome::AlreadyPresent(existing.revision);
            }
        }
        let rule = Rule {
            kind: spec.kind,
            value: spec.value.clone(),
            not_before: spec.not_before,
            reason: spec.reason.clone(),
            revoked_by: by.to_owned(),
            revision,
            drop_at: spec.drop_at,
        };
        events.push(Event::RuleAdded(rule.clone()));
        rules.insert(spec.value.clone(), rule);
        Outcome::Applied(revision)
    }

    fn unrevoke(&mut self, revision: u64, jti: &str, events: &mut Vec<Event>) -> Outcome {
        match self.tokens.remove_entry(jti) {
            Some((key, token)) => {
                self.by_expiry.remove(&(token.expires_at, key));
                events.push(Event::Unrevoked {
                    jti: jti.to_owned(),
                });
                Outcome::Applied(revision)
            }
            None => Outcome::NotFound,
        }
    }

    fn remove_rule(
        &mut self,
        revision: u64,
        kind: RuleKind,
        value: &str,
        events: &mut Vec<Event>,
    ) -> Outcome {
        match self.rules[kind.index()].remove(value) {
            Some(_) => {
                events.push(Event::RuleRemoved {
                    kind,
                    value: value.to_owned(),
                });
                Outcome::Applied(revision)
            }
            None => Outcome::NotFound,
        }
    }

    fn purge(&mut self, revision: u64, now: i64, events: &mut Vec<Event>) -> Outcome {
        if now <= self.purged_through {
            return Outcome::NotFound;
        }
        self.purged_through = now;
        let mut jtis = Vec::new();
        while let Some((expires_at, _)) = self.by_expiry.first() {
            if *expires_at > now {
                break;
            }
            let Some((_, key)) = self.by_expiry.pop_first() else {
                break;
            };
            self.tokens.remove(&key);
            jtis.push(key.to_string());
        }
        let mut rules = Vec::new();
        for kind in RuleKind::ALL {
            self.rules[kind.index()].retain(|value, rule| {
                let keep = rule.drop_at > now;
                if !keep {
                    rules.push((kind, value.clone()));
                }
                keep
            });
        }
        if jtis.is_empty() && rules.is_empty() {
            return Outcome::NotFound;
        }
        jtis.sort_unstable();
        events.push(Event::Purged { now, jtis, rules });
        Outcome::Applied(revision)
    }

    /// Rebuilds a set from its parts (used when decoding a snapshot). Refuses parts the
    /// encoder never produces: a token id or a rule twice (a second copy of a token with
    /// another expiry would leave a stale expiry index entry, and a purge would then drop the
    /// live token early). Everything [`RevocationSet::apply`] can produce is accepted, even
    /// what the API refuses to propose (an empty token id or rule value): a node must always
    /// be able to restore its own snapshot.
    pub(crate) fn from_parts(
        revision: u64,
        purged_through: i64,
        tokens: impl IntoIterator<Item = RevokedToken>,
        rules: impl IntoIterator<Item = Rule>,
        writers: Writers,
    ) -> Result<Self, String> {
        let mut set = RevocationSet {
            revision,
            purged_through,
            writers,
            ..Self::default()
        };
        for t in tokens {
            if set.tokens.contains_key(t.jti.as_str()) {
                return Err(format!("token id {:?} appears twice", truncated(&t.jti)));
            }
            set.insert_token(t);
        }
        for r in rules {
            let kind = r.kind;
            if set.rules[kind.index()].insert(r.value.clone(), r).is_some() {
                return Err(format!("a {kind} rule appears twice"));
            }
        }
        Ok(set)
    }

    /// A digest of the whole content and revision, equal on two replicas exactly when their
    /// states are equal (up to hash collisions). Used to compare replicas.
    pub fn digest(&self) -> u32 {
        let mut h = crc32fast::Hasher::new();
        h.update(&self.revision.to_le_bytes());
        for (_, jti) in &self.by_expiry {
            if let Some(t) = self.tokens.get(jti) {
                h.update(&postcard::to_stdvec(t).unwrap_or_default());
            }
        }
        for r in self.rules() {
            h.update(&postcard::to_stdvec(r).unwrap_or_default());
        }
        for w in self.writers.iter() {
            h.update(&postcard::to_stdvec(&w).unwrap_or_default());
        }
        h.finalize()
    }
}

impl PartialEq for RevocationSet {
    fn eq(&self, other: &Self) -> bool {
        self.revision == other.revision
            && self.purged_through == other.purged_through
            && self.tokens == other.tokens
            && self.rules == other.rules
            && self.writers == other.writers
    }
}

impl Eq for RevocationSet {}

/// At most 64 characters of `s`, for error messages.
fn truncated(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
