//! The simulated network of a deployment: one [`LinkProxy`] per directed pair of nodes and
//! one per (client region, node), with the topology's latencies, and partitions expressed
//! between sets of sites.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Result;

use crate::proxy::{Dir, LinkProxy};
use crate::topology::Topology;

/// Something that sends traffic: a node, or the clients (writers, checkers, replicas) of a
/// region.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Site {
    /// A node, by id.
    Node(u64),
    /// Every client placed in a region.
    Clients(String),
}

/// Every link of a deployment.
pub struct Network {
    topology: Topology,
    regions: BTreeMap<u64, String>,
    advertised: BTreeMap<u64, String>,
    /// Node to node, by (dialler, target).
    peers: BTreeMap<(u64, u64), LinkProxy>,
    /// Region clients to node, by (region, target).
    clients: BTreeMap<(String, u64), LinkProxy>,
}

impl Network {
    /// Starts a proxy for every link, listening on `bind`, in front of the nodes' real
    /// addresses (`advertised`), and applies the topology's latencies.
    pub async fn start(
        topology: &Topology,
        advertised: &BTreeMap<u64, String>,
        bind: std::net::IpAddr,
        seed: u64,
    ) -> Result<Network> {
        let regions = topology.regions_by_node();
        let mut peers = BTreeMap::new();
        let mut clients = BTreeMap::new();
        let mut n = 0u64;
        for (&to, addr) in advertised {
            for &from in advertised.keys().filter(|&&f| f != to) {
                n += 1;
                peers.insert(
                    (from, to),
                    LinkProxy::start_on(bind, addr.clone(), seed ^ n).await?,
                );
            }
            for r in &topology.regions {
                n += 1;
                clients.insert(
                    (r.name.clone(), to),
                    LinkProxy::start_on(bind, addr.clone(), seed ^ n).await?,
                );
            }
        }
        let net = Network {
            topology: topology.clone(),
            regions,
            advertised: advertised.clone(),
            peers,
            clients,
        };
        net.reset_latency();
        Ok(net)
    }

    fn region_of<'a>(&'a self, site: &'a Site) -> &'a str {
        match site {
            Site::Node(id) => self.regions.get(id).map(String::as_str).unwrap_or(""),
            Site::Clients(r) => r,
        }
    }

    /// Every link as (dialler, target node, proxy).
    fn links(&self) -> impl Iterator<Item = (Site, u64, &LinkProxy)> {
        let peers = self
            .peers
            .iter()
            .map(|(&(from, to), p)| (Site::Node(from), to, p));
        let clients = self
            .clients
            .iter()
            .map(|((r, to), p)| (Site::Clients(r.clone()), *to, p));
        peers.chain(clients)
    }

    /// Sets every link back to the topology's latency.
    pub fn reset_latency(&self) {
        for (from, to, p) in self.links() {
            let to_region = self.regions.get(&to).map(String::as_str).unwrap_or("");
            let (delay, jitter) = self.topology.one_way(self.region_of(&from), to_region);
            p.control().set_delay(delay, jitter);
        }
    }

    /// Sets the round trip between two regions (both ways), for every link that crosses
    /// them.
    pub fn set_region_rtt(&self, a: &str, b: &str, rtt: Duration, jitter: Duration) {
        for (from, to, p) in self.links() {
            let to_region = self.regions.get(&to).map(String::as_str).unwrap_or("");
            let from_region = self.region_of(&from);
            if (from_region == a && to_region == b) || (from_region == b && to_region == a) {
                p.control().set_delay(rtt / 2, jitter);
            }
        }
    }

    /// Blocks traffic from every site in `a` to every site in `b`, and from `b` to `a`
    /// unless `one_way`.
    pub fn partition(&self, a: &[Site], b: &[Site], one_way: bool) {
        let a: BTreeSet<&Site> = a.iter().collect();
        let b: BTreeSet<&Site> = b.iter().collect();
        for (from, to, p) in self.links() {
            let to = Site::Node(to);
            // Traffic a -> b: requests on links a dials into b, answers on links b dials into a.
            if a.contains(&from) && b.contains(&to) {
                p.control().set_cut(Dir::Forward, true);
            }
            if b.contains(&from) && a.contains(&to) {
                p.control().set_cut(Dir::Backward, true);
            }
            if !one_way {
                if b.contains(&from) && a.contains(&to) {
                    p.control().set_cut(Dir::Forward, true);
                }
                if a.contains(&from) && b.contains(&to) {
                    p.control().set_cut(Dir::Backward, true);
                }
            }
        }
    }

    /// Heals every cut.
    pub fn heal(&self) {
        for (_, _, p) in self.links() {
            p.control().heal();
        }
    }

    /// How many link directions are cut now.
    pub fn cut_count(&self) -> usize {
        self.links()
            .map(|(_, _, p)| {
                usize::from(p.control().is_cut(Dir::Forward))
                    + usize::from(p.control().is_cut(Dir::Backward))
            })
            .sum()
    }

    /// Every site: all nodes and every region's clients.
    pub fn all_sites(&self) -> Vec<Site> {
        self.advertised
            .keys()
            .map(|&id| Site::Node(id))
            .chain(
                self.topology
                    .regions
                    .iter()
                    .map(|r| Site::Clients(r.name.clone())),
            )
            .collect()
    }

    /// Every site not in `inside`: the other side of a partition.
    pub fn others(&self, inside: &[Site]) -> Vec<Site> {
        self.all_sites()
            .into_iter()
            .filter(|s| !inside.contains(s))
            .collect()
    }

    /// The nodes and clients of one region.
    pub fn region_sites(&self, region: &str) -> Vec<Site> {
        self.all_sites()
            .into_iter()
            .filter(|s| self.region_of(s) == region)
            .collect()
    }

    /// `--peer-routes` for node `from`: every other node through its link.
    pub fn peer_routes(&self, from: u64) -> String {
        self.peers
            .iter()
            .filter(|((f, _), _)| *f == from)
            .map(|((_, to), p)| format!("{to}={}", p.listen()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client address map for a region: each node's advertised address to the region's
    /// link to it.
    pub fn address_map(&self, region: &str) -> BTreeMap<String, String> {
        self.clients
            .iter()
            .filter(|((r, _), _)| r == region)
            .map(|((_, to), p)| (self.advertised[to].clone(), p.listen().to_string()))
            .collect()
    }
}
