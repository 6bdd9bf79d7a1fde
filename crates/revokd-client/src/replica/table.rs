//! The replica's memory: revoked token ids and rules, laid out so that a check takes no lock
//! and allocates nothing.
//!
//! A token id is kept as a 128-bit fingerprint (xxh3-128 keyed with a random per-process seed)
//! plus its expiry and an interned reason: 32 bytes per entry, whatever the id's length. The
//! entries live in 16,384 shards, each an immutable sorted array behind an [`ArcSwap`]; the one
//! writer (the replica's task) copies a shard, changes it and swaps it in, so readers on any
//! number of threads see either the old or the new shard, never a torn one.
//!
//! Fingerprints can only err towards "revoked": two different ids share one with probability
//! about n / 2^128 (for 10M entries, under 10^-31), and the seed is secret, so collisions cannot
//! be crafted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use xxhash_rust::xxh3::xxh3_128_with_seed;

use crate::check::{Revocation, RevokedBy, RuleKind, TokenRef};

const SHARD_BITS: u32 = 14;
const SHARDS: usize = 1 << SHARD_BITS;
/// Distinct reasons kept; past this, new reasons read as [`REASON_NOT_KEPT`].
const MAX_REASONS: usize = 4096;
const NO_REASON_ID: u32 = u32::MAX;
/// What a check reports as the reason when the replica did not keep it.
pub const REASON_NOT_KEPT: &str = "(reason not kept locally; ask the cluster)";

/// One revoked token id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
struct Slot {
    fp: u128,
    expires_at: i64,
    reason: u32,
    _pad: u32,
}

type Shard = Box<[Slot]>;

/// A revoked token id as the replica holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEntry {
    /// Unix seconds after which it no longer counts.
    pub expires_at: i64,
    /// The reason given when it was revoked.
    pub reason: Arc<str>,
}

/// A rule as the replica holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRule {
    /// The claim it matches.
    pub kind: RuleKind,
    /// The claim's value.
    pub value: Arc<str>,
    /// Tokens issued before this (unix seconds) are revoked.
    pub not_before: i64,
    /// Unix seconds after which the rule no longer counts.
    pub drop_at: i64,
    /// The reason given.
    pub reason: Arc<str>,
}

/// The rules, one map per claim kind.
#[derive(Default, Clone)]
pub(crate) struct Rules {
    by_kind: [HashMap<Arc<str>, LocalRule>; 4],
}

fn kind_index(kind: RuleKind) -> usize {
    match kind {
        RuleKind::Subject => 0,
        RuleKind::Client => 1,
        RuleKind::Key => 2,
        RuleKind::Issuer => 3,
    }
}

impl Rules {
    pub(crate) fn len(&self) -> usize {
        self.by_kind.iter().map(HashMap::len).sum()
    }

    pub(crate) fn insert(&mut self, rule: LocalRule) {
        self.by_kind[kind_index(rule.kind)].insert(rule.value.clone(), rule);
    }

    pub(crate) fn remove(&mut self, kind: RuleKind, value: &str) {
        self.by_kind[kind_index(kind)].remove(value);
    }

    pub(crate) fn all(&self) -> Vec<LocalRule> {
        let mut v: Vec<LocalRule> = self
            .by_kind
            .iter()
            .flat_map(|m| m.values().cloned())
            .collect();
        v.sort_by(|a, b| (a.kind, &a.value).cmp(&(b.kind, &b.value)));
        v
    }

    /// The first rule covering the token, in the node's order (subject, client, key, issuer).
    fn matching(&self, t: &TokenRef<'_>, now: i64) -> Option<&LocalRule> {
        let claims = [t.sub, t.azp, t.kid, t.iss];
        for (map, claim) in self.by_kind.iter().zip(claims) {
            let Some(claim) = claim else { continue };
            if map.is_empty() {
                continue;
            }
            if let Some(rule) = map.get(claim) {
                // Without `iat` the token cannot show it was issued after the rule.
                let covered = t.iat.is_none_or(|iat| iat < rule.not_before);
                if covered && rule.drop_at > now {
                    return Some(rule);
                }
            }
        }
        None
    }
}

/// The token ids: a fixed array of shards, and the reasons their entries point into (kept
/// together so a reader never pairs an entry with another generation's reasons).
pub(crate) struct Tokens {
    shards: Box<[ArcSwap<Shard>]>,
    reasons: ArcSwap<Vec<Arc<str>>>,
}

