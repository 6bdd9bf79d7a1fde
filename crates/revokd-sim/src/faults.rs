//! Fault schedules, drawn from the run's seed: which fault, between whom, when, for how long.
//! The schedule is printed with a failing seed, and is a pure function of the seed (tested).

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Messages between two hosts are held both ways (a partition TCP rides out: they are
    /// delivered when it heals).
    Partition(String, String),
    /// Messages from the first host to the second are held.
    OneWay(String, String),
    /// A node is cut off from every other host, both ways.
    Isolate(String),
    /// Every message in flight between two hosts is lost and new ones are dropped until the
    /// link is repaired (a connection then stalls until keepalive notices).
    Loss(String, String),
    /// The link between two hosts gets this one-way latency.
    Latency(String, String, Duration),
    /// A node crashes, losing what it had not flushed, and restarts when the fault ends. With
    /// a tear (per mille), that share of the writes not flushed reach the disk, the next one
    /// torn at that share of its bytes ([`revokd::storage::MemDisk::crash_torn`]).
    Crash(String, Option<u32>),
    /// A client replica loses every node, then comes back.
    DisconnectReplica(String),
    /// A node's wall clock jumps by this many seconds (ahead or back), and is set right when
    /// the fault ends. Never while that node is crashed: revokd keeps the time it read at
    /// start, and documents that it must start with a right clock.
    ClockJump(String, i64),
    /// The spare nodes join as voters (learners first, then a membership change to 5), and
    /// the cluster shrinks back to its founders when the fault ends.
    Grow,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Partition(a, b) => write!(f, "partition {a} <-> {b}"),
            Fault::OneWay(a, b) => write!(f, "one-way partition {a} -> {b}"),
            Fault::Isolate(n) => write!(f, "isolate {n}"),
            Fault::Loss(a, b) => write!(f, "message loss {a} <-> {b}"),
            Fault::Latency(a, b, d) => write!(f, "latency {a} <-> {b} {}ms", d.as_millis()),
            Fault::Crash(n, None) => write!(f, "crash {n} (unflushed writes lost), restart after"),
            Fault::Crash(n, Some(tear)) => write!(
                f,
                "crash {n} (unflushed writes torn at {}.{}%), restart after",
                tear / 10,
                tear % 10
            ),
            Fault::DisconnectReplica(r) => write!(f, "disconnect replica {r}"),
            Fault::ClockJump(n, s) => write!(f, "clock of {n} jumps {s:+}s"),
            Fault::Grow => write!(f, "grow to 5 voters, then shrink back to 3"),
        }
    }
}

/// A fault with its window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scheduled {
    /// When it starts (simulated time since the run began).
    pub at: Duration,
    /// How long it lasts.
    pub lasts: Duration,
    /// What it is.
    pub fault: Fault,
}

impl fmt::Display for Scheduled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>6}ms +{:>5}ms  {}",
            self.at.as_millis(),
            self.lasts.as_millis(),
            self.fault
        )
    }
}

