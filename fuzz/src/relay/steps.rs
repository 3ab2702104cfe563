//! The `relay` target's input format: a settings byte, then steps, each
//! decoded from the fuzz input by a `Reader` (which never fails) and
//! written back by `encode` (which is how the seeds are made).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use uturn::stun::Method;
use uturn::turn::{ConnId, Leg, ListenerId};

use crate::reader::{Reader, Writer};

/// Client addresses: two ports of one host, another host, an IPv6 host.
/// Each comes in on UDP listener 0 or 1, a TCP connection or a TLS one, so
/// there are sixteen 5-tuples.
pub(super) fn client_addr(c: u8) -> (Leg, SocketAddr) {
    let addrs = [
        SocketAddr::new(Ipv4Addr::new(203, 0, 113, 1).into(), 40000),
        SocketAddr::new(Ipv4Addr::new(203, 0, 113, 1).into(), 40001),
        SocketAddr::new(Ipv4Addr::new(203, 0, 113, 2).into(), 40000),
        SocketAddr::new("2001:db8:f::1".parse::<IpAddr>().unwrap(), 40000),
    ];
    let leg = match (c / 4) % 4 {
        0 => Leg::Udp(ListenerId(0)),
        1 => Leg::Udp(ListenerId(1)),
        2 => Leg::Tcp(ConnId(0)),
        _ => Leg::Tls(ConnId(1)),
    };
    (leg, addrs[usize::from(c % 4)])
}

/// Peers: allowed ones (198.51.100.0/24 and 2001:db8:100::/48 are opened by
/// the policy), denied ones in several spellings, the relay itself.
pub(super) const PEERS: &[&str] = &[
    "198.51.100.7:5000",
    "198.51.100.7:5001",
    "198.51.100.8:6000",
    "[2001:db8:100::7]:5000",
    "[::ffff:198.51.100.7]:5000",
    "127.0.0.1:5000",
    "[::ffff:127.0.0.1]:5000",
    "[64:ff9b::7f00:1]:5000",
    "[2002:7f00:1::]:5000",
    "169.254.169.254:80",
    "10.0.0.1:5000",
    "192.0.2.1:50000",
    "198.51.100.9:0",
    "[::1]:5000",
];

/// A peer: one of `PEERS`, or any IPv4 address and port.
#[derive(Clone, Debug)]
pub enum Peer {
    Listed(u8),
    Any(SocketAddrV4),
}

impl Peer {
    pub(super) fn addr(&self) -> SocketAddr {
        match self {
            Peer::Listed(i) => PEERS[usize::from(*i) % PEERS.len()].parse().unwrap(),
            Peer::Any(a) => SocketAddr::V4(*a),
        }
    }
    fn decode(r: &mut Reader<'_>) -> Peer {
        match r.u8() {
            0xFF => Peer::Any(SocketAddrV4::new(r.u32().into(), r.u16())),
            i => Peer::Listed(i),
        }
    }
    fn encode(&self, w: &mut Writer) {
        match self {
            Peer::Listed(i) => {
                w.u8(*i);
            }
            Peer::Any(a) => {
                w.u8(0xFF).u32((*a.ip()).into()).u16(a.port());
            }
        }
    }
}

/// An attribute the harness puts in a request before the integrity.
#[derive(Clone, Debug)]
pub enum ReqAttr {
    Transport(u8),
    Lifetime(u32),
    Family(bool),
    AdditionalFamily(bool),
    EvenPort(bool),
    DontFragment,
    /// A RESERVATION-TOKEN: the `n`-th one the relay handed out (any, if
    /// none yet).
    Reservation(u8),
    Channel(u16),
    PeerAddress(Peer),
    Raw {
        typ: u16,
        value: Vec<u8>,
    },
}

