//! Binding, the whole relay flow on one and several workers, and the rules of
//! Allocate, ChannelBind and requests without an allocation.

use super::*;

fn binding_request_returns_xor_mapped_address() {
    let server = lab_server(&[]);
    let mut c = TurnClient::new(server.addr, "", "", AuthMode::Legacy);
    // Once with FINGERPRINT, once without.
    for fp in [true, false] {
        c.fingerprint = fp;
        let r = c.request_unsigned(Method::Binding, |_| Ok(()));
        assert_success(&r, "Binding");
        assert_eq!(r.method(), Method::Binding);
        assert_eq!(
            r.xor_addr(attr::XOR_MAPPED_ADDRESS),
            Some(c.local_addr()),
            "XOR-MAPPED-ADDRESS"
        );
    }
}

// ---------------------------------------------------------------------------
// The whole authenticated flow
// ---------------------------------------------------------------------------

fn full_flow_long_term_md5() {
    let server = lab_server(&[]);
    alice_flow(server.addr);
}

fn full_flow_single_worker() {
    let server = lab_server(&["--workers", "1"]);
    alice_flow(server.addr);
}

fn several_clients_at_once_on_four_workers() {
    // Different 5-tuples hash to different shards; each must still see its own
    // relay traffic.
    let server = lab_server(&["--workers", "4"]);
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let addr = server.addr;
            std::thread::spawn(move || alice_flow(addr))
        })
        .collect();
    for h in handles {
        h.join()
            .expect("a client flow failed (see its panic above)");
    }
}

fn wrong_password_and_unknown_user_get_401() {
    let server = lab_server(&[]);
    for (user, pw) in [("alice", "not-the-password"), ("mallory", "wonderland")] {
        let mut c = TurnClient::new(server.addr, user, pw, AuthMode::Legacy);
        let r = c.try_allocate(|_| Ok(()));
        assert_error(&r, &[401], &format!("Allocate as {user}:{pw}"));
        assert!(
            r.has(attr::NONCE) && r.has(attr::REALM),
            "a 401 carries a fresh challenge: {}",
            r.describe()
        );
        assert!(
            !r.has(attr::MESSAGE_INTEGRITY),
            "a 401 for bad credentials cannot be signed: {}",
            r.describe()
        );
    }
}

fn allocate_rules_on_one_five_tuple() {
    let server = lab_server(&["--max-lifetime", "120"]);
    let mut c = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy);
    c.challenge(Method::Allocate);

    // No REQUESTED-TRANSPORT: 400 (RFC 8656 §7.2).
    let r = c.request(Method::Allocate, |_| Ok(()));
    assert_error(&r, &[400], "Allocate without REQUESTED-TRANSPORT");
    // A transport other than UDP and TCP: 442; TCP from a UDP client: 400
    // (RFC 6062 §5.1: TCP allocations are made over TCP or TLS).
    let r = c.request(Method::Allocate, |w| {
        w.raw(attr::REQUESTED_TRANSPORT, &[132, 0, 0, 0])
    });
    assert_error(&r, &[442], "Allocate with REQUESTED-TRANSPORT SCTP");
    let r = c.request(Method::Allocate, |w| {
        w.raw(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0])
    });
    assert_error(&r, &[400], "Allocate with REQUESTED-TRANSPORT TCP over UDP");

    // Requested lifetime is capped by --max-lifetime.
    let r = c.try_allocate(|w| w.u32(attr::LIFETIME, 3600));
    assert_success(&r, "Allocate LIFETIME 3600");
    let lt = r.lifetime().expect("LIFETIME");
    assert!(
        lt > 0 && lt <= 120,
        "LIFETIME {lt} not capped by --max-lifetime 120"
    );

    // A second Allocate on the same 5-tuple: 437 (RFC 8656 §7.2).
    let r = c.request(Method::Allocate, |w| {
        w.raw(attr::REQUESTED_TRANSPORT, &REQUESTED_TRANSPORT_UDP)
    });
    assert_error(&r, &[437], "second Allocate on the same 5-tuple");

    // Invalid channel numbers are refused: 400 (RFC 8656 §11.2).
    let peer = Peer::v4();
    for ch in [0x3fff, 0x5000, 0x7fff] {
        let r = c.channel_bind(ch, peer.addr);
        assert_error(&r, &[400], &format!("ChannelBind 0x{ch:04x}"));
    }
    // One channel, one peer (RFC 8656 §11.2).
    assert_success(&c.channel_bind(0x4001, peer.addr), "ChannelBind 0x4001");
    let other = Peer::v4();
    assert_error(
        &c.channel_bind(0x4001, other.addr),
        &[400],
        "rebinding 0x4001 to another peer",
    );
    assert_error(
        &c.channel_bind(0x4002, peer.addr),
        &[400],
        "binding a second channel to the same peer",
    );
    assert_success(
        &c.channel_bind(0x4001, peer.addr),
        "refreshing the same binding",
    );
}

fn requests_without_allocation_get_437() {
    let server = lab_server(&[]);
    let mut c = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy);
    c.challenge(Method::Allocate);
    let peer = Peer::v4();
    assert_error(
        &c.create_permission(&[peer.addr]),
        &[437],
        "CreatePermission without an allocation",
    );
    assert_error(
        &c.channel_bind(0x4000, peer.addr),
        &[437],
        "ChannelBind without an allocation",
    );
    assert_error(&c.refresh(600), &[437], "Refresh without an allocation");
    c.send_indication(peer.addr, b"no allocation");
    c.send_channel(0x4000, b"no allocation", false);
    peer.expect_nothing("Send/ChannelData without an allocation");
}

on_both_backends!(
    binding_request_returns_xor_mapped_address,
    full_flow_long_term_md5,
    full_flow_single_worker,
    several_clients_at_once_on_four_workers,
    wrong_password_and_unknown_user_get_401,
    allocate_rules_on_one_five_tuple,
    requests_without_allocation_get_437,
);
