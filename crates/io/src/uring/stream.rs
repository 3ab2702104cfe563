//! TCP on the ring: a multishot accept on each listener, a multishot `recv`
//! on each connection into a buffer group of its own, and one send in
//! flight per connection.
//!
//! # Receive buffers
//!
//! Stream buffers are laid out as datagram buffers are, `headroom` free
//! bytes, the data, `tailroom` more; but the kernel is told each buffer
//! starts at `headroom` (a `recv` has no header to put first), so the bytes
//! of a receive lie at `buf[headroom..headroom + len]` and a frame at their
//! start can be handed on in place with the free bytes before it. A buffer
//! is held while its event is processed and goes back to the ring at the
//! end of the turn: nothing else ever reads it.
//!
//! # Sends
//!
//! Each connection has one send buffer (`StreamOut`), a `Vec` the program
//! fills only while no send is in flight and that is neither written, moved
//! nor freed until that send's last completion. A send is first tried with
//! `MSG_DONTWAIT`, so that it completes while it is submitted (the ring's
//! wait counts on that); a partial send, or one the socket had no room for,
//! is submitted again for the rest without it, and that one waits in the
//! kernel for room. The program hears once, when every byte has gone
//! (`Sent`), or when the send failed.
//!
//! # Closing
//!
//! `close_stream` marks the slot closing (no more events), and cancels, by
//! fixed file, both the multishot receive and a send waiting for room. The
//! last bytes it is given (answers still queued, a TLS `close_notify`) go
//! with `MSG_DONTWAIT` after the send in flight, and only if that one went
//! whole: as much as the socket takes at once, never out of order. The slot
//! is unregistered and the descriptor closed once every request on it has
//! completed (`SocketCtl::finish_closing`), so that no request can name a
//! slot, a descriptor or a buffer that has been reused.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};

use io_uring::{cqueue, opcode, types};

use super::ctl::{Owned, SlotKind, SlotState, SocketCtl};
use super::mem::{TxMeta, TxPool};
use super::send::QueuedSend;
use super::{user_data, SockId, Uring, KIND_STREAM_SEND};

/// A send buffer larger than this is freed once its send completes,
/// rather than kept for the next.
const KEEP_SEND_BUFFER: usize = 64 * 1024;

/// Where a connection's send is.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
enum SendState {
    /// None in flight: the buffer may be filled.
    #[default]
    Idle,
    /// Queued or in flight with `MSG_DONTWAIT`: completes when submitted.
    Quick,
    /// In flight without it: waits in the kernel for room in the socket.
    Waiting,
    /// Could not be queued (submission queue full): queued again at the end
    /// of the turn, `quick` or not.
    Unqueued { quick: bool },
}

/// One connection's send buffer and the state of its send.
#[derive(Debug, Default)]
pub(super) struct StreamOut {
    /// The bytes of the send in flight; the kernel reads `buf[done..]`.
    buf: Vec<u8>,
    /// Bytes of `buf` already sent.
    done: usize,
    state: SendState,
    /// The send in flight is a close's last: it is never sent again.
    last: bool,
    /// A close's last bytes, waiting for the send in flight to complete.
    after: Option<Vec<u8>>,
}

impl StreamOut {
    /// A send in flight that waits for room (a close must cancel it).
    pub(super) fn waits(&self) -> bool {
        self.state == SendState::Waiting
    }

    fn busy(&self) -> bool {
        self.state != SendState::Idle
    }
}

/// A stream completion kept for the program, in completion order.
#[derive(Debug)]
pub(super) enum StreamCqe {
    Accepted {
        listener: u32,
        tag: u64,
        fd: Option<OwnedFd>,
    },
    Data {
        sock: u32,
        tag: u64,
        bid: u16,
        len: usize,
        taken: bool,
    },
    Eof {
        sock: u32,
        tag: u64,
    },
    Failed {
        sock: u32,
        tag: u64,
        errno: i32,
    },
    Sent {
        sock: u32,
        tag: u64,
        len: usize,
    },
    /// Taken already.
    Gone,
}

/// What happened on the ring's TCP sockets, one event at a time.
#[derive(Debug)]
pub enum StreamEvent<'a> {
    /// Listener `listener` accepted a connection (non-blocking, not yet
    /// registered: `open_stream` it, or drop it to close it).
    Accepted {
        listener: SockId,
        tag: u64,
        stream: TcpStream,
    },
    /// Bytes from a connection.
    Data(StreamChunk<'a>),
    /// The client closed its side: nothing more will come.
    Eof { sock: SockId, tag: u64 },
    /// A receive or a send failed: the connection is unusable.
    Failed {
        sock: SockId,
        tag: u64,
        error: io::Error,
    },
    /// Every byte of the connection's send has gone: the next may be sent.
    Sent { sock: SockId, tag: u64, len: usize },
}

