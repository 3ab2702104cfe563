//! Sends: each answer prepared in its slot as the turn goes, then all of
//! the turn's sends handed to the kernel at the next `wait`, merged into GSO
//! sends where `gso` allows; completions give the slots and the receive
//! buffers back.

use std::io;
use std::net::SocketAddr;

use io_uring::{opcode, types};

use super::ctl::SlotState;
use super::mem::{TxMeta, MAX_SEGMENTS};
use super::{gso, user_data, SockId, Uring, KIND_SEND};
use crate::TxBytes;

/// A prepared send waiting for the end of the turn.
#[derive(Copy, Clone, Debug)]
pub(super) struct QueuedSend {
    slot: u32,
    file: u32,
    dest: SocketAddr,
    data: *const u8,
    len: usize,
}

impl QueuedSend {
    /// The send prepared in `slot`: `len` bytes at `data` from fixed file
    /// `file` to `dest`.
    pub(super) fn new(
        slot: u32,
        file: u32,
        dest: SocketAddr,
        data: *const u8,
        len: usize,
    ) -> QueuedSend {
        QueuedSend {
            slot,
            file,
            dest,
            data,
            len,
        }
    }
}

impl Uring {
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
    pub(super) fn submit_sends(&mut self) {
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

    pub(super) fn on_send(&mut self, slot: u32, res: i32) {
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
