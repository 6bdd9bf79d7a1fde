//! The sending side of the Raft transport: one lazily connected gRPC channel per peer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::EntryPayload;
use revokd_proto::dial::Dialer;
use revokd_proto::v1::raft_client::RaftClient;
use revokd_proto::v1::RaftPayload;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::codec::{decode_raw, encode};
use crate::typ::TypeConfig;
use crate::typ::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    Node, NodeId, Vote, VoteRequest, VoteResponse,
};

/// Largest Raft message accepted (snapshot chunks are 4 MiB).
pub const MAX_RAFT_MESSAGE: usize = 64 * 1024 * 1024;
/// AppendEntries messages above this size are split (when they carry more than one entry):
/// openraft gives each one a heartbeat interval to be sent, stored and flushed.
pub const APPEND_BUDGET: usize = 1024 * 1024;

/// How a node dials its peers: TLS (with the node's certificate) or not, over TCP or the
/// transport the embedder supplied.
#[derive(Clone, Debug, Default)]
pub struct PeerDial {
    /// TLS settings; `None` for plaintext.
    pub tls: Option<ClientTlsConfig>,
    /// The transport.
    pub dialer: Dialer,
}

/// Creates a [`PeerClient`] per target node.
#[derive(Clone, Default)]
pub struct NetworkFactory {
    routes: Arc<BTreeMap<NodeId, String>>,
    dial: PeerDial,
    links: Arc<Links>,
}

impl NetworkFactory {
    /// A factory that dials `routes[id]` instead of node `id`'s advertised address, as `dial`
    /// says, and shares `links` with the rest of the node.
    pub fn new(routes: BTreeMap<NodeId, String>, dial: PeerDial, links: Arc<Links>) -> Self {
        NetworkFactory {
            routes: Arc::new(routes),
            dial,
            links,
        }
    }
}

/// What the Raft transport shares with the rest of the node:
///
/// - the round trip to each peer, measured on the AppendEntries that carry no entries
///   (heartbeats and probes: the network and the peer's answer, no flush of entries) and
///   smoothed as TCP smooths its estimate (each sample moves it an eighth of the way); what
///   `--max-peer-rtt-ms` should be set from;
/// - whether replication is held back: a leader that lost its quorum sends no AppendEntries
///   or snapshots while the election driver holds them (`consensus::election`), so that
///   followers it still reaches stop vouching for it;
/// - for each peer, when this node *sent* the latest AppendEntries that the peer answered
///   without a higher vote, and under which vote: a leader's lease reads are dated from these
///   (`consensus::election::Elections::leader_read_index`). The time is taken before the
///   message leaves, so a pause of this process only makes it older.
#[derive(Debug, Default)]
pub struct Links {
    rtts: Mutex<BTreeMap<NodeId, Duration>>,
    held: AtomicBool,
    acks: Mutex<BTreeMap<NodeId, (Vote, tokio::time::Instant)>>,
}

impl Links {
    fn record(&self, peer: NodeId, sample: Duration) {
        let mut map = self.rtts.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(peer)
            .and_modify(|s| *s = (*s * 7 + sample) / 8)
            .or_insert(sample);
    }

    /// The smoothed round trip to every peer measured so far.
    pub fn rtts(&self) -> BTreeMap<NodeId, Duration> {
        self.rtts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records that `peer` accepted an AppendEntries sent at `sent` under `vote`. A late answer
    /// under an older vote replaces a newer one: that only drops the lease until the next
    /// heartbeat, never lengthens it.
    fn record_ack(&self, peer: NodeId, vote: Vote, sent: tokio::time::Instant) {
        let mut map = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        let newer = map
            .get(&peer)
            .is_none_or(|(v, at)| *v != vote || *at < sent);
        if newer {
            map.insert(peer, (vote, sent));
        }
    }

    /// The latest moment at which a majority of every configuration in `configs` had
    /// accepted `vote`'s leadership: for each voter, when this node (`me`, counted as `now`)
    /// sent the latest AppendEntries it accepted under that vote. `None` when some
    /// configuration has no such majority.
    pub fn quorum_acked_at(
        &self,
        vote: &Vote,
        configs: &[BTreeSet<NodeId>],
        me: NodeId,
        now: tokio::time::Instant,
    ) -> Option<tokio::time::Instant> {
        let acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        let mut oldest: Option<tokio::time::Instant> = None;
        for config in configs {
            let mut times: Vec<tokio::time::Instant> = config
                .iter()
                .filter_map(|id| match *id == me {
                    true => Some(now),
                    false => acks.get(id).filter(|(v, _)| v == vote).map(|(_, at)| *at),
                })
                .collect();
            let need = config.len() / 2 + 1;
            if times.len() < need {
                return None;
            }
            times.sort_unstable_by(|a, b| b.cmp(a));
            let at = times[need - 1];
            oldest = Some(oldest.map_or(at, |o| o.min(at)));
        }
        oldest
    }

    /// Holds replication back (`true`) or lets it go.
    pub fn hold(&self, held: bool) {
        self.held.store(held, Ordering::Relaxed);
    }

    /// Whether replication is held back.
    pub fn held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }

