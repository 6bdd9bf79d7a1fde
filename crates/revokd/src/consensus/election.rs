//! Elections, driven by revokd instead of openraft's own timer. openraft 0.9 draws one
//! election timeout per process (so two survivors can split their votes round after round),
//! has no pre-vote (a node back from a partition raises its term and deposes a leader the
//! majority still follows) and no check-quorum (a leader cut off from the majority keeps
//! accepting writes it can never commit). This module closes those gaps around it:
//!
//! - openraft's timer is off (`enable_elect: false` in [`super::raft_config`]). The driver
//!   ([`Elections::run`]) watches when this node last heard from a leader. Past a timeout
//!   drawn afresh for every campaign, it first asks the voters whether they would vote for it
//!   ([`PreVoteRequest`]), and campaigns (`trigger().elect()`) only with a majority of grants
//!   in every configuration of the membership.
//! - A voter grants a pre-vote only if it has not heard from a leader within the minimum
//!   election timeout and the candidate's log is at least as up to date as its own
//!   ([`decide`]).
//! - Check-quorum: a leader that no majority has acknowledged for the election timeout is
//!   [`Elections::quorum_lost`]; the node then refuses writes and linearizable reads, reports
//!   NOT_SERVING and says so in `Status`. It also holds its replication back for a while
//!   (`Elections::hold_replication`), so that followers its heartbeats still reach (a
//!   one-way cut, a stalled connection) stop vouching for it and can elect a leader they can
//!   answer; then it lets replication go for a probe, in case its followers can still catch
//!   it up.
//! - A node that a committed membership removed hears so in the answers, and stops
//!   campaigning until its membership changes.
//! - Hand-off: a stopping leader brings its most up-to-date voter level, stops its heartbeats
//!   and sends that voter `TimeoutNow` ([`Elections::hand_off`]).
//! - Lease reads: a leader that a majority accepted within half the minimum election timeout
//!   (dated by when it *sent* what they accepted, [`Links::quorum_acked_at`]) answers a read
//!   index from its committed index, with no round ([`Elections::leader_read_index`]);
//!   otherwise, and while it hands off, openraft's read-index round confirms it first.
//!
//! openraft's own leader lease (a voter refuses real vote requests while it heard from a
//! leader within the minimum election timeout) stays on top of pre-vote, and is what makes the
//! lease reads safe: no other leader can be elected until a voter of that majority has gone a
//! whole minimum election timeout without hearing from this one. That assumes the nodes'
//! clocks *run* at nearly the same rate (half a timeout of slack); they need not agree. A
//! hand-off target campaigns at once: the old leader's vote (its own lease dates from its
//! election) makes a majority of three; a larger cluster's second try comes once the other
//! voters' leases ran out.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::ServerState;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::millis;
use crate::config::Config;
use crate::error::Error;
use crate::network::client::{Channels, Links};
use crate::network::election::{
    send_pre_vote, send_timeout_now, PreVoteRequest, PreVoteResponse, TimeoutNowRequest,
    TimeoutNowResponse,
};
use crate::typ::{LogId, NodeId, Raft};

/// What a probe after a hold adds to its election timeout: the 500 ms openraft's replication
/// waits after a peer was unreachable (which a held send reports) before it sends again.
const PROBE_BACKOFF: Duration = Duration::from_millis(500);

/// How often the driver looks at the node's state (between two heartbeats' worth of time,
/// bounded so a slow heartbeat does not make check-quorum coarse).
fn poll_interval(config: &Config) -> Duration {
    (config.heartbeat / 2).clamp(Duration::from_millis(5), Duration::from_millis(100))
}

/// What this node knows of its own part in Raft, read once per look.
#[derive(Debug, Clone)]
pub struct View {
    /// Leader, follower, candidate or learner.
    pub state: ServerState,
    /// Its current term.
    pub term: u64,
    /// The leader its vote is committed to, if any (openraft's "vote is committed").
    pub following: Option<NodeId>,
    /// The candidate its vote is for while that vote is not committed (itself, while it
    /// campaigns).
    pub voted_for: Option<NodeId>,
    /// How long ago its vote was last refreshed: by a leader's AppendEntries when
    /// `following`, else by its own or a granted vote.
    pub vote_age: Option<Duration>,
    /// Its last log id.
    pub last_log_id: Option<LogId>,
    /// Whether it is a voter of its effective membership.
    pub voter: bool,
    /// The log id of its effective membership.
    pub membership_log_id: Option<LogId>,
    /// The voters of each configuration of its effective membership (two while joint).
    pub configs: Vec<BTreeSet<NodeId>>,
    /// Every voter with the address it advertises.
    pub voters: Vec<(NodeId, String)>,
    /// The voters of its committed membership, and that membership's log id.
    pub committed_voters: (BTreeSet<NodeId>, Option<LogId>),
}

