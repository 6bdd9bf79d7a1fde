//! Faults and their schedules: the named scenarios and the seeded random one. A schedule is
//! plain data (the same seed always gives the same schedule); roles such as "the leader" are
//! resolved when a step runs, since which node leads depends on the run.

use std::fmt;
use std::time::Duration;

use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::topology::Topology;

/// Which node a fault hits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Target {
    /// Whichever node leads when the step runs.
    Leader,
    /// A voter that does not lead when the step runs (the lowest id).
    Follower,
    /// This node.
    Node(u64),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Leader => f.write_str("the leader"),
            Target::Follower => f.write_str("a follower"),
            Target::Node(id) => write!(f, "node {id}"),
        }
    }
}

/// Which traffic a partition blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Cut {
    /// Both ways.
    Both,
    /// The target can receive but not send.
    Outbound,
    /// The target can send but not receive.
    Inbound,
}

/// One fault. Each lasts its duration and is then healed (a killed node restarts, a paused
/// one resumes, a cut link heals, a latency returns to the topology's).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Fault {
    /// `kill -9`, restart after `down`.
    Kill {
        /// The node.
        target: Target,
        /// How long it stays down.
        #[serde(with = "ms")]
        down: Duration,
    },
    /// SIGSTOP, SIGCONT after `duration`.
    Pause {
        /// The node.
        target: Target,
        /// How long it stays stopped.
        #[serde(with = "ms")]
        duration: Duration,
    },
    /// Cut a node off from every other node and every client.
    PartitionNode {
        /// The node.
        target: Target,
        /// Which way.
        cut: Cut,
        /// How long.
        #[serde(with = "ms")]
        duration: Duration,
    },
    /// Cut a region's nodes and clients off from the other regions.
    PartitionRegion {
        /// The region.
        region: String,
        /// Which way (from the region's point of view).
        cut: Cut,
        /// How long.
        #[serde(with = "ms")]
        duration: Duration,
    },
    /// Raise the round trip between two regions (or within one, if both name it).
    Latency {
        /// One region.
        a: String,
        /// The other.
        b: String,
        /// The new round trip.
        #[serde(with = "ms")]
        rtt: Duration,
        /// How long.
        #[serde(with = "ms")]
        duration: Duration,
    },
    /// Stop (SIGTERM) and restart every node in turn, `gap` apart.
    RollingRestart {
        /// Time between two nodes.
        #[serde(with = "ms")]
        gap: Duration,
    },
}

mod ms {
    use std::time::Duration;

    pub(super) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill { target, down } => write!(f, "kill -9 {target}, down {}", secs(*down)),
            Fault::Pause { target, duration } => {
                write!(f, "pause {target} for {}", secs(*duration))
            }
            Fault::PartitionNode {
                target,
                cut,
                duration,
            } => {
                let how = match cut {
                    Cut::Both => "cut off",
                    Cut::Outbound => "cannot send (one-way)",
                    Cut::Inbound => "cannot receive (one-way)",
                };
                write!(f, "{target} {how} for {}", secs(*duration))
            }
            Fault::PartitionRegion {
                region,
                cut,
                duration,
            } => {
                let how = match cut {
                    Cut::Both => "cut off",
                    Cut::Outbound => "cannot send out (one-way)",
                    Cut::Inbound => "cannot receive (one-way)",
                };
                write!(f, "region {region} {how} for {}", secs(*duration))
            }
            Fault::Latency {
                a,
                b,
                rtt,
                duration,
            } => write!(
                f,
                "RTT {a}<->{b} raised to {} ms for {}",
                rtt.as_millis(),
                secs(*duration)
            ),
            Fault::RollingRestart { gap } => {
                write!(f, "rolling restart of every node, {} apart", secs(*gap))
            }
        }
    }
}

/// A fault after a quiet period.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    /// Quiet time before the fault.
    #[serde(with = "ms")]
    pub after: Duration,
    /// The fault.
    pub fault: Fault,
}

/// A whole scenario.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Schedule {
    /// The scenario's name.
    pub name: String,
    /// The steps, run one after another.
    pub steps: Vec<Step>,
    /// Quiet time after the last step, before checking.
    #[serde(with = "ms")]
    pub settle: Duration,
}

