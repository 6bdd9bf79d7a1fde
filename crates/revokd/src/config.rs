//! Node configuration: every setting written once, as a field of [`Args`] with its flag, its
//! `REVOKD_*` environment variable, its TOML key (the field name), its default and what 0
//! means; [`Args::into_config`] then builds the typed, validated [`Config`] the node runs
//! with, before anything binds.
//!
//! Precedence is clap's own (a flag wins over its environment variable, which wins over the
//! default), and the config file slots in under both by becoming the defaults: each key it
//! sets replaces that flag's default before the command line is parsed. So no setting needs
//! a merge of its own, and `--help` still shows the built-in defaults.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};
use serde::Deserialize;

use crate::consensus::Timing;

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The settings as given. Each is a flag, an environment variable and a key of the TOML file
/// (`--config`); its default is its `default_value` (which `--help` shows) or, for one that
/// is off or derived when unset, stated in its documentation. [`Args::default`] is what an
/// empty command line, without environment or file, gives.
#[derive(Clone, Debug, Parser, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[command(
    name = "revokd",
    version,
    about = "A node of a Raft-replicated JWT revocation cluster."
)]
pub struct Args {
    /// Optional TOML file with the same keys as the flags (snake_case); flags and environment
    /// variables win over it.
    #[arg(long, env = "REVOKD_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// This node's id, unique in the cluster and never reused; 0 is invalid.
    #[arg(long, env = "REVOKD_ID", default_value_t = 1)]
    pub id: u64,
    /// Where the gRPC server (public API, health, reflection and Raft) listens.
    #[arg(long, env = "REVOKD_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// The address other nodes and clients use to reach this node. [default: --listen]
    #[arg(long, env = "REVOKD_ADVERTISE")]
    pub advertise: Option<String>,
    /// Directory for the log and snapshots.
    #[arg(long, env = "REVOKD_DATA_DIR", default_value = "revokd-data")]
    pub data_dir: PathBuf,
    /// The founding members, `1=127.0.0.1:7001,2=127.0.0.1:7002,...`; ignored once the node
    /// has state on disk. [default: this node alone]
    #[arg(long, env = "REVOKD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Start empty and wait to be added with AddLearner instead of founding a cluster.
    #[arg(long, env = "REVOKD_JOIN")]
    pub join: bool,
    /// Serve Prometheus metrics over plain HTTP on this address (`/metrics`). [default: off]
    #[arg(long, env = "REVOKD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Log format (the level is set by `REVOKD_LOG`).
    #[arg(long, env = "REVOKD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The largest round trip between this cluster's nodes (voters and learners, jitter
    /// included) in milliseconds, as measured (ping, or `revokd_peer_rtt_seconds` of a
    /// running node): `--heartbeat-ms` and `--election-timeout-ms` then default to what the
    /// timing rule derives from it (README, "Timing"). [default: one region]
    #[arg(long, env = "REVOKD_MAX_PEER_RTT_MS")]
    pub max_peer_rtt_ms: Option<u64>,
    /// Raft heartbeat interval in milliseconds, which is also the time openraft allows one
    /// AppendEntries (send, store, flush); 0 is invalid. [default: 100, or the timing rule's
    /// for --max-peer-rtt-ms]
    #[arg(long, env = "REVOKD_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// Minimum election timeout in milliseconds; at least two and a half heartbeats.
    /// [default: 300, or the timing rule's for --max-peer-rtt-ms]
    #[arg(long, env = "REVOKD_ELECTION_TIMEOUT_MS")]
    pub election_timeout_ms: Option<u64>,
    /// Maximum election timeout in milliseconds (exclusive; above the minimum): every
    /// campaign draws a fresh timeout uniformly in between, so split votes rarely repeat.
    /// [default: twice the minimum, or the timing rule's for --max-peer-rtt-ms]
    #[arg(long, env = "REVOKD_ELECTION_TIMEOUT_MAX_MS")]
    pub election_timeout_max_ms: Option<u64>,
    /// Build a snapshot and compact the log after this many entries; 0 is invalid.
    #[arg(long, env = "REVOKD_SNAPSHOT_LOGS", default_value_t = 20_000)]
    pub snapshot_logs: u64,
    /// Log entries kept behind a snapshot, so a briefly lagging follower catches up from the
    /// log instead of a full snapshot; 0 compacts everything a snapshot covers.
    #[arg(long, env = "REVOKD_SNAPSHOT_KEEP_LOGS", default_value_t = 1_000)]
    pub snapshot_keep_logs: u64,
    /// The longest lifetime a token may have, in seconds (the default is 30 days):
    /// revocations further out are refused and rules are kept this long; 0 is invalid.
    #[arg(long, env = "REVOKD_MAX_TOKEN_LIFETIME_SECS",
          default_value_t = revokd_core::DEFAULT_MAX_TOKEN_LIFETIME_SECS as u64)]
    pub max_token_lifetime_secs: u64,
    /// Seconds between the leader's purges of expired entries; 0 is invalid.
    #[arg(long, env = "REVOKD_PURGE_INTERVAL_SECS", default_value_t = 10)]
    pub purge_interval_secs: u64,
    /// Recent change events each node keeps for Watch to resume from; 0 is invalid.
    #[arg(long, env = "REVOKD_WATCH_WINDOW", default_value_t = 100_000)]
    pub watch_window: usize,
    /// Deadline in milliseconds of a request without `grpc-timeout`; 0 is invalid.
    #[arg(long, env = "REVOKD_DEFAULT_DEADLINE_MS", default_value_t = 5_000)]
    pub default_deadline_ms: u64,
    /// Most tokens the leader coalesces from concurrent requests into one log entry; 1 puts
    /// every request in its own entry (disables batching), 0 is invalid.
    #[arg(long, env = "REVOKD_BATCH_MAX_TOKENS", default_value_t = revokd_core::MAX_BATCH)]
    pub batch_max_tokens: usize,
    /// Dial these addresses for these peers instead of what they advertise, for Raft traffic,
    /// forwarded writes and read-index calls: `2=127.0.0.1:9102,3=127.0.0.1:9103` (NAT, a
    /// sidecar proxy, the chaos harness's link proxies). [default: none]
    #[arg(long, env = "REVOKD_PEER_ROUTES")]
    pub peer_routes: Option<String>,
    /// Writes (revokes, rules, membership changes, snapshot triggers) per second each client
    /// may make at this node, with a burst of one second's worth; over it, RESOURCE_EXHAUSTED
    /// with a retry hint. A client is the admin its credential proves (token `sub` or
    /// certificate name), else its IP address; Raft traffic, health checks and writes a peer
    /// forwards are not limited. 0 is unlimited.
    #[arg(long, env = "REVOKD_WRITE_RATE_LIMIT", default_value_t = 0)]
    pub write_rate_limit: u32,
    /// Reads (checks, snapshots, watches, status) per second each client may make at this
    /// node, counted as for --write-rate-limit; 0 is unlimited.
    #[arg(long, env = "REVOKD_READ_RATE_LIMIT", default_value_t = 0)]
    pub read_rate_limit: u32,
    /// Turn admin authorization on (needs TLS): writes and membership changes need a bearer
    /// JWT verified with this key, a PEM public key (RS*, PS*, ES*, EdDSA) or a file holding
    /// the HMAC secret (HS*, at least 32 bytes). [default: off, every call is open]
    #[arg(long, env = "REVOKD_AUTH_KEY")]
    pub auth_key: Option<PathBuf>,
    /// The one algorithm admin tokens must use.
    #[arg(long, env = "REVOKD_AUTH_ALGORITHM", default_value = "RS256")]
    pub auth_algorithm: String,
    /// Required `iss` of admin tokens (required with --auth-key).
    #[arg(long, env = "REVOKD_AUTH_ISSUER")]
    pub auth_issuer: Option<String>,
    /// Required `aud` of admin tokens (required with --auth-key).
    #[arg(long, env = "REVOKD_AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,
    /// Scope (in `scope` or `scp`) writes and membership changes need.
    #[arg(long, env = "REVOKD_AUTH_ADMIN_SCOPE", default_value = "revokd:admin")]
    pub auth_admin_scope: String,
    /// Scope reads and watches need. [default: none, reads are open]
    #[arg(long, env = "REVOKD_AUTH_READ_SCOPE")]
    pub auth_read_scope: Option<String>,
    /// Longest lifetime an admin token may have, in seconds (`exp` minus `iat`, or minus now
    /// without `iat`; the default is 24 hours): a leaked token is useful for at most this
    /// long; 0 is invalid.
    #[arg(long, env = "REVOKD_AUTH_MAX_TOKEN_LIFETIME_SECS", default_value_t = 24 * 3600)]
    pub auth_max_token_lifetime_secs: u64,
    /// Seconds a Watch stream may go unread while changes wait before it is ended, so a
    /// stalled watcher holds neither memory nor a task; 0 is invalid.
    #[arg(long, env = "REVOKD_WATCH_STALL_TIMEOUT_SECS", default_value_t = 30)]
    pub watch_stall_timeout_secs: u64,
    /// This node's PEM certificate chain, issued by the cluster CA: turns TLS for clients and
    /// peers on, with --tls-key and --tls-ca. [default: off, plaintext]
    #[arg(long, env = "REVOKD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "REVOKD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA's PEM certificate: peers must present a certificate it issued.
    #[arg(long, env = "REVOKD_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// The PEM certificate of a CA (not the cluster CA) issuing admins' client certificates:
    /// a client presenting one is an admin (writes, membership and reads) without a bearer
    /// token. Needs TLS. [default: none, admins use bearer tokens]
    #[arg(long, env = "REVOKD_ADMIN_CLIENT_CA")]
    pub admin_client_ca: Option<PathBuf>,
    /// Comma-separated names (certificate CN, else its first DNS or e-mail SAN) allowed as
    /// admins by --admin-client-ca. [default: any certificate that CA issued]
    #[arg(long, env = "REVOKD_ADMIN_CLIENT_NAMES")]
    pub admin_client_names: Option<String>,
    /// Most connections open at once (clients, watchers and peers together), at least 8; more
    /// are closed as they are accepted. With TLS on, a quarter of them (at most 64) are kept
    /// for peers: a connection given one is closed on its first call unless it is a peer, or
    /// after 5 s without a call. A connection that sends nothing for 10 s is closed, and so
    /// is one that has not finished its TLS handshake and sent the HTTP/2 preface 10 s after
    /// its first byte.
    #[arg(long, env = "REVOKD_MAX_CONNECTIONS", default_value_t = 4_096)]
    pub max_connections: usize,
    /// Most connections from one client address; 0 is no cap. With TLS on, one more is let
    /// into the peers' slots and closed on its first call unless it is a peer; without TLS it
    /// is closed at once.
    #[arg(
        long,
        env = "REVOKD_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 1_024
    )]
    pub max_connections_per_address: usize,
    /// Allow listening on a non-loopback address without TLS. Anyone who reaches the port can
    /// then forge Raft traffic and rewrite the revocation set, so the node warns at start and
    /// exports `revokd_insecure 1`: for a laptop or a private test network only. Loopback
    /// needs no TLS either way; admin authorization needs it even so.
    #[arg(long, env = "REVOKD_INSECURE")]
    pub insecure: bool,
}

