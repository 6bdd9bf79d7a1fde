//! `revokd-bench`: measures a real 3-node revokd cluster (separate processes, loopback gRPC,
//! sled on disk) on this machine and prints a Markdown report:
//!
//! - durable `Revoke` throughput and latency at 1, 50 and 200 concurrent clients;
//! - `Check` throughput, LOCAL vs LINEARIZABLE;
//! - failover: `kill -9` of the leader to the next acknowledged revoke;
//! - memory and disk per revoked entry at N entries (default 1M, loaded with `RevokeBatch`);
//! - restart time of a node and of the whole cluster holding those entries.
//!
//! Every figure is measured in the same run, so ratios between them are meaningful even on a
//! shared machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use revokd_bench::{closed_loop, dir_bytes, machine, rss_bytes, uuidish, Row};
use revokd_proto::clock::unix_now;
use revokd_proto::v1::{self as pb, revocation_client::RevocationClient};
use revokd_testkit::{channel, eventually, ClusterOptions, ProcessCluster};
use tonic::transport::Channel;

#[derive(Parser, Debug)]
#[command(about = "Benchmark a real 3-node revokd cluster on this machine.")]
struct Args {
    /// Seconds per throughput measurement.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Entries loaded for the memory, disk and restart figures.
    #[arg(long, default_value_t = 1_000_000)]
    entries: usize,
    /// Failover trials.
    #[arg(long, default_value_t = 3)]
    failovers: usize,
    /// Concurrency levels for durable writes.
    #[arg(long, value_delimiter = ',', default_value = "1,50,200")]
    write_clients: Vec<usize>,
    /// Concurrent clients for checks.
    #[arg(long, default_value_t = 50)]
    check_clients: usize,
    /// Extra flags for every node, e.g. `--node-args=--heartbeat-ms=50,--election-timeout-ms=200`.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    node_args: Vec<String>,
    /// Before the main cluster, measure the same writes on a cluster started with
    /// `--batch-max-tokens 1` (one request per log entry), for a side-by-side ratio.
    #[arg(long)]
    compare_unbatched: bool,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn client(ch: &Channel) -> RevocationClient<Channel> {
    RevocationClient::new(ch.clone())
        .max_encoding_message_size(64 << 20)
        .max_decoding_message_size(64 << 20)
}

/// Durable writes through the leader at `addr`, as a client that follows the leader hint
/// does, at each concurrency level.
async fn write_rows(addr: &str, levels: &[usize], dur: Duration, label: &str) -> Result<Vec<Row>> {
    let pool: Vec<Channel> = (0..8).map(|_| channel(addr)).collect::<Result<_>>()?;
    let pool = Arc::new(pool);
    let mut rows = Vec::new();
    for &clients in levels {
        eprintln!("durable revokes, {clients} clients{label}...");
        let pool = pool.clone();
        let row = closed_loop(
            format!("Revoke, {clients} clients{label}"),
            clients,
            dur,
            move |t, i| {
                let mut api = client(&pool[t % pool.len()]);
                async move {
                    let req = pb::RevokeRequest {
                        token: Some(pb::RevokedTokenSpec {
                            jti: format!("w{clients}-{t}-{i}"),
                            expires_at: unix_now() + 3600,
                            reason: String::new(),
                            subject: String::new(),
                        }),
                    };
                    api.revoke(req).await.is_ok()
                }
            },
        )
        .await;
        eprintln!("  {row:?}");
        rows.push(row);
    }
    Ok(rows)
}

/// Every figure of one run, for the report and the JSON.
struct Figures {
    rows: Vec<Row>,
    failovers: Vec<Duration>,
    load_secs: f64,
    /// Per node: id, RSS and disk bytes per entry, RSS and disk after the load.
    mem_rows: Vec<(u64, f64, f64, u64, u64)>,
    node_restart: Duration,
    cluster_restart: Duration,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dur = Duration::from_secs(args.duration_secs);
    let mut rows = Vec::new();
    if args.compare_unbatched {
        rows.extend(unbatched_write_rows(&args, dur).await?);
    }
    eprintln!("starting a 3-node cluster...");
    let mut c = ProcessCluster::start_with(3, ClusterOptions::args(args.node_args.clone())).await?;
    let leader = c.wait_leader(Duration::from_secs(10)).await?;
    rows.extend(write_rows(&c.addr(leader)?, &args.write_clients, dur, "").await?);
    rows.extend(check_rows(&c, args.check_clients, dur).await?);
    let failovers = failovers(&mut c, args.failovers).await?;