/// The named scenarios, with the topology each runs on by default and what it shows.
pub const SCENARIOS: &[(&str, &str, &str)] = &[
    (
        "smoke",
        "local-3",
        "CI smoke: kill the leader twice, cut a follower off, pause a node",
    ),
    (
        "kill-leader",
        "three-regions-5",
        "kill -9 the leader three times",
    ),
    (
        "kill-follower",
        "three-regions-5",
        "kill -9 followers while writes flow",
    ),
    (
        "pause-leader",
        "three-regions-5",
        "SIGSTOP the leader past the election timeout",
    ),
    (
        "isolate-leader",
        "three-regions-5",
        "cut the leader off from everyone",
    ),
    (
        "partition-region",
        "three-regions-5",
        "cut a two-voter region off, then the learner's region",
    ),
    (
        "one-way",
        "three-regions-5",
        "the leader can receive but not send; a follower the reverse",
    ),
    (
        "latency-spike",
        "three-regions-5",
        "raise the RTT between two regions to 400 ms",
    ),
    (
        "rolling-restart",
        "three-regions-5",
        "restart every node in turn, as an upgrade does",
    ),
    (
        "random",
        "three-regions-5",
        "a seeded random mix of all of the above (--seed, --duration)",
    ),
];

/// The default topology of a scenario.
pub fn default_topology(scenario: &str) -> Option<&'static str> {
    SCENARIOS
        .iter()
        .find(|(n, _, _)| *n == scenario)
        .map(|(_, t, _)| *t)
}

fn s(secs: f64) -> Duration {
    Duration::from_secs_f64(secs)
}

fn step(after: f64, fault: Fault) -> Step {
    Step {
        after: s(after),
        fault,
    }
}

/// Builds a scenario's schedule for a topology. `seed` and `duration` matter for `random`
/// only. Every named scenario is one arm, so the function is the catalogue: long because
/// there are many scenarios, each a few lines of data.
pub fn schedule(
    name: &str,
    topology: &Topology,
    seed: u64,
    duration: Duration,
) -> Result<Schedule> {
    let regions: Vec<&str> = topology.regions.iter().map(|r| r.name.as_str()).collect();
    let steps = match name {
        "smoke" => vec![
            step(
                4.0,
                Fault::Kill {
                    target: Target::Leader,
                    down: s(3.0),
                },
            ),
            step(
                4.0,
                Fault::Kill {
                    target: Target::Leader,
                    down: s(3.0),
                },
            ),
            step(
                4.0,
                Fault::PartitionNode {
                    target: Target::Follower,
                    cut: Cut::Both,
                    duration: s(5.0),
                },
            ),
            step(
                4.0,
                Fault::Pause {
                    target: Target::Follower,
                    duration: s(4.0),
                },
            ),
        ],
        "kill-leader" => (0..3)
            .map(|_| {
                step(
                    6.0,
                    Fault::Kill {
                        target: Target::Leader,
                        down: s(5.0),
                    },
                )
            })
            .collect(),
        "kill-follower" => (0..3)
            .map(|_| {
                step(
                    5.0,
                    Fault::Kill {
                        target: Target::Follower,
                        down: s(6.0),
                    },
                )
            })
            .collect(),
        "pause-leader" => (0..2)
            .map(|_| {
                step(
                    6.0,
                    Fault::Pause {
                        target: Target::Leader,
                        duration: s(8.0),
                    },
                )
            })
            .collect(),
        "isolate-leader" => (0..2)
            .map(|_| {
                step(
                    6.0,
                    Fault::PartitionNode {
                        target: Target::Leader,
                        cut: Cut::Both,
                        duration: s(10.0),
                    },
                )
            })
            .collect(),
        "partition-region" => {
            let mut v = vec![step(
                6.0,
                Fault::PartitionRegion {
                    region: regions[0].into(),
                    cut: Cut::Both,
                    duration: s(12.0),
                },
            )];
            if let Some(last) = regions.last().filter(|_| regions.len() > 1) {
                v.push(step(
                    6.0,
                    Fault::PartitionRegion {
                        region: (*last).into(),
                        cut: Cut::Both,
                        duration: s(12.0),
                    },
                ));
            }
            v
        }
        "one-way" => vec![
            step(
                6.0,
                Fault::PartitionNode {
                    target: Target::Leader,
                    cut: Cut::Outbound,
                    duration: s(10.0),
                },
            ),
            step(
                6.0,
                Fault::PartitionNode {
                    target: Target::Follower,
                    cut: Cut::Inbound,
                    duration: s(10.0),
                },
            ),
        ],
        "latency-spike" => {
            let (a, b) = match regions.as_slice() {
                [a, b, ..] => (*a, *b),
                [a] => (*a, *a),
                [] => bail!("topology has no regions"),
            };
            vec![step(
                6.0,
                Fault::Latency {
                    a: a.into(),
                    b: b.into(),
                    rtt: Duration::from_millis(400),
                    duration: s(15.0),
                },
            )]
        }
        "rolling-restart" => vec![step(5.0, Fault::RollingRestart { gap: s(5.0) })],
        "random" => random_steps(topology, seed, duration),
        other => {
            let names: Vec<_> = SCENARIOS.iter().map(|(n, _, _)| *n).collect();
            bail!("unknown scenario {other:?}; one of {}", names.join(", "))
        }
    };
    Ok(Schedule {
        name: name.into(),
        steps,
        settle: s(5.0),
    })
}

