//! `flood`: unauthenticated Allocate requests from many source addresses,
//! as a spoofing attacker (or a crowd of clients that never authenticate)
//! sends them. Each one costs the server a 401 with a fresh nonce, or, past
//! its per-source limit, a parse and a drop.
//!
//! Run it beside `allocate` (two processes, side by side) to see what a
//! flood leaves of the legitimate allocation rate; with `--server-pid` it
//! reports the server's CPU per request, kernel included.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::Context;
use uturn_stun::{attr, Class, Message, MessageWriter, Method};

use crate::cpu::{self, CpuMeter, ThreadMeter};
use crate::flags::Target;
use crate::output::{fmt_count, Output, Table};

/// Unauthenticated Allocates from N loopback source addresses.
#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct FloodArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub target: Target,
    /// Source addresses, one socket each, counted up from 127.1.0.1 (so
    /// they never share an address with `allocate`'s clients on 127.0.x.y).
    #[arg(long, default_value_t = 5000, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=65_000))]
    pub sources: u32,
    /// Requests per second over all sources; 0 sends as fast as one thread can.
    #[arg(long, default_value_t = 0, value_name = "PER_SEC")]
    pub rate: u64,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub duration: f64,
    /// Process id of the server: reports its CPU seconds and the CPU cost
    /// of one request.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
}

/// The result of a flood run.
#[derive(serde::Serialize, Clone, Debug)]
pub struct FloodReport {
    pub scenario: &'static str,
    pub args: FloodArgs,
    pub sent: u64,
    pub sent_per_sec: f64,
    /// 401 answers received (the server's per-source limit drops the rest).
    pub answered_401: u64,
    pub answered_401_per_sec: f64,
    /// Other datagrams received (should be none).
    pub answered_other: u64,
    /// Sends the kernel refused (e.g. a full socket buffer).
    pub send_errors: u64,
    pub generator_cpu_util: f64,
    pub server_cpu_secs: Option<f64>,
    /// Server CPU microseconds per request sent (kernel and user space).
    pub server_us_per_request: Option<f64>,
    pub duration_secs: f64,
}

pub fn run(args: &FloodArgs, out: &Output) -> anyhow::Result<()> {
    let r = flood(args, out)?;
    if out.json {
        return out.print_json(&r);
    }
    let mut t = Table::new(format!(
        "flood · {} · {} sources · {:.1} s",
        r.args.target.server, r.args.sources, r.duration_secs
    ));
    t.row(
        "unauthenticated Allocates sent",
        format!("{} /s ({} in all)", fmt_count(r.sent_per_sec), r.sent),
    );
    t.row(
        "401 answers",
        format!(
            "{} /s ({} in all; {} other datagrams)",
            fmt_count(r.answered_401_per_sec),
            r.answered_401,
            r.answered_other
        ),
    );
    t.row("send errors", r.send_errors.to_string());
    t.row(
        "generator CPU",
        format!("{:.0} % of a core", r.generator_cpu_util * 100.0),
    );
    if let (Some(s), Some(us)) = (r.server_cpu_secs, r.server_us_per_request) {
        t.row(
            "server CPU",
            format!("{s:.2} s, {us:.2} µs per request sent"),
        );
    }
    t.print();
    Ok(())
}

/// The `i`-th source address: 127.1.0.1, 127.1.0.2, …
fn source(i: u32) -> Ipv4Addr {
    let n = i + 1;
    Ipv4Addr::new(127, 1 + (n >> 16) as u8, (n >> 8) as u8, n as u8)
}

/// An Allocate (REQUESTED-TRANSPORT UDP) with no credentials; `seq` makes
/// the transaction id unique.
fn request(seq: u64, buf: &mut [u8]) -> anyhow::Result<usize> {
    let mut tid = [0u8; 12];
    tid[4..].copy_from_slice(&seq.to_be_bytes());
    let mut w = MessageWriter::new(buf, Method::Allocate, Class::Request, &tid)
        .map_err(|e| anyhow::anyhow!("encode: {e:?}"))?;
    w.u32(attr::REQUESTED_TRANSPORT, 17 << 24)
        .map_err(|e| anyhow::anyhow!("encode: {e:?}"))?;
    Ok(w.finish())
}

