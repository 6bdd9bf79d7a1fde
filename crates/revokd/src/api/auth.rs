//! Admin authorization. With `--auth-key` and/or `--admin-client-ca` set, every write and
//! membership call needs an admin:
//! - a bearer JWT (`authorization: Bearer <token>`) signed by the configured key, from the
//!   configured issuer, for the configured audience, carrying the admin scope; or
//! - a client certificate issued by the admin CA (`--admin-client-ca`) whose name is allowed
//!   (`--admin-client-names`, default any): an admin certificate grants every scope.
//!
//! Reads of the revocation set need the read scope (or an admin certificate) when one is
//! configured, and are open otherwise; `Status` and `Heartbeat` probes always are, for
//! health checks. A credential sent with a `Heartbeat` is verified (with the read scope when
//! one is set) and names the replica's reporter (`crate::replicas`); a replica's report
//! needs one when reads do.
//!
//! Tokens are checked beyond their signature: `exp`, `nbf` and `iat` within [`LEEWAY_SECS`],
//! a lifetime (`exp - iat`) of at most `--auth-max-token-lifetime-secs`, a `sub` outside the
//! `cert:` namespace of certificate admins, and, on every call, revokd's own revocation set:
//! an admin token whose `jti` is revoked, or that a subject, client or key rule covers, is
//! refused from the moment the node has applied that revocation (a leaked admin token is
//! revoked with revokd itself). Issuer rules are not applied to admin tokens: one write could
//! otherwise lock every token admin out for good. A write another node forwards carries the admin's token (verified again here) or,
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
use crate::storage::StateMachineStore;

/// Seconds of clock skew allowed on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 30;
/// The prefix of identities proven by an admin certificate; no token subject may carry it.
pub const CERT_PREFIX: &str = "cert:";

/// Verifies bearer tokens. Cheap to clone.
#[derive(Clone)]
pub struct Authorizer {
    inner: Arc<Inner>,
    /// The node's own revocation set, which admin tokens are checked against.
    revoked: Option<StateMachineStore>,
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
    max_lifetime: u64,
    /// Tokens verified recently, with their claims and when: an admin or a validator sends
    /// the same token on every call, and a signature check per call costs more than a read.
    /// An entry is used only until the token expires and for at most [`RECHECK`]; the
    /// revocation check still runs on every call.
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
    /// Issued at: not in the future, and the start of the lifetime checked.
    #[serde(default)]
    iat: Option<u64>,
    /// Token id: checked against the node's revoked ids.
    #[serde(default)]
    jti: Option<String>,
    /// The client the token was issued to (`azp`, else `client_id`), for client rules.
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    /// The signing key's id, from the header, for key rules.
    #[serde(skip)]
    kid: Option<String>,
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
            revoked: None,
        }))
    }

    /// Checks admin tokens against `sm`, the node's own revocation set, on every call.
    pub fn checking_revocations(mut self, sm: StateMachineStore) -> Self {
        self.revoked = Some(sm);
        self
    }
}

