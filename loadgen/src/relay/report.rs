//! The relay scenario's report: its figures, how they are computed from
//! what the threads measured, and the table printed without `--json`.

use super::measure::Measured;
use super::{directions, frame_len, gso_cap, Direction, Mode, RelayArgs};
use super::{C2P, DIR_NAMES, DRAIN, P2C};
use crate::client::TlsInfo;
use crate::cpu;
use crate::flags::Transport;
use crate::output::{fmt_count, fmt_pct, Table};
use crate::stats::{self, Percentiles};

/// One direction's figures.
#[derive(serde::Serialize, Clone, Debug)]
pub struct DirReport {
    /// "c2p" or "p2c".
    pub direction: String,
    pub sent: u64,
    pub delivered: u64,
    pub delivered_pps: f64,
    /// Payload bytes delivered.
    pub bytes: u64,
    pub loss_ratio: f64,
    pub reordered: u64,
    /// One-way latency, microseconds.
    pub latency_us: Percentiles,
}

/// The result of one relay run.
#[derive(serde::Serialize, Clone, Debug)]
pub struct RelayReport {
    pub scenario: &'static str,
    pub args: RelayArgs,
    /// Between the clients and the server: "udp", "tcp" or "tls" (the
    /// peers always use UDP).
    pub transport: &'static str,
    /// The TLS parameters the server chose (first flow), with --transport tls.
    pub tls: Option<TlsInfo>,
    /// The target rate (packets/s), or `None` with `--rate max`.
    pub target_pps: Option<f64>,
    /// What the generator actually offered: sent / duration.
    pub offered_pps: f64,
    pub sent: u64,
    pub delivered: u64,
    pub delivered_pps: f64,
    /// Payload bytes delivered (all directions).
    pub bytes: u64,
    /// Delivered payload, megabits per second.
    pub delivered_mbit_s: f64,
    /// (sent − delivered) / sent.
    pub loss_ratio: f64,
    pub reordered: u64,
    /// One-way latency, microseconds, both directions together.
    pub latency_us: Percentiles,
    pub per_direction: Vec<DirReport>,
    /// CPU seconds of the whole generator process while sending.
    pub generator_cpu_secs: f64,
    /// generator_cpu_secs / sending seconds: cores used on average
    /// (1.0 = one core saturated).
    pub generator_cpu_util: f64,
    /// Per sender thread: fraction of one core used while sending
    /// (1.0 = saturated).
    pub sender_cpu_util: Vec<f64>,
    /// Per receiver thread: fraction of one core used, sending and drain.
    pub receiver_cpu_util: Vec<f64>,
    /// Every CPU's load while sending (from /proc/stat), including
    /// softirq time that no process is charged for: shows whether the
    /// generator's and the server's cores were saturated, and whether
    /// anything else ran on them.
    pub cores: Vec<cpu::CoreLoad>,
    /// True when the generator, not the server, set the figure: the target
    /// rate was not reached, or at `max` nothing was lost.
    pub generator_limited: bool,
    /// Datagrams the kernel dropped at the generator's own receive sockets
    /// (counted in `loss_ratio`, but not the server's fault).
    pub generator_rx_drops: u64,
    /// Datagrams the kernel dropped at the server's listening socket and
    /// its relayed-address sockets (full receive buffers), from
    /// /proc/net/udp: loss before the server ever saw the packet.
    pub server_socket_drops: u64,
    /// Datagrams the generator's sockets refused (full buffer or error);
    /// over TCP/TLS, frames of bursts a connection refused because its
    /// earlier bytes still waited (the server reads slower than offered).
    pub send_failures: u64,
    /// Client connections that broke during the run (TCP, TLS).
    pub broken_connections: u64,
    /// Server CPU seconds (all threads) from the start of sending to the
    /// end of the drain; needs --server-pid.
    pub server_cpu_secs: Option<f64>,
    /// server_cpu_secs / that window: cores the server used.
    pub server_cpu_util: Option<f64>,
    /// delivered / server_cpu_secs.
    pub delivered_per_server_cpu_sec: Option<f64>,
    /// The measured sending window, seconds.
    pub duration_secs: f64,
    /// Wait after sending stopped, seconds.
    pub drain_secs: f64,
    pub gso: bool,
    /// With --gso: whether the server's sockets coalesce with UDP_GRO.
    pub server_udp_gro: Option<String>,
    /// How the senders send.
    pub sender: String,
    /// How the receivers receive.
    pub receiver: String,
    pub sender_threads: usize,
    pub receiver_threads: usize,
    /// Peer sockets used (one per flow unless the descriptor limit forced sharing).
    pub peer_sockets: usize,
    /// Time to set up every flow, seconds.
    pub setup_secs: f64,
    pub setup_requests: u64,
    pub setup_retransmits: u64,
    /// Flows whose Refresh(0) failed at the end.
    pub teardown_failures: usize,
    /// Datagrams received that were not ours (bad header, unknown flow).
    pub foreign_datagrams: u64,
    pub notes: Vec<String>,
}

