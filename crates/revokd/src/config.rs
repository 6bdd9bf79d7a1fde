//! Node configuration: one documented struct, filled from flags, `REVOKD_*` environment
//! variables and an optional TOML file (in that order of precedence), and validated before
//! anything binds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A validated node configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id, unique in the cluster and never reused. Default 1; 0 is invalid.
    pub id: u64,
    /// Where the gRPC server (public API and Raft) listens. Default `127.0.0.1:50051`.
    pub listen: SocketAddr,
    /// The address other nodes and clients use to reach this node. Default: `listen`.
    pub advertise: String,
    /// Directory for the log and snapshots. Default `./revokd-data`.
    pub data_dir: PathBuf,
    /// The founding members, id to address. Default: this node alone. Ignored once the node
    /// has state on disk.
    pub initial_cluster: BTreeMap<u64, String>,
    /// Start empty and wait to be added with `AddLearner` instead of founding a cluster.
    /// Default false.
    pub join: bool,
    /// Where Prometheus metrics are served over HTTP (`/metrics`). Default: not served.
    pub metrics_listen: Option<SocketAddr>,
    /// Log format. Default text.
    pub log_format: LogFormat,
    /// Raft heartbeat interval, which is also the time openraft allows one AppendEntries
    /// (send, store, flush). Default 100 ms.
    pub heartbeat: Duration,
    /// Minimum election timeout. Default 300 ms; must be at least three heartbeats.
    pub election_timeout: Duration,
    /// Maximum election timeout (exclusive): openraft draws each node's timeout once at start,
    /// uniformly between the minimum and this. Default `None`: the minimum plus a third.
    pub election_timeout_max: Option<Duration>,
    /// Build a snapshot and compact the log after this many entries. Default 20,000.
    pub snapshot_logs: u64,
    /// Log entries kept behind a snapshot, so a briefly lagging follower catches up from the
    /// log instead of a full snapshot. Default 1,000; 0 compacts everything a snapshot covers.
    pub snapshot_keep_logs: u64,
    /// The longest lifetime a token may have: revocations further out are refused and rules
    /// are kept this long. Default 30 days.
    pub max_token_lifetime: Duration,
    /// How often the leader proposes a purge of expired entries. Default 10 s.
    pub purge_interval: Duration,
    /// How many recent change events each node keeps for `Watch` to resume from.
    /// Default 100,000.
    pub watch_window: usize,
    /// Deadline for a request that carries none. Default 5 s.
    pub default_deadline: Duration,
    /// Most tokens the leader coalesces from concurrent requests into one log entry.
    /// Default 10,000; 1 puts every request in its own entry (for comparison).
    pub batch_max_tokens: usize,
    /// Where this node dials a peer instead of the address the peer advertises, by peer id
    /// (Raft traffic, forwarded writes and read-index calls). For NAT, a sidecar proxy, or the
    /// chaos harness's link proxies. Default empty: dial the advertised address.
    pub peer_routes: BTreeMap<u64, String>,
    /// Writes (revokes, rules, membership changes) per second each client address may make
    /// at this node, with a burst of one second's worth; over it, RESOURCE_EXHAUSTED with a
    /// retry hint. Default 0: unlimited.
    pub write_rate_limit: u32,
    /// Reads (checks, snapshots, watches, status) per second each client address may make at
    /// this node, likewise. Default 0: unlimited.
    pub read_rate_limit: u32,
    /// Admin authorization by bearer JWT. Default: off (every call is open).
    pub auth: Option<AuthSettings>,
    /// A `Watch` stream whose reader takes nothing for this long while changes wait is
    /// ended, so a stalled watcher holds neither memory nor a task. Default 30 s.
    pub watch_stall_timeout: Duration,
    /// TLS for clients and peers. Default: off (plaintext).
    pub tls: Option<TlsSettings>,
    /// Most connections open at once (clients, watchers and peers together); more are closed
    /// as soon as they are accepted. With TLS on, a quarter of them (at most 64) are kept for
    /// peers. A connection that sends nothing for 10 s, or has not opened HTTP/2 (or finished
    /// its TLS handshake) 10 s after it was accepted, is closed too. Default 4,096.
    pub max_connections: usize,
    /// Most connections from one client address (`--max-connections-per-address`); a
    /// connection over it is closed unless it turns out to be a peer (with TLS on). Default
    /// 1,024; 0 is no per-address cap.
    pub max_connections_per_address: usize,
    /// Run without TLS on a non-loopback address (`--insecure`): any process that reaches the
    /// port can then send Raft messages and rewrite the revocation set, so the node warns at
    /// start and exports `revokd_insecure 1`. Default false: such a node refuses to start.
    /// Loopback-only nodes need no TLS either way.
    pub insecure: bool,
}