impl ReqAttr {
    fn decode(r: &mut Reader<'_>) -> ReqAttr {
        match r.u8() % 10 {
            0 => ReqAttr::Transport(r.u8()),
            1 => ReqAttr::Lifetime(match r.u8() % 6 {
                0 => 0,
                1 => 1,
                2 => 300,
                3 => 600,
                4 => 3600,
                _ => r.u32(),
            }),
            2 => ReqAttr::Family(r.bool()),
            3 => ReqAttr::AdditionalFamily(r.bool()),
            4 => ReqAttr::EvenPort(r.bool()),
            5 => ReqAttr::DontFragment,
            6 => ReqAttr::Reservation(r.u8()),
            7 => ReqAttr::Channel(match r.u8() {
                0xFF => r.u16(),
                n => 0x4000 + u16::from(n % 8),
            }),
            8 => ReqAttr::PeerAddress(Peer::decode(r)),
            _ => ReqAttr::Raw {
                typ: r.u16(),
                value: r.short_bytes().to_vec(),
            },
        }
    }
    fn encode(&self, w: &mut Writer) {
        match self {
            ReqAttr::Transport(p) => {
                w.u8(0).u8(*p);
            }
            ReqAttr::Lifetime(v) => {
                w.u8(1).u8(5).u32(*v);
            }
            ReqAttr::Family(v6) => {
                w.u8(2).u8(u8::from(*v6));
            }
            ReqAttr::AdditionalFamily(v6) => {
                w.u8(3).u8(u8::from(*v6));
            }
            ReqAttr::EvenPort(r) => {
                w.u8(4).u8(u8::from(*r));
            }
            ReqAttr::DontFragment => {
                w.u8(5);
            }
            ReqAttr::Reservation(n) => {
                w.u8(6).u8(*n);
            }
            ReqAttr::Channel(n) => {
                w.u8(7).u8(0xFF).u16(*n);
            }
            ReqAttr::PeerAddress(p) => {
                w.u8(8);
                p.encode(w);
            }
            ReqAttr::Raw { typ, value } => {
                w.u8(9).u16(*typ).short_bytes(value);
            }
        }
    }
}

/// Who signs a request.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Cred {
    AliceMd5,
    AliceSha256,
    AliceUserhash,
    BobMd5,
    /// MD5, named explicitly with PASSWORD-ALGORITHM(S).
    BobMd5Declared,
    RestValid,
    RestExpired,
    AliceWrongPassword,
}

pub(super) const CREDS: [Cred; 8] = [
    Cred::AliceMd5,
    Cred::AliceSha256,
    Cred::AliceUserhash,
    Cred::BobMd5,
    Cred::BobMd5Declared,
    Cred::RestValid,
    Cred::RestExpired,
    Cred::AliceWrongPassword,
];

pub(super) const METHODS: [Method; 6] = [
    Method::Allocate,
    Method::Refresh,
    Method::CreatePermission,
    Method::ChannelBind,
    Method::Binding,
    Method::Other(0x00A),
];

/// A request the harness builds and signs.
#[derive(Clone, Debug)]
pub struct Request {
    pub client: u8,
    pub method: u8,
    pub tid: u8,
    pub cred: u8,
    pub attrs: Vec<ReqAttr>,
    /// Bit 0: FINGERPRINT; bit 1: an attribute after the integrity (to be
    /// ignored); bit 2: no credentials at all; bit 3: flip one byte.
    pub flags: u8,
    pub flip: u16,
}

/// One step of a run.
#[derive(Clone, Debug)]
pub enum Step {
    /// A datagram from client `client` as the fuzzer wrote it.
    Raw {
        client: u8,
        bytes: Vec<u8>,
    },
    Request(Request),
    Send {
        client: u8,
        peer: Peer,
        data: Vec<u8>,
        fingerprint: bool,
    },
    ChannelData {
        client: u8,
        number: u16,
        payload: Vec<u8>,
        padded: bool,
    },
    /// A datagram from `peer` on the `token`-th relay socket seen bound
    /// (0xFF: a token the relay never made).
    Peer {
        token: u8,
        peer: Peer,
        payload: Vec<u8>,
        /// Claim a length longer than the buffer handed over.
        overlong: bool,
    },
    Advance {
        secs: u16,
    },
    /// The next `count` binds fail (AddrInUse, or another error).
    FailBinds {
        count: u8,
        in_use: bool,
    },
    /// The last signed request of client `from`, sent again by client `to`.
    Replay {
        from: u8,
        to: u8,
    },
    Drain,
}

