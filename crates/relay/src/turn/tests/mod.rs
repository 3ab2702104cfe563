//! Protocol flows on a fake clock: a client, a server state machine, fake
//! relay sockets, and time moved by hand.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::auth::{derive_key, AuthConfig, Authenticator, Key, PasswordAlgorithm, StaticUser};
use crate::policy::{AllocationLedger, PeerPolicy, Quotas};
use uturn_stun::{attr, Attribute, Class, Message, MessageWriter, Method};

mod allocate;
mod data;
mod events;
mod offload;
mod permissions;
mod security;
mod streams;
mod tcp;

pub(crate) const REALM: &str = "test.realm";
pub(crate) const SECRET: &str = "rest-secret-1";
/// Peers tests may use: a documentation range opened by the allow list.
pub(crate) const PEER: &str = "198.51.100.7:5000";
pub(crate) const PEER2: &str = "198.51.100.8:6000";
pub(crate) const UNIX0: u64 = 1_800_000_000;

#[derive(Default)]
pub(crate) struct FakeSockets {
    pub bound: HashMap<RelayToken, SocketAddr>,
    /// Addresses "someone else" holds: bind fails with AddrInUse.
    pub taken: Vec<SocketAddr>,
    pub closed: Vec<RelayToken>,
    /// Sockets bound with the don't-fragment flag.
    pub df: Vec<SocketAddr>,
    /// TCP allocations' listeners, connections asked for (token, id,
    /// from, to), and peer connections closed.
    pub listening: HashMap<RelayToken, SocketAddr>,
    pub connects: Vec<(RelayToken, ConnectionId, SocketAddr, SocketAddr)>,
    pub closed_tcp: Vec<ConnectionId>,
}

impl RelaySockets for FakeSockets {
    fn bind(&mut self, addr: SocketAddr, token: RelayToken, df: bool) -> std::io::Result<()> {
        if df {
            self.df.push(addr);
        }
        if self.taken.contains(&addr) || self.bound.values().any(|a| *a == addr) {
            return Err(std::io::ErrorKind::AddrInUse.into());
        }
        self.bound.insert(token, addr);
        Ok(())
    }
    fn close(&mut self, token: RelayToken) {
        self.bound.remove(&token);
        self.listening.remove(&token);
        self.closed.push(token);
    }
    fn listen_tcp(&mut self, addr: SocketAddr, token: RelayToken) -> std::io::Result<()> {
        self.listening.insert(token, addr);
        Ok(())
    }
    fn connect_tcp(
        &mut self,
        token: RelayToken,
        id: ConnectionId,
        from: SocketAddr,
        peer: SocketAddr,
    ) -> std::io::Result<()> {
        self.connects.push((token, id, from, peer));
        Ok(())
    }
    fn close_tcp(&mut self, id: ConnectionId) {
        self.closed_tcp.push(id);
    }
}

pub(crate) struct Opts {
    pub quotas: Quotas,
    pub max_lifetime: Duration,
    pub relay_v6: bool,
    pub ports: RangeInclusive<u16>,
    pub rate: u32,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            quotas: Quotas::default(),
            max_lifetime: Duration::from_secs(3600),
            relay_v6: false,
            ports: 50000..=50999,
            rate: 1000,
        }
    }
}

pub(crate) struct Harness {
    pub relay: Relay,
    pub sockets: FakeSockets,
    pub t0: Instant,
    pub elapsed: Duration,
    pub scratch: Vec<u8>,
    /// Where client messages arrive (UDP listener 0 unless a test says).
    pub leg: Leg,
}

