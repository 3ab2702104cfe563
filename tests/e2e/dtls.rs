//! TURN over DTLS (RFC 7350): the relay flow on a DTLS session with
//! unpadded ChannelData, the allocation ending with its session, and the
//! stateless cookie exchange: ClientHellos without a valid cookie make no
//! session, whatever their number.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::time::Instant;

use openssl::ssl::{Ssl, SslContextBuilder, SslMethod, SslStream, SslVerifyMode};

use super::streams::cert_files;
use super::*;

/// A lab server listening on DTLS (with a certificate from a test CA) and
/// serving metrics; returns it and its DTLS address.
fn dtls_server() -> (Server, SocketAddr) {
    let ca = TestCa::new();
    let (_cert, cert, key) = cert_files(&ca);
    let server = lab_server(&[
        "--listen-dtls",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--metrics",
        "127.0.0.1:0",
    ]);
    let addr = server
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("uturn: listening on dtls "))
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `listening on dtls` line: {:?}", server.banner));
    (server, addr)
}

/// Polls `name` until it reads `want` (a bounded wait; the scrape cache
/// is half a second).
fn metric_becomes(server: &Server, name: &str, want: u64) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = metric(server, name);
        if v == Some(want) || Instant::now() >= deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn dtls_relay_flow_with_unpadded_channel_data() {
    let (server, addr) = dtls_server();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let mut c = TurnClient::dtls(addr, "alice", "wonderland", AuthMode::Legacy);
    let relayed = c.allocate();
    assert_success(&c.create_permission(&[peer_addr]), "CreatePermission");
    assert_success(&c.channel_bind(0x4001, peer_addr), "ChannelBind");
    // Client → peer: the header stripped.
    c.send_channel(0x4001, b"12345", false);
    let (d, from) = recv_within(&peer, Duration::from_secs(3)).expect("at the peer");
    assert_eq!((d.as_slice(), from), (&b"12345"[..], relayed));
    // Peer → client: ChannelData, not padded (DTLS keeps datagram
    // boundaries; RFC 8656 §12.5 pads over streams only).
    peer.send_to(b"abcde", relayed).unwrap();
    let raw = c
        .recv_raw(Duration::from_secs(3))
        .expect("relayed to the client");
    assert_eq!(
        raw, b"\x40\x01\x00\x05abcde",
        "one unpadded ChannelData record"
    );
    assert_eq!(
        metric(
            &server,
            "uturn_allocations_created_total{transport=\"dtls\"}"
        ),
        Some(1)
    );
    assert_eq!(
        metric(&server, "uturn_connections{transport=\"dtls\"}"),
        Some(1)
    );
    // The session ends (the client goes away with close_notify): its
    // allocation is deleted with it.
    drop(c);
    assert_eq!(metric_becomes(&server, "uturn_allocations", 0), Some(0));
    assert_eq!(
        metric_becomes(&server, "uturn_connections{transport=\"dtls\"}", 0),
        Some(0)
    );
    assert_eq!(
        metric(
            &server,
            "uturn_connections_closed_total{transport=\"dtls\",reason=\"client_closed\"}"
        ),
        Some(1)
    );
}

