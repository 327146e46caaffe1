//! The IKEv2 and ESP cryptography: the PRF and prf+ (RFC 7296 §2.13), the AEAD ciphers of
//! RFC 4106/5282/7634 keyed from key material with its trailing salt, and the key exchange.

use aes_gcm::AesGcm;
use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{AeadInOut, KeyInit, Nonce, Tag};
use aes_gcm::aes::{Aes128, Aes256};
use chacha20poly1305::ChaCha20Poly1305;
use crypto_bigint::modular::{FixedMontyForm, FixedMontyParams};
use crypto_bigint::{Odd, U256, U2048};
use hmac::{Hmac, Mac};
use p256::elliptic_curve::sec1::{FromSec1Point, ToSec1Point};
use sha2::{Sha256, Sha384, Sha512};
use zeroize::Zeroizing;

use crate::proposal::{DhGroup, Encr, Integ, Prf};

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

/// The RFC 3526 §3 2048-bit MODP prime (group 14), big-endian hex.
const MODP2048_HEX: &str = concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
);
/// p - 1: the largest peer value rejected at the top (RFC 7296 §2.12, SP 800-56A §5.6.2.3.1).
const MODP2048_P_MINUS_1: U2048 = U2048::from_be_hex(MODP2048_HEX).wrapping_sub(&U2048::ONE);
/// Montgomery parameters for p, computed at compile time.
const MODP2048: FixedMontyParams<{ U2048::LIMBS }> =
    FixedMontyParams::new_vartime(Odd::<U2048>::from_be_hex(MODP2048_HEX));
/// Bytes in a group-14 KE payload and shared secret.
const MODP2048_LEN: usize = 256;
/// Bytes in a group-19 KE payload (x || y) and shared secret (x).
const ECP256_COORD_LEN: usize = 32;

/// A private value from `random`: `random` itself when `make` takes it, else
/// SHA-256(`label` || `random` || counter) for counter 1, 2, ... until one is taken. Every step
/// is deterministic, so the seeded randomness alone fixes the result.
fn derive_private<T>(
    random: [u8; 32],
    label: &[u8],
    mut make: impl FnMut(&[u8; 32]) -> Option<T>,
) -> Option<T> {
    use sha2::Digest;
    let random = Zeroizing::new(random);
    if let Some(made) = make(&random) {
        return Some(made);
    }
    (1..=u8::MAX).find_map(|counter| {
        let mut hash = Sha256::new();
        hash.update(label);
        hash.update(&random[..]);
        hash.update([counter]);
        let candidate: Zeroizing<[u8; 32]> = Zeroizing::new(hash.finalize().into());
        make(&candidate)
    })
}

/// Our half of a key exchange, waiting for the peer's public value.
pub enum KeyExchange {
    /// X25519 (group 31).
    Curve25519(x25519_dalek::StaticSecret),
    /// NIST P-256 (group 19, RFC 5903).
    Ecp256(p256::SecretKey),
    /// 2048-bit MODP (group 14, RFC 3526): a 256-bit exponent and the public value 2^x mod p.
    Modp2048 {
        /// The private exponent x.
        exponent: Zeroizing<U256>,
        /// 2^x mod p, big-endian, 256 bytes.
        public: Vec<u8>,
    },
}

impl core::fmt::Debug for KeyExchange {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("KeyExchange(<secret>)")
    }
}

impl KeyExchange {
    /// A fresh private value for `group` from `random` (32 bytes of the session's seeded
    /// randomness). `None` for a group this build cannot do.
    ///
    /// - X25519: `random` is the private key (clamped by X25519 itself).
    /// - P-256: `random` read big-endian as the scalar; when it is 0 or >= n, the first
    ///   SHA-256(label || random || counter) that is a valid scalar.
    /// - MODP-2048: `random` read big-endian as a 256-bit exponent (RFC 3526 §8: at least
    ///   twice the group's 112-bit strength); 0 and 1 are re-derived the same way.
    pub fn new(group: DhGroup, random: [u8; 32]) -> Option<Self> {
        match group {
            DhGroup::Curve25519 => Some(Self::Curve25519(x25519_dalek::StaticSecret::from(random))),
            DhGroup::Ecp256 => derive_private(random, b"erebus ecp256 scalar", |candidate| {
                p256::SecretKey::from_slice(candidate).ok()
            })
            .map(Self::Ecp256),
            DhGroup::Modp2048 => {
                let exponent = derive_private(random, b"erebus modp2048 exponent", |candidate| {
                    let x = Zeroizing::new(U256::from_be_slice(candidate));
                    (*x > U256::ONE).then_some(x)
                })?;
                let generator = FixedMontyForm::new(&U2048::from_u8(2), &MODP2048);
                let public = generator.pow(&*exponent).retrieve().to_be_bytes();
                Some(Self::Modp2048 {
                    exponent,
                    public: public.as_slice().to_vec(),
                })
            }
        }
    }

