//! The one choke point for every peer address a client names.
// STUB: signatures are the contract; bodies are being written.
#![allow(unused_variables, dead_code)]

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// Why a peer was refused (never shown to the client beyond a 403).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PeerDenied {
    /// In the deny list (after normalisation) and not in the allow list.
    Denied,
    /// Port 0.
    BadPort,
}

/// Default-deny peer filter: a built-in deny list plus operator additions,
/// an allow list that beats it, and the relay's own addresses.
#[derive(Clone, Debug)]
pub struct PeerPolicy {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl PeerPolicy {
    /// `allow` beats everything; `deny_extra` adds to the built-in list;
    /// `own` are the relay's addresses (denied unless allowed).
    pub fn new(allow: Vec<IpNet>, deny_extra: Vec<IpNet>, own: &[IpAddr]) -> Self {
        todo!()
    }
    /// Checks a peer after normalising IPv4-mapped, IPv4-compatible, NAT64,
    /// 6to4 and Teredo forms.
    pub fn check(&self, peer: SocketAddr) -> Result<(), PeerDenied> {
        todo!()
    }
}

/// The built-in deny list.
pub fn default_deny() -> Vec<IpNet> {
    todo!()
}
