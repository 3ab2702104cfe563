//! The io_uring driver against the real kernel, on loopback.
//!
//! Without a usable io_uring these tests fail, saying why, unless
//! `UTURN_SKIP_URING=1` is set (then they print SKIPPED and pass).

use super::ctl::SlotState;
use super::*;
use crate::TxBytes;
use std::net::UdpSocket;

const HEADROOM: usize = 48;

fn config(buffers: u16) -> UringConfig {
    config_in(buffers, RingMode::DeferTaskrun)
}

fn config_in(buffers: u16, flags: RingMode) -> UringConfig {
    UringConfig {
        sq_entries: 64,
        cq_entries: 256,
        buffers,
        headroom: HEADROOM,
        capacity: 2048,
        tailroom: 4,
        tx_slots: 32,
        reply_len: 1280,
        stream_buffers: 0,
        stream_capacity: 0,
        files: 8,
        flags,
        batch_wait: Duration::ZERO,
        gso: false,
    }
}

/// A ring with `flags`, or None when io_uring is unavailable and skipping
/// is allowed.
fn ring(buffers: u16, flags: RingMode) -> Option<Uring> {
    if let Err(why) = probe() {
        if std::env::var("UTURN_SKIP_URING").is_ok_and(|v| v == "1") {
            println!("SKIPPED: io_uring unavailable ({why})");
            return None;
        }
        panic!("io_uring unavailable ({why}); set UTURN_SKIP_URING=1 to skip the io_uring tests");
    }
    let u = Uring::new(&config_in(buffers, flags)).expect("ring");
    assert_eq!(u.mode(), flags, "this kernel refused {}", flags.name());
    Some(u)
}

/// Runs each named scenario on a ring of every setup-flag tier, so that the
/// fallbacks older kernels get are tested too.
macro_rules! in_every_mode {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                use super::RingMode;
                #[test]
                fn defer_taskrun() {
                    super::$name(RingMode::DeferTaskrun);
                }
                #[test]
                fn coop_taskrun() {
                    super::$name(RingMode::CoopTaskrun);
                }
                #[test]
                fn no_flags() {
                    super::$name(RingMode::Plain);
                }
            }
        )+
    };
}

fn udp() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

fn nonblocking_udp() -> UdpSocket {
    let s = udp();
    s.set_nonblocking(true).unwrap();
    s
}

/// What a test sees of one datagram.
#[derive(Debug, PartialEq, Eq)]
struct Got {
    tag: u64,
    from: SocketAddr,
    data: Vec<u8>,
}

/// Waits until `want` datagrams came (or 2 s passed), checking that each
/// payload sits right after the headroom.
fn collect(u: &mut Uring, want: usize) -> Vec<Got> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        let n = u.wait(Duration::from_millis(50)).unwrap();
        for i in 0..n {
            let d = u.datagram(i).expect("datagram");
            assert!(d.buf.len() >= HEADROOM + 2048 + 4);
            got.push(Got {
                tag: d.tag,
                from: d.from,
                data: d.buf[HEADROOM..HEADROOM + d.len].to_vec(),
            });
        }
    }
    got
}

fn recv(s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 4096];
    let (n, from) = s.recv_from(&mut buf).expect("datagram within 2 s");
    (buf[..n].to_vec(), from)
}

#[test]
fn probe_accepts_this_kernel() {
    match probe() {
        Ok(mode) => println!("io_uring usable, setup flags: {}", mode.name()),
        Err(why) => {
            assert!(!why.to_string().is_empty());
            println!("io_uring unavailable: {why}");
        }
    }
}

fn multishot_receives_a_batch_with_sources_after_the_headroom(mode: RingMode) {
    let Some(mut u) = ring(64, mode) else { return };
    let rx = nonblocking_udp();
    let to = rx.local_addr().unwrap();
    u.ctl().add(rx, 7).unwrap();
    let (a, b) = (udp(), udp());
    for i in 0..10u8 {
        let from = if i % 2 == 0 { &a } else { &b };
        from.send_to(&vec![i; usize::from(i) + 1], to).unwrap();
    }
    let got = collect(&mut u, 10);
    let want: Vec<Got> = (0..10u8)
        .map(|i| Got {
            tag: 7,
            from: if i % 2 == 0 { &a } else { &b }.local_addr().unwrap(),
            data: vec![i; usize::from(i) + 1],
        })
        .collect();
    assert_eq!(got, want);
    let st = u.stats();
    assert_eq!((st.rx_datagrams, st.recv_calls, st.rx_rearms), (10, 1, 0));
    assert_eq!(st.rx_bytes, 55);
    u.end_turn();
    assert_eq!(u.buffers_out(), 0, "every buffer is back in the ring");
}

