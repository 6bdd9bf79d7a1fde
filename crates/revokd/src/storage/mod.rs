//! Storage: the Raft log and vote in sled ([`log_store`]) and the state machine with its
//! snapshots and change window ([`state_machine`]).

pub mod log_store;
pub mod state_machine;

use std::path::Path;

pub use log_store::LogStore;
pub use state_machine::{StateMachineStore, WatchItem};

/// Errors opening a node's data directory.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// sled could not open the log.
    #[error("storage: cannot open the Raft log in {path}: {source}")]
    Log {
        /// The directory.
        path: String,
        /// The cause.
        source: sled::Error,
    },
    /// The state machine could not be opened.
    #[error(transparent)]
    StateMachine(#[from] state_machine::OpenError),
}

/// Opens sled, waiting up to two seconds for its file lock: a store closed a moment ago in
/// this process can still hold it while sled's I/O threads wind down. Another process using
/// the same directory keeps it, and the error then says so.
fn open_with_retry(config: &sled::Config) -> Result<sled::Db, sled::Error> {
    let mut attempts = 0;
    loop {
        match config.open() {
            // sled reports a held lock only as an I/O error with this text.
            Err(e) if attempts < 20 && e.to_string().contains("could not acquire lock") => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// Opens the log (`<dir>/log`) and the state machine (`<dir>/snapshots`) of a node.
pub fn open(
    dir: &Path,
    window_events: usize,
) -> Result<(LogStore, StateMachineStore), StorageError> {
    let log_dir = dir.join("log");
    let log_err = |source| StorageError::Log {
        path: log_dir.display().to_string(),
        source,
    };
    // Every append is flushed by the log store itself (group commit); sled's own periodic
    // flusher would only compete with it. Only recent entries are read back (to replicate
    // them), so a small page cache suffices: sled's default is 1 GiB.
    let config = sled::Config::new()
        .path(&log_dir)
        .flush_every_ms(None)
        .cache_capacity(64 * 1024 * 1024);
    let db = open_with_retry(&config).map_err(log_err)?;
    let log = LogStore::open(db).map_err(log_err)?;
    let sm = StateMachineStore::open(&dir.join("snapshots"), window_events)?;
    Ok((log, sm))
}
