//! Creating the sockets a shard uses: UDP and TCP listeners (one per shard
//! and listen address, grouped by SO_REUSEPORT) and relay sockets (one per
//! allocation).

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

fn new_udp(addr: &SocketAddr) -> io::Result<Socket> {
    let sock = Socket::new(
        Domain::for_address(*addr),
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        // An IPv6 socket never receives IPv4-mapped traffic, so an IPv4 and an
        // IPv6 listener can share a port and every source address is native.
        sock.set_only_v6(true)?;
    }
    Ok(sock)
}

/// Receive buffer a listener asks for. Every client of a shard shares its
/// listener, so bursts from many clients queue there while the shard's
/// thread wakes up; with the kernel's usual 208 KiB default (about 270 small
/// datagrams) a 100-flow load on loopback lost a third of client→peer traffic
/// at 64 % CPU (tuning/results/README.md). The kernel caps the request at
/// `net.core.rmem_max`, so hosts must raise that too.
pub const LISTENER_RCVBUF: usize = 4 << 20;

/// Whether a listener opens an address's SO_REUSEPORT group or joins the
/// group this process opened.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Group {
    /// The first socket on the address: bound *without* SO_REUSEPORT, so the
    /// bind fails with `AddrInUse` when any other socket holds the address,
    /// including another process's SO_REUSEPORT group (SECURITY.md rule 15).
    /// SO_REUSEPORT is switched on only after the bind succeeded, so that
    /// this process's other shards can join.
    Open,
    /// Every further shard's socket on the address the `Open` one resolved.
    Join,
}

/// A non-blocking listener socket bound to `addr`. The first (`Group::Open`)
/// claims the address for this process alone; the others (`Group::Join`)
/// share it through SO_REUSEPORT, so that every shard has its own socket on
/// the address and the kernel spreads clients across them by 5-tuple hash.
pub fn udp_listener(addr: SocketAddr, group: Group) -> io::Result<UdpSocket> {
    let sock = new_udp(&addr)?;
    if group == Group::Join {
        sock.set_reuse_port(true)?;
    }
    // A smaller buffer than asked for is not an error: the relay works, it
    // just absorbs shorter bursts. Say what the kernel granted.
    if let Err(e) = sock.set_recv_buffer_size(LISTENER_RCVBUF) {
        tracing::warn!(error = %e, "could not set the listener's receive buffer");
    }
    let granted = sock.recv_buffer_size().unwrap_or(0);
    if granted < LISTENER_RCVBUF {
        tracing::info!(
            granted,
            wanted = LISTENER_RCVBUF,
            "listener receive buffer limited by net.core.rmem_max"
        );
    }
    sock.bind(&addr.into())?;
    if group == Group::Open {
        // Once set, the kernel lets a socket with SO_REUSEPORT and the same
        // owner join this one; a socket of another process still cannot,
        // since its own first socket has no SO_REUSEPORT.
        sock.set_reuse_port(true)?;
    }
    Ok(sock.into())
}

/// Connections a TCP listener lets wait for `accept` (the kernel caps it at
/// `net.core.somaxconn`).
pub const TCP_BACKLOG: i32 = 4096;

/// A non-blocking TCP listener on `addr`, in an SO_REUSEPORT group as
/// [`udp_listener`]'s are: the `Open` one claims the address for this
/// process (binding without SO_REUSEPORT), the `Join`ed ones share it, and
/// the kernel spreads new connections across them by 4-tuple hash.
pub fn tcp_listener(addr: SocketAddr, group: Group) -> io::Result<TcpListener> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    // A restarted relay can bind while its old connections sit in TIME_WAIT.
    // (A listening socket still refuses a second listener without
    // SO_REUSEPORT.)
    sock.set_reuse_address(true)?;
    if group == Group::Join {
        sock.set_reuse_port(true)?;
    }
    sock.bind(&addr.into())?;
    if group == Group::Open {
        sock.set_reuse_port(true)?;
    }
    sock.listen(TCP_BACKLOG)?;
    Ok(sock.into())
}

/// A non-blocking relay socket bound to `addr` (no SO_REUSEPORT: a relayed
/// transport address belongs to exactly one allocation).
///
/// With `dont_fragment` the kernel sets DF and refuses to fragment
/// (IP_PMTUDISC_DO; for IPv6, no local fragmentation). Without it IPv4
/// datagrams leave with DF clear (IP_PMTUDISC_DONT): RFC 8656's alternate
/// behaviour for the DF bit, since the incoming DF bit is not visible here.
pub fn udp_relay(addr: SocketAddr, dont_fragment: bool) -> io::Result<UdpSocket> {
    let sock = new_udp(&addr)?;
    match (addr.is_ipv6(), dont_fragment) {
        (false, true) => set_int_opt(
            &sock,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )?,
        (false, false) => set_int_opt(
            &sock,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DONT,
        )?,
        (true, true) => set_int_opt(
            &sock,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
        )?,
        (true, false) => {}
    }
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// The soft limit on open file descriptors (RLIMIT_NOFILE), or a large
/// number when it cannot be read or is unlimited.
/// A TCP allocation's listener on its relayed address (RFC 6062),
/// non-blocking. SO_REUSEPORT, so that connections to peers can leave from
/// the same address (`tcp_relay_connect`).
pub fn tcp_relay_listener(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let s = tcp_relay_socket(addr)?;
    s.bind(&addr.into())?;
    s.listen(backlog)?;
    Ok(s.into())
}

/// A non-blocking connection from a TCP allocation's relayed address
/// `from` to `peer` (RFC 6062 §5.2), under way: it is writable once made
/// or failed.
pub fn tcp_relay_connect(from: SocketAddr, peer: SocketAddr) -> io::Result<TcpStream> {
    let s = tcp_relay_socket(peer)?;
    s.bind(&from.into())?;
    match s.connect(&peer.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(s.into())
}

fn tcp_relay_socket(addr: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

pub fn fd_limit() -> usize {
    match nofile() {
        Some(lim) => limit_to_usize(lim.rlim_cur),
        None => usize::MAX,
    }
}

/// Raises the soft descriptor limit to the hard one (what an unprivileged
/// process may do) and returns the soft limit in force afterwards, as
/// [`fd_limit`] reports it.
pub fn raise_fd_limit() -> usize {
    let Some(lim) = nofile() else {
        return usize::MAX;
    };
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a live rlimit the kernel only reads.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return limit_to_usize(raised.rlim_cur);
        }
    }
    limit_to_usize(lim.rlim_cur)
}

fn nofile() -> Option<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a live rlimit the kernel fills.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (rc == 0).then_some(lim)
}

