//! A TURN client over UDP (RFC 8656), built for running many flows at once.
//!
//! A [`TurnFlow`] is one client: its own UDP socket (connected to the
//! server), its credentials and the state of its current request. The
//! [`Engine`] drives any number of flows from one thread: it watches their
//! sockets with epoll, matches responses to requests by transaction id,
//! retransmits every 500 ms (5 sends at most), answers 401 with the
//! long-term credential round (RFC 8489 §9.2) and 438 with the fresh nonce,
//! and moves each flow through a plan of steps — Allocate, CreatePermission,
//! ChannelBind, Refresh with LIFETIME 0 (delete).
//!
//! Requests are authenticated with MESSAGE-INTEGRITY and the MD5 key
//! (MD5(username:realm:password)); neither PASSWORD-ALGORITHM attribute is
//! sent, which RFC 8489 §9.2.4 treats as MD5 whatever the server offers.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use uturn::stun::{
    attr, channel::CHANNEL_MIN, Attribute, ChannelData, Class, Message, MessageWriter, Method,
};

use crate::creds::{key_md5, Auth};
use crate::stats::Rng;
use crate::sys::Epoll;

/// Retransmission interval of a request without an answer.
pub const RTO: Duration = Duration::from_millis(500);
/// Sends of one request before it counts as timed out.
pub const MAX_TRIES: u32 = 5;
/// 438 (stale nonce) answers tolerated for one request.
const MAX_STALE: u32 = 3;
/// REQUESTED-TRANSPORT value for UDP.
const UDP: u8 = 17;
/// epoll tokens at or above this are the caller's own descriptors.
pub const EXTRA_TOKEN: u64 = 1 << 62;
/// Datagrams read from one ready socket per turn.
const READS_PER_TURN: usize = 64;

/// One step of a flow's plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// Allocate (REQUESTED-TRANSPORT UDP), answering the 401 if challenged.
    Allocate,
    /// CreatePermission for the flow's peer.
    Permission,
    /// ChannelBind of the flow's channel number to its peer.
    Bind,
    /// Refresh with LIFETIME 0: the allocation is deleted.
    Delete,
}

impl Step {
    fn method(self) -> Method {
        match self {
            Step::Allocate => Method::Allocate,
            Step::Permission => Method::CreatePermission,
            Step::Bind => Method::ChannelBind,
            Step::Delete => Method::Refresh,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Step::Allocate => "Allocate",
            Step::Permission => "CreatePermission",
            Step::Bind => "ChannelBind",
            Step::Delete => "Refresh(0)",
        }
    }
}

/// The usual set-up: Allocate, CreatePermission and, for ChannelData,
/// ChannelBind.
pub fn setup_plan(channel: bool) -> &'static [Step] {
    if channel {
        &[Step::Allocate, Step::Permission, Step::Bind]
    } else {
        &[Step::Allocate, Step::Permission]
    }
}

/// Why a flow stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowError {
    /// The server answered with this STUN error code.
    Code(u16, Step),
    /// No answer after [`MAX_TRIES`] sends.
    Timeout(Step),
    /// A socket error.
    Io(String),
    /// An answer that makes no sense (e.g. no XOR-RELAYED-ADDRESS).
    Protocol(&'static str),
}

impl FlowError {
    /// The STUN error code, if the server sent one.
    pub fn code(&self) -> Option<u16> {
        match self {
            FlowError::Code(c, _) => Some(*c),
            _ => None,
        }
    }
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlowError::Code(c, s) => write!(f, "{} answered with error {c}", s.name()),
            FlowError::Timeout(s) => write!(f, "{} timed out ({MAX_TRIES} sends)", s.name()),
            FlowError::Io(e) => write!(f, "socket error: {e}"),
            FlowError::Protocol(e) => write!(f, "protocol error: {e}"),
        }
    }
}

/// A request waiting for its answer.
struct Tx {
    tid: [u8; 12],
    bytes: Vec<u8>,
    step: Step,
    tries: u32,
    serial: u64,
}