/// What setting the flows up and tearing them down cost.
pub(super) struct Setup {
    pub secs: f64,
    pub requests: u64,
    pub retransmits: u64,
    pub peer_sockets: usize,
    pub teardown_failures: usize,
    /// The first flow's TLS parameters.
    pub tls: Option<TlsInfo>,
}

impl RelayReport {
    /// The report of a run from what it measured; `notes` are set-up's own.
    pub(super) fn new(
        args: &RelayArgs,
        m: &Measured,
        setup: Setup,
        mut notes: Vec<String>,
    ) -> RelayReport {
        notes.extend(m.notes.iter().cloned());

        let dur = m.send_secs.max(1e-9);
        let sent: u64 = m.sent.iter().sum();
        let delivered: u64 = m.delivered.iter().sum();
        let bytes: u64 = m.bytes.iter().sum();
        let mut all = stats::new_histogram();
        for h in &m.hist {
            all.add(h).ok();
        }
        let per_direction = directions(args.direction)
            .iter()
            .map(|&d| DirReport {
                direction: DIR_NAMES[d].to_string(),
                sent: m.sent[d],
                delivered: m.delivered[d],
                delivered_pps: m.delivered[d] as f64 / dur,
                bytes: m.bytes[d],
                loss_ratio: loss(m.sent[d], m.delivered[d]),
                reordered: m.reordered[d],
                latency_us: stats::percentiles(&m.hist[d], 1e3),
            })
            .collect();
        let loss_ratio = loss(sent, delivered);
        let target_pps = args.rate.pps();
        let offered_pps = sent as f64 / dur;
        let stream = args.target.transport.is_stream();
        // Over a stream a server that reads too slowly is not losing
        // packets: its connections refuse bursts (flow control).
        let backpressure = stream && m.send_failures > 0;
        // Over a stream, bursts the connections refused were offered: the
        // server, not the generator, held them back.
        let attempted = if stream { sent + m.send_failures } else { sent };
        let generator_limited = match target_pps {
            Some(t) => (attempted as f64 / dur) < 0.97 * t,
            None => loss_ratio < 0.001 && !backpressure,
        };
        if generator_limited {
            notes.push(match target_pps {
                Some(t) => format!(
                    "generator-limited: offered {} of the {} packets/s asked for",
                    fmt_count(offered_pps),
                    fmt_count(t)
                ),
                None if stream => "generator-limited: at --rate max nothing was lost and no \
                                   connection refused a burst, so the server was not saturated; \
                                   add sender threads (--threads)"
                    .to_string(),
                None => "generator-limited: at --rate max nothing was lost, so the server was not \
                         saturated; add sender threads (--threads) or --gso"
                    .to_string(),
            });
        }
        if backpressure {
            notes.push(format!(
                "{} frames were refused on send: the server's connections did not take them \
                 (TCP flow control), so over {} a saturated server shows there rather than as loss",
                fmt_count(m.send_failures as f64),
                args.target.transport.name()
            ));
        }
        if m.broken > 0 {
            notes.push(format!(
                "{} client connections broke during the run",
                m.broken
            ));
        }
        if m.rx_drops > 0 {
            notes.push(format!(
                "{} datagrams were dropped at the generator's own receive sockets (its receivers \
                 were too slow): part of the loss is the generator's",
                m.rx_drops
            ));
        }
        let window = m.window_secs.max(1e-9);
        let server_cpu_secs = m.server_cpu;
        let server_udp_gro = args
            .gso
            .then(|| "not enabled by uturn; unknown for other servers".to_string());
        if args.gso {
            notes.push(
                "with --gso each burst is one UDP_SEGMENT write: the server's socket receives the \
                 burst's datagrams at once (server UDP_GRO: not enabled by uturn; unknown for other \
                 servers)"
                    .to_string(),
            );
        }
        let sender = sender_method(args);
        let receiver = receiver_method(args);
        RelayReport {
            scenario: "relay",
            args: args.clone(),
            transport: args.target.transport.name(),
            tls: setup.tls,
            target_pps,
            offered_pps,
            sent,
            delivered,
            delivered_pps: delivered as f64 / dur,
            bytes,
            delivered_mbit_s: bytes as f64 * 8.0 / dur / 1e6,
            loss_ratio,
            reordered: m.reordered.iter().sum(),
            latency_us: stats::percentiles(&all, 1e3),
            per_direction,
            generator_cpu_secs: m.gen_cpu,
            generator_cpu_util: m.gen_cpu / m.gen_secs.max(1e-9),
            sender_cpu_util: m.sender_util.clone(),
            cores: m.cores.clone(),
            receiver_cpu_util: m.receiver_util.clone(),
            generator_limited,
            generator_rx_drops: m.rx_drops,
            server_socket_drops: m.server_drops,
            send_failures: m.send_failures,
            broken_connections: m.broken,
            server_cpu_secs,
            server_cpu_util: server_cpu_secs.map(|s| s / window),
            delivered_per_server_cpu_sec: server_cpu_secs
                .filter(|&s| s > 0.0)
                .map(|s| delivered as f64 / s),
            duration_secs: m.send_secs,
            drain_secs: DRAIN.as_secs_f64(),
            gso: args.gso,
            server_udp_gro,
            sender,
            receiver,
            sender_threads: args.threads,
            receiver_threads: args.threads,
            peer_sockets: setup.peer_sockets,
            setup_secs: setup.secs,
            setup_requests: setup.requests,
            setup_retransmits: setup.retransmits,
            teardown_failures: setup.teardown_failures,
            foreign_datagrams: m.foreign,
            notes,
        }
    }
}

