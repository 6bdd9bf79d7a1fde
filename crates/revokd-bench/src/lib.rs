//! Helpers shared by the benchmark binaries: histograms, process memory, disk usage,
//! ids shaped like real token ids, and a description of the machine for reports.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use revokd_testkit::process::Process;

/// A histogram of microseconds (or nanoseconds) from 1 to 60 million, 3 significant digits.
pub fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Resident memory of a process.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")?;
    Ok(kb * 1024)
}

/// Bytes of the files under a directory.
pub fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A 36-character id shaped like a UUID, unique per `n`.
pub fn uuidish(n: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        n >> 16,
        n & 0xffff,
        n % 0xfff,
        (n * 7) % 0xfff,
        n.wrapping_mul(2_654_435_761)
    )
}

/// Cores, CPU model and memory of this machine, for reports.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb / 1024 / 1024)
        .unwrap_or(0);
    format!("{cores} cores ({cpu}), {mem} GiB RAM")
}

/// Processes a benchmark started (with their scratch directory), stopped by PID when dropped.
pub struct Spawned {
    /// The processes; each is killed when dropped, before the directory goes (fields drop
    /// in order).
    pub children: Vec<Process>,
    /// Their data; removed on drop.
    pub dir: tempfile::TempDir,
}

/// Starts a fresh Redis on a free loopback port with no snapshots; `fsync_always` turns on the
/// append-only file with an fsync per write. Returns it and its `redis://` URL once it answers.
pub fn start_redis(bin: &str, fsync_always: bool) -> Result<(Spawned, String)> {
    let dir = tempfile::tempdir()?;
    let port = revokd_testkit::free_port()?;
    let mut args = vec![
        "--port".to_string(),
        port.to_string(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--save".into(),
        String::new(),
        "--dir".into(),
        dir.path().display().to_string(),
    ];
    if fsync_always {
        args.extend(["--appendonly", "yes", "--appendfsync", "always"].map(String::from));
    } else {
        args.extend(["--appendonly", "no"].map(String::from));
    }
    let mut child = Process::new("redis-server", bin, args);
    child
        .start()
        .with_context(|| format!("starting {bin} (install redis-server)"))?;
    let spawned = Spawned {
        children: vec![child],
        dir,
    };
    let url = format!("redis://127.0.0.1:{port}/");
    let client = redis::Client::open(url.as_str())?;
    for _ in 0..100 {
        if client.get_connection().is_ok() {
            return Ok((spawned, url));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    bail!("redis-server did not start on port {port}")
}

/// One measured row.
#[derive(serde::Serialize, Clone, Debug)]
pub struct Row {
    /// What was measured.
    pub what: String,
    /// Operations that succeeded.
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Wall time of the measurement.
    pub secs: f64,
    /// Successful operations per second.
    pub per_sec: f64,
    /// Median latency, microseconds.
    pub p50_us: u64,
    /// 99th percentile latency, microseconds.
    pub p99_us: u64,
    /// Slowest operation, microseconds.
    pub max_us: u64,
}

/// Runs `clients` tasks for `dur`, each calling `op(task, i)` in a loop; returns the row.
pub async fn closed_loop<F, Fut>(what: String, clients: usize, dur: Duration, op: F) -> Row
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let end = start + dur;
    let mut tasks = Vec::new();
    for t in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = hist();
            let mut errors = 0u64;
            let mut i = 0u64;
            while Instant::now() < end {
                let t0 = Instant::now();
                if op(t, i).await {
                    let _ = h.record(t0.elapsed().as_micros().max(1) as u64);
                } else {
                    errors += 1;
                }
                i += 1;
            }
            (h, errors)
        }));
    }
    let mut h = hist();
    let mut errors = 0;
    for t in tasks {
        if let Ok((th, e)) = t.await {
            let _ = h.add(th);
            errors += e;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Row {
        what,
        ops: h.len(),
        errors,
        secs,
        per_sec: h.len() as f64 / secs,
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        max_us: h.max(),
    }
}
