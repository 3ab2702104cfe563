//! TCP allocations (RFC 6062) against the real server: Connect, peers that
//! connect in, ConnectionBind on data connections that land on either
//! shard, bytes relayed both ways as they are, and the peer policy on the
//! Connect path.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use super::streams::{client, tcp_addr, tls_server, wait_for_series, Over};
use super::*;
use uturn::stun::{Attribute, Message};

/// REQUESTED-TRANSPORT TCP.
const TRANSPORT_TCP: [u8; 4] = [6, 0, 0, 0];

/// Allocates for TCP on `c` (a stream client); returns the relayed address.
fn tcp_allocate(c: &mut TurnClient) -> SocketAddr {
    c.challenge(Method::Allocate);
    let r = c.request(Method::Allocate, |w| {
        w.raw(attr::REQUESTED_TRANSPORT, &TRANSPORT_TCP)
    });
    assert_success(&r, "TCP Allocate");
    r.xor_addr(attr::XOR_RELAYED_ADDRESS)
        .expect("XOR-RELAYED-ADDRESS")
}

fn connection_id(msg: &Message<'_>) -> u32 {
    let raw = msg.get(attr::CONNECTION_ID).expect("CONNECTION-ID");
    match Attribute::decode(raw, msg.transaction_id()) {
        Ok(Attribute::ConnectionId(id)) => id,
        other => panic!("bad CONNECTION-ID: {other:?}"),
    }
}

/// Connect to `peer`; the reply.
fn connect(c: &mut TurnClient, peer: SocketAddr) -> Reply {
    c.request(Method::Connect, |w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, peer)
    })
}

/// Opens a data connection to `server` and binds it to `id` with `c`'s
/// credentials (its nonce is the control connection's). Returns the
/// connection, ready for raw bytes, and the answer.
fn data_connection(server: SocketAddr, c: &TurnClient, id: u32) -> (TcpStream, Reply) {
    let mut s = TcpStream::connect_timeout(&server, WAIT).expect("data connection");
    s.write_all(&bind_request(c, id)).unwrap();
    let answer = read_answer(&mut s);
    (s, answer)
}

/// A TLS client for a data connection, with `c`'s credentials and nonce.
fn tls_data_client(server: &Server, ca: &TestCa, c: &TurnClient) -> TurnClient {
    let mut d = TurnClient::tls(
        server.tls[0],
        &ca.pem,
        "alice",
        "wonderland",
        AuthMode::Legacy,
    );
    d.set_challenge(c.realm.clone(), c.nonce.clone(), None);
    d
}

/// `n` bytes of a pattern that shows a lost or reordered stretch.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Writes `bytes` on `from` (on a thread) and reads as many from `to`.
fn carries(from: &TcpStream, to: &mut TcpStream, bytes: &[u8], what: &str) {
    let mut w = from.try_clone().unwrap();
    let out = bytes.to_vec();
    let writer = std::thread::spawn(move || w.write_all(&out));
    let mut got = vec![0u8; bytes.len()];
    to.set_read_timeout(Some(WAIT)).unwrap();
    to.read_exact(&mut got)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    writer.join().unwrap().unwrap();
    assert!(got == bytes, "{what}: bytes differ");
}

/// Expects `s` to be closed by the other side within `WAIT`.
fn assert_closed(s: &mut TcpStream, what: &str) {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("{what}: not closed: {other:?}"),
    }
}

fn lab() -> Server {
    lab_server(&["--listen-tcp", "127.0.0.1:0"])
}

/// A lab server whose plain TCP pipes copy through uturn's buffers
/// instead of splicing (`[tcp] relay_splice = false`).
fn lab_without_splice() -> Server {
    let path = scratch_path("no-splice.toml");
    std::fs::write(&path, "[tcp]\nrelay_splice = false\n").unwrap();
    lab_server(&[
        "--listen",
        "127.0.0.1:0",
        "--relay-ip",
        "127.0.0.1",
        "--listen-tcp",
        "127.0.0.1:0",
        "--config",
        path.to_str().unwrap(),
    ])
}

/// Connect to six peers: their connections leave from the relayed address,
/// each is bound by a data connection (which lands on one shard or the
/// other: the server runs two), and 200 KB go each way on each. Spliced
/// (the default), then copied.
fn connect_and_relay_both_ways() {
    relay_both_ways(lab());
    relay_both_ways(lab_without_splice());
}

