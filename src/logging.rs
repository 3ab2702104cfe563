//! Log output (text or JSON on standard error), a level that a reload can
//! change, and redaction of who is talking to whom.
//!
//! SECURITY.md: usernames and client or peer addresses reach the log only
//! when the operator turns `log_client_details` on. Code that logs them
//! wraps them in `redact`, which reads one process-wide flag (set at start-up
//! and on reload); control-path events only, never per packet.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::turn::{Event, Observer};

/// How log lines are written.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

static CLIENT_DETAILS: AtomicBool = AtomicBool::new(false);

/// Lets usernames and addresses through `redact` (true) or not.
pub fn set_client_details(on: bool) {
    CLIENT_DETAILS.store(on, Ordering::Relaxed);
}

pub fn client_details() -> bool {
    CLIENT_DETAILS.load(Ordering::Relaxed)
}

/// Shows `value` only when client details are allowed in logs.
pub fn redact<T: fmt::Display>(value: T) -> Redacted<T> {
    Redacted(value)
}

/// A username as text (lossy for the odd non-UTF-8 byte), redacted unless allowed.
pub fn redact_user(name: &[u8]) -> Redacted<String> {
    Redacted(String::from_utf8_lossy(name).into_owned())
}

pub struct Redacted<T>(T);

impl<T: fmt::Display> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if client_details() {
            self.0.fmt(f)
        } else {
            f.write_str("<redacted>")
        }
    }
}

/// Writes a shard's relay events to the log, redacted. A refused quota is
/// something an operator gets asked about, so it is logged at info; the
/// rest of an allocation's life is debug.
pub struct RelayLog;

impl Observer for RelayLog {
    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::AllocationCreated {
                user,
                client,
                relay,
            } => tracing::debug!(
                user = %redact_user(user),
                client = %redact(client),
                relay = %relay,
                "allocation created"
            ),
            Event::AllocationEnded { user, client, why } => tracing::debug!(
                user = %redact_user(user),
                client = %redact(client),
                why,
                "allocation ended"
            ),
            Event::QuotaReached {
                quota_id,
                client,
                quota,
                limit,
                code,
            } => tracing::info!(
                user = %redact_user(quota_id),
                client = %redact(client),
                quota,
                limit,
                code,
                "allocation refused: quota reached"
            ),
            Event::PeerRefused { peer, why } => tracing::debug!(
                peer = %redact(peer),
                reason = ?why,
                "peer refused by policy"
            ),
        }
    }
}

/// Changes the log filter after start-up (reload).
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    /// Set by `--log-level` or RUST_LOG: the file's `log_level` does not apply.
    pinned: Option<&'static str>,
}

impl LogControl {
    /// Applies the configuration file's `log_level`, unless a flag or
    /// RUST_LOG chose the level at start-up. Returns what was done, for the log.
    pub fn set_level(&self, level: &str) -> Result<String, String> {
        if let Some(by) = self.pinned {
            return Ok(format!("log level kept: set by {by} at start-up"));
        }
        let filter = EnvFilter::try_new(level).map_err(|e| format!("log_level {level:?}: {e}"))?;
        self.handle
            .reload(filter)
            .map_err(|e| format!("cannot change the log level: {e}"))?;
        Ok(format!("log level {level}"))
    }
}

/// True when `s` is something tracing-subscriber's directive parser can be
/// given safely: printable ASCII only (it panics on some multi-byte
/// characters).
pub fn plain_directives(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

/// Installs the global subscriber. `flag_level` is `--log-level`; it beats
/// RUST_LOG, which beats the file's `level`.
pub fn init(format: LogFormat, flag_level: Option<&str>, level: &str) -> LogControl {
    let env = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let (filter, pinned) = match (flag_level, env) {
        (Some(l), _) => (EnvFilter::new(l), Some("--log-level")),
        (None, Some(env)) if !plain_directives(&env) => {
            eprintln!("uturn: ignoring RUST_LOG={env:?}: only printable ASCII directives");
            (EnvFilter::new(level), None)
        }
        (None, Some(env)) => match EnvFilter::try_new(&env) {
            Ok(f) => (f, Some("RUST_LOG")),
            Err(e) => {
                eprintln!("uturn: ignoring RUST_LOG={env:?}: {e}");
                (EnvFilter::new(level), None)
            }
        },
        (None, None) => (EnvFilter::new(level), None),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .init(),
        LogFormat::Text => {
            use std::io::IsTerminal;
            registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(std::io::stderr().is_terminal())
                        .with_writer(std::io::stderr),
                )
                .init()
        }
    }
    LogControl { handle, pinned }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_follows_the_flag() {
        // The only test that touches the process-wide flag.
        set_client_details(false);
        assert_eq!(redact("198.51.100.7:5000").to_string(), "<redacted>");
        assert_eq!(redact_user(b"alice").to_string(), "<redacted>");
        set_client_details(true);
        assert_eq!(redact("198.51.100.7:5000").to_string(), "198.51.100.7:5000");
        assert_eq!(redact_user(b"alice").to_string(), "alice");
        set_client_details(false);
    }
}