/// Bytes received on a connection, lent out for processing.
#[derive(Debug)]
pub struct StreamChunk<'a> {
    pub sock: SockId,
    pub tag: u64,
    /// The bytes are `buf[headroom..headroom + len]`.
    pub len: usize,
    /// The whole buffer (headroom, bytes, tailroom), writable.
    pub buf: &'a mut [u8],
    /// Sends to peers meanwhile, and the ring's sockets.
    pub out: PeerOut<'a>,
}

/// Datagrams to peers from bytes that are not in a datagram receive buffer
/// (frames from stream clients): each is copied into a send slot's reply
/// area and leaves with the turn's other sends.
pub struct PeerOut<'a> {
    ctl: &'a mut SocketCtl,
    tx: &'a mut TxPool,
    queued: &'a mut Vec<QueuedSend>,
}

impl std::fmt::Debug for PeerOut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerOut")
    }
}

impl PeerOut<'_> {
    /// The ring's sockets (to open or close relay sockets).
    pub fn ctl(&mut self) -> &mut SocketCtl {
        self.ctl
    }

    /// Queues `bytes` to `dest` from UDP socket `sock`. False when it
    /// cannot be queued (the socket is not open, every send slot is busy,
    /// or `bytes` is longer than a reply area): the caller may send it
    /// another way.
    pub fn send_to(&mut self, sock: SockId, dest: SocketAddr, bytes: &[u8]) -> bool {
        let open = self
            .ctl
            .files
            .get(sock.0 as usize)
            .is_some_and(|f| f.state == SlotState::Open && f.kind == SlotKind::Udp);
        if !open || bytes.len() > self.tx.reply_len() {
            return false;
        }
        let Some(slot) = self.tx.reserve() else {
            return false;
        };
        self.tx.reply_mut(Some(slot))[..bytes.len()].copy_from_slice(bytes);
        let data = self.tx.reply_addr(slot);
        self.tx.prepare(slot, &dest, data, bytes.len());
        self.tx.meta[slot as usize] = TxMeta {
            file: sock.0,
            bid: None,
            segments: 1,
            next: None,
        };
        self.ctl.files[sock.0 as usize].sends += 1;
        self.queued
            .push(QueuedSend::new(slot, sock.0, dest, data, bytes.len()));
        true
    }
}

impl Uring {
    /// Registers TCP listener `listener` and arms a multishot accept on it;
    /// its connections come as `Accepted` events tagged `tag`.
    pub fn listen(&mut self, listener: TcpListener, tag: u64) -> io::Result<SockId> {
        self.ctl
            .register(Owned::Fd(listener.into()), SlotKind::Listener, tag)
    }

    /// Registers connection `stream` and arms a multishot receive on it; its
    /// events are tagged `tag`.
    pub fn open_stream(&mut self, stream: TcpStream, tag: u64) -> io::Result<SockId> {
        self.ctl
            .register(Owned::Fd(stream.into()), SlotKind::Stream, tag)
    }

    /// Stream events of the last `wait`.
    pub fn stream_events(&self) -> usize {
        self.events.len()
    }

