//! TURN over TCP, TLS and DTLS: the listeners and their limits
//! (`listen_tcp`, `listen_tls`, `listen_dtls`, the `[tcp]` table, whose
//! limits DTLS sessions share; restart-only), and the certificate TLS and
//! DTLS serve (`tls_cert`, `tls_key`; reloadable: new connections and
//! sessions get the new certificate, open ones keep theirs).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use super::file::FileConfig;
use super::{invalid, pick, pick_list, socket_addrs, ConfigError, RunArgs};
use crate::stream::tls::{self, Identity};

/// The TLS port of the demo start (no configuration file, no credentials).
pub const DEMO_TLS_PORT: u16 = 5349;
pub const DEFAULT_MAX_CONNECTIONS: u64 = 50_000;
pub const DEFAULT_MAX_CONNECTIONS_PER_SOURCE: u64 = 1_000;
pub const DEFAULT_HANDSHAKE_TIMEOUT_SECS: u64 = 10;
pub const DEFAULT_AUTH_TIMEOUT_SECS: u64 = 30;
pub const DEFAULT_SEND_QUEUE_BYTES: u64 = 128 * 1024;

/// The stream listeners and limits: kept as they are by a reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Streams {
    pub listen_tcp: Vec<SocketAddr>,
    pub listen_tls: Vec<SocketAddr>,
    /// UDP addresses for TURN over DTLS (RFC 7350).
    pub listen_dtls: Vec<SocketAddr>,
    pub max_connections: usize,
    pub max_connections_per_source: u32,
    pub handshake_timeout: Duration,
    pub auth_timeout: Duration,
    pub send_queue_bytes: usize,
    /// RFC 6062 pipes between plain TCP connections move their bytes with
    /// splice(2) (true) or through a buffer of uturn's (false).
    pub relay_splice: bool,
    /// Listen addresses (of `listen_tcp` or `listen_tls`) whose connections
    /// start with a PROXY v2 header.
    pub proxy_protocol: Vec<SocketAddr>,
    /// The load balancers allowed to connect to those listeners.
    pub proxy_protocol_from: Vec<IpNet>,
}

/// Where the TLS certificate comes from.
#[derive(Clone, Debug)]
pub enum Tls {
    /// No TLS listener.
    Off,
    /// Made up at start-up (the demo start only): self-signed.
    Demo,
    /// Read from these files (already loaded and checked).
    Files {
        cert: PathBuf,
        key: PathBuf,
        identity: Identity,
    },
}

