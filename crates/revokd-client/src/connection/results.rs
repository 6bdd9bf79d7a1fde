//! What the client's writes take and give back: [`Revoke`], [`WriteResult`], [`WriteOutcome`].
//!
//! They are `revokd-core`'s types (the node speaks them too); this module names them where
//! users of this crate have always found them and reads the node's answers through
//! `revokd_proto::convert`, turning what cannot be read into [`Error::Unexpected`].

use revokd_proto::convert::Unreadable;
use revokd_proto::v1 as pb;

use crate::error::Error;

pub use revokd_core::{WriteOutcome, WriteResult};

/// A token id to revoke: `revokd-core`'s [`TokenSpec`](revokd_core::TokenSpec) under the name
/// this crate has always used (it was a field-for-field copy). Build it with
/// `Revoke::new(jti, expires_at).reason(..).subject(..)`, or as a struct literal.
///
/// ```
/// use revokd_client::Revoke;
/// let token = Revoke::new("token-id", 1_900_000_000).reason("logout").subject("alice");
/// assert_eq!(token.subject, "alice");
/// ```
pub type Revoke = revokd_core::TokenSpec;

/// Reads an answer to the call `op` with `read`; what cannot be read is an error, not a guess.
pub(super) fn read<P, T>(
    op: &'static str,
    answer: P,
    read: impl FnOnce(P) -> Result<T, Unreadable>,
) -> Result<T, Error> {
    read(answer).map_err(|what| Error::Unexpected { op, what })
}

/// The answer to the write `op`.
pub(super) fn write_result(op: &'static str, r: &pb::WriteResponse) -> Result<WriteResult, Error> {
    read(op, r, revokd_proto::convert::write_result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_outcome_is_an_error_not_a_guess() {
        let answer = |outcome| pb::WriteResponse {
            revision: 7,
            leader_id: 1,
            outcome,
            committed_revision: 7,
        };
        let known = write_result("Revoke", &answer(pb::WriteOutcome::NotFound as i32));
        assert_eq!(known.unwrap().outcome, WriteOutcome::NotFound);
        for unknown in [0, 99] {
            let e = write_result("Revoke", &answer(unknown)).unwrap_err();
            assert!(matches!(e, Error::Unexpected { op: "Revoke", .. }), "{e}");
        }
    }
}
