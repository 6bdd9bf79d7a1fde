//! Watch fan-out: how one node serves 1,000, 5,000 and 10,000 watching replicas.
//!
//! Starts a real 3-node cluster, opens N `Watch` streams on one follower (many streams over a
//! bounded number of HTTP/2 connections, as a load tool; a few real `revokd-client` replicas
//! pinned to the same node beside them), then sends sequential revokes to the leader and
//! records, for every stream, when each revoke arrived. Reports the delay from sending each
//! revoke to its arrival on every stream (p50/p99/max) and until the last stream had it (the
//! write's own commit included: a follower often delivers before the writer has read its
//! acknowledgement, so the delay from the ack would be negative), the write's acknowledgement
//! latency, the node's RSS per watcher and its CPU per delivered change, and any stream that
//! broke or missed a change.
//!
//! `cargo build --release --workspace && ./target/release/revokd-fanout`

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use revokd_bench::{hist, machine, rss_bytes};
use revokd_client::{Client, ClientConfig, Replica, ReplicaConfig};
use revokd_proto::v1::{self as pb, event::Change, revocation_client::RevocationClient};
use revokd_testkit::{channel, eventually, ClusterOptions, ProcessCluster};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

#[derive(Parser, Debug)]
#[command(about = "Benchmark Watch fan-out: one node serving thousands of watching replicas.")]
struct Args {
    /// Watch streams on the watched node, one measurement each.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    watchers: Vec<usize>,
    /// Streams per HTTP/2 connection (the node allows 1,024).
    #[arg(long, default_value_t = 500)]
    streams_per_connection: usize,
    /// Real `revokd-client` replicas on the watched node beside the streams.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Sequential revokes per measurement.
    #[arg(long, default_value_t = 40)]
    writes: usize,
    /// Extra flags for every node, e.g. `--node-args=--max-connections-per-address=0` to give
    /// every stream its own connection (`--streams-per-connection 1`).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    node_args: Vec<String>,
    /// Pause between two revokes, so one fan-out does not overlap the next.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    gap: Duration,
}

