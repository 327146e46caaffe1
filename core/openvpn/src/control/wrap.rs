//! Control-packet wrapping: tls-auth (an HMAC "firewall") and tls-crypt (encryption and
//! authentication with a pre-shared key).
//!
//! Both work on a whole control packet in the caller's buffer, in place. The plain packet is
//! `op|key_id (1) · own session id (8) · rest`, where `rest` is the ACK list, the remote
//! session id, the message id and the payload (see `packet.rs`). Both add a long-form replay
//! id: a packet counter and the Unix time it started at ([`ReplayId`]), which the caller checks
//! with its replay window after unwrapping and increments for every packet sent,
//! retransmissions included.
//!
//! tls-auth (`--auth` digest, default SHA1, HMAC length H):
//!
//! ```text
//! wire:  op · sid · HMAC (H) · packet id (4) · time (4) · rest
//! HMAC over: packet id · time · op · sid · rest
//! ```
//!
//! tls-crypt (AES-256-CTR and HMAC-SHA256, fixed):
//!
//! ```text
//! wire:  op · sid · packet id (4) · time (4) · tag (32) · AES-256-CTR(rest, IV = tag[..16])
//! tag  = HMAC-SHA256(op · sid · packet id · time · rest)
//! ```
//!
//! Keys come from the 256 bytes of the static key file (`key2`: slot 0 = bytes 0..128, slot
//! 1 = bytes 128..256; each slot a 64-byte cipher key then a 64-byte HMAC key). The caller
//! parses the file (`keys.rs`) and passes the raw 256 bytes here.

use core::fmt;

use aes::Aes256;
use ctr::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Sha224, Sha256, Sha384, Sha512};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::config::{Digest, KeyDirection};

/// Length of `op|key_id` and the session id that start every control packet.
const HEADER_LEN: usize = 9;
/// Length of the long-form replay id.
const REPLAY_ID_LEN: usize = 8;
/// tls-crypt's tag length.
const TAG_LEN: usize = 32;

/// The long-form packet id of a wrapped control packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplayId {
    /// The counter, starting at 1 for each session (`0x0f000001` for tls-crypt-v2).
    pub packet_id: u32,
    /// The Unix time at which the counter started.
    pub time: u32,
}

impl ReplayId {
    fn to_bytes(self) -> [u8; REPLAY_ID_LEN] {
        let mut out = [0; REPLAY_ID_LEN];
        out[..4].copy_from_slice(&self.packet_id.to_be_bytes());
        out[4..].copy_from_slice(&self.time.to_be_bytes());
        out
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let id: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
        let time: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
        Some(Self {
            packet_id: u32::from_be_bytes(id),
            time: u32::from_be_bytes(time),
        })
    }
}

/// Why a packet could not be wrapped or unwrapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WrapError {
    /// Too short to hold the wrapping.
    #[error("control packet too short")]
    Truncated,
    /// The HMAC or tag does not verify: wrong key, wrong direction, or forged.
    #[error("control packet authentication failed")]
    Unauthentic,
    /// The caller's buffer has no room for the wrapping.
    #[error("buffer too small: {needed} bytes needed")]
    BufferTooSmall {
        /// The size the buffer must have.
        needed: usize,
    },
    /// tls-auth with `auth none`.
    #[error("tls-auth needs an HMAC digest, but `auth` is none")]
    NoDigest,
}

/// The `--auth` digests tls-auth can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AuthDigest {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl AuthDigest {
    fn from_config(digest: Digest) -> Option<Self> {
        Some(match digest {
            Digest::Sha1 => Self::Sha1,
            Digest::Sha224 => Self::Sha224,
            Digest::Sha256 => Self::Sha256,
            Digest::Sha384 => Self::Sha384,
            Digest::Sha512 => Self::Sha512,
            Digest::None => return None,
        })
    }

    const fn len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha224 => 28,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }
}

/// An HMAC over several pieces, with the digest chosen at run time.
fn hmac_parts(digest: AuthDigest, key: &[u8], parts: &[&[u8]], out: &mut [u8]) {
    fn run<M: KeyInit + Mac>(key: &[u8], parts: &[&[u8]], out: &mut [u8]) {
        // HMAC accepts keys of any length.
        let Ok(mut mac) = <M as KeyInit>::new_from_slice(key) else {
            return;
        };
        for part in parts {
            mac.update(part);
        }
        let tag = mac.finalize().into_bytes();
        let n = out.len().min(tag.len());
        out[..n].copy_from_slice(&tag[..n]);
    }
    match digest {
        AuthDigest::Sha1 => run::<Hmac<Sha1>>(key, parts, out),
        AuthDigest::Sha224 => run::<Hmac<Sha224>>(key, parts, out),
        AuthDigest::Sha256 => run::<Hmac<Sha256>>(key, parts, out),
        AuthDigest::Sha384 => run::<Hmac<Sha384>>(key, parts, out),
        AuthDigest::Sha512 => run::<Hmac<Sha512>>(key, parts, out),
    }
}

