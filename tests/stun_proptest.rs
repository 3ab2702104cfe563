//! Property tests for the STUN codec: "a panic is a bug, never bad input",
//! and typed attributes survive a write → parse → decode round trip.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;
use uturn::stun::attr::{self, AddressFamily, Attribute};
use uturn::stun::channel::ChannelData;
use uturn::stun::integrity::{check_fingerprint, check_sha1, check_sha256, Integrity};
use uturn::stun::message::classify;
use uturn::stun::{Class, Message, MessageWriter, Method, MAGIC_COOKIE};

/// Runs every read-only entry point over a parsed message.
fn exercise(msg: &Message<'_>) {
    let _ = (
        msg.method(),
        msg.class(),
        msg.transaction_id(),
        msg.as_bytes().len(),
    );
    let tid = msg.transaction_id();
    let raw: Vec<_> = msg.raw_attributes().collect();
    let trusted: Vec<_> = msg.attributes().collect();
    assert!(trusted.len() <= raw.len());
    for a in &raw {
        assert!(a.offset + 4 + a.value.len() <= msg.as_bytes().len());
        if let Ok(decoded) = Attribute::decode(*a, tid) {
            assert_eq!(decoded.typ(), a.typ);
            match decoded {
                Attribute::PasswordAlgorithms(v) => drop(attr::password_algorithms(v).count()),
                Attribute::UnknownAttributes(v) => drop(attr::unknown_attributes(v).count()),
                _ => {}
            }
        }
        let _ = attr::password_algorithms(a.value).count();
        let _ = attr::unknown_attributes(a.value).count();
        let _ = attr::decode_xor_address(a.value, tid);
        let _ = msg.get(a.typ);
    }
    for key in [&b""[..], b"key", &[0xAB; 100]] {
        let _ = check_sha1(msg, key);
        let _ = check_sha256(msg, key);
    }
    let _ = check_fingerprint(msg);
}

/// Every entry point that takes raw datagram bytes.
fn feed(bytes: &[u8]) {
    let _ = classify(bytes);
    let _ = ChannelData::parse(bytes);
    if let Ok(msg) = Message::parse(bytes) {
        exercise(&msg);
    }
}

/// A STUN header (top bits clear, right cookie) with the body's length.
fn with_header(typ: u16, tid: [u8; 12], body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(20 + body.len());
    v.extend_from_slice(&(typ & 0x3FFF).to_be_bytes());
    v.extend_from_slice(&(body.len() as u16).to_be_bytes());
    v.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    v.extend_from_slice(&tid);
    v.extend_from_slice(body);
    v
}

/// Attribute types the codec knows, plus a few it does not.
fn any_type() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => proptest::sample::select(vec![
            attr::MAPPED_ADDRESS, attr::USERNAME, attr::MESSAGE_INTEGRITY, attr::ERROR_CODE,
            attr::UNKNOWN_ATTRIBUTES, attr::CHANNEL_NUMBER, attr::LIFETIME, attr::XOR_PEER_ADDRESS,
            attr::DATA, attr::REALM, attr::NONCE, attr::XOR_RELAYED_ADDRESS,
            attr::REQUESTED_ADDRESS_FAMILY, attr::EVEN_PORT, attr::REQUESTED_TRANSPORT,
            attr::DONT_FRAGMENT, attr::MESSAGE_INTEGRITY_SHA256, attr::PASSWORD_ALGORITHM,
            attr::USERHASH, attr::XOR_MAPPED_ADDRESS, attr::RESERVATION_TOKEN,
            attr::PASSWORD_ALGORITHMS, attr::ALTERNATE_DOMAIN, attr::SOFTWARE,
            attr::ALTERNATE_SERVER, attr::FINGERPRINT, attr::ICMP,
            attr::ADDITIONAL_ADDRESS_FAMILY, attr::ADDRESS_ERROR_CODE,
        ]),
        1 => any::<u16>(),
    ]
}

/// A correctly framed attribute with an arbitrary (often wrong-sized) value.
fn framed_attr() -> impl Strategy<Value = Vec<u8>> {
    (any_type(), proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(typ, value)| {
        let mut v = Vec::new();
        v.extend_from_slice(&typ.to_be_bytes());
        v.extend_from_slice(&(value.len() as u16).to_be_bytes());
        v.extend_from_slice(&value);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    })
}

fn any_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, p)| SocketAddr::new(Ipv4Addr::from(ip).into(), p)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, p)| SocketAddr::new(Ipv6Addr::from(ip).into(), p)),
    ]
}

