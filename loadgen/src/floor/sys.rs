//! The system calls the floor needs, behind small safe wrappers: epoll,
//! `recvmmsg`/`sendmmsg` over one preallocated batch, signals, CPU affinity
//! and the descriptor limit.
//!
//! Every pointer handed to the kernel points into a buffer owned by the
//! wrapper and rebuilt from `&mut self` right before the call, so no safe
//! caller can move or free it while the kernel uses it.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

// ---------------------------------------------------------------------------
// Socket addresses.

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain integers; all-zero is a valid value.
    unsafe { mem::zeroed() }
}

/// Writes `addr` into `out`; returns the length to give the kernel.
fn write_sockaddr(addr: &SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for
            // sockaddr_in; `out` is an exclusive reference.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin) };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin6) };
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads the address the kernel wrote (`len` bytes of `storage`).
fn read_sockaddr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match storage.ss_family as libc::c_int {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the kernel wrote an AF_INET address this long; the
            // storage is aligned for it and every bit pattern is valid.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for AF_INET6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// epoll.

/// A level-triggered epoll instance; each source carries a `u64` key.
pub struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
    ready: usize,
}

impl Epoll {
    pub fn new(capacity: usize) -> io::Result<Epoll> {
        // SAFETY: no pointers.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll {
            // SAFETY: a fresh descriptor owned by nothing else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)],
            ready: 0,
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, key: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: key,
        };
        // SAFETY: `ev` is a live epoll_event; a bad `fd` only makes the call fail.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn add(&self, fd: &impl AsRawFd, key: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd.as_raw_fd(), key)
    }

    pub fn delete(&self, fd: &impl AsRawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd.as_raw_fd(), 0)
    }

    /// Waits up to `timeout`; an interrupted wait reports nothing ready.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<usize> {
        let ms = timeout.as_millis().clamp(0, i32::MAX as u128) as libc::c_int;
        let cap = self.events.len().min(i32::MAX as usize) as libc::c_int;
        // SAFETY: `events` is an exclusively borrowed array of `cap` entries.
        let rc =
            unsafe { libc::epoll_wait(self.fd.as_raw_fd(), self.events.as_mut_ptr(), cap, ms) };
        if rc < 0 {
            self.ready = 0;
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(err);
        }
        self.ready = rc as usize;
        Ok(self.ready)
    }

    /// Key of ready source `i` (< the last `wait`'s count).
    pub fn key(&self, i: usize) -> u64 {
        let ev = self.events[..self.ready][i];
        ev.u64
    }
}

// ---------------------------------------------------------------------------
// Batched datagram I/O.

/// Where the bytes of one queued send live.
#[derive(Copy, Clone, Debug)]
pub enum Src {
    /// `len` bytes at `offset` of the receive area.
    Rx { offset: usize, len: usize },
    /// The first `len` bytes of reply slot `slot`.
    Reply { slot: usize, len: usize },
}

#[derive(Copy, Clone, Debug)]
struct Tx {
    fd: RawFd,
    dest: SocketAddr,
    src: Src,
}

/// Counters of the batch (added to the floor's report).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct IoCounters {
    pub recv_calls: u64,
    pub rx_datagrams: u64,
    pub rx_truncated: u64,
    pub send_calls: u64,
    pub tx_datagrams: u64,
    /// Send buffer full (EAGAIN): the rest of that socket's run is dropped.
    pub tx_would_block: u64,
    /// Any other send error; that datagram is dropped.
    pub tx_errors: u64,
}

/// One preallocated batch: `slots` receive slots of `slot_len` bytes, each
/// with `headroom` free bytes before the datagram, a reply slot per receive
/// slot, and a send queue pointing into either. Nothing is allocated after
/// `new`.
pub struct Batch {
    slots: usize,
    slot_len: usize,
    headroom: usize,
    capacity: usize,
    reply_len: usize,
    rx: Box<[u8]>,
    reply: Box<[u8]>,
    /// Per filled slot: length and source (`None`: truncated or unreadable).
    meta: Vec<(usize, Option<SocketAddr>)>,
    names: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    tx: Vec<Tx>,
    order: Vec<usize>,
    pub counters: IoCounters,
}

impl Batch {
    pub fn new(slots: usize, headroom: usize, capacity: usize, reply_len: usize) -> Batch {
        let slots = slots.max(1);
        let slot_len = (headroom + capacity).next_multiple_of(64);
        Batch {
            slots,
            slot_len,
            headroom,
            capacity,
            reply_len,
            rx: vec![0u8; slots * slot_len].into_boxed_slice(),
            reply: vec![0u8; slots * reply_len].into_boxed_slice(),
            meta: Vec::with_capacity(slots),
            names: vec![zeroed_storage(); slots].into_boxed_slice(),
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                slots
            ]
            .into_boxed_slice(),
            // SAFETY: mmsghdr is integers and raw pointers; all-zero is valid.
            hdrs: vec![unsafe { mem::zeroed::<libc::mmsghdr>() }; slots].into_boxed_slice(),
            tx: Vec::with_capacity(slots),
            order: Vec::with_capacity(slots),
            counters: IoCounters::default(),
        }
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Offset of slot `i`'s datagram in the receive area.
    pub fn data_offset(&self, i: usize) -> usize {
        i * self.slot_len + self.headroom
    }

