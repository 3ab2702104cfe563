//! coturn's `turnserver` on loopback, the reference server of the baseline
//! runs: on UDP, or also on TCP and TLS with a test certificate.

use std::net::{TcpListener, TcpStream};

use super::*;

/// True when something already holds `port` on 127.0.0.1 (TCP).
fn tcp_port_taken(port: u16) -> bool {
    TcpListener::bind((LOCALHOST, port)).is_err()
}

/// A free TCP port on 127.0.0.1 at the moment of asking.
fn free_tcp_port() -> u16 {
    TcpListener::bind((LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral TCP port")
        .port()
}

/// A self-signed certificate for `localhost` (P-256, valid 2 days) made by
/// `openssl req` in a scratch directory, for the servers' TLS listeners.
pub(super) struct TestCert {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

pub(super) fn test_cert(test: &str) -> Option<TestCert> {
    let Some(openssl) = which("openssl") else {
        missing_with(
            test,
            "`openssl` is not installed",
            "`apt-get install openssl`",
        )?;
        return None;
    };
    let dir = scratch_path("tls");
    std::fs::create_dir_all(&dir).expect("create the certificate directory");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let mut cmd = Command::new(openssl);
    cmd.args(["req", "-x509", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert);
    let out = run_bounded(cmd, Duration::from_secs(30));
    assert!(
        out.status.is_some_and(|s| s.success()),
        "openssl req exited {:?}:\n{}",
        out.status,
        out.stderr
    );
    Some(TestCert { cert, key })
}

/// coturn's own server on loopback, for the reference runs.
pub(super) struct Coturn {
    _guard: Guard,
    /// UDP, and TCP too when started with a certificate.
    pub(super) addr: SocketAddr,
    /// TLS over TCP, when started with a certificate.
    pub(super) tls_addr: Option<SocketAddr>,
    log: PathBuf,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- turnserver log (tail):\n{}", tail(&log, 40));
        }
    }
}

/// coturn on UDP only.
pub(super) fn start_coturn(bin: &Path) -> Coturn {
    start_coturn_with(bin, None)
}

/// coturn on UDP; with `tls`, also on TCP (the same port) and on TLS (another
/// port) with that certificate. Ready when it answers a Binding request over
/// UDP and, with `tls`, accepts connections on both TCP ports.
pub(super) fn start_coturn_with(bin: &Path, tls: Option<&TestCert>) -> Coturn {
    for _ in 0..5 {
        let port = free_udp_port(LOCALHOST);
        // With TLS, TCP shares the UDP port, and TLS gets a port of its own.
        let tls_port = match tls {
            None => None,
            Some(_) => {
                let p = free_tcp_port();
                if p == port || tcp_port_taken(port) {
                    continue;
                }
                Some(p)
            }
        };
        let log = scratch_path("coturn.log");
        let db = scratch_path("coturn.sqlite");
        let pid = scratch_path("coturn.pid");
        let min_port = 20000 + port % 40000;
        let mut cmd = Command::new(bin);
        cmd.args(["-n", "--no-cli", "--no-dtls"]);
        match (tls, tls_port) {
            (Some(cert), Some(tls_port)) => {
                cmd.args(["--tls-listening-port", &tls_port.to_string()])
                    .arg("--cert")
                    .arg(&cert.cert)
                    .arg("--pkey")
                    .arg(&cert.key);
            }
            _ => {
                cmd.args(["--no-tls", "--no-tcp"]);
            }
        }
        cmd.args(["--lt-cred-mech", "--allow-loopback-peers"])
            .args([
                "--listening-ip",
                "127.0.0.1",
                "--listening-port",
                &port.to_string(),
            ])
            .args([
                "--relay-ip",
                "127.0.0.1",
                "--min-port",
                &min_port.to_string(),
            ])
            .args(["--max-port", &(min_port + 200).to_string()])
            .args(["--user", &format!("{USER}:{PASS}"), "--realm", REALM])
            .arg("--db")
            .arg(&db)
            .arg("--pidfile")
            .arg(&pid)
            .arg("--log-file")
            .arg(&log)
            .arg("--simple-log")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("spawn turnserver");
        let mut guard = Guard {
            child: Some(child),
            name: "turnserver",
        };
        let addr = SocketAddr::from((LOCALHOST, port));
        let tls_addr = tls_port.map(|p| SocketAddr::from((LOCALHOST, p)));
        let stream_ports = match tls_addr {
            Some(t) => vec![addr, t],
            None => vec![],
        };
        // Ready when it answers a Binding request and accepts on its TCP ports.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut probe = TurnClient::new(addr, "", "", AuthMode::Legacy);
        let mut answered = false;
        while Instant::now() < deadline && guard.alive() {
            if !answered {
                let req = probe.build(
                    Method::Binding,
                    uturn::stun::Class::Request,
                    &TurnClient::new_tid(),
                    false,
                    |_| Ok(()),
                );
                probe.send_raw(&req);
                answered = probe.recv_raw(Duration::from_millis(200)).is_some();
            }
            let accepting = stream_ports
                .iter()
                .all(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok());
            if answered && accepting {
                return Coturn {
                    _guard: guard,
                    addr,
                    tls_addr,
                    log,
                };
            }
            if answered {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        eprintln!(
            "turnserver on port {port} (TLS {tls_port:?}) did not come up; retrying. Log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    panic!("coturn's turnserver did not start on loopback (5 tries)");
}
