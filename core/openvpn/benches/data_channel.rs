//! Data-channel cost per 1400-byte inner packet, sealed and opened in place, for every AEAD
//! cipher and two CBC + HMAC pairs, as a TLS-mode client frames them (`P_DATA_V2` header, no
//! compression framing).
//!
//! Beside each AEAD cipher, the same crate's raw AEAD on the same machine: `aes-gcm` or
//! `chacha20poly1305` encrypting (and decrypting) the same 1400 bytes in place with a detached
//! tag (`encrypt_inout_detached`, which `encrypt_in_place_detached` became in `aead` 0.6) and
//! the eight bytes of associated data OpenVPN authenticates. The ratio of the two is
//! what erebus's framing (header, packet id, replay window, key selection) costs on top of the
//! cipher.
//!
//! Beside those, ring's AEAD on the same payload: the fastest implementation on this kind of
//! CPU (its assembly uses VAES and AVX2), the yardstick for how close the data channel gets.
//!
//! Before measuring a cipher, the benchmark runs the zero-allocation check of
//! `tests/zero_alloc.rs` on it (which `cargo test` runs for every cipher) and fails unless the
//! data channel made no heap allocation: a figure for a path that allocates would mislead.

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;

use aes_gcm::aead::{AeadInOut, KeyInit, Nonce};
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm};
use chacha20poly1305::ChaCha20Poly1305;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use erebus_alloc_counter::CountingAllocator;
use erebus_openvpn::data::{AeadAlg, AuthAlg, CipherAlg, DataCipher};
use erebus_sansio::Instant;
use ring::aead;
use support::{PACKET_LEN, aead_ciphers, channels, packet_buffer, seal_and_open};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// AES-192-GCM with the 96-bit nonce, as the data channel builds it.
type Aes192Gcm = AesGcm<aes::Aes192, aes_gcm::aead::consts::U12>;

/// What OpenVPN's AEAD data channel authenticates besides the payload: the `P_DATA_V2`
/// opcode and peer id, and the packet id.
const AAD: [u8; 8] = [0x48, 0, 0, 0, 0, 0, 0, 1];

/// The CBC + HMAC pairs measured: OpenVPN's default digest with the smallest key, and the
/// usual configuration of static-key profiles.
fn cbc_hmac_ciphers() -> [(String, DataCipher); 2] {
    let pair = |cipher: CipherAlg, auth: AuthAlg| {
        (
            format!("{}+HMAC-{}", cipher.openvpn_name(), auth.openvpn_name()),
            DataCipher::CbcHmac { cipher, auth },
        )
    };
    [
        pair(CipherAlg::Aes128Cbc, AuthAlg::Sha1),
        pair(CipherAlg::Aes256Cbc, AuthAlg::Sha256),
    ]
}

