//! `uturn tune`: the real binary against fake sysctl trees in a temporary
//! directory (`--sysctl-root`), and once against the host's /proc/sys.
//!
//! The open-file check uses the real limit of the process. The fake-tree
//! runs pass a configuration with a 100-port relay range and 2 workers, so
//! uturn needs fewer than 200 descriptors: any soft limit a machine starts
//! with (1024 or more) meets it. The test of a low limit lowers the child's
//! soft limit with `ulimit -S -n`, which never needs privileges.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use uturn::tune::profile::{self, Profile, PROFILES};
use uturn::tune::sysctl::{parse_limits, FdLimit};

const SMALL_CONFIG: &str =
    "relay_ports = \"60000-60099\"\nworkers = 2\nrest_secrets = [\"tune-test-secret\"]\n";

/// A temporary directory laid out like /proc/sys, removed on drop.
struct Fake {
    dir: PathBuf,
}

impl Fake {
    fn new(what: &str) -> Fake {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("uturn-tune-{}-{n}-{what}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sys")).expect("create the fake tree");
        std::fs::write(dir.join("uturn.toml"), SMALL_CONFIG).expect("write the config");
        Fake { dir }
    }

    /// A tree holding exactly the values of `profile`.
    fn meeting(what: &str, profile: &Profile) -> Fake {
        let f = Fake::new(what);
        for s in &profile.settings {
            f.set(&s.key, &s.value_text());
        }
        f
    }

    fn root(&self) -> PathBuf {
        self.dir.join("sys")
    }

    fn config(&self) -> PathBuf {
        self.dir.join("uturn.toml")
    }

    fn file(&self, key: &str) -> PathBuf {
        self.root().join(key.replace('.', "/"))
    }

    /// Writes `value` as /proc does: numbers separated by tabs, a newline.
    fn set(&self, key: &str, value: &str) {
        let path = self.file(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let text = value.split_whitespace().collect::<Vec<_>>().join("\t");
        std::fs::write(path, format!("{text}\n")).unwrap();
    }

    fn get(&self, key: &str) -> String {
        let text = std::fs::read_to_string(self.file(key)).unwrap();
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    fn remove(&self, key: &str) {
        std::fs::remove_file(self.file(key)).unwrap();
    }

    /// `uturn tune <sub> --sysctl-root <tree> <extra…>`.
    fn tune(&self, sub: &str, extra: &[&str]) -> Run {
        let root = self.root();
        let mut args = vec!["tune", sub, "--sysctl-root", root.to_str().unwrap()];
        args.extend_from_slice(extra);
        uturn(&args)
    }

    /// `tune check` with the small configuration.
    fn check(&self, extra: &[&str]) -> Run {
        let config = self.config();
        let mut args = vec!["--config", config.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.tune("check", &args)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The table row of `key` (the line that starts with it).
    fn row(&self, key: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| {
                l.strip_prefix(key)
                    .is_some_and(|rest| rest.starts_with(' '))
            })
            .unwrap_or_else(|| panic!("no row for {key} in:\n{}", self.stdout))
    }

    fn explain(&self) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn uturn(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_uturn"))
        .args(args)
        .output()
        .expect("run uturn");
    Run::from(out)
}

fn parsed(name: &str) -> Profile {
    profile::parse(profile::embedded(name).expect("built-in profile").text).expect("parses")
}

#[test]
fn a_tree_that_meets_each_profile_passes() {
    for p in PROFILES {
        let profile = parsed(p.name);
        let fake = Fake::meeting(p.name, &profile);
        let run = fake.check(&["--profile", p.name]);
        assert_eq!(run.code, Some(0), "{}: {}", p.name, run.explain());
        for s in &profile.settings {
            assert!(run.row(&s.key).ends_with(" ok"), "{}", run.row(&s.key));
        }
        assert!(run.row("RLIMIT_NOFILE (soft)").ends_with(" ok"));
        let total = profile.settings.len() + 3;
        assert!(
            run.stdout.contains(&format!("all {total} checks ok")),
            "{}",
            run.explain()
        );
    }
}

#[test]
fn the_default_profile_is_edge_10g() {
    let fake = Fake::meeting("default", &parsed("edge-10g"));
    let run = fake.check(&[]);
    assert_eq!(run.code, Some(0), "{}", run.explain());
    assert!(
        run.stdout.starts_with("profile edge-10g"),
        "{}",
        run.explain()
    );
    // The 1 GbE tree is below the 10 GbE minimums.
    let small = Fake::meeting("default-small", &parsed("edge-1g"));
    assert_eq!(small.check(&[]).code, Some(1));
}

#[test]
fn one_low_value_fails_and_is_named() {
    let fake = Fake::meeting("low", &parsed("edge-10g"));
    fake.set("net.core.rmem_default", "212992");
    let run = fake.check(&["--profile", "edge-10g"]);
    assert_eq!(run.code, Some(1), "{}", run.explain());
    let row = run.row("net.core.rmem_default");
    assert!(row.contains("212992"), "{row}");
    assert!(row.contains(">= 1048576"), "{row}");
    assert!(row.ends_with(" LOW"), "{row}");
    assert!(
        run.stdout
            .contains("net.core.rmem_default is 212992, wanted >= 1048576"),
        "{}",
        run.explain()
    );
    assert!(run.stdout.contains("1 of "), "{}", run.explain());
    assert!(
        run.stdout.contains("checks off (1 LOW)"),
        "{}",
        run.explain()
    );
    // Every other row is fine.
    let lows = run.stdout.lines().filter(|l| l.ends_with(" LOW")).count();
    assert_eq!(lows, 1, "{}", run.explain());
}

#[test]
fn minimums_compare_every_number_and_exact_values_must_match() {
    let fake = Fake::meeting("shapes", &parsed("edge-10g"));
    // More than the minimum is fine, in every position.
    fake.set("net.core.rmem_max", "67108864");
    fake.set("net.ipv4.udp_mem", "999999 999999 999999");
    assert_eq!(fake.check(&[]).code, Some(0));
    // One number of three below its minimum is not.
    fake.set("net.ipv4.udp_mem", "999999 1000 999999");
    let run = fake.check(&[]);
    assert_eq!(run.code, Some(1), "{}", run.explain());
    assert!(run.row("net.ipv4.udp_mem").ends_with(" LOW"));
    fake.set("net.ipv4.udp_mem", "999999 999999 999999");
    // An exact value above the profile's is different, not better.
    fake.set("net.core.busy_poll", "50");
    let run = fake.check(&[]);
    assert_eq!(run.code, Some(1), "{}", run.explain());
    assert!(run.row("net.core.busy_poll").ends_with(" DIFFERENT"));
}

#[test]
fn absent_keys_count_unless_the_profile_marks_them_optional() {
    let fake = Fake::meeting("absent", &parsed("edge-10g"));
    fake.remove("net.netfilter.nf_conntrack_max");
    let run = fake.check(&[]);
    assert_eq!(run.code, Some(0), "{}", run.explain());
    assert!(run
        .row("net.netfilter.nf_conntrack_max")
        .ends_with(" absent (optional)"));

    fake.remove("net.core.netdev_budget");
    let run = fake.check(&[]);
    assert_eq!(run.code, Some(1), "{}", run.explain());
    assert!(run.row("net.core.netdev_budget").ends_with(" ABSENT"));
}

#[test]
fn local_ports_inside_the_relay_range_are_an_overlap() {
    let fake = Fake::meeting("overlap", &parsed("edge-10g"));
    fake.set("net.ipv4.ip_local_port_range", "32768 60999");
    // The small configuration relays on 60000-60099.
    let run = fake.check(&[]);
    assert_eq!(run.code, Some(1), "{}", run.explain());
    assert!(run
        .row("ip_local_port_range vs relay")
        .contains("outside 60000-60099"));
    assert!(run
        .row("ip_local_port_range vs relay")
        .ends_with(" OVERLAP"));
    // Without a configuration the default relay range applies.
    let root = fake.root();
    let run = uturn(&["tune", "check", "--sysctl-root", root.to_str().unwrap()]);
    assert_eq!(run.code, Some(1), "{}", run.explain());
    let row = run.row("ip_local_port_range vs relay");
    assert!(row.contains("outside 49152-65535"), "{row}");
    assert!(row.ends_with(" OVERLAP"), "{row}");
    // Reserving the relay ports keeps the kernel from handing them out.
    fake.set("net.ipv4.ip_local_reserved_ports", "3478,60000-60099");
    let run = fake.check(&[]);
    assert!(run.row("ip_local_port_range vs relay").ends_with(" ok"));
    // The profile's exact range still differs.
    assert!(run
        .row("net.ipv4.ip_local_port_range")
        .ends_with(" DIFFERENT"));
    fake.remove("net.ipv4.ip_local_reserved_ports");
    // --relay-ports overrides the file, as it does for the server.
    let run = fake.check(&["--relay-ports", "10000-10099"]);
    assert!(run.row("ip_local_port_range vs relay").ends_with(" ok"));
}

#[test]
fn a_low_open_file_limit_is_reported() {
    let fake = Fake::meeting("nofile", &parsed("edge-10g"));
    let (root, config) = (fake.root(), fake.config());
    // Lowering one's own soft limit is always allowed.
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -S -n 150 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_uturn"))
        .args(["tune", "check", "--sysctl-root"])
        .arg(&root)
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run uturn under sh");
    let run = Run::from(out);
    assert_eq!(run.code, Some(1), "{}", run.explain());
    let row = run.row("RLIMIT_NOFILE (soft)");
    assert!(row.contains(" 150 "), "{row}");
    // 100 ports + 2 listeners + 2 workers' overhead + the process's.
    let need = 100 + 2 + 2 * uturn::tune::check::FDS_PER_WORKER + uturn::tune::check::FDS_BASE;
    assert!(row.contains(&format!(">= {need}")), "{row}");
    assert!(row.ends_with(" LOW"), "{row}");
}

#[test]
fn pid_checks_another_process_limit() {
    let fake = Fake::meeting("pid", &parsed("edge-10g"));
    let own = std::process::id().to_string();
    let run = fake.check(&["--pid", &own]);
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let shown = match parse_limits(&limits).expect("a Max open files line") {
        FdLimit::Finite(n) => n.to_string(),
        FdLimit::Unlimited => "unlimited".to_string(),
    };
    let row = run.row("RLIMIT_NOFILE (soft)");
    assert!(row.contains(&format!(" {shown} ")), "{row} vs {shown}");
    let gone = fake.check(&["--pid", "4294967295"]);
    assert_eq!(gone.code, Some(2), "{}", gone.explain());
    assert!(
        gone.stderr.contains("process 4294967295"),
        "{}",
        gone.explain()
    );
}

#[test]
fn usage_errors_exit_2() {
    let fake = Fake::new("usage");
    let run = fake.check(&["--profile", "edge-100g"]);
    assert_eq!(run.code, Some(2), "{}", run.explain());
    assert!(
        run.stderr.contains("edge-1g, edge-10g, edge-25g"),
        "{}",
        run.explain()
    );
    let missing = fake.dir.join("no-such-profile.conf");
    let run = fake.check(&["--profile-file", missing.to_str().unwrap()]);
    assert_eq!(run.code, Some(2), "{}", run.explain());
    assert!(
        run.stderr.contains(missing.to_str().unwrap()),
        "{}",
        run.explain()
    );
    let bad = fake.dir.join("bad.conf");
    std::fs::write(&bad, "net.core.rmem_max = 1\n").unwrap();
    let run = fake.check(&["--profile-file", bad.to_str().unwrap()]);
    assert_eq!(run.code, Some(2), "{}", run.explain());
    assert!(run.stderr.contains("line 1"), "{}", run.explain());
    let run = fake.tune("check", &["--relay-ports", "9-1"]);
    assert_eq!(run.code, Some(2), "{}", run.explain());
    assert!(run.stderr.contains("--relay-ports"), "{}", run.explain());
    let run = fake.tune("check", &["--profile", "edge-1g", "--profile-file", "x"]);
    assert_eq!(run.code, Some(2), "{}", run.explain());
    let run = uturn(&["tune", "show", "edge-100g"]);
    assert_eq!(run.code, Some(2), "{}", run.explain());
}

/// What `sysctl -p FILE` would do to the fake tree.
fn apply(fake: &Fake, file_text: &str) {
    let p = profile::parse(file_text).expect("the output is a valid profile");
    for s in &p.settings {
        fake.set(&s.key, &s.value_text());
    }
}

#[test]
fn saved_values_put_the_tree_back() {
    let fake = Fake::meeting("current", &parsed("edge-1g"));
    fake.set("net.ipv4.ip_local_port_range", "32768 60999");
    fake.set("net.ipv4.udp_mem", "1 2 3");
    fake.remove("net.netfilter.nf_conntrack_max");
    let saved = fake.tune("current", &["--profile", "edge-10g"]);
    assert_eq!(saved.code, Some(0), "{}", saved.explain());
    assert!(saved
        .stdout
        .contains("\nnet.ipv4.ip_local_port_range = 32768 60999\n"));
    assert!(saved.stdout.contains("\nnet.ipv4.udp_mem = 1 2 3\n"));
    assert!(saved
        .stdout
        .contains("# net.netfilter.nf_conntrack_max: absent on this host"));

    // Tune, then revert with the saved file: every value is back.
    let before: Vec<(String, String)> = parsed("edge-10g")
        .settings
        .iter()
        .filter(|s| s.key != "net.netfilter.nf_conntrack_max")
        .map(|s| (s.key.clone(), fake.get(&s.key)))
        .collect();
    apply(&fake, profile::embedded("edge-10g").unwrap().text);
    fake.remove("net.netfilter.nf_conntrack_max");
    assert_eq!(fake.check(&[]).code, Some(0));
    apply(&fake, &saved.stdout);
    for (key, value) in &before {
        assert_eq!(&fake.get(key), value, "{key}");
    }
    let saved_file = fake.dir.join("saved.conf");
    std::fs::write(&saved_file, &saved.stdout).unwrap();
    let run = fake.check(&["--profile-file", saved_file.to_str().unwrap()]);
    let off: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with("  ")).collect();
    // Only uturn's own overlap check fails: the saved range overlaps.
    assert_eq!(run.code, Some(1), "{}", run.explain());
    assert!(
        off.iter()
            .all(|l| l.contains("ip_local_port_range vs relay")),
        "{off:?}"
    );
}

#[test]
fn plan_raises_what_is_low_and_lowers_nothing() {
    let fake = Fake::meeting("plan", &parsed("edge-10g"));
    fake.set("net.core.rmem_max", "212992");
    fake.set("fs.file-max", "9223372036854775807");
    fake.set("net.ipv4.udp_mem", "100 999999999 100");
    fake.set("net.ipv4.ip_local_port_range", "32768 60999");
    let plan = fake.tune("plan", &["--profile", "edge-10g"]);
    assert_eq!(plan.code, Some(0), "{}", plan.explain());
    let p = profile::parse(&plan.stdout).expect("the plan is a valid profile");
    let keys: Vec<&str> = p.settings.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "net.core.rmem_max",
            "net.ipv4.udp_mem",
            "net.ipv4.ip_local_port_range"
        ]
    );
    assert_eq!(p.settings[1].value_text(), "196608 999999999 393216");
    apply(&fake, &plan.stdout);
    assert_eq!(fake.get("fs.file-max"), "9223372036854775807");
    let run = fake.check(&[]);
    assert_eq!(run.code, Some(0), "{}", run.explain());
    // Nothing left to do.
    let again = fake.tune("plan", &[]);
    assert!(
        again.stdout.contains("# Nothing to change."),
        "{}",
        again.explain()
    );
}

