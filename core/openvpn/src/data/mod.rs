//! The OpenVPN data channel: sealing inner packets into outer packets and opening them again,
//! in place in the caller's buffer.
//!
//! A [`DataChannel`] holds one key's state for both directions: the send and receive keys, the
//! sending packet-id counter, the receive replay window and the drop counters. Three layouts
//! exist:
//!
//! - **plaintext** (point-to-point without `--secret`): the payload is the packet, nothing is
//!   added or checked;
//! - **CBC + HMAC** (static-key mode, and the non-AEAD ciphers of TLS mode):
//!
//!   ```text
//!   [header][HMAC(IV || ciphertext)][IV][CBC(packet id || payload || PKCS#7 padding)]
//!   ```
//!
//!   With `cipher none` there is no IV and no encryption: `[header][HMAC(pid || payload)][pid]
//!   [payload]`. With `auth none` there is no HMAC field. Static-key mode uses the long packet id
//!   (counter and time) and no header; TLS mode uses the short one behind a
//!   [`DataHeader`].
//!
//! - **AEAD** (TLS mode with AES-GCM or ChaCha20-Poly1305, see [`aead`]):
//!
//!   ```text
//!   [header][packet id][tag][AEAD(payload)]
//!   ```
//!
//!   The `P_DATA_V2` header is part of the additional data, so the header lives in the channel
//!   rather than with the caller.
//!
//! Inside the encryption, the payload carries the compression framing the server configured
//! ([`compress`]); the channel adds it when sealing and removes it when opening, so callers only
//! ever see inner packets, pings and OCC messages.
//!
//! Packet order of the receive path, as in OpenVPN: verify the HMAC (constant time), decrypt,
//! strip the padding, read the packet id, check it against the replay window, and only then
//! commit it; the AEAD layout checks the replay window before decrypting too, and commits only
//! after the tag verified. A packet that fails any step changes nothing but a drop counter.
//!
//! A TLS session has up to three keys at once (a new one being negotiated, the current one, and
//! the previous one kept for late packets): [`DataKeys`] routes packets to the right
//! [`DataChannel`] by key id. [`DataChannel::from_key2`] builds a channel from the 256 key bytes
//! the TLS handshake exports.

pub mod aead;
pub mod compress;
pub mod inband;
pub mod key2;
pub mod slots;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;

pub use aead::AeadAlg;
pub use compress::Compression;
pub use key2::{DataCipher, DataConfig, Key2Role};
pub use slots::{DataKeys, SlotError};

use core::fmt;
use core::ops::Range;

use aes::{Aes128Dec, Aes128Enc, Aes192Dec, Aes192Enc, Aes256Dec, Aes256Enc};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, InnerIvInit, KeyInit};
use erebus_sansio::tunnel::{DropReason, Overhead};
use erebus_sansio::{Instant, Seed, SeededRng, WallClock};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha512};

use crate::keys::{DirectionalKeys, KeySlot};
use crate::packet::{DataHeader, KeyId};
use crate::replay::{PacketId, PacketIdForm, PacketIdSender, ReplayConfig, ReplayWindow};

/// A data-channel cipher (`--cipher`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CipherAlg {
    /// No encryption (`cipher none`).
    None,
    /// AES-128 in CBC mode.
    Aes128Cbc,
    /// AES-192 in CBC mode.
    Aes192Cbc,
    /// AES-256 in CBC mode.
    Aes256Cbc,
}

impl CipherAlg {
    /// The cipher OpenVPN calls `name` (case-insensitive), if supported here.
    pub fn from_openvpn_name(name: &str) -> Option<Self> {
        [
            Self::None,
            Self::Aes128Cbc,
            Self::Aes192Cbc,
            Self::Aes256Cbc,
        ]
        .into_iter()
        .find(|alg| alg.openvpn_name().eq_ignore_ascii_case(name))
    }

