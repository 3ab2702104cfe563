//! The sending side of a traffic generator: [`SendBatch`], a preallocated
//! batch of equal-length datagrams for one destination, sent with one
//! `sendmmsg` or, with UDP GSO, as one `sendmsg` carrying `UDP_SEGMENT`.
//!
//! uturn itself does not use this module; the load generator does (its
//! receivers use [`crate::syscall::UdpBatch`] like the relay's shards).
//! As elsewhere in this crate, every pointer handed to the kernel points
//! into memory the batch owns and is set from `&mut self` right before the
//! call.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::addr::RawAddr;
use crate::syscall::{aim, empty_iovecs, zeroed_headers};

/// Most segments one `UDP_SEGMENT` write may carry (older kernels' limit,
/// `UDP_MAX_SEGMENTS`; newer ones accept more).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Most UDP payload bytes of one GSO write (below the IPv4 limit).
pub const GSO_MAX_BYTES: usize = 65_000;

/// Immediate retries of a send that found the socket buffer full, before
/// the rest of the batch is given up.
const STALL_RETRIES: u32 = 3;

/// What a sender does after a failed send call.
enum AfterError {
    /// Interrupted, or the buffer was full and a retry is still allowed
    /// (the thread has yielded once): call again.
    Retry,
    /// The socket buffer stayed full.
    Full,
    /// Any other error.
    Fail,
}

fn after_error(e: &io::Error, stalls: &mut u32) -> AfterError {
    match e.kind() {
        io::ErrorKind::Interrupted => AfterError::Retry,
        io::ErrorKind::WouldBlock if *stalls < STALL_RETRIES => {
            *stalls += 1;
            std::thread::yield_now();
            AfterError::Retry
        }
        io::ErrorKind::WouldBlock => AfterError::Full,
        _ => AfterError::Fail,
    }
}

/// `count` slots of `slot` bytes, filled by the caller and sent as
/// datagrams of one length to one destination.
pub struct SendBatch {
    buf: Box<[u8]>,
    slot: usize,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    /// The destination of the send in progress; the headers point at it.
    dest: Option<RawAddr>,
}

impl SendBatch {
    /// `count` (at least 1) slots of `slot` bytes each.
    pub fn new(count: usize, slot: usize) -> SendBatch {
        let count = count.max(1);
        SendBatch {
            buf: vec![0; count * slot].into_boxed_slice(),
            slot,
            iovs: empty_iovecs(count),
            hdrs: zeroed_headers(count),
            dest: None,
        }
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.hdrs.len()
    }

