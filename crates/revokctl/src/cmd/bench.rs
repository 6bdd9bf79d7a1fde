//! `bench`: a load generator that always stops by itself (after `--count` operations or
//! `--duration`, whichever comes first) and reports throughput, latency percentiles from an HDR
//! histogram, and errors by status code.
//!
//! Modes: `revoke` (durable writes), `check` (remote LOCAL or LINEARIZABLE reads), `cache`
//! (local replica reads), `propagation` (a revoke's acknowledgement until it is visible in N
//! replicas started in this process), `mixed` (reads and writes in a ratio).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use revokd_client::{Client, Consistency, Error, Replica, ReplicaConfig, Revoke, TokenQuery};

use super::Ctx;
use crate::error::{CliError, EXIT_OK};
use crate::output::Record;
use crate::time::now;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Durable revokes through the leader.
    Revoke,
    /// Remote `Check` calls (LOCAL, or LINEARIZABLE with --linearizable).
    Check,
    /// `is_revoked` on a local replica (no network).
    Cache,
    /// Revoke acknowledged -> visible in --replicas replicas.
    Propagation,
    /// --read-ratio LOCAL checks per revoke.
    Mixed,
}

/// `bench` flags.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    pub mode: Mode,
    /// Concurrent workers.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Operations per second across all workers; 0 means as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Stop after this many operations.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// `check`: LINEARIZABLE instead of LOCAL.
    #[arg(long)]
    pub linearizable: bool,
    /// `propagation`: replicas to start in this process.
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// `mixed`: reads per write.
    #[arg(long, default_value_t = 9)]
    pub read_ratio: u32,
    /// Token ids revoked before `check`, `cache` and `mixed` start, for reads to find.
    #[arg(long, default_value_t = 1_000)]
    pub preload: usize,
}

/// Latencies (nanoseconds) and errors of one worker.
struct Tally {
    hist: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            hist: Histogram::new_with_bounds(1, 600_000_000_000, 3)
                .unwrap_or_else(|e| panic!("histogram bounds: {e}")),
            errors: BTreeMap::new(),
        }
    }

    fn merge(&mut self, o: Tally) {
        let _ = self.hist.add(o.hist);
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }

    fn record(&mut self, started: Instant, r: Result<(), Error>) {
        match r {
            Ok(()) => {
                let _ = self.hist.record(started.elapsed().as_nanos().max(1) as u64);
            }
            Err(e) => *self.errors.entry(error_code(&e)).or_default() += 1,
        }
    }
}

fn error_code(e: &Error) -> String {
    match e {
        Error::Rejected { code, .. } => format!("{code:?}"),
        Error::Rpc { status, .. } => format!("{:?}", status.code()),
        Error::Unavailable { .. } => "Unavailable".into(),
        Error::Stream(_) => "Stream".into(),
        Error::NotReady(_) => "NotReady".into(),
        Error::Unexpected { .. } => "Unexpected".into(),
        Error::Config(_) => "Config".into(),
    }
}

/// Hands out operation numbers, pacing them to `--rate`, until the count or the deadline.
struct Schedule {
    next: AtomicU64,
    count: u64,
    start: Instant,
    end: Instant,
    rate: u64,
}

impl Schedule {
    async fn take(&self) -> Option<u64> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if i >= self.count || Instant::now() >= self.end {
            return None;
        }
        if self.rate > 0 {
            let at = self.start + Duration::from_secs_f64(i as f64 / self.rate as f64);
            if at >= self.end {
                return None;
            }
            tokio::time::sleep_until(at.into()).await;
        }
        Some(i)
    }

    fn done(&self) -> u64 {
        self.next.load(Ordering::Relaxed).min(self.count)
    }
}

