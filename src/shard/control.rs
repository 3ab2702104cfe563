//! How the control thread talks to a shard: commands on a crossbeam channel,
//! then a write to the shard's eventfd, which its io driver watches (a poll
//! on the ring, or an epoll registration), so that a sleeping shard wakes at
//! once instead of noticing at its next timeout.

use std::io;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::ShardReport;
use crate::io::wake::WakeFd;

/// What the control thread can ask of a shard.
#[derive(Debug)]
pub enum ShardCommand {
    /// Delete every allocation, close every socket and stop.
    Shutdown,
    /// Send a snapshot of the counters to this channel.
    Stats(Sender<ShardReport>),
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