    /// Stream event `i` of the last `wait`, once; `None` when it has been
    /// taken, or its socket has been closed since.
    pub fn stream_event(&mut self, i: usize) -> Option<StreamEvent<'_>> {
        let e = self.events.get_mut(i)?;
        let sock = match e {
            StreamCqe::Accepted { listener, .. } => *listener,
            StreamCqe::Data { taken: true, .. } => return None,
            StreamCqe::Data { sock, .. }
            | StreamCqe::Eof { sock, .. }
            | StreamCqe::Failed { sock, .. }
            | StreamCqe::Sent { sock, .. } => *sock,
            StreamCqe::Gone => return None,
        };
        let f = &self.ctl.files[sock as usize];
        // A detached connection's last receives still go to the program
        // (`detach_stream`): they are the client's, and the program hands
        // them on with the descriptor.
        let leaving = f.keep && matches!(e, StreamCqe::Data { .. });
        if f.state != SlotState::Open && !leaving {
            // Closed by the program earlier in this turn. A receive's
            // buffer stays listed (as taken), so that the end of the turn
            // gives it back.
            match e {
                StreamCqe::Data { taken, .. } => *taken = true,
                _ => *e = StreamCqe::Gone,
            }
            return None;
        }
        let id = SockId(sock);
        Some(match std::mem::replace(e, StreamCqe::Gone) {
            StreamCqe::Accepted { tag, fd, .. } => StreamEvent::Accepted {
                listener: id,
                tag,
                stream: TcpStream::from(fd?),
            },
            StreamCqe::Data { tag, bid, len, .. } => {
                // Kept in the list (taken): its buffer goes back at the end
                // of the turn.
                *e = StreamCqe::Data {
                    sock,
                    tag,
                    bid,
                    len,
                    taken: true,
                };
                let pool = self.rx_stream.as_mut()?;
                StreamEvent::Data(StreamChunk {
                    sock: id,
                    tag,
                    len,
                    buf: pool.buf_mut(bid),
                    out: PeerOut {
                        ctl: &mut self.ctl,
                        tx: &mut self.tx,
                        queued: &mut self.queued,
                    },
                })
            }
            StreamCqe::Eof { tag, .. } => StreamEvent::Eof { sock: id, tag },
            StreamCqe::Failed { tag, errno, .. } => StreamEvent::Failed {
                sock: id,
                tag,
                error: io::Error::from_raw_os_error(errno),
            },
            StreamCqe::Sent { tag, len, .. } => StreamEvent::Sent { sock: id, tag, len },
            StreamCqe::Gone => return None,
        })
    }

    /// Sends to peers outside of a stream event (from a timer, a close).
    pub fn peer_out(&mut self) -> PeerOut<'_> {
        PeerOut {
            ctl: &mut self.ctl,
            tx: &mut self.tx,
            queued: &mut self.queued,
        }
    }

    /// Whether connection `id` is open with no send in flight.
    pub fn stream_idle(&self, id: SockId) -> bool {
        self.ctl.files.get(id.0 as usize).is_some_and(|f| {
            f.state == SlotState::Open && f.out.as_ref().is_some_and(|o| !o.busy())
        })
    }

    /// Lets `fill` write into connection `id`'s (empty) send buffer, and
    /// sends what it wrote, with the turn's other requests. `None` (and
    /// `fill` not called) when the connection is not open or a send is in
    /// flight: try again after its `Sent`.
    pub fn stream_send<R>(
        &mut self,
        id: SockId,
        fill: impl FnOnce(&mut Vec<u8>) -> R,
    ) -> Option<R> {
        let f = self.ctl.files.get_mut(id.0 as usize)?;
        if f.state != SlotState::Open {
            return None;
        }
        let out = f.out.as_deref_mut().filter(|o| !o.busy())?;
        out.buf.clear();
        let r = fill(&mut out.buf);
        if out.buf.is_empty() {
            // Nothing to send: an idle connection holds no buffer.
            out.buf = Vec::new();
            return Some(r);
        }
        out.done = 0;
        f.sends += 1;
        self.ctl.push_stream_send(id.0, true);
        Some(r)
    }

    /// Starts closing connection `id`: no more of its events are delivered,
    /// its receive and a send waiting for room are cancelled, and `last`
    /// goes after the send in flight if that one completes whole (as much
    /// of it as the socket takes at once). The descriptor is closed once no
    /// request refers to it.
    pub fn close_stream(&mut self, id: SockId, last: Vec<u8>) {
        let Some(f) = self.ctl.files.get_mut(id.0 as usize) else {
            return;
        };
        if f.state != SlotState::Open || f.kind != SlotKind::Stream {
            self.ctl.close(id);
            return;
        }
        // The cancel goes first, so that it cannot reach the last send.
        self.ctl.close(id);
        let f = &mut self.ctl.files[id.0 as usize];
        let Some(out) = f.out.as_deref_mut() else {
            return;
        };
        if last.is_empty() {
            return;
        }
        if out.busy() {
            out.after = Some(last);
            return;
        }
        out.buf = last;
        out.done = 0;
        out.last = true;
        f.sends += 1;
        self.ctl.push_stream_send(id.0, true);
    }

    /// As `close_stream`, but the descriptor is not closed: once no request
    /// refers to it (after `last` has gone), `take_detached` hands it back
    /// with the connection's tag. For a connection that leaves the ring for
    /// another plumbing (an RFC 6062 data connection). Bytes its receive
    /// took before the cancel reached it still come as `StreamEvent::Data`
    /// with its tag, so that none is lost.
    pub fn detach_stream(&mut self, id: SockId, last: Vec<u8>) {
        if let Some(f) = self.ctl.files.get_mut(id.0 as usize) {
            if f.state == SlotState::Open && f.kind == SlotKind::Stream {
                f.keep = true;
            }
        }
        self.close_stream(id, last);
    }

    /// The connections detached earlier whose requests have all completed.
    pub fn take_detached(&mut self) -> Vec<(u64, TcpStream)> {
        std::mem::take(&mut self.ctl.detached)
            .into_iter()
            .map(|(tag, fd)| (tag, TcpStream::from(fd)))
            .collect()
    }

    pub(super) fn on_accept(&mut self, slot: u32, res: i32, flags: u32) {
        let Some(f) = self.ctl.files.get_mut(slot as usize) else {
            self.ctl.stats.ring_errors += 1;
            return;
        };
        let open = f.state == SlotState::Open;
        let tag = f.tag;
        if !cqueue::more(flags) {
            f.armed = false;
            if open {
                self.ctl.want_rearm(slot);
            }
        }
        if res < 0 {
            if res == -libc::ECANCELED {
                self.ctl.stats.rx_cancelled += 1;
            } else {
                // EMFILE and the like: the connection waits in the backlog.
                self.ctl.stats.stream_errors += 1;
                tracing::debug!(slot, error = %io::Error::from_raw_os_error(-res), "accept failed");
            }
            return;
        }
        // SAFETY: a successful accept's result is a descriptor the kernel
        // has just opened for this process (not a fixed-file slot: the
        // request did not ask for one); nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(res) };
        if open {
            self.events.push(StreamCqe::Accepted {
                listener: slot,
                tag,
                fd: Some(fd),
            });
        }
    }

    pub(super) fn on_stream_recv(&mut self, slot: u32, res: i32, flags: u32) {
        let Some(f) = self.ctl.files.get_mut(slot as usize) else {
            self.ctl.stats.ring_errors += 1;
            return;
        };
        let open = f.state == SlotState::Open;
        // Detached (`detach_stream`): what it still receives is delivered.
        let keep = f.keep;
        let tag = f.tag;
        let more = cqueue::more(flags);
        if !more {
            f.armed = false;
        }
        if res <= 0 {
            match -res {
                0 if open => self.events.push(StreamCqe::Eof { sock: slot, tag }),
                0 => {}
                libc::ENOBUFS => {
                    self.ctl.stats.stream_rx_no_buffers += 1;
                    if open && !more {
                        self.ctl.want_rearm(slot);
                    }
                }
                libc::ECANCELED if !open => self.ctl.stats.rx_cancelled += 1,
                errno => {
                    self.ctl.stats.stream_errors += 1;
                    if open {
                        self.events.push(StreamCqe::Failed {
                            sock: slot,
                            tag,
                            errno,
                        });
                    }
                }
            }
            return;
        }
        if open && !more {
            // Ended for another reason (a full completion queue): again.
            self.ctl.want_rearm(slot);
        }
        let Some(pool) = self.rx_stream.as_mut() else {
            self.ctl.stats.ring_errors += 1;
            return;
        };
        let Some(bid) = cqueue::buffer_select(flags).filter(|&b| pool.delivered(b)) else {
            self.ctl.stats.stream_errors += 1;
            tracing::debug!(slot, res, "stream receive without a usable buffer");
            return;
        };
        if !open && !keep {
            pool.release(bid);
            return;
        }
        self.events.push(StreamCqe::Data {
            sock: slot,
            tag,
            bid,
            len: res as usize,
            taken: false,
        });
    }

    pub(super) fn on_stream_send(&mut self, slot: u32, res: i32) {
        let Some(f) = self.ctl.files.get_mut(slot as usize) else {
            self.ctl.stats.ring_errors += 1;
            return;
        };
        let open = f.state == SlotState::Open;
        let tag = f.tag;
        let Some(out) = f.out.as_deref_mut() else {
            self.ctl.stats.ring_errors += 1;
            return;
        };
        let again = !out.last && open;
        match res {
            n if n > 0 => {
                out.done = (out.done + n as usize).min(out.buf.len());
                if out.done < out.buf.len() {
                    if again {
                        // The socket took what it had room for; the rest
                        // waits for more.
                        self.ctl.stats.stream_tx_partial += 1;
                        self.ctl.push_stream_send(slot, false);
                        return;
                    }
                    self.finish_stream_send(slot, None);
                    return;
                }
                let len = out.buf.len();
                self.finish_stream_send(slot, Some(len));
                if open {
                    self.events.push(StreamCqe::Sent {
                        sock: slot,
                        tag,
                        len,
                    });
                }
            }
            n if n == -libc::EAGAIN && again => {
                // No room at all: wait for it.
                self.ctl.push_stream_send(slot, false);
            }
            n => {
                let errno = if n == 0 { libc::EPIPE } else { -n };
                self.finish_stream_send(slot, None);
                if open {
                    self.ctl.stats.stream_errors += 1;
                    self.events.push(StreamCqe::Failed {
                        sock: slot,
                        tag,
                        errno,
                    });
                } else if errno != libc::ECANCELED && errno != libc::EAGAIN {
                    tracing::debug!(slot, error = %io::Error::from_raw_os_error(errno), "last send on a closing connection failed");
                }
            }
        }
    }

    /// The send of `slot` is over: `Some(len)` when every byte went. A
    /// close's last bytes go now if everything before them did.
    fn finish_stream_send(&mut self, slot: u32, whole: Option<usize>) {
        let f = &mut self.ctl.files[slot as usize];
        f.sends = f.sends.saturating_sub(1);
        let Some(out) = f.out.as_deref_mut() else {
            return;
        };
        out.state = SendState::Idle;
        out.done = 0;
        out.last = false;
        out.buf.clear();
        if out.buf.capacity() > KEEP_SEND_BUFFER {
            out.buf = Vec::new();
        }
        let after = out.after.take();
        if let (Some(_), Some(last)) = (whole, after) {
            if !last.is_empty() {
                out.buf = last;
                out.last = true;
                f.sends += 1;
                self.ctl.push_stream_send(slot, true);
            }
        }
    }

    /// Gives back the stream buffers of the last turn's events and drops
    /// what was not taken (an accepted connection nobody took is closed).
    pub(super) fn release_stream_events(&mut self) {
        for e in self.events.drain(..) {
            if let StreamCqe::Data { bid, .. } = e {
                if let Some(pool) = self.rx_stream.as_mut() {
                    pool.release(bid);
                }
            }
        }
    }

    /// Stream buffers in the ring (for re-arming).
    pub(super) fn stream_buffers_available(&self) -> usize {
        self.rx_stream.as_ref().map_or(0, |p| p.available())
    }

    /// Stream buffers held by the program.
    pub fn stream_buffers_out(&self) -> usize {
        self.rx_stream.as_ref().map_or(0, |p| p.out())
    }
}

