//! The chaos harness against real processes: its links really carry node and client
//! traffic (latency added, partitions cut), and `up`/`down` stop exactly what they started.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use revokd_client::{Client, Revoke};
use revokd_harness::cluster::{Deployment, UpState};
use revokd_harness::topology::Topology;
use revokd_proto::v1::{self as pb, cluster_client::ClusterClient};
use revokd_testkit::{channel, eventually, harness_bin};

use revokd_e2e::now as unix_now;

const TWO_REGIONS: &str = r#"
name = "two-regions"
[node]
heartbeat_ms = 100
election_timeout_ms = 400
[[regions]]
name = "a"
voters = 2
[[regions]]
name = "b"
voters = 1
[[links]]
between = ["a", "b"]
rtt_ms = 60
"#;

/// The best of a few `Status` round trips to `addr`.
async fn best_rtt(addr: &str) -> Result<Duration> {
    let mut client = ClusterClient::new(channel(addr)?);
    client.status(pb::StatusRequest {}).await?; // connect first
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        client.status(pb::StatusRequest {}).await?;
        best = best.min(start.elapsed());
    }
    Ok(best)
}

#[tokio::test]
async fn links_add_latency_and_partitions_cut_traffic() -> Result<()> {
    let topo = Topology::parse(TWO_REGIONS)?;
    let dir = tempfile::tempdir()?;
    let dep = Deployment::up(&topo, dir.path(), 7).await?;
    let node1 = dep.nodes[&1].addr.clone();

    // A client in region b reaches node 1 (region a) through a 60 ms round trip; a client in
    // region a reaches it through none.
    let from_b = best_rtt(&dep.net.address_map("b")[&node1]).await?;
    let from_a = best_rtt(&dep.net.address_map("a")[&node1]).await?;
    ensure!(
        from_b >= Duration::from_millis(60),
        "region b to node 1 took {from_b:?}, the link adds 60 ms"
    );
    ensure!(
        from_a < Duration::from_millis(30),
        "region a to node 1 took {from_a:?}"
    );

    // Cut region b (node 3 and its clients) off: region a still commits (2 of 3 voters), node
    // 3 falls behind, and a client in region b gets no answer.
    let writer_a = Client::connect(dep.client_config("a")).await?;
    let mut config_b = dep.client_config("b");
    config_b.timeout = Duration::from_secs(2);
    let writer_b = Client::connect(config_b).await?;
    writer_b
        .revoke(Revoke::new("before-cut", unix_now() + 600))
        .await?;
    let inside = dep.net.region_sites("b");
    dep.net.partition(&inside, &dep.net.others(&inside), false);
    let during = writer_a
        .revoke(Revoke::new("during-cut", unix_now() + 600))
        .await
        .context("region a commits without region b")?;
    let refused = writer_b
        .revoke(Revoke::new("from-cut-region", unix_now() + 600))
        .await;
    ensure!(
        matches!(refused, Err(revokd_client::Error::Unavailable { .. })),
        "a client in the cut-off region must not be answered: {refused:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let behind = dep.status(3, Duration::from_secs(2)).await?;
    ensure!(
        behind.applied_revision < during.committed_revision,
        "node 3 applied {} though cut off before revision {}",
        behind.applied_revision,
        during.committed_revision
    );

    // Healed, node 3 catches up.
    dep.net.heal();
    eventually(Duration::from_secs(15), || async {
        let s = dep.status(3, Duration::from_secs(2)).await?;
        ensure!(
            s.applied_revision >= during.committed_revision,
            "node 3 at {}",
            s.applied_revision
        );
        Ok(())
    })
    .await?;
    Ok(())
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn up_and_down_stop_exactly_what_they_started() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut up = Command::new(harness_bin()?)
        .args(["up", "local-3", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    // The last line before it waits names every node's address.
    let stdout = up.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    // Reads every line, so `up` never writes into a closed pipe.
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("no added latency: revokctl --endpoints ") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(rest.trim_end_matches(" status").to_owned());
                }
            }
        }
    });
    let endpoints = tokio::time::timeout(Duration::from_secs(60), rx)
        .await
        .context("`up` did not come up within 60 s")?
        .context("`up` ended without printing the endpoints")?;
    let state: UpState = serde_json::from_slice(&std::fs::read(dir.path().join("harness.json"))?)?;
    ensure!(state.harness_pid == up.id(), "the state names the harness");
    ensure!(
        state.nodes.len() == 3,
        "three nodes recorded: {:?}",
        state.nodes
    );
    ensure!(state.nodes.values().all(|&p| alive(p)));

    let client = Client::connect(revokd_client::ClientConfig::new(endpoints.split(','))).await?;
    client
        .revoke(Revoke::new("through-up", unix_now() + 600))
        .await?;

    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(up.try_wait()?.is_none(), "`up` keeps running until `down`");
    ensure!(state.nodes.values().all(|&p| alive(p)));

    let down = Command::new(harness_bin()?)
        .args(["down", "--dir"])
        .arg(dir.path())
        .output()?;
    ensure!(
        down.status.success(),
        "down failed: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.try_wait()?.is_none() {
        ensure!(
            Instant::now() < deadline,
            "the `up` process is still running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: BTreeMap<u64, u32> = state
        .nodes
        .into_iter()
        .filter(|(_, pid)| alive(*pid))
        .collect();
    ensure!(left.is_empty(), "nodes still running after down: {left:?}");
    ensure!(
        !dir.path().join("harness.json").exists(),
        "the state file is removed"
    );
    Ok(())
}
