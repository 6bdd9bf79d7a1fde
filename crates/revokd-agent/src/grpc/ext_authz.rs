//! Envoy's external authorization, v3 (`envoy.service.auth.v3.Authorization/Check`), on
//! Envoy's own protos (the `envoy-types` crate). The request's `authorization` header is
//! decided like a forward-auth request; the answer carries the same status and headers:
//!
//! - allowed: `OK`, with the identity headers set on the upstream request (replacing any the
//!   client sent);
//! - refused: `UNAUTHENTICATED` (or `INVALID_ARGUMENT` for several `Authorization` headers),
//!   with a denied response of 401 / 400 and its `WWW-Authenticate`;
//! - cannot tell now: `UNAVAILABLE`, with a denied response of 503 and `Retry-After`.

use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, HeaderAppendAction, HttpStatusCode,
};
use envoy_types::ext_authz::v3::{
    CheckRequestExt, CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, StatusCode};
use tonic::{Request, Response, Status};

use crate::decision::{Decider, Decision, Frontend};

/// The ext_authz service.
pub struct ExtAuthz {
    decider: Arc<Decider>,
}

impl ExtAuthz {
    /// Decides with `decider`.
    pub fn new(decider: Arc<Decider>) -> ExtAuthz {
        ExtAuthz { decider }
    }
}

/// The `Authorization` header of the checked request. Envoy sends header names in lower
/// case, and joins repeated headers with a comma (which then fails as a malformed token).
fn headers_of(req: &CheckRequest) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let value = req.get_client_headers().and_then(|h| {
        h.get("authorization").or_else(|| {
            h.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .map(|(_, v)| v)
        })
    });
    if let Some(value) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
        headers.insert(AUTHORIZATION, value);
    }
    headers
}

fn http_status(status: StatusCode) -> HttpStatusCode {
    match status {
        StatusCode::BAD_REQUEST => HttpStatusCode::BadRequest,
        StatusCode::SERVICE_UNAVAILABLE => HttpStatusCode::ServiceUnavailable,
        _ => HttpStatusCode::Unauthorized,
    }
}

/// The ext_authz answer for a decision.
pub fn answer(decision: &Decision) -> CheckResponse {
    match decision {
        Decision::Allow { headers } => {
            let mut ok = OkHttpResponseBuilder::new();
            for (name, value) in headers {
                if let Ok(value) = value.to_str() {
                    ok.add_header(
                        name.as_str(),
                        value,
                        Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
                        false,
                    );
                }
            }
            let mut response = CheckResponse::with_status(Status::ok("ok"));
            response.set_http_response(ok);
            response
        }
        refusal => {
            let status = refusal.status();
            let mut denied = DeniedHttpResponseBuilder::new();
            denied.set_http_status(http_status(status));
            for (name, value) in &refusal.refusal_headers() {
                if let Ok(value) = value.to_str() {
                    denied.add_header(name.as_str(), value, None, false);
                }
            }
            denied.set_body(format!("{}\n", refusal.description()));
            let code = match status {
                StatusCode::SERVICE_UNAVAILABLE => Status::unavailable(refusal.description()),
                StatusCode::BAD_REQUEST => Status::invalid_argument(refusal.description()),
                _ => Status::unauthenticated(refusal.description()),
            };
            let mut response = CheckResponse::with_status(code);
            response.set_http_response(denied);
            response
        }
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let headers = headers_of(request.get_ref());
        let decision = self.decider.decide(&headers, Frontend::ExtAuthz).await;
        Ok(Response::new(answer(&decision)))
    }
}