/// The owned material one typed attribute is built from.
#[derive(Clone, Debug)]
struct Spec {
    kind: u8,
    bytes: Vec<u8>,
    arr: [u8; 32],
    n32: u32,
    n16: u16,
    b1: u8,
    b2: u8,
    flag: bool,
    addr: SocketAddr,
    algs: Vec<u8>,
}

const KINDS: u8 = 32;

fn any_spec() -> impl Strategy<Value = Spec> {
    let algs = proptest::collection::vec(
        (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..6)),
        0..4,
    )
    .prop_map(|entries| {
        let mut v = Vec::new();
        for (alg, params) in entries {
            v.extend_from_slice(&alg.to_be_bytes());
            v.extend_from_slice(&(params.len() as u16).to_be_bytes());
            v.extend_from_slice(&params);
            while v.len() % 4 != 0 {
                v.push(0);
            }
        }
        v
    });
    (
        0..KINDS,
        proptest::collection::vec(any::<u8>(), 0..80),
        any::<[u8; 32]>(),
        (
            any::<u32>(),
            any::<u16>(),
            any::<u8>(),
            any::<u8>(),
            any::<bool>(),
        ),
        any_addr(),
        algs,
    )
        .prop_map(
            |(kind, bytes, arr, (n32, n16, b1, b2, flag), addr, algs)| Spec {
                kind,
                bytes,
                arr,
                n32,
                n16,
                b1,
                b2,
                flag,
                addr,
                algs,
            },
        )
}

fn family(flag: bool) -> AddressFamily {
    if flag {
        AddressFamily::V6
    } else {
        AddressFamily::V4
    }
}

