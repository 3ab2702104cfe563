//! Smoke tests: every scenario runs for about two seconds against the real
//! uturn binary (and the floor) on loopback, and must report non-zero work.
//! No thresholds: these prove the tool works, not how fast anything is.
//!
//! The TCP and TLS transports run against coturn's `turnserver` (Debian
//! package `coturn`) until uturn serves them. As in tests/interop.rs, a
//! missing `turnserver` fails those tests with a message saying how to
//! install it, unless `UTURN_SKIP_INTEROP=1` is set (then they print
//! SKIPPED and pass).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn loadgen() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_uturn-loadgen"))
}

/// The uturn binary of the same build (`cargo test --workspace` builds it
/// next to ours); built on demand when only this package is tested.
fn uturn() -> PathBuf {
    let dir = loadgen()
        .parent()
        .expect("binary has a directory")
        .to_path_buf();
    let bin = dir.join("uturn");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "uturn", "--bin", "uturn"])
            .status()
            .expect("run cargo build for the uturn binary");
        assert!(status.success(), "building uturn failed");
    }
    assert!(bin.exists(), "no uturn binary at {}", bin.display());
    bin
}

/// A child process stopped by PID when dropped.
struct Proc {
    child: Child,
    addr: String,
    /// Its "listening on tcp ADDR" line, if it printed one.
    tcp: Option<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first (clean shutdown), then make sure.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a process and waits (bounded) for "<prefix>: ready", returning the
/// address of its "listening on udp ADDR" line.
fn start(mut cmd: Command, prefix: &str) -> Proc {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let prefix = prefix.to_string();
    std::thread::spawn(move || {
        let (mut addr, mut tcp) = (None, None);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(a) = line.strip_prefix(&format!("{prefix}: listening on udp ")) {
                addr = Some(a.trim().to_string());
            }
            if let Some(a) = line.strip_prefix(&format!("{prefix}: listening on tcp ")) {
                tcp = Some(a.trim().to_string());
            }
            if line.trim() == format!("{prefix}: ready") {
                let _ = tx.send((addr.take(), tcp.take()));
            }
        }
    });
    let (addr, tcp) = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or((None, None));
    Proc {
        child,
        addr: addr.expect("the process printed its address and became ready within 20 s"),
        tcp,
    }
}

fn config_file() -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("uturn-loadgen-smoke-{}.toml", std::process::id()));
    // Load tests come from one loopback address: lift the per-source limit on
    // unauthenticated replies and the per-user quota, and open loopback peers.
    std::fs::write(
        &path,
        r#"listen = ["127.0.0.1:0"]
relay_ips = ["127.0.0.1"]
relay_ports = "46000-47999"
realm = "smoke.test"
workers = 1
[peers]
allow = ["127.0.0.0/8"]
[quotas]
allocations_per_user = 10000
total_allocations = 10000
[rate_limit]
unauth_per_second = 100000
unauth_burst = 100000
"#,
    )
    .expect("write config");
    path
}

fn start_uturn() -> Proc {
    let mut cmd = Command::new(uturn());
    cmd.arg("--config")
        .arg(config_file())
        .args(["--user", "lg:lgpw", "--log-level", "warn"])
        // Stop at once on SIGTERM: nothing here is about draining.
        .args(["--drain-timeout", "0"]);
    start(cmd, "uturn")
}