/// Compares in constant time.
fn tags_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The cipher key slot (64 bytes) of key slot `slot` of `key2`.
fn cipher_slot(key2: &[u8; 256], slot: usize) -> &[u8] {
    &key2[slot * 128..slot * 128 + 64]
}

/// The HMAC key slot (64 bytes) of key slot `slot` of `key2`.
fn hmac_slot(key2: &[u8; 256], slot: usize) -> &[u8] {
    &key2[slot * 128 + 64..slot * 128 + 128]
}

/// tls-auth keys of one end.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct TlsAuth {
    #[zeroize(skip)]
    digest: AuthDigest,
    send_key: [u8; 64],
    recv_key: [u8; 64],
}

impl fmt::Debug for TlsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAuth")
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl TlsAuth {
    /// tls-auth with the static key `key2`, the `--auth` digest and the key direction
    /// (`None`: bidirectional, both ways with slot 0; `Normal` (0): send with slot 0, receive
    /// with slot 1; `Inverse` (1, the usual client setting): the other way round).
    ///
    /// # Errors
    ///
    /// [`WrapError::NoDigest`] with `auth none`.
    pub fn new(
        key2: &[u8; 256],
        direction: Option<KeyDirection>,
        digest: Digest,
    ) -> Result<Self, WrapError> {
        let digest = AuthDigest::from_config(digest).ok_or(WrapError::NoDigest)?;
        let (send, recv) = match direction {
            None => (0, 0),
            Some(KeyDirection::Normal) => (0, 1),
            Some(KeyDirection::Inverse) => (1, 0),
        };
        let mut send_key = [0u8; 64];
        let mut recv_key = [0u8; 64];
        send_key.copy_from_slice(hmac_slot(key2, send));
        recv_key.copy_from_slice(hmac_slot(key2, recv));
        Ok(Self {
            digest,
            send_key,
            recv_key,
        })
    }

    /// Bytes the wrapping adds to a packet: the HMAC and the replay id.
    pub fn overhead(&self) -> usize {
        self.digest.len() + REPLAY_ID_LEN
    }

    /// Wraps the plain packet at `buf[..len]` in place; returns the wrapped length.
    ///
    /// # Errors
    ///
    /// [`WrapError::Truncated`] when `len` cannot hold a header;
    /// [`WrapError::BufferTooSmall`] when `buf` has no room for [`TlsAuth::overhead`] more bytes.
    pub fn wrap(&self, replay: ReplayId, buf: &mut [u8], len: usize) -> Result<usize, WrapError> {
        let h = self.digest.len();
        if len < HEADER_LEN || len > buf.len() {
            return Err(WrapError::Truncated);
        }
        let total = len + self.overhead();
        let buf = buf
            .get_mut(..total)
            .ok_or(WrapError::BufferTooSmall { needed: total })?;
        let body_at = HEADER_LEN + h + REPLAY_ID_LEN;
        buf.copy_within(HEADER_LEN..len, body_at);
        let id = replay.to_bytes();
        buf[HEADER_LEN + h..body_at].copy_from_slice(&id);
        let mut tag = [0u8; 64];
        let (head, rest) = buf.split_at(HEADER_LEN);
        hmac_parts(
            self.digest,
            &self.send_key[..h],
            &[&id, head, &rest[h + REPLAY_ID_LEN..]],
            &mut tag[..h],
        );
        buf[HEADER_LEN..HEADER_LEN + h].copy_from_slice(&tag[..h]);
        Ok(total)
    }

    /// Checks the wrapped packet in `buf` and turns it into the plain packet in place; returns
    /// its replay id (to check against the replay window) and the plain length.
    ///
    /// # Errors
    ///
    /// [`WrapError::Truncated`] or [`WrapError::Unauthentic`]; `buf` is unchanged then.
    pub fn unwrap(&self, buf: &mut [u8]) -> Result<(ReplayId, usize), WrapError> {
        let h = self.digest.len();
        let body_at = HEADER_LEN + h + REPLAY_ID_LEN;
        if buf.len() < body_at {
            return Err(WrapError::Truncated);
        }
        let id_bytes = &buf[HEADER_LEN + h..body_at];
        let replay = ReplayId::from_bytes(id_bytes).ok_or(WrapError::Truncated)?;
        let mut tag = [0u8; 64];
        hmac_parts(
            self.digest,
            &self.recv_key[..h],
            &[id_bytes, &buf[..HEADER_LEN], &buf[body_at..]],
            &mut tag[..h],
        );
        if !tags_equal(&tag[..h], &buf[HEADER_LEN..HEADER_LEN + h]) {
            return Err(WrapError::Unauthentic);
        }
        let len = buf.len() - h - REPLAY_ID_LEN;
        buf.copy_within(body_at.., HEADER_LEN);
        Ok((replay, len))
    }
}