impl Tokens {
    fn from_shards(shards: Vec<Vec<Slot>>, reasons: Vec<Arc<str>>) -> Self {
        Tokens {
            reasons: ArcSwap::from_pointee(reasons),
            shards: shards
                .into_iter()
                .map(|mut s| {
                    s.sort_unstable_by_key(|x| x.fp);
                    s.dedup_by_key(|x| x.fp);
                    ArcSwap::from_pointee(s.into_boxed_slice())
                })
                .collect(),
        }
    }
}

/// Everything a check reads. Shared by the replica handle (readers) and its task (the writer).
pub(crate) struct Store {
    seed: u64,
    tokens: ArcSwap<Tokens>,
    rules: ArcSwap<Rules>,
    len: AtomicUsize,
}

fn shard_of(fp: u128) -> usize {
    (fp as usize) & (SHARDS - 1)
}

impl Store {
    pub(crate) fn new() -> Self {
        Store {
            seed: fastrand::u64(..),
            tokens: ArcSwap::from_pointee(Tokens::from_shards(
                vec![Vec::new(); SHARDS],
                Vec::new(),
            )),
            rules: ArcSwap::from_pointee(Rules::default()),
            len: AtomicUsize::new(0),
        }
    }

    fn fingerprint(&self, jti: &str) -> u128 {
        xxh3_128_with_seed(jti.as_bytes(), self.seed)
    }

    /// The entry for `jti` and the reason it points to (resolved only when found).
    fn slot(&self, jti: &str) -> Option<(Slot, Arc<str>)> {
        let fp = self.fingerprint(jti);
        let tokens = self.tokens.load();
        let shard = tokens.shards[shard_of(fp)].load();
        let slot = shard[shard.binary_search_by_key(&fp, |s| s.fp).ok()?];
        let reason = if slot.reason == NO_REASON_ID {
            Arc::from(REASON_NOT_KEPT)
        } else {
            tokens
                .reasons
                .load()
                .get(slot.reason as usize)
                .cloned()
                .unwrap_or_else(|| Arc::from(""))
        };
        Some((slot, reason))
    }

    /// The revoked entry for `jti`, expired or not.
    pub(crate) fn get(&self, jti: &str) -> Option<LocalEntry> {
        self.slot(jti).map(|(s, reason)| LocalEntry {
            expires_at: s.expires_at,
            reason,
        })
    }

    /// Is `jti` revoked at `now()`? The clock is read only when the id is found.
    pub(crate) fn is_revoked(&self, jti: &str, now: impl Fn() -> i64) -> bool {
        let fp = self.fingerprint(jti);
        let tokens = self.tokens.load();
        let shard = tokens.shards[shard_of(fp)].load();
        match shard.binary_search_by_key(&fp, |s| s.fp) {
            Ok(i) => shard[i].expires_at > now(),
            Err(_) => false,
        }
    }