/// The memory pipe an OpenSSL client writes its first flight into.
#[derive(Default)]
struct Pipe(VecDeque<Vec<u8>>, Vec<Vec<u8>>);

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let d = self.0.pop_front().ok_or(std::io::ErrorKind::WouldBlock)?;
        buf[..d.len()].copy_from_slice(&d);
        Ok(d.len())
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.1.push(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A real DTLS 1.2 ClientHello (OpenSSL's first flight), without a cookie.
fn client_hello() -> Vec<u8> {
    let mut b = SslContextBuilder::new(SslMethod::dtls_client()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    let mut tls = SslStream::new(Ssl::new(&b.build()).unwrap(), Pipe::default()).unwrap();
    let _ = tls.connect();
    tls.get_mut().1.remove(0)
}

/// SECURITY.md rule 14: thousands of ClientHellos without a cookie, or with
/// one that is forged or made for another address, each get a
/// HelloVerifyRequest and leave nothing behind: no session is made and
/// none is counted. One real handshake afterwards is counted, which shows
/// the counters would have moved.
fn cookieless_hellos_make_no_session() {
    let (server, addr) = dtls_server();
    let hello = client_hello();
    // Cookie length at 13 + 12 + 2 + 32 + 1 + session id length.
    let sid = usize::from(hello[13 + 12 + 34]);
    let at = 13 + 12 + 35 + sid;
    assert_eq!(hello[at], 0, "a hello without a cookie");
    let mut forged = hello[..at].to_vec();
    forged.push(20);
    forged.extend_from_slice(&[0xAB; 20]);
    forged.extend_from_slice(&hello[at + 1..]);
    // Lengths: record, handshake body and fragment grow by 20.
    let bump = |v: &mut [u8], i: usize, w: usize| {
        let mut n = v[i..i + w]
            .iter()
            .fold(0usize, |n, &b| n << 8 | usize::from(b));
        n += 20;
        for k in (0..w).rev() {
            v[i + k] = n as u8;
            n >>= 8;
        }
    };
    bump(&mut forged, 11, 2);
    bump(&mut forged, 14, 3);
    bump(&mut forged, 22, 3);
    let sockets: Vec<UdpSocket> = (0..20)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let rounds = 50;
    let mut answered = 0;
    for _ in 0..rounds {
        for s in &sockets {
            s.send_to(&hello, addr).unwrap();
            s.send_to(&forged, addr).unwrap();
        }
        for s in &sockets {
            while let Some((d, _)) = recv_within(
                s,
                Duration::from_millis(if answered == 0 { 500 } else { 20 }),
            ) {
                // A HelloVerifyRequest: handshake record, type 3.
                assert_eq!((d[0], d[13]), (22, 3), "only HelloVerifyRequests come back");
                answered += 1;
            }
        }
    }
    let sent = (rounds * sockets.len() * 2) as u64;
    assert!(answered > 0, "no HelloVerifyRequest came back");
    let hvr = metric(
        &server,
        "uturn_dtls_hello_verify_total{reason=\"no_cookie\"}",
    )
    .unwrap_or(0)
        + metric(
            &server,
            "uturn_dtls_hello_verify_total{reason=\"stale_cookie\"}",
        )
        .unwrap_or(0);
    assert!(
        hvr >= answered && hvr <= sent,
        "{hvr} HelloVerifyRequests counted, {answered} received, {sent} sent"
    );
    assert_eq!(
        metric(&server, "uturn_connections{transport=\"dtls\"}"),
        Some(0)
    );
    assert_eq!(
        metric(
            &server,
            "uturn_connections_accepted_total{transport=\"dtls\"}"
        ),
        Some(0),
        "a session was made for a hello without a valid cookie"
    );
    // A client that answers the cookie does get a session, and it counts.
    let mut c = TurnClient::dtls(addr, "alice", "wonderland", AuthMode::Legacy);
    c.allocate();
    assert_eq!(
        metric_becomes(
            &server,
            "uturn_connections_accepted_total{transport=\"dtls\"}",
            1
        ),
        Some(1)
    );
}

/// The certificate is TLS's and reloads the same way: after SIGHUP with new
/// files, new DTLS sessions get the new certificate, while a session made
/// before keeps its own and its allocation.
fn a_reloaded_certificate_serves_new_sessions() {
    let ca = TestCa::new();
    let (a, cert, key) = cert_files(&ca);
    // Reloading needs a file: the certificate's paths are in it.
    let config = scratch_path("dtls.toml");
    std::fs::write(
        &config,
        format!(
            "listen = [\"127.0.0.1:0\"]\nrelay_ips = [\"127.0.0.1\"]\nrealm = \"{REALM}\"\n\
             listen_dtls = [\"127.0.0.1:0\"]\ntls_cert = {:?}\ntls_key = {:?}\n\
             [peers]\nallow = [\"127.0.0.0/8\"]\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
    )
    .unwrap();
    let server = Server::start(&[
        "--config",
        config.to_str().unwrap(),
        "--user",
        "alice:wonderland",
    ]);
    let addr = server
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("uturn: listening on dtls "))
        .and_then(|a| a.trim().parse().ok())
        .expect("a DTLS listener");
    let mut old = TurnClient::dtls(addr, "alice", "wonderland", AuthMode::Legacy);
    assert_eq!(old.dtls_certificate(), Some(a.der.clone()), "certificate A");
    old.allocate();
    let b = ca.issue();
    b.write(&cert, &key);
    signal(server.pid(), Signal::SIGHUP);
    wait_for_log(&server, "configuration reloaded", 1);
    // Each shard takes it as it reads the command: a bounded poll until a
    // new session sees B, then every new one must.
    let now = || {
        TurnClient::dtls(addr, "alice", "wonderland", AuthMode::Legacy)
            .dtls_certificate()
            .expect("a certificate")
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while now() != b.der {
        assert!(
            Instant::now() < deadline,
            "certificate B not served 5 s after the reload"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 0..8 {
        assert!(now() == b.der, "session {i} after the reload saw A");
    }
    assert_success(&old.refresh(300), "Refresh on the session made before");
}

on_both_backends!(
    a_reloaded_certificate_serves_new_sessions,
    dtls_relay_flow_with_unpadded_channel_data,
    cookieless_hellos_make_no_session,
);
