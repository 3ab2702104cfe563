//! MESSAGE-INTEGRITY (HMAC-SHA1), MESSAGE-INTEGRITY-SHA256 and FINGERPRINT
//! checks over a parsed message. MAC comparison is constant-time.
// STUB: signatures are the contract; bodies are being written.
#![allow(unused_variables, dead_code)]

use super::Message;

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

/// Checks the first MESSAGE-INTEGRITY against `key`.
pub fn check_sha1(msg: &Message<'_>, key: &[u8]) -> Integrity {
    todo!()
}

/// Checks the first MESSAGE-INTEGRITY-SHA256 against `key` (truncated values
/// of 16–32 bytes are compared on their length).
pub fn check_sha256(msg: &Message<'_>, key: &[u8]) -> Integrity {
    todo!()
}

/// Checks FINGERPRINT (must be the last attribute when present).
pub fn check_fingerprint(msg: &Message<'_>) -> Integrity {
    todo!()
}
