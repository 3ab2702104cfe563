//! A `turn::Relay` with one authenticated allocation, a channel bound to one
//! peer and a permission for a second peer, built through the public API
//! only. Shared by the allocation-counting tests and the fast-path bench,
//! each of which uses a part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uturn::auth::{derive_key, AuthConfig, Authenticator, PasswordAlgorithm, StaticUser};
use uturn::policy::{AllocationLedger, PeerPolicy, Quotas};
use uturn::stun::{attr, Attribute, Class, Message, MessageWriter, Method};
use uturn::turn::{
    Leg, ListenerId, Now, Payload, Relay, RelaySockets, RelayToken, Settings, Transmit, TurnConfig,
    Via, MAX_REPLY, PEER_HEADROOM, PEER_TAILROOM,
};

pub const CHANNEL: u16 = 0x4001;
const REALM: &str = "bench";

/// Relay sockets that only remember the last token bound.
#[derive(Default)]
pub struct Sockets {
    pub last: Option<RelayToken>,
}

impl RelaySockets for Sockets {
    fn bind(&mut self, _addr: SocketAddr, token: RelayToken, _df: bool) -> std::io::Result<()> {
        self.last = Some(token);
        Ok(())
    }
    fn close(&mut self, _token: RelayToken) {}
}

pub struct FastPath {
    pub relay: Relay,
    pub sockets: Sockets,
    pub token: RelayToken,
    pub client: SocketAddr,
    /// Bound to `CHANNEL`.
    pub peer: SocketAddr,
    /// Permitted, no channel: its data goes out as Data indications.
    pub peer_no_channel: SocketAddr,
    pub now: Now,
    pub scratch: Vec<u8>,
    /// A receive buffer for control requests, laid out as the io layer does.
    rx: Vec<u8>,
}

fn request(
    method: Method,
    tid: u8,
    nonce: &[u8],
    key: &[u8],
    body: &dyn Fn(&mut MessageWriter<'_>),
) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let mut w =
        MessageWriter::new(&mut buf, method, Class::Request, &[tid; 12]).expect("header fits");
    body(&mut w);
    if !nonce.is_empty() {
        w.raw(attr::USERNAME, b"bench").expect("fits");
        w.raw(attr::REALM, REALM.as_bytes()).expect("fits");
        w.raw(attr::NONCE, nonce).expect("fits");
        w.message_integrity(key).expect("fits");
    }
    let n = w.finish();
    buf.truncate(n);
    buf
}

fn bench_key() -> uturn::auth::Key {
    derive_key(PasswordAlgorithm::Md5, b"bench", REALM.as_bytes(), b"pw")
}

/// The authenticator every `FastPath` uses: one static user, "bench".
pub fn authenticator() -> Authenticator {
    Authenticator::new(
        AuthConfig {
            realm: REALM.into(),
            users: vec![StaticUser {
                name: "bench".into(),
                key_md5: bench_key().as_bytes().try_into().ok(),
                key_sha256: None,
            }],
            rest_secrets: vec![],
            offer_sha256: false,
            nonce_lifetime_secs: 600,
        },
        [9; 32],
    )
}

/// REQUESTED-TRANSPORT UDP, the body of every Allocate here.
fn udp(w: &mut MessageWriter<'_>) {
    w.u32(attr::REQUESTED_TRANSPORT, 17 << 24).expect("fits");
}

impl FastPath {
    /// Set up after `others` allocations for other clients were made first
    /// (so look-ups run against a table of `others + 1`).
    pub fn with_other_allocations(others: usize) -> FastPath {
        let key = bench_key();
        let auth = authenticator();
        let policy = PeerPolicy::new(vec!["198.51.100.0/24".parse().expect("cidr")], vec![], &[]);
        let quotas = Quotas {
            allocations_per_user: 1_000_000,
            total_allocations: 1_000_000,
            ..Quotas::default()
        };
        let cfg = TurnConfig {
            relay_v4: Some("192.0.2.1".parse().expect("ip")),
            relay_v6: None,
            ports: 10000..=65000,
        };
        let settings = Settings {
            auth: Arc::new(auth),
            policy: Arc::new(policy),
            quotas,
            max_lifetime: Duration::from_secs(3600),
            software: None,
            unauth_rate: 1000,
            unauth_burst: 1000,
        };
        let relay = Relay::new(cfg, settings, Arc::new(AllocationLedger::new(quotas)));
        let mut fp = FastPath {
            relay,
            sockets: Sockets::default(),
            token: RelayToken(0),
            client: "203.0.113.5:40000".parse().expect("addr"),
            peer: "198.51.100.7:5000".parse().expect("addr"),
            peer_no_channel: "198.51.100.8:6000".parse().expect("addr"),
            now: Now {
                at: Instant::now(),
                unix: 1_800_000_000,
            },
            scratch: vec![0; MAX_REPLY],
            rx: vec![0; PEER_HEADROOM + 2048 + PEER_TAILROOM],
        };
        let k = key.as_bytes();
        let main_client = fp.client;
        for i in 0..others {
            // One address per client: replies to unauthenticated requests
            // are rate-limited per source address.
            let n = i as u32 + 1;
            fp.client = SocketAddr::from(([100, (n >> 16) as u8, (n >> 8) as u8, n as u8], 40000));
            fp.allocate(k);
        }
        fp.client = main_client;
        let nonce = fp.allocate(k);
        fp.token = fp.sockets.last.expect("a relay socket was bound");
        let (peer, other) = (fp.peer, fp.peer_no_channel);
        fp.expect_success(&request(Method::ChannelBind, 3, &nonce, k, &move |w| {
            w.u32(attr::CHANNEL_NUMBER, u32::from(CHANNEL) << 16)
                .expect("fits");
            w.xor_address(attr::XOR_PEER_ADDRESS, peer).expect("fits");
        }));
        fp.expect_success(&request(
            Method::CreatePermission,
            4,
            &nonce,
            k,
            &move |w| w.xor_address(attr::XOR_PEER_ADDRESS, other).expect("fits"),
        ));
        fp
    }

