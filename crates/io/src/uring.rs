//! The io_uring backend: one ring per shard, multishot `recvmsg` into a ring
//! of provided buffers on every socket, sends queued as `sendmsg` SQEs and
//! handed to the kernel with one `io_uring_enter` per loop turn, sockets as
//! registered (fixed) files.
//!
//! # Receive buffer layout
//!
//! With provided buffers, a multishot `recvmsg` completion writes, from the
//! start of the buffer: a 16-byte `io_uring_recvmsg_out` header, then a name
//! area of exactly `msg_namelen` bytes (the source address, zero-padded),
//! then `msg_controllen` bytes of control data (none here), then the payload.
//! The name area is sized so that the payload starts exactly at `headroom`:
//!
//! ```text
//! 0        16                     headroom             headroom+capacity   stride
//! | header | name (headroom - 16) | payload ............ | tailroom ... pad |
//! ```
//!
//! With the shard's `headroom` = `PEER_HEADROOM` = 48 the name area is 32
//! bytes, enough for a `sockaddr_in6` (28). The header and the name are
//! parsed (source address copied out) before the datagram is handed on, so
//! the protocol layer may then overwrite those first `headroom` bytes with a
//! ChannelData header or a Data indication prefix, in place. The kernel is
//! told each buffer is `headroom + capacity` long, so a longer datagram comes
//! back with `MSG_TRUNC` and is dropped; the `tailroom` after it is never
//! written by the kernel and is free for padding.
//!
//! # Buffer ownership
//!
//! A buffer the kernel fills leaves the ring. It is held once while its
//! datagram is processed and once more by each send that reads from it (a
//! forwarded payload is sent straight from the receive buffer, never
//! copied). When the last hold is dropped — at the end of the turn, or when
//! the send's completion arrives — it goes back into the ring; the ring's
//! tail is published once per turn.
//!
//! # Sends
//!
//! Each datagram lent out for processing reserves a send slot (a `msghdr`,
//! an iovec, a destination address and a reply area, which is the scratch
//! the protocol layer writes an answer into). Its send, if any, becomes a
//! `sendmsg` SQE pointing into the receive buffer or the reply area. The
//! SQEs of a whole turn, on any number of sockets, reach the kernel with
//! the next `io_uring_enter`, which also waits for the next completions.
//! Sends carry `MSG_DONTWAIT`: a full socket buffer fails the send with
//! EAGAIN (counted, dropped), as on the portable backend, instead of parking
//! it on a poll while it holds a receive buffer. The slot is freed by the
//! send's completion.
//!
//! # Sockets: registration, re-arming and closing
//!
//! A socket is registered into a free slot of a sparse fixed-file table and
//! a multishot `recvmsg` is armed on it. A completion without `MORE` ends
//! the multishot: the socket is re-armed at the end of the turn (for
//! `ENOBUFS`, as soon as buffers are back in the ring). Closing a socket
//! marks its slot closing (datagrams still arriving are dropped and
//! counted), queues an `AsyncCancel` for the multishot receive, and waits
//! for three things: the receive's final completion (without `MORE`), the
//! cancel's own completion, and the completion of every send queued on that
//! socket. Only then is the slot cleared in the kernel's table, the
//! descriptor closed and the slot reused — so no request still in flight can
//! name a slot that now holds another socket.
//!
//! # Errors
//!
//! Every completion with a negative result is counted in [`IoStats`] under
//! its kind (receive: no buffers, cancelled, other; send: would block, no
//! buffers, too big, other; cancel: not found, other) and logged at debug.
//!
//! # Requests in flight at drop
//!
//! Dropping a [`Uring`] cancels every receive and waits (up to a second)
//! for all requests to finish before the ring is closed and the memory is
//! freed. If they do not finish, the buffers are leaked instead of freed,
//! so that the kernel can never write into memory the program reuses.

mod ctl;
mod gso;
mod mem;
mod probe;
#[cfg(test)]
mod tests;

pub use ctl::SocketCtl;
pub use probe::{probe, Unavailable};

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, types, IoUring};

