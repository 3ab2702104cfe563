//! `tcp-relay`: RFC 6062 throughput. Opens TCP allocations over TCP, then
//! for each pipe a peer connection (Connect to a listener of ours) and a
//! data connection (ConnectionBind), and moves a fixed number of bytes
//! through each pipe, one way or both, as fast as the relay carries them.
//! Every byte is checked on arrival (a pattern that shows loss or
//! reordering). Reports the throughput, how long each pipe took to start
//! (ConnectionBind sent until a first byte reached the peer) and, with
//! --server-pid, the server's CPU seconds per gigabyte relayed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use uturn_stun::attr;
use uturn_stun::{Attribute, Class, Message, MessageWriter, Method};

use crate::cpu::CpuMeter;
use crate::creds::key_md5;
use crate::output::{Output, Table};

/// Arguments of `uturn-loadgen tcp-relay`.
#[derive(clap::Args, Debug)]
pub struct TcpRelayArgs {
    /// The server's TCP listen address (loopback).
    #[arg(long)]
    pub server: SocketAddr,
    /// A static long-term user, NAME:PASSWORD.
    #[arg(long)]
    pub user: String,
    /// Pipes (peer connection + data connection) to run at once.
    #[arg(long, default_value_t = 4)]
    pub pipes: usize,
    /// Pipes per allocation (RFC 6062 allows several peer connections per
    /// allocation; uturn's default limit is 16 open, 8 pending).
    #[arg(long, default_value_t = 4)]
    pub per_allocation: usize,
    /// Bytes each pipe carries in each direction it runs.
    #[arg(long, default_value_t = 256 << 20)]
    pub bytes: u64,
    /// c2p (client → peer), p2c, or both.
    #[arg(long, default_value = "both")]
    pub direction: String,
    /// The server's PID, for its CPU time.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Gives up after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
}

/// Writes per call.
const CHUNK: usize = 64 * 1024;

/// The control connection of one allocation.
struct Control {
    sock: TcpStream,
    user: String,
    realm: Vec<u8>,
    nonce: Vec<u8>,
    key: [u8; 16],
    tid: u32,
}

impl Control {
    fn request(
        &mut self,
        method: Method,
        sign: bool,
        body: impl Fn(&mut MessageWriter<'_>) -> Result<(), uturn_stun::EncodeError>,
    ) -> anyhow::Result<Vec<u8>> {
        let req = self.build(method, sign, body)?;
        self.sock.write_all(&req)?;
        read_message(&mut self.sock)
    }

    fn build(
        &mut self,
        method: Method,
        sign: bool,
        body: impl Fn(&mut MessageWriter<'_>) -> Result<(), uturn_stun::EncodeError>,
    ) -> anyhow::Result<Vec<u8>> {
        self.tid += 1;
        let mut tid = [0x6c; 12];
        tid[..4].copy_from_slice(&self.tid.to_be_bytes());
        let mut buf = vec![0u8; 1024];
        let mut w = MessageWriter::new(&mut buf, method, Class::Request, &tid)
            .map_err(|e| anyhow!("{e:?}"))?;
        body(&mut w).map_err(|e| anyhow!("{e:?}"))?;
        if sign {
            let signed = (|| {
                w.raw(attr::USERNAME, self.user.as_bytes())?;
                w.raw(attr::REALM, &self.realm)?;
                w.raw(attr::NONCE, &self.nonce)?;
                w.message_integrity(&self.key)
            })();
            signed.map_err(|e| anyhow!("{e:?}"))?;
        }
        let n = w.finish();
        buf.truncate(n);
        Ok(buf)
    }
}

/// Reads one STUN message from a stream.
fn read_message(s: &mut TcpStream) -> anyhow::Result<Vec<u8>> {
    let mut head = [0u8; 20];
    s.read_exact(&mut head).context("reading a STUN header")?;
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let mut msg = head.to_vec();
    msg.resize(20 + len, 0);
    s.read_exact(&mut msg[20..])
        .context("reading a STUN body")?;
    Ok(msg)
}

/// An error response's code, if it is one.
fn error_code(bytes: &[u8]) -> Option<u16> {
    let m = Message::parse(bytes).ok()?;
    match Attribute::decode(m.get(attr::ERROR_CODE)?, m.transaction_id()).ok()? {
        Attribute::ErrorCode { code, .. } => Some(code),
        _ => None,
    }
}

fn attribute<'a>(m: &Message<'a>, typ: u16) -> Option<Attribute<'a>> {
    Attribute::decode(m.get(typ)?, m.transaction_id()).ok()
}

