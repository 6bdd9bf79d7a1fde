//! The client's errors: one enum for every call, each variant saying what failed and what to do.

use std::time::Duration;

use revokd_proto::convert::Unreadable;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot work (no endpoints, a malformed address, a zero interval).
    #[error("revokd-client: invalid configuration: {0}")]
    Config(String),
    /// The cluster rejected the request as malformed or out of bounds: fix the input, do not
    /// retry it unchanged.
    #[error("revokd-client: {op} rejected: {message}")]
    Rejected {
        /// The call.
        op: &'static str,
        /// The status code (INVALID_ARGUMENT, FAILED_PRECONDITION, ...).
        code: tonic::Code,
        /// The node's explanation.
        message: String,
    },
    /// No node answered within the deadline (retried with backoff on every reachable node).
    #[error("revokd-client: {op}: no node could serve it within {waited:?}; last error: {last}")]
    Unavailable {
        /// The call.
        op: &'static str,
        /// How long the client tried.
        waited: Duration,
        /// The last failure seen.
        last: String,
    },
    /// A node answered with an error that is neither a bad request nor unavailability.
    #[error("revokd-client: {op} failed: {status}")]
    Rpc {
        /// The call.
        op: &'static str,
        /// The status.
        status: tonic::Status,
    },
    /// A streaming read (snapshot or watch) broke or returned something inconsistent.
    #[error("revokd-client: {0}")]
    Stream(String),
    /// A node answered with something this client cannot read (an outcome or a role it does
    /// not know, from a newer node): upgrade the client.
    #[error("revokd-client: {op}: unexpected answer: {what}; is the node newer than this client?")]
    Unexpected {
        /// The call.
        op: &'static str,
        /// What could not be read.
        what: Unreadable,
    },
    /// The replica is not ready (not bootstrapped yet) within the time given.
    #[error("revokd-client: replica not ready after {0:?}: no node has served a snapshot yet")]
    NotReady(Duration),
}

impl Error {
    /// Whether retrying the same request later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. } | Error::Stream(_) | Error::NotReady(_)
        )
    }
}

/// Classifies a status from a call `op` that is not retried any more.
pub(crate) fn from_status(op: &'static str, status: tonic::Status) -> Error {
    use tonic::Code;
    match status.code() {
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::NotFound
        | Code::AlreadyExists => Error::Rejected {
            op,
            code: status.code(),
            message: status.message().to_owned(),
        },
        _ => Error::Rpc { op, status },
    }
}
