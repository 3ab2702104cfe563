//! PROXY protocol v2 on a TCP listener behind a (pretend) load balancer:
//! the header's address is the client's, and only trusted networks may
//! connect.

use std::io::{Read, Write};
use std::net::TcpStream;

use super::streams::tcp_addr;
use super::*;
use uturn::stream::proxy::encode_v2;
use uturn::stun::{next_frame, Attribute, Framing, Message, MessageWriter};

fn binding_request() -> Vec<u8> {
    let mut buf = vec![0u8; 64];
    let tid = TurnClient::new_tid();
    let w = MessageWriter::new(&mut buf, Method::Binding, Class::Request, &tid).unwrap();
    let n = w.finish();
    buf.truncate(n);
    buf
}

/// Reads one frame, or None when the server closes the connection (or
/// nothing comes within 5 s).
fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        if let Framing::Complete { len, .. } = next_frame(&buf) {
            return Some(buf[..len].to_vec());
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn mapped(reply: &[u8]) -> SocketAddr {
    let m = Message::parse(reply).expect("a STUN reply");
    let raw = m.get(attr::XOR_MAPPED_ADDRESS).expect("XOR-MAPPED-ADDRESS");
    match Attribute::decode(raw, m.transaction_id()) {
        Ok(Attribute::XorMappedAddress(a)) => a,
        other => panic!("{other:?}"),
    }
}

fn proxy_server(from: &str) -> Server {
    // 127.0.0.2 for TCP, so that the proxied listener is told apart from
    // the TLS-free default one on 127.0.0.1.
    lab_server(&[
        "--listen-tcp",
        "127.0.0.2:0",
        "--proxy-protocol",
        "127.0.0.2:0",
        "--proxy-protocol-from",
        from,
    ])
}

fn the_header_names_the_client() {
    let server = proxy_server("127.0.0.0/8");
    let addr = tcp_addr(&server);
    for client in [sa("198.51.100.23:40123"), sa("[2001:db8::7]:5555")] {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut header = Vec::new();
        encode_v2(client, addr, &mut header);
        // Header and request in one write, as a balancer forwards them.
        header.extend_from_slice(&binding_request());
        s.write_all(&header).unwrap();
        let reply = read_frame(&mut s).expect("a Binding response");
        assert_eq!(
            mapped(&reply),
            client,
            "the header's address is the client's"
        );
    }
    // Split anywhere, even one byte at a time, it is the same.
    let client = sa("203.0.113.9:1000");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut bytes = Vec::new();
    encode_v2(client, addr, &mut bytes);
    bytes.extend_from_slice(&binding_request());
    for b in bytes {
        s.write_all(&[b]).unwrap();
    }
    assert_eq!(mapped(&read_frame(&mut s).expect("a reply")), client);
}

fn a_connection_without_a_valid_header_is_closed() {
    let server = proxy_server("127.0.0.0/8");
    let addr = tcp_addr(&server);
    // STUN where the header should be.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&binding_request()).unwrap();
    assert_eq!(read_frame(&mut s), None, "closed, not answered");
    // And the listener still serves a proper client.
    let mut s = TcpStream::connect(addr).unwrap();
    let mut bytes = Vec::new();
    encode_v2(sa("198.51.100.1:9"), addr, &mut bytes);
    bytes.extend_from_slice(&binding_request());
    s.write_all(&bytes).unwrap();
    assert!(read_frame(&mut s).is_some());
}

fn an_untrusted_source_is_refused() {
    // Only 10.0.0.0/8 may send headers; this test connects from 127.0.0.1.
    let server = proxy_server("10.0.0.0/8");
    let addr = tcp_addr(&server);
    let mut s = TcpStream::connect(addr).unwrap();
    let mut bytes = Vec::new();
    encode_v2(sa("198.51.100.1:9"), addr, &mut bytes);
    bytes.extend_from_slice(&binding_request());
    // The server may have closed before the write: either way no answer.
    let _ = s.write_all(&bytes);
    assert_eq!(read_frame(&mut s), None);
    // The UDP side is not affected.
    let mut c = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy);
    c.allocate();
}

on_every_stream_io!(
    the_header_names_the_client,
    a_connection_without_a_valid_header_is_closed,
    an_untrusted_source_is_refused,
);
