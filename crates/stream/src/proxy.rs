//! PROXY protocol version 2: the binary header a load balancer writes at the
//! very start of a TCP connection to say whom it is relaying for (HAProxy's
//! `proxy-protocol.txt`, section 2.2).
//!
//! A listener configured to expect the header calls [`parse`] on the bytes
//! received so far, before it looks at them as TURN or TLS, until the answer
//! is not `Incomplete`:
//!
//! * `Done { len, source }`: the header is `buf[..len]`; drop those bytes and
//!   treat the rest as the start of the stream. With `Some(source)` that
//!   address replaces the TCP peer address for everything (nonces, quotas,
//!   rate limits, logs). With `None` the connection keeps its own peer
//!   address: the balancer sent the LOCAL command (a health check of its
//!   own), or the PROXY command for a family or transport this parser does not
//!   turn into an address (AF_UNSPEC, AF_UNIX, or an UNSPEC transport).
//! * `Incomplete { missing }`: read at least `missing` (≥ 1) more bytes. The
//!   whole header is never longer than [`MAX_HEADER_LEN`], so a buffer of that
//!   size is enough; if the connection ends first, close it (the spec: a
//!   receiver must reject connections with a partial header).
//! * `Invalid(why)`: close the connection; `why` names the reason for logs
//!   and metrics ([`ProxyError::label`]).
//!
//! Every rule is decided as soon as the byte it depends on has arrived: a
//! wrong first byte is `Invalid` at once, without waiting for the 16-byte
//! fixed part, and everything that can make a header invalid is in those 16
//! bytes. So when a prefix of the buffer is `Invalid` or `Done`, the whole
//! buffer gives the same answer.
//!
//! Trust is the caller's business: only a connection from a configured load
//! balancer may be parsed at all, otherwise anyone could claim any address.
//!
//! The TLVs after the addresses (ALPN, authority, unique id, TLS details,
//! CRC32C...) are skipped without being read; they count against
//! [`MAX_HEADER_LEN`]. The CRC32C TLV is therefore not checked, which the
//! spec allows a receiver that does not implement it. The source address is
//! returned as the header carries it: an IPv4-mapped IPv6 address stays IPv6.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// The first 12 bytes of every version 2 header.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version and command, family and transport, block length.
pub const FIXED_LEN: usize = 16;
/// The longest address block (addresses and TLVs) this parser accepts. The
/// largest address block the spec defines, AF_UNIX's, is 216 bytes; the rest
/// leaves room for the TLVs balancers add.
pub const MAX_BLOCK_LEN: usize = 512;
/// The longest header this parser accepts: a caller's buffer never needs to
/// hold more before [`parse`] says `Done` or `Invalid`.
pub const MAX_HEADER_LEN: usize = FIXED_LEN + MAX_BLOCK_LEN;

/// The version 2 header's first byte after the signature: version 2 (high
/// nibble) and the PROXY command (low nibble).
const VERSION_2_PROXY: u8 = 0x21;
/// TCP over IPv4 and TCP over IPv6 (family high, transport low).
const TCP_V4: u8 = 0x11;
const TCP_V6: u8 = 0x21;
/// Address block lengths: two addresses and, for IP, two ports.
const INET_BLOCK_LEN: usize = 2 * 4 + 2 * 2;
const INET6_BLOCK_LEN: usize = 2 * 16 + 2 * 2;
const UNIX_BLOCK_LEN: usize = 2 * 108;

/// What is at the front of the bytes received on a connection that must
/// start with a PROXY v2 header.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProxyHeader {
    /// No verdict yet: at least `missing` (≥ 1) more bytes are needed.
    Incomplete { missing: usize },
    /// `buf[..len]` is a whole, valid header. `source` is the client's
    /// address, or `None` when the connection keeps its own peer address
    /// (see the module documentation).
    Done {
        len: usize,
        source: Option<SocketAddr>,
    },
    /// Not a valid version 2 header: close the connection.
    Invalid(ProxyError),
}

