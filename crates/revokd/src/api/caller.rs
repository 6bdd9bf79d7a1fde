//! Who is calling: the first check in front of the gRPC router records, for the checks after
//! it (`auth`, `limits`), the caller's address and what its client certificate proves, as a
//! [`Caller`] in the request's extensions.
//!
//! Only callers that present a certificate pay for a certificate check (peers and admins
//! with client certificates), and [`CaCheck`] remembers the certificates it checked.

use std::net::IpAddr;

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use super::gate::Gate;
use super::FORWARDED_HEADER;
use crate::network::tls::{peer_certs, AdminCerts, CaCheck};

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

/// Records a [`Caller`] on every call. Without TLS only the address and the forwarding
/// header are known.
#[derive(Clone, Default)]
pub struct Identify {
    peers: Option<CaCheck>,
    admins: Option<AdminCerts>,
}

impl Identify {
    /// Identifies callers with these CAs (`None`, `None` without TLS).
    pub fn new(peers: Option<CaCheck>, admins: Option<AdminCerts>) -> Self {
        Identify { peers, admins }
    }

    /// The [`Caller`] of a call with these headers and extensions.
    pub fn caller(&self, head: &http::request::Parts) -> Caller {
        let ext = &head.extensions;
        let addr = ext
            .get::<TcpConnectInfo>()
            .or_else(|| {
                ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                    .map(|t| t.get_ref())
            })
            .and_then(|c| c.remote_addr)
            .map(|a| a.ip());
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

impl Gate for Identify {
    fn admit(&self, head: &mut http::request::Parts) -> Result<(), tonic::Status> {
        let caller = self.caller(head);
        head.extensions.insert(caller);
        Ok(())
    }
}
