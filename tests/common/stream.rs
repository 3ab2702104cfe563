//! The test client's link to a server over TCP or TLS (RFC 8656 §3.1):
//! bytes written as given, frames read back one at a time (STUN messages
//! and padded ChannelData, back to back, split with `uturn::stun::next_frame`),
//! and a record of when and how the server closed the connection. Every
//! read has a deadline; writes have a timeout.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use uturn::stun::{next_frame, Framing};

use super::*;

/// RFC 7443: the ALPN id of STUN and TURN over TLS.
pub const ALPN_STUN_TURN: &[u8] = b"stun.turn";
/// Writes that block this long fail the test.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a TLS handshake: longer than `WAIT`, since a handshake runs
/// code a busy machine may have to page in first.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(5);

/// How the server ended a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Closed {
    /// End of stream (a TCP FIN, or a TLS close_notify).
    Eof,
    /// The TCP connection was reset (the server closed it with bytes unread).
    Reset,
    /// A TCP end without close_notify on a TLS connection.
    TlsCut,
    /// The TLS session failed (e.g. an alert from the server).
    Tls(String),
}

/// A TCP connection, with a TLS session over it or not.
pub struct StreamLink {
    sock: TcpStream,
    tls: Option<Box<ClientConnection>>,
    /// Bytes read and not yet handed out as frames.
    buf: Vec<u8>,
    /// Set once the server has ended the connection.
    closed: Option<Closed>,
}

impl StreamLink {
    /// A plain TCP connection to `server` from an ephemeral port.
    pub fn tcp(server: SocketAddr) -> StreamLink {
        let sock = TcpStream::connect_timeout(&server, WAIT)
            .unwrap_or_else(|e| panic!("TCP connect to {server}: {e}"));
        StreamLink::over(sock)
    }

    /// A plain TCP connection to `server` from `local` (bound first).
    pub fn tcp_from(local: SocketAddr, server: SocketAddr) -> std::io::Result<StreamLink> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(
            Domain::for_address(local),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        s.bind(&local.into())?;
        s.connect_timeout(&server.into(), WAIT)?;
        Ok(StreamLink::over(s.into()))
    }

    fn over(sock: TcpStream) -> StreamLink {
        sock.set_nodelay(true).unwrap();
        sock.set_write_timeout(Some(WRITE_TIMEOUT)).unwrap();
        StreamLink {
            sock,
            tls: None,
            buf: Vec::new(),
            closed: None,
        }
    }

    /// A TLS connection to `server`, verified against `ca_pem` as the only
    /// root with the name "localhost", offering ALPN `alpn`. The handshake is
    /// finished before this returns (bounded by `HANDSHAKE_WAIT`).
    pub fn tls(server: SocketAddr, ca_pem: &str, alpn: &[&[u8]]) -> Result<StreamLink, String> {
        let config = client_config(ca_pem, alpn);
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(config, name).map_err(|e| format!("TLS client: {e}"))?;
        let mut link = StreamLink::tcp(server);
        link.tls = Some(Box::new(conn));
        link.handshake()?;
        Ok(link)
    }

