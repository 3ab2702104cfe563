//! Streams on the io_uring itself: a multishot accept on each listener, a
//! multishot receive on each connection into the ring's stream buffers,
//! whose bytes go to the connection logic where they landed, and one send
//! in flight per connection, filled from its queue when the previous one
//! has completed. Closing hands the connection's last bytes to the ring,
//! which frees its slot once no request refers to it (`uturn_io::uring`).

use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

use ipnet::IpNet;

use super::conn::{Closed, Conns, Detached};
use super::{CloseReason, StreamSpec, StreamStats};
use crate::io::uring::{SockId, StreamChunk, StreamEvent, Uring};
use crate::shard::tcp::DataConn;
use crate::shard::uring::RingSockets;
use crate::shard::RelayMap;
use crate::turn::ConnectionId;
use crate::turn::PEER_HEADROOM;
use crate::turn::{ConnId, Now, Relay};
use std::collections::HashMap;

/// Marks a listener's tag on the ring.
const LISTENER_KEY: u64 = 1 << 63;

/// What a listener's connections speak.
struct ListenerKind {
    tls: bool,
    proxy: Option<Arc<Vec<IpNet>>>,
}

/// The stream side of one shard, on its io_uring.
pub(in crate::shard) struct RingStreams {
    index: usize,
    listeners: Vec<ListenerKind>,
    conns: Conns<SockId>,
    /// Data connections leaving the ring, by tag, until it hands their
    /// descriptors back.
    leaving: HashMap<u64, Detached<SockId>>,
    /// Data connections bound and handed back, for the TCP relay.
    detached: Vec<(ConnectionId, DataConn)>,
}

impl RingStreams {
    /// Registers the listeners with `io` (which must have stream buffers)
    /// and arms their accepts.
    pub(in crate::shard) fn new(
        index: usize,
        spec: StreamSpec,
        io: &mut Uring,
    ) -> io::Result<RingStreams> {
        let mut listeners = Vec::with_capacity(spec.listeners.len());
        for (i, l) in spec.listeners.into_iter().enumerate() {
            listeners.push(ListenerKind {
                tls: l.tls,
                proxy: l.proxy,
            });
            io.listen(l.sock, LISTENER_KEY | i as u64)?;
        }
        Ok(RingStreams {
            index,
            listeners,
            conns: Conns::new(index, spec.limits, spec.ledger, spec.tls),
            leaving: HashMap::new(),
            detached: Vec::new(),
        })
    }

    pub(in crate::shard) fn stats(&self) -> &StreamStats {
        self.conns.stats()
    }

    pub(in crate::shard) fn set_tls(&mut self, config: Arc<rustls::ServerConfig>) {
        self.conns.set_tls(config);
    }

    pub(in crate::shard) fn next_timer(&self) -> Option<Instant> {
        self.conns.next_timer()
    }

    /// Handles every stream event of the last wait, in order.
    pub(in crate::shard) fn handle(
        &mut self,
        io: &mut Uring,
        relays: &mut RelayMap<SockId>,
        relay: &mut Relay,
        now: Now,
    ) {
        for i in 0..io.stream_events() {
            let (key, why) = match io.stream_event(i) {
                None => continue,
                Some(StreamEvent::Accepted { tag, stream, .. }) => {
                    let listener = (tag & !LISTENER_KEY) as usize;
                    self.accept(io, listener, stream, now.at);
                    continue;
                }
                Some(StreamEvent::Data(StreamChunk {
                    tag, len, buf, out, ..
                })) => {
                    let Some(id) = self.conns.live(tag) else {
                        // A data connection on its way out: the client's
                        // bytes go with it.
                        if let Some(d) = self.leaving.get_mut(&tag) {
                            let end = PEER_HEADROOM.saturating_add(len).min(buf.len());
                            d.received(&buf[PEER_HEADROOM.min(end)..end]);
                        }
                        continue;
                    };
                    let mut sockets = RingSockets::new(out, relays);
                    match self.conns.received(id, buf, len, relay, &mut sockets, now) {
                        Ok(()) => continue,
                        Err(why) => (tag, why),
                    }
                }
                Some(StreamEvent::Eof { tag, .. }) => {
                    match self.conns.live(tag) {
                        // A bound data connection leaves this turn; its
                        // pipe sees the end on the socket itself.
                        Some(id) if self.conns.is_bound(id) => continue,
                        // One waiting for another shard's answer leaves
                        // once bound, or closes once refused. The ring's
                        // receive has ended with it: nothing more comes.
                        Some(id) if self.conns.awaits_bind(id) => {
                            self.conns.end_awaiting(id);
                            continue;
                        }
                        _ => (tag, CloseReason::ClientClosed),
                    }
                }
                Some(StreamEvent::Failed { tag, error, .. }) => {
                    tracing::debug!(shard = self.index, error = %error, "stream io failed");
                    (tag, CloseReason::Error)
                }
                Some(StreamEvent::Sent { tag, len, .. }) => {
                    // More may have been queued meanwhile.
                    if let Some(id) = self.conns.live(tag) {
                        self.conns.sent(id, len);
                        self.conns.mark_dirty(id);
                    }
                    continue;
                }
            };
            if let Some(id) = self.conns.live(key) {
                self.close(io, relays, relay, id, why);
            }
        }
    }

