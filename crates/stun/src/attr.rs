//! Attribute types and typed decoding (RFC 8489 §14, RFC 8656 §18, RFC 6156).

use std::net::SocketAddr;

pub use super::addr::address_value_len;
use super::addr::{decode_address, xor_address};
use super::{DecodeError, TransactionId};

// Comprehension-required (0x0000–0x7FFF)
pub const MAPPED_ADDRESS: u16 = 0x0001;
pub const USERNAME: u16 = 0x0006;
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
pub const ERROR_CODE: u16 = 0x0009;
pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
pub const CHANNEL_NUMBER: u16 = 0x000C;
pub const LIFETIME: u16 = 0x000D;
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
pub const DATA: u16 = 0x0013;
pub const REALM: u16 = 0x0014;
pub const NONCE: u16 = 0x0015;
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
pub const EVEN_PORT: u16 = 0x0018;
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
pub const DONT_FRAGMENT: u16 = 0x001A;
pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
pub const PASSWORD_ALGORITHM: u16 = 0x001D;
pub const USERHASH: u16 = 0x001E;
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
pub const RESERVATION_TOKEN: u16 = 0x0022;
/// RFC 6062 §6.2.
pub const CONNECTION_ID: u16 = 0x002A;
// Comprehension-optional (0x8000–0xFFFF)
pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
pub const ALTERNATE_DOMAIN: u16 = 0x8003;
pub const SOFTWARE: u16 = 0x8022;
pub const ALTERNATE_SERVER: u16 = 0x8023;
pub const FINGERPRINT: u16 = 0x8028;
pub const ICMP: u16 = 0x8004;
pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
pub const ADDRESS_ERROR_CODE: u16 = 0x8001;

/// True for types in the comprehension-required range (RFC 8489 §14).
pub fn is_comprehension_required(typ: u16) -> bool {
    typ < 0x8000
}

/// True for every attribute type this codec knows.
pub fn is_known(typ: u16) -> bool {
    matches!(
        typ,
        MAPPED_ADDRESS
            | USERNAME
            | MESSAGE_INTEGRITY
            | ERROR_CODE
            | UNKNOWN_ATTRIBUTES
            | CHANNEL_NUMBER
            | LIFETIME
            | XOR_PEER_ADDRESS
            | DATA
            | REALM
            | NONCE
            | XOR_RELAYED_ADDRESS
            | REQUESTED_ADDRESS_FAMILY
            | EVEN_PORT
            | REQUESTED_TRANSPORT
            | DONT_FRAGMENT
            | MESSAGE_INTEGRITY_SHA256
            | PASSWORD_ALGORITHM
            | USERHASH
            | XOR_MAPPED_ADDRESS
            | RESERVATION_TOKEN
            | CONNECTION_ID
            | PASSWORD_ALGORITHMS
            | ALTERNATE_DOMAIN
            | SOFTWARE
            | ALTERNATE_SERVER
            | FINGERPRINT
            | ICMP
            | ADDITIONAL_ADDRESS_FAMILY
            | ADDRESS_ERROR_CODE
    )
}

/// RFC 8489 §18.5 password algorithm numbers.
pub const PASSWORD_ALGORITHM_MD5: u16 = 0x0001;
pub const PASSWORD_ALGORITHM_SHA256: u16 = 0x0002;

/// RFC 8489 §14.3: USERNAME MUST be less than 513 bytes.
pub const MAX_USERNAME_LEN: usize = 513;
/// RFC 8489 §14.8/§14.9/§14.10/§14.14: REALM, NONCE, SOFTWARE and reason
/// phrases are fewer than 128 characters, at most 763 bytes when decoding;
/// ALTERNATE-DOMAIN (§14.16) is held to the same bound.
pub const MAX_TEXT_LEN: usize = 763;

/// Address family as carried by REQUESTED-ADDRESS-FAMILY and friends
/// (0x01 IPv4, 0x02 IPv6).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    V4,
    V6,
}

