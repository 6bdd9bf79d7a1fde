//! `revokd-client-bench`: measures the validator side on this machine and prints a Markdown
//! report (and JSON with `--json`):
//!
//! - memory per revoked token id held by the local replica, at 1M and 10M entries (each size in
//!   a fresh process, so freed memory of one size does not hide the next);
//! - the local check (`is_revoked`, and `check` with claims and rules present) on 1 and 2
//!   threads against a replica holding `--entries` ids loaded through a real 3-node cluster,
//!   also while the replica applies a stream of updates;
//! - side by side in the same run, a Redis `SISMEMBER` and `GET` round trip over loopback from
//!   one client (redis-server started by this program, data loaded fresh);
//! - `Validator::validate` per algorithm, with and without the replica's revocation check, on
//!   1 and 2 threads;
//! - propagation: from a revoke's acknowledgement to its visibility in N replicas.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use revokd_bench::{hist, machine, rss_bytes, start_redis, uuidish};
use revokd_client::replica::table::{Store, Writer};
use revokd_client::{
    Client, ClientConfig, Key, Replica, ReplicaConfig, Revoke, RuleKind, TokenQuery, Validator,
};
use revokd_proto::clock::unix_now;
use revokd_testkit::jwt::{self, Algorithm, Signer};
use revokd_testkit::ProcessCluster;

#[derive(Parser, Debug)]
#[command(about = "Benchmark the revokd client: local checks, validation, propagation, memory.")]
struct Args {
    /// Revoked ids loaded through the cluster into the replica used for checks.
    #[arg(long, default_value_t = 1_000_000)]
    entries: usize,
    /// Sizes for the memory-per-entry figures.
    #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
    memory_entries: Vec<usize>,
    /// Replica counts for the propagation figures.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    replicas: Vec<usize>,
    /// Revokes per propagation measurement.
    #[arg(long, default_value_t = 200)]
    propagation_revokes: usize,
    /// Milliseconds per timed measurement.
    #[arg(long, default_value_t = 2000)]
    millis: u64,
    /// The Redis server binary for the side-by-side rows (skipped, and said so, if absent).
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
    /// Which parts to run: memory, checks, redis, validate, propagation (checks, redis and
    /// validate share one loaded replica).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "memory,checks,redis,validate,propagation"
    )]
    sections: Vec<String>,
    /// Small sizes and short runs, for CI.
    #[arg(long)]
    smoke: bool,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Internal: build a set of this many ids in this process and print its memory as JSON.
    #[arg(long, hide = true)]
    memory_probe: Option<usize>,
}

/// One measured row.
#[derive(serde::Serialize, Clone, Debug)]
struct Row {
    section: &'static str,
    what: String,
    ops: u64,
    per_sec: f64,
    p50: f64,
    p99: f64,
    max: f64,
    unit: &'static str,
    note: String,
}

fn row_ns(
    section: &'static str,
    what: String,
    h: &hdrhistogram::Histogram<u64>,
    secs: f64,
    ops: u64,
    note: &str,
) -> Row {
    Row {
        section,
        what,
        ops,
        per_sec: ops as f64 / secs,
        p50: h.value_at_quantile(0.5) as f64,
        p99: h.value_at_quantile(0.99) as f64,
        max: h.max() as f64,
        unit: "ns",
        note: note.into(),
    }
}

