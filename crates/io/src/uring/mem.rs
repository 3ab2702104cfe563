//! Memory the kernel reads or writes on its own schedule: the provided
//! receive buffers with their buffer ring, and the send slots (message
//! headers, addresses and reply bytes).
//!
//! Both live in raw allocations, never in a `Box` or `Vec`: the kernel writes
//! into a receive buffer and reads a send slot while the program runs, so no
//! Rust reference may cover that memory except the one handed out, through
//! `&mut self`, for a buffer or slot that the kernel is known not to use at
//! that moment (a buffer delivered by a completion and not yet given back; a
//! send slot not in flight).

use std::alloc::{self, Layout};
use std::io;
use std::net::SocketAddr;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU16, Ordering};

use crate::addr::write_sockaddr;

/// An owned, zeroed heap allocation that may be deliberately leaked.
pub(super) struct RawMem {
    ptr: NonNull<u8>,
    layout: Layout,
    /// Set when the kernel may still use the memory: never freed then.
    pub(super) leak: bool,
}

impl RawMem {
    pub(super) fn zeroed(size: usize, align: usize) -> io::Result<RawMem> {
        let layout = Layout::from_size_align(size.max(1), align)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad buffer layout"))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(RawMem {
            ptr,
            layout,
            leak: false,
        })
    }

    pub(super) fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for RawMem {
    fn drop(&mut self) {
        if !self.leak {
            // SAFETY: allocated in `zeroed` with exactly this layout, freed once.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
        }
    }
}

/// `struct io_uring_buf` (linux/io_uring.h): one entry of a buffer ring. The
/// first entry's `resv` field is the ring's tail.
#[repr(C)]
struct BufEntry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const _: () = assert!(std::mem::size_of::<BufEntry>() == 16);
/// Offset of the tail (entry 0's `resv`) in the ring.
const TAIL_OFFSET: usize = 14;

/// The kernel wants a buffer ring page-aligned.
fn page_size() -> usize {
    // SAFETY: sysconf has no memory effects.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n)
        .ok()
        .filter(|n| n.is_power_of_two())
        .unwrap_or(4096)
}

/// The provided receive buffers and the ring through which they are handed
/// to the kernel.
pub(super) struct RxPool {
    mem: RawMem,
    ring: RawMem,
    /// Distance between buffers (each buffer's whole length, tailroom included).
    stride: usize,
    /// Where in each buffer the kernel starts writing: 0 for datagrams
    /// (their `recvmsg` header comes first), the headroom for streams.
    kernel_offset: usize,
    /// The length announced to the kernel: header, name area and payload
    /// (datagrams), or the payload (streams).
    kernel_len: u32,
    count: u16,
    /// Next ring position to fill; published to the kernel by `publish`.
    tail: u16,
    /// References to each buffer held by the program (the datagram being
    /// processed, sends in flight). At zero the buffer goes back to the ring.
    holds: Box<[u16]>,
    /// Buffers the kernel has handed out and that are not back in the ring.
    out: usize,
}

