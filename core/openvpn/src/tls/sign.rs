//! The client's `CertificateVerify` signature, with its randomness drawn from the session's
//! seed.
//!
//! rustls's own *ring* signers take the RSA-PSS salt and the ECDSA nonce input from the
//! operating system, so a recorded session with a client certificate could not be replayed
//! past the client's signature. The signers here draw those bytes from the [`TlsProvider`]'s
//! seeded generator instead: the same seed gives the same signature.
//!
//! *ring*'s `SecureRandom` is sealed: only its `SystemRandom` and the fixed-output generators
//! of `ring::test::rand` implement it. So a signer first draws exactly as many bytes as *ring*
//! will ask for from the seeded generator and hands them over through `FixedSliceRandom`,
//! which returns them once per request:
//!
//! - RSA-PSS asks once for a salt as long as the digest (32, 48 or 64 bytes); PKCS#1 v1.5
//!   asks for nothing;
//! - ECDSA asks for one block of the digest less the digest's length (32 bytes for P-256 with
//!   SHA-256, 80 for P-384 with SHA-384), hashes it with a secret key derived from the private
//!   key and with the message's digest, and takes the nonce from that hash. In the rare case
//!   (below 2^-32 for P-256) where the candidate nonce is out of range *ring* asks again, gets
//!   the same bytes and gives up after 100 tries; the signer then draws fresh bytes and signs
//!   again.
//! - Ed25519 is deterministic and needs nothing.
//!
//! The ECDSA key is loaded once per profile. *ring* mixes bytes from its generator into the
//! secret key it derives for nonces at load time; they come from a fixed all-zero slice here,
//! so that secret is a hash of the private key alone (like RFC 6979's), and the nonce still
//! takes the seeded draw and the message's digest on top of it.
//!
//! The byte counts are unit-tested for every key type: a wrong count would panic in *ring*
//! (`copy_from_slice`), and the tests sign with each of them.
//!
//! [`TlsProvider`]: super::TlsProvider

// `ring::test::rand::FixedSliceRandom` is marked deprecated ("internal API"), but it is the
// only way to hand *ring* bytes that did not come from the operating system. The lock file
// pins ring 0.17, where it exists; if a later ring drops it, this stops compiling rather than
// silently signing with OS randomness.
#![allow(deprecated)]

use core::fmt;
use std::sync::Arc;

use ring::signature::{self as ring_sig, EcdsaKeyPair, RsaKeyPair};
use ring::test::rand::FixedSliceRandom;
use rustls::pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};
use rustls::sign::{Signer, SigningKey};
use rustls::{Error, SignatureAlgorithm, SignatureScheme};
use zeroize::Zeroizing;

use super::provider::SeededRandom;

/// RSA schemes in rustls's order of preference: PSS first (TLS 1.3 allows only PSS).
const RSA_SCHEMES: [SignatureScheme; 6] = [
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PKCS1_SHA512,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA256,
];

/// How many times an ECDSA signature is tried with fresh bytes before giving up.
const ECDSA_ATTEMPTS: usize = 4;

/// A client private key, loaded once per profile; [`ClientKey::seeded`] makes the rustls
/// signing key of one TLS configuration from it.
pub(crate) struct ClientKey {
    kind: KeyKind,
    /// rustls's own signer for the same key: it answers `public_key` and `algorithm` (the
    /// key-matches-certificate check), and signs Ed25519, which is deterministic.
    plain: Arc<dyn SigningKey>,
}

enum KeyKind {
    Rsa(Arc<RsaKeyPair>),
    Ecdsa {
        key: Arc<EcdsaKeyPair>,
        scheme: SignatureScheme,
    },
    /// Signatures that draw no randomness (Ed25519): rustls's signer is used as it is.
    Deterministic,
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKey")
            .field("algorithm", &self.plain.algorithm())
            .finish_non_exhaustive()
    }
}

