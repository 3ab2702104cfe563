//! TCP through each way a shard carries it: on the io_uring itself, through
//! an epoll instance polled from the ring, and through epoll on the syscall
//! backend. Requests split anywhere or pipelined by the hundred (frames
//! across receive buffers), a client that half-closes after its request,
//! bytes that are not TURN, and an idle connection's deadline.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Instant;

use super::streams::tcp_addr;
use super::*;
use uturn::stun::{next_frame, Attribute, Framing, Message, MessageWriter, TransactionId};

/// A server with a TCP listener, unauthenticated answers not rate-limited
/// (the tests send hundreds from one address) and a 1 s deadline for a
/// connection to hold an allocation.
fn stream_server() -> Server {
    let path = scratch_path("stream-io.toml");
    std::fs::write(
        &path,
        "[rate_limit]\nunauth_per_second = 100000\nunauth_burst = 100000\n\
         [tcp]\nauth_timeout_secs = 1\n",
    )
    .unwrap();
    lab_server(&[
        "--config",
        path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--relay-ip",
        "127.0.0.1",
        "--listen-tcp",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
    ])
}

fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(tcp_addr(server)).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

fn binding_request(tid: &TransactionId) -> Vec<u8> {
    let mut buf = vec![0u8; 64];
    let w = MessageWriter::new(&mut buf, Method::Binding, Class::Request, tid).unwrap();
    let n = w.finish();
    buf.truncate(n);
    buf
}

/// Whole frames read off a connection, in order.
struct Frames {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Frames {
    /// The next frame; None once the server closes (or after 5 s).
    fn next(&mut self) -> Option<Vec<u8>> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Framing::Complete { len, .. } = next_frame(&self.buf) {
                return Some(self.buf.drain(..len).collect());
            }
            match self.s.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// Checks that `reply` answers `tid` with the client's own address.
fn assert_binding_answer(reply: &[u8], tid: &TransactionId, client: SocketAddr) {
    let m = Message::parse(reply).expect("a STUN reply");
    assert_eq!(m.transaction_id(), tid, "answers come in request order");
    assert_eq!(m.class(), Class::Success);
    let raw = m.get(attr::XOR_MAPPED_ADDRESS).expect("XOR-MAPPED-ADDRESS");
    match Attribute::decode(raw, m.transaction_id()) {
        Ok(Attribute::XorMappedAddress(a)) => assert_eq!(a, client),
        other => panic!("{other:?}"),
    }
}

fn requests_split_anywhere_or_pipelined_are_answered_in_order() {
    let server = stream_server();
    let s = connect(&server);
    let me = s.local_addr().unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = Frames { s, buf: Vec::new() };
    // Twenty requests written in pieces of 1 to 7 bytes.
    let tids: Vec<TransactionId> = (0..20).map(|_| TurnClient::new_tid()).collect();
    let bytes: Vec<u8> = tids.iter().flat_map(binding_request).collect();
    let mut at = 0;
    for k in (1..=7).cycle() {
        if at == bytes.len() {
            break;
        }
        let n = k.min(bytes.len() - at);
        w.write_all(&bytes[at..at + n]).unwrap();
        at += n;
    }
    for t in &tids {
        assert_binding_answer(&r.next().expect("an answer"), t, me);
    }
    // A thousand in one write: 20 KB, so over several receive buffers,
    // with frames across their edges.
    let tids: Vec<TransactionId> = (0..1000).map(|_| TurnClient::new_tid()).collect();
    let bytes: Vec<u8> = tids.iter().flat_map(binding_request).collect();
    let writer = std::thread::spawn(move || {
        w.write_all(&bytes).unwrap();
        w
    });
    for t in &tids {
        assert_binding_answer(&r.next().expect("an answer"), t, me);
    }
    writer.join().unwrap();
}

fn a_client_that_half_closes_gets_its_answer() {
    let server = stream_server();
    let mut s = connect(&server);
    let me = s.local_addr().unwrap();
    let tid = TurnClient::new_tid();
    s.write_all(&binding_request(&tid)).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut r = Frames { s, buf: Vec::new() };
    assert_binding_answer(&r.next().expect("the answer"), &tid, me);
    assert_eq!(r.next(), None, "then the server closes");
    wait_for_metric(
        &server,
        "uturn_connections_closed_total{transport=\"tcp\",reason=\"client_closed\"}",
        1,
    );
}

fn bytes_that_are_not_turn_close_the_connection() {
    let server = stream_server();
    let mut s = connect(&server);
    // A STUN-looking header without the magic cookie.
    s.write_all(&[0x00, 0x01, 0x00, 0x00, 1, 2, 3, 4]).unwrap();
    let mut r = Frames { s, buf: Vec::new() };
    assert_eq!(r.next(), None);
    wait_for_metric(
        &server,
        "uturn_connections_closed_total{transport=\"tcp\",reason=\"invalid_frame\"}",
        1,
    );
    // The listener still serves others.
    let mut s = connect(&server);
    let me = s.local_addr().unwrap();
    let tid = TurnClient::new_tid();
    s.write_all(&binding_request(&tid)).unwrap();
    let mut r = Frames { s, buf: Vec::new() };
    assert_binding_answer(&r.next().expect("an answer"), &tid, me);
}

fn an_idle_connection_is_closed_at_its_deadline() {
    let server = stream_server();
    let s = connect(&server);
    let started = Instant::now();
    let mut r = Frames { s, buf: Vec::new() };
    assert_eq!(r.next(), None, "closed without a word");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "closed after {took:?}, the deadline being 1 s (checked every second)"
    );
    wait_for_metric(
        &server,
        "uturn_connections_closed_total{transport=\"tcp\",reason=\"auth_timeout\"}",
        1,
    );
    assert_eq!(
        metric(&server, "uturn_connections{transport=\"tcp\"}"),
        Some(0)
    );
}

/// Polls the metrics until `name` reaches `want` (2 s at most).
fn wait_for_metric(server: &Server, name: &str, want: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = metric(server, name);
        if got == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{name}: {got:?}, want {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

on_every_stream_io!(
    requests_split_anywhere_or_pipelined_are_answered_in_order,
    a_client_that_half_closes_gets_its_answer,
    bytes_that_are_not_turn_close_the_connection,
    an_idle_connection_is_closed_at_its_deadline,
);
