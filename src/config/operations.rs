//! How the process is watched and steered: the log line format, the
//! metrics listener and the control socket (`log_format`, `metrics`,
//! `control_socket`; restart-only, each set up once at start-up), and how it
//! drains (`drain_timeout_secs`, `alternate_server`; reloadable).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::file::FileConfig;
use super::{invalid, pick, socket_addr, ConfigError, RunArgs, Src, MAX_LIFETIME_LIMIT_SECS};
use crate::logging::LogFormat;

pub const DEFAULT_DRAIN_TIMEOUT_SECS: u64 = 60;

/// The log format and the listeners beside the relay: kept as they are by
/// a reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operations {
    pub log_format: LogFormat,
    /// Where `/metrics` is served (off when None).
    pub metrics: Option<SocketAddr>,
    /// The unix socket `uturn reload` talks to (off when None).
    pub control_socket: Option<PathBuf>,
}

impl Operations {
    pub(super) fn build(args: &RunArgs, f: &FileConfig) -> Result<Operations, ConfigError> {
        let (format_str, src) = pick(
            args.log_format.clone(),
            "--log-format",
            f.log_format.clone(),
            "log_format",
        )
        .unwrap_or_else(|| ("text".to_string(), Src::File("log_format")));
        let log_format = match format_str.trim().to_ascii_lowercase().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => {
                return Err(invalid(
                    src.key(),
                    format!("{format_str:?} is not one of text, json"),
                ))
            }
        };
        let metrics = match pick(
            args.metrics.clone(),
            "--metrics",
            f.metrics.clone(),
            "metrics",
        ) {
            Some((s, src)) => Some(socket_addr(&s, src.key())?),
            None => None,
        };
        let control_socket = match pick(
            args.control_socket.clone(),
            "--control-socket",
            f.control_socket.clone(),
            "control_socket",
        ) {
            Some((path, src)) => {
                // sun_path holds 108 bytes, the terminating NUL included.
                if path.as_os_str().is_empty() || path.as_os_str().len() > 107 {
                    return Err(invalid(
                        src.key(),
                        format!("{path:?} is empty or longer than the 107 bytes a unix socket path may have"),
                    ));
                }
                Some(path)
            }
            None => None,
        };
        Ok(Operations {
            log_format,
            metrics,
            control_socket,
        })
    }

    /// The keys whose value differs in `new`, named as in the file (every
    /// field is named in the pattern, so that a new one cannot be missed).
    pub fn changed_keys(&self, new: &Operations) -> Vec<&'static str> {
        let Operations {
            log_format,
            metrics,
            control_socket,
        } = self;
        let mut keys = Vec::new();
        if *metrics != new.metrics {
            keys.push("metrics");
        }
        if *control_socket != new.control_socket {
            keys.push("control_socket");
        }
        if *log_format != new.log_format {
            keys.push("log_format");
        }
        keys
    }
}

/// What SIGTERM/SIGINT does.
#[derive(Clone, Debug)]
pub struct Drain {
    /// Longest drain.
    pub timeout: Duration,
    /// Offered in ALTERNATE-SERVER (300) to new allocations while draining.
    pub alternate_server: Option<SocketAddr>,
}

impl Drain {
    /// `listen`: the server's own addresses, which cannot be the alternate.
    pub(super) fn build(
        args: &RunArgs,
        f: &FileConfig,
        listen: &[SocketAddr],
    ) -> Result<Drain, ConfigError> {
        let (secs, src) = pick(
            args.drain_timeout,
            "--drain-timeout",
            f.drain_timeout_secs,
            "drain_timeout_secs",
        )
        .unwrap_or((DEFAULT_DRAIN_TIMEOUT_SECS, Src::File("drain_timeout_secs")));
        if secs > MAX_LIFETIME_LIMIT_SECS {
            return Err(invalid(
                src.key(),
                format!("{secs} is more than {MAX_LIFETIME_LIMIT_SECS} seconds"),
            ));
        }
        let alternate_server = match pick(
            args.alternate_server.clone(),
            "--alternate-server",
            f.alternate_server.clone(),
            "alternate_server",
        ) {
            Some((s, src)) => {
                let addr = socket_addr(&s, src.key())?;
                if addr.ip().is_unspecified() || addr.ip().is_multicast() || addr.port() == 0 {
                    return Err(invalid(
                        src.key(),
                        format!("{addr} cannot be given to clients as another server"),
                    ));
                }
                if listen.contains(&addr) {
                    return Err(invalid(
                        src.key(),
                        format!("{addr} is this server's own listen address"),
                    ));
                }
                Some(addr)
            }
            None => None,
        };
        Ok(Drain {
            timeout: Duration::from_secs(secs),
            alternate_server,
        })
    }
}
