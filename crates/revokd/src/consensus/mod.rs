//! Consensus: the Raft timing configuration, the [`election`] driver (pre-vote,
//! check-quorum, hand-off) and the [`proposer`] that batches concurrent writes into log
//! entries. The openraft type configuration is [`crate::typ`]. The Raft log, vote and state
//! machine live in [`crate::storage`]; the transport between
//! nodes lives in [`crate::network`].

pub mod election;
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

/// openraft's leader lease: a voter refuses a real vote request while it heard from its
/// leader within this. Elections wait for pre-vote instead (see [`election`]), so the lease
/// only needs to outlast one heartbeat; a hand-off waits it out before the target campaigns.
pub fn openraft_lease(config: &Config) -> std::time::Duration {
    config.heartbeat + Duration::from_millis(2)
}

/// Added to the lease before a hand-off target campaigns: the other voters heard the old
/// leader's last heartbeat up to a one-way delay after the target did.
pub const LEASE_MARGIN: Duration = Duration::from_millis(25);

/// Raft timing and log-compaction settings derived from the node configuration.
///
/// openraft's election timer is off: [`election::Elections`] runs elections. What openraft
/// still takes from its election timeouts is the time it gives one vote request (the
/// minimum: just over a heartbeat, which the topology rule keeps above the largest round
/// trip) and its leader lease (the maximum, [`openraft_lease`]).
pub fn raft_config(config: &Config) -> Result<openraft::Config, openraft::ConfigError> {
    let heartbeat_ms = millis(config.heartbeat);
    let lease_ms = millis(openraft_lease(config));
    openraft::Config {
        cluster_name: "revokd".into(),
        heartbeat_interval: heartbeat_ms,
        election_timeout_min: lease_ms - 1,
        election_timeout_max: lease_ms,
        enable_elect: false,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_logs),
        max_in_snapshot_log_to_keep: config.snapshot_keep_logs,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        ..Default::default()
    }
    .validate()
}