impl Streams {
    /// `demo`: the bare start without a file or credentials, which also
    /// listens on TLS with a made-up certificate.
    pub(super) fn build(
        args: &RunArgs,
        f: &FileConfig,
        listen: &[SocketAddr],
        demo: bool,
    ) -> Result<Streams, ConfigError> {
        // TURN over TCP is served beside UDP on the same addresses unless
        // told otherwise (`listen_tcp = []` turns it off).
        let listen_tcp = match pick_list(
            &args.listen_tcp,
            "--listen-tcp",
            f.listen_tcp.clone(),
            "listen_tcp",
        ) {
            Some((strs, src)) => socket_addrs(&strs, src)?,
            None => listen.to_vec(),
        };
        // The demo start's TLS and DTLS address: the first listen address's
        // IP, on the TLS port (or an ephemeral one when that is one too).
        let demo_secure: Vec<SocketAddr> = listen
            .first()
            .map(|a| SocketAddr::new(a.ip(), if a.port() == 0 { 0 } else { DEMO_TLS_PORT }))
            .into_iter()
            .collect();
        let listen_tls = match pick_list(
            &args.listen_tls,
            "--listen-tls",
            f.listen_tls.clone(),
            "listen_tls",
        ) {
            Some((strs, src)) => socket_addrs(&strs, src)?,
            None if demo && no_tls_files(args, f) => demo_secure.clone(),
            None => Vec::new(),
        };
        // DTLS beside TLS, on the same port over UDP, in the demo start.
        let listen_dtls = match pick_list(
            &args.listen_dtls,
            "--listen-dtls",
            f.listen_dtls.clone(),
            "listen_dtls",
        ) {
            Some((strs, src)) => socket_addrs(&strs, src)?,
            None if demo && no_tls_files(args, f) => demo_secure.clone(),
            None => Vec::new(),
        };
        for a in &listen_dtls {
            if listen.contains(a) && a.port() != 0 {
                return Err(invalid(
                    "listen_dtls",
                    format!("{a} is also in listen; UDP and DTLS need different ports"),
                ));
            }
        }
        for a in &listen_tls {
            if listen_tcp.contains(a) && a.port() != 0 {
                return Err(invalid(
                    "listen_tls",
                    format!("{a} is also in listen_tcp; TCP and TLS need different ports"),
                ));
            }
        }
        let t = f.tcp.as_ref();
        let number = |v: Option<u64>, default: u64, key: &'static str, max: u64| {
            let v = v.unwrap_or(default);
            if v == 0 || v > max {
                return Err(invalid(key, format!("{v} is not between 1 and {max}")));
            }
            Ok(v)
        };
        let max_connections = number(
            t.and_then(|t| t.max_connections),
            DEFAULT_MAX_CONNECTIONS,
            "tcp.max_connections",
            10_000_000,
        )? as usize;
        let max_connections_per_source = number(
            t.and_then(|t| t.max_connections_per_source),
            DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
            "tcp.max_connections_per_source",
            u64::from(u32::MAX),
        )? as u32;
        let handshake_timeout = Duration::from_secs(number(
            t.and_then(|t| t.handshake_timeout_secs),
            DEFAULT_HANDSHAKE_TIMEOUT_SECS,
            "tcp.handshake_timeout_secs",
            600,
        )?);
        let auth_timeout = Duration::from_secs(number(
            t.and_then(|t| t.auth_timeout_secs),
            DEFAULT_AUTH_TIMEOUT_SECS,
            "tcp.auth_timeout_secs",
            3600,
        )?);
        // At least one largest frame, so that any single frame fits.
        let send_queue_bytes = t
            .and_then(|t| t.send_queue_bytes)
            .unwrap_or(DEFAULT_SEND_QUEUE_BYTES);
        let min = uturn_stun::framing::MAX_FRAME_LEN as u64;
        if !(min..=64 << 20).contains(&send_queue_bytes) {
            return Err(invalid(
                "tcp.send_queue_bytes",
                format!(
                    "{send_queue_bytes} is not between {min} (one largest frame) and {}",
                    64 << 20
                ),
            ));
        }
        let proxy_protocol = match pick_list(
            &args.proxy_protocol,
            "--proxy-protocol",
            f.proxy_protocol.clone(),
            "proxy_protocol",
        ) {
            Some((strs, src)) => {
                let addrs = socket_addrs(&strs, src)?;
                for (i, a) in addrs.iter().enumerate() {
                    if !listen_tcp.contains(a) && !listen_tls.contains(a) {
                        return Err(invalid(
                            src.item(i),
                            format!("{a} is not in listen_tcp or listen_tls"),
                        ));
                    }
                }
                addrs
            }
            None => Vec::new(),
        };
        let from = pick_list(
            &args.proxy_protocol_from,
            "--proxy-protocol-from",
            f.proxy_protocol_from.clone(),
            "proxy_protocol_from",
        );
        let proxy_protocol_from = super::policy::parse_nets(from)?;
        if !proxy_protocol.is_empty() && proxy_protocol_from.is_empty() {
            return Err(invalid(
                "proxy_protocol_from",
                "proxy_protocol is set: name the load balancers' networks it is accepted from",
            ));
        }
        Ok(Streams {
            listen_tcp,
            listen_tls,
            listen_dtls,
            max_connections,
            max_connections_per_source,
            handshake_timeout,
            auth_timeout,
            send_queue_bytes: send_queue_bytes as usize,
            relay_splice: t.and_then(|t| t.relay_splice).unwrap_or(true),
            proxy_protocol,
            proxy_protocol_from,
        })
    }

    /// The keys whose value differs in `new`, named as in the file.
    pub fn changed_keys(&self, new: &Streams) -> Vec<&'static str> {
        let Streams {
            listen_tcp,
            listen_tls,
            listen_dtls,
            max_connections,
            max_connections_per_source,
            handshake_timeout,
            auth_timeout,
            send_queue_bytes,
            relay_splice,
            proxy_protocol,
            proxy_protocol_from,
        } = self;
        let mut keys = Vec::new();
        if *listen_tcp != new.listen_tcp {
            keys.push("listen_tcp");
        }
        if *listen_tls != new.listen_tls {
            keys.push("listen_tls");
        }
        if *listen_dtls != new.listen_dtls {
            keys.push("listen_dtls");
        }
        if *max_connections != new.max_connections {
            keys.push("tcp.max_connections");
        }
        if *max_connections_per_source != new.max_connections_per_source {
            keys.push("tcp.max_connections_per_source");
        }
        if *handshake_timeout != new.handshake_timeout {
            keys.push("tcp.handshake_timeout_secs");
        }
        if *auth_timeout != new.auth_timeout {
            keys.push("tcp.auth_timeout_secs");
        }
        if *send_queue_bytes != new.send_queue_bytes {
            keys.push("tcp.send_queue_bytes");
        }
        if *relay_splice != new.relay_splice {
            keys.push("tcp.relay_splice");
        }
        if *proxy_protocol != new.proxy_protocol {
            keys.push("proxy_protocol");
        }
        if *proxy_protocol_from != new.proxy_protocol_from {
            keys.push("proxy_protocol_from");
        }
        keys
    }
}

