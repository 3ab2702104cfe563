//! Starts shards, handles signals, waits for shutdown.
//!
//! Start-up order: signal handlers, listener sockets (all shards, so a bind
//! error stops start-up before any thread exists), shared credential and
//! policy state, shard threads; once every shard reports ready, the start-up
//! lines go to standard output. On SIGINT/SIGTERM the main thread sends every
//! shard a `Shutdown` command and writes its eventfd, which the shard's ring
//! (or epoll) watches, so shards stop at once; a second signal exits at once.
//!
//! The io backend is chosen once, before any shard starts: `io_backend =
//! "auto"` probes io_uring and falls back to the portable backend, saying
//! so in one log line.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use signal_hook::iterator::Signals;

use crate::auth::Authenticator;
use crate::config::{port_slices, Config, IoBackendChoice};
use crate::io::socket::udp_listener;
use crate::io::{uring, Backend, IoStats};
use crate::policy::{AllocationLedger, PeerPolicy};
use crate::shard::{Shard, ShardCommand, ShardHandle, ShardReport, ShardSpec};
use crate::turn::Stats;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on udp {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
    #[error("cannot read random bytes for the nonce key: {0}")]
    Random(getrandom::Error),
    #[error("relay_ports: the range has fewer ports than the {0} workers")]
    Ports(usize),
    #[error("cannot start worker {index}: {source}")]
    Start { index: usize, source: io::Error },
    #[error("worker {0} stopped unexpectedly")]
    ShardFailed(usize),
}

/// Sends the shard's index when dropped, also when the thread unwinds.
struct DoneGuard(Sender<usize>, usize);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

/// Runs the server until SIGINT/SIGTERM; returns every shard's counters.
pub fn run(cfg: &Config) -> Result<Vec<ShardReport>, ServerError> {
    let shutdown = Arc::new(AtomicBool::new(false));
    let signals = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM];
    // The main thread learns of a signal from a channel this feeds (set up
    // before the flag, so that no signal sets the flag unseen).
    let mut pending = Signals::new(signals).map_err(ServerError::Signals)?;
    for sig in signals {
        // Registered first, so it runs first: a second signal, arriving when
        // the flag is already set, exits at once with status 1.
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&shutdown))
            .map_err(ServerError::Signals)?;
        signal_hook::flag::register(sig, Arc::clone(&shutdown)).map_err(ServerError::Signals)?;
    }
    let signal_handle = pending.handle();
    let (signal_tx, signal_rx) = crossbeam_channel::bounded::<()>(1);
    std::thread::Builder::new()
        .name("uturn-signals".into())
        .spawn(move || {
            for _ in pending.forever() {
                let _ = signal_tx.try_send(());
            }
        })
        .map_err(ServerError::Signals)?;
    let result = run_shards(cfg, &shutdown, &signal_rx);
    signal_handle.close();
    result
}

