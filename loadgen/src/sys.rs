//! The few system calls the generator needs beyond `std`: epoll,
//! `recvmmsg`/`sendmmsg` over preallocated batches, one `sendmsg` with
//! `UDP_SEGMENT` (GSO), clocks, the descriptor limit and the timer slack.
//!
//! Every pointer handed to the kernel is rebuilt from `&mut self` right
//! before the call and points into buffers owned by the wrapper, so no safe
//! caller can move or free them while the kernel uses them.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Largest number of segments one UDP_SEGMENT write may carry
/// (`UDP_MAX_SEGMENTS` in older kernels; newer ones allow more).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Largest UDP payload of one GSO write (IPv4 limit, with room to spare).
pub const GSO_MAX_BYTES: usize = 65_000;

/// `CLOCK_MONOTONIC` in nanoseconds; the clock every packet timestamp uses.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CPU time used by the calling thread, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, exclusive timespec for the kernel to fill;
    // both clocks exist on every Linux this builds for.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Raises the soft descriptor limit to the hard limit; returns the soft
/// limit in force afterwards.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, exclusive rlimit for the kernel to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit read by the kernel only.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    lim.rlim_cur
}

/// Makes the calling thread's sleeps end within `ns` of their deadline
/// (the default slack is 50 µs, coarse next to a packet every few µs).
pub fn set_timer_slack_ns(ns: u64) {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong, 0, 0, 0);
    }
}

// ---------------------------------------------------------------------------
// Socket addresses.

/// A destination address in the form the kernel takes, converted once.
#[derive(Clone, Copy)]
pub struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl RawAddr {
    pub fn new(addr: &SocketAddr) -> RawAddr {
        let sa = socket2::SockAddr::from(*addr);
        // SAFETY: sockaddr_storage is plain integers; all-zero is valid.
        let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let len = sa.len();
        // SAFETY: `sa.as_ptr()` points at `len` valid bytes of a sockaddr,
        // and `len` ≤ size_of::<sockaddr_storage>() (socket2 guarantees it);
        // the regions do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                sa.as_ptr().cast::<u8>(),
                (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
                len as usize,
            );
        }
        RawAddr { storage, len }
    }
}

// ---------------------------------------------------------------------------
// epoll.

