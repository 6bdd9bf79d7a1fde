//! The validator replicas that send heartbeats to this node: what each one last reported, for
//! `Status` and the metrics. Not replicated: each node knows the replicas that talk to it, and a
//! replica heartbeats every node.
//!
//! Receipts (`revokd-client`) count the replicas listed here, so a report must not be able to
//! lie: a replica id belongs to the client that first reported it (its authenticated
//! principal, or for an anonymous caller its connection) until that client falls silent for
//! [`REBIND_AFTER`]; a reported revision is capped at the node's commit revision (no replica
//! can have applied what is not committed) and, for a client that reads the set from this
//! node (a `Watch` or `Snapshot` stream), at the highest revision this node has sent it
//! ([`ReplicaRegistry::sending`]): only such reports are marked `follows_this_node`, and
//! receipts count only those. Each client (principal, or address for anonymous callers) may
//! hold at most [`MAX_REPLICAS_PER_CLIENT`] ids, so no caller can crowd the others out of the
//! registry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// The runtime's clock (the simulated one under simulation): ages here reach Status replies.
use tokio::time::Instant;

use revokd_proto::v1 as pb;

use crate::error::Error;

/// A replica not heard from for this long is no longer listed.
pub const REPLICA_TTL: Duration = Duration::from_secs(30);
/// At most this many replicas are tracked; reports from new replicas beyond it are refused.
pub const MAX_REPLICAS: usize = 10_000;
pub use revokd_proto::wire::{MAX_DESCRIPTION_LEN, MAX_REPLICA_ID_LEN};
/// Most replica ids one client (principal, or address) may have registered at once. A host
/// runs a handful of validator processes; a gateway fleet behind one NAT address a few dozen.
pub const MAX_REPLICAS_PER_CLIENT: usize = 256;
/// A replica id whose owner has not reported for this long may be taken by another client
/// (a replica that restarted, or reconnected from a new port). Several heartbeat intervals
/// (the client's default is 1 s), so a live replica's id is never taken over.
pub const REBIND_AFTER: Duration = Duration::from_secs(10);

/// Who reports a replica id, or reads the set over a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reporter {
    /// Who owns the ids it reports: an authenticated principal (`sub:...`, `cert:...`), or
    /// `conn:<address:port>` for an anonymous caller.
    pub owner: String,
    /// Whose quota its ids count against: the principal, or `ip:<address>` when anonymous.
    pub quota: String,
}

struct Seen {
    description: String,
    applied: u64,
    /// Whether `applied` was checked against what this node sent the reporter.
    follows: bool,
    at: Instant,
    owner: String,
    quota: String,
}

/// The highest revision this node has sent one client over its streams, and when it last
/// sent one (milliseconds since the registry's epoch).
#[derive(Default)]
struct Sent {
    revision: AtomicU64,
    touched_ms: AtomicU64,
}

/// Records, for one `Watch` or `Snapshot` stream, how far it has sent the set: held by the
/// stream while it lasts.
pub struct Sending {
    sent: Arc<Sent>,
    epoch: Instant,
}

impl Sending {
    /// The stream is about to send the set up to `revision`. Called before the message is
    /// queued, so that a replica's report of it never arrives before the record.
    pub fn advance(&self, revision: u64) {
        self.sent.revision.fetch_max(revision, Ordering::AcqRel);
        self.touch();
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.sent.touched_ms.store(ms, Ordering::Release);
    }
}

impl Drop for Sending {
    /// The reader follows this node for [`REPLICA_TTL`] from the end of its last stream.
    fn drop(&mut self) {
        self.touch();
    }
}

impl Sent {
    /// Whether its reader still follows this node: a stream is open (one is held besides the
    /// registry's), or the last one ended within [`REPLICA_TTL`] of `now_ms`.
    fn follows(self: &Arc<Self>, now_ms: u64) -> bool {
        Arc::strong_count(self) > 1
            || now_ms.saturating_sub(self.touched_ms.load(Ordering::Acquire))
                < REPLICA_TTL.as_millis() as u64
    }
}

/// What this node knows of the replicas that report to it.
pub struct ReplicaRegistry {
    seen: Mutex<HashMap<String, Seen>>,
    /// Stream reader (owner) → how far this node sent it the set.
    sent: Mutex<HashMap<String, Arc<Sent>>>,
    epoch: Instant,
}

impl Default for ReplicaRegistry {
    fn default() -> Self {
        ReplicaRegistry {
            seen: Mutex::default(),
            sent: Mutex::default(),
            epoch: Instant::now(),
        }
    }
}