    /// Receives up to `slots` datagrams from `fd` without blocking (after
    /// flushing pending sends, so no queued send points into a slot being
    /// overwritten). Returns the number of slots filled.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.flush();
        self.meta.clear();
        let base = self.rx.as_mut_ptr();
        for (i, iov) in self.iovs.iter_mut().enumerate() {
            // In bounds: i * slot_len + headroom + capacity <= slots * slot_len.
            iov.iov_base = base.wrapping_add(i * self.slot_len + self.headroom).cast();
            iov.iov_len = self.capacity;
        }
        let names = self.names.as_mut_ptr();
        let iovs = self.iovs.as_mut_ptr();
        for (i, h) in self.hdrs.iter_mut().enumerate() {
            h.msg_hdr.msg_name = names.wrapping_add(i).cast();
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iovs.wrapping_add(i);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        let got = loop {
            self.counters.recv_calls += 1;
            // SAFETY: `hdrs` holds `slots` initialised headers whose name and
            // iov pointers were just set into buffers owned by `self` (each
            // iov inside its own slot); `self` is exclusively borrowed.
            let rc = unsafe {
                libc::recvmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    self.slots as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if rc >= 0 {
                break rc as usize;
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(0),
                _ => return Err(err),
            }
        };
        for (h, name) in self.hdrs[..got].iter().zip(self.names.iter()) {
            let len = (h.msg_len as usize).min(self.capacity);
            self.counters.rx_datagrams += 1;
            let from = if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.counters.rx_truncated += 1;
                None
            } else {
                read_sockaddr(name, h.msg_hdr.msg_namelen)
            };
            self.meta.push((len, from));
        }
        Ok(got)
    }

    /// Source and length of datagram `i` of the last `recv` (`None`: skipped).
    pub fn meta(&self, i: usize) -> Option<(SocketAddr, usize)> {
        let (len, from) = *self.meta.get(i)?;
        Some((from?, len))
    }

    /// The receive area (datagram `i` is at `data_offset(i)..+len`, with
    /// `headroom` writable bytes in front of it).
    pub fn rx_mut(&mut self) -> &mut [u8] {
        &mut self.rx
    }

    /// Datagram `i` and reply slot `i`.
    pub fn datagram_and_reply(&mut self, i: usize, len: usize) -> (&[u8], &mut [u8]) {
        let start = self.data_offset(i);
        let r = i * self.reply_len;
        (
            &self.rx[start..start + len],
            &mut self.reply[r..r + self.reply_len],
        )
    }

    /// Queues a send from `fd` to `dest`, flushed with the next `recv` or
    /// `flush`. The caller keeps `fd` open until then.
    pub fn queue(&mut self, fd: RawFd, dest: SocketAddr, src: Src) {
        let ok = match src {
            Src::Rx { offset, len } => offset.checked_add(len).is_some_and(|e| e <= self.rx.len()),
            Src::Reply { slot, len } => slot < self.slots && len <= self.reply_len,
        };
        if !ok {
            self.counters.tx_errors += 1;
            return;
        }
        if self.tx.len() == self.slots {
            self.flush();
        }
        self.tx.push(Tx { fd, dest, src });
    }

