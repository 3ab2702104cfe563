//! A shard's DTLS sessions (TURN over DTLS, RFC 7350, on the client leg).
//!
//! A DTLS listener is a UDP socket of its own in the shard's SO_REUSEPORT
//! group, received by the backend like any UDP listener (its `ListenerId`
//! comes after the plain UDP ones); `dispatch` hands its datagrams here.
//! For an address without a session, the stateless front door decides
//! (`uturn_dtls::Front`): a HelloVerifyRequest goes back and nothing is
//! kept, or a ClientHello with a valid cookie makes a session. Only then
//! is anything stored, counted against the same connection limits as TCP
//! and TLS (`ConnLedger`, per node and per source).
//!
//! Each plaintext record of an open session is one STUN message or one
//! ChannelData message (unpadded: DTLS keeps datagram boundaries), handed
//! to the relay as `Leg::Dtls`; what the relay answers or relays to the
//! client is encrypted as one record and sent from the listener socket.
//! Deadlines are TLS's: a handshake must finish within
//! `handshake_timeout`, and a session must hold an allocation within
//! `auth_timeout` of its handshake or of losing its allocation. When a
//! session ends, for any reason, its allocation is deleted.
//!
//! Encrypted datagrams leave with one `send_to` each on a duplicate of the
//! listener's descriptor (on both backends): simple, and the cost of the
//! cipher dwarfs it.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uturn_dtls::session::{Progress, HANDSHAKE_TICK};
use uturn_dtls::{DtlsContext, Front, Session, SessionError, Verdict};

use super::streams::{CloseReason, PeerSockets, StreamLimits};
use super::RECV_CAPACITY;
use crate::stream::{ConnLedger, Refused};
use crate::turn::{
    ConnId, Leg, ListenerId, Now, Payload, Relay, Transmit, Via, MAX_REPLY, PEER_HEADROOM,
    PEER_TAILROOM,
};

/// How often open sessions' deadlines are checked.
const SWEEP: Duration = Duration::from_secs(1);

/// What a shard's DTLS side is built from.
pub struct DtlsSpec {
    /// This shard's DTLS listen sockets, in `listen_dtls` order.
    pub sockets: Vec<UdpSocket>,
    pub front: Front,
    /// The certificate sessions start with (None: no DTLS listener).
    pub context: Option<DtlsContext>,
    pub limits: StreamLimits,
    /// Shared with TCP and TLS: one count of client sessions per node and
    /// per source.
    pub ledger: Arc<ConnLedger>,
}

impl DtlsSpec {
    /// No DTLS listener.
    pub fn none() -> DtlsSpec {
        let none = super::StreamSpec::none();
        DtlsSpec {
            sockets: Vec::new(),
            // Never used: there is no listener to answer on.
            front: Front::new(uturn_dtls::CookieKey::from_secret([0; 32])),
            context: None,
            limits: none.limits,
            ledger: none.ledger,
        }
    }
}

/// A shard's DTLS counters.
#[derive(Clone, Debug, Default)]
pub struct DtlsStats {
    /// HelloVerifyRequests sent (nothing kept for them).
    pub hello_verify: u64,
    /// Of those, to hellos whose cookie was stale or made for another address.
    pub stale_cookies: u64,
    /// Sessions made from a hello with a valid cookie.
    pub accepted: u64,
    pub refused_total: u64,
    pub refused_per_source: u64,
    /// Datagrams from addresses without a session that were not a
    /// ClientHello, or a malformed or fragmented one.
    pub dropped_not_hello: u64,
    pub dropped_malformed: u64,
    /// Hellos with a valid cookie but no certificate to answer with, or an
    /// OpenSSL failure making the session.
    pub dropped_no_session: u64,
    pub handshakes_ok: u64,
    pub handshakes_failed: u64,
    /// Closed, by `CloseReason` (in `CloseReason::ALL` order).
    pub closed: [u64; CloseReason::ALL.len()],
    /// Open now (handshaking or not).
    pub open: u64,
    /// Encrypted datagrams the socket refused, or a session's pipe dropped.
    pub tx_errors: u64,
    /// Messages from DTLS clients forwarded to peers, and those a relay
    /// socket refused.
    pub to_peer_sent: u64,
    pub to_peer_failed: u64,
}

impl DtlsStats {
    pub fn add(&mut self, o: &DtlsStats) {
        self.hello_verify += o.hello_verify;
        self.stale_cookies += o.stale_cookies;
        self.accepted += o.accepted;
        self.refused_total += o.refused_total;
        self.refused_per_source += o.refused_per_source;
        self.dropped_not_hello += o.dropped_not_hello;
        self.dropped_malformed += o.dropped_malformed;
        self.dropped_no_session += o.dropped_no_session;
        self.handshakes_ok += o.handshakes_ok;
        self.handshakes_failed += o.handshakes_failed;
        for (a, b) in self.closed.iter_mut().zip(o.closed) {
            *a += b;
        }
        self.open += o.open;
        self.tx_errors += o.tx_errors;
        self.to_peer_sent += o.to_peer_sent;
        self.to_peer_failed += o.to_peer_failed;
    }
}

