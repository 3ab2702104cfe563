//! Shared test harness: a guard that runs the real `uturn` binary on loopback,
//! a small synchronous TURN client built on `uturn::stun`, and a UDP peer.
//!
//! Every test that starts a server runs once per io backend: it is a plain
//! `fn` listed in [`on_both_backends!`], which makes `<name>::uring` and
//! `<name>::syscall` tests of it; `Server::start` passes the test's backend
//! as `--io-backend` and checks the `uturn: io backend` line.
//!
//! Every wait is bounded: socket reads carry timeouts, start-up and shutdown
//! have deadlines, and every loop has a count or a deadline.
#![allow(dead_code)]

mod certs;
mod client;
mod dtls;
mod flow;
mod metrics;
mod netns;
mod reply;
mod stream;

// Certificates are for the e2e stream tests only (interop.rs shares this module).
#[allow(unused_imports)]
pub use certs::*;
pub use client::*;
pub use dtls::*;
pub use flow::*;
pub use metrics::*;
// The network namespace topology is for the e2e tests only.
#[allow(unused_imports)]
pub use netns::*;
pub use reply::*;
pub use stream::*;

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use uturn::auth::{derive_key, userhash, PasswordAlgorithm};
use uturn::stun::attr::{self, Attribute};
use uturn::stun::channel::{self, ChannelData};
use uturn::stun::integrity::{self, Integrity};
use uturn::stun::{
    AddressFamily, Class, EncodeError, Message, MessageWriter, Method, TransactionId,
};

/// How long to wait for something that should arrive.
pub const WAIT: Duration = Duration::from_secs(2);
/// How long to listen when asserting that nothing arrives.
pub const QUIET: Duration = Duration::from_millis(400);
/// Bound on start-up (until `uturn: ready`) and on shutdown.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Path of the binary under test.
pub fn uturn_bin() -> &'static str {
    env!("CARGO_BIN_EXE_uturn")
}

/// A fresh path under cargo's per-target scratch directory.
pub fn scratch_path(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&dir).expect("create CARGO_TARGET_TMPDIR");
    dir.join(format!("{}-{}-{}", std::process::id(), n, name))
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------
// io backends
// ---------------------------------------------------------------------------

thread_local! {
    /// The io backend the servers this thread starts run on (None: uturn's default).
    static BACKEND: Cell<Option<&'static str>> = const { Cell::new(None) };
    /// How they serve TCP and TLS on io_uring (`--io-streams`; None: uturn's default).
    static STREAM_IO: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// The io backend set by `with_backend` for this test thread.
pub fn current_backend() -> Option<&'static str> {
    BACKEND.with(Cell::get)
}

