//! The ESP data path allocates nothing per packet: sealing and opening happen in the caller's
//! buffer. This file is its own test binary with a single test, so the allocations it counts
//! are its own.

// The allocation counter has to implement `GlobalAlloc`, which is an unsafe trait. It only
// forwards to the system allocator; nothing of it is part of the library.
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use erebus_ipsec::crypto::Aead;
use erebus_ipsec::esp::{HEADROOM, Inbound, Outbound, TAILROOM};
use erebus_ipsec::proposal::Encr;

/// Allocations made by the whole process.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

struct Counting;

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counter has no effect on memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's guarantees for `alloc` are passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr` and `layout` come from this allocator, which is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` and `layout` come from this allocator, which is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn sealing_and_opening_allocate_nothing() {
    for encr in [
        Encr::AesGcm16 { bits: 128 },
        Encr::AesGcm16 { bits: 256 },
        Encr::ChaCha20Poly1305,
    ] {
        let material = vec![0x42; encr.keymat_len()];
        let mut out = Outbound::new(0x1000, Aead::new(encr, &material).unwrap());
        let mut inb = Inbound::new(0x1000, Aead::new(encr, &material).unwrap(), 128);
        let mut buf = vec![0u8; HEADROOM + 1400 + TAILROOM];
        let mut wire = vec![0u8; HEADROOM + 1400 + TAILROOM];
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for round in 0..1000usize {
            let len = 40 + round % 1360;
            buf[HEADROOM] = 0x45;
            let outer = out.seal(&mut buf, HEADROOM..HEADROOM + len).unwrap();
            let n = outer.len();
            wire[..n].copy_from_slice(&buf[outer]);
            let inner = inb.open(&mut wire[..n]).unwrap().unwrap();
            assert_eq!(inner.len(), len);
        }
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
        assert_eq!(
            allocations, 0,
            "{encr}: {allocations} allocations for 1000 packets"
        );
    }
}
