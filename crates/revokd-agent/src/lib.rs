//! # revokd-agent
//!
//! A daemon next to a service (a sidecar, or one per host) that keeps a local replica of the
//! revocation set with `revokd-client`, validates JWTs with its `Validator`, and answers the
//! external-authorization protocols proxies already speak. A service gets revocation-aware
//! validation with no code, or with one call to localhost.
//!
//! ## Layout
//! - [`config`]: flags, environment and TOML file, checked into a [`config::Config`].
//! - [`keys`]: where an issuer's keys come from (files, JWKS file or URL, OIDC discovery),
//!   and the HTTP(S) fetch.
//! - [`issuers`]: the accepted issuers and their validators; key refresh and refetch.
//! - [`decision`]: a request's headers become one [`decision::Decision`]: allow with identity
//!   headers, refuse, or cannot tell now.
//! - [`http`]: forward-auth (`/auth`), `/healthz`, `/readyz`, `/metrics`.
//! - [`grpc`]: Envoy ext_authz v3 and the local `revokd.v1.Revocation` Check/CheckBatch.
//! - [`metrics`]: the Prometheus registry.

pub mod config;
pub mod decision;
pub mod grpc;
pub mod http;
pub mod issuers;
pub mod keys;
pub mod metrics;

use std::sync::Arc;

use anyhow::Context as _;
use revokd_client::{Client, Replica};
use tokio::sync::watch;

use config::Config;

/// Runs the agent until `stop` turns true (SIGTERM in the binary), then drains both listeners
/// for at most `--drain-timeout`.
pub async fn run(config: Config, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    // Bind first: a port in use is an error at start, not after the replica connects.
    let grpc_listener = tokio::net::TcpListener::bind(config.grpc_listen)
        .await
        .with_context(|| format!("--grpc-listen {}", config.grpc_listen))?;
    enum HttpListener {
        Tcp(tokio::net::TcpListener),
        Unix(tokio::net::UnixListener),
    }
    let http_listener = match &config.http_socket {
        Some(path) => {
            // A socket left by a previous run would make bind fail.
            if path.exists() {
                std::fs::remove_file(path)
                    .with_context(|| format!("--http-socket {}", path.display()))?;
            }
            HttpListener::Unix(
                tokio::net::UnixListener::bind(path)
                    .with_context(|| format!("--http-socket {}", path.display()))?,
            )
        }
        None => HttpListener::Tcp(
            tokio::net::TcpListener::bind(config.http_listen)
                .await
                .with_context(|| format!("--http-listen {}", config.http_listen))?,
        ),
    };

    let client = Client::connect(config.client.clone())
        .await
        .context("the cluster connection settings")?;
    let replica = Replica::start(client, config.replica.clone()).context("the replica settings")?;
    let metrics = Arc::new(metrics::Metrics::new(&replica)?);
    let issuers = issuers::Issuers::start(&config, replica.clone(), metrics.clone()).await?;
    let decider = Arc::new(decision::Decider::new(
        issuers.clone(),
        config.claim_headers.clone(),
        metrics.clone(),
    ));
    reload_on_sighup(issuers.clone())?;

    let shutdown = {
        let stop = stop.clone();
        move || {
            let mut stop = stop.clone();
            async move {
                let _ = stop.wait_for(|s| *s).await;
            }
        }
    };
    let router = http::router(http::AppState {
        decider: decider.clone(),
        replica: replica.clone(),
        issuers,
        metrics: metrics.clone(),
    });
    let http_task = tokio::spawn(match http_listener {
        HttpListener::Tcp(l) => Box::pin(http::serve_tcp(l, router, shutdown()))
            as std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>,
        HttpListener::Unix(l) => Box::pin(http::serve_unix(l, router, shutdown())),
    });
    let grpc_task = tokio::spawn(grpc::serve(
        grpc_listener,
        decider,
        replica.clone(),
        metrics,
        shutdown(),
    ));
    tracing::info!(
        endpoints = ?config.client.endpoints,
        issuers = config.issuers.len(),
        "revokd-agent started; answering once the replica has bootstrapped"
    );

    let _ = stop.wait_for(|s| *s).await;
    tracing::info!(timeout = ?config.drain_timeout, "draining");
    let drained = tokio::time::timeout(config.drain_timeout, async {
        let h = http_task.await;
        let g = grpc_task.await;
        (h, g)
    })
    .await;
    match drained {
        Ok((h, g)) => {
            h??;
            g??;
            tracing::info!("stopped");
        }
        Err(_) => tracing::warn!("requests still in flight after the drain timeout; exiting"),
    }
    Ok(())
}

/// SIGHUP reads every file-based key set again.
fn reload_on_sighup(issuers: Arc<issuers::Issuers>) -> anyhow::Result<()> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reading key files again");
            issuers.reload_files().await;
        }
    });
    Ok(())
}
