//! Starting and stopping a node: [`run`] (TCP) and [`run_on`] (any accept stream, for the
//! simulation) load the TLS material and keys, open storage, start Raft, found the cluster on
//! first start, spawn the background tasks ([`tasks`]), serve the gRPC stack (metrics layer,
//! then the identify / authorize / limit gate, then the services) and shut down in order:
//! stop serving, stop Raft, flush storage.

pub mod tasks;

use tasks::purge_task;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use revokd_proto::clock::{system_wall, Clock};
use revokd_proto::v1::cluster_server::ClusterServer;
use revokd_proto::v1::raft_server::RaftServer;
use revokd_proto::v1::revocation_server::RevocationServer;
use tokio::sync::watch;
use tonic_health::pb::health_server::{Health, HealthServer};

use crate::config::{self, Config};
use crate::network::client::MAX_RAFT_MESSAGE;
use crate::network::{NetworkFactory, RaftService};
use crate::node::Node;
use crate::typ::Raft;
use crate::{api, consensus, metrics, network, storage};

/// Largest public API message the node decodes: twice the token data one `RevokeBatch` may
/// carry ([`revokd_core::MAX_BATCH_BYTES`]), which leaves room for protobuf framing, so every
/// request the node could accept fits and anything larger is refused before it is buffered
/// whole. Only verified peers may send the larger Raft messages.
pub const MAX_API_MESSAGE: usize = 2 * revokd_core::MAX_BATCH_BYTES;
/// Largest public API message the node encodes: a `Snapshot` chunk of many long entries.
pub const MAX_API_RESPONSE: usize = 32 * 1024 * 1024;

/// Why a node could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The listen or metrics address could not be bound.
    #[error("revokd: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The data directory could not be opened.
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    /// A setting turned out unusable at start (for example an unreadable key file).
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// Raft could not start.
    #[error("revokd: raft: {0}")]
    Raft(String),
    /// The gRPC reflection service could not be built from the descriptors.
    #[error("revokd: grpc reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("revokd: grpc server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// What a node runs on besides its configuration. [`run`] uses the defaults: sled and
/// snapshot files in the data directory, TCP to peers. The deterministic simulation swaps
/// the storage and the network (and the clock, with [`crate::node::use_clock`]).
#[derive(Default)]
pub struct Platform {
    /// The storage. Default: sled and snapshot files in `config.data_dir`.
    pub disk: Option<storage::Disk>,
    /// How peers are dialed. Default: TCP.
    pub dialer: revokd_proto::dial::Dialer,
    /// Where `/metrics` is served. Default: nowhere ([`run`] binds `--metrics-listen`).
    pub metrics_listener: Option<tokio::net::TcpListener>,
    /// Called with the node once it has started (the simulation reads its state).
    pub on_start: Option<OnStart>,
    /// The connections the accept loop let in on probation, for the gate to evict those that
    /// are not peers. Default: none (an accept stream without a peer reserve).
    pub probation: network::incoming::Probation,
    /// Connections the accept loop took, counted for `revokd_connections_accepted_total`.
    /// Default: a counter nothing adds to (an accept stream that does not count).
    pub accepted: Arc<std::sync::atomic::AtomicU64>,
    /// Where the node reads the wall time once, at start (it keeps it by the monotonic clock
    /// from then on: [`revokd_proto::clock::Clock`]). Default: the system clock, or the one
    /// [`crate::node::use_clock`] installed.
    pub wall: Option<revokd_proto::clock::WallSource>,
}

/// A callback receiving a started node.
pub type OnStart = Box<dyn FnOnce(&Node) + Send>;

