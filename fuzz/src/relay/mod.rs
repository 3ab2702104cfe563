//! `relay`: the sans-IO `Relay`, stateful, on a fake clock.
//!
//! The input is a settings byte and then a sequence of [`Step`]s: raw
//! datagrams from one of several clients (addresses × listeners),
//! requests the harness builds and signs with a user's key and the nonce the
//! relay last gave that client address (learnt from its 401/438 replies, so
//! the fuzzer gets past authentication), Send indications, ChannelData, peer
//! datagrams on relay sockets the harness saw bound, clock moves, bind
//! failures, replays of a signed request from another client, and drain.
//!
//! The harness keeps a model of what the relay has granted, built only from
//! the relay's success responses: allocations (relayed addresses, sockets,
//! expiry), permissions (300 s) and channels (600 s) per client 5-tuple.
//! After every step it asserts:
//!
//! * a packet goes to a peer only from the client's own allocation, through
//!   one of its relay sockets, to a peer the client holds a live permission
//!   for (and, for ChannelData, on a live channel bound to that peer);
//! * a peer's packet reaches a client only on a socket of that client's
//!   live allocation, from a peer it holds a permission for, framed as
//!   ChannelData on the bound channel or as a Data indication naming the peer;
//! * every peer the relay accepted passes the peer policy;
//! * every reply parses, answers the request's transaction, and a success
//!   to a signed request is signed with the same key;
//! * sockets bound minus closed stay between the number of allocations and
//!   twice that; the quota ledger counts exactly the relay's allocations;
//!   allocations, permissions and channels stay under their quotas, and the
//!   relay's gauges equal the model's counts;
//! * no socket is bound twice, no token closed that was not bound.

mod signer;
mod steps;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uturn::auth::{userhash, AuthConfig, Authenticator, PASSWORD_ALGORITHMS_VALUE};
use uturn::policy::{AllocationLedger, PeerPolicy, Quotas};
use uturn::stun::attr::{self, Attribute};
use uturn::stun::channel::{self, ChannelData};
use uturn::stun::integrity::{check_fingerprint, check_sha1, check_sha256, Integrity};
use uturn::stun::{Class, Message, MessageWriter, Method};
use uturn::turn::{
    Leg, Now, Payload, Relay, RelaySockets, RelayToken, Settings as TurnSettings, Transmit,
    TurnConfig, Via, MAX_REPLY, PEER_HEADROOM, PEER_TAILROOM,
};

use crate::reader::Reader;
use signer::{static_user, Signer};
use steps::{client_addr, CREDS, METHODS};
pub use steps::{encode, Cred, Peer, ReqAttr, Request, Settings, Step};

pub const REALM: &str = "fuzz.realm";
pub(crate) const REST_SECRET: &str = "fuzz-rest-secret";
const UNIX0: u64 = 1_800_000_000;
/// At most this many steps per input, so that one input stays fast.
const MAX_STEPS: usize = 64;
const PERMISSION_SECS: u64 = 300;
const CHANNEL_SECS: u64 = 600;
const RELAY_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const RELAY_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const PORTS: std::ops::RangeInclusive<u16> = 50000..=50015;

/// Relay sockets that only keep books.
#[derive(Default)]
struct FakeSockets {
    bound: HashMap<RelayToken, SocketAddr>,
    fail: u8,
    fail_in_use: bool,
}

impl RelaySockets for FakeSockets {
    fn bind(&mut self, addr: SocketAddr, token: RelayToken, _df: bool) -> std::io::Result<()> {
        assert!(
            !self.bound.contains_key(&token),
            "token {token:?} bound while still open"
        );
        assert!(
            !self.bound.values().any(|a| *a == addr),
            "{addr} bound while still open"
        );
        assert!(
            PORTS.contains(&addr.port()),
            "{addr} outside the port range"
        );
        if self.fail > 0 {
            self.fail -= 1;
            return Err(if self.fail_in_use {
                std::io::ErrorKind::AddrInUse.into()
            } else {
                std::io::ErrorKind::PermissionDenied.into()
            });
        }
        self.bound.insert(token, addr);
        Ok(())
    }
    fn close(&mut self, token: RelayToken) {
        assert!(
            self.bound.remove(&token).is_some(),
            "closing {token:?}, which is not open"
        );
    }
}

type Five = (Leg, SocketAddr);

