//! Building TLS-mode data channels from the key material a handshake exports.
//!
//! Each TLS handshake (the first one and every renegotiation) yields 256 bytes of key material,
//! OpenVPN's `key2`, from the TLS keying-material exporter (`tls-ekm`) or OpenVPN's own PRF:
//!
//! ```text
//! [  0.. 64)  client-to-server cipher key slot
//! [ 64..128)  client-to-server HMAC key slot (AEAD: the first 8 bytes are the implicit IV)
//! [128..192)  server-to-client cipher key slot
//! [192..256)  server-to-client HMAC key slot (AEAD: the first 8 bytes are the implicit IV)
//! ```
//!
//! The client sends with the first half and receives with the second; the server the other
//! way round. The cipher (and for CBC the HMAC digest), the peer id and the compression framing
//! come from the server's push and stay the same for every key of the session, so they travel
//! together as a [`DataConfig`].

use erebus_sansio::tunnel::Overhead;
use erebus_sansio::{Instant, Seed, UnixTime, WallClock};

use crate::keys::{KeyDirection, StaticKey};
use crate::packet::{DataHeader, KeyId, PeerId};
use crate::replay::{PacketIdForm, ReplayConfig};

use super::{AeadAlg, AuthAlg, CipherAlg, Compression, DataChannel, DataChannelError};

/// Bytes of key material one handshake exports.
pub const KEY2_LEN: usize = StaticKey::LEN;

/// The data-channel cipher of a TLS-mode session: an AEAD, or CBC (or none) with an HMAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataCipher {
    /// AES-GCM or ChaCha20-Poly1305; `--auth` plays no part.
    Aead(AeadAlg),
    /// The older layout: `cipher` (CBC or none) authenticated by HMAC-`auth` (or nothing).
    CbcHmac {
        /// The block cipher.
        cipher: CipherAlg,
        /// The HMAC digest.
        auth: AuthAlg,
    },
}

impl DataCipher {
    /// The data cipher for OpenVPN's `cipher` and `auth` names (case-insensitive): an AEAD
    /// cipher ignores `auth`. `None` when either is not supported.
    pub fn from_openvpn_names(cipher: &str, auth: &str) -> Option<Self> {
        if let Some(alg) = AeadAlg::from_openvpn_name(cipher) {
            return Some(Self::Aead(alg));
        }
        Some(Self::CbcHmac {
            cipher: CipherAlg::from_openvpn_name(cipher)?,
            auth: AuthAlg::from_openvpn_name(auth)?,
        })
    }

    /// The cipher as OpenVPN logs it: `AES-256-GCM`, or `AES-256-CBC/SHA256` for CBC with
    /// its HMAC.
    pub fn label(self) -> String {
        match self {
            Self::Aead(alg) => alg.openvpn_name().to_owned(),
            Self::CbcHmac { cipher, auth } => {
                format!("{}/{}", cipher.openvpn_name(), auth.openvpn_name())
            }
        }
    }

    /// Bytes the layout adds in front of the payload, not counting the header and the framing.
    pub const fn headroom(self) -> usize {
        match self {
            Self::Aead(alg) => alg.headroom(),
            Self::CbcHmac { cipher, auth } => {
                auth.digest_len() + cipher.block_len() + PacketIdForm::Short.len()
            }
        }
    }

    /// Bytes the layout may add after the payload (CBC padding).
    pub const fn tailroom(self) -> usize {
        match self {
            Self::Aead(_) => 0,
            Self::CbcHmac { cipher, .. } => cipher.block_len(),
        }
    }
}

/// Which end of the session this is: it decides which half of the key material sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Key2Role {
    /// Sends with `key2[0..128)`, receives with `key2[128..256)`.
    Client,
    /// Sends with `key2[128..256)`, receives with `key2[0..128)`.
    Server,
}