fn run_shards(
    cfg: &Config,
    shutdown: &AtomicBool,
    signal_rx: &crossbeam_channel::Receiver<()>,
) -> Result<Vec<ShardReport>, ServerError> {
    let backend = choose_backend(cfg.io_backend);
    let (mut listeners, bound) = bind_listeners(&cfg.listen, cfg.workers)?;
    let slices =
        port_slices(&cfg.relay_ports, cfg.workers).ok_or(ServerError::Ports(cfg.workers))?;

    let mut nonce_key = [0u8; 32];
    getrandom::getrandom(&mut nonce_key).map_err(ServerError::Random)?;
    let auth = Arc::new(Authenticator::new(cfg.auth_config(), nonce_key));
    let own = own_addresses(cfg, &bound);
    tracing::debug!(
        ?own,
        "relay's own addresses (denied as peers unless allowed)"
    );
    let policy = Arc::new(PeerPolicy::new(
        cfg.allow_peers.clone(),
        cfg.deny_peers.clone(),
        &own,
    ));
    let ledger = Arc::new(AllocationLedger::new(cfg.quotas));
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if cores.is_empty() {
        tracing::warn!("CPU affinity unavailable: shards are not pinned");
    }

    let (ready_tx, ready_rx) =
        crossbeam_channel::bounded::<Result<usize, (usize, io::Error)>>(cfg.workers);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<usize>(cfg.workers);
    let mut handles: Vec<JoinHandle<Option<ShardReport>>> = Vec::with_capacity(cfg.workers);
    let mut controls: Vec<ShardHandle> = Vec::with_capacity(cfg.workers);
    for (index, ports) in slices.into_iter().enumerate() {
        let (control_tx, control) = match crate::shard::channel() {
            Ok(c) => c,
            Err(source) => {
                stop(shutdown, &controls, handles);
                return Err(ServerError::Start { index, source });
            }
        };
        let spec = ShardSpec {
            index,
            listeners: std::mem::take(&mut listeners[index]),
            turn: cfg.turn_config(ports),
            auth: Arc::clone(&auth),
            policy: Arc::clone(&policy),
            ledger: Arc::clone(&ledger),
            control,
        };
        let core = (!cores.is_empty()).then(|| cores[index % cores.len()]);
        let (ready, done) = (ready_tx.clone(), done_tx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("uturn-shard-{index}"))
            .spawn(move || {
                let _done = DoneGuard(done, index);
                if let Some(core) = core {
                    if !core_affinity::set_for_current(core) {
                        tracing::warn!(
                            shard = index,
                            core = core.id,
                            "could not pin shard to its core"
                        );
                    }
                }
                let shard = match Shard::new(spec, backend) {
                    Ok(shard) => {
                        let _ = ready.send(Ok(index));
                        shard
                    }
                    Err(e) => {
                        let _ = ready.send(Err((index, e)));
                        return None;
                    }
                };
                // Let go of the sender now: the main thread learns that a shard
                // died while starting when every sender is gone.
                drop(ready);
                Some(shard.run())
            });
        match spawned {
            Ok(h) => {
                handles.push(h);
                controls.push(control_tx);
            }
            Err(source) => {
                stop(shutdown, &controls, handles);
                return Err(ServerError::Start { index, source });
            }
        }
    }
    drop((ready_tx, done_tx));

    for _ in 0..cfg.workers {
        match ready_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err((index, source))) => {
                stop(shutdown, &controls, handles);
                return Err(ServerError::Start { index, source });
            }
            Err(_) => {
                // Every sender is gone: a shard panicked while starting.
                let failed = handles.iter().position(|h| h.is_finished()).unwrap_or(0);
                stop(shutdown, &controls, handles);
                return Err(ServerError::ShardFailed(failed));
            }
        }
    }
    announce(cfg, &bound, backend);
    tracing::info!(
        workers = cfg.workers,
        io_backend = backend.name(),
        "uturn ready"
    );

    // A signal, or a shard that stopped on its own (it failed).
    let first = crossbeam_channel::select! {
        recv(signal_rx) -> _ => None,
        recv(done_rx) -> index => Some(index.unwrap_or(0)),
    };
    let clean = shutdown.swap(true, Ordering::SeqCst) || first.is_none();
    if clean {
        tracing::info!("shutting down");
    }
    for c in &controls {
        c.send(ShardCommand::Shutdown);
    }
    let first = first.unwrap_or(0);
    let mut reports = Vec::with_capacity(handles.len());
    let mut failed = (!clean).then_some(first);
    for (index, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Some(r)) => reports.push(r),
            _ => {
                failed.get_or_insert(index);
            }
        }
    }
    log_totals(&reports);
    match failed {
        Some(index) => Err(ServerError::ShardFailed(index)),
        None => Ok(reports),
    }
}

/// The backend every shard runs on. `Uring` was checked when the
/// configuration was loaded; `Auto` probes here, once.
fn choose_backend(choice: IoBackendChoice) -> Backend {
    match choice {
        IoBackendChoice::Syscall => Backend::Syscall,
        IoBackendChoice::Uring => Backend::Uring,
        IoBackendChoice::Auto => match uring::probe() {
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
        },
    }
}

/// Tells the shards already started to stop and waits for them.
fn stop(
    shutdown: &AtomicBool,
    controls: &[ShardHandle],
    handles: Vec<JoinHandle<Option<ShardReport>>>,
) {
    shutdown.store(true, Ordering::SeqCst);
    for c in controls {
        c.send(ShardCommand::Shutdown);
    }
    for h in handles {
        let _ = h.join();
    }
}

