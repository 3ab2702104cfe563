//! TCP allocations (RFC 6062): Allocate with REQUESTED-TRANSPORT TCP,
//! Connect, ConnectionAttempt, ConnectionBind, their limits and the peer
//! policy on every path that names a peer.

use super::*;

const C1: &str = "203.0.113.40:43000";
const TCP: Leg = Leg::Tcp(ConnId(3));

fn tcp(w: &mut MessageWriter<'_>) {
    w.u32(attr::REQUESTED_TRANSPORT, 6 << 24).unwrap();
}

/// A client with a TCP allocation on a TCP control connection; its relayed
/// address.
fn tcp_client(h: &mut Harness) -> (Client, SocketAddr) {
    h.leg = TCP;
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    let r = c.request(h, Method::Allocate, &tcp);
    assert_eq!(r.class(), Class::Success, "{:?}", r.code());
    let relayed = r.addr(attr::XOR_RELAYED_ADDRESS).unwrap();
    (c, relayed)
}

/// Sends Connect; the answer, if one came at once.
fn connect(c: &mut Client, h: &mut Harness, peer: &str) -> Option<Resp> {
    let p = addr(peer);
    let tid = c.tid();
    let pkt = c.build(Method::Connect, tid, &move |w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, p).unwrap()
    });
    h.reply_bytes(c.addr, &pkt).map(|bytes| Resp { bytes })
}

/// The io layer's outcome for the last Connect; the answer to the client.
fn connected(h: &mut Harness, ok: bool) -> Resp {
    let (_, id, _, _) = *h.sockets.connects.last().expect("a connect");
    let now = h.now();
    let t = h
        .relay
        .tcp_connected(now, id, ok, &mut h.scratch)
        .expect("an answer");
    assert_eq!((t.via, t.to), (TCP.via(), addr(C1)));
    let Payload::Reply(n) = t.payload else {
        panic!("{t:?}")
    };
    Resp {
        bytes: h.scratch[..n].to_vec(),
    }
}

fn connection_id(r: &Resp) -> ConnectionId {
    match r.attr(attr::CONNECTION_ID) {
        Some(Attribute::ConnectionId(id)) => ConnectionId(id),
        other => panic!("no CONNECTION-ID: {other:?}"),
    }
}

/// A ConnectionBind for `id` from `c`'s credentials, on a data connection.
fn bind_data(
    c: &Client,
    h: &mut Harness,
    id: ConnectionId,
) -> (Option<Resp>, Option<ConnectionId>) {
    let tid = [9; 12];
    let pkt = c.build(Method::ConnectionBind, tid, &move |w| {
        w.u32(attr::CONNECTION_ID, id.0).unwrap()
    });
    let now = h.now();
    let b = h
        .relay
        .connection_bind(now, Transport::Tcp, &pkt, &mut h.scratch);
    let r = b.reply.map(|n| Resp {
        bytes: h.scratch[..n].to_vec(),
    });
    (r, b.bound)
}

#[test]
fn a_tcp_allocation_listens_and_needs_a_stream_control_connection() {
    let mut h = Harness::new();
    let (_, relayed) = tcp_client(&mut h);
    assert_eq!(h.sockets.listening.values().collect::<Vec<_>>(), [&relayed]);
    assert!(h.sockets.bound.is_empty(), "no UDP relay socket");
    // Over UDP: 400 (RFC 6062 §5.1).
    let mut h = Harness::new();
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    assert_eq!(c.request(&mut h, Method::Allocate, &tcp).code(), Some(400));
    // UDP-only attributes: 400.
    let mut h = Harness::new();
    h.leg = TCP;
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    let r = c.request(&mut h, Method::Allocate, &|w| {
        tcp(w);
        w.raw(attr::DONT_FRAGMENT, &[]).unwrap();
    });
    assert_eq!(r.code(), Some(400));
    let r = c.request(&mut h, Method::Allocate, &|w| {
        tcp(w);
        w.raw(attr::EVEN_PORT, &[0x80]).unwrap();
    });
    assert_eq!(r.code(), Some(400));
    assert!(h.sockets.listening.is_empty());
}

