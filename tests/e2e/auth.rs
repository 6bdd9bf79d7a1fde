//! Admin authorization against a real cluster: writes need a bearer JWT with the admin scope
//! from the configured issuer and audience; the verified `sub` is what the revision records.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use revokd_client::{Client, ClientConfig, ClientTls, Revoke};
use revokd_e2e::{check_req, leader_and_follower, now, revoke_req, tls_cluster};
use revokd_proto::v1::{self as pb, revocation_client::RevocationClient};
use revokd_testkit::jwt::{self, keys_dir, Algorithm, Signer};
use revokd_testkit::tls_channel;
use serde_json::{json, Value};
use tonic::Code;

const ISS: &str = "https://auth.test";
const AUD: &str = "revokd";

/// An RS256 token of `claims` signed by the test key in `key_file`.
fn token_with(claims: Value, key_file: &str) -> Result<String> {
    let key = jwt::private_key(Algorithm::RS256, &jwt::key_file(key_file)?)?;
    Signer::new(Algorithm::RS256, key).sign(&claims)
}

/// A TLS cluster of `n` nodes taking admin tokens signed by the test RSA key from
/// [`ISS`] for [`AUD`], plus `extra` flags.
async fn auth_cluster(
    n: u64,
    extra: &[&str],
) -> Result<(
    revokd_testkit::ProcessCluster,
    revokd_testkit::devca::DevCa,
    tempfile::TempDir,
)> {
    let key = keys_dir().join("rsa_public.pem").display().to_string();
    let mut args = vec![
        "--auth-key",
        &key,
        "--auth-issuer",
        ISS,
        "--auth-audience",
        AUD,
    ];
    args.extend_from_slice(extra);
    tls_cluster(n, &args).await
}

fn admin_claims(sub: &str, scope: &str) -> Value {
    json!({ "iss": ISS, "aud": AUD, "sub": sub, "scope": scope, "iat": now(), "exp": now() + 300 })
}

fn with(mut v: Value, k: &str, x: Value) -> Value {
    v[k] = x;
    v
}

/// A raw Revocation client to `addr` (over TLS trusting `ca`) that sends `token` (if any)
/// and claims to be `actor`.
async fn revoke_as(
    addr: &str,
    ca: &[u8],
    token: Option<&str>,
    actor: &str,
    jti: &str,
) -> Result<pb::WriteResponse, tonic::Status> {
    let ch = tls_channel(addr, ca).map_err(|e| tonic::Status::internal(e.to_string()))?;
    let mut client = RevocationClient::new(ch);
    let mut req = tonic::Request::new(revoke_req(jti));
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    req.metadata_mut()
        .insert("x-revokd-actor", actor.parse().unwrap());
    client.revoke(req).await.map(|r| r.into_inner())
}

