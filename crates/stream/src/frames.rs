//! Splitting a connection's bytes into TURN frames (STUN messages and
//! padded ChannelData, RFC 8489 §6.2.2, RFC 8656 §12.5).
//!
//! The shard reads a connection's bytes into a buffer of its own and asks a
//! [`Deframer`] where the frames are. Frames that lie whole in that buffer
//! are handed back as ranges of it, to be processed where they are; only
//! the unfinished frame at the end of a read is copied, into the
//! connection's own buffer, which never holds more than that one frame
//! (at most `MAX_FRAME_LEN` bytes, and nothing while the connection is
//! between frames).

use std::ops::Range;

use uturn_stun::{next_frame, FrameKind, Framing, InvalidStream, MAGIC_COOKIE};

/// Refuses a STUN frame as soon as its first 8 bytes show it is not one
/// (RFC 8489 §5: the magic cookie, and a length that is a multiple of 4),
/// so that a stream of something else is closed at once rather than when a
/// made-up length has been read.
fn check_stun_header(bytes: &[u8]) -> Result<(), InvalidStream> {
    match bytes.first_chunk::<8>() {
        Some(h) if h[0] < 0x40 => {
            let cookie = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
            if cookie != MAGIC_COOKIE || h[3] & 3 != 0 {
                return Err(InvalidStream::NotTurn);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Where the next frame is.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// `data[range]` is one whole frame.
    InPlace(Range<usize>, FrameKind),
    /// One whole frame, put together from this read and earlier ones.
    Joined(&'a [u8], FrameKind),
    /// No more whole frames in `data`; the rest is kept for the next read.
    Done,
    /// The bytes are not TURN: the connection must be closed.
    Invalid(InvalidStream),
}

/// One connection's unfinished frame.
#[derive(Debug, Default)]
pub struct Deframer {
    partial: Vec<u8>,
    /// `partial` holds a whole frame handed out as `Joined`: dropped at the
    /// next call.
    joined: bool,
}

impl Deframer {
    pub fn new() -> Deframer {
        Deframer::default()
    }

    /// Bytes held for an unfinished frame.
    pub fn buffered(&self) -> usize {
        if self.joined {
            0
        } else {
            self.partial.len()
        }
    }

    /// The next frame in `data[*pos..]`, the bytes just read; advances
    /// `*pos` past what it used. Call until it says `Done` (or `Invalid`),
    /// handling each frame before the next call. Never panics.
    pub fn next<'a>(&'a mut self, data: &[u8], pos: &mut usize) -> Frame<'a> {
        if self.joined {
            self.partial.clear();
            self.joined = false;
        }
        let rest = data.get(*pos..).unwrap_or_default();
        if !self.partial.is_empty() {
            // Finish the frame begun in an earlier read, a piece at a time:
            // `next_frame` says how much more it needs once the header is in.
            let mut used = 0;
            loop {
                if let Err(why) = check_stun_header(&self.partial) {
                    self.partial = Vec::new();
                    return Frame::Invalid(why);
                }
                match next_frame(&self.partial) {
                    Framing::Complete { kind, len } => {
                        debug_assert_eq!(len, self.partial.len());
                        *pos += used;
                        self.joined = true;
                        return Frame::Joined(&self.partial, kind);
                    }
                    Framing::Incomplete { missing } => {
                        let take = missing.min(rest.len() - used);
                        if take == 0 {
                            *pos += used;
                            return Frame::Done;
                        }
                        self.partial.extend_from_slice(&rest[used..used + take]);
                        used += take;
                    }
                    Framing::Invalid(why) => {
                        self.partial = Vec::new();
                        return Frame::Invalid(why);
                    }
                }
            }
        }
        if let Err(why) = check_stun_header(rest) {
            return Frame::Invalid(why);
        }
        match next_frame(rest) {
            Framing::Complete { kind, len } => {
                let start = *pos;
                *pos += len;
                Frame::InPlace(start..start + len, kind)
            }
            Framing::Incomplete { .. } => {
                if !rest.is_empty() {
                    // Kept with room for the whole frame once its length is
                    // known (the first call above reserves it).
                    self.partial.extend_from_slice(rest);
                    *pos += rest.len();
                }
                if self.partial.is_empty() && self.partial.capacity() > 0 {
                    // Between frames an idle connection holds no buffer.
                    self.partial = Vec::new();
                }
                Frame::Done
            }
            Framing::Invalid(why) => Frame::Invalid(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uturn_stun::{Class, MessageWriter, Method};

    fn stun(extra: usize) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let mut w =
            MessageWriter::new(&mut buf, Method::Binding, Class::Request, &[7; 12]).unwrap();
        w.raw(0x8022, &vec![b'x'; extra]).unwrap();
        let n = w.finish();
        buf.truncate(n);
        buf
    }

    fn channel(len: usize) -> Vec<u8> {
        let mut v = vec![0x40, 0x01, (len >> 8) as u8, len as u8];
        v.extend(std::iter::repeat_n(0xCD, len));
        v.resize(4 + len.div_ceil(4) * 4, 0);
        v
    }

    /// Feeds `stream` in reads of the given sizes; returns the frames.
    fn split(stream: &[u8], reads: &[usize]) -> Result<Vec<(Vec<u8>, FrameKind)>, InvalidStream> {
        let mut d = Deframer::new();
        let mut out = Vec::new();
        let mut at = 0;
        for &n in reads.iter().chain(std::iter::repeat(&usize::MAX)) {
            if at >= stream.len() {
                break;
            }
            let data = &stream[at..stream.len().min(at.saturating_add(n))];
            at += data.len();
            let mut pos = 0;
            loop {
                match d.next(data, &mut pos) {
                    Frame::InPlace(r, k) => out.push((data[r].to_vec(), k)),
                    Frame::Joined(b, k) => out.push((b.to_vec(), k)),
                    Frame::Done => break,
                    Frame::Invalid(why) => return Err(why),
                }
            }
            assert_eq!(pos, data.len(), "every byte read is used or kept");
        }
        assert_eq!(d.buffered(), 0, "nothing left over at a frame boundary");
        Ok(out)
    }

    fn frames() -> Vec<Vec<u8>> {
        vec![
            stun(0),
            channel(5),
            channel(0),
            stun(33),
            channel(120),
            channel(1),
        ]
    }

    #[test]
    fn back_to_back_frames_in_one_read_are_found_in_place() {
        let f = frames();
        let stream = f.concat();
        let mut d = Deframer::new();
        let mut pos = 0;
        let mut n = 0;
        while let Frame::InPlace(r, _) = d.next(&stream, &mut pos) {
            assert_eq!(&stream[r], f[n].as_slice());
            n += 1;
        }
        assert_eq!(n, f.len());
        assert_eq!(pos, stream.len());
    }

    #[test]
    fn frames_split_across_reads_down_to_one_byte_come_out_whole() {
        let f = frames();
        let stream = f.concat();
        for size in [1, 2, 3, 5, 7, 19, 20, 21, 64, 100] {
            let got = split(&stream, &[size]).unwrap();
            let bytes: Vec<Vec<u8>> = got.iter().map(|(b, _)| b.clone()).collect();
            assert_eq!(bytes, f, "reads of {size}");
        }
        // Uneven reads too.
        let got = split(&stream, &[3, 1, 40, 2, 2, 9, 1000]).unwrap();
        assert_eq!(got.len(), f.len());
        assert_eq!(got[1].1, FrameKind::ChannelData);
        assert_eq!(got[3].1, FrameKind::Stun);
    }

    #[test]
    fn padding_belongs_to_the_channel_data_frame() {
        let stream = [channel(5), stun(0)].concat();
        let got = split(&stream, &[9]).unwrap();
        assert_eq!(got[0].0.len(), 12);
        assert_eq!(got[1].1, FrameKind::Stun);
    }

    #[test]
    fn garbage_and_bad_channels_end_the_stream() {
        assert_eq!(
            split(b"\xffGET / HTTP/1.1\r\n", &[100]),
            Err(InvalidStream::NotTurn)
        );
        // A TLS ClientHello on a plain TCP listener starts with 00 bits, as
        // STUN does, but has no magic cookie: refused after 8 bytes.
        let hello = [
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03,
        ];
        for size in [1, 4, 8, 100] {
            assert_eq!(
                split(&hello, &[size]),
                Err(InvalidStream::NotTurn),
                "{size}"
            );
        }
        // A STUN length that is not a multiple of 4 is not STUN either.
        let mut odd = stun(0);
        odd[3] = 1;
        assert_eq!(split(&odd, &[100]), Err(InvalidStream::NotTurn));
        // (Text such as "GET / HTTP/1.1" starts like a ChannelData header,
        // 0x47 being in the channel range; such a connection waits for a
        // frame that never comes and ends at its timeout.)
        let bad = [0x50, 0, 0, 0];
        assert_eq!(split(&bad, &[1]), Err(InvalidStream::BadChannel));
        // After a good frame, and when the bad byte arrives later.
        let stream = [stun(0), vec![0xFF, 1, 2, 3]].concat();
        assert_eq!(split(&stream, &[1]), Err(InvalidStream::NotTurn));
    }

    #[test]
    fn an_oversized_length_is_bounded_by_the_frame_limit() {
        // A STUN header claiming 65532 bytes: at most one frame is held.
        let mut d = Deframer::new();
        let mut hdr = stun(0);
        hdr[2] = 0xFF;
        hdr[3] = 0xFC;
        let mut pos = 0;
        assert_eq!(d.next(&hdr, &mut pos), Frame::Done);
        let filler = vec![0u8; 100_000];
        let mut pos = 0;
        match d.next(&filler, &mut pos) {
            Frame::Joined(b, FrameKind::Stun) => assert_eq!(b.len(), 20 + 65532),
            other => panic!("{other:?}"),
        }
        assert!(d.partial.capacity() <= uturn_stun::framing::MAX_FRAME_LEN * 2);
        assert_eq!(pos, 65532 + 20 - hdr.len());
    }

    #[test]
    fn a_connection_between_frames_holds_no_buffer() {
        let mut d = Deframer::new();
        let s = stun(0);
        let mut pos = 0;
        assert_eq!(d.next(&s[..7], &mut pos), Frame::Done);
        assert_eq!(d.buffered(), 7);
        let mut pos = 0;
        assert!(matches!(d.next(&s[7..], &mut pos), Frame::Joined(..)));
        assert_eq!(d.next(&s[7..], &mut pos), Frame::Done);
        assert_eq!((d.buffered(), d.partial.capacity()), (0, 0));
    }
}
