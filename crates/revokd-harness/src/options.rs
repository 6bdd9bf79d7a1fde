//! What a run is asked to do. Both the run and its report read it, so it lives apart from
//! either and the two depend on it instead of on each other.

use std::path::PathBuf;

use crate::cluster::Backend;
use crate::faults::Schedule;
use crate::topology::Topology;

/// What to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Where nodes run.
    pub topology: Topology,
    /// The faults.
    pub schedule: Schedule,
    /// Seeds proxies' jitter and checkers' choices (the schedule is already built from it).
    pub seed: u64,
    /// Revokes per second per writer.
    pub write_rate: f64,
    /// Checks per second per checker.
    pub check_rate: f64,
    /// Where the report, the timeline and (unless removed) node data and logs go.
    pub out_dir: PathBuf,
    /// Keep node data and logs after a passing run (they are always kept after a failure).
    pub keep_data: bool,
    /// Where nodes run.
    pub backend: Backend,
    /// Run the nodes with TLS (and the clients over it).
    pub tls: bool,
}
