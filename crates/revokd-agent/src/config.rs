//! The agent's configuration: every setting is a field of [`Args`] with its flag, its
//! `REVOKD_AGENT_*` (or, for the cluster connection, revokctl's `REVOKD_*`) environment
//! variable, its TOML key (the field name) and its default; [`Args::into_config`] builds the
//! checked [`Config`] before anything binds or dials.
//!
//! Precedence is the node's: a flag wins over its environment variable, which wins over the
//! config file, which wins over the built-in default (the file's keys become the flags'
//! defaults, so `--help` still shows the built-in ones). The file may also hold any number of
//! `[[issuers]]` tables, each an issuer with its own audience and keys; the `--issuer` flags
//! describe one more.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};
use http::HeaderName;
use revokd_client::{Algorithm, ClientConfig, ClientTls, ReplicaConfig, StalenessPolicy};
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

/// The settings as given: flags, environment variables and keys of the TOML file.
#[derive(Clone, Debug, Parser, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[command(
    name = "revokd-agent",
    version,
    about = "Revocation-aware JWT validation next to a service: forward-auth for nginx, Caddy \
             and Traefik, Envoy ext_authz, and revokd's Check answered from a local replica."
)]
pub struct Args {
    /// Optional TOML file with the same keys as the flags (snake_case), plus `[[issuers]]`
    /// tables; flags and environment variables win over it.
    #[arg(long, env = "REVOKD_AGENT_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    // ---- the cluster ----
    /// Nodes of the cluster (host:port, comma-separated); the rest are learned from them.
    #[arg(
        long,
        env = "REVOKD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
    )]
    pub endpoints: Vec<String>,
    /// Bearer JWT with the cluster's read scope, for a cluster started with --auth-key.
    /// Visible in `ps`: prefer --token-file or REVOKD_TOKEN.
    #[arg(long, env = "REVOKD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the cluster bearer JWT from this file (surrounding whitespace ignored).
    #[arg(long, env = "REVOKD_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// Send the token over plaintext to a non-loopback address: only on a network you trust.
    #[arg(long, env = "REVOKD_AGENT_ALLOW_PLAINTEXT_TOKEN")]
    pub allow_plaintext_token: bool,
    /// The cluster CA's PEM certificate: talk TLS to nodes started with --tls-cert.
    #[arg(long, env = "REVOKD_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// A PEM client certificate to present to the nodes (with --tls-key).
    #[arg(long, env = "REVOKD_AGENT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM key of --tls-cert.
    #[arg(long, env = "REVOKD_AGENT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The name to verify in the nodes' certificates instead of the host dialed.
    #[arg(long, env = "REVOKD_AGENT_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
    /// How long the replica may go without being known up to date before --fail-open
    /// decides (e.g. 5s, 500ms).
    #[arg(long, env = "REVOKD_AGENT_MAX_STALENESS", default_value = "5s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub max_staleness: Duration,
    /// Past --max-staleness, accept tokens that pass every other check (flagged in the
    /// `X-Revokd-Stale` header) instead of answering 503. Off: fail closed.
    #[arg(long, env = "REVOKD_AGENT_FAIL_OPEN")]
    pub fail_open: bool,
    /// Names this agent's replica in the nodes' `Status`. [default: <host>-<pid>-<random>]
    #[arg(long, env = "REVOKD_AGENT_REPLICA_ID")]
    pub replica_id: Option<String>,

    // ---- listeners ----
    /// Where forward-auth (`/auth`), `/healthz`, `/readyz` and `/metrics` are served (HTTP/1.1).
    #[arg(
        long,
        env = "REVOKD_AGENT_HTTP_LISTEN",
        default_value = "127.0.0.1:8181"
    )]
    pub http_listen: SocketAddr,
    /// Serve the HTTP endpoints on this Unix socket instead of --http-listen.
    #[arg(long, env = "REVOKD_AGENT_HTTP_SOCKET")]
    pub http_socket: Option<PathBuf>,
    /// Where Envoy ext_authz v3 and the local `revokd.v1.Revocation` Check/CheckBatch are
    /// served (gRPC, plaintext: keep it on loopback or a pod's own network).
    #[arg(
        long,
        env = "REVOKD_AGENT_GRPC_LISTEN",
        default_value = "127.0.0.1:8182"
    )]
    pub grpc_listen: SocketAddr,
    /// How long SIGTERM waits for requests in flight before exiting (e.g. 10s).
    #[arg(long, env = "REVOKD_AGENT_DRAIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub drain_timeout: Duration,

    // ---- one issuer from flags (more in the file's [[issuers]]) ----
    /// The issuer (`iss`) tokens must carry. Without --jwks-url, --jwks-file or --key, its
    /// keys come from OIDC discovery: `<issuer>/.well-known/openid-configuration`.
    #[arg(long, env = "REVOKD_AGENT_ISSUER")]
    pub issuer: Option<String>,
    /// An audience (`aud`) the tokens of --issuer must name (comma-separated for several).
    #[arg(long, env = "REVOKD_AGENT_AUDIENCE", value_delimiter = ',')]
    pub audience: Vec<String>,
    /// The JWK set of --issuer, over HTTPS (HTTP only on loopback).
    #[arg(long, env = "REVOKD_AGENT_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// The JWK set of --issuer, from a file (read again on SIGHUP).
    #[arg(long, env = "REVOKD_AGENT_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// A public key of --issuer, `ALG:PATH` or `ALG:PATH:KID` (PEM or DER; repeat or
    /// comma-separate for several), e.g. `ES256:/etc/keys/idp.pem:k1`.
    #[arg(long = "key", env = "REVOKD_AGENT_KEYS", value_delimiter = ',')]
    #[serde(rename = "key")]
    pub keys: Vec<String>,

    // ---- validation and answers ----
    /// A claim to pass upstream as a request header, `CLAIM=Header-Name` (repeat or
    /// comma-separate). Arrays are joined with spaces.
    #[arg(
        long = "claim-header",
        env = "REVOKD_AGENT_CLAIM_HEADERS",
        value_delimiter = ',',
        default_value = "sub=X-User-Id,iss=X-User-Issuer,scope=X-User-Scopes"
    )]
    #[serde(rename = "claim_header")]
    pub claim_headers: Vec<String>,
    /// Allowed clock skew for exp, nbf and iat (at most 5m).
    #[arg(long, env = "REVOKD_AGENT_LEEWAY", default_value = "30s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub leeway: Duration,
    /// Longest token accepted, in bytes.
    #[arg(long, env = "REVOKD_AGENT_MAX_TOKEN_LEN", default_value_t = 8192)]
    pub max_token_len: usize,
    /// Accept tokens without a `jti` (they can then be revoked only by rule).
    #[arg(long, env = "REVOKD_AGENT_ALLOW_MISSING_JTI")]
    pub allow_missing_jti: bool,

    // ---- remote key sets ----
    /// How long a fetched key set is used when its response has no cache lifetime.
    #[arg(long, env = "REVOKD_AGENT_JWKS_REFRESH", default_value = "5m", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub jwks_refresh: Duration,
    /// The shortest time between two fetches of one key set: bounds refetches on an unknown
    /// `kid` and short cache lifetimes.
    #[arg(long, env = "REVOKD_AGENT_JWKS_MIN_REFRESH", default_value = "30s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub jwks_min_refresh: Duration,
    /// The longest a fetched key set is used before it is fetched again, whatever its cache
    /// lifetime says.
    #[arg(long, env = "REVOKD_AGENT_JWKS_MAX_REFRESH", default_value = "24h", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub jwks_max_refresh: Duration,
    /// A PEM CA to trust for key-set and discovery URLs, besides the system's roots.
    #[arg(long, env = "REVOKD_AGENT_JWKS_CA")]
    pub jwks_ca: Option<PathBuf>,

    // ---- logs ----
    /// Log format (the level is set by `REVOKD_AGENT_LOG`, default `info`).
    #[arg(long, env = "REVOKD_AGENT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Issuers from the file's `[[issuers]]` tables (no flag).
    #[arg(skip)]
    #[serde(skip)]
    pub issuers: Vec<IssuerSpec>,
}