/// Runs `uturn-loadgen --json ARGS` (bounded) and parses its JSON.
fn run(args: &[&str]) -> Value {
    let mut cmd = Command::new(loadgen());
    cmd.arg("--json")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn uturn-loadgen");
    let out = child.wait_with_output().expect("uturn-loadgen output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "uturn-loadgen {args:?} exited {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// `uturn-loadgen --json SCENARIO --server <uturn> --user lg:lgpw EXTRA`.
fn against(u: &Proc, scenario: &str, extra: &[&str]) -> Value {
    let mut args = vec![scenario, "--server", &u.addr, "--user", "lg:lgpw"];
    args.extend_from_slice(extra);
    run(&args)
}

fn num(v: &Value, key: &str) -> f64 {
    v.get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number {key} in {v}"))
}

#[test]
fn allocate_reports_flows_and_no_errors() {
    let u = start_uturn();
    let pid = u.child.id().to_string();
    let r = against(
        &u,
        "allocate",
        &[
            "--duration",
            "2",
            "--concurrency",
            "8",
            "--server-pid",
            &pid,
        ],
    );
    assert!(num(&r, "completed") > 0.0, "{r}");
    assert!(num(&r, "flows_per_sec") > 0.0, "{r}");
    assert_eq!(num(&r, "failed"), 0.0, "{r}");
    assert!(num(&r, "server_cpu_secs") >= 0.0, "{r}");
    assert!(r["latency_ms"]["p50"].as_f64().is_some(), "{r}");
}

#[test]
fn tcp_relay_carries_every_byte_with_server_cpu() {
    // RFC 6062: two pipes of 4 MiB each way through uturn's TCP allocations.
    let u = start_uturn();
    let pid = u.child.id().to_string();
    let tcp = u.tcp.clone().expect("uturn listens on TCP");
    let r = run(&[
        "tcp-relay",
        "--server",
        &tcp,
        "--user",
        "lg:lgpw",
        "--pipes",
        "2",
        "--bytes",
        "4194304",
        "--server-pid",
        &pid,
        "--timeout-secs",
        "30",
    ]);
    assert_eq!(num(&r, "bytes_total"), (2 * 2 * 4194304) as f64, "{r}");
    assert!(num(&r, "gbit_per_sec") > 0.0, "{r}");
    assert!(num(&r, "server_cpu_secs") >= 0.0, "{r}");
    let start = &r["pipe_start_ms"];
    assert!(start["p50"].as_f64().is_some_and(|v| v > 0.0), "{r}");
    assert!(start["max"].as_f64() >= start["p50"].as_f64(), "{r}");
}

#[test]
fn flood_gets_401s_and_reports_server_cpu() {
    let u = start_uturn();
    let pid = u.child.id().to_string();
    let r = run(&[
        "flood",
        "--server",
        &u.addr,
        "--sources",
        "50",
        "--rate",
        "2000",
        "--duration",
        "2",
        "--server-pid",
        &pid,
    ]);
    assert!(num(&r, "sent") > 0.0, "{r}");
    assert!(num(&r, "answered_401") > 0.0, "{r}");
    assert_eq!(num(&r, "answered_other"), 0.0, "{r}");
    assert!(num(&r, "server_us_per_request") >= 0.0, "{r}");
}

#[test]
fn relay_channel_data_both_ways_with_server_cpu() {
    let u = start_uturn();
    let pid = u.child.id().to_string();
    let r = against(
        &u,
        "relay",
        &[
            "--flows",
            "10",
            "--rate",
            "2000",
            "--duration",
            "2",
            "--direction",
            "both",
            "--server-pid",
            &pid,
        ],
    );
    assert!(num(&r, "sent") > 0.0 && num(&r, "delivered") > 0.0, "{r}");
    assert!(num(&r, "bytes") > 0.0, "{r}");
    assert!(
        r["latency_us"]["p50"].as_f64().is_some_and(|v| v > 0.0),
        "{r}"
    );
    assert_eq!(r["per_direction"].as_array().map(Vec::len), Some(2), "{r}");
    assert!(r["delivered_per_server_cpu_sec"].is_number(), "{r}");
}

#[test]
fn relay_send_and_data_indications() {
    let u = start_uturn();
    let r = against(
        &u,
        "relay",
        &[
            "--flows",
            "5",
            "--rate",
            "1000",
            "--duration",
            "2",
            "--mode",
            "indication",
        ],
    );
    assert!(num(&r, "delivered") > 0.0, "{r}");
}

#[test]
fn relay_with_gso_bursts() {
    let u = start_uturn();
    let r = against(
        &u,
        "relay",
        &[
            "--flows",
            "5",
            "--rate",
            "2000",
            "--duration",
            "2",
            "--direction",
            "c2p",
            "--gso",
        ],
    );
    assert!(num(&r, "delivered") > 0.0, "{r}");
    assert_eq!(r["gso"], Value::Bool(true), "{r}");
}

#[test]
fn churn_reports_server_memory_series() {
    let u = start_uturn();
    let pid = u.child.id().to_string();
    let r = against(
        &u,
        "churn",
        &["--rate", "20", "--duration", "2", "--server-pid", &pid],
    );
    assert!(num(&r, "created") > 0.0 && num(&r, "deleted") > 0.0, "{r}");
    assert!(
        num(&r, "c2p_received") > 0.0 && num(&r, "p2c_received") > 0.0,
        "{r}"
    );
    assert!(r["series"].as_array().is_some_and(|s| !s.is_empty()), "{r}");
}

#[test]
fn hold_reads_server_memory_per_allocation() {
    let u = start_uturn();
    let pid = u.child.id().to_string();
    let r = against(
        &u,
        "hold",
        &[
            "--allocations",
            "20,60",
            "--channel",
            "--settle",
            "0.2",
            "--server-pid",
            &pid,
        ],
    );
    let steps = r["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 3, "{r}");
    assert_eq!(steps[2]["held"].as_u64(), Some(60), "{r}");
    // One relay socket per allocation.
    assert_eq!(steps[2]["fds_per_allocation"].as_f64(), Some(1.0), "{r}");
    assert!(steps[2]["rss_per_allocation"].is_number(), "{r}");
    assert!(steps[2]["slab_server_per_allocation"].is_number(), "{r}");
    assert_eq!(num(&r, "failed"), 0.0, "{r}");
    assert_eq!(num(&r, "deleted"), 60.0, "{r}");
}

#[test]
fn sweep_finds_a_rate_and_draws_a_chart() {
    let u = start_uturn();
    let svg = std::env::temp_dir().join(format!("uturn-loadgen-smoke-{}.svg", std::process::id()));
    let svg_s = svg.to_string_lossy().to_string();
    let r = against(
        &u,
        "sweep",
        &[
            "--flows",
            "5",
            "--duration",
            "1",
            "--rates",
            "1000,2000",
            "--svg",
            &svg_s,
        ],
    );
    assert_eq!(r["points"].as_array().map(Vec::len), Some(2), "{r}");
    assert!(
        r["points"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|p| p["delivered_pps"].as_f64() > Some(0.0)),
        "{r}"
    );
    let chart = std::fs::read_to_string(&svg).expect("the SVG was written");
    assert!(chart.contains("<svg"), "not an SVG");
    let _ = std::fs::remove_file(svg);
}

#[test]
fn floor_forwards_with_its_own_handshake() {
    let mut cmd = Command::new(loadgen());
    cmd.args([
        "floor",
        "--listen",
        "127.0.0.1:0",
        "--relay-ip",
        "127.0.0.1",
        "--duration",
        "30",
    ]);
    let f = start(cmd, "floor");
    let r = run(&[
        "relay",
        "--server",
        &f.addr,
        "--no-auth",
        "--flows",
        "5",
        "--rate",
        "2000",
        "--duration",
        "2",
    ]);
    assert!(num(&r, "delivered") > 0.0, "{r}");
}

/// The namespaces of `tuning/xdp/topology.sh` (without its XDP program,
/// which this test does not need), removed on drop.
struct Topology(String);

impl Topology {
    /// None (printing why) where namespaces cannot be made here: not root,
    /// or no iproute2/ethtool; a failure with UTURN_REQUIRE_XDP=1.
    fn up() -> Option<Topology> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tuning/xdp/topology.sh");
        let prefix = format!("l{}", std::process::id() % 100_000);
        let out = Command::new(script)
            .args(["up", &prefix])
            .env("PASS_XDP", "0")
            .output()
            .expect("run topology.sh");
        let t = Topology(prefix);
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if std::env::var("UTURN_REQUIRE_XDP").is_ok_and(|v| v == "1") {
                panic!("topology.sh up failed: {why}");
            }
            println!("skipped: topology.sh up failed (root, iproute2 and ethtool needed): {why}");
            return None;
        }
        Some(t)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tuning/xdp/topology.sh");
        let _ = Command::new(script)
            .args(["down", &self.0])
            .stdout(Stdio::null())
            .status();
    }
}

/// `relay --client-netns --peer-netns` through the floor run in the relay
/// namespace: every packet crosses two veth pairs, both ways.
#[test]
fn relay_across_network_namespaces() {
    let Some(t) = Topology::up() else {
        return;
    };
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &format!("{}r", t.0)])
        .arg(loadgen())
        .args([
            "floor",
            "--listen",
            "10.200.1.1:0",
            "--relay-ip",
            "10.200.2.1",
        ])
        .args(["--duration", "30"]);
    let f = start(cmd, "floor");
    let pid = f.child.id().to_string();
    let r = run(&[
        "relay",
        "--server",
        &f.addr,
        "--no-auth",
        "--client-netns",
        &format!("{}c", t.0),
        "--peer-netns",
        &format!("{}p", t.0),
        "--peer-ip",
        "10.200.2.2",
        "--flows",
        "5",
        "--rate",
        "2000",
        "--duration",
        "2",
        "--direction",
        "both",
        "--server-pid",
        &pid,
    ]);
    for d in r["per_direction"].as_array().expect("per_direction") {
        assert!(num(d, "delivered") > 0.0, "{r}");
    }
    assert!(r["server_cpu_secs"].is_number(), "{r}");
}

