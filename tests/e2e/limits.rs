//! Lifetimes, stale nonces, quotas and rate limits.

use super::*;

fn allocation_expires_after_its_lifetime() {
    let server = lab_server(&["--max-lifetime", "2"]);
    let mut c = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy);
    c.allocate();
    assert_eq!(c.lifetime, Some(2), "LIFETIME with --max-lifetime 2");
    let peer = Peer::v4();
    assert_success(&c.create_permission(&[peer.addr]), "CreatePermission");
    // Send indications do not refresh the allocation; poll until they stop
    // being relayed (bounded: 10 s).
    let start = std::time::Instant::now();
    let mut relayed_after = Duration::ZERO;
    while start.elapsed() < Duration::from_secs(10) {
        c.send_indication(peer.addr, b"still there?");
        if peer.recv(Duration::from_millis(300)).is_none() {
            break;
        }
        relayed_after = start.elapsed();
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the allocation was still relaying after 10 s"
    );
    println!("last relayed {relayed_after:?} after the allocation was made (lifetime 2 s)");
    assert_error(&c.refresh(60), &[437], "Refresh of an expired allocation");
    // The 5-tuple is free again.
    c.allocate();
}

fn nonce_bound_to_another_client_gets_438() {
    let server = lab_server(&[]);
    let mut a = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy);
    a.challenge(Method::Allocate);
    let mut b = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy);
    b.set_challenge(
        a.realm.clone(),
        a.nonce.clone(),
        a.password_algorithms.clone(),
    );
    let req = b.build(
        Method::Allocate,
        Class::Request,
        &TurnClient::new_tid(),
        true,
        |w| w.raw(attr::REQUESTED_TRANSPORT, &REQUESTED_TRANSPORT_UDP),
    );
    let r = b.transact(&req).unwrap();
    assert_error(&r, &[438], "Allocate with another client's nonce");
    let fresh = r
        .raw(attr::NONCE)
        .unwrap_or_else(|| panic!("438 without a new NONCE: {}", r.describe()));
    assert_ne!(fresh, a.nonce, "438 must carry a new nonce");
    // With the nonce from the 438 it works.
    b.take_challenge(&r);
    assert_success(&b.try_allocate(|_| Ok(())), "Allocate after the 438");
}

fn allocation_quota_per_user_gets_486() {
    let path = scratch_path("quota.toml");
    std::fs::write(&path, "[quotas]\nallocations_per_user = 2\n").unwrap();
    let server = lab_server(&[
        "--config",
        path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--relay-ip",
        "127.0.0.1",
    ]);
    let mut first = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy);
    first.allocate();
    TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy).allocate();
    let mut third = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy);
    assert_error(
        &third.try_allocate(|_| Ok(())),
        &[486],
        "third allocation with allocations_per_user = 2",
    );
    // The refusal is logged at info level (the default), naming the quota and
    // its value, with the user redacted.
    let needle = "allocation refused: quota reached";
    let log = wait_for_log(&server, needle, 1);
    let line = log.lines().find(|l| l.contains(needle)).unwrap_or_default();
    assert!(
        line.contains("quotas.allocations_per_user")
            && line.contains("limit=2")
            && line.contains("<redacted>")
            && !line.contains("alice"),
        "{line}"
    );
    // Deleting one gives the slot back.
    assert_success(&first.refresh(0), "Refresh 0");
    assert_success(
        &third.try_allocate(|_| Ok(())),
        "Allocate after one was deleted",
    );
}

fn unauthenticated_replies_are_rate_limited() {
    let path = scratch_path("rate.toml");
    std::fs::write(
        &path,
        "[rate_limit]\nunauth_per_second = 5\nunauth_burst = 10\n",
    )
    .unwrap();
    let server = lab_server(&[
        "--config",
        path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--relay-ip",
        "127.0.0.1",
    ]);
    let mut c = TurnClient::new(server.addr, "", "", AuthMode::Legacy);
    let sent = 100;
    for _ in 0..sent {
        let req = c.build(
            Method::Allocate,
            Class::Request,
            &TurnClient::new_tid(),
            false,
            |w| w.raw(attr::REQUESTED_TRANSPORT, &REQUESTED_TRANSPORT_UDP),
        );
        c.send_raw(&req);
    }
    let answered = c.drain(Duration::from_millis(500));
    println!("{answered} of {sent} unsigned Allocate requests were answered (burst 10, 5/s)");
    assert!(answered >= 1, "no 401 at all");
    assert!(
        answered <= sent / 2,
        "{answered} of {sent} 401s: no per-source rate limit"
    );
}

on_both_backends!(
    allocation_expires_after_its_lifetime,
    nonce_bound_to_another_client_gets_438,
    allocation_quota_per_user_gets_486,
    unauthenticated_replies_are_rate_limited,
);
