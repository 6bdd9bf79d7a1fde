//! Admin authorization. With `--auth-key` and/or `--admin-client-ca` set, every write and
//! membership call needs an admin:
//! - a bearer JWT (`authorization: Bearer <token>`) signed by the configured key, from the
//!   configured issuer, for the configured audience, carrying the admin scope; or
//! - a client certificate issued by the admin CA (`--admin-client-ca`) whose name is allowed
//!   (`--admin-client-names`, default any): an admin certificate grants every scope.
//!
//! Reads of the revocation set need the read scope (or an admin certificate) when one is
//! configured, and are open otherwise; `Status` and `Heartbeat` always are, for health
//! checks. A write another node forwards carries the admin's token (verified again here) or,
//! when the admin used a certificate, comes from a peer holding a cluster certificate that
//! already admitted it.
//!
//! The verified identity (`sub`, or `cert:<name>`) becomes the identity recorded with the
//! write (the self-declared `x-revokd-actor` is replaced), so the revision's entry says who
//! made it; it is also the [`Principal`] the rate limits key budgets by.
//!
//! No credential or an invalid one (bad signature, expired, another issuer or audience) is
//! UNAUTHENTICATED; a valid credential without the right (scope, allowed name) is
//! PERMISSION_DENIED. The reason is logged and counted (`revokd_grpc_requests_total{code="16"|"7"}`);
//! the credential never is. Raft traffic between nodes is not covered here: that is mutual
//! TLS's job (`network::tls`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::caller::{Caller, Principal};
use super::gate::Gate;
use super::limits::{classify, Kind};
use super::ACTOR_HEADER;
use crate::config::{AuthSettings, ConfigError};
use crate::network::tls::AdminCerts;

/// Verifies bearer tokens. Cheap to clone.
#[derive(Clone)]
pub struct Authorizer {
    inner: Arc<Inner>,
}

struct Inner {
    tokens: Option<Tokens>,
    certs: Option<AdminCerts>,
}

/// How bearer tokens are verified.
struct Tokens {
    key: DecodingKey,
    validation: Validation,
    admin_scope: String,
    read_scope: Option<String>,
    /// Tokens verified recently, with their claims and when: an admin or a validator sends
    /// the same token on every call, and a signature check per call costs more than a read.
    /// An entry is used only until the token expires and for at most [`RECHECK`].
    verified: Mutex<HashMap<String, (AdminClaims, Instant)>>,
}

/// How long a verified token is remembered before its signature is checked again.
const RECHECK: Duration = Duration::from_secs(60);
/// Most tokens remembered (the memory is emptied when full).
const MAX_REMEMBERED: usize = 4096;

/// The claims the node reads.
#[derive(Clone, Deserialize)]
struct AdminClaims {
    #[serde(default)]
    sub: Option<String>,
    /// Expiry (validated by jsonwebtoken; kept to expire remembered tokens).
    #[serde(default)]
    exp: Option<u64>,
    /// RFC 8693: space-separated.
    #[serde(default)]
    scope: Option<String>,
    /// A common alternative: an array (or a space-separated string).
    #[serde(default)]
    scp: Option<Scopes>,
}

#[derive(Clone, Deserialize)]
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
    /// Builds the authorizer from validated settings: bearer tokens, admin certificates or
    /// both; `None` when neither is configured (every call is open).
    pub fn new(
        tokens: Option<&AuthSettings>,
        certs: Option<AdminCerts>,
    ) -> Result<Option<Authorizer>, ConfigError> {
        let tokens = tokens.map(Tokens::new).transpose()?;
        if tokens.is_none() && certs.is_none() {
            return Ok(None);
        }
        Ok(Some(Authorizer {
            inner: Arc::new(Inner { tokens, certs }),
        }))
    }
}

impl Tokens {
    fn new(s: &AuthSettings) -> Result<Tokens, ConfigError> {
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
        Ok(Tokens {
            key,
            validation,
            admin_scope: s.admin_scope.clone(),
            read_scope: s.read_scope.clone(),
            verified: Mutex::default(),
        })
    }
}

impl Authorizer {
    /// Decides a call of `kind` to `path` with these headers from `caller`; on success
    /// returns the identity to record (`None` for an open read). The read scope guards the
    /// revocation set (`Check`, `CheckBatch`, `Snapshot`, `Watch`); `Cluster` reads (`Status`,
    /// `Heartbeat`) stay open for health checks: they show membership and revisions only.
    pub fn authorize(
        &self,
        kind: Kind,
        path: &str,
        headers: &http::HeaderMap,
        caller: &Caller,
    ) -> Result<Option<String>, Refusal> {
        let tokens = self.inner.tokens.as_ref();
        let need = match kind {
            Kind::Write => tokens.map_or("revokd:admin", |t| t.admin_scope.as_str()),
            Kind::Read if path.starts_with("/revokd.v1.Cluster/") => return Ok(None),
            Kind::Read => match tokens.and_then(|t| t.read_scope.as_deref()) {
                Some(scope) => scope,
                None => return Ok(None),
            },
        };
        let bearer = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty());
        // A token is verified whenever tokens are configured and one is sent, also on a
        // forwarded call: the leader does not take the follower's word for it.
        if let (Some(tokens), Some(token)) = (tokens, bearer) {
            return tokens.verify(token, need).map(Some);
        }
        if let Some(name) = &caller.admin_cert {
            let certs = self.inner.certs.as_ref();
            return if certs.is_some_and(|c| c.names.is_empty() || c.names.contains(name)) {
                Ok(Some(format!("cert:{name}")))
            } else {
                Err(Refusal::Forbidden(format!(
                    "certificate {name:?} is not among the allowed admin certificates"
                )))
            };
        }
        if caller.forwarded && caller.peer {
            // Another node admitted this admin (by certificate) and recorded who it was.
            return Ok(headers
                .get(ACTOR_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned));
        }
        let accepted = match (tokens.is_some(), self.inner.certs.is_some()) {
            (true, true) => format!("a bearer token with scope {need} or an admin certificate"),
            (true, false) => format!("a bearer token with scope {need}"),
            _ => "an admin client certificate".to_owned(),
        };
        Err(Refusal::Unauthenticated(format!(
            "no credential; this call needs {accepted}"
        )))
    }
}

