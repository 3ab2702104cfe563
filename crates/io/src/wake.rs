//! A wake-up another thread can give a shard: an eventfd. The control side
//! writes it after sending a command; the shard's io driver watches it (a
//! poll on the ring, or an epoll registration) and drains it when woken.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A non-blocking eventfd.
#[derive(Debug)]
pub struct WakeFd(OwnedFd);

impl WakeFd {
    pub fn new() -> io::Result<WakeFd> {
        // SAFETY: eventfd has no memory effects; a non-negative result is a
        // new descriptor that nothing else owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        Ok(WakeFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes the descriptor readable (and the watcher wake). Never blocks:
    /// a counter that is already at its maximum is readable anyway.
    pub fn wake(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live local array.
        let rc = unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        if rc < 0 {
            tracing::debug!(error = %io::Error::last_os_error(), "eventfd write failed");
        }
    }

    /// Resets the counter, so that the descriptor is no longer readable.
    /// True when it was woken since the last drain.
    pub fn drain(&self) -> bool {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live local array.
        let rc = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        rc == 8
    }
}

impl AsFd for WakeFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakes_once_until_drained() {
        let w = WakeFd::new().unwrap();
        assert!(!w.drain(), "nothing written yet");
        w.wake();
        w.wake();
        assert!(w.drain());
        assert!(!w.drain(), "the counter was reset");
    }
}
