//! Data-channel tests: the captured static-key layout, an independent reimplementation of it,
//! tampering, replay and malformed input.

use super::inband::PING_MAGIC;
use super::*;
use crate::keys::{KeyDirection, StaticKey};
use crate::packet::{KeyId, PeerId};
use aes::Aes256;
use cbc::cipher::KeyIvInit;
use erebus_sansio::UnixTime;
use proptest::prelude::*;

const CAPTURE_KEY: &str = include_str!("../../../../testvectors/captures/static-key/static.key");

/// The first client-to-server packet of the static-key capture: a ping with packet id 1 and
/// time 0x6b020ae7, sent with `key-direction 1`, AES-256-CBC and HMAC-SHA256.
const CAPTURED_PING: &str = "
    67c623959059e97ee5172582ce6604c3ae033b0795ece4d2a9c4e136289fc75d
    6499d0e95a87b8d369bbbffd388f77f5
    ae90ba28ade43f328bcb9d2d7f3f28e579351a0c962428b0aa37be53f150e16b";
const CAPTURED_TIME: u32 = 0x6b02_0ae7;

pub(crate) fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn capture_key() -> StaticKey {
    StaticKey::parse(CAPTURE_KEY.as_bytes()).unwrap()
}

fn clock_at(unix: u32) -> WallClock {
    WallClock::new(Instant::ZERO, UnixTime::from_secs(u64::from(unix)))
}

fn channel(direction: KeyDirection, cipher: CipherAlg, auth: AuthAlg) -> DataChannel {
    DataChannel::static_key(
        &capture_key().directional(direction),
        cipher,
        auth,
        ReplayConfig::default(),
        clock_at(CAPTURED_TIME),
        &Seed::from_byte(1),
    )
    .unwrap()
}

/// An independent reading of the static-key layout for AES-256-CBC + HMAC-SHA256: built from the
/// primitives directly, with its own offsets.
fn reference_seal(slot: &KeySlot, iv: [u8; 16], pid: u32, time: u32, payload: &[u8]) -> Vec<u8> {
    let mut plain = pid.to_be_bytes().to_vec();
    plain.extend(time.to_be_bytes());
    plain.extend_from_slice(payload);
    let mut ciphertext = vec![0u8; plain.len() + 16];
    let len = cbc::Encryptor::<Aes256>::new_from_slices(&slot.cipher_key()[..32], &iv)
        .unwrap()
        .encrypt_padded_b2b::<Pkcs7>(&plain, &mut ciphertext)
        .unwrap()
        .len();
    ciphertext.truncate(len);
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&slot.hmac_key()[..32]).unwrap();
    mac.update(&iv);
    mac.update(&ciphertext);
    let mut out = mac.finalize().into_bytes().to_vec();
    out.extend(iv);
    out.extend(ciphertext);
    out
}

fn reference_open(slot: &KeySlot, packet: &[u8]) -> Option<(u32, u32, Vec<u8>)> {
    let (tag, rest) = packet.split_at(32);
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&slot.hmac_key()[..32]).unwrap();
    mac.update(rest);
    mac.verify_slice(tag).ok()?;
    let (iv, ciphertext) = rest.split_at(16);
    let mut plain = vec![0u8; ciphertext.len()];
    let len = cbc::Decryptor::<Aes256>::new_from_slices(&slot.cipher_key()[..32], iv)
        .unwrap()
        .decrypt_padded_b2b::<Pkcs7>(ciphertext, &mut plain)
        .ok()?
        .len();
    plain.truncate(len);
    let pid = u32::from_be_bytes(plain[..4].try_into().unwrap());
    let time = u32::from_be_bytes(plain[4..8].try_into().unwrap());
    Some((pid, time, plain[8..].to_vec()))
}

/// Seals `payload` and returns the outer packet as its own vector.
fn seal_vec(channel: &mut DataChannel, now: Instant, payload: &[u8]) -> Vec<u8> {
    let overhead = channel.overhead();
    let mut buf = vec![0u8; overhead.headroom + payload.len() + overhead.tailroom];
    let inner = overhead.headroom..overhead.headroom + payload.len();
    buf[inner.clone()].copy_from_slice(payload);
    let outer = channel.seal(now, &mut buf, inner).unwrap();
    assert_eq!(outer.start, 0);
    buf[outer].to_vec()
}

