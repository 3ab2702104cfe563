//! DESIGN.md invariant 6: an idle allocation costs well under 1 KiB of user
//! space. Its fixed part, the table slot, is bounded by a unit test in
//! `turn/allocation.rs`; this bounds the heap part. An allocation with one
//! permission asks for two small blocks (its credentials and a one-element
//! permission list), never a list sized for the quota or a second copy of
//! the username.

use std::net::SocketAddr;

use uturn::io::count_alloc::{count_allocated, CountingAlloc};

#[path = "support/fast_path.rs"]
mod support;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[test]
fn an_idle_allocation_with_one_permission_is_two_small_heap_blocks() {
    let mut fp = support::FastPath::with_other_allocations(0);
    let peer = fp.peer;
    // Warm up with a first client (anything lazily initialised), then measure a second.
    let first: SocketAddr = "203.0.113.6:40000".parse().expect("addr");
    for req in fp.idle_allocation_requests(first, peer) {
        assert!(
            fp.control_succeeds(first, &req),
            "set-up of the first client"
        );
    }
    let client: SocketAddr = "203.0.113.7:40000".parse().expect("addr");
    let [allocate, permit] = fp.idle_allocation_requests(client, peer);
    let mut ok = true;
    let heap = count_allocated(|| {
        ok &= fp.control_succeeds(client, &allocate);
        ok &= fp.control_succeeds(client, &permit);
    });
    assert!(ok, "Allocate and CreatePermission succeed");
    // The username "bench" (5 bytes, also the quota id) and one permission (40 bytes).
    assert!(
        heap.allocations <= 2,
        "heap blocks per idle allocation: {heap:?}"
    );
    assert!(heap.bytes <= 64, "heap bytes per idle allocation: {heap:?}");
}
