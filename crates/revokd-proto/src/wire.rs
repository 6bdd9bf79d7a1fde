//! What both sides of the wire must agree on beyond the messages themselves: the metadata
//! keys revokd sets and reads, the marker of errors a node gave (as opposed to a failed
//! connection), and the bounds of fields the node checks and clients check before sending.
//! The node and `revokd-client` import these; neither spells them out.

/// Metadata key carrying the leader's address (`host:port`) on a "not leader" answer.
pub const LEADER_ADDR_HEADER: &str = "x-revokd-leader";
/// Metadata key carrying the leader's node id on a "not leader" answer.
pub const LEADER_ID_HEADER: &str = "x-revokd-leader-id";
/// Metadata key naming who made a write, recorded as its `revoked_by`: the verified admin
/// with authorization on, a caller-declared name without.
pub const ACTOR_HEADER: &str = "x-revokd-actor";
/// Set on a write one node forwards to the leader, so it is never forwarded twice (trusted
/// only from a peer's certificate when TLS is on).
pub const FORWARDED_HEADER: &str = "x-revokd-forwarded";
/// Metadata key carrying a write's place in its client's sequence, `client.seq.settled_below`
/// (`revokd_core::WriteOrder`): with it, a write its client gave up on never takes effect
/// after that client's later writes. Optional; `revokd-client` always sends it.
pub const WRITE_ORDER_HEADER: &str = "x-revokd-write-order";
/// Set on the answer of a leader that lost its quorum (check-quorum): it is no use retrying
/// on that node until it hears from a majority again; try another.
pub const QUORUM_LOST_HEADER: &str = "x-revokd-quorum-lost";
/// Metadata key carrying how long to wait before retrying, in milliseconds (rate limits,
/// busy streams).
pub const RETRY_AFTER_HEADER: &str = "x-revokd-retry-after-ms";

/// How every error message a node gives begins (`revokd: not leader; ...`).
pub const ERROR_PREFIX: &str = "revokd: ";

/// Whether a status message is a node's own answer rather than a transport failure (a
/// refused connection, a reset stream), which says nothing of the node's state.
pub fn is_node_error(message: &str) -> bool {
    message.starts_with(ERROR_PREFIX)
}

/// Longest `Heartbeat` replica id, in bytes.
pub const MAX_REPLICA_ID_LEN: usize = 128;
/// Longest `Heartbeat` replica description, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_errors_are_told_from_transport_failures() {
        assert!(is_node_error(
            "revokd: not leader; leader is node 2 at 10.0.0.2:7001"
        ));
        assert!(!is_node_error("transport error"));
        assert!(!is_node_error("revokdx"));
    }
}