    /// Why the token is revoked, if it is. A `jti` match wins over a rule.
    pub(crate) fn check(&self, t: &TokenRef<'_>, now: impl Fn() -> i64) -> Option<Revocation> {
        if !t.jti.is_empty() {
            if let Some((s, reason)) = self.slot(t.jti) {
                if s.expires_at > now() {
                    return Some(Revocation {
                        by: RevokedBy::Jti,
                        reason,
                    });
                }
            }
        }
        let rules = self.rules.load();
        if rules.by_kind.iter().all(HashMap::is_empty) {
            return None;
        }
        rules.matching(t, now()).map(|r| Revocation {
            by: RevokedBy::Rule {
                kind: r.kind,
                value: r.value.clone(),
                not_before: r.not_before,
            },
            reason: r.reason.clone(),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub(crate) fn rules(&self) -> Vec<LocalRule> {
        self.rules.load().all()
    }

    pub(crate) fn rule_count(&self) -> usize {
        self.rules.load().len()
    }

    /// Bytes held for token ids: the shard arrays and their headers.
    pub(crate) fn token_bytes(&self) -> usize {
        let tokens = self.tokens.load();
        let per_shard = std::mem::size_of::<ArcSwap<Shard>>()
            // The Arc's counts and the boxed slice's pointer and length.
            + 2 * std::mem::size_of::<usize>()
            + std::mem::size_of::<Shard>();
        tokens
            .shards
            .iter()
            .map(|s| per_shard + s.load().len() * std::mem::size_of::<Slot>())
            .sum()
    }
}

/// A change to apply to the token ids.
pub(crate) enum TokenOp<'a> {
    /// Add (or replace) an entry.
    Insert {
        jti: &'a str,
        expires_at: i64,
        reason: &'a str,
    },
    /// Remove an entry if present.
    Remove(&'a str),
}

/// The one writer of a [`Store`]: owns the reason interning table.
pub(crate) struct Writer {
    store: Arc<Store>,
    reason_ids: HashMap<Arc<str>, u32>,
}

impl Writer {
    pub(crate) fn new(store: Arc<Store>) -> Self {
        Writer {
            store,
            reason_ids: HashMap::new(),
        }
    }

    /// The id of `reason` in `list`, adding it if there is room.
    fn intern(ids: &mut HashMap<Arc<str>, u32>, list: &mut Vec<Arc<str>>, reason: &str) -> u32 {
        if let Some(id) = ids.get(reason) {
            return *id;
        }
        if ids.len() >= MAX_REASONS {
            return NO_REASON_ID;
        }
        let reason: Arc<str> = Arc::from(reason);
        let id = list.len() as u32;
        ids.insert(reason.clone(), id);
        list.push(reason);
        id
    }

    /// Starts replacing everything with a snapshot's content; readers see the old content
    /// until [`Replacement::finish`].
    pub(crate) fn replace(&mut self) -> Replacement<'_> {
        self.reason_ids.clear();
        Replacement {
            writer: self,
            shards: vec![Vec::new(); SHARDS],
            reasons: Vec::new(),
        }
    }

    /// Applies token changes in order, copying each touched shard once.
    pub(crate) fn apply_tokens(&mut self, ops: &[TokenOp<'_>]) {
        if ops.is_empty() {
            return;
        }
        let tokens = self.store.tokens.load_full();
        let mut reasons: Option<Vec<Arc<str>>> = None;
        let mut keyed: Vec<(usize, u128, Option<Slot>)> = Vec::with_capacity(ops.len());
        for op in ops {
            match *op {
                TokenOp::Insert {
                    jti,
                    expires_at,
                    reason,
                } => {
                    let fp = self.store.fingerprint(jti);
                    let reason = match self.reason_ids.get(reason) {
                        Some(id) => *id,
                        None => {
                            let list =
                                reasons.get_or_insert_with(|| Vec::clone(&tokens.reasons.load()));
                            Self::intern(&mut self.reason_ids, list, reason)
                        }
                    };
                    let slot = Slot {
                        fp,
                        expires_at,
                        reason,
                        _pad: 0,
                    };
                    keyed.push((shard_of(fp), fp, Some(slot)));
                }
                TokenOp::Remove(jti) => {
                    let fp = self.store.fingerprint(jti);
                    keyed.push((shard_of(fp), fp, None));
                }
            }
        }
        // New reasons become readable before the entries that point to them.
        if let Some(list) = reasons {
            tokens.reasons.store(Arc::new(list));
        }
        // Stable: changes to one id keep their order.
        keyed.sort_by_key(|k| k.0);
        let mut delta: isize = 0;
        for group in keyed.chunk_by(|a, b| a.0 == b.0) {
            let cell = &tokens.shards[group[0].0];
            let mut shard: Vec<Slot> = cell.load().to_vec();
            for (_, fp, slot) in group {
                match (shard.binary_search_by_key(fp, |s| s.fp), slot) {
                    (Ok(i), Some(s)) => shard[i] = *s,
                    (Err(i), Some(s)) => {
                        shard.insert(i, *s);
                        delta += 1;
                    }
                    (Ok(i), None) => {
                        shard.remove(i);
                        delta -= 1;
                    }
                    (Err(_), None) => {}
                }
            }
            cell.store(Arc::new(shard.into_boxed_slice()));
        }
        let len = self.store.len.load(Ordering::Acquire) as isize + delta;
        self.store.len.store(len.max(0) as usize, Ordering::Release);
    }

    /// Applies rule changes (rules are few: the whole map is copied).
    pub(crate) fn apply_rules(&mut self, added: Vec<LocalRule>, removed: &[(RuleKind, &str)]) {
        if added.is_empty() && removed.is_empty() {
            return;
        }
        let mut rules = Rules::clone(&self.store.rules.load());
        for (kind, value) in removed {
            rules.remove(*kind, value);
        }
        for rule in added {
            rules.insert(rule);
        }
        self.store.rules.store(Arc::new(rules));
    }
}

/// A snapshot being loaded (see [`Writer::replace`]).
pub(crate) struct Replacement<'w> {
    writer: &'w mut Writer,
    shards: Vec<Vec<Slot>>,
    reasons: Vec<Arc<str>>,
}

impl Replacement<'_> {
    /// Adds one token id.
    pub(crate) fn push(&mut self, jti: &str, expires_at: i64, reason: &str) {
        let fp = self.writer.store.fingerprint(jti);
        let reason = Writer::intern(&mut self.writer.reason_ids, &mut self.reasons, reason);
        self.shards[shard_of(fp)].push(Slot {
            fp,
            expires_at,
            reason,
            _pad: 0,
        });
    }

    /// Swaps the new content in.
    pub(crate) fn finish(self, rules: Vec<LocalRule>) {
        let built = Tokens::from_shards(self.shards, self.reasons);
        let len = built.shards.iter().map(|s| s.load().len()).sum();
        let mut r = Rules::default();
        for rule in rules {
            r.insert(rule);
        }
        let store = &self.writer.store;
        store.tokens.store(Arc::new(built));
        store.rules.store(Arc::new(r));
        store.len.store(len, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (Arc<Store>, Writer) {
        let s = Arc::new(Store::new());
        (s.clone(), Writer::new(s))
    }

    #[test]
    fn insert_remove_and_expiry() {
        let (s, mut w) = store();
        w.apply_tokens(&[
            TokenOp::Insert {
                jti: "a",
                expires_at: 100,
                reason: "logout",
            },
            TokenOp::Insert {
                jti: "b",
                expires_at: 50,
                reason: "",
            },
        ]);
        assert_eq!(s.len(), 2);
        assert!(s.is_revoked("a", || 99));
        assert!(
            !s.is_revoked("a", || 100),
            "expired entries stop counting at once"
        );
        assert!(!s.is_revoked("c", || 0));
        assert_eq!(s.get("a").unwrap().reason.as_ref(), "logout");
        w.apply_tokens(&[TokenOp::Remove("a"), TokenOp::Remove("zzz")]);
        assert_eq!(s.len(), 1);
        assert!(!s.is_revoked("a", || 0));
    }

    #[test]
    fn order_within_a_batch_is_kept() {
        let (s, mut w) = store();
        w.apply_tokens(&[
            TokenOp::Insert {
                jti: "x",
                expires_at: 10,
                reason: "",
            },
            TokenOp::Remove("x"),
            TokenOp::Insert {
                jti: "x",
                expires_at: 20,
                reason: "again",
            },
        ]);
        assert_eq!(s.len(), 1);
        assert_eq!(s.get("x").unwrap().expires_at, 20);
    }

    #[test]
    fn rules_follow_the_node_semantics() {
        let (s, mut w) = store();
        w.apply_rules(
            vec![LocalRule {
                kind: RuleKind::Subject,
                value: Arc::from("alice"),
                not_before: 1000,
                drop_at: 5000,
                reason: Arc::from("log out everywhere"),
            }],
            &[],
        );
        let mut t = TokenRef {
            jti: "j",
            sub: Some("alice"),
            iat: Some(999),
            ..TokenRef::default()
        };
        assert!(s.check(&t, || 2000).is_some());
        t.iat = Some(1000);
        assert!(
            s.check(&t, || 2000).is_none(),
            "issued at the rule's time: valid"
        );
        t.iat = None;
        assert!(s.check(&t, || 2000).is_some(), "no iat: fail closed");
        assert!(
            s.check(&t, || 5000).is_none(),
            "past drop_at the rule stops counting"
        );
        w.apply_rules(Vec::new(), &[(RuleKind::Subject, "alice")]);
        assert!(s.check(&t, || 2000).is_none());
    }

    #[test]
    fn replace_builds_a_fresh_set() {
        let (s, mut w) = store();
        w.apply_tokens(&[TokenOp::Insert {
            jti: "old",
            expires_at: 10,
            reason: "",
        }]);
        let ids: Vec<String> = (0..10_000).map(|i| format!("id-{i}")).collect();
        let mut r = w.replace();
        for j in &ids {
            r.push(j, 100, "r");
        }
        r.finish(Vec::new());
        assert_eq!(s.len(), 10_000);
        assert!(!s.is_revoked("old", || 0));
        assert!(ids.iter().all(|j| s.is_revoked(j, || 0)));
        let per_entry = s.token_bytes() as f64 / 10_000.0;
        assert!(per_entry > 32.0, "{per_entry}");
    }
}