/// One TURN client.
pub struct TurnFlow {
    /// Client number: names the REST user and picks the channel number.
    pub index: u64,
    /// The client's socket, connected to the server.
    pub sock: UdpSocket,
    /// The peer its permission and channel are for.
    pub peer: SocketAddr,
    /// Channel number 0x4000 + (index mod 4096).
    pub channel: u16,
    /// XOR-RELAYED-ADDRESS from the Allocate answer.
    pub relayed: Option<SocketAddr>,
    /// When the current plan was started and when it finished.
    pub started: Option<Instant>,
    pub finished: Option<Instant>,
    /// Why the flow failed, if it did.
    pub error: Option<FlowError>,
    creds: Option<(String, String)>,
    realm_override: Option<Vec<u8>>,
    realm: Option<Vec<u8>>,
    nonce: Option<Vec<u8>>,
    key: Option<[u8; 16]>,
    plan: Vec<Step>,
    pos: usize,
    tx: Option<Tx>,
    stale: u32,
}

impl TurnFlow {
    /// A client numbered `index` on `sock` (connected to the server), with
    /// the credentials `auth` gives it; `realm` overrides the server's.
    pub fn new(
        index: u64,
        sock: UdpSocket,
        peer: SocketAddr,
        auth: &Auth,
        realm: Option<&str>,
    ) -> TurnFlow {
        TurnFlow {
            index,
            sock,
            peer,
            channel: CHANNEL_MIN + (index % 4096) as u16,
            relayed: None,
            started: None,
            finished: None,
            error: None,
            creds: auth.for_client(index),
            realm_override: realm.map(|r| r.as_bytes().to_vec()),
            realm: None,
            nonce: None,
            key: None,
            plan: Vec::new(),
            pos: 0,
            tx: None,
            stale: 0,
        }
    }

    /// The request for `step`, with credentials once the 401 round is done.
    fn build(&self, step: Step, tid: &[u8; 12]) -> Result<Vec<u8>, FlowError> {
        let enc = |_| FlowError::Protocol("request does not fit");
        let mut buf = vec![0u8; 1024];
        let mut w =
            MessageWriter::new(&mut buf, step.method(), Class::Request, tid).map_err(enc)?;
        match step {
            Step::Allocate => w.attr(&Attribute::RequestedTransport(UDP)).map_err(enc)?,
            Step::Permission => w
                .xor_address(attr::XOR_PEER_ADDRESS, self.peer)
                .map_err(enc)?,
            Step::Bind => {
                w.attr(&Attribute::ChannelNumber(self.channel))
                    .map_err(enc)?;
                w.xor_address(attr::XOR_PEER_ADDRESS, self.peer)
                    .map_err(enc)?;
            }
            Step::Delete => w.u32(attr::LIFETIME, 0).map_err(enc)?,
        }
        if let (Some(key), Some((user, _)), Some(realm), Some(nonce)) =
            (&self.key, &self.creds, &self.realm, &self.nonce)
        {
            w.raw(attr::USERNAME, user.as_bytes()).map_err(enc)?;
            w.raw(attr::REALM, realm).map_err(enc)?;
            w.raw(attr::NONCE, nonce).map_err(enc)?;
            w.message_integrity(key).map_err(enc)?;
        }
        let n = w.finish();
        buf.truncate(n);
        Ok(buf)
    }

    /// Takes REALM and NONCE from a 401/438 and derives the key.
    fn learn(&mut self, msg: &Message<'_>) -> bool {
        if let Some(n) = msg.get(attr::NONCE) {
            self.nonce = Some(n.value.to_vec());
        }
        let realm = self
            .realm_override
            .clone()
            .or_else(|| msg.get(attr::REALM).map(|r| r.value.to_vec()))
            .or_else(|| self.realm.clone());
        let (Some(realm), Some((user, password)), true) =
            (realm, &self.creds, self.nonce.is_some())
        else {
            return false;
        };
        self.key = Some(key_md5(user, &realm, password));
        self.realm = Some(realm);
        true
    }
}

/// What the engine reports to its caller.
#[derive(Debug)]
pub enum Event {
    /// The flow in this slot completed its plan.
    Finished(usize),
    /// The flow in this slot failed (see its `error`).
    Failed(usize),
    /// Data for a flow: the payload of a ChannelData message or Data
    /// indication (only with [`Engine::keep_data`]).
    Data(usize, Vec<u8>),
    /// One of the caller's own descriptors (token ≥ [`EXTRA_TOKEN`]) is readable.
    Extra(u64),
}

/// Counters of the engine's transactions.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct EngineStats {
    pub requests: u64,
    pub retransmits: u64,
    pub challenges_401: u64,
    pub stale_nonce_438: u64,
}

