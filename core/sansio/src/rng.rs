//! Seeds and the deterministic random number generator.
//!
//! Every state machine in core takes a [`Seed`] at construction and draws all its randomness
//! (session ids, initial sequence numbers, IVs, TLS randoms and key shares) from a
//! [`SeededRng`] built from it. Production seeds come from the operating system in the driver;
//! tests and replays fix them, so a whole session can be reproduced byte for byte.
//!
//! Components never share a generator. Each one derives a child seed under its own label
//! ([`Seed::child`]), so an extra draw in one component does not shift another component's
//! bytes, and recorded fixtures survive unrelated changes.

use core::fmt;

use hmac::{Hmac, KeyInit, Mac};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A 32-byte secret seed. Zeroized on drop and never printed.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Seed([u8; 32]);

impl Seed {
    /// Length of a seed in bytes.
    pub const LEN: usize = 32;

    /// Wraps 32 bytes of seed material.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A seed made of one repeated byte; handy in tests (`Seed::from_byte(7)`).
    pub const fn from_byte(byte: u8) -> Self {
        Self([byte; 32])
    }

    /// The raw seed bytes, for a driver that records the session.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Derives the independent seed of the component named `label`.
    ///
    /// The child is HMAC-SHA256 keyed with this seed over the label, so children with different
    /// labels are unrelated and the parent cannot be recovered from a child. Use dotted,
    /// stable labels such as `"openvpn.session"` or `"net.tcp.isn"`: renaming a label changes
    /// every byte that component produces.
    pub fn child(&self, label: &str) -> Self {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(label.as_bytes());
        Self(mac.finalize().into_bytes().into())
    }

    /// A generator that draws from this seed.
    pub fn rng(&self) -> SeededRng {
        SeededRng(ChaCha20Rng::from_seed(self.0))
    }
}

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Seed(<secret>)")
    }
}

/// The one random number generator of core: ChaCha20 keyed by a [`Seed`].
///
/// The algorithm is named on purpose: its output must never change across dependency upgrades,
/// or recorded sessions would stop replaying.
#[derive(Clone)]
pub struct SeededRng(ChaCha20Rng);

impl SeededRng {
    /// Fills `dest` with random bytes.
    pub fn fill(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest);
    }

    /// A random `u32`.
    pub fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }

    /// A random `u64`.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A uniformly distributed value in `0..bound`, or 0 when `bound` is 0.
    pub fn below(&mut self, bound: u32) -> u32 {
        if bound == 0 {
            return 0;
        }
        // Lemire's multiply-shift with rejection keeps the result unbiased.
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let product = u64::from(self.next_u32()) * u64::from(bound);
            if (product as u32) >= threshold {
                return (product >> 32) as u32;
            }
        }
    }

    /// An array of random bytes.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        self.fill(&mut out);
        out
    }
}

impl fmt::Debug for SeededRng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SeededRng(<secret>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = Seed::from_byte(1).rng();
        let mut b = Seed::from_byte(1).rng();
        assert_eq!(a.array::<64>(), b.array::<64>());
        let mut c = Seed::from_byte(2).rng();
        assert_ne!(a.array::<32>(), c.array::<32>());
    }

    #[test]
    fn children_are_independent_and_stable() {
        let root = Seed::from_byte(9);
        let tcp = root.child("net.tcp.isn");
        let ovpn = root.child("openvpn.session");
        assert_ne!(tcp, ovpn);
        assert_eq!(tcp, root.child("net.tcp.isn"));
        assert_ne!(tcp, root);
    }

    /// Pins the algorithm: ChaCha20 keyed by the all-zero seed, per RFC 8439 section 2.3.2's
    /// block function with a zero key and nonce, starts with these bytes. If this changes, every
    /// recorded session in testvectors/ stops replaying.
    #[test]
    fn stream_is_chacha20() {
        let mut rng = Seed::from_byte(0).rng();
        let first: [u8; 8] = rng.array();
        assert_eq!(first, [0x76, 0xb8, 0xe0, 0xad, 0xa0, 0xf1, 0x3d, 0x90]);
    }

    #[test]
    fn below_stays_in_range() {
        let mut rng = Seed::from_byte(3).rng();
        for bound in [1, 2, 7, 1000, u32::MAX] {
            for _ in 0..100 {
                assert!(rng.below(bound) < bound);
            }
        }
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn debug_hides_secret() {
        assert_eq!(format!("{:?}", Seed::from_byte(5)), "Seed(<secret>)");
    }
}
