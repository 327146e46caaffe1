//! The data channel allocates nothing per packet: for every cipher erebus supports, sealing
//! and opening a thousand packets of varied sizes works in the caller's buffers only.
//!
//! The counting allocator counts per thread, so the tests of this binary may run in parallel.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod support;

use erebus_alloc_counter::{CountingAllocator, count};
use erebus_openvpn::data::DataCipher;
use erebus_sansio::Instant;
use support::{PACKET_LEN, aead_ciphers, cbc_hmac_ciphers, channels, packet_buffer};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Packets per cipher and direction.
const PACKETS: usize = 1000;

/// Seals `PACKETS` packets on the client's end and opens them on the server's, counting the
/// allocations of each side. The buffers are made beforehand: they are the caller's.
fn seal_and_open(name: &str, cipher: DataCipher) {
    assert!(erebus_alloc_counter::is_installed());
    let (mut client, mut server) = channels(cipher);
    let (template, _) = packet_buffer(&client, PACKET_LEN);
    let headroom = client.overhead().headroom;
    let mut buffers = vec![template; PACKETS];
    // Sizes from a bare IPv4 header to the full packet, so every padding length of CBC occurs.
    let inners: Vec<_> = (0..PACKETS)
        .map(|i| headroom..headroom + 20 + i * 7919 % (PACKET_LEN - 19))
        .collect();
    let mut outers = vec![0..0; PACKETS];

    let ((), sealing) = count(|| {
        for ((buf, inner), outer) in buffers.iter_mut().zip(&inners).zip(outers.iter_mut()) {
            *outer = client.seal(Instant::ZERO, buf, inner.clone()).unwrap();
        }
    });
    let (opened, opening) = count(|| {
        let mut opened = 0;
        for (buf, outer) in buffers.iter_mut().zip(&outers) {
            let inner = server.open(Instant::ZERO, &mut buf[outer.clone()]).unwrap();
            opened += usize::from(buf[outer.start + inner.start] == 0x45);
        }
        opened
    });
    assert_eq!(
        opened, PACKETS,
        "{name}: every packet opens to its IPv4 header"
    );
    assert_eq!(
        (sealing, opening),
        (0, 0),
        "{name}: allocations while sealing and opening {PACKETS} packets"
    );
}

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
