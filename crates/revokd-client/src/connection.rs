//! Connections to the cluster: the node set (learned from `Status`), node health (from
//! heartbeats), the leader for writes, deadlines and retries with backoff, admin calls, reads
//! spread over healthy nodes, and revocation receipts.
//!
//! One background task per [`Client`] probes every node on an interval with `Heartbeat`. A node
//! whose last probe failed is not sent anything until a probe succeeds again.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use revokd_proto::v1 as pb;
use revokd_proto::v1::cluster_client::ClusterClient;
use revokd_proto::v1::revocation_client::RevocationClient;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::check::RuleKind;
use crate::error::{from_status, Error};
use crate::metrics::ClientMetrics;

use revokd_core::types::MAX_BATCH;
use revokd_proto::convert::rule_kind_pb;
use revokd_proto::wire::{is_node_error, ACTOR_HEADER, LEADER_ADDR_HEADER};

/// How a [`Client`] connects. Every field documents its default. `Debug` leaves out the
/// bearer token and the TLS private key.
#[derive(Clone)]
pub struct ClientConfig {
    /// Addresses of one or more nodes: `host:port`, `http://host:port`, or
    /// `https://host:port` (which needs `tls`: a TLS endpoint is never dialed in plaintext).
    /// The other members are learned from `Status`. Required.
    pub endpoints: Vec<String>,
    /// Deadline of each call, retries included. Default 5 s.
    pub timeout: Duration,
    /// Timeout of establishing a connection to one node. Default 1 s.
    pub connect_timeout: Duration,
    /// How often every node is probed with `Heartbeat`; a node whose last probe failed gets no
    /// requests. Default 1 s; must not be 0.
    pub heartbeat_interval: Duration,
    /// First delay before retrying an UNAVAILABLE answer; doubles (with jitter) on each retry
    /// up to `max_backoff`. Default 25 ms.
    pub initial_backoff: Duration,
    /// Longest delay between retries. Default 500 ms.
    pub max_backoff: Duration,
    /// Longest single attempt before trying again (on the same or another node); an attempt
    /// also ends early when its node's heartbeat fails. Default 2 s.
    pub attempt_timeout: Duration,
    /// Who the writes of this client are recorded as (`revoked_by`). Default `revokd-client`.
    pub actor: String,
    /// Where to dial a node instead of the address it advertises (`host:port` to
    /// `host:port`): for NAT, a local proxy, or the chaos harness's per-region links. Nodes
    /// keep their advertised address as their identity. Default empty (dial what is
    /// advertised).
    pub address_map: BTreeMap<String, String>,
    /// A bearer JWT sent with every call (`authorization: Bearer ...`), for clusters started
    /// with `--auth-key`: writes need the admin scope, reads the read scope if one is set.
    /// Default none.
    pub bearer_token: Option<String>,
    /// TLS for clusters started with `--tls-cert`: the cluster CA to trust, and optionally a
    /// client certificate. Default none (plaintext).
    pub tls: Option<ClientTls>,
    /// Send `bearer_token` over plaintext to an address that is not loopback. Anyone on the
    /// path could read the token and use it until it expires, so this is refused unless set.
    /// Default false.
    pub allow_plaintext_token: bool,
    /// How connections to the nodes are opened. Default TCP; the deterministic simulation
    /// dials through its simulated network.
    pub dialer: revokd_proto::dial::Dialer,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoints", &self.endpoints)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("actor", &self.actor)
            .field("address_map", &self.address_map)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| REDACTED),
            )
            .field("tls", &self.tls)
            .field("allow_plaintext_token", &self.allow_plaintext_token)
            .finish_non_exhaustive()
    }
}

/// What `Debug` prints instead of a secret.
const REDACTED: &str = "<redacted>";

/// How a [`Client`] verifies the nodes over TLS. `Debug` leaves out the private key.
#[derive(Clone)]
pub struct ClientTls {
    /// PEM certificate of the cluster CA.
    pub ca_pem: Vec<u8>,
    /// PEM certificate and key to present, if the deployment asks for one. Default none.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name to verify in the nodes' certificates instead of the host dialed. Default none.
    pub server_name: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca_pem", &String::from_utf8_lossy(&self.ca_pem))
            .field(
                "identity",
                &self
                    .identity
                    .as_ref()
                    .map(|(cert, _)| (String::from_utf8_lossy(cert), REDACTED)),
            )
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl ClientTls {
    /// Trusts the cluster CA in `ca_pem`.
    pub fn new(ca_pem: impl Into<Vec<u8>>) -> Self {
        ClientTls {
            ca_pem: ca_pem.into(),
            identity: None,
            server_name: None,
        }
    }

    fn tonic(&self) -> tonic::transport::ClientTlsConfig {
        let mut c = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.identity {
            c = c.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.server_name {
            c = c.domain_name(name.clone());
        }
        c
    }
}

impl ClientConfig {
    /// The defaults with these endpoints.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        ClientConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(1),
            initial_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(500),
            attempt_timeout: Duration::from_secs(2),
            actor: "revokd-client".into(),
            address_map: BTreeMap::new(),
            bearer_token: None,
            tls: None,
            allow_plaintext_token: false,
            dialer: revokd_proto::dial::Dialer::default(),
        }
    }

