//! Transport security: with `--tls-cert`, `--tls-key` and `--tls-ca`, the node serves gRPC
//! over TLS and dials its peers over TLS, presenting its own certificate. Client certificates
//! are optional for the public API (admins authenticate with bearer tokens), but the Raft
//! service refuses any caller without a certificate issued by the cluster CA: a process that
//! does not hold the cluster's certificate can neither join nor send Raft messages. The CA
//! must therefore issue node certificates only (`scripts/gen-certs.sh`).

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic::{Request, Status};

use crate::config::{ConfigError, TlsSettings};

/// The node's TLS material, ready for the server and for dialing peers.
#[derive(Clone, Debug)]
pub struct Tls {
    /// For the gRPC server.
    pub server: ServerTlsConfig,
    /// For channels to peers.
    pub client: ClientTlsConfig,
}

impl Tls {
    /// Reads the certificate, key and CA files (before anything binds).
    pub fn load(s: &TlsSettings) -> Result<Tls, ConfigError> {
        let read = |what: &str, path: &std::path::Path| {
            let bytes = std::fs::read(path)
                .map_err(|e| ConfigError::Invalid(format!("{what} {}: {e}", path.display())))?;
            if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
                return Err(ConfigError::Invalid(format!(
                    "{what} {}: not a PEM file",
                    path.display()
                )));
            }
            Ok(bytes)
        };
        let identity = Identity::from_pem(read("tls-cert", &s.cert)?, read("tls-key", &s.key)?);
        let ca = Certificate::from_pem(read("tls-ca", &s.ca)?);
        Ok(Tls {
            server: ServerTlsConfig::new()
                .identity(identity.clone())
                .client_ca_root(ca.clone())
                .client_auth_optional(true),
            client: ClientTlsConfig::new().ca_certificate(ca).identity(identity),
        })
    }
}

/// Refuses a Raft call whose caller presented no certificate of the cluster CA (the TLS
/// handshake already verified any certificate it did present). A no-op without TLS.
pub fn require_peer<T>(req: &Request<T>, tls: bool) -> Result<(), Status> {
    if tls && req.peer_certs().is_none_or(|c| c.is_empty()) {
        return Err(Status::unauthenticated(
            "revokd: raft: peers must present a certificate issued by the cluster CA",
        ));
    }
    Ok(())
}
