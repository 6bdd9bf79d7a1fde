//! The validator replicas that send heartbeats to this node: what each one last reported, for
//! `Status` and the metrics. Not replicated: each node knows the replicas that talk to it, and a
//! replica heartbeats every node.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

// The runtime's clock (the simulated one under simulation): ages here reach Status replies.
use tokio::time::Instant;

use revokd_proto::v1 as pb;

use crate::api::error::ApiError;

/// A replica not heard from for this long is no longer listed.
pub const REPLICA_TTL: Duration = Duration::from_secs(30);
/// At most this many replicas are tracked; reports from new replicas beyond it are refused.
pub const MAX_REPLICAS: usize = 10_000;
/// The longest replica id accepted.
pub const MAX_REPLICA_ID_LEN: usize = 128;
/// The longest replica description accepted.
pub const MAX_DESCRIPTION_LEN: usize = 256;

struct Seen {
    description: String,
    applied: u64,
    at: Instant,
}

/// What this node knows of the replicas that report to it.
#[derive(Default)]
pub struct ReplicaRegistry {
    seen: Mutex<HashMap<String, Seen>>,
}

impl ReplicaRegistry {
    /// Records a heartbeat. An empty id is a probe from a client without a replica: it is
    /// checked but not recorded.
    pub fn report(&self, id: &str, description: &str, applied: u64) -> Result<(), ApiError> {
        if id.len() > MAX_REPLICA_ID_LEN {
            return Err(ApiError::Invalid(format!(
                "replica_id must be at most {MAX_REPLICA_ID_LEN} bytes, got {}",
                id.len()
            )));
        }
        if description.len() > MAX_DESCRIPTION_LEN {
            return Err(ApiError::Invalid(format!(
                "description must be at most {MAX_DESCRIPTION_LEN} bytes, got {}",
                description.len()
            )));
        }
        if id.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = seen.get_mut(id) {
            // Reports can arrive out of order (a periodic probe and a progress report): keep
            // the highest revision.
            s.applied = s.applied.max(applied);
            s.at = now;
            if s.description != description {
                s.description = description.to_owned();
            }
            return Ok(());
        }
        if seen.len() >= MAX_REPLICAS {
            seen.retain(|_, s| now.duration_since(s.at) < REPLICA_TTL);
            if seen.len() >= MAX_REPLICAS {
                return Err(ApiError::Overloaded(format!(
                    "this node already tracks {MAX_REPLICAS} replicas; retry later"
                )));
            }
        }
        seen.insert(
            id.to_owned(),
            Seen {
                description: description.to_owned(),
                applied,
                at: now,
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
            })
            .collect();
        out.sort_by(|a, b| a.replica_id.cmp(&b.replica_id));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_highest_revision_and_computes_lag() {
        let r = ReplicaRegistry::default();
        r.report("a", "host-a", 10).unwrap();
        r.report("a", "host-a", 7).unwrap();
        r.report("b", "", 3).unwrap();
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
        r.report("", "", 1).unwrap();
        assert!(r.list(1).is_empty(), "a probe is not a replica");
        let long = "x".repeat(MAX_REPLICA_ID_LEN + 1);
        assert!(matches!(r.report(&long, "", 1), Err(ApiError::Invalid(_))));
        let desc = "d".repeat(MAX_DESCRIPTION_LEN + 1);
        assert!(matches!(r.report("a", &desc, 1), Err(ApiError::Invalid(_))));
    }
}