    fn validate(&self) -> Result<(), Error> {
        if self.endpoints.is_empty() {
            return Err(Error::Config("at least one endpoint is required".into()));
        }
        if self.heartbeat_interval.is_zero()
            || self.timeout.is_zero()
            || self.attempt_timeout.is_zero()
        {
            return Err(Error::Config(
                "heartbeat_interval, timeout and attempt_timeout must be greater than 0".into(),
            ));
        }
        if http::HeaderValue::from_str(&self.actor).is_err() {
            return Err(Error::Config(format!(
                "actor {:?} is not a valid header value (printable ASCII only)",
                self.actor
            )));
        }
        for e in &self.endpoints {
            endpoint(e, self)?;
        }
        Bearer::new(self)?;
        Ok(())
    }
}

fn strip_scheme(addr: &str) -> &str {
    addr.trim_start_matches("http://")
        .trim_start_matches("https://")
}

/// Whether `host:port` names a loopback host (`localhost`, 127.0.0.0/8, `::1`).
fn is_loopback(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn endpoint(given: &str, config: &ClientConfig) -> Result<Endpoint, Error> {
    if given.starts_with("https://") && config.tls.is_none() {
        return Err(Error::Config(format!(
            "endpoint {given:?} asks for TLS, but no TLS is configured: set ClientConfig::tls \
             (the cluster CA to trust) rather than dial it in plaintext"
        )));
    }
    let addr = strip_scheme(given);
    let addr = config
        .address_map
        .get(addr)
        .map(|a| strip_scheme(a))
        .unwrap_or(addr);
    if addr.is_empty() || !addr.contains(':') {
        return Err(Error::Config(format!("endpoint {addr:?} is not host:port")));
    }
    if config.tls.is_none()
        && config.bearer_token.is_some()
        && !config.allow_plaintext_token
        && !is_loopback(addr)
    {
        return Err(Error::Config(format!(
            "endpoint {addr:?}: a bearer token would travel in plaintext to a non-loopback \
             address, where anyone on the path could read and reuse it; configure TLS, or set \
             allow_plaintext_token if the network is trusted"
        )));
    }
    let ep = match &config.tls {
        None => Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Error::Config(format!("endpoint {addr:?}: {e}")))?,
        Some(tls) => Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| Error::Config(format!("endpoint {addr:?}: {e}")))?
            .tls_config(tls.tonic())
            .map_err(|e| Error::Config(format!("tls: {e}")))?,
    };
    Ok(ep
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5)))
}

/// The result of one successful heartbeat.
#[derive(Debug, Clone)]
pub struct Probe {
    /// When the heartbeat was sent: a replica that has applied `response.commit_revision` was
    /// up to date at this instant.
    pub sent_at: Instant,
    /// The node's answer.
    pub response: pb::HeartbeatResponse,
}

/// One node as the client sees it.
pub(crate) struct NodeConn {
    pub(crate) addr: String,
    channel: Channel,
    auth: Bearer,
    id: AtomicU64,
    healthy: AtomicBool,
    outstanding: AtomicUsize,
    last: Mutex<Option<Probe>>,
}

impl NodeConn {
    pub(crate) fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    pub(crate) fn last_probe(&self) -> Option<Probe> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn revocation(&self) -> RevocationClient<InterceptedService<Channel, Bearer>> {
        RevocationClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(64 << 20)
    }

    pub(crate) fn cluster(&self) -> ClusterClient<InterceptedService<Channel, Bearer>> {
        ClusterClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }
}

/// Adds `authorization: Bearer <token>` to every call when the client has a token.
#[derive(Clone)]
pub(crate) struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    fn new(config: &ClientConfig) -> Result<Bearer, Error> {
        match &config.bearer_token {
            None => Ok(Bearer(None)),
            Some(t) => format!("Bearer {}", t.trim())
                .parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>()
                .map(|mut v| {
                    // Kept out of HPACK's dynamic table and of debug output.
                    v.set_sensitive(true);
                    Bearer(Some(v))
                })
                .map_err(|_| Error::Config("bearer_token is not a valid header value".into())),
        }
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// What a replica attached to this client reports in its heartbeats.
pub(crate) struct Reporter {
    pub(crate) replica_id: String,
    pub(crate) description: String,
    pub(crate) applied: Arc<AtomicU64>,
}

struct Inner {
    config: ClientConfig,
    nodes: RwLock<Vec<Arc<NodeConn>>>,
    leader: Mutex<Option<String>>,
    reporter: RwLock<Option<Arc<Reporter>>>,
    metrics: ClientMetrics,
    /// Counts finished probe rounds.
    rounds: watch::Sender<u64>,
}

/// A connection to a revokd cluster. Cheap to clone; clones share connections and the
/// background prober, which stops when the last clone is dropped.
///
/// ```no_run
/// # async fn demo() -> Result<(), revokd_client::Error> {
/// use revokd_client::{Client, ClientConfig, Revoke};
/// let client = Client::connect(ClientConfig::new(["127.0.0.1:50051"])).await?;
/// let done = client.revoke(Revoke::new("token-id", 1_900_000_000).reason("logout")).await?;
/// println!("revoked at revision {}", done.revision);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// A token id to revoke.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revoke {
    /// The token's `jti` (1-256 bytes).
    pub jti: String,
    /// Unix seconds: the token's own `exp`; the entry is dropped after it.
    pub expires_at: i64,
    /// Why (free text, up to 1024 bytes).
    pub reason: String,
    /// The token's subject, for audit.
    pub subject: String,
}

