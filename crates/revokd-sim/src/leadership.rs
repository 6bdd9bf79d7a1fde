//! Leadership over a run, as the driver samples it after every step: how many elections and
//! election rounds there were, how often the leader changed, and the leader changes that
//! pre-vote exists to prevent (a leader that a majority had just acknowledged, deposed by a
//! term some node raised while that leader did not say it had lost its quorum), which must
//! never happen. Also
//! check-quorum against the ground truth of the fault schedule: a leader cut off from every
//! other node must report that it lost its quorum within its election timeout (plus the time
//! openraft takes to publish its metrics).
//!
//! A term raised while the leader had no quorum (a campaign pre-vote rightly let go) can
//! still depose that leader later, once it has regained its quorum, if the campaign failed
//! and its raised term reaches the leader only then (seed 1816: across a slow link). Raft
//! cannot take a term back, so such a late deposition is counted, not failed. So is one by a
//! term raised before a majority had acknowledged the leader, or within one message delay
//! after (the pre-vote grant that let it campaign may have left the voter just before the
//! leader reached that voter: seed 257, a leader restored by a restart, acknowledged at
//! 4,253 ms, and a term raised at 4,254 ms on a grant sent before the voter heard from it).

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::ServerState;
use revokd::node::Node;

/// How recently a majority must have acknowledged a leader for its deposition to count as
/// disruptive. openraft dates an acknowledgement by when the leader *sent* what was
/// acknowledged, so every voter of that majority heard from the leader since. Under the
/// openraft lease (a heartbeat, 100 ms, plus 2 ms) such a voter refuses any real vote, and
/// it refuses pre-votes for the minimum election timeout (300 ms): a leader deposed within
/// 100 ms of such an acknowledgement was deposed by a node that no majority should have let
/// campaign. Depositions later than that are not counted, so the figure is a lower bound.
const KEPT_WITHIN: Duration = Duration::from_millis(100);

/// And for how long before that a majority must have kept acknowledging it (never 300 ms, the
/// smallest election timeout, without): a majority kept it as leader for longer than any
/// election timeout. A leader that a node back from isolation had only just made a majority
/// with again is not one a majority kept (that node may still have answered as the leader
/// it was before, one that lost its quorum and grants pre-votes).
const KEPT_FOR: Duration = Duration::from_millis(800);

/// The quorum age beyond which a leader counts as not kept (the smallest election timeout).
const KEPT_AGE: Duration = Duration::from_millis(300);

/// Slack on check-quorum's deadline: openraft publishes a leader's quorum age with its
/// metrics, at least every tick (one and a half heartbeats of 100 ms), and the node's
/// election driver looks every 50 ms (the verdict is read from it: the node's clock is not
/// the driver's).
const QUORUM_SLACK: Duration = Duration::from_millis(250);

/// One node as the driver last saw it.
#[derive(Clone, Default)]
struct Seen {
    /// While leading its current term: the spans in which it said it had lost its quorum
    /// (the last one open while it still says so).
    lost: Vec<(Duration, Option<Duration>)>,
    /// When a majority last acknowledged it as leader, as its metrics said.
    quorum_acked_at: Option<Duration>,
    /// Since when its quorum age has stayed under [`KEPT_AGE`] at every sample.
    kept_since: Option<Duration>,
    /// Since when it has been leader in its current term.
    leading: Option<(u64, Duration)>,
    /// When the driver first saw a majority acknowledge it in its current term (a leader
    /// restored by a restart leads before any voter has heard from it).
    majority_since: Option<Duration>,
}

/// What the driver learns of leadership over a run.
#[derive(Default)]
pub struct Leadership {
    /// The longest a message takes without a latency fault: a pre-vote grant's reply can reach
    /// its candidate this long after the voter sent it.
    max_latency: Duration,
    seen: Vec<Seen>,
    /// The cluster's leader: the highest term anyone leads in, and who.
    current: Option<(u64, u64)>,
    /// Terms anyone has reached (each is an election round), and when one was first seen.
    terms: BTreeMap<u64, Duration>,
    /// Times the cluster's leader changed.
    pub changes: u64,
    /// Leader changes that deposed a leader a majority had just acknowledged, by a term
    /// raised while it did not say it had lost its quorum.
    pub disruptive: Vec<String>,
    /// Leaders a majority had just acknowledged, deposed by a term raised while they had no
    /// quorum (see the module docs).
    pub late_depositions: u64,
    /// Leaders that stayed cut off past their election timeout without saying so.
    pub quorum_unnoticed: Vec<String>,
}

