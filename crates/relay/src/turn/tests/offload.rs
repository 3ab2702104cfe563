//! Routes for the XDP path (offload.rs): recorded when the socket path
//! starts, keeps or stops relaying a channel's ChannelData, and nothing
//! while offload is off. DESIGN.md invariant 7: the XDP path forwards what
//! the socket path would have, no more.

use super::*;
use uturn_stun::ChannelData;

const C1: &str = "203.0.113.40:43000";
const C2: &str = "203.0.113.41:43001";
const V6_PEER: &str = "[2001:db8:5::7]:5000";

fn take(h: &mut Harness) -> Vec<RouteChange> {
    let mut out = Vec::new();
    h.relay.take_route_changes(&mut out);
    out
}

/// `secs` after the harness's start.
fn at(h: &Harness, secs: u64) -> Instant {
    h.t0 + Duration::from_secs(secs)
}

fn key(client: &str, channel: u16, peer: &str, relayed: SocketAddr) -> RouteKey {
    RouteKey {
        listener: ListenerId(0),
        client: addr(client),
        channel,
        peer: addr(peer),
        relayed,
    }
}

fn traffic(packets: u64, bytes: u64) -> Traffic {
    Traffic { packets, bytes }
}

fn up(key: RouteKey, expires: Instant) -> RouteChange {
    RouteChange::Up(Route { key, expires })
}

/// A UDP client of `h` with an allocation; its relayed address.
fn allocated(h: &mut Harness, at: &str) -> (Client, SocketAddr) {
    let mut c = Client::new(at, md5("alice", "alice-pw"));
    let relayed = c.allocate(h);
    (c, relayed)
}

/// Whether the socket path relays `key`'s channel both ways right now, as
/// the key says: the client's ChannelData to `key.peer` from the relay
/// socket bound at `key.relayed`, and the peer's datagram back as
/// ChannelData on `key.channel`.
fn socket_path_relays(h: &mut Harness, key: &RouteKey) -> bool {
    let to_peer = h.forwarded(key.client, &channel_data(key.channel, b"out"));
    let to_client = h.peer(key.relayed, key.peer, b"in");
    match (to_peer, to_client) {
        (Some((token, peer, bytes)), Some(back)) => {
            assert_eq!(peer, key.peer);
            assert_eq!(h.sockets.bound.get(&token), Some(&key.relayed));
            assert_eq!(bytes, b"out");
            let cd = ChannelData::parse(&back).expect("ChannelData to the client");
            assert_eq!((cd.number, cd.payload), (key.channel, &b"in"[..]));
            true
        }
        (None, Some(back)) => {
            // Peer data may still reach the client as a Data indication
            // (permission live, channel not): not something XDP forwards.
            assert!(ChannelData::parse(&back).is_err(), "half a route");
            false
        }
        (Some(_), None) => panic!("half a route: client → peer only"),
        (None, None) => false,
    }
}

#[test]
fn nothing_is_recorded_or_allocated_while_offload_is_off() {
    let mut h = Harness::new();
    let (mut c, _) = allocated(&mut h, C1);
    assert_eq!(c.bind(&mut h, 0x4001, PEER).class(), Class::Success);
    assert_eq!(c.permit(&mut h, PEER).class(), Class::Success);
    assert_eq!(c.refresh(&mut h, 600).class(), Class::Success);
    h.advance(301);
    assert_eq!(c.refresh(&mut h, 0).class(), Class::Success);
    assert_eq!(take(&mut h), vec![]);
    assert_eq!(h.relay.offload.changes.capacity(), 0, "nothing allocated");
}

#[test]
fn channel_bind_brings_up_a_route_with_both_keys() {
    let mut h = Harness::new();
    h.relay.set_offload(true);
    let (mut c, relayed) = allocated(&mut h, C1);
    assert_eq!(take(&mut h), vec![], "an allocation without channels");
    assert_eq!(c.bind(&mut h, 0x4001, PEER).class(), Class::Success);
    // Allocation 600 s, channel 600 s, permission 300 s: the permission ends first.
    let k = key(C1, 0x4001, PEER, relayed);
    assert_eq!(take(&mut h), vec![up(k, at(&h, 300))]);
    assert!(socket_path_relays(&mut h, &k));
    // A permission to another peer, without a channel, is no route.
    assert_eq!(c.permit(&mut h, PEER2).class(), Class::Success);
    assert_eq!(take(&mut h), vec![]);
}

