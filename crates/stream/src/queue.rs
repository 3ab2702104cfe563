//! A connection's bounded send queue.
//!
//! Bytes for a client wait here while its socket (or its TLS session) cannot
//! take them. Whole frames only are refused: a frame is either queued whole
//! or not at all, so the client's framing never breaks, and once the queue
//! holds `limit` bytes further frames are dropped (and counted by the
//! caller), as a full UDP socket buffer would drop datagrams.
//!
//! Bytes moved out of the queue into a send still in flight (io_uring sends
//! from a buffer of the connection's own) stay counted against the limit,
//! [`SendQueue::hold`] to [`SendQueue::release`], so that a client that
//! reads nothing holds `limit` bytes at most, in flight or queued.

use std::collections::VecDeque;

/// Bytes waiting to be written to one connection.
#[derive(Debug)]
pub struct SendQueue {
    bytes: VecDeque<u8>,
    limit: usize,
    /// Bytes taken out for a send that has not completed.
    held: usize,
}

impl SendQueue {
    /// An empty queue that holds at most `limit` bytes (and allocates
    /// nothing until something waits).
    pub fn new(limit: usize) -> SendQueue {
        SendQueue {
            bytes: VecDeque::new(),
            limit,
            held: 0,
        }
    }

    /// Bytes queued (not those held by a send in flight).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Bytes taken out for a send that has not completed.
    pub fn held(&self) -> usize {
        self.held
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Queues `frame` whole if it fits under the limit; false (nothing
    /// queued) if not.
    pub fn push(&mut self, frame: &[u8]) -> bool {
        let used = self.bytes.len().saturating_add(self.held);
        if used.saturating_add(frame.len()) > self.limit {
            return false;
        }
        self.bytes.extend(frame);
        true
    }

    /// Queues what is left of a frame whose start has been written: always
    /// kept, so that the stream stays framed (at most one frame beyond the
    /// limit).
    pub fn push_rest(&mut self, rest: &[u8]) {
        self.bytes.extend(rest);
    }

    /// The bytes at the front, in at most two pieces (for a vectored write).
    pub fn front(&self) -> (&[u8], &[u8]) {
        self.bytes.as_slices()
    }

    /// `n` bytes taken from the front (or made of them, such as TLS
    /// records) are now in a send in flight: counted until `release`.
    pub fn hold(&mut self, n: usize) {
        self.held = self.held.saturating_add(n);
    }

    /// `n` held bytes have been sent.
    pub fn release(&mut self, n: usize) {
        self.held = self.held.saturating_sub(n);
    }

    /// Drops `n` written bytes from the front; frees the memory once empty.
    pub fn consume(&mut self, n: usize) {
        self.bytes.drain(..n.min(self.bytes.len()));
        if self.bytes.is_empty() && self.bytes.capacity() > 0 {
            self.bytes = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_queued_whole_or_not_at_all() {
        let mut q = SendQueue::new(10);
        assert!(q.push(b"abcd"));
        assert!(q.push(b"efgh"));
        assert!(!q.push(b"ijk"), "11 bytes would pass the limit");
        assert_eq!(q.len(), 8);
        assert!(q.push(b"ij"));
        q.consume(3);
        let (a, b) = q.front();
        assert_eq!([a, b].concat(), b"defghij");
    }

    #[test]
    fn the_rest_of_a_started_frame_is_always_kept() {
        let mut q = SendQueue::new(4);
        q.push_rest(b"0123456789");
        assert_eq!(q.len(), 10);
        assert!(!q.push(b"x"));
    }

    #[test]
    fn bytes_in_flight_count_against_the_limit_until_released() {
        let mut q = SendQueue::new(10);
        assert!(q.push(b"abcdefgh"));
        q.consume(8);
        q.hold(8);
        assert_eq!((q.len(), q.held()), (0, 8));
        assert!(!q.push(b"xyz"), "8 in flight + 3 would pass the limit");
        assert!(q.push(b"xy"));
        q.release(8);
        assert!(q.push(b"12345678"));
        assert_eq!((q.len(), q.held()), (10, 0));
    }

    #[test]
    fn an_empty_queue_holds_no_memory() {
        let mut q = SendQueue::new(1 << 16);
        q.push(&[1; 1000]);
        q.consume(1000);
        assert!(q.is_empty());
        assert_eq!(q.bytes.capacity(), 0);
    }
}