/// A valid typed attribute borrowing from `s`.
fn build(s: &Spec) -> Attribute<'_> {
    let code = 300 + s.n16 % 400;
    match s.kind {
        0 => Attribute::MappedAddress(s.addr),
        1 => Attribute::XorMappedAddress(s.addr),
        2 => Attribute::Username(&s.bytes),
        3 => Attribute::UserHash(&s.arr),
        4 => Attribute::MessageIntegrity(s.arr[..20].try_into().unwrap()),
        5 => Attribute::MessageIntegritySha256(&s.arr[..16 + 4 * usize::from(s.b1 % 5)]),
        6 => Attribute::Fingerprint(s.n32),
        7 => Attribute::ErrorCode {
            code,
            reason: &s.bytes,
        },
        8 => Attribute::Realm(&s.bytes),
        9 => Attribute::Nonce(&s.bytes),
        10 => Attribute::PasswordAlgorithms(&s.algs),
        11 => Attribute::PasswordAlgorithm {
            algorithm: s.n16,
            params: &s.bytes[..s.bytes.len().min(12)],
        },
        12 => Attribute::UnknownAttributes(&s.bytes[..s.bytes.len() & !1]),
        13 => Attribute::Software(&s.bytes),
        14 => Attribute::AlternateServer(s.addr),
        15 => Attribute::AlternateDomain(&s.bytes),
        16 => Attribute::ChannelNumber(s.n16),
        17 => Attribute::Lifetime(s.n32),
        18 => Attribute::XorPeerAddress(s.addr),
        19 => Attribute::Data(&s.bytes),
        20 => Attribute::XorRelayedAddress(s.addr),
        21 => Attribute::RequestedAddressFamily(family(s.flag)),
        22 => Attribute::AdditionalAddressFamily(family(s.flag)),
        23 => Attribute::AddressErrorCode {
            family: family(s.flag),
            code,
            reason: &s.bytes,
        },
        24 => Attribute::EvenPort(s.flag),
        25 => Attribute::RequestedTransport(s.b1),
        26 => Attribute::DontFragment,
        27 => Attribute::ReservationToken(s.arr[..8].try_into().unwrap()),
        28 => Attribute::Icmp {
            typ: s.b1,
            code: s.b2,
            data: s.n32,
        },
        _ => {
            let typ = if attr::is_known(s.n16) { 0xC001 } else { s.n16 };
            Attribute::Unknown {
                typ,
                value: &s.bytes,
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        feed(&bytes);
    }

    #[test]
    fn arbitrary_body_behind_valid_header(
        typ in any::<u16>(),
        tid in any::<[u8; 12]>(),
        body in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let body = &body[..body.len() & !3];
        feed(&with_header(typ, tid, body));
    }

    #[test]
    fn framed_attributes_with_arbitrary_values(
        typ in any::<u16>(),
        tid in any::<[u8; 12]>(),
        attrs in proptest::collection::vec(framed_attr(), 0..10),
    ) {
        let body = attrs.concat();
        let bytes = with_header(typ, tid, &body);
        let msg = Message::parse(&bytes).expect("framing is valid by construction");
        exercise(&msg);
        // Cutting the datagram short or lengthening it is always caught.
        if !body.is_empty() {
            prop_assert!(Message::parse(&bytes[..bytes.len() - 1]).is_err());
        }
    }

    #[test]
    fn channel_data_any(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
        if let Ok(c) = ChannelData::parse(&bytes) {
            prop_assert!((0x4000..=0x4FFF).contains(&c.number));
            prop_assert!(c.payload.len() + 4 <= bytes.len());
        }
    }
}

proptest! {
    #[test]
    fn typed_attributes_round_trip(
        method in 0u16..0x1000,
        class in 0u8..4,
        tid in any::<[u8; 12]>(),
        specs in proptest::collection::vec(any_spec(), 0..12),
        key in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let class = [Class::Request, Class::Indication, Class::Success, Class::Error][usize::from(class)];
        let attrs: Vec<Attribute<'_>> = specs.iter().map(build).collect();
        let mut buf = vec![0u8; 4096];
        let mut w = MessageWriter::new(&mut buf, Method::from_u16(method), class, &tid).unwrap();
        for a in &attrs {
            w.attr(a).unwrap();
        }
        w.message_integrity(&key).unwrap();
        w.message_integrity_sha256(&key).unwrap();
        w.fingerprint().unwrap();
        let n = w.finish();

        let msg = Message::parse(&buf[..n]).unwrap();
        prop_assert_eq!(msg.method(), Method::from_u16(method));
        prop_assert_eq!(msg.class(), class);
        prop_assert_eq!(msg.transaction_id(), &tid);
        let back: Vec<_> = msg
            .raw_attributes()
            .take(attrs.len())
            .map(|a| Attribute::decode(a, &tid).unwrap())
            .collect();
        prop_assert_eq!(&back, &attrs);
        // The generator may itself produce MESSAGE-INTEGRITY(-SHA256) or
        // FINGERPRINT attributes with random values; the checks look at the
        // first occurrence, so they only apply when those are ours.
        let has = |t: u16| attrs.iter().any(|a| a.typ() == t);
        if !has(attr::FINGERPRINT) {
            prop_assert_eq!(check_fingerprint(&msg), Integrity::Valid);
        }
        if !has(attr::MESSAGE_INTEGRITY) && !has(attr::MESSAGE_INTEGRITY_SHA256) {
            prop_assert_eq!(check_sha1(&msg, &key), Integrity::Valid);
            prop_assert_eq!(check_sha256(&msg, &key), Integrity::Valid);
        }
        exercise(&msg);

        // encode(decode(bytes)) == bytes.
        let mut again = vec![0u8; 4096];
        let mut w = MessageWriter::new(&mut again, msg.method(), msg.class(), &tid).unwrap();
        for a in &back {
            w.attr(a).unwrap();
        }
        w.message_integrity(&key).unwrap();
        w.message_integrity_sha256(&key).unwrap();
        w.fingerprint().unwrap();
        prop_assert_eq!(w.as_bytes(), &buf[..n]);
    }

    #[test]
    fn writer_never_panics(
        size in 0usize..160,
        specs in proptest::collection::vec(any_spec(), 0..8),
        big in proptest::collection::vec(any::<u8>(), 0..900),
        cut in any::<u8>(),
    ) {
        let mut buf = vec![0u8; size];
        let Ok(mut w) = MessageWriter::new(&mut buf, Method::Binding, Class::Success, &[0; 12]) else {
            prop_assert!(size < 20);
            return Ok(());
        };
        for s in &specs {
            let _ = w.attr(&build(s));
            // Out-of-range values must be refused, not panic.
            let _ = w.attr(&Attribute::Username(&big));
            let _ = w.attr(&Attribute::MessageIntegritySha256(&big[..big.len().min(usize::from(cut))]));
            let _ = w.attr(&Attribute::ErrorCode { code: u16::from(cut) * 4, reason: &big });
            let _ = w.attr(&Attribute::PasswordAlgorithms(&big[..big.len().min(usize::from(cut))]));
            let _ = w.message_integrity(&big);
            let _ = w.fingerprint();
            // Whatever happened, what has been written is a valid message.
            prop_assert!(Message::parse(w.as_bytes()).is_ok());
        }
    }

    #[test]
    fn data_indication_never_panics(
        size in 0usize..200,
        start in 0usize..220,
        len in 0usize..220,
        peer in any_addr(),
    ) {
        let mut buf = vec![0u8; size];
        if let Ok(r) = uturn::stun::writer::data_indication_in_place(&mut buf, start, len, peer, &[3; 12]) {
            let msg = Message::parse(&buf[r]).unwrap();
            let data = msg.get(attr::DATA).unwrap();
            prop_assert_eq!(data.value.len(), len);
        }
    }
}
