//! The whole client path allocates nothing per packet in steady state: local stream bytes
//! into inner IP packets into outer datagrams (OpenVPN static-key, AES-256-CBC with
//! HMAC-SHA256), and outer datagrams back into inner packets into stream bytes for the local
//! connection, both ways at once, through erebus's client with its user-space stack and its
//! port-forward front end (see `tests/support`).

mod support;

#[global_allocator]
static ALLOCATOR: erebus_alloc_counter::CountingAllocator = erebus_alloc_counter::CountingAllocator;

#[test]
fn client_path_allocates_nothing_in_steady_state() {
    support::steady_state_allocates_nothing();
}
