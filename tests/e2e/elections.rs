//! A cluster that stays up: pre-vote, check-quorum, hand-off on SIGTERM, quiet removed
//! voters and learners that stop vouching for a leader they lost. Real processes, faults by
//! SIGSTOP (a paused node neither sends nor answers).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use revokd_e2e::{revoke_anywhere, revoke_req};
use revokd_proto::v1 as pb;
use revokd_proto::wire::{LEADER_ADDR_HEADER, QUORUM_LOST_HEADER};
use revokd_testkit::{eventually, ProcessCluster};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

/// The default election timeout range of a node, `--election-timeout-ms` (300) to twice it.
const ELECTION_MAX: Duration = Duration::from_millis(600);

async fn health(c: &ProcessCluster, id: u64) -> Result<ServingStatus> {
    let mut h = HealthClient::new(revokd_testkit::channel(&c.addr(id)?)?);
    let r = h
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(r.into_inner().status())
}

/// A three-node cluster that has elected a leader and committed a write in its term: the
/// cluster, its leader and the term.
async fn settled_cluster() -> Result<(ProcessCluster, u64, u64)> {
    let c = ProcessCluster::start(3).await?;
    let leader = c.wait_leader(Duration::from_secs(10)).await?;
    revoke_anywhere(&c.endpoints(), "settle", Duration::from_secs(5)).await?;
    let term = c.status(leader).await?.term;
    Ok((c, leader, term))
}

/// The two nodes of a three-node cluster other than `id`.
fn others(id: u64) -> Vec<u64> {
    [1, 2, 3].into_iter().filter(|n| *n != id).collect()
}

/// Check-quorum: a leader whose followers are gone stops accepting writes and linearizable
/// reads within about an election timeout, answers UNAVAILABLE "lost its quorum" with no
/// leader hint (so clients move on instead of timing out against it), reports NOT_SERVING
/// and says so in Status; once a follower is back it serves again.
#[tokio::test]
async fn a_leader_without_its_quorum_refuses_work_and_says_so() -> Result<()> {
    let mut c = ProcessCluster::start(3).await?;
    let leader = c.wait_leader(Duration::from_secs(10)).await?;
    revoke_anywhere(&c.endpoints(), "before", Duration::from_secs(5)).await?;
    for f in others(leader) {
        c.pause(f)?;
    }
    let paused = Instant::now();
    let status = eventually(Duration::from_secs(5), || async {
        let s = c.status(leader).await?;
        ensure!(
            s.quorum_lost,
            "node {leader} still believes it has a quorum"
        );
        Ok(s)
    })
    .await?;
    let noticed = paused.elapsed();
    assert_eq!(
        status.leader_id, 0,
        "a leader without quorum vouches for no leader"
    );
    // The health task looks every 200 ms.
    eventually(Duration::from_secs(2), || async {
        ensure!(health(&c, leader).await? == ServingStatus::NotServing);
        Ok(())
    })
    .await?;

    let mut api = c.revocation(leader)?;
    let mut req = tonic::Request::new(revoke_req("cut-off"));
    req.set_timeout(Duration::from_secs(5));
    let asked = Instant::now();
    let err = api
        .revoke(req)
        .await
        .expect_err("a leader without quorum took a write");
    let answered = asked.elapsed();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert!(err.message().contains("lost its quorum"), "{err}");
    assert!(
        err.metadata().get(LEADER_ADDR_HEADER).is_none(),
        "no stale leader hint"
    );
    assert!(err.metadata().get(QUORUM_LOST_HEADER).is_some());
    assert!(
        answered < Duration::from_secs(1),
        "refused at once, not after the deadline ({answered:?})"
    );
    let mut check = tonic::Request::new(revokd_e2e::check_req(
        "before",
        pb::Consistency::Linearizable,
        0,
    ));
    check.set_timeout(Duration::from_secs(5));
    let err = api
        .check(check)
        .await
        .expect_err("a leader without quorum served a linearizable read");
    assert!(err.message().contains("lost its quorum"), "{err}");
    println!("quorum loss noticed {noticed:?} after the followers stopped; a write refused in {answered:?}");

    for f in others(leader) {
        c.resume(f)?;
    }
    c.wait_leader(Duration::from_secs(10)).await?;
    revoke_anywhere(&c.endpoints(), "after", Duration::from_secs(10)).await?;
    Ok(())
}

/// Pre-vote: a follower paused for several election timeouts comes back and finds the
/// leader alive; it must not depose it (openraft 0.9 alone would: the node raises its term
/// and the leader steps down).
#[tokio::test]
async fn a_node_back_from_a_pause_does_not_depose_the_leader() -> Result<()> {
    let (mut c, leader, term) = settled_cluster().await?;
    let follower = others(leader)[0];
    c.pause(follower)?;
    tokio::time::sleep(ELECTION_MAX * 4).await;
    revoke_anywhere(&c.endpoints(), "during", Duration::from_secs(5)).await?;
    c.resume(follower)?;
    // Long enough for the returning node to time out several times over.
    tokio::time::sleep(ELECTION_MAX * 4).await;
    for id in [1, 2, 3] {
        let s = c.status(id).await?;
        assert_eq!(
            (s.leader_id, s.term),
            (leader, term),
            "node {id} sees another leader or term\nnode {follower} log:\n{}",
            c.log_tail(follower, 30)
        );
    }
    Ok(())
}

