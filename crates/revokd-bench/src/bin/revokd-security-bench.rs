//! `revokd-security-bench`: what TLS and admin authorization cost. Starts a real 3-node
//! cluster in each of four set-ups, one after the other in one run, and measures the same
//! durable `Revoke` and `Check` (LOCAL) workloads on each:
//!
//! - plaintext, authorization off (the default);
//! - TLS, mutual TLS between the nodes;
//! - TLS plus bearer tokens (RS256) for writes and reads (`--auth-read-scope`): every call
//!   carries a token the node verifies;
//! - TLS plus an admin client certificate (`--admin-client-ca`), no token.
//!
//! Each row is compared with the plaintext row of the same workload (ops/s ratio), which is
//! the figure to read on a shared machine; `--rounds` repeats the set-ups in turn and keeps
//! each row's median. `REVOKD_BIN` picks the `revokd` binary, so two builds can be compared
//! in turn on one machine.
//!
//! Then the floods (unless `--no-floods`), on a TLS cluster (the secure default), with the
//! target node's resident memory before and at its peak: concurrent 60 MiB `AppendEntries`
//! bodies from a caller without a cluster certificate, `Snapshot` streams that are never read
//! over a set of 200,000 ids, and fake replica ids heartbeated from one address.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use revokd_bench::{closed_loop, machine, Row};
use revokd_proto::clock::unix_now;
use revokd_proto::v1::{self as pb, revocation_client::RevocationClient};
use revokd_testkit::devca::{DevCa, Issued};
use revokd_testkit::jwt::{keys_dir, Algorithm, Signer};
use revokd_testkit::{channel, tls_channel_as, ClusterOptions, ProcessCluster};
use tonic::transport::Channel;

#[derive(Parser, Debug)]
#[command(about = "Measure the cost of TLS and admin authorization on a real 3-node cluster.")]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Concurrent clients for the concurrent rows.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Rounds over the four set-ups (interleaved, so drift on a shared machine hits all
    /// alike); each row reports its median round by ops/s.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Skip the floods.
    #[arg(long)]
    no_floods: bool,
}

/// One way of running the cluster and calling it.
struct Setup {
    name: &'static str,
    node_args: Vec<String>,
    /// The CA clients trust (TLS on).
    ca: Option<Vec<u8>>,
    /// A client certificate to present.
    identity: Option<Issued>,
    /// A bearer token to send.
    token: Option<String>,
}

impl Setup {
    fn channel(&self, addr: &str) -> Result<Channel> {
        match &self.ca {
            None => channel(addr),
            Some(ca) => tls_channel_as(
                addr,
                ca,
                self.identity
                    .as_ref()
                    .map(|i| (i.cert_pem.as_bytes(), i.key_pem.as_bytes())),
            ),
        }
    }
}

/// The four set-ups, with their certificates and keys written under `dir`.
fn setups(dir: &std::path::Path) -> Result<Vec<Setup>> {
    let ca = DevCa::new("bench cluster CA")?;
    let tls_args = ca.node_flags(dir, "node")?;
    let admin_ca = DevCa::new("bench admin CA")?;
    let admin_ca_path = admin_ca.write_ca_as(dir, "admin-ca")?;
    let (iss, aud) = ("https://bench.auth", "revokd");
    let token = Signer::fixture(Algorithm::RS256)?.sign(&serde_json::json!({
        "iss": iss, "aud": aud, "sub": "bench", "scope": "revokd:admin revokd:read",
        "iat": unix_now(), "exp": unix_now() + 3600,
    }))?;
    let with = |extra: &[String]| -> Vec<String> {
        tls_args.iter().chain(extra).cloned().collect::<Vec<_>>()
    };
    let ca_pem = Some(ca.ca_pem.clone().into_bytes());
    Ok(vec![
        Setup {
            name: "plaintext",
            node_args: vec![],
            ca: None,
            identity: None,
            token: None,
        },
        Setup {
            name: "TLS",
            node_args: tls_args.clone(),
            ca: ca_pem.clone(),
            identity: None,
            token: None,
        },
        Setup {
            name: "TLS + bearer token (RS256) on every call",
            node_args: with(&[
                "--auth-key".into(),
                keys_dir().join("rsa_public.pem").display().to_string(),
                "--auth-issuer".into(),
                iss.into(),
                "--auth-audience".into(),
                aud.into(),
                "--auth-read-scope".into(),
                "revokd:read".into(),
            ]),
            ca: ca_pem.clone(),
            identity: None,
            token: Some(token),
        },
        Setup {
            name: "TLS + admin client certificate",
            node_args: with(&[
                "--admin-client-ca".into(),
                admin_ca_path.display().to_string(),
            ]),
            ca: ca_pem,
            identity: Some(admin_ca.issue_client("bench")?),
            token: None,
        },
    ])
}