#[test]
fn connect_answers_when_the_connection_is_made_and_binds_once() {
    let mut h = Harness::new();
    let (mut c, relayed) = tcp_client(&mut h);
    assert!(connect(&mut c, &mut h, PEER).is_none(), "answered later");
    let (token, id, from, to) = *h.sockets.connects.last().unwrap();
    assert_eq!((from, to), (relayed, addr(PEER)));
    assert_eq!(h.sockets.listening.get(&token), Some(&relayed));
    let r = connected(&mut h, true);
    assert_eq!(
        (r.msg().method(), r.class()),
        (Method::Connect, Class::Success)
    );
    assert_eq!(connection_id(&r), id);
    assert_eq!(id.shard(), 0);
    // The answer is signed with the Connect's credentials.
    assert!(r.msg().get(attr::MESSAGE_INTEGRITY).is_some());
    // RFC 6062 §5.2: the same peer again, while its connection lives: 446.
    assert_eq!(connect(&mut c, &mut h, PEER).unwrap().code(), Some(446));
    // ConnectionBind from a data connection binds it, once.
    let (r, bound) = bind_data(&c, &mut h, id);
    assert_eq!(r.unwrap().class(), Class::Success);
    assert_eq!(bound, Some(id));
    let (r, bound) = bind_data(&c, &mut h, id);
    assert_eq!((r.unwrap().code(), bound), (Some(400), None));
    assert_eq!(h.relay.stats().tcp.bound, 1);
    // Once the io layer says it closed, the peer may be connected again.
    h.relay.tcp_closed(id);
    assert!(connect(&mut c, &mut h, PEER).is_none());
}

#[test]
fn a_failed_connection_is_447() {
    let mut h = Harness::new();
    let (mut c, _) = tcp_client(&mut h);
    assert!(connect(&mut c, &mut h, PEER).is_none());
    let r = connected(&mut h, false);
    assert_eq!((r.class(), r.code()), (Class::Error, Some(447)));
    assert_eq!(h.relay.tcp_connection_count(), 0);
    assert_eq!(h.relay.stats().tcp.connect_failed, 1);
}

#[test]
fn a_connect_not_made_in_30_seconds_is_447() {
    let mut h = Harness::new();
    let (mut c, _) = tcp_client(&mut h);
    assert!(connect(&mut c, &mut h, PEER).is_none());
    let (_, id, _, _) = *h.sockets.connects.last().unwrap();
    h.advance(29);
    assert!(h.sockets.closed_tcp.is_empty());
    assert!(h.relay.take_connect_timeout(&mut h.scratch).is_none());
    h.advance(2);
    // The connection is closed, its place freed, and the Connect answered
    // 447 on the control connection, signed like any other answer.
    assert_eq!(h.sockets.closed_tcp, [id]);
    assert_eq!(h.relay.tcp_connection_count(), 0);
    let t = h.relay.take_connect_timeout(&mut h.scratch).expect("a 447");
    assert_eq!((t.via, t.to), (TCP.via(), addr(C1)));
    let Payload::Reply(n) = t.payload else {
        panic!("{t:?}")
    };
    let r = Resp {
        bytes: h.scratch[..n].to_vec(),
    };
    assert_eq!(
        (r.msg().method(), r.class(), r.code()),
        (Method::Connect, Class::Error, Some(447))
    );
    assert!(r.msg().get(attr::MESSAGE_INTEGRITY).is_some());
    assert!(h.relay.take_connect_timeout(&mut h.scratch).is_none());
    assert_eq!(h.relay.stats().tcp.connect_timeouts, 1);
    // A late outcome from the io layer finds nothing to answer.
    let now = h.now();
    assert!(h
        .relay
        .tcp_connected(now, id, true, &mut h.scratch)
        .is_none());
    // The same peer may be tried again.
    assert!(connect(&mut c, &mut h, PEER).is_none());
}

#[test]
fn connect_goes_through_the_peer_policy() {
    // SECURITY.md rule 8: the same choke point as CreatePermission; a
    // refused peer is never connected to.
    let mut h = Harness::with(Opts {
        relay_v6: true,
        ..Opts::default()
    });
    let (mut c, _) = tcp_client(&mut h);
    for peer in [
        "127.0.0.1:80",
        "10.0.0.1:80",
        "192.168.1.1:80",
        "169.254.169.254:80",
        "100.64.0.1:80",
        "0.0.0.0:80",
        "224.0.0.1:80",
        "192.0.2.1:80", // the relay's own address
    ] {
        assert_eq!(
            connect(&mut c, &mut h, peer).unwrap().code(),
            Some(403),
            "{peer}"
        );
    }
    // An IPv6 peer on an IPv4 allocation: 443.
    assert_eq!(
        connect(&mut c, &mut h, "[::ffff:127.0.0.1]:80")
            .unwrap()
            .code(),
        Some(443)
    );
    assert!(h.sockets.connects.is_empty());
    assert_eq!(h.relay.stats().drop_forbidden_peer, 8);
}