#[test]
fn a_route_ends_with_the_allocation_when_that_ends_first() {
    // Lifetimes capped at 200 s: the allocation ends before its permission.
    let mut h = Harness::with(Opts {
        max_lifetime: Duration::from_secs(200),
        ..Opts::default()
    });
    h.relay.set_offload(true);
    let (mut c, relayed) = allocated(&mut h, C1);
    c.bind(&mut h, 0x4001, PEER);
    let k = key(C1, 0x4001, PEER, relayed);
    assert_eq!(take(&mut h), vec![up(k, at(&h, 200))]);
    h.advance(199);
    assert_eq!(take(&mut h), vec![]);
    assert!(socket_path_relays(&mut h, &k));
    // Allocation expiry in the sweep.
    h.advance(1);
    assert_eq!(take(&mut h), vec![RouteChange::Down(k)]);
    assert!(!socket_path_relays(&mut h, &k));
}

#[test]
fn cross_family_routes_name_the_relayed_address_of_the_peers_family() {
    let mut h = Harness::with(Opts {
        relay_v6: true,
        ..Opts::default()
    });
    // Open an IPv6 documentation range besides the IPv4 one.
    let policy = PeerPolicy::new(
        vec![
            "198.51.100.0/24".parse().unwrap(),
            "2001:db8:5::/48".parse().unwrap(),
        ],
        vec![],
        &[],
    );
    let settings = Settings {
        policy: Arc::new(policy),
        ..h.relay.settings().clone()
    };
    let now = h.now().at;
    h.relay.apply(settings, now);
    h.relay.set_offload(true);
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    let r = c.request(&mut h, Method::Allocate, &|w| {
        udp(w);
        w.attr(&Attribute::AdditionalAddressFamily(
            uturn_stun::AddressFamily::V6,
        ))
        .unwrap();
    });
    let relayed = r.relayed();
    let [v4, v6] = relayed[..] else {
        panic!("two relayed addresses, got {relayed:?}");
    };
    assert!(v4.is_ipv4() && v6.is_ipv6());
    assert_eq!(c.bind(&mut h, 0x4001, V6_PEER).class(), Class::Success);
    assert_eq!(c.bind(&mut h, 0x4002, PEER).class(), Class::Success);
    let (k6, k4) = (key(C1, 0x4001, V6_PEER, v6), key(C1, 0x4002, PEER, v4));
    let end = at(&h, 300);
    assert_eq!(take(&mut h), vec![up(k6, end), up(k4, end)]);
    // An IPv4 client, an IPv6 peer: the socket path relays from the IPv6
    // relayed address, which is what the key says.
    assert!(socket_path_relays(&mut h, &k6));
    assert!(socket_path_relays(&mut h, &k4));
}

#[test]
fn refreshing_the_binding_a_permission_or_the_allocation_moves_the_expiry() {
    // Lifetimes capped at 400 s, so that the allocation can be the earliest.
    let mut h = Harness::with(Opts {
        max_lifetime: Duration::from_secs(400),
        ..Opts::default()
    });
    h.relay.set_offload(true);
    let (mut c, relayed) = allocated(&mut h, C1);
    let k = key(C1, 0x4001, PEER, relayed);
    c.bind(&mut h, 0x4001, PEER);
    assert_eq!(take(&mut h), vec![up(k, at(&h, 300))]);

    // t=100, ChannelBind again: channel 700, permission 400, allocation 400.
    h.advance(100);
    assert_eq!(c.bind(&mut h, 0x4001, PEER).class(), Class::Success);
    assert_eq!(take(&mut h), vec![up(k, at(&h, 400))]);

    // t=200, CreatePermission: permission 500, but the allocation still
    // ends at 400: the route's expiry did not move, nothing to record.
    h.advance(100);
    assert_eq!(c.permit(&mut h, PEER).class(), Class::Success);
    assert_eq!(take(&mut h), vec![]);

    // t=250, Refresh: allocation 650; the permission (500) is now first.
    h.advance(50);
    assert_eq!(c.refresh(&mut h, 400).class(), Class::Success);
    assert_eq!(take(&mut h), vec![up(k, at(&h, 500))]);

    // t=260, CreatePermission: permission 560.
    h.advance(10);
    assert_eq!(c.permit(&mut h, PEER).class(), Class::Success);
    assert_eq!(take(&mut h), vec![up(k, at(&h, 560))]);

    // A refused request changes nothing.
    assert_eq!(c.bind(&mut h, 0x4002, PEER).code(), Some(400));
    assert_eq!(take(&mut h), vec![]);
    assert!(socket_path_relays(&mut h, &k));
}