/// Why the bytes at the front of a connection are not a valid header.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProxyError {
    /// The first byte is `P`, as a version 1 (text) header's is: the
    /// balancer is configured for the wrong version.
    Version1,
    /// The bytes differ from the 12-byte signature.
    BadSignature,
    /// The version nibble is not 2.
    BadVersion,
    /// A command other than LOCAL (0) and PROXY (1).
    BadCommand,
    /// PROXY command with an address family other than 0 to 3.
    BadFamily,
    /// PROXY command with a transport other than 0 to 2.
    BadTransport,
    /// The address block is shorter than its family's addresses.
    ShortAddresses,
    /// The header is longer than [`MAX_HEADER_LEN`].
    TooLong,
}

impl ProxyError {
    /// A fixed name for a metrics label (`snake_case`, never from input).
    pub fn label(&self) -> &'static str {
        match self {
            ProxyError::Version1 => "version_1",
            ProxyError::BadSignature => "bad_signature",
            ProxyError::BadVersion => "bad_version",
            ProxyError::BadCommand => "bad_command",
            ProxyError::BadFamily => "bad_family",
            ProxyError::BadTransport => "bad_transport",
            ProxyError::ShortAddresses => "short_addresses",
            ProxyError::TooLong => "too_long",
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyError::Version1 => "proxy protocol version 1 text header",
            ProxyError::BadSignature => "not a proxy protocol v2 signature",
            ProxyError::BadVersion => "proxy protocol version is not 2",
            ProxyError::BadCommand => "unknown proxy command",
            ProxyError::BadFamily => "unknown address family",
            ProxyError::BadTransport => "unknown transport protocol",
            ProxyError::ShortAddresses => "address block too short for its family",
            ProxyError::TooLong => "proxy header too long",
        })
    }
}

impl std::error::Error for ProxyError {}

/// What the 13th and 14th bytes say the address block holds, as far as this
/// parser reads it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Addresses {
    /// LOCAL, AF_UNSPEC or an UNSPEC transport: nothing is read.
    Ignored,
    Inet,
    Inet6,
    /// Checked for length, not read: a path is no client address.
    Unix,
}

impl Addresses {
    /// The shortest address block the family allows.
    fn min_len(self) -> usize {
        match self {
            Addresses::Ignored => 0,
            Addresses::Inet => INET_BLOCK_LEN,
            Addresses::Inet6 => INET6_BLOCK_LEN,
            Addresses::Unix => UNIX_BLOCK_LEN,
        }
    }

    /// The source address in `block`, the bytes after the fixed part.
    /// `parse` has checked `min_len` already, so the error is never seen;
    /// it is there so that a short block cannot panic or pass unnoticed.
    fn source(self, block: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
        Ok(match self {
            Addresses::Ignored | Addresses::Unix => None,
            Addresses::Inet => {
                let (ip, port) = ip_and_port::<4>(block)?;
                Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
            }
            Addresses::Inet6 => {
                let (ip, port) = ip_and_port::<16>(block)?;
                let ip = Ipv6Addr::from(ip);
                Some(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)))
            }
        })
    }
}

/// The source address and port of an IP address block: source address,
/// destination address (`N` bytes each), source port, destination port.
fn ip_and_port<const N: usize>(block: &[u8]) -> Result<([u8; N], u16), ProxyError> {
    let (ip, rest) = block
        .split_first_chunk::<N>()
        .ok_or(ProxyError::ShortAddresses)?;
    let (_destination, rest) = rest
        .split_first_chunk::<N>()
        .ok_or(ProxyError::ShortAddresses)?;
    let (port, _) = rest
        .split_first_chunk::<2>()
        .ok_or(ProxyError::ShortAddresses)?;
    Ok((*ip, u16::from_be_bytes(*port)))
}

/// The 13th byte: version (high nibble) and command (low nibble). `Ok(true)`
/// for PROXY, `Ok(false)` for LOCAL.
fn is_proxy_command(ver_cmd: u8) -> Result<bool, ProxyError> {
    // proxy-protocol.txt §2.2: the version must be 2 and the receiver must only accept 2.
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::BadVersion);
    }
    match ver_cmd & 0x0F {
        0 => Ok(false),
        1 => Ok(true),
        // §2.2: receivers must drop connections with any other command.
        _ => Err(ProxyError::BadCommand),
    }
}

