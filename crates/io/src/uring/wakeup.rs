//! Wake-ups from other threads: the ring polls the shard's eventfd, so
//! that a command wakes a shard asleep in `io_uring_enter`.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

use io_uring::{cqueue, opcode, types};

use super::{user_data, Uring, KIND_WAKE};
use crate::wake::WakeFd;

/// The eventfd the ring watches for wake-ups from other threads. The poll
/// on it reads no memory of the program; the descriptor is kept open here
/// for as long as the ring may refer to it.
pub(super) struct Wake {
    fd: Option<Arc<WakeFd>>,
    /// A poll is in flight.
    armed: bool,
    /// Multishot poll (Linux 5.13); one-shot polls re-armed after each
    /// wake-up when the kernel refuses it.
    multishot: bool,
    /// A wake-up arrived since the last `take_wake`.
    woken: bool,
}

impl Wake {
    pub(super) fn new() -> Wake {
        Wake {
            fd: None,
            armed: false,
            multishot: true,
            woken: false,
        }
    }
}

impl Uring {
    /// Watches `fd`: each time it becomes readable, `wait` returns and
    /// `take_wake` says so once. Armed with the next `wait`.
    pub fn watch_wake(&mut self, fd: Arc<WakeFd>) {
        self.wake.fd = Some(fd);
    }

    /// Whether the wake-up descriptor was woken since the last call; if so
    /// it is drained (the next wake-up is seen again).
    pub fn take_wake(&mut self) -> bool {
        let woken = std::mem::take(&mut self.wake.woken);
        if woken {
            if let Some(fd) = &self.wake.fd {
                fd.drain();
            }
        }
        woken
    }

    pub(super) fn arm_wake(&mut self) {
        let w = &self.wake;
        let Some(fd) = w.fd.as_ref().filter(|_| !w.armed) else {
            return;
        };
        let e = opcode::PollAdd::new(types::Fd(fd.as_fd().as_raw_fd()), libc::POLLIN as u32)
            .multi(w.multishot)
            .build()
            .user_data(user_data(KIND_WAKE, 0));
        // If it cannot be queued now, the next turn tries again.
        if self.ctl.push(&e) {
            self.wake.armed = true;
        }
    }

    pub(super) fn on_wake(&mut self, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.wake.armed = false;
        }
        if res >= 0 {
            self.wake.woken = true;
            return;
        }
        if res == -libc::EINVAL && self.wake.multishot {
            tracing::debug!(
                "multishot poll refused; watching the wake-up descriptor with one-shot polls"
            );
            self.wake.multishot = false;
        } else if res != -libc::ECANCELED {
            self.ctl.stats.ring_errors += 1;
            tracing::debug!(error = %io::Error::from_raw_os_error(-res), "wake-up poll failed");
        }
        // Look for commands anyway: a wake-up may hide behind the error.
        self.wake.woken = true;
    }
}
