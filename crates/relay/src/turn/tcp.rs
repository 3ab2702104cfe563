//! TCP allocations (RFC 6062): the relay leg to peers is a TCP connection
//! per peer instead of one UDP socket.
//!
//! A client on a TCP or TLS control connection allocates with
//! REQUESTED-TRANSPORT TCP; the io layer then listens on the relayed
//! address. Each peer data connection is named by a CONNECTION-ID and goes
//! through three states:
//!
//! * `Connecting`: the client asked for it with Connect, the io layer is
//!   connecting from the relayed address, and the answer waits for the
//!   outcome (`Relay::tcp_connected`).
//! * `Pending`: connected (or accepted from a peer that holds a permission,
//!   and announced with a ConnectionAttempt indication); the client has 30
//!   seconds to open a data connection and send ConnectionBind.
//! * `Bound`: the io layer relays bytes between the two connections as they
//!   are; the relay hears again only when one of them closes.
//!
//! Every peer goes through the same choke point as CreatePermission
//! (`check_peer`), whether the client names it (Connect) or it connects in
//! (ConnectionAttempt): SECURITY.md rule 8.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::allocation::{family_of, FiveTuple};
use super::control::Fail;
use super::reply::Code;
use super::{Now, Payload, Relay, RelaySockets, RelayToken, Transmit, MAX_REPLY};
use crate::auth::key::Key;
use crate::auth::{Authenticated, MacKind};
use crate::Transport;
use uturn_stun::integrity::{self, Integrity};
use uturn_stun::{
    attr, Attribute, Class, EncodeError, Message, MessageWriter, Method, TransactionId,
};

/// RFC 6062 §5.2, §5.3: a peer data connection not bound by a
/// ConnectionBind within 30 seconds is closed.
pub const BIND_TIMEOUT: Duration = Duration::from_secs(30);
/// RFC 6062 §5.2: a Connect whose connection is not made by then fails
/// (447). The RFC asks for at least 30 seconds; the kernel's own limit
/// (tcp_syn_retries) is about two minutes, too long to hold a pending
/// place.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// CONNECTION-ID bits below the shard index: the rest name the shard that
/// owns the connection, so that a data connection that lands on another
/// shard can be sent to the right one.
const SHARD_SHIFT: u32 = 22;
/// Shards a CONNECTION-ID can name.
pub const MAX_SHARDS: usize = 1 << (32 - SHARD_SHIFT);

/// RFC 6062 §6.2: names one peer data connection of one allocation. The
/// top bits are the shard's index, the rest random (never reused while the
/// connection lives).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionId(pub u32);

impl ConnectionId {
    /// The shard that owns this connection.
    pub fn shard(self) -> usize {
        (self.0 >> SHARD_SHIFT) as usize
    }
}

/// The RFC 6062 state of one TCP allocation: its peer data connections.
#[derive(Default)]
pub(crate) struct TcpConns {
    pub(crate) conns: Vec<PeerConn>,
}

pub(crate) struct PeerConn {
    pub(crate) id: ConnectionId,
    pub(crate) peer: SocketAddr,
    pub(crate) state: PeerState,
}

pub(crate) enum PeerState {
    /// Connect in progress: what its delayed answer needs.
    Connecting(Box<Delayed>),
    /// Waiting for a ConnectionBind until then.
    Pending {
        deadline: Instant,
    },
    Bound,
}

/// A Connect's answer, written once the io layer has connected or failed,
/// or at `deadline`.
#[derive(Copy, Clone)]
pub(crate) struct Delayed {
    deadline: Instant,
    tid: TransactionId,
    key: Key,
    mac: MacKind,
    fingerprint: bool,
}

impl TcpConns {
    fn pending(&self) -> usize {
        self.conns
            .iter()
            .filter(|c| !matches!(c.state, PeerState::Bound))
            .count()
    }
}

/// What became of a ConnectionBind from a data connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    /// The answer to send on the data connection: `scratch[..n]`.
    pub reply: Option<usize>,
    /// Bound: relay the data connection's bytes to and from this peer
    /// connection from now on.
    pub bound: Option<ConnectionId>,
}