#[test]
fn compare_writes_a_report_with_ratios() {
    let out = std::env::temp_dir().join(format!("uturn-loadgen-smoke-{}.md", std::process::id()));
    let out_s = out.to_string_lossy().to_string();
    let bin = uturn().to_string_lossy().to_string();
    let r = run(&[
        "compare",
        "--rounds",
        "1",
        "--scenario",
        "relay",
        "--flows",
        "5",
        "--rate",
        "2000",
        "--duration",
        "1",
        "--uturn-bin",
        &bin,
        // The same binary as its own baseline: the option works, nothing more.
        "--systems",
        "uturn,floor,uturn-baseline",
        "--baseline-bin",
        &bin,
        "--out",
        &out_s,
    ]);
    let report = std::fs::read_to_string(&out).expect("the report was written");
    for ratio in ["uturn/floor", "uturn/uturn-baseline"] {
        assert!(
            report.contains(ratio),
            "no {ratio} in the report:\n{report}"
        );
    }
    assert!(r.is_object(), "{r}");
    let _ = std::fs::remove_file(out);
}

// ---------------------------------------------------------------------------
// TCP and TLS, against coturn
// ---------------------------------------------------------------------------

/// `turnserver` on PATH; None (after printing SKIPPED) when it is missing
/// and UTURN_SKIP_INTEROP=1, a failure otherwise.
fn turnserver(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/bin")])
            .map(|d| d.join("turnserver"))
            .find(|p| p.is_file())
    });
    if found.is_some() {
        return found;
    }
    let msg = format!(
        "{test}: `turnserver` is not installed (Debian package coturn: `apt-get install coturn`, \
         or `.ci/run`); set UTURN_SKIP_INTEROP=1 to skip the tests that need it"
    );
    if std::env::var("UTURN_SKIP_INTEROP").is_ok_and(|v| v == "1") {
        println!("SKIPPED {msg}");
        None
    } else {
        panic!("{msg}");
    }
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A file in the temp directory named for this test process.
fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("uturn-loadgen-smoke-{}-{name}", std::process::id()))
}

