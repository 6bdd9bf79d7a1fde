//! Accepting connections without letting a slow or malicious client exhaust file
//! descriptors or crowd the cluster's own peers out:
//! - at most `--max-connections` are open at once, of which [`peer_reserve`] are kept for
//!   peers: a connection that arrives when only reserved slots are left (or whose address
//!   already holds `--max-connections-per-address`) is let in on probation, and the gate
//!   (`api::caller::Identify`) closes it on its first call unless it is a peer, as it does one
//!   that makes no call within [`PROBATION_TIMEOUT`]. This needs TLS: without it peers cannot
//!   be told from clients, so there is no reserve and no per-address exception;
//! - a connection that sends nothing within [`FIRST_BYTE_TIMEOUT`] is closed before it is
//!   handed on; the TLS handshake and the HTTP/2 preface then have deadlines of their own
//!   (`network::handshake`), which close a slowloris dribbling a byte a second.
//!
//! Established connections are bounded by HTTP/2 limits and keepalives set on the server.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How long a new connection may stay silent before it is closed.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most slots kept for peers: a 5-node cluster's peers need a few connections each.
pub const MAX_PEER_RESERVE: usize = 64;
/// How long an evicted connection stays open for its refusal to be written.
const EVICT_GRACE: Duration = Duration::from_millis(200);
/// How long a connection on probation has to show it is a peer. Peers call at once (a
/// leader's heartbeat every 100 ms, a forwarded write).
pub const PROBATION_TIMEOUT: Duration = Duration::from_secs(5);

/// The slots kept for peers out of `max_connections`: [`MAX_PEER_RESERVE`], at most a
/// quarter of the total.
pub fn peer_reserve(max_connections: usize) -> usize {
    MAX_PEER_RESERVE.min(max_connections / 4)
}

/// How many connections may be open, in all and per client address.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections from one address outside the peer reserve; 0 is no cap.
    pub per_address: usize,
    /// Whether peers can be identified (TLS on): only then are slots reserved for them.
    pub identify_peers: bool,
}

/// The connections let in on probation (in the peer reserve), by their address and port: the
/// gate evicts each one that turns out not to be a peer. Cheap to clone.
#[derive(Clone, Default)]
pub struct Probation(Arc<Mutex<HashMap<SocketAddr, Arc<AtomicBool>>>>);

impl Probation {
    /// Whether the connection from `conn` is on probation. `evict` closes it: its next read
    /// fails.
    pub fn is_on_probation(&self, conn: SocketAddr) -> bool {
        self.lock().contains_key(&conn)
    }

    /// Closes the probation connection from `conn` (a no-op for any other).
    pub fn evict(&self, conn: SocketAddr) {
        if let Some(flag) = self.lock().get(&conn) {
            flag.store(true, Ordering::Release);
        }
    }

    /// Clears `conn`'s probation once it showed it is a peer.
    pub fn admit(&self, conn: SocketAddr) {
        self.lock().remove(&conn);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<AtomicBool>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Connections open per client address.
#[derive(Clone, Default)]
struct PerAddress(Arc<Mutex<HashMap<IpAddr, usize>>>);

impl PerAddress {
    fn count(&self, ip: IpAddr) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ip)
            .copied()
            .unwrap_or(0)
    }
}

/// What a connection holds until it closes: its slot, its count against its address, and
/// its probation entry.
struct Held {
    _slot: OwnedSemaphorePermit,
    peer: SocketAddr,
    per_address: Option<PerAddress>,
    probation: Option<Probation>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(p) = &self.per_address {
            let mut counts = p.0.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = counts.get_mut(&self.peer.ip()) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&self.peer.ip());
                }
            }
        }
        if let Some(p) = &self.probation {
            p.lock().remove(&self.peer);
        }
    }
}

