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

mod control_socket;

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use signal_hook::iterator::Signals;

use crate::config::{port_slices, Config, IoBackendChoice, Network, Reloadable, RunArgs};
use crate::io::socket::{udp_listener, Group};
use crate::io::{uring, Backend, IoStats};
use crate::logging::LogControl;
use crate::metrics::{ControlState, MetricsServer, StaticInfo};
use crate::policy::AllocationLedger;
use crate::shard::{collect_reports, Shard, ShardCommand, ShardHandle, ShardReport, ShardSpec};
use crate::turn::Stats;
pub use control_socket::ask as ask_control_socket;
use control_socket::ControlSocket;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on udp {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error(
        "cannot listen on udp {addr}: another process already holds it (another uturn?); \
         refusing to share it, since the kernel would split that process's clients \
         between the two"
    )]
    AddressTaken { addr: SocketAddr },
    #[error("{key}: io_uring unavailable ({why}); use \"auto\" or \"syscall\"")]
    IoUring { key: &'static str, why: String },
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
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics { addr: SocketAddr, source: io::Error },
    #[error("control_socket {path:?}: {source}")]
    ControlSocket { path: PathBuf, source: io::Error },
}

impl ServerError {
    /// True for errors in what uturn was told to do (an address it cannot
    /// have, a port range too small), which a restart would only repeat:
    /// the binary exits 2 for these, as for configuration errors, so that
    /// systemd's `RestartPreventExitStatus=2` stops retrying.
    pub fn is_start_up_refusal(&self) -> bool {
        matches!(
            self,
            ServerError::Listen { .. }
                | ServerError::AddressTaken { .. }
                | ServerError::IoUring { .. }
                | ServerError::Ports(_)
                | ServerError::Metrics { .. }
                | ServerError::ControlSocket { .. }
        )
    }
}

/// Sends the shard's index when dropped, also when the thread unwinds.
struct DoneGuard(Sender<usize>, usize);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

/// What the signal thread and the control socket ask of the main thread.
pub(crate) enum Event {
    /// SIGTERM or SIGINT (named): drain, then stop.
    Stop(&'static str),
    /// SIGHUP, or `uturn reload` (which waits for the outcome on `reply`).
    Reload {
        by: &'static str,
        reply: Option<Sender<Result<String, String>>>,
    },
    /// `uturn status`: a one-line summary.
    Status(Sender<Result<String, String>>),
}

/// How often a drain checks whether the allocations have ended.
const DRAIN_POLL: Duration = Duration::from_millis(200);
/// How often a drain says how many allocations are left.
const DRAIN_PROGRESS: Duration = Duration::from_secs(10);
/// How long the control thread waits for shards' counters.
const STATS_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs the server until SIGINT/SIGTERM (and the drain that follows);
/// returns every shard's counters. `args` are the command-line flags, kept
/// for reloads (flags keep overriding the file); `log` changes the log level
/// on reload.
pub fn run(
    cfg: &Config,
    args: &RunArgs,
    log: Option<LogControl>,
) -> Result<Vec<ShardReport>, ServerError> {
    let shutdown = Arc::new(AtomicBool::new(false));
    let stops = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM];
    // The main thread learns of a signal from a channel this feeds (set up
    // before the flag, so that no signal sets the flag unseen).
    let mut pending = Signals::new(stops.iter().copied().chain([signal_hook::consts::SIGHUP]))
        .map_err(ServerError::Signals)?;
    for sig in stops {
        // Registered first, so it runs first: a second signal, arriving when
        // the flag is already set (a drain is under way), exits at once
        // with status 1.
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&shutdown))
            .map_err(ServerError::Signals)?;
        signal_hook::flag::register(sig, Arc::clone(&shutdown)).map_err(ServerError::Signals)?;
    }
    let signal_handle = pending.handle();
    let (event_tx, event_rx) = crossbeam_channel::bounded::<Event>(16);
    let signal_events = event_tx.clone();
    std::thread::Builder::new()
        .name("uturn-signals".into())
        .spawn(move || {
            for sig in pending.forever() {
                let event = match sig {
                    signal_hook::consts::SIGHUP => Event::Reload {
                        by: "SIGHUP",
                        reply: None,
                    },
                    signal_hook::consts::SIGINT => Event::Stop("SIGINT"),
                    _ => Event::Stop("SIGTERM"),
                };
                if signal_events.try_send(event).is_err() {
                    tracing::warn!("signal {sig} ignored: too many requests waiting");
                }
            }
        })
        .map_err(ServerError::Signals)?;
    let result = run_shards(cfg, args, log, &shutdown, event_tx, &event_rx);
    signal_handle.close();
    result
}

