//! Membership: learners catching up from a snapshot, and 3 -> 5 -> 3 voters under traffic.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use revokd_e2e::{check_req, missing_on, revoke_anywhere, spec};
use revokd_proto::v1 as pb;
use revokd_testkit::{eventually, ClusterOptions, ProcessCluster};
use tokio::sync::Mutex;

fn compacting() -> ClusterOptions {
    ClusterOptions {
        extra_args: ["--snapshot-logs", "50", "--snapshot-keep-logs", "0"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_new_learner_receives_a_snapshot_and_catches_up() -> Result<()> {
    let mut c = ProcessCluster::start_with(3, compacting()).await?;
    let mut api = c.revocation(1)?;
    for i in 0..120 {
        api.revoke(pb::RevokeRequest {
            token: Some(spec(&format!("t{i}"), 3600)),
        })
        .await?;
    }
    let leader = c.wait_leader(Duration::from_secs(5)).await?;
    let leader_status = eventually(Duration::from_secs(10), || async {
        let s = c.status(leader).await?;
        ensure!(
            s.snapshot_revision >= 50,
            "leader has not compacted yet: {s:?}"
        );
        Ok(s)
    })
    .await?;
    let addr = c.start_joiner(4)?;
    let resp = c
        .cluster(2)?
        .add_learner(pb::AddLearnerRequest {
            node_id: 4,
            address: addr,
            blocking: true,
        })
        .await?
        .into_inner();
    assert!(resp.learners.iter().any(|m| m.id == 4), "{resp:?}");
    let s = eventually(Duration::from_secs(10), || async {
        let s = c.status(4).await?;
        ensure!(
            s.applied_revision >= leader_status.applied_revision,
            "learner at {}",
            s.applied_revision
        );
        Ok(s)
    })
    .await?;
    assert_eq!(s.role, pb::Role::Learner as i32);
    assert!(
        s.snapshot_revision >= leader_status.snapshot_revision,
        "the learner must have installed a snapshot: {s:?}"
    );
    assert_eq!(s.revoked_tokens, 120);
    let r = c
        .revocation(4)?
        .check(check_req("t0", pb::Consistency::Local, 0))
        .await?
        .into_inner();
    assert!(r.result.is_some_and(|r| r.revoked));
    Ok(())
}

#[tokio::test]
async fn membership_3_to_5_to_3_under_traffic() -> Result<()> {
    let mut c = ProcessCluster::start(3).await?;
    let endpoints = c.endpoints();
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let stop = Arc::new(tokio::sync::Notify::new());
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        tokio::spawn(async move {
            for i in 0.. {
                let jti = format!("m{i}");
                tokio::select! {
                    r = revoke_anywhere(&endpoints, &jti, Duration::from_secs(10)) => {
                        if let Ok(resp) = r { acked.lock().await.push((jti, resp.revision)); }
                    }
                    _ = stop.notified() => return,
                }
            }
        })
    };
    let mut cluster = c.cluster(1)?;
    for id in [4, 5] {
        let addr = c.start_joiner(id)?;
        cluster
            .add_learner(pb::AddLearnerRequest {
                node_id: id,
                address: addr,
                blocking: true,
            })
            .await?;
    }
    let five = cluster
        .change_membership(pb::ChangeMembershipRequest {
            voters: vec![1, 2, 3, 4, 5],
            retain: false,
        })
        .await?
        .into_inner();
    let voters: BTreeSet<u64> = five.members.iter().map(|m| m.id).collect();
    assert_eq!(voters, BTreeSet::from([1, 2, 3, 4, 5]));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let three = cluster
        .change_membership(pb::ChangeMembershipRequest {
            voters: vec![1, 2, 3],
            retain: false,
        })
        .await?
        .into_inner();
    let voters: BTreeSet<u64> = three.members.iter().map(|m| m.id).collect();
    assert_eq!(voters, BTreeSet::from([1, 2, 3]));
    assert!(
        three.learners.is_empty(),
        "removed voters are not kept without retain"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.notify_waiters();
    writer.await?;
    let acked = acked.lock().await.clone();
    assert!(
        acked.len() > 10,
        "traffic flowed during the changes ({} acks)",
        acked.len()
    );
    let max_rev = acked.iter().map(|a| a.1).max().unwrap_or(0);
    let jtis: Vec<String> = acked.into_iter().map(|a| a.0).collect();
    // Nodes 4 and 5 are no longer members: stop them so they do not count as live voters.
    c.kill(4)?;
    c.kill(5)?;
    c.wait_leader(Duration::from_secs(10)).await?;
    for id in [1, 2, 3] {
        let missing =
            missing_on(&c.addr(id)?, &jtis, pb::Consistency::Linearizable, max_rev).await?;
        assert!(missing.is_empty(), "node {id} misses {missing:?}");
    }
    let status = c.status(1).await?;
    assert_eq!(status.members.len(), 3);
    Ok(())
}
