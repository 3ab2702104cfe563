//! A global allocator that counts allocations made by the current thread
//! (and the bytes they ask for) while counting is switched on, then hands every call to the system
//! allocator. Tests install it to show that the forwarding path never
//! allocates (DESIGN.md); the relay itself never uses it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
    static BYTES: Cell<usize> = const { Cell::new(0) };
}

/// What `count_allocated` saw.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Allocated {
    /// Allocations, reallocations included.
    pub allocations: usize,
    /// Bytes they asked for (a reallocation counts its whole new size).
    pub bytes: usize,
}

/// Install with `#[global_allocator] static A: CountingAlloc = CountingAlloc;`.
pub struct CountingAlloc;

/// Runs `f` and returns how many allocations (including reallocations) this
/// thread made while it ran.
pub fn count_allocations(f: impl FnOnce()) -> usize {
    let before = COUNT.with(Cell::get);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    COUNT.with(Cell::get) - before
}

/// Runs `f` and returns how many allocations this thread made while it ran,
/// and how many bytes they asked for.
pub fn count_allocated(f: impl FnOnce()) -> Allocated {
    let (count, bytes) = (COUNT.with(Cell::get), BYTES.with(Cell::get));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    Allocated {
        allocations: COUNT.with(Cell::get) - count,
        bytes: BYTES.with(Cell::get) - bytes,
    }
}

fn note(size: usize) {
    // `try_with`: during thread teardown the locals may be gone; then nothing is counted.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        let _ = BYTES.try_with(|c| c.set(c.get() + size));
    }
}

// SAFETY: every method forwards its arguments unchanged to `System`, which
// upholds the GlobalAlloc contract; the bookkeeping touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's layout obligations pass through unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr` was allocated by `System` through this wrapper with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` through this wrapper with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}