fn a_tiny_buffer_ring_runs_dry_and_is_rearmed(mode: RingMode) {
    let Some(mut u) = ring(2, mode) else { return };
    let rx = nonblocking_udp();
    let to = rx.local_addr().unwrap();
    u.ctl().add(rx, 1).unwrap();
    let s = udp();
    for i in 0..9u8 {
        s.send_to(&[i; 3], to).unwrap();
    }
    let got = collect(&mut u, 9);
    let data: Vec<Vec<u8>> = got.iter().map(|g| g.data.clone()).collect();
    assert_eq!(data, (0..9u8).map(|i| vec![i; 3]).collect::<Vec<_>>());
    let st = u.stats();
    assert!(st.rx_no_buffers >= 1, "ENOBUFS seen: {st:?}");
    assert!(st.rx_rearms >= 1, "re-armed: {st:?}");
    assert_eq!(st.rx_errors, 0);
    u.end_turn();
    assert_eq!(u.buffers_out(), 0);
}

fn truncated_datagrams_are_dropped_and_counted(mode: RingMode) {
    let Some(mut u) = ring(8, mode) else { return };
    let rx = nonblocking_udp();
    let to = rx.local_addr().unwrap();
    u.ctl().add(rx, 1).unwrap();
    let s = udp();
    s.send_to(&[7u8; 3000], to).unwrap();
    s.send_to(b"ok", to).unwrap();
    let got = collect(&mut u, 1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, b"ok");
    assert_eq!(u.stats().rx_truncated, 1);
    u.end_turn();
    assert_eq!(u.buffers_out(), 0);
}

fn sends_from_several_sockets_go_out_in_one_enter(mode: RingMode) {
    let Some(mut u) = ring(16, mode) else { return };
    let listener = nonblocking_udp();
    let to = listener.local_addr().unwrap();
    let lid = u.ctl().add(listener, 100).unwrap();
    let relays: Vec<UdpSocket> = (0..3).map(|_| nonblocking_udp()).collect();
    let relay_addrs: Vec<SocketAddr> = relays.iter().map(|r| r.local_addr().unwrap()).collect();
    let ids: Vec<SockId> = relays
        .into_iter()
        .enumerate()
        .map(|(i, r)| u.ctl().add(r, i as u64).unwrap())
        .collect();
    let client = udp();
    for i in 0..3u8 {
        client.send_to(&[b'a' + i; 5], to).unwrap();
    }
    let peers: Vec<UdpSocket> = (0..3).map(|_| udp()).collect();
    // Wait for all three, then answer each from another socket.
    let mut answered = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while answered < 3 && Instant::now() < deadline {
        let n = u.wait(Duration::from_millis(50)).unwrap();
        for i in 0..n {
            let d = u.datagram(i).unwrap();
            assert_eq!((d.tag, d.sock), (100, lid));
            let k = usize::from(d.buf[HEADROOM] - b'a');
            if k == 1 {
                // Answer from the scratch area, through the listener.
                d.scratch[..5].copy_from_slice(b"reply");
                assert!(u.send(i, lid, peers[k].local_addr().unwrap(), TxBytes::Reply(5)));
            } else {
                // Forward 3 bytes of the payload, in place, from relay k.
                let range = HEADROOM + 1..HEADROOM + 4;
                assert!(u.send(
                    i,
                    ids[k],
                    peers[k].local_addr().unwrap(),
                    TxBytes::Rx(range)
                ));
            }
            // One send per datagram: its slot is used.
            assert!(!u.send(i, ids[0], peers[0].local_addr().unwrap(), TxBytes::Reply(1)));
            answered += 1;
        }
    }
    assert_eq!(answered, 3);
    let before = u.stats().clone();
    let started = Instant::now();
    assert_eq!(u.wait(Duration::from_millis(100)).unwrap(), 0);
    // The sends' own completions, already there when the wait begins, do
    // not end it: nothing else came, so it lasted until the timeout.
    assert!(started.elapsed() >= Duration::from_millis(90));
    let after = u.stats().clone();
    assert_eq!(after.wakeups - before.wakeups, 1, "one io_uring_enter");
    assert_eq!(after.send_calls - before.send_calls, 1);
    assert_eq!(after.tx_datagrams - before.tx_datagrams, 3, "{after:?}");
    assert_eq!(after.tx_dropped(), 3, "the three refused second sends");
    assert_eq!(recv(&peers[0]), (b"aaa".to_vec(), relay_addrs[0]));
    assert_eq!(recv(&peers[1]), (b"reply".to_vec(), to));
    assert_eq!(recv(&peers[2]), (b"ccc".to_vec(), relay_addrs[2]));
    u.end_turn();
    assert_eq!(u.buffers_out(), 0, "send completions gave the buffers back");
}