/// A request carrying the set-up's token, if any.
fn request<T>(body: T, token: &Option<Arc<str>>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(body);
    if let Some(t) = token {
        if let Ok(v) = format!("Bearer {t}").parse() {
            req.metadata_mut().insert("authorization", v);
        }
    }
    req
}

/// A measured row with the CPU time the cluster's nodes spent per successful operation, in
/// microseconds (all three nodes' user and system time over the row, from `/proc`): less
/// swayed by a shared machine's noise than throughput, it shows what a check costs the node.
type Measured = (Row, f64);

/// The CPU time, in seconds, the cluster's node processes have used so far.
fn nodes_cpu_secs(c: &ProcessCluster) -> f64 {
    c.nodes
        .values()
        .filter_map(|n| n.pid())
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the command name (which may hold spaces) close with ')'.
            let rest = stat.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .sum()
}

async fn measure(setup: &Setup, args: &Args) -> Result<Vec<Measured>> {
    let c = ProcessCluster::start_with(
        3,
        ClusterOptions {
            extra_args: setup.node_args.clone(),
            tls_ca: setup.ca.clone(),
        },
    )
    .await?;
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    let token: Option<Arc<str>> = setup.token.as_deref().map(Arc::from);
    let dur = Duration::from_secs(args.secs);
    let leader_pool: Arc<Vec<Channel>> = Arc::new(
        (0..8)
            .map(|_| setup.channel(&c.addr(leader)?))
            .collect::<Result<_>>()?,
    );
    let all_nodes: Arc<Vec<Channel>> = Arc::new(
        c.endpoints()
            .iter()
            .map(|a| setup.channel(a))
            .collect::<Result<_>>()?,
    );
    let mut rows = Vec::new();
    for clients in [1, args.clients] {
        let (pool, token) = (leader_pool.clone(), token.clone());
        let run = closed_loop(
            format!("Revoke, {clients} clients | {}", setup.name),
            clients,
            dur,
            move |t, i| {
                let mut api = RevocationClient::new(pool[t % pool.len()].clone());
                let req = request(
                    pb::RevokeRequest {
                        token: Some(pb::RevokedTokenSpec {
                            jti: format!("s{clients}-{t}-{i}"),
                            expires_at: unix_now() + 3600,
                            reason: String::new(),
                            subject: String::new(),
                        }),
                    },
                    &token,
                );
                async move { api.revoke(req).await.is_ok() }
            },
        );
        rows.push(costed(&c, run).await);
    }
    let (nodes, token, clients) = (all_nodes.clone(), token.clone(), args.clients);
    let run = closed_loop(
        format!("Check LOCAL, {clients} clients | {}", setup.name),
        clients,
        dur,
        move |t, i| {
            let mut api = RevocationClient::new(nodes[(t + i as usize) % nodes.len()].clone());
            let req = request(
                pb::CheckRequest {
                    token: Some(pb::TokenQuery {
                        jti: format!("s1-0-{i}"),
                        ..Default::default()
                    }),
                    consistency: pb::Consistency::Local as i32,
                    min_revision: 0,
                },
                &token,
            );
            async move { api.check(req).await.is_ok() }
        },
    );
    rows.push(costed(&c, run).await);
    Ok(rows)
}

