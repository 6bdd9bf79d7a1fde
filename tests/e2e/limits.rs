//! Per-client rate limits against a real cluster: a flooding client gets RESOURCE_EXHAUSTED
//! with a retry hint while another client's revokes go through at their normal latency.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use revokd_e2e::{check_req, revoke_req, tls_channel_from, tls_cluster};
use revokd_proto::v1::{self as pb, revocation_client::RevocationClient};
use tonic::transport::Channel;
use tonic::Code;

/// A client whose connections come from `local` (a loopback address of its own), so the node
/// sees it as a distinct client; over TLS trusting `ca`.
fn client_from(local: &str, addr: &str, ca: &[u8]) -> Result<RevocationClient<Channel>> {
    Ok(RevocationClient::new(tls_channel_from(local, addr, ca)?))
}

/// Sequential revokes, paced well under the limit; returns each one's latency.
async fn paced_revokes(
    client: &mut RevocationClient<Channel>,
    prefix: &str,
    n: usize,
) -> Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        client.revoke(revoke_req(&format!("{prefix}-{i}"))).await?;
        out.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    out.sort();
    Ok(out)
}

#[tokio::test]
async fn a_flooding_client_is_limited_and_others_are_not() -> Result<()> {
    // On a TLS cluster: the limiter sees the client's address through TLS too.
    let (c, ca, _certs) =
        tls_cluster(3, &["--write-rate-limit", "20", "--read-rate-limit", "50"]).await?;
    let ca = ca.ca_pem.as_bytes();
    c.wait_leader(Duration::from_secs(10)).await?;
    let node = c.addr(2)?;
    let mut calm = client_from("127.0.0.3", &node, ca)?;
    let baseline = paced_revokes(&mut calm, "calm-before", 10).await?;

    // 400 revokes as fast as 40 concurrent tasks can send them, from another address.
    let flooder = client_from("127.0.0.2", &node, ca)?;
    let flood_started = Instant::now();
    let mut flood = tokio::task::JoinSet::new();
    for t in 0..40 {
        let mut f = flooder.clone();
        flood.spawn(async move {
            let mut out = Vec::new();
            for i in 0..10 {
                out.push(f.revoke(revoke_req(&format!("flood-{t}-{i}"))).await);
            }
            out
        });
    }
    let during = paced_revokes(&mut calm, "calm-during", 10).await?;
    let (mut ok, mut limited) = (0, 0);
    while let Some(results) = flood.join_next().await {
        for r in results? {
            match r {
                Ok(_) => ok += 1,
                Err(s) => {
                    ensure!(s.code() == Code::ResourceExhausted, "unexpected {s}");
                    ensure!(
                        s.message().contains("rate limit") && s.message().contains("127.0.0.2"),
                        "the message says why and who: {}",
                        s.message()
                    );
                    let hint: u64 = s
                        .metadata()
                        .get("x-revokd-retry-after-ms")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    ensure!((1..=1000).contains(&hint), "retry hint {hint} ms");
                    limited += 1;
                }
            }
        }
    }
    // The flooder's address had never called: its budget is the burst of 20 plus 20 per
    // second over the flood's duration, to the call.
    let flood_secs = flood_started.elapsed().as_secs_f64();
    let budget = 20 + (20.0 * flood_secs).ceil() as usize;
    println!("flood: {ok} accepted, {limited} limited in {flood_secs:.2} s (budget {budget})");
    ensure!(
        (20..=budget).contains(&ok) && ok + limited == 400,
        "{ok} of 400 flooded revokes accepted in {flood_secs:.2} s with a limit of 20/s (budget 20 to {budget})"
    );
    // The calm client was never refused (paced_revokes fails on any error), and kept its
    // normal latency: its median within a generous bound of the one measured before.
    let (p50_before, p50_during) = (baseline[baseline.len() / 2], during[during.len() / 2]);
    println!("calm client's median revoke latency: {p50_before:?} before, {p50_during:?} during");
    ensure!(
        p50_during <= (p50_before * 10).max(Duration::from_millis(100)),
        "calm client's median latency went from {p50_before:?} to {p50_during:?}"
    );

    // Reads have their own budget: a check flood is limited too, writes stay available.
    let mut reader = client_from("127.0.0.4", &node, ca)?;
    let reads_started = Instant::now();
    let mut read_limited = 0;
    for i in 0..200 {
        let q = check_req(
            &format!("calm-before-{}", i % 10),
            pb::Consistency::Local,
            0,
        );
        if let Err(s) = reader.check(q).await {
            ensure!(s.code() == Code::ResourceExhausted, "unexpected {s}");
            read_limited += 1;
        }
    }
    // A burst of 50 plus 50 per second: the first reads connect, and any beyond the budget
    // over the loop's duration were refused.
    let budget = 50 + (50.0 * reads_started.elapsed().as_secs_f64()).ceil() as usize;
    let read_ok = 200 - read_limited;
    ensure!(
        read_ok <= budget && (budget >= 200 || read_limited > 0),
        "{read_ok} of 200 back-to-back checks accepted at 50/s (budget {budget})"
    );
    reader.revoke(revoke_req("reader-writes")).await?;
    Ok(())
}