    /// The groups [`KeyExchange::new`] can do.
    pub const fn supports(group: DhGroup) -> bool {
        matches!(
            group,
            DhGroup::Curve25519 | DhGroup::Ecp256 | DhGroup::Modp2048
        )
    }

    /// The group.
    pub fn group(&self) -> DhGroup {
        match self {
            Self::Curve25519(_) => DhGroup::Curve25519,
            Self::Ecp256(_) => DhGroup::Ecp256,
            Self::Modp2048 { .. } => DhGroup::Modp2048,
        }
    }

    /// Our public value, as the KE payload carries it: 32 bytes for X25519, x || y (64
    /// bytes, no SEC1 tag, RFC 5903 §7) for P-256, 256 big-endian bytes for MODP-2048.
    pub fn public(&self) -> Vec<u8> {
        match self {
            Self::Curve25519(secret) => x25519_dalek::PublicKey::from(secret).as_bytes().to_vec(),
            Self::Ecp256(secret) => {
                let point = secret.public_key().to_sec1_point(false);
                // The uncompressed SEC1 encoding is 0x04 || x || y.
                point.as_bytes().get(1..).unwrap_or_default().to_vec()
            }
            Self::Modp2048 { public, .. } => public.clone(),
        }
    }

    /// The shared secret g^ir from the peer's public value, or `None` when the value is
    /// malformed or gives a non-contributory result: an all-zero X25519 output (RFC 8031 §2),
    /// a P-256 point off the curve or at infinity, or a MODP value outside 1 < y < p - 1
    /// (RFC 7296 §2.12). P-256 gives the x coordinate (RFC 5903 §7), MODP-2048 g^xy mod p
    /// as 256 big-endian bytes.
    pub fn shared(&self, peer: &[u8]) -> Option<SecretBytes> {
        match self {
            Self::Curve25519(secret) => {
                let peer: [u8; 32] = peer.try_into().ok()?;
                let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(peer));
                shared
                    .was_contributory()
                    .then(|| Zeroizing::new(shared.as_bytes().to_vec()))
            }
            Self::Ecp256(secret) => {
                if peer.len() != 2 * ECP256_COORD_LEN {
                    return None;
                }
                let (x, y) = peer.split_at(ECP256_COORD_LEN);
                let x = p256::FieldBytes::try_from(x).ok()?;
                let y = p256::FieldBytes::try_from(y).ok()?;
                let point = p256::Sec1Point::from_affine_coordinates(&x, &y, false);
                // Rejects coordinates >= p, points off the curve and the identity.
                let public = p256::PublicKey::from_sec1_point(&point).into_option()?;
                let scalar = Zeroizing::new(secret.to_nonzero_scalar());
                let shared = p256::ecdh::diffie_hellman(*scalar, public.as_affine());
                Some(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
            }
            Self::Modp2048 { exponent, .. } => {
                if peer.len() != MODP2048_LEN {
                    return None;
                }
                let y = U2048::from_be_slice(peer);
                if y <= U2048::ONE || y >= MODP2048_P_MINUS_1 {
                    return None;
                }
                let shared = Zeroizing::new(FixedMontyForm::new(&y, &MODP2048).pow(&**exponent));
                let shared = Zeroizing::new(shared.retrieve());
                // Only a peer value of small order could give 1; p is a safe prime, so there
                // is none left after the range check, but a 1 here would be no secret.
                if *shared == U2048::ONE {
                    return None;
                }
                let bytes = Zeroizing::new(shared.to_be_bytes());
                Some(Zeroizing::new(bytes.as_slice().to_vec()))
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

    /// RFC 8439 §2.8.2: the AEAD with its 12-byte nonce as `constant | IV`, which is exactly
    /// IKEv2's and ESP's `salt | IV` (RFC 7634 §2).
    #[test]
    fn chacha20_poly1305_matches_rfc_8439_section_2_8_2() {
        let mut material = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
        material.extend_from_slice(&hex("07000000"));
        let aead = Aead::new(Encr::ChaCha20Poly1305, &material).unwrap();
        let iv: [u8; 8] = hex("4041424344454647").try_into().unwrap();
        let aad = hex("50515253c0c1c2c3c4c5c6c7");
        let plain = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip \
                      for the future, sunscreen would be it."
            .to_vec();
        let mut buf = plain.clone();
        let tag = aead.seal(&iv, &aad, &mut buf).unwrap();
        assert_eq!(buf[..16], hex("d31a8d34648e60db7b86afbc53ef7ec2")[..]);
        assert_eq!(tag[..], hex("1ae10b594f09e26a7e902ecbd0600691")[..]);
        assert!(aead.open(&iv, &aad, &mut buf, &tag));
        assert_eq!(buf, plain);
    }

    /// The GCM specification's test cases 4 (AES-128) and 16 (AES-256): a 12-byte IV split as
    /// RFC 4106 does, `salt | IV`, with additional data.
    #[test]
    fn aes_gcm_matches_the_gcm_specification_cases_4_and_16() {
        let plain = hex(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
             1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        );
        let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let iv: [u8; 8] = hex("facedbaddecaf888").try_into().unwrap();
        let cases = [
            (
                128,
                "feffe9928665731c6d6a8f9467308308",
                "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e\
                 21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
                "5bc94fbc3221a5db94fae95ae7121a47",
            ),
            (
                256,
                "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
                "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
                 8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
                "76fc6ece0f4e1768cddf8853bb2d551b",
            ),
        ];
        for (bits, key, cipher, tag) in cases {
            let mut material = hex(key);
            material.extend_from_slice(&hex("cafebabe"));
            let aead = Aead::new(Encr::AesGcm16 { bits }, &material).unwrap();
            let mut buf = plain.clone();
            let got = aead.seal(&iv, &aad, &mut buf).unwrap();
            assert_eq!(buf, hex(cipher), "AES-{bits}");
            assert_eq!(got[..], hex(tag)[..], "AES-{bits}");
            assert!(aead.open(&iv, &aad, &mut buf, &got));
            assert_eq!(buf, plain);
        }
    }

    #[test]
    fn x25519_rejects_low_order_points() {
        let kx = KeyExchange::new(DhGroup::Curve25519, [7; 32]).unwrap();
        assert!(kx.shared(&[0; 32]).is_none());
        assert!(kx.shared(&[9; 31]).is_none());
        let other = KeyExchange::new(DhGroup::Curve25519, [8; 32]).unwrap();
        assert_eq!(kx.shared(&other.public()), other.shared(&kx.public()));
    }

    fn array(bytes: &[u8]) -> [u8; 32] {
        bytes.try_into().unwrap()
    }

    /// RFC 5903 §8.1: the ECP-256 test vector (i, g^i, r, g^r, g^ir).
    #[test]
    fn ecp256_matches_rfc_5903_test_vector() {
        let i = hex("C88F01F5 10D9AC3F 70A292DA A2316DE5 44E9AAB8 AFE84049 C62A9C57 862D1433");
        let gix = hex("DAD0B653 94221CF9 B051E1FE CA5787D0 98DFE637 FC90B9EF 945D0C37 72581180");
        let giy = hex("5271A046 1CDB8252 D61F1C45 6FA3E59A B1F45B33 ACCF5F58 389E0577 B8990BB3");
        let r = hex("C6EF9C5D 78AE012A 011164AC B397CE20 88685D8F 06BF9BE0 B283AB46 476BEE53");
        let grx = hex("D12DFB52 89C8D4F8 1208B702 70398C34 2296970A 0BCCB74C 736FC755 4494BF63");
        let gry = hex("56FBF3CA 366CC23E 8157854C 13C58D6A AC23F046 ADA30F83 53E74F33 039872AB");
        let girx = hex("D6840F6B 42F6EDAF D13116E0 E1256520 2FEF8E9E CE7DCE03 812464D0 4B9442DE");

        let initiator = KeyExchange::new(DhGroup::Ecp256, array(&i)).unwrap();
        let responder = KeyExchange::new(DhGroup::Ecp256, array(&r)).unwrap();
        assert_eq!(initiator.group(), DhGroup::Ecp256);
        assert_eq!(initiator.public(), [gix, giy].concat());
        assert_eq!(responder.public(), [grx, gry].concat());
        assert_eq!(*initiator.shared(&responder.public()).unwrap(), girx);
        assert_eq!(*responder.shared(&initiator.public()).unwrap(), girx);
    }

    #[test]
    fn ecp256_rejects_bad_points() {
        let kx = KeyExchange::new(DhGroup::Ecp256, [7; 32]).unwrap();
        let good = kx.public();
        assert_eq!(good.len(), 64);
        // The identity has no affine encoding; all zeros is not on the curve.
        assert!(kx.shared(&[0; 64]).is_none());
        // Off the curve: flip a bit of y.
        let mut off = good.clone();
        off[63] ^= 1;
        assert!(kx.shared(&off).is_none());
        // A coordinate >= p.
        assert!(kx.shared(&[0xff; 64]).is_none());
        // With a SEC1 tag byte, compressed, truncated or too long.
        assert!(kx.shared(&[&[4], &good[..]].concat()).is_none());
        assert!(kx.shared(&[&[2], &good[..32]].concat()).is_none());
        assert!(kx.shared(&good[..63]).is_none());
        assert!(kx.shared(&[&good[..], &[0]].concat()).is_none());
        assert!(kx.shared(&[]).is_none());
    }

    #[test]
    fn ecp256_rederives_invalid_scalars() {
        // 0 and values >= n are no scalars; both still give a working key, deterministically.
        for random in [[0; 32], [0xff; 32]] {
            let a = KeyExchange::new(DhGroup::Ecp256, random).unwrap();
            let again = KeyExchange::new(DhGroup::Ecp256, random).unwrap();
            assert_eq!(a.public(), again.public());
            let b = KeyExchange::new(DhGroup::Ecp256, [9; 32]).unwrap();
            assert_eq!(a.shared(&b.public()), b.shared(&a.public()));
        }
    }

    /// p from RFC 3526 §3, big-endian.
    fn modp2048_p() -> Vec<u8> {
        hex(MODP2048_HEX)
    }

    /// Computed independently with Python: a = 0x00..1f, b = 0xa0..bf (big-endian),
    /// `pow(2, a, p)`, `pow(2, b, p)` and `pow(pow(2, b, p), a, p)`.
    #[test]
    fn modp2048_matches_independent_computation() {
        let a: Vec<u8> = (0x00..0x20).collect();
        let b: Vec<u8> = (0xa0..0xc0).collect();
        let expected_a = hex(concat!(
            "b933ef1eb4f876eec68c1603ea849a43a3a12038d010a892e22120ee73d00482",
            "ae591c75892e35292c3f459a2509fbe8885298e47ed90336a4c7151c23ac965f",
            "1afacad551eb04faee46baa0bb7e1c069d157700f1d84e77b6cf834cf8d9c350",
            "98a4bfbaf47a4715d76ec327840502e9e1badc58c9e39c9869971384c3c09ea2",
            "2bed20f71dedf85185956ea650ac08e9e98ea2f3c65b75f7637d19206c7c44c6",
            "39aaa10d0ddd3d51dfc618fc9deac9291486af134098b078fd65cf297e0bf243",
            "dabcef1336b003bfeb1c756a7b36739af69c80fb6df9066a940f4410d380a730",
            "1e9a61d5232089df941c7fae52415efaef020f508f74e334ff12dd11be7a8deb",
        ));
        let expected_b = hex(concat!(
            "f0fee7626bcec4d1c5c1fb11b8058af4061c0e877d02ca7aedf42e33280eb58f",
            "4309a566a74456e01d97fdba45043cd674315204b9b2409f26aeffd643010ec5",
            "e197ee67b24f0f046d1dce630794822cfe9360ed40c6975d5a2bb5892686cea6",
            "469fb9f92a52210564419dd6bfd3e023d33a4468e81b97f309c7df7be746d866",
            "0089738b09885dc100285952096132ca8d3e369525e588df9cfa4ee06280f7a9",
            "acf92bf180187afa6a9927b9d65f26adf2417a2e4cf3974bc5992dbd4997337b",
            "ec667f7b73c5b59fa03d6455070825c9f69c3f048e7051485e2c7edd1ef97221",
            "9ec6c98c973f895982c4ad77784f8807ae75680ceeb8b1aafca61a1517b42ca7",
        ));
        let expected_shared = hex(concat!(
            "38cea774f7c51205b9758f575519e302b2c63c1faaafdd1b0784a4812514813b",
            "4aa329c3427d5d610a6a9ee98fc19450aaa8af34577e982a8fcf6eae0490e228",
            "1a98845c3f93ca30293493c111970bc005d0ddc7bdcf695708a74c50c9e97fcc",
            "bd39719639532c61b123073cf041f3c45caed8691e5482bc5f9ed0e3fa7ac1b7",
            "5e3908d091b578faccf33cc166e35ade580e512be60c57b15444aca2cf517c07",
            "a1090537896ebba3ab18de04e0892fb31e2cf0f92b38810d8cc570b147dfa123",
            "8e3a1d4ce4f6789bf1b3e9510f6202df3b8222de72181e527b4582a98b822019",
            "bc2659cc113e1ff05516a889d60884f81d3f85c0784cce543c8fb97c8ce6332e",
        ));
        let ka = KeyExchange::new(DhGroup::Modp2048, array(&a)).unwrap();
        let kb = KeyExchange::new(DhGroup::Modp2048, array(&b)).unwrap();
        assert_eq!(ka.group(), DhGroup::Modp2048);
        assert_eq!(ka.public(), expected_a);
        assert_eq!(kb.public(), expected_b);
        assert_eq!(*ka.shared(&expected_b).unwrap(), expected_shared);
        assert_eq!(*kb.shared(&expected_a).unwrap(), expected_shared);
    }

    #[test]
    fn modp2048_rejects_bad_peer_values() {
        let kx = KeyExchange::new(DhGroup::Modp2048, [7; 32]).unwrap();
        let p = modp2048_p();
        assert_eq!(p.len(), 256);
        let mut p_minus_1 = p.clone();
        p_minus_1[255] -= 1;
        let mut one = vec![0; 256];
        one[255] = 1;
        for bad in [vec![0; 256], one, p_minus_1, p.clone(), vec![0xff; 256]] {
            assert!(kx.shared(&bad).is_none());
        }
        // 2 and p - 2 are the edges of the allowed range.
        let mut two = vec![0; 256];
        two[255] = 2;
        assert!(kx.shared(&two).is_some());
        let mut p_minus_2 = p;
        p_minus_2[255] -= 2;
        assert!(kx.shared(&p_minus_2).is_some());
        // Wrong lengths: not left-padded, too long, empty.
        let good = kx.public();
        assert_eq!(good.len(), 256);
        assert!(kx.shared(&good[1..]).is_none());
        assert!(kx.shared(&[&[0], &good[..]].concat()).is_none());
        assert!(kx.shared(&[2]).is_none());
        assert!(kx.shared(&[]).is_none());
    }

    #[test]
    fn modp2048_rederives_tiny_exponents() {
        // An exponent of 0 or 1 would make the public value 1 or 2.
        let mut one = [0; 32];
        one[31] = 1;
        for random in [[0; 32], one] {
            let kx = KeyExchange::new(DhGroup::Modp2048, random).unwrap();
            let public = kx.public();
            assert!(public[..255].iter().any(|&b| b != 0));
        }
    }

    #[test]
    fn every_group_round_trips() {
        for group in [DhGroup::Curve25519, DhGroup::Ecp256, DhGroup::Modp2048] {
            assert!(KeyExchange::supports(group));
            let a = KeyExchange::new(group, [0x31; 32]).unwrap();
            let b = KeyExchange::new(group, [0x42; 32]).unwrap();
            assert_eq!(a.group(), group);
            let shared = a.shared(&b.public()).unwrap();
            assert_eq!(Some(&shared), b.shared(&a.public()).as_ref());
            let len = if group == DhGroup::Modp2048 { 256 } else { 32 };
            assert_eq!(shared.len(), len);
        }
    }

    #[test]
    fn malformed_peer_values_never_panic() {
        let garbage: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(151) ^ 0x5c) as u8)
            .collect();
        for group in [DhGroup::Curve25519, DhGroup::Ecp256, DhGroup::Modp2048] {
            let kx = KeyExchange::new(group, [0x13; 32]).unwrap();
            let public = kx.public();
            for len in 0..=garbage.len() {
                let _ = kx.shared(&garbage[..len]);
                let _ = kx.shared(&public[..len.min(public.len())]);
            }
        }
    }
}

/// AES-CBC with an HMAC-SHA2 integrity check, for the SK payload of a non-AEAD IKE suite
/// (RFC 7296 §3.14): an explicit 16-byte IV, the plaintext padded to the block size, and the
/// truncated HMAC over the whole message up to the ICV.
#[derive(Clone)]
pub struct CbcHmac {
    key: CbcKey,
    integ: Integ,
    auth_key: SecretBytes,
}

#[derive(Clone)]
enum CbcKey {
    Aes128(Aes128),
    Aes256(Aes256),
}

impl core::fmt::Debug for CbcHmac {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CbcHmac(<key>)")
    }
}

