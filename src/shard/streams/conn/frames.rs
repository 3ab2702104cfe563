//! Where a client's frames go: each to the relay, where it lies when it
//! lies whole in the bytes received, else put together in a buffer laid
//! out the same way; then what the relay answers to a peer or onto the
//! connection's own queue.

use super::{key, Conn, RemoteBind, StreamStats, EARLY_DATA_LIMIT};
use crate::shard::streams::{CloseReason, PeerSockets};
use crate::stream::Frame;
use crate::turn::{peek_connection_bind, Now, Payload, Relay, Via, PEER_HEADROOM};

/// Where frames from a client go: the relay, then a peer or the client's
/// own queue.
pub(super) struct FrameOut<'a> {
    pub(super) id: u32,
    /// This shard's index (CONNECTION-IDs name their shard).
    pub(super) shard: usize,
    /// ConnectionBinds for another shard to decide (RFC 6062).
    pub(super) remote: &'a mut Vec<RemoteBind>,
    pub(super) jbuf: &'a mut [u8],
    pub(super) scratch: &'a mut [u8],
    pub(super) stats: &'a mut StreamStats,
    pub(super) dirty: &'a mut Vec<u32>,
}

impl FrameOut<'_> {
    pub(super) fn mark<S>(&mut self, conn: &mut Conn<S>) {
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(self.id);
        }
    }

    /// Handles the frames in `data[pos..]`, bytes just received; `data`
    /// has `PEER_HEADROOM` bytes before `pos` at least.
    pub(super) fn frames<S>(
        &mut self,
        conn: &mut Conn<S>,
        data: &[u8],
        mut pos: usize,
        relay: &mut Relay,
        sockets: &mut impl PeerSockets,
        now: Now,
    ) -> Result<(), CloseReason> {
        loop {
            if conn.data_bind.is_some() || conn.awaiting_bind {
                // RFC 6062 §5.4: after a data connection's ConnectionBind
                // come the client's bytes for the peer, not frames. Kept
                // for the pipe: the client should wait for the answer, but
                // what it sent early is not lost.
                let rest = data.get(pos..).unwrap_or_default();
                if conn.early.len() + rest.len() > EARLY_DATA_LIMIT {
                    return Err(CloseReason::EarlyData);
                }
                conn.early.extend_from_slice(rest);
                return Ok(());
            }
            // The frame in a buffer laid out for the relay: the slice starts
            // `PEER_HEADROOM` bytes before it.
            let (buf, len): (&[u8], usize) = match conn.deframer.next(data, &mut pos) {
                Frame::InPlace(range, _) => (&data[range.start - PEER_HEADROOM..], range.len()),
                Frame::Joined(bytes, _) => {
                    let len = bytes.len();
                    self.jbuf[PEER_HEADROOM..PEER_HEADROOM + len].copy_from_slice(bytes);
                    (&self.jbuf[..], len)
                }
                Frame::Done => return Ok(()),
                Frame::Invalid(_) => return Err(CloseReason::InvalidFrame),
            };
            let frame = &buf[PEER_HEADROOM..PEER_HEADROOM + len];
            if conn.data_bind.is_none()
                && peek_connection_bind(frame).is_some()
                && !relay.has_allocation(now.at, conn.leg, conn.client)
            {
                // RFC 6062 §5.4: a data connection's ConnectionBind. Once it
                // is bound, what follows is the peer's bytes, not frames:
                // the connection leaves the stream side after this turn's
                // flush.
                if let Some(Some(id)) = peek_connection_bind(frame) {
                    if id.shard() != self.shard {
                        // The allocation lives on another shard: it decides,
                        // and the answer comes back by letter.
                        conn.awaiting_bind = true;
                        self.remote.push(RemoteBind {
                            owner: id.shard(),
                            conn: key(self.id, conn.generation),
                            transport: conn.leg.transport(),
                            msg: frame.to_vec(),
                        });
                        continue;
                    }
                }
                let b = relay.connection_bind(now, conn.leg.transport(), frame, self.scratch);
                if let Some(n) = b.reply {
                    if conn.out.push(&self.scratch[..n]) {
                        self.mark(conn);
                    }
                }
                if let Some(id) = b.bound {
                    conn.data_bind = Some(id);
                    conn.deadline = None;
                    self.mark(conn);
                    continue;
                }
                continue;
            }
            let Some(t) =
                relay.handle_client(now, conn.leg, conn.client, buf, len, self.scratch, sockets)
            else {
                continue;
            };
            match (t.via, t.payload) {
                (Via::Relay(token), Payload::Rx(range)) => {
                    let ok = buf
                        .get(range)
                        .is_some_and(|b| sockets.send_to_peer(token, t.to, b));
                    if ok {
                        self.stats.to_peer_sent += 1;
                    } else {
                        self.stats.to_peer_failed += 1;
                    }
                }
                (Via::Stream(_), Payload::Reply(r)) => {
                    // An answer goes back on this connection, whole.
                    if !conn.out.push(&self.scratch[..r]) {
                        self.stats.tx_queue_full += 1;
                    } else {
                        self.mark(conn);
                    }
                }
                _ => {}
            }
        }
    }
}
