//! The AEAD layout of TLS mode: AES-128/192/256-GCM and ChaCha20-Poly1305.
//!
//! ```text
//! P_DATA_V2: [0x48|key id][peer id (3)][packet id (4)][tag (16)][ciphertext]
//! P_DATA_V1: [0x30|key id][packet id (4)][tag (16)][ciphertext]
//!
//! nonce           = packet id (4) || implicit IV (8)
//! additional data = V2: the 4 header bytes || packet id;  V1: the packet id only
//! ```
//!
//! The implicit IV is the first 8 bytes of the direction's HMAC key slot, which AEAD ciphers
//! otherwise leave unused. The ciphertext has the plaintext's length: there is no padding, and the
//! tag sits in front of the ciphertext rather than after it, so both directions work on the
//! caller's buffer in place with detached tags. The packet id is the short form, from 1 for
//! each key; the nonce must never repeat under one key, so the counter never wraps and the
//! channel refuses to send once it is exhausted.

use core::fmt;

use aes::{Aes128, Aes192, Aes256};
use aes_gcm::AesGcm;
use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{AeadInOut, KeyInit, Nonce, Tag};
use chacha20poly1305::ChaCha20Poly1305;
use erebus_sansio::Instant;
use erebus_sansio::tunnel::DropReason;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::keys::{DirectionalKeys, KeySlot};
use crate::packet::DataHeader;
use crate::replay::{PacketId, ReplayConfig, ReplayWindow};

use super::DataChannelError;

/// Bytes of the authentication tag.
pub const TAG_LEN: usize = 16;
/// Bytes of the implicit IV taken from the HMAC key slot.
pub const IMPLICIT_IV_LEN: usize = 8;
/// Bytes of the packet id (short form).
pub const PACKET_ID_LEN: usize = 4;
/// Bytes of the nonce.
const NONCE_LEN: usize = PACKET_ID_LEN + IMPLICIT_IV_LEN;

/// An AEAD data-channel cipher (`--cipher` / `--data-ciphers` in TLS mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AeadAlg {
    /// AES-128 in GCM mode.
    Aes128Gcm,
    /// AES-192 in GCM mode.
    Aes192Gcm,
    /// AES-256 in GCM mode.
    Aes256Gcm,
    /// ChaCha20-Poly1305 (RFC 8439).
    ChaCha20Poly1305,
}

impl AeadAlg {
    /// Every AEAD cipher erebus supports.
    pub const ALL: [Self; 4] = [
        Self::Aes128Gcm,
        Self::Aes192Gcm,
        Self::Aes256Gcm,
        Self::ChaCha20Poly1305,
    ];

    /// The cipher OpenVPN calls `name` (case-insensitive), if supported here.
    pub fn from_openvpn_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|alg| alg.openvpn_name().eq_ignore_ascii_case(name))
    }

    /// The name OpenVPN configurations and pushes use.
    pub const fn openvpn_name(self) -> &'static str {
        match self {
            Self::Aes128Gcm => "AES-128-GCM",
            Self::Aes192Gcm => "AES-192-GCM",
            Self::Aes256Gcm => "AES-256-GCM",
            Self::ChaCha20Poly1305 => "CHACHA20-POLY1305",
        }
    }

    /// Key length in bytes.
    pub const fn key_len(self) -> usize {
        match self {
            Self::Aes128Gcm => 16,
            Self::Aes192Gcm => 24,
            Self::Aes256Gcm | Self::ChaCha20Poly1305 => 32,
        }
    }

    /// Bytes the layout adds in front of the payload, not counting the opcode header.
    pub const fn headroom(self) -> usize {
        PACKET_ID_LEN + TAG_LEN
    }
}

/// AES-192-GCM with the 96-bit nonce; `aes-gcm` names only the 128- and 256-bit variants.
type Aes192Gcm = AesGcm<Aes192, U12>;
type Aes128Gcm = AesGcm<Aes128, U12>;
type Aes256Gcm = AesGcm<Aes256, U12>;

/// A keyed AEAD. Every variant zeroizes its key schedule on drop.
#[derive(Clone)]
enum AeadKey {
    Aes128(Aes128Gcm),
    Aes192(Aes192Gcm),
    Aes256(Aes256Gcm),
    ChaCha(ChaCha20Poly1305),
}