fn open_vec(channel: &mut DataChannel, now: Instant, packet: &[u8]) -> Result<Vec<u8>, DropReason> {
    let mut buf = packet.to_vec();
    let range = channel.open(now, &mut buf)?;
    Ok(buf[range].to_vec())
}

#[test]
fn captured_ping_opens_on_the_server_side() {
    // The server runs `secret static.key 0`: it receives with slot 1.
    let mut server = channel(KeyDirection::Normal, CipherAlg::Aes256Cbc, AuthAlg::Sha256);
    let packet = hex(CAPTURED_PING);
    assert_eq!(packet.len(), 80);
    assert_eq!(
        open_vec(&mut server, Instant::ZERO, &packet),
        Ok(PING_MAGIC.to_vec())
    );
    assert_eq!(
        server.debug_highest(),
        PacketId {
            id: 1,
            time: CAPTURED_TIME
        }
    );
    // The independent reading agrees.
    let key = capture_key();
    let (pid, time, payload) =
        reference_open(key.slot(crate::keys::KeySlotIndex::One), &packet).unwrap();
    assert_eq!(
        (pid, time, payload),
        (1, CAPTURED_TIME, PING_MAGIC.to_vec())
    );
    // The client's own direction cannot open it: it receives with slot 0.
    let mut client = channel(KeyDirection::Inverse, CipherAlg::Aes256Cbc, AuthAlg::Sha256);
    assert_eq!(
        open_vec(&mut client, Instant::ZERO, &packet),
        Err(DropReason::Unauthentic)
    );
}

#[test]
fn sealing_the_captured_ping_reproduces_it_byte_for_byte() {
    let captured = hex(CAPTURED_PING);
    let iv: [u8; 16] = captured[32..48].try_into().unwrap();
    let mut client = channel(KeyDirection::Inverse, CipherAlg::Aes256Cbc, AuthAlg::Sha256);
    let overhead = client.overhead();
    assert_eq!((overhead.headroom, overhead.tailroom), (32 + 16 + 8, 16));
    let mut buf = vec![0u8; 128];
    buf[overhead.headroom..overhead.headroom + 16].copy_from_slice(&PING_MAGIC);
    let outer = client
        .seal_with_iv(
            Instant::ZERO,
            &mut buf,
            overhead.headroom..overhead.headroom + 16,
            iv,
        )
        .unwrap();
    assert_eq!(outer, 0..80);
    assert_eq!(buf[outer], captured[..]);
}

#[test]
fn sealed_packets_match_the_independent_layout() {
    let key = capture_key();
    let mut client = channel(KeyDirection::Inverse, CipherAlg::Aes256Cbc, AuthAlg::Sha256);
    for (n, len) in [1usize, 15, 16, 17, 100, 1500].into_iter().enumerate() {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + n) as u8).collect();
        let packet = seal_vec(&mut client, Instant::from_secs(n as u64), &payload);
        // HMAC 32 + IV 16 + (8 + len) padded to the next multiple of 16.
        assert_eq!(packet.len(), 48 + (8 + len) / 16 * 16 + 16);
        let (pid, time, opened) =
            reference_open(key.slot(crate::keys::KeySlotIndex::One), &packet).unwrap();
        assert_eq!(pid, n as u32 + 1);
        assert_eq!(time, CAPTURED_TIME, "the time is fixed at the first packet");
        assert_eq!(opened, payload);
        // And the reference, given the same IV, produces the same bytes.
        let iv: [u8; 16] = packet[32..48].try_into().unwrap();
        assert_eq!(
            reference_seal(
                key.slot(crate::keys::KeySlotIndex::One),
                iv,
                pid,
                time,
                &payload
            ),
            packet
        );
    }
}

#[test]
fn ivs_are_fresh_per_packet() {
    let mut client = channel(KeyDirection::Inverse, CipherAlg::Aes256Cbc, AuthAlg::Sha256);
    let a = seal_vec(&mut client, Instant::ZERO, &PING_MAGIC);
    let b = seal_vec(&mut client, Instant::ZERO, &PING_MAGIC);
    assert_ne!(a[32..48], b[32..48]);
}

