//! The invariants checked at the end of every scenario, on the history and on the final
//! state of every node and replica (read directly, through no link). A failure names the
//! entry and the fault that preceded it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use revokd_client::{pb, Replica};
use revokd_proto::v1::revocation_client::RevocationClient;
use revokd_testkit::eventually;
use serde::Serialize;

use crate::cluster::Deployment;
use crate::history::{Ack, History};

/// Most failures listed per invariant (the count is always exact).
const LISTED: usize = 10;

/// One invariant's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// The invariant, in words.
    pub invariant: String,
    /// Whether it held.
    pub held: bool,
    /// How many entries broke it.
    pub violations: usize,
    /// The first few violations, each naming the entry and the fault before it.
    pub examples: Vec<String>,
}

/// Every invariant's outcome.
pub type Verdicts = Vec<Verdict>;

fn verdict(invariant: &str, failures: Vec<String>) -> Verdict {
    Verdict {
        invariant: invariant.into(),
        held: failures.is_empty(),
        violations: failures.len(),
        examples: failures.into_iter().take(LISTED).collect(),
    }
}

/// A node's whole set, read with `Snapshot` at a revision no older than `min_revision`.
async fn node_set(
    addr: &str,
    min_revision: u64,
    tls_ca: Option<&[u8]>,
) -> Result<(u64, HashSet<String>)> {
    let mut req = tonic::Request::new(pb::SnapshotRequest {
        chunk_size: 10_000,
        min_revision,
    });
    req.set_timeout(Duration::from_secs(20));
    let mut stream = RevocationClient::new(crate::cluster::node_channel(addr, tls_ca)?)
        .max_decoding_message_size(64 << 20)
        .snapshot(req)
        .await?
        .into_inner();
    let mut ids = HashSet::new();
    let mut revision = 0;
    while let Some(chunk) = stream.message().await? {
        revision = chunk.revision;
        ids.extend(chunk.tokens.into_iter().map(|t| t.jti));
        if chunk.last {
            return Ok((revision, ids));
        }
    }
    bail!("{addr}: snapshot stream ended before its last chunk (revision {revision})")
}

/// Checks every invariant. Nodes must be running and healed.
pub async fn check_invariants(
    dep: &Deployment,
    history: &History,
    replicas: &[(String, Arc<Replica>)],
) -> Verdicts {
    let (acks, attempted, stale_reads, phantoms) = history.with(|r| {
        (
            r.acks.clone(),
            r.attempted.clone(),
            r.stale_reads.clone(),
            r.phantom_reads.clone(),
        )
    });
    let mut out = Vec::new();
    let (sets, unreadable) = node_sets(dep).await;
    out.push(verdict(
        "every node serves its whole set after healing",
        unreadable,
    ));
    out.push(verdict(
        "every acknowledged revoke is present on every node",
        lost(&acks, &sets, history),
    ));
    out.push(verdict(
        "nothing is present that no writer asked for",
        extra(&sets, &attempted),
    ));
    out.push(verdict("every node holds the same set", differ(&sets)));
    out.push(verdict(
        "every replica holds every acknowledged revoke and equals the cluster's set at the same revision",
        replica_failures(dep, replicas, &acks, history).await,
    ));
    out.push(verdict(
        "a linearizable check started after a revoke was acknowledged never says \"not revoked\"",
        stale_reads
            .iter()
            .map(|s| {
                format!(
                    "{} acknowledged at {:.1} s, checked at {:.1} s: not revoked at revision {}; last fault before: {}",
                    s.jti,
                    s.ack_ms / 1000.0,
                    s.check_ms / 1000.0,
                    s.revision,
                    history.fault_before(s.check_ms)
                )
            })
            .collect(),
    ));
    out.push(verdict(
        "a check of an id nobody wrote never says \"revoked\"",
        phantoms,
    ));
    out
}

/// Each node's final set and its revision, by node id.
type Sets = BTreeMap<u64, (u64, HashSet<String>)>;

