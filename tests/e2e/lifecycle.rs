//! Running a node: reload without dropping allocations, drain on
//! SIGTERM/SIGINT, the metrics endpoint, and what the logs may say.

use std::path::Path;
use std::time::Instant;

use super::*;

/// Binds channel `ch` to a fresh loopback peer and checks one ChannelData
/// each way. Returns the peer.
fn bind_channel(c: &mut TurnClient, ch: u16) -> Peer {
    let peer = Peer::v4();
    assert_success(&c.create_permission(&[peer.addr]), "CreatePermission");
    assert_success(&c.channel_bind(ch, peer.addr), "ChannelBind");
    echo(c, &peer, ch, "after ChannelBind");
    peer
}

/// One ChannelData client → peer and one peer → client on channel `ch`.
fn echo(c: &mut TurnClient, peer: &Peer, ch: u16, when: &str) {
    let relayed = c.relayed.expect("allocated");
    let out = format!("out {when}");
    c.send_channel(ch, out.as_bytes(), false);
    match peer.recv(WAIT) {
        Some((d, from)) => {
            assert_eq!(d, out.as_bytes(), "{when}: payload to the peer");
            assert_eq!(from, relayed, "{when}: source seen by the peer");
        }
        None => panic!("{when}: ChannelData did not reach the peer"),
    }
    let back = format!("back {when}");
    peer.send_to(back.as_bytes(), relayed);
    match c.recv_relayed(WAIT) {
        Some(Relayed::Channel { number, data }) => {
            assert_eq!(number, ch, "{when}: channel number");
            assert_eq!(data, back.as_bytes(), "{when}: payload to the client");
        }
        other => panic!("{when}: expected ChannelData back, got {other:?}"),
    }
}

/// A configuration with these REST secrets, loopback peers allowed and a
/// control socket.
fn reload_config(secrets: &[&str], socket: &Path, log_level: &str, max_lifetime: u32) -> String {
    let list = secrets
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "listen = [\"127.0.0.1:0\"]\nrelay_ips = [\"127.0.0.1\"]\nrealm = \"{REALM}\"\n\
         rest_secrets = [{list}]\ncontrol_socket = {:?}\nlog_level = \"{log_level}\"\n\
         max_lifetime_secs = {max_lifetime}\n\
         [peers]\nallow = [\"127.0.0.0/8\"]\n",
        socket.display().to_string()
    )
}

fn rest_client(server: &Server, secret: &str, id: &str) -> TurnClient {
    let (u, p) = rest_creds(secret, unix_now() + 600, id);
    TurnClient::new(server.addr, &u, &p, AuthMode::Legacy)
}

fn reload_keeps_allocations_and_rotates_secrets() {
    let path = scratch_path("reload.toml");
    let socket = scratch_path("reload.sock");
    std::fs::write(&path, reload_config(&["old-secret"], &socket, "info", 3600)).unwrap();
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let mut first = rest_client(&server, "old-secret", "carol");
    first.allocate();
    let peer = bind_channel(&mut first, 0x4001);

    // Rotation, step 1: the new secret beside the old one, by SIGHUP.
    std::fs::write(
        &path,
        reload_config(&["new-secret", "old-secret"], &socket, "debug", 300),
    )
    .unwrap();
    signal(server.pid(), Signal::SIGHUP);
    wait_for_log(&server, "configuration reloaded", 1);
    echo(&mut first, &peer, 0x4001, "after the first reload");
    let mut on_new = rest_client(&server, "new-secret", "dave");
    on_new.allocate();
    assert_eq!(on_new.lifetime, Some(300), "max_lifetime_secs reloaded");
    let mut on_old = rest_client(&server, "old-secret", "erin");
    on_old.allocate();
    if std::env::var_os("RUST_LOG").is_none() {
        // The file's log_level applies on reload: debug shows allocations.
        wait_for_log(&server, "allocation created", 1);
    }

    // Step 2: the old secret removed, through `uturn reload`.
    std::fs::write(&path, reload_config(&["new-secret"], &socket, "info", 300)).unwrap();
    let out = run_uturn(&["reload", "--socket", socket.to_str().unwrap()]);
    assert_eq!(
        out.status.and_then(|s| s.code()),
        Some(0),
        "uturn reload: {}{}",
        out.stdout,
        out.stderr
    );
    assert!(out.stdout.contains("1 REST secrets"), "{}", out.stdout);
    let mut late = rest_client(&server, "old-secret", "frank");
    assert_error(
        &late.try_allocate(|_| Ok(())),
        &[401],
        "Allocate with the removed secret",
    );
    rest_client(&server, "new-secret", "grace").allocate();
    // The first allocation carried traffic across both reloads.
    echo(&mut first, &peer, 0x4001, "after the second reload");

    // A file that does not validate is refused; the old configuration stays.
    std::fs::write(&path, "realm = 5\n").unwrap();
    let out = run_uturn(&["reload", "--config", &format!("{}", path.display())]);
    assert_ne!(out.status.and_then(|s| s.code()), Some(0));
    let out = run_uturn(&["reload", "--socket", socket.to_str().unwrap()]);
    assert_eq!(
        out.status.and_then(|s| s.code()),
        Some(1),
        "a rejected reload exits 1"
    );
    assert!(
        out.stderr.contains("realm"),
        "names the key: {}",
        out.stderr
    );
    wait_for_log(&server, "reload rejected", 1);
    rest_client(&server, "new-secret", "heidi").allocate();
    echo(&mut first, &peer, 0x4001, "after a rejected reload");

    let out = run_uturn(&["status", "--socket", socket.to_str().unwrap()]);
    assert!(
        out.stdout.contains("allocations 5;") && out.stdout.contains("reloads ok 2, failed 1"),
        "status: {}{}",
        out.stdout,
        out.stderr
    );
    let st = server.stop_with(Signal::SIGTERM).expect("stopped");
    assert!(st.success(), "exit status {st}");
    assert!(!socket.exists(), "the control socket is removed at exit");
}

