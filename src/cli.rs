//! The `uturn` command line: serving (the run flags are
//! [`RunArgs`], since the configuration file mirrors
//! them) and the subcommands, with the one helper only a subcommand needs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{check_text, hex, user_from_password, ConfigError, RunArgs};

#[derive(Debug, Parser)]
#[command(
    name = "uturn",
    version,
    about = "uturn: a TURN relay (RFC 8656) over UDP",
    long_about = "uturn: a TURN relay (RFC 8656) over UDP.\n\n\
        Run without a subcommand to serve. Every run flag overrides the matching key of the \
        --config file, and a repeatable flag replaces the file's whole list. With neither \
        --config nor --user/--rest-secret, uturn serves on 127.0.0.1:3478 with a demo user and \
        a REST secret generated at start-up (printed on standard output).",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a users entry (name, key_md5, key_sha256) for the configuration file.
    DeriveKey(DeriveKeyArgs),
    /// Validate a configuration file and print a summary; exit status 2 on error.
    CheckConfig(CheckConfigArgs),
    /// Ask the running server to reload its configuration file, and print the
    /// outcome: exit 0 when reloaded, 1 when the new file was rejected (the old
    /// configuration stays) or the server could not be reached. Needs
    /// `control_socket`; without it, send SIGHUP (`systemctl reload uturn`).
    Reload(ControlArgs),
    /// Print the running server's live allocations, drain state and reload counts.
    Status(ControlArgs),
    /// Compare this host's sysctls and limits with a tuning profile (tuning/README.md).
    Tune(crate::tune::TuneArgs),
}

#[derive(Debug, Args)]
pub struct ControlArgs {
    /// The server's control socket.
    #[arg(long, value_name = "PATH", conflicts_with = "config")]
    pub socket: Option<PathBuf>,
    /// Read the control socket's path (`control_socket`) from this configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DeriveKeyArgs {
    /// User name (as the client sends it in USERNAME).
    #[arg(long, value_name = "NAME")]
    pub user: String,
    /// Realm the keys are bound to; must equal `realm` in the configuration.
    #[arg(long, value_name = "REALM")]
    pub realm: String,
    /// Password. If omitted, one line is read from standard input (safer: it
    /// stays out of the shell history and the process list).
    #[arg(long, value_name = "PW")]
    pub password: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// Configuration file to check.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

/// The `[[users]]` snippet printed by `uturn derive-key`.
pub fn derive_key_snippet(user: &str, realm: &str, password: &str) -> Result<String, ConfigError> {
    check_text(realm, 127, "--realm")?;
    let u = user_from_password(user, realm, password, "--user")?;
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    Ok(format!(
        "# keys for realm {}: set `realm` to exactly this value\n[[users]]\nname = {}\nkey_md5 = \"{}\"\nkey_sha256 = \"{}\"\n",
        quote(realm),
        quote(&u.name),
        hex(&u.key_md5.unwrap_or_default()),
        hex(&u.key_sha256.unwrap_or_default()),
    ))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_shape() {
        Cli::command().debug_assert();
        let cli =
            Cli::try_parse_from(["uturn", "derive-key", "--user", "u", "--realm", "r"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::DeriveKey(DeriveKeyArgs { password: None, .. }))
        ));
        let cli = Cli::try_parse_from(["uturn", "check-config", "--config", "x.toml"]).unwrap();
        assert!(matches!(cli.command, Some(Command::CheckConfig(_))));
        assert!(Cli::try_parse_from(["uturn", "--workers", "x"]).is_err());
        assert!(Cli::try_parse_from(["uturn", "--listen", "127.0.0.1:1", "derive-key"]).is_err());
    }
}