impl ReplicaRegistry {
    /// Starts recording what a stream sends to `to`, which already has the set up to `from`
    /// (a `Watch` from that revision, or a snapshot taken at it). The reports of `to`'s
    /// replicas are then capped at the highest revision its streams sent, until
    /// [`REPLICA_TTL`] after its last stream ended.
    pub fn sending(&self, to: &Reporter, from: u64) -> Sending {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        if !sent.contains_key(&to.owner) && sent.len() >= MAX_REPLICAS {
            // Forget the readers that no longer follow this node.
            sent.retain(|_, s| s.follows(now_ms));
        }
        let entry = if sent.len() < MAX_REPLICAS || sent.contains_key(&to.owner) {
            sent.entry(to.owner.clone()).or_default().clone()
        } else {
            // Too many readers to remember: this stream goes unrecorded, so its reader's
            // reports are not counted by receipts (the safe side).
            tracing::warn!(reader = %to.owner, "replicas: too many stream readers tracked; this one's reports will not count towards receipts");
            Arc::default()
        };
        let sending = Sending {
            sent: entry,
            epoch: self.epoch,
        };
        sending.advance(from);
        sending
    }

    /// The highest revision this node sent `owner`, if it reads the set from this node (a
    /// stream is open, or one ended within [`REPLICA_TTL`]).
    fn sent_to(&self, owner: &str) -> Option<u64> {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        let sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let s = sent.get(owner)?;
        s.follows(now_ms)
            .then(|| s.revision.load(Ordering::Acquire))
    }

    /// Records a heartbeat from `by`, whose revision is taken as at most `commit`. An empty
    /// id is a probe from a client without a replica: it is checked but not recorded.
    pub fn report(
        &self,
        id: &str,
        description: &str,
        applied: u64,
        commit: u64,
        by: &Reporter,
    ) -> Result<(), Error> {
        check_bounds(id, description)?;
        if id.is_empty() {
            return Ok(());
        }
        // No replica has applied what is not committed, nor, if it reads from this node,
        // what this node has not sent it.
        let sent = self.sent_to(&by.owner);
        let follows = sent.is_some();
        let applied = applied.min(commit).min(sent.unwrap_or(u64::MAX));
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = seen.get_mut(id) {
            if s.owner == by.owner {
                // Reports can arrive out of order (a periodic probe and a progress report):
                // keep the highest revision of those checked the same way.
                s.applied = if s.follows == follows {
                    s.applied.max(applied)
                } else {
                    applied
                };
                s.follows = follows;
                s.at = now;
                if s.description != description {
                    s.description = description.to_owned();
                }
                return Ok(());
            }
            if now.duration_since(s.at) < REBIND_AFTER {
                return Err(Error::ReplicaIdTaken {
                    id: id.to_owned(),
                    free_after: REBIND_AFTER,
                });
            }
            // The owner went silent: the id starts over for its new owner.
            seen.remove(id);
        }
        admit_new_id(&mut seen, &by.quota, now)?;
        seen.insert(
            id.to_owned(),
            Seen {
                description: description.to_owned(),
                applied,
                follows,
                at: now,
                owner: by.owner.clone(),
                quota: by.quota.clone(),
            },
        );
        Ok(())
    }

    /// The replicas heard from within [`REPLICA_TTL`], sorted by id, with their lag behind
    /// `commit`. Forgets the others.
    pub fn list(&self, commit: u64) -> Vec<pb::ReplicaInfo> {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, s| now.duration_since(s.at) < REPLICA_TTL);
        let mut out: Vec<pb::ReplicaInfo> = seen
            .iter()
            .map(|(id, s)| pb::ReplicaInfo {
                replica_id: id.clone(),
                description: s.description.clone(),
                applied_revision: s.applied,
                lag: commit.saturating_sub(s.applied),
                last_seen_ms: now.duration_since(s.at).as_millis() as u64,
                follows_this_node: s.follows,
            })
            .collect();
        out.sort_by(|a, b| a.replica_id.cmp(&b.replica_id));
        out
    }
}

/// Refuses a report whose id or description is longer than the wire allows.
fn check_bounds(id: &str, description: &str) -> Result<(), Error> {
    if id.len() > MAX_REPLICA_ID_LEN {
        return Err(Error::TooLong {
            field: "replica_id",
            max: MAX_REPLICA_ID_LEN,
            len: id.len(),
        });
    }
    if description.len() > MAX_DESCRIPTION_LEN {
        return Err(Error::TooLong {
            field: "description",
            max: MAX_DESCRIPTION_LEN,
            len: description.len(),
        });
    }
    Ok(())
}

