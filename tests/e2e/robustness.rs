//! Malformed input: junk, truncated and oversized datagrams, bit flips, unknown
//! attributes, attributes after MESSAGE-INTEGRITY. The server must survive all of
//! it and keep serving.

use super::*;

/// xorshift64*: deterministic bytes without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn stun_header(typ: u16, len: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(20);
    h.extend_from_slice(&typ.to_be_bytes());
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&0x2112_A442u32.to_be_bytes());
    h.extend_from_slice(&[7u8; 12]);
    h
}

fn malformed_corpus() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = Vec::new();
    let mut rng = Rng(0x5EED_0F7E57);
    v.push(("empty datagram".into(), Vec::new()));
    for first in [0x00u8, 0x01, 0x03, 0x40, 0x4f, 0x80, 0xff] {
        for len in [1usize, 3, 4, 19, 20, 21, 100, 548, 1500] {
            let mut d = rng.bytes(len);
            d[0] = first;
            v.push((format!("random {len} bytes starting 0x{first:02x}"), d));
        }
    }
    let binding = stun_header(0x0001, 0);
    v.push((
        "truncated STUN header (10 bytes)".into(),
        binding[..10].to_vec(),
    ));
    v.push((
        "STUN header length 1000, no body".into(),
        stun_header(0x0001, 1000),
    ));
    v.push((
        "STUN header length 0xFFFC, no body".into(),
        stun_header(0x0003, 0xfffc),
    ));
    v.push(("STUN length not a multiple of 4".into(), {
        let mut d = stun_header(0x0001, 6);
        d.extend_from_slice(&[0x80, 0x22, 0, 2, b'h', b'i']);
        d
    }));
    v.push(("STUN wrong magic cookie".into(), {
        let mut d = stun_header(0x0001, 0);
        d[4] = 0x21;
        d[5] = 0x13;
        d
    }));
    v.push(("STUN attribute length overruns the message".into(), {
        let mut d = stun_header(0x0003, 8);
        d.extend_from_slice(&[0x00, 0x19, 0x00, 0xc8, 17, 0, 0, 0]);
        d
    }));
    v.push(("STUN attribute header cut in half".into(), {
        let mut d = stun_header(0x0003, 4);
        d.extend_from_slice(&[0x00, 0x06, 0x00, 0x10]);
        d
    }));
    v.push((
        "STUN XOR-PEER-ADDRESS of 3 bytes in a Send indication".into(),
        {
            let mut d = stun_header(0x0016, 8);
            d.extend_from_slice(&[0x00, 0x12, 0x00, 0x03, 0, 1, 2, 0]);
            d
        },
    ));
    v.push(("STUN XOR-PEER-ADDRESS with family 7".into(), {
        let mut d = stun_header(0x0016, 12);
        d.extend_from_slice(&[0x00, 0x12, 0x00, 0x08, 0, 7, 1, 2, 3, 4, 5, 6]);
        d
    }));
    v.push(("STUN huge USERNAME (65000 bytes)".into(), {
        let mut d = stun_header(0x0003, 65004);
        d.extend_from_slice(&[0x00, 0x06]);
        d.extend_from_slice(&65000u16.to_be_bytes());
        d.extend(std::iter::repeat(b'A').take(65000));
        d
    }));
    v.push(("STUN Allocate with 1000 tiny attributes".into(), {
        let mut d = stun_header(0x0003, 4000);
        for _ in 0..1000 {
            d.extend_from_slice(&[0x80, 0x99, 0, 0]);
        }
        d
    }));
    v.push((
        "STUN class bits on a response, method Allocate".into(),
        stun_header(0x0103, 0),
    ));
    v.push((
        "STUN ChannelData-looking first byte but STUN cookie".into(),
        stun_header(0x4000, 0),
    ));
    v.push((
        "ChannelData length past the end".into(),
        vec![0x40, 0x00, 0x03, 0xe8, 1, 2, 3, 4],
    ));
    v.push((
        "ChannelData length 0xFFFF".into(),
        vec![0x40, 0x01, 0xff, 0xff, 1, 2, 3, 4],
    ));
    v.push(("ChannelData header only, 2 bytes".into(), vec![0x40, 0x00]));
    v.push((
        "ChannelData on 0x4FFF, unbound".into(),
        vec![0x4f, 0xff, 0x00, 0x01, 9, 0, 0, 0],
    ));
    v.push((
        "ChannelData on reserved 0x5000".into(),
        vec![0x50, 0x00, 0x00, 0x01, 9, 0, 0, 0],
    ));
    v.push((
        "65507 random bytes (largest UDP payload)".into(),
        rng.bytes(65507),
    ));
    v.push(("65507 bytes starting like ChannelData".into(), {
        let mut d = rng.bytes(65507);
        d[..4].copy_from_slice(&[0x40, 0x00, 0xff, 0xdb]);
        d
    }));
    v
}