fn progress(a: &BenchArgs) -> ProgressBar {
    let bar = match a.count {
        Some(c) => ProgressBar::new(c),
        None => ProgressBar::new(a.duration.as_secs().max(1)),
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

async fn preload(client: &Client, run: u64, n: usize) -> Result<Vec<String>, CliError> {
    let ids: Vec<String> = (0..n).map(|i| format!("bench-{run}-pre-{i}")).collect();
    let tokens: Vec<Revoke> = ids.iter().map(|j| Revoke::new(j, now() + 3600)).collect();
    client.revoke_many(&tokens).await?;
    Ok(ids)
}

/// Runs the benchmark and prints one summary row plus one row per error code.
pub async fn run(ctx: &Ctx, a: &BenchArgs) -> Result<i32, CliError> {
    if a.concurrency == 0 {
        return Err(CliError::Usage("--concurrency must be at least 1".into()));
    }
    if a.duration.is_zero() {
        return Err(CliError::Usage("--duration must be greater than 0".into()));
    }
    let run = now() as u64 * 1000 + u64::from(std::process::id() % 1000);
    let client = ctx.client.clone();
    let reads: Arc<Vec<String>> = Arc::new(match a.mode {
        Mode::Check | Mode::Cache | Mode::Mixed => preload(&client, run, a.preload.max(1)).await?,
        _ => Vec::new(),
    });
    let mut replicas = Vec::new();
    if matches!(a.mode, Mode::Cache | Mode::Propagation) {
        let n = if a.mode == Mode::Cache {
            1
        } else {
            a.replicas.max(1)
        };
        for i in 0..n {
            let mut config = ctx.client.config().clone();
            config.actor = ctx.cli.actor.clone();
            config.tls = super::tls(&ctx.cli)?;
            let c = Client::connect(config).await?;
            replicas.push(
                Replica::connect(
                    c,
                    ReplicaConfig {
                        replica_id: format!("revokctl-bench-{run}-{i}"),
                        ..ReplicaConfig::default()
                    },
                    Duration::from_secs(60),
                )
                .await?,
            );
        }
    }
    let schedule = Arc::new(Schedule {
        next: AtomicU64::new(0),
        count: a.count.unwrap_or(u64::MAX),
        start: Instant::now(),
        end: Instant::now() + a.duration,
        rate: a.rate,
    });
    let bar = progress(a);
    let ticker = {
        let bar = bar.clone();
        let schedule = schedule.clone();
        let by_count = a.count.is_some();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let done = schedule.done();
                let secs = schedule.start.elapsed().as_secs_f64();
                if by_count {
                    bar.set_position(done);
                } else {
                    bar.set_position(secs as u64);
                }
                bar.set_message(format!("{done} ops, {:.0}/s", done as f64 / secs.max(1e-9)));
            }
        })
    };
    let started = Instant::now();
    let linearizable = a.linearizable;
    let read_ratio = a.read_ratio;
    let workers = if a.mode == Mode::Propagation {
        1
    } else {
        a.concurrency
    };
    let seen_at: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let client = client.clone();
        let schedule = schedule.clone();
        let reads = reads.clone();
        let replicas = replicas.clone();
        let mode = a.mode;
        let seen_at = seen_at.clone();
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::new();
            while let Some(i) = schedule.take().await {
                let t0 = Instant::now();
                let r = match mode {
                    Mode::Revoke => client
                        .revoke(Revoke::new(format!("bench-{run}-{i}"), now() + 3600))
                        .await
                        .map(drop),
                    Mode::Check => check(&client, &reads, i, linearizable).await,
                    Mode::Mixed if i % u64::from(read_ratio + 1) != 0 => {
                        check(&client, &reads, i, false).await
                    }
                    Mode::Mixed => client
                        .revoke(Revoke::new(format!("bench-{run}-{i}"), now() + 3600))
                        .await
                        .map(drop),
                    Mode::Cache => {
                        let hit = replicas[0].is_revoked(&reads[i as usize % reads.len()]);
                        if hit {
                            Ok(())
                        } else {
                            Err(Error::Stream("a preloaded id reads as not revoked".into()))
                        }
                    }
                    Mode::Propagation => propagate(&client, &replicas, run, i, &seen_at).await,
                };
                t.record(t0, r);
                if mode == Mode::Cache && i % 1024 == 0 {
                    // Local reads never wait: let the ticker and the replica's task run.
                    tokio::task::yield_now().await;
                }
            }
            t
        }));
    }
    let mut total = Tally::new();
    for task in tasks {
        match task.await {
            Ok(t) => total.merge(t),
            Err(e) => return Err(CliError::Other(format!("bench worker: {e}"))),
        }
    }
    ticker.abort();
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let h = &total.hist;
    let us = |ns: u64| (ns as f64 / 10.0).round() / 100.0;
    let errors: u64 = total.errors.values().sum();
    let mut records = vec![Record::new()
        .field("mode", format!("{:?}", a.mode).to_lowercase())
        .field("ops", h.len())
        .field("errors", errors)
        .field("seconds", (secs * 100.0).round() / 100.0)
        .field("ops_per_sec", (h.len() as f64 / secs).round())
        .field("p50_us", us(h.value_at_quantile(0.5)))
        .field("p90_us", us(h.value_at_quantile(0.9)))
        .field("p99_us", us(h.value_at_quantile(0.99)))
        .field("p999_us", us(h.value_at_quantile(0.999)))
        .field("max_us", us(h.max()))];
    if a.mode == Mode::Propagation {
        let seen = seen_at.lock().unwrap_or_else(|p| p.into_inner());
        let mut p = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3)
            .unwrap_or_else(|e| panic!("histogram bounds: {e}"));
        for d in seen.iter() {
            let _ = p.record(d.as_nanos().max(1) as u64);
        }
        records.push(
            Record::new()
                .field("mode", "propagation (ack -> visible, per replica)")
                .field("ops", p.len())
                .field("errors", 0)
                .field("seconds", (secs * 100.0).round() / 100.0)
                .field("ops_per_sec", 0)
                .field("p50_us", us(p.value_at_quantile(0.5)))
                .field("p90_us", us(p.value_at_quantile(0.9)))
                .field("p99_us", us(p.value_at_quantile(0.99)))
                .field("p999_us", us(p.value_at_quantile(0.999)))
                .field("max_us", us(p.max())),
        );
    }
    ctx.printer.print(&records);
    if !total.errors.is_empty() {
        let rows: Vec<Record> = total
            .errors
            .iter()
            .map(|(code, n)| {
                Record::new()
                    .field("error_code", code.clone())
                    .field("count", *n)
            })
            .collect();
        ctx.printer.print(&rows);
    }
    Ok(EXIT_OK)
}