/// Whether a client may register one more replica id: within its own quota, and within the
/// registry's bound once the ids not heard from for the TTL are dropped.
fn admit_new_id(seen: &mut HashMap<String, Seen>, quota: &str, now: Instant) -> Result<(), Error> {
    let held = seen
        .values()
        .filter(|s| s.quota == quota && now.duration_since(s.at) < REPLICA_TTL)
        .count();
    if held >= MAX_REPLICAS_PER_CLIENT {
        return Err(Error::TooManyReplicasFrom {
            client: quota.to_owned(),
            max: MAX_REPLICAS_PER_CLIENT,
            ttl: REPLICA_TTL,
        });
    }
    if seen.len() >= MAX_REPLICAS {
        seen.retain(|_, s| now.duration_since(s.at) < REPLICA_TTL);
        if seen.len() >= MAX_REPLICAS {
            return Err(Error::TooManyReplicas(MAX_REPLICAS));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by(owner: &str) -> Reporter {
        Reporter {
            owner: format!("sub:{owner}"),
            quota: format!("sub:{owner}"),
        }
    }

    #[test]
    fn keeps_the_highest_revision_and_computes_lag() {
        let r = ReplicaRegistry::default();
        r.report("a", "host-a", 10, 100, &by("a")).unwrap();
        r.report("a", "host-a", 7, 100, &by("a")).unwrap();
        r.report("b", "", 3, 100, &by("b")).unwrap();
        let l = r.list(12);
        assert_eq!(l.len(), 2);
        assert_eq!(
            (l[0].replica_id.as_str(), l[0].applied_revision, l[0].lag),
            ("a", 10, 2)
        );
        assert_eq!((l[1].replica_id.as_str(), l[1].lag), ("b", 9));
    }

    #[test]
    fn rejects_bad_ids() {
        let r = ReplicaRegistry::default();
        r.report("", "", 1, 1, &by("a")).unwrap();
        assert!(r.list(1).is_empty(), "a probe is not a replica");
        let long = "x".repeat(MAX_REPLICA_ID_LEN + 1);
        assert!(matches!(
            r.report(&long, "", 1, 1, &by("a")),
            Err(Error::TooLong { .. })
        ));
        let desc = "d".repeat(MAX_DESCRIPTION_LEN + 1);
        assert!(matches!(
            r.report("a", &desc, 1, 1, &by("a")),
            Err(Error::TooLong { .. })
        ));
    }

    #[test]
    fn reports_cannot_lie_about_progress_or_take_another_replicas_id() {
        let r = ReplicaRegistry::default();
        r.report("real", "", 40, 50, &by("validator")).unwrap();
        // Nobody has applied what is not committed.
        r.report("real", "", u64::MAX, 50, &by("validator"))
            .unwrap();
        assert_eq!(r.list(50)[0].applied_revision, 50);
        // Another client cannot report for a live replica.
        let e = r.report("real", "", 50, 60, &by("mallory")).unwrap_err();
        assert!(
            matches!(&e, Error::ReplicaIdTaken { id, .. } if id == "real"),
            "{e}"
        );
        assert_eq!(r.list(60)[0].applied_revision, 50);
    }

    #[test]
    fn one_client_cannot_fill_the_registry() {
        let r = ReplicaRegistry::default();
        for i in 0..MAX_REPLICAS_PER_CLIENT {
            r.report(&format!("fake-{i}"), "", 1, 1, &by("mallory"))
                .unwrap();
        }
        let e = r.report("one-more", "", 1, 1, &by("mallory")).unwrap_err();
        assert!(matches!(e, Error::TooManyReplicasFrom { .. }), "{e}");
        r.report("honest", "", 1, 1, &by("validator")).unwrap();
        assert_eq!(r.list(1).len(), MAX_REPLICAS_PER_CLIENT + 1);
    }

    #[test]
    fn a_reader_cannot_report_beyond_what_this_node_sent_it() {
        let r = ReplicaRegistry::default();
        let reader = by("validator");
        let watch = r.sending(&reader, 10);
        watch.advance(12);
        // Committed up to 50, but this node sent the reader only 12.
        r.report("v-1", "", u64::MAX, 50, &reader).unwrap();
        let l = r.list(50);
        assert_eq!((l[0].applied_revision, l[0].follows_this_node), (12, true));
        watch.advance(40);
        r.report("v-1", "", 40, 50, &reader).unwrap();
        assert_eq!(r.list(50)[0].applied_revision, 40);
        // A client that reads from another node is listed, but not as following this one:
        // receipts do not count its report.
        r.report("elsewhere", "", 45, 50, &by("other")).unwrap();
        let e = r.list(50).into_iter().find(|i| i.replica_id == "elsewhere");
        assert_eq!(
            e.map(|i| (i.applied_revision, i.follows_this_node)),
            Some((45, false))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_whose_streams_ended_stops_following_after_the_ttl() {
        let r = ReplicaRegistry::default();
        let reader = by("validator");
        let idle = r.sending(&reader, 7);
        // A stream that sent nothing for a long while still counts from its end.
        tokio::time::advance(REPLICA_TTL * 2).await;
        drop(idle);
        r.report("v", "", 9, 9, &reader).unwrap();
        assert_eq!(
            r.list(9)[0].applied_revision,
            7,
            "capped for the TTL after the stream"
        );
        tokio::time::advance(REPLICA_TTL).await;
        r.report("v", "", 9, 9, &reader).unwrap();
        let l = r.list(9);
        assert_eq!((l[0].applied_revision, l[0].follows_this_node), (9, false));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_owners_id_can_be_taken_over() {
        let r = ReplicaRegistry::default();
        r.report("moved", "", 5, 9, &by("old")).unwrap();
        tokio::time::advance(REBIND_AFTER).await;
        r.report("moved", "", 1, 9, &by("new")).unwrap();
        assert_eq!(
            r.list(9)[0].applied_revision,
            1,
            "starts over for its new owner"
        );
    }
}