/// One client's session and where it is.
struct Entry {
    session: Session,
    listener: u16,
    client: SocketAddr,
    /// When it closes unless its handshake finished (while handshaking) or
    /// it holds an allocation (once open) by then; None: it does.
    deadline: Option<Instant>,
}

/// Every DTLS session of one shard.
pub struct DtlsSessions {
    index: usize,
    /// `ListenerId`s from this one on are DTLS listeners.
    first: u16,
    sockets: Vec<UdpSocket>,
    front: Front,
    context: Option<DtlsContext>,
    limits: StreamLimits,
    ledger: Arc<ConnLedger>,
    by_client: HashMap<(u16, SocketAddr), u32>,
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    /// Plaintext laid out for the relay: headroom, the message, tailroom.
    plain: Box<[u8]>,
    scratch: Box<[u8]>,
    next_sweep: Option<Instant>,
    stats: DtlsStats,
}

impl DtlsSessions {
    /// `first`: the `ListenerId` of the first DTLS socket (the number of
    /// plain UDP listeners). The sockets themselves are duplicated for
    /// sending; the backend receives on the originals.
    pub fn new(index: usize, first: u16, spec: DtlsSpec) -> std::io::Result<DtlsSessions> {
        Ok(DtlsSessions {
            index,
            first,
            sockets: spec.sockets,
            front: spec.front,
            context: spec.context,
            limits: spec.limits,
            ledger: spec.ledger,
            by_client: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            plain: vec![0u8; PEER_HEADROOM + RECV_CAPACITY + PEER_TAILROOM].into_boxed_slice(),
            scratch: vec![0u8; MAX_REPLY].into_boxed_slice(),
            next_sweep: None,
            stats: DtlsStats::default(),
        })
    }

    /// The sockets the backend receives on (duplicates of those kept here).
    pub fn receive_sockets(&self) -> std::io::Result<Vec<UdpSocket>> {
        self.sockets.iter().map(UdpSocket::try_clone).collect()
    }

    /// The DTLS listener a `ListenerId` names, if it names one.
    pub fn listener(&self, id: ListenerId) -> Option<u16> {
        let i = id.0.checked_sub(self.first)?;
        (usize::from(i) < self.sockets.len()).then_some(i)
    }

    pub fn stats(&self) -> &DtlsStats {
        &self.stats
    }

    /// New sessions use `context` from now on; open ones keep theirs.
    pub fn set_context(&mut self, context: DtlsContext) {
        if !self.sockets.is_empty() {
            self.context = Some(context);
        }
    }

