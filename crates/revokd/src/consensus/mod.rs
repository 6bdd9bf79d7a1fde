//! Consensus: the Raft timing configuration, and the [`proposer`] that batches concurrent
//! writes into log entries. The openraft type configuration is [`crate::typ`]. The Raft log, vote and state
//! machine live in [`crate::storage`]; the transport between
//! nodes lives in [`crate::network`].

pub mod proposer;

use std::time::Duration;

use crate::config::Config;

/// Whole milliseconds, as openraft's settings take them.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Most log entries sent to a catching-up follower in one AppendEntries: entries carry up
/// to 10,000 tokens each, so a few at a time (the network layer splits further by size).
const MAX_PAYLOAD_ENTRIES: u64 = 64;
/// Largest piece of a snapshot sent in one InstallSnapshot call: well under the Raft
/// message limit, large enough that a million-entry set moves in a few dozen calls.
const SNAPSHOT_CHUNK_BYTES: u64 = 4 * 1024 * 1024;

/// Raft timing and log-compaction settings derived from the node configuration.
pub fn raft_config(config: &Config) -> Result<openraft::Config, openraft::ConfigError> {
    let election_timeout_ms = millis(config.election_timeout);
    openraft::Config {
        cluster_name: "revokd".into(),
        heartbeat_interval: millis(config.heartbeat),
        election_timeout_min: election_timeout_ms,
        // openraft's leader lease equals the maximum election timeout: a voter refuses other
        // candidates until it expires. A narrow range lets the first candidate after a leader
        // dies win in one round (failover well under a second) while keeping enough spread to
        // avoid split votes.
        election_timeout_max: config
            .election_timeout_max
            .map(millis)
            .unwrap_or(election_timeout_ms + election_timeout_ms / 3),
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_logs),
        max_in_snapshot_log_to_keep: config.snapshot_keep_logs,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        ..Default::default()
    }
    .validate()
}
