//! Published STUN test vectors, decoded, verified and re-encoded.
//!
//! * RFC 5769 §2.1–§2.4 (MESSAGE-INTEGRITY, FINGERPRINT, XOR-MAPPED-ADDRESS).
//! * RFC 8489 Appendix B.1 (USERHASH, MESSAGE-INTEGRITY-SHA256), as printed
//!   and as corrected by RFC Errata ID 6268.
//!
//! The byte strings are the RFCs' own hex dumps, one printed row per line.

use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use uturn::stun::attr::{self, Attribute, RawAttr};
use uturn::stun::integrity::{check_fingerprint, check_sha1, check_sha256, Integrity};
use uturn::stun::{Class, DecodeError, Message, MessageWriter, Method};

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// RFC 5769 §2.1–§2.3 short-term password (used as the key as is).
const SHORT_TERM_KEY: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";
/// RFC 5769 §2.4 / RFC 8489 B.1 username (U+30DE U+30C8 U+30EA U+30C3 U+30AF U+30B9).
const USERNAME: &str = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
const REALM: &str = "example.org";
/// The password after SASLprep / OpaqueString ("The\u{AD}M\u{AA}tr\u{2168}" before).
const PASSWORD: &str = "TheMatrIX";

fn md5_key() -> [u8; 16] {
    Md5::digest(format!("{USERNAME}:{REALM}:{PASSWORD}").as_bytes()).into()
}

fn sha256_key() -> [u8; 32] {
    Sha256::digest(format!("{USERNAME}:{REALM}:{PASSWORD}").as_bytes()).into()
}

/// Every attribute of `msg` in wire order, typed.
fn typed<'a>(msg: &Message<'a>) -> Vec<Attribute<'a>> {
    msg.raw_attributes()
        .map(|a| Attribute::decode(a, msg.transaction_id()).unwrap())
        .collect()
}

/// Re-encodes `msg` with `MessageWriter`: same header, same attributes in the
/// same order, but MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT computed anew.
fn reencode(msg: &Message<'_>, key: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 1500];
    let mut w =
        MessageWriter::new(&mut buf, msg.method(), msg.class(), msg.transaction_id()).unwrap();
    for a in msg.raw_attributes() {
        match a.typ {
            attr::MESSAGE_INTEGRITY => w.message_integrity(key).unwrap(),
            attr::MESSAGE_INTEGRITY_SHA256 => w.message_integrity_sha256(key).unwrap(),
            attr::FINGERPRINT => w.fingerprint().unwrap(),
            _ => w
                .attr(&Attribute::decode(a, msg.transaction_id()).unwrap())
                .unwrap(),
        }
    }
    let n = w.finish();
    buf.truncate(n);
    buf
}

/// The byte ranges of attribute padding in `msg`.
fn padding_ranges(msg: &Message<'_>) -> Vec<std::ops::Range<usize>> {
    msg.raw_attributes()
        .map(|a: RawAttr<'_>| {
            let start = a.offset + 4 + a.value.len();
            start..a.offset + 4 + ((a.value.len() + 3) & !3)
        })
        .filter(|r| !r.is_empty())
        .collect()
}

/// RFC 5769 §2.1–§2.3 pad some text values with 0x20 (RFC 5389 let the sender
/// pick any padding bytes) while `MessageWriter` always writes zeros (as RFC
/// 8489 §14 asks). Those vectors are therefore compared after normalising the
/// padding to zeros. Since MESSAGE-INTEGRITY and FINGERPRINT cover the padding,
/// their values necessarily differ too: everything except those two values is
/// compared byte for byte, and the re-encoded MAC and CRC are then checked
/// with the same routines that just verified the RFC's own values.
fn assert_reencodes_modulo_padding(rfc: &[u8], key: &[u8]) {
    let msg = Message::parse(rfc).unwrap();
    let ours = reencode(&msg, key);
    assert_eq!(ours.len(), rfc.len());

    let mut normalised = rfc.to_vec();
    let pads = padding_ranges(&msg);
    assert!(pads
        .iter()
        .flat_map(|r| &rfc[r.clone()])
        .all(|&b| b == 0x20 || b == 0));
    for r in pads {
        normalised[r].fill(0);
    }
    let mut masked = Vec::new();
    for a in msg.raw_attributes() {
        if matches!(a.typ, attr::MESSAGE_INTEGRITY | attr::FINGERPRINT) {
            masked.push(a.offset + 4..a.offset + 4 + a.value.len());
        }
    }
    for (i, (x, y)) in ours.iter().zip(&normalised).enumerate() {
        if !masked.iter().any(|r| r.contains(&i)) {
            assert_eq!(x, y, "byte {i} differs");
        }
    }
    let ours = Message::parse(&ours).unwrap();
    assert_eq!(check_sha1(&ours, key), Integrity::Valid);
    assert_eq!(check_fingerprint(&ours), Integrity::Valid);
}

