//! TURN over TCP and TLS (RFC 8656 §3.1): the relay flow on a stream, ALPN,
//! an allocation that ends with its connection, framing against the real
//! server, and nonces bound to their transport. Limits, deadlines and
//! certificate reload are in streams_limits.rs; the helpers here serve both.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use super::*;

/// The transport a stream client uses.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum Over {
    Tcp,
    Tls,
}

/// A server certificate for "localhost" from `ca`, written to fresh files.
pub(super) fn cert_files(ca: &TestCa) -> (ServerCert, PathBuf, PathBuf) {
    let cert = ca.issue();
    let (cert_path, key_path) = (scratch_path("cert.pem"), scratch_path("key.pem"));
    cert.write(&cert_path, &key_path);
    (cert, cert_path, key_path)
}

/// A lab server that also listens on TLS with a certificate from `ca`.
pub(super) fn tls_server(ca: &TestCa, extra: &[&str]) -> (Server, ServerCert) {
    let (cert, cert_path, key_path) = cert_files(ca);
    let mut args = vec![
        "--listen-tls",
        "127.0.0.1:0",
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let server = lab_server(&args);
    assert_eq!(server.tls.len(), 1, "one TLS listener: {:?}", server.banner);
    (server, cert)
}

pub(super) fn tcp_addr(server: &Server) -> SocketAddr {
    *server
        .tcp
        .first()
        .unwrap_or_else(|| panic!("no `listening on tcp` line: {:?}", server.banner))
}

/// alice over `over` to `server` (TLS trusts `ca`).
pub(super) fn client(server: &Server, ca: Option<&TestCa>, over: Over) -> TurnClient {
    match over {
        Over::Tcp => TurnClient::tcp(tcp_addr(server), "alice", "wonderland", AuthMode::Legacy),
        Over::Tls => TurnClient::tls(
            server.tls[0],
            &ca.expect("a CA for TLS").pem,
            "alice",
            "wonderland",
            AuthMode::Legacy,
        ),
    }
}

/// A Binding request over `c`, which must be answered with its own address.
pub(super) fn assert_binding_works(c: &mut TurnClient, what: &str) {
    let r = c.request_unsigned(Method::Binding, |_| Ok(()));
    assert_success(&r, &format!("{what}: Binding"));
    assert_eq!(
        r.xor_addr(attr::XOR_MAPPED_ADDRESS),
        Some(c.local_addr()),
        "{what}: XOR-MAPPED-ADDRESS"
    );
}

/// A Binding request with FINGERPRINT, as bytes.
pub(super) fn binding_request(tid: &[u8; 12]) -> Vec<u8> {
    let c = TurnClient::new(sa("127.0.0.1:9"), "", "", AuthMode::Legacy);
    c.build(Method::Binding, Class::Request, tid, false, |_| Ok(()))
}

pub(super) fn payload(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| seed.wrapping_add(i as u8)).collect()
}

/// RFC 8656 §12.5: ChannelData on a stream is padded to a multiple of 4.
fn padded(n: usize) -> usize {
    (n + 3) & !3
}

/// Polls the metrics endpoint until `name` reads `want` (bounded: 5 s);
/// returns how long that took.
pub(super) fn wait_for_series(metrics: SocketAddr, name: &str, want: u64) -> Duration {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(5);
    loop {
        let (_, body) = http_get(metrics, "GET", "/metrics");
        match series(&body, name) {
            Some(v) if v == want => return start.elapsed(),
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            v => panic!("{name} is {v:?}, not {want}, after 5 s:\n{body}"),
        }
    }
}

// ---------------------------------------------------------------------------
// The relay flow
// ---------------------------------------------------------------------------

