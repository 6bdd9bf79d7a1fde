//! A topology brought up as local `revokd` processes (the process backend): each node with
//! its own data directory, port and log, every link through the [`Network`]'s proxies, and
//! the faults that act on processes (kill, restart, pause, resume). Every process is tracked
//! by PID and stopped by PID.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use revokd_client::{Client, ClientConfig};
use revokd_proto::v1 as pb;
use revokd_proto::v1::cluster_client::ClusterClient;
use revokd_testkit::{channel, eventually, free_port};
use serde::{Deserialize, Serialize};

use crate::net::Network;
use crate::topology::{NodeSpec, Topology};

/// One node process.
pub struct NodeProcess {
    /// Where it sits.
    pub spec: NodeSpec,
    /// Its gRPC address (what it advertises).
    pub addr: String,
    /// Its Prometheus address.
    pub metrics: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Where its stderr goes.
    pub log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    paused: bool,
}

impl NodeProcess {
    /// The PID while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Running (possibly paused).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Stopped by SIGSTOP.
    pub fn paused(&self) -> bool {
        self.paused
    }

    fn signal(&self, sig: Signal) -> Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow!("node {} is not running", self.spec.id))?;
        kill(Pid::from_raw(pid as i32), sig)
            .with_context(|| format!("{sig} to node {}", self.spec.id))
    }
}

/// What `up` records so that `down` can stop exactly what it started.
#[derive(Debug, Serialize, Deserialize)]
pub struct UpState {
    /// The harness process holding the proxies.
    pub harness_pid: u32,
    /// Node id to PID.
    pub nodes: BTreeMap<u64, u32>,
}

/// A running deployment.
pub struct Deployment {
    /// The topology it runs.
    pub topology: Topology,
    /// Its links.
    pub net: Network,
    /// Its nodes, by id.
    pub nodes: BTreeMap<u64, NodeProcess>,
    bin: PathBuf,
    dir: PathBuf,
}

