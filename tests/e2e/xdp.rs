//! The XDP fast path, on the three-namespace topology (client, relay,
//! peer; tests/common/netns.rs): ChannelData crosses both ways byte for
//! byte in the driver, proven by the program's counters and by uturn's
//! sockets receiving none of it; what is not a bound channel stays on the
//! sockets; routes end with Refresh 0, with expiry (also inside the program,
//! before uturn removes them) and with a reload that narrows the peer
//! policy; IPv6 and across families; a `kill -9` detaches the program.
//! Skipped without root, `ip netns` or clang (UTURN_REQUIRE_XDP=1: failed).

use super::*;

use std::time::Instant;

use uturn::io::xdp::{Learning, Options, Program, Route, OUTCOMES};

const PEER_NET_V4: &str = "10.200.2.0/24";

/// uturn in the relay namespace with the program required on both of its
/// interfaces, a metrics listener, and `extra`.
fn xdp_uturn(t: &Topology, extra: &[&str]) -> Server {
    let mut args = vec![
        "--realm",
        REALM,
        "--user",
        "alice:wonderland",
        "--xdp",
        "required",
        "--xdp-interface",
        "rc",
        "--xdp-interface",
        "rp",
        "--metrics",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    t.start_uturn(&args)
}

/// The server's metrics now, read from inside the relay namespace (where its
/// loopback listener is). Waits out the 0.5 s a snapshot is shared for.
fn scrape(t: &Topology, server: &Server) -> String {
    std::thread::sleep(Duration::from_millis(600));
    let addr = metrics_addr(server);
    t.in_ns(Side::Relay, || http_get(addr, "GET", "/metrics").1)
}

fn value(body: &str, name: &str) -> u64 {
    series(body, name).unwrap_or_else(|| panic!("no series {name} in:\n{body}"))
}

fn outcome(body: &str, name: &str) -> u64 {
    value(
        body,
        &format!("uturn_xdp_packets_total{{outcome=\"{name}\"}}"),
    )
}

/// A client in the client namespace on `local`, talking to `server`.
fn client(t: &Topology, local: IpAddr, server: SocketAddr) -> TurnClient {
    t.in_ns(Side::Client, || {
        TurnClient::bind(local, server, "alice", "wonderland", AuthMode::Legacy)
    })
}

fn peer(t: &Topology, ip: IpAddr) -> Peer {
    t.in_ns(Side::Peer, || Peer::bind(ip))
}

/// One ChannelData from the client and one datagram back from the peer:
/// both take the socket path, whose sends teach the program the next hop
/// toward each side, and the channel is forwarded in the driver from then
/// on.
fn prime(c: &mut TurnClient, p: &Peer, number: u16, relayed: SocketAddr) {
    c.send_channel(number, b"hello peer", false);
    let (d, from) = p.recv(WAIT).expect("the first ChannelData reached no peer");
    assert_eq!((d.as_slice(), from), (&b"hello peer"[..], relayed));
    p.send_to(b"hello client", relayed);
    expect_channel(c, number, b"hello client");
}

/// An IPv4 client with an allocation and channel 0x4000 bound to an IPv4
/// peer, primed (see [`prime`]): the client, the peer, the relayed address.
fn primed_channel(t: &Topology, server: &Server) -> (TurnClient, Peer, SocketAddr) {
    let mut c = client(t, CLIENT_V4.into(), server.addr);
    let relayed = c.allocate();
    let p = peer(t, PEER_V4.into());
    assert_success(&c.channel_bind(0x4000, p.addr), "ChannelBind");
    prime(&mut c, &p, 0x4000, relayed);
    (c, p, relayed)
}

fn expect_channel(c: &mut TurnClient, number: u16, want: &[u8]) {
    match c.recv_relayed(WAIT) {
        Some(Relayed::Channel { number: n, data }) if n == number && data == want => {}
        other => panic!(
            "expected ChannelData {number:#x} of {} bytes, got {other:?}",
            want.len()
        ),
    }
}

/// Every payload length that matters to a checksum or a header rewrite:
/// empty, odd, around a word, and a full media packet.
fn payload(i: usize) -> Vec<u8> {
    let len = [0, 1, 2, 3, 4, 5, 7, 120, 121, 1200][i % 10];
    (0..len).map(|j| (i * 31 + j) as u8).collect()
}

/// Sends `n` ChannelData each way and checks every byte that arrives;
/// returns the payload bytes sent each way.
fn exchange(c: &mut TurnClient, p: &Peer, number: u16, relayed: SocketAddr, n: usize) -> u64 {
    let mut bytes = 0;
    for i in 0..n {
        let up = payload(i);
        c.send_channel(number, &up, false);
        let (d, from) = p
            .recv(WAIT)
            .unwrap_or_else(|| panic!("ChannelData {i} did not reach the peer"));
        assert_eq!(from, relayed, "datagram {i} came from elsewhere");
        assert_eq!(d, up, "datagram {i} to the peer differs");
        let down = payload(i + 3);
        p.send_to(&down, relayed);
        expect_channel(c, number, &down);
        bytes += up.len() as u64;
    }
    bytes
}

/// CPU seconds the process has used (user + system), for the report.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

#[test]
fn channel_data_is_forwarded_in_the_driver_both_ways() {
    let Some(t) = Topology::up("channel_data_is_forwarded_in_the_driver_both_ways") else {
        return;
    };
    let server = xdp_uturn(&t, &[]);
    let (mut c, p, relayed) = primed_channel(&t, &server);

    let before = scrape(&t, &server);
    assert_eq!(value(&before, "uturn_xdp_routes"), 1);
    let cpu0 = cpu_secs(server.pid());
    const N: usize = 300;
    let bytes = exchange(&mut c, &p, 0x4000, relayed, N);
    let cpu1 = cpu_secs(server.pid());
    let after = scrape(&t, &server);

    let delta = |name: &str| value(&after, name) - value(&before, name);
    let fwd = |o: &str| outcome(&after, o) - outcome(&before, o);
    println!(
        "{N} each way: forwarded_to_peer +{}, forwarded_to_client +{}, uturn's sockets \
         received +{}, uturn used {:.2} CPU-s",
        fwd("forwarded_to_peer"),
        fwd("forwarded_to_client"),
        delta("uturn_io_rx_datagrams_total"),
        cpu1 - cpu0
    );
    assert_eq!(fwd("forwarded_to_peer"), N as u64);
    assert_eq!(fwd("forwarded_to_client"), N as u64);
    // Not one of them went through uturn's sockets: no CPU of its own.
    assert_eq!(delta("uturn_io_rx_datagrams_total"), 0);
    assert_eq!(delta("uturn_io_tx_datagrams_total"), 0);
    // And yet they are counted as relayed, as the socket path counts them.
    let packets = |d: &str| format!("uturn_packets_total{{direction=\"{d}\",transport=\"udp\"}}");
    let bytes_of = |d: &str| format!("uturn_bytes_total{{direction=\"{d}\",transport=\"udp\"}}");
    assert_eq!(delta(&packets("client_to_peer")), N as u64);
    assert_eq!(delta(&packets("peer_to_client")), N as u64);
    assert_eq!(delta(&bytes_of("client_to_peer")), bytes);
    let attached = |i: &str| format!("uturn_xdp_attached{{interface=\"{i}\",mode=\"native\"}}");
    assert_eq!(value(&after, &attached("rc")), 1);
    assert_eq!(value(&after, &attached("rp")), 1);

    // Padded ChannelData (allowed over UDP) is left to the sockets, which
    // relay it all the same.
    c.send_channel(0x4000, b"odd", true);
    let (d, _) = p.recv(WAIT).expect("padded ChannelData was not relayed");
    assert_eq!(d, b"odd");
    let last = scrape(&t, &server);
    assert_eq!(outcome(&last, "padded") - outcome(&after, "padded"), 1);
}

/// A flow that only ever goes one way (a viewer's client sending, a peer
/// that never answers) is forwarded in the driver after its first datagram:
/// the socket path's send of that one taught the program the next hop.
#[test]
fn a_one_way_flow_is_forwarded_after_its_first_datagram() {
    let Some(t) = Topology::up("a_one_way_flow_is_forwarded_after_its_first_datagram") else {
        return;
    };
    let server = xdp_uturn(&t, &[]);
    let mut c = client(&t, CLIENT_V4.into(), server.addr);
    let relayed = c.allocate();
    let p = peer(&t, PEER_V4.into());
    assert_success(&c.channel_bind(0x4000, p.addr), "ChannelBind");
    c.send_channel(0x4000, b"first", false);
    assert_eq!(p.recv(WAIT).map(|(d, _)| d), Some(b"first".to_vec()));
    let before = scrape(&t, &server);
    const N: usize = 50;
    for i in 0..N {
        let data = payload(i);
        c.send_channel(0x4000, &data, false);
        let (d, from) = p.recv(WAIT).expect("one-way ChannelData was not relayed");
        assert_eq!((d, from), (data, relayed));
    }
    let after = scrape(&t, &server);
    assert_eq!(
        outcome(&after, "forwarded_to_peer") - outcome(&before, "forwarded_to_peer"),
        N as u64
    );
    assert_eq!(
        value(&after, "uturn_io_rx_datagrams_total"),
        value(&before, "uturn_io_rx_datagrams_total")
    );
}

#[test]
fn what_is_not_a_bound_channel_stays_on_the_sockets() {
    let Some(t) = Topology::up("what_is_not_a_bound_channel_stays_on_the_sockets") else {
        return;
    };
    let server = xdp_uturn(&t, &[]);
    let (mut c, p, relayed) = primed_channel(&t, &server);
    let before = scrape(&t, &server);

    // A Send indication goes through the control path.
    c.send_indication(p.addr, b"by indication");
    let (d, _) = p.recv(WAIT).expect("the Send indication was not relayed");
    assert_eq!(d, b"by indication");
    // A channel number that is not bound is dropped, by the sockets.
    c.send_channel(0x4001, b"nobody", false);
    assert!(p.recv(QUIET).is_none(), "an unbound channel was relayed");
    // The same peer address from another port has a permission but no
    // channel: a Data indication, from the sockets.
    let other = peer(&t, PEER_V4.into());
    other.send_to(b"no channel", relayed);
    match c.recv_relayed(WAIT) {
        Some(Relayed::Data { peer, data }) => {
            assert_eq!((peer, data.as_slice()), (other.addr, &b"no channel"[..]));
        }
        x => panic!("expected a Data indication, got {x:?}"),
    }
    // A Binding request is answered.
    let binding = c.build(
        Method::Binding,
        Class::Request,
        &TurnClient::new_tid(),
        false,
        |_| Ok(()),
    );
    let r = c.transact(&binding).expect("no Binding response");
    assert_eq!(r.class(), Class::Success);

    let after = scrape(&t, &server);
    let fwd = |o: &str| outcome(&after, o) - outcome(&before, o);
    assert_eq!(fwd("forwarded_to_peer"), 0);
    assert_eq!(fwd("forwarded_to_client"), 0);
    assert!(fwd("no_route") >= 4, "no_route +{}", fwd("no_route"));
    let rx = value(&after, "uturn_io_rx_datagrams_total")
        - value(&before, "uturn_io_rx_datagrams_total");
    assert!(rx >= 4, "the sockets received {rx} of the 4 datagrams");
}

#[test]
fn routes_end_with_refresh_0_and_with_expiry() {
    let Some(t) = Topology::up("routes_end_with_refresh_0_and_with_expiry") else {
        return;
    };
    let server = xdp_uturn(&t, &["--max-lifetime", "3"]);

    // Refresh 0: the allocation and its route go at once.
    let (mut c, p, relayed) = primed_channel(&t, &server);
    let primed = scrape(&t, &server);
    assert_success(&c.refresh(0), "Refresh 0");
    expect_nothing_either_way(&mut c, &p, 0x4000, relayed, "after Refresh 0");
    let m = scrape(&t, &server);
    assert_forwarded_nothing(&primed, &m);
    assert_eq!(value(&m, "uturn_xdp_routes"), 0);
    assert_eq!(value(&m, "uturn_xdp_routes_removed_total"), 1);

    // Expiry: a 3-second allocation stops relaying when it ends.
    let mut c = client(&t, CLIENT_V4.into(), server.addr);
    let relayed = c.allocate();
    let made = Instant::now();
    assert_success(&c.channel_bind(0x4001, p.addr), "ChannelBind");
    prime(&mut c, &p, 0x4001, relayed);
    let live = scrape(&t, &server);
    assert_eq!(value(&live, "uturn_xdp_routes"), 1);
    std::thread::sleep(Duration::from_secs(3).saturating_sub(made.elapsed()) + QUIET);
    expect_nothing_either_way(&mut c, &p, 0x4001, relayed, "after expiry");
    let gone = scrape(&t, &server);
    assert_eq!(value(&gone, "uturn_xdp_routes"), 0);
    assert_forwarded_nothing(&live, &gone);
}

/// Neither the peer's datagram nor the client's ChannelData gets through.
fn expect_nothing_either_way(
    c: &mut TurnClient,
    p: &Peer,
    number: u16,
    relayed: SocketAddr,
    when: &str,
) {
    p.send_to(b"too late", relayed);
    c.expect_nothing_relayed(&format!("peer datagram {when}"));
    c.send_channel(number, b"too late", false);
    assert!(p.recv(QUIET).is_none(), "ChannelData relayed {when}");
}

/// The program forwarded nothing between the two scrapes.
fn assert_forwarded_nothing(before: &str, after: &str) {
    for o in ["forwarded_to_client", "forwarded_to_peer"] {
        assert_eq!(outcome(after, o), outcome(before, o), "{o}");
    }
}

/// The program itself refuses a route past its expiry, before anyone removes
/// it: loaded here directly, with a route that works and then lapses.
#[test]
fn the_program_refuses_a_route_past_its_expiry() {
    let Some(t) = Topology::up("the_program_refuses_a_route_past_its_expiry") else {
        return;
    };
    let program = t.in_ns(Side::Relay, || {
        Program::load(&Options {
            interfaces: vec!["rc".into(), "rp".into()],
            routes: 16,
            allow_generic: false,
            // No socket path here to learn from: the fallback for kernels
            // without TCX, learning each side from its own packets.
            learning: Some(Learning::Ingress),
        })
        .unwrap_or_else(|e| panic!("load the XDP program: {e}"))
    });
    let c = t.in_ns(Side::Client, || UdpSocket::bind((CLIENT_V4, 0)).unwrap());
    let p = peer(&t, PEER_V4.into());
    let server: SocketAddr = (RELAY_LISTEN_V4, 3478).into();
    let relayed: SocketAddr = (RELAY_PEER_V4, 50000).into();
    let mut routes = program.routes().unwrap();
    let life = Duration::from_millis(1500);
    let route = Route {
        client: c.local_addr().unwrap(),
        server,
        channel: 0x4000,
        peer: p.addr,
        relayed,
        slot: 3,
        expires_ns: uturn::io::process::monotonic_ns() + life.as_nanos() as u64,
    };
    let installed = Instant::now();
    routes.install(&route, true).unwrap();

    // Client → peer, once to be learned (nothing listens on the relay side,
    // so it goes nowhere), then the peer's datagram comes back as
    // ChannelData, rewritten in the driver.
    c.send_to(&[0x40, 0, 0, 1, 0xaa], server).unwrap();
    p.send_to(b"through xdp", relayed);
    let (d, from) = recv_within(&c, WAIT).expect("the program did not forward to the client");
    assert_eq!(from, server);
    assert_eq!(d, [&[0x40, 0x00, 0x00, 11][..], b"through xdp"].concat());
    // And the client's ChannelData reaches the peer from the relayed address.
    c.send_to(&[0x40, 0, 0, 3, b'a', b'b', b'c'], server)
        .unwrap();
    let (d, from) = p
        .recv(WAIT)
        .expect("the program did not forward to the peer");
    assert_eq!((d.as_slice(), from), (&b"abc"[..], relayed));
    let t0 = routes.traffic(3).unwrap();
    assert_eq!((t0.to_peer_packets, t0.to_peer_bytes), (1, 3));
    assert_eq!((t0.to_client_packets, t0.to_client_bytes), (1, 11));

    std::thread::sleep(life.saturating_sub(installed.elapsed()) + Duration::from_millis(100));
    p.send_to(b"too late", relayed);
    assert!(recv_within(&c, QUIET).is_none(), "forwarded past expiry");
    let expired = OUTCOMES.iter().position(|o| *o == "expired").unwrap();
    assert_eq!(program.outcomes()[expired], 1);
    assert_eq!(routes.traffic(3).unwrap(), t0);
}

#[test]
fn a_reload_that_refuses_the_peer_takes_its_route_away() {
    let Some(t) = Topology::up("a_reload_that_refuses_the_peer_takes_its_route_away") else {
        return;
    };
    let path = scratch_path("xdp-reload.toml");
    let file = |allow: &str| {
        format!(
            "listen = [\"{RELAY_LISTEN_V4}:0\"]\nrelay_ips = [\"{RELAY_PEER_V4}\"]\n\
             [peers]\nallow = [\"{allow}\"]\n"
        )
    };
    std::fs::write(&path, file(PEER_NET_V4)).unwrap();
    let server = xdp_uturn(&t, &["--config", path.to_str().unwrap()]);
    let (mut c, p, relayed) = primed_channel(&t, &server);
    let before = scrape(&t, &server);
    assert_eq!(value(&before, "uturn_xdp_routes"), 1);

    // The private peer network is no longer allowed.
    std::fs::write(&path, file("10.200.3.0/24")).unwrap();
    signal(server.pid(), Signal::SIGHUP);
    let deadline = Instant::now() + WAIT;
    loop {
        let m = scrape(&t, &server);
        if value(&m, "uturn_config_reloads_total{result=\"ok\"}") == 1 {
            assert_eq!(value(&m, "uturn_xdp_routes"), 0);
            break;
        }
        assert!(Instant::now() < deadline, "the reload was not applied");
    }
    expect_nothing_either_way(&mut c, &p, 0x4000, relayed, "to a refused peer");
    let after = scrape(&t, &server);
    assert_forwarded_nothing(&before, &after);
}

#[test]
fn ipv6_and_across_families() {
    let Some(t) = Topology::up("ipv6_and_across_families") else {
        return;
    };
    let listen_v4 = format!("{RELAY_LISTEN_V4}:0");
    let listen_v6 = format!("[{RELAY_LISTEN_V6}]:0");
    let (relay_v4, relay_v6) = (RELAY_PEER_V4.to_string(), RELAY_PEER_V6.to_string());
    let server = xdp_uturn(
        &t,
        &[
            "--listen",
            &listen_v4,
            "--listen",
            &listen_v6,
            "--relay-ip",
            &relay_v4,
            "--relay-ip",
            &relay_v6,
        ],
    );
    let server_v6 = server.listen[1];
    assert!(server_v6.is_ipv6());
    let before = scrape(&t, &server);
    let cases: [(IpAddr, SocketAddr, AddressFamily, IpAddr); 3] = [
        // IPv6 client, IPv6 peer.
        (
            CLIENT_V6.into(),
            server_v6,
            AddressFamily::V6,
            PEER_V6.into(),
        ),
        // IPv4 client, IPv6 peer.
        (
            CLIENT_V4.into(),
            server.addr,
            AddressFamily::V6,
            PEER_V6.into(),
        ),
        // IPv6 client, IPv4 peer.
        (
            CLIENT_V6.into(),
            server_v6,
            AddressFamily::V4,
            PEER_V4.into(),
        ),
    ];
    const N: usize = 20;
    for (local, to, family, peer_ip) in cases {
        let mut c = client(&t, local, to);
        c.family = Some(family);
        let relayed = c.allocate();
        assert_eq!(relayed.is_ipv6(), family == AddressFamily::V6);
        let p = peer(&t, peer_ip);
        assert_success(&c.channel_bind(0x4000, p.addr), "ChannelBind");
        prime(&mut c, &p, 0x4000, relayed);
        exchange(&mut c, &p, 0x4000, relayed, N);
    }
    let after = scrape(&t, &server);
    let fwd = |o: &str| outcome(&after, o) - outcome(&before, o);
    // Each case: N each way (the priming datagrams took the sockets, which
    // taught the program both next hops).
    assert_eq!(fwd("forwarded_to_peer"), 3 * N as u64);
    assert_eq!(fwd("forwarded_to_client"), 3 * N as u64);
}

#[test]
fn kill_9_detaches_the_program() {
    let Some(t) = Topology::up("kill_9_detaches_the_program") else {
        return;
    };
    let attached = |dev: &str| {
        let out = t
            .command(Side::Relay, "ip")
            .args(["link", "show", "dev", dev])
            .output()
            .expect("ip link show");
        String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
    };
    assert!(!attached("rc") && !attached("rp"));
    let server = xdp_uturn(&t, &[]);
    assert!(
        attached("rc") && attached("rp"),
        "the program is not attached"
    );
    // The BPF programs uturn holds (the XDP one and the TC next-hop
    // learner): a link that outlived the process would keep its program
    // loaded.
    let programs = bpf_program_ids(server.pid());
    assert!(programs.len() >= 2, "uturn holds programs {programs:?}");
    let status = server.stop_with(Signal::SIGKILL);
    assert!(status.is_some(), "uturn did not die of SIGKILL");
    assert!(!attached("rc"), "the program stayed on rc after kill -9");
    assert!(!attached("rp"), "the program stayed on rp after kill -9");
    for id in programs {
        let shown = Command::new("bpftool")
            .args(["prog", "show", "id", &id.to_string()])
            .output()
            .expect("run bpftool");
        assert!(
            !shown.status.success(),
            "program {id} is still loaded after kill -9:\n{}",
            String::from_utf8_lossy(&shown.stdout)
        );
    }
}

/// The ids of the BPF programs whose descriptors process `pid` holds.
fn bpf_program_ids(pid: u32) -> Vec<u32> {
    let mut ids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .expect("read fdinfo")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Where the program cannot be attached, `auto` says why in one line and
/// relays on the sockets, and `required` refuses to start (exit status 2).
/// Needs no namespace: on loopback, with an interface that does not exist.
#[test]
fn auto_falls_back_and_required_refuses() {
    let server = lab_server(&["--xdp", "auto", "--xdp-interface", "nosuch0"]);
    wait_for_log(&server, "XDP fast path off: ", 1);
    alice_flow(server.addr);
    drop(server);
    let out = run_uturn(&[
        "--listen",
        "127.0.0.1:0",
        "--relay-ip",
        "127.0.0.1",
        "--user",
        "alice:wonderland",
        "--xdp",
        "required",
        "--xdp-interface",
        "nosuch0",
    ]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("--xdp: the XDP fast path cannot be used: could not "),
        "{}",
        out.stderr
    );
}
