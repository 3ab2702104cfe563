//! The generator's command lines: the relay flags recovered from this
//! process's argv, each run's exact argv printed (shell-quoted) and parsed
//! with the generator's own flag definitions.

use std::ffi::OsString;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use super::CompareArgs;
use crate::allocate::AllocateArgs;
use crate::relay::RelayArgs;

/// A parser for the generator's own command lines: the exact argv that is
/// reported is the one parsed and run.
#[derive(Parser, Debug)]
#[command(name = "uturn-loadgen")]
pub(super) struct GeneratorCli {
    #[command(subcommand)]
    command: GeneratorCommand,
}

#[derive(Subcommand, Debug)]
pub(super) enum GeneratorCommand {
    Relay(RelayArgs),
    Allocate(AllocateArgs),
}

/// Relay flags that `compare` sets itself for every system.
const OVERRIDDEN: &[&str] = &[
    "server",
    "user",
    "realm",
    "rest-secret",
    "no-auth",
    "server-pid",
    // The servers use a certificate made for the comparison.
    "tls-ca",
    "tls-sni",
];

/// The relay flags as the user typed them after `compare` (minus the ones
/// set per system), recovered from this process's argv with the relay
/// scenario's own flag definitions, so that every run's generator command
/// line can be printed and re-run exactly.
pub(super) fn user_relay_flags() -> Vec<String> {
    let argv: Vec<String> = std::env::args().collect();
    relay_flags_in(&argv)
}

/// The relay flags after the `compare` token of `argv`, minus [`OVERRIDDEN`].
fn relay_flags_in(argv: &[String]) -> Vec<String> {
    let relay_cmd = RelayArgs::augment_args(clap::Command::new("relay"));
    let compare_cmd = CompareArgs::augment_args(clap::Command::new("compare"));
    let Some(start) = argv.iter().position(|a| a == "compare") else {
        return Vec::new();
    };
    let find = |cmd: &clap::Command, tok: &str| -> Option<(String, bool)> {
        let (long, short) = if let Some(l) = tok.strip_prefix("--") {
            (Some(l.split('=').next().unwrap_or(l).to_string()), None)
        } else if let Some(s) = tok.strip_prefix('-') {
            (None, s.chars().next())
        } else {
            return None;
        };
        cmd.get_arguments().find_map(|a| {
            let hit = match (&long, short) {
                (Some(l), _) => a.get_long() == Some(l.as_str()),
                (None, Some(s)) => a.get_short() == Some(s),
                _ => false,
            };
            hit.then(|| {
                (
                    a.get_long().unwrap_or("").to_string(),
                    a.get_action().takes_values(),
                )
            })
        })
    };
    let mut out = Vec::new();
    let mut i = start + 1;
    while i < argv.len() {
        let tok = &argv[i];
        i += 1;
        if tok == "--" {
            break;
        }
        let inline_value = tok.starts_with("--") && tok.contains('=')
            || (tok.starts_with('-') && !tok.starts_with("--") && tok.len() > 2);
        if let Some((long, takes)) = find(&relay_cmd, tok) {
            let keep = !OVERRIDDEN.contains(&long.as_str());
            if keep {
                out.push(tok.clone());
            }
            if takes && !inline_value && i < argv.len() {
                if keep {
                    out.push(argv[i].clone());
                }
                i += 1;
            }
        } else {
            // Compare's own flags and the global ones: skip, with their value.
            let takes = match find(&compare_cmd, tok) {
                Some((_, t)) => t,
                None => tok == "--cpu",
            };
            if takes && !inline_value {
                i += 1;
            }
        }
    }
    out
}

pub(super) fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

pub(super) fn command_line(program: &str, args: &[String]) -> String {
    std::iter::once(program.to_string())
        .chain(args.iter().map(|a| shell_quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses a generator command line (without the program name).
pub(super) fn parse_generator(argv: &[String]) -> anyhow::Result<GeneratorCommand> {
    let full: Vec<OsString> = std::iter::once(OsString::from("uturn-loadgen"))
        .chain(argv.iter().map(OsString::from))
        .collect();
    let matches = GeneratorCli::command()
        .try_get_matches_from(full)
        .map_err(|e| anyhow::anyhow!("generator flags: {e}"))?;
    Ok(GeneratorCli::from_arg_matches(&matches)?.command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("--flows"), "--flows");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn relay_flags_are_recovered() {
        let argv: Vec<String> = [
            "uturn-loadgen",
            "--cpu",
            "1",
            "compare",
            "--rounds",
            "3",
            "--flows",
            "100",
            "--server=127.0.0.1:9",
            "--payload=120",
            "--json",
            "--user",
            "a:b",
            "--scenario",
            "relay",
            "--rate",
            "max",
            "--gso",
            "--uturn-arg=--log-level=warn",
            "--out",
            "x.md",
            "--duration",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            relay_flags_in(&argv),
            [
                "--flows",
                "100",
                "--payload=120",
                "--rate",
                "max",
                "--gso",
                "--duration",
                "2"
            ]
        );
        // And they parse as a relay command line.
        let mut gen = vec!["relay".to_string()];
        gen.extend(relay_flags_in(&argv));
        assert!(matches!(
            parse_generator(&gen).unwrap(),
            GeneratorCommand::Relay(r) if r.flows == 100 && r.gso
        ));
    }

    #[test]
    fn transport_is_passed_on_and_tls_checks_are_not() {
        let argv: Vec<String> = [
            "uturn-loadgen",
            "compare",
            "--transport",
            "tls",
            "--tls-ca",
            "ca.pem",
            "--tls-sni=localhost",
            "--flows",
            "3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            relay_flags_in(&argv),
            ["--transport", "tls", "--flows", "3"]
        );
    }
}
