//! STUN codec micro-benchmarks: the per-packet work of the control path.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use md5::{Digest, Md5};
use uturn::stun::integrity::{check_fingerprint, check_sha1, Integrity};
use uturn::stun::{attr, ChannelData, Class, Message, MessageWriter, Method};

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// RFC 5769 §2.1: a Binding request with SOFTWARE, PRIORITY, ICE-CONTROLLED,
/// USERNAME, MESSAGE-INTEGRITY and FINGERPRINT.
const BINDING_REQUEST: &str = "000100582112a442b7e7a701bc34d686fa87dfae\
    802200105354554e207465737420636c69656e74002400046e0001ff80290008932ff9b151263b36\
    000600096576746a3a6836765920202000080014\
    9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf";

/// RFC 5769 §2.4: a request with long-term credentials.
const AUTHENTICATED_REQUEST: &str = "000100602112a44278ad3433c6ad72c029da412e\
    00060012e3839ee38388e383aae38383e382afe382b90000\
    0015001c662f2f3439396b39353464364f4c33346f4c394653547679363473410014000b6578616d706c652e6f726700\
    00080014f67024656dd64a3e02b8e0712e85c9a28ca89666";

fn parse(c: &mut Criterion) {
    let bytes = hex(BINDING_REQUEST);
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("binding_request", |b| {
        b.iter(|| {
            let m = Message::parse(black_box(&bytes)).unwrap();
            black_box(m.get(attr::USERNAME));
            black_box(check_fingerprint(&m));
        })
    });

    let auth = hex(AUTHENTICATED_REQUEST);
    let key: [u8; 16] = Md5::digest(
        "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}:example.org:TheMatrIX".as_bytes(),
    )
    .into();
    g.throughput(Throughput::Bytes(auth.len() as u64));
    g.bench_function("authenticated_request_check_sha1", |b| {
        b.iter(|| {
            let m = Message::parse(black_box(&auth)).unwrap();
            assert_eq!(check_sha1(&m, black_box(&key)), Integrity::Valid);
        })
    });
    g.finish();
}

fn write(c: &mut Criterion) {
    let tid = [0x5a; 12];
    let mapped: SocketAddr = "198.51.100.7:55432".parse().unwrap();
    let key = [0x42u8; 16];
    let mut buf = [0u8; 256];
    c.bench_function("write/binding_success_xma_mi_fp", |b| {
        b.iter(|| {
            let mut w =
                MessageWriter::new(&mut buf, Method::Binding, Class::Success, black_box(&tid))
                    .unwrap();
            w.xor_address(attr::XOR_MAPPED_ADDRESS, black_box(mapped))
                .unwrap();
            w.message_integrity(&key).unwrap();
            w.fingerprint().unwrap();
            black_box(w.finish())
        })
    });
}

fn channel_data(c: &mut Criterion) {
    let mut datagram = vec![0u8; 4 + 1200];
    let mut header = [0u8; 4];
    uturn::stun::channel::write_header(&mut header, 0x4001, 1200);
    datagram[..4].copy_from_slice(&header);
    let mut g = c.benchmark_group("channel_data");
    g.throughput(Throughput::Bytes(datagram.len() as u64));
    g.bench_function("parse", |b| {
        b.iter(|| black_box(ChannelData::parse(black_box(&datagram)).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, parse, write, channel_data);
criterion_main!(benches);
