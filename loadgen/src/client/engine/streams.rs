//! The engine's side of TCP and TLS connections: reading whole frames
//! from a ready stream, retrying the streams whose bytes the socket did not
//! take, and giving up on a connection that broke.

use super::Engine;
use crate::client::flow::{FlowError, TurnFlow};
use crate::client::stream::{frames, Scratch};
use crate::client::Conn;

impl Engine {
    /// Sends what waits in the streams of `unflushed`; true if some still wait.
    pub(super) fn flush_streams(&mut self) -> bool {
        let mut i = 0;
        while i < self.unflushed.len() {
            let slot = self.unflushed[i];
            let result = match self.slots.get(slot) {
                Some(Some(TurnFlow {
                    conn: Conn::Stream(s),
                    ..
                })) => s.flush(),
                _ => Ok(true),
            };
            match result {
                Ok(false) => i += 1,
                Ok(true) => {
                    self.unflushed.swap_remove(i);
                }
                Err(e) => {
                    self.unflushed.swap_remove(i);
                    self.break_stream(slot, format!("socket error: {e}"));
                }
            }
        }
        !self.unflushed.is_empty()
    }

    /// The flow's connection is dead: no more reads, and its request in
    /// flight (and any later one) fails with `why`.
    pub(super) fn break_stream(&mut self, slot: usize, why: String) {
        let Some(Some(flow)) = self.slots.get_mut(slot) else {
            return;
        };
        if flow.broken.is_some() {
            return;
        }
        let _ = self.poller.delete(flow.conn.fd());
        flow.broken = Some(why.clone());
        if flow.tx.is_some() {
            self.fail(slot, FlowError::Io(why));
        }
    }

    /// Reads once from a flow's stream (epoll reports it again if more
    /// is queued): every whole frame is handled like a datagram, and what
    /// the TLS handshake has to answer is sent.
    pub(super) fn read_stream(&mut self, slot: usize) {
        let Some(Some(TurnFlow {
            conn: Conn::Stream(stream),
            ..
        })) = self.slots.get(slot)
        else {
            return;
        };
        let mut scratch = self.scratch.take().unwrap_or_else(Scratch::new);
        let read = stream.read(&mut scratch);
        let flushed = stream.flush();
        match read {
            Ok(whole) => {
                for (_, frame) in frames(whole) {
                    self.on_datagram(slot, frame);
                }
                match flushed {
                    Ok(true) => {}
                    Ok(false) => self.unflushed.push(slot),
                    Err(e) => self.break_stream(slot, format!("socket error: {e}")),
                }
            }
            Err(e) => self.break_stream(slot, e.to_string()),
        }
        self.scratch = Some(scratch);
    }
}
