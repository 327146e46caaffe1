//! Data-channel throughput: sealing and opening 1400-byte inner packets in place with
//! AES-256-GCM, ChaCha20-Poly1305 and AES-256-CBC + HMAC-SHA256, as a TLS-mode client does
//! (`P_DATA_V2` header, no compression framing).
//!
//! Before measuring, the benchmark counts heap allocations over a thousand seals and a thousand
//! opens per cipher with a counting global allocator, and fails unless there are none: the data
//! path must work in the caller's buffers only.

// The counting allocator has to implement `GlobalAlloc`, which is an unsafe trait. It only
// forwards to the system allocator; nothing of it is part of the library.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use erebus_openvpn::DataChannel;
use erebus_openvpn::data::{AeadAlg, AuthAlg, CipherAlg, DataCipher, DataConfig, Key2Role};
use erebus_openvpn::packet::{KeyId, PeerId};
use erebus_sansio::{Instant, Seed};

/// Heap allocations made by the whole process so far.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting every allocation and reallocation.
struct CountingAllocator;

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counter has no effect on memory.
unsafe impl GlobalAlloc for CountingAllocator {
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
static GLOBAL: CountingAllocator = CountingAllocator;

/// Inner packet size: a full-size IPv4 packet under a 1500-byte link after the overhead.
const PACKET_LEN: usize = 1400;
/// Packets per allocation count.
const COUNTED_PACKETS: usize = 1000;

fn ciphers() -> [(&'static str, DataCipher); 3] {
    [
        ("AES-256-GCM", DataCipher::Aead(AeadAlg::Aes256Gcm)),
        (
            "CHACHA20-POLY1305",
            DataCipher::Aead(AeadAlg::ChaCha20Poly1305),
        ),
        (
            "AES-256-CBC+HMAC-SHA256",
            DataCipher::CbcHmac {
                cipher: CipherAlg::Aes256Cbc,
                auth: AuthAlg::Sha256,
            },
        ),
    ]
}

/// The two ends of one key, from fixed key material.
fn channels(cipher: DataCipher) -> (DataChannel, DataChannel) {
    let key2: [u8; 256] = core::array::from_fn(|i| (i as u8).wrapping_mul(31) ^ 0xa5);
    let config = DataConfig {
        peer_id: PeerId::new(0),
        ..DataConfig::new(cipher)
    };
    let make = |role| {
        DataChannel::from_key2(&key2, role, KeyId::ZERO, &config, &Seed::from_byte(1))
            .expect("valid keys")
    };
    (make(Key2Role::Client), make(Key2Role::Server))
}

/// A buffer holding one inner packet with the channel's headroom and tailroom around it.
fn packet_buffer(channel: &DataChannel) -> (Vec<u8>, core::ops::Range<usize>) {
    let overhead = channel.overhead();
    let mut buf = vec![0u8; overhead.headroom + PACKET_LEN + overhead.tailroom];
    let inner = overhead.headroom..overhead.headroom + PACKET_LEN;
    for (i, byte) in buf[inner.clone()].iter_mut().enumerate() {
        *byte = i as u8;
    }
    buf[inner.start] = 0x45;
    (buf, inner)
}

/// Heap allocations per packet while sealing, then opening, `COUNTED_PACKETS` packets.
fn allocations_per_packet(cipher: DataCipher) -> (f64, f64) {
    let (mut client, mut server) = channels(cipher);
    let (template, inner) = packet_buffer(&client);
    let mut buffers = vec![template; COUNTED_PACKETS];
    let mut outers = vec![0..0; COUNTED_PACKETS];

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for (buf, outer) in buffers.iter_mut().zip(outers.iter_mut()) {
        *outer = client
            .seal(Instant::ZERO, buf, inner.clone())
            .expect("room was reserved");
    }
    let sealing = ALLOCATIONS.load(Ordering::Relaxed) - before;

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for (buf, outer) in buffers.iter_mut().zip(&outers) {
        let opened = server
            .open(Instant::ZERO, &mut buf[outer.clone()])
            .expect("authentic packet");
        black_box(opened);
    }
    let opening = ALLOCATIONS.load(Ordering::Relaxed) - before;

    let per_packet = |count: u64| count as f64 / COUNTED_PACKETS as f64;
    (per_packet(sealing), per_packet(opening))
}

#[allow(clippy::print_stdout)]
fn report_allocations() {
    for (name, cipher) in ciphers() {
        let (seal, open) = allocations_per_packet(cipher);
        println!("{name}: {seal} allocations per sealed packet, {open} per opened packet");
        assert!(
            seal == 0.0 && open == 0.0,
            "{name}: the data path allocated ({seal} per seal, {open} per open)"
        );
    }
}

fn bench_data_channel(c: &mut Criterion) {
    report_allocations();
    let mut group = c.benchmark_group("data_channel");
    group.throughput(Throughput::Bytes(PACKET_LEN as u64));
    for (name, cipher) in ciphers() {
        let (mut client, mut server) = channels(cipher);

        // Sealing in place over and over: the payload's bytes do not matter to the cost.
        let (mut buf, inner) = packet_buffer(&client);
        group.bench_function(format!("seal/{name}"), |b| {
            b.iter(|| {
                black_box(
                    client
                        .seal(Instant::ZERO, black_box(&mut buf), inner.clone())
                        .expect("room was reserved"),
                )
            });
        });

        // Every open needs a fresh authentic packet (the replay window refuses repeats), so
        // each is sealed beforehand, outside the measurement.
        let (template, inner) = packet_buffer(&client);
        group.bench_function(format!("open/{name}"), |b| {
            b.iter_batched_ref(
                || {
                    let mut buf = template.clone();
                    let outer = client
                        .seal(Instant::ZERO, &mut buf, inner.clone())
                        .expect("room was reserved");
                    (buf, outer)
                },
                |(buf, outer)| {
                    black_box(
                        server
                            .open(Instant::ZERO, &mut buf[outer.clone()])
                            .expect("authentic packet"),
                    )
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, bench_data_channel);
criterion_main!(benches);
