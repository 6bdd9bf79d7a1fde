//! One tower layer for the checks that run in front of the gRPC router and may refuse a call
//! before any service sees it (authorization, rate limits): each implements [`Gate`], and
//! [`GateLayer`] turns a refusal into the gRPC status response.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A check on a call's head (path, headers, connection info) that may refuse it, or amend it
/// (for example to record a verified identity in a header).
pub trait Gate: Clone + Send + Sync + 'static {
    /// `Err` refuses the call with that status.
    fn admit(&self, head: &mut http::request::Parts) -> Result<(), tonic::Status>;
}

/// No gate configured: every call passes.
impl<G: Gate> Gate for Option<G> {
    fn admit(&self, head: &mut http::request::Parts) -> Result<(), tonic::Status> {
        match self {
            Some(g) => g.admit(head),
            None => Ok(()),
        }
    }
}

/// Applies a [`Gate`] in front of the wrapped service.
#[derive(Clone)]
pub struct GateLayer<G> {
    gate: G,
}

impl<G> GateLayer<G> {
    /// A layer applying `gate`.
    pub fn new(gate: G) -> Self {
        GateLayer { gate }
    }
}

impl<S, G: Clone> tower::Layer<S> for GateLayer<G> {
    type Service = GateService<S, G>;
    fn layer(&self, inner: S) -> Self::Service {
        GateService {
            inner,
            gate: self.gate.clone(),
        }
    }
}

/// The service [`GateLayer`] wraps around the gRPC router.
#[derive(Clone)]
pub struct GateService<S, G> {
    inner: S,
    gate: G,
}

impl<S, G, B> tower::Service<http::Request<B>> for GateService<S, G>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Send,
    S::Future: Send + 'static,
    G: Gate,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let (mut head, body) = req.into_parts();
        if let Err(status) = self.gate.admit(&mut head) {
            return Box::pin(async move { Ok(status.into_http()) });
        }
        Box::pin(self.inner.call(http::Request::from_parts(head, body)))
    }
}
