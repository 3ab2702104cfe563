//! `uturn tune`: flags and what each subcommand prints.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::check::{self, RelayNeeds, Row, Status};
use super::profile::{self, Profile, ProfileError, DEFAULT_PROFILE};
use super::sysctl::{self, Reading, SysctlTree};
use crate::config::{Config, ConfigError, RunArgs};

/// Exit status when everything checked is as the profile wants.
const EXIT_OK: u8 = 0;
/// Exit status when something is off.
const EXIT_OFF: u8 = 1;
/// Exit status for a usage error (as clap uses).
const EXIT_USAGE: u8 = 2;

/// `uturn tune`: profiles are built in (`uturn tune list`) and live in
/// tuning/profiles/ of the source tree.
#[derive(Debug, Args)]
pub struct TuneArgs {
    #[command(subcommand)]
    pub command: TuneCommand,
}

#[derive(Debug, Subcommand)]
pub enum TuneCommand {
    /// Print each setting's current and recommended value and say what is off;
    /// exit status 0 when all is well, 1 when something is off, 2 on a usage error.
    #[command(
        long_about = "Print a table of every setting of the profile: its current \
        value, the recommended one (\">= N\" for a minimum, where more is fine, else an exact \
        value) and a status: ok, LOW, DIFFERENT, ABSENT (the kernel lacks a key the profile \
        needs, as in most containers: run the check on the host), \"absent (optional)\" \
        (not counted), UNREADABLE. Then uturn's own needs: the soft open-file limit against \
        the relay port range, the ephemeral port range against the relay port range, and \
        net.core.rmem_max against the listener buffer uturn asks for. The relay port range \
        and workers come from --config (else uturn's defaults), overridden by --relay-ports \
        and --workers.\n\n\
        Exit status: 0 when nothing is off, 1 when something is, 2 on a usage error."
    )]
    Check(CheckArgs),
    /// Print this host's values of the profile's keys as a sysctl -p file, to save
    /// before applying a profile and revert with `sysctl -e -p FILE`.
    #[command(
        long_about = "Print this host's current values of the profile's keys as a \
        sysctl -p file. Save it before applying a profile; `sysctl -e -p FILE` puts the \
        values back, and `uturn tune check --profile-file FILE` confirms that they are. \
        Keys this kernel lacks are written as comments."
    )]
    Current(ProfileArgs),
    /// Print, as a sysctl -p file, only the settings that are off, raising
    /// minimums without lowering anything the host already has above them.
    #[command(
        long_about = "Print, as a sysctl -p file, only the settings of the profile \
        that are off. A [min] value is raised to the profile's value, number by number, \
        and never lowered: `sysctl -p` on the profile itself would also lower settings the \
        host has above it (systemd, for one, sets fs.nr_open and fs.file-max far higher). \
        Exact values are set as the profile says. Keys this kernel lacks are left out, as \
        comments."
    )]
    Plan(ProfileArgs),
    /// List the built-in profiles.
    List,
    /// Print a built-in profile (a sysctl -p file).
    Show {
        /// Profile name, as `uturn tune list` prints it.
        #[arg(value_name = "NAME")]
        name: String,
    },
}

/// Which profile, and where the sysctls are.
#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// Built-in profile to use: edge-1g, edge-10g or edge-25g (see
    /// `uturn tune list`). [default: edge-10g]
    #[arg(long, value_name = "NAME", conflicts_with = "profile_file")]
    pub profile: Option<String>,

    /// A profile file of your own instead (see `help` for the text shown).
    #[arg(
        long,
        value_name = "PATH",
        help = "A profile file of your own instead, in the format of tuning/profiles/*.conf \
                (every setting preceded by a \"# [min] reason\" or \"# [exact] reason\" line)"
    )]
    pub profile_file: Option<PathBuf>,

    /// Directory read instead of /proc/sys; key a.b.c is the file DIR/a/b/c (for tests).
    #[arg(long, value_name = "DIR", hide = true, default_value = sysctl::DEFAULT_ROOT)]
    pub sysctl_root: PathBuf,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub profile: ProfileArgs,

    /// uturn's configuration file: its relay_ports, workers and listen addresses decide
    /// how many open files uturn needs and which ports the ephemeral range must avoid.
    /// [default: uturn's built-in defaults, relay ports 49152-65535]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Relay port range to check against, overriding --config, as uturn's own
    /// --relay-ports flag does. [default: from --config, else 49152-65535]
    #[arg(long, value_name = "LOW-HIGH")]
    pub relay_ports: Option<String>,

    /// Worker count to check against, overriding --config. [default: from --config,
    /// else the number of CPUs available]
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// Check the open-file limit of this running process (uturn's, say) rather than
    /// the limit `uturn tune check` itself runs with, which is the calling shell's.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
}

