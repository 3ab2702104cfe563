//! `proxy_header`: the bytes at the start of a connection that must carry a
//! PROXY protocol v2 header, through `uturn_stream::proxy::parse`.
//!
//! Input: the bytes received, whole. Checked, for the input and for every
//! prefix of it (each prefix is what a reader holds after some read):
//!
//! * `Done { len, .. }`: `16 <= len <= MAX_HEADER_LEN` and `len` is at most
//!   the bytes held; the header alone (`buf[..len]`) gives the same answer;
//! * `Incomplete { missing }`: `missing >= 1` and the bytes held plus
//!   `missing` stay within `MAX_HEADER_LEN`; fewer bytes than it asks for
//!   never give `Done`;
//! * `Invalid` and `Done` on a prefix stand: the whole input gives the same
//!   answer (a verdict never waits for more bytes and is never taken back);
//! * a source address is the one at the spec's offsets for the family the
//!   header names (TCP or UDP over IPv4 or IPv6 with the PROXY command), and
//!   `encode_v2` of it parses back to it;
//! * every error has a non-empty label and message.

use std::net::SocketAddr;

use uturn_stream::proxy::{encode_v2, parse, ProxyHeader, FIXED_LEN, MAX_HEADER_LEN};

pub fn run(data: &[u8]) {
    // Every verdict is reached within MAX_HEADER_LEN bytes; a few more
    // stand for the stream after the header. Longer inputs only cost time
    // (every prefix is parsed).
    let data = &data[..data.len().min(MAX_HEADER_LEN + 64)];
    let whole = checked(data);
    for held in 0..data.len() {
        match checked(&data[..held]) {
            verdict @ (ProxyHeader::Done { .. } | ProxyHeader::Invalid(_)) => {
                assert_eq!(verdict, whole, "the verdict on {held} bytes changed");
            }
            ProxyHeader::Incomplete { missing } => {
                let short = (held + missing - 1).min(data.len());
                assert!(
                    !matches!(parse(&data[..short]), ProxyHeader::Done { .. }),
                    "{held} bytes asked for {missing} more, {short} were enough"
                );
            }
        }
    }
}

/// `parse(buf)` and what its answer promises about `buf` alone.
fn checked(buf: &[u8]) -> ProxyHeader {
    let answer = parse(buf);
    match answer {
        ProxyHeader::Done { len, source } => {
            assert!((FIXED_LEN..=MAX_HEADER_LEN).contains(&len));
            assert!(len <= buf.len());
            assert_eq!(parse(&buf[..len]), answer);
            if let Some(source) = source {
                check_source(&buf[..len], source);
            }
        }
        ProxyHeader::Incomplete { missing } => {
            assert!(missing >= 1);
            assert!(buf.len() + missing <= MAX_HEADER_LEN);
        }
        ProxyHeader::Invalid(why) => {
            assert!(!buf.is_empty());
            assert!(!why.label().is_empty());
            assert!(!why.to_string().is_empty());
        }
    }
    answer
}

/// A source address comes from a PROXY command over IPv4 or IPv6, at the
/// spec's offsets; written again by `encode_v2` it parses back the same.
fn check_source(header: &[u8], source: SocketAddr) {
    assert_eq!(header[12], 0x21, "a source only with version 2 PROXY");
    let transport = header[13] & 0x0F;
    assert!(transport == 1 || transport == 2, "TCP or UDP");
    let block = &header[FIXED_LEN..];
    let (ip_len, ip) = match source {
        SocketAddr::V4(a) => (4, a.ip().octets().to_vec()),
        SocketAddr::V6(a) => (16, a.ip().octets().to_vec()),
    };
    let family = if ip_len == 4 { 1 } else { 2 };
    assert_eq!(header[13] >> 4, family);
    assert_eq!(block[..ip_len], ip[..]);
    let port = &block[2 * ip_len..2 * ip_len + 2];
    assert_eq!(u16::from_be_bytes([port[0], port[1]]), source.port());

    let mut again = Vec::new();
    encode_v2(source, source, &mut again);
    assert_eq!(
        parse(&again),
        ProxyHeader::Done {
            len: again.len(),
            source: Some(source)
        }
    );
}
