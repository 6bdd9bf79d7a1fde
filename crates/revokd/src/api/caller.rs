//! Who is calling: the first check in front of the gRPC router records, for the checks after
//! it (`auth`, `limits`), the caller's address and what its client certificate proves, as a
//! [`Caller`] in the request's extensions.
//!
//! Only callers that present a certificate pay for a certificate check (peers and admins
//! with client certificates), and [`CaCheck`] remembers the certificates it checked.
//!
//! It is also where the Raft service is closed to everyone but peers: with TLS on, a call to
//! `/revokd.v1.Raft/*` from a caller without a cluster certificate is refused here, on the
//! connection's identity alone, before its body is read (tonic would otherwise decode a
//! message of up to [`MAX_RAFT_MESSAGE`](crate::network::client::MAX_RAFT_MESSAGE) first),
//! and a connection may carry at most [`MAX_RAFT_CALLS_PER_CONNECTION`] large Raft calls at
//! once. Without TLS peers cannot be told from strangers: the node then listens on loopback
//! only, or was started with `--insecure` (`config::Config::check_transport_security`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use super::gate::Gate;
use super::FORWARDED_HEADER;
use crate::network::handshake::ConnInfo;
use crate::network::incoming::Probation;
use crate::network::tls::{peer_certs, AdminCerts, CaCheck};
use crate::replicas::Reporter;

/// What the node knows of a call's origin.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    /// The client's IP address.
    pub addr: Option<IpAddr>,
    /// The caller presented a certificate of the cluster CA: another node.
    pub peer: bool,
    /// The call is a write another node forwarded after admitting it: the forwarding header
    /// is set and, with TLS on, the caller is a peer (without TLS, peers cannot be told from
    /// clients and the header is trusted as sent).
    pub forwarded: bool,
    /// The name of the caller's certificate, when the admin CA issued it (whether that name
    /// is allowed is the authorizer's call).
    pub admin_cert: Option<String>,
}

/// The authenticated identity of a call (`sub:<subject>` for a bearer token, `cert:<name>`
/// for an admin certificate), put in the extensions by the authorizer; the rate limits key
/// their budgets by it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal(pub String);

/// Records a [`Caller`] on every call, and refuses Raft calls from callers that are not
/// peers. Without TLS only the address and the forwarding header are known.
#[derive(Clone, Default)]
pub struct Identify {
    peers: Option<CaCheck>,
    admins: Option<AdminCerts>,
    raft_calls: RaftCalls,
    probation: Probation,
}

/// Most `AppendEntries`, `Vote` and `InstallSnapshot` calls one connection may have under way
/// at once. openraft sends one replication stream, one snapshot and one vote request per
/// target at a time, so a healthy peer stays far below; the cap bounds what a faulty peer's
/// connection can make the node buffer (each call may carry up to 64 MiB).
pub const MAX_RAFT_CALLS_PER_CONNECTION: usize = 8;

/// The large Raft calls under way, per connection (the caller's address and port).
#[derive(Clone, Default)]
struct RaftCalls(Arc<Mutex<HashMap<SocketAddr, usize>>>);

/// Counts one Raft call of a connection until dropped: it travels in the request's
/// extensions, which the Raft handler holds until it has answered.
pub struct RaftCall {
    calls: RaftCalls,
    conn: SocketAddr,
}

impl RaftCalls {
    fn enter(&self, conn: SocketAddr) -> Option<RaftCall> {
        let mut calls = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = calls.entry(conn).or_default();
        if *n >= MAX_RAFT_CALLS_PER_CONNECTION {
            return None;
        }
        *n += 1;
        Some(RaftCall {
            calls: self.clone(),
            conn,
        })
    }
}

impl Drop for RaftCall {
    fn drop(&mut self) {
        let mut calls = self.calls.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = calls.get_mut(&self.conn) {
            *n -= 1;
            if *n == 0 {
                calls.remove(&self.conn);
            }
        }
    }
}

/// The Raft methods whose messages are large (log entries, snapshots): the ones capped per
/// connection. `ReadIndex` is small and followers send many at once under read load.
fn is_large_raft_call(path: &str) -> bool {
    matches!(
        path,
        "/revokd.v1.Raft/AppendEntries"
            | "/revokd.v1.Raft/Vote"
            | "/revokd.v1.Raft/InstallSnapshot"
    )
}

/// The connection a call arrived on (its remote address and port).
pub fn connection(ext: &http::Extensions) -> Option<SocketAddr> {
    ext.get::<ConnInfo>().and_then(|c| c.remote)
}