/// One issuer as the file's `[[issuers]]` table gives it; the flags give one more.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSpec {
    /// The `iss` value.
    pub issuer: String,
    /// The audiences, one of which tokens must name. Empty: tokens must carry no `aud`.
    #[serde(default)]
    pub audience: Vec<String>,
    /// A JWK set URL.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// A JWK set file.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Public keys, `ALG:PATH[:KID]`.
    #[serde(default)]
    pub keys: Vec<String>,
}

/// Deserializes a duration written as humantime text (`"5s"`), as the flags take it.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

impl Default for Args {
    /// The built-in defaults: no flags, no environment, no file.
    fn default() -> Self {
        let command = Args::command().mut_args(|a| a.env(None::<&str>));
        Args::from_arg_matches(&command.get_matches_from(["revokd-agent"]))
            .expect("the built-in defaults parse")
    }
}

/// A configuration that cannot be used; the message says which setting and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Bad flags (clap's own message, with usage).
    #[error(transparent)]
    Cli(#[from] clap::Error),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for these settings.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A setting's value is unusable.
    #[error("{setting}: {message}")]
    Invalid {
        /// The flag or key.
        setting: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
}

fn invalid(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        message: message.into(),
    }
}

/// Where one issuer's keys come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// Public keys from files, each bound to its algorithm.
    Files(Vec<KeyFile>),
    /// A JWK set in a file.
    JwksFile(PathBuf),
    /// A JWK set fetched over HTTP(S).
    JwksUrl(String),
    /// The `jwks_uri` of the issuer's OIDC discovery document.
    Discovery,
}

