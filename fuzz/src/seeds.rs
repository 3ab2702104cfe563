//! The seed corpora, built in code so that they stay in step with the
//! codec and with the relay target's input format. `make-seeds` writes them
//! under `seeds/<target>/`; the tests below run every seed through its
//! target's checks.

use std::net::SocketAddr;

use uturn::stun::attr;
use uturn::stun::channel;
use uturn::stun::{Class, MessageWriter, Method};

use crate::relay::{self, Peer, ReqAttr, Request, Settings, Step};

/// Published test vectors: RFC 5769 §2.1–§2.4 and RFC 8489 Appendix B.1 as
/// corrected by Errata ID 6268 (the same bytes as tests/stun_vectors.rs).
const VECTORS: &[(&str, &str)] = &[
    ("rfc5769-request", "000100582112a442b7e7a701bc34d686fa87dfae802200105354554e207465737420636c69656e74002400046e0001ff80290008932ff9b151263b36000600096576746a3a68367659202020000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf"),
    ("rfc5769-response-v4", "0101003c2112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220002000080001a147e112a643000800142b91f599fd9e90c38c7489f92af9ba53f06be7d780280004c07d4c96"),
    ("rfc5769-response-v6", "010100482112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d900080014a382954e4be67bf11784c97c8292c275bfe3ed4180280004c8fb0b4c"),
    ("rfc5769-long-term", "000100602112a44278ad3433c6ad72c029da412e00060012e3839ee38388e383aae38383e382afe382b900000015001c662f2f3439396b39353464364f4c33346f4c394653547679363473410014000b6578616d706c652e6f72670000080014f67024656dd64a3e02b8e0712e85c9a28ca89666"),
    ("rfc8489-b1-erratum", "000100902112a44278ad3433c6ad72c029da412e001e00204a3cf38fef6992bda952c6780417da0f24819415569e60b205c46e41407f1704001500296f624d61744a6f733241414143662f2f3439396b39353464364f4c33346f4c394653547679363473410000000014000b6578616d706c652e6f726700001d000400020000001c0020b5c7bf005b6c52a21c51c5e892f81924136296cb927c43149309278cc6518e65"),
];

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// One message built with the crate's writer; `body` adds the attributes.
fn message(method: Method, class: Class, body: impl FnOnce(&mut MessageWriter<'_>)) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let mut w = MessageWriter::new(&mut buf, method, class, &[0x42; 12]).expect("room");
    body(&mut w);
    let n = w.finish();
    buf.truncate(n);
    buf
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("an address")
}

fn channel_data(number: u16, payload: &[u8], pad: bool) -> Vec<u8> {
    let mut header = [0u8; 4];
    channel::write_header(&mut header, number, payload.len() as u16);
    let mut v = header.to_vec();
    v.extend_from_slice(payload);
    if pad {
        v.resize((v.len() + 3) & !3, 0);
    }
    v
}

/// Messages of the kinds the end-to-end tests exchange.
fn turn_messages() -> Vec<(&'static str, Vec<u8>)> {
    let key = crate::codec::KEY;
    vec![
        (
            "binding-request",
            message(Method::Binding, Class::Request, |w| {
                w.fingerprint().unwrap();
            }),
        ),
        (
            "allocate-request-signed",
            message(Method::Allocate, Class::Request, |w| {
                w.raw(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).unwrap();
                w.u32(attr::LIFETIME, 600).unwrap();
                w.raw(attr::EVEN_PORT, &[0x80]).unwrap();
                w.raw(attr::DONT_FRAGMENT, &[]).unwrap();
                w.raw(attr::ADDITIONAL_ADDRESS_FAMILY, &[2, 0, 0, 0])
                    .unwrap();
                w.raw(attr::USERNAME, b"alice").unwrap();
                w.raw(attr::REALM, relay::REALM.as_bytes()).unwrap();
                w.raw(attr::NONCE, b"obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA")
                    .unwrap();
                w.raw(attr::PASSWORD_ALGORITHMS, &[0, 2, 0, 0, 0, 1, 0, 0])
                    .unwrap();
                w.raw(attr::PASSWORD_ALGORITHM, &[0, 2, 0, 0]).unwrap();
                w.message_integrity(key).unwrap();
                w.message_integrity_sha256(key).unwrap();
                w.fingerprint().unwrap();
            }),
        ),
        (
            "allocate-success",
            message(Method::Allocate, Class::Success, |w| {
                w.xor_address(attr::XOR_RELAYED_ADDRESS, addr("192.0.2.1:50000"))
                    .unwrap();
                w.xor_address(attr::XOR_RELAYED_ADDRESS, addr("[2001:db8::1]:50001"))
                    .unwrap();
                w.u32(attr::LIFETIME, 600).unwrap();
                w.raw(attr::RESERVATION_TOKEN, &[1, 2, 3, 4, 5, 6, 7, 8])
                    .unwrap();
                w.xor_address(attr::XOR_MAPPED_ADDRESS, addr("203.0.113.1:40000"))
                    .unwrap();
                w.message_integrity(key).unwrap();
            }),
        ),
        (
            "unauthorized",
            message(Method::Allocate, Class::Error, |w| {
                w.error_code(401, "Unauthorized").unwrap();
                w.raw(attr::REALM, relay::REALM.as_bytes()).unwrap();
                w.raw(attr::NONCE, b"obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA")
                    .unwrap();
                w.raw(attr::PASSWORD_ALGORITHMS, &[0, 2, 0, 0, 0, 1, 0, 0])
                    .unwrap();
            }),
        ),
        (
            "unknown-attributes",
            message(Method::Refresh, Class::Error, |w| {
                w.error_code(420, "Unknown Attribute").unwrap();
                w.unknown_attributes(&[0x7FFF, 0x0031]).unwrap();
                w.address_error_code(uturn::stun::AddressFamily::V6, 440, "no")
                    .unwrap();
                w.raw(attr::USERHASH, &[9; 32]).unwrap();
            }),
        ),
        (
            "create-permission",
            message(Method::CreatePermission, Class::Request, |w| {
                w.xor_address(attr::XOR_PEER_ADDRESS, addr("198.51.100.7:5000"))
                    .unwrap();
                w.xor_address(attr::XOR_PEER_ADDRESS, addr("[2001:db8:100::7]:5000"))
                    .unwrap();
                w.message_integrity(key).unwrap();
            }),
        ),
        (
            "channel-bind",
            message(Method::ChannelBind, Class::Request, |w| {
                w.u32(attr::CHANNEL_NUMBER, 0x4001_0000).unwrap();
                w.xor_address(attr::XOR_PEER_ADDRESS, addr("198.51.100.7:5000"))
                    .unwrap();
                w.message_integrity_sha256(key).unwrap();
            }),
        ),
        (
            "send-indication",
            message(Method::Send, Class::Indication, |w| {
                w.xor_address(attr::XOR_PEER_ADDRESS, addr("198.51.100.7:5000"))
                    .unwrap();
                w.raw(attr::DATA, b"hello peer").unwrap();
            }),
        ),
        (
            "data-indication",
            message(Method::Data, Class::Indication, |w| {
                w.xor_address(attr::XOR_PEER_ADDRESS, addr("[2001:db8:100::7]:5000"))
                    .unwrap();
                w.raw(attr::DATA, b"hello client").unwrap();
                w.raw(attr::ICMP, &[0, 0, 3, 1, 0, 0, 0, 0]).unwrap();
                w.raw(attr::SOFTWARE, b"uturn").unwrap();
                w.address(attr::ALTERNATE_SERVER, addr("192.0.2.2:3478"))
                    .unwrap();
            }),
        ),
        ("channel-data", channel_data(0x4001, b"hello", true)),
    ]
}

/// Seeds of `stun_codec`: the vectors and the messages above.
pub fn stun_codec() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = VECTORS
        .iter()
        .map(|(name, hex)| (name.to_string(), unhex(hex)))
        .collect();
    out.extend(turn_messages().into_iter().map(|(n, b)| (n.to_string(), b)));
    out
}