use super::addr::{read_sockaddr, zeroed_storage};
use super::wake::WakeFd;
use super::IoStats;
use super::TxBytes;
use ctl::{FileSlot, SlotState};
use mem::{RawMem, RxPool, TxMeta, TxPool, MAX_SEGMENTS};

/// Bytes of `struct io_uring_recvmsg_out` at the start of every buffer.
pub const RECVMSG_OUT_LEN: usize = 16;
/// Smallest name area: a `sockaddr_in6`.
const MIN_NAME_LEN: usize = std::mem::size_of::<libc::sockaddr_in6>();
/// Largest name area the kernel honours: a `sockaddr_storage`.
const MAX_NAME_LEN: usize = std::mem::size_of::<libc::sockaddr_storage>();
/// The one buffer group of a ring.
const BGID: u16 = 0;

// user_data: the request kind in the top byte, an index below.
const KIND_SHIFT: u32 = 56;
const KIND_RECV: u64 = 1;
const KIND_SEND: u64 = 2;
const KIND_CANCEL: u64 = 3;
const KIND_WAKE: u64 = 4;

fn user_data(kind: u64, index: u32) -> u64 {
    kind << KIND_SHIFT | u64::from(index)
}

/// Sizes of one ring and its buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UringConfig {
    /// Submission queue entries.
    pub sq_entries: u32,
    /// Completion queue entries (at least `sq_entries`).
    pub cq_entries: u32,
    /// Provided receive buffers: a power of two, at most 32768.
    pub buffers: u16,
    /// Offset of the payload in each buffer (header + name area); between
    /// 16 + 28 and 16 + 128.
    pub headroom: usize,
    /// Largest datagram received whole.
    pub capacity: usize,
    /// Bytes kept free after the largest datagram.
    pub tailroom: usize,
    /// Sends in flight at most (each with a reply area).
    pub tx_slots: u32,
    /// Bytes of each reply area.
    pub reply_len: usize,
    /// Slots of the fixed-file table.
    pub files: u32,
    /// The setup flags tried first; fewer are tried when the kernel
    /// refuses them. `DeferTaskrun` in production.
    pub flags: RingMode,
    /// Send runs of same-size datagrams from one socket to one destination
    /// as one `sendmsg` with UDP_SEGMENT (GSO).
    pub gso: bool,
    /// Batched waits: after a turn that received two or more datagrams,
    /// the next wait asks for `MAX_BATCH_WAIT` completions but returns
    /// after this long at the latest. Zero waits for one.
    pub batch_wait: Duration,
}

/// The most completions a batched wait asks for.
pub const MAX_BATCH_WAIT: usize = 32;

impl UringConfig {
    /// Bytes from one buffer to the next.
    pub fn stride(&self) -> usize {
        (self.headroom + self.capacity + self.tailroom).next_multiple_of(64)
    }

    fn check(&self) -> io::Result<()> {
        let name = self.headroom.checked_sub(RECVMSG_OUT_LEN);
        let ok = name.is_some_and(|n| (MIN_NAME_LEN..=MAX_NAME_LEN).contains(&n))
            && self.capacity > 0
            && self.headroom + self.capacity <= u32::MAX as usize
            && self.files > 0
            && self.sq_entries > 0;
        if ok {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "io_uring buffer layout out of range",
            ))
        }
    }
}

/// The setup flags the kernel accepted, best first.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RingMode {
    /// SINGLE_ISSUER | DEFER_TASKRUN | SUBMIT_ALL (Linux 6.1).
    DeferTaskrun,
    /// COOP_TASKRUN | SUBMIT_ALL (Linux 5.19).
    CoopTaskrun,
    /// No setup flags.
    Plain,
}

impl RingMode {
    pub fn name(self) -> &'static str {
        match self {
            RingMode::DeferTaskrun => "single_issuer+defer_taskrun+submit_all",
            RingMode::CoopTaskrun => "coop_taskrun+submit_all",
            RingMode::Plain => "no setup flags",
        }
    }
}

/// A socket registered with a ring (its fixed-file slot).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct SockId(u32);

