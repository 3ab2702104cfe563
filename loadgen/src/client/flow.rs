//! One TURN client: its socket, credentials, plan of steps and the request
//! in flight; the requests it builds and what it learns from a 401 or 438.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use uturn_stun::{
    attr, channel::CHANNEL_MIN, AddressFamily, Attribute, Class, Message, MessageWriter, Method,
};

use super::{Conn, MAX_TRIES, STREAM_TIMEOUT, UDP};
use crate::creds::{key_md5, Auth};

/// One step of a flow's plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// Allocate (REQUESTED-TRANSPORT UDP), answering the 401 if challenged.
    Allocate,
    /// CreatePermission for the flow's peer.
    Permission,
    /// ChannelBind of the flow's channel number to its peer.
    Bind,
    /// Refresh with LIFETIME 0: the allocation is deleted.
    Delete,
}

impl Step {
    pub(super) fn method(self) -> Method {
        match self {
            Step::Allocate => Method::Allocate,
            Step::Permission => Method::CreatePermission,
            Step::Bind => Method::ChannelBind,
            Step::Delete => Method::Refresh,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Step::Allocate => "Allocate",
            Step::Permission => "CreatePermission",
            Step::Bind => "ChannelBind",
            Step::Delete => "Refresh(0)",
        }
    }
}

/// The usual set-up: Allocate, CreatePermission and, for ChannelData,
/// ChannelBind.
pub fn setup_plan(channel: bool) -> &'static [Step] {
    if channel {
        &[Step::Allocate, Step::Permission, Step::Bind]
    } else {
        &[Step::Allocate, Step::Permission]
    }
}

/// Why a flow stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowError {
    /// The server answered with this STUN error code.
    Code(u16, Step),
    /// No answer after [`MAX_TRIES`] sends (UDP) or within
    /// [`STREAM_TIMEOUT`] (TCP, TLS).
    Timeout(Step),
    /// A socket, connection or TLS error.
    Io(String),
    /// An answer that makes no sense (e.g. no XOR-RELAYED-ADDRESS).
    Protocol(&'static str),
}

impl FlowError {
    /// The STUN error code, if the server sent one.
    pub fn code(&self) -> Option<u16> {
        match self {
            FlowError::Code(c, _) => Some(*c),
            _ => None,
        }
    }
}

/// Failed flows by what ended them, as the reports count them.
#[derive(Clone, Debug, Default)]
pub struct FailureCounts {
    /// By the STUN error code the server answered with.
    pub by_code: BTreeMap<u16, u64>,
    /// No answer in time.
    pub timeouts: u64,
    /// Anything else (socket errors, malformed answers).
    pub other: u64,
}

impl FailureCounts {
    /// Counts the error a failed flow ended with.
    pub fn count(&mut self, e: Option<&FlowError>) {
        match e {
            Some(FlowError::Timeout(_)) => self.timeouts += 1,
            e => match e.and_then(FlowError::code) {
                Some(c) => *self.by_code.entry(c).or_default() += 1,
                None => self.other += 1,
            },
        }
    }
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlowError::Code(c, s) => write!(f, "{} answered with error {c}", s.name()),
            FlowError::Timeout(s) => write!(
                f,
                "{} timed out ({MAX_TRIES} sends over UDP, {} s over TCP/TLS)",
                s.name(),
                STREAM_TIMEOUT.as_secs()
            ),
            FlowError::Io(e) => write!(f, "{e}"),
            FlowError::Protocol(e) => write!(f, "protocol error: {e}"),
        }
    }
}

/// A request waiting for its answer.
pub(super) struct Tx {
    pub(super) tid: [u8; 12],
    pub(super) bytes: Vec<u8>,
    pub(super) step: Step,
    pub(super) tries: u32,
    pub(super) serial: u64,
}

/// One TURN client.
pub struct TurnFlow {
    /// Client number: names the REST user and picks the channel number.
    pub index: u64,
    /// The client's connection to the server.
    pub conn: Conn,
    /// The peer its permission and channel are for.
    pub peer: SocketAddr,
    /// Channel number 0x4000 + (index mod 4096).
    pub channel: u16,
    /// XOR-RELAYED-ADDRESS from the Allocate answer.
    pub relayed: Option<SocketAddr>,
    /// When the current plan was started and when it finished.
    pub started: Option<Instant>,
    pub finished: Option<Instant>,
    /// Why the flow failed, if it did.
    pub error: Option<FlowError>,
    pub(super) creds: Option<(String, String)>,
    realm_override: Option<Vec<u8>>,
    realm: Option<Vec<u8>>,
    nonce: Option<Vec<u8>>,
    pub(super) key: Option<[u8; 16]>,
    pub(super) plan: Vec<Step>,
    pub(super) pos: usize,
    pub(super) tx: Option<Tx>,
    pub(super) stale: u32,
    /// Why the connection cannot carry requests any more (streams).
    pub(super) broken: Option<String>,
}

