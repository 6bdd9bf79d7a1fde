//! Durability across leader failure: nothing acknowledged is lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use revokd_e2e::{missing_on, revoke_anywhere};
use revokd_proto::v1 as pb;
use revokd_testkit::{eventually, ProcessCluster};
use tokio::sync::Mutex;

/// An acknowledged revoke: its id, revision, when it was sent and when it was acknowledged.
#[derive(Clone)]
struct Ack {
    jti: String,
    revision: u64,
    sent: Instant,
    acked: Instant,
}

/// Several clients revoke continuously; the leader is `kill -9`ed mid-stream and restarted.
/// Every revoke that was acknowledged must be on all three nodes afterwards.
#[tokio::test]
async fn kill_leader_during_revokes_loses_nothing() -> Result<()> {
    let mut c = ProcessCluster::start(3).await?;
    let endpoints = c.endpoints();
    let acked: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut writers = Vec::new();
    for w in 0..4 {
        let (endpoints, acked, stop) = (endpoints.clone(), acked.clone(), stop.clone());
        // Each writer starts on a different node, so some writes go through followers.
        let mut endpoints = endpoints;
        endpoints.rotate_left(w % 3);
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let jti = format!("w{w}-{i}");
                let sent = Instant::now();
                tokio::select! {
                    r = revoke_anywhere(&endpoints, &jti, Duration::from_secs(10)) => {
                        if let Ok(resp) = r {
                            acked.lock().await.push(Ack { jti, revision: resp.revision, sent, acked: Instant::now() });
                        }
                    }
                    _ = stop.notified() => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = c.wait_leader(Duration::from_secs(5)).await?;
    let before = acked.lock().await.len();
    let killed_at = Instant::now();
    c.kill(leader)?;
    let new_leader = c.wait_leader(Duration::from_secs(10)).await?;
    assert_ne!(new_leader, leader);
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.restart(leader)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.notify_waiters();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().await.clone();
    // Failover: from the kill to the first acknowledgement of a revoke sent after it.
    let failover = acked
        .iter()
        .filter(|a| a.sent > killed_at)
        .map(|a| a.acked.duration_since(killed_at))
        .min();
    println!(
        "acknowledged {} revokes ({} before the kill); failover after killing leader {leader}: {failover:?}",
        acked.len(),
        before
    );
    assert!(
        acked.len() > before,
        "writes must continue after the leader is killed"
    );
    let max_rev = acked.iter().map(|a| a.revision).max().unwrap_or(0);
    let jtis: Vec<String> = acked.into_iter().map(|a| a.jti).collect();
    c.wait_leader(Duration::from_secs(10)).await?;
    for id in [1, 2, 3] {
        let addr = c.addr(id)?;
        let missing = eventually(Duration::from_secs(15), || async {
            let m = missing_on(&addr, &jtis, pb::Consistency::Local, max_rev).await?;
            anyhow::ensure!(
                m.is_empty(),
                "node {id} is missing {} acknowledged revokes, e.g. {:?}",
                m.len(),
                &m[..m.len().min(5)]
            );
            Ok(m)
        })
        .await;
        if let Err(e) = missing {
            panic!("{e:#}\nnode {id} log:\n{}", c.log_tail(id, 30));
        }
    }
    Ok(())
}

/// Without a quorum a write fails within its deadline with a status that says why, instead
/// of hanging; once the quorum is back, writes go through again.
#[tokio::test]
async fn without_quorum_writes_fail_in_time_then_recover() -> Result<()> {
    let mut c = ProcessCluster::start(3).await?;
    c.kill(2)?;
    c.kill(3)?;
    let mut api = c.revocation(1)?;
    let mut req = tonic::Request::new(revokd_e2e::revoke_req("no-quorum"));
    req.set_timeout(Duration::from_secs(1));
    let started = Instant::now();
    let err = match api.revoke(req).await {
        Ok(w) => panic!("no quorum, yet the write was acknowledged: {w:?}"),
        Err(e) => e,
    };
    // Node 1's own explanation is expected; anything else, look at what node 1 was doing.
    if !err.message().starts_with("revokd: ") {
        panic!("{err}\nnode 1 log:\n{}", c.log_tail(1, 40));
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered within the deadline"
    );
    assert!(
        matches!(
            err.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
        ),
        "{err}"
    );
    assert!(err.message().starts_with("revokd: "), "{err}");
    c.restart(2)?;
    c.restart(3)?;
    c.wait_leader(Duration::from_secs(20)).await?;
    let ok = revoke_anywhere(&c.endpoints(), "quorum-back", Duration::from_secs(10)).await?;
    assert!(ok.revision > 0);
    Ok(())
}

/// Fail-stop: a node whose snapshot is damaged on disk refuses to start, says why, and the
/// rest of the cluster keeps serving.
#[tokio::test]
async fn a_node_with_a_corrupt_snapshot_refuses_to_start() -> Result<()> {
    let mut c = ProcessCluster::start(3).await?;
    let ack = revoke_anywhere(&c.endpoints(), "before-corruption", Duration::from_secs(5)).await?;
    // Node 2 may be a follower that has not applied the write yet: the snapshot it builds must
    // contain it.
    eventually(Duration::from_secs(10), || async {
        let applied = c.status(2).await?.applied_revision;
        anyhow::ensure!(
            applied >= ack.revision,
            "node 2 at {applied}, write at {}",
            ack.revision
        );
        Ok(())
    })
    .await?;
    let mut req = tonic::Request::new(pb::TriggerSnapshotRequest {});
    req.set_timeout(Duration::from_secs(10));
    let snap = c.cluster(2)?.trigger_snapshot(req).await?.into_inner();
    assert!(snap.snapshot_revision >= ack.revision);
    c.stop(2)?;
    let file = c.nodes[&2].data_dir.join("snapshots/current.snap");
    let mut bytes = std::fs::read(&file)?;
    let last = bytes.len() - 1;
    bytes[last] ^= 0x5a;
    std::fs::write(&file, bytes)?;
    c.restart(2)?;
    let status = c.wait_exit(2, Duration::from_secs(10)).await?;
    let status = status.expect("the node must stop on its own");
    assert!(!status.success(), "{status}");
    let log = c.log_tail(2, 5);
    assert!(
        log.contains("refusing to start") && log.contains("checksum"),
        "{log}"
    );
    // The other two still form a quorum.
    let ok = revoke_anywhere(
        &[c.addr(1)?, c.addr(3)?],
        "after-corruption",
        Duration::from_secs(10),
    )
    .await?;
    assert!(ok.revision > ack.revision);
    Ok(())
}
