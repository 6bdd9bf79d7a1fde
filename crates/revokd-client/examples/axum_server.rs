//! An axum server behind [`BearerAuthLayer`]: every request needs a valid HS256 bearer token.
//!
//! ```text
//! REVOKD_JWT_SECRET=$(openssl rand -hex 32) cargo run -p revokd-client --example axum_server -- 127.0.0.1:3000
//! curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:3000/whoami
//! ```
//!
//! - `REVOKD_JWT_SECRET`: the HS256 secret (at least 32 bytes). Unset, the example uses a
//!   fixed demo secret and prints a token signed with it, so it runs out of the box.
//! - `REVOKD_JWT_AUDIENCE`: the accepted audience (default `revokd-example`).
//! - `REVOKD_ENDPOINTS`: comma-separated revokd nodes (`127.0.0.1:7001,...`). When set, the
//!   example keeps a local replica of the revocation set and refuses revoked tokens without a
//!   network hop (`Validator::builder().revocations(replica)`); unset, it checks signatures and
//!   claims only.
//! - The first argument: the listen address (default `127.0.0.1:3000`).
//!
//! With a local cluster (`scripts/cluster.sh up`):
//!
//! ```text
//! REVOKD_ENDPOINTS=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 \
//!     cargo run -p revokd-client --example axum_server
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::routing::get;
use axum::{Extension, Router};
use revokd_client::{
    Algorithm, BearerAuthLayer, Client, ClientConfig, Key, Replica, ReplicaConfig, Validated,
    Validator,
};

const DEMO_SECRET: &str = "demo-secret-for-the-example-only-never-use-it";

async fn whoami(Extension(v): Extension<Validated>) -> String {
    if let Some(staleness) = v.stale {
        // Accepted under fail open while the replica was behind: worth a log line.
        tracing::warn!(?staleness, "revocation state was stale for this request");
    }
    let claims = serde_json::to_string_pretty(&v.claims).unwrap_or_default();
    format!(
        "hello {}\n{claims}\n",
        v.claims.sub.as_deref().unwrap_or("(no sub)")
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter("info,revokd_client=debug")
        .init();

    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into())
        .parse()
        .context("the first argument must be a listen address like 127.0.0.1:3000")?;
    let audience = std::env::var("REVOKD_JWT_AUDIENCE").unwrap_or_else(|_| "revokd-example".into());
    let secret = match std::env::var("REVOKD_JWT_SECRET") {
        Ok(secret) => secret,
        Err(_) => {
            tracing::warn!("REVOKD_JWT_SECRET is not set: using the public demo secret");
            println!("demo token (valid 1 h):\n{}", demo_token(&audience)?);
            DEMO_SECRET.to_owned()
        }
    };

    let mut builder = Validator::builder()
        .key(Key::hmac(Algorithm::HS256, secret.as_bytes())?)
        .audience(audience);
    if let Ok(endpoints) = std::env::var("REVOKD_ENDPOINTS") {
        let client = Client::connect(ClientConfig::new(endpoints.split(','))).await?;
        let replica = Replica::connect(
            client,
            ReplicaConfig::default(),
            std::time::Duration::from_secs(30),
        )
        .await?;
        tracing::info!(
            replica = replica.id(),
            revision = replica.revision(),
            revoked = replica.len(),
            "following the revocation set"
        );
        builder = builder.revocations(replica);
    } else {
        tracing::warn!("REVOKD_ENDPOINTS is not set: revoked tokens are not refused");
    }
    let validator = builder.build()?;
    let app = Router::new()
        .route("/whoami", get(whoami))
        .layer(BearerAuthLayer::new(Arc::new(validator)));

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "listening; try GET /whoami");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

fn demo_token(audience: &str) -> anyhow::Result<String> {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({
        "sub": "demo-user",
        "jti": format!("demo-{now}"),
        "aud": audience,
        "iat": now,
        "exp": now + 3600,
    });
    let key = jsonwebtoken::EncodingKey::from_secret(DEMO_SECRET.as_bytes());
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims,
        &key,
    )?)
}
