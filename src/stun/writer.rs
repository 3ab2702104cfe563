//! `MessageWriter`: builds a STUN message in a caller-owned buffer.
// STUB: signatures are the contract; bodies are being written.
#![allow(unused_variables, dead_code)]

use std::net::SocketAddr;
use std::ops::Range;

use super::{attr::Attribute, AddressFamily, Class, EncodeError, Method, TransactionId};

/// Writes one message into `buf`. The header's length field is kept up to
/// date after each attribute, so `as_bytes()` is always a valid message.
/// Padding bytes are written as zeros.
pub struct MessageWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> MessageWriter<'b> {
    pub fn new(buf: &'b mut [u8], method: Method, class: Class, tid: &TransactionId) -> Result<Self, EncodeError> {
        todo!()
    }
    /// Appends an attribute with a raw value (padded with zeros to 4 bytes).
    pub fn raw(&mut self, typ: u16, value: &[u8]) -> Result<(), EncodeError> {
        todo!()
    }
    /// Appends any typed attribute (the inverse of `Attribute::decode`).
    pub fn attr(&mut self, attr: &Attribute<'_>) -> Result<(), EncodeError> {
        todo!()
    }
    /// XOR-MAPPED-ADDRESS, XOR-PEER-ADDRESS or XOR-RELAYED-ADDRESS.
    pub fn xor_address(&mut self, typ: u16, addr: SocketAddr) -> Result<(), EncodeError> {
        todo!()
    }
    /// MAPPED-ADDRESS or ALTERNATE-SERVER.
    pub fn address(&mut self, typ: u16, addr: SocketAddr) -> Result<(), EncodeError> {
        todo!()
    }
    /// ERROR-CODE (300–699) with a reason phrase.
    pub fn error_code(&mut self, code: u16, reason: &str) -> Result<(), EncodeError> {
        todo!()
    }
    /// ADDRESS-ERROR-CODE (RFC 8656 §18.12).
    pub fn address_error_code(&mut self, family: AddressFamily, code: u16, reason: &str) -> Result<(), EncodeError> {
        todo!()
    }
    /// UNKNOWN-ATTRIBUTES.
    pub fn unknown_attributes(&mut self, types: &[u16]) -> Result<(), EncodeError> {
        todo!()
    }
    /// A 32-bit attribute such as LIFETIME.
    pub fn u32(&mut self, typ: u16, value: u32) -> Result<(), EncodeError> {
        todo!()
    }
    /// MESSAGE-INTEGRITY (HMAC-SHA1 keyed with `key`), length field adjusted
    /// as RFC 8489 §14.5 requires.
    pub fn message_integrity(&mut self, key: &[u8]) -> Result<(), EncodeError> {
        todo!()
    }
    /// MESSAGE-INTEGRITY-SHA256 (full 32 bytes).
    pub fn message_integrity_sha256(&mut self, key: &[u8]) -> Result<(), EncodeError> {
        todo!()
    }
    /// FINGERPRINT (RFC 8489 §14.7). Must be last.
    pub fn fingerprint(&mut self) -> Result<(), EncodeError> {
        todo!()
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
    todo!()
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
    todo!()
}