/// How the senders send, for the report.
fn sender_method(args: &RelayArgs) -> String {
    let udp = if args.gso {
        format!(
            "one sendmsg with UDP_SEGMENT (GSO) per burst of ≤ {} datagrams to one socket",
            gso_cap(args.batch, frame_len(args, C2P).max(frame_len(args, P2C)))
        )
    } else {
        format!(
            "sendmmsg, bursts of ≤ {} datagrams per call to one socket",
            args.batch
        )
    };
    let stream = match args.target.transport {
        Transport::Udp => return udp,
        Transport::Tcp => "one write",
        Transport::Tls => "one TLS record (rustls) and one write",
    };
    let c2p = format!(
        "client→server: {stream} per burst of ≤ {} frames back to back on one connection \
         (refused while that connection's earlier bytes wait)",
        args.batch
    );
    match args.direction {
        Direction::C2p => c2p,
        Direction::P2c | Direction::Both => {
            let p2c = format!("peer→server: {udp}");
            if args.direction == Direction::P2c {
                p2c
            } else {
                format!("{c2p}; {p2c}")
            }
        }
    }
}

/// How the receivers receive, for the report.
fn receiver_method(args: &RelayArgs) -> String {
    let udp = format!(
        "non-blocking recvmmsg batches of {} per ready socket",
        args.batch
    );
    let conns = match args.target.transport {
        Transport::Udp => {
            return format!("epoll (blocks only when every socket is empty) + {udp}");
        }
        Transport::Tcp => "one read",
        Transport::Tls => "one read (decrypted by rustls)",
    };
    format!(
        "epoll (blocks only when every socket is empty); client connections: {conns} of ≤ 64 KiB \
         per ready connection and turn, split into frames with next_frame, a partial frame kept \
         per connection; peer sockets: {udp}"
    )
}

fn loss(sent: u64, delivered: u64) -> f64 {
    if sent == 0 {
        0.0
    } else {
        sent.saturating_sub(delivered) as f64 / sent as f64
    }
}