/// What the relay has granted one 5-tuple, as its responses said.
struct Granted {
    expires: u64,
    relayed: Vec<SocketAddr>,
    tokens: Vec<RelayToken>,
    /// Peer IP → expiry (seconds on the fake clock).
    perms: HashMap<IpAddr, u64>,
    /// Channel number → peer and expiry.
    channels: HashMap<u16, (SocketAddr, u64)>,
}

/// What a client address learnt from the relay's challenges.
#[derive(Default, Clone)]
struct Learnt {
    nonce: Vec<u8>,
    algorithms: Vec<u8>,
}

struct Harness {
    relay: Relay,
    sockets: FakeSockets,
    ledger: Arc<AllocationLedger>,
    policy: Arc<PeerPolicy>,
    quotas: Quotas,
    t0: Instant,
    secs: u64,
    scratch: Vec<u8>,
    granted: HashMap<Five, Granted>,
    token_owner: HashMap<RelayToken, Five>,
    tokens_seen: Vec<RelayToken>,
    learnt: HashMap<SocketAddr, Learnt>,
    reservations: Vec<[u8; 8]>,
    last_signed: HashMap<u8, Vec<u8>>,
}

/// A request's peers (trusted view), decoded.
fn peers_of(msg: &Message<'_>) -> Vec<SocketAddr> {
    msg.attributes()
        .filter_map(|a| match Attribute::decode(a, msg.transaction_id()) {
            Ok(Attribute::XorPeerAddress(p)) => Some(p),
            _ => None,
        })
        .collect()
}

fn first_attr<'a>(msg: &Message<'a>, typ: u16) -> Option<Attribute<'a>> {
    Attribute::decode(msg.get(typ)?, msg.transaction_id()).ok()
}

fn lifetime_of(msg: &Message<'_>) -> Option<u32> {
    match first_attr(msg, attr::LIFETIME)? {
        Attribute::Lifetime(v) => Some(v),
        _ => None,
    }
}

fn error_code(msg: &Message<'_>) -> Option<u16> {
    match first_attr(msg, attr::ERROR_CODE)? {
        Attribute::ErrorCode { code, .. } => Some(code),
        _ => None,
    }
}

impl Harness {
    fn new(s: Settings) -> Harness {
        let auth = Authenticator::new(
            AuthConfig {
                realm: REALM.into(),
                users: vec![
                    static_user("alice", "alice-pw"),
                    static_user("bob", "bob-pw"),
                ],
                rest_secrets: vec![REST_SECRET.as_bytes().to_vec()],
                offer_sha256: s.offer_sha256,
                nonce_lifetime_secs: 600,
            },
            [7; 32],
        );
        let allow = vec![
            "198.51.100.0/24".parse().unwrap(),
            "2001:db8:100::/48".parse().unwrap(),
        ];
        let policy = Arc::new(PeerPolicy::new(
            allow,
            vec![],
            &[RELAY_V4.into(), RELAY_V6.into()],
        ));
        let quotas = if s.tight_quotas {
            Quotas {
                allocations_per_user: 2,
                total_allocations: 4,
                permissions_per_allocation: 3,
                channels_per_allocation: 2,
                peer_connections_per_allocation: 2,
                pending_connections_per_allocation: 1,
            }
        } else {
            Quotas {
                allocations_per_user: 8,
                total_allocations: 16,
                permissions_per_allocation: 16,
                channels_per_allocation: 16,
                peer_connections_per_allocation: 16,
                pending_connections_per_allocation: 8,
            }
        };
        let rate = if s.low_rate { 2 } else { 10_000 };
        let cfg = TurnConfig {
            relay_v4: Some(RELAY_V4),
            relay_v6: s.relay_v6.then_some(RELAY_V6),
            ports: PORTS,
        };
        let settings = TurnSettings {
            auth: Arc::new(auth),
            policy: Arc::clone(&policy),
            quotas,
            max_lifetime: Duration::from_secs(3600),
            software: None,
            unauth_rate: rate,
            unauth_burst: rate,
        };
        let ledger = Arc::new(AllocationLedger::new(quotas));
        let mut relay = Relay::new(cfg, settings, Arc::clone(&ledger));
        // A fixed seed: the same input makes the same run, so that a crash
        // found here replays.
        relay.seed(1);
        Harness {
            relay,
            sockets: FakeSockets::default(),
            ledger,
            policy,
            quotas,
            t0: Instant::now(),
            secs: 0,
            scratch: vec![0; MAX_REPLY],
            granted: HashMap::new(),
            token_owner: HashMap::new(),
            tokens_seen: Vec::new(),
            learnt: HashMap::new(),
            reservations: Vec::new(),
            last_signed: HashMap::new(),
        }
    }

