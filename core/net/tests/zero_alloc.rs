//! The TCP stack allocates nothing per packet in steady state: over a 16 MiB bulk transfer
//! between two stacks, from 2 MiB received to 14 MiB (after the handshake and slow start have
//! sized every queue, before the close), the only heap allocations are the few steps in which
//! a socket's buffer doubles as its receive window grows with the transfer. The data path
//! works in the caller's buffers and the stack's own.
//!
//! Both shapes of arrival are checked: a link paced at 10 Gbit/s, where segments arrive one by
//! one, and one with no rate, where a whole window lands at once and is acknowledged at once.
//! The counting allocator counts per thread, so the two tests may run in parallel.

mod support;

use erebus_alloc_counter::CountingAllocator;
use support::{PACED_RATE, steady_state_allocates_nothing};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

#[test]
fn paced_bulk_transfer_allocates_nothing_in_steady_state() {
    steady_state_allocates_nothing(Some(PACED_RATE));
}

#[test]
fn unpaced_bulk_transfer_allocates_nothing_in_steady_state() {
    steady_state_allocates_nothing(None);
}
