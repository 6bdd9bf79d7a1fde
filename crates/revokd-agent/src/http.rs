//! The HTTP listener (HTTP/1.1, on TCP or a Unix socket):
//!
//! - `/auth` (and anything under it, any method): forward-auth for nginx `auth_request`,
//!   Caddy `forward_auth` and Traefik `ForwardAuth`. The proxy sends the original request's
//!   `Authorization` header (and its forwarded method and URI, which are only logged); the
//!   answer is `200` with the identity headers, `401`/`400` with an RFC 6750
//!   `WWW-Authenticate`, or `503` with `Retry-After` when the agent cannot tell (see
//!   [`crate::decision`]).
//! - `/healthz`: `200` while the process serves.
//! - `/readyz`: `200` once the replica has bootstrapped, is within `--max-staleness` and every
//!   issuer has keys; `503` naming what is missing otherwise.
//! - `/metrics`: Prometheus text.

use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{any, get};
use axum::Router;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use revokd_client::Replica;

use crate::decision::{Decider, Decision, Frontend};
use crate::issuers::Issuers;
use crate::metrics::Metrics;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Decides forward-auth requests.
    pub decider: Arc<Decider>,
    /// For readiness.
    pub replica: Replica,
    /// For readiness.
    pub issuers: Arc<Issuers>,
    /// For `/metrics`.
    pub metrics: Arc<Metrics>,
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/auth", any(forward_auth))
        .route("/auth/{*rest}", any(forward_auth))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// The forward-auth answer for a decision.
pub fn answer(decision: &Decision) -> Response<Body> {
    let mut response = match decision {
        Decision::Allow { headers } => {
            let mut r = Response::new(Body::empty());
            for (name, value) in headers {
                r.headers_mut().insert(name.clone(), value.clone());
            }
            r
        }
        refusal => {
            let mut r = Response::new(Body::from(format!("{}\n", refusal.description())));
            *r.headers_mut() = refusal.refusal_headers();
            r.headers_mut().insert(
                CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
    };
    *response.status_mut() = decision.status();
    // A decision is about one token at one moment: no proxy or browser may reuse it.
    response
        .headers_mut()
        .insert(CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    response
}

async fn forward_auth(State(state): State<AppState>, headers: HeaderMap) -> Response<Body> {
    let decision = state.decider.decide(&headers, Frontend::ForwardAuth).await;
    if tracing::enabled!(tracing::Level::DEBUG) {
        let h = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        tracing::debug!(
            method = h("x-forwarded-method").or_else(|| h("x-original-method")),
            uri = h("x-forwarded-uri").or_else(|| h("x-original-uri")),
            outcome = decision.outcome(),
            reason = decision.reason(),
            "forward-auth"
        );
    }
    answer(&decision)
}

async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let mut missing = Vec::new();
    if !state.replica.is_ready() {
        missing.push("the replica has not bootstrapped from the cluster yet".to_owned());
    } else if state.replica.is_stale() {
        missing.push(format!(
            "the replica has not been known up to date for {:?}",
            state.replica.staleness()
        ));
    }
    if !state.issuers.all_loaded() {
        missing.push("an issuer's keys have not loaded (see the logs)".to_owned());
    }
    if missing.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", missing.join("; ")),
        )
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// Serves `router` on a TCP listener until `shutdown`, then drains.
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = ?listener.local_addr().ok(), "HTTP (forward-auth, health, metrics) listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves `router` on a Unix socket until `shutdown`, then drains.
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(path = ?listener.local_addr().ok(), "HTTP (forward-auth, health, metrics) listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
