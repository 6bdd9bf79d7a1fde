//! The replica's memory: revoked token ids and rules, laid out so that a check takes no lock
//! and allocates nothing.
//!
//! A token id is kept as a 128-bit fingerprint (xxh3-128 keyed with a random per-process seed)
//! plus its expiry and an interned reason: 32 bytes per entry, whatever the id's length. The
//! entries live in 16,384 shards (chosen by the fingerprint's low bits), each an immutable array
//! sorted by fingerprint behind an [`ArcSwap`]; the one writer (the replica's task) copies a
//! shard, changes it and swaps it in, so readers on any number of threads see either the old or
//! the new shard, never a torn one. A lookup guesses the position from the fingerprint's high
//! bits (they are uniform) and walks to it: usually one or two cache lines.
//!
//! Fingerprints can only err towards "revoked": two different ids share one with probability
//! about n / 2^128 (for 10M entries, under 10^-31), and the seed is secret, so collisions cannot
//! be crafted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use xxhash_rust::xxh3::xxh3_128_with_seed;

use revokd_core::issued_before;

use crate::check::{Revocation, RevokedBy, RuleKind, TokenQuery};

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

impl Rules {
    pub(crate) fn len(&self) -> usize {
        self.by_kind.iter().map(HashMap::len).sum()
    }

    pub(crate) fn insert(&mut self, rule: LocalRule) {
        self.by_kind[rule.kind.index()].insert(rule.value.clone(), rule);
    }