    /// The earliest deadline check, while there are sessions.
    pub fn next_timer(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// One datagram that arrived on DTLS listener `listener` from `from`.
    pub fn datagram(
        &mut self,
        relay: &mut Relay,
        now: Now,
        listener: u16,
        from: SocketAddr,
        bytes: &[u8],
        sockets: &mut impl PeerSockets,
    ) {
        let Some(&slot) = self.by_client.get(&(listener, from)) else {
            self.front_door(now, listener, from, bytes);
            return;
        };
        // A client that starts over from the same address (it restarted):
        // a fresh hello with a valid cookie replaces the open session.
        let open = self.entry(slot).is_some_and(|e| e.session.is_open());
        if open && uturn_dtls::record::client_hello(bytes).is_ok() {
            let mut hvr = [0u8; 64];
            match self.front.classify(bytes, from, now.unix, &mut hvr) {
                Verdict::HelloVerify { n, stale } => {
                    self.count_hello_verify(stale);
                    self.send_raw(listener, from, &hvr[..n]);
                }
                Verdict::Accept(_) => {
                    self.close(slot, CloseReason::ClientClosed, relay, sockets);
                    self.front_door(now, listener, from, bytes);
                }
                Verdict::Drop(_) => self.stats.dropped_malformed += 1,
            }
            return;
        }
        let result = match self.entry_mut(slot) {
            Some(e) => e.session.handle(bytes),
            None => return,
        };
        match result {
            Ok(Progress::Handshaking) => self.flush(slot),
            Ok(Progress::Connected) => {
                self.stats.handshakes_ok += 1;
                let auth = self.limits.auth_timeout;
                if let Some(e) = self.entry_mut(slot) {
                    e.deadline = Some(now.at + auth);
                }
                self.flush(slot);
                self.read_plaintext(slot, relay, now, sockets);
            }
            Ok(Progress::Open) => self.read_plaintext(slot, relay, now, sockets),
            Err(e) => self.failed(slot, e, relay, sockets),
        }
    }

    /// A datagram from an address without a session: the stateless part.
    fn front_door(&mut self, now: Now, listener: u16, from: SocketAddr, bytes: &[u8]) {
        let mut hvr = [0u8; 64];
        let hello = match self.front.classify(bytes, from, now.unix, &mut hvr) {
            Verdict::HelloVerify { n, stale } => {
                self.count_hello_verify(stale);
                self.send_raw(listener, from, &hvr[..n]);
                return;
            }
            Verdict::Drop(uturn_dtls::front::Dropped::NotClientHello) => {
                self.stats.dropped_not_hello += 1;
                return;
            }
            Verdict::Drop(_) => {
                self.stats.dropped_malformed += 1;
                return;
            }
            Verdict::Accept(h) => h,
        };
        // From here on the client has shown that it receives at `from`.
        let Some(context) = &self.context else {
            self.stats.dropped_no_session += 1;
            return;
        };
        let mut cookie = [0u8; uturn_dtls::cookie::COOKIE_LEN];
        // Verified to be exactly this long.
        cookie.copy_from_slice(hello.cookie(bytes));
        if let Err(why) = self.ledger.admit(from.ip()) {
            match why {
                Refused::Total => self.stats.refused_total += 1,
                Refused::PerSource => self.stats.refused_per_source += 1,
            }
            return;
        }
        let session = match Session::accept(context, &hello, bytes, cookie) {
            Ok(s) => s,
            Err((e, alert)) => {
                self.ledger.release(from.ip());
                self.stats.handshakes_failed += 1;
                tracing::debug!(shard = self.index, error = %e, "DTLS hello refused");
                for d in alert {
                    self.send_raw(listener, from, &d);
                }
                return;
            }
        };
        let entry = Entry {
            session,
            listener,
            client: from,
            deadline: Some(now.at + self.limits.handshake_timeout),
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(entry);
                s
            }
            None => {
                self.slots.push(Some(entry));
                (self.slots.len() - 1) as u32
            }
        };
        self.by_client.insert((listener, from), slot);
        self.stats.accepted += 1;
        self.stats.open += 1;
        self.schedule(now.at + HANDSHAKE_TICK);
        self.flush(slot);
    }

    fn count_hello_verify(&mut self, stale: bool) {
        self.stats.hello_verify += 1;
        if stale {
            self.stats.stale_cookies += 1;
        }
    }

    fn entry(&self, slot: u32) -> Option<&Entry> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    fn entry_mut(&mut self, slot: u32) -> Option<&mut Entry> {
        self.slots.get_mut(slot as usize).and_then(Option::as_mut)
    }

    fn schedule(&mut self, at: Instant) {
        self.next_sweep = Some(self.next_sweep.map_or(at, |t| t.min(at)));
    }