/// How a leader that stopped leading while a majority kept it counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deposition {
    /// Explained by the schedule, or not kept by a majority for long enough.
    Excused,
    /// By a term raised while it did not say it had lost its quorum: what pre-vote must
    /// prevent.
    Disruptive,
    /// By a term raised while it had no quorum, that reached it only later.
    Late,
}

/// How a deposition counts: excused; or, for a leader a majority kept, disruptive if any term
/// in `raised` (between the one it led and the one that deposed it) was first reached while it
/// did not say it had lost its quorum (a campaign pre-vote should have stopped), late if every
/// one was first reached inside a span of `lost`, or before `slack` (one message delay) after
/// `since`, when a majority first acknowledged its leadership. A leader no majority has
/// acknowledged yet is not one a majority follows: seed 3771 (a term raised while the leader
/// had crashed, which on restart led its old term again until that term reached it), seed
/// 2042 (a term raised 17 ms after such a restart, on a pre-vote granted by a voter the
/// restarted leader had not reached yet) and seed 257 (the same, 1 ms after its first
/// majority).
fn classify(
    excused: bool,
    terms: &BTreeMap<u64, Duration>,
    raised: std::ops::RangeInclusive<u64>,
    since: Duration,
    slack: Duration,
    lost: &[(Duration, Option<Duration>)],
) -> Deposition {
    let said_lost_at = |at: Duration| {
        at < since + slack
            || lost
                .iter()
                .any(|(from, to)| *from <= at && to.is_none_or(|to| at <= to))
    };
    if excused {
        Deposition::Excused
    } else if terms.range(raised).any(|(_, at)| !said_lost_at(*at)) {
        Deposition::Disruptive
    } else {
        Deposition::Late
    }
}

/// What each node is in the step: its node (if up), and whether the fault schedule cuts it
/// off from every other node right now, since when.
pub struct NodeNow<'a> {
    /// The running node, if any.
    pub node: Option<&'a Node>,
    /// Since when it has been isolated, if it is.
    pub isolated_since: Option<Duration>,
}

impl Leadership {
    /// Nothing seen yet, on a network whose messages take at most `max_latency` without a
    /// latency fault.
    pub fn new(max_latency: Duration) -> Self {
        Leadership {
            max_latency,
            ..Leadership::default()
        }
    }

