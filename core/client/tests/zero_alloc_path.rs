//! The whole client path allocates nothing per packet in steady state: local stream bytes
//! into inner IP packets into outer datagrams (OpenVPN static-key, AES-256-CBC with
//! HMAC-SHA256), and outer datagrams back into inner packets into stream bytes for the local
//! connection, both ways at once, through erebus's client with its user-space stack and its
//! port-forward front end (see `tests/support`).

mod support;

use support::ClientPath;

#[global_allocator]
static ALLOCATOR: erebus_alloc_counter::CountingAllocator = erebus_alloc_counter::CountingAllocator;

/// Bytes each way before counting: the handshake and slow start have sized every queue.
const WARM_UP: u64 = 2 << 20;
/// Bytes each way while counting.
const COUNTED: u64 = 8 << 20;
/// Bound on rounds, so that a stalled transfer fails instead of hanging.
const MAX_ROUNDS: u64 = 1_000_000;

#[test]
fn client_path_allocates_nothing_in_steady_state() {
    assert!(erebus_alloc_counter::is_installed());
    let mut path = ClientPath::new();
    let mut rounds = 0;
    let mut run_until = |path: &mut ClientPath, bytes: u64| {
        while path.uploaded < bytes || path.downloaded < bytes {
            rounds += 1;
            assert!(rounds < MAX_ROUNDS, "the transfer stalled");
            path.round(path.uploaded < bytes, path.downloaded < bytes);
        }
    };
    run_until(&mut path, WARM_UP);

    let (allocations, uploaded, downloaded, transmitted) = (
        path.client_allocations,
        path.uploaded,
        path.downloaded,
        path.transmitted,
    );
    run_until(&mut path, WARM_UP + COUNTED);
    let allocations = path.client_allocations - allocations;
    let uploaded = path.uploaded - uploaded;
    let downloaded = path.downloaded - downloaded;
    let transmitted = path.transmitted - transmitted;
    assert!(
        transmitted > 5000 && uploaded > COUNTED / 2 && downloaded > COUNTED / 2,
        "the window saw the bulk of the transfer: {transmitted} datagrams sent, \
         {uploaded} bytes up, {downloaded} bytes down"
    );
    assert_eq!(
        allocations, 0,
        "the client allocated while sending {transmitted} datagrams ({uploaded} bytes up, \
         {downloaded} bytes down)"
    );
}