/// Whether `pkt` is a ConnectionBind request, judged from its header only
/// (for the io layer, which must take a data connection away from the
/// stream framing before its answer goes). The CONNECTION-ID it names, if
/// one can be read (not yet trusted: the relay authenticates it).
pub fn peek_connection_bind(pkt: &[u8]) -> Option<Option<ConnectionId>> {
    let msg = Message::parse(pkt).ok()?;
    if (msg.class(), msg.method()) != (Class::Request, Method::ConnectionBind) {
        return None;
    }
    let id = msg
        .attributes()
        .find(|a| a.typ == attr::CONNECTION_ID)
        .and_then(|raw| match Attribute::decode(raw, msg.transaction_id()) {
            Ok(Attribute::ConnectionId(id)) => Some(ConnectionId(id)),
            _ => None,
        });
    Some(id)
}

impl Relay {
    /// Sets the shard index that this relay's CONNECTION-IDs carry (0 by
    /// default). Must be below `MAX_SHARDS`.
    pub fn set_shard(&mut self, index: usize) {
        self.shard = (index % MAX_SHARDS) as u32;
    }

    fn new_connection_id(&mut self) -> ConnectionId {
        loop {
            let low = (self.rng.next_u64() as u32) & ((1 << SHARD_SHIFT) - 1);
            let id = ConnectionId(self.shard << SHARD_SHIFT | low);
            if !self.tcp_ids.contains_key(&id.0) {
                return id;
            }
        }
    }

