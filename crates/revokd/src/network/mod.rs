//! Network: the Raft transport between nodes, as the `revokd.v1.Raft` gRPC service on the
//! same port as the public API. [`client`] sends openraft's RPCs; [`server`] receives them.
//! Payloads are openraft's own messages encoded with postcard ([`codec`]), and revokd's
//! pre-vote and hand-off messages ([`election`]).

pub mod client;
pub mod codec;
pub mod election;
pub mod server;

pub use client::NetworkFactory;
pub mod handshake;
pub mod incoming;
pub mod tls;
pub use server::RaftService;
