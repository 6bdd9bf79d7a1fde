//! Bad input gets a clear status and message; the node keeps serving and loses nothing.

use std::time::Duration;

use anyhow::{Context, Result};
use revokd_e2e::{jti_query, revoke_req, spec};
use revokd_proto::v1::{self as pb, raft_client::RaftClient};
use revokd_testkit::{channel, ProcessCluster};
use tonic::Code;

/// `UnrevokeRequest` with `jti` as raw bytes, to send invalid UTF-8 in a string field.
#[derive(Clone, PartialEq, prost::Message)]
struct RawUnrevoke {
    #[prost(bytes = "vec", tag = "1")]
    jti: Vec<u8>,
}

fn expect_status<T: std::fmt::Debug>(
    res: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    says: &str,
) {
    match res {
        Ok(r) => panic!("expected {code:?}, got {r:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "{s}");
            assert!(
                s.message().contains(says),
                "message {:?} should say {says:?}",
                s.message()
            );
        }
    }
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_the_node_keeps_serving() -> Result<()> {
    let c = ProcessCluster::start(3).await?;
    let leader = c.wait_leader(Duration::from_secs(5)).await?;
    let mut api = c.revocation(2)?;
    let kept = api.revoke(revoke_req("kept")).await?.into_inner();

    expect_status(
        api.revoke(pb::RevokeRequest {
            token: Some(spec("", 60)),
        })
        .await,
        Code::InvalidArgument,
        "jti must not be empty",
    );
    expect_status(
        api.revoke(pb::RevokeRequest {
            token: Some(spec(&"x".repeat(257), 60)),
        })
        .await,
        Code::InvalidArgument,
        "jti is 257 bytes; the limit is 256",
    );
    expect_status(
        api.revoke(pb::RevokeRequest { token: None }).await,
        Code::InvalidArgument,
        "token must be set",
    );
    expect_status(
        api.revoke(pb::RevokeRequest {
            token: Some(spec("far", 400 * 24 * 3600)),
        })
        .await,
        Code::InvalidArgument,
        "maximum token lifetime",
    );
    let too_many = pb::RevokeBatchRequest {
        tokens: (0..10_001).map(|i| spec(&format!("x{i}"), 60)).collect(),
    };
    expect_status(
        api.revoke_batch(too_many).await,
        Code::InvalidArgument,
        "10001 tokens; the limit is 10000",
    );
    let heavy = pb::RevokeBatchRequest {
        tokens: (0..3_000)
            .map(|i| pb::RevokedTokenSpec {
                reason: "r".repeat(1000),
                ..spec(&format!("h{i}"), 60)
            })
            .collect(),
    };
    expect_status(
        api.revoke_batch(heavy).await,
        Code::InvalidArgument,
        "bytes of token data",
    );
    let one_bad = pb::RevokeBatchRequest {
        tokens: vec![spec("fine", 60), spec("", 60)],
    };
    expect_status(
        api.revoke_batch(one_bad).await,
        Code::InvalidArgument,
        "tokens[1]: jti must not be empty",
    );
    expect_status(
        api.revoke_rule(pb::RevokeRuleRequest {
            kind: 0,
            value: "alice".into(),
            not_before: 0,
            reason: String::new(),
        })
        .await,
        Code::InvalidArgument,
        "rule kind",
    );
    expect_status(
        api.check(pb::CheckRequest {
            token: Some(jti_query("")),
            consistency: 0,
            min_revision: 0,
        })
        .await,
        Code::InvalidArgument,
        "jti",
    );

    // Invalid UTF-8 in a string field.
    let mut grpc = tonic::client::Grpc::new(channel(&c.addr(2)?)?);
    grpc.ready().await?;
    let res: Result<tonic::Response<pb::WriteResponse>, tonic::Status> = grpc
        .unary(
            tonic::Request::new(RawUnrevoke {
                jti: vec![0xff, 0xfe, b'a'],
            }),
            http::uri::PathAndQuery::from_static("/revokd.v1.Revocation/Unrevoke"),
            tonic_prost::ProstCodec::<RawUnrevoke, pb::WriteResponse>::default(),
        )
        .await;
    expect_status(res, Code::InvalidArgument, "UTF-8");

    // Membership: unknown ids and bad learners.
    let mut cluster = c.cluster(3)?;
    expect_status(
        cluster
            .change_membership(pb::ChangeMembershipRequest {
                voters: vec![1, 2, 3, 99],
                retain: false,
            })
            .await,
        Code::InvalidArgument,
        "node 99",
    );
    expect_status(
        cluster
            .change_membership(pb::ChangeMembershipRequest {
                voters: vec![],
                retain: false,
            })
            .await,
        Code::InvalidArgument,
        "empty",
    );
    expect_status(
        cluster
            .add_learner(pb::AddLearnerRequest {
                node_id: 0,
                address: "127.0.0.1:1".into(),
                blocking: false,
            })
            .await,
        Code::InvalidArgument,
        "node_id",
    );
    expect_status(
        cluster
            .add_learner(pb::AddLearnerRequest {
                node_id: 7,
                address: "no-port".into(),
                blocking: false,
            })
            .await,
        Code::InvalidArgument,
        "HOST:PORT",
    );

    // Garbage on the Raft transport.
    let mut raft = RaftClient::new(channel(&c.addr(leader)?)?);
    for res in [
        raft.append_entries(pb::RaftPayload {
            data: vec![0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff],
        })
        .await,
        raft.vote(pb::RaftPayload { data: vec![] }).await,
        raft.install_snapshot(pb::RaftPayload { data: vec![1; 64] })
            .await,
    ] {
        expect_status(res, Code::InvalidArgument, "raft: malformed");
    }

    // Nothing was lost and the cluster still takes writes, with the same leader.
    assert_eq!(c.wait_leader(Duration::from_secs(5)).await?, leader);
    let after = api.revoke(revoke_req("after-garbage")).await?.into_inner();
    assert_eq!(after.outcome, pb::WriteOutcome::Applied as i32);
    for id in [1, 2, 3] {
        let r = c
            .revocation(id)?
            .check_batch(pb::CheckBatchRequest {
                tokens: vec![
                    jti_query("kept"),
                    jti_query("after-garbage"),
                    jti_query("fine"),
                ],
                consistency: pb::Consistency::Linearizable as i32,
                min_revision: kept.revision,
            })
            .await?
            .into_inner();
        let revoked: Vec<bool> = r.results.iter().map(|r| r.revoked).collect();
        assert_eq!(
            revoked,
            vec![true, true, false],
            "node {id}: a rejected batch applies nothing"
        );
    }
    let s = c.status(1).await.context("status")?;
    assert_eq!(s.revoked_tokens, 2);
    Ok(())
}

/// Waits until the node closes `s` (a read returns 0 bytes or fails), up to `within`.
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn silent_connections_cannot_hold_the_node_hostage() -> Result<()> {
    let c = ProcessCluster::start_with(
        1,
        revokd_testkit::ClusterOptions::args(["--max-connections", "8"]),
    )
    .await?;
    let addr = c.addr(1)?;
    // Twelve connections that never send a byte, against a limit of eight: those over the
    // limit are closed at once...
    let mut silent = Vec::new();
    for _ in 0..12 {
        silent.push(tokio::net::TcpStream::connect(&addr).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut kept = Vec::new();
    let mut refused = 0;
    for mut s in silent {
        if closed_within(&mut s, Duration::from_millis(200)).await {
            refused += 1;
        } else {
            kept.push(s);
        }
    }
    // (a connection the test kit itself closed meanwhile may have freed a slot)
    anyhow::ensure!(
        refused >= 2,
        "only {refused} of 12 were refused with a limit of 8"
    );
    // ...and those holding a slot are closed after the first-byte timeout (10 s).
    for s in &mut kept {
        anyhow::ensure!(
            closed_within(s, Duration::from_secs(15)).await,
            "a silent connection was kept open"
        );
    }
    let mut api = c.revocation(1)?;
    api.revoke(revoke_req("after-the-silent-ones")).await?;
    Ok(())
}
