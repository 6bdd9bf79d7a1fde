//! Secure by default, against real nodes: a node refuses to start where it could not protect
//! the set (a non-loopback address in plaintext, credentials without TLS); the Raft service
//! refuses uncertified callers before reading what they send, so floods of huge bodies leave
//! memory bounded; stalled `Snapshot` readers share one copy of the set and are capped;
//! heartbeats cannot forge a replica's progress or fill the registry; and admin tokens
//! revoked in revokd's own set stop working.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use revokd_e2e::{check_req, now, revoke_req, tls_channel_from, tls_cluster};
use revokd_proto::v1::{
    self as pb, cluster_client::ClusterClient, raft_client::RaftClient,
    revocation_client::RevocationClient,
};
use revokd_testkit::floods::{peak_rss_during, raft_body_flood, rss, stalled_snapshots};
use revokd_testkit::{eventually, free_port, revokd_bin, tls_channel};
use tonic::Code;

const MIB: u64 = 1024 * 1024;

/// Runs `revokd` with `args` and returns its stderr, failing if it started (ran for 3 s).
fn refused_start(args: &[&str]) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(revokd_bin()?)
        .args(args)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            ensure!(!status.success(), "revokd {args:?} exited successfully");
            let out = child.wait_with_output()?;
            return Ok(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!("revokd {args:?} started; it should have refused")
}