/// What one side sends before it shuts its side gets through, its end is
/// passed on after it, and the other way stays open until that side ends
/// too: spliced and copied.
fn a_half_close_passes_the_end_on_after_the_bytes() {
    for server in [lab(), lab_without_splice()] {
        let mut c = client(&server, None, Over::Tcp);
        tcp_allocate(&mut c);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let r = connect(&mut c, listener.local_addr().unwrap());
        assert_success(&r, "Connect");
        let (mut peer, _) = listener.accept().unwrap();
        let (mut data, answer) = data_connection(tcp_addr(&server), &c, connection_id(&r.msg()));
        assert_success(&answer, "ConnectionBind");
        let sent = pattern(300_000, 1);
        data.write_all(&sent).unwrap();
        data.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        peer.set_read_timeout(Some(WAIT)).unwrap();
        peer.read_to_end(&mut got)
            .expect("the peer reads to the end");
        assert!(
            got == sent,
            "every byte before the end ({} of {})",
            got.len(),
            sent.len()
        );
        // The other way still works.
        carries(
            &peer,
            &mut data,
            &pattern(50_000, 2),
            "peer → client after the client's end",
        );
        drop(peer);
        assert_closed(&mut data, "data connection after both ends");
    }
}

fn relay_both_ways(server: Server) {
    let mut c = client(&server, None, Over::Tcp);
    let relayed = tcp_allocate(&mut c);
    for round in 0..6u8 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer_addr = listener.local_addr().unwrap();
        let r = connect(&mut c, peer_addr);
        assert_success(&r, "Connect");
        let id = connection_id(&r.msg());
        let (mut peer, from) = listener.accept().unwrap();
        assert_eq!(
            from, relayed,
            "the peer connection leaves from the relayed address"
        );
        // RFC 6062 §5.2: the same peer again while it lives: 446.
        assert_error(&connect(&mut c, peer_addr), &[446], "a second Connect");
        let (mut data, answer) = data_connection(tcp_addr(&server), &c, id);
        assert_success(&answer, "ConnectionBind");
        c.check_signed(&answer);
        carries(&data, &mut peer, &pattern(200_000, round), "client → peer");
        carries(
            &peer,
            &mut data,
            &pattern(200_000, round ^ 0x55),
            "peer → client",
        );
        // Either end closing ends both.
        if round % 2 == 0 {
            drop(peer);
            assert_closed(&mut data, "data connection after the peer closed");
        } else {
            drop(data);
            assert_closed(&mut peer, "peer connection after the client closed");
        }
    }
}

/// A peer connecting in is announced only with a permission; the client
/// binds it and bytes flow. Without one it is closed at once.
fn peers_connect_in_with_a_permission_only() {
    let server = lab();
    let mut c = client(&server, None, Over::Tcp);
    let relayed = tcp_allocate(&mut c);
    let mut refused = TcpStream::connect_timeout(&relayed, WAIT).expect("connect in");
    assert_closed(&mut refused, "a peer without a permission");
    assert!(
        c.recv_raw(QUIET).is_none(),
        "no ConnectionAttempt without a permission"
    );
    assert_success(
        &c.create_permission(&[sa("127.0.0.1:1")]),
        "CreatePermission",
    );
    let mut peer = TcpStream::connect_timeout(&relayed, WAIT).expect("connect in");
    let ind = c.recv_raw(WAIT).expect("ConnectionAttempt");
    let msg = Message::parse(&ind).expect("STUN");
    assert_eq!(
        (msg.method(), msg.class()),
        (Method::ConnectionAttempt, Class::Indication)
    );
    let announced = Reply { bytes: ind.clone() }.xor_addr(attr::XOR_PEER_ADDRESS);
    assert_eq!(announced, Some(peer.local_addr().unwrap()));
    let id = connection_id(&msg);
    // Bytes the peer sends before the bind wait for it.
    peer.write_all(b"early").unwrap();
    let (mut data, answer) = data_connection(tcp_addr(&server), &c, id);
    assert_success(&answer, "ConnectionBind");
    let mut early = [0u8; 5];
    data.read_exact(&mut early).unwrap();
    assert_eq!(&early, b"early");
    carries(&data, &mut peer, &pattern(50_000, 7), "client → peer");
    carries(&peer, &mut data, &pattern(50_000, 9), "peer → client");
    // The control connection's end ends the allocation and every pipe.
    drop(c);
    assert_closed(
        &mut peer,
        "peer connection after the control connection closed",
    );
    assert_closed(
        &mut data,
        "data connection after the control connection closed",
    );
}