impl Tokens {
    /// The `sub` of a valid token carrying scope `need`.
    fn verify(&self, token: &str, need: &str) -> Result<String, Refusal> {
        let claims = match self.remembered(token) {
            Some(claims) => claims,
            None => {
                let claims =
                    jsonwebtoken::decode::<AdminClaims>(token, &self.key, &self.validation)
                        .map_err(|e| Refusal::Unauthenticated(format!("token rejected: {e}")))?
                        .claims;
                let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
                if verified.len() >= MAX_REMEMBERED {
                    verified.clear();
                }
                verified.insert(token.to_owned(), (claims.clone(), Instant::now()));
                claims
            }
        };
        let sub = claims.sub.clone().unwrap_or_default();
        if !claims.has_scope(need) {
            return Err(Refusal::Forbidden(format!(
                "token of {sub:?} lacks scope {need}"
            )));
        }
        Ok(sub)
    }
}

impl Tokens {
    /// The claims of `token` if it was verified recently and has not expired since.
    fn remembered(&self, token: &str) -> Option<AdminClaims> {
        let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        let (claims, at) = verified.get(token)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let unexpired = claims
            .exp
            .is_some_and(|exp| exp.saturating_add(self.validation.leeway) >= now);
        (at.elapsed() < RECHECK && unexpired).then(|| claims.clone())
    }
}

impl Gate for Authorizer {
    /// Refuses a call without the credential it needs; on success records the verified
    /// identity as the identity of the write and as the call's [`Principal`].
    fn admit(&self, head: &mut http::request::Parts) -> Result<(), tonic::Status> {
        let Some(kind) = classify(head.uri.path()) else {
            return Ok(());
        };
        let caller = head.extensions.get::<Caller>().cloned().unwrap_or_default();
        let method = head.uri.path().to_owned();
        match self.authorize(kind, &method, &head.headers, &caller) {
            Ok(Some(who)) => {
                // The verified identity is who the write is recorded as.
                match http::HeaderValue::from_str(&who) {
                    Ok(v) if !who.is_empty() => {
                        head.headers.insert(ACTOR_HEADER, v);
                    }
                    _ => {
                        head.headers.remove(ACTOR_HEADER);
                    }
                }
                if !caller.forwarded {
                    let principal = if who.starts_with("cert:") {
                        who
                    } else {
                        format!("sub:{who}")
                    };
                    head.extensions.insert(Principal(principal));
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
    use crate::network::tls::CaCheck;

    /// An authorizer taking admin certificates only, with these allowed names.
    fn certs_only(names: &[&str]) -> Authorizer {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).unwrap().pem();
        let certs = AdminCerts {
            ca: CaCheck::from_pem(pem.as_bytes()).unwrap(),
            names: names.iter().map(|n| n.to_string()).collect(),
        };
        Authorizer::new(None, Some(certs)).unwrap().unwrap()
    }

    #[test]
    fn admin_certificates_need_an_allowed_name_and_peers_vouch_for_forwards() {
        let auth = certs_only(&["alice"]);
        let write = |caller: &Caller, headers: &http::HeaderMap| {
            auth.authorize(Kind::Write, "/revokd.v1.Revocation/Revoke", headers, caller)
        };
        let none = http::HeaderMap::new();
        let cert = |name: &str| Caller {
            admin_cert: Some(name.into()),
            ..Caller::default()
        };
        assert_eq!(write(&cert("alice"), &none), Ok(Some("cert:alice".into())));
        assert!(
            matches!(write(&cert("bob"), &none), Err(Refusal::Forbidden(m)) if m.contains("\"bob\""))
        );
        assert!(matches!(write(&Caller::default(), &none),
            Err(Refusal::Unauthenticated(m)) if m.contains("an admin client certificate")));
        // A bearer token means nothing without --auth-key.
        let mut bearer = http::HeaderMap::new();
        bearer.insert("authorization", "Bearer abc".parse().unwrap());
        assert!(matches!(
            write(&Caller::default(), &bearer),
            Err(Refusal::Unauthenticated(_))
        ));
        // A write a peer forwarded keeps the identity the peer recorded; the same header
        // from anyone else counts for nothing.
        let mut actor = http::HeaderMap::new();
        actor.insert(ACTOR_HEADER, "cert:alice".parse().unwrap());
        let peer = Caller {
            peer: true,
            forwarded: true,
            ..Caller::default()
        };
        assert_eq!(write(&peer, &actor), Ok(Some("cert:alice".into())));
        let stranger = Caller {
            forwarded: true,
            ..Caller::default()
        };
        assert!(matches!(
            write(&stranger, &actor),
            Err(Refusal::Unauthenticated(_))
        ));
        // Reads are open without a read scope.
        let read = auth.authorize(
            Kind::Read,
            "/revokd.v1.Revocation/Check",
            &none,
            &Caller::default(),
        );
        assert_eq!(read, Ok(None));
        assert!(certs_only(&[])
            .authorize(Kind::Write, "/x", &none, &cert("anyone"))
            .is_ok());
    }

    fn claims(scope: Option<&str>, scp: Option<Scopes>) -> AdminClaims {
        AdminClaims {
            sub: Some("a".into()),
            exp: None,
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