/// Faults drawn from `seed` until their total time reaches `duration`. Node picks are
/// concrete ids from the seed; only "leader" stays a role.
fn random_steps(topology: &Topology, seed: u64, duration: Duration) -> Vec<Step> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ids: Vec<u64> = topology.nodes().iter().map(|n| n.id).collect();
    let regions: Vec<String> = topology.regions.iter().map(|r| r.name.clone()).collect();
    let mut total = Duration::ZERO;
    let mut steps = Vec::new();
    let pick_target = |rng: &mut ChaCha8Rng| {
        if rng.gen_bool(0.4) {
            Target::Leader
        } else {
            Target::Node(*ids.choose(rng).expect("a topology has nodes"))
        }
    };
    let cut = |rng: &mut ChaCha8Rng| {
        *[Cut::Both, Cut::Both, Cut::Outbound, Cut::Inbound]
            .choose(rng)
            .expect("non-empty")
    };
    while total < duration {
        let after = s(rng.gen_range(2.0..6.0));
        let len = s(rng.gen_range(2.0..10.0));
        let fault = match rng.gen_range(0..6) {
            0 => Fault::Kill {
                target: pick_target(&mut rng),
                down: len,
            },
            1 => Fault::Pause {
                target: pick_target(&mut rng),
                duration: len,
            },
            2 => Fault::PartitionNode {
                target: pick_target(&mut rng),
                cut: cut(&mut rng),
                duration: len,
            },
            3 if regions.len() > 1 => Fault::PartitionRegion {
                region: regions.choose(&mut rng).expect("non-empty").clone(),
                cut: cut(&mut rng),
                duration: len,
            },
            4 if regions.len() > 1 => {
                let mut two: Vec<&String> = regions.choose_multiple(&mut rng, 2).collect();
                two.sort();
                Fault::Latency {
                    a: two[0].clone(),
                    b: two[1].clone(),
                    rtt: Duration::from_millis(rng.gen_range(150..450)),
                    duration: len,
                }
            }
            _ => Fault::Kill {
                target: Target::Leader,
                down: len,
            },
        };
        total += after + len;
        steps.push(Step { after, fault });
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_schedule() {
        let t = Topology::load("three-regions-5").unwrap();
        let a = schedule("random", &t, 42, Duration::from_secs(120)).unwrap();
        let b = schedule("random", &t, 42, Duration::from_secs(120)).unwrap();
        let c = schedule("random", &t, 43, Duration::from_secs(120)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c, "another seed gives another schedule");
        let total: Duration = a
            .steps
            .iter()
            .map(|st| st.after + fault_length(&st.fault))
            .sum();
        assert!(total >= Duration::from_secs(120));
    }

    fn fault_length(f: &Fault) -> Duration {
        match f {
            Fault::Kill { down, .. } => *down,
            Fault::Pause { duration, .. }
            | Fault::PartitionNode { duration, .. }
            | Fault::PartitionRegion { duration, .. }
            | Fault::Latency { duration, .. } => *duration,
            Fault::RollingRestart { .. } => Duration::ZERO,
        }
    }

    #[test]
    fn every_named_scenario_builds_on_its_topology() {
        for (name, topo, _) in SCENARIOS {
            let t = Topology::load(topo).unwrap();
            let sched = schedule(name, &t, 1, Duration::from_secs(30)).unwrap();
            assert!(!sched.steps.is_empty(), "{name}");
        }
        assert!(schedule(
            "nope",
            &Topology::load("local-3").unwrap(),
            1,
            Duration::ZERO
        )
        .is_err());
    }
}