/// SECURITY.md rule 8: Connect goes through the same choke point as
/// CreatePermission; nothing is connected to a refused peer.
fn connect_is_refused_to_denied_peers() {
    let server = lab();
    let mut c = client(&server, None, Over::Tcp);
    tcp_allocate(&mut c);
    for peer in [
        "10.0.0.1:80",
        "192.168.1.1:80",
        "172.16.0.1:80",
        "169.254.169.254:80",
        "100.64.0.1:80",
        "0.0.0.0:80",
        "224.0.0.1:80",
        "255.255.255.255:80",
    ] {
        assert_error(
            &connect(&mut c, sa(peer)),
            &[403],
            &format!("Connect {peer}"),
        );
    }
    // IPv6 forms of loopback on an IPv4 allocation: 443 (or 403).
    for peer in ["[::ffff:127.0.0.1]:80", "[::1]:80", "[64:ff9b::7f00:1]:80"] {
        assert_error(
            &connect(&mut c, sa(peer)),
            &[403, 443],
            &format!("Connect {peer}"),
        );
    }
    // Without --allow-peer, loopback is refused like the rest.
    let strict = Server::start(&[
        "--realm",
        REALM,
        "--user",
        "alice:wonderland",
        "--listen-tcp",
        "127.0.0.1:0",
    ]);
    let mut s = client(&strict, None, Over::Tcp);
    tcp_allocate(&mut s);
    for peer in ["127.0.0.1:80", "127.0.0.2:80"] {
        assert_error(
            &connect(&mut s, sa(peer)),
            &[403],
            &format!("Connect {peer}, default policy"),
        );
    }
    // A peer that refuses the connection: 447.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    assert_error(&connect(&mut c, closed), &[447], "Connect to a closed port");
}

/// The ConnectionBind request for `id` with `c`'s credentials, as bytes.
fn bind_request(c: &TurnClient, id: u32) -> Vec<u8> {
    c.build(
        Method::ConnectionBind,
        Class::Request,
        &TurnClient::new_tid(),
        true,
        |w| w.u32(attr::CONNECTION_ID, id),
    )
}

/// Reads one STUN answer from a raw data connection.
fn read_answer(s: &mut TcpStream) -> Reply {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut head = [0u8; 20];
    s.read_exact(&mut head).expect("ConnectionBind answer");
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let mut bytes = head.to_vec();
    bytes.resize(20 + len, 0);
    s.read_exact(&mut bytes[20..])
        .expect("ConnectionBind answer body");
    Reply { bytes }
}

/// RFC 6062 §5.4 has the client wait for the ConnectionBind answer before
/// it sends; bytes sent earlier (in the same write as the request, or just
/// after it, with or without the client's end after them) still reach the
/// peer, in order, whichever shard the data connection lands on. More than
/// the relay keeps meanwhile never arrives with a hole: the peer gets all
/// of it, or a prefix and the end.
fn bytes_sent_before_the_bind_answer_reach_the_peer() {
    for server in [lab(), lab_without_splice()] {
        let mut c = client(&server, None, Over::Tcp);
        tcp_allocate(&mut c);
        for round in 0..6u8 {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let r = connect(&mut c, listener.local_addr().unwrap());
            assert_success(&r, "Connect");
            let (mut peer, _) = listener.accept().unwrap();
            peer.set_read_timeout(Some(WAIT)).unwrap();
            let mut data = TcpStream::connect_timeout(&tcp_addr(&server), WAIT).unwrap();
            let bind = bind_request(&c, connection_id(&r.msg()));
            let early = pattern(20_000, round);
            match round % 3 {
                // One write: the request and the bytes after it.
                0 => data.write_all(&[&bind[..], &early[..]].concat()).unwrap(),
                // Two writes, the bytes right after the request.
                1 => {
                    data.write_all(&bind).unwrap();
                    data.write_all(&early).unwrap();
                }
                // Then the client's end, before the answer has come.
                _ => {
                    data.write_all(&[&bind[..], &early[..]].concat()).unwrap();
                    data.shutdown(std::net::Shutdown::Write).unwrap();
                }
            }
            let answer = read_answer(&mut data);
            assert_success(&answer, "ConnectionBind");
            let mut got = vec![0u8; early.len()];
            peer.read_exact(&mut got)
                .unwrap_or_else(|e| panic!("round {round}: early bytes: {e}"));
            assert!(got == early, "round {round}: early bytes differ");
            if round % 3 == 2 {
                let mut rest = Vec::new();
                peer.read_to_end(&mut rest)
                    .expect("the client's end reaches the peer");
                assert!(rest.is_empty(), "round {round}: bytes after the end");
                carries(&peer, &mut data, &pattern(10_000, 3), "peer → client");
            } else {
                carries(&data, &mut peer, &pattern(10_000, 4), "client → peer");
                carries(&peer, &mut data, &pattern(10_000, 5), "peer → client");
            }
        }
        // 300 KB at once, answer unread: the relay keeps 64 KiB before the
        // answer goes, the kernel the rest once the connection has left.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let r = connect(&mut c, listener.local_addr().unwrap());
        assert_success(&r, "Connect");
        let (mut peer, _) = listener.accept().unwrap();
        let data = TcpStream::connect_timeout(&tcp_addr(&server), WAIT).unwrap();
        let sent = [
            bind_request(&c, connection_id(&r.msg())),
            pattern(300_000, 9),
        ]
        .concat();
        let mut w = data.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&sent);
            let _ = w.shutdown(std::net::Shutdown::Write);
        });
        let mut got = Vec::new();
        peer.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = peer.read_to_end(&mut got);
        writer.join().unwrap();
        let want = pattern(300_000, 9);
        assert!(
            got[..] == want[..got.len()],
            "the peer got bytes out of order or with a hole ({} bytes)",
            got.len()
        );
        println!(
            "early burst: the peer got {} of {} bytes",
            got.len(),
            want.len()
        );
    }
}