impl Revoke {
    /// Revoke `jti` until `expires_at` (unix seconds).
    pub fn new(jti: impl Into<String>, expires_at: i64) -> Self {
        Revoke {
            jti: jti.into(),
            expires_at,
            ..Revoke::default()
        }
    }

    /// Sets the reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

    /// Sets the subject.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = subject.into();
        self
    }

    fn pb(&self) -> pb::RevokedTokenSpec {
        pb::RevokedTokenSpec {
            jti: self.jti.clone(),
            expires_at: self.expires_at,
            reason: self.reason.clone(),
            subject: self.subject.clone(),
        }
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The change was applied at `revision`.
    Applied,
    /// Nothing changed: it was already in force since `revision` (an idempotent retry).
    AlreadyPresent,
    /// Nothing changed: the token has already expired.
    AlreadyExpired,
    /// Nothing changed: there was nothing to remove.
    NotFound,
}

/// A write the cluster committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteResult {
    /// What it did.
    pub outcome: WriteOutcome,
    /// The revision the outcome refers to.
    pub revision: u64,
    /// The revision of the log entry that carried the request (>= `revision`): every node and
    /// replica that has applied it reflects the write.
    pub committed_revision: u64,
    /// The leader that committed it.
    pub leader_id: u64,
}

impl WriteResult {
    fn from_pb(r: &pb::WriteResponse) -> Self {
        let outcome = match pb::WriteOutcome::try_from(r.outcome) {
            Ok(pb::WriteOutcome::AlreadyPresent) => WriteOutcome::AlreadyPresent,
            Ok(pb::WriteOutcome::AlreadyExpired) => WriteOutcome::AlreadyExpired,
            Ok(pb::WriteOutcome::NotFound) => WriteOutcome::NotFound,
            _ => WriteOutcome::Applied,
        };
        WriteResult {
            outcome,
            revision: r.revision,
            committed_revision: r.committed_revision.max(r.revision),
            leader_id: r.leader_id,
        }
    }
}

/// How many replicas a receipt waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaQuorum {
    /// At least this many connected replicas.
    AtLeast(usize),
    /// Every connected replica.
    All,
}

/// Which connected replicas applied a revision within a time bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The revision waited for.
    pub revision: u64,
    /// Replicas (by id) that have applied it.
    pub applied: Vec<String>,
    /// Connected replicas that had not, with the revision they had reached.
    pub pending: Vec<(String, u64)>,
    /// Whether the requested number of replicas applied it in time.
    pub complete: bool,
    /// How long the wait took.
    pub waited: Duration,
}

/// A write with its receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptedWrite {
    /// The write.
    pub write: WriteResult,
    /// Which replicas have it in force.
    pub receipt: Receipt,
}

use crate::clock::unix_now;

/// Which node a call goes to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The leader if known and healthy (writes), else any healthy node (it forwards).
    Leader,
    /// The healthy node with the fewest requests in flight.
    LeastLoaded,
}