    /// The name OpenVPN configurations use.
    pub const fn openvpn_name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Aes128Cbc => "AES-128-CBC",
            Self::Aes192Cbc => "AES-192-CBC",
            Self::Aes256Cbc => "AES-256-CBC",
        }
    }

    /// Key length in bytes (0 for none).
    pub const fn key_len(self) -> usize {
        match self {
            Self::None => 0,
            Self::Aes128Cbc => 16,
            Self::Aes192Cbc => 24,
            Self::Aes256Cbc => 32,
        }
    }

    /// Block length in bytes, which is also the IV length (0 for none).
    pub const fn block_len(self) -> usize {
        match self {
            Self::None => 0,
            Self::Aes128Cbc | Self::Aes192Cbc | Self::Aes256Cbc => 16,
        }
    }
}

/// A data-channel HMAC digest (`--auth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthAlg {
    /// No authentication (`auth none`).
    None,
    /// HMAC-SHA1 (OpenVPN's default).
    Sha1,
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

impl AuthAlg {
    /// The digest OpenVPN calls `name` (case-insensitive; `SHA-256` style names too), if
    /// supported here.
    pub fn from_openvpn_name(name: &str) -> Option<Self> {
        let compact: String = name.chars().filter(|c| *c != '-').collect();
        [Self::None, Self::Sha1, Self::Sha256, Self::Sha512]
            .into_iter()
            .find(|alg| alg.openvpn_name().eq_ignore_ascii_case(&compact))
    }

    /// The name OpenVPN configurations use.
    pub const fn openvpn_name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
            Self::Sha512 => "SHA512",
        }
    }

    /// Digest (and HMAC key) length in bytes (0 for none).
    pub const fn digest_len(self) -> usize {
        match self {
            Self::None => 0,
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }
}

/// Why a data channel cannot be built from the given keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DataChannelError {
    /// The cipher key of a slot is all zeros, which OpenVPN refuses as a broken key.
    #[error("the {direction} cipher key is all zeros")]
    ZeroCipherKey {
        /// `"send"` or `"receive"`.
        direction: &'static str,
    },
}

/// Why [`DataChannel::seal`] could not produce an outer packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The inner packet is empty; OpenVPN never sends empty payloads.
    #[error("empty payload")]
    Empty,
    /// Too little headroom or tailroom around the inner packet, or a range outside the buffer.
    #[error("not enough room around the payload")]
    NoRoom,
    /// The packet-id counter is exhausted: the key must not send any more.
    #[error("packet id space exhausted")]
    PacketIdExhausted,
    /// No key to send with yet.
    #[error("no data-channel key yet")]
    NoKey,
}

impl From<SealError> for DropReason {
    fn from(error: SealError) -> Self {
        match error {
            SealError::Empty | SealError::NoRoom => Self::Malformed,
            SealError::PacketIdExhausted | SealError::NoKey => Self::NotReady,
        }
    }
}

/// Dropped packets, counted by reason.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts {
    counts: [u64; 7],
}

impl DropCounts {
    fn index(reason: DropReason) -> usize {
        match reason {
            DropReason::Malformed => 0,
            DropReason::Unauthentic => 1,
            DropReason::Replayed => 2,
            DropReason::UnknownKey => 3,
            DropReason::NotReady => 4,
            DropReason::Unsupported => 5,
            _ => 6,
        }
    }

    /// Counts one drop.
    pub fn record(&mut self, reason: DropReason) {
        let slot = &mut self.counts[Self::index(reason)];
        *slot = slot.saturating_add(1);
    }

    /// Drops counted for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[Self::index(reason)]
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0, |sum, n| sum.saturating_add(*n))
    }

    /// The sum of two sets of counts.
    pub fn merged(&self, other: &Self) -> Self {
        let mut counts = self.counts;
        for (mine, theirs) in counts.iter_mut().zip(other.counts) {
            *mine = mine.saturating_add(theirs);
        }
        Self { counts }
    }
}

