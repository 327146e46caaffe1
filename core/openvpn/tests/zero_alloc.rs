//! The data channel allocates nothing per packet: for every cipher erebus supports, sealing
//! and opening a thousand packets of varied sizes works in the caller's buffers only.
//!
//! The counting allocator counts per thread, so the tests of this binary may run in parallel.

mod support;

use erebus_alloc_counter::CountingAllocator;
use support::{aead_ciphers, cbc_hmac_ciphers, seal_and_open};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

#[test]
fn aead_seal_and_open_allocate_nothing() {
    for (name, cipher) in aead_ciphers() {
        seal_and_open(&name, cipher);
    }
}

#[test]
fn cbc_hmac_seal_and_open_allocate_nothing() {
    for (name, cipher) in cbc_hmac_ciphers() {
        seal_and_open(&name, cipher);
    }
}