pub(crate) fn user(name: &str, password: &str) -> StaticUser {
    StaticUser {
        name: name.into(),
        key_md5: derive_key(
            PasswordAlgorithm::Md5,
            name.as_bytes(),
            REALM.as_bytes(),
            password.as_bytes(),
        )
        .as_bytes()
        .try_into()
        .ok(),
        key_sha256: derive_key(
            PasswordAlgorithm::Sha256,
            name.as_bytes(),
            REALM.as_bytes(),
            password.as_bytes(),
        )
        .as_bytes()
        .try_into()
        .ok(),
    }
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with(Opts::default())
    }

    pub fn with(o: Opts) -> Harness {
        let auth = Authenticator::new(
            AuthConfig {
                realm: REALM.into(),
                users: vec![user("alice", "alice-pw"), user("bob", "bob-pw")],
                rest_secrets: vec![SECRET.as_bytes().to_vec()],
                offer_sha256: true,
                nonce_lifetime_secs: 600,
            },
            [7; 32],
        );
        let relay_ip: IpAddr = Ipv4Addr::new(192, 0, 2, 1).into();
        let policy = PeerPolicy::new(
            vec!["198.51.100.0/24".parse().unwrap()],
            vec![],
            &[relay_ip],
        );
        let cfg = TurnConfig {
            relay_v4: Some(Ipv4Addr::new(192, 0, 2, 1)),
            relay_v6: o.relay_v6.then(|| "2001:db8::1".parse().unwrap()),
            ports: o.ports,
        };
        let settings = Settings {
            auth: Arc::new(auth),
            policy: Arc::new(policy),
            quotas: o.quotas,
            max_lifetime: o.max_lifetime,
            software: None,
            unauth_rate: o.rate,
            unauth_burst: o.rate,
        };
        let ledger = Arc::new(AllocationLedger::new(o.quotas));
        Harness {
            relay: Relay::new(cfg, settings, ledger),
            sockets: FakeSockets::default(),
            t0: Instant::now(),
            elapsed: Duration::ZERO,
            scratch: vec![0; MAX_REPLY],
            leg: Leg::Udp(ListenerId(0)),
        }
    }

    pub fn now(&self) -> Now {
        Now {
            at: self.t0 + self.elapsed,
            unix: UNIX0 + self.elapsed.as_secs(),
        }
    }

    /// Moves the fake clock and runs the timers.
    pub fn advance(&mut self, secs: u64) {
        self.elapsed += Duration::from_secs(secs);
        let now = self.now();
        self.relay.handle_timeout(now, &mut self.sockets);
    }

    /// Feeds a datagram from `from` (in a receive buffer laid out as the io
    /// layer lays it out); returns what the relay sends.
    pub fn client(&mut self, from: SocketAddr, pkt: &[u8]) -> Option<Transmit> {
        self.client_rx(from, pkt).0
    }

    /// As `client`, and the receive buffer the payload ranges point into.
    pub fn client_rx(&mut self, from: SocketAddr, pkt: &[u8]) -> (Option<Transmit>, Vec<u8>) {
        let mut buf = vec![0u8; PEER_HEADROOM + pkt.len() + PEER_TAILROOM];
        buf[PEER_HEADROOM..PEER_HEADROOM + pkt.len()].copy_from_slice(pkt);
        let now = self.now();
        let out = self.relay.handle_client(
            now,
            self.leg,
            from,
            &buf,
            pkt.len(),
            &mut self.scratch,
            &mut self.sockets,
        );
        (out, buf)
    }

    /// What a client datagram makes the relay send to a peer: the relay
    /// socket, the peer and the bytes.
    pub fn forwarded(
        &mut self,
        from: SocketAddr,
        pkt: &[u8],
    ) -> Option<(RelayToken, SocketAddr, Vec<u8>)> {
        match self.client_rx(from, pkt) {
            (
                Some(Transmit {
                    via: Via::Relay(relay),
                    to,
                    payload: Payload::Rx(range),
                }),
                buf,
            ) => Some((relay, to, buf[range].to_vec())),
            _ => None,
        }
    }

    pub fn reply_bytes(&mut self, from: SocketAddr, pkt: &[u8]) -> Option<Vec<u8>> {
        let via = self.leg.via();
        match self.client(from, pkt) {
            Some(Transmit {
                via: v,
                to,
                payload: Payload::Reply(n),
            }) if to == from && v == via => Some(self.scratch[..n].to_vec()),
            _ => None,
        }
    }

    /// A datagram from `peer` to the relay socket bound at `relayed`.
    pub fn peer(
        &mut self,
        relayed: SocketAddr,
        peer: SocketAddr,
        payload: &[u8],
    ) -> Option<Vec<u8>> {
        let token = *self.sockets.bound.iter().find(|(_, a)| **a == relayed)?.0;
        let mut buf = vec![0u8; PEER_HEADROOM + payload.len() + PEER_TAILROOM];
        buf[PEER_HEADROOM..PEER_HEADROOM + payload.len()].copy_from_slice(payload);
        let now = self.now();
        let out = self
            .relay
            .handle_peer(now, token, peer, &mut buf, payload.len())?;
        assert_eq!(out.via, self.leg.via(), "to the client's own leg");
        let Payload::Rx(range) = out.payload else {
            panic!("peer data is forwarded in place, got {out:?}");
        };
        Some(buf[range].to_vec())
    }
}

/// How a test client proves who it is.
#[derive(Clone)]
pub(crate) enum Cred {
    None,
    Md5 { user: String, password: String },
    Sha256 { user: String, password: String },
}