/// 401 round and Allocate, CreatePermission, Send → peer, peer → Data,
/// ChannelBind, ChannelData both ways with payloads of 0 to 9 and 1200
/// bytes (one at a time, then all in one write), Refresh, Refresh 0.
pub(super) fn stream_flow(c: &mut TurnClient, what: &str) {
    let relayed = c.allocate();
    let peer = Peer::v4();
    assert_success(
        &c.create_permission(&[peer.addr]),
        &format!("{what}: CreatePermission"),
    );

    c.send_indication(peer.addr, b"hello peer, via Send");
    match peer.recv(WAIT) {
        Some((d, from)) => {
            assert_eq!(d, b"hello peer, via Send", "{what}: Send payload");
            assert_eq!(from, relayed, "{what}: source seen by the peer");
        }
        None => panic!("{what}: the Send indication was not relayed"),
    }
    // Data indications of every length modulo 4: each a whole frame.
    for n in [5usize, 6, 7, 8] {
        let data = payload(n, 0x30);
        peer.send_to(&data, relayed);
        let frame = c
            .recv_raw(WAIT)
            .unwrap_or_else(|| panic!("{what}: no Data indication for {n} bytes"));
        assert_eq!(frame.len() % 4, 0, "{what}: a STUN frame is 4-aligned");
        assert_eq!(
            parse_relayed(&frame),
            Some(Relayed::Data {
                peer: peer.addr,
                data
            }),
            "{what}: Data indication of {n} bytes"
        );
    }

    let ch = 0x4000;
    assert_success(
        &c.channel_bind(ch, peer.addr),
        &format!("{what}: ChannelBind"),
    );
    let lengths: Vec<usize> = (0..=9).chain([1200]).collect();
    for &n in &lengths {
        let out = payload(n, 0x41);
        c.send_channel(ch, &out, true);
        match peer.recv(WAIT) {
            Some((d, from)) => {
                assert_eq!(d, out, "{what}: {n} bytes to the peer (no padding)");
                assert_eq!(from, relayed);
            }
            None => panic!("{what}: padded ChannelData of {n} bytes not relayed"),
        }
        let back = payload(n, 0x90);
        peer.send_to(&back, relayed);
        let frame = c
            .recv_raw(WAIT)
            .unwrap_or_else(|| panic!("{what}: no ChannelData back for {n} bytes"));
        assert_eq!(
            frame.len(),
            4 + padded(n),
            "{what}: ChannelData of {n} bytes is padded to {} on a stream: {}",
            4 + padded(n),
            show(&frame)
        );
        assert_eq!(frame[..2], ch.to_be_bytes(), "{what}: channel number");
        assert_eq!(
            u16::from_be_bytes([frame[2], frame[3]]) as usize,
            n,
            "{what}: the length field leaves the padding out"
        );
        assert_eq!(frame[4..4 + n], back[..], "{what}: {n} bytes to the client");
    }
    // Every length in one write: the padding must keep the frames apart.
    let mut burst = Vec::new();
    for &n in &lengths {
        let mut h = [0u8; 4];
        uturn::stun::channel::write_header(&mut h, ch, n as u16);
        burst.extend_from_slice(&h);
        burst.extend_from_slice(&payload(n, 0x17));
        burst.resize(padded(burst.len()), 0);
    }
    c.send_raw(&burst);
    for &n in &lengths {
        match peer.recv(WAIT) {
            Some((d, _)) => assert_eq!(d, payload(n, 0x17), "{what}: {n} bytes from a burst"),
            None => panic!("{what}: ChannelData of {n} bytes from a burst not relayed"),
        }
    }

    let r = c.refresh(300);
    assert_success(&r, &format!("{what}: Refresh 300"));
    assert!(r.lifetime().is_some_and(|l| l > 0), "{}", r.describe());
    assert_success(&c.refresh(0), &format!("{what}: Refresh 0"));
    peer.send_to(b"after the delete", relayed);
    c.expect_nothing_relayed(&format!("{what}: after Refresh 0"));
    assert_error(
        &c.refresh(300),
        &[437],
        &format!("{what}: Refresh after delete"),
    );
}

fn relay_flow_over_tcp_and_tls() {
    let ca = TestCa::new();
    let (server, _) = tls_server(&ca, &[]);
    for over in [Over::Tcp, Over::Tls] {
        let mut c = client(&server, Some(&ca), over);
        stream_flow(&mut c, &format!("{over:?}"));
    }
    // The UDP flow beside them still works.
    alice_flow(server.addr);
}

/// The shared reference flow (flow.rs) runs unchanged over both streams.
fn reference_flow_over_streams() {
    let ca = TestCa::new();
    let (server, _) = tls_server(&ca, &[]);
    for over in [Over::Tcp, Over::Tls] {
        let mut c = client(&server, Some(&ca), over);
        full_flow_with(&mut c, LOOPBACK_V4, Some(LOOPBACK_V4));
    }
}

// ---------------------------------------------------------------------------
// TLS: ALPN
// ---------------------------------------------------------------------------

