//! The portable backend: epoll readiness, `recvmmsg` into a preallocated
//! batch of slots, and `sendmmsg` of queued sends that point into those slots.
//!
//! Ownership keeps the raw pointers honest: the kernel only ever sees
//! pointers into buffers owned by [`UdpBatch`], rebuilt right before each
//! system call from `&mut self`, so no safe caller can free or move them
//! while the kernel uses them.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::addr::{read_sockaddr, write_sockaddr, zeroed_storage};
use super::{BatchLayout, IoStats, TxBytes};

/// An epoll instance. Sources are registered level-triggered with a `u64`
/// key that comes back with every readiness event.
pub struct Poller {
    epfd: OwnedFd,
}

/// The readiness events of one `Poller::wait`.
pub struct Events {
    buf: Vec<libc::epoll_event>,
    len: usize,
}

impl Events {
    /// Room for `capacity` events per wait (at least 1).
    pub fn with_capacity(capacity: usize) -> Events {
        Events {
            buf: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)],
            len: 0,
        }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The key of the `i`-th ready source (`i < len()`).
    pub fn key(&self, i: usize) -> u64 {
        let ev = self.buf[..self.len][i];
        ev.u64
    }

    /// What the `i`-th ready source is ready for (`i < len()`).
    pub fn readiness(&self, i: usize) -> Readiness {
        let bits = self.buf[..self.len][i].events;
        Readiness {
            readable: bits
                & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32
                != 0,
            writable: bits & (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0,
        }
    }
}

/// Readiness of one source. A hung-up or failed socket is both readable
/// and writable, so that the next read or write reports it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    pub readable: bool,
    pub writable: bool,
}

