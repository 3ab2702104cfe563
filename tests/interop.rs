//! Interoperability: TURN clients this project did not write, against uturn.
//!
//! * coturn's `turnutils_uclient` (Debian package `coturn`) with
//!   `turnutils_peer` as the echo peer;
//! * Python's `aioice` TURN client (tests/interop/aioice_client.py), which
//!   binds a channel and moves data as ChannelData;
//! * Chromium's WebRTC stack (tests/interop/chromium.rs): two relay-only
//!   peer connections and a DataChannel through the server, over UDP, TCP
//!   and TLS;
//! * and the other way round: uturn's own STUN codec (the `common` client)
//!   against coturn's `turnserver`.
//!
//! A missing tool fails the test with a message saying how to install it,
//! unless `UTURN_SKIP_INTEROP=1` is set (then it prints SKIPPED and passes).
//! Everything runs on loopback with bounded waits.

mod common;

#[path = "interop/chromium.rs"]
mod chromium;
#[path = "interop/coturn.rs"]
mod coturn;
#[path = "interop/dtls.rs"]
mod dtls;
#[path = "interop/streams.rs"]
mod streams;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use coturn::{start_coturn, start_coturn_with, test_cert, TestCert};
use nix::sys::signal::Signal;
use uturn::stun::{attr, Method};

const REALM: &str = "interop.test";
const USER: &str = "user";
const PASS: &str = "pass";
const REST_SECRET: &str = "interop-rest-secret";
/// uclient's static long-term credentials.
const STATIC_CREDS: &[&str] = &["-u", USER, "-w", PASS];
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

// ---------------------------------------------------------------------------
// Finding the tools
// ---------------------------------------------------------------------------

fn skip_allowed() -> bool {
    std::env::var("UTURN_SKIP_INTEROP").is_ok_and(|v| v == "1")
}

/// Fails (or, with UTURN_SKIP_INTEROP=1, returns None after printing SKIPPED).
fn missing(test: &str, what: &str) -> Option<PathBuf> {
    missing_with(
        test,
        what,
        "`apt-get install coturn` and \
         `python3 -m venv target/interop-venv && target/interop-venv/bin/pip install aioice==0.13.0`",
    )
}

/// `missing`, naming `install` as the way to install the tool by hand.
fn missing_with(test: &str, what: &str, install: &str) -> Option<PathBuf> {
    let msg = format!(
        "{test}: {what}. Install the prerequisites with `.ci/run` (or {install}), \
         or set UTURN_SKIP_INTEROP=1 to skip the interop tests"
    );
    if skip_allowed() {
        println!("SKIPPED {msg}");
        None
    } else {
        panic!("{msg}");
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn tool(test: &str, name: &str) -> Option<PathBuf> {
    which(name).or_else(|| {
        missing(
            test,
            &format!("`{name}` is not installed (Debian package coturn)"),
        )
    })
}

/// The Python that has aioice: $UTURN_PYTHON, else the venv `.ci/run`
/// creates in target/interop-venv, else python3 on PATH.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("UTURN_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/interop-venv/bin/python3");
    if venv.is_file() {
        return venv;
    }
    PathBuf::from("python3")
}

fn aioice_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/aioice_client.py")
}

// ---------------------------------------------------------------------------
// Helper processes
// ---------------------------------------------------------------------------

