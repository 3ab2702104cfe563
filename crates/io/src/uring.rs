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
//!
//! # Where each part lives
//!
//! This file: the ring and a turn (`wait`, `end_turn`, reaping
//! completions, shutdown). `setup`: the geometry and the setup flags.
//! `recv`: receive completions and lending datagrams out. `send`: queueing
//! answers and submitting them; `gso`: which sends merge (pure, tested
//! without a kernel). `ctl`: sockets (registration, re-arming, closing).
//! `stream`: TCP listeners and connections (multishot accept, multishot
//! `recv` into a buffer group of their own, one ordered send in flight per
//! connection, and their part of the close protocol). `mem`: the buffer and
//! send-slot memory. `wakeup`: the eventfd poll. `watch`: one more
//! descriptor polled for readability. `probe`: whether this host offers
//! io_uring at all, and TCP on it.

mod ctl;
mod gso;
mod mem;
mod probe;
mod recv;
mod send;
mod setup;
mod stream;
#[cfg(test)]
mod tests;
mod wakeup;
mod watch;

pub use ctl::SocketCtl;
pub use probe::{probe, probe_streams, Unavailable};
pub use setup::{RingMode, UringConfig, MAX_BATCH_WAIT};
pub use stream::{PeerOut, StreamChunk, StreamEvent};

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use io_uring::types;

use super::IoStats;
use ctl::FileSlot;
use mem::{RawMem, RxPool, TxPool};
use send::QueuedSend;
use setup::{build_ring, with_context};
use wakeup::Wake;
use watch::Watch;

/// Bytes of `struct io_uring_recvmsg_out` at the start of every buffer.
pub const RECVMSG_OUT_LEN: usize = 16;
/// Smallest name area: a `sockaddr_in6`.
const MIN_NAME_LEN: usize = std::mem::size_of::<libc::sockaddr_in6>();
/// Largest name area the kernel honours: a `sockaddr_storage`.
const MAX_NAME_LEN: usize = std::mem::size_of::<libc::sockaddr_storage>();
/// The buffer group of datagram receives.
const BGID: u16 = 0;
/// The buffer group of stream (TCP) receives.
const BGID_STREAM: u16 = 1;

// user_data: the request kind in the top byte, an index below.
const KIND_SHIFT: u32 = 56;
const KIND_RECV: u64 = 1;
const KIND_SEND: u64 = 2;
const KIND_CANCEL: u64 = 3;
const KIND_WAKE: u64 = 4;
const KIND_WATCH: u64 = 5;
const KIND_ACCEPT: u64 = 6;
const KIND_STREAM_RECV: u64 = 7;
const KIND_STREAM_SEND: u64 = 8;

fn user_data(kind: u64, index: u32) -> u64 {
    kind << KIND_SHIFT | u64::from(index)
}

/// A socket registered with a ring (its fixed-file slot).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct SockId(u32);

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
    /// The stream buffer group (None: this ring serves no TCP socket).
    rx_stream: Option<RxPool>,
    tx: TxPool,
    cqes: Vec<(u64, i32, u32)>,
    batch: Vec<Pending>,
    /// Stream completions of the last `wait`, in order.
    events: Vec<stream::StreamCqe>,
    headroom: usize,
    capacity: usize,
    wake: Wake,
    watch: Watch,
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
        let mut rx = RxPool::new(cfg.buffers, cfg.stride(), 0, kernel_len)?;
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
        let rx_stream = if cfg.stream_buffers == 0 {
            None
        } else {
            let mut pool = RxPool::new(
                cfg.stream_buffers,
                cfg.stream_stride(),
                cfg.headroom,
                cfg.stream_capacity as u32,
            )?;
            // SAFETY: as for the datagram group above: page-aligned, `count`
            // entries, registered until `Drop` (or leaked), and the ring is
            // closed before the pool is freed.
            unsafe {
                ring.submitter().register_buf_ring_with_flags(
                    pool.ring_addr(),
                    pool.count(),
                    BGID_STREAM,
                    0,
                )
            }
            .map_err(with_context("registering the stream buffer ring"))?;
            pool.fill();
            Some(pool)
        };
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
                detached: Vec::new(),
                rearm: Vec::with_capacity(64),
                recv_hdr,
                streams: rx_stream.is_some(),
                resend: Vec::new(),
                stats: IoStats::default(),
                queued_sends: 0,
                overflow_seen: 0,
            },
            rx,
            rx_stream,
            tx,
            cqes: Vec::with_capacity(cq),
            batch: Vec::with_capacity(usize::from(cfg.buffers)),
            events: Vec::new(),
            headroom: cfg.headroom,
            capacity: cfg.capacity,
            batch_wait: cfg.batch_wait,
            last_wait: (0, Duration::ZERO),
            queued: Vec::with_capacity(cfg.tx_slots as usize),
            heads: Vec::with_capacity(cfg.tx_slots as usize),
            gso: cfg.gso,
            wake: Wake::new(),
            watch: Watch::new(),
        })
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
        // Streams detached just now (`end_turn`) are the program's to take
        // at once: their clients are waiting, and nothing in the ring will
        // complete for them anymore.
        let timeout = if self.ctl.detached.is_empty() {
            timeout
        } else {
            Duration::ZERO
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
        self.release_stream_events();
        self.rx.publish();
        if let Some(pool) = &self.rx_stream {
            pool.publish();
        }
        let streams = self.stream_buffers_available();
        self.ctl.rearm_ready(self.rx.available(), streams);
        self.ctl.resend_ready();
        self.ctl.finish_closing();
        self.arm_wake();
        self.arm_watch();
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
                KIND_WATCH => self.on_watch(res),
                KIND_ACCEPT => self.on_accept(index, res, flags),
                KIND_STREAM_RECV => self.on_stream_recv(index, res, flags),
                KIND_STREAM_SEND => self.on_stream_send(index, res),
                _ => {
                    self.ctl.stats.ring_errors += 1;
                    tracing::debug!(user_data = ud, res, "completion of an unknown request");
                }
            }
        }
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        let settled = self.shutdown(Duration::from_secs(1));
        if settled {
            let mut groups = vec![BGID];
            if self.rx_stream.is_some() {
                groups.push(BGID_STREAM);
            }
            for bgid in groups {
                if let Err(e) = self.ctl.ring.submitter().unregister_buf_ring(bgid) {
                    tracing::debug!(error = %e, "unregistering a buffer ring failed");
                    self.leak();
                }
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
        if let Some(pool) = &mut self.rx_stream {
            pool.leak();
        }
        self.ctl.leak_stream_buffers();
        self.tx.leak();
        self.ctl.recv_hdr.leak = true;
    }
}
