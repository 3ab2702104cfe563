//! Preallocated batches of datagrams: receive slots for `recvmmsg`, equal
//! datagrams to one destination for `sendmmsg` or one `sendmsg` with
//! `UDP_SEGMENT` (GSO), and the `sendmmsg` call the floor's batch shares.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use super::addr::{read_sockaddr, zeroed_storage, RawAddr};

/// Largest number of segments one UDP_SEGMENT write may carry
/// (`UDP_MAX_SEGMENTS` in older kernels; newer ones allow more).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Largest UDP payload of one GSO write (IPv4 limit, with room to spare).
pub const GSO_MAX_BYTES: usize = 65_000;

fn empty_iovecs(count: usize) -> Vec<libc::iovec> {
    vec![
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        count
    ]
}

pub(super) fn zeroed_headers(count: usize) -> Vec<libc::mmsghdr> {
    // SAFETY: mmsghdr is plain integers and pointers; all-zero is valid.
    vec![unsafe { mem::zeroed::<libc::mmsghdr>() }; count]
}

/// Points header `h` at one iovec and an address (null: none), with no
/// control data, ready for `recvmmsg` or `sendmmsg`.
pub(super) fn point(
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

/// One `sendmmsg` call over `hdrs`: how many datagrams the kernel took, or
/// the error.
///
/// # Safety
/// Every header in `hdrs` must point (name, iovec and the iovec's bytes)
/// into memory that stays alive and unchanged for the call.
pub(super) unsafe fn sendmmsg(fd: RawFd, hdrs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    let vlen = hdrs.len().min(libc::c_uint::MAX as usize) as libc::c_uint;
    // SAFETY: `hdrs` is an exclusive slice of `vlen` headers whose pointers
    // the caller vouches for; the kernel writes only their `msg_len`. A
    // stale `fd` only makes the call fail.
    let n = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), vlen, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

// ---------------------------------------------------------------------------
// recvmmsg.

/// A batch of receive slots for `recvmmsg`: `count` slots of up to
/// `capacity` bytes, each with `headroom` free bytes in front of its
/// datagram (where a header can be written in place), optionally with the
/// source address of every datagram.
pub struct RecvBatch {
    buf: Vec<u8>,
    stride: usize,
    headroom: usize,
    capacity: usize,
    filled: usize,
    lens: Vec<usize>,
    /// One per slot when sources are recorded; empty otherwise.
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    calls: u64,
}

// SAFETY: the raw pointers inside `iovs`/`hdrs` are only ever set right
// before a call and point into `buf` and `names`, which move with the
// struct; nothing is shared between threads.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// `count` slots of `capacity` bytes each, without headroom or sources.
    pub fn new(count: usize, capacity: usize) -> RecvBatch {
        RecvBatch::build(count, 0, capacity, false)
    }

    /// `count` slots of `capacity` bytes, each with `headroom` writable bytes
    /// in front, recording every datagram's source address.
    pub fn with_sources(count: usize, headroom: usize, capacity: usize) -> RecvBatch {
        RecvBatch::build(count, headroom, capacity, true)
    }

    fn build(count: usize, headroom: usize, capacity: usize, sources: bool) -> RecvBatch {
        let count = count.max(1);
        let stride = (headroom + capacity).next_multiple_of(64);
        RecvBatch {
            buf: vec![0; count * stride],
            stride,
            headroom,
            capacity,
            filled: 0,
            lens: vec![0; count],
            names: if sources {
                vec![zeroed_storage(); count]
            } else {
                Vec::new()
            },
            iovs: empty_iovecs(count),
            hdrs: zeroed_headers(count),
            calls: 0,
        }
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.hdrs.len()
    }

    /// Receives up to a batch from `fd` without blocking; `Ok(0)` when
    /// nothing is queued.
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.filled = 0;
        let base = self.buf.as_mut_ptr();
        for (i, iov) in self.iovs.iter_mut().enumerate() {
            // In bounds: i * stride + headroom + capacity ≤ count * stride.
            iov.iov_base = base.wrapping_add(i * self.stride + self.headroom).cast();
            iov.iov_len = self.capacity;
        }
        let sources = !self.names.is_empty();
        let names = self.names.as_mut_ptr();
        let namelen = if sources {
            mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t
        } else {
            0
        };
        let iovs = self.iovs.as_mut_ptr();
        for (i, h) in self.hdrs.iter_mut().enumerate() {
            let name = if sources {
                names.wrapping_add(i).cast()
            } else {
                std::ptr::null_mut()
            };
            point(h, name, namelen, iovs.wrapping_add(i));
        }
        let n = loop {
            self.calls += 1;
            // SAFETY: `hdrs` holds initialised headers whose name and iovec
            // pointers were just set into `names`, `iovs` and `buf` (each iovec
            // inside its own slot), all owned by `self`, exclusively borrowed.
            let rc = unsafe {
                libc::recvmmsg(
                    fd.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    self.hdrs.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if rc >= 0 {
                break rc as usize;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(0),
                _ => return Err(e),
            }
        };
        for (len, h) in self.lens.iter_mut().zip(&self.hdrs[..n]) {
            *len = (h.msg_len as usize).min(self.capacity);
        }
        self.filled = n;
        Ok(n)
    }

    /// Datagram `i` of the last `recv`.
    pub fn get(&self, i: usize) -> &[u8] {
        let start = self.data_offset(i);
        &self.buf[start..start + self.lens[i]]
    }

    /// Length of datagram `i` of the last `recv`.
    pub fn datagram_len(&self, i: usize) -> usize {
        self.lens[i]
    }

    /// Where datagram `i` starts in [`RecvBatch::area_mut`].
    pub fn data_offset(&self, i: usize) -> usize {
        i * self.stride + self.headroom
    }

    /// Source of datagram `i` of the last `recv`; `None` when sources are
    /// not recorded, for a datagram longer than its slot (truncated) and for
    /// an address that cannot be read.
    pub fn source(&self, i: usize) -> Option<SocketAddr> {
        if i >= self.filled || self.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        read_sockaddr(self.names.get(i)?, self.hdrs[i].msg_hdr.msg_namelen)
    }

    /// How many datagrams of the last `recv` were longer than their slot.
    pub fn truncated(&self) -> usize {
        self.hdrs[..self.filled]
            .iter()
            .filter(|h| h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0)
            .count()
    }

    /// `recvmmsg` calls made so far (retries after a signal included).
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// The whole receive area, headroom included.
    pub fn area_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    pub(super) fn area(&self) -> &[u8] {
        &self.buf
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
            iovs: empty_iovecs(count),
            hdrs: zeroed_headers(count),
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
        for (i, iov) in self.iovs[..count].iter_mut().enumerate() {
            // In bounds: i * slot + len ≤ buf.len().
            iov.iov_base = base.wrapping_add(i * self.slot).cast();
            iov.iov_len = len;
        }
        let (name, namelen) = match self.dest.as_mut() {
            Some(d) => (
                (&mut d.storage as *mut libc::sockaddr_storage).cast::<libc::c_void>(),
                d.len,
            ),
            None => (std::ptr::null_mut(), 0),
        };
        let iovs = self.iovs.as_mut_ptr();
        for (i, h) in self.hdrs[..count].iter_mut().enumerate() {
            point(h, name, namelen, iovs.wrapping_add(i));
        }
        let mut done = 0;
        let mut stalls = 0;
        while done < count {
            // SAFETY: headers done..count were set above and point into
            // `buf`, `iovs` and `self.dest`, all owned by `self` and
            // exclusively borrowed for the call.
            let e = match unsafe { sendmmsg(fd.as_raw_fd(), &mut self.hdrs[done..count]) } {
                Ok(n) if n > 0 => {
                    done += n;
                    continue;
                }
                // The kernel took nothing without saying why: give up the rest.
                Ok(_) => break,
                Err(e) => e,
            };
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
        let mut rb = RecvBatch::new(8, 64);
        let mut got = 0;
        let t0 = std::time::Instant::now();
        while got < 4 && t0.elapsed().as_secs() < 2 {
            let n = rb.recv(rx.as_fd()).unwrap();
            for i in 0..n {
                assert_eq!(rb.get(i), &[(got + i) as u8; 10][..]);
                assert_eq!(rb.source(i), None);
            }
            got += n;
        }
        assert_eq!(got, 4);
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
    }

    #[test]
    fn sources_headroom_and_truncation() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(&[1; 8], rx.local_addr().unwrap()).unwrap();
        tx.send_to(&[2; 100], rx.local_addr().unwrap()).unwrap();
        let mut rb = RecvBatch::with_sources(4, 4, 16);
        let mut n = 0;
        let t0 = std::time::Instant::now();
        while n == 0 && t0.elapsed().as_secs() < 2 {
            n = rb.recv(rx.as_fd()).unwrap();
        }
        // Loopback queues both datagrams before send_to returns.
        assert_eq!(n, 2);
        assert_eq!(rb.source(0), Some(tx.local_addr().unwrap()));
        assert_eq!(rb.get(0), &[1; 8]);
        assert!(rb.data_offset(0) >= 4);
        // 100 bytes into a 16-byte slot: truncated, no source.
        assert_eq!(
            (rb.truncated(), rb.source(1), rb.datagram_len(1)),
            (1, None, 16)
        );
        assert_eq!(rb.source(2), None);
        assert!(rb.calls() >= 1);
    }
}