// RFC 5769 §2.1: Sample Request (short-term credentials, ICE attributes).
const RFC5769_REQUEST: &str = "
    00 01 00 58
    21 12 a4 42
    b7 e7 a7 01
    bc 34 d6 86
    fa 87 df ae
    80 22 00 10
    53 54 55 4e
    20 74 65 73
    74 20 63 6c
    69 65 6e 74
    00 24 00 04
    6e 00 01 ff
    80 29 00 08
    93 2f f9 b1
    51 26 3b 36
    00 06 00 09
    65 76 74 6a
    3a 68 36 76
    59 20 20 20
    00 08 00 14
    9a ea a7 0c
    bf d8 cb 56
    78 1e f2 b5
    b2 d3 f2 49
    c1 b5 71 a2
    80 28 00 04
    e5 7a 3b cf";

// RFC 5769 §2.2: Sample IPv4 Response.
const RFC5769_RESPONSE_V4: &str = "
    01 01 00 3c
    21 12 a4 42
    b7 e7 a7 01
    bc 34 d6 86
    fa 87 df ae
    80 22 00 0b
    74 65 73 74
    20 76 65 63
    74 6f 72 20
    00 20 00 08
    00 01 a1 47
    e1 12 a6 43
    00 08 00 14
    2b 91 f5 99
    fd 9e 90 c3
    8c 74 89 f9
    2a f9 ba 53
    f0 6b e7 d7
    80 28 00 04
    c0 7d 4c 96";

// RFC 5769 §2.3: Sample IPv6 Response.
const RFC5769_RESPONSE_V6: &str = "
    01 01 00 48
    21 12 a4 42
    b7 e7 a7 01
    bc 34 d6 86
    fa 87 df ae
    80 22 00 0b
    74 65 73 74
    20 76 65 63
    74 6f 72 20
    00 20 00 14
    00 02 a1 47
    01 13 a9 fa
    a5 d3 f1 79
    bc 25 f4 b5
    be d2 b9 d9
    00 08 00 14
    a3 82 95 4e
    4b e6 7b f1
    17 84 c9 7c
    82 92 c2 75
    bf e3 ed 41
    80 28 00 04
    c8 fb 0b 4c";

// RFC 5769 §2.4: Sample Request with Long-Term Authentication (no FINGERPRINT).
const RFC5769_LONG_TERM: &str = "
    00 01 00 60
    21 12 a4 42
    78 ad 34 33
    c6 ad 72 c0
    29 da 41 2e
    00 06 00 12
    e3 83 9e e3
    83 88 e3 83
    aa e3 83 83
    e3 82 af e3
    82 b9 00 00
    00 15 00 1c
    66 2f 2f 34
    39 39 6b 39
    35 34 64 36
    4f 4c 33 34
    6f 4c 39 46
    53 54 76 79
    36 34 73 41
    00 14 00 0b
    65 78 61 6d
    70 6c 65 2e
    6f 72 67 00
    00 08 00 14
    f6 70 24 65
    6d d6 4a 3e
    02 b8 e0 71
    2e 85 c9 a2
    8c a8 96 66";

#[test]
fn rfc5769_sample_request() {
    let rfc = hex(RFC5769_REQUEST);
    let msg = Message::parse(&rfc).unwrap();
    assert_eq!(
        (msg.method(), msg.class()),
        (Method::Binding, Class::Request)
    );
    assert_eq!(msg.transaction_id(), &hex("b7e7a701 bc34d686 fa87dfae")[..]);
    assert_eq!(
        typed(&msg),
        [
            Attribute::Software(b"STUN test client"),
            // PRIORITY and ICE-CONTROLLED (RFC 8445) are not TURN attributes.
            Attribute::Unknown {
                typ: 0x0024,
                value: &hex("6e0001ff")
            },
            Attribute::Unknown {
                typ: 0x8029,
                value: &hex("932ff9b151263b36")
            },
            Attribute::Username(b"evtj:h6vY"),
            Attribute::MessageIntegrity(
                hex("9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2")
                    .as_slice()
                    .try_into()
                    .unwrap()
            ),
            Attribute::Fingerprint(0xe57a3bcf),
        ]
    );
    assert_eq!(check_sha1(&msg, SHORT_TERM_KEY), Integrity::Valid);
    assert_eq!(
        check_sha1(&msg, b"VOkJxbRl1RmTxUk/WvJxBT"),
        Integrity::Invalid
    );
    assert_eq!(check_sha256(&msg, SHORT_TERM_KEY), Integrity::Missing);
    assert_eq!(check_fingerprint(&msg), Integrity::Valid);
    // USERNAME here is padded with three 0x20 bytes.
    assert_reencodes_modulo_padding(&rfc, SHORT_TERM_KEY);
}

