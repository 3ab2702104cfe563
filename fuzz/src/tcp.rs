//! `tcp_alloc`: RFC 6062 on the sans-IO `Relay`. One client holds a TCP
//! allocation on a TCP control connection (set up by the harness, signed
//! with a static user's key); the input is then a sequence of operations:
//! Connect to a peer from the input, the io layer's outcome for a connect,
//! a peer connecting in on a relay token from the input, CreatePermission,
//! a ConnectionBind (signed for an id, or raw bytes), a close, clock moves.
//!
//! After every step it asserts: every connection the relay asked the io
//! layer for goes to a peer the policy allows, from the allocation's
//! relayed address; a peer let in holds a permission; live peer
//! connections stay within the allocation's limit; every close names a
//! connection the relay had; a Connect the sweep gives up on is answered
//! with a signed 447 to the control connection; no panic whatever the
//! bytes.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uturn::auth::{derive_key, AuthConfig, Authenticator, PasswordAlgorithm, StaticUser};
use uturn::policy::{AllocationLedger, PeerPolicy, Quotas};
use uturn::stun::attr::{self, Attribute};
use uturn::stun::{Class, Message, MessageWriter, Method};
use uturn::turn::Transport;
use uturn::turn::{
    ConnId, ConnectionId, Leg, Now, Payload, Relay, RelaySockets, RelayToken, Settings, TurnConfig,
    MAX_REPLY, PEER_HEADROOM, PEER_TAILROOM,
};

use crate::reader::Reader;

const REALM: &str = "fuzz.realm";
const RELAY: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const CLIENT: &str = "203.0.113.9:40000";
const LEG: Leg = Leg::Tcp(ConnId(1));
const MAX_STEPS: usize = 64;
const PEER_LIMIT: u32 = 3;

#[derive(Default)]
struct Sockets {
    listening: Vec<(RelayToken, SocketAddr)>,
    connects: Vec<(ConnectionId, SocketAddr, SocketAddr)>,
    live: HashSet<u32>,
    fail_connect: bool,
}

impl RelaySockets for Sockets {
    fn bind(&mut self, _: SocketAddr, _: RelayToken, _: bool) -> std::io::Result<()> {
        panic!("a TCP allocation binds no UDP socket")
    }
    fn close(&mut self, token: RelayToken) {
        self.listening.retain(|(t, _)| *t != token);
    }
    fn listen_tcp(&mut self, addr: SocketAddr, token: RelayToken) -> std::io::Result<()> {
        self.listening.push((token, addr));
        Ok(())
    }
    fn connect_tcp(
        &mut self,
        _: RelayToken,
        id: ConnectionId,
        from: SocketAddr,
        peer: SocketAddr,
    ) -> std::io::Result<()> {
        if self.fail_connect {
            return Err(std::io::ErrorKind::AddrInUse.into());
        }
        assert!(
            self.live.insert(id.0),
            "connection id {id:?} reused while live"
        );
        self.connects.push((id, from, peer));
        Ok(())
    }
    fn close_tcp(&mut self, id: ConnectionId) {
        assert!(
            self.live.remove(&id.0),
            "closing {id:?}, which the relay never had"
        );
    }
}

struct Harness {
    relay: Relay,
    sockets: Sockets,
    policy: Arc<PeerPolicy>,
    t0: Instant,
    secs: u64,
    nonce: Vec<u8>,
    key: Vec<u8>,
    scratch: Vec<u8>,
    tid: u32,
}

impl Harness {
    fn now(&self) -> Now {
        Now {
            at: self.t0 + Duration::from_secs(self.secs),
            unix: 1_800_000_000 + self.secs,
        }
    }

