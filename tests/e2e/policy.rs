//! Peer policy: default-deny in every spelling of an address, and what
//! `--allow-peer` opens.

use super::*;

fn peers_are_denied_by_default() {
    // No --allow-peer: loopback is denied like every other special range, in
    // every spelling. IPv4 forms are checked on an IPv4 allocation and IPv6
    // forms on an IPv6 one, so every answer must be exactly 403.
    let mut args = vec!["--realm", REALM, "--user", "alice:wonderland"];
    let v6 = dual_stack_args("peers_are_denied_by_default", &mut args);
    let server = Server::start(&args);
    let peer = Peer::v4();
    let port = peer.addr.port();

    let mut c = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy);
    c.allocate();
    let v4_targets = addrs(
        &[
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "0.1.2.3",
            "169.254.169.254",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "192.0.0.1",
            "198.18.0.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
        ],
        port,
    );
    let mut seen = assert_denied(&mut c, &v4_targets, "default policy, IPv4");
    // Port 0 is refused even where the address would be allowed.
    assert_error(
        &c.create_permission(&[sa("127.0.0.1:0")]),
        &[400, 403],
        "CreatePermission to port 0",
    );

    if v6 {
        let peer6 = Peer::bind(IpAddr::V6(Ipv6Addr::LOCALHOST));
        let mut c6 = v6_client(&server);
        c6.allocate();
        let mut v6_targets = vec![peer6.addr];
        v6_targets.extend(addrs(
            &[
                "[::ffff:127.0.0.1]",
                "[::127.0.0.1]",
                "[64:ff9b::7f00:1]",
                "[2002:7f00:1::]",
                "[2001:0:4136:e378:8000:63bf:80ff:fffe]",
                "[::ffff:169.254.169.254]",
                "[64:ff9b::a9fe:a9fe]",
                "[::ffff:10.0.0.1]",
                "[::]",
                "[fe80::1]",
                "[fc00::1]",
                "[fd00:ec2::254]",
                "[ff02::1]",
            ],
            port,
        ));
        seen.extend(assert_denied(&mut c6, &v6_targets, "default policy, IPv6"));
        peer6.expect_nothing("Send indication to a denied [::1] peer");
    }
    println!("{}", seen.join("\n"));
    // The loopback peer listens on 127.0.0.1:port (also reachable as
    // ::ffff:127.0.0.1:port from a dual-stack socket) and got nothing.
    peer.expect_nothing("Send indication to a denied loopback peer");
}

fn allow_list_opens_only_what_it_names() {
    let mut args = LAB_ARGS.to_vec();
    let v6 = dual_stack_args("allow_list_opens_only_what_it_names", &mut args);
    let server = Server::start(&args);
    let mut c = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy);
    c.allocate();
    let targets = addrs(
        &[
            "0.0.0.0",
            "169.254.169.254",
            "10.0.0.1",
            "192.168.0.1",
            "128.0.0.1",
        ],
        9,
    );
    // 128.0.0.1 is an ordinary public address: it must be allowed, not denied.
    let (denied, public) = targets.split_at(4);
    let mut seen = assert_denied(&mut c, denied, "with --allow-peer 127.0.0.0/8");
    assert_success(
        &c.create_permission(public),
        "CreatePermission to a public address",
    );
    if v6 {
        let mut c6 = v6_client(&server);
        c6.allocate();
        let targets = addrs(
            &[
                "[::1]",
                "[fe80::1]",
                "[::ffff:169.254.169.254]",
                "[64:ff9b::a00:1]",
            ],
            9,
        );
        seen.extend(assert_denied(
            &mut c6,
            &targets,
            "IPv6 with --allow-peer 127.0.0.0/8",
        ));
    }
    println!("{}", seen.join("\n"));
    // And 127.0.0.0/8 itself is open.
    let peer = Peer::v4();
    assert_success(
        &c.create_permission(&[peer.addr]),
        "CreatePermission to an allowed loopback peer",
    );
    c.send_indication(peer.addr, b"allowed");
    assert_eq!(peer.recv(WAIT).map(|x| x.0), Some(b"allowed".to_vec()));
}

fn one_denied_address_fails_the_whole_create_permission() {
    // RFC 8656 §10.2: all or nothing.
    let server = lab_server(&[]);
    let mut c = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy);
    c.allocate();
    let peer = Peer::v4();
    let r = c.create_permission(&[peer.addr, sa("10.0.0.1:9")]);
    assert_error(
        &r,
        &[403],
        "CreatePermission with one allowed and one denied peer",
    );
    c.send_indication(peer.addr, b"no permission was installed");
    peer.expect_nothing("Send indication after a refused CreatePermission");
}

on_both_backends!(
    peers_are_denied_by_default,
    allow_list_opens_only_what_it_names,
    one_denied_address_fails_the_whole_create_permission,
);