/// Drives many [`TurnFlow`]s from one thread.
pub struct Engine {
    ep: Epoll,
    slots: Vec<Option<TurnFlow>>,
    free: Vec<usize>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    pending: Vec<Event>,
    ready: Vec<u64>,
    rbuf: Vec<u8>,
    rng: Rng,
    serial: u64,
    in_flight: usize,
    /// Hand ChannelData/Data payloads to the caller as [`Event::Data`].
    pub keep_data: bool,
    pub stats: EngineStats,
}

impl Engine {
    pub fn new() -> io::Result<Engine> {
        Ok(Engine {
            ep: Epoll::new(1024)?,
            slots: Vec::new(),
            free: Vec::new(),
            timers: BinaryHeap::new(),
            pending: Vec::new(),
            ready: Vec::new(),
            rbuf: vec![0; 65_536],
            rng: Rng::new(0x7475_726e),
            serial: 0,
            in_flight: 0,
            keep_data: false,
            stats: EngineStats::default(),
        })
    }

    /// Adds a flow (its socket must be non-blocking); returns its slot.
    pub fn insert(&mut self, flow: TurnFlow) -> io::Result<usize> {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.ep.add(flow.sock.as_raw_fd(), slot as u64)?;
        self.slots[slot] = Some(flow);
        Ok(slot)
    }

    /// Takes a flow out (any request in flight is abandoned).
    pub fn remove(&mut self, slot: usize) -> Option<TurnFlow> {
        let mut flow = self.slots.get_mut(slot)?.take()?;
        let _ = self.ep.remove(flow.sock.as_raw_fd());
        if flow.tx.take().is_some() {
            self.in_flight -= 1;
        }
        self.free.push(slot);
        Some(flow)
    }

    /// Watches one of the caller's descriptors; readiness comes back as
    /// [`Event::Extra`]`(token)`, token ≥ [`EXTRA_TOKEN`].
    pub fn watch(&self, fd: std::os::fd::RawFd, token: u64) -> io::Result<()> {
        debug_assert!(token >= EXTRA_TOKEN);
        self.ep.add(fd, token)
    }

    pub fn flow(&self, slot: usize) -> Option<&TurnFlow> {
        self.slots.get(slot)?.as_ref()
    }

    /// Flows with a request in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Starts `plan` for the flow in `slot`: sends its first request now.
    /// A failure to send comes back as an [`Event::Failed`] from `poll`.
    pub fn start(&mut self, slot: usize, plan: &[Step]) {
        let Some(Some(flow)) = self.slots.get_mut(slot) else {
            return;
        };
        if flow.tx.take().is_some() {
            self.in_flight -= 1;
        }
        flow.plan = plan.to_vec();
        flow.pos = 0;
        flow.error = None;
        flow.started = Some(Instant::now());
        flow.finished = None;
        if plan.is_empty() {
            flow.finished = flow.started;
            self.pending.push(Event::Finished(slot));
            return;
        }
        self.send_step(slot, plan[0]);
    }

    /// Sends a new request for `step` (fresh transaction id, tries reset).
    fn send_step(&mut self, slot: usize, step: Step) {
        let tid = self.rng.tid();
        let Some(Some(flow)) = self.slots.get_mut(slot) else {
            return;
        };
        let bytes = match flow.build(step, &tid) {
            Ok(b) => b,
            Err(e) => {
                self.fail(slot, e);
                return;
            }
        };
        self.serial += 1;
        let serial = self.serial;
        if flow.tx.is_none() {
            self.in_flight += 1;
        }
        flow.tx = Some(Tx {
            tid,
            bytes,
            step,
            tries: 0,
            serial,
        });
        self.transmit(slot);
    }

