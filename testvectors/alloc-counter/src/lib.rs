//! A global allocator that counts heap allocations, so that tests and benchmarks can prove a
//! data path allocates nothing per packet in steady state.
//!
//! The core crates forbid `unsafe`, and implementing [`GlobalAlloc`] is unsafe, so the one
//! implementation lives here, outside core, as a dev-dependency only. A test binary installs
//! it with a safe declaration:
//!
//! ```text
//! #[global_allocator]
//! static ALLOCATOR: erebus_alloc_counter::CountingAllocator = erebus_alloc_counter::CountingAllocator;
//! ```
//!
//! and wraps the code under test in [`count`]. Allocations are counted per thread, so that the
//! test harness's own threads (and other tests running in parallel in the same binary) do not
//! show up in a count; the sans-IO code under test runs entirely on the caller's thread.

// `GlobalAlloc` is an unsafe trait; every method only forwards to the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    /// Allocations and reallocations made by this thread so far. A `const` cell without a
    /// destructor: reading it never allocates, which matters inside an allocator.
    static THREAD_ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting every allocation and reallocation of the calling thread.
/// Frees are not counted: a data path that allocates must also have allocated.
#[derive(Clone, Copy, Debug, Default)]
pub struct CountingAllocator;

fn record() {
    // During thread teardown the slot may be gone; those allocations are not the data path's.
    let _ = THREAD_ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counter has no effect on memory.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record();
        // SAFETY: the caller's guarantees for `alloc` are passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record();
        // SAFETY: `ptr` and `layout` come from this allocator, which is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` and `layout` come from this allocator, which is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Heap allocations (and reallocations) the calling thread has made so far. Zero unless
/// [`CountingAllocator`] is the binary's global allocator.
pub fn thread_allocations() -> u64 {
    THREAD_ALLOCATIONS.try_with(Cell::get).unwrap_or(0)
}

/// Runs `f` and returns its result with the heap allocations the calling thread made meanwhile.
pub fn count<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = thread_allocations();
    let result = f();
    (result, thread_allocations() - before)
}

/// Whether [`CountingAllocator`] is the binary's global allocator, so that a count of zero
/// means something: tests assert it before trusting their counts.
pub fn is_installed() -> bool {
    count(|| std::hint::black_box(Box::new(0u8))).1 > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static ALLOCATOR: CountingAllocator = CountingAllocator;

    #[test]
    fn counts_this_threads_allocations_only() {
        assert!(is_installed());
        let (boxed, allocations) = count(|| Box::new(7u64));
        assert_eq!((*boxed, allocations), (7, 1));
        // Spawning allocates on this thread, a little; the thousand boxes on the other thread
        // are not counted.
        let (boxes, allocations) = count(|| {
            std::thread::spawn(|| (0..1000u64).map(Box::new).collect::<Vec<_>>().len())
                .join()
                .unwrap_or(0)
        });
        assert_eq!(boxes, 1000);
        assert!(allocations < 100, "{allocations} allocations counted");
        let (_, allocations) = count(|| 2 + 2);
        assert_eq!(allocations, 0);
    }
}