impl AeadKey {
    fn new(alg: AeadAlg, key: &[u8]) -> Option<Self> {
        Some(match alg {
            AeadAlg::Aes128Gcm => Self::Aes128(KeyInit::new_from_slice(key).ok()?),
            AeadAlg::Aes192Gcm => Self::Aes192(KeyInit::new_from_slice(key).ok()?),
            AeadAlg::Aes256Gcm => Self::Aes256(KeyInit::new_from_slice(key).ok()?),
            AeadAlg::ChaCha20Poly1305 => Self::ChaCha(KeyInit::new_from_slice(key).ok()?),
        })
    }

    /// Encrypts `payload` in place and returns the tag; `None` only for lengths the cipher
    /// cannot take (over 64 GiB).
    fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], payload: &mut [u8]) -> Option<[u8; 16]> {
        fn run<A: AeadInOut<NonceSize = U12>>(
            aead: &A,
            nonce: &[u8; NONCE_LEN],
            aad: &[u8],
            payload: &mut [u8],
        ) -> Option<[u8; TAG_LEN]> {
            let nonce = Nonce::<A>::from(*nonce);
            let tag = aead
                .encrypt_inout_detached(&nonce, aad, payload.into())
                .ok()?;
            tag.as_slice().try_into().ok()
        }
        match self {
            Self::Aes128(aead) => run(aead, nonce, aad, payload),
            Self::Aes192(aead) => run(aead, nonce, aad, payload),
            Self::Aes256(aead) => run(aead, nonce, aad, payload),
            Self::ChaCha(aead) => run(aead, nonce, aad, payload),
        }
    }

    /// Verifies `tag` and decrypts `payload` in place; false (the payload then holds nothing
    /// meaningful) when the packet is not authentic.
    fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        payload: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> bool {
        fn run<A: AeadInOut<NonceSize = U12>>(
            aead: &A,
            nonce: &[u8; NONCE_LEN],
            aad: &[u8],
            payload: &mut [u8],
            tag: &[u8; TAG_LEN],
        ) -> bool {
            let nonce = Nonce::<A>::from(*nonce);
            let Ok(tag) = Tag::<A>::try_from(&tag[..]) else {
                return false;
            };
            aead.decrypt_inout_detached(&nonce, aad, payload.into(), &tag)
                .is_ok()
        }
        match self {
            Self::Aes128(aead) => run(aead, nonce, aad, payload, tag),
            Self::Aes192(aead) => run(aead, nonce, aad, payload, tag),
            Self::Aes256(aead) => run(aead, nonce, aad, payload, tag),
            Self::ChaCha(aead) => run(aead, nonce, aad, payload, tag),
        }
    }
}

/// The 8 nonce bytes that never travel on the wire.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
struct ImplicitIv([u8; IMPLICIT_IV_LEN]);

impl ImplicitIv {
    fn from_slot(slot: &KeySlot) -> Self {
        let mut iv = [0u8; IMPLICIT_IV_LEN];
        iv.copy_from_slice(&slot.hmac_key()[..IMPLICIT_IV_LEN]);
        Self(iv)
    }

    fn nonce(&self, packet_id: u32) -> [u8; NONCE_LEN] {
        let mut nonce = [0u8; NONCE_LEN];
        let (id, implicit) = nonce.split_at_mut(PACKET_ID_LEN);
        id.copy_from_slice(&packet_id.to_be_bytes());
        implicit.copy_from_slice(&self.0);
        nonce
    }
}

/// Where the AEAD fields of a packet lie, relative to the start of the outer packet.
struct Fields {
    /// The additional data.
    aad: core::ops::Range<usize>,
    /// The packet id.
    packet_id: usize,
    /// The tag.
    tag: usize,
    /// The ciphertext.
    payload: usize,
}

impl Fields {
    /// The layout behind a header of `header_len` bytes: the additional data covers the header
    /// only for `P_DATA_V2`.
    fn new(header_len: usize) -> Self {
        let packet_id = header_len;
        let aad_start = if header_len == DataHeader::V2_LEN {
            0
        } else {
            packet_id
        };
        Self {
            aad: aad_start..packet_id + PACKET_ID_LEN,
            packet_id,
            tag: packet_id + PACKET_ID_LEN,
            payload: packet_id + PACKET_ID_LEN + TAG_LEN,
        }
    }
}

/// The keyed state of the AEAD layout for one key id, both directions.
#[derive(Clone)]
pub(super) struct AeadState {
    alg: AeadAlg,
    seal_key: AeadKey,
    open_key: AeadKey,
    seal_iv: ImplicitIv,
    open_iv: ImplicitIv,
    /// The last packet id sent (0 before the first).
    last_sent: u32,
    replay: ReplayWindow,
}