/// A ConnectionBind that is refused (an id nobody holds, naming the
/// second worker: answered there or by letter from there) from a client
/// that ended its side right after it: the answer comes, then the close,
/// within the stream sweep's second (not at the connection's deadline).
fn a_refused_data_connection_that_ended_gets_its_answer_and_the_close() {
    let server = lab();
    let mut c = client(&server, None, Over::Tcp);
    tcp_allocate(&mut c);
    let unknown = 1 << 22 | 0x1234;
    for round in 0..6 {
        let mut data = TcpStream::connect_timeout(&tcp_addr(&server), WAIT).unwrap();
        data.write_all(&bind_request(&c, unknown)).unwrap();
        data.shutdown(std::net::Shutdown::Write).unwrap();
        let answer = read_answer(&mut data);
        assert_error(&answer, &[400], &format!("round {round}: an unknown id"));
        assert_closed(&mut data, &format!("round {round}: after the refusal"));
    }
}

/// Over TLS, bytes in the same records as the ConnectionBind reach the
/// peer too.
fn early_bytes_over_tls_reach_the_peer() {
    let ca = TestCa::new();
    let (server, _cert) = tls_server(&ca, &[]);
    let mut c = client(&server, Some(&ca), Over::Tls);
    tcp_allocate(&mut c);
    for round in 0..4u8 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let r = connect(&mut c, listener.local_addr().unwrap());
        assert_success(&r, "Connect over TLS");
        let (mut peer, _) = listener.accept().unwrap();
        let mut d = tls_data_client(&server, &ca, &c);
        let early = pattern(5_000, round);
        let bind = bind_request(&d, connection_id(&r.msg()));
        d.send_raw(&[&bind[..], &early[..]].concat());
        let answer = Reply {
            bytes: d.recv_raw(WAIT).expect("ConnectionBind answer"),
        };
        assert_success(&answer, "ConnectionBind over TLS");
        let mut got = vec![0u8; early.len()];
        peer.set_read_timeout(Some(WAIT)).unwrap();
        peer.read_exact(&mut got)
            .unwrap_or_else(|e| panic!("round {round}: early bytes over TLS: {e}"));
        assert!(got == early, "round {round}: early bytes over TLS differ");
        let later = pattern(5_000, round ^ 0x33);
        d.send_raw(&later);
        peer.read_exact(&mut got).unwrap();
        assert!(got == later, "round {round}: bytes after the answer");
    }
}