/// tls-crypt keys of one end: AES-256-CTR and HMAC-SHA256, both ways.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct TlsCrypt {
    send_cipher: [u8; 32],
    send_hmac: [u8; 32],
    recv_cipher: [u8; 32],
    recv_hmac: [u8; 32],
}

impl fmt::Debug for TlsCrypt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsCrypt(<secret>)")
    }
}

impl TlsCrypt {
    /// Bytes the wrapping adds to a packet: replay id and tag.
    pub const OVERHEAD: usize = REPLAY_ID_LEN + TAG_LEN;
    /// The shortest wrapped packet.
    pub const MIN_WRAPPED_LEN: usize = HEADER_LEN + Self::OVERHEAD;

    fn with_slots(key2: &[u8; 256], send: usize, recv: usize) -> Self {
        let mut keys = Self {
            send_cipher: [0; 32],
            send_hmac: [0; 32],
            recv_cipher: [0; 32],
            recv_hmac: [0; 32],
        };
        keys.send_cipher
            .copy_from_slice(&cipher_slot(key2, send)[..32]);
        keys.send_hmac.copy_from_slice(&hmac_slot(key2, send)[..32]);
        keys.recv_cipher
            .copy_from_slice(&cipher_slot(key2, recv)[..32]);
        keys.recv_hmac.copy_from_slice(&hmac_slot(key2, recv)[..32]);
        keys
    }

    /// The client's keys: tls-crypt fixes the client to the "inverse" direction, sending with
    /// slot 1 (bytes 128..160 cipher, 192..224 HMAC) and receiving with slot 0. `key-direction`
    /// does not apply.
    pub fn client(key2: &[u8; 256]) -> Self {
        Self::with_slots(key2, 1, 0)
    }

    /// The server's keys (for tests and server emulators): sends with slot 0.
    pub fn server(key2: &[u8; 256]) -> Self {
        Self::with_slots(key2, 0, 1)
    }

    fn tag(key: &[u8; 32], header: &[u8], plaintext: &[u8]) -> [u8; TAG_LEN] {
        let mut tag = [0u8; TAG_LEN];
        hmac_parts(AuthDigest::Sha256, key, &[header, plaintext], &mut tag);
        tag
    }

    fn apply_ctr(key: &[u8; 32], tag: &[u8; TAG_LEN], data: &mut [u8]) {
        // The key is 32 bytes and the IV 16: construction cannot fail.
        if let Ok(mut cipher) = ctr::Ctr128BE::<Aes256>::new_from_slices(key, &tag[..16]) {
            cipher.apply_keystream(data);
        }
    }

    /// Wraps the plain packet at `buf[..len]` in place; returns the wrapped length
    /// (`len + 40`).
    ///
    /// # Errors
    ///
    /// [`WrapError::Truncated`] when `len` cannot hold a header;
    /// [`WrapError::BufferTooSmall`] when `buf` has no room for 40 more bytes.
    pub fn wrap(&self, replay: ReplayId, buf: &mut [u8], len: usize) -> Result<usize, WrapError> {
        if len < HEADER_LEN || len > buf.len() {
            return Err(WrapError::Truncated);
        }
        let total = len + Self::OVERHEAD;
        let buf = buf
            .get_mut(..total)
            .ok_or(WrapError::BufferTooSmall { needed: total })?;
        let body_at = Self::MIN_WRAPPED_LEN;
        buf.copy_within(HEADER_LEN..len, body_at);
        buf[HEADER_LEN..HEADER_LEN + REPLAY_ID_LEN].copy_from_slice(&replay.to_bytes());
        let (head, rest) = buf.split_at_mut(HEADER_LEN + REPLAY_ID_LEN);
        let (tag_field, body) = rest.split_at_mut(TAG_LEN);
        let tag = Self::tag(&self.send_hmac, head, body);
        Self::apply_ctr(&self.send_cipher, &tag, body);
        tag_field.copy_from_slice(&tag);
        Ok(total)
    }

