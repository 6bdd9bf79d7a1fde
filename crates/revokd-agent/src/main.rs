//! The `revokd-agent` binary: parses the configuration, sets up logging, and runs the agent
//! until SIGTERM or SIGINT.

use revokd_agent::config::{Config, LogFormat};
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let config = match Config::from_args(std::env::args_os()) {
        Ok(c) => c,
        Err(revokd_agent::config::ConfigError::Cli(e)) => e.exit(),
        Err(e) => {
            eprintln!("revokd-agent: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let filter =
        EnvFilter::try_from_env("REVOKD_AGENT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("revokd-agent: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            let _ = tx.send(true);
        });
        revokd_agent::run(config, rx).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("revokd-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
