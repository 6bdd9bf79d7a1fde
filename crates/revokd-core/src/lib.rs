//! revokd-core: the revocation state machine, with no I/O.
//!
//! # Layout
//! - [`types`]: revoked tokens, rules, queries, and the input limits.
//! - [`api`]: what reads and writes take and answer beyond the data: read consistency, a
//!   remote check's answer, a write's result.
//! - [`cluster`]: what the cluster calls answer: a node's status, its role, members, replicas.
//! - [`command`]: the commands Raft replicates and the outcome of applying one.
//! - [`order`]: each client's write order, so a write its client gave up on never applies
//!   after that client's later writes.
//! - [`event`]: the change events watchers receive, grouped per revision.
//! - [`state`]: [`RevocationSet`], which applies commands and answers checks.
//! - [`stored`]: how the set keeps one revoked token in memory ([`StoredToken`]).
//! - [`snapshot`]: the checksummed snapshot encoding.
//! - [`frame`]: the checksummed binary framing every revokd byte format is written with.
//! - [`error`]: invalid input and snapshot errors.
//!
//! Nothing here reads a clock, touches a disk or a socket: the node crate supplies the time
//! inside each command, so every replica applying the same log reaches the same state.
//!
//! ```
//! use revokd_core::{Command, RevocationSet, TokenQuery, TokenSpec};
//! let mut set = RevocationSet::new();
//! let spec = TokenSpec { jti: "t1".into(), expires_at: 2_000, reason: String::new(), subject: String::new() };
//! set.apply(7, &Command::Revoke { tokens: vec![spec], now: 1_000, by: "admin".into() });
//! assert!(set.check(&TokenQuery { jti: "t1", ..Default::default() }).is_some());
//! assert_eq!(set.revision(), 7);
//! ```

pub mod api;
pub mod cluster;
pub mod command;
pub mod error;
pub mod event;
pub mod frame;
pub mod order;
pub mod snapshot;
pub mod state;
pub mod stored;
pub mod types;

pub use api::{CheckAnswer, Consistency, Matched, WriteOutcome, WriteResult};
pub use cluster::{Member, Membership, NodeStatus, ReplicaInfo, Role};
pub use command::{Applied, Command, Outcome};
pub use error::{InvalidInput, SnapshotError};
pub use event::{ChangeSet, Event};
pub use order::{WriteOrder, Writers};
pub use state::RevocationSet;
pub use stored::StoredToken;
pub use types::{
    issued_before, validate_jti, validate_jti_query, validate_text, Match, RevokedToken, Rule,
    RuleKind, RuleSpec, TokenQuery, TokenSpec, DEFAULT_MAX_TOKEN_LIFETIME_SECS, MAX_BATCH,
    MAX_BATCH_BYTES, MAX_JTI_LEN, MAX_TEXT_LEN,
};
