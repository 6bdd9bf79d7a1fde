//! Verification keys, each bound to exactly one algorithm when it is loaded: the token's `alg`
//! header never chooses how a key is used, which is what rules out `none` and HS/RS confusion.

use std::str::FromStr;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;

use super::error::ConfigError;

/// A public key (or HMAC secret) and the one algorithm it verifies, with an optional `kid`.
///
/// ```
/// use revokd_client::validator::{Algorithm, Key};
///
/// let key = Key::hmac(Algorithm::HS256, [7u8; 32]).unwrap().kid("k1");
/// assert_eq!(key.key_id(), Some("k1"));
/// assert_eq!(key.algorithm(), Algorithm::HS256);
/// ```
#[derive(Clone)]
pub struct Key {
    pub(super) alg: Algorithm,
    pub(super) kid: Option<Arc<str>>,
    pub(super) key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No key material, not even public: keys end up in config dumps.
        f.debug_struct("Key")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish()
    }
}

impl Key {
    /// An HMAC secret for `HS256`, `HS384` or `HS512`.
    ///
    /// The secret must be at least as long as the hash output (32, 48 or 64 bytes), as RFC 7518
    /// §3.2 requires: shorter secrets can be brute-forced from one token.
    pub fn hmac(alg: Algorithm, secret: impl AsRef<[u8]>) -> Result<Key, ConfigError> {
        let secret = secret.as_ref();
        let min = match alg {
            Algorithm::HS256 => 32,
            Algorithm::HS384 => 48,
            Algorithm::HS512 => 64,
            _ => return Err(invalid(alg, "Key::hmac takes HS256, HS384 or HS512")),
        };
        if secret.len() < min {
            return Err(invalid(
                alg,
                format!(
                    "the HMAC secret is {} bytes; {alg:?} needs at least {min} (RFC 7518 §3.2)",
                    secret.len()
                ),
            ));
        }
        Ok(Key::new(alg, DecodingKey::from_secret(secret)))
    }

    /// A public key in PEM: `PUBLIC KEY` (SubjectPublicKeyInfo) for every algorithm,
    /// `RSA PUBLIC KEY` (PKCS#1) for RSA, or an X.509 `CERTIFICATE` (its key is used; the
    /// certificate itself is not checked). Private keys are refused: give the public half.
    pub fn from_pem(alg: Algorithm, pem: impl AsRef<[u8]>) -> Result<Key, ConfigError> {
        let pem = pem.as_ref();
        if contains(pem, b"PRIVATE KEY-----") {
            return Err(invalid(
                alg,
                "this PEM holds a private key; give the public key",
            ));
        }
        let (key, expected) = match alg.family() {
            AlgorithmFamily::Hmac => {
                return Err(invalid(alg, "HMAC secrets are not PEM: use Key::hmac"));
            }
            AlgorithmFamily::Rsa => (DecodingKey::from_rsa_pem(pem), "an RSA"),
            AlgorithmFamily::Ec => (DecodingKey::from_ec_pem(pem), "an EC"),
            AlgorithmFamily::Ed => (DecodingKey::from_ed_pem(pem), "an Ed25519"),
        };
        let key = key.map_err(|e| invalid(alg, format!("not {expected} public key PEM ({e})")))?;
        check_public_key(alg, &key)?;
        Ok(Key::new(alg, key))
    }

    /// A public key in DER: SubjectPublicKeyInfo (what `openssl pkey -pubout -outform DER`
    /// writes) for every algorithm, or PKCS#1 `RSAPublicKey` for RSA.
    pub fn from_der(alg: Algorithm, der: impl AsRef<[u8]>) -> Result<Key, ConfigError> {
        let der = der.as_ref();
        if alg.family() == AlgorithmFamily::Hmac {
            return Err(invalid(alg, "HMAC secrets are not DER: use Key::hmac"));
        }
        // jsonwebtoken's `from_*_der` take the inner key bytes unchecked; going through its PEM
        // parser instead accepts the standard SPKI form and rejects garbage now, not per token.
        match Key::from_pem(alg, pem_wrap("PUBLIC KEY", der)) {
            Ok(key) => Ok(key),
            Err(spki_err) if alg.family() == AlgorithmFamily::Rsa => {
                Key::from_pem(alg, pem_wrap("RSA PUBLIC KEY", der)).map_err(|_| spki_err)
            }
            Err(e) => Err(e),
        }
    }

    /// Sets the key's `kid`: tokens whose header names this `kid` are verified with this key.
    pub fn kid(mut self, kid: impl Into<Arc<str>>) -> Key {
        self.kid = Some(kid.into());
        self
    }

