//! A TURN client over UDP, TCP or TLS (RFC 8656), built for running many
//! flows at once.
//!
//! A [`TurnFlow`] is one client: its own connection to the server (a UDP
//! socket, or a TCP or TLS [`Stream`]), its credentials and the state of its
//! current request. The [`Engine`] drives any number of flows from one
//! thread: it watches their sockets with epoll, matches responses to
//! requests by transaction id, retransmits every 500 ms over UDP (5 sends at
//! most; over TCP and TLS nothing is retransmitted and a request without an
//! answer after 5 s times out), answers 401 with the
//! long-term credential round (RFC 8489 §9.2) and 438 with the fresh nonce,
//! and moves each flow through a plan of steps — Allocate, CreatePermission,
//! ChannelBind, Refresh with LIFETIME 0 (delete).
//!
//! Requests are authenticated with MESSAGE-INTEGRITY and the MD5 key
//! (MD5(username:realm:password)); neither PASSWORD-ALGORITHM attribute is
//! sent, which RFC 8489 §9.2.4 treats as MD5 whatever the server offers.

mod conn;
mod engine;
mod flow;
mod stream;
#[cfg(test)]
mod stream_tests;
mod tls;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

pub use conn::{Conn, Connector};
pub use engine::{run_plan, Engine, Event};
pub use flow::{setup_plan, FailureCounts, FlowError, Step, TurnFlow};
pub use stream::{frames, Scratch, Stream};
pub use tls::TlsInfo;

/// Retransmission interval of a request without an answer (UDP).
const RTO: Duration = Duration::from_millis(500);
/// Sends of one request before it counts as timed out (UDP).
const MAX_TRIES: u32 = 5;
/// How long a request over TCP or TLS waits for its answer: it is sent
/// once (RFC 8489 §6.2.2: reliability is the transport's).
const STREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// 438 (stale nonce) answers tolerated for one request.
const MAX_STALE: u32 = 3;
/// REQUESTED-TRANSPORT value for UDP.
const UDP: u8 = 17;
/// epoll tokens at or above this are the caller's own descriptors.
pub const EXTRA_TOKEN: u64 = 1 << 62;
/// Datagrams read from one ready socket per turn.
const READS_PER_TURN: usize = 64;

/// The loopback address of `server`'s family, port 0.
pub fn loopback_for(server: &SocketAddr) -> SocketAddr {
    match server {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0),
    }
}

/// The source address of client `index` when clients are spread over
/// `spread` loopback addresses counted up from 127.0.0.1 (0: one address
/// per client). IPv6 has only ::1.
pub fn client_addr(server: &SocketAddr, index: u64, spread: usize) -> SocketAddr {
    // 127.0.0.1 up to 127.255.255.254.
    const V4_ADDRS: u64 = (1 << 24) - 2;
    match server {
        SocketAddr::V4(_) => {
            let n = if spread == 0 {
                V4_ADDRS
            } else {
                (spread as u64).min(V4_ADDRS)
            };
            let ip = 0x7F00_0001u32 + (index % n) as u32;
            SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), 0)
        }
        SocketAddr::V6(_) => loopback_for(server),
    }
}

/// A non-blocking UDP socket bound to `bind`, connected to `connect` if
/// given, with receive and send buffers of about `buf_bytes`.
pub fn udp_socket(
    bind: SocketAddr,
    connect: Option<SocketAddr>,
    buf_bytes: usize,
) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps these at net.core.rmem_max / wmem_max.
    let _ = s.set_recv_buffer_size(buf_bytes);
    let _ = s.set_send_buffer_size(buf_bytes);
    s.bind(&bind.into())?;
    if let Some(c) = connect {
        s.connect(&c.into())?;
    }
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// The socket of client `index` of a run against `server`: bound to its
/// address of [`client_addr`] and connected to the server.
pub fn client_socket(
    server: SocketAddr,
    index: u64,
    spread: usize,
    buf_bytes: usize,
) -> io::Result<UdpSocket> {
    udp_socket(client_addr(&server, index, spread), Some(server), buf_bytes)
}

/// Refuses anything but loopback addresses: the generator only ever talks
/// to servers on this machine.
pub fn require_loopback(what: &str, ip: IpAddr) -> anyhow::Result<()> {
    if ip.is_loopback() {
        Ok(())
    } else {
        anyhow::bail!(
            "{what} {ip} is not a loopback address: uturn-loadgen only sends to 127.0.0.0/8 or ::1"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addresses() {
        let s: SocketAddr = "127.0.0.1:3478".parse().unwrap();
        assert_eq!(client_addr(&s, 0, 0).to_string(), "127.0.0.1:0");
        assert_eq!(client_addr(&s, 255, 0).to_string(), "127.0.1.0:0");
        assert_eq!(client_addr(&s, 5, 1).to_string(), "127.0.0.1:0");
        assert_eq!(client_addr(&s, 5, 4).to_string(), "127.0.0.2:0");
        let s6: SocketAddr = "[::1]:3478".parse().unwrap();
        assert_eq!(client_addr(&s6, 9, 0).to_string(), "[::1]:0");
        // Every spread address can really be bound on Linux loopback.
        UdpSocket::bind(client_addr(&s, 70_000, 0)).unwrap();
        assert!(require_loopback("--server", "10.0.0.1".parse().unwrap()).is_err());
    }
}