    /// Samples every node at simulated time `now`; `excused` says whether a leader stepping
    /// down now is explained by the schedule (a membership change, which may remove it).
    pub fn sample(&mut self, now: Duration, nodes: &[NodeNow<'_>], excused: bool) {
        self.seen.resize(nodes.len(), Seen::default());
        let mut best: Option<(u64, u64)> = None;
        for (i, n) in nodes.iter().enumerate() {
            let Some(node) = n.node else {
                // Crashed: whatever it led, nobody deposed it.
                self.seen[i] = Seen::default();
                continue;
            };
            let m = node.raft.metrics().borrow().clone();
            self.terms.entry(m.current_term).or_insert(now);
            let was = self.seen[i].clone();
            let leading = (m.state == ServerState::Leader).then_some(m.current_term);
            // Deposed by a higher term (what a node back from a partition brings). openraft's
            // founders all campaign in term 1 at once and the highest id may take it over in
            // that term: start-up, not a deposition.
            if let Some((term, since)) = was.leading.filter(|(t, _)| m.current_term > *t) {
                let kept = was
                    .kept_since
                    .is_some_and(|t| now.saturating_sub(t) >= KEPT_FOR);
                let deposition = classify(
                    excused || !kept,
                    &self.terms,
                    term + 1..=m.current_term,
                    was.majority_since.unwrap_or(since),
                    self.max_latency,
                    &was.lost,
                );
                self.stepped_down(now, node.id, term, was.quorum_acked_at, deposition);
            }
            let seen = &mut self.seen[i];
            match leading {
                None => seen.leading = None,
                Some(term) if was.leading.is_none_or(|(t, _)| t != term) => {
                    *seen = Seen {
                        leading: Some((term, now)),
                        ..Seen::default()
                    };
                }
                Some(_) => {}
            }
            let Some(term) = leading else {
                continue;
            };
            if let Some(ms) = m.millis_since_quorum_ack {
                seen.majority_since.get_or_insert(now);
                let at = now.saturating_sub(Duration::from_millis(ms));
                seen.quorum_acked_at = Some(seen.quorum_acked_at.map_or(at, |a| a.max(at)));
            }
            let kept = m
                .millis_since_quorum_ack
                .is_some_and(|ms| Duration::from_millis(ms) < KEPT_AGE);
            seen.kept_since = if kept {
                seen.kept_since.or(Some(now))
            } else {
                None
            };
            let open = seen.lost.last_mut().filter(|(_, to)| to.is_none());
            match (node.elections.said_quorum_lost(), open) {
                (true, None) => seen.lost.push((now, None)),
                (false, Some((_, to))) => *to = Some(now),
                _ => {}
            }
            if best.is_none_or(|(t, _)| term > t) {
                best = Some((term, node.id));
            }
            self.check_quorum(now, node, n, i);
        }
        if let Some((term, leader)) = best {
            if self
                .current
                .is_some_and(|(t, l)| term > t || (term == t && l != leader))
            {
                self.changes += 1;
            }
            if self.current.is_none_or(|(t, _)| term >= t) {
                self.current = Some((term, leader));
            }
        }
    }

    /// Node `id` stopped leading `term` while running: counted as `deposition` says if a
    /// majority had just acknowledged it.
    fn stepped_down(
        &mut self,
        now: Duration,
        id: u64,
        term: u64,
        acked_at: Option<Duration>,
        deposition: Deposition,
    ) {
        let Some(at) = acked_at else {
            return;
        };
        let age = now.saturating_sub(at);
        if age >= KEPT_WITHIN {
            return;
        }
        match deposition {
            Deposition::Excused => {}
            Deposition::Late => self.late_depositions += 1,
            Deposition::Disruptive => self.disruptive.push(format!(
                "{}ms: node {id} stopped leading term {term} {}ms after a majority acknowledged it",
                now.as_millis(),
                age.as_millis()
            )),
        }
    }

    fn check_quorum(&mut self, now: Duration, node: &Node, n: &NodeNow<'_>, i: usize) {
        let Some(since) = n.isolated_since else {
            return;
        };
        let Some((term, leading_since)) = self.seen[i].leading else {
            return;
        };
        let cut = since.max(leading_since);
        let limit = node.config.election_timeout + QUORUM_SLACK;
        if now.saturating_sub(cut) > limit
            && !node.elections.said_quorum_lost()
            && self.quorum_unnoticed.len() < 5
        {
            let ack = node.raft.metrics().borrow().millis_since_quorum_ack;
            self.quorum_unnoticed.push(format!(
                "{}ms: node {} leading term {term}, cut off from every node for {}ms, did not say it lost its quorum (its last quorum acknowledgement: {ack:?} ms ago)",
                now.as_millis(),
                node.id,
                now.saturating_sub(cut).as_millis()
            ));
        }
    }

    /// Election rounds: terms reached beyond the first.
    pub fn rounds(&self) -> u64 {
        (self.terms.len() as u64).saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    // Seed 1816's shape: term 2 was first reached at 2,000 ms, while the leader of term 1 said
    // it had lost its quorum (1,900-2,100 ms); it reached that leader only later.
    #[test]
    fn a_term_raised_while_the_leader_said_it_had_no_quorum_deposes_it_late_not_disruptively() {
        let terms = BTreeMap::from([(1, ms(0)), (2, ms(2_000)), (3, ms(2_500))]);
        let lost = [(ms(1_900), Some(ms(2_100)))];
        assert_eq!(
            classify(false, &terms, 2..=2, ms(1_000), Duration::ZERO, &lost),
            Deposition::Late
        );
        // Term 3 was first reached after the leader had its quorum back: disruptive.
        assert_eq!(
            classify(false, &terms, 2..=3, ms(1_000), Duration::ZERO, &lost),
            Deposition::Disruptive
        );
        // A span still open covers every later time.
        assert_eq!(
            classify(
                false,
                &terms,
                2..=3,
                ms(1_000),
                Duration::ZERO,
                &[(ms(1_900), None)]
            ),
            Deposition::Late
        );
        assert_eq!(
            classify(false, &terms, 2..=2, ms(1_000), Duration::ZERO, &[]),
            Deposition::Disruptive
        );
        assert_eq!(
            classify(true, &terms, 2..=3, ms(1_000), Duration::ZERO, &[]),
            Deposition::Excused
        );
        // Seed 3771's and 2042's shape: terms raised before a majority first acknowledged its
        // leadership (it had crashed, and led its old term again after the restart) depose it
        // late.
        assert_eq!(
            classify(false, &terms, 2..=3, ms(3_000), Duration::ZERO, &[]),
            Deposition::Late
        );
        // Seed 257's: a term first seen 1 ms after a restored leader's first majority, on a
        // grant whose reply was still on its way, deposes it late within one message delay
        // of slack, and disruptively past it.
        let terms = BTreeMap::from([(1, ms(0)), (2, ms(4_254))]);
        assert_eq!(
            classify(false, &terms, 2..=2, ms(4_253), ms(10), &[]),
            Deposition::Late
        );
        assert_eq!(
            classify(false, &terms, 2..=2, ms(4_240), ms(10), &[]),
            Deposition::Disruptive
        );
    }
}
