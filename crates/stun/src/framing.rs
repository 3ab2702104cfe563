//! Stream framing: where one STUN message or ChannelData message ends in the
//! bytes of a TCP or TLS stream (RFC 8489 §6.2.2, RFC 8656 §12.5).
//!
//! A connection reader appends what it receives to a buffer and calls
//! [`next_frame`] on it until the answer is not `Complete`:
//!
//! * `Complete { kind, len }`: `buf[..len]` is one frame; hand it to
//!   [`Message::parse`](super::Message::parse) or
//!   [`ChannelData::parse`](super::ChannelData::parse), then drop `len` bytes
//!   from the front. A ChannelData frame includes its padding, which
//!   `ChannelData::parse` ignores.
//! * `Incomplete { missing }`: read at least `missing` more bytes first.
//! * `Invalid(_)`: the stream cannot be split into frames any more; close
//!   the connection.
//!
//! A frame is never longer than [`MAX_FRAME_LEN`], so a reader's buffer of
//! that size never has to grow. Only the header is looked at: whether the
//! frame's content is a valid message is for the parsers to say.

use super::channel::CHANNEL_HEADER_LEN;
use super::HEADER_LEN;

/// The longest STUN frame: a 20-byte header and a 16-bit length.
pub const MAX_STUN_FRAME_LEN: usize = HEADER_LEN + u16::MAX as usize;
/// The longest ChannelData frame: a 4-byte header and a 16-bit length
/// padded up to a multiple of 4.
pub const MAX_CHANNEL_FRAME_LEN: usize = CHANNEL_HEADER_LEN + padded(u16::MAX as usize);
/// The longest frame of either kind: a reader that buffers this much can
/// always complete the frame at the front.
pub const MAX_FRAME_LEN: usize = if MAX_STUN_FRAME_LEN > MAX_CHANNEL_FRAME_LEN {
    MAX_STUN_FRAME_LEN
} else {
    MAX_CHANNEL_FRAME_LEN
};

/// Which parser a frame is for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    Stun,
    ChannelData,
}

/// Why a stream cannot be framed.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum InvalidStream {
    /// The first two bits are neither 00 (STUN) nor 01 (ChannelData).
    NotTurn,
    /// 01 in the first two bits, but a channel number outside 0x4000–0x4FFF.
    BadChannel,
}

/// What is at the front of a stream's buffered bytes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Framing {
    /// `buf[..len]` is one whole frame of `kind`.
    Complete { kind: FrameKind, len: usize },
    /// No whole frame yet: at least `missing` (≥ 1) more bytes are needed.
    Incomplete { missing: usize },
    /// The stream is not TURN: close it.
    Invalid(InvalidStream),
}