/// Hand-off: SIGTERM on the leader hands leadership to a caught-up voter before the node
/// stops: one election (the term rises by one), writes carry on, and the stopped node's log
/// says it handed over.
#[tokio::test]
async fn sigterm_on_the_leader_hands_leadership_over() -> Result<()> {
    let (mut c, leader, term) = settled_cluster().await?;
    let endpoints: Vec<String> = others(leader)
        .into_iter()
        .map(|id| c.addr(id))
        .collect::<Result<_>>()?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (endpoints, stop) = (endpoints.clone(), stop.clone());
        tokio::spawn(async move {
            let mut longest = Duration::ZERO;
            let mut acked = 0u32;
            for i in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let sent = Instant::now();
                let r =
                    revoke_anywhere(&endpoints, &format!("w-{i}"), Duration::from_secs(10)).await;
                longest = longest.max(sent.elapsed());
                acked += u32::from(r.is_ok());
            }
            (acked, longest)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.stop(leader)?;
    let new_leader = c.wait_leader(Duration::from_secs(5)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, longest) = writer.await?;
    let log = std::fs::read_to_string(&c.nodes[&leader].log).context("the stopped node's log")?;
    assert!(
        log.contains("handed leadership over"),
        "no hand-off in node {leader}'s log:\n{}",
        c.log_tail(leader, 30)
    );
    let s = c.status(new_leader).await?;
    assert_eq!(s.term, term + 1, "one election, no split vote");
    assert!(acked > 0);
    println!(
        "leader {leader} handed over to {new_leader}; {acked} writes, the longest took {longest:?}"
    );
    Ok(())
}

/// Removed voters go quiet: a voter removed from the membership, left running, stops
/// campaigning instead of raising its term over and over.
#[tokio::test]
async fn a_removed_voter_stops_campaigning() -> Result<()> {
    let c = ProcessCluster::start(3).await?;
    let leader = c.wait_leader(Duration::from_secs(10)).await?;
    let removed = others(leader)[0];
    let kept: Vec<u64> = [1, 2, 3].into_iter().filter(|n| *n != removed).collect();
    let mut cluster = c.cluster(leader)?;
    cluster
        .change_membership(pb::ChangeMembershipRequest {
            voters: kept.clone(),
            retain: false,
        })
        .await?;
    let term = c.status(leader).await?.term;
    // Several election timeouts for the removed node to campaign in, were it to.
    tokio::time::sleep(ELECTION_MAX * 2).await;
    let before = c.status(removed).await?.term;
    tokio::time::sleep(ELECTION_MAX * 5).await;
    let after = c.status(removed).await?.term;
    assert_eq!(
        before,
        after,
        "the removed node kept campaigning\nnode {removed} log:\n{}",
        c.log_tail(removed, 30)
    );
    for id in &kept {
        let s = c.status(*id).await?;
        assert_eq!((s.leader_id, s.term), (leader, term), "node {id}");
        let voters: BTreeSet<u64> = s.members.iter().map(|m| m.id).collect();
        assert_eq!(voters, kept.iter().copied().collect());
    }
    Ok(())
}

/// Replica freshness from learners: a learner that has lost its leader stops naming one in
/// its heartbeats and goes NOT_SERVING, so a replica that reaches only it goes stale.
#[tokio::test]
async fn a_learner_that_lost_the_leader_stops_vouching_for_it() -> Result<()> {
    let mut c = ProcessCluster::start(3).await?;
    let leader = c.wait_leader(Duration::from_secs(10)).await?;
    let addr = c.start_joiner(4)?;
    c.cluster(leader)?
        .add_learner(pb::AddLearnerRequest {
            node_id: 4,
            address: addr,
            blocking: true,
        })
        .await?;
    let learner = c.cluster(4)?;
    let heartbeat = || {
        let mut cl = learner.clone();
        async move {
            Ok::<_, anyhow::Error>(
                cl.heartbeat(pb::HeartbeatRequest::default())
                    .await?
                    .into_inner(),
            )
        }
    };
    eventually(Duration::from_secs(5), || async {
        let hb = heartbeat().await?;
        ensure!(
            hb.leader_id == leader,
            "learner names leader {}",
            hb.leader_id
        );
        Ok(())
    })
    .await?;
    for id in [1, 2, 3] {
        c.pause(id)?;
    }
    let cut = Instant::now();
    eventually(Duration::from_secs(5), || async {
        let hb = heartbeat().await?;
        ensure!(
            hb.leader_id == 0,
            "learner still names leader {}",
            hb.leader_id
        );
        Ok(())
    })
    .await?;
    let dropped = cut.elapsed();
    eventually(Duration::from_secs(2), || async {
        ensure!(health(&c, 4).await? == ServingStatus::NotServing);
        Ok(())
    })
    .await?;
    println!("the learner dropped its leader {dropped:?} after the voters stopped");
    for id in [1, 2, 3] {
        c.resume(id)?;
    }
    eventually(Duration::from_secs(10), || async {
        let hb = heartbeat().await?;
        ensure!(hb.leader_id != 0, "learner names no leader yet");
        Ok(())
    })
    .await?;
    Ok(())
}
