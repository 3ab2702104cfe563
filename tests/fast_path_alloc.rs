//! DESIGN.md: the forwarding path does not allocate. The counting allocator
//! from `uturn::io::count_alloc` wraps the system allocator; allocations this
//! test's thread makes while forwarding must stay at zero, in both
//! directions and for both framings (ChannelData and Data indication).

use uturn::io::count_alloc::{count_allocations, CountingAlloc};

#[path = "support/fast_path.rs"]
mod support;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[test]
fn forwarding_does_not_allocate() {
    let mut fp = support::FastPath::with_other_allocations(0);
    let pkt = fp.channel_data(120);
    let mut buf = support::FastPath::peer_buffer(1200);
    let (peer, other) = (fp.peer, fp.peer_no_channel);

    // Warm up (first use of anything lazily initialised), then measure.
    assert_eq!(fp.client_to_peer(&pkt), 120, "ChannelData is forwarded");
    assert_eq!(
        fp.peer_to_client(peer, &mut buf, 120),
        124,
        "peer data comes back as ChannelData"
    );
    assert!(
        fp.peer_to_client(other, &mut buf, 120) > 120,
        "unbound peer data comes back as a Data indication"
    );

    let mut forwarded = 0usize;
    let allocations = count_allocations(|| {
        for i in 0..20_000 {
            forwarded += fp.client_to_peer(&pkt);
            forwarded += fp.peer_to_client(peer, &mut buf, 100 + i % 1000);
            forwarded += fp.peer_to_client(other, &mut buf, 100 + i % 1000);
        }
    });
    assert!(forwarded > 60_000 * 100, "every packet was forwarded");
    assert_eq!(allocations, 0, "heap allocations on the forwarding path");
}

#[test]
fn the_counter_sees_allocations() {
    // The check above means something only if the counter works.
    let n = count_allocations(|| {
        let v: Vec<u8> = Vec::with_capacity(std::hint::black_box(64));
        std::hint::black_box(&v);
    });
    assert_eq!(n, 1);
}
