//! A synchronous TURN client built on `uturn::stun`: the 401 round, signing
//! (MD5 long-term key, or SHA-256 with PASSWORD-ALGORITHM(S) and
//! MESSAGE-INTEGRITY-SHA256, optionally USERHASH), Allocate, Refresh,
//! CreatePermission, ChannelBind, Send indications, ChannelData, and reading
//! Data indications and ChannelData. Every wait is bounded.
//!
//! The same API runs over UDP (`TurnClient::new`), TCP (`TurnClient::tcp`)
//! or TLS (`TurnClient::tls`). Over a stream (RFC 8656 §3.1) requests are
//! sent once, never retransmitted; ChannelData is always padded to a
//! multiple of 4 (§12.5); what the server sends is read as whole frames.

use super::*;

/// How the client proves who it is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// RFC 5389 style: USERNAME, REALM, NONCE, MESSAGE-INTEGRITY (MD5 key);
    /// no PASSWORD-ALGORITHM(S) even when the server offers them.
    Legacy,
    /// RFC 8489 with the MD5 algorithm chosen from PASSWORD-ALGORITHMS.
    Md5,
    /// RFC 8489 SHA-256: PASSWORD-ALGORITHMS echoed, PASSWORD-ALGORITHM
    /// SHA-256, MESSAGE-INTEGRITY-SHA256.
    Sha256,
}

pub const REQUESTED_TRANSPORT_UDP: [u8; 4] = [17, 0, 0, 0];

/// How the client reaches the server.
enum Link {
    Udp(UdpSocket),
    Stream(StreamLink),
    Dtls(Box<DtlsLink>),
}

/// A synchronous TURN client over one UDP socket or one TCP or TLS
/// connection.
pub struct TurnClient {
    link: Link,
    pub server: SocketAddr,
    pub username: Vec<u8>,
    pub password: Vec<u8>,
    pub mode: AuthMode,
    /// Send USERHASH instead of USERNAME (RFC 8489 §14.4).
    pub use_userhash: bool,
    /// Append FINGERPRINT to requests.
    pub fingerprint: bool,
    pub realm: Vec<u8>,
    pub nonce: Vec<u8>,
    /// PASSWORD-ALGORITHMS as received in the last 401/438.
    pub password_algorithms: Option<Vec<u8>>,
    key: Vec<u8>,
    /// Datagrams (or frames) received while waiting for something else.
    pending: VecDeque<Vec<u8>>,
    pub relayed: Option<SocketAddr>,
    pub mapped: Option<SocketAddr>,
    pub lifetime: Option<u32>,
    /// Requests sent more than once because no answer came.
    pub retransmits: u32,
    /// REQUESTED-ADDRESS-FAMILY for Allocate (None: absent, which means IPv4,
    /// RFC 8656 §7.2).
    pub family: Option<AddressFamily>,
}