/// An accepted connection holding one of the limited slots until it closes.
pub struct LimitedStream {
    inner: TcpStream,
    _held: Held,
    /// Set by the gate to close a probation connection that is not a peer.
    evict: Arc<AtomicBool>,
    /// When an evicted connection closes.
    closing: Option<Pin<Box<Sleep>>>,
    /// On probation: until when, and where to look whether it still is.
    probation: Option<(Pin<Box<Sleep>>, Probation, SocketAddr)>,
}

impl Connected for LimitedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.evict.load(Ordering::Acquire) {
            // The refusal the gate gave this connection's call is being written: close a
            // moment later, so the caller reads why instead of a bare reset.
            let closing = self
                .closing
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(EVICT_GRACE)));
            if closing.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "connection limit: the reserved slots are for peers",
                )));
            }
        }
        if let Some((deadline, probation, conn)) = self.probation.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                if probation.is_on_probation(*conn) {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection limit: a connection in the peer reserve made no call",
                    )));
                }
                self.probation = None;
            }
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts on `listener` for as long as the returned stream is polled, handing on the
/// connections that got a slot and spoke within the first-byte timeout. Connections let in
/// on probation are listed in `probation`; every connection accepted, refused or not, adds
/// one to `accepted`.
pub fn limited(
    listener: TcpListener,
    limits: ConnectionLimits,
    probation: Probation,
    accepted: Arc<std::sync::atomic::AtomicU64>,
) -> ReceiverStream<io::Result<LimitedStream>> {
    let (tx, rx) = mpsc::channel(64);
    let reserve = if limits.identify_peers {
        peer_reserve(limits.max_connections)
    } else {
        0
    };
    let general = Arc::new(Semaphore::new(limits.max_connections - reserve));
    let reserved = Arc::new(Semaphore::new(reserve));
    let per_address = PerAddress::default();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, typically: back off instead of spinning.
                    tracing::warn!(error = %e, "network: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            accepted.fetch_add(1, Ordering::Relaxed);
            let accepted_at = Instant::now();
            let address_full =
                limits.per_address > 0 && per_address.count(peer.ip()) >= limits.per_address;
            let mut on_probation = false;
            let evict = Arc::new(AtomicBool::new(false));
            let held = match general.clone().try_acquire_owned() {
                Ok(slot) if !address_full => {
                    let mut counts = per_address.0.lock().unwrap_or_else(|e| e.into_inner());
                    *counts.entry(peer.ip()).or_default() += 1;
                    Held {
                        _slot: slot,
                        peer,
                        per_address: Some(per_address.clone()),
                        probation: None,
                    }
                }
                // Only reserved slots are left, or this address has its share: on probation
                // until its first call shows whether it is a peer.
                _ => match reserved.clone().try_acquire_owned() {
                    Ok(slot) => {
                        on_probation = true;
                        probation.lock().insert(peer, evict.clone());
                        Held {
                            _slot: slot,
                            peer,
                            per_address: None,
                            probation: Some(probation.clone()),
                        }
                    }
                    Err(_) => {
                        tracing::warn!(%peer, max_connections = limits.max_connections, per_address = limits.per_address, "network: connection limit reached; closing a new connection");
                        drop(stream);
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            if tx.is_closed() {
                return;
            }
            let tx = tx.clone();
            let probation_check = on_probation.then(|| {
                let until = Box::pin(tokio::time::sleep_until(accepted_at + PROBATION_TIMEOUT));
                (until, probation.clone(), peer)
            });
            tokio::spawn(async move {
                // `peek` waits for real data (or the peer's close), unlike `readable`, which
                // may report readiness spuriously.
                let mut first = [0u8; 1];
                match tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.peek(&mut first)).await {
                    Ok(Ok(n)) if n > 0 => {
                        let _ = tx
                            .send(Ok(LimitedStream {
                                inner: stream,
                                _held: held,
                                evict,
                                closing: None,
                                probation: probation_check,
                            }))
                            .await;
                    }
                    _ => tracing::debug!(%peer, "network: closing a connection that sent nothing"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