async fn check(client: &Client, reads: &[String], i: u64, linearizable: bool) -> Result<(), Error> {
    let consistency = if linearizable {
        Consistency::Linearizable
    } else {
        Consistency::Local
    };
    let jti = &reads[i as usize % reads.len()];
    client
        .check(
            &TokenQuery {
                jti,
                ..Default::default()
            },
            consistency,
        )
        .await
        .map(drop)
}

/// Revokes one id and records, for every replica, the time from the acknowledgement until the
/// replica has it (zero if it had it before the acknowledgement arrived).
async fn propagate(
    client: &Client,
    replicas: &[Replica],
    run: u64,
    i: u64,
    seen_at: &Mutex<Vec<Duration>>,
) -> Result<(), Error> {
    let w = client
        .revoke(Revoke::new(format!("bench-{run}-p-{i}"), now() + 3600))
        .await?;
    let acked = Instant::now();
    let mut waits = tokio::task::JoinSet::new();
    for r in replicas {
        let r = r.clone();
        waits.spawn(async move {
            r.wait_for_revision(w.committed_revision, Duration::from_secs(30))
                .await
                .then(|| acked.elapsed())
        });
    }
    let mut out = Vec::new();
    for r in waits.join_all().await {
        match r {
            Some(d) => out.push(d),
            None => {
                return Err(Error::Stream(
                    "a replica did not apply the revoke within 30 s".into(),
                ))
            }
        }
    }
    seen_at
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(out);
    Ok(())
}