/// Runs a node on TCP until `shutdown` resolves, then stops accepting requests, stops Raft
/// and flushes storage.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    // Keys and certificates are read and checked before anything binds.
    let security = Security::load(&config)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| RunError::Bind {
            addr: config.listen.to_string(),
            source,
        })?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| RunError::Bind {
                    addr: addr.to_string(),
                    source,
                })?,
        ),
        None => None,
    };
    // Connection limits and the first-byte timeout; TCP_NODELAY is set there too (Nagle's
    // algorithm would hold small watch messages back for a delayed-ACK period, and the
    // builder's flag does not reach a listener we bound ourselves).
    let probation = network::incoming::Probation::default();
    let limits = network::incoming::ConnectionLimits {
        max_connections: config.max_connections,
        per_address: config.max_connections_per_address,
        identify_peers: config.tls.is_some(),
    };
    let accepted = Arc::default();
    let incoming =
        network::incoming::limited(listener, limits, probation.clone(), Arc::clone(&accepted));
    let platform = Platform {
        metrics_listener,
        probation,
        accepted,
        ..Platform::default()
    };
    serve(config, platform, security, incoming, shutdown).await
}

/// A connection a node can serve: what the accept stream given to [`run_on`] yields (a TCP
/// stream in `revokd`, a simulated one in the simulation).
pub trait Connection:
    tonic::transport::server::Connected<ConnectInfo = tonic::transport::server::TcpConnectInfo>
    + tokio::io::AsyncRead
    + tokio::io::AsyncWrite
    + Unpin
    + Send
    + 'static
{
}

impl<T> Connection for T where
    T: tonic::transport::server::Connected<ConnectInfo = tonic::transport::server::TcpConnectInfo>
        + tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + Unpin
        + Send
        + 'static
{
}

/// Runs a node on `platform`, serving the connections `incoming` yields, until `shutdown`
/// resolves; see [`run`].
pub async fn run_on<S, IO>(
    config: Config,
    platform: Platform,
    incoming: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError>
where
    S: tokio_stream::Stream<Item = std::io::Result<IO>> + Send + 'static,
    IO: Connection,
{
    let security = Security::load(&config)?;
    serve(config, platform, security, incoming, shutdown).await
}

/// TLS material and admin authorization, loaded from the configuration.
struct Security {
    tls: Option<network::tls::Tls>,
    auth: Option<api::auth::Authorizer>,
}

impl Security {
    fn load(config: &Config) -> Result<Security, RunError> {
        // Also for embedders that built the configuration by hand (`run_on`).
        config.check_transport_security()?;
        let tls = match &config.tls {
            Some(s) => Some(network::tls::Tls::load(s)?),
            None => None,
        };
        let auth = api::auth::Authorizer::new(
            config.auth.as_ref(),
            tls.as_ref().and_then(|t| t.admins.clone()),
        )?;
        Ok(Security { tls, auth })
    }
}

/// Starts the node on its platform, serves until the stop signal and stops in order.
async fn serve<S, IO>(
    config: Config,
    platform: Platform,
    Security { tls, auth }: Security,
    incoming: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError>
where
    S: tokio_stream::Stream<Item = std::io::Result<IO>> + Send + 'static,
    IO: Connection,
{
    let config = Arc::new(config);
    let Platform {
        disk,
        dialer,
        metrics_listener,
        on_start,
        probation,
        accepted,
        wall,
    } = platform;
    let identify = api::caller::Identify::new(
        tls.as_ref().map(|t| t.peers.clone()),
        tls.as_ref().and_then(|t| t.admins.clone()),
        probation,
    );
    let dial = network::client::PeerDial {
        tls: tls.as_ref().map(|t| t.client.clone()),
        dialer,
    };
    let clock = Arc::new(Clock::new(wall.unwrap_or_else(system_wall)));
    let (node, log) = start_node(config.clone(), disk, dial, clock).await?;
    // Admin tokens revoked in the node's own set are refused.
    let auth = auth.map(|a| a.checking_revocations(node.sm.clone()));
    if let Some(f) = on_start {
        f(&node);
    }

    let (stop_tx, stop_rx) = stop_signal(&node, shutdown);
    tokio::spawn(node.elections.clone().run(stop_rx.clone()));
    let fatal = tasks::stop_on_fatal(&node.raft, stop_tx.clone(), stop_rx.clone());
    let health = tasks::start_health(&node, stop_rx.clone()).await;
    tokio::spawn(purge_task(node.clone(), stop_rx.clone()));
    let metrics = start_metrics(&node, metrics_listener, accepted, &stop_rx);
    let gate = Gate {
        identify,
        auth,
        limits: api::limits::RateLimits::new(config.write_rate_limit, config.read_rate_limit),
    };
    let served = serve_grpc(&node, metrics, gate, health, tls, incoming, stop_rx).await?;

    tracing::info!("revokd: shutting down");
    let _ = stop_tx.send(true);
    if let Err(e) = node.raft.shutdown().await {
        tracing::warn!(error = %e, "raft: shutdown");
    }
    if let Err(e) = log.flush().await {
        tracing::error!(error = %e, "storage: final flush failed");
    }
    served?;
    if let Some(e) = fatal.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(RunError::Raft(format!("stopped after a fatal error: {e}")));
    }
    Ok(())
}

/// The stop signal every task watches: set when `shutdown` resolves, once a leader has
/// handed its leadership over (so a rolling restart does not wait out an election timeout
/// per node), or by the node itself (a fatal Raft error).
fn stop_signal(
    node: &Node,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (watch::Sender<bool>, watch::Receiver<bool>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (tx, elections) = (stop_tx.clone(), node.elections.clone());
    tokio::spawn(async move {
        shutdown.await;
        elections.hand_off().await;
        let _ = tx.send(true);
    });
    (stop_tx, stop_rx)
}

/// The node's metrics, served on `listener` when there is one.
fn start_metrics(
    node: &Node,
    listener: Option<tokio::net::TcpListener>,
    accepted: Arc<std::sync::atomic::AtomicU64>,
    stop: &watch::Receiver<bool>,
) -> Arc<metrics::Metrics> {
    let metrics = metrics::Metrics::new();
    metrics.count_accepted(accepted);
    let config = &node.config;
    if config.tls.is_none() && !config.listen.ip().is_loopback() {
        tracing::warn!(listen = %config.listen, "revokd: INSECURE: serving without TLS on a non-loopback address (--insecure); anyone who reaches this port can send Raft messages and rewrite the revocation set");
        metrics.set_insecure();
    }
    if let Some(l) = listener {
        let (m, n, rx) = (metrics.clone(), node.clone(), stop.clone());
        tracing::info!(addr = %config.metrics_listen.map(|a| a.to_string()).unwrap_or_default(), "metrics: serving /metrics");
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(l, m, n, wait_stop(rx)).await {
                tracing::error!(error = %e, "metrics: server failed");
            }
        });
    }
    metrics
}

