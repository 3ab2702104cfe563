//! The TURN methods: Allocate, Refresh, CreatePermission, ChannelBind, and
//! Send indications.

use super::*;
use crate::policy::PeerPolicy;
use crate::turn::{Event, Observer, RelayToken, Stats};
use uturn_stun::channel::{CHANNEL_MAX, CHANNEL_MIN};

/// What a relayed address is served by.
#[derive(Copy, Clone)]
enum Kind {
    Udp { dont_fragment: bool },
    Tcp,
}

impl Kind {
    fn new(tcp: bool, dont_fragment: bool) -> Kind {
        if tcp {
            Kind::Tcp
        } else {
            Kind::Udp { dont_fragment }
        }
    }
}

impl Relay {
    /// RFC 8656 §7.2.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn allocate(
        &mut self,
        now: Now,
        five: FiveTuple,
        msg: &Message<'_>,
        req: &Request<'_>,
        who: &Authenticated<'_>,
        scratch: &mut [u8],
        sockets: &mut impl RelaySockets,
    ) -> Result<usize, Fail> {
        if let Some(index) = self.table.index_of(&five) {
            match self.table.get(index) {
                Some(a) if now.at < a.expires => {
                    // A retransmission gets the same answer; anything else on
                    // a live 5-tuple is 437.
                    if a.alloc_tid == *msg.transaction_id() {
                        return self.allocate_success(
                            now,
                            index,
                            msg,
                            who,
                            req.fingerprint,
                            scratch,
                        );
                    }
                    return Err(Code::AllocationMismatch.into());
                }
                _ => {
                    self.delete(index, sockets, "expired");
                    self.stats.allocations_expired += 1;
                }
            }
        }
        if let Admission::Draining { alternate } = self.admission {
            // Draining: no new allocations (retransmissions were answered above).
            return Err(match alternate {
                Some(server) if server.is_ipv4() == five.client.is_ipv4() => {
                    Fail::TryAlternate(server)
                }
                _ => Code::InsufficientCapacity.into(),
            });
        }
        let tcp = match req.transport {
            None => return Err(Code::BadRequest.into()),
            Some(PROTO_UDP) => false,
            Some(PROTO_TCP) => {
                // RFC 6062 §5.1: only on a TCP or TLS control connection,
                // and none of the UDP-only attributes. One family: a peer
                // connection leaves from the one relayed address.
                if !five.leg.is_stream()
                    || req.dont_fragment
                    || req.even_port.is_some()
                    || req.reservation.is_some()
                    || req.additional_family.is_some()
                {
                    return Err(Code::BadRequest.into());
                }
                true
            }
            Some(_) => return Err(Code::UnsupportedTransport.into()),
        };
        // RFC 8656 §7.2: RESERVATION-TOKEN excludes EVEN-PORT and both family attributes.
        if req.reservation.is_some()
            && (req.even_port.is_some()
                || req.requested_family.is_some()
                || req.additional_family.is_some())
        {
            return Err(Code::BadRequest.into());
        }
        // RFC 8656 §7.2: REQUESTED- and ADDITIONAL-ADDRESS-FAMILY together → 400;
        // ADDITIONAL-ADDRESS-FAMILY may only ask for IPv6.
        if req.requested_family.is_some() && req.additional_family.is_some() {
            return Err(Code::BadRequest.into());
        }
        if req.additional_family == Some(AddressFamily::V4) {
            return Err(Code::BadRequest.into());
        }
        let primary = req.requested_family.unwrap_or(AddressFamily::V4);
        let Some(primary_ip) = self.relay_ip(primary) else {
            return Err(Code::AddressFamilyNotSupported.into());
        };
        let reserved = match req.reservation {
            Some(token) => match self
                .reservations
                .iter()
                .position(|r| r.token == *token && now.at < r.expires)
            {
                Some(i) => Some(self.reservations.swap_remove(i).port),
                // RFC 8656 §7.2: an unknown or expired token → 508.
                None => return Err(Code::InsufficientCapacity.into()),
            },
            None => None,
        };
        let release_reserved = |relay: &mut Relay| {
            if let Some(p) = reserved {
                relay.ports.release(p);
            }
        };
        if let Err(e) = self.ledger.acquire(who.quota_id) {
            release_reserved(self);
            self.stats.drop_quota += 1;
            let (code, quota, limit) = match e {
                QuotaExceeded::User => (
                    Code::AllocationQuotaReached,
                    "quotas.allocations_per_user",
                    self.ledger.per_user_limit(),
                ),
                QuotaExceeded::Total => (
                    Code::InsufficientCapacity,
                    "quotas.total_allocations",
                    self.ledger.total_limit(),
                ),
            };
            // A refusal an operator will be asked about: say whose and which.
            self.observer.event(Event::QuotaReached {
                quota_id: who.quota_id,
                client: five.client,
                quota,
                limit,
                code: code.number(),
            });
            return Err(code.into());
        }

        let (index, gen) = self.table.next_slot();
        let token = |fam| crate::turn::allocation::make_token(index, gen, fam);
        let parity = match req.even_port {
            None => Parity::Any,
            Some(false) => Parity::Even,
            Some(true) => Parity::EvenPair,
        };
        let primary_addr = match reserved {
            Some(port) => {
                let addr = SocketAddr::new(primary_ip, port);
                match sockets.bind(addr, token(primary), req.dont_fragment) {
                    Ok(()) => Some(addr),
                    Err(_) => {
                        self.ports.release(port);
                        None
                    }
                }
            }
            None => self.bind_relay(
                primary_ip,
                parity,
                token(primary),
                Kind::new(tcp, req.dont_fragment),
                sockets,
            ),
        };
        let Some(primary_addr) = primary_addr else {
            self.ledger.release(who.quota_id);
            return Err(Code::InsufficientCapacity.into());
        };
        // The reserved port is taken out of the pool before anything else is
        // bound (the second family's socket must not get it).
        let mut reservation = None;
        if parity == Parity::EvenPair {
            let mut t = [0u8; 8];
            // The token names a port someone else could take: make it unguessable.
            if getrandom::getrandom(&mut t).is_ok() {
                let port = primary_addr.port() + 1;
                self.ports.mark(port);
                self.reservations.push(Reservation {
                    token: t,
                    port,
                    expires: now.at + RESERVATION_LIFETIME,
                });
                reservation = Some(t);
            }
        }
        let mut relay_ports = [None, None];
        relay_ports[family_index(primary)] = NonZeroU16::new(primary_addr.port());
        let mut family_error = None;
        if req.additional_family == Some(AddressFamily::V6) {
            // RFC 8656 §7.2: if the second family cannot be had, the
            // allocation still succeeds and ADDRESS-ERROR-CODE says why.
            match self.relay_ip(AddressFamily::V6) {
                None => family_error = Some(Code::AddressFamilyNotSupported),
                Some(ip) => match self.bind_relay(
                    ip,
                    Parity::Any,
                    token(AddressFamily::V6),
                    Kind::new(false, req.dont_fragment),
                    sockets,
                ) {
                    Some(addr) => relay_ports[1] = NonZeroU16::new(addr.port()),
                    None => family_error = Some(Code::InsufficientCapacity),
                },
            }
        }
        let expires = now.at + self.granted_lifetime(req.lifetime);
        let index = self.table.insert(Allocation {
            five,
            relay_ports,
            expires,
            owner: Owner::new(who.username, who.quota_id),
            alloc_tid: *msg.transaction_id(),
            reservation,
            family_error: family_error.map(|c| c.number()),
            perms: Vec::new(),
            channels: Vec::new(),
            tcp: tcp.then(Box::default),
        });
        self.stats.by_transport[five.leg.transport().index()].allocations_created += 1;
        self.observer.event(Event::AllocationCreated {
            user: who.username,
            client: five.client,
            relay: primary_addr,
        });
        self.schedule_sweep(now.at);
        self.allocate_success(now, index, msg, who, req.fingerprint, scratch)
    }

    pub(in crate::turn) fn relay_ip(&self, family: AddressFamily) -> Option<std::net::IpAddr> {
        match family {
            AddressFamily::V4 => self.cfg.relay_v4.map(Into::into),
            AddressFamily::V6 => self.cfg.relay_v6.map(Into::into),
        }
    }

    /// Binds a relay socket (a UDP socket, or a TCP allocation's
    /// listener) on a free port of this shard's slice.
    fn bind_relay(
        &mut self,
        ip: std::net::IpAddr,
        parity: Parity,
        token: RelayToken,
        kind: Kind,
        sockets: &mut impl RelaySockets,
    ) -> Option<SocketAddr> {
        for _ in 0..BIND_ATTEMPTS {
            let port = self.ports.pick(&mut self.rng, parity)?;
            let addr = SocketAddr::new(ip, port);
            let bound = match kind {
                Kind::Udp { dont_fragment } => sockets.bind(addr, token, dont_fragment),
                Kind::Tcp => sockets.listen_tcp(addr, token),
            };
            match bound {
                Ok(()) => {
                    self.ports.mark(port);
                    return Some(addr);
                }
                // Someone outside this shard holds it: try another.
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(_) => {
                    self.stats.relay_bind_errors += 1;
                    return None;
                }
            }
        }
        None
    }

    fn allocate_success(
        &mut self,
        now: Now,
        index: u32,
        msg: &Message<'_>,
        who: &Authenticated<'_>,
        fingerprint: bool,
        scratch: &mut [u8],
    ) -> Result<usize, Fail> {
        let a = self.table.get(index).ok_or(Code::AllocationMismatch)?;
        let lifetime = a.expires.saturating_duration_since(now.at).as_secs() as u32;
        let mut w = reply::start(scratch, msg, Class::Success)?;
        for family in [AddressFamily::V4, AddressFamily::V6] {
            let port = a.relay_ports[family_index(family)];
            if let (Some(ip), Some(port)) = (self.relay_ip(family), port) {
                let relay = SocketAddr::new(ip, port.get());
                w.xor_address(attr::XOR_RELAYED_ADDRESS, relay)?;
            }
        }
        if let Some(code) = a.family_error {
            let phrase = if code == 440 {
                "Address Family not Supported"
            } else {
                "Insufficient Capacity"
            };
            w.address_error_code(AddressFamily::V6, code, phrase)?;
        }
        w.u32(attr::LIFETIME, lifetime)?;
        if let Some(t) = &a.reservation {
            w.raw(attr::RESERVATION_TOKEN, t)?;
        }
        w.xor_address(attr::XOR_MAPPED_ADDRESS, a.five.client)?;
        self.finish(&mut w, Some(who), fingerprint)?;
        Ok(w.finish())
    }

    /// RFC 8656 §7.3 (Refresh): lifetime 0 deletes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn refresh(
        &mut self,
        now: Now,
        five: FiveTuple,
        msg: &Message<'_>,
        req: &Request<'_>,
        who: &Authenticated<'_>,
        scratch: &mut [u8],
        sockets: &mut impl RelaySockets,
    ) -> Result<usize, Fail> {
        let index = self.owned_allocation(now, &five, who)?;
        if let Some(f) = req.requested_family {
            // RFC 8656 §7.3: a family the allocation does not have → 443.
            if self.table.get(index).is_some_and(|a| !a.has_relay(f)) {
                return Err(Code::PeerAddressFamilyMismatch.into());
            }
        }
        let granted = if req.lifetime == Some(0) {
            self.delete(index, sockets, "deleted by the client");
            self.stats.allocations_deleted += 1;
            0
        } else {
            let lifetime = self.granted_lifetime(req.lifetime);
            if let Some(a) = self.table.get_mut(index) {
                a.expires = now.at + lifetime;
            }
            lifetime.as_secs() as u32
        };
        let mut w = reply::start(scratch, msg, Class::Success)?;
        w.u32(attr::LIFETIME, granted)?;
        self.finish(&mut w, Some(who), req.fingerprint)?;
        Ok(w.finish())
    }

    /// Every peer a request names passes here: family first (443), then the
    /// one policy choke point (403). SECURITY.md rule 8.
    /// Refusals by the policy are counted here. An associated function so
    /// that callers can hold `a` (borrowed from the table) at the same time.
    pub(in crate::turn) fn check_peer(
        policy: &PeerPolicy,
        stats: &mut Stats,
        observer: &mut dyn Observer,
        a: &Allocation,
        peer: SocketAddr,
    ) -> Result<(), Code> {
        if !a.has_relay(family_of(&peer)) {
            return Err(Code::PeerAddressFamilyMismatch);
        }
        policy.check(peer).map_err(|why| {
            stats.drop_forbidden_peer += 1;
            observer.event(Event::PeerRefused { peer, why });
            Code::Forbidden
        })
    }

    /// A signed success response with no attributes of its own.
    fn empty_success(
        &self,
        msg: &Message<'_>,
        who: &Authenticated<'_>,
        fingerprint: bool,
        scratch: &mut [u8],
    ) -> Result<usize, Fail> {
        let mut w = reply::start(scratch, msg, Class::Success)?;
        self.finish(&mut w, Some(who), fingerprint)?;
        Ok(w.finish())
    }

    /// RFC 8656 §9.2.
    pub(super) fn create_permission(
        &mut self,
        now: Now,
        five: FiveTuple,
        msg: &Message<'_>,
        req: &Request<'_>,
        who: &Authenticated<'_>,
        scratch: &mut [u8],
    ) -> Result<usize, Fail> {
        let index = self.owned_allocation(now, &five, who)?;
        if req.n_peers == 0 {
            return Err(Code::BadRequest.into());
        }
        if req.too_many_peers {
            self.stats.drop_quota += 1;
            return Err(Code::InsufficientCapacity.into());
        }
        let limit = self.settings.quotas.permissions_per_allocation as usize;
        {
            let a = self.table.get(index).ok_or(Code::AllocationMismatch)?;
            for peer in req.peers() {
                Self::check_peer(
                    &self.settings.policy,
                    &mut self.stats,
                    &mut *self.observer,
                    a,
                    peer,
                )?;
            }
            // All or nothing: refuse before installing any when they would not all fit.
            let live = a.perms.iter().filter(|p| now.at < p.expires).count();
            let new = req
                .peers()
                .enumerate()
                .filter(|(i, p)| {
                    !a.perms.iter().any(|q| q.ip == p.ip() && now.at < q.expires)
                        && !req.peers().take(*i).any(|q| q.ip() == p.ip())
                })
                .count();
            if live + new > limit {
                self.stats.drop_quota += 1;
                return Err(Code::InsufficientCapacity.into());
            }
        }
        if let Some(a) = self.table.get_mut(index) {
            for peer in req.peers[..req.n_peers].iter().flatten() {
                a.permit(peer.ip(), now.at, limit);
            }
        }
        self.empty_success(msg, who, req.fingerprint, scratch)
    }

    /// RFC 8656 §11.2.
    pub(super) fn channel_bind(
        &mut self,
        now: Now,
        five: FiveTuple,
        msg: &Message<'_>,
        req: &Request<'_>,
        who: &Authenticated<'_>,
        scratch: &mut [u8],
    ) -> Result<usize, Fail> {
        let index = self.owned_allocation(now, &five, who)?;
        let number = req.channel.ok_or(Code::BadRequest)?;
        if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&number) || req.n_peers != 1 {
            return Err(Code::BadRequest.into());
        }
        let peer = req.peers().next().ok_or(Code::BadRequest)?;
        if self.table.get(index).is_some_and(|a| a.tcp.is_some()) {
            // RFC 6062 §5.1: a TCP allocation has no channels.
            return Err(Code::BadRequest.into());
        }
        let perm_limit = self.settings.quotas.permissions_per_allocation as usize;
        let chan_limit = self.settings.quotas.channels_per_allocation as usize;
        {
            let a = self.table.get(index).ok_or(Code::AllocationMismatch)?;
            Self::check_peer(
                &self.settings.policy,
                &mut self.stats,
                &mut *self.observer,
                a,
                peer,
            )?;
            // RFC 8656 §11.2: the number must not be bound to another peer, nor
            // the peer to another number — counting bindings that expired
            // less than 5 minutes ago.
            let held = |c: &&Channel| now.at < c.expires + CHANNEL_COOLDOWN;
            if a.channels
                .iter()
                .filter(held)
                .any(|c| (c.number == number) != (c.peer == peer))
            {
                return Err(Code::BadRequest.into());
            }
            let exists = a.channels.iter().filter(held).any(|c| c.number == number);
            if !exists && a.channels.iter().filter(held).count() >= chan_limit {
                self.stats.drop_quota += 1;
                return Err(Code::InsufficientCapacity.into());
            }
            if !a.has_permission(peer.ip(), now.at)
                && a.perms.iter().filter(|p| now.at < p.expires).count() >= perm_limit
            {
                self.stats.drop_quota += 1;
                return Err(Code::InsufficientCapacity.into());
            }
        }
        if let Some(a) = self.table.get_mut(index) {
            a.bind_channel(number, peer, now.at);
            // RFC 8656 §11.2: a binding installs or refreshes the permission too.
            a.permit(peer.ip(), now.at, perm_limit);
        }
        self.empty_success(msg, who, req.fingerprint, scratch)
    }

    /// RFC 8656 §10.2: Send indications are never answered; whatever is
    /// wrong with one drops it.
    pub(super) fn send_indication(
        &mut self,
        now: Now,
        five: FiveTuple,
        msg: &Message<'_>,
    ) -> Answer {
        let Some(index) = self.live_index(now, &five) else {
            self.stats.drop_no_allocation += 1;
            return Answer::Nothing;
        };
        let req = match Request::decode(msg) {
            Ok(r) if r.n_unknown == 0 && r.n_peers == 1 && r.data.is_some() => r,
            _ => {
                self.stats.drop_malformed += 1;
                return Answer::Nothing;
            }
        };
        let (Some(peer), Some(payload)) = (req.peers().next(), req.data.clone()) else {
            self.stats.drop_malformed += 1;
            return Answer::Nothing;
        };
        let Some(a) = self.table.get(index) else {
            self.stats.drop_no_allocation += 1;
            return Answer::Nothing;
        };
        if a.tcp.is_some() {
            // RFC 6062: a TCP allocation relays through its connections only.
            self.stats.drop_malformed += 1;
            return Answer::Nothing;
        }
        match Self::check_peer(
            &self.settings.policy,
            &mut self.stats,
            &mut *self.observer,
            a,
            peer,
        ) {
            Ok(()) => {}
            Err(Code::Forbidden) => return Answer::Nothing,
            Err(_) => {
                self.stats.drop_malformed += 1;
                return Answer::Nothing;
            }
        }
        if !a.has_permission(peer.ip(), now.at) {
            self.stats.drop_no_permission += 1;
            return Answer::Nothing;
        }
        let relay = self.table.token(index, family_of(&peer));
        let t = &mut self.stats.by_transport[five.leg.transport().index()];
        t.to_peer_packets += 1;
        t.to_peer_bytes += payload.len() as u64;
        Answer::ToPeer {
            relay,
            peer,
            payload,
        }
    }
}
