//! Topologies: regions with their voters, learners, validators (replicas), writers and
//! checkers, and the round-trip time between each pair of regions. Read from TOML files under
//! `deploy/topologies/`; the shipped ones are also built in, so the binary finds them by name
//! from anywhere.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;

/// The topologies shipped in `deploy/topologies/`, by name.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "local-3",
        include_str!("../../../deploy/topologies/local-3.toml"),
    ),
    (
        "three-regions-5",
        include_str!("../../../deploy/topologies/three-regions-5.toml"),
    ),
    (
        "five-regions-5-plus-learners",
        include_str!("../../../deploy/topologies/five-regions-5-plus-learners.toml"),
    ),
];

/// One region.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Its name (unique).
    pub name: String,
    /// Voting nodes placed here.
    #[serde(default)]
    pub voters: u32,
    /// Learners (non-voting nodes) placed here.
    #[serde(default)]
    pub learners: u32,
    /// Validator replicas (`revokd_client::Replica`) following the cluster from here.
    #[serde(default)]
    pub replicas: u32,
    /// Workload writers revoking from here.
    #[serde(default)]
    pub writers: u32,
    /// Workload checkers reading linearizably from here.
    #[serde(default)]
    pub checkers: u32,
}

/// The round trip between two regions.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// The two regions.
    pub between: [String; 2],
    /// Round-trip time in milliseconds; each direction gets half.
    pub rtt_ms: u64,
    /// Extra delay per direction, uniform in `0..=jitter_ms`. Default 0.
    #[serde(default)]
    pub jitter_ms: u64,
}

/// Raft timing for the nodes: distances decide what is safe. Unless both are given, every
/// node gets `--max-peer-rtt-ms` [`Topology::max_raft_rtt`] and derives the rest by the
/// node's timing rule; a value given here still wins.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// `--heartbeat-ms`. Default: the node's timing rule.
    #[serde(default)]
    pub heartbeat_ms: Option<u64>,
    /// `--election-timeout-ms`. Default: the node's timing rule.
    #[serde(default)]
    pub election_timeout_ms: Option<u64>,
    /// Extra flags for every node. Default none.
    #[serde(default)]
    pub extra_args: Vec<String>,
}

impl NodeSettings {
    /// The timing flags for a node of `topology`.
    pub fn timing_args(&self, topology: &Topology) -> Vec<String> {
        let mut args = Vec::new();
        if self.heartbeat_ms.is_none() || self.election_timeout_ms.is_none() {
            let rtt = topology.max_raft_rtt().as_millis();
            args.extend(["--max-peer-rtt-ms".into(), rtt.to_string()]);
        }
        for (flag, v) in [
            ("--heartbeat-ms", self.heartbeat_ms),
            ("--election-timeout-ms", self.election_timeout_ms),
        ] {
            if let Some(v) = v {
                args.extend([flag.into(), v.to_string()]);
            }
        }
        args
    }
}

/// A deployment to bring up: regions, links and node settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Its name.
    pub name: String,
    /// Round trip between two nodes of one region, in milliseconds. Default 0.
    #[serde(default)]
    pub intra_region_rtt_ms: u64,
    /// Node settings.
    #[serde(default)]
    pub node: NodeSettings,
    /// The regions, in order: node ids are given region by region, voters first.
    pub regions: Vec<Region>,
    /// Round trips between regions; every pair of regions needs one.
    #[serde(default)]
    pub links: Vec<LinkSpec>,
}

/// One node's place in a topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    /// Node id (1-based, region by region).
    pub id: u64,
    /// Its region.
    pub region: String,
    /// Whether it votes (else it is a learner).
    pub voter: bool,
}