fn drain_refuses_new_allocations_and_serves_old_ones() {
    let server = lab_server(&["--drain-timeout", "30", "--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
    let mut c = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy);
    c.allocate();
    let peer = bind_channel(&mut c, 0x4002);

    signal(server.pid(), Signal::SIGTERM);
    wait_for_log(&server, "draining", 1);
    let mut late = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy);
    assert_error(
        &late.try_allocate(|_| Ok(())),
        &[508],
        "Allocate while draining",
    );
    echo(&mut c, &peer, 0x4002, "while draining");
    assert_success(&c.refresh(300), "Refresh while draining");
    let (_, body) = http_get(metrics, "GET", "/metrics");
    assert_eq!(series(&body, "uturn_draining"), Some(1), "{body}");
    assert_eq!(series(&body, "uturn_allocations"), Some(1), "{body}");
    assert_eq!(
        series(&body, "uturn_allocations_rejected_total{code=\"508\"}"),
        Some(1)
    );

    // The last allocation ends: the server exits 0 by itself.
    assert_success(&c.refresh(0), "Refresh 0");
    let started = Instant::now();
    let st = server
        .wait_exit(Duration::from_secs(10))
        .expect("exits once drained");
    assert!(st.success(), "exit status {st}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

fn drain_answers_300_with_the_alternate_and_a_second_signal_exits() {
    let server = lab_server(&[
        "--drain-timeout",
        "60",
        "--alternate-server",
        "127.0.0.1:3479",
    ]);
    let mut c = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy);
    c.allocate();
    signal(server.pid(), Signal::SIGINT);
    wait_for_log(&server, "draining", 1);
    let mut late = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy);
    let r = late.try_allocate(|_| Ok(()));
    assert_error(&r, &[300], "Allocate while draining with an alternate");
    late.check_signed(&r);
    assert_eq!(r.alternate_server(), Some(sa("127.0.0.1:3479")));
    // A second signal does not wait for the allocation.
    let st = server
        .stop_with(Signal::SIGTERM)
        .expect("a second signal exits at once");
    assert_eq!(st.code(), Some(1), "a cut-short drain exits 1");
}

fn drain_ends_at_the_timeout() {
    let server = lab_server(&["--drain-timeout", "1"]);
    let mut c = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy);
    c.allocate();
    signal(server.pid(), Signal::SIGTERM);
    let st = server
        .wait_exit(Duration::from_secs(10))
        .expect("exits after the drain timeout");
    assert!(st.success(), "exit status {st}");
}

