//! Allocate and Refresh: RFC 8656 §7.

use super::*;

const C1: &str = "203.0.113.10:40000";

#[test]
fn binding_answers_with_the_mapped_address() {
    let mut h = Harness::new();
    let mut c = Client::new(C1, Cred::None);
    let r = c.request(&mut h, Method::Binding, &|_| {});
    assert_eq!(r.class(), Class::Success);
    assert_eq!(r.addr(attr::XOR_MAPPED_ADDRESS), Some(addr(C1)));
}

#[test]
fn allocate_without_credentials_gets_a_challenge_and_no_state() {
    let mut h = Harness::new();
    let mut c = Client::new(C1, Cred::None);
    let r = c.request(&mut h, Method::Allocate, &udp);
    assert_eq!(r.code(), Some(401));
    assert!(matches!(
        r.attr(attr::REALM),
        Some(Attribute::Realm(b"test.realm"))
    ));
    assert!(
        matches!(r.attr(attr::NONCE), Some(Attribute::Nonce(n)) if n.starts_with(b"obMatJos2"))
    );
    assert!(r.attr(attr::PASSWORD_ALGORITHMS).is_some());
    assert_eq!(h.relay.allocation_count(), 0);
    assert!(h.sockets.bound.is_empty());
}

#[test]
fn allocate_succeeds_with_relayed_mapped_and_default_lifetime() {
    let mut h = Harness::new();
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    let r = c.request(&mut h, Method::Allocate, &udp);
    assert_eq!(r.class(), Class::Success, "{:?}", r.code());
    let relayed = r.addr(attr::XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(relayed.ip(), IpAddr::from([192, 0, 2, 1]));
    assert!((50000..=50999).contains(&relayed.port()));
    assert_eq!(r.addr(attr::XOR_MAPPED_ADDRESS), Some(addr(C1)));
    assert_eq!(r.lifetime(), Some(600));
    // The response is signed with the same key.
    assert_signed_md5(&r, "alice", "alice-pw");
    assert_eq!(h.relay.allocation_count(), 1);
    assert_eq!(h.sockets.bound.values().collect::<Vec<_>>(), vec![&relayed]);
}

#[test]
fn retransmitted_allocate_gets_the_same_answer() {
    let mut h = Harness::new();
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    c.request(&mut h, Method::Binding, &|_| {});
    let first = c.request(&mut h, Method::Allocate, &udp);
    assert_eq!(first.class(), Class::Success);
    // Same bytes again (same transaction id) — the answer does not change.
    let tid = *first.msg().transaction_id();
    let again = c.request_tid(&mut h, Method::Allocate, tid, &udp);
    assert_eq!(again.class(), Class::Success);
    assert_eq!(
        again.addr(attr::XOR_RELAYED_ADDRESS),
        first.addr(attr::XOR_RELAYED_ADDRESS)
    );
    assert_eq!(h.relay.allocation_count(), 1);
    assert_eq!(h.sockets.bound.len(), 1);
}

#[test]
fn second_allocate_on_a_live_five_tuple_is_437() {
    let mut h = Harness::new();
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    c.allocate(&mut h);
    let r = c.request(&mut h, Method::Allocate, &udp);
    assert_eq!(r.code(), Some(437));
}

#[test]
fn requested_transport_is_required_and_only_udp_and_tcp_served() {
    let mut h = Harness::new();
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    let r = c.request(&mut h, Method::Allocate, &|_| {});
    assert_eq!(r.code(), Some(400));
    let r = c.request(&mut h, Method::Allocate, &|w| {
        w.u32(attr::REQUESTED_TRANSPORT, 132 << 24).unwrap()
    });
    assert_eq!(r.code(), Some(442));
    // RFC 6062 §5.1: TCP over a UDP control leg is 400 (tests/tcp.rs).
    let r = c.request(&mut h, Method::Allocate, &|w| {
        w.u32(attr::REQUESTED_TRANSPORT, 6 << 24).unwrap()
    });
    assert_eq!(r.code(), Some(400));
    assert_eq!(h.relay.allocation_count(), 0);
}

#[test]
fn lifetimes_are_capped_and_floored() {
    let mut h = Harness::with(Opts {
        max_lifetime: Duration::from_secs(1200),
        ..Opts::default()
    });
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    let r = c.request(&mut h, Method::Allocate, &|w| {
        udp(w);
        w.u32(attr::LIFETIME, 100_000).unwrap();
    });
    assert_eq!(r.lifetime(), Some(1200));
    // Below the default, the default applies (RFC 8656 §7.2).
    assert_eq!(c.refresh(&mut h, 30).lifetime(), Some(600));
    assert_eq!(c.refresh(&mut h, 900).lifetime(), Some(900));
}

#[test]
fn allocation_expires_on_the_fake_clock_and_refresh_extends_it() {
    let mut h = Harness::new();
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    c.allocate(&mut h);
    h.advance(599);
    assert_eq!(h.relay.allocation_count(), 1);
    assert_eq!(c.refresh(&mut h, 600).lifetime(), Some(600));
    h.advance(599);
    assert_eq!(h.relay.allocation_count(), 1);
    h.advance(2);
    assert_eq!(h.relay.allocation_count(), 0);
    assert!(h.sockets.bound.is_empty(), "the relay socket is closed");
    assert_eq!(h.relay.stats().allocations_expired, 1);
    assert_eq!(c.refresh(&mut h, 600).code(), Some(437));
}

#[test]
fn refresh_with_lifetime_zero_deletes() {
    let mut h = Harness::new();
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    c.allocate(&mut h);
    let r = c.refresh(&mut h, 0);
    assert_eq!(r.class(), Class::Success);
    assert_eq!(r.lifetime(), Some(0));
    assert_eq!(h.relay.allocation_count(), 0);
    assert!(h.sockets.bound.is_empty());
    // The 5-tuple is free again.
    c.allocate(&mut h);
}

#[test]
fn refresh_without_allocation_is_437_and_other_user_is_441() {
    let mut h = Harness::new();
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    assert_eq!(c.refresh(&mut h, 600).code(), Some(437));
    c.allocate(&mut h);
    let mut bob = Client::new(C1, md5("bob", "bob-pw"));
    assert_eq!(bob.refresh(&mut h, 600).code(), Some(441));
    assert_eq!(bob.permit(&mut h, PEER).code(), Some(441));
}

#[test]
fn ipv6_family_unsupported_is_440_and_supported_when_configured() {
    let mut h = Harness::new();
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    let v6req = |w: &mut MessageWriter<'_>| {
        udp(w);
        w.attr(&Attribute::RequestedAddressFamily(
            uturn_stun::AddressFamily::V6,
        ))
        .unwrap();
    };
    assert_eq!(
        c.request(&mut h, Method::Allocate, &v6req).code(),
        Some(440)
    );

    let mut h = Harness::with(Opts {
        relay_v6: true,
        ..Opts::default()
    });
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    let r = c.request(&mut h, Method::Allocate, &v6req);
    assert_eq!(r.class(), Class::Success);
    assert_eq!(r.relayed().len(), 1);
    assert_eq!(r.relayed()[0].ip(), IpAddr::V6(v6("2001:db8::1")));
}

