//! Operations: Prometheus metrics over HTTP, gRPC reflection (what grpcurl uses), SIGTERM.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use revokd_e2e::revoke_req;
use revokd_testkit::{channel, eventually, free_port, ClusterOptions, ProcessCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

async fn http_get(addr: &str, path: &str) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    Ok(body)
}

#[tokio::test]
async fn metrics_and_reflection_are_served() -> Result<()> {
    let metrics_addr = format!("127.0.0.1:{}", free_port()?);
    let c = ProcessCluster::start_with(
        1,
        ClusterOptions {
            extra_args: vec!["--metrics-listen".into(), metrics_addr.clone()],
            ..Default::default()
        },
    )
    .await?;
    // A validator's replica follows the node: the node exports its lag.
    let rep = revokd_e2e::replica(&c.endpoints(), "ops-replica").await?;
    c.revocation(1)?.revoke(revoke_req("m1")).await?;
    let last = c
        .revocation(1)?
        .revoke(revoke_req("m2"))
        .await?
        .into_inner();
    assert!(
        rep.wait_for_revision(last.committed_revision, Duration::from_secs(10))
            .await
    );
    let text = eventually(Duration::from_secs(10), || async {
        let text = http_get(&metrics_addr, "/metrics").await?;
        ensure!(
            text.contains("revokd_replica_lag_revisions{replica=\"ops-replica\"} 0"),
            "replica lag not exported yet"
        );
        Ok(text)
    })
    .await?;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for needle in [
        "revokd_raft_is_leader 1",
        "revokd_replicas 1",
        "revokd_revoked_tokens 2",
        "revokd_raft_term ",
        "revokd_applied_revision ",
        "revokd_grpc_requests_total{code=\"0\",method=\"Revoke\"} 2",
        "revokd_grpc_request_duration_seconds_bucket{method=\"Revoke\"",
    ] {
        assert!(text.contains(needle), "metrics lack {needle:?}:\n{text}");
    }
    // The replica's and this test's connections were accepted and counted.
    let accepted = metric(&text, "revokd_connections_accepted_total");
    assert!(
        accepted.is_some_and(|n| n >= 2.0),
        "revokd_connections_accepted_total is {accepted:?}:\n{text}"
    );

    // Reflection lists our services and serves their descriptors.
    let mut refl = ServerReflectionClient::new(channel(&c.addr(1)?)?);
    let reqs = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("revokd.v1.Revocation".into()),
    ]
    .map(|m| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    });
    let mut stream = refl
        .server_reflection_info(tokio_stream::iter(reqs))
        .await?
        .into_inner();
    let listed = stream.message().await?.context("list reply")?;
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
        anyhow::bail!("unexpected reply {listed:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for svc in [
        "revokd.v1.Revocation",
        "revokd.v1.Cluster",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == svc), "{svc} not in {names:?}");
    }
    let file = stream.message().await?.context("descriptor reply")?;
    assert!(
        matches!(file.message_response, Some(MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
        "{file:?}"
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}

/// The value of an unlabelled metric in a /metrics page.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn a_watcher_that_stops_reading_is_dropped() -> Result<()> {
    let metrics_addr = format!("127.0.0.1:{}", free_port()?);
    let c = ProcessCluster::start_with(
        1,
        ClusterOptions::args([
            "--metrics-listen".to_owned(),
            metrics_addr.clone(),
            "--watch-stall-timeout-secs".into(),
            "2".into(),
        ]),
    )
    .await?;
    let mut api = c.revocation(1)?;
    // Opened, and then never read.
    let mut stalled = api
        .watch(revokd_proto::v1::WatchRequest { from_revision: 0 })
        .await?
        .into_inner();
    let open = http_get(&metrics_addr, "/metrics").await?;
    ensure!(metric(&open, "revokd_watchers") == Some(1.0), "{open}");

    // Far more than the stream's queue and the transport's windows hold: 400 change sets of
    // 100 ids with long reasons, each its own watch message.
    let reason = "r".repeat(200);
    for b in 0..400 {
        let tokens = (0..100)
            .map(|i| {
                let mut s = revokd_e2e::spec(&format!("stall-{b}-{i}"), 600);
                s.reason = reason.clone();
                s
            })
            .collect();
        api.revoke_batch(revokd_proto::v1::RevokeBatchRequest { tokens })
            .await?;
    }
    let text = eventually(Duration::from_secs(20), || async {
        let text = http_get(&metrics_addr, "/metrics").await?;
        ensure!(
            metric(&text, "revokd_watchers_dropped_total") == Some(1.0)
                && metric(&text, "revokd_watchers") == Some(0.0),
            "watcher not dropped yet"
        );
        Ok(text)
    })
    .await?;
    ensure!(text.contains("revokd_watchers 0"));

    // What was queued can still be read; then the stream ends instead of waiting forever.
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stalled.message().await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    ensure!(ended.is_ok(), "the dropped watch stream never ended");
    // The node serves new watchers as before.
    let mut fresh = api
        .watch(revokd_proto::v1::WatchRequest { from_revision: 0 })
        .await?
        .into_inner();
    ensure!(fresh.message().await?.is_some());
    Ok(())
}

/// A node whose stderr is a pipe nobody reads any more (the supervisor that read it went
/// away) still stops cleanly on SIGTERM. Until this was fixed, the log line "received SIGTERM"
/// failed to write, tracing-subscriber reported that with eprintln!, which panicked on the
/// same broken pipe inside the task waiting for the signal, and the node ran on.
#[tokio::test]
async fn sigterm_stops_a_node_whose_stderr_is_closed() -> Result<()> {
    use std::process::{Command, Stdio};

    use revokd_proto::v1::cluster_client::ClusterClient;
    use revokd_proto::v1::StatusRequest;

    let dir = tempfile::tempdir()?;
    let addr = format!("127.0.0.1:{}", free_port()?);
    let data = dir.path().join("data");
    let mut child = Command::new(revokd_testkit::revokd_bin()?)
        .args(["--id", "1", "--listen", &addr, "--initial-cluster"])
        .arg(format!("1={addr}"))
        .arg("--data-dir")
        .arg(&data)
        .env("REVOKD_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning revokd")?;
    let serving = eventually(Duration::from_secs(20), || {
        let addr = addr.clone();
        async move {
            let status = ClusterClient::new(channel(&addr)?)
                .status(StatusRequest {})
                .await?
                .into_inner();
            ensure!(status.leader_id == 1, "no leader yet");
            Ok(())
        }
    })
    .await;
    if let Err(e) = serving {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    // The reader goes away: from now on every write to stderr fails with EPIPE.
    drop(child.stderr.take());
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    ensure!(term.success(), "kill -TERM failed");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait()? {
            ensure!(
                status.success(),
                "revokd exited with {status} on SIGTERM with its stderr closed"
            );
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("revokd still ran 10 s after SIGTERM with its stderr closed");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
