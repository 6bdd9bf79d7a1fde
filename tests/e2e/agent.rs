//! revokd-agent end to end: a real agent process next to a real cluster, its keys from a
//! real OIDC discovery document and JWK set served over HTTP, asked through every front end
//! it serves (forward-auth over plain HTTP, Envoy ext_authz through a client generated from
//! Envoy's protos, the local `Check` through revokd's generated client and a Python grpcio
//! client), and through real nginx and Caddy in front of a real upstream.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::extract::State;
use axum::routing::get;
use axum::Router;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use revokd_client::{Revoke, RuleKind};
use revokd_e2e::{client, jti_query, now};
use revokd_proto::v1 as pb;
use revokd_proto::v1::revocation_client::RevocationClient;
use revokd_testkit::jwt::{key_file, keys_dir, private_key, Algorithm, Signer};
use revokd_testkit::process::Process;
use revokd_testkit::{agent_bin, channel, eventually, free_port, ProcessCluster};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);
const AUD: &str = "api";

// ---- a plain HTTP/1.1 client: what a proxy or a curl sends ----

/// A response: status, headers (names in lower case) and body.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One `GET` with `Connection: close`, read to the end.
async fn http_get(addr: &str, path: &str, headers: &[(&str, &str)]) -> Result<Resp> {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .context("connect timeout")??;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .context("read timeout")??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("no header end")?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Resp {
        status,
        headers,
        body: body.to_owned(),
    })
}

async fn auth(addr: &str, path: &str, token: &str) -> Result<Resp> {
    http_get(addr, path, &[("Authorization", &format!("Bearer {token}"))]).await
}

// ---- tokens and keys ----

fn signer(private: &str, kid: &str) -> Result<Signer> {
    Ok(Signer::new(
        Algorithm::RS256,
        private_key(Algorithm::RS256, &key_file(private)?)?,
    )
    .kid(kid))
}

/// A token of `issuer` for `aud`, issued 10 s ago, expiring at `exp`.
fn token(s: &Signer, issuer: &str, jti: &str, sub: &str, aud: &str, exp: i64) -> Result<String> {
    s.sign(&json!({
        "iss": issuer, "aud": aud, "sub": sub, "jti": jti, "scope": "read write",
        "iat": now() - 10, "exp": exp,
    }))
}

/// The public JWK of a signer's key, with its `kid`.
fn jwk(s: &Signer, kid: &str) -> Result<Value> {
    let mut jwk = serde_json::to_value(jsonwebtoken::jwk::Jwk::from_encoding_key(
        s.key(),
        Algorithm::RS256,
    )?)?;
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    Ok(jwk)
}

// ---- an identity provider: OIDC discovery and a JWK set that can change ----

#[derive(Clone)]
struct IdpState {
    issuer: String,
    keys: Arc<RwLock<Vec<Value>>>,
    jwks_fetches: Arc<AtomicUsize>,
}

struct Idp {
    state: IdpState,
    _server: tokio::task::JoinHandle<()>,
}

impl Idp {
    async fn start(keys: Vec<Value>) -> Result<Idp> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let issuer = format!("http://{}/realms/test", listener.local_addr()?);
        let state = IdpState {
            issuer,
            keys: Arc::new(RwLock::new(keys)),
            jwks_fetches: Arc::new(AtomicUsize::new(0)),
        };
        let app = Router::new()
            .route(
                "/realms/test/.well-known/openid-configuration",
                get(|State(s): State<IdpState>| async move {
                    (
                        [("content-type", "application/json")],
                        json!({
                            "issuer": s.issuer,
                            "jwks_uri": format!("{}/certs", s.issuer),
                        })
                        .to_string(),
                    )
                }),
            )
            .route(
                "/realms/test/certs",
                get(|State(s): State<IdpState>| async move {
                    s.jwks_fetches.fetch_add(1, Ordering::SeqCst);
                    let keys = s.keys.read().unwrap().clone();
                    (
                        [
                            ("cache-control", "max-age=1"),
                            ("content-type", "application/json"),
                        ],
                        json!({ "keys": keys }).to_string(),
                    )
                }),
            )
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Idp {
            state,
            _server: server,
        })
    }

    fn issuer(&self) -> &str {
        &self.state.issuer
    }

    fn publish(&self, keys: Vec<Value>) {
        *self.state.keys.write().unwrap() = keys;
    }
}