impl Deployment {
    /// Starts every node of `topology` under `dir` (created if missing), behind link
    /// proxies seeded by `seed`; waits for a leader and adds the learners.
    pub async fn up(topology: &Topology, dir: &Path, seed: u64) -> Result<Deployment> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let bin = revokd_testkit::revokd_bin()?;
        let specs = topology.nodes();
        let mut advertised = BTreeMap::new();
        for s in &specs {
            advertised.insert(s.id, format!("127.0.0.1:{}", free_port()?));
        }
        let net = Network::start(topology, &advertised, seed).await?;
        let initial = specs
            .iter()
            .filter(|s| s.voter)
            .map(|s| format!("{}={}", s.id, advertised[&s.id]))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = BTreeMap::new();
        for s in specs {
            let addr = advertised[&s.id].clone();
            let metrics = format!("127.0.0.1:{}", free_port()?);
            let data_dir = dir.join(format!("node{}", s.id));
            let mut args = vec![
                "--id".into(),
                s.id.to_string(),
                "--listen".into(),
                addr.clone(),
                "--data-dir".into(),
                data_dir.display().to_string(),
                "--metrics-listen".into(),
                metrics.clone(),
                "--heartbeat-ms".into(),
                topology.node.heartbeat_ms.to_string(),
                "--election-timeout-ms".into(),
                topology.node.election_timeout_ms.to_string(),
            ];
            let routes = net.peer_routes(s.id);
            if !routes.is_empty() {
                args.extend(["--peer-routes".into(), routes]);
            }
            if s.voter {
                args.extend(["--initial-cluster".into(), initial.clone()]);
            } else {
                args.push("--join".into());
            }
            args.extend(topology.node.extra_args.iter().cloned());
            nodes.insert(
                s.id,
                NodeProcess {
                    log: dir.join(format!("node{}.log", s.id)),
                    spec: s,
                    addr,
                    metrics,
                    data_dir,
                    args,
                    child: None,
                    paused: false,
                },
            );
        }
        let mut d = Deployment {
            topology: topology.clone(),
            net,
            nodes,
            bin,
            dir: dir.to_owned(),
        };
        let ids: Vec<u64> = d.nodes.keys().copied().collect();
        for id in ids {
            d.start(id)?;
        }
        d.wait_leader(Duration::from_secs(30)).await?;
        d.add_learners().await?;
        Ok(d)
    }

    async fn add_learners(&self) -> Result<()> {
        let learners: Vec<&NodeProcess> = self.nodes.values().filter(|n| !n.spec.voter).collect();
        if learners.is_empty() {
            return Ok(());
        }
        let admin = self.admin_client().await?;
        for n in learners {
            // Right after founding, the first membership may not be committed yet: the node
            // refuses a change until it is, so try again for a while.
            eventually(Duration::from_secs(30), || async {
                admin
                    .add_learner(n.spec.id, &n.addr, true)
                    .await
                    .with_context(|| format!("adding learner {}", n.spec.id))
            })
            .await?;
        }
        Ok(())
    }

    /// A client that talks to the nodes directly (not through any link): the harness's own
    /// view, used for setup and the final checks.
    pub async fn admin_client(&self) -> Result<Client> {
        let mut config = ClientConfig::new(self.nodes.values().map(|n| n.addr.clone()));
        config.timeout = Duration::from_secs(20);
        config.heartbeat_interval = Duration::from_millis(250);
        config.actor = "revokd-harness".into();
        Ok(Client::connect(config).await?)
    }

    /// A client configuration for a client placed in `region`: it dials every node through
    /// the region's links and starts from the region's own nodes (all nodes when the region
    /// has none).
    pub fn client_config(&self, region: &str) -> ClientConfig {
        let local: Vec<String> = self
            .nodes
            .values()
            .filter(|n| n.spec.region == region)
            .map(|n| n.addr.clone())
            .collect();
        let endpoints = if local.is_empty() {
            self.nodes.values().map(|n| n.addr.clone()).collect()
        } else {
            local
        };
        let mut config = ClientConfig::new(endpoints);
        config.address_map = self.net.address_map(region);
        config
    }

    /// The directory holding data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn node(&self, id: u64) -> Result<&NodeProcess> {
        self.nodes.get(&id).ok_or_else(|| anyhow!("no node {id}"))
    }

    fn node_mut(&mut self, id: u64) -> Result<&mut NodeProcess> {
        self.nodes
            .get_mut(&id)
            .ok_or_else(|| anyhow!("no node {id}"))
    }

    /// Starts (or restarts, on its existing data) a node that is not running.
    pub fn start(&mut self, id: u64) -> Result<()> {
        let bin = self.bin.clone();
        let node = self.node_mut(id)?;
        if node.running() {
            bail!("node {id} is already running");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let child = Command::new(&bin)
            .args(&node.args)
            .env(
                "REVOKD_LOG",
                std::env::var("REVOKD_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// `kill -9`: no shutdown, no flush beyond what the node already did.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        let node = self.node_mut(id)?;
        if node.paused {
            node.signal(Signal::SIGCONT)?;
        }
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
        Ok(())
    }

    /// SIGTERM and wait (up to 10 s, then SIGKILL): a clean stop, as in a rolling restart.
    pub fn stop(&mut self, id: u64) -> Result<()> {
        let node = self.node_mut(id)?;
        if node.paused {
            node.signal(Signal::SIGCONT)?;
            node.paused = false;
        }
        if node.child.is_none() {
            return Ok(());
        }
        node.signal(Signal::SIGTERM)?;
        let mut child = node.child.take().expect("checked above");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP.
    pub fn pause(&mut self, id: u64) -> Result<()> {
        let node = self.node_mut(id)?;
        node.signal(Signal::SIGSTOP)?;
        node.paused = true;
        Ok(())
    }

    /// SIGCONT.
    pub fn resume(&mut self, id: u64) -> Result<()> {
        let node = self.node_mut(id)?;
        if node.paused {
            node.signal(Signal::SIGCONT)?;
            node.paused = false;
        }
        Ok(())
    }

    /// Resumes paused nodes and starts stopped ones.
    pub fn revive_all(&mut self) -> Result<()> {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            if self.node(id)?.paused {
                self.resume(id)?;
            } else if !self.node(id)?.running() {
                self.start(id)?;
            }
        }
        Ok(())
    }

    /// A node's status, asked directly (not through any link), within `timeout`.
    pub async fn status(&self, id: u64, timeout: Duration) -> Result<pb::StatusResponse> {
        status_of(&self.node(id)?.addr, timeout).await
    }

    /// Every voter's id and address.
    pub fn voters(&self) -> Vec<(u64, String)> {
        self.nodes
            .values()
            .filter(|n| n.spec.voter)
            .map(|n| (n.spec.id, n.addr.clone()))
            .collect()
    }

    /// The leader a majority of voters agree on, if any (asked directly, 300 ms per node).
    pub async fn leader(&self) -> Option<u64> {
        majority_leader(&self.voters(), Duration::from_millis(300)).await
    }

    /// Waits until a majority of voters agree on a leader.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<u64> {
        eventually(timeout, || async {
            self.leader()
                .await
                .ok_or_else(|| anyhow!("no leader a majority agrees on"))
        })
        .await
    }

    /// Writes what `down` needs to stop this deployment.
    pub fn write_state(&self, path: &Path) -> Result<()> {
        let state = UpState {
            harness_pid: std::process::id(),
            nodes: self
                .nodes
                .values()
                .filter_map(|n| n.pid().map(|p| (n.spec.id, p)))
                .collect(),
        };
        std::fs::write(path, serde_json::to_vec_pretty(&state)?)?;
        Ok(())
    }

    /// Stops every node (SIGKILL, by PID).
    pub fn kill_all(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            let _ = self.kill(id);
        }
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// A node's status, asked directly at `addr` within `timeout`.
pub async fn status_of(addr: &str, timeout: Duration) -> Result<pb::StatusResponse> {
    let mut req = tonic::Request::new(pb::StatusRequest {});
    req.set_timeout(timeout);
    let mut client = ClusterClient::new(channel(addr)?);
    Ok(tokio::time::timeout(timeout, client.status(req))
        .await
        .map_err(|_| anyhow!("{addr}: no status within {timeout:?}"))??
        .into_inner())
}

/// The leader that a majority of `voters` name, asking each directly (a paused or dead node
/// simply does not answer within `timeout`).
pub async fn majority_leader(voters: &[(u64, String)], timeout: Duration) -> Option<u64> {
    let answers =
        futures::future::join_all(voters.iter().map(|(_, addr)| status_of(addr, timeout))).await;
    let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
    for s in answers.into_iter().flatten() {
        if s.leader_id != 0 {
            *votes.entry(s.leader_id).or_default() += 1;
        }
    }
    votes
        .into_iter()
        .find(|(_, n)| *n > voters.len() / 2)
        .map(|(id, _)| id)
}