    /// The error a held AppendEntries or snapshot gets: openraft treats the peer as
    /// unreachable and backs off.
    fn held_error<E: std::error::Error>() -> RPCError<NodeId, Node, E> {
        let e = std::io::Error::other("replication held: this leader lost its quorum");
        RPCError::Unreachable(Unreachable::new(&e))
    }
}

/// How long dialling a peer (Raft traffic, a forwarded write, a read index) may take: a few
/// round trips between regions; a peer slower than that is treated as down until the next
/// attempt.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// HTTP/2 pings on an idle peer channel, and how long an unanswered one may take: a peer
/// that vanished without closing the connection (a partition, a paused host) is noticed
/// within about ten seconds, well inside the time a client would wait for a forwarded call.
const PEER_KEEPALIVE: Duration = Duration::from_secs(5);

/// Builds a lazily connecting channel to `addr` (`host:port`), dialed as `dial` says.
pub fn channel(
    addr: &str,
    connect_timeout: Duration,
    dial: &PeerDial,
) -> Result<Channel, tonic::transport::Error> {
    let ep = match &dial.tls {
        None => Endpoint::from_shared(format!("http://{addr}"))?,
        Some(t) => Endpoint::from_shared(format!("https://{addr}"))?.tls_config(t.clone())?,
    };
    Ok(dial.dialer.connect_lazy(
        ep.connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(PEER_KEEPALIVE)
            .keep_alive_timeout(PEER_KEEPALIVE),
    ))
}