#[tokio::test]
async fn a_node_refuses_to_start_where_it_could_not_protect_the_set() -> Result<()> {
    let port = free_port()?;
    let anywhere = format!("0.0.0.0:{port}");
    let advertise = format!("127.0.0.1:{port}");
    let err = refused_start(&["--listen", &anywhere, "--advertise", &advertise])?;
    ensure!(
        err.contains("is not a loopback address and TLS is off") && err.contains("--insecure"),
        "{err}"
    );
    let key = revokd_testkit::jwt::keys_dir()
        .join("rsa_public.pem")
        .display()
        .to_string();
    let auth = [
        "--auth-key",
        key.as_str(),
        "--auth-issuer",
        "https://auth.test",
        "--auth-audience",
        "revokd",
    ];
    // Even on loopback, even with --insecure: credentials without TLS protect nothing.
    for extra in [&[][..], &["--insecure"][..]] {
        let args: Vec<&str> = auth.iter().chain(extra).copied().collect();
        let err = refused_start(&args)?;
        ensure!(
            err.contains("auth-key needs TLS") && err.contains("forge Raft messages"),
            "{err}"
        );
    }
    let args: Vec<&str> = auth
        .iter()
        .copied()
        .chain(["--auth-read-scope", "revokd:read"])
        .collect();
    let err = refused_start(&args)?;
    ensure!(err.contains("auth-read-scope needs TLS"), "{err}");
    let err = refused_start(&["--admin-client-ca", &key])?;
    ensure!(err.contains("admin-client-ca needs TLS"), "{err}");

    // --insecure starts, warns and says so in its metrics.
    let dir = tempfile::tempdir()?;
    let metrics = format!("127.0.0.1:{}", free_port()?);
    let mut child = Command::new(revokd_bin()?)
        .args([
            "--listen",
            &anywhere,
            "--advertise",
            &advertise,
            "--insecure",
        ])
        .args(["--metrics-listen", &metrics, "--data-dir"])
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let seen = eventually(Duration::from_secs(20), || {
        let url = format!("http://{metrics}/metrics");
        async move { http_get(&url).await }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let body = seen?;
    ensure!(body.contains("revokd_insecure 1"), "{body}");
    Ok(())
}

/// A plain HTTP/1.1 GET on loopback (the metrics listener), returning the body.
async fn http_get(url: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").context("http only")?;
    let (host, path) = rest.split_once('/').context("a path")?;
    let mut s = tokio::net::TcpStream::connect(host).await?;
    s.write_all(
        format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    let (_, body) = out.split_once("\r\n\r\n").context("an HTTP response")?;
    Ok(body.to_owned())
}

#[tokio::test]
async fn uncertified_raft_calls_are_refused_before_their_body_is_read() -> Result<()> {
    let (c, ca, _certs) = tls_cluster(3, &[]).await?;
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    let target = if leader == 1 { 2 } else { 1 };
    let addr = c.addr(target)?;
    let ca_pem = ca.ca_pem.as_bytes();

    // Each Raft call from a caller without a cluster certificate: UNAUTHENTICATED, saying
    // what it takes.
    let mut raft = RaftClient::new(tls_channel(&addr, ca_pem)?);
    let payload = || pb::RaftPayload {
        data: vec![0; 1024],
    };
    for (name, res) in [
        ("Vote", raft.vote(payload()).await.map(|_| ())),
        (
            "AppendEntries",
            raft.append_entries(payload()).await.map(|_| ()),
        ),
        (
            "InstallSnapshot",
            raft.install_snapshot(payload()).await.map(|_| ()),
        ),
        ("PreVote", raft.pre_vote(payload()).await.map(|_| ())),
        ("TimeoutNow", raft.timeout_now(payload()).await.map(|_| ())),
    ] {
        let s = res.err().with_context(|| format!("{name} was accepted"))?;
        ensure!(s.code() == Code::Unauthenticated, "{name}: {s}");
        ensure!(
            s.message().contains("certificate issued by the cluster CA"),
            "{name}: {s}"
        );
    }

    // 50 concurrent 60 MiB AppendEntries bodies: refused on their headers, so the node never
    // buffers them (50 x 60 MiB would be 3 GiB).
    let pid = c.nodes[&target].pid().context("running")?;
    let before = rss(pid)?;
    let (statuses, peak) = peak_rss_during(
        pid,
        raft_body_flood(tls_channel(&addr, ca_pem)?, 50, 60 * MIB as usize),
    )
    .await;
    let statuses = statuses?;
    ensure!(
        statuses.iter().all(|s| s == "16"),
        "every flood call refused as UNAUTHENTICATED: {statuses:?}"
    );
    let grown = peak.saturating_sub(before);
    println!(
        "RSS {} MiB before, peak {} MiB under 50 x 60 MiB Raft bodies",
        before / MIB,
        peak / MIB
    );
    // Bound: flow-control windows and buffers, not the bodies.
    ensure!(
        grown < 100 * MIB,
        "RSS grew by {} MiB under the flood",
        grown / MIB
    );
    // The cluster still serves, through the flooded node.
    let mut api = RevocationClient::new(tls_channel(&addr, ca_pem)?);
    api.revoke(revoke_req("after-the-raft-flood")).await?;
    let got = api
        .check(check_req(
            "after-the-raft-flood",
            pb::Consistency::Linearizable,
            0,
        ))
        .await?
        .into_inner();
    ensure!(got.result.is_some_and(|r| r.revoked));
    Ok(())
}

/// Sends `bytes` to `addr` one a second (then zeros); returns how long until the node closed
/// the connection, or `None` if it was still open after 20 s.
async fn dribble(addr: &str, bytes: &[u8]) -> Result<Option<Duration>> {
    let s = tokio::net::TcpStream::connect(addr).await?;
    dribble_on(s, Instant::now(), bytes).await
}

/// Completes a TLS handshake with `addr` (trusting `ca_pem`, offering HTTP/2), then dribbles
/// `bytes` as [`dribble`] does, inside the TLS session.
async fn dribble_after_handshake(
    addr: &str,
    ca_pem: &[u8],
    bytes: &[u8],
) -> Result<Option<Duration>> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let started = Instant::now();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = connector
        .connect(ServerName::try_from("localhost")?, tcp)
        .await
        .context("the TLS handshake failed")?;
    dribble_on(tls, started, bytes).await
}

/// Writes `bytes` on `s` one a second (then zeros), for 20 s at most; returns how long after
/// `started` the node closed the connection.
async fn dribble_on(
    mut s: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    started: Instant,
    bytes: &[u8],
) -> Result<Option<Duration>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for i in 0..20 {
        if s.write_all(&[bytes.get(i).copied().unwrap_or(0)])
            .await
            .is_err()
        {
            return Ok(Some(started.elapsed()));
        }
        let _ = s.flush().await;
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(Some(started.elapsed())),
            _ => {}
        }
    }
    Ok(None)
}

/// A RevokeBatch of `n` ids named `{prefix}-{i}`.
fn batch(prefix: &str, from: usize, n: usize) -> pb::RevokeBatchRequest {
    pb::RevokeBatchRequest {
        tokens: (from..from + n)
            .map(|i| pb::RevokedTokenSpec {
                jti: format!("{prefix}-{i:08}-0123456789abcdef0123456789abcdef"),
                expires_at: now() + 3600,
                reason: "a reason long enough to be counted".into(),
                subject: "someone@example.com".into(),
            })
            .collect(),
    }
}