/// A level-triggered epoll instance watching for readable sockets.
pub struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    /// `capacity`: most events returned by one `wait`.
    pub fn new(capacity: usize) -> io::Result<Epoll> {
        // SAFETY: plain system call with a flag argument.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll {
            fd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)],
        })
    }

    /// Watches `fd` for input, reporting it as `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event read by the kernel during the call.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stops watching `fd`.
    pub fn remove(&self, fd: RawFd) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `add`; the event is ignored for EPOLL_CTL_DEL.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` (0: poll, -1: forever); returns the tokens of
    /// the ready descriptors. An interrupted wait returns no tokens.
    pub fn wait(&mut self, timeout_ms: i32) -> io::Result<impl Iterator<Item = u64> + '_> {
        // SAFETY: `events` is a valid buffer of `len` epoll_events that the
        // kernel fills; it is not touched elsewhere during the call.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                timeout_ms,
            )
        };
        let n = if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
            0
        } else {
            n as usize
        };
        Ok(self.events[..n].iter().map(|e| e.u64))
    }
}

// ---------------------------------------------------------------------------
// recvmmsg.

/// A batch of receive slots for `recvmmsg`.
pub struct RecvBatch {
    buf: Vec<u8>,
    slot: usize,
    lens: Vec<usize>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside `iovs`/`hdrs` are only ever set right
// before a call and point into `buf`, which moves with the struct; nothing
// is shared between threads.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// `count` slots of `slot` bytes each.
    pub fn new(count: usize, slot: usize) -> RecvBatch {
        let count = count.max(1);
        RecvBatch {
            buf: vec![0; count * slot],
            slot,
            lens: vec![0; count],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                count
            ],
            // SAFETY: mmsghdr is plain integers and pointers; all-zero is valid.
            hdrs: vec![unsafe { mem::zeroed::<libc::mmsghdr>() }; count],
        }
    }

    /// Receives up to a batch from `fd` without blocking; `Ok(0)` when
    /// nothing is queued.
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        let count = self.lens.len();
        let base = self.buf.as_mut_ptr();
        for i in 0..count {
            // SAFETY: i * slot + slot ≤ buf.len(), so the pointer stays inside `buf`.
            self.iovs[i].iov_base = unsafe { base.add(i * self.slot) }.cast();
            self.iovs[i].iov_len = self.slot;
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = std::ptr::null_mut();
            h.msg_namelen = 0;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        loop {
            // SAFETY: `hdrs` holds `count` headers whose iovecs point into
            // `buf` (exclusively borrowed through &mut self for the call).
            let n = unsafe {
                libc::recvmmsg(
                    fd.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    count as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n >= 0 {
                let n = n as usize;
                for i in 0..n {
                    self.lens[i] = (self.hdrs[i].msg_len as usize).min(self.slot);
                }
                return Ok(n);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(0),
                _ => return Err(e),
            }
        }
    }

    /// Datagram `i` of the last `recv`.
    pub fn get(&self, i: usize) -> &[u8] {
        let start = i * self.slot;
        &self.buf[start..start + self.lens[i]]
    }
}

// ---------------------------------------------------------------------------
// sendmmsg and UDP_SEGMENT.

/// A batch of equal-length datagrams to one destination, for `sendmmsg`.
pub struct SendBatch {
    buf: Vec<u8>,
    slot: usize,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    dest: Option<RawAddr>,
}

// SAFETY: as for RecvBatch: raw pointers are rebuilt before each call and
// point into buffers the struct owns.
unsafe impl Send for SendBatch {}

impl SendBatch {
    /// `count` slots of `slot` bytes each.
    pub fn new(count: usize, slot: usize) -> SendBatch {
        let count = count.max(1);
        SendBatch {
            buf: vec![0; count * slot],
            slot,
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                count
            ],
            // SAFETY: mmsghdr is plain integers and pointers; all-zero is valid.
            hdrs: vec![unsafe { mem::zeroed::<libc::mmsghdr>() }; count],
            dest: None,
        }
    }

    /// Slot `i`, to be filled by the caller.
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        let start = i * self.slot;
        &mut self.buf[start..start + self.slot]
    }

    /// Sends slots `0..count`, each `len` bytes, to `dest` (or the socket's
    /// connected peer). Returns how many the kernel accepted; stops early on
    /// a full socket buffer (`WouldBlock` after a few immediate retries).
    pub fn send(
        &mut self,
        fd: BorrowedFd<'_>,
        count: usize,
        len: usize,
        dest: Option<&RawAddr>,
    ) -> io::Result<usize> {
        let count = count.min(self.hdrs.len());
        let len = len.min(self.slot);
        self.dest = dest.copied();
        let base = self.buf.as_mut_ptr();
        let (name, namelen) = match self.dest.as_mut() {
            Some(d) => (
                (&mut d.storage as *mut libc::sockaddr_storage).cast::<libc::c_void>(),
                d.len,
            ),
            None => (std::ptr::null_mut(), 0),
        };
        for i in 0..count {
            // SAFETY: i * slot + len ≤ buf.len(), inside `buf`.
            self.iovs[i].iov_base = unsafe { base.add(i * self.slot) }.cast();
            self.iovs[i].iov_len = len;
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = name;
            h.msg_namelen = namelen;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        let mut done = 0;
        let mut stalls = 0;
        while done < count {
            // SAFETY: headers done..count are initialised above and point into
            // `buf` and `self.dest`, both exclusively borrowed for the call.
            let n = unsafe {
                libc::sendmmsg(
                    fd.as_raw_fd(),
                    self.hdrs.as_mut_ptr().add(done),
                    (count - done) as libc::c_uint,
                    0,
                )
            };
            if n > 0 {
                done += n as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock if stalls < 3 => {
                    stalls += 1;
                    std::thread::yield_now();
                }
                io::ErrorKind::WouldBlock => break,
                _ if done > 0 => break,
                _ => return Err(e),
            }
        }
        Ok(done)
    }

    /// Sends slots `0..count` (each exactly `slot` bytes, i.e. built with
    /// `slot == len`) as ONE `sendmsg` carrying `UDP_SEGMENT`: the kernel
    /// splits it into `count` datagrams of `slot` bytes. Returns the number
    /// of datagrams sent (all or none).
    pub fn send_gso(
        &mut self,
        fd: BorrowedFd<'_>,
        count: usize,
        dest: Option<&RawAddr>,
    ) -> io::Result<usize> {
        let count = count.min(self.hdrs.len());
        if count == 0 {
            return Ok(0);
        }
        let total = count * self.slot;
        self.dest = dest.copied();
        // Control buffer for one cmsg carrying a u16, 8-byte aligned.
        let mut control = [0u64; 4];
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as u32) } as usize;
        debug_assert!(space <= mem::size_of_val(&control));
        let mut iov = libc::iovec {
            iov_base: self.buf.as_mut_ptr().cast(),
            iov_len: total,
        };
        // SAFETY: msghdr is plain integers and pointers; all-zero is valid.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        if let Some(d) = self.dest.as_mut() {
            msg.msg_name = (&mut d.storage as *mut libc::sockaddr_storage).cast();
            msg.msg_namelen = d.len;
        }
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let seg = u16::try_from(self.slot).unwrap_or(u16::MAX);
        // SAFETY: msg_control points at `control`, which is large enough for
        // one CMSG_SPACE(2) header and aligned for cmsghdr; CMSG_FIRSTHDR
        // therefore returns a valid pointer into it, and CMSG_DATA points at
        // the 2 data bytes inside the same buffer.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = libc::UDP_SEGMENT;
            (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg);
        }
        let mut stalls = 0;
        loop {
            // SAFETY: `msg` points at `iov` (into `buf`), `control` and
            // `self.dest`, all alive and unaliased for the call.
            let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, 0) };
            if n >= 0 {
                return Ok(count);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock if stalls < 3 => {
                    stalls += 1;
                    std::thread::yield_now();
                }
                io::ErrorKind::WouldBlock => return Ok(0),
                _ => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    #[test]
    fn sendmmsg_recvmmsg_and_gso_roundtrip() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dest = RawAddr::new(&rx.local_addr().unwrap());
        let mut sb = SendBatch::new(4, 10);
        for i in 0..4 {
            sb.slot_mut(i).fill(i as u8);
        }
        assert_eq!(sb.send(tx.as_fd(), 4, 10, Some(&dest)).unwrap(), 4);
        let mut ep = Epoll::new(4).unwrap();
        ep.add(rx.as_raw_fd(), 7).unwrap();
        assert_eq!(ep.wait(1000).unwrap().collect::<Vec<_>>(), vec![7]);
        let mut rb = RecvBatch::new(8, 64);
        let mut got = 0;
        while got < 4 {
            let n = rb.recv(rx.as_fd()).unwrap();
            for i in 0..n {
                assert_eq!(rb.get(i), &[(got + i) as u8; 10][..]);
            }
            got += n;
        }
        // GSO: one write, three datagrams of 10 bytes.
        match sb.send_gso(tx.as_fd(), 3, Some(&dest)) {
            Ok(3) => {
                let mut seen = 0;
                let t0 = std::time::Instant::now();
                while seen < 3 && t0.elapsed().as_secs() < 2 {
                    let n = rb.recv(rx.as_fd()).unwrap();
                    for i in 0..n {
                        assert_eq!(rb.get(i).len(), 10);
                    }
                    seen += n;
                }
                assert_eq!(seen, 3);
            }
            other => eprintln!("GSO not available here: {other:?}"),
        }
        assert_eq!(rb.recv(rx.as_fd()).unwrap(), 0);
        assert!(monotonic_ns() > 0);
        assert!(thread_cpu_ns() > 0);
    }
}
