//! TCP on the ring against the real kernel, on loopback: multishot accept,
//! multishot receive into the stream buffer group, ordered and partial
//! sends, and closing with requests in flight.

use super::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;

use socket2::SockRef;

fn stream_ring(stream_buffers: u16, stream_capacity: usize, mode: RingMode) -> Option<Uring> {
    ring(8, mode)?;
    Some(
        Uring::new(&UringConfig {
            stream_buffers,
            stream_capacity,
            files: 16,
            ..config_in(8, mode)
        })
        .expect("ring"),
    )
}

/// What a test sees of one stream event (buffers copied out).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Accepted(u64, SockId),
    Data(u64, Vec<u8>),
    Eof(u64),
    Failed(u64),
    Sent(u64, usize),
}

/// One turn: waits up to `wait`, then copies every stream event out (an
/// accepted connection is kept in `accepted`), checking that received bytes
/// sit right after the headroom.
fn turn(u: &mut Uring, wait: Duration, accepted: &mut Vec<TcpStream>) -> Vec<Ev> {
    u.wait(wait).unwrap();
    let mut out = Vec::new();
    for i in 0..u.stream_events() {
        match u.stream_event(i).expect("each event once") {
            StreamEvent::Accepted {
                listener,
                tag,
                stream,
            } => {
                accepted.push(stream);
                out.push(Ev::Accepted(tag, listener));
            }
            StreamEvent::Data(c) => {
                assert!(c.buf.len() >= HEADROOM + c.len + 4, "headroom and tailroom");
                out.push(Ev::Data(c.tag, c.buf[HEADROOM..HEADROOM + c.len].to_vec()));
            }
            StreamEvent::Eof { tag, .. } => out.push(Ev::Eof(tag)),
            StreamEvent::Failed { tag, .. } => out.push(Ev::Failed(tag)),
            StreamEvent::Sent { tag, len, .. } => out.push(Ev::Sent(tag, len)),
        }
        assert!(u.stream_event(i).is_none(), "an event is taken once");
    }
    out
}

/// Turns until `done` says so (or 5 s pass); every event seen.
fn until(
    u: &mut Uring,
    accepted: &mut Vec<TcpStream>,
    mut done: impl FnMut(&[Ev]) -> bool,
) -> Vec<Ev> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while !done(&seen) {
        assert!(Instant::now() < deadline, "timed out; seen {seen:?}");
        seen.extend(turn(u, Duration::from_millis(20), accepted));
    }
    seen
}