/// Runs `op` on `threads` threads for `dur`, timing batches of `batch` calls: the histogram
/// holds each batch's mean nanoseconds per call (an `Instant` per call would cost as much as
/// the call).
fn per_call_ns<F>(
    threads: usize,
    dur: Duration,
    batch: usize,
    op: F,
) -> (hdrhistogram::Histogram<u64>, u64, f64)
where
    F: Fn(usize, u64) -> bool + Sync,
{
    let start = Instant::now();
    let results: Vec<(hdrhistogram::Histogram<u64>, u64, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let op = &op;
                s.spawn(move || {
                    let mut h = hist();
                    let mut n = 0u64;
                    let mut hits = 0u64;
                    let end = Instant::now() + dur;
                    while Instant::now() < end {
                        let t0 = Instant::now();
                        for _ in 0..batch {
                            hits += u64::from(std::hint::black_box(op(t, n)));
                            n += 1;
                        }
                        let ns = t0.elapsed().as_nanos() as u64 / batch as u64;
                        let _ = h.record(ns.max(1));
                    }
                    (h, n, hits)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect()
    });
    let mut h = hist();
    let mut ops = 0;
    for (th, n, _) in results {
        let _ = h.add(th);
        ops += n;
    }
    (h, ops, start.elapsed().as_secs_f64())
}

/// Memory of a set of `n` 36-character ids built in this process.
fn memory_probe(n: usize) -> Result<()> {
    let pid = std::process::id();
    let before = rss_bytes(pid)?;
    let store = Arc::new(Store::new());
    let mut writer = Writer::new(store.clone());
    let mut r = writer.replace();
    let exp = unix_now() + 86_400;
    for i in 0..n as u64 {
        r.push(&uuidish(i), exp, "logout");
    }
    r.finish(Vec::new());
    let after = rss_bytes(pid)?;
    assert_eq!(store.len(), n, "every id is held");
    assert!(store.is_revoked(&uuidish(n as u64 / 2), unix_now));
    println!(
        "{}",
        serde_json::json!({
            "entries": n,
            "rss_delta": after.saturating_sub(before),
            "accounted": store.token_bytes(),
        })
    );
    Ok(())
}

fn memory_rows(sizes: &[usize]) -> Result<Vec<Row>> {
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    for &n in sizes {
        eprintln!("memory: {n} ids in a fresh process...");
        let out = Command::new(&exe)
            .args(["--memory-probe", &n.to_string()])
            .stderr(Stdio::inherit())
            .output()?;
        if !out.status.success() {
            bail!("memory probe for {n} failed");
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let rss = v["rss_delta"].as_f64().unwrap_or(0.0);
        let acc = v["accounted"].as_f64().unwrap_or(0.0);
        rows.push(Row {
            section: "memory",
            what: format!("{n} ids of 36 chars"),
            ops: n as u64,
            per_sec: 0.0,
            p50: rss / n as f64,
            p99: acc / n as f64,
            max: rss / (1 << 20) as f64,
            unit: "bytes/entry",
            note: format!(
                "RSS growth {:.1} MiB ({:.1} B/entry); the table's own accounting {:.1} B/entry",
                rss / (1 << 20) as f64,
                rss / n as f64,
                acc / n as f64
            ),
        });
    }
    Ok(rows)
}

fn client_config(endpoints: Vec<String>) -> ClientConfig {
    let mut c = ClientConfig::new(endpoints);
    c.timeout = Duration::from_secs(30);
    c
}

async fn new_replica(endpoints: Vec<String>, name: String) -> Result<Replica> {
    let client = Client::connect(client_config(endpoints)).await?;
    Ok(Replica::connect(
        client,
        ReplicaConfig {
            replica_id: name,
            ..ReplicaConfig::default()
        },
        Duration::from_secs(120),
    )
    .await?)
}

/// Loads `n` ids into the cluster in batches of 10,000.
async fn load(admin: &Client, n: usize) -> Result<()> {
    let exp = unix_now() + 86_400;
    let started = Instant::now();
    for start in (0..n).step_by(10_000) {
        let batch: Vec<Revoke> = (start..(start + 10_000).min(n))
            .map(|i| Revoke::new(uuidish(i as u64), exp).reason("logout"))
            .collect();
        admin.revoke_many(&batch).await?;
    }
    eprintln!("  loaded {n} ids in {:.1?}", started.elapsed());
    Ok(())
}

fn check_rows(replica: &Replica, entries: usize, dur: Duration, rows: &mut Vec<Row>, label: &str) {
    let hits: Vec<String> = (0..4096u64)
        .map(|i| uuidish(i * (entries as u64 / 4096).max(1)))
        .collect();
    let misses: Vec<String> = (0..4096u64).map(|i| uuidish(1 << 40 | i)).collect();
    // Warm up (page faults, caches, CPU frequency) before the first timed row.
    let _ = per_call_ns(2, dur / 2, 1024, |t, n| {
        replica.is_revoked(&misses[(n as usize + t * 977) & 4095])
    });
    for threads in [1, 2] {
        for (kind, ids) in [("miss", &misses), ("hit", &hits)] {
            let (h, ops, secs) = per_call_ns(threads, dur, 1024, |t, n| {
                replica.is_revoked(&ids[(n as usize + t * 977) & 4095])
            });
            let what = format!("is_revoked ({kind}), {threads} thread(s){label}");
            eprintln!("  {what}: p50 {} ns", h.value_at_quantile(0.5));
            rows.push(row_ns("local check", what, &h, secs, ops, "batch means"));
        }
    }
    // The floor on this machine: a plain std HashSet of the same ids (single-threaded, no
    // concurrent updates possible, ~3x the memory), probed with the same queries.
    if label.is_empty() {
        let set: std::collections::HashSet<String> = (0..entries as u64).map(uuidish).collect();
        for (kind, ids) in [("miss", &misses), ("hit", &hits)] {
            let (h, ops, secs) = per_call_ns(1, dur, 1024, |t, n| {
                set.contains(&ids[(n as usize + t * 977) & 4095])
            });
            let what = format!("reference: std HashSet<String> probe ({kind}), 1 thread");
            eprintln!("  {what}: p50 {} ns", h.value_at_quantile(0.5));
            rows.push(row_ns(
                "local check",
                what,
                &h,
                secs,
                ops,
                "same ids and queries; not shareable with a writer",
            ));
        }
    }
    // A full check: the id and four claims, with rules present.
    let (h, ops, secs) = per_call_ns(1, dur, 1024, |t, n| {
        let q = TokenQuery {
            jti: &misses[(n as usize + t) & 4095],
            sub: Some("user-12345"),
            azp: Some("web-app"),
            kid: Some("key-2024"),
            iss: Some("https://issuer.example"),
            iat: Some(1_700_000_000),
        };
        replica.check(&q).is_rejected()
    });
    let what = format!("check (jti + sub/azp/kid/iss, 100 rules), 1 thread{label}");
    eprintln!("  {what}: p50 {} ns", h.value_at_quantile(0.5));
    rows.push(row_ns("local check", what, &h, secs, ops, "batch means"));
}

/// Single-call latency with an `Instant` around each call, and the cost of the timer alone.
fn single_call_rows(replica: &Replica, dur: Duration, rows: &mut Vec<Row>) {
    let ids: Vec<String> = (0..4096u64).map(|i| uuidish(1 << 40 | i)).collect();
    for (what, timed) in [
        ("Instant::now() pair alone (timer cost)", false),
        ("is_revoked (miss), one call timed", true),
    ] {
        let mut h = hist();
        let end = Instant::now() + dur;
        let mut n = 0usize;
        let start = Instant::now();
        while Instant::now() < end {
            let t0 = Instant::now();
            if timed {
                std::hint::black_box(replica.is_revoked(&ids[n & 4095]));
            }
            let _ = h.record(t0.elapsed().as_nanos().max(1) as u64);
            n += 1;
        }
        rows.push(row_ns(
            "local check",
            what.into(),
            &h,
            start.elapsed().as_secs_f64(),
            n as u64,
            "per call, timer included",
        ));
    }
}

fn redis_rows(bin: &str, entries: usize, dur: Duration, rows: &mut Vec<Row>) -> Result<()> {
    let (_redis, url) = start_redis(bin, false)?;
    let client = redis::Client::open(url)?;
    let mut con = client.get_connection()?;
    let started = Instant::now();
    for start in (0..entries).step_by(10_000) {
        let ids: Vec<String> = (start..(start + 10_000).min(entries))
            .map(|i| uuidish(i as u64))
            .collect();
        let mut pipe = redis::pipe();
        pipe.cmd("SADD").arg("revoked").arg(&ids).ignore();
        for id in &ids {
            pipe.cmd("SET")
                .arg(id)
                .arg("logout")
                .arg("EX")
                .arg(86_400)
                .ignore();
        }
        pipe.query::<()>(&mut con)?;
    }
    eprintln!(
        "  redis: loaded {entries} ids (SADD + SET EX) in {:.1?}",
        started.elapsed()
    );
    let hit = uuidish((entries / 2) as u64);
    let miss = uuidish(1 << 40);
    for (what, cmd, key, member) in [
        (
            "Redis SISMEMBER (miss), 1 client, loopback",
            "SISMEMBER",
            "revoked",
            Some(&miss),
        ),
        (
            "Redis SISMEMBER (hit), 1 client, loopback",
            "SISMEMBER",
            "revoked",
            Some(&hit),
        ),
        (
            "Redis GET (miss), 1 client, loopback",
            "GET",
            miss.as_str(),
            None,
        ),
    ] {
        let mut h = hist();
        let end = Instant::now() + dur;
        let start = Instant::now();
        let mut n = 0u64;
        while Instant::now() < end {
            let t0 = Instant::now();
            let mut c = redis::cmd(cmd);
            c.arg(key);
            if let Some(m) = member {
                c.arg(m);
            }
            let _: redis::Value = c.query(&mut con)?;
            let _ = h.record(t0.elapsed().as_nanos() as u64);
            n += 1;
        }
        eprintln!("  {what}: p50 {} ns", h.value_at_quantile(0.5));
        rows.push(row_ns(
            "local check",
            what.into(),
            &h,
            start.elapsed().as_secs_f64(),
            n,
            "per call",
        ));
    }
    Ok(())
}

/// A signer and the validator's key for `alg`: a fixed secret for HMAC, the test key pair
/// otherwise.
fn key_pair(alg: Algorithm) -> Result<(Signer, Key)> {
    let secret = [7u8; 64];
    Ok(match jwt::key_stem(alg) {
        None => (Signer::hmac(alg, &secret), Key::hmac(alg, secret)?),
        Some(_) => (
            Signer::fixture(alg)?,
            Key::from_pem(alg, jwt::public_pem(alg)?)?,
        ),
    })
}

fn validate_rows(replica: &Replica, dur: Duration, rows: &mut Vec<Row>) -> Result<()> {
    use Algorithm::*;
    for alg in [
        HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA,
    ] {
        validate_alg(alg, replica, dur, rows)?;
    }
    Ok(())
}

/// `Validator::validate` for one algorithm: without and with the replica's check on one
/// thread, interleaved, then with the check on two threads.
fn validate_alg(
    alg: Algorithm,
    replica: &Replica,
    dur: Duration,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let (enc, key) = key_pair(alg)?;
    let token = sample_token(&enc)?;
    let plain = validator(&key, None)?;
    let checked = validator(&key, Some(replica))?;
    plain.validate(&token).context("token validates")?;
    checked
        .validate(&token)
        .context("token validates with the replica")?;
    // Cheap algorithms get many calls per timed batch, slow ones few.
    let batch = if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        64
    } else {
        4
    };
    let (hs, ops, secs) = interleaved(&plain, &checked, &token, dur, batch);
    let p50 = [
        hs[0].value_at_quantile(0.5) as f64,
        hs[1].value_at_quantile(0.5) as f64,
    ];
    for (i, label) in ["without revocation check", "with the replica's check"]
        .into_iter()
        .enumerate()
    {
        rows.push(row_ns(
            "validate",
            format!("{alg:?} {label}, 1 thread"),
            &hs[i],
            secs[i],
            ops[i],
            "batch means, interleaved",
        ));
    }
    let (h, ops, secs) = per_call_ns(2, dur, batch, |_, _| checked.validate(&token).is_ok());
    rows.push(row_ns(
        "validate",
        format!("{alg:?} with the replica's check, 2 threads"),
        &h,
        secs,
        ops,
        "batch means",
    ));
    eprintln!(
        "  {alg:?}: {:.0} ns plain, {:.0} ns with check ({:+.1}%)",
        p50[0],
        p50[1],
        (p50[1] / p50[0] - 1.0) * 100.0
    );
    Ok(())
}

/// A token with the claims a typical access token carries, valid for the next hour.
fn sample_token(enc: &Signer) -> Result<String> {
    let claims = serde_json::json!({
        "jti": "0f8fad5b-d9cb-469f-a165-70867728950e",
        "sub": "user-12345",
        "azp": "web-app",
        "iss": "https://issuer.example",
        "aud": "api",
        "iat": unix_now() - 60,
        "exp": unix_now() + 3600,
    });
    enc.sign(&claims)
}

/// A validator for [`sample_token`]'s issuer and audience, checking revocations in
/// `replica` when given.
fn validator(key: &Key, replica: Option<&Replica>) -> Result<Validator> {
    let b = Validator::builder()
        .key(key.clone())
        .issuer("https://issuer.example")
        .audience("api");
    Ok(match replica {
        Some(replica) => b.revocations(replica.clone()),
        None => b,
    }
    .build()?)
}

/// Times `plain` and `checked` on one thread: per validator, the batch means, calls and
/// seconds.
fn interleaved(
    plain: &Validator,
    checked: &Validator,
    token: &str,
    dur: Duration,
    batch: usize,
) -> ([hdrhistogram::Histogram<u64>; 2], [u64; 2], [f64; 2]) {
    // Plain and checked alternate in ten rounds, so drift in the machine's load hits both.
    let mut hs = [hist(), hist()];
    let mut ops = [0u64; 2];
    let mut secs = [0f64; 2];
    for _ in 0..10 {
        for (i, v) in [plain, checked].into_iter().enumerate() {
            let (h, n, t) = per_call_ns(1, dur / 10, batch, |_, _| v.validate(token).is_ok());
            let _ = hs[i].add(h);
            ops[i] += n;
            secs[i] += t;
        }
    }
    (hs, ops, secs)
}

/// When each revision became visible to one replica.
type Seen = Vec<(u64, Instant)>;

async fn propagation_rows(counts: &[usize], revokes: usize, rows: &mut Vec<Row>) -> Result<()> {
    let cluster = ProcessCluster::start(3).await?;
    let admin = Client::connect(client_config(cluster.endpoints())).await?;
    for &n in counts {
        eprintln!("propagation to {n} replica(s)...");
        let mut replicas = Vec::new();
        for i in 0..n {
            replicas.push(new_replica(cluster.endpoints(), format!("bench-{n}-{i}")).await?);
        }
        let (seen, watchers) = watch_revisions(&replicas);
        let (acks, ack_h) = revoke_in_turn(&admin, n, revokes).await?;
        let last = acks.last().map(|a| a.0).unwrap_or(0);
        for r in &replicas {
            if !r.wait_for_revision(last, Duration::from_secs(30)).await {
                bail!("replica {} did not reach revision {last}", r.id());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let seen = seen.lock().expect("lock").clone();
        let h = visibility(&acks, &seen)?;
        for w in watchers {
            w.abort();
        }
        rows.push(Row {
            section: "propagation",
            what: format!("ack -> visible in {n} replica(s)"),
            ops: h.len(),
            per_sec: 0.0,
            p50: h.value_at_quantile(0.5) as f64,
            p99: h.value_at_quantile(0.99) as f64,
            max: h.max() as f64,
            unit: "us",
            note: format!(
                "{revokes} sequential revokes on a 3-node cluster, all in this process and machine; ack p50 {} us",
                ack_h.value_at_quantile(0.5)
            ),
        });
        eprintln!(
            "  p50 {} us, p99 {} us, max {} us",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.max()
        );
        drop(replicas);
    }
    Ok(())
}

/// Starts recording, per replica, when each revision became visible to it; abort the tasks
/// to stop.
fn watch_revisions(
    replicas: &[Replica],
) -> (Arc<Mutex<Vec<Seen>>>, Vec<tokio::task::JoinHandle<()>>) {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::new(Mutex::new(vec![Vec::new(); replicas.len()]));
    let mut watchers = Vec::new();
    for (i, r) in replicas.iter().enumerate() {
        let mut rx = r.revisions();
        let seen = seen.clone();
        watchers.push(tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let rev = *rx.borrow_and_update();
                seen.lock().expect("lock")[i].push((rev, Instant::now()));
            }
        }));
    }
    (seen, watchers)
}