impl fmt::Debug for DropCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DropCounts")
            .field("malformed", &self.get(DropReason::Malformed))
            .field("unauthentic", &self.get(DropReason::Unauthentic))
            .field("replayed", &self.get(DropReason::Replayed))
            .field("unknown_key", &self.get(DropReason::UnknownKey))
            .field("not_ready", &self.get(DropReason::NotReady))
            .field("unsupported", &self.get(DropReason::Unsupported))
            .finish()
    }
}

/// A keyed HMAC, ready to be cloned per packet so the key is hashed only once.
#[derive(Clone)]
enum HmacKey {
    Sha1(Hmac<Sha1>),
    Sha256(Hmac<Sha256>),
    Sha512(Hmac<Sha512>),
}

impl HmacKey {
    fn new(alg: AuthAlg, slot: &KeySlot) -> Option<Self> {
        let key = slot.hmac_key().get(..alg.digest_len())?;
        // HMAC takes keys of any length, so `new_from_slice` cannot fail here.
        Some(match alg {
            AuthAlg::None => return None,
            AuthAlg::Sha1 => Self::Sha1(KeyInit::new_from_slice(key).ok()?),
            AuthAlg::Sha256 => Self::Sha256(KeyInit::new_from_slice(key).ok()?),
            AuthAlg::Sha512 => Self::Sha512(KeyInit::new_from_slice(key).ok()?),
        })
    }

    /// Writes the HMAC of `data` into `tag` (exactly the digest length).
    fn sign(&self, data: &[u8], tag: &mut [u8]) {
        fn run<M: Mac + Clone>(mac: &M, data: &[u8], tag: &mut [u8]) {
            let mut mac = mac.clone();
            mac.update(data);
            let out = mac.finalize().into_bytes();
            if let Some(out) = out.get(..tag.len()) {
                tag.copy_from_slice(out);
            }
        }
        match self {
            Self::Sha1(mac) => run(mac, data, tag),
            Self::Sha256(mac) => run(mac, data, tag),
            Self::Sha512(mac) => run(mac, data, tag),
        }
    }

    /// Whether `tag` is the HMAC of `data`, compared in constant time.
    fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        fn run<M: Mac + Clone>(mac: &M, data: &[u8], tag: &[u8]) -> bool {
            let mut mac = mac.clone();
            mac.update(data);
            mac.verify_slice(tag).is_ok()
        }
        match self {
            Self::Sha1(mac) => run(mac, data, tag),
            Self::Sha256(mac) => run(mac, data, tag),
            Self::Sha512(mac) => run(mac, data, tag),
        }
    }
}

/// AES key schedules for CBC encryption.
#[derive(Clone)]
enum CbcEncryptKey {
    Aes128(Aes128Enc),
    Aes192(Aes192Enc),
    Aes256(Aes256Enc),
}

/// AES key schedules for CBC decryption.
#[derive(Clone)]
enum CbcDecryptKey {
    Aes128(Aes128Dec),
    Aes192(Aes192Dec),
    Aes256(Aes256Dec),
}

fn cipher_key<'a>(
    alg: CipherAlg,
    slot: &'a KeySlot,
    direction: &'static str,
) -> Result<Option<&'a [u8]>, DataChannelError> {
    if alg == CipherAlg::None {
        return Ok(None);
    }
    let key = slot.cipher_key().get(..alg.key_len()).unwrap_or(&[]);
    if key.iter().all(|&b| b == 0) {
        return Err(DataChannelError::ZeroCipherKey { direction });
    }
    Ok(Some(key))
}

impl CbcEncryptKey {
    fn new(alg: CipherAlg, key: &[u8]) -> Option<Self> {
        Some(match alg {
            CipherAlg::None => return None,
            CipherAlg::Aes128Cbc => Self::Aes128(KeyInit::new_from_slice(key).ok()?),
            CipherAlg::Aes192Cbc => Self::Aes192(KeyInit::new_from_slice(key).ok()?),
            CipherAlg::Aes256Cbc => Self::Aes256(KeyInit::new_from_slice(key).ok()?),
        })
    }