/// A validated node configuration: the typed view of [`Args`], where each setting is
/// documented with its default. Each field is the flag it names.
#[derive(Clone, Debug)]
pub struct Config {
    /// `--id`.
    pub id: u64,
    /// `--listen`.
    pub listen: SocketAddr,
    /// `--advertise`, else `listen`.
    pub advertise: String,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// `--initial-cluster`, id to address; empty: this node alone
    /// ([`Config::founding_members`]).
    pub initial_cluster: BTreeMap<u64, String>,
    /// `--join`.
    pub join: bool,
    /// `--metrics-listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// `--log-format`.
    pub log_format: LogFormat,
    /// `--heartbeat-ms`.
    pub heartbeat: Duration,
    /// `--election-timeout-ms`.
    pub election_timeout: Duration,
    /// `--election-timeout-max-ms` (or the timing rule's); `None`: twice the minimum (see
    /// [`Config::election_timeout_max`]).
    pub election_timeout_max: Option<Duration>,
    /// `--snapshot-logs`.
    pub snapshot_logs: u64,
    /// `--snapshot-keep-logs`.
    pub snapshot_keep_logs: u64,
    /// `--max-token-lifetime-secs`.
    pub max_token_lifetime: Duration,
    /// `--purge-interval-secs`.
    pub purge_interval: Duration,
    /// `--watch-window`.
    pub watch_window: usize,
    /// `--default-deadline-ms`.
    pub default_deadline: Duration,
    /// `--batch-max-tokens`.
    pub batch_max_tokens: usize,
    /// `--peer-routes`, peer id to the address to dial.
    pub peer_routes: BTreeMap<u64, String>,
    /// `--write-rate-limit`; 0 is unlimited.
    pub write_rate_limit: u32,
    /// `--read-rate-limit`; 0 is unlimited.
    pub read_rate_limit: u32,
    /// `--auth-*`; `None` (every call open) without `--auth-key`.
    pub auth: Option<AuthSettings>,
    /// `--watch-stall-timeout-secs`.
    pub watch_stall_timeout: Duration,
    /// `--tls-*` and `--admin-client-*`; `None`: plaintext.
    pub tls: Option<TlsSettings>,
    /// `--max-connections`.
    pub max_connections: usize,
    /// `--max-connections-per-address`; 0 is no cap.
    pub max_connections_per_address: usize,
    /// `--insecure`.
    pub insecure: bool,
}