/// One `ALG:PATH[:KID]` key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFile {
    /// The one algorithm the key verifies.
    pub alg: Algorithm,
    /// The PEM or DER file.
    pub path: PathBuf,
    /// Its `kid`, if tokens name one.
    pub kid: Option<String>,
}

/// One issuer, checked.
#[derive(Clone, Debug)]
pub struct Issuer {
    /// The `iss` value tokens must carry.
    pub issuer: String,
    /// Accepted audiences.
    pub audience: Vec<String>,
    /// Where the keys come from.
    pub keys: KeySource,
}

/// How remote key sets are refreshed.
#[derive(Clone, Debug)]
pub struct Refresh {
    /// Lifetime of a set whose response has no cache lifetime.
    pub default: Duration,
    /// Shortest time between two fetches of one set.
    pub min: Duration,
    /// Longest time a set is used before it is fetched again.
    pub max: Duration,
    /// Extra trusted CA (PEM) for key-set URLs.
    pub ca_pem: Option<Vec<u8>>,
}

/// What the agent runs with.
#[derive(Clone, Debug)]
pub struct Config {
    /// How to reach the cluster.
    pub client: ClientConfig,
    /// How the local replica follows it.
    pub replica: ReplicaConfig,
    /// The HTTP listener (TCP).
    pub http_listen: SocketAddr,
    /// The HTTP listener on a Unix socket instead.
    pub http_socket: Option<PathBuf>,
    /// The gRPC listener.
    pub grpc_listen: SocketAddr,
    /// SIGTERM's drain bound.
    pub drain_timeout: Duration,
    /// The accepted issuers, at least one.
    pub issuers: Vec<Issuer>,
    /// Claims passed upstream, as headers.
    pub claim_headers: Vec<(String, HeaderName)>,
    /// Clock skew allowed.
    pub leeway: Duration,
    /// Longest token.
    pub max_token_len: usize,
    /// Whether a `jti` is required.
    pub require_jti: bool,
    /// Remote key set refresh.
    pub refresh: Refresh,
    /// Log format.
    pub log_format: LogFormat,
}

