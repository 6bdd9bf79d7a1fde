//! The client crate's connection handling against real nodes: members learned from one
//! endpoint, reads kept away from a node whose heartbeat failed, membership changes, and bad
//! input answered with a clear error rather than retried.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use revokd_client::{Consistency, Error, Revoke, TokenQuery, WriteOutcome};
use revokd_e2e::{client, now};
use revokd_testkit::{eventually, ProcessCluster};

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn client_learns_members_avoids_dead_nodes_and_changes_membership() -> Result<()> {
    let mut cluster = ProcessCluster::start(3).await?;
    let leader = cluster.wait_leader(WAIT).await?;
    // One endpoint is enough: the others come from Status.
    let c = client(&cluster.endpoints()[..1]).await?;
    assert_eq!(c.node_health().len(), 3, "{:?}", c.node_health());
    let w = c.revoke(Revoke::new("c-1", now() + 3600)).await?;
    assert_eq!(w.outcome, WriteOutcome::Applied);
    assert_eq!(w.leader_id, leader);

    // Freeze a follower: once a heartbeat fails, no read is sent to it (one that were would
    // hang for the 2 s attempt timeout).
    let victim = cluster
        .live()
        .into_iter()
        .find(|id| *id != leader)
        .unwrap_or(1);
    let victim_addr = cluster.addr(victim)?;
    cluster.pause(victim)?;
    eventually(WAIT, || async {
        let down = c
            .node_health()
            .iter()
            .any(|(addr, up)| *addr == victim_addr && !up);
        ensure!(down, "heartbeat has not failed yet: {:?}", c.node_health());
        Ok(())
    })
    .await?;
    for _ in 0..30 {
        let started = Instant::now();
        let r = c
            .check(
                &TokenQuery {
                    jti: "c-1",
                    ..Default::default()
                },
                Consistency::Linearizable,
            )
            .await?;
        assert!(r.is_revoked());
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "a read waited on the frozen node ({:?})",
            started.elapsed()
        );
    }
    cluster.resume(victim)?;
    eventually(WAIT, || async {
        ensure!(
            c.node_health().iter().all(|(_, up)| *up),
            "{:?}",
            c.node_health()
        );
        Ok(())
    })
    .await?;

    // Membership through the client: add a learner, promote it, then go back to three voters.
    let addr = cluster.start_joiner(4)?;
    let m = c.add_learner(4, &addr, true).await?;
    assert!(m.learners.iter().any(|l| l.id == 4), "{m:?}");
    let m = c.change_membership(&[1, 2, 3, 4], false).await?;
    assert_eq!(m.members.len(), 4, "{m:?}");
    let m = c.change_membership(&[1, 2, 3], false).await?;
    assert_eq!(m.members.len(), 3, "{m:?}");
    let statuses = c.statuses().await;
    assert!(statuses.iter().filter(|(_, s)| s.is_ok()).count() >= 3);

    // Bad input is a clear rejection, not a retry loop.
    let started = Instant::now();
    match c.revoke(Revoke::new("", now() + 3600)).await {
        Err(Error::Rejected { code, message, .. }) => {
            assert_eq!(code, tonic::Code::InvalidArgument);
            assert!(message.contains("jti"), "{message}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    Ok(())
}

#[tokio::test]
async fn a_client_started_before_its_node_connects_once_the_node_is_up() -> Result<()> {
    use revokd_client::{Client, ClientConfig};
    let port = revokd_testkit::free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let mut config = ClientConfig::new([addr.clone()]);
    config.timeout = Duration::from_secs(20);
    let started = Instant::now();
    let connecting = tokio::spawn(Client::connect(config));
    // Nothing listens yet: the first attempt is refused and marks the node down.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let dir = tempfile::tempdir()?;
    let mut node = std::process::Command::new(revokd_testkit::revokd_bin()?)
        .args(["--id", "1", "--listen", &addr, "--data-dir"])
        .arg(dir.path().join("data"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let connected = connecting.await;
    let waited = started.elapsed();
    let status = match connected {
        Ok(Ok(client)) => client.status().await.map(|s| s.id),
        Ok(Err(e)) => Err(e),
        Err(e) => {
            let _ = node.kill();
            return Err(e.into());
        }
    };
    let _ = node.kill();
    let _ = node.wait();
    ensure!(status? == 1);
    // Within a few heartbeat intervals of the node coming up (it starts in well under a
    // second here), not after the client's whole 20 s timeout.
    ensure!(
        waited < Duration::from_secs(8),
        "connected after {waited:?}"
    );
    Ok(())
}