/// RFC 7443: a client offering "stun.turn" gets it; one offering nothing
/// still connects; one offering only another protocol is refused (RFC 7301
/// §3.2).
fn tls_negotiates_stun_turn_alpn() {
    let ca = TestCa::new();
    let (server, cert) = tls_server(&ca, &[]);
    let mut c = client(&server, Some(&ca), Over::Tls);
    assert_eq!(c.alpn().as_deref(), Some(ALPN_STUN_TURN), "ALPN");
    assert_eq!(c.peer_certificate(), Some(cert.der.clone()), "certificate");
    assert_binding_works(&mut c, "TLS with ALPN");

    let mut plain = StreamLink::tls(server.tls[0], &ca.pem, &[]).expect("TLS without ALPN");
    assert_eq!(plain.alpn(), None, "no ALPN offered, none chosen");
    plain.write(&binding_request(&[3; 12])).unwrap();
    let r = plain
        .recv_frame(WAIT)
        .expect("Binding over TLS without ALPN");
    assert_eq!(Reply { bytes: r }.class(), Class::Success);

    match StreamLink::tls(server.tls[0], &ca.pem, &[b"h2"]) {
        Err(e) => println!("a client offering only h2: {e}"),
        Ok(l) => panic!(
            "a client offering only h2 connected, ALPN {:?}",
            l.alpn().map(|p| String::from_utf8_lossy(&p).into_owned())
        ),
    }
}

// ---------------------------------------------------------------------------
// The allocation ends with its connection
// ---------------------------------------------------------------------------

/// RFC 8656 §3.1: over a stream the allocation belongs to the connection;
/// when the client closes it, the allocation is deleted at once and its
/// relay port can be allocated again.
fn closing_the_connection_deletes_the_allocation() {
    let ca = TestCa::new();
    let port = free_udp_port(LOOPBACK_V4).to_string();
    let range = format!("{port}-{port}");
    let (server, _) = tls_server(
        &ca,
        &[
            "--metrics",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--relay-ports",
            &range,
        ],
    );
    let metrics = metrics_addr(&server);
    for over in [Over::Tcp, Over::Tls] {
        let mut c = client(&server, Some(&ca), over);
        let relayed = c.allocate();
        assert_eq!(relayed.port().to_string(), port, "the only relay port");
        let peer = Peer::v4();
        assert_success(&c.create_permission(&[peer.addr]), "CreatePermission");
        peer.send_to(b"while open", relayed);
        assert_eq!(
            c.recv_relayed(WAIT),
            Some(Relayed::Data {
                peer: peer.addr,
                data: b"while open".to_vec()
            }),
            "{over:?}: relayed while the connection is open"
        );
        wait_for_series(metrics, "uturn_allocations", 1);

        drop(c);
        let took = wait_for_series(metrics, "uturn_allocations", 0);
        println!("{over:?}: uturn_allocations 0 within {took:?} of the close");
        // The relay socket is closed: a datagram to it finds nobody (the
        // kernel answers port unreachable, seen on a connected socket).
        let probe = UdpSocket::bind((LOOPBACK_V4, 0)).unwrap();
        probe.connect(relayed).unwrap();
        probe.set_read_timeout(Some(QUIET)).unwrap();
        let _ = probe.send(b"to a closed allocation");
        match probe.recv(&mut [0u8; 64]) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock) => {
                println!("{over:?}: no port unreachable seen (rate-limited?)")
            }
            other => panic!("{over:?}: a datagram to {relayed} after the close: {other:?}"),
        }
        // The same (only) relay port is handed out again.
        let mut next = client(&server, Some(&ca), over);
        assert_eq!(next.allocate(), relayed, "{over:?}: the freed relay port");
        drop(next);
        wait_for_series(metrics, "uturn_allocations", 0);
    }
}

// ---------------------------------------------------------------------------
// Framing against the real server
// ---------------------------------------------------------------------------

