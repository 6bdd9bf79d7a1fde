//! The client crate's local replica against real nodes: propagation to independent replicas,
//! equality with the cluster's set, resuming after the watched node dies, re-bootstrapping
//! past the watch window, and the staleness policy when every node is unreachable.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use revokd_client::{
    pb, Client, ClientConfig, Replica, ReplicaConfig, ReplicaQuorum, Revoke, RevokedBy, RuleKind,
    StalenessPolicy, TokenQuery, Verdict, WriteOutcome,
};
use revokd_e2e::{client, now, replica};
use revokd_testkit::{eventually, ClusterOptions, ProcessCluster};

const WAIT: Duration = Duration::from_secs(15);

/// Takes a snapshot from `addr` and checks that the replica holds exactly the same token ids
/// (with the same expiry and reason) and rules at the same revision.
async fn assert_same_set(
    cluster: &ProcessCluster,
    id: u64,
    replica: &revokd_client::Replica,
) -> Result<()> {
    eventually(WAIT, || async {
        let mut stream = cluster
            .revocation(id)?
            .max_decoding_message_size(64 << 20)
            .snapshot(pb::SnapshotRequest {
                chunk_size: 1000,
                min_revision: 0,
            })
            .await?
            .into_inner();
        let mut tokens = Vec::new();
        let mut rules = Vec::new();
        let mut revision = 0;
        while let Some(chunk) = stream.message().await? {
            revision = chunk.revision;
            tokens.extend(chunk.tokens);
            rules.extend(chunk.rules);
            if chunk.last {
                break;
            }
        }
        ensure!(
            replica.wait_for_revision(revision, WAIT).await,
            "replica stuck at {} below {revision}",
            replica.revision()
        );
        if replica.revision() != revision {
            // The cluster moved on (a purge); compare again at a common revision.
            bail!(
                "replica at {} and snapshot at {revision}",
                replica.revision()
            );
        }
        ensure!(
            replica.len() == tokens.len(),
            "replica holds {} ids, cluster {} at revision {revision}",
            replica.len(),
            tokens.len()
        );
        for t in &tokens {
            let local = replica
                .get(&t.jti)
                .with_context(|| format!("{} missing from the replica", t.jti))?;
            ensure!(
                local.expires_at == t.expires_at && *local.reason == *t.reason,
                "{} differs: {local:?}",
                t.jti
            );
        }
        let mut want: Vec<(i32, String, i64, i64, String)> = rules
            .iter()
            .map(|r| {
                (
                    r.kind,
                    r.value.clone(),
                    r.not_before,
                    r.drop_at,
                    r.reason.clone(),
                )
            })
            .collect();
        want.sort();
        let mut have: Vec<(i32, String, i64, i64, String)> = replica
            .rules()
            .iter()
            .map(|r| {
                let kind = revokd_proto::convert::rule_kind_pb(r.kind) as i32;
                (
                    kind,
                    r.value.to_string(),
                    r.not_before,
                    r.drop_at,
                    r.reason.to_string(),
                )
            })
            .collect();
        have.sort();
        ensure!(
            want == have,
            "rules differ: cluster {want:?}, replica {have:?}"
        );
        Ok(())
    })
    .await
}

/// The id of the live node listening at `addr`.
fn node_at(cluster: &ProcessCluster, addr: &str) -> Result<u64> {
    cluster
        .live()
        .into_iter()
        .find(|id| cluster.addr(*id).ok().as_deref() == Some(addr))
        .with_context(|| format!("{addr} is not one of our live nodes"))
}

