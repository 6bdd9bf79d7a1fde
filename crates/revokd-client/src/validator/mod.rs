//! JWT validation: keys bound to algorithms, registered-claim checks, then revocation.
//!
//! A [`Validator`] checks, in order, and stops at the first failure:
//! 1. the token's length (before parsing anything);
//! 2. the header: `kid` selects the key (no `kid` is fine when there is exactly one key), and
//!    `alg` must be the algorithm the key was loaded for;
//! 3. the signature and `exp` (required), `nbf` (if present), `iss`, `aud`, by jsonwebtoken;
//! 4. `jti` (required unless [`ValidatorBuilder::require_jti`] is off);
//! 5. revocation, if the validator has a [`RevocationCheck`].
//!
//! ```
//! use std::time::Duration;
//! use revokd_client::validator::{Algorithm, Key, Validator};
//!
//! let validator = Validator::builder()
//!     .key(Key::hmac(Algorithm::HS256, b"0123456789abcdef0123456789abcdef")?.kid("k1"))
//!     .issuer("https://auth.example.com")
//!     .audience("orders")
//!     .leeway(Duration::from_secs(30))
//!     .build()?;
//! assert!(validator.validate("not.a.token").is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod claims;
mod error;
mod header;
mod keys;

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{DecodingKey, Validation};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

pub use claims::{Claims, Validated};
pub use error::{ConfigError, ValidationError};
pub use jsonwebtoken::Algorithm;
pub use keys::{Key, KeySet};

use crate::check::{RevocationCheck, TokenQuery, Verdict};
use error::truncate;

/// The default clock-skew allowance for `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// The largest leeway [`ValidatorBuilder::leeway`] accepts.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// The default maximum token length in bytes.
pub const DEFAULT_MAX_TOKEN_LEN: usize = 8 * 1024;
/// The default maximum lifetime: `revokd`'s default `--max-token-lifetime-secs` (30 days).
/// The cluster refuses to keep a `jti` revocation longer than that, so a token that lives
/// longer could outlive its revocation.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// Verifies JWTs and asks the revocation check about them. Cheap to share: wrap it in an
/// [`Arc`]; validation takes `&self` and never blocks.
pub struct Validator {
    keys: Box<[KeyEntry]>,
    max_token_len: usize,
    max_lifetime: Option<Duration>,
    require_jti: bool,
    leeway: Duration,
    revocations: Option<Arc<dyn RevocationCheck>>,
}

/// A key with its jsonwebtoken `Validation` built once: per-token work stays per-token.
struct KeyEntry {
    kid: Option<Arc<str>>,
    alg: jsonwebtoken::Algorithm,
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<_> = self
            .keys
            .iter()
            .map(|k| (k.kid.as_deref(), k.alg))
            .collect();
        f.debug_struct("Validator")
            .field("keys", &keys)
            .field("max_token_len", &self.max_token_len)
            .field("max_lifetime", &self.max_lifetime)
            .field("require_jti", &self.require_jti)
            .field("leeway", &self.leeway)
            .field("revocations", &self.revocations.is_some())
            .finish()
    }
}

impl Validator {
    /// Starts a builder.
    pub fn builder() -> ValidatorBuilder {
        ValidatorBuilder::default()
    }

    /// Validates a token (the compact JWS, without any `Bearer ` prefix); the claims beyond the
    /// registered ones land in a JSON map.
    pub fn validate(&self, token: &str) -> Result<Validated, ValidationError> {
        self.validate_as::<Map<String, Value>>(token)
    }