impl ClientKey {
    /// Loads `der` (RSA in PKCS#1 or PKCS#8, ECDSA P-256 or P-384 in SEC1 or PKCS#8, Ed25519 in
    /// PKCS#8) with *ring*.
    pub(crate) fn load(der: &PrivateKeyDer<'_>) -> Result<Self, Error> {
        let plain = rustls::crypto::ring::sign::any_supported_type(der)?;
        let kind = match plain.algorithm() {
            SignatureAlgorithm::RSA => {
                let pair = match der {
                    PrivateKeyDer::Pkcs1(key) => RsaKeyPair::from_der(key.secret_pkcs1_der()),
                    PrivateKeyDer::Pkcs8(key) => RsaKeyPair::from_pkcs8(key.secret_pkcs8_der()),
                    _ => {
                        return Err(Error::General(
                            "an RSA key in neither PKCS#1 nor PKCS#8".into(),
                        ));
                    }
                }
                .map_err(|e| Error::General(format!("RSA key: {e}")))?;
                KeyKind::Rsa(Arc::new(pair))
            }
            SignatureAlgorithm::ECDSA => {
                // rustls accepted it as P-256 or P-384; find which by trying both.
                let (key, scheme) = load_ecdsa(der, Curve::P256)
                    .or_else(|| load_ecdsa(der, Curve::P384))
                    .ok_or_else(|| Error::General("ECDSA key: not P-256 or P-384".into()))?;
                KeyKind::Ecdsa {
                    key: Arc::new(key),
                    scheme,
                }
            }
            _ => KeyKind::Deterministic,
        };
        Ok(Self { kind, plain })
    }

    /// rustls's signer for the same key, drawing from nothing but the operating system.
    pub(crate) fn plain(&self) -> Arc<dyn SigningKey> {
        Arc::clone(&self.plain)
    }

    /// A signing key for one TLS configuration: every random byte of its signatures comes
    /// from `random`.
    pub(crate) fn seeded(self: &Arc<Self>, random: SeededRandom) -> Arc<dyn SigningKey> {
        match self.kind {
            KeyKind::Deterministic => self.plain(),
            _ => Arc::new(SeededKey {
                key: Arc::clone(self),
                random,
            }),
        }
    }
}

#[derive(Clone, Copy)]
enum Curve {
    P256,
    P384,
}

impl Curve {
    fn algorithm(self) -> &'static ring_sig::EcdsaSigningAlgorithm {
        match self {
            Self::P256 => &ring_sig::ECDSA_P256_SHA256_ASN1_SIGNING,
            Self::P384 => &ring_sig::ECDSA_P384_SHA384_ASN1_SIGNING,
        }
    }

    fn scheme(self) -> SignatureScheme {
        match self {
            Self::P256 => SignatureScheme::ECDSA_NISTP256_SHA256,
            Self::P384 => SignatureScheme::ECDSA_NISTP384_SHA384,
        }
    }

    /// The bytes *ring* asks for when loading a key: the scalar's length.
    fn load_draw(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
        }
    }

    /// The bytes *ring* asks for per nonce: the digest's block less the digest.
    fn sign_draw(self) -> usize {
        match self {
            Self::P256 => 64 - 32,
            Self::P384 => 128 - 48,
        }
    }

    /// PKCS#8 before the SEC1 key: version 0, then the algorithm (id-ecPublicKey and the
    /// curve's OID).
    fn pkcs8_prefix(self) -> &'static [u8] {
        match self {
            Self::P256 => &[
                0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
                0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
            ],
            Self::P384 => &[
                0x02, 0x01, 0x00, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
                0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22,
            ],
        }
    }
}

