//! What can go wrong, and the exit code each failure maps to (documented in `revokctl --help`).

use revokd_client::Error as ClientError;

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: anything not covered below (a bug, an I/O error on a local file).
pub const EXIT_OTHER: i32 = 1;
/// Exit code: the command line is wrong (clap uses the same code).
pub const EXIT_USAGE: i32 = 2;
/// Exit code: no node could serve the request within the deadline.
pub const EXIT_UNAVAILABLE: i32 = 3;
/// Exit code: the cluster (or revokctl's own checks) rejected the input.
pub const EXIT_REJECTED: i32 = 4;

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A flag or argument cannot be used; the message says which and why.
    #[error("revokctl: {0}")]
    Usage(String),
    /// The cluster could not be reached.
    #[error("{0}\nrevokctl: check --endpoints (or REVOKD_ENDPOINTS) and that the nodes are up (revokctl status)")]
    Unavailable(ClientError),
    /// The input was refused.
    #[error("revokctl: rejected: {0}")]
    Rejected(String),
    /// Anything else.
    #[error("revokctl: {0}")]
    Other(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Unavailable(_) => EXIT_UNAVAILABLE,
            CliError::Rejected(_) => EXIT_REJECTED,
            CliError::Other(_) => EXIT_OTHER,
        }
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Rejected { .. } => CliError::Rejected(e.to_string()),
            ClientError::Config(m) => CliError::Usage(m),
            e if e.is_retryable() => CliError::Unavailable(e),
            e => CliError::Other(e.to_string()),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Other(e.to_string())
    }
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        match s.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => CliError::Unavailable(
                ClientError::Stream(format!("stream broke: {}", s.message())),
            ),
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => {
                CliError::Rejected(s.message().to_owned())
            }
            _ => CliError::Other(s.to_string()),
        }
    }
}
