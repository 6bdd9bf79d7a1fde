//! A tower layer that validates `Authorization: Bearer` tokens.
//!
//! [`BearerAuthLayer`] works with any `http`-based tower server, axum 0.8 and tonic 0.14
//! included. A valid token's [`Validated`] (claims, key, staleness flag) is inserted into the
//! request's extensions before the inner service runs; read it with axum's
//! `Extension<Validated>` or tonic's `request.extensions().get::<Validated>()`.
//!
//! Rejections follow RFC 6750 §3: `401` with
//! `WWW-Authenticate: Bearer realm="revokd", error="invalid_token", error_description="..."`,
//! or just `Bearer realm="revokd"` when the request carries no bearer token at all, and `400`
//! with `error="invalid_request"` when it carries several `Authorization` headers. When the
//! replica is too stale to tell under fail closed ([`ValidationError::Stale`]) the answer is
//! `503` with `Retry-After` instead: the token may well be good, and a `401` would tell the
//! client to throw it away. gRPC requests (`content-type: application/grpc*`) get a
//! trailers-only gRPC answer instead: HTTP 200 with `grpc-status: 16` (UNAUTHENTICATED), or
//! `14` (UNAVAILABLE) for a stale replica, `grpc-message` and the same headers. The
//! description is fixed text per failed check ([`ValidationError::client_description`]); the
//! details are logged at debug level, never sent.
//!
//! [`Rejection`] and [`bearer_token`] are public so that other front ends (the
//! `revokd-agent`'s forward-auth and ext_authz answers) say exactly what this layer says.
//!
//! ```no_run
//! use std::sync::Arc;
//! use axum::{routing::get, Extension, Router};
//! use revokd_client::{BearerAuthLayer, Validated, Validator};
//!
//! # fn app(validator: Validator) -> Router {
//! Router::new()
//!     .route("/me", get(|Extension(v): Extension<Validated>| async move {
//!         v.claims.sub.unwrap_or_default()
//!     }))
//!     .layer(BearerAuthLayer::new(Arc::new(validator)))
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::validator::{Validated, ValidationError, Validator};

const REALM_ONLY: &str = "Bearer realm=\"revokd\"";
/// gRPC status code UNAUTHENTICATED.
const GRPC_UNAUTHENTICATED: &str = "16";
/// gRPC status code UNAVAILABLE.
const GRPC_UNAVAILABLE: &str = "14";
/// What `Retry-After` says when the replica is too stale to answer: about one heartbeat of
/// the client's default interval, after which a reconnected replica is fresh again.
pub const STALE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Wraps a service with bearer-token validation. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BearerAuthLayer {
    validator: Arc<Validator>,
}

impl BearerAuthLayer {
    /// A layer validating with `validator`.
    pub fn new(validator: Arc<Validator>) -> Self {
        BearerAuthLayer { validator }
    }
}

impl<S> Layer<S> for BearerAuthLayer {
    type Service = BearerAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerAuth {
            inner,
            validator: self.validator.clone(),
        }
    }
}

/// The service [`BearerAuthLayer`] produces: validates, then calls `S` or answers itself.
#[derive(Debug, Clone)]
pub struct BearerAuth<S> {
    inner: S,
    validator: Arc<Validator>,
}

impl<S> BearerAuth<S> {
    /// Wraps `inner` directly, without a layer.
    pub fn new(inner: S, validator: Arc<Validator>) -> Self {
        BearerAuth { inner, validator }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for BearerAuth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        match authorize(&self.validator, &req) {
            Ok(validated) => {
                if let Some(staleness) = validated.stale {
                    tracing::debug!(
                        ?staleness,
                        "bearer auth: accepted from a stale replica (fail open)"
                    );
                }
                req.extensions_mut().insert(validated);
                ResponseFuture {
                    kind: Kind::Inner {
                        future: self.inner.call(req),
                    },
                }
            }
            Err(rejection) => {
                tracing::debug!(error = %rejection, "bearer auth: rejected");
                let response = rejection.into_response(is_grpc(&req));
                ResponseFuture {
                    kind: Kind::Rejected {
                        response: Some(response),
                    },
                }
            }
        }
    }
}

pin_project! {
    /// The future of [`BearerAuth`]: the inner service's, or an immediate rejection.
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Inner { #[pin] future: F },
        Rejected { response: Option<Response<B>> },
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => future.poll(cx),
            KindProj::Rejected { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}

/// Why a request was not let through, and how to answer it (RFC 6750 §3).
#[derive(Debug)]
pub enum Rejection {
    /// No `Authorization: Bearer` at all (absent, or another scheme): RFC 6750 §3.1 says to
    /// answer with the challenge only.
    NoToken,
    /// Several `Authorization` headers.
    Ambiguous,
    /// A bearer token that failed validation (or could not be checked: see
    /// [`Rejection::is_unavailable`]).
    Invalid(ValidationError),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::NoToken => f.write_str("no bearer token"),
            Rejection::Ambiguous => f.write_str("several Authorization headers"),
            Rejection::Invalid(e) => e.fmt(f),
        }
    }
}

