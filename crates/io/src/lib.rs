//! Sockets and batched I/O for uturn and its load generator.
//!
//! The rule this crate keeps: **all of uturn's `unsafe` lives here** (the
//! other crates forbid it), each block with a `// SAFETY:` line, behind
//! safe wrappers whose callers cannot move or free what the kernel still
//! uses. It knows file descriptors and buffers, not TURN. A backend
//! offers three things to a shard:
//!
//! * a readiness or completion source (`syscall::Poller`: epoll),
//! * a receive batch whose slots keep free headroom in front of every
//!   datagram and tailroom after it, so that the protocol layer can rewrite a
//!   datagram in place, and a reply arena with one slot per received datagram,
//! * a send queue that points into those slots (no copy) and is flushed once
//!   per batch.
//!
//! `syscall` is the portable backend (epoll + `recvmmsg`/`sendmmsg`);
//! `uring` is the io_uring backend (multishot `recvmsg` into provided
//! buffers, batched `sendmsg`, fixed files), the default where the kernel
//! offers it (see [`uring::probe`]). Both count into [`IoStats`]. Socket
//! creation lives in `socket` and is shared by all backends.
//!
//! `xdp` loads and attaches the XDP fast path (`xdp/relay.bpf.c`, built by
//! build.rs with clang) and gives each shard a handle on its maps.
//!
//! Two modules serve the load generator (`uturn-loadgen`), so that it needs
//! no `unsafe` of its own: `client` (batched and GSO sends of generated
//! traffic, aimed with a [`RawAddr`]) and `process` (clocks, CPU time,
//! pinning, stop signals, network namespaces). Its receivers and its floor
//! forwarder use `syscall` like the shards do.
#![allow(unsafe_code)]

mod addr;
pub mod client;
pub mod count_alloc;
pub mod process;
pub mod seccomp;
pub mod socket;
pub mod splice;
pub mod syscall;
pub mod uring;
pub mod wake;
pub mod xdp;

pub use addr::RawAddr;

/// The io backend a shard runs on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// io_uring.
    Uring,
    /// epoll + recvmmsg/sendmmsg.
    Syscall,
}

impl Backend {
    /// The name used by `--io-backend` and in the start-up lines.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Uring => "uring",
            Backend::Syscall => "syscall",
        }
    }
}

use std::ops::Range;

/// Geometry of a receive batch.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BatchLayout {
    /// Datagrams received per system call (and slots in the batch).
    pub slots: usize,
    /// Free bytes in front of each received datagram.
    pub headroom: usize,
    /// Largest datagram received whole; longer ones are dropped as truncated.
    pub capacity: usize,
    /// Free bytes after the largest datagram.
    pub tailroom: usize,
    /// Bytes in each slot of the reply arena.
    pub reply_len: usize,
}

impl BatchLayout {
    /// Bytes in one receive slot: headroom + capacity + tailroom, rounded up
    /// to a cache line.
    pub fn slot_len(&self) -> usize {
        (self.headroom + self.capacity + self.tailroom).next_multiple_of(64)
    }
}

/// Where the bytes of a send are, for both backends: in the buffers of the
/// received datagram that caused it, so that nothing is copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxBytes {
    /// This range of the datagram's receive slot (offsets from the start of
    /// the slot, headroom included).
    Rx(Range<usize>),
    /// The first `n` bytes of the datagram's reply slot.
    Reply(usize),
}