impl Key2Role {
    /// The static-key direction that picks the same halves: OpenVPN's client uses the normal
    /// direction for its data keys (unlike its usual `tls-auth` direction).
    pub const fn key_direction(self) -> KeyDirection {
        match self {
            Self::Client => KeyDirection::Normal,
            Self::Server => KeyDirection::Inverse,
        }
    }
}

/// What every data-channel key of one TLS session shares, from the server's push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataConfig {
    /// The data cipher (`cipher`, and `auth` for CBC).
    pub cipher: DataCipher,
    /// The pushed `peer-id`: with one, packets carry the 4-byte `P_DATA_V2` header; without,
    /// the 1-byte `P_DATA_V1` header.
    pub peer_id: Option<PeerId>,
    /// The compression framing (`compress ...` / `comp-lzo ...`).
    pub compression: Compression,
    /// The receive replay window (`replay-window`).
    pub replay: ReplayConfig,
}

impl DataConfig {
    /// A configuration with no peer id, no compression and the default replay window.
    pub fn new(cipher: DataCipher) -> Self {
        Self {
            cipher,
            peer_id: None,
            compression: Compression::None,
            replay: ReplayConfig::default(),
        }
    }

    /// The header the packets of key `key_id` carry.
    pub const fn header(&self, key_id: KeyId) -> DataHeader {
        match self.peer_id {
            Some(peer_id) => DataHeader::V2 { key_id, peer_id },
            None => DataHeader::V1 { key_id },
        }
    }

    /// Bytes a channel of this configuration needs around an inner packet to seal it in place;
    /// the same for every key of the session.
    pub const fn overhead(&self) -> Overhead {
        let header = match self.peer_id {
            Some(_) => DataHeader::V2_LEN,
            None => DataHeader::V1_LEN,
        };
        Overhead {
            headroom: header + self.cipher.headroom() + self.compression.headroom(),
            tailroom: self.cipher.tailroom() + self.compression.tailroom(),
        }
    }
}

impl DataChannel {
    /// The TLS-mode channel for key `key_id` from the 256 bytes of key material of one
    /// handshake (see the [module documentation](self)). `seed` draws the CBC IVs (give each
    /// handshake its own, e.g. a [`Seed::child`] of the session's); the AEAD layout draws
    /// nothing.
    ///
    /// # Errors
    ///
    /// [`DataChannelError::ZeroCipherKey`] when a cipher key is all zeros.
    pub fn from_key2(
        key2: &[u8; KEY2_LEN],
        role: Key2Role,
        key_id: KeyId,
        config: &DataConfig,
        seed: &Seed,
    ) -> Result<Self, DataChannelError> {
        // `StaticKey` is exactly OpenVPN's `key2`; it zeroizes its copy on drop.
        let keys = StaticKey::from_bytes(key2).directional(role.key_direction());
        let header = config.header(key_id);
        let channel = match config.cipher {
            DataCipher::Aead(alg) => Self::aead(&keys, alg, header, config.replay)?,
            DataCipher::CbcHmac { cipher, auth } => {
                // Short packet ids carry no time, so the clock is never read.
                let clock = WallClock::new(Instant::ZERO, UnixTime::from_secs(0));
                let seed = seed.child(KEY_ID_SEED_LABELS[usize::from(key_id.get() & 7)]);
                Self::cbc_hmac(
                    &keys,
                    cipher,
                    auth,
                    PacketIdForm::Short,
                    config.replay,
                    clock,
                    &seed,
                )?
                .with_header(header)
            }
        };
        Ok(channel.with_compression(config.compression))
    }
}

/// Seed labels per key id, so that the keys of one session draw independent IVs.
const KEY_ID_SEED_LABELS: [&str; 8] = [
    "openvpn.data.key0",
    "openvpn.data.key1",
    "openvpn.data.key2",
    "openvpn.data.key3",
    "openvpn.data.key4",
    "openvpn.data.key5",
    "openvpn.data.key6",
    "openvpn.data.key7",
];
