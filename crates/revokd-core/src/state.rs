//! The revocation set: the replicated state machine itself.
//!
//! It never reads a clock and iterates only over ordered collections where order is
//! observable, so applying the same commands at the same revisions gives the same state and
//! the same events everywhere.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{Hash, Hasher};

use crate::command::{Applied, Command, Outcome};
use crate::event::{ChangeSet, Event};
use crate::order::Writers;
use crate::stored::StoredToken;
use crate::types::{issued_before, Match, Rule, RuleKind, RuleSpec, TokenQuery, TokenSpec};

/// An entry as both indexes hold it: hashed, compared and ordered by its id's bytes alone, so
/// the hash index needs no separate key and the expiry index no copy of the id.
#[derive(Clone, Debug)]
struct ById(StoredToken);

impl Borrow<[u8]> for ById {
    fn borrow(&self) -> &[u8] {
        self.0.jti_bytes()
    }
}

impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.jti_bytes().hash(state)
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.jti_bytes() == other.0.jti_bytes()
    }
}

impl Eq for ById {}

impl PartialOrd for ById {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ById {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.jti_bytes().cmp(other.0.jti_bytes())
    }
}

/// An entry as the expiry index holds it: ordered by expiry, then id. One pointer per element
/// (the index's nodes hold eight bytes per token, not a copy of the expiry beside it).
#[derive(Clone, Debug)]
struct ByExpiry(StoredToken);

impl PartialEq for ByExpiry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ByExpiry {}

impl PartialOrd for ByExpiry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByExpiry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.0.expires_at(), self.0.jti_bytes()).cmp(&(other.0.expires_at(), other.0.jti_bytes()))
    }
}

/// The set of revoked token ids and rules at one revision.
#[derive(Debug, Default, Clone)]
pub struct RevocationSet {
    /// Every token, found by its id. One pointer per slot ([`StoredToken`]).
    tokens: HashSet<ById>,
    /// Every token, ordered by expiry then id: what a purge drops is a prefix. The same
    /// entries as `tokens`, shared.
    by_expiry: BTreeSet<ByExpiry>,
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
    pub fn token(&self, jti: &str) -> Option<&StoredToken> {
        self.tokens.get(jti.as_bytes()).map(|t| &t.0)
    }

    /// The rule for a claim value, if any.
    pub fn rule(&self, kind: RuleKind, value: &str) -> Option<&Rule> {
        self.rules[kind.index()].get(value)
    }

    /// Every token, ordered by expiry then id: the same state always lists the same way (a
    /// node's `Snapshot` stream, a simulation replaying a seed).
    pub fn tokens(&self) -> impl Iterator<Item = &StoredToken> + '_ {
        self.by_expiry.iter().map(|t| &t.0)
    }

    /// Every rule, ordered by kind then value.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> + '_ {
        self.rules.iter().flat_map(BTreeMap::values)
    }

    /// The earliest `expires_at` of any token, and the earliest `drop_at` of any rule: a
    /// purge proposed at or after the smaller one will drop something.
    pub fn next_expiry(&self) -> Option<i64> {
        let token = self.by_expiry.first().map(|t| t.0.expires_at());
        let rule = self.rules().map(|r| r.drop_at).min();
        match (token, rule) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Is the token revoked, and why? A `jti` match wins over a rule match.
    pub fn check(&self, q: &TokenQuery<'_>) -> Option<Match<'_>> {
        if !q.jti.is_empty() {
            if let Some(t) = self.token(q.jti) {
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
        // At most one event per outcome; the watch window keeps the vector, so no slack.
        let mut events = Vec::with_capacity(cmd.outcome_count());
        let mut outcomes = Vec::with_capacity(cmd.outcome_count());
        self.apply_into(revision, cmd, &mut outcomes, &mut events);
        events.shrink_to_fit();
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
        if let Some(existing) = self.token(&spec.jti) {
            return Outcome::AlreadyPresent(existing.revision());
        }
        if spec.expires_at <= now {
            return Outcome::AlreadyExpired;
        }
        let token = StoredToken::from_spec(spec, by, revision);
        events.push(Event::Revoked(token.clone()));
        self.insert_token(token);
        Outcome::Applied(revision)
    }

    /// Adds `token`, whose id is not present, to both indexes.
    fn insert_token(&mut self, token: StoredToken) {
        self.by_expiry.insert(ByExpiry(token.clone()));
        self.tokens.insert(ById(token));
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
        events.push(Event::RuleAdded(Box::new(rule.clone())));
        rules.insert(spec.value.clone(), rule);
        Outcome::Applied(revision)
    }

    fn unrevoke(&mut self, revision: u64, jti: &str, events: &mut Vec<Event>) -> Outcome {
        match self.tokens.take(jti.as_bytes()) {
            Some(entry) => {
                self.by_expiry.remove(&ByExpiry(entry.0));
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
        while let Some(first) = self.by_expiry.first() {
            if first.0.expires_at() > now {
                break;
            }
            let Some(entry) = self.by_expiry.pop_first() else {
                break;
            };
            self.tokens.remove(entry.0.jti_bytes());
            jtis.push(entry.0.jti().to_owned());
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
        tokens: impl IntoIterator<Item = StoredToken>,
        rules: impl IntoIterator<Item = Rule>,
        writers: Writers,
    ) -> Result<Self, String> {
        let mut set = RevocationSet {
            revision,
            purged_through,
            writers,
            ..Self::default()
        };
        let tokens = tokens.into_iter();
        set.tokens.reserve(tokens.size_hint().0);
        let mut by_expiry = Vec::with_capacity(tokens.size_hint().0);
        for t in tokens {
            let entry = ById(t);
            if !set.tokens.insert(entry.clone()) {
                return Err(format!(
                    "token id {:?} appears twice",
                    truncated(entry.0.jti())
                ));
            }
            by_expiry.push(ByExpiry(entry.0));
        }
        // Built from sorted input in one pass, with full nodes, instead of one insert at a
        // time (a snapshot lists tokens by id, not by expiry): most of a restart's work.
        by_expiry.sort_unstable();
        set.by_expiry = by_expiry.into_iter().collect();
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
        for t in self.tokens() {
            h.update(&postcard::to_stdvec(t).unwrap_or_default());
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
            && self.tokens.len() == other.tokens.len()
            && self.tokens().eq(other.tokens())
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
