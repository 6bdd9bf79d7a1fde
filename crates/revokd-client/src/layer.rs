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
//! with `error="invalid_request"` when it carries several `Authorization` headers. gRPC
//! requests (`content-type: application/grpc*`) get a trailers-only gRPC answer instead: HTTP
//! 200 with `grpc-status: 16` (UNAUTHENTICATED), `grpc-message` and the same
//! `WWW-Authenticate`. The description is fixed text per failed check
//! ([`ValidationError::client_description`]); the details are logged at debug level, never
//! sent.
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

use http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::validator::{Validated, ValidationError, Validator};

const REALM_ONLY: &str = "Bearer realm=\"revokd\"";
/// gRPC status code UNAUTHENTICATED.
const GRPC_UNAUTHENTICATED: &str = "16";

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

/// Why a request was not let through.
#[derive(Debug)]
enum Rejection {
    /// No `Authorization: Bearer` at all (absent, or another scheme): RFC 6750 §3.1 says to
    /// answer with the challenge only.
    NoToken,
    /// Several `Authorization` headers.
    Ambiguous,
    /// A bearer token that failed validation.
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
    fn into_response<B: Default>(self, grpc: bool) -> Response<B> {
        let (status, challenge, description) = match &self {
            Rejection::NoToken => (
                StatusCode::UNAUTHORIZED,
                REALM_ONLY.to_owned(),
                "missing bearer token",
            ),
            Rejection::Ambiguous => {
                let d = "several Authorization headers";
                (StatusCode::BAD_REQUEST, challenge("invalid_request", d), d)
            }
            Rejection::Invalid(e) => {
                let d = e.client_description();
                (StatusCode::UNAUTHORIZED, challenge("invalid_token", d), d)
            }
        };
        let mut response = Response::new(B::default());
        let headers = response.headers_mut();
        // Descriptions are fixed ASCII text, so these conversions cannot fail; fall back to
        // the bare challenge rather than panic if one ever does.
        let challenge = HeaderValue::from_str(&challenge)
            .unwrap_or_else(|_| HeaderValue::from_static(REALM_ONLY));
        headers.insert(WWW_AUTHENTICATE, challenge);
        if grpc {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            headers.insert(
                "grpc-status",
                HeaderValue::from_static(GRPC_UNAUTHENTICATED),
            );
            if let Ok(message) = HeaderValue::from_str(&grpc_percent_encode(description)) {
                headers.insert("grpc-message", message);
            }
        } else {
            *response.status_mut() = status;
        }
        response
    }
}

fn challenge(error: &str, description: &str) -> String {
    format!("{REALM_ONLY}, error=\"{error}\", error_description=\"{description}\"")
}

fn authorize<B>(validator: &Validator, req: &Request<B>) -> Result<Validated, Rejection> {
    let mut values = req.headers().get_all(AUTHORIZATION).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Err(Rejection::NoToken),
        (Some(_), Some(_)) => return Err(Rejection::Ambiguous),
        (Some(value), None) => value,
    };
    let token = bearer_token(value.as_bytes()).ok_or(Rejection::NoToken)?;
    let token = std::str::from_utf8(token).map_err(|_| {
        Rejection::Invalid(ValidationError::Malformed {
            reason: "token is not ASCII".into(),
        })
    })?;
    validator.validate(token).map_err(Rejection::Invalid)
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 7235 §2.1), or `None` for
/// another scheme. An empty token is returned as empty, to fail validation as malformed.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
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
