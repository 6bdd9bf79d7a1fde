//! JWTs for tests and benchmarks: the workspace's test keys
//! (`crates/revokd-client/tests/fixtures/keys`) and one [`Signer`] that mints tokens with
//! them, so every test and benchmark makes its tokens the same way.
//!
//! ```
//! use revokd_testkit::jwt::{Algorithm, Signer};
//! # fn main() -> anyhow::Result<()> {
//! let claims = serde_json::json!({ "sub": "alice", "exp": 4_102_444_800_i64 });
//! let hs = Signer::hmac(Algorithm::HS256, b"a-test-secret-of-32-bytes-or-more").kid("k1");
//! let es = Signer::fixture(Algorithm::ES256)?;
//! assert_ne!(hs.sign(&claims)?, es.sign(&claims)?);
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
pub use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// The directory of the test key pairs (PEM): `rsa`, `rsa_other`, `ec256`, `ec384` and
/// `ed25519`, each as `<stem>_private.pem` and `<stem>_public.pem`.
pub fn keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../revokd-client/tests/fixtures/keys")
}

/// The contents of the key file `name` in [`keys_dir`].
pub fn key_file(name: &str) -> Result<Vec<u8>> {
    let path = keys_dir().join(name);
    std::fs::read(&path).with_context(|| format!("reading test key {}", path.display()))
}

/// The file stem of the test key pair for an asymmetric algorithm (`rsa` for RS* and PS*);
/// `None` for HMAC, whose secret each test chooses.
pub fn key_stem(alg: Algorithm) -> Option<&'static str> {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => None,
        Algorithm::ES256 => Some("ec256"),
        Algorithm::ES384 => Some("ec384"),
        Algorithm::EdDSA => Some("ed25519"),
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => Some("rsa"),
    }
}

/// The PEM of the public half of the test key for `alg` (what a validator or node trusts).
pub fn public_pem(alg: Algorithm) -> Result<Vec<u8>> {
    match key_stem(alg) {
        Some(stem) => key_file(&format!("{stem}_public.pem")),
        None => bail!("{alg:?} is HMAC: it has no test key pair"),
    }
}

/// A private key from a PEM file of the shape `alg` signs with.
pub fn private_key(alg: Algorithm, pem: &[u8]) -> Result<EncodingKey> {
    Ok(match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            bail!("{alg:?} is HMAC: use EncodingKey::from_secret")
        }
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem)?,
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem)?,
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => EncodingKey::from_rsa_pem(pem)?,
    })
}

/// Mints JWTs with one algorithm, key and header; one signer signs any number of claim sets.
#[derive(Clone)]
pub struct Signer {
    header: Header,
    key: EncodingKey,
}

impl Signer {
    /// Signs with `alg` and `key`, under a plain header (`typ: JWT`, no `kid`).
    pub fn new(alg: Algorithm, key: EncodingKey) -> Self {
        Signer {
            header: Header::new(alg),
            key,
        }
    }

    /// Signs with an HMAC algorithm and `secret`.
    pub fn hmac(alg: Algorithm, secret: &[u8]) -> Self {
        Self::new(alg, EncodingKey::from_secret(secret))
    }

    /// Signs with the test private key for the asymmetric `alg` (see [`key_stem`]).
    pub fn fixture(alg: Algorithm) -> Result<Self> {
        let Some(stem) = key_stem(alg) else {
            bail!("{alg:?} is HMAC: use Signer::hmac");
        };
        let pem = key_file(&format!("{stem}_private.pem"))?;
        Ok(Self::new(alg, private_key(alg, &pem)?))
    }

    /// Names the key in the header's `kid`.
    pub fn kid(mut self, kid: impl Into<String>) -> Self {
        self.header.kid = Some(kid.into());
        self
    }

    /// Changes the header in other ways (a `cty`, an embedded `jwk`: what attacks look like).
    pub fn header(mut self, edit: impl FnOnce(&mut Header)) -> Self {
        edit(&mut self.header);
        self
    }

    /// The key it signs with.
    pub fn key(&self) -> &EncodingKey {
        &self.key
    }

    /// A compact JWT of `claims`.
    pub fn sign(&self, claims: &impl Serialize) -> Result<String> {
        jsonwebtoken::encode(&self.header, claims, &self.key).context("signing a test JWT")
    }
}