fn closing_a_socket_with_an_armed_receive_neither_leaks_nor_misroutes(mode: RingMode) {
    let Some(mut u) = ring(16, mode) else { return };
    let listener = nonblocking_udp();
    let lto = listener.local_addr().unwrap();
    let lid = u.ctl().add(listener, 100).unwrap();
    let a = nonblocking_udp();
    let a_addr = a.local_addr().unwrap();
    let aid = u.ctl().add(a, 1).unwrap();
    u.wait(Duration::ZERO).unwrap(); // arms both receives in the kernel

    // A datagram to the listener is answered from A, and A is closed in
    // the same turn: the send still goes out, and A's slot stays taken
    // until it has completed.
    let peer = udp();
    let client = udp();
    client.send_to(b"fwd-me", lto).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut sent = false;
    while !sent && Instant::now() < deadline {
        let n = u.wait(Duration::from_millis(50)).unwrap();
        for i in 0..n {
            let d = u.datagram(i).unwrap();
            assert_eq!(d.sock, lid);
            let range = HEADROOM..HEADROOM + d.len;
            d.ctl.close(aid);
            assert!(
                !u.send(i, aid, peer.local_addr().unwrap(), TxBytes::Rx(range)),
                "a closing socket cannot send"
            );
            sent = true;
        }
    }
    assert!(sent);
    assert!(u.stats().tx_unroutable == 1);
    // Datagrams reaching A after its close are never delivered.
    client.send_to(b"late", a_addr).unwrap();
    let other = nonblocking_udp();
    let bid_taken = u.ctl().add(other, 3).unwrap();
    assert_ne!(bid_taken, aid, "a closing slot is not reused");
    u.ctl().close(bid_taken);

    // Settle: the receive's final completion and the cancel's arrive.
    let deadline = Instant::now() + Duration::from_secs(2);
    while u.ctl().files[aid.0 as usize].state != SlotState::Free && Instant::now() < deadline {
        let n = u.wait(Duration::from_millis(20)).unwrap();
        for i in 0..n {
            assert!(u.datagram(i).is_none_or(|d| d.tag == 100), "nothing from A");
        }
    }
    u.end_turn();
    assert_eq!(u.ctl().files[aid.0 as usize].state, SlotState::Free);
    let st = u.stats();
    assert!(st.rx_cancelled >= 1, "{st:?}");
    assert_eq!((st.cancel_errors, st.ring_errors), (0, 0), "{st:?}");
    // The descriptor is closed: A's port is free again.
    drop(UdpSocket::bind(a_addr).expect("A's port was released"));

    // The slot is reused by a new socket, and only its datagrams carry its tag.
    let b = nonblocking_udp();
    let b_addr = b.local_addr().unwrap();
    let bid = u.ctl().add(b, 2).unwrap();
    assert!(bid == aid || bid == bid_taken);
    client.send_to(b"to-b", b_addr).unwrap();
    let got = collect(&mut u, 1);
    assert_eq!(
        got,
        vec![Got {
            tag: 2,
            from: client.local_addr().unwrap(),
            data: b"to-b".to_vec()
        }]
    );
    u.end_turn();
    assert_eq!(u.buffers_out(), 0);
    assert!(u.shutdown(Duration::from_secs(2)), "everything settles");
}