/// The node's certificate, key and the cluster CA (see `network::tls`).
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// PEM certificate chain of this node, issued by the cluster CA.
    pub cert: PathBuf,
    /// PEM private key of that certificate.
    pub key: PathBuf,
    /// PEM certificate of the cluster CA: verifies peers, which must present a certificate
    /// it issued.
    pub ca: PathBuf,
    /// PEM certificate of the CA that issues admins' client certificates (`--admin-client-ca`).
    /// A client presenting a certificate it issued is an admin (writes, membership and reads)
    /// without a bearer token. Must differ from the cluster CA. Default: none (admins use
    /// bearer tokens).
    pub admin_ca: Option<PathBuf>,
    /// Names (subject CN, else the first DNS or e-mail SAN) of the admin certificates allowed
    /// (`--admin-client-names`). Default: empty, every certificate of the admin CA.
    pub admin_names: Vec<String>,
}

/// How the node verifies admins' bearer JWTs (see `api::auth`).
#[derive(Clone, Debug)]
pub struct AuthSettings {
    /// PEM public key (RS*, PS*, ES*, EdDSA) or a file holding the HMAC secret (HS*, at least
    /// 32 bytes). Required to turn authorization on.
    pub key_file: PathBuf,
    /// The one algorithm tokens must use. Default RS256.
    pub algorithm: jsonwebtoken::Algorithm,
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// Scope writes and membership changes need (in `scope` or `scp`). Default
    /// `revokd:admin`.
    pub admin_scope: String,
    /// Scope reads need. Default: none (reads and watches are open).
    pub read_scope: Option<String>,
    /// Longest lifetime an admin token may have (`exp` minus `iat`, or minus now without
    /// `iat`): a leaked token is useful for at most this long. Default 24 hours.
    pub max_token_lifetime: Duration,
}