    /// (Re)sends the flow's current request and arms its timer.
    fn transmit(&mut self, slot: usize) {
        let Some(Some(flow)) = self.slots.get_mut(slot) else {
            return;
        };
        let Some(tx) = flow.tx.as_mut() else {
            return;
        };
        tx.tries += 1;
        if tx.tries > 1 {
            self.stats.retransmits += 1;
        }
        self.stats.requests += 1;
        let serial = tx.serial;
        match flow.sock.send(&tx.bytes) {
            Ok(_) => {}
            // Lost like any datagram: the timer sends it again.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                self.fail(slot, FlowError::Io(e.to_string()));
                return;
            }
        }
        self.timers
            .push(Reverse((Instant::now() + RTO, slot, serial)));
    }

    fn fail(&mut self, slot: usize, e: FlowError) {
        if let Some(Some(flow)) = self.slots.get_mut(slot) {
            if flow.tx.take().is_some() {
                self.in_flight -= 1;
            }
            flow.error = Some(e);
            flow.finished = Some(Instant::now());
            self.pending.push(Event::Failed(slot));
        }
    }

    /// Waits up to `max_wait` for answers and timers; appends what happened
    /// to `events`.
    pub fn poll(&mut self, max_wait: Duration, events: &mut Vec<Event>) -> io::Result<()> {
        self.fire_timers();
        if !self.pending.is_empty() {
            events.append(&mut self.pending);
            return Ok(());
        }
        let now = Instant::now();
        let mut wait = max_wait;
        if let Some(Reverse((t, _, _))) = self.timers.peek() {
            wait = wait.min(t.saturating_duration_since(now));
        }
        // Round up so a timer due in 0.3 ms does not spin.
        let ms = wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        self.ready.clear();
        self.ready.extend(self.ep.wait(ms)?);
        let ready = std::mem::take(&mut self.ready);
        for &token in &ready {
            if token >= EXTRA_TOKEN {
                events.push(Event::Extra(token));
            } else {
                self.read_flow(token as usize);
            }
        }
        self.ready = ready;
        self.fire_timers();
        events.append(&mut self.pending);
        Ok(())
    }

    /// Retransmits or times out every request whose timer is due.
    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((t, slot, serial))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(Some(flow)) = self.slots.get(slot) else {
                continue;
            };
            let Some(tx) = flow.tx.as_ref() else {
                continue;
            };
            if tx.serial != serial {
                continue;
            }
            if tx.tries >= MAX_TRIES {
                let step = tx.step;
                self.fail(slot, FlowError::Timeout(step));
            } else {
                self.transmit(slot);
            }
        }
    }

    /// Reads what is queued on a flow's socket.
    fn read_flow(&mut self, slot: usize) {
        for _ in 0..READS_PER_TURN {
            let Some(Some(flow)) = self.slots.get(slot) else {
                return;
            };
            let n = match flow.sock.recv(&mut self.rbuf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // ICMP port unreachable from an earlier send: keep waiting,
                // the retransmission timer decides.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.fail(slot, FlowError::Io(e.to_string()));
                    return;
                }
            };
            let buf = std::mem::take(&mut self.rbuf);
            let response = self.on_datagram(slot, &buf[..n]);
            self.rbuf = buf;
            // One request is in flight per flow, so after its answer the
            // queue is almost always empty: skip the read that would only
            // say so (level-triggered epoll reports anything left).
            if response {
                return;
            }
        }
    }

    /// Handles one datagram; true if it was a STUN response.
    fn on_datagram(&mut self, slot: usize, d: &[u8]) -> bool {
        if let Some(&b) = d.first() {
            if (0x40..=0x4F).contains(&b) {
                if self.keep_data {
                    if let Ok(cd) = ChannelData::parse(d) {
                        self.pending.push(Event::Data(slot, cd.payload.to_vec()));
                    }
                }
                return false;
            }
        }
        let Ok(msg) = Message::parse(d) else {
            return false;
        };
        match msg.class() {
            Class::Indication => {
                if self.keep_data && msg.method() == Method::Data {
                    if let Some(data) = msg.get(attr::DATA) {
                        self.pending.push(Event::Data(slot, data.value.to_vec()));
                    }
                }
            }
            Class::Success | Class::Error => {
                self.on_response(slot, &msg);
                return true;
            }
            Class::Request => {}
        }
        false
    }

    fn on_response(&mut self, slot: usize, msg: &Message<'_>) {
        let Some(Some(flow)) = self.slots.get_mut(slot) else {
            return;
        };
        let Some(tx) = flow.tx.as_ref() else {
            return;
        };
        if msg.transaction_id() != &tx.tid || msg.method() != tx.step.method() {
            return;
        }
        let step = tx.step;
        if msg.class() == Class::Success {
            if step == Step::Allocate {
                let relayed = msg
                    .get(attr::XOR_RELAYED_ADDRESS)
                    .and_then(|a| attr::decode_xor_address(a.value, msg.transaction_id()).ok());
                match relayed {
                    Some(a) => flow.relayed = Some(a),
                    None => {
                        self.fail(slot, FlowError::Protocol("no XOR-RELAYED-ADDRESS"));
                        return;
                    }
                }
            }
            flow.tx = None;
            self.in_flight -= 1;
            flow.pos += 1;
            flow.stale = 0;
            match flow.plan.get(flow.pos).copied() {
                Some(next) => self.send_step(slot, next),
                None => {
                    flow.finished = Some(Instant::now());
                    self.pending.push(Event::Finished(slot));
                }
            }
            return;
        }
        let code = msg
            .get(attr::ERROR_CODE)
            .and_then(|a| match Attribute::decode(a, msg.transaction_id()) {
                Ok(Attribute::ErrorCode { code, .. }) => Some(code),
                _ => None,
            })
            .unwrap_or(0);
        match code {
            // RFC 8489 §9.2.3: the first answer to a request without
            // credentials is a 401 with REALM and NONCE.
            401 if flow.key.is_none() && flow.creds.is_some() => {
                self.stats.challenges_401 += 1;
                if flow.learn(msg) {
                    self.send_step(slot, step);
                } else {
                    self.fail(slot, FlowError::Protocol("401 without REALM/NONCE"));
                }
            }
            // RFC 8489 §9.2.5: stale nonce — retry with the new one.
            438 if flow.creds.is_some() && flow.stale < MAX_STALE => {
                self.stats.stale_nonce_438 += 1;
                flow.stale += 1;
                flow.learn(msg);
                self.send_step(slot, step);
            }
            // Deleting an allocation that is already gone.
            437 if step == Step::Delete => {
                flow.tx = None;
                self.in_flight -= 1;
                flow.finished = Some(Instant::now());
                self.pending.push(Event::Finished(slot));
            }
            _ => self.fail(slot, FlowError::Code(code, step)),
        }
    }
}

