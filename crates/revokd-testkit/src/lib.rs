//! revokd-testkit: start real `revokd` processes on loopback, each with its own data
//! directory, and kill, pause, restart or add them while tests and benchmarks talk to them
//! over gRPC.
//!
//! Every process is a [`process::Process`], tracked by PID and stopped when the
//! [`ProcessCluster`] is dropped; nothing is ever stopped by name. [`devca`] makes the
//! certificates of a TLS cluster, [`ports`] the loopback ports its processes listen on, [`floods`] the hostile callers of the security tests and
//! benchmark, [`jwt`] the tokens of tests and benchmarks.

pub mod devca;
pub mod floods;
pub mod jwt;
pub mod ports;
pub mod process;

pub use ports::free_port;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use revokd_proto::v1::cluster_client::ClusterClient;
use revokd_proto::v1::revocation_client::RevocationClient;
use revokd_proto::v1::{Role, StatusRequest, StatusResponse};
use tonic::transport::{Channel, Endpoint};

use crate::process::{revokd_log_filter, Process};

/// How long [`ProcessCluster::stop`] gives a node to exit after SIGTERM: a node drains in
/// well under a second, so a node still up after this is hung and the test should say so.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Where the `revokd` binary is: `$REVOKD_BIN`, or next to the running executable's
/// directory (`target/<profile>/revokd` for tests in `target/<profile>/deps/`).
pub fn revokd_bin() -> Result<PathBuf> {
    workspace_bin("revokd", "REVOKD_BIN")
}

/// Where the `revokctl` binary is: `$REVOKCTL_BIN`, or next to the running executable's
/// directory, like [`revokd_bin`].
pub fn revokctl_bin() -> Result<PathBuf> {
    workspace_bin("revokctl", "REVOKCTL_BIN")
}

/// Where the `revokd-harness` binary is: `$HARNESS_BIN`, or next to the running
/// executable's directory, like [`revokd_bin`].
pub fn harness_bin() -> Result<PathBuf> {
    workspace_bin("revokd-harness", "HARNESS_BIN")
}

/// Where the `revokd-agent` binary is: `$REVOKD_AGENT_BIN`, or next to the running
/// executable's directory, like [`revokd_bin`].
pub fn agent_bin() -> Result<PathBuf> {
    workspace_bin("revokd-agent", "REVOKD_AGENT_BIN")
}

fn workspace_bin(name: &str, env: &str) -> Result<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "{name} binary not found near {}; build it (cargo build --release -p {name}) or set {env}",
        exe.display()
    )
}

/// Polls `f` every 50 ms until it returns `Ok`, or fails with its last error after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e.context(format!("condition not met within {timeout:?}")))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A lazily connecting channel to `addr`.
pub fn channel(addr: &str) -> Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// One node process and its files.
pub struct NodeProc {
    /// Node id.
    pub id: u64,
    /// gRPC address.
    pub addr: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Where stderr goes.
    pub log: PathBuf,
    process: Process,
}

impl NodeProc {
    /// The PID while running.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }
}

/// Options for the nodes of a cluster.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// Extra flags for every node (for example `--snapshot-logs 100`).
    pub extra_args: Vec<String>,
    /// The cluster CA's PEM certificate when the nodes serve TLS (give them `--tls-*` flags
    /// in `extra_args`): the kit's own channels then use TLS and trust it.
    pub tls_ca: Option<Vec<u8>>,
}

impl ClusterOptions {
    /// Options with these extra flags.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(args: I) -> Self {
        ClusterOptions {
            extra_args: args.into_iter().map(Into::into).collect(),
            tls_ca: None,
        }
    }
}

/// A lazily connecting TLS channel to `addr`, trusting the CA in `ca_pem`.
pub fn tls_channel(addr: &str, ca_pem: &[u8]) -> Result<Channel> {
    tls_channel_as(addr, ca_pem, None)
}

