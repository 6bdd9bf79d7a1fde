//! The validator's two error types: [`ValidationError`] (a token was rejected: says which check
//! failed) and [`ConfigError`] (a key or the builder's settings are unusable).

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::Algorithm;

use crate::check::{Revocation, RevokedBy, RuleKind};

/// Why a token was rejected. Each variant names the check that failed.
///
/// The `Display` text is meant for logs: it may contain values taken from the token (a `kid`, an
/// `alg`), truncated. To answer a client, use [`ValidationError::client_description`], which is
/// fixed text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The token is longer than the validator's limit; it was not parsed.
    #[error("jwt: token is {len} bytes; the limit is {max} (ValidatorBuilder::max_token_len)")]
    TooLong {
        /// The token's length in bytes.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The token is not a well-formed JWS compact serialization: not three base64url parts,
    /// a header or payload that is not a JSON object, a claim of the wrong type, an unsupported
    /// critical header.
    #[error("jwt: malformed token: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: String,
    },
    /// The header names a `kid` that no configured key has.
    #[error("jwt: unknown key: no configured key has kid {kid:?}")]
    UnknownKey {
        /// The `kid` from the token's header (truncated to 64 characters).
        kid: String,
    },
    /// The header has no `kid` and the validator has several keys, so none can be chosen.
    #[error("jwt: token has no kid and the validator has {keys} keys; the issuer must set kid")]
    AmbiguousKey {
        /// How many keys the validator has.
        keys: usize,
    },
    /// The header's `alg` is not the algorithm bound to the selected key (this covers `none`,
    /// unknown names, and HS/RS confusion).
    #[error("jwt: algorithm {alg:?} is not allowed for key {}: the key is {allowed:?}", kid.as_deref().unwrap_or("(no kid)"))]
    AlgorithmNotAllowed {
        /// The `alg` from the token's header (truncated to 64 characters).
        alg: String,
        /// The `kid` of the selected key.
        kid: Option<Arc<str>>,
        /// The one algorithm the key accepts.
        allowed: Algorithm,
    },
    /// The signature does not verify with the selected key.
    #[error("jwt: bad signature")]
    BadSignature,
    /// `exp` is in the past, beyond the leeway.
    #[error("jwt: token expired (exp is in the past, beyond the leeway)")]
    Expired,
    /// `exp` is further in the future than the validator's maximum lifetime allows (beyond
    /// the leeway): such a token could outlive a revocation of its `jti`, which the cluster
    /// keeps only as long as its own maximum token lifetime.
    #[error("jwt: exp is further away than the maximum token lifetime ({max:?})")]
    LifetimeTooLong {
        /// The configured maximum.
        max: std::time::Duration,
    },
    /// `nbf` (or `iat`) is in the future, beyond the leeway.
    #[error("jwt: token not yet valid (nbf or iat is in the future, beyond the leeway)")]
    NotYetValid,
    /// `iss` is not one of the accepted issuers.
    #[error("jwt: wrong issuer (iss is not an accepted issuer)")]
    WrongIssuer,
    /// `aud` names none of the accepted audiences (or the token has an `aud` and the validator
    /// was given no audience: RFC 7519 §4.1.3).
    #[error("jwt: wrong audience (aud names no accepted audience)")]
    WrongAudience,
    /// A required claim is absent: `exp` always; `iss` / `aud` when the validator checks them;
    /// `jti` unless `require_jti(false)`.
    #[error("jwt: missing required claim {claim}")]
    MissingClaim {
        /// The claim's name.
        claim: &'static str,
    },
    /// The revocation check says the token is revoked.
    #[error("jwt: token revoked ({})", describe_revocation(.0))]
    Revoked(Revocation),
    /// The local replica is past its staleness bound and the policy is fail closed.
    #[error("jwt: revocation state is stale ({staleness:?} since the replica was last known up to date); rejecting under fail closed")]
    Stale {
        /// How long the replica has not been known to be up to date.
        staleness: Duration,
    },
    /// The crypto backend failed in a way that says nothing about the token (unusable key
    /// material, provider error).
    #[error("jwt: verification failed in the crypto backend: {0}")]
    Backend(String),
}

