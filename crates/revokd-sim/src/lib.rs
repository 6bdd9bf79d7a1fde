//! Deterministic simulation of a revokd cluster: 3 real revokd nodes (the same state machine,
//! openraft wiring, gRPC services and client crate as in production) and client replicas, in
//! one process, on a simulated network and clock (turmoil), with the storage on
//! [`revokd::storage::MemDisk`], which loses unflushed writes when a node crashes. Faults are
//! drawn from a seed; the same seed replays the same run exactly.
//!
//! # Layout
//! - [`net`]: turmoil's network behind revokd's seams (the accept stream, the dialer).
//! - [`faults`]: seeded fault schedules.
//! - [`workload`]: writers, the linearizable checker, replicas and the liveness probe.
//! - [`history`]: what every client was told, rendered byte for byte.
//! - [`leadership`]: elections and leader changes as the driver samples them, and the
//!   check that no leader a majority kept is deposed.
//! - [`sim`]: the driver (one run per seed) and the invariants checked on every run.
//!
//! Build it with `--cfg tokio_unstable` (the workspace's `.cargo/config.toml` sets it):
//! without it tokio's internal randomness is not seeded and runs are not reproducible.

#[cfg(not(tokio_unstable))]
compile_error!("revokd-sim needs `--cfg tokio_unstable` (set in .cargo/config.toml; a RUSTFLAGS variable overrides it) to be deterministic");

pub mod faults;
pub mod history;
pub mod leadership;
pub mod net;
pub mod sim;
pub mod workload;

pub use sim::{run, Options, Report};