#[test]
fn additional_address_family_gives_two_relayed_addresses() {
    let dual = |w: &mut MessageWriter<'_>| {
        udp(w);
        w.attr(&Attribute::AdditionalAddressFamily(
            uturn_stun::AddressFamily::V6,
        ))
        .unwrap();
    };
    let mut h = Harness::with(Opts {
        relay_v6: true,
        ..Opts::default()
    });
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    let r = c.request(&mut h, Method::Allocate, &dual);
    assert_eq!(r.class(), Class::Success);
    let relayed = r.relayed();
    assert_eq!(relayed.len(), 2);
    assert!(relayed[0].is_ipv4() && relayed[1].is_ipv6());
    assert_eq!(h.sockets.bound.len(), 2);

    // Without an IPv6 relay: IPv4 only, and ADDRESS-ERROR-CODE 440 says why.
    let mut h = Harness::new();
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    let r = c.request(&mut h, Method::Allocate, &dual);
    assert_eq!(r.class(), Class::Success);
    assert_eq!(r.relayed().len(), 1);
    assert!(matches!(
        r.attr(attr::ADDRESS_ERROR_CODE),
        Some(Attribute::AddressErrorCode { code: 440, .. })
    ));
}

#[test]
fn address_family_attribute_combinations_are_400() {
    let mut h = Harness::with(Opts {
        relay_v6: true,
        ..Opts::default()
    });
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    let both = |w: &mut MessageWriter<'_>| {
        udp(w);
        w.attr(&Attribute::RequestedAddressFamily(
            uturn_stun::AddressFamily::V4,
        ))
        .unwrap();
        w.attr(&Attribute::AdditionalAddressFamily(
            uturn_stun::AddressFamily::V6,
        ))
        .unwrap();
    };
    assert_eq!(c.request(&mut h, Method::Allocate, &both).code(), Some(400));
    let add_v4 = |w: &mut MessageWriter<'_>| {
        udp(w);
        w.attr(&Attribute::AdditionalAddressFamily(
            uturn_stun::AddressFamily::V4,
        ))
        .unwrap();
    };
    assert_eq!(
        c.request(&mut h, Method::Allocate, &add_v4).code(),
        Some(400)
    );
}