#[tokio::test]
async fn stalled_snapshot_readers_share_one_copy_and_are_capped() -> Result<()> {
    let (c, ca, _certs) = tls_cluster(1, &["--watch-stall-timeout-secs", "3"]).await?;
    c.wait_leader(Duration::from_secs(20)).await?;
    let addr = c.addr(1)?;
    let ca_pem = ca.ca_pem.as_bytes();
    let mut api = RevocationClient::new(tls_channel(&addr, ca_pem)?);
    const TOKENS: usize = 200_000;
    let pid = c.nodes[&1].pid().context("running")?;
    let empty = rss(pid)?;
    for i in (0..TOKENS).step_by(10_000) {
        api.revoke_batch(batch("snap", i, 10_000)).await?;
    }
    // Settle, then measure what the set costs.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with_set = rss(pid)?;

    // Callers that open a Snapshot and never read, each on a connection of its own: 8, then
    // 24 more. Were the set copied per stream, each would cost about what the set does.
    let mut stalled = Vec::new();
    let mut rss_at = Vec::new();
    for n in [8, 24] {
        stalled.extend(stalled_snapshots(n, || tls_channel(&addr, ca_pem)).await?);
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_at.push(rss(pid)?);
    }
    let (at8, at32) = (rss_at[0], rss_at[1]);
    let per_stream = at32.saturating_sub(at8) / 24;
    println!(
        "RSS {} MiB with {TOKENS} ids, {} MiB with 8 stalled Snapshot streams, {} MiB with 32: \
         {} KiB per further stream",
        with_set / MIB,
        at8 / MIB,
        at32 / MIB,
        per_stream / 1024
    );
    // One shared copy of the set plus a couple of 10,000-id chunks per stream: a stream costs
    // a small, fixed amount (bounded here at 12 MiB), not a copy of the set.
    let set_cost = with_set.saturating_sub(empty);
    ensure!(
        per_stream < 12 * MIB && per_stream < set_cost / 4,
        "each stalled Snapshot stream costs {} KiB (the set {} MiB)",
        per_stream / 1024,
        set_cost / MIB
    );
    // A 33rd is refused with a retry hint; other calls are served meanwhile.
    let s = api
        .snapshot(pb::SnapshotRequest::default())
        .await
        .err()
        .context("a 33rd concurrent Snapshot was served")?;
    ensure!(s.code() == Code::ResourceExhausted, "{s}");
    ensure!(s.message().contains("Snapshot streams"), "{s}");
    ensure!(
        s.metadata().get("x-revokd-retry-after-ms").is_some(),
        "{s:?} carries a retry hint"
    );
    api.revoke(revoke_req("while-snapshots-stall")).await?;

    // Stalled streams are ended after the stall timeout, and their slots come back.
    let full = eventually(Duration::from_secs(20), || {
        let mut api = api.clone();
        async move {
            let mut stream = api
                .snapshot(pb::SnapshotRequest::default())
                .await?
                .into_inner();
            let mut n = 0;
            while let Some(chunk) = stream.message().await? {
                n += chunk.tokens.len();
                if chunk.last {
                    return Ok(n);
                }
            }
            bail!("the stream ended before its last chunk")
        }
    })
    .await?;
    ensure!(full == TOKENS + 1, "{full} ids in the snapshot");
    drop(stalled);
    Ok(())
}

/// A heartbeat from `replica_id` claiming `applied`.
fn heartbeat(replica_id: &str, applied: u64) -> pb::HeartbeatRequest {
    pb::HeartbeatRequest {
        replica_id: replica_id.into(),
        description: "test".into(),
        applied_revision: applied,
    }
}

#[tokio::test]
async fn heartbeats_cannot_forge_progress_or_fill_the_registry() -> Result<()> {
    let (c, ca, _certs) = tls_cluster(1, &[]).await?;
    c.wait_leader(Duration::from_secs(20)).await?;
    let addr = c.addr(1)?;
    let ca_pem = ca.ca_pem.as_bytes();
    let mut api = RevocationClient::new(tls_channel(&addr, ca_pem)?);
    let w = api.revoke(revoke_req("hb")).await?.into_inner();
    // The real replica calls from an address of its own: quotas are per address for
    // anonymous callers, and the forger below fills its own.
    // It follows this node as a replica does: a Watch on the connection it reports over.
    let real_channel = tls_channel_from("127.0.0.2", &addr, ca_pem)?;
    let mut real = ClusterClient::new(real_channel.clone());
    let mut feed = RevocationClient::new(real_channel)
        .watch(pb::WatchRequest { from_revision: 0 })
        .await?
        .into_inner();
    while feed.message().await?.context("the watch ended")?.revision < w.revision {}
    real.heartbeat(heartbeat("validator-1", w.revision)).await?;

    // Another connection reporting the real replica's id: refused, nothing changes.
    let mut forger = ClusterClient::new(tls_channel(&addr, ca_pem)?);
    let s = forger
        .heartbeat(heartbeat("validator-1", u64::MAX))
        .await
        .err()
        .context("a forged report for another replica's id was accepted")?;
    ensure!(s.code() == Code::PermissionDenied, "{s}");
    ensure!(s.message().contains("reported by another client"), "{s}");
    // Its own id with u64::MAX: kept at the commit revision, never beyond.
    forger.heartbeat(heartbeat("forger", u64::MAX)).await?;
    let status = real.status(pb::StatusRequest {}).await?.into_inner();
    for r in &status.replicas {
        ensure!(
            r.applied_revision <= status.commit_revision,
            "{r:?} beyond commit {}",
            status.commit_revision
        );
    }
    let v = status
        .replicas
        .iter()
        .find(|r| r.replica_id == "validator-1")
        .context("the real replica is listed")?;
    ensure!(
        v.applied_revision == w.revision && v.follows_this_node,
        "{v:?}"
    );
    // The forger reads nothing from this node: its report is listed, but not as following
    // this node, so receipts do not count it.
    let f = status
        .replicas
        .iter()
        .find(|r| r.replica_id == "forger")
        .context("the forger's own id is listed")?;
    ensure!(!f.follows_this_node, "{f:?}");

    // One client cannot fill the registry: past its quota it is refused, others are not.
    let mut refused = 0;
    for i in 0..300 {
        match forger.heartbeat(heartbeat(&format!("fake-{i}"), 1)).await {
            Ok(_) => {}
            Err(s) if s.code() == Code::ResourceExhausted => refused += 1,
            Err(s) => bail!("{s}"),
        }
    }
    ensure!(
        refused > 0,
        "300 fake replica ids from one address were all taken"
    );
    real.heartbeat(heartbeat("validator-2", w.revision)).await?;
    Ok(())
}

