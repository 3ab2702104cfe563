//! Starting and stopping the systems under test: uturn, the floor (this
//! binary) and coturn, each fresh on a free loopback port (and, with
//! `--transport tcp|tls`, a TCP or TLS listener), pinned to one CPU, waited
//! for until ready and stopped by PID.

use std::fs::File;
use std::io::{BufRead, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use uturn_io::process;
use uturn_stun::{attr, Class, Message, MessageWriter, Method};

use super::command::command_line;
use super::{CompareArgs, Scenario, System, REALM, USER};
use crate::flags::Transport;

/// uturn's configuration file for every run: its defaults except two
/// limits that a loopback load test trips over and coturn does not have by
/// default: the allocation quotas (10 per user, 10 000 in total), and the
/// rate limit on replies to unauthenticated requests (20/s, burst 40, per
/// source IP — every generated client is 127.0.0.1, so the 401 of the first
/// round would be refused to all but about 40 flows plus 20 per second).
/// Everything else is given as flags.
pub(super) const UTURN_CONFIG: &str =
    "# Written by uturn-loadgen compare: uturn's defaults except these limits.\n\
[quotas]\n\
allocations_per_user = 100000\n\
total_allocations = 100000\n\
[rate_limit]\n\
unauth_per_second = 1000000\n\
unauth_burst = 1000000\n";
/// How long a stopped server gets between SIGTERM and SIGKILL.
pub(super) const STOP_GRACE: Duration = Duration::from_secs(5);

/// Finds `bin` as a path or on PATH.
pub(super) fn locate(bin: &Path) -> Option<PathBuf> {
    if bin.components().count() > 1 {
        return bin.is_file().then(|| bin.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| p.is_file())
    })
}

/// A loopback port free for UDP and for TCP: coturn listens on both at
/// its --listening-port (a port free for UDP only may be the local port of
/// one of the generator's TCP connections, and coturn then fails to start).
fn free_udp_port() -> anyhow::Result<u16> {
    for _ in 0..20 {
        let s = UdpSocket::bind("127.0.0.1:0").context("finding a free port")?;
        let port = s.local_addr()?.port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no loopback port free for both UDP and TCP in 20 tries")
}

fn free_tcp_port() -> anyhow::Result<u16> {
    let s = TcpListener::bind("127.0.0.1:0").context("finding a free TCP port")?;
    Ok(s.local_addr()?.port())
}

/// The certificate and key the servers get with `--transport tls`.
fn certificate_files(log_dir: &Path) -> (PathBuf, PathBuf) {
    (log_dir.join("tls-cert.pem"), log_dir.join("tls-key.pem"))
}

/// Writes a self-signed P-256 certificate for "localhost" (and its key)
/// into `log_dir`, for the servers' TLS listeners.
pub(super) fn write_certificate(log_dir: &Path) -> anyhow::Result<()> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .context("making a self-signed certificate")?;
    let (cert, key) = certificate_files(log_dir);
    std::fs::write(&cert, ck.cert.pem()).with_context(|| format!("writing {}", cert.display()))?;
    std::fs::write(&key, ck.key_pair.serialize_pem())
        .with_context(|| format!("writing {}", key.display()))?;
    Ok(())
}

/// A relay port range for uturn and coturn: above the kernel's ephemeral
/// range (32768–60999 by default) where the generator's own sockets live,
/// growing downwards when many flows need more ports. The allocate scenario
/// gets 20000–65535: coturn does not hand a deleted allocation's port out
/// again at once, so thousands of flows per second need many ports.
fn relay_port_range(scenario: Scenario, flows: usize) -> (u16, u16) {
    if scenario == Scenario::Allocate {
        return (20_000, 65_535);
    }
    let want = (flows * 2 + 256).clamp(4_000, 30_000) as u16;
    let hi = 65_535u16;
    (hi - want + 1, hi)
}

/// A started system under test.
pub(super) struct Server {
    pub child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub command: String,
    pub log: PathBuf,
}