#[test]
fn every_algorithm_pair_round_trips() {
    let ciphers = [
        CipherAlg::None,
        CipherAlg::Aes128Cbc,
        CipherAlg::Aes192Cbc,
        CipherAlg::Aes256Cbc,
    ];
    let auths = [
        AuthAlg::None,
        AuthAlg::Sha1,
        AuthAlg::Sha256,
        AuthAlg::Sha512,
    ];
    for cipher in ciphers {
        for auth in auths {
            let mut client = channel(KeyDirection::Inverse, cipher, auth);
            let mut server = channel(KeyDirection::Normal, cipher, auth);
            let overhead = client.overhead();
            assert_eq!(
                overhead.headroom,
                auth.digest_len() + cipher.block_len() + 8,
                "{cipher:?} {auth:?}"
            );
            for len in [1usize, 16, 31, 1400] {
                let payload: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
                let packet = seal_vec(&mut client, Instant::ZERO, &payload);
                assert!(packet.len() <= payload.len() + overhead.total());
                assert_eq!(
                    open_vec(&mut server, Instant::ZERO, &packet),
                    Ok(payload.clone())
                );
                let back = seal_vec(&mut server, Instant::ZERO, &payload);
                assert_eq!(open_vec(&mut client, Instant::ZERO, &back), Ok(payload));
            }
        }
    }
}

#[test]
fn cipher_none_layout_is_hmac_then_clear_packet_id() {
    let key = capture_key();
    let mut client = channel(KeyDirection::Inverse, CipherAlg::None, AuthAlg::Sha1);
    let packet = seal_vec(&mut client, Instant::ZERO, b"payload");
    assert_eq!(packet.len(), 20 + 8 + 7);
    assert_eq!(packet[20..24], [0, 0, 0, 1]);
    assert_eq!(packet[24..28], CAPTURED_TIME.to_be_bytes());
    assert_eq!(&packet[28..], b"payload");
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(
        &key.slot(crate::keys::KeySlotIndex::One).hmac_key()[..20],
    )
    .unwrap();
    mac.update(&packet[20..]);
    assert_eq!(mac.finalize().into_bytes()[..], packet[..20]);
}

#[test]
fn tampered_packets_are_dropped_and_counted() {
    let mut client = channel(KeyDirection::Inverse, CipherAlg::Aes256Cbc, AuthAlg::Sha256);
    let mut server = channel(KeyDirection::Normal, CipherAlg::Aes256Cbc, AuthAlg::Sha256);
    let packet = seal_vec(&mut client, Instant::ZERO, b"\x45 an ip packet");
    // One bit flipped in the HMAC, the IV, the first and the last ciphertext block.
    for at in [0, 31, 32, 47, 48, packet.len() - 1] {
        let mut bad = packet.clone();
        bad[at] ^= 0x01;
        assert_eq!(
            open_vec(&mut server, Instant::ZERO, &bad),
            Err(DropReason::Unauthentic),
            "bit flipped at {at}"
        );
    }
    assert_eq!(server.drops().get(DropReason::Unauthentic), 6);
    assert_eq!(
        server.debug_highest(),
        PacketId::default(),
        "drops change nothing"
    );
    // The genuine packet still opens, once.
    assert_eq!(
        open_vec(&mut server, Instant::ZERO, &packet),
        Ok(b"\x45 an ip packet".to_vec())
    );
    assert_eq!(
        open_vec(&mut server, Instant::ZERO, &packet),
        Err(DropReason::Replayed)
    );
    assert_eq!(server.drops().get(DropReason::Replayed), 1);
    // And the session goes on.
    let next = seal_vec(&mut client, Instant::ZERO, b"next");
    assert_eq!(
        open_vec(&mut server, Instant::ZERO, &next),
        Ok(b"next".to_vec())
    );
    assert_eq!(server.drops().total(), 7);
}