/// Seeds of `stream_framing`: the chunking byte and sizes, then a stream.
pub fn stream_framing() -> Vec<(String, Vec<u8>)> {
    let msgs = turn_messages();
    let mut all = Vec::new();
    for (_, m) in &msgs {
        all.extend_from_slice(m);
        all.extend_from_slice(&channel_data(0x4FFF, b"abc", true));
    }
    let stream = |sizes: &[u8], parts: &[&[u8]]| {
        let mut v = vec![sizes.len() as u8];
        v.extend_from_slice(sizes);
        for p in parts {
            v.extend_from_slice(p);
        }
        v
    };
    let signed = &msgs[1].1;
    let cd = channel_data(0x4000, b"media", true);
    vec![
        ("every-message-bytewise".into(), stream(&[1], &[&all])),
        (
            "every-message-odd-chunks".into(),
            stream(&[7, 3, 250], &[&all]),
        ),
        (
            "signed-then-channel".into(),
            stream(&[20, 4], &[signed, &cd, signed]),
        ),
        ("ends-mid-frame".into(), stream(&[5], &[signed, &cd[..6]])),
        (
            "then-not-turn".into(),
            stream(&[9], &[&cd, &[0x80, 1, 2, 3]]),
        ),
        (
            "then-bad-channel".into(),
            stream(&[2], &[signed, &[0x50, 0, 0, 0]]),
        ),
        (
            "rfc5769".into(),
            stream(&[13], &[&unhex(VECTORS[0].1), &unhex(VECTORS[3].1)]),
        ),
    ]
}

