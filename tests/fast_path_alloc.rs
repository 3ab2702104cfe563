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

/// DESIGN.md invariant 1 and SECURITY.md rule 4: a 401 to an unauthenticated
/// request (what a flood of spoofed Allocates gets) stores nothing, so it
/// allocates nothing either.
#[test]
fn a_401_does_not_allocate() {
    let mut fp = support::FastPath::with_other_allocations(0);
    let pkt = support::FastPath::unauthenticated_allocate();
    let source = |n: u32| std::net::SocketAddr::from(([100, 64, (n >> 8) as u8, n as u8], 40000));
    assert!(fp.request_from(source(0), &pkt) > 0, "a 401 is written");
    let mut written = 0usize;
    let allocations = count_allocations(|| {
        for n in 0..20_000u32 {
            fp.now.at += std::time::Duration::from_millis(1);
            written += fp.request_from(source(n % 4096), &pkt);
        }
    });
    assert!(written > 20_000 * 20, "every request got its 401");
    assert_eq!(allocations, 0, "heap allocations answering 401s");
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
