//! Choosing the io backend: `auto` prefers io_uring and falls back, in one
//! log line, when the kernel refuses it; `uring` refused is a start-up error
//! that names the flag or key.
//!
//! io_uring is refused the way container runtimes do it: a seccomp filter
//! that fails `io_uring_setup` with EPERM (or ENOSYS), installed in the
//! child between fork and exec.

use super::*;

/// The uturn binary with `args`, `io_uring_setup` failing with `errno`.
fn without_io_uring(args: &[&str], errno: u32) -> Command {
    let mut cmd = Command::new(uturn_bin());
    cmd.args(args);
    uturn::io::seccomp::refuse_io_uring(&mut cmd, errno);
    cmd
}

fn lab_args() -> Vec<String> {
    LAB_ARGS
        .iter()
        .chain(&[
            "--listen",
            "127.0.0.1:0",
            "--relay-ip",
            "127.0.0.1",
            "--workers",
            "2",
        ])
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn auto_prefers_io_uring_where_it_works() {
    let server = lab_server(&["--io-backend", "auto"]);
    let want = match uturn::io::uring::probe() {
        Ok(_) => "uring",
        Err(_) => "syscall",
    };
    assert_eq!(server.io_backend.as_deref(), Some(want));
    // The line comes right before `uturn: ready`.
    let n = server.banner.len();
    assert_eq!(server.banner[n - 2], format!("uturn: io backend {want}"));
}

#[test]
fn auto_falls_back_in_one_line_when_io_uring_is_refused() {
    for errno in [libc::EPERM as u32, libc::ENOSYS as u32] {
        let args = lab_args();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = Server::spawn_command(without_io_uring(&argv, errno), args.clone())
            .unwrap_or_else(|e| panic!("errno {errno}: {e}"));
        assert_eq!(
            server.io_backend.as_deref(),
            Some("syscall"),
            "errno {errno}"
        );
        alice_flow(server.addr);
        let stderr = server.stderr_text();
        let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("io_uring")).collect();
        assert_eq!(
            lines.len(),
            1,
            "errno {errno}: one line about io_uring:\n{stderr}"
        );
        println!("errno {errno}: {}", lines[0]);
        assert!(
            lines[0].contains("io_uring unavailable (")
                && lines[0].contains("); using the portable recvmmsg/sendmmsg backend"),
            "errno {errno}: {}",
            lines[0]
        );
    }
}

#[test]
fn uring_refused_is_a_startup_error_naming_the_flag_or_key() {
    let mut args = lab_args();
    args.extend(["--io-backend".to_string(), "uring".to_string()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_bounded(
        without_io_uring(&argv, libc::EPERM as u32),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.and_then(|s| s.code()), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("--io-backend") && out.stderr.contains("io_uring unavailable"),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains("uturn: ready"));

    let path = scratch_path("uring.toml");
    std::fs::write(
        &path,
        "io_backend = \"uring\"\nrest_secrets = [\"a-long-enough-rest-secret\"]\n",
    )
    .unwrap();
    let file = path.to_str().unwrap();
    let argv = ["--config", file, "--listen", "127.0.0.1:0"];
    let out = run_bounded(
        without_io_uring(&argv, libc::ENOSYS as u32),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.and_then(|s| s.code()), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("io_backend: io_uring unavailable"),
        "{}",
        out.stderr
    );

    // Checking the file reads the file only: the kernel it may later run on
    // is probed at start-up, as above.
    let out = run_bounded(
        without_io_uring(&["check-config", "--config", file], libc::ENOSYS as u32),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.and_then(|s| s.code()), Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("config OK"), "{}", out.stdout);
}

#[test]
fn an_unknown_backend_is_refused() {
    let out = run_uturn(&["--listen", "127.0.0.1:0", "--io-backend", "fast"]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("--io-backend"), "{}", out.stderr);
}

/// Allocations deleted while their peer keeps sending, on a port range so
/// small that relay ports (and, on io_uring, fixed-file slots) are reused at
/// once: nothing crashes or leaks, each new allocation relays only its own
/// traffic, and shutdown is clean.
fn relay_sockets_close_under_traffic() {
    let mut server = lab_server(&["--workers", "1", "--relay-ports", "50100-50103"]);
    let peer = Peer::v4();
    for round in 0..12u8 {
        let mut c = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy);
        let relayed = c.allocate();
        assert_success(&c.channel_bind(0x4000, peer.addr), "ChannelBind");
        for i in 0..200u8 {
            peer.send_to(&[round, i], relayed);
        }
        c.send_channel(0x4000, &[round; 8], false);
        let (data, from) = peer.recv(WAIT).expect("ChannelData relayed to the peer");
        assert_eq!((data, from), (vec![round; 8], relayed), "round {round}");
        // Every relayed datagram the client gets is from this round.
        let mut seen = 0;
        while let Some(r) = c.recv_relayed(Duration::from_millis(50)) {
            let (Relayed::Channel { data, .. } | Relayed::Data { data, .. }) = &r;
            assert_eq!(data.first(), Some(&round), "round {round}: {r:?}");
            seen += 1;
        }
        assert!(seen > 0, "round {round}: nothing relayed to the client");
        assert_success(&c.refresh(0), "Refresh 0");
        for i in 0..200u8 {
            peer.send_to(&[round, i], relayed);
        }
        server.assert_alive(&format!("after round {round}"));
    }
    alice_flow(server.addr);
    let stderr_before_stop = server.stderr_text();
    let st = server
        .stop_with(Signal::SIGTERM)
        .expect("uturn did not exit within 10 s of SIGTERM");
    assert!(st.success(), "exit status {st}");
    assert!(
        !stderr_before_stop.contains("WARN") && !stderr_before_stop.contains("ERROR"),
        "{stderr_before_stop}"
    );
}

on_both_backends!(relay_sockets_close_under_traffic);
