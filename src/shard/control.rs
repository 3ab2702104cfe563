//! How the control thread talks to a shard: commands on a crossbeam channel,
//! then a write to the shard's eventfd, which its io driver watches (a poll
//! on the ring, or an epoll registration), so that a sleeping shard wakes at
//! once instead of noticing at its next timeout.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::ShardReport;
use crate::io::wake::WakeFd;
use crate::turn::Settings;

/// What the control thread can ask of a shard.
pub enum ShardCommand {
    /// Delete every allocation, close every socket and stop.
    Shutdown,
    /// Send a snapshot of the counters to this channel.
    Stats(Sender<ShardReport>),
    /// Put the reloadable settings in force (credentials, peer policy,
    /// quotas, lifetimes, rate limits) and, when there is one, the TLS
    /// configuration for new connections; every allocation and connection
    /// stays.
    Reload(Settings, Option<Arc<rustls::ServerConfig>>),
    /// New DTLS sessions use this certificate (sent with a reload that
    /// read the TLS files again).
    Dtls(uturn_dtls::DtlsContext),
    /// Refuse new allocations from now on: 300 with this ALTERNATE-SERVER
    /// (for clients of its family), else 508.
    Drain(Option<SocketAddr>),
}

impl std::fmt::Debug for ShardCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShardCommand::Shutdown => f.write_str("Shutdown"),
            ShardCommand::Stats(_) => f.write_str("Stats"),
            ShardCommand::Reload(..) => f.write_str("Reload"),
            ShardCommand::Dtls(_) => f.write_str("Dtls"),
            ShardCommand::Drain(a) => write!(f, "Drain({a:?})"),
        }
    }
}

/// Commands a shard may have waiting; more are refused (the sender is told).
const QUEUE: usize = 64;

/// The control thread's end of one shard's command channel.
#[derive(Clone, Debug)]
pub struct ShardHandle {
    tx: Sender<ShardCommand>,
    wake: Arc<WakeFd>,
}

/// The shard's end: the commands, and the descriptor its io driver watches.
pub struct ShardControl {
    pub(super) rx: Receiver<ShardCommand>,
    pub(super) wake: Arc<WakeFd>,
}

/// A command channel and its wake-up descriptor.
pub fn channel() -> io::Result<(ShardHandle, ShardControl)> {
    let wake = Arc::new(WakeFd::new()?);
    let (tx, rx) = crossbeam_channel::bounded(QUEUE);
    Ok((
        ShardHandle {
            tx,
            wake: Arc::clone(&wake),
        },
        ShardControl { rx, wake },
    ))
}

impl ShardHandle {
    /// Queues `cmd` and wakes the shard. False when the shard has stopped
    /// or has too many commands waiting.
    pub fn send(&self, cmd: ShardCommand) -> bool {
        match self.tx.try_send(cmd) {
            Ok(()) => {
                self.wake.wake();
                true
            }
            Err(TrySendError::Full(_)) => {
                // Still wake it: it has commands to read.
                self.wake.wake();
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// Asks every shard for its counters and waits for the answers until
/// `timeout` has passed; a shard that did not answer in time (or has
/// stopped) is None.
pub fn collect_reports(handles: &[ShardHandle], timeout: Duration) -> Vec<Option<ShardReport>> {
    let deadline = Instant::now() + timeout;
    let (tx, rx) = crossbeam_channel::bounded(handles.len().max(1));
    let asked: Vec<bool> = handles
        .iter()
        .map(|h| h.send(ShardCommand::Stats(tx.clone())))
        .collect();
    drop(tx);
    let mut out: Vec<Option<ShardReport>> = vec![None; handles.len()];
    let mut waiting = asked.iter().filter(|&&a| a).count();
    while waiting > 0 {
        match rx.recv_deadline(deadline) {
            Ok(r) => {
                let i = r.index;
                if let Some(slot) = out.get_mut(i) {
                    *slot = Some(r);
                }
                waiting -= 1;
            }
            Err(_) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_wakes_the_descriptor() {
        let (h, c) = channel().unwrap();
        assert!(c.rx.try_recv().ok().is_none());
        assert!(!c.wake.drain());
        assert!(h.send(ShardCommand::Shutdown));
        assert!(c.wake.drain(), "woken");
        assert!(matches!(c.rx.try_recv().ok(), Some(ShardCommand::Shutdown)));
        assert!(c.rx.try_recv().ok().is_none());
        drop(c);
        assert!(!h.send(ShardCommand::Shutdown), "the shard is gone");
    }
}