impl View {
    /// Reads the view of `raft`, whose node id is `id` (`None` once Raft has stopped).
    pub async fn read(raft: &Raft, id: NodeId) -> Option<View> {
        let last_log_id = raft.data_metrics().borrow().last_log;
        raft.with_raft_state(move |s| {
            let vote = s.vote_ref();
            let effective = s.membership_state.effective();
            let committed = s.membership_state.committed();
            View {
                state: s.server_state,
                term: vote.leader_id().get_term(),
                following: vote
                    .is_committed()
                    .then(|| vote.leader_id().voted_for())
                    .flatten(),
                voted_for: (!vote.is_committed())
                    .then(|| vote.leader_id().voted_for())
                    .flatten(),
                vote_age: s.vote_last_modified().map(|t| t.elapsed()),
                last_log_id,
                voter: effective.voter_ids().any(|v| v == id),
                membership_log_id: *effective.log_id(),
                configs: effective.membership().get_joint_config().to_vec(),
                voters: effective
                    .voter_ids()
                    .filter_map(|v| effective.get_node(&v).map(|n| (v, n.addr.clone())))
                    .collect(),
                committed_voters: (committed.voter_ids().collect(), *committed.log_id()),
            }
        })
        .await
        .ok()
    }
}

/// How a voter that sees `view` answers `req`. Pure, so the rules are tested on their own:
///
/// - a candidate that a committed membership newer than its own left out is told so;
/// - a leader refuses, even one that lost its quorum: it may be one just back from a cut
///   that has not yet heard of the leader elected meanwhile (seed 855: such a grant won a
///   pre-vote whose real vote then failed, and the candidate's raised term deposed the
///   leader a majority kept). A leader without a quorum is replaced without its vote, or
///   regains its quorum in its hold's probe;
/// - a follower that heard from its leader within `min_timeout` refuses: the leader is
///   alive;
/// - a voter that voted for another candidate in the candidate's term or a later one within
///   `min_timeout` (a candidate itself, or a voter its vote request reached) refuses: that
///   campaign is under way, the real vote would be refused, and a second campaign in the
///   same term would only split the votes (the harness's kill-leader runs saw two or three
///   survivors win their pre-votes within 100 ms and split the term);
/// - a log behind the voter's is refused, as a real vote would be;
/// - anything else is granted. Terms are left to the real vote.
pub fn decide(view: &View, req: &PreVoteRequest, min_timeout: Duration) -> PreVoteResponse {
    let (committed, committed_log_id) = &view.committed_voters;
    if !committed.contains(&req.candidate) && *committed_log_id > req.membership_log_id {
        return PreVoteResponse::Removed {
            membership_log_id: *committed_log_id,
        };
    }
    if let Some(leader) = view.following {
        let heard = view.vote_age.unwrap_or(Duration::MAX);
        let alive = match view.state {
            ServerState::Leader => true,
            _ => heard < min_timeout,
        };
        if alive {
            let heard_ms = match view.state {
                ServerState::Leader => 0,
                _ => millis(heard),
            };
            return PreVoteResponse::LeaderAlive { leader, heard_ms };
        }
    }
    if let Some(candidate) = view.voted_for.filter(|c| *c != req.candidate) {
        let voted = view.vote_age.unwrap_or(Duration::MAX);
        if view.term >= req.term && voted < min_timeout {
            return PreVoteResponse::Campaigning {
                candidate,
                term: view.term,
            };
        }
    }
    if req.last_log_id < view.last_log_id {
        return PreVoteResponse::LogBehind {
            last_log_id: view.last_log_id,
        };
    }
    PreVoteResponse::Granted
}

/// Whether `granted` holds a majority of every configuration in `configs`.
fn wins(configs: &[BTreeSet<NodeId>], granted: &BTreeSet<NodeId>) -> bool {
    configs
        .iter()
        .all(|c| c.intersection(granted).count() * 2 > c.len())
}

/// Counts of what the driver did, for metrics and the simulation.
#[derive(Debug, Default)]
pub struct Counters {
    /// Pre-vote rounds this node started.
    pub pre_votes: AtomicU64,
    /// Campaigns it started (pre-votes won, and hand-offs it was asked to take).
    pub campaigns: AtomicU64,
    /// Hand-offs it made as a stopping leader that another voter took.
    pub hand_offs: AtomicU64,
    /// Times it held its replication back as a leader that had lost its quorum.
    pub holds: AtomicU64,
    /// Read indexes it answered as leader under its lease, with no round.
    pub lease_reads: AtomicU64,
    /// Read indexes it answered as leader after a read-index round (no valid lease).
    pub read_rounds: AtomicU64,
}

