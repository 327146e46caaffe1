//! The whole client path per packet: erebus's client over an OpenVPN static-key tunnel
//! (AES-256-CBC, HMAC-SHA256) to an in-memory peer (see `tests/support`).
//!
//! - `uplink`: one local read of 1300 stream bytes into the client, and everything the client
//!   then sends: the inner TCP segment sealed into an outer datagram.
//! - `downlink`: one outer datagram carrying a full-size segment into the client, and
//!   everything it then does: the stream bytes for the local connection, and its ACK sealed
//!   into a datagram when one is due.
//!
//! Only the client's calls are timed; the peer, its stack and the way back run between
//! measurements. Before measuring, the benchmark runs the zero-allocation check of
//! `tests/zero_alloc_path.rs` (which `cargo test` runs) and fails unless the client allocated
//! nothing per packet on either path.

#[path = "../tests/support/mod.rs"]
mod support;

use std::cell::{RefCell, RefMut};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use erebus_alloc_counter::CountingAllocator;
use support::{ClientPath, steady_state_allocates_nothing};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Bytes moved each way before measuring, so that slow start is over.
const WARM_UP: u64 = 1 << 20;

fn warm_path() -> ClientPath {
    let mut path = ClientPath::new();
    while path.uploaded < WARM_UP || path.downloaded < WARM_UP {
        path.round(true, true);
    }
    path
}

/// Finishes the previous uplink round (the peer acknowledges, the client takes its ACKs) and
/// readies the next: everything but the client's own calls, run outside the measurement.
fn next_upload(path: &RefCell<ClientPath>) -> RefMut<'_, ClientPath> {
    let mut path = path.borrow_mut();
    path.run_peer(false);
    path.deliver_all_to_client();
    path.tick();
    // Let the peer acknowledge until the client takes local bytes again.
    while path.upload_paused {
        path.round(false, false);
    }
    path
}

/// A warm path and the datagram being delivered to its client.
struct Downlink {
    path: ClientPath,
    datagram: Vec<u8>,
}

/// Returns the previous downlink datagram's buffer and takes the next datagram for the client:
/// everything but the client's own calls, run outside the measurement.
fn next_download(downlink: &RefCell<Downlink>) -> RefMut<'_, Downlink> {
    let mut downlink = downlink.borrow_mut();
    let Downlink { path, datagram } = &mut *downlink;
    path.recycle(std::mem::take(datagram));
    path.tick();
    while path.to_client.is_empty() {
        path.run_peer(true);
    }
    *datagram = path.to_client.pop_front().expect("a datagram is waiting");
    downlink
}

fn bench_client_path(c: &mut Criterion) {
    steady_state_allocates_nothing();
    let mut group = c.benchmark_group("client_path");
    group.throughput(Throughput::Elements(1));

    // One packet per batch: each setup depends on what the previous packet did, and criterion
    // times only the routine, the client's calls.
    let path = RefCell::new(warm_path());
    group.bench_function("uplink/stream_chunk_to_datagram", |b| {
        b.iter_batched_ref(
            || next_upload(&path),
            |path| {
                path.upload_chunk();
                path.drain_client();
            },
            BatchSize::PerIteration,
        );
    });

    let downlink = RefCell::new(Downlink {
        path: warm_path(),
        datagram: Vec::new(),
    });
    group.bench_function("downlink/datagram_to_stream", |b| {
        b.iter_batched_ref(
            || next_download(&downlink),
            |downlink| {
                let Downlink { path, datagram } = &mut **downlink;
                path.deliver_to_client(datagram);
                path.drain_client();
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, bench_client_path);
criterion_main!(benches);