#[test]
fn rfc5769_ipv4_response() {
    let rfc = hex(RFC5769_RESPONSE_V4);
    let msg = Message::parse(&rfc).unwrap();
    assert_eq!(
        (msg.method(), msg.class()),
        (Method::Binding, Class::Success)
    );
    let mapped: SocketAddr = "192.0.2.1:32853".parse().unwrap();
    let attrs = typed(&msg);
    assert_eq!(attrs[0], Attribute::Software(b"test vector"));
    assert_eq!(attrs[1], Attribute::XorMappedAddress(mapped));
    assert!(matches!(attrs[2], Attribute::MessageIntegrity(_)));
    assert_eq!(attrs[3], Attribute::Fingerprint(0xc07d4c96));
    assert_eq!(attrs.len(), 4);
    assert_eq!(check_sha1(&msg, SHORT_TERM_KEY), Integrity::Valid);
    assert_eq!(check_fingerprint(&msg), Integrity::Valid);
    // SOFTWARE ("test vector", 11 bytes) is padded with one 0x20 byte.
    assert_reencodes_modulo_padding(&rfc, SHORT_TERM_KEY);
}

#[test]
fn rfc5769_ipv6_response() {
    let rfc = hex(RFC5769_RESPONSE_V6);
    let msg = Message::parse(&rfc).unwrap();
    let mapped: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .unwrap();
    let attrs = typed(&msg);
    assert_eq!(attrs[0], Attribute::Software(b"test vector"));
    assert_eq!(attrs[1], Attribute::XorMappedAddress(mapped));
    assert!(matches!(attrs[2], Attribute::MessageIntegrity(_)));
    assert_eq!(attrs[3], Attribute::Fingerprint(0xc8fb0b4c));
    assert_eq!(check_sha1(&msg, SHORT_TERM_KEY), Integrity::Valid);
    assert_eq!(check_fingerprint(&msg), Integrity::Valid);
    assert_reencodes_modulo_padding(&rfc, SHORT_TERM_KEY);
}

#[test]
fn rfc5769_long_term_request() {
    let rfc = hex(RFC5769_LONG_TERM);
    let msg = Message::parse(&rfc).unwrap();
    assert_eq!(
        (msg.method(), msg.class()),
        (Method::Binding, Class::Request)
    );
    let attrs = typed(&msg);
    assert_eq!(attrs[0], Attribute::Username(USERNAME.as_bytes()));
    assert_eq!(attrs[1], Attribute::Nonce(b"f//499k954d6OL34oL9FSTvy64sA"));
    assert_eq!(attrs[2], Attribute::Realm(REALM.as_bytes()));
    assert!(matches!(attrs[3], Attribute::MessageIntegrity(_)));
    assert_eq!(attrs.len(), 4);
    let key = md5_key();
    assert_eq!(check_sha1(&msg, &key), Integrity::Valid);
    assert_eq!(check_sha1(&msg, SHORT_TERM_KEY), Integrity::Invalid);
    assert_eq!(check_fingerprint(&msg), Integrity::Missing);
    // Zero padding throughout: the re-encoding matches byte for byte.
    assert_eq!(reencode(&msg, &key), rfc);
}

// RFC 8489 Appendix B.1 exactly as printed. Its header length, 0x9c, is the
// length of the whole message (156 bytes) rather than of the body (0x88), and
// it lacks the PASSWORD-ALGORITHM attribute that a SHA-256 key requires (RFC
// 8489 §9.2.4). Errata ID 6268 (https://www.rfc-editor.org/errata/eid6268)
// reports both and gives the corrected message below.
const RFC8489_B1_PRINTED: &str = "
    00 01 00 9c
    21 12 a4 42
    78 ad 34 33
    c6 ad 72 c0
    29 da 41 2e
    00 1e 00 20
    4a 3c f3 8f
    ef 69 92 bd
    a9 52 c6 78
    04 17 da 0f
    24 81 94 15
    56 9e 60 b2
    05 c4 6e 41
    40 7f 17 04
    00 15 00 29
    6f 62 4d 61
    74 4a 6f 73
    32 41 41 41
    43 66 2f 2f
    34 39 39 6b
    39 35 34 64
    36 4f 4c 33
    34 6f 4c 39
    46 53 54 76
    79 36 34 73
    41 00 00 00
    00 14 00 0b
    65 78 61 6d
    70 6c 65 2e
    6f 72 67 00
    00 1c 00 20
    e4 68 6c 8f
    0e de b5 90
    13 e0 70 90
    01 0a 93 ef
    cc bc cc 54
    4c 0a 45 d9
    f8 30 aa 6d
    6f 73 5a 01";

