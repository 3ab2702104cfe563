//! Moving data: Send/Data indications and ChannelData both ways (RFC 8656 §10–§12).

use super::*;
use uturn_stun::ChannelData;

const C1: &str = "203.0.113.20:41000";

fn ready(h: &mut Harness) -> (Client, SocketAddr) {
    let mut c = Client::new(C1, md5("alice", "alice-pw"));
    let relayed = c.allocate(h);
    (c, relayed)
}

#[test]
fn send_indication_reaches_the_peer_only_with_a_permission() {
    let mut h = Harness::new();
    let (mut c, _) = ready(&mut h);
    let pkt = c.send_indication(PEER, b"hello");
    assert_eq!(h.client(c.addr, &pkt), None, "no permission yet");
    assert_eq!(c.permit(&mut h, PEER).class(), Class::Success);
    let (relay, peer, bytes) = h.forwarded(c.addr, &pkt).expect("forwarded");
    assert_eq!(peer, addr(PEER));
    assert_eq!(bytes, b"hello");
    assert!(h.sockets.bound.contains_key(&relay));
}

#[test]
fn peer_data_becomes_a_data_indication_without_a_channel() {
    let mut h = Harness::new();
    let (mut c, relayed) = ready(&mut h);
    assert_eq!(
        h.peer(relayed, addr(PEER), b"from peer"),
        None,
        "no permission: dropped"
    );
    c.permit(&mut h, PEER);
    let out = h
        .peer(relayed, addr(PEER), b"from peer")
        .expect("relayed to the client");
    let m = Message::parse(&out).unwrap();
    assert_eq!((m.method(), m.class()), (Method::Data, Class::Indication));
    let tid = m.transaction_id();
    assert_eq!(
        Attribute::decode(m.get(attr::XOR_PEER_ADDRESS).unwrap(), tid).unwrap(),
        Attribute::XorPeerAddress(addr(PEER))
    );
    assert_eq!(
        Attribute::decode(m.get(attr::DATA).unwrap(), tid).unwrap(),
        Attribute::Data(b"from peer")
    );
    // A permission is per IP address: another port of the same host passes.
    assert!(h.peer(relayed, addr("198.51.100.7:9"), b"x").is_some());
    assert!(h.peer(relayed, addr(PEER2), b"x").is_none());
}

#[test]
fn channel_data_flows_both_ways() {
    let mut h = Harness::new();
    let (mut c, relayed) = ready(&mut h);
    assert_eq!(c.bind(&mut h, 0x4001, PEER).class(), Class::Success);
    let pkt = channel_data(0x4001, b"rtp-ish payload");
    // Forwarded straight from the receive buffer: the payload's range is in
    // buffer coordinates, past the headroom and the 4-byte channel header.
    let (out, buf) = h.client_rx(c.addr, &pkt);
    let Some(Transmit {
        via: Via::Relay(_),
        to,
        payload: Payload::Rx(range),
    }) = out
    else {
        panic!("expected a send to the peer, got {out:?}");
    };
    assert_eq!(to, addr(PEER));
    assert_eq!(range, PEER_HEADROOM + 4..PEER_HEADROOM + 4 + 15);
    assert_eq!(&buf[range], b"rtp-ish payload");
    let out = h.peer(relayed, addr(PEER), b"answer").expect("relayed");
    let cd = ChannelData::parse(&out).unwrap();
    assert_eq!((cd.number, cd.payload), (0x4001, &b"answer"[..]));
    // Padding bytes after the payload (allowed over UDP) are not payload.
    let mut padded = channel_data(0x4001, b"abc");
    padded.push(0);
    assert_eq!(h.forwarded(c.addr, &padded).expect("forwarded").2, b"abc");
}

#[test]
fn channel_data_on_unbound_channel_or_other_five_tuple_is_dropped() {
    let mut h = Harness::new();
    let (mut c, _) = ready(&mut h);
    c.bind(&mut h, 0x4001, PEER);
    assert_eq!(h.client(c.addr, &channel_data(0x4002, b"x")), None);
    // The same channel from another source port is not this allocation.
    assert_eq!(
        h.client(addr("203.0.113.20:41001"), &channel_data(0x4001, b"x")),
        None
    );
    // A length past the datagram is malformed.
    let mut bad = channel_data(0x4001, b"abcd");
    bad.truncate(6);
    assert_eq!(h.client(c.addr, &bad), None);
    assert!(h.relay.stats().drop_malformed >= 1);
    assert!(h.relay.stats().drop_no_allocation >= 1);
}

#[test]
fn channel_binding_lasts_ten_minutes_and_cools_down_five_more() {
    let mut h = Harness::with(Opts {
        max_lifetime: Duration::from_secs(3600),
        ..Opts::default()
    });
    let (mut c, relayed) = ready(&mut h);
    c.refresh(&mut h, 3600);
    c.bind(&mut h, 0x4001, PEER);
    h.advance(590);
    c.permit(&mut h, PEER); // keep the permission, not the channel
    h.advance(11);
    assert_eq!(
        h.client(c.addr, &channel_data(0x4001, b"x")),
        None,
        "binding expired"
    );
    // Peer data now arrives as a Data indication, not ChannelData.
    let out = h.peer(relayed, addr(PEER), b"y").unwrap();
    assert!(Message::parse(&out).is_ok());
    // During the cool-down the number may not go to another peer…
    assert_eq!(c.bind(&mut h, 0x4001, PEER2).code(), Some(400));
    // …but may be bound again to the same one.
    assert_eq!(c.bind(&mut h, 0x4001, PEER).class(), Class::Success);
    assert!(h.forwarded(c.addr, &channel_data(0x4001, b"x")).is_some());
}

#[test]
fn channel_number_is_free_again_after_the_cool_down() {
    let mut h = Harness::new();
    let (mut c, _) = ready(&mut h);
    c.refresh(&mut h, 3600);
    c.bind(&mut h, 0x4001, PEER);
    h.advance(601 + 300);
    assert_eq!(c.bind(&mut h, 0x4001, PEER2).class(), Class::Success);
}

#[test]
fn permission_lasts_five_minutes_and_channel_bind_refreshes_it() {
    let mut h = Harness::new();
    let (mut c, relayed) = ready(&mut h);
    c.permit(&mut h, PEER);
    h.advance(299);
    assert!(h.peer(relayed, addr(PEER), b"a").is_some());
    h.advance(2);
    assert!(
        h.peer(relayed, addr(PEER), b"a").is_none(),
        "permission expired at 300 s"
    );
    c.bind(&mut h, 0x4005, PEER);
    assert!(
        h.peer(relayed, addr(PEER), b"a").is_some(),
        "ChannelBind installs a permission"
    );
}

/// Found by the `relay` fuzz target: a channel outlives its permission
/// (600 s against 300 s), and ChannelData used to reach the peer on the
/// channel alone after the permission had expired.
#[test]
fn channel_data_needs_a_live_permission() {
    let mut h = Harness::new();
    let (mut c, _) = ready(&mut h);
    c.bind(&mut h, 0x4001, PEER);
    h.advance(299);
    assert!(h.forwarded(c.addr, &channel_data(0x4001, b"x")).is_some());
    h.advance(2);
    let dropped = h.relay.stats().drop_no_permission;
    assert_eq!(
        h.client(c.addr, &channel_data(0x4001, b"x")),
        None,
        "the channel lives on, its permission does not"
    );
    assert_eq!(h.relay.stats().drop_no_permission, dropped + 1);
    // Renewing the permission opens the channel again.
    c.permit(&mut h, PEER);
    assert!(h.forwarded(c.addr, &channel_data(0x4001, b"x")).is_some());
}