    fn now(&self) -> Now {
        Now {
            at: self.t0 + Duration::from_secs(self.secs),
            unix: UNIX0 + self.secs,
        }
    }

    fn live(&self, five: &Five) -> Option<&Granted> {
        self.granted.get(five).filter(|g| self.secs < g.expires)
    }

    fn step(&mut self, step: &Step) {
        match step {
            Step::Raw { client, bytes } => {
                self.client(*client, bytes, None, None);
            }
            Step::Request(q) => self.request(q),
            Step::Send {
                client,
                peer,
                data,
                fingerprint,
            } => {
                let mut buf = vec![0u8; 64 + data.len()];
                let tid = [0x5E; 12];
                let mut w = MessageWriter::new(&mut buf, Method::Send, Class::Indication, &tid)
                    .expect("room for a header");
                w.xor_address(attr::XOR_PEER_ADDRESS, peer.addr()).unwrap();
                w.raw(attr::DATA, data).unwrap();
                if *fingerprint {
                    w.fingerprint().unwrap();
                }
                let n = w.finish();
                buf.truncate(n);
                self.client(*client, &buf, None, Some(data));
            }
            Step::ChannelData {
                client,
                number,
                payload,
                padded,
            } => {
                let mut buf = vec![0u8; 4];
                let mut header = [0u8; 4];
                channel::write_header(&mut header, *number, payload.len() as u16);
                buf.copy_from_slice(&header);
                buf.extend_from_slice(payload);
                if *padded {
                    buf.resize((buf.len() + 3) & !3, 0);
                }
                self.client(*client, &buf, None, Some(payload));
            }
            Step::Peer {
                token,
                peer,
                payload,
                overlong,
            } => self.peer(*token, &peer.addr(), payload, *overlong),
            Step::Advance { secs } => {
                self.secs += u64::from(*secs);
                let now = self.now();
                if self.relay.poll_timeout().is_some_and(|t| t <= now.at) {
                    self.relay.handle_timeout(now, &mut self.sockets);
                }
            }
            Step::FailBinds { count, in_use } => {
                self.sockets.fail = *count;
                self.sockets.fail_in_use = *in_use;
            }
            Step::Replay { from, to } => {
                if let Some(pkt) = self.last_signed.get(&(from % 8)).cloned() {
                    self.client(*to, &pkt, None, None);
                }
            }
            Step::Drain => self.relay.start_drain(None),
        }
        self.check_bounds();
    }

    /// Builds, signs and sends a request; on a 401/438 that brings a new
    /// nonce, sends it once more with that nonce.
    fn request(&mut self, q: &Request) {
        let (_, addr) = client_addr(q.client);
        let before = self.learnt.get(&addr).map(|l| l.nonce.clone());
        let reply = self.send_request(q);
        let retry = matches!(reply, Some(401 | 438))
            && q.flags & 4 == 0
            && self.learnt.get(&addr).map(|l| l.nonce.clone()) != before;
        if retry {
            self.send_request(q);
        }
    }

