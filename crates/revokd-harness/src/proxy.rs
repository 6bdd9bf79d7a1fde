//! User-space link proxies: the kernel here has no `tc netem`, so every connection between
//! two sites of a topology goes through a [`LinkProxy`] that delays bytes (one-way latency
//! plus optional jitter) and can cut either direction.
//!
//! Bytes within a connection are never reordered: each chunk is due no earlier than the one
//! before it. A cut direction holds its bytes (as TCP keeps retransmitting through a network
//! partition) and delivers them when the link heals; the endpoints' own timeouts decide
//! whether the connection survives, as they would on a real network.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Chunks in flight per direction before the reader waits (backpressure, bounded memory).
const IN_FLIGHT_CHUNKS: usize = 256;
/// Largest chunk read at once.
const CHUNK: usize = 64 * 1024;

/// Which way bytes flow through a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// From the side that dialled to the target.
    Forward,
    /// From the target back to the side that dialled.
    Backward,
}

/// Live settings of one link, shared by its connections.
#[derive(Debug)]
struct Settings {
    delay_us: AtomicU64,
    jitter_us: AtomicU64,
    cut_forward: AtomicBool,
    cut_backward: AtomicBool,
    /// Bumped on every change so held directions wake up.
    changed: watch::Sender<u64>,
    forwarded: AtomicU64,
    connections: AtomicU64,
}

impl Settings {
    fn cut(&self, dir: Dir) -> &AtomicBool {
        match dir {
            Dir::Forward => &self.cut_forward,
            Dir::Backward => &self.cut_backward,
        }
    }

    /// Waits while `dir` is cut.
    async fn wait_open(&self, dir: Dir) {
        let mut rx = self.changed.subscribe();
        while self.cut(dir).load(Ordering::Acquire) {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// A handle that changes a link while it carries traffic. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LinkControl {
    settings: Arc<Settings>,
}

impl LinkControl {
    /// Sets the one-way delay and jitter of both directions.
    pub fn set_delay(&self, delay: Duration, jitter: Duration) {
        let s = &self.settings;
        s.delay_us
            .store(delay.as_micros() as u64, Ordering::Release);
        s.jitter_us
            .store(jitter.as_micros() as u64, Ordering::Release);
    }

    /// The one-way delay.
    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.settings.delay_us.load(Ordering::Acquire))
    }

    /// Cuts (`true`) or heals (`false`) one direction.
    pub fn set_cut(&self, dir: Dir, cut: bool) {
        self.settings.cut(dir).store(cut, Ordering::Release);
        self.settings.changed.send_modify(|v| *v += 1);
    }

    /// Whether a direction is cut.
    pub fn is_cut(&self, dir: Dir) -> bool {
        self.settings.cut(dir).load(Ordering::Acquire)
    }

    /// Heals both directions.
    pub fn heal(&self) {
        self.set_cut(Dir::Forward, false);
        self.set_cut(Dir::Backward, false);
    }

    /// Bytes delivered so far, both directions.
    pub fn bytes_forwarded(&self) -> u64 {
        self.settings.forwarded.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.settings.connections.load(Ordering::Relaxed)
    }
}

/// A listening proxy in front of one target address.
pub struct LinkProxy {
    listen: SocketAddr,
    target: String,
    control: LinkControl,
    task: JoinHandle<()>,
}

impl LinkProxy {
    /// Binds a loopback port and forwards every accepted connection to `target`. `seed`
    /// drives the jitter.
    pub async fn start(target: impl Into<String>, seed: u64) -> std::io::Result<LinkProxy> {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into(), target, seed).await
    }

    /// Like [`LinkProxy::start`], on a port of `ip` (for example a Docker network's gateway,
    /// which containers can reach).
    pub async fn start_on(
        ip: std::net::IpAddr,
        target: impl Into<String>,
        seed: u64,
    ) -> std::io::Result<LinkProxy> {
        let listener = TcpListener::bind((ip, 0)).await?;
        let listen = listener.local_addr()?;
        let target = target.into();
        let control = LinkControl {
            settings: Arc::new(Settings {
                delay_us: AtomicU64::new(0),
                jitter_us: AtomicU64::new(0),
                cut_forward: AtomicBool::new(false),
                cut_backward: AtomicBool::new(false),
                changed: watch::channel(0).0,
                forwarded: AtomicU64::new(0),
                connections: AtomicU64::new(0),
            }),
        };
        let task = tokio::spawn(accept_loop(listener, target.clone(), control.clone(), seed));
        Ok(LinkProxy {
            listen,
            target,
            control,
            task,
        })
    }

    /// Where to connect to go through this link.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Where the link leads.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Controls the link.
    pub fn control(&self) -> &LinkControl {
        &self.control
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, target: String, control: LinkControl, seed: u64) {
    let mut n = 0u64;
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        n += 1;
        control.settings.connections.fetch_add(1, Ordering::Relaxed);
        let (target, control) = (target.clone(), control.clone());
        // Reap finished connections so the set does not grow.
        while conns.try_join_next().is_some() {}
        conns.spawn(connection(inbound, target, control, seed.wrapping_add(n)));
    }
}

