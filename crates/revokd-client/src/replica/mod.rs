//! The local replica: a full copy of the revocation set in this process, bootstrapped from
//! `Snapshot` and kept current by `Watch`, answering checks from memory.
//!
//! - [`table`]: the memory layout (lock-free reads, 32 bytes per token id).
//! - `follow`: the background task that bootstraps, watches, resumes on another node, reports
//!   progress and decides staleness.
//!
//! The handle ([`Replica`]) is cheap to clone; the task stops when the last clone is dropped.

mod follow;
pub mod table;

use revokd_proto::wire::MAX_REPLICA_ID_LEN;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::check::{RevocationCheck, TokenQuery, Verdict};
use crate::connection::{Client, NodeConn, Reporter};
use crate::error::Error;
use crate::metrics::ReplicaMetrics;
pub use table::{LocalEntry, LocalRule, REASON_NOT_KEPT};
use table::{Store, Writer};

/// What checks answer while the replica is past its staleness bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StalenessPolicy {
    /// Every check says rejected ([`Verdict::Stale`]; `is_revoked` is true). The default: a
    /// replica that cannot show it is current does not vouch for any token.
    FailClosed,
    /// Answer from the cache and flag the answer as stale.
    FailOpen,
}

/// How a replica follows the cluster. Every field documents its default.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// Names this replica in the nodes' `Status` and metrics. Default: `<host>-<pid>-<random>`.
    pub replica_id: String,
    /// Free text shown to operators next to the id (up to 256 bytes). Default: empty.
    pub description: String,
    /// How long the replica may go without being known up to date before `policy` applies.
    /// Default 5 s. Keep it above the client's heartbeat interval (freshness is learned from
    /// heartbeats).
    pub max_staleness: Duration,
    /// What checks answer past `max_staleness`. Default [`StalenessPolicy::FailClosed`].
    pub policy: StalenessPolicy,
    /// Token ids per snapshot chunk when bootstrapping. Default 10,000.
    pub snapshot_chunk: u32,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "replica".into());
        ReplicaConfig {
            replica_id: format!("{host}-{}-{:04x}", std::process::id(), fastrand::u16(..)),
            description: String::new(),
            max_staleness: Duration::from_secs(5),
            policy: StalenessPolicy::FailClosed,
            snapshot_chunk: 10_000,
        }
    }
}

/// The state the handle and the task share.
pub(crate) struct State {
    store: Arc<Store>,
    config: ReplicaConfig,
    applied: Arc<AtomicU64>,
    applied_tx: watch::Sender<u64>,
    ready: watch::Sender<bool>,
    stale: AtomicBool,
    policy: AtomicU8,
    max_staleness_ms: AtomicU64,
    base: Instant,
    /// Milliseconds after `base` when the replica was last known up to date; `u64::MAX`: never.
    fresh_at_ms: AtomicU64,
    commit_seen: AtomicU64,
    /// Unix seconds, refreshed by the follow task every tick (50 ms): checks compare expiries
    /// with it instead of reading the system clock. When it lags, expired entries count a
    /// little longer: the safe direction.
    clock: AtomicI64,
    watching: Mutex<Option<Arc<NodeConn>>>,
    metrics: ReplicaMetrics,
}

pub(crate) use crate::clock::unix_now;

impl State {
    fn policy(&self) -> StalenessPolicy {
        if self.policy.load(Ordering::Relaxed) == 0 {
            StalenessPolicy::FailClosed
        } else {
            StalenessPolicy::FailOpen
        }
    }

    fn staleness(&self) -> Duration {
        let at = self.fresh_at_ms.load(Ordering::Acquire);
        let now = self.base.elapsed();
        if at == u64::MAX {
            return now;
        }
        now.saturating_sub(Duration::from_millis(at))
    }
}