/// Sends `revokes` revokes one after another: each one's committed revision and when its
/// acknowledgement arrived, and the acknowledgement latencies (us).
async fn revoke_in_turn(
    admin: &Client,
    n: usize,
    revokes: usize,
) -> Result<(Vec<(u64, Instant)>, hdrhistogram::Histogram<u64>)> {
    let mut acks = Vec::new();
    let mut ack_h = hist();
    for k in 0..revokes {
        let t0 = Instant::now();
        let w = admin
            .revoke(Revoke::new(format!("prop-{n}-{k}"), unix_now() + 3600))
            .await?;
        let at = Instant::now();
        let _ = ack_h.record(at.duration_since(t0).as_micros() as u64);
        acks.push((w.committed_revision, at));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok((acks, ack_h))
}

/// From each acknowledgement to its revision being visible, in every replica (us).
fn visibility(acks: &[(u64, Instant)], seen: &[Seen]) -> Result<hdrhistogram::Histogram<u64>> {
    let mut h = hist();
    for (rev, acked_at) in acks {
        for per in seen {
            let visible = per
                .iter()
                .find(|(r, _)| r >= rev)
                .map(|(_, t)| *t)
                .context("revision never seen")?;
            // Visible before the acknowledgement reached the writer counts as 0.
            let us = visible.saturating_duration_since(*acked_at).as_micros() as u64;
            let _ = h.record(us.max(1));
        }
    }
    Ok(h)
}

fn print_report(args: &Args, rows: &[Row], loaded_rss: Option<(u64, usize)>) {
    println!("## revokd-client benchmark\n");
    println!("- machine: {}", machine());
    println!(
        "- command: `{}`",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    println!(
        "- replica for checks: {} ids loaded through a 3-node cluster",
        args.entries
    );
    if let Some((rss, bytes)) = loaded_rss {
        println!(
            "- that replica: process RSS grew {:.1} MiB while bootstrapping; its table accounts {:.1} B/entry",
            rss as f64 / (1 << 20) as f64,
            bytes as f64 / args.entries.max(1) as f64
        );
    }
    let mut section = "";
    for r in rows {
        if r.section != section {
            section = r.section;
            println!("\n### {section}\n");
            println!("| what | p50 | p99 | max | unit | ops/s | note |");
            println!("|---|---:|---:|---:|---|---:|---|");
        }
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {} | {:.0} | {} |",
            r.what, r.p50, r.p99, r.max, r.unit, r.per_sec, r.note
        );
    }
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if let Some(n) = args.memory_probe {
        return memory_probe(n);
    }
    if args.smoke {
        args.shrink_for_smoke();
    }
    let dur = Duration::from_millis(args.millis);
    let on = |name: &str| args.sections.iter().any(|s| s == name);
    let mut rows = if on("memory") {
        memory_rows(&args.memory_entries)?
    } else {
        Vec::new()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    eprintln!("loading {} ids into a 3-node cluster...", args.entries);
    let (cluster, admin) = rt.block_on(loaded_cluster(args.entries))?;
    let (replica, loaded) = rt.block_on(checks_replica(&cluster, args.entries))?;
    if on("checks") {
        eprintln!("local checks...");
        check_rows(&replica, args.entries, dur, &mut rows, "");
        single_call_rows(&replica, dur, &mut rows);
        checks_while_updating(&rt, &admin, &replica, args.entries, dur, &mut rows);
    }
    if on("redis") {
        eprintln!("redis side by side...");
        redis_or_skipped(&args, dur, &mut rows);
    }
    if on("validate") {
        eprintln!("validation per algorithm...");
        validate_rows(&replica, dur, &mut rows)?;
    }
    drop(replica);
    drop(cluster);
    if on("propagation") {
        rt.block_on(propagation_rows(
            &args.replicas,
            args.propagation_revokes,
            &mut rows,
        ))?;
    }

    print_report(&args, &rows, Some(loaded));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&rows)?)?;
    }
    Ok(())
}

