//! What start-up needs besides the shards: the io backend probe, the
//! listener sockets, the relay's own addresses, the lines printed once
//! ready, and the totals logged at exit.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::sync::Arc;

use super::ServerError;
use crate::config::{Config, IoBackendChoice, Network, RunArgs, StreamIoChoice, Tls};
use crate::io::socket::{tcp_listener, udp_listener, Group};
use crate::io::{uring, Backend, IoStats};
use crate::shard::ShardReport;
use crate::shard::{DtlsSpec, StreamLimits, StreamListener, StreamSpec};
use crate::stream::ConnLedger;
use crate::turn::Stats;

/// Probes the kernel for the io backend the configuration asks for. Done
/// here, at start-up, and not when the file is checked: `check-config` may
/// run on another machine than the one that serves.
pub(super) fn choose_backend(
    choice: IoBackendChoice,
    args: &RunArgs,
) -> Result<Backend, ServerError> {
    match choice {
        IoBackendChoice::Syscall => Ok(Backend::Syscall),
        // Asked for by name: a host without io_uring is a start-up refusal.
        IoBackendChoice::Uring => match uring::probe() {
            Ok(_) => Ok(Backend::Uring),
            Err(why) => Err(ServerError::IoUring {
                key: if args.io_backend.is_some() {
                    "--io-backend"
                } else {
                    "io_backend"
                },
                why: why.to_string(),
            }),
        },
        IoBackendChoice::Auto => Ok(match uring::probe() {
            Ok(mode) => {
                tracing::debug!(flags = mode.name(), "io_uring available");
                Backend::Uring
            }
            Err(why) => {
                tracing::warn!(
                    "io_uring unavailable ({why}); using the portable recvmmsg/sendmmsg backend"
                );
                Backend::Syscall
            }
        }),
    }
}

/// Decides how io_uring shards serve TCP and TLS: on the ring when the
/// kernel has multishot accept and receive (probed once, here), else
/// through epoll; said in one log line when there is a stream listener.
/// Always false on the syscall backend.
pub(super) fn choose_stream_io(
    choice: StreamIoChoice,
    backend: Backend,
    listeners: bool,
    args: &RunArgs,
) -> Result<bool, ServerError> {
    if backend != Backend::Uring || !listeners || choice == StreamIoChoice::Epoll {
        if backend == Backend::Uring && listeners {
            tracing::info!("TCP and TLS on io_uring through epoll (io_streams = epoll)");
        }
        return Ok(false);
    }
    match uring::probe_streams() {
        Ok(()) => {
            tracing::info!("TCP and TLS on io_uring: multishot accept and receive, ring sends");
            Ok(true)
        }
        Err(why) if choice == StreamIoChoice::Native => Err(ServerError::StreamsOnRing {
            key: if args.io_streams.is_some() {
                "--io-streams"
            } else {
                "io_streams"
            },
            why: why.to_string(),
        }),
        Err(why) => {
            tracing::warn!(
                "TCP and TLS on io_uring through epoll: this kernel cannot serve them on the \
                 ring ({why})"
            );
            Ok(false)
        }
    }
}

/// Binds one listener per shard and listen address. Shard 0 binds first, so
/// that port 0 resolves to one port every other shard then shares.
/// Returns the sockets per shard and the bound addresses.
pub(super) fn bind_listeners(
    listen: &[SocketAddr],
    workers: usize,
) -> Result<(Vec<Vec<UdpSocket>>, Vec<SocketAddr>), ServerError> {
    bind_group("udp", listen, workers, udp_listener)
}

/// As [`bind_listeners`], for TCP listeners (`proto` names them in errors:
/// tcp or tls).
pub(super) fn bind_tcp_listeners(
    proto: &'static str,
    listen: &[SocketAddr],
    workers: usize,
) -> Result<(Vec<Vec<TcpListener>>, Vec<SocketAddr>), ServerError> {
    bind_group(proto, listen, workers, tcp_listener)
}

/// One socket per shard and address, the first opening the address's
/// SO_REUSEPORT group and the others joining it.
fn bind_group<S: LocalAddr>(
    proto: &'static str,
    listen: &[SocketAddr],
    workers: usize,
    open: impl Fn(SocketAddr, Group) -> io::Result<S>,
) -> Result<(Vec<Vec<S>>, Vec<SocketAddr>), ServerError> {
    let mut per_shard: Vec<Vec<S>> = (0..workers)
        .map(|_| Vec::with_capacity(listen.len()))
        .collect();
    let mut bound = Vec::with_capacity(listen.len());
    for &addr in listen {
        // SECURITY.md rule 15: the first socket claims the address for this
        // process, before any socket of ours could join another's group.
        let first = open(addr, Group::Open).map_err(|source| match source.kind() {
            io::ErrorKind::AddrInUse => ServerError::AddressTaken { proto, addr },
            _ => ServerError::Listen {
                proto,
                addr,
                source,
            },
        })?;
        let resolved = first.local_addr().map_err(|source| ServerError::Listen {
            proto,
            addr,
            source,
        })?;
        per_shard[0].push(first);
        for shard in per_shard.iter_mut().skip(1) {
            shard.push(
                open(resolved, Group::Join).map_err(|source| ServerError::Listen {
                    proto,
                    addr: resolved,
                    source,
                })?,
            );
        }
        bound.push(resolved);
    }
    Ok((per_shard, bound))
}

