//! The `uturn` binary: serve, `derive-key`, `check-config`, `tune`.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use uturn::config::{
    derive_key_snippet, CheckConfigArgs, Cli, Command, Config, DeriveKeyArgs, RunArgs,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for a configuration or usage error (as clap uses).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::DeriveKey(a)) => derive_key(a),
        Some(Command::CheckConfig(a)) => check_config(a),
        Some(Command::Tune(a)) => uturn::tune::run(a),
        None => serve(cli.run),
    }
}

fn serve(args: RunArgs) -> ExitCode {
    let cfg = match Config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("config error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(&args, &cfg);
    match uturn::server::run(&cfg) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "uturn stopped");
            eprintln!("uturn: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--log-level` beats RUST_LOG, which beats the file's `log_level`.
fn init_logging(args: &RunArgs, cfg: &Config) {
    let env = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let filter = match (&args.log_level, env) {
        (None, Some(env)) => EnvFilter::try_new(&env).unwrap_or_else(|e| {
            eprintln!("uturn: ignoring RUST_LOG={env:?}: {e}");
            EnvFilter::new(&cfg.log_level)
        }),
        _ => EnvFilter::new(&cfg.log_level),
    };
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

fn derive_key(a: DeriveKeyArgs) -> ExitCode {
    let password = match a.password {
        Some(p) => p,
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprint!("password for {:?} (echoed): ", a.user);
                let _ = std::io::stderr().flush();
            }
            let mut line = String::new();
            if let Err(e) = stdin.lock().read_line(&mut line) {
                eprintln!("uturn: cannot read the password from standard input: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
            let trimmed = line.strip_suffix('\n').unwrap_or(&line);
            trimmed.strip_suffix('\r').unwrap_or(trimmed).to_string()
        }
    };
    match derive_key_snippet(&a.user, &a.realm, &password) {
        Ok(snippet) => {
            print!("{snippet}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("config error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn check_config(a: CheckConfigArgs) -> ExitCode {
    let args = RunArgs {
        config: Some(a.config.clone()),
        ..RunArgs::default()
    };
    match Config::load(&args) {
        Ok(cfg) => {
            println!("config OK: {}\n{}", a.config.display(), cfg.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("config error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}
