//! Admins with client certificates against a real TLS cluster: a certificate from the admin
//! CA (not the cluster CA) whose name is allowed revokes without a token, directly or through
//! a follower, and is recorded by name; other certificates are refused with the right status;
//! an admin's certificate cannot speak Raft; and rate limits are kept per admin, not per
//! address.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use revokd_e2e::{check_req, leader_and_follower, revoke_req, tls_cluster};
use revokd_proto::v1::{self as pb, raft_client::RaftClient, revocation_client::RevocationClient};
use revokd_testkit::devca::{DevCa, Issued};
use revokd_testkit::tls_channel_as;
use tonic::transport::Channel;
use tonic::Code;

/// A Revocation client over TLS presenting `cert` (if any).
fn api_as(addr: &str, ca: &DevCa, cert: Option<&Issued>) -> Result<RevocationClient<Channel>> {
    let identity = cert.map(|c| (c.cert_pem.as_bytes(), c.key_pem.as_bytes()));
    Ok(RevocationClient::new(tls_channel_as(
        addr,
        ca.ca_pem.as_bytes(),
        identity,
    )?))
}

#[tokio::test]
async fn admins_with_client_certificates() -> Result<()> {
    let admin_dir = tempfile::tempdir()?;
    let admin_ca = DevCa::new("test admin CA")?;
    let admin_ca_path = admin_ca.write_ca_as(admin_dir.path(), "admin-ca")?;
    let (alice, carol, bob) = (
        admin_ca.issue_client("alice")?,
        admin_ca.issue_client("carol")?,
        admin_ca.issue_client("bob")?,
    );
    let (c, ca, _certs) = tls_cluster(
        3,
        &[
            "--admin-client-ca",
            &admin_ca_path.display().to_string(),
            "--admin-client-names",
            "alice,carol",
            // A budget small enough for one admin to exhaust it.
            "--write-rate-limit",
            "20",
        ],
    )
    .await?;
    let (leader, follower) = leader_and_follower(&c, Duration::from_secs(20)).await?;
    let (at_leader, at_follower) = (c.addr(leader)?, c.addr(follower)?);

    // Alice's certificate is enough, through a follower (which forwards it to the leader
    // over its own peer certificate) and directly; a declared actor is ignored.
    let mut req = tonic::Request::new(revoke_req("by-alice"));
    req.metadata_mut()
        .insert("x-revokd-actor", "mallory".parse()?);
    api_as(&at_follower, &ca, Some(&alice))?.revoke(req).await?;
    api_as(&at_leader, &ca, Some(&alice))?
        .revoke(revoke_req("by-alice-2"))
        .await?;

    let refused = |r: Result<tonic::Response<pb::WriteResponse>, tonic::Status>,
                   code: Code,
                   says: &str|
     -> Result<()> {
        let s = r.err().context("accepted")?;
        ensure!(s.code() == code, "expected {code:?}, got {s}");
        ensure!(s.message().contains(says), "{s} should say {says:?}");
        Ok(())
    };
    // Bob's certificate is from the admin CA but his name is not allowed.
    refused(
        api_as(&at_leader, &ca, Some(&bob))?
            .revoke(revoke_req("by-bob"))
            .await,
        Code::PermissionDenied,
        "\"bob\" is not among the allowed admin certificates",
    )?;
    // No certificate, or a node's certificate (the cluster CA's: a peer, not an admin).
    refused(
        api_as(&at_leader, &ca, None)?
            .revoke(revoke_req("anonymous"))
            .await,
        Code::Unauthenticated,
        "needs an admin client certificate",
    )?;
    let node_cert = ca.issue("node", &["localhost", "127.0.0.1"])?;
    refused(
        api_as(&at_leader, &ca, Some(&node_cert))?
            .revoke(revoke_req("by-a-node-cert"))
            .await,
        Code::Unauthenticated,
        "needs an admin client certificate",
    )?;
    // A certificate from a CA the cluster does not know fails the handshake.
    let stranger = DevCa::new("stranger CA")?.issue_client("alice")?;
    ensure!(
        api_as(&at_leader, &ca, Some(&stranger))?
            .revoke(revoke_req("by-a-stranger"))
            .await
            .is_err(),
        "a certificate from an unknown CA was accepted"
    );

    // An admin's certificate does not make a peer: Raft calls are refused.
    let identity = (alice.cert_pem.as_bytes(), alice.key_pem.as_bytes());
    let mut raft = RaftClient::new(tls_channel_as(
        &at_leader,
        ca.ca_pem.as_bytes(),
        Some(identity),
    )?);
    let err = raft
        .vote(pb::RaftPayload { data: vec![1] })
        .await
        .expect_err("a vote from an admin certificate");
    ensure!(err.code() == Code::PermissionDenied, "{err}");
    ensure!(
        err.message().contains("not issued by the cluster CA"),
        "{err}"
    );

    // Reads stay open; the entries name the certificate.
    let mut reader = c.revocation(follower)?;
    for (jti, revoked) in [
        ("by-alice", true),
        ("by-alice-2", true),
        ("by-bob", false),
        ("anonymous", false),
        ("by-a-node-cert", false),
        ("by-a-stranger", false),
    ] {
        let got = reader
            .check(check_req(jti, pb::Consistency::Linearizable, 0))
            .await?
            .into_inner()
            .result
            .context("a result")?;
        ensure!(got.revoked == revoked, "{jti}: {got:?}");
        if revoked {
            let by = match got.matched {
                Some(pb::check_result::Matched::Token(t)) => t.revoked_by,
                other => anyhow::bail!("{jti} matched {other:?}"),
            };
            ensure!(by == "cert:alice", "{jti} recorded as {by:?}");
        }
    }

    // Rate limits are per admin: Alice and Carol call from the same address, Alice floods
    // past her budget, Carol's writes still go through. Alice's earlier write at this node
    // took a token from her bucket (20 per second, a burst of 20): wait until it has
    // refilled, so her budget during the flood is exactly the burst plus the refill over the
    // flood's own duration.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let flood = api_as(&at_follower, &ca, Some(&alice))?;
    let started = std::time::Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..100 {
        let mut api = flood.clone();
        calls.spawn(async move { api.revoke(revoke_req(&format!("flood-{i}"))).await });
    }
    let (mut accepted, mut limited) = (0, 0);
    while let Some(r) = calls.join_next().await {
        match r? {
            Ok(_) => accepted += 1,
            Err(s) if s.code() == Code::ResourceExhausted => {
                ensure!(s.message().contains("cert:alice"), "{s}");
                limited += 1;
            }
            Err(s) => anyhow::bail!("flood call failed otherwise: {s}"),
        }
    }
    let budget = 20 + (20.0 * started.elapsed().as_secs_f64()).ceil() as usize;
    ensure!(
        (20..=budget).contains(&accepted) && accepted + limited == 100 && limited > 0,
        "accepted {accepted}, limited {limited}; the budget was 20 to {budget}"
    );
    let mut calm = api_as(&at_follower, &ca, Some(&carol))?;
    for i in 0..5 {
        calm.revoke(revoke_req(&format!("calm-{i}")))
            .await
            .with_context(|| format!("Carol's write {i} right after Alice's flood"))?;
    }
    Ok(())
}
