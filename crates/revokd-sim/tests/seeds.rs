//! Runs the simulation over many seeds and fails on the first seed whose run breaks an
//! invariant, printing it with its fault schedule and the end of its history.
//!
//! ```text
//! cargo test --release --workspace --test seeds -- --nocapture    # SIM_SEEDS seeds (default 500) from SIM_START (0)
//! SIM_SEED=17 scripts/sim.sh                                       # replay one seed, history printed
//! scripts/sim.sh 10000                                             # many more
//! ```
//! `SIM_REPEAT=n` runs every seed n times; `SIM_THREADS=n` runs n seeds at once (default: one
//! per core); `SIM_VERBOSE=1` prints every history (one seed at a time);
//! `SIM_TRACE=<filter>` (say `SIM_TRACE=info,openraft=debug`) prints the nodes' and clients'
//! logs, stamped with simulated time, to stderr.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use revokd_sim::{run, Options};

/// Logs to stderr with simulated timestamps, when `SIM_TRACE` names a filter.
fn trace() {
    struct SimTime;
    impl tracing_subscriber::fmt::time::FormatTime for SimTime {
        fn format_time(
            &self,
            w: &mut tracing_subscriber::fmt::format::Writer<'_>,
        ) -> std::fmt::Result {
            write!(w, "{:>7}ms", revokd_sim::history::now_ms())
        }
    }
    if let Ok(filter) = std::env::var("SIM_TRACE") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_timer(SimTime)
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .try_init();
    }
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// What the seeds add up to.
#[derive(Default)]
struct Totals {
    ops: usize,
    writes: usize,
    checks: usize,
    crashes: u64,
    lost: u64,
    torn: u64,
    simulated: f64,
    recovery_ms: Vec<u128>,
    /// Election rounds and leader changes, summed.
    rounds: u64,
    changes: u64,
    /// Leaders a majority kept, deposed by a term raised while they had no quorum.
    late_depositions: u64,
    /// Write items skipped because their client had given up on them.
    superseded: u64,
    /// Seeds by their election rounds per leader change beyond one (split votes), 0..=3+.
    extra_rounds: [usize; 4],
    done: usize,
    /// The failed runs, each with its position in the seed list.
    failed: Vec<(usize, revokd_sim::Report)>,
}

impl Totals {
    fn add(&mut self, i: usize, report: revokd_sim::Report) {
        self.ops += report.ops.0;
        self.writes += report.ops.1;
        self.checks += report.ops.2;
        self.crashes += report.crashes.0;
        self.lost += report.crashes.1;
        self.torn += report.crashes.2;
        self.simulated += report.simulated.as_secs_f64();
        self.recovery_ms
            .extend(report.recovered_after.map(|d| d.as_millis()));
        let (rounds, changes) = report.elections;
        self.rounds += rounds;
        self.changes += changes;
        self.late_depositions += report.late_depositions;
        self.superseded += report.superseded;
        let extra = rounds.saturating_sub(changes.max(1)).min(3) as usize;
        self.extra_rounds[extra] += 1;
        self.done += 1;
        if !report.failures.is_empty() {
            self.failed.push((i, report));
        }
    }
}

#[test]
fn seeds() {
    trace();
    let seeds: Vec<u64> = match env("SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let count = env("SIM_SEEDS").unwrap_or(500);
            let start = env("SIM_START").unwrap_or(0);
            (start..start + count).collect()
        }
    };
    let repeat = env("SIM_REPEAT").unwrap_or(1).max(1) as usize;
    let seeds: Vec<u64> = seeds
        .iter()
        .flat_map(|s| std::iter::repeat_n(*s, repeat))
        .collect();
    let verbose = seeds.len() == 1 || std::env::var_os("SIM_VERBOSE").is_some();
    // Every run is a world of its own on its own thread (turmoil's state, the seeded RNGs
    // and the simulated clock are per thread), so seeds run side by side, one per core:
    // the figures are those of a serial run. Printed histories come one at a time.
    let workers = if verbose {
        1
    } else {
        env("SIM_THREADS")
            .map(|n| n as usize)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .clamp(1, seeds.len().max(1))
    };
    let opts = Options::default();
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let totals = Mutex::new(Totals::default());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= seeds.len() || stop.load(Ordering::Relaxed) {
                    return;
                }
                let report = run(seeds[i], &opts);
                if verbose {
                    println!("seed {}: schedule", seeds[i]);
                    for s in &report.schedule {
                        println!("  {s}");
                    }
                    println!("{}", report.history);
                }
                if !report.failures.is_empty() {
                    stop.store(true, Ordering::Relaxed);
                }
                let mut t = totals.lock().unwrap_or_else(|p| p.into_inner());
                t.add(i, report);
                if t.done % 100 == 0 {
                    eprintln!(
                        "  {} seeds passed ({:.0} s)",
                        t.done,
                        started.elapsed().as_secs_f64()
                    );
                }
            });
        }
    });
    let mut t = totals.into_inner().unwrap_or_else(|p| p.into_inner());
    // The first failing seed in the list, so that a failure names the same seed however the
    // runs were spread over threads.
    t.failed.sort_by_key(|(i, _)| *i);
    if let Some((i, report)) = t.failed.first() {
        let tail: Vec<&str> = report.history.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "{}end of its history:\n  {}\nseed {} (number {} of {}) is the first that failed; {} ran ({:.1} s)",
            report.explain(),
            tail.join("\n  "),
            report.seed,
            i + 1,
            seeds.len(),
            t.done,
            started.elapsed().as_secs_f64()
        );
    }
    t.recovery_ms.sort_unstable();
    let p = |q: f64| {
        t.recovery_ms
            .get(((t.recovery_ms.len().max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "simulation: {} seeds passed in {:.1} s wall on {workers} threads ({:.0} ms per seed; {:.0} s simulated); {} operations, {} writes acknowledged, {} linearizable checks; {} node crashes losing {} unflushed writes ({} of them torn: recovered); first write after the heal p50 {} ms, max {} ms",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64() * 1000.0 / seeds.len() as f64,
        t.simulated,
        t.ops,
        t.writes,
        t.checks,
        t.crashes,
        t.lost,
        t.torn,
        p(0.5),
        p(1.0),
    );
    println!(
        "elections: {} rounds for {} leader changes ({:.2} rounds per change); no leader a majority kept was deposed by a term raised meanwhile ({} by a term raised while it had no quorum); seeds with 0 / 1 / 2 / 3+ rounds beyond one per change: {:?}",
        t.rounds,
        t.changes,
        t.rounds as f64 / t.changes.max(1) as f64,
        t.late_depositions,
        t.extra_rounds,
    );
    println!(
        "write order: {} write items skipped because their client had given up on them and a later write of that client was applied first",
        t.superseded
    );
}
