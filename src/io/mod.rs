//! Sockets and batched I/O. The only module allowed `unsafe`.
//!
//! The io layer knows file descriptors and buffers, not TURN. A backend
//! offers three things to a shard:
//!
//! * a readiness or completion source (`syscall::Poller`: epoll),
//! * a receive batch whose slots keep free headroom in front of every
//!   datagram and tailroom after it, so that the protocol layer can rewrite a
//!   datagram in place, and a reply arena with one slot per received datagram,
//! * a send queue that points into those slots (no copy) and is flushed once
//!   per batch.
//!
//! `syscall` is the portable backend (epoll + `recvmmsg`/`sendmmsg`). An
//! io_uring backend is meant to sit beside it as `uring`, offering the same
//! [`BatchLayout`], [`TxData`] and [`IoStats`]. Socket creation lives in
//! `socket` and is shared by all backends.
#![allow(unsafe_code)]

mod addr;
pub mod socket;
pub mod syscall;

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

/// Where the bytes of a queued send are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxData {
    /// `range` of receive slot `slot` (offsets from the start of the slot,
    /// headroom included).
    Slot { slot: usize, range: Range<usize> },
    /// The first `len` bytes of reply slot `slot`.
    Reply { slot: usize, len: usize },
}

/// Counters of one shard's io. Every datagram that is not sent is counted
/// under one reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Readiness wake-ups (epoll_wait returns).
    pub wakeups: u64,
    pub recv_calls: u64,
    pub rx_datagrams: u64,
    pub rx_bytes: u64,
    /// Longer than the receive capacity: dropped.
    pub rx_truncated: u64,
    /// A source address of an unexpected family: dropped.
    pub rx_bad_source: u64,
    /// recvmmsg failed with something else than EAGAIN/EINTR.
    pub rx_errors: u64,
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
            send_calls,
            tx_datagrams,
            tx_bytes,
            tx_would_block,
            tx_no_buffers,
            tx_too_big,
            tx_errors,
            tx_unroutable,
        } = other;
        self.wakeups += wakeups;
        self.recv_calls += recv_calls;
        self.rx_datagrams += rx_datagrams;
        self.rx_bytes += rx_bytes;
        self.rx_truncated += rx_truncated;
        self.rx_bad_source += rx_bad_source;
        self.rx_errors += rx_errors;
        self.send_calls += send_calls;
        self.tx_datagrams += tx_datagrams;
        self.tx_bytes += tx_bytes;
        self.tx_would_block += tx_would_block;
        self.tx_no_buffers += tx_no_buffers;
        self.tx_too_big += tx_too_big;
        self.tx_errors += tx_errors;
        self.tx_unroutable += tx_unroutable;
    }

    /// Datagrams that were queued for sending but not sent.
    pub fn tx_dropped(&self) -> u64 {
        self.tx_would_block
            + self.tx_no_buffers
            + self.tx_too_big
            + self.tx_errors
            + self.tx_unroutable
    }
}
