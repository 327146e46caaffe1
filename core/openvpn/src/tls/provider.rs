//! A deterministic rustls [`CryptoProvider`]: the same seed gives the same TLS bytes.
//!
//! rustls takes randomness from two places: the provider's `secure_random` (client random,
//! legacy session id, padding) and the key exchange groups, which generate their own ephemeral
//! keys. Both are replaced here by draws from one ChaCha20 stream keyed by the session's seed
//! (`seed.child("openvpn.tls")`), so a recorded session replays byte for byte.
//!
//! - Cipher suites are *ring*'s (TLS 1.3 AES-GCM and ChaCha20-Poly1305, TLS 1.2 ECDHE with the
//!   same AEADs); signatures are verified by webpki's *ring* algorithms.
//! - The only key exchange group is X25519, computed by `x25519-dalek` from 32 drawn bytes.
//!   *ring*'s P-256 and P-384 cannot be seeded (its `SecureRandom` trait is sealed), so they are
//!   left out: a server restricted to NIST curves (`tls-groups secp384r1`) will not connect.
//!   OpenSSL 3 servers offer X25519 by default.
//! - Wall time comes from a [`WallTime`] cell the caller sets from its `UnixTime` input; rustls
//!   reads it through [`TimeProvider`] for certificate validity.
//!
//! - The client's `CertificateVerify` signature (the RSA-PSS salt, the ECDSA nonce) draws from
//!   the same generator, through [`TlsProvider::random`] (see [`super::sign`]).
//!
//! rustls wants `&'static` references for the random source and the key exchange groups. They
//! point into a [`Slot`]: a generator in a box that is leaked once and then reused. A slot is
//! free again once every `Arc` of the provider that used it is gone (rustls's configurations
//! and connections hold clones), so the memory kept is bounded by the most providers ever
//! alive at once, not by how many were ever made: a server that sees a million clients over
//! its life keeps as many slots as it had clients at its busiest moment.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use erebus_sansio::{Seed, SeededRng, UnixTime};
use rustls::crypto::{
    ActiveKeyExchange, CryptoProvider, GetRandomFailed, KeyProvider, SecureRandom, SharedSecret,
    SupportedKxGroup, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::SigningKey;
use rustls::time_provider::TimeProvider;
use rustls::{Error, NamedGroup, PeerMisbehaved, SignatureScheme};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// The label of the TLS component's child seed.
pub const SEED_LABEL: &str = "openvpn.tls";

/// The generator every random draw of one provider comes from, at a `'static` address that
/// rustls can hold. Slots are leaked once and reused (see the module documentation).
struct Slot {
    rng: Mutex<SeededRng>,
}

impl Slot {
    fn draw(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        // A poisoned lock means a panic elsewhere already broke the session; refuse to draw
        // rather than hand out bytes from a generator in an unknown state.
        let mut rng = self.rng.lock().map_err(|_| GetRandomFailed)?;
        rng.fill(buf);
        Ok(())
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SeededSlot")
    }
}

/// rustls's random source: the slot's generator.
impl SecureRandom for Slot {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        self.draw(buf)
    }
}

