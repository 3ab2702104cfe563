//! The control path: STUN requests and Send indications (RFC 8656 §7–§11).
//! Runs on the shard, off the ChannelData fast path.

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::ops::Range;
use std::time::Duration;

use super::allocation::{
    family_index, family_of, Allocation, Channel, FiveTuple, Owner, CHANNEL_COOLDOWN,
};
use super::ports::Parity;
use super::reply::{self, Code};
use super::{
    Admission, Answer, Now, Relay, RelaySockets, Reservation, MAX_REPLY, RESERVATION_LIFETIME,
};
use crate::auth::{AuthError, Authenticated, Authenticator};
use crate::policy::QuotaExceeded;
use uturn_stun::integrity::{self, Integrity};
use uturn_stun::{
    attr, AddressFamily, Attribute, Class, EncodeError, Message, MessageWriter, Method,
};

/// RFC 8656 §7.2: the default allocation lifetime.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
/// XOR-PEER-ADDRESS attributes looked at in one CreatePermission.
const MAX_PEERS: usize = 16;
/// Unknown comprehension-required types reported in one 420.
const MAX_UNKNOWN: usize = 16;
/// Ports tried before giving up with 508.
const BIND_ATTEMPTS: usize = 16;
/// REQUESTED-TRANSPORT values served: UDP (RFC 8656 §7.2), and TCP on a
/// TCP or TLS control connection (RFC 6062 §5.1).
const PROTO_UDP: u8 = 17;
const PROTO_TCP: u8 = 6;

/// The attributes of a request the relay acts on, decoded once. Only the
/// trusted view is read (RFC 8489 §14.5: what follows MESSAGE-INTEGRITY is
/// ignored, FINGERPRINT aside).
#[derive(Default)]
struct Request<'a> {
    lifetime: Option<u32>,
    transport: Option<u8>,
    requested_family: Option<AddressFamily>,
    additional_family: Option<AddressFamily>,
    even_port: Option<bool>,
    reservation: Option<&'a [u8; 8]>,
    dont_fragment: bool,
    channel: Option<u16>,
    peers: [Option<SocketAddr>; MAX_PEERS],
    n_peers: usize,
    too_many_peers: bool,
    data: Option<Range<usize>>,
    unknown: [u16; MAX_UNKNOWN],
    n_unknown: usize,
    fingerprint: bool,
}