// RFC 8489 Appendix B.1 as corrected by Errata ID 6268: length 0x90, a
// PASSWORD-ALGORITHM (SHA-256, no parameters) before the MAC, and the MAC
// recomputed.
const RFC8489_B1_ERRATUM: &str = "
    00 01 00 90
    21 12 a4 42
    78 ad 34 33
    c6 ad 72 c0
    29 da 41 2e
    00 1e 00 20
    4a 3c f3 8f
    ef 69 92 bd
    a9 52 c6 78
    04 17 da 0f
    24 81 94 15
    56 9e 60 b2
    05 c4 6e 41
    40 7f 17 04
    00 15 00 29
    6f 62 4d 61
    74 4a 6f 73
    32 41 41 41
    43 66 2f 2f
    34 39 39 6b
    39 35 34 64
    36 4f 4c 33
    34 6f 4c 39
    46 53 54 76
    79 36 34 73
    41 00 00 00
    00 14 00 0b
    65 78 61 6d
    70 6c 65 2e
    6f 72 67 00
    00 1d 00 04
    00 02 00 00
    00 1c 00 20
    b5 c7 bf 00
    5b 6c 52 a2
    1c 51 c5 e8
    92 f8 19 24
    13 62 96 cb
    92 7c 43 14
    93 09 27 8c
    c6 51 8e 65";

const B1_NONCE: &[u8] = b"obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA";

/// RFC 8489 §14.4: USERHASH = SHA-256(OpaqueString(username) ":" OpaqueString(realm)).
fn expected_userhash() -> [u8; 32] {
    Sha256::digest(format!("{USERNAME}:{REALM}").as_bytes()).into()
}

#[test]
fn rfc8489_b1_as_printed() {
    let printed = hex(RFC8489_B1_PRINTED);
    assert_eq!(printed.len(), 0x9c);
    // The length field counts the header too, so the codec must refuse it.
    assert_eq!(
        Message::parse(&printed).unwrap_err(),
        DecodeError::BadLength
    );

    // With the length field repaired the framing and USERHASH are fine, but the
    // printed MAC does not verify: it was computed over the header carrying
    // the wrong length.
    let mut repaired = printed.clone();
    repaired[3] = 0x88;
    let msg = Message::parse(&repaired).unwrap();
    let attrs = typed(&msg);
    assert_eq!(attrs[0], Attribute::UserHash(&expected_userhash()));
    assert_eq!(attrs[1], Attribute::Nonce(B1_NONCE));
    assert_eq!(attrs[2], Attribute::Realm(REALM.as_bytes()));
    assert_eq!(check_sha256(&msg, &sha256_key()), Integrity::Invalid);
    assert_eq!(check_sha256(&msg, &md5_key()), Integrity::Invalid);

    // Evidence for that diagnosis (computed outside the codec, which will not
    // parse the printed bytes): HMAC-SHA256 with the SHA-256 key over the 120
    // bytes before the MAC attribute, length field 0x9c as printed, gives the
    // printed MAC exactly.
    let mac_at = printed.len() - 36;
    let mut h = <Hmac<Sha256> as Mac>::new_from_slice(&sha256_key()).unwrap();
    h.update(&printed[..mac_at]);
    assert_eq!(h.finalize().into_bytes().as_slice(), &printed[mac_at + 4..]);
}

#[test]
fn rfc8489_b1_erratum_6268() {
    let rfc = hex(RFC8489_B1_ERRATUM);
    let msg = Message::parse(&rfc).unwrap();
    assert_eq!(
        (msg.method(), msg.class()),
        (Method::Binding, Class::Request)
    );
    let attrs = typed(&msg);
    assert_eq!(attrs[0], Attribute::UserHash(&expected_userhash()));
    assert_eq!(attrs[1], Attribute::Nonce(B1_NONCE));
    assert_eq!(attrs[2], Attribute::Realm(REALM.as_bytes()));
    assert_eq!(
        attrs[3],
        Attribute::PasswordAlgorithm {
            algorithm: attr::PASSWORD_ALGORITHM_SHA256,
            params: &[]
        }
    );
    assert!(matches!(attrs[4], Attribute::MessageIntegritySha256(v) if v.len() == 32));
    assert_eq!(attrs.len(), 5);
    assert_eq!(check_sha256(&msg, &sha256_key()), Integrity::Valid);
    assert_eq!(check_sha256(&msg, &md5_key()), Integrity::Invalid);
    assert_eq!(check_sha1(&msg, &sha256_key()), Integrity::Missing);
    assert_eq!(reencode(&msg, &sha256_key()), rfc);
}