/// A TURN client for tests: remembers realm and nonce, signs requests.
pub(crate) struct Client {
    pub addr: SocketAddr,
    pub cred: Cred,
    pub nonce: Vec<u8>,
    pub algorithms: Vec<u8>,
    next_tid: u8,
}

/// A decoded response: class, error code, and its raw bytes.
pub(crate) struct Resp {
    pub bytes: Vec<u8>,
}

impl Resp {
    pub fn msg(&self) -> Message<'_> {
        Message::parse(&self.bytes).expect("server replies parse")
    }
    pub fn class(&self) -> Class {
        self.msg().class()
    }
    pub fn code(&self) -> Option<u16> {
        let m = self.msg();
        match Attribute::decode(m.get(attr::ERROR_CODE)?, m.transaction_id()).ok()? {
            Attribute::ErrorCode { code, .. } => Some(code),
            _ => None,
        }
    }
    pub fn attr(&self, typ: u16) -> Option<Attribute<'_>> {
        let m = self.msg();
        Attribute::decode(m.get(typ)?, m.transaction_id()).ok()
    }
    pub fn addr(&self, typ: u16) -> Option<SocketAddr> {
        match self.attr(typ)? {
            Attribute::XorRelayedAddress(a)
            | Attribute::XorMappedAddress(a)
            | Attribute::XorPeerAddress(a)
            | Attribute::AlternateServer(a) => Some(a),
            _ => None,
        }
    }
    pub fn relayed(&self) -> Vec<SocketAddr> {
        let m = self.msg();
        m.attributes()
            .filter(|a| a.typ == attr::XOR_RELAYED_ADDRESS)
            .filter_map(|a| match Attribute::decode(a, m.transaction_id()) {
                Ok(Attribute::XorRelayedAddress(x)) => Some(x),
                _ => None,
            })
            .collect()
    }
    pub fn lifetime(&self) -> Option<u32> {
        match self.attr(attr::LIFETIME)? {
            Attribute::Lifetime(v) => Some(v),
            _ => None,
        }
    }
}

pub(crate) fn md5(user: &str, password: &str) -> Cred {
    Cred::Md5 {
        user: user.into(),
        password: password.into(),
    }
}

pub(crate) fn rest_username(expiry: u64, id: &str) -> String {
    format!("{expiry}:{id}")
}

pub(crate) fn rest_cred(expiry: u64, id: &str, secret: &str) -> Cred {
    let user = rest_username(expiry, id);
    let pw = crate::auth::key::rest_password(secret.as_bytes(), user.as_bytes());
    Cred::Md5 {
        user,
        password: String::from_utf8(pw.to_vec()).unwrap(),
    }
}

impl Client {
    pub fn new(addr: &str, cred: Cred) -> Client {
        Client {
            addr: addr.parse().unwrap(),
            cred,
            nonce: Vec::new(),
            algorithms: Vec::new(),
            next_tid: 0,
        }
    }

    pub fn tid(&mut self) -> [u8; 12] {
        self.next_tid = self.next_tid.wrapping_add(1);
        let mut t = [0x5a; 12];
        t[0] = self.next_tid;
        t[1..5].copy_from_slice(&self.addr.port().to_be_bytes().repeat(2));
        t
    }

    fn key(&self) -> Option<(Key, bool)> {
        match &self.cred {
            Cred::None => None,
            Cred::Md5 { user, password } => Some((
                derive_key(
                    PasswordAlgorithm::Md5,
                    user.as_bytes(),
                    REALM.as_bytes(),
                    password.as_bytes(),
                ),
                false,
            )),
            Cred::Sha256 { user, password } => Some((
                derive_key(
                    PasswordAlgorithm::Sha256,
                    user.as_bytes(),
                    REALM.as_bytes(),
                    password.as_bytes(),
                ),
                true,
            )),
        }
    }