pub(super) fn print_report(r: &RelayReport) {
    let a = &r.args;
    let mut t = Table::new(format!(
        "relay · {} over {} · {} flows × {} B · {} · {}{}",
        a.target.server,
        r.transport,
        a.flows,
        a.payload,
        match a.direction {
            Direction::C2p => "client→peer",
            Direction::P2c => "peer→client",
            Direction::Both => "both directions",
        },
        match a.mode {
            Mode::Channel => "ChannelData",
            Mode::Indication => "Send/Data indications",
        },
        if r.gso { " · GSO" } else { "" }
    ));
    if let Some(tls) = &r.tls {
        t.row("TLS", tls.describe(a.target.tls_ca.is_some()));
    }
    t.row(
        "target rate",
        r.target_pps
            .map(|p| format!("{} packets/s", fmt_count(p)))
            .unwrap_or_else(|| "max".into()),
    );
    t.row(
        "offered",
        format!(
            "{} packets/s ({} sent in {:.2} s)",
            fmt_count(r.offered_pps),
            fmt_count(r.sent as f64),
            r.duration_secs
        ),
    );
    t.row(
        "delivered",
        format!(
            "{} packets/s ({} packets, {:.1} Mbit/s payload)",
            fmt_count(r.delivered_pps),
            fmt_count(r.delivered as f64),
            r.delivered_mbit_s
        ),
    );
    t.row(
        "loss",
        format!(
            "{} ({} packets)",
            fmt_pct(r.loss_ratio),
            fmt_count(r.sent.saturating_sub(r.delivered) as f64)
        ),
    );
    t.row("reordered", fmt_count(r.reordered as f64));
    t.row("latency p50/p90/p99/p99.9", fmt_lat(&r.latency_us));
    for d in &r.per_direction {
        t.row(
            format!("  {}", d.direction),
            format!(
                "{} delivered/s, loss {}, reordered {}, latency {}",
                fmt_count(d.delivered_pps),
                fmt_pct(d.loss_ratio),
                d.reordered,
                fmt_lat(&d.latency_us)
            ),
        );
    }
    t.row(
        "generator CPU",
        format!(
            "{:.2} s, {:.0} % of a core; senders {}; receivers {}",
            r.generator_cpu_secs,
            r.generator_cpu_util * 100.0,
            pcts(&r.sender_cpu_util),
            pcts(&r.receiver_cpu_util)
        ),
    );
    t.row(
        "CPU busy (softirq)",
        r.cores
            .iter()
            .map(|c| {
                format!(
                    "cpu{} {:.0} % ({:.0} %)",
                    c.cpu,
                    c.busy * 100.0,
                    c.softirq * 100.0
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
    );
    t.row(
        "generator-limited",
        if r.generator_limited { "yes" } else { "no" },
    );
    t.row(
        "socket drops",
        format!(
            "server {} (its receive buffers full), generator {} on receive, {} refused on send",
            fmt_count(r.server_socket_drops as f64),
            fmt_count(r.generator_rx_drops as f64),
            fmt_count(r.send_failures as f64)
        ),
    );
    match (r.server_cpu_secs, r.delivered_per_server_cpu_sec) {
        (Some(s), per) => {
            t.row(
                "server CPU",
                format!(
                    "{:.2} s ({:.0} % of a core){}",
                    s,
                    r.server_cpu_util.unwrap_or(0.0) * 100.0,
                    per.map(|p| format!(", {} delivered packets per CPU-second", fmt_count(p)))
                        .unwrap_or_default()
                ),
            );
        }
        (None, _) => {
            t.row("server CPU", "(give --server-pid)");
        }
    }
    if let Some(g) = &r.server_udp_gro {
        t.row("server UDP_GRO", g.clone());
    }
    t.row("sender", r.sender.clone());
    t.row("receiver", r.receiver.clone());
    t.row(
        "set-up",
        format!(
            "{:.0} ms, {} requests ({} retransmitted), {} peer sockets",
            r.setup_secs * 1e3,
            r.setup_requests,
            r.setup_retransmits,
            r.peer_sockets
        ),
    );
    if r.teardown_failures > 0 {
        t.row("teardown failures", r.teardown_failures.to_string());
    }
    if r.broken_connections > 0 {
        t.row("broken connections", r.broken_connections.to_string());
    }
    if r.foreign_datagrams > 0 {
        t.row("foreign datagrams", r.foreign_datagrams.to_string());
    }
    for n in &r.notes {
        t.row("note", n.clone());
    }
    t.print();
}

fn fmt_lat(p: &Percentiles) -> String {
    if p.samples == 0 {
        return "-".into();
    }
    format!(
        "{:.0} / {:.0} / {:.0} / {:.0} µs",
        p.p50, p.p90, p.p99, p.p999
    )
}

fn pcts(v: &[f64]) -> String {
    v.iter()
        .map(|u| format!("{:.0} %", u * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}
