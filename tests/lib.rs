//! Helpers shared by the end-to-end tests: building requests and retrying writes across
//! nodes the way a client would.

use std::time::Duration;

use anyhow::{bail, Result};
use revokd_client::{Client, ClientConfig, Replica, ReplicaConfig};
use revokd_proto::v1::{self as pb, revocation_client::RevocationClient};
use revokd_testkit::channel;

/// Unix seconds now: the clock the nodes read (under this name because every test says
/// `now() + ttl`).
pub use revokd_proto::clock::unix_now as now;

/// A token spec that expires `ttl` seconds from now.
pub fn spec(jti: &str, ttl: i64) -> pb::RevokedTokenSpec {
    pb::RevokedTokenSpec {
        jti: jti.into(),
        expires_at: now() + ttl,
        reason: "test".into(),
        subject: "alice".into(),
    }
}

/// A `Revoke` request for one token valid for an hour.
pub fn revoke_req(jti: &str) -> pb::RevokeRequest {
    pb::RevokeRequest {
        token: Some(spec(jti, 3600)),
    }
}

/// A query for a `jti` alone.
pub fn jti_query(jti: &str) -> pb::TokenQuery {
    pb::TokenQuery {
        jti: jti.into(),
        ..Default::default()
    }
}

/// Revokes `jti` through any of `endpoints`, moving to the next one on failure, until
/// `timeout`. Returns the acknowledged response.
pub async fn revoke_anywhere(
    endpoints: &[String],
    jti: &str,
    timeout: Duration,
) -> Result<pb::WriteResponse> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut i = 0usize;
    loop {
        let addr = &endpoints[i % endpoints.len()];
        let mut req = tonic::Request::new(revoke_req(jti));
        req.set_timeout(Duration::from_secs(2));
        match RevocationClient::new(channel(addr)?).revoke(req).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s) if tokio::time::Instant::now() < deadline => {
                let _ = s;
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => bail!("revoke {jti} failed everywhere: {s}"),
        }
    }
}

/// Checks every `jti` on one node at the given consistency; returns those not revoked.
pub async fn missing_on(
    addr: &str,
    jtis: &[String],
    consistency: pb::Consistency,
    min_revision: u64,
) -> Result<Vec<String>> {
    let mut client = RevocationClient::new(channel(addr)?).max_decoding_message_size(64 << 20);
    let mut missing = Vec::new();
    for chunk in jtis.chunks(5_000) {
        let mut req = tonic::Request::new(pb::CheckBatchRequest {
            tokens: chunk.iter().map(|j| jti_query(j)).collect(),
            consistency: consistency as i32,
            min_revision,
        });
        req.set_timeout(Duration::from_secs(10));
        let resp = client.check_batch(req).await?.into_inner();
        for (j, r) in chunk.iter().zip(resp.results) {
            if !r.revoked {
                missing.push(j.clone());
            }
        }
    }
    Ok(missing)
}

/// A `Check` of one `jti` at a consistency, optionally after `min_revision`.
pub fn check_req(jti: &str, consistency: pb::Consistency, min_revision: u64) -> pb::CheckRequest {
    pb::CheckRequest {
        token: Some(jti_query(jti)),
        consistency: consistency as i32,
        min_revision,
    }
}

/// A client with test-friendly intervals (heartbeats every 200 ms) and a replica that turns
/// stale after one second, bootstrapped before returning.
pub async fn replica(endpoints: &[String], name: &str) -> Result<Replica> {
    let mut config = ClientConfig::new(endpoints.iter().cloned());
    config.heartbeat_interval = Duration::from_millis(200);
    config.timeout = Duration::from_secs(10);
    let client = Client::connect(config).await?;
    let replica = Replica::connect(
        client,
        ReplicaConfig {
            replica_id: name.into(),
            max_staleness: Duration::from_secs(1),
            ..ReplicaConfig::default()
        },
        Duration::from_secs(10),
    )
    .await?;
    Ok(replica)
}

/// The leader of `c` (waiting up to `within` for one) and one follower.
pub async fn leader_and_follower(
    c: &revokd_testkit::ProcessCluster,
    within: Duration,
) -> Result<(u64, u64)> {
    let leader = c.wait_leader(within).await?;
    let follower = c
        .nodes
        .keys()
        .copied()
        .find(|&id| id != leader)
        .ok_or_else(|| anyhow::anyhow!("no follower in a cluster of {}", c.nodes.len()))?;
    Ok((leader, follower))
}

/// A plain client (no replica) with a 10 s deadline.
pub async fn client(endpoints: &[String]) -> Result<Client> {
    let mut config = ClientConfig::new(endpoints.iter().cloned());
    config.heartbeat_interval = Duration::from_millis(200);
    config.timeout = Duration::from_secs(10);
    Ok(Client::connect(config).await?)
}

/// A TLS channel to `addr` (trusting `ca`) whose connections come from `local`, a loopback
/// address of its own, so the node sees a distinct client address.
pub fn tls_channel_from(local: &str, addr: &str, ca: &[u8]) -> Result<tonic::transport::Channel> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    let ip: std::net::IpAddr = local.parse()?;
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    Ok(Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .local_address(Some(ip))
        .timeout(Duration::from_secs(10))
        .connect_lazy())
}

/// A cluster of `n` nodes serving TLS (mutual TLS between them) with certificates from a
/// fresh development CA, plus `args`. Keep the returned directory alive as long as the
/// cluster: it holds the certificates.
pub async fn tls_cluster(
    n: u64,
    args: &[&str],
) -> Result<(
    revokd_testkit::ProcessCluster,
    revokd_testkit::devca::DevCa,
    tempfile::TempDir,
)> {
    let dir = tempfile::tempdir()?;
    let ca = revokd_testkit::devca::DevCa::new("test cluster CA")?;
    let mut extra_args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    extra_args.extend(ca.node_flags(dir.path(), "node")?);
    let cluster = revokd_testkit::ProcessCluster::start_with(
        n,
        revokd_testkit::ClusterOptions {
            extra_args,
            tls_ca: Some(ca.ca_pem.clone().into_bytes()),
        },
    )
    .await?;
    Ok((cluster, ca, dir))
}