/// Runs one workload and measures what it cost the nodes: CPU microseconds per operation,
/// summed over every node's process.
async fn costed(c: &ProcessCluster, run: impl std::future::Future<Output = Row>) -> Measured {
    let cpu = nodes_cpu_secs(c);
    let row = run.await;
    eprintln!("  {row:?}");
    let per_op = (nodes_cpu_secs(c) - cpu) * 1e6 / row.ops.max(1) as f64;
    (row, per_op)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let setups = setups(dir.path())?;
    let mut rounds: Vec<Vec<Measured>> = Vec::new();
    for round in 0..args.rounds.max(1) {
        let mut rows = Vec::new();
        for setup in &setups {
            eprintln!("== round {round}: {}", setup.name);
            rows.extend(measure(setup, &args).await?);
        }
        rounds.push(rows);
    }
    // Per row, the round with the median ops/s.
    let results: Vec<Measured> = (0..rounds[0].len())
        .map(|i| {
            let mut samples: Vec<&Measured> = rounds.iter().map(|r| &r[i]).collect();
            samples.sort_by(|a, b| a.0.per_sec.total_cmp(&b.0.per_sec));
            samples[samples.len() / 2].clone()
        })
        .collect();
    // Every call must have been served in every round.
    let all: Vec<&Row> = rounds.iter().flatten().map(|(r, _)| r).collect();
    let date = String::from_utf8(
        std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()?
            .stdout,
    )?;
    println!(
        "Machine: {}. Date: {}. Command: `{}`.\n",
        machine(),
        date.trim(),
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    println!(
        "| workload | set-up | ops/s | errors | p50 | p99 | ops/s vs plaintext | node CPU per op |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for (r, cpu) in &results {
        let (workload, setup) = r.what.split_once(" | ").unwrap_or((&r.what, ""));
        let base = results
            .iter()
            .find(|(b, _)| b.what == format!("{workload} | plaintext"))
            .map_or(f64::NAN, |(b, _)| r.per_sec / b.per_sec);
        println!(
            "| {workload} | {setup} | {:.0} | {} | {:.2} ms | {:.2} ms | {base:.2}x | {cpu:.0} us |",
            r.per_sec,
            r.errors,
            r.p50_us as f64 / 1000.0,
            r.p99_us as f64 / 1000.0,
        );
    }
    // A refused credential would only show as errors.
    let failed: Vec<&&Row> = all.iter().filter(|r| r.ops == 0 || r.errors > 0).collect();
    anyhow::ensure!(failed.is_empty(), "calls failed in {failed:?}");
    if !args.no_floods {
        floods(dir.path()).await?;
    }
    Ok(())
}

const MIB: u64 = 1024 * 1024;

/// Runs the floods against a 3-node TLS cluster and prints what each cost the node it hit.
async fn floods(dir: &std::path::Path) -> Result<()> {
    let ca = DevCa::new("bench flood CA")?;
    let c = ProcessCluster::start_with(
        3,
        ClusterOptions {
            extra_args: ca.node_flags(&dir.join("floods"), "node")?,
            tls_ca: Some(ca.ca_pem.clone().into_bytes()),
        },
    )
    .await?;
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    let target = if leader == 1 { 2 } else { 1 };
    let node = Target {
        addr: c.addr(target)?,
        ca_pem: ca.ca_pem.as_bytes(),
        pid: c.nodes[&target].pid().context("the target node runs")?,
    };
    println!(
        "\nFloods against one node of a 3-node TLS cluster (node RSS before and at its peak):\n"
    );
    println!("| flood | outcome | RSS before | RSS peak |");
    println!("|---|---|---:|---:|");
    raft_body_flood_row(&node).await?;
    stalled_snapshots_row(&node).await?;
    heartbeat_flood_row(&node).await?;
    Ok(())
}

/// The node a flood hits: where it listens, the CA to trust, and its process.
struct Target<'a> {
    addr: String,
    ca_pem: &'a [u8],
    pid: u32,
}