    /// Returns the error code of the reply, if any.
    fn send_request(&mut self, q: &Request) -> Option<u16> {
        let (_, addr) = client_addr(q.client);
        let method = METHODS[usize::from(q.method) % METHODS.len()];
        let signer = Signer::new(CREDS[usize::from(q.cred) % CREDS.len()], self.now().unix);
        let learnt = self.learnt.get(&addr).cloned().unwrap_or_default();
        let mut tid = [q.tid; 12];
        tid[11] = q.client % 8;
        let mut buf = vec![0u8; 4096];
        let mut w = MessageWriter::new(&mut buf, method, Class::Request, &tid).unwrap();
        for a in &q.attrs {
            let _ = match a {
                ReqAttr::Transport(p) => w.raw(attr::REQUESTED_TRANSPORT, &[*p, 0, 0, 0]),
                ReqAttr::Lifetime(v) => w.u32(attr::LIFETIME, *v),
                ReqAttr::Family(v6) => w.raw(
                    attr::REQUESTED_ADDRESS_FAMILY,
                    &[1 + u8::from(*v6), 0, 0, 0],
                ),
                ReqAttr::AdditionalFamily(v6) => w.raw(
                    attr::ADDITIONAL_ADDRESS_FAMILY,
                    &[1 + u8::from(*v6), 0, 0, 0],
                ),
                ReqAttr::EvenPort(r) => w.raw(attr::EVEN_PORT, &[if *r { 0x80 } else { 0 }]),
                ReqAttr::DontFragment => w.raw(attr::DONT_FRAGMENT, &[]),
                ReqAttr::Reservation(n) => {
                    let t = match self.reservations.len() {
                        0 => [*n; 8],
                        len => self.reservations[usize::from(*n) % len],
                    };
                    w.raw(attr::RESERVATION_TOKEN, &t)
                }
                ReqAttr::Channel(n) => w.u32(attr::CHANNEL_NUMBER, u32::from(*n) << 16),
                ReqAttr::PeerAddress(p) => w.xor_address(attr::XOR_PEER_ADDRESS, p.addr()),
                ReqAttr::Raw { typ, value } => w.raw(*typ, value),
            };
        }
        let signed = q.flags & 4 == 0 && !learnt.nonce.is_empty();
        if signed {
            if signer.userhash {
                let h = userhash(&signer.username, REALM.as_bytes());
                w.raw(attr::USERHASH, &h).unwrap();
            } else {
                w.raw(attr::USERNAME, &signer.username).unwrap();
            }
            w.raw(attr::REALM, REALM.as_bytes()).unwrap();
            w.raw(attr::NONCE, &learnt.nonce).unwrap();
            if signer.declare && !learnt.algorithms.is_empty() {
                w.raw(attr::PASSWORD_ALGORITHMS, &learnt.algorithms)
                    .unwrap();
                let number = if signer.sha256() { 2u8 } else { 1 };
                w.raw(attr::PASSWORD_ALGORITHM, &[0, number, 0, 0]).unwrap();
            }
            if signer.sha256() {
                w.message_integrity_sha256(&signer.key).unwrap();
            } else {
                w.message_integrity(&signer.key).unwrap();
            }
        }
        if q.flags & 2 != 0 {
            // RFC 8489 §14.5: ignored when it follows the integrity attribute.
            let _ = w.u32(attr::LIFETIME, 0);
        }
        if q.flags & 1 != 0 {
            w.fingerprint().unwrap();
        }
        let n = w.finish();
        buf.truncate(n);
        if q.flags & 8 != 0 && !buf.is_empty() {
            let at = usize::from(q.flip) % buf.len();
            buf[at] ^= (q.flip >> 8) as u8 | 1;
        }
        let intact = q.flags & 8 == 0;
        if signed {
            self.last_signed.insert(q.client % 8, buf.clone());
        }
        let key = (signed && intact).then_some(&signer);
        self.client(q.client, &buf, key, None)
    }

    /// Hands `pkt` to the relay as client `c` sent it and checks the outcome.
    /// `signer`: the request is the harness's own, signed with that key.
    /// `sent`: the payload the harness put in a Send indication or
    /// ChannelData. Returns the reply's error code, if any.
    fn client(
        &mut self,
        c: u8,
        pkt: &[u8],
        signer: Option<&Signer>,
        sent: Option<&[u8]>,
    ) -> Option<u16> {
        let five = client_addr(c);
        let now = self.now();
        // The datagram in a receive buffer laid out as the io layer does.
        let mut rx = vec![0u8; PEER_HEADROOM + pkt.len() + PEER_TAILROOM];
        rx[PEER_HEADROOM..PEER_HEADROOM + pkt.len()].copy_from_slice(pkt);
        let out = self.relay.handle_client(
            now,
            five.0,
            five.1,
            &rx,
            pkt.len(),
            &mut self.scratch,
            &mut self.sockets,
        );
        match out {
            None => None,
            Some(Transmit {
                via,
                to,
                payload: Payload::Reply(n),
            }) => {
                assert_eq!(
                    (via, to),
                    (five.0.via(), five.1),
                    "a reply to another client"
                );
                assert!(n <= MAX_REPLY);
                let reply = self.scratch[..n].to_vec();
                self.reply(five, pkt, &reply, signer)
            }
            Some(Transmit {
                via: Via::Relay(relay),
                to,
                payload: Payload::Rx(range),
            }) => {
                // Forwarded in place: the range lies inside the datagram.
                assert!(
                    PEER_HEADROOM <= range.start
                        && range.start <= range.end
                        && range.end <= PEER_HEADROOM + pkt.len(),
                    "a payload outside the datagram: {range:?}"
                );
                let payload = range.start - PEER_HEADROOM..range.end - PEER_HEADROOM;
                self.to_peer(five, pkt, relay, to, payload, sent);
                None
            }
            Some(other) => panic!("a client datagram caused {other:?}"),
        }
    }