#[test]
fn even_port_and_reservation_token() {
    let mut h = Harness::new();
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    let r = c.request(&mut h, Method::Allocate, &|w| {
        udp(w);
        w.attr(&Attribute::EvenPort(true)).unwrap();
    });
    assert_eq!(r.class(), Class::Success);
    let rtp = r.addr(attr::XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(rtp.port() % 2, 0);
    let token = match r.attr(attr::RESERVATION_TOKEN) {
        Some(Attribute::ReservationToken(t)) => *t,
        other => panic!("no RESERVATION-TOKEN: {other:?}"),
    };
    // The reserved port goes to the allocation that presents the token.
    let mut rtcp = Client::new("203.0.113.10:40001", md5("alice", "alice-pw"));
    let r2 = rtcp.request(&mut h, Method::Allocate, &move |w| {
        udp(w);
        w.attr(&Attribute::ReservationToken(&token)).unwrap();
    });
    assert_eq!(r2.class(), Class::Success, "{:?}", r2.code());
    assert_eq!(
        r2.addr(attr::XOR_RELAYED_ADDRESS).unwrap().port(),
        rtp.port() + 1
    );

    // A token cannot be used twice, and never with EVEN-PORT.
    let mut third = Client::new("203.0.113.10:40002", md5("alice", "alice-pw"));
    let reuse = move |w: &mut MessageWriter<'_>| {
        udp(w);
        w.attr(&Attribute::ReservationToken(&token)).unwrap();
    };
    assert_eq!(
        third.request(&mut h, Method::Allocate, &reuse).code(),
        Some(508)
    );
    let with_even = move |w: &mut MessageWriter<'_>| {
        udp(w);
        w.attr(&Attribute::EvenPort(false)).unwrap();
        w.attr(&Attribute::ReservationToken(&token)).unwrap();
    };
    assert_eq!(
        third.request(&mut h, Method::Allocate, &with_even).code(),
        Some(400)
    );
}

#[test]
fn reservation_expires_after_thirty_seconds() {
    let mut h = Harness::with(Opts {
        ports: 50000..=50001,
        ..Opts::default()
    });
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    let r = c.request(&mut h, Method::Allocate, &|w| {
        udp(w);
        w.attr(&Attribute::EvenPort(true)).unwrap();
    });
    assert_eq!(r.addr(attr::XOR_RELAYED_ADDRESS).unwrap().port(), 50000);
    // 50001 is reserved: nobody else gets it…
    let mut other = Client::new("203.0.113.11:1", md5("bob", "bob-pw"));
    assert_eq!(
        other.request(&mut h, Method::Allocate, &udp).code(),
        Some(508)
    );
    // …until the reservation lapses.
    h.advance(31);
    assert_eq!(other.allocate(&mut h).port(), 50001);
}