#[test]
fn a_permission_refreshed_by_a_binding_moves_every_channel_to_that_address() {
    let mut h = Harness::new();
    h.relay.set_offload(true);
    let (mut c, relayed) = allocated(&mut h, C1);
    // Two ports of one peer host share its permission (RFC 8656 §9).
    let other_port = "198.51.100.7:5001";
    c.bind(&mut h, 0x4001, PEER);
    c.bind(&mut h, 0x4002, other_port);
    let (k1, k2) = (
        key(C1, 0x4001, PEER, relayed),
        key(C1, 0x4002, other_port, relayed),
    );
    assert_eq!(take(&mut h), vec![up(k1, at(&h, 300)), up(k2, at(&h, 300))]);
    h.advance(100);
    c.bind(&mut h, 0x4001, PEER);
    assert_eq!(take(&mut h), vec![up(k1, at(&h, 400)), up(k2, at(&h, 400))]);
}

#[test]
fn refresh_zero_takes_the_routes_down() {
    let mut h = Harness::new();
    h.relay.set_offload(true);
    let (mut c, relayed) = allocated(&mut h, C1);
    c.bind(&mut h, 0x4001, PEER);
    c.bind(&mut h, 0x4002, PEER2);
    assert_eq!(take(&mut h).len(), 2);
    assert_eq!(c.refresh(&mut h, 0).class(), Class::Success);
    assert_eq!(
        take(&mut h),
        vec![
            RouteChange::Down(key(C1, 0x4001, PEER, relayed)),
            RouteChange::Down(key(C1, 0x4002, PEER2, relayed)),
        ]
    );
}

#[test]
fn an_expired_permission_takes_the_route_down_until_it_is_renewed() {
    let mut h = Harness::new();
    h.relay.set_offload(true);
    let (mut c, relayed) = allocated(&mut h, C1);
    c.bind(&mut h, 0x4001, PEER);
    let k = key(C1, 0x4001, PEER, relayed);
    assert_eq!(take(&mut h), vec![up(k, at(&h, 300))]);
    h.advance(299);
    assert_eq!(take(&mut h), vec![]);
    // Permission expiry in the sweep; the channel lives on.
    h.advance(1);
    assert_eq!(take(&mut h), vec![RouteChange::Down(k)]);
    assert!(!socket_path_relays(&mut h, &k));
    assert_eq!(h.relay.gauges(h.now().at).channels, 1);
    h.advance(5);
    assert_eq!(take(&mut h), vec![], "one Down, not one per sweep");
    // A new permission brings the route back, until the channel ends (600).
    assert_eq!(c.permit(&mut h, PEER).class(), Class::Success);
    assert_eq!(take(&mut h), vec![up(k, at(&h, 600))]);
    assert!(socket_path_relays(&mut h, &k));
}

#[test]
fn an_expired_channel_takes_the_route_down_once() {
    let mut h = Harness::new();
    h.relay.set_offload(true);
    let (mut c, relayed) = allocated(&mut h, C1);
    c.bind(&mut h, 0x4001, PEER);
    let k = key(C1, 0x4001, PEER, relayed);
    assert_eq!(take(&mut h), vec![up(k, at(&h, 300))]);
    // t=290: the allocation to 1100 (no change: the permission is first),
    // the permission to 590.
    h.advance(290);
    assert_eq!(c.refresh(&mut h, 810).class(), Class::Success);
    assert_eq!(take(&mut h), vec![]);
    assert_eq!(c.permit(&mut h, PEER).class(), Class::Success);
    assert_eq!(take(&mut h), vec![up(k, at(&h, 590))]);
    // t=580: the permission to 880; the channel (600) is now first.
    h.advance(290);
    assert_eq!(c.permit(&mut h, PEER).class(), Class::Success);
    assert_eq!(take(&mut h), vec![up(k, at(&h, 600))]);
    h.advance(19);
    assert_eq!(take(&mut h), vec![]);
    // Channel expiry in the sweep: cooling down, no longer relayed.
    h.advance(1);
    assert_eq!(take(&mut h), vec![RouteChange::Down(k)]);
    assert!(!socket_path_relays(&mut h, &k));
    // Nor when the cooled-down channel is forgotten (900), nor when the
    // allocation expires (1100): it was down already.
    h.advance(301);
    h.advance(200);
    assert_eq!(h.relay.allocation_count(), 0);
    assert_eq!(take(&mut h), vec![]);
}