impl ValidationError {
    /// A short fixed description for the client (RFC 6750 `error_description`): it carries no
    /// value from the token or from the revocation, so it can be sent as is.
    pub fn client_description(&self) -> &'static str {
        match self {
            ValidationError::TooLong { .. } => "token too long",
            ValidationError::Malformed { .. } => "malformed token",
            ValidationError::UnknownKey { .. } | ValidationError::AmbiguousKey { .. } => {
                "unknown signing key"
            }
            ValidationError::AlgorithmNotAllowed { .. } => "algorithm not allowed",
            ValidationError::BadSignature => "bad signature",
            ValidationError::Expired => "token expired",
            ValidationError::LifetimeTooLong { .. } => "token lifetime too long",
            ValidationError::NotYetValid => "token not yet valid",
            ValidationError::WrongIssuer => "wrong issuer",
            ValidationError::WrongAudience => "wrong audience",
            ValidationError::MissingClaim { .. } => "missing required claim",
            ValidationError::Revoked(_) => "token revoked",
            ValidationError::Stale { .. } => "revocation state unavailable",
            ValidationError::Backend(_) => "token could not be verified",
        }
    }

    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        ValidationError::Malformed {
            reason: reason.into(),
        }
    }

    /// Maps a jsonwebtoken error from `decode` (the algorithm was already checked).
    pub(crate) fn from_jwt(err: jsonwebtoken::errors::Error) -> Self {
        match err.kind() {
            ErrorKind::InvalidSignature => ValidationError::BadSignature,
            ErrorKind::ExpiredSignature => ValidationError::Expired,
            ErrorKind::ImmatureSignature => ValidationError::NotYetValid,
            ErrorKind::InvalidIssuer => ValidationError::WrongIssuer,
            ErrorKind::InvalidAudience => ValidationError::WrongAudience,
            ErrorKind::MissingRequiredClaim(claim) => ValidationError::MissingClaim {
                claim: static_claim_name(claim),
            },
            ErrorKind::InvalidClaimFormat(claim) => {
                ValidationError::malformed(format!("claim {} has the wrong type", truncate(claim)))
            }
            ErrorKind::InvalidToken => ValidationError::malformed("not three base64url parts"),
            ErrorKind::Base64(e) => ValidationError::malformed(format!("bad base64url: {e}")),
            ErrorKind::Json(e) => ValidationError::malformed(format!("bad JSON: {e}")),
            ErrorKind::Utf8(e) => ValidationError::malformed(format!("bad UTF-8: {e}")),
            _ => ValidationError::Backend(err.to_string()),
        }
    }
}

/// jsonwebtoken only reports the claims it checks; anything else is reported as itself.
fn static_claim_name(claim: &str) -> &'static str {
    match claim {
        "exp" => "exp",
        "nbf" => "nbf",
        "iss" => "iss",
        "aud" => "aud",
        "sub" => "sub",
        _ => "(unknown)",
    }
}

fn describe_revocation(r: &Revocation) -> String {
    let by = match &r.by {
        RevokedBy::Jti => "by jti".to_owned(),
        RevokedBy::Rule {
            kind,
            value,
            not_before,
        } => {
            let claim = match kind {
                RuleKind::Subject => "sub",
                RuleKind::Client => "azp",
                RuleKind::Key => "kid",
                RuleKind::Issuer => "iss",
            };
            format!("by rule {claim}={value:?} issued before {not_before}")
        }
    };
    if r.reason.is_empty() {
        by
    } else {
        format!("{by}: {}", r.reason)
    }
}

/// Bounds values copied from a token into an error (they end up in logs).
pub(crate) fn truncate(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        None => s.to_owned(),
        Some((end, _)) => format!("{}…", &s[..end]),
    }
}

/// A key or a validator setting that cannot be used. Returned when keys are loaded and by
/// [`ValidatorBuilder::build`](super::ValidatorBuilder::build), so a bad configuration fails at
/// startup, not per request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The key material cannot be used with the algorithm it was given for.
    #[error("validator config: {alg:?} key{}: {reason}", kid_suffix(.kid))]
    InvalidKey {
        /// The algorithm the key was loaded for.
        alg: Algorithm,
        /// The key's `kid`, when known.
        kid: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// A JWK set could not be parsed or one of its keys cannot be used.
    #[error("validator config: JWK set{}: {reason}", index_suffix(.index, .kid))]
    InvalidJwk {
        /// The position of the offending key in `keys`, if the problem is one key.
        index: Option<usize>,
        /// The offending key's `kid`, if it has one.
        kid: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// The builder was given no key.
    #[error("validator config: no key: add one with ValidatorBuilder::key or ::keys")]
    NoKeys,
    /// Two keys have the same `kid`.
    #[error("validator config: two keys have kid {0:?}")]
    DuplicateKid(String),
    /// Several keys are configured and one has no `kid`: it could never be selected.
    #[error("validator config: {keys} keys are configured and one ({alg:?}) has no kid; with several keys each needs a kid")]
    MissingKid {
        /// How many keys are configured.
        keys: usize,
        /// The algorithm of the key without a kid.
        alg: Algorithm,
    },
    /// The leeway is above the 5 minute maximum.
    #[error("validator config: leeway {0:?} is above the maximum of 5 minutes")]
    LeewayTooLarge(Duration),
    /// The maximum token length is 0.
    #[error("validator config: max_token_len must be at least 1 byte")]
    ZeroMaxTokenLen,
}

fn kid_suffix(kid: &Option<String>) -> String {
    kid.as_ref().map(|k| format!(" {k:?}")).unwrap_or_default()
}

fn index_suffix(index: &Option<usize>, kid: &Option<String>) -> String {
    match (index, kid) {
        (Some(i), Some(k)) => format!(" key {i} (kid {k:?})"),
        (Some(i), None) => format!(" key {i}"),
        (None, _) => String::new(),
    }
}