impl Args {
    /// `--smoke`: sizes and durations small enough for CI.
    fn shrink_for_smoke(&mut self) {
        self.entries = self.entries.min(20_000);
        self.memory_entries = vec![20_000];
        self.replicas = vec![1, 3];
        self.propagation_revokes = self.propagation_revokes.min(20);
        self.millis = self.millis.min(200);
    }
}

/// A 3-node cluster holding `entries` revoked ids and 100 subject rules, and an admin
/// client to it.
async fn loaded_cluster(entries: usize) -> Result<(ProcessCluster, Client)> {
    let cluster = ProcessCluster::start(3).await?;
    let admin = Client::connect(client_config(cluster.endpoints())).await?;
    load(&admin, entries).await?;
    for i in 0..100 {
        admin
            .revoke_rule(RuleKind::Subject, &format!("rule-user-{i}"), None, "bench")
            .await?;
    }
    Ok((cluster, admin))
}

/// The replica the checks run on, bootstrapped from `cluster`, with what it cost: the
/// process's RSS growth and the bytes its table accounts.
async fn checks_replica(
    cluster: &ProcessCluster,
    entries: usize,
) -> Result<(Replica, (u64, usize))> {
    let rss0 = rss_bytes(std::process::id())?;
    let replica = new_replica(cluster.endpoints(), "bench-checks".into()).await?;
    let loaded = (
        rss_bytes(std::process::id())?.saturating_sub(rss0),
        replica.token_memory_bytes(),
    );
    if replica.len() != entries {
        bail!("replica holds {} ids, expected {entries}", replica.len());
    }
    Ok((replica, loaded))
}