/// Draws the schedule of a run: `count` faults between `start` and `end`, among `nodes` and
/// `replicas` (host names), and in about half the runs (`grow`) a membership change to 5
/// voters and back. At most one node is crashed at a time, so a majority of the disks always
/// survives (what Raft promises needs no more); partitions are unconstrained.
pub fn schedule(
    seed: u64,
    nodes: &[String],
    replicas: &[String],
    grow: bool,
    start: Duration,
    end: Duration,
) -> Vec<Scheduled> {
    // A stream of its own, so that the schedule does not depend on anything else drawn.
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_fa17);
    let count = rng.random_range(2..=7);
    let span = (end - start).as_millis() as u64;
    let mut out: Vec<Scheduled> = Vec::new();
    for _ in 0..count {
        let at = start + Duration::from_millis(rng.random_range(0..span));
        let lasts = Duration::from_millis(rng.random_range(200..3_000));
        let pick = |rng: &mut StdRng| nodes[rng.random_range(0..nodes.len())].clone();
        let pair = |rng: &mut StdRng| {
            let a = rng.random_range(0..nodes.len());
            let b = (a + rng.random_range(1..nodes.len())) % nodes.len();
            (nodes[a].clone(), nodes[b].clone())
        };
        let fault = match rng.random_range(0..100) {
            0..20 => {
                let (a, b) = pair(&mut rng);
                Fault::Partition(a, b)
            }
            20..32 => {
                let (a, b) = pair(&mut rng);
                Fault::OneWay(a, b)
            }
            32..47 => Fault::Isolate(pick(&mut rng)),
            47..55 => {
                let (a, b) = pair(&mut rng);
                Fault::Loss(a, b)
            }
            55..67 => {
                let (a, b) = pair(&mut rng);
                Fault::Latency(a, b, Duration::from_millis(rng.random_range(20..400)))
            }
            67..90 => Fault::Crash(pick(&mut rng), None),
            _ if !replicas.is_empty() => {
                Fault::DisconnectReplica(replicas[rng.random_range(0..replicas.len())].clone())
            }
            _ => Fault::Crash(pick(&mut rng), None),
        };
        // One crash at a time: drop a crash overlapping another.
        let overlaps = |s: &Scheduled| s.at < at + lasts && at < s.at + s.lasts;
        if matches!(fault, Fault::Crash(..))
            && out
                .iter()
                .any(|s| matches!(s.fault, Fault::Crash(..)) && overlaps(s))
        {
            continue;
        }
        out.push(Scheduled { at, lasts, fault });
    }
    // Tears and clock jumps from streams of their own, so the other faults of a seed stay as
    // they were.
    let mut tears = StdRng::seed_from_u64(seed ^ 0x7ea2_d15c);
    for s in &mut out {
        if let Fault::Crash(_, tear) = &mut s.fault {
            *tear = tears.random_bool(0.5).then(|| tears.random_range(0..1000));
        }
    }
    let mut clocks = StdRng::seed_from_u64(seed ^ 0xc10c_0ff5);
    for _ in 0..clocks.random_range(0..=2) {
        let at = start + Duration::from_millis(clocks.random_range(0..span));
        let lasts = Duration::from_millis(clocks.random_range(500..5_000));
        let node = nodes[clocks.random_range(0..nodes.len())].clone();
        // A minute to three days, ahead or back: past the workload's day-long tokens.
        let secs =
            clocks.random_range(60..3 * 86_400) * if clocks.random_bool(0.5) { 1 } else { -1 };
        let crashed = out.iter().any(|s| {
            matches!(&s.fault, Fault::Crash(n, _) if *n == node)
                && s.at < at + lasts
                && at < s.at + s.lasts
        });
        if !crashed {
            out.push(Scheduled {
                at,
                lasts,
                fault: Fault::ClockJump(node, secs),
            });
        }
    }
    if grow && rng.random_bool(0.5) {
        let at = start + Duration::from_millis(rng.random_range(0..span));
        let lasts = Duration::from_millis(rng.random_range(1_000..4_000));
        out.push(Scheduled {
            at,
            lasts,
            fault: Fault::Grow,
        });
    }
    out.sort_by_key(|s| s.at);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_a_function_of_the_seed() {
        let nodes: Vec<String> = (1..=3).map(|i| format!("n{i}")).collect();
        let replicas = vec!["r1".to_owned()];
        let s = Duration::from_secs(1);
        let e = Duration::from_secs(8);
        for seed in 0..50 {
            let a = schedule(seed, &nodes, &replicas, true, s, e);
            assert_eq!(a, schedule(seed, &nodes, &replicas, true, s, e));
            assert!(a.iter().all(|f| f.at >= s && f.at < e));
            let crashes: Vec<_> = a
                .iter()
                .filter(|f| matches!(f.fault, Fault::Crash(..)))
                .collect();
            for (i, x) in crashes.iter().enumerate() {
                for y in &crashes[i + 1..] {
                    assert!(
                        x.at + x.lasts <= y.at || y.at + y.lasts <= x.at,
                        "{x} / {y}"
                    );
                }
            }
        }
        assert_ne!(
            schedule(1, &nodes, &replicas, true, s, e),
            schedule(2, &nodes, &replicas, true, s, e)
        );
        assert!(
            (0..50).any(|seed| schedule(seed, &nodes, &replicas, true, s, e)
                .iter()
                .any(|f| f.fault == Fault::Grow))
        );
    }
}