    /// Validates a token, deserializing the claims beyond the registered ones into `C`.
    pub fn validate_as<C: DeserializeOwned>(
        &self,
        token: &str,
    ) -> Result<Validated<C>, ValidationError> {
        if token.len() > self.max_token_len {
            return Err(ValidationError::TooLong {
                len: token.len(),
                max: self.max_token_len,
            });
        }
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ValidationError::malformed(
                "not three base64url parts separated by '.'",
            ));
        };
        let entry = header::with_header(header, |h| self.select_key(&h.alg, h.kid.as_deref()))?;

        let claims: Claims<C> = jsonwebtoken::decode(token, &entry.key, &entry.validation)
            .map_err(ValidationError::from_jwt)?
            .claims;

        let now = crate::clock::unix_now();
        let leeway = self.leeway.as_secs() as i64;
        // A token "issued" in the future could slip past a rule's cut-off (rules revoke tokens
        // issued before a time): only a holder of the signing key can mint one, but it is
        // never legitimate, so reject it like an early `nbf`.
        if let Some(iat) = claims.iat {
            if iat > now.saturating_add(leeway) {
                return Err(ValidationError::NotYetValid);
            }
        }
        if let Some(max) = self.max_lifetime {
            let limit = now
                .saturating_add(i64::try_from(max.as_secs()).unwrap_or(i64::MAX))
                .saturating_add(leeway);
            if claims.exp > limit {
                return Err(ValidationError::LifetimeTooLong { max });
            }
        }
        let jti = match claims.jti.as_deref() {
            Some(jti) if !jti.is_empty() => jti,
            _ if self.require_jti => return Err(ValidationError::MissingClaim { claim: "jti" }),
            _ => "",
        };
        let stale = match &self.revocations {
            None => None,
            Some(check) => {
                let token = TokenQuery {
                    jti,
                    sub: claims.sub.as_deref(),
                    azp: claims.client(),
                    // The verifying key's kid: equal to the header's when it has one, and the
                    // single key's own when it has none, so key rules cannot be dodged by
                    // leaving `kid` out.
                    kid: entry.kid.as_deref(),
                    iss: claims.iss.as_deref(),
                    iat: claims.iat,
                };
                match check.check(&token) {
                    Verdict::Allowed { stale } => stale,
                    Verdict::Revoked(revocation) => {
                        return Err(ValidationError::Revoked(revocation))
                    }
                    Verdict::Stale { staleness } => {
                        return Err(ValidationError::Stale { staleness })
                    }
                }
            }
        };
        Ok(Validated {
            claims,
            alg: entry.alg,
            kid: entry.kid.clone(),
            stale,
        })
    }

    /// The configured leeway for `exp` and `nbf`.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// Whether a revocation check is attached.
    pub fn checks_revocation(&self) -> bool {
        self.revocations.is_some()
    }

    fn select_key(&self, alg: &str, kid: Option<&str>) -> Result<&KeyEntry, ValidationError> {
        let entry = match (kid, &*self.keys) {
            (Some(kid), keys) => keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .ok_or_else(|| ValidationError::UnknownKey { kid: truncate(kid) })?,
            (None, [only]) => only,
            (None, keys) => return Err(ValidationError::AmbiguousKey { keys: keys.len() }),
        };
        if alg != algorithm_name(entry.alg) {
            return Err(ValidationError::AlgorithmNotAllowed {
                alg: truncate(alg),
                kid: entry.kid.clone(),
                allowed: entry.alg,
            });
        }
        Ok(entry)
    }
}

/// The `alg` header value of each algorithm (RFC 7518 §3.1, RFC 8037 §3.1).
fn algorithm_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
    }
}

/// Builds a [`Validator`]; every setting is checked by [`ValidatorBuilder::build`].
pub struct ValidatorBuilder {
    keys: Vec<Key>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    leeway: Duration,
    max_token_len: usize,
    max_lifetime: Option<Duration>,
    require_jti: bool,
    revocations: Option<Arc<dyn RevocationCheck>>,
}

impl Default for ValidatorBuilder {
    fn default() -> Self {
        ValidatorBuilder {
            keys: Vec::new(),
            issuers: Vec::new(),
            audiences: Vec::new(),
            leeway: DEFAULT_LEEWAY,
            max_token_len: DEFAULT_MAX_TOKEN_LEN,
            max_lifetime: Some(DEFAULT_MAX_LIFETIME),
            require_jti: true,
            revocations: None,
        }
    }
}

impl std::fmt::Debug for ValidatorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidatorBuilder")
            .field("keys", &self.keys)
            .field("issuers", &self.issuers)
            .field("audiences", &self.audiences)
            .field("leeway", &self.leeway)
            .field("max_token_len", &self.max_token_len)
            .field("max_lifetime", &self.max_lifetime)
            .field("require_jti", &self.require_jti)
            .field("revocations", &self.revocations.is_some())
            .finish()
    }
}

impl ValidatorBuilder {
    /// Adds a key. With several keys, each needs a `kid` ([`Key::kid`]).
    pub fn key(mut self, key: Key) -> Self {
        self.keys.push(key);
        self
    }

