//! TURN over TCP and TLS, the node's defences: connections per source, the
//! authentication and handshake deadlines, a client that never reads (a
//! bounded send queue), and the TLS certificate reloaded for new
//! connections while old ones keep theirs.

use std::io::Read;
use std::path::Path;
use std::time::Instant;

use super::streams::*;
use super::*;

/// A lab server with `[tcp]` settings from a configuration file.
fn tcp_table_server(table: &str, extra: &[&str]) -> Server {
    let path = scratch_path("tcp.toml");
    std::fs::write(&path, format!("[tcp]\n{table}\n")).unwrap();
    let mut args = vec![
        "--config",
        path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--relay-ip",
        "127.0.0.1",
    ];
    args.extend_from_slice(extra);
    lab_server(&args)
}

fn a_third_connection_from_one_source_is_closed() {
    let server = tcp_table_server("max_connections_per_source = 2", &[]);
    let addr = tcp_addr(&server);
    let mut first = TurnClient::tcp(addr, "alice", "wonderland", AuthMode::Legacy);
    let mut second = TurnClient::tcp(addr, "alice", "wonderland", AuthMode::Legacy);
    assert_binding_works(&mut first, "first connection");
    assert_binding_works(&mut second, "second connection");
    let mut third = TurnClient::tcp(addr, "alice", "wonderland", AuthMode::Legacy);
    let closed = third.wait_closed(Duration::from_secs(5));
    assert!(
        closed.is_some(),
        "a third connection from 127.0.0.1 stays open"
    );
    println!("the third connection: {closed:?}");
    assert_binding_works(&mut first, "first connection after the third");
    first.allocate();

    // Once one closes, a new one is let in (the server sees the close
    // asynchronously: retried, bounded).
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = TurnClient::tcp(addr, "alice", "wonderland", AuthMode::Legacy);
        c.send_raw(&binding_request(&[8; 12]));
        if c.recv_raw(WAIT).is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new connection admitted 5 s after one of two closed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // UDP is not limited by it.
    alice_flow(server.addr);
}

fn a_connection_without_an_allocation_is_closed_after_auth_timeout() {
    let server = tcp_table_server("auth_timeout_secs = 1", &[]);
    let addr = tcp_addr(&server);
    let start = Instant::now();
    let mut idle = TurnClient::tcp(addr, "alice", "wonderland", AuthMode::Legacy);
    let mut busy = TurnClient::tcp(addr, "alice", "wonderland", AuthMode::Legacy);
    // Requests without an allocation do not count.
    assert_binding_works(&mut idle, "idle client");
    busy.allocate();
    let closed = idle.wait_closed(Duration::from_secs(10));
    assert!(closed.is_some(), "no allocation, still open after 10 s");
    println!(
        "idle connection closed ({closed:?}) {:?} after it opened",
        start.elapsed()
    );
    // Well past the deadline, the one with an allocation is open and served.
    while start.elapsed() < Duration::from_secs(3) {
        assert_eq!(busy.wait_closed(Duration::from_millis(200)), None);
    }
    let peer = Peer::v4();
    assert_success(&busy.create_permission(&[peer.addr]), "CreatePermission");
    assert_success(&busy.refresh(300), "Refresh");
    // Once its allocation is gone, the deadline starts again.
    assert_success(&busy.refresh(0), "Refresh 0");
    let closed = busy.wait_closed(Duration::from_secs(10));
    assert!(closed.is_some(), "open 10 s after its allocation ended");
}

