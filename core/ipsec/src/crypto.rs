//! The IKEv2 and ESP cryptography: the PRF and prf+ (RFC 7296 §2.13), the AEAD ciphers of
//! RFC 4106/5282/7634 keyed from key material with its trailing salt, and the key exchange.

use aes_gcm::AesGcm;
use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{AeadInOut, KeyInit, Nonce, Tag};
use aes_gcm::aes::{Aes128, Aes256};
use chacha20poly1305::ChaCha20Poly1305;
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha384, Sha512};
use zeroize::Zeroizing;

use crate::proposal::{DhGroup, Encr, Prf};

/// Bytes of secret material that are wiped when dropped.
pub type SecretBytes = Zeroizing<Vec<u8>>;

fn hmac<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes keys of any length, so this cannot fail.
    let Ok(mut mac) = <M as KeyInit>::new_from_slice(key) else {
        return Vec::new();
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

impl Prf {
    /// `prf(key, parts...)`: HMAC over the concatenation of `parts`.
    pub fn compute(self, key: &[u8], parts: &[&[u8]]) -> SecretBytes {
        Zeroizing::new(match self {
            Self::HmacSha256 => hmac::<Hmac<Sha256>>(key, parts),
            Self::HmacSha384 => hmac::<Hmac<Sha384>>(key, parts),
            Self::HmacSha512 => hmac::<Hmac<Sha512>>(key, parts),
        })
    }

    /// `prf+(key, seed)` truncated to `len` bytes (RFC 7296 §2.13). At most 255 rounds, which
    /// is far more than any key set needs; asking for more returns what 255 rounds give.
    pub fn plus(self, key: &[u8], seed: &[&[u8]], len: usize) -> SecretBytes {
        let mut out = Zeroizing::new(Vec::with_capacity(len + self.len()));
        let mut previous: SecretBytes = Zeroizing::new(Vec::new());
        let mut counter: u8 = 1;
        while out.len() < len {
            let mut parts: Vec<&[u8]> = Vec::with_capacity(seed.len() + 2);
            parts.push(&previous);
            parts.extend_from_slice(seed);
            let round = [counter];
            parts.push(&round);
            let block = self.compute(key, &parts);
            out.extend_from_slice(&block);
            previous = block;
            if counter == u8::MAX {
                break;
            }
            counter += 1;
        }
        out.truncate(len);
        out
    }
}

/// The ICV of every AEAD here.
pub const TAG_LEN: usize = 16;
/// The explicit IV of every AEAD here.
pub const IV_LEN: usize = 8;

type Aes128Gcm = AesGcm<Aes128, U12>;
type Aes256Gcm = AesGcm<Aes256, U12>;

#[derive(Clone)]
enum AeadKey {
    Aes128(Box<Aes128Gcm>),
    Aes256(Box<Aes256Gcm>),
    ChaCha(Box<ChaCha20Poly1305>),
}

/// An AEAD keyed from IKE or ESP key material: the key followed by the 4-byte salt, the
/// nonce being `salt | IV` (RFC 4106 §4, RFC 5282, RFC 7634 §2).
#[derive(Clone)]
pub struct Aead {
    key: AeadKey,
    salt: [u8; 4],
}

impl core::fmt::Debug for Aead {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Aead(<key>)")
    }
}

impl Aead {
    /// Keys `encr` from `material` (key then salt, [`Encr::keymat_len`] bytes). `None` for a
    /// non-AEAD algorithm or material of the wrong length.
    pub fn new(encr: Encr, material: &[u8]) -> Option<Self> {
        if material.len() != encr.keymat_len() {
            return None;
        }
        let (key, salt) = material.split_at(material.len() - 4);
        let key = match encr {
            Encr::AesGcm16 { bits: 128 } => {
                AeadKey::Aes128(Box::new(<Aes128Gcm as KeyInit>::new_from_slice(key).ok()?))
            }
            Encr::AesGcm16 { bits: 256 } => {
                AeadKey::Aes256(Box::new(<Aes256Gcm as KeyInit>::new_from_slice(key).ok()?))
            }
            Encr::ChaCha20Poly1305 => AeadKey::ChaCha(Box::new(
                <ChaCha20Poly1305 as KeyInit>::new_from_slice(key).ok()?,
            )),
            _ => return None,
        };
        Some(Self {
            key,
            salt: salt.try_into().ok()?,
        })
    }

    fn nonce(&self, iv: &[u8; IV_LEN]) -> [u8; 12] {
        let mut nonce = [0; 12];
        nonce[..4].copy_from_slice(&self.salt);
        nonce[4..].copy_from_slice(iv);
        nonce
    }

    /// Encrypts `payload` in place and returns the tag.
    pub fn seal(&self, iv: &[u8; IV_LEN], aad: &[u8], payload: &mut [u8]) -> Option<[u8; TAG_LEN]> {
        fn run<A: AeadInOut<NonceSize = U12>>(
            aead: &A,
            nonce: [u8; 12],
            aad: &[u8],
            payload: &mut [u8],
        ) -> Option<[u8; TAG_LEN]> {
            let nonce = Nonce::<A>::from(nonce);
            let tag = aead
                .encrypt_inout_detached(&nonce, aad, payload.into())
                .ok()?;
            tag.as_slice().try_into().ok()
        }
        let nonce = self.nonce(iv);
        match &self.key {
            AeadKey::Aes128(a) => run(a.as_ref(), nonce, aad, payload),
            AeadKey::Aes256(a) => run(a.as_ref(), nonce, aad, payload),
            AeadKey::ChaCha(a) => run(a.as_ref(), nonce, aad, payload),
        }
    }