/// A TCP allocation on a new control connection.
fn allocate(server: SocketAddr, user: &str, password: &str) -> anyhow::Result<Control> {
    let sock = TcpStream::connect(server).with_context(|| format!("connecting to {server}"))?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut c = Control {
        sock,
        user: user.into(),
        realm: Vec::new(),
        nonce: Vec::new(),
        key: [0; 16],
        tid: 0,
    };
    let tcp = |w: &mut MessageWriter<'_>| w.raw(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0]);
    let challenge = c.request(Method::Allocate, false, tcp)?;
    let m = Message::parse(&challenge).map_err(|e| anyhow!("401 does not parse: {e:?}"))?;
    match (attribute(&m, attr::REALM), attribute(&m, attr::NONCE)) {
        (Some(Attribute::Realm(r)), Some(Attribute::Nonce(n))) => {
            c.realm = r.to_vec();
            c.nonce = n.to_vec();
        }
        _ => bail!("the first Allocate got no REALM and NONCE"),
    }
    c.key = key_md5(user, &c.realm, password);
    let r = c.request(Method::Allocate, true, tcp)?;
    if let Some(code) = error_code(&r) {
        bail!("TCP Allocate refused with {code}");
    }
    Ok(c)
}

/// The bytes each pipe carries first, client → peer, to time its start.
const PROBE: &[u8; 4] = b"ping";

/// One pipe: the client's data connection and the peer's connection, and
/// how long it took from sending the ConnectionBind until `PROBE`, sent
/// right after the answer, reached the peer.
fn open_pipe(
    server: SocketAddr,
    c: &mut Control,
    peers: &TcpListener,
) -> anyhow::Result<(TcpStream, TcpStream, Duration)> {
    let peer_addr = peers.local_addr()?;
    let r = c.request(Method::Connect, true, |w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, peer_addr)
    })?;
    if let Some(code) = error_code(&r) {
        bail!("Connect refused with {code}");
    }
    let m = Message::parse(&r).map_err(|e| anyhow!("Connect answer: {e:?}"))?;
    let Some(Attribute::ConnectionId(id)) = attribute(&m, attr::CONNECTION_ID) else {
        bail!("Connect answer without CONNECTION-ID");
    };
    let (peer, _) = peers.accept().context("accepting the peer connection")?;
    let mut data = TcpStream::connect(server)?;
    data.set_nodelay(true)?;
    data.set_read_timeout(Some(Duration::from_secs(10)))?;
    let bind = c.build(Method::ConnectionBind, true, |w| {
        w.u32(attr::CONNECTION_ID, id)
    })?;
    let sent = Instant::now();
    data.write_all(&bind)?;
    let r = read_message(&mut data)?;
    if let Some(code) = error_code(&r) {
        bail!("ConnectionBind refused with {code}");
    }
    data.write_all(PROBE)?;
    let mut peer = peer;
    peer.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut got = [0u8; PROBE.len()];
    peer.read_exact(&mut got)
        .context("the first bytes through the pipe")?;
    let start = sent.elapsed();
    if &got != PROBE {
        bail!("the pipe's first bytes differ");
    }
    Ok((data, peer, start))
}

/// The byte at offset `i` of direction `dir` of pipe `pipe`.
fn pattern(pipe: usize, dir: u8, i: u64) -> u8 {
    (i as u8).wrapping_mul(31) ^ (pipe as u8).wrapping_mul(7) ^ dir
}

fn send(mut s: TcpStream, pipe: usize, dir: u8, total: u64) -> anyhow::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    while off < total {
        let n = (total - off).min(CHUNK as u64) as usize;
        for (k, b) in buf[..n].iter_mut().enumerate() {
            *b = pattern(pipe, dir, off + k as u64);
        }
        s.write_all(&buf[..n])?;
        off += n as u64;
    }
    Ok(())
}

fn receive(mut s: TcpStream, pipe: usize, dir: u8, total: u64) -> anyhow::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    while off < total {
        let want = (total - off).min(CHUNK as u64) as usize;
        let n = s.read(&mut buf[..want])?;
        if n == 0 {
            bail!("pipe {pipe}: closed after {off} of {total} bytes");
        }
        for (k, &b) in buf[..n].iter().enumerate() {
            if b != pattern(pipe, dir, off + k as u64) {
                bail!("pipe {pipe}: byte {} differs", off + k as u64);
            }
        }
        off += n as u64;
    }
    Ok(())
}

