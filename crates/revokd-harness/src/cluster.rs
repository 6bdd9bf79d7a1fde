//! A topology brought up as running nodes, on one of two backends: local `revokd` processes
//! (the default: no root, no containers), or Docker containers of the `revokd` image on a
//! network the harness creates. Either way every link goes through the [`Network`]'s proxies,
//! and this module owns the faults that act on nodes: kill, restart, stop, pause, resume, and
//! (with Docker) disconnecting a container from its network. Processes are the test kit's
//! [`Process`], tracked and stopped by PID; containers by the names this run gave them;
//! nothing else is touched.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use revokd_client::{Client, ClientConfig};
use revokd_proto::v1 as pb;
use revokd_proto::v1::cluster_client::ClusterClient;
use revokd_testkit::process::{revokd_log_filter, Process};
use revokd_testkit::{channel, eventually, free_port};
use serde::{Deserialize, Serialize};

use crate::net::{Network, Site};
use crate::topology::{NodeSpec, Topology};

/// Where nodes run.
#[derive(Clone, Debug)]
pub enum Backend {
    /// Local `revokd` processes on loopback.
    Process,
    /// Containers of `image` (built by `scripts/docker-image.sh`) on a Docker network
    /// created for the run.
    Docker {
        /// The node image, for example `revokd:local`.
        image: String,
    },
}

/// The gRPC port inside a container (the image's `REVOKD_LISTEN`).
const CONTAINER_PORT: u16 = 7000;
/// Where a container finds the run's certificates (a read-only mount of `dir/certs`).
const CONTAINER_CERTS: &str = "/certs";
/// The user the image runs revokd as (deploy/docker/Dockerfile).
const IMAGE_UID: u32 = 10001;
/// The nodes' log filter unless `REVOKD_LOG` says otherwise: openraft's own info lines
/// would drown the node's in a chaos run's logs.
const LOG_FILTER: &str = "info,openraft=warn";
/// How long a clean stop may take before the node is killed: a node drains in well under a
/// second, so this only bounds a hung one.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How one node runs.
enum Handle {
    /// A local process, supervised by the test kit.
    Process(Process),
    Container {
        name: String,
        ip: Ipv4Addr,
        created: bool,
        running: bool,
        connected: bool,
        paused: bool,
    },
}

/// One node.
pub struct NodeProcess {
    /// Where it sits.
    pub spec: NodeSpec,
    /// Its gRPC address (what it advertises).
    pub addr: String,
    /// Its Prometheus address.
    pub metrics: String,
    /// Its data directory (processes) or a note of where it is (containers: a volume).
    pub data_dir: PathBuf,
    /// Where its log goes (containers: written when the run ends).
    pub log: PathBuf,
    args: Vec<String>,
    handle: Handle,
}

impl NodeProcess {
    /// The PID of a running process node.
    pub fn pid(&self) -> Option<u32> {
        match &self.handle {
            Handle::Process(p) => p.pid(),
            Handle::Container { .. } => None,
        }
    }

    /// Running (possibly paused).
    pub fn running(&self) -> bool {
        match &self.handle {
            Handle::Process(p) => p.running(),
            Handle::Container { running, .. } => *running,
        }
    }

