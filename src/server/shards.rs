//! Starting the shard threads: one per worker, pinned to a core, each
//! building its shard on its own thread and saying when it is ready; and
//! stopping the ones already started when start-up fails.

use std::io;
use std::net::UdpSocket;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::ServerError;
use crate::config::Config;
use crate::io::Backend;
use crate::policy::AllocationLedger;
use crate::shard::{
    DtlsSpec, OffloadSpec, Shard, ShardCommand, ShardHandle, ShardReport, ShardSpec, StreamSpec,
};
use crate::turn::Settings;

/// Sends the shard's index when dropped, also when the thread unwinds.
struct DoneGuard(Sender<usize>, usize);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

/// The shards, running.
pub(super) struct Running {
    pub handles: Vec<JoinHandle<Option<ShardReport>>>,
    pub controls: Vec<ShardHandle>,
    /// Each shard's index, sent when its thread ends.
    pub done: Receiver<usize>,
}

/// Starts one shard per port slice and waits until every one is ready (or
/// one failed, which stops the others).
#[allow(clippy::too_many_arguments)]
pub(super) fn start_shards(
    cfg: &Config,
    backend: Backend,
    native_streams: bool,
    mut listeners: Vec<Vec<UdpSocket>>,
    streams: Vec<StreamSpec>,
    dtls: Vec<DtlsSpec>,
    mut xdp: Vec<Option<OffloadSpec>>,
    slices: Vec<RangeInclusive<u16>>,
    settings: &Settings,
    ledger: &Arc<AllocationLedger>,
    shutdown: &AtomicBool,
) -> Result<Running, ServerError> {
    let network = &cfg.network;
    let workers = slices.len();
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if cores.is_empty() {
        tracing::warn!("CPU affinity unavailable: shards are not pinned");
    }

    let (ready_tx, ready_rx) =
        crossbeam_channel::bounded::<Result<usize, (usize, io::Error)>>(workers);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<usize>(workers);
    let mut handles: Vec<JoinHandle<Option<ShardReport>>> = Vec::with_capacity(workers);
    let mut controls: Vec<ShardHandle> = Vec::with_capacity(workers);
    let mut streams = streams.into_iter();
    let mut channels = crate::shard::channels(workers)
        .map_err(|source| ServerError::Start { index: 0, source })?
        .into_iter();
    let mut dtls = dtls.into_iter();
    for (index, ports) in slices.into_iter().enumerate() {
        let Some((control_tx, control)) = channels.next() else {
            break;
        };
        let spec = ShardSpec {
            index,
            listeners: std::mem::take(&mut listeners[index]),
            turn: network.turn_config(ports),
            settings: settings.clone(),
            ledger: Arc::clone(ledger),
            control,
            io_batch_wait: cfg.io.batch_wait,
            io_gso: cfg.io.gso,
            streams: streams.next().unwrap_or_else(StreamSpec::none),
            native_streams,
            xdp: xdp.get_mut(index).and_then(Option::take),
            dtls: dtls.next().unwrap_or_else(DtlsSpec::none),
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

    Ok(Running {
        handles,
        controls,
        done: done_rx,
    })
}

/// Tells the shards already started to stop and waits for them.
pub(super) fn stop(
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