/// Counters of one shard's io. Every datagram that is not sent is counted
/// under one reason, and every failed io_uring completion under its kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Wake-ups: epoll_wait returns (syscall), io_uring_enter calls (uring).
    pub wakeups: u64,
    /// recvmmsg calls (syscall); multishot receives armed (uring).
    pub recv_calls: u64,
    pub rx_datagrams: u64,
    pub rx_bytes: u64,
    /// Longer than the receive capacity: dropped.
    pub rx_truncated: u64,
    /// A source address of an unexpected family: dropped.
    pub rx_bad_source: u64,
    /// recvmmsg failed with something else than EAGAIN/EINTR; (uring) a
    /// receive completion failed with something else than ENOBUFS or
    /// ECANCELED, or named no usable buffer.
    pub rx_errors: u64,
    /// (uring) A multishot receive ended with ENOBUFS: the buffer ring was
    /// empty. The datagrams wait in the socket; it is re-armed once buffers
    /// are back.
    pub rx_no_buffers: u64,
    /// (uring) Multishot receives armed again after they ended.
    pub rx_rearms: u64,
    /// (uring) Multishot receives ended by the cancel of a socket's close.
    pub rx_cancelled: u64,
    /// (uring) Datagrams that arrived on a socket being closed; dropped.
    pub rx_after_close: u64,
    /// sendmmsg calls (syscall); io_uring_enter calls that submitted sends
    /// (uring).
    pub send_calls: u64,
    pub tx_datagrams: u64,
    pub tx_bytes: u64,
    /// EAGAIN: the socket's send buffer was full; dropped.
    pub tx_would_block: u64,
    /// ENOBUFS: the device queue was full; dropped.
    pub tx_no_buffers: u64,
    /// EMSGSIZE: larger than the path MTU with DF set, or than 64 KiB; dropped.
    pub tx_too_big: u64,
    /// Any other send error (unreachable, refused, permission…); dropped.
    pub tx_errors: u64,
    /// A send the shard could not route (unknown relay socket or listener,
    /// range outside the slot); dropped. Non-zero means a bug somewhere.
    pub tx_unroutable: u64,
    /// (uring) Every send slot was in flight, or the submission queue was
    /// full; dropped.
    pub tx_no_slot: u64,
    /// (uring) Datagrams that rode in another datagram's send (UDP GSO:
    /// same socket, destination and size); sent, and counted in
    /// `tx_datagrams` too.
    pub tx_coalesced: u64,
    /// (uring) A cancel found its receive already finished (ENOENT,
    /// EALREADY); harmless.
    pub cancel_missed: u64,
    /// (uring) A cancel failed otherwise.
    pub cancel_errors: u64,
    /// (uring) Completions the kernel could not post (CQ overflow counter).
    pub cq_overflow: u64,
    /// (uring) io_uring_enter or io_uring_register failed, or a completion
    /// named an unknown request.
    pub ring_errors: u64,
    /// (uring, TCP) A connection's multishot receive ended with ENOBUFS:
    /// the stream buffer ring was empty. Its bytes wait in the socket; it
    /// is re-armed once buffers are back.
    pub stream_rx_no_buffers: u64,
    /// (uring, TCP) Sends that took part of their bytes: the rest was sent
    /// again once the socket had room.
    pub stream_tx_partial: u64,
    /// (uring, TCP) Accepts, receives or sends that failed (the connection
    /// is closed; an accept is armed again).
    pub stream_errors: u64,
}

impl IoStats {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &IoStats) {
        let IoStats {
            wakeups,
            recv_calls,
            rx_datagrams,
            rx_bytes,
            rx_truncated,
            rx_bad_source,
            rx_errors,
            rx_no_buffers,
            rx_rearms,
            rx_cancelled,
            rx_after_close,
            send_calls,
            tx_datagrams,
            tx_bytes,
            tx_would_block,
            tx_no_buffers,
            tx_too_big,
            tx_errors,
            tx_unroutable,
            tx_no_slot,
            tx_coalesced,
            cancel_missed,
            cancel_errors,
            cq_overflow,
            ring_errors,
            stream_rx_no_buffers,
            stream_tx_partial,
            stream_errors,
        } = other;
        self.wakeups += wakeups;
        self.recv_calls += recv_calls;
        self.rx_datagrams += rx_datagrams;
        self.rx_bytes += rx_bytes;
        self.rx_truncated += rx_truncated;
        self.rx_bad_source += rx_bad_source;
        self.rx_errors += rx_errors;
        self.rx_no_buffers += rx_no_buffers;
        self.rx_rearms += rx_rearms;
        self.rx_cancelled += rx_cancelled;
        self.rx_after_close += rx_after_close;
        self.send_calls += send_calls;
        self.tx_datagrams += tx_datagrams;
        self.tx_bytes += tx_bytes;
        self.tx_would_block += tx_would_block;
        self.tx_no_buffers += tx_no_buffers;
        self.tx_too_big += tx_too_big;
        self.tx_errors += tx_errors;
        self.tx_unroutable += tx_unroutable;
        self.tx_no_slot += tx_no_slot;
        self.tx_coalesced += tx_coalesced;
        self.cancel_missed += cancel_missed;
        self.cancel_errors += cancel_errors;
        self.cq_overflow += cq_overflow;
        self.ring_errors += ring_errors;
        self.stream_rx_no_buffers += stream_rx_no_buffers;
        self.stream_tx_partial += stream_tx_partial;
        self.stream_errors += stream_errors;
    }

    /// Datagrams that were queued for sending but not sent.
    pub fn tx_dropped(&self) -> u64 {
        self.tx_would_block
            + self.tx_no_buffers
            + self.tx_too_big
            + self.tx_errors
            + self.tx_unroutable
            + self.tx_no_slot
    }
}