    fn to_peer(
        &self,
        five: Five,
        pkt: &[u8],
        relay: RelayToken,
        peer: SocketAddr,
        payload: std::ops::Range<usize>,
        sent: Option<&[u8]>,
    ) {
        let g = self
            .live(&five)
            .unwrap_or_else(|| panic!("ToPeer from {five:?}, which has no live allocation"));
        assert!(
            g.tokens.contains(&relay),
            "ToPeer through {relay:?}, not a socket of {five:?}'s allocation"
        );
        let from = self
            .sockets
            .bound
            .get(&relay)
            .expect("ToPeer through a closed socket");
        assert_eq!(
            from.is_ipv4(),
            peer.is_ipv4(),
            "relay socket of another family"
        );
        let perm = g.perms.get(&peer.ip()).copied().unwrap_or(0);
        assert!(
            self.secs < perm,
            "ToPeer to {peer} without a live permission of {five:?} (at {} s, permission until {perm} s)",
            self.secs
        );
        assert!(
            self.policy.check(peer).is_ok(),
            "ToPeer to a denied peer {peer}"
        );
        assert!(payload.start <= payload.end && payload.end <= pkt.len());
        if let Ok(cd) = ChannelData::parse(pkt) {
            let (bound, until) = g
                .channels
                .get(&cd.number)
                .copied()
                .expect("a bound channel");
            assert_eq!(
                bound, peer,
                "ChannelData sent to another peer than its channel's"
            );
            assert!(self.secs < until, "ChannelData on an expired channel");
            assert_eq!(&pkt[payload.clone()], cd.payload);
        }
        if let Some(sent) = sent {
            assert_eq!(&pkt[payload], sent, "the payload is not what was sent");
        }
    }

    /// Checks a reply and updates the model from it.
    fn reply(
        &mut self,
        five: Five,
        pkt: &[u8],
        reply: &[u8],
        signer: Option<&Signer>,
    ) -> Option<u16> {
        let req = Message::parse(pkt).expect("only STUN requests are answered");
        let msg = Message::parse(reply).expect("replies parse");
        assert_eq!(msg.transaction_id(), req.transaction_id());
        assert_eq!(msg.method(), req.method());
        assert_ne!(check_fingerprint(&msg), Integrity::Invalid);
        let code = error_code(&msg);
        if matches!(code, Some(401 | 438)) {
            let learnt = self.learnt.entry(five.1).or_default();
            if let Some(Attribute::Nonce(n)) = first_attr(&msg, attr::NONCE) {
                learnt.nonce = n.to_vec();
            }
            match first_attr(&msg, attr::PASSWORD_ALGORITHMS) {
                Some(Attribute::PasswordAlgorithms(a)) => {
                    assert_eq!(a, PASSWORD_ALGORITHMS_VALUE);
                    learnt.algorithms = a.to_vec();
                }
                _ => learnt.algorithms.clear(),
            }
        }
        if msg.class() == Class::Success && req.method() != Method::Binding {
            if let Some(s) = signer {
                let check = if s.sha256() { check_sha256 } else { check_sha1 };
                assert_eq!(check(&msg, &s.key), Integrity::Valid, "success not signed");
            }
            self.granted_by(five, &req, &msg);
        }
        code
    }