impl RxPool {
    /// `count` buffers (a power of two, at most 32768) of `stride` bytes,
    /// of which the kernel may fill `kernel_len` from `kernel_offset` on.
    pub(super) fn new(
        count: u16,
        stride: usize,
        kernel_offset: usize,
        kernel_len: u32,
    ) -> io::Result<RxPool> {
        if count == 0 || !count.is_power_of_two() || count > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the buffer count must be a power of two up to 32768",
            ));
        }
        if kernel_offset.saturating_add(kernel_len as usize) > stride {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the kernel's buffer length exceeds the buffer",
            ));
        }
        let mem = RawMem::zeroed(usize::from(count) * stride, 64)?;
        let ring = RawMem::zeroed(
            usize::from(count) * std::mem::size_of::<BufEntry>(),
            page_size(),
        )?;
        Ok(RxPool {
            mem,
            ring,
            stride,
            kernel_offset,
            kernel_len,
            count,
            tail: 0,
            holds: vec![0; usize::from(count)].into_boxed_slice(),
            out: usize::from(count),
        })
    }

    /// Address of the ring, to register with the kernel.
    pub(super) fn ring_addr(&self) -> u64 {
        self.ring.ptr() as u64
    }

    pub(super) fn count(&self) -> u16 {
        self.count
    }

    pub(super) fn stride(&self) -> usize {
        self.stride
    }

    /// Buffers currently in the ring (available to the kernel once published).
    pub(super) fn available(&self) -> usize {
        usize::from(self.count) - self.out
    }

    /// Buffers held by the program.
    pub(super) fn out(&self) -> usize {
        self.out
    }

    /// Marks leaked: the memory outlives this pool (the kernel may use it).
    pub(super) fn leak(&mut self) {
        self.mem.leak = true;
        self.ring.leak = true;
    }

    /// Fills the ring with every buffer (at start-up).
    pub(super) fn fill(&mut self) {
        for bid in 0..self.count {
            self.put(bid);
        }
        self.publish();
    }

    /// The kernel delivered buffer `bid`: one hold, for its processing.
    /// False for a buffer id that is out of range or not in the ring.
    pub(super) fn delivered(&mut self, bid: u16) -> bool {
        match self.holds.get_mut(usize::from(bid)) {
            Some(h) if *h == 0 => {
                *h = 1;
                self.out += 1;
                true
            }
            _ => false,
        }
    }

    /// One more reference to a delivered buffer (a send reads from it).
    pub(super) fn hold(&mut self, bid: u16) {
        if let Some(h) = self.holds.get_mut(usize::from(bid)) {
            *h += 1;
        }
    }

    /// Drops one reference; the last one puts the buffer back in the ring
    /// (visible to the kernel at the next `publish`).
    pub(super) fn release(&mut self, bid: u16) {
        let Some(h) = self.holds.get_mut(usize::from(bid)) else {
            return;
        };
        match *h {
            0 => {}
            1 => {
                *h = 0;
                self.put(bid);
            }
            _ => *h -= 1,
        }
    }

    fn put(&mut self, bid: u16) {
        let idx = usize::from(self.tail & (self.count - 1));
        let addr =
            self.mem.ptr() as u64 + (usize::from(bid) * self.stride + self.kernel_offset) as u64;
        // SAFETY: `idx < count`, so the entry lies inside the ring allocation.
        // Positions from the published tail on are not read by the kernel
        // until the next `publish`, and only the addr/len/bid fields are
        // written: entry 0's `resv` is the tail, which the kernel reads.
        unsafe {
            let e = self.ring.ptr().cast::<BufEntry>().add(idx);
            ptr::addr_of_mut!((*e).addr).write(addr);
            ptr::addr_of_mut!((*e).len).write(self.kernel_len);
            ptr::addr_of_mut!((*e).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        self.out -= 1;
    }

    /// Makes every buffer put back so far visible to the kernel.
    pub(super) fn publish(&self) {
        // SAFETY: the tail is the 2-byte-aligned `resv` field of entry 0,
        // inside the ring allocation; the kernel reads it with acquire
        // semantics, and this is its only writer.
        let tail = unsafe { &*self.ring.ptr().add(TAIL_OFFSET).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// Buffer `bid`, whole. Only for a buffer held by the program and not
    /// read by a send in flight (the caller's promise: it is being processed).
    pub(super) fn buf_mut(&mut self, bid: u16) -> &mut [u8] {
        let bid = usize::from(bid).min(usize::from(self.count) - 1);
        // SAFETY: `bid < count`, so the range lies inside `mem`. The buffer is
        // out of the ring (the kernel does not write it) and no send reads it
        // yet; `&mut self` keeps this the only reference.
        unsafe {
            std::slice::from_raw_parts_mut(self.mem.ptr().add(bid * self.stride), self.stride)
        }
    }

    /// Read-only view of buffer `bid` for parsing a completion.
    pub(super) fn buf(&self, bid: u16) -> &[u8] {
        let bid = usize::from(bid).min(usize::from(self.count) - 1);
        // SAFETY: as in `buf_mut`: the buffer was just delivered, so the
        // kernel is done writing it.
        unsafe { std::slice::from_raw_parts(self.mem.ptr().add(bid * self.stride), self.stride) }
    }

    /// Address of byte `offset` of buffer `bid` (for a send's iovec).
    pub(super) fn addr_of(&self, bid: u16, offset: usize) -> *const u8 {
        self.mem
            .ptr()
            .wrapping_add(usize::from(bid) * self.stride + offset)
    }
}

/// Datagrams one `sendmsg` may carry with UDP GSO (the kernel allows 64
/// or more; a batch of receives brings at most 32 anyway).
pub(super) const MAX_SEGMENTS: usize = 32;

/// `CMSG_SPACE(sizeof(u16))` on 64-bit Linux, in u64 words.
const CONTROL_WORDS: usize = 3;

/// What the kernel reads for one `sendmsg`: one datagram, or with UDP GSO
/// several of one size (the last may be shorter) to one destination, each
/// payload where it was received.
#[repr(C)]
struct TxHdr {
    msg: libc::msghdr,
    iovs: [libc::iovec; MAX_SEGMENTS],
    name: libc::sockaddr_storage,
    /// The UDP_SEGMENT control message, when the send carries several.
    control: [u64; CONTROL_WORDS],
}

/// One send slot while in flight.
#[derive(Copy, Clone, Debug, Default)]
pub(super) struct TxMeta {
    /// Fixed-file slot the send goes out of.
    pub(super) file: u32,
    /// Receive buffer the payload is read from, if not the slot's reply area.
    pub(super) bid: Option<u16>,
    /// Datagrams the send carries (1, or more with GSO).
    pub(super) segments: u16,
    /// The next slot whose datagram rides in this slot's send (GSO): its
    /// buffer and slot are given back with this one's completion.
    pub(super) next: Option<u32>,
}

/// Send slots: a message header, an address and a reply area each, plus one
/// spare reply area used as scratch when every slot is busy.
pub(super) struct TxPool {
    hdrs: RawMem,
    reply: RawMem,
    reply_len: usize,
    count: usize,
    pub(super) meta: Box<[TxMeta]>,
    free: Vec<u32>,
}

impl TxPool {
    pub(super) fn new(count: u32, reply_len: usize) -> io::Result<TxPool> {
        let count = count.max(1) as usize;
        let hdrs = RawMem::zeroed(
            count * std::mem::size_of::<TxHdr>(),
            std::mem::align_of::<TxHdr>(),
        )?;
        let reply = RawMem::zeroed((count + 1) * reply_len, 64)?;
        Ok(TxPool {
            hdrs,
            reply,
            reply_len,
            count,
            meta: vec![TxMeta::default(); count].into_boxed_slice(),
            free: (0..count as u32).rev().collect(),
        })
    }

    pub(super) fn reply_len(&self) -> usize {
        self.reply_len
    }

    pub(super) fn leak(&mut self) {
        self.hdrs.leak = true;
        self.reply.leak = true;
    }

    pub(super) fn in_flight_or_reserved(&self) -> usize {
        self.count - self.free.len()
    }

    pub(super) fn reserve(&mut self) -> Option<u32> {
        self.free.pop()
    }

    pub(super) fn unreserve(&mut self, slot: u32) {
        debug_assert!(!self.free.contains(&slot));
        self.free.push(slot);
    }

    /// Reply area of a reserved slot, or the spare one (`None`).
    pub(super) fn reply_mut(&mut self, slot: Option<u32>) -> &mut [u8] {
        let i = slot.map_or(self.count, |s| (s as usize).min(self.count));
        // SAFETY: `i <= count` and the allocation holds `count + 1` areas.
        // A reserved slot is not in flight, and the spare area is never
        // handed to the kernel, so nothing else reads or writes this area
        // while `&mut self` is borrowed.
        unsafe {
            std::slice::from_raw_parts_mut(self.reply.ptr().add(i * self.reply_len), self.reply_len)
        }
    }

    pub(super) fn reply_addr(&self, slot: u32) -> *const u8 {
        self.reply
            .ptr()
            .wrapping_add((slot as usize).min(self.count) * self.reply_len)
    }

    /// Writes the message header of reserved slot `slot` (a send of
    /// `len` bytes at `data` to `dest`) and returns it for the SQE.
    pub(super) fn prepare(
        &mut self,
        slot: u32,
        dest: &SocketAddr,
        data: *const u8,
        len: usize,
    ) -> *const libc::msghdr {
        let i = (slot as usize).min(self.count - 1);
        // SAFETY: `i < count`, inside the allocation, which is aligned for
        // `TxHdr`. The slot is reserved, not in flight: the kernel does not
        // read it now. Every field is written through raw pointers, and the
        // header points only into this same slot and at `data`, which the
        // caller keeps alive until the send completes.
        unsafe {
            let h = self.hdrs.ptr().cast::<TxHdr>().add(i);
            let name = ptr::addr_of_mut!((*h).name);
            let namelen = write_sockaddr(dest, &mut *name);
            let iov = ptr::addr_of_mut!((*h).iovs).cast::<libc::iovec>();
            iov.write(libc::iovec {
                iov_base: data as *mut libc::c_void,
                iov_len: len,
            });
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = name.cast();
            msg.msg_namelen = namelen;
            msg.msg_iov = iov;
            msg.msg_iovlen = 1;
            let m = ptr::addr_of_mut!((*h).msg);
            m.write(msg);
            m.cast_const()
        }
    }

    /// The message header of slot `slot`, for its SQE.
    pub(super) fn header(&self, slot: u32) -> *const libc::msghdr {
        let i = (slot as usize).min(self.count - 1);
        self.hdrs
            .ptr()
            .cast::<TxHdr>()
            .wrapping_add(i)
            .cast::<libc::msghdr>()
            .cast_const()
    }

    /// Adds a datagram of `len` bytes at `data` to the prepared, not yet
    /// submitted send of slot `slot`, and (from the second datagram on)
    /// marks it a UDP GSO send of `segment`-byte datagrams. False when the
    /// send is full.
    pub(super) fn append(&mut self, slot: u32, data: *const u8, len: usize, segment: u16) -> bool {
        let i = (slot as usize).min(self.count - 1);
        // SAFETY: as in `prepare`: `i < count`, inside the aligned
        // allocation; the slot was prepared and its send is not submitted
        // yet, so the kernel does not read it now. `n < MAX_SEGMENTS` keeps
        // the write inside `iovs`. The control message is written into the
        // slot's own `control` words, which are big enough for one cmsg
        // holding a u16 (checked by the assertion below the impl).
        unsafe {
            let h = self.hdrs.ptr().cast::<TxHdr>().add(i);
            let m = ptr::addr_of_mut!((*h).msg);
            let n = (*m).msg_iovlen;
            if n >= MAX_SEGMENTS {
                return false;
            }
            let iov = ptr::addr_of_mut!((*h).iovs).cast::<libc::iovec>();
            iov.add(n).write(libc::iovec {
                iov_base: data as *mut libc::c_void,
                iov_len: len,
            });
            (*m).msg_iovlen = n + 1;
            if (*m).msg_control.is_null() {
                let control = ptr::addr_of_mut!((*h).control);
                control.write([0; CONTROL_WORDS]);
                let c = control.cast::<libc::cmsghdr>();
                (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as usize;
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = libc::UDP_SEGMENT;
                libc::CMSG_DATA(c).cast::<u16>().write_unaligned(segment);
                (*m).msg_control = control.cast();
                (*m).msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as usize;
            }
        }
        true
    }
}

// The control words hold one cmsg with a u16.
const _: () = assert!(std::mem::size_of::<[u64; CONTROL_WORDS]>() >= 24);