    /// Builds a request: `body` adds the method's attributes; credentials
    /// and MESSAGE-INTEGRITY follow when a nonce is known.
    pub fn build(
        &self,
        method: Method,
        tid: [u8; 12],
        body: &dyn Fn(&mut MessageWriter<'_>),
    ) -> Vec<u8> {
        let mut buf = vec![0u8; 1500];
        let mut w = MessageWriter::new(&mut buf, method, Class::Request, &tid).unwrap();
        body(&mut w);
        if let (Some((key, sha)), false) = (self.key(), self.nonce.is_empty()) {
            let user = match &self.cred {
                Cred::Md5 { user, .. } | Cred::Sha256 { user, .. } => user.clone(),
                Cred::None => unreachable!(),
            };
            w.raw(attr::USERNAME, user.as_bytes()).unwrap();
            w.raw(attr::REALM, REALM.as_bytes()).unwrap();
            w.raw(attr::NONCE, &self.nonce).unwrap();
            if sha {
                w.raw(attr::PASSWORD_ALGORITHMS, &self.algorithms).unwrap();
                w.raw(attr::PASSWORD_ALGORITHM, &[0, 2, 0, 0]).unwrap();
                w.message_integrity_sha256(key.as_bytes()).unwrap();
            } else {
                w.message_integrity(key.as_bytes()).unwrap();
            }
        }
        let n = w.finish();
        buf.truncate(n);
        buf
    }

    /// Sends a request; on 401/438 learns the nonce and retries once.
    pub fn request(
        &mut self,
        h: &mut Harness,
        method: Method,
        body: &dyn Fn(&mut MessageWriter<'_>),
    ) -> Resp {
        let tid = self.tid();
        self.request_tid(h, method, tid, body)
    }

    pub fn request_tid(
        &mut self,
        h: &mut Harness,
        method: Method,
        tid: [u8; 12],
        body: &dyn Fn(&mut MessageWriter<'_>),
    ) -> Resp {
        let pkt = self.build(method, tid, body);
        let resp = Resp {
            bytes: h.reply_bytes(self.addr, &pkt).expect("a reply"),
        };
        if matches!(resp.code(), Some(401) | Some(438)) && !matches!(self.cred, Cred::None) {
            let fresh = match resp.attr(attr::NONCE) {
                Some(Attribute::Nonce(n)) => n.to_vec(),
                _ => return resp,
            };
            if fresh == self.nonce {
                return resp;
            }
            self.nonce = fresh;
            if let Some(Attribute::PasswordAlgorithms(a)) = resp.attr(attr::PASSWORD_ALGORITHMS) {
                self.algorithms = a.to_vec();
            }
            let tid = self.tid();
            let pkt = self.build(method, tid, body);
            return Resp {
                bytes: h.reply_bytes(self.addr, &pkt).expect("a reply"),
            };
        }
        resp
    }

    /// Allocate for UDP; panics unless it succeeds; returns the relayed address.
    pub fn allocate(&mut self, h: &mut Harness) -> SocketAddr {
        let r = self.request(h, Method::Allocate, &udp);
        assert_eq!(
            r.class(),
            Class::Success,
            "allocate failed with {:?}",
            r.code()
        );
        r.addr(attr::XOR_RELAYED_ADDRESS)
            .expect("XOR-RELAYED-ADDRESS")
    }

    pub fn permit(&mut self, h: &mut Harness, peer: &str) -> Resp {
        let p: SocketAddr = peer.parse().unwrap();
        self.request(h, Method::CreatePermission, &move |w| {
            w.xor_address(attr::XOR_PEER_ADDRESS, p).unwrap()
        })
    }

    pub fn bind(&mut self, h: &mut Harness, number: u16, peer: &str) -> Resp {
        let p: SocketAddr = peer.parse().unwrap();
        self.request(h, Method::ChannelBind, &move |w| {
            w.u32(attr::CHANNEL_NUMBER, u32::from(number) << 16)
                .unwrap();
            w.xor_address(attr::XOR_PEER_ADDRESS, p).unwrap();
        })
    }

    pub fn refresh(&mut self, h: &mut Harness, lifetime: u32) -> Resp {
        self.request(h, Method::Refresh, &move |w| {
            w.u32(attr::LIFETIME, lifetime).unwrap()
        })
    }

    pub fn send_indication(&mut self, peer: &str, data: &[u8]) -> Vec<u8> {
        let p: SocketAddr = peer.parse().unwrap();
        let tid = self.tid();
        let mut buf = vec![0u8; 1500];
        let mut w = MessageWriter::new(&mut buf, Method::Send, Class::Indication, &tid).unwrap();
        w.xor_address(attr::XOR_PEER_ADDRESS, p).unwrap();
        w.raw(attr::DATA, data).unwrap();
        let n = w.finish();
        buf.truncate(n);
        buf
    }
}

pub(crate) fn udp(w: &mut MessageWriter<'_>) {
    w.u32(attr::REQUESTED_TRANSPORT, 17 << 24).unwrap();
}

pub(crate) fn channel_data(number: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 4];
    let mut h = [0u8; 4];
    uturn_stun::channel::write_header(&mut h, number, payload.len() as u16);
    v.copy_from_slice(&h);
    v.extend_from_slice(payload);
    v
}

pub(crate) fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub(crate) fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}
