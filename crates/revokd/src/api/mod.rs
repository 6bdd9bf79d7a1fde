//! The gRPC edge: the public `Revocation` and `Cluster` services, request deadlines, leader
//! forwarding, and the mapping of errors to statuses ([`error`]). Core types become protobuf
//! in `revokd_proto::convert`, and the metadata keys are `revokd_proto::wire`'s.

pub mod auth;
pub mod caller;
pub mod cluster;
pub mod error;
pub mod gate;
pub mod limits;
pub mod revocation;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use tonic::transport::Channel;

use revokd_core::{Command, WriteOrder};

use crate::error::{Error, Waited};
use crate::node::{Node, Route, ELECTION_PAUSE};

pub use revokd_proto::wire::{ACTOR_HEADER, FORWARDED_HEADER, WRITE_ORDER_HEADER};

/// Longest deadline honoured, whatever the caller asks.
const MAX_DEADLINE: Duration = Duration::from_secs(60);

/// Parses a `grpc-timeout` header value (`<digits><unit>`).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The instant by which a request must be answered: the caller's deadline less a small
/// margin, so the caller receives the node's explanation rather than its own timeout.
pub fn deadline(meta: &MetadataMap, default: Duration) -> Instant {
    let d = meta
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .unwrap_or(default)
        .min(MAX_DEADLINE);
    let margin = (d / 10).min(Duration::from_millis(100));
    Instant::now() + d.saturating_sub(margin)
}

/// The identity to record with a write.
pub fn actor(meta: &MetadataMap) -> String {
    meta.get(ACTOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= revokd_core::MAX_TEXT_LEN)
        .unwrap_or("anonymous")
        .to_owned()
}

/// Who made a write, and its place in their sequence: what the leader records with it.
#[derive(Clone, Debug)]
pub struct Origin {
    /// The identity recorded as `revoked_by`.
    pub actor: Arc<str>,
    /// The write's place in its client's sequence, when the client sent one.
    pub order: Option<WriteOrder>,
}

impl Origin {
    /// Reads the origin of a write from its metadata; a malformed write order is refused.
    pub fn from_metadata(meta: &MetadataMap) -> Result<Origin, Error> {
        let order = match meta.get(WRITE_ORDER_HEADER) {
            None => None,
            Some(v) => {
                let v = v.to_str().map_err(|_| {
                    Error::BadWriteOrder(format!("{WRITE_ORDER_HEADER} is not ASCII text"))
                })?;
                Some(WriteOrder::parse(v).map_err(Error::BadWriteOrder)?)
            }
        };
        Ok(Origin {
            actor: Arc::from(actor(meta)),
            order,
        })
    }

    /// `cmd` as this origin proposes it: carrying its write order, if any.
    pub fn command(&self, cmd: Command) -> Command {
        match self.order {
            Some(order) => Command::Ordered {
                order,
                cmd: Box::new(cmd),
            },
            None => cmd,
        }
    }
}

/// Runs a write on the leader: `local(body, origin, deadline)` when this node leads, or
/// `forward(channel, request)` to the leader (once: a forwarded request is never forwarded
/// again). Leadership can move during a call, so it routes again, until the deadline, when
/// the local attempt finds this node no longer leads or the hop to the leader fails
/// transiently; retries are safe because every write is idempotent.
///
/// The closures take their arguments by value (body and actor shared, not copied), so that the
/// handler's future is `Send` without higher-ranked borrows, which async closures cannot yet
/// express.
pub async fn routed<Req, Resp, L, LF, F, FF>(
    node: &Node,
    req: Request<Req>,
    local: L,
    forward: F,
) -> Result<Response<Resp>, Status>
where
    Req: Clone,
    L: Fn(Arc<Req>, Origin, Instant) -> LF,
    LF: Future<Output = Result<Resp, Error>>,
    F: Fn(Channel, Request<Req>) -> FF,
    FF: Future<Output = Result<Response<Resp>, Status>>,
{
    let mut rt = Routed::new(node, req)?;
    loop {
        match rt.next().await? {
            Hop::Local => match local(rt.body.clone(), rt.origin.clone(), rt.deadline).await {
                Ok(resp) => return Ok(Response::new(resp)),
                Err(Error::NotLeader(_)) => {}
                Err(e) => return Err(e.into()),
            },
            Hop::Forward(channel, fwd) => {
                if let Some(resp) = rt.forwarded(forward(channel, fwd).await)? {
                    return Ok(resp);
                }
            }
        }
    }
}

/// Where the next attempt of a routed write goes.
enum Hop<Req> {
    /// This node leads: run it here.
    Local,
    /// Forward this request over this channel to the leader.
    Forward(Channel, Request<Req>),
}

/// A write on its way to the leader, between attempts.
struct Routed<Req> {
    node: Node,
    /// The request body.
    body: Arc<Req>,
    /// Who made it.
    origin: Origin,
    /// When the call must be answered.
    deadline: Instant,
    forwarded: bool,
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    attempts: u32,
    /// The address the last attempt was forwarded to.
    leader_addr: String,
}