/// The node's certificate, key and the cluster CA (see `network::tls`).
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// `--tls-cert`.
    pub cert: PathBuf,
    /// `--tls-key`.
    pub key: PathBuf,
    /// `--tls-ca`.
    pub ca: PathBuf,
    /// `--admin-client-ca`, which differs from the cluster CA.
    pub admin_ca: Option<PathBuf>,
    /// `--admin-client-names`; empty: every certificate of the admin CA.
    pub admin_names: Vec<String>,
}

/// How the node verifies admins' bearer JWTs (see `api::auth`).
#[derive(Clone, Debug)]
pub struct AuthSettings {
    /// `--auth-key`.
    pub key_file: PathBuf,
    /// `--auth-algorithm`.
    pub algorithm: jsonwebtoken::Algorithm,
    /// `--auth-issuer`.
    pub issuer: String,
    /// `--auth-audience`.
    pub audience: String,
    /// `--auth-admin-scope`.
    pub admin_scope: String,
    /// `--auth-read-scope`; `None`: reads are open.
    pub read_scope: Option<String>,
    /// `--auth-max-token-lifetime-secs`.
    pub max_token_lifetime: Duration,
}

/// A configuration that cannot be used. The message says which setting and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The command line is not valid, or asked for `--help` or `--version`:
    /// [`clap::Error::exit`] prints it and exits as a command-line program should.
    #[error("{0}")]
    Flags(#[from] clap::Error),
    /// The config file could not be read.
    #[error("config: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for [`Args`].
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

/// The largest `--max-peer-rtt-ms` taken.
const MAX_PEER_RTT: Duration = Duration::from_secs(10);

impl Default for Args {
    /// The built-in defaults: no flags, no environment, no file.
    fn default() -> Self {
        let command = Args::command().mut_args(|a| a.env(None::<&str>));
        Args::from_arg_matches(&command.get_matches_from(["revokd"]))
            .expect("the built-in defaults parse")
    }
}

impl Default for Config {
    /// What a node started without flags, environment or file runs with.
    fn default() -> Self {
        Args::default()
            .into_config()
            .expect("the built-in defaults are valid")
    }
}

impl Args {
    /// Parses `argv` (program name first) and the environment over the file it names, if
    /// any: each key the file sets becomes that flag's default.
    pub fn parse_layered<I, T>(argv: I) -> Result<Args, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
        let mut command = Args::command();
        let given = Args::from_arg_matches(&command.clone().try_get_matches_from(&argv)?)?;
        if let Some(path) = &given.config {
            for (key, value) in load_file(path)? {
                let value = value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned);
                command = command.mut_arg(key, |a| a.default_value(value));
            }
        }
        Ok(Args::from_arg_matches(
            &command.try_get_matches_from(&argv)?,
        )?)
    }

    /// Builds the typed configuration and validates it.
    pub fn into_config(mut self) -> Result<Config, ConfigError> {
        let (ms, secs) = (Duration::from_millis, Duration::from_secs);
        let initial_cluster = match &self.initial_cluster {
            Some(s) => parse_initial_cluster(s)?,
            None => BTreeMap::new(),
        };
        let peer_routes = match &self.peer_routes {
            Some(s) => parse_peer_routes(s)?,
            None => BTreeMap::new(),
        };
        let tls = self.tls_settings()?;
        let auth = self.auth_settings()?;
        let rtt = ms(self.max_peer_rtt_ms.unwrap_or(0));
        if rtt > MAX_PEER_RTT {
            return Err(ConfigError::Invalid(format!(
                "max-peer-rtt-ms ({rtt:?}) is over {MAX_PEER_RTT:?}: Raft cannot keep a leader across such round trips; check the measurement (milliseconds)"
            )));
        }
        let timing = Timing::for_rtt(rtt);
        let config = Config {
            id: self.id,
            listen: self.listen,
            advertise: self.advertise.unwrap_or_else(|| self.listen.to_string()),
            data_dir: self.data_dir,
            initial_cluster,
            join: self.join,
            metrics_listen: self.metrics_listen,
            log_format: self.log_format,
            heartbeat: self.heartbeat_ms.map_or(timing.heartbeat, ms),
            election_timeout: self.election_timeout_ms.map_or(timing.election_timeout, ms),
            // The rule's range only goes with the rule's minimum: a minimum given by hand keeps
            // the default range, twice it.
            election_timeout_max: match (self.election_timeout_max_ms, self.election_timeout_ms) {
                (Some(max), _) => Some(ms(max)),
                (None, None) => timing.election_timeout_max,
                (None, Some(_)) => None,
            },
            snapshot_logs: self.snapshot_logs,
            snapshot_keep_logs: self.snapshot_keep_logs,
            max_token_lifetime: secs(self.max_token_lifetime_secs),
            purge_interval: secs(self.purge_interval_secs),
            watch_window: self.watch_window,
            default_deadline: ms(self.default_deadline_ms),
            batch_max_tokens: self.batch_max_tokens,
            peer_routes,
            write_rate_limit: self.write_rate_limit,
            read_rate_limit: self.read_rate_limit,
            auth,
            watch_stall_timeout: secs(self.watch_stall_timeout_secs),
            tls,
            max_connections: self.max_connections,
            max_connections_per_address: self.max_connections_per_address,
            insecure: self.insecure,
        };
        config.validate()?;
        Ok(config)
    }

    /// The TLS settings: all three files or none; admin certificates need TLS.
    fn tls_settings(&mut self) -> Result<Option<TlsSettings>, ConfigError> {
        let invalid = |m: &str| ConfigError::Invalid(m.to_owned());
        Ok(
            match (
                self.tls_cert.take(),
                self.tls_key.take(),
                self.tls_ca.take(),
            ) {
                (None, None, None) if self.admin_client_ca.is_some() => {
                    return Err(invalid(
                        "admin-client-ca needs TLS (tls-cert, tls-key and tls-ca): client \
                     certificates are only seen over TLS",
                    ))
                }
                (None, None, None) => None,
                (Some(cert), Some(key), Some(ca)) => {
                    let admin_names: Vec<String> = self
                        .admin_client_names
                        .as_deref()
                        .unwrap_or_default()
                        .split(',')
                        .map(str::trim)
                        .filter(|n| !n.is_empty())
                        .map(str::to_owned)
                        .collect();
                    if self.admin_client_ca.is_none() && !admin_names.is_empty() {
                        return Err(invalid("admin-client-names needs admin-client-ca"));
                    }
                    Some(TlsSettings {
                        cert,
                        key,
                        ca,
                        admin_ca: self.admin_client_ca.take(),
                        admin_names,
                    })
                }
                _ => {
                    return Err(invalid(
                        "tls-cert, tls-key and tls-ca go together: give all three or none",
                    ))
                }
            },
        )
    }

    /// The admin-token settings: a key turns them on, and then needs an issuer and audience.
    fn auth_settings(&mut self) -> Result<Option<AuthSettings>, ConfigError> {
        let invalid = |m: &str| ConfigError::Invalid(m.to_owned());
        let secs = Duration::from_secs;
        Ok(match self.auth_key.take() {
            None if self.auth_issuer.is_some() || self.auth_audience.is_some() => {
                return Err(invalid("auth-issuer and auth-audience need auth-key"))
            }
            None => None,
            Some(key_file) => Some(AuthSettings {
                key_file,
                algorithm: self.auth_algorithm.parse().map_err(|_| {
                    ConfigError::Invalid(format!(
                        "auth-algorithm {:?} is not a JWS algorithm (RS256, ES256, EdDSA, HS256, ...)",
                        self.auth_algorithm
                    ))
                })?,
                issuer: self.auth_issuer.take().ok_or_else(|| invalid("auth-key needs auth-issuer"))?,
                audience: self.auth_audience.take()
                    .ok_or_else(|| invalid("auth-key needs auth-audience"))?,
                admin_scope: std::mem::take(&mut self.auth_admin_scope),
                read_scope: self.auth_read_scope.take(),
                max_token_lifetime: secs(self.auth_max_token_lifetime_secs),
            }),
        })
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
        if id == 0 {
            return Err(ConfigError::Invalid(format!(
                "{flag} entry {part:?}: node ids start at 1"
            )));
        }
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

/// Reads a config file: checked against [`Args`] (unknown keys, wrong types), then returned
/// as its table of keys.
fn load_file(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let parse_error = |e: toml::de::Error| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    toml::from_str::<Args>(&text).map_err(parse_error)?;
    toml::from_str(&text).map_err(parse_error)
}

impl Config {
    /// The upper end (exclusive) of the range every campaign draws its election timeout
    /// from: `--election-timeout-max-ms`, or twice the minimum. A range as wide as the
    /// minimum makes two candidates timing out within a round trip of each other rare.
    pub fn election_timeout_max(&self) -> Duration {
        self.election_timeout_max
            .unwrap_or(self.election_timeout * 2)
    }

    /// Builds the configuration from the command line `argv` (program name first), the
    /// `REVOKD_*` environment and the optional file, then validates it.
    pub fn from_args<I, T>(argv: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        Args::parse_layered(argv)?.into_config()
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
        if self.heartbeat.is_zero() || self.election_timeout * 2 < self.heartbeat * 5 {
            return bad(format!(
                "election timeout ({:?}) must be at least two and a half heartbeats ({:?})",
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
        let at_least_one = [
            ("snapshot-logs", self.snapshot_logs == 0),
            ("max-token-lifetime-secs", self.max_token_lifetime.is_zero()),
            ("purge-interval-secs", self.purge_interval.is_zero()),
            ("watch-window", self.watch_window == 0),
            ("batch-max-tokens", self.batch_max_tokens == 0),
            (
                "watch-stall-timeout-secs",
                self.watch_stall_timeout.is_zero(),
            ),
            ("default-deadline-ms", self.default_deadline.is_zero()),
            (
                "auth-max-token-lifetime-secs",
                (self.auth.as_ref()).is_some_and(|a| a.max_token_lifetime.is_zero()),
            ),
        ];
        if let Some((setting, _)) = at_least_one.iter().find(|(_, zero)| *zero) {
            return bad(format!("{setting} must be at least 1"));
        }
        if self.max_connections < 8 {
            return bad("max-connections must be at least 8 (peers hold connections too)".into());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{handshake, incoming};

    fn config(flags: &[&str]) -> Result<Config, ConfigError> {
        Config::from_args(std::iter::once("revokd").chain(flags.iter().copied()))
    }

    #[test]
    fn the_flags_are_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults_are_a_single_node_on_50051() {
        let c = config(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(
            c.founding_members(),
            BTreeMap::from([(1, "127.0.0.1:50051".to_string())])
        );
        let d = Config::default();
        assert_eq!(
            (
                d.heartbeat,
                d.election_timeout,
                d.snapshot_logs,
                d.batch_max_tokens
            ),
            (
                Duration::from_millis(100),
                Duration::from_millis(300),
                20_000,
                10_000
            )
        );
        assert!(d.tls.is_none() && d.auth.is_none() && !d.insecure);
    }

    #[test]
    fn the_connection_limits_are_as_documented() {
        // `--max-connections` states these figures in its help.
        assert_eq!(incoming::peer_reserve(4_096), 64);
        assert_eq!(incoming::peer_reserve(100), 25);
        assert_eq!(incoming::PROBATION_TIMEOUT, Duration::from_secs(5));
        assert_eq!(incoming::FIRST_BYTE_TIMEOUT, Duration::from_secs(10));
        assert_eq!(handshake::OPENING_TIMEOUT, Duration::from_secs(10));
    }

    #[test]
    fn initial_cluster_must_name_this_node_at_its_address() {
        let with = |ic: &str| {
            config(&[
                "--id",
                "2",
                "--listen",
                "127.0.0.1:7002",
                "--initial-cluster",
                ic,
            ])
        };
        assert!(with("1=127.0.0.1:7001,2=127.0.0.1:7002").is_ok());
        let e = with("1=127.0.0.1:7001,3=127.0.0.1:7003").unwrap_err();
        assert!(e.to_string().contains("does not name this node"), "{e}");
        let e = with("1=127.0.0.1:7001,2=127.0.0.1:9").unwrap_err();
        assert!(e.to_string().contains("advertises"), "{e}");
        assert!(with("1=nope").is_err());
        let e = with("0=127.0.0.1:7001,2=127.0.0.1:7002").unwrap_err();
        assert!(e.to_string().contains("node ids start at 1"), "{e}");
    }

    #[test]
    fn timing_follows_the_round_trip_unless_given() {
        let c = |args: &[&str]| config(&[&["--listen", "127.0.0.1:7001"], args].concat());
        let d = c(&[]).unwrap();
        assert_eq!(
            (d.heartbeat, d.election_timeout),
            (Duration::from_millis(100), Duration::from_millis(300))
        );
        let far = c(&["--max-peer-rtt-ms", "200"]).unwrap();
        assert_eq!(far.heartbeat, Duration::from_millis(270));
        assert_eq!(far.election_timeout, Duration::from_millis(680));
        assert_eq!(far.election_timeout_max(), Duration::from_millis(950));
        let given = c(&["--max-peer-rtt-ms", "200", "--election-timeout-ms", "1000"]).unwrap();
        assert_eq!(given.heartbeat, Duration::from_millis(270));
        assert_eq!(given.election_timeout, Duration::from_millis(1000));
        // A minimum given by hand keeps the default range (the rule's would be below it).
        assert_eq!(given.election_timeout_max(), Duration::from_millis(2000));
        let e = c(&["--max-peer-rtt-ms", "60000"]).unwrap_err();
        assert!(e.to_string().contains("max-peer-rtt-ms"), "{e}");
        // A given heartbeat too long for the derived timeout is refused, not silently kept.
        let e = c(&["--max-peer-rtt-ms", "200", "--heartbeat-ms", "400"]).unwrap_err();
        assert!(e.to_string().contains("two and a half heartbeats"), "{e}");
    }

    #[test]
    fn the_shipped_example_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/revokd.toml");
        let c = config(&["--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(c.initial_cluster.len(), 3);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.heartbeat, Duration::from_millis(100));
        assert_eq!(c.auth.unwrap().issuer, "https://login.example.com/");
    }

    #[test]
    fn file_values_apply_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revokd.toml");
        std::fs::write(
            &path,
            "id = 3\nlisten = \"127.0.0.1:7003\"\nsnapshot_logs = 7\njoin = true\n",
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let c = config(&["--config", file, "--snapshot-logs", "9"]).unwrap();
        assert_eq!(
            (c.id, c.snapshot_logs, c.advertise.as_str(), c.join),
            (3, 9, "127.0.0.1:7003", true)
        );
        std::fs::write(&path, "bogus = 1\n").unwrap();
        let e = config(&["--config", file]).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        std::fs::write(&path, "id = \"three\"\n").unwrap();
        let e = config(&["--config", file]).unwrap_err();
        assert!(e.to_string().contains("revokd.toml"), "{e}");
    }

    #[test]
    fn the_environment_wins_over_the_file_and_flags_over_both() {
        // Only this test sets the variable, and no other test looks at the watch window.
        std::env::set_var("REVOKD_WATCH_WINDOW", "7");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revokd.toml");
        std::fs::write(&path, "watch_window = 5\npurge_interval_secs = 3\n").unwrap();
        let file = path.to_str().unwrap();
        let c = config(&["--config", file]).unwrap();
        assert_eq!(
            (c.watch_window, c.purge_interval),
            (7, Duration::from_secs(3))
        );
        let c = config(&["--config", file, "--watch-window", "9"]).unwrap();
        assert_eq!(c.watch_window, 9);
        std::env::remove_var("REVOKD_WATCH_WINDOW");
    }
}
