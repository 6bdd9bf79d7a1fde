//! A running node: the Raft instance, its state machine, and the routing every API call
//! shares (find the leader, write through it, wait for a revision, read index).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use revokd_core::{Applied, Command};
use revokd_proto::v1::raft_client::RaftClient;
use revokd_proto::v1::ReadIndexRequest;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::config::Config;
use crate::consensus::election::Elections;
use crate::consensus::proposer::Proposer;
use crate::error::{Error, Leader, Waited};
use crate::network::client::{Channels, Links, PeerDial};
use crate::replicas::ReplicaRegistry;
use crate::storage::StateMachineStore;
use crate::typ::{NodeId, Raft};
use crate::watch::{Snapshots, Watchers};
use revokd_proto::clock::Clock;

/// Where a request should run.
pub enum Route {
    /// This node is the leader: run it here.
    Local,
    /// Another node leads: forward to it.
    Forward(Leader),
}

/// How long a call whose leader just moved waits before routing again: long enough for an
/// election in progress to make headway (a few heartbeats of a loopback cluster), short
/// enough to add little to a write's latency when the new leader is already known.
pub const ELECTION_PAUSE: Duration = Duration::from_millis(20);

/// Log entries the proposer keeps on their way at once: one. openraft 0.9 flushes the leader's
/// log one append at a time inside its core, so more entries in flight do not overlap their
/// flushes; they only split the waiting writes into smaller entries. One writes about 1.4x as
/// fast at 16 clients as four (BENCHMARKS.md, finding 3).
const MAX_ENTRIES_IN_FLIGHT: usize = 1;

/// Shared handle to the node's parts.
#[derive(Clone)]
pub struct Node {
    /// This node's id.
    pub id: NodeId,
    /// The Raft instance.
    pub raft: Raft,
    /// The state machine.
    pub sm: StateMachineStore,
    /// The configuration.
    pub config: Arc<Config>,
    /// The validator replicas that report to this node.
    pub replicas: Arc<ReplicaRegistry>,
    /// Open `Watch` streams.
    pub watchers: Arc<Watchers>,
    /// `Snapshot` streams and the copy of the set they share.
    pub snapshots: Arc<Snapshots>,
    /// Channels to peers (to forward writes, to ask the leader for a read index).
    pub channels: Channels,
    /// The election driver: pre-vote, check-quorum, hand-off.
    pub elections: Arc<Elections>,
    /// The node's clock, which the times it proposes (purges, expiry checks, rules' default
    /// `not_before`) are read from: a stepped wall clock does not move it.
    pub clock: Arc<Clock>,
    /// What the Raft transport measures (round trips to peers) and holds (a leader's
    /// replication, while it has no quorum).
    pub links: Arc<Links>,
    proposer: Proposer,
    read_waiters: Arc<Mutex<ReadWaiters>>,
}

/// Linearizable reads waiting for a read index, and whether a round is under way.
#[derive(Default)]
struct ReadWaiters {
    waiting: Vec<tokio::sync::oneshot::Sender<Result<u64, Error>>>,
    running: bool,
}

/// How a simulation replaces the wall clock for the whole process (nodes read theirs through
/// [`Node::clock`]; the state machine never reads one).
pub use revokd_proto::clock::use_clock;

impl Node {
    /// Wraps the parts of a started node.
    pub fn new(
        raft: Raft,
        sm: StateMachineStore,
        config: Arc<Config>,
        dial: PeerDial,
        clock: Arc<Clock>,
        links: Arc<Links>,
    ) -> Self {
        let channels = Channels::new(config.peer_routes.clone(), dial);
        let elections = Elections::new(
            config.id,
            raft.clone(),
            config.clone(),
            channels.clone(),
            links.clone(),
        );
        Node {
            id: config.id,
            proposer: Proposer::start(raft.clone(), MAX_ENTRIES_IN_FLIGHT, config.batch_max_tokens),
            read_waiters: Arc::default(),
            elections: Arc::new(elections),
            clock,
            links,
            raft,
            sm,
            config,
            channels,
            replicas: Arc::default(),
            watchers: Arc::default(),
            snapshots: Arc::default(),
        }
    }

    /// A (cached, lazily connected) channel to node `id`, which advertises `addr`; dialled
    /// through the configured peer route when there is one.
    pub fn channel(&self, id: NodeId, addr: &str) -> Result<Channel, Error> {
        self.channels
            .get(id, addr)
            .map_err(|(addr, e)| Error::Forward {
                addr,
                message: e.to_string(),
            })
    }

    /// The leader as this node knows it now (as openraft does: a follower keeps its leader
    /// until it hears of a new term). For what a node can vouch for to clients, see
    /// [`Node::leader_in_contact`].
    pub fn leader(&self) -> Option<Leader> {
        let id = self.raft.metrics().borrow().current_leader?;
        self.leader_at(id)
    }

