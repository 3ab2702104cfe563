//! The floor's set-up handshake: just enough STUN for a TURN client to get
//! an allocation and a channel (not TURN: no authentication, no 401 round).
//!
//! Requests arrive on the client-facing socket as STUN messages (parsed and
//! written with `uturn_stun`); integrity and fingerprint attributes are
//! ignored and never sent.
//!
//! * **Allocate** → success with XOR-RELAYED-ADDRESS (a new UDP socket bound
//!   on `--relay-ip`:0, owned by this client; like uturn's relay sockets it
//!   sends IPv4 with DF clear), XOR-MAPPED-ADDRESS (the
//!   client's source address) and LIFETIME 600. A repeated Allocate from the
//!   same client gets the same relayed address again. 508 when the socket
//!   cannot be created, 486 past `--max-allocations`.
//! * **ChannelBind** (CHANNEL-NUMBER + XOR-PEER-ADDRESS) → success; records
//!   channel → peer for that client and peer → channel on its relay socket
//!   (a re-bind replaces either mapping). 400 without the two attributes or
//!   with a channel number outside 0x4000–0x4FFF, 437 without an allocation.
//! * **CreatePermission** → success (nothing recorded).
//! * **Refresh** → success with LIFETIME echoed (600 when absent); LIFETIME 0
//!   deletes the allocation: its channels are forgotten and its relay socket
//!   closed.
//! * **Binding** → success with XOR-MAPPED-ADDRESS (handy as a liveness probe).
//! * Anything else (indications, responses, other methods, non-STUN,
//!   non-ChannelData) is dropped.

use std::net::SocketAddr;
use std::os::fd::AsFd;

use uturn_io::socket;
use uturn_stun::{attr, Class, Message, MessageWriter, Method, TransactionId};

use super::{Allocation, Floor, Route};

/// LIFETIME granted by Allocate (seconds; never enforced).
const LIFETIME: u32 = 600;

impl Floor {
    /// Answers set-up request `i` from `client`; returns the reply length.
    pub(super) fn handle_stun(&mut self, i: usize, client: SocketAddr) -> Option<usize> {
        let (_, pkt) = self.batch.datagram(i)?;
        let Ok(msg) = Message::parse(pkt) else {
            self.report.dropped_other += 1;
            return None;
        };
        if msg.class() != Class::Request {
            self.report.dropped_other += 1;
            return None;
        }
        self.report.stun_requests += 1;
        let method = msg.method();
        let tid: TransactionId = *msg.transaction_id();
        // Everything needed from the request, read before the batch is borrowed again.
        let lifetime = msg
            .get(attr::LIFETIME)
            .and_then(|a| <[u8; 4]>::try_from(a.value).ok())
            .map(u32::from_be_bytes);
        let channel = msg
            .get(attr::CHANNEL_NUMBER)
            .and_then(|a| a.value.get(..2))
            .map(|v| u16::from_be_bytes([v[0], v[1]]));
        let peer = msg
            .get(attr::XOR_PEER_ADDRESS)
            .and_then(|a| attr::decode_xor_address(a.value, &tid).ok());
        let outcome = match method {
            Method::Binding => Outcome::Binding,
            Method::Allocate => self.allocate(client),
            Method::ChannelBind => self.channel_bind(client, channel, peer),
            Method::CreatePermission => Outcome::Ok,
            Method::Refresh => {
                let l = lifetime.unwrap_or(LIFETIME);
                if l == 0 {
                    self.delete(client);
                }
                Outcome::Refreshed(l)
            }
            _ => {
                self.report.dropped_other += 1;
                return None;
            }
        };
        let (_, _, reply) = self.batch.datagram_and_reply(i)?;
        write_reply(reply, method, &tid, client, outcome)
    }