/// Rounds up to a multiple of 4.
const fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// Says whether `buf`, the bytes buffered so far from a stream, starts with a
/// whole frame, and how long it is. Never panics, never allocates.
pub fn next_frame(buf: &[u8]) -> Framing {
    let Some(&first) = buf.first() else {
        // The shortest frame is a ChannelData header.
        return Framing::Incomplete {
            missing: CHANNEL_HEADER_LEN,
        };
    };
    let (kind, header_len) = match first {
        // RFC 8489 §5: the most significant two bits of every STUN message are zeroes.
        0x00..=0x3F => (FrameKind::Stun, HEADER_LEN),
        // RFC 8656 §12: channel numbers 0x4000 through 0x4FFF; the first byte decides.
        0x40..=0x4F => (FrameKind::ChannelData, CHANNEL_HEADER_LEN),
        0x50..=0x7F => return Framing::Invalid(InvalidStream::BadChannel),
        _ => return Framing::Invalid(InvalidStream::NotTurn),
    };
    // Both headers carry their 16-bit length in bytes 2 and 3.
    let Some(&[_, _, l0, l1]) = buf.first_chunk::<4>() else {
        return Framing::Incomplete {
            missing: header_len - buf.len(),
        };
    };
    let body = usize::from(u16::from_be_bytes([l0, l1]));
    let len = match kind {
        // RFC 8489 §6.2.2: over TCP the header's length delimits the message.
        FrameKind::Stun => HEADER_LEN + body,
        // RFC 8656 §12.5: over TCP and TLS ChannelData MUST be padded to a multiple of 4.
        FrameKind::ChannelData => CHANNEL_HEADER_LEN + padded(body),
    };
    match len.checked_sub(buf.len()) {
        Some(missing) if missing > 0 => Framing::Incomplete { missing },
        _ => Framing::Complete { kind, len },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChannelData, Class, Message, MessageWriter, Method};

    fn binding_request() -> Vec<u8> {
        let mut buf = [0u8; 64];
        let mut w =
            MessageWriter::new(&mut buf, Method::Binding, Class::Request, &[3; 12]).unwrap();
        w.raw(0x8022, b"abcde").unwrap();
        let n = w.finish();
        buf[..n].to_vec()
    }

    #[test]
    fn empty_buffer_needs_a_channel_header() {
        assert_eq!(next_frame(&[]), Framing::Incomplete { missing: 4 });
    }

    #[test]
    fn stun_message_whole_and_in_pieces() {
        let m = binding_request();
        assert_eq!(m.len(), 32);
        for cut in 1..m.len() {
            let want = if cut < 4 {
                HEADER_LEN - cut
            } else {
                m.len() - cut
            };
            assert_eq!(
                next_frame(&m[..cut]),
                Framing::Incomplete { missing: want },
                "cut at {cut}"
            );
        }
        let mut stream = m.clone();
        stream.extend_from_slice(&m);
        let whole = Framing::Complete {
            kind: FrameKind::Stun,
            len: 32,
        };
        assert_eq!(next_frame(&m), whole);
        assert_eq!(next_frame(&stream), whole);
        assert!(Message::parse(&stream[..32]).is_ok());
    }

    #[test]
    fn channel_data_counts_its_padding() {
        let stream = [
            0x40, 0x01, 0x00, 0x05, b'h', b'e', b'l', b'l', b'o', 0, 0, 0, 0x40,
        ];
        assert_eq!(next_frame(&stream[..3]), Framing::Incomplete { missing: 1 });
        assert_eq!(next_frame(&stream[..9]), Framing::Incomplete { missing: 3 });
        let frame = Framing::Complete {
            kind: FrameKind::ChannelData,
            len: 12,
        };
        assert_eq!(next_frame(&stream[..12]), frame);
        assert_eq!(next_frame(&stream), frame);
        let cd = ChannelData::parse(&stream[..12]).unwrap();
        assert_eq!((cd.number, cd.payload), (0x4001, &b"hello"[..]));
        // An empty payload is a 4-byte frame.
        assert_eq!(
            next_frame(&[0x4F, 0xFF, 0, 0]),
            Framing::Complete {
                kind: FrameKind::ChannelData,
                len: 4
            }
        );
    }

    #[test]
    fn longest_frames_fit_max_frame_len() {
        let stun = [0x00, 0x01, 0xFF, 0xFF];
        let cd = [0x40, 0x00, 0xFF, 0xFF];
        assert_eq!(
            next_frame(&stun),
            Framing::Incomplete {
                missing: MAX_STUN_FRAME_LEN - 4
            }
        );
        assert_eq!(
            next_frame(&cd),
            Framing::Incomplete {
                missing: MAX_CHANNEL_FRAME_LEN - 4
            }
        );
        assert_eq!(MAX_CHANNEL_FRAME_LEN, 4 + 65536);
        assert_eq!(MAX_FRAME_LEN, 20 + 65535);
    }

    #[test]
    fn invalid_first_byte_ends_the_stream() {
        for b in [0x50u8, 0x5F, 0x7F] {
            assert_eq!(
                next_frame(&[b]),
                Framing::Invalid(InvalidStream::BadChannel)
            );
        }
        for b in [0x80u8, 0xBF, 0xC0, 0xFF] {
            assert_eq!(next_frame(&[b]), Framing::Invalid(InvalidStream::NotTurn));
        }
        // A TLS record sent to a plain TCP listener: 0x16 is STUN-shaped, so
        // only the parser can refuse it; framing still moves on by length.
        assert!(matches!(
            next_frame(&[0x16, 0x03, 0x01, 0x00, 0x10]),
            Framing::Incomplete { .. }
        ));
    }
}
