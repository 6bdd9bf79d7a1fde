//! Admin authorization: with `--auth-key` set, every write and membership call needs a bearer
//! JWT (`authorization: Bearer <token>`) signed by the configured key, from the configured
//! issuer, for the configured audience, carrying the admin scope; reads of the revocation set
//! need the read scope when one is configured, and are open otherwise (`Status` and
//! `Heartbeat` always are, for health checks). The verified `sub` becomes the identity
//! recorded with the write (the self-declared `x-revokd-actor` is replaced), so the revision's
//! entry says who made it.
//!
//! No credential or an invalid one (bad signature, expired, another issuer or audience) is
//! UNAUTHENTICATED; a valid token without the scope is PERMISSION_DENIED. The reason is
//! logged and counted (`revokd_grpc_requests_total{code="16"|"7"}`); the token never is.
//! Raft traffic between nodes is not covered here: that is mutual TLS's job.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::gate::Gate;
use super::limits::{classify, Kind};
use super::ACTOR_HEADER;
use crate::config::{AuthSettings, ConfigError};

/// Verifies bearer tokens. Cheap to clone.
#[derive(Clone)]
pub struct Authorizer {
    inner: Arc<Inner>,
}

struct Inner {
    key: DecodingKey,
    validation: Validation,
    admin_scope: String,
    read_scope: Option<String>,
}

/// The claims the node reads.
#[derive(Deserialize)]
struct AdminClaims {
    #[serde(default)]
    sub: Option<String>,
    /// RFC 8693: space-separated.
    #[serde(default)]
    scope: Option<String>,
    /// A common alternative: an array (or a space-separated string).
    #[serde(default)]
    scp: Option<Scopes>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Scopes {
    List(Vec<String>),
    Text(String),
}

impl AdminClaims {
    fn has_scope(&self, want: &str) -> bool {
        let in_text = |s: &str| s.split_whitespace().any(|x| x == want);
        self.scope.as_deref().is_some_and(in_text)
            || match &self.scp {
                Some(Scopes::List(l)) => l.iter().any(|x| x == want),
                Some(Scopes::Text(t)) => in_text(t),
                None => false,
            }
    }
}

/// Why a call was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No usable credential: UNAUTHENTICATED.
    Unauthenticated(String),
    /// A valid token without the needed scope: PERMISSION_DENIED.
    Forbidden(String),
}

impl Authorizer {
    /// Builds the authorizer from validated settings.
    pub fn new(s: &AuthSettings) -> Result<Authorizer, ConfigError> {
        let bad =
            |m: String| ConfigError::Invalid(format!("auth-key {}: {m}", s.key_file.display()));
        let bytes = std::fs::read(&s.key_file).map_err(|e| bad(e.to_string()))?;
        let key = match s.algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let secret = String::from_utf8_lossy(&bytes).trim().as_bytes().to_vec();
                if secret.len() < 32 {
                    return Err(bad("an HMAC secret needs at least 32 bytes".into()));
                }
                DecodingKey::from_secret(&secret)
            }
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => {
                DecodingKey::from_rsa_pem(&bytes).map_err(|e| bad(e.to_string()))?
            }
            Algorithm::ES256 | Algorithm::ES384 => {
                DecodingKey::from_ec_pem(&bytes).map_err(|e| bad(e.to_string()))?
            }
            Algorithm::EdDSA => DecodingKey::from_ed_pem(&bytes).map_err(|e| bad(e.to_string()))?,
        };
        let mut validation = Validation::new(s.algorithm);
        validation.set_issuer(&[&s.issuer]);
        validation.set_audience(&[&s.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        Ok(Authorizer {
            inner: Arc::new(Inner {
                key,
                validation,
                admin_scope: s.admin_scope.clone(),
                read_scope: s.read_scope.clone(),
            }),
        })
    }

    /// Decides a call of `kind` to `path` with these headers; on success returns the
    /// caller's `sub` (`None` for an open read without a token). The read scope guards the
    /// revocation set (`Check`, `CheckBatch`, `Snapshot`, `Watch`); `Cluster` reads (`Status`,
    /// `Heartbeat`) stay open for health checks: they show membership and revisions only.
    pub fn authorize(
        &self,
        kind: Kind,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Result<Option<String>, Refusal> {
        let need = match kind {
            Kind::Write => Some(self.inner.admin_scope.as_str()),
            Kind::Read if path.starts_with("/revokd.v1.Cluster/") => None,
            Kind::Read => self.inner.read_scope.as_deref(),
        };
        let Some(need) = need else {
            return Ok(None);
        };
        let token = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Refusal::Unauthenticated(format!(
                    "no bearer token; this call needs a token with scope {need}"
                ))
            })?;
        let claims =
            jsonwebtoken::decode::<AdminClaims>(token, &self.inner.key, &self.inner.validation)
                .map_err(|e| Refusal::Unauthenticated(format!("token rejected: {e}")))?
                .claims;
        let sub = claims.sub.clone().unwrap_or_default();
        if !claims.has_scope(need) {
            return Err(Refusal::Forbidden(format!(
                "token of {sub:?} lacks scope {need}"
            )));
        }
        Ok(Some(sub))
    }
}

impl Gate for Authorizer {
    /// Refuses a call without the credential it needs; on success records the verified
    /// subject as the identity of the write.
    fn admit(&self, head: &mut http::request::Parts) -> Result<(), tonic::Status> {
        let Some(kind) = classify(head.uri.path()) else {
            return Ok(());
        };
        let method = head.uri.path().to_owned();
        match self.authorize(kind, &method, &head.headers) {
            Ok(Some(sub)) => {
                // The verified subject is who the write is recorded as.
                match http::HeaderValue::from_str(&sub) {
                    Ok(v) if !sub.is_empty() => {
                        head.headers.insert(ACTOR_HEADER, v);
                    }
                    _ => {
                        head.headers.remove(ACTOR_HEADER);
                    }
                }
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(Refusal::Unauthenticated(m)) => {
                tracing::info!(%method, reason = %m, "auth: unauthenticated");
                Err(tonic::Status::unauthenticated(format!("revokd: auth: {m}")))
            }
            Err(Refusal::Forbidden(m)) => {
                tracing::info!(%method, reason = %m, "auth: permission denied");
                Err(tonic::Status::permission_denied(format!(
                    "revokd: auth: {m}"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(scope: Option<&str>, scp: Option<Scopes>) -> AdminClaims {
        AdminClaims {
            sub: Some("a".into()),
            scope: scope.map(str::to_owned),
            scp,
        }
    }

    #[test]
    fn scopes_match_whole_words_in_scope_or_scp() {
        assert!(claims(Some("openid revokd:admin"), None).has_scope("revokd:admin"));
        assert!(!claims(Some("revokd:administrator"), None).has_scope("revokd:admin"));
        assert!(!claims(Some("revokd:read"), None).has_scope("revokd:admin"));
        let list = Scopes::List(vec!["x".into(), "revokd:admin".into()]);
        assert!(claims(None, Some(list)).has_scope("revokd:admin"));
        let text = Scopes::Text("revokd:read revokd:admin".into());
        assert!(claims(None, Some(text)).has_scope("revokd:admin"));
        assert!(!claims(None, None).has_scope("revokd:admin"));
    }
}