    // Memory and disk per entry.
    let leader = c.wait_leader(Duration::from_secs(10)).await?;
    let ids: Vec<u64> = c.nodes.keys().copied().collect();
    let before = footprints(&c, &ids);
    let (load_secs, last_rev) = load_entries(&c, leader, args.entries).await?;
    snapshot_all(&c, &ids, last_rev).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mem_rows = footprints(&c, &ids)
        .into_iter()
        .zip(&before)
        .zip(&ids)
        .map(|(((rss, disk), (rss0, disk0)), id)| {
            (
                *id,
                rss.saturating_sub(*rss0) as f64 / args.entries as f64,
                disk.saturating_sub(*disk0) as f64 / args.entries as f64,
                rss,
                disk,
            )
        })
        .collect();

    let follower = *ids.iter().find(|id| **id != leader).context("follower")?;
    let node_restart = restart_follower(&mut c, leader, follower).await?;
    let cluster_restart = restart_cluster(&mut c, &ids, last_rev).await?;

    let figures = Figures {
        rows,
        failovers,
        load_secs,
        mem_rows,
        node_restart,
        cluster_restart,
    };
    println!("{}", report(&args, &figures)?);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&json(&args, &figures))?)?;
    }
    Ok(())
}

/// The durable writes on a cluster started with `--batch-max-tokens 1`.
async fn unbatched_write_rows(args: &Args, dur: Duration) -> Result<Vec<Row>> {
    eprintln!("starting a 3-node cluster without batching...");
    let mut node_args = args.node_args.clone();
    node_args.extend(["--batch-max-tokens".to_string(), "1".to_string()]);
    let c = ProcessCluster::start_with(3, ClusterOptions::args(node_args)).await?;
    let leader = c.wait_leader(Duration::from_secs(10)).await?;
    write_rows(
        &c.addr(leader)?,
        &args.write_clients,
        dur,
        " (batching off)",
    )
    .await
}

/// Checks spread over all three nodes, LOCAL then LINEARIZABLE.
async fn check_rows(c: &ProcessCluster, clients: usize, dur: Duration) -> Result<Vec<Row>> {
    let nodes: Vec<Channel> = c
        .endpoints()
        .iter()
        .map(|a| channel(a))
        .collect::<Result<_>>()?;
    let nodes = Arc::new(nodes);
    let mut rows = Vec::new();
    for (name, consistency) in [
        ("LOCAL", pb::Consistency::Local),
        ("LINEARIZABLE", pb::Consistency::Linearizable),
    ] {
        eprintln!("checks {name}...");
        let nodes = nodes.clone();
        let row = closed_loop(
            format!("Check {name}, {clients} clients, all nodes"),
            clients,
            dur,
            move |t, i| {
                let mut api = client(&nodes[(t + i as usize) % nodes.len()]);
                async move {
                    let req = pb::CheckRequest {
                        token: Some(pb::TokenQuery {
                            jti: format!("w50-{t}-{i}"),
                            ..Default::default()
                        }),
                        consistency: consistency as i32,
                        min_revision: 0,
                    };
                    api.check(req).await.is_ok()
                }
            },
        )
        .await;
        eprintln!("  {row:?}");
        rows.push(row);
    }
    Ok(rows)
}

