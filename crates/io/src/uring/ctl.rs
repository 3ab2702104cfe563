//! The fixed-file table and the requests that concern a socket as a whole:
//! registering it and arming its multishot receive, re-arming it, and the
//! close protocol (cancel, wait for the last completions, unregister).

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use io_uring::{opcode, squeue, types, IoUring};

use super::mem::RawMem;
use super::{user_data, with_context, RingMode, SockId, BGID, KIND_CANCEL, KIND_RECV};
use crate::IoStats;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum SlotState {
    Free,
    Open,
    Closing,
}

/// One slot of the fixed-file table.
pub(super) struct FileSlot {
    pub(super) sock: Option<UdpSocket>,
    pub(super) tag: u64,
    pub(super) state: SlotState,
    /// A multishot receive is in flight.
    pub(super) armed: bool,
    /// An AsyncCancel for it is in flight.
    pub(super) cancel_pending: bool,
    /// Listed in `SocketCtl::rearm`.
    pub(super) rearm: bool,
    /// Sends queued or in flight on this socket.
    pub(super) sends: u32,
}

impl FileSlot {
    pub(super) fn free() -> FileSlot {
        FileSlot {
            sock: None,
            tag: 0,
            state: SlotState::Free,
            armed: false,
            cancel_pending: false,
            rearm: false,
            sends: 0,
        }
    }
}

/// The ring and its registered sockets: what opening and closing a socket
/// needs, lent out while a datagram is processed.
pub struct SocketCtl {
    pub(super) ring: IoUring,
    pub(super) mode: RingMode,
    pub(super) files: Vec<FileSlot>,
    pub(super) free: Vec<u32>,
    pub(super) closing: Vec<u32>,
    pub(super) rearm: Vec<u32>,
    /// The `msghdr` every multishot receive is armed with (name area length
    /// only); the kernel reads it when the request is issued.
    pub(super) recv_hdr: RawMem,
    pub(super) stats: IoStats,
    /// Sends queued since the last enter.
    pub(super) queued_sends: usize,
    pub(super) overflow_seen: u32,
}

