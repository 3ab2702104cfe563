//! Attribute types and typed decoding (RFC 8489 §14, RFC 8656 §18, RFC 6156).
// STUB: signatures are the contract; bodies are being written.
#![allow(unused_variables, dead_code)]

use std::net::SocketAddr;

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
    todo!()
}

/// RFC 8489 §18.5 password algorithm numbers.
pub const PASSWORD_ALGORITHM_MD5: u16 = 0x0001;
pub const PASSWORD_ALGORITHM_SHA256: u16 = 0x0002;

/// Address family as carried by REQUESTED-ADDRESS-FAMILY and friends
/// (0x01 IPv4, 0x02 IPv6).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    V4,
    V6,
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
    ErrorCode { code: u16, reason: &'a [u8] },
    Realm(&'a [u8]),
    Nonce(&'a [u8]),
    /// The raw list; walk it with [`password_algorithms`].
    PasswordAlgorithms(&'a [u8]),
    PasswordAlgorithm { algorithm: u16, params: &'a [u8] },
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
    AddressErrorCode { family: AddressFamily, code: u16, reason: &'a [u8] },
    /// The R bit.
    EvenPort(bool),
    /// The protocol number (17 for UDP, 6 for TCP).
    RequestedTransport(u8),
    DontFragment,
    ReservationToken(&'a [u8; 8]),
    Icmp { typ: u8, code: u8, data: u32 },
    /// A type this codec does not know.
    Unknown { typ: u16, value: &'a [u8] },
}

impl<'a> Attribute<'a> {
    /// Decodes one attribute; XOR-ed addresses need the message's transaction id.
    pub fn decode(raw: RawAttr<'a>, tid: &TransactionId) -> Result<Attribute<'a>, DecodeError> {
        todo!()
    }
    /// The wire type of this attribute.
    pub fn typ(&self) -> u16 {
        todo!()
    }
}

/// Iterates the (algorithm, params) pairs of a PASSWORD-ALGORITHMS value;
/// stops at the first malformed entry.
pub fn password_algorithms(value: &[u8]) -> impl Iterator<Item = (u16, &[u8])> + '_ {
    std::iter::empty()
}

/// Iterates the types listed in an UNKNOWN-ATTRIBUTES value.
pub fn unknown_attributes(value: &[u8]) -> impl Iterator<Item = u16> + '_ {
    std::iter::empty()
}

/// Decodes an XOR-ed address value (XOR-MAPPED-ADDRESS, XOR-PEER-ADDRESS,
/// XOR-RELAYED-ADDRESS).
pub fn decode_xor_address(value: &[u8], tid: &TransactionId) -> Result<SocketAddr, DecodeError> {
    todo!()
}