    /// Stopped by SIGSTOP (or `docker pause`).
    pub fn paused(&self) -> bool {
        match &self.handle {
            Handle::Process(p) => p.paused(),
            Handle::Container { paused, .. } => *paused,
        }
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
    backend: Backend,
    docker_network: Option<String>,
    dir: PathBuf,
    /// The cluster CA when the nodes run TLS.
    pub tls_ca: Option<Vec<u8>>,
}

/// Runs `docker` with `args`; fails with its stderr.
fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .context("running docker (is it installed?)")?;
    ensure!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Creates a network for the run with a /24 subnet of its own (Docker assigns fixed addresses
/// only on networks with a configured subnet); returns its gateway (where the host's proxies
/// listen) and the first three octets of the subnet (node `id` gets `.{10 + id}`).
fn docker_network(name: &str) -> Result<(Ipv4Addr, [u8; 3])> {
    let mut last = String::new();
    for attempt in 0..32u32 {
        let third = ((std::process::id() + attempt * 37) % 250 + 1) as u8;
        let prefix = [10, 231, third];
        let subnet = format!("10.231.{third}.0/24");
        let gateway = Ipv4Addr::new(10, 231, third, 1);
        match docker(&[
            "network",
            "create",
            "--label",
            "revokd-harness=1",
            "--subnet",
            &subnet,
            "--gateway",
            &gateway.to_string(),
            name,
        ]) {
            Ok(_) => return Ok((gateway, prefix)),
            // Another network holds this subnet: try the next one.
            Err(e) if e.to_string().contains("overlap") => last = e.to_string(),
            Err(e) => return Err(e),
        }
    }
    bail!("no free 10.231.x.0/24 subnet for network {name}: {last}")
}

/// Each node's `--tls-*` flags, by node id.
type TlsArgs = BTreeMap<u64, Vec<String>>;

/// Where the nodes of a run listen and what they advertise.
struct Placement {
    /// Where the link proxies listen: loopback, or the Docker network's gateway.
    bind: IpAddr,
    /// Each node's gRPC address, as the others dial it.
    advertised: BTreeMap<u64, String>,
    /// With Docker: the first three octets of the run's /24 (node `id` gets `.{10 + id}`).
    subnet: Option<[u8; 3]>,
    /// With Docker: the run's network.
    docker_net: Option<String>,
}

/// A `docker run` of a node's container, the first time it starts.
struct ContainerRun<'a> {
    name: &'a str,
    ip: Ipv4Addr,
    network: &'a str,
    image: &'a str,
    certs_mount: Option<&'a str>,
    args: &'a [String],
}

impl ContainerRun<'_> {
    /// Creates and starts the container.
    fn create(&self) -> Result<()> {
        let ip = self.ip.to_string();
        let env = format!("REVOKD_LOG={}", revokd_log_filter(LOG_FILTER));
        let mut args = vec![
            "run",
            "-d",
            "--name",
            self.name,
            "--label",
            "revokd-harness=1",
            "--network",
            self.network,
            "--ip",
            &ip,
            "-e",
            &env,
        ];
        if let Some(m) = self.certs_mount {
            args.extend(["-v", m]);
        }
        args.push(self.image);
        args.extend(self.args.iter().map(String::as_str));
        if let Err(e) = docker(&args) {
            // `docker run` can fail after creating the container: remove it.
            let _ = docker(&["rm", "-f", self.name]);
            return Err(e);
        }
        Ok(())
    }
}

impl Placement {
    /// Creates the run's Docker network (with Docker) and gives every node its address.
    fn new(specs: &[NodeSpec], backend: &Backend, run_name: &str) -> Result<Placement> {
        let (bind, subnet, docker_net) = match backend {
            Backend::Process => (IpAddr::from(Ipv4Addr::LOCALHOST), None, None),
            Backend::Docker { .. } => {
                let (gateway, prefix) = docker_network(run_name)?;
                (
                    IpAddr::from(gateway),
                    Some(prefix),
                    Some(run_name.to_owned()),
                )
            }
        };
        let mut advertised = BTreeMap::new();
        for s in specs {
            let addr = match &subnet {
                None => format!("127.0.0.1:{}", free_port()?),
                Some(p) => format!("{}.{}.{}.{}:{CONTAINER_PORT}", p[0], p[1], p[2], 10 + s.id),
            };
            advertised.insert(s.id, addr);
        }
        Ok(Placement {
            bind,
            advertised,
            subnet,
            docker_net,
        })
    }