fn metrics_count_traffic_without_naming_anyone() {
    let server = lab_server(&["--metrics", "127.0.0.1:0", "--workers", "2"]);
    let metrics = metrics_addr(&server);
    let mut bad = TurnClient::new(server.addr, "alice", "not-the-password", AuthMode::Legacy);
    assert_error(&bad.try_allocate(|_| Ok(())), &[401], "wrong password");
    let mut c = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy);
    c.allocate();
    assert_error(&c.try_allocate(|_| Ok(())), &[437], "second Allocate");
    let peer = bind_channel(&mut c, 0x4003); // one packet each way
    for i in 0..4 {
        echo(&mut c, &peer, 0x4003, &format!("round {i}"));
    }
    // A ChannelData on an unbound channel is dropped and counted: poll until
    // the count shows (scrapes less than 0.5 s apart share a snapshot).
    c.send_channel(0x4999, b"nowhere", false);
    let no_permission = "uturn_dropped_total{reason=\"no_permission\"}";
    let deadline = Instant::now() + Duration::from_secs(5);
    let (status, body) = loop {
        let (status, body) = http_get(metrics, "GET", "/metrics");
        if series(&body, no_permission) == Some(1) || Instant::now() >= deadline {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.contains(" 200 "), "{status}");
    let want = [
        ("uturn_allocations", 1),
        ("uturn_permissions", 1),
        ("uturn_channels", 1),
        ("uturn_allocations_created_total{transport=\"udp\"}", 1),
        ("uturn_allocations_created_total{transport=\"tcp\"}", 0),
        (
            "uturn_packets_total{direction=\"client_to_peer\",transport=\"udp\"}",
            5,
        ),
        (
            "uturn_packets_total{direction=\"peer_to_client\",transport=\"udp\"}",
            5,
        ),
        ("uturn_connections{transport=\"tcp\"}", 0),
        ("uturn_dropped_total{reason=\"no_permission\"}", 1),
        ("uturn_allocations_rejected_total{code=\"437\"}", 1),
        ("uturn_auth_failures_total{reason=\"bad_integrity\"}", 1),
        ("uturn_shard_up{shard=\"0\"}", 1),
        ("uturn_shard_up{shard=\"1\"}", 1),
        ("uturn_workers", 2),
    ];
    for (name, value) in want {
        assert_eq!(series(&body, name), Some(value), "{name} in\n{body}");
    }
    let backend = server.io_backend.clone().unwrap();
    assert_eq!(
        series(
            &body,
            &format!("uturn_io_backend_info{{backend=\"{backend}\"}}")
        ),
        Some(1)
    );
    assert!(series(&body, "process_resident_memory_bytes").is_some_and(|v| v > 0));
    let shard_sum: u64 = (0..2)
        .map(|s| {
            series(
                &body,
                &format!("uturn_shard_packets_total{{shard=\"{s}\",direction=\"client_to_peer\"}}"),
            )
            .unwrap()
        })
        .sum();
    assert_eq!(shard_sum, 5, "per-shard series add up to the total");
    // Nobody is named: no user, no client or peer address.
    assert!(!body.contains("alice"));
    assert!(!body.contains(&c.local_addr().to_string()));
    assert!(!body.contains(&peer.addr.to_string()));
    assert!(http_get(metrics, "GET", "/nope").0.contains(" 404 "));
    assert!(http_get(metrics, "POST", "/metrics").0.contains(" 405 "));
}

fn logs_name_clients_only_when_asked() {
    let quiet = lab_server(&["--log-level", "debug"]);
    let mut c = TurnClient::new(quiet.addr, "alice", "wonderland", AuthMode::Legacy);
    c.allocate();
    wait_for_log(&quiet, "allocation created", 1);
    let text = quiet.stderr_text();
    assert!(text.contains("<redacted>"), "{text}");
    assert!(!text.contains("alice"), "username in the log:\n{text}");
    let client = c.local_addr().to_string();
    assert!(
        !text.contains(&client),
        "client address in the log:\n{text}"
    );

    let told = lab_server(&[
        "--log-level",
        "debug",
        "--log-client-details",
        "--log-format",
        "json",
    ]);
    let mut c = TurnClient::new(told.addr, "alice", "wonderland", AuthMode::Legacy);
    c.allocate();
    wait_for_log(&told, "allocation created", 1);
    let text = told.stderr_text();
    let line = text
        .lines()
        .find(|l| l.contains("allocation created"))
        .unwrap();
    assert!(
        line.starts_with('{') && line.ends_with('}') && line.contains("\"level\":\"DEBUG\""),
        "not a JSON log line: {line}"
    );
    assert!(line.contains("alice"), "{line}");
    assert!(line.contains(&c.local_addr().to_string()), "{line}");
}

