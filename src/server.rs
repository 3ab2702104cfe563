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
//!
//! This file: the order of start-up and teardown (`run`, `run_shards`).
//! `startup`: the backend probe, listener sockets, the start-up lines.
//! `shards`: spawning, pinning and stopping the shard threads. `control`:
//! the main thread while serving (reload, drain, status).
//! `control_socket`: the unix socket `uturn reload` and `uturn status` use.

mod control;
mod control_socket;
mod shards;
mod startup;
mod xdp;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use signal_hook::iterator::Signals;

use crate::config::{port_slices, Config, RunArgs};
use crate::logging::LogControl;
use crate::metrics::{ControlState, MetricsServer, StaticInfo};
use crate::policy::AllocationLedger;
use crate::shard::{ShardCommand, ShardReport};
use control::{Control, Outcome};
pub use control_socket::ask as ask_control_socket;
use control_socket::ControlSocket;
use shards::{start_shards, stop, Running};
use startup::{
    announce, bind_listeners, choose_backend, choose_stream_io, log_totals, own_addresses,
    stream_specs,
};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {proto} {addr}: {source}")]
    Listen {
        proto: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error(
        "cannot listen on {proto} {addr}: another process already holds it (another uturn?); \
         refusing to share it, since the kernel would split that process's clients \
         between the two"
    )]
    AddressTaken {
        proto: &'static str,
        addr: SocketAddr,
    },
    #[error("cannot make the demo TLS certificate: {0}")]
    DemoCertificate(String),
    #[error("DTLS cannot serve the TLS certificate: {0}")]
    DtlsCertificate(String),
    #[error("{key}: io_uring unavailable ({why}); use \"auto\" or \"syscall\"")]
    IoUring { key: &'static str, why: String },
    #[error("{key}: TCP and TLS cannot be served on io_uring ({why}); use \"auto\" or \"epoll\"")]
    StreamsOnRing { key: &'static str, why: String },
    #[error("{key}: the XDP fast path cannot be used: {why}; use \"auto\" or \"off\"")]
    Xdp { key: &'static str, why: String },
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
                | ServerError::StreamsOnRing { .. }
                | ServerError::Xdp { .. }
                | ServerError::Ports(_)
                | ServerError::Metrics { .. }
                | ServerError::ControlSocket { .. }
        )
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
    // The actions of one signal run in the order they were registered. The
    // check that makes a second signal exit at once (status 1, when the flag
    // is already set: a drain is under way) must come before anything that
    // can wake another thread: the channel below wakes the main thread,
    // which sets the flag too, and a handler preempted between the two
    // would otherwise find the flag set by its own signal and exit on the
    // first one.
    for sig in stops {
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&shutdown))
            .map_err(ServerError::Signals)?;
    }
    // The main thread learns of a signal from a channel this feeds.
    let mut pending = Signals::new(stops.iter().copied().chain([signal_hook::consts::SIGHUP]))
        .map_err(ServerError::Signals)?;
    // Last, so that no signal sets the flag without the main thread seeing
    // it (which would make the next signal exit instead of draining).
    for sig in stops {
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
    let (listeners, bound) = bind_listeners(&network.listen, workers)?;
    let mut streams = stream_specs(cfg)?;
    let dtls_specs = std::mem::take(&mut streams.dtls);
    let has_streams = !cfg.streams.listen_tcp.is_empty() || !cfg.streams.listen_tls.is_empty();
    let native_streams = choose_stream_io(cfg.io.streams, backend, has_streams, args)?;
    let (stream_bound, demo_tls) = (streams.bound.clone(), streams.demo);
    let slices = port_slices(&network.relay_ports, workers).ok_or(ServerError::Ports(workers))?;
    let (xdp, xdp_specs) = xdp::attach(cfg, args, &bound)?;
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
    let Running {
        handles,
        controls,
        done: done_rx,
    } = start_shards(
        cfg,
        backend,
        native_streams,
        listeners,
        streams.specs,
        dtls_specs,
        xdp_specs,
        slices,
        &settings,
        &ledger,
        shutdown,
    )?;

    let state = Arc::new(ControlState::default());
    let metrics = match cfg.operations.metrics {
        Some(addr) => {
            let info = StaticInfo {
                io_backend: backend.name(),
                workers,
                xdp: xdp.as_ref().map(|x| Arc::clone(&x.program)),
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
        &stream_bound,
        demo_tls,
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
    // Detaches the XDP program, now that no shard keeps routes in its maps.
    drop(xdp);
    if let Some(c) = control_socket {
        c.stop();
    }
    log_totals(&reports);
    match failed {
        Some(index) => Err(ServerError::ShardFailed(index)),
        None => Ok(reports),
    }
}
