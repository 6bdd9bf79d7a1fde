//! A running node: the Raft instance, its state machine, and the routing every API call
//! shares (find the leader, write through it, wait for a revision, read index).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use revokd_core::{Applied, Command};
use revokd_proto::v1::raft_client::RaftClient;
use revokd_proto::v1::ReadIndexRequest;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::api::error::ApiError;
use crate::config::Config;
use crate::consensus::proposer::{ProposeError, Proposer};
use crate::consensus::typ::{NodeId, Raft};
use crate::network::client::{channel, PeerDial};
use crate::replicas::ReplicaRegistry;
use crate::storage::StateMachineStore;

/// Where a request should run.
pub enum Route {
    /// This node is the leader: run it here.
    Local,
    /// Forward to the leader at this address.
    Forward {
        /// The leader's id.
        id: NodeId,
        /// The leader's address.
        addr: String,
    },
}

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
    pub snapshots: Arc<crate::api::snapshots::Snapshots>,
    /// How to dial peers (to forward writes, to ask the leader for a read index).
    pub dial: PeerDial,
    proposer: Proposer,
    read_waiters: Arc<Mutex<ReadWaiters>>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

/// Counts open `Watch` streams and those dropped for not reading.
#[derive(Debug, Default)]
pub struct Watchers {
    open: std::sync::atomic::AtomicUsize,
    dropped: std::sync::atomic::AtomicU64,
}

/// Held by a `Watch` stream's task: counts it as open until dropped.
pub struct WatcherGuard(Arc<Watchers>);

impl Watchers {
    /// Counts a new stream until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> WatcherGuard {
        self.open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        WatcherGuard(self.clone())
    }

    /// Open streams.
    pub fn open(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Streams dropped because their watcher stopped reading.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records a stream dropped for not reading.
    pub fn record_dropped(&self) {
        self.dropped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Linearizable reads waiting for a read index, and whether a round is under way.
#[derive(Default)]
struct ReadWaiters {
    waiting: Vec<tokio::sync::oneshot::Sender<Result<u64, ApiError>>>,
    running: bool,
}

/// The current unix time in seconds (the proposer's clock; the state machine never reads one),
/// and how a simulation replaces it for the whole process.
pub use revokd_proto::clock::{unix_now, use_clock};

impl Node {
    /// Wraps the parts of a started node.
    pub fn new(raft: Raft, sm: StateMachineStore, config: Arc<Config>, dial: PeerDial) -> Self {
        Node {
            id: config.id,
            proposer: Proposer::start(raft.clone(), 4, config.batch_max_tokens),
            read_waiters: Arc::default(),
            raft,
            sm,
            config,
            channels: Arc::default(),
            replicas: Arc::default(),
            watchers: Arc::default(),
            snapshots: Arc::default(),
            dial,
        }
    }

    /// A (cached, lazily connected) channel to node `id`, which advertises `addr`; dialled
    /// through the configured peer route when there is one.
    pub fn channel(&self, id: NodeId, addr: &str) -> Result<Channel, ApiError> {
        let addr = self
            .config
            .peer_routes
            .get(&id)
            .map(String::as_str)
            .unwrap_or(addr);
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = map.get(addr) {
            return Ok(ch.clone());
        }
        let ch = channel(addr, Duration::from_millis(500), &self.dial).map_err(|e| {
            ApiError::Forward {
                addr: addr.to_owned(),
                message: e.to_string(),
            }
        })?;
        map.insert(addr.to_owned(), ch.clone());
        Ok(ch)
    }

    /// The leader as this node knows it now.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&id)?.addr.clone();
        Some((id, addr))
    }

    /// Waits (until `deadline`) for a leader to be known and says where to run a write.
    pub async fn route(&self, deadline: Instant) -> Result<Route, ApiError> {
        let started = Instant::now();
        let mut rx = self.raft.metrics();
        loop {
            if let Some((id, addr)) = self.leader() {
                return Ok(if id == self.id {
                    Route::Local
                } else {
                    Route::Forward { id, addr }
                });
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ApiError::Stopped("raft metrics closed".into())),
                Err(_) => return Err(ApiError::NoLeader(started.elapsed())),
            }
        }
    }

    /// Proposes `cmd` on this node, which believes it is the leader. `Ok(None)` means
    /// leadership moved and the caller should route again.
    pub async fn propose(
        &self,
        cmd: Command,
        deadline: Instant,
    ) -> Result<Option<Applied>, ApiError> {
        match tokio::time::timeout_at(deadline, self.proposer.propose(cmd)).await {
            Err(_) => Err(ApiError::Deadline(
                "the write was proposed but not committed in time; it may still be applied".into(),
            )),
            Ok(Ok(applied)) => Ok(Some(applied)),
            Ok(Err(ProposeError::NotLeader)) => Ok(None),
            Ok(Err(ProposeError::Failed(e))) => Err(e),
        }
    }

    /// Waits until this node has applied `revision`.
    pub async fn wait_applied(&self, revision: u64, deadline: Instant) -> Result<(), ApiError> {
        let mut rx = self.sm.applied();
        let res =
            tokio::time::timeout_at(deadline, rx.wait_for(|applied| *applied >= revision)).await;
        match res {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ApiError::Stopped("state machine closed".into())),
            Err(_) => Err(ApiError::Deadline(format!(
                "revision {revision} not applied on node {} in time (applied {})",
                self.id,
                *self.sm.applied().borrow()
            ))),
        }
    }

    /// A read index: once this node has applied the returned revision, its state reflects
    /// every write acknowledged before this call. Asks the leader when this node is not it.
    ///
    /// Concurrent callers share rounds: a round that starts after a caller arrived gives an
    /// index valid for it, so every caller waiting when a round starts is answered by that
    /// round, and one leadership confirmation serves many reads.
    pub async fn read_index(&self, deadline: Instant) -> Result<u64, ApiError> {
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
            Ok(Err(_)) => Err(ApiError::Stopped("read index round dropped".into())),
            Err(_) => Err(ApiError::Deadline(
                "no read index from the leader in time".into(),
            )),
        }
    }

    /// One read-index round: a leadership confirmation by a quorum.
    async fn read_index_round(&self, deadline: Instant) -> Result<u64, ApiError> {
        loop {
            match self.route(deadline).await? {
                Route::Local => match self.raft.get_read_log_id().await {
                    Ok((read, _)) => return Ok(read.map(|l| l.index).unwrap_or(0)),
                    Err(e) => match crate::api::error::read_index_error(e) {
                        e @ ApiError::Stopped(_) => return Err(e),
                        e if Instant::now() >= deadline => return Err(e),
                        // Leadership is moving or a quorum is briefly out of reach: retry.
                        _ => {}
                    },
                },
                Route::Forward { id, addr } => {
                    let mut client = RaftClient::new(self.channel(id, &addr)?);
                    let mut req = tonic::Request::new(ReadIndexRequest {});
                    req.set_timeout(deadline.saturating_duration_since(Instant::now()));
                    match client.read_index(req).await {
                        Ok(r) => return Ok(r.into_inner().read_revision),
                        Err(s)
                            if s.code() == tonic::Code::Unavailable
                                && Instant::now() < deadline => {}
                        Err(s) => {
                            return Err(ApiError::Forward {
                                addr,
                                message: s.message().to_owned(),
                            })
                        }
                    }
                }
            }
            // Leadership is moving; give the election a moment.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
