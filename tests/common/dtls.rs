//! A DTLS 1.2 client link for the tests (OpenSSL over a connected UDP
//! socket): one record per datagram each way, every wait bounded.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use openssl::ssl::{ErrorCode, Ssl, SslContextBuilder, SslMethod, SslStream, SslVerifyMode};

/// A connected UDP socket as OpenSSL's "stream": each read is one datagram.
pub struct Datagrams(pub UdpSocket);

impl Read for Datagrams {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.recv(buf)
    }
}

impl Write for Datagrams {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A client's DTLS session with the server; close_notify when dropped.
pub struct DtlsLink {
    tls: SslStream<Datagrams>,
    /// The server sent close_notify or a fatal alert.
    pub closed: bool,
}

impl DtlsLink {
    /// Connects to `server` (the certificate is not checked: the tests check
    /// the relay, not PKI).
    pub fn connect(server: SocketAddr) -> io::Result<DtlsLink> {
        let local = if server.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        };
        let sock = UdpSocket::bind(local)?;
        sock.connect(server)?;
        DtlsLink::connect_on(sock)
    }

    pub fn connect_on(sock: UdpSocket) -> io::Result<DtlsLink> {
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut b = SslContextBuilder::new(SslMethod::dtls_client()).map_err(io::Error::other)?;
        b.set_verify(SslVerifyMode::NONE);
        let mut ssl = Ssl::new(&b.build()).map_err(io::Error::other)?;
        ssl.set_mtu(1200).map_err(io::Error::other)?;
        let mut tls = SslStream::new(ssl, Datagrams(sock)).map_err(io::Error::other)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match tls.connect() {
                Ok(()) => break,
                Err(e) if e.code() == ErrorCode::WANT_READ && Instant::now() < deadline => {}
                Err(e) => return Err(io::Error::other(format!("DTLS handshake: {e}"))),
            }
        }
        Ok(DtlsLink { tls, closed: false })
    }

    /// The certificate the server presented (DER).
    #[allow(dead_code)] // tests/e2e only
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        self.tls.ssl().peer_certificate()?.to_der().ok()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.tls.get_ref().0.local_addr().unwrap()
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.tls
            .ssl_write(bytes)
            .map(|_| ())
            .map_err(io::Error::other)
    }

    /// Sends close_notify.
    pub fn close(&mut self) {
        let _ = self.tls.shutdown();
    }

    /// The next record from the server within `limit`.
    pub fn recv(&mut self, limit: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 4096];
        while !self.closed {
            match self.tls.ssl_read(&mut buf) {
                Ok(n) if n > 0 => return Some(buf[..n].to_vec()),
                Ok(_) => self.closed = true,
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => self.closed = true,
                Err(e) if e.code() == ErrorCode::WANT_READ || e.io_error().is_some() => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                }
                Err(_) => self.closed = true,
            }
        }
        None
    }
}

impl Drop for DtlsLink {
    fn drop(&mut self) {
        self.close();
    }
}