impl Tokens {
    fn new(s: &AuthSettings) -> Result<Tokens, ConfigError> {
        let bad =
            |m: String| ConfigError::Invalid(format!("auth-key {}: {m}", s.key_file.display()));
        let bytes = std::fs::read(&s.key_file).map_err(|e| bad(e.to_string()))?;
        let key = match s.algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                // The secret is the file's bytes as they are (a binary secret stays intact),
                // less one line ending, which `echo` and editors add.
                let secret = bytes
                    .strip_suffix(b"\r\n")
                    .or_else(|| bytes.strip_suffix(b"\n"))
                    .unwrap_or(&bytes);
                if secret.len() < 32 {
                    return Err(bad("an HMAC secret needs at least 32 bytes".into()));
                }
                DecodingKey::from_secret(secret)
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
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Ok(Tokens {
            key,
            validation,
            admin_scope: s.admin_scope.clone(),
            read_scope: s.read_scope.clone(),
            max_lifetime: s.max_token_lifetime.as_secs(),
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
        let bearer = bearer(headers);
        let need = match kind {
            Kind::Write => tokens.map_or("revokd:admin", |t| t.admin_scope.as_str()),
            Kind::Read if path == HEARTBEAT => return self.reporter(bearer, caller),
            Kind::Read if path.starts_with("/revokd.v1.Cluster/") => return Ok(None),
            Kind::Read => match tokens.and_then(|t| t.read_scope.as_deref()) {
                Some(scope) => scope,
                None => return Ok(None),
            },
        };
        // A token is verified whenever tokens are configured and one is sent, also on a
        // forwarded call: the leader does not take the follower's word for it.
        if let (Some(tokens), Some(token)) = (tokens, bearer) {
            return tokens
                .verify(token, Some(need), self.revoked.as_ref())
                .map(Some);
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

/// The path of `Cluster/Heartbeat`, whose caller is identified but not required to be.
const HEARTBEAT: &str = "/revokd.v1.Cluster/Heartbeat";

/// The bearer token of a call, if any.
fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

impl Authorizer {
    /// Who reports a heartbeat: the verified identity of the credential sent (which must
    /// carry the read scope when one is set), or `None` for an anonymous probe. A credential
    /// that does not verify counts as none: the probe itself is open, so a client whose token
    /// was revoked or expired keeps seeing which nodes are up (and learns why its writes are
    /// refused from the writes themselves); a replica's report then needs a credential that
    /// does verify (`api::cluster`).
    fn reporter(&self, bearer: Option<&str>, caller: &Caller) -> Result<Option<String>, Refusal> {
        if let (Some(tokens), Some(token)) = (self.inner.tokens.as_ref(), bearer) {
            let need = tokens.read_scope.as_deref();
            return match tokens.verify(token, need, self.revoked.as_ref()) {
                Ok(who) => Ok(Some(who)),
                Err(Refusal::Unauthenticated(why) | Refusal::Forbidden(why)) => {
                    tracing::debug!(reason = %why, "auth: heartbeat credential not accepted; taken as anonymous");
                    Ok(None)
                }
            };
        }
        match (&caller.admin_cert, &self.inner.certs) {
            (Some(name), Some(c)) if c.names.is_empty() || c.names.contains(name) => {
                Ok(Some(format!("{CERT_PREFIX}{name}")))
            }
            _ => Ok(None),
        }
    }
}

/// Unix seconds now.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Tokens {
    /// The `sub` of a valid, unrevoked token carrying scope `need` (any scope for `None`).
    fn verify(
        &self,
        token: &str,
        need: Option<&str>,
        revoked: Option<&StateMachineStore>,
    ) -> Result<String, Refusal> {
        let claims = match self.remembered(token) {
            Some(claims) => claims,
            None => {
                let data = jsonwebtoken::decode::<AdminClaims>(token, &self.key, &self.validation)
                    .map_err(|e| Refusal::Unauthenticated(format!("token rejected: {e}")))?;
                let mut claims = data.claims;
                claims.kid = data.header.kid;
                self.check_claims(&claims)?;
                let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
                if verified.len() >= MAX_REMEMBERED {
                    verified.clear();
                }
                verified.insert(token.to_owned(), (claims.clone(), Instant::now()));
                claims
            }
        };
        if let Some(sm) = revoked {
            check_not_revoked(&claims, sm)?;
        }
        let sub = claims.sub.clone().unwrap_or_default();
        if let Some(need) = need {
            if !claims.has_scope(need) {
                return Err(Refusal::Forbidden(format!(
                    "token of {sub:?} lacks scope {need}"
                )));
            }
        }
        Ok(sub)
    }

    /// What the signature check does not cover: `iat` not in the future, the lifetime, and
    /// the subject's namespace.
    fn check_claims(&self, claims: &AdminClaims) -> Result<(), Refusal> {
        let bad = |m: String| Err(Refusal::Unauthenticated(format!("token rejected: {m}")));
        let now = unix_now();
        if let Some(iat) = claims.iat {
            if iat > now.saturating_add(LEEWAY_SECS) {
                return bad(format!(
                    "issued in the future (iat {iat}, now {now}); check the issuer's clock"
                ));
            }
        }
        let exp = claims.exp.unwrap_or(0);
        let lifetime = exp.saturating_sub(claims.iat.unwrap_or(now));
        if lifetime > self.max_lifetime {
            return bad(format!(
                "its lifetime of {lifetime} s exceeds the {} s allowed for admin tokens \
                 (auth-max-token-lifetime-secs); issue shorter-lived tokens",
                self.max_lifetime
            ));
        }
        if claims
            .sub
            .as_deref()
            .is_some_and(|s| s.starts_with(CERT_PREFIX))
        {
            return bad(format!(
                "a token's sub may not start with {CERT_PREFIX:?}, which names certificate admins"
            ));
        }
        Ok(())
    }
}

/// Refuses a token that revokd's own set revokes: by `jti`, or by a subject, client or key
/// rule (issuer rules are not applied to admin tokens, see the module docs).
fn check_not_revoked(claims: &AdminClaims, sm: &StateMachineStore) -> Result<(), Refusal> {
    let query = revokd_core::TokenQuery {
        jti: claims.jti.as_deref().unwrap_or(""),
        sub: claims.sub.as_deref(),
        azp: claims.azp.as_deref().or(claims.client_id.as_deref()),
        kid: claims.kid.as_deref(),
        iss: None,
        iat: claims.iat.and_then(|t| i64::try_from(t).ok()),
    };
    let st = sm.read();
    let why = match st.set.check(&query) {
        None => return Ok(()),
        Some(revokd_core::Match::Token(t)) => format!("its jti {:?} is revoked", t.jti()),
        Some(revokd_core::Match::Rule(r)) => {
            format!("a {} rule on {:?} revokes it", r.kind, r.value)
        }
    };
    Err(Refusal::Unauthenticated(format!(
        "token rejected: {why} in this cluster; ask for a new token"
    )))
}

impl Tokens {
    /// The claims of `token` if it was verified recently and has not expired since.
    fn remembered(&self, token: &str) -> Option<AdminClaims> {
        let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        let (claims, at) = verified.get(token)?;
        let now = unix_now();
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
                    let principal = if who.starts_with(CERT_PREFIX) {
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

    #[test]
    fn an_hmac_secret_is_the_files_bytes() {
        use jsonwebtoken::{encode, EncodingKey, Header};
        let dir = tempfile::tempdir().unwrap();
        // Not UTF-8, and with bytes a trim would drop: used exactly (less one newline).
        let mut secret: Vec<u8> = (0u8..40).map(|i| i.wrapping_mul(37) | 0x80).collect();
        secret[0] = b' ';
        let path = dir.path().join("secret");
        let mut file = secret.clone();
        file.push(b'\n');
        std::fs::write(&path, &file).unwrap();
        let settings = AuthSettings {
            key_file: path,
            algorithm: Algorithm::HS256,
            issuer: "iss".into(),
            audience: "aud".into(),
            admin_scope: "revokd:admin".into(),
            read_scope: None,
            max_token_lifetime: Duration::from_secs(3600),
        };
        let tokens = Tokens::new(&settings).unwrap();
        let now = unix_now();
        let claims = serde_json::json!({
            "iss": "iss", "aud": "aud", "sub": "alice", "scope": "revokd:admin",
            "iat": now, "exp": now + 60,
        });
        let token = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&secret),
        )
        .unwrap();
        assert_eq!(
            tokens.verify(&token, Some("revokd:admin"), None),
            Ok("alice".into())
        );
        let lossy = String::from_utf8_lossy(&secret).trim().as_bytes().to_vec();
        let other = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&lossy),
        )
        .unwrap();
        assert!(tokens.verify(&other, Some("revokd:admin"), None).is_err());
    }

    fn claims(scope: Option<&str>, scp: Option<Scopes>) -> AdminClaims {
        AdminClaims {
            sub: Some("a".into()),
            exp: None,
            iat: None,
            jti: None,
            azp: None,
            client_id: None,
            kid: None,
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