impl AeadState {
    pub(super) fn new(
        keys: &DirectionalKeys,
        alg: AeadAlg,
        replay: ReplayConfig,
    ) -> Result<Self, DataChannelError> {
        let seal = aead_key(alg, &keys.send, "send")?;
        let open = aead_key(alg, &keys.recv, "receive")?;
        Ok(Self {
            alg,
            seal_key: seal,
            open_key: open,
            seal_iv: ImplicitIv::from_slot(&keys.send),
            open_iv: ImplicitIv::from_slot(&keys.recv),
            last_sent: 0,
            replay: ReplayWindow::new(replay),
        })
    }

    pub(super) const fn alg(&self) -> AeadAlg {
        self.alg
    }

    pub(super) const fn last_sent(&self) -> u32 {
        self.last_sent
    }

    pub(super) const fn highest_received(&self) -> PacketId {
        self.replay.highest()
    }

    /// Whether another packet may be sent under this key.
    pub(super) const fn can_send(&self) -> bool {
        self.last_sent < u32::MAX
    }

    #[cfg(test)]
    pub(super) fn force_last_sent(&mut self, id: u32) {
        self.last_sent = id;
    }

    /// Seals the payload at `packet[payload_start..]`, whose header (`header_len` bytes at the
    /// start of `packet`) is already written and whose room the caller checked; fills in the
    /// packet id and the tag in front of it.
    pub(super) fn seal(&mut self, packet: &mut [u8], header_len: usize) -> Option<()> {
        let fields = Fields::new(header_len);
        let packet_id = self.last_sent.checked_add(1)?;
        packet
            .get_mut(fields.packet_id..fields.tag)?
            .copy_from_slice(&packet_id.to_be_bytes());
        // The id is spent from here on, whatever happens: a nonce is never used twice.
        self.last_sent = packet_id;
        let nonce = self.seal_iv.nonce(packet_id);
        if packet.len() <= fields.payload {
            return None;
        }
        let (front, payload) = packet.split_at_mut(fields.payload);
        let tag = self
            .seal_key
            .seal(&nonce, front.get(fields.aad.clone())?, payload)?;
        front.get_mut(fields.tag..)?.copy_from_slice(&tag);
        Some(())
    }

    /// Opens `packet` (header of `header_len` bytes included) in place; returns where the
    /// plaintext starts. The replay window is checked before and committed only after the tag
    /// verified, so forged packets move nothing.
    pub(super) fn open(
        &mut self,
        now: Instant,
        packet: &mut [u8],
        header_len: usize,
    ) -> Result<usize, DropReason> {
        let fields = Fields::new(header_len);
        // OpenVPN refuses an empty payload, even an authentic one.
        if packet.len() <= fields.payload {
            return Err(DropReason::Malformed);
        }
        let id_bytes = packet
            .get(fields.packet_id..fields.tag)
            .and_then(|b| b.first_chunk::<PACKET_ID_LEN>())
            .ok_or(DropReason::Malformed)?;
        let pid = PacketId {
            id: u32::from_be_bytes(*id_bytes),
            time: 0,
        };
        self.replay
            .check(pid, now)
            .map_err(|_| DropReason::Replayed)?;
        let nonce = self.open_iv.nonce(pid.id);
        let (front, payload) = packet.split_at_mut(fields.payload);
        let tag: &[u8; TAG_LEN] = front
            .get(fields.tag..)
            .and_then(|t| t.first_chunk())
            .ok_or(DropReason::Malformed)?;
        let aad = front.get(fields.aad).ok_or(DropReason::Malformed)?;
        if !self.open_key.open(&nonce, aad, payload, tag) {
            return Err(DropReason::Unauthentic);
        }
        self.replay.commit(pid, now);
        Ok(fields.payload)
    }
}

fn aead_key(
    alg: AeadAlg,
    slot: &KeySlot,
    direction: &'static str,
) -> Result<AeadKey, DataChannelError> {
    let key = slot.cipher_key().get(..alg.key_len()).unwrap_or(&[]);
    if key.iter().all(|&b| b == 0) {
        return Err(DataChannelError::ZeroCipherKey { direction });
    }
    // The slot holds 64 bytes, more than any key length, so the key always has its length.
    AeadKey::new(alg, key).ok_or(DataChannelError::ZeroCipherKey { direction })
}

impl fmt::Debug for AeadState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AeadState")
            .field("alg", &self.alg)
            .field("last_sent", &self.last_sent)
            .field("highest_received", &self.replay.highest())
            .finish_non_exhaustive()
    }
}
