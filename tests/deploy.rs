//! The deployment files in `deploy/`: the systemd unit passes
//! `systemd-analyze verify`, its system-call filter lets through every call
//! uturn makes, the example configuration passes `uturn check-config`, and the
//! numbers the two files share (open-file limit and relay ports, stop timeout
//! and drain timeout, credential and runtime paths) agree.
//!
//! The tests that run `systemd-analyze` fail when it is missing if
//! `UTURN_REQUIRE_SYSTEMD=1` (CI sets it); otherwise they print SKIPPED and
//! pass.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

const UNIT: &str = "deploy/uturn.service";
const CONFIG: &str = "deploy/uturn.toml";
/// Where the unit installs the binary.
const INSTALLED_BIN: &str = "/usr/local/bin/uturn";
/// Fixed-file slots each io_uring worker keeps for sockets still closing
/// (`CLOSING_SLOTS` in src/shard/uring.rs).
const CLOSING_SLOTS_PER_WORKER: u64 = 1024;
/// Workers assumed when the configuration leaves `workers` to the CPU count.
const ASSUMED_WORKERS: u64 = 32;
/// Descriptors besides relay and closing sockets: listeners, rings,
/// eventfds, standard streams, metrics and control sockets.
const OTHER_FDS: u64 = 1024;
/// Seconds uturn may need after the drain timeout to close and exit.
const STOP_MARGIN_SECS: u64 = 10;

