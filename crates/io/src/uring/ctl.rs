//! The fixed-file table and the requests that concern a socket as a whole:
//! registering it and arming its multishot request (a `recvmsg` on a UDP
//! socket, an accept on a TCP listener, a `recv` on a TCP connection),
//! re-arming it, and the close protocol (cancel, wait for the last
//! completions, unregister).

use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use io_uring::{opcode, squeue, types, IoUring};

use super::mem::RawMem;
use super::stream::StreamOut;
use super::{
    user_data, with_context, RingMode, SockId, BGID, BGID_STREAM, KIND_ACCEPT, KIND_CANCEL,
    KIND_RECV, KIND_STREAM_RECV,
};
use crate::IoStats;

/// `IORING_RECVSEND_POLL_FIRST` (linux/io_uring.h, the `ioprio` of a
/// receive): do not try the socket at once, arm its poll first.
const RECVSEND_POLL_FIRST: u16 = 1 << 0;
/// `IORING_RECV_MULTISHOT` (linux/io_uring.h, Linux 6.0).
const RECV_MULTISHOT: u16 = 1 << 1;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum SlotState {
    Free,
    Open,
    Closing,
}

/// What a slot holds, and so which multishot request it is armed with.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum SlotKind {
    /// A UDP socket: `recvmsg` into the datagram buffer group.
    Udp,
    /// A TCP listener: accept.
    Listener,
    /// A TCP connection: `recv` into the stream buffer group, and sends
    /// from its `StreamOut`.
    Stream,
}

/// The descriptor a slot owns (closed when it is dropped).
pub(super) enum Owned {
    None,
    Udp(UdpSocket),
    Fd(OwnedFd),
}

impl Owned {
    fn raw(&self) -> Option<RawFd> {
        match self {
            Owned::None => None,
            Owned::Udp(s) => Some(s.as_raw_fd()),
            Owned::Fd(f) => Some(f.as_raw_fd()),
        }
    }
}

/// One slot of the fixed-file table.
pub(super) struct FileSlot {
    pub(super) sock: Owned,
    pub(super) kind: SlotKind,
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
    /// A stream connection's send buffer and the state of its send.
    pub(super) out: Option<Box<StreamOut>>,
    /// A stream's receive has not been armed yet (the first one waits for
    /// readiness: nothing has been sent on a new connection).
    pub(super) fresh: bool,
    /// Closing, but the descriptor goes back to the program instead of
    /// being closed (`Uring::detach_stream`).
    pub(super) keep: bool,
}

impl FileSlot {
    pub(super) fn free() -> FileSlot {
        FileSlot {
            sock: Owned::None,
            kind: SlotKind::Udp,
            tag: 0,
            state: SlotState::Free,
            armed: false,
            cancel_pending: false,
            rearm: false,
            sends: 0,
            out: None,
            fresh: false,
            keep: false,
        }
    }
}

impl FileSlot {
    /// Whether a request that a close must cancel may be in flight: the
    /// multishot request, or a stream send waiting for room (not the last
    /// send a close queued itself, which never waits).
    fn needs_cancel(&self) -> bool {
        self.armed || self.out.as_ref().is_some_and(|o| o.waits())
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
    /// Streams detached (`Uring::detach_stream`) whose requests have all
    /// completed: their tags and descriptors, handed back to the program.
    pub(super) detached: Vec<(u64, OwnedFd)>,
    pub(super) rearm: Vec<u32>,
    /// The `msghdr` every multishot receive is armed with (name area length
    /// only); the kernel reads it when the request is issued.
    pub(super) recv_hdr: RawMem,
    /// Stream buffers exist (stream sockets may be registered).
    pub(super) streams: bool,
    /// Stream slots whose send could not be queued: tried again at the end
    /// of the turn.
    pub(super) resend: Vec<u32>,
    pub(super) stats: IoStats,
    /// Sends queued since the last enter.
    pub(super) queued_sends: usize,
    pub(super) overflow_seen: u32,
}

impl SocketCtl {
    /// Registers `sock` in a free fixed-file slot and arms a multishot
    /// receive on it; its datagrams come back tagged with `tag`.
    pub fn add(&mut self, sock: UdpSocket, tag: u64) -> io::Result<SockId> {
        self.register(Owned::Udp(sock), SlotKind::Udp, tag)
    }