/// Like [`tls_channel`], presenting a client certificate (`(cert_pem, key_pem)`) if given.
pub fn tls_channel_as(
    addr: &str,
    ca_pem: &[u8],
    identity: Option<(&[u8], &[u8])>,
) -> Result<Channel> {
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem));
    if let Some((cert, key)) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
    }
    Ok(Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// A cluster of real `revokd` processes on loopback.
pub struct ProcessCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    opts: ClusterOptions,
    /// The nodes by id.
    pub nodes: BTreeMap<u64, NodeProc>,
}

impl ProcessCluster {
    /// Starts `n` founding nodes (ids 1..=n) and waits until they agree on a leader.
    pub async fn start(n: u64) -> Result<Self> {
        Self::start_with(n, ClusterOptions::default()).await
    }

    /// Like [`ProcessCluster::start`] with extra node flags.
    pub async fn start_with(n: u64, opts: ClusterOptions) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("revokd-test-").tempdir()?;
        let mut c = ProcessCluster {
            dir,
            bin: revokd_bin()?,
            opts,
            nodes: BTreeMap::new(),
        };
        let addrs: BTreeMap<u64, String> = (1..=n)
            .map(|id| Ok((id, format!("127.0.0.1:{}", free_port()?))))
            .collect::<Result<_>>()?;
        let initial = addrs
            .iter()
            .map(|(id, a)| format!("{id}={a}"))
            .collect::<Vec<_>>()
            .join(",");
        for (id, addr) in &addrs {
            c.add_node(
                *id,
                addr.clone(),
                vec!["--initial-cluster".into(), initial.clone()],
            )?;
        }
        c.wait_leader(Duration::from_secs(20)).await?;
        Ok(c)
    }

    /// The directory holding every node's data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn add_node(&mut self, id: u64, addr: String, args: Vec<String>) -> Result<()> {
        let extra = self.opts.extra_args.clone();
        self.add_node_with(id, addr, args, extra)
    }

    fn add_node_with(
        &mut self,
        id: u64,
        addr: String,
        mut args: Vec<String>,
        extra: Vec<String>,
    ) -> Result<()> {
        let data_dir = self.dir.path().join(format!("node{id}"));
        let log = self.dir.path().join(format!("node{id}.log"));
        args.extend([
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            addr.clone(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ]);
        args.extend(extra);
        let mut process = Process::new(format!("node {id}"), &self.bin, args)
            .log_to(&log)
            .env("REVOKD_LOG", revokd_log_filter("info"));
        process.start()?;
        self.nodes.insert(
            id,
            NodeProc {
                id,
                addr,
                data_dir,
                log,
                process,
            },
        );
        Ok(())
    }

    /// Starts a new, empty node that waits to be added with `AddLearner`.
    pub fn start_joiner(&mut self, id: u64) -> Result<String> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        self.add_node(id, addr.clone(), vec!["--join".into()])?;
        Ok(addr)
    }

    /// Starts a new, empty node that waits to be added with `AddLearner`, with `args` in place
    /// of the cluster's extra flags (for example another certificate).
    pub fn start_joiner_with(&mut self, id: u64, args: Vec<String>) -> Result<String> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        self.add_node_with(id, addr.clone(), vec!["--join".into()], args)?;
        Ok(addr)
    }

    /// A channel to a node: TLS when the cluster serves it.
    pub fn channel(&self, id: u64) -> Result<Channel> {
        let addr = self.addr(id)?;
        match &self.opts.tls_ca {
            Some(ca) => tls_channel(&addr, ca),
            None => channel(&addr),
        }
    }

    fn node(&self, id: u64) -> Result<&NodeProc> {
        self.nodes.get(&id).ok_or_else(|| anyhow!("no node {id}"))
    }

    fn node_mut(&mut self, id: u64) -> Result<&mut NodeProc> {
        self.nodes
            .get_mut(&id)
            .ok_or_else(|| anyhow!("no node {id}"))
    }

    /// A node's gRPC address.
    pub fn addr(&self, id: u64) -> Result<String> {
        Ok(self.node(id)?.addr.clone())
    }

    /// Every node's address, in id order.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.addr.clone()).collect()
    }

    /// A `Revocation` client for a node.
    pub fn revocation(&self, id: u64) -> Result<RevocationClient<Channel>> {
        Ok(RevocationClient::new(self.channel(id)?)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20))
    }

    /// A `Cluster` client for a node.
    pub fn cluster(&self, id: u64) -> Result<ClusterClient<Channel>> {
        Ok(ClusterClient::new(self.channel(id)?))
    }

    /// A node's status.
    pub async fn status(&self, id: u64) -> Result<StatusResponse> {
        let mut req = tonic::Request::new(StatusRequest {});
        req.set_timeout(Duration::from_secs(2));
        Ok(self.cluster(id)?.status(req).await?.into_inner())
    }

    /// Ids of the nodes whose process is running and not paused.
    pub fn live(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.process.running() && !n.process.paused())
            .map(|n| n.id)
            .collect()
    }

    /// Waits until every live voter reports the same leader, which is itself live, and
    /// returns its id.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<u64> {
        eventually(timeout, || async {
            let mut leader = None;
            for id in self.live() {
                let s = self.status(id).await?;
                if s.role == Role::Learner as i32 {
                    continue;
                }
                if s.leader_id == 0 {
                    bail!("node {id} knows no leader");
                }
                match leader {
                    None => leader = Some(s.leader_id),
                    Some(l) if l != s.leader_id => bail!("nodes disagree on the leader"),
                    Some(_) => {}
                }
            }
            let l = leader.ok_or_else(|| anyhow!("no live voters"))?;
            if !self.live().contains(&l) {
                bail!("leader {l} is not live");
            }
            Ok(l)
        })
        .await
    }

    /// `kill -9` a node.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        self.node_mut(id)?.process.kill()
    }

    /// SIGTERM a node and wait for it to exit (it fails, after a SIGKILL, if the node is
    /// still up after 30 s: a hung shutdown is a bug the test should report, not wait out).
    pub fn stop(&mut self, id: u64) -> Result<()> {
        let process = &mut self.node_mut(id)?.process;
        if !process.running() {
            bail!("node {id} is not running");
        }
        if !process.stop(STOP_GRACE)? {
            bail!("node {id} did not exit within {STOP_GRACE:?} of SIGTERM; killed it");
        }
        Ok(())
    }

    /// Restarts a stopped or killed node with the same id, address and data.
    pub fn restart(&mut self, id: u64) -> Result<()> {
        self.node_mut(id)?.process.start()
    }

    /// Waits up to `timeout` for a node's process to exit by itself and returns its status;
    /// `None` if it is still running.
    pub async fn wait_exit(
        &mut self,
        id: u64,
        timeout: Duration,
    ) -> Result<Option<std::process::ExitStatus>> {
        self.node_mut(id)?.process.wait_exit(timeout).await
    }

    /// SIGSTOP a node.
    pub fn pause(&mut self, id: u64) -> Result<()> {
        self.node_mut(id)?.process.pause()
    }

    /// SIGCONT a paused node.
    pub fn resume(&mut self, id: u64) -> Result<()> {
        let process = &mut self.node_mut(id)?.process;
        if !process.running() {
            bail!("node {id} is not running");
        }
        process.resume()
    }

    /// The last lines of a node's log, for failure messages.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        self.node(id)
            .map(|n| n.process.log_tail(lines))
            .unwrap_or_default()
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        // Before the data directory goes (the first field to drop).
        for node in self.nodes.values_mut() {
            let _ = node.process.kill();
        }
        if std::env::var_os("REVOKD_KEEP_TEST_DIRS").is_some() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
            eprintln!("keeping {}", dir.keep().display());
        }
    }
}