#[test]
fn connect_needs_a_tcp_allocation_of_the_same_credentials() {
    let mut h = Harness::new();
    h.leg = TCP;
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    // No allocation: 437.
    let p = addr(PEER);
    let r = c.request(&mut h, Method::Connect, &move |w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, p).unwrap()
    });
    assert_eq!(r.code(), Some(437));
    // A UDP allocation on a TCP connection has no peer connections: 400.
    c.allocate(&mut h);
    assert_eq!(connect(&mut c, &mut h, PEER).unwrap().code(), Some(400));
    assert!(h.sockets.connects.is_empty());
}

#[test]
fn pending_and_open_connections_are_limited() {
    let mut h = Harness::with(Opts {
        quotas: Quotas {
            pending_connections_per_allocation: 2,
            peer_connections_per_allocation: 3,
            ..Quotas::default()
        },
        ..Opts::default()
    });
    let (mut c, _) = tcp_client(&mut h);
    assert!(connect(&mut c, &mut h, "198.51.100.1:1").is_none());
    assert!(connect(&mut c, &mut h, "198.51.100.2:1").is_none());
    assert_eq!(
        connect(&mut c, &mut h, "198.51.100.3:1").unwrap().code(),
        Some(508)
    );
    // Binding one frees a pending place, not an open one.
    let id = connection_id(&connected(&mut h, true));
    assert_eq!(bind_data(&c, &mut h, id).1, Some(id));
    assert!(connect(&mut c, &mut h, "198.51.100.3:1").is_none());
    assert_eq!(
        connect(&mut c, &mut h, "198.51.100.4:1").unwrap().code(),
        Some(508)
    );
}

#[test]
fn a_peer_connection_not_bound_in_30_seconds_is_closed() {
    let mut h = Harness::new();
    let (mut c, _) = tcp_client(&mut h);
    connect(&mut c, &mut h, PEER);
    let id = connection_id(&connected(&mut h, true));
    h.advance(29);
    assert!(h.sockets.closed_tcp.is_empty());
    h.advance(2);
    assert_eq!(h.sockets.closed_tcp, [id]);
    assert_eq!(bind_data(&c, &mut h, id).0.unwrap().code(), Some(400));
    assert_eq!(h.relay.stats().tcp.bind_timeouts, 1);
}

#[test]
fn connection_bind_checks_the_credentials_and_the_id() {
    let mut h = Harness::new();
    let (mut c, _) = tcp_client(&mut h);
    connect(&mut c, &mut h, PEER);
    let id = connection_id(&connected(&mut h, true));
    // Another user, with a nonce of its own for that control address: 441.
    let mut bob = Client::new(C1, md5("bob", "bob-pw"));
    bob.nonce = c.nonce.clone();
    assert_eq!(bind_data(&bob, &mut h, id).0.unwrap().code(), Some(441));
    // An unknown id: 400.
    assert_eq!(
        bind_data(&c, &mut h, ConnectionId(id.0 ^ 1))
            .0
            .unwrap()
            .code(),
        Some(400)
    );
    // No credentials: a 401 challenge, whose nonce works on the retry.
    let mut fresh = Client::new(C1, md5("alice", "alice-pw"));
    let (r, _) = bind_data(&fresh, &mut h, id);
    let r = r.unwrap();
    assert_eq!(r.code(), Some(401));
    let Some(Attribute::Nonce(n)) = r.attr(attr::NONCE) else {
        panic!("no nonce")
    };
    fresh.nonce = n.to_vec();
    assert_eq!(bind_data(&fresh, &mut h, id).1, Some(id));
    // On a control connection (through handle_client): 400.
    let r = c.request(&mut h, Method::ConnectionBind, &move |w| {
        w.u32(attr::CONNECTION_ID, id.0).unwrap()
    });
    assert_eq!(r.code(), Some(400));
}