    fn allocate(&mut self, client: SocketAddr) -> Outcome {
        if let Some(&idx) = self.by_client.get(&client) {
            if let Some(Some(a)) = self.allocations.get(idx) {
                if let Ok(addr) = a.sock.local_addr() {
                    return Outcome::Allocated(addr);
                }
            }
        }
        if self.by_client.len() >= self.max_allocations {
            return Outcome::Error(486, "Allocation Quota Reached");
        }
        // Made as uturn makes its relay sockets: non-blocking, IPv4 with DF
        // clear (no DONT-FRAGMENT), IPv6 only for an IPv6 address.
        let sock = match socket::udp_relay(SocketAddr::new(self.relay_ip, 0), false) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("floor: cannot create a relay socket: {e}");
                return Outcome::Error(508, "Insufficient Capacity");
            }
        };
        let Ok(addr) = sock.local_addr() else {
            return Outcome::Error(508, "Insufficient Capacity");
        };
        let idx = self.free.pop().unwrap_or(self.allocations.len());
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        let key = (u64::from(generation) << 32) | idx as u64;
        if let Err(e) = self.poller.add(sock.as_fd(), key) {
            eprintln!("floor: epoll add failed: {e}");
            if idx < self.allocations.len() {
                self.free.push(idx);
            }
            return Outcome::Error(508, "Insufficient Capacity");
        }
        let a = Allocation {
            sock,
            generation,
            client,
            peers: Vec::with_capacity(1),
        };
        if idx == self.allocations.len() {
            self.allocations.push(Some(a));
        } else {
            self.allocations[idx] = Some(a);
        }
        self.by_client.insert(client, idx);
        self.report.allocations_created += 1;
        Outcome::Allocated(addr)
    }

    fn channel_bind(
        &mut self,
        client: SocketAddr,
        channel: Option<u16>,
        peer: Option<SocketAddr>,
    ) -> Outcome {
        let (Some(number), Some(peer)) = (channel, peer) else {
            return Outcome::Error(400, "Bad Request");
        };
        if !(0x4000..=0x4FFF).contains(&number) {
            return Outcome::Error(400, "Bad Request");
        }
        let Some(&alloc) = self.by_client.get(&client) else {
            return Outcome::Error(437, "Allocation Mismatch");
        };
        let Some(Some(a)) = self.allocations.get_mut(alloc) else {
            return Outcome::Error(437, "Allocation Mismatch");
        };
        // A re-bind replaces the old mapping in either direction.
        let mut removed = Vec::new();
        a.peers.retain(|&(p, n)| {
            let keep = p != peer && n != number;
            if !keep {
                removed.push(n);
            }
            keep
        });
        a.peers.push((peer, number));
        for n in removed {
            self.channels.remove(&(client, n));
        }
        self.channels
            .insert((client, number), Route { alloc, peer });
        self.report.channels_bound += 1;
        Outcome::Ok
    }

    fn delete(&mut self, client: SocketAddr) {
        let Some(idx) = self.by_client.remove(&client) else {
            return;
        };
        let Some(a) = self.allocations.get_mut(idx).and_then(Option::take) else {
            return;
        };
        for &(_, n) in &a.peers {
            self.channels.remove(&(client, n));
        }
        if let Err(e) = self.poller.delete(a.sock.as_fd()) {
            eprintln!("floor: epoll delete failed: {e}");
        }
        self.closing.push(a.sock);
        self.free.push(idx);
    }
}

/// What a set-up request gets back.
#[derive(Copy, Clone, Debug)]
enum Outcome {
    Ok,
    Binding,
    Allocated(SocketAddr),
    Refreshed(u32),
    Error(u16, &'static str),
}

/// Writes the response to a `method` request into `buf`; returns its length.
fn write_reply(
    buf: &mut [u8],
    method: Method,
    tid: &TransactionId,
    client: SocketAddr,
    outcome: Outcome,
) -> Option<usize> {
    let class = match outcome {
        Outcome::Error(..) => Class::Error,
        _ => Class::Success,
    };
    let mut w = MessageWriter::new(buf, method, class, tid).ok()?;
    match outcome {
        Outcome::Ok => {}
        Outcome::Binding => w.xor_address(attr::XOR_MAPPED_ADDRESS, client).ok()?,
        Outcome::Allocated(relayed) => {
            w.xor_address(attr::XOR_RELAYED_ADDRESS, relayed).ok()?;
            w.xor_address(attr::XOR_MAPPED_ADDRESS, client).ok()?;
            w.u32(attr::LIFETIME, LIFETIME).ok()?;
        }
        Outcome::Refreshed(l) => w.u32(attr::LIFETIME, l).ok()?,
        Outcome::Error(code, reason) => w.error_code(code, reason).ok()?,
    }
    Some(w.finish())
}
