//! Configuration (TOML file + command-line flags), validated up front.
//!
//! Every value comes from a flag, else the file, else a built-in default.
//! Validation happens once, before anything is bound, and every error names
//! the key (or flag) it is about.
//!
//! A `Config` is made of sections, each built and checked by its own
//! function in its own file. Whether a setting can change on reload is a
//! matter of which section holds it: `Network`, `Io` and `Operations` need
//! sockets or threads and stay as they are until a restart; everything else
//! is in `Reloadable`, which a reload replaces whole.

mod auth;
mod file;
mod flags;
mod io;
mod logging;
mod network;
mod operations;
mod policy;
mod streams;
mod summary;
mod xdp;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) use self::auth::user_from_password;
pub use self::auth::{
    hex, Auth, DemoCredentials, DEFAULT_NONCE_LIFETIME_SECS, DEFAULT_REALM, DEMO_USER,
};
pub use self::io::{
    Io, IoBackendChoice, StreamIoChoice, DEFAULT_IO_BACKEND, DEFAULT_IO_BATCH_WAIT_USECS,
    DEFAULT_IO_GSO, DEFAULT_IO_STREAMS,
};
pub use self::logging::{Logging, DEFAULT_LOG_LEVEL};
pub use self::network::{port_slices, Network, DEFAULT_LISTEN, DEFAULT_RELAY_PORTS};
pub use self::operations::{Drain, Operations, DEFAULT_DRAIN_TIMEOUT_SECS};
pub use self::policy::{
    Policy, DEFAULT_MAX_LIFETIME_SECS, DEFAULT_UNAUTH_BURST, DEFAULT_UNAUTH_PER_SECOND,
};
pub use self::streams::{
    Streams, Tls, DEFAULT_AUTH_TIMEOUT_SECS, DEFAULT_HANDSHAKE_TIMEOUT_SECS,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_SOURCE, DEFAULT_SEND_QUEUE_BYTES,
    DEMO_TLS_PORT,
};
pub use self::xdp::{Xdp, XdpChoice, DEFAULT_XDP_ROUTES};
use crate::auth::Authenticator;
pub use crate::logging::LogFormat;
use crate::policy::PeerPolicy;
use crate::turn::Settings;
use file::FileConfig;
pub use flags::RunArgs;

/// The longest lifetime, nonce lifetime or drain a key may ask for.
const MAX_LIFETIME_LIMIT_SECS: u64 = 86_400;

/// A start-up error a person reads: always names the key or flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("{key}: cannot read {path:?}: {source}")]
    Read {
        key: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path:?}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The validated configuration of one server process.
#[derive(Clone, Debug)]
pub struct Config {
    /// Restart-only: listen and relay addresses, relay ports, workers.
    pub network: Network,
    /// Restart-only: TCP and TLS listeners and their limits.
    pub streams: Streams,
    /// Restart-only: the io backend and its batching.
    pub io: Io,
    /// Restart-only: log format, metrics listener, control socket.
    pub operations: Operations,
    /// What a reload puts in force.
    pub reloadable: Reloadable,
    /// Things that work but an operator should fix (logged at start and
    /// reload, printed by check-config).
    pub warnings: Vec<String>,
}

/// The settings a reload may change, as one value.
#[derive(Clone, Debug)]
pub struct Reloadable {
    pub auth: Auth,
    pub policy: Policy,
    pub logging: Logging,
    pub drain: Drain,
    /// The TLS certificate for new connections.
    pub tls: Tls,
}