/// A child process stopped by PID on drop (SIGTERM, then SIGKILL).
struct Guard {
    child: Option<Child>,
    name: &'static str,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), Signal::SIGTERM);
            if wait_bounded(&mut c, Duration::from_secs(5)).is_none() {
                eprintln!(
                    "{} (pid {}) ignored SIGTERM for 5 s; killing it",
                    self.name,
                    c.id()
                );
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Guard {
    fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

/// True when something already holds `port` on 127.0.0.1 (UDP).
fn udp_port_taken(port: u16) -> bool {
    UdpSocket::bind((LOCALHOST, port)).is_err()
}

/// `turnutils_peer` echoes UDP on `port` and `port + 1` (uclient's RTP/RTCP pair).
fn start_turnutils_peer(bin: &Path) -> (Guard, u16) {
    for _ in 0..10 {
        let port = free_udp_port(LOCALHOST);
        if port == u16::MAX || udp_port_taken(port + 1) {
            continue;
        }
        let child = Command::new(bin)
            .args(["-L", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn turnutils_peer");
        let mut g = Guard {
            child: Some(child),
            name: "turnutils_peer",
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && g.alive() {
            if udp_port_taken(port) && udp_port_taken(port + 1) {
                return (g, port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("turnutils_peer did not come up on a free loopback port pair (10 tries)");
}

// ---------------------------------------------------------------------------
// turnutils_uclient
// ---------------------------------------------------------------------------

/// What `turnutils_uclient` reported at the end of a run.
#[derive(Debug, Default)]
struct UclientTotals {
    sent: u64,
    received: u64,
    lost: Option<u64>,
}

/// Parses the final `start_mclient: tot_send_msgs=N, tot_recv_msgs=M` and
/// `Total lost packets L (…%)` lines.
fn parse_uclient(out: &str) -> UclientTotals {
    let mut t = UclientTotals::default();
    for line in out.lines() {
        if let Some(i) = line.find("tot_send_msgs=") {
            if line.contains("msz=") {
                continue; // a progress line
            }
            let rest = &line[i..];
            let num = |key: &str| -> Option<u64> {
                let j = rest.find(key)? + key.len();
                rest[j..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse()
                    .ok()
            };
            t.sent = num("tot_send_msgs=").unwrap_or(0);
            t.received = num("tot_recv_msgs=").unwrap_or(0);
        }
        if let Some(i) = line.find("Total lost packets ") {
            let rest = &line[i + "Total lost packets ".len()..];
            t.lost = rest
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok();
        }
    }
    t
}

/// The uclient command line used by the tests; `send_method` adds `-s`
/// (Send/Data indications instead of channels).
fn uclient_cmd(
    bin: &Path,
    server: SocketAddr,
    peer_port: u16,
    clients: u32,
    messages: u32,
    send_method: bool,
    creds: &[&str],
) -> Command {
    uclient_cmd_over(
        bin,
        &[],
        server,
        peer_port,
        clients,
        messages,
        send_method,
        creds,
    )
}

/// As `uclient_cmd`, with the client-leg flags first (`-t` for TCP, `-t -S`
/// for TLS).
#[allow(clippy::too_many_arguments)]
fn uclient_cmd_over(
    bin: &Path,
    transport: &[&str],
    server: SocketAddr,
    peer_port: u16,
    clients: u32,
    messages: u32,
    send_method: bool,
    creds: &[&str],
) -> Command {
    let mut c = Command::new(bin);
    c.args(transport);
    if send_method {
        c.arg("-s");
    }
    c.args([
        "-v",
        "-c",
        "-m",
        &clients.to_string(),
        "-n",
        &messages.to_string(),
        "-l",
        "120",
        "-z",
        "5",
    ])
    .args(creds)
    .args(["-p", &server.port().to_string()])
    .args(["-e", "127.0.0.1", "-r", &peer_port.to_string()])
    .arg(server.ip().to_string());
    c
}

fn show_cmd(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Runs uclient (bounded at 60 s) and asserts every message came back.
fn run_uclient_expect_all(cmd: Command, expect_sent: u64, against: &str) -> UclientTotals {
    let line = show_cmd(&cmd);
    println!("$ {line}");
    let out = run_bounded(cmd, Duration::from_secs(60));
    let all = format!("{}{}", out.stdout, out.stderr);
    let t = parse_uclient(&all);
    println!("{}\n→ {t:?}", tail(&all, 8));
    let st = out.status.unwrap_or_else(|| {
        panic!(
            "{against}: uclient did not finish within 60 s:\n{}",
            tail(&all, 40)
        )
    });
    assert!(
        st.success(),
        "{against}: `{line}` exited {st}:\n{}",
        tail(&all, 40)
    );
    assert_eq!(
        t.sent,
        expect_sent,
        "{against}: messages sent\n{}",
        tail(&all, 40)
    );
    assert_eq!(
        t.received,
        t.sent,
        "{against}: echoes received\n{}",
        tail(&all, 40)
    );
    assert_eq!(
        t.lost,
        Some(0),
        "{against}: lost packets\n{}",
        tail(&all, 40)
    );
    t
}

/// A uturn with the uclient user and a REST secret, loopback peers allowed.
fn uturn_for_interop() -> Server {
    uturn_for_interop_with(&[])
}

/// `uturn_for_interop` with `extra` arguments.
fn uturn_for_interop_with(extra: &[&str]) -> Server {
    let user = format!("{USER}:{PASS}");
    let mut args = vec![
        "--realm",
        REALM,
        "--user",
        &user,
        "--rest-secret",
        REST_SECRET,
        "--allow-peer",
        "127.0.0.0/8",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// `uturn_for_interop_with` serving `cert` (its TLS and DTLS listeners
/// share it), with `extra` arguments.
fn uturn_for_interop_with_cert(cert: &TestCert, extra: &[&str]) -> Server {
    let (cert_file, key_file) = (cert.cert.to_string_lossy(), cert.key.to_string_lossy());
    let mut args = vec!["--tls-cert", &cert_file, "--tls-key", &key_file];
    args.extend_from_slice(extra);
    uturn_for_interop_with(&args)
}

/// The address of uturn's `uturn: listening on <kind> ADDR` line.
fn stream_listener(server: &Server, kind: &str) -> SocketAddr {
    let prefix = format!("uturn: listening on {kind} ");
    server
        .banner
        .iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{prefix}ADDR` line before ready: {:?}", server.banner))
}

fn turnutils_uclient_send_indications_through_uturn() {
    let t = "turnutils_uclient_send_indications_through_uturn";
    let (Some(uclient), Some(peer_bin)) = (tool(t, "turnutils_uclient"), tool(t, "turnutils_peer"))
    else {
        return;
    };
    let server = uturn_for_interop();
    let (_peer, peer_port) = start_turnutils_peer(&peer_bin);
    // 3 clients × 200 messages: Allocate (401 round), CreatePermission, Send
    // indications out, Data indications back from the echo peer.
    run_uclient_expect_all(
        uclient_cmd(&uclient, server.addr, peer_port, 3, 200, true, STATIC_CREDS),
        600,
        "uturn",
    );
}

fn turnutils_uclient_rest_api_credentials_through_uturn() {
    // uclient's -W computes TURN REST credentials itself:
    // username "<now + 1 day>:<-u>", password base64(HMAC-SHA1(secret, username)).
    let t = "turnutils_uclient_rest_api_credentials_through_uturn";
    let (Some(uclient), Some(peer_bin)) = (tool(t, "turnutils_uclient"), tool(t, "turnutils_peer"))
    else {
        return;
    };
    let server = uturn_for_interop();
    let (_peer, peer_port) = start_turnutils_peer(&peer_bin);
    let rest = ["-u", "alice", "-W", REST_SECRET];
    run_uclient_expect_all(
        uclient_cmd(&uclient, server.addr, peer_port, 2, 100, true, &rest),
        200,
        "uturn, REST credentials",
    );
    // A secret uturn does not know: the allocation fails.
    let cmd = uclient_cmd(
        &uclient,
        server.addr,
        peer_port,
        1,
        5,
        true,
        &["-u", "alice", "-W", "not-the-secret"],
    );
    println!("$ {}", show_cmd(&cmd));
    let out = run_bounded(cmd, Duration::from_secs(60));
    let all = format!("{}{}", out.stdout, out.stderr);
    println!("{}", tail(&all, 3));
    let st = out.status.expect("uclient did not finish within 60 s");
    assert!(
        !st.success(),
        "uclient allocated with a wrong REST secret:\n{}",
        tail(&all, 30)
    );
    assert!(
        all.contains("Cannot complete Allocation"),
        "{}",
        tail(&all, 30)
    );
}

fn turnutils_uclient_channels_through_uturn() {
    // uclient binds channels with numbers drawn at random from 0x4000–0x7FFF
    // (RFC 5766's range, coturn's STUN_VALID_CHANNEL). RFC 8656 §11.2 allows
    // only 0x4000–0x4FFF and makes the server answer 400 otherwise, so a run
    // either relays everything (both numbers happened to be ≤ 0x4FFF, or the
    // server accepts the old range) or stops at a ChannelBind 400 for a
    // number above 0x4FFF. Anything else is a failure.
    let t = "turnutils_uclient_channels_through_uturn";
    let (Some(uclient), Some(peer_bin)) = (tool(t, "turnutils_uclient"), tool(t, "turnutils_peer"))
    else {
        return;
    };
    let server = uturn_for_interop();
    let (_peer, peer_port) = start_turnutils_peer(&peer_bin);
    let mut outcomes = Vec::new();
    for run in 0..4 {
        let cmd = uclient_cmd(&uclient, server.addr, peer_port, 1, 50, false, STATIC_CREDS);
        let line = show_cmd(&cmd);
        let out = run_bounded(cmd, Duration::from_secs(60));
        let all = format!("{}{}", out.stdout, out.stderr);
        let st = out
            .status
            .unwrap_or_else(|| panic!("uclient did not finish within 60 s:\n{}", tail(&all, 40)));
        let totals = parse_uclient(&all);
        // "success: 0x4abc" lines after "cb response received" name the channels.
        let bound: Vec<String> = all
            .lines()
            .filter_map(|l| l.split("success: 0x").nth(1))
            .map(|h| format!("0x{}", h.trim()))
            .collect();
        if st.success() {
            assert_eq!(
                (totals.sent, totals.received, totals.lost),
                (50, 50, Some(0)),
                "run {run}: `{line}`\n{}",
                tail(&all, 30)
            );
            outcomes.push(format!("run {run}: relayed 50/50 over channels {bound:?}"));
        } else {
            assert!(
                all.contains("channel bind: error 400"),
                "run {run}: `{line}` exited {st} for a reason other than a ChannelBind 400:\n{}",
                tail(&all, 40)
            );
            outcomes.push(format!(
                "run {run}: ChannelBind 400 (channels bound before it: {bound:?})"
            ));
        }
        server_alive_check(&server);
    }
    println!("{}", outcomes.join("\n"));
}

fn server_alive_check(server: &Server) {
    // A Binding request must still be answered.
    let mut c = TurnClient::new(server.addr, "", "", AuthMode::Legacy);
    let r = c.request_unsigned(Method::Binding, |_| Ok(()));
    assert_success(&r, "Binding after a uclient run");
}

fn turnutils_uclient_is_refused_without_allow_peer() {
    // Default policy: loopback peers are denied, so uclient's CreatePermission
    // gets 403 and it gives up; the echo peer sees nothing.
    let t = "turnutils_uclient_is_refused_without_allow_peer";
    let Some(uclient) = tool(t, "turnutils_uclient") else {
        return;
    };
    let server = Server::start(&["--realm", REALM, "--user", &format!("{USER}:{PASS}")]);
    let peer = Peer::v4();
    let cmd = uclient_cmd(
        &uclient,
        server.addr,
        peer.addr.port(),
        1,
        20,
        true,
        STATIC_CREDS,
    );
    println!("$ {}", show_cmd(&cmd));
    let out = run_bounded(cmd, Duration::from_secs(60));
    let all = format!("{}{}", out.stdout, out.stderr);
    println!("{}", tail(&all, 6));
    let st = out.status.expect("uclient did not finish within 60 s");
    assert!(
        !st.success(),
        "uclient succeeded although loopback peers are denied:\n{}",
        tail(&all, 30)
    );
    assert!(
        all.contains("error 403"),
        "expected a 403 in uclient's output:\n{}",
        tail(&all, 30)
    );
    peer.expect_nothing("uclient toward a denied peer");
}

// ---------------------------------------------------------------------------
// aioice
// ---------------------------------------------------------------------------

/// The parsed RESULT line of aioice_client.py.
fn parse_result(out: &str) -> Option<std::collections::HashMap<String, String>> {
    let line = out.lines().find(|l| l.starts_with("RESULT "))?;
    Some(
        line.split_whitespace()
            .skip(1)
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

fn run_aioice(
    test: &str,
    server: SocketAddr,
    user: &str,
    pass: &str,
    count: u32,
) -> Option<Finished> {
    run_aioice_over(test, server, user, pass, count, "udp", None)
}

/// As `run_aioice`, over `transport` (udp, tcp, tls; TLS checked against
/// the PEM certificate `ca`).
fn run_aioice_over(
    test: &str,
    server: SocketAddr,
    user: &str,
    pass: &str,
    count: u32,
    transport: &str,
    ca: Option<&Path>,
) -> Option<Finished> {
    let py = python();
    let mut cmd = Command::new(&py);
    cmd.arg(aioice_script())
        .args([
            "--server",
            &server.to_string(),
            "--user",
            user,
            "--password",
            pass,
        ])
        .args(["--count", &count.to_string(), "--timeout", "10"])
        .args(["--transport", transport]);
    if let Some(ca) = ca {
        cmd.arg("--ca").arg(ca);
    }
    println!("$ {}", show_cmd(&cmd));
    let out = match try_run_bounded(cmd, Duration::from_secs(60)) {
        Ok(o) => o,
        Err(e) => {
            missing(test, &format!("cannot run Python: {e}"))?;
            return None;
        }
    };
    println!("{}{}", out.stdout, tail(&out.stderr, 10));
    if out.status.and_then(|s| s.code()) == Some(3) && out.stdout.contains("MISSING aioice") {
        missing(
            test,
            &format!("Python module aioice is not importable by {}", py.display()),
        )?;
    }
    Some(out)
}

fn assert_aioice_ok(out: &Finished, count: u32, against: &str) {
    let r = parse_result(&out.stdout).unwrap_or_else(|| {
        panic!(
            "{against}: no RESULT line from aioice_client.py:\n{}\n{}",
            out.stdout,
            tail(&out.stderr, 30)
        )
    });
    let n = |k: &str| r.get(k).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
    assert_eq!(n("sent"), count, "{against}: {r:?}");
    assert_eq!(
        n("received"),
        count,
        "{against}: echoes received through the relay: {r:?}\n{}",
        tail(&out.stderr, 30)
    );
    assert!(
        n("channel_data_out") >= count,
        "{against}: aioice did not send ChannelData: {r:?}"
    );
    assert!(
        n("channel_data_in") >= count,
        "{against}: echoes did not come back as ChannelData: {r:?}"
    );
    assert_eq!(
        r.get("peer_saw"),
        r.get("relayed"),
        "{against}: the echo peer saw a source other than the relayed address"
    );
    assert_eq!(
        r.get("deleted").map(String::as_str),
        Some("yes"),
        "{against}: Refresh(0) failed: {r:?}"
    );
    assert!(
        out.status.is_some_and(|s| s.success()),
        "{against}: aioice_client.py exited {:?}",
        out.status
    );
}

fn aioice_channel_data_through_uturn() {
    let t = "aioice_channel_data_through_uturn";
    let server = uturn_for_interop();
    let Some(out) = run_aioice(t, server.addr, USER, PASS, 200) else {
        return;
    };
    assert_aioice_ok(&out, 200, "uturn");
    // TURN REST credentials, computed here, used by aioice as a plain
    // username and password.
    let username = format!("{}:alice", unix_now() + 3600);
    let password = uturn::auth::key::rest_password(REST_SECRET.as_bytes(), username.as_bytes());
    let password = String::from_utf8(password.to_vec()).unwrap();
    let Some(out) = run_aioice(t, server.addr, &username, &password, 50) else {
        return;
    };
    assert_aioice_ok(&out, 50, "uturn, REST credentials");
    // A wrong password is refused (aioice raises on the second 401).
    let Some(out) = run_aioice(t, server.addr, USER, "wrong", 5) else {
        return;
    };
    assert!(
        out.stdout.contains("FAILED") && out.stdout.contains("401"),
        "aioice with a wrong password:\n{}",
        out.stdout
    );
}

// ---------------------------------------------------------------------------
// The reverse direction and the baselines: coturn's turnserver
// ---------------------------------------------------------------------------

#[test]
fn uturn_stun_codec_against_coturn_turnserver() {
    // uturn's codec (writer, parser, integrity, XOR addresses, ChannelData)
    // must be understood by an independent server, and understand it.
    let t = "uturn_stun_codec_against_coturn_turnserver";
    let Some(bin) = tool(t, "turnserver") else {
        return;
    };
    let coturn = start_coturn(&bin);
    let mut c = TurnClient::new(coturn.addr, "", "", AuthMode::Legacy);
    let r = c.request_unsigned(Method::Binding, |_| Ok(()));
    assert_success(&r, "Binding to coturn");
    assert_eq!(r.xor_addr(attr::XOR_MAPPED_ADDRESS), Some(c.local_addr()));
    full_flow_lenient(coturn.addr, USER, PASS, AuthMode::Legacy, Some(LOCALHOST));
}

#[test]
fn baseline_tools_against_coturn() {
    // The same tool invocations against coturn's own server: if these fail,
    // the tools or the machine are at fault, not uturn.
    let t = "baseline_tools_against_coturn";
    let (Some(bin), Some(uclient), Some(peer_bin)) = (
        tool(t, "turnserver"),
        tool(t, "turnutils_uclient"),
        tool(t, "turnutils_peer"),
    ) else {
        return;
    };
    let coturn = start_coturn(&bin);
    let (_peer, peer_port) = start_turnutils_peer(&peer_bin);
    run_uclient_expect_all(
        uclient_cmd(&uclient, coturn.addr, peer_port, 3, 200, true, STATIC_CREDS),
        600,
        "coturn (send method)",
    );
    run_uclient_expect_all(
        uclient_cmd(
            &uclient,
            coturn.addr,
            peer_port,
            3,
            200,
            false,
            STATIC_CREDS,
        ),
        600,
        "coturn (channels)",
    );
    if let Some(out) = run_aioice(t, coturn.addr, USER, PASS, 200) {
        assert_aioice_ok(&out, 200, "coturn");
    }
}

on_both_backends!(
    turnutils_uclient_send_indications_through_uturn,
    turnutils_uclient_rest_api_credentials_through_uturn,
    turnutils_uclient_channels_through_uturn,
    turnutils_uclient_is_refused_without_allow_peer,
    aioice_channel_data_through_uturn,
);
