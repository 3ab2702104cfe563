//! `Message`: a validated, borrowed view of one STUN message.

use super::{
    attr::{self, RawAttr},
    Class, DecodeError, Method, PacketKind, TransactionId, HEADER_LEN, MAGIC_COOKIE,
};

/// Classifies a datagram by its first byte (RFC 8656 §12).
pub fn classify(buf: &[u8]) -> PacketKind {
    match buf.first() {
        Some(0x00..=0x03) => PacketKind::Stun,
        Some(0x40..=0x4F) => PacketKind::ChannelData,
        _ => PacketKind::Other,
    }
}

impl Method {
    /// Maps a 12-bit method number (higher bits are ignored).
    pub fn from_u16(v: u16) -> Method {
        match v & 0x0FFF {
            0x001 => Method::Binding,
            0x003 => Method::Allocate,
            0x004 => Method::Refresh,
            0x006 => Method::Send,
            0x007 => Method::Data,
            0x008 => Method::CreatePermission,
            0x009 => Method::ChannelBind,
            0x00A => Method::Connect,
            0x00B => Method::ConnectionBind,
            0x00C => Method::ConnectionAttempt,
            other => Method::Other(other),
        }
    }
    /// The 12-bit method number (`Other` values are masked to 12 bits).
    pub fn as_u16(self) -> u16 {
        match self {
            Method::Binding => 0x001,
            Method::Allocate => 0x003,
            Method::Refresh => 0x004,
            Method::Send => 0x006,
            Method::Data => 0x007,
            Method::CreatePermission => 0x008,
            Method::ChannelBind => 0x009,
            Method::Connect => 0x00A,
            Method::ConnectionBind => 0x00B,
            Method::ConnectionAttempt => 0x00C,
            Method::Other(v) => v & 0x0FFF,
        }
    }
}

impl Class {
    /// The two class bits (C1 C0): 0b00 request, 0b01 indication,
    /// 0b10 success response, 0b11 error response.
    pub fn as_bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }
    /// The class for two class bits (only the low two bits are used).
    pub fn from_bits(bits: u16) -> Class {
        match bits & 0b11 {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        }
    }
}

/// RFC 8489 §5: builds the 14-bit message type, interleaving the class bits
/// C1 (bit 8) and C0 (bit 4) with the method bits M11–M0.
pub fn message_type(method: Method, class: Class) -> u16 {
    let m = method.as_u16();
    let c = class.as_bits();
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 0b01) << 4) | ((c & 0b10) << 7)
}

/// RFC 8489 §5: splits a message type into method and class.
pub fn split_message_type(t: u16) -> (Method, Class) {
    let m = (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80);
    let c = ((t >> 4) & 0b01) | ((t >> 7) & 0b10);
    (Method::from_u16(m), Class::from_bits(c))
}

/// Rounds an attribute value length up to the 4-byte boundary (RFC 8489 §14).
pub(crate) const fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// Reads a big-endian u16 at `at`, if it is in bounds.
pub(crate) fn be16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Reads the attribute framed at `pos` in `msg`: its header must fit, and so
/// must its value plus padding. `None` when out of bounds.
fn attr_at(msg: &[u8], pos: usize) -> Option<(RawAttr<'_>, usize)> {
    let typ = be16(msg, pos)?;
    let len = usize::from(be16(msg, pos + 2)?);
    let start = pos + 4;
    let value = msg.get(start..start + len)?;
    let next = start + padded(len);
    if next > msg.len() {
        return None;
    }
    Some((
        RawAttr {
            typ,
            value,
            offset: pos,
        },
        next,
    ))
}

/// A STUN message whose header and attribute framing have been checked: after
/// `parse` succeeds no accessor can panic or read out of bounds.
#[derive(Copy, Clone, Debug)]
pub struct Message<'a> {
    buf: &'a [u8],
}