    /// Pads `buf[..msg_len]` and encrypts it in place; returns the ciphertext length.
    fn encrypt(&self, iv: &[u8; 16], buf: &mut [u8], msg_len: usize) -> Option<usize> {
        let iv = iv.into();
        let ciphertext =
            match self {
                Self::Aes128(key) => cbc::Encryptor::inner_iv_init(key.clone(), iv)
                    .encrypt_padded::<Pkcs7>(buf, msg_len),
                Self::Aes192(key) => cbc::Encryptor::inner_iv_init(key.clone(), iv)
                    .encrypt_padded::<Pkcs7>(buf, msg_len),
                Self::Aes256(key) => cbc::Encryptor::inner_iv_init(key.clone(), iv)
                    .encrypt_padded::<Pkcs7>(buf, msg_len),
            };
        ciphertext.ok().map(<[u8]>::len)
    }
}

impl CbcDecryptKey {
    fn new(alg: CipherAlg, key: &[u8]) -> Option<Self> {
        Some(match alg {
            CipherAlg::None => return None,
            CipherAlg::Aes128Cbc => Self::Aes128(KeyInit::new_from_slice(key).ok()?),
            CipherAlg::Aes192Cbc => Self::Aes192(KeyInit::new_from_slice(key).ok()?),
            CipherAlg::Aes256Cbc => Self::Aes256(KeyInit::new_from_slice(key).ok()?),
        })
    }

    /// Decrypts `buf` in place and strips the padding; returns the plaintext length.
    fn decrypt(&self, iv: &[u8; 16], buf: &mut [u8]) -> Option<usize> {
        let iv = iv.into();
        let plaintext = match self {
            Self::Aes128(key) => {
                cbc::Decryptor::inner_iv_init(key.clone(), iv).decrypt_padded::<Pkcs7>(buf)
            }
            Self::Aes192(key) => {
                cbc::Decryptor::inner_iv_init(key.clone(), iv).decrypt_padded::<Pkcs7>(buf)
            }
            Self::Aes256(key) => {
                cbc::Decryptor::inner_iv_init(key.clone(), iv).decrypt_padded::<Pkcs7>(buf)
            }
        };
        plaintext.ok().map(<[u8]>::len)
    }
}

/// The keyed state of the CBC + HMAC layout.
#[derive(Clone)]
struct CbcHmac {
    cipher: CipherAlg,
    auth: AuthAlg,
    encrypt: Option<CbcEncryptKey>,
    decrypt: Option<CbcDecryptKey>,
    sign: Option<HmacKey>,
    verify: Option<HmacKey>,
    sender: PacketIdSender,
    replay: ReplayWindow,
    iv_rng: SeededRng,
    clock: WallClock,
}

#[derive(Clone)]
enum Layout {
    Plaintext,
    CbcHmac(Box<CbcHmac>),
    Aead(Box<aead::AeadState>),
}

/// The packet id from which a TLS-mode key should be renegotiated, as OpenVPN does: far enough
/// from the end of the 32-bit space that the new key is ready before the old one runs out.
pub const REKEY_PACKET_ID: u32 = 0xFF00_0000;

/// One key's data channel in both directions. See the [module documentation](self).
#[derive(Clone)]
pub struct DataChannel {
    header: Option<DataHeader>,
    layout: Layout,
    compression: Compression,
    drops: DropCounts,
}

impl DataChannel {
    /// The plaintext channel of point-to-point mode without a key: packets pass unchanged.
    pub fn plaintext() -> Self {
        Self {
            header: None,
            layout: Layout::Plaintext,
            compression: Compression::None,
            drops: DropCounts::default(),
        }
    }

