//! CPU time, memory and descriptors of a process (ours or the server's),
//! and per-socket drop counters, read from /proc and getrusage.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

pub use uturn_io::process::self_cpu_secs;
use uturn_io::process::{clock_ticks_per_sec, thread_cpu_ns};

/// User + system CPU seconds used so far by every thread of `pid`
/// (/proc/PID/stat `utime` + `stime`, in clock ticks of 1/CLK_TCK s;
/// a resolution of 10 ms on most systems). `None` if it cannot be read.
pub fn process_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: fields
    // are counted from after the last ')'. utime and stime are fields 14
    // and 15 of the line, i.e. 12th and 13th after the name.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: f64 = f.next()?.parse().ok()?;
    let stime: f64 = f.next()?.parse().ok()?;
    Some((utime + stime) / clock_ticks_per_sec())
}

/// The CPU seconds a process (the server) uses from the moment it is started.
#[derive(Clone, Copy, Debug)]
pub struct CpuMeter {
    pid: u32,
    start: f64,
}

impl CpuMeter {
    /// Starts measuring `pid` (`None` without a pid, or when it cannot be read).
    pub fn start(pid: Option<u32>) -> Option<CpuMeter> {
        let pid = pid?;
        Some(CpuMeter {
            pid,
            start: process_cpu_secs(pid)?,
        })
    }

    /// CPU seconds since the start (`None` when it can no longer be read).
    pub fn secs(&self) -> Option<f64> {
        Some(process_cpu_secs(self.pid)? - self.start)
    }
}

/// How much of one core the calling thread uses from the moment it is started.
#[derive(Clone, Copy, Debug)]
pub struct ThreadMeter {
    cpu_ns: u64,
    wall: Instant,
}

impl ThreadMeter {
    pub fn start() -> ThreadMeter {
        ThreadMeter {
            cpu_ns: thread_cpu_ns(),
            wall: Instant::now(),
        }
    }

    /// The thread's CPU time over the wall time since the start (1.0: one core).
    pub fn utilisation(&self) -> f64 {
        let wall = self.wall.elapsed().as_secs_f64().max(1e-9);
        (thread_cpu_ns().saturating_sub(self.cpu_ns)) as f64 / 1e9 / wall
    }
}

/// Resident memory of `pid` in bytes (VmRSS of /proc/PID/status).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Open file descriptors of `pid` (entries of /proc/PID/fd).
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Whether `pid` names a live process we can read.
pub fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}/stat")).exists()
}

/// Refuses a `--server-pid` that names no process.
pub fn require_process(pid: Option<u32>) -> anyhow::Result<()> {
    match pid {
        Some(pid) if !process_exists(pid) => anyhow::bail!("--server-pid {pid}: no such process"),
        _ => Ok(()),
    }
}

/// Cumulative time counters of one CPU from /proc/stat, in clock ticks.
#[derive(Clone, Copy, Debug, Default)]
pub struct CoreTimes {
    pub cpu: usize,
    pub busy: u64,
    pub softirq: u64,
    pub total: u64,
}

/// How busy one CPU was between two [`core_times`] samples.
#[derive(serde::Serialize, Clone, Copy, Debug, PartialEq)]
pub struct CoreLoad {
    pub cpu: usize,
    /// Fraction of the time not idle (user, system, interrupts, steal…).
    pub busy: f64,
    /// Fraction of the time spent in softirq (on loopback: most of the
    /// network stack's receive path, charged to no process).
    pub softirq: f64,
}

/// Per-CPU counters of /proc/stat (`cpuN user nice system idle iowait irq
/// softirq steal …`).
pub fn core_times() -> Vec<CoreTimes> {
    let Ok(text) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some(name) = f.next() else { continue };
        let Some(cpu) = name
            .strip_prefix("cpu")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let v: Vec<u64> = f.take(8).map(|x| x.parse().unwrap_or(0)).collect();
        if v.len() < 8 {
            continue;
        }
        let idle = v[3] + v[4];
        let total: u64 = v.iter().sum();
        out.push(CoreTimes {
            cpu,
            busy: total - idle,
            softirq: v[6],
            total,
        });
    }
    out
}

/// The load of every CPU between samples `a` and `b`.
pub fn core_loads(a: &[CoreTimes], b: &[CoreTimes]) -> Vec<CoreLoad> {
    b.iter()
        .filter_map(|y| {
            let x = a.iter().find(|x| x.cpu == y.cpu)?;
            let total = y.total.saturating_sub(x.total).max(1) as f64;
            Some(CoreLoad {
                cpu: y.cpu,
                busy: y.busy.saturating_sub(x.busy) as f64 / total,
                softirq: y.softirq.saturating_sub(x.softirq) as f64 / total,
            })
        })
        .collect()
}

/// Datagrams the kernel dropped on receive (full buffer and the like) at
/// the UDP sockets bound to `addrs`: the `drops` column of /proc/net/udp
/// and udp6, matched on local address and port. Tells loss at the
/// generator's own sockets apart from loss in the server.
pub fn udp_drops(addrs: &HashSet<SocketAddr>) -> u64 {
    udp_drops_at("/proc/self/net", addrs)
}

/// As [`udp_drops`], from the `udp` and `udp6` tables under `net`: a
/// network namespace's view, such as `/proc/PID/net` (the namespace of
/// process PID) or `/proc/thread-self/net` (the calling thread's).
pub fn udp_drops_at(net: &str, addrs: &HashSet<SocketAddr>) -> u64 {
    let mut total = 0;
    for table in ["udp", "udp6"] {
        let Ok(text) = std::fs::read_to_string(format!("{net}/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
            let (Some(local), Some(drops)) = (cols.get(1), cols.last()) else {
                continue;
            };
            if parse_proc_addr(local).is_some_and(|a| addrs.contains(&a)) {
                total += drops.parse::<u64>().unwrap_or(0);
            }
        }
    }
    total
}

/// A local address of /proc/net/udp(6): the address as 32-bit words in
/// host byte order, hex, then `:` and the port in hex.
fn parse_proc_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for chunk in ip.as_bytes().chunks(8) {
        let word = u32::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(process_cpu_secs(pid).is_some());
        assert!(rss_bytes(pid).unwrap() > 0);
        assert!(open_fds(pid).unwrap() >= 3);
        assert!(self_cpu_secs() >= 0.0);
        assert!(process_exists(pid));
        assert!(require_process(Some(pid)).is_ok() && require_process(None).is_ok());
        assert!(CpuMeter::start(Some(pid)).unwrap().secs().unwrap() >= 0.0);
        assert!(CpuMeter::start(None).is_none());
        let t = ThreadMeter::start();
        let spin = std::time::Instant::now();
        while spin.elapsed().as_millis() < 5 {}
        assert!(t.utilisation() > 0.0);
        let s = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
        let a = s.local_addr().unwrap();
        assert_eq!(udp_drops(&HashSet::from([a])), 0);
        // The socket is listed under its own address.
        let listed = std::fs::read_to_string("/proc/self/net/udp")
            .unwrap()
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(1).and_then(parse_proc_addr))
            .any(|x| x == a);
        assert!(listed);
        let a = core_times();
        assert!(!a.is_empty());
        let spin = std::time::Instant::now();
        while spin.elapsed().as_millis() < 30 {}
        let l = core_loads(&a, &core_times());
        assert_eq!(l.len(), a.len());
        assert!(l.iter().all(|c| (0.0..=1.0).contains(&c.busy)));
    }
}