fn a_closed_socket_waits_for_its_sends(mode: RingMode) {
    let Some(mut u) = ring(16, mode) else { return };
    let listener = nonblocking_udp();
    let lto = listener.local_addr().unwrap();
    u.ctl().add(listener, 100).unwrap();
    let a = nonblocking_udp();
    let a_addr = a.local_addr().unwrap();
    let aid = u.ctl().add(a, 1).unwrap();
    let client = udp();
    let peer = udp();
    client.send_to(b"payload", lto).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut queued = false;
    while !queued && Instant::now() < deadline {
        let n = u.wait(Duration::from_millis(50)).unwrap();
        for i in 0..n {
            let len = u.datagram(i).unwrap().len;
            assert!(u.send(
                i,
                aid,
                peer.local_addr().unwrap(),
                TxBytes::Rx(HEADROOM..HEADROOM + len)
            ));
            queued = true;
        }
    }
    assert!(queued);
    // Closed after the send was queued but before it was submitted.
    u.ctl().close(aid);
    assert_eq!(u.ctl().files[aid.0 as usize].sends, 1);
    let deadline = Instant::now() + Duration::from_secs(2);
    while u.ctl().files[aid.0 as usize].state != SlotState::Free && Instant::now() < deadline {
        u.wait(Duration::from_millis(20)).unwrap();
    }
    u.end_turn();
    assert_eq!(recv(&peer), (b"payload".to_vec(), a_addr));
    assert_eq!(u.ctl().files[aid.0 as usize].state, SlotState::Free);
    assert_eq!(u.stats().tx_datagrams, 1);
    assert_eq!(u.buffers_out(), 0);
}

#[test]
fn layouts_out_of_range_are_refused() {
    for headroom in [16 + 27, 16 + 129] {
        let cfg = UringConfig {
            headroom,
            ..config(8)
        };
        assert_eq!(
            Uring::new(&cfg).err().map(|e| e.kind()),
            Some(io::ErrorKind::InvalidInput)
        );
    }
    let cfg = UringConfig {
        buffers: 3,
        ..config(8)
    };
    assert!(Uring::new(&cfg).is_err());
}

fn ipv6_sources_fit_the_name_area(mode: RingMode) {
    let Some(mut u) = ring(8, mode) else { return };
    let Ok(rx) = UdpSocket::bind("[::1]:0") else {
        println!("SKIPPED: cannot bind [::1]");
        return;
    };
    rx.set_nonblocking(true).unwrap();
    let to = rx.local_addr().unwrap();
    u.ctl().add(rx, 6).unwrap();
    let s = UdpSocket::bind("[::1]:0").unwrap();
    s.send_to(b"over v6", to).unwrap();
    let got = collect(&mut u, 1);
    assert_eq!(
        got,
        vec![Got {
            tag: 6,
            from: s.local_addr().unwrap(),
            data: b"over v6".to_vec()
        }]
    );
}

fn a_wake_up_from_another_thread_ends_the_wait(mode: RingMode) {
    let Some(mut u) = ring(16, mode) else { return };
    let fd = std::sync::Arc::new(crate::wake::WakeFd::new().unwrap());
    u.watch_wake(std::sync::Arc::clone(&fd));
    u.wait(Duration::ZERO).unwrap(); // arms the poll
    assert!(!u.take_wake());
    for _ in 0..2 {
        let waker = std::sync::Arc::clone(&fd);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            waker.wake();
        });
        let started = Instant::now();
        let mut woken = false;
        while !woken && started.elapsed() < Duration::from_secs(5) {
            u.wait(Duration::from_secs(5)).unwrap();
            woken = u.take_wake();
        }
        assert!(woken);
        assert!(started.elapsed() < Duration::from_secs(2), "woken late");
        assert!(!u.take_wake(), "said once");
        t.join().unwrap();
    }
    assert_eq!(u.stats().ring_errors, 0);
}

fn batched_waits_ask_for_more_only_under_load(mode: RingMode) {
    let Some(_) = ring(16, mode) else { return };
    let window = Duration::from_millis(100);
    let mut u = Uring::new(&UringConfig {
        batch_wait: window,
        ..config_in(64, mode)
    })
    .expect("ring");
    let rx = nonblocking_udp();
    let to = rx.local_addr().unwrap();
    u.ctl().add(rx, 3).unwrap();
    u.wait(Duration::ZERO).unwrap(); // arms the receive
    let tx = udp();
    // Quiet: wait for one datagram, as long as the caller says.
    tx.send_to(b"one", to).unwrap();
    assert_eq!(collect(&mut u, 1).len(), 1);
    u.wait(Duration::from_millis(30)).unwrap();
    assert_eq!(u.last_wait(), (1, Duration::from_millis(30)));
    // A turn that brought several: the next wait asks for a batch, for the
    // window at most (or the caller's timeout, if shorter).
    for i in 0..5u8 {
        tx.send_to(&[i], to).unwrap();
    }
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while got < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        let n = u.wait(Duration::from_secs(1)).unwrap();
        for i in 0..n {
            assert!(u.datagram(i).is_some());
        }
        got += n;
        if n >= 2 {
            u.wait(Duration::from_secs(5)).unwrap();
            assert_eq!(u.last_wait(), (MAX_BATCH_WAIT, window));
            break;
        }
    }
    assert!(got >= 2, "no turn brought two datagrams: {got}");
    // A lone datagram still comes back from a batched wait (at the window).
    tx.send_to(b"late", to).unwrap();
    let late = collect(&mut u, 1);
    assert!(late.iter().any(|g| g.data == b"late"), "{late:?}");
    assert_eq!(u.stats().ring_errors, 0);
}