    /// Decrypts and checks the wrapped packet in `buf`, turning it into the plain packet in
    /// place; returns its replay id and the plain length.
    ///
    /// # Errors
    ///
    /// [`WrapError::Truncated`] or [`WrapError::Unauthentic`]; on `Unauthentic` the body of
    /// `buf` is left decrypted with the wrong key, which is garbage to throw away.
    pub fn unwrap(&self, buf: &mut [u8]) -> Result<(ReplayId, usize), WrapError> {
        if buf.len() < Self::MIN_WRAPPED_LEN {
            return Err(WrapError::Truncated);
        }
        let replay = ReplayId::from_bytes(&buf[HEADER_LEN..]).ok_or(WrapError::Truncated)?;
        let (head, rest) = buf.split_at_mut(HEADER_LEN + REPLAY_ID_LEN);
        let (tag_field, body) = rest.split_at_mut(TAG_LEN);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(tag_field);
        Self::apply_ctr(&self.recv_cipher, &tag, body);
        let expected = Self::tag(&self.recv_hmac, head, body);
        if !tags_equal(&expected, &tag) {
            return Err(WrapError::Unauthentic);
        }
        let len = buf.len() - Self::OVERHEAD;
        buf.copy_within(Self::MIN_WRAPPED_LEN.., HEADER_LEN);
        Ok((replay, len))
    }
}

/// The wrapping of a profile's control channel.
#[derive(Clone, Debug)]
pub enum ControlWrap {
    /// No tls-auth or tls-crypt: packets go as they are, with no replay id.
    None,
    /// tls-auth.
    Auth(TlsAuth),
    /// tls-crypt.
    Crypt(TlsCrypt),
}

impl ControlWrap {
    /// Bytes the wrapping adds to each packet.
    pub fn overhead(&self) -> usize {
        match self {
            Self::None => 0,
            Self::Auth(auth) => auth.overhead(),
            Self::Crypt(_) => TlsCrypt::OVERHEAD,
        }
    }

    /// Wraps `buf[..len]` in place (see [`TlsAuth::wrap`], [`TlsCrypt::wrap`]). Without
    /// wrapping the packet is unchanged and `replay` unused.
    ///
    /// # Errors
    ///
    /// As the wrapping's `wrap`.
    pub fn wrap(&self, replay: ReplayId, buf: &mut [u8], len: usize) -> Result<usize, WrapError> {
        match self {
            Self::None if len <= buf.len() => Ok(len),
            Self::None => Err(WrapError::Truncated),
            Self::Auth(auth) => auth.wrap(replay, buf, len),
            Self::Crypt(crypt) => crypt.wrap(replay, buf, len),
        }
    }