/// Default longest lifetime of an admin token.
pub const DEFAULT_ADMIN_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Command-line flags (each also an environment variable). Unset flags fall back to the
/// config file, then to the defaults documented on [`Config`]. The TOML file has the same
/// keys (snake_case), so it deserializes into this struct too.
#[derive(Debug, Default, Parser, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[command(
    name = "revokd",
    version,
    about = "A node of a Raft-replicated JWT revocation cluster."
)]
pub struct Args {
    /// Optional TOML file with the same keys as the flags (snake_case).
    #[arg(long, env = "REVOKD_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Node id (unique, never reused). [default: 1]
    #[arg(long, env = "REVOKD_ID")]
    pub id: Option<u64>,
    /// gRPC listen address. [default: 127.0.0.1:50051]
    #[arg(long, env = "REVOKD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address others reach this node at. [default: the listen address]
    #[arg(long, env = "REVOKD_ADVERTISE")]
    pub advertise: Option<String>,
    /// Data directory. [default: ./revokd-data]
    #[arg(long, env = "REVOKD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Founding members: `1=127.0.0.1:7001,2=127.0.0.1:7002,...`. [default: this node alone]
    #[arg(long, env = "REVOKD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Wait to be added with AddLearner instead of founding a cluster.
    #[arg(long, env = "REVOKD_JOIN")]
    pub join: bool,
    /// Serve Prometheus metrics on this address (`/metrics`).
    #[arg(long, env = "REVOKD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Log format. [default: text]
    #[arg(long, env = "REVOKD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Raft heartbeat interval in milliseconds. [default: 100]
    #[arg(long, env = "REVOKD_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// Minimum election timeout in milliseconds. [default: 300]
    #[arg(long, env = "REVOKD_ELECTION_TIMEOUT_MS")]
    pub election_timeout_ms: Option<u64>,
    /// Maximum election timeout in milliseconds (exclusive; above the minimum).
    /// [default: the minimum plus a third]
    #[arg(long, env = "REVOKD_ELECTION_TIMEOUT_MAX_MS")]
    pub election_timeout_max_ms: Option<u64>,
    /// Entries between snapshots. [default: 20000]
    #[arg(long, env = "REVOKD_SNAPSHOT_LOGS")]
    pub snapshot_logs: Option<u64>,
    /// Log entries kept behind a snapshot. [default: 1000]
    #[arg(long, env = "REVOKD_SNAPSHOT_KEEP_LOGS")]
    pub snapshot_keep_logs: Option<u64>,
    /// Maximum token lifetime in seconds. [default: 2592000 (30 days)]
    #[arg(long, env = "REVOKD_MAX_TOKEN_LIFETIME_SECS")]
    pub max_token_lifetime_secs: Option<u64>,
    /// Seconds between purges of expired entries. [default: 10]
    #[arg(long, env = "REVOKD_PURGE_INTERVAL_SECS")]
    pub purge_interval_secs: Option<u64>,
    /// Recent change events kept for Watch. [default: 100000]
    #[arg(long, env = "REVOKD_WATCH_WINDOW")]
    pub watch_window: Option<usize>,
    /// Deadline in milliseconds for requests that carry none. [default: 5000]
    #[arg(long, env = "REVOKD_DEFAULT_DEADLINE_MS")]
    pub default_deadline_ms: Option<u64>,
    /// Most tokens coalesced into one log entry; 1 disables batching. [default: 10000]
    #[arg(long, env = "REVOKD_BATCH_MAX_TOKENS")]
    pub batch_max_tokens: Option<usize>,
    /// Dial these addresses for these peers instead of what they advertise:
    /// `2=127.0.0.1:9102,3=127.0.0.1:9103`. [default: none]
    #[arg(long, env = "REVOKD_PEER_ROUTES")]
    pub peer_routes: Option<String>,
    /// Writes per second per client address; 0 is unlimited. [default: 0]
    #[arg(long, env = "REVOKD_WRITE_RATE_LIMIT")]
    pub write_rate_limit: Option<u32>,
    /// Reads per second per client address; 0 is unlimited. [default: 0]
    #[arg(long, env = "REVOKD_READ_RATE_LIMIT")]
    pub read_rate_limit: Option<u32>,
    /// Turn admin authorization on: writes need a bearer JWT verified with this key (PEM
    /// public key, or a file holding an HMAC secret). [default: off]
    #[arg(long, env = "REVOKD_AUTH_KEY")]
    pub auth_key: Option<PathBuf>,
    /// The algorithm admin tokens must use. [default: RS256]
    #[arg(long, env = "REVOKD_AUTH_ALGORITHM")]
    pub auth_algorithm: Option<String>,
    /// Required `iss` of admin tokens (required with --auth-key).
    #[arg(long, env = "REVOKD_AUTH_ISSUER")]
    pub auth_issuer: Option<String>,
    /// Required `aud` of admin tokens (required with --auth-key).
    #[arg(long, env = "REVOKD_AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,
    /// Scope writes need. [default: revokd:admin]
    #[arg(long, env = "REVOKD_AUTH_ADMIN_SCOPE")]
    pub auth_admin_scope: Option<String>,
    /// Scope reads need. [default: none, reads are open]
    #[arg(long, env = "REVOKD_AUTH_READ_SCOPE")]
    pub auth_read_scope: Option<String>,
    /// Longest lifetime (exp - iat) an admin token may have, in seconds; longer-lived tokens
    /// are refused. [default: 86400 (24 hours)]
    #[arg(long, env = "REVOKD_AUTH_MAX_TOKEN_LIFETIME_SECS")]
    pub auth_max_token_lifetime_secs: Option<u64>,
    /// Seconds a Watch stream may go unread while changes wait before it is ended.
    /// [default: 30]
    #[arg(long, env = "REVOKD_WATCH_STALL_TIMEOUT_SECS")]
    pub watch_stall_timeout_secs: Option<u64>,
    /// This node's PEM certificate (turns TLS on, with --tls-key and --tls-ca).
    #[arg(long, env = "REVOKD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "REVOKD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA's PEM certificate: peers must present a certificate it issued.
    #[arg(long, env = "REVOKD_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// The PEM certificate of a CA (not the cluster CA) issuing admins' client certificates:
    /// a client presenting one may write without a bearer token. Needs TLS. [default: none]
    #[arg(long, env = "REVOKD_ADMIN_CLIENT_CA")]
    pub admin_client_ca: Option<PathBuf>,
    /// Comma-separated names (certificate CN, else its first DNS or e-mail SAN) allowed as
    /// admins by --admin-client-ca. [default: any certificate that CA issued]
    #[arg(long, env = "REVOKD_ADMIN_CLIENT_NAMES")]
    pub admin_client_names: Option<String>,
    /// Most connections open at once; more are closed at accept. [default: 4096]
    #[arg(long, env = "REVOKD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most connections from one client address; 0 is no cap. [default: 1024]
    #[arg(long, env = "REVOKD_MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: Option<usize>,
    /// Allow listening on a non-loopback address without TLS. Anyone who reaches the port
    /// can then forge Raft traffic and rewrite the revocation set: for a laptop or a private
    /// test network only. [default: off]
    #[arg(long, env = "REVOKD_INSECURE")]
    pub insecure: bool,
}