    /// TLS: a development CA for the run under `dir/certs`, and a certificate of its own for
    /// every node. Containers read the certificates from a read-only mount of `dir/certs` at
    /// /certs, as the image's user (uid 10001); a node's certificate names the addresses it
    /// is dialed at (loopback, its container's own, and the link proxies on the gateway).
    /// Returns the CA's PEM and each node's `--tls-*` flags.
    fn issue_certs(&self, dir: &Path, specs: &[NodeSpec]) -> Result<(Vec<u8>, TlsArgs)> {
        let certs = dir.join("certs");
        let ca = revokd_testkit::devca::DevCa::new("revokd-harness CA")?;
        let ca_path = ca.write_ca(&certs)?;
        let containers = self.subnet.is_some();
        let at = |p: &Path| -> String {
            match (containers, p.file_name()) {
                (true, Some(name)) => format!("{CONTAINER_CERTS}/{}", name.to_string_lossy()),
                _ => p.display().to_string(),
            }
        };
        let mut tls_args = BTreeMap::new();
        for s in specs {
            let mut sans = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
            if containers {
                sans.push(self.bind.to_string());
                sans.extend(
                    self.advertised[&s.id]
                        .rsplit_once(':')
                        .map(|(h, _)| h.to_owned()),
                );
            }
            let sans: Vec<&str> = sans.iter().map(String::as_str).collect();
            let name = format!("node-{}", s.id);
            let (cert, key) = ca.issue(&name, &sans)?.write(&certs, &name)?;
            if containers {
                std::os::unix::fs::chown(&key, Some(IMAGE_UID), Some(IMAGE_UID)).with_context(|| {
                    format!(
                        "TLS on containers: giving {} to the image's user (uid {IMAGE_UID}) needs root",
                        key.display()
                    )
                })?;
            }
            tls_args.insert(
                s.id,
                vec![
                    "--tls-cert".to_owned(),
                    at(&cert),
                    "--tls-key".into(),
                    at(&key),
                    "--tls-ca".into(),
                    at(&ca_path),
                ],
            );
        }
        Ok((ca.ca_pem.clone().into_bytes(), tls_args))
    }

    /// Starts the link proxies; removes the Docker network again if they fail to.
    async fn start_network(&self, topology: &Topology, seed: u64) -> Result<Network> {
        match Network::start(topology, &self.advertised, self.bind, seed).await {
            Ok(net) => Ok(net),
            Err(e) => {
                if let Some(n) = &self.docker_net {
                    let _ = docker(&["network", "rm", n]);
                }
                Err(e)
            }
        }
    }
}

/// What every node of a run shares, to build one [`NodeProcess`] from its spec.
struct NodePlan<'a> {
    topology: &'a Topology,
    backend: &'a Backend,
    bin: &'a Path,
    dir: &'a Path,
    run_name: &'a str,
    tls: bool,
    /// `id=addr` of every voter, for `--initial-cluster`.
    initial: String,
}