#[tokio::test]
async fn writes_need_an_admin_token_and_record_its_subject() -> Result<()> {
    // A TLS cluster (mutual TLS between nodes) with admin authorization.
    let (c, ca, _certs) = auth_cluster(3, &["--auth-algorithm", "RS256"]).await?;
    let ca_pem = ca.ca_pem.as_bytes();
    let (leader, follower) = leader_and_follower(&c, Duration::from_secs(10)).await?;
    let (at_leader, at_follower) = (c.addr(leader)?, c.addr(follower)?);

    let admin = token_with(
        admin_claims("alice", "openid revokd:admin"),
        "rsa_private.pem",
    )?;
    // Through a follower (forwarded with the token, verified again by the leader), claiming
    // to be someone else: recorded as the token's subject.
    let w = revoke_as(&at_follower, ca_pem, Some(&admin), "mallory", "by-alice").await?;
    ensure!(w.revision > 0);
    // `scp` as a list works too, through the client crate.
    let bob = token_with(
        with(admin_claims("bob", ""), "scp", json!(["revokd:admin"])),
        "rsa_private.pem",
    )?;
    let mut config = ClientConfig::new(c.endpoints());
    config.bearer_token = Some(bob);
    config.tls = Some(ClientTls::new(ca_pem.to_vec()));
    Client::connect(config)
        .await?
        .revoke(Revoke::new("by-bob", now() + 600))
        .await?;

    let refused = |code: Code, says: &'static str| {
        move |r: Result<pb::WriteResponse, tonic::Status>| -> Result<()> {
            let s = match r {
                Ok(w) => anyhow::bail!("accepted: {w:?}"),
                Err(s) => s,
            };
            ensure!(s.code() == code, "expected {code:?}, got {s}");
            ensure!(
                s.message().contains(says),
                "{:?} should say {says:?}",
                s.message()
            );
            ensure!(
                !s.message().contains("eyJ"),
                "the token is never echoed: {}",
                s.message()
            );
            Ok(())
        }
    };
    refused(
        Code::Unauthenticated,
        "no credential; this call needs a bearer token",
    )(revoke_as(&at_leader, ca_pem, None, "x", "no-token").await)?;
    let expired = token_with(
        with(
            admin_claims("alice", "revokd:admin"),
            "exp",
            json!(now() - 3600),
        ),
        "rsa_private.pem",
    )?;
    refused(Code::Unauthenticated, "xpired")(
        revoke_as(&at_leader, ca_pem, Some(&expired), "x", "expired").await,
    )?;
    let reader = token_with(admin_claims("carol", "revokd:read"), "rsa_private.pem")?;
    refused(Code::PermissionDenied, "lacks scope revokd:admin")(
        revoke_as(&at_follower, ca_pem, Some(&reader), "x", "wrong-scope").await,
    )?;
    let other_aud = token_with(
        with(
            admin_claims("alice", "revokd:admin"),
            "aud",
            json!("billing"),
        ),
        "rsa_private.pem",
    )?;
    refused(Code::Unauthenticated, "token rejected")(
        revoke_as(&at_leader, ca_pem, Some(&other_aud), "x", "other-audience").await,
    )?;
    let forged = token_with(
        admin_claims("alice", "revokd:admin"),
        "rsa_other_private.pem",
    )?;
    refused(Code::Unauthenticated, "token rejected")(
        revoke_as(&at_leader, ca_pem, Some(&forged), "x", "forged").await,
    )?;
    refused(Code::Unauthenticated, "token rejected")(
        revoke_as(&at_leader, ca_pem, Some("not.a.jwt"), "x", "garbage").await,
    )?;

    // Reads stay open by default; the audit trail (Check, Watch) names the admins.
    let mut api = c.revocation(follower)?;
    let check = |jti: &str| check_req(jti, pb::Consistency::Linearizable, 0);
    let got = api.check(check("by-alice")).await?.into_inner();
    let who = |r: &pb::CheckResponse| match r.result.as_ref().and_then(|r| r.matched.as_ref()) {
        Some(pb::check_result::Matched::Token(t)) => t.revoked_by.clone(),
        _ => String::new(),
    };
    ensure!(who(&got) == "alice", "recorded as {:?}", who(&got));
    ensure!(who(&api.check(check("by-bob")).await?.into_inner()) == "bob");
    for jti in [
        "no-token",
        "expired",
        "wrong-scope",
        "other-audience",
        "forged",
        "garbage",
    ] {
        let r = api.check(check(jti)).await?.into_inner();
        ensure!(
            !r.result.is_some_and(|r| r.revoked),
            "{jti} was refused, yet stored"
        );
    }
    let mut watch = api
        .watch(pb::WatchRequest { from_revision: 0 })
        .await?
        .into_inner();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let msg = tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .context("watch stalled")??
            .context("watch ended")?;
        for e in msg.events {
            if let Some(pb::event::Change::Revoked(t)) = e.change {
                seen.push((t.jti, t.revoked_by));
            }
        }
    }
    ensure!(
        seen == [
            ("by-alice".into(), "alice".into()),
            ("by-bob".into(), "bob".into())
        ],
        "{seen:?}"
    );
    Ok(())
}