/// The 14th byte of a PROXY command: family (high nibble) and transport (low
/// nibble).
fn addresses(family_transport: u8) -> Result<Addresses, ProxyError> {
    let family = family_transport >> 4;
    let transport = family_transport & 0x0F;
    // §2.2: other families and transports must be rejected as invalid by receivers.
    if family > 3 {
        return Err(ProxyError::BadFamily);
    }
    if transport > 2 {
        return Err(ProxyError::BadTransport);
    }
    Ok(match (family, transport) {
        // §2.2: with AF_UNSPEC or an UNSPEC transport the receiver should ignore the addresses.
        (0, _) | (_, 0) => Addresses::Ignored,
        (1, _) => Addresses::Inet,
        (2, _) => Addresses::Inet6,
        _ => Addresses::Unix,
    })
}

/// Checks whatever part of the fixed 16 bytes has arrived. Returns what the
/// address block holds once the 14th byte is known.
fn check_fixed_part(buf: &[u8]) -> Result<Option<Addresses>, ProxyError> {
    if buf.first() == Some(&b'P') {
        return Err(ProxyError::Version1);
    }
    if !buf.iter().zip(SIGNATURE.iter()).all(|(a, b)| a == b) {
        return Err(ProxyError::BadSignature);
    }
    let Some(&ver_cmd) = buf.get(12) else {
        return Ok(None);
    };
    let proxy = is_proxy_command(ver_cmd)?;
    let Some(&family_transport) = buf.get(13) else {
        return Ok(None);
    };
    if proxy {
        addresses(family_transport).map(Some)
    } else {
        // §2.2: LOCAL: use the real endpoints and discard the block, family included.
        Ok(Some(Addresses::Ignored))
    }
}

/// Says whether `buf`, the bytes received so far on a connection, starts
/// with a whole and valid PROXY v2 header, and how long it is. Never
/// panics, never allocates, never reads past `MAX_HEADER_LEN` bytes.
pub fn parse(buf: &[u8]) -> ProxyHeader {
    let addresses = match check_fixed_part(buf) {
        Ok(addresses) => addresses,
        Err(e) => return ProxyHeader::Invalid(e),
    };
    let (Some(addresses), Some(&[.., l0, l1])) = (addresses, buf.first_chunk::<FIXED_LEN>()) else {
        return ProxyHeader::Incomplete {
            missing: FIXED_LEN.saturating_sub(buf.len()),
        };
    };
    // §2.2: the header is always exactly 16 bytes plus this length.
    let block_len = usize::from(u16::from_be_bytes([l0, l1]));
    if block_len > MAX_BLOCK_LEN {
        return ProxyHeader::Invalid(ProxyError::TooLong);
    }
    if block_len < addresses.min_len() {
        return ProxyHeader::Invalid(ProxyError::ShortAddresses);
    }
    let len = FIXED_LEN + block_len;
    // §2.2: the receiver must not parse an address before the whole block is received.
    let Some(block) = buf.get(FIXED_LEN..len) else {
        return ProxyHeader::Incomplete {
            missing: len - buf.len(),
        };
    };
    match addresses.source(block) {
        Ok(source) => ProxyHeader::Done { len, source },
        Err(e) => ProxyHeader::Invalid(e),
    }
}

/// Appends a version 2 header with the PROXY command for a TCP connection
/// from `source` to `destination`, as a load balancer would write it, and
/// no TLVs. Both addresses must be of one family: when one is IPv4 and the
/// other IPv6, the IPv4 one is written as an IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`) and the header says TCP over IPv6, so [`parse`] then
/// returns the mapped form.
pub fn encode_v2(source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    out.extend_from_slice(&SIGNATURE);
    out.push(VERSION_2_PROXY);
    if let (SocketAddr::V4(s), SocketAddr::V4(d)) = (source, destination) {
        out.push(TCP_V4);
        out.extend_from_slice(&(INET_BLOCK_LEN as u16).to_be_bytes());
        out.extend_from_slice(&s.ip().octets());
        out.extend_from_slice(&d.ip().octets());
        out.extend_from_slice(&s.port().to_be_bytes());
        out.extend_from_slice(&d.port().to_be_bytes());
    } else {
        out.push(TCP_V6);
        out.extend_from_slice(&(INET6_BLOCK_LEN as u16).to_be_bytes());
        out.extend_from_slice(&v6_octets(source));
        out.extend_from_slice(&v6_octets(destination));
        out.extend_from_slice(&source.port().to_be_bytes());
        out.extend_from_slice(&destination.port().to_be_bytes());
    }
}