impl NodePlan<'_> {
    /// The flags every backend gives node `s`: timing, its routes through the link proxies,
    /// founding or joining, and the topology's extra flags.
    fn cluster_args(&self, s: &NodeSpec, net: &Network) -> Vec<String> {
        let mut args = self.topology.node.timing_args(self.topology);
        let routes = net.peer_routes(s.id);
        if !routes.is_empty() {
            args.extend(["--peer-routes".into(), routes]);
        }
        if s.voter {
            args.extend(["--initial-cluster".into(), self.initial.clone()]);
        } else {
            args.push("--join".into());
        }
        args.extend(self.topology.node.extra_args.iter().cloned());
        args
    }

    /// The node `s`, not started: its addresses, flags and how it runs.
    fn node(
        &self,
        s: NodeSpec,
        addr: String,
        net: &Network,
        tls_args: Vec<String>,
    ) -> Result<NodeProcess> {
        let data_dir = self.dir.join(format!("node{}", s.id));
        let log = self.dir.join(format!("node{}.log", s.id));
        let mut args = vec!["--id".into(), s.id.to_string()];
        let (metrics, container) = match self.backend {
            Backend::Process => {
                let metrics = format!("127.0.0.1:{}", free_port()?);
                args.extend([
                    "--listen".into(),
                    addr.clone(),
                    "--data-dir".into(),
                    data_dir.display().to_string(),
                    "--metrics-listen".into(),
                    metrics.clone(),
                ]);
                (metrics, None)
            }
            Backend::Docker { .. } => {
                args.extend(["--advertise".into(), addr.clone()]);
                if !self.tls {
                    // The image listens on 0.0.0.0 inside the container, on a network
                    // of the run's own: say so, or the node refuses to start in plaintext.
                    args.push("--insecure".into());
                }
                let ip: Ipv4Addr = addr
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .parse()
                    .expect("formatted by Placement::new");
                (format!("{ip}:9100"), Some(ip))
            }
        };
        args.extend(self.cluster_args(&s, net));
        args.extend(tls_args);
        let handle = match container {
            None => Handle::Process(
                Process::new(format!("node {}", s.id), self.bin, args.clone())
                    .log_to(&log)
                    .env("REVOKD_LOG", revokd_log_filter(LOG_FILTER)),
            ),
            Some(ip) => Handle::Container {
                name: format!("{}-node{}", self.run_name, s.id),
                ip,
                created: false,
                running: false,
                connected: true,
                paused: false,
            },
        };
        Ok(NodeProcess {
            log,
            spec: s,
            addr,
            metrics,
            data_dir,
            args,
            handle,
        })
    }
}

impl Deployment {
    /// Starts every node of `topology` as local processes under `dir` (created if missing),
    /// behind link proxies seeded by `seed`; waits for a leader and adds the learners.
    pub async fn up(topology: &Topology, dir: &Path, seed: u64) -> Result<Deployment> {
        Self::up_on(topology, dir, seed, Backend::Process, false).await
    }