/// SECURITY.md rule 15: a second uturn on an address the first serves exits 2
/// naming the address, and the first keeps every client (before the fix both
/// printed `ready` and the kernel split the first one's clients between them).
fn a_second_instance_on_the_same_address_exits_and_the_first_keeps_its_clients() {
    let first = lab_server(&[]);
    // Several clients, so that both of the first server's workers hold some.
    let mut clients: Vec<(TurnClient, Peer)> = (0..8)
        .map(|_| {
            let mut c = TurnClient::new(first.addr, "alice", "wonderland", AuthMode::Legacy);
            c.allocate();
            let peer = bind_channel(&mut c, 0x4000);
            (c, peer)
        })
        .collect();

    let listen = first.addr.to_string();
    let mut args = LAB_ARGS.to_vec();
    args.extend([
        "--listen",
        &listen,
        "--relay-ip",
        "127.0.0.1",
        "--workers",
        "2",
    ]);
    let backend = current_backend().expect("run on a backend");
    args.extend(["--io-backend", backend]);
    let second = run_uturn(&args);
    assert_eq!(
        second.status.and_then(|s| s.code()),
        Some(2),
        "the second instance must exit 2\nstdout:\n{}\nstderr:\n{}",
        second.stdout,
        second.stderr
    );
    assert!(!second.stdout.contains("uturn: ready"), "{}", second.stdout);
    assert!(
        second.stderr.contains(&format!("udp {listen}"))
            && second.stderr.contains("another process already holds it"),
        "the error names the address and says why:\n{}",
        second.stderr
    );

    for (i, (c, peer)) in clients.iter_mut().enumerate() {
        echo(
            c,
            peer,
            0x4000,
            &format!("client {i} after the second start"),
        );
        assert_success(&c.refresh(600), &format!("client {i}: Refresh"));
    }
    // A client that arrives now also reaches the first instance.
    alice_flow(first.addr);
}

/// SECURITY.md rule 1: a REST credential past its expiry is refused on every
/// authenticated request of a live allocation (Refresh, CreatePermission,
/// ChannelBind), counted as expired_credential; Refresh 0 still deletes.
fn an_expired_rest_credential_cannot_keep_an_allocation_alive() {
    let server = Server::start(&[
        "--realm",
        REALM,
        "--rest-secret",
        "short-lived-secret",
        "--allow-peer",
        "127.0.0.0/8",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let expiry = unix_now() + 2;
    let (u, p) = rest_creds("short-lived-secret", expiry, "alice");
    let mut c = TurnClient::new(server.addr, &u, &p, AuthMode::Legacy);
    c.allocate();
    let peer = bind_channel(&mut c, 0x4000);
    // Past the expiry (the server compares whole unix seconds).
    while unix_now() <= expiry {
        std::thread::sleep(Duration::from_millis(100));
    }
    let other = Peer::v4();
    for (what, r) in [
        ("Refresh(3600)", c.refresh(3600)),
        ("CreatePermission", c.create_permission(&[other.addr])),
        ("ChannelBind", c.channel_bind(0x4001, other.addr)),
    ] {
        assert_error(&r, &[401], &format!("{what} with an expired credential"));
    }
    // A fresh nonce does not help: the credential itself has expired.
    let r = c.challenge(Method::Refresh);
    assert_error(&r, &[401], "unsigned Refresh");
    assert_error(&c.refresh(600), &[401], "Refresh(600) with a fresh nonce");
    let (_, body) = http_get(metrics_addr(&server), "GET", "/metrics");
    let counted = series(
        &body,
        "uturn_auth_failures_total{reason=\"expired_credential\"}",
    )
    .unwrap_or(0);
    assert!(
        counted >= 4,
        "expired_credential counted {counted}:\n{body}"
    );

    // Refresh 0 still deletes; the relay then forwards nothing more.
    assert_success(&c.refresh(0), "Refresh(0) with an expired credential");
    c.send_channel(0x4000, b"after the delete", false);
    peer.expect_nothing("ChannelData after the allocation was deleted");
    // Scrapes less than 0.5 s apart share a snapshot: poll for the gauge.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, body) = http_get(metrics_addr(&server), "GET", "/metrics");
        match series(&body, "uturn_allocations") {
            Some(0) => break,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            n => panic!("uturn_allocations {n:?} after Refresh(0):\n{body}"),
        }
    }
}

on_both_backends!(
    an_expired_rest_credential_cannot_keep_an_allocation_alive,
    a_second_instance_on_the_same_address_exits_and_the_first_keeps_its_clients,
    reload_keeps_allocations_and_rotates_secrets,
    drain_refuses_new_allocations_and_serves_old_ones,
    drain_answers_300_with_the_alternate_and_a_second_signal_exits,
    drain_ends_at_the_timeout,
    metrics_count_traffic_without_naming_anyone,
    logs_name_clients_only_when_asked,
);