/// The bound address of a listener, whatever its kind.
trait LocalAddr {
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

impl LocalAddr for UdpSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        UdpSocket::local_addr(self)
    }
}

impl LocalAddr for TcpListener {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpListener::local_addr(self)
    }
}

/// The stream side of every shard, ready to start.
pub(super) struct StreamSetup {
    /// One per shard.
    pub specs: Vec<StreamSpec>,
    pub bound: Bound,
    /// The demo certificate's SHA-256, when one was made.
    pub demo: Option<[u8; 32]>,
    /// One per shard: its DTLS listeners, sharing the stream limits.
    pub dtls: Vec<DtlsSpec>,
}

/// The stream side of every shard: TCP and TLS listeners bound (each
/// shard's own, in SO_REUSEPORT groups), the shared connection ledger and
/// the TLS configuration (the demo one made now).
pub(super) fn stream_specs(cfg: &Config) -> Result<StreamSetup, ServerError> {
    let s = &cfg.streams;
    let workers = cfg.network.workers;
    let (mut tcp, tcp_bound) = bind_tcp_listeners("tcp", &s.listen_tcp, workers)?;
    let (mut tls, tls_bound) = bind_tcp_listeners("tls", &s.listen_tls, workers)?;
    let (mut dtls, dtls_bound) = bind_group("dtls", &s.listen_dtls, workers, udp_listener)?;
    let (identity, demo) = match &cfg.reloadable.tls {
        Tls::Off => (None, None),
        Tls::Files { identity, .. } => (Some(identity.clone()), None),
        Tls::Demo => {
            let mut names = vec!["localhost".to_string()];
            names.extend(tls_bound.iter().map(|a| a.ip().to_string()));
            names.extend(dtls_bound.iter().map(|a| a.ip().to_string()));
            names.sort();
            names.dedup();
            let (id, _pem) = crate::stream::tls::self_signed(&names)
                .map_err(|e| ServerError::DemoCertificate(e.to_string()))?;
            let fingerprint = id.fingerprint;
            (Some(id), Some(fingerprint))
        }
    };
    let config = identity.as_ref().map(|id| Arc::clone(&id.config));
    let dtls_context = match (&identity, s.listen_dtls.is_empty()) {
        (Some(id), false) => Some(
            crate::dtls::DtlsContext::new(&id.der.chain, &id.der.key)
                .map_err(ServerError::DtlsCertificate)?,
        ),
        _ => None,
    };
    let front =
        crate::dtls::Front::new(crate::dtls::CookieKey::random().map_err(ServerError::Random)?);
    let ledger = Arc::new(ConnLedger::new(
        s.max_connections,
        s.max_connections_per_source,
    ));
    let limits = StreamLimits {
        handshake_timeout: s.handshake_timeout,
        auth_timeout: s.auth_timeout,
        send_queue: s.send_queue_bytes,
        max_connections: s.max_connections,
        relay_splice: s.relay_splice,
    };
    let trusted = Arc::new(s.proxy_protocol_from.clone());
    // Listeners are bound in the order of their lists, so the i-th socket
    // is the i-th configured address.
    let proxy = |addr: &SocketAddr| {
        s.proxy_protocol
            .contains(addr)
            .then(|| Arc::clone(&trusted))
    };
    let dtls = (0..workers)
        .map(|i| DtlsSpec {
            sockets: std::mem::take(&mut dtls[i]),
            front: front.clone(),
            context: dtls_context.clone(),
            limits: limits.clone(),
            ledger: Arc::clone(&ledger),
        })
        .collect();
    let specs = (0..workers)
        .map(|i| {
            let mut listeners: Vec<StreamListener> = std::mem::take(&mut tcp[i])
                .into_iter()
                .zip(&s.listen_tcp)
                .map(|(sock, addr)| StreamListener {
                    sock,
                    tls: false,
                    proxy: proxy(addr),
                })
                .collect();
            listeners.extend(
                std::mem::take(&mut tls[i])
                    .into_iter()
                    .zip(&s.listen_tls)
                    .map(|(sock, addr)| StreamListener {
                        sock,
                        tls: true,
                        proxy: proxy(addr),
                    }),
            );
            StreamSpec {
                listeners,
                limits: limits.clone(),
                ledger: Arc::clone(&ledger),
                tls: config.clone(),
            }
        })
        .collect();
    Ok(StreamSetup {
        specs,
        bound: Bound {
            tcp: tcp_bound,
            tls: tls_bound,
            dtls: dtls_bound,
        },
        demo,
        dtls,
    })
}

