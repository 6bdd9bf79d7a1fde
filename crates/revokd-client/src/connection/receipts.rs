//! Revocation receipts: which connected replicas have a revision in force.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;

use super::*;

/// How many replicas a receipt waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaQuorum {
    /// At least this many connected replicas.
    AtLeast(usize),
    /// Every connected replica.
    All,
}

/// Which connected replicas applied a revision within a time bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The revision waited for.
    pub revision: u64,
    /// Replicas (by id) that have applied it.
    pub applied: Vec<String>,
    /// Connected replicas that had not, with the revision they had reached.
    pub pending: Vec<(String, u64)>,
    /// Whether the requested number of replicas applied it in time.
    pub complete: bool,
    /// How long the wait took.
    pub waited: Duration,
}

/// A write with its receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptedWrite {
    /// The write.
    pub write: WriteResult,
    /// Which replicas have it in force.
    pub receipt: Receipt,
}

/// A replica counts for a receipt while its last report is at most three heartbeat intervals
/// old, and never less than this: one late report does not drop a live replica.
const MIN_CONNECTED: Duration = Duration::from_secs(3);
/// How often a receipt asks the nodes again: replicas report within milliseconds of applying,
/// so a short poll keeps the receipt's latency close to the replicas' own.
const POLL_EVERY: Duration = Duration::from_millis(5);

impl Client {
    /// Revokes a token and then waits, up to `within`, until `want` connected replicas have
    /// applied it: the answer says which did, so an admin knows where the revocation is in
    /// force, not only that it is committed.
    pub async fn revoke_with_receipt(
        &self,
        token: Revoke,
        want: ReplicaQuorum,
        within: Duration,
    ) -> Result<ReceiptedWrite, Error> {
        let write = self.revoke(token).await?;
        let receipt = self
            .wait_for_replicas(write.committed_revision, want, within)
            .await;
        Ok(ReceiptedWrite { write, receipt })
    }

    /// Waits up to `within` until `want` connected replicas (those the node they follow heard
    /// from in the last three heartbeat intervals) report `revision` applied.
    pub async fn wait_for_replicas(
        &self,
        revision: u64,
        want: ReplicaQuorum,
        within: Duration,
    ) -> Receipt {
        let started = Instant::now();
        let deadline = started + within;
        let connected_ms = (self.inner.config.heartbeat_interval * 3)
            .max(MIN_CONNECTED)
            .as_millis() as u64;
        loop {
            // Merge every node's view: a replica reports promptly to the node it follows
            // (watches) and on every interval to all, but only the node it follows can check
            // a report against what it sent the replica, so only those reports count.
            let mut seen: BTreeMap<String, u64> = BTreeMap::new();
            for (_, status) in self.statuses_pb().await {
                let Ok(status) = status else { continue };
                for r in status.replicas {
                    if r.follows_this_node && r.last_seen_ms <= connected_ms {
                        let e = seen.entry(r.replica_id).or_default();
                        *e = (*e).max(r.applied_revision);
                    }
                }
            }
            let (applied, pending): (Vec<_>, Vec<_>) =
                seen.into_iter().partition(|(_, rev)| *rev >= revision);
            let needed = match want {
                ReplicaQuorum::AtLeast(n) => n,
                ReplicaQuorum::All => applied.len() + pending.len(),
            };
            let complete = applied.len() >= needed;
            if complete || Instant::now() >= deadline {
                return Receipt {
                    revision,
                    applied: applied.into_iter().map(|(id, _)| id).collect(),
                    pending,
                    complete,
                    waited: started.elapsed(),
                };
            }
            tokio::time::sleep_until((Instant::now() + POLL_EVERY).min(deadline)).await;
        }
    }
}