/// What the driver last saw, shared with the request paths.
#[derive(Debug, Default)]
struct State {
    /// The leader this node follows and when it last heard from it.
    contact: Option<(NodeId, Instant)>,
    /// The term this node leads in and when it was first seen leading it.
    leading_since: Option<(u64, Instant)>,
    /// Whether check-quorum last found the quorum lost (to log the changes only).
    quorum_lost: bool,
    /// Replication held back (since when), or let go for a probe (until when).
    hold: Hold,
    /// A hand-off is under way: writes wait for the next leader.
    handing_off: bool,
    /// The membership (by log id) under which a voter said this node was removed.
    removed_under: Option<Option<LogId>>,
    /// When it last granted a pre-vote. It then waits a timeout of its own from that moment
    /// before it campaigns: the candidate's log is at least as up to date as its own, and
    /// it campaigns within a round trip. Two candidates a round trip apart would split the
    /// votes of their term.
    granted_at: Option<Instant>,
    /// Its own pre-vote round, while one runs.
    pre_voting: Option<PreVoting>,
}

/// A pre-vote round this node runs, as the answers to other candidates see it.
#[derive(Debug, Clone, Copy)]
struct PreVoting {
    /// The term it asks for.
    term: u64,
    /// Its last log id when it asked.
    last_log_id: Option<LogId>,
    /// It granted the pre-vote of a candidate that outranks it for that term, so it will not
    /// campaign even if it wins.
    yielded: bool,
}

/// Whether `req` outranks a pre-vote this node (`id`, whose log ends at `last_log_id`) runs
/// for the same term: a longer log, or an equal one and a higher node id. Two followers
/// that lost their leader together each win the other's pre-vote and split the term
/// (seen on `three-regions-5`: two voters of one region, 1 ms apart, every time its leader
/// went); with this order exactly one of them goes on.
fn outranks(req: &PreVoteRequest, last_log_id: Option<LogId>, id: NodeId) -> bool {
    (req.last_log_id, req.candidate) > (last_log_id, id)
}

/// Where a leader without a quorum is with holding its replication back.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Not holding: it leads with a quorum, or does not lead.
    #[default]
    None,
    /// It has led without a quorum since then, not yet for long enough to hold.
    LostSince(Instant),
    /// Holding since then.
    Since(Instant),
    /// Letting replication go until then, to see whether a quorum answers.
    ProbeUntil(Instant),
}

/// The election driver of one node; see the module docs.
pub struct Elections {
    id: NodeId,
    raft: Raft,
    config: Arc<Config>,
    channels: Channels,
    links: Arc<Links>,
    state: Mutex<State>,
    /// What it did so far.
    pub counters: Counters,
}

