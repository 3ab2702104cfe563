//! Bytes from one socket to another without a copy through user space:
//! `splice(2)` into a pipe, then out of it. The kernel moves page
//! references, not bytes, where it can. Used by the RFC 6062 pipes between
//! a peer connection and a plain TCP data connection.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// One direction's pipe and how many bytes sit in it.
#[derive(Debug)]
pub struct Splice {
    read: OwnedFd,
    write: OwnedFd,
    held: usize,
    capacity: usize,
}

/// What `fill` found.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Filled {
    /// This many bytes moved into the pipe (0: nothing to read now, or the
    /// pipe is full).
    Bytes(usize),
    /// The source has ended (EOF).
    End,
}

impl Splice {
    /// A non-blocking pipe of the kernel's default size.
    pub fn new() -> io::Result<Splice> {
        let mut fds = [0; 2];
        // SAFETY: `fds` is a live array of two ints for the kernel to fill.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded: both descriptors are new and ours alone.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: plain fcntl on a descriptor we own, no pointers.
        let size = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        let capacity = usize::try_from(size).unwrap_or(0).max(4096);
        Ok(Splice {
            read,
            write,
            held: 0,
            capacity,
        })
    }

    /// Bytes in the pipe, not yet moved out.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Whether the pipe may take more.
    pub fn has_room(&self) -> bool {
        self.held < self.capacity
    }

    /// Moves what `from` (a non-blocking socket) has into the pipe, as
    /// much as it has room for.
    pub fn fill(&mut self, from: BorrowedFd<'_>) -> io::Result<Filled> {
        let room = self.capacity.saturating_sub(self.held);
        if room == 0 {
            return Ok(Filled::Bytes(0));
        }
        match splice(from.as_raw_fd(), self.write.as_raw_fd(), room) {
            Ok(0) => Ok(Filled::End),
            Ok(n) => {
                self.held += n;
                Ok(Filled::Bytes(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Filled::Bytes(0)),
            Err(e) => Err(e),
        }
    }

    /// Moves what the pipe holds into `to` (a non-blocking socket), as much
    /// as it takes. Returns the bytes moved.
    pub fn drain(&mut self, to: BorrowedFd<'_>) -> io::Result<usize> {
        if self.held == 0 {
            return Ok(0);
        }
        match splice(self.read.as_raw_fd(), to.as_raw_fd(), self.held) {
            Ok(n) => {
                self.held = self.held.saturating_sub(n);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }
}

fn splice(from: i32, to: i32, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: both descriptors are open for the call; null offsets mean
        // "the file position", which is what pipes and sockets have.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn bytes_go_from_one_socket_to_another_and_the_end_is_seen() {
        let (mut src_peer, src) = pair();
        let (dst, mut dst_peer) = pair();
        src.set_nonblocking(true).unwrap();
        dst.set_nonblocking(true).unwrap();
        let mut s = Splice::new().unwrap();
        assert_eq!(
            s.fill(src.as_fd()).unwrap(),
            Filled::Bytes(0),
            "nothing yet"
        );
        let payload: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        src_peer.write_all(&payload).unwrap();
        let mut got = vec![0u8; payload.len()];
        let mut have = 0;
        dst_peer
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        for _ in 0..10_000 {
            s.fill(src.as_fd()).unwrap();
            s.drain(dst.as_fd()).unwrap();
            if s.held() == 0 {
                if let Ok(n) = dst_peer.read(&mut got[have..]) {
                    have += n;
                }
            }
            if have == payload.len() {
                break;
            }
        }
        assert_eq!(got, payload);
        drop(src_peer);
        let mut end = Filled::Bytes(0);
        for _ in 0..1000 {
            end = s.fill(src.as_fd()).unwrap();
            if end == Filled::End {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(end, Filled::End);
    }
}