impl<'a> Request<'a> {
    /// Err when a comprehension-required attribute is malformed (→ 400).
    fn decode(msg: &Message<'a>) -> Result<Request<'a>, ()> {
        let tid = msg.transaction_id();
        let mut r = Request::default();
        for raw in msg.attributes() {
            let attr = match Attribute::decode(raw, tid) {
                Ok(a) => a,
                Err(_) if attr::is_comprehension_required(raw.typ) => return Err(()),
                Err(_) => continue,
            };
            match attr {
                Attribute::Lifetime(v) => {
                    r.lifetime.get_or_insert(v);
                }
                Attribute::RequestedTransport(p) => {
                    r.transport.get_or_insert(p);
                }
                Attribute::RequestedAddressFamily(f) => {
                    r.requested_family.get_or_insert(f);
                }
                Attribute::AdditionalAddressFamily(f) => {
                    r.additional_family.get_or_insert(f);
                }
                Attribute::EvenPort(bit) => {
                    r.even_port.get_or_insert(bit);
                }
                Attribute::ReservationToken(t) => {
                    r.reservation.get_or_insert(t);
                }
                Attribute::DontFragment => r.dont_fragment = true,
                Attribute::ChannelNumber(n) => {
                    r.channel.get_or_insert(n);
                }
                Attribute::XorPeerAddress(a) => match r.peers.get_mut(r.n_peers) {
                    Some(slot) => {
                        *slot = Some(a);
                        r.n_peers += 1;
                    }
                    None => r.too_many_peers = true,
                },
                Attribute::Data(v) => {
                    let start = raw.offset + 4;
                    r.data.get_or_insert(start..start + v.len());
                }
                Attribute::Fingerprint(_) => r.fingerprint = true,
                Attribute::Unknown { typ, .. } if attr::is_comprehension_required(typ) => {
                    if let Some(slot) = r.unknown.get_mut(r.n_unknown) {
                        *slot = typ;
                        r.n_unknown += 1;
                    }
                }
                _ => {}
            }
        }
        Ok(r)
    }

    fn peers(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.peers[..self.n_peers].iter().flatten().copied()
    }
}

/// Why a handler did not produce a success response.
pub(super) enum Fail {
    /// Answer with this error code (signed).
    Code(Code),
    /// 300 (Try Alternate) naming this server (signed), when draining.
    TryAlternate(SocketAddr),
    /// The response did not fit: a bug, dropped and counted.
    Encode,
}

impl From<Code> for Fail {
    fn from(c: Code) -> Fail {
        Fail::Code(c)
    }
}

impl From<EncodeError> for Fail {
    fn from(_: EncodeError) -> Fail {
        Fail::Encode
    }
}

impl Relay {
    pub(super) fn control(
        &mut self,
        now: Now,
        five: FiveTuple,
        pkt: &[u8],
        scratch: &mut [u8],
        sockets: &mut impl RelaySockets,
    ) -> Answer {
        let Ok(msg) = Message::parse(pkt) else {
            self.stats.drop_malformed += 1;
            return Answer::Nothing;
        };
        // RFC 8489 §7.3: a FINGERPRINT that does not match means "not STUN".
        if integrity::check_fingerprint(&msg) == Integrity::Invalid {
            self.stats.drop_malformed += 1;
            return Answer::Nothing;
        }
        let scratch = match scratch.len() {
            n if n >= MAX_REPLY => &mut scratch[..MAX_REPLY],
            _ => scratch,
        };
        match (msg.class(), msg.method()) {
            (Class::Request, Method::Binding) => self.binding(now, five, &msg, scratch),
            (
                Class::Request,
                Method::Allocate
                | Method::Refresh
                | Method::CreatePermission
                | Method::ChannelBind
                | Method::Connect,
            ) => self.authenticated(now, five, &msg, scratch, sockets),
            (Class::Indication, Method::Send) => self.send_indication(now, five, &msg),
            (Class::Request, _) => {
                // RFC 8489 §6.3.1: a request for a method we do not serve gets 400.
                if !self.unauth_allowed(now, five) {
                    return Answer::Nothing;
                }
                let fp = msg.get(attr::FINGERPRINT).is_some();
                self.write(
                    |w| reply::error(w, &msg, Code::BadRequest),
                    None,
                    fp,
                    scratch,
                )
            }
            _ => {
                self.stats.drop_malformed += 1;
                Answer::Nothing
            }
        }
    }

    /// SECURITY.md rule 12: replies to unauthenticated requests are rate-limited per source,
    /// so that a forged source address cannot turn the relay into an amplifier. Over TCP and
    /// TLS the source has completed a handshake, so nothing is reflected, and a request that
    /// is not answered is never sent again (RFC 8489 §6.2.2): a stream's client is always
    /// answered; what bounds it is the per-source connection limit.
    fn unauth_allowed(&mut self, now: Now, five: FiveTuple) -> bool {
        if five.leg.is_stream() {
            return true;
        }
        let ok = self.limiter.allow(five.client.ip(), now.at);
        if !ok {
            self.stats.drop_rate_limited += 1;
        }
        ok
    }

    /// Builds a response with `body`, then SOFTWARE, integrity and FINGERPRINT.
    pub(super) fn write<'b>(
        &mut self,
        body: impl FnOnce(&'b mut [u8]) -> Result<MessageWriter<'b>, EncodeError>,
        signer: Option<&Authenticated<'_>>,
        fingerprint: bool,
        scratch: &'b mut [u8],
    ) -> Answer {
        let result = (|| {
            let mut w = body(scratch)?;
            self.finish(&mut w, signer, fingerprint)?;
            Ok::<usize, EncodeError>(w.finish())
        })();
        match result {
            Ok(n) => Answer::Reply(n),
            Err(_) => {
                self.stats.drop_encode += 1;
                Answer::Nothing
            }
        }
    }

