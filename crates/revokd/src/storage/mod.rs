//! Storage: the Raft log and vote ([`log_store`]) and the state machine with its snapshots
//! ([`state_machine`]), both written against the backends in [`disk`]: sled and
//! a snapshot file in `revokd`, memory with a crash model in simulation.

pub mod disk;
pub mod log_store;
pub mod record;
pub mod state_machine;

use std::path::Path;
use std::sync::Arc;

pub use disk::{Disk, MemDisk};
pub use log_store::LogStore;
pub use state_machine::StateMachineStore;

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
    /// A part of the storage could not be opened.
    #[error("storage: cannot open {what}: {source}")]
    Open {
        /// What.
        what: String,
        /// The cause.
        source: std::io::Error,
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

/// Opens the log (`<dir>/log`, sled) and the state machine (`<dir>/snapshots`) of a node.
pub fn open(
    dir: &Path,
    window_events: usize,
) -> Result<(LogStore, StateMachineStore), StorageError> {
    open_disk(&sled_disk(dir)?, window_events)
}

/// Opens the log and the state machine of a node on `disk`. A non-blocking (in-memory) disk
/// needs a tokio runtime.
pub fn open_disk(
    disk: &Disk,
    window_events: usize,
) -> Result<(LogStore, StateMachineStore), StorageError> {
    let log = LogStore::open(disk.log.clone()).map_err(|source| StorageError::Open {
        what: "the Raft log".into(),
        source,
    })?;
    let sm = StateMachineStore::open(disk.snapshots.clone(), window_events)?;
    Ok((log, sm))
}

/// The sled log in `<dir>/log` and the snapshot file in `<dir>/snapshots`.
pub fn sled_disk(dir: &Path) -> Result<Disk, StorageError> {
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
    let log = disk::SledLog::open(db).map_err(log_err)?;
    let snap_dir = dir.join("snapshots");
    let snapshots = disk::FileSnapshots::open(&snap_dir).map_err(|source| StorageError::Open {
        what: format!("the snapshot directory {}", snap_dir.display()),
        source,
    })?;
    Ok(Disk {
        log: Arc::new(log),
        snapshots: Arc::new(snapshots),
    })
}