    /// Sends everything queued: grouped by socket (stable), one `sendmmsg`
    /// per run of the same socket, partial sends resumed, failures counted.
    pub fn flush(&mut self) {
        let n = self.tx.len();
        if n == 0 {
            return;
        }
        self.order.clear();
        for i in 0..n {
            let fd = self.tx[i].fd;
            let mut at = self.order.len();
            while at > 0 && self.tx[self.order[at - 1]].fd > fd {
                at -= 1;
            }
            self.order.insert(at, i);
        }
        let rx = self.rx.as_ptr();
        let reply = self.reply.as_ptr();
        for (k, &i) in self.order.iter().enumerate() {
            let t = self.tx[i];
            let (ptr, len) = match t.src {
                Src::Rx { offset, len } => (rx.wrapping_add(offset), len),
                Src::Reply { slot, len } => (reply.wrapping_add(slot * self.reply_len), len),
            };
            self.iovs[k] = libc::iovec {
                iov_base: ptr as *mut libc::c_void,
                iov_len: len,
            };
            let namelen = write_sockaddr(&t.dest, &mut self.names[k]);
            self.hdrs[k].msg_hdr.msg_namelen = namelen;
        }
        let names = self.names.as_mut_ptr();
        let iovs = self.iovs.as_mut_ptr();
        for (k, h) in self.hdrs[..n].iter_mut().enumerate() {
            h.msg_hdr.msg_name = names.wrapping_add(k).cast();
            h.msg_hdr.msg_iov = iovs.wrapping_add(k);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        let mut start = 0;
        while start < n {
            let fd = self.tx[self.order[start]].fd;
            let mut end = start + 1;
            while end < n && self.tx[self.order[end]].fd == fd {
                end += 1;
            }
            self.send_run(fd, start, end);
            start = end;
        }
        self.tx.clear();
    }

    fn send_run(&mut self, fd: RawFd, start: usize, end: usize) {
        let mut next = start;
        while next < end {
            self.counters.send_calls += 1;
            // SAFETY: hdrs[next..end] were built by `flush` from `&mut self`
            // and point into `names`, `iovs`, `rx` and `reply`, all owned by
            // `self` and unchanged during the call; the kernel reads them and
            // writes only `msg_len`. A stale `fd` only makes the call fail.
            let rc = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs.as_mut_ptr().wrapping_add(next),
                    (end - next) as libc::c_uint,
                    0,
                )
            };
            if rc > 0 {
                self.counters.tx_datagrams += rc as u64;
                next += rc as usize;
                continue;
            }
            let errno = if rc == 0 {
                None
            } else {
                io::Error::last_os_error().raw_os_error()
            };
            match errno {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => {
                    self.counters.tx_would_block += (end - next) as u64;
                    return;
                }
                _ => {
                    self.counters.tx_errors += 1;
                    next += 1;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Process set-up.

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Makes SIGINT and SIGTERM set the stop flag (and interrupt epoll_wait).
pub fn install_stop_signals() -> io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is valid; the handler only stores to an
        // atomic, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0;
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Pins the calling thread to `cpus` (no-op when empty).
pub fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
    if cpus.is_empty() {
        return Ok(());
    }
    // SAFETY: cpu_set_t is a plain bit array; the CPU_* helpers index inside it
    // (they ignore CPUs beyond its size) and sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Lets IPv4 datagrams leave a relay socket with DF clear
/// (IP_PMTUDISC_DONT), as uturn's relay sockets do without DONT-FRAGMENT;
/// a no-op for IPv6 sockets.
pub fn clear_df(sock: &impl AsRawFd, ipv4: bool) -> io::Result<()> {
    if !ipv4 {
        return Ok(());
    }
    let v: libc::c_int = libc::IP_PMTUDISC_DONT;
    // SAFETY: the option pointer and length describe a live c_int; a bad
    // descriptor only makes the call fail.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&v as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `sig` to process `pid` (a child this program started).
pub fn signal_pid(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid <= 0 {
        return;
    }
    // SAFETY: kill takes two integers and touches no memory of ours.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Raises the soft descriptor limit to the hard one; returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: get/setrlimit read and write a live rlimit on the stack.
    unsafe {
        let mut r: libc::rlimit = mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur;
            }
        }
        r.rlim_cur
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn sockaddr_round_trip() {
        for a in ["127.0.0.1:9", "[::1]:65535", "[fe80::1%2]:1"] {
            let a: SocketAddr = a.parse().unwrap();
            let mut s = zeroed_storage();
            let n = write_sockaddr(&a, &mut s);
            assert_eq!(read_sockaddr(&s, n), Some(a));
        }
    }

    #[test]
    fn batch_receives_and_sends_in_place() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..5u8 {
            tx.send_to(&[i; 10], rx.local_addr().unwrap()).unwrap();
        }
        let mut b = Batch::new(4, 4, 2048, 64);
        assert_eq!(b.recv(rx.as_raw_fd()).unwrap(), 4);
        let (from, len) = b.meta(3).unwrap();
        assert_eq!((from, len), (tx.local_addr().unwrap(), 10));
        // Send slot 3 back with a header written into its headroom.
        let off = b.data_offset(3);
        b.rx_mut()[off - 4..off].copy_from_slice(&[0x40, 0, 0, 10]);
        b.queue(
            rx.as_raw_fd(),
            from,
            Src::Rx {
                offset: off - 4,
                len: 14,
            },
        );
        b.flush();
        let mut got = [0u8; 64];
        let n = tx.recv(&mut got).unwrap();
        assert_eq!(&got[..n], &[0x40, 0, 0, 10, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3]);
        assert_eq!(b.recv(rx.as_raw_fd()).unwrap(), 1);
        assert_eq!(b.recv(rx.as_raw_fd()).unwrap(), 0);
        assert_eq!(b.counters.tx_datagrams, 1);
    }
}