fn limit_to_usize(n: libc::rlim_t) -> usize {
    if n == libc::RLIM_INFINITY {
        return usize::MAX;
    }
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn set_int_opt(
    sock: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `sock` owns an open descriptor for the duration of the call;
    // the option value pointer and length describe a live `c_int` on the stack.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
fn get_int_opt(sock: &UdpSocket, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `sock` is open; value/len point to live stack variables of the
    // sizes passed.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_share_a_port_relays_do_not() {
        let a = udp_listener("127.0.0.1:0".parse().unwrap(), Group::Open).unwrap();
        let port_addr = a.local_addr().unwrap();
        let b = udp_listener(port_addr, Group::Join).unwrap();
        assert_eq!(b.local_addr().unwrap(), port_addr);

        let r = udp_relay("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let err = udp_relay(r.local_addr().unwrap(), false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn an_address_with_a_group_cannot_be_opened_again() {
        for any in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(first) = udp_listener(any.parse().unwrap(), Group::Open) else {
                continue; // no ::1 on this host
            };
            let addr = first.local_addr().unwrap();
            let _joined = udp_listener(addr, Group::Join).unwrap();
            // A second instance opens its own group first: refused.
            let err = udp_listener(addr, Group::Open).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{addr}");
            // Also on the wildcard address of the same port.
            let mut wild = addr;
            wild.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
            });
            let err = udp_listener(wild, Group::Open).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{wild}");
        }
    }

    #[test]
    fn a_joined_group_spreads_clients_over_its_sockets() {
        let a = udp_listener("127.0.0.1:0".parse().unwrap(), Group::Open).unwrap();
        let addr = a.local_addr().unwrap();
        let b = udp_listener(addr, Group::Join).unwrap();
        // Each datagram from a fresh source port hashes anew.
        for _ in 0..64 {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.send_to(b"x", addr).unwrap();
        }
        let count = |s: &UdpSocket| {
            let mut buf = [0u8; 8];
            std::iter::from_fn(|| s.recv(&mut buf).ok()).count()
        };
        let (na, nb) = (count(&a), count(&b));
        assert_eq!(na + nb, 64);
        assert!(na > 0 && nb > 0, "one socket got everything: {na} / {nb}");
    }

    #[test]
    fn a_tcp_address_with_a_group_cannot_be_opened_again_and_the_group_shares_it() {
        use std::io::{Read, Write};
        let first = tcp_listener("127.0.0.1:0".parse().unwrap(), Group::Open).unwrap();
        let addr = first.local_addr().unwrap();
        let second = tcp_listener(addr, Group::Join).unwrap();
        // Another process's first socket: refused, on the address or the wildcard.
        for other in [
            addr,
            SocketAddr::new("0.0.0.0".parse().unwrap(), addr.port()),
        ] {
            let e = tcp_listener(other, Group::Open).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{other}");
        }
        // Connections land on the group's sockets, each accepted once.
        let mut clients = Vec::new();
        for _ in 0..32 {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.write_all(b"x").unwrap();
            clients.push(c);
        }
        let mut accepted = [0usize; 2];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while accepted.iter().sum::<usize>() < 32 && std::time::Instant::now() < deadline {
            for (i, l) in [&first, &second].into_iter().enumerate() {
                if let Ok((mut s, _)) = l.accept() {
                    s.set_nonblocking(false).unwrap();
                    let mut b = [0u8; 1];
                    s.read_exact(&mut b).unwrap();
                    accepted[i] += 1;
                }
            }
        }
        assert_eq!(accepted.iter().sum::<usize>(), 32);
        assert!(accepted.iter().all(|&n| n > 0), "spread: {accepted:?}");
    }

    #[test]
    fn the_fd_limit_only_goes_up() {
        let before = fd_limit();
        let after = raise_fd_limit();
        assert!(after >= before && after >= 1);
        assert_eq!(fd_limit(), after);
    }

    #[test]
    fn dont_fragment_sets_pmtudisc() {
        let df = udp_relay("127.0.0.1:0".parse().unwrap(), true).unwrap();
        assert_eq!(
            get_int_opt(&df, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER).unwrap(),
            libc::IP_PMTUDISC_DO
        );
        let no_df = udp_relay("127.0.0.1:0".parse().unwrap(), false).unwrap();
        assert_eq!(
            get_int_opt(&no_df, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER).unwrap(),
            libc::IP_PMTUDISC_DONT
        );
    }
}
