//! Authentication paths, unknown attributes, rate limits, malformed input.

use super::*;
use proptest::prelude::*;

const C1: &str = "203.0.113.40:43000";

#[test]
fn unknown_comprehension_required_attribute_is_420_with_the_list() {
    let mut h = Harness::new();
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    let r = c.request(&mut h, Method::Allocate, &|w| {
        udp(w);
        w.raw(0x7F01, b"????").unwrap();
        w.raw(0xC001, b"optional").unwrap();
    });
    assert_eq!(r.code(), Some(420));
    match r.attr(attr::UNKNOWN_ATTRIBUTES) {
        Some(Attribute::UnknownAttributes(list)) => {
            assert_eq!(
                uturn_stun::attr::unknown_attributes(list).collect::<Vec<_>>(),
                vec![0x7F01]
            );
        }
        other => panic!("no UNKNOWN-ATTRIBUTES: {other:?}"),
    }
    assert_eq!(h.relay.allocation_count(), 0);
    // Binding too.
    let mut anon = Client::new("203.0.113.41:1", Cred::None);
    let r = anon.request(&mut h, Method::Binding, &|w| w.raw(0x0031, b"").unwrap());
    assert_eq!(r.code(), Some(420));
}

#[test]
fn wrong_password_is_401_and_counted() {
    let mut h = Harness::new();
    let mut c = Client::new(C1, md5("alice", "wrong"));
    let r = c.request(&mut h, Method::Allocate, &udp);
    assert_eq!(r.code(), Some(401));
    assert_eq!(h.relay.allocation_count(), 0);
    assert!(h.relay.stats().auth_failures >= 1);
}

#[test]
fn stale_nonce_is_438_and_the_client_recovers() {
    let mut h = Harness::new();
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    c.allocate(&mut h);
    h.advance(500);
    assert_eq!(
        c.refresh(&mut h, 600).class(),
        Class::Success,
        "nonce from t=0 still valid"
    );
    h.advance(200); // the nonce (600 s) is stale now; the allocation (until t=1100) is not
                    // The request() helper retries once on 438 with the fresh nonce.
    let tid = c.tid();
    let pkt = c.build(Method::Refresh, tid, &|w| {
        w.u32(attr::LIFETIME, 600).unwrap()
    });
    let r = Resp {
        bytes: h.reply_bytes(c.addr, &pkt).unwrap(),
    };
    assert_eq!(r.code(), Some(438));
    assert!(r.attr(attr::NONCE).is_some());
    assert_eq!(c.refresh(&mut h, 600).class(), Class::Success);
}

#[test]
fn sha256_password_algorithm_works() {
    let mut h = Harness::new();
    let mut c = Client::new(
        C1,
        Cred::Sha256 {
            user: "alice".into(),
            password: "alice-pw".into(),
        },
    );
    let relayed = c.allocate(&mut h);
    assert!(relayed.port() >= 50000);
    assert_eq!(c.permit(&mut h, PEER).class(), Class::Success);
}

#[test]
fn an_expired_rest_credential_gets_401_on_every_request_but_a_deleting_refresh() {
    let mut h = Harness::new();
    let mut c = Client::new(C1, rest_cred(UNIX0 + 5, "carol", SECRET));
    c.allocate(&mut h);
    assert_eq!(c.permit(&mut h, PEER).class(), Class::Success, "in time");
    assert_eq!(c.bind(&mut h, 0x4000, PEER).class(), Class::Success);
    h.advance(10);
    let i = crate::auth::AuthFailure::ExpiredCredential.index();
    type Ask = dyn Fn(&mut Client, &mut Harness) -> Resp;
    let requests: [(&str, &Ask); 4] = [
        ("Refresh(3600)", &|c, h| c.refresh(h, 3600)),
        ("Refresh(600)", &|c, h| c.refresh(h, 600)),
        ("CreatePermission", &|c, h| c.permit(h, "198.51.100.77:9")),
        ("ChannelBind", &|c, h| c.bind(h, 0x4001, PEER)),
    ];
    for (what, ask) in requests {
        let before = h.relay.stats().auth_failures_by_reason[i];
        let r = ask(&mut c, &mut h);
        assert_eq!(r.code(), Some(401), "{what} with an expired credential");
        assert!(r.attr(attr::NONCE).is_some(), "{what}: 401 carries a nonce");
        // Counted under expired_credential (once per try: the client
        // retries once with the fresh nonce of the first 401).
        let after = h.relay.stats().auth_failures_by_reason[i];
        assert!(after > before, "{what}: not counted as expired_credential");
    }
    // The allocation was not extended: it ends at its first lifetime.
    assert_eq!(h.relay.allocation_count(), 1);
    // A Refresh to lifetime 0 still deletes it.
    let r = c.refresh(&mut h, 0);
    assert_eq!(r.class(), Class::Success, "Refresh(0): {:?}", r.code());
    assert_eq!(h.relay.allocation_count(), 0);
    assert_eq!(h.relay.stats().allocations_deleted, 1);
}