fn a_request_written_one_byte_at_a_time_is_answered() {
    let server = lab_server(&[]);
    let mut c = TurnClient::tcp(tcp_addr(&server), "", "", AuthMode::Legacy);
    let tid = [0x51; 12];
    let req = binding_request(&tid);
    for b in &req {
        c.send_raw(std::slice::from_ref(b));
        // Apart in time, so that the server reads them apart.
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = Reply {
        bytes: c
            .recv_raw(WAIT)
            .expect("an answer to the byte-by-byte request"),
    };
    assert_success(&r, "Binding written a byte at a time");
    assert_eq!(r.tid(), tid);
    assert_eq!(r.xor_addr(attr::XOR_MAPPED_ADDRESS), Some(c.local_addr()));
    // Then a request split at every other place: header, attribute header.
    for cut in [1, 4, 19, 20, 21, req.len() - 1] {
        let tid = [cut as u8; 12];
        let req = binding_request(&tid);
        c.send_raw(&req[..cut]);
        std::thread::sleep(Duration::from_millis(20));
        c.send_raw(&req[cut..]);
        let r = Reply {
            bytes: c
                .recv_raw(WAIT)
                .unwrap_or_else(|| panic!("no answer to a request cut at {cut}")),
        };
        assert_eq!(r.tid(), tid, "cut at {cut}");
    }
}

fn several_requests_in_one_write_are_answered_in_order() {
    let server = lab_server(&[]);
    let mut c = TurnClient::tcp(tcp_addr(&server), "alice", "wonderland", AuthMode::Legacy);
    let tids: Vec<[u8; 12]> = (1..=8u8).map(|i| [i; 12]).collect();
    let mut burst = Vec::new();
    for (i, tid) in tids.iter().enumerate() {
        if i == 3 {
            // An unsigned Allocate in the middle: a 401 in its place.
            burst.extend(c.build(Method::Allocate, Class::Request, tid, false, |w| {
                w.raw(attr::REQUESTED_TRANSPORT, &REQUESTED_TRANSPORT_UDP)
            }));
        } else {
            burst.extend(binding_request(tid));
        }
    }
    c.send_raw(&burst);
    for (i, tid) in tids.iter().enumerate() {
        let r = Reply {
            bytes: c
                .recv_raw(WAIT)
                .unwrap_or_else(|| panic!("answer {i} of {} missing", tids.len())),
        };
        assert_eq!(r.tid(), *tid, "answer {i} out of order: {}", r.describe());
        if i == 3 {
            assert_error(&r, &[401], "unsigned Allocate in a burst");
        } else {
            assert_success(&r, &format!("Binding {i} in a burst"));
        }
    }
}

/// Opens a raw TCP connection, writes `bytes`, and says whether the server
/// closes it within 5 s (and what it sent before).
fn closed_after(addr: SocketAddr, bytes: &[u8]) -> (Option<Closed>, Vec<Vec<u8>>) {
    let mut link = StreamLink::tcp(addr);
    link.write(bytes).expect("write");
    link.wait_closed(Duration::from_secs(5))
}

fn bytes_that_are_not_turn_close_the_connection() {
    let ca = TestCa::new();
    let server = lab_server(&[]);
    let addr = tcp_addr(&server);
    let mut wrong_cookie = binding_request(&[9; 12]);
    wrong_cookie[5] = 0x13;
    let mut bad_len = binding_request(&[9; 12]);
    bad_len[3] = 6; // a STUN length that is not a multiple of 4
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bytes starting 0xFF", vec![0xff; 64]),
        ("a TLS ClientHello", client_hello(&ca.pem)),
        ("a STUN header with length 6", bad_len[..20].to_vec()),
        ("a STUN message with length 6", {
            bad_len.truncate(26);
            bad_len
        }),
        (
            "a STUN header with a wrong cookie",
            wrong_cookie[..20].to_vec(),
        ),
        (
            "ChannelData on channel 0x5000",
            vec![0x50, 0, 0, 4, 1, 2, 3, 4],
        ),
        // ('G' is 0x47: a GET reads as ChannelData on channel 0x4745.)
        (
            "an HTTP POST",
            b"POST / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
    ];
    for (what, bytes) in &cases {
        let (closed, frames) = closed_after(addr, bytes);
        assert!(
            closed.is_some(),
            "{what}: the connection is still open after 5 s"
        );
        assert!(frames.is_empty(), "{what}: the server answered {frames:?}");
        println!("{what}: closed ({closed:?})");
    }
    // A good request after a bad one on the same write: nothing answered.
    let mut mixed = vec![0xff; 4];
    mixed.extend(binding_request(&[4; 12]));
    let (closed, frames) = closed_after(addr, &mixed);
    assert!(
        closed.is_some() && frames.is_empty(),
        "{closed:?} {frames:?}"
    );
    // The server serves on.
    let mut c = TurnClient::tcp(addr, "alice", "wonderland", AuthMode::Legacy);
    assert_binding_works(&mut c, "after the garbage");
    c.allocate();
    alice_flow(server.addr);
}

fn a_connection_cut_mid_frame_leaves_the_server_serving() {
    let ca = TestCa::new();
    let (server, _) = tls_server(&ca, &[]);
    let addr = tcp_addr(&server);
    // A client that stays connected throughout.
    let mut steady = TurnClient::tcp(addr, "alice", "wonderland", AuthMode::Legacy);
    steady.allocate();
    let req = binding_request(&[6; 12]);
    let big = {
        // A 1200-byte ChannelData header promising more than comes.
        let mut d = vec![0x40, 0x00, 0x04, 0xb0];
        d.extend_from_slice(&[0; 100]);
        d
    };
    for (i, half) in [&req[..10], &req[..req.len() / 2], &big[..]]
        .into_iter()
        .enumerate()
    {
        // Closed politely (FIN) …
        let mut link = StreamLink::tcp(addr);
        link.write(half).unwrap();
        drop(link);
        // … and reset (RST, SO_LINGER 0).
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.connect_timeout(&addr.into(), WAIT).unwrap();
        s.set_linger(Some(Duration::ZERO)).unwrap();
        let mut s: std::net::TcpStream = s.into();
        s.write_all(half).unwrap();
        drop(s);
        // A TLS client that stops mid-record.
        let mut tls = StreamLink::tls(server.tls[0], &ca.pem, &[ALPN_STUN_TURN]).unwrap();
        tls.write(half).unwrap();
        drop(tls);
        assert_binding_works(&mut steady, &format!("steady client after cut {i}"));
    }
    // A half-closed connection: its whole request is still answered.
    let mut link = StreamLink::tcp(addr);
    link.write(&req).unwrap();
    link.shutdown_write();
    let answer = link
        .recv_frame(WAIT)
        .expect("an answer to a request sent before a FIN");
    assert_success(&Reply { bytes: answer }, "Binding before a FIN");
    // Others are served: the steady one, and new ones on both transports.
    assert_success(&steady.refresh(300), "steady client: Refresh");
    for over in [Over::Tcp, Over::Tls] {
        let mut c = client(&server, Some(&ca), over);
        assert_binding_works(&mut c, &format!("a new {over:?} client"));
        c.allocate();
    }
}

// ---------------------------------------------------------------------------
// Nonces and transports
// ---------------------------------------------------------------------------

/// A UDP client and a TCP client on the same local address and port (TCP
/// and UDP ports are separate, so the bind only fails if some TCP socket
/// holds the port; then another port is tried).
fn same_address_pair(server: &Server) -> (TurnClient, TurnClient) {
    for _ in 0..10 {
        let udp = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy);
        match TurnClient::tcp_from(
            udp.local_addr(),
            tcp_addr(server),
            "alice",
            "wonderland",
            AuthMode::Legacy,
        ) {
            Ok(tcp) => return (udp, tcp),
            Err(e) => println!("TCP bind to {}: {e}; trying another port", udp.local_addr()),
        }
    }
    panic!("no port free for both UDP and TCP in 10 tries");
}