fn run_shards(
    cfg: &Config,
    args: &RunArgs,
    log: Option<LogControl>,
    shutdown: &AtomicBool,
    event_tx: Sender<Event>,
    events: &Receiver<Event>,
) -> Result<Vec<ShardReport>, ServerError> {
    let backend = choose_backend(cfg.io.backend, args)?;
    let network = &cfg.network;
    let workers = network.workers;
    let (mut listeners, bound) = bind_listeners(&network.listen, workers)?;
    let slices = port_slices(&network.relay_ports, workers).ok_or(ServerError::Ports(workers))?;
    // Bound before any shard starts, so that a taken path fails start-up cleanly.
    let control_socket = match &cfg.operations.control_socket {
        Some(path) => Some(ControlSocket::bind(path, event_tx).map_err(|source| {
            ServerError::ControlSocket {
                path: path.clone(),
                source,
            }
        })?),
        None => {
            drop(event_tx);
            None
        }
    };

    let mut nonce_key = [0u8; 32];
    getrandom::getrandom(&mut nonce_key).map_err(ServerError::Random)?;
    let own = own_addresses(network, &bound);
    tracing::debug!(
        own = own.len(),
        "relay's own addresses (denied as peers unless allowed)"
    );
    let settings = cfg.reloadable.relay_settings(nonce_key, &own);
    let ledger = Arc::new(AllocationLedger::new(settings.quotas));
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if cores.is_empty() {
        tracing::warn!("CPU affinity unavailable: shards are not pinned");
    }

    let (ready_tx, ready_rx) =
        crossbeam_channel::bounded::<Result<usize, (usize, io::Error)>>(workers);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<usize>(workers);
    let mut handles: Vec<JoinHandle<Option<ShardReport>>> = Vec::with_capacity(workers);
    let mut controls: Vec<ShardHandle> = Vec::with_capacity(workers);
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
            turn: network.turn_config(ports),
            settings: settings.clone(),
            ledger: Arc::clone(&ledger),
            control,
            io_batch_wait: cfg.io.batch_wait,
            io_gso: cfg.io.gso,
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

    for _ in 0..workers {
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

    let state = Arc::new(ControlState::default());
    let metrics = match cfg.operations.metrics {
        Some(addr) => {
            let info = StaticInfo {
                io_backend: backend.name(),
                workers,
            };
            match MetricsServer::start(addr, controls.clone(), info, Arc::clone(&state)) {
                Ok(m) => {
                    if !addr.ip().is_loopback() {
                        tracing::warn!(
                            %addr,
                            "metrics are served on a non-loopback address without authentication"
                        );
                    }
                    Some(m)
                }
                Err(source) => {
                    stop(shutdown, &controls, handles);
                    return Err(ServerError::Metrics { addr, source });
                }
            }
        }
        None => None,
    };
    announce(
        cfg,
        &bound,
        backend,
        metrics.as_ref().map(|m| m.addr),
        control_socket.as_ref().map(|c| c.path()),
    );
    tracing::info!(workers, io_backend = backend.name(), "uturn ready");

    let mut control = Control {
        args,
        current: cfg.clone(),
        nonce_key,
        bound,
        ledger,
        log,
        controls: &controls,
        state: Arc::clone(&state),
        drain: None,
    };
    let outcome = control.serve(events, &done_rx, shutdown);

    let (clean, first) = match outcome {
        Outcome::Stopped => (true, 0),
        Outcome::ShardStopped(i) => (false, i),
    };
    for c in &controls {
        c.send(ShardCommand::Shutdown);
    }
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
    if let Some(m) = metrics {
        m.stop();
    }
    if let Some(c) = control_socket {
        c.stop();
    }
    log_totals(&reports);
    match failed {
        Some(index) => Err(ServerError::ShardFailed(index)),
        None => Ok(reports),
    }
}

/// How the main loop ended.
enum Outcome {
    /// Asked to stop, drain done (or cut short).
    Stopped,
    /// A shard stopped on its own: it failed.
    ShardStopped(usize),
}

/// A drain under way.
struct Drain {
    deadline: Instant,
    next_progress: Instant,
}

/// The main thread's state once the shards run: reloads and drains.
struct Control<'a> {
    args: &'a RunArgs,
    /// The configuration in force (restart-only keys as at start-up).
    current: Config,
    /// Kept across reloads, so that nonces already handed out stay valid.
    nonce_key: [u8; 32],
    bound: Vec<SocketAddr>,
    ledger: Arc<AllocationLedger>,
    log: Option<LogControl>,
    controls: &'a [ShardHandle],
    state: Arc<ControlState>,
    drain: Option<Drain>,
}