impl Target<'_> {
    fn channel(&self) -> Result<Channel> {
        revokd_testkit::tls_channel(&self.addr, self.ca_pem)
    }
}

/// Concurrent 60 MiB `AppendEntries` bodies from a caller without a cluster certificate.
async fn raft_body_flood_row(node: &Target<'_>) -> Result<()> {
    use revokd_testkit::floods::{peak_rss_during, raft_body_flood, rss};
    let before = rss(node.pid)?;
    let (statuses, peak) = peak_rss_during(
        node.pid,
        raft_body_flood(node.channel()?, 50, 60 * MIB as usize),
    )
    .await;
    let refused = statuses?.iter().filter(|s| *s == "16").count();
    println!(
        "| 50 concurrent 60 MiB AppendEntries bodies, no cluster certificate | {refused} of 50 refused UNAUTHENTICATED before the body | {} MiB | {} MiB |",
        before / MIB,
        peak / MIB
    );
    Ok(())
}

/// `Snapshot` streams that are never read, over a set of 200,000 ids, then one more.
async fn stalled_snapshots_row(node: &Target<'_>) -> Result<()> {
    use revokd_testkit::floods::{peak_rss_during, rss, stalled_snapshots};
    let mut api = RevocationClient::new(node.channel()?);
    for i in (0..200_000).step_by(10_000) {
        api.revoke_batch(pb::RevokeBatchRequest {
            tokens: (i..i + 10_000)
                .map(|n| pb::RevokedTokenSpec {
                    jti: format!("flood-{n:08}-0123456789abcdef0123456789abcdef"),
                    expires_at: unix_now() + 3600,
                    reason: "a reason long enough to be counted".into(),
                    subject: "someone@example.com".into(),
                })
                .collect(),
        })
        .await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss(node.pid)?;
    let (stalled, peak) = peak_rss_during(node.pid, stalled_snapshots(32, || node.channel())).await;
    let stalled = stalled?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let peak = peak.max(rss(node.pid)?);
    let refused = api.snapshot(pb::SnapshotRequest::default()).await.is_err();
    println!(
        "| 32 Snapshot streams never read, 200,000 ids in the set | all 32 open, one shared copy; a 33rd {} | {} MiB | {} MiB |",
        if refused { "refused RESOURCE_EXHAUSTED" } else { "served" },
        before / MIB,
        peak / MIB
    );
    drop(stalled);
    Ok(())
}

/// Heartbeats with fake replica ids (claiming `u64::MAX` applied) from one address.
async fn heartbeat_flood_row(node: &Target<'_>) -> Result<()> {
    use revokd_testkit::floods::{peak_rss_during, rss};
    let before = rss(node.pid)?;
    let mut forger = revokd_proto::v1::cluster_client::ClusterClient::new(node.channel()?);
    let (outcome, peak) = peak_rss_during(node.pid, async {
        let (mut taken, mut refused) = (0, 0);
        for i in 0..1000 {
            let hb = pb::HeartbeatRequest {
                replica_id: format!("fake-{i}"),
                description: "flood".into(),
                applied_revision: u64::MAX,
            };
            match forger.heartbeat(hb).await {
                Ok(_) => taken += 1,
                Err(_) => refused += 1,
            }
        }
        (taken, refused)
    })
    .await;
    println!(
        "| 1,000 heartbeats with fake replica ids (applied u64::MAX) from one address | {} registered (at the commit revision), {} refused RESOURCE_EXHAUSTED | {} MiB | {} MiB |",
        outcome.0,
        outcome.1,
        before / MIB,
        peak / MIB
    );
    Ok(())
}