/// Runs `plan` on every flow in `slots`, at most `concurrency` at once,
/// until all are done or `deadline`. Returns the slots that failed (the
/// flows keep their `error`); flows still running at the deadline are
/// failed with a timeout.
pub fn run_plan(
    engine: &mut Engine,
    slots: &[usize],
    plan: &[Step],
    concurrency: usize,
    deadline: Instant,
    mut progress: impl FnMut(usize),
) -> io::Result<Vec<usize>> {
    let mut next = 0;
    let mut running = 0;
    let mut done = 0;
    let mut failed = Vec::new();
    let mut events = Vec::new();
    while done < slots.len() {
        while running < concurrency.max(1) && next < slots.len() {
            engine.start(slots[next], plan);
            next += 1;
            running += 1;
        }
        if Instant::now() >= deadline {
            for &s in &slots[..next] {
                if engine.flow(s).is_some_and(|f| f.tx.is_some()) {
                    let step = engine
                        .flow(s)
                        .and_then(|f| f.tx.as_ref().map(|t| t.step))
                        .unwrap_or(Step::Allocate);
                    engine.fail(s, FlowError::Timeout(step));
                }
            }
            for &s in &slots[next..] {
                engine.fail(
                    s,
                    FlowError::Timeout(plan.first().copied().unwrap_or(Step::Allocate)),
                );
            }
            engine.pending.clear();
            failed.extend(
                slots
                    .iter()
                    .copied()
                    .filter(|&s| engine.flow(s).is_some_and(|f| f.error.is_some())),
            );
            failed.sort_unstable();
            failed.dedup();
            return Ok(failed);
        }
        events.clear();
        engine.poll(Duration::from_millis(50), &mut events)?;
        for ev in events.drain(..) {
            match ev {
                Event::Finished(_) => {
                    running -= 1;
                    done += 1;
                }
                Event::Failed(s) => {
                    running -= 1;
                    done += 1;
                    failed.push(s);
                }
                Event::Data(..) | Event::Extra(_) => {}
            }
        }
        progress(done);
    }
    Ok(failed)
}

/// The loopback address of `server`'s family, port 0.
pub fn loopback_for(server: &SocketAddr) -> SocketAddr {
    match server {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0),
    }
}