impl Elections {
    /// The driver of node `id` (started with [`Elections::run`]), which holds replication
    /// back through `links`.
    pub fn new(
        id: NodeId,
        raft: Raft,
        config: Arc<Config>,
        channels: Channels,
        links: Arc<Links>,
    ) -> Self {
        Elections {
            id,
            raft,
            config,
            channels,
            links,
            state: Mutex::default(),
            counters: Counters::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long after a majority's acknowledgement (dated by its sending) this leader answers
    /// reads under its lease: half the minimum election timeout, the shortest time a voter of
    /// that majority refuses to vote for anyone else. The other half is slack for clocks that
    /// run at different rates and for the voter's receipt lagging the sending.
    fn lease_window(&self) -> Duration {
        self.config.election_timeout / 2
    }

    /// A read index on this node as leader: every write acknowledged before the call is at or
    /// below it. Under the lease (half the minimum election timeout) it is this node's
    /// committed index, with no round; otherwise openraft confirms leadership with a quorum
    /// first.
    pub async fn leader_read_index(&self) -> Result<u64, Error> {
        if let Some(index) = self.leased_read_index().await {
            self.counters.lease_reads.fetch_add(1, Ordering::Relaxed);
            return Ok(index);
        }
        let (read, _) = self.raft.get_read_log_id().await.map_err(Error::from)?;
        self.counters.read_rounds.fetch_add(1, Ordering::Relaxed);
        Ok(read.map(|l| l.index).unwrap_or(0))
    }

    /// This node's committed index, if it leads now (read from Raft's own state, not its
    /// published metrics), has committed an entry of its own term, is not handing leadership
    /// off, and a majority of every configuration accepted its leadership within the lease
    /// window. Every write acknowledged before the call is at or below it.
    async fn leased_read_index(&self) -> Option<u64> {
        if self.handing_off() {
            return None;
        }
        let id = self.id;
        let (vote, configs, last) = self
            .raft
            .with_raft_state(move |s| {
                let vote = *s.vote_ref();
                let leading = s.server_state == ServerState::Leader
                    && vote.is_committed()
                    && vote.leader_id().voted_for() == Some(id);
                leading.then(|| {
                    (
                        vote,
                        s.membership_state
                            .effective()
                            .membership()
                            .get_joint_config()
                            .to_vec(),
                        // Committed in this leader's own term: its first entry is committed,
                        // so this covers everything earlier leaders committed too.
                        s.committed
                            .filter(|l| l.leader_id == *vote.leader_id())
                            .map(|l| l.index),
                    )
                })
            })
            .await
            .ok()??;
        let last = last?;
        let now = Instant::now();
        let acked = self.links.quorum_acked_at(&vote, &configs, id, now)?;
        (now.duration_since(acked) < self.lease_window()).then_some(last)
    }

    /// The longest a follower goes without hearing from its leader before it campaigns, and
    /// the longest a leader goes without a quorum acknowledgement before it refuses work:
    /// the minimum election timeout.
    fn min_timeout(&self) -> Duration {
        self.config.election_timeout
    }

    /// How long a follower still vouches for the leader it last heard from, and the unit of a
    /// quorumless leader's hold and of a hand-off's patience: twice the minimum election
    /// timeout. It is not derived from the maximum, so that narrowing the draw range (the
    /// timing rule does, across regions) leaves these alone.
    fn patience(&self) -> Duration {
        self.config.election_timeout * 2
    }

    /// A fresh election timeout, uniform in `[election_timeout, election_timeout_max)`,
    /// drawn for every campaign (openraft 0.9 draws one per process).
    fn draw(&self) -> Duration {
        let min = millis(self.config.election_timeout);
        let max = millis(self.config.election_timeout_max()).max(min + 1);
        Duration::from_millis(fastrand::u64(min..max))
    }

    /// Check-quorum: this node leads, has other voters, and no majority has acknowledged it
    /// within the election timeout. It then refuses writes and linearizable reads.
    pub fn quorum_lost(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        if m.state != ServerState::Leader || m.membership_config.voter_ids().count() <= 1 {
            return false;
        }
        let limit = self.min_timeout();
        match m.millis_since_quorum_ack {
            Some(ms) => Duration::from_millis(ms) > limit,
            // Not acknowledged yet since it was elected.
            None => self
                .state()
                .leading_since
                .is_some_and(|(term, at)| term == m.current_term && at.elapsed() > limit),
        }
    }

    /// [`Elections::quorum_lost`] as the error a refused call gets.
    pub fn check_quorum(&self) -> Result<(), Error> {
        match self.quorum_lost() {
            true => Err(Error::QuorumLost(self.min_timeout())),
            false => Ok(()),
        }
    }

    /// Check-quorum's verdict when the driver last looked (at most a poll interval ago),
    /// the one it logged. Unlike [`Elections::quorum_lost`] it reads no clock, so it can be
    /// asked from outside the node's runtime (the simulation's driver).
    pub fn said_quorum_lost(&self) -> bool {
        self.state().quorum_lost
    }

    /// The leader this node can vouch for now: itself while it leads with a quorum, or the
    /// leader it heard from within twice the minimum election timeout. `None` otherwise, so a
    /// learner or follower cut off from the leader stops telling replicas they are fresh.
    pub fn leader_in_contact(&self) -> Option<NodeId> {
        let state = self.raft.metrics().borrow().state;
        if state == ServerState::Leader {
            return (!self.quorum_lost()).then_some(self.id);
        }
        let limit = self.patience();
        self.state()
            .contact
            .filter(|(_, at)| at.elapsed() < limit)
            .map(|(leader, _)| leader)
    }

    /// Whether this node, stopping, is handing its leadership over: writes wait for the
    /// next leader instead of starting here.
    pub fn handing_off(&self) -> bool {
        self.state().handing_off
    }

    /// Runs the driver until the stop signal.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let poll = poll_interval(&self.config);
        let started = Instant::now();
        let mut timeout = self.draw();
        let mut last_campaign: Option<Instant> = None;
        let mut next_look = poll;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(next_look) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            next_look = poll;
            let Some(view) = View::read(&self.raft, self.id).await else {
                return;
            };
            let now = Instant::now();
            self.observe(&view, now);
            self.hold_replication(&view, now);
            if view.state == ServerState::Leader || !view.voter || self.quiet(&view) {
                continue;
            }
            let alone = view.voters.len() == 1;
            let granted = self.state().granted_at.map(|at| now - at);
            let quiet_for = [
                view.vote_age,
                Some(now - last_campaign.unwrap_or(started)),
                granted,
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_default();
            if !alone && quiet_for < timeout {
                // Look again when the timeout is due, not at the next poll: a timeout rounded
                // up to the poll interval would put followers that lost the same leader in
                // the same few slots, and their campaigns would split the votes.
                next_look = poll.min(timeout - quiet_for);
                continue;
            }
            timeout = self.draw();
            last_campaign = Some(now);
            if alone || self.pre_vote(&view).await {
                self.counters.campaigns.fetch_add(1, Ordering::Relaxed);
                tracing::info!(term = view.term + 1, "election: campaigning");
                if self.raft.trigger().elect().await.is_err() {
                    return;
                }
            }
        }
    }

    /// Records what `view` says of the leader's contact, leadership and quorum.
    fn observe(&self, view: &View, now: Instant) {
        let lost = self.quorum_lost();
        let mut st = self.state();
        st.contact = match (view.state, view.following, view.vote_age) {
            (ServerState::Leader, _, _) => None,
            (_, Some(leader), Some(age)) => Some((leader, now - age)),
            _ => None,
        };
        st.leading_since = match (view.state, st.leading_since) {
            (ServerState::Leader, Some((term, at))) if term == view.term => Some((term, at)),
            (ServerState::Leader, _) => Some((view.term, now)),
            _ => None,
        };
        if st
            .removed_under
            .is_some_and(|m| m != view.membership_log_id)
        {
            st.removed_under = None;
        }
        if lost != st.quorum_lost {
            st.quorum_lost = lost;
            if lost {
                tracing::warn!(
                    term = view.term,
                    "election: this node lost its quorum; refusing writes and linearizable reads"
                );
            } else {
                tracing::info!(term = view.term, "election: quorum regained");
            }
        }
    }

    /// Holds replication back while this node leads without a quorum. A leader's heartbeats
    /// and its replication's retries still reach followers on the far side of a one-way cut
    /// or a stalled connection, and those followers refuse every pre-vote while it cannot
    /// commit. openraft 0.9 cannot make a leader step down without raising its term (which
    /// would depose a leader elected meanwhile when this node comes back), so the leader
    /// goes quiet instead: its followers time out and elect one they can answer, whose
    /// higher term then deposes this node.
    ///
    /// The hold starts once no quorum has acknowledged this leader for four minimum election
    /// timeouts (check-quorum refuses work from the minimum on): followers whose
    /// disks or CPUs stall (their acknowledgements wait for a flush) still hear the leader in
    /// time, and a leader that holds over such a moment only forces an election that helps
    /// no one. Nor does a stopping leader hold while it hands leadership over. A hold lasts
    /// four minimum election timeouts, time enough for every follower to time out and
    /// campaign. Then replication goes for a probe (an election timeout, plus openraft's
    /// back-off): a follower whose log is behind this leader's can only be caught up by it,
    /// and a quorum that answers again ends the hold for good.
    fn hold_replication(&self, view: &View, now: Instant) {
        let leading = view.state == ServerState::Leader;
        let lost = leading && self.said_quorum_lost() && !self.handing_off();
        let hold_for = self.patience() * 2;
        let hold_after = hold_for - self.min_timeout();
        let probe_for = self.min_timeout() + PROBE_BACKOFF;
        let mut st = self.state();
        let next = match st.hold {
            _ if !lost => Hold::None,
            Hold::None => Hold::LostSince(now),
            Hold::LostSince(at) if now - at >= hold_after => Hold::Since(now),
            Hold::Since(at) if now - at >= hold_for => Hold::ProbeUntil(now + probe_for),
            Hold::ProbeUntil(until) if now >= until => Hold::Since(now),
            keep => keep,
        };
        if next == st.hold {
            return;
        }
        let was_held = matches!(st.hold, Hold::Since(_) | Hold::ProbeUntil(_));
        st.hold = next;
        drop(st);
        self.links.hold(matches!(next, Hold::Since(_)));
        match next {
            Hold::Since(_) => {
                self.counters.holds.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    term = view.term,
                    for_ms = millis(hold_for),
                    "election: holding replication back so that followers can elect a leader they reach"
                );
            }
            Hold::ProbeUntil(_) => tracing::info!(
                term = view.term,
                for_ms = millis(probe_for),
                "election: letting replication go for a probe"
            ),
            Hold::None if leading && was_held => {
                tracing::info!(term = view.term, "election: replication resumed")
            }
            Hold::None | Hold::LostSince(_) => {}
        }
    }