impl Step {
    pub fn decode(r: &mut Reader<'_>) -> Step {
        match r.u8() % 9 {
            0 => Step::Raw {
                client: r.u8(),
                bytes: {
                    let n = usize::from(r.u16() % 1500);
                    r.bytes(n).to_vec()
                },
            },
            1 => {
                let client = r.u8();
                let method = r.u8();
                let tid = r.u8();
                let cred = r.u8();
                let n = r.u8() % 8;
                let attrs = (0..n).map(|_| ReqAttr::decode(r)).collect();
                let flags = r.u8();
                let flip = if flags & 8 != 0 { r.u16() } else { 0 };
                Step::Request(Request {
                    client,
                    method,
                    tid,
                    cred,
                    attrs,
                    flags,
                    flip,
                })
            }
            2 => Step::Send {
                client: r.u8(),
                peer: Peer::decode(r),
                data: r.short_bytes().to_vec(),
                fingerprint: r.bool(),
            },
            3 => Step::ChannelData {
                client: r.u8(),
                number: match r.u8() {
                    0xFF => r.u16(),
                    n => 0x4000 + u16::from(n % 8),
                },
                payload: r.short_bytes().to_vec(),
                padded: r.bool(),
            },
            4 => Step::Peer {
                token: r.u8(),
                peer: Peer::decode(r),
                payload: r.short_bytes().to_vec(),
                overlong: r.u8() == 0xFF,
            },
            5 => Step::Advance {
                secs: match r.u8() % 8 {
                    0 => 1,
                    1 => 30,
                    2 => 299,
                    3 => 301,
                    4 => 600,
                    5 => 3600,
                    _ => r.u16(),
                },
            },
            6 => Step::FailBinds {
                count: r.u8() % 20,
                in_use: r.bool(),
            },
            7 => Step::Replay {
                from: r.u8(),
                to: r.u8(),
            },
            _ => Step::Drain,
        }
    }

    pub fn encode(&self, w: &mut Writer) {
        match self {
            Step::Raw { client, bytes } => {
                w.u8(0).u8(*client).u16(bytes.len() as u16);
                w.out.extend_from_slice(bytes);
            }
            Step::Request(q) => {
                w.u8(1).u8(q.client).u8(q.method).u8(q.tid).u8(q.cred);
                w.u8(q.attrs.len() as u8);
                for a in &q.attrs {
                    a.encode(w);
                }
                w.u8(q.flags);
                if q.flags & 8 != 0 {
                    w.u16(q.flip);
                }
            }
            Step::Send {
                client,
                peer,
                data,
                fingerprint,
            } => {
                w.u8(2).u8(*client);
                peer.encode(w);
                w.short_bytes(data).u8(u8::from(*fingerprint));
            }
            Step::ChannelData {
                client,
                number,
                payload,
                padded,
            } => {
                w.u8(3).u8(*client).u8(0xFF).u16(*number);
                w.short_bytes(payload).u8(u8::from(*padded));
            }
            Step::Peer {
                token,
                peer,
                payload,
                overlong,
            } => {
                w.u8(4).u8(*token);
                peer.encode(w);
                w.short_bytes(payload).u8(if *overlong { 0xFF } else { 0 });
            }
            Step::Advance { secs } => {
                w.u8(5).u8(7).u16(*secs);
            }
            Step::FailBinds { count, in_use } => {
                w.u8(6).u8(*count).u8(u8::from(*in_use));
            }
            Step::Replay { from, to } => {
                w.u8(7).u8(*from).u8(*to);
            }
            Step::Drain => {
                w.u8(8);
            }
        }
    }
}

/// The settings byte at the front of an input.
#[derive(Copy, Clone, Debug)]
pub struct Settings {
    pub offer_sha256: bool,
    pub relay_v6: bool,
    pub tight_quotas: bool,
    pub low_rate: bool,
}

impl Settings {
    pub fn from_byte(b: u8) -> Settings {
        Settings {
            offer_sha256: b & 1 == 0,
            relay_v6: b & 2 == 0,
            tight_quotas: b & 4 == 0,
            low_rate: b & 8 != 0,
        }
    }
    pub fn to_byte(self) -> u8 {
        u8::from(!self.offer_sha256)
            | u8::from(!self.relay_v6) << 1
            | u8::from(!self.tight_quotas) << 2
            | u8::from(self.low_rate) << 3
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings::from_byte(0)
    }
}

/// An input: settings, then steps.
pub fn encode(settings: Settings, steps: &[Step]) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(settings.to_byte());
    for s in steps {
        s.encode(&mut w);
    }
    w.out
}
