//! The relay scenario's receiver threads: every UDP socket drained in
//! `recvmmsg` batches (uturn-io's `UdpBatch`, as in uturn's shards), every
//! TCP or TLS connection read 64 KiB at a time and split into frames; each
//! packet's flow, sequence and send time read back for delivery,
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
use crate::client::{frames, Conn, Scratch, Stream};
use crate::cpu::ThreadMeter;
use crate::payload;
use crate::stats;

/// recvmmsg batches taken from one ready socket before the next.
const MAX_BATCHES_PER_READY: usize = 8;
/// Longest wait for readiness, so that `stop` is noticed.
const MAX_WAIT: Duration = Duration::from_millis(2);

/// Something a receiver reads packets of one direction from.
#[derive(Clone, Copy)]
pub(super) enum Source<'a> {
    /// A UDP socket: a client's (p2c) or a peer socket (c2p).
    Datagram(BorrowedFd<'a>, usize),
    /// A client's TCP or TLS connection (p2c).
    Stream(&'a Stream),
}

impl Source<'_> {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Source::Datagram(fd, _) => *fd,
            Source::Stream(s) => s.fd(),
        }
    }
}

/// What one receiver thread counted.
pub(super) struct RecvResult {
    pub(super) delivered: [u64; 2],
    pub(super) bytes: [u64; 2],
    pub(super) reordered: [u64; 2],
    pub(super) hist: [Histogram<u64>; 2],
    pub(super) foreign: u64,
    /// Connections that broke during the run (the first few reasons).
    pub(super) broken: u64,
    pub(super) errors: Vec<String>,
    pub(super) cpu_util: f64,
}

/// The sources of every receiver thread: client sockets or connections
/// (p2c arrives there) and peer sockets (c2p arrives there), spread
/// round-robin.
pub(super) fn sockets<'a>(
    args: &RelayArgs,
    flows: &[FlowInfo<'a>],
    peers: &'a [UdpSocket],
) -> Vec<Vec<Source<'a>>> {
    let threads = args.threads;
    let dirs = directions(args.direction);
    let mut rx: Vec<Vec<Source<'_>>> = (0..threads).map(|_| Vec::new()).collect();
    if dirs.contains(&P2C) {
        for (i, f) in flows.iter().enumerate() {
            rx[i % threads].push(match f.client {
                Conn::Udp(s) => Source::Datagram(s.as_fd(), P2C),
                Conn::Stream(s) => Source::Stream(s),
            });
        }
    }
    if dirs.contains(&C2P) {
        for (j, p) in peers.iter().enumerate() {
            rx[j % threads].push(Source::Datagram(p.as_fd(), C2P));
        }
    }
    rx
}

/// Per-thread counting of what arrives.
struct Counter<'r> {
    res: &'r mut RecvResult,
    /// Highest sequence + 1 seen per flow and direction (0: none yet).
    highest: [Vec<u32>; 2],
    mode: Mode,
}

impl Counter<'_> {
    /// Counts one packet in direction `dir` received at `now`: `d` is the
    /// bare payload (c2p) or what the server sent the client (p2c).
    /// Returns true if it was one of ours.
    fn packet(&mut self, dir: usize, d: &[u8], now: u64) -> bool {
        let res = &mut *self.res;
        let body = if dir == C2P {
            Some(d)
        } else {
            match self.mode {
                Mode::Channel => ChannelData::parse(d).ok().map(|c| c.payload),
                Mode::Indication => data_indication(d),
            }
        };
        let Some((flow, seq, ts)) = body.and_then(payload::read) else {
            res.foreign += 1;
            return false;
        };
        let Some(h) = self.highest[dir].get_mut(flow as usize) else {
            res.foreign += 1;
            return false;
        };
        res.delivered[dir] += 1;
        res.bytes[dir] += body.map_or(0, |b| b.len()) as u64;
        let next = seq.wrapping_add(1);
        if *h == 0 || next > *h {
            *h = next;
        } else if next < *h {
            res.reordered[dir] += 1;
        }
        stats::record(&mut res.hist[dir], now.saturating_sub(ts));
        true
    }
}

/// One receiver thread: drains its sockets and connections until `stop`.
#[allow(clippy::too_many_arguments)]
pub(super) fn receiver(
    sources: &[Source<'_>],
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
        broken: 0,
        errors: Vec::new(),
        cpu_util: 0.0,
    };
    let setup = (|| -> std::io::Result<Poller> {
        let poller = Poller::new()?;
        for (i, src) in sources.iter().enumerate() {
            poller.add(src.fd(), i as u64)?;
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
    let mut scratch = sources
        .iter()
        .any(|s| matches!(s, Source::Stream(_)))
        .then(Scratch::new);
    let mut count = Counter {
        res: &mut res,
        highest: [vec![0; nflows], vec![0; nflows]],
        mode,
    };
    let meter = ThreadMeter::start();
    while !stop.load(Ordering::Relaxed) {
        let n_ready = poller.wait(&mut events, MAX_WAIT)?;
        for k in 0..n_ready {
            let got = match sources.get(events.key(k) as usize) {
                Some(&Source::Datagram(fd, dir)) => {
                    drain_socket(&mut rb, fd, dir, batch, &mut count)?
                }
                Some(&Source::Stream(stream)) => match scratch.as_mut() {
                    Some(scratch) => match read_stream(stream, scratch, &mut count) {
                        Ok(got) => got,
                        Err(why) => {
                            // Dead: stop watching it (level-triggered
                            // epoll would report it forever).
                            let _ = poller.delete(stream.fd());
                            count.res.broken += 1;
                            if count.res.errors.len() < 3 {
                                count
                                    .res
                                    .errors
                                    .push(format!("a client connection broke: {why}"));
                            }
                            0
                        }
                    },
                    None => 0,
                },
                None => 0,
            };
            live.delivered.fetch_add(got, Ordering::Relaxed);
        }
    }
    drop(count);
    res.cpu_util = meter.utilisation();
    Ok(res)
}

/// Drains a ready UDP socket in `recvmmsg` batches: a bounded number per
/// turn, so one busy socket cannot starve the others (epoll reports it
/// again). Returns the packets that were ours.
fn drain_socket(
    rb: &mut UdpBatch,
    fd: BorrowedFd<'_>,
    dir: usize,
    batch: usize,
    count: &mut Counter<'_>,
) -> anyhow::Result<u64> {
    let mut got = 0;
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
        for i in 0..n {
            // Longer than the slot (truncated) or an unreadable source:
            // not one of ours.
            match rb.datagram(i) {
                Some((_, d)) => got += u64::from(count.packet(dir, d, now)),
                None => count.res.foreign += 1,
            }
        }
        if n < batch {
            break;
        }
    }
    Ok(got)
}

/// Reads a ready connection once (up to 64 KiB; epoll reports it again if
/// more is queued) and counts its whole frames. Returns the packets that
/// were ours, or why the connection is dead.
fn read_stream(
    stream: &Stream,
    scratch: &mut Scratch,
    count: &mut Counter<'_>,
) -> Result<u64, String> {
    let whole = stream.read(scratch).map_err(|e| e.to_string())?;
    let now = monotonic_ns();
    let mut got = 0;
    for (_, frame) in frames(whole) {
        got += u64::from(count.packet(P2C, frame, now));
    }
    Ok(got)
}

/// The DATA of a Data indication.
fn data_indication(d: &[u8]) -> Option<&[u8]> {
    let m = Message::parse(d).ok()?;
    if m.method() != Method::Data || m.class() != Class::Indication {
        return None;
    }
    m.get(attr::DATA).map(|a| a.value)
}