    /// Whether a voter told this node a committed membership removed it (and its own
    /// membership has not changed since).
    fn quiet(&self, view: &View) -> bool {
        self.state().removed_under == Some(view.membership_log_id)
    }

    /// One pre-vote round: asks every other voter, and says whether a majority of every
    /// configuration would vote for this node, and it did not yield to a rival that
    /// outranks it meanwhile.
    async fn pre_vote(&self, view: &View) -> bool {
        self.state().pre_voting = Some(PreVoting {
            term: view.term + 1,
            last_log_id: view.last_log_id,
            yielded: false,
        });
        let won = self.pre_vote_round(view).await;
        let round = self.state().pre_voting.take();
        let yielded = round.is_some_and(|r| r.yielded);
        if won && yielded {
            tracing::info!(
                term = view.term,
                "election: pre-vote won, but a rival that outranks this node won this one's grant; not campaigning"
            );
        }
        won && !yielded
    }

    async fn pre_vote_round(&self, view: &View) -> bool {
        self.counters.pre_votes.fetch_add(1, Ordering::Relaxed);
        let req = Arc::new(PreVoteRequest {
            candidate: self.id,
            term: view.term + 1,
            last_log_id: view.last_log_id,
            membership_log_id: view.membership_log_id,
        });
        let ttl = self.min_timeout();
        let mut asked = JoinSet::new();
        for (id, addr) in view.voters.iter().filter(|(id, _)| *id != self.id) {
            match self.channels.get(*id, addr) {
                Ok(ch) => {
                    let (id, req) = (*id, req.clone());
                    asked.spawn(async move { (id, send_pre_vote(ch, &req, ttl).await) });
                }
                Err((addr, e)) => {
                    tracing::warn!(peer = id, %addr, error = %e, "election: bad peer address")
                }
            }
        }
        let mut granted = BTreeSet::from([self.id]);
        while let Some(Ok((id, answer))) = asked.join_next().await {
            match answer {
                Ok(PreVoteResponse::Granted) => {
                    granted.insert(id);
                    if wins(&view.configs, &granted) {
                        tracing::info!(term = view.term, granted = ?granted, "election: pre-vote won");
                        return true;
                    }
                }
                Ok(PreVoteResponse::Removed { membership_log_id }) => {
                    tracing::warn!(peer = id, membership = ?membership_log_id, "election: a committed membership removed this node; not campaigning until its membership changes");
                    self.state().removed_under = Some(view.membership_log_id);
                    return false;
                }
                Ok(refused) => {
                    tracing::debug!(peer = id, answer = ?refused, "election: pre-vote refused")
                }
                Err(e) => tracing::debug!(peer = id, error = %e, "election: pre-vote unanswered"),
            }
        }
        let won = wins(&view.configs, &granted);
        if !won {
            tracing::info!(term = view.term, granted = ?granted, "election: pre-vote lost; not campaigning");
        }
        won
    }

