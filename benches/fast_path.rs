//! Cost of one forwarded packet in the sans-IO state machine (no sockets):
//! client → peer ChannelData, peer → client ChannelData, and peer → client
//! Data indication, with 1, 100 and 10 000 other allocations present.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

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

criterion_group!(benches, fast_path);
criterion_main!(benches);