#[tokio::test]
async fn two_replicas_see_an_acknowledged_revoke_with_a_receipt() -> Result<()> {
    let cluster = ProcessCluster::start(3).await?;
    cluster.wait_leader(WAIT).await?;
    let a = replica(&cluster.endpoints(), "replica-a").await?;
    let b = replica(&cluster.endpoints()[2..], "replica-b").await?;
    let admin = client(&cluster.endpoints()[..1]).await?;

    let r = admin
        .revoke_with_receipt(
            Revoke::new("stolen-1", now() + 3600).reason("stolen laptop"),
            ReplicaQuorum::All,
            Duration::from_secs(5),
        )
        .await?;
    assert_eq!(r.write.outcome, WriteOutcome::Applied);
    assert!(r.receipt.complete, "receipt: {:?}", r.receipt);
    let ids: BTreeSet<&str> = r.receipt.applied.iter().map(String::as_str).collect();
    assert!(
        ids.contains("replica-a") && ids.contains("replica-b"),
        "receipt names both replicas: {:?}",
        r.receipt
    );
    // The receipt means the revocation is in force locally, with no further waiting.
    for rep in [&a, &b] {
        assert!(rep.revision() >= r.write.committed_revision);
        assert!(rep.is_revoked("stolen-1"));
        match rep.check(&TokenQuery {
            jti: "stolen-1",
            ..TokenQuery::default()
        }) {
            Verdict::Revoked(rev) => {
                assert_eq!(rev.by, RevokedBy::Jti);
                assert_eq!(&*rev.reason, "stolen laptop");
            }
            other => panic!("expected revoked, got {other:?}"),
        }
        assert!(!rep.is_revoked("never-revoked"));
    }

    // Retrying the same revoke creates no second event.
    let again = admin
        .revoke(Revoke::new("stolen-1", now() + 3600).reason("stolen laptop"))
        .await?;
    assert_eq!(again.outcome, WriteOutcome::AlreadyPresent);
    assert_eq!(again.revision, r.write.revision);

    // Operators see every replica and its lag in each node's status.
    let status = cluster.status(1).await?;
    let listed: BTreeSet<&str> = status
        .replicas
        .iter()
        .map(|r| r.replica_id.as_str())
        .collect();
    assert!(
        listed.contains("replica-a") && listed.contains("replica-b"),
        "{listed:?}"
    );

    // A receipt for more replicas than exist is honest about it.
    let short = admin
        .wait_for_replicas(
            r.write.committed_revision,
            ReplicaQuorum::AtLeast(3),
            Duration::from_millis(300),
        )
        .await;
    assert!(!short.complete);
    assert_eq!(short.applied.len(), 2);
    Ok(())
}

#[tokio::test]
async fn replica_equals_the_cluster_after_revokes_unrevokes_rules_and_purges() -> Result<()> {
    let cluster =
        ProcessCluster::start_with(3, ClusterOptions::args(["--purge-interval-secs", "1"])).await?;
    cluster.wait_leader(WAIT).await?;
    let rep = replica(&cluster.endpoints(), "replica-eq").await?;
    let admin = client(&cluster.endpoints()).await?;

    let batch: Vec<Revoke> = (0..500)
        .map(|i| Revoke::new(format!("batch-{i}"), now() + 3600).reason(format!("r{}", i % 7)))
        .collect();
    admin.revoke_many(&batch).await?;
    for i in 0..50 {
        admin
            .revoke(Revoke::new(format!("single-{i}"), now() + 3600).subject("bob"))
            .await?;
    }
    for i in 0..20 {
        assert_eq!(
            admin.unrevoke(&format!("batch-{i}")).await?.outcome,
            WriteOutcome::Applied
        );
    }
    // Short-lived entries: they stop counting at their expiry and are then purged.
    for i in 0..10 {
        admin
            .revoke(Revoke::new(format!("short-{i}"), now() + 2))
            .await?;
    }
    admin
        .revoke_rule(
            RuleKind::Subject,
            "alice",
            Some(now()),
            "log out everywhere",
        )
        .await?;
    admin
        .revoke_rule(RuleKind::Client, "app-1", None, "client compromised")
        .await?;
    admin
        .revoke_rule(RuleKind::Issuer, "old-idp", None, "retired")
        .await?;
    admin.remove_rule(RuleKind::Issuer, "old-idp").await?;
    assert_same_set(&cluster, 1, &rep).await?;

    // Rules apply locally with the node's semantics.
    let issued_before = TokenQuery {
        jti: "fresh-token",
        sub: Some("alice"),
        iat: Some(now() - 100),
        ..TokenQuery::default()
    };
    assert!(matches!(
        rep.check(&issued_before),
        Verdict::Revoked(revokd_client::Revocation {
            by: RevokedBy::Rule {
                kind: RuleKind::Subject,
                ..
            },
            ..
        })
    ));
    let issued_after = TokenQuery {
        iat: Some(now() + 5),
        ..issued_before
    };
    assert!(matches!(
        rep.check(&issued_after),
        Verdict::Allowed { stale: None }
    ));

    // Expired entries stop counting at once, purged or not.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    for i in 0..10 {
        assert!(!rep.is_revoked(&format!("short-{i}")));
    }
    // After the purge (every second) they are gone on the nodes and in the replica alike.
    eventually(WAIT, || async {
        let left = (0..10)
            .filter(|i| rep.get(&format!("short-{i}")).is_some())
            .count();
        ensure!(left == 0, "{left} not purged yet");
        Ok(())
    })
    .await?;
    assert_same_set(&cluster, 2, &rep).await?;
    assert_eq!(rep.len(), 500 - 20 + 50);
    Ok(())
}