/// Loads an ECDSA key on `curve`; *ring* reads PKCS#8 only, so SEC1 is wrapped first.
fn load_ecdsa(der: &PrivateKeyDer<'_>, curve: Curve) -> Option<(EcdsaKeyPair, SignatureScheme)> {
    let zeros = [0u8; 48];
    let rng = FixedSliceRandom {
        bytes: &zeros[..curve.load_draw()],
    };
    let pair = match der {
        PrivateKeyDer::Pkcs8(key) => {
            EcdsaKeyPair::from_pkcs8(curve.algorithm(), key.secret_pkcs8_der(), &rng)
        }
        PrivateKeyDer::Sec1(key) => {
            let octets = der_wrap(0x04, &[key.secret_sec1_der()]);
            let pkcs8 = der_wrap(0x30, &[curve.pkcs8_prefix(), &octets]);
            EcdsaKeyPair::from_pkcs8(curve.algorithm(), &pkcs8, &rng)
        }
        _ => return None,
    };
    pair.ok().map(|pair| (pair, curve.scheme()))
}

/// One DER element: `tag`, the length, then `parts` one after the other.
fn der_wrap(tag: u8, parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
    let len: usize = parts.iter().map(|part| part.len()).sum();
    let mut out = Zeroizing::new(Vec::with_capacity(len + 6));
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|byte| **byte == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// A client key whose signatures draw from one provider's seeded generator.
struct SeededKey {
    key: Arc<ClientKey>,
    random: SeededRandom,
}

impl fmt::Debug for SeededKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeededKey").field("key", &self.key).finish()
    }
}

impl SigningKey for SeededKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = match &self.key.kind {
            KeyKind::Rsa(_) => RSA_SCHEMES
                .into_iter()
                .find(|scheme| offered.contains(scheme))?,
            KeyKind::Ecdsa { scheme, .. } => Some(*scheme).filter(|s| offered.contains(s))?,
            KeyKind::Deterministic => return self.key.plain.choose_scheme(offered),
        };
        Some(Box::new(SeededSigner {
            key: Arc::clone(&self.key),
            random: self.random.clone(),
            scheme,
        }))
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        self.key.plain.public_key()
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.key.plain.algorithm()
    }
}

/// One chosen scheme of a [`SeededKey`].
struct SeededSigner {
    key: Arc<ClientKey>,
    random: SeededRandom,
    scheme: SignatureScheme,
}

impl fmt::Debug for SeededSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeededSigner")
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

impl SeededSigner {
    fn draw(&self, len: usize) -> Result<Zeroizing<[u8; 128]>, Error> {
        let mut bytes = Zeroizing::new([0u8; 128]);
        let slot = bytes
            .get_mut(..len)
            .ok_or_else(|| Error::General("signature draw too long".into()))?;
        self.random
            .fill(slot)
            .map_err(|_| Error::General("the seeded random source failed".into()))?;
        Ok(bytes)
    }
}