    /// The model learns what a success response granted.
    fn granted_by(&mut self, five: Five, req: &Message<'_>, resp: &Message<'_>) {
        let secs = self.secs;
        match req.method() {
            Method::Allocate => {
                let relayed: Vec<SocketAddr> = resp
                    .attributes()
                    .filter_map(|a| match Attribute::decode(a, resp.transaction_id()) {
                        Ok(Attribute::XorRelayedAddress(x)) => Some(x),
                        _ => None,
                    })
                    .collect();
                assert!(!relayed.is_empty() && relayed.len() <= 2);
                if let Some(Attribute::ReservationToken(t)) =
                    first_attr(resp, attr::RESERVATION_TOKEN)
                {
                    self.reservations.push(*t);
                }
                if let Some(g) = self.live(&five) {
                    assert_eq!(
                        g.relayed, relayed,
                        "a live allocation changed its addresses"
                    );
                    return;
                }
                let lifetime = u64::from(lifetime_of(resp).expect("Allocate success has LIFETIME"));
                let mut tokens = Vec::new();
                for a in &relayed {
                    let (&token, _) = self
                        .sockets
                        .bound
                        .iter()
                        .find(|(_, b)| *b == a)
                        .expect("a relayed address has an open socket");
                    tokens.push(token);
                    self.token_owner.insert(token, five);
                    self.tokens_seen.push(token);
                }
                self.granted.insert(
                    five,
                    Granted {
                        expires: secs + lifetime,
                        relayed,
                        tokens,
                        perms: HashMap::new(),
                        channels: HashMap::new(),
                    },
                );
            }
            Method::Refresh => {
                let lifetime = u64::from(lifetime_of(resp).expect("Refresh success has LIFETIME"));
                assert!(
                    self.live(&five).is_some(),
                    "Refresh succeeded without an allocation"
                );
                if lifetime == 0 {
                    self.granted.remove(&five);
                } else if let Some(g) = self.granted.get_mut(&five) {
                    g.expires = secs + lifetime;
                }
            }
            Method::CreatePermission => {
                let peers = peers_of(req);
                assert!(!peers.is_empty());
                for p in &peers {
                    assert!(
                        self.policy.check(*p).is_ok(),
                        "permission for a denied peer {p}"
                    );
                }
                let g = self
                    .granted
                    .get_mut(&five)
                    .filter(|g| secs < g.expires)
                    .expect("CreatePermission succeeded without an allocation");
                for p in peers {
                    g.perms.insert(p.ip(), secs + PERMISSION_SECS);
                }
            }
            Method::ChannelBind => {
                let peers = peers_of(req);
                assert_eq!(peers.len(), 1);
                let peer = peers[0];
                assert!(
                    self.policy.check(peer).is_ok(),
                    "channel to a denied peer {peer}"
                );
                let number = match first_attr(req, attr::CHANNEL_NUMBER) {
                    Some(Attribute::ChannelNumber(n)) => n,
                    _ => panic!("ChannelBind succeeded without CHANNEL-NUMBER"),
                };
                assert!((channel::CHANNEL_MIN..=channel::CHANNEL_MAX).contains(&number));
                let g = self
                    .granted
                    .get_mut(&five)
                    .filter(|g| secs < g.expires)
                    .expect("ChannelBind succeeded without an allocation");
                g.channels.insert(number, (peer, secs + CHANNEL_SECS));
                g.perms.insert(peer.ip(), secs + PERMISSION_SECS);
            }
            other => panic!("success for {other:?}"),
        }
    }

