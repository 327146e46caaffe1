//! Cryptographic suites as swanctl.conf writes them (`aes256gcm16-prfsha256-x25519`) and as
//! IKEv2 numbers them (RFC 7296 §3.3.2, RFC 7634, RFC 8031).

use core::fmt;

/// An encryption algorithm (transform type 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encr {
    /// AES-GCM with a 16-byte ICV (ID 20, RFC 4106/5282), with a key of this many bits.
    AesGcm16 {
        /// 128 or 256.
        bits: u16,
    },
    /// ChaCha20-Poly1305 (ID 28, RFC 7634).
    ChaCha20Poly1305,
    /// AES-CBC (ID 12), with a key of this many bits; needs an integrity algorithm.
    AesCbc {
        /// 128 or 256.
        bits: u16,
    },
}

impl Encr {
    /// The IANA transform ID.
    pub const fn id(self) -> u16 {
        match self {
            Self::AesGcm16 { .. } => 20,
            Self::ChaCha20Poly1305 => 28,
            Self::AesCbc { .. } => 12,
        }
    }

    /// The Key Length attribute, for the algorithms that carry one.
    pub const fn key_bits_attribute(self) -> Option<u16> {
        match self {
            Self::AesGcm16 { bits } | Self::AesCbc { bits } => Some(bits),
            Self::ChaCha20Poly1305 => None,
        }
    }

    /// Whether this is an AEAD (no separate integrity transform).
    pub const fn is_aead(self) -> bool {
        !matches!(self, Self::AesCbc { .. })
    }

    /// Key bytes taken from the key material: the key, plus the 4-byte salt for an AEAD.
    pub const fn keymat_len(self) -> usize {
        match self {
            Self::AesGcm16 { bits } => bits as usize / 8 + 4,
            Self::ChaCha20Poly1305 => 36,
            Self::AesCbc { bits } => bits as usize / 8,
        }
    }
}

impl fmt::Display for Encr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AesGcm16 { bits } => write!(f, "aes{bits}gcm16"),
            Self::ChaCha20Poly1305 => f.write_str("chacha20poly1305"),
            Self::AesCbc { bits } => write!(f, "aes{bits}"),
        }
    }
}

/// A pseudo-random function (transform type 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prf {
    /// PRF_HMAC_SHA2_256 (5).
    HmacSha256,
    /// PRF_HMAC_SHA2_384 (6).
    HmacSha384,
    /// PRF_HMAC_SHA2_512 (7).
    HmacSha512,
}

impl Prf {
    /// The IANA transform ID.
    pub const fn id(self) -> u16 {
        match self {
            Self::HmacSha256 => 5,
            Self::HmacSha384 => 6,
            Self::HmacSha512 => 7,
        }
    }

    /// Output length and preferred key length in bytes.
    #[allow(clippy::len_without_is_empty)] // A length in bytes, not a collection's size.
    pub const fn len(self) -> usize {
        match self {
            Self::HmacSha256 => 32,
            Self::HmacSha384 => 48,
            Self::HmacSha512 => 64,
        }
    }
}

impl fmt::Display for Prf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::HmacSha256 => "prfsha256",
            Self::HmacSha384 => "prfsha384",
            Self::HmacSha512 => "prfsha512",
        })
    }
}

/// An integrity algorithm (transform type 3), for non-AEAD ciphers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Integ {
    /// AUTH_HMAC_SHA2_256_128 (12).
    HmacSha256_128,
    /// AUTH_HMAC_SHA2_384_192 (13).
    HmacSha384_192,
    /// AUTH_HMAC_SHA2_512_256 (14).
    HmacSha512_256,
}

impl Integ {
    /// The IANA transform ID.
    pub const fn id(self) -> u16 {
        match self {
            Self::HmacSha256_128 => 12,
            Self::HmacSha384_192 => 13,
            Self::HmacSha512_256 => 14,
        }
    }

    /// Key length in bytes.
    pub const fn key_len(self) -> usize {
        match self {
            Self::HmacSha256_128 => 32,
            Self::HmacSha384_192 => 48,
            Self::HmacSha512_256 => 64,
        }
    }

    /// Truncated ICV length in bytes.
    pub const fn icv_len(self) -> usize {
        match self {
            Self::HmacSha256_128 => 16,
            Self::HmacSha384_192 => 24,
            Self::HmacSha512_256 => 32,
        }
    }

    /// The PRF a bare hash keyword (`sha256`) also implies in an IKE proposal.
    pub const fn matching_prf(self) -> Prf {
        match self {
            Self::HmacSha256_128 => Prf::HmacSha256,
            Self::HmacSha384_192 => Prf::HmacSha384,
            Self::HmacSha512_256 => Prf::HmacSha512,
        }
    }
}

impl fmt::Display for Integ {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::HmacSha256_128 => "sha256",
            Self::HmacSha384_192 => "sha384",
            Self::HmacSha512_256 => "sha512",
        })
    }
}

/// A key exchange method (transform type 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DhGroup {
    /// Curve25519 (31, RFC 8031).
    Curve25519,
    /// NIST P-256 (19, RFC 5903).
    Ecp256,
    /// 2048-bit MODP (14, RFC 3526).
    Modp2048,
}

impl DhGroup {
    /// The IANA transform ID.
    pub const fn id(self) -> u16 {
        match self {
            Self::Curve25519 => 31,
            Self::Ecp256 => 19,
            Self::Modp2048 => 14,
        }
    }

    /// The group with this ID, if supported.
    pub const fn from_id(id: u16) -> Option<Self> {
        match id {
            31 => Some(Self::Curve25519),
            19 => Some(Self::Ecp256),
            14 => Some(Self::Modp2048),
            _ => None,
        }
    }
}

impl fmt::Display for DhGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Curve25519 => "x25519",
            Self::Ecp256 => "ecp256",
            Self::Modp2048 => "modp2048",
        })
    }
}

/// One proposal: every algorithm listed for each transform type. The peer picks one of each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Proposal {
    /// Encryption algorithms, in order of preference.
    pub encr: Vec<Encr>,
    /// PRFs (IKE proposals only).
    pub prf: Vec<Prf>,
    /// Integrity algorithms (with non-AEAD ciphers only).
    pub integ: Vec<Integ>,
    /// Key exchange methods: required for IKE, PFS for ESP.
    pub dh: Vec<DhGroup>,
    /// Extended sequence numbers offered (ESP only): `false` is "no ESN"; empty means no ESN.
    pub esn: Vec<bool>,
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut word = |f: &mut fmt::Formatter<'_>, w: &dyn fmt::Display| {
            let sep = if first { "" } else { "-" };
            first = false;
            write!(f, "{sep}{w}")
        };
        for e in &self.encr {
            word(f, e)?;
        }
        for i in &self.integ {
            word(f, i)?;
        }
        for p in &self.prf {
            word(f, p)?;
        }
        for d in &self.dh {
            word(f, d)?;
        }
        for esn in &self.esn {
            word(f, if *esn { &"esn" } else { &"noesn" })?;
        }
        Ok(())
    }
}
