//! A client's way to the server: a UDP socket, or a TCP or TLS
//! [`Stream`]; and the [`Connector`] that opens one per client for the
//! transport the flags chose.

use std::io;
use std::net::{SocketAddr, TcpStream, UdpSocket};
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
    spread: usize,
    tls: Option<TlsClient>,
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
            spread,
            tls,
        })
    }

    /// Client `index`'s connection, from its address of [`client_addr`]:
    /// a UDP socket with buffers of about `udp_buf` bytes, or a TCP
    /// connection being set up (non-blocking; the first bytes sent wait
    /// until it is, and a TLS ClientHello waits to go out first).
    pub fn open(&self, index: u64, udp_buf: usize) -> io::Result<Conn> {
        let bind = client_addr(&self.server, index, self.spread);
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
