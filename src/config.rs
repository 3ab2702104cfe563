//! Configuration (TOML file + command-line flags), validated up front.
//!
//! Every value comes from a flag, else the file, else a built-in default.
//! Validation happens once, before anything is bound, and every error names
//! the key (or flag) it is about.

mod file;
mod flags;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::auth::{derive_key, AuthConfig, Authenticator, PasswordAlgorithm, StaticUser};
pub use crate::logging::LogFormat;
use crate::policy::{PeerPolicy, Quotas};
use crate::turn::{Settings, TurnConfig};

use file::FileConfig;
pub use flags::RunArgs;

/// Defaults, shared by `--help`, the example file and the code.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3478";
pub const DEFAULT_RELAY_PORTS: &str = "49152-65535";
pub const DEFAULT_REALM: &str = "uturn.local";
pub const DEFAULT_MAX_LIFETIME_SECS: u64 = 3600;
pub const DEFAULT_NONCE_LIFETIME_SECS: u64 = 600;
pub const DEFAULT_UNAUTH_PER_SECOND: u32 = 20;
pub const DEFAULT_UNAUTH_BURST: u32 = 40;
pub const DEFAULT_LOG_LEVEL: &str = "info";
pub const DEFAULT_IO_BACKEND: &str = "auto";
pub const DEFAULT_DRAIN_TIMEOUT_SECS: u64 = 60;
pub const DEFAULT_IO_BATCH_WAIT_USECS: u64 = 0;
pub const DEFAULT_IO_GSO: bool = true;
const MAX_IO_BATCH_WAIT_USECS: u64 = 10_000;
/// Name of the user created when no credentials are configured.
pub const DEMO_USER: &str = "demo";
const MAX_WORKERS: usize = 1024;
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

/// The `io_backend` setting.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum IoBackendChoice {
    /// io_uring when the start-up probe finds it usable, else syscall.
    Auto,
    /// io_uring; start-up fails when it is unavailable.
    Uring,
    /// The portable epoll + recvmmsg/sendmmsg backend.
    Syscall,
}

impl IoBackendChoice {
    fn parse(s: &str) -> Option<IoBackendChoice> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(IoBackendChoice::Auto),
            "uring" => Some(IoBackendChoice::Uring),
            "syscall" => Some(IoBackendChoice::Syscall),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            IoBackendChoice::Auto => "auto",
            IoBackendChoice::Uring => "uring",
            IoBackendChoice::Syscall => "syscall",
        }
    }
}

/// Credentials generated at start-up when none are configured (lab use).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoCredentials {
    pub user: String,
    pub password: String,
    pub rest_secret: String,
}

