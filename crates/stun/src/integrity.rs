//! MESSAGE-INTEGRITY (HMAC-SHA1), MESSAGE-INTEGRITY-SHA256 and FINGERPRINT
//! checks over a parsed message. MAC comparison is constant-time.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{attr, attr::is_valid_sha256_mac_len, Message, HEADER_LEN};

/// RFC 8489 §14.7: the value FINGERPRINT's CRC-32 is XOR-ed with.
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// Result of checking one integrity attribute.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Integrity {
    /// The attribute is not in the message.
    Missing,
    /// Present and the MAC matches.
    Valid,
    /// Present and the MAC does not match (or the value is malformed).
    Invalid,
}

/// HMAC-SHA1 of the concatenation of `parts`. `None` only if the MAC
/// implementation rejected the key, which HMAC never does.
pub(crate) fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> Option<[u8; 20]> {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).ok()?;
    for p in parts {
        mac.update(p);
    }
    Some(mac.finalize().into_bytes().into())
}

/// HMAC-SHA256 of the concatenation of `parts` (see [`hmac_sha1`]).
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Option<[u8; 32]> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
    for p in parts {
        mac.update(p);
    }
    Some(mac.finalize().into_bytes().into())
}

/// RFC 8489 §14.7: CRC-32 of the message up to FINGERPRINT, XOR 0x5354554e.
pub(crate) fn fingerprint_of(prefix: &[u8]) -> u32 {
    crc32fast::hash(prefix) ^ FINGERPRINT_XOR
}

/// The header of `msg` with its length field set to cover everything up to
/// `end` (RFC 8489 §14.5/§14.6: the length is adjusted to end at the
/// integrity attribute), plus the bytes between header and the attribute at
/// `offset`. Nothing is copied but the 20-byte header.
fn mac_input(msg: &[u8], offset: usize, end: usize) -> Option<([u8; HEADER_LEN], &[u8])> {
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(msg.get(..HEADER_LEN)?);
    let len = u16::try_from(end.checked_sub(HEADER_LEN)?).ok()?;
    header[2..4].copy_from_slice(&len.to_be_bytes());
    Some((header, msg.get(HEADER_LEN..offset)?))
}

/// Checks the first MESSAGE-INTEGRITY against `key`.
pub fn check_sha1(msg: &Message<'_>, key: &[u8]) -> Integrity {
    let Some(a) = msg.get(attr::MESSAGE_INTEGRITY) else {
        return Integrity::Missing;
    };
    let verdict = || -> Option<bool> {
        // RFC 8489 §14.5: the HMAC is 20 bytes.
        let received: &[u8; 20] = a.value.try_into().ok()?;
        let (header, body) = mac_input(msg.as_bytes(), a.offset, a.offset + 4 + 20)?;
        let computed = hmac_sha1(key, &[&header, body])?;
        Some(computed.ct_eq(received).into())
    };
    match verdict() {
        Some(true) => Integrity::Valid,
        _ => Integrity::Invalid,
    }
}

/// Checks the first MESSAGE-INTEGRITY-SHA256 against `key` (truncated values
/// of 16–32 bytes are compared on their length).
pub fn check_sha256(msg: &Message<'_>, key: &[u8]) -> Integrity {
    let Some(a) = msg.get(attr::MESSAGE_INTEGRITY_SHA256) else {
        return Integrity::Missing;
    };
    let verdict = || -> Option<bool> {
        // RFC 8489 §14.6: 16 to 32 bytes, a multiple of 4.
        if !is_valid_sha256_mac_len(a.value.len()) {
            return None;
        }
        let (header, body) = mac_input(msg.as_bytes(), a.offset, a.offset + 4 + a.value.len())?;
        let computed = hmac_sha256(key, &[&header, body])?;
        // RFC 8489 §14.6: a truncated MAC is compared on its leading bytes.
        let prefix = computed.get(..a.value.len())?;
        Some(prefix.ct_eq(a.value).into())
    };
    match verdict() {
        Some(true) => Integrity::Valid,
        _ => Integrity::Invalid,
    }
}