    /// Hands leadership to the most up-to-date other voter, if this node leads: new writes
    /// wait, the target is brought level with this node's log, heartbeats stop and the
    /// target is told to campaign; returns once another node leads (or after four minimum
    /// election timeouts). Returns the new leader, if the hand-off took.
    pub async fn hand_off(&self) -> Option<NodeId> {
        let view = View::read(&self.raft, self.id).await?;
        if view.state != ServerState::Leader || view.voters.len() <= 1 {
            return None;
        }
        let started = Instant::now();
        let deadline = started + self.patience() * 2;
        self.state().handing_off = true;
        let taken = self.hand_off_until(&view, deadline).await;
        match taken {
            Some(leader) => {
                self.counters.hand_offs.fetch_add(1, Ordering::Relaxed);
                tracing::info!(leader, took = ?started.elapsed(), "election: handed leadership over");
            }
            None => {
                tracing::warn!(took = ?started.elapsed(), "election: hand-off did not take; stopping anyway");
                self.raft.runtime_config().heartbeat(true);
                self.state().handing_off = false;
            }
        }
        taken
    }

    async fn hand_off_until(&self, view: &View, deadline: Instant) -> Option<NodeId> {
        let mut rx = self.raft.metrics();
        // The voter with the most of this node's log, once it has all of it.
        let (target, addr) = loop {
            let level = {
                let m = rx.borrow_and_update();
                let last = m.last_log_index;
                m.replication
                    .iter()
                    .flat_map(|r| r.iter())
                    .filter(|(id, _)| **id != self.id)
                    .max_by_key(|(_, matched)| matched.map(|l| l.index))
                    .filter(|(_, matched)| matched.map(|l| l.index) >= last)
                    .map(|(id, _)| *id)
            };
            if let Some(id) = level {
                let addr = view.voters.iter().find(|(v, _)| *v == id)?.1.clone();
                break (id, addr);
            }
            tokio::time::timeout_at(deadline, rx.changed())
                .await
                .ok()?
                .ok()?;
        };
        self.raft.runtime_config().heartbeat(false);
        let req = TimeoutNowRequest {
            leader: self.id,
            term: view.term,
            last_log_id: self.raft.data_metrics().borrow().last_log,
        };
        let ch = self.channels.get(target, &addr).ok()?;
        match send_timeout_now(ch, &req, self.min_timeout()).await {
            Ok(TimeoutNowResponse::Campaigning { in_ms }) => {
                tracing::info!(target, in_ms, "election: handing leadership over");
            }
            Ok(TimeoutNowResponse::Refused(why)) => {
                tracing::warn!(target, why, "election: hand-off refused");
                return None;
            }
            Err(e) => {
                tracing::warn!(target, error = %e, "election: hand-off unanswered");
                return None;
            }
        }
        let m = tokio::time::timeout_at(
            deadline,
            rx.wait_for(|m| m.current_leader.is_some_and(|l| l != self.id)),
        )
        .await
        .ok()?
        .ok()?;
        m.current_leader
    }
}

