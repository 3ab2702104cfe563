//! CreatePermission / ChannelBind rules, peer policy and quotas.

use super::*;

const C1: &str = "203.0.113.30:42000";

fn ready(h: &mut Harness) -> Client {
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    c.allocate(h);
    c
}

#[test]
fn channel_bind_rules() {
    let mut h = Harness::new();
    let mut c = ready(&mut h);
    // Numbers outside 0x4000–0x4FFF → 400.
    assert_eq!(c.bind(&mut h, 0x3FFF, PEER).code(), Some(400));
    assert_eq!(c.bind(&mut h, 0x5000, PEER).code(), Some(400));
    assert_eq!(c.bind(&mut h, 0x4000, PEER).class(), Class::Success);
    assert_eq!(c.bind(&mut h, 0x4FFF, PEER2).class(), Class::Success);
    // Rebinding the same pair refreshes; crossing pairs is 400.
    assert_eq!(c.bind(&mut h, 0x4000, PEER).class(), Class::Success);
    assert_eq!(
        c.bind(&mut h, 0x4000, PEER2).code(),
        Some(400),
        "number bound to another peer"
    );
    assert_eq!(
        c.bind(&mut h, 0x4100, PEER).code(),
        Some(400),
        "peer bound to another number"
    );
    // Missing attributes → 400.
    let no_peer = c.request(&mut h, Method::ChannelBind, &|w| {
        w.u32(attr::CHANNEL_NUMBER, 0x4200 << 16).unwrap()
    });
    assert_eq!(no_peer.code(), Some(400));
    let p = addr(PEER);
    let no_number = c.request(&mut h, Method::ChannelBind, &move |w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, p).unwrap()
    });
    assert_eq!(no_number.code(), Some(400));
}

#[test]
fn create_permission_needs_a_peer_and_an_allocation() {
    let mut h = Harness::new();
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    assert_eq!(c.permit(&mut h, PEER).code(), Some(437));
    c.allocate(&mut h);
    assert_eq!(
        c.request(&mut h, Method::CreatePermission, &|_| {}).code(),
        Some(400)
    );
    // Several peers in one request.
    let (a, b) = (addr(PEER), addr(PEER2));
    let r = c.request(&mut h, Method::CreatePermission, &move |w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, a).unwrap();
        w.xor_address(attr::XOR_PEER_ADDRESS, b).unwrap();
    });
    assert_eq!(r.class(), Class::Success);
}

#[test]
fn denied_peers_get_403_and_nothing_is_installed() {
    let mut h = Harness::new();
    let mut c = ready(&mut h);
    for peer in [
        "0.0.0.0:1",
        "127.0.0.1:1",
        "10.0.0.1:1",
        "169.254.169.254:80",
        "192.168.1.1:1",
        "100.64.0.1:1",
        "192.0.2.1:50001",
        "224.0.0.1:1",
    ] {
        assert_eq!(c.permit(&mut h, peer).code(), Some(403), "{peer}");
        assert_eq!(c.bind(&mut h, 0x4444, peer).code(), Some(403), "{peer}");
    }
    // A mixed request is refused whole.
    let (ok, bad) = (addr(PEER), addr("10.0.0.1:1"));
    let r = c.request(&mut h, Method::CreatePermission, &move |w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, ok).unwrap();
        w.xor_address(attr::XOR_PEER_ADDRESS, bad).unwrap();
    });
    assert_eq!(r.code(), Some(403));
    let send = c.send_indication("10.0.0.1:1", b"x");
    assert_eq!(h.client(c.addr, &send), None);
    assert!(h.relay.stats().drop_forbidden_peer >= 1);
    let send_ok_looking = c.send_indication(PEER, b"x");
    assert_eq!(
        h.client(c.addr, &send_ok_looking),
        None,
        "PEER was never permitted"
    );
}

#[test]
fn ipv6_peers_on_an_ipv4_allocation_are_443() {
    let mut h = Harness::new();
    let mut c = ready(&mut h);
    assert_eq!(c.permit(&mut h, "[2001:db8::5]:1").code(), Some(443));
    assert_eq!(c.bind(&mut h, 0x4001, "[2001:db8::5]:1").code(), Some(443));
}