/// The three stages every call passes, in order (see `api::gate`).
struct Gate {
    identify: api::caller::Identify,
    auth: Option<api::auth::Authorizer>,
    limits: api::limits::RateLimits,
}

/// Settings of established connections: dead peers are found by keepalive pings every
/// [`KEEPALIVE_INTERVAL`] (a quiet watcher's connection stays up; pings are a few bytes),
/// unanswered for [`KEEPALIVE_TIMEOUT`]; one connection cannot open more than
/// [`MAX_STREAMS_PER_CONNECTION`] streams at once (a validator needs two or three).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// See [`KEEPALIVE_INTERVAL`].
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// See [`KEEPALIVE_INTERVAL`].
const MAX_STREAMS_PER_CONNECTION: u32 = 1024;

/// Serves the gRPC stack on `incoming` until the stop signal, then closes what is still
/// open after [`SHUTDOWN_GRACE`]. The outer error is one of building the stack; the inner
/// one is the server's, reported after the node has stopped.
async fn serve_grpc<S, IO>(
    node: &Node,
    metrics: Arc<metrics::Metrics>,
    gate: Gate,
    health: HealthServer<impl Health>,
    tls: Option<network::tls::Tls>,
    incoming: S,
    stop: watch::Receiver<bool>,
) -> Result<Result<(), tonic::transport::Error>, RunError>
where
    S: tokio_stream::Stream<Item = std::io::Result<IO>> + Send + 'static,
    IO: Connection,
{
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(revokd_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let config = &node.config;
    tracing::info!(id = config.id, listen = %config.listen, advertise = %config.advertise, data_dir = %config.data_dir.display(), "revokd: serving");
    if gate.limits.enabled() {
        tokio::spawn(tasks::shrink_limits(gate.limits.clone(), stop.clone()));
    }
    // The TLS handshake and the HTTP/2 opening, each under a deadline.
    let incoming = network::handshake::opened(incoming, tls.as_ref().map(|t| t.server.clone()));
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .layer(metrics::MetricsLayer::new(metrics))
        // Who is calling, then may they (which also names them), then within their budget.
        .layer(api::gate::GateLayer::new(gate.identify))
        .layer(api::gate::GateLayer::new(gate.auth))
        .layer(api::gate::GateLayer::new(gate.limits))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            RevocationServer::new(api::revocation::RevocationService::new(node.clone()))
                .max_decoding_message_size(MAX_API_MESSAGE)
                .max_encoding_message_size(MAX_API_RESPONSE),
        )
        .add_service(ClusterServer::new(api::cluster::ClusterService::new(
            node.clone(),
        )))
        .add_service(
            RaftServer::new(RaftService::new(node.raft.clone(), node.elections.clone()))
                .max_decoding_message_size(MAX_RAFT_MESSAGE)
                .max_encoding_message_size(MAX_RAFT_MESSAGE),
        )
        .serve_with_incoming_shutdown(incoming, wait_stop(stop.clone()));
    // Connections that stay open (watchers, peers, idle clients) would hold a graceful
    // shutdown forever: after the grace period they are closed.
    Ok(tokio::select! {
        r = server => r,
        _ = async { wait_stop(stop).await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "revokd: closing connections still open after the grace period");
            Ok(())
        }
    })
}