/// RFC 8489 §9.2: a nonce is the server's to scope; uturn binds it to the
/// client's address and transport, so one got over UDP is stale over TCP
/// from the same address and port (438), and the other way round.
fn a_nonce_from_udp_is_stale_over_tcp() {
    let server = lab_server(&[]);
    let (mut udp, mut tcp) = same_address_pair(&server);
    assert_eq!(udp.local_addr(), tcp.local_addr());
    udp.challenge(Method::Allocate);
    tcp.challenge(Method::Allocate);
    assert_ne!(udp.nonce, tcp.nonce, "one nonce for both transports");
    let (udp_nonce, tcp_nonce) = (udp.nonce.clone(), tcp.nonce.clone());

    let allocate = |c: &TurnClient| {
        c.build(
            Method::Allocate,
            Class::Request,
            &TurnClient::new_tid(),
            true,
            |w| w.raw(attr::REQUESTED_TRANSPORT, &REQUESTED_TRANSPORT_UDP),
        )
    };
    for (c, other, what) in [
        (&mut tcp, &udp_nonce, "the UDP nonce over TCP"),
        (&mut udp, &tcp_nonce, "the TCP nonce over UDP"),
    ] {
        let own = c.nonce.clone();
        c.set_challenge(
            c.realm.clone(),
            other.clone(),
            c.password_algorithms.clone(),
        );
        let r = c.transact(&allocate(c)).unwrap_or_else(|e| panic!("{e}"));
        assert_error(&r, &[438], what);
        assert!(r.has(attr::NONCE), "{what}: a 438 carries a nonce");
        // Its own nonce works.
        c.set_challenge(c.realm.clone(), own, c.password_algorithms.clone());
        let r = c.transact(&allocate(c)).unwrap_or_else(|e| panic!("{e}"));
        assert_success(&r, &format!("Allocate after {what}"));
    }
}

on_every_stream_io!(
    relay_flow_over_tcp_and_tls,
    reference_flow_over_streams,
    tls_negotiates_stun_turn_alpn,
    closing_the_connection_deletes_the_allocation,
    a_request_written_one_byte_at_a_time_is_answered,
    several_requests_in_one_write_are_answered_in_order,
    bytes_that_are_not_turn_close_the_connection,
    a_connection_cut_mid_frame_leaves_the_server_serving,
    a_nonce_from_udp_is_stale_over_tcp,
);
