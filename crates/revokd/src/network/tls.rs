//! Transport security: with `--tls-cert`, `--tls-key` and `--tls-ca`, the node serves gRPC
//! over TLS and dials its peers over TLS, presenting its own certificate.
//!
//! Client certificates are optional at the handshake, which accepts any certificate issued by
//! the cluster CA or, with `--admin-client-ca`, by the admin CA. What a certificate grants is
//! decided per call, by checking which CA issued it ([`CaCheck`]):
//! - the Raft service refuses any caller whose certificate the cluster CA did not issue
//!   (`api::caller`, before the message is read), so a process without the cluster's
//!   certificate can neither join nor send Raft messages (an admin's certificate is not
//!   enough);
//! - a certificate of the admin CA makes its holder an admin (`api::auth`), and one of the
//!   cluster CA marks a peer forwarding a write it already authorized.
//!
//! The cluster CA must therefore issue node certificates only (`scripts/gen-certs.sh`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::config::{ConfigError, TlsSettings};
use crate::network::handshake::ConnInfo;

/// The node's TLS material, ready for the server and for dialing peers.
#[derive(Clone)]
pub struct Tls {
    /// For the handshakes of incoming connections (`network::handshake`).
    pub server: Arc<rustls::ServerConfig>,
    /// For channels to peers.
    pub client: ClientTlsConfig,
    /// Whether a certificate was issued by the cluster CA (a peer).
    pub peers: CaCheck,
    /// Whether a certificate was issued by the admin CA, with the names allowed.
    pub admins: Option<AdminCerts>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("admins", &self.admins.as_ref().map(|a| &a.names))
            .finish_non_exhaustive()
    }
}

/// Checks that a certificate chain leads to one CA, with the same WebPKI verification the
/// handshake uses, but against that CA alone. Cheap to clone.
#[derive(Clone)]
pub struct CaCheck {
    verifier: Arc<dyn ClientCertVerifier>,
    /// End-entity certificates (DER) checked recently, when, and the answer: a peer or an
    /// admin shows the same certificate on every call (and each caller is checked against
    /// both CAs), and a signature check per call would cost more than the call. Entries are
    /// checked again after [`RECHECK`], so an expired certificate stops working.
    verified: Arc<Mutex<Checked>>,
}

/// End-entity certificate (DER) → when it was checked, and its name if it passed.
type Checked = HashMap<Vec<u8>, (Instant, Option<Arc<str>>)>;

/// How long a verified certificate is trusted before it is verified again.
const RECHECK: Duration = Duration::from_secs(60);
/// Most certificates remembered (the cache is emptied when full).
const MAX_REMEMBERED: usize = 4096;

/// The admin CA and the certificate names it may grant admin to.
#[derive(Clone)]
pub struct AdminCerts {
    /// Verifies that the admin CA issued a certificate.
    pub ca: CaCheck,
    /// Allowed names; empty allows every certificate of the admin CA.
    pub names: Vec<String>,
}

impl CaCheck {
    /// A check against the CA certificate(s) in `pem`.
    pub fn from_pem(pem: &[u8]) -> Result<CaCheck, String> {
        let roots = roots(pem)?;
        if roots.is_empty() {
            return Err("no certificate in the file".into());
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(CaCheck {
            verifier,
            verified: Arc::default(),
        })
    }

    /// Whether `chain` (end-entity certificate first) was issued by this CA and is valid now.
    pub fn verify(&self, chain: &[CertificateDer<'static>]) -> bool {
        self.issued(chain).is_some()
    }

    /// The name of `chain`'s certificate ([`certificate_name`]; empty if it has none) when
    /// this CA issued it and it is valid now, else `None`.
    pub fn issued(&self, chain: &[CertificateDer<'static>]) -> Option<Arc<str>> {
        let (end_entity, intermediates) = chain.split_first()?;
        let now = Instant::now();
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, name)) = verified.get(end_entity.as_ref()) {
            if now.duration_since(*at) < RECHECK {
                return name.clone();
            }
        }
        let name = self
            .verifier
            .verify_client_cert(end_entity, intermediates, UnixTime::now())
            .ok()
            .map(|_| Arc::from(certificate_name(end_entity).unwrap_or_default()));
        if verified.len() >= MAX_REMEMBERED {
            verified.clear();
        }
        verified.insert(end_entity.as_ref().to_vec(), (now, name.clone()));
        name
    }
}

/// The name a client certificate stands for: its subject's common name, else its first DNS
/// or e-mail subject alternative name. `None` if the certificate cannot be parsed or has none.
pub fn certificate_name(cert: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    if let Some(cn) = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
    {
        return Some(cn.to_owned());
    }
    let san = cert.subject_alternative_name().ok().flatten()?;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::DNSName(s) | GeneralName::RFC822Name(s) => Some((*s).to_owned()),
        _ => None,
    })
}