impl SocketCtl {
    /// Queues the send of `buf[done..]` of stream slot `slot`, with
    /// `MSG_DONTWAIT` (`quick`: it completes while it is submitted, and the
    /// wait counts on that) or waiting for room. A send that cannot be
    /// queued now is queued again at the end of the turn.
    pub(super) fn push_stream_send(&mut self, slot: u32, quick: bool) {
        let Some(out) = self.files[slot as usize].out.as_deref_mut() else {
            return;
        };
        let rest = out.buf.get(out.done..).unwrap_or_default();
        let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        let flags = libc::MSG_NOSIGNAL | if quick { libc::MSG_DONTWAIT } else { 0 };
        let e = opcode::Send::new(types::Fixed(slot), rest.as_ptr(), len)
            .flags(flags)
            .build()
            .user_data(user_data(KIND_STREAM_SEND, slot));
        let pushed = self.push(&e);
        let state = match (pushed, quick) {
            (true, true) => SendState::Quick,
            (true, false) => SendState::Waiting,
            (false, _) => SendState::Unqueued { quick },
        };
        if let Some(out) = self.files[slot as usize].out.as_deref_mut() {
            out.state = state;
        }
        if !pushed {
            self.resend.push(slot);
        } else if quick {
            self.queued_sends += 1;
        }
    }

    /// Queues the sends that could not be queued earlier (a closing
    /// connection's with `MSG_DONTWAIT`: nothing may wait on it).
    pub(super) fn resend_ready(&mut self) {
        for slot in std::mem::take(&mut self.resend) {
            let f = &self.files[slot as usize];
            let closing = f.state != SlotState::Open;
            if let Some(SendState::Unqueued { quick }) = f.out.as_ref().map(|o| o.state) {
                self.push_stream_send(slot, quick || closing);
            }
        }
    }

    /// Forgets the send buffers of every stream (the kernel may still read
    /// them: they are leaked, never freed).
    pub(super) fn leak_stream_buffers(&mut self) {
        for f in &mut self.files {
            if let Some(out) = f.out.take() {
                std::mem::forget(out);
            }
        }
    }
}
