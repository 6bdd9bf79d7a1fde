//! The simulated network seen through revokd's own seams: an accept stream the node's gRPC
//! server serves (turmoil's listener, each connection wrapped so tonic can read its
//! addresses), and a [`Dialer`] that nodes and clients open their channels with.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use revokd_proto::dial::{BoxedIo, Dialer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The port every simulated node listens on.
pub const PORT: u16 = 7000;

/// A connection accepted on the simulated network.
pub struct Accepted(turmoil::net::TcpStream);

impl Connected for Accepted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: self.0.local_addr().ok(),
            remote_addr: self.0.peer_addr().ok(),
        }
    }
}

impl AsyncRead for Accepted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Connections accepted on this host's [`PORT`].
pub async fn incoming() -> io::Result<impl Stream<Item = io::Result<Accepted>> + Send + 'static> {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
    Ok(futures_stream(listener))
}

fn futures_stream(
    listener: turmoil::net::TcpListener,
) -> impl Stream<Item = io::Result<Accepted>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let accepted = listener.accept().await.map(|(s, _)| Accepted(s));
            if tx.send(accepted).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Dials `host:port` over the simulated network.
pub fn dialer() -> Dialer {
    Dialer::custom(|authority: String| async move {
        let stream = turmoil::net::TcpStream::connect(authority).await?;
        Ok(Box::new(stream) as BoxedIo)
    })
}
