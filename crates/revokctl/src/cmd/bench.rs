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

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use revokd_client::{Client, Consistency, Error, Replica, ReplicaConfig, Revoke, TokenQuery};
use revokd_proto::clock::unix_now;

use super::Ctx;
use crate::cli::{BenchArgs, Mode};
use crate::error::{CliError, EXIT_OK};
use crate::output::Record;

/// Latencies (nanoseconds) and errors of one worker.
struct Tally {
    hist: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            hist: histogram(),
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
    let tokens: Vec<Revoke> = ids
        .iter()
        .map(|j| Revoke::new(j, unix_now() + 3600))
        .collect();
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
    let run = unix_now() as u64 * 1000 + u64::from(std::process::id() % 1000);
    let client = ctx.client.clone();
    let reads: Arc<Vec<String>> = Arc::new(match a.mode {
        Mode::Check | Mode::Cache | Mode::Mixed => preload(&client, run, a.preload.max(1)).await?,
        _ => Vec::new(),
    });
    let replicas = start_replicas(ctx, a, run).await?;
    let schedule = Arc::new(Schedule {
        next: AtomicU64::new(0),
        count: a.count.unwrap_or(u64::MAX),
        start: Instant::now(),
        end: Instant::now() + a.duration,
        rate: a.rate,
    });
    let bar = progress(a);
    let ticker = tick(bar.clone(), schedule.clone(), a.count.is_some());
    let started = Instant::now();
    let work = Work {
        mode: a.mode,
        client,
        reads,
        replicas,
        run,
        linearizable: a.linearizable,
        read_ratio: a.read_ratio,
        seen_at: Arc::default(),
    };
    let workers = if a.mode == Mode::Propagation {
        1
    } else {
        a.concurrency
    };
    let tasks: Vec<_> = (0..workers)
        .map(|_| tokio::spawn(work.clone().worker(schedule.clone())))
        .collect();
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
    let errors: u64 = total.errors.values().sum();
    let mode = format!("{:?}", a.mode).to_lowercase();
    let per_sec = (total.hist.len() as f64 / secs).round();
    let mut records = vec![latency_record(&mode, &total.hist, errors, secs, per_sec)];
    if a.mode == Mode::Propagation {
        let seen = work.seen_at.lock().unwrap_or_else(|p| p.into_inner());
        let mut p = histogram();
        for d in seen.iter() {
            let _ = p.record(d.as_nanos().max(1) as u64);
        }
        records.push(latency_record(
            "propagation (ack -> visible, per replica)",
            &p,
            0,
            secs,
            0,
        ));
    }
    ctx.printer.print(&records);
    print_errors(ctx, &total.errors);
    Ok(EXIT_OK)
}

/// One row per error code, if there were errors.
fn print_errors(ctx: &Ctx, errors: &BTreeMap<String, u64>) {
    if errors.is_empty() {
        return;
    }
    let rows: Vec<Record> = errors
        .iter()
        .map(|(code, n)| {
            Record::new()
                .field("error_code", code.clone())
                .field("count", *n)
        })
        .collect();
    ctx.printer.print(&rows);
}

/// The replicas `cache` (one) and `propagation` (`--replicas`) read, each on a client of its
/// own, bootstrapped.
async fn start_replicas(ctx: &Ctx, a: &BenchArgs, run: u64) -> Result<Vec<Replica>, CliError> {
    let n = match a.mode {
        Mode::Cache => 1,
        Mode::Propagation => a.replicas.max(1),
        _ => 0,
    };
    let mut replicas = Vec::new();
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
    Ok(replicas)
}

/// Moves the progress bar every 100 ms (by operations with `--count`, else by seconds).
fn tick(bar: ProgressBar, schedule: Arc<Schedule>, by_count: bool) -> tokio::task::JoinHandle<()> {
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
}

/// What every worker shares.
#[derive(Clone)]
struct Work {
    mode: Mode,
    client: Client,
    reads: Arc<Vec<String>>,
    replicas: Vec<Replica>,
    run: u64,
    linearizable: bool,
    read_ratio: u32,
    /// `propagation`: ack -> visible, per replica.
    seen_at: Arc<Mutex<Vec<Duration>>>,
}

impl Work {
    /// Takes operations from `schedule` until it says stop.
    async fn worker(self, schedule: Arc<Schedule>) -> Tally {
        let mut t = Tally::new();
        while let Some(i) = schedule.take().await {
            let t0 = Instant::now();
            let r = self.op(i).await;
            t.record(t0, r);
            if self.mode == Mode::Cache && i % 1024 == 0 {
                // Local reads never wait: let the ticker and the replica's task run.
                tokio::task::yield_now().await;
            }
        }
        t
    }

    /// Operation `i` of the mode.
    async fn op(&self, i: u64) -> Result<(), Error> {
        let (client, reads, run) = (&self.client, &self.reads, self.run);
        match self.mode {
            Mode::Revoke => self.revoke(i).await,
            Mode::Check => check(client, reads, i, self.linearizable).await,
            Mode::Mixed if !i.is_multiple_of(u64::from(self.read_ratio + 1)) => {
                check(client, reads, i, false).await
            }
            Mode::Mixed => self.revoke(i).await,
            Mode::Cache => {
                let hit = self.replicas[0].is_revoked(&reads[i as usize % reads.len()]);
                if hit {
                    Ok(())
                } else {
                    Err(Error::Stream("a preloaded id reads as not revoked".into()))
                }
            }
            Mode::Propagation => propagate(client, &self.replicas, run, i, &self.seen_at).await,
        }
    }

    /// A durable revoke of a fresh id.
    async fn revoke(&self, i: u64) -> Result<(), Error> {
        self.client
            .revoke(Revoke::new(
                format!("bench-{}-{i}", self.run),
                unix_now() + 3600,
            ))
            .await
            .map(drop)
    }
}

/// A histogram of nanoseconds up to ten minutes, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3)
        .unwrap_or_else(|e| panic!("histogram bounds: {e}"))
}

/// One output row: count, rate and latency percentiles (microseconds, two decimals).
fn latency_record(
    mode: &str,
    h: &Histogram<u64>,
    errors: u64,
    secs: f64,
    per_sec: impl Into<serde_json::Value>,
) -> Record {
    let us = |ns: u64| (ns as f64 / 10.0).round() / 100.0;
    Record::new()
        .field("mode", mode.to_owned())
        .field("ops", h.len())
        .field("errors", errors)
        .field("seconds", (secs * 100.0).round() / 100.0)
        .field("ops_per_sec", per_sec)
        .field("p50_us", us(h.value_at_quantile(0.5)))
        .field("p90_us", us(h.value_at_quantile(0.9)))
        .field("p99_us", us(h.value_at_quantile(0.99)))
        .field("p999_us", us(h.value_at_quantile(0.999)))
        .field("max_us", us(h.max()))
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
        .revoke(Revoke::new(format!("bench-{run}-p-{i}"), unix_now() + 3600))
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
