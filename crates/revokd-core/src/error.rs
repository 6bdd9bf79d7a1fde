//! Errors of the core: invalid caller input and unreadable snapshots.

use thiserror::Error;

/// A request field is out of bounds. The message names the field and the limit.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidInput {
    /// A required field is empty.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// A field is longer than allowed.
    #[error("{field} is {len} bytes; the limit is {max}")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A text field holds a control character.
    #[error("{0} must not contain control characters")]
    ControlCharacter(&'static str),
    /// A time lies beyond the maximum token lifetime.
    #[error("{field} {value} is later than {limit} (now + the maximum token lifetime)")]
    TooFarInFuture {
        /// Which field.
        field: &'static str,
        /// The value given (unix seconds).
        value: i64,
        /// The latest accepted value (unix seconds).
        limit: i64,
    },
    /// A batch holds too many items.
    #[error("batch holds {len} tokens; the limit is {max}")]
    BatchTooLarge {
        /// Items given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A batch holds too much data.
    #[error("batch holds {len} bytes of token data; the limit is {max}: split it")]
    BatchTooBig {
        /// Bytes given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An enum field has no meaningful value.
    #[error("{0} must be set")]
    Unspecified(&'static str),
}

/// A snapshot could not be decoded. The node stops rather than serve from it.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// It does not start with the snapshot header.
    #[error("snapshot: not a revokd snapshot (bad magic)")]
    BadMagic,
    /// It was written by an unknown format version.
    #[error("snapshot: unsupported format version {0}")]
    UnsupportedVersion(u32),
    /// It is shorter than its header says.
    #[error("snapshot: truncated: header says {expected} body bytes, found {found}")]
    Truncated {
        /// Body length in the header.
        expected: u64,
        /// Body bytes present.
        found: u64,
    },
    /// The checksum does not match: the data is corrupt.
    #[error("snapshot: checksum mismatch (header {expected:#010x}, computed {computed:#010x})")]
    Checksum {
        /// Checksum in the header.
        expected: u32,
        /// Checksum of the body.
        computed: u32,
    },
    /// The body does not decode.
    #[error("snapshot: malformed body: {0}")]
    Decode(#[from] postcard::Error),
    /// The body decodes but is not a state the encoder can produce (a token id or a rule
    /// twice, an empty id): installing it would corrupt the set's indexes.
    #[error("snapshot: inconsistent body: {0}")]
    Inconsistent(String),
}