    /// Registers `sock` in a free slot as a `kind` and arms its multishot
    /// request. On failure the descriptor is closed.
    pub(super) fn register(&mut self, sock: Owned, kind: SlotKind, tag: u64) -> io::Result<SockId> {
        if kind != SlotKind::Udp && !self.streams {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this ring has no stream buffers",
            ));
        }
        let fd = sock
            .raw()
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let slot = self.free.pop().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                "no free slot in the io_uring fixed-file table",
            )
        })?;
        if let Err(e) = self.ring.submitter().register_files_update(slot, &[fd]) {
            self.free.push(slot);
            self.stats.ring_errors += 1;
            return Err(with_context("registering a socket with io_uring")(e));
        }
        self.files[slot as usize] = FileSlot {
            sock,
            kind,
            tag,
            state: SlotState::Open,
            out: (kind == SlotKind::Stream).then(Box::default),
            fresh: kind == SlotKind::Stream,
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
        if f.needs_cancel() {
            self.cancel(id.0);
        }
        self.closing.push(id.0);
    }

    /// The UDP socket registered as `id`, while it is open.
    pub fn socket(&self, id: SockId) -> Option<&UdpSocket> {
        match self.files.get(id.0 as usize) {
            Some(FileSlot {
                state: SlotState::Open,
                sock: Owned::Udp(s),
                ..
            }) => Some(s),
            _ => None,
        }
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
            // buffers of both groups (owned by the `Uring`, freed only after
            // every request finished, else leaked), a send slot and the
            // buffer it reads, both held until the send's completion, or a
            // stream's send buffer, which is neither written, moved nor
            // freed while its send is in flight (`StreamOut`; leaked with
            // the rest if the ring is dropped unsettled).
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
        let f = &self.files[slot as usize];
        let e = match f.kind {
            SlotKind::Udp => opcode::RecvMsgMulti::new(
                types::Fixed(slot),
                self.recv_hdr.ptr().cast::<libc::msghdr>().cast_const(),
                BGID,
            )
            .build()
            .user_data(user_data(KIND_RECV, slot)),
            // The accepted descriptors are ordinary ones (the peer's
            // address is read from them), non-blocking: no system call on
            // them may ever block the shard.
            SlotKind::Listener => opcode::AcceptMulti::new(types::Fixed(slot))
                .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
                .build()
                .user_data(user_data(KIND_ACCEPT, slot)),
            // Multishot recv into the stream group: each completion names
            // the buffer it filled. A new connection's first receive polls
            // first: its client has rarely sent anything yet.
            SlotKind::Stream => opcode::Recv::new(types::Fixed(slot), std::ptr::null_mut(), 0)
                .ioprio(RECV_MULTISHOT | if f.fresh { RECVSEND_POLL_FIRST } else { 0 })
                .buf_group(BGID_STREAM)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
                .user_data(user_data(KIND_STREAM_RECV, slot)),
        };
        if self.push(&e) {
            let f = &mut self.files[slot as usize];
            f.armed = true;
            f.rearm = false;
            f.fresh = false;
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
        let e = match self.files[slot as usize].kind {
            SlotKind::Udp => opcode::AsyncCancel::new(user_data(KIND_RECV, slot)).build(),
            // Everything that names the slot: the multishot request and a
            // send waiting for room (Linux 5.19: by fixed file, all).
            SlotKind::Listener | SlotKind::Stream => {
                opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fixed(slot)).all())
                    .build()
            }
        }
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
        match res {
            // Done (a cancel of all a slot's requests says how many).
            0.. => {}
            // The receive had already ended; its last completion says so.
            r if r == -libc::ENOENT || r == -libc::EALREADY => self.stats.cancel_missed += 1,
            _ => self.stats.cancel_errors += 1,
        }
        if res < 0 {
            tracing::debug!(slot, error = %io::Error::from_raw_os_error(-res), "cancel completion failed");
        }
    }

    /// Re-arms the sockets whose multishot request ended, when the ring has
    /// buffers for them (datagram buffers for a UDP socket, stream buffers
    /// for a connection; a listener needs none).
    pub(super) fn rearm_ready(&mut self, udp_available: usize, stream_available: usize) {
        if self.rearm.is_empty() {
            return;
        }
        for slot in std::mem::take(&mut self.rearm) {
            let f = &mut self.files[slot as usize];
            f.rearm = false;
            if f.state != SlotState::Open || f.armed {
                continue;
            }
            let ready = match f.kind {
                SlotKind::Udp => udp_available > 0,
                SlotKind::Listener => true,
                SlotKind::Stream => stream_available > 0,
            };
            if ready {
                self.stats.rx_rearms += 1;
                self.arm(slot);
            } else {
                self.want_rearm(slot);
            }
        }
    }

    /// Frees the slots of closed sockets that no request refers to anymore.
    pub(super) fn finish_closing(&mut self) {
        let mut i = 0;
        while i < self.closing.len() {
            let slot = self.closing[i];
            let f = &self.files[slot as usize];
            if f.needs_cancel() && !f.cancel_pending {
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
                    // Dropping the socket closes the descriptor, unless the
                    // program takes it back.
                    let f = std::mem::replace(&mut self.files[slot as usize], FileSlot::free());
                    if let (true, Owned::Fd(fd)) = (f.keep, f.sock) {
                        self.detached.push((f.tag, fd));
                    }
                    self.free.push(slot);
                }
                Err(e) => {
                    // The table still holds the socket: the slot is lost,
                    // but never reused for another socket.
                    self.stats.ring_errors += 1;
                    tracing::warn!(slot, error = %e, "cannot unregister a closed socket from io_uring");
                    self.files[slot as usize].sock = Owned::None;
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