    fn handshake(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + HANDSHAKE_WAIT;
        let tls = self.tls.as_deref_mut().expect("a TLS link");
        // Bounded: each round writes, or reads until the deadline.
        for _ in 0..1000 {
            // Written before the end is declared: the client's Finished is
            // queued when the client is done, and the server is not done
            // until it has it.
            while tls.wants_write() {
                tls.write_tls(&mut self.sock)
                    .map_err(|e| format!("TLS handshake write: {e}"))?;
            }
            if !tls.is_handshaking() {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("TLS handshake unfinished after {HANDSHAKE_WAIT:?}"));
            }
            self.sock.set_read_timeout(Some(left)).unwrap();
            match tls.read_tls(&mut self.sock) {
                Ok(0) => return Err("the server closed during the TLS handshake".into()),
                Ok(_) => {}
                Err(e) => {
                    return Err(format!(
                        "TLS handshake read (bound {HANDSHAKE_WAIT:?}): {e}"
                    ))
                }
            }
            if let Err(e) = tls.process_new_packets() {
                // The alert goes out before the error is reported.
                let _ = tls.write_tls(&mut self.sock);
                return Err(format!("TLS handshake: {e}"));
            }
        }
        Err("TLS handshake: too many rounds".into())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The ALPN protocol the server chose (TLS only).
    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.tls.as_ref()?.alpn_protocol().map(<[u8]>::to_vec)
    }

    /// The server's leaf certificate, DER (TLS only).
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        let certs = self.tls.as_ref()?.peer_certificates()?;
        certs.first().map(|c| c.as_ref().to_vec())
    }

    /// Writes `bytes` whole (through the TLS session, if any).
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return self.sock.write_all(bytes);
        };
        let mut rest = bytes;
        // Bounded: every round hands the session at least one byte, or fails.
        while !rest.is_empty() {
            let n = tls.writer().write(rest)?;
            rest = &rest[n..];
            while tls.wants_write() {
                tls.write_tls(&mut self.sock)?;
            }
            if n == 0 && !rest.is_empty() {
                return Err(std::io::Error::new(
                    ErrorKind::WriteZero,
                    "TLS session took no plaintext",
                ));
            }
        }
        Ok(())
    }

    /// Ends the sending side (a TCP FIN; TLS: no close_notify first).
    pub fn shutdown_write(&mut self) {
        self.sock
            .shutdown(std::net::Shutdown::Write)
            .unwrap_or_else(|e| panic!("shutdown: {e}"));
    }

    /// How the server closed the connection, once it has been seen.
    pub fn closed(&self) -> Option<&Closed> {
        self.closed.as_ref()
    }

    /// The next whole frame within `limit`; None at the deadline or once
    /// the connection is closed. Panics if the server's bytes cannot be
    /// framed (a server that breaks framing is a bug, never noise).
    pub fn recv_frame(&mut self, limit: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + limit;
        // Bounded: each round takes bytes, or ends at the deadline or EOF.
        for _ in 0..1_000_000 {
            match next_frame(&self.buf) {
                Framing::Complete { len, .. } => return Some(self.buf.drain(..len).collect()),
                Framing::Invalid(why) => panic!(
                    "the server's stream cannot be framed ({why:?}): {}",
                    show(&self.buf)
                ),
                Framing::Incomplete { .. } => {}
            }
            if self.closed.is_some() {
                return None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.fill(left) {
                return None;
            }
        }
        None
    }

    /// The next `n` bytes as they are (an RFC 6062 data connection carries
    /// no frames), within `limit`; None if they did not all come.
    #[allow(dead_code)] // tests/e2e only
    pub fn read_exact_raw(&mut self, n: usize, limit: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + limit;
        for _ in 0..1_000_000 {
            if self.buf.len() >= n {
                return Some(self.buf.drain(..n).collect());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if self.closed.is_some() || left.is_zero() {
                return None;
            }
            self.fill(left);
        }
        None
    }

    /// Reads (and throws away) until the server closes the connection or
    /// `limit` passes; how it closed, if it did. Frames read on the way are
    /// returned too.
    pub fn wait_closed(&mut self, limit: Duration) -> (Option<Closed>, Vec<Vec<u8>>) {
        let deadline = Instant::now() + limit;
        let mut frames = Vec::new();
        for _ in 0..1_000_000 {
            if let Some(f) = self.recv_frame(deadline.saturating_duration_since(Instant::now())) {
                frames.push(f);
                continue;
            }
            break;
        }
        (self.closed.clone(), frames)
    }

    /// Reads once (waiting at most `limit`); false if nothing came in time
    /// or the connection is closed (`closed` says how).
    fn fill(&mut self, limit: Duration) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        self.sock
            .set_read_timeout(Some(limit.max(Duration::from_millis(1))))
            .unwrap();
        let Some(tls) = self.tls.as_deref_mut() else {
            return match self.sock.read(&mut chunk) {
                Ok(0) => {
                    self.closed = Some(Closed::Eof);
                    false
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    true
                }
                Err(e) => self.read_error(e),
            };
        };
        // Plaintext already decrypted comes first.
        match tls.reader().read(&mut chunk) {
            Ok(0) => {
                self.closed = Some(Closed::Eof);
                return false;
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                return true;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                self.closed = Some(Closed::TlsCut);
                return false;
            }
            Err(e) => panic!("TLS read: {e}"),
        }
        match tls.read_tls(&mut self.sock) {
            // End of the TCP stream: the session says below whether it was
            // closed properly.
            Ok(_) => {}
            Err(e) => return self.read_error(e),
        }
        if let Err(e) = tls.process_new_packets() {
            self.closed = Some(Closed::Tls(e.to_string()));
            return false;
        }
        while tls.wants_write() {
            if tls.write_tls(&mut self.sock).is_err() {
                break;
            }
        }
        // Progress was made (records in, or the end seen): look again.
        true
    }

    fn read_error(&mut self, e: std::io::Error) -> bool {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => false,
            ErrorKind::Interrupted => true,
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => {
                self.closed = Some(Closed::Reset);
                false
            }
            _ => panic!("read from {:?}: {e}", self.sock.peer_addr()),
        }
    }
}

/// A rustls client configuration trusting only `ca_pem`, offering `alpn`.
pub fn client_config(ca_pem: &str, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.expect("a PEM certificate"))
            .expect("a usable root certificate");
    }
    assert!(!roots.is_empty(), "no certificate in the CA PEM");
    // ring, the workspace's provider; deprecated only for lacking
    // post-quantum key exchange (see crates/stream/src/tls.rs).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// The first bytes a TLS client sends (its ClientHello record), to throw at
/// a listener that does not speak TLS.
pub fn client_hello(ca_pem: &str) -> Vec<u8> {
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn =
        ClientConnection::new(client_config(ca_pem, &[ALPN_STUN_TURN]), name).expect("TLS client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("ClientHello into a Vec");
    }
    out
}