/// The validated configuration of one server process.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    pub relay_v4: Option<Ipv4Addr>,
    pub relay_v6: Option<Ipv6Addr>,
    pub relay_ports: RangeInclusive<u16>,
    pub realm: String,
    pub workers: usize,
    pub max_lifetime: Duration,
    pub software: Option<String>,
    pub users: Vec<StaticUser>,
    pub rest_secrets: Vec<Vec<u8>>,
    pub offer_sha256: bool,
    pub nonce_lifetime_secs: u64,
    pub allow_peers: Vec<IpNet>,
    pub deny_peers: Vec<IpNet>,
    pub quotas: Quotas,
    pub unauth_per_second: u32,
    pub unauth_burst: u32,
    pub log_level: String,
    pub io_backend: IoBackendChoice,
    /// io_uring: how long a wait under load may hold datagrams to take
    /// several per wake-up (zero: wake for each).
    pub io_batch_wait: Duration,
    /// io_uring: send runs of same-size datagrams to one destination as
    /// one UDP GSO send.
    pub io_gso: bool,
    pub log_format: LogFormat,
    /// Usernames and client/peer addresses may appear in logs.
    pub log_client_details: bool,
    /// Where `/metrics` is served (off when None).
    pub metrics: Option<SocketAddr>,
    /// The unix socket `uturn reload` talks to (off when None).
    pub control_socket: Option<PathBuf>,
    /// Longest drain on SIGTERM/SIGINT.
    pub drain_timeout: Duration,
    /// Offered in ALTERNATE-SERVER (300) to new allocations while draining.
    pub alternate_server: Option<SocketAddr>,
    /// Things that work but an operator should fix (logged at start and
    /// reload, printed by check-config).
    pub warnings: Vec<String>,
    /// Set when the built-in demo credentials are in use.
    pub demo: Option<DemoCredentials>,
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
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    key: "--config".into(),
                    path: path.clone(),
                    source,
                })?;
                Config::from_parts(args, Some((path, &text)))
            }
            None => Config::from_parts(args, None),
        }
    }

    /// Builds the configuration from flags and a file's text (`path` only
    /// names it in errors).
    pub fn from_parts(args: &RunArgs, file: Option<(&Path, &str)>) -> Result<Config, ConfigError> {
        let f = match file {
            Some((path, text)) => {
                toml::from_str::<FileConfig>(text).map_err(|e| ConfigError::Parse {
                    path: path.to_path_buf(),
                    source: Box::new(e),
                })?
            }
            None => FileConfig::default(),
        };
        build(args, f, file.is_some())
    }

    /// Only the `control_socket` key of a file (for `uturn reload`, which
    /// need not be able to read the server's secret files).
    pub fn control_socket_of(path: &Path) -> Result<Option<PathBuf>, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            key: "--config".into(),
            path: path.to_path_buf(),
            source,
        })?;
        let f = toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(e),
        })?;
        Ok(f.control_socket)
    }

    /// The authenticator's settings.
    pub fn auth_config(&self) -> AuthConfig {
        AuthConfig {
            realm: self.realm.clone(),
            users: self.users.clone(),
            rest_secrets: self.rest_secrets.clone(),
            offer_sha256: self.offer_sha256,
            nonce_lifetime_secs: self.nonce_lifetime_secs,
        }
    }

    /// The state machine's restart-only settings for the shard that owns
    /// `ports`.
    pub fn turn_config(&self, ports: RangeInclusive<u16>) -> TurnConfig {
        TurnConfig {
            relay_v4: self.relay_v4,
            relay_v6: self.relay_v6,
            ports,
        }
    }

    /// The settings a reload may change, as the state machine takes them:
    /// the credentials (checked with nonces made from `nonce_key`) and the
    /// peer policy (which refuses `own`, the relay's own addresses, unless
    /// allowed).
    pub fn relay_settings(&self, nonce_key: [u8; 32], own: &[IpAddr]) -> Settings {
        Settings {
            auth: Arc::new(Authenticator::new(self.auth_config(), nonce_key)),
            policy: Arc::new(PeerPolicy::new(
                self.allow_peers.clone(),
                self.deny_peers.clone(),
                own,
            )),
            quotas: self.quotas,
            max_lifetime: self.max_lifetime,
            software: self.software.clone(),
            unauth_rate: self.unauth_per_second,
            unauth_burst: self.unauth_burst,
        }
    }

    /// Relay addresses, IPv4 first.
    pub fn relay_ips(&self) -> Vec<IpAddr> {
        self.relay_v4
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.relay_v6.map(IpAddr::V6))
            .collect()
    }

    /// A human summary (for `check-config`). Never prints secrets or keys.
    pub fn summary(&self) -> String {
        let list = |v: &[IpNet]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let listen = self
            .listen
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let relays = self
            .relay_ips()
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let ports = u32::from(*self.relay_ports.end()) - u32::from(*self.relay_ports.start()) + 1;
        let q = &self.quotas;
        format!(
            "listen: udp {listen}\n\
             relay: {relays} ports {}-{} ({ports} ports over {} workers)\n\
             realm: {:?}\n\
             credentials: {} static users, {} REST secrets; SHA-256 offered: {}; nonce lifetime: {} s\n\
             max allocation lifetime: {} s\n\
             peers: allow {}; deny {} (plus the built-in deny list and the relay's own addresses)\n\
             quotas: {} allocations per user, {} in total, {} permissions and {} channels per allocation\n\
             unauthenticated replies: {} per second per source, burst {}\n\
             software: {}\n\
             log level: {}, format {}, client details in logs: {}\n\
             io backend: {}, batched waits: {}, UDP GSO: {}\n\
             metrics: {}\n\
             control socket: {}\n\
             drain: at most {} s, new allocations get {}",
            self.relay_ports.start(),
            self.relay_ports.end(),
            self.workers,
            self.realm,
            self.users.len(),
            self.rest_secrets.len(),
            if self.offer_sha256 { "yes" } else { "no" },
            self.nonce_lifetime_secs,
            self.max_lifetime.as_secs(),
            list(&self.allow_peers),
            list(&self.deny_peers),
            q.allocations_per_user,
            q.total_allocations,
            q.permissions_per_allocation,
            q.channels_per_allocation,
            self.unauth_per_second,
            self.unauth_burst,
            self.software.as_deref().unwrap_or("off"),
            self.log_level,
            self.log_format.name(),
            if self.log_client_details { "yes" } else { "no" },
            self.io_backend.name(),
            if self.io_batch_wait.is_zero() {
                "off".to_string()
            } else {
                format!("up to {} µs", self.io_batch_wait.as_micros())
            },
            if self.io_gso { "on" } else { "off" },
            self.metrics
                .map_or("off".to_string(), |a| format!("http://{a}/metrics")),
            self.control_socket
                .as_ref()
                .map_or("off".to_string(), |p| p.display().to_string()),
            self.drain_timeout.as_secs(),
            self.alternate_server
                .map_or("508".to_string(), |a| format!("300 with ALTERNATE-SERVER {a}")),
        )
    }
}

