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

/// The heartbeat interval and minimum election timeout that the timing rule derives from the
/// largest round trip between Raft nodes (voters and learners, jitter included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// `--heartbeat-ms`.
    pub heartbeat: Duration,
    /// `--election-timeout-ms`.
    pub election_timeout: Duration,
    /// `--election-timeout-max-ms`; `None`: the node's default, twice the minimum.
    pub election_timeout_max: Option<Duration>,
}

/// The smallest heartbeat the rule gives (the default, right for one region).
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);
/// What a follower adds to a round trip to store and flush an AppendEntries and answer it.
const FLUSH_MARGIN: Duration = Duration::from_millis(20);

impl Timing {
    /// The timing rule (`--max-peer-rtt-ms`):
    ///
    /// - heartbeat = the round trip plus a quarter, plus 20 ms, rounded up to 10 ms, and at
    ///   least 100 ms. openraft gives every AppendEntries one heartbeat interval to be sent,
    ///   stored, flushed and answered, so it must outlast the round trip with room for a
    ///   slow flush;
    /// - in one region (a round trip up to 64 ms) the defaults: 100 ms heartbeats, election
    ///   timeouts drawn in [300, 600) ms;
    /// - across regions, election timeouts drawn in [2.5 heartbeats, 3.5 heartbeats), rounded
    ///   up to 10 ms (and never under the one-region minimum). A follower then campaigns
    ///   after missing one heartbeat and half the next; pre-vote makes a needless campaign
    ///   harmless (the voters still hear the leader and refuse it). A leader's quorum
    ///   acknowledgement lags by a heartbeat and a round trip, under 2.25 heartbeats, so
    ///   check-quorum does not fire on a healthy link. The draw range is one heartbeat wide,
    ///   longer than a round trip: the first candidate's pre-vote usually ends before the next
    ///   one's timer fires, and a lost leader costs about the minimum plus a fifth of the range
    ///   (the first of four survivors) rather than of a range as wide as the minimum.
    pub fn for_rtt(rtt: Duration) -> Timing {
        let step = 10;
        let round_up = |ms: u64| ms.div_ceil(step) * step;
        let ms = round_up(millis(rtt + rtt / 4 + FLUSH_MARGIN));
        let heartbeat = Duration::from_millis(ms).max(MIN_HEARTBEAT);
        if heartbeat <= MIN_HEARTBEAT {
            return Timing {
                heartbeat,
                election_timeout: heartbeat * 3,
                election_timeout_max: None,
            };
        }
        let election_timeout =
            Duration::from_millis(round_up(millis(heartbeat * 5) / 2)).max(MIN_HEARTBEAT * 3);
        Timing {
            heartbeat,
            election_timeout,
            election_timeout_max: Some(election_timeout + heartbeat),
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(rtt_ms: u64) -> (u64, u64, Option<u64>) {
        let t = Timing::for_rtt(Duration::from_millis(rtt_ms));
        (
            millis(t.heartbeat),
            millis(t.election_timeout),
            t.election_timeout_max.map(millis),
        )
    }

    #[test]
    fn the_timing_rule_keeps_the_defaults_in_one_region_and_outlasts_long_round_trips() {
        assert_eq!(timing(0), (100, 300, None));
        assert_eq!(timing(64), (100, 300, None));
        assert_eq!(timing(70), (110, 300, Some(410)));
        // three-regions-5: 190 ms plus 5 ms of jitter each way.
        assert_eq!(timing(200), (270, 680, Some(950)));
        // five-regions-5-plus-learners: 300 ms plus 8 ms each way.
        assert_eq!(timing(316), (420, 1050, Some(1470)));
        for rtt in (0..2_000).step_by(7) {
            let (hb, el, max) = timing(rtt);
            assert!(hb >= rtt + rtt / 4 + 20, "{rtt} ms: heartbeat {hb} ms");
            // Check-quorum's margin: an acknowledgement lags by a heartbeat and a round trip.
            assert!(
                el >= hb + rtt + 20 + hb / 4,
                "{rtt} ms: election timeout {el} ms"
            );
            assert!(2 * el >= 5 * hb, "{rtt} ms");
            // The draw range outlasts a round trip.
            let width = max.map_or(el, |m| m - el);
            assert!(width > rtt, "{rtt} ms: range {width} ms");
            let config = Config {
                heartbeat: Duration::from_millis(hb),
                election_timeout: Duration::from_millis(el),
                election_timeout_max: max.map(Duration::from_millis),
                ..Config::default()
            };
            assert!(config.validate().is_ok(), "{rtt} ms");
            assert!(raft_config(&config).is_ok(), "{rtt} ms");
        }
    }
}
