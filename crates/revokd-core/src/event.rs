//! Change events: what watchers see, one group per revision.

use serde::{Deserialize, Serialize};

use crate::stored::StoredToken;
use crate::types::{Rule, RuleKind};

/// One change to the revocation set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A token id was revoked: the entry the set keeps, shared with it.
    Revoked(StoredToken),
    /// A token id was removed.
    Unrevoked {
        /// The token id.
        jti: String,
    },
    /// A rule was added or raised. Boxed: rules are rare, and every event in the watch window
    /// is as large as the largest variant.
    RuleAdded(Box<Rule>),
    /// A rule was removed.
    RuleRemoved {
        /// Which claim.
        kind: RuleKind,
        /// The claim value.
        value: String,
    },
    /// Expired entries and rules were dropped.
    Purged {
        /// The proposer's clock.
        now: i64,
        /// Token ids dropped, sorted.
        jtis: Vec<String>,
        /// Rules dropped, sorted.
        rules: Vec<(RuleKind, String)>,
    },
}

/// All the changes applied at one revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeSet {
    /// The revision.
    pub revision: u64,
    /// The changes, in the order they were applied.
    pub events: Vec<Event>,
}