#[test]
fn list_and_show_print_the_built_in_profiles() {
    let list = uturn(&["tune", "list"]);
    assert_eq!(list.code, Some(0));
    for p in PROFILES {
        assert!(
            list.stdout.contains(&format!("{}: ", p.name)),
            "{}",
            list.stdout
        );
        let show = uturn(&["tune", "show", p.name]);
        assert_eq!(show.code, Some(0));
        assert_eq!(show.stdout, p.text);
        let on_disk = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tuning/profiles")
            .join(format!("{}.conf", p.name));
        assert_eq!(std::fs::read_to_string(on_disk).unwrap(), p.text);
    }
    assert!(list.stdout.contains("edge-10g: ") && list.stdout.contains("[default]"));
}

#[test]
fn the_host_gets_a_row_for_every_key() {
    // Whatever this machine's settings are, the check runs and reports.
    for p in PROFILES {
        let run = uturn(&["tune", "check", "--profile", p.name]);
        assert!(
            matches!(run.code, Some(0) | Some(1)),
            "{}: {}",
            p.name,
            run.explain()
        );
        for s in &parsed(p.name).settings {
            let row = run.row(&s.key);
            assert!(row.contains(&s.value_text()), "{row}");
        }
        for key in [
            "RLIMIT_NOFILE (soft)",
            "ip_local_port_range vs relay",
            "rmem_max vs listener buffer",
        ] {
            run.row(key);
        }
    }
}
