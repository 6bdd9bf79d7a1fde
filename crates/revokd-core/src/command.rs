//! Commands: the application data carried by Raft log entries, and what applying one did.
//!
//! Everything a command's effect depends on is inside it (including the proposer's clock),
//! so every replica that applies the same log reaches the same state.

use serde::{Deserialize, Serialize};

use crate::order::WriteOrder;
use crate::types::{RuleKind, RuleSpec, TokenSpec};

/// A change to the revocation set, as proposed by the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Revoke token ids (one, or an atomic batch).
    Revoke {
        /// The tokens, already validated by the proposer.
        tokens: Vec<TokenSpec>,
        /// The proposer's clock (unix seconds): tokens that expired by then are skipped.
        now: i64,
        /// The admin identity.
        by: String,
    },
    /// Add or raise a rule.
    RevokeRule {
        /// The rule, already validated by the proposer.
        rule: RuleSpec,
        /// The admin identity.
        by: String,
    },
    /// Remove a token id.
    Unrevoke {
        /// The token id.
        jti: String,
        /// The admin identity.
        by: String,
    },
    /// Remove a rule.
    RemoveRule {
        /// Which claim.
        kind: RuleKind,
        /// The claim value.
        value: String,
        /// The admin identity.
        by: String,
    },
    /// Drop entries whose `expires_at` and rules whose `drop_at` are at or before `now`.
    Purge {
        /// The leader's clock (unix seconds).
        now: i64,
    },
    /// Several commands applied in order in one log entry, at one revision: how the leader
    /// amortizes consensus and fsync cost over concurrent requests.
    Batch(Vec<Command>),
    /// A client's write with its place in that client's sequence ([`crate::order`]): skipped
    /// (every item [`Outcome::Superseded`]) if a later write of the same client was applied
    /// after the client gave up on this one. Last in the enum, so logs written before it
    /// existed still decode.
    Ordered {
        /// Where the write stands in its client's sequence.
        order: WriteOrder,
        /// The write.
        cmd: Box<Command>,
    },
}

impl Command {
    /// Approximate encoded size in bytes: what a log entry carrying it costs to replicate.
    pub fn approx_size(&self) -> usize {
        match self {
            Command::Revoke { tokens, by, .. } => {
                by.len()
                    + tokens
                        .iter()
                        .map(|t| t.jti.len() + t.reason.len() + t.subject.len() + 16)
                        .sum::<usize>()
            }
            Command::RevokeRule { rule, by } => {
                by.len() + rule.value.len() + rule.reason.len() + 32
            }
            Command::Unrevoke { jti, by } => jti.len() + by.len() + 8,
            Command::RemoveRule { value, by, .. } => value.len() + by.len() + 8,
            Command::Purge { .. } => 16,
            Command::Batch(cmds) => cmds.iter().map(Command::approx_size).sum::<usize>() + 8,
            Command::Ordered { cmd, .. } => cmd.approx_size() + 24,
        }
    }

    /// How many outcomes applying this command yields (one per token of a revoke, one for
    /// any other command, the sum for a batch).
    pub fn outcome_count(&self) -> usize {
        match self {
            Command::Revoke { tokens, .. } => tokens.len(),
            Command::Batch(cmds) => cmds.iter().map(Command::outcome_count).sum(),
            Command::Ordered { cmd, .. } => cmd.outcome_count(),
            _ => 1,
        }
    }
}

/// What applying a command did to one item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Changed at this revision.
    Applied(u64),
    /// Already in force since this revision; nothing changed (idempotent retry).
    AlreadyPresent(u64),
    /// The token had already expired; nothing changed.
    AlreadyExpired,
    /// Nothing to remove.
    NotFound,
    /// Skipped: its client had already given up on it, and a later write of the same client
    /// was applied first ([`crate::order`]). Nothing changed.
    Superseded,
}

/// The result of applying one log entry: one outcome per item of the command.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The revision of the entry.
    pub revision: u64,
    /// Per item, in command order (one for every command but a batch revoke).
    pub outcomes: Vec<Outcome>,
}
