//! A development certificate authority (rcgen): a CA and node certificates for running a TLS
//! cluster locally and in tests, and an admin CA with admins' client certificates. Not for
//! production: the keys are written unencrypted (but with mode 0600 from the moment they
//! exist). The CA may issue end-entity certificates only (path length 0) and is valid for
//! [`CA_VALIDITY`]; what it issues, for [`CERT_VALIDITY`] unless told otherwise.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// How long a CA certificate is valid: ten years.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a node or client certificate is valid by default: one year.
pub const CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How far back validity starts, for clocks a little behind.
const BACKDATE: Duration = Duration::from_secs(3600);

/// A CA that issues node certificates.
pub struct DevCa {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// How long the certificates it issues are valid.
    validity: Duration,
}

/// Sets `params` to be valid from a little before now for `validity`.
fn valid_for(params: &mut CertificateParams, validity: Duration) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
}

/// A certificate and its key, PEM.
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

impl DevCa {
    /// A new CA named `name`, valid for [`CA_VALIDITY`], issuing certificates valid for
    /// [`CERT_VALIDITY`].
    pub fn new(name: &str) -> Result<DevCa> {
        Self::with_validity(name, CA_VALIDITY, CERT_VALIDITY)
    }

    /// A new CA named `name` valid for `ca`, issuing certificates valid for `certs`.
    pub fn with_validity(name: &str, ca: Duration, certs: Duration) -> Result<DevCa> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        valid_for(&mut params, ca);
        // It issues end-entity certificates only: no intermediate CA below it.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(DevCa {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
            validity: certs,
        })
    }

    /// A node certificate for `name`, valid for serving and for dialing peers, with these
    /// subject alternative names (host names or IP addresses) besides `name`.
    pub fn issue(&self, name: &str, sans: &[&str]) -> Result<Issued> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        valid_for(&mut params, self.validity);
        params.distinguished_name.push(DnType::CommonName, name);
        for san in std::iter::once(&name).chain(sans) {
            params.subject_alt_names.push(match san.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*san).try_into()?),
            });
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate for the admin `name` (its common name), valid for client
    /// authentication only.
    pub fn issue_client(&self, name: &str) -> Result<Issued> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        valid_for(&mut params, self.validity);
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes `ca.pem` and a node certificate for `name` (valid for localhost and 127.0.0.1)
    /// into `dir`; returns the `revokd` flags that serve TLS with them.
    pub fn node_flags(&self, dir: &Path, name: &str) -> Result<Vec<String>> {
        let ca = self.write_ca(dir)?;
        let (cert, key) = self
            .issue(name, &["localhost", "127.0.0.1"])?
            .write(dir, name)?;
        Ok(vec![
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
            "--tls-ca".into(),
            ca.display().to_string(),
        ])
    }

    /// Writes `ca.pem` into `dir` (created if missing).
    pub fn write_ca(&self, dir: &Path) -> Result<PathBuf> {
        self.write_ca_as(dir, "ca")
    }

    /// Writes the CA certificate as `<name>.pem` into `dir` (created if missing).
    pub fn write_ca_as(&self, dir: &Path, name: &str) -> Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, &self.ca_pem)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

impl Issued {
    /// Writes `<name>.pem` and `<name>-key.pem` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert, &self.cert_pem)?;
        write_private(&key, self.key_pem.as_bytes())
            .with_context(|| format!("writing {}", key.display()))?;
        Ok((cert, key))
    }
}

/// Writes a private key: a new file is created with mode 0600 (never readable by others, not
/// even for a moment), an existing one is narrowed to 0600 before it is rewritten, and a
/// symlink at `path` is not followed.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        anyhow::ensure!(
            !meta.file_type().is_symlink(),
            "{} is a symlink; refusing to write a key through it",
            path.display()
        );
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_private_and_validity_is_bounded() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::new("test").unwrap();
        let (cert, key) = ca
            .issue("n1", &["localhost"])
            .unwrap()
            .write(dir.path(), "n1")
            .unwrap();
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let pem = std::fs::read(&cert).unwrap();
        let (_, der) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let c = der.parse_x509().unwrap();
        let days =
            (c.validity().not_after.timestamp() - c.validity().not_before.timestamp()) / 86_400;
        assert!((365..=366).contains(&days), "{days} days");
        let (_, der) = x509_parser::pem::parse_x509_pem(ca.ca_pem.as_bytes()).unwrap();
        let c = der.parse_x509().unwrap();
        let bc = c.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca && bc.path_len_constraint == Some(0), "{bc:?}");
    }
}