/// Cached, lazily connected channels to peers for revokd's own calls (forwarded writes, read
/// indexes, pre-votes, hand-offs), dialled through the configured peer route when there is
/// one. Clones share the cache.
#[derive(Clone)]
pub struct Channels {
    routes: Arc<BTreeMap<NodeId, String>>,
    dial: PeerDial,
    cache: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Channels {
    /// Channels that dial `routes[id]` instead of node `id`'s advertised address, as `dial`
    /// says.
    pub fn new(routes: BTreeMap<NodeId, String>, dial: PeerDial) -> Self {
        Channels {
            routes: Arc::new(routes),
            dial,
            cache: Arc::default(),
        }
    }

    /// The channel to node `id`, which advertises `addr`; the error names the address
    /// dialled.
    pub fn get(
        &self,
        id: NodeId,
        addr: &str,
    ) -> Result<Channel, (String, tonic::transport::Error)> {
        let addr = self.routes.get(&id).map(String::as_str).unwrap_or(addr);
        let mut map = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = map.get(addr) {
            return Ok(ch.clone());
        }
        let ch =
            channel(addr, PEER_CONNECT_TIMEOUT, &self.dial).map_err(|e| (addr.to_owned(), e))?;
        map.insert(addr.to_owned(), ch.clone());
        Ok(ch)
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerClient {
        // A fresh channel per client (openraft asks for one per replication stream, vote round
        // and read-index round). One cached channel per peer made read-index rounds cheaper,
        // but in the simulation elections after faults took more rounds with it (BENCHMARKS.md,
        // finding 1), so it is not done.
        let addr = self.routes.get(&target).unwrap_or(&node.addr);
        let client = channel(addr, PEER_CONNECT_TIMEOUT, &self.dial).map(|ch| {
            RaftClient::new(ch)
                .max_decoding_message_size(MAX_RAFT_MESSAGE)
                .max_encoding_message_size(MAX_RAFT_MESSAGE)
        });
        if let Err(e) = &client {
            tracing::error!(target, %addr, error = %e, "network: bad peer address");
        }
        PeerClient {
            target,
            addr: addr.clone(),
            client: client.ok(),
            links: self.links.clone(),
        }
    }
}

/// Sends Raft RPCs to one peer.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    client: Option<RaftClient<Channel>>,
    links: Arc<Links>,
}

/// Which Raft RPC to send.
#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, Node, RaftError<NodeId, E>>>;

impl PeerClient {
    async fn call<Req, Resp, E>(
        &mut self,
        kind: Rpc,
        rpc: &Req,
        entries_hint: Option<(u64, usize)>,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: serde::Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(client) = self.client.as_mut() else {
            let e = std::io::Error::other(format!("bad address {:?}", self.addr));
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        };
        if let Some((entries, bytes)) = entries_hint.filter(|(n, _)| *n > 1) {
            if bytes > APPEND_BUDGET {
                // Checked on an estimate, before encoding: encoding a huge message alone can
                // outlast openraft's per-message timeout. openraft retries at once with fewer
                // entries per message.
                let fit = (entries as usize * APPEND_BUDGET / bytes).max(1);
                return Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(fit as u64),
                ));
            }
        }
        let payload = encode(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut req = tonic::Request::new(payload);
        req.set_timeout(option.hard_ttl());
        let resp = match kind {
            Rpc::AppendEntries => client.append_entries(req).await,
            Rpc::Vote => client.vote(req).await,
            Rpc::InstallSnapshot => client.install_snapshot(req).await,
        };
        let payload: RaftPayload = match resp {
            Ok(r) => r.into_inner(),
            Err(status) => {
                return Err(match status.code() {
                    tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Cancelled => RPCError::Unreachable(Unreachable::new(&status)),
                    _ => RPCError::Network(NetworkError::new(&status)),
                })
            }
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            decode_raw(&payload.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse> {
        let bytes = rpc
            .entries
            .iter()
            .map(|e| match &e.payload {
                EntryPayload::Normal(cmd) => cmd.approx_size(),
                _ => 256,
            })
            .sum();
        let n = rpc.entries.len() as u64;
        if self.links.held() {
            return Err(Links::held_error());
        }
        let sent = tokio::time::Instant::now();
        let vote = rpc.vote;
        let res = self
            .call(Rpc::AppendEntries, &rpc, Some((n, bytes)), &option)
            .await;
        if n == 0 && res.is_ok() {
            self.links.record(self.target, sent.elapsed());
        }
        if let Ok(answer) = &res {
            if !matches!(answer, AppendEntriesResponse::HigherVote(_)) {
                self.links.record_ack(self.target, vote, sent);
            }
        }
        res
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse, InstallSnapshotError> {
        if self.links.held() {
            return Err(Links::held_error());
        }
        self.call(Rpc::InstallSnapshot, &rpc, None, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest, option: RPCOption) -> RpcResult<VoteResponse> {
        self.call(Rpc::Vote, &rpc, None, &option).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(term: u64, node: NodeId) -> Vote {
        let mut v = Vote::new(term, node);
        v.commit();
        v
    }

    #[test]
    fn a_lease_dates_from_the_oldest_send_a_majority_of_every_configuration_accepted() {
        let links = Links::default();
        let t0 = tokio::time::Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let v = vote(2, 1);
        let three = vec![BTreeSet::from([1, 2, 3])];
        assert_eq!(links.quorum_acked_at(&v, &three, 1, at(100)), None);
        links.record_ack(2, v, at(10));
        links.record_ack(3, v, at(30));
        // Itself now, then the younger of the others.
        assert_eq!(links.quorum_acked_at(&v, &three, 1, at(100)), Some(at(30)));
        // An older send never moves it back.
        links.record_ack(3, v, at(20));
        assert_eq!(links.quorum_acked_at(&v, &three, 1, at(100)), Some(at(30)));
        // Acknowledgements under another vote do not count.
        assert_eq!(links.quorum_acked_at(&vote(3, 1), &three, 1, at(100)), None);
        // Joint membership: a majority of each configuration, the older of the two.
        let joint = vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([3, 4, 5])];
        assert_eq!(links.quorum_acked_at(&v, &joint, 1, at(100)), None);
        links.record_ack(4, v, at(5));
        assert_eq!(links.quorum_acked_at(&v, &joint, 1, at(100)), Some(at(5)));
    }
}
