//! Consensus: the Raft timing configuration, the [`election`] driver (pre-vote,
//! check-quorum, hand-off) and the [`proposer`] that batches concurrent writes into log
//! entries. The openraft type configuration is [`crate::typ`]. The Raft log, vote and state
//! machine live in [`crate::storage`]; the transport between
//! nodes lives in [`crate::network`].

pub mod election;
pub mod proposer;

use std::time::Duration;

use crate::config::Config;

/// Whole milliseconds, as openraft's settings (and revokd's election messages) take them.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Most log entries sent to a catching-up follower in one AppendEntries: entries carry up
/// to 10,000 tokens each, so a few at a time (the network layer splits further by size).
const MAX_PAYLOAD_ENTRIES: u64 = 64;
/// Largest piece of a snapshot sent in one InstallSnapshot call: well under the Raft
/// message limit, large enough that a million-entry set moves in a few dozen calls.
const SNAPSHOT_CHUNK_BYTES: u64 = 4 * 1024 * 1024;

/// openraft's leader lease: a voter refuses a real vote request while it heard from its
/// leader within this, the minimum election timeout (plus the millisecond openraft needs
/// between its minimum and maximum). Campaigns wait for pre-vote on top (see [`election`]).
pub fn openraft_lease(config: &Config) -> Duration {
    config.election_timeout + Duration::from_millis(1)
}

/// Added to the lease before a hand-off target campaigns a second time: the other voters
/// heard the old leader's last heartbeat up to a one-way delay after the target did.
pub const LEASE_MARGIN: Duration = Duration::from_millis(25);

/// Raft timing and log-compaction settings derived from the node configuration.
///
/// openraft's election timer is off: [`election::Elections`] runs elections. What openraft
/// still takes from its election timeouts is the time it gives one vote request (the
/// minimum election timeout, as long as a campaign may take) and its leader lease (the
/// maximum, [`openraft_lease`]).
pub fn raft_config(config: &Config) -> Result<openraft::Config, openraft::ConfigError> {
    let election_ms = millis(config.election_timeout);
    openraft::Config {
        cluster_name: "revokd".into(),
        heartbeat_interval: millis(config.heartbeat),
        election_timeout_min: election_ms,
        election_timeout_max: millis(openraft_lease(config)),
        enable_elect: false,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_logs),
        max_in_snapshot_log_to_keep: config.snapshot_keep_logs,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        ..Default::default()
    }
    .validate()
}