impl Control<'_> {
    fn serve(
        &mut self,
        events: &Receiver<Event>,
        done: &Receiver<usize>,
        shutdown: &AtomicBool,
    ) -> Outcome {
        loop {
            let tick = if self.drain.is_some() {
                DRAIN_POLL
            } else {
                Duration::from_secs(3600)
            };
            crossbeam_channel::select! {
                recv(events) -> ev => match ev {
                    Ok(Event::Stop(sig)) => {
                        // Also set by the signal handler; set here for the
                        // control socket's sake and for tests.
                        shutdown.store(true, Ordering::SeqCst);
                        if self.drain.is_none() {
                            self.start_drain(sig);
                        }
                    }
                    Ok(Event::Reload { by, reply }) => {
                        let result = self.reload(by);
                        if let Some(reply) = reply {
                            let _ = reply.send(result);
                        }
                    }
                    Ok(Event::Status(reply)) => {
                        let _ = reply.send(Ok(self.status()));
                    }
                    // Only the signal thread holds no sender when the
                    // control socket is off; it never ends on its own.
                    Err(_) => std::thread::sleep(DRAIN_POLL),
                },
                // Shards stop on their own only when they fail.
                recv(done) -> index => return Outcome::ShardStopped(index.unwrap_or(0)),
                default(tick) => {}
            }
            if self.drain.is_some() && self.drain_finished() {
                return Outcome::Stopped;
            }
        }
    }

    fn start_drain(&mut self, sig: &'static str) {
        let timeout = self.current.reloadable.drain.timeout;
        let alternate = self.current.reloadable.drain.alternate_server;
        self.state.draining.store(true, Ordering::Relaxed);
        for c in self.controls {
            c.send(ShardCommand::Drain(alternate));
        }
        let now = Instant::now();
        self.drain = Some(Drain {
            deadline: now + timeout,
            next_progress: now + DRAIN_PROGRESS,
        });
        let refusal = alternate.map_or("508".to_string(), |a| {
            format!("300 with ALTERNATE-SERVER {a} (508 for the other address family)")
        });
        tracing::info!(
            signal = sig,
            timeout_secs = timeout.as_secs(),
            "draining: new allocations get {refusal}; existing ones are served until they end \
             or the timeout passes; a second signal exits at once"
        );
    }

    /// True when every allocation has ended or the drain timed out.
    fn drain_finished(&mut self) -> bool {
        let Some(d) = &mut self.drain else {
            return false;
        };
        let now = Instant::now();
        if now >= d.deadline {
            let left = live_allocations(self.controls);
            tracing::info!(
                allocations_left = left.map_or("unknown".to_string(), |n| n.to_string()),
                "drain timeout reached: stopping"
            );
            return true;
        }
        match live_allocations(self.controls) {
            Some(0) => {
                tracing::info!("drained: every allocation has ended; stopping");
                true
            }
            left => {
                if now >= d.next_progress {
                    d.next_progress = now + DRAIN_PROGRESS;
                    tracing::info!(
                        allocations_left = left.map_or("unknown".to_string(), |n| n.to_string()),
                        secs_to_timeout = d.deadline.saturating_duration_since(now).as_secs(),
                        "draining"
                    );
                }
                false
            }
        }
    }

    fn status(&self) -> String {
        let live = live_allocations(self.controls).map_or("unknown".to_string(), |n| n.to_string());
        let draining = self.drain.is_some();
        format!(
            "allocations {live}; draining {}; reloads ok {}, failed {}",
            if draining { "yes" } else { "no" },
            self.state.reloads_ok.load(Ordering::Relaxed),
            self.state.reloads_failed.load(Ordering::Relaxed)
        )
    }

    /// Reads the configuration again and hands shards the new credentials,
    /// peer policy and quotas. Nothing changes when the new file is invalid.
    fn reload(&mut self, by: &'static str) -> Result<String, String> {
        let result = self.try_reload();
        match &result {
            Ok(summary) => {
                self.state.reloads_ok.fetch_add(1, Ordering::Relaxed);
                tracing::info!(by, "configuration reloaded: {summary}");
            }
            Err(e) => {
                self.state.reloads_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    by,
                    "reload rejected, the running configuration stays in force: {e}"
                );
            }
        }
        result
    }

    fn try_reload(&mut self) -> Result<String, String> {
        if self.args.config.is_none() {
            return Err(
                "uturn was started without --config: there is no file to reload".to_string(),
            );
        }
        let new = Config::load(self.args).map_err(|e| e.to_string())?;
        for w in &new.warnings {
            tracing::warn!("{w}");
        }
        let next = &new.reloadable;
        // The peer policy refuses the relay's own addresses as they run.
        let own = own_addresses(&self.current.network, &self.bound);
        let settings = next.relay_settings(self.nonce_key, &own);
        self.ledger.set_limits(settings.quotas);
        let mut missed = 0;
        for c in self.controls {
            if !c.send(ShardCommand::Reload(settings.clone())) {
                missed += 1;
            }
        }
        crate::logging::set_client_details(next.logging.client_details);
        let level = match &self.log {
            Some(log) => log.set_level(&next.logging.level)?,
            None => format!("log level {}", next.logging.level),
        };
        let alternate = next.drain.alternate_server;
        if self.drain.is_some() && alternate != self.current.reloadable.drain.alternate_server {
            for c in self.controls {
                c.send(ShardCommand::Drain(alternate));
            }
        }
        // From here on the restart-only sections keep their running values.
        let needs_restart = self.current.reload(new);
        let Reloadable {
            auth,
            policy,
            logging,
            drain,
        } = &self.current.reloadable;
        let q = &policy.quotas;
        let mut summary = format!(
            "realm {:?}, {} static users, {} REST secrets, peers allow {} / deny {} prefixes, \
             quotas {}/user {} total {} permissions {} channels, max lifetime {} s, \
             unauthenticated replies {}/s burst {}, {level}, client details in logs {}, \
             drain timeout {} s",
            auth.realm,
            auth.users.len(),
            auth.rest_secrets.len(),
            policy.allow_peers.len(),
            policy.deny_peers.len(),
            q.allocations_per_user,
            q.total_allocations,
            q.permissions_per_allocation,
            q.channels_per_allocation,
            policy.max_lifetime.as_secs(),
            policy.unauth_per_second,
            policy.unauth_burst,
            if logging.client_details { "on" } else { "off" },
            drain.timeout.as_secs(),
        );
        if !needs_restart.is_empty() {
            summary.push_str(&format!(
                "; changed but kept until a restart: {}",
                needs_restart.join(", ")
            ));
        }
        if missed > 0 {
            summary.push_str(&format!("; {missed} workers did not take it (stopping?)"));
        }
        Ok(summary)
    }
}