    /// The key's `kid`, if it has one.
    pub fn key_id(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The one algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    fn new(alg: Algorithm, key: DecodingKey) -> Key {
        Key {
            alg,
            kid: None,
            key,
        }
    }

    /// A JWK from a set: `alg` if it has one, else the algorithm its type implies, else the
    /// caller's default for its family.
    fn from_jwk(jwk: &Jwk, defaults: &[Algorithm]) -> Result<Key, String> {
        let alg = match jwk.common.key_algorithm {
            Some(a) => Algorithm::from_str(&a.to_string())
                .map_err(|_| format!("alg {a} is not a supported signature algorithm"))?,
            None => implied_algorithm(&jwk.algorithm, defaults)?,
        };
        let matches = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => alg.family() == AlgorithmFamily::Rsa,
            AlgorithmParameters::OctetKey(_) => alg.family() == AlgorithmFamily::Hmac,
            AlgorithmParameters::EllipticCurve(p) => {
                curve_algorithm(&p.curve) == Some(alg) && alg.family() == AlgorithmFamily::Ec
            }
            AlgorithmParameters::OctetKeyPair(p) => {
                p.curve == EllipticCurve::Ed25519 && alg == Algorithm::EdDSA
            }
        };
        if !matches {
            return Err(format!("alg {alg:?} does not fit the key type/curve"));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key: {e}"))?;
        let mut key = if alg.family() == AlgorithmFamily::Hmac {
            // Same minimum length as Key::hmac.
            Key::hmac(alg, key.as_bytes()).map_err(config_reason)?
        } else {
            check_public_key(alg, &key).map_err(config_reason)?;
            Key::new(alg, key)
        };
        key.kid = jwk.common.key_id.as_deref().map(Arc::from);
        Ok(key)
    }
}

/// The keys of a JWK set (RFC 7517), each bound to one algorithm.
///
/// Keys meant for encryption (`"use": "enc"`, `key_ops` without `verify`, or an encryption
/// `alg`) are skipped; any other key that cannot be used is an error, so a set never silently
/// loses a signing key.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

impl KeySet {
    /// Parses a JWK set. A JWK without `alg` gets the algorithm its type implies where that is
    /// unambiguous (EC P-256 → ES256, P-384 → ES384, OKP Ed25519 → EdDSA); an RSA or `oct` key
    /// without `alg` is an error: use [`KeySet::from_jwks_json_with_defaults`].
    pub fn from_jwks_json(json: &str) -> Result<KeySet, ConfigError> {
        KeySet::from_jwks_json_with_defaults(json, &[])
    }

    /// Parses a JWK set, giving RSA and `oct` keys without `alg` the algorithm of their family
    /// in `defaults` (e.g. `&[Algorithm::RS256]`). At most one default per family.
    pub fn from_jwks_json_with_defaults(
        json: &str,
        defaults: &[Algorithm],
    ) -> Result<KeySet, ConfigError> {
        for (i, a) in defaults.iter().enumerate() {
            if !matches!(a.family(), AlgorithmFamily::Rsa | AlgorithmFamily::Hmac) {
                return Err(jwks_error(
                    None,
                    None,
                    format!("default {a:?}: defaults are only for RSA and oct keys (EC and OKP keys imply theirs)"),
                ));
            }
            if defaults[..i].iter().any(|b| b.family() == a.family()) {
                return Err(jwks_error(
                    None,
                    None,
                    format!("two defaults for the family of {a:?}"),
                ));
            }
        }
        let raw: RawJwks = serde_json::from_str(json)
            .map_err(|e| jwks_error(None, None, format!("not a JWK set: {e}")))?;
        let mut keys = Vec::with_capacity(raw.keys.len());
        for (i, value) in raw.keys.into_iter().enumerate() {
            let kid = value.get("kid").and_then(|k| k.as_str()).map(str::to_owned);
            if !is_signing_key(&value) {
                continue;
            }
            let jwk: Jwk = serde_json::from_value(value).map_err(|e| {
                jwks_error(
                    Some(i),
                    kid.clone(),
                    format!("unsupported or malformed key: {e}"),
                )
            })?;
            let key = Key::from_jwk(&jwk, defaults).map_err(|r| jwks_error(Some(i), kid, r))?;
            keys.push(key);
        }
        Ok(KeySet { keys })
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys.
    pub fn iter(&self) -> impl Iterator<Item = &Key> {
        self.keys.iter()
    }

    /// Adds a key.
    pub fn push(&mut self, key: Key) {
        self.keys.push(key);
    }
}

impl FromIterator<Key> for KeySet {
    fn from_iter<I: IntoIterator<Item = Key>>(iter: I) -> Self {
        KeySet {
            keys: iter.into_iter().collect(),
        }
    }
}

impl IntoIterator for KeySet {
    type Item = Key;
    type IntoIter = std::vec::IntoIter<Key>;