/// Who a call reports for, or reads for, in the replica registry: its authenticated
/// [`Principal`] when the gate verified a credential (then `true`), else its connection, with
/// the caller's address as its quota.
pub fn reporter(ext: &http::Extensions) -> (Reporter, bool) {
    if let Some(Principal(p)) = ext.get::<Principal>() {
        let by = Reporter {
            owner: p.clone(),
            quota: p.clone(),
        };
        return (by, true);
    }
    let conn = connection(ext);
    let by = Reporter {
        owner: format!("conn:{}", conn.map(|a| a.to_string()).unwrap_or_default()),
        quota: format!(
            "ip:{}",
            conn.map(|a| a.ip().to_string()).unwrap_or_default()
        ),
    };
    (by, false)
}

impl Identify {
    /// Identifies callers with these CAs (`None`, `None` without TLS); closes the
    /// connections in `probation` whose first call is not a peer's.
    pub fn new(peers: Option<CaCheck>, admins: Option<AdminCerts>, probation: Probation) -> Self {
        Identify {
            peers,
            admins,
            raft_calls: RaftCalls::default(),
            probation,
        }
    }

    /// Decides a connection let in on probation (the accept loop's peer reserve): a peer's
    /// stays, anyone else's is closed with this call's refusal.
    fn check_probation(&self, conn: SocketAddr, caller: &Caller) -> Result<(), tonic::Status> {
        if !self.probation.is_on_probation(conn) {
            return Ok(());
        }
        if caller.peer || self.peers.is_none() {
            self.probation.admit(conn);
            return Ok(());
        }
        self.probation.evict(conn);
        Err(tonic::Status::unavailable(
            "revokd: connection limit: this node's client connections are all in use (or \
             your address holds its share, --max-connections-per-address); the slots left are \
             kept for cluster peers. Retry later, close idle connections, or raise \
             --max-connections",
        ))
    }

    /// The [`Caller`] of a call with these headers and extensions.
    pub fn caller(&self, head: &http::request::Parts) -> Caller {
        let ext = &head.extensions;
        let addr = connection(ext).map(|a| a.ip());
        let chain = peer_certs(ext);
        let peer = match (&self.peers, &chain) {
            (Some(peers), Some(chain)) => peers.verify(chain),
            _ => false,
        };
        let admin_cert = match (&self.admins, &chain) {
            (Some(admins), Some(chain)) if !peer => admins
                .ca
                .issued(chain)
                .filter(|name| !name.is_empty())
                .map(|name| name.to_string()),
            _ => None,
        };
        let forwarded =
            head.headers.contains_key(FORWARDED_HEADER) && (peer || self.peers.is_none());
        Caller {
            addr,
            peer,
            forwarded,
            admin_cert,
        }
    }
}

impl Identify {
    /// Refuses a Raft call from a caller that is not a peer (with TLS on), or one more large
    /// Raft call than its connection may have under way.
    fn admit_raft(
        &self,
        head: &mut http::request::Parts,
        caller: &Caller,
    ) -> Result<(), tonic::Status> {
        if self.peers.is_some() && !caller.peer {
            return Err(if peer_certs(&head.extensions).is_some() {
                tonic::Status::permission_denied(
                    "revokd: raft: the caller's certificate was not issued by the cluster CA; \
                     only cluster nodes may send Raft messages",
                )
            } else {
                tonic::Status::unauthenticated(
                    "revokd: raft: peers must present a certificate issued by the cluster CA",
                )
            });
        }
        if !is_large_raft_call(head.uri.path()) {
            return Ok(());
        }
        let Some(conn) = connection(&head.extensions) else {
            return Ok(());
        };
        match self.raft_calls.enter(conn) {
            Some(call) => {
                head.extensions.insert(Arc::new(call));
                Ok(())
            }
            None => Err(tonic::Status::resource_exhausted(format!(
                "revokd: raft: this connection already has {MAX_RAFT_CALLS_PER_CONNECTION} Raft \
                 calls under way; wait for one to finish"
            ))),
        }
    }
}

impl Gate for Identify {
    fn admit(&self, head: &mut http::request::Parts) -> Result<(), tonic::Status> {
        let caller = self.caller(head);
        if let Some(conn) = connection(&head.extensions) {
            self.check_probation(conn, &caller)?;
        }
        if head.uri.path().starts_with("/revokd.v1.Raft/") {
            self.admit_raft(head, &caller)?;
        }
        head.extensions.insert(caller);
        Ok(())
    }
}