#[tokio::test]
async fn peers_still_connect_when_clients_hold_every_slot_and_slowloris_is_closed() -> Result<()> {
    // 32 connections, of which a quarter (8) are kept for peers.
    let (c, ca, _certs) = tls_cluster(3, &["--max-connections", "32"]).await?;
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    let target = if leader == 1 { 2 } else { 1 };
    let addr = c.addr(target)?;
    let ca_pem = ca.ca_pem.as_bytes();

    // Clients take every client slot: each sends the first byte of a TLS handshake, which is
    // enough to be handed on, and then nothing. Add them until a new client is refused.
    let (mut held, mut served) = (Vec::new(), Vec::new());
    let refusal = loop {
        use tokio::io::AsyncWriteExt;
        ensure!(
            held.len() < 40,
            "no client was refused with 40 connections held"
        );
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        s.write_all(&[0x16]).await?;
        held.push(s);
        tokio::time::sleep(Duration::from_millis(20)).await;
        // A client that is served keeps its connection (and slot): were it dropped, the
        // node could free its slot only after the next holder arrived, which would then land
        // in the peer reserve.
        let mut stranger = ClusterClient::new(tls_channel(&addr, ca_pem)?);
        match stranger.status(pb::StatusRequest {}).await {
            Ok(_) => served.push(stranger),
            Err(s) => break s,
        }
    };
    ensure!(
        refusal.code() == Code::Unavailable && refusal.message().contains("kept for cluster peers"),
        "a client over the limit: {refusal}"
    );
    // ...while a peer (a certificate of the cluster CA) still gets through.
    let peer_cert = ca.issue("peer-check", &["localhost", "127.0.0.1"])?;
    let identity = (peer_cert.cert_pem.as_bytes(), peer_cert.key_pem.as_bytes());
    let mut peer = ClusterClient::new(revokd_testkit::tls_channel_as(
        &addr,
        ca_pem,
        Some(identity),
    )?);
    let status = peer.status(pb::StatusRequest {}).await?.into_inner();
    ensure!(status.id == target, "{status:?}");

    // A slowloris, one byte a second, is closed by the deadlines: over TLS a ClientHello
    // dribbled out (the TLS handshake deadline) or, after a quick handshake, the HTTP/2
    // preface inside the session; in plaintext the preface (the opening deadline). Each
    // would otherwise hold its slot for 20 s and more.
    drop((held, served));
    let plain = revokd_testkit::ProcessCluster::start(1).await?;
    let plain_addr = plain.addr(1)?;
    let client_hello = [0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01];
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let (tls_lived, session_lived, plain_lived) = tokio::try_join!(
        dribble(&addr, &client_hello),
        dribble_after_handshake(&addr, ca_pem, preface),
        dribble(&plain_addr, preface),
    )?;
    for (what, lived) in [
        ("TLS handshake", tls_lived),
        ("in-session preface", session_lived),
        ("plaintext", plain_lived),
    ] {
        let lived = lived.with_context(|| format!("the {what} slowloris was never closed"))?;
        // Closed by the deadline (10 s after accept), not for sending garbage.
        ensure!(
            lived >= Duration::from_secs(8) && lived < Duration::from_secs(15),
            "the {what} slowloris was closed after {lived:?}"
        );
    }
    // Clients connect again once slots are free.
    eventually(Duration::from_secs(10), || {
        let addr = addr.clone();
        async move {
            ClusterClient::new(tls_channel(&addr, ca_pem)?)
                .status(pb::StatusRequest {})
                .await?;
            Ok(())
        }
    })
    .await?;
    Ok(())
}
