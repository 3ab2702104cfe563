//! One client's DTLS 1.2 session: an OpenSSL `SSL` object in the server
//! role, fed whole datagrams through a memory pipe (no socket: the shard
//! owns that), with its output taken as whole datagrams.
//!
//! Starting from a checked cookie. The front door answered the client's
//! first ClientHello itself, so the hello that makes a session carries a
//! cookie and message_seq 1, while a fresh OpenSSL server expects message
//! 0. The session is therefore first shown the same hello as it was first
//! sent (message_seq 0, no cookie; `record::without_cookie`): it answers
//! with a HelloVerifyRequest carrying the very cookie the front door made
//! (the cookie callback hands out the one that was checked), which is
//! thrown away, and it now stands where a server that had sent that
//! HelloVerifyRequest stands. The real hello follows and is checked by the
//! verify callback; the handshake goes on from there, with message and
//! record numbers as the client expects. RFC 6347 §4.2.6 leaves the first
//! hello and the HelloVerifyRequest out of the handshake's transcript, so
//! the hello shown first changes nothing the client can see.
//!
//! Bounds: datagrams out are taken by the caller after each call; the pipe
//! holds at most `MAX_QUEUED` of them and drops beyond (as a full socket
//! would). OpenSSL's own buffers are bounded by the record size.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::OnceLock;
use std::time::Duration;

use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::pkey::PKey;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions, SslStream,
    SslVersion,
};
use openssl::x509::X509;
use subtle::ConstantTimeEq;

use crate::cookie::COOKIE_LEN;
use crate::record::{self, ClientHello};

/// The path MTU assumed for handshake flights (OpenSSL fragments longer
/// handshake messages to fit). 1200 bytes gets through nearly every path.
pub const MTU: u32 = 1200;
/// Datagrams waiting in a session's pipe at most.
const MAX_QUEUED: usize = 64;
/// How often a session in its handshake is given a chance to retransmit
/// (OpenSSL keeps the retransmission timer itself; it starts at 1 s).
pub const HANDSHAKE_TICK: Duration = Duration::from_millis(500);

/// Cipher suites: ECDHE with AES-GCM or ChaCha20-Poly1305, ECDSA or RSA
/// certificates, in the server's order (AES-128-GCM first, as for TLS).
const CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384";

/// The cookie each session must accept, kept on its `SSL` object.
fn cookie_index() -> Result<Index<Ssl, [u8; COOKIE_LEN]>, ErrorStack> {
    static INDEX: OnceLock<Index<Ssl, [u8; COOKIE_LEN]>> = OnceLock::new();
    if let Some(i) = INDEX.get() {
        return Ok(*i);
    }
    let i = Ssl::new_ex_index()?;
    Ok(*INDEX.get_or_init(|| i))
}

/// Why a session cannot go on. Every one ends it.
#[derive(Debug)]
pub enum SessionError {
    /// The handshake failed, an alert came, or a record was refused.
    Tls(String),
    /// The client sent close_notify.
    Closed,
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionError::Tls(e) => write!(f, "DTLS: {e}"),
            SessionError::Closed => f.write_str("DTLS close_notify"),
        }
    }
}

impl std::error::Error for SessionError {}

/// The server side's certificate and settings, shared by every session of
/// every shard and replaced whole by a reload (open sessions keep theirs).
#[derive(Clone)]
pub struct DtlsContext {
    ctx: SslContext,
}

impl std::fmt::Debug for DtlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DtlsContext(..)")
    }
}