impl Args {
    /// Parses `argv` (program name first) and the environment over the file it names.
    pub fn parse_layered<I, T>(argv: I) -> Result<Args, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
        let mut command = Args::command();
        let given = Args::from_arg_matches(&command.clone().try_get_matches_from(&argv)?)?;
        let mut issuers = Vec::new();
        if let Some(path) = &given.config {
            let (table, file_issuers) = load_file(path)?;
            issuers = file_issuers;
            for (key, value) in table {
                let id = clap_id(&key);
                command = match value {
                    toml::Value::Array(items) => {
                        let items: Vec<String> = items.iter().map(toml_text).collect();
                        command.mut_arg(id, |a| a.default_values(items))
                    }
                    value => command.mut_arg(id, |a| a.default_value(toml_text(&value))),
                };
            }
        }
        let mut args = Args::from_arg_matches(&command.try_get_matches_from(&argv)?)?;
        args.issuers = issuers;
        Ok(args)
    }

    /// Checks every setting and reads the files they name (keys, CA, token).
    pub fn into_config(self) -> Result<Config, ConfigError> {
        if self.endpoints.is_empty() {
            return Err(invalid("--endpoints", "give at least one node address"));
        }
        let mut client = ClientConfig::new(self.endpoints.clone());
        client.actor = "revokd-agent".into();
        client.allow_plaintext_token = self.allow_plaintext_token;
        client.bearer_token = match (&self.token, &self.token_file) {
            (Some(t), _) => Some(t.trim().to_owned()),
            (None, Some(path)) => Some(read_text(path)?.trim().to_owned()),
            (None, None) => None,
        };
        if let Some(ca) = &self.tls_ca {
            let mut tls = ClientTls::new(read_bytes(ca)?);
            if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
                tls.identity = Some((read_bytes(cert)?, read_bytes(key)?));
            }
            tls.server_name = self.tls_server_name.clone();
            client.tls = Some(tls);
        } else if self.tls_cert.is_some() {
            return Err(invalid(
                "--tls-cert",
                "a client certificate needs --tls-ca (the cluster CA to verify the nodes with)",
            ));
        }

        let mut replica = ReplicaConfig::default();
        if let Some(id) = &self.replica_id {
            replica.replica_id = id.clone();
        }
        replica.description = format!("revokd-agent {}", env!("CARGO_PKG_VERSION"));
        if self.max_staleness.is_zero() {
            return Err(invalid("--max-staleness", "must be more than 0"));
        }
        replica.max_staleness = self.max_staleness;
        replica.policy = if self.fail_open {
            StalenessPolicy::FailOpen
        } else {
            StalenessPolicy::FailClosed
        };

        let mut specs = self.issuers.clone();
        if let Some(issuer) = &self.issuer {
            specs.push(IssuerSpec {
                issuer: issuer.clone(),
                audience: self.audience.clone(),
                jwks_url: self.jwks_url.clone(),
                jwks_file: self.jwks_file.clone(),
                keys: self.keys.clone(),
            });
        } else if self.jwks_url.is_some() || self.jwks_file.is_some() || !self.keys.is_empty() {
            return Err(invalid(
                "--issuer",
                "--jwks-url, --jwks-file and --key belong to an issuer: give --issuer too",
            ));
        }
        if specs.is_empty() {
            return Err(invalid(
                "--issuer",
                "no issuer configured: give --issuer (and its keys), or [[issuers]] in --config",
            ));
        }
        let issuers = specs
            .into_iter()
            .map(issuer)
            .collect::<Result<Vec<_>, _>>()?;
        for (i, a) in issuers.iter().enumerate() {
            if issuers[..i].iter().any(|b| b.issuer == a.issuer) {
                return Err(invalid(
                    "issuers",
                    format!("issuer {:?} is configured twice", a.issuer),
                ));
            }
        }

        let claim_headers = self
            .claim_headers
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| claim_header(s))
            .collect::<Result<Vec<_>, _>>()?;
        if self.leeway > revokd_client::validator::MAX_LEEWAY {
            return Err(invalid("--leeway", "at most 5m"));
        }
        if self.max_token_len == 0 {
            return Err(invalid("--max-token-len", "must be more than 0"));
        }
        if self.jwks_min_refresh.is_zero() || self.jwks_min_refresh > self.jwks_max_refresh {
            return Err(invalid(
                "--jwks-min-refresh",
                "must be more than 0 and at most --jwks-max-refresh",
            ));
        }
        let ca_pem = self.jwks_ca.as_deref().map(read_bytes).transpose()?;
        Ok(Config {
            client,
            replica,
            http_listen: self.http_listen,
            http_socket: self.http_socket,
            grpc_listen: self.grpc_listen,
            drain_timeout: self.drain_timeout,
            issuers,
            claim_headers,
            leeway: self.leeway,
            max_token_len: self.max_token_len,
            require_jti: !self.allow_missing_jti,
            refresh: Refresh {
                default: self
                    .jwks_refresh
                    .clamp(self.jwks_min_refresh, self.jwks_max_refresh),
                min: self.jwks_min_refresh,
                max: self.jwks_max_refresh,
                ca_pem,
            },
            log_format: self.log_format,
        })
    }
}