impl<'a> Message<'a> {
    /// Parses one datagram. The datagram must be exactly one message
    /// (20 + header length bytes); every attribute's framing must fit.
    pub fn parse(buf: &'a [u8]) -> Result<Message<'a>, DecodeError> {
        let Some((header, body)) = buf.split_at_checked(HEADER_LEN) else {
            return Err(DecodeError::Truncated);
        };
        // RFC 8489 §5: the most significant two bits of every STUN message MUST be zeroes.
        if header[0] & 0xC0 != 0 {
            return Err(DecodeError::NotStun);
        }
        // RFC 8489 §5: the magic cookie field MUST contain 0x2112A442.
        if u32::from_be_bytes([header[4], header[5], header[6], header[7]]) != MAGIC_COOKIE {
            return Err(DecodeError::NotStun);
        }
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        // RFC 8489 §5: the message length MUST contain the size of the message in
        // bytes, not including the header; attributes are padded, so it is a multiple of 4.
        if len % 4 != 0 || len != body.len() {
            return Err(DecodeError::BadLength);
        }
        let mut pos = HEADER_LEN;
        while pos < buf.len() {
            // The remaining length is a multiple of 4 and non-zero, so the 4-byte
            // header always fits; only the value plus padding can overrun.
            match attr_at(buf, pos) {
                Some((_, next)) => pos = next,
                None => return Err(DecodeError::AttributeOverrun),
            }
        }
        Ok(Message { buf })
    }
    /// The message type's method.
    pub fn method(&self) -> Method {
        split_message_type(self.message_type()).0
    }
    /// The message type's class.
    pub fn class(&self) -> Class {
        split_message_type(self.message_type()).1
    }
    /// The raw 14-bit message type.
    pub fn message_type(&self) -> u16 {
        be16(self.buf, 0).unwrap_or(0)
    }
    pub fn transaction_id(&self) -> &'a TransactionId {
        // `parse` checked the 20-byte header; the fallback is never taken.
        const ZERO: TransactionId = [0; 12];
        self.buf
            .get(8..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .unwrap_or(&ZERO)
    }
    /// The whole message.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
    /// Every attribute, in wire order, including those after MESSAGE-INTEGRITY.
    pub fn raw_attributes(&self) -> RawAttrIter<'a> {
        RawAttrIter {
            buf: self.buf,
            pos: HEADER_LEN,
            trusted_only: false,
            seen_integrity: false,
            after_sha1: false,
        }
    }
    /// The attributes an agent may act on (RFC 8489 §14.5/§14.6): everything
    /// before the first MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256, those
    /// integrity attributes themselves (MI, then MI-SHA256 directly after it),
    /// and FINGERPRINT. Anything else after the integrity attribute is skipped.
    pub fn attributes(&self) -> RawAttrIter<'a> {
        RawAttrIter {
            buf: self.buf,
            pos: HEADER_LEN,
            trusted_only: true,
            seen_integrity: false,
            after_sha1: false,
        }
    }
    /// The first occurrence of `typ` among `attributes()`.
    pub fn get(&self, typ: u16) -> Option<RawAttr<'a>> {
        self.attributes().find(|a| a.typ == typ)
    }
}

/// Iterator over attributes of a parsed message (framing already validated).
#[derive(Clone, Debug)]
pub struct RawAttrIter<'a> {
    buf: &'a [u8],
    pos: usize,
    trusted_only: bool,
    seen_integrity: bool,
    /// The previous attribute was the first integrity attribute and it was
    /// MESSAGE-INTEGRITY (so a MESSAGE-INTEGRITY-SHA256 may follow).
    after_sha1: bool,
}

impl<'a> Iterator for RawAttrIter<'a> {
    type Item = RawAttr<'a>;
    fn next(&mut self) -> Option<RawAttr<'a>> {
        loop {
            let (a, next) = attr_at(self.buf, self.pos)?;
            self.pos = next;
            if !self.trusted_only {
                return Some(a);
            }
            let after_sha1 = std::mem::take(&mut self.after_sha1);
            if !self.seen_integrity {
                match a.typ {
                    attr::MESSAGE_INTEGRITY => {
                        self.seen_integrity = true;
                        self.after_sha1 = true;
                    }
                    attr::MESSAGE_INTEGRITY_SHA256 => self.seen_integrity = true,
                    _ => {}
                }
                return Some(a);
            }
            match a.typ {
                // RFC 8489 §14.6: MI-SHA256 may follow MESSAGE-INTEGRITY directly.
                attr::MESSAGE_INTEGRITY_SHA256 if after_sha1 => return Some(a),
                // RFC 8489 §14.7: FINGERPRINT comes after the integrity attributes.
                attr::FINGERPRINT => return Some(a),
                // RFC 8489 §14.5: agents MUST ignore all other attributes that follow
                // MESSAGE-INTEGRITY (and likewise after MESSAGE-INTEGRITY-SHA256, §14.6).
                _ => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header for `len` bytes of attributes plus those attributes.
    fn msg(typ: u16, attrs: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&typ.to_be_bytes());
        v.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        v.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        v.extend_from_slice(&[7; 12]);
        v.extend_from_slice(attrs);
        v
    }

    fn attr(typ: u16, value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&typ.to_be_bytes());
        v.extend_from_slice(&(value.len() as u16).to_be_bytes());
        v.extend_from_slice(value);
        v.resize(padded(v.len()), 0);
        v
    }