#[test]
fn dont_fragment_sets_the_flag_on_the_relay_socket() {
    let mut h = Harness::new();
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    let r = c.request(&mut h, Method::Allocate, &|w| {
        udp(w);
        w.attr(&Attribute::DontFragment).unwrap();
    });
    assert_eq!(r.class(), Class::Success);
    assert_eq!(
        h.sockets.df,
        vec![r.addr(attr::XOR_RELAYED_ADDRESS).unwrap()]
    );
    let mut other = Client::new("203.0.113.12:1", md5("bob", "bob-pw"));
    other.allocate(&mut h);
    assert_eq!(h.sockets.df.len(), 1, "only when asked");
}

#[test]
fn port_in_use_elsewhere_is_skipped_and_exhaustion_is_508() {
    let mut h = Harness::with(Opts {
        ports: 50000..=50001,
        ..Opts::default()
    });
    h.sockets.taken.push(addr("192.0.2.1:50000"));
    let mut a = Client::new(C1, md5("alice", "alice-pw"));
    assert_eq!(a.allocate(&mut h).port(), 50001);
    let mut b = Client::new("203.0.113.11:1", md5("bob", "bob-pw"));
    assert_eq!(b.request(&mut h, Method::Allocate, &udp).code(), Some(508));
}

#[test]
fn draining_refuses_new_allocations_with_508_and_serves_the_old_ones() {
    let mut h = Harness::new();
    let mut old = Client::new(C1, md5("alice", "alice-pw"));
    old.request(&mut h, Method::Binding, &|_| {});
    let first = old.request(&mut h, Method::Allocate, &udp);
    assert_eq!(first.class(), Class::Success);
    h.relay.start_drain(None);
    assert!(h.relay.is_draining());

    let mut new = Client::new("203.0.113.11:40001", md5("alice", "alice-pw"));
    let r = new.request(&mut h, Method::Allocate, &udp);
    assert_eq!(r.code(), Some(508));
    assert_eq!(r.attr(attr::ALTERNATE_SERVER), None);
    assert_eq!(h.relay.allocation_count(), 1);
    let i = crate::turn::ERROR_CODES
        .iter()
        .position(|&c| c == 508)
        .unwrap();
    assert_eq!(h.relay.stats().allocations_rejected[i], 1);

    // The live allocation: a retransmitted Allocate gets its answer again,
    // and Refresh and permissions still work.
    let tid = *first.msg().transaction_id();
    let again = old.request_tid(&mut h, Method::Allocate, tid, &udp);
    assert_eq!(again.class(), Class::Success);
    assert_eq!(old.refresh(&mut h, 600).class(), Class::Success);
    assert_eq!(old.permit(&mut h, PEER).class(), Class::Success);
    assert_eq!(old.refresh(&mut h, 0).class(), Class::Success);
    assert_eq!(h.relay.allocation_count(), 0);
}

#[test]
fn draining_with_an_alternate_answers_300_signed_for_the_same_family() {
    let mut h = Harness::with(Opts {
        relay_v6: true,
        ..Opts::default()
    });
    let alternate: SocketAddr = "192.0.2.99:3478".parse().unwrap();
    h.relay.start_drain(Some(alternate));
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    let r = c.request(&mut h, Method::Allocate, &udp);
    assert_eq!(r.code(), Some(300));
    assert_eq!(r.addr(attr::ALTERNATE_SERVER), Some(alternate));
    // Signed, so that the client may trust ALTERNATE-SERVER.
    assert_signed_md5(&r, "alice", "alice-pw");
    // An IPv6 client is not sent to an IPv4 server.
    let mut v6 = Client::new("[2001:db8::5]:40000", md5("alice", "alice-pw"));
    assert_eq!(v6.request(&mut h, Method::Allocate, &udp).code(), Some(508));
    assert_eq!(h.relay.allocation_count(), 0);
    assert!(h.sockets.bound.is_empty());
}