fn malformed_datagrams_then_a_full_flow() {
    let mut server = lab_server(&[]);
    let mut junk_client = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy);
    let corpus = malformed_corpus();
    for (_, d) in &corpus {
        junk_client.send_raw(d);
    }
    // Bit flips of a real signed Allocate, from the same socket.
    junk_client.challenge(Method::Allocate);
    let good = junk_client.build(
        Method::Allocate,
        Class::Request,
        &TurnClient::new_tid(),
        true,
        |w| w.raw(attr::REQUESTED_TRANSPORT, &REQUESTED_TRANSPORT_UDP),
    );
    let mut rng = Rng(42);
    for _ in 0..300 {
        let mut d = good.clone();
        for _ in 0..1 + rng.next() % 4 {
            let i = (rng.next() as usize) % d.len();
            d[i] ^= 1 << (rng.next() % 8);
        }
        if rng.next() % 5 == 0 {
            d.truncate((rng.next() as usize) % d.len());
        }
        junk_client.send_raw(&d);
    }
    let answers = junk_client.drain(Duration::from_millis(500));
    println!(
        "{} malformed datagrams + 300 mutations sent; {answers} answers",
        corpus.len()
    );
    server.assert_alive("after malformed datagrams");

    // The same server, fresh clients, and the junk client itself: all work.
    alice_flow(server.addr);
    full_flow(
        server.addr,
        "alice",
        "wonderland",
        AuthMode::Sha256,
        Some(LOOPBACK_V4),
    );
    server.assert_alive("after the flows");
}

fn unknown_comprehension_required_attribute_gets_420() {
    let server = lab_server(&[]);
    let mut c = TurnClient::new(server.addr, "", "", AuthMode::Legacy);
    let r = c.request_unsigned(Method::Binding, |w| w.raw(0x7ff0, b"what"));
    assert_error(&r, &[420], "Binding with unknown attribute 0x7ff0");
    let listed = r
        .raw(attr::UNKNOWN_ATTRIBUTES)
        .unwrap_or_else(|| panic!("420 without UNKNOWN-ATTRIBUTES: {}", r.describe()));
    assert_eq!(
        attr::unknown_attributes(&listed).collect::<Vec<_>>(),
        vec![0x7ff0]
    );
    // Comprehension-optional unknowns are ignored.
    let r = c.request_unsigned(Method::Binding, |w| w.raw(0xfff0, b"fine"));
    assert_success(&r, "Binding with unknown optional attribute 0xfff0");
}

fn attributes_after_message_integrity_are_ignored() {
    // RFC 8489 §14.5: REQUESTED-TRANSPORT placed after MESSAGE-INTEGRITY does
    // not count, so the Allocate lacks it.
    let server = lab_server(&[]);
    let mut c = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Legacy);
    c.fingerprint = false;
    c.challenge(Method::Allocate);
    let mut req = c.build(
        Method::Allocate,
        Class::Request,
        &TurnClient::new_tid(),
        true,
        |_| Ok(()),
    );
    // Append REQUESTED-TRANSPORT and fix the header length.
    req.extend_from_slice(&[0x00, 0x19, 0x00, 0x04, 17, 0, 0, 0]);
    let len = (req.len() - 20) as u16;
    req[2..4].copy_from_slice(&len.to_be_bytes());
    let r = c.transact(&req).unwrap();
    assert_error(
        &r,
        &[400],
        "Allocate whose REQUESTED-TRANSPORT follows MESSAGE-INTEGRITY",
    );
}

on_both_backends!(
    malformed_datagrams_then_a_full_flow,
    unknown_comprehension_required_attribute_gets_420,
    attributes_after_message_integrity_are_ignored,
);
