use std::path::Path;

use clap::Parser;
use md5::Digest;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::auth::{strip_newline, unhex};
use super::*;
use crate::policy::Quotas;

fn args(flags: &[&str]) -> RunArgs {
    let mut argv = vec!["uturn"];
    argv.extend_from_slice(flags);
    crate::cli::Cli::try_parse_from(argv)
        .expect("flags parse")
        .run
}

fn with_file(flags: &[&str], text: &str) -> Result<Config, ConfigError> {
    Config::from_parts(&args(flags), Some((Path::new("test.toml"), text)))
}

fn err(r: Result<Config, ConfigError>) -> String {
    r.expect_err("should be refused").to_string()
}

const MD5_A: &str = "0123456789abcdef0123456789abcdef";
const SHA_A: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A certificate and key in PEM files (key mode 0600), made once per run.
fn tls_files() -> &'static (String, String) {
    static FILES: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    FILES.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("uturn-config-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pair = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, pair.cert.pem()).unwrap();
        std::fs::write(&key, pair.key_pair.serialize_pem()).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        (cert.display().to_string(), key.display().to_string())
    })
}

fn minimal() -> String {
    format!("[[users]]\nname = \"alice\"\nkey_md5 = \"{MD5_A}\"\n")
}

#[test]
fn every_key_parses() {
    let dir = std::env::temp_dir().join(format!("uturn-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret_file = dir.join("secret");
    std::fs::write(&secret_file, "from-file\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let text = format!(
        r#"
listen = ["127.0.0.1:3478", "[::1]:3479"]
relay_ips = ["192.0.2.10", "2001:db8::10"]
relay_ports = "50000-50999"
realm = "example.org"
workers = 4
max_lifetime_secs = 1200
software = "uturn"
rest_secrets = ["s1"]
rest_secret_files = [{secret_file:?}]
offer_sha256 = false
nonce_lifetime_secs = 300
log_level = "debug"
io_backend = "syscall"
io_batch_wait_usecs = 250
io_gso = false
io_streams = "epoll"
log_format = "json"
log_client_details = true
metrics = "127.0.0.1:9641"
control_socket = "/run/uturn/control.sock"
drain_timeout_secs = 5
alternate_server = "192.0.2.20:3478"

[[users]]
name = "alice"
key_md5 = "{MD5_A}"
key_sha256 = "{SHA_A}"

[[users]]
name = "bob"
key_sha256 = "{SHA_A}"

[peers]
allow = ["10.1.0.0/16", "192.168.1.7"]
deny = ["203.0.113.0/24"]

[quotas]
allocations_per_user = 3
total_allocations = 100
permissions_per_allocation = 5
channels_per_allocation = 6

[rate_limit]
unauth_per_second = 7
unauth_burst = 9
"#
    );
    let c = with_file(&[], &text).unwrap();
    assert_eq!(
        c.network.listen,
        vec![
            "127.0.0.1:3478".parse().unwrap(),
            "[::1]:3479".parse().unwrap()
        ]
    );
    assert_eq!(c.network.relay_v4, Some("192.0.2.10".parse().unwrap()));
    assert_eq!(c.network.relay_v6, Some("2001:db8::10".parse().unwrap()));
    assert_eq!(c.network.relay_ports, 50000..=50999);
    assert_eq!(c.reloadable.auth.realm, "example.org");
    assert_eq!(c.network.workers, 4);
    assert_eq!(c.reloadable.policy.max_lifetime, Duration::from_secs(1200));
    assert_eq!(c.reloadable.policy.software.as_deref(), Some("uturn"));
    assert_eq!(
        c.reloadable.auth.rest_secrets,
        vec![b"s1".to_vec(), b"from-file".to_vec()]
    );
    assert!(!c.reloadable.auth.offer_sha256);
    assert_eq!(c.reloadable.auth.nonce_lifetime_secs, 300);
    assert_eq!(c.reloadable.logging.level, "debug");
    assert_eq!(c.io.backend, IoBackendChoice::Syscall);
    assert_eq!(c.io.batch_wait, Duration::from_micros(250));
    assert!(!c.io.gso);
    assert_eq!(c.io.streams, StreamIoChoice::Epoll);
    assert_eq!(c.operations.log_format, LogFormat::Json);
    assert!(c.reloadable.logging.client_details);
    assert_eq!(
        c.operations.metrics,
        Some("127.0.0.1:9641".parse().unwrap())
    );
    assert_eq!(
        c.operations.control_socket.as_deref(),
        Some(Path::new("/run/uturn/control.sock"))
    );
    assert_eq!(c.reloadable.drain.timeout, Duration::from_secs(5));
    assert_eq!(
        c.reloadable.drain.alternate_server,
        Some("192.0.2.20:3478".parse().unwrap())
    );
    assert_eq!(c.reloadable.auth.users.len(), 2);
    assert_eq!(
        c.reloadable.auth.users[0]
            .key_md5
            .map(|k| hex(&k))
            .as_deref(),
        Some(MD5_A)
    );
    assert_eq!(
        c.reloadable.auth.users[0]
            .key_sha256
            .map(|k| hex(&k))
            .as_deref(),
        Some(SHA_A)
    );
    assert_eq!(c.reloadable.auth.users[1].key_md5, None);
    assert_eq!(
        c.reloadable.policy.allow_peers,
        vec![
            "10.1.0.0/16".parse().unwrap(),
            "192.168.1.7/32".parse().unwrap()
        ]
    );
    assert_eq!(
        c.reloadable.policy.deny_peers,
        vec!["203.0.113.0/24".parse().unwrap()]
    );
    assert_eq!(
        c.reloadable.policy.quotas,
        Quotas {
            allocations_per_user: 3,
            total_allocations: 100,
            permissions_per_allocation: 5,
            channels_per_allocation: 6,
            ..Quotas::default()
        }
    );
    assert_eq!(
        (
            c.reloadable.policy.unauth_per_second,
            c.reloadable.policy.unauth_burst
        ),
        (7, 9)
    );
    assert!(c.reloadable.auth.demo.is_none());
    assert!(c.summary().contains("2 static users, 2 REST secrets"));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // A secret file every user can read works, with a warning that names it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let c = with_file(&[], &text).unwrap();
    assert_eq!(c.warnings.len(), 1);
    assert!(
        c.warnings[0].starts_with("rest_secret_files[0]: "),
        "{:?}",
        c.warnings
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn defaults_apply() {
    let c = with_file(&[], &minimal()).unwrap();
    assert_eq!(c.network.listen, vec![DEFAULT_LISTEN.parse().unwrap()]);
    assert_eq!(c.network.relay_v4, Some(Ipv4Addr::LOCALHOST));
    assert_eq!(c.network.relay_v6, None);
    assert_eq!(c.network.relay_ports, 49152..=65535);
    assert_eq!(c.reloadable.auth.realm, DEFAULT_REALM);
    assert_eq!(c.reloadable.policy.max_lifetime, Duration::from_secs(3600));
    assert!(c.reloadable.auth.offer_sha256);
    assert_eq!(c.reloadable.auth.nonce_lifetime_secs, 600);
    assert_eq!(c.reloadable.policy.quotas, Quotas::default());
    assert_eq!(
        (
            c.reloadable.policy.unauth_per_second,
            c.reloadable.policy.unauth_burst
        ),
        (20, 40)
    );
    assert!(c.reloadable.policy.software.is_none());
    assert!(c.network.workers >= 1);
    assert_eq!(c.io.backend, IoBackendChoice::Auto);
    assert!(c.summary().contains("io backend: auto"));
}

#[test]
fn io_backend_choices() {
    for (v, want) in [
        ("auto", IoBackendChoice::Auto),
        ("uring", IoBackendChoice::Uring),
        ("SYSCALL", IoBackendChoice::Syscall),
    ] {
        let text = format!("io_backend = \"{v}\"\n{}", minimal());
        assert_eq!(with_file(&[], &text).unwrap().io.backend, want);
    }
    // The flag beats the file; errors name whichever was used.
    let text = format!("io_backend = \"uring\"\n{}", minimal());
    let c = with_file(&["--io-backend", "syscall"], &text).unwrap();
    assert_eq!(c.io.backend, IoBackendChoice::Syscall);
    let e = err(with_file(&["--io-backend", "epoll"], &minimal()));
    assert!(e.starts_with("--io-backend: "), "{e}");
    let text = format!("io_backend = \"fast\"\n{}", minimal());
    let e = err(with_file(&[], &text));
    assert!(
        e.starts_with("io_backend: ") && e.contains("uring, syscall, auto"),
        "{e}"
    );
}

#[test]
fn unknown_keys_are_named() {
    let e = err(with_file(
        &[],
        &format!("lisen = [\"127.0.0.1:1\"]\n{}", minimal()),
    ));
    assert!(e.contains("unknown field `lisen`"), "{e}");
    assert!(e.contains("line 1"), "{e}");
    let e = err(with_file(
        &[],
        &format!("{}\n[quotas]\nchannels = 3\n", minimal()),
    ));
    assert!(e.contains("unknown field `channels`"), "{e}");
    let e = err(with_file(&[], &format!("{}key_sha1 = \"00\"\n", minimal())));
    assert!(e.contains("unknown field `key_sha1`"), "{e}");
}

#[test]
fn toml_syntax_errors_carry_the_position() {
    let e = err(with_file(&[], "realm = \"x\"\nworkers = = 3\n"));
    assert!(e.contains("test.toml") && e.contains("line 2"), "{e}");
}

#[test]
fn bad_port_ranges() {
    for bad in ["70000-80000", "0-10", "500-400", "1000", "a-b", ""] {
        let e = err(with_file(
            &[],
            &format!("relay_ports = \"{bad}\"\n{}", minimal()),
        ));
        assert_eq!(
            e,
            format!("relay_ports: \"{bad}\" is not LOW-HIGH with 1 ≤ LOW ≤ HIGH ≤ 65535")
        );
    }
    let e = err(with_file(&["--relay-ports", "9-3"], &minimal()));
    assert!(e.starts_with("--relay-ports: "), "{e}");
    let e = err(with_file(
        &["--relay-ports", "1000-1002", "--workers", "4"],
        &minimal(),
    ));
    assert!(
        e.starts_with("--relay-ports: \"1000-1002\" has 3 ports, fewer than the 4 workers"),
        "{e}"
    );
}

#[test]
fn port_slices_partition_the_range() {
    let s = port_slices(&(49152..=65535), 3).unwrap();
    assert_eq!(s, vec![49152..=54613, 54614..=60074, 60075..=65535]);
    assert_eq!(port_slices(&(10..=10), 1).unwrap(), vec![10..=10]);
    assert_eq!(port_slices(&(1..=65535), 1024).unwrap().len(), 1024);
    assert_eq!(port_slices(&(10..=11), 3), None);
    let all: Vec<u16> = port_slices(&(100..=200), 7)
        .unwrap()
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(all, (100..=200).collect::<Vec<_>>());
}

#[test]
fn flags_override_the_file() {
    let file = format!(
        "listen = [\"127.0.0.2:3478\"]\nrelay_ports = \"50000-50009\"\nrealm = \"file\"\nworkers = 2\n\
         max_lifetime_secs = 100\nlog_level = \"warn\"\n[peers]\nallow = [\"10.0.0.0/8\"]\n{}",
        minimal()
    );
    let c = with_file(
        &[
            "--listen",
            "127.0.0.3:1",
            "--listen",
            "[::1]:2",
            "--relay-ports",
            "60000-60001",
            "--realm",
            "flag",
            "--workers",
            "1",
            "--max-lifetime",
            "50",
            "--log-level",
            "error",
            "--allow-peer",
            "127.0.0.0/8",
        ],
        &file,
    )
    .unwrap();
    assert_eq!(
        c.network.listen,
        vec!["127.0.0.3:1".parse().unwrap(), "[::1]:2".parse().unwrap()]
    );
    assert_eq!(c.network.relay_v4, Some("127.0.0.3".parse().unwrap()));
    assert_eq!(c.network.relay_v6, Some(Ipv6Addr::LOCALHOST));
    assert_eq!(c.network.relay_ports, 60000..=60001);
    assert_eq!(c.reloadable.auth.realm, "flag");
    assert_eq!(c.network.workers, 1);
    assert_eq!(c.reloadable.policy.max_lifetime, Duration::from_secs(50));
    assert_eq!(c.reloadable.logging.level, "error");
    assert_eq!(
        c.reloadable.policy.allow_peers,
        vec!["127.0.0.0/8".parse().unwrap()]
    );
    // Without flags the file's values stand.
    let c = with_file(&[], &file).unwrap();
    assert_eq!(
        (
            c.reloadable.auth.realm.as_str(),
            c.network.workers,
            c.reloadable.logging.level.as_str()
        ),
        ("file", 2, "warn")
    );
}

#[test]
fn user_flag_derives_keys() {
    let c = with_file(&["--user", "a:b:c", "--realm", "r"], &minimal()).unwrap();
    assert_eq!(
        c.reloadable.auth.users.len(),
        1,
        "--user replaces the file's users"
    );
    let u = &c.reloadable.auth.users[0];
    assert_eq!(u.name, "a");
    // The password is everything after the first colon.
    assert_eq!(u.key_md5.unwrap()[..], md5::Md5::digest(b"a:r:b:c")[..]);
    assert_eq!(
        u.key_sha256.unwrap()[..],
        sha2::Sha256::digest(b"a:r:b:c")[..]
    );
    let e = err(with_file(&["--user", "nocolon"], &minimal()));
    assert!(e.starts_with("--user: "), "{e}");
}

#[test]
fn listen_errors_name_the_flag_or_key() {
    let e = err(with_file(&["--listen", "localhost:3478"], &minimal()));
    assert!(
        e.starts_with("--listen: \"localhost:3478\" is not IP:PORT"),
        "{e}"
    );
    let e = err(with_file(&["--listen", "::1:3478"], &minimal()));
    assert!(e.starts_with("--listen: "), "{e}");
    let e = err(with_file(
        &[],
        &format!("listen = [\"127.0.0.1:1\", \"127.0.0.1\"]\n{}", minimal()),
    ));
    assert!(e.starts_with("listen[1]: "), "{e}");
    let e = err(with_file(&[], &format!("listen = []\n{}", minimal())));
    assert!(e.starts_with("listen: at least one"), "{e}");
}

#[test]
fn wildcard_listen_needs_relay_ips() {
    let e = err(with_file(&["--listen", "0.0.0.0:3478"], &minimal()));
    assert!(e.starts_with("relay_ips: "), "{e}");
    let c = with_file(
        &["--listen", "0.0.0.0:3478", "--relay-ip", "192.0.2.1"],
        &minimal(),
    )
    .unwrap();
    assert_eq!(
        c.network.relay_ips(),
        vec!["192.0.2.1".parse::<IpAddr>().unwrap()]
    );
    let e = err(with_file(
        &["--relay-ip", "192.0.2.1", "--relay-ip", "192.0.2.2"],
        &minimal(),
    ));
    assert!(e.starts_with("--relay-ip: at most one"), "{e}");
    let e = err(with_file(
        &[],
        &format!("relay_ips = [\"::1\", \"0.0.0.0\"]\n{}", minimal()),
    ));
    assert!(e.starts_with("relay_ips[1]: "), "{e}");
}

#[test]
fn bad_user_entries_are_named() {
    let text = format!(
        "{}[[users]]\nname = \"bob\"\nkey_md5 = \"xyz\"\n",
        minimal()
    );
    assert_eq!(
        err(with_file(&[], &text)),
        "users[1].key_md5: is not 32 hex digits"
    );
    let text = format!(
        "{}[[users]]\nname = \"bob\"\nkey_sha256 = \"{MD5_A}\"\n",
        minimal()
    );
    assert_eq!(
        err(with_file(&[], &text)),
        "users[1].key_sha256: is not 64 hex digits"
    );
    let text = "[[users]]\nname = \"bob\"\npassword = \"hunter2\"\n";
    assert!(err(with_file(&[], text)).starts_with("users[0].password: "));
    let text = "[[users]]\nname = \"bob\"\n";
    assert!(err(with_file(&[], text)).starts_with("users[0].key_md5: "));
    let text = format!("{}{}", minimal(), minimal());
    assert!(err(with_file(&[], &text)).starts_with("users[1].name: "));
}

#[test]
fn a_file_without_credentials_is_refused() {
    assert!(err(with_file(&[], "realm = \"x\"\n")).starts_with("users/rest_secrets: "));
    // A REST secret alone is enough.
    let c = with_file(&[], "rest_secrets = [\"s\"]\n").unwrap();
    assert!(c.reloadable.auth.users.is_empty() && c.reloadable.auth.demo.is_none());
}

#[test]
fn demo_credentials_without_config_or_credential_flags() {
    let c = Config::from_parts(&args(&[]), None).unwrap();
    let d = c.reloadable.auth.demo.clone().expect("demo credentials");
    assert_eq!(d.user, DEMO_USER);
    assert_eq!(d.password.len(), 20);
    assert_eq!(d.rest_secret.len(), 32);
    assert!(d.password.chars().all(|ch| ch.is_ascii_alphanumeric()));
    assert_eq!(
        c.reloadable.auth.rest_secrets,
        vec![d.rest_secret.as_bytes().to_vec()]
    );
    assert_eq!(c.reloadable.auth.users.len(), 1);
    assert_eq!(c.network.listen, vec![DEFAULT_LISTEN.parse().unwrap()]);
    assert_eq!(c.network.relay_v4, Some(Ipv4Addr::LOCALHOST));
    assert!(c.reloadable.policy.allow_peers.is_empty());
    let other = Config::from_parts(&args(&[]), None)
        .unwrap()
        .reloadable
        .auth
        .demo
        .unwrap();
    assert_ne!(other.password, d.password);
    // Any credential flag turns the demo off.
    let c = Config::from_parts(&args(&["--rest-secret", "s"]), None).unwrap();
    assert!(c.reloadable.auth.demo.is_none() && c.reloadable.auth.users.is_empty());
}

#[test]
fn other_values_are_checked() {
    let cases = [
        ("workers = 0\n", "workers: "),
        ("max_lifetime_secs = 0\n", "max_lifetime_secs: "),
        ("nonce_lifetime_secs = 0\n", "nonce_lifetime_secs: "),
        ("realm = \"\"\n", "realm: "),
        ("log_level = \"loud\"\n", "log_level: "),
        ("rest_secrets = [\"\"]\n", "rest_secrets[0]: "),
        (
            "rest_secret_files = [\"/nonexistent/uturn-secret\"]\n",
            "rest_secret_files[0]: ",
        ),
        ("[peers]\nallow = [\"10.0.0.0/33\"]\n", "peers.allow[0]: "),
        (
            "[quotas]\ntotal_allocations = 0\n",
            "quotas.total_allocations: ",
        ),
        (
            "[rate_limit]\nunauth_burst = 0\n",
            "rate_limit.unauth_burst: ",
        ),
    ];
    for (text, prefix) in cases {
        let e = err(with_file(&[], &format!("{text}{}", minimal())));
        assert!(e.starts_with(prefix), "{text:?} gave {e}");
    }
    let e = err(with_file(&["--deny-peer", "nonsense"], &minimal()));
    assert!(e.starts_with("--deny-peer: "), "{e}");
    let c = with_file(&["--log-level", "uturn=debug,warn"], &minimal()).unwrap();
    assert_eq!(c.reloadable.logging.level, "uturn=debug,warn");
}

/// Found by the `config` fuzz target: a span field filter in `log_level` is
/// a regular expression that tracing compiles to a DFA, and a few hundred
/// bytes of it took half a minute to check. Only `target=level` directives
/// are accepted now, refused before anything is compiled.
#[test]
fn log_level_refuses_span_and_field_filters() {
    for level in [
        "uturn[conn{peer=(a|b)*a(a|b)(a|b)(a|b)(a|b)(a|b)}]=debug",
        "[{x=1}]=trace",
        "uturn[span]=debug",
        "uturn{f=1}=debug",
    ] {
        let text = format!("log_level = {level:?}\n{}", minimal());
        let e = err(with_file(&[], &text));
        assert!(e.starts_with("log_level: "), "{level:?} gave {e}");
        let e = err(with_file(&["--log-level", level], &minimal()));
        assert!(e.starts_with("--log-level: "), "{level:?} gave {e}");
    }
    for level in ["uturn=debug,warn", "uturn::turn=trace", "WARN"] {
        let text = format!("log_level = {level:?}\n{}", minimal());
        assert!(with_file(&[], &text).is_ok(), "{level:?} refused");
    }
}

/// tracing-subscriber's directive parser panics on some multi-byte
/// characters; such a level must be refused, never parsed (the config fuzz
/// target's crash, reduced).
#[test]
fn log_level_refuses_non_ascii_directives() {
    for level in [
        "rr=0,_l,\t\t_l6111/ota,\t\t_l7li\u{a8AA}\u{aAeA}=\u{6e4}#=\u{aAAA}endutoli\u{a8A7}",
        "uturn=dèbug",
        "ünïcode=info",
        "uturn=debug\n",
    ] {
        let text = format!("log_level = {}\n{}", toml::Value::from(level), minimal());
        let e = err(with_file(&[], &text));
        assert!(e.starts_with("log_level: "), "{level:?} gave {e}");
        let e = err(with_file(&["--log-level", level], &minimal()));
        assert!(e.starts_with("--log-level: "), "{level:?} gave {e}");
    }
}

#[test]
fn hex_round_trip() {
    let k: [u8; 16] = unhex(MD5_A).unwrap();
    assert_eq!(hex(&k), MD5_A);
    assert_eq!(unhex::<16>(&MD5_A.to_uppercase()), Some(k));
    assert_eq!(unhex::<16>("0g23456789abcdef0123456789abcdef"), None);
    assert_eq!(strip_newline(b"abc\r\n"), b"abc");
    assert_eq!(strip_newline(b"abc\n\n"), b"abc\n");
}

#[test]
fn example_file_documents_every_key() {
    // Uncomment every `# key = …` line and the sample user, so the parser
    // sees each documented key.
    let text: String = include_str!("../../uturn.example.toml")
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with("[[users]]")
                    || rest
                        .split_once(" = ")
                        .is_some_and(|(k, _)| !k.contains(' ')) =>
            {
                rest
            }
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let f: file::FileConfig = toml::from_str(&text).expect("the example parses");
    assert!(
        f.listen.is_some() && f.relay_ips.is_some() && f.relay_ports.is_some() && f.realm.is_some()
    );
    assert!(f.workers.is_some() && f.max_lifetime_secs.is_some() && f.software.is_some());
    assert!(f.rest_secrets.is_some() && f.rest_secret_files.is_some() && f.offer_sha256.is_some());
    assert!(f.nonce_lifetime_secs.is_some() && f.log_level.is_some() && f.io_backend.is_some());
    assert!(f.peers.is_some() && f.quotas.is_some() && f.rate_limit.is_some());
    assert!(f.log_format.is_some() && f.log_client_details.is_some() && f.metrics.is_some());
    assert!(f.io_batch_wait_usecs.is_some() && f.io_gso.is_some() && f.io_streams.is_some());
    assert!(f.xdp.is_some() && f.xdp_interfaces.is_some());
    assert!(f.xdp_routes.is_some() && f.xdp_generic.is_some());
    assert!(f.listen_tcp.is_some() && f.listen_tls.is_some() && f.tcp.is_some());
    assert!(f.tls_cert.is_some() && f.tls_key.is_some());
    assert!(f.proxy_protocol.is_some() && f.proxy_protocol_from.is_some());
    assert!(
        f.control_socket.is_some()
            && f.drain_timeout_secs.is_some()
            && f.alternate_server.is_some()
    );
    let user = f.users.expect("sample user").into_iter().next().unwrap();
    assert!(user.key_md5.is_some() && user.key_sha256.is_some());
    // The file as shipped holds no credentials, so it is refused as-is.
    let e = err(with_file(&[], include_str!("../../uturn.example.toml")));
    assert!(e.starts_with("users/rest_secrets: "), "{e}");
}

#[test]
fn operations_keys_default_safely() {
    let c = with_file(&[], &minimal()).unwrap();
    assert_eq!(c.operations.log_format, LogFormat::Text);
    assert!(!c.reloadable.logging.client_details);
    assert_eq!(
        c.operations.metrics, None,
        "metrics are off unless asked for"
    );
    assert_eq!(c.operations.control_socket, None);
    assert_eq!(
        c.reloadable.drain.timeout,
        Duration::from_secs(DEFAULT_DRAIN_TIMEOUT_SECS)
    );
    assert_eq!(c.reloadable.drain.alternate_server, None);
    // Flags beat the file.
    let c = with_file(
        &[
            "--log-format",
            "json",
            "--log-client-details",
            "--metrics",
            "[::1]:9000",
            "--drain-timeout",
            "0",
            "--alternate-server",
            "[2001:db8::1]:3478",
        ],
        &format!(
            "log_format = \"text\"\ndrain_timeout_secs = 9\n{}",
            minimal()
        ),
    )
    .unwrap();
    assert_eq!(c.operations.log_format, LogFormat::Json);
    assert!(c.reloadable.logging.client_details);
    assert_eq!(c.operations.metrics, Some("[::1]:9000".parse().unwrap()));
    assert_eq!(c.reloadable.drain.timeout, Duration::ZERO);
    assert_eq!(
        c.reloadable.drain.alternate_server,
        Some("[2001:db8::1]:3478".parse().unwrap())
    );
}

#[test]
fn operations_keys_are_checked() {
    let bad = |line: &str| err(with_file(&[], &format!("{line}\n{}", minimal())));
    assert!(bad("log_format = \"xml\"").starts_with("log_format: "));
    assert!(bad("io_batch_wait_usecs = 10001").starts_with("io_batch_wait_usecs: "));
    assert!(bad("io_streams = \"kqueue\"").starts_with("io_streams: "));
    assert!(bad("xdp = \"on\"").starts_with("xdp: "));
    assert!(bad("xdp = \"auto\"").starts_with("xdp_interfaces: "));
    assert!(bad("xdp_interfaces = [\"eth0/1\"]").starts_with("xdp_interfaces[0]: "));
    assert!(bad("xdp_interfaces = [\"eth0\", \"eth0\"]").starts_with("xdp_interfaces[1]: "));
    assert!(bad("xdp_routes = 0").starts_with("xdp_routes: "));
    assert!(bad("metrics = \"localhost\"").starts_with("metrics: "));
    assert!(bad("drain_timeout_secs = 90000").starts_with("drain_timeout_secs: "));
    assert!(bad("alternate_server = \"0.0.0.0:3478\"").starts_with("alternate_server: "));
    assert!(bad("alternate_server = \"127.0.0.1:3478\"").contains("own listen address"));
    assert!(bad("alternate_server = \"192.0.2.1\"").starts_with("alternate_server: "));
    let long = format!("control_socket = \"/{}\"", "x".repeat(120));
    assert!(bad(&long).starts_with("control_socket: "));
    assert!(
        err(with_file(&["--metrics", "nope"], &minimal())).starts_with("--metrics: "),
        "a flag is named as the flag"
    );
}

fn flags_only(flags: &[&str]) -> Config {
    let mut argv = vec!["--rest-secret", "s"];
    argv.extend_from_slice(flags);
    Config::from_parts(&args(&argv), None).unwrap()
}

#[test]
fn restart_only_keys_keep_their_running_values_and_are_named() {
    let mut running = flags_only(&["--listen", "127.0.0.1:3478", "--relay-ip", "127.0.0.1"]);
    let old = running.clone();
    let new = flags_only(&[
        "--listen",
        "127.0.0.1:3479",
        "--relay-ip",
        "127.0.0.2",
        "--realm",
        "new.realm",
    ]);
    let changed = running.reload(new.clone());
    // TCP follows the UDP addresses unless told otherwise.
    assert_eq!(changed, vec!["listen", "relay_ips", "listen_tcp"]);
    assert_eq!(running.network.listen, old.network.listen);
    assert_eq!(running.network.relay_v4, old.network.relay_v4);
    assert_eq!(
        running.reloadable.auth.realm, "new.realm",
        "reloadable keys take the new value"
    );
    assert_eq!(
        running.restart_only_changes(&new),
        vec!["listen", "relay_ips", "listen_tcp"]
    );
    assert!(running.reload(running.clone()).is_empty());
}

#[test]
fn every_restart_only_key_is_named_in_file_order() {
    let old = flags_only(&["--workers", "1"]);
    let new = flags_only(&[
        "--listen",
        "127.0.0.1:3479",
        "--relay-ip",
        "127.0.0.2",
        "--relay-ports",
        "50000-50999",
        "--workers",
        "2",
        "--listen-tcp",
        "127.0.0.1:3480",
        "--listen-tls",
        "127.0.0.1:5350",
        "--tls-cert",
        &tls_files().0,
        "--tls-key",
        &tls_files().1,
        "--io-backend",
        "syscall",
        "--io-batch-wait",
        "100",
        "--io-gso",
        "false",
        "--io-streams",
        "native",
        "--xdp",
        "auto",
        "--xdp-interface",
        "eth1",
        "--xdp-routes",
        "1000",
        "--xdp-generic",
        "true",
        "--metrics",
        "127.0.0.1:9641",
        "--control-socket",
        "/run/uturn.sock",
        "--log-format",
        "json",
    ]);
    let mut running = old.clone();
    assert_eq!(
        running.reload(new),
        vec![
            "listen",
            "relay_ips",
            "relay_ports",
            "workers",
            "listen_tcp",
            "listen_tls",
            "io_backend",
            "io_batch_wait_usecs",
            "io_gso",
            "io_streams",
            "xdp",
            "xdp_interfaces",
            "xdp_routes",
            "xdp_generic",
            "metrics",
            "control_socket",
            "log_format",
        ]
    );
    assert_eq!(running.network, old.network);
    assert_eq!(running.io, old.io);
    assert_eq!(running.operations, old.operations);
}

#[test]
fn tcp_follows_the_udp_addresses_and_tls_needs_a_certificate() {
    let c = with_file(&["--listen", "127.0.0.1:4000"], &minimal()).unwrap();
    assert_eq!(
        c.streams.listen_tcp,
        vec!["127.0.0.1:4000".parse().unwrap()]
    );
    assert!(c.streams.listen_tls.is_empty());
    assert!(matches!(c.reloadable.tls, Tls::Off));
    let off = with_file(&[], &format!("listen_tcp = []\n{}", minimal())).unwrap();
    assert!(off.streams.listen_tcp.is_empty());

    let e = err(with_file(&["--listen-tls", "127.0.0.1:5349"], &minimal()));
    assert!(
        e.starts_with("tls_cert: listen_tls and listen_dtls need a certificate"),
        "{e}"
    );
    let (cert, key) = tls_files();
    let e = err(with_file(
        &["--listen-tls", "127.0.0.1:5349", "--tls-cert", cert],
        &minimal(),
    ));
    assert!(e.starts_with("tls_key: "), "{e}");
    let e = err(with_file(
        &["--tls-cert", key, "--tls-key", key],
        &minimal(),
    ));
    assert!(
        e.starts_with("--tls-cert: ") && e.contains("no CERTIFICATE"),
        "{e}"
    );
    let c = with_file(
        &[
            "--listen-tls",
            "127.0.0.1:5349",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ],
        &minimal(),
    )
    .unwrap();
    let Tls::Files { identity, .. } = &c.reloadable.tls else {
        panic!("{:?}", c.reloadable.tls);
    };
    assert!(c.reloadable.tls.reload_config().is_some());
    assert!(c
        .summary()
        .contains(&crate::stream::tls::fingerprint_hex(&identity.fingerprint)));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // TCP and TLS on one port cannot be told apart.
    let e = err(with_file(
        &[
            "--listen-tcp",
            "127.0.0.1:5349",
            "--listen-tls",
            "127.0.0.1:5349",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ],
        &minimal(),
    ));
    assert!(
        e.starts_with("listen_tls: 127.0.0.1:5349 is also in listen_tcp"),
        "{e}"
    );
}

#[test]
fn a_key_file_every_user_can_read_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let (cert, key) = tls_files();
    let open = format!("{key}.open");
    std::fs::copy(key, &open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let c = with_file(
        &[
            "--listen-tls",
            "127.0.0.1:5349",
            "--tls-cert",
            cert,
            "--tls-key",
            &open,
        ],
        &minimal(),
    )
    .unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(
        c.warnings[0].starts_with("--tls-key: ")
            && c.warnings[0].contains("readable by every user")
    );
}

#[test]
fn the_bare_start_also_serves_tls_with_a_demo_certificate() {
    let c = Config::from_parts(&args(&[]), None).unwrap();
    assert!(c.reloadable.auth.demo.is_some());
    assert_eq!(
        c.streams.listen_tls,
        vec!["127.0.0.1:5349".parse().unwrap()]
    );
    assert!(matches!(c.reloadable.tls, Tls::Demo));
    assert!(c.reloadable.tls.reload_config().is_none());
    // Port 0 for UDP means port 0 for the demo TLS listener too.
    let c = Config::from_parts(&args(&["--listen", "127.0.0.1:0"]), None).unwrap();
    assert_eq!(c.streams.listen_tls, vec!["127.0.0.1:0".parse().unwrap()]);
    // With credentials it is not a demo: no TLS unless asked for.
    let c = Config::from_parts(&args(&["--rest-secret", "s"]), None).unwrap();
    assert!(c.streams.listen_tls.is_empty());
}

#[test]
fn proxy_protocol_names_a_stream_listener_and_trusted_networks() {
    let e = err(with_file(&["--proxy-protocol", "127.0.0.1:9"], &minimal()));
    assert!(
        e.starts_with("--proxy-protocol: 127.0.0.1:9 is not in listen_tcp"),
        "{e}"
    );
    let e = err(with_file(
        &[
            "--listen",
            "127.0.0.1:4000",
            "--proxy-protocol",
            "127.0.0.1:4000",
        ],
        &minimal(),
    ));
    assert!(e.starts_with("proxy_protocol_from: "), "{e}");
    let c = with_file(
        &[],
        &format!(
            "listen = [\"127.0.0.1:4000\"]\nproxy_protocol = [\"127.0.0.1:4000\"]\n\
             proxy_protocol_from = [\"10.0.0.0/8\"]\n{}",
            minimal()
        ),
    )
    .unwrap();
    assert_eq!(
        c.streams.proxy_protocol,
        vec!["127.0.0.1:4000".parse().unwrap()]
    );
    assert!(c
        .summary()
        .contains("proxy protocol v2: on 127.0.0.1:4000 from 10.0.0.0/8"));
}

#[test]
fn tcp_limits_are_checked() {
    for (text, key) in [
        ("[tcp]\nmax_connections = 0\n", "tcp.max_connections: "),
        (
            "[tcp]\nmax_connections_per_source = 0\n",
            "tcp.max_connections_per_source: ",
        ),
        (
            "[tcp]\nhandshake_timeout_secs = 601\n",
            "tcp.handshake_timeout_secs: ",
        ),
        ("[tcp]\nauth_timeout_secs = 0\n", "tcp.auth_timeout_secs: "),
        ("[tcp]\nsend_queue_bytes = 1000\n", "tcp.send_queue_bytes: "),
        ("[tcp]\nnope = 1\n", "\"test.toml\""),
    ] {
        let e = err(with_file(&[], &format!("{}{text}", minimal())));
        assert!(e.starts_with(key), "{text:?}: {e}");
    }
    let c = with_file(
        &[],
        &format!(
            "{}[tcp]\nmax_connections = 7\nsend_queue_bytes = 70000\n",
            minimal()
        ),
    )
    .unwrap();
    assert_eq!(
        (c.streams.max_connections, c.streams.send_queue_bytes),
        (7, 70000)
    );
}