impl DtlsContext {
    /// From a certificate chain (DER, leaf first) and its private key (DER:
    /// PKCS#8, or PKCS#1 RSA, or SEC1 EC), the same as TLS serves.
    pub fn new(chain: &[Vec<u8>], key: &[u8]) -> Result<DtlsContext, String> {
        let err = |what: &str, e: ErrorStack| format!("{what}: {e}");
        let mut b = SslContextBuilder::new(SslMethod::dtls_server())
            .map_err(|e| err("an OpenSSL DTLS context", e))?;
        b.set_min_proto_version(Some(SslVersion::DTLS1_2))
            .map_err(|e| err("DTLS 1.2", e))?;
        b.set_cipher_list(CIPHERS)
            .map_err(|e| err("cipher suites", e))?;
        b.set_options(
            SslOptions::COOKIE_EXCHANGE
                | SslOptions::NO_QUERY_MTU
                | SslOptions::NO_TICKET
                | SslOptions::NO_RENEGOTIATION
                | SslOptions::CIPHER_SERVER_PREFERENCE
                | SslOptions::SINGLE_ECDH_USE,
        );
        b.set_mode(SslMode::RELEASE_BUFFERS);
        let (leaf, rest) = chain.split_first().ok_or("an empty certificate chain")?;
        let leaf = X509::from_der(leaf).map_err(|e| err("the certificate", e))?;
        b.set_certificate(&leaf)
            .map_err(|e| err("the certificate", e))?;
        for c in rest {
            let c = X509::from_der(c).map_err(|e| err("a chain certificate", e))?;
            b.add_extra_chain_cert(c)
                .map_err(|e| err("a chain certificate", e))?;
        }
        let pkey = PKey::private_key_from_der(key)
            .or_else(|_| PKey::private_key_from_pkcs8(key))
            .map_err(|e| err("the private key", e))?;
        b.set_private_key(&pkey)
            .map_err(|e| err("the private key", e))?;
        b.check_private_key()
            .map_err(|e| err("the key does not fit the certificate", e))?;
        let index = cookie_index().map_err(|e| err("OpenSSL ex_data", e))?;
        b.set_cookie_generate_cb(move |ssl, out| {
            let c = ssl.ex_data(index).ok_or_else(ErrorStack::get)?;
            let dst = out.get_mut(..COOKIE_LEN).ok_or_else(ErrorStack::get)?;
            dst.copy_from_slice(c);
            Ok(COOKIE_LEN)
        });
        b.set_cookie_verify_cb(move |ssl, cookie| {
            ssl.ex_data(index)
                .is_some_and(|c| bool::from(c.as_slice().ct_eq(cookie)))
        });
        Ok(DtlsContext { ctx: b.build() })
    }
}

/// The memory "socket" under a session: one datagram in at a time, whole
/// datagrams out.
#[derive(Default)]
struct Pipe {
    inbound: Option<Vec<u8>>,
    outbound: VecDeque<Vec<u8>>,
    /// Datagrams dropped because `outbound` was full.
    dropped: u64,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(d) = self.inbound.take() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        // OpenSSL reads with room for the largest record; a datagram that
        // does not fit is cut, and its records then fail their checks.
        let n = d.len().min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.outbound.len() < MAX_QUEUED {
            self.outbound.push_back(buf.to_vec());
        } else {
            self.dropped += 1;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One client's session.
pub struct Session {
    tls: SslStream<Pipe>,
    open: bool,
}

/// What a datagram did to a session.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Still in the handshake.
    Handshaking,
    /// The handshake finished with this datagram.
    Connected,
    /// Open; plaintext may wait in `recv`.
    Open,
}

fn fatal(e: openssl::ssl::Error) -> SessionError {
    if e.code() == ErrorCode::ZERO_RETURN {
        return SessionError::Closed;
    }
    match e.ssl_error() {
        Some(stack) => SessionError::Tls(stack.to_string()),
        None => SessionError::Tls(format!("{:?}", e.code())),
    }
}

/// Whether an OpenSSL result only means "give me more datagrams".
fn wants_more(e: &openssl::ssl::Error) -> bool {
    e.code() == ErrorCode::WANT_READ || e.code() == ErrorCode::WANT_WRITE
}

impl Session {
    /// A session for `hello`, a ClientHello in `datagram` whose `cookie` the
    /// front door checked. The server's first flight waits in
    /// `poll_transmit`. When the hello is refused (a DTLS 1.0 client, no
    /// common cipher suite), the error comes with what OpenSSL would send
    /// (a fatal alert), so that the client stops at once.
    pub fn accept(
        ctx: &DtlsContext,
        hello: &ClientHello,
        datagram: &[u8],
        cookie: [u8; COOKIE_LEN],
    ) -> Result<Session, (SessionError, Vec<Vec<u8>>)> {
        let mut s = Session::new(ctx, cookie).map_err(|e| (e, Vec::new()))?;
        let started = s.start(hello, datagram);
        match started {
            Ok(()) => Ok(s),
            Err(e) => Err((e, s.tls.get_mut().outbound.drain(..).collect())),
        }
    }