    /// The AEAD channel of TLS mode (see [`aead`]): `keys.send` encrypts with its cipher slot and
    /// takes its implicit IV from the first 8 bytes of its HMAC slot, `keys.recv` likewise for
    /// decryption. Every packet starts with `header`, which names the key id.
    ///
    /// # Errors
    ///
    /// [`DataChannelError::ZeroCipherKey`] when a cipher key is all zeros.
    pub fn aead(
        keys: &DirectionalKeys,
        alg: AeadAlg,
        header: DataHeader,
        replay: ReplayConfig,
    ) -> Result<Self, DataChannelError> {
        let state = aead::AeadState::new(keys, alg, replay)?;
        Ok(Self {
            header: Some(header),
            layout: Layout::Aead(Box::new(state)),
            compression: Compression::None,
            drops: DropCounts::default(),
        })
    }

    /// The static-key (`--secret`) channel: CBC (or no cipher) plus HMAC (or none), long-form
    /// packet ids, no header. The IVs are drawn from `seed`; the packet-id time comes from
    /// `clock`.
    ///
    /// # Errors
    ///
    /// [`DataChannelError::ZeroCipherKey`] when a cipher key is all zeros.
    pub fn static_key(
        keys: &DirectionalKeys,
        cipher: CipherAlg,
        auth: AuthAlg,
        replay: ReplayConfig,
        clock: WallClock,
        seed: &Seed,
    ) -> Result<Self, DataChannelError> {
        Self::cbc_hmac(keys, cipher, auth, PacketIdForm::Long, replay, clock, seed)
    }

    /// The CBC + HMAC channel with the given packet-id form (long for static keys, short for
    /// TLS mode). The channel has no header until [`DataChannel::with_header`] sets one.
    ///
    /// # Errors
    ///
    /// [`DataChannelError::ZeroCipherKey`] when a cipher key is all zeros.
    pub fn cbc_hmac(
        keys: &DirectionalKeys,
        cipher: CipherAlg,
        auth: AuthAlg,
        form: PacketIdForm,
        replay: ReplayConfig,
        clock: WallClock,
        seed: &Seed,
    ) -> Result<Self, DataChannelError> {
        let send_key = cipher_key(cipher, &keys.send, "send")?;
        let recv_key = cipher_key(cipher, &keys.recv, "receive")?;
        let state = CbcHmac {
            cipher,
            auth,
            encrypt: send_key.and_then(|key| CbcEncryptKey::new(cipher, key)),
            decrypt: recv_key.and_then(|key| CbcDecryptKey::new(cipher, key)),
            sign: HmacKey::new(auth, &keys.send),
            verify: HmacKey::new(auth, &keys.recv),
            sender: PacketIdSender::new(form),
            replay: ReplayWindow::new(replay),
            iv_rng: seed.child("openvpn.data.iv").rng(),
            clock,
        };
        Ok(Self {
            header: None,
            layout: Layout::CbcHmac(Box::new(state)),
            compression: Compression::None,
            drops: DropCounts::default(),
        })
    }

    /// Puts `header` in front of every sealed packet and expects it in front of every opened
    /// one (TLS mode). The CBC layout does not authenticate the header, as in OpenVPN.
    pub fn with_header(mut self, header: DataHeader) -> Self {
        self.header = Some(header);
        self
    }

    /// Frames every sealed payload and unframes every opened one with `compression`.
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// The header in front of every packet (TLS mode), if any.
    pub const fn header(&self) -> Option<DataHeader> {
        self.header
    }

    /// The key id this channel's packets carry (TLS mode), if it has a header.
    pub fn key_id(&self) -> Option<KeyId> {
        self.header.map(|h| h.key_id())
    }

    /// The compression framing in force.
    pub const fn compression(&self) -> Compression {
        self.compression
    }

    /// Starts over as after a restart: a fresh replay window and a packet-id counter whose time
    /// is later than before, with the same keys. Drop counters are kept.
    ///
    /// The AEAD layout ignores this: its nonce is the packet id, so restarting the counter under
    /// the same key would reuse nonces. TLS mode restarts with new keys instead.
    pub fn restart(&mut self) {
        if let Layout::CbcHmac(state) = &mut self.layout {
            state.sender = state.sender.restarted();
            state.replay = ReplayWindow::new(state.replay.config());
        }
    }

