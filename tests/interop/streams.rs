//! TURN over TCP and TLS through uturn with clients it did not write:
//! coturn's `turnutils_uclient` (`-t`, `-t -S`) and aioice (TCP, TLS with
//! ALPN). Chromium's runs over TCP and TLS are in chromium.rs.

use super::*;

/// `uturn_for_interop` with a TLS listener and metrics too; returns the
/// server, its TCP and TLS addresses and the certificate clients should
/// trust (None when openssl is missing and the test may be skipped).
fn uturn_for_interop_streams(test: &str) -> Option<(Server, SocketAddr, SocketAddr, PathBuf)> {
    let cert = test_cert(test)?;
    let server = uturn_for_interop_with_cert(
        &cert,
        &["--listen-tls", "127.0.0.1:0", "--metrics", "127.0.0.1:0"],
    );
    let (tcp, tls) = (
        stream_listener(&server, "tcp"),
        stream_listener(&server, "tls"),
    );
    Some((server, tcp, tls, cert.cert))
}

fn turnutils_uclient_over_tcp_and_tls_through_uturn() {
    // -t: TURN over TCP; -S with it: over TLS. Send indications (-s), since
    // uclient's channel numbers are mostly outside RFC 8656's range (see
    // turnutils_uclient_channels_through_uturn). uclient does not check the
    // server's certificate.
    let t = "turnutils_uclient_over_tcp_and_tls_through_uturn";
    let (Some(uclient), Some(peer_bin)) = (tool(t, "turnutils_uclient"), tool(t, "turnutils_peer"))
    else {
        return;
    };
    let Some((server, tcp, tls, _cert)) = uturn_for_interop_streams(t) else {
        return;
    };
    let (_peer, peer_port) = start_turnutils_peer(&peer_bin);
    let cmd = uclient_cmd_over(
        &uclient,
        &["-t"],
        tcp,
        peer_port,
        3,
        100,
        true,
        STATIC_CREDS,
    );
    run_uclient_expect_all(cmd, 300, "uturn over TCP");
    // Over TLS uclient sometimes stops counting before the last echoes are
    // read: in about one run in three it reports a few dozen of 300 lost,
    // against coturn's turnserver too (one lost in three runs there), while
    // uturn's own counters show every echo handed to the connection and the
    // connections closed with nothing left unsent. So uclient's total must
    // be most of it, and uturn's count must be all of it.
    let cmd = uclient_cmd_over(
        &uclient,
        &["-t", "-S"],
        tls,
        peer_port,
        3,
        100,
        true,
        STATIC_CREDS,
    );
    let line = show_cmd(&cmd);
    let out = run_bounded(cmd, Duration::from_secs(60));
    let all = format!("{}{}", out.stdout, out.stderr);
    let totals = parse_uclient(&all);
    println!("$ {line}\n{}\n→ {totals:?}", tail(&all, 8));
    assert!(
        out.status.is_some_and(|s| s.success()),
        "uclient over TLS: `{line}` failed:\n{}",
        tail(&all, 40)
    );
    assert_eq!(totals.sent, 300, "uclient over TLS: messages sent");
    assert!(
        totals.received * 10 >= totals.sent * 9,
        "uclient over TLS received {} of {}:\n{}",
        totals.received,
        totals.sent,
        tail(&all, 40)
    );
    let to_client = "uturn_packets_total{direction=\"peer_to_client\",transport=\"tls\"}";
    assert_eq!(
        metric(&server, to_client),
        Some(300),
        "every echo sent to a TLS client"
    );
    let dropped = "uturn_stream_dropped_total{reason=\"send_queue_full\"}";
    assert_eq!(metric(&server, dropped), Some(0));
    server_alive_check(&server);
}

fn aioice_over_tcp_and_tls_through_uturn() {
    let t = "aioice_over_tcp_and_tls_through_uturn";
    let Some((server, tcp, tls, cert)) = uturn_for_interop_streams(t) else {
        return;
    };
    for (addr, transport) in [(tcp, "tcp"), (tls, "tls")] {
        let Some(out) = run_aioice_over(t, addr, USER, PASS, 200, transport, Some(&cert)) else {
            return;
        };
        assert_aioice_ok(&out, 200, &format!("uturn over {transport}"));
        if transport == "tls" {
            let r = parse_result(&out.stdout).unwrap();
            assert_eq!(
                r.get("alpn").map(String::as_str),
                Some("stun.turn"),
                "ALPN stun.turn offered by aioice must be selected: {r:?}"
            );
        }
    }
    server_alive_check(&server);
}