/// A configuration that cannot be used. The message says which setting and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("config: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this struct.
    #[error("config: {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A setting is out of range or inconsistent.
    #[error("config: {0}")]
    Invalid(String),
}

impl Default for Config {
    fn default() -> Self {
        Config {
            id: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            advertise: "127.0.0.1:50051".into(),
            data_dir: PathBuf::from("revokd-data"),
            initial_cluster: BTreeMap::new(),
            join: false,
            metrics_listen: None,
            log_format: LogFormat::Text,
            heartbeat: Duration::from_millis(100),
            election_timeout: Duration::from_millis(300),
            election_timeout_max: None,
            snapshot_logs: 20_000,
            snapshot_keep_logs: 1_000,
            max_token_lifetime: Duration::from_secs(
                revokd_core::DEFAULT_MAX_TOKEN_LIFETIME_SECS as u64,
            ),
            purge_interval: Duration::from_secs(10),
            watch_window: 100_000,
            default_deadline: Duration::from_secs(5),
            batch_max_tokens: revokd_core::MAX_BATCH,
            peer_routes: BTreeMap::new(),
            write_rate_limit: 0,
            read_rate_limit: 0,
            auth: None,
            watch_stall_timeout: Duration::from_secs(30),
            tls: None,
            max_connections: 4096,
            max_connections_per_address: 1024,
            insecure: false,
        }
    }
}

/// Parses `1=host:port,2=host:port`.
pub fn parse_initial_cluster(s: &str) -> Result<BTreeMap<u64, String>, ConfigError> {
    parse_id_addrs("initial-cluster", s)
}

/// Parses a `--peer-routes` list (`2=host:port,...`).
pub fn parse_peer_routes(s: &str) -> Result<BTreeMap<u64, String>, ConfigError> {
    parse_id_addrs("peer-routes", s)
}

fn parse_id_addrs(flag: &str, s: &str) -> Result<BTreeMap<u64, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| {
            ConfigError::Invalid(format!("{flag} entry {part:?} is not ID=HOST:PORT"))
        })?;
        let id: u64 = id.trim().parse().map_err(|_| {
            ConfigError::Invalid(format!("{flag} entry {part:?}: id is not a number"))
        })?;
        validate_addr(addr.trim())?;
        if out.insert(id, addr.trim().to_owned()).is_some() {
            return Err(ConfigError::Invalid(format!(
                "{flag} names node {id} twice"
            )));
        }
    }
    Ok(out)
}

