//! Cost of one forwarded packet in the sans-IO state machine (no sockets):
//! client → peer ChannelData, peer → client ChannelData, and peer → client
//! Data indication, with 1, 100 and 10 000 other allocations present.
//!
//! Beside it, the control path's cheapest and most abused answer: the 401 to
//! an unauthenticated Allocate (parse, FINGERPRINT check, rate limiter, error
//! response with REALM, a fresh nonce and PASSWORD-ALGORITHMS), from many
//! source addresses as a flood sends it; and the challenge attributes alone
//! (`Authenticator::write_challenge`, the nonce's HMAC included).

use std::net::SocketAddr;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use uturn::stun::{Class, MessageWriter, Method};
use uturn::turn::Transport;

#[path = "../tests/support/fast_path.rs"]
mod support;

fn fast_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("fast_path");
    g.throughput(Throughput::Elements(1));
    for others in [0usize, 99, 9_999] {
        let mut fp = support::FastPath::with_other_allocations(others);
        let allocations = others + 1;
        let pkt = fp.channel_data(120);
        let mut buf = support::FastPath::peer_buffer(1200);
        let (peer, other) = (fp.peer, fp.peer_no_channel);
        g.bench_with_input(
            BenchmarkId::new("client_to_peer_channel_data", allocations),
            &(),
            |b, _| b.iter(|| black_box(fp.client_to_peer(black_box(&pkt)))),
        );
        g.bench_with_input(
            BenchmarkId::new("peer_to_client_channel_data", allocations),
            &(),
            |b, _| b.iter(|| black_box(fp.peer_to_client(peer, black_box(&mut buf), 120))),
        );
        g.bench_with_input(
            BenchmarkId::new("peer_to_client_data_indication", allocations),
            &(),
            |b, _| b.iter(|| black_box(fp.peer_to_client(other, black_box(&mut buf), 120))),
        );
    }
    g.finish();
}

fn control_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("control_path");
    g.throughput(Throughput::Elements(1));

    let mut fp = support::FastPath::with_other_allocations(0);
    let pkt = support::FastPath::unauthenticated_allocate();
    let sources: Vec<SocketAddr> = (0..4096u32)
        .map(|n| SocketAddr::from(([100, 64, (n >> 8) as u8, n as u8], 40000)))
        .collect();
    assert!(fp.request_from(sources[0], &pkt) > 0, "a 401 is written");
    let mut i = 0usize;
    g.bench_function("allocate_401", |b| {
        b.iter(|| {
            // Each source asks once per 4096 iterations, and the clock moves
            // on, so the per-source limiter lets every request through.
            i = (i + 1) % sources.len();
            fp.now.at += Duration::from_micros(10);
            black_box(fp.request_from(sources[i], black_box(&pkt)))
        })
    });

    let auth = support::authenticator();
    let mut buf = [0u8; 512];
    g.bench_function("challenge_attributes", |b| {
        b.iter(|| {
            let mut w = MessageWriter::new(&mut buf, Method::Allocate, Class::Error, &[7; 12])
                .expect("fits");
            auth.write_challenge(&mut w, black_box(sources[1]), Transport::Udp, 1_800_000_000)
                .expect("fits");
            black_box(w.finish())
        })
    });
    g.finish();
}

criterion_group!(benches, fast_path, control_path);
criterion_main!(benches);