/// How long a stopping node waits for open requests before closing connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

async fn wait_stop(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Opens storage (`disk`, or sled and snapshot files in the data directory), starts Raft on
/// it and founds the cluster on first start; returns the node and its log (flushed at stop).
async fn start_node(
    config: Arc<Config>,
    disk: Option<storage::Disk>,
    dial: network::client::PeerDial,
    clock: Arc<Clock>,
) -> Result<(Node, storage::LogStore), RunError> {
    let disk = match disk {
        Some(d) => d,
        None => storage::sled_disk(&config.data_dir)?,
    };
    let (log, sm) = storage::open_disk(&disk, config.watch_window)?;
    let raft_config = consensus::raft_config(&config).map_err(|e| RunError::Raft(e.to_string()))?;
    let links = Arc::<network::client::Links>::default();
    let raft = Raft::new(
        config.id,
        Arc::new(raft_config),
        NetworkFactory::new(config.peer_routes.clone(), dial.clone(), links.clone()),
        log.clone(),
        sm.clone(),
    )
    .await
    .map_err(|e| RunError::Raft(e.to_string()))?;
    let node = Node::new(raft, sm, config, dial, clock, links);
    initialize(&node).await?;
    Ok((node, log))
}

/// Founds the cluster on first start (unless joining): every founding node proposes the same
/// membership, so nodes can start in any order. A node with state on disk skips this.
async fn initialize(node: &Node) -> Result<(), RunError> {
    let initialized = node
        .raft
        .is_initialized()
        .await
        .map_err(|e| RunError::Raft(e.to_string()))?;
    if initialized || node.config.join {
        return Ok(());
    }
    let members: BTreeMap<u64, BasicNode> = node
        .config
        .founding_members()
        .into_iter()
        .map(|(id, addr)| (id, BasicNode::new(addr)))
        .collect();
    tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "revokd: founding cluster");
    match node.raft.initialize(members).await {
        Ok(()) => Ok(()),
        // Another founder's membership already reached us: nothing to do.
        Err(openraft::error::RaftError::APIError(
            openraft::error::InitializeError::NotAllowed(_),
        )) => Ok(()),
        Err(e) => Err(RunError::Raft(e.to_string())),
    }
}
