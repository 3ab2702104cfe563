//! End-to-end tests: the real `uturn` binary on loopback, driven by the
//! synchronous client in `common`. Only 127.0.0.0/8 and ::1 are used, apart
//! from the netns tests, whose addresses live in network namespaces they
//! make and remove.
//!
//! This file holds the helpers; the tests are in tests/e2e/, one file per theme.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use nix::sys::signal::Signal;
use uturn::auth::key::rest_password;
use uturn::auth::{derive_key, PasswordAlgorithm};
use uturn::stun::attr;
use uturn::stun::{AddressFamily, Class, Method};

const REALM: &str = "e2e.test";
const LOOPBACK_V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// One static user (alice:wonderland) and loopback peers allowed.
const LAB_ARGS: [&str; 6] = [
    "--realm",
    REALM,
    "--user",
    "alice:wonderland",
    "--allow-peer",
    "127.0.0.0/8",
];

/// A server with `LAB_ARGS` and `extra`.
fn lab_server(extra: &[&str]) -> Server {
    let mut args = LAB_ARGS.to_vec();
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// The reference relay flow (tests/common/flow.rs) as `LAB_ARGS`'s user,
/// over UDP to `server`, relayed on 127.0.0.1.
fn alice_flow(server: SocketAddr) {
    full_flow(
        server,
        "alice",
        "wonderland",
        AuthMode::Legacy,
        Some(LOOPBACK_V4),
    );
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Each `peer` must be refused by CreatePermission and ChannelBind (403, or
/// 443 for an address of the other family), and Send indications toward it
/// must not be answered or relayed.
fn assert_denied(c: &mut TurnClient, peers: &[SocketAddr], what: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for (i, &p) in peers.iter().enumerate() {
        let same_family = p.is_ipv4() == c.relayed.expect("allocated").is_ipv4();
        let ok: &[u16] = if same_family { &[403] } else { &[403, 443] };
        let code = assert_error(
            &c.create_permission(&[p]),
            ok,
            &format!("{what}: CreatePermission {p}"),
        );
        seen.push(format!("CreatePermission {p} → {code}"));
        let code = assert_error(
            &c.channel_bind(0x4000 + i as u16, p),
            ok,
            &format!("{what}: ChannelBind {p}"),
        );
        seen.push(format!("ChannelBind {p} → {code}"));
        c.send_indication(p, b"must not leave");
    }
    // Indications get no reply; nothing else may come back either.
    if let Some(d) = c.recv_raw(QUIET) {
        panic!(
            "{what}: unexpected datagram after Send indications to denied peers: {}",
            describe_bytes(&d)
        );
    }
    seen
}

/// Server arguments for a relay with an IPv4 and, when the machine has ::1,
/// an IPv6 relay address. Returns whether IPv6 is on.
fn dual_stack_args(test: &str, args: &mut Vec<&str>) -> bool {
    args.extend(["--relay-ip", "127.0.0.1"]);
    if ipv6_unavailable(&format!("{test} (IPv6 part)")) {
        return false;
    }
    args.extend(["--relay-ip", "::1"]);
    true
}

fn addrs(hosts: &[&str], port: u16) -> Vec<SocketAddr> {
    hosts.iter().map(|h| sa(&format!("{h}:{port}"))).collect()
}

fn ipv6_unavailable(test: &str) -> bool {
    match UdpSocket::bind("[::1]:0") {
        Ok(_) => false,
        Err(e) => {
            println!("SKIPPED {test}: cannot bind [::1]: {e}");
            true
        }
    }
}

fn v6_client(server: &Server) -> TurnClient {
    let mut c = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy);
    c.family = Some(AddressFamily::V6);
    c
}

fn rest_creds(secret: &str, expiry: u64, id: &str) -> (String, String) {
    let username = format!("{expiry}:{id}");
    let pw = rest_password(secret.as_bytes(), username.as_bytes());
    let pw = String::from_utf8(pw.to_vec()).expect("REST password is base64");
    (username, pw)
}

/// Waits (bounded) until the server's stderr holds `needle` `times` times;
/// returns the log as it then was.
fn wait_for_log(server: &Server, needle: &str, times: usize) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let log = server.stderr_text();
        if log.matches(needle).count() >= times {
            return log;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "no {needle:?} (×{times}) in the log within 10 s:\n{}",
        server.stderr_text()
    );
}

fn run_uturn(args: &[&str]) -> Finished {
    let mut c = Command::new(uturn_bin());
    c.args(args);
    run_bounded(c, Duration::from_secs(10))
}

// One file per theme under tests/e2e/ (a crate root resolves `mod x;` next to
// itself, where cargo would take it for a test target of its own).
#[path = "e2e/backends.rs"]
mod backends;
#[path = "e2e/credentials.rs"]
mod credentials;
#[path = "e2e/dtls.rs"]
mod dtls;
#[path = "e2e/ipv6.rs"]
mod ipv6;
#[path = "e2e/lifecycle.rs"]
mod lifecycle;
#[path = "e2e/limits.rs"]
mod limits;
#[path = "e2e/netns.rs"]
mod netns;
#[path = "e2e/operations.rs"]
mod operations;
#[path = "e2e/policy.rs"]
mod policy;
#[path = "e2e/proxy.rs"]
mod proxy;
#[path = "e2e/relay.rs"]
mod relay;
#[path = "e2e/robustness.rs"]
mod robustness;
#[path = "e2e/stream_io.rs"]
mod stream_io;
#[path = "e2e/streams.rs"]
mod streams;
#[path = "e2e/streams_limits.rs"]
mod streams_limits;
#[path = "e2e/tcp_alloc.rs"]
mod tcp_alloc;
#[path = "e2e/xdp.rs"]
mod xdp;