    /// Whether the key is near the end of its packet-id space (at least [`REKEY_PACKET_ID`]
    /// sent) and the session should renegotiate. Only short-form (TLS-mode) counters run out;
    /// the long form moves its time on instead.
    pub fn needs_rekey(&self) -> bool {
        match &self.layout {
            Layout::Plaintext => false,
            Layout::CbcHmac(state) => {
                state.sender.form() == PacketIdForm::Short
                    && state.sender.last().id >= REKEY_PACKET_ID
            }
            Layout::Aead(state) => state.last_sent() >= REKEY_PACKET_ID,
        }
    }

    /// Whether another packet may be sealed: false once a short-form counter is exhausted.
    fn can_send(&self) -> bool {
        match &self.layout {
            Layout::Plaintext => true,
            Layout::CbcHmac(state) => {
                state.sender.form() == PacketIdForm::Long || state.sender.last().id < u32::MAX
            }
            Layout::Aead(state) => state.can_send(),
        }
    }

    /// Bytes the encryption layout and header need around the framed payload.
    fn crypto_overhead(&self) -> Overhead {
        let header = self.header.map_or(0, |h| h.len());
        match &self.layout {
            Layout::Plaintext => Overhead {
                headroom: header,
                tailroom: 0,
            },
            Layout::CbcHmac(state) => Overhead {
                headroom: header
                    + state.auth.digest_len()
                    + state.cipher.block_len()
                    + state.sender.form().len(),
                // PKCS#7 always adds 1..=block bytes.
                tailroom: state.cipher.block_len(),
            },
            Layout::Aead(state) => Overhead {
                headroom: header + state.alg().headroom(),
                tailroom: 0,
            },
        }
    }

    /// Bytes needed before and after an inner packet to seal it in place: the header, the
    /// layout's fields and the compression framing at its largest.
    pub fn overhead(&self) -> Overhead {
        let crypto = self.crypto_overhead();
        Overhead {
            headroom: crypto.headroom + self.compression.headroom(),
            tailroom: crypto.tailroom + self.compression.tailroom(),
        }
    }

    /// Drops counted by [`DataChannel::open`].
    pub fn drops(&self) -> &DropCounts {
        &self.drops
    }

    /// The last packet id sent, if this layout has packet ids.
    pub fn last_sent(&self) -> Option<PacketId> {
        match &self.layout {
            Layout::Plaintext => None,
            Layout::CbcHmac(state) => Some(state.sender.last()),
            Layout::Aead(state) => Some(PacketId {
                id: state.last_sent(),
                time: 0,
            }),
        }
    }

    /// Seals the inner packet at `buf[inner]` in place and returns the range of `buf` holding
    /// the outer packet. The outer packet starts [`Overhead::headroom`] bytes before
    /// `inner.start`, except under the stub-v2 and lz4-v2 framings, whose two escape bytes
    /// (counted in the headroom) precede only payloads that start with `0x50`.
    ///
    /// # Errors
    ///
    /// A [`SealError`]; nothing is consumed (no packet id is used) and `buf` is unchanged when
    /// the room is missing or the packet ids are exhausted.
    pub fn seal(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        inner: Range<usize>,
    ) -> Result<Range<usize>, SealError> {
        self.seal_with(now, buf, inner, None)
    }

    /// [`DataChannel::seal`] with a chosen IV, to reproduce captured packets byte for byte.
    #[cfg(test)]
    pub(crate) fn seal_with_iv(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        inner: Range<usize>,
        iv: [u8; 16],
    ) -> Result<Range<usize>, SealError> {
        self.seal_with(now, buf, inner, Some(iv))
    }