impl Signer for SeededSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let failed = || Error::General("signing failed".into());
        match &self.key.kind {
            KeyKind::Rsa(pair) => {
                let (encoding, salt): (&'static dyn ring_sig::RsaEncoding, usize) =
                    match self.scheme {
                        SignatureScheme::RSA_PSS_SHA512 => (&ring_sig::RSA_PSS_SHA512, 64),
                        SignatureScheme::RSA_PSS_SHA384 => (&ring_sig::RSA_PSS_SHA384, 48),
                        SignatureScheme::RSA_PSS_SHA256 => (&ring_sig::RSA_PSS_SHA256, 32),
                        SignatureScheme::RSA_PKCS1_SHA512 => (&ring_sig::RSA_PKCS1_SHA512, 0),
                        SignatureScheme::RSA_PKCS1_SHA384 => (&ring_sig::RSA_PKCS1_SHA384, 0),
                        SignatureScheme::RSA_PKCS1_SHA256 => (&ring_sig::RSA_PKCS1_SHA256, 0),
                        _ => return Err(failed()),
                    };
                let drawn = self.draw(salt)?;
                let rng = FixedSliceRandom {
                    bytes: &drawn[..salt],
                };
                let mut signature = vec![0; pair.public().modulus_len()];
                pair.sign(encoding, &rng, message, &mut signature)
                    .map_err(|_| failed())?;
                Ok(signature)
            }
            KeyKind::Ecdsa { key, .. } => {
                let curve = match self.scheme {
                    SignatureScheme::ECDSA_NISTP256_SHA256 => Curve::P256,
                    SignatureScheme::ECDSA_NISTP384_SHA384 => Curve::P384,
                    _ => return Err(failed()),
                };
                for _ in 0..ECDSA_ATTEMPTS {
                    let drawn = self.draw(curve.sign_draw())?;
                    let rng = FixedSliceRandom {
                        bytes: &drawn[..curve.sign_draw()],
                    };
                    if let Ok(signature) = key.sign(&rng, message) {
                        return Ok(signature.as_ref().to_vec());
                    }
                }
                Err(failed())
            }
            KeyKind::Deterministic => Err(failed()),
        }
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

#[cfg(test)]
impl ClientKey {
    /// The public key *ring* derived, to verify signatures with.
    fn public_bytes(&self) -> Vec<u8> {
        use ring::signature::KeyPair as _;
        match &self.kind {
            KeyKind::Rsa(pair) => pair.public_key().as_ref().to_vec(),
            KeyKind::Ecdsa { key, .. } => key.public_key().as_ref().to_vec(),
            KeyKind::Deterministic => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

    use super::*;
    use crate::tls::TlsProvider;
    use erebus_sansio::Seed;
    use rustls::pki_types::pem::PemObject;

    const RSA_PKCS1: &[u8] = include_bytes!("../../../../testvectors/tls-pki/client.pkcs1.key");
    const RSA_PKCS8: &[u8] = include_bytes!("../../../../testvectors/tls-pki/client.pkcs8.key");
    const EC_SEC1: &[u8] = include_bytes!("../../../../testvectors/tls-pki/client-ec.sec1.key");
    const EC_PKCS8: &[u8] = include_bytes!("../../../../testvectors/tls-pki/client-ec.pkcs8.key");
    const P384_PKCS8: &[u8] = include_bytes!("../../../../testvectors/tls-pki/client-p384.key");
    const ED25519: &[u8] = include_bytes!("../../../../testvectors/tls-pki/ed25519/ed-client.key");

    const MESSAGE: &[u8] = b"TLS 1.3, client CertificateVerify\0 the transcript hash";

    fn key(pem: &[u8]) -> Arc<ClientKey> {
        Arc::new(ClientKey::load(&PrivateKeyDer::from_pem_slice(pem).unwrap()).unwrap())
    }

    fn sign(key: &Arc<ClientKey>, seed: u8, scheme: SignatureScheme) -> Vec<u8> {
        let provider = TlsProvider::new(&Seed::from_byte(seed));
        let signing = key.seeded(provider.random());
        let signer = signing.choose_scheme(&[scheme]).unwrap();
        assert_eq!(signer.scheme(), scheme);
        signer.sign(MESSAGE).unwrap()
    }

    fn verify(key: &ClientKey, scheme: SignatureScheme, signature: &[u8]) {
        let algorithm: &dyn ring_sig::VerificationAlgorithm = match scheme {
            SignatureScheme::RSA_PSS_SHA256 => &ring_sig::RSA_PSS_2048_8192_SHA256,
            SignatureScheme::RSA_PSS_SHA384 => &ring_sig::RSA_PSS_2048_8192_SHA384,
            SignatureScheme::RSA_PSS_SHA512 => &ring_sig::RSA_PSS_2048_8192_SHA512,
            SignatureScheme::RSA_PKCS1_SHA256 => &ring_sig::RSA_PKCS1_2048_8192_SHA256,
            SignatureScheme::ECDSA_NISTP256_SHA256 => &ring_sig::ECDSA_P256_SHA256_ASN1,
            SignatureScheme::ECDSA_NISTP384_SHA384 => &ring_sig::ECDSA_P384_SHA384_ASN1,
            other => panic!("no verifier for {other:?}"),
        };
        ring_sig::UnparsedPublicKey::new(algorithm, key.public_bytes())
            .verify(MESSAGE, signature)
            .unwrap_or_else(|_| panic!("{scheme:?}: the signature does not verify"));
    }

    /// Same seed, same signature; another seed, another signature; both valid.
    fn seeded_signatures(key: &Arc<ClientKey>, scheme: SignatureScheme) {
        let a = sign(key, 1, scheme);
        let b = sign(key, 1, scheme);
        let c = sign(key, 2, scheme);
        assert_eq!(a, b, "{scheme:?}: one seed gave two signatures");
        assert_ne!(a, c, "{scheme:?}: two seeds gave one signature");
        verify(key, scheme, &a);
        verify(key, scheme, &c);
    }

    #[test]
    fn sign_rsa_pss_is_seeded() {
        for pem in [RSA_PKCS1, RSA_PKCS8] {
            let key = key(pem);
            for scheme in [
                SignatureScheme::RSA_PSS_SHA256,
                SignatureScheme::RSA_PSS_SHA384,
                SignatureScheme::RSA_PSS_SHA512,
            ] {
                seeded_signatures(&key, scheme);
            }
        }
    }

    #[test]
    fn sign_rsa_pkcs1_is_deterministic_and_valid() {
        let key = key(RSA_PKCS1);
        let scheme = SignatureScheme::RSA_PKCS1_SHA256;
        let a = sign(&key, 1, scheme);
        assert_eq!(a, sign(&key, 2, scheme), "PKCS#1 v1.5 draws nothing");
        verify(&key, scheme, &a);
    }

    #[test]
    fn sign_ecdsa_is_seeded() {
        for pem in [EC_SEC1, EC_PKCS8] {
            seeded_signatures(&key(pem), SignatureScheme::ECDSA_NISTP256_SHA256);
        }
        seeded_signatures(&key(P384_PKCS8), SignatureScheme::ECDSA_NISTP384_SHA384);
    }

    #[test]
    fn sign_ecdsa_offers_only_its_curve() {
        let key = key(EC_PKCS8);
        let signing = key.seeded(TlsProvider::new(&Seed::from_byte(1)).random());
        assert!(
            signing
                .choose_scheme(&[SignatureScheme::ECDSA_NISTP384_SHA384])
                .is_none()
        );
        assert_eq!(signing.algorithm(), SignatureAlgorithm::ECDSA);
        assert!(signing.public_key().is_some());
    }

    #[test]
    fn sign_rsa_prefers_pss() {
        let key = key(RSA_PKCS8);
        let signing = key.seeded(TlsProvider::new(&Seed::from_byte(1)).random());
        let signer = signing
            .choose_scheme(&[
                SignatureScheme::RSA_PKCS1_SHA256,
                SignatureScheme::RSA_PSS_SHA256,
            ])
            .unwrap();
        assert_eq!(signer.scheme(), SignatureScheme::RSA_PSS_SHA256);
    }

    #[test]
    fn sign_ed25519_is_deterministic() {
        let key = key(ED25519);
        let a = sign(&key, 1, SignatureScheme::ED25519);
        assert_eq!(a, sign(&key, 2, SignatureScheme::ED25519));
        assert_eq!(a.len(), 64);
    }

    /// The seeded draws come from the provider's one stream: a signature moves it on.
    #[test]
    fn sign_draws_from_the_provider_stream() {
        let key = key(EC_PKCS8);
        let provider = TlsProvider::new(&Seed::from_byte(5));
        let signer = key
            .seeded(provider.random())
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
            .unwrap();
        let first = signer.sign(MESSAGE).unwrap();
        let second = signer.sign(MESSAGE).unwrap();
        assert_ne!(first, second);
    }

    #[test]
    fn der_wrap_uses_the_long_form_from_128_bytes() {
        assert_eq!(&der_wrap(0x04, &[&[1, 2]])[..], &[0x04, 2, 1, 2]);
        let long = der_wrap(0x30, &[&[0u8; 200]]);
        assert_eq!(&long[..3], &[0x30, 0x81, 200]);
        assert_eq!(long.len(), 203);
        let longer = der_wrap(0x30, &[&[0u8; 300]]);
        assert_eq!(&longer[..4], &[0x30, 0x82, 0x01, 0x2c]);
    }
}
