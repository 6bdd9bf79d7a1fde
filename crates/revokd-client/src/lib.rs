//! # revokd-client
//!
//! The crate API servers embed to reject revoked JWTs without a network hop per request.
//!
//! ## Layout
//! - [`connection`]: [`Client`]: endpoints, node health from heartbeats, the leader, retries,
//!   admin calls, remote reads and revocation receipts. Its calls take and return domain types
//!   (`revokd-core`'s, re-exported here: [`Revoke`], [`TokenQuery`], [`Consistency`],
//!   [`CheckAnswer`], [`NodeStatus`], [`Membership`], ...); the protobuf messages stay in
//!   [`pb`], for the raw `snapshot`/`watch` streams and for those who want the wire.
//! - [`replica`]: [`Replica`], the local copy of the revocation set that checks read, and the task
//!   that keeps it current (snapshot, watch, resume, staleness).
//! - [`metrics`]: Prometheus metrics of the client and the replica.
//! - [`error`]: the client's [`Error`].
//! - [`check`]: the revocation-check interface ([`TokenQuery`], [`Verdict`]) shared by the replica
//!   and the validator.
//! - [`validator`]: JWT verification with jsonwebtoken ([`Validator`]): keys bound to algorithms,
//!   `exp`/`nbf`/`iss`/`aud` checks, then revocation.
//! - [`layer`]: a tower layer that validates `Authorization: Bearer` tokens for axum or tonic.

#[cfg(all(feature = "aws_lc_rs", feature = "rust_crypto"))]
compile_error!("revokd-client: enable exactly one JWT crypto backend feature: `aws_lc_rs` (the default) or `rust_crypto` (use default-features = false)");
#[cfg(not(any(feature = "aws_lc_rs", feature = "rust_crypto")))]
compile_error!(
    "revokd-client: enable one JWT crypto backend feature: `aws_lc_rs` or `rust_crypto`"
);

pub mod check;
pub mod connection;
pub mod error;
pub mod layer;
pub mod metrics;
pub mod replica;
pub mod validator;

pub use check::{Revocation, RevocationCheck, RevokedBy, RuleKind, TokenQuery, Verdict};
pub use connection::{
    CheckAnswer, Client, ClientConfig, ClientTls, Consistency, Matched, Member, Membership,
    NodeStatus, Receipt, ReceiptedWrite, ReplicaInfo, ReplicaQuorum, Revoke, Role, WriteOutcome,
    WriteResult,
};
pub use error::Error;
pub use layer::{BearerAuth, BearerAuthLayer, Rejection};
pub use replica::{LocalEntry, LocalRule, Replica, ReplicaConfig, StalenessPolicy};
/// The bounds the node enforces on what a client sends: ids per batch, `jti` length.
pub use revokd_core::types::{MAX_BATCH, MAX_JTI_LEN};
/// What a remote check names as the match ([`Matched`]): a revoked token id or a rule.
pub use revokd_core::{RevokedToken, Rule};
/// The wall clock the client reads (settable once per process, for simulation).
pub use revokd_proto::clock;
/// The wire types: what [`Client::snapshot`] and [`Client::watch`] stream, and the generated
/// gRPC clients for those who want to speak the protocol themselves. No other call takes or
/// returns them.
pub use revokd_proto::v1 as pb;
pub use validator::{
    Algorithm, Claims, ConfigError, Key, KeySet, Validated, ValidationError, Validator,
    ValidatorBuilder,
};
