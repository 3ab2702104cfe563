//! Chromium's WebRTC stack as a TURN client.
//!
//! tests/interop/chromium_relay.mjs has playwright-core drive Debian's
//! headless Chromium: two RTCPeerConnections in one page, both with
//! `iceTransportPolicy: "relay"` and the server under test as their only ICE
//! server, open a DataChannel and echo numbered messages both ways. The
//! selected candidate pair (getStats) must be relay on both sides, with the
//! `relayProtocol` of the transport under test, so a pass proves that the
//! browser reached the server over that transport and that the data went
//! through two of its allocations.
//!
//! Everything is on loopback: the TURN URLs name 127.0.0.1 (`localhost` for
//! `turns:`), Chromium binds its TURN sockets to the any-address and the
//! kernel picks 127.0.0.1 as their source, and the relayed addresses are
//! 127.0.0.1 (the servers allow loopback peers). The script's Chromium flags
//! keep the browser off the network otherwise (no DNS, no mDNS).

use super::*;
use serde_json::Value;

/// playwright-core, installed by `.ci/run` into target/interop-node.
const PLAYWRIGHT_VERSION: &str = "1.65.2";
/// Messages each peer sends and expects echoed.
const MESSAGES: u32 = 10;
/// The script's own bound on the page's work, in seconds; it gives up 15 s
/// after that at the latest, well inside `RUN_LIMIT`.
const PAGE_TIMEOUT_SECS: u32 = 20;
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// What a run needs: Node.js, Chromium and playwright-core.
struct Browser {
    node: PathBuf,
    chromium: PathBuf,
    /// The directory `npm install --prefix` put playwright-core in.
    npm_prefix: PathBuf,
}

/// How to install the browser side by hand.
fn install_hint() -> String {
    format!(
        "`apt-get install chromium` and \
         `npm install --prefix target/interop-node playwright-core@{PLAYWRIGHT_VERSION}`"
    )
}

/// Finds the browser side: $UTURN_CHROMIUM, else Debian's Chromium binary;
/// $UTURN_NPM_PREFIX, else target/interop-node.
fn browser(test: &str) -> Option<Browser> {
    let hint = install_hint();
    let Some(node) = which("node") else {
        missing_with(test, "`node` (Node.js) is not installed", &hint)?;
        return None;
    };
    // Debian's /usr/bin/chromium is a wrapper script that adds extensions
    // and Google API keys (which make the browser look up Google's hosts);
    // the binary it runs is used directly.
    let chromium = match std::env::var_os("UTURN_CHROMIUM") {
        Some(p) => Some(PathBuf::from(p)),
        None => Some(PathBuf::from("/usr/lib/chromium/chromium"))
            .filter(|p| p.is_file())
            .or_else(|| which("chromium")),
    };
    let Some(chromium) = chromium else {
        missing_with(test, "Chromium is not installed", &hint)?;
        return None;
    };
    let npm_prefix = std::env::var_os("UTURN_NPM_PREFIX")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/interop-node"));
    let package = npm_prefix.join("node_modules/playwright-core/package.json");
    if !package.is_file() {
        missing_with(
            test,
            &format!(
                "playwright-core is not installed ({} is missing)",
                package.display()
            ),
            &hint,
        )?;
        return None;
    }
    Some(Browser {
        node,
        chromium,
        npm_prefix,
    })
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/chromium_relay.mjs")
}

/// The TURN transport under test, as the URL and getStats name it.
#[derive(Clone, Copy, Debug)]
enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// `relayProtocol` in getStats, and the script's `--transport`.
    fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    /// The ICE server URL for a server listening on `addr` (127.0.0.1).
    /// TLS names `localhost`, as a certificate would.
    fn url(self, addr: SocketAddr) -> String {
        let port = addr.port();
        match self {
            Transport::Udp => format!("turn:{}:{port}?transport=udp", addr.ip()),
            Transport::Tcp => format!("turn:{}:{port}?transport=tcp", addr.ip()),
            Transport::Tls => format!("turns:localhost:{port}?transport=tcp"),
        }
    }
}

/// One run of chromium_relay.mjs against `addr`: Ok(a summary line) when the
/// connection was relayed over `transport` and every message came back both
/// ways, Err(why, with the script's result) otherwise.
fn relay(b: &Browser, addr: SocketAddr, transport: Transport) -> Result<String, String> {
    let url = transport.url(addr);
    let mut cmd = Command::new(&b.node);
    cmd.arg(script())
        .args(["--url", &url, "--username", USER, "--credential", PASS])
        .args(["--transport", transport.name()])
        .arg("--chromium")
        .arg(&b.chromium)
        .arg("--npm-prefix")
        .arg(&b.npm_prefix)
        .args(["--count", &MESSAGES.to_string()])
        .args(["--timeout", &PAGE_TIMEOUT_SECS.to_string()]);
    let started = Instant::now();
    let out = run_bounded(cmd, RUN_LIMIT);
    let took = started.elapsed();
    let Some(line) = out.stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) else {
        return Err(format!(
            "{url}: no RESULT line (exit {:?}, {took:.1?}):\n{}\n{}",
            out.status,
            out.stdout,
            tail(&out.stderr, 30)
        ));
    };
    let r: Value = serde_json::from_str(line).map_err(|e| format!("{url}: {e}: {line}"))?;
    let why = check(&r, transport);
    if !why.is_empty() || !out.status.is_some_and(|s| s.success()) {
        return Err(format!(
            "{url}: {} (exit {:?}, {took:.1?})\n{line}\n{}",
            why.join("; "),
            out.status,
            tail(&out.stderr, 20)
        ));
    }
    let local = &r["selected"]["a"]["local"];
    let remote = &r["selected"]["a"]["remote"];
    Ok(format!(
        "{url}: {MESSAGES}+{MESSAGES} messages echoed; selected pair relay/{} {}:{} ↔ relay {}:{}; \
         {took:.1?} in all, {} ms in the page (Chromium {})",
        local["relayProtocol"].as_str().unwrap_or("(relayProtocol not reported)"),
        local["address"].as_str().unwrap_or("?"),
        local["port"],
        remote["address"].as_str().unwrap_or("?"),
        remote["port"],
        r["elapsed_ms"],
        r["browser"].as_str().unwrap_or("?"),
    ))
}