    fn into_iter(self) -> Self::IntoIter {
        self.keys.into_iter()
    }
}

/// Whether a JWK is for signatures (or does not say). Encryption keys are common in published
/// sets next to signing keys.
fn is_signing_key(jwk: &serde_json::Value) -> bool {
    if jwk.get("use").and_then(|u| u.as_str()) == Some("enc") {
        return false;
    }
    if let Some(ops) = jwk.get("key_ops").and_then(|o| o.as_array()) {
        if !ops.iter().any(|op| op.as_str() == Some("verify")) {
            return false;
        }
    }
    match jwk.get("alg").and_then(|a| a.as_str()) {
        Some(alg) => !is_encryption_algorithm(alg),
        None => true,
    }
}

/// RFC 7518 §4.1 key-management algorithms.
fn is_encryption_algorithm(alg: &str) -> bool {
    alg == "dir"
        || alg == "RSA1_5"
        || ["RSA-OAEP", "ECDH-ES", "A128", "A192", "A256", "PBES2"]
            .iter()
            .any(|p| alg.starts_with(p))
}

fn curve_algorithm(curve: &EllipticCurve) -> Option<Algorithm> {
    match curve {
        EllipticCurve::P256 => Some(Algorithm::ES256),
        EllipticCurve::P384 => Some(Algorithm::ES384),
        EllipticCurve::P521 | EllipticCurve::Ed25519 => None,
    }
}

fn implied_algorithm(
    params: &AlgorithmParameters,
    defaults: &[Algorithm],
) -> Result<Algorithm, String> {
    let default_for = |family: AlgorithmFamily, kty: &str| {
        defaults.iter().copied().find(|a| a.family() == family).ok_or_else(|| {
            format!("{kty} key without alg: its algorithm is ambiguous; set alg in the JWK or pass a default (KeySet::from_jwks_json_with_defaults)")
        })
    };
    match params {
        AlgorithmParameters::EllipticCurve(p) => curve_algorithm(&p.curve).ok_or_else(|| {
            format!(
                "EC curve {:?} is not supported (P-256 and P-384 are)",
                p.curve
            )
        }),
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Ok(Algorithm::EdDSA)
        }
        AlgorithmParameters::OctetKeyPair(p) => Err(format!(
            "OKP curve {:?} is not a signature curve (Ed25519 is)",
            p.curve
        )),
        AlgorithmParameters::RSA(_) => default_for(AlgorithmFamily::Rsa, "RSA"),
        AlgorithmParameters::OctetKey(_) => default_for(AlgorithmFamily::Hmac, "oct"),
    }
}

/// Catches a key of the wrong size or curve at load time; verification would otherwise fail
/// every token with "bad signature" (and the RustCrypto Ed25519 verifier panics on short keys).
fn check_public_key(alg: Algorithm, key: &DecodingKey) -> Result<(), ConfigError> {
    let (len, what) = match alg {
        Algorithm::ES256 => (65, "a P-256 public key (65-byte uncompressed point)"),
        Algorithm::ES384 => (97, "a P-384 public key (97-byte uncompressed point)"),
        Algorithm::EdDSA => (32, "a 32-byte Ed25519 public key"),
        // RSA keys are checked by the backend when used; `as_bytes` is not defined for (n, e).
        _ => return Ok(()),
    };
    let bytes = key.as_bytes();
    let uncompressed_ok = alg == Algorithm::EdDSA || bytes.first() == Some(&0x04);
    if bytes.len() != len || !uncompressed_ok {
        return Err(invalid(
            alg,
            format!("{alg:?} needs {what}; this key is {} bytes", bytes.len()),
        ));
    }
    Ok(())
}

fn pem_wrap(label: &str, der: &[u8]) -> String {
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        STANDARD.encode(der)
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn invalid(alg: Algorithm, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidKey {
        alg,
        kid: None,
        reason: reason.into(),
    }
}

fn jwks_error(index: Option<usize>, kid: Option<String>, reason: String) -> ConfigError {
    ConfigError::InvalidJwk { index, kid, reason }
}

fn config_reason(e: ConfigError) -> String {
    match e {
        ConfigError::InvalidKey { reason, .. } => reason,
        other => other.to_string(),
    }
}