#[test]
fn a_reload_that_narrows_the_policy_takes_those_routes_down() {
    let mut h = Harness::new();
    h.relay.set_offload(true);
    let (mut c, relayed) = allocated(&mut h, C1);
    c.bind(&mut h, 0x4000, PEER);
    c.bind(&mut h, 0x4001, PEER2);
    assert_eq!(take(&mut h).len(), 2);
    // Only PEER2 (198.51.100.8) stays allowed.
    let narrowed = PeerPolicy::new(vec!["198.51.100.8/32".parse().unwrap()], vec![], &[]);
    let settings = Settings {
        policy: Arc::new(narrowed),
        ..h.relay.settings().clone()
    };
    let now = h.now().at;
    assert_eq!(h.relay.apply(settings, now), 2);
    let gone = key(C1, 0x4000, PEER, relayed);
    assert_eq!(take(&mut h), vec![RouteChange::Down(gone)]);
    assert!(!socket_path_relays(&mut h, &gone));
    assert!(socket_path_relays(&mut h, &key(C1, 0x4001, PEER2, relayed)));
    // A reload that changes nothing for the peers records nothing.
    let same = h.relay.settings().clone();
    assert_eq!(h.relay.apply(same, now), 0);
    h.advance(1);
    assert_eq!(take(&mut h), vec![]);
}

#[test]
fn every_other_way_an_allocation_ends_takes_its_routes_down() {
    let mut h = Harness::new();
    h.relay.set_offload(true);
    let (mut c1, r1) = allocated(&mut h, C1);
    let (mut c2, r2) = allocated(&mut h, C2);
    c1.bind(&mut h, 0x4001, PEER);
    c2.bind(&mut h, 0x4001, PEER);
    assert_eq!(take(&mut h).len(), 2);
    // Draining refuses new allocations and keeps the old ones' routes.
    h.relay.start_drain(None);
    h.advance(1);
    assert_eq!(take(&mut h), vec![]);
    // The io layer ends one client's 5-tuple.
    let leg = h.leg;
    assert!(h.relay.connection_closed(leg, addr(C1), &mut h.sockets));
    assert_eq!(
        take(&mut h),
        vec![RouteChange::Down(key(C1, 0x4001, PEER, r1))]
    );
    // Shutdown.
    h.relay.close_all(&mut h.sockets);
    assert_eq!(
        take(&mut h),
        vec![RouteChange::Down(key(C2, 0x4001, PEER, r2))]
    );
}

#[test]
fn an_expired_allocation_replaced_before_the_sweep_takes_its_routes_down() {
    let mut h = Harness::new();
    h.relay.set_offload(true);
    let (mut c, relayed) = allocated(&mut h, C1);
    c.bind(&mut h, 0x4001, PEER);
    let k = key(C1, 0x4001, PEER, relayed);
    assert_eq!(take(&mut h).len(), 1);
    // Past the allocation's expiry, without running the timers: the next
    // Allocate on the 5-tuple deletes it first.
    h.elapsed += Duration::from_secs(601);
    let fresh = c.allocate(&mut h);
    assert_eq!(take(&mut h), vec![RouteChange::Down(k)]);
    c.bind(&mut h, 0x4001, PEER);
    assert_eq!(
        take(&mut h),
        vec![up(key(C1, 0x4001, PEER, fresh), at(&h, 901))]
    );
}

#[test]
fn stream_clients_get_no_routes() {
    for leg in [Leg::Tcp(ConnId(7)), Leg::Tls(ConnId(8))] {
        let mut h = Harness::new();
        h.leg = leg;
        h.relay.set_offload(true);
        let (mut c, relayed) = allocated(&mut h, C1);
        assert_eq!(c.bind(&mut h, 0x4001, PEER).class(), Class::Success);
        assert_eq!(c.permit(&mut h, PEER).class(), Class::Success);
        assert_eq!(c.refresh(&mut h, 600).class(), Class::Success);
        // It is relayed, over the socket path only.
        assert!(h.forwarded(c.addr, &channel_data(0x4001, b"x")).is_some());
        assert!(h.peer(relayed, addr(PEER), b"y").is_some());
        assert_eq!(take(&mut h), vec![], "{leg:?}");
        h.relay.set_offload(false);
        h.relay.set_offload(true);
        assert_eq!(take(&mut h), vec![], "{leg:?} when turned on");
        assert!(h.relay.connection_closed(leg, c.addr, &mut h.sockets));
        assert_eq!(take(&mut h), vec![], "{leg:?} closed");
    }
}

