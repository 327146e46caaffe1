//! The data-channel fixture shared by the zero-allocation test and the data-channel benchmark:
//! both ends of one key for every cipher erebus supports, in-place packet buffers, and the
//! zero-allocation check itself.

#![allow(dead_code)] // The test and the benchmark each use a different part.

use core::ops::Range;

use erebus_alloc_counter::count;
use erebus_openvpn::DataChannel;
use erebus_openvpn::data::{AeadAlg, AuthAlg, CipherAlg, DataCipher, DataConfig, Key2Role};
use erebus_openvpn::packet::{KeyId, PeerId};
use erebus_sansio::{Instant, Seed};

/// Inner packet size: a full-size IPv4 packet under a 1500-byte link after the overhead.
pub(crate) const PACKET_LEN: usize = 1400;

/// Every AEAD cipher, by its OpenVPN name.
pub(crate) fn aead_ciphers() -> Vec<(String, DataCipher)> {
    AeadAlg::ALL
        .into_iter()
        .map(|alg| (alg.openvpn_name().to_owned(), DataCipher::Aead(alg)))
        .collect()
}

/// Every CBC cipher with every HMAC, named as OpenVPN's `cipher` and `auth` options.
pub(crate) fn cbc_hmac_ciphers() -> Vec<(String, DataCipher)> {
    let mut all = Vec::new();
    for cipher in [
        CipherAlg::Aes128Cbc,
        CipherAlg::Aes192Cbc,
        CipherAlg::Aes256Cbc,
    ] {
        for auth in [AuthAlg::Sha1, AuthAlg::Sha256, AuthAlg::Sha512] {
            all.push((
                format!("{}+HMAC-{}", cipher.openvpn_name(), auth.openvpn_name()),
                DataCipher::CbcHmac { cipher, auth },
            ));
        }
    }
    all
}

/// The two ends of one key, client and server, from fixed key material, framed as a TLS-mode
/// client does (`P_DATA_V2` header, no compression framing).
pub(crate) fn channels(cipher: DataCipher) -> (DataChannel, DataChannel) {
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

/// A buffer holding one `len`-byte inner IPv4 packet with `channel`'s headroom and tailroom
/// around it, and where the inner packet is.
pub(crate) fn packet_buffer(channel: &DataChannel, len: usize) -> (Vec<u8>, Range<usize>) {
    let overhead = channel.overhead();
    let mut buf = vec![0u8; overhead.headroom + len + overhead.tailroom];
    let inner = overhead.headroom..overhead.headroom + len;
    for (i, byte) in buf[inner.clone()].iter_mut().enumerate() {
        *byte = i as u8;
    }
    buf[inner.start] = 0x45;
    (buf, inner)
}

/// Packets per cipher and direction.
pub(crate) const PACKETS: usize = 1000;

/// Seals `PACKETS` packets on the client's end and opens them on the server's, and panics
/// unless neither side allocated (with the counting allocator installed). The buffers are made
/// beforehand: they are the caller's.
pub(crate) fn seal_and_open(name: &str, cipher: DataCipher) {
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
            *outer = client
                .seal(Instant::ZERO, buf, inner.clone())
                .expect("room was reserved");
        }
    });
    let (opened, opening) = count(|| {
        let mut opened = 0;
        for (buf, outer) in buffers.iter_mut().zip(&outers) {
            let inner = server
                .open(Instant::ZERO, &mut buf[outer.clone()])
                .expect("authentic packet");
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