/// The AES block size, and the CBC IV's length.
pub const CBC_BLOCK: usize = 16;

impl CbcHmac {
    /// Keys AES-CBC with `key` (16 or 32 bytes) and `integ` with `auth_key`.
    pub fn new(key: &[u8], integ: Integ, auth_key: &[u8]) -> Option<Self> {
        use aes::cipher::KeyInit as _;
        let key = match key.len() {
            16 => CbcKey::Aes128(Aes128::new_from_slice(key).ok()?),
            32 => CbcKey::Aes256(Aes256::new_from_slice(key).ok()?),
            _ => return None,
        };
        Some(Self {
            key,
            integ,
            auth_key: Zeroizing::new(auth_key.to_vec()),
        })
    }

    /// The ICV length.
    pub const fn icv_len(&self) -> usize {
        self.integ.icv_len()
    }

    /// Encrypts `data` (a multiple of the block size) in place.
    pub fn encrypt(&self, iv: &[u8; CBC_BLOCK], data: &mut [u8]) -> Option<()> {
        use cbc::cipher::block_padding::NoPadding;
        use cbc::cipher::{BlockModeEncrypt, InnerIvInit};
        let len = data.len();
        let iv = iv.into();
        let done = match &self.key {
            CbcKey::Aes128(k) => cbc::Encryptor::inner_iv_init(k.clone(), iv)
                .encrypt_padded::<NoPadding>(data, len)
                .is_ok(),
            CbcKey::Aes256(k) => cbc::Encryptor::inner_iv_init(k.clone(), iv)
                .encrypt_padded::<NoPadding>(data, len)
                .is_ok(),
        };
        done.then_some(())
    }