/// coturn with its TCP listener (and UDP) on `tcp` and its TLS listener
/// on `tls`, a self-signed certificate, one relay thread.
struct Coturn {
    proc: Proc,
    tcp: SocketAddr,
    tls: SocketAddr,
    log: PathBuf,
    /// Its certificate, key, database, pid file and log, removed at the end.
    files: Vec<PathBuf>,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- turnserver log (tail):\n{}",
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

fn start_coturn(bin: &PathBuf, tag: &str) -> Coturn {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("a cert");
    let (cert, key) = (
        scratch(&format!("{tag}-cert.pem")),
        scratch(&format!("{tag}-key.pem")),
    );
    std::fs::write(&cert, ck.cert.pem()).expect("write the certificate");
    std::fs::write(&key, ck.key_pair.serialize_pem()).expect("write the key");
    let log = scratch(&format!("{tag}-coturn.log"));
    let db = scratch(&format!("{tag}-coturn.sqlite"));
    let pidfile = scratch(&format!("{tag}-coturn.pid"));
    let files = vec![
        cert.clone(),
        key.clone(),
        db.clone(),
        pidfile.clone(),
        log.clone(),
    ];
    for _ in 0..5 {
        let (port, tls_port) = (free_tcp_port(), free_tcp_port());
        if port == tls_port {
            continue;
        }
        // Relay ports below the ephemeral range the clients use; coturn
        // does not reuse a deleted allocation's port at once.
        let min_port = 20_000 + port % 10_000;
        let mut cmd = Command::new(bin);
        cmd.args([
            "-n",
            "--no-cli",
            "--no-dtls",
            "--lt-cred-mech",
            "--allow-loopback-peers",
        ])
        .args(["--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1"])
        .args(["--listening-port", &port.to_string()])
        .args(["--tls-listening-port", &tls_port.to_string()])
        .arg("--cert")
        .arg(&cert)
        .arg("--pkey")
        .arg(&key)
        .args(["--min-port", &min_port.to_string()])
        .args(["--max-port", &(min_port + 1999).to_string()])
        .args([
            "--user",
            "lg:lgpw",
            "--realm",
            "smoke.test",
            "--relay-threads",
            "1",
        ])
        .arg("--db")
        .arg(&db)
        .arg("--pidfile")
        .arg(&pidfile)
        .args(["--no-stdout-log", "--simple-log", "--log-file"])
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = cmd.spawn().expect("spawn turnserver");
        let mut proc = Proc {
            child,
            addr: format!("127.0.0.1:{port}"),
            tcp: Some(format!("127.0.0.1:{port}")),
        };
        let tcp = SocketAddr::from(([127, 0, 0, 1], port));
        let tls = SocketAddr::from(([127, 0, 0, 1], tls_port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(proc.child.try_wait(), Ok(None)) {
            let up = |a| TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok();
            if up(tcp) && up(tls) {
                return Coturn {
                    proc,
                    tcp,
                    tls,
                    log,
                    files,
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "turnserver on ports {port}/{tls_port} did not come up; retrying. Log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    panic!("coturn's turnserver did not start on loopback (5 tries)");
}

/// `uturn-loadgen --json SCENARIO --server ADDR --transport T --user lg:lgpw EXTRA`.
fn over(addr: SocketAddr, transport: &str, scenario: &str, extra: &[&str]) -> Value {
    let addr = addr.to_string();
    let mut args = vec![
        scenario,
        "--server",
        &addr,
        "--transport",
        transport,
        "--user",
        "lg:lgpw",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// A relay run both ways over `transport` against coturn.
fn relay_against_coturn(test: &str, transport: &str) -> Option<Value> {
    let c = start_coturn(&turnserver(test)?, test);
    let pid = c.proc.child.id().to_string();
    let addr = if transport == "tls" { c.tls } else { c.tcp };
    let r = over(
        addr,
        transport,
        "relay",
        &[
            "--flows",
            "10",
            "--rate",
            "2000",
            "--duration",
            "2",
            "--direction",
            "both",
            "--server-pid",
            &pid,
        ],
    );
    assert_eq!(r["transport"], transport, "{r}");
    assert_eq!(r["args"]["transport"], transport, "{r}");
    assert!(num(&r, "sent") > 0.0 && num(&r, "delivered") > 0.0, "{r}");
    for d in r["per_direction"].as_array().expect("per_direction") {
        assert!(num(d, "delivered") > 0.0, "{r}");
    }
    assert_eq!(num(&r, "broken_connections"), 0.0, "{r}");
    assert!(r["delivered_per_server_cpu_sec"].is_number(), "{r}");
    Some(r)
}

#[test]
fn relay_over_tcp_against_coturn() {
    if let Some(r) = relay_against_coturn("relay_over_tcp_against_coturn", "tcp") {
        assert!(r["tls"].is_null(), "{r}");
    }
}

#[test]
fn relay_over_tls_against_coturn() {
    if let Some(r) = relay_against_coturn("relay_over_tls_against_coturn", "tls") {
        assert!(r["tls"]["version"].is_string(), "{r}");
        assert!(r["tls"]["cipher_suite"].is_string(), "{r}");
    }
}

#[test]
fn allocate_over_tls_against_coturn() {
    let test = "allocate_over_tls_against_coturn";
    let Some(bin) = turnserver(test) else { return };
    let c = start_coturn(&bin, test);
    let pid = c.proc.child.id().to_string();
    let r = over(
        c.tls,
        "tls",
        "allocate",
        &[
            "--duration",
            "2",
            "--concurrency",
            "8",
            "--server-pid",
            &pid,
        ],
    );
    assert_eq!(r["transport"], "tls", "{r}");
    assert!(
        r["flow"]
            .as_str()
            .is_some_and(|f| f.contains("TLS handshake")),
        "{r}"
    );
    assert!(num(&r, "completed") > 0.0, "{r}");
    assert_eq!(num(&r, "failed"), 0.0, "{r}");
    assert!(r["flows_per_server_cpu_sec"].is_number(), "{r}");
}

#[test]
fn churn_over_tcp_against_coturn() {
    let test = "churn_over_tcp_against_coturn";
    let Some(bin) = turnserver(test) else { return };
    let c = start_coturn(&bin, test);
    let pid = c.proc.child.id().to_string();
    let r = over(
        c.tcp,
        "tcp",
        "churn",
        &["--rate", "20", "--duration", "2", "--server-pid", &pid],
    );
    assert_eq!(r["transport"], "tcp", "{r}");
    assert!(num(&r, "created") > 0.0 && num(&r, "deleted") > 0.0, "{r}");
    assert_eq!(num(&r, "failed"), 0.0, "{r}");
    assert!(
        num(&r, "c2p_received") > 0.0 && num(&r, "p2c_received") > 0.0,
        "{r}"
    );
}