#[tokio::test]
async fn replica_resumes_on_another_node_when_its_node_is_killed() -> Result<()> {
    let mut cluster = ProcessCluster::start(3).await?;
    cluster.wait_leader(WAIT).await?;
    let rep = replica(&cluster.endpoints(), "replica-kill").await?;
    let admin = client(&cluster.endpoints()).await?;
    let mut jtis = Vec::new();
    for i in 0..30 {
        let jti = format!("before-{i}");
        admin.revoke(Revoke::new(&jti, now() + 3600)).await?;
        jtis.push(jti);
    }
    let watched = rep.watching().context("replica watches a node")?;
    let victim = node_at(&cluster, &watched)?;
    cluster.kill(victim)?;
    // Keep revoking while the replica moves.
    let mut last = 0;
    for i in 0..60 {
        let jti = format!("after-{i}");
        last = admin
            .revoke(Revoke::new(&jti, now() + 3600))
            .await?
            .committed_revision;
        jtis.push(jti);
    }
    assert!(rep.wait_for_revision(last, WAIT).await, "replica caught up");
    let missing: Vec<&String> = jtis.iter().filter(|j| !rep.is_revoked(j)).collect();
    assert!(missing.is_empty(), "missed after failover: {missing:?}");
    assert_eq!(rep.len(), jtis.len());
    assert_ne!(rep.watching().as_deref(), Some(watched.as_str()));
    assert!(rep.metrics().resumes.get() >= 1);
    assert_eq!(
        rep.metrics().bootstraps.get(),
        1,
        "resumed from its revision, no second snapshot"
    );
    let survivor = cluster.live()[0];
    assert_same_set(&cluster, survivor, &rep).await?;
    Ok(())
}

#[tokio::test]
async fn replica_bootstraps_again_when_the_watch_window_has_passed() -> Result<()> {
    let mut cluster =
        ProcessCluster::start_with(3, ClusterOptions::args(["--watch-window", "5"])).await?;
    cluster.wait_leader(WAIT).await?;
    // Heartbeats only every 3 s: the replica stays on its frozen node long enough for the
    // others to move past their window. It must watch a follower, so that freezing it does not
    // hold up the writes behind an election.
    let leader = cluster.wait_leader(WAIT).await?;
    let leader_addr = cluster.addr(leader)?;
    let mut rep = None;
    for attempt in 0..20 {
        let mut config = ClientConfig::new(cluster.endpoints());
        config.heartbeat_interval = Duration::from_secs(3);
        let r = Replica::connect(
            Client::connect(config).await?,
            ReplicaConfig {
                replica_id: format!("replica-window-{attempt}"),
                max_staleness: Duration::from_secs(30),
                ..ReplicaConfig::default()
            },
            WAIT,
        )
        .await?;
        if r.watching().is_some_and(|w| w != leader_addr) {
            rep = Some(r);
            break;
        }
    }
    let rep = rep.context("a replica watching a follower")?;
    let admin = client(&cluster.endpoints()).await?;
    let first = admin.revoke(Revoke::new("first", now() + 3600)).await?;
    assert!(rep.wait_for_revision(first.committed_revision, WAIT).await);
    let watched = rep.watching().context("replica watches a node")?;
    let victim = node_at(&cluster, &watched)?;
    // Freeze the watched node: the replica is stuck on it until its heartbeat fails, while
    // the others move far past their five-event window.
    cluster.pause(victim)?;
    let paused_at = std::time::Instant::now();
    let batch: Vec<Revoke> = (0..40)
        .map(|i| Revoke::new(format!("w-{i}"), now() + 3600))
        .collect();
    let mut last = 0;
    for chunk in batch.chunks(4) {
        last = admin
            .revoke_many(chunk)
            .await?
            .iter()
            .map(|w| w.committed_revision)
            .max()
            .unwrap_or(0);
    }
    assert!(
        paused_at.elapsed() < Duration::from_secs(2),
        "the writes finished before the replica could notice (took {:?})",
        paused_at.elapsed()
    );
    assert!(rep.wait_for_revision(last, WAIT).await, "replica caught up");
    assert!(
        rep.metrics().bootstraps.get() >= 2,
        "a resume past the window bootstraps again"
    );
    assert!(batch.iter().all(|t| rep.is_revoked(&t.jti)) && rep.is_revoked("first"));
    cluster.resume(victim)?;
    let other = cluster
        .live()
        .into_iter()
        .find(|id| *id != victim)
        .unwrap_or(1);
    assert_same_set(&cluster, other, &rep).await?;
    Ok(())
}

