//! The one place a request becomes a decision, whatever front end asked: allow (with the
//! identity headers to pass upstream), refuse (`401` or `400`, with the RFC 6750 challenge
//! the client crate's `BearerAuthLayer` sends), or "cannot tell now" (`503` with
//! `Retry-After`: the replica is too stale under fail closed, or the issuer's keys never
//! loaded). Forward-auth and ext_authz only translate it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use revokd_client::layer::{bearer_from_headers, STALE_RETRY_AFTER};
use revokd_client::{Rejection, Validated, ValidationError};
use serde_json::Value;

use crate::issuers::{Issuers, Refusal};
use crate::metrics::Metrics;

/// Which front end asked (a metrics label).
#[derive(Debug, Clone, Copy)]
pub enum Frontend {
    /// HTTP forward-auth (nginx `auth_request`, Caddy `forward_auth`, Traefik `ForwardAuth`).
    ForwardAuth,
    /// Envoy ext_authz v3 over gRPC.
    ExtAuthz,
}

impl Frontend {
    fn label(self) -> &'static str {
        match self {
            Frontend::ForwardAuth => "forward_auth",
            Frontend::ExtAuthz => "ext_authz",
        }
    }
}

/// The header a fail-open acceptance from a stale replica carries upstream.
pub const STALE_HEADER: &str = "x-revokd-stale";

/// What to answer.
#[derive(Debug)]
pub enum Decision {
    /// Let the request through with these headers added.
    Allow {
        /// The identity headers (`--claim-header`), and `X-Revokd-Stale` when accepted from
        /// a stale replica under fail open.
        headers: Vec<(HeaderName, HeaderValue)>,
    },
    /// Refuse it (or, for a stale replica under fail closed, say "cannot tell now").
    Refuse(Rejection),
    /// The token's issuer has no key set yet: cannot tell now.
    KeysUnavailable,
}

impl Decision {
    /// The HTTP status to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            Decision::Allow { .. } => StatusCode::OK,
            Decision::Refuse(r) => r.status(),
            Decision::KeysUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Whether the answer is "cannot tell now" (503).
    pub fn is_unavailable(&self) -> bool {
        self.status() == StatusCode::SERVICE_UNAVAILABLE
    }

    /// The headers of a refusal: the challenge, or `Retry-After`.
    pub fn refusal_headers(&self) -> HeaderMap {
        match self {
            Decision::Allow { .. } => HeaderMap::new(),
            Decision::Refuse(r) => r.headers(),
            Decision::KeysUnavailable => {
                let mut h = HeaderMap::new();
                h.insert(
                    RETRY_AFTER,
                    HeaderValue::from(STALE_RETRY_AFTER.as_secs().max(1)),
                );
                h
            }
        }
    }

    /// Fixed text for the client (nothing from the token).
    pub fn description(&self) -> &'static str {
        match self {
            Decision::Allow { .. } => "ok",
            Decision::Refuse(r) => r.description(),
            Decision::KeysUnavailable => "signing keys unavailable",
        }
    }

    /// The `outcome` label.
    pub fn outcome(&self) -> &'static str {
        match self {
            Decision::Allow { .. } => "allow",
            _ if self.is_unavailable() => "unavailable",
            _ => "deny",
        }
    }

    /// The `reason` label: which check decided.
    pub fn reason(&self) -> &'static str {
        match self {
            Decision::Allow { .. } => "ok",
            Decision::KeysUnavailable => "keys_unavailable",
            Decision::Refuse(Rejection::NoToken) => "missing_token",
            Decision::Refuse(Rejection::Ambiguous) => "several_authorization_headers",
            Decision::Refuse(Rejection::Invalid(e)) => match e {
                ValidationError::TooLong { .. } => "too_long",
                ValidationError::Malformed { .. } => "malformed",
                ValidationError::UnknownKey { .. } | ValidationError::AmbiguousKey { .. } => {
                    "unknown_key"
                }
                ValidationError::AlgorithmNotAllowed { .. } => "algorithm_not_allowed",
                ValidationError::BadSignature => "bad_signature",
                ValidationError::Expired => "expired",
                ValidationError::LifetimeTooLong { .. } => "lifetime_too_long",
                ValidationError::NotYetValid => "not_yet_valid",
                ValidationError::WrongIssuer => "wrong_issuer",
                ValidationError::WrongAudience => "wrong_audience",
                ValidationError::MissingClaim { .. } => "missing_claim",
                ValidationError::Revoked(_) => "revoked",
                ValidationError::Stale { .. } => "stale",
                _ => "backend",
            },
        }
    }
}

