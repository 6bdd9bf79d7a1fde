//! Runs the simulation over many seeds and fails on the first seed whose run breaks an
//! invariant, printing it with its fault schedule and the end of its history.
//!
//! ```text
//! cargo test --release --workspace --test seeds -- --nocapture    # SIM_SEEDS seeds (default 500) from SIM_START (0)
//! SIM_SEED=17 scripts/sim.sh                                       # replay one seed, history printed
//! scripts/sim.sh 10000                                             # many more
//! ```
//! `SIM_REPEAT=n` runs every seed n times; `SIM_VERBOSE=1` prints every history;
//! `SIM_TRACE=<filter>` (say `SIM_TRACE=info,openraft=debug`) prints the nodes' and clients'
//! logs, stamped with simulated time, to stderr.

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
    let opts = Options::default();
    let started = Instant::now();
    let (mut ops, mut writes, mut checks, mut crashes, mut lost, mut simulated) =
        (0, 0, 0, 0, 0, 0.0);
    let mut recovery_ms: Vec<u128> = Vec::new();
    for (i, &seed) in seeds.iter().enumerate() {
        let report = run(seed, &opts);
        ops += report.ops.0;
        writes += report.ops.1;
        checks += report.ops.2;
        crashes += report.crashes.0;
        lost += report.crashes.1;
        simulated += report.simulated.as_secs_f64();
        recovery_ms.extend(report.recovered_after.map(|d| d.as_millis()));
        if verbose {
            println!("seed {seed}: schedule");
            for s in &report.schedule {
                println!("  {s}");
            }
            println!("{}", report.history);
        }
        if !report.failures.is_empty() {
            let tail: Vec<&str> = report.history.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "{}end of its history:\n  {}\n{i} of {} seeds passed before seed {seed} failed ({:.1} s)",
                report.explain(),
                tail.join("\n  "),
                seeds.len(),
                started.elapsed().as_secs_f64()
            );
        }
        if (i + 1) % 100 == 0 {
            eprintln!(
                "  {} seeds passed ({:.0} s)",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    recovery_ms.sort_unstable();
    let p = |q: f64| {
        recovery_ms
            .get(((recovery_ms.len().max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "simulation: {} seeds passed in {:.1} s wall ({:.0} ms per seed; {:.0} s simulated); {ops} operations, {writes} writes acknowledged, {checks} linearizable checks; {crashes} node crashes losing {lost} unflushed writes; first write after the heal p50 {} ms, max {} ms",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64() * 1000.0 / seeds.len() as f64,
        simulated,
        p(0.5),
        p(1.0),
    );
}