    /// RFC 6062 §5.2: Connect. Ok means the answer waits for the io
    /// layer's outcome (`tcp_connected`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn connect(
        &mut self,
        now: Now,
        five: FiveTuple,
        peers: &[SocketAddr],
        fingerprint: bool,
        tid: &TransactionId,
        who: &Authenticated<'_>,
        sockets: &mut impl RelaySockets,
    ) -> Result<(), Fail> {
        let index = self.owned_allocation(now, &five, who)?;
        let [peer] = peers else {
            return Err(Code::BadRequest.into());
        };
        let peer = *peer;
        let pending_limit = self.settings.quotas.pending_connections_per_allocation as usize;
        let open_limit = self.settings.quotas.peer_connections_per_allocation as usize;
        let a = self.table.get(index).ok_or(Code::AllocationMismatch)?;
        let Some(tcp) = a.tcp.as_deref() else {
            // A UDP allocation has no peer connections.
            return Err(Code::BadRequest.into());
        };
        Self::check_peer(
            &self.settings.policy,
            &mut self.stats,
            &mut *self.observer,
            a,
            peer,
        )?;
        if tcp.conns.iter().any(|c| c.peer == peer) {
            return Err(Code::ConnectionAlreadyExists.into());
        }
        if tcp.conns.len() >= open_limit || tcp.pending() >= pending_limit {
            self.stats.drop_quota += 1;
            return Err(Code::InsufficientCapacity.into());
        }
        let token = self.table.token(index, family_of(&peer));
        let Some(from) = self.relay_addr(index, family_of(&peer)) else {
            return Err(Code::PeerAddressFamilyMismatch.into());
        };
        let id = self.new_connection_id();
        if sockets.connect_tcp(token, id, from, peer).is_err() {
            self.stats.tcp.connect_failed += 1;
            return Err(Code::ConnectionFailure.into());
        }
        let delayed = Delayed {
            deadline: now.at + CONNECT_TIMEOUT,
            tid: *tid,
            key: who.key,
            mac: who.mac,
            fingerprint,
        };
        if let Some(tcp) = self.table.get_mut(index).and_then(|a| a.tcp.as_deref_mut()) {
            tcp.conns.push(PeerConn {
                id,
                peer,
                state: PeerState::Connecting(Box::new(delayed)),
            });
        }
        self.tcp_ids.insert(id.0, index);
        self.schedule_sweep(now.at);
        Ok(())
    }

    /// The relayed address of `family` of allocation `index`.
    pub(super) fn relay_addr(
        &self,
        index: u32,
        family: uturn_stun::AddressFamily,
    ) -> Option<SocketAddr> {
        let a = self.table.get(index)?;
        let port = a.relay_ports[super::allocation::family_index(family)]?;
        Some(SocketAddr::new(self.relay_ip(family)?, port.get()))
    }

    /// The io layer's outcome of a Connect: `connected` or not. Returns the
    /// Connect's answer for the client's control connection (success with
    /// CONNECTION-ID, or 447), written into `scratch`. A connection that is
    /// not waited for (its allocation has gone) must be closed by the
    /// caller when this returns None and `connected` was true.
    pub fn tcp_connected(
        &mut self,
        now: Now,
        id: ConnectionId,
        connected: bool,
        scratch: &mut [u8],
    ) -> Option<Transmit> {
        let &index = self.tcp_ids.get(&id.0)?;
        let a = self.table.get_mut(index)?;
        let five = a.five;
        let tcp = a.tcp.as_deref_mut()?;
        let pos = tcp.conns.iter().position(|c| c.id == id)?;
        let delayed = match &tcp.conns[pos].state {
            PeerState::Connecting(d) if now.at < a.expires => **d,
            _ => return None,
        };
        if connected {
            tcp.conns[pos].state = PeerState::Pending {
                deadline: now.at + BIND_TIMEOUT,
            };
            self.stats.tcp.connected += 1;
        } else {
            tcp.conns.swap_remove(pos);
            self.tcp_ids.remove(&id.0);
            self.stats.tcp.connect_failed += 1;
            self.stats
                .count_error(Code::ConnectionFailure.number(), false);
        }
        let outcome = if connected { Some(id) } else { None };
        self.connect_answer(five, &delayed, outcome, scratch)
    }

    /// A Connect's answer (success with CONNECTION-ID, or 447 when
    /// `connected` is None), signed with the Connect's key, for the
    /// control connection of `five`.
    fn connect_answer(
        &mut self,
        five: FiveTuple,
        delayed: &Delayed,
        connected: Option<ConnectionId>,
        scratch: &mut [u8],
    ) -> Option<Transmit> {
        let scratch = cap(scratch);
        let written = (|| {
            let class = if connected.is_some() {
                Class::Success
            } else {
                Class::Error
            };
            let mut w = MessageWriter::new(scratch, Method::Connect, class, &delayed.tid)?;
            match connected {
                Some(id) => w.u32(attr::CONNECTION_ID, id.0)?,
                None => {
                    let c = Code::ConnectionFailure;
                    w.error_code(c.number(), c.phrase())?;
                }
            }
            if let Some(s) = &self.settings.software {
                w.raw(attr::SOFTWARE, s.as_bytes())?;
            }
            match delayed.mac {
                MacKind::Sha1 => w.message_integrity(delayed.key.as_bytes())?,
                MacKind::Sha256 => w.message_integrity_sha256(delayed.key.as_bytes())?,
            }
            if delayed.fingerprint {
                w.fingerprint()?;
            }
            Ok::<usize, EncodeError>(w.finish())
        })();
        let Ok(n) = written else {
            self.stats.drop_encode += 1;
            return None;
        };
        Some(Transmit {
            via: five.leg.via(),
            to: five.client,
            payload: Payload::Reply(n),
        })
    }

    /// The 447 answer of a Connect that the sweep gave up on
    /// (`CONNECT_TIMEOUT`), one per call, written into `scratch`; its
    /// connection has been closed (`RelaySockets::close_tcp`). The io
    /// layer calls this after `handle_timeout` until it returns None.
    pub fn take_connect_timeout(&mut self, scratch: &mut [u8]) -> Option<Transmit> {
        while let Some((five, delayed)) = self.tcp_timed_out.pop() {
            if let Some(t) = self.connect_answer(five, &delayed, None, scratch) {
                return Some(t);
            }
        }
        None
    }

    /// RFC 6062 §5.3: a peer connected in to the relayed address of
    /// `token` from `peer`. Some: keep it as connection `id`, and send the
    /// ConnectionAttempt indication (written into `scratch`) to the client.
    /// None: close it (no permission for the peer, a peer the policy
    /// refuses, the allocation's limits, no such allocation).
    pub fn tcp_accepted(
        &mut self,
        now: Now,
        token: RelayToken,
        peer: SocketAddr,
        scratch: &mut [u8],
    ) -> Option<(ConnectionId, Transmit)> {
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let pending_limit = self.settings.quotas.pending_connections_per_allocation as usize;
        let open_limit = self.settings.quotas.peer_connections_per_allocation as usize;
        let index = self.table.index_of_token(token)?;
        let a = self.table.get(index).filter(|a| now.at < a.expires)?;
        let tcp = a.tcp.as_deref()?;
        let refused = |relay: &mut Relay| {
            relay.stats.tcp.refused += 1;
            None
        };
        let allowed = Self::check_peer(
            &self.settings.policy,
            &mut self.stats,
            &mut *self.observer,
            a,
            peer,
        )
        .is_ok();
        if !allowed || !a.has_permission(peer.ip(), now.at) {
            return refused(self);
        }
        if tcp.conns.iter().any(|c| c.peer == peer)
            || tcp.conns.len() >= open_limit
            || tcp.pending() >= pending_limit
        {
            return refused(self);
        }
        let five = a.five;
        let id = self.new_connection_id();
        let mut tid = [0u8; 12];
        self.rng.fill(&mut tid);
        let scratch = cap(scratch);
        let written = (|| {
            let mut w =
                MessageWriter::new(scratch, Method::ConnectionAttempt, Class::Indication, &tid)?;
            w.xor_address(attr::XOR_PEER_ADDRESS, peer)?;
            w.u32(attr::CONNECTION_ID, id.0)?;
            Ok::<usize, EncodeError>(w.finish())
        })();
        let Ok(n) = written else {
            self.stats.drop_encode += 1;
            return None;
        };
        let tcp = self
            .table
            .get_mut(index)
            .and_then(|a| a.tcp.as_deref_mut())?;
        tcp.conns.push(PeerConn {
            id,
            peer,
            state: PeerState::Pending {
                deadline: now.at + BIND_TIMEOUT,
            },
        });
        self.tcp_ids.insert(id.0, index);
        self.stats.tcp.attempts += 1;
        self.schedule_sweep(now.at);
        Some((
            id,
            Transmit {
                via: five.leg.via(),
                to: five.client,
                payload: Payload::Reply(n),
            },
        ))
    }

    /// Peer connection `id` (or the data connection bound to it) has
    /// closed, or could not be set up by the io layer: the relay forgets it.
    pub fn tcp_closed(&mut self, id: ConnectionId) {
        let Some(index) = self.tcp_ids.remove(&id.0) else {
            return;
        };
        if let Some(tcp) = self.table.get_mut(index).and_then(|a| a.tcp.as_deref_mut()) {
            tcp.conns.retain(|c| c.id != id);
        }
    }

    /// Ends the peer connections toward peers the policy now refuses (a
    /// reload narrowed it); returns how many.
    pub(super) fn tcp_revoke(&mut self) -> usize {
        if self.tcp_ids.is_empty() {
            return 0;
        }
        let policy = std::sync::Arc::clone(&self.settings.policy);
        let before = self.tcp_revoked.len();
        for a in self.table.allocations_mut() {
            let Some(tcp) = a.tcp.as_deref_mut() else {
                continue;
            };
            let ids = &mut self.tcp_ids;
            let revoked = &mut self.tcp_revoked;
            tcp.conns.retain(|c| {
                let keep = policy.check(c.peer).is_ok();
                if !keep {
                    ids.remove(&c.id.0);
                    revoked.push(c.id);
                }
                keep
            });
        }
        self.tcp_revoked.len() - before
    }

    /// The peer connections a reload ended (`apply`): the io layer closes
    /// them, and the data connections bound to them.
    pub fn take_revoked_connections(&mut self) -> Vec<ConnectionId> {
        std::mem::take(&mut self.tcp_revoked)
    }

    /// Live peer connections of this shard (every state).
    pub fn tcp_connection_count(&self) -> usize {
        self.tcp_ids.len()
    }

    /// RFC 6062 §5.4: a ConnectionBind, the first request on a new data
    /// connection over `transport`, at `pkt`. The data connection may come
    /// from another address than the control connection (RFC 6062 does not
    /// tie them); what ties it is the credentials. Its nonce is
    /// the one issued on the allocation's control connection (a client has
    /// no other), so it is checked against that connection's address.
    /// Answers (written into `scratch`, at least `MAX_REPLY` bytes) are
    /// sent on the data connection; when `bound` is Some, the io layer
    /// relays that connection's bytes to the peer connection from then on.
    pub fn connection_bind(
        &mut self,
        now: Now,
        transport: Transport,
        pkt: &[u8],
        scratch: &mut [u8],
    ) -> Bind {
        let nothing = Bind {
            reply: None,
            bound: None,
        };
        let Ok(msg) = Message::parse(pkt) else {
            self.stats.drop_malformed += 1;
            return nothing;
        };
        if integrity::check_fingerprint(&msg) == Integrity::Invalid
            || (msg.class(), msg.method()) != (Class::Request, Method::ConnectionBind)
        {
            self.stats.drop_malformed += 1;
            return nothing;
        }
        let scratch = cap(scratch);
        let fp = msg.get(attr::FINGERPRINT).is_some();
        let unsigned = |relay: &mut Relay, code: Code, scratch: &mut [u8]| {
            relay.stats.count_error(code.number(), false);
            let reply = match relay.write(|b| super::reply::error(b, &msg, code), None, fp, scratch)
            {
                super::Answer::Reply(n) => Some(n),
                _ => None,
            };
            Bind { reply, bound: None }
        };
        if transport == Transport::Udp {
            return unsigned(self, Code::BadRequest, scratch);
        }
        // The allocation the CONNECTION-ID names, read before
        // authentication only to find the control connection.
        let owner = peek_connection_bind(pkt)
            .flatten()
            .and_then(|id| Some((id, *self.tcp_ids.get(&id.0)?)))
            .and_then(|(id, index)| Some((id, index, self.table.get(index)?.five)));
        let Some((id, index, control)) = owner else {
            return unsigned(self, Code::BadRequest, scratch);
        };
        let auth = std::sync::Arc::clone(&self.settings.auth);
        let who = match auth.authenticate(
            &msg,
            control.client,
            control.leg.transport(),
            now.unix,
            true,
        ) {
            Ok(who) => who,
            Err(e) => {
                let answer = self.auth_error(now, control, &msg, scratch, &auth, e);
                let reply = match answer {
                    super::Answer::Reply(n) => Some(n),
                    _ => None,
                };
                return Bind { reply, bound: None };
            }
        };
        let result = (|| {
            let a = self.table.get_mut(index).ok_or(Code::BadRequest)?;
            if now.at >= a.expires {
                return Err(Code::BadRequest);
            }
            if a.owner.username() != who.username {
                return Err(Code::WrongCredentials);
            }
            let conn = a
                .tcp
                .as_deref_mut()
                .and_then(|t| t.conns.iter_mut().find(|c| c.id == id))
                .ok_or(Code::BadRequest)?;
            match conn.state {
                PeerState::Pending { deadline } if now.at < deadline => {
                    conn.state = PeerState::Bound;
                    Ok(())
                }
                _ => Err(Code::BadRequest),
            }
        })();
        let written = match result {
            Ok(()) => {
                self.stats.tcp.bound += 1;
                self.write(
                    |b| super::reply::start(b, &msg, Class::Success),
                    Some(&who),
                    fp,
                    scratch,
                )
            }
            Err(code) => {
                self.stats.count_error(code.number(), false);
                self.write(
                    |b| super::reply::error(b, &msg, code),
                    Some(&who),
                    fp,
                    scratch,
                )
            }
        };
        let reply = match written {
            super::Answer::Reply(n) => Some(n),
            _ => None,
        };
        Bind {
            reply,
            bound: result.ok().and(reply).map(|_| id),
        }
    }

    /// Closes the peer connections of allocation `index` whose ConnectionBind
    /// is overdue, and those still connecting after `CONNECT_TIMEOUT` (their
    /// 447 waits in `take_connect_timeout`); from the sweep.
    pub(super) fn tcp_sweep(&mut self, index: u32, now: Instant, sockets: &mut impl RelaySockets) {
        let Some(a) = self.table.get_mut(index) else {
            return;
        };
        let five = a.five;
        let Some(tcp) = a.tcp.as_deref_mut() else {
            return;
        };
        let ids = &mut self.tcp_ids;
        let stats = &mut self.stats;
        let timed_out = &mut self.tcp_timed_out;
        tcp.conns.retain(|c| {
            let (overdue, connecting) = match &c.state {
                PeerState::Pending { deadline } => (now >= *deadline, None),
                PeerState::Connecting(d) => (now >= d.deadline, Some(d)),
                PeerState::Bound => (false, None),
            };
            if !overdue {
                return true;
            }
            sockets.close_tcp(c.id);
            ids.remove(&c.id.0);
            match connecting {
                Some(d) => {
                    stats.tcp.connect_timeouts += 1;
                    stats.count_error(Code::ConnectionFailure.number(), false);
                    timed_out.push((five, **d));
                }
                None => stats.tcp.bind_timeouts += 1,
            }
            false
        });
    }

    /// Closes every peer connection of an allocation being removed.
    pub(super) fn tcp_release(
        ids: &mut HashMap<u32, u32>,
        tcp: Option<&TcpConns>,
        sockets: &mut impl RelaySockets,
    ) {
        for c in tcp.map(|t| &t.conns[..]).unwrap_or_default() {
            sockets.close_tcp(c.id);
            ids.remove(&c.id.0);
        }
    }
}

/// The scratch area, at most `MAX_REPLY` bytes of it.
fn cap(scratch: &mut [u8]) -> &mut [u8] {
    let n = scratch.len().min(MAX_REPLY);
    &mut scratch[..n]
}