    fn seal_with(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        inner: Range<usize>,
        iv: Option<[u8; 16]>,
    ) -> Result<Range<usize>, SealError> {
        if inner.start >= inner.end {
            return Err(SealError::Empty);
        }
        let overhead = self.overhead();
        inner
            .start
            .checked_sub(overhead.headroom)
            .ok_or(SealError::NoRoom)?;
        let room_end = inner
            .end
            .checked_add(overhead.tailroom)
            .ok_or(SealError::NoRoom)?;
        if room_end > buf.len() {
            return Err(SealError::NoRoom);
        }
        if !self.can_send() {
            return Err(SealError::PacketIdExhausted);
        }
        // Room for the largest framing was checked above, so framing cannot fail here.
        let framed = self
            .compression
            .frame(buf, inner)
            .ok_or(SealError::NoRoom)?;
        let start = framed
            .start
            .checked_sub(self.crypto_overhead().headroom)
            .ok_or(SealError::NoRoom)?;
        // The header goes first: the AEAD layout authenticates it.
        let header_len = match self.header {
            Some(header) => header
                .emit(buf.get_mut(start..).unwrap_or(&mut []))
                .map_err(|_| SealError::NoRoom)?,
            None => 0,
        };
        let end = match &mut self.layout {
            Layout::Plaintext => framed.end,
            Layout::CbcHmac(state) => state.seal(now, buf, framed, iv)?,
            Layout::Aead(state) => {
                let packet = buf.get_mut(start..framed.end).ok_or(SealError::NoRoom)?;
                state.seal(packet, header_len).ok_or(SealError::NoRoom)?;
                framed.end
            }
        };
        Ok(start..end)
    }

    /// Opens the outer packet in `packet` in place and returns where the payload now lies.
    /// The payload may be an inner IP packet or an in-band message ([`inband::classify`]); the
    /// compression framing is already removed.
    ///
    /// # Errors
    ///
    /// The [`DropReason`], which is also counted: [`DropReason::Malformed`] for lengths that
    /// cannot be, a header that is no data header, bad padding, a framing byte the configured
    /// compression does not define, or an empty payload; [`DropReason::Unauthentic`] for a
    /// wrong HMAC or tag; [`DropReason::Replayed`] for a replayed or too old packet id;
    /// [`DropReason::UnknownKey`] for a header naming another key id;
    /// [`DropReason::Unsupported`] for a payload the peer really compressed.
    pub fn open(&mut self, now: Instant, packet: &mut [u8]) -> Result<Range<usize>, DropReason> {
        let result = self.open_uncounted(now, packet);
        if let Err(reason) = result {
            self.drops.record(reason);
        }
        result
    }

    fn open_uncounted(
        &mut self,
        now: Instant,
        packet: &mut [u8],
    ) -> Result<Range<usize>, DropReason> {
        // The received header, not ours, is what the peer authenticated: P_DATA_V1 and V2 are
        // both accepted, whatever we send.
        let header_len = match self.header {
            None => 0,
            Some(ours) => {
                let theirs = DataHeader::parse(packet).map_err(|_| DropReason::Malformed)?;
                if theirs.key_id() != ours.key_id() {
                    return Err(DropReason::UnknownKey);
                }
                theirs.len()
            }
        };
        if packet.len() <= header_len {
            return Err(DropReason::Malformed);
        }
        let payload = match &mut self.layout {
            Layout::Plaintext => header_len..packet.len(),
            Layout::CbcHmac(state) => {
                let body = packet.get_mut(header_len..).ok_or(DropReason::Malformed)?;
                let payload = state.open(now, body)?;
                payload.start + header_len..payload.end + header_len
            }
            Layout::Aead(state) => state.open(now, packet, header_len)?..packet.len(),
        };
        let payload = self.compression.unframe(packet, payload).map_err(|error| {
            tracing::debug!(%error, "dropped a data-channel payload");
            DropReason::from(error)
        })?;
        if payload.is_empty() {
            return Err(DropReason::Malformed);
        }
        Ok(payload)
    }
}

impl fmt::Debug for DataChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("DataChannel");
        out.field("header", &self.header);
        match &self.layout {
            Layout::Plaintext => out.field("layout", &"plaintext"),
            Layout::CbcHmac(state) => out
                .field("cipher", &state.cipher)
                .field("auth", &state.auth)
                .field("last_sent", &state.sender.last())
                .field("highest_received", &state.replay.highest()),
            Layout::Aead(state) => out
                .field("cipher", &state.alg())
                .field("last_sent", &state.last_sent())
                .field("highest_received", &state.highest_received()),
        };
        out.field("compression", &self.compression)
            .field("drops", &self.drops)
            .finish_non_exhaustive()
    }
}