impl Topology {
    /// Loads a topology from a file path, or a shipped one by name.
    pub fn load(name_or_path: &str) -> Result<Topology> {
        let path = Path::new(name_or_path);
        let text = if path.is_file() {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        } else if let Some((_, t)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            (*t).to_owned()
        } else {
            let names: Vec<_> = BUILTIN.iter().map(|(n, _)| *n).collect();
            bail!(
                "topology {name_or_path:?} is neither a file nor one of {}",
                names.join(", ")
            );
        };
        Topology::parse(&text).with_context(|| format!("topology {name_or_path}"))
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Topology> {
        let t: Topology = toml::from_str(text)?;
        t.validate()?;
        Ok(t)
    }

    fn validate(&self) -> Result<()> {
        ensure!(!self.regions.is_empty(), "no regions");
        let mut seen = std::collections::BTreeSet::new();
        for r in &self.regions {
            ensure!(seen.insert(&r.name), "region {} appears twice", r.name);
        }
        let voters: u32 = self.regions.iter().map(|r| r.voters).sum();
        ensure!(
            (1..=9).contains(&voters),
            "{voters} voters; a topology needs 1 to 9"
        );
        for l in &self.links {
            for r in &l.between {
                ensure!(
                    self.regions.iter().any(|x| &x.name == r),
                    "link names unknown region {r}"
                );
            }
        }
        for (i, a) in self.regions.iter().enumerate() {
            for b in &self.regions[i + 1..] {
                ensure!(
                    self.link(&a.name, &b.name).is_some(),
                    "no link between {} and {}: give its rtt_ms",
                    a.name,
                    b.name
                );
            }
        }
        if let (Some(h), Some(e)) = (self.node.heartbeat_ms, self.node.election_timeout_ms) {
            ensure!(
                2 * e >= 5 * h,
                "election_timeout_ms must be at least two and a half heartbeats"
            );
        }
        Ok(())
    }

    /// The largest round trip between two Raft nodes (voters or learners) of this topology,
    /// with the jitter of both directions: what every node's `--max-peer-rtt-ms` is.
    pub fn max_raft_rtt(&self) -> Duration {
        let raft: Vec<&Region> = self
            .regions
            .iter()
            .filter(|r| r.voters + r.learners > 0)
            .collect();
        let mut max = Duration::ZERO;
        for (i, a) in raft.iter().enumerate() {
            if a.voters + a.learners > 1 {
                max = max.max(Duration::from_millis(self.intra_region_rtt_ms));
            }
            for b in &raft[i + 1..] {
                let (delay, jitter) = self.one_way(&a.name, &b.name);
                max = max.max((delay + jitter) * 2);
            }
        }
        max
    }

    fn link(&self, a: &str, b: &str) -> Option<&LinkSpec> {
        self.links.iter().find(|l| {
            (l.between[0] == a && l.between[1] == b) || (l.between[0] == b && l.between[1] == a)
        })
    }

    /// One-way delay and jitter from region `a` to region `b`.
    pub fn one_way(&self, a: &str, b: &str) -> (Duration, Duration) {
        if a == b {
            return (
                Duration::from_micros(self.intra_region_rtt_ms * 500),
                Duration::ZERO,
            );
        }
        match self.link(a, b) {
            Some(l) => (
                Duration::from_micros(l.rtt_ms * 500),
                Duration::from_millis(l.jitter_ms),
            ),
            None => (Duration::ZERO, Duration::ZERO),
        }
    }

    /// Every node, in id order.
    pub fn nodes(&self) -> Vec<NodeSpec> {
        let mut out = Vec::new();
        for r in &self.regions {
            for voter in std::iter::repeat_n(true, r.voters as usize)
                .chain(std::iter::repeat_n(false, r.learners as usize))
            {
                out.push(NodeSpec {
                    id: out.len() as u64 + 1,
                    region: r.name.clone(),
                    voter,
                });
            }
        }
        out
    }

    /// Region of every node, by id.
    pub fn regions_by_node(&self) -> BTreeMap<u64, String> {
        self.nodes().into_iter().map(|n| (n.id, n.region)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_topologies_parse() {
        for (name, _) in BUILTIN {
            let t = Topology::load(name).unwrap();
            assert_eq!(&t.name, name);
            assert!(t.nodes().iter().any(|n| n.voter));
        }
        let t = Topology::load("three-regions-5").unwrap();
        let voters = t.nodes().iter().filter(|n| n.voter).count();
        assert_eq!(voters, 5);
        assert_eq!(t.nodes().len(), 6, "five voters and a learner");
        assert_eq!(
            t.one_way("us-east", "ap-south").0,
            Duration::from_millis(95)
        );
        assert_eq!(
            t.one_way("ap-south", "us-east").0,
            Duration::from_millis(95)
        );
    }

    #[test]
    fn nodes_derive_their_timing_from_the_longest_raft_round_trip() {
        let t = Topology::load("three-regions-5").unwrap();
        assert_eq!(t.max_raft_rtt(), Duration::from_millis(200));
        assert_eq!(t.node.timing_args(&t), ["--max-peer-rtt-ms", "200"]);
        let t = Topology::load("five-regions-5-plus-learners").unwrap();
        assert_eq!(t.max_raft_rtt(), Duration::from_millis(316));
        let t = Topology::load("local-3").unwrap();
        assert_eq!(t.node.timing_args(&t)[0], "--max-peer-rtt-ms");
        let given = NodeSettings {
            heartbeat_ms: Some(250),
            election_timeout_ms: Some(1000),
            extra_args: Vec::new(),
        };
        assert_eq!(
            given.timing_args(&t),
            ["--heartbeat-ms", "250", "--election-timeout-ms", "1000"]
        );
    }

    #[test]
    fn missing_link_is_an_error() {
        let err = Topology::parse(
            r#"
            name = "x"
            [[regions]]
            name = "a"
            voters = 1
            [[regions]]
            name = "b"
            voters = 2
            "#,
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("no link between a and b"),
            "{err:#}"
        );
    }
}
