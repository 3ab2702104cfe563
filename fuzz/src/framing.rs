//! `stream_framing`: a byte stream cut into frames by `next_frame`, as a TCP
//! connection reader would, must give the same frames however the bytes
//! arrive.
//!
//! Input: one byte `n`, then `n % 16` chunk sizes (one byte each, 0 read as
//! 1), then the stream. The stream is framed once whole, and once fed chunk
//! by chunk (the sizes used in turn, cyclically) into a growing buffer from
//! whose front complete frames are taken. Checked:
//!
//! * both give the same frames and end in the same state;
//! * `Complete` lengths are at least 4 and at most `MAX_FRAME_LEN`;
//!   `Incomplete` asks for at least one byte, never past `MAX_FRAME_LEN`,
//!   and fewer bytes than it asked for never complete a frame;
//! * a complete frame suits its parser: ChannelData parses, with at most 3
//!   padding bytes after the payload; a STUN frame never fails for being
//!   truncated;
//! * each ChannelData frame's header written back by `write_header` is the
//!   same header.

use uturn::stun::channel::{self, ChannelData};
use uturn::stun::framing::{next_frame, FrameKind, Framing, MAX_FRAME_LEN};
use uturn::stun::{DecodeError, Message};

/// How a stream ended: still waiting for bytes, or invalid.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Waiting { buffered: usize, missing: usize },
    Invalid(uturn::stun::InvalidStream),
}

pub fn run(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (sizes, stream) = rest.split_at(usize::from(n % 16).min(rest.len()));
    let (whole_frames, whole_end) = frame_whole(stream);
    let (chunked_frames, chunked_end) = frame_chunked(stream, sizes);
    assert_eq!(whole_frames, chunked_frames);
    assert_eq!(whole_end, chunked_end);
    for (kind, frame) in whole_frames {
        check_frame(kind, frame);
    }
}

/// Checks one answer of `next_frame` for `stream[..buffered]`, the bytes a
/// reader holds; what follows in `stream` has not arrived yet (it is used to
/// test that fewer bytes than `missing` do not complete a frame).
fn checked(stream: &[u8], buffered: usize) -> Framing {
    let buf = &stream[..buffered];
    let f = next_frame(buf);
    match f {
        Framing::Complete { len, .. } => {
            assert!(len >= channel::CHANNEL_HEADER_LEN);
            assert!(len <= buf.len());
            assert!(len <= MAX_FRAME_LEN);
        }
        Framing::Incomplete { missing } => {
            assert!(missing >= 1);
            assert!(buf.len() + missing <= MAX_FRAME_LEN);
            let short = (buffered + missing - 1).min(stream.len());
            if short > buffered {
                assert!(
                    !matches!(next_frame(&stream[..short]), Framing::Complete { .. }),
                    "fewer bytes than asked for completed a frame"
                );
            }
        }
        Framing::Invalid(_) => assert!(!buf.is_empty()),
    }
    f
}

/// The stream framed as if it had all arrived at once.
fn frame_whole(stream: &[u8]) -> (Vec<(FrameKind, &[u8])>, End) {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let rest = &stream[at..];
        match checked(rest, rest.len()) {
            Framing::Complete { kind, len } => {
                frames.push((kind, &rest[..len]));
                at += len;
            }
            Framing::Incomplete { missing } => {
                let buffered = rest.len();
                return (frames, End::Waiting { buffered, missing });
            }
            Framing::Invalid(why) => return (frames, End::Invalid(why)),
        }
    }
}

/// The stream framed as a reader would that receives it in chunks: it
/// holds `stream[start..fed]`, takes complete frames from the front, and
/// reads the next chunk when `next_frame` asks for more.
fn frame_chunked<'a>(stream: &'a [u8], sizes: &[u8]) -> (Vec<(FrameKind, &'a [u8])>, End) {
    let mut frames = Vec::new();
    let (mut start, mut fed) = (0, 0);
    let mut i = 0;
    loop {
        let size = sizes.get(i % sizes.len().max(1)).copied().unwrap_or(255);
        i += 1;
        fed += usize::from(size.max(1)).min(stream.len() - fed);
        loop {
            match checked(&stream[start..], fed - start) {
                Framing::Complete { kind, len } => {
                    frames.push((kind, &stream[start..start + len]));
                    start += len;
                }
                Framing::Incomplete { missing } => {
                    // What a reader keeps between reads stays under one frame.
                    assert!(fed - start < MAX_FRAME_LEN);
                    if fed == stream.len() {
                        let buffered = fed - start;
                        return (frames, End::Waiting { buffered, missing });
                    }
                    break;
                }
                Framing::Invalid(why) => return (frames, End::Invalid(why)),
            }
        }
    }
}

fn check_frame(kind: FrameKind, frame: &[u8]) {
    match kind {
        FrameKind::ChannelData => {
            let cd = ChannelData::parse(frame).expect("a ChannelData frame parses");
            let padding = frame.len() - channel::CHANNEL_HEADER_LEN - cd.payload.len();
            assert!(padding < 4);
            assert_eq!(
                (channel::CHANNEL_HEADER_LEN + cd.payload.len() + padding) % 4,
                0
            );
            let mut header = [0u8; 4];
            channel::write_header(&mut header, cd.number, cd.payload.len() as u16);
            assert_eq!(header[..], frame[..4]);
        }
        FrameKind::Stun => match Message::parse(frame) {
            Ok(m) => assert_eq!(m.as_bytes().len(), frame.len()),
            Err(e) => assert_ne!(e, DecodeError::Truncated, "a whole frame is not truncated"),
        },
    }
}