/// System calls uturn was seen to make (strace -f over start-up, allocate and
/// relay load, and SIGTERM, on each io backend), plus what the metrics
/// listener, the control socket and reloading will need (`listen`, `accept4`,
/// `unlink`, `statx`, `pipe2`).
const SYSCALLS_USED: &[&str] = &[
    "accept4",
    "access",
    "arch_prctl",
    "bind",
    "brk",
    "clone3",
    "close",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "eventfd2",
    "execve",
    "fcntl",
    "futex",
    "getrandom",
    "getsockname",
    "getsockopt",
    "gettid",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioctl",
    "listen",
    "madvise",
    "mmap",
    "mprotect",
    "munmap",
    "newfstatat",
    "openat",
    "pipe2",
    "poll",
    "prctl",
    "pread64",
    "prlimit64",
    "read",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "rseq",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sched_getaffinity",
    "sched_setaffinity",
    "sched_yield",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "set_robust_list",
    "set_tid_address",
    "setsockopt",
    "sigaltstack",
    "socket",
    "socketpair",
    "statx",
    "sysinfo",
    "unlink",
    "write",
];

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    let path = repo_file(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A fresh directory under cargo's per-target scratch directory.
fn scratch_dir(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("deploy-{}-{n}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

fn text(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------------------
// The unit file
// ---------------------------------------------------------------------------

/// Every value assigned to `key` in `[section]`, in order. Comments and blank
/// lines are skipped; a line ending in a backslash continues on the next.
fn unit_values(unit: &str, section: &str, key: &str) -> Vec<String> {
    let mut values = Vec::new();
    let mut current = String::new();
    let mut logical = String::new();
    for raw in unit.lines() {
        let line = raw.trim();
        if logical.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';'))
        {
            continue;
        }
        if let Some(rest) = line.strip_suffix('\\') {
            logical.push_str(rest);
            logical.push(' ');
            continue;
        }
        logical.push_str(line);
        let full = std::mem::take(&mut logical);
        if full.starts_with('[') && full.ends_with(']') {
            current = full[1..full.len() - 1].to_string();
        } else if current == section {
            if let Some((k, v)) = full.split_once('=') {
                if k.trim() == key {
                    values.push(v.trim().to_string());
                }
            }
        }
    }
    values
}

/// The one value of `key` in `[Service]`; fails if it is missing or repeated.
fn service_value(unit: &str, key: &str) -> String {
    let values = unit_values(unit, "Service", key);
    assert_eq!(
        values.len(),
        1,
        "{UNIT}: expected exactly one {key}= in [Service], found {values:?}"
    );
    values.into_iter().next().unwrap_or_default()
}

/// A systemd time span in whole seconds: "90", "90s", "1min 30s", "2h".
fn parse_timespan(s: &str) -> Option<u64> {
    let mut total = 0u64;
    for part in s.split_whitespace() {
        let split = part
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(part.len());
        let (num, unit) = part.split_at(split);
        let n: u64 = num.parse().ok()?;
        let scale = match unit {
            "" | "s" | "sec" | "second" | "seconds" => 1,
            "m" | "min" | "minute" | "minutes" => 60,
            "h" | "hr" | "hour" | "hours" => 3600,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(scale)?)?;
    }
    (!s.trim().is_empty()).then_some(total)
}

/// LimitNOFILE= as its soft limit ("N" or "SOFT:HARD"; "infinity" is u64::MAX).
fn parse_nofile(s: &str) -> Option<u64> {
    let soft = s.split(':').next()?.trim();
    if soft == "infinity" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

// ---------------------------------------------------------------------------
// The configuration file
// ---------------------------------------------------------------------------

fn config() -> toml::Table {
    read(CONFIG)
        .parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("{CONFIG} is not TOML: {e}"))
}

fn config_int(cfg: &toml::Table, key: &str) -> Option<u64> {
    cfg.get(key).map(|v| {
        v.as_integer()
            .and_then(|i| u64::try_from(i).ok())
            .unwrap_or_else(|| panic!("{CONFIG}: {key} is not a non-negative integer: {v}"))
    })
}

fn relay_port_count(cfg: &toml::Table) -> u64 {
    let range = cfg
        .get("relay_ports")
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| panic!("{CONFIG} must set relay_ports (the unit is sized from it)"));
    let (lo, hi) = range
        .split_once('-')
        .and_then(|(lo, hi)| {
            Some((
                lo.trim().parse::<u16>().ok()?,
                hi.trim().parse::<u16>().ok()?,
            ))
        })
        .unwrap_or_else(|| panic!("{CONFIG}: relay_ports {range:?} is not LOW-HIGH"));
    assert!(lo <= hi, "{CONFIG}: relay_ports {range:?} is empty");
    u64::from(hi) - u64::from(lo) + 1
}

// ---------------------------------------------------------------------------
// systemd-analyze
// ---------------------------------------------------------------------------

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The systemd-analyze binary, or None (after printing SKIPPED) when it is
/// missing and `UTURN_REQUIRE_SYSTEMD` is not 1.
fn systemd_analyze(test: &str) -> Option<PathBuf> {
    if let Some(p) = which("systemd-analyze") {
        return Some(p);
    }
    let msg = format!("{test}: systemd-analyze not found (Debian: apt-get install systemd procps)");
    if std::env::var("UTURN_REQUIRE_SYSTEMD").is_ok_and(|v| v == "1") {
        panic!("{msg}; UTURN_REQUIRE_SYSTEMD=1 makes this a failure");
    }
    println!("SKIPPED {msg}; set UTURN_REQUIRE_SYSTEMD=1 to make this a failure");
    None
}

/// The system calls in a `systemd-analyze syscall-filter` set, with nested
/// sets expanded.
fn expand_syscall_set(analyze: &Path, name: &str, seen: &mut BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if !name.starts_with('@') {
        out.insert(name.to_string());
        return out;
    }
    if !seen.insert(name.to_string()) {
        return out;
    }
    let res = Command::new(analyze)
        .args(["syscall-filter", name])
        .output()
        .expect("run systemd-analyze syscall-filter");
    assert!(
        res.status.success(),
        "systemd-analyze syscall-filter {name} failed (is the set name right?)\n{}",
        text(&res)
    );
    let listing = String::from_utf8_lossy(&res.stdout).into_owned();
    // The first line names the set; members follow, indented; comments start
    // with '#'.
    for line in listing.lines().skip(1) {
        let item = line.trim();
        if item.is_empty() || item.starts_with('#') {
            continue;
        }
        out.extend(expand_syscall_set(analyze, item, seen));
    }
    out
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let Some(analyze) = systemd_analyze("unit_passes_systemd_analyze_verify") else {
        return;
    };
    let unit = read(UNIT);
    let bin = env!("CARGO_BIN_EXE_uturn");
    // ExecStart and ExecStartPre name the installed binary; verify checks that
    // it exists, so point them at the one cargo built.
    let mut rewritten = 0;
    let local: String = unit
        .lines()
        .map(|line| {
            if line.starts_with("ExecStart=") || line.starts_with("ExecStartPre=") {
                assert!(
                    line.contains(INSTALLED_BIN),
                    "{UNIT}: {line:?} does not run {INSTALLED_BIN}"
                );
                rewritten += 1;
                line.replace(INSTALLED_BIN, bin)
            } else {
                line.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect();
    assert_eq!(
        rewritten, 2,
        "{UNIT}: expected one ExecStart= and one ExecStartPre="
    );

    let dir = scratch_dir("verify");
    let path = dir.join("uturn.service");
    std::fs::write(&path, local).expect("write the unit copy");
    let res = Command::new(&analyze)
        .arg("verify")
        .arg(&path)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze verify");
    let all = text(&res);
    println!("systemd-analyze verify {}:\n{all}", path.display());
    assert!(
        res.status.success(),
        "systemd-analyze verify failed:\n{all}"
    );
    // verify may also talk about the host (other units, the running manager);
    // only what it says about this unit counts.
    let path_str = path.display().to_string();
    let output = format!(
        "{}\n{}",
        String::from_utf8_lossy(&res.stderr),
        String::from_utf8_lossy(&res.stdout)
    );
    let about_unit: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("uturn.service") || l.contains(&path_str))
        .collect();
    assert!(
        about_unit.is_empty(),
        "systemd-analyze verify warns about the unit (a /bin/kill warning means procps is \
         missing):\n{}",
        about_unit.join("\n")
    );
}

#[test]
fn unit_syscall_filter_allows_what_uturn_uses() {
    let Some(analyze) = systemd_analyze("unit_syscall_filter_allows_what_uturn_uses") else {
        return;
    };
    let allowed = allowed_syscalls(&analyze, &read(UNIT));
    let refused: Vec<&str> = SYSCALLS_USED
        .iter()
        .copied()
        .filter(|s| !allowed.contains(*s))
        .collect();
    assert!(
        refused.is_empty(),
        "{UNIT}: SystemCallFilter= refuses system calls uturn makes: {refused:?}"
    );
}

/// The system calls a unit's `SystemCallFilter=` lines let through: an
/// allow list first, then lines that add (no '~') or take away ('~'),
/// applied in order, as systemd does.
fn allowed_syscalls(analyze: &Path, unit: &str) -> BTreeSet<String> {
    let filters = unit_values(unit, "Service", "SystemCallFilter");
    assert!(!filters.is_empty(), "{UNIT} has no SystemCallFilter=");
    assert!(
        !filters[0].starts_with('~'),
        "{UNIT}: the first SystemCallFilter= should be an allow list"
    );
    let mut allowed = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for line in &filters {
        let (deny, items) = match line.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, line.as_str()),
        };
        for item in items.split_whitespace() {
            seen.clear();
            let set = expand_syscall_set(analyze, item, &mut seen);
            if deny {
                allowed.retain(|s| !set.contains(s));
            } else {
                allowed.extend(set);
            }
        }
    }
    allowed
}

/// deploy/uturn-xdp.conf: the unit alone refuses bpf(); with the drop-in
/// (its lines after the unit's, as systemd applies a drop-in) bpf() and
/// everything uturn already used pass, and the capabilities XDP needs are
/// granted on top of the unit's.
#[test]
fn xdp_drop_in_allows_bpf_and_grants_its_capabilities() {
    let Some(analyze) = systemd_analyze("xdp_drop_in_allows_bpf_and_grants_its_capabilities")
    else {
        return;
    };
    let unit = read(UNIT);
    let drop_in = read("deploy/uturn-xdp.conf");
    assert!(
        !allowed_syscalls(&analyze, &unit).contains("bpf"),
        "{UNIT} already allows bpf(): the drop-in's SystemCallFilter= is not needed"
    );
    let both = format!("{unit}\n{drop_in}");
    let allowed = allowed_syscalls(&analyze, &both);
    assert!(
        allowed.contains("bpf"),
        "the XDP drop-in does not allow bpf()"
    );
    for s in SYSCALLS_USED {
        assert!(allowed.contains(*s), "with the XDP drop-in, {s} is refused");
    }
    for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
        let caps = unit_values(&drop_in, "Service", key).join(" ");
        for cap in [
            "CAP_NET_BIND_SERVICE",
            "CAP_BPF",
            "CAP_PERFMON",
            "CAP_NET_ADMIN",
        ] {
            assert!(
                caps.split_whitespace().any(|c| c == cap),
                "deploy/uturn-xdp.conf: {key}= lacks {cap}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The configuration
// ---------------------------------------------------------------------------

#[test]
fn example_config_passes_check_config() {
    let cfg_text = read(CONFIG);
    let credential = "/etc/uturn/secrets/rest-secret";
    assert!(
        cfg_text.contains(credential),
        "{CONFIG} should read the REST secret from {credential}"
    );
    // The secret exists only on the node: use a file here. The listen and
    // relay addresses stay as they are, since check-config parses them
    // without binding.
    let dir = scratch_dir("check-config");
    let secret = dir.join("rest-secret");
    std::fs::write(&secret, "a-test-secret\n").expect("write the secret");
    // So do the certificate and its key: a test pair in their place.
    let (cert, key) = ("/etc/uturn/tls/fullchain.pem", "/etc/uturn/tls/privkey.pem");
    assert!(
        cfg_text.contains(cert) && cfg_text.contains(key),
        "{CONFIG} should name {cert} and {key}"
    );
    let pair = rcgen::generate_simple_self_signed(vec!["turn.example.com".into()]).unwrap();
    let (cert_copy, key_copy) = (dir.join("fullchain.pem"), dir.join("privkey.pem"));
    std::fs::write(&cert_copy, pair.cert.pem()).expect("write the certificate");
    std::fs::write(&key_copy, pair.key_pair.serialize_pem()).expect("write the key");
    std::fs::set_permissions(
        &key_copy,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod the key");
    let local = cfg_text
        .replace(credential, &secret.display().to_string())
        .replace(cert, &cert_copy.display().to_string())
        .replace(key, &key_copy.display().to_string());
    let path = dir.join("uturn.toml");
    std::fs::write(&path, local).expect("write the config copy");

    let check_config = || {
        Command::new(env!("CARGO_BIN_EXE_uturn"))
            .arg("check-config")
            .arg("--config")
            .arg(&path)
            .output()
            .expect("run uturn check-config")
    };
    let res = check_config();
    let all = text(&res);
    println!("uturn check-config:\n{all}");
    assert!(
        res.status.success(),
        "check-config refused {CONFIG}:\n{all}"
    );
    let stdout = String::from_utf8_lossy(&res.stdout);
    for expect in [
        "config OK",
        "1 REST secrets",
        "ports 49152-65535",
        "listen: tcp 203.0.113.10:3478",
        "listen: tls 203.0.113.10:5349, 203.0.113.10:443",
    ] {
        assert!(
            stdout.contains(expect),
            "check-config output lacks {expect:?}:\n{all}"
        );
    }

    // And with the secret gone the same file is refused, naming the key.
    std::fs::remove_file(&secret).expect("remove the secret");
    let res = check_config();
    assert_eq!(res.status.code(), Some(2), "{}", text(&res));
    assert!(
        String::from_utf8_lossy(&res.stderr).contains("rest_secret_files[0]"),
        "{}",
        text(&res)
    );
}

// ---------------------------------------------------------------------------
// The two files agree
// ---------------------------------------------------------------------------

#[test]
fn open_file_limit_covers_the_relay_ports_and_connections() {
    let unit = read(UNIT);
    let cfg = config();
    let ports = relay_port_count(&cfg);
    let workers = config_int(&cfg, "workers").unwrap_or(ASSUMED_WORKERS);
    let value = service_value(&unit, "LimitNOFILE");
    let limit = parse_nofile(&value)
        .unwrap_or_else(|| panic!("{UNIT}: LimitNOFILE={value} is not a number"));
    // One descriptor per TCP or TLS connection, up to [tcp] max_connections.
    let connections = cfg
        .get("tcp")
        .and_then(toml::Value::as_table)
        .and_then(|t| config_int(t, "max_connections"))
        .unwrap_or_else(|| {
            panic!("{CONFIG} must set [tcp] max_connections (the unit is sized from it)")
        });
    let need = ports + CLOSING_SLOTS_PER_WORKER * workers + connections + OTHER_FDS;
    assert!(
        limit >= need,
        "{UNIT}: LimitNOFILE={limit} is below {need} = {ports} relay ports + \
         {CLOSING_SLOTS_PER_WORKER} x {workers} workers + {connections} connections + {OTHER_FDS}"
    );
}

#[test]
fn stop_timeout_outlasts_the_drain() {
    let unit = read(UNIT);
    let cfg = config();
    let drain = config_int(&cfg, "drain_timeout_secs")
        .unwrap_or_else(|| panic!("{CONFIG} should set drain_timeout_secs"));
    let value = service_value(&unit, "TimeoutStopSec");
    let stop = parse_timespan(&value)
        .unwrap_or_else(|| panic!("{UNIT}: TimeoutStopSec={value} is not a time span"));
    assert!(
        stop >= drain + STOP_MARGIN_SECS,
        "{UNIT}: TimeoutStopSec={stop}s must exceed drain_timeout_secs={drain} by at least \
         {STOP_MARGIN_SECS}s, or systemd kills uturn mid-drain"
    );
    assert_eq!(service_value(&unit, "KillSignal"), "SIGTERM");
}

#[test]
fn credential_and_runtime_paths_match() {
    let unit = read(UNIT);
    let cfg = config();

    // The secrets are files the service reads itself (so that a reload can
    // rotate them), in a directory the file-system protection leaves readable.
    let files: Vec<&str> = cfg
        .get("rest_secret_files")
        .and_then(toml::Value::as_array)
        .map(|a| a.iter().filter_map(toml::Value::as_str).collect())
        .unwrap_or_default();
    assert!(!files.is_empty(), "{CONFIG}: rest_secret_files is empty");
    for f in &files {
        assert!(
            f.starts_with("/etc/uturn/secrets/"),
            "{CONFIG}: secret file {f:?} is not under /etc/uturn/secrets/"
        );
    }
    assert!(
        unit_values(&unit, "Service", "LoadCredential").is_empty(),
        "{UNIT}: a LoadCredential copy is made once per start, so reload could not rotate the secret"
    );
    assert!(
        !unit_values(&unit, "Service", "InaccessiblePaths")
            .iter()
            .any(|p| p.contains("/etc/uturn")),
        "{UNIT}: the secrets must stay readable"
    );
    assert!(
        cfg.get("rest_secrets").is_none(),
        "{CONFIG} must not hold a secret itself"
    );

    // RuntimeDirectory=uturn creates /run/uturn for the control socket.
    let runtime = service_value(&unit, "RuntimeDirectory");
    let socket = cfg
        .get("control_socket")
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| panic!("{CONFIG} should set control_socket"));
    assert!(
        socket.starts_with(&format!("/run/{runtime}/")),
        "{CONFIG}: control_socket {socket:?} is not under /run/{runtime}/ (RuntimeDirectory=)"
    );

    // Metrics stay on loopback.
    let metrics = cfg
        .get("metrics")
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| panic!("{CONFIG} should set metrics"));
    let addr: std::net::SocketAddr = metrics
        .parse()
        .unwrap_or_else(|_| panic!("{CONFIG}: metrics {metrics:?} is not IP:PORT"));
    assert!(
        addr.ip().is_loopback(),
        "{CONFIG}: metrics {addr} is not loopback"
    );

    // The service checks and runs the same file.
    let pre = service_value(&unit, "ExecStartPre");
    let start = service_value(&unit, "ExecStart");
    let config_arg = |cmd: &str| {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        words
            .windows(2)
            .find(|w| w[0] == "--config")
            .map(|w| w[1].to_string())
    };
    assert!(
        pre.contains("check-config"),
        "{UNIT}: ExecStartPre={pre} is not check-config"
    );
    assert_eq!(
        config_arg(&pre),
        config_arg(&start),
        "{UNIT}: ExecStartPre and ExecStart differ"
    );
    assert!(
        config_arg(&start).is_some(),
        "{UNIT}: ExecStart has no --config"
    );
}

#[test]
fn timespan_and_nofile_parsers() {
    assert_eq!(parse_timespan("90"), Some(90));
    assert_eq!(parse_timespan("90s"), Some(90));
    assert_eq!(parse_timespan("1min 30s"), Some(90));
    assert_eq!(parse_timespan("2h"), Some(7200));
    assert_eq!(parse_timespan("5ms"), None);
    assert_eq!(parse_timespan(""), None);
    assert_eq!(parse_nofile("65536"), Some(65536));
    assert_eq!(parse_nofile("4096:65536"), Some(4096));
    assert_eq!(parse_nofile("infinity"), Some(u64::MAX));
    assert_eq!(parse_nofile("lots"), None);
}