/// What one stream saw: when each measured revoke arrived (by its index), and whether the
/// stream broke.
struct StreamLog {
    arrived: Vec<Option<Instant>>,
    broke: Option<String>,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// When each revision became visible to one real replica.
type Seen = Vec<(u64, Instant)>;

/// The index of a measured revoke from its id (`fan-<level>-<k>`).
fn index_of(jti: &str, prefix: &str) -> Option<usize> {
    jti.strip_prefix(prefix)?.parse().ok()
}

/// Opens one `Watch` from `from` and records arrivals until the last measured revoke arrives,
/// `stop` fires, or the stream breaks. `settled` counts streams that saw a revision past
/// `from` or broke.
fn spawn_stream(
    ch: Channel,
    from: u64,
    prefix: String,
    writes: usize,
    settled: Arc<std::sync::atomic::AtomicUsize>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> JoinHandle<StreamLog> {
    tokio::spawn(async move {
        let mut counted = false;
        let log = follow(ch, from, &prefix, writes, &settled, &mut counted, stop).await;
        if !counted {
            settled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        log
    })
}

async fn follow(
    ch: Channel,
    from: u64,
    prefix: &str,
    writes: usize,
    ready: &std::sync::atomic::AtomicUsize,
    counted: &mut bool,
    stop: tokio::sync::watch::Receiver<bool>,
) -> StreamLog {
    {
        let mut log = StreamLog {
            arrived: vec![None; writes],
            broke: None,
        };
        let mut api = RevocationClient::new(ch);
        let mut req = tonic::Request::new(pb::WatchRequest {
            from_revision: from,
        });
        req.set_timeout(Duration::from_secs(3600));
        let mut stream = match api.watch(req).await {
            Ok(s) => s.into_inner(),
            Err(e) => {
                log.broke = Some(format!("open: {}", e.code()));
                return log;
            }
        };
        let (mut stop, mut seen) = (stop, 0);
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = stop.changed() => return log,
            };
            let now = Instant::now();
            match msg {
                Ok(Some(m)) => {
                    if !*counted && m.revision > from {
                        *counted = true;
                        ready.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    for e in m.events {
                        if let Some(Change::Revoked(t)) = e.change {
                            if let Some(k) = index_of(&t.jti, prefix).filter(|k| *k < writes) {
                                log.arrived[k].get_or_insert(now);
                                seen += 1;
                            }
                        }
                    }
                    if seen >= writes {
                        return log;
                    }
                }
                Ok(None) => {
                    log.broke = Some("ended by the node".into());
                    return log;
                }
                Err(e) => {
                    log.broke = Some(format!("{}: {}", e.code(), e.message()));
                    return log;
                }
            }
        }
    }
}

/// A lazily connecting channel for watch streams: thousands connect at once here, on a
/// machine the node shares, so the connect timeout is generous and no call deadline applies.
fn watch_channel(addr: &str) -> Result<Channel> {
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .connect_lazy(),
    )
}

/// CPU seconds (user + system) the process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| f.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

async fn revoke(leader: &mut RevocationClient<Channel>, jti: String) -> Result<u64> {
    let mut req = tonic::Request::new(pb::RevokeRequest {
        token: Some(pb::RevokedTokenSpec {
            jti,
            expires_at: unix_now() + 3600,
            reason: String::new(),
            subject: String::new(),
        }),
    });
    req.set_timeout(Duration::from_secs(10));
    Ok(leader.revoke(req).await?.into_inner().revision)
}

/// One measurement with `n` streams; prints its rows.
/// `base_rss` is the watched node's RSS before the first measurement: memory a level frees is
/// kept by the allocator for the next, so each level counts from there.
async fn level(
    c: &ProcessCluster,
    (watched, leader): (u64, u64),
    n: usize,
    base_rss: u64,
    args: &Args,
) -> Result<()> {
    let pid = c.nodes[&watched]
        .pid()
        .context("watched node not running")?;
    let addr = c.addr(watched)?;
    let mut admin = RevocationClient::new(channel(&c.addr(leader)?)?);
    let prefix = format!("fan-{n}-");
    let rss0 = rss_bytes(pid)?;
    let from = revoke(&mut admin, format!("fan-{n}-warmup")).await?;
    eventually(Duration::from_secs(10), || async {
        let s = c.status(watched).await?;
        anyhow::ensure!(s.applied_revision >= from, "watched node behind");
        Ok(())
    })
    .await?;

    // Streams, over ceil(n / streams_per_connection) connections.
    let conns = n.div_ceil(args.streams_per_connection.max(1));
    let channels: Vec<Channel> = (0..conns)
        .map(|_| watch_channel(&addr))
        .collect::<Result<_>>()?;
    let ready = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let opened = Instant::now();
    let streams: Vec<JoinHandle<StreamLog>> = (0..n)
        .map(|i| {
            spawn_stream(
                channels[i % conns].clone(),
                from,
                prefix.clone(),
                args.writes,
                ready.clone(),
                stop_rx.clone(),
            )
        })
        .collect();
    // Real replicas, pinned to the watched node.
    let mut replicas = Vec::new();
    for i in 0..args.replicas {
        let mut cfg = ClientConfig::new([addr.clone()]);
        cfg.timeout = Duration::from_secs(30);
        let client = Client::connect(cfg).await?;
        let rc = ReplicaConfig {
            replica_id: format!("fanout-{n}-{i}"),
            ..ReplicaConfig::default()
        };
        replicas.push(Replica::connect(client, rc, Duration::from_secs(60)).await?);
    }
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::new(Mutex::new(vec![Vec::new(); replicas.len()]));
    let mut followers = Vec::new();
    for (i, r) in replicas.iter().enumerate() {
        let (mut rx, seen) = (r.revisions(), seen.clone());
        followers.push(tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let rev = *rx.borrow_and_update();
                seen.lock().expect("lock")[i].push((rev, Instant::now()));
            }
        }));
    }
    // Every stream is open once it has seen a revision past `from` (or has broken): send
    // one more revoke.
    revoke(&mut admin, format!("fan-{n}-open")).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while ready.load(std::sync::atomic::Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            bail!(
                "only {} of {n} streams open or broken after 120 s",
                ready.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open_secs = opened.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = rss_bytes(pid)?;

    // The measured revokes.
    let cpu0 = (cpu_secs(pid), cpu_secs(std::process::id()));
    let mut acks = Vec::with_capacity(args.writes);
    let mut ack_h = hist();
    for k in 0..args.writes {
        let t0 = Instant::now();
        let rev = revoke(&mut admin, format!("{prefix}{k}")).await?;
        let _ = ack_h.record(t0.elapsed().as_micros().max(1) as u64);
        acks.push((rev, t0));
        tokio::time::sleep(args.gap).await;
    }
    let cpu = cpu_secs(pid) - cpu0.0;
    let tool_cpu = cpu_secs(std::process::id()) - cpu0.1;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_tx.send(true);
    let mut all = hist();
    let mut last = hist();
    let (mut missed, mut broke) = (0usize, Vec::new());
    let mut per_write_last = vec![Duration::ZERO; args.writes];
    for s in streams {
        let log = s.await?;
        if let Some(b) = log.broke {
            broke.push(b);
        }
        for (k, a) in log.arrived.iter().enumerate() {
            match a {
                Some(t) => {
                    let d = t.saturating_duration_since(acks[k].1);
                    let _ = all.record(d.as_micros().max(1) as u64);
                    per_write_last[k] = per_write_last[k].max(d);
                }
                None => missed += 1,
            }
        }
    }
    for d in &per_write_last {
        let _ = last.record(d.as_micros().max(1) as u64);
    }
    let mut rep = hist();
    for s in seen.lock().expect("lock").iter() {
        for (rev, at) in &acks {
            if let Some((_, t)) = s.iter().find(|(r, _)| r >= rev) {
                let _ = rep.record(t.saturating_duration_since(*at).as_micros().max(1) as u64);
            }
        }
    }
    for f in followers {
        f.abort();
    }
    let watchers = n + replicas.len();
    println!(
        "| {n} | {} | {open_secs:.1} s | {} / {} / {} us | {} / {} us | {} / {} us | {} us | {:.0} KiB | {:.1} us | {} | {} |",
        conns,
        all.value_at_quantile(0.5),
        all.value_at_quantile(0.99),
        all.max(),
        last.value_at_quantile(0.5),
        last.value_at_quantile(0.99),
        rep.value_at_quantile(0.5),
        rep.value_at_quantile(0.99),
        ack_h.value_at_quantile(0.5),
        rss1.saturating_sub(base_rss) as f64 / watchers as f64 / 1024.0,
        cpu * 1e6 / (args.writes * watchers) as f64,
        missed,
        if broke.is_empty() {
            "none".to_string()
        } else {
            format!("{}: {}", broke.len(), broke[0])
        },
    );
    eprintln!(
        "  {n} streams: node RSS {} -> {} MiB, {cpu:.2} CPU seconds for {} writes (this load tool: {tool_cpu:.2})",
        rss0 >> 20,
        rss1 >> 20,
        args.writes
    );
    drop(replicas);
    drop(channels);
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    // Every stream here comes from one address; in production each validator has its own
    // read budget, so the bench lifts the per-address read limit instead of pacing opens.
    let mut node_args = vec!["--read-rate-limit=0".to_string()];
    node_args.extend(args.node_args.iter().cloned());
    let opts = ClusterOptions::args(node_args);
    let c = ProcessCluster::start_with(3, opts).await?;
    let leader = c.wait_leader(Duration::from_secs(10)).await?;
    let watched = *c
        .nodes
        .keys()
        .find(|id| **id != leader)
        .context("no follower")?;
    println!(
        "{}. Command: `./target/release/revokd-fanout {}`. Watched node: a follower.\n",
        machine(),
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    println!("| streams | connections | open all | sent → arrival on every stream p50 / p99 / max | sent → last stream p50 / p99 | sent → visible in {} real replicas p50 / p99 | write ack p50 | node RSS per watcher | node CPU per change per watcher | missed | broken |", args.replicas);
    println!("|---:|---:|---:|---|---|---|---:|---:|---:|---:|---|");
    let base_rss = rss_bytes(
        c.nodes[&watched]
            .pid()
            .context("watched node not running")?,
    )?;
    for &n in &args.watchers {
        eprintln!("{n} watchers...");
        level(&c, (watched, leader), n, base_rss, &args).await?;
    }
    Ok(())
}