fn turnutils_uclient_tcp_allocations_through_uturn() {
    // -T: TCP allocations (RFC 6062) on a TCP control connection; -y: the
    // clients are each other's peers, so each pair is joined by a Connect
    // from one relayed address to the other's, announced there by a
    // ConnectionAttempt, and both sides bound by data connections (which
    // land on either shard). Every message must come back.
    let t = "turnutils_uclient_tcp_allocations_through_uturn";
    let Some(uclient) = tool(t, "turnutils_uclient") else {
        return;
    };
    let Some((server, tcp, _tls, _cert)) = uturn_for_interop_streams(t) else {
        return;
    };
    let mut cmd = Command::new(&uclient);
    cmd.args([
        "-T", "-t", "-y", "-m", "2", "-n", "50", "-l", "120", "-z", "5",
    ])
    .args(STATIC_CREDS)
    .args(["-p", &tcp.port().to_string()])
    .arg(tcp.ip().to_string());
    run_uclient_expect_all(cmd, 100, "uturn, TCP allocations");
    server_alive_check(&server);
}

fn turnutils_uclient_passive_tcp_allocations_as_coturn() {
    // -T -P: TCP allocations whose peer connects in (ConnectionAttempt),
    // uclient itself acting as the peer. uclient counts half its messages
    // lost in this mode against coturn's own turnserver too (its peer side
    // never echoes), so the check is side by side: uturn delivers at least
    // what coturn does, which is more than nothing, and the peer connection
    // was announced and bound through uturn.
    let t = "turnutils_uclient_passive_tcp_allocations_as_coturn";
    let (Some(uclient), Some(turnserver)) = (tool(t, "turnutils_uclient"), tool(t, "turnserver"))
    else {
        return;
    };
    let Some((server, tcp, _tls, _cert)) = uturn_for_interop_streams(t) else {
        return;
    };
    let Some(cert) = test_cert(t) else {
        return;
    };
    let coturn = start_coturn_with(&turnserver, Some(&cert));
    let run = |to: SocketAddr| {
        let mut cmd = Command::new(&uclient);
        cmd.args([
            "-T", "-P", "-t", "-m", "2", "-n", "20", "-l", "120", "-z", "5",
        ])
        .args(STATIC_CREDS)
        .args(["-p", &to.port().to_string()])
        .args(["-e", "127.0.0.1", "-r", "9"])
        .arg(to.ip().to_string());
        let line = show_cmd(&cmd);
        let out = run_bounded(cmd, Duration::from_secs(60));
        let all = format!("{}{}", out.stdout, out.stderr);
        let totals = parse_uclient(&all);
        println!("$ {line}\n{}\n→ {totals:?}", tail(&all, 6));
        totals
    };
    let theirs = run(coturn.addr);
    let ours = run(tcp);
    assert_eq!(ours.sent, 40, "uturn: messages sent");
    assert!(theirs.received > 0, "coturn delivered nothing: {theirs:?}");
    assert!(
        ours.received >= theirs.received,
        "uturn delivered less than coturn: {ours:?} against {theirs:?}"
    );
    let announced = metric(
        &server,
        "uturn_tcp_connections_total{outcome=\"peer_announced\"}",
    );
    let bound = metric(&server, "uturn_tcp_connections_total{outcome=\"bound\"}");
    assert!(
        announced.is_some_and(|n| n > 0) && bound == announced,
        "peers announced ({announced:?}) and bound ({bound:?})"
    );
    server_alive_check(&server);
}

on_every_stream_io!(
    turnutils_uclient_over_tcp_and_tls_through_uturn,
    turnutils_uclient_tcp_allocations_through_uturn,
    turnutils_uclient_passive_tcp_allocations_as_coturn,
    aioice_over_tcp_and_tls_through_uturn,
);