/// The Redis rows, or one row saying why they were skipped.
fn redis_or_skipped(args: &Args, dur: Duration, rows: &mut Vec<Row>) {
    if let Err(e) = redis_rows(&args.redis_server, args.entries, dur, rows) {
        eprintln!("  redis rows skipped: {e:#}");
        rows.push(Row {
            section: "local check",
            what: "Redis rows".into(),
            ops: 0,
            per_sec: 0.0,
            p50: 0.0,
            p99: 0.0,
            max: 0.0,
            unit: "-",
            note: format!("skipped: {e}"),
        });
    }
}

/// The local checks again while the replica applies a stream of revokes.
fn checks_while_updating(
    rt: &tokio::runtime::Runtime,
    admin: &Client,
    replica: &Replica,
    entries: usize,
    dur: Duration,
    rows: &mut Vec<Row>,
) {
    let writer = {
        let admin = admin.clone();
        rt.spawn(async move {
            let mut k = 0u64;
            loop {
                let batch: Vec<Revoke> = (0..100)
                    .map(|i| Revoke::new(format!("live-{k}-{i}"), unix_now() + 3600))
                    .collect();
                if admin.revoke_many(&batch).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                k += 1;
            }
        })
    };
    let rev0 = replica.revision();
    let len0 = replica.len();
    check_rows(replica, entries, dur, rows, ", while applying updates");
    writer.abort();
    let (revs, ids) = (replica.revision() - rev0, replica.len() - len0);
    eprintln!("  during that run the replica applied {revs} revisions ({ids} new ids)");
    if let Some(last) = rows.last_mut() {
        last.note = format!("batch means; meanwhile {revs} revisions applied ({ids} ids)");
    }
}