#[test]
fn rest_credentials_expire_at_allocate_but_refresh_keeps_working_until_then() {
    let mut h = Harness::new();
    let mut c = Client::new(C1, rest_cred(UNIX0 + 180, "carol", SECRET));
    c.allocate(&mut h);
    h.advance(120);
    assert_eq!(
        c.refresh(&mut h, 600).class(),
        Class::Success,
        "refresh of a live allocation with a credential still valid"
    );
    let mut late = Client::new("203.0.113.40:43001", rest_cred(UNIX0 + 60, "carol", SECRET));
    assert_eq!(
        late.request(&mut h, Method::Allocate, &udp).code(),
        Some(401)
    );
    let mut forged = Client::new(
        "203.0.113.40:43002",
        rest_cred(UNIX0 + 6000, "carol", "not-the-secret"),
    );
    assert_eq!(
        forged.request(&mut h, Method::Allocate, &udp).code(),
        Some(401)
    );
}

#[test]
fn attributes_after_message_integrity_are_ignored() {
    let mut h = Harness::new();
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    c.request(&mut h, Method::Binding, &|_| {});
    let _ = c.request(&mut h, Method::Allocate, &|w| w.raw(0x7F01, b"x").unwrap()); // learn the nonce
    let tid = c.tid();
    let mut pkt = c.build(Method::Allocate, tid, &udp);
    // Append LIFETIME=3000 and an unknown required attribute after MI, fixing the header length.
    pkt.extend_from_slice(&[0x00, 0x0D, 0x00, 0x04, 0x00, 0x00, 0x0B, 0xB8]);
    pkt.extend_from_slice(&[0x7F, 0x02, 0x00, 0x00]);
    let len = (pkt.len() - 20) as u16;
    pkt[2..4].copy_from_slice(&len.to_be_bytes());
    let r = Resp {
        bytes: h.reply_bytes(c.addr, &pkt).unwrap(),
    };
    assert_eq!(r.class(), Class::Success, "{:?}", r.code());
    assert_eq!(
        r.lifetime(),
        Some(600),
        "the LIFETIME after MESSAGE-INTEGRITY was not used"
    );
}

#[test]
fn unauthenticated_replies_are_rate_limited_per_source() {
    let mut h = Harness::with(Opts {
        rate: 5,
        ..Opts::default()
    });
    let c = Client::new(C1, Cred::None);
    let pkt = c.build(Method::Allocate, [1; 12], &udp);
    let answered = (0..50)
        .filter(|_| h.reply_bytes(c.addr, &pkt).is_some())
        .count();
    assert!((5..=6).contains(&answered), "answered {answered} of 50");
    assert!(h.relay.stats().drop_rate_limited >= 44);
    // Another source is not affected.
    assert!(h.reply_bytes(addr("203.0.113.99:1"), &pkt).is_some());
    // Tokens come back with time.
    h.advance(2);
    assert!(h.reply_bytes(c.addr, &pkt).is_some());
}

#[test]
fn a_reload_restarts_the_rate_limiter_only_when_the_rate_changes() {
    let mut h = Harness::with(Opts {
        rate: 5,
        ..Opts::default()
    });
    let c = Client::new(C1, Cred::None);
    let pkt = c.build(Method::Allocate, [3; 12], &udp);
    while h.reply_bytes(c.addr, &pkt).is_some() {}
    // The same rate and burst: the spent source stays refused.
    let same = h.relay.settings().clone();
    let now = h.now().at;
    h.relay.apply(same, now);
    assert!(h.reply_bytes(c.addr, &pkt).is_none(), "limiter kept");
    // A new burst: every source starts with a full bucket.
    let wider = Settings {
        unauth_burst: 6,
        ..h.relay.settings().clone()
    };
    h.relay.apply(wider, now);
    assert!(h.reply_bytes(c.addr, &pkt).is_some(), "limiter restarted");
}

#[test]
fn unauthenticated_replies_are_not_much_larger_than_requests() {
    let mut h = Harness::new();
    let c = Client::new(C1, Cred::None);
    let pkt = c.build(Method::Allocate, [2; 12], &udp);
    let reply = h.reply_bytes(c.addr, &pkt).unwrap();
    // The challenge carries REALM, NONCE and PASSWORD-ALGORITHMS; keep it small.
    assert!(reply.len() <= 160, "401 is {} bytes", reply.len());
}