/// Every node's final set, once every node has applied what the leader committed; and the
/// nodes that could not be read.
async fn node_sets(dep: &Deployment) -> (Sets, Vec<String>) {
    let mut sets = Sets::new();
    let mut unreadable = Vec::new();
    let commit = match dep.wait_leader(Duration::from_secs(30)).await {
        Ok(l) => dep
            .status(l, Duration::from_secs(2))
            .await
            .map(|s| s.commit_revision)
            .unwrap_or(0),
        Err(_) => 0,
    };
    for n in dep.nodes.values() {
        let read = eventually(Duration::from_secs(30), || {
            node_set(&n.addr, commit, dep.tls_ca.as_deref())
        })
        .await;
        match read {
            Ok(s) => {
                sets.insert(n.spec.id, s);
            }
            Err(e) => unreadable.push(format!("node {}: {e:#}", n.spec.id)),
        }
    }
    (sets, unreadable)
}

/// Acknowledged revokes missing on a node.
fn lost(acks: &[Ack], sets: &Sets, history: &History) -> Vec<String> {
    let mut lost = Vec::new();
    for a in acks {
        for (id, (rev, set)) in sets {
            if !set.contains(&a.jti) {
                lost.push(format!(
                    "{} (acknowledged at {:.1} s, revision {}) missing on node {id} at revision {rev}; last fault before: {}",
                    a.jti,
                    a.ack_ms / 1000.0,
                    a.revision,
                    history.fault_before(a.ack_ms)
                ));
            }
        }
    }
    lost
}

/// Ids on a node that no writer asked for.
fn extra(sets: &Sets, attempted: &HashSet<String>) -> Vec<String> {
    let mut extra = Vec::new();
    for (id, (_, set)) in sets {
        for jti in set {
            if !attempted.contains(jti) {
                extra.push(format!(
                    "{jti} present on node {id} but no writer asked for it"
                ));
            }
        }
    }
    extra
}

/// Nodes whose set differs from the first node's.
fn differ(sets: &Sets) -> Vec<String> {
    let mut differ = Vec::new();
    if let Some((first, (rev0, set0))) = sets.iter().next() {
        for (id, (rev, set)) in sets {
            if set != set0 {
                differ.push(format!(
                    "node {id} (revision {rev}, {} ids) differs from node {first} (revision {rev0}, {} ids)",
                    set.len(),
                    set0.len()
                ));
            }
        }
    }
    differ
}

/// Replicas: the same set as a node at the same revision, and every acknowledged write.
async fn replica_failures(
    dep: &Deployment,
    replicas: &[(String, Arc<Replica>)],
    acks: &[Ack],
    history: &History,
) -> Vec<String> {
    let mut failures = Vec::new();
    for (region, rep) in replicas {
        if let Err(e) = replica_matches(dep, rep).await {
            failures.push(format!("replica {} in {region}: {e:#}", rep.id()));
        }
        for a in acks {
            if rep.get(&a.jti).is_none() {
                failures.push(format!(
                    "{} (acknowledged at {:.1} s) missing in replica {} in {region}; last fault before: {}",
                    a.jti,
                    a.ack_ms / 1000.0,
                    rep.id(),
                    history.fault_before(a.ack_ms)
                ));
            }
        }
    }
    failures
}

/// Waits until the replica and a node agree on a revision, then compares their sets.
async fn replica_matches(dep: &Deployment, rep: &Replica) -> Result<()> {
    let addr = dep
        .nodes
        .values()
        .next()
        .map(|n| n.addr.clone())
        .ok_or_else(|| anyhow!("no nodes"))?;
    eventually(Duration::from_secs(30), || async {
        let (revision, set) = node_set(&addr, 0, dep.tls_ca.as_deref()).await?;
        if !rep
            .wait_for_revision(revision, Duration::from_secs(10))
            .await
        {
            bail!("stuck at revision {} below {revision}", rep.revision());
        }
        if rep.revision() != revision {
            // The cluster moved on (a purge); compare again at a common revision.
            bail!(
                "at revision {} while the node is at {revision}",
                rep.revision()
            );
        }
        if rep.len() != set.len() {
            bail!(
                "{} ids at revision {revision}, the cluster {}",
                rep.len(),
                set.len()
            );
        }
        if let Some(missing) = set.iter().find(|j| rep.get(j).is_none()) {
            bail!("{missing} missing at revision {revision}");
        }
        Ok(())
    })
    .await
}