#[test]
fn malformed_lengths_are_dropped() {
    let mut server = channel(KeyDirection::Normal, CipherAlg::Aes256Cbc, AuthAlg::Sha256);
    for len in [0usize, 1, 31, 32, 48, 63] {
        assert_eq!(
            open_vec(&mut server, Instant::ZERO, &vec![0u8; len]),
            Err(if len < 32 {
                DropReason::Malformed
            } else {
                DropReason::Unauthentic
            }),
            "length {len}"
        );
    }
    // Authentic but impossible: a ciphertext that is not whole blocks, or an empty payload.
    let mut no_auth = channel(KeyDirection::Normal, CipherAlg::Aes256Cbc, AuthAlg::None);
    assert_eq!(
        open_vec(&mut no_auth, Instant::ZERO, &[0u8; 16 + 17]),
        Err(DropReason::Malformed)
    );
    let mut client = channel(KeyDirection::Inverse, CipherAlg::None, AuthAlg::Sha256);
    let mut plain_server = channel(KeyDirection::Normal, CipherAlg::None, AuthAlg::Sha256);
    let mut packet = seal_vec(&mut client, Instant::ZERO, b"x");
    packet.pop();
    // Re-sign the truncated packet so only the emptiness is wrong.
    let key = capture_key();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(
        &key.slot(crate::keys::KeySlotIndex::One).hmac_key()[..32],
    )
    .unwrap();
    mac.update(&packet[32..]);
    let tag = mac.finalize().into_bytes();
    packet[..32].copy_from_slice(&tag);
    assert_eq!(
        open_vec(&mut plain_server, Instant::ZERO, &packet),
        Err(DropReason::Malformed)
    );
    assert_eq!(plain_server.debug_highest(), PacketId::default());
}

#[test]
fn seal_checks_room_and_uses_no_id_on_failure() {
    let mut client = channel(KeyDirection::Inverse, CipherAlg::Aes256Cbc, AuthAlg::Sha256);
    let mut buf = [0u8; 100];
    assert_eq!(
        client.seal(Instant::ZERO, &mut buf, 55..60),
        Err(SealError::NoRoom)
    );
    assert_eq!(
        client.seal(Instant::ZERO, &mut buf, 56..85),
        Err(SealError::NoRoom)
    );
    assert_eq!(
        client.seal(Instant::ZERO, &mut buf, 56..56),
        Err(SealError::Empty)
    );
    assert_eq!(client.last_sent(), Some(PacketId::default()));
    // Extra headroom is fine: the outer packet starts exactly `headroom` before the payload.
    assert_eq!(client.seal(Instant::ZERO, &mut buf, 60..84), Ok(4..100));
    assert_eq!(client.last_sent().map(|p| p.id), Some(1));
}

#[test]
fn plaintext_passes_packets_unchanged() {
    let mut plain = DataChannel::plaintext();
    assert_eq!(plain.overhead(), Overhead::default());
    let mut buf = *b"\x45\x00 hello";
    assert_eq!(plain.seal(Instant::ZERO, &mut buf, 0..8), Ok(0..8));
    assert_eq!(&buf, b"\x45\x00 hello");
    assert_eq!(plain.open(Instant::ZERO, &mut buf), Ok(0..8));
    assert_eq!(
        plain.open(Instant::ZERO, &mut []),
        Err(DropReason::Malformed)
    );
    assert_eq!(plain.drops().get(DropReason::Malformed), 1);
}

#[test]
fn a_header_goes_in_front_for_tls_mode() {
    let header = DataHeader::V2 {
        key_id: KeyId::ZERO,
        peer_id: PeerId::new(7).unwrap(),
    };
    let keys = capture_key();
    let make = |direction| {
        DataChannel::cbc_hmac(
            &keys.directional(direction),
            CipherAlg::Aes128Cbc,
            AuthAlg::Sha1,
            PacketIdForm::Short,
            ReplayConfig::default(),
            clock_at(0),
            &Seed::from_byte(2),
        )
        .unwrap()
        .with_header(header)
    };
    let mut client = make(KeyDirection::Inverse);
    let mut server = make(KeyDirection::Normal);
    assert_eq!(client.overhead().headroom, 4 + 20 + 16 + 4);
    let packet = seal_vec(&mut client, Instant::ZERO, b"tls mode payload");
    assert_eq!(packet[..4], [0x48, 0, 0, 7]);
    let mut buf = packet;
    let range = server.open(Instant::ZERO, &mut buf).unwrap();
    assert_eq!(&buf[range], b"tls mode payload");
}

#[test]
fn restart_accepts_the_peer_again() {
    let mut client = channel(KeyDirection::Inverse, CipherAlg::Aes256Cbc, AuthAlg::Sha256);
    let mut server = channel(KeyDirection::Normal, CipherAlg::Aes256Cbc, AuthAlg::Sha256);
    for _ in 0..100 {
        let packet = seal_vec(&mut client, Instant::ZERO, b"data");
        open_vec(&mut server, Instant::ZERO, &packet).unwrap();
    }
    // The client restarts within the same second: its ids start at 1 again with a later time.
    client.restart();
    let packet = seal_vec(&mut client, Instant::ZERO, b"again");
    assert_eq!(
        client.last_sent().map(|p| (p.id, p.time)),
        Some((1, CAPTURED_TIME + 1))
    );
    assert_eq!(
        open_vec(&mut server, Instant::ZERO, &packet),
        Ok(b"again".to_vec())
    );
}