/// Decides requests. Cheap to share behind an [`Arc`].
pub struct Decider {
    issuers: Arc<Issuers>,
    claim_headers: Vec<(String, HeaderName)>,
    metrics: Arc<Metrics>,
}

impl Decider {
    /// A decider over `issuers`, passing `claim_headers` upstream.
    pub fn new(
        issuers: Arc<Issuers>,
        claim_headers: Vec<(String, HeaderName)>,
        metrics: Arc<Metrics>,
    ) -> Decider {
        Decider {
            issuers,
            claim_headers,
            metrics,
        }
    }

    /// Decides a request from its headers (only `Authorization` is read), and counts it.
    pub async fn decide(&self, headers: &HeaderMap, frontend: Frontend) -> Decision {
        let started = Instant::now();
        let decision = match bearer_from_headers(headers) {
            Err(rejection) => Decision::Refuse(rejection),
            Ok(token) => match self.issuers.validate(token).await {
                Ok(validated) => Decision::Allow {
                    headers: self.identity(&validated),
                },
                Err(Refusal::Invalid(e)) => Decision::Refuse(Rejection::Invalid(e)),
                Err(Refusal::KeysUnavailable) => Decision::KeysUnavailable,
            },
        };
        if let Decision::Refuse(Rejection::Invalid(e)) = &decision {
            tracing::debug!(frontend = frontend.label(), error = %e, "refused");
        }
        self.metrics
            .decisions
            .with_label_values(&[frontend.label(), decision.outcome(), decision.reason()])
            .inc();
        self.metrics
            .decision_seconds
            .with_label_values(&[frontend.label()])
            .observe(started.elapsed().as_secs_f64());
        decision
    }

    fn identity(&self, v: &Validated) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::with_capacity(self.claim_headers.len() + 1);
        for (claim, header) in &self.claim_headers {
            // A claim value that cannot be a header value (control characters) is left out
            // rather than passed mangled.
            if let Some(value) = claim_text(v, claim).and_then(|t| HeaderValue::try_from(t).ok()) {
                out.push((header.clone(), value));
            }
        }
        if let Some(staleness) = v.stale {
            out.push((
                HeaderName::from_static(STALE_HEADER),
                HeaderValue::from(staleness_secs(staleness)),
            ));
        }
        out
    }
}

fn staleness_secs(d: Duration) -> u64 {
    d.as_secs().max(1)
}

/// A claim as header text: strings as they are, arrays joined by spaces (`scp`, `aud`),
/// numbers and booleans as JSON; objects and absent claims give nothing.
fn claim_text(v: &Validated, claim: &str) -> Option<String> {
    let c = &v.claims;
    let some = |s: &Option<String>| s.clone();
    match claim {
        "sub" => some(&c.sub),
        "iss" => some(&c.iss),
        "jti" => some(&c.jti),
        "azp" => some(&c.azp),
        "client_id" => some(&c.client_id),
        "aud" => (!c.aud.is_empty()).then(|| c.aud.join(" ")),
        "exp" => Some(c.exp.to_string()),
        "iat" => c.iat.map(|t| t.to_string()),
        "nbf" => c.nbf.map(|t| t.to_string()),
        other => match c.extra.get(other)? {
            Value::String(s) => Some(s.clone()),
            Value::Array(items) => Some(
                items
                    .iter()
                    .map(|i| match i {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null | Value::Object(_) => None,
        },
    }
}