impl Config {
    /// Parses `argv`, the environment and the config file, and checks the result.
    pub fn from_args<I, T>(argv: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        Args::parse_layered(argv)?.into_config()
    }
}

fn issuer(spec: IssuerSpec) -> Result<Issuer, ConfigError> {
    if spec.issuer.is_empty() {
        return Err(invalid("issuer", "an issuer's `issuer` must not be empty"));
    }
    let sources = usize::from(spec.jwks_url.is_some())
        + usize::from(spec.jwks_file.is_some())
        + usize::from(!spec.keys.is_empty());
    if sources > 1 {
        return Err(invalid(
            "issuer",
            format!(
                "issuer {:?}: give one of a JWKS URL, a JWKS file or key files, not several",
                spec.issuer
            ),
        ));
    }
    let keys = if let Some(url) = spec.jwks_url {
        check_url("--jwks-url", &url)?;
        KeySource::JwksUrl(url)
    } else if let Some(path) = spec.jwks_file {
        KeySource::JwksFile(path)
    } else if !spec.keys.is_empty() {
        KeySource::Files(
            spec.keys
                .iter()
                .map(|k| key_file(k))
                .collect::<Result<_, _>>()?,
        )
    } else {
        check_url("--issuer", &spec.issuer)?;
        KeySource::Discovery
    };
    Ok(Issuer {
        issuer: spec.issuer,
        audience: spec
            .audience
            .into_iter()
            .filter(|a| !a.is_empty())
            .collect(),
        keys,
    })
}

/// Key sets and discovery documents must come over HTTPS, except from loopback (a local
/// identity provider, or a test): over plain HTTP anyone on the path could swap the keys.
pub fn check_url(setting: &'static str, url: &str) -> Result<(), ConfigError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| invalid(setting, format!("{url:?} is not a URL: {e}")))?;
    let host = uri.host().unwrap_or_default();
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if is_loopback_host(host) => Ok(()),
        Some("http") => Err(invalid(
            setting,
            format!("{url:?}: key sets are fetched over https (plain http only from loopback)"),
        )),
        _ => Err(invalid(
            setting,
            format!("{url:?}: give an https:// URL (for discovery, the issuer's URL)"),
        )),
    }
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn key_file(spec: &str) -> Result<KeyFile, ConfigError> {
    let mut parts = spec.splitn(3, ':');
    let (Some(alg), Some(path)) = (parts.next(), parts.next()) else {
        return Err(invalid(
            "--key",
            format!("{spec:?}: write ALG:PATH or ALG:PATH:KID, e.g. ES256:/etc/keys/idp.pem:k1"),
        ));
    };
    let alg: Algorithm = alg.parse().map_err(|_| {
        invalid(
            "--key",
            format!("{spec:?}: {alg:?} is not a JWS algorithm (RS256, ES256, EdDSA, ...)"),
        )
    })?;
    Ok(KeyFile {
        alg,
        path: PathBuf::from(path),
        kid: parts.next().filter(|k| !k.is_empty()).map(str::to_owned),
    })
}

fn claim_header(spec: &str) -> Result<(String, HeaderName), ConfigError> {
    let Some((claim, header)) = spec.split_once('=') else {
        return Err(invalid(
            "--claim-header",
            format!("{spec:?}: write CLAIM=Header-Name, e.g. sub=X-User-Id"),
        ));
    };
    if claim.is_empty() {
        return Err(invalid("--claim-header", format!("{spec:?}: no claim")));
    }
    let name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
        invalid(
            "--claim-header",
            format!("{spec:?}: {header:?} is not a valid header name"),
        )
    })?;
    Ok((claim.to_owned(), name))
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The clap id of a file key: the field name, except where the flag's name differs.
fn clap_id(key: &str) -> &str {
    match key {
        "key" => "keys",
        "claim_header" => "claim_headers",
        other => other,
    }
}

