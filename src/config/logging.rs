//! How much is logged and whether it may name clients (`log_level`,
//! `log_client_details`). Reloadable; the line format, set up once with the
//! subscriber, is with `Operations`.

use super::file::FileConfig;
use super::{invalid, pick, ConfigError, RunArgs, Src};

pub const DEFAULT_LOG_LEVEL: &str = "info";

#[derive(Clone, Debug)]
pub struct Logging {
    /// A level or `target=level` directives.
    pub level: String,
    /// Usernames and client/peer addresses may appear in logs.
    pub client_details: bool,
}

impl Logging {
    pub(super) fn build(args: &RunArgs, f: &FileConfig) -> Result<Logging, ConfigError> {
        let (level, src) = pick(
            args.log_level.clone(),
            "--log-level",
            f.log_level.clone(),
            "log_level",
        )
        .unwrap_or_else(|| (DEFAULT_LOG_LEVEL.to_string(), Src::File("log_level")));
        check_log_level(&level, src.key())?;
        Ok(Logging {
            level,
            client_details: args.log_client_details || f.log_client_details.unwrap_or(false),
        })
    }
}

fn check_log_level(s: &str, key: String) -> Result<(), ConfigError> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let is_level = LEVELS.iter().any(|l| l.eq_ignore_ascii_case(s));
    // Directive syntax (`uturn=debug,warn`) is accepted for those who need it,
    // but not span or field filters (`[span{field=value}]`): their values are
    // regular expressions compiled to a DFA, which a few hundred bytes can
    // make take minutes and much memory (found by the config fuzz target).
    // Only printable ASCII reaches the filter parser: targets are module
    // paths, and tracing-subscriber's parser panics on some multi-byte
    // characters (found by the config fuzz target), which on a reload
    // would stop the server.
    let is_directive = s.contains('=')
        && !s.contains(['[', '{'])
        && crate::logging::plain_directives(s)
        && tracing_subscriber::EnvFilter::try_new(s).is_ok();
    if is_level || is_directive {
        Ok(())
    } else {
        Err(invalid(key, format!("{s:?} is not one of trace, debug, info, warn, error, off (or a filter like uturn=debug, without span or field filters)")))
    }
}