#[test]
fn gauges_count_live_permissions_and_channels() {
    let mut h = Harness::new();
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    c.allocate(&mut h);
    assert_eq!(c.permit(&mut h, PEER).class(), Class::Success);
    assert_eq!(c.bind(&mut h, 0x4001, PEER2).class(), Class::Success);
    let g = h.relay.gauges(h.now().at);
    assert_eq!((g.allocations, g.permissions, g.channels), (1, 2, 1));
    // Permissions last 300 s, channels 600 s.
    h.advance(301);
    let g = h.relay.gauges(h.now().at);
    assert_eq!((g.allocations, g.permissions, g.channels), (1, 0, 1));
}

/// `r` carries a valid MESSAGE-INTEGRITY under `user`'s MD5 key.
fn assert_signed_md5(r: &Resp, user: &str, password: &str) {
    let key = derive_key(
        PasswordAlgorithm::Md5,
        user.as_bytes(),
        REALM.as_bytes(),
        password.as_bytes(),
    );
    assert_eq!(
        uturn_stun::integrity::check_sha1(&r.msg(), key.as_bytes()),
        uturn_stun::integrity::Integrity::Valid,
        "not signed with {user}'s key"
    );
}

#[test]
fn a_reload_lowers_the_lifetime_for_new_allocations_and_refreshes() {
    let mut h = Harness::new();
    let mut old = Client::new(C1, md5("alice", "alice-pw"));
    old.request(&mut h, Method::Binding, &|_| {});
    assert_eq!(
        old.request(&mut h, Method::Allocate, &udp).lifetime(),
        Some(600)
    );
    let settings = Settings {
        max_lifetime: Duration::from_secs(120),
        ..h.relay.settings().clone()
    };
    let now = h.now().at;
    assert_eq!(h.relay.apply(settings, now), 0, "the policy is the same");
    let mut new = Client::new("203.0.113.11:40001", md5("alice", "alice-pw"));
    assert_eq!(
        new.request(&mut h, Method::Allocate, &udp).lifetime(),
        Some(120)
    );
    // The live allocation keeps its 600 s until it refreshes.
    h.advance(300);
    assert_eq!(h.relay.allocation_count(), 1, "the 120 s one expired");
    assert_eq!(old.refresh(&mut h, 600).lifetime(), Some(120));
}

/// Found by the `relay` fuzz target: with EVEN-PORT (R) and a second family,
/// the second family's socket could take the very port the reservation then
/// claimed, and the reservation's expiry freed a port still in use.
#[test]
fn an_even_port_reservation_is_not_handed_to_the_second_family() {
    let mut h = Harness::with(Opts {
        ports: 50000..=50001,
        relay_v6: true,
        ..Opts::default()
    });
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    let r = c.request(&mut h, Method::Allocate, &|w| {
        udp(w);
        w.attr(&Attribute::EvenPort(true)).unwrap();
        w.attr(&Attribute::AdditionalAddressFamily(
            uturn_stun::AddressFamily::V6,
        ))
        .unwrap();
    });
    assert_eq!(r.class(), Class::Success, "{:?}", r.code());
    // 50000 for IPv4, 50001 reserved: no port is left for IPv6, which the
    // response says with ADDRESS-ERROR-CODE instead of taking 50001.
    assert_eq!(r.relayed(), vec![SocketAddr::from(([192, 0, 2, 1], 50000))]);
    assert!(r.attr(attr::ADDRESS_ERROR_CODE).is_some());
    assert!(
        h.sockets.bound.values().all(|a| a.port() != 50001),
        "the reserved port was bound: {:?}",
        h.sockets.bound
    );
    // After the reservation lapses, 50001 goes to the next allocation once.
    h.advance(31);
    let mut other = Client::new("203.0.113.11:1", md5("bob", "bob-pw"));
    assert_eq!(other.allocate(&mut h).port(), 50001);
}