fn a_tls_connection_that_never_handshakes_is_closed() {
    let ca = TestCa::new();
    let path = scratch_path("tcp.toml");
    std::fs::write(&path, "[tcp]\nhandshake_timeout_secs = 1\n").unwrap();
    let (server, _) = tls_server(
        &ca,
        &[
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--relay-ip",
            "127.0.0.1",
        ],
    );
    let start = Instant::now();
    let mut silent = std::net::TcpStream::connect_timeout(&server.tls[0], WAIT).unwrap();
    // A client that finished its handshake is not affected.
    let mut c = client(&server, Some(&ca), Over::Tls);
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 64];
    match silent.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(n) => println!("{n} bytes before the close: {}", show(&buf[..n])),
        Err(e) => panic!(
            "a silent connection to the TLS port: {e} after {:?}",
            start.elapsed()
        ),
    }
    println!(
        "silent TLS connection closed {:?} after it opened",
        start.elapsed()
    );
    // The one that finished its handshake and then said nothing stays open
    // well past the handshake deadline.
    let quiet_until = start + Duration::from_secs(3);
    let closed = c.wait_closed(quiet_until.saturating_duration_since(Instant::now()));
    assert_eq!(closed, None, "a TLS client past its handshake was closed");
    assert_binding_works(&mut c, "the TLS client that handshook");
    c.allocate();
}