fn validate_addr(addr: &str) -> Result<(), ConfigError> {
    let ok = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "address {addr:?} is not HOST:PORT"
        )))
    }
}

impl Config {
    /// Builds the configuration from flags/env and the optional file, then validates it.
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => Args::default(),
        };
        let d = Config::default();
        // A flag (or its environment variable) wins over the file.
        macro_rules! layered {
            ($field:ident) => {
                args.$field.or(file.$field)
            };
        }
        let ms = Duration::from_millis;
        let secs = Duration::from_secs;
        let listen = layered!(listen).unwrap_or(d.listen);
        let cfg = Config {
            id: layered!(id).unwrap_or(d.id),
            listen,
            advertise: layered!(advertise).unwrap_or_else(|| listen.to_string()),
            data_dir: layered!(data_dir).unwrap_or(d.data_dir),
            initial_cluster: match layered!(initial_cluster) {
                Some(s) => parse_initial_cluster(&s)?,
                None => BTreeMap::new(),
            },
            join: args.join || file.join,
            metrics_listen: layered!(metrics_listen),
            log_format: layered!(log_format).unwrap_or(d.log_format),
            heartbeat: layered!(heartbeat_ms).map(ms).unwrap_or(d.heartbeat),
            election_timeout: layered!(election_timeout_ms)
                .map(ms)
                .unwrap_or(d.election_timeout),
            election_timeout_max: layered!(election_timeout_max_ms).map(ms),
            snapshot_logs: layered!(snapshot_logs).unwrap_or(d.snapshot_logs),
            snapshot_keep_logs: layered!(snapshot_keep_logs).unwrap_or(d.snapshot_keep_logs),
            max_token_lifetime: layered!(max_token_lifetime_secs)
                .map(secs)
                .unwrap_or(d.max_token_lifetime),
            purge_interval: layered!(purge_interval_secs)
                .map(secs)
                .unwrap_or(d.purge_interval),
            watch_window: layered!(watch_window).unwrap_or(d.watch_window),
            default_deadline: layered!(default_deadline_ms)
                .map(ms)
                .unwrap_or(d.default_deadline),
            batch_max_tokens: layered!(batch_max_tokens).unwrap_or(d.batch_max_tokens),
            peer_routes: match layered!(peer_routes) {
                Some(s) => parse_peer_routes(&s)?,
                None => BTreeMap::new(),
            },
            write_rate_limit: layered!(write_rate_limit).unwrap_or(d.write_rate_limit),
            read_rate_limit: layered!(read_rate_limit).unwrap_or(d.read_rate_limit),
            watch_stall_timeout: layered!(watch_stall_timeout_secs)
                .map(secs)
                .unwrap_or(d.watch_stall_timeout),
            max_connections: layered!(max_connections).unwrap_or(d.max_connections),
            max_connections_per_address: layered!(max_connections_per_address)
                .unwrap_or(d.max_connections_per_address),
            insecure: args.insecure || file.insecure,
            tls: match (layered!(tls_cert), layered!(tls_key), layered!(tls_ca)) {
                (None, None, None) => {
                    if layered!(admin_client_ca).is_some() {
                        return Err(ConfigError::Invalid(
                            "admin-client-ca needs TLS (tls-cert, tls-key and tls-ca): client \
                             certificates are only seen over TLS"
                                .into(),
                        ));
                    }
                    None
                }
                (Some(cert), Some(key), Some(ca)) => {
                    let admin_names: Vec<String> = layered!(admin_client_names)
                        .map(|s| {
                            s.split(',')
                                .map(str::trim)
                                .filter(|n| !n.is_empty())
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default();
                    let admin_ca = layered!(admin_client_ca);
                    if admin_ca.is_none() && !admin_names.is_empty() {
                        return Err(ConfigError::Invalid(
                            "admin-client-names needs admin-client-ca".into(),
                        ));
                    }
                    Some(TlsSettings {
                        cert,
                        key,
                        ca,
                        admin_ca,
                        admin_names,
                    })
                }
                _ => {
                    return Err(ConfigError::Invalid(
                        "tls-cert, tls-key and tls-ca go together: give all three or none".into(),
                    ))
                }
            },
            auth: match layered!(auth_key) {
                None => {
                    if layered!(auth_issuer).is_some() || layered!(auth_audience).is_some() {
                        return Err(ConfigError::Invalid(
                            "auth-issuer and auth-audience need auth-key".into(),
                        ));
                    }
                    None
                }
                Some(key_file) => {
                    let algorithm = layered!(auth_algorithm).unwrap_or_else(|| "RS256".into());
                    Some(AuthSettings {
                        key_file,
                        algorithm: algorithm.parse().map_err(|_| {
                            ConfigError::Invalid(format!(
                                "auth-algorithm {algorithm:?} is not a JWS algorithm (RS256, ES256, EdDSA, HS256, ...)"
                            ))
                        })?,
                        issuer: layered!(auth_issuer).ok_or_else(|| {
                            ConfigError::Invalid("auth-key needs auth-issuer".into())
                        })?,
                        audience: layered!(auth_audience).ok_or_else(|| {
                            ConfigError::Invalid("auth-key needs auth-audience".into())
                        })?,
                        admin_scope: layered!(auth_admin_scope)
                            .unwrap_or_else(|| "revokd:admin".into()),
                        read_scope: layered!(auth_read_scope),
                        max_token_lifetime: layered!(auth_max_token_lifetime_secs)
                            .map(secs)
                            .unwrap_or(DEFAULT_ADMIN_TOKEN_LIFETIME),
                    })
                }
            },
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.id == 0 {
            return bad("id must be at least 1".into());
        }
        validate_addr(&self.advertise)?;
        if !self.initial_cluster.is_empty() {
            if self.join {
                return bad("--join and --initial-cluster exclude each other: a joining node is added by AddLearner".into());
            }
            match self.initial_cluster.get(&self.id) {
                None => {
                    return bad(format!(
                        "initial-cluster does not name this node (id {})",
                        self.id
                    ))
                }
                Some(addr) if *addr != self.advertise => {
                    return bad(format!(
                        "initial-cluster gives node {} the address {addr}, but it advertises {}",
                        self.id, self.advertise
                    ))
                }
                Some(_) => {}
            }
        }
        if self.heartbeat.is_zero() || self.election_timeout < self.heartbeat * 3 {
            return bad(format!(
                "election timeout ({:?}) must be at least three heartbeats ({:?})",
                self.election_timeout, self.heartbeat
            ));
        }
        if let Some(max) = self.election_timeout_max {
            if max <= self.election_timeout {
                return bad(format!(
                    "election-timeout-max ({max:?}) must be above the election timeout ({:?})",
                    self.election_timeout
                ));
            }
        }
        if self.snapshot_logs == 0 {
            return bad("snapshot-logs must be at least 1".into());
        }
        if self.max_token_lifetime.is_zero() {
            return bad("max-token-lifetime-secs must be at least 1".into());
        }
        if self.purge_interval.is_zero() {
            return bad("purge-interval-secs must be at least 1".into());
        }
        if self.watch_window == 0 {
            return bad("watch-window must be at least 1".into());
        }
        if self.batch_max_tokens == 0 {
            return bad("batch-max-tokens must be at least 1".into());
        }
        if self.max_connections < 8 {
            return bad("max-connections must be at least 8 (peers hold connections too)".into());
        }
        if self.watch_stall_timeout.is_zero() {
            return bad("watch-stall-timeout-secs must be at least 1".into());
        }
        if self.default_deadline.is_zero() {
            return bad("default-deadline-ms must be at least 1".into());
        }
        if self
            .auth
            .as_ref()
            .is_some_and(|a| a.max_token_lifetime.is_zero())
        {
            return bad("auth-max-token-lifetime-secs must be at least 1".into());
        }
        self.check_transport_security()
    }

    /// Refuses settings that promise a protection plaintext cannot give. Without TLS the
    /// Raft service cannot tell peers from strangers, so any process that reaches the port
    /// can send `Vote`, `AppendEntries` or `InstallSnapshot` and install whatever state it
    /// likes: admin authorization or a read scope would then only look like protection, and
    /// a non-loopback address would offer the whole set to the network. `--insecure` allows
    /// the latter (a laptop, a private test network), never the former.
    pub fn check_transport_security(&self) -> Result<(), ConfigError> {
        if self.tls.is_some() {
            return Ok(());
        }
        let needs_tls = |what: &str| {
            Err(ConfigError::Invalid(format!(
                "{what} needs TLS (tls-cert, tls-key and tls-ca): without it any process that \
                 reaches the port can forge Raft messages and rewrite the revocation set, \
                 whatever the admins' credentials; create certificates with scripts/gen-certs.sh"
            )))
        };
        if let Some(a) = &self.auth {
            if a.read_scope.is_some() {
                return needs_tls("auth-read-scope");
            }
            return needs_tls("auth-key");
        }
        if !self.listen.ip().is_loopback() && !self.insecure {
            return Err(ConfigError::Invalid(format!(
                "listen {} is not a loopback address and TLS is off: any process that reaches \
                 it could forge Raft messages and rewrite the revocation set. Turn TLS on \
                 (tls-cert, tls-key, tls-ca; scripts/gen-certs.sh makes a development CA), or \
                 pass --insecure for a laptop or a private test network",
                self.listen
            )));
        }
        Ok(())
    }

    /// The members to found the cluster with: `initial_cluster`, or this node alone.
    pub fn founding_members(&self) -> BTreeMap<u64, String> {
        if self.initial_cluster.is_empty() {
            BTreeMap::from([(self.id, self.advertise.clone())])
        } else {
            self.initial_cluster.clone()
        }
    }
}

fn load_file(path: &Path) -> Result<Args, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_a_single_node_on_50051() {
        let c = Config::from_args(Args::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(
            c.founding_members(),
            BTreeMap::from([(1, "127.0.0.1:50051".to_string())])
        );
    }

    #[test]
    fn initial_cluster_must_name_this_node_at_its_address() {
        let args = |ic: &str| Args {
            id: Some(2),
            listen: Some("127.0.0.1:7002".parse().unwrap()),
            initial_cluster: Some(ic.into()),
            ..Args::default()
        };
        assert!(Config::from_args(args("1=127.0.0.1:7001,2=127.0.0.1:7002")).is_ok());
        let e = Config::from_args(args("1=127.0.0.1:7001,3=127.0.0.1:7003")).unwrap_err();
        assert!(e.to_string().contains("does not name this node"), "{e}");
        let e = Config::from_args(args("1=127.0.0.1:7001,2=127.0.0.1:9")).unwrap_err();
        assert!(e.to_string().contains("advertises"), "{e}");
        assert!(Config::from_args(args("1=nope")).is_err());
    }

    #[test]
    fn the_shipped_example_file_is_valid() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/revokd.toml");
        let c = Config::from_args(Args {
            config: Some(path),
            ..Args::default()
        })
        .unwrap();
        assert_eq!(c.initial_cluster.len(), 3);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.heartbeat, Duration::from_millis(100));
    }

    #[test]
    fn file_values_apply_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revokd.toml");
        std::fs::write(
            &path,
            "id = 3\nlisten = \"127.0.0.1:7003\"\nsnapshot_logs = 7\n",
        )
        .unwrap();
        let c = Config::from_args(Args {
            config: Some(path.clone()),
            snapshot_logs: Some(9),
            ..Args::default()
        })
        .unwrap();
        assert_eq!(
            (c.id, c.snapshot_logs, c.advertise.as_str()),
            (3, 9, "127.0.0.1:7003")
        );
        std::fs::write(&path, "bogus = 1\n").unwrap();
        let e = Config::from_args(Args {
            config: Some(path),
            ..Args::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }
}
