//! `revokd-compare`: the same revocation workloads against revokd and the systems users would
//! pick instead, on loopback, in one run. Every system is started fresh, by this program, for
//! each workload (etcd 3.4's reads degrade after a few hundred thousand writes until it
//! restarts), and stopped by PID.
//!
//! - writes: revokd 3 nodes (durable on a quorum) vs etcd 3 members (a plain `put`, as a
//!   denylist with its own purge would write, and a `put` with a lease, as a TTL denylist needs)
//!   vs Redis (`SET jti reason EX ttl`, with `appendonly no` and with `appendfsync always`);
//! - reads: revokd's local replica; revokd's remote `Check` (LOCAL and LINEARIZABLE) against
//!   Redis `GET`, etcd's serializable and linearizable `get`, and the ceiling of a unary gRPC
//!   call here (a bare tonic health server); `CheckBatch` against pipelined Redis `GET`s;
//! - propagation to a validator: revokd replica (watch) vs an etcd watch.
//!
//! The load for each peer comes from its well-known client library (the `redis` and
//! `etcd-client` crates), configured as its users would: etcd's load is spread over
//! `--etcd-connections` clients (revokd's client keeps one connection per node). Run through
//! `scripts/compare.sh`, which installs the peers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use etcd_client::{GetOptions, PutOptions};
use hdrhistogram::Histogram;
use revokd_bench::{hist, machine, start_redis, uuidish, Spawned};
use revokd_client::{
    Client, ClientConfig, Consistency, Replica, ReplicaConfig, Revoke, TokenQuery,
};
use revokd_proto::clock::unix_now;
use revokd_proto::v1 as pb;
use revokd_testkit::process::Process;
use revokd_testkit::{free_port, ProcessCluster};

#[derive(Parser, Debug)]
#[command(about = "Compare revokd with etcd and Redis as a JWT denylist, side by side.")]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Concurrent clients for writes and remote reads.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Independent etcd clients the etcd load is spread over (client task `t` uses `t % n`);
    /// each balances over the three members, as `etcd-client` does.
    #[arg(long, default_value_t = 4)]
    etcd_connections: usize,
    /// Ids per call in the batched check rows (`CheckBatch`, and a Redis pipeline of `GET`s).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Entries loaded before the read workloads.
    #[arg(long, default_value_t = 100_000)]
    entries: usize,
    /// Revokes for the propagation workload.
    #[arg(long, default_value_t = 200)]
    propagation: usize,
    /// The etcd binary.
    #[arg(long, default_value = "etcd")]
    etcd: String,
    /// The Redis server binary.
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
    /// Which workload groups to run (all by default).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "writes,reads,propagation"
    )]
    only: Vec<Group>,
    /// Internal: serve the bare unary ceiling on this loopback port and nothing else (the
    /// comparison starts itself with it, so the ceiling runs in its own process as a node does).
    #[arg(long, hide = true)]
    serve_ceiling: Option<u16>,
}

/// A group of workloads, for `--only`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    /// Durable revokes.
    Writes,
    /// Checks, one id and batched, every consistency, and the unary ceiling.
    Reads,
    /// Writer's acknowledgement to a validator seeing the write.
    Propagation,
}

/// One measured row.
struct Row {
    workload: String,
    system: String,
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    note: String,
}

fn row(workload: &str, system: &str, h: &Histogram<u64>, secs: f64, note: &str) -> Row {
    Row {
        workload: workload.into(),
        system: system.into(),
        ops_per_sec: h.len() as f64 / secs,
        p50_us: h.value_at_quantile(0.5) as f64 / 1000.0,
        p99_us: h.value_at_quantile(0.99) as f64 / 1000.0,
        note: note.into(),
    }
}

/// Runs `op` from `clients` tasks for `dur`; latencies in nanoseconds.
async fn closed_loop<F, Fut>(clients: usize, dur: Duration, op: F) -> Result<(Histogram<u64>, f64)>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let end = start + dur;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = hist();
            let mut i = 0u64;
            while Instant::now() < end {
                let t0 = Instant::now();
                op(c, i).await?;
                let _ = h.record(t0.elapsed().as_nanos().max(1) as u64);
                i += 1;
            }
            Ok::<_, anyhow::Error>(h)
        }));
    }
    let mut h = hist();
    for t in tasks {
        let _ = h.add(t.await??);
    }
    Ok((h, start.elapsed().as_secs_f64()))
}

