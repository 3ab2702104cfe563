//! The reference relay flow, shared by the end-to-end and the interop tests.

use super::*;

/// Runs the whole relay flow against a server that lets 127.0.0.0/8 peers in:
/// Allocate (after the 401 round) → CreatePermission → Send indication reaches
/// the peer from the relayed address → the peer's reply comes back as a Data
/// indication → a peer without permission is not relayed → ChannelBind →
/// ChannelData both ways (with and without padding) → Refresh → Refresh 0
/// deletes → nothing relayed afterwards → Refresh on the deleted allocation
/// gets 437. `relay_ip` is the expected relayed IP, if known.
pub fn full_flow(
    server: SocketAddr,
    user: &str,
    password: &str,
    mode: AuthMode,
    relay_ip: Option<IpAddr>,
) {
    let mut c = TurnClient::new(server, user, password, mode);
    let peer_ip: IpAddr = if server.is_ipv4() {
        Ipv4Addr::LOCALHOST.into()
    } else {
        std::net::Ipv6Addr::LOCALHOST.into()
    };
    full_flow_with(&mut c, peer_ip, relay_ip);
}

pub fn full_flow_with(c: &mut TurnClient, peer_ip: IpAddr, relay_ip: Option<IpAddr>) {
    flow(c, peer_ip, relay_ip, true)
}

/// The same flow without the checks after Refresh 0: coturn's turnserver
/// tears an allocation down asynchronously and still relays a datagram sent
/// right after the Refresh 0 response, which is its business, not ours.
pub fn full_flow_lenient(
    server: SocketAddr,
    user: &str,
    password: &str,
    mode: AuthMode,
    relay_ip: Option<IpAddr>,
) {
    let mut c = TurnClient::new(server, user, password, mode);
    let peer_ip: IpAddr = if server.is_ipv4() {
        Ipv4Addr::LOCALHOST.into()
    } else {
        std::net::Ipv6Addr::LOCALHOST.into()
    };
    flow(&mut c, peer_ip, relay_ip, false)
}

fn flow(c: &mut TurnClient, peer_ip: IpAddr, relay_ip: Option<IpAddr>, strict_after_delete: bool) {
    if peer_ip.is_ipv6() && c.family.is_none() {
        c.family = Some(AddressFamily::V6);
    }
    let relayed = c.allocate();
    if let Some(ip) = relay_ip {
        assert_eq!(
            relayed.ip(),
            ip,
            "XOR-RELAYED-ADDRESS is not on the relay IP"
        );
    }
    let peer = Peer::bind(peer_ip);

    let r = c.create_permission(&[peer.addr]);
    assert_success(&r, &format!("CreatePermission {}", peer.addr));

    // Send indication → peer, from the relayed address.
    c.send_indication(peer.addr, b"hello peer, via Send");
    let (d, from) = peer
        .recv(WAIT)
        .unwrap_or_else(|| panic!("Send indication to {} was not relayed", peer.addr));
    assert_eq!(
        d, b"hello peer, via Send",
        "payload changed on the way to the peer"
    );
    assert_eq!(
        from, relayed,
        "the peer saw a source other than the relayed address"
    );

    // A peer on another IP has no permission: nothing reaches the client.
    let stranger_ip: IpAddr = if peer_ip.is_ipv4() {
        Ipv4Addr::new(127, 0, 0, 2).into()
    } else {
        peer_ip
    };
    if stranger_ip != peer_ip {
        let stranger = Peer::bind(stranger_ip);
        stranger.send_to(b"no permission for me", relayed);
        c.expect_nothing_relayed("a datagram from a peer without permission");
    }

    // Peer → relayed address → Data indication.
    peer.send_to(b"hello client, via Data", relayed);
    match c.recv_relayed(WAIT) {
        Some(Relayed::Data { peer: p, data }) => {
            assert_eq!(p, peer.addr, "XOR-PEER-ADDRESS of the Data indication");
            assert_eq!(data, b"hello client, via Data");
        }
        other => panic!(
            "expected a Data indication from {}, got {other:?}",
            peer.addr
        ),
    }

    // ChannelBind, then ChannelData both ways.
    let ch = 0x4000;
    let r = c.channel_bind(ch, peer.addr);
    assert_success(&r, &format!("ChannelBind 0x{ch:04x} → {}", peer.addr));

    c.send_channel(ch, b"channel out, 21 bytes", false);
    let (d, from) = peer
        .recv(WAIT)
        .expect("ChannelData was not relayed to the peer");
    assert_eq!(d, b"channel out, 21 bytes");
    assert_eq!(from, relayed);
    c.send_channel(ch, b"padded", true);
    let (d, _) = peer
        .recv(WAIT)
        .expect("padded ChannelData was not relayed to the peer");
    assert_eq!(d, b"padded", "UDP padding must not reach the peer");

    peer.send_to(b"channel back", relayed);
    match c.recv_relayed(WAIT) {
        Some(Relayed::Channel { number, data }) => {
            assert_eq!(number, ch, "ChannelData number from the server");
            assert_eq!(data, b"channel back");
        }
        other => panic!("expected ChannelData on 0x{ch:04x} (the channel is bound), got {other:?}"),
    }

    // Refresh keeps it alive.
    let r = c.refresh(300);
    assert_success(&r, "Refresh 300");
    assert!(
        r.lifetime().is_some_and(|l| l > 0),
        "Refresh response LIFETIME: {}",
        r.describe()
    );

    // Refresh 0 deletes.
    let r = c.refresh(0);
    assert_success(&r, "Refresh 0 (delete)");
    if !strict_after_delete {
        return;
    }

    c.send_channel(ch, b"after delete", false);
    peer.expect_nothing("ChannelData after the allocation was deleted");
    c.send_indication(peer.addr, b"after delete");
    peer.expect_nothing("Send indication after the allocation was deleted");
    peer.send_to(b"to a deleted allocation", relayed);
    c.expect_nothing_relayed("a peer datagram to a deleted allocation");

    let r = c.refresh(300);
    assert_error(&r, &[437], "Refresh on a deleted allocation");
}