    /// Adds every key of a set (e.g. a JWK set).
    pub fn keys(mut self, keys: impl IntoIterator<Item = Key>) -> Self {
        self.keys.extend(keys);
        self
    }

    /// Accepts tokens from this issuer; call again to accept several. Once any issuer is set,
    /// `iss` is required. Default: none set, `iss` is not checked.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuers.push(issuer.into());
        self
    }

    /// Accepts tokens for this audience (`aud` is a string or an array; one match suffices);
    /// call again to accept several. Once any audience is set, `aud` is required. Default:
    /// none set, and then a token that carries an `aud` is rejected (RFC 7519 §4.1.3).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Clock-skew allowance for `exp` and `nbf`, in whole seconds (rounded down). Default
    /// [`DEFAULT_LEEWAY`] (30 s); 0 means none; above [`MAX_LEEWAY`] (5 min) is an error.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Tokens longer than this (in bytes) are rejected before parsing. Default
    /// [`DEFAULT_MAX_TOKEN_LEN`] (8 KiB); 0 is an error.
    pub fn max_token_len(mut self, max: usize) -> Self {
        self.max_token_len = max;
        self
    }

    /// Tokens whose `exp` is further than this from now (beyond the leeway) are rejected
    /// with [`ValidationError::LifetimeTooLong`]. Set it to the cluster's
    /// `--max-token-lifetime-secs`: the cluster keeps a `jti` revocation no longer than that,
    /// so a longer-lived token could outlive its revocation. Default
    /// [`DEFAULT_MAX_LIFETIME`] (30 days, the cluster's default); `None` turns the check off.
    pub fn max_lifetime(mut self, max: Option<Duration>) -> Self {
        self.max_lifetime = max;
        self
    }

    /// Whether tokens without a `jti` are rejected. Default `true`: a token without an id
    /// cannot be revoked on its own, only by a rule. When `false`, such tokens are checked
    /// against rules with an empty `jti`.
    pub fn require_jti(mut self, require: bool) -> Self {
        self.require_jti = require;
        self
    }

    /// Checks every otherwise valid token against `check` (typically the local replica).
    /// Default: no revocation check.
    pub fn revocations(mut self, check: impl RevocationCheck) -> Self {
        self.revocations = Some(Arc::new(check));
        self
    }

    /// Checks the settings and builds the validator.
    pub fn build(self) -> Result<Validator, ConfigError> {
        if self.keys.is_empty() {
            return Err(ConfigError::NoKeys);
        }
        if self.leeway > MAX_LEEWAY {
            return Err(ConfigError::LeewayTooLarge(self.leeway));
        }
        if self.max_token_len == 0 {
            return Err(ConfigError::ZeroMaxTokenLen);
        }
        let n = self.keys.len();
        for (i, key) in self.keys.iter().enumerate() {
            match &key.kid {
                None if n > 1 => {
                    return Err(ConfigError::MissingKid {
                        keys: n,
                        alg: key.alg,
                    })
                }
                Some(kid) if self.keys[..i].iter().any(|k| k.kid.as_ref() == Some(kid)) => {
                    return Err(ConfigError::DuplicateKid(kid.to_string()))
                }
                _ => {}
            }
        }
        let mut required = vec!["exp"];
        if !self.issuers.is_empty() {
            required.push("iss");
        }
        if !self.audiences.is_empty() {
            required.push("aud");
        }
        let keys = self
            .keys
            .into_iter()
            .map(|key| {
                let mut v = Validation::new(key.alg);
                v.leeway = self.leeway.as_secs();
                v.validate_exp = true;
                v.validate_nbf = true;
                v.validate_aud = true;
                v.set_required_spec_claims(&required);
                if !self.issuers.is_empty() {
                    v.set_issuer(&self.issuers);
                }
                if !self.audiences.is_empty() {
                    v.set_audience(&self.audiences);
                }
                KeyEntry {
                    kid: key.kid,
                    alg: key.alg,
                    key: key.key,
                    validation: v,
                }
            })
            .collect();
        Ok(Validator {
            keys,
            max_token_len: self.max_token_len,
            max_lifetime: self.max_lifetime,
            require_jti: self.require_jti,
            leeway: Duration::from_secs(self.leeway.as_secs()),
            revocations: self.revocations,
        })
    }
}
