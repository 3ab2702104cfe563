//! Operating the binary: configuration errors that name their key,
//! `check-config`, signals.

use super::*;

/// Writes `toml` to a scratch file; runs the server and `check-config` on it;
/// both must refuse it, naming `key` on standard error.
fn assert_config_refused(toml: &str, key: &str) {
    let path = scratch_path("bad.toml");
    // Credentials, so that the file's only fault is the one under test.
    let toml = format!("rest_secrets = [\"a-long-enough-rest-secret\"]\n{toml}");
    let toml = toml.as_str();
    std::fs::write(&path, toml).unwrap();
    let file = path.to_str().unwrap();
    let out = run_uturn(&["--config", file, "--listen", "127.0.0.1:0"]);
    let st = out
        .status
        .unwrap_or_else(|| panic!("uturn started with\n{toml}\nstdout:\n{}", out.stdout));
    assert!(!st.success(), "exit status {st} for\n{toml}");
    assert!(
        out.stderr.contains(key),
        "error does not name {key:?} for\n{toml}\nstderr:\n{}",
        out.stderr
    );
    assert!(!out.stdout.contains("uturn: ready"), "printed ready anyway");

    let out = run_uturn(&["check-config", "--config", file]);
    let st = out.status.expect("check-config finished");
    assert_eq!(
        st.code(),
        Some(2),
        "check-config exit status for\n{toml}\n{}{}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stderr.contains(key) || out.stdout.contains(key),
        "check-config does not name {key:?}:\n{}{}",
        out.stdout,
        out.stderr
    );
}

#[test]
fn config_file_errors_name_the_key() {
    assert_config_refused("realm = \"x\"\nno_such_setting = 5\n", "no_such_setting");
    assert_config_refused("relay_ports = \"6000-5000\"\n", "relay_ports");
    assert_config_refused("relay_ports = \"1-70000\"\n", "relay_ports");
    assert_config_refused("[quotas]\nallocations_per_usr = 3\n", "allocations_per_usr");
    // Passwords never live in the file: only derived keys.
    assert_config_refused(
        "[[users]]\nname = \"bob\"\npassword = \"secret\"\n",
        "password",
    );
    assert_config_refused("[[users]]\nname = \"bob\"\nkey_md5 = \"abcd\"\n", "key_md5");
    assert_config_refused("[peers]\nallow = [\"10.0.0.0/33\"]\n", "allow");
}

#[test]
fn check_config_accepts_a_good_file() {
    let path = scratch_path("good.toml");
    std::fs::write(
        &path,
        "realm = \"ok.test\"\nrelay_ports = \"50000-50100\"\nrest_secrets = [\"a-long-enough-rest-secret\"]\n",
    )
    .unwrap();
    let out = run_uturn(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(
        out.status.is_some_and(|s| s.success()),
        "check-config on a good file: {:?}\n{}{}",
        out.status,
        out.stdout,
        out.stderr
    );
}

#[test]
fn bad_relay_port_range_is_refused() {
    for bad in ["6000-5000", "0-10", "70000-70010", "abc"] {
        let out = run_uturn(&["--listen", "127.0.0.1:0", "--relay-ports", bad]);
        let st = out
            .status
            .unwrap_or_else(|| panic!("uturn started with --relay-ports {bad}:\n{}", out.stdout));
        assert!(!st.success(), "exit status {st} for --relay-ports {bad}");
        let e = out.stderr.to_lowercase().replace('_', "-");
        assert!(
            e.contains("relay-ports") || e.contains("relay ports"),
            "--relay-ports {bad}: error does not name the key:\n{}",
            out.stderr
        );
    }
}

#[test]
fn bad_flags_are_refused() {
    for args in [
        &["--listen", "127.0.0.1:0", "--allow-peer", "not-a-cidr"][..],
        &["--listen", "127.0.0.1:0", "--user", "no-colon"],
        &["--listen", "not-an-address"],
        &["--listen", "127.0.0.1:0", "--workers", "0"],
    ] {
        let out = run_uturn(args);
        let st = out
            .status
            .unwrap_or_else(|| panic!("uturn started with {args:?}:\n{}", out.stdout));
        assert!(!st.success(), "exit status {st} for {args:?}");
        assert!(!out.stderr.trim().is_empty(), "{args:?}: no error message");
    }
}

fn sigterm_exits_zero() {
    let server = lab_server(&[]);
    let mut c = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy);
    c.allocate(); // with a live allocation
    let st = server
        .stop_with(Signal::SIGTERM)
        .expect("uturn did not exit within 10 s of SIGTERM");
    assert!(st.success(), "exit status after SIGTERM: {st}");
}

fn sigint_exits_zero() {
    let server = lab_server(&[]);
    let st = server
        .stop_with(Signal::SIGINT)
        .expect("uturn did not exit within 10 s of SIGINT");
    assert!(st.success(), "exit status after SIGINT: {st}");
}

/// A shard asleep in its wait is woken by the shutdown command's eventfd,
/// not found at its next timeout: an idle shard waits up to a minute
/// (`MAX_WAIT` in src/shard.rs), so a shard that missed the wake-up would
/// keep the process alive far past the 10 s `stop_with` allows.
fn shutdown_wakes_sleeping_shards_at_once() {
    let server = lab_server(&[]);
    // Idle: every shard is asleep in its wait by now.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let st = server
        .stop_with(Signal::SIGTERM)
        .expect("uturn did not exit within 10 s of SIGTERM: a shard slept through the wake-up");
    assert!(st.success(), "exit status after SIGTERM: {st}");
}

on_both_backends!(
    sigterm_exits_zero,
    sigint_exits_zero,
    shutdown_wakes_sleeping_shards_at_once,
);
