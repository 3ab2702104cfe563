//! How the control thread talks to a shard: commands on a crossbeam channel,
//! then a write to the shard's eventfd, which its io driver watches (a poll
//! on the ring, or an epoll registration), so that a sleeping shard wakes at
//! once instead of noticing at its next timeout.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::tcp::DataConn;
use super::ShardReport;
use crate::io::wake::WakeFd;
use crate::turn::{ConnectionId, Settings, Transport};

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
    /// Letters from the other shards (RFC 6062 data connections).
    pub(super) mail: Mailbox,
}

/// What shards send each other: an RFC 6062 data connection lands on
/// whichever shard the kernel picks, while its peer connection lives on the
/// shard that owns the allocation (the one its CONNECTION-ID names).
pub enum Letter {
    /// A data connection's ConnectionBind, for the owner to decide; `conn`
    /// names the connection on shard `from`.
    Bind {
        from: usize,
        conn: u64,
        transport: Transport,
        msg: Vec<u8>,
    },
    /// The owner's answer, to send on connection `conn`; bound when `id`.
    Bound {
        conn: u64,
        reply: Vec<u8>,
        id: Option<ConnectionId>,
    },
    /// A bound data connection, for the owner's TCP relay.
    Adopt { id: ConnectionId, data: DataConn },
    /// A data connection bound to peer connection `id` closed before it
    /// could be handed over: the owner closes the peer connection.
    Unbound { id: ConnectionId },
}

/// Letters may wait per shard; more are refused (and what they carry let
/// go: a ConnectionBind unanswered, a data connection closed).
const MAILBOX: usize = 1024;

/// A shard's letters in, and the way to every shard's.
pub struct Mailbox {
    rx: Receiver<Letter>,
    to: Vec<(Sender<Letter>, Arc<WakeFd>)>,
}

impl Mailbox {
    /// Sends `letter` to shard `to` and wakes it; gives it back when it
    /// cannot be sent.
    pub(super) fn send(&self, to: usize, letter: Letter) -> Result<(), Letter> {
        let Some((tx, wake)) = self.to.get(to) else {
            return Err(letter);
        };
        match tx.try_send(letter) {
            Ok(()) => {
                wake.wake();
                Ok(())
            }
            Err(e) => Err(e.into_inner()),
        }
    }

    pub(super) fn try_recv(&self) -> Option<Letter> {
        self.rx.try_recv().ok()
    }
}

/// Command channels for `n` shards, with mailboxes between them.
pub fn channels(n: usize) -> io::Result<Vec<(ShardHandle, ShardControl)>> {
    let mut wakes = Vec::with_capacity(n);
    let mut letters = Vec::with_capacity(n);
    for _ in 0..n {
        wakes.push(Arc::new(WakeFd::new()?));
        letters.push(crossbeam_channel::bounded::<Letter>(MAILBOX));
    }
    let to: Vec<(Sender<Letter>, Arc<WakeFd>)> = letters
        .iter()
        .zip(&wakes)
        .map(|((tx, _), w)| (tx.clone(), Arc::clone(w)))
        .collect();
    Ok(letters
        .into_iter()
        .zip(wakes)
        .map(|((_, rx), wake)| {
            let (tx, crx) = crossbeam_channel::bounded(QUEUE);
            (
                ShardHandle {
                    tx,
                    wake: Arc::clone(&wake),
                },
                ShardControl {
                    rx: crx,
                    wake,
                    mail: Mailbox { rx, to: to.clone() },
                },
            )
        })
        .collect())
}

/// A command channel and its wake-up descriptor, for one shard alone.
pub fn channel() -> io::Result<(ShardHandle, ShardControl)> {
    channels(1)?
        .pop()
        .ok_or_else(|| io::Error::other("no channel"))
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
