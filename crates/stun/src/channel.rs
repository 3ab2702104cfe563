//! ChannelData framing (RFC 8656 §12.4).

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
        let Some((header, rest)) = buf.split_at_checked(CHANNEL_HEADER_LEN) else {
            return Err(DecodeError::Truncated);
        };
        let number = u16::from_be_bytes([header[0], header[1]]);
        // RFC 8656 §12: channel numbers 0x4000 through 0x4FFF; others are not ChannelData.
        if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&number) {
            return Err(DecodeError::BadChannel);
        }
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        // RFC 8656 §12.6: a datagram shorter than the claimed length plus 4 is discarded.
        let payload = rest.get(..len).ok_or(DecodeError::Truncated)?;
        Ok(ChannelData { number, payload })
    }
}

/// Writes the 4-byte ChannelData header for a payload of `len` bytes.
pub fn write_header(header: &mut [u8; 4], number: u16, len: u16) {
    let [n0, n1] = number.to_be_bytes();
    let [l0, l1] = len.to_be_bytes();
    *header = [n0, n1, l0, l1];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_write() {
        let mut d = [0u8; 4 + 5 + 3];
        let mut h = [0u8; 4];
        write_header(&mut h, 0x4001, 5);
        d[..4].copy_from_slice(&h);
        d[4..9].copy_from_slice(b"hello");
        assert_eq!(d[..4], [0x40, 0x01, 0x00, 0x05]);
        // With and without the 3 padding bytes.
        for cut in [9, 12] {
            let c = ChannelData::parse(&d[..cut]).unwrap();
            assert_eq!(
                c,
                ChannelData {
                    number: 0x4001,
                    payload: b"hello"
                }
            );
        }
        assert_eq!(ChannelData::parse(&d[..8]), Err(DecodeError::Truncated));
    }

    #[test]
    fn bounds() {
        assert_eq!(ChannelData::parse(&[]), Err(DecodeError::Truncated));
        assert_eq!(
            ChannelData::parse(&[0x40, 0, 0]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            ChannelData::parse(&[0x3F, 0xFF, 0, 0]),
            Err(DecodeError::BadChannel)
        );
        assert_eq!(
            ChannelData::parse(&[0x50, 0x00, 0, 0]),
            Err(DecodeError::BadChannel)
        );
        assert_eq!(
            ChannelData::parse(&[0x00, 0x01, 0, 0]),
            Err(DecodeError::BadChannel)
        );
        let c = ChannelData::parse(&[0x4F, 0xFF, 0, 0]).unwrap();
        assert_eq!((c.number, c.payload.len()), (0x4FFF, 0));
        assert_eq!(
            ChannelData::parse(&[0x40, 0x00, 0xFF, 0xFF, 1]),
            Err(DecodeError::Truncated)
        );
    }
}