#[tonic::async_trait]
impl crate::network::election::Elections for Elections {
    async fn pre_vote(&self, req: PreVoteRequest) -> PreVoteResponse {
        let Some(view) = View::read(&self.raft, self.id).await else {
            return PreVoteResponse::LeaderAlive {
                leader: self.id,
                heard_ms: 0,
            };
        };
        let mut answer = decide(&view, &req, self.min_timeout());
        if answer == PreVoteResponse::Granted {
            // A grant while this node runs its own pre-vote for the term: only one of the
            // two goes on (see [`outranks`]).
            let mut st = self.state();
            match st.pre_voting.as_mut().filter(|r| r.term == req.term) {
                Some(own) if !outranks(&req, own.last_log_id, self.id) => {
                    answer = PreVoteResponse::Campaigning {
                        candidate: self.id,
                        term: req.term,
                    };
                }
                Some(own) => own.yielded = true,
                None => {}
            }
            if answer == PreVoteResponse::Granted {
                st.granted_at = Some(Instant::now());
            }
        }
        tracing::debug!(candidate = req.candidate, term = req.term, answer = ?answer, "election: pre-vote asked");
        answer
    }

    async fn read_index(&self) -> Result<u64, Error> {
        self.leader_read_index().await
    }

    fn check_quorum(&self) -> Result<(), Error> {
        Elections::check_quorum(self)
    }