/// Over a stream a client sends each request once and waits for its answer
/// (RFC 8489 §6.2.2: no retransmission over a reliable transport), so a
/// request the server chooses not to answer must not leave the client
/// waiting: it is answered, or the connection is closed. Here 60 clients
/// behind one address (a NAT) open their connections at once, each with an
/// unsigned Allocate, more than the unauthenticated reply budget of one
/// source (20 a second, bursts of 40).
fn unauthenticated_requests_over_tcp_are_answered_or_the_connection_closed() {
    const N: usize = 60;
    let server = lab_server(&["--workers", "1"]);
    let mut clients: Vec<TurnClient> = (0..N)
        .map(|_| TurnClient::tcp(tcp_addr(&server), "alice", "wonderland", AuthMode::Legacy))
        .collect();
    let mut tids = Vec::new();
    for c in &mut clients {
        let tid = TurnClient::new_tid();
        let req = c.build(Method::Allocate, Class::Request, &tid, false, |w| {
            w.raw(attr::REQUESTED_TRANSPORT, &REQUESTED_TRANSPORT_UDP)
        });
        c.send_raw(&req);
        tids.push(tid);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut answered, mut closed, mut waiting) = (0, 0, 0);
    for (c, tid) in clients.iter_mut().zip(&tids) {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.recv_raw(left.max(Duration::from_millis(50))) {
            Some(f) => {
                let r = Reply { bytes: f };
                assert_eq!(r.tid(), *tid, "{}", r.describe());
                assert_error(&r, &[401], "unsigned Allocate");
                answered += 1;
            }
            None if c.stream().closed().is_some() => closed += 1,
            None => waiting += 1,
        }
    }
    println!("{N} connections: {answered} answered, {closed} closed, {waiting} left waiting");
    assert_eq!(
        waiting, 0,
        "{waiting} of {N} TCP clients got neither an answer nor a close within 5 s: a client \
         that must not retransmit waits until the server's auth_timeout (30 s) closes it, or \
         its own Ti (39.5 s) passes"
    );
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = read_to_string(Path::new(&format!("/proc/{pid}/status")));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

fn a_client_that_never_reads_costs_a_bounded_queue() {
    const FLOOD: usize = 20_000;
    const SIZE: usize = 1200;
    const SERIES: &str = "uturn_packets_total{direction=\"peer_to_client\",transport=\"tcp\"}";
    let server = lab_server(&["--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
    let mut sleeper = TurnClient::tcp(tcp_addr(&server), "alice", "wonderland", AuthMode::Legacy);
    let relayed = sleeper.allocate();
    let peer = Peer::v4();
    assert_success(&sleeper.create_permission(&[peer.addr]), "CreatePermission");
    assert_success(&sleeper.channel_bind(0x4000, peer.addr), "ChannelBind");
    let relayed_so_far = move || {
        let (_, body) = http_get(metrics, "GET", "/metrics");
        series(&body, SERIES).unwrap_or(0)
    };
    // The peer floods the client, which reads nothing, until the server
    // has relayed `n` more datagrams toward it (the relay socket's buffer
    // drops some on a busy machine; bounded: 10 × n sent or 60 s).
    let peer_sock = peer.sock.try_clone().unwrap();
    let flood = move |n: usize| {
        let sock = peer_sock.try_clone().unwrap();
        std::thread::spawn(move || {
            let before = relayed_so_far();
            let data = payload(SIZE, 7);
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut sent = 0;
            loop {
                let handled = relayed_so_far() - before;
                if handled >= n as u64 || sent >= 10 * n || Instant::now() >= deadline {
                    return (handled, sent);
                }
                for i in 0..2000 {
                    sock.send_to(&data, relayed).expect("peer send");
                    if i % 100 == 99 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                sent += 2000;
            }
        })
    };
    // A first flood fills the queue, the kernel's buffers and whatever
    // the io backend allocates on first use (io_uring's TCP buffers);
    // the memory is measured across the second.
    let rss_start = rss_kib(server.pid());
    let (warm, _) = flood(FLOOD).join().expect("the first flood");
    let rss_before = rss_kib(server.pid());
    let second = flood(FLOOD);
    // Meanwhile others are served, over UDP and TCP.
    alice_flow(server.addr);
    let mut other = TurnClient::tcp(tcp_addr(&server), "alice", "wonderland", AuthMode::Legacy);
    stream_flow(&mut other, "another TCP client during the flood");
    let (handled, sent) = second.join().expect("the second flood");
    let rss_after = rss_kib(server.pid());
    let grew = rss_after.saturating_sub(rss_before);
    println!(
        "{warm} then {handled} (of {sent} sent) datagrams relayed toward the sleeping client; \
         VmRSS {rss_start} → {rss_before} → {rss_after} KiB"
    );
    // Unless enough reached the server, the memory check proves nothing.
    assert!(
        warm >= FLOOD as u64 && handled >= FLOOD as u64,
        "only {warm} and {handled} of {FLOOD} datagrams reached the relay"
    );
    let unbounded = handled * (4 + SIZE as u64) / 1024;
    assert!(
        grew < 8 * 1024,
        "VmRSS grew by {grew} KiB while {handled} more frames ({unbounded} KiB) went to a \
         client that does not read"
    );
    // What did not fit was dropped and counted, not queued.
    let (_, body) = http_get(metrics, "GET", "/metrics");
    let dropped = series(
        &body,
        "uturn_stream_dropped_total{reason=\"send_queue_full\"}",
    );
    assert!(
        dropped.is_some_and(|n| n > 0),
        "no frame counted as dropped for a full send queue: {dropped:?}"
    );

    // The sleeper wakes up: what it gets is whole frames, then live traffic.
    let mut frames = 0usize;
    while let Some(f) = sleeper.recv_raw(Duration::from_millis(500)) {
        assert_eq!(f.len(), 4 + SIZE, "a whole ChannelData: {}", show(&f));
        assert_eq!(f[4..], payload(SIZE, 7)[..]);
        frames += 1;
    }
    println!("the sleeper then read {frames} queued frames");
    assert!(frames > 0 && (frames as u64) < handled, "{frames} frames");
    peer.send_to(b"fresh", relayed);
    assert_eq!(
        sleeper.recv_relayed(WAIT),
        Some(Relayed::Channel {
            number: 0x4000,
            data: b"fresh".to_vec()
        })
    );
}

// ---------------------------------------------------------------------------
// Certificate reload
// ---------------------------------------------------------------------------

fn tls_config(cert: &Path, key: &Path) -> String {
    format!(
        "listen = [\"127.0.0.1:0\"]\nrelay_ips = [\"127.0.0.1\"]\nrealm = \"{REALM}\"\n\
         listen_tls = [\"127.0.0.1:0\"]\ntls_cert = {:?}\ntls_key = {:?}\n\
         [peers]\nallow = [\"127.0.0.0/8\"]\n",
        cert.display().to_string(),
        key.display().to_string()
    )
}

/// The certificate a new TLS connection is shown.
fn certificate_now(server: &Server, ca: &TestCa) -> Vec<u8> {
    let link = StreamLink::tls(server.tls[0], &ca.pem, &[ALPN_STUN_TURN])
        .unwrap_or_else(|e| panic!("TLS to {}: {e}", server.tls[0]));
    link.peer_certificate().expect("a server certificate")
}

fn tls_certificate_reload_applies_to_new_connections() {
    let ca = TestCa::new();
    let (a, cert_path, key_path) = cert_files(&ca);
    let config = scratch_path("tls.toml");
    std::fs::write(&config, tls_config(&cert_path, &key_path)).unwrap();
    let server = Server::start(&[
        "--config",
        config.to_str().unwrap(),
        "--user",
        "alice:wonderland",
    ]);
    let mut old = client(&server, Some(&ca), Over::Tls);
    assert_eq!(old.peer_certificate(), Some(a.der.clone()), "certificate A");
    let relayed = old.allocate();
    let peer = Peer::v4();
    assert_success(&old.create_permission(&[peer.addr]), "CreatePermission");
    assert_success(&old.channel_bind(0x4001, peer.addr), "ChannelBind");
    let echo = |c: &mut TurnClient, when: &str| {
        c.send_channel(0x4001, when.as_bytes(), true);
        let (d, from) = peer
            .recv(WAIT)
            .unwrap_or_else(|| panic!("{when}: not relayed to the peer"));
        assert_eq!((d.as_slice(), from), (when.as_bytes(), relayed), "{when}");
        peer.send_to(when.as_bytes(), relayed);
        assert_eq!(
            c.recv_relayed(WAIT),
            Some(Relayed::Channel {
                number: 0x4001,
                data: when.as_bytes().to_vec()
            }),
            "{when}: back to the client"
        );
    };
    echo(&mut old, "before the reload");

    // Certificate B in the same files, then SIGHUP.
    let b = ca.issue();
    b.write(&cert_path, &key_path);
    signal(server.pid(), Signal::SIGHUP);
    wait_for_log(&server, "configuration reloaded", 1);
    // The shards take the new certificate as they get the command: bounded
    // poll until one new connection sees B, then every new one must.
    let deadline = Instant::now() + Duration::from_secs(5);
    while certificate_now(&server, &ca) != b.der {
        assert!(
            Instant::now() < deadline,
            "certificate B not served after 5 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 0..8 {
        assert!(
            certificate_now(&server, &ca) == b.der,
            "connection {i} after the reload saw A"
        );
    }
    // The old connection keeps its session and its allocation.
    echo(&mut old, "after the reload");
    assert_eq!(old.peer_certificate(), Some(a.der.clone()));
    assert_success(&old.refresh(300), "Refresh on the old connection");
    let mut new = client(&server, Some(&ca), Over::Tls);
    stream_flow(&mut new, "a client after the reload");

    // A key that cannot be read, then one that does not fit: refused.
    write_private(
        &key_path,
        b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
    );
    signal(server.pid(), Signal::SIGHUP);
    wait_for_log(&server, "reload rejected", 1);
    write_private(&key_path, a.key_pem.as_bytes());
    signal(server.pid(), Signal::SIGHUP);
    let log = wait_for_log(&server, "reload rejected", 2);
    assert!(log.contains("does not fit"), "{log}");
    for i in 0..4 {
        assert!(
            certificate_now(&server, &ca) == b.der,
            "connection {i} after a refused reload"
        );
    }
    echo(&mut old, "after the refused reloads");
}

on_every_stream_io!(
    unauthenticated_requests_over_tcp_are_answered_or_the_connection_closed,
    a_third_connection_from_one_source_is_closed,
    a_connection_without_an_allocation_is_closed_after_auth_timeout,
    a_tls_connection_that_never_handshakes_is_closed,
    a_client_that_never_reads_costs_a_bounded_queue,
    tls_certificate_reload_applies_to_new_connections,
);
