//! Conversions between `SocketAddr` and the kernel's `sockaddr` structures,
//! and [`RawAddr`], a destination converted once and reused for many sends.

use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// A socket address already in the kernel's form, for senders that aim many
/// system calls at one destination (the load generator's send batches).
#[derive(Clone, Copy)]
pub struct RawAddr {
    pub(crate) storage: libc::sockaddr_storage,
    pub(crate) len: libc::socklen_t,
}

impl RawAddr {
    pub fn new(addr: &SocketAddr) -> RawAddr {
        let mut storage = zeroed_storage();
        let len = write_sockaddr(addr, &mut storage);
        RawAddr { storage, len }
    }

    /// The address this was made from (`None` cannot happen for a value
    /// built by [`RawAddr::new`]).
    pub fn get(&self) -> Option<SocketAddr> {
        read_sockaddr(&self.storage, self.len)
    }
}

impl From<SocketAddr> for RawAddr {
    fn from(addr: SocketAddr) -> RawAddr {
        RawAddr::new(&addr)
    }
}

impl std::fmt::Debug for RawAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.get() {
            Some(a) => write!(f, "RawAddr({a})"),
            None => f.write_str("RawAddr(?)"),
        }
    }
}

/// Writes `addr` into `out`; returns the length to pass to the kernel.
pub(crate) fn write_sockaddr(
    addr: &SocketAddr,
    out: &mut libc::sockaddr_storage,
) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sockaddr_storage` is larger than `sockaddr_in` and
            // aligned for any socket address type; `out` is a valid, exclusive
            // reference, so writing one `sockaddr_in` at its start is in bounds.
            unsafe {
                std::ptr::write(
                    (out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>(),
                    sin,
                )
            };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, `sockaddr_storage` is larger than and aligned
            // for `sockaddr_in6`.
            unsafe {
                std::ptr::write(
                    (out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>(),
                    sin6,
                )
            };
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads the address the kernel wrote into `storage` (`len` bytes of it).
/// `None` for a family other than IPv4/IPv6 or a short length.
pub(crate) fn read_sockaddr(
    storage: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> Option<SocketAddr> {
    let len = len as usize;
    match storage.ss_family as libc::c_int {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the kernel said it wrote an AF_INET address of at least
            // `sizeof(sockaddr_in)` bytes; `sockaddr_storage` is aligned for
            // and larger than `sockaddr_in`, and every bit pattern is valid
            // for its plain integer fields.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for an AF_INET6 address of at least
            // `sizeof(sockaddr_in6)` bytes.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// An all-zero `sockaddr_storage`.
pub(crate) fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: `sockaddr_storage` is plain old data; all-zero is a valid value.
    unsafe { mem::zeroed() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for a in [
            "192.0.2.1:3478",
            "[2001:db8::1]:49152",
            "0.0.0.0:0",
            "[::1]:65535",
        ] {
            let addr: SocketAddr = a.parse().unwrap();
            let mut st = zeroed_storage();
            let len = write_sockaddr(&addr, &mut st);
            assert_eq!(read_sockaddr(&st, len), Some(addr));
            // The same bytes and length as socket2 hands the kernel.
            let raw = RawAddr::new(&addr);
            assert_eq!(raw.len, socket2::SockAddr::from(addr).len());
            assert_eq!(raw.get(), Some(addr));
        }
    }

    #[test]
    fn unknown_family_or_short_length_is_none() {
        let st = zeroed_storage();
        assert_eq!(read_sockaddr(&st, 128), None);
        let mut st = zeroed_storage();
        let len = write_sockaddr(&"[::1]:1".parse().unwrap(), &mut st);
        assert_eq!(read_sockaddr(&st, len - 1), None);
    }
}