/// X25519 whose ephemeral secrets are drawn from the slot's generator.
impl SupportedKxGroup for Slot {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        self.draw(bytes.as_mut())
            .map_err(|_| Error::General("the seeded random source failed".into()))?;
        let secret = StaticSecret::from(*bytes);
        let public = PublicKey::from(&secret);
        Ok(Box::new(X25519Exchange { secret, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// Every slot ever leaked, with the provider using it (a slot whose provider is gone is free).
static SLOTS: Mutex<Vec<(&'static Slot, Weak<CryptoProvider>)>> = Mutex::new(Vec::new());

/// How many slots exist: the most providers that were alive at once.
pub fn slots_in_use() -> usize {
    SLOTS.lock().unwrap_or_else(PoisonError::into_inner).len()
}

/// One X25519 exchange in progress.
struct X25519Exchange {
    secret: StaticSecret,
    public: PublicKey,
}

impl ActiveKeyExchange for X25519Exchange {
    fn complete(self: Box<Self>, peer_pub_key: &[u8]) -> Result<SharedSecret, Error> {
        let peer: [u8; 32] = peer_pub_key
            .try_into()
            .map_err(|_| Error::from(PeerMisbehaved::InvalidKeyShare))?;
        let shared = self.secret.diffie_hellman(&PublicKey::from(peer));
        // A low-order peer point gives an all-zero secret that an attacker knows (RFC 7748
        // section 6.1); *ring* refuses it too.
        if !shared.was_contributory() {
            return Err(PeerMisbehaved::InvalidKeyShare.into());
        }
        Ok(SharedSecret::from(&shared.as_bytes()[..]))
    }

    fn pub_key(&self) -> &[u8] {
        self.public.as_bytes()
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// Loads client private keys with *ring*'s signers.
#[derive(Debug)]
struct RingKeys;

impl KeyProvider for RingKeys {
    fn load_private_key(
        &self,
        key_der: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn SigningKey>, Error> {
        rustls::crypto::ring::sign::any_supported_type(&key_der)
    }
}

static RING_KEYS: RingKeys = RingKeys;

/// The signature algorithms webpki verifies with *ring*, and which TLS signature scheme maps to
/// which of them. The same table *ring*'s own provider uses.
pub(crate) static SIGNATURE_ALGORITHMS: WebPkiSupportedAlgorithms = {
    use webpki::ring as alg;
    WebPkiSupportedAlgorithms {
        all: &[
            alg::ECDSA_P256_SHA256,
            alg::ECDSA_P256_SHA384,
            alg::ECDSA_P384_SHA256,
            alg::ECDSA_P384_SHA384,
            alg::ED25519,
            alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
            alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
            alg::RSA_PKCS1_2048_8192_SHA256,
            alg::RSA_PKCS1_2048_8192_SHA384,
            alg::RSA_PKCS1_2048_8192_SHA512,
            alg::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
            alg::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
            alg::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
        ],
        mapping: &[
            (
                SignatureScheme::ECDSA_NISTP384_SHA384,
                &[alg::ECDSA_P384_SHA384, alg::ECDSA_P256_SHA384],
            ),
            (
                SignatureScheme::ECDSA_NISTP256_SHA256,
                &[alg::ECDSA_P256_SHA256, alg::ECDSA_P384_SHA256],
            ),
            (SignatureScheme::ED25519, &[alg::ED25519]),
            (
                SignatureScheme::RSA_PSS_SHA512,
                &[alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY],
            ),
            (
                SignatureScheme::RSA_PSS_SHA384,
                &[alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY],
            ),
            (
                SignatureScheme::RSA_PSS_SHA256,
                &[alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY],
            ),
            (
                SignatureScheme::RSA_PKCS1_SHA512,
                &[alg::RSA_PKCS1_2048_8192_SHA512],
            ),
            (
                SignatureScheme::RSA_PKCS1_SHA384,
                &[alg::RSA_PKCS1_2048_8192_SHA384],
            ),
            (
                SignatureScheme::RSA_PKCS1_SHA256,
                &[alg::RSA_PKCS1_2048_8192_SHA256],
            ),
        ],
    }
};

/// Wall-clock time as rustls sees it: a cell the session sets from its `UnixTime` input.
///
/// Clones share the cell. Until it is first set it reads as 0 (1970), which makes every
/// certificate "not valid yet": a forgotten update fails loudly instead of trusting a stale time.
#[derive(Clone, Debug, Default)]
pub struct WallTime(Arc<AtomicU64>);

impl WallTime {
    /// Sets the time rustls will see from now on.
    pub fn set(&self, now: UnixTime) {
        self.0.store(now.as_secs(), Ordering::Relaxed);
    }

    /// The time last set.
    pub fn get(&self) -> UnixTime {
        UnixTime::from_secs(self.0.load(Ordering::Relaxed))
    }
}

impl TimeProvider for WallTime {
    fn current_time(&self) -> Option<rustls::pki_types::UnixTime> {
        Some(rustls::pki_types::UnixTime::since_unix_epoch(
            core::time::Duration::from_secs(self.get().as_secs()),
        ))
    }
}

/// A provider's seeded generator, for the client's signatures. It holds the provider, so the
/// slot is not handed to another provider while a signer can still draw from it.
#[derive(Clone)]
pub(crate) struct SeededRandom {
    slot: &'static Slot,
    _provider: Arc<CryptoProvider>,
}

impl SeededRandom {
    /// Fills `buf` from the provider's generator.
    pub(crate) fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        self.slot.draw(buf)
    }
}

impl fmt::Debug for SeededRandom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SeededRandom")
    }
}

/// A rustls crypto provider whose every random byte comes from a seed, and its wall clock.
#[derive(Clone)]
pub struct TlsProvider {
    provider: Arc<CryptoProvider>,
    slot: &'static Slot,
    time: WallTime,
}

impl fmt::Debug for TlsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsProvider")
            .field("time", &self.time.get())
            .finish_non_exhaustive()
    }
}

impl TlsProvider {
    /// A provider drawing from `seed.child("openvpn.tls")`: pass the session's seed.
    pub fn new(seed: &Seed) -> Self {
        let rng = seed.child(SEED_LABEL).rng();
        let build = |slot: &'static Slot| CryptoProvider {
            cipher_suites: rustls::crypto::ring::ALL_CIPHER_SUITES.to_vec(),
            kx_groups: vec![slot],
            signature_verification_algorithms: SIGNATURE_ALGORITHMS,
            secure_random: slot,
            key_provider: &RING_KEYS,
        };
        let mut slots = SLOTS.lock().unwrap_or_else(PoisonError::into_inner);
        let free = slots.iter_mut().find(|(_, user)| user.strong_count() == 0);
        let (provider, slot) = match free {
            Some((slot, user)) => {
                *slot.rng.lock().unwrap_or_else(PoisonError::into_inner) = rng;
                let provider = Arc::new(build(slot));
                *user = Arc::downgrade(&provider);
                (provider, *slot)
            }
            None => {
                // rustls holds these as `&'static dyn`: a slot is leaked once, then reused.
                let slot: &'static Slot = Box::leak(Box::new(Slot {
                    rng: Mutex::new(rng),
                }));
                let provider = Arc::new(build(slot));
                slots.push((slot, Arc::downgrade(&provider)));
                (provider, slot)
            }
        };
        Self {
            provider,
            slot,
            time: WallTime::default(),
        }
    }

    /// The generator every random byte of this provider comes from, for the client's
    /// signatures.
    pub(crate) fn random(&self) -> SeededRandom {
        SeededRandom {
            slot: self.slot,
            _provider: Arc::clone(&self.provider),
        }
    }

    /// The rustls provider.
    pub(crate) fn crypto(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }

    /// The wall clock rustls reads; set it before each input that may verify a certificate.
    pub fn wall_time(&self) -> &WallTime {
        &self.time
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;

    /// The first flight of a fresh client built on `provider`.
    fn client_hello(provider: &TlsProvider) -> Vec<u8> {
        let config = rustls::ClientConfig::builder_with_details(
            Arc::clone(provider.crypto()),
            Arc::new(provider.wall_time().clone()),
        )
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let name = ServerName::try_from("server.erebus.test").unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    #[test]
    fn tls_same_seed_gives_identical_client_hellos() {
        let a = client_hello(&TlsProvider::new(&Seed::from_byte(42)));
        let b = client_hello(&TlsProvider::new(&Seed::from_byte(42)));
        assert_eq!(a[0], 0x16, "a handshake record");
        assert!(a.len() > 100);
        assert_eq!(a, b);
    }

    #[test]
    fn tls_different_seed_gives_different_client_hellos() {
        let a = client_hello(&TlsProvider::new(&Seed::from_byte(42)));
        let b = client_hello(&TlsProvider::new(&Seed::from_byte(43)));
        assert_eq!(a.len(), b.len());
        assert_ne!(a, b);
    }

    #[test]
    fn tls_provider_offers_only_seeded_x25519() {
        let provider = TlsProvider::new(&Seed::from_byte(1));
        let groups: Vec<_> = provider
            .crypto()
            .kx_groups
            .iter()
            .map(|g| g.name())
            .collect();
        assert_eq!(groups, [NamedGroup::X25519]);
    }

    #[test]
    fn tls_x25519_agrees_and_rejects_bad_points() {
        let provider = TlsProvider::new(&Seed::from_byte(7));
        let group = provider.crypto().kx_groups[0];
        let ours = group.start().unwrap();
        let theirs = group.start().unwrap();
        assert_ne!(ours.pub_key(), theirs.pub_key());
        let their_pub = theirs.pub_key().to_vec();
        let our_pub = ours.pub_key().to_vec();
        let a = ours.complete(&their_pub).unwrap();
        let b = theirs.complete(&our_pub).unwrap();
        assert_eq!(a.secret_bytes(), b.secret_bytes());

        // The all-zero point has low order: the shared secret would be all zeros.
        let err = group.start().unwrap().complete(&[0u8; 32]).err();
        assert_eq!(err, Some(Error::from(PeerMisbehaved::InvalidKeyShare)));
        let err = group.start().unwrap().complete(&[9u8; 31]).err();
        assert_eq!(err, Some(Error::from(PeerMisbehaved::InvalidKeyShare)));
    }

    #[test]
    fn tls_slots_are_reused_once_their_provider_is_gone() {
        // Other tests in this binary build providers concurrently: count only growth beyond
        // what they could explain by watching one provider's slot come back.
        let first = TlsProvider::new(&Seed::from_byte(9));
        let hello = client_hello(&first);
        let slot = first.crypto().secure_random as *const dyn SecureRandom as *const ();
        drop(first);
        let mut reused = false;
        for _ in 0..64 {
            let next = TlsProvider::new(&Seed::from_byte(9));
            let again = next.crypto().secure_random as *const dyn SecureRandom as *const ();
            // Whichever slot it got, the same seed gives the same bytes.
            assert_eq!(client_hello(&next), hello);
            if again == slot {
                reused = true;
                break;
            }
        }
        assert!(reused, "a freed slot was never handed out again");
        let before = slots_in_use();
        for byte in 0..200u8 {
            drop(TlsProvider::new(&Seed::from_byte(byte)));
        }
        // 200 providers one after the other need no new slot each.
        assert!(
            slots_in_use() < before + 32,
            "slots grew with every provider"
        );
    }

    #[test]
    fn tls_wall_time_is_what_was_set() {
        let provider = TlsProvider::new(&Seed::from_byte(1));
        let shared = provider.clone();
        shared.wall_time().set(UnixTime::from_secs(1_796_083_200));
        let seen = provider.wall_time().current_time().unwrap();
        assert_eq!(seen.as_secs(), 1_796_083_200);
    }
}
