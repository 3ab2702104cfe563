//! `Message`: a validated, borrowed view of one STUN message.
// STUB: signatures are the contract; bodies are being written.
#![allow(unused_variables, dead_code)]

use super::{attr::RawAttr, Class, DecodeError, Method, PacketKind, TransactionId};

/// Classifies a datagram by its first byte (RFC 8656 §12).
pub fn classify(buf: &[u8]) -> PacketKind {
    todo!()
}

impl Method {
    pub fn from_u16(v: u16) -> Method {
        todo!()
    }
    pub fn as_u16(self) -> u16 {
        todo!()
    }
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
        todo!()
    }
    pub fn method(&self) -> Method {
        todo!()
    }
    pub fn class(&self) -> Class {
        todo!()
    }
    pub fn transaction_id(&self) -> &'a TransactionId {
        todo!()
    }
    /// The whole message.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
    /// Every attribute, in wire order, including those after MESSAGE-INTEGRITY.
    pub fn raw_attributes(&self) -> RawAttrIter<'a> {
        todo!()
    }
    /// The attributes an agent may act on (RFC 8489 §14.5/§14.6): everything
    /// before the first MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256, those
    /// integrity attributes themselves (MI, then MI-SHA256 directly after it),
    /// and FINGERPRINT. Anything else after the integrity attribute is skipped.
    pub fn attributes(&self) -> RawAttrIter<'a> {
        todo!()
    }
    /// The first occurrence of `typ` among `attributes()`.
    pub fn get(&self, typ: u16) -> Option<RawAttr<'a>> {
        todo!()
    }
}

/// Iterator over attributes of a parsed message (framing already validated).
#[derive(Clone, Debug)]
pub struct RawAttrIter<'a> {
    buf: &'a [u8],
    pos: usize,
    trusted_only: bool,
    seen_integrity: bool,
}

impl<'a> Iterator for RawAttrIter<'a> {
    type Item = RawAttr<'a>;
    fn next(&mut self) -> Option<RawAttr<'a>> {
        todo!()
    }
}
