//! The XDP test topology (tests/common/netns.rs, tuning/xdp/topology.sh):
//! datagrams cross it in both families, uturn runs inside the relay
//! namespace under its own PID and relays between the client and the peer
//! namespaces, and dropping the topology removes its namespaces.
//! Skipped without root, `ip netns` or clang (UTURN_REQUIRE_XDP=1: failed).

use super::*;

use std::os::unix::fs::MetadataExt;

/// Sends one datagram from a socket bound in `from` on `src` to a socket
/// bound in `to` on `dst`, both made inside their namespaces and used from
/// this thread; panics unless it arrives from `src`.
fn datagram_crosses(t: &Topology, from: Side, src: IpAddr, to: Side, dst: IpAddr) {
    let rx = t
        .in_ns(to, || UdpSocket::bind((dst, 0)))
        .unwrap_or_else(|e| panic!("bind {dst} in {:?}: {e}", to));
    let tx = t
        .in_ns(from, || UdpSocket::bind((src, 0)))
        .unwrap_or_else(|e| panic!("bind {src} in {:?}: {e}", from));
    let to_addr = rx.local_addr().unwrap();
    tx.send_to(b"across", to_addr).unwrap();
    let (d, seen_from) = recv_within(&rx, WAIT)
        .unwrap_or_else(|| panic!("nothing from {src} ({from:?}) reached {to_addr} ({to:?})"));
    assert_eq!(d, b"across");
    assert_eq!(seen_from, tx.local_addr().unwrap());
}

#[test]
fn datagrams_cross_the_topology_and_down_removes_it() {
    let Some(t) = Topology::up("datagrams_cross_the_topology_and_down_removes_it") else {
        return;
    };
    let names = [t.ns(Side::Client), t.ns(Side::Relay), t.ns(Side::Peer)];
    let listed = netns_list();
    for n in &names {
        assert!(listed.contains(n), "{n} not in `ip netns list`: {listed:?}");
    }
    datagram_crosses(
        &t,
        Side::Client,
        CLIENT_V4.into(),
        Side::Relay,
        RELAY_LISTEN_V4.into(),
    );
    datagram_crosses(
        &t,
        Side::Peer,
        PEER_V6.into(),
        Side::Relay,
        RELAY_PEER_V6.into(),
    );
    // The client namespace has no route to the peer's link.
    let tx = t
        .in_ns(Side::Client, || UdpSocket::bind((CLIENT_V4, 0)))
        .unwrap();
    assert!(
        tx.send_to(b"x", (PEER_V4, 9)).is_err(),
        "the client namespace reached the peer's link directly"
    );
    drop(t);
    let listed = netns_list();
    for n in &names {
        assert!(
            !listed.contains(n),
            "{n} still listed after down: {listed:?}"
        );
    }
}

/// uturn started with `ip netns exec` is the child itself (ip executes it),
/// in the relay namespace, and relays ChannelData both ways between a
/// client in the client namespace and a peer in the peer namespace.
fn uturn_relays_across_the_topology() {
    let Some(t) = Topology::up("uturn_relays_across_the_topology") else {
        return;
    };
    let server = t.start_uturn(&["--realm", REALM, "--user", "alice:wonderland"]);
    let pid = server.pid();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "uturn", "the child's PID is not uturn's");
    let ns_of = |p: &str| std::fs::metadata(p).map(|m| m.ino()).unwrap();
    assert_eq!(
        ns_of(&format!("/proc/{pid}/ns/net")),
        ns_of(&format!("/run/netns/{}", t.ns(Side::Relay))),
        "uturn is not in the relay namespace"
    );
    assert_eq!(server.addr.ip(), IpAddr::from(RELAY_LISTEN_V4));

    let addr = server.addr;
    let mut c = t.in_ns(Side::Client, || {
        TurnClient::bind(
            CLIENT_V4.into(),
            addr,
            "alice",
            "wonderland",
            AuthMode::Legacy,
        )
    });
    let relayed = c.allocate();
    assert_eq!(relayed.ip(), IpAddr::from(RELAY_PEER_V4));
    let peer = t.in_ns(Side::Peer, || Peer::bind(PEER_V4.into()));
    assert_success(&c.channel_bind(0x4000, peer.addr), "ChannelBind");

    c.send_channel(0x4000, b"to the peer", false);
    let (d, from) = peer
        .recv(WAIT)
        .expect("ChannelData was not relayed to the peer namespace");
    assert_eq!(d, b"to the peer");
    assert_eq!(from, relayed);

    peer.send_to(b"to the client", relayed);
    match c.recv_relayed(WAIT) {
        Some(Relayed::Channel { number, data }) => {
            assert_eq!((number, data.as_slice()), (0x4000, &b"to the client"[..]));
        }
        other => panic!("expected ChannelData from the peer, got {other:?}"),
    }
}

on_both_backends!(uturn_relays_across_the_topology);