    fn finish(
        &self,
        w: &mut MessageWriter<'_>,
        signer: Option<&Authenticated<'_>>,
        fingerprint: bool,
    ) -> Result<(), EncodeError> {
        if let Some(s) = &self.settings.software {
            w.raw(attr::SOFTWARE, s.as_bytes())?;
        }
        if let Some(signer) = signer {
            signer.sign(w)?;
        }
        if fingerprint {
            w.fingerprint()?;
        }
        Ok(())
    }

    /// Decodes a request's attributes, or answers 400 (malformed
    /// comprehension-required attribute) or 420 with UNKNOWN-ATTRIBUTES
    /// (RFC 8489 §6.3.1.1), signed when the request was authenticated.
    fn decode_or_reject<'a>(
        &mut self,
        msg: &Message<'a>,
        signer: Option<&Authenticated<'_>>,
        scratch: &mut [u8],
    ) -> Result<Request<'a>, Answer> {
        let Ok(req) = Request::decode(msg) else {
            let fp = msg.get(attr::FINGERPRINT).is_some();
            return Err(self.write(
                |b| reply::error(b, msg, Code::BadRequest),
                signer,
                fp,
                scratch,
            ));
        };
        if req.n_unknown > 0 {
            let unknown = &req.unknown[..req.n_unknown];
            return Err(self.write(
                |b| {
                    let mut w = reply::error(b, msg, Code::UnknownAttribute)?;
                    w.unknown_attributes(unknown)?;
                    Ok(w)
                },
                signer,
                req.fingerprint,
                scratch,
            ));
        }
        Ok(req)
    }

    fn binding(
        &mut self,
        now: Now,
        five: FiveTuple,
        msg: &Message<'_>,
        scratch: &mut [u8],
    ) -> Answer {
        if !self.unauth_allowed(now, five) {
            return Answer::Nothing;
        }
        let req = match self.decode_or_reject(msg, None, scratch) {
            Ok(r) => r,
            Err(out) => return out,
        };
        let client = five.client;
        self.write(
            |b| {
                let mut w = reply::start(b, msg, Class::Success)?;
                w.xor_address(attr::XOR_MAPPED_ADDRESS, client)?;
                Ok(w)
            },
            None,
            req.fingerprint,
            scratch,
        )
    }

    fn authenticated(
        &mut self,
        now: Now,
        five: FiveTuple,
        msg: &Message<'_>,
        scratch: &mut [u8],
        sockets: &mut impl RelaySockets,
    ) -> Answer {
        let auth = std::sync::Arc::clone(&self.settings.auth);
        // SECURITY.md rule 1: an expired REST credential is refused on every
        // authenticated request, so that it cannot keep an allocation alive;
        // only a Refresh that deletes the allocation still works with it.
        let check_expiry = !is_deletion(msg);
        let who = match auth.authenticate(
            msg,
            five.client,
            five.leg.transport(),
            now.unix,
            check_expiry,
        ) {
            Ok(who) => who,
            Err(e) => return self.auth_error(now, five, msg, scratch, &auth, e),
        };
        let req = match self.decode_or_reject(msg, Some(&who), scratch) {
            Ok(r) => r,
            Err(out) => return out,
        };
        // Refresh, CreatePermission and ChannelBind move when an allocation's
        // channel routes end: the XDP path's copy follows (offload.rs).
        let routed = match msg.method() {
            Method::Allocate => None,
            _ => self.routes_before(&five, now.at),
        };
        let result = match msg.method() {
            Method::Allocate => self.allocate(now, five, msg, &req, &who, scratch, sockets),
            Method::Refresh => self.refresh(now, five, msg, &req, &who, scratch, sockets),
            Method::CreatePermission => self.create_permission(now, five, msg, &req, &who, scratch),
            Method::ChannelBind => self.channel_bind(now, five, msg, &req, &who, scratch),
            // Answered when the connection is made or fails (tcp.rs).
            Method::Connect => {
                let peers: Vec<SocketAddr> = req.peers().collect();
                let tid = *msg.transaction_id();
                match self.connect(now, five, &peers, req.fingerprint, &tid, &who, sockets) {
                    Ok(()) => return Answer::Nothing,
                    Err(f) => Err(f),
                }
            }
            // Only the methods listed in `control` come here.
            _ => Err(Fail::Code(Code::BadRequest)),
        };
        if let Some(index) = routed {
            self.routes_after(index, now.at);
        }
        match result {
            Ok(n) => Answer::Reply(n),
            Err(Fail::Code(code)) => {
                self.stats
                    .count_error(code.number(), msg.method() == Method::Allocate);
                self.write(
                    |b| reply::error(b, msg, code),
                    Some(&who),
                    req.fingerprint,
                    scratch,
                )
            }
            Err(Fail::TryAlternate(server)) => {
                self.stats.count_error(
                    Code::TryAlternate.number(),
                    msg.method() == Method::Allocate,
                );
                self.write(
                    |b| {
                        let mut w = reply::error(b, msg, Code::TryAlternate)?;
                        w.address(attr::ALTERNATE_SERVER, server)?;
                        Ok(w)
                    },
                    Some(&who),
                    req.fingerprint,
                    scratch,
                )
            }
            Err(Fail::Encode) => {
                self.stats.drop_encode += 1;
                Answer::Nothing
            }
        }
    }

    pub(super) fn auth_error(
        &mut self,
        now: Now,
        five: FiveTuple,
        msg: &Message<'_>,
        scratch: &mut [u8],
        auth: &Authenticator,
        e: AuthError,
    ) -> Answer {
        let (code, challenge) = match e {
            AuthError::Challenge => (Code::Unauthorized, true),
            AuthError::Unauthorized(_) => (Code::Unauthorized, true),
            AuthError::BadRequest(_) => (Code::BadRequest, false),
            AuthError::StaleNonce => (Code::StaleNonce, true),
        };
        if let Some(failure) = e.failure() {
            self.stats.count_auth_failure(failure);
        }
        if !self.unauth_allowed(now, five) {
            return Answer::Nothing;
        }
        let fp = msg.get(attr::FINGERPRINT).is_some();
        let (client, transport, unix) = (five.client, five.leg.transport(), now.unix);
        self.write(
            |b| {
                let mut w = reply::error(b, msg, code)?;
                if challenge {
                    auth.write_challenge(&mut w, client, transport, unix)?;
                }
                Ok(w)
            },
            None,
            fp,
            scratch,
        )
    }

    /// The allocation on this 5-tuple, if it is live; an expired one that
    /// the sweep has not reached yet counts as gone.
    fn live_index(&self, now: Now, five: &FiveTuple) -> Option<u32> {
        let index = self.table.index_of(five)?;
        self.table
            .get(index)
            .filter(|a| now.at < a.expires)
            .map(|_| index)
    }

    /// The allocation a request acts on, checked against the credentials
    /// that made it (RFC 8656 §7.3: 437 without one, 441 for other credentials).
    pub(super) fn owned_allocation(
        &self,
        now: Now,
        five: &FiveTuple,
        who: &Authenticated<'_>,
    ) -> Result<u32, Fail> {
        let index = self.live_index(now, five).ok_or(Code::AllocationMismatch)?;
        match self.table.get(index) {
            Some(a) if a.owner.username() == who.username => Ok(index),
            Some(_) => Err(Code::WrongCredentials.into()),
            None => Err(Code::AllocationMismatch.into()),
        }
    }

    /// RFC 8656 §7.2: max(default, min(requested, maximum)); the default is
    /// itself capped by the configured maximum.
    fn granted_lifetime(&self, requested: Option<u32>) -> Duration {
        let max = self.settings.max_lifetime;
        let default = DEFAULT_LIFETIME.min(max);
        match requested {
            None => default,
            Some(secs) => Duration::from_secs(u64::from(secs)).min(max).max(default),
        }
    }
}

/// A Refresh whose (trusted) LIFETIME is 0: RFC 8656 §7.3, a deletion.
fn is_deletion(msg: &Message<'_>) -> bool {
    msg.method() == Method::Refresh
        && msg
            .attributes()
            .find(|a| a.typ == attr::LIFETIME)
            .and_then(|raw| Attribute::decode(raw, msg.transaction_id()).ok())
            .is_some_and(|a| matches!(a, Attribute::Lifetime(0)))
}

mod methods;
