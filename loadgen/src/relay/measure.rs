//! One measured window of the relay scenario: receiver threads started
//! and ready, sender threads paced for `--duration`, a drain, and the
//! counters of every thread added up, with the CPU and socket-drop figures
//! around them.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::{frame_len, receiver, sender, FlowInfo, RelayArgs, C2P, DRAIN, P2C};
use crate::client::Conn;
use crate::cpu;
use crate::netns;
use crate::output::{fmt_count, Output};
use crate::stats;

/// What the threads measured.
pub(super) struct Measured {
    pub(super) sent: [u64; 2],
    pub(super) delivered: [u64; 2],
    pub(super) bytes: [u64; 2],
    pub(super) reordered: [u64; 2],
    pub(super) hist: [Histogram<u64>; 2],
    pub(super) foreign: u64,
    /// Client connections that broke during the run (TCP, TLS).
    pub(super) broken: u64,
    pub(super) send_failures: u64,
    pub(super) rx_drops: u64,
    pub(super) server_drops: u64,
    pub(super) send_secs: f64,
    pub(super) window_secs: f64,
    pub(super) gen_cpu: f64,
    pub(super) gen_secs: f64,
    pub(super) server_cpu: Option<f64>,
    pub(super) cores: Vec<cpu::CoreLoad>,
    pub(super) sender_util: Vec<f64>,
    pub(super) receiver_util: Vec<f64>,
    pub(super) notes: Vec<String>,
}

/// Counters the threads publish for the progress line.
#[derive(Default)]
pub(super) struct Live {
    pub(super) sent: AtomicU64,
    pub(super) delivered: AtomicU64,
}