    /// Queues `bytes` (one whole frame) for the client of connection `id`.
    pub(in crate::shard) fn send(&mut self, id: ConnId, bytes: &[u8]) {
        self.conns.send(id, bytes);
    }

    /// Hands what this turn queued to the ring: one send per connection
    /// whose previous send has completed (the others follow their `Sent`).
    pub(in crate::shard) fn flush(
        &mut self,
        io: &mut Uring,
        relays: &mut RelayMap<SockId>,
        relay: &mut Relay,
    ) {
        while let Some(id) = self.conns.next_dirty() {
            let Some(&sock) = self.conns.io(id) else {
                continue;
            };
            if self.conns.is_bound(id) {
                // A data connection: its answer goes as the ring's last
                // send on it, then the descriptor comes back.
                let mut last = Vec::new();
                let _ = self.conns.fill(id, &mut last);
                let Some(key) = self.conns.key_of(id) else {
                    continue;
                };
                if let Some(d) = self.conns.detach(id) {
                    self.leaving.insert(key, d);
                    io.detach_stream(sock, last);
                }
                continue;
            }
            let conns = &mut self.conns;
            if let Some(Err(why)) = io.stream_send(sock, |buf| conns.fill(id, buf)) {
                self.close(io, relays, relay, id, why);
            }
        }
    }

    /// The data connections the ring has handed back since the last call.
    pub(in crate::shard) fn take_detached(
        &mut self,
        io: &mut Uring,
    ) -> Vec<(ConnectionId, DataConn)> {
        for (tag, sock) in io.take_detached() {
            if let Some(d) = self.leaving.remove(&tag) {
                self.detached.push(d.into_data(|_| sock));
            }
        }
        std::mem::take(&mut self.detached)
    }

    /// ConnectionBinds for other shards made since the last call.
    pub(in crate::shard) fn take_remote(&mut self) -> super::Remote {
        self.conns.take_remote()
    }

    /// Another shard's answer to a ConnectionBind (see `Conns::answer_bind`).
    pub(in crate::shard) fn answer_bind(
        &mut self,
        key: u64,
        reply: &[u8],
        id: Option<ConnectionId>,
    ) -> bool {
        self.conns.answer_bind(key, reply, id)
    }

    /// Closes the connections past their deadlines.
    pub(in crate::shard) fn sweep(
        &mut self,
        io: &mut Uring,
        relays: &mut RelayMap<SockId>,
        relay: &mut Relay,
        now: Now,
    ) {
        for (id, why) in self.conns.expired(relay, now) {
            self.close(io, relays, relay, id, why);
        }
    }

    /// Closes every connection (shutdown), deleting their allocations.
    pub(in crate::shard) fn close_all(
        &mut self,
        io: &mut Uring,
        relays: &mut RelayMap<SockId>,
        relay: &mut Relay,
    ) {
        for id in self.conns.ids() {
            self.close(io, relays, relay, id, CloseReason::Shutdown);
        }
    }

    fn accept(&mut self, io: &mut Uring, listener: usize, stream: TcpStream, now: Instant) {
        let Some(l) = self.listeners.get(listener) else {
            return;
        };
        let from = match stream.peer_addr() {
            Ok(a) => a,
            Err(e) => {
                // Reset before it was looked at.
                tracing::debug!(shard = self.index, error = %e, "accepted connection gone");
                return;
            }
        };
        let Some(admission) = self.conns.admit(l.tls, l.proxy.as_ref(), from) else {
            return;
        };
        let added = self.conns.insert(admission, now, |key| {
            // Media frames are small and latency-bound.
            stream.set_nodelay(true)?;
            io.open_stream(stream, key)
        });
        if let Err(e) = added {
            tracing::debug!(shard = self.index, error = %e, "connection setup failed");
        }
    }

    fn close(
        &mut self,
        io: &mut Uring,
        relays: &mut RelayMap<SockId>,
        relay: &mut Relay,
        id: u32,
        why: CloseReason,
    ) {
        let mut sockets = RingSockets::new(io.peer_out(), relays);
        let closed = self.conns.close(id, why, relay, &mut sockets);
        if let Some(Closed { io: sock, last }) = closed {
            io.close_stream(sock, last);
        }
    }
}