impl Poller {
    pub fn new() -> io::Result<Poller> {
        // SAFETY: plain system call without pointers.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by
        // nothing else.
        Ok(Poller {
            epfd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Starts watching `fd` for readability, tagged with `key`.
    pub fn add(&self, fd: BorrowedFd<'_>, key: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, key, libc::EPOLLIN as u32)
    }

    /// Starts watching a stream socket: readability and hang-up, and
    /// writability too when `write`.
    pub fn add_stream(&self, fd: BorrowedFd<'_>, key: u64, write: bool) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, key, stream_events(write))
    }

    /// Changes whether a stream socket added with `add_stream` is watched
    /// for writability.
    pub fn modify_stream(&self, fd: BorrowedFd<'_>, key: u64, write: bool) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, key, stream_events(write))
    }

    /// Starts watching a socket for readability (with hang-up) only when
    /// `read`, and writability only when `write` (a socket whose reader
    /// waits for room elsewhere watches neither, but still hears errors).
    pub fn add_interest(
        &self,
        fd: BorrowedFd<'_>,
        key: u64,
        read: bool,
        write: bool,
    ) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, key, interest(read, write))
    }

    /// Changes what a socket added with `add_interest` is watched for.
    pub fn modify_interest(
        &self,
        fd: BorrowedFd<'_>,
        key: u64,
        read: bool,
        write: bool,
    ) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, key, interest(read, write))
    }

    fn ctl(&self, op: libc::c_int, fd: BorrowedFd<'_>, key: u64, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: key };
        // SAFETY: both descriptors are open for the duration of the call; `ev`
        // is a live, initialised epoll_event.
        let rc = unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), op, fd.as_raw_fd(), &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stops watching `fd`.
    pub fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        // SAFETY: both descriptors are open; DEL ignores the event pointer
        // (null is allowed since Linux 2.6.9).
        let rc = unsafe {
            libc::epoll_ctl(
                self.epfd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd.as_raw_fd(),
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout` (rounded up to whole milliseconds) for
    /// readiness. An interrupted wait returns zero events.
    pub fn wait(&self, events: &mut Events, timeout: Duration) -> io::Result<usize> {
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
        let cap = events.buf.len().min(i32::MAX as usize) as libc::c_int;
        // SAFETY: `events.buf` is a live, exclusively borrowed array of at
        // least `cap` epoll_event structures, which the kernel fills.
        let rc =
            unsafe { libc::epoll_wait(self.epfd.as_raw_fd(), events.buf.as_mut_ptr(), cap, ms) };
        if rc < 0 {
            events.len = 0;
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(err);
        }
        events.len = rc as usize;
        Ok(events.len)
    }
}

impl AsFd for Poller {
    /// The epoll descriptor itself: readable while any source is ready, so
    /// that one poller can be watched from another, or from an io_uring.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epfd.as_fd()
    }
}

fn interest(read: bool, write: bool) -> u32 {
    let mut e = 0;
    if read {
        e |= (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
    }
    if write {
        e |= libc::EPOLLOUT as u32;
    }
    e
}

fn stream_events(write: bool) -> u32 {
    let read = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
    if write {
        read | libc::EPOLLOUT as u32
    } else {
        read
    }
}

/// `count` iovecs that point nowhere yet.
pub(crate) fn empty_iovecs(count: usize) -> Box<[libc::iovec]> {
    vec![
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        count
    ]
    .into_boxed_slice()
}

/// `count` message headers that point nowhere yet.
pub(crate) fn zeroed_headers(count: usize) -> Box<[libc::mmsghdr]> {
    // SAFETY: mmsghdr is plain old data (integers and raw pointers); all-zero
    // (null pointers, zero lengths) is a valid value.
    vec![unsafe { std::mem::zeroed::<libc::mmsghdr>() }; count].into_boxed_slice()
}

/// Aims header `h` at one iovec and one address (`name` may be null with a
/// zero `namelen`: the connected peer), without control data, ready for
/// `recvmmsg` or `sendmmsg`. Only stores the pointers; the caller's system
/// call is what must keep them valid.
pub(crate) fn aim(
    h: &mut libc::mmsghdr,
    name: *mut libc::c_void,
    namelen: libc::socklen_t,
    iov: *mut libc::iovec,
) {
    let m = &mut h.msg_hdr;
    m.msg_name = name;
    m.msg_namelen = namelen;
    m.msg_iov = iov;
    m.msg_iovlen = 1;
    m.msg_control = std::ptr::null_mut();
    m.msg_controllen = 0;
    m.msg_flags = 0;
    h.msg_len = 0;
}

/// What the last `recv` put in one slot.
#[derive(Copy, Clone, Debug)]
struct RxMeta {
    len: usize,
    /// `None`: truncated or an unusable source address; the datagram is skipped.
    from: Option<SocketAddr>,
}

/// One queued send.
#[derive(Clone, Debug)]
struct TxEntry {
    fd: RawFd,
    dest: SocketAddr,
    /// The received datagram whose buffers hold the bytes.
    slot: usize,
    bytes: TxBytes,
}

/// Receive slots, the reply arena and the send queue of one shard,
/// allocated once.
///
/// Use: `recv` from a socket; look at each datagram (`datagram`,
/// `datagram_and_reply`, `datagram_in_slot`); `queue` the resulting sends;
/// `flush` (which `recv` also does first, so slots are never overwritten
/// while a send still points into them).
pub struct UdpBatch {
    layout: BatchLayout,
    slot_len: usize,
    rx: Box<[u8]>,
    reply: Box<[u8]>,
    meta: Vec<RxMeta>,
    // Scratch for the system calls, shared by receive and send (never in
    // use by both at once): one entry per slot.
    names: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    tx: Vec<TxEntry>,
    order: Vec<usize>,
    stats: IoStats,
}

impl UdpBatch {
    pub fn new(layout: BatchLayout) -> UdpBatch {
        let slots = layout.slots.max(1);
        let layout = BatchLayout { slots, ..layout };
        let slot_len = layout.slot_len();
        UdpBatch {
            layout,
            slot_len,
            rx: vec![0u8; slots * slot_len].into_boxed_slice(),
            reply: vec![0u8; slots * layout.reply_len].into_boxed_slice(),
            meta: Vec::with_capacity(slots),
            names: vec![zeroed_storage(); slots].into_boxed_slice(),
            iovs: empty_iovecs(slots),
            hdrs: zeroed_headers(slots),
            tx: Vec::with_capacity(slots),
            order: Vec::with_capacity(slots),
            stats: IoStats::default(),
        }
    }

    pub fn layout(&self) -> &BatchLayout {
        &self.layout
    }
    pub fn stats(&self) -> &IoStats {
        &self.stats
    }
    pub fn stats_mut(&mut self) -> &mut IoStats {
        &mut self.stats
    }

    /// Flushes pending sends, then receives up to `slots` datagrams from `fd`
    /// without blocking. Returns how many slots were filled (0: nothing to
    /// read). Datagrams that do not fit or whose source cannot be read are
    /// counted and skipped by the accessors.
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.flush();
        self.meta.clear();
        let n = self.layout.slots;
        let rx_base = self.rx.as_mut_ptr();
        for (i, iov) in self.iovs.iter_mut().enumerate() {
            // In bounds: i * slot_len + headroom + capacity <= slots * slot_len.
            iov.iov_base = rx_base
                .wrapping_add(i * self.slot_len + self.layout.headroom)
                .cast();
            iov.iov_len = self.layout.capacity;
        }
        let names_base = self.names.as_mut_ptr();
        let iovs_base = self.iovs.as_mut_ptr();
        let namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        for (i, h) in self.hdrs.iter_mut().enumerate() {
            aim(
                h,
                names_base.wrapping_add(i).cast(),
                namelen,
                iovs_base.wrapping_add(i),
            );
        }
        let got = loop {
            self.stats.recv_calls += 1;
            // SAFETY: `hdrs` holds `n` initialised mmsghdr whose name and iov
            // pointers were set just above from `names`, `iovs` and `rx`, all
            // owned by `self` and exclusively borrowed for this call; each iov
            // covers `capacity` bytes inside its own slot. The kernel writes
            // only within those bounds.
            let rc = unsafe {
                libc::recvmmsg(
                    fd.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    n as libc::c_uint,
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
                _ => {
                    self.stats.rx_errors += 1;
                    return Err(err);
                }
            }
        };
        for (h, name) in self.hdrs[..got].iter().zip(self.names.iter()) {
            let len = (h.msg_len as usize).min(self.layout.capacity);
            self.stats.rx_datagrams += 1;
            self.stats.rx_bytes += len as u64;
            let from = if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.stats.rx_truncated += 1;
                None
            } else {
                let from = read_sockaddr(name, h.msg_hdr.msg_namelen);
                if from.is_none() {
                    self.stats.rx_bad_source += 1;
                }
                from
            };
            self.meta.push(RxMeta { len, from });
        }
        Ok(got)
    }

    /// Slots filled by the last `recv`.
    pub fn received(&self) -> usize {
        self.meta.len()
    }

    /// Datagram `i` and its source; `None` when it was skipped (or `i` is out
    /// of range).
    pub fn datagram(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        let m = self.meta.get(i)?;
        let start = i * self.slot_len + self.layout.headroom;
        Some((m.from?, &self.rx[start..start + m.len]))
    }

    /// Datagram `i`, its source, and reply slot `i` to write an answer into.
    pub fn datagram_and_reply(&mut self, i: usize) -> Option<(SocketAddr, &[u8], &mut [u8])> {
        let m = self.meta.get(i)?;
        let start = i * self.slot_len + self.layout.headroom;
        let reply_start = i * self.layout.reply_len;
        Some((
            m.from?,
            &self.rx[start..start + m.len],
            &mut self.reply[reply_start..reply_start + self.layout.reply_len],
        ))
    }

    /// Datagram `i` inside its whole, writable slot: the source, the slot,
    /// and the datagram length. The datagram sits at `slot[headroom..headroom + len]`.
    pub fn datagram_in_slot(&mut self, i: usize) -> Option<(SocketAddr, &mut [u8], usize)> {
        let m = self.meta.get(i)?;
        let start = i * self.slot_len;
        Some((m.from?, &mut self.rx[start..start + self.slot_len], m.len))
    }

    /// Datagram `i` inside its whole, writable slot, and reply slot `i`: the
    /// source, the slot, the datagram length (the datagram sits at
    /// `slot[headroom..headroom + len]`) and the reply slot.
    pub fn datagram_slot_and_reply(
        &mut self,
        i: usize,
    ) -> Option<(SocketAddr, &mut [u8], usize, &mut [u8])> {
        let m = self.meta.get(i)?;
        let start = i * self.slot_len;
        let reply_start = i * self.layout.reply_len;
        Some((
            m.from?,
            &mut self.rx[start..start + self.slot_len],
            m.len,
            &mut self.reply[reply_start..reply_start + self.layout.reply_len],
        ))
    }

    /// Queues `bytes` of received datagram `slot` to be sent from `fd` to
    /// `dest` at the next `flush`. The caller keeps `fd` open until then.
    /// Returns false (and counts the send as unroutable) when `bytes` do not
    /// lie inside that datagram's slots.
    pub fn queue(
        &mut self,
        fd: BorrowedFd<'_>,
        dest: SocketAddr,
        slot: usize,
        bytes: TxBytes,
    ) -> bool {
        let valid = slot < self.layout.slots
            && match &bytes {
                TxBytes::Rx(range) => range.start <= range.end && range.end <= self.slot_len,
                TxBytes::Reply(len) => *len <= self.layout.reply_len,
            };
        if !valid {
            self.stats.tx_unroutable += 1;
            return false;
        }
        if self.tx.len() == self.layout.slots {
            self.flush();
        }
        self.tx.push(TxEntry {
            fd: fd.as_raw_fd(),
            dest,
            slot,
            bytes,
        });
        true
    }

    /// Sends everything queued with `sendmmsg`, one call per run of sends
    /// from the same socket (sends are grouped by socket first, keeping their
    /// order per socket). Partial sends are resumed; each failed datagram is
    /// dropped and counted under its reason.
    pub fn flush(&mut self) {
        let n = self.tx.len();
        if n == 0 {
            return;
        }
        // Stable insertion sort by fd: at most `slots` entries.
        self.order.clear();
        for i in 0..n {
            let fd = self.tx[i].fd;
            let mut at = self.order.len();
            while at > 0 && self.tx[self.order[at - 1]].fd > fd {
                at -= 1;
            }
            self.order.insert(at, i);
        }
        let rx_base = self.rx.as_ptr();
        let reply_base = self.reply.as_ptr();
        for (k, &i) in self.order.iter().enumerate() {
            let e = &self.tx[i];
            // In bounds: `queue` checked slot and range against the layout.
            let (ptr, len) = match &e.bytes {
                TxBytes::Rx(range) => (
                    rx_base.wrapping_add(e.slot * self.slot_len + range.start),
                    range.len(),
                ),
                TxBytes::Reply(len) => (
                    reply_base.wrapping_add(e.slot * self.layout.reply_len),
                    *len,
                ),
            };
            self.iovs[k] = libc::iovec {
                iov_base: ptr as *mut libc::c_void,
                iov_len: len,
            };
            let namelen = write_sockaddr(&e.dest, &mut self.names[k]);
            self.hdrs[k].msg_hdr.msg_namelen = namelen;
        }
        let names_base = self.names.as_mut_ptr();
        let iovs_base = self.iovs.as_mut_ptr();
        for (k, h) in self.hdrs[..n].iter_mut().enumerate() {
            let namelen = h.msg_hdr.msg_namelen;
            aim(
                h,
                names_base.wrapping_add(k).cast(),
                namelen,
                iovs_base.wrapping_add(k),
            );
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

    /// Sends `hdrs[start..end]`, all from `fd`.
    fn send_run(&mut self, fd: RawFd, start: usize, end: usize) {
        let mut next = start;
        while next < end {
            self.stats.send_calls += 1;
            // SAFETY: `hdrs[next..end]` are initialised mmsghdr built by
            // `flush` from `&mut self`: their name, iov and data pointers
            // point into `names`, `iovs`, `rx` and `reply`, which `self` owns
            // and which cannot change during this call; the kernel only reads
            // them (and writes `msg_len`). `fd` is a plain integer: a stale
            // descriptor makes the call fail, it cannot touch our memory.
            let rc = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs.as_mut_ptr().wrapping_add(next),
                    (end - next) as libc::c_uint,
                    0,
                )
            };
            if rc > 0 {
                let sent = rc as usize;
                for h in &self.hdrs[next..next + sent] {
                    self.stats.tx_datagrams += 1;
                    self.stats.tx_bytes += u64::from(h.msg_len);
                }
                next += sent;
                continue;
            }
            let err = if rc == 0 {
                io::Error::from(io::ErrorKind::WriteZero)
            } else {
                io::Error::last_os_error()
            };
            let dest = self.tx[self.order[next]].dest;
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => {
                    // The socket's send buffer is full: the rest of this run
                    // would fail the same way.
                    let dropped = (end - next) as u64;
                    self.stats.tx_would_block += dropped;
                    tracing::debug!(fd, %dest, dropped, "send buffer full, datagrams dropped");
                    return;
                }
                Some(libc::ENOBUFS) => self.stats.tx_no_buffers += 1,
                Some(libc::EMSGSIZE) => self.stats.tx_too_big += 1,
                _ => self.stats.tx_errors += 1,
            }
            tracing::debug!(fd, %dest, error = %err, "send failed, datagram dropped");
            next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    const LAYOUT: BatchLayout = BatchLayout {
        slots: 32,
        headroom: 48,
        capacity: 2048,
        tailroom: 4,
        reply_len: 1280,
    };

    fn udp() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    }

    #[test]
    fn one_recvmmsg_gets_ten_datagrams_with_sources() {
        let rx = udp();
        rx.set_nonblocking(true).unwrap();
        let (a, b) = (udp(), udp());
        for i in 0..10u8 {
            let from = if i % 2 == 0 { &a } else { &b };
            from.send_to(&[i; 3][..(i as usize % 3) + 1], rx.local_addr().unwrap())
                .unwrap();
        }
        let mut batch = UdpBatch::new(LAYOUT);
        assert_eq!(batch.recv(rx.as_fd()).unwrap(), 10);
        assert_eq!(batch.received(), 10);
        for i in 0..10u8 {
            let (from, data) = batch.datagram(i as usize).unwrap();
            let want = if i % 2 == 0 {
                a.local_addr().unwrap()
            } else {
                b.local_addr().unwrap()
            };
            assert_eq!(from, want);
            assert_eq!(data, &[i; 3][..(i as usize % 3) + 1]);
            // The datagram sits after the headroom of its slot.
            let (_, slot, len) = batch.datagram_in_slot(i as usize).unwrap();
            assert_eq!(&slot[48..48 + len], &[i; 3][..len]);
            assert!(slot.len() >= 48 + 2048 + 4);
            let (from2, slot, len2, reply) = batch.datagram_slot_and_reply(i as usize).unwrap();
            assert_eq!((from2, len2), (want, len));
            assert_eq!(&slot[48..48 + len], &[i; 3][..len]);
            assert_eq!(reply.len(), 1280);
        }
        assert_eq!(batch.stats().rx_datagrams, 10);
        assert_eq!(batch.stats().recv_calls, 1);
        // Drained: the next call reads nothing and does not fail.
        assert_eq!(batch.recv(rx.as_fd()).unwrap(), 0);
        assert!(batch.datagram(0).is_none());
    }

    #[test]
    fn sendmmsg_to_two_destinations_from_slots_and_replies() {
        let rx = udp();
        rx.set_nonblocking(true).unwrap();
        let sender = udp();
        sender
            .send_to(b"xxhello peer", rx.local_addr().unwrap())
            .unwrap();
        let mut batch = UdpBatch::new(LAYOUT);
        assert_eq!(batch.recv(rx.as_fd()).unwrap(), 1);
        let (d1, d2) = (udp(), udp());
        {
            let (_, _, reply) = batch.datagram_and_reply(0).unwrap();
            reply[..5].copy_from_slice(b"reply");
        }
        let tx = udp();
        let tx2 = udp();
        // Interleave two sockets: grouping must keep per-socket order.
        assert!(batch.queue(tx.as_fd(), d1.local_addr().unwrap(), 0, TxBytes::Reply(5)));
        assert!(batch.queue(
            tx2.as_fd(),
            d2.local_addr().unwrap(),
            0,
            TxBytes::Rx(50..60)
        ));
        assert!(batch.queue(tx.as_fd(), d2.local_addr().unwrap(), 0, TxBytes::Rx(48..50)));
        batch.flush();
        let mut buf = [0u8; 64];
        let (n, from) = d1.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"reply"[..], tx.local_addr().unwrap()));
        let mut got = Vec::new();
        for _ in 0..2 {
            let (n, from) = d2.recv_from(&mut buf).unwrap();
            got.push((buf[..n].to_vec(), from));
        }
        got.sort();
        let mut want = vec![
            (b"hello peer".to_vec(), tx2.local_addr().unwrap()),
            (b"xx".to_vec(), tx.local_addr().unwrap()),
        ];
        want.sort();
        assert_eq!(got, want);
        let st = batch.stats();
        assert_eq!((st.tx_datagrams, st.tx_bytes, st.send_calls), (3, 17, 2));
        assert_eq!(st.tx_dropped(), 0);
    }

    #[test]
    fn truncated_datagrams_are_dropped_and_counted() {
        let rx = udp();
        rx.set_nonblocking(true).unwrap();
        let s = udp();
        s.send_to(&[7u8; 3000], rx.local_addr().unwrap()).unwrap();
        s.send_to(b"ok", rx.local_addr().unwrap()).unwrap();
        let mut batch = UdpBatch::new(LAYOUT);
        assert_eq!(batch.recv(rx.as_fd()).unwrap(), 2);
        assert!(batch.datagram(0).is_none());
        assert_eq!(batch.datagram(1).unwrap().1, b"ok");
        assert_eq!(batch.stats().rx_truncated, 1);
    }

    #[test]
    fn bad_ranges_are_refused_and_send_errors_counted() {
        let mut batch = UdpBatch::new(LAYOUT);
        let s = udp();
        let dest = s.local_addr().unwrap();
        assert!(!batch.queue(s.as_fd(), dest, 0, TxBytes::Rx(0..5000)));
        assert!(!batch.queue(s.as_fd(), dest, 32, TxBytes::Rx(0..1)));
        assert!(!batch.queue(s.as_fd(), dest, 0, TxBytes::Reply(1281)));
        assert_eq!(batch.stats().tx_unroutable, 3);
        // An IPv4 socket cannot send to an IPv6 destination: counted, not fatal,
        // and the following datagram still goes out.
        assert!(batch.queue(s.as_fd(), "[::1]:9".parse().unwrap(), 0, TxBytes::Reply(1)));
        assert!(batch.queue(s.as_fd(), dest, 0, TxBytes::Reply(1)));
        batch.flush();
        assert_eq!(batch.stats().tx_errors, 1);
        assert_eq!(batch.stats().tx_datagrams, 1);
        let mut buf = [0u8; 4];
        assert_eq!(s.recv(&mut buf).unwrap(), 1);
    }

    #[test]
    fn poller_reports_the_ready_key() {
        let p = Poller::new().unwrap();
        let (a, b) = (udp(), udp());
        p.add(a.as_fd(), 7).unwrap();
        p.add(b.as_fd(), 1 << 63 | 3).unwrap();
        let mut ev = Events::with_capacity(8);
        assert_eq!(p.wait(&mut ev, Duration::from_millis(0)).unwrap(), 0);
        udp().send_to(b"x", b.local_addr().unwrap()).unwrap();
        assert_eq!(p.wait(&mut ev, Duration::from_secs(2)).unwrap(), 1);
        assert_eq!(ev.key(0), 1 << 63 | 3);
        p.delete(b.as_fd()).unwrap();
        assert_eq!(p.wait(&mut ev, Duration::from_millis(0)).unwrap(), 0);
    }
}