async fn connection(inbound: TcpStream, target: String, control: LinkControl, seed: u64) {
    // A connection attempt across a cut link does not arrive until the link heals.
    control.settings.wait_open(Dir::Forward).await;
    let Ok(outbound) = TcpStream::connect(&target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_r, in_w) = inbound.into_split();
    let (out_r, out_w) = outbound.into_split();
    let fwd = pump(in_r, out_w, control.clone(), Dir::Forward, seed);
    let back = pump(out_r, in_w, control, Dir::Backward, seed ^ 0x9e37_79b9);
    tokio::join!(fwd, back);
}

/// Moves bytes one way: a reader stamps each chunk with the time it is due, a writer
/// delivers chunks in order at that time.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    control: LinkControl,
    dir: Dir,
    seed: u64,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT_CHUNKS);
    let settings = control.settings.clone();
    let reader = async move {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut last_due = Instant::now();
        let mut buf = vec![0u8; CHUNK];
        loop {
            settings.wait_open(dir).await;
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let delay = settings.delay_us.load(Ordering::Acquire);
            let jitter = settings.jitter_us.load(Ordering::Acquire);
            let extra = if jitter > 0 {
                rng.gen_range(0..=jitter)
            } else {
                0
            };
            // Never before the previous chunk: jitter delays, it does not reorder.
            let due = (Instant::now() + Duration::from_micros(delay + extra)).max(last_due);
            last_due = due;
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
    };
    let settings = control.settings.clone();
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            // Bytes in flight when the link is cut are held until it heals.
            settings.wait_open(dir).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
            settings
                .forwarded
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server; returns its address.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.into_split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Duration {
        let start = Instant::now();
        s.write_all(msg).await.unwrap();
        let mut back = vec![0; msg.len()];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg);
        start.elapsed()
    }

    #[tokio::test]
    async fn adds_latency_within_tolerance() {
        let proxy = LinkProxy::start(echo().await.to_string(), 1).await.unwrap();
        let mut s = TcpStream::connect(proxy.listen()).await.unwrap();
        s.set_nodelay(true).unwrap();
        let base = round_trip(&mut s, b"warm").await;
        proxy
            .control()
            .set_delay(Duration::from_millis(40), Duration::ZERO);
        for _ in 0..5 {
            let rtt = round_trip(&mut s, b"ping").await;
            // 40 ms each way; the timer wheel and a busy machine add a little.
            assert!(
                rtt >= Duration::from_millis(80)
                    && rtt < Duration::from_millis(80) + base + Duration::from_millis(40),
                "rtt {rtt:?} with 2 x 40 ms configured"
            );
        }
        proxy.control().set_delay(Duration::ZERO, Duration::ZERO);
        let rtt = round_trip(&mut s, b"fast").await;
        assert!(
            rtt < Duration::from_millis(40),
            "delay removed, rtt {rtt:?}"
        );
    }

    #[tokio::test]
    async fn jitter_never_reorders_bytes() {
        let proxy = LinkProxy::start(echo().await.to_string(), 7).await.unwrap();
        proxy
            .control()
            .set_delay(Duration::from_millis(2), Duration::from_millis(10));
        let s = TcpStream::connect(proxy.listen()).await.unwrap();
        s.set_nodelay(true).unwrap();
        let (mut r, mut w) = s.into_split();
        const N: u32 = 20_000;
        let writer = tokio::spawn(async move {
            for i in 0..N {
                w.write_all(&i.to_be_bytes()).await.unwrap();
                if i % 500 == 0 {
                    // Many small chunks, each with its own jitter.
                    tokio::time::sleep(Duration::from_micros(300)).await;
                }
            }
            w
        });
        for i in 0..N {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).await.unwrap();
            assert_eq!(u32::from_be_bytes(b), i, "byte stream reordered at {i}");
        }
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn cut_holds_bytes_and_heal_delivers_them() {
        let proxy = LinkProxy::start(echo().await.to_string(), 3).await.unwrap();
        let mut s = TcpStream::connect(proxy.listen()).await.unwrap();
        round_trip(&mut s, b"before").await;

        // One way: the echo's answers are held.
        proxy.control().set_cut(Dir::Backward, true);
        s.write_all(b"held").await.unwrap();
        let mut buf = [0u8; 4];
        let r = tokio::time::timeout(Duration::from_millis(300), s.read_exact(&mut buf)).await;
        assert!(r.is_err(), "no answer may cross a cut direction");
        proxy.control().heal();
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
            .await
            .expect("held bytes arrive after healing")
            .unwrap();
        assert_eq!(&buf, b"held");

        // Both ways, and a new connection attempt: nothing reaches the target until healed.
        proxy.control().set_cut(Dir::Forward, true);
        proxy.control().set_cut(Dir::Backward, true);
        let before = proxy.control().bytes_forwarded();
        let mut s2 = TcpStream::connect(proxy.listen()).await.unwrap();
        s2.write_all(b"new!").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            proxy.control().bytes_forwarded(),
            before,
            "nothing crossed the cut"
        );
        proxy.control().heal();
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), s2.read_exact(&mut buf))
            .await
            .expect("connection completes after healing")
            .unwrap();
        assert_eq!(&buf, b"new!");
    }
}