    /// Hands every plaintext record of the last datagram to the relay.
    fn read_plaintext(
        &mut self,
        slot: u32,
        relay: &mut Relay,
        now: Now,
        sockets: &mut impl PeerSockets,
    ) {
        let leg = Leg::Dtls(ConnId(slot));
        loop {
            let Some(e) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) else {
                return;
            };
            let client = e.client;
            let room = &mut self.plain[PEER_HEADROOM..PEER_HEADROOM + RECV_CAPACITY];
            let n = match e.session.recv(room) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(err) => {
                    self.failed(slot, err, relay, sockets);
                    return;
                }
            };
            let t =
                relay.handle_client(now, leg, client, &self.plain, n, &mut self.scratch, sockets);
            match t {
                Some(Transmit {
                    via: Via::Dtls(_),
                    payload: Payload::Reply(k),
                    ..
                }) => {
                    if let (Some(bytes), Some(e)) = (
                        self.scratch.get(..k),
                        self.slots.get_mut(slot as usize).and_then(Option::as_mut),
                    ) {
                        if e.session.send(bytes).is_err() {
                            self.stats.tx_errors += 1;
                        }
                    }
                }
                Some(Transmit {
                    via: Via::Relay(token),
                    to,
                    payload: Payload::Rx(range),
                }) => match self.plain.get(range) {
                    Some(bytes) if sockets.send_to_peer(token, to, bytes) => {
                        self.stats.to_peer_sent += 1
                    }
                    _ => self.stats.to_peer_failed += 1,
                },
                Some(other) => {
                    tracing::debug!(shard = self.index, via = ?other.via, "unexpected DTLS send dropped");
                }
                None => {}
            }
        }
        self.flush(slot);
    }

    /// A message the relay sends to DTLS client `id` (from a peer).
    pub fn send(&mut self, id: ConnId, bytes: &[u8]) {
        let Some(e) = self.entry_mut(id.0) else {
            return;
        };
        if e.session.send(bytes).is_err() {
            self.stats.tx_errors += 1;
        }
        self.flush(id.0);
    }

    /// Sends what a session has to send.
    fn flush(&mut self, slot: u32) {
        let Some(e) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let (listener, client) = (e.listener, e.client);
        while let Some(d) = e.session.poll_transmit() {
            let ok = self
                .sockets
                .get(usize::from(listener))
                .is_some_and(|s| s.send_to(&d, client).is_ok());
            if !ok {
                self.stats.tx_errors += 1;
            }
        }
    }

    fn send_raw(&mut self, listener: u16, to: SocketAddr, bytes: &[u8]) {
        let ok = self
            .sockets
            .get(usize::from(listener))
            .is_some_and(|s| s.send_to(bytes, to).is_ok());
        if !ok {
            self.stats.tx_errors += 1;
        }
    }

    fn failed(
        &mut self,
        slot: u32,
        e: SessionError,
        relay: &mut Relay,
        sockets: &mut impl PeerSockets,
    ) {
        let handshaking = self.entry(slot).is_some_and(|e| !e.session.is_open());
        let reason = match e {
            SessionError::Closed => CloseReason::ClientClosed,
            SessionError::Tls(why) => {
                if handshaking {
                    self.stats.handshakes_failed += 1;
                }
                tracing::debug!(shard = self.index, error = %why, "DTLS session failed");
                CloseReason::Tls
            }
        };
        self.flush(slot);
        self.close(slot, reason, relay, sockets);
    }

    /// Ends a session: close_notify (unless the client closed), its
    /// allocation deleted, its place in the ledger given back.
    fn close(
        &mut self,
        slot: u32,
        reason: CloseReason,
        relay: &mut Relay,
        sockets: &mut impl PeerSockets,
    ) {
        if reason != CloseReason::ClientClosed && reason != CloseReason::Tls {
            if let Some(e) = self.entry_mut(slot) {
                e.session.close();
            }
            self.flush(slot);
        }
        let Some(e) = self.slots.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        self.by_client.remove(&(e.listener, e.client));
        self.free.push(slot);
        relay.connection_closed(Leg::Dtls(ConnId(slot)), e.client, sockets);
        self.ledger.release(e.client.ip());
        self.stats.open = self.stats.open.saturating_sub(1);
        if let Some(i) = CloseReason::ALL.iter().position(|r| *r == reason) {
            self.stats.closed[i] += 1;
        }
        if self.by_client.is_empty() {
            self.next_sweep = None;
        }
    }

    /// Deadlines and handshake retransmissions.
    pub fn sweep(&mut self, relay: &mut Relay, sockets: &mut impl PeerSockets, now: Now) {
        match self.next_sweep {
            Some(t) if now.at >= t => {}
            _ => return,
        }
        self.next_sweep = None;
        let mut handshaking = false;
        let auth = self.limits.auth_timeout;
        for slot in 0..self.slots.len() as u32 {
            let Some(e) = self.entry_mut(slot) else {
                continue;
            };
            if !e.session.is_open() {
                if e.deadline.is_some_and(|d| now.at >= d) {
                    self.stats.handshakes_failed += 1;
                    self.close(slot, CloseReason::HandshakeTimeout, relay, sockets);
                    continue;
                }
                handshaking = true;
                match e.session.handle_timeout() {
                    Ok(Progress::Handshaking) => self.flush(slot),
                    Ok(_) => {
                        // Only a datagram finishes a handshake; be safe.
                        self.flush(slot);
                    }
                    Err(err) => self.failed(slot, err, relay, sockets),
                }
                continue;
            }
            let (leg, client) = (Leg::Dtls(ConnId(slot)), e.client);
            if relay.has_allocation(now.at, leg, client) {
                e.deadline = None;
            } else {
                let d = *e.deadline.get_or_insert(now.at + auth);
                if now.at >= d {
                    self.close(slot, CloseReason::AuthTimeout, relay, sockets);
                }
            }
        }
        if !self.by_client.is_empty() {
            let tick = if handshaking { HANDSHAKE_TICK } else { SWEEP };
            self.schedule(now.at + tick);
        }
    }

    /// Closes every session (shutdown).
    pub fn close_all(&mut self, relay: &mut Relay, sockets: &mut impl PeerSockets) {
        for slot in 0..self.slots.len() as u32 {
            if self.entry(slot).is_some() {
                self.close(slot, CloseReason::Shutdown, relay, sockets);
            }
        }
    }
}
