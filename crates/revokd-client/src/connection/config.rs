//! How a [`Client`] connects: [`ClientConfig`] and [`ClientTls`], checked before
//! anything is dialed, and the endpoint each node is dialed at.

use std::collections::BTreeMap;
use std::time::Duration;

use tonic::transport::Endpoint;

use crate::error::Error;

use super::*;

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

    pub(super) fn tonic(&self) -> tonic::transport::ClientTlsConfig {
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

    pub(super) fn validate(&self) -> Result<(), Error> {
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

pub(super) fn strip_scheme(addr: &str) -> &str {
    addr.trim_start_matches("http://")
        .trim_start_matches("https://")
}

/// HTTP/2 pings on an idle connection to a node, and how long an unanswered one may take: a
/// node that vanished without closing the connection (a partition, a paused host) is noticed
/// in about 15 s even on a quiet `Watch`, whose replica would otherwise wait for a change that
/// cannot come.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// See [`KEEPALIVE_INTERVAL`].
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `host:port` names a loopback host (`localhost`, 127.0.0.0/8, `::1`).
pub(super) fn is_loopback(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub(super) fn endpoint(given: &str, config: &ClientConfig) -> Result<Endpoint, Error> {
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
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT))
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