/// Checks that the admin CA in `admin_pem` is not the cluster CA in `cluster_pem` under
/// another encoding (same subject or same key, whatever the PEM bytes) and was not issued by
/// it (chained under the cluster CA).
fn distinct_cas(cluster_pem: &[u8], admin_pem: &[u8]) -> Result<(), String> {
    let cluster = ca_names(cluster_pem)?;
    for admin in ca_names(admin_pem)? {
        for c in &cluster {
            if admin.subject == c.subject || admin.key == c.key {
                return Err("is the cluster CA (same subject or key)".into());
            }
            if admin.issuer == c.subject {
                return Err("was issued by the cluster CA".into());
            }
        }
    }
    Ok(())
}

/// What tells one CA certificate from another: its subject, its issuer and its key (DER).
struct CaName {
    subject: Vec<u8>,
    issuer: Vec<u8>,
    key: Vec<u8>,
}

/// The [`CaName`] of every certificate in `pem`.
fn ca_names(pem: &[u8]) -> Result<Vec<CaName>, String> {
    CertificateDer::pem_slice_iter(pem)
        .map(|c| {
            let c = c.map_err(|e| format!("unreadable certificate: {e}"))?;
            let (_, x) = x509_parser::parse_x509_certificate(c.as_ref())
                .map_err(|e| format!("unparsable certificate: {e}"))?;
            Ok(CaName {
                subject: x.subject().as_raw().to_vec(),
                issuer: x.issuer().as_raw().to_vec(),
                key: x.public_key().raw.to_vec(),
            })
        })
        .collect()
}

/// The certificate chain a caller presented in the TLS handshake, if any.
pub fn peer_certs(ext: &http::Extensions) -> Option<Arc<Vec<CertificateDer<'static>>>> {
    ext.get::<ConnInfo>()?.certs.clone()
}

/// The CA certificates in `pem` as trust roots.
fn roots(pem: &[u8]) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("unreadable certificate: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    Ok(roots)
}

