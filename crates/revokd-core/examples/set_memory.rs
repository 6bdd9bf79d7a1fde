//! Resident memory per revoked id of the node's revocation set alone: applies `N` revokes
//! (36-character ids, in batches of 10,000, as `RevokeBatch` would) and prints the process's
//! RSS growth per id. `cargo run --release -p revokd-core --example set_memory -- 1000000`

use revokd_core::{Command, RevocationSet, TokenSpec};

fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let before = rss();
    let started = std::time::Instant::now();
    let mut set = RevocationSet::new();
    let mut rev = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        rev += 1;
        let tokens = chunk
            .iter()
            .map(|k| {
                TokenSpec::new(
                    format!("{:08x}-0000-4000-8000-{:012x}", k, k * 7919),
                    2_000_000_000 + (*k as i64 % 3600),
                )
            })
            .collect();
        let cmd = Command::Revoke {
            tokens,
            now: 1_900_000_000,
            by: "admin".into(),
        };
        let _ = set.apply(rev, &cmd);
    }
    let applied = started.elapsed();
    let after = rss();
    let started = std::time::Instant::now();
    let snapshot = set.encode_snapshot();
    let encoded = started.elapsed();
    let started = std::time::Instant::now();
    let restored = RevocationSet::decode_snapshot(&snapshot).map(|s| s.token_count());
    println!(
        "{n} ids: RSS growth {:.1} MiB, {:.0} B per id ({} in the set); applied in {applied:?}, \
         snapshot of {} MiB encoded in {encoded:?}, decoded in {:?} ({restored:?} ids)",
        (after - before) as f64 / 1048576.0,
        (after - before) as f64 / n as f64,
        set.token_count(),
        snapshot.len() >> 20,
        started.elapsed(),
    );
}