// ---- the agent process ----

struct Agent {
    _proc: Process,
    http: String,
    grpc: String,
}

/// Starts an agent on fresh ports against `endpoints` and waits until `/readyz` says ready.
async fn start_agent(dir: &Path, endpoints: &[String], extra: &[&str]) -> Result<Agent> {
    let http = format!("127.0.0.1:{}", free_port()?);
    let grpc = format!("127.0.0.1:{}", free_port()?);
    let mut args: Vec<String> = [
        "--endpoints",
        &endpoints.join(","),
        "--http-listen",
        &http,
        "--grpc-listen",
        &grpc,
        "--max-staleness",
        "2s",
        "--jwks-min-refresh",
        "1s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut proc = Process::new("revokd-agent", agent_bin()?, args)
        .log_to(dir.join("agent.log"))
        .env("REVOKD_AGENT_LOG", "info,revokd_agent=debug");
    proc.start()?;
    let ready = eventually(WAIT, || async {
        let r = http_get(&http, "/readyz", &[]).await?;
        if r.status != 200 {
            bail!("not ready: {} {}", r.status, r.body);
        }
        Ok(())
    })
    .await;
    if let Err(e) = ready {
        let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
        bail!("{e:#}\nagent log:\n{log}");
    }
    Ok(Agent {
        _proc: proc,
        http,
        grpc,
    })
}

async fn ext_authz(addr: &str, token: Option<&str>) -> Result<CheckResponse> {
    let mut headers = std::collections::HashMap::new();
    headers.insert(":path".to_owned(), "/orders".to_owned());
    if let Some(t) = token {
        headers.insert("authorization".to_owned(), format!("Bearer {t}"));
    }
    let req = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/orders".into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let mut client = AuthorizationClient::new(channel(addr)?);
    Ok(client.check(req).await?.into_inner())
}

fn ext_code(r: &CheckResponse) -> i32 {
    r.status.as_ref().map_or(-1, |s| s.code)
}

/// The headers of an ext_authz answer (allowed or denied), as `name: value`.
fn ext_headers(r: &CheckResponse) -> Vec<String> {
    let list = match &r.http_response {
        Some(HttpResponse::OkResponse(ok)) => &ok.headers,
        Some(HttpResponse::DeniedResponse(d)) => &d.headers,
        _ => return Vec::new(),
    };
    list.iter()
        .filter_map(|h| h.header.as_ref())
        .map(|h| format!("{}: {}", h.key.to_ascii_lowercase(), h.value))
        .collect()
}

fn ext_denied_status(r: &CheckResponse) -> i32 {
    match &r.http_response {
        Some(HttpResponse::DeniedResponse(d)) => d.status.as_ref().map_or(0, |s| s.code),
        _ => 0,
    }
}

fn python_with(modules: &str) -> bool {
    std::process::Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn python_client(args: &[&str]) -> Result<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/agent_client.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "agent_client.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[tokio::test]
async fn the_agent_decides_through_every_front_end_and_follows_key_rotation() -> Result<()> {
    let cluster = ProcessCluster::start(3).await?;
    let admin = client(&cluster.endpoints()).await?;
    let r1 = signer("rsa_private.pem", "r1")?;
    let r2 = signer("rsa_other_private.pem", "r2")?;
    let idp = Idp::start(vec![jwk(&r1, "r1")?]).await?;
    let iss = idp.issuer().to_owned();
    let dir = tempfile::tempdir()?;
    // Keys by OIDC discovery: only the issuer is configured.
    let agent = start_agent(
        dir.path(),
        &cluster.endpoints(),
        &["--issuer", &iss, "--audience", AUD],
    )
    .await?;

    // Forward-auth: a valid token passes with the identity headers.
    let alice = token(&r1, &iss, "fa-alice", "alice", AUD, now() + 600)?;
    let r = http_get(
        &agent.http,
        "/auth",
        &[
            ("Authorization", &format!("Bearer {alice}")),
            ("X-Forwarded-Method", "GET"),
            ("X-Forwarded-Uri", "/orders/7"),
        ],
    )
    .await?;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-user-id"), Some("alice"));
    assert_eq!(r.header("x-user-issuer"), Some(iss.as_str()));
    assert_eq!(r.header("x-user-scopes"), Some("read write"));
    assert_eq!(r.header("cache-control"), Some("no-store"));

    // Refusals, each saying why in the RFC 6750 challenge and nothing more.
    let forged = {
        // Signed with another key but naming r1's kid.
        let f = signer("rsa_other_private.pem", "r1")?;
        token(&f, &iss, "fa-forged", "alice", AUD, now() + 600)?
    };
    for (name, tok, why) in [
        (
            "expired",
            token(&r1, &iss, "fa-exp", "alice", AUD, now() - 120)?,
            "token expired",
        ),
        ("forged", forged, "bad signature"),
        (
            "other audience",
            token(&r1, &iss, "fa-aud", "alice", "billing", now() + 600)?,
            "wrong audience",
        ),
        (
            "other issuer",
            token(
                &r1,
                "https://evil.example",
                "fa-iss",
                "alice",
                AUD,
                now() + 600,
            )?,
            "wrong issuer",
        ),
    ] {
        let r = auth(&agent.http, "/auth", &tok).await?;
        assert_eq!(r.status, 401, "{name}: {r:?}");
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.contains("error=\"invalid_token\"") && challenge.contains(why),
            "{name}: {challenge}"
        );
    }
    let r = http_get(&agent.http, "/auth", &[]).await?;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"revokd\"")
    );
    let r = http_get(
        &agent.http,
        "/auth",
        &[("Authorization", "Bearer not.a.jwt")],
    )
    .await?;
    assert_eq!(r.status, 401, "{r:?}");

    // Revoked through the cluster: refused once the agent's replica has it.
    let ack = admin
        .revoke(Revoke::new("fa-alice", now() + 600).reason("laptop stolen"))
        .await?;
    eventually(WAIT, || async {
        let r = auth(&agent.http, "/auth", &alice).await?;
        let c = r.header("www-authenticate").unwrap_or_default();
        if r.status != 401 || !c.contains("token revoked") {
            bail!("still {r:?}");
        }
        // The revocation's reason stays inside.
        assert!(!c.contains("laptop"), "{c}");
        Ok(())
    })
    .await?;

    // ext_authz, through a client generated from Envoy's protos.
    let bob = token(&r1, &iss, "ea-bob", "bob", AUD, now() + 600)?;
    let r = ext_authz(&agent.grpc, Some(&bob)).await?;
    assert_eq!(ext_code(&r), 0, "{r:?}");
    assert!(
        ext_headers(&r).contains(&"x-user-id: bob".to_owned()),
        "{r:?}"
    );
    let r = ext_authz(&agent.grpc, None).await?;
    assert_eq!(ext_code(&r), 16, "{r:?}");
    assert_eq!(ext_denied_status(&r), 401);
    // A rule: every token of bob issued before now.
    admin
        .revoke_rule(RuleKind::Subject, "bob", Some(now()), "password reset")
        .await?;
    eventually(WAIT, || async {
        let r = ext_authz(&agent.grpc, Some(&bob)).await?;
        if ext_code(&r) != 16 {
            bail!("still {r:?}");
        }
        assert_eq!(ext_denied_status(&r), 401);
        let h = ext_headers(&r);
        assert!(
            h.iter()
                .any(|h| h.starts_with("www-authenticate:") && h.contains("token revoked")),
            "{h:?}"
        );
        Ok(())
    })
    .await?;

    // The local Check, through revokd's own generated client.
    let mut local = RevocationClient::new(channel(&agent.grpc)?);
    let resp = local
        .check(pb::CheckRequest {
            token: Some(jti_query("fa-alice")),
            consistency: pb::Consistency::Local as i32,
            min_revision: ack.committed_revision,
        })
        .await?
        .into_inner();
    let result = resp.result.context("a result")?;
    assert!(result.revoked);
    assert!(resp.revision >= ack.committed_revision);
    match result.matched {
        Some(pb::check_result::Matched::Token(t)) => {
            assert_eq!(t.jti, "fa-alice");
            assert_eq!(t.reason, "laptop stolen");
        }
        other => panic!("expected the token entry, got {other:?}"),
    }
    let batch = local
        .check_batch(pb::CheckBatchRequest {
            tokens: vec![
                jti_query("fa-alice"),
                jti_query("never-revoked"),
                pb::TokenQuery {
                    jti: "x".into(),
                    sub: "bob".into(),
                    iat: Some(now() - 60),
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
        .await?
        .into_inner();
    let revoked: Vec<bool> = batch.results.iter().map(|r| r.revoked).collect();
    assert_eq!(revoked, [true, false, true]);
    let e = local
        .check(pb::CheckRequest {
            token: Some(jti_query("fa-alice")),
            consistency: pb::Consistency::Linearizable as i32,
            min_revision: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    let e = local.check(pb::CheckRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    let e = local.revoke(revokd_e2e::revoke_req("w")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented, "{e}");
    assert!(e.message().contains("cluster"), "{e}");

    // From outside Rust: Python grpcio generated from proto/, and a PyJWT token over urllib.
    if python_with("grpc, grpc_tools, jwt") {
        let v = python_client(&["check", &agent.grpc, "fa-alice"])?;
        assert_eq!(v["revoked"], json!(true), "{v}");
        assert_eq!(v["matched"], json!("token"), "{v}");
        let v = python_client(&["check", &agent.grpc, "never-revoked"])?;
        assert_eq!(v["revoked"], json!(false), "{v}");
        let pem = keys_dir().join("rsa_private.pem");
        let v = python_client(&[
            "forward-auth",
            &agent.http,
            pem.to_str().unwrap(),
            "r1",
            &iss,
            AUD,
            "py-carol",
            "carol",
        ])?;
        assert_eq!(v["status"], json!(200), "{v}");
        assert_eq!(v["x_user_id"], json!("carol"), "{v}");
    } else {
        eprintln!("SKIPPED the Python client checks: python3 lacks grpcio, grpcio-tools or PyJWT (.ci/run installs them)");
    }

    // Key rotation: the provider publishes r2 and withdraws r1.
    let fetches = idp.state.jwks_fetches.load(Ordering::SeqCst);
    idp.publish(vec![jwk(&r2, "r2")?]);
    let carol2 = token(&r2, &iss, "rot-carol", "carol", AUD, now() + 600)?;
    eventually(WAIT, || async {
        let r = auth(&agent.http, "/auth", &carol2).await?;
        if r.status != 200 {
            bail!("the new key is not accepted yet: {r:?}");
        }
        Ok(())
    })
    .await?;
    assert!(idp.state.jwks_fetches.load(Ordering::SeqCst) > fetches);
    let carol1 = token(&r1, &iss, "rot-carol-old", "carol", AUD, now() + 600)?;
    eventually(WAIT, || async {
        let r = auth(&agent.http, "/auth", &carol1).await?;
        if r.status != 401 {
            bail!("the withdrawn key still works: {r:?}");
        }
        assert!(r
            .header("www-authenticate")
            .unwrap_or_default()
            .contains("unknown signing key"));
        Ok(())
    })
    .await?;

    // Cut off from every node: fail closed answers 503 with Retry-After, and back after.
    let ids = cluster.live();
    let mut cluster = cluster;
    for id in &ids {
        cluster.pause(*id)?;
    }
    let cut = eventually(WAIT, || async {
        let r = auth(&agent.http, "/auth", &carol2).await?;
        if r.status != 503 {
            bail!("still {r:?}");
        }
        assert!(r.header("retry-after").is_some(), "{r:?}");
        assert!(r.header("www-authenticate").is_none(), "{r:?}");
        let e = ext_authz(&agent.grpc, Some(&carol2)).await?;
        assert_eq!(ext_code(&e), 14, "{e:?}");
        assert_eq!(ext_denied_status(&e), 503);
        let ready = http_get(&agent.http, "/readyz", &[]).await?;
        assert_eq!(ready.status, 503, "{ready:?}");
        Ok(())
    })
    .await;
    for id in &ids {
        cluster.resume(*id)?;
    }
    cut?;
    eventually(WAIT, || async {
        let r = auth(&agent.http, "/auth", &carol2).await?;
        if r.status != 200 {
            bail!("not back yet: {r:?}");
        }
        Ok(())
    })
    .await?;

    let m = http_get(&agent.http, "/metrics", &[]).await?;
    for line in [
        r#"revokd_agent_decisions_total{frontend="forward_auth",outcome="deny",reason="revoked"}"#,
        r#"revokd_agent_decisions_total{frontend="ext_authz",outcome="allow",reason="ok"}"#,
        r#"revokd_agent_decisions_total{frontend="forward_auth",outcome="unavailable",reason="stale"}"#,
        r#"revokd_agent_issuer_keys{issuer=""#,
        "revokd_replica_applied_revision",
    ] {
        assert!(m.body.contains(line), "{line} not in /metrics:\n{}", m.body);
    }
    Ok(())
}

// ---- real proxies in front of the agent ----

/// The upstream behind the proxy: echoes the identity headers it received.
async fn upstream() -> Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let app = Router::new().fallback(|headers: http::HeaderMap| async move {
        let h = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        format!(
            "upstream saw user={} scopes={}",
            h("x-user-id"),
            h("x-user-scopes")
        )
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, task))
}

/// A deploy/agent/ snippet with its example addresses swapped for this test's.
fn snippet(file: &str, proxy: &str, upstream: &str, agent: &str) -> Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/agent")
        .join(file);
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    for example in ["127.0.0.1:8000", "127.0.0.1:8080", "127.0.0.1:8181"] {
        anyhow::ensure!(text.contains(example), "{file} no longer names {example}");
    }
    Ok(text
        .replace("127.0.0.1:8000", proxy)
        .replace("127.0.0.1:8080", upstream)
        .replace("127.0.0.1:8181", agent))
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.is_file())
}

/// Starts nginx with the deploy/agent/nginx.conf server block.
fn start_nginx(bin: &Path, dir: &Path, server_block: &str) -> Result<Process> {
    let d = dir.display();
    let user = if running_as_root() {
        "user root;\n"
    } else {
        ""
    };
    let conf = format!(
        "{user}worker_processes 1;\nerror_log {d}/nginx-error.log;\npid {d}/nginx.pid;\n\
         events {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  \
         proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  \
         scgi_temp_path {d}/scgi;\n{server_block}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let mut p = Process::new(
        "nginx",
        bin,
        [
            "-p".to_owned(),
            d.to_string(),
            "-c".to_owned(),
            path.display().to_string(),
            "-g".to_owned(),
            "daemon off;".to_owned(),
        ],
    )
    .log_to(dir.join("nginx.log"));
    p.start()?;
    Ok(p)
}

/// Starts Caddy with the deploy/agent/Caddyfile site block (admin API off, state in `dir`).
fn start_caddy(bin: &Path, dir: &Path, site: &str) -> Result<Process> {
    let path = dir.join("Caddyfile");
    std::fs::write(
        &path,
        format!("{{\n\tadmin off\n\tauto_https off\n}}\n\n{site}"),
    )?;
    let d = dir.display().to_string();
    let mut p = Process::new(
        "caddy",
        bin,
        [
            "run".to_owned(),
            "--config".to_owned(),
            path.display().to_string(),
            "--adapter".to_owned(),
            "caddyfile".to_owned(),
        ],
    )
    .env("HOME", &d)
    .env("XDG_DATA_HOME", &d)
    .env("XDG_CONFIG_HOME", &d)
    .log_to(dir.join("caddy.log"));
    p.start()?;
    Ok(p)
}

/// One proxy in front of the agent: identity reaches the upstream, refusals keep their
/// status, a revoke takes effect, and fail closed shows as 503 with Retry-After.
async fn through_proxy(
    name: &str,
    proxy: &str,
    cluster: &mut ProcessCluster,
    signer: &Signer,
    other: &Signer,
    iss: &str,
) -> Result<()> {
    let admin = client(&cluster.endpoints()).await?;
    let jti = format!("{name}-alice");
    let alice = token(signer, iss, &jti, "alice", AUD, now() + 600)?;
    eventually(WAIT, || async {
        let r = auth(proxy, "/orders", &alice).await?;
        if r.status != 200 {
            bail!("{name} not serving yet: {r:?}");
        }
        Ok(())
    })
    .await?;
    // The client's own identity header is replaced by the agent's.
    let r = http_get(
        proxy,
        "/orders",
        &[
            ("Authorization", &format!("Bearer {alice}")),
            ("X-User-Id", "mallory"),
        ],
    )
    .await?;
    assert_eq!(r.status, 200, "{name}: {r:?}");
    assert_eq!(
        r.body, "upstream saw user=alice scopes=read write",
        "{name}"
    );

    for (what, tok, why) in [
        (
            "expired",
            token(signer, iss, "p-exp", "alice", AUD, now() - 120)?,
            "token expired",
        ),
        (
            "forged",
            token(other, iss, "p-forged", "alice", AUD, now() + 600)?,
            "bad signature",
        ),
        (
            "other audience",
            token(signer, iss, "p-aud", "alice", "billing", now() + 600)?,
            "wrong audience",
        ),
    ] {
        let r = auth(proxy, "/orders", &tok).await?;
        assert_eq!(r.status, 401, "{name}, {what}: {r:?}");
        assert!(
            !r.body.contains("upstream saw"),
            "{name}, {what}: reached the upstream"
        );
        let c = r.header("www-authenticate").unwrap_or_default();
        assert!(c.contains(why), "{name}, {what}: {c}");
    }
    let r = http_get(proxy, "/orders", &[]).await?;
    assert_eq!(r.status, 401, "{name}: no token: {r:?}");

    // Revoke through the cluster and measure how long until the proxy refuses.
    admin.revoke(Revoke::new(&jti, now() + 600)).await?;
    let acked = Instant::now();
    eventually(WAIT, || async {
        let r = auth(proxy, "/orders", &alice).await?;
        if r.status != 401 {
            bail!("{name} still lets the revoked token through: {r:?}");
        }
        Ok(())
    })
    .await?;
    eprintln!(
        "{name}: revoke acknowledged -> refused through the proxy within {:?} (polling)",
        acked.elapsed()
    );

    // Cut the agent off from every node: 503 with Retry-After through the proxy, then back.
    let fresh = token(
        signer,
        iss,
        &format!("{name}-fresh"),
        "alice",
        AUD,
        now() + 600,
    )?;
    let ids = cluster.live();
    for id in &ids {
        cluster.pause(*id)?;
    }
    let cut = eventually(WAIT, || async {
        let r = auth(proxy, "/orders", &fresh).await?;
        if r.status != 503 {
            bail!("{name} still answers {r:?}");
        }
        assert!(r.header("retry-after").is_some(), "{name}: {r:?}");
        Ok(())
    })
    .await;
    for id in &ids {
        cluster.resume(*id)?;
    }
    cut?;
    eventually(WAIT, || async {
        let r = auth(proxy, "/orders", &fresh).await?;
        if r.status != 200 {
            bail!("{name} not back yet: {r:?}");
        }
        Ok(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn nginx_and_caddy_in_front_of_the_agent() -> Result<()> {
    let nginx = which("nginx");
    let caddy = which("caddy");
    if nginx.is_none() && caddy.is_none() {
        eprintln!("SKIPPED: neither nginx nor caddy is installed (.ci/run installs both: apt-get install nginx caddy)");
        return Ok(());
    }
    let mut cluster = ProcessCluster::start(3).await?;
    let dir = tempfile::tempdir()?;
    let iss = "https://idp.example/realms/proxies";
    let signer = signer("rsa_private.pem", "r1")?;
    let other = signer_other()?;
    let public = keys_dir().join("rsa_public.pem");
    let key = format!("RS256:{}:r1", public.display());
    let agent = start_agent(
        dir.path(),
        &cluster.endpoints(),
        &["--issuer", iss, "--audience", AUD, "--key", &key],
    )
    .await?;
    let (up, _upstream) = upstream().await?;

    match &nginx {
        Some(bin) => {
            let addr = format!("127.0.0.1:{}", free_port()?);
            let block = snippet("nginx.conf", &addr, &up, &agent.http)?;
            let _nginx = start_nginx(bin, dir.path(), &block)?;
            through_proxy("nginx", &addr, &mut cluster, &signer, &other, iss).await?;
        }
        None => eprintln!("SKIPPED nginx: not installed (apt-get install nginx)"),
    }
    match &caddy {
        Some(bin) => {
            let addr = format!("127.0.0.1:{}", free_port()?);
            let site = snippet("Caddyfile", &addr, &up, &agent.http)?;
            let _caddy = start_caddy(bin, dir.path(), &site)?;
            through_proxy("caddy", &addr, &mut cluster, &signer, &other, iss).await?;
        }
        None => eprintln!("SKIPPED caddy: not installed (apt-get install caddy)"),
    }
    Ok(())
}

/// A key the agent does not trust, under the trusted key's `kid`.
fn signer_other() -> Result<Signer> {
    signer("rsa_other_private.pem", "r1")
}