    /// Slot `i` (`i < slots()`), for the caller to fill.
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        let start = i * self.slot;
        &mut self.buf[start..start + self.slot]
    }

    /// The address in the headers: `dest`, or none (the connected peer).
    fn set_dest(&mut self, dest: Option<&RawAddr>) -> (*mut libc::c_void, libc::socklen_t) {
        self.dest = dest.copied();
        match self.dest.as_mut() {
            Some(d) => (
                (&mut d.storage as *mut libc::sockaddr_storage).cast(),
                d.len,
            ),
            None => (std::ptr::null_mut(), 0),
        }
    }

    /// Sends the first `len` bytes of slots `0..count` as `count` datagrams
    /// to `dest` (`None`: the socket's connected peer) with `sendmmsg`.
    /// Returns how many the kernel took; a full socket buffer ends the batch
    /// early after a few immediate retries, the first error only when
    /// nothing was sent.
    pub fn send(
        &mut self,
        fd: BorrowedFd<'_>,
        count: usize,
        len: usize,
        dest: Option<&RawAddr>,
    ) -> io::Result<usize> {
        let count = count.min(self.hdrs.len());
        let len = len.min(self.slot);
        let (name, namelen) = self.set_dest(dest);
        let base = self.buf.as_mut_ptr();
        for (i, iov) in self.iovs[..count].iter_mut().enumerate() {
            // In bounds: i * slot + len <= count * slot = buf.len().
            iov.iov_base = base.wrapping_add(i * self.slot).cast();
            iov.iov_len = len;
        }
        let iovs = self.iovs.as_mut_ptr();
        for (i, h) in self.hdrs[..count].iter_mut().enumerate() {
            aim(h, name, namelen, iovs.wrapping_add(i));
        }
        let mut done = 0;
        let mut stalls = 0;
        while done < count {
            let pending = &mut self.hdrs[done..count];
            // SAFETY: the headers in `pending` were aimed just above at
            // `iovs`, `buf` and `self.dest`, which `self` owns and which stay
            // put while `self` is exclusively borrowed here; the kernel only
            // reads them and writes each header's `msg_len`. A stale `fd`
            // makes the call fail without touching memory.
            let rc = unsafe {
                libc::sendmmsg(
                    fd.as_raw_fd(),
                    pending.as_mut_ptr(),
                    pending.len() as libc::c_uint,
                    0,
                )
            };
            if rc > 0 {
                done += rc as usize;
                continue;
            }
            if rc == 0 {
                // Nothing taken and no reason given: stop here.
                break;
            }
            let e = io::Error::last_os_error();
            match after_error(&e, &mut stalls) {
                AfterError::Retry => {}
                AfterError::Full => break,
                AfterError::Fail if done > 0 => break,
                AfterError::Fail => return Err(e),
            }
        }
        Ok(done)
    }

    /// Sends slots `0..count`, each exactly one slot long, as ONE `sendmsg`
    /// with `UDP_SEGMENT` set to the slot size: the kernel cuts it into
    /// `count` datagrams. All or nothing: returns `count`, or 0 when the
    /// socket buffer stayed full. The caller keeps `count * slot` within
    /// [`GSO_MAX_BYTES`] and `count` within [`GSO_MAX_SEGMENTS`].
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
        let (name, namelen) = self.set_dest(dest);
        let mut iov = libc::iovec {
            iov_base: self.buf.as_mut_ptr().cast(),
            iov_len: count * self.slot,
        };
        // Room for one control message holding a u16, aligned for cmsghdr.
        let mut control = [0u64; 4];
        // SAFETY: CMSG_SPACE is arithmetic on its argument.
        let space = unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as u32) } as usize;
        if space > mem::size_of_val(&control) {
            return Err(io::Error::from(io::ErrorKind::Unsupported));
        }
        // SAFETY: msghdr is plain old data (integers and raw pointers);
        // all-zero is a valid value.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_name = name;
        msg.msg_namelen = namelen;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let segment = u16::try_from(self.slot).unwrap_or(u16::MAX);
        // SAFETY: `msg_control` points at `control`, checked above to hold
        // CMSG_SPACE(2) bytes and aligned for cmsghdr (u64 array), so
        // CMSG_FIRSTHDR returns a non-null pointer to its start and
        // CMSG_DATA points at the two data bytes inside the same array.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = libc::UDP_SEGMENT;
            (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), segment);
        }
        let mut stalls = 0;
        loop {
            // SAFETY: `msg` points at `iov` (into `buf`), `control` and
            // `self.dest`, all alive and not otherwise used during the call;
            // the kernel only reads them.
            let rc = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, 0) };
            if rc >= 0 {
                return Ok(count);
            }
            let e = io::Error::last_os_error();
            match after_error(&e, &mut stalls) {
                AfterError::Retry => {}
                AfterError::Full => return Ok(0),
                AfterError::Fail => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::UdpBatch;
    use crate::BatchLayout;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;
    use std::time::{Duration, Instant};

    /// Receives until `want` datagrams arrived (or two seconds passed);
    /// returns their lengths and first bytes.
    fn receive(rx: &UdpSocket, batch: &mut UdpBatch, want: usize) -> Vec<(usize, u8)> {
        let mut got = Vec::new();
        let t0 = Instant::now();
        while got.len() < want && t0.elapsed() < Duration::from_secs(2) {
            let n = batch.recv(rx.as_fd()).unwrap();
            for i in 0..n {
                let (_, d) = batch.datagram(i).unwrap();
                got.push((d.len(), d[0]));
            }
        }
        got
    }

    #[test]
    fn sendmmsg_and_gso_arrive_as_separate_datagrams() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dest = RawAddr::new(&rx.local_addr().unwrap());
        let mut sb = SendBatch::new(4, 10);
        assert_eq!(sb.slots(), 4);
        for i in 0..4 {
            sb.slot_mut(i).fill(i as u8);
        }
        let mut rb = UdpBatch::new(BatchLayout {
            slots: 8,
            headroom: 0,
            capacity: 64,
            tailroom: 0,
            reply_len: 0,
        });
        // Shorter than the slot: only `len` bytes of each go out.
        assert_eq!(sb.send(tx.as_fd(), 4, 7, Some(&dest)).unwrap(), 4);
        assert_eq!(
            receive(&rx, &mut rb, 4),
            vec![(7, 0), (7, 1), (7, 2), (7, 3)]
        );
        // A connected socket needs no destination.
        tx.connect(rx.local_addr().unwrap()).unwrap();
        assert_eq!(sb.send(tx.as_fd(), 2, 10, None).unwrap(), 2);
        assert_eq!(receive(&rx, &mut rb, 2), vec![(10, 0), (10, 1)]);
        // GSO: one write, three datagrams of one slot each.
        match sb.send_gso(tx.as_fd(), 3, Some(&dest)) {
            Ok(3) => assert_eq!(receive(&rx, &mut rb, 3), vec![(10, 0), (10, 1), (10, 2)]),
            other => eprintln!("no UDP GSO here: {other:?}"),
        }
        assert_eq!(rb.recv(rx.as_fd()).unwrap(), 0);
    }

    #[test]
    fn a_send_error_with_nothing_sent_is_returned() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut sb = SendBatch::new(2, 8);
        // An IPv4 socket cannot reach an IPv6 destination.
        let v6 = RawAddr::new(&"[::1]:9".parse().unwrap());
        assert!(sb.send(tx.as_fd(), 2, 8, Some(&v6)).is_err());
        assert_eq!(sb.send_gso(tx.as_fd(), 0, Some(&v6)).unwrap(), 0);
    }
}