    #[test]
    fn classify_first_byte() {
        assert_eq!(classify(&[]), PacketKind::Other);
        assert_eq!(classify(&[0x00]), PacketKind::Stun);
        assert_eq!(classify(&[0x03, 1]), PacketKind::Stun);
        assert_eq!(classify(&[0x04]), PacketKind::Other);
        assert_eq!(classify(&[0x40]), PacketKind::ChannelData);
        assert_eq!(classify(&[0x4F]), PacketKind::ChannelData);
        assert_eq!(classify(&[0x50]), PacketKind::Other);
        assert_eq!(classify(&[0x16]), PacketKind::Other);
    }

    #[test]
    fn message_type_interleaving() {
        // RFC 8489 §5 examples: Binding request 0x0001, success 0x0101, error 0x0111.
        assert_eq!(message_type(Method::Binding, Class::Request), 0x0001);
        assert_eq!(message_type(Method::Binding, Class::Success), 0x0101);
        assert_eq!(message_type(Method::Binding, Class::Error), 0x0111);
        assert_eq!(message_type(Method::Binding, Class::Indication), 0x0011);
        assert_eq!(message_type(Method::Allocate, Class::Request), 0x0003);
        assert_eq!(message_type(Method::Data, Class::Indication), 0x0017);
        assert_eq!(message_type(Method::Send, Class::Indication), 0x0016);
        assert_eq!(message_type(Method::ChannelBind, Class::Success), 0x0109);
        // RFC 6062 §6.1: Connect, ConnectionBind, ConnectionAttempt.
        assert_eq!(message_type(Method::Connect, Class::Request), 0x000A);
        assert_eq!(message_type(Method::ConnectionBind, Class::Error), 0x011B);
        assert_eq!(
            message_type(Method::ConnectionAttempt, Class::Indication),
            0x001C
        );
        assert_eq!(Method::from_u16(0x00B), Method::ConnectionBind);
        for m in 0..0x1000u16 {
            for c in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                let t = message_type(Method::from_u16(m), c);
                assert_eq!(t & 0xC000, 0);
                assert_eq!(split_message_type(t), (Method::from_u16(m), c));
            }
        }
    }

    #[test]
    fn parses_minimal_and_accessors() {
        let b = msg(0x0101, &attr(0x8022, b"abc"));
        let m = Message::parse(&b).unwrap();
        assert_eq!(m.method(), Method::Binding);
        assert_eq!(m.class(), Class::Success);
        assert_eq!(m.transaction_id(), &[7; 12]);
        let a: Vec<_> = m.raw_attributes().collect();
        assert_eq!(
            a,
            vec![RawAttr {
                typ: 0x8022,
                value: b"abc",
                offset: 20
            }]
        );
        assert_eq!(m.get(0x8022).unwrap().value, b"abc");
        assert!(m.get(0x0006).is_none());
    }

    #[test]
    fn header_errors() {
        let good = msg(0x0001, &[]);
        assert!(Message::parse(&good).is_ok());
        assert_eq!(
            Message::parse(&good[..19]).unwrap_err(),
            DecodeError::Truncated
        );
        assert_eq!(Message::parse(&[]).unwrap_err(), DecodeError::Truncated);
        let mut bad = good.clone();
        bad[0] = 0x40;
        assert_eq!(Message::parse(&bad).unwrap_err(), DecodeError::NotStun);
        let mut bad = good.clone();
        bad[7] ^= 1;
        assert_eq!(Message::parse(&bad).unwrap_err(), DecodeError::NotStun);
        // Length field says 4 but nothing follows.
        let mut bad = good.clone();
        bad[3] = 4;
        assert_eq!(Message::parse(&bad).unwrap_err(), DecodeError::BadLength);
        // Trailing bytes beyond the length field.
        let mut bad = good.clone();
        bad.extend_from_slice(&[0; 4]);
        assert_eq!(Message::parse(&bad).unwrap_err(), DecodeError::BadLength);
        // Length not a multiple of 4.
        let mut bad = msg(0x0001, &[0, 0, 0, 0]);
        bad[3] = 3;
        bad.pop();
        assert_eq!(Message::parse(&bad).unwrap_err(), DecodeError::BadLength);
    }

    #[test]
    fn truncated_attribute() {
        // Declares 8 bytes of value but only 4 are there.
        let mut a = attr(0x0006, b"abcd");
        a[3] = 8;
        assert_eq!(
            Message::parse(&msg(1, &a)).unwrap_err(),
            DecodeError::AttributeOverrun
        );
        // A 5-byte value without its padding.
        let mut a = attr(0x0006, b"abcd");
        a[3] = 5;
        a.extend_from_slice(&[b'e', 0, 0, 0]);
        assert!(Message::parse(&msg(1, &a)).is_ok());
        a.truncate(8);
        assert_eq!(
            Message::parse(&msg(1, &a)).unwrap_err(),
            DecodeError::AttributeOverrun
        );
    }

    #[test]
    fn trusted_view_skips_after_integrity() {
        let mut body = Vec::new();
        body.extend(attr(attr::USERNAME, b"u"));
        body.extend(attr(attr::MESSAGE_INTEGRITY, &[1; 20]));
        body.extend(attr(attr::MESSAGE_INTEGRITY_SHA256, &[2; 32]));
        body.extend(attr(attr::LIFETIME, &[0, 0, 0, 9]));
        body.extend(attr(attr::MESSAGE_INTEGRITY_SHA256, &[3; 32]));
        body.extend(attr(attr::FINGERPRINT, &[0; 4]));
        let b = msg(1, &body);
        let m = Message::parse(&b).unwrap();
        let raw: Vec<u16> = m.raw_attributes().map(|a| a.typ).collect();
        assert_eq!(raw, [0x0006, 0x0008, 0x001C, 0x000D, 0x001C, 0x8028]);
        let trusted: Vec<u16> = m.attributes().map(|a| a.typ).collect();
        assert_eq!(trusted, [0x0006, 0x0008, 0x001C, 0x8028]);
        assert!(m.get(attr::LIFETIME).is_none());
        assert_eq!(
            m.get(attr::MESSAGE_INTEGRITY_SHA256).unwrap().value,
            &[2; 32]
        );
    }

    #[test]
    fn trusted_view_sha256_first() {
        // MI after MI-SHA256 is ignored (RFC 8489 §14.6); so is MI-SHA256 not directly after MI.
        let mut body = Vec::new();
        body.extend(attr(attr::MESSAGE_INTEGRITY_SHA256, &[2; 32]));
        body.extend(attr(attr::MESSAGE_INTEGRITY, &[1; 20]));
        body.extend(attr(attr::FINGERPRINT, &[0; 4]));
        let b = msg(1, &body);
        let m = Message::parse(&b).unwrap();
        let trusted: Vec<u16> = m.attributes().map(|a| a.typ).collect();
        assert_eq!(trusted, [0x001C, 0x8028]);

        let mut body = Vec::new();
        body.extend(attr(attr::MESSAGE_INTEGRITY, &[1; 20]));
        body.extend(attr(attr::REALM, b"r"));
        body.extend(attr(attr::MESSAGE_INTEGRITY_SHA256, &[2; 32]));
        let b = msg(1, &body);
        let m = Message::parse(&b).unwrap();
        let trusted: Vec<u16> = m.attributes().map(|a| a.typ).collect();
        assert_eq!(trusted, [0x0008]);
        assert_eq!(m.raw_attributes().count(), 3);
    }
}