fn with_context(what: &'static str) -> impl Fn(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Creates a ring with the best setup flags the kernel accepts.
fn build_ring(cfg: &UringConfig) -> io::Result<(IoUring, RingMode)> {
    let mut refused = None;
    let tiers = [
        RingMode::DeferTaskrun,
        RingMode::CoopTaskrun,
        RingMode::Plain,
    ];
    let first = tiers.iter().position(|&m| m == cfg.flags).unwrap_or(0);
    for mode in tiers.into_iter().skip(first) {
        let mut b = IoUring::builder();
        b.setup_cqsize(cfg.cq_entries.max(cfg.sq_entries))
            .setup_clamp();
        match mode {
            RingMode::DeferTaskrun => {
                b.setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_submit_all();
            }
            RingMode::CoopTaskrun => {
                b.setup_coop_taskrun().setup_submit_all();
            }
            RingMode::Plain => {}
        }
        match b.build(cfg.sq_entries) {
            Ok(ring) => {
                tracing::debug!(flags = mode.name(), "io_uring created");
                return Ok((ring, mode));
            }
            // EINVAL: flags this kernel does not know; try fewer.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!(flags = mode.name(), error = %e, "io_uring setup flags refused");
                refused = Some(e);
            }
            Err(e) => return Err(with_context("io_uring_setup")(e)),
        }
    }
    Err(with_context("io_uring_setup")(refused.unwrap_or_else(
        || io::Error::from(io::ErrorKind::Unsupported),
    )))
}

/// A datagram delivered by the last `wait` that was queued for processing.
#[derive(Copy, Clone, Debug)]
struct Pending {
    sock: u32,
    tag: u64,
    from: SocketAddr,
    bid: u16,
    len: usize,
    taken: bool,
    /// Send slot reserved for its answer (its reply area is the scratch).
    tx: Option<u32>,
}

/// One received datagram, lent out for processing.
pub struct Datagram<'a> {
    pub sock: SockId,
    /// The tag its socket was registered with.
    pub tag: u64,
    pub from: SocketAddr,
    /// Payload length; the payload is `buf[headroom..headroom + len]`.
    pub len: usize,
    /// The whole receive buffer (headroom, payload, tailroom), writable.
    pub buf: &'a mut [u8],
    /// A scratch area for an answer (`reply_len` bytes).
    pub scratch: &'a mut [u8],
    /// The ring, to open or close sockets meanwhile.
    pub ctl: &'a mut SocketCtl,
}

/// One shard's ring with its buffers.
///
/// A loop turn: `wait` (which first finishes the previous turn: buffers
/// back to the ring, re-arms, closes), then for each `i < received()`:
/// `datagram(i)` and, for an answer, `send(i, …)`.
pub struct Uring {
    // Declared first: the ring is closed before the memory below is freed.
    ctl: SocketCtl,
    rx: RxPool,
    tx: TxPool,
    cqes: Vec<(u64, i32, u32)>,
    batch: Vec<Pending>,
    headroom: usize,
    capacity: usize,
    wake: Wake,
    batch_wait: Duration,
    /// What the last `wait` asked the kernel for: completions beyond its
    /// sends, and the timeout.
    last_wait: (usize, Duration),
    /// This turn's sends, prepared in their slots, submitted by `wait`
    /// (merged into GSO sends where they can be).
    queued: Vec<QueuedSend>,
    /// The sends `submit_sends` builds SQEs for (kept to reuse its memory).
    heads: Vec<u32>,
    /// Merging is on (off from the start, or after the kernel refused it).
    gso: bool,
}

/// A prepared send waiting for the end of the turn.
#[derive(Copy, Clone, Debug)]
struct QueuedSend {
    slot: u32,
    file: u32,
    dest: SocketAddr,
    data: *const u8,
    len: usize,
}

/// The eventfd the ring watches for wake-ups from other threads. The poll
/// on it reads no memory of the program; the descriptor is kept open here
/// for as long as the ring may refer to it.
struct Wake {
    fd: Option<Arc<WakeFd>>,
    /// A poll is in flight.
    armed: bool,
    /// Multishot poll (Linux 5.13); one-shot polls re-armed after each
    /// wake-up when the kernel refuses it.
    multishot: bool,
    /// A wake-up arrived since the last `take_wake`.
    woken: bool,
}