fn no_tls_files(args: &RunArgs, f: &FileConfig) -> bool {
    args.tls_cert.is_none() && args.tls_key.is_none() && f.tls_cert.is_none() && f.tls_key.is_none()
}

impl Tls {
    /// The certificate for `listen_tls`: read from `tls_cert` and `tls_key`
    /// (a key file every user may read is warned about), made up for the
    /// demo start, or none when nothing listens on TLS.
    pub(super) fn build(
        args: &RunArgs,
        f: &FileConfig,
        listen_tls: &[SocketAddr],
        demo: bool,
        warnings: &mut Vec<String>,
    ) -> Result<Tls, ConfigError> {
        let cert = pick(
            args.tls_cert.clone(),
            "--tls-cert",
            f.tls_cert.clone(),
            "tls_cert",
        );
        let key = pick(
            args.tls_key.clone(),
            "--tls-key",
            f.tls_key.clone(),
            "tls_key",
        );
        let (cert, key) = match (cert, key) {
            (Some(c), Some(k)) => (c, k),
            (Some(_), None) => {
                return Err(invalid("tls_key", "tls_cert is set but tls_key is not"))
            }
            (None, Some(_)) => {
                return Err(invalid("tls_cert", "tls_key is set but tls_cert is not"))
            }
            (None, None) if listen_tls.is_empty() => return Ok(Tls::Off),
            (None, None) if demo => return Ok(Tls::Demo),
            (None, None) => {
                return Err(invalid(
                    "tls_cert",
                    "listen_tls and listen_dtls need a certificate: set tls_cert and tls_key (PEM files)",
                ))
            }
        };
        let ((cert, cert_src), (key, key_src)) = (cert, key);
        let identity =
            tls::load(&cert, &key).map_err(|e| invalid(cert_src.key(), e.to_string()))?;
        if let Ok(meta) = std::fs::metadata(&key) {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o004 != 0 {
                warnings.push(format!(
                    "{}: {key:?} is readable by every user on this host; make it 0640 (group: the service's) or 0600",
                    key_src.key()
                ));
            }
        }
        Ok(Tls::Files {
            cert,
            key,
            identity,
        })
    }

    /// The DTLS context to hand to the shards on a reload (none for the
    /// demo certificate, which stays as made at start-up).
    pub fn reload_dtls(&self) -> Result<Option<crate::dtls::DtlsContext>, String> {
        match self {
            Tls::Files { identity, .. } => {
                crate::dtls::DtlsContext::new(&identity.der.chain, &identity.der.key).map(Some)
            }
            Tls::Off | Tls::Demo => Ok(None),
        }
    }

    /// The server configuration to hand to the shards on a reload (none
    /// for the demo certificate, which stays as made at start-up).
    pub fn reload_config(&self) -> Option<std::sync::Arc<rustls::ServerConfig>> {
        match self {
            Tls::Files { identity, .. } => Some(std::sync::Arc::clone(&identity.config)),
            Tls::Off | Tls::Demo => None,
        }
    }
}