impl AddressFamily {
    /// The family for a wire byte (0x01 or 0x02).
    pub fn from_byte(b: u8) -> Option<AddressFamily> {
        match b {
            0x01 => Some(AddressFamily::V4),
            0x02 => Some(AddressFamily::V6),
            _ => None,
        }
    }
    /// The wire byte.
    pub fn as_byte(self) -> u8 {
        match self {
            AddressFamily::V4 => 0x01,
            AddressFamily::V6 => 0x02,
        }
    }
    /// The family of an address.
    pub fn of(addr: &SocketAddr) -> AddressFamily {
        match addr {
            SocketAddr::V4(_) => AddressFamily::V4,
            SocketAddr::V6(_) => AddressFamily::V6,
        }
    }
}

/// One attribute as framed on the wire.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RawAttr<'a> {
    pub typ: u16,
    /// The value, without padding.
    pub value: &'a [u8],
    /// Offset of the attribute's 4-byte header from the start of the message.
    pub offset: usize,
}

/// A decoded attribute. Variable-size values stay borrowed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Attribute<'a> {
    MappedAddress(SocketAddr),
    XorMappedAddress(SocketAddr),
    Username(&'a [u8]),
    UserHash(&'a [u8; 32]),
    MessageIntegrity(&'a [u8; 20]),
    /// 16 to 32 bytes, a multiple of 4 (RFC 8489 §14.6).
    MessageIntegritySha256(&'a [u8]),
    Fingerprint(u32),
    ErrorCode {
        code: u16,
        reason: &'a [u8],
    },
    Realm(&'a [u8]),
    Nonce(&'a [u8]),
    /// The raw list; walk it with [`password_algorithms`].
    PasswordAlgorithms(&'a [u8]),
    PasswordAlgorithm {
        algorithm: u16,
        params: &'a [u8],
    },
    /// The raw list of 16-bit types; walk it with [`unknown_attributes`].
    UnknownAttributes(&'a [u8]),
    Software(&'a [u8]),
    AlternateServer(SocketAddr),
    AlternateDomain(&'a [u8]),
    ChannelNumber(u16),
    Lifetime(u32),
    XorPeerAddress(SocketAddr),
    Data(&'a [u8]),
    XorRelayedAddress(SocketAddr),
    RequestedAddressFamily(AddressFamily),
    AdditionalAddressFamily(AddressFamily),
    AddressErrorCode {
        family: AddressFamily,
        code: u16,
        reason: &'a [u8],
    },
    /// The R bit.
    EvenPort(bool),
    /// The protocol number (17 for UDP, 6 for TCP).
    RequestedTransport(u8),
    DontFragment,
    ReservationToken(&'a [u8; 8]),
    /// RFC 6062 §6.2: names one peer data connection.
    ConnectionId(u32),
    Icmp {
        typ: u8,
        code: u8,
        data: u32,
    },
    /// A type this codec does not know.
    Unknown {
        typ: u16,
        value: &'a [u8],
    },
}

impl<'a> Attribute<'a> {
    /// Decodes one attribute; XOR-ed addresses need the message's transaction id.
    pub fn decode(raw: RawAttr<'a>, tid: &TransactionId) -> Result<Attribute<'a>, DecodeError> {
        let typ = raw.typ;
        let v = raw.value;
        let bad = DecodeError::BadAttribute(typ);
        let text = |max: usize| if v.len() <= max { Ok(v) } else { Err(bad) };
        let u32_value = || fixed::<4>(v).map(u32::from_be_bytes).ok_or(bad);
        let family = |b: u8| AddressFamily::from_byte(b).ok_or(bad);
        let xor = |v: &[u8]| decode_xor_address(v, tid).map_err(|_| bad);
        let attr = match typ {
            MAPPED_ADDRESS => Attribute::MappedAddress(decode_address(v).ok_or(bad)?),
            ALTERNATE_SERVER => Attribute::AlternateServer(decode_address(v).ok_or(bad)?),
            XOR_MAPPED_ADDRESS => Attribute::XorMappedAddress(xor(v)?),
            XOR_PEER_ADDRESS => Attribute::XorPeerAddress(xor(v)?),
            XOR_RELAYED_ADDRESS => Attribute::XorRelayedAddress(xor(v)?),
            // RFC 8489 §14.3: USERNAME MUST contain less than 513 bytes.
            USERNAME => Attribute::Username(text(MAX_USERNAME_LEN)?),
            // RFC 8489 §14.9/§14.10/§14.14/§14.16: bounded text.
            REALM => Attribute::Realm(text(MAX_TEXT_LEN)?),
            NONCE => Attribute::Nonce(text(MAX_TEXT_LEN)?),
            SOFTWARE => Attribute::Software(text(MAX_TEXT_LEN)?),
            ALTERNATE_DOMAIN => Attribute::AlternateDomain(text(MAX_TEXT_LEN)?),
            // RFC 8489 §14.4: USERHASH is 32 bytes.
            USERHASH => Attribute::UserHash(v.try_into().map_err(|_| bad)?),
            // RFC 8489 §14.5: MESSAGE-INTEGRITY is 20 bytes.
            MESSAGE_INTEGRITY => Attribute::MessageIntegrity(v.try_into().map_err(|_| bad)?),
            // RFC 8489 §14.6: at least 16 bytes, at most 32, a multiple of 4.
            MESSAGE_INTEGRITY_SHA256 => {
                if !is_valid_sha256_mac_len(v.len()) {
                    return Err(bad);
                }
                Attribute::MessageIntegritySha256(v)
            }
            FINGERPRINT => Attribute::Fingerprint(u32_value()?),
            ERROR_CODE => {
                let [_, _, class, number, reason @ ..] = v else {
                    return Err(bad);
                };
                let code = error_code_from_wire(*class, *number).ok_or(bad)?;
                Attribute::ErrorCode {
                    code,
                    reason: reason_phrase(reason).ok_or(bad)?,
                }
            }
            ADDRESS_ERROR_CODE => {
                // RFC 8656 §18.12: family, reserved, class, number, reason phrase.
                let [fam, _, class, number, reason @ ..] = v else {
                    return Err(bad);
                };
                let code = error_code_from_wire(*class, *number).ok_or(bad)?;
                Attribute::AddressErrorCode {
                    family: family(*fam)?,
                    code,
                    reason: reason_phrase(reason).ok_or(bad)?,
                }
            }
            // RFC 8489 §14.11: a list of (algorithm, length, padded params) entries.
            PASSWORD_ALGORITHMS if is_valid_password_algorithms(v) => {
                Attribute::PasswordAlgorithms(v)
            }
            PASSWORD_ALGORITHMS => return Err(bad),
            PASSWORD_ALGORITHM => match next_algorithm(v) {
                Some(((algorithm, params), [])) => {
                    Attribute::PasswordAlgorithm { algorithm, params }
                }
                _ => return Err(bad),
            },
            UNKNOWN_ATTRIBUTES => {
                // RFC 8489 §14.13: a list of 16-bit attribute types.
                if v.len() % 2 != 0 {
                    return Err(bad);
                }
                Attribute::UnknownAttributes(v)
            }
            // RFC 8656 §18.1: CHANNEL-NUMBER is a 16-bit number plus 16 RFFU bits.
            CHANNEL_NUMBER => Attribute::ChannelNumber(
                fixed::<4>(v)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]))
                    .ok_or(bad)?,
            ),
            // RFC 8656 §18.2: LIFETIME is 32 bits.
            LIFETIME => Attribute::Lifetime(u32_value()?),
            DATA => Attribute::Data(v),
            // RFC 8656 §18.6/§18.11: a 1-byte family followed by 24 RFFU bits.
            REQUESTED_ADDRESS_FAMILY => {
                Attribute::RequestedAddressFamily(family(fixed::<4>(v).ok_or(bad)?[0])?)
            }
            ADDITIONAL_ADDRESS_FAMILY => {
                Attribute::AdditionalAddressFamily(family(fixed::<4>(v).ok_or(bad)?[0])?)
            }
            // RFC 8656 §18.7: EVEN-PORT is one byte (R bit + 7 reserved); some
            // agents send it padded into a 4-byte value, which is accepted too.
            EVEN_PORT => match v {
                [b] | [b, _, _, _] => Attribute::EvenPort(b & 0x80 != 0),
                _ => return Err(bad),
            },
            // RFC 8656 §18.8: protocol number in the first byte, then 24 RFFU bits.
            REQUESTED_TRANSPORT => Attribute::RequestedTransport(fixed::<4>(v).ok_or(bad)?[0]),
            // RFC 8656 §18.9: DONT-FRAGMENT has no value.
            DONT_FRAGMENT => {
                if !v.is_empty() {
                    return Err(bad);
                }
                Attribute::DontFragment
            }
            // RFC 8656 §18.10: RESERVATION-TOKEN is 8 bytes.
            RESERVATION_TOKEN => Attribute::ReservationToken(v.try_into().map_err(|_| bad)?),
            // RFC 6062 §6.2: a 32-bit value.
            CONNECTION_ID => Attribute::ConnectionId(u32::from_be_bytes(fixed::<4>(v).ok_or(bad)?)),
            // RFC 8656 §18.13: 16 reserved bits, type, code, 32 bits of error data.
            ICMP => {
                let [_, _, t, c, d0, d1, d2, d3] = fixed::<8>(v).ok_or(bad)?;
                Attribute::Icmp {
                    typ: t,
                    code: c,
                    data: u32::from_be_bytes([d0, d1, d2, d3]),
                }
            }
            _ => Attribute::Unknown { typ, value: v },
        };
        Ok(attr)
    }

    /// The wire type of this attribute.
    pub fn typ(&self) -> u16 {
        match self {
            Attribute::MappedAddress(_) => MAPPED_ADDRESS,
            Attribute::XorMappedAddress(_) => XOR_MAPPED_ADDRESS,
            Attribute::Username(_) => USERNAME,
            Attribute::UserHash(_) => USERHASH,
            Attribute::MessageIntegrity(_) => MESSAGE_INTEGRITY,
            Attribute::MessageIntegritySha256(_) => MESSAGE_INTEGRITY_SHA256,
            Attribute::Fingerprint(_) => FINGERPRINT,
            Attribute::ErrorCode { .. } => ERROR_CODE,
            Attribute::Realm(_) => REALM,
            Attribute::Nonce(_) => NONCE,
            Attribute::PasswordAlgorithms(_) => PASSWORD_ALGORITHMS,
            Attribute::PasswordAlgorithm { .. } => PASSWORD_ALGORITHM,
            Attribute::UnknownAttributes(_) => UNKNOWN_ATTRIBUTES,
            Attribute::Software(_) => SOFTWARE,
            Attribute::AlternateServer(_) => ALTERNATE_SERVER,
            Attribute::AlternateDomain(_) => ALTERNATE_DOMAIN,
            Attribute::ChannelNumber(_) => CHANNEL_NUMBER,
            Attribute::Lifetime(_) => LIFETIME,
            Attribute::XorPeerAddress(_) => XOR_PEER_ADDRESS,
            Attribute::Data(_) => DATA,
            Attribute::XorRelayedAddress(_) => XOR_RELAYED_ADDRESS,
            Attribute::RequestedAddressFamily(_) => REQUESTED_ADDRESS_FAMILY,
            Attribute::AdditionalAddressFamily(_) => ADDITIONAL_ADDRESS_FAMILY,
            Attribute::AddressErrorCode { .. } => ADDRESS_ERROR_CODE,
            Attribute::EvenPort(_) => EVEN_PORT,
            Attribute::RequestedTransport(_) => REQUESTED_TRANSPORT,
            Attribute::DontFragment => DONT_FRAGMENT,
            Attribute::ReservationToken(_) => RESERVATION_TOKEN,
            Attribute::ConnectionId(_) => CONNECTION_ID,
            Attribute::Icmp { .. } => ICMP,
            Attribute::Unknown { typ, .. } => *typ,
        }
    }
}

/// A fixed-size value, copied out (only used for values of at most 8 bytes).
fn fixed<const N: usize>(v: &[u8]) -> Option<[u8; N]> {
    v.try_into().ok()
}

/// RFC 8489 §14.6: a MESSAGE-INTEGRITY-SHA256 value is 16–32 bytes, a multiple of 4.
pub(crate) fn is_valid_sha256_mac_len(len: usize) -> bool {
    (16..=32).contains(&len) && len % 4 == 0
}

/// RFC 8489 §14.8: class (3–6, low 3 bits of the byte; the rest is reserved)
/// times 100 plus number (0–99).
fn error_code_from_wire(class: u8, number: u8) -> Option<u16> {
    let class = class & 0x07;
    if !(3..=6).contains(&class) || number > 99 {
        return None;
    }
    Some(u16::from(class) * 100 + u16::from(number))
}

/// Splits a code 300–699 into its wire class and number.
pub(crate) fn error_code_to_wire(code: u16) -> Option<(u8, u8)> {
    if !(300..=699).contains(&code) {
        return None;
    }
    Some(((code / 100) as u8, (code % 100) as u8))
}

/// RFC 8489 §14.8: the reason phrase is at most 763 bytes when decoding.
fn reason_phrase(reason: &[u8]) -> Option<&[u8]> {
    (reason.len() <= MAX_TEXT_LEN).then_some(reason)
}

/// An (algorithm, params) pair from PASSWORD-ALGORITHMS or PASSWORD-ALGORITHM.
type AlgorithmEntry<'a> = (u16, &'a [u8]);

/// One (algorithm, params) entry at the front of `v` (RFC 8489 §14.11/§14.12),
/// and what follows it. Params are padded to 4 bytes; the padding of the last
/// entry may be absent (it is then the attribute's own padding).
fn next_algorithm(v: &[u8]) -> Option<(AlgorithmEntry<'_>, &[u8])> {
    let (head, rest) = v.split_at_checked(4)?;
    let algorithm = u16::from_be_bytes([head[0], head[1]]);
    let plen = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let params = rest.get(..plen)?;
    let skip = ((plen + 3) & !3).min(rest.len());
    let rest = rest.get(skip..)?;
    Some(((algorithm, params), rest))
}

/// True if every byte of a PASSWORD-ALGORITHMS value belongs to a well-formed entry.
pub(crate) fn is_valid_password_algorithms(mut v: &[u8]) -> bool {
    while !v.is_empty() {
        match next_algorithm(v) {
            Some((_, rest)) => v = rest,
            None => return false,
        }
    }
    true
}

/// Iterates the (algorithm, params) pairs of a PASSWORD-ALGORITHMS value;
/// stops at the first malformed entry.
pub fn password_algorithms(value: &[u8]) -> impl Iterator<Item = (u16, &[u8])> + '_ {
    let mut rest = value;
    std::iter::from_fn(move || {
        let (entry, next) = next_algorithm(rest)?;
        rest = next;
        Some(entry)
    })
}

/// Iterates the types listed in an UNKNOWN-ATTRIBUTES value.
pub fn unknown_attributes(value: &[u8]) -> impl Iterator<Item = u16> + '_ {
    value
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
}

/// Decodes an XOR-ed address value (XOR-MAPPED-ADDRESS, XOR-PEER-ADDRESS,
/// XOR-RELAYED-ADDRESS). This function does not know which of them it was
/// given, so a malformed value is reported as `BadAttribute(XOR_MAPPED_ADDRESS)`;
/// `Attribute::decode` reports the real type.
pub fn decode_xor_address(value: &[u8], tid: &TransactionId) -> Result<SocketAddr, DecodeError> {
    decode_address(value)
        .map(|a| xor_address(a, tid))
        .ok_or(DecodeError::BadAttribute(XOR_MAPPED_ADDRESS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::encode_address;

    const TID: TransactionId = [
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ];

    fn dec(typ: u16, value: &[u8]) -> Result<Attribute<'_>, DecodeError> {
        Attribute::decode(
            RawAttr {
                typ,
                value,
                offset: 20,
            },
            &TID,
        )
    }

    #[test]
    fn known_types() {
        let all = [
            MAPPED_ADDRESS,
            USERNAME,
            MESSAGE_INTEGRITY,
            ERROR_CODE,
            UNKNOWN_ATTRIBUTES,
            CHANNEL_NUMBER,
            LIFETIME,
            XOR_PEER_ADDRESS,
            DATA,
            REALM,
            NONCE,
            XOR_RELAYED_ADDRESS,
            REQUESTED_ADDRESS_FAMILY,
            EVEN_PORT,
            REQUESTED_TRANSPORT,
            DONT_FRAGMENT,
            MESSAGE_INTEGRITY_SHA256,
            PASSWORD_ALGORITHM,
            USERHASH,
            XOR_MAPPED_ADDRESS,
            RESERVATION_TOKEN,
            CONNECTION_ID,
            PASSWORD_ALGORITHMS,
            ALTERNATE_DOMAIN,
            SOFTWARE,
            ALTERNATE_SERVER,
            FINGERPRINT,
            ICMP,
            ADDITIONAL_ADDRESS_FAMILY,
            ADDRESS_ERROR_CODE,
        ];
        for t in all {
            assert!(is_known(t), "{t:#06x}");
            // Every known type decodes to something other than Unknown (or fails).
            if let Ok(a) = dec(t, &[0; 8]) {
                assert!(!matches!(a, Attribute::Unknown { .. }), "{t:#06x}");
                assert_eq!(a.typ(), t);
            }
        }
        for t in [0x0000, 0x0024, 0x8029, 0x802A, 0xFFFF] {
            assert!(!is_known(t));
            assert_eq!(
                dec(t, b"xyz"),
                Ok(Attribute::Unknown {
                    typ: t,
                    value: b"xyz"
                })
            );
        }
        assert!(is_comprehension_required(0x7FFF));
        assert!(!is_comprehension_required(0x8000));
    }

    #[test]
    fn xor_address_round_trip() {
        // RFC 5769 §2.2/§2.3 values.
        let v4: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        let v6: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .unwrap();
        let wire_v4 = [0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43];
        assert_eq!(decode_xor_address(&wire_v4, &TID), Ok(v4));
        for addr in [
            v4,
            v6,
            "[::1]:1".parse().unwrap(),
            "0.0.0.0:0".parse().unwrap(),
        ] {
            let mut out = [0u8; 20];
            let out = &mut out[..address_value_len(&addr)];
            encode_address(out, addr, Some(&TID)).unwrap();
            assert_eq!(decode_xor_address(out, &TID), Ok(addr));
            assert_eq!(
                dec(XOR_PEER_ADDRESS, out),
                Ok(Attribute::XorPeerAddress(addr))
            );
            encode_address(out, addr, None).unwrap();
            assert_eq!(dec(MAPPED_ADDRESS, out), Ok(Attribute::MappedAddress(addr)));
        }
        let mut v4_out = [0u8; 8];
        assert_eq!(encode_address(&mut v4_out, v6, None), None);
    }

    #[test]
    fn address_checks() {
        let bad = |t, v: &[u8]| assert_eq!(dec(t, v), Err(DecodeError::BadAttribute(t)));
        bad(XOR_MAPPED_ADDRESS, &[0, 1, 0, 0, 1, 2, 3]); // short IPv4
        bad(XOR_RELAYED_ADDRESS, &[0, 2, 0, 0, 1, 2, 3, 4]); // IPv6 family, IPv4 length
        bad(MAPPED_ADDRESS, &[0, 3, 0, 0, 1, 2, 3, 4]); // family 3
        bad(ALTERNATE_SERVER, &[0, 1, 0, 0, 1, 2, 3, 4, 5]); // trailing byte
        bad(MAPPED_ADDRESS, &[]);
        assert_eq!(
            decode_xor_address(&[0, 1], &TID),
            Err(DecodeError::BadAttribute(XOR_MAPPED_ADDRESS))
        );
    }

    #[test]
    fn error_codes() {
        assert_eq!(
            dec(ERROR_CODE, &[0, 0, 4, 1, b'U']),
            Ok(Attribute::ErrorCode {
                code: 401,
                reason: b"U"
            })
        );
        assert_eq!(
            dec(ERROR_CODE, &[0, 0, 6, 99]),
            Ok(Attribute::ErrorCode {
                code: 699,
                reason: b""
            })
        );
        assert_eq!(
            dec(ERROR_CODE, &[0, 0, 3, 0]),
            Ok(Attribute::ErrorCode {
                code: 300,
                reason: b""
            })
        );
        // Reserved bits above the class are ignored.
        assert_eq!(
            dec(ERROR_CODE, &[0, 0, 0xF4, 38]),
            Ok(Attribute::ErrorCode {
                code: 438,
                reason: b""
            })
        );
        for v in [
            &[0, 0, 2, 0][..],
            &[0, 0, 7, 0],
            &[0, 0, 4, 100],
            &[0, 0, 4],
        ] {
            assert_eq!(
                dec(ERROR_CODE, v),
                Err(DecodeError::BadAttribute(ERROR_CODE))
            );
        }
        let long = [b'x'; 4 + MAX_TEXT_LEN + 1];
        assert!(dec(
            ERROR_CODE,
            &[&[0, 0, 4, 0][..], &long[..MAX_TEXT_LEN]].concat()
        )
        .is_ok());
        assert!(dec(
            ERROR_CODE,
            &[&[0, 0, 4, 0][..], &long[..MAX_TEXT_LEN + 1]].concat()
        )
        .is_err());
        assert_eq!(
            dec(ADDRESS_ERROR_CODE, &[2, 0, 4, 40, b'x']),
            Ok(Attribute::AddressErrorCode {
                family: AddressFamily::V6,
                code: 440,
                reason: b"x"
            })
        );
        assert!(dec(ADDRESS_ERROR_CODE, &[3, 0, 4, 40]).is_err());
        assert!(dec(ADDRESS_ERROR_CODE, &[1, 0, 9, 40]).is_err());
        assert_eq!(error_code_to_wire(487), Some((4, 87)));
        assert_eq!(error_code_to_wire(299), None);
        assert_eq!(error_code_to_wire(700), None);
    }

    #[test]
    fn fixed_sizes() {
        let bad = |t: u16, v: &[u8]| {
            assert_eq!(
                dec(t, v),
                Err(DecodeError::BadAttribute(t)),
                "{t:#06x} {v:?}"
            )
        };
        assert_eq!(
            dec(CHANNEL_NUMBER, &[0x40, 0x01, 0, 0]),
            Ok(Attribute::ChannelNumber(0x4001))
        );
        bad(CHANNEL_NUMBER, &[0x40, 0x01]);
        assert_eq!(
            dec(LIFETIME, &[0, 0, 0x02, 0x58]),
            Ok(Attribute::Lifetime(600))
        );
        bad(LIFETIME, &[0, 0, 2]);
        assert_eq!(
            dec(REQUESTED_TRANSPORT, &[17, 0, 0, 0]),
            Ok(Attribute::RequestedTransport(17))
        );
        bad(REQUESTED_TRANSPORT, &[17]);
        assert_eq!(dec(EVEN_PORT, &[0x80]), Ok(Attribute::EvenPort(true)));
        assert_eq!(dec(EVEN_PORT, &[0x7F]), Ok(Attribute::EvenPort(false)));
        assert_eq!(
            dec(EVEN_PORT, &[0x80, 0, 0, 0]),
            Ok(Attribute::EvenPort(true))
        );
        bad(EVEN_PORT, &[]);
        bad(EVEN_PORT, &[0x80, 0]);
        assert_eq!(
            dec(RESERVATION_TOKEN, &[1; 8]),
            Ok(Attribute::ReservationToken(&[1; 8]))
        );
        bad(RESERVATION_TOKEN, &[1; 7]);
        assert_eq!(
            dec(CONNECTION_ID, &[0, 0, 1, 2]),
            Ok(Attribute::ConnectionId(0x0102))
        );
        bad(CONNECTION_ID, &[1; 3]);
        bad(CONNECTION_ID, &[1; 8]);
        assert_eq!(dec(DONT_FRAGMENT, &[]), Ok(Attribute::DontFragment));
        bad(DONT_FRAGMENT, &[0]);
        assert_eq!(dec(USERHASH, &[9; 32]), Ok(Attribute::UserHash(&[9; 32])));
        bad(USERHASH, &[9; 31]);
        assert_eq!(
            dec(MESSAGE_INTEGRITY, &[3; 20]),
            Ok(Attribute::MessageIntegrity(&[3; 20]))
        );
        bad(MESSAGE_INTEGRITY, &[3; 32]);
        for n in [16, 20, 24, 28, 32] {
            assert_eq!(
                dec(MESSAGE_INTEGRITY_SHA256, &[5; 32][..n]),
                Ok(Attribute::MessageIntegritySha256(&[5; 32][..n]))
            );
        }
        for n in [0, 12, 15, 17, 30, 36] {
            bad(MESSAGE_INTEGRITY_SHA256, &[5; 36][..n]);
        }
        assert_eq!(
            dec(FINGERPRINT, &[1, 2, 3, 4]),
            Ok(Attribute::Fingerprint(0x01020304))
        );
        bad(FINGERPRINT, &[1, 2, 3]);
        assert_eq!(
            dec(ICMP, &[0, 0, 3, 4, 0, 0, 5, 220]),
            Ok(Attribute::Icmp {
                typ: 3,
                code: 4,
                data: 1500
            })
        );
        bad(ICMP, &[0, 0, 3, 4]);
        assert_eq!(
            dec(REQUESTED_ADDRESS_FAMILY, &[1, 0, 0, 0]),
            Ok(Attribute::RequestedAddressFamily(AddressFamily::V4))
        );
        assert_eq!(
            dec(ADDITIONAL_ADDRESS_FAMILY, &[2, 0, 0, 0]),
            Ok(Attribute::AdditionalAddressFamily(AddressFamily::V6))
        );
        bad(REQUESTED_ADDRESS_FAMILY, &[3, 0, 0, 0]);
        bad(ADDITIONAL_ADDRESS_FAMILY, &[2]);
    }

    #[test]
    fn text_limits() {
        let long = [b'a'; MAX_TEXT_LEN + 1];
        assert!(dec(USERNAME, &long[..MAX_USERNAME_LEN]).is_ok());
        assert_eq!(
            dec(USERNAME, &long[..MAX_USERNAME_LEN + 1]),
            Err(DecodeError::BadAttribute(USERNAME))
        );
        for t in [REALM, NONCE, SOFTWARE, ALTERNATE_DOMAIN] {
            assert!(dec(t, &long[..MAX_TEXT_LEN]).is_ok());
            assert_eq!(dec(t, &long), Err(DecodeError::BadAttribute(t)));
        }
        assert_eq!(dec(DATA, &long), Ok(Attribute::Data(&long)));
    }

    #[test]
    fn algorithm_lists() {
        let list = [0, 2, 0, 0, 0, 1, 0, 0, 0x12, 0x34, 0, 3, 7, 8, 9, 0];
        assert_eq!(
            dec(PASSWORD_ALGORITHMS, &list),
            Ok(Attribute::PasswordAlgorithms(&list))
        );
        let got: Vec<_> = password_algorithms(&list).collect();
        assert_eq!(got, [(2, &[][..]), (1, &[][..]), (0x1234, &[7, 8, 9][..])]);
        // The last entry's padding may be the attribute's own.
        assert_eq!(password_algorithms(&list[..15]).count(), 3);
        assert!(dec(PASSWORD_ALGORITHMS, &list[..15]).is_ok());
        // A truncated entry ends the walk and fails decoding.
        assert_eq!(password_algorithms(&list[..10]).count(), 2);
        assert!(dec(PASSWORD_ALGORITHMS, &list[..10]).is_err());
        assert!(dec(PASSWORD_ALGORITHMS, &list[..14]).is_err());
        assert!(dec(PASSWORD_ALGORITHMS, &[]).is_ok());

        assert_eq!(
            dec(PASSWORD_ALGORITHM, &[0, 2, 0, 0]),
            Ok(Attribute::PasswordAlgorithm {
                algorithm: PASSWORD_ALGORITHM_SHA256,
                params: &[]
            })
        );
        assert_eq!(
            dec(PASSWORD_ALGORITHM, &[0, 9, 0, 1, 7, 0, 0, 0]),
            Ok(Attribute::PasswordAlgorithm {
                algorithm: 9,
                params: &[7]
            })
        );
        assert!(dec(PASSWORD_ALGORITHM, &[0, 2, 0]).is_err());
        assert!(dec(PASSWORD_ALGORITHM, &[0, 2, 0, 0, 0, 1, 0, 0]).is_err());
        assert!(dec(PASSWORD_ALGORITHM, &[0, 2, 0, 2, 1]).is_err());

        let types = [0x00, 0x24, 0x80, 0x29, 0x00, 0x1e];
        assert_eq!(
            dec(UNKNOWN_ATTRIBUTES, &types),
            Ok(Attribute::UnknownAttributes(&types))
        );
        assert_eq!(
            unknown_attributes(&types).collect::<Vec<_>>(),
            [0x0024, 0x8029, 0x001e]
        );
        assert!(dec(UNKNOWN_ATTRIBUTES, &types[..5]).is_err());
        assert_eq!(unknown_attributes(&types[..5]).count(), 2);
    }
}