fn req(client: u8, method: u8, cred: u8, attrs: Vec<ReqAttr>) -> Step {
    Step::Request(Request {
        client,
        method,
        tid: method.wrapping_mul(16).wrapping_add(client),
        cred,
        attrs,
        flags: 1,
        flip: 0,
    })
}

const ALLOCATE: u8 = 0;
const REFRESH: u8 = 1;
const PERMISSION: u8 = 2;
const BIND: u8 = 3;
const BINDING: u8 = 4;

/// Seeds of `relay`: flows that get past authentication.
pub fn relay() -> Vec<(String, Vec<u8>)> {
    let udp = ReqAttr::Transport(17);
    let peer0 = || ReqAttr::PeerAddress(Peer::Listed(0));
    let peer_v6 = || ReqAttr::PeerAddress(Peer::Listed(3));
    let data = |client: u8, peer: u8| Step::Send {
        client,
        peer: Peer::Listed(peer),
        data: b"to the peer".to_vec(),
        fingerprint: false,
    };
    let from_peer = |token: u8, peer: u8| Step::Peer {
        token,
        peer: Peer::Listed(peer),
        payload: b"to the client".to_vec(),
        overlong: false,
    };
    let cd = |client: u8, number: u16| Step::ChannelData {
        client,
        number,
        payload: b"media".to_vec(),
        padded: false,
    };
    let flows: Vec<(&str, Settings, Vec<Step>)> = vec![
        (
            "md5-allocate-permit-send-bind-expire",
            Settings::default(),
            vec![
                req(0, ALLOCATE, 0, vec![udp.clone(), ReqAttr::Lifetime(600)]),
                req(0, PERMISSION, 0, vec![peer0()]),
                data(0, 0),
                from_peer(0, 0),
                from_peer(0, 2),
                req(0, BIND, 0, vec![ReqAttr::Channel(0x4000), peer0()]),
                cd(0, 0x4000),
                from_peer(0, 0),
                Step::Advance { secs: 301 },
                cd(0, 0x4000),
                from_peer(0, 0),
                data(0, 0),
                req(0, REFRESH, 0, vec![ReqAttr::Lifetime(0)]),
                from_peer(0, 0),
            ],
        ),
        (
            "sha256-userhash-dual-stack",
            Settings::default(),
            vec![
                req(
                    3,
                    ALLOCATE,
                    1,
                    vec![udp.clone(), ReqAttr::AdditionalFamily(true)],
                ),
                req(3, PERMISSION, 2, vec![peer_v6(), peer0()]),
                data(3, 3),
                from_peer(1, 3),
                req(3, BIND, 1, vec![ReqAttr::Channel(0x4001), peer_v6()]),
                cd(3, 0x4001),
                Step::Advance { secs: 600 },
                req(3, REFRESH, 1, vec![ReqAttr::Lifetime(3600)]),
            ],
        ),
        (
            "rest-even-port-reservation",
            Settings::default(),
            vec![
                req(1, ALLOCATE, 5, vec![udp.clone(), ReqAttr::EvenPort(true)]),
                req(2, ALLOCATE, 5, vec![udp.clone(), ReqAttr::Reservation(0)]),
                req(4, ALLOCATE, 6, vec![udp.clone()]),
                Step::Advance { secs: 30 },
                req(5, ALLOCATE, 4, vec![udp.clone(), ReqAttr::Reservation(0)]),
            ],
        ),
        (
            "tight-quotas-many-clients",
            Settings {
                tight_quotas: true,
                ..Settings::default()
            },
            (0..8)
                .flat_map(|c| {
                    vec![
                        req(c, ALLOCATE, c % 2 * 3, vec![udp.clone()]),
                        req(
                            c,
                            PERMISSION,
                            c % 2 * 3,
                            vec![peer0(), ReqAttr::PeerAddress(Peer::Listed(2))],
                        ),
                    ]
                })
                .chain([
                    Step::FailBinds {
                        count: 3,
                        in_use: true,
                    },
                    req(7, ALLOCATE, 0, vec![udp.clone()]),
                ])
                .collect(),
        ),
        (
            "denied-peers-and-bad-requests",
            Settings::default(),
            vec![
                req(0, ALLOCATE, 0, vec![udp.clone()]),
                req(
                    0,
                    PERMISSION,
                    0,
                    vec![ReqAttr::PeerAddress(Peer::Listed(5))],
                ),
                req(
                    0,
                    PERMISSION,
                    0,
                    vec![ReqAttr::PeerAddress(Peer::Listed(7))],
                ),
                req(0, BIND, 0, vec![ReqAttr::Channel(0x3FFF), peer0()]),
                req(
                    0,
                    PERMISSION,
                    0,
                    vec![ReqAttr::Raw {
                        typ: 0x7F00,
                        value: vec![1, 2],
                    }],
                ),
                req(0, BINDING, 0, vec![]),
                req(0, 5, 0, vec![]),
                req(0, ALLOCATE, 7, vec![udp.clone()]),
                Step::Replay { from: 0, to: 2 },
                Step::Drain,
                req(2, ALLOCATE, 0, vec![udp.clone()]),
            ],
        ),
        (
            "raw-datagrams",
            Settings::default(),
            turn_messages()
                .into_iter()
                .map(|(_, bytes)| Step::Raw { client: 0, bytes })
                .collect(),
        ),
    ];
    flows
        .into_iter()
        .map(|(name, settings, steps)| (name.to_string(), relay::encode(settings, &steps)))
        .collect()
}

