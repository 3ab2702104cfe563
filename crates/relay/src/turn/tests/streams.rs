//! The client leg over a stream (TCP, TLS): the allocation belongs to the
//! connection, nonces are bound to the transport, ChannelData to the
//! client is padded (RFC 8656 §3.1, §12.5).

use super::*;
use uturn_stun::ChannelData;

const C1: &str = "203.0.113.30:42000";
const TCP: Leg = Leg::Tcp(ConnId(7));
const TLS: Leg = Leg::Tls(ConnId(8));

#[test]
fn the_whole_flow_works_over_a_stream_leg_with_padded_channel_data() {
    for leg in [TCP, TLS] {
        let mut h = Harness::new();
        h.leg = leg;
        let mut c = Client::new(C1, md5("alice", "alice-pw"));
        let relayed = c.allocate(&mut h);
        assert_eq!(c.bind(&mut h, 0x4001, PEER).class(), Class::Success);
        // Client → peer: a padded frame (5 bytes of data, 3 of padding).
        let mut frame = channel_data(0x4001, b"hello");
        frame.extend_from_slice(&[0, 0, 0]);
        let (_, peer, bytes) = h.forwarded(c.addr, &frame).expect("forwarded");
        assert_eq!((peer, bytes.as_slice()), (addr(PEER), &b"hello"[..]));
        // Peer → client: padded to a multiple of 4, with zeroes.
        for n in 0..9 {
            let payload = vec![0xAB; n];
            let out = h.peer(relayed, addr(PEER), &payload).expect("relayed");
            assert_eq!(out.len() % 4, 0, "{n} bytes padded on {leg:?}");
            assert_eq!(out.len(), 4 + n.div_ceil(4) * 4);
            assert!(out[4 + n..].iter().all(|&b| b == 0));
            let cd = ChannelData::parse(&out).unwrap();
            assert_eq!((cd.number, cd.payload), (0x4001, payload.as_slice()));
        }
    }
}

#[test]
fn channel_data_to_a_udp_client_is_not_padded() {
    let mut h = Harness::new();
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    let relayed = c.allocate(&mut h);
    c.bind(&mut h, 0x4001, PEER);
    let out = h.peer(relayed, addr(PEER), b"hello").expect("relayed");
    assert_eq!(out.len(), 9);
}

#[test]
fn closing_the_connection_deletes_its_allocation_at_once() {
    let mut h = Harness::new();
    h.leg = TCP;
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    let relayed = c.allocate(&mut h);
    let now = h.now().at;
    assert!(h.relay.has_allocation(now, TCP, c.addr));
    let token = *h.sockets.bound.keys().next().unwrap();
    // Another connection's close, or the same address on UDP, is not it.
    assert!(!h
        .relay
        .connection_closed(Leg::Tcp(ConnId(9)), c.addr, &mut h.sockets));
    assert!(!h
        .relay
        .connection_closed(Leg::Udp(ListenerId(0)), c.addr, &mut h.sockets));
    assert_eq!(h.relay.allocation_count(), 1);

    assert!(h.relay.connection_closed(TCP, c.addr, &mut h.sockets));
    assert_eq!(h.relay.allocation_count(), 0);
    assert!(!h.relay.has_allocation(now, TCP, c.addr));
    assert_eq!(h.sockets.closed, vec![token], "relay socket closed");
    assert!(h.peer(relayed, addr(PEER), b"late").is_none());
    // The port is free again: the next allocation may take it.
    let mut h2 = Harness::with(Opts {
        ports: relayed.port()..=relayed.port(),
        ..Opts::default()
    });
    h2.leg = TCP;
    let mut c2 = Client::new(C1, md5("alice", "alice-pw"));
    assert_eq!(c2.allocate(&mut h2), relayed);
    assert!(h2.relay.connection_closed(TCP, c2.addr, &mut h2.sockets));
    let mut c3 = Client::new("203.0.113.31:1", md5("bob", "bob-pw"));
    assert_eq!(
        c3.allocate(&mut h2),
        relayed,
        "freed at close, not at expiry"
    );
}

#[test]
fn one_address_on_udp_and_on_a_stream_holds_two_allocations() {
    let mut h = Harness::new();
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    let on_udp = c.allocate(&mut h);
    h.leg = TCP;
    let mut c2 = Client::new(C1, md5("alice", "alice-pw"));
    let on_tcp = c2.allocate(&mut h);
    assert_ne!(on_udp, on_tcp);
    assert_eq!(h.relay.allocation_count(), 2);
    assert!(h.relay.connection_closed(TCP, c.addr, &mut h.sockets));
    assert_eq!(h.relay.allocation_count(), 1, "the UDP one stays");
}

#[test]
fn a_nonce_from_one_transport_is_stale_on_another() {
    let mut h = Harness::new();
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    c.allocate(&mut h);
    let udp_nonce = c.nonce.clone();
    // The same address over TCP with the UDP nonce: 438 and a new nonce.
    h.leg = TCP;
    let tid = c.tid();
    let pkt = c.build(Method::Allocate, tid, &udp);
    let r = Resp {
        bytes: h.reply_bytes(c.addr, &pkt).expect("a reply"),
    };
    assert_eq!(r.code(), Some(438));
    let Some(Attribute::Nonce(fresh)) = r.attr(attr::NONCE) else {
        panic!("438 without a nonce");
    };
    assert_ne!(fresh, udp_nonce.as_slice());
    // With the new one it works.
    let mut c2 = Client::new(C1, md5("alice", "alice-pw"));
    c2.allocate(&mut h);
    assert_eq!(h.relay.allocation_count(), 2);
}

#[test]
fn unauthenticated_replies_over_a_stream_are_not_rate_limited() {
    // One reply a second per source over UDP; a stream's client, which may
    // not retransmit, is always answered.
    let mut h = Harness::with(Opts {
        rate: 1,
        ..Opts::default()
    });
    let binding = |c: &mut Client| {
        let tid = c.tid();
        c.build(Method::Binding, tid, &|_| {})
    };
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    let udp: Vec<bool> = (0..5)
        .map(|_| {
            let pkt = binding(&mut c);
            h.reply_bytes(c.addr, &pkt).is_some()
        })
        .collect();
    assert_eq!(udp, [true, false, false, false, false], "limited over UDP");
    h.leg = TCP;
    for i in 0..20 {
        let pkt = binding(&mut c);
        assert!(
            h.reply_bytes(c.addr, &pkt).is_some(),
            "request {i} over TCP"
        );
    }
}