    /// Verifies `tag` and decrypts `payload` in place; `false` when not authentic.
    pub fn open(&self, iv: &[u8; IV_LEN], aad: &[u8], payload: &mut [u8], tag: &[u8]) -> bool {
        fn run<A: AeadInOut<NonceSize = U12>>(
            aead: &A,
            nonce: [u8; 12],
            aad: &[u8],
            payload: &mut [u8],
            tag: &[u8],
        ) -> bool {
            let nonce = Nonce::<A>::from(nonce);
            let Ok(tag) = Tag::<A>::try_from(tag) else {
                return false;
            };
            aead.decrypt_inout_detached(&nonce, aad, payload.into(), &tag)
                .is_ok()
        }
        let nonce = self.nonce(iv);
        match &self.key {
            AeadKey::Aes128(a) => run(a.as_ref(), nonce, aad, payload, tag),
            AeadKey::Aes256(a) => run(a.as_ref(), nonce, aad, payload, tag),
            AeadKey::ChaCha(a) => run(a.as_ref(), nonce, aad, payload, tag),
        }
    }
}

/// Our half of a key exchange, waiting for the peer's public value.
pub enum KeyExchange {
    /// X25519 (group 31).
    Curve25519(x25519_dalek::StaticSecret),
}

impl core::fmt::Debug for KeyExchange {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("KeyExchange(<secret>)")
    }
}

impl KeyExchange {
    /// A fresh private value for `group` from `random` (32 bytes of the session's seeded
    /// randomness). `None` for a group this build cannot do.
    pub fn new(group: DhGroup, random: [u8; 32]) -> Option<Self> {
        match group {
            DhGroup::Curve25519 => Some(Self::Curve25519(x25519_dalek::StaticSecret::from(random))),
            DhGroup::Ecp256 | DhGroup::Modp2048 => None,
        }
    }

    /// The groups [`KeyExchange::new`] can do.
    pub const fn supports(group: DhGroup) -> bool {
        matches!(group, DhGroup::Curve25519)
    }

    /// The group.
    pub fn group(&self) -> DhGroup {
        match self {
            Self::Curve25519(_) => DhGroup::Curve25519,
        }
    }

    /// Our public value, as the KE payload carries it.
    pub fn public(&self) -> Vec<u8> {
        match self {
            Self::Curve25519(secret) => x25519_dalek::PublicKey::from(secret).as_bytes().to_vec(),
        }
    }

    /// The shared secret g^ir from the peer's public value, or `None` when the value is
    /// malformed or gives a non-contributory (all-zero) result (RFC 8031 §2).
    pub fn shared(&self, peer: &[u8]) -> Option<SecretBytes> {
        match self {
            Self::Curve25519(secret) => {
                let peer: [u8; 32] = peer.try_into().ok()?;
                let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(peer));
                shared
                    .was_contributory()
                    .then(|| Zeroizing::new(shared.as_bytes().to_vec()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn hmac_sha256_prf_matches_rfc_4231_case_2() {
        let out = Prf::HmacSha256.compute(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            *out,
            hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
    }

    #[test]
    fn prf_plus_chains_rounds_as_rfc_7296_says() {
        let key = b"key";
        let seed: &[&[u8]] = &[b"se", b"ed"];
        let out = Prf::HmacSha256.plus(key, seed, 70);
        let t1 = Prf::HmacSha256.compute(key, &[b"seed", &[1]]);
        let t2 = Prf::HmacSha256.compute(key, &[&t1, b"seed", &[2]]);
        let t3 = Prf::HmacSha256.compute(key, &[&t2, b"seed", &[3]]);
        assert_eq!(&out[..32], &t1[..]);
        assert_eq!(&out[32..64], &t2[..]);
        assert_eq!(&out[64..], &t3[..6]);
    }

    #[test]
    fn aead_round_trips_and_rejects_tampering() {
        for encr in [
            Encr::AesGcm16 { bits: 128 },
            Encr::AesGcm16 { bits: 256 },
            Encr::ChaCha20Poly1305,
        ] {
            let material = vec![0x42; encr.keymat_len()];
            let aead = Aead::new(encr, &material).unwrap();
            let iv = [1; 8];
            let mut buf = b"inner packet".to_vec();
            let tag = aead.seal(&iv, b"aad", &mut buf).unwrap();
            assert_ne!(&buf[..], b"inner packet");
            let mut copy = buf.clone();
            assert!(aead.open(&iv, b"aad", &mut copy, &tag));
            assert_eq!(&copy[..], b"inner packet");
            assert!(!aead.open(&iv, b"aaD", &mut buf, &tag));
        }
        assert!(Aead::new(Encr::AesCbc { bits: 256 }, &[0; 32]).is_none());
        assert!(Aead::new(Encr::ChaCha20Poly1305, &[0; 32]).is_none());
    }

    #[test]
    fn x25519_rejects_low_order_points() {
        let kx = KeyExchange::new(DhGroup::Curve25519, [7; 32]).unwrap();
        assert!(kx.shared(&[0; 32]).is_none());
        assert!(kx.shared(&[9; 31]).is_none());
        let other = KeyExchange::new(DhGroup::Curve25519, [8; 32]).unwrap();
        assert_eq!(kx.shared(&other.public()), other.shared(&kx.public()));
    }
}
