//! Opening an accepted connection: the TLS handshake (with TLS on) and the HTTP/2 opening,
//! each against a deadline, before the gRPC server sees the connection.
//!
//! The node runs the handshake itself (tokio-rustls, as tonic would) rather than leaving it
//! to tonic, because only then can it watch the decrypted bytes: a client that completes the
//! handshake and then dribbles the HTTP/2 preface a byte at a time would otherwise keep its
//! slot for as long as it likes. Every connection must have sent the preface
//! ([`PREFACE_LEN`] bytes of plaintext) within [`OPENING_TIMEOUT`] of arriving here, and the
//! handshake must end within [`TLS_HANDSHAKE_TIMEOUT`]; a handshake runs in a task of its own,
//! so a slow one holds up no other connection (how many run at once is bounded by the
//! connection slots each one holds, `network::incoming`).
//!
//! What the handshake established (the caller's address and certificate chain) travels with
//! every request as a [`ConnInfo`] in its extensions, read by `api::caller`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How long a connection has, from the moment it is handed on by the accept loop (it has
/// sent its first byte), to finish its TLS handshake, if any, and send the HTTP/2 preface.
pub const OPENING_TIMEOUT: Duration = Duration::from_secs(10);
/// The deadline of a TLS handshake (within [`OPENING_TIMEOUT`], which it shares).
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Length of the HTTP/2 client connection preface (`PRI * HTTP/2.0...`), which every gRPC
/// client sends first.
pub const PREFACE_LEN: usize = 24;

/// Where a connection comes from and what its TLS handshake proved, in every request's
/// extensions.
#[derive(Clone, Debug, Default)]
pub struct ConnInfo {
    /// The caller's address and port.
    pub remote: Option<SocketAddr>,
    /// The certificate chain the caller presented (end-entity first), if any.
    pub certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// The transport under an opened connection.
enum Transport<IO> {
    Plain(IO),
    Tls(Box<TlsStream<IO>>),
}

/// A connection whose HTTP/2 preface must arrive before its deadline.
pub struct Opened<IO> {
    transport: Transport<IO>,
    info: ConnInfo,
    /// Plaintext bytes read so far, counted until the preface is in.
    read: usize,
    /// When the preface must be in; `None` once it is.
    opening: Option<Pin<Box<Sleep>>>,
}

impl<IO> Opened<IO> {
    fn new(transport: Transport<IO>, info: ConnInfo, arrived: Instant) -> Self {
        Opened {
            transport,
            info,
            read: 0,
            opening: Some(Box::pin(tokio::time::sleep_until(
                arrived + OPENING_TIMEOUT,
            ))),
        }
    }
}

impl<IO> Connected for Opened<IO>
where
    IO: Send + 'static,
{
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for Opened<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(deadline) = self.opening.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the connection did not open HTTP/2 in time",
                )));
            }
        }
        let before = buf.filled().len();
        let res = match &mut self.transport {
            Transport::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Transport::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        };
        if self.opening.is_some() {
            self.read += buf.filled().len() - before;
            if self.read >= PREFACE_LEN {
                self.opening = None;
            }
        }
        res
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Opened<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.transport {
            Transport::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Transport::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.transport {
            Transport::Plain(io) => Pin::new(io).poll_flush(cx),
            Transport::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.transport {
            Transport::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Transport::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The connections of `incoming`, opened: with `tls`, each after its handshake (connections
/// whose handshake fails or times out are closed and not yielded); without, as they come.
pub fn opened<S, IO>(
    incoming: S,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Pin<Box<dyn Stream<Item = io::Result<Opened<IO>>> + Send>>
where
    S: Stream<Item = io::Result<IO>> + Send + 'static,
    IO: Connected<ConnectInfo = TcpConnectInfo> + AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(tls) = tls else {
        return Box::pin(incoming.map(|io| {
            io.map(|io| {
                let info = ConnInfo {
                    remote: io.connect_info().remote_addr,
                    certs: None,
                };
                Opened::new(Transport::Plain(io), info, Instant::now())
            })
        }));
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut incoming = std::pin::pin!(incoming);
        while let Some(io) = incoming.next().await {
            let io = match io {
                Ok(io) => io,
                Err(e) => {
                    if tx.send(Err(e)).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let arrived = Instant::now();
                let remote = io.connect_info().remote_addr;
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                    Ok(Ok(stream)) => {
                        let certs = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .filter(|c| !c.is_empty())
                            .map(|c| Arc::new(c.to_vec()));
                        let info = ConnInfo { remote, certs };
                        let opened = Opened::new(Transport::Tls(Box::new(stream)), info, arrived);
                        let _ = tx.send(Ok(opened)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(peer = ?remote, error = %e, "network: TLS handshake failed")
                    }
                    Err(_) => {
                        tracing::debug!(peer = ?remote, timeout = ?TLS_HANDSHAKE_TIMEOUT, "network: closing a connection whose TLS handshake did not end in time")
                    }
                }
            });
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