    async fn timeout_now(&self, req: TimeoutNowRequest) -> TimeoutNowResponse {
        let Some(view) = View::read(&self.raft, self.id).await else {
            return TimeoutNowResponse::Refused("revokd: raft has stopped".into());
        };
        if !view.voter {
            return TimeoutNowResponse::Refused(format!("revokd: node {} is not a voter", self.id));
        }
        if view.following != Some(req.leader) {
            return TimeoutNowResponse::Refused(format!(
                "revokd: node {} follows {:?}, not node {}",
                self.id, view.following, req.leader
            ));
        }
        if view.last_log_id < req.last_log_id {
            return TimeoutNowResponse::Refused(format!(
                "revokd: node {}'s log ends at {:?}, behind {:?}",
                self.id, view.last_log_id, req.last_log_id
            ));
        }
        // The old leader grants at once (its own lease dates from its election); in a
        // larger cluster the other voters' leases on it may not have run out yet, so a
        // campaign that did not take is tried again once they have.
        let again = super::openraft_lease(&self.config) + super::LEASE_MARGIN;
        let wait = again.saturating_sub(view.vote_age.unwrap_or_default());
        let raft = self.raft.clone();
        self.counters.campaigns.fetch_add(1, Ordering::Relaxed);
        tracing::info!(from = req.leader, "election: taking over leadership");
        tokio::spawn(async move {
            if raft.trigger().elect().await.is_err() {
                return;
            }
            tokio::time::sleep(wait).await;
            let state = raft.metrics().borrow().state;
            if state == ServerState::Candidate {
                let _ = raft.trigger().elect().await;
            }
        });
        TimeoutNowResponse::Campaigning {
            in_ms: millis(wait),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn log(term: u64, index: u64) -> Option<LogId> {
        Some(LogId::new(CommittedLeaderId::new(term, 1), index))
    }

    /// Node 2 of {1, 2, 3}, following node 1, which it heard from `heard` ago.
    fn follower(heard: Duration) -> View {
        View {
            state: ServerState::Follower,
            term: 3,
            following: Some(1),
            voted_for: None,
            vote_age: Some(heard),
            last_log_id: log(3, 10),
            voter: true,
            membership_log_id: log(1, 1),
            configs: vec![BTreeSet::from([1, 2, 3])],
            voters: vec![],
            committed_voters: (BTreeSet::from([1, 2, 3]), log(1, 1)),
        }
    }

    fn ask(candidate: NodeId, last_log_id: Option<LogId>) -> PreVoteRequest {
        PreVoteRequest {
            candidate,
            term: 4,
            last_log_id,
            membership_log_id: log(1, 1),
        }
    }

    const MIN: Duration = Duration::from_millis(300);

    #[test]
    fn a_voter_that_hears_its_leader_refuses_and_one_that_lost_it_grants() {
        let fresh = follower(Duration::from_millis(120));
        assert_eq!(
            decide(&fresh, &ask(3, log(3, 10)), MIN),
            PreVoteResponse::LeaderAlive {
                leader: 1,
                heard_ms: 120
            }
        );
        let lost = follower(Duration::from_millis(301));
        assert_eq!(
            decide(&lost, &ask(3, log(3, 10)), MIN),
            PreVoteResponse::Granted
        );
        // A longer log, or a later term, is at least as up to date.
        assert_eq!(
            decide(&lost, &ask(3, log(4, 2)), MIN),
            PreVoteResponse::Granted
        );
    }

    #[test]
    fn a_voter_that_voted_in_the_term_refuses_a_second_campaign_for_it() {
        // Node 2 lost its leader and voted for node 1 in term 4 (or campaigns itself).
        for voted_for in [1, 2] {
            let mut v = follower(Duration::from_secs(5));
            v.following = None;
            v.voted_for = Some(voted_for);
            v.term = 4;
            v.vote_age = Some(Duration::from_millis(50));
            assert_eq!(
                decide(&v, &ask(3, log(3, 10)), MIN),
                PreVoteResponse::Campaigning {
                    candidate: voted_for,
                    term: 4
                }
            );
            // The candidate it voted for is answered on its log, and so is anyone once
            // that vote is older than the timeout, or for a later term.
            if voted_for == 1 {
                assert_eq!(
                    decide(&v, &ask(1, log(3, 10)), MIN),
                    PreVoteResponse::Granted
                );
            }
            let mut later = ask(3, log(3, 10));
            later.term = 5;
            assert_eq!(decide(&v, &later, MIN), PreVoteResponse::Granted);
            v.vote_age = Some(MIN);
            assert_eq!(
                decide(&v, &ask(3, log(3, 10)), MIN),
                PreVoteResponse::Granted
            );
        }
    }

    #[test]
    fn of_two_pre_votes_for_one_term_the_longer_log_then_the_higher_id_goes_on() {
        // Node 2, pre-voting with its log at 3-10, asked by node 3.
        assert!(outranks(&ask(3, log(3, 10)), log(3, 10), 2));
        assert!(!outranks(&ask(1, log(3, 10)), log(3, 10), 2));
        assert!(outranks(&ask(1, log(3, 11)), log(3, 10), 2));
        assert!(!outranks(&ask(3, log(3, 9)), log(3, 10), 2));
        assert!(outranks(&ask(1, log(4, 1)), log(3, 10), 2));
    }

    #[test]
    fn a_log_behind_the_voters_is_refused() {
        let lost = follower(Duration::from_secs(5));
        for behind in [log(3, 9), log(2, 50), None] {
            assert_eq!(
                decide(&lost, &ask(3, behind), MIN),
                PreVoteResponse::LogBehind {
                    last_log_id: log(3, 10)
                }
            );
        }
    }

    #[test]
    fn a_leader_refuses_even_without_its_quorum() {
        let mut leader = follower(Duration::from_secs(60));
        leader.state = ServerState::Leader;
        assert!(matches!(
            decide(&leader, &ask(3, log(3, 10)), MIN),
            PreVoteResponse::LeaderAlive { heard_ms: 0, .. }
        ));
    }

    #[test]
    fn a_candidate_left_out_of_a_newer_committed_membership_is_told_it_was_removed() {
        let mut v = follower(Duration::from_secs(5));
        v.committed_voters = (BTreeSet::from([1, 2]), log(3, 8));
        assert_eq!(
            decide(&v, &ask(3, log(3, 10)), MIN),
            PreVoteResponse::Removed {
                membership_log_id: log(3, 8)
            }
        );
        // One that already knows that membership (or a newer one) is answered on its log.
        let mut req = ask(3, log(3, 10));
        req.membership_log_id = log(3, 8);
        assert_eq!(decide(&v, &req, MIN), PreVoteResponse::Granted);
    }

    #[test]
    fn a_campaign_needs_a_majority_of_every_configuration() {
        let one = vec![BTreeSet::from([1, 2, 3])];
        assert!(!wins(&one, &BTreeSet::from([1])));
        assert!(wins(&one, &BTreeSet::from([1, 3])));
        let joint = vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([3, 4, 5])];
        assert!(!wins(&joint, &BTreeSet::from([1, 2])));
        assert!(wins(&joint, &BTreeSet::from([1, 3, 4])));
    }
}
