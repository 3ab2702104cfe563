//! The 16-byte header at the start of every measured payload:
//! flow id (u32), sequence number (u32) and send time (u64 nanoseconds of
//! CLOCK_MONOTONIC), all little-endian; the rest of the payload is filler.

/// Length of the header; payloads must be at least this long.
pub const HEADER_LEN: usize = 16;

/// Filler byte after the header (an arbitrary, recognisable value).
pub const FILLER: u8 = 0x5A;

/// Writes the header into the first 16 bytes of `buf`.
#[inline]
pub fn write(buf: &mut [u8], flow: u32, seq: u32, sent_ns: u64) {
    buf[0..4].copy_from_slice(&flow.to_le_bytes());
    buf[4..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..16].copy_from_slice(&sent_ns.to_le_bytes());
}

/// Reads (flow, sequence, send time) from the start of `buf`.
#[inline]
pub fn read(buf: &[u8]) -> Option<(u32, u32, u64)> {
    let h = buf.get(..HEADER_LEN)?;
    let flow = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let seq = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let ts = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
    Some((flow, seq, ts))
}

#[cfg(test)]
mod tests {
    #[test]
    fn roundtrip() {
        let mut b = [0u8; 20];
        super::write(&mut b, 7, 9, 123_456_789);
        assert_eq!(super::read(&b), Some((7, 9, 123_456_789)));
        assert_eq!(super::read(&b[..15]), None);
    }
}
