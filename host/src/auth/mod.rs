//! Who is calling: the [`Caller`] every request carries from the front door
//! (`server.rs`) to its handler, so handlers, the audit trail and tenant
//! scoping all see the same identity.

use std::net::SocketAddr;

/// The identity behind one API request.
///
/// `source` is the peer address of the accepted connection. The key id and
/// account are `None` until the request's signature has been verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The access key id that signed the request.
    pub access_key_id: Option<String>,
    /// The 12-digit account the key belongs to.
    pub account: Option<String>,
    /// The connection's peer address.
    pub source: SocketAddr,
}

impl Caller {
    /// A caller nothing is known about yet but its address.
    pub fn anonymous(source: SocketAddr) -> Self {
        Caller {
            access_key_id: None,
            account: None,
            source,
        }
    }
}