/// Which source a value came from, for naming it in errors.
#[derive(Copy, Clone)]
enum Src {
    Flag(&'static str),
    File(&'static str),
}

impl Src {
    fn key(self) -> String {
        match self {
            Src::Flag(k) | Src::File(k) => k.to_string(),
        }
    }
    /// `listen[2]` for a file list, `--listen` for a flag.
    fn item(self, i: usize) -> String {
        match self {
            Src::Flag(k) => k.to_string(),
            Src::File(k) => format!("{k}[{i}]"),
        }
    }
}

/// A flag if given, else the file's value, else nothing.
fn pick<T>(
    flag: Option<T>,
    flag_name: &'static str,
    file: Option<T>,
    key: &'static str,
) -> Option<(T, Src)> {
    match (flag, file) {
        (Some(v), _) => Some((v, Src::Flag(flag_name))),
        (None, Some(v)) => Some((v, Src::File(key))),
        (None, None) => None,
    }
}

/// A repeatable flag replaces the file's list when given at least once.
fn pick_list<T>(
    flag: &[T],
    flag_name: &'static str,
    file: Option<Vec<T>>,
    key: &'static str,
) -> Option<(Vec<T>, Src)>
where
    T: Clone,
{
    let flag = (!flag.is_empty()).then(|| flag.to_vec());
    pick(flag, flag_name, file, key)
}

impl Config {
    /// Builds the configuration from flags and the `--config` file, if any.
    /// Only the flags and the file are read: whether this host offers what
    /// they ask for (io_uring, the addresses) is found out at start-up.
    pub fn load(args: &RunArgs) -> Result<Config, ConfigError> {
        match &args.config {
            Some(path) => {
                let text = read_file(path)?;
                Config::from_parts(args, Some((path, &text)))
            }
            None => Config::from_parts(args, None),
        }
    }

    /// Builds the configuration from flags and a file's text (`path` only
    /// names it in errors).
    pub fn from_parts(args: &RunArgs, file: Option<(&Path, &str)>) -> Result<Config, ConfigError> {
        let f = match file {
            Some((path, text)) => parse_file(path, text)?,
            None => FileConfig::default(),
        };
        let mut warnings = Vec::new();
        // Sections are built in the order of the keys they hold, which is
        // the order errors are found in.
        let network = Network::build(args, &f)?;
        let auth = Auth::build(args, &f, file.is_some(), &mut warnings)?;
        let demo = auth.demo.is_some();
        let streams = Streams::build(args, &f, &network.listen, demo)?;
        let secure: Vec<_> = streams
            .listen_tls
            .iter()
            .chain(&streams.listen_dtls)
            .copied()
            .collect();
        let tls = Tls::build(args, &f, &secure, demo, &mut warnings)?;
        let policy = Policy::build(args, &f)?;
        let logging = Logging::build(args, &f)?;
        let io = Io::build(args, &f)?;
        let operations = Operations::build(args, &f)?;
        let drain = Drain::build(args, &f, &network.listen)?;
        Ok(Config {
            network,
            streams,
            io,
            operations,
            reloadable: Reloadable {
                auth,
                policy,
                logging,
                drain,
                tls,
            },
            warnings,
        })
    }

    /// Only the `control_socket` key of a file (for `uturn reload`, which
    /// need not be able to read the server's secret files).
    pub fn control_socket_of(path: &Path) -> Result<Option<PathBuf>, ConfigError> {
        let text = read_file(path)?;
        Ok(parse_file(path, &text)?.control_socket)
    }

    /// The restart-only keys whose value differs in `new`, named as in the
    /// file: what a reload to `new` leaves as it is.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        // Every section is named, so that a new one is either reloadable or
        // compared here.
        let Config {
            network,
            streams,
            io,
            operations,
            reloadable: _,
            warnings: _,
        } = self;
        let mut keys = network.changed_keys(&new.network);
        keys.extend(streams.changed_keys(&new.streams));
        keys.extend(io.changed_keys(&new.io));
        keys.extend(operations.changed_keys(&new.operations));
        keys
    }

    /// Puts in force the reloadable settings of `new` (and its warnings);
    /// the restart-only sections stay as they are. Returns the restart-only
    /// keys `new` changed, which wait for a restart.
    pub fn reload(&mut self, new: Config) -> Vec<&'static str> {
        let ignored = self.restart_only_changes(&new);
        self.reloadable = new.reloadable;
        self.warnings = new.warnings;
        ignored
    }
}

impl Reloadable {
    /// The state machine's part, as it takes it: the credentials (checked
    /// with nonces made from `nonce_key`) and the peer policy (which refuses
    /// `own`, the relay's own addresses, unless allowed) as shared snapshots.
    pub fn relay_settings(&self, nonce_key: [u8; 32], own: &[IpAddr]) -> Settings {
        let p = &self.policy;
        Settings {
            auth: Arc::new(Authenticator::new(self.auth.auth_config(), nonce_key)),
            policy: Arc::new(PeerPolicy::new(
                p.allow_peers.clone(),
                p.deny_peers.clone(),
                own,
            )),
            quotas: p.quotas,
            max_lifetime: p.max_lifetime,
            software: p.software.clone(),
            unauth_rate: p.unauth_per_second,
            unauth_burst: p.unauth_burst,
        }
    }
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        key: "--config".into(),
        path: path.to_path_buf(),
        source,
    })
}

fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str::<FileConfig>(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}

/// "IP:PORT" (IPv6 in brackets), or an error naming `key`.
fn socket_addr(s: &str, key: String) -> Result<SocketAddr, ConfigError> {
    s.trim().parse().map_err(|_| {
        invalid(
            key,
            format!("{s:?} is not IP:PORT (write IPv6 as [ADDR]:PORT)"),
        )
    })
}

/// A list of "IP:PORT" listen addresses: each parsed, none multicast, none
/// twice; errors name the item (`listen[2]`, or the flag).
fn socket_addrs(strs: &[String], src: Src) -> Result<Vec<SocketAddr>, ConfigError> {
    let mut out = Vec::with_capacity(strs.len());
    for (i, s) in strs.iter().enumerate() {
        let addr = socket_addr(s, src.item(i))?;
        if addr.ip().is_multicast() {
            return Err(invalid(
                src.item(i),
                format!("{addr} is a multicast address"),
            ));
        }
        if out.contains(&addr) {
            return Err(invalid(src.item(i), format!("{addr} is listed twice")));
        }
        out.push(addr);
    }
    Ok(out)
}

/// Text for a key such as `realm` or `software`: not empty, at most
/// `max_chars` characters, no control characters.
pub(crate) fn check_text(
    s: &str,
    max_chars: usize,
    key: impl Into<String>,
) -> Result<(), ConfigError> {
    if s.is_empty() {
        return Err(invalid(key, "cannot be empty"));
    }
    if s.chars().count() > max_chars {
        return Err(invalid(key, format!("longer than {max_chars} characters")));
    }
    if s.chars().any(char::is_control) {
        return Err(invalid(key, "contains control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