fn toml_text(value: &toml::Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

/// Reads the config file: checked against [`Args`] (unknown keys, wrong types), then split
/// into the flags' keys and the `[[issuers]]` tables.
fn load_file(path: &Path) -> Result<(toml::Table, Vec<IssuerSpec>), ConfigError> {
    let text = read_text(path)?;
    let parse_error = |e: toml::de::Error| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut table: toml::Table = toml::from_str(&text).map_err(parse_error)?;
    let issuers = match table.remove("issuers") {
        None => Vec::new(),
        Some(value) => Vec::<IssuerSpec>::deserialize(value).map_err(parse_error)?,
    };
    Args::deserialize(toml::Value::Table(table.clone())).map_err(parse_error)?;
    Ok((table, issuers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(flags: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["revokd-agent"];
        argv.extend_from_slice(flags);
        Config::from_args(argv)
    }

    #[test]
    fn the_flags_are_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn an_issuer_is_required_and_its_keys_are_checked() {
        let e = config(&[]).unwrap_err();
        assert!(e.to_string().contains("no issuer configured"), "{e}");
        let e = config(&["--jwks-url", "https://idp/jwks"]).unwrap_err();
        assert!(e.to_string().contains("give --issuer too"), "{e}");
        let e = config(&["--issuer", "http://idp.example.com"]).unwrap_err();
        assert!(e.to_string().contains("https"), "{e}");
        let c = config(&["--issuer", "http://127.0.0.1:9000/realm"]).unwrap();
        assert_eq!(c.issuers[0].keys, KeySource::Discovery);
        let e = config(&["--issuer", "i", "--key", "XS256:/k.pem"]).unwrap_err();
        assert!(e.to_string().contains("not a JWS algorithm"), "{e}");
        let c = config(&["--issuer", "i", "--key", "ES256:/k.pem:k1,EdDSA:/e.der"]).unwrap();
        assert_eq!(
            c.issuers[0].keys,
            KeySource::Files(vec![
                KeyFile {
                    alg: Algorithm::ES256,
                    path: "/k.pem".into(),
                    kid: Some("k1".into())
                },
                KeyFile {
                    alg: Algorithm::EdDSA,
                    path: "/e.der".into(),
                    kid: None
                },
            ])
        );
        let e = config(&["--issuer", "i", "--key", "ES256:/k", "--jwks-file", "/j"]).unwrap_err();
        assert!(e.to_string().contains("not several"), "{e}");
    }

    #[test]
    fn claim_headers_are_checked_and_default_to_identity() {
        let c = config(&["--issuer", "i", "--jwks-file", "/j"]).unwrap();
        let names: Vec<_> = c
            .claim_headers
            .iter()
            .map(|(c, h)| format!("{c}={h}"))
            .collect();
        assert_eq!(
            names,
            ["sub=x-user-id", "iss=x-user-issuer", "scope=x-user-scopes"]
        );
        let e = config(&[
            "--issuer",
            "i",
            "--jwks-file",
            "/j",
            "--claim-header",
            "sub",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("CLAIM=Header-Name"), "{e}");
        let e = config(&[
            "--issuer",
            "i",
            "--jwks-file",
            "/j",
            "--claim-header",
            "sub=Bad Header",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("not a valid header name"), "{e}");
    }

    #[test]
    fn the_file_gives_issuers_and_defaults_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            r#"
endpoints = ["10.0.0.1:7001", "10.0.0.2:7001"]
max_staleness = "2s"
claim_header = ["sub=X-Sub"]

[[issuers]]
issuer = "https://a.example"
audience = ["orders"]
jwks_url = "https://a.example/jwks"

[[issuers]]
issuer = "b"
jwks_file = "/etc/b.json"
"#,
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = config(&["--config", p, "--max-staleness", "3s"]).unwrap();
        assert_eq!(c.client.endpoints, ["10.0.0.1:7001", "10.0.0.2:7001"]);
        assert_eq!(c.replica.max_staleness, Duration::from_secs(3));
        assert_eq!(c.claim_headers.len(), 1);
        assert_eq!(c.issuers.len(), 2);
        assert_eq!(c.issuers[0].audience, ["orders"]);
        assert_eq!(
            c.issuers[1].keys,
            KeySource::JwksFile(PathBuf::from("/etc/b.json"))
        );
        std::fs::write(&path, "no_such_key = 1\n").unwrap();
        let e = config(&["--config", p]).unwrap_err();
        assert!(e.to_string().contains("agent.toml"), "{e}");
    }
}