/// The stream addresses as bound (port 0 resolved).
#[derive(Clone, Debug, Default)]
pub(crate) struct Bound {
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    pub dtls: Vec<SocketAddr>,
}

/// The relay's own addresses for the peer policy: listen and relay addresses,
/// and every address of the host's interfaces (a relay must not become a way
/// into the host's other services, whatever it listens on).
pub(super) fn own_addresses(network: &Network, bound: &[SocketAddr]) -> Vec<IpAddr> {
    let mut own: Vec<IpAddr> = bound
        .iter()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified())
        .collect();
    own.extend(network.relay_ips());
    match nix::ifaddrs::getifaddrs() {
        Ok(ifs) => {
            for ifa in ifs {
                let Some(addr) = ifa.address else { continue };
                if let Some(a) = addr.as_sockaddr_in() {
                    own.push(IpAddr::V4(a.ip()));
                } else if let Some(a) = addr.as_sockaddr_in6() {
                    own.push(IpAddr::V6(a.ip()));
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot list interface addresses; only listen and relay addresses count as own")
        }
    }
    own.sort();
    own.dedup();
    own
}

/// The start-up lines on standard output (a contract for tests and people).
pub(super) fn announce(
    cfg: &Config,
    bound: &[SocketAddr],
    streams: &Bound,
    demo_tls: Option<[u8; 32]>,
    backend: Backend,
    metrics: Option<SocketAddr>,
    control_socket: Option<&Path>,
) {
    if bound.iter().any(|a| a.ip().is_unspecified()) {
        tracing::warn!(
            "a wildcard listen address answers from the address the routing table picks; \
             on a multi-homed host listen on specific addresses"
        );
    }
    let mut lines = String::new();
    for a in bound {
        lines.push_str(&format!("uturn: listening on udp {a}\n"));
    }
    for a in &streams.tcp {
        lines.push_str(&format!("uturn: listening on tcp {a}\n"));
    }
    for a in &streams.tls {
        lines.push_str(&format!("uturn: listening on tls {a}\n"));
    }
    for a in &streams.dtls {
        lines.push_str(&format!("uturn: listening on dtls {a}\n"));
    }
    for ip in cfg.network.relay_ips() {
        lines.push_str(&format!(
            "uturn: relay {ip} ports {}-{}\n",
            cfg.network.relay_ports.start(),
            cfg.network.relay_ports.end()
        ));
    }
    if let Some(d) = &cfg.reloadable.auth.demo {
        if bound.iter().any(|a| !a.ip().is_loopback()) {
            tracing::warn!(
                "demo credentials are in use on a non-loopback address; configure real credentials"
            );
        }
        lines.push_str(&format!(
            "uturn: demo user \"{}\" password \"{}\" realm \"{}\"\n",
            d.user, d.password, cfg.reloadable.auth.realm
        ));
        lines.push_str(&format!("uturn: demo rest-secret \"{}\"\n", d.rest_secret));
    }
    if let Some(fp) = demo_tls {
        lines.push_str(&format!(
            "uturn: demo tls certificate (self-signed, made now) sha256 {}\n",
            crate::stream::tls::fingerprint_hex(&fp)
        ));
    }
    if let Some(a) = metrics {
        lines.push_str(&format!("uturn: metrics http://{a}/metrics\n"));
    }
    if let Some(p) = control_socket {
        lines.push_str(&format!("uturn: control socket {}\n", p.display()));
    }
    lines.push_str(&format!("uturn: io backend {}\n", backend.name()));
    lines.push_str("uturn: ready\n");
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_all(lines.as_bytes()).and_then(|_| out.flush()) {
        tracing::warn!(error = %e, "cannot write the start-up lines to standard output");
    }
}

pub(super) fn log_totals(reports: &[ShardReport]) {
    let mut io = IoStats::default();
    let mut turn = Stats::default();
    for r in reports {
        io.add(&r.io);
        turn.add(&r.turn);
        tracing::debug!(shard = r.index, turn = ?r.turn, io = ?r.io, "shard counters");
    }
    let totals = turn.totals();
    tracing::info!(
        allocations_created = totals.allocations_created,
        allocations_expired = turn.allocations_expired,
        allocations_deleted = turn.allocations_deleted,
        to_peer_packets = totals.to_peer_packets,
        to_client_packets = totals.to_client_packets,
        rx_datagrams = io.rx_datagrams,
        tx_datagrams = io.tx_datagrams,
        tx_dropped = io.tx_dropped(),
        rx_truncated = io.rx_truncated,
        rx_no_buffers = io.rx_no_buffers,
        rx_errors = io.rx_errors,
        "totals at shutdown"
    );
}