    /// The 401 round and an Allocate for `self.client`; returns the nonce.
    fn allocate(&mut self, key: &[u8]) -> Vec<u8> {
        let nonce = self.challenge();
        self.expect_success(&request(Method::Allocate, 2, &nonce, key, &udp));
        nonce
    }

    /// The 401 round for `self.client`: the nonce it hands out (stateless,
    /// nothing is kept on the server).
    fn challenge(&mut self) -> Vec<u8> {
        let challenge = self.control(&request(Method::Allocate, 1, b"", b"", &udp));
        let m = Message::parse(&challenge).expect("401 parses");
        match Attribute::decode(m.get(attr::NONCE).expect("NONCE"), m.transaction_id()) {
            Ok(Attribute::Nonce(n)) => n.to_vec(),
            other => panic!("no nonce: {other:?}"),
        }
    }

    /// The two requests that leave `client` an idle allocation with one
    /// permission, for `peer`: Allocate and CreatePermission, signed with
    /// the nonce of a 401 round done here.
    pub fn idle_allocation_requests(
        &mut self,
        client: SocketAddr,
        peer: SocketAddr,
    ) -> [Vec<u8>; 2] {
        let key = bench_key();
        let k = key.as_bytes();
        let main_client = std::mem::replace(&mut self.client, client);
        let nonce = self.challenge();
        self.client = main_client;
        [
            request(Method::Allocate, 5, &nonce, k, &udp),
            request(Method::CreatePermission, 6, &nonce, k, &move |w| {
                w.xor_address(attr::XOR_PEER_ADDRESS, peer).expect("fits")
            }),
        ]
    }

    /// Feeds a control request from `client`: true when it is answered with
    /// a success (checked in place, without allocating).
    pub fn control_succeeds(&mut self, client: SocketAddr, pkt: &[u8]) -> bool {
        let n = self.request_from(client, pkt);
        n > 0 && Message::parse(&self.scratch[..n]).is_ok_and(|m| m.class() == Class::Success)
    }

    fn control(&mut self, pkt: &[u8]) -> Vec<u8> {
        let n = self.request_from(self.client, pkt);
        assert!(n > 0, "expected a reply");
        self.scratch[..n].to_vec()
    }

    fn expect_success(&mut self, pkt: &[u8]) {
        let reply = self.control(pkt);
        let m = Message::parse(&reply).expect("reply parses");
        assert_eq!(m.class(), Class::Success, "set-up request refused");
    }

    /// An unauthenticated Allocate, as a client's first request (or a
    /// flood) sends it: the relay answers 401 with a fresh nonce.
    pub fn unauthenticated_allocate() -> Vec<u8> {
        request(Method::Allocate, 9, b"", b"", &udp)
    }

    /// One request from `client`; returns the length of the reply (0: none).
    /// The request is copied into a receive buffer first (no allocation).
    pub fn request_from(&mut self, client: SocketAddr, pkt: &[u8]) -> usize {
        let Some(room) = self.rx.get_mut(PEER_HEADROOM..PEER_HEADROOM + pkt.len()) else {
            return 0;
        };
        room.copy_from_slice(pkt);
        match self.relay.handle_client(
            self.now,
            Leg::Udp(ListenerId(0)),
            client,
            &self.rx,
            pkt.len(),
            &mut self.scratch,
            &mut self.sockets,
        ) {
            Some(Transmit {
                via: Via::Listener(_),
                payload: Payload::Reply(n),
                ..
            }) => n,
            _ => 0,
        }
    }

    /// A ChannelData datagram from the client, in a receive buffer laid out
    /// as the io layer lays it out (headroom, datagram, tailroom).
    pub fn channel_data(&self, payload_len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; PEER_HEADROOM + 4 + payload_len + PEER_TAILROOM];
        let mut h = [0u8; 4];
        uturn::stun::channel::write_header(&mut h, CHANNEL, payload_len as u16);
        buf[PEER_HEADROOM..PEER_HEADROOM + 4].copy_from_slice(&h);
        buf
    }

    /// A receive buffer laid out as the io layer lays it out for a peer datagram.
    pub fn peer_buffer(payload_len: usize) -> Vec<u8> {
        vec![0u8; PEER_HEADROOM + payload_len + PEER_TAILROOM]
    }

    /// One client → peer packet (`buf` from `channel_data`); returns the
    /// payload length forwarded.
    pub fn client_to_peer(&mut self, buf: &[u8]) -> usize {
        let len = buf.len() - PEER_HEADROOM - PEER_TAILROOM;
        match self.relay.handle_client(
            self.now,
            Leg::Udp(ListenerId(0)),
            self.client,
            buf,
            len,
            &mut self.scratch,
            &mut self.sockets,
        ) {
            Some(Transmit {
                via: Via::Relay(_),
                payload: Payload::Rx(range),
                ..
            }) => range.len(),
            _ => 0,
        }
    }

    /// One peer → client packet from `peer`; returns the length of the framed message.
    pub fn peer_to_client(&mut self, peer: SocketAddr, buf: &mut [u8], len: usize) -> usize {
        self.relay
            .handle_peer(self.now, self.token, peer, buf, len)
            .map_or(0, |out| match out.payload {
                Payload::Rx(range) => range.len(),
                Payload::Reply(_) => 0,
            })
    }
}