impl Uring {
    /// Creates the ring (best setup flags first), the sparse fixed-file
    /// table and the provided-buffer ring. Call on the thread that will use
    /// it (SINGLE_ISSUER).
    pub fn new(cfg: &UringConfig) -> io::Result<Uring> {
        cfg.check()?;
        let (ring, mode) = build_ring(cfg)?;
        if !ring.params().is_feature_ext_arg() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring lacks IORING_FEAT_EXT_ARG (Linux 5.11 or newer needed)",
            ));
        }
        ring.submitter()
            .register_files_sparse(cfg.files)
            .map_err(with_context("registering a sparse fixed-file table"))?;
        let kernel_len = (cfg.headroom + cfg.capacity) as u32;
        let mut rx = RxPool::new(cfg.buffers, cfg.stride(), kernel_len)?;
        // SAFETY: the ring memory is page-aligned and holds `count` entries;
        // it stays allocated until the registration ends (unregistered in
        // `Drop`, and leaked if requests may still be in flight), and the
        // ring is closed before the pool is freed (field order).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(rx.ring_addr(), rx.count(), BGID, 0)
        }
        .map_err(with_context("registering a provided-buffer ring"))?;
        rx.fill();
        let tx = TxPool::new(cfg.tx_slots, cfg.reply_len)?;
        let recv_hdr = RawMem::zeroed(
            std::mem::size_of::<libc::msghdr>(),
            std::mem::align_of::<libc::msghdr>(),
        )?;
        // SAFETY: `recv_hdr` is a zeroed allocation sized and aligned for a
        // msghdr (all-zero is a valid msghdr); nothing else refers to it yet.
        unsafe {
            let h = recv_hdr.ptr().cast::<libc::msghdr>();
            (*h).msg_namelen = (cfg.headroom - RECVMSG_OUT_LEN) as libc::socklen_t;
        }
        let cq = ring.params().cq_entries() as usize;
        Ok(Uring {
            ctl: SocketCtl {
                ring,
                mode,
                files: (0..cfg.files).map(|_| FileSlot::free()).collect(),
                free: (0..cfg.files).rev().collect(),
                closing: Vec::with_capacity(64),
                rearm: Vec::with_capacity(64),
                recv_hdr,
                stats: IoStats::default(),
                queued_sends: 0,
                overflow_seen: 0,
            },
            rx,
            tx,
            cqes: Vec::with_capacity(cq),
            batch: Vec::with_capacity(usize::from(cfg.buffers)),
            headroom: cfg.headroom,
            capacity: cfg.capacity,
            batch_wait: cfg.batch_wait,
            last_wait: (0, Duration::ZERO),
            queued: Vec::with_capacity(cfg.tx_slots as usize),
            heads: Vec::with_capacity(cfg.tx_slots as usize),
            gso: cfg.gso,
            wake: Wake {
                fd: None,
                armed: false,
                multishot: true,
                woken: false,
            },
        })
    }

    /// Watches `fd`: each time it becomes readable, `wait` returns and
    /// `take_wake` says so once. Armed with the next `wait`.
    pub fn watch_wake(&mut self, fd: Arc<WakeFd>) {
        self.wake.fd = Some(fd);
    }

    /// Whether the wake-up descriptor was woken since the last call; if so
    /// it is drained (the next wake-up is seen again).
    pub fn take_wake(&mut self) -> bool {
        let woken = std::mem::take(&mut self.wake.woken);
        if woken {
            if let Some(fd) = &self.wake.fd {
                fd.drain();
            }
        }
        woken
    }

    fn arm_wake(&mut self) {
        let w = &self.wake;
        let Some(fd) = w.fd.as_ref().filter(|_| !w.armed) else {
            return;
        };
        let e = opcode::PollAdd::new(types::Fd(fd.as_fd().as_raw_fd()), libc::POLLIN as u32)
            .multi(w.multishot)
            .build()
            .user_data(user_data(KIND_WAKE, 0));
        // If it cannot be queued now, the next turn tries again.
        if self.ctl.push(&e) {
            self.wake.armed = true;
        }
    }

    fn on_wake(&mut self, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.wake.armed = false;
        }
        if res >= 0 {
            self.wake.woken = true;
            return;
        }
        if res == -libc::EINVAL && self.wake.multishot {
            tracing::debug!(
                "multishot poll refused; watching the wake-up descriptor with one-shot polls"
            );
            self.wake.multishot = false;
        } else if res != -libc::ECANCELED {
            self.ctl.stats.ring_errors += 1;
            tracing::debug!(error = %io::Error::from_raw_os_error(-res), "wake-up poll failed");
        }
        // Look for commands anyway: a wake-up may hide behind the error.
        self.wake.woken = true;
    }

    pub fn mode(&self) -> RingMode {
        self.ctl.mode
    }

    pub fn ctl(&mut self) -> &mut SocketCtl {
        &mut self.ctl
    }

    pub fn stats(&self) -> &IoStats {
        &self.ctl.stats
    }

    pub fn stats_mut(&mut self) -> &mut IoStats {
        &mut self.ctl.stats
    }

    /// Buffers currently out of the ring (held by the program).
    pub fn buffers_out(&self) -> usize {
        self.rx.out()
    }

    /// Finishes the previous turn, hands every queued request to the kernel
    /// and waits up to `timeout` for at least one completion, then reaps
    /// every completion. Returns how many datagrams were received.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<usize> {
        let last = self.batch.len();
        self.end_turn();
        let sends = std::mem::take(&mut self.ctl.queued_sends);
        // Under load, sleep until several datagrams are waiting rather than
        // wake for each: with DEFER_TASKRUN the kernel wakes this thread
        // only once that many completions are pending (or the short
        // timeout passes), which saves a context switch per datagram.
        let (extra, timeout) = if self.batch_wait.is_zero() || last < 2 {
            (1, timeout)
        } else {
            (MAX_BATCH_WAIT, timeout.min(self.batch_wait))
        };
        self.last_wait = (extra, timeout);
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        // A UDP send with MSG_DONTWAIT completes while it is submitted, so
        // its completion is already in the queue when the wait begins.
        // Waiting for one completion would then return at once, for a turn
        // with nothing to receive, and another enter to sleep: wait for one
        // completion beyond this turn's sends instead (a receive, a cancel,
        // or the timeout), so that a turn costs one enter.
        let want = sends.saturating_add(extra);
        let res = self.ctl.ring.submitter().submit_with_args(want, &args);
        self.ctl.stats.wakeups += 1;
        if sends > 0 {
            self.ctl.stats.send_calls += 1;
        }
        let res = match res {
            Ok(_) => Ok(()),
            // Timed out, interrupted, or completions backed up: reap.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => {
                self.ctl.stats.ring_errors += 1;
                Err(e)
            }
        };
        self.reap();
        res.map(|()| self.batch.len())
    }

    /// What the last `wait` waited for: completions beyond its sends, and
    /// for how long at most.
    pub fn last_wait(&self) -> (usize, Duration) {
        self.last_wait
    }

    /// Datagrams received by the last `wait`.
    pub fn received(&self) -> usize {
        self.batch.len()
    }

    /// Datagram `i` of the last `wait`, once; `None` when its socket has
    /// been closed since (counted) or `i` is out of range.
    pub fn datagram(&mut self, i: usize) -> Option<Datagram<'_>> {
        let p = self.batch.get_mut(i)?;
        if p.taken {
            return None;
        }
        p.taken = true;
        if self.ctl.files[p.sock as usize].state != SlotState::Open {
            self.ctl.stats.rx_after_close += 1;
            return None;
        }
        p.tx = self.tx.reserve();
        let p = *p;
        Some(Datagram {
            sock: SockId(p.sock),
            tag: p.tag,
            from: p.from,
            len: p.len,
            buf: self.rx.buf_mut(p.bid),
            scratch: self.tx.reply_mut(p.tx),
            ctl: &mut self.ctl,
        })
    }

    /// Queues the answer to datagram `i`: `bytes` sent from socket `sock`
    /// to `dest`, at the next `wait`. False (and counted) when it cannot be.
    pub fn send(&mut self, i: usize, sock: SockId, dest: SocketAddr, bytes: TxBytes) -> bool {
        let Some(p) = self.batch.get_mut(i) else {
            self.ctl.stats.tx_unroutable += 1;
            return false;
        };
        let Some(slot) = p.tx.take() else {
            if p.taken {
                // Every send slot was busy when the datagram was lent out.
                self.ctl.stats.tx_no_slot += 1;
            } else {
                self.ctl.stats.tx_unroutable += 1;
            }
            return false;
        };
        let bid = p.bid;
        let open = self
            .ctl
            .files
            .get(sock.0 as usize)
            .is_some_and(|f| f.state == SlotState::Open);
        let data = match bytes {
            TxBytes::Rx(r) if r.start <= r.end && r.end <= self.rx.stride() => {
                Some((self.rx.addr_of(bid, r.start), r.len(), Some(bid)))
            }
            TxBytes::Reply(n) if n <= self.tx.reply_len() => {
                Some((self.tx.reply_addr(slot), n, None))
            }
            _ => None,
        };
        let Some((ptr, len, hold)) = data.filter(|_| open) else {
            self.tx.unreserve(slot);
            self.ctl.stats.tx_unroutable += 1;
            return false;
        };
        self.tx.prepare(slot, &dest, ptr, len);
        self.tx.meta[slot as usize] = TxMeta {
            file: sock.0,
            bid: hold,
            segments: 1,
            next: None,
        };
        if let Some(b) = hold {
            self.rx.hold(b);
        }
        // Counted as in flight from now on, so that the socket is not
        // closed under a send that `wait` has yet to submit.
        self.ctl.files[sock.0 as usize].sends += 1;
        self.queued.push(QueuedSend {
            slot,
            file: sock.0,
            dest,
            data: ptr,
            len,
        });
        true
    }

    /// Submits the turn's sends: each one as it is, or, with GSO on, runs
    /// of same-size datagrams (the last may be shorter) from one socket to
    /// one destination as one `sendmsg`. Datagrams to one destination keep
    /// their order; sends to different destinations may be reordered.
    fn submit_sends(&mut self) {
        if self.queued.is_empty() {
            return;
        }
        let mut plan = gso::Planner::new();
        // Both lists keep their memory from turn to turn: no allocation here.
        let mut primaries = std::mem::take(&mut self.heads);
        primaries.clear();
        let queued = std::mem::take(&mut self.queued);
        for q in &queued {
            let send = gso::Send {
                slot: q.slot,
                file: q.file,
                dest: q.dest,
                len: q.len,
            };
            if self.gso {
                if let Some(join) = plan.join(&send) {
                    if self
                        .tx
                        .append(join.lead, q.data, q.len, join.segment as u16)
                    {
                        let meta = &mut self.tx.meta;
                        meta[q.slot as usize].next = meta[join.lead as usize].next;
                        meta[join.lead as usize].next = Some(q.slot);
                        meta[join.lead as usize].segments += 1;
                        plan.joined(join, &send);
                        self.ctl.stats.tx_coalesced += 1;
                        continue;
                    }
                    plan.refused(join);
                }
            }
            plan.lead(&send);
            primaries.push(q.slot);
        }
        self.queued = queued;
        self.queued.clear();
        for &slot in &primaries {
            let meta = self.tx.meta[slot as usize];
            let e = opcode::SendMsg::new(types::Fixed(meta.file), self.tx.header(slot))
                .flags(libc::MSG_DONTWAIT as u32)
                .build()
                .user_data(user_data(KIND_SEND, slot));
            if self.ctl.push(&e) {
                self.ctl.queued_sends += 1;
            } else {
                // Not submitted: give everything in it back, counted.
                self.ctl.stats.tx_no_slot += u64::from(meta.segments);
                self.release_send(slot);
            }
        }
        self.heads = primaries;
    }

    /// Gives back a send slot and every slot chained to it: their receive
    /// buffers, and their count of sends in flight on the socket.
    fn release_send(&mut self, slot: u32) {
        let mut next = Some(slot);
        let mut guard = 0;
        while let Some(s) = next {
            let Some(meta) = self.tx.meta.get(s as usize).copied() else {
                self.ctl.stats.ring_errors += 1;
                return;
            };
            if let Some(f) = self.ctl.files.get_mut(meta.file as usize) {
                f.sends = f.sends.saturating_sub(1);
            }
            if let Some(bid) = meta.bid {
                self.rx.release(bid);
            }
            self.tx.meta[s as usize].next = None;
            self.tx.unreserve(s);
            next = meta.next;
            guard += 1;
            if guard > MAX_SEGMENTS {
                self.ctl.stats.ring_errors += 1;
                return;
            }
        }
    }

    /// Gives back what the last turn held, re-arms receives and frees the
    /// slots of closed sockets. `wait` does this first; call it directly
    /// only to settle state without waiting.
    pub fn end_turn(&mut self) {
        self.submit_sends();
        for p in self.batch.drain(..) {
            if let Some(s) = p.tx {
                self.tx.unreserve(s);
            }
            self.rx.release(p.bid);
        }
        self.rx.publish();
        self.ctl.rearm_ready(self.rx.available());
        self.ctl.finish_closing();
        self.arm_wake();
    }

    /// Closes every socket and waits up to `limit` for every request to
    /// finish. True when nothing is in flight anymore.
    pub fn shutdown(&mut self, limit: Duration) -> bool {
        for slot in 0..self.ctl.files.len() as u32 {
            self.ctl.close(SockId(slot));
        }
        let deadline = Instant::now() + limit;
        loop {
            self.end_turn();
            if self.ctl.settled() && self.tx.in_flight_or_reserved() == 0 {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if self.wait(left.min(Duration::from_millis(10))).is_err() {
                // The ring cannot be entered (another thread?): give up.
                return false;
            }
        }
    }

    fn reap(&mut self) {
        self.cqes.clear();
        {
            let mut cq = self.ctl.ring.completion();
            let overflow = cq.overflow();
            self.ctl.stats.cq_overflow += u64::from(overflow.wrapping_sub(self.ctl.overflow_seen));
            self.ctl.overflow_seen = overflow;
            self.cqes
                .extend((&mut cq).map(|c| (c.user_data(), c.result(), c.flags())));
        }
        for k in 0..self.cqes.len() {
            let (ud, res, flags) = self.cqes[k];
            let index = ud as u32;
            match ud >> KIND_SHIFT {
                KIND_RECV => self.on_recv(index, res, flags),
                KIND_SEND => self.on_send(index, res),
                KIND_CANCEL => self.ctl.on_cancel(index, res),
                KIND_WAKE => self.on_wake(res, flags),
                _ => {
                    self.ctl.stats.ring_errors += 1;
                    tracing::debug!(user_data = ud, res, "completion of an unknown request");
                }
            }
        }
    }

    fn on_recv(&mut self, slot: u32, res: i32, flags: u32) {
        let Some(f) = self.ctl.files.get_mut(slot as usize) else {
            self.ctl.stats.ring_errors += 1;
            return;
        };
        let open = f.state == SlotState::Open;
        let (tag, name_len) = (f.tag, self.headroom - RECVMSG_OUT_LEN);
        if !cqueue::more(flags) {
            // The multishot receive ended: re-armed at the end of the turn
            // (once buffers are back, for ENOBUFS), unless closing.
            f.armed = false;
            if open {
                self.ctl.want_rearm(slot);
            }
        }
        if res < 0 {
            let stats = &mut self.ctl.stats;
            match -res {
                libc::ENOBUFS => stats.rx_no_buffers += 1,
                libc::ECANCELED => stats.rx_cancelled += 1,
                _ => stats.rx_errors += 1,
            }
            tracing::debug!(slot, error = %io::Error::from_raw_os_error(-res), "receive completion failed");
            return;
        }
        let Some(bid) = cqueue::buffer_select(flags) else {
            self.ctl.stats.rx_errors += 1;
            tracing::debug!(slot, res, "receive completion without a buffer");
            return;
        };
        if !self.rx.delivered(bid) {
            self.ctl.stats.rx_errors += 1;
            tracing::debug!(
                slot,
                bid,
                "receive completion names a buffer not in the ring"
            );
            return;
        }
        let stats = &mut self.ctl.stats;
        stats.rx_datagrams += 1;
        let (from, len) = match parse_recv(self.rx.buf(bid), name_len, self.capacity) {
            Ok(v) => v,
            Err(drop) => {
                match drop {
                    RxDrop::Truncated => stats.rx_truncated += 1,
                    RxDrop::BadSource => stats.rx_bad_source += 1,
                }
                self.rx.release(bid);
                return;
            }
        };
        stats.rx_bytes += len as u64;
        if !open {
            stats.rx_after_close += 1;
            self.rx.release(bid);
            return;
        }
        self.batch.push(Pending {
            sock: slot,
            tag,
            from,
            bid,
            len,
            taken: false,
            tx: None,
        });
    }

    fn on_send(&mut self, slot: u32, res: i32) {
        let Some(meta) = self.tx.meta.get(slot as usize).copied() else {
            self.ctl.stats.ring_errors += 1;
            return;
        };
        self.release_send(slot);
        let n = u64::from(meta.segments.max(1));
        let stats = &mut self.ctl.stats;
        if res >= 0 {
            stats.tx_datagrams += n;
            stats.tx_bytes += res as u64;
            return;
        }
        match -res {
            libc::EAGAIN => stats.tx_would_block += n,
            libc::ENOBUFS => stats.tx_no_buffers += n,
            libc::EMSGSIZE => stats.tx_too_big += n,
            _ => stats.tx_errors += n,
        }
        if n > 1 && matches!(-res, libc::EINVAL | libc::EIO | libc::EOPNOTSUPP) && self.gso {
            // The kernel or the route refuses UDP GSO: send one by one from now on.
            self.gso = false;
            tracing::warn!(
                error = %io::Error::from_raw_os_error(-res),
                "UDP GSO refused; sending datagrams one by one from now on"
            );
        }
        tracing::debug!(file = meta.file, segments = n, error = %io::Error::from_raw_os_error(-res), "send failed, datagrams dropped");
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        let settled = self.shutdown(Duration::from_secs(1));
        if settled {
            if let Err(e) = self.ctl.ring.submitter().unregister_buf_ring(BGID) {
                tracing::debug!(error = %e, "unregistering the buffer ring failed");
                self.leak();
            }
        } else {
            tracing::warn!(
                "io_uring requests still in flight at shutdown: their buffers are leaked, not freed"
            );
            self.leak();
        }
    }
}