/// Stops the task when the last handle is dropped.
struct StopGuard(watch::Sender<bool>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// A local copy of the revocation set. Checks read memory only: no lock, no allocation, no
/// network.
///
/// ```no_run
/// # async fn demo() -> Result<(), revokd_client::Error> {
/// use std::time::Duration;
/// use revokd_client::{Client, ClientConfig, Replica, ReplicaConfig};
/// let client = Client::connect(ClientConfig::new(["127.0.0.1:50051"])).await?;
/// let replica = Replica::connect(client, ReplicaConfig::default(), Duration::from_secs(10)).await?;
/// if replica.is_revoked("token-id") {
///     // reject the request
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Replica {
    state: Arc<State>,
    client: Client,
    _stop: Arc<StopGuard>,
}

impl Replica {
    /// Starts following the cluster in the background. Until the first snapshot is loaded the
    /// replica is stale (see [`Replica::wait_ready`]).
    pub fn start(client: Client, config: ReplicaConfig) -> Result<Replica, Error> {
        if config.max_staleness.is_zero() {
            return Err(Error::Config("max_staleness must be greater than 0".into()));
        }
        if config.replica_id.is_empty() || config.replica_id.len() > MAX_REPLICA_ID_LEN {
            return Err(Error::Config(format!(
                "replica_id must be 1-{MAX_REPLICA_ID_LEN} bytes"
            )));
        }
        let store = Arc::new(Store::new());
        let applied = Arc::new(AtomicU64::new(0));
        client.attach(Arc::new(Reporter {
            replica_id: config.replica_id.clone(),
            description: config.description.clone(),
            applied: applied.clone(),
        }))?;
        let state = Arc::new(State {
            store: store.clone(),
            applied,
            applied_tx: watch::channel(0).0,
            ready: watch::channel(false).0,
            stale: AtomicBool::new(true),
            policy: AtomicU8::new(u8::from(config.policy == StalenessPolicy::FailOpen)),
            max_staleness_ms: AtomicU64::new(config.max_staleness.as_millis() as u64),
            base: Instant::now(),
            fresh_at_ms: AtomicU64::new(u64::MAX),
            commit_seen: AtomicU64::new(0),
            clock: AtomicI64::new(unix_now()),
            watching: Mutex::new(None),
            metrics: ReplicaMetrics::new(),
            config,
        });
        state.metrics.stale.set(1);
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(follow::run(
            state.clone(),
            Writer::new(store),
            client.clone(),
            stop_rx.clone(),
        ));
        tokio::spawn(follow::report_progress(
            state.clone(),
            client.clone(),
            stop_rx,
        ));
        Ok(Replica {
            state,
            client,
            _stop: Arc::new(StopGuard(stop_tx)),
        })
    }

    /// Starts the replica and waits up to `ready_within` for its first snapshot.
    pub async fn connect(
        client: Client,
        config: ReplicaConfig,
        ready_within: Duration,
    ) -> Result<Replica, Error> {
        let r = Replica::start(client, config)?;
        r.wait_ready(ready_within).await?;
        // Register with every node now rather than at the next heartbeat, so receipts and
        // operators see this replica from the start.
        r.client.probe_now().await;
        Ok(r)
    }

    /// Waits until the first snapshot is loaded.
    pub async fn wait_ready(&self, within: Duration) -> Result<(), Error> {
        let mut rx = self.state.ready.subscribe();
        let ready = matches!(
            tokio::time::timeout(within, rx.wait_for(|r| *r)).await,
            Ok(Ok(_))
        );
        if ready {
            Ok(())
        } else {
            Err(Error::NotReady(within))
        }
    }

    /// Waits until the replica has applied `revision` (for example a write's
    /// `committed_revision`). Returns whether it did within `within`.
    pub async fn wait_for_revision(&self, revision: u64, within: Duration) -> bool {
        let mut rx = self.state.applied_tx.subscribe();
        let reached = matches!(
            tokio::time::timeout(within, rx.wait_for(|r| *r >= revision)).await,
            Ok(Ok(_))
        );
        reached
    }

    /// Whether the replica has bootstrapped (loaded a snapshot) and answers checks.
    pub fn is_ready(&self) -> bool {
        *self.state.ready.borrow()
    }

    /// A receiver of the applied revision, which changes after each applied change.
    pub fn revisions(&self) -> watch::Receiver<u64> {
        self.state.applied_tx.subscribe()
    }

    /// The client the replica follows the cluster through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// This replica's id, as nodes list it.
    pub fn id(&self) -> &str {
        &self.state.config.replica_id
    }

    /// Is this token id revoked? Reads local memory only. Past the staleness bound under
    /// [`StalenessPolicy::FailClosed`] the answer is `true` for every id.
    #[inline]
    pub fn is_revoked(&self, jti: &str) -> bool {
        if self.state.stale.load(Ordering::Relaxed) && self.policy() == StalenessPolicy::FailClosed
        {
            return true;
        }
        self.state
            .store
            .is_revoked(jti, || self.state.clock.load(Ordering::Relaxed))
    }

    /// Checks a token's id and claims against the local set and the staleness policy.
    pub fn check(&self, token: &TokenQuery<'_>) -> Verdict {
        let stale = if self.state.stale.load(Ordering::Relaxed) {
            let staleness = self.state.staleness();
            if self.policy() == StalenessPolicy::FailClosed {
                return Verdict::Stale { staleness };
            }
            Some(staleness)
        } else {
            None
        };
        match self
            .state
            .store
            .check(token, || self.state.clock.load(Ordering::Relaxed))
        {
            Some(r) => Verdict::Revoked(r),
            None => Verdict::Allowed { stale },
        }
    }

    /// The entry for `jti` as held locally (including one past its expiry not yet purged).
    pub fn get(&self, jti: &str) -> Option<LocalEntry> {
        self.state.store.get(jti)
    }

    /// Every rule held locally, by kind then value.
    pub fn rules(&self) -> Vec<LocalRule> {
        self.state.store.rules()
    }

    /// Revoked token ids held.
    pub fn len(&self) -> usize {
        self.state.store.len()
    }

    /// Whether no token id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rules held.
    pub fn rule_count(&self) -> usize {
        self.state.store.rule_count()
    }

    /// The revision applied: the replica reflects every change up to it.
    pub fn revision(&self) -> u64 {
        self.state.applied.load(Ordering::Acquire)
    }

    /// How far behind the highest commit revision heard from any node.
    pub fn lag(&self) -> u64 {
        self.state
            .commit_seen
            .load(Ordering::Acquire)
            .saturating_sub(self.revision())
    }

    /// Time since the replica was last known to be up to date (since it started, if never).
    pub fn staleness(&self) -> Duration {
        self.state.staleness()
    }

    /// Whether the replica is past its staleness bound (the policy is in effect).
    pub fn is_stale(&self) -> bool {
        self.state.stale.load(Ordering::Relaxed)
    }

    /// The staleness policy in effect.
    pub fn policy(&self) -> StalenessPolicy {
        self.state.policy()
    }

    /// Changes the policy and its bound (logged).
    pub fn set_policy(&self, policy: StalenessPolicy, max_staleness: Duration) {
        self.state.policy.store(
            u8::from(policy == StalenessPolicy::FailOpen),
            Ordering::Relaxed,
        );
        self.state
            .max_staleness_ms
            .store(max_staleness.as_millis().max(1) as u64, Ordering::Relaxed);
        tracing::info!(replica = %self.id(), ?policy, ?max_staleness, "revokd-client: staleness policy changed");
    }

    /// The node the replica is watching, if any.
    pub fn watching(&self) -> Option<String> {
        self.state
            .watching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|n| n.addr.clone())
    }

    /// Bytes held for token ids (entries and shard headers; rules and reasons not counted).
    pub fn token_memory_bytes(&self) -> usize {
        self.state.store.token_bytes()
    }

    /// The replica's metrics, to register in a Prometheus registry.
    pub fn metrics(&self) -> &ReplicaMetrics {
        &self.state.metrics
    }
}

impl RevocationCheck for Replica {
    fn check(&self, token: &TokenQuery<'_>) -> Verdict {
        Replica::check(self, token)
    }
}