/// Sealing and opening one inner packet with erebus's data channel.
fn bench_erebus(c: &mut Criterion, name: &str, cipher: DataCipher) {
    seal_and_open(name, cipher);
    let (mut client, mut server) = channels(cipher);
    let mut group = c.benchmark_group("data_channel");
    group.throughput(Throughput::Bytes(PACKET_LEN as u64));

    // Sealing in place over and over: the payload's bytes do not matter to the cost.
    let (mut buf, inner) = packet_buffer(&client, PACKET_LEN);
    group.bench_function(format!("seal/{name}/erebus"), |b| {
        b.iter(|| {
            black_box(
                client
                    .seal(Instant::ZERO, black_box(&mut buf), inner.clone())
                    .expect("room was reserved"),
            )
        });
    });

    // Every open needs a fresh authentic packet (the replay window refuses repeats), so each
    // is sealed beforehand, outside the measurement.
    let (template, inner) = packet_buffer(&client, PACKET_LEN);
    group.bench_function(format!("open/{name}/erebus"), |b| {
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
    group.finish();
}

/// Encrypting and decrypting the same payload with the AEAD crate directly.
fn bench_raw<A: AeadInOut + KeyInit>(c: &mut Criterion, name: &str) {
    let key = vec![0x42; A::key_size()];
    let aead = A::new_from_slice(&key).expect("key of the cipher's size");
    let nonce = Nonce::<A>::default();
    let mut group = c.benchmark_group("data_channel");
    group.throughput(Throughput::Bytes(PACKET_LEN as u64));

    let mut payload = vec![0x45u8; PACKET_LEN];
    group.bench_function(format!("seal/{name}/raw_aead"), |b| {
        b.iter(|| {
            black_box(
                aead.encrypt_inout_detached(&nonce, &AAD, black_box(&mut payload[..]).into())
                    .expect("payload within the cipher's limit"),
            )
        });
    });

    let mut sealed = vec![0x45u8; PACKET_LEN];
    let tag = aead
        .encrypt_inout_detached(&nonce, &AAD, sealed[..].as_mut().into())
        .expect("payload within the cipher's limit");
    group.bench_function(format!("open/{name}/raw_aead"), |b| {
        b.iter_batched_ref(
            || sealed.clone(),
            |payload| {
                aead.decrypt_inout_detached(&nonce, &AAD, payload[..].as_mut().into(), &tag)
                    .expect("authentic payload");
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

/// Encrypting and decrypting the same payload with ring, whose assembly (VAES and AVX2 where
/// the CPU has them) is the fastest AEAD available here: the data channel's target is set
/// against it.
fn bench_ring(c: &mut Criterion, name: &str, algorithm: &'static aead::Algorithm) {
    let key = vec![0x42; algorithm.key_len()];
    let key = aead::LessSafeKey::new(
        aead::UnboundKey::new(algorithm, &key).expect("key of the cipher's size"),
    );
    let nonce = || aead::Nonce::assume_unique_for_key([0; aead::NONCE_LEN]);
    let mut group = c.benchmark_group("data_channel");
    group.throughput(Throughput::Bytes(PACKET_LEN as u64));

    let mut payload = vec![0x45u8; PACKET_LEN];
    group.bench_function(format!("seal/{name}/ring"), |b| {
        b.iter(|| {
            black_box(
                key.seal_in_place_separate_tag(
                    nonce(),
                    aead::Aad::from(AAD),
                    black_box(&mut payload[..]),
                )
                .expect("payload within the cipher's limit"),
            )
        });
    });

    let mut sealed = vec![0x45u8; PACKET_LEN];
    let tag = key
        .seal_in_place_separate_tag(nonce(), aead::Aad::from(AAD), &mut sealed)
        .expect("payload within the cipher's limit");
    sealed.extend_from_slice(tag.as_ref());
    group.bench_function(format!("open/{name}/ring"), |b| {
        b.iter_batched_ref(
            || sealed.clone(),
            |payload| {
                key.open_in_place(nonce(), aead::Aad::from(AAD), payload)
                    .expect("authentic payload");
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn bench_data_channel(c: &mut Criterion) {
    for (name, cipher) in aead_ciphers() {
        bench_erebus(c, &name, cipher);
        match cipher {
            DataCipher::Aead(AeadAlg::Aes128Gcm) => {
                bench_raw::<Aes128Gcm>(c, &name);
                bench_ring(c, &name, &aead::AES_128_GCM);
            }
            // ring has no AES-192-GCM.
            DataCipher::Aead(AeadAlg::Aes192Gcm) => bench_raw::<Aes192Gcm>(c, &name),
            DataCipher::Aead(AeadAlg::Aes256Gcm) => {
                bench_raw::<Aes256Gcm>(c, &name);
                bench_ring(c, &name, &aead::AES_256_GCM);
            }
            DataCipher::Aead(AeadAlg::ChaCha20Poly1305) => {
                bench_raw::<ChaCha20Poly1305>(c, &name);
                bench_ring(c, &name, &aead::CHACHA20_POLY1305);
            }
            DataCipher::CbcHmac { .. } => unreachable!("aead_ciphers lists AEADs only"),
        }
    }
    for (name, cipher) in cbc_hmac_ciphers() {
        bench_erebus(c, &name, cipher);
    }
}

criterion_group!(benches, bench_data_channel);
criterion_main!(benches);