impl SocketCtl {
    /// Registers `sock` in a free fixed-file slot and arms a multishot
    /// receive on it; its datagrams come back tagged with `tag`.
    pub fn add(&mut self, sock: UdpSocket, tag: u64) -> io::Result<SockId> {
        let slot = self.free.pop().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                "no free slot in the io_uring fixed-file table",
            )
        })?;
        if let Err(e) = self
            .ring
            .submitter()
            .register_files_update(slot, &[sock.as_raw_fd()])
        {
            self.free.push(slot);
            self.stats.ring_errors += 1;
            return Err(with_context("registering a socket with io_uring")(e));
        }
        self.files[slot as usize] = FileSlot {
            sock: Some(sock),
            tag,
            state: SlotState::Open,
            ..FileSlot::free()
        };
        self.arm(slot);
        Ok(SockId(slot))
    }

    /// Starts closing socket `id`: no more of its datagrams are delivered
    /// and it can no longer send. The descriptor is closed, and the slot
    /// reused, once no request refers to it.
    pub fn close(&mut self, id: SockId) {
        let Some(f) = self.files.get_mut(id.0 as usize) else {
            return;
        };
        if f.state != SlotState::Open {
            return;
        }
        f.state = SlotState::Closing;
        if f.armed {
            self.cancel(id.0);
        }
        self.closing.push(id.0);
    }

    /// The socket registered as `id`, while it is open.
    pub fn socket(&self, id: SockId) -> Option<&UdpSocket> {
        self.files
            .get(id.0 as usize)
            .filter(|f| f.state == SlotState::Open)
            .and_then(|f| f.sock.as_ref())
    }

    pub fn stats(&self) -> &IoStats {
        &self.stats
    }

    pub fn stats_mut(&mut self) -> &mut IoStats {
        &mut self.stats
    }

    /// Queues `e`; when the submission queue is full, hands what is queued
    /// to the kernel first. False if it still cannot be queued.
    ///
    /// The caller keeps everything the entry points to alive until its
    /// completion arrives.
    pub(super) fn push(&mut self, e: &squeue::Entry) -> bool {
        for attempt in 0..2 {
            // SAFETY: every entry queued here points only into memory that
            // outlives its request: the receive `msghdr` and the provided
            // buffers (owned by the `Uring`, freed only after every request
            // finished, else leaked), or a send slot and the buffer it reads,
            // both held until the send's completion.
            if unsafe { self.ring.submission().push(e) }.is_ok() {
                return true;
            }
            if attempt == 0 {
                if let Err(err) = self.ring.submit() {
                    self.stats.ring_errors += 1;
                    tracing::debug!(error = %err, "io_uring submit (queue full) failed");
                }
            }
        }
        false
    }

    pub(super) fn arm(&mut self, slot: u32) {
        let e = opcode::RecvMsgMulti::new(
            types::Fixed(slot),
            self.recv_hdr.ptr().cast::<libc::msghdr>().cast_const(),
            BGID,
        )
        .build()
        .user_data(user_data(KIND_RECV, slot));
        if self.push(&e) {
            let f = &mut self.files[slot as usize];
            f.armed = true;
            f.rearm = false;
            self.stats.recv_calls += 1;
        } else {
            self.want_rearm(slot);
        }
    }

    pub(super) fn want_rearm(&mut self, slot: u32) {
        let f = &mut self.files[slot as usize];
        if !f.rearm {
            f.rearm = true;
            self.rearm.push(slot);
        }
    }

    pub(super) fn cancel(&mut self, slot: u32) {
        let e = opcode::AsyncCancel::new(user_data(KIND_RECV, slot))
            .build()
            .user_data(user_data(KIND_CANCEL, slot));
        // If it cannot be queued now, `finish_closing` tries again.
        if self.push(&e) {
            self.files[slot as usize].cancel_pending = true;
        }
    }

    pub(super) fn on_cancel(&mut self, slot: u32, res: i32) {
        if let Some(f) = self.files.get_mut(slot as usize) {
            f.cancel_pending = false;
        }
        match -res {
            0 => {}
            // The receive had already ended; its last completion says so.
            libc::ENOENT | libc::EALREADY => self.stats.cancel_missed += 1,
            _ => self.stats.cancel_errors += 1,
        }
        if res < 0 {
            tracing::debug!(slot, error = %io::Error::from_raw_os_error(-res), "cancel completion failed");
        }
    }

    /// Re-arms the sockets whose multishot receive ended, when the ring has
    /// buffers for them.
    pub(super) fn rearm_ready(&mut self, buffers_available: usize) {
        if buffers_available == 0 || self.rearm.is_empty() {
            return;
        }
        let list = std::mem::take(&mut self.rearm);
        for slot in list {
            let f = &mut self.files[slot as usize];
            f.rearm = false;
            if f.state == SlotState::Open && !f.armed {
                self.stats.rx_rearms += 1;
                self.arm(slot);
            }
        }
    }

    /// Frees the slots of closed sockets that no request refers to anymore.
    pub(super) fn finish_closing(&mut self) {
        let mut i = 0;
        while i < self.closing.len() {
            let slot = self.closing[i];
            let f = &self.files[slot as usize];
            if f.armed && !f.cancel_pending {
                self.cancel(slot);
            }
            let f = &self.files[slot as usize];
            if f.armed || f.cancel_pending || f.sends > 0 {
                i += 1;
                continue;
            }
            self.closing.swap_remove(i);
            match self.ring.submitter().register_files_update(slot, &[-1]) {
                Ok(_) => {
                    // Dropping the socket closes the descriptor.
                    self.files[slot as usize] = FileSlot::free();
                    self.free.push(slot);
                }
                Err(e) => {
                    // The table still holds the socket: the slot is lost,
                    // but never reused for another socket.
                    self.stats.ring_errors += 1;
                    tracing::warn!(slot, error = %e, "cannot unregister a closed socket from io_uring");
                    self.files[slot as usize].sock = None;
                }
            }
        }
    }

    /// No request in flight refers to any socket.
    pub(super) fn settled(&self) -> bool {
        self.closing.is_empty()
            && self
                .files
                .iter()
                .all(|f| !f.armed && !f.cancel_pending && f.sends == 0)
    }
}
