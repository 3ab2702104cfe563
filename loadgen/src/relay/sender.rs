//! The relay scenario's sender threads: datagram (or stream frame)
//! templates per flow and direction, and the paced loop that sends them in
//! bursts: one `sendmmsg` (or GSO `sendmsg`) per burst on a UDP socket, one
//! `write` of the burst's frames back to back on a TCP or TLS connection.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use uturn_io::client::SendBatch;
use uturn_io::{process, RawAddr};
use uturn_stun::{attr, channel, Class, Message, MessageWriter, Method};

use super::measure::Live;
use super::{directions, frame_len, gso_cap, FlowInfo, Mode, RelayArgs, C2P, P2C, TICK_SECS};
use crate::client::{Conn, Stream};
use crate::cpu::ThreadMeter;
use crate::payload;
use crate::stats::Rng;

/// Where a lane's bursts go.
enum Out<'a> {
    /// A UDP socket: the client's, connected to the server (c2p), or a
    /// peer socket, to the relayed address `dest` (p2c).
    Datagram {
        fd: BorrowedFd<'a>,
        dest: Option<RawAddr>,
    },
    /// The client's TCP or TLS connection (c2p).
    Stream(&'a Stream),
}

/// One (flow, direction) a sender feeds.
pub(super) struct Lane<'a> {
    out: Out<'a>,
    template: Vec<u8>,
    hdr_off: usize,
    flow: u32,
    dir: usize,
    seq: u32,
}

/// What one sender thread sent.
pub(super) struct SendResult {
    pub(super) sent: [u64; 2],
    pub(super) failures: u64,
    pub(super) cpu_util: f64,
    pub(super) errors: Vec<String>,
}

/// The lanes of every sender thread: flow `i` goes to thread `i mod
/// --threads`, its directions interleaved.
pub(super) fn lanes<'a>(args: &RelayArgs, flows: &[FlowInfo<'a>]) -> Vec<Vec<Lane<'a>>> {
    let threads = args.threads;
    let mut rng = Rng::new(0x6c61_6e65);
    let mut lanes: Vec<Vec<Lane<'_>>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, f) in flows.iter().enumerate() {
        for &d in directions(args.direction) {
            let (template, hdr_off) = template(args, f, d, &mut rng);
            let out = match (d, f.client) {
                (C2P, Conn::Udp(s)) => Out::Datagram {
                    fd: s.as_fd(),
                    dest: None,
                },
                (C2P, Conn::Stream(s)) => Out::Stream(s),
                _ => Out::Datagram {
                    fd: f.peer,
                    dest: Some(RawAddr::new(&f.relayed)),
                },
            };
            lanes[i % threads].push(Lane {
                out,
                template,
                hdr_off,
                flow: i as u32,
                dir: d,
                seq: 0,
            });
        }
    }
    lanes
}

/// The datagram (or stream frame) template for flow `i` in direction
/// `dir`, and where the 16-byte payload header goes in it.
fn template(args: &RelayArgs, f: &FlowInfo<'_>, dir: usize, rng: &mut Rng) -> (Vec<u8>, usize) {
    let mut pl = vec![payload::FILLER; args.payload];
    pl[..payload::HEADER_LEN].fill(0);
    match (dir, args.mode) {
        (P2C, _) => (pl, 0),
        (_, Mode::Channel) => {
            let mut h = [0u8; 4];
            channel::write_header(&mut h, f.channel, args.payload as u16);
            let mut v = h.to_vec();
            v.extend_from_slice(&pl);
            // Zero padding up to the frame length (streams: RFC 8656 §12.5).
            v.resize(frame_len(args, C2P), 0);
            (v, channel::CHANNEL_HEADER_LEN)
        }
        (_, Mode::Indication) => {
            let mut buf = vec![0u8; args.payload + 128];
            let tid = rng.tid();
            let mut w = MessageWriter::new(&mut buf, Method::Send, Class::Indication, &tid)
                .expect("buffer fits a header");
            w.xor_address(attr::XOR_PEER_ADDRESS, f.peer_addr)
                .expect("fits");
            w.raw(attr::DATA, &pl).expect("payload ≤ 60000 fits");
            let n = w.finish();
            buf.truncate(n);
            let off = Message::parse(&buf)
                .ok()
                .and_then(|m| m.get(attr::DATA))
                .map(|a| a.offset + 4)
                .expect("DATA just written");
            (buf, off)
        }
    }
}

