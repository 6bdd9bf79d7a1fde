//! The gRPC listener: Envoy ext_authz v3 ([`ext_authz`]) and the local
//! `revokd.v1.Revocation` reads ([`local`]) on one tonic server.

pub mod ext_authz;
pub mod local;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use revokd_client::Replica;
use revokd_proto::v1::revocation_server::RevocationServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::decision::Decider;
use crate::metrics::Metrics;

/// Serves both services on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    decider: Arc<Decider>,
    replica: Replica,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(
        ?addr,
        "gRPC (ext_authz v3, revokd.v1.Revocation Check) listening"
    );
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(AuthorizationServer::new(ext_authz::ExtAuthz::new(decider)))
        .add_service(RevocationServer::new(local::LocalRevocation::new(
            replica, metrics,
        )))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}
