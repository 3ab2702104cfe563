//! Address values (RFC 8489 §14.1/§14.2): plain and XOR-ed, IPv4 and IPv6.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{AddressFamily, TransactionId, MAGIC_COOKIE};

/// Value length of a (XOR-)address attribute for `addr`: 8 for IPv4, 20 for IPv6.
pub fn address_value_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

/// RFC 8489 §14.1: reserved byte, family, port, address (4 or 16 bytes).
/// `None` unless the family is 0x01 with 4 address bytes or 0x02 with 16.
pub fn decode_address(value: &[u8]) -> Option<SocketAddr> {
    let (head, ip) = value.split_at_checked(4)?;
    let port = u16::from_be_bytes([head[2], head[3]]);
    match (head[1], ip.len()) {
        (0x01, 4) => {
            let octets: [u8; 4] = ip.try_into().ok()?;
            Some(SocketAddr::new(Ipv4Addr::from(octets).into(), port))
        }
        (0x02, 16) => {
            let octets: [u8; 16] = ip.try_into().ok()?;
            Some(SocketAddr::new(Ipv6Addr::from(octets).into(), port))
        }
        _ => None,
    }
}

/// The 16 bytes an IPv6 address is XOR-ed with: cookie then transaction id.
fn xor_key(tid: &TransactionId) -> [u8; 16] {
    let mut k = [0u8; 16];
    let (cookie, rest) = k.split_at_mut(4);
    cookie.copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    rest.copy_from_slice(tid);
    k
}

/// Applies (or removes: it is its own inverse) the RFC 8489 §14.2 XOR to an
/// address: the port with the cookie's top 16 bits, an IPv4 address with the
/// cookie, an IPv6 address with the cookie followed by the transaction id.
pub fn xor_address(addr: SocketAddr, tid: &TransactionId) -> SocketAddr {
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    match addr {
        SocketAddr::V4(a) => SocketAddr::new(
            Ipv4Addr::from(u32::from(*a.ip()) ^ MAGIC_COOKIE).into(),
            port,
        ),
        SocketAddr::V6(a) => {
            let k = u128::from_be_bytes(xor_key(tid));
            SocketAddr::new(Ipv6Addr::from(u128::from(*a.ip()) ^ k).into(), port)
        }
    }
}

/// Writes the value of an address attribute (XOR-ed when `tid` is given)
/// into `out`, which must be exactly `address_value_len(&addr)` bytes.
/// Returns `None` (writing nothing) if `out` has the wrong size.
pub(crate) fn encode_address(
    out: &mut [u8],
    addr: SocketAddr,
    tid: Option<&TransactionId>,
) -> Option<()> {
    if out.len() != address_value_len(&addr) {
        return None;
    }
    let addr = match tid {
        Some(tid) => xor_address(addr, tid),
        None => addr,
    };
    let (head, ip) = out.split_at_mut_checked(4)?;
    head[0] = 0;
    head[1] = AddressFamily::of(&addr).as_byte();
    head[2..4].copy_from_slice(&addr.port().to_be_bytes());
    match addr {
        SocketAddr::V4(a) => ip.copy_from_slice(&a.ip().octets()),
        SocketAddr::V6(a) => ip.copy_from_slice(&a.ip().octets()),
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: TransactionId = [
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ];

    #[test]
    fn rfc5769_values() {
        // RFC 5769 §2.2 and §2.3: the XOR-ed wire values of the mapped addresses.
        let v4: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        let wire_v4 = [0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43];
        let v6: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .unwrap();
        let wire_v6 = [
            0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25,
            0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9,
        ];
        let mut out = [0u8; 8];
        encode_address(&mut out, v4, Some(&TID)).unwrap();
        assert_eq!(out, wire_v4);
        let mut out = [0u8; 20];
        encode_address(&mut out, v6, Some(&TID)).unwrap();
        assert_eq!(out, wire_v6);
        assert_eq!(
            decode_address(&wire_v6).map(|a| xor_address(a, &TID)),
            Some(v6)
        );
    }

    #[test]
    fn round_trip_and_sizes() {
        for addr in [
            "192.0.2.1:1",
            "[::1]:65535",
            "0.0.0.0:0",
            "[2001:db8::ffff]:3478",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(xor_address(xor_address(addr, &TID), &TID), addr);
            let mut buf = [0xFFu8; 20];
            let out = &mut buf[..address_value_len(&addr)];
            encode_address(out, addr, None).unwrap();
            assert_eq!(out[0], 0);
            assert_eq!(decode_address(out), Some(addr));
            encode_address(out, addr, Some(&TID)).unwrap();
            assert_eq!(
                decode_address(out).map(|a| xor_address(a, &TID)),
                Some(addr)
            );
        }
        let v6: SocketAddr = "[::1]:1".parse().unwrap();
        assert_eq!(encode_address(&mut [0u8; 8], v6, None), None);
        assert_eq!(encode_address(&mut [0u8; 21], v6, None), None);
        assert_eq!(decode_address(&[0, 1, 0, 0, 1, 2, 3]), None);
        assert_eq!(decode_address(&[0, 2, 0, 0, 1, 2, 3, 4]), None);
        assert_eq!(decode_address(&[0, 0, 0, 0, 1, 2, 3, 4]), None);
        assert_eq!(decode_address(&[]), None);
    }
}