    /// The leader this node has heard from within the election timeout, or itself while it
    /// leads with a quorum (see [`Elections::leader_in_contact`]): what `Heartbeat` and
    /// `Status` report, so a replica that reaches only a node cut off from the leader goes
    /// stale.
    pub fn leader_in_contact(&self) -> Option<Leader> {
        let id = self.elections.leader_in_contact()?;
        self.leader_at(id)
    }

    fn leader_at(&self, id: NodeId) -> Option<Leader> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let addr = m.membership_config.membership().get_node(&id)?.addr.clone();
        Some(Leader { id, addr })
    }

    /// Waits (until `deadline`) for a leader to be known and says where to run a write. A
    /// leader that lost its quorum refuses at once ([`Error::QuorumLost`]), so the caller
    /// tries another node; one handing its leadership over waits for the next leader.
    pub async fn route(&self, deadline: Instant) -> Result<Route, Error> {
        let started = Instant::now();
        let mut rx = self.raft.metrics();
        loop {
            match self.leader() {
                Some(leader) if leader.id != self.id => return Ok(Route::Forward(leader)),
                Some(_) if self.elections.handing_off() => {}
                Some(_) => {
                    self.elections.check_quorum()?;
                    return Ok(Route::Local);
                }
                None => {}
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Error::Stopped("raft metrics closed")),
                Err(_) => return Err(Error::NoLeader(started.elapsed())),
            }
        }
    }

    /// Proposes `cmd` on this node, which believes it is the leader. [`Error::NotLeader`]
    /// means leadership moved and the caller should route again.
    pub async fn propose(&self, cmd: Command, deadline: Instant) -> Result<Applied, Error> {
        tokio::time::timeout_at(deadline, self.proposer.propose(cmd))
            .await
            .map_err(|_| Error::Deadline(Waited::Commit))?
    }

    /// Waits until this node has applied `revision`.
    pub async fn wait_applied(&self, revision: u64, deadline: Instant) -> Result<(), Error> {
        let mut rx = self.sm.applied();
        let res =
            tokio::time::timeout_at(deadline, rx.wait_for(|applied| *applied >= revision)).await;
        match res {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::Stopped("state machine closed")),
            Err(_) => Err(Error::Deadline(Waited::Applied {
                revision,
                node: self.id,
                applied: *self.sm.applied().borrow(),
            })),
        }
    }

    /// A read index: once this node has applied the returned revision, its state reflects
    /// every write acknowledged before this call. Asks the leader when this node is not it.
    ///
    /// Concurrent callers share rounds: a round that starts after a caller arrived gives an
    /// index valid for it, so every caller waiting when a round starts is answered by that
    /// round, and one leadership confirmation serves many reads.
    pub async fn read_index(&self, deadline: Instant) -> Result<u64, Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start = {
            let mut w = self.read_waiters.lock().unwrap_or_else(|p| p.into_inner());
            w.waiting.push(tx);
            !std::mem::replace(&mut w.running, true)
        };
        if start {
            let node = self.clone();
            tokio::spawn(async move {
                loop {
                    let waiting = {
                        let mut w = node.read_waiters.lock().unwrap_or_else(|p| p.into_inner());
                        if w.waiting.is_empty() {
                            w.running = false;
                            return;
                        }
                        std::mem::take(&mut w.waiting)
                    };
                    let round_deadline = Instant::now() + node.config.default_deadline;
                    let res = node.read_index_round(round_deadline).await;
                    for tx in waiting {
                        let _ = tx.send(res.clone());
                    }
                }
            });
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(res)) => res,
            Ok(Err(_)) => Err(Error::Stopped("read index round dropped")),
            Err(_) => Err(Error::Deadline(Waited::ReadIndex)),
        }
    }

    /// One read-index round: a leadership confirmation by a quorum.
    async fn read_index_round(&self, deadline: Instant) -> Result<u64, Error> {
        loop {
            match self.route(deadline).await? {
                Route::Local => match self.elections.leader_read_index().await {
                    Ok(read) => return Ok(read),
                    Err(e) => match e {
                        e @ Error::Fatal(_) => return Err(e),
                        e if Instant::now() >= deadline => return Err(e),
                        // Leadership is moving or a quorum is briefly out of reach: retry.
                        _ => {}
                    },
                },
                Route::Forward(Leader { id, addr }) => {
                    let mut client = RaftClient::new(self.channel(id, &addr)?);
                    let mut req = tonic::Request::new(ReadIndexRequest {});
                    req.set_timeout(deadline.saturating_duration_since(Instant::now()));
                    match client.read_index(req).await {
                        Ok(r) => return Ok(r.into_inner().read_revision),
                        Err(s)
                            if s.code() == tonic::Code::Unavailable
                                && Instant::now() < deadline => {}
                        Err(s) => {
                            return Err(Error::Forward {
                                addr,
                                message: s.message().to_owned(),
                            })
                        }
                    }
                }
            }
            tokio::time::sleep(ELECTION_PAUSE).await;
        }
    }
}
