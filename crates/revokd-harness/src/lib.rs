//! revokd-harness: brings a multi-region topology up as real `revokd` processes, puts every
//! link between regions behind a user-space proxy (latency, jitter, cuts), injects faults
//! while a recorded workload runs, checks invariants on the history and writes a report.
//!
//! # Layout
//! - [`topology`]: regions, voters, learners, clients and round trips (TOML).
//! - [`proxy`]: one link proxy: delays bytes in order, cuts either direction.
//! - [`net`]: every link of a deployment, and partitions between sets of sites.
//! - [`cluster`]: the process backend: spawn, kill, pause, restart nodes by PID.
//! - [`faults`]: faults, named scenarios and the seeded random schedule.
//! - [`workload`]: writers, replicas, checkers and the leader monitor.
//! - [`history`]: what every client was told, for the checks and figures.
//! - [`check`]: the invariants checked at the end of a run.
//! - [`options`]: what a run is asked to do (read by the run and its report).
//! - [`report`]: figures as JSON and Markdown, and the timeline picture.
//! - [`run`]: one scenario from start to report.

pub mod check;
pub mod cluster;
pub mod faults;
pub mod history;
pub mod net;
pub mod options;
pub mod proxy;
pub mod report;
pub mod run;
pub mod topology;
pub mod workload;