/// Decrements a node's in-flight count when the call ends, however it ends.
struct InFlight(Arc<NodeConn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Client {
    /// Connects: learns the members from the first endpoint that answers `Status`, probes
    /// every node once, and starts the background prober. Fails if no endpoint answers within
    /// the configured timeout.
    pub async fn connect(config: ClientConfig) -> Result<Client, Error> {
        config.validate()?;
        let mut nodes = Vec::new();
        for e in &config.endpoints {
            let addr = strip_scheme(e).to_owned();
            if !nodes.iter().any(|n: &Arc<NodeConn>| n.addr == addr) {
                nodes.push(Arc::new(NodeConn {
                    channel: config.dialer.connect_lazy(endpoint(&addr, &config)?),
                    auth: Bearer::new(&config)?,
                    addr,
                    id: AtomicU64::new(0),
                    healthy: AtomicBool::new(true),
                    outstanding: AtomicUsize::new(0),
                    last: Mutex::new(None),
                }));
            }
        }
        let (rounds, _) = watch::channel(0);
        let client = Client {
            inner: Arc::new(Inner {
                metrics: ClientMetrics::new(),
                config,
                nodes: RwLock::new(nodes),
                leader: Mutex::new(None),
                reporter: RwLock::new(None),
                rounds,
            }),
        };
        let status = client
            .call("Status", Target::LeastLoaded, |node, _| async move {
                node.cluster().status(pb::StatusRequest {}).await
            })
            .await?;
        client.learn_members(&status);
        probe_round(&client.inner).await;
        tokio::spawn(prober(Arc::downgrade(&client.inner)));
        Ok(client)
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The client's metrics (node liveness, retries), to register in a Prometheus registry.
    pub fn metrics(&self) -> &ClientMetrics {
        &self.inner.metrics
    }

    pub(crate) fn nodes(&self) -> Vec<Arc<NodeConn>> {
        self.inner
            .nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Addresses of the nodes this client knows, each with whether its last heartbeat
    /// succeeded.
    pub fn node_health(&self) -> Vec<(String, bool)> {
        self.nodes()
            .iter()
            .map(|n| (n.addr.clone(), n.healthy()))
            .collect()
    }

    /// A receiver that changes after every probe round.
    pub(crate) fn probe_rounds(&self) -> watch::Receiver<u64> {
        self.inner.rounds.subscribe()
    }

    /// Probes every node now (as the background prober does each interval).
    pub(crate) async fn probe_now(&self) {
        probe_round(&self.inner).await;
    }

    /// Attaches a replica's report to the heartbeats. One replica per client.
    pub(crate) fn attach(&self, reporter: Arc<Reporter>) -> Result<(), Error> {
        let mut slot = self
            .inner
            .reporter
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return Err(Error::Config(
                "this client already feeds a replica; connect another client for a second one"
                    .into(),
            ));
        }
        *slot = Some(reporter);
        Ok(())
    }

    /// Sends one heartbeat with the replica's current revision to `node` now (a progress
    /// report, so receipts see it without waiting for the next probe).
    pub(crate) async fn report_to(&self, node: &NodeConn) {
        let reporter = self
            .inner
            .reporter
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(r) = reporter {
            let mut req = tonic::Request::new(heartbeat_request(Some(&r)));
            req.set_timeout(self.inner.config.heartbeat_interval);
            let _ = node.cluster().heartbeat(req).await;
        }
    }

    fn learn_members(&self, status: &pb::StatusResponse) {
        let mut nodes = self.inner.nodes.write().unwrap_or_else(|p| p.into_inner());
        for m in status.members.iter().chain(&status.learners) {
            if let Some(n) = nodes.iter().find(|n| n.addr == m.address) {
                n.id.store(m.id, Ordering::Release);
                continue;
            }
            match endpoint(&m.address, &self.inner.config) {
                Ok(ep) => {
                    tracing::info!(node = m.id, addr = %m.address, "revokd-client: learned member");
                    nodes.push(Arc::new(NodeConn {
                        channel: self.inner.config.dialer.connect_lazy(ep),
                        auth: Bearer::new(&self.inner.config).unwrap_or(Bearer(None)),
                        addr: m.address.clone(),
                        id: AtomicU64::new(m.id),
                        healthy: AtomicBool::new(true),
                        outstanding: AtomicUsize::new(0),
                        last: Mutex::new(None),
                    }));
                }
                Err(e) => {
                    tracing::warn!(addr = %m.address, error = %e, "revokd-client: ignoring member")
                }
            }
        }
        if !status.leader_address.is_empty() {
            self.set_leader(&status.leader_address);
        }
    }

    fn set_leader(&self, addr: &str) {
        *self.inner.leader.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr.to_owned());
    }

    /// Picks a node for `target`, or `None` when no node is healthy.
    fn pick(&self, target: Target) -> Option<Arc<NodeConn>> {
        let nodes = self.nodes();
        if target == Target::Leader {
            let leader = self
                .inner
                .leader
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(l) = leader {
                if let Some(n) = nodes.iter().find(|n| n.addr == l && n.healthy()) {
                    return Some(n.clone());
                }
            }
        }
        // Least outstanding requests; ties broken at random so load spreads.
        let start = fastrand::usize(..nodes.len().max(1));
        nodes
            .iter()
            .cycle()
            .skip(start)
            .take(nodes.len())
            .filter(|n| n.healthy())
            .min_by_key(|n| n.outstanding.load(Ordering::Acquire))
            .cloned()
    }

    /// A healthy node to stream from, other than `avoid` unless it is the only one.
    pub(crate) fn pick_for_stream(&self, avoid: Option<&str>) -> Option<Arc<NodeConn>> {
        let healthy: Vec<Arc<NodeConn>> =
            self.nodes().into_iter().filter(|n| n.healthy()).collect();
        let preferred: Vec<&Arc<NodeConn>> = healthy
            .iter()
            .filter(|n| Some(n.addr.as_str()) != avoid)
            .collect();
        let pool: Vec<&Arc<NodeConn>> = if preferred.is_empty() {
            healthy.iter().collect()
        } else {
            preferred
        };
        if pool.is_empty() {
            return None;
        }
        Some(pool[fastrand::usize(..pool.len())].clone())
    }

    /// Runs `f` on a node chosen for `target`, retrying UNAVAILABLE answers with backoff
    /// (following a leader hint at once) until the configured timeout.
    async fn call<T, F, Fut>(&self, op: &'static str, target: Target, f: F) -> Result<T, Error>
    where
        F: Fn(Arc<NodeConn>, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_within(op, target, self.inner.config.timeout, f)
            .await
    }

    async fn call_within<T, F, Fut>(
        &self,
        op: &'static str,
        target: Target,
        timeout: Duration,
        f: F,
    ) -> Result<T, Error>
    where
        F: Fn(Arc<NodeConn>, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut backoff = self.inner.config.initial_backoff;
        let mut last = String::from("no healthy node");
        let mut rounds = self.probe_rounds();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Error::Unavailable {
                    op,
                    waited: started.elapsed(),
                    last,
                });
            }
            let Some(node) = self.pick(target) else {
                // Every node failed its last heartbeat: wait for the next probe round.
                rounds.borrow_and_update();
                let _ = tokio::time::timeout_at(deadline, rounds.changed()).await;
                continue;
            };
            node.outstanding.fetch_add(1, Ordering::AcqRel);
            let guard = InFlight(node.clone());
            let attempt = remaining.min(self.inner.config.attempt_timeout);
            let result = self.attempt(&node, attempt, f(node.clone(), attempt)).await;
            drop(guard);
            let status = match result {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(status) => status,
            };
            match status.code() {
                tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
                | tonic::Code::DeadlineExceeded
                    if Instant::now() < deadline =>
                {
                    self.inner.metrics.retries.inc();
                    last = format!("{}: {}", node.addr, status.message());
                    let hint = status
                        .metadata()
                        .get(LEADER_ADDR_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    if !is_node_error(status.message()) {
                        // Not the node speaking: the connection failed. Stop using the node
                        // until a heartbeat succeeds again.
                        mark(&self.inner, &node, false, &last);
                    }
                    if let Some(h) = hint.filter(|h| *h != node.addr) {
                        self.set_leader(&h);
                        continue;
                    }
                    let jitter = backoff.mul_f64(fastrand::f64() * 0.5);
                    tokio::time::sleep_until((Instant::now() + backoff + jitter).min(deadline))
                        .await;
                    backoff = (backoff * 2).min(self.inner.config.max_backoff);
                }
                tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
                | tonic::Code::DeadlineExceeded => {
                    return Err(Error::Unavailable {
                        op,
                        waited: started.elapsed(),
                        last: format!("{}: {}", node.addr, status.message()),
                    })
                }
                _ => return Err(from_status(op, status)),
            }
        }
    }

    /// Runs one attempt on `node` for at most `timeout`, giving up early when a heartbeat
    /// round finds the node down.
    async fn attempt<T>(
        &self,
        node: &NodeConn,
        timeout: Duration,
        fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<tonic::Response<T>, tonic::Status> {
        let mut rounds = self.probe_rounds();
        let node_down = async {
            loop {
                if rounds.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                if !node.healthy() {
                    return;
                }
            }
        };
        tokio::select! {
            r = tokio::time::timeout(timeout, fut) => r.unwrap_or_else(|_| {
                Err(tonic::Status::deadline_exceeded(format!("no answer within {timeout:?}")))
            }),
            _ = node_down => Err(tonic::Status::unavailable(format!(
                "{} stopped answering heartbeats", node.addr
            ))),
        }
    }

    fn request<T>(&self, msg: T, remaining: Duration) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(remaining);
        if let Ok(v) = self.inner.config.actor.parse() {
            req.metadata_mut().insert(ACTOR_HEADER, v);
        }
        req
    }

    /// Revokes one token id. Retrying is safe: a second attempt answers `AlreadyPresent` with
    /// the first one's revision and creates no second event.
    pub async fn revoke(&self, token: Revoke) -> Result<WriteResult, Error> {
        let spec = token.pb();
        let r = self
            .call("Revoke", Target::Leader, |node, left| {
                let req = self.request(
                    pb::RevokeRequest {
                        token: Some(spec.clone()),
                    },
                    left,
                );
                async move { node.revocation().revoke(req).await }
            })
            .await?;
        Ok(WriteResult::from_pb(&r))
    }

    /// Revokes many token ids, in atomic batches of up to [`MAX_BATCH`]. One result per token,
    /// in order.
    pub async fn revoke_many(&self, tokens: &[Revoke]) -> Result<Vec<WriteResult>, Error> {
        let mut out = Vec::with_capacity(tokens.len());
        for chunk in tokens.chunks(MAX_BATCH) {
            let specs: Vec<pb::RevokedTokenSpec> = chunk.iter().map(Revoke::pb).collect();
            let r = self
                .call("RevokeBatch", Target::Leader, |node, left| {
                    let req = self.request(
                        pb::RevokeBatchRequest {
                            tokens: specs.clone(),
                        },
                        left,
                    );
                    async move { node.revocation().revoke_batch(req).await }
                })
                .await?;
            out.extend(r.results.iter().map(WriteResult::from_pb));
        }
        Ok(out)
    }

    /// Revokes every token whose `kind` claim equals `value` and that was issued before
    /// `not_before` (unix seconds; `None`: now, by this machine's clock, fixed before the first
    /// attempt so that retries are identical).
    pub async fn revoke_rule(
        &self,
        kind: RuleKind,
        value: &str,
        not_before: Option<i64>,
        reason: &str,
    ) -> Result<WriteResult, Error> {
        let msg = pb::RevokeRuleRequest {
            kind: rule_kind_pb(kind) as i32,
            value: value.to_owned(),
            not_before: not_before.unwrap_or_else(unix_now),
            reason: reason.to_owned(),
        };
        let r = self
            .call("RevokeRule", Target::Leader, |node, left| {
                let req = self.request(msg.clone(), left);
                async move { node.revocation().revoke_rule(req).await }
            })
            .await?;
        Ok(WriteResult::from_pb(&r))
    }

    /// Removes a rule.
    pub async fn remove_rule(&self, kind: RuleKind, value: &str) -> Result<WriteResult, Error> {
        let msg = pb::RemoveRuleRequest {
            kind: rule_kind_pb(kind) as i32,
            value: value.to_owned(),
        };
        let r = self
            .call("RemoveRule", Target::Leader, |node, left| {
                let req = self.request(msg.clone(), left);
                async move { node.revocation().remove_rule(req).await }
            })
            .await?;
        Ok(WriteResult::from_pb(&r))
    }

    /// Removes a token id from the revocation set.
    pub async fn unrevoke(&self, jti: &str) -> Result<WriteResult, Error> {
        let msg = pb::UnrevokeRequest {
            jti: jti.to_owned(),
        };
        let r = self
            .call("Unrevoke", Target::Leader, |node, left| {
                let req = self.request(msg.clone(), left);
                async move { node.revocation().unrevoke(req).await }
            })
            .await?;
        Ok(WriteResult::from_pb(&r))
    }

    /// Asks the cluster whether a token is revoked (a network round trip; validators use the
    /// local replica instead). Sent to the healthy node with the fewest requests in flight.
    pub async fn check(
        &self,
        token: pb::TokenQuery,
        consistency: pb::Consistency,
    ) -> Result<pb::CheckResponse, Error> {
        let msg = pb::CheckRequest {
            token: Some(token),
            consistency: consistency as i32,
            min_revision: 0,
        };
        self.call("Check", Target::LeastLoaded, |node, left| {
            let req = self.request(msg.clone(), left);
            async move { node.revocation().check(req).await }
        })
        .await
    }

    /// One healthy node's view of the cluster.
    pub async fn status(&self) -> Result<pb::StatusResponse, Error> {
        let s = self
            .call("Status", Target::LeastLoaded, |node, left| {
                let req = self.request(pb::StatusRequest {}, left);
                async move { node.cluster().status(req).await }
            })
            .await?;
        self.learn_members(&s);
        Ok(s)
    }

    /// Every known node's own status (or why it could not be had), by address.
    pub async fn statuses(&self) -> Vec<(String, Result<pb::StatusResponse, Error>)> {
        self.on_every_node("Status", |n, req_timeout| async move {
            let mut req = tonic::Request::new(pb::StatusRequest {});
            req.set_timeout(req_timeout);
            n.cluster().status(req).await
        })
        .await
    }

    /// Runs `f` on every known node at once, each bounded by the configured timeout; the
    /// answers (or why there was none) by address.
    async fn on_every_node<T, F, Fut>(
        &self,
        op: &'static str,
        f: F,
    ) -> Vec<(String, Result<T, Error>)>
    where
        T: Send + 'static,
        F: Fn(Arc<NodeConn>, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send + 'static,
    {
        let mut set = JoinSet::new();
        let timeout = self.inner.config.timeout;
        for n in self.nodes() {
            let addr = n.addr.clone();
            let fut = f(n, timeout);
            set.spawn(async move {
                let r = match tokio::time::timeout(timeout, fut).await {
                    Ok(Ok(r)) => Ok(r.into_inner()),
                    Ok(Err(s)) => Err(from_status(op, s)),
                    Err(_) => Err(Error::Unavailable {
                        op,
                        waited: timeout,
                        last: "no answer".into(),
                    }),
                };
                (addr, r)
            });
        }
        let mut out: Vec<_> = set.join_all().await;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Streams the whole revocation set from one healthy node, in chunks of `chunk_size` ids
    /// (0: the node's default), at a revision no older than `min_revision`.
    pub async fn snapshot(
        &self,
        chunk_size: u32,
        min_revision: u64,
    ) -> Result<tonic::Streaming<pb::SnapshotChunk>, Error> {
        self.call("Snapshot", Target::LeastLoaded, |node, left| {
            let mut req = tonic::Request::new(pb::SnapshotRequest {
                chunk_size,
                min_revision,
            });
            // The deadline bounds waiting for `min_revision`, not reading the stream.
            req.set_timeout(left);
            async move { node.revocation().snapshot(req).await }
        })
        .await
    }

    /// Streams every change after `from_revision` from one healthy node, until the stream
    /// breaks (resume from the last revision seen, on this or another client call).
    pub async fn watch(
        &self,
        from_revision: u64,
    ) -> Result<tonic::Streaming<pb::WatchResponse>, Error> {
        self.call("Watch", Target::LeastLoaded, |node, _| async move {
            node.revocation()
                .watch(pb::WatchRequest { from_revision })
                .await
        })
        .await
    }

    /// Builds a snapshot on every known node now; per node address, the snapshot's revision
    /// or why it failed.
    pub async fn trigger_snapshots(&self) -> Vec<(String, Result<u64, Error>)> {
        self.on_every_node("TriggerSnapshot", |n, req_timeout| async move {
            let mut req = tonic::Request::new(pb::TriggerSnapshotRequest {});
            req.set_timeout(req_timeout);
            n.cluster().trigger_snapshot(req).await
        })
        .await
        .into_iter()
        .map(|(addr, r)| (addr, r.map(|s| s.snapshot_revision)))
        .collect()
    }

    /// Adds a learner (a non-voting member that receives the log).
    pub async fn add_learner(
        &self,
        node_id: u64,
        address: &str,
        blocking: bool,
    ) -> Result<pb::MembershipResponse, Error> {
        let msg = pb::AddLearnerRequest {
            node_id,
            address: address.to_owned(),
            blocking,
        };
        self.call("AddLearner", Target::Leader, |node, left| {
            let req = self.request(msg.clone(), left);
            async move { node.cluster().add_learner(req).await }
        })
        .await
    }

    /// Replaces the set of voters (`retain`: keep removed voters as learners).
    pub async fn change_membership(
        &self,
        voters: &[u64],
        retain: bool,
    ) -> Result<pb::MembershipResponse, Error> {
        let msg = pb::ChangeMembershipRequest {
            voters: voters.to_vec(),
            retain,
        };
        self.call("ChangeMembership", Target::Leader, |node, left| {
            let req = self.request(msg.clone(), left);
            async move { node.cluster().change_membership(req).await }
        })
        .await
    }

    /// Revokes a token and then waits, up to `within`, until `want` connected replicas have
    /// applied it: the answer says which did, so an admin knows where the revocation is in
    /// force, not only that it is committed.
    pub async fn revoke_with_receipt(
        &self,
        token: Revoke,
        want: ReplicaQuorum,
        within: Duration,
    ) -> Result<ReceiptedWrite, Error> {
        let write = self.revoke(token).await?;
        let receipt = self
            .wait_for_replicas(write.committed_revision, want, within)
            .await;
        Ok(ReceiptedWrite { write, receipt })
    }

    /// Waits up to `within` until `want` connected replicas (those the node they follow heard
    /// from in the last three heartbeat intervals) report `revision` applied.
    pub async fn wait_for_replicas(
        &self,
        revision: u64,
        want: ReplicaQuorum,
        within: Duration,
    ) -> Receipt {
        let started = Instant::now();
        let deadline = started + within;
        let connected_ms = (self.inner.config.heartbeat_interval * 3)
            .max(Duration::from_secs(3))
            .as_millis() as u64;
        loop {
            // Merge every node's view: a replica reports promptly to the node it follows
            // (watches) and on every interval to all, but only the node it follows can check
            // a report against what it sent the replica, so only those reports count.
            let mut seen: BTreeMap<String, u64> = BTreeMap::new();
            for (_, status) in self.statuses().await {
                let Ok(status) = status else { continue };
                for r in status.replicas {
                    if r.follows_this_node && r.last_seen_ms <= connected_ms {
                        let e = seen.entry(r.replica_id).or_default();
                        *e = (*e).max(r.applied_revision);
                    }
                }
            }
            let (applied, pending): (Vec<_>, Vec<_>) =
                seen.into_iter().partition(|(_, rev)| *rev >= revision);
            let needed = match want {
                ReplicaQuorum::AtLeast(n) => n,
                ReplicaQuorum::All => applied.len() + pending.len(),
            };
            let complete = applied.len() >= needed;
            if complete || Instant::now() >= deadline {
                return Receipt {
                    revision,
                    applied: applied.into_iter().map(|(id, _)| id).collect(),
                    pending,
                    complete,
                    waited: started.elapsed(),
                };
            }
            tokio::time::sleep_until((Instant::now() + Duration::from_millis(5)).min(deadline))
                .await;
        }
    }
}

fn heartbeat_request(reporter: Option<&Reporter>) -> pb::HeartbeatRequest {
    match reporter {
        Some(r) => pb::HeartbeatRequest {
            replica_id: r.replica_id.clone(),
            applied_revision: r.applied.load(Ordering::Acquire),
            description: r.description.clone(),
        },
        None => pb::HeartbeatRequest::default(),
    }
}

/// Records a node's health, logging and counting changes.
fn mark(inner: &Inner, node: &NodeConn, healthy: bool, why: &str) {
    let was = node.healthy.swap(healthy, Ordering::AcqRel);
    inner
        .metrics
        .node_up
        .with_label_values(&[node.addr.as_str()])
        .set(i64::from(healthy));
    if was != healthy {
        inner.metrics.node_transitions.inc();
        if healthy {
            tracing::info!(node = %node.addr, "revokd-client: node is up");
        } else {
            tracing::warn!(node = %node.addr, reason = %why, "revokd-client: node is down; no requests go to it until a heartbeat succeeds");
        }
    }
}

/// Whether a heartbeat's error is the node refusing the report (so the node is up), rather
/// than the node failing to answer.
fn refused_report(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unauthenticated
            | tonic::Code::PermissionDenied
            | tonic::Code::ResourceExhausted
            | tonic::Code::InvalidArgument
    )
}

/// Probes every node once, concurrently.
async fn probe_round(inner: &Arc<Inner>) {
    let nodes = inner
        .nodes
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let reporter = inner
        .reporter
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let timeout = inner.config.heartbeat_interval.min(Duration::from_secs(2));
    let mut set = JoinSet::new();
    for node in nodes {
        let msg = heartbeat_request(reporter.as_deref());
        set.spawn(async move {
            let sent_at = Instant::now();
            let mut req = tonic::Request::new(msg);
            req.set_timeout(timeout);
            let r = tokio::time::timeout(timeout, node.cluster().heartbeat(req)).await;
            (node, sent_at, r)
        });
    }
    let mut leader: Option<(u64, String)> = None;
    while let Some(Ok((node, sent_at, r))) = set.join_next().await {
        match r {
            Ok(Ok(resp)) => {
                let response = resp.into_inner();
                node.id.store(response.node_id, Ordering::Release);
                if !response.leader_address.is_empty()
                    && leader.as_ref().is_none_or(|(t, _)| response.term > *t)
                {
                    leader = Some((response.term, response.leader_address.clone()));
                }
                *node.last.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(Probe { sent_at, response });
                mark(inner, &node, true, "");
            }
            // The node answered but refused this client's report (a credential it does not
            // accept, another client's replica id, a full registry): it is up, and calls
            // sent to it get their own answer, which says what is wrong, instead of "no
            // healthy node". The probe confirms no progress, so a replica's staleness grows.
            Ok(Err(status)) if refused_report(&status) => {
                tracing::warn!(node = %node.addr, reason = %status.message(), "revokd-client: the node refused this client's heartbeat");
                mark(inner, &node, true, "");
            }
            Ok(Err(status)) => mark(inner, &node, false, status.message()),
            Err(_) => mark(inner, &node, false, "heartbeat timed out"),
        }
    }
    if let Some((_, addr)) = leader {
        *inner.leader.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr);
    }
    inner.rounds.send_modify(|r| *r += 1);
}