pub fn run(a: &TcpRelayArgs, out: &Output) -> anyhow::Result<()> {
    let (user, password) = a
        .user
        .split_once(':')
        .ok_or_else(|| anyhow!("--user takes NAME:PASSWORD"))?;
    let (c2p, p2c) = match a.direction.as_str() {
        "c2p" => (true, false),
        "p2c" => (false, true),
        "both" => (true, true),
        d => bail!("--direction: c2p, p2c or both, not {d:?}"),
    };
    if a.pipes == 0 || a.per_allocation == 0 {
        bail!("--pipes and --per-allocation must be at least 1");
    }
    let mut controls = Vec::new();
    let mut pipes = Vec::new();
    let mut starts = Vec::new();
    for i in 0..a.pipes {
        if i % a.per_allocation == 0 {
            controls.push(allocate(a.server, user, password)?);
        }
        let c = controls
            .last_mut()
            .ok_or_else(|| anyhow!("no allocation"))?;
        // A listener per pipe: one peer address has one connection per
        // allocation (RFC 6062 §5.2, 446).
        let peers = TcpListener::bind("127.0.0.1:0")?;
        let (data, peer, start) = open_pipe(a.server, c, &peers)?;
        pipes.push((data, peer));
        starts.push(start.as_secs_f64() * 1e3);
    }
    starts.sort_by(f64::total_cmp);
    let start_p50 = starts[starts.len() / 2];
    let start_max = starts[starts.len() - 1];
    let cpu = CpuMeter::start(a.server_pid);
    let start = Instant::now();
    let deadline = Duration::from_secs(a.timeout_secs);
    let mut threads = Vec::new();
    for (i, (data, peer)) in pipes.iter().enumerate() {
        for s in [data, peer] {
            // A relay that stops reading must not hang the writers either.
            s.set_read_timeout(Some(deadline))?;
            s.set_write_timeout(Some(deadline))?;
        }
        if c2p {
            let (w, r, n) = (data.try_clone()?, peer.try_clone()?, a.bytes);
            threads.push(std::thread::spawn(move || send(w, i, 1, n)));
            threads.push(std::thread::spawn(move || receive(r, i, 1, n)));
        }
        if p2c {
            let (w, r, n) = (peer.try_clone()?, data.try_clone()?, a.bytes);
            threads.push(std::thread::spawn(move || send(w, i, 2, n)));
            threads.push(std::thread::spawn(move || receive(r, i, 2, n)));
        }
    }
    for t in threads {
        t.join().map_err(|_| anyhow!("a pipe thread panicked"))??;
    }
    let wall = start.elapsed().as_secs_f64();
    let server_cpu = cpu.and_then(|m| m.secs());
    let dirs = u64::from(c2p) + u64::from(p2c);
    let total = a.bytes * a.pipes as u64 * dirs;
    let gbit = total as f64 * 8.0 / wall / 1e9;
    let cpu_per_gb = server_cpu.map(|s| s / (total as f64 / 1e9));
    drop(pipes);
    drop(controls);
    if out.json {
        return out.print_json(&serde_json::json!({
            "pipes": a.pipes,
            "direction": a.direction,
            "bytes_total": total,
            "wall_secs": wall,
            "gbit_per_sec": gbit,
            "server_cpu_secs": server_cpu,
            "server_cpu_secs_per_gb": cpu_per_gb,
            "pipe_start_ms": { "p50": start_p50, "max": start_max },
        }));
    }
    let mut t = Table::new("tcp-relay (RFC 6062)");
    t.row("pipes", a.pipes.to_string());
    t.row("direction", a.direction.clone());
    t.row("bytes relayed", total.to_string());
    t.row("wall", format!("{wall:.2} s"));
    t.row("throughput", format!("{gbit:.2} Gbit/s"));
    t.row(
        "pipe start",
        format!("{start_p50:.2} ms median, {start_max:.2} ms max (ConnectionBind sent → first byte at the peer)"),
    );
    if let (Some(s), Some(g)) = (server_cpu, cpu_per_gb) {
        t.row("server CPU", format!("{s:.2} s ({g:.3} s per GB)"));
    }
    t.print();
    Ok(())
}
