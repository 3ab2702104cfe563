//! The relay scenario's receiver threads: every socket drained in
//! `recvmmsg` batches (uturn-io's `UdpBatch`, as in uturn's shards), each
//! datagram's flow, sequence and send time read back for delivery,
//! reordering and one-way latency.

use std::net::UdpSocket;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::Duration;

use hdrhistogram::Histogram;
use uturn_io::process::monotonic_ns;
use uturn_io::syscall::{Events, Poller, UdpBatch};
use uturn_io::BatchLayout;
use uturn_stun::{attr, ChannelData, Class, Message, Method};

use super::measure::Live;
use super::{directions, FlowInfo, Mode, RelayArgs, C2P, P2C};
use crate::cpu::ThreadMeter;
use crate::payload;
use crate::stats;

/// recvmmsg batches taken from one ready socket before the next.
const MAX_BATCHES_PER_READY: usize = 8;
/// Longest wait for readiness, so that `stop` is noticed.
const MAX_WAIT: Duration = Duration::from_millis(2);

/// What one receiver thread counted.
pub(super) struct RecvResult {
    pub(super) delivered: [u64; 2],
    pub(super) bytes: [u64; 2],
    pub(super) reordered: [u64; 2],
    pub(super) hist: [Histogram<u64>; 2],
    pub(super) foreign: u64,
    pub(super) cpu_util: f64,
}

/// The sockets of every receiver thread: client sockets (p2c arrives
/// there) and peer sockets (c2p arrives there), spread round-robin.
pub(super) fn sockets<'a>(
    args: &RelayArgs,
    flows: &[FlowInfo<'a>],
    peers: &'a [UdpSocket],
) -> Vec<Vec<(BorrowedFd<'a>, usize)>> {
    let threads = args.threads;
    let dirs = directions(args.direction);
    let mut rx: Vec<Vec<(BorrowedFd<'_>, usize)>> = (0..threads).map(|_| Vec::new()).collect();
    if dirs.contains(&P2C) {
        for (i, f) in flows.iter().enumerate() {
            rx[i % threads].push((f.client, P2C));
        }
    }
    if dirs.contains(&C2P) {
        for (j, p) in peers.iter().enumerate() {
            rx[j % threads].push((p.as_fd(), C2P));
        }
    }
    rx
}

/// One receiver thread: drains its sockets until `stop`.
#[allow(clippy::too_many_arguments)]
pub(super) fn receiver(
    socks: &[(BorrowedFd<'_>, usize)],
    mode: Mode,
    batch: usize,
    slot: usize,
    nflows: usize,
    stop: &AtomicBool,
    live: &Live,
    ready: &Barrier,
) -> anyhow::Result<RecvResult> {
    let mut res = RecvResult {
        delivered: [0; 2],
        bytes: [0; 2],
        reordered: [0; 2],
        hist: [stats::new_histogram(), stats::new_histogram()],
        foreign: 0,
        cpu_util: 0.0,
    };
    let setup = (|| -> std::io::Result<Poller> {
        let poller = Poller::new()?;
        for (i, (fd, _)) in socks.iter().enumerate() {
            poller.add(*fd, i as u64)?;
        }
        Ok(poller)
    })();
    ready.wait();
    let poller = setup?;
    let mut events = Events::with_capacity(256);
    // Receive only: no headroom, tailroom or replies.
    let mut rb = UdpBatch::new(BatchLayout {
        slots: batch,
        headroom: 0,
        capacity: slot,
        tailroom: 0,
        reply_len: 0,
    });
    // Highest sequence + 1 seen per flow and direction (0: none yet).
    let mut highest: [Vec<u32>; 2] = [vec![0; nflows], vec![0; nflows]];
    let meter = ThreadMeter::start();
    while !stop.load(Ordering::Relaxed) {
        let n_ready = poller.wait(&mut events, MAX_WAIT)?;
        for k in 0..n_ready {
            let Some(&(fd, dir)) = socks.get(events.key(k) as usize) else {
                continue;
            };
            // A bounded number of batches per socket and turn, so one busy
            // socket cannot starve the others (epoll reports it again).
            for _ in 0..MAX_BATCHES_PER_READY {
                let n = match rb.recv(fd) {
                    Ok(n) => n,
                    // ICMP errors queued on the socket; keep reading.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                    Err(e) => return Err(e.into()),
                };
                if n == 0 {
                    break;
                }
                let now = monotonic_ns();
                let mut got = 0;
                for i in 0..n {
                    // Longer than the slot (truncated) or an unreadable
                    // source: not one of ours.
                    let Some((_, d)) = rb.datagram(i) else {
                        res.foreign += 1;
                        continue;
                    };
                    let body = if dir == C2P {
                        Some(d)
                    } else {
                        match mode {
                            Mode::Channel => ChannelData::parse(d).ok().map(|c| c.payload),
                            Mode::Indication => data_indication(d),
                        }
                    };
                    let Some((flow, seq, ts)) = body.and_then(payload::read) else {
                        res.foreign += 1;
                        continue;
                    };
                    let Some(h) = highest[dir].get_mut(flow as usize) else {
                        res.foreign += 1;
                        continue;
                    };
                    got += 1;
                    res.delivered[dir] += 1;
                    res.bytes[dir] += body.map_or(0, |b| b.len()) as u64;
                    let next = seq.wrapping_add(1);
                    if *h == 0 || next > *h {
                        *h = next;
                    } else if next < *h {
                        res.reordered[dir] += 1;
                    }
                    stats::record(&mut res.hist[dir], now.saturating_sub(ts));
                }
                live.delivered.fetch_add(got, Ordering::Relaxed);
                if n < batch {
                    break;
                }
            }
        }
    }
    res.cpu_util = meter.utilisation();
    Ok(res)
}

/// The DATA of a Data indication.
fn data_indication(d: &[u8]) -> Option<&[u8]> {
    let m = Message::parse(d).ok()?;
    if m.method() != Method::Data || m.class() != Class::Indication {
        return None;
    }
    m.get(attr::DATA).map(|a| a.value)
}
