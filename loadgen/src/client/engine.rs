//! The [`Engine`]: many [`TurnFlow`]s driven from one thread over epoll,
//! with retransmissions (UDP) or one timeout per request (TCP, TLS), the
//! 401 and 438 rounds and a plan of steps per flow; and [`run_plan`], which
//! runs one plan over many flows.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use uturn_io::syscall::{Events, Poller};
use uturn_stun::{attr, Attribute, ChannelData, Class, Message, Method};

mod streams;

use super::flow::{FlowError, Step, TurnFlow, Tx};
use super::stream::Scratch;
use super::{Conn, EXTRA_TOKEN, MAX_STALE, MAX_TRIES, READS_PER_TURN, RTO, STREAM_TIMEOUT};
use crate::stats::Rng;

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

/// Longest wait while a stream has bytes the socket did not take: the
/// poller only reports readability, so these are retried this often.
const FLUSH_RETRY: Duration = Duration::from_millis(1);

/// Drives many [`TurnFlow`]s from one thread.
pub struct Engine {
    poller: Poller,
    events: Events,
    slots: Vec<Option<TurnFlow>>,
    free: Vec<usize>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    pending: Vec<Event>,
    rbuf: Vec<u8>,
    /// Read buffers for the stream connections (made on first use).
    scratch: Option<Scratch>,
    /// Flows whose stream holds bytes the socket did not take yet.
    unflushed: Vec<usize>,
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
            poller: Poller::new()?,
            events: Events::with_capacity(1024),
            slots: Vec::new(),
            free: Vec::new(),
            timers: BinaryHeap::new(),
            pending: Vec::new(),
            rbuf: vec![0; 65_536],
            scratch: None,
            unflushed: Vec::new(),
            rng: Rng::new(0x7475_726e),
            serial: 0,
            in_flight: 0,
            keep_data: false,
            stats: EngineStats::default(),
        })
    }

    /// Adds a flow (its socket must be non-blocking); returns its slot. A
    /// stream whose first bytes (a TLS ClientHello) wait is flushed as
    /// soon as the socket takes them.
    pub fn insert(&mut self, flow: TurnFlow) -> io::Result<usize> {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.poller.add(flow.conn.fd(), slot as u64)?;
        if let Conn::Stream(s) = &flow.conn {
            if !s.flush()? {
                self.unflushed.push(slot);
            }
        }
        self.slots[slot] = Some(flow);
        Ok(slot)
    }

    /// Takes a flow out (any request in flight is abandoned); a TLS
    /// connection sends its close_notify if the socket takes it.
    pub fn remove(&mut self, slot: usize) -> Option<TurnFlow> {
        let mut flow = self.slots.get_mut(slot)?.take()?;
        let _ = self.poller.delete(flow.conn.fd());
        if let Conn::Stream(s) = &flow.conn {
            s.close();
        }
        if flow.tx.take().is_some() {
            self.in_flight -= 1;
        }
        self.free.push(slot);
        Some(flow)
    }

    /// Watches one of the caller's descriptors; readiness comes back as
    /// [`Event::Extra`]`(token)`, token ≥ [`EXTRA_TOKEN`].
    pub fn watch(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        debug_assert!(token >= EXTRA_TOKEN);
        self.poller.add(fd, token)
    }

    pub fn flow(&self, slot: usize) -> Option<&TurnFlow> {
        self.slots.get(slot)?.as_ref()
    }

    /// Sends `frame` (ChannelData, say) on the flow's connection; false if
    /// the socket refused it or the connection is broken.
    pub fn send(&mut self, slot: usize, frame: &[u8]) -> bool {
        let Some(Some(flow)) = self.slots.get(slot) else {
            return false;
        };
        if flow.broken.is_some() {
            return false;
        }
        match flow.conn.send(frame) {
            Ok(true) => true,
            // Queued behind bytes the socket has not taken yet.
            Ok(false) => {
                if matches!(flow.conn, Conn::Stream(_)) {
                    self.unflushed.push(slot);
                    true
                } else {
                    false
                }
            }
            Err(_) => false,
        }
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

    /// (Re)sends the flow's current request and arms its timer: the next
    /// retransmission over UDP, the timeout over a stream.
    fn transmit(&mut self, slot: usize) {
        let Some(Some(flow)) = self.slots.get_mut(slot) else {
            return;
        };
        let Some(tx) = flow.tx.as_mut() else {
            return;
        };
        if let Some(why) = &flow.broken {
            let e = FlowError::Io(why.clone());
            self.fail(slot, e);
            return;
        }
        tx.tries += 1;
        if tx.tries > 1 {
            self.stats.retransmits += 1;
        }
        self.stats.requests += 1;
        let serial = tx.serial;
        let wait = match &flow.conn {
            Conn::Udp(sock) => match sock.send(&tx.bytes) {
                Ok(_) => RTO,
                // Lost like any datagram: the timer sends it again.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    RTO
                }
                Err(e) => {
                    self.fail(slot, FlowError::Io(format!("socket error: {e}")));
                    return;
                }
            },
            Conn::Stream(s) => match s.queue(&tx.bytes) {
                Ok(all_sent) => {
                    if !all_sent {
                        self.unflushed.push(slot);
                    }
                    STREAM_TIMEOUT
                }
                Err(e) => {
                    self.fail(slot, FlowError::Io(format!("socket error: {e}")));
                    return;
                }
            },
        };
        self.timers
            .push(Reverse((Instant::now() + wait, slot, serial)));
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
        let waiting = self.flush_streams();
        if !self.pending.is_empty() {
            events.append(&mut self.pending);
            return Ok(());
        }
        let now = Instant::now();
        let mut wait = max_wait;
        if waiting {
            wait = wait.min(FLUSH_RETRY);
        }
        if let Some(Reverse((t, _, _))) = self.timers.peek() {
            wait = wait.min(t.saturating_duration_since(now));
        }
        // The poller rounds up to whole milliseconds, so a timer due in
        // 0.3 ms does not spin.
        let ready = self.poller.wait(&mut self.events, wait)?;
        for i in 0..ready {
            let token = self.events.key(i);
            if token >= EXTRA_TOKEN {
                events.push(Event::Extra(token));
            } else {
                self.read_flow(token as usize);
            }
        }
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
            // Over a stream the first timer is the timeout.
            if tx.tries >= MAX_TRIES || matches!(flow.conn, Conn::Stream(_)) {
                let step = tx.step;
                self.fail(slot, FlowError::Timeout(step));
            } else {
                self.transmit(slot);
            }
        }
    }

    /// Reads what is queued on a flow's socket.
    fn read_flow(&mut self, slot: usize) {
        match self.slots.get(slot) {
            Some(Some(TurnFlow {
                conn: Conn::Udp(_), ..
            })) => self.read_datagrams(slot),
            Some(Some(TurnFlow {
                conn: Conn::Stream(_),
                ..
            })) => self.read_stream(slot),
            _ => {}
        }
    }

    /// Reads the datagrams queued on a flow's UDP socket.
    fn read_datagrams(&mut self, slot: usize) {
        for _ in 0..READS_PER_TURN {
            let Some(Some(TurnFlow {
                conn: Conn::Udp(sock),
                ..
            })) = self.slots.get(slot)
            else {
                return;
            };
            let n = match sock.recv(&mut self.rbuf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // ICMP port unreachable from an earlier send: keep waiting,
                // the retransmission timer decides.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.fail(slot, FlowError::Io(format!("socket error: {e}")));
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

    /// Handles one datagram or stream frame; true if it was a STUN response.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, UdpSocket};
    use uturn_stun::MessageWriter;

    use crate::client::{loopback_for, udp_socket};
    use crate::creds::{key_md5, Auth};

    const RELAYED: &str = "127.0.0.1:50000";

    fn user() -> Auth {
        Auth::Static {
            user: "u".into(),
            password: "p".into(),
        }
    }

    /// A fresh engine with one flow (client 0, peer 127.0.0.1:9) for `server`.
    fn one_flow(server: SocketAddr, auth: &Auth) -> (Engine, usize) {
        let sock = udp_socket(loopback_for(&server), Some(server), 1 << 16).unwrap();
        let mut e = Engine::new().unwrap();
        let flow = TurnFlow::new(
            0,
            Conn::Udp(sock),
            "127.0.0.1:9".parse().unwrap(),
            auth,
            None,
        );
        let slot = e.insert(flow).unwrap();
        (e, slot)
    }

    /// Runs `plan` on the one flow for at most `within`; the failed slots.
    fn run_one(e: &mut Engine, slot: usize, plan: &[Step], within: Duration) -> Vec<usize> {
        run_plan(e, &[slot], plan, 1, Instant::now() + within, |_| {}).unwrap()
    }

    /// How the scripted server answers a request: an error code with the
    /// NONCE to send, or `None` for success.
    type Answer = Option<(u16, &'static [u8])>;

    /// The scripted server's answer to `m`: `error` (code, NONCE) with
    /// REALM "r", or success, with XOR-RELAYED-ADDRESS for an Allocate.
    fn answer(out: &mut [u8], m: &Message<'_>, error: Answer) -> usize {
        let tid = *m.transaction_id();
        let class = if error.is_some() {
            Class::Error
        } else {
            Class::Success
        };
        let mut w = MessageWriter::new(out, m.method(), class, &tid).unwrap();
        match error {
            Some((code, nonce)) => {
                let reason = if code == 401 {
                    "Unauthorized"
                } else {
                    "Stale Nonce"
                };
                w.error_code(code, reason).unwrap();
                w.raw(attr::REALM, b"r").unwrap();
                w.raw(attr::NONCE, nonce).unwrap();
            }
            None if m.method() == Method::Allocate => w
                .xor_address(attr::XOR_RELAYED_ADDRESS, RELAYED.parse().unwrap())
                .unwrap(),
            None => {}
        }
        w.finish()
    }

    /// A server thread that answers `rounds` requests with `script(round,
    /// request)` and returns what `note` recorded of each request.
    fn scripted<T: Send + 'static>(
        rounds: usize,
        script: fn(usize, &Message<'_>) -> Answer,
        note: fn(&Message<'_>) -> T,
    ) -> (SocketAddr, std::thread::JoinHandle<Vec<T>>) {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let saddr = server.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            server
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut buf = [0u8; 1500];
            let mut seen = Vec::new();
            for round in 0..rounds {
                let (n, from) = server.recv_from(&mut buf).unwrap();
                let m = Message::parse(&buf[..n]).unwrap();
                seen.push(note(&m));
                let mut out = [0u8; 512];
                let len = answer(&mut out, &m, script(round, &m));
                server.send_to(&out[..len], from).unwrap();
            }
            seen
        });
        (saddr, t)
    }

    /// A one-flow exchange against a scripted server thread: 401, then
    /// success for every request; checks the credentials it receives.
    #[test]
    fn allocate_with_401_round_then_bind_and_delete() {
        let (saddr, t) = scripted(
            5,
            |_, m| {
                if m.get(attr::MESSAGE_INTEGRITY).is_none() {
                    return Some((401, b"n"));
                }
                assert_eq!(
                    uturn_stun::integrity::check_sha1(m, &key_md5("u", b"r", "p")),
                    uturn_stun::integrity::Integrity::Valid
                );
                None
            },
            |m| (m.method(), m.get(attr::MESSAGE_INTEGRITY).is_some()),
        );
        let (mut e, slot) = one_flow(saddr, &user());
        let plan = [Step::Allocate, Step::Permission, Step::Bind, Step::Delete];
        let failed = run_one(&mut e, slot, &plan, Duration::from_secs(5));
        assert!(failed.is_empty(), "{:?}", e.flow(slot).unwrap().error);
        assert_eq!(
            e.flow(slot).unwrap().relayed,
            Some(RELAYED.parse().unwrap())
        );
        assert_eq!(e.flow(slot).unwrap().channel, 0x4000);
        assert_eq!(
            t.join().unwrap(),
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

    /// 401, then 438 with a fresh nonce for the first authenticated
    /// request, then success: the client retries with the new nonce.
    #[test]
    fn stale_nonce_is_retried_with_the_new_one() {
        let (saddr, t) = scripted(
            3,
            |round, _| match round {
                0 => Some((401, b"n1")),
                1 => Some((438, b"n2")),
                _ => None,
            },
            |m| m.get(attr::NONCE).map(|a| a.value.to_vec()),
        );
        let (mut e, slot) = one_flow(saddr, &user());
        let failed = run_one(&mut e, slot, &[Step::Allocate], Duration::from_secs(5));
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
        let (mut e, slot) = one_flow(silent.local_addr().unwrap(), &Auth::None);
        let failed = run_one(&mut e, slot, &[Step::Allocate], Duration::from_millis(700));
        assert_eq!(failed, vec![slot]);
        assert_eq!(
            e.flow(slot).unwrap().error,
            Some(FlowError::Timeout(Step::Allocate))
        );
        assert!(e.stats.retransmits >= 1);
    }
}