/// What the result must show, checked here rather than trusted from the
/// script's own `ok`: every echo back in order on both sides, and on both
/// sides a selected pair whose candidates are relayed, the local one over
/// `transport` and from the one URL given.
fn check(r: &Value, transport: Transport) -> Vec<String> {
    let mut why = Vec::new();
    if r["ok"] != Value::Bool(true) {
        why.push(format!("the script says {}", r["problems"]));
    }
    let e = &r["echoes"];
    for side in ["a", "b"] {
        if e[format!("{side}_echoed")] != MESSAGES || e[format!("{side}_in_order")] != true {
            why.push(format!("{side}'s messages: {e}"));
        }
        let pair = &r["selected"][side];
        let (local, remote) = (&pair["local"], &pair["remote"]);
        if local["candidateType"] != "relay" || remote["candidateType"] != "relay" {
            why.push(format!(
                "{side}: selected pair is not relay ↔ relay: {pair}"
            ));
        }
        // Chromium reports relayProtocol for local relay candidates; where a
        // build does not, the one URL given is the only way it could relay.
        if !local["relayProtocol"].is_null() && local["relayProtocol"] != transport.name() {
            why.push(format!(
                "{side}: relayProtocol {} instead of {}",
                local["relayProtocol"],
                transport.name()
            ));
        }
        if !local["url"].is_null() && local["url"] != r["url"] {
            why.push(format!(
                "{side}: candidate from {} instead of {}",
                local["url"], r["url"]
            ));
        }
    }
    why
}

/// `relay`, panicking with the reason on failure.
fn relay_or_panic(b: &Browser, addr: SocketAddr, transport: Transport, against: &str) {
    match relay(b, addr, transport) {
        Ok(summary) => println!("{against}: {summary}"),
        Err(why) => panic!("Chromium through {against}: {why}"),
    }
}

#[test]
fn baseline_chromium_relay_against_coturn() {
    // The same runs against coturn's own server, over all three transports:
    // if these fail, the browser, the script or the machine is at fault.
    let t = "baseline_chromium_relay_against_coturn";
    let (Some(bin), Some(b)) = (tool(t, "turnserver"), browser(t)) else {
        return;
    };
    let Some(cert) = test_cert(t) else {
        return;
    };
    let coturn = start_coturn_with(&bin, Some(&cert));
    let tls = coturn.tls_addr.expect("coturn started with TLS");
    let mut failed = Vec::new();
    for (transport, addr) in [
        (Transport::Udp, coturn.addr),
        (Transport::Tcp, coturn.addr),
        (Transport::Tls, tls),
    ] {
        match relay(&b, addr, transport) {
            Ok(summary) => println!("coturn: {summary}"),
            Err(why) => failed.push(why),
        }
    }
    assert!(
        failed.is_empty(),
        "Chromium through coturn:\n{}",
        failed.join("\n")
    );
}

fn chromium_relay_udp_through_uturn() {
    let Some(b) = browser("chromium_relay_udp_through_uturn") else {
        return;
    };
    let server = uturn_for_interop();
    relay_or_panic(&b, server.addr, Transport::Udp, "uturn");
}

fn chromium_relay_tcp_through_uturn() {
    let Some(b) = browser("chromium_relay_tcp_through_uturn") else {
        return;
    };
    let server = uturn_for_interop_with(&["--listen-tcp", "127.0.0.1:0"]);
    let addr = stream_listener(&server, "tcp");
    relay_or_panic(&b, addr, Transport::Tcp, "uturn");
}

fn chromium_relay_tls_through_uturn() {
    let t = "chromium_relay_tls_through_uturn";
    let (Some(b), Some(cert)) = (browser(t), test_cert(t)) else {
        return;
    };
    let server = uturn_for_interop_with_cert(&cert, &["--listen-tls", "127.0.0.1:0"]);
    let addr = stream_listener(&server, "tls");
    relay_or_panic(&b, addr, Transport::Tls, "uturn");
}

on_both_backends!(
    chromium_relay_udp_through_uturn,
    chromium_relay_tcp_through_uturn,
    chromium_relay_tls_through_uturn,
);