#[test]
fn ipv6_mapped_forms_of_denied_addresses_are_denied() {
    let mut h = Harness::with(Opts {
        relay_v6: true,
        ..Opts::default()
    });
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    let r = c.request(&mut h, Method::Allocate, &|w| {
        udp(w);
        w.attr(&Attribute::RequestedAddressFamily(
            uturn_stun::AddressFamily::V6,
        ))
        .unwrap();
    });
    assert_eq!(r.class(), Class::Success);
    for peer in [
        "[::ffff:127.0.0.1]:1",
        "[::127.0.0.1]:1",
        "[64:ff9b::7f00:1]:1",
        "[2002:7f00:1::]:1",
        "[::1]:1",
        "[fe80::1]:1",
    ] {
        assert_eq!(c.permit(&mut h, peer).code(), Some(403), "{peer}");
    }
}

#[test]
fn quotas_per_user_total_permissions_channels() {
    let quotas = Quotas {
        allocations_per_user: 2,
        total_allocations: 3,
        permissions_per_allocation: 2,
        channels_per_allocation: 1,
        ..Quotas::default()
    };
    let mut h = Harness::with(Opts {
        quotas,
        ..Opts::default()
    });
    let mut a1 = Client::new("203.0.113.31:1", md5("alice", "alice-pw"));
    let mut a2 = Client::new("203.0.113.31:2", md5("alice", "alice-pw"));
    let mut a3 = Client::new("203.0.113.31:3", md5("alice", "alice-pw"));
    a1.allocate(&mut h);
    a2.allocate(&mut h);
    assert_eq!(a3.request(&mut h, Method::Allocate, &udp).code(), Some(486));
    let mut b1 = Client::new("203.0.113.32:1", md5("bob", "bob-pw"));
    let mut b2 = Client::new("203.0.113.32:2", md5("bob", "bob-pw"));
    b1.allocate(&mut h);
    assert_eq!(b2.request(&mut h, Method::Allocate, &udp).code(), Some(508));
    // Quotas follow the allocation's life: deleting one frees a place.
    a1.refresh(&mut h, 0);
    b2.allocate(&mut h);

    assert_eq!(a2.permit(&mut h, PEER).class(), Class::Success);
    assert_eq!(a2.permit(&mut h, PEER2).class(), Class::Success);
    assert_eq!(a2.permit(&mut h, "198.51.100.9:1").code(), Some(508));
    assert_eq!(
        a2.permit(&mut h, PEER).class(),
        Class::Success,
        "refreshing is not a new permission"
    );
    assert_eq!(a2.bind(&mut h, 0x4001, PEER).class(), Class::Success);
    assert_eq!(a2.bind(&mut h, 0x4002, PEER2).code(), Some(508));
}

/// A reload that narrows the peer policy ends the permissions and channels
/// toward the peers it now refuses, at once and in both directions; the
/// others keep working.
#[test]
fn a_narrowed_policy_ends_permissions_and_channels_at_once() {
    let mut h = Harness::new();
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    let relayed = c.allocate(&mut h);
    assert_eq!(c.bind(&mut h, 0x4000, PEER).class(), Class::Success);
    assert_eq!(c.permit(&mut h, PEER2).class(), Class::Success);
    let to_peer = |h: &mut Harness| h.forwarded(c.addr, &channel_data(0x4000, b"x")).is_some();
    assert!(to_peer(&mut h), "relays before the reload");

    // Only PEER2 (198.51.100.8) is allowed now; PEER (198.51.100.7) falls
    // back to the built-in deny list (TEST-NET-2).
    let narrowed = PeerPolicy::new(vec!["198.51.100.8/32".parse().unwrap()], vec![], &[]);
    let now = h.now().at;
    // PEER's permission and its channel end.
    let settings = Settings {
        policy: std::sync::Arc::new(narrowed),
        ..h.relay.settings().clone()
    };
    assert_eq!(h.relay.apply(settings, now), 2);
    assert!(!to_peer(&mut h), "ChannelData to a now-refused peer");
    assert_eq!(h.peer(relayed, addr(PEER), b"in"), None, "peer data in");
    assert!(
        h.peer(relayed, addr(PEER2), b"in").is_some(),
        "PEER2 still permitted"
    );
    assert_eq!(h.relay.gauges(now).permissions, 1);
    assert_eq!(h.relay.gauges(now).channels, 0);
    // The channel number cools down rather than being free at once.
    assert_eq!(c.bind(&mut h, 0x4000, PEER2).code(), Some(400));
}