impl Uring {
    fn leak(&mut self) {
        self.rx.leak();
        self.tx.leak();
        self.ctl.recv_hdr.leak = true;
    }
}

enum RxDrop {
    Truncated,
    BadSource,
}

/// Reads the `io_uring_recvmsg_out` header and the source address at the
/// start of a filled buffer; returns the source and the payload length.
fn parse_recv(buf: &[u8], name_len: usize, capacity: usize) -> Result<(SocketAddr, usize), RxDrop> {
    let word = |i: usize| {
        buf.get(i * 4..i * 4 + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_ne_bytes)
    };
    // struct io_uring_recvmsg_out { namelen, controllen, payloadlen, flags }
    let (namelen, payloadlen, flags) = (word(0) as usize, word(2) as usize, word(3));
    if flags & libc::MSG_TRUNC as u32 != 0 || payloadlen > capacity {
        return Err(RxDrop::Truncated);
    }
    if namelen > name_len {
        return Err(RxDrop::BadSource);
    }
    let name = buf
        .get(RECVMSG_OUT_LEN..RECVMSG_OUT_LEN + namelen)
        .ok_or(RxDrop::BadSource)?;
    let mut storage = zeroed_storage();
    // SAFETY: `name` holds at most `name_len` <= sizeof(sockaddr_storage)
    // bytes (checked above and in `UringConfig::check`); they are copied to
    // the start of a local `sockaddr_storage`, for which any bytes are valid.
    unsafe {
        std::ptr::copy_nonoverlapping(
            name.as_ptr(),
            (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
            name.len(),
        );
    }
    let from = read_sockaddr(&storage, namelen as libc::socklen_t).ok_or(RxDrop::BadSource)?;
    Ok((from, payloadlen))
}