fn build(args: &RunArgs, f: FileConfig, have_file: bool) -> Result<Config, ConfigError> {
    // listen
    let (listen_strs, src) = pick_list(&args.listen, "--listen", f.listen, "listen")
        .unwrap_or_else(|| (vec![DEFAULT_LISTEN.to_string()], Src::File("listen")));
    if listen_strs.is_empty() {
        return Err(invalid(src.key(), "at least one address is required"));
    }
    let mut listen = Vec::with_capacity(listen_strs.len());
    for (i, s) in listen_strs.iter().enumerate() {
        let addr = socket_addr(s, src.item(i))?;
        if addr.ip().is_multicast() {
            return Err(invalid(
                src.item(i),
                format!("{addr} is a multicast address"),
            ));
        }
        if listen.contains(&addr) {
            return Err(invalid(src.item(i), format!("{addr} is listed twice")));
        }
        listen.push(addr);
    }

    // relay_ips
    let (relay_v4, relay_v6) = relay_addresses(args, f.relay_ips, &listen)?;

    // relay_ports
    let (ports_str, src) = pick(
        args.relay_ports.clone(),
        "--relay-ports",
        f.relay_ports,
        "relay_ports",
    )
    .unwrap_or_else(|| (DEFAULT_RELAY_PORTS.to_string(), Src::File("relay_ports")));
    let relay_ports = parse_port_range(&ports_str).ok_or_else(|| {
        invalid(
            src.key(),
            format!("{ports_str:?} is not LOW-HIGH with 1 ≤ LOW ≤ HIGH ≤ 65535"),
        )
    })?;
    let ports_src = src;

    // workers
    let (workers, src) = match pick(
        args.workers.map(|w| w as u64),
        "--workers",
        f.workers,
        "workers",
    ) {
        Some(v) => v,
        None => (
            std::thread::available_parallelism().map_or(1, |n| n.get()) as u64,
            Src::File("workers"),
        ),
    };
    if workers == 0 || workers > MAX_WORKERS as u64 {
        return Err(invalid(
            src.key(),
            format!("{workers} is not between 1 and {MAX_WORKERS}"),
        ));
    }
    let workers = workers as usize;
    let port_count = usize::from(*relay_ports.end()) - usize::from(*relay_ports.start()) + 1;
    if port_count < workers {
        return Err(invalid(
            ports_src.key(),
            format!("{ports_str:?} has {port_count} ports, fewer than the {workers} workers that share it"),
        ));
    }

    // realm
    let (realm, src) = pick(args.realm.clone(), "--realm", f.realm, "realm")
        .unwrap_or_else(|| (DEFAULT_REALM.to_string(), Src::File("realm")));
    // RFC 8489 §14.9: REALM is fewer than 128 characters (763 bytes).
    check_text(&realm, 127, src.key())?;

    // max_lifetime_secs
    let (max_lifetime, src) = pick(
        args.max_lifetime,
        "--max-lifetime",
        f.max_lifetime_secs,
        "max_lifetime_secs",
    )
    .unwrap_or((DEFAULT_MAX_LIFETIME_SECS, Src::File("max_lifetime_secs")));
    if max_lifetime == 0 || max_lifetime > MAX_LIFETIME_LIMIT_SECS {
        return Err(invalid(
            src.key(),
            format!("{max_lifetime} is not between 1 and {MAX_LIFETIME_LIMIT_SECS} seconds"),
        ));
    }

    // software
    if let Some(s) = &f.software {
        // RFC 8489 §14.14: SOFTWARE is fewer than 128 characters.
        check_text(s, 127, "software")?;
    }

    // credentials
    let users = match pick_list(&args.user, "--user", None, "users") {
        Some((flags, _)) => {
            let mut users = Vec::with_capacity(flags.len());
            for s in &flags {
                let (name, password) = s.split_once(':').ok_or_else(|| {
                    invalid(
                        "--user",
                        "expected NAME:PASSWORD (the name cannot contain ':')",
                    )
                })?;
                users.push(user_from_password(name, &realm, password, "--user")?);
            }
            users
        }
        None => f
            .users
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, u)| u.validate(i))
            .collect::<Result<_, _>>()?,
    };
    let mut seen = HashSet::new();
    for (i, u) in users.iter().enumerate() {
        if !seen.insert(u.name.as_str()) {
            let key = if args.user.is_empty() {
                format!("users[{i}].name")
            } else {
                "--user".to_string()
            };
            return Err(invalid(
                key,
                format!("user {:?} is configured twice", u.name),
            ));
        }
    }
    let mut rest_secrets = Vec::new();
    let mut warnings = Vec::new();
    if !args.rest_secret.is_empty() {
        for s in &args.rest_secret {
            if s.is_empty() {
                return Err(invalid("--rest-secret", "a secret cannot be empty"));
            }
            rest_secrets.push(s.as_bytes().to_vec());
        }
    } else {
        for (i, s) in f.rest_secrets.unwrap_or_default().iter().enumerate() {
            if s.is_empty() {
                return Err(invalid(
                    format!("rest_secrets[{i}]"),
                    "a secret cannot be empty",
                ));
            }
            rest_secrets.push(s.as_bytes().to_vec());
        }
        for (i, path) in f.rest_secret_files.unwrap_or_default().iter().enumerate() {
            let key = format!("rest_secret_files[{i}]");
            let text = std::fs::read(path).map_err(|source| ConfigError::Read {
                key: key.clone(),
                path: path.clone(),
                source,
            })?;
            let secret = strip_newline(&text);
            if secret.is_empty() {
                return Err(invalid(key, format!("{path:?} holds an empty secret")));
            }
            if let Ok(meta) = std::fs::metadata(path) {
                use std::os::unix::fs::PermissionsExt;
                if meta.permissions().mode() & 0o004 != 0 {
                    warnings.push(format!(
                        "{key}: {path:?} is readable by every user on this host; make it 0640 (group: the service's) or 0600"
                    ));
                }
            }
            rest_secrets.push(secret.to_vec());
        }
    }
    let no_credential_flags = args.user.is_empty() && args.rest_secret.is_empty();
    let mut demo = None;
    let mut users = users;
    if users.is_empty() && rest_secrets.is_empty() {
        if have_file || !no_credential_flags {
            return Err(invalid(
                "users/rest_secrets",
                "no credentials configured: add [[users]] entries (keys from `uturn derive-key`), rest_secrets or rest_secret_files",
            ));
        }
        let d = DemoCredentials {
            user: DEMO_USER.to_string(),
            password: random_token(20),
            rest_secret: random_token(32),
        };
        users.push(user_from_password(&d.user, &realm, &d.password, "users")?);
        rest_secrets.push(d.rest_secret.as_bytes().to_vec());
        demo = Some(d);
    }

    let offer_sha256 = f.offer_sha256.unwrap_or(true);
    let nonce_lifetime_secs = f.nonce_lifetime_secs.unwrap_or(DEFAULT_NONCE_LIFETIME_SECS);
    if nonce_lifetime_secs == 0 || nonce_lifetime_secs > MAX_LIFETIME_LIMIT_SECS {
        return Err(invalid(
            "nonce_lifetime_secs",
            format!("{nonce_lifetime_secs} is not between 1 and {MAX_LIFETIME_LIMIT_SECS} seconds"),
        ));
    }

    // peers
    let peers = f.peers.unwrap_or_default();
    let allow_peers = parse_nets(pick_list(
        &args.allow_peer,
        "--allow-peer",
        peers.allow,
        "peers.allow",
    ))?;
    let deny_peers = parse_nets(pick_list(
        &args.deny_peer,
        "--deny-peer",
        peers.deny,
        "peers.deny",
    ))?;

    // quotas
    let q = f.quotas.unwrap_or_default();
    let d = Quotas::default();
    let quotas = Quotas {
        allocations_per_user: at_least_one(
            q.allocations_per_user,
            d.allocations_per_user,
            "quotas.allocations_per_user",
        )?,
        total_allocations: at_least_one(
            q.total_allocations,
            d.total_allocations,
            "quotas.total_allocations",
        )?,
        permissions_per_allocation: at_least_one(
            q.permissions_per_allocation,
            d.permissions_per_allocation,
            "quotas.permissions_per_allocation",
        )?,
        channels_per_allocation: at_least_one(
            q.channels_per_allocation,
            d.channels_per_allocation,
            "quotas.channels_per_allocation",
        )?,
    };

    // rate_limit
    let r = f.rate_limit.unwrap_or_default();
    let unauth_per_second = at_least_one(
        r.unauth_per_second,
        DEFAULT_UNAUTH_PER_SECOND,
        "rate_limit.unauth_per_second",
    )?;
    let unauth_burst = at_least_one(
        r.unauth_burst,
        DEFAULT_UNAUTH_BURST,
        "rate_limit.unauth_burst",
    )?;

    // log_level
    let (log_level, src) = pick(
        args.log_level.clone(),
        "--log-level",
        f.log_level,
        "log_level",
    )
    .unwrap_or_else(|| (DEFAULT_LOG_LEVEL.to_string(), Src::File("log_level")));
    check_log_level(&log_level, src.key())?;

    // io_backend
    let (backend_str, src) = pick(
        args.io_backend.clone(),
        "--io-backend",
        f.io_backend,
        "io_backend",
    )
    .unwrap_or_else(|| (DEFAULT_IO_BACKEND.to_string(), Src::File("io_backend")));
    let io_backend = IoBackendChoice::parse(&backend_str).ok_or_else(|| {
        invalid(
            src.key(),
            format!("{backend_str:?} is not one of uring, syscall, auto"),
        )
    })?;

    // io_batch_wait_usecs
    let (batch_us, src) = pick(
        args.io_batch_wait,
        "--io-batch-wait",
        f.io_batch_wait_usecs,
        "io_batch_wait_usecs",
    )
    .unwrap_or((
        DEFAULT_IO_BATCH_WAIT_USECS,
        Src::File("io_batch_wait_usecs"),
    ));
    if batch_us > MAX_IO_BATCH_WAIT_USECS {
        return Err(invalid(
            src.key(),
            format!("{batch_us} is more than {MAX_IO_BATCH_WAIT_USECS} microseconds"),
        ));
    }

    // log_format, log_client_details
    let (format_str, src) = pick(
        args.log_format.clone(),
        "--log-format",
        f.log_format,
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
    let log_client_details = args.log_client_details || f.log_client_details.unwrap_or(false);

    // metrics
    let metrics = match pick(args.metrics.clone(), "--metrics", f.metrics, "metrics") {
        Some((s, src)) => Some(socket_addr(&s, src.key())?),
        None => None,
    };

    // control_socket
    let control_socket = match pick(
        args.control_socket.clone(),
        "--control-socket",
        f.control_socket,
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

    // drain_timeout_secs, alternate_server
    let (drain_secs, src) = pick(
        args.drain_timeout,
        "--drain-timeout",
        f.drain_timeout_secs,
        "drain_timeout_secs",
    )
    .unwrap_or((DEFAULT_DRAIN_TIMEOUT_SECS, Src::File("drain_timeout_secs")));
    if drain_secs > MAX_LIFETIME_LIMIT_SECS {
        return Err(invalid(
            src.key(),
            format!("{drain_secs} is more than {MAX_LIFETIME_LIMIT_SECS} seconds"),
        ));
    }
    let alternate_server = match pick(
        args.alternate_server.clone(),
        "--alternate-server",
        f.alternate_server,
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

    Ok(Config {
        listen,
        relay_v4,
        relay_v6,
        relay_ports,
        realm,
        workers,
        max_lifetime: Duration::from_secs(max_lifetime),
        software: f.software,
        users,
        rest_secrets,
        offer_sha256,
        nonce_lifetime_secs,
        allow_peers,
        deny_peers,
        quotas,
        unauth_per_second,
        unauth_burst,
        log_level,
        io_backend,
        io_batch_wait: Duration::from_micros(batch_us),
        io_gso: args.io_gso.or(f.io_gso).unwrap_or(DEFAULT_IO_GSO),
        log_format,
        log_client_details,
        metrics,
        control_socket,
        drain_timeout: Duration::from_secs(drain_secs),
        alternate_server,
        warnings,
        demo,
    })
}

/// Relay addresses from `relay_ips`, or else from specific listen addresses.
fn relay_addresses(
    args: &RunArgs,
    file: Option<Vec<String>>,
    listen: &[SocketAddr],
) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), ConfigError> {
    let (mut v4, mut v6) = (None, None);
    match pick_list(&args.relay_ip, "--relay-ip", file, "relay_ips") {
        Some((ips, src)) if !ips.is_empty() => {
            for (i, s) in ips.iter().enumerate() {
                let ip: IpAddr = s
                    .trim()
                    .parse()
                    .map_err(|_| invalid(src.item(i), format!("{s:?} is not an IP address")))?;
                if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST)
                {
                    return Err(invalid(
                        src.item(i),
                        format!("{ip} cannot be a relay address"),
                    ));
                }
                let dup = match ip {
                    IpAddr::V4(a) => v4.replace(a).is_some(),
                    IpAddr::V6(a) => v6.replace(a).is_some(),
                };
                if dup {
                    return Err(invalid(
                        src.item(i),
                        "at most one relay address per address family",
                    ));
                }
            }
        }
        _ => {
            for a in listen {
                if a.ip().is_unspecified() {
                    return Err(invalid(
                        "relay_ips",
                        format!(
                            "listen address {a} is a wildcard, so the relay address cannot be derived from it; \
                             set relay_ips (or --relay-ip) to the address clients should be given"
                        ),
                    ));
                }
                match a.ip() {
                    IpAddr::V4(ip) => {
                        v4.get_or_insert(ip);
                    }
                    IpAddr::V6(ip) => {
                        v6.get_or_insert(ip);
                    }
                }
            }
        }
    }
    Ok((v4, v6))
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

/// "LOW-HIGH" with 1 ≤ LOW ≤ HIGH ≤ 65535.
fn parse_port_range(s: &str) -> Option<RangeInclusive<u16>> {
    let (lo, hi) = s.trim().split_once('-')?;
    let lo: u16 = lo.trim().parse().ok()?;
    let hi: u16 = hi.trim().parse().ok()?;
    (lo >= 1 && lo <= hi).then_some(lo..=hi)
}

/// Splits `range` into `n` contiguous slices whose sizes differ by at most one.
pub fn port_slices(range: &RangeInclusive<u16>, n: usize) -> Option<Vec<RangeInclusive<u16>>> {
    let total = usize::from(*range.end()).checked_sub(usize::from(*range.start()))? + 1;
    if n == 0 || total < n {
        return None;
    }
    let (base, extra) = (total / n, total % n);
    let mut start = usize::from(*range.start());
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let len = base + usize::from(i < extra);
        out.push(start as u16..=(start + len - 1) as u16);
        start += len;
    }
    Some(out)
}