/// Seeds of `proxy_header`: headers a balancer sends (written by
/// `encode_v2` and by hand), some followed by the stream, and a few that
/// must be refused.
/// `tcp_alloc`: Connect, the outcome, a bind; a peer connecting in with
/// and without a permission; timeouts; a refused peer; garbage binds.
pub fn tcp_alloc() -> Vec<(String, Vec<u8>)> {
    vec![
        // Connect to 198.51.100.7:80, connected, bound.
        (
            "connect-bind".into(),
            vec![0, 0, 0, 80, 0, 1, 0, 1, 4, 0, 1],
        ),
        // Connect, failed; Connect to the metadata address.
        (
            "connect-fail-refused".into(),
            vec![0, 1, 0, 80, 0, 1, 0, 0, 0, 5, 0, 80, 0],
        ),
        // A peer in without, then with a permission, then bound.
        (
            "accept".into(),
            vec![2, 1, 0, 0, 9, 3, 0, 0, 1, 2, 1, 0, 0, 9, 4, 0, 1],
        ),
        // Connect, connected, 39 s pass: closed for want of a bind.
        (
            "bind-timeout".into(),
            vec![0, 1, 0, 80, 0, 1, 0, 1, 7, 39, 4, 0, 1],
        ),
        // Garbage on a data connection, then the allocation deleted.
        (
            "garbage-delete".into(),
            vec![5, 4, 0, 1, 0, 0, 0, 0, 0, 0, 8, 9],
        ),
        // A second outcome for a connection already made (found by the
        // fuzzer: the harness, not the relay, got it wrong).
        (
            "pending-outcome-twice".into(),
            vec![
                0x00, 0xf3, 0, 0, 0x50, 0xfa, 0xfa, 0xfa, 0xfa, 0, 1, 0, 0x29, 1, 4, 0, 9,
            ],
        ),
    ]
}