#[test]
fn zero_cipher_key_is_refused() {
    let key = StaticKey::from_bytes(&[0u8; 256]);
    let err = DataChannel::static_key(
        &key.directional(KeyDirection::Bidirectional),
        CipherAlg::Aes256Cbc,
        AuthAlg::Sha1,
        ReplayConfig::default(),
        clock_at(0),
        &Seed::from_byte(0),
    )
    .unwrap_err();
    assert_eq!(err, DataChannelError::ZeroCipherKey { direction: "send" });
    // Without a cipher there is no cipher key to check.
    assert!(
        DataChannel::static_key(
            &key.directional(KeyDirection::Bidirectional),
            CipherAlg::None,
            AuthAlg::Sha1,
            ReplayConfig::default(),
            clock_at(0),
            &Seed::from_byte(0),
        )
        .is_ok()
    );
}

#[test]
fn algorithm_names() {
    assert_eq!(
        CipherAlg::from_openvpn_name("aes-256-cbc"),
        Some(CipherAlg::Aes256Cbc)
    );
    assert_eq!(CipherAlg::from_openvpn_name("none"), Some(CipherAlg::None));
    assert_eq!(CipherAlg::from_openvpn_name("BF-CBC"), None);
    assert_eq!(CipherAlg::from_openvpn_name("AES-256-GCM"), None);
    assert_eq!(AuthAlg::from_openvpn_name("sha256"), Some(AuthAlg::Sha256));
    assert_eq!(AuthAlg::from_openvpn_name("SHA-512"), Some(AuthAlg::Sha512));
    assert_eq!(AuthAlg::from_openvpn_name("MD5"), None);
}

#[test]
fn debug_shows_no_keys() {
    let client = channel(KeyDirection::Inverse, CipherAlg::Aes256Cbc, AuthAlg::Sha256);
    let text = format!("{client:?}");
    assert!(text.contains("Aes256Cbc"), "{text}");
    let key = capture_key();
    let slot = key.slot(crate::keys::KeySlotIndex::One);
    let needle: String = slot.cipher_key()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!text.contains(&needle));
}

impl DataChannel {
    pub(crate) fn debug_highest(&self) -> PacketId {
        match &self.layout {
            Layout::Plaintext => PacketId::default(),
            Layout::CbcHmac(state) => state.replay.highest(),
            Layout::Aead(state) => state.highest_received(),
        }
    }
}

proptest! {
    #[test]
    fn open_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), layout in 0usize..5) {
        let mut channel = match layout {
            0 => DataChannel::plaintext(),
            1 => channel(KeyDirection::Normal, CipherAlg::Aes256Cbc, AuthAlg::Sha256),
            2 => channel(KeyDirection::Normal, CipherAlg::Aes128Cbc, AuthAlg::None),
            3 => channel(KeyDirection::Normal, CipherAlg::None, AuthAlg::None),
            _ => channel(KeyDirection::Normal, CipherAlg::None, AuthAlg::Sha1)
                .with_header(DataHeader::V1 { key_id: KeyId::ZERO }),
        };
        let mut buf = bytes;
        if let Ok(range) = channel.open(Instant::ZERO, &mut buf) {
            prop_assert!(range.end <= buf.len() && !range.is_empty());
        }
    }

    #[test]
    fn seal_then_open_is_identity(
        payload in proptest::collection::vec(any::<u8>(), 1..300),
        cipher in prop_oneof![Just(CipherAlg::None), Just(CipherAlg::Aes192Cbc)],
        auth in prop_oneof![Just(AuthAlg::None), Just(AuthAlg::Sha512)],
    ) {
        let mut client = channel(KeyDirection::Inverse, cipher, auth);
        let mut server = channel(KeyDirection::Normal, cipher, auth);
        let packet = seal_vec(&mut client, Instant::ZERO, &payload);
        prop_assert_eq!(open_vec(&mut server, Instant::ZERO, &packet), Ok(payload));
    }
}