impl CbcHmac {
    /// Seals `buf[inner]`, whose room the caller checked; returns the end of the outer packet.
    fn seal(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        inner: Range<usize>,
        forced_iv: Option<[u8; 16]>,
    ) -> Result<usize, SealError> {
        let form = self.sender.form();
        let hmac_len = self.auth.digest_len();
        let iv_len = self.cipher.block_len();
        let unix_now = u32::try_from(self.clock.at(now).as_secs()).unwrap_or(u32::MAX);
        let pid = self
            .sender
            .next(unix_now)
            .ok_or(SealError::PacketIdExhausted)?;

        // Room was checked by the caller; every index below stays inside it.
        let plain_start = inner.start - form.len();
        if !form.write(pid, buf.get_mut(plain_start..).unwrap_or(&mut [])) {
            return Err(SealError::NoRoom);
        }
        let (signed_start, end) = match &self.encrypt {
            Some(key) => {
                let iv_start = plain_start - iv_len;
                let iv = forced_iv.unwrap_or_else(|| self.iv_rng.array());
                let (iv_field, rest) = buf
                    .get_mut(iv_start..)
                    .ok_or(SealError::NoRoom)?
                    .split_at_mut(iv_len);
                iv_field.copy_from_slice(&iv);
                let msg_len = inner.end - plain_start;
                let room = rest.get_mut(..msg_len + iv_len).ok_or(SealError::NoRoom)?;
                let ciphertext_len = key.encrypt(&iv, room, msg_len).ok_or(SealError::NoRoom)?;
                (iv_start, plain_start + ciphertext_len)
            }
            None => (plain_start, inner.end),
        };
        if let Some(mac) = &self.sign {
            let tag_start = signed_start - hmac_len;
            let (tag, signed) = buf
                .get_mut(tag_start..end)
                .ok_or(SealError::NoRoom)?
                .split_at_mut(hmac_len);
            mac.sign(signed, tag);
        }
        Ok(end)
    }

    /// Opens `body` (the packet after any header) in place; returns the payload's range in it.
    fn open(&mut self, now: Instant, body: &mut [u8]) -> Result<Range<usize>, DropReason> {
        let hmac_len = self.auth.digest_len();
        let iv_len = self.cipher.block_len();
        if body.len() < hmac_len {
            return Err(DropReason::Malformed);
        }
        let (tag, signed) = body.split_at_mut(hmac_len);
        if let Some(mac) = &self.verify
            && !mac.verify(signed, tag)
        {
            return Err(DropReason::Unauthentic);
        }
        let plain = match &self.decrypt {
            Some(key) => {
                if signed.len() < iv_len * 2 || !(signed.len() - iv_len).is_multiple_of(iv_len) {
                    return Err(DropReason::Malformed);
                }
                let (iv_field, ciphertext) = signed.split_at_mut(iv_len);
                let iv: [u8; 16] = (&*iv_field).try_into().map_err(|_| DropReason::Malformed)?;
                let len = key.decrypt(&iv, ciphertext).ok_or(DropReason::Malformed)?;
                hmac_len + iv_len..hmac_len + iv_len + len
            }
            None => hmac_len..body.len(),
        };
        let form = self.sender.form();
        let plaintext = body.get(plain.clone()).ok_or(DropReason::Malformed)?;
        let pid = form.read(plaintext).ok_or(DropReason::Malformed)?;
        if plaintext.len() == form.len() {
            return Err(DropReason::Malformed);
        }
        self.replay
            .check(pid, now)
            .map_err(|_| DropReason::Replayed)?;
        self.replay.commit(pid, now);
        Ok(plain.start + form.len()..plain.end)
    }
}