    pub(crate) fn remove(&mut self, kind: RuleKind, value: &str) {
        self.by_kind[kind.index()].remove(value);
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

    /// The first rule covering the token, in the node's order ([`RuleKind::ALL`]).
    fn matching(&self, t: &TokenQuery<'_>, now: i64) -> Option<&LocalRule> {
        for kind in RuleKind::ALL {
            let map = &self.by_kind[kind.index()];
            let Some(claim) = t.claim(kind) else { continue };
            if map.is_empty() {
                continue;
            }
            if let Some(rule) = map.get(claim) {
                if issued_before(t.iat, rule.not_before) && rule.drop_at > now {
                    return Some(rule);
                }
            }
        }
        None
    }
}

/// Everything a check reads. Shared by the replica handle (readers) and its task (the writer).
/// Public as a building block (and for memory benchmarks); most users want [`crate::Replica`].
pub struct Store {
    seed: u64,
    /// Fixed for the store's life; each shard is swapped whole. A reader loads one shard, so
    /// it sees each id either before or after a change, never half of one.
    shards: Box<[ArcSwap<Shard>]>,
    /// Reasons entries point into, append-only (an id never changes meaning).
    reasons: ArcSwap<Vec<Arc<str>>>,
    rules: ArcSwap<Rules>,
    len: AtomicUsize,
}

fn shard_of(fp: u128) -> usize {
    (fp as usize) & (SHARDS - 1)
}

/// Sorts a shard's entries by fingerprint, keeping the last of duplicates.
fn sealed(mut slots: Vec<Slot>) -> Shard {
    slots.reverse();
    slots.sort_by_key(|x| x.fp);
    slots.dedup_by_key(|x| x.fp);
    slots.into_boxed_slice()
}

/// Finds `fp` in a sorted shard. Fingerprints are uniform, so the position is guessed from the
/// high bits and the search walks from there: one or two adjacent cache lines instead of a
/// binary search's scattered probes.
#[inline]
fn find(shard: &[Slot], fp: u128) -> Option<usize> {
    let n = shard.len();
    if n == 0 {
        return None;
    }
    let guess = ((((fp >> 64) as u64 as u128) * n as u128) >> 64) as usize;
    let mut i = guess.min(n - 1);
    if shard[i].fp < fp {
        while i + 1 < n {
            i += 1;
            if shard[i].fp >= fp {
                break;
            }
        }
    } else {
        while i > 0 && shard[i - 1].fp >= fp {
            i -= 1;
        }
    }
    (shard[i].fp == fp).then_some(i)
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl Store {
    /// An empty set with a fresh random fingerprint seed.
    pub fn new() -> Self {
        Store {
            seed: fastrand::u64(..),
            shards: (0..SHARDS)
                .map(|_| ArcSwap::from_pointee(Shard::default()))
                .collect(),
            reasons: ArcSwap::from_pointee(Vec::new()),
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
        let shard = self.shards[shard_of(fp)].load();
        let slot = shard[find(&shard, fp)?];
        let reason = if slot.reason == NO_REASON_ID {
            Arc::from(REASON_NOT_KEPT)
        } else {
            self.reasons
                .load()
                .get(slot.reason as usize)
                .cloned()
                .unwrap_or_else(|| Arc::from(""))
        };
        Some((slot, reason))
    }

    /// The revoked entry for `jti`, expired or not.
    pub fn get(&self, jti: &str) -> Option<LocalEntry> {
        self.slot(jti).map(|(s, reason)| LocalEntry {
            expires_at: s.expires_at,
            reason,
        })
    }

    /// Is `jti` revoked at `now()`? The clock is read only when the id is found.
    pub fn is_revoked(&self, jti: &str, now: impl Fn() -> i64) -> bool {
        let fp = self.fingerprint(jti);
        let shard = self.shards[shard_of(fp)].load();
        match find(&shard, fp) {
            Some(i) => shard[i].expires_at > now(),
            None => false,
        }
    }

    /// Why the token is revoked, if it is. A `jti` match wins over a rule.
    pub fn check(&self, t: &TokenQuery<'_>, now: impl Fn() -> i64) -> Option<Revocation> {
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

    /// Token ids held.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Whether no token id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every rule held, by kind then value.
    pub fn rules(&self) -> Vec<LocalRule> {
        self.rules.load().all()
    }

    /// Rules held.
    pub fn rule_count(&self) -> usize {
        self.rules.load().len()
    }

    /// Bytes held for token ids: the shard arrays and their headers.
    pub fn token_bytes(&self) -> usize {
        let per_shard = std::mem::size_of::<ArcSwap<Shard>>()
            // The Arc's counts and the boxed slice's pointer and length.
            + 2 * std::mem::size_of::<usize>()
            + std::mem::size_of::<Shard>();
        self.shards
            .iter()
            .map(|s| per_shard + s.load().len() * std::mem::size_of::<Slot>())
            .sum()
    }
}

/// A change to apply to the token ids.
pub enum TokenOp<'a> {
    /// Add (or replace) an entry.
    Insert {
        /// The token id.
        jti: &'a str,
        /// Unix seconds after which it no longer counts.
        expires_at: i64,
        /// Why it was revoked.
        reason: &'a str,
    },
    /// Remove an entry if present.
    Remove(&'a str),
}

/// The one writer of a [`Store`]: owns the reason interning table.
pub struct Writer {
    store: Arc<Store>,
    reason_ids: HashMap<Arc<str>, u32>,
}

impl Writer {
    /// The writer of `store`. There must be only one.
    pub fn new(store: Arc<Store>) -> Self {
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
    /// until [`Replacement::finish`] swaps the shards in one by one.
    pub fn replace(&mut self) -> Replacement<'_> {
        Replacement {
            reasons: None,
            writer: self,
            shards: vec![Vec::new(); SHARDS],
        }
    }

    /// The id of `reason`, adding it to the shared list (copied into `pending`, published by
    /// the caller before any entry pointing to it).
    fn reason_id(&mut self, pending: &mut Option<Vec<Arc<str>>>, reason: &str) -> u32 {
        if let Some(id) = self.reason_ids.get(reason) {
            return *id;
        }
        let list = pending.get_or_insert_with(|| Vec::clone(&self.store.reasons.load()));
        Self::intern(&mut self.reason_ids, list, reason)
    }

    /// Applies token changes in order, copying each touched shard once.
    pub fn apply_tokens(&mut self, ops: &[TokenOp<'_>]) {
        if ops.is_empty() {
            return;
        }
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
                    let reason = self.reason_id(&mut reasons, reason);
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
            self.store.reasons.store(Arc::new(list));
        }
        // Stable: changes to one id keep their order.
        keyed.sort_by_key(|k| k.0);
        let mut delta: isize = 0;
        for group in keyed.chunk_by(|a, b| a.0 == b.0) {
            let cell = &self.store.shards[group[0].0];
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
    pub fn apply_rules(&mut self, added: Vec<LocalRule>, removed: &[(RuleKind, &str)]) {
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
pub struct Replacement<'w> {
    writer: &'w mut Writer,
    shards: Vec<Vec<Slot>>,
    reasons: Option<Vec<Arc<str>>>,
}

impl Replacement<'_> {
    /// Adds one token id.
    pub fn push(&mut self, jti: &str, expires_at: i64, reason: &str) {
        let fp = self.writer.store.fingerprint(jti);
        let reason = self.writer.reason_id(&mut self.reasons, reason);
        self.shards[shard_of(fp)].push(Slot {
            fp,
            expires_at,
            reason,
            _pad: 0,
        });
    }

    /// Swaps the new content in, shard by shard.
    pub fn finish(self, rules: Vec<LocalRule>) {
        let store = &self.writer.store;
        if let Some(list) = self.reasons {
            store.reasons.store(Arc::new(list));
        }
        let mut len = 0;
        for (cell, slots) in store.shards.iter().zip(self.shards) {
            let shard = sealed(slots);
            len += shard.len();
            cell.store(Arc::new(shard));
        }
        let mut r = Rules::default();
        for rule in rules {
            r.insert(rule);
        }
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
        let mut t = TokenQuery {
            jti: "j",
            sub: Some("alice"),
            iat: Some(999),
            ..TokenQuery::default()
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
    fn find_agrees_with_a_binary_search() {
        for n in [0usize, 1, 2, 7, 61, 610, 5000] {
            let mut slots: Vec<Slot> = (0..n)
                .map(|_| Slot {
                    fp: fastrand::u128(..),
                    expires_at: 0,
                    reason: 0,
                    _pad: 0,
                })
                .collect();
            let shard = sealed(std::mem::take(&mut slots));
            for s in shard.iter() {
                assert_eq!(find(&shard, s.fp).map(|i| shard[i].fp), Some(s.fp));
            }
            for _ in 0..1000 {
                let fp = fastrand::u128(..);
                assert_eq!(
                    find(&shard, fp),
                    shard.binary_search_by_key(&fp, |s| s.fp).ok()
                );
            }
            // The edges.
            assert_eq!(
                find(&shard, 0),
                shard.binary_search_by_key(&0, |s| s.fp).ok()
            );
            assert_eq!(
                find(&shard, u128::MAX),
                shard.binary_search_by_key(&u128::MAX, |s| s.fp).ok()
            );
        }
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