#[test]
fn a_peer_connecting_in_needs_a_permission() {
    let mut h = Harness::new();
    let (mut c, _) = tcp_client(&mut h);
    let token = *h.sockets.listening.keys().next().unwrap();
    let now = h.now();
    let peer = addr(PEER);
    assert!(h
        .relay
        .tcp_accepted(now, token, peer, &mut h.scratch)
        .is_none());
    assert_eq!(h.relay.stats().tcp.refused, 1);
    assert_eq!(c.permit(&mut h, PEER).class(), Class::Success);
    let (id, t) = h
        .relay
        .tcp_accepted(now, token, peer, &mut h.scratch)
        .expect("announced");
    assert_eq!((t.via, t.to), (TCP.via(), addr(C1)));
    let Payload::Reply(n) = t.payload else {
        panic!()
    };
    let r = Resp {
        bytes: h.scratch[..n].to_vec(),
    };
    assert_eq!(
        (r.msg().method(), r.class()),
        (Method::ConnectionAttempt, Class::Indication)
    );
    assert_eq!(r.addr(attr::XOR_PEER_ADDRESS), Some(peer));
    assert_eq!(connection_id(&r), id);
    assert_eq!(bind_data(&c, &mut h, id).1, Some(id));
    // A stale token (another allocation's) is refused.
    let stale = RelayToken(token.0 + (1 << 33));
    assert!(h
        .relay
        .tcp_accepted(now, stale, addr(PEER2), &mut h.scratch)
        .is_none());
}

#[test]
fn ending_the_allocation_closes_its_peer_connections() {
    let mut h = Harness::new();
    let (mut c, _) = tcp_client(&mut h);
    connect(&mut c, &mut h, PEER);
    let a = connection_id(&connected(&mut h, true));
    connect(&mut c, &mut h, PEER2);
    let (_, b, _, _) = *h.sockets.connects.last().unwrap();
    assert_eq!(c.refresh(&mut h, 0).class(), Class::Success);
    let mut closed = h.sockets.closed_tcp.clone();
    closed.sort_by_key(|i| i.0);
    let mut want = vec![a, b];
    want.sort_by_key(|i| i.0);
    assert_eq!(closed, want);
    assert!(h.sockets.listening.is_empty());
    assert_eq!(h.relay.tcp_connection_count(), 0);
    // A late outcome for the connecting one is not answered.
    let now = h.now();
    assert!(h
        .relay
        .tcp_connected(now, b, true, &mut h.scratch)
        .is_none());
}

#[test]
fn a_tcp_allocation_refuses_channels_and_send_indications() {
    let mut h = Harness::new();
    let (mut c, _) = tcp_client(&mut h);
    assert_eq!(c.bind(&mut h, 0x4001, PEER).code(), Some(400));
    assert_eq!(c.permit(&mut h, PEER).class(), Class::Success);
    let ind = c.send_indication(PEER, b"x");
    assert!(h.forwarded(c.addr, &ind).is_none());
}

#[test]
fn connection_ids_carry_the_shard() {
    let mut h = Harness::new();
    h.relay.set_shard(5);
    let (mut c, _) = tcp_client(&mut h);
    connect(&mut c, &mut h, PEER);
    let id = connection_id(&connected(&mut h, true));
    assert_eq!(id.shard(), 5);
    // The io layer finds the id before authenticating.
    let pkt = c.build(Method::ConnectionBind, [1; 12], &move |w| {
        w.u32(attr::CONNECTION_ID, id.0).unwrap()
    });
    assert_eq!(peek_connection_bind(&pkt), Some(Some(id)));
    assert_eq!(peek_connection_bind(&c.send_indication(PEER, b"x")), None);
}

#[test]
fn a_narrowed_policy_ends_peer_connections_to_peers_it_refuses() {
    let mut h = Harness::new();
    let (mut c, _) = tcp_client(&mut h);
    connect(&mut c, &mut h, PEER);
    let a = connection_id(&connected(&mut h, true));
    connect(&mut c, &mut h, PEER2);
    let b = connection_id(&connected(&mut h, true));
    // PEER2's address leaves the allow list.
    let mut settings = h.relay.settings().clone();
    let relay_ip: IpAddr = Ipv4Addr::new(192, 0, 2, 1).into();
    settings.policy = Arc::new(PeerPolicy::new(
        vec!["198.51.100.7/32".parse().unwrap()],
        vec![],
        &[relay_ip],
    ));
    let now = h.now().at;
    assert!(h.relay.apply(settings, now) >= 1);
    assert_eq!(h.relay.take_revoked_connections(), [b]);
    assert_eq!(h.relay.tcp_connection_count(), 1);
    // The one left still binds; the ended one does not.
    assert_eq!(bind_data(&c, &mut h, a).1, Some(a));
    assert_eq!(bind_data(&c, &mut h, b).0.unwrap().code(), Some(400));
}