    fn peer(&mut self, token: u8, peer: &SocketAddr, payload: &[u8], overlong: bool) {
        let token = match self.tokens_seen.len() {
            _ if token == 0xFF => RelayToken(0x1234_5678),
            0 => RelayToken(u64::from(token)),
            n => self.tokens_seen[usize::from(token) % n],
        };
        let mut buf = vec![0u8; PEER_HEADROOM + payload.len() + PEER_TAILROOM];
        buf[PEER_HEADROOM..PEER_HEADROOM + payload.len()].copy_from_slice(payload);
        let len = if overlong { buf.len() } else { payload.len() };
        let now = self.now();
        let Some(out) = self.relay.handle_peer(now, token, *peer, &mut buf, len) else {
            return;
        };
        assert!(!overlong, "a length past the buffer was relayed");
        let five = *self
            .token_owner
            .get(&token)
            .expect("ToClient on a socket the harness never saw allocated");
        let Transmit {
            via,
            to: client,
            payload: Payload::Rx(range),
        } = out
        else {
            panic!("a peer datagram caused {out:?}");
        };
        assert!(
            !matches!(via, Via::Relay(_)),
            "a peer datagram sent to a peer"
        );
        assert_eq!(
            (via, client),
            (five.0.via(), five.1),
            "ToClient to another client"
        );
        let g = self
            .live(&five)
            .expect("ToClient for an allocation that is not live");
        assert!(g.tokens.contains(&token), "ToClient on a stale socket");
        let perm = g.perms.get(&peer.ip()).copied().unwrap_or(0);
        assert!(
            self.secs < perm,
            "ToClient from {peer} without a live permission (at {} s, until {perm} s)",
            self.secs
        );
        assert!(range.start <= range.end && range.end <= buf.len());
        if five.0.is_stream() {
            // RFC 8656 §12.5: whole frames on a stream, padded to 4 bytes.
            assert_eq!(range.len() % 4, 0, "an unpadded frame on a stream");
        }
        let bytes = &buf[range];
        let channel = g
            .channels
            .iter()
            .find(|(_, (p, until))| p == peer && self.secs < *until)
            .map(|(n, _)| *n);
        match channel {
            Some(number) => {
                let cd = ChannelData::parse(bytes).expect("ChannelData to the client parses");
                assert_eq!(cd.number, number);
                assert_eq!(cd.payload, payload);
            }
            None => {
                let m = Message::parse(bytes).expect("a Data indication parses");
                assert_eq!((m.method(), m.class()), (Method::Data, Class::Indication));
                assert_eq!(
                    first_attr(&m, attr::XOR_PEER_ADDRESS),
                    Some(Attribute::XorPeerAddress(*peer))
                );
                assert_eq!(first_attr(&m, attr::DATA), Some(Attribute::Data(payload)));
            }
        }
    }

    /// Tables and counters stay within the quotas and agree with the model.
    fn check_bounds(&self) {
        let allocations = self.relay.allocation_count();
        let q = self.quotas;
        assert!(allocations <= q.total_allocations as usize);
        assert_eq!(
            self.ledger.active() as usize,
            allocations,
            "quota ledger out of step"
        );
        let open = self.sockets.bound.len();
        assert!(
            allocations <= open && open <= 2 * allocations,
            "{open} sockets open for {allocations} allocations"
        );
        let g = self.relay.gauges(self.now().at);
        let live: Vec<&Granted> = self
            .granted
            .values()
            .filter(|g| self.secs < g.expires)
            .collect();
        assert_eq!(
            g.allocations as usize,
            live.len(),
            "allocations: relay vs model"
        );
        let perms: usize = live
            .iter()
            .map(|a| a.perms.values().filter(|&&t| self.secs < t).count())
            .sum();
        let chans: usize = live
            .iter()
            .map(|a| a.channels.values().filter(|(_, t)| self.secs < *t).count())
            .sum();
        assert_eq!(g.permissions as usize, perms, "permissions: relay vs model");
        assert_eq!(g.channels as usize, chans, "channels: relay vs model");
        assert!(g.permissions <= g.allocations * u64::from(q.permissions_per_allocation));
        assert!(g.channels <= g.allocations * u64::from(q.channels_per_allocation));
    }
}

pub fn run(data: &[u8]) {
    let mut r = Reader::new(data);
    let mut h = Harness::new(Settings::from_byte(r.u8()));
    for _ in 0..MAX_STEPS {
        if r.is_empty() {
            break;
        }
        let step = Step::decode(&mut r);
        h.step(&step);
    }
    let mut sockets = std::mem::take(&mut h.sockets);
    h.relay.close_all(&mut sockets);
    assert!(
        sockets.bound.is_empty(),
        "sockets left open after close_all"
    );
    assert_eq!(h.ledger.active(), 0, "quota left taken after close_all");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seeds are worth something only if they get past authentication
    /// and move data both ways.
    #[test]
    fn seeds_reach_past_authentication() {
        let mut created = 0;
        let (mut to_peer, mut to_client, mut channels) = (0, 0, 0);
        for (_, seed) in crate::seeds::relay() {
            let mut r = Reader::new(&seed);
            let mut h = Harness::new(Settings::from_byte(r.u8()));
            while !r.is_empty() {
                h.step(&Step::decode(&mut r));
                channels = channels.max(h.relay.gauges(h.now().at).channels);
            }
            let s = h.relay.stats().totals();
            created += s.allocations_created;
            to_peer += s.to_peer_packets;
            to_client += s.to_client_packets;
        }
        assert!(created >= 8, "{created} allocations");
        assert!(
            to_peer >= 3 && to_client >= 3,
            "{to_peer} out, {to_client} in"
        );
        assert!(channels >= 1);
    }
}
