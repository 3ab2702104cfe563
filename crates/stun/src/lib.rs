//! STUN wire codec (RFC 8489, with the TURN attributes of RFC 8656 / RFC 6156).
//!
//! Borrowed views over `&[u8]`: nothing here copies or allocates, and no input
//! can make anything here panic.

#![forbid(unsafe_code)]

pub mod addr;
pub mod attr;
pub mod channel;
pub mod framing;
pub mod integrity;
pub mod message;
pub mod writer;

pub use attr::{AddressFamily, Attribute, RawAttr};
pub use channel::ChannelData;
pub use framing::{next_frame, FrameKind, Framing, InvalidStream};
pub use message::{Message, RawAttrIter};
pub use writer::MessageWriter;

/// RFC 8489 §5: the fixed magic cookie.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Length of the STUN header.
pub const HEADER_LEN: usize = 20;
/// A STUN transaction id (96 bits).
pub type TransactionId = [u8; 12];

/// STUN/TURN methods (RFC 8489 §18.2, RFC 8656 §17).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Binding,
    Allocate,
    Refresh,
    Send,
    Data,
    CreatePermission,
    ChannelBind,
    /// RFC 6062 §6.1: TCP allocations.
    Connect,
    ConnectionBind,
    ConnectionAttempt,
    /// Any other 12-bit method value.
    Other(u16),
}

/// The class bits of a STUN message type.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

/// What a datagram on a TURN listener is, judged from its first byte
/// (RFC 8656 §12: 0x00–0x03 STUN, 0x40–0x4F ChannelData).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PacketKind {
    Stun,
    ChannelData,
    Other,
}

/// Why bytes could not be decoded. `Copy`, no allocation.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the header, or than a length field says.
    Truncated,
    /// The two top bits are not zero, or the cookie is wrong.
    NotStun,
    /// The header's length is not a multiple of 4 or does not match the datagram.
    BadLength,
    /// An attribute's length runs past the end of the message.
    AttributeOverrun,
    /// An attribute's value has the wrong size or content for its type.
    BadAttribute(u16),
    /// A ChannelData number outside 0x4000–0x4FFF.
    BadChannel,
}

/// Why a message could not be written.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The caller's buffer is too small.
    BufferTooSmall,
    /// A value longer than its attribute allows (or than 65535 bytes).
    ValueTooLong,
    /// A value that cannot be represented (e.g. error code outside 300–699).
    InvalidValue,
}
