//! A client's way to the server: a UDP socket, or a TCP or TLS
//! [`Stream`]; and the [`Connector`] that opens one per client for the
//! transport the flags chose.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};

use socket2::{Domain, Protocol, Socket, Type};

use super::stream::Stream;
use super::tls::{TlsClient, TlsInfo};
use super::{client_addr, udp_socket};
use crate::flags::{Dial, Transport};

/// One client's connection to the server.
pub enum Conn {
    /// A UDP socket connected to the server.
    Udp(UdpSocket),
    /// A TCP connection, with TLS or without (boxed: a TLS session is
    /// about a kilobyte, a UDP socket four bytes).
    Stream(Box<Stream>),
}

impl Conn {
    pub fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Conn::Udp(s) => s.as_fd(),
            Conn::Stream(s) => s.fd(),
        }
    }

    pub fn stream(&self) -> Option<&Stream> {
        match self {
            Conn::Udp(_) => None,
            Conn::Stream(s) => Some(s),
        }
    }

    /// The negotiated TLS parameters (TLS connections past the handshake).
    pub fn tls_info(&self) -> Option<TlsInfo> {
        self.stream().and_then(Stream::tls_info)
    }

    /// Sends whole frames: one datagram over UDP (false if the socket
    /// refused it), queued behind anything waiting over a stream (false if
    /// some of it still waits).
    pub fn send(&self, frame: &[u8]) -> io::Result<bool> {
        match self {
            Conn::Udp(s) => match s.send(frame) {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                Err(e) => Err(e),
            },
            Conn::Stream(s) => s.queue(frame),
        }
    }
}

/// Opens each client's connection for the transport of the flags.
#[derive(Clone)]
pub struct Connector {
    server: SocketAddr,
    transport: Transport,
    source: Source,
    tls: Option<TlsClient>,
}

/// Which local address a client binds to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// Its loopback address of [`client_addr`], clients spread over this many.
    Loopback { spread: usize },
    /// The unspecified address: the route to the server picks the source
    /// (a client in a network namespace of its own).
    Route,
}

impl Connector {
    /// For `dial`'s server and transport, clients spread over `spread`
    /// loopback addresses (see [`client_addr`]).
    pub fn new(dial: &Dial, spread: usize) -> anyhow::Result<Connector> {
        dial.validate()?;
        let tls = match dial.transport {
            Transport::Tls => Some(TlsClient::new(
                dial.server.ip(),
                dial.tls_ca.as_deref(),
                dial.tls_sni.as_deref(),
            )?),
            Transport::Udp | Transport::Tcp => None,
        };
        Ok(Connector {
            server: dial.server,
            transport: dial.transport,
            source: Source::Loopback { spread },
            tls,
        })
    }

    /// Clients bind to the unspecified address instead of a loopback one,
    /// so that the route to the server chooses their source address: for
    /// clients in a network namespace whose only address faces the server.
    pub fn source_by_route(mut self) -> Connector {
        self.source = Source::Route;
        self
    }

    /// The local address client `index` binds to (port 0).
    fn bind_addr(&self, index: u64) -> SocketAddr {
        match self.source {
            Source::Loopback { spread } => client_addr(&self.server, index, spread),
            Source::Route => {
                let any: IpAddr = match self.server {
                    SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
                    SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
                };
                SocketAddr::new(any, 0)
            }
        }
    }

    /// Client `index`'s connection, from its address of [`client_addr`]
    /// (or the route's, see [`Connector::source_by_route`]): a UDP socket
    /// with buffers of about `udp_buf` bytes, or a TCP connection being set
    /// up (non-blocking; the first bytes sent wait until it is, and a TLS
    /// ClientHello waits to go out first).
    pub fn open(&self, index: u64, udp_buf: usize) -> io::Result<Conn> {
        let bind = self.bind_addr(index);
        if self.transport == Transport::Udp {
            return udp_socket(bind, Some(self.server), udp_buf).map(Conn::Udp);
        }
        let s = Socket::new(Domain::for_address(bind), Type::STREAM, Some(Protocol::TCP))?;
        s.set_nodelay(true)?;
        s.bind(&bind.into())?;
        s.set_nonblocking(true)?;
        match s.connect(&self.server.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let session = match &self.tls {
            Some(t) => Some(t.session().map_err(io::Error::other)?),
            None => None,
        };
        let stream = Stream::new(TcpStream::from(s), session);
        // A ClientHello goes out as soon as the socket takes it.
        stream.flush()?;
        Ok(Conn::Stream(Box::new(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::RelayArgs;

    #[test]
    fn clients_bind_to_loopback_or_let_the_route_choose() {
        let mut dial = RelayArgs::default().target;
        dial.server = "10.200.1.1:3478".parse().unwrap();
        let c = Connector::new(&dial, 0).unwrap();
        assert_eq!(c.bind_addr(1).to_string(), "127.0.0.2:0");
        let c = c.source_by_route();
        assert_eq!(c.bind_addr(1).to_string(), "0.0.0.0:0");
        dial.server = "[fd00:1::1]:3478".parse().unwrap();
        let c = Connector::new(&dial, 0).unwrap().source_by_route();
        assert_eq!(c.bind_addr(7).to_string(), "[::]:0");
    }
}