    /// Decrypts `data` (a multiple of the block size) in place.
    pub fn decrypt(&self, iv: &[u8; CBC_BLOCK], data: &mut [u8]) -> Option<()> {
        use cbc::cipher::block_padding::NoPadding;
        use cbc::cipher::{BlockModeDecrypt, InnerIvInit};
        let iv = iv.into();
        let done = match &self.key {
            CbcKey::Aes128(k) => cbc::Decryptor::inner_iv_init(k.clone(), iv)
                .decrypt_padded::<NoPadding>(data)
                .is_ok(),
            CbcKey::Aes256(k) => cbc::Decryptor::inner_iv_init(k.clone(), iv)
                .decrypt_padded::<NoPadding>(data)
                .is_ok(),
        };
        done.then_some(())
    }

    /// The truncated HMAC of `data`.
    pub fn mac(&self, data: &[u8]) -> Vec<u8> {
        let full = self.integ.matching_prf().compute(&self.auth_key, &[data]);
        full.get(..self.integ.icv_len())
            .unwrap_or_default()
            .to_vec()
    }
}

/// What protects an SK payload: an AEAD, or AES-CBC with HMAC.
#[derive(Clone, Debug)]
pub enum SkCipher {
    /// AES-GCM-16 or ChaCha20-Poly1305 (RFC 5282, RFC 7634).
    Aead(Aead),
    /// AES-CBC with HMAC-SHA2.
    CbcHmac(Box<CbcHmac>),
}

impl SkCipher {
    /// The AEAD, for an AEAD suite.
    pub fn aead(&self) -> Option<&Aead> {
        match self {
            Self::Aead(aead) => Some(aead),
            Self::CbcHmac(_) => None,
        }
    }
}