    fn message(
        &mut self,
        method: Method,
        sign: bool,
        body: impl FnOnce(&mut MessageWriter<'_>),
    ) -> Vec<u8> {
        self.tid += 1;
        let mut tid = [7u8; 12];
        tid[..4].copy_from_slice(&self.tid.to_be_bytes());
        let mut buf = vec![0u8; 1024];
        let mut w = MessageWriter::new(&mut buf, method, Class::Request, &tid).unwrap();
        body(&mut w);
        if sign {
            w.raw(attr::USERNAME, b"alice").unwrap();
            w.raw(attr::REALM, REALM.as_bytes()).unwrap();
            w.raw(attr::NONCE, &self.nonce).unwrap();
            w.message_integrity(&self.key).unwrap();
        }
        let n = w.finish();
        buf.truncate(n);
        buf
    }

    /// A request on the control connection; the reply, if one came now.
    fn control(&mut self, pkt: &[u8]) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; PEER_HEADROOM + pkt.len() + PEER_TAILROOM];
        buf[PEER_HEADROOM..PEER_HEADROOM + pkt.len()].copy_from_slice(pkt);
        let client: SocketAddr = CLIENT.parse().unwrap();
        let now = self.now();
        let t = self.relay.handle_client(
            now,
            LEG,
            client,
            &buf,
            pkt.len(),
            &mut self.scratch,
            &mut self.sockets,
        )?;
        match t.payload {
            Payload::Reply(n) => Some(self.scratch[..n].to_vec()),
            Payload::Rx(_) => {
                panic!("a TCP allocation forwards nothing from its control connection")
            }
        }
    }

    fn new() -> Harness {
        let key = derive_key(PasswordAlgorithm::Md5, b"alice", REALM.as_bytes(), b"pw");
        let user = StaticUser {
            name: "alice".into(),
            key_md5: key.as_bytes().try_into().ok(),
            key_sha256: None,
        };
        let auth = Authenticator::new(
            AuthConfig {
                realm: REALM.into(),
                users: vec![user],
                rest_secrets: Vec::new(),
                offer_sha256: false,
                nonce_lifetime_secs: 600,
            },
            [3; 32],
        );
        let policy = Arc::new(PeerPolicy::new(
            vec![
                "198.51.100.0/24".parse().unwrap(),
                "10.1.0.0/16".parse().unwrap(),
            ],
            vec![],
            &[RELAY.into()],
        ));
        let quotas = Quotas {
            peer_connections_per_allocation: PEER_LIMIT,
            pending_connections_per_allocation: 2,
            ..Quotas::default()
        };
        let settings = Settings {
            auth: Arc::new(auth),
            policy: Arc::clone(&policy),
            quotas,
            max_lifetime: Duration::from_secs(3600),
            software: None,
            unauth_rate: 1000,
            unauth_burst: 1000,
        };
        let cfg = TurnConfig {
            relay_v4: Some(RELAY),
            relay_v6: None,
            ports: 50000..=50015,
        };
        let mut relay = Relay::new(cfg, settings, Arc::new(AllocationLedger::new(quotas)));
        relay.seed(1);
        let mut h = Harness {
            relay,
            sockets: Sockets::default(),
            policy,
            t0: Instant::now(),
            secs: 0,
            nonce: Vec::new(),
            key: key.as_bytes().to_vec(),
            scratch: vec![0; MAX_REPLY],
            tid: 0,
        };
        let tcp =
            |w: &mut MessageWriter<'_>| w.raw(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0]).unwrap();
        let first = h.message(Method::Allocate, false, tcp);
        let challenge = h.control(&first).expect("a 401");
        let m = Message::parse(&challenge).unwrap();
        if let Some(Ok(Attribute::Nonce(n))) = m
            .get(attr::NONCE)
            .map(|a| Attribute::decode(a, m.transaction_id()))
        {
            h.nonce = n.to_vec();
        }
        let alloc = h.message(Method::Allocate, true, tcp);
        let r = h.control(&alloc).expect("an answer");
        assert_eq!(Message::parse(&r).unwrap().class(), Class::Success);
        h
    }

    fn peer(r: &mut Reader<'_>) -> SocketAddr {
        let ips: [IpAddr; 6] = [
            "198.51.100.7".parse().unwrap(),
            "198.51.100.8".parse().unwrap(),
            "10.1.2.3".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
            RELAY.into(),
            "169.254.169.254".parse().unwrap(),
        ];
        let ip = match r.u8() % 8 {
            6 => IpAddr::from(r.u32().to_be_bytes()),
            7 => "::ffff:198.51.100.7".parse().unwrap(),
            i => ips[usize::from(i)],
        };
        SocketAddr::new(ip, r.u16())
    }

    fn some_id(&self, r: &mut Reader<'_>) -> ConnectionId {
        let i = usize::from(r.u8());
        match self
            .sockets
            .connects
            .get(i % self.sockets.connects.len().max(1))
        {
            Some((id, _, _)) if i < 200 => *id,
            _ => ConnectionId(r.u32()),
        }
    }
}