impl Rejection {
    /// Whether the answer is "cannot tell now" (the replica is too stale under fail closed)
    /// rather than "this token is no good".
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Rejection::Invalid(ValidationError::Stale { .. }))
    }

    /// The HTTP status: `401`, `400` for several `Authorization` headers, `503` when the
    /// replica is too stale to tell.
    pub fn status(&self) -> StatusCode {
        match self {
            _ if self.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::Ambiguous => StatusCode::BAD_REQUEST,
            Rejection::NoToken | Rejection::Invalid(_) => StatusCode::UNAUTHORIZED,
        }
    }

    /// Fixed text for the client: carries nothing from the token or the revocation.
    pub fn description(&self) -> &'static str {
        match self {
            Rejection::NoToken => "missing bearer token",
            Rejection::Ambiguous => "several Authorization headers",
            Rejection::Invalid(e) => e.client_description(),
        }
    }

    /// The `WWW-Authenticate` challenge, for every answer but `503`.
    pub fn challenge(&self) -> Option<HeaderValue> {
        let challenge = match self {
            _ if self.is_unavailable() => return None,
            Rejection::NoToken => return Some(HeaderValue::from_static(REALM_ONLY)),
            Rejection::Ambiguous => challenge("invalid_request", self.description()),
            Rejection::Invalid(_) => challenge("invalid_token", self.description()),
        };
        // Descriptions are fixed ASCII text, so this cannot fail; fall back to the bare
        // challenge rather than panic if one ever does.
        Some(
            HeaderValue::from_str(&challenge)
                .unwrap_or_else(|_| HeaderValue::from_static(REALM_ONLY)),
        )
    }

    /// `Retry-After` for a `503`.
    pub fn retry_after(&self) -> Option<Duration> {
        self.is_unavailable().then_some(STALE_RETRY_AFTER)
    }

    /// The answer's headers: the challenge or `Retry-After`.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(challenge) = self.challenge() {
            headers.insert(WWW_AUTHENTICATE, challenge);
        }
        if let Some(after) = self.retry_after() {
            headers.insert(RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
        }
        headers
    }

    fn into_response<B: Default>(self, grpc: bool) -> Response<B> {
        let mut response = Response::new(B::default());
        *response.headers_mut() = self.headers();
        if grpc {
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            let code = if self.is_unavailable() {
                GRPC_UNAVAILABLE
            } else {
                GRPC_UNAUTHENTICATED
            };
            headers.insert("grpc-status", HeaderValue::from_static(code));
            if let Ok(message) = HeaderValue::from_str(&grpc_percent_encode(self.description())) {
                headers.insert("grpc-message", message);
            }
        } else {
            *response.status_mut() = self.status();
        }
        response
    }
}

fn challenge(error: &str, description: &str) -> String {
    format!("{REALM_ONLY}, error=\"{error}\", error_description=\"{description}\"")
}

/// The bearer token of a request's headers: exactly one `Authorization` header, with the
/// `Bearer` scheme.
pub fn bearer_from_headers(headers: &HeaderMap) -> Result<&str, Rejection> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Err(Rejection::NoToken),
        (Some(_), Some(_)) => return Err(Rejection::Ambiguous),
        (Some(value), None) => value,
    };
    let token = bearer_token(value.as_bytes()).ok_or(Rejection::NoToken)?;
    std::str::from_utf8(token).map_err(|_| {
        Rejection::Invalid(ValidationError::Malformed {
            reason: "token is not ASCII".into(),
        })
    })
}

fn authorize<B>(validator: &Validator, req: &Request<B>) -> Result<Validated, Rejection> {
    let token = bearer_from_headers(req.headers())?;
    validator.validate(token).map_err(Rejection::Invalid)
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 7235 §2.1), or `None` for
/// another scheme. An empty token is returned as empty, to fail validation as malformed.
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer";
    let (scheme, rest) = value.split_at_checked(SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    match rest.first() {
        None => Some(rest),
        Some(b' ') => Some(rest.trim_ascii()),
        // "Bearerx ..." is another scheme.
        Some(_) => None,
    }
}

fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

/// gRPC's `grpc-message` encoding: bytes outside printable ASCII, and `%`, as `%XX`.
fn grpc_percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_exact() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bEaReR   abc  "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Bearer"), Some(&b""[..]));
        assert_eq!(bearer_token(b"Bearerabc"), None);
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bear"), None);
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(grpc_percent_encode("token expired"), "token expired");
        assert_eq!(grpc_percent_encode("100% é"), "100%25 %C3%A9");
    }
}