/// The bytes of every `Data` event of `tag`, in order.
fn bytes_of(evs: &[Ev], tag: u64) -> Vec<u8> {
    evs.iter()
        .filter_map(|e| match e {
            Ev::Data(t, d) if *t == tag => Some(d.as_slice()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .concat()
}

fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

fn client(to: SocketAddr) -> TcpStream {
    let c = TcpStream::connect(to).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c
}

/// A connection accepted and registered on `u` with tag `tag`, and its
/// client end.
fn connected(u: &mut Uring, lid: SockId, to: SocketAddr, tag: u64) -> (SockId, TcpStream) {
    connected_with(u, lid, to, tag, |_| ())
}

/// As `connected`, with `setup` applied to the accepted socket first.
fn connected_with(
    u: &mut Uring,
    lid: SockId,
    to: SocketAddr,
    tag: u64,
    setup: impl FnOnce(&TcpStream),
) -> (SockId, TcpStream) {
    let c = if tag >= 7 {
        small_client(to)
    } else {
        client(to)
    };
    let mut accepted = Vec::new();
    let evs = until(u, &mut accepted, |e| !e.is_empty());
    assert!(
        matches!(evs[..], [Ev::Accepted(_, l)] if l == lid),
        "{evs:?}"
    );
    let s = accepted.pop().unwrap();
    assert_eq!(s.peer_addr().unwrap(), c.local_addr().unwrap());
    setup(&s);
    let id = u.open_stream(s, tag).unwrap();
    (id, c)
}

/// Small socket buffers on the server's side: a big send cannot go at once.
fn small_send_buffer(s: &TcpStream) {
    SockRef::from(s).set_send_buffer_size(16 * 1024).unwrap();
}

/// A client whose receive buffer is small (set before it connects, so that
/// the window it offers stays small).
fn small_client(to: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&to.into()).unwrap();
    let c: TcpStream = s.into();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn probe_streams_accepts_this_kernel() {
    if probe().is_err() {
        return;
    }
    probe_streams().expect("native streams on this kernel");
}

#[test]
fn stream_sockets_need_stream_buffers() {
    let Some(mut u) = ring(8, RingMode::DeferTaskrun) else {
        return;
    };
    let (l, _) = listener();
    assert_eq!(
        u.listen(l, 1).unwrap_err().kind(),
        io::ErrorKind::Unsupported
    );
}

fn multishot_accept_and_receive_put_bytes_after_the_headroom(mode: RingMode) {
    let Some(mut u) = stream_ring(16, 256, mode) else {
        return;
    };
    let (l, to) = listener();
    let lid = u.listen(l, 100).unwrap();
    // One multishot accept takes every connection.
    let clients: Vec<TcpStream> = (0..3).map(|_| client(to)).collect();
    let mut accepted = Vec::new();
    let evs = until(&mut u, &mut accepted, |e| e.len() >= 3);
    assert_eq!(evs, vec![Ev::Accepted(100, lid); 3]);
    assert_eq!(u.stats().recv_calls, 1, "armed once");
    let mut peers: Vec<SocketAddr> = accepted.iter().map(|s| s.peer_addr().unwrap()).collect();
    let mut locals: Vec<SocketAddr> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
    peers.sort();
    locals.sort();
    assert_eq!(peers, locals);
    let mut by_port: Vec<(u16, TcpStream)> = accepted
        .drain(..)
        .map(|s| (s.peer_addr().unwrap().port(), s))
        .collect();
    by_port.sort_by_key(|(p, _)| *p);
    let mut clients: Vec<TcpStream> = clients;
    clients.sort_by_key(|c| c.local_addr().unwrap().port());
    for (i, (_, s)) in by_port.into_iter().enumerate() {
        u.open_stream(s, i as u64).unwrap();
    }
    // Each client's bytes come back in order under its tag, more than one
    // buffer's worth included.
    let want: Vec<Vec<u8>> = (0..3).map(|i| pattern(100 + 300 * i)).collect();
    for (c, w) in clients.iter_mut().zip(&want) {
        c.write_all(w).unwrap();
    }
    let evs = until(&mut u, &mut accepted, |e| {
        (0..3).all(|t| bytes_of(e, t).len() == want[t as usize].len())
    });
    for t in 0..3 {
        assert_eq!(bytes_of(&evs, t), want[t as usize]);
    }
    // A client that closes its side ends with Eof.
    clients[1].shutdown(Shutdown::Write).unwrap();
    let evs = until(&mut u, &mut accepted, |e| e.contains(&Ev::Eof(1)));
    assert_eq!(evs, vec![Ev::Eof(1)]);
    u.end_turn();
    assert_eq!(
        u.stream_buffers_out(),
        0,
        "every buffer is back in the ring"
    );
    let st = u.stats();
    assert_eq!((st.stream_errors, st.ring_errors), (0, 0), "{st:?}");
    assert!(u.shutdown(Duration::from_secs(2)), "everything settles");
}

fn a_dry_stream_buffer_ring_is_rearmed_and_loses_nothing(mode: RingMode) {
    let Some(mut u) = stream_ring(2, 64, mode) else {
        return;
    };
    let (l, to) = listener();
    let lid = u.listen(l, 100).unwrap();
    let (_, mut c) = connected(&mut u, lid, to, 5);
    let want = pattern(64 * 40);
    c.write_all(&want).unwrap();
    let mut accepted = Vec::new();
    let evs = until(&mut u, &mut accepted, |e| {
        bytes_of(e, 5).len() == want.len()
    });
    assert_eq!(bytes_of(&evs, 5), want);
    let st = u.stats();
    assert!(st.stream_rx_no_buffers >= 1, "ran dry: {st:?}");
    assert!(st.rx_rearms >= 1, "re-armed: {st:?}");
    assert_eq!(st.stream_errors, 0);
}

fn sends_go_whole_and_in_order_and_partial_ones_resume(mode: RingMode) {
    let Some(mut u) = stream_ring(8, 256, mode) else {
        return;
    };
    let (l, to) = listener();
    let lid = u.listen(l, 100).unwrap();
    // Small buffers on both sides: 2 MiB cannot go at once.
    let (id, c) = connected_with(&mut u, lid, to, 7, small_send_buffer);
    let big = pattern(2 << 20);
    assert!(u.stream_idle(id));
    assert_eq!(u.stream_send(id, |b| b.extend_from_slice(&big)), Some(()));
    assert!(!u.stream_idle(id), "one send in flight");
    assert_eq!(u.stream_send(id, |_| ()), None, "no second one meanwhile");
    let mut accepted = Vec::new();
    // Nothing is read yet: the send cannot finish.
    let evs = turn(&mut u, Duration::from_millis(50), &mut accepted);
    assert!(evs.is_empty(), "{evs:?}");
    assert!(u.stats().stream_tx_partial >= 1, "{:?}", u.stats());
    let reader = thread::spawn(move || {
        let mut c = c;
        let mut got = vec![0u8; 2 << 20];
        c.read_exact(&mut got).unwrap();
        let mut tail = Vec::new();
        c.read_to_end(&mut tail).unwrap();
        (got, tail)
    });
    let evs = until(&mut u, &mut accepted, |e| !e.is_empty());
    assert_eq!(evs, vec![Ev::Sent(7, 2 << 20)]);
    assert!(u.stream_idle(id));
    // The next send follows the first, then the connection closes.
    u.stream_send(id, |b| b.extend_from_slice(b"second"))
        .unwrap();
    let evs = until(&mut u, &mut accepted, |e| !e.is_empty());
    assert_eq!(evs, vec![Ev::Sent(7, 6)]);
    u.close_stream(id, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(2);
    while u.ctl().files[id.0 as usize].state != SlotState::Free {
        assert!(Instant::now() < deadline, "the slot settles");
        turn(&mut u, Duration::from_millis(10), &mut accepted);
    }
    let (got, tail) = reader.join().unwrap();
    assert!(got == big, "the bytes arrived in order");
    assert_eq!(tail, b"second");
    let st = u.stats();
    assert_eq!((st.stream_errors, st.ring_errors), (0, 0), "{st:?}");
    assert!(u.shutdown(Duration::from_secs(2)));
}

fn a_close_cancels_what_waits_and_frees_the_slot_last(mode: RingMode) {
    let Some(mut u) = stream_ring(8, 256, mode) else {
        return;
    };
    let (l, to) = listener();
    let lid = u.listen(l, 100).unwrap();
    let (id, mut c) = connected_with(&mut u, lid, to, 7, small_send_buffer);
    // A send waiting for room, and an armed receive.
    u.stream_send(id, |b| b.extend_from_slice(&pattern(4 << 20)))
        .unwrap();
    let mut accepted = Vec::new();
    assert!(turn(&mut u, Duration::from_millis(20), &mut accepted).is_empty());
    assert!(u.ctl().files[id.0 as usize].sends == 1);
    // Closed: the last bytes cannot follow a send that did not finish.
    u.close_stream(id, b"never".to_vec());
    c.write_all(b"late").unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while u.ctl().files[id.0 as usize].state != SlotState::Free {
        assert!(Instant::now() < deadline, "the slot settles");
        let evs = turn(&mut u, Duration::from_millis(20), &mut accepted);
        assert!(evs.is_empty(), "nothing from a closed connection: {evs:?}");
    }
    let st = u.stats().clone();
    assert_eq!((st.cancel_errors, st.ring_errors), (0, 0), "{st:?}");
    // The descriptor is closed: the client reads what was sent, then the
    // end (or a reset, its own bytes having been left unread).
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    assert!(got.len() < 4 << 20);
    assert!(!got.windows(5).any(|w| w == b"never"));
    // The slot is reused by the next connection, under its own tag.
    let (id2, mut c2) = connected(&mut u, lid, to, 6);
    assert_eq!(id2, id, "the freed slot is the next one taken");
    c2.write_all(b"new").unwrap();
    let evs = until(&mut u, &mut accepted, |e| !e.is_empty());
    assert_eq!(evs, vec![Ev::Data(6, b"new".to_vec())]);
    assert!(u.shutdown(Duration::from_secs(2)));
}

fn a_closing_connection_gets_its_last_bytes(mode: RingMode) {
    let Some(mut u) = stream_ring(8, 256, mode) else {
        return;
    };
    let (l, to) = listener();
    let lid = u.listen(l, 100).unwrap();
    let (id, mut c) = connected(&mut u, lid, to, 3);
    // The client asks, then closes its side; the answer and the goodbye
    // still reach it, in order, after the send in flight.
    c.write_all(b"request").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut accepted = Vec::new();
    let evs = until(&mut u, &mut accepted, |e| e.contains(&Ev::Eof(3)));
    assert_eq!(bytes_of(&evs, 3), b"request");
    u.stream_send(id, |b| b.extend_from_slice(b"answer "))
        .unwrap();
    u.close_stream(id, b"goodbye".to_vec());
    let deadline = Instant::now() + Duration::from_secs(2);
    while u.ctl().files[id.0 as usize].state != SlotState::Free {
        assert!(Instant::now() < deadline, "the slot settles");
        assert!(turn(&mut u, Duration::from_millis(20), &mut accepted).is_empty());
    }
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"answer goodbye");
    let st = u.stats();
    assert_eq!((st.stream_errors, st.ring_errors), (0, 0), "{st:?}");
}

fn frames_reach_peers_from_a_stream_event(mode: RingMode) {
    let Some(mut u) = stream_ring(8, 256, mode) else {
        return;
    };
    let (l, to) = listener();
    let lid = u.listen(l, 100).unwrap();
    let relay = nonblocking_udp();
    let relay_addr = relay.local_addr().unwrap();
    let rid = u.ctl().add(relay, 9).unwrap();
    let peer = udp();
    let (_, mut c) = connected(&mut u, lid, to, 4);
    c.write_all(b"to the peer").unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut queued = false;
    while !queued {
        assert!(Instant::now() < deadline);
        u.wait(Duration::from_millis(20)).unwrap();
        for i in 0..u.stream_events() {
            if let Some(StreamEvent::Data(mut ch)) = u.stream_event(i) {
                let bytes = ch.buf[HEADROOM..HEADROOM + ch.len].to_vec();
                assert!(ch.out.send_to(rid, peer.local_addr().unwrap(), &bytes));
                // Longer than a reply area: the caller's to send otherwise.
                assert!(!ch.out.send_to(rid, peer.local_addr().unwrap(), &[0; 1281]));
                queued = true;
            }
        }
    }
    // Submitted with the next wait.
    peer.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + Duration::from_secs(2);
    let got = loop {
        assert!(Instant::now() < deadline, "the datagram arrives");
        u.wait(Duration::from_millis(10)).unwrap();
        if let Ok((n, from)) = peer.recv_from(&mut buf) {
            break (buf[..n].to_vec(), from);
        }
    };
    assert_eq!(got, (b"to the peer".to_vec(), relay_addr));
    assert!(u.shutdown(Duration::from_secs(2)));
    assert_eq!(u.stats().tx_datagrams, 1);
}

fn a_receive_for_a_connection_closed_this_turn_gives_its_buffer_back(mode: RingMode) {
    // Buffers of 64 bytes: one write makes several receives, reaped together.
    let Some(mut u) = stream_ring(32, 64, mode) else {
        return;
    };
    let (l, to) = listener();
    let lid = u.listen(l, 100).unwrap();
    let (id, mut c) = connected(&mut u, lid, to, 2);
    c.write_all(&pattern(64 * 12)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    // Until a turn brings two receives or more: the first is taken, then the
    // connection is closed, and the rest are no longer handed out.
    loop {
        assert!(Instant::now() < deadline, "no turn with several receives");
        u.wait(Duration::from_millis(20)).unwrap();
        if u.stream_events() < 2 {
            // Too few at once: taken, and tried again with more bytes.
            for i in 0..u.stream_events() {
                let _ = u.stream_event(i);
            }
            c.write_all(&pattern(64 * 12)).unwrap();
            continue;
        }
        assert!(matches!(u.stream_event(0), Some(StreamEvent::Data(_))));
        u.close_stream(id, Vec::new());
        for i in 1..u.stream_events() {
            assert!(u.stream_event(i).is_none(), "nothing after the close");
        }
        break;
    }
    u.end_turn();
    assert_eq!(
        u.stream_buffers_out(),
        0,
        "the buffers of receives not handed out are back in the ring"
    );
    assert!(u.shutdown(Duration::from_secs(2)));
}

fn a_detached_connection_hands_over_its_last_receives_and_its_descriptor(mode: RingMode) {
    let Some(mut u) = stream_ring(32, 64, mode) else {
        return;
    };
    let (l, to) = listener();
    let lid = u.listen(l, 100).unwrap();
    let (id, mut c) = connected(&mut u, lid, to, 4);
    let mut accepted = Vec::new();
    c.write_all(b"request").unwrap();
    let evs = until(&mut u, &mut accepted, |e| bytes_of(e, 4) == b"request");
    assert_eq!(bytes_of(&evs, 4), b"request");
    // Detached with an answer; the client's bytes after it (sent before it
    // saw the answer) come as events until the descriptor is handed back,
    // and what the ring did not take is still in the socket.
    u.detach_stream(id, b"answer".to_vec());
    let early = pattern(64 * 20);
    c.write_all(&early).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    let mut sock = loop {
        assert!(Instant::now() < deadline, "the descriptor comes back");
        got.extend(bytes_of(
            &turn(&mut u, Duration::from_secs(5), &mut accepted),
            4,
        ));
        if let Some((tag, sock)) = u.take_detached().pop() {
            assert_eq!(tag, 4);
            // The wait that freed it did not sleep: the descriptor is the
            // program's to use at once.
            assert_eq!(u.last_wait().1, Duration::ZERO);
            break sock;
        }
    };
    sock.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; early.len()];
    while got.len() < early.len() {
        assert!(Instant::now() < deadline, "the rest is in the socket");
        match sock.read(&mut buf) {
            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => thread::sleep(Duration::from_millis(5)),
        }
    }
    assert!(got == early, "every byte after the answer, in order");
    let mut answer = [0u8; 6];
    c.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"answer");
    u.end_turn();
    assert_eq!(u.stream_buffers_out(), 0);
    assert!(u.shutdown(Duration::from_secs(2)));
}

in_every_mode!(
    multishot_accept_and_receive_put_bytes_after_the_headroom,
    a_dry_stream_buffer_ring_is_rearmed_and_loses_nothing,
    sends_go_whole_and_in_order_and_partial_ones_resume,
    a_close_cancels_what_waits_and_frees_the_slot_last,
    a_closing_connection_gets_its_last_bytes,
    frames_reach_peers_from_a_stream_event,
    a_receive_for_a_connection_closed_this_turn_gives_its_buffer_back,
    a_detached_connection_hands_over_its_last_receives_and_its_descriptor,
);
