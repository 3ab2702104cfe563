//! `MessageWriter`: builds a STUN message in a caller-owned buffer.

use std::net::SocketAddr;
use std::ops::Range;

use super::{
    addr::{address_value_len, encode_address},
    attr::{self, error_code_to_wire, Attribute},
    integrity::{fingerprint_of, hmac_sha1, hmac_sha256},
    message::{message_type, padded},
    AddressFamily, Class, EncodeError, Method, TransactionId, HEADER_LEN, MAGIC_COOKIE,
};

/// The largest message body the 16-bit length field can describe, rounded
/// down to the 4-byte attribute alignment.
const MAX_BODY_LEN: usize = 0xFFFC;

/// Writes one message into `buf`. The header's length field is kept up to
/// date after each attribute, so `as_bytes()` is always a valid message.
/// Padding bytes are written as zeros.
pub struct MessageWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
}

/// Writes a 20-byte STUN header with body length `body_len` into `h`.
fn write_header(h: &mut [u8], method: Method, class: Class, body_len: u16, tid: &TransactionId) {
    if let Some(h) = h.get_mut(..HEADER_LEN) {
        h[0..2].copy_from_slice(&message_type(method, class).to_be_bytes());
        h[2..4].copy_from_slice(&body_len.to_be_bytes());
        h[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        h[8..20].copy_from_slice(tid);
    }
}

impl<'b> MessageWriter<'b> {
    /// Starts a message with the given header (body length 0) at the front
    /// of `buf`; `BufferTooSmall` if `buf` is shorter than 20 bytes.
    pub fn new(
        buf: &'b mut [u8],
        method: Method,
        class: Class,
        tid: &TransactionId,
    ) -> Result<Self, EncodeError> {
        if buf.len() < HEADER_LEN {
            return Err(EncodeError::BufferTooSmall);
        }
        write_header(buf, method, class, 0, tid);
        Ok(MessageWriter {
            buf,
            len: HEADER_LEN,
        })
    }

    /// Reserves an attribute of type `typ` with a `len`-byte value: writes its
    /// header and zero padding, updates the message length, and hands back the
    /// value bytes (zeroed) for the caller to fill.
    fn reserve(&mut self, typ: u16, len: usize) -> Result<&mut [u8], EncodeError> {
        let wire_len = u16::try_from(len).map_err(|_| EncodeError::ValueTooLong)?;
        let start = self.len;
        let end = start + 4 + padded(len);
        if end - HEADER_LEN > MAX_BODY_LEN {
            return Err(EncodeError::ValueTooLong);
        }
        let slot = self
            .buf
            .get_mut(start..end)
            .ok_or(EncodeError::BufferTooSmall)?;
        // RFC 8489 §14: padding MUST be set to zero on sending.
        slot.fill(0);
        slot[0..2].copy_from_slice(&typ.to_be_bytes());
        slot[2..4].copy_from_slice(&wire_len.to_be_bytes());
        self.len = end;
        // `end - HEADER_LEN` ≤ MAX_BODY_LEN, so it fits the 16-bit field.
        let body = (end - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&body.to_be_bytes());
        Ok(&mut self.buf[start + 4..start + 4 + len])
    }

    /// Drops everything from `start` on (a reservation that could not be filled).
    fn rewind(&mut self, start: usize) {
        self.len = start;
        let body = (start - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&body.to_be_bytes());
    }

    /// Appends an attribute with a raw value (padded with zeros to 4 bytes).
    pub fn raw(&mut self, typ: u16, value: &[u8]) -> Result<(), EncodeError> {
        self.reserve(typ, value.len())?.copy_from_slice(value);
        Ok(())
    }

    /// A text attribute bounded to `max` bytes.
    fn text(&mut self, typ: u16, value: &[u8], max: usize) -> Result<(), EncodeError> {
        if value.len() > max {
            return Err(EncodeError::ValueTooLong);
        }
        self.raw(typ, value)
    }

    /// A 4-byte value whose first byte is `b` and the rest reserved zeros.
    fn first_byte(&mut self, typ: u16, b: u8) -> Result<(), EncodeError> {
        self.raw(typ, &[b, 0, 0, 0])
    }

    /// ERROR-CODE / ADDRESS-ERROR-CODE body: `lead` byte, reserved, class, number, reason.
    fn error_like(
        &mut self,
        typ: u16,
        lead: u8,
        code: u16,
        reason: &[u8],
    ) -> Result<(), EncodeError> {
        let (class, number) = error_code_to_wire(code).ok_or(EncodeError::InvalidValue)?;
        if reason.len() > attr::MAX_TEXT_LEN {
            return Err(EncodeError::ValueTooLong);
        }
        let v = self.reserve(typ, 4 + reason.len())?;
        v[0] = lead;
        v[2] = class;
        v[3] = number;
        v[4..].copy_from_slice(reason);
        Ok(())
    }

    /// Appends any typed attribute (the inverse of `Attribute::decode`).
    pub fn attr(&mut self, attr: &Attribute<'_>) -> Result<(), EncodeError> {
        let typ = attr.typ();
        match *attr {
            Attribute::MappedAddress(a) | Attribute::AlternateServer(a) => self.address(typ, a),
            Attribute::XorMappedAddress(a)
            | Attribute::XorPeerAddress(a)
            | Attribute::XorRelayedAddress(a) => self.xor_address(typ, a),
            Attribute::Username(v) => self.text(typ, v, attr::MAX_USERNAME_LEN),
            Attribute::Realm(v)
            | Attribute::Nonce(v)
            | Attribute::Software(v)
            | Attribute::AlternateDomain(v) => self.text(typ, v, attr::MAX_TEXT_LEN),
            Attribute::UserHash(v) => self.raw(typ, v),
            Attribute::MessageIntegrity(v) => self.raw(typ, v),
            Attribute::MessageIntegritySha256(v) => {
                if !attr::is_valid_sha256_mac_len(v.len()) {
                    return Err(EncodeError::InvalidValue);
                }
                self.raw(typ, v)
            }
            Attribute::Fingerprint(v) | Attribute::Lifetime(v) => self.u32(typ, v),
            Attribute::ErrorCode { code, reason } => self.error_like(typ, 0, code, reason),
            Attribute::AddressErrorCode {
                family,
                code,
                reason,
            } => self.error_like(typ, family.as_byte(), code, reason),
            Attribute::PasswordAlgorithms(v) => {
                if !attr::is_valid_password_algorithms(v) {
                    return Err(EncodeError::InvalidValue);
                }
                self.raw(typ, v)
            }
            Attribute::PasswordAlgorithm { algorithm, params } => {
                let plen = u16::try_from(params.len()).map_err(|_| EncodeError::ValueTooLong)?;
                let v = self.reserve(typ, 4 + padded(params.len()))?;
                v[0..2].copy_from_slice(&algorithm.to_be_bytes());
                v[2..4].copy_from_slice(&plen.to_be_bytes());
                v[4..4 + params.len()].copy_from_slice(params);
                Ok(())
            }
            Attribute::UnknownAttributes(v) => {
                if v.len() % 2 != 0 {
                    return Err(EncodeError::InvalidValue);
                }
                self.raw(typ, v)
            }
            Attribute::ChannelNumber(n) => {
                let [a, b] = n.to_be_bytes();
                self.raw(typ, &[a, b, 0, 0])
            }
            Attribute::Data(v) => self.raw(typ, v),
            Attribute::RequestedAddressFamily(f) | Attribute::AdditionalAddressFamily(f) => {
                self.first_byte(typ, f.as_byte())
            }
            Attribute::EvenPort(r) => self.raw(typ, &[if r { 0x80 } else { 0 }]),
            Attribute::RequestedTransport(p) => self.first_byte(typ, p),
            Attribute::DontFragment => self.raw(typ, &[]),
            Attribute::ReservationToken(v) => self.raw(typ, v),
            Attribute::ConnectionId(id) => self.raw(typ, &id.to_be_bytes()),
            Attribute::Icmp { typ: t, code, data } => {
                let [d0, d1, d2, d3] = data.to_be_bytes();
                self.raw(typ, &[0, 0, t, code, d0, d1, d2, d3])
            }
            Attribute::Unknown { typ, value } => self.raw(typ, value),
        }
    }

    /// XOR-MAPPED-ADDRESS, XOR-PEER-ADDRESS or XOR-RELAYED-ADDRESS.
    pub fn xor_address(&mut self, typ: u16, addr: SocketAddr) -> Result<(), EncodeError> {
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&self.buf[8..HEADER_LEN]);
        let v = self.reserve(typ, address_value_len(&addr))?;
        encode_address(v, addr, Some(&tid)).ok_or(EncodeError::InvalidValue)
    }

    /// MAPPED-ADDRESS or ALTERNATE-SERVER.
    pub fn address(&mut self, typ: u16, addr: SocketAddr) -> Result<(), EncodeError> {
        let v = self.reserve(typ, address_value_len(&addr))?;
        encode_address(v, addr, None).ok_or(EncodeError::InvalidValue)
    }

    /// ERROR-CODE (300–699) with a reason phrase.
    pub fn error_code(&mut self, code: u16, reason: &str) -> Result<(), EncodeError> {
        self.error_like(attr::ERROR_CODE, 0, code, reason.as_bytes())
    }

    /// ADDRESS-ERROR-CODE (RFC 8656 §18.12).
    pub fn address_error_code(
        &mut self,
        family: AddressFamily,
        code: u16,
        reason: &str,
    ) -> Result<(), EncodeError> {
        self.error_like(
            attr::ADDRESS_ERROR_CODE,
            family.as_byte(),
            code,
            reason.as_bytes(),
        )
    }

    /// UNKNOWN-ATTRIBUTES.
    pub fn unknown_attributes(&mut self, types: &[u16]) -> Result<(), EncodeError> {
        let len = types
            .len()
            .checked_mul(2)
            .ok_or(EncodeError::ValueTooLong)?;
        let v = self.reserve(attr::UNKNOWN_ATTRIBUTES, len)?;
        for (out, t) in v.chunks_exact_mut(2).zip(types) {
            out.copy_from_slice(&t.to_be_bytes());
        }
        Ok(())
    }

    /// A 32-bit attribute such as LIFETIME.
    pub fn u32(&mut self, typ: u16, value: u32) -> Result<(), EncodeError> {
        self.raw(typ, &value.to_be_bytes())
    }

    /// MESSAGE-INTEGRITY (HMAC-SHA1 keyed with `key`), length field adjusted
    /// as RFC 8489 §14.5 requires.
    pub fn message_integrity(&mut self, key: &[u8]) -> Result<(), EncodeError> {
        let start = self.len;
        // Reserving first sets the length field to end at this attribute, which
        // is what RFC 8489 §14.5 says the HMAC must cover.
        self.reserve(attr::MESSAGE_INTEGRITY, 20)?;
        let Some(mac) = hmac_sha1(key, &[&self.buf[..start]]) else {
            self.rewind(start);
            return Err(EncodeError::InvalidValue);
        };
        self.buf[start + 4..start + 24].copy_from_slice(&mac);
        Ok(())
    }

    /// MESSAGE-INTEGRITY-SHA256 (full 32 bytes).
    pub fn message_integrity_sha256(&mut self, key: &[u8]) -> Result<(), EncodeError> {
        let start = self.len;
        // RFC 8489 §14.6: length field adjusted to end at this attribute.
        self.reserve(attr::MESSAGE_INTEGRITY_SHA256, 32)?;
        let Some(mac) = hmac_sha256(key, &[&self.buf[..start]]) else {
            self.rewind(start);
            return Err(EncodeError::InvalidValue);
        };
        self.buf[start + 4..start + 36].copy_from_slice(&mac);
        Ok(())
    }

    /// FINGERPRINT (RFC 8489 §14.7). Must be last.
    pub fn fingerprint(&mut self) -> Result<(), EncodeError> {
        let start = self.len;
        // RFC 8489 §14.7: the CRC covers the header with a length that includes FINGERPRINT.
        self.reserve(attr::FINGERPRINT, 4)?;
        let crc = fingerprint_of(&self.buf[..start]);
        self.buf[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    /// Ends the message; returns its length.
    pub fn finish(self) -> usize {
        self.len
    }
}

/// Bytes in front of the payload of a Data indication for `peer`
/// (header, XOR-PEER-ADDRESS, DATA attribute header): 36 for IPv4, 48 for IPv6.
pub fn data_indication_prefix_len(peer: &SocketAddr) -> usize {
    HEADER_LEN + 4 + address_value_len(peer) + 4
}

/// Turns a payload already sitting at `buf[payload_start..payload_start + payload_len]`
/// into a Data indication (RFC 8656 §11.6) in place, without moving the payload:
/// writes the prefix just before it and up to 3 zero padding bytes after it.
/// Needs `data_indication_prefix_len(peer)` bytes of headroom and 3 of tailroom.
/// Returns the range of the finished message in `buf`.
pub fn data_indication_in_place(
    buf: &mut [u8],
    payload_start: usize,
    payload_len: usize,
    peer: SocketAddr,
    tid: &TransactionId,
) -> Result<Range<usize>, EncodeError> {
    let addr_len = address_value_len(&peer);
    let prefix = data_indication_prefix_len(&peer);
    let start = payload_start
        .checked_sub(prefix)
        .ok_or(EncodeError::BufferTooSmall)?;
    let data_len = u16::try_from(payload_len).map_err(|_| EncodeError::ValueTooLong)?;
    let body_len = prefix - HEADER_LEN + padded(payload_len);
    let body = u16::try_from(body_len)
        .ok()
        .filter(|&b| usize::from(b) <= MAX_BODY_LEN)
        .ok_or(EncodeError::ValueTooLong)?;
    let end = payload_start
        .checked_add(padded(payload_len))
        .ok_or(EncodeError::BufferTooSmall)?;
    let msg = buf.get_mut(start..end).ok_or(EncodeError::BufferTooSmall)?;
    // RFC 8656 §11: a Data indication carries XOR-PEER-ADDRESS and DATA.
    write_header(msg, Method::Data, Class::Indication, body, tid);
    let (attr_hdr, rest) = msg[HEADER_LEN..].split_at_mut(4);
    attr_hdr[0..2].copy_from_slice(&attr::XOR_PEER_ADDRESS.to_be_bytes());
    attr_hdr[2..4].copy_from_slice(&(addr_len as u16).to_be_bytes());
    let (addr, rest) = rest.split_at_mut(addr_len);
    encode_address(addr, peer, Some(tid)).ok_or(EncodeError::InvalidValue)?;
    rest[0..2].copy_from_slice(&attr::DATA.to_be_bytes());
    rest[2..4].copy_from_slice(&data_len.to_be_bytes());
    // RFC 8489 §14: padding bytes after the payload (written as zeros).
    rest[4 + payload_len..].fill(0);
    Ok(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        integrity::{check_fingerprint, check_sha1, check_sha256, Integrity},
        Message,
    };

    const TID: TransactionId = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    #[test]
    fn header_length_and_padding() {
        let mut buf = [0xEEu8; 64];
        let mut w = MessageWriter::new(&mut buf, Method::Allocate, Class::Request, &TID).unwrap();
        assert_eq!(
            w.as_bytes(),
            &[0, 3, 0, 0, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
        );
        w.raw(attr::USERNAME, b"abcde").unwrap();
        assert_eq!(w.len(), 32);
        assert_eq!(&w.as_bytes()[2..4], &[0, 12]);
        assert_eq!(
            &w.as_bytes()[20..32],
            &[0, 6, 0, 5, b'a', b'b', b'c', b'd', b'e', 0, 0, 0]
        );
        w.attr(&Attribute::RequestedTransport(17)).unwrap();
        assert_eq!(&w.as_bytes()[2..4], &[0, 20]);
        let n = w.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!((m.method(), m.class()), (Method::Allocate, Class::Request));
        assert_eq!(m.transaction_id(), &TID);
    }

    #[test]
    fn buffer_too_small() {
        let mut tiny = [0u8; 19];
        assert!(matches!(
            MessageWriter::new(&mut tiny, Method::Binding, Class::Request, &TID),
            Err(EncodeError::BufferTooSmall)
        ));
        let mut buf = [0u8; 40];
        let mut w = MessageWriter::new(&mut buf, Method::Binding, Class::Success, &TID).unwrap();
        w.raw(attr::SOFTWARE, b"12345678").unwrap(); // 32 bytes used
        assert_eq!(
            w.raw(attr::SOFTWARE, b"123456789"),
            Err(EncodeError::BufferTooSmall)
        );
        assert_eq!(w.message_integrity(b"k"), Err(EncodeError::BufferTooSmall));
        assert_eq!(
            w.xor_address(attr::XOR_MAPPED_ADDRESS, "[::1]:1".parse().unwrap()),
            Err(EncodeError::BufferTooSmall)
        );
        // A failed append leaves the message as it was.
        assert_eq!(w.len(), 32);
        assert!(Message::parse(w.as_bytes()).is_ok());
        w.fingerprint().unwrap();
        assert_eq!(w.len(), 40);
        assert_eq!(w.fingerprint(), Err(EncodeError::BufferTooSmall));
        assert_eq!(
            check_fingerprint(&Message::parse(w.as_bytes()).unwrap()),
            Integrity::Valid
        );
    }

    #[test]
    fn value_limits() {
        let mut buf = vec![0u8; 70_000];
        let mut w = MessageWriter::new(&mut buf, Method::Binding, Class::Error, &TID).unwrap();
        assert_eq!(w.error_code(299, ""), Err(EncodeError::InvalidValue));
        assert_eq!(w.error_code(700, ""), Err(EncodeError::InvalidValue));
        assert_eq!(
            w.error_code(400, &"x".repeat(764)),
            Err(EncodeError::ValueTooLong)
        );
        assert_eq!(
            w.attr(&Attribute::Username(&[b'u'; 514])),
            Err(EncodeError::ValueTooLong)
        );
        assert_eq!(
            w.attr(&Attribute::Realm(&[b'r'; 764])),
            Err(EncodeError::ValueTooLong)
        );
        assert_eq!(
            w.attr(&Attribute::MessageIntegritySha256(&[0; 18])),
            Err(EncodeError::InvalidValue)
        );
        assert_eq!(
            w.attr(&Attribute::UnknownAttributes(&[0; 3])),
            Err(EncodeError::InvalidValue)
        );
        assert_eq!(
            w.attr(&Attribute::PasswordAlgorithms(&[0, 1, 0])),
            Err(EncodeError::InvalidValue)
        );
        assert_eq!(
            w.raw(attr::DATA, &[0; 65_536]),
            Err(EncodeError::ValueTooLong)
        );
        // The whole body must fit the 16-bit length field.
        w.raw(attr::DATA, &[0; 65_000]).unwrap();
        assert_eq!(w.raw(attr::DATA, &[0; 600]), Err(EncodeError::ValueTooLong));
        w.error_code(420, "Unknown Attribute").unwrap();
        w.unknown_attributes(&[0x0024, 0x7FFF, 0x0001]).unwrap();
        let n = w.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        let tid = m.transaction_id();
        let mut it = m
            .raw_attributes()
            .skip(1)
            .map(|a| Attribute::decode(a, tid).unwrap());
        assert_eq!(
            it.next(),
            Some(Attribute::ErrorCode {
                code: 420,
                reason: b"Unknown Attribute"
            })
        );
        let Some(Attribute::UnknownAttributes(list)) = it.next() else {
            panic!()
        };
        assert_eq!(
            attr::unknown_attributes(list).collect::<Vec<_>>(),
            [0x0024, 0x7FFF, 0x0001]
        );
    }

    #[test]
    fn integrity_order_and_checks() {
        let mut buf = [0u8; 256];
        let mut w = MessageWriter::new(&mut buf, Method::Refresh, Class::Success, &TID).unwrap();
        w.u32(attr::LIFETIME, 600).unwrap();
        w.message_integrity(b"key").unwrap();
        w.message_integrity_sha256(b"key").unwrap();
        w.fingerprint().unwrap();
        let n = w.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        let types: Vec<u16> = m.attributes().map(|a| a.typ).collect();
        assert_eq!(
            types,
            [
                attr::LIFETIME,
                attr::MESSAGE_INTEGRITY,
                attr::MESSAGE_INTEGRITY_SHA256,
                attr::FINGERPRINT
            ]
        );
        assert_eq!(check_sha1(&m, b"key"), Integrity::Valid);
        assert_eq!(check_sha256(&m, b"key"), Integrity::Valid);
        assert_eq!(check_fingerprint(&m), Integrity::Valid);
        assert_eq!(check_sha1(&m, b"kez"), Integrity::Invalid);
        assert_eq!(check_sha256(&m, b"kez"), Integrity::Invalid);
    }

    #[test]
    fn every_variant_round_trips() {
        let v4: SocketAddr = "198.51.100.7:55432".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:3478".parse().unwrap();
        let attrs = [
            Attribute::MappedAddress(v4),
            Attribute::XorMappedAddress(v6),
            Attribute::Username(b"user"),
            Attribute::UserHash(&[7; 32]),
            Attribute::MessageIntegrity(&[8; 20]),
            Attribute::MessageIntegritySha256(&[9; 24]),
            Attribute::Fingerprint(0xDEADBEEF),
            Attribute::ErrorCode {
                code: 438,
                reason: b"Stale Nonce",
            },
            Attribute::Realm(b"example.org"),
            Attribute::Nonce(b"nonce"),
            Attribute::PasswordAlgorithms(&[0, 2, 0, 0, 0, 1, 0, 0]),
            Attribute::PasswordAlgorithm {
                algorithm: 2,
                params: &[],
            },
            Attribute::PasswordAlgorithm {
                algorithm: 9,
                params: &[1, 2, 3, 4, 5],
            },
            Attribute::UnknownAttributes(&[0, 0x24]),
            Attribute::Software(b"uturn"),
            Attribute::AlternateServer(v6),
            Attribute::AlternateDomain(b"turn.example.org"),
            Attribute::ChannelNumber(0x4FFF),
            Attribute::Lifetime(3600),
            Attribute::XorPeerAddress(v4),
            Attribute::Data(b"payload!!"),
            Attribute::XorRelayedAddress(v4),
            Attribute::RequestedAddressFamily(AddressFamily::V6),
            Attribute::AdditionalAddressFamily(AddressFamily::V6),
            Attribute::AddressErrorCode {
                family: AddressFamily::V4,
                code: 440,
                reason: b"",
            },
            Attribute::EvenPort(true),
            Attribute::EvenPort(false),
            Attribute::RequestedTransport(17),
            Attribute::DontFragment,
            Attribute::ReservationToken(&[1, 2, 3, 4, 5, 6, 7, 8]),
            Attribute::Icmp {
                typ: 3,
                code: 1,
                data: 0x0102_0304,
            },
            Attribute::Unknown {
                typ: 0x8029,
                value: &[1, 2, 3],
            },
        ];
        let mut buf = [0u8; 1024];
        let mut w =
            MessageWriter::new(&mut buf, Method::Other(0x0FF), Class::Indication, &TID).unwrap();
        for a in &attrs {
            w.attr(a).unwrap();
        }
        let n = w.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!(m.method(), Method::Other(0x0FF));
        let back: Vec<_> = m
            .raw_attributes()
            .map(|a| Attribute::decode(a, m.transaction_id()).unwrap())
            .collect();
        assert_eq!(back, attrs);
        // And encode(decode(bytes)) gives the same bytes.
        let mut again = [0u8; 1024];
        let mut w =
            MessageWriter::new(&mut again, m.method(), m.class(), m.transaction_id()).unwrap();
        for a in &back {
            w.attr(a).unwrap();
        }
        assert_eq!(w.as_bytes(), &buf[..n]);
    }

    #[test]
    fn data_indication_v4_v6() {
        for peer in ["203.0.113.9:40000", "[2001:db8::9]:40000"] {
            let peer: SocketAddr = peer.parse().unwrap();
            for len in [0usize, 1, 5, 8, 1200] {
                let mut buf = vec![0xAAu8; 48 + len + 3];
                let start = 48;
                for (i, b) in buf[start..start + len].iter_mut().enumerate() {
                    *b = i as u8;
                }
                let r = data_indication_in_place(&mut buf, start, len, peer, &TID).unwrap();
                assert_eq!(r.start, start - data_indication_prefix_len(&peer));
                assert_eq!((r.end - r.start) % 4, 0);
                let m = Message::parse(&buf[r.clone()]).unwrap();
                assert_eq!((m.method(), m.class()), (Method::Data, Class::Indication));
                let tid = m.transaction_id();
                let got: Vec<_> = m
                    .attributes()
                    .map(|a| Attribute::decode(a, tid).unwrap())
                    .collect();
                let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
                assert_eq!(
                    got,
                    [Attribute::XorPeerAddress(peer), Attribute::Data(&payload)]
                );
                // The padding is zeroed; bytes outside the range are untouched.
                assert!(buf[start + len..r.end].iter().all(|&b| b == 0));
                assert!(buf[..r.start].iter().all(|&b| b == 0xAA));
                // Same bytes as the writer would produce.
                let mut w_buf = vec![0u8; 2000];
                let mut w =
                    MessageWriter::new(&mut w_buf, Method::Data, Class::Indication, &TID).unwrap();
                w.xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
                w.raw(attr::DATA, &payload).unwrap();
                assert_eq!(w.as_bytes(), &buf[r]);
            }
        }
        let v4: SocketAddr = "203.0.113.9:1".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::9]:1".parse().unwrap();
        assert_eq!(
            (
                data_indication_prefix_len(&v4),
                data_indication_prefix_len(&v6)
            ),
            (36, 48)
        );
        let mut buf = [0u8; 100];
        // Not enough headroom for IPv6, enough for IPv4.
        assert_eq!(
            data_indication_in_place(&mut buf, 40, 5, v6, &TID),
            Err(EncodeError::BufferTooSmall)
        );
        assert!(data_indication_in_place(&mut buf, 40, 5, v4, &TID).is_ok());
        // Not enough tailroom for the padding.
        assert_eq!(
            data_indication_in_place(&mut buf, 48, 53, v6, &TID),
            Err(EncodeError::BufferTooSmall)
        );
        assert!(data_indication_in_place(&mut buf, 48, 52, v6, &TID).is_ok());
        assert_eq!(
            data_indication_in_place(&mut buf, usize::MAX, 5, v6, &TID),
            Err(EncodeError::BufferTooSmall)
        );
        let mut big = vec![0u8; 70_000];
        assert_eq!(
            data_indication_in_place(&mut big, 48, 65_535, v6, &TID),
            Err(EncodeError::ValueTooLong)
        );
        assert_eq!(
            data_indication_in_place(&mut big, 48, 65_536, v6, &TID),
            Err(EncodeError::ValueTooLong)
        );
        assert!(data_indication_in_place(&mut big, 48, 65_480, v6, &TID).is_ok());
    }
}