/// Live allocations on every shard; None when a shard did not answer.
fn live_allocations(controls: &[ShardHandle]) -> Option<u64> {
    collect_reports(controls, STATS_TIMEOUT)
        .iter()
        .map(|r| r.as_ref().map(|r| r.gauges.allocations))
        .sum()
}

/// The backend every shard runs on. `Uring` was checked when the
/// configuration was loaded; `Auto` probes here, once.
/// Probes the kernel for the io backend the configuration asks for. Done
/// here, at start-up, and not when the file is checked: `check-config` may
/// run on another machine than the one that serves.
fn choose_backend(choice: IoBackendChoice, args: &RunArgs) -> Result<Backend, ServerError> {
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
        // SECURITY.md rule 15: the first socket claims the address for this
        // process, before any socket of ours could join another's group.
        let first = udp_listener(addr, Group::Open).map_err(|source| match source.kind() {
            io::ErrorKind::AddrInUse => ServerError::AddressTaken { addr },
            _ => ServerError::Listen { addr, source },
        })?;
        let resolved = first
            .local_addr()
            .map_err(|source| ServerError::Listen { addr, source })?;
        per_shard[0].push(first);
        for shard in per_shard.iter_mut().skip(1) {
            shard.push(udp_listener(resolved, Group::Join).map_err(|source| {
                ServerError::Listen {
                    addr: resolved,
                    source,
                }
            })?);
        }
        bound.push(resolved);
    }
    Ok((per_shard, bound))
}

/// The relay's own addresses for the peer policy: listen and relay addresses,
/// and every address of the host's interfaces (a relay must not become a way
/// into the host's other services, whatever it listens on).
fn own_addresses(network: &Network, bound: &[SocketAddr]) -> Vec<IpAddr> {
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
fn announce(
    cfg: &Config,
    bound: &[SocketAddr],
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

fn log_totals(reports: &[ShardReport]) {
    let mut io = IoStats::default();
    let mut turn = Stats::default();
    for r in reports {
        io.add(&r.io);
        turn.add(&r.turn);
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