/// The source address of client `index` when clients are spread over
/// `spread` loopback addresses counted up from 127.0.0.1 (0: one address
/// per client). IPv6 has only ::1.
pub fn client_addr(server: &SocketAddr, index: u64, spread: usize) -> SocketAddr {
    // 127.0.0.1 up to 127.255.255.254.
    const V4_ADDRS: u64 = (1 << 24) - 2;
    match server {
        SocketAddr::V4(_) => {
            let n = if spread == 0 {
                V4_ADDRS
            } else {
                (spread as u64).min(V4_ADDRS)
            };
            let ip = 0x7F00_0001u32 + (index % n) as u32;
            SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), 0)
        }
        SocketAddr::V6(_) => loopback_for(server),
    }
}

/// A non-blocking UDP socket bound to `bind`, connected to `connect` if
/// given, with receive and send buffers of about `buf_bytes`.
pub fn udp_socket(
    bind: SocketAddr,
    connect: Option<SocketAddr>,
    buf_bytes: usize,
) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps these at net.core.rmem_max / wmem_max.
    let _ = s.set_recv_buffer_size(buf_bytes);
    let _ = s.set_send_buffer_size(buf_bytes);
    s.bind(&bind.into())?;
    if let Some(c) = connect {
        s.connect(&c.into())?;
    }
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Refuses anything but loopback addresses: the generator only ever talks
/// to servers on this machine.
pub fn require_loopback(what: &str, ip: IpAddr) -> anyhow::Result<()> {
    if ip.is_loopback() {
        Ok(())
    } else {
        anyhow::bail!(
            "{what} {ip} is not a loopback address: uturn-loadgen only sends to 127.0.0.0/8 or ::1"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-flow exchange against a scripted server thread: 401, then
    /// success for every request; checks the credentials it receives.
    #[test]
    fn allocate_with_401_round_then_bind_and_delete() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let saddr = server.local_addr().unwrap();
        let relayed: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let t = std::thread::spawn(move || {
            server
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut buf = [0u8; 1500];
            let mut seen = Vec::new();
            for _ in 0..5 {
                let (n, from) = server.recv_from(&mut buf).unwrap();
                let m = Message::parse(&buf[..n]).unwrap();
                let tid = *m.transaction_id();
                let mut out = [0u8; 512];
                let authed = m.get(attr::MESSAGE_INTEGRITY).is_some();
                let w = if !authed {
                    let mut w =
                        MessageWriter::new(&mut out, m.method(), Class::Error, &tid).unwrap();
                    w.error_code(401, "Unauthorized").unwrap();
                    w.raw(attr::REALM, b"r").unwrap();
                    w.raw(attr::NONCE, b"n").unwrap();
                    w
                } else {
                    let key = key_md5("u", b"r", "p");
                    assert_eq!(
                        uturn::stun::integrity::check_sha1(&m, &key),
                        uturn::stun::integrity::Integrity::Valid
                    );
                    let mut w =
                        MessageWriter::new(&mut out, m.method(), Class::Success, &tid).unwrap();
                    if m.method() == Method::Allocate {
                        w.xor_address(attr::XOR_RELAYED_ADDRESS, relayed).unwrap();
                    }
                    w
                };
                seen.push((m.method(), authed));
                let len = w.finish();
                server.send_to(&out[..len], from).unwrap();
            }
            seen
        });
        let sock = udp_socket(loopback_for(&saddr), Some(saddr), 1 << 16).unwrap();
        let auth = Auth::Static {
            user: "u".into(),
            password: "p".into(),
        };
        let mut e = Engine::new().unwrap();
        let slot = e
            .insert(TurnFlow::new(
                0,
                sock,
                "127.0.0.1:9".parse().unwrap(),
                &auth,
                None,
            ))
            .unwrap();
        let failed = run_plan(
            &mut e,
            &[slot],
            &[Step::Allocate, Step::Permission, Step::Bind, Step::Delete],
            1,
            Instant::now() + Duration::from_secs(5),
            |_| {},
        )
        .unwrap();
        assert!(failed.is_empty(), "{:?}", e.flow(slot).unwrap().error);
        assert_eq!(e.flow(slot).unwrap().relayed, Some(relayed));
        assert_eq!(e.flow(slot).unwrap().channel, 0x4000);
        let seen = t.join().unwrap();
        assert_eq!(
            seen,
            vec![
                (Method::Allocate, false),
                (Method::Allocate, true),
                (Method::CreatePermission, true),
                (Method::ChannelBind, true),
                (Method::Refresh, true),
            ]
        );
        assert_eq!(e.stats.challenges_401, 1);
        assert_eq!(e.in_flight(), 0);
    }

    #[test]
    fn client_addresses() {
        let s: SocketAddr = "127.0.0.1:3478".parse().unwrap();
        assert_eq!(client_addr(&s, 0, 0).to_string(), "127.0.0.1:0");
        assert_eq!(client_addr(&s, 255, 0).to_string(), "127.0.1.0:0");
        assert_eq!(client_addr(&s, 5, 1).to_string(), "127.0.0.1:0");
        assert_eq!(client_addr(&s, 5, 4).to_string(), "127.0.0.2:0");
        let s6: SocketAddr = "[::1]:3478".parse().unwrap();
        assert_eq!(client_addr(&s6, 9, 0).to_string(), "[::1]:0");
        // Every spread address can really be bound on Linux loopback.
        UdpSocket::bind(client_addr(&s, 70_000, 0)).unwrap();
    }

    /// 401, then 438 with a fresh nonce for the first authenticated
    /// request, then success: the client retries with the new nonce.
    #[test]
    fn stale_nonce_is_retried_with_the_new_one() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let saddr = server.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            server
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut buf = [0u8; 1500];
            let mut nonces = Vec::new();
            for round in 0..3 {
                let (n, from) = server.recv_from(&mut buf).unwrap();
                let m = Message::parse(&buf[..n]).unwrap();
                let tid = *m.transaction_id();
                nonces.push(m.get(attr::NONCE).map(|a| a.value.to_vec()));
                let mut out = [0u8; 512];
                let w = match round {
                    0 | 1 => {
                        let mut w =
                            MessageWriter::new(&mut out, m.method(), Class::Error, &tid).unwrap();
                        w.error_code(if round == 0 { 401 } else { 438 }, "x")
                            .unwrap();
                        w.raw(attr::REALM, b"r").unwrap();
                        w.raw(attr::NONCE, if round == 0 { b"n1" } else { b"n2" })
                            .unwrap();
                        w
                    }
                    _ => {
                        let mut w =
                            MessageWriter::new(&mut out, m.method(), Class::Success, &tid).unwrap();
                        w.xor_address(
                            attr::XOR_RELAYED_ADDRESS,
                            "127.0.0.1:50001".parse().unwrap(),
                        )
                        .unwrap();
                        w
                    }
                };
                let len = w.finish();
                server.send_to(&out[..len], from).unwrap();
            }
            nonces
        });
        let sock = udp_socket(loopback_for(&saddr), Some(saddr), 1 << 16).unwrap();
        let auth = Auth::Static {
            user: "u".into(),
            password: "p".into(),
        };
        let mut e = Engine::new().unwrap();
        let slot = e
            .insert(TurnFlow::new(
                0,
                sock,
                "127.0.0.1:9".parse().unwrap(),
                &auth,
                None,
            ))
            .unwrap();
        let failed = run_plan(
            &mut e,
            &[slot],
            &[Step::Allocate],
            1,
            Instant::now() + Duration::from_secs(5),
            |_| {},
        )
        .unwrap();
        assert!(failed.is_empty(), "{:?}", e.flow(slot).unwrap().error);
        assert_eq!(
            t.join().unwrap(),
            vec![None, Some(b"n1".to_vec()), Some(b"n2".to_vec())]
        );
        assert_eq!(e.stats.stale_nonce_438, 1);
    }

    #[test]
    fn times_out_without_server() {
        // A bound socket that never answers.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let saddr = silent.local_addr().unwrap();
        let sock = udp_socket(loopback_for(&saddr), Some(saddr), 1 << 16).unwrap();
        let mut e = Engine::new().unwrap();
        let slot = e
            .insert(TurnFlow::new(0, sock, saddr, &Auth::None, None))
            .unwrap();
        let failed = run_plan(
            &mut e,
            &[slot],
            &[Step::Allocate],
            1,
            Instant::now() + Duration::from_millis(700),
            |_| {},
        )
        .unwrap();
        assert_eq!(failed, vec![slot]);
        assert_eq!(
            e.flow(slot).unwrap().error,
            Some(FlowError::Timeout(Step::Allocate))
        );
        assert!(e.stats.retransmits >= 1);
    }
}
