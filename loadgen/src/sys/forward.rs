//! The floor's batch: datagrams received into slots with headroom, and a
//! queue of sends that point into those slots (or into small reply slots),
//! flushed with one `sendmmsg` per run of the same socket. Nothing is
//! allocated after [`ForwardBatch::new`].

use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};

use super::addr::{write_sockaddr, zeroed_storage};
use super::mmsg::{point, sendmmsg, zeroed_headers, RecvBatch};

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

/// One preallocated batch: receive slots of `capacity` bytes with
/// `headroom` free bytes before each datagram, a reply slot per receive
/// slot, and a send queue pointing into either.
pub struct ForwardBatch {
    rx: RecvBatch,
    reply_len: usize,
    reply: Box<[u8]>,
    tx: Vec<Tx>,
    order: Vec<usize>,
    names: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    pub counters: IoCounters,
}

impl ForwardBatch {
    pub fn new(slots: usize, headroom: usize, capacity: usize, reply_len: usize) -> ForwardBatch {
        let rx = RecvBatch::with_sources(slots, headroom, capacity);
        let slots = rx.slots();
        ForwardBatch {
            rx,
            reply_len,
            reply: vec![0u8; slots * reply_len].into_boxed_slice(),
            tx: Vec::with_capacity(slots),
            order: Vec::with_capacity(slots),
            names: vec![zeroed_storage(); slots].into_boxed_slice(),
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                slots
            ]
            .into_boxed_slice(),
            hdrs: zeroed_headers(slots).into_boxed_slice(),
            counters: IoCounters::default(),
        }
    }

    pub fn slots(&self) -> usize {
        self.rx.slots()
    }

    /// Offset of slot `i`'s datagram in the receive area.
    pub fn data_offset(&self, i: usize) -> usize {
        self.rx.data_offset(i)
    }

    /// Receives up to `slots` datagrams from `fd` without blocking (after
    /// flushing pending sends, so no queued send points into a slot being
    /// overwritten). Returns the number of slots filled.
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> std::io::Result<usize> {
        self.flush();
        let calls = self.rx.calls();
        let got = self.rx.recv(fd);
        self.counters.recv_calls += self.rx.calls() - calls;
        let got = got?;
        self.counters.rx_datagrams += got as u64;
        self.counters.rx_truncated += self.rx.truncated() as u64;
        Ok(got)
    }

    /// Source and length of datagram `i` of the last `recv` (`None`:
    /// truncated or unreadable, to be skipped).
    pub fn meta(&self, i: usize) -> Option<(SocketAddr, usize)> {
        Some((self.rx.source(i)?, self.rx.datagram_len(i)))
    }

    /// The receive area (datagram `i` is at `data_offset(i)..+len`, with
    /// `headroom` writable bytes in front of it).
    pub fn rx_mut(&mut self) -> &mut [u8] {
        self.rx.area_mut()
    }

    /// Datagram `i` and reply slot `i`.
    pub fn datagram_and_reply(&mut self, i: usize, len: usize) -> (&[u8], &mut [u8]) {
        let start = self.data_offset(i);
        let r = i * self.reply_len;
        (
            &self.rx.area()[start..start + len],
            &mut self.reply[r..r + self.reply_len],
        )
    }

    /// Queues a send from `fd` to `dest`, flushed with the next `recv` or
    /// `flush`. The caller keeps `fd` open until then.
    pub fn queue(&mut self, fd: RawFd, dest: SocketAddr, src: Src) {
        let ok = match src {
            Src::Rx { offset, len } => offset
                .checked_add(len)
                .is_some_and(|e| e <= self.rx.area().len()),
            Src::Reply { slot, len } => slot < self.slots() && len <= self.reply_len,
        };
        if !ok {
            self.counters.tx_errors += 1;
            return;
        }
        if self.tx.len() == self.slots() {
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
        let rx = self.rx.area().as_ptr();
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
            let namelen = h.msg_hdr.msg_namelen;
            point(
                h,
                names.wrapping_add(k).cast(),
                namelen,
                iovs.wrapping_add(k),
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

    fn send_run(&mut self, fd: RawFd, start: usize, end: usize) {
        let mut next = start;
        while next < end {
            self.counters.send_calls += 1;
            // SAFETY: hdrs[next..end] were built by `flush` from `&mut self`
            // and point into `names`, `iovs`, the receive area and `reply`,
            // all owned by `self` and unchanged during the call.
            match unsafe { sendmmsg(fd, &mut self.hdrs[next..end]) } {
                Ok(n) if n > 0 => {
                    self.counters.tx_datagrams += n as u64;
                    next += n;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    self.counters.tx_would_block += (end - next) as u64;
                    return;
                }
                // Any other error (or nothing taken): that datagram is dropped.
                _ => {
                    self.counters.tx_errors += 1;
                    next += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::{AsFd, AsRawFd};

    #[test]
    fn batch_receives_and_sends_in_place() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..5u8 {
            tx.send_to(&[i; 10], rx.local_addr().unwrap()).unwrap();
        }
        let mut b = ForwardBatch::new(4, 4, 2048, 64);
        assert_eq!(b.recv(rx.as_fd()).unwrap(), 4);
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
        assert_eq!(b.recv(rx.as_fd()).unwrap(), 1);
        assert_eq!(b.meta(1), None);
        assert_eq!(b.recv(rx.as_fd()).unwrap(), 0);
        assert_eq!(b.meta(0), None);
        assert_eq!(b.counters.tx_datagrams, 1);
        assert_eq!((b.counters.recv_calls, b.counters.rx_datagrams), (3, 5));
    }
}
