//! A TLS cluster: nodes talk Raft over mutual TLS, clients over TLS trusting the cluster CA;
//! plaintext clients, peers without the cluster's certificate and Raft calls from anyone
//! without one are refused.

use std::time::Duration;

use anyhow::{ensure, Result};
use revokd_client::{Client, ClientConfig, ClientTls, Revoke};
use revokd_e2e::now;
use revokd_proto::v1::{self as pb, raft_client::RaftClient};
use revokd_testkit::devca::DevCa;
use revokd_testkit::{channel, tls_channel, ClusterOptions, ProcessCluster};
use tonic::Code;

#[tokio::test]
async fn a_tls_cluster_refuses_plaintext_and_strangers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = DevCa::new("test cluster CA")?;
    let opts = ClusterOptions {
        extra_args: ca.node_flags(dir.path(), "node")?,
        tls_ca: Some(ca.ca_pem.clone().into_bytes()),
    };
    // The cluster elects a leader: its nodes reach each other over mutual TLS.
    let mut c = ProcessCluster::start_with(3, opts).await?;
    let leader = c.wait_leader(Duration::from_secs(20)).await?;

    // A client trusting the cluster CA revokes, and every node has it.
    let mut config = ClientConfig::new(c.endpoints());
    config.tls = Some(ClientTls::new(ca.ca_pem.clone()));
    let client = Client::connect(config).await?;
    let w = client.revoke(Revoke::new("over-tls", now() + 600)).await?;
    ensure!(w.revision > 0);

    // Plaintext is refused.
    let mut plain = pb::revocation_client::RevocationClient::new(channel(&c.addr(leader)?)?);
    ensure!(
        plain
            .revoke(revokd_e2e::revoke_req("plaintext"))
            .await
            .is_err(),
        "a plaintext call got through"
    );
    // A client that trusts another CA does not trust the cluster.
    let stranger_ca = DevCa::new("another CA")?;
    let mut wrong = pb::revocation_client::RevocationClient::new(tls_channel(
        &c.addr(leader)?,
        stranger_ca.ca_pem.as_bytes(),
    )?);
    ensure!(wrong
        .revoke(revokd_e2e::revoke_req("wrong-ca"))
        .await
        .is_err());

    // Raft calls without a cluster certificate are refused, even over TLS.
    let mut raft = RaftClient::new(tls_channel(&c.addr(leader)?, ca.ca_pem.as_bytes())?);
    let err = raft
        .vote(pb::RaftPayload {
            data: vec![1, 2, 3],
        })
        .await
        .expect_err("a vote from a process without a certificate");
    ensure!(err.code() == Code::Unauthenticated, "{err}");
    ensure!(err.message().contains("cluster CA"), "{err}");
    let err = raft
        .read_index(pb::ReadIndexRequest {})
        .await
        .expect_err("a read index from a process without a certificate");
    ensure!(err.code() == Code::Unauthenticated, "{err}");

    // A node with a certificate from another CA cannot join: added as a learner, it never
    // receives the log (the leader does not trust it, and it does not trust the leader).
    let rogue_dir = dir.path().join("rogue");
    let rogue_addr = c.start_joiner_with(9, stranger_ca.node_flags(&rogue_dir, "rogue")?)?;
    let added = client.add_learner(9, &rogue_addr, false).await;
    ensure!(added.is_ok(), "adding is accepted by the leader: {added:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut rogue_status = pb::cluster_client::ClusterClient::new(tls_channel(
        &rogue_addr,
        stranger_ca.ca_pem.as_bytes(),
    )?);
    let s = rogue_status
        .status(pb::StatusRequest {})
        .await?
        .into_inner();
    ensure!(
        s.applied_revision < w.revision,
        "the rogue node applied {} (the cluster is at {})",
        s.applied_revision,
        w.revision
    );
    // The cluster still serves, and only the real nodes hold the revocation.
    client
        .revoke(Revoke::new("after-rogue", now() + 600))
        .await?;
    Ok(())
}