pub fn run(data: &[u8]) {
    let mut h = Harness::new();
    let mut r = Reader::new(data);
    for _ in 0..MAX_STEPS {
        if r.is_empty() {
            break;
        }
        match r.u8() % 10 {
            0 => {
                let peer = Harness::peer(&mut r);
                h.sockets.fail_connect = r.u8() == 0xFF;
                let req = h.message(Method::Connect, true, |w| {
                    w.xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap()
                });
                h.control(&req);
            }
            1 => {
                let id = h.some_id(&mut r);
                let ok = r.bool();
                let now = h.now();
                let answered = h.relay.tcp_connected(now, id, ok, &mut h.scratch).is_some();
                if answered && !ok {
                    // 447: the relay has forgotten it.
                    h.sockets.live.remove(&id.0);
                }
                if !answered && ok {
                    // Not waited for: the io layer closes it, the relay forgets.
                    h.relay.tcp_closed(id);
                    h.sockets.live.remove(&id.0);
                }
            }
            2 => {
                let token = match h.sockets.listening.first() {
                    Some((t, _)) if r.bool() => *t,
                    _ => RelayToken(u64::from(r.u32())),
                };
                let peer = Harness::peer(&mut r);
                let now = h.now();
                if let Some((id, _)) = h.relay.tcp_accepted(now, token, peer, &mut h.scratch) {
                    assert!(
                        h.policy.check(peer).is_ok(),
                        "{peer} let in past the policy"
                    );
                    assert!(h.sockets.live.insert(id.0), "id {id:?} reused");
                }
            }
            3 => {
                let peer = Harness::peer(&mut r);
                let req = h.message(Method::CreatePermission, true, |w| {
                    w.xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap()
                });
                h.control(&req);
            }
            4 => {
                let id = h.some_id(&mut r);
                let sign = r.bool();
                let req = h.message(Method::ConnectionBind, sign, |w| {
                    w.u32(attr::CONNECTION_ID, id.0).unwrap()
                });
                let now = h.now();
                h.relay
                    .connection_bind(now, Transport::Tcp, &req, &mut h.scratch);
            }
            5 => {
                let raw = r.short_bytes().to_vec();
                let now = h.now();
                h.relay
                    .connection_bind(now, Transport::Tls, &raw, &mut h.scratch);
                h.control(&raw);
            }
            6 => {
                let id = h.some_id(&mut r);
                h.relay.tcp_closed(id);
                h.sockets.live.remove(&id.0);
            }
            7 => {
                h.secs += u64::from(r.u8() % 40);
                let now = h.now();
                h.relay.handle_timeout(now, &mut h.sockets);
                // Connects the sweep gave up on: a signed 447 each, for the
                // control connection (their sockets were closed above).
                let mut answers = 0;
                while let Some(t) = h.relay.take_connect_timeout(&mut h.scratch) {
                    answers += 1;
                    assert!(answers <= PEER_LIMIT, "more 447s than connections");
                    assert_eq!(t.to, CLIENT.parse::<SocketAddr>().unwrap());
                    let Payload::Reply(n) = t.payload else {
                        panic!("a 447 that is not a reply: {t:?}")
                    };
                    let m = Message::parse(&h.scratch[..n]).expect("a STUN answer");
                    assert_eq!((m.method(), m.class()), (Method::Connect, Class::Error));
                    assert!(m.get(attr::MESSAGE_INTEGRITY).is_some(), "an unsigned 447");
                }
            }
            8 => {
                let req = h.message(Method::Refresh, true, |w| w.u32(attr::LIFETIME, 0).unwrap());
                h.control(&req);
            }
            _ => {
                let client: SocketAddr = CLIENT.parse().unwrap();
                h.relay.connection_closed(LEG, client, &mut h.sockets);
            }
        }
        for (_, from, peer) in &h.sockets.connects {
            assert!(
                h.policy.check(*peer).is_ok(),
                "connected to {peer} past the policy"
            );
            assert_eq!(
                from.ip(),
                IpAddr::from(RELAY),
                "a connection not from the relayed address"
            );
        }
        assert!(
            h.relay.tcp_connection_count() <= PEER_LIMIT as usize,
            "{} peer connections over the limit",
            h.relay.tcp_connection_count()
        );
    }
}
