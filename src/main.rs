//! The `uturn` binary: serve, `derive-key`, `check-config`, `tune`.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;

use uturn::cli::{derive_key_snippet, CheckConfigArgs, Cli, Command, ControlArgs, DeriveKeyArgs};
use uturn::config::{Config, RunArgs};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for a configuration, usage or start-up error (as clap uses).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::DeriveKey(a)) => derive_key(a),
        Some(Command::CheckConfig(a)) => check_config(a),
        Some(Command::Reload(a)) => control(a, "reload"),
        Some(Command::Status(a)) => control(a, "status"),
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
    let logging = &cfg.reloadable.logging;
    let log = uturn::logging::init(
        cfg.operations.log_format,
        args.log_level.as_deref(),
        &logging.level,
    );
    uturn::logging::set_client_details(logging.client_details);
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    match uturn::server::run(&cfg, &args, Some(log)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "uturn stopped");
            eprintln!("uturn: error: {e}");
            if e.is_start_up_refusal() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
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
            for w in &cfg.warnings {
                println!("warning: {w}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("config error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// `uturn reload` and `uturn status`: one request on the control socket.
fn control(a: ControlArgs, request: &str) -> ExitCode {
    let path = match (a.socket, a.config) {
        (Some(p), _) => p,
        (None, Some(file)) => match Config::control_socket_of(&file) {
            Ok(socket) => match socket {
                Some(p) => p,
                None => {
                    eprintln!(
                            "uturn {request}: {} sets no control_socket; send SIGHUP to the server instead (systemctl reload uturn)",
                            file.display()
                        );
                    return ExitCode::from(EXIT_CONFIG);
                }
            },
            Err(e) => {
                eprintln!("config error: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        (None, None) => {
            eprintln!(
                "uturn {request}: give --socket PATH or --config FILE (which names control_socket)"
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match uturn::server::ask_control_socket(&path, request) {
        Ok(reply) => {
            if let Some(ok) = reply.strip_prefix("ok ") {
                println!("{ok}");
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "uturn {request}: {}",
                    reply.strip_prefix("error ").unwrap_or(&reply)
                );
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!(
                "uturn {request}: cannot reach the server at {}: {e} (is uturn running with this control_socket?)",
                path.display()
            );
            ExitCode::FAILURE
        }
    }
}
