//! ChannelData framing (RFC 8656 §12.4).
// STUB: signatures are the contract; bodies are being written.
#![allow(unused_variables, dead_code)]

use super::DecodeError;

/// Lowest and highest valid channel numbers (RFC 8656 §12).
pub const CHANNEL_MIN: u16 = 0x4000;
pub const CHANNEL_MAX: u16 = 0x4FFF;
/// The ChannelData header length.
pub const CHANNEL_HEADER_LEN: usize = 4;

/// A borrowed ChannelData message. Over UDP the datagram may carry up to 3
/// padding bytes after the payload; they are not part of `payload`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ChannelData<'a> {
    pub number: u16,
    pub payload: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Parses a datagram: number in 0x4000–0x4FFF, length not past the end.
    pub fn parse(buf: &'a [u8]) -> Result<ChannelData<'a>, DecodeError> {
        todo!()
    }
}

/// Writes the 4-byte ChannelData header for a payload of `len` bytes.
pub fn write_header(header: &mut [u8; 4], number: u16, len: u16) {
    todo!()
}