impl<Req: Clone> Routed<Req> {
    /// Starts routing `req`; a malformed write order is refused.
    fn new(node: &Node, req: Request<Req>) -> Result<Self, Status> {
        let deadline = deadline(req.metadata(), node.config.default_deadline);
        let forwarded = req.metadata().contains_key(FORWARDED_HEADER);
        let origin = Origin::from_metadata(req.metadata())?;
        let authorization = req.metadata().get("authorization").cloned();
        Ok(Routed {
            node: node.clone(),
            body: Arc::new(req.into_inner()),
            origin,
            deadline,
            forwarded,
            authorization,
            attempts: 0,
            leader_addr: String::new(),
        })
    }

    /// Waits for a leader (until the deadline) and says where to run the next attempt.
    async fn next(&mut self) -> Result<Hop<Req>, Status> {
        if self.attempts > 0 {
            if Instant::now() >= self.deadline {
                return Err(Error::NoLeader(self.node.config.default_deadline).into());
            }
            tokio::time::sleep(ELECTION_PAUSE).await;
        }
        self.attempts += 1;
        match self.node.route(self.deadline).await? {
            Route::Local => Ok(Hop::Local),
            Route::Forward(leader) => {
                if self.forwarded {
                    return Err(Error::NotLeader(Some(leader)).into());
                }
                let mut fwd = Request::new(Req::clone(&self.body));
                fwd.set_timeout(self.deadline.saturating_duration_since(Instant::now()));
                fwd.metadata_mut().insert(
                    FORWARDED_HEADER,
                    tonic::metadata::MetadataValue::from_static("1"),
                );
                if let Ok(v) = self.origin.actor.as_ref().parse() {
                    fwd.metadata_mut().insert(ACTOR_HEADER, v);
                }
                if let Some(Ok(v)) = self.origin.order.map(|o| o.to_string().parse()) {
                    fwd.metadata_mut().insert(WRITE_ORDER_HEADER, v);
                }
                // The leader verifies the caller's token again.
                if let Some(v) = self.authorization.clone() {
                    fwd.metadata_mut().insert("authorization", v);
                }
                let channel = self.node.channel(leader.id, &leader.addr)?;
                self.leader_addr = leader.addr;
                Ok(Hop::Forward(channel, fwd))
            }
        }
    }

    /// Interprets the leader's answer: `Ok(None)` means "leader gone or moved, try again".
    /// The leader's own errors pass through as it gave them; a failure of the hop itself (the
    /// leader unreachable, or silent until the deadline) says which leader it was.
    fn forwarded<Resp>(
        &self,
        res: Result<Response<Resp>, Status>,
    ) -> Result<Option<Response<Resp>>, Status> {
        match res {
            Ok(r) => Ok(Some(r)),
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < self.deadline => {
                tracing::debug!(error = %s.message(), "api: forward failed; routing again");
                Ok(None)
            }
            Err(s) => Err(forward_failure(&self.leader_addr, s)),
        }
    }
}

/// What the caller is told when a write forwarded to the leader at `addr` failed for good:
/// the leader's own errors (every error revokd gives starts with `wire::ERROR_PREFIX`) as it
/// gave them; a failure of the hop itself (the leader unreachable or dropping the connection, or silent
/// until the deadline) naming the leader. Any other status passes through too.
fn forward_failure(addr: &str, s: Status) -> Status {
    if revokd_proto::wire::is_node_error(s.message()) {
        return s;
    }
    let e = match s.code() {
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            Error::Deadline(Waited::ForwardedWrite {
                addr: addr.to_owned(),
                detail: s.message().to_owned(),
            })
        }
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal => Error::Forward {
            addr: addr.to_owned(),
            message: s.message().to_owned(),
        },
        _ => return s,
    };
    e.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_hop_names_the_leader_and_the_leaders_own_errors_pass_through() {
        let addr = "10.0.0.2:50051";
        let err = forward_failure(addr, Status::unavailable("tcp connect error"));
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert_eq!(
            err.message(),
            "revokd: forwarding to leader at 10.0.0.2:50051 failed: tcp connect error"
        );
        let err = forward_failure(addr, Status::cancelled("Timeout expired"));
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
        assert!(
            err.message()
                .starts_with("revokd: deadline exceeded: the leader at 10.0.0.2:50051"),
            "{}",
            err.message()
        );
        let own = Status::unavailable("revokd: node is shutting down or stopped: raft");
        let err = forward_failure(addr, own);
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert_eq!(
            err.message(),
            "revokd: node is shutting down or stopped: raft"
        );
        let other = Status::unimplemented("unknown method Revoke");
        let err = forward_failure(addr, other);
        assert_eq!(err.code(), tonic::Code::Unimplemented);
        assert_eq!(err.message(), "unknown method Revoke");
    }

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("12x"), None);
    }
}