/// Checks FINGERPRINT (must be the last attribute when present).
pub fn check_fingerprint(msg: &Message<'_>) -> Integrity {
    let Some(a) = msg.get(attr::FINGERPRINT) else {
        return Integrity::Missing;
    };
    let buf = msg.as_bytes();
    let verdict = || -> Option<bool> {
        // RFC 8489 §14.7: FINGERPRINT MUST be the last attribute.
        if a.offset + 8 != buf.len() {
            return None;
        }
        let received = u32::from_be_bytes(a.value.try_into().ok()?);
        // Being last, the header's length already covers FINGERPRINT.
        Some(fingerprint_of(buf.get(..a.offset)?) == received)
    };
    match verdict() {
        Some(true) => Integrity::Valid,
        _ => Integrity::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Class, MessageWriter, Method};

    const TID: [u8; 12] = [9; 12];

    fn signed(buf: &mut [u8], sha1: bool, sha256: bool, fp: bool) -> usize {
        let mut w = MessageWriter::new(buf, Method::Allocate, Class::Request, &TID).unwrap();
        w.raw(attr::USERNAME, b"alice").unwrap();
        if sha1 {
            w.message_integrity(b"secret").unwrap();
        }
        if sha256 {
            w.message_integrity_sha256(b"secret").unwrap();
        }
        if fp {
            w.fingerprint().unwrap();
        }
        w.finish()
    }

    #[test]
    fn missing_valid_invalid() {
        let mut buf = [0u8; 200];
        let n = signed(&mut buf, false, false, false);
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!(check_sha1(&m, b"secret"), Integrity::Missing);
        assert_eq!(check_sha256(&m, b"secret"), Integrity::Missing);
        assert_eq!(check_fingerprint(&m), Integrity::Missing);

        let n = signed(&mut buf, true, false, true);
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!(check_sha1(&m, b"secret"), Integrity::Valid);
        assert_eq!(check_fingerprint(&m), Integrity::Valid);
        // Any flipped bit before the MAC breaks it (and FINGERPRINT).
        for i in [1, 3, 5, 10, 24, 30] {
            let mut t = buf;
            t[i] ^= 0x01;
            if let Ok(m) = Message::parse(&t[..n]) {
                assert_eq!(check_sha1(&m, b"secret"), Integrity::Invalid, "byte {i}");
                assert_eq!(check_fingerprint(&m), Integrity::Invalid, "byte {i}");
            }
        }
    }

    #[test]
    fn truncated_sha256() {
        let mut buf = [0u8; 200];
        let n = signed(&mut buf, false, true, false);
        // Rebuild with a 16-byte MI-SHA256 holding the MAC's first 16 bytes:
        // header length and the attribute's length both shrink by 16.
        let mut t = buf;
        let at = n - 36;
        t[at + 2..at + 4].copy_from_slice(&16u16.to_be_bytes());
        let body = (n - 16 - HEADER_LEN) as u16;
        t[2..4].copy_from_slice(&body.to_be_bytes());
        let mac = hmac_sha256(b"secret", &[&t[..at]]).unwrap();
        t[at + 4..at + 20].copy_from_slice(&mac[..16]);
        let m = Message::parse(&t[..n - 16]).unwrap();
        assert_eq!(check_sha256(&m, b"secret"), Integrity::Valid);
        assert_eq!(check_sha256(&m, b"secreT"), Integrity::Invalid);
        // The untruncated original still verifies.
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!(check_sha256(&m, b"secret"), Integrity::Valid);
    }

    #[test]
    fn fingerprint_must_be_last() {
        let mut buf = [0u8; 200];
        let mut w = MessageWriter::new(&mut buf, Method::Binding, Class::Request, &TID).unwrap();
        w.fingerprint().unwrap();
        w.raw(attr::SOFTWARE, b"x").unwrap();
        let n = w.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!(check_fingerprint(&m), Integrity::Invalid);
    }

    #[test]
    fn malformed_values_are_invalid() {
        let mut buf = [0u8; 200];
        let mut w = MessageWriter::new(&mut buf, Method::Binding, Class::Request, &TID).unwrap();
        w.raw(attr::MESSAGE_INTEGRITY, &[0; 16]).unwrap();
        let n = w.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!(check_sha1(&m, b"k"), Integrity::Invalid);

        let mut w = MessageWriter::new(&mut buf, Method::Binding, Class::Request, &TID).unwrap();
        w.raw(attr::MESSAGE_INTEGRITY_SHA256, &[0; 12]).unwrap();
        w.raw(attr::FINGERPRINT, &[0; 8]).unwrap();
        let n = w.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!(check_sha256(&m, b"k"), Integrity::Invalid);
        assert_eq!(check_fingerprint(&m), Integrity::Invalid);
    }

    #[test]
    fn sha1_after_sha256_is_ignored() {
        // RFC 8489 §14.6: MESSAGE-INTEGRITY after MESSAGE-INTEGRITY-SHA256 is ignored.
        let mut buf = [0u8; 200];
        let mut w = MessageWriter::new(&mut buf, Method::Binding, Class::Request, &TID).unwrap();
        w.message_integrity_sha256(b"k").unwrap();
        w.message_integrity(b"k").unwrap();
        let n = w.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!(check_sha256(&m, b"k"), Integrity::Valid);
        assert_eq!(check_sha1(&m, b"k"), Integrity::Missing);
    }
}
