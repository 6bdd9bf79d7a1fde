//! The revocation data model: revoked token ids, rules, queries, and the input limits that
//! every layer enforces the same way.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::InvalidInput;
use crate::stored::StoredToken;

/// Longest accepted `jti`, in bytes.
pub const MAX_JTI_LEN: usize = 256;
/// Longest accepted free-text field (reason, subject, rule value, admin identity), in bytes.
pub const MAX_TEXT_LEN: usize = 1024;
/// Most token ids in one `RevokeBatch`.
pub const MAX_BATCH: usize = 10_000;
/// Most bytes of token data (ids, reasons, subjects) in one `RevokeBatch`: one log entry must
/// replicate within a Raft heartbeat interval.
pub const MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;
/// Default maximum token lifetime: 30 days. Rules are kept this long, and no revocation may
/// reach further into the future.
pub const DEFAULT_MAX_TOKEN_LIFETIME_SECS: i64 = 30 * 24 * 3600;

/// A revoked token id, as stored and as streamed to watchers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedToken {
    /// The token's `jti` claim.
    pub jti: String,
    /// Unix seconds: the token's `exp`. The entry is purged after this time.
    pub expires_at: i64,
    /// Why it was revoked.
    pub reason: String,
    /// The token's subject, for audit.
    pub subject: String,
    /// Who revoked it.
    pub revoked_by: String,
    /// The revision at which it was revoked.
    pub revision: u64,
}

/// What a caller supplies to revoke one token id.
///
/// Clients build it with [`TokenSpec::new`] and the setters (`revokd-client` calls it `Revoke`):
///
/// ```
/// use revokd_core::TokenSpec;
/// let spec = TokenSpec::new("token-id", 1_900_000_000).reason("logout").subject("alice");
/// assert_eq!((spec.jti.as_str(), spec.reason.as_str()), ("token-id", "logout"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSpec {
    /// The token's `jti` (1-256 bytes).
    pub jti: String,
    /// Unix seconds: the token's own `exp`; the entry is dropped after it.
    pub expires_at: i64,
    /// Why it is revoked (free text, up to 1024 bytes; may be empty).
    pub reason: String,
    /// The token's subject, for audit (up to 1024 bytes; may be empty).
    pub subject: String,
}

impl TokenSpec {
    /// Revoke `jti` until `expires_at` (unix seconds), with no reason or subject.
    pub fn new(jti: impl Into<String>, expires_at: i64) -> Self {
        TokenSpec {
            jti: jti.into(),
            expires_at,
            ..TokenSpec::default()
        }
    }

    /// Sets the reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

    /// Sets the subject.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = subject.into();
        self
    }

    /// Checks the field limits and that `expires_at` is not further than `max_lifetime`
    /// seconds after `now`. An `expires_at` in the past is valid: applying it is a no-op.
    pub fn validate(&self, now: i64, max_lifetime: i64) -> Result<(), InvalidInput> {
        validate_jti(&self.jti)?;
        validate_text("reason", &self.reason)?;
        validate_text("subject", &self.subject)?;
        if self.expires_at > now.saturating_add(max_lifetime) {
            return Err(InvalidInput::TooFarInFuture {
                field: "expires_at",
                value: self.expires_at,
                limit: now.saturating_add(max_lifetime),
            });
        }
        Ok(())
    }
}

/// Which claim a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RuleKind {
    /// The `sub` claim ("log out everywhere").
    Subject,
    /// The `azp` / `client_id` claim.
    Client,
    /// The `kid` header of the signing key.
    Key,
    /// The `iss` claim.
    Issuer,
}

impl RuleKind {
    /// Every kind, in a fixed order.
    pub const ALL: [RuleKind; 4] = [
        RuleKind::Subject,
        RuleKind::Client,
        RuleKind::Key,
        RuleKind::Issuer,
    ];

    /// The kind's position in [`RuleKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuleKind::Subject => "subject",
            RuleKind::Client => "client",
            RuleKind::Key => "key",
            RuleKind::Issuer => "issuer",
        })
    }
}

/// Every token whose `kind` claim equals `value` and that was issued before `not_before` is
/// revoked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Which claim it matches.
    pub kind: RuleKind,
    /// The claim value.
    pub value: String,
    /// Unix seconds: tokens with `iat` strictly before this are revoked.
    pub not_before: i64,
    /// Why.
    pub reason: String,
    /// Who added it.
    pub revoked_by: String,
    /// The revision at which it was added (in this form).
    pub revision: u64,
    /// Unix seconds after which the rule is dropped: no token it covers can still be valid.
    pub drop_at: i64,
}