/// The address as 16 bytes, IPv4 mapped into IPv6.
fn v6_octets(addr: SocketAddr) -> [u8; 16] {
    match addr {
        SocketAddr::V4(a) => a.ip().to_ipv6_mapped().octets(),
        SocketAddr::V6(a) => a.ip().octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The signature written out byte by byte, as section 2.2 lists it.
    const SIG: [u8; 12] = [
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
    ];

    /// TCP over IPv4 from 203.0.113.7:51234 to 192.0.2.1:443.
    fn tcp4() -> Vec<u8> {
        let mut h = SIG.to_vec();
        h.extend_from_slice(&[
            0x21, // version 2, PROXY
            0x11, // AF_INET, STREAM
            0x00, 0x0C, // 12 bytes follow
            203, 0, 113, 7, // source address
            192, 0, 2, 1, // destination address
            0xC8, 0x22, // source port 51234
            0x01, 0xBB, // destination port 443
        ]);
        h
    }

    /// TCP over IPv6 from [2001:db8::7]:54321 to [2001:db8::1]:443.
    fn tcp6() -> Vec<u8> {
        let mut h = SIG.to_vec();
        h.extend_from_slice(&[0x21, 0x21, 0x00, 0x24]);
        h.extend_from_slice(&[
            0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x07,
        ]);
        h.extend_from_slice(&[
            0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
        ]);
        h.extend_from_slice(&[0xD4, 0x31, 0x01, 0xBB]);
        h
    }

    /// `tcp4` followed by three TLVs: ALPN "h2", AUTHORITY (SNI)
    /// "turn.example.org" and a 3-byte NOOP.
    fn tcp4_with_tlvs() -> Vec<u8> {
        let mut h = tcp4();
        h.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
        h.extend_from_slice(&[0x02, 0x00, 0x10]);
        h.extend_from_slice(b"turn.example.org");
        h.extend_from_slice(&[0x04, 0x00, 0x03, 0, 0, 0]);
        let block = (h.len() - FIXED_LEN) as u16;
        h[14..16].copy_from_slice(&block.to_be_bytes());
        h
    }

    /// The LOCAL command with no address block, as a health check sends it.
    fn local() -> Vec<u8> {
        let mut h = SIG.to_vec();
        h.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        h
    }

    /// A fixed part with the given 13th and 14th bytes and block length,
    /// then `block_len` bytes of `fill`.
    fn header(ver_cmd: u8, family: u8, block_len: u16, fill: u8) -> Vec<u8> {
        let mut h = SIG.to_vec();
        h.extend_from_slice(&[ver_cmd, family]);
        h.extend_from_slice(&block_len.to_be_bytes());
        h.resize(FIXED_LEN + usize::from(block_len), fill);
        h
    }

    fn done(len: usize, source: Option<&str>) -> ProxyHeader {
        ProxyHeader::Done {
            len,
            source: source.map(|s| s.parse().unwrap()),
        }
    }

    fn invalid(e: ProxyError) -> ProxyHeader {
        ProxyHeader::Invalid(e)
    }

    #[test]
    fn signature_constant_is_the_spec_bytes() {
        assert_eq!(SIGNATURE, SIG);
    }

    #[test]
    fn tcp_over_ipv4() {
        let h = tcp4();
        assert_eq!(h.len(), 28);
        assert_eq!(parse(&h), done(28, Some("203.0.113.7:51234")));
    }

    #[test]
    fn tcp_over_ipv6() {
        let h = tcp6();
        assert_eq!(h.len(), 52);
        assert_eq!(parse(&h), done(52, Some("[2001:db8::7]:54321")));
    }

    #[test]
    fn udp_gives_the_source_too() {
        let mut h = tcp4();
        h[13] = 0x12;
        assert_eq!(parse(&h), done(28, Some("203.0.113.7:51234")));
        let mut h = tcp6();
        h[13] = 0x22;
        assert_eq!(parse(&h), done(52, Some("[2001:db8::7]:54321")));
    }

    #[test]
    fn local_command_keeps_the_connection_address() {
        assert_eq!(parse(&local()), done(16, None));
        // §2.2: a receiver must not assume an empty block for LOCAL, and
        // ignores the family: addresses (or anything) are skipped.
        let mut h = tcp4();
        h[12] = 0x20;
        assert_eq!(parse(&h), done(28, None));
        assert_eq!(parse(&header(0x20, 0xFF, 3, 0)), done(19, None));
    }

    #[test]
    fn tlvs_are_skipped() {
        let h = tcp4_with_tlvs();
        assert_eq!(h.len(), 58);
        assert_eq!(parse(&h), done(58, Some("203.0.113.7:51234")));
        // Bytes after the addresses need not even be well-formed TLVs.
        let mut h = tcp6();
        h.extend_from_slice(&[0xEE, 0xFF]);
        h[15] += 2;
        assert_eq!(parse(&h), done(54, Some("[2001:db8::7]:54321")));
    }

    #[test]
    fn stream_bytes_after_the_header_are_left_alone() {
        for (h, source) in [
            (tcp4(), Some("203.0.113.7:51234")),
            (tcp6(), Some("[2001:db8::7]:54321")),
            (tcp4_with_tlvs(), Some("203.0.113.7:51234")),
            (local(), None),
        ] {
            let mut stream = h.clone();
            // A STUN Binding request's first bytes, then a second header's:
            // only the first header is the header.
            stream.extend_from_slice(&[0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42]);
            stream.extend_from_slice(&h);
            assert_eq!(parse(&stream), done(h.len(), source));
        }
    }

    #[test]
    fn every_truncation_is_incomplete_with_the_right_count() {
        for h in [tcp4(), tcp6(), tcp4_with_tlvs(), local()] {
            for cut in 0..h.len() {
                let missing = if cut < FIXED_LEN {
                    FIXED_LEN - cut
                } else {
                    h.len() - cut
                };
                assert_eq!(
                    parse(&h[..cut]),
                    ProxyHeader::Incomplete { missing },
                    "cut at {cut} of {}",
                    h.len()
                );
            }
        }
    }

    #[test]
    fn a_wrong_signature_byte_is_invalid_at_once() {
        let h = tcp4();
        for at in 0..SIG.len() {
            for wrong in [0x00u8, 0x0D, 0x0A, 0x51, 0x80, 0xFF] {
                if wrong == SIG[at] {
                    continue;
                }
                let mut bad = h.clone();
                bad[at] = wrong;
                let want = invalid(ProxyError::BadSignature);
                assert_eq!(parse(&bad[..=at]), want, "byte {at} = {wrong:#04x}");
                assert_eq!(parse(&bad), want, "byte {at} = {wrong:#04x}");
            }
        }
        // TLS and STUN are told apart from the first byte.
        assert_eq!(parse(&[0x16]), invalid(ProxyError::BadSignature));
        assert_eq!(parse(&[0x00, 0x01]), invalid(ProxyError::BadSignature));
    }

    #[test]
    fn version_1_text_header_is_invalid() {
        let v1 = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
        assert_eq!(parse(v1), invalid(ProxyError::Version1));
        assert_eq!(parse(b"P"), invalid(ProxyError::Version1));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), invalid(ProxyError::Version1));
    }

    #[test]
    fn other_versions_and_commands_are_invalid_at_the_13th_byte() {
        for (ver_cmd, why) in [
            (0x11, ProxyError::BadVersion),
            (0x01, ProxyError::BadVersion),
            (0x31, ProxyError::BadVersion),
            (0xF1, ProxyError::BadVersion),
            (0x22, ProxyError::BadCommand),
            (0x2F, ProxyError::BadCommand),
        ] {
            let mut h = tcp4();
            h[12] = ver_cmd;
            assert_eq!(parse(&h[..13]), invalid(why), "{ver_cmd:#04x}");
            assert_eq!(parse(&h), invalid(why), "{ver_cmd:#04x}");
        }
    }

    #[test]
    fn unknown_family_or_transport_is_invalid_at_the_14th_byte() {
        for (family, why) in [
            (0x41, ProxyError::BadFamily),
            (0xF0, ProxyError::BadFamily),
            (0x13, ProxyError::BadTransport),
            (0x2F, ProxyError::BadTransport),
            (0x03, ProxyError::BadTransport),
        ] {
            let h = header(0x21, family, 216, 0);
            assert_eq!(parse(&h[..14]), invalid(why), "{family:#04x}");
            assert_eq!(parse(&h), invalid(why), "{family:#04x}");
        }
    }

    #[test]
    fn an_address_block_too_short_for_its_family_is_invalid() {
        for (family, short) in [(0x11, 11), (0x12, 0), (0x21, 35), (0x22, 12), (0x31, 215)] {
            let h = header(0x21, family, short, 0);
            // Decided from the fixed part alone.
            assert_eq!(
                parse(&h[..FIXED_LEN]),
                invalid(ProxyError::ShortAddresses),
                "{family:#04x} with {short} bytes"
            );
            assert_eq!(parse(&h), invalid(ProxyError::ShortAddresses));
        }
    }

    #[test]
    fn unix_and_unspec_give_no_source() {
        // AF_UNIX stream and datagram: two 108-byte paths.
        assert_eq!(parse(&header(0x21, 0x31, 216, b'/')), done(232, None));
        assert_eq!(parse(&header(0x21, 0x32, 216, b'/')), done(232, None));
        // AF_UNSPEC with the PROXY command, with or without a block.
        assert_eq!(parse(&header(0x21, 0x00, 0, 0)), done(16, None));
        assert_eq!(parse(&header(0x21, 0x00, 5, 9)), done(21, None));
        // An IP family with an UNSPEC transport: the addresses are ignored.
        assert_eq!(parse(&header(0x21, 0x10, 0, 0)), done(16, None));
        assert_eq!(parse(&header(0x21, 0x20, 36, 1)), done(52, None));
    }

    #[test]
    fn length_over_the_limit_is_invalid_from_the_fixed_part() {
        assert_eq!(MAX_HEADER_LEN, 528);
        let over = header(0x21, 0x11, (MAX_BLOCK_LEN + 1) as u16, 0);
        assert_eq!(parse(&over[..FIXED_LEN]), invalid(ProxyError::TooLong));
        assert_eq!(parse(&over), invalid(ProxyError::TooLong));
        let most = header(0x21, 0x11, u16::MAX, 0);
        assert_eq!(parse(&most[..FIXED_LEN]), invalid(ProxyError::TooLong));
        // Exactly at the limit: accepted.
        let longest = header(0x21, 0x11, MAX_BLOCK_LEN as u16, 7);
        assert_eq!(
            parse(&longest[..FIXED_LEN]),
            ProxyHeader::Incomplete {
                missing: MAX_BLOCK_LEN
            }
        );
        assert_eq!(parse(&longest), done(MAX_HEADER_LEN, Some("7.7.7.7:1799")));
    }

    #[test]
    fn encode_v2_writes_the_spec_bytes() {
        let mut out = vec![0xAA];
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        encode_v2(a("203.0.113.7:51234"), a("192.0.2.1:443"), &mut out);
        // Appends: what was in `out` stays.
        assert_eq!(out[0], 0xAA);
        assert_eq!(out[1..], tcp4()[..]);
        out.clear();
        encode_v2(a("[2001:db8::7]:54321"), a("[2001:db8::1]:443"), &mut out);
        assert_eq!(out, tcp6());
    }

    #[test]
    fn encode_v2_maps_mixed_families_to_ipv6() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let mut out = Vec::new();
        encode_v2(a("203.0.113.7:51234"), a("[2001:db8::1]:443"), &mut out);
        assert_eq!(out[13], 0x21);
        assert_eq!(parse(&out), done(52, Some("[::ffff:203.0.113.7]:51234")));
        out.clear();
        encode_v2(a("[2001:db8::7]:54321"), a("192.0.2.1:443"), &mut out);
        // The destination is written mapped too: ::ffff:192.0.2.1.
        let mapped = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 192, 0, 2, 1];
        assert_eq!(out[FIXED_LEN + 16..FIXED_LEN + 32], mapped);
        assert_eq!(parse(&out), done(52, Some("[2001:db8::7]:54321")));
    }

    #[test]
    fn errors_have_distinct_lowercase_names() {
        let all = [
            ProxyError::Version1,
            ProxyError::BadSignature,
            ProxyError::BadVersion,
            ProxyError::BadCommand,
            ProxyError::BadFamily,
            ProxyError::BadTransport,
            ProxyError::ShortAddresses,
            ProxyError::TooLong,
        ];
        let mut labels: Vec<_> = all.iter().map(|e| e.label()).collect();
        let mut texts: Vec<_> = all.iter().map(|e| e.to_string()).collect();
        for l in &labels {
            assert!(l
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()));
        }
        for t in &texts {
            assert!(
                !t.is_empty() && !t.bytes().any(|b| b.is_ascii_uppercase()),
                "{t}"
            );
        }
        labels.sort();
        labels.dedup();
        texts.sort();
        texts.dedup();
        assert_eq!((labels.len(), texts.len()), (all.len(), all.len()));
    }

    /// What `parse` promises about `buf` and about every prefix of it.
    fn check_promises(buf: &[u8]) -> Result<(), TestCaseError> {
        let whole = parse(buf);
        match whole {
            ProxyHeader::Done { len, .. } => {
                prop_assert!((FIXED_LEN..=MAX_HEADER_LEN).contains(&len));
                prop_assert!(len <= buf.len());
                prop_assert_eq!(parse(&buf[..len]), whole);
            }
            ProxyHeader::Incomplete { missing } => {
                prop_assert!(missing >= 1);
                prop_assert!(buf.len() + missing <= MAX_HEADER_LEN);
            }
            ProxyHeader::Invalid(_) => prop_assert!(!buf.is_empty()),
        }
        for cut in 0..buf.len() {
            match parse(&buf[..cut]) {
                // A verdict on fewer bytes stands when more arrive.
                verdict @ (ProxyHeader::Done { .. } | ProxyHeader::Invalid(_)) => {
                    prop_assert_eq!(verdict, whole, "cut at {}", cut);
                }
                // Fewer bytes than asked for never give a header.
                ProxyHeader::Incomplete { missing } => {
                    let short = (cut + missing - 1).min(buf.len());
                    prop_assert!(
                        !matches!(parse(&buf[..short]), ProxyHeader::Done { .. }),
                        "cut at {} asked for {}",
                        cut,
                        missing
                    );
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// A panic is a bug, never bad input.
        #[test]
        fn arbitrary_bytes_keep_the_promises(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
            check_promises(&buf)?;
        }

        /// The same past the signature, where random bytes rarely get.
        #[test]
        fn arbitrary_headers_keep_the_promises(
            ver_cmd in prop_oneof![Just(0x20u8), Just(0x21), any::<u8>()],
            family in prop_oneof![Just(0x11u8), Just(0x21), Just(0x31), any::<u8>()],
            block_len in prop_oneof![0u16..600, any::<u16>()],
            rest in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut buf = SIG.to_vec();
            buf.extend_from_slice(&[ver_cmd, family]);
            buf.extend_from_slice(&block_len.to_be_bytes());
            buf.extend_from_slice(&rest);
            check_promises(&buf)?;
        }

        /// encode_v2 then parse gives the source back, and leaves the stream.
        #[test]
        fn encode_then_parse_round_trips(
            src in (any::<bool>(), any::<[u8; 16]>(), any::<u16>()),
            dst in (any::<bool>(), any::<[u8; 16]>(), any::<u16>()),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let addr = |(v4, ip, port): (bool, [u8; 16], u16)| -> SocketAddr {
                if v4 {
                    SocketAddr::from((Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]), port))
                } else {
                    SocketAddr::from((Ipv6Addr::from(ip), port))
                }
            };
            let (source, destination) = (addr(src), addr(dst));
            let mut buf = Vec::new();
            encode_v2(source, destination, &mut buf);
            let len = buf.len();
            buf.extend_from_slice(&tail);
            let want = match (source, destination) {
                (SocketAddr::V6(_), _) | (_, SocketAddr::V4(_)) => source,
                (SocketAddr::V4(s), SocketAddr::V6(_)) => {
                    SocketAddr::from((s.ip().to_ipv6_mapped(), s.port()))
                }
            };
            prop_assert_eq!(parse(&buf), ProxyHeader::Done { len, source: Some(want) });
        }
    }
}