/// Runs a blocking `op` from `clients` threads for `dur` (for the synchronous Redis client).
fn threads_loop<F>(clients: usize, dur: Duration, op: F) -> Result<(Histogram<u64>, f64)>
where
    F: Fn(usize) -> Result<Box<dyn FnMut(u64) -> Result<()>>> + Sync,
{
    let start = Instant::now();
    let end = start + dur;
    let hs: Vec<Result<Histogram<u64>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let op = &op;
                s.spawn(move || {
                    let mut f = op(c)?;
                    let mut h = hist();
                    let mut i = 0u64;
                    while Instant::now() < end {
                        let t0 = Instant::now();
                        f(i)?;
                        let _ = h.record(t0.elapsed().as_nanos().max(1) as u64);
                        i += 1;
                    }
                    Ok(h)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("thread panicked")))
            })
            .collect()
    });
    let mut h = hist();
    for x in hs {
        let _ = h.add(x?);
    }
    Ok((h, start.elapsed().as_secs_f64()))
}

/// A fresh 3-member etcd cluster on loopback; returns its client endpoints.
async fn start_etcd(bin: &str) -> Result<(Spawned, Vec<String>)> {
    let dir = tempfile::tempdir()?;
    let ports: Vec<(u16, u16)> = (0..3)
        .map(|_| Ok((free_port()?, free_port()?)))
        .collect::<Result<_>>()?;
    let initial = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("n{i}=http://127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut children = Vec::new();
    for (i, (client, peer)) in ports.iter().enumerate() {
        let mut etcd = Process::new(
            format!("etcd n{i}"),
            bin,
            [
                "--name".to_owned(),
                format!("n{i}"),
                "--data-dir".into(),
                dir.path().join(format!("n{i}")).display().to_string(),
                "--listen-client-urls".into(),
                format!("http://127.0.0.1:{client}"),
                "--advertise-client-urls".into(),
                format!("http://127.0.0.1:{client}"),
                "--listen-peer-urls".into(),
                format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls".into(),
                format!("http://127.0.0.1:{peer}"),
                "--initial-cluster".into(),
                initial.clone(),
                "--initial-cluster-state".into(),
                "new".into(),
                "--initial-cluster-token".into(),
                "revokd-compare".into(),
            ],
        );
        etcd.start()
            .with_context(|| format!("starting {bin} (install etcd-server)"))?;
        children.push(etcd);
    }
    let procs = Spawned { children, dir };
    let endpoints: Vec<String> = ports
        .iter()
        .map(|(c, _)| format!("http://127.0.0.1:{c}"))
        .collect();
    for _ in 0..100 {
        if let Ok(mut c) = etcd_client::Client::connect(&endpoints, None).await {
            if c.put("ready", "1", None).await.is_ok() {
                return Ok((procs, endpoints));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("etcd did not become ready")
}

/// `n` independent clients of the etcd cluster at `endpoints` (each its own connections,
/// balanced over the members), for spreading load as a service with several workers would.
async fn etcd_pool(endpoints: &[String], n: usize) -> Result<Arc<Vec<etcd_client::Client>>> {
    let mut pool = Vec::new();
    for _ in 0..n.max(1) {
        pool.push(etcd_client::Client::connect(endpoints, None).await?);
    }
    Ok(Arc::new(pool))
}

/// The note on every etcd row: how it was driven.
fn etcd_note(args: &Args) -> String {
    format!("fresh cluster; {} clients", args.etcd_connections.max(1))
}

async fn revokd_client(cluster: &ProcessCluster) -> Result<Client> {
    let mut c = ClientConfig::new(cluster.endpoints());
    c.timeout = Duration::from_secs(30);
    Ok(Client::connect(c).await?)
}

async fn writes(args: &Args, rows: &mut Vec<Row>) -> Result<()> {
    let dur = Duration::from_secs(args.secs);
    for &c in &args.clients {
        let w = format!("durable revoke, {c} client(s)");
        eprintln!("{w}...");
        {
            let cluster = ProcessCluster::start(3).await?;
            let client = revokd_client(&cluster).await?;
            let (h, s) = closed_loop(c, dur, move |t, i| {
                let client = client.clone();
                async move {
                    client
                        .revoke(Revoke::new(format!("w-{t}-{i}"), unix_now() + 3600))
                        .await?;
                    Ok(())
                }
            })
            .await?;
            rows.push(row(&w, "revokd, 3 nodes (quorum fsync)", &h, s, ""));
        }
        for with_lease in [false, true] {
            let (_etcd, ep) = start_etcd(&args.etcd).await?;
            let pool = etcd_pool(&ep, args.etcd_connections).await?;
            let options = if with_lease {
                let lease = pool[0].clone().lease_grant(3600, None).await?.id();
                Some(PutOptions::new().with_lease(lease))
            } else {
                None
            };
            let (h, s) = closed_loop(c, dur, move |t, i| {
                let mut kv = pool[t % pool.len()].kv_client();
                let options = options.clone();
                async move {
                    kv.put(format!("revoked/w-{t}-{i}"), "reason", options)
                        .await?;
                    Ok(())
                }
            })
            .await?;
            let system = if with_lease {
                "etcd 3.4, 3 members (put with lease)"
            } else {
                "etcd 3.4, 3 members (plain put)"
            };
            rows.push(row(&w, system, &h, s, &etcd_note(args)));
        }
        for fsync in [false, true] {
            let (_redis, url) = start_redis(&args.redis_server, fsync)?;
            let (h, s) = threads_loop(c, dur, |t| {
                let mut con = redis::Client::open(url.as_str())?.get_connection()?;
                Ok(Box::new(move |i| {
                    redis::cmd("SET")
                        .arg(format!("w-{t}-{i}"))
                        .arg("reason")
                        .arg("EX")
                        .arg(3600)
                        .query::<()>(&mut con)?;
                    Ok(())
                }))
            })?;
            let system = if fsync {
                "Redis, appendfsync always"
            } else {
                "Redis, no persistence"
            };
            rows.push(row(&w, system, &h, s, "single node"));
        }
    }
    Ok(())
}

/// The entry client `t` reads on its `i`-th call: every system gets the same sequence, spread
/// over the whole set.
fn spread(t: usize, i: u64, n: usize) -> usize {
    (t * 7919 + i as usize * 31) % n
}

async fn reads(args: &Args, rows: &mut Vec<Row>) -> Result<()> {
    let dur = Duration::from_secs(args.secs);
    let n = args.entries;
    let ids: Arc<Vec<String>> = Arc::new((0..n as u64).map(uuidish).collect());
    eprintln!("reads over {n} entries...");
    revokd_reads(args, &ids, dur, rows).await?;
    echo_reads(args, dur, rows).await?;
    redis_reads(args, &ids, dur, rows)?;
    etcd_reads(args, &ids, dur, rows).await?;
    Ok(())
}

/// The read workloads, each a row group with its own ratio column.
#[derive(Clone, Copy)]
enum Read {
    /// One id per call, from any member (revokd LOCAL, Redis, etcd serializable).
    Any,
    /// One id per call, linearizable.
    Linearizable,
    /// `--batch` ids per call; rows count ids, not calls.
    Batch,
}

/// A read row: `c` clients checking ids on `system`.
fn check_row(read: Read, c: usize, system: &str, h: &Histogram<u64>, secs: f64, note: &str) -> Row {
    let workload = match read {
        Read::Any => format!("check, any member, {c} client(s)"),
        Read::Linearizable => format!("check, linearizable, {c} client(s)"),
        Read::Batch => format!("batched check, ids/s, {c} client(s)"),
    };
    row(&workload, system, h, secs, note)
}

/// A replica following `cluster`, bootstrapped.
async fn revokd_replica(cluster: &ProcessCluster) -> Result<Replica> {
    Ok(Replica::connect(
        revokd_client(cluster).await?,
        ReplicaConfig::default(),
        Duration::from_secs(60),
    )
    .await?)
}

/// revokd: the local replica in this process, then remote `Check`s (LOCAL and LINEARIZABLE)
/// and `CheckBatch`es per client count.
async fn revokd_reads(
    args: &Args,
    ids: &Arc<Vec<String>>,
    dur: Duration,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let cluster = ProcessCluster::start(3).await?;
    let client = revokd_client(&cluster).await?;
    for chunk in ids.chunks(10_000) {
        let batch: Vec<Revoke> = chunk
            .iter()
            .map(|j| Revoke::new(j, unix_now() + 3600))
            .collect();
        client.revoke_many(&batch).await?;
    }
    let replica = revokd_replica(&cluster).await?;
    rows.push(local_replica_row(&replica, ids, dur));
    for (read, consistency, system) in [
        (Read::Any, Consistency::Local, "revokd remote Check (LOCAL)"),
        (
            Read::Linearizable,
            Consistency::Linearizable,
            "revokd remote Check (LINEARIZABLE)",
        ),
    ] {
        for &c in &args.clients {
            let ids = ids.clone();
            let client = client.clone();
            let (h, s) = closed_loop(c, dur, move |t, i| {
                let client = client.clone();
                let jti = ids[spread(t, i, ids.len())].clone();
                async move {
                    let query = TokenQuery {
                        jti: &jti,
                        ..Default::default()
                    };
                    client.check(&query, consistency).await?;
                    Ok(())
                }
            })
            .await?;
            rows.push(check_row(read, c, system, &h, s, ""));
        }
    }
    // The same `Check` through the generated client on one channel to one node, as the
    // ceiling is called: the node's stack without revokd-client's routing, deadlines and
    // retries.
    let one = cluster.revocation(1)?;
    for &c in &args.clients {
        let ids = ids.clone();
        let one = one.clone();
        let (h, s) = closed_loop(c, dur, move |t, i| {
            let mut one = one.clone();
            let jti = ids[spread(t, i, ids.len())].clone();
            async move {
                one.check(pb::CheckRequest {
                    token: Some(pb::TokenQuery {
                        jti,
                        ..Default::default()
                    }),
                    consistency: pb::Consistency::Local as i32,
                    min_revision: 0,
                })
                .await?;
                Ok(())
            }
        })
        .await?;
        rows.push(check_row(
            Read::Any,
            c,
            "revokd Check (LOCAL), generated client, one node",
            &h,
            s,
            "one channel, as the ceiling is called",
        ));
    }
    // `CheckBatch` has no wrapper in the client (validators batch against their replica): the
    // generated client, one per node, spread over the client tasks as `Check` spreads.
    let nodes: Arc<Vec<_>> = Arc::new(
        (1..=3)
            .map(|id| cluster.revocation(id))
            .collect::<Result<_>>()?,
    );
    let batch = args.batch.max(1);
    for &c in &args.clients {
        let ids = ids.clone();
        let nodes = nodes.clone();
        let (h, s) = closed_loop(c, dur, move |t, i| {
            let mut node = nodes[t % nodes.len()].clone();
            let tokens = (0..batch)
                .map(|k| pb::TokenQuery {
                    jti: ids[spread(t, i * batch as u64 + k as u64, ids.len())].clone(),
                    ..Default::default()
                })
                .collect();
            async move {
                node.check_batch(pb::CheckBatchRequest {
                    tokens,
                    consistency: pb::Consistency::Local as i32,
                    min_revision: 0,
                })
                .await?;
                Ok(())
            }
        })
        .await?;
        rows.push(batch_row(c, "revokd CheckBatch (LOCAL)", &h, s, batch, ""));
    }
    Ok(())
}

/// A batched row: each recorded call checked `batch` ids, so throughput counts ids.
fn batch_row(
    c: usize,
    system: &str,
    h: &Histogram<u64>,
    secs: f64,
    batch: usize,
    note: &str,
) -> Row {
    let mut r = check_row(Read::Batch, c, system, h, secs, note);
    r.ops_per_sec *= batch as f64;
    r.note = format!("{batch} ids per call; latency per call. {note}");
    r
}

/// The ceiling for any unary gRPC call on this machine: a bare tonic server in its own process
/// (the node's transport settings, none of its layers) answering
/// `grpc.health.v1.Health/Check`, called through one channel as a client library would.
async fn echo_reads(args: &Args, dur: Duration, rows: &mut Vec<Row>) -> Result<()> {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let port = free_port()?;
    let mut server = Process::new(
        "unary ceiling",
        std::env::current_exe()?,
        ["--serve-ceiling".to_string(), port.to_string()],
    );
    server.start()?;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2));
    let channel = revokd_testkit::eventually(Duration::from_secs(10), || {
        let endpoint = endpoint.clone();
        async move {
            let channel = endpoint.connect().await?;
            HealthClient::new(channel.clone())
                .check(HealthCheckRequest::default())
                .await?;
            Ok(channel)
        }
    })
    .await?;
    for &c in &args.clients {
        let channel = channel.clone();
        let (h, s) = closed_loop(c, dur, move |_, _| {
            let mut health = HealthClient::new(channel.clone());
            async move {
                health.check(HealthCheckRequest::default()).await?;
                Ok(())
            }
        })
        .await?;
        rows.push(check_row(
            Read::Any,
            c,
            "bare tonic unary call (ceiling)",
            &h,
            s,
            "grpc.health.v1 Check, own process",
        ));
    }
    Ok(())
}

/// The ceiling's server: tonic with the node's transport settings and only the health service.
async fn serve_ceiling(port: u16) -> Result<()> {
    let (_reporter, health) = tonic_health::server::health_reporter();
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(1024))
        .add_service(health)
        .serve(([127, 0, 0, 1], port).into())
        .await?;
    Ok(())
}

/// `is_revoked` on the local replica, timed in batches of 1,000 calls (an `Instant` per
/// call would cost as much as the call).
fn local_replica_row(replica: &Replica, ids: &[String], dur: Duration) -> Row {
    let n = ids.len();
    let mut h = hist();
    let start = Instant::now();
    let mut i = 0usize;
    while start.elapsed() < dur {
        let t0 = Instant::now();
        for k in 0..1000 {
            std::hint::black_box(replica.is_revoked(&ids[(i + k * 7919) % n]));
        }
        let _ = h.record((t0.elapsed().as_nanos() as u64 / 1000).max(1));
        i += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let mut r = row("check, in process", "revokd local replica", &h, secs, "");
    r.ops_per_sec = h.len() as f64 * 1000.0 / secs;
    r.note = "one thread; batch means of 1,000 calls".into();
    r
}

/// Redis: `GET` per client count, then pipelines of `--batch` `GET`s, on a fresh instance
/// loaded with the ids.
fn redis_reads(
    args: &Args,
    ids: &Arc<Vec<String>>,
    dur: Duration,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let (_redis, url) = start_redis(&args.redis_server, false)?;
    let mut con = redis::Client::open(url.as_str())?.get_connection()?;
    for chunk in ids.chunks(10_000) {
        let mut p = redis::pipe();
        for id in chunk {
            p.cmd("SET")
                .arg(id)
                .arg("reason")
                .arg("EX")
                .arg(3600)
                .ignore();
        }
        p.query::<()>(&mut con)?;
    }
    let batch = args.batch.max(1);
    for pipelined in [false, true] {
        for &c in &args.clients {
            let ids = ids.clone();
            let (h, s) = threads_loop(c, dur, |t| {
                let mut con = redis::Client::open(url.as_str())?.get_connection()?;
                let ids = ids.clone();
                Ok(Box::new(move |i| {
                    if pipelined {
                        let mut p = redis::pipe();
                        for k in 0..batch {
                            p.cmd("GET")
                                .arg(&ids[spread(t, i * batch as u64 + k as u64, ids.len())]);
                        }
                        let _: Vec<Option<String>> = p.query(&mut con)?;
                    } else {
                        let _: Option<String> = redis::cmd("GET")
                            .arg(&ids[spread(t, i, ids.len())])
                            .query(&mut con)?;
                    }
                    Ok(())
                }))
            })?;
            rows.push(if pipelined {
                batch_row(c, "Redis pipelined GET", &h, s, batch, "fresh instance")
            } else {
                check_row(Read::Any, c, "Redis GET", &h, s, "fresh instance")
            });
        }
    }
    Ok(())
}

/// etcd: serializable and linearizable gets per client count, on a fresh cluster loaded with
/// the ids.
async fn etcd_reads(
    args: &Args,
    ids: &Arc<Vec<String>>,
    dur: Duration,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let (_etcd, ep) = start_etcd(&args.etcd).await?;
    let pool = etcd_pool(&ep, args.etcd_connections).await?;
    let mut kv = pool[0].kv_client();
    for chunk in ids.chunks(1_000) {
        // etcd has no bulk put; a transaction per 100 keys keeps loading reasonable.
        for sub in chunk.chunks(100) {
            let ops: Vec<etcd_client::TxnOp> = sub
                .iter()
                .map(|id| etcd_client::TxnOp::put(format!("revoked/{id}"), "reason", None))
                .collect();
            kv.txn(etcd_client::Txn::new().and_then(ops)).await?;
        }
    }
    for (read, serializable, system) in [
        (Read::Any, true, "etcd serializable get"),
        (Read::Linearizable, false, "etcd linearizable get"),
    ] {
        for &c in &args.clients {
            let ids = ids.clone();
            let pool = pool.clone();
            let (h, s) = closed_loop(c, dur, move |t, i| {
                let mut kv = pool[t % pool.len()].kv_client();
                let key = format!("revoked/{}", ids[spread(t, i, ids.len())]);
                let options = serializable.then(|| GetOptions::new().with_serializable());
                async move {
                    kv.get(key, options).await?;
                    Ok(())
                }
            })
            .await?;
            rows.push(check_row(read, c, system, &h, s, &etcd_note(args)));
        }
    }
    Ok(())
}

async fn propagation(args: &Args, rows: &mut Vec<Row>) -> Result<()> {
    eprintln!("propagation...");
    let n = args.propagation;
    {
        let cluster = ProcessCluster::start(3).await?;
        let client = revokd_client(&cluster).await?;
        let replica = revokd_replica(&cluster).await?;
        let mut h = hist();
        for i in 0..n {
            let w = client
                .revoke(Revoke::new(format!("p-{i}"), unix_now() + 3600))
                .await?;
            let acked = Instant::now();
            if !replica
                .wait_for_revision(w.committed_revision, Duration::from_secs(10))
                .await
            {
                bail!("replica did not see revision {}", w.committed_revision);
            }
            let _ = h.record(acked.elapsed().as_nanos().max(1) as u64);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        rows.push(row(
            "ack -> visible to a validator",
            "revokd replica (watch)",
            &h,
            1.0,
            "0 when seen before the ack returned",
        ));
    }
    {
        let (_etcd, ep) = start_etcd(&args.etcd).await?;
        let mut writer = etcd_client::Client::connect(&ep, None).await?;
        let mut watcher = etcd_client::Client::connect(&ep, None).await?;
        let mut stream = watcher
            .watch(
                "revoked/",
                Some(etcd_client::WatchOptions::new().with_prefix()),
            )
            .await?;
        let mut h = hist();
        for i in 0..n {
            let key = format!("revoked/p-{i}");
            writer.put(key.clone(), "reason", None).await?;
            let acked = Instant::now();
            loop {
                let msg = tokio::time::timeout(Duration::from_secs(10), stream.message())
                    .await
                    .context("etcd watch timed out")??
                    .context("etcd watch ended")?;
                if msg
                    .events()
                    .iter()
                    .any(|e| e.kv().is_some_and(|kv| kv.key() == key.as_bytes()))
                {
                    break;
                }
            }
            let _ = h.record(acked.elapsed().as_nanos().max(1) as u64);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        rows.push(row(
            "ack -> visible to a validator",
            "etcd watch",
            &h,
            1.0,
            "0 when seen before the ack returned",
        ));
    }
    Ok(())
}

fn print(args: &Args, rows: &[Row]) {
    let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    println!(
        "Machine: {}. Date: {date}. Command: `{}`.\n",
        machine(),
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    println!(
        "Each system started fresh for each workload; {} s per row.\n",
        args.secs
    );
    println!(
        "| workload | system | ops/s | p50 | p99 | ops/s: revokd / this | p50: this / revokd | note |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---|");
    for r in rows {
        // Both ratios compare with revokd's best row for the same workload: above 1, revokd is
        // ahead.
        let ours = rows
            .iter()
            .filter(|o| o.workload == r.workload && o.system.starts_with("revokd"))
            .map(|o| (o.ops_per_sec, o.p50_us))
            .fold((0.0f64, f64::MAX), |a, b| (a.0.max(b.0), a.1.min(b.1)));
        let latency = r.workload.starts_with("ack");
        let (ops, throughput, p50) = if r.system.starts_with("revokd") || ours.0 == 0.0 {
            let ops = if latency {
                "-".to_string()
            } else {
                format!("{:.0}", r.ops_per_sec)
            };
            (ops, "-".to_string(), "-".to_string())
        } else {
            let p50 = format!("{:.2}x", r.p50_us.max(0.001) / ours.1.max(0.001));
            if latency {
                ("-".to_string(), "-".to_string(), p50)
            } else {
                let t = format!("{:.2}x", ours.0 / r.ops_per_sec.max(1e-9));
                (format!("{:.0}", r.ops_per_sec), t, p50)
            }
        };
        println!(
            "| {} | {} | {} | {:.1} us | {:.1} us | {} | {} | {} |",
            r.workload, r.system, ops, r.p50_us, r.p99_us, throughput, p50, r.note
        );
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(port) = args.serve_ceiling {
        return serve_ceiling(port).await;
    }
    let mut rows = Vec::new();
    if args.only.contains(&Group::Writes) {
        writes(&args, &mut rows).await?;
    }
    if args.only.contains(&Group::Reads) {
        reads(&args, &mut rows).await?;
    }
    if args.only.contains(&Group::Propagation) {
        propagation(&args, &mut rows).await?;
    }
    print(&args, &rows);
    Ok(())
}