#[tokio::test]
async fn reads_can_require_a_scope_and_bad_settings_stop_the_node() -> Result<()> {
    let key = keys_dir().join("rsa_public.pem");
    let key_arg = key.display().to_string();
    let (c, ca, _certs) = auth_cluster(1, &["--auth-read-scope", "revokd:read"]).await?;
    let mut api = RevocationClient::new(tls_channel(&c.addr(1)?, ca.ca_pem.as_bytes())?);
    let err = api
        .check(check_req("x", pb::Consistency::Local, 0))
        .await
        .expect_err("reads need a token now");
    ensure!(err.code() == Code::Unauthenticated, "{err}");
    let reader = token_with(admin_claims("carol", "revokd:read"), "rsa_private.pem")?;
    let mut req = tonic::Request::new(check_req("x", pb::Consistency::Local, 0));
    req.metadata_mut()
        .insert("authorization", format!("Bearer {reader}").parse()?);
    api.check(req).await?;

    // A key file that is not a key: the node refuses to start and says why.
    let certs = tempfile::tempdir()?;
    let tls = ca.node_flags(certs.path(), "bad-key")?;
    let out = std::process::Command::new(revokd_testkit::revokd_bin()?)
        .args([
            "--auth-key",
            "/etc/hostname",
            "--auth-issuer",
            ISS,
            "--auth-audience",
            AUD,
        ])
        .args(&tls)
        .output()?;
    ensure!(!out.status.success(), "started with a bad key");
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(stderr.contains("auth-key /etc/hostname"), "{stderr}");
    let out = std::process::Command::new(revokd_testkit::revokd_bin()?)
        .args(["--auth-key", &key_arg])
        .output()?;
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("auth-key needs auth-issuer"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn admin_tokens_are_checked_beyond_their_signature_and_revoked_with_revokd() -> Result<()> {
    let (c, ca, _certs) = auth_cluster(3, &[]).await?;
    let ca_pem = ca.ca_pem.as_bytes();
    let (leader, follower) = leader_and_follower(&c, Duration::from_secs(10)).await?;
    let (at_leader, at_follower) = (c.addr(leader)?, c.addr(follower)?);
    let sign = |claims: Value| token_with(claims, "rsa_private.pem");
    let expect_refused = |r: Result<pb::WriteResponse, tonic::Status>, says: &str| -> Result<()> {
        let s = match r {
            Ok(w) => anyhow::bail!("accepted: {w:?}"),
            Err(s) => s,
        };
        ensure!(s.code() == Code::Unauthenticated, "{s}");
        ensure!(
            s.message().contains(says),
            "{:?} should say {says:?}",
            s.message()
        );
        Ok(())
    };

    // Claims the signature does not vouch for: each refused, saying which.
    for (jti, claim, value, says) in [
        ("x1", "iat", json!(now() + 600), "issued in the future"),
        ("x2", "nbf", json!(now() + 600), "ImmatureSignature"),
        (
            "x3",
            "exp",
            json!(now() + 2 * 24 * 3600),
            "auth-max-token-lifetime-secs",
        ),
        ("x4", "sub", json!("cert:alice"), "names certificate admins"),
    ] {
        let token = sign(with(admin_claims("alice", "revokd:admin"), claim, value))?;
        expect_refused(
            revoke_as(&at_leader, ca_pem, Some(&token), "", jti).await,
            says,
        )?;
    }

    // A leaked admin token is revoked with revokd itself: by its jti, or by a subject rule.
    let leaked = sign(with(
        admin_claims("mallory", "revokd:admin"),
        "jti",
        json!("leaked-admin-token"),
    ))?;
    // Issued a little while ago: a rule revokes tokens issued strictly before it.
    let carol = sign(with(
        admin_claims("carol", "revokd:admin"),
        "iat",
        json!(now() - 5),
    ))?;
    let bob = sign(admin_claims("bob", "revokd:admin"))?;
    revoke_as(
        &at_follower,
        ca_pem,
        Some(&leaked),
        "",
        "before-the-leak-was-found",
    )
    .await?;
    revoke_as(&at_follower, ca_pem, Some(&carol), "", "carol-before").await?;
    // Revoked the way an operator would: revokctl, with the token in a file (not in `ps`).
    let files = tempfile::tempdir()?;
    let (token_file, ca_file) = (files.path().join("bob.jwt"), files.path().join("ca.pem"));
    std::fs::write(&token_file, format!("{bob}\n"))?;
    std::fs::write(&ca_file, ca_pem)?;
    let out = std::process::Command::new(revokd_testkit::revokctl_bin()?)
        .args(["--endpoints", &at_follower, "--tls-ca"])
        .arg(&ca_file)
        .arg("--token-file")
        .arg(&token_file)
        .args(["revoke", "leaked-admin-token", "--expires-at", "+1h"])
        .env_remove("REVOKD_TOKEN")
        .output()?;
    ensure!(
        out.status.success(),
        "revokctl revoke: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut api = RevocationClient::new(tls_channel(&at_leader, ca_pem)?);
    let mut rule = tonic::Request::new(pb::RevokeRuleRequest {
        kind: pb::RuleKind::Subject as i32,
        value: "carol".into(),
        not_before: 0,
        reason: "left the team".into(),
    });
    rule.metadata_mut()
        .insert("authorization", format!("Bearer {bob}").parse()?);
    api.revoke_rule(rule).await?;
    let revoked_at = std::time::Instant::now();
    // Refused within a second on every node, the follower included (it applies the
    // revocation a moment after the leader acknowledged it).
    for (token, says) in [(&leaked, "is revoked"), (&carol, "subject rule")] {
        loop {
            match revoke_as(&at_follower, ca_pem, Some(token), "", "after").await {
                Err(s) if s.code() == Code::Unauthenticated => {
                    ensure!(s.message().contains(says), "{s}");
                    break;
                }
                other => ensure!(
                    revoked_at.elapsed() < Duration::from_secs(1),
                    "a revoked admin token still worked a second later: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Through the client crate too, the answer says why (its probes stay open to a revoked
    // token, so the nodes are not reported down instead).
    let mut config = ClientConfig::new(c.endpoints());
    config.bearer_token = Some(leaked.clone());
    config.tls = Some(ClientTls::new(ca_pem.to_vec()));
    let err = Client::connect(config)
        .await?
        .revoke(Revoke::new("with-a-revoked-token", now() + 600))
        .await
        .err()
        .context("a revoked admin token wrote through the client")?;
    ensure!(err.to_string().contains("is revoked"), "{err}");
    // Bob's token is untouched.
    revoke_as(&at_follower, ca_pem, Some(&bob), "", "bob-after").await?;
    Ok(())
}
