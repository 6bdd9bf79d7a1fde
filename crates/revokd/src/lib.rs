//! revokd: a node of a Raft-replicated JWT revocation cluster.
//!
//! # Layout
//! - [`config`]: the documented, validated node configuration (flags, env, TOML).
//! - [`typ`]: the openraft type configuration and its aliases.
//! - [`consensus`]: Raft settings and the proposer that batches writes.
//! - [`error`]: the node's one error type, used by every layer.
//! - [`storage`]: the sled Raft log, the in-memory state machine, snapshots.
//! - [`watch`]: the change window and the `Watch` streams that follow it.
//! - [`network`]: the Raft transport between nodes over gRPC.
//! - [`api`]: the public gRPC services, leader forwarding, the error-to-status map.
//! - [`node`]: the shared node handle and request routing.
//! - [`replicas`]: the validator replicas that heartbeat this node.
//! - [`metrics`]: Prometheus metrics and the gRPC metrics layer.
//! - [`server`]: starting, serving and stopping a node; its background tasks.
//!
//! [`run`] starts everything and returns when the shutdown future resolves; the `revokd`
//! binary only parses flags, sets up logging and calls it.

pub mod api;
pub mod config;
pub mod consensus;
pub mod error;
pub mod metrics;
pub mod network;
pub mod node;
pub mod replicas;
pub mod server;
pub mod storage;
pub mod typ;
pub mod watch;

pub use error::Error;
pub use server::{
    run, run_on, Connection, OnStart, Platform, RunError, MAX_API_MESSAGE, MAX_API_RESPONSE,
};