pub fn proxy_header() -> Vec<(String, Vec<u8>)> {
    use uturn_stream::proxy::{encode_v2, SIGNATURE};
    let encoded = |source: &str, destination: &str, tail: &[u8]| {
        let mut v = Vec::new();
        encode_v2(addr(source), addr(destination), &mut v);
        v.extend_from_slice(tail);
        v
    };
    // The fixed part with its 13th and 14th bytes and block length given,
    // then `block` bytes of `fill`.
    let fixed = |ver_cmd: u8, family: u8, block: u16, fill: u8| {
        let mut v = SIGNATURE.to_vec();
        v.extend_from_slice(&[ver_cmd, family]);
        v.extend_from_slice(&block.to_be_bytes());
        v.resize(v.len() + usize::from(block), fill);
        v
    };
    let binding = &turn_messages()[0].1;
    // TCP over IPv4 with ALPN, AUTHORITY and NOOP TLVs, then a request.
    let mut tlvs = encoded("203.0.113.7:51234", "192.0.2.1:443", &[]);
    tlvs.extend_from_slice(&[0x01, 0, 2, b'h', b'2', 0x02, 0, 16]);
    tlvs.extend_from_slice(b"turn.example.org");
    tlvs.extend_from_slice(&[0x04, 0, 3, 0, 0, 0]);
    let block = (tlvs.len() - 16) as u16;
    tlvs[14..16].copy_from_slice(&block.to_be_bytes());
    tlvs.extend_from_slice(binding);
    let mut truncated = encoded("[2001:db8::7]:54321", "[2001:db8::1]:443", &[]);
    truncated.truncate(40);
    vec![
        (
            "tcp4".into(),
            encoded("203.0.113.7:51234", "192.0.2.1:443", &[]),
        ),
        (
            "tcp6-then-binding".into(),
            encoded("[2001:db8::7]:54321", "[2001:db8::1]:443", binding),
        ),
        (
            "mixed-families-then-tls".into(),
            encoded("198.51.100.1:1", "[2001:db8::1]:443", &[0x16, 3, 1, 0, 5]),
        ),
        ("tcp4-tlvs-then-binding".into(), tlvs),
        ("udp6".into(), fixed(0x21, 0x22, 36, 0x20)),
        ("local".into(), fixed(0x20, 0x00, 0, 0)),
        ("local-with-block".into(), fixed(0x20, 0x11, 12, 1)),
        ("unix-stream".into(), fixed(0x21, 0x31, 216, b'/')),
        ("unspec".into(), fixed(0x21, 0x00, 4, 0)),
        ("longest".into(), fixed(0x21, 0x11, 512, 7)),
        ("too-long".into(), fixed(0x21, 0x21, 513, 0)),
        ("short-addresses".into(), fixed(0x21, 0x21, 12, 0)),
        ("truncated".into(), truncated),
        (
            "version-1".into(),
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n".to_vec(),
        ),
    ]
}

/// Seeds of `config`: the example file and a few variations.
pub fn config() -> Vec<(String, Vec<u8>)> {
    let example = include_str!("../../uturn.example.toml");
    let md5 = "0123456789abcdef0123456789abcdef";
    let sha = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    vec![
        ("example".into(), example.as_bytes().to_vec()),
        (
            "users-and-peers".into(),
            format!(
                "listen = [\"127.0.0.1:3478\", \"[::1]:3479\"]\nrelay_ips = [\"192.0.2.10\", \"2001:db8::10\"]\nrelay_ports = \"50000-50999\"\nrealm = \"example.org\"\nworkers = 4\n[[users]]\nname = \"alice\"\nkey_md5 = \"{md5}\"\nkey_sha256 = \"{sha}\"\n[peers]\nallow = [\"10.0.0.0/8\"]\ndeny = [\"203.0.113.0/24\"]\n[quotas]\nallocations_per_user = 5\n[rate_limit]\nunauth_per_second = 10\n"
            )
            .into_bytes(),
        ),
        (
            "rest-secrets".into(),
            b"rest_secrets = [\"s1\", \"s2\"]\nrest_secret_files = [\"/nonexistent\"]\noffer_sha256 = false\nnonce_lifetime_secs = 300\nmetrics = \"127.0.0.1:9641\"\nalternate_server = \"192.0.2.2:3478\"\n".to_vec(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_passes_its_target() {
        for (_, s) in stun_codec() {
            crate::codec::run(&s);
        }
        for (_, s) in stream_framing() {
            crate::framing::run(&s);
        }
        for (_, s) in relay() {
            crate::relay::run(&s);
        }
        for (_, s) in config() {
            crate::config::run(&s);
        }
        for (_, s) in proxy_header() {
            crate::proxy::run(&s);
        }
        for (_, s) in tcp_alloc() {
            crate::tcp::run(&s);
        }
    }

    #[test]
    fn proxy_seeds_reach_every_verdict() {
        use uturn_stream::proxy::{parse, ProxyError, ProxyHeader};
        let verdicts: Vec<_> = proxy_header()
            .into_iter()
            .map(|(name, s)| (name, parse(&s)))
            .collect();
        let sources = verdicts
            .iter()
            .filter(|(_, v)| {
                matches!(
                    v,
                    ProxyHeader::Done {
                        source: Some(_),
                        ..
                    }
                )
            })
            .count();
        let local = verdicts
            .iter()
            .filter(|(_, v)| matches!(v, ProxyHeader::Done { source: None, .. }))
            .count();
        assert_eq!((sources, local), (6, 4), "{verdicts:?}");
        for (name, want) in [
            ("too-long", ProxyHeader::Invalid(ProxyError::TooLong)),
            (
                "short-addresses",
                ProxyHeader::Invalid(ProxyError::ShortAddresses),
            ),
            ("version-1", ProxyHeader::Invalid(ProxyError::Version1)),
            ("truncated", ProxyHeader::Incomplete { missing: 12 }),
        ] {
            assert!(verdicts.contains(&(name.to_string(), want)), "{name}");
        }
    }
}
