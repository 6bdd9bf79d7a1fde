//! Watch: resuming on another node with no gap and no duplicate; OUT_OF_RANGE past the window.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use revokd_e2e::revoke_req;
use revokd_proto::v1::{self as pb, event::Change};
use revokd_testkit::{ClusterOptions, ProcessCluster};
use tonic::Streaming;

/// Reads watch messages until `want` revoked jtis were seen; returns them with the last
/// revision, checking revisions strictly increase.
async fn read_revoked(
    stream: &mut Streaming<pb::WatchResponse>,
    after: u64,
    want: usize,
) -> Result<(Vec<String>, u64)> {
    let mut last = after;
    let mut jtis = Vec::new();
    while jtis.len() < want {
        let msg = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .context("watch stalled")??
            .context("watch ended")?;
        if msg.revision <= last {
            bail!("revision went from {last} to {}", msg.revision);
        }
        last = msg.revision;
        for e in msg.events {
            if let Some(Change::Revoked(t)) = e.change {
                assert_eq!(t.revision, msg.revision);
                jtis.push(t.jti);
            }
        }
    }
    Ok((jtis, last))
}

#[tokio::test]
async fn watch_resumes_on_another_node_without_gap_or_duplicate() -> Result<()> {
    let c = ProcessCluster::start(3).await?;
    let mut writer = c.revocation(1)?;
    // Bootstrap from node 2: snapshot, then watch from its revision.
    let mut snap = c
        .revocation(2)?
        .snapshot(pb::SnapshotRequest {
            chunk_size: 0,
            min_revision: 0,
        })
        .await?
        .into_inner();
    let first = snap.message().await?.context("a snapshot chunk")?;
    assert!(first.last && first.total_tokens == 0);
    let mut stream = c
        .revocation(2)?
        .watch(pb::WatchRequest {
            from_revision: first.revision,
        })
        .await?
        .into_inner();
    for i in 0..30 {
        writer.revoke(revoke_req(&format!("a{i}"))).await?;
    }
    let (seen_a, resume_at) = read_revoked(&mut stream, first.revision, 30).await?;
    drop(stream);
    for i in 0..30 {
        writer.revoke(revoke_req(&format!("b{i}"))).await?;
    }
    // Resume on node 3 from the last revision seen on node 2.
    let mut stream = c
        .revocation(3)?
        .watch(pb::WatchRequest {
            from_revision: resume_at,
        })
        .await?
        .into_inner();
    let (seen_b, _) = read_revoked(&mut stream, resume_at, 30).await?;
    let all: Vec<String> = seen_a.into_iter().chain(seen_b).collect();
    let distinct: BTreeSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 60, "no duplicates across the move");
    assert_eq!(distinct.len(), 60);
    let expected: BTreeSet<String> = (0..30)
        .flat_map(|i| [format!("a{i}"), format!("b{i}")])
        .collect();
    assert_eq!(
        distinct.into_iter().cloned().collect::<BTreeSet<_>>(),
        expected,
        "no gap"
    );
    Ok(())
}

#[tokio::test]
async fn watch_older_than_the_window_is_out_of_range_and_snapshot_recovers() -> Result<()> {
    let c = ProcessCluster::start_with(
        3,
        ClusterOptions {
            extra_args: vec!["--watch-window".into(), "10".into()],
            ..Default::default()
        },
    )
    .await?;
    let mut api = c.revocation(1)?;
    let mut last = 0;
    for i in 0..40 {
        last = api
            .revoke(revoke_req(&format!("t{i}")))
            .await?
            .into_inner()
            .revision;
    }
    let err = match api.watch(pb::WatchRequest { from_revision: 1 }).await {
        Err(s) => s,
        Ok(r) => bail!("expected OUT_OF_RANGE, got a stream: {r:?}"),
    };
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");
    assert!(
        err.message().contains("Snapshot"),
        "the error says how to recover: {}",
        err.message()
    );
    // Re-bootstrap: a chunked snapshot holds every token, and watching from its revision works.
    // Node 1 may be a follower a little behind the leader: ask for read-your-writes.
    let mut snap = api
        .snapshot(pb::SnapshotRequest {
            chunk_size: 7,
            min_revision: last,
        })
        .await?
        .into_inner();
    let mut tokens = BTreeSet::new();
    let mut revision = 0;
    while let Some(chunk) = snap.message().await? {
        assert!(
            revision == 0 || revision == chunk.revision,
            "one revision for the whole snapshot"
        );
        revision = chunk.revision;
        assert!(chunk.tokens.len() <= 7);
        tokens.extend(chunk.tokens.into_iter().map(|t| t.jti));
        if chunk.last {
            break;
        }
    }
    assert_eq!(tokens.len(), 40);
    let mut stream = api
        .watch(pb::WatchRequest {
            from_revision: revision,
        })
        .await?
        .into_inner();
    api.revoke(revoke_req("after")).await?;
    let (seen, _) = read_revoked(&mut stream, revision, 1).await?;
    assert_eq!(seen, vec!["after".to_string()]);
    Ok(())
}