/// The crypto provider of every TLS configuration here (the one tonic's `tls-aws-lc` uses).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The server side of the handshake: the node's certificate, client certificates optional
/// but, when shown, verified against `client_roots` (the cluster CA and the admin CA), and
/// HTTP/2 by ALPN.
fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_roots: &[u8],
) -> Result<rustls::ServerConfig, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls-cert: unreadable certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("tls-key: no usable private key: {e}"))?;
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(client_roots)?), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| e.to_string())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("tls-cert and tls-key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
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
        let check = |what: &str, path: &std::path::Path, pem: &[u8]| {
            CaCheck::from_pem(pem)
                .map_err(|e| ConfigError::Invalid(format!("{what} {}: {e}", path.display())))
        };
        let (cert_pem, key_pem) = (read("tls-cert", &s.cert)?, read("tls-key", &s.key)?);
        let ca_pem = read("tls-ca", &s.ca)?;
        let peers = check("tls-ca", &s.ca, &ca_pem)?;
        // The handshake accepts client certificates of either CA; each call then checks
        // which one issued the certificate it is shown.
        let mut client_roots = ca_pem.clone();
        let admins = match &s.admin_ca {
            None => None,
            Some(path) => {
                let pem = read("admin-client-ca", path)?;
                if let Err(why) = distinct_cas(&ca_pem, &pem) {
                    return Err(ConfigError::Invalid(format!(
                        "admin-client-ca {}: {why}; admins need a CA of their own, or every \
                         node certificate would be an admin's and every admin's a node's",
                        path.display()
                    )));
                }
                let ca = check("admin-client-ca", path, &pem)?;
                client_roots.push(b'\n');
                client_roots.extend_from_slice(&pem);
                Some(AdminCerts {
                    ca,
                    names: s.admin_names.clone(),
                })
            }
        };
        let server = server_config(&cert_pem, &key_pem, &client_roots).map_err(|e| {
            ConfigError::Invalid(format!(
                "{e} (tls-cert {}, tls-key {})",
                s.cert.display(),
                s.key.display()
            ))
        })?;
        Ok(Tls {
            server: Arc::new(server),
            client: ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca_pem))
                .identity(Identity::from_pem(cert_pem, key_pem)),
            peers,
            admins,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        SanType,
    };

    /// A CA: its PEM and an issuer.
    fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let pem = params.self_signed(&key).unwrap().pem();
        (pem, Issuer::new(params, key))
    }

    fn leaf(
        issuer: &Issuer<'static, KeyPair>,
        cn: Option<&str>,
        san: &str,
    ) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params
            .subject_alt_names
            .push(SanType::DnsName(san.try_into().unwrap()));
        params.signed_by(&key, issuer).unwrap().der().clone()
    }

    #[test]
    fn a_check_accepts_only_its_own_ca() {
        let (cluster_pem, cluster) = ca("cluster");
        let (admin_pem, admin) = ca("admins");
        let peers = CaCheck::from_pem(cluster_pem.as_bytes()).unwrap();
        let admins = CaCheck::from_pem(admin_pem.as_bytes()).unwrap();
        let node = leaf(&cluster, Some("node1"), "node1");
        let alice = leaf(&admin, Some("alice"), "alice.example");
        assert!(peers.verify(std::slice::from_ref(&node)));
        assert!(!peers.verify(std::slice::from_ref(&alice)));
        assert!(admins.verify(std::slice::from_ref(&alice)));
        assert!(!admins.verify(std::slice::from_ref(&node)));
        // Remembered answers stay right.
        assert!(peers.verify(std::slice::from_ref(&node)));
        assert!(!peers.verify(std::slice::from_ref(&alice)));
        assert!(!peers.verify(&[]));
        assert!(CaCheck::from_pem(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        )
        .is_err());
        assert!(CaCheck::from_pem(b"nothing here").is_err());
    }

    #[test]
    fn an_admin_ca_must_be_a_ca_of_its_own() {
        let (cluster_pem, cluster) = ca("cluster");
        let (admin_pem, _) = ca("admins");
        assert_eq!(
            distinct_cas(cluster_pem.as_bytes(), admin_pem.as_bytes()),
            Ok(())
        );
        // The cluster CA again, with other bytes around it.
        let padded = format!("\n{cluster_pem}\n");
        assert!(distinct_cas(cluster_pem.as_bytes(), padded.as_bytes()).is_err());
        // An intermediate CA the cluster CA issued.
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "sub-admins");
        let chained = params.signed_by(&key, &cluster).unwrap().pem();
        let e = distinct_cas(cluster_pem.as_bytes(), chained.as_bytes()).unwrap_err();
        assert!(e.contains("issued by the cluster CA"), "{e}");
    }

    #[test]
    fn a_certificate_is_named_by_its_cn_else_its_san() {
        let (_, issuer) = ca("admins");
        assert_eq!(
            certificate_name(&leaf(&issuer, Some("alice"), "alice.example")).as_deref(),
            Some("alice")
        );
        assert_eq!(
            certificate_name(&leaf(&issuer, None, "bob.example")).as_deref(),
            Some("bob.example")
        );
        assert_eq!(certificate_name(&CertificateDer::from(vec![1, 2, 3])), None);
    }
}
