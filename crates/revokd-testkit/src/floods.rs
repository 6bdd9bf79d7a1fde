//! Hostile callers, for the security tests and `revokd-security-bench`: huge bodies sent to
//! the Raft service, `Snapshot` streams that are never read, and a process's resident memory
//! to see what they cost the node.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use revokd_proto::v1::{self as pb, revocation_client::RevocationClient};
use tonic::transport::Channel;
use tower::{Service, ServiceExt};

/// The resident set size of process `pid`, in bytes (from `/proc`).
pub fn rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    Ok(kib * 1024)
}

/// Runs `work` while sampling `pid`'s RSS every 20 ms; returns its output and the peak.
pub async fn peak_rss_during<F: Future>(pid: u32, work: F) -> (F::Output, u64) {
    let mut peak = rss(pid).unwrap_or(0);
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => {
                peak = peak.max(rss(pid).unwrap_or(0));
                return (out, peak);
            }
            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                peak = peak.max(rss(pid).unwrap_or(0));
            }
        }
    }
}

/// A gRPC request body announcing a message of `len` bytes and streaming it as fast as the
/// connection takes it, from one shared zero buffer (so the sender itself stays small).
pub fn huge_grpc_body(len: usize) -> tonic::body::Body {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let mut prefix = vec![0u8];
    prefix.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    let frames = std::iter::once(Bytes::from(prefix))
        .chain(std::iter::repeat_n(
            Bytes::from_static(&ZEROS),
            len / ZEROS.len(),
        ))
        .map(|b| Ok::<_, std::convert::Infallible>(http_body::Frame::data(b)));
    tonic::body::Body::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)))
}

/// Sends `n` concurrent `AppendEntries` calls with bodies of `len` bytes over `channel`;
/// returns each call's `grpc-status` (empty if the answer had none in its headers).
pub async fn raft_body_flood(channel: Channel, n: usize, len: usize) -> Result<Vec<String>> {
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..n {
        let mut ch = channel.clone();
        calls.spawn(async move {
            let req = http::Request::builder()
                .method("POST")
                .uri("https://localhost/revokd.v1.Raft/AppendEntries")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(huge_grpc_body(len))?;
            let resp = ch.ready().await?.call(req).await?;
            anyhow::Ok(
                resp.headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
            )
        });
    }
    let mut statuses = Vec::with_capacity(n);
    while let Some(r) = calls.join_next().await {
        statuses.push(r??);
    }
    Ok(statuses)
}

/// A `Snapshot` stream opened and never read, with the client that holds its connection.
pub type Stalled = (
    RevocationClient<Channel>,
    tonic::Streaming<pb::SnapshotChunk>,
);

/// Opens `n` `Snapshot` streams, each on a connection of its own from `connect`, and reads
/// none of them.
pub async fn stalled_snapshots(
    n: usize,
    mut connect: impl FnMut() -> Result<Channel>,
) -> Result<Vec<Stalled>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut client = RevocationClient::new(connect()?);
        let stream = client
            .snapshot(pb::SnapshotRequest::default())
            .await?
            .into_inner();
        out.push((client, stream));
    }
    Ok(out)
}