/// The last lines of a log, for error messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// Sends one STUN Binding request to `addr`; true when a response with the
/// same transaction id comes back within `wait`.
fn stun_answers(addr: SocketAddr, wait: Duration) -> bool {
    let Ok(sock) = UdpSocket::bind(SocketAddr::new(addr.ip(), 0)) else {
        return false;
    };
    let mut tid = [0u8; 12];
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    tid.copy_from_slice(&nanos.to_be_bytes()[4..]);
    let mut buf = [0u8; 512];
    let Ok(w) = MessageWriter::new(&mut buf, Method::Binding, Class::Request, &tid) else {
        return false;
    };
    let n = w.finish();
    if sock.set_read_timeout(Some(wait)).is_err() || sock.send_to(&buf[..n], addr).is_err() {
        return false;
    }
    let mut resp = [0u8; 1500];
    match sock.recv_from(&mut resp) {
        Ok((n, _)) => Message::parse(&resp[..n]).is_ok_and(|m| {
            m.transaction_id() == &tid
                && m.method() == Method::Binding
                && m.get(attr::XOR_MAPPED_ADDRESS).is_some()
        }),
        Err(_) => false,
    }
}

impl Server {
    /// Starts `system`, pinned to `cpu`, and waits until it is ready.
    pub(super) fn start(
        system: System,
        args: &CompareArgs,
        coturn: Option<&Path>,
        log_dir: &Path,
        tag: &str,
        flows: usize,
    ) -> anyhow::Result<Server> {
        let port = free_udp_port()?;
        let udp: SocketAddr = SocketAddr::from(([127, 0, 0, 1], port));
        let transport = args.relay.target.transport;
        // The client-facing listener: coturn's TCP listener shares the UDP
        // port; uturn's and the TLS listeners get their own.
        let addr = match (transport, system) {
            (Transport::Udp, _) | (Transport::Tcp, System::Coturn) => udp,
            _ => SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?)),
        };
        let (cert, key) = certificate_files(log_dir);
        let (lo, hi) = relay_port_range(args.scenario, flows);
        let log = log_dir.join(format!("{tag}-{}.log", system.name()));
        let (program, argv, ready_line): (PathBuf, Vec<String>, Option<&str>) = match system {
            System::Uturn | System::UturnSyscall | System::UturnBaseline => {
                let config = log_dir.join("uturn.toml");
                std::fs::write(&config, UTURN_CONFIG)
                    .with_context(|| format!("writing {}", config.display()))?;
                let mut v: Vec<String> = [
                    "--config",
                    &config.display().to_string(),
                    "--listen",
                    &udp.to_string(),
                    "--relay-ip",
                    "127.0.0.1",
                    "--relay-ports",
                    &format!("{lo}-{hi}"),
                    "--user",
                    USER,
                    "--realm",
                    REALM,
                    "--allow-peer",
                    "127.0.0.0/8",
                    "--workers",
                    "1",
                    // Stopped by SIGTERM after each run: no drain.
                    "--drain-timeout",
                    "0",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                match transport {
                    Transport::Udp => {}
                    Transport::Tcp => v.extend(["--listen-tcp".into(), addr.to_string()]),
                    Transport::Tls => v.extend([
                        "--listen-tls".into(),
                        addr.to_string(),
                        "--tls-cert".into(),
                        cert.display().to_string(),
                        "--tls-key".into(),
                        key.display().to_string(),
                    ]),
                }
                v.extend(args.uturn_args.iter().cloned());
                if system == System::UturnSyscall {
                    v.extend(["--io-backend".to_string(), "syscall".to_string()]);
                }
                let bin = match (system, &args.baseline_bin) {
                    (System::UturnBaseline, Some(b)) => b.clone(),
                    (System::UturnBaseline, None) => bail!("uturn-baseline needs --baseline-bin"),
                    _ => args.uturn_bin.clone(),
                };
                (bin, v, Some("uturn: ready"))
            }
            System::Floor => {
                let exe = std::env::current_exe().context("finding this binary")?;
                let v = [
                    "floor",
                    "--listen",
                    &udp.to_string(),
                    "--relay-ip",
                    "127.0.0.1",
                    "--batch",
                    "32",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                (exe, v, Some("floor: ready"))
            }
            System::Coturn => {
                let bin = coturn.context("coturn is not installed")?.to_path_buf();
                let pidfile = log_dir.join(format!("{tag}-coturn.pid"));
                let mut v: Vec<String> = [
                    "-n",
                    "--listening-ip",
                    "127.0.0.1",
                    "--listening-port",
                    &port.to_string(),
                    "--relay-ip",
                    "127.0.0.1",
                    "--min-port",
                    &lo.to_string(),
                    "--max-port",
                    &hi.to_string(),
                    "--user",
                    USER,
                    "--realm",
                    REALM,
                    "--lt-cred-mech",
                    "--allow-loopback-peers",
                    "--no-dtls",
                    "--no-cli",
                    "--relay-threads",
                    "1",
                    "--no-stdout-log",
                    "--simple-log",
                    "--log-file",
                    &log.display().to_string(),
                    "--pidfile",
                    &pidfile.display().to_string(),
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                // Its TCP listener shares --listening-port.
                match transport {
                    Transport::Udp | Transport::Tcp => v.push("--no-tls".into()),
                    Transport::Tls => v.extend([
                        "--tls-listening-port".into(),
                        addr.port().to_string(),
                        "--cert".into(),
                        cert.display().to_string(),
                        "--pkey".into(),
                        key.display().to_string(),
                    ]),
                }
                (bin, v, None)
            }
        };
        let shown = match system {
            System::Floor => "uturn-loadgen".to_string(),
            _ => program.display().to_string(),
        };
        let command = format!(
            "taskset -c {} {}",
            args.sut_cpu,
            command_line(&shown, &argv)
        );
        let log_file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(&program);
        cmd.args(&argv)
            .stdin(Stdio::null())
            .stdout(if ready_line.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(log_file.try_clone()?);
        process::pin_child(&mut cmd, args.sut_cpu)
            .with_context(|| format!("pinning {} to CPU {}", system.name(), args.sut_cpu))?;
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let pid = child.id();
        // The ready line is looked for by a thread that keeps draining the
        // server's stdout into its log afterwards (a full pipe would stall it).
        let ready_rx = match (child.stdout.take(), ready_line) {
            (Some(stdout), Some(marker)) => {
                let (tx, rx) = mpsc::channel::<()>();
                let mut sink = log_file;
                std::thread::spawn(move || {
                    let mut tx = Some(tx);
                    for line in BufReader::new(stdout).lines() {
                        let Ok(line) = line else { break };
                        let _ = writeln!(sink, "{line}");
                        if line.trim() == marker {
                            if let Some(tx) = tx.take() {
                                let _ = tx.send(());
                            }
                        }
                    }
                });
                Some(rx)
            }
            _ => None,
        };
        let mut server = Server {
            child,
            pid,
            addr,
            command,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs_f64(args.ready_timeout.max(0.1));
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "{} exited before it was ready ({status}); log {}:\n{}",
                    system.name(),
                    server.log.display(),
                    log_tail(&server.log)
                );
            }
            let ready = match &ready_rx {
                Some(rx) => match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(()) => true,
                    Err(mpsc::RecvTimeoutError::Timeout) => false,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        std::thread::sleep(Duration::from_millis(50));
                        false
                    }
                },
                // coturn: its UDP listener answers, and its TCP or TLS one
                // accepts.
                _ => {
                    stun_answers(udp, Duration::from_millis(100))
                        && (transport == Transport::Udp
                            || TcpStream::connect_timeout(&addr, Duration::from_millis(100))
                                .is_ok())
                }
            };
            if ready {
                break;
            }
            if Instant::now() >= deadline {
                server.stop();
                bail!(
                    "{} was not ready within {} s; log {}:\n{}",
                    system.name(),
                    args.ready_timeout,
                    server.log.display(),
                    log_tail(&server.log)
                );
            }
        }
        Ok(server)
    }

    /// SIGTERM by PID, then SIGKILL after the grace period; reaps the child.
    pub(super) fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        process::signal_pid(self.pid, libc::SIGTERM);
        let until = Instant::now() + STOP_GRACE;
        while Instant::now() < until {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "compare: pid {} did not stop on SIGTERM; killing it",
            self.pid
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges() {
        assert_eq!(relay_port_range(Scenario::Relay, 100), (61_536, 65_535));
        assert_eq!(relay_port_range(Scenario::Allocate, 1), (20_000, 65_535));
        let (lo, hi) = relay_port_range(Scenario::Relay, 10_000);
        assert_eq!(hi, 65_535);
        assert!(usize::from(hi - lo) >= 20_000);
    }
}