/// Binds one listener per shard and listen address. Shard 0 binds first, so
/// that port 0 resolves to one port every other shard then shares.
/// Returns the sockets per shard and the bound addresses.
fn bind_listeners(
    listen: &[SocketAddr],
    workers: usize,
) -> Result<(Vec<Vec<UdpSocket>>, Vec<SocketAddr>), ServerError> {
    let mut per_shard: Vec<Vec<UdpSocket>> = (0..workers)
        .map(|_| Vec::with_capacity(listen.len()))
        .collect();
    let mut bound = Vec::with_capacity(listen.len());
    for &addr in listen {
        let first = udp_listener(addr).map_err(|source| ServerError::Listen { addr, source })?;
        let resolved = first
            .local_addr()
            .map_err(|source| ServerError::Listen { addr, source })?;
        per_shard[0].push(first);
        for shard in per_shard.iter_mut().skip(1) {
            shard.push(
                udp_listener(resolved).map_err(|source| ServerError::Listen {
                    addr: resolved,
                    source,
                })?,
            );
        }
        bound.push(resolved);
    }
    Ok((per_shard, bound))
}

/// The relay's own addresses for the peer policy: listen and relay addresses,
/// and every address of the host's interfaces (a relay must not become a way
/// into the host's other services, whatever it listens on).
fn own_addresses(cfg: &Config, bound: &[SocketAddr]) -> Vec<IpAddr> {
    let mut own: Vec<IpAddr> = bound
        .iter()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified())
        .collect();
    own.extend(cfg.relay_ips());
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
fn announce(cfg: &Config, bound: &[SocketAddr], backend: Backend) {
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
    for ip in cfg.relay_ips() {
        lines.push_str(&format!(
            "uturn: relay {ip} ports {}-{}\n",
            cfg.relay_ports.start(),
            cfg.relay_ports.end()
        ));
    }
    if let Some(d) = &cfg.demo {
        if bound.iter().any(|a| !a.ip().is_loopback()) {
            tracing::warn!(
                "demo credentials are in use on a non-loopback address; configure real credentials"
            );
        }
        lines.push_str(&format!(
            "uturn: demo user \"{}\" password \"{}\" realm \"{}\"\n",
            d.user, d.password, cfg.realm
        ));
        lines.push_str(&format!("uturn: demo rest-secret \"{}\"\n", d.rest_secret));
    }
    lines.push_str(&format!("uturn: io backend {}\n", backend.name()));
    lines.push_str("uturn: ready\n");
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_all(lines.as_bytes()).and_then(|_| out.flush()) {
        tracing::warn!(error = %e, "cannot write the start-up lines to standard output");
    }
}

fn log_totals(reports: &[ShardReport]) {
    let mut io = IoStats::default();
    let mut turn = Stats::default();
    for r in reports {
        io.add(&r.io);
        add_stats(&mut turn, &r.turn);
        tracing::debug!(shard = r.index, turn = ?r.turn, io = ?r.io, "shard counters");
    }
    tracing::info!(
        allocations_created = turn.allocations_created,
        allocations_expired = turn.allocations_expired,
        allocations_deleted = turn.allocations_deleted,
        to_peer_packets = turn.to_peer_packets,
        to_client_packets = turn.to_client_packets,
        rx_datagrams = io.rx_datagrams,
        tx_datagrams = io.tx_datagrams,
        tx_dropped = io.tx_dropped(),
        rx_truncated = io.rx_truncated,
        rx_no_buffers = io.rx_no_buffers,
        rx_errors = io.rx_errors,
        "totals at shutdown"
    );
}

fn add_stats(into: &mut Stats, s: &Stats) {
    into.allocations_created += s.allocations_created;
    into.allocations_expired += s.allocations_expired;
    into.allocations_deleted += s.allocations_deleted;
    into.to_peer_packets += s.to_peer_packets;
    into.to_peer_bytes += s.to_peer_bytes;
    into.to_client_packets += s.to_client_packets;
    into.to_client_bytes += s.to_client_bytes;
}
