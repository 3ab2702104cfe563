//! The XDP test topology for the tests: three network namespaces (client,
//! relay, peer) joined by two veth pairs, made by `tuning/xdp/topology.sh`
//! (see its header for the addresses and why each option exists).
//!
//! [`Topology::up`] needs root, a working `ip netns` and clang (for the
//! XDP_PASS program on the client's and the peer's ends). Where one is
//! missing it prints `skipped: <why>` and returns None, unless
//! `UTURN_REQUIRE_XDP=1`, which turns the skip into a failure. Dropping a
//! [`Topology`] removes its namespaces.

use super::*;

use std::net::Ipv6Addr;
use std::path::Path;

/// The client's address on the client–relay link (c0).
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(10, 200, 1, 2);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 2);
/// The relay's address facing the client (rc): where it listens.
pub const RELAY_LISTEN_V4: Ipv4Addr = Ipv4Addr::new(10, 200, 1, 1);
pub const RELAY_LISTEN_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 1);
/// The relay's address facing the peer (rp): its relay address.
pub const RELAY_PEER_V4: Ipv4Addr = Ipv4Addr::new(10, 200, 2, 1);
pub const RELAY_PEER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 1);
/// The peer's address on the relay–peer link (p0).
pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(10, 200, 2, 2);
pub const PEER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 2);

/// One of the three namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Relay,
    Peer,
}

/// A topology of three namespaces, torn down on drop.
pub struct Topology {
    prefix: String,
}

/// How long the script may take to make or remove a topology.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);

fn script() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tuning/xdp/topology.sh"
    ))
}

/// Skips (None) with `why`, or fails when `UTURN_REQUIRE_XDP=1`.
fn skip(test: &str, why: &str) -> Option<Topology> {
    if std::env::var("UTURN_REQUIRE_XDP").is_ok_and(|v| v == "1") {
        panic!("{test}: {why} (UTURN_REQUIRE_XDP=1)");
    }
    println!("skipped: {test}: {why}");
    None
}

/// The effective uid, from /proc/self/status (`Uid: real effective ...`).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Whether `program ARGS` runs and exits 0 (bounded).
fn runs(program: &str, args: &[&str]) -> bool {
    let mut c = Command::new(program);
    c.args(args);
    try_run_bounded(c, SCRIPT_TIMEOUT).is_ok_and(|f| f.status.is_some_and(|s| s.success()))
}

/// Names of the namespaces that `ip netns list` shows.
pub fn netns_list() -> Vec<String> {
    let mut c = Command::new("ip");
    c.args(["netns", "list"]);
    let out = run_bounded(c, SCRIPT_TIMEOUT);
    out.stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

impl Topology {
    /// Makes a topology under a prefix no other test of this process uses
    /// (`u<pid mod 10000, 4 digits><n>`: namespace names must stay short);
    /// `name_hint` names the test in the skip message. Panics if the script
    /// fails although root, `ip netns` and clang are there.
    pub fn up(name_hint: &str) -> Option<Topology> {
        static N: AtomicU64 = AtomicU64::new(0);
        if effective_uid() != Some(0) {
            return skip(name_hint, "network namespaces need root");
        }
        if !runs("ip", &["netns", "list"]) {
            return skip(name_hint, "`ip netns list` fails (no iproute2?)");
        }
        if !runs("clang", &["--version"]) {
            return skip(
                name_hint,
                "no clang for the XDP_PASS program of the topology",
            );
        }
        let n = N.fetch_add(1, Ordering::Relaxed);
        // Four digits of the PID, then the count: never the same prefix twice.
        let prefix = format!("u{:04}{n}", std::process::id() % 10_000);
        let mut c = Command::new(script());
        c.args(["up", &prefix]);
        let out = run_bounded(c, SCRIPT_TIMEOUT);
        // From here on, drop runs `down` whatever happened.
        let topology = Topology { prefix };
        assert!(
            out.status.is_some_and(|s| s.success()),
            "{name_hint}: {} up {} failed ({:?})\n--- stdout:\n{}\n--- stderr:\n{}",
            script().display(),
            topology.prefix,
            out.status,
            out.stdout,
            out.stderr
        );
        Some(topology)
    }

    /// The name of `side`'s namespace (as `ip netns` knows it).
    pub fn ns(&self, side: Side) -> String {
        let suffix = match side {
            Side::Client => 'c',
            Side::Relay => 'r',
            Side::Peer => 'p',
        };
        format!("{}{suffix}", self.prefix)
    }

    /// Runs `f` on a fresh thread inside `side`'s namespace and returns what
    /// it returns. Sockets it creates stay in that namespace when used from
    /// any thread afterwards.
    pub fn in_ns<R: Send>(&self, side: Side, f: impl FnOnce() -> R + Send) -> R {
        let ns = self.ns(side);
        thread::scope(|s| {
            s.spawn(|| {
                uturn::io::process::enter_netns(&ns)
                    .unwrap_or_else(|e| panic!("entering namespace {ns}: {e}"));
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// `ip netns exec <side's namespace> program`: arguments go on the
    /// returned command. `ip netns exec` executes the program in its own
    /// process, so the child's PID is the program's.
    pub fn command(&self, side: Side, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(side)]).arg(program);
        c
    }

    /// Starts uturn in the relay namespace, as [`Server::start`] does on
    /// loopback: listening on 10.200.1.1 (port 0) and relaying from
    /// 10.200.2.1, peers in 10.200.2.0/24 allowed, unless `args` names
    /// `--listen`, `--relay-ip` or `--allow-peer` itself.
    pub fn start_uturn(&self, args: &[&str]) -> Server {
        let listen = format!("{RELAY_LISTEN_V4}:0");
        let relay = RELAY_PEER_V4.to_string();
        let mut full: Vec<&str> = args.to_vec();
        if !has_flag(args, "--listen") && !has_flag(args, "--config") {
            full.extend(["--listen", &listen]);
        }
        if !has_flag(args, "--relay-ip") && !has_flag(args, "--config") {
            full.extend(["--relay-ip", &relay]);
        }
        if !has_flag(args, "--allow-peer") && !has_flag(args, "--config") {
            full.extend([
                "--allow-peer",
                "10.200.2.0/24",
                "--allow-peer",
                "fd00:2::/64",
            ]);
        }
        Server::try_start_via(&full, |argv| {
            let mut c = self.command(Side::Relay, uturn_bin());
            c.args(argv);
            c
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let mut c = Command::new(script());
        c.args(["down", &self.prefix]);
        match try_run_bounded(c, SCRIPT_TIMEOUT) {
            Ok(f) if f.status.is_some_and(|s| s.success()) => {}
            Ok(f) => eprintln!(
                "{} down {} failed ({:?}): {}",
                script().display(),
                self.prefix,
                f.status,
                f.stderr
            ),
            Err(e) => eprintln!("{e}"),
        }
    }
}
