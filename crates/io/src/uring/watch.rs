//! One more descriptor the ring watches for readability: the shard's
//! stream poller (an epoll instance of its own for TCP and TLS sockets).
//! One-shot polls, re-armed at the end of every turn: a one-shot poll on a
//! descriptor that is already readable completes at once, so the watch is
//! level-triggered, as the epoll instance behind it is, and nothing left
//! unread by one turn is forgotten.

use std::os::fd::RawFd;

use io_uring::opcode;
use io_uring::types;

use super::{user_data, Uring, KIND_WATCH};

/// The watched descriptor and the state of its poll.
pub(super) struct Watch {
    fd: Option<RawFd>,
    armed: bool,
    ready: bool,
}

impl Watch {
    pub(super) fn new() -> Watch {
        Watch {
            fd: None,
            armed: false,
            ready: false,
        }
    }
}

impl Uring {
    /// Watches `fd` for readability from the next `wait` on; `take_watch`
    /// says when it was readable. The caller keeps `fd` open as long as
    /// the ring lives (a poll in flight holds its own reference to the
    /// file, so an early close is not unsafe, only useless).
    pub fn watch_readable(&mut self, fd: RawFd) {
        self.watch.fd = Some(fd);
    }

    /// Whether the watched descriptor was readable since the last call.
    pub fn take_watch(&mut self) -> bool {
        std::mem::take(&mut self.watch.ready)
    }

    pub(super) fn arm_watch(&mut self) {
        let Some(fd) = self.watch.fd.filter(|_| !self.watch.armed) else {
            return;
        };
        let e = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .build()
            .user_data(user_data(KIND_WATCH, 0));
        if self.ctl.push(&e) {
            self.watch.armed = true;
        }
    }

    pub(super) fn on_watch(&mut self, res: i32) {
        self.watch.armed = false;
        if res < 0 && res != -libc::ECANCELED {
            self.ctl.stats.ring_errors += 1;
            tracing::debug!(error = %std::io::Error::from_raw_os_error(-res), "stream poll failed");
        }
        // Look anyway: an error may hide readiness, and a look costs one
        // epoll_wait that does not block.
        self.watch.ready = true;
    }
}
