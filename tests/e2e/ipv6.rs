//! IPv6: flows on [::1], IPv6 relays for IPv4 clients, family rules, and the
//! policy on IPv6 allocations. Skipped, with a printed reason, without ::1.

use super::*;

fn ipv6_flow_on_loopback() {
    if ipv6_unavailable("ipv6_flow_on_loopback") {
        return;
    }
    let server = Server::start(&[
        "--listen",
        "[::1]:0",
        "--relay-ip",
        "::1",
        "--realm",
        REALM,
        "--user",
        "alice:wonderland",
        "--allow-peer",
        "::1/128",
    ]);
    assert!(server.addr.is_ipv6(), "listening on {}", server.addr);
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    // The flow asks for an IPv6 relay (REQUESTED-ADDRESS-FAMILY) as its peer is [::1].
    full_flow(
        server.addr,
        "alice",
        "wonderland",
        AuthMode::Legacy,
        Some(v6),
    );
    full_flow(
        server.addr,
        "alice",
        "wonderland",
        AuthMode::Sha256,
        Some(v6),
    );

    // Without REQUESTED-ADDRESS-FAMILY the client asks for IPv4 (RFC 8656
    // §7.2), which this server has no relay address for: 440.
    let mut c = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy);
    assert_error(
        &c.try_allocate(|_| Ok(())),
        &[440],
        "IPv4 Allocate on an IPv6-only relay",
    );

    // Everything else stays denied, including the IPv4-mapped loopback.
    let mut c = v6_client(&server);
    c.allocate();
    let targets: Vec<SocketAddr> = [
        "[::ffff:127.0.0.1]:9",
        "[::ffff:10.0.0.1]:9",
        "[::]:9",
        "[fe80::1]:9",
        "[fd00::1]:9",
        "[64:ff9b::a9fe:a9fe]:80",
        "[2002:a9fe:a9fe::1]:80",
    ]
    .iter()
    .map(|s| sa(s))
    .collect();
    let seen = assert_denied(
        &mut c,
        &targets,
        "IPv6 allocation with --allow-peer ::1/128",
    );
    println!("{}", seen.join("\n"));
}

fn ipv6_loopback_denied_without_allow_list() {
    if ipv6_unavailable("ipv6_loopback_denied_without_allow_list") {
        return;
    }
    let server = Server::start(&[
        "--listen",
        "[::1]:0",
        "--relay-ip",
        "::1",
        "--realm",
        REALM,
        "--user",
        "alice:wonderland",
    ]);
    let peer = Peer::bind(IpAddr::V6(Ipv6Addr::LOCALHOST));
    let mut c = v6_client(&server);
    c.allocate();
    let targets = [
        peer.addr,
        sa(&format!("[::ffff:127.0.0.1]:{}", peer.addr.port())),
    ];
    let seen = assert_denied(&mut c, &targets, "IPv6, default policy");
    println!("{}", seen.join("\n"));
    peer.expect_nothing("Send indication to [::1] under the default policy");
}

fn ipv6_relay_for_an_ipv4_client() {
    // One IPv4 and one IPv6 relay address; the client talks IPv4 to the server
    // and asks for each family in turn (RFC 8656 §7.2, REQUESTED-ADDRESS-FAMILY).
    if ipv6_unavailable("ipv6_relay_for_an_ipv4_client") {
        return;
    }
    let server = lab_server(&[
        "--relay-ip",
        "127.0.0.1",
        "--relay-ip",
        "::1",
        "--allow-peer",
        "::1/128",
    ]);
    assert!(server.addr.is_ipv4());
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let mut c = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy);
    full_flow_with(&mut c, v6, Some(v6));
    let mut c = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy);
    c.family = Some(AddressFamily::V4);
    full_flow_with(&mut c, LOOPBACK_V4, Some(LOOPBACK_V4));

    // An IPv4 peer on an IPv6 allocation: 443 (RFC 8656 §10.2, §11.2).
    let mut c = v6_client(&server);
    c.allocate();
    let peer = Peer::v4();
    assert_error(
        &c.create_permission(&[peer.addr]),
        &[443],
        "IPv4 peer on an IPv6 allocation",
    );
    assert_error(
        &c.channel_bind(0x4000, peer.addr),
        &[443],
        "ChannelBind to an IPv4 peer on an IPv6 allocation",
    );
}

on_both_backends!(
    ipv6_flow_on_loopback,
    ipv6_loopback_denied_without_allow_list,
    ipv6_relay_for_an_ipv4_client,
);