#[tokio::test]
async fn staleness_policy_takes_effect_when_cut_off_and_recovers() -> Result<()> {
    let mut cluster = ProcessCluster::start(3).await?;
    cluster.wait_leader(WAIT).await?;
    let rep = replica(&cluster.endpoints(), "replica-stale").await?;
    let admin = client(&cluster.endpoints()).await?;
    let known = admin.revoke(Revoke::new("known", now() + 3600)).await?;
    assert!(rep.wait_for_revision(known.committed_revision, WAIT).await);
    eventually(WAIT, || async {
        ensure!(!rep.is_stale(), "not fresh yet: {:?}", rep.staleness());
        Ok(())
    })
    .await?;
    assert!(!rep.is_revoked("unknown"));
    let probe = TokenQuery {
        jti: "unknown",
        ..TokenQuery::default()
    };

    // Cut the replica off from every node: they stop answering.
    let ids = cluster.live();
    for id in &ids {
        cluster.pause(*id)?;
    }
    eventually(WAIT, || async {
        ensure!(rep.is_stale(), "not stale yet: {:?}", rep.staleness());
        Ok(())
    })
    .await?;
    assert!(rep.staleness() > Duration::from_secs(1));
    // Fail closed (the default): every check rejects.
    assert!(rep.is_revoked("unknown"));
    assert!(matches!(rep.check(&probe), Verdict::Stale { .. }));
    // Fail open: answers come from the cache, flagged.
    rep.set_policy(StalenessPolicy::FailOpen, Duration::from_secs(1));
    assert!(!rep.is_revoked("unknown"));
    assert!(rep.is_revoked("known"));
    assert!(matches!(
        rep.check(&probe),
        Verdict::Allowed { stale: Some(_) }
    ));
    rep.set_policy(StalenessPolicy::FailClosed, Duration::from_secs(1));
    assert!(rep.metrics().stale.get() == 1);

    // Heal: the replica is current again and answers normally.
    for id in &ids {
        cluster.resume(*id)?;
    }
    eventually(WAIT, || async {
        ensure!(
            !rep.is_stale(),
            "still stale: {:?}, revision {}, lag {}, watching {:?}, nodes {:?}",
            rep.staleness(),
            rep.revision(),
            rep.lag(),
            rep.watching(),
            rep.client().node_health()
        );
        Ok(())
    })
    .await?;
    assert!(!rep.is_revoked("unknown"));
    assert!(matches!(
        rep.check(&probe),
        Verdict::Allowed { stale: None }
    ));
    assert!(rep.metrics().stale_transitions.get() >= 2);
    let w = admin
        .revoke(Revoke::new("after-heal", now() + 3600))
        .await?;
    assert!(rep.wait_for_revision(w.committed_revision, WAIT).await);
    assert!(rep.is_revoked("after-heal"));
    Ok(())
}