/// A usage error: `uturn tune` prints it and exits with status 2.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    #[error("unknown profile {name:?}; known profiles: {known}")]
    UnknownProfile { name: String, known: String },
    #[error("cannot read profile file {}: {source}", path.display())]
    ReadProfile { path: PathBuf, source: io::Error },
    #[error("profile file {}: {source}", path.display())]
    BadProfile { path: PathBuf, source: ProfileError },
    #[error("built-in profile {name}: {source}")]
    BadBuiltIn {
        name: &'static str,
        source: ProfileError,
    },
    #[error("config error: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot read the open-file limit of process {pid}: {source}")]
    Pid { pid: u32, source: io::Error },
}

fn unknown_profile(name: &str) -> TuneError {
    TuneError::UnknownProfile {
        name: name.to_string(),
        known: profile::embedded_names(),
    }
}

/// Runs a `uturn tune` subcommand; prints to standard output, errors to
/// standard error.
pub fn run(args: TuneArgs) -> ExitCode {
    let result = match args.command {
        TuneCommand::Check(a) => check_cmd(&a),
        TuneCommand::Current(a) => current_cmd(&a),
        TuneCommand::Plan(a) => plan_cmd(&a),
        TuneCommand::List => list_cmd(),
        TuneCommand::Show { name } => show_cmd(&name),
    };
    match result {
        Ok((text, code)) => {
            // Not print!, which panics when the reader has gone (`| head`).
            let mut stdout = io::stdout().lock();
            if stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
                .is_err()
            {
                return ExitCode::from(EXIT_OFF);
            }
            ExitCode::from(code)
        }
        Err(e) => {
            eprintln!("uturn: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// What a subcommand prints and its exit status, or a usage error.
type Outcome = Result<(String, u8), TuneError>;

/// A profile and how to name it in output.
struct Chosen {
    label: String,
    /// For suggesting the same choice in follow-up commands.
    flag: String,
    profile: Profile,
}

fn choose(a: &ProfileArgs) -> Result<Chosen, TuneError> {
    if let Some(path) = &a.profile_file {
        let text = std::fs::read_to_string(path).map_err(|source| TuneError::ReadProfile {
            path: path.clone(),
            source,
        })?;
        let profile = profile::parse(&text).map_err(|source| TuneError::BadProfile {
            path: path.clone(),
            source,
        })?;
        return Ok(Chosen {
            label: path.display().to_string(),
            flag: format!("--profile-file {}", path.display()),
            profile,
        });
    }
    let name = a.profile.as_deref().unwrap_or(DEFAULT_PROFILE);
    let embedded = profile::embedded(name).ok_or_else(|| unknown_profile(name))?;
    let profile = profile::parse(embedded.text).map_err(|source| TuneError::BadBuiltIn {
        name: embedded.name,
        source,
    })?;
    Ok(Chosen {
        label: format!("{name} (built in)"),
        flag: format!("--profile {name}"),
        profile,
    })
}

fn check_cmd(a: &CheckArgs) -> Outcome {
    let chosen = choose(&a.profile)?;
    let tree = SysctlTree::new(&a.profile.sysctl_root);
    let run_args = RunArgs {
        config: a.config.clone(),
        relay_ports: a.relay_ports.clone(),
        workers: a.workers,
        ..RunArgs::default()
    };
    let cfg = Config::load(&run_args)?;
    let needs = RelayNeeds::from_config(&cfg);
    let limit = match a.pid {
        Some(pid) => {
            sysctl::process_fd_limit(pid).map_err(|source| TuneError::Pid { pid, source })?
        }
        None => sysctl::own_fd_limit(),
    };

    let sysctl_rows: Vec<Row> = chosen
        .profile
        .settings
        .iter()
        .map(|s| check::setting_row(s, &tree.read(&s.key)))
        .collect();
    let own_rows = vec![
        check::fd_row(limit, &needs),
        check::overlap_row(
            &tree.read("net.ipv4.ip_local_port_range"),
            &tree.read("net.ipv4.ip_local_reserved_ports"),
            &needs,
        ),
        check::rcvbuf_row(&tree.read("net.core.rmem_max")),
    ];

    let mut out = String::new();
    let _ = writeln!(
        out,
        "profile {}, sysctls from {}",
        chosen.label,
        tree.root().display()
    );
    let all: Vec<&Row> = sysctl_rows.iter().chain(&own_rows).collect();
    let w_key = all.iter().map(|r| r.key.len()).max().unwrap_or(0).max(3);
    let w_cur = all
        .iter()
        .map(|r| r.current.len())
        .max()
        .unwrap_or(0)
        .max(7);
    let w_rec = all.iter().map(|r| r.recommended.len()).max().unwrap_or(0);
    let line = |out: &mut String, k: &str, c: &str, r: &str, s: &str| {
        let _ = writeln!(out, "{k:<w_key$}  {c:<w_cur$}  {r:<w_rec$}  {s}");
    };
    let row =
        |out: &mut String, r: &Row| line(out, &r.key, &r.current, &r.recommended, r.status.label());
    line(&mut out, "key", "current", "recommended", "status");
    for r in &sysctl_rows {
        row(&mut out, r);
    }
    let source = match &a.config {
        Some(p) => format!("from {}", p.display()),
        None => "uturn's defaults".to_string(),
    };
    let _ = writeln!(
        out,
        "\nuturn's needs (relay ports {}-{}, {} workers, {} listen address{}; {source}{}):",
        needs.ports.start(),
        needs.ports.end(),
        needs.workers,
        needs.listen,
        if needs.listen == 1 { "" } else { "es" },
        match a.pid {
            Some(pid) => format!("; open-file limit of process {pid}"),
            None => String::new(),
        }
    );
    for r in &own_rows {
        row(&mut out, r);
    }

    let off: Vec<&&Row> = all.iter().filter(|r| r.status.is_off()).collect();
    if !off.is_empty() {
        let _ = writeln!(out, "\noff:");
        for r in &off {
            let _ = writeln!(
                out,
                "  {} is {}, wanted {}: {}",
                r.key, r.current, r.recommended, r.reason
            );
        }
    }
    let total = all.len();
    if off.is_empty() {
        let _ = writeln!(out, "\nall {total} checks ok");
        Ok((out, EXIT_OK))
    } else {
        let mut counts: Vec<(Status, usize)> = Vec::new();
        for r in &off {
            match counts.iter_mut().find(|(s, _)| *s == r.status) {
                Some((_, n)) => *n += 1,
                None => counts.push((r.status, 1)),
            }
        }
        let kinds = counts
            .iter()
            .map(|(s, n)| format!("{n} {}", s.label()))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "\n{} of {total} checks off ({kinds}); `uturn tune plan {}` prints the sysctl changes, \
             tuning/README.md the rest",
            off.len(),
            chosen.flag
        );
        Ok((out, EXIT_OFF))
    }
}

fn current_cmd(a: &ProfileArgs) -> Outcome {
    let chosen = choose(a)?;
    let tree = SysctlTree::new(&a.sysctl_root);
    let mut out = String::new();
    let mut code = EXIT_OK;
    let _ = writeln!(
        out,
        "# Values on this host of the keys of profile {}, read from {} by `uturn tune current`.\n\
         # Put them back with: sysctl -e -p FILE\n\
         # Confirm they are back with: uturn tune check --profile-file FILE",
        chosen.label,
        tree.root().display()
    );
    for s in &chosen.profile.settings {
        match tree.read(&s.key) {
            Reading::Value(v) if v.is_empty() => {
                let _ = writeln!(out, "# {}: empty on this host", s.key);
            }
            Reading::Value(v) => {
                let _ = writeln!(
                    out,
                    "# [exact] value before tuning\n{} = {}",
                    s.written_key(),
                    v.join(" ")
                );
            }
            Reading::Absent => {
                let _ = writeln!(out, "# {}: absent on this host", s.key);
            }
            Reading::Unreadable(kind) => {
                eprintln!("uturn: cannot read {}: {kind}", s.key);
                let _ = writeln!(out, "# {}: unreadable ({kind})", s.key);
                code = EXIT_OFF;
            }
        }
    }
    Ok((out, code))
}

fn plan_cmd(a: &ProfileArgs) -> Outcome {
    let chosen = choose(a)?;
    let tree = SysctlTree::new(&a.sysctl_root);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Changes that bring this host ({}) up to profile {}, by `uturn tune plan`.\n\
         # Minimums are raised, never lowered. Save the current values first:\n\
         #   uturn tune current {} > before.conf\n\
         # then apply with `sysctl -e -p FILE`, or persist as /etc/sysctl.d/60-uturn.conf.",
        tree.root().display(),
        chosen.label,
        chosen.flag
    );
    let mut changes = 0;
    for s in &chosen.profile.settings {
        let reading = tree.read(&s.key);
        let status = check::compare(s, &reading);
        match (&reading, status) {
            (_, Status::Ok) => {}
            (_, Status::AbsentOptional) | (_, Status::Absent) => {
                let _ = writeln!(out, "# {}: absent on this host, left out", s.key);
            }
            (Reading::Unreadable(kind), _) => {
                let _ = writeln!(out, "# {}: unreadable ({kind}), left out", s.key);
            }
            (Reading::Value(have), _) => {
                changes += 1;
                let _ = writeln!(
                    out,
                    "# {} {} (now {})\n{} = {}",
                    s.bound.marker(),
                    s.reason,
                    have.join(" "),
                    s.written_key(),
                    check::raised(s, have).join(" ")
                );
            }
            (Reading::Absent, _) => {}
        }
    }
    if changes == 0 {
        let _ = writeln!(out, "# Nothing to change.");
    }
    Ok((out, EXIT_OK))
}

fn list_cmd() -> Outcome {
    let mut out = String::new();
    for p in profile::PROFILES {
        let summary = profile::parse(p.text)
            .map(|parsed| parsed.summary)
            .unwrap_or_default();
        let default = if p.name == DEFAULT_PROFILE {
            " [default]"
        } else {
            ""
        };
        let _ = writeln!(out, "{summary}{default}");
    }
    Ok((out, EXIT_OK))
}

fn show_cmd(name: &str) -> Outcome {
    match profile::embedded(name) {
        Some(p) => Ok((p.text.to_string(), EXIT_OK)),
        None => Err(unknown_profile(name)),
    }
}