/// Failover: kill -9 the leader while one client writes; time to the first acknowledged
/// revoke that was sent after the kill, `trials` times.
async fn failovers(c: &mut ProcessCluster, trials: usize) -> Result<Vec<Duration>> {
    let mut failovers = Vec::new();
    for trial in 0..trials {
        let leader = c.wait_leader(Duration::from_secs(20)).await?;
        let survivors: Vec<String> = c
            .nodes
            .values()
            .filter(|n| n.id != leader)
            .map(|n| n.addr.clone())
            .collect();
        let killed = Instant::now();
        c.kill(leader)?;
        let mut i = 0u64;
        let took = loop {
            let addr = &survivors[i as usize % survivors.len()];
            let mut api = client(&channel(addr)?);
            let mut req = tonic::Request::new(pb::RevokeRequest {
                token: Some(pb::RevokedTokenSpec {
                    jti: format!("failover-{trial}-{i}"),
                    expires_at: unix_now() + 3600,
                    reason: String::new(),
                    subject: String::new(),
                }),
            });
            req.set_timeout(Duration::from_millis(500));
            if api.revoke(req).await.is_ok() {
                break killed.elapsed();
            }
            i += 1;
            anyhow::ensure!(
                killed.elapsed() < Duration::from_secs(30),
                "no write acknowledged 30 s after the kill"
            );
        };
        eprintln!("failover {trial}: killed leader {leader}, next ack after {took:?}");
        failovers.push(took);
        c.restart(leader)?;
        c.wait_leader(Duration::from_secs(20)).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(failovers)
}

/// Each node's resident memory and data directory size, in `ids` order.
fn footprints(c: &ProcessCluster, ids: &[u64]) -> Vec<(u64, u64)> {
    ids.iter()
        .map(|id| {
            let n = &c.nodes[id];
            (
                rss_bytes(n.pid().unwrap_or(0)).unwrap_or(0),
                dir_bytes(&n.data_dir),
            )
        })
        .collect()
}

/// Loads `entries` ids through the leader in `RevokeBatch`es of 10,000; returns the seconds
/// it took and the last revision.
async fn load_entries(c: &ProcessCluster, leader: u64, entries: usize) -> Result<(f64, u64)> {
    eprintln!("loading {entries} entries with RevokeBatch...");
    let mut api = client(&channel(&c.addr(leader)?)?);
    let load_start = Instant::now();
    let mut loaded = 0usize;
    let mut last_rev = 0;
    while loaded < entries {
        let n = (entries - loaded).min(10_000);
        let tokens = (loaded..loaded + n)
            .map(|k| pb::RevokedTokenSpec {
                jti: uuidish(k as u64),
                expires_at: unix_now() + 7 * 24 * 3600,
                reason: String::new(),
                subject: String::new(),
            })
            .collect();
        let mut req = tonic::Request::new(pb::RevokeBatchRequest { tokens });
        req.set_timeout(Duration::from_secs(30));
        last_rev = api
            .revoke_batch(req)
            .await
            .with_context(|| format!("RevokeBatch after {loaded} entries"))?
            .into_inner()
            .revision;
        loaded += n;
    }
    Ok((load_start.elapsed().as_secs_f64(), last_rev))
}

/// Waits until every node applied `last_rev`, then snapshots it (so the disk figure is the
/// snapshot's, not a log's).
async fn snapshot_all(c: &ProcessCluster, ids: &[u64], last_rev: u64) -> Result<()> {
    for id in ids {
        eventually(Duration::from_secs(60), || async {
            let s = c.status(*id).await?;
            anyhow::ensure!(
                s.applied_revision >= last_rev,
                "node {id} at {}",
                s.applied_revision
            );
            Ok(())
        })
        .await?;
        let mut cl = c.cluster(*id)?;
        let mut req = tonic::Request::new(pb::TriggerSnapshotRequest {});
        req.set_timeout(Duration::from_secs(60));
        let t = Instant::now();
        cl.trigger_snapshot(req)
            .await
            .with_context(|| format!("TriggerSnapshot on node {id}"))?;
        eprintln!("snapshot on node {id}: {:?}", t.elapsed());
    }
    Ok(())
}

/// Restart: kill -9 a follower, restart it, time until it serves at the cluster's revision.
async fn restart_follower(c: &mut ProcessCluster, leader: u64, follower: u64) -> Result<Duration> {
    let target = c.status(leader).await?.commit_revision;
    c.kill(follower)?;
    let t0 = Instant::now();
    c.restart(follower)?;
    eventually(Duration::from_secs(120), || async {
        let s = c.status(follower).await?;
        anyhow::ensure!(
            s.applied_revision >= target && s.leader_id != 0,
            "at {}",
            s.applied_revision
        );
        Ok(())
    })
    .await?;
    Ok(t0.elapsed())
}

/// Whole cluster: SIGTERM all, start all, time until a leader serves a linearizable check.
async fn restart_cluster(c: &mut ProcessCluster, ids: &[u64], last_rev: u64) -> Result<Duration> {
    for id in ids {
        c.stop(*id)?;
    }
    let t0 = Instant::now();
    for id in ids {
        c.restart(*id)?;
    }
    let leader = c.wait_leader(Duration::from_secs(120)).await?;
    let api = client(&channel(&c.addr(leader)?)?);
    eventually(Duration::from_secs(120), || {
        let mut api = api.clone();
        async move {
            let r = api
                .check(pb::CheckRequest {
                    token: Some(pb::TokenQuery {
                        jti: uuidish(0),
                        ..Default::default()
                    }),
                    consistency: pb::Consistency::Linearizable as i32,
                    min_revision: last_rev,
                })
                .await?
                .into_inner();
            anyhow::ensure!(r.result.is_some_and(|r| r.revoked), "not yet");
            Ok(())
        }
    })
    .await?;
    Ok(t0.elapsed())
}

/// The Markdown report.
fn report(args: &Args, f: &Figures) -> Result<String> {
    let mut out = String::new();
    out.push_str(&format!(
        "Machine: {}. Date: {}. Command: `{}`.\n\n",
        machine(),
        String::from_utf8(
            std::process::Command::new("date")
                .arg("-u")
                .arg("+%Y-%m-%d %H:%M UTC")
                .output()?
                .stdout
        )?
        .trim(),
        std::env::args().collect::<Vec<_>>().join(" ")
    ));
    out.push_str("| workload | ops | errors | ops/s | p50 | p99 | max |\n|---|---:|---:|---:|---:|---:|---:|\n");
    for r in &f.rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms |\n",
            r.what,
            r.ops,
            r.errors,
            r.per_sec,
            r.p50_us as f64 / 1000.0,
            r.p99_us as f64 / 1000.0,
            r.max_us as f64 / 1000.0
        ));
    }
    let fo: Vec<String> = f
        .failovers
        .iter()
        .map(|d| format!("{:.0} ms", d.as_secs_f64() * 1000.0))
        .collect();
    out.push_str(&format!(
        "\nFailover (kill -9 leader → next acknowledged revoke): {}\n\n",
        fo.join(", ")
    ));
    out.push_str(&format!(
        "Loaded {} entries (36-char ids) with RevokeBatch of 10,000 in {:.1} s ({:.0} entries/s).\n\n",
        args.entries,
        f.load_secs,
        args.entries as f64 / f.load_secs
    ));
    out.push_str("| node | RSS after | RSS / entry | data dir after | disk / entry |\n|---|---:|---:|---:|---:|\n");
    for (id, rss_pe, disk_pe, rss, disk) in &f.mem_rows {
        out.push_str(&format!(
            "| {id} | {:.0} MiB | {rss_pe:.0} B | {:.0} MiB | {disk_pe:.0} B |\n",
            *rss as f64 / 1048576.0,
            *disk as f64 / 1048576.0
        ));
    }
    out.push_str(&format!(
        "\nRestart with {} entries: one node (kill -9, restart, serving at the cluster's revision) {:.2} s; whole cluster (SIGTERM all, start all, first linearizable check) {:.2} s.\n",
        args.entries,
        f.node_restart.as_secs_f64(),
        f.cluster_restart.as_secs_f64()
    ));
    Ok(out)
}

/// The figures as JSON (`--json`).
fn json(args: &Args, f: &Figures) -> serde_json::Value {
    serde_json::json!({
        "rows": f.rows,
        "failover_ms": f.failovers.iter().map(|d| d.as_millis() as u64).collect::<Vec<_>>(),
        "load_entries_per_sec": args.entries as f64 / f.load_secs,
        "memory": f.mem_rows.iter().map(|(id, rss_pe, disk_pe, rss, disk)| serde_json::json!({
            "node": id, "rss_bytes_per_entry": rss_pe, "disk_bytes_per_entry": disk_pe, "rss": rss, "disk": disk
        })).collect::<Vec<_>>(),
        "node_restart_secs": f.node_restart.as_secs_f64(),
        "cluster_restart_secs": f.cluster_restart.as_secs_f64(),
    })
}
