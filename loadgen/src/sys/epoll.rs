//! A level-triggered epoll instance watching for readable descriptors.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A level-triggered epoll instance; each descriptor carries a `u64` token.
pub struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
    ready: usize,
}

impl Epoll {
    /// `capacity`: most events returned by one `wait`.
    pub fn new(capacity: usize) -> io::Result<Epoll> {
        // SAFETY: plain system call with a flag argument.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll {
            // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)],
            ready: 0,
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is a live epoll_event read by the kernel during the
        // call (ignored for EPOLL_CTL_DEL); a bad `fd` only makes it fail.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Watches `fd` for input, reporting it as `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token)
    }

    /// Stops watching `fd`.
    pub fn remove(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0)
    }

    /// Waits up to `timeout_ms` (0: poll, -1: forever); returns how many
    /// descriptors are ready (their tokens: [`Epoll::token`]). An
    /// interrupted wait reports none.
    pub fn wait(&mut self, timeout_ms: i32) -> io::Result<usize> {
        self.ready = 0;
        let cap = self.events.len().min(i32::MAX as usize) as libc::c_int;
        // SAFETY: `events` is an exclusively borrowed array of `cap`
        // epoll_events that the kernel fills.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                cap,
                timeout_ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        self.ready = n as usize;
        Ok(self.ready)
    }

    /// Token of ready descriptor `i` (< the last `wait`'s count).
    pub fn token(&self, i: usize) -> u64 {
        let ev = self.events[..self.ready][i];
        ev.u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn reports_readable_sockets_by_token() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut ep = Epoll::new(4).unwrap();
        ep.add(a.as_raw_fd(), 7).unwrap();
        ep.add(b.as_raw_fd(), 9).unwrap();
        assert_eq!(ep.wait(0).unwrap(), 0);
        b.send_to(b"x", a.local_addr().unwrap()).unwrap();
        assert_eq!(ep.wait(1000).unwrap(), 1);
        assert_eq!(ep.token(0), 7);
        ep.remove(a.as_raw_fd()).unwrap();
        assert_eq!(ep.wait(0).unwrap(), 0);
        assert!(ep.remove(a.as_raw_fd()).is_err());
    }
}
