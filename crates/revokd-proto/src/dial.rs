//! How gRPC channels reach a `host:port`: over TCP (the default), or through a transport the
//! embedder supplies, such as a simulated network (the deterministic simulation runs nodes
//! and clients on one). Nodes use it for their peers, clients for the nodes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::transport::{Channel, Endpoint};

/// A connected byte stream.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A boxed connected stream, as a custom dialer returns it.
pub type BoxedIo = Box<dyn Io>;

type DialFuture = Pin<Box<dyn Future<Output = io::Result<BoxedIo>> + Send>>;
type DialFn = dyn Fn(String) -> DialFuture + Send + Sync;

/// Opens the connections of a channel. Cheap to clone; the default dials TCP.
#[derive(Clone, Default)]
pub struct Dialer {
    custom: Option<Arc<DialFn>>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.custom.is_some() {
            "Dialer(custom)"
        } else {
            "Dialer(tcp)"
        })
    }
}

impl Dialer {
    /// Dials with `dial(authority)` (`host:port`) instead of TCP.
    pub fn custom<F, Fut>(dial: F) -> Dialer
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<BoxedIo>> + Send + 'static,
    {
        Dialer {
            custom: Some(Arc::new(move |authority| Box::pin(dial(authority)))),
        }
    }

    /// Whether this dials TCP.
    pub fn is_tcp(&self) -> bool {
        self.custom.is_none()
    }

    /// A lazily connecting channel to `endpoint` that opens its connections with this dialer
    /// (the endpoint's timeouts and HTTP/2 settings apply either way).
    pub fn connect_lazy(&self, endpoint: Endpoint) -> Channel {
        let Some(dial) = self.custom.clone() else {
            return endpoint.connect_lazy();
        };
        endpoint.connect_with_connector_lazy(tower::service_fn(move |uri: http::Uri| {
            let dial = dial.clone();
            async move {
                let authority = uri
                    .authority()
                    .map(|a| a.to_string())
                    .ok_or_else(|| io::Error::other(format!("no host:port in {uri}")))?;
                Ok::<_, io::Error>(TokioIo::new(dial(authority).await?))
            }
        }))
    }
}