    fn start(&mut self, hello: &ClientHello, datagram: &[u8]) -> Result<(), SessionError> {
        if hello.message_seq == 1 {
            // Stand where a server that sent the HelloVerifyRequest stands.
            let first = record::without_cookie(hello, datagram)
                .ok_or_else(|| SessionError::Tls("an unreadable ClientHello".into()))?;
            self.handle(&first)?;
            self.tls.get_mut().outbound.clear();
        }
        self.handle(datagram)?;
        Ok(())
    }

    fn new(ctx: &DtlsContext, cookie: [u8; COOKIE_LEN]) -> Result<Session, SessionError> {
        let tls_err = |e: ErrorStack| SessionError::Tls(e.to_string());
        let mut ssl = Ssl::new(&ctx.ctx).map_err(tls_err)?;
        ssl.set_ex_data(cookie_index().map_err(tls_err)?, cookie);
        ssl.set_mtu(MTU).map_err(tls_err)?;
        ssl.set_accept_state();
        let tls = SslStream::new(ssl, Pipe::default()).map_err(tls_err)?;
        Ok(Session { tls, open: false })
    }

    /// Feeds one datagram from the client. Plaintext it carried waits in
    /// `recv`; datagrams to send in `poll_transmit`.
    pub fn handle(&mut self, datagram: &[u8]) -> Result<Progress, SessionError> {
        self.tls.get_mut().inbound = Some(datagram.to_vec());
        if self.open {
            return Ok(Progress::Open);
        }
        self.drive()
    }

    /// Moves the handshake on (a retransmission when OpenSSL's timer has
    /// run out). Call every `HANDSHAKE_TICK` while handshaking.
    pub fn handle_timeout(&mut self) -> Result<Progress, SessionError> {
        if self.open {
            return Ok(Progress::Open);
        }
        self.drive()
    }

    fn drive(&mut self) -> Result<Progress, SessionError> {
        match self.tls.do_handshake() {
            Ok(()) => {
                self.open = true;
                Ok(Progress::Connected)
            }
            Err(e) if wants_more(&e) => Ok(Progress::Handshaking),
            Err(e) => Err(fatal(e)),
        }
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The next record's plaintext from the datagram last handed in, into
    /// `buf`: Ok(None) when there is none (left).
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, SessionError> {
        if !self.open {
            return Ok(None);
        }
        match self.tls.ssl_read(buf) {
            Ok(0) => Err(SessionError::Closed),
            Ok(n) => Ok(Some(n)),
            Err(e) if wants_more(&e) => {
                // Nothing more in this datagram; drop what was not read.
                self.tls.get_mut().inbound = None;
                Ok(None)
            }
            Err(e) => Err(fatal(e)),
        }
    }

    /// Encrypts `plaintext` as one record (one datagram, in `poll_transmit`).
    pub fn send(&mut self, plaintext: &[u8]) -> Result<(), SessionError> {
        if !self.open {
            return Ok(());
        }
        match self.tls.ssl_write(plaintext) {
            Ok(_) => Ok(()),
            Err(e) if wants_more(&e) => Ok(()),
            Err(e) => Err(fatal(e)),
        }
    }

    /// Sends close_notify (into `poll_transmit`).
    pub fn close(&mut self) {
        if self.open {
            let _ = self.tls.shutdown();
        }
    }

    /// The next datagram to send to the client.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.tls.get_mut().outbound.pop_front()
    }

    /// Datagrams dropped because too many waited.
    pub fn dropped(&self) -> u64 {
        self.tls.get_ref().dropped
    }
}