fn same_size_sends_to_one_destination_leave_as_one_gso_send(mode: RingMode) {
    let Some(_) = ring(16, mode) else { return };
    let mut u = Uring::new(&UringConfig {
        gso: true,
        ..config_in(64, mode)
    })
    .expect("ring");
    let listener = nonblocking_udp();
    let to = listener.local_addr().unwrap();
    let lid = u.ctl().add(listener, 1).unwrap();
    // Client a sends six datagrams of 40 bytes and one of 10; client b
    // sends three of 40, interleaved; client c sends 40, 80, 20 bytes (the
    // 80 cannot join the 40's send, and the 20 must not overtake it). Each
    // is echoed to its sender.
    let (a, b, c) = (udp(), udp(), udp());
    let mut want_a = Vec::new();
    let mut want_b = Vec::new();
    let want_c: Vec<Vec<u8>> = [40usize, 80, 20]
        .iter()
        .enumerate()
        .map(|(i, &n)| vec![b'0' + i as u8; n])
        .collect();
    for d in &want_c {
        c.send_to(d, to).unwrap();
    }
    for i in 0..7u8 {
        let d = vec![b'A' + i; if i == 6 { 10 } else { 40 }];
        a.send_to(&d, to).unwrap();
        want_a.push(d);
        if i < 3 {
            let d = vec![b'a' + i; 40];
            b.send_to(&d, to).unwrap();
            want_b.push(d);
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while seen < 13 && Instant::now() < deadline {
        let n = u.wait(Duration::from_millis(50)).unwrap();
        for i in 0..n {
            let d = u.datagram(i).unwrap();
            let (from, len) = (d.from, d.len);
            assert!(u.send(i, lid, from, TxBytes::Rx(HEADROOM..HEADROOM + len)));
            seen += 1;
        }
    }
    assert_eq!(seen, 13);
    u.wait(Duration::from_millis(50)).unwrap();
    let got_a: Vec<Vec<u8>> = (0..7).map(|_| recv(&a).0).collect();
    let got_b: Vec<Vec<u8>> = (0..3).map(|_| recv(&b).0).collect();
    let got_c: Vec<Vec<u8>> = (0..3).map(|_| recv(&c).0).collect();
    assert_eq!(got_a, want_a, "every datagram to a, whole and in order");
    assert_eq!(got_b, want_b, "every datagram to b, whole and in order");
    assert_eq!(got_c, want_c, "every datagram to c, whole and in order");
    let st = u.stats();
    println!("tx_coalesced {} of 13", st.tx_coalesced);
    assert_eq!(st.tx_datagrams, 13, "{st:?}");
    assert_eq!(st.tx_dropped(), 0, "{st:?}");
    // How many merged depends on how the receives fell into turns; with
    // all ten waiting before the first wait, they come in one turn.
    assert!(st.tx_coalesced >= 1, "nothing was merged: {st:?}");
    assert!(
        st.tx_coalesced <= 9,
        "at most 6 for a, 2 for b, 1 for c (the 20 after the 80): {st:?}"
    );
    u.end_turn();
    assert_eq!(u.buffers_out(), 0, "GSO completions gave every buffer back");
}

in_every_mode!(
    same_size_sends_to_one_destination_leave_as_one_gso_send,
    batched_waits_ask_for_more_only_under_load,
    a_wake_up_from_another_thread_ends_the_wait,
    multishot_receives_a_batch_with_sources_after_the_headroom,
    a_tiny_buffer_ring_runs_dry_and_is_rearmed,
    truncated_datagrams_are_dropped_and_counted,
    sends_from_several_sockets_go_out_in_one_enter,
    closing_a_socket_with_an_armed_receive_neither_leaks_nor_misroutes,
    a_closed_socket_waits_for_its_sends,
    ipv6_sources_fit_the_name_area,
);

mod streams;