impl TurnClient {
    /// A client on an ephemeral loopback port of the server's family.
    pub fn new(server: SocketAddr, username: &str, password: &str, mode: AuthMode) -> TurnClient {
        let local: IpAddr = if server.is_ipv4() {
            Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        TurnClient::bind(local, server, username, password, mode)
    }

    pub fn bind(
        local: IpAddr,
        server: SocketAddr,
        username: &str,
        password: &str,
        mode: AuthMode,
    ) -> TurnClient {
        let sock =
            UdpSocket::bind((local, 0)).unwrap_or_else(|e| panic!("bind client on {local}: {e}"));
        TurnClient::on(Link::Udp(sock), server, username, password, mode)
    }

    /// A client over a TCP connection to `server` (a `listening on tcp`
    /// address).
    pub fn tcp(server: SocketAddr, username: &str, password: &str, mode: AuthMode) -> TurnClient {
        let link = StreamLink::tcp(server);
        TurnClient::on(Link::Stream(link), server, username, password, mode)
    }

    /// A client over a TCP connection from `local` (bound before connecting).
    pub fn tcp_from(
        local: SocketAddr,
        server: SocketAddr,
        username: &str,
        password: &str,
        mode: AuthMode,
    ) -> std::io::Result<TurnClient> {
        let link = StreamLink::tcp_from(local, server)?;
        Ok(TurnClient::on(
            Link::Stream(link),
            server,
            username,
            password,
            mode,
        ))
    }

    /// A client over TLS to `server` (a `listening on tls` address): the
    /// server must present a certificate for "localhost" that `ca_pem`
    /// vouches for; ALPN "stun.turn" is offered (RFC 7443).
    pub fn tls(
        server: SocketAddr,
        ca_pem: &str,
        username: &str,
        password: &str,
        mode: AuthMode,
    ) -> TurnClient {
        let link = StreamLink::tls(server, ca_pem, &[ALPN_STUN_TURN])
            .unwrap_or_else(|e| panic!("TLS to {server}: {e}"));
        TurnClient::on(Link::Stream(link), server, username, password, mode)
    }

    /// A client over DTLS to `server` (a `listening on dtls` address).
    pub fn dtls(server: SocketAddr, username: &str, password: &str, mode: AuthMode) -> TurnClient {
        let link = DtlsLink::connect(server).unwrap_or_else(|e| panic!("DTLS to {server}: {e}"));
        TurnClient::on(Link::Dtls(Box::new(link)), server, username, password, mode)
    }

    /// The certificate a DTLS server presented (DER).
    #[allow(dead_code)] // tests/e2e only
    pub fn dtls_certificate(&self) -> Option<Vec<u8>> {
        match &self.link {
            Link::Dtls(d) => d.peer_certificate(),
            _ => None,
        }
    }

    /// Whether the client runs over DTLS.
    pub fn is_dtls(&self) -> bool {
        matches!(self.link, Link::Dtls(_))
    }

    fn on(
        link: Link,
        server: SocketAddr,
        username: &str,
        password: &str,
        mode: AuthMode,
    ) -> TurnClient {
        TurnClient {
            link,
            server,
            username: username.as_bytes().to_vec(),
            password: password.as_bytes().to_vec(),
            mode,
            use_userhash: false,
            fingerprint: true,
            realm: Vec::new(),
            nonce: Vec::new(),
            password_algorithms: None,
            key: Vec::new(),
            pending: VecDeque::new(),
            relayed: None,
            mapped: None,
            lifetime: None,
            retransmits: 0,
            family: None,
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        match &self.link {
            Link::Udp(sock) => sock.local_addr().unwrap(),
            Link::Stream(s) => s.local_addr(),
            Link::Dtls(d) => d.local_addr(),
        }
    }

    /// Whether the client runs over TCP or TLS.
    pub fn is_stream(&self) -> bool {
        matches!(self.link, Link::Stream(_))
    }

    /// The stream connection; panics on a UDP client.
    pub fn stream(&mut self) -> &mut StreamLink {
        match &mut self.link {
            Link::Stream(s) => s,
            Link::Udp(_) | Link::Dtls(_) => panic!("a datagram client has no connection"),
        }
    }

    /// The ALPN protocol the server chose (TLS only).
    pub fn alpn(&mut self) -> Option<Vec<u8>> {
        self.stream().alpn()
    }

    /// The server's certificate, DER (TLS only).
    pub fn peer_certificate(&mut self) -> Option<Vec<u8>> {
        self.stream().peer_certificate()
    }

    /// Whether the server closes the connection within `limit` (frames that
    /// arrive meanwhile are dropped); how, if it did.
    pub fn wait_closed(&mut self, limit: Duration) -> Option<Closed> {
        self.pending.clear();
        self.stream().wait_closed(limit).0
    }

    pub fn new_tid() -> TransactionId {
        let mut t = [0u8; 12];
        getrandom::getrandom(&mut t).expect("getrandom");
        t
    }

    /// Sends raw bytes to the server (one datagram, or written to the
    /// stream as they are).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let server = self.server;
        match &mut self.link {
            Link::Udp(sock) => {
                sock.send_to(bytes, server)
                    .unwrap_or_else(|e| panic!("send to {server}: {e}"));
            }
            Link::Stream(s) => s
                .write(bytes)
                .unwrap_or_else(|e| panic!("write to {server}: {e}")),
            Link::Dtls(d) => d
                .send(bytes)
                .unwrap_or_else(|e| panic!("DTLS send to {server}: {e}")),
        }
    }

    /// The next datagram (or frame) from the server (queued ones first),
    /// within `limit`.
    pub fn recv_raw(&mut self, limit: Duration) -> Option<Vec<u8>> {
        if let Some(d) = self.pending.pop_front() {
            return Some(d);
        }
        let sock = match &mut self.link {
            Link::Udp(sock) => sock,
            Link::Stream(s) => return s.recv_frame(limit),
            Link::Dtls(d) => return d.recv(limit),
        };
        let deadline = Instant::now() + limit;
        // Bounded: each iteration consumes a datagram or ends at the deadline.
        for _ in 0..10_000 {
            let left = deadline.saturating_duration_since(Instant::now());
            let (d, from) = recv_within(sock, left)?;
            if from == self.server {
                return Some(d);
            }
        }
        None
    }

    /// Throws away whatever is queued or arrives within `limit`.
    pub fn drain(&mut self, limit: Duration) -> usize {
        let mut n = self.pending.len();
        self.pending.clear();
        let deadline = Instant::now() + limit;
        for _ in 0..10_000 {
            let left = deadline.saturating_duration_since(Instant::now());
            let got = match &mut self.link {
                Link::Udp(sock) => recv_within(sock, left).is_some(),
                Link::Stream(s) => s.recv_frame(left).is_some(),
                Link::Dtls(d) => d.recv(left).is_some(),
            };
            if !got {
                break;
            }
            n += 1;
        }
        n
    }

    fn derive(&mut self) {
        let alg = match self.mode {
            AuthMode::Legacy | AuthMode::Md5 => PasswordAlgorithm::Md5,
            AuthMode::Sha256 => PasswordAlgorithm::Sha256,
        };
        self.key = derive_key(alg, &self.username, &self.realm, &self.password)
            .as_bytes()
            .to_vec();
    }

    /// Builds a message; `sign` adds the credentials and the integrity
    /// attribute for `mode`; FINGERPRINT last when enabled.
    pub fn build(
        &self,
        method: Method,
        class: Class,
        tid: &TransactionId,
        sign: bool,
        body: impl FnOnce(&mut MessageWriter<'_>) -> Result<(), EncodeError>,
    ) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let mut w = MessageWriter::new(&mut buf, method, class, tid).expect("MessageWriter::new");
        body(&mut w).expect("encode request body");
        if sign {
            self.sign(&mut w).expect("encode credentials");
        }
        if self.fingerprint {
            w.fingerprint().expect("FINGERPRINT");
        }
        let n = w.finish();
        buf.truncate(n);
        buf
    }

    fn sign(&self, w: &mut MessageWriter<'_>) -> Result<(), EncodeError> {
        assert!(
            !self.nonce.is_empty(),
            "sign() before a 401 gave REALM and NONCE"
        );
        if self.use_userhash {
            w.raw(attr::USERHASH, &userhash(&self.username, &self.realm))?;
        } else {
            w.raw(attr::USERNAME, &self.username)?;
        }
        w.raw(attr::REALM, &self.realm)?;
        w.raw(attr::NONCE, &self.nonce)?;
        match self.mode {
            AuthMode::Legacy => w.message_integrity(&self.key),
            AuthMode::Md5 | AuthMode::Sha256 => {
                let algs = self
                    .password_algorithms
                    .as_ref()
                    .expect("the 401 carried no PASSWORD-ALGORITHMS, so the RFC 8489 algorithms are not offered");
                w.raw(attr::PASSWORD_ALGORITHMS, algs)?;
                if self.mode == AuthMode::Md5 {
                    w.raw(attr::PASSWORD_ALGORITHM, &[0, 1, 0, 0])?;
                    w.message_integrity(&self.key)
                } else {
                    w.raw(attr::PASSWORD_ALGORITHM, &[0, 2, 0, 0])?;
                    w.message_integrity_sha256(&self.key)
                }
            }
        }
    }

    /// Sends `req` and waits for the response with its transaction id.
    /// Over UDP, retransmits twice (after 0.5 s and 1.5 s) like a STUN
    /// client; over a stream, sends once (RFC 8489 §6.2.2). Gives up 3.5 s
    /// after the first send.
    pub fn transact(&mut self, req: &[u8]) -> Result<Reply, String> {
        let tid: TransactionId = req[8..20].try_into().unwrap();
        if self.is_stream() || self.is_dtls() {
            return self.transact_once(req, &tid);
        }
        let start = Instant::now();
        let resend_at = [Duration::from_millis(500), Duration::from_millis(1500)];
        let give_up = Duration::from_millis(3500);
        let mut sends = 0usize;
        self.send_raw(req);
        let mut buf = vec![0u8; 65536];
        for _ in 0..10_000 {
            let elapsed = start.elapsed();
            if elapsed >= give_up {
                break;
            }
            if sends < resend_at.len() && elapsed >= resend_at[sends] {
                self.send_raw(req);
                self.retransmits += 1;
                sends += 1;
                continue;
            }
            let next = if sends < resend_at.len() {
                resend_at[sends]
            } else {
                give_up
            };
            let wait = next.saturating_sub(elapsed).max(Duration::from_millis(1));
            let Link::Udp(sock) = &self.link else {
                unreachable!("streams take transact_once");
            };
            sock.set_read_timeout(Some(wait)).unwrap();
            match sock.recv_from(&mut buf) {
                Ok((n, from)) if from == self.server => {
                    let d = buf[..n].to_vec();
                    if let Ok(m) = Message::parse(&d) {
                        if *m.transaction_id() == tid
                            && matches!(m.class(), Class::Success | Class::Error)
                        {
                            return Ok(Reply { bytes: d });
                        }
                    }
                    self.pending.push_back(d);
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(format!("recv: {e}")),
            }
        }
        Err(format!(
            "no response from {} within {:?} to {} ({} bytes, {} retransmits)",
            self.server,
            give_up,
            describe_bytes(req),
            req.len(),
            sends
        ))
    }

    /// Over a stream: sends `req` once and reads frames until the response
    /// with `tid` (others are kept for `recv_raw`).
    fn transact_once(&mut self, req: &[u8], tid: &TransactionId) -> Result<Reply, String> {
        let give_up = Duration::from_millis(3500);
        let deadline = Instant::now() + give_up;
        self.send_raw(req);
        // Bounded: each round takes a frame, or ends at the deadline.
        for _ in 0..100_000 {
            let left = deadline.saturating_duration_since(Instant::now());
            let got = match &mut self.link {
                Link::Dtls(d) => d.recv(left),
                _ => self.stream().recv_frame(left),
            };
            let Some(d) = got else {
                break;
            };
            if let Ok(m) = Message::parse(&d) {
                if m.transaction_id() == tid && matches!(m.class(), Class::Success | Class::Error) {
                    return Ok(Reply { bytes: d });
                }
            }
            self.pending.push_back(d);
        }
        let closed = match &mut self.link {
            Link::Dtls(d) => d
                .closed
                .then_some("DTLS session closed")
                .map(|s| format!("{s:?}")),
            _ => self.stream().closed().cloned().map(|c| format!("{c:?}")),
        };
        Err(format!(
            "no response from {} within {give_up:?} to {} ({} bytes, sent once over a stream; \
             connection closed: {closed:?})",
            self.server,
            describe_bytes(req),
            req.len(),
        ))
    }

    /// Sends an unsigned request.
    pub fn request_unsigned(
        &mut self,
        method: Method,
        body: impl FnOnce(&mut MessageWriter<'_>) -> Result<(), EncodeError>,
    ) -> Reply {
        let req = self.build(method, Class::Request, &Self::new_tid(), false, body);
        self.transact(&req).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sends a signed request; on 438 (stale nonce) takes the new nonce and
    /// retries once. Checks the integrity of every success response.
    pub fn request(
        &mut self,
        method: Method,
        body: impl Fn(&mut MessageWriter<'_>) -> Result<(), EncodeError>,
    ) -> Reply {
        let mut reply = None;
        for _ in 0..2 {
            let req = self.build(method, Class::Request, &Self::new_tid(), true, &body);
            let r = self.transact(&req).unwrap_or_else(|e| panic!("{e}"));
            if r.error_code() == Some(438) {
                self.take_challenge(&r);
                reply = Some(r);
                continue;
            }
            if r.is_success() {
                self.check_signed(&r);
            }
            return r;
        }
        reply.unwrap()
    }

    /// Panics unless `r` carries a valid integrity attribute for our key
    /// (RFC 8489 §9.2.5: a response to a signed request is signed alike).
    pub fn check_signed(&self, r: &Reply) {
        let m = r.msg();
        let (what, got) = match self.mode {
            AuthMode::Sha256 => (
                "MESSAGE-INTEGRITY-SHA256",
                integrity::check_sha256(&m, &self.key),
            ),
            _ => ("MESSAGE-INTEGRITY", integrity::check_sha1(&m, &self.key)),
        };
        assert_eq!(
            got,
            Integrity::Valid,
            "{what} of {} does not check",
            r.describe()
        );
    }

    /// Stores REALM, NONCE and PASSWORD-ALGORITHMS from a 401 or 438.
    pub fn take_challenge(&mut self, r: &Reply) {
        let realm = r.raw(attr::REALM).unwrap_or_else(|| self.realm.clone());
        let nonce = r
            .raw(attr::NONCE)
            .unwrap_or_else(|| panic!("{} has no NONCE", r.describe()));
        let algs = r
            .raw(attr::PASSWORD_ALGORITHMS)
            .or_else(|| self.password_algorithms.clone());
        self.set_challenge(realm, nonce, algs);
    }

    /// The STUN Security Feature set of the current nonce (RFC 8489 §9.2:
    /// 24 bits, base64 in the 4 characters after the nonce cookie), or None
    /// for a nonce without the cookie.
    pub fn nonce_features(&self) -> Option<u32> {
        use base64::Engine as _;
        let rest = self.nonce.strip_prefix(b"obMatJos2".as_slice())?;
        let mut bits = [0u8; 3];
        let n = base64::engine::general_purpose::STANDARD
            .decode_slice(rest.get(..4)?, &mut bits)
            .ok()?;
        (n == 3).then(|| u32::from_be_bytes([0, bits[0], bits[1], bits[2]]))
    }

    /// Uses these REALM, NONCE and PASSWORD-ALGORITHMS from now on.
    pub fn set_challenge(&mut self, realm: Vec<u8>, nonce: Vec<u8>, algs: Option<Vec<u8>>) {
        self.realm = realm;
        self.nonce = nonce;
        self.password_algorithms = algs;
        self.derive();
    }

    /// The RFC 8489 §9.2 round: an unsigned `method` request must get a 401
    /// with REALM and NONCE.
    pub fn challenge(&mut self, method: Method) -> Reply {
        let r = self.request_unsigned(method, |w| {
            w.raw(attr::REQUESTED_TRANSPORT, &REQUESTED_TRANSPORT_UDP)
        });
        assert_eq!(
            r.error_code(),
            Some(401),
            "unsigned {method:?} should get 401, got {}",
            r.describe()
        );
        assert!(r.has(attr::REALM), "401 without REALM: {}", r.describe());
        assert!(r.has(attr::NONCE), "401 without NONCE: {}", r.describe());
        self.take_challenge(&r);
        r
    }

    /// 401 round, then a signed Allocate (UDP). Returns the final reply;
    /// on success records relayed/mapped/lifetime.
    pub fn try_allocate(
        &mut self,
        extra: impl Fn(&mut MessageWriter<'_>) -> Result<(), EncodeError>,
    ) -> Reply {
        if self.nonce.is_empty() {
            self.challenge(Method::Allocate);
        }
        let family = self.family;
        let r = self.request(Method::Allocate, |w| {
            w.raw(attr::REQUESTED_TRANSPORT, &REQUESTED_TRANSPORT_UDP)?;
            match family {
                Some(AddressFamily::V4) => w.raw(attr::REQUESTED_ADDRESS_FAMILY, &[1, 0, 0, 0])?,
                Some(AddressFamily::V6) => w.raw(attr::REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0])?,
                None => {}
            }
            extra(w)
        });
        if r.is_success() {
            self.relayed = r.xor_addr(attr::XOR_RELAYED_ADDRESS);
            self.mapped = r.xor_addr(attr::XOR_MAPPED_ADDRESS);
            self.lifetime = r.lifetime();
        }
        r
    }

    /// Allocates and checks the success response; returns the relayed address.
    pub fn allocate(&mut self) -> SocketAddr {
        let r = self.try_allocate(|_| Ok(()));
        assert!(r.is_success(), "Allocate failed: {}", r.describe());
        let relayed = self
            .relayed
            .unwrap_or_else(|| panic!("no XOR-RELAYED-ADDRESS in {}", r.describe()));
        let mapped = self
            .mapped
            .unwrap_or_else(|| panic!("no XOR-MAPPED-ADDRESS in {}", r.describe()));
        let lifetime = self
            .lifetime
            .unwrap_or_else(|| panic!("no LIFETIME in {}", r.describe()));
        assert_eq!(
            mapped,
            self.local_addr(),
            "XOR-MAPPED-ADDRESS is not the client's address"
        );
        assert!(lifetime > 0, "LIFETIME 0 in a successful Allocate");
        assert!(
            relayed.port() != 0 && !relayed.ip().is_unspecified(),
            "bad XOR-RELAYED-ADDRESS {relayed}"
        );
        relayed
    }

    pub fn refresh(&mut self, lifetime: u32) -> Reply {
        self.request(Method::Refresh, |w| w.u32(attr::LIFETIME, lifetime))
    }

    pub fn create_permission(&mut self, peers: &[SocketAddr]) -> Reply {
        self.request(Method::CreatePermission, |w| {
            for p in peers {
                w.xor_address(attr::XOR_PEER_ADDRESS, *p)?;
            }
            Ok(())
        })
    }

    pub fn channel_bind(&mut self, number: u16, peer: SocketAddr) -> Reply {
        self.request(Method::ChannelBind, |w| {
            let n = number.to_be_bytes();
            w.raw(attr::CHANNEL_NUMBER, &[n[0], n[1], 0, 0])?;
            w.xor_address(attr::XOR_PEER_ADDRESS, peer)
        })
    }

    /// A Send indication (RFC 8656 §11.3); indications are never answered.
    pub fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) {
        let mut buf = vec![0u8; 4096];
        let mut w = MessageWriter::new(&mut buf, Method::Send, Class::Indication, &Self::new_tid())
            .unwrap();
        w.xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
        w.raw(attr::DATA, data).unwrap();
        if self.fingerprint {
            w.fingerprint().unwrap();
        }
        let n = w.finish();
        self.send_raw(&buf[..n]);
    }

    /// A ChannelData message; `pad` adds the optional UDP padding to 4 bytes
    /// (always added over a stream, where it is required, RFC 8656 §12.5).
    pub fn send_channel(&mut self, number: u16, data: &[u8], pad: bool) {
        let pad = pad || self.is_stream();
        let mut header = [0u8; 4];
        channel::write_header(&mut header, number, data.len() as u16);
        let mut d = header.to_vec();
        d.extend_from_slice(data);
        if pad {
            while d.len() % 4 != 0 {
                d.push(0);
            }
        }
        self.send_raw(&d);
    }

    /// The next Data indication or ChannelData within `limit` (other
    /// datagrams are skipped).
    pub fn recv_relayed(&mut self, limit: Duration) -> Option<Relayed> {
        let deadline = Instant::now() + limit;
        for _ in 0..10_000 {
            let left = deadline.saturating_duration_since(Instant::now());
            let d = self.recv_raw(left)?;
            if let Some(r) = parse_relayed(&d) {
                return Some(r);
            }
        }
        None
    }

    /// Panics if a Data indication or ChannelData arrives within `QUIET`.
    pub fn expect_nothing_relayed(&mut self, context: &str) {
        if let Some(r) = self.recv_relayed(QUIET) {
            panic!("{context}: client received {r:?}");
        }
    }
}