/// Probes every node each interval until the client is dropped; refreshes the member list
/// every ten rounds.
async fn prober(inner: Weak<Inner>) {
    let Some(interval) = inner.upgrade().map(|i| i.config.heartbeat_interval) else {
        return;
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut round = 0u64;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        probe_round(&inner).await;
        round += 1;
        if round.is_multiple_of(10) {
            let client = Client { inner };
            if let Ok(Ok(s)) =
                tokio::time::timeout(interval, async {
                    client
                        .call_within("Status", Target::LeastLoaded, interval, |node, _| async move {
                            node.cluster().status(pb::StatusRequest {}).await
                        })
                        .await
                })
                .await
            {
                client.learn_members(&s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoint: &str) -> ClientConfig {
        ClientConfig::new([endpoint])
    }

    #[test]
    fn an_https_endpoint_is_never_dialed_in_plaintext() {
        let e = config("https://revokd.example:7000")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("no TLS is configured"), "{e}");
        let mut c = config("https://revokd.example:7000");
        c.tls = Some(ClientTls::new(b"ca".to_vec()));
        assert!(endpoint("https://revokd.example:7000", &c).is_ok());
    }

    #[test]
    fn a_token_goes_over_plaintext_only_to_loopback_or_when_allowed() {
        let mut c = config("10.0.0.5:7000");
        c.bearer_token = Some("eyJ.secret.token".into());
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("in plaintext"), "{e}");
        assert!(
            !e.to_string().contains("eyJ"),
            "the token is never echoed: {e}"
        );
        c.allow_plaintext_token = true;
        assert!(c.validate().is_ok());
        for local in ["127.0.0.1:7000", "localhost:7000", "[::1]:7000"] {
            let mut c = config(local);
            c.bearer_token = Some("t".into());
            assert!(c.validate().is_ok(), "{local}");
        }
    }

    #[test]
    fn debug_output_leaves_secrets_out() {
        let mut c = config("127.0.0.1:7000");
        c.bearer_token = Some("eyJ.secret.token".into());
        let mut tls = ClientTls::new(b"-----BEGIN CERTIFICATE-----".to_vec());
        tls.identity = Some((b"client-cert".to_vec(), b"PRIVATE-KEY-BYTES".to_vec()));
        c.tls = Some(tls);
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("eyJ") && !shown.contains("PRIVATE-KEY-BYTES"),
            "{shown}"
        );
        assert!(
            shown.contains("<redacted>") && shown.contains("client-cert"),
            "{shown}"
        );
        let bearer = Bearer::new(&c).unwrap();
        assert!(bearer.0.as_ref().is_some_and(|v| v.is_sensitive()));
    }
}
