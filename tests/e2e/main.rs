//! End-to-end tests: real `revokd` processes over gRPC on loopback, real sled on disk.
//! All cluster tests compile into this one binary.

mod admin_certs;
mod agent;
mod auth;
mod bad_input;
mod client;
mod elections;
mod failover;
mod harness;
mod limits;
mod membership;
mod ops;
mod replica;
mod revokctl;
mod secure_default;
mod tls;
mod validator;
mod watch;
mod write_read;