    /// Like [`Deployment::up`], on the given backend, with TLS (a development CA made for
    /// the run, under `dir/certs`) when `tls`.
    pub async fn up_on(
        topology: &Topology,
        dir: &Path,
        seed: u64,
        backend: Backend,
        tls: bool,
    ) -> Result<Deployment> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let bin = match backend {
            Backend::Process => revokd_testkit::revokd_bin()?,
            Backend::Docker { .. } => PathBuf::from("docker"),
        };
        let specs = topology.nodes();
        let run_name = format!("revokd-harness-{}-{seed}", std::process::id());
        let place = Placement::new(&specs, &backend, &run_name)?;
        let (tls_ca, mut tls_args) = if tls {
            let (ca, args) = place.issue_certs(dir, &specs)?;
            (Some(ca), args)
        } else {
            (None, BTreeMap::new())
        };
        let net = place.start_network(topology, seed).await?;
        let plan = NodePlan {
            topology,
            backend: &backend,
            bin: &bin,
            dir,
            run_name: &run_name,
            tls,
            initial: specs
                .iter()
                .filter(|s| s.voter)
                .map(|s| format!("{}={}", s.id, place.advertised[&s.id]))
                .collect::<Vec<_>>()
                .join(","),
        };
        let mut nodes = BTreeMap::new();
        for s in specs {
            let (id, addr) = (s.id, place.advertised[&s.id].clone());
            let tls_args = tls_args.remove(&id).unwrap_or_default();
            nodes.insert(id, plan.node(s, addr, &net, tls_args)?);
        }
        let mut d = Deployment {
            topology: topology.clone(),
            net,
            nodes,
            backend,
            docker_network: place.docker_net,
            dir: dir.to_owned(),
            tls_ca,
        };
        let ids: Vec<u64> = d.nodes.keys().copied().collect();
        for id in ids {
            d.start(id)?;
        }
        d.wait_leader(Duration::from_secs(60)).await?;
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
        config.tls = self.tls_ca.clone().map(revokd_client::ClientTls::new);
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
        config.tls = self.tls_ca.clone().map(revokd_client::ClientTls::new);
        config
    }

    /// The directory holding data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The backend the nodes run on.
    pub fn backend(&self) -> &Backend {
        &self.backend
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
        let image = match &self.backend {
            Backend::Docker { image } => image.clone(),
            Backend::Process => String::new(),
        };
        let network = self.docker_network.clone().unwrap_or_default();
        // `docker run -v` takes an absolute host path (a relative one names a volume).
        let certs_mount = match &self.tls_ca {
            Some(_) => {
                let certs = std::fs::canonicalize(self.dir.join("certs"))?;
                Some(format!("{}:{CONTAINER_CERTS}:ro", certs.display()))
            }
            None => None,
        };
        let node = self.node_mut(id)?;
        if node.running() {
            bail!("node {id} is already running");
        }
        match &mut node.handle {
            Handle::Process(p) => p.start(),
            Handle::Container {
                name,
                ip,
                created,
                running,
                paused,
                ..
            } => {
                if *created {
                    docker(&["start", name])?;
                } else {
                    let run = ContainerRun {
                        name,
                        ip: *ip,
                        network: &network,
                        image: &image,
                        certs_mount: certs_mount.as_deref(),
                        args: &node.args,
                    };
                    run.create()?;
                    *created = true;
                }
                *running = true;
                *paused = false;
                Ok(())
            }
        }
    }

    /// `kill -9` (`docker kill`): no shutdown, no flush beyond what the node already did.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        if self.node(id)?.paused() {
            self.resume(id)?;
        }
        match &mut self.node_mut(id)?.handle {
            Handle::Process(p) => p.kill(),
            Handle::Container { name, running, .. } => {
                if *running {
                    docker(&["kill", name])?;
                    *running = false;
                }
                Ok(())
            }
        }
    }

    /// SIGTERM and wait (up to 10 s, then SIGKILL): a clean stop, as in a rolling restart.
    pub fn stop(&mut self, id: u64) -> Result<()> {
        if self.node(id)?.paused() {
            self.resume(id)?;
        }
        let node = self.node_mut(id)?;
        if !node.running() {
            return Ok(());
        }
        match &mut node.handle {
            Handle::Process(p) => {
                // A node that ignores SIGTERM for 10 s is killed: the fault was "stop".
                p.stop(STOP_GRACE)?;
            }
            Handle::Container { name, running, .. } => {
                docker(&["stop", "-t", &STOP_GRACE.as_secs().to_string(), name])?;
                *running = false;
            }
        }
        Ok(())
    }

    /// SIGSTOP (`docker pause`).
    pub fn pause(&mut self, id: u64) -> Result<()> {
        match &mut self.node_mut(id)?.handle {
            Handle::Process(p) => p.pause(),
            Handle::Container { name, paused, .. } => {
                docker(&["pause", name])?;
                *paused = true;
                Ok(())
            }
        }
    }

    /// SIGCONT (`docker unpause`).
    pub fn resume(&mut self, id: u64) -> Result<()> {
        match &mut self.node_mut(id)?.handle {
            Handle::Process(p) => p.resume(),
            Handle::Container { name, paused, .. } => {
                if *paused {
                    docker(&["unpause", name])?;
                    *paused = false;
                }
                Ok(())
            }
        }
    }

    /// Cuts node `id` off from every other node and every client, both ways: with Docker,
    /// `docker network disconnect` (the kernel drops its traffic); with processes, its links.
    pub fn isolate(&mut self, id: u64) -> Result<()> {
        let network = self.docker_network.clone();
        let node = self.node_mut(id)?;
        if let (
            Handle::Container {
                name, connected, ..
            },
            Some(network),
        ) = (&mut node.handle, network)
        {
            docker(&["network", "disconnect", "-f", &network, name])?;
            *connected = false;
            return Ok(());
        }
        let me = [Site::Node(id)];
        self.net.partition(&me, &self.net.others(&me), false);
        Ok(())
    }

    /// Heals every partition: links, and containers disconnected by [`Deployment::isolate`].
    pub fn heal(&mut self) -> Result<()> {
        self.net.heal();
        let network = self.docker_network.clone().unwrap_or_default();
        for node in self.nodes.values_mut() {
            if let Handle::Container {
                name,
                ip,
                connected,
                ..
            } = &mut node.handle
            {
                if !*connected {
                    docker(&[
                        "network",
                        "connect",
                        "--ip",
                        &ip.to_string(),
                        &network,
                        name,
                    ])?;
                    *connected = true;
                }
            }
        }
        Ok(())
    }

    /// Resumes paused nodes and starts stopped ones.
    pub fn revive_all(&mut self) -> Result<()> {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            if self.node(id)?.paused() {
                self.resume(id)?;
            } else if !self.node(id)?.running() {
                self.start(id)?;
            }
        }
        Ok(())
    }

    /// A node's status, asked directly (not through any link), within `timeout`.
    pub async fn status(&self, id: u64, timeout: Duration) -> Result<pb::StatusResponse> {
        status_of(&self.node(id)?.addr, timeout, self.tls_ca.as_deref()).await
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
        majority_leader(
            &self.voters(),
            Duration::from_millis(300),
            self.tls_ca.as_deref(),
        )
        .await
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

    /// Stops every node: processes by SIGKILL; containers are removed (with their volumes)
    /// after their logs are saved, and the run's network with them.
    pub fn kill_all(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            let _ = self.kill(id);
        }
        for node in self.nodes.values_mut() {
            if let Handle::Container { name, created, .. } = &mut node.handle {
                if *created {
                    if let Ok(out) = Command::new("docker").args(["logs", name]).output() {
                        let mut log = out.stdout;
                        log.extend(out.stderr);
                        let _ = std::fs::write(&node.log, log);
                    }
                    let _ = docker(&["rm", "-f", "-v", name]);
                    *created = false;
                }
            }
        }
        if let Some(network) = self.docker_network.take() {
            let _ = docker(&["network", "rm", &network]);
        }
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// A channel to a node at `addr`: TLS trusting `tls_ca` when the deployment runs TLS.
pub fn node_channel(addr: &str, tls_ca: Option<&[u8]>) -> Result<tonic::transport::Channel> {
    match tls_ca {
        Some(ca) => revokd_testkit::tls_channel(addr, ca),
        None => channel(addr),
    }
}

/// A node's status, asked directly at `addr` within `timeout`.
pub async fn status_of(
    addr: &str,
    timeout: Duration,
    tls_ca: Option<&[u8]>,
) -> Result<pb::StatusResponse> {
    let mut req = tonic::Request::new(pb::StatusRequest {});
    req.set_timeout(timeout);
    let mut client = ClusterClient::new(node_channel(addr, tls_ca)?);
    Ok(tokio::time::timeout(timeout, client.status(req))
        .await
        .map_err(|_| anyhow!("{addr}: no status within {timeout:?}"))??
        .into_inner())
}

/// The leader that a majority of `voters` name and that itself answers as leader, asking
/// each directly (a paused or dead node simply does not answer within `timeout`). Followers
/// keep naming a dead leader until they elect another, so their word alone is not enough.
pub async fn majority_leader(
    voters: &[(u64, String)],
    timeout: Duration,
    tls_ca: Option<&[u8]>,
) -> Option<u64> {
    let answers = futures::future::join_all(
        voters
            .iter()
            .map(|(_, addr)| status_of(addr, timeout, tls_ca)),
    )
    .await;
    let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
    let mut leading = Vec::new();
    for s in answers.into_iter().flatten() {
        if s.leader_id != 0 {
            *votes.entry(s.leader_id).or_default() += 1;
        }
        if s.role == pb::Role::Leader as i32 {
            leading.push(s.id);
        }
    }
    votes
        .into_iter()
        .find(|(id, n)| *n > voters.len() / 2 && leading.contains(id))
        .map(|(id, _)| id)
}