impl TurnFlow {
    /// A client numbered `index` on `conn`, with the credentials `auth`
    /// gives it; `realm` overrides the server's.
    pub fn new(
        index: u64,
        conn: Conn,
        peer: SocketAddr,
        auth: &Auth,
        realm: Option<&str>,
    ) -> TurnFlow {
        TurnFlow {
            index,
            conn,
            peer,
            channel: CHANNEL_MIN + (index % 4096) as u16,
            relayed: None,
            started: None,
            finished: None,
            error: None,
            creds: auth.for_client(index),
            realm_override: realm.map(|r| r.as_bytes().to_vec()),
            realm: None,
            nonce: None,
            key: None,
            plan: Vec::new(),
            pos: 0,
            tx: None,
            stale: 0,
            broken: None,
        }
    }

    /// The request for `step`, with credentials once the 401 round is done.
    pub(super) fn build(&self, step: Step, tid: &[u8; 12]) -> Result<Vec<u8>, FlowError> {
        let enc = |_| FlowError::Protocol("request does not fit");
        let mut buf = vec![0u8; 1024];
        let mut w =
            MessageWriter::new(&mut buf, step.method(), Class::Request, tid).map_err(enc)?;
        match step {
            Step::Allocate => {
                w.attr(&Attribute::RequestedTransport(UDP)).map_err(enc)?;
                // RFC 8656 §7.1: without REQUESTED-ADDRESS-FAMILY the relayed
                // address is IPv4, and an IPv6 peer would then be refused (443).
                if self.peer.is_ipv6() {
                    w.attr(&Attribute::RequestedAddressFamily(AddressFamily::V6))
                        .map_err(enc)?;
                }
            }
            Step::Permission => w
                .xor_address(attr::XOR_PEER_ADDRESS, self.peer)
                .map_err(enc)?,
            Step::Bind => {
                w.attr(&Attribute::ChannelNumber(self.channel))
                    .map_err(enc)?;
                w.xor_address(attr::XOR_PEER_ADDRESS, self.peer)
                    .map_err(enc)?;
            }
            Step::Delete => w.u32(attr::LIFETIME, 0).map_err(enc)?,
        }
        if let (Some(key), Some((user, _)), Some(realm), Some(nonce)) =
            (&self.key, &self.creds, &self.realm, &self.nonce)
        {
            w.raw(attr::USERNAME, user.as_bytes()).map_err(enc)?;
            w.raw(attr::REALM, realm).map_err(enc)?;
            w.raw(attr::NONCE, nonce).map_err(enc)?;
            w.message_integrity(key).map_err(enc)?;
        }
        let n = w.finish();
        buf.truncate(n);
        Ok(buf)
    }

    /// Takes REALM and NONCE from a 401/438 and derives the key.
    pub(super) fn learn(&mut self, msg: &Message<'_>) -> bool {
        if let Some(n) = msg.get(attr::NONCE) {
            self.nonce = Some(n.value.to_vec());
        }
        let realm = self
            .realm_override
            .clone()
            .or_else(|| msg.get(attr::REALM).map(|r| r.value.to_vec()))
            .or_else(|| self.realm.clone());
        let (Some(realm), Some((user, password)), true) =
            (realm, &self.creds, self.nonce.is_some())
        else {
            return false;
        };
        self.key = Some(key_md5(user, &realm, password));
        self.realm = Some(realm);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Allocate of a flow towards `peer`, parsed.
    fn allocate_for(peer: &str) -> Vec<u8> {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let auth = Auth::from_flags(None, None, true).unwrap();
        let flow = TurnFlow::new(0, Conn::Udp(sock), peer.parse().unwrap(), &auth, None);
        flow.build(Step::Allocate, &[7; 12]).unwrap()
    }

    #[test]
    fn an_ipv6_peer_asks_for_an_ipv6_relayed_address() {
        let v6 = allocate_for("[fd00:2::2]:9");
        let m = Message::parse(&v6).unwrap();
        let family = m.get(attr::REQUESTED_ADDRESS_FAMILY).expect("asked for");
        assert_eq!(family.value, &[2, 0, 0, 0]);
        let v4 = allocate_for("10.200.2.2:9");
        let m = Message::parse(&v4).unwrap();
        assert!(m.get(attr::REQUESTED_ADDRESS_FAMILY).is_none());
        assert!(m.get(attr::REQUESTED_TRANSPORT).is_some());
    }
}
