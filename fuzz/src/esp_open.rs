//! `esp_open`: ESP packets from the network opened by [`Inbound::open`], with a fixed key for
//! each cipher erebus has (AES-GCM-16 with 128- and 256-bit keys, ChaCha20-Poly1305).
//!
//! The first byte picks the replay window. Then come [`Records`](crate::Records), each opened
//! by one long-lived [`Inbound`] per cipher (so the replay window sees the whole sequence). The
//! tag byte says what the body is:
//!
//! - [`RAW`]: an ESP packet as received;
//! - [`FORGED`]: an ESP packet whose payload (after SPI, sequence number and IV) is plaintext:
//!   the harness encrypts it and appends a valid tag, so the fuzzer reaches the trailer
//!   checks behind the authentication;
//! - [`SEALED`]: an inner packet, sealed by a long-lived [`Outbound`] with the same key;
//!   it must open to the same bytes.
//!
//! An authentic packet must not open twice (the second time it is a replay).

use erebus_ipsec::crypto::{Aead, TAG_LEN};
use erebus_ipsec::esp::{HEADROOM, Inbound, NEXT_DUMMY, NEXT_IPV4, NEXT_IPV6, Outbound, TAILROOM};
use erebus_ipsec::proposal::Encr;
use erebus_sansio::tunnel::DropReason;

use crate::Records;

/// The tag of a packet as received.
pub const RAW: u8 = 0;
/// The tag of a packet the harness authenticates.
pub const FORGED: u8 = 1;
/// The tag of an inner packet the harness seals.
pub const SEALED: u8 = 2;

/// The SPI of every SA here.
pub const SPI: u32 = 0x0102_0304;

/// Replay windows the first byte picks from (out-of-range ones are clamped by the library).
const WINDOWS: [u32; 6] = [32, 64, 128, 1024, 0, 100_000];

/// The ciphers and their fixed key material (key then 4-byte salt).
pub fn ciphers() -> Vec<(Encr, Aead)> {
    [
        Encr::AesGcm16 { bits: 128 },
        Encr::AesGcm16 { bits: 256 },
        Encr::ChaCha20Poly1305,
    ]
    .into_iter()
    .map(|encr| {
        let material = vec![0x11; encr.keymat_len()];
        let aead = Aead::new(encr, &material).expect("an AEAD key");
        (encr, aead)
    })
    .collect()
}

/// The harness.
pub fn run(data: &[u8]) {
    let Some((&window, records)) = data.split_first() else {
        return;
    };
    let window = WINDOWS[usize::from(window) % WINDOWS.len()];
    let mut sas: Vec<(Aead, Inbound, Outbound)> = ciphers()
        .into_iter()
        .map(|(_, aead)| {
            let inbound = Inbound::new(SPI, aead.clone(), window);
            let outbound = Outbound::new(SPI, aead.clone());
            (aead, inbound, outbound)
        })
        .collect();
    for (tag, body) in Records::new(records) {
        for (aead, inbound, outbound) in &mut sas {
            match tag % 3 {
                RAW => open(inbound, body.to_vec(), None),
                FORGED => {
                    if let Some(packet) = forge(aead, body) {
                        open(inbound, packet, Some(body));
                    }
                }
                _ => seal_and_open(outbound, inbound, body),
            }
        }
    }
}

/// `body` with its payload encrypted and a valid tag appended.
fn forge(aead: &Aead, body: &[u8]) -> Option<Vec<u8>> {
    if body.len() < HEADROOM {
        return None;
    }
    let mut packet = body.to_vec();
    let iv: [u8; 8] = packet[8..HEADROOM].try_into().ok()?;
    let (head, payload) = packet.split_at_mut(HEADROOM);
    let tag = aead.seal(&iv, &head[..8], payload)?;
    packet.extend_from_slice(&tag);
    Some(packet)
}

/// Opens `packet`; `plain` is what its payload decrypts to when the harness forged it.
fn open(inbound: &mut Inbound, packet: Vec<u8>, plain: Option<&[u8]>) {
    let original = packet.clone();
    let mut packet = packet;
    let result = inbound.open(&mut packet);
    if let Ok(opened) = &result {
        let payload_end = packet.len() - TAG_LEN;
        let next_header = packet[payload_end - 1];
        match opened {
            Some(inner) => {
                assert!(matches!(next_header, NEXT_IPV4 | NEXT_IPV6));
                assert_eq!(inner.start, HEADROOM);
                assert!(
                    inner.end + 2 <= payload_end,
                    "{inner:?} runs into the trailer"
                );
            }
            None => assert_eq!(next_header, NEXT_DUMMY),
        }
        if let (Some(inner), Some(plain)) = (opened, plain) {
            assert_eq!(&packet[inner.clone()], &plain[inner.clone()]);
        }
        // The same packet again is a replay.
        let mut again = original;
        assert_eq!(inbound.open(&mut again), Err(DropReason::Replayed));
    }
}

/// Seals `inner` and opens the result: the same bytes must come out.
fn seal_and_open(outbound: &mut Outbound, inbound: &mut Inbound, inner: &[u8]) {
    let mut buf = vec![0u8; HEADROOM + inner.len() + TAILROOM];
    buf[HEADROOM..HEADROOM + inner.len()].copy_from_slice(inner);
    let before = outbound.sequence();
    let Ok(outer) = outbound.seal(&mut buf, HEADROOM..HEADROOM + inner.len()) else {
        assert!(inner.is_empty(), "sealing {} bytes failed", inner.len());
        return;
    };
    assert_eq!(outbound.sequence(), before + 1);
    assert_eq!(outer.start, 0);
    let mut packet = buf[outer].to_vec();
    assert_eq!(packet[..4], SPI.to_be_bytes());
    match inbound.open(&mut packet) {
        Ok(Some(range)) => assert_eq!(&packet[range], inner),
        // An inner "packet" is sealed with next header IPv4 or IPv6 (never dummy); the window
        // may refuse it when earlier forged packets used higher sequence numbers.
        Err(DropReason::Replayed) => {}
        other => panic!("a packet we sealed opened as {other:?}"),
    }
}
