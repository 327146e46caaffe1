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

use std::hint::black_box;
#[allow(clippy::disallowed_types)]
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
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

// Timing only the client's calls needs the clock; the sans-IO rule is the library's, and the
// benchmark is a program around it.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
fn bench_client_path(c: &mut Criterion) {
    steady_state_allocates_nothing();
    let mut group = c.benchmark_group("client_path");
    group.throughput(Throughput::Elements(1));

    let mut path = warm_path();
    group.bench_function("uplink/stream_chunk_to_datagram", |b| {
        b.iter_custom(|iterations| {
            let mut timed = Duration::ZERO;
            for _ in 0..iterations {
                // Let the peer acknowledge until the client takes local bytes again.
                path.tick();
                while path.upload_paused {
                    path.round(false, false);
                }
                let start = Instant::now();
                path.upload_chunk();
                path.drain_client();
                timed += start.elapsed();
                path.run_peer(false);
                path.deliver_all_to_client();
            }
            black_box(path.transmitted);
            timed
        });
    });

    let mut path = warm_path();
    group.bench_function("downlink/datagram_to_stream", |b| {
        b.iter_custom(|iterations| {
            let mut timed = Duration::ZERO;
            for _ in 0..iterations {
                path.tick();
                while path.to_client.is_empty() {
                    path.run_peer(true);
                }
                let datagram = path.to_client.pop_front().expect("a datagram is waiting");
                let start = Instant::now();
                path.deliver_to_client(&datagram);
                path.drain_client();
                timed += start.elapsed();
                path.recycle(datagram);
            }
            black_box(path.downloaded);
            timed
        });
    });
    group.finish();
}

criterion_group!(benches, bench_client_path);
criterion_main!(benches);