    /// Unwraps `buf` in place; the replay id is `None` without wrapping.
    ///
    /// # Errors
    ///
    /// As the wrapping's `unwrap`.
    pub fn unwrap(&self, buf: &mut [u8]) -> Result<(Option<ReplayId>, usize), WrapError> {
        match self {
            Self::None => Ok((None, buf.len())),
            Self::Auth(auth) => auth.unwrap(buf).map(|(id, len)| (Some(id), len)),
            Self::Crypt(crypt) => crypt.unwrap(buf).map(|(id, len)| (Some(id), len)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unhex(text: &str) -> Vec<u8> {
        let text: String = text.split_whitespace().collect();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The 256 bytes of an `OpenVPN Static key V1` file (test-only reader; the real one is in
    /// keys.rs).
    fn key_file(text: &str) -> [u8; 256] {
        let body: String = text
            .lines()
            .skip_while(|l| !l.starts_with("-----BEGIN"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .collect();
        unhex(&body).try_into().unwrap()
    }

    fn packets(text: &str) -> Vec<(bool, Vec<u8>)> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| (l.starts_with("c2s"), unhex(&l[4..])))
            .collect()
    }

    const TC_KEY: &str = include_str!("../../../../testvectors/captures/tls-udp/tc.key");
    const UDP_PACKETS: &str =
        include_str!("../../../../testvectors/captures/tls-udp/control-packets.txt");
    const TA_KEY: &str = include_str!("../../../../testvectors/captures/tls-auth/ta.key");
    const AUTH_PACKETS: &str =
        include_str!("../../../../testvectors/captures/tls-auth/control-packets.txt");

    #[test]
    fn control_wrap_tls_crypt_unwraps_captured_server_reset() {
        let key = key_file(TC_KEY);
        let client = TlsCrypt::client(&key);
        let all = packets(UDP_PACKETS);
        let (_, server_reset) = all.iter().find(|(c2s, _)| !c2s).unwrap();
        let mut buf = server_reset.clone();
        assert_eq!(buf.len(), 66);
        let (replay, len) = client.unwrap(&mut buf).unwrap();
        assert_eq!(replay.packet_id, 1);
        assert_eq!(replay.time, 0x6b02_0ad4);
        // P_CONTROL_HARD_RESET_SERVER_V2, its session id, one ACK (id 0) of the client's
        // session id, message id 0.
        assert_eq!(
            buf[..len].to_vec(),
            unhex("40 e28ec419397c42b3 01 00000000 7dd15da8f1a0effd 00000000")
        );
    }

    #[test]
    fn control_wrap_tls_crypt_whole_capture_roundtrips() {
        let key = key_file(TC_KEY);
        let client = TlsCrypt::client(&key);
        let server = TlsCrypt::server(&key);
        let all = packets(UDP_PACKETS);
        assert!(all.len() >= 10);
        for (index, (c2s, wire)) in all.iter().enumerate() {
            let mut buf = wire.clone();
            let (replay, len) = if *c2s {
                server.unwrap(&mut buf)
            } else {
                client.unwrap(&mut buf)
            }
            .unwrap_or_else(|e| panic!("packet {index}: {e}"));
            // Re-wrapping the plain packet with the sender's keys gives the captured bytes.
            let sender = if *c2s { &client } else { &server };
            let mut again = buf[..len].to_vec();
            again.resize(len + TlsCrypt::OVERHEAD, 0);
            assert_eq!(sender.wrap(replay, &mut again, len), Ok(wire.len()));
            assert_eq!(&again, wire, "packet {index}");
        }
        // The client's reset: 54 bytes, no ACK, message id 0.
        let mut first = all[0].1.clone();
        let (replay, len) = server.unwrap(&mut first).unwrap();
        assert_eq!(replay.packet_id, 1);
        assert_eq!(
            first[..len].to_vec(),
            unhex("38 7dd15da8f1a0effd 00 00000000")
        );
    }

    #[test]
    fn control_wrap_tls_crypt_refuses_tampering_and_wrong_direction() {
        let key = key_file(TC_KEY);
        let all = packets(UDP_PACKETS);
        let (_, server_reset) = all.iter().find(|(c2s, _)| !c2s).unwrap();
        for position in [0, 5, 12, 20, 60] {
            let mut buf = server_reset.clone();
            buf[position] ^= 0x01;
            assert_eq!(
                TlsCrypt::client(&key).unwrap(&mut buf),
                Err(WrapError::Unauthentic),
                "bit flipped at {position}"
            );
        }
        // The server cannot read its own packets: the directions differ.
        let mut buf = server_reset.clone();
        assert_eq!(
            TlsCrypt::server(&key).unwrap(&mut buf),
            Err(WrapError::Unauthentic)
        );
        assert_eq!(
            TlsCrypt::client(&key).unwrap(&mut [0u8; 48]),
            Err(WrapError::Truncated)
        );
    }

    #[test]
    fn control_wrap_tls_auth_sha512_checks_every_captured_packet() {
        let key = key_file(TA_KEY);
        // The capture's client used key-direction 1, its server 0.
        let client = TlsAuth::new(&key, Some(KeyDirection::Inverse), Digest::Sha512).unwrap();
        let server = TlsAuth::new(&key, Some(KeyDirection::Normal), Digest::Sha512).unwrap();
        assert_eq!(client.overhead(), 72);
        let all = packets(AUTH_PACKETS);
        for (index, (c2s, wire)) in all.iter().enumerate() {
            let mut buf = wire.clone();
            let receiver = if *c2s { &server } else { &client };
            let (replay, len) = receiver
                .unwrap(&mut buf)
                .unwrap_or_else(|e| panic!("packet {index}: {e}"));
            let sender = if *c2s { &client } else { &server };
            let mut again = buf[..len].to_vec();
            again.resize(len + 72, 0);
            sender.wrap(replay, &mut again, len).unwrap();
            assert_eq!(&again, wire, "packet {index}");
        }
        // The client reset of the wire notes' worked example.
        let mut reset = all[0].1.clone();
        assert_eq!(reset.len(), 86);
        let (replay, len) = server.unwrap(&mut reset).unwrap();
        assert_eq!(
            replay,
            ReplayId {
                packet_id: 1,
                time: 0x6b02_0c23
            }
        );
        assert_eq!(
            reset[..len].to_vec(),
            unhex("38 8fcd92b8920fad6a 00 00000000")
        );
        // Wrong direction or digest: silent loss in OpenVPN, an error here.
        let mut buf = all[0].1.clone();
        assert_eq!(client.unwrap(&mut buf), Err(WrapError::Unauthentic));
        let sha256 = TlsAuth::new(&key, Some(KeyDirection::Normal), Digest::Sha256).unwrap();
        let mut buf = all[0].1.clone();
        assert_eq!(sha256.unwrap(&mut buf), Err(WrapError::Unauthentic));
    }

    #[test]
    fn control_wrap_tls_auth_directions_and_sha1_layout() {
        let key: [u8; 256] = core::array::from_fn(|i| i as u8);
        // Bidirectional: both ends use slot 0 both ways.
        let a = TlsAuth::new(&key, None, Digest::Sha1).unwrap();
        let mut buf = unhex("38 0102030405060708 00 00000000");
        let len = buf.len();
        buf.resize(len + 28, 0);
        let replay = ReplayId {
            packet_id: 1,
            time: 1_700_000_000,
        };
        assert_eq!(a.wrap(replay, &mut buf, len), Ok(42));
        // op · sid · HMAC-SHA1 (20) · pid · time · rest: OpenVPN's 42-byte tls-auth reset.
        assert_eq!(buf[29..33], [0, 0, 0, 1]);
        assert_eq!(buf[33..37], 1_700_000_000u32.to_be_bytes());
        assert_eq!(buf[37..], [0, 0, 0, 0, 0]);
        let mut expected = [0u8; 20];
        hmac_parts(
            AuthDigest::Sha1,
            &key[64..84],
            &[&buf[29..37], &buf[..9], &buf[37..]],
            &mut expected,
        );
        assert_eq!(buf[9..29], expected);
        assert_eq!(a.unwrap(&mut buf), Ok((replay, len)));
        assert_eq!(
            TlsAuth::new(&key, None, Digest::None).unwrap_err(),
            WrapError::NoDigest
        );
        let mut small = [0u8; 20];
        assert_eq!(
            a.wrap(replay, &mut small, 14),
            Err(WrapError::BufferTooSmall { needed: 42 })
        );
    }

    proptest! {
        #[test]
        fn control_wrap_unwrap_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let key = [7u8; 256];
            let mut a = bytes.clone();
            let _ = TlsCrypt::client(&key).unwrap(&mut a);
            let mut b = bytes;
            let _ = TlsAuth::new(&key, None, Digest::Sha256).unwrap().unwrap(&mut b);
        }

        #[test]
        fn control_wrap_then_unwrap_is_identity(
            packet in proptest::collection::vec(any::<u8>(), 9..300),
            packet_id in any::<u32>(), time in any::<u32>(), seed in any::<u8>(),
        ) {
            let key: [u8; 256] = core::array::from_fn(|i| (i as u8).wrapping_mul(seed | 1));
            let replay = ReplayId { packet_id, time };
            let len = packet.len();
            let client = TlsCrypt::client(&key);
            let server = TlsCrypt::server(&key);
            let mut buf = packet.clone();
            buf.resize(len + TlsCrypt::OVERHEAD, 0);
            client.wrap(replay, &mut buf, len).unwrap();
            prop_assert_eq!(server.unwrap(&mut buf), Ok((replay, len)));
            prop_assert_eq!(&buf[..len], &packet[..]);

            let sender = TlsAuth::new(&key, Some(KeyDirection::Inverse), Digest::Sha256).unwrap();
            let receiver = TlsAuth::new(&key, Some(KeyDirection::Normal), Digest::Sha256).unwrap();
            let mut buf = packet.clone();
            buf.resize(len + sender.overhead(), 0);
            sender.wrap(replay, &mut buf, len).unwrap();
            prop_assert_eq!(receiver.unwrap(&mut buf), Ok((replay, len)));
            prop_assert_eq!(&buf[..len], &packet[..]);
        }
    }
}
