//! Loopback ports for the processes tests start: each handed out once, to one process.
//!
//! A port chosen by binding port 0 and releasing it comes from the kernel's ephemeral range,
//! the range every outgoing connection also draws its local port from. Between the release
//! and the node's own bind, one of the many connections a cluster test makes can take it, and
//! the node fails with "Address already in use" (seen in a harness run: a node of
//! `pause-leader` never started). So [`free_port`] picks below (or above) the ephemeral range,
//! where no outgoing connection lands, and claims each port for the life of the process with
//! an advisory lock on a file of its own, so that two test processes running at once never
//! pick the same one. The kernel drops the lock when the process exits, however it exits.

use std::fs::{File, OpenOptions, TryLockError};
use std::net::TcpListener;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

/// The lowest port handed out: clear of the services a developer machine commonly runs on
/// fixed ports (etcd 2379, Redis 6379). A port something already listens on is skipped anyway.
const LOWEST: u16 = 10_000;

/// The lock files of this process's ports, kept open (and so locked) until it exits.
static CLAIMED: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// A loopback port that nothing listens on, outside the ephemeral range, claimed by this
/// process for as long as it runs: no other caller of this function, in this process or
/// another, gets it while this process is alive.
pub fn free_port() -> Result<u16> {
    let range = candidates(ephemeral_range());
    if range.is_empty() {
        // The ephemeral range covers everything above LOWEST: only the kernel can choose.
        return Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port());
    }
    let dir = std::env::temp_dir().join("revokd-test-ports");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let span = u32::from(range.end - range.start);
    let start = start_offset() % span;
    let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
    for i in 0..span {
        let port = range.start + u16::try_from((start + i) % span).expect("within the span");
        let Some(lock) = claim(dir.join(format!("{port}.lock")))? else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            claimed.push(lock);
            return Ok(port);
        }
    }
    bail!(
        "no free loopback port in {}..{}: every one is claimed or in use",
        range.start,
        range.end
    )
}

/// Locks `path` for this process; `None` when another process (or this one) holds it.
fn claim(path: PathBuf) -> Result<Option<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// Where to start looking: differs between processes and between runs, so that processes
/// starting together do not all contend for the first ports.
fn start_offset() -> u32 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::process::id().wrapping_mul(2_654_435_761) ^ nanos
}

/// The kernel's ephemeral port range (Linux; the usual default elsewhere).
fn ephemeral_range() -> Range<u16> {
    let parsed = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        });
    match parsed {
        Some((lo, hi)) if lo <= hi => lo..hi.saturating_add(1),
        _ => 32_768..61_000,
    }
}

/// The ports to pick from given the ephemeral range: the larger side of it.
fn candidates(ephemeral: Range<u16>) -> Range<u16> {
    let below = LOWEST..ephemeral.start.max(LOWEST);
    let above = ephemeral.end.max(LOWEST)..u16::MAX;
    if below.len() >= above.len() {
        below
    } else {
        above
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_outside_the_ephemeral_range_and_never_handed_out_twice() {
        let ephemeral = ephemeral_range();
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        for p in ports {
            assert!(!ephemeral.contains(&p), "{p} is in {ephemeral:?}");
            assert!(p >= LOWEST, "{p}");
        }
    }

    #[test]
    fn the_larger_side_of_the_ephemeral_range_is_used() {
        assert_eq!(candidates(32_768..61_000), LOWEST..32_768);
        assert_eq!(candidates(1_024..20_000), 20_000..u16::MAX);
        assert!(candidates(1_024..u16::MAX).is_empty());
    }
}