/// One sender thread: paces its lanes until `duration` after `t0`.
pub(super) fn sender(
    lanes: &mut [Lane<'_>],
    gso: bool,
    batch: usize,
    rate: Option<f64>,
    t0: Instant,
    duration: Duration,
    live: &Live,
) -> SendResult {
    process::set_timer_slack_ns(1_000);
    let mut res = SendResult {
        sent: [0; 2],
        failures: 0,
        cpu_util: 0.0,
        errors: Vec::new(),
    };
    if lanes.is_empty() {
        return res;
    }
    // One batch per direction: frames of one direction all have one length.
    let len_of = |d: usize| {
        lanes
            .iter()
            .find(|l| l.dir == d)
            .map(|l| l.template.len())
            .unwrap_or(1)
    };
    let cap_of = |d: usize| {
        if gso {
            gso_cap(batch, len_of(d))
        } else {
            batch
        }
    };
    let cap = cap_of(C2P).min(cap_of(P2C));
    let mut batches = [
        SendBatch::new(cap, len_of(C2P)),
        SendBatch::new(cap, len_of(P2C)),
    ];
    // A stream burst: its frames back to back.
    let mut frames = vec![0u8; cap * len_of(C2P)];
    let burst = match rate {
        Some(r) => ((r * TICK_SECS).round() as usize).clamp(1, cap) as u64,
        None => cap as u64,
    };
    let mut scheduled: u64 = 0;
    let mut rr = 0;
    let mut error_count = 0u64;
    // Wait for the common start.
    if let Some(d) = t0.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
    let meter = ThreadMeter::start();
    loop {
        let el = t0.elapsed();
        if el >= duration {
            break;
        }
        let due = match rate {
            Some(r) => ((el.as_secs_f64() * r) as u64).saturating_sub(scheduled),
            None => cap as u64,
        };
        if due < burst {
            let r = rate.unwrap_or(f64::INFINITY);
            let next = Duration::from_secs_f64((scheduled + burst) as f64 / r).min(duration);
            if let Some(d) = next.checked_sub(el) {
                std::thread::sleep(d);
            }
            continue;
        }
        let b = (due as usize).min(cap);
        let nlanes = lanes.len();
        let lane = &mut lanes[rr];
        rr = (rr + 1) % nlanes;
        let sb = &mut batches[lane.dir];
        let len = lane.template.len();
        let ts = process::monotonic_ns();
        let fill = |i: usize, slot: &mut [u8]| {
            slot.copy_from_slice(&lane.template);
            payload::write(
                &mut slot[lane.hdr_off..],
                lane.flow,
                lane.seq.wrapping_add(i as u32),
                ts,
            );
        };
        let r = match &lane.out {
            Out::Datagram { fd, dest } => {
                for i in 0..b {
                    fill(i, &mut sb.slot_mut(i)[..len]);
                }
                if gso {
                    sb.send_gso(*fd, b, dest.as_ref())
                } else {
                    sb.send(*fd, b, len, dest.as_ref())
                }
            }
            Out::Stream(stream) => {
                let burst = &mut frames[..b * len];
                for (i, slot) in burst.chunks_exact_mut(len).enumerate() {
                    fill(i, slot);
                }
                stream.send_burst(burst, len)
            }
        };
        let n = match r {
            Ok(n) => n,
            Err(e) => {
                error_count += 1;
                if res.errors.len() < 3 {
                    res.errors.push(format!("send error: {e}"));
                }
                0
            }
        };
        scheduled += b as u64;
        lane.seq = lane.seq.wrapping_add(n as u32);
        res.sent[lane.dir] += n as u64;
        res.failures += (b - n) as u64;
        live.sent.fetch_add(n as u64, Ordering::Relaxed);
    }
    // The rest of a frame a connection took in part goes out now, within
    // the drain, rather than with the teardown's first request.
    for lane in lanes.iter() {
        if let Out::Stream(stream) = &lane.out {
            let _ = stream.flush();
        }
    }
    if error_count > 3 {
        res.errors
            .push(format!("{error_count} send calls failed in all"));
    }
    res.cpu_util = meter.utilisation();
    res
}