fn parse_nets(list: Option<(Vec<String>, Src)>) -> Result<Vec<IpNet>, ConfigError> {
    let Some((list, src)) = list else {
        return Ok(Vec::new());
    };
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            let s = s.trim();
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| {
                    invalid(
                        src.item(i),
                        format!("{s:?} is not an address or CIDR prefix (like 10.0.0.0/8)"),
                    )
                })
        })
        .collect()
}

fn at_least_one(v: Option<u32>, default: u32, key: &str) -> Result<u32, ConfigError> {
    match v {
        Some(0) => Err(invalid(key, "must be at least 1")),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

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

fn check_log_level(s: &str, key: String) -> Result<(), ConfigError> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let is_level = LEVELS.iter().any(|l| l.eq_ignore_ascii_case(s));
    // Directive syntax (`uturn=debug,warn`) is accepted for those who need it,
    // but not span or field filters (`[span{field=value}]`): their values are
    // regular expressions compiled to a DFA, which a few hundred bytes can
    // make take minutes and much memory (found by the config fuzz target).
    let is_directive = s.contains('=')
        && !s.contains(['[', '{'])
        && tracing_subscriber::EnvFilter::try_new(s).is_ok();
    if is_level || is_directive {
        Ok(())
    } else {
        Err(invalid(key, format!("{s:?} is not one of trace, debug, info, warn, error, off (or a filter like uturn=debug, without span or field filters)")))
    }
}

fn strip_newline(b: &[u8]) -> &[u8] {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.strip_suffix(b"\r").unwrap_or(b)
}

/// Derives both long-term keys for a password given in the clear.
pub(crate) fn user_from_password(
    name: &str,
    realm: &str,
    password: &str,
    key: &str,
) -> Result<StaticUser, ConfigError> {
    check_user_name(name, key)?;
    if password.is_empty() {
        return Err(invalid(key, format!("user {name:?} has an empty password")));
    }
    let md5 = derive_key(
        PasswordAlgorithm::Md5,
        name.as_bytes(),
        realm.as_bytes(),
        password.as_bytes(),
    );
    let sha = derive_key(
        PasswordAlgorithm::Sha256,
        name.as_bytes(),
        realm.as_bytes(),
        password.as_bytes(),
    );
    Ok(StaticUser {
        name: name.to_string(),
        key_md5: Some(
            md5.as_bytes()
                .try_into()
                .map_err(|_| invalid(key, "MD5 key derivation gave a wrong length"))?,
        ),
        key_sha256: Some(
            sha.as_bytes()
                .try_into()
                .map_err(|_| invalid(key, "SHA-256 key derivation gave a wrong length"))?,
        ),
    })
}

fn check_user_name(name: &str, key: &str) -> Result<(), ConfigError> {
    // RFC 8489 §14.3: USERNAME is fewer than 509 bytes.
    if name.is_empty() || name.len() > 508 || name.chars().any(char::is_control) {
        return Err(invalid(
            key,
            format!("{name:?} is not a user name (1–508 bytes, no control characters)"),
        ));
    }
    Ok(())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.trim().as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// A random string of ASCII letters and digits from the OS generator.
fn random_token(len: usize) -> String {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::getrandom(&mut buf).expect("the OS random generator failed");
        // Rejection sampling keeps every character equally likely.
        for &b in buf.iter().filter(|&&b| b < 248) {
            if out.len() == len {
                break;
            }
            out.push(ALPHABET[usize::from(b % 62)] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests;