/// A peer that never answers the SYN (its listener's accept queue is full,
/// so the kernel drops it): after 30 s (RFC 6062 §5.2's minimum, not the
/// kernel's two minutes) the Connect is answered 447, signed, and the
/// connection's place is free again.
fn a_connect_that_hangs_is_447_after_30_seconds() {
    let server = lab_server(&["--listen-tcp", "127.0.0.1:0", "--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
    let silent = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    silent.bind(&sa("127.0.0.1:0").into()).unwrap();
    silent.listen(0).unwrap();
    let silent_addr = silent.local_addr().unwrap().as_socket().unwrap();
    // A backlog of 0 holds one connection; the next SYNs are dropped.
    let _filler = TcpStream::connect_timeout(&silent_addr, WAIT).expect("the queue's one place");
    let hangs = TcpStream::connect_timeout(&silent_addr, Duration::from_millis(300));
    assert!(hangs.is_err(), "the accept queue is not full: {hangs:?}");

    let mut c = client(&server, None, Over::Tcp);
    tcp_allocate(&mut c);
    let tid = TurnClient::new_tid();
    let req = c.build(Method::Connect, Class::Request, &tid, true, |w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, silent_addr)
    });
    let sent = Instant::now();
    c.send_raw(&req);
    wait_for_series(metrics, "uturn_tcp_peer_connections", 1);
    let bytes = c
        .recv_raw(Duration::from_secs(45))
        .expect("an answer to the Connect within 45 s");
    let took = sent.elapsed();
    let r = Reply { bytes };
    assert_eq!(r.msg().transaction_id(), &tid);
    assert_error(&r, &[447], "Connect to a peer that never answers");
    c.check_signed(&r);
    assert!(
        took >= Duration::from_secs(29),
        "447 came after {took:?}, before the 30 s RFC 6062 asks for"
    );
    println!("447 after {took:?}");
    wait_for_series(metrics, "uturn_tcp_peer_connections", 0);
    wait_for_series(
        metrics,
        "uturn_tcp_connections_total{outcome=\"connect_timeout\"}",
        1,
    );
    // The control connection still works.
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let r = connect(&mut c, other.local_addr().unwrap());
    assert_success(&r, "Connect after the timeout");
}

/// ConnectionBind with an unknown id, or on a control connection: 400; a
/// TCP allocation on UDP: 400.
fn connection_bind_errors() {
    let server = lab();
    let mut c = client(&server, None, Over::Tcp);
    tcp_allocate(&mut c);
    let (_, answer) = data_connection(tcp_addr(&server), &c, 0x1234_5678);
    assert_error(&answer, &[400], "ConnectionBind to an unknown id");
    let r = c.request(Method::ConnectionBind, |w| w.u32(attr::CONNECTION_ID, 1));
    assert_error(&r, &[400], "ConnectionBind on the control connection");
    let mut u = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy);
    u.challenge(Method::Allocate);
    let r = u.request(Method::Allocate, |w| {
        w.raw(attr::REQUESTED_TRANSPORT, &TRANSPORT_TCP)
    });
    assert_error(&r, &[400], "a TCP allocation over UDP");
}

/// Over TLS: the control and data connections are TLS, the peer leg TCP.
fn connect_and_relay_over_tls() {
    let ca = TestCa::new();
    let (server, _cert) = tls_server(&ca, &[]);
    let mut c = client(&server, Some(&ca), Over::Tls);
    let relayed = tcp_allocate(&mut c);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let r = connect(&mut c, listener.local_addr().unwrap());
    assert_success(&r, "Connect over TLS");
    let id = connection_id(&r.msg());
    let (mut peer, from) = listener.accept().unwrap();
    assert_eq!(from, relayed);
    let mut d = tls_data_client(&server, &ca, &c);
    let req = bind_request(&d, id);
    let answer = d.transact(&req).expect("ConnectionBind answer");
    assert_success(&answer, "ConnectionBind over TLS");
    let payload = pattern(30_000, 3);
    d.send_raw(&payload);
    let mut got = vec![0u8; payload.len()];
    peer.set_read_timeout(Some(WAIT)).unwrap();
    peer.read_exact(&mut got).unwrap();
    assert!(got == payload, "client → peer over TLS");
    peer.write_all(&payload).unwrap();
    let back = d
        .stream()
        .read_exact_raw(payload.len(), WAIT)
        .expect("peer → client over TLS");
    assert!(back == payload, "peer → client over TLS");
}

on_every_stream_io!(
    connect_and_relay_both_ways,
    a_half_close_passes_the_end_on_after_the_bytes,
    peers_connect_in_with_a_permission_only,
    connect_is_refused_to_denied_peers,
    connection_bind_errors,
    connect_and_relay_over_tls,
);

on_every_stream_io!(
    bytes_sent_before_the_bind_answer_reach_the_peer,
    early_bytes_over_tls_reach_the_peer,
    a_refused_data_connection_that_ended_gets_its_answer_and_the_close,
);

on_both_backends!(a_connect_that_hangs_is_447_after_30_seconds);