/// Runs `test` with every server it starts on `backend` ("uring" or
/// "syscall"). Where io_uring is unavailable the uring run fails, saying
/// why, unless `UTURN_SKIP_URING=1` (then it prints SKIPPED and passes).
pub fn with_backend(backend: &'static str, test: fn()) {
    if backend == "uring" {
        static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
        let probe = PROBE.get_or_init(|| {
            uturn::io::uring::probe()
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        if let Err(why) = probe {
            if std::env::var("UTURN_SKIP_URING").is_ok_and(|v| v == "1") {
                println!("SKIPPED (uring backend): io_uring unavailable ({why})");
                return;
            }
            panic!(
                "io_uring unavailable here ({why}); set UTURN_SKIP_URING=1 to skip the \
                 io_uring runs of the tests"
            );
        }
    }
    BACKEND.with(|b| b.set(Some(backend)));
    test();
}

/// As `with_backend("uring", test)`, with TCP and TLS served through the
/// stream engine's epoll instance (`--io-streams epoll`), the path a kernel
/// without multishot accept and receive gets.
pub fn with_uring_epoll_streams(test: fn()) {
    STREAM_IO.with(|s| s.set(Some("epoll")));
    with_backend("uring", test);
}

/// For each named test function, a module of that name with two tests,
/// `uring` and `syscall`, that run it on each io backend. A test function
/// left out of the list is dead code, which clippy refuses. Attributes
/// written before a name (`#[ignore = "why"] name`) go on both tests.
#[allow(unused_macros)] // each test crate uses one or both of the two
macro_rules! on_both_backends {
    ($($(#[$attr:meta])* $name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[test]
                $(#[$attr])*
                fn uring() {
                    $crate::common::with_backend("uring", super::$name);
                }
                #[test]
                $(#[$attr])*
                fn syscall() {
                    $crate::common::with_backend("syscall", super::$name);
                }
            }
        )+
    };
}
#[allow(unused_imports)]
pub(crate) use on_both_backends;

/// As [`on_both_backends!`], plus `uring_epoll`: io_uring with TCP and TLS
/// through epoll (`--io-streams epoll`). For the tests of streams, whose
/// io differs on each. Attributes before a name go on all three tests.
#[allow(unused_macros)]
macro_rules! on_every_stream_io {
    ($($(#[$attr:meta])* $name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[test]
                $(#[$attr])*
                fn uring() {
                    $crate::common::with_backend("uring", super::$name);
                }
                #[test]
                $(#[$attr])*
                fn uring_epoll() {
                    $crate::common::with_uring_epoll_streams(super::$name);
                }
                #[test]
                $(#[$attr])*
                fn syscall() {
                    $crate::common::with_backend("syscall", super::$name);
                }
            }
        )+
    };
}
#[allow(unused_imports)]
pub(crate) use on_every_stream_io;

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// Collects a child's output on a thread so that a full pipe never blocks it;
/// the thread ends at EOF (join it to know everything was read).
fn drain<R: Read + Send + 'static>(r: R, sink: Arc<Mutex<Vec<u8>>>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut r = r;
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    })
}

/// Sends `sig` to a process by PID.
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// Waits for `child` to exit, at most `limit`.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// The outcome of a command run to completion (or killed at its deadline).
pub struct Finished {
    /// None when the command had to be killed at the deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command with a deadline, capturing its output; panics if it cannot start.
pub fn run_bounded(cmd: Command, limit: Duration) -> Finished {
    try_run_bounded(cmd, limit).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs a command with a deadline, capturing its output.
pub fn try_run_bounded(mut cmd: Command, limit: Duration) -> Result<Finished, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot spawn {cmd:?}: {e}"))?;
    let out = Arc::new(Mutex::new(Vec::new()));
    let err = Arc::new(Mutex::new(Vec::new()));
    let readers = [
        drain(child.stdout.take().unwrap(), out.clone()),
        drain(child.stderr.take().unwrap(), err.clone()),
    ];
    let status = wait_bounded(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    // The pipes reach EOF once the child (and anything it left holding
    // them) is gone.
    for r in readers {
        let _ = r.join();
    }
    let stdout = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err.lock().unwrap()).into_owned();
    Ok(Finished {
        status,
        stdout,
        stderr,
    })
}

/// A running `uturn` process; SIGTERM (then SIGKILL) on drop.
pub struct Server {
    child: Option<Child>,
    /// Every `uturn: listening on udp ADDR` line, in order.
    pub listen: Vec<SocketAddr>,
    /// Every `uturn: listening on tcp ADDR` line, in order.
    pub tcp: Vec<SocketAddr>,
    /// Every `uturn: listening on tls ADDR` line, in order.
    pub tls: Vec<SocketAddr>,
    /// The first listen address: where clients send.
    pub addr: SocketAddr,
    /// `uturn: relay <ip> ports <low>-<high>`, as printed.
    pub relay_line: String,
    /// `(name, password, realm)` from the demo-user line, when printed.
    pub demo_user: Option<(String, String, String)>,
    /// The demo REST secret, when printed.
    pub demo_rest_secret: Option<String>,
    /// The backend named by `uturn: io backend <name>`.
    pub io_backend: Option<String>,
    /// Everything printed on stdout up to `uturn: ready`.
    pub banner: Vec<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
    args: Vec<String>,
}

fn has_flag(args: &[&str], flag: &str) -> bool {
    args.iter()
        .any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
}

/// Parses `"name" password "pw" realm "r"` style quoted values in order.
fn quoted(line: &str) -> Vec<String> {
    line.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

impl Server {
    /// Starts uturn with `args`, adding `--listen 127.0.0.1:0`,
    /// `--relay-ip 127.0.0.1`, `--workers 2`, `--drain-timeout 0` and the
    /// test's `--io-backend` unless `args` names them.
    /// Panics (with the server's stderr) if it is not ready within 10 s.
    pub fn start(args: &[&str]) -> Server {
        match Server::try_start(args) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    pub fn try_start(args: &[&str]) -> Result<Server, String> {
        Server::try_start_via(args, |full| {
            let mut cmd = Command::new(uturn_bin());
            cmd.args(full);
            cmd
        })
    }

    /// As [`Server::try_start`], with the command that runs uturn with the
    /// completed arguments made by `command` (e.g. inside a network
    /// namespace, see `Topology::start_uturn`).
    pub fn try_start_via(
        args: &[&str],
        command: impl FnOnce(&[String]) -> Command,
    ) -> Result<Server, String> {
        let mut full: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if !has_flag(args, "--listen") && !has_flag(args, "--config") {
            full.extend(["--listen".into(), "127.0.0.1:0".into()]);
        }
        if !has_flag(args, "--relay-ip") && !has_flag(args, "--config") {
            full.extend(["--relay-ip".into(), "127.0.0.1".into()]);
        }
        if !has_flag(args, "--workers") {
            full.extend(["--workers".into(), "2".into()]);
        }
        // Test servers stop at once on SIGTERM unless a test is about draining.
        if !has_flag(args, "--drain-timeout") {
            full.extend(["--drain-timeout".into(), "0".into()]);
        }
        if let Some(b) = current_backend().filter(|_| !has_flag(args, "--io-backend")) {
            full.extend(["--io-backend".into(), b.into()]);
        }
        if let Some(s) = STREAM_IO
            .with(Cell::get)
            .filter(|_| !has_flag(args, "--io-streams"))
        {
            full.extend(["--io-streams".into(), s.into()]);
        }
        let cmd = command(&full);
        let server = Server::spawn_command(cmd, full)?;
        if let Some(want) = current_backend() {
            if server.io_backend.as_deref() != Some(want) {
                return Err(server.failure(&format!(
                    "expected `uturn: io backend {want}`, got {:?}",
                    server.io_backend
                )));
            }
        }
        Ok(server)
    }

    /// Starts uturn with exactly these arguments.
    pub fn spawn_exact(args: Vec<String>) -> Result<Server, String> {
        let mut cmd = Command::new(uturn_bin());
        cmd.args(&args);
        Server::spawn_command(cmd, args)
    }

    /// Starts `cmd` (the uturn binary, run with `args`, prepared by the
    /// caller) and waits for `uturn: ready`.
    pub fn spawn_command(mut cmd: Command, args: Vec<String>) -> Result<Server, String> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot spawn {}: {e}", uturn_bin()))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let _ = drain(child.stderr.take().unwrap(), stderr.clone());

        // Lines from stdout go through a channel so that the wait is bounded.
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        // The receiver goes away after `ready`; keep draining.
                        let _ = tx.send(line.trim_end().to_owned());
                    }
                }
            }
        });

        let mut server = Server {
            child: Some(child),
            listen: Vec::new(),
            tcp: Vec::new(),
            tls: Vec::new(),
            addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            relay_line: String::new(),
            demo_user: None,
            demo_rest_secret: None,
            io_backend: None,
            banner: Vec::new(),
            stderr,
            args,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(server.failure("no `uturn: ready` on stdout within 10 s"));
            }
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    server.banner.push(line.clone());
                    if let Some((kind, rest)) = line
                        .strip_prefix("uturn: listening on ")
                        .and_then(|r| r.split_once(' '))
                    {
                        let a: SocketAddr = rest.trim().parse().map_err(|e| {
                            server.failure(&format!("bad listen line {line:?}: {e}"))
                        })?;
                        match kind {
                            "udp" => server.listen.push(a),
                            "tcp" => server.tcp.push(a),
                            "tls" => server.tls.push(a),
                            // Another kind of listener: in `banner` only.
                            _ => {}
                        }
                    } else if line.starts_with("uturn: relay ") {
                        server.relay_line = line;
                    } else if line.starts_with("uturn: demo user ") {
                        let q = quoted(&line);
                        if q.len() == 3 {
                            server.demo_user = Some((q[0].clone(), q[1].clone(), q[2].clone()));
                        }
                    } else if let Some(b) = line.strip_prefix("uturn: io backend ") {
                        server.io_backend = Some(b.trim().to_owned());
                    } else if line.starts_with("uturn: demo rest-secret ") {
                        server.demo_rest_secret = quoted(&line).into_iter().next();
                    } else if line == "uturn: ready" {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(st) = server
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten())
                    {
                        return Err(server.failure(&format!("exited before ready: {st}")));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let st = server
                        .child
                        .as_mut()
                        .and_then(|c| wait_bounded(c, Duration::from_secs(2)));
                    return Err(
                        server.failure(&format!("stdout closed before ready (exit: {st:?})"))
                    );
                }
            }
        }
        if server.listen.is_empty() {
            return Err(server.failure("ready, but no `uturn: listening on udp` line came first"));
        }
        server.addr = server.listen[0];
        Ok(server)
    }

    fn failure(&self, what: &str) -> String {
        format!(
            "uturn {:?}: {what}\n--- stdout so far:\n{}\n--- stderr:\n{}",
            self.args,
            self.banner.join("\n"),
            self.stderr_text()
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Panics with the server's stderr if the process has exited.
    pub fn assert_alive(&mut self, context: &str) {
        let st = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if let Some(st) = st {
            panic!(
                "uturn died ({st}) {context}\n--- stderr:\n{}",
                self.stderr_text()
            );
        }
    }

    /// Waits (bounded) for the process to exit on its own; SIGKILL and None
    /// if it does not within `limit`.
    pub fn wait_exit(mut self, limit: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take().expect("running");
        let st = wait_bounded(&mut child, limit);
        if st.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        st
    }

    /// Sends `sig` and waits (bounded) for the exit status; SIGKILL if it hangs.
    pub fn stop_with(mut self, sig: nix::sys::signal::Signal) -> Option<ExitStatus> {
        let mut child = self.child.take().expect("running");
        signal(child.id(), sig);
        let st = wait_bounded(&mut child, STOP_TIMEOUT);
        if st.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        st
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let mut gone = None;
        if let Some(mut child) = self.child.take() {
            // Already exited (and reaped here, or earlier by a check): its
            // PID may belong to another process by now, so it gets no signal.
            if let Ok(Some(st)) = child.try_wait() {
                gone = Some(st);
            } else {
                signal(child.id(), nix::sys::signal::Signal::SIGTERM);
            }
            if gone.is_none() && wait_bounded(&mut child, STOP_TIMEOUT).is_none() {
                eprintln!(
                    "uturn (pid {}) ignored SIGTERM for 10 s; killing it",
                    child.id()
                );
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if thread::panicking() {
            let text = self.stderr_text();
            let tail: String = text
                .chars()
                .rev()
                .take(6000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            if let Some(st) = gone {
                eprintln!("--- uturn had exited on its own ({st})");
            }
            eprintln!("--- uturn {:?} stderr (tail):\n{tail}", self.args);
        }
    }
}

/// A free UDP port on `ip` at the moment of asking (for tools that cannot take port 0).
pub fn free_udp_port(ip: IpAddr) -> u16 {
    UdpSocket::bind((ip, 0))
        .expect("bind ephemeral")
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------
// Peers
// ---------------------------------------------------------------------------

/// A UDP socket standing in for a TURN peer.
pub struct Peer {
    pub sock: UdpSocket,
    pub addr: SocketAddr,
}

impl Peer {
    pub fn bind(ip: IpAddr) -> Peer {
        let sock = UdpSocket::bind((ip, 0)).unwrap_or_else(|e| panic!("bind peer on {ip}: {e}"));
        let addr = sock.local_addr().unwrap();
        Peer { sock, addr }
    }

    pub fn v4() -> Peer {
        Peer::bind(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    pub fn send_to(&self, data: &[u8], to: SocketAddr) {
        self.sock
            .send_to(data, to)
            .unwrap_or_else(|e| panic!("peer send to {to}: {e}"));
    }

    /// The next datagram within `limit`.
    pub fn recv(&self, limit: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        recv_within(&self.sock, limit)
    }

    /// Panics if anything arrives within `QUIET`.
    pub fn expect_nothing(&self, context: &str) {
        if let Some((d, from)) = self.recv(QUIET) {
            panic!(
                "{context}: peer {} received {} bytes from {from}: {:?}",
                self.addr,
                d.len(),
                show(&d)
            );
        }
    }
}

/// One datagram within `limit`, or None.
pub fn recv_within(sock: &UdpSocket, limit: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => return Some((buf[..n].to_vec(), from)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            // ICMP port unreachable from an earlier send shows up as an error here.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(e) => panic!("recv on {:?}: {e}", sock.local_addr()),
        }
    }
}

/// Short printable form of a datagram for failure messages.
pub fn show(d: &[u8]) -> String {
    let head = &d[..d.len().min(48)];
    format!("{}{}", hex(head), if d.len() > 48 { "…" } else { "" })
}

/// Reads a file, panicking with its path.
pub fn read_to_string(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}