fn flood(args: &FloodArgs, out: &Output) -> anyhow::Result<FloodReport> {
    anyhow::ensure!(
        args.target.server.ip().is_loopback(),
        "--server must be a loopback address"
    );
    anyhow::ensure!(
        args.target.server.is_ipv4(),
        "--server must be IPv4 (sources are 127.1.x.y)"
    );
    anyhow::ensure!(
        args.duration > 0.0 && args.duration <= 3600.0,
        "--duration must be in (0, 3600] seconds"
    );
    cpu::require_process(args.server_pid)?;
    uturn_io::socket::raise_fd_limit();
    let sockets: Vec<UdpSocket> = (0..args.sources)
        .map(|i| {
            let s = UdpSocket::bind((IpAddr::V4(source(i)), 0))
                .with_context(|| format!("bind a source socket on {}", source(i)))?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .collect::<anyhow::Result<_>>()?;
    if let Some(cpu) = out.pin(0) {
        let _ = uturn_io::process::pin_current_thread(&[cpu]);
    }

    let duration = Duration::from_secs_f64(args.duration);
    let interval = match args.rate {
        0 => Duration::ZERO,
        r => Duration::from_secs_f64(1.0 / r as f64),
    };
    let server_cpu = CpuMeter::start(args.server_pid);
    let meter = ThreadMeter::start();
    let start = Instant::now();
    let (mut sent, mut send_errors, mut answered_401, mut answered_other) = (0u64, 0, 0, 0);
    let mut pkt = [0u8; 64];
    let mut reply = [0u8; 1500];
    let mut count_replies = |s: &UdpSocket| {
        while let Ok(n) = s.recv(&mut reply) {
            match Message::parse(&reply[..n]) {
                Ok(m) if m.class() == Class::Error && error_code(&m) == Some(401) => {
                    answered_401 += 1
                }
                _ => answered_other += 1,
            }
        }
    };
    'send: loop {
        for s in &sockets {
            let now = start.elapsed();
            if now >= duration {
                break 'send;
            }
            // Open loop: the n-th request leaves at n × interval.
            let due = interval.saturating_mul(u32::try_from(sent).unwrap_or(u32::MAX));
            if due > now {
                std::thread::sleep(due - now);
            }
            let n = request(sent, &mut pkt)?;
            match s.send_to(&pkt[..n], args.target.server) {
                Ok(_) => sent += 1,
                Err(_) => send_errors += 1,
            }
            count_replies(s);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Answers still in flight arrive within a moment.
    std::thread::sleep(Duration::from_millis(200));
    for s in &sockets {
        count_replies(s);
    }
    let server_cpu_secs = server_cpu.and_then(|m| m.secs());
    Ok(FloodReport {
        scenario: "flood",
        args: args.clone(),
        sent,
        sent_per_sec: sent as f64 / elapsed,
        answered_401,
        answered_401_per_sec: answered_401 as f64 / elapsed,
        answered_other,
        send_errors,
        generator_cpu_util: meter.utilisation(),
        server_cpu_secs,
        server_us_per_request: server_cpu_secs
            .filter(|_| sent > 0)
            .map(|s| s * 1e6 / sent as f64),
        duration_secs: elapsed,
    })
}

/// The ERROR-CODE number of an error response.
fn error_code(m: &Message<'_>) -> Option<u16> {
    let v = m.get(attr::ERROR_CODE)?.value;
    let class = u16::from(*v.get(2)? & 0x07);
    Some(class * 100 + u16::from(*v.get(3)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_count_up_from_127_1_0_1() {
        assert_eq!(source(0), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(source(254), Ipv4Addr::new(127, 1, 0, 255));
        assert_eq!(source(255), Ipv4Addr::new(127, 1, 1, 0));
        assert_eq!(source(64_999), Ipv4Addr::new(127, 1, 253, 232));
    }

    #[test]
    fn requests_are_unauthenticated_allocates_with_distinct_ids() {
        let (mut a, mut b) = ([0u8; 64], [0u8; 64]);
        let (na, nb) = (request(1, &mut a).unwrap(), request(2, &mut b).unwrap());
        let (ma, mb) = (
            Message::parse(&a[..na]).unwrap(),
            Message::parse(&b[..nb]).unwrap(),
        );
        assert_eq!(ma.method(), Method::Allocate);
        assert_eq!(ma.class(), Class::Request);
        assert!(ma.get(attr::MESSAGE_INTEGRITY).is_none());
        assert!(ma.get(attr::REQUESTED_TRANSPORT).is_some());
        assert_ne!(ma.transaction_id(), mb.transaction_id());
    }
}