#[test]
fn responses_and_indications_from_clients_are_dropped() {
    let mut h = Harness::new();
    let tid = [3; 12];
    for class in [Class::Success, Class::Error, Class::Indication] {
        let mut buf = [0u8; 64];
        let mut w = MessageWriter::new(&mut buf, Method::Allocate, class, &tid).unwrap();
        udp(&mut w);
        let n = w.finish();
        assert_eq!(h.client(addr(C1), &buf[..n]), None);
    }
    let mut buf = [0u8; 64];
    let w = MessageWriter::new(&mut buf, Method::Other(0x0AB), Class::Request, &tid).unwrap();
    let n = w.finish();
    let r = Resp {
        bytes: h.reply_bytes(addr(C1), &buf[..n]).unwrap(),
    };
    assert_eq!(r.code(), Some(400));
}

#[test]
fn bad_fingerprint_is_dropped() {
    let mut h = Harness::new();
    let mut buf = [0u8; 64];
    let mut w = MessageWriter::new(&mut buf, Method::Binding, Class::Request, &[4; 12]).unwrap();
    w.fingerprint().unwrap();
    let n = w.finish();
    assert!(h.reply_bytes(addr(C1), &buf[..n]).is_some());
    buf[n - 1] ^= 1;
    assert_eq!(h.client(addr(C1), &buf[..n]), None);
}

fn flow_still_works(h: &mut Harness, port: u16) {
    let mut c = Client::new(&format!("203.0.113.50:{port}"), md5("alice", "alice-pw"));
    c.allocate(h);
    assert_eq!(c.bind(h, 0x4001, PEER).class(), Class::Success);
    assert!(h.forwarded(c.addr, &channel_data(0x4001, b"ok")).is_some());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A panic is a bug, never bad input; and junk creates no state.
    #[test]
    fn arbitrary_datagrams_never_panic_or_create_state(
        pkts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..20),
        stunlike in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 1..20),
    ) {
        let mut h = Harness::new();
        for p in &pkts {
            let _ = h.client(addr(C1), p);
        }
        for tail in &stunlike {
            // A plausible header in front of random attributes.
            let mut p = vec![0x00, 0x03, 0, 0, 0x21, 0x12, 0xA4, 0x42];
            p.extend_from_slice(&[9; 12]);
            p.extend_from_slice(tail);
            let len = (p.len() - 20) as u16;
            p[2..4].copy_from_slice(&len.to_be_bytes());
            let _ = h.client(addr(C1), &p);
            let mut cd = vec![0x40, 0x01];
            cd.extend_from_slice(tail);
            let _ = h.client(addr(C1), &cd);
        }
        prop_assert_eq!(h.relay.allocation_count(), 0);
        prop_assert!(h.sockets.bound.is_empty());
        flow_still_works(&mut h, 1);
    }

    #[test]
    fn arbitrary_peer_datagrams_never_panic(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..1500), 1..10),
        token in any::<u64>(),
    ) {
        let mut h = Harness::new();
        let mut c = Client::new(C1, md5("alice", "alice-pw"));
        let relayed = c.allocate(&mut h);
        c.permit(&mut h, PEER);
        for p in &payloads {
            let _ = h.peer(relayed, addr(PEER), p);
            let mut buf = vec![0u8; PEER_HEADROOM + p.len() + PEER_TAILROOM];
            let now = h.now();
            let _ = h.relay.handle_peer(now, RelayToken(token >> 1), addr(PEER), &mut buf, p.len());
            // A length that does not fit the buffer is refused, not trusted.
            let _ = h.relay.handle_peer(now, RelayToken(token >> 1), addr(PEER), &mut buf, p.len() + 4096);
        }
    }
}

#[test]
fn auth_failures_are_counted_by_reason() {
    let mut h = Harness::new();
    use crate::auth::AuthFailure;
    let reason = |h: &Harness, r: AuthFailure| h.relay.stats().auth_failures_by_reason[r.index()];
    let mut c = Client::new(C1, md5("alice", "wrong"));
    assert_eq!(c.request(&mut h, Method::Allocate, &udp).code(), Some(401));
    assert_eq!(reason(&h, AuthFailure::BadIntegrity), 1);
    let mut c = Client::new("203.0.113.42:1", md5("mallory", "x"));
    assert_eq!(c.request(&mut h, Method::Allocate, &udp).code(), Some(401));
    assert_eq!(reason(&h, AuthFailure::UnknownUser), 1);
    // The first challenge round is not a failure.
    assert_eq!(h.relay.stats().auth_failures, 2);
    let total: u64 = h.relay.stats().auth_failures_by_reason.iter().sum();
    assert_eq!(total, 2);
}