/// What a caller supplies to add a rule. The proposer fills in `drop_at` from its configured
/// maximum token lifetime, so that applying the rule never depends on a node's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSpec {
    /// Which claim it matches.
    pub kind: RuleKind,
    /// The claim value.
    pub value: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Why (may be empty).
    pub reason: String,
    /// When to drop it (unix seconds).
    pub drop_at: i64,
}

impl RuleSpec {
    /// Builds a rule that is dropped `max_lifetime` seconds after `not_before`, and checks the
    /// limits: a non-empty value, and `not_before` no later than `now + max_lifetime`.
    pub fn new(
        kind: RuleKind,
        value: String,
        not_before: i64,
        reason: String,
        now: i64,
        max_lifetime: i64,
    ) -> Result<Self, InvalidInput> {
        if value.is_empty() {
            return Err(InvalidInput::Empty("rule value"));
        }
        validate_text("rule value", &value)?;
        validate_text("reason", &reason)?;
        if not_before > now.saturating_add(max_lifetime) {
            return Err(InvalidInput::TooFarInFuture {
                field: "not_before",
                value: not_before,
                limit: now.saturating_add(max_lifetime),
            });
        }
        Ok(RuleSpec {
            kind,
            value,
            not_before,
            reason,
            drop_at: not_before.saturating_add(max_lifetime),
        })
    }
}

/// The parts of a token a check looks at. Borrowed, so a check allocates nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenQuery<'a> {
    /// `jti`; empty when the token has none.
    pub jti: &'a str,
    /// `sub`.
    pub sub: Option<&'a str>,
    /// `azp` or `client_id`.
    pub azp: Option<&'a str>,
    /// `kid`.
    pub kid: Option<&'a str>,
    /// `iss`.
    pub iss: Option<&'a str>,
    /// `iat`. A token without one cannot show it was issued after a rule, so every rule
    /// whose claim matches applies to it (fail closed).
    pub iat: Option<i64>,
}

impl TokenQuery<'_> {
    /// The claim a rule of `kind` compares against.
    pub fn claim(&self, kind: RuleKind) -> Option<&str> {
        match kind {
            RuleKind::Subject => self.sub,
            RuleKind::Client => self.azp,
            RuleKind::Key => self.kid,
            RuleKind::Issuer => self.iss,
        }
    }
}

/// Whether a rule with this `not_before` covers a token issued at `iat`: tokens issued strictly
/// before it are revoked, and a token without `iat` cannot show it was issued after the rule,
/// so it is covered (fail closed). The one definition nodes and local replicas share.
pub fn issued_before(iat: Option<i64>, not_before: i64) -> bool {
    iat.is_none_or(|iat| iat < not_before)
}

/// Why a token is revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match<'a> {
    /// Its `jti` is in the set.
    Token(&'a StoredToken),
    /// A rule covers it.
    Rule(&'a Rule),
}

/// Checks that a `jti` is 1-256 bytes (Rust strings are always valid UTF-8).
pub fn validate_jti(jti: &str) -> Result<(), InvalidInput> {
    if jti.is_empty() {
        return Err(InvalidInput::Empty("jti"));
    }
    if jti.len() > MAX_JTI_LEN {
        return Err(InvalidInput::TooLong {
            field: "jti",
            len: jti.len(),
            max: MAX_JTI_LEN,
        });
    }
    Ok(())
}

/// Checks the `jti` of a query: it may be empty only when the query has a claim that rules
/// can match on.
pub fn validate_jti_query(jti: &str, has_claims: bool) -> Result<(), InvalidInput> {
    if jti.is_empty() && has_claims {
        return Ok(());
    }
    if jti.is_empty() {
        return Err(InvalidInput::Empty("jti (or one of sub, azp, kid, iss)"));
    }
    validate_jti(jti)
}

/// Checks a free-text field's length and that it holds no control characters.
pub fn validate_text(field: &'static str, value: &str) -> Result<(), InvalidInput> {
    if value.len() > MAX_TEXT_LEN {
        return Err(InvalidInput::TooLong {
            field,
            len: value.len(),
            max: MAX_TEXT_LEN,
        });
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(InvalidInput::ControlCharacter(field));
    }
    Ok(())
}