#[test]
fn turning_offload_on_brings_up_the_routes_that_exist() {
    let mut h = Harness::new();
    let (mut c1, r1) = allocated(&mut h, C1);
    c1.bind(&mut h, 0x4001, PEER);
    h.advance(200);
    let (mut c2, r2) = allocated(&mut h, C2);
    c2.bind(&mut h, 0x4002, PEER2);
    c2.bind(&mut h, 0x4003, PEER);
    h.advance(100);
    let c2_peer = key(C2, 0x4003, PEER, r2);
    assert!(socket_path_relays(&mut h, &c2_peer));
    // c1's binding (at 0) has lost its permission (at 300): no route.
    let c1_peer = key(C1, 0x4001, PEER, r1);
    assert!(!socket_path_relays(&mut h, &c1_peer));
    // A TCP client's channel is no route either.
    h.leg = Leg::Tcp(ConnId(1));
    let (mut t, _) = allocated(&mut h, "203.0.113.42:1");
    t.bind(&mut h, 0x4001, PEER);
    h.leg = Leg::Udp(ListenerId(0));
    assert_eq!(take(&mut h), vec![]);

    h.relay.set_offload(true);
    let c2_peer2 = key(C2, 0x4002, PEER2, r2);
    assert_eq!(
        take(&mut h),
        vec![up(c2_peer2, at(&h, 500)), up(c2_peer, at(&h, 500))]
    );
    h.relay.set_offload(true);
    assert_eq!(take(&mut h), vec![], "already on");
    // Turned off: what was not taken is dropped, and nothing is recorded.
    c1.permit(&mut h, PEER);
    h.relay.set_offload(false);
    c2.refresh(&mut h, 0);
    assert_eq!(take(&mut h), vec![]);
    // On again: afresh.
    h.relay.set_offload(true);
    assert_eq!(take(&mut h), vec![up(c1_peer, at(&h, 600))]);
}

/// `set_offload` is not given the time: a route that has ended but that
/// the sweep has not reached yet is handed over with its passed expiry (the
/// XDP path refuses it), and the sweep takes it down.
#[test]
fn a_route_turned_on_after_it_ended_goes_down_at_the_next_sweep() {
    let mut h = Harness::new();
    let (mut c, relayed) = allocated(&mut h, C1);
    c.bind(&mut h, 0x4001, PEER);
    let k = key(C1, 0x4001, PEER, relayed);
    // Past the permission's expiry (300), before the timers run.
    h.elapsed += Duration::from_secs(301);
    assert!(!socket_path_relays(&mut h, &k));
    h.relay.set_offload(true);
    assert_eq!(take(&mut h), vec![up(k, at(&h, 300))]);
    h.advance(0);
    assert_eq!(take(&mut h), vec![RouteChange::Down(k)]);
}

#[test]
fn offloaded_traffic_is_counted_as_the_socket_path_counts_it() {
    let mut h = Harness::new();
    h.relay.set_offload(true);
    let (mut c, relayed) = allocated(&mut h, C1);
    c.bind(&mut h, 0x4001, PEER);
    let k = key(C1, 0x4001, PEER, relayed);
    // One packet each way over the socket path: 5 payload bytes out, 3 in.
    assert!(h
        .forwarded(c.addr, &channel_data(0x4001, b"hello"))
        .is_some());
    assert!(h.peer(relayed, addr(PEER), b"hey").is_some());
    let udp = Transport::Udp.index();
    let by_socket = h.relay.stats().by_transport[udp];
    assert_eq!((by_socket.to_peer_packets, by_socket.to_peer_bytes), (1, 5));
    assert_eq!(
        (by_socket.to_client_packets, by_socket.to_client_bytes),
        (1, 3)
    );
    // The same again through XDP.
    let (out, back) = (traffic(1, 5), traffic(1, 3));
    h.relay.offloaded(&k, out, back);
    // And for a route that went down since (the packets were relayed before).
    c.refresh(&mut h, 0);
    h.relay.offloaded(&k, traffic(10, 1000), Traffic::default());
    let stats = h.relay.stats();
    let t = stats.by_transport[udp];
    assert_eq!((t.to_peer_packets, t.to_peer_bytes), (12, 1010));
    assert_eq!((t.to_client_packets, t.to_client_bytes), (2, 6));
    assert_eq!(t.allocations_created, 1, "only traffic moves");
    let totals = stats.totals();
    assert_eq!((totals.to_peer_packets, totals.to_client_bytes), (12, 6));
    for other in [Transport::Tcp, Transport::Tls] {
        assert_eq!(
            stats.by_transport[other.index()],
            TransportCounts::default()
        );
    }
}