pub(super) fn measure(
    args: &RelayArgs,
    out: &Output,
    quiet: bool,
    flows: &[FlowInfo<'_>],
    peers: &[UdpSocket],
) -> anyhow::Result<Measured> {
    let threads = args.threads;
    let lanes = sender::lanes(args, flows);
    let rx = receiver::sockets(args, flows, peers);
    let mut peer_ports: HashSet<SocketAddr> = HashSet::new();
    for p in peers {
        peer_ports.insert(p.local_addr()?);
    }
    let mut client_ports: HashSet<SocketAddr> = HashSet::new();
    for f in flows {
        if let Conn::Udp(s) = f.client {
            client_ports.insert(s.local_addr()?);
        }
    }
    let generator_drops = || {
        drops_in(args.client_netns.as_deref(), &client_ports)
            + drops_in(args.peer_netns.as_deref(), &peer_ports)
    };
    let drops_before = generator_drops();
    let mut server_socks: HashSet<SocketAddr> = flows.iter().map(|f| f.relayed).collect();
    // Over TCP/TLS the server's listener is not a UDP socket.
    if !args.target.transport.is_stream() {
        server_socks.insert(args.target.server);
    }
    let server_net = server_net(args);
    let server_drops = || {
        server_net
            .as_deref()
            .map_or(0, |net| cpu::udp_drops_at(net, &server_socks))
    };
    let server_drops_before = server_drops();

    let total_rate = args.rate.pps().map(|r| r / threads as f64);
    let duration = Duration::from_secs_f64(args.duration);
    let stop = AtomicBool::new(false);
    let live = Live::default();
    let ready = Barrier::new(threads + 1);
    let nflows = flows.len();
    let recv_slot = frame_len(args, C2P).max(frame_len(args, P2C)) + 64;
    let bar = out.progress(duration, quiet, "relay");

    let result = std::thread::scope(|s| -> anyhow::Result<Measured> {
        let mut rx_handles = Vec::new();
        for (k, socks) in rx.into_iter().enumerate() {
            let (stop, live, ready) = (&stop, &live, &ready);
            let mode = args.mode;
            let batch = args.batch;
            rx_handles.push(s.spawn(move || {
                out.pin(threads + k);
                receiver::receiver(&socks, mode, batch, recv_slot, nflows, stop, live, ready)
            }));
        }
        ready.wait();
        let gen0 = cpu::self_cpu_secs();
        let cores0 = cpu::core_times();
        let server_cpu = cpu::CpuMeter::start(args.server_pid);
        let t0 = Instant::now() + Duration::from_millis(5);
        let mut tx_handles = Vec::new();
        for (k, mut my) in lanes.into_iter().enumerate() {
            let live = &live;
            let gso = args.gso;
            let batch = args.batch;
            tx_handles.push(s.spawn(move || {
                out.pin(k);
                sender::sender(&mut my, gso, batch, total_rate, t0, duration, live)
            }));
        }
        // Progress until the senders are done.
        while t0.elapsed() < duration {
            std::thread::sleep(
                Duration::from_millis(200).min(duration.saturating_sub(t0.elapsed())),
            );
            if let Some(b) = &bar {
                let el = t0.elapsed().as_secs_f64().max(1e-3);
                b.set_position(t0.elapsed().as_millis() as u64);
                b.set_message(format!(
                    "sent {}/s delivered {}/s",
                    fmt_count(live.sent.load(Ordering::Relaxed) as f64 / el),
                    fmt_count(live.delivered.load(Ordering::Relaxed) as f64 / el)
                ));
            }
        }
        let mut sent = [0u64; 2];
        let mut failures = 0;
        let mut sender_util = Vec::new();
        let mut notes = Vec::new();
        for h in tx_handles {
            let r = h
                .join()
                .map_err(|_| anyhow::anyhow!("a sender thread panicked"))?;
            sent[0] += r.sent[0];
            sent[1] += r.sent[1];
            failures += r.failures;
            sender_util.push(r.cpu_util);
            notes.extend(r.errors);
        }
        // Senders stop at t0 + duration (a burst in progress ends just after).
        let send_secs = args.duration;
        // The generator's CPU over the sending window (its saturation);
        // the server's over sending and drain (it works off its backlog).
        let gen_cpu = cpu::self_cpu_secs() - gen0;
        let cores = cpu::core_loads(&cores0, &cpu::core_times());
        let gen_secs = t0.elapsed().as_secs_f64();
        std::thread::sleep(DRAIN);
        stop.store(true, Ordering::Relaxed);
        let mut m = Measured {
            sent,
            delivered: [0; 2],
            bytes: [0; 2],
            reordered: [0; 2],
            hist: [stats::new_histogram(), stats::new_histogram()],
            foreign: 0,
            broken: 0,
            send_failures: failures,
            rx_drops: 0,
            server_drops: 0,
            send_secs,
            window_secs: 0.0,
            gen_cpu: 0.0,
            gen_secs: 0.0,
            server_cpu: None,
            cores: Vec::new(),
            sender_util,
            receiver_util: Vec::new(),
            notes,
        };
        for h in rx_handles {
            let r = h
                .join()
                .map_err(|_| anyhow::anyhow!("a receiver thread panicked"))??;
            for d in 0..2 {
                m.delivered[d] += r.delivered[d];
                m.bytes[d] += r.bytes[d];
                m.reordered[d] += r.reordered[d];
                m.hist[d].add(&r.hist[d]).ok();
            }
            m.foreign += r.foreign;
            m.broken += r.broken;
            m.notes.extend(r.errors);
            m.receiver_util.push(r.cpu_util);
        }
        m.window_secs = (Instant::now() - t0).as_secs_f64();
        m.gen_cpu = gen_cpu;
        m.gen_secs = gen_secs;
        m.cores = cores;
        m.server_cpu = server_cpu.and_then(|c| c.secs());
        Ok(m)
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let mut m = result?;
    m.rx_drops = generator_drops().saturating_sub(drops_before);
    m.server_drops = server_drops().saturating_sub(server_drops_before);
    if server_net.is_none() {
        m.notes.push(
            "server socket drops not measured: the server is in another network namespace \
             (--client-netns) and --server-pid was not given"
                .into(),
        );
    }
    Ok(m)
}

/// Receive drops at the sockets bound to `addrs` in network namespace `ns`
/// (this process's own when None), read from inside it; 0 if it cannot be
/// entered (it was entered to create them, so it can).
fn drops_in(ns: Option<&str>, addrs: &HashSet<SocketAddr>) -> u64 {
    match ns {
        None => cpu::udp_drops(addrs),
        Some(_) => {
            netns::within(ns, || Ok(cpu::udp_drops_at("/proc/thread-self/net", addrs))).unwrap_or(0)
        }
    }
}

/// Where the server's UDP sockets are listed: in its own `/proc/PID/net`
/// when its pid is known (its namespace, whatever ours is), else in ours
/// when its clients share it; None when neither can be known.
fn server_net(args: &RelayArgs) -> Option<String> {
    match (args.server_pid, &args.client_netns) {
        (Some(pid), _) => Some(format!("/proc/{pid}/net")),
        (None, None) => Some("/proc/self/net".into()),
        (None, Some(_)) => None,
    }
}
