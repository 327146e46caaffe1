//! Certificates in IKE_AUTH: checking the server's certificate and its AUTH signature, and
//! signing our own AUTH with a client certificate.
//!
//! * [`ServerCheck`] holds the trust anchors (`remote.cacerts`) and the configured server
//!   identity (`remote.id`). [`ServerCheck::verify`] checks that the server's certificate chains
//!   to a trust anchor (webpki, with an IKE-friendly extended key usage rule) and that it names
//!   the identity the server sent in IDr; it returns a [`VerifiedPeer`].
//! * [`VerifiedPeer::verify_auth`] checks the server's AUTH payload (method 14, RFC 7427, or the
//!   older ECDSA methods 9 and 10 of RFC 4754) over the responder's signed octets.
//! * [`LocalSigner`] holds our certificate and private key for `local.auth = pubkey` and signs
//!   our AUTH payload with method 14.
//! * [`IkeId`] is an IKE identity (ID payload, RFC 7296 §3.5), built from the wire or from
//!   swanctl.conf text with strongSwan's rules.
//!
//! Extended key usage: strongSwan servers carry serverAuth, ikeIntermediate
//! (1.3.6.1.5.5.8.2.2), both, or no EKU at all. A certificate is accepted when it has no EKU or
//! when its EKU includes serverAuth, ikeIntermediate, id-kp-ipsecIKE (1.3.6.1.5.5.7.3.17, RFC
//! 4945) or anyExtendedKeyUsage.
//!
//! Not supported: AUTH method 1 (RSA with SHA-1, only used by peers that did not see
//! SIGNATURE_HASH_ALGORITHMS; webpki has no SHA-1 verifier), method 11 (ECDSA P-521) and
//! ecdsa-with-SHA512 (not in *ring*), revocation (CRL/OCSP).

use core::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, TrustAnchor};
use rustls::sign::SigningKey;
use sha1::{Digest, Sha1};
use webpki::{
    EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeIdIter, KeyUsage,
    RequiredEkuNotFoundContext,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::signature_algorithm::RsaSsaPssParams;
use x509_parser::x509::{AlgorithmIdentifier, X509Name};

/// ID Type 1: ID_IPV4_ADDR.
pub const ID_IPV4_ADDR: u8 = 1;
/// ID Type 2: ID_FQDN.
pub const ID_FQDN: u8 = 2;
/// ID Type 3: ID_RFC822_ADDR.
pub const ID_RFC822_ADDR: u8 = 3;
/// ID Type 5: ID_IPV6_ADDR.
pub const ID_IPV6_ADDR: u8 = 5;
/// ID Type 9: ID_DER_ASN1_DN.
pub const ID_DER_ASN1_DN: u8 = 9;
/// ID Type 11: ID_KEY_ID.
pub const ID_KEY_ID: u8 = 11;

/// AUTH method 1: RSA digital signature with SHA-1 (not supported).
pub const AUTH_RSA_SHA1: u8 = 1;
/// AUTH method 2: shared key message integrity code.
pub const AUTH_SHARED_KEY: u8 = 2;
/// AUTH method 9: ECDSA with SHA-256 on P-256 (RFC 4754), raw `r | s`.
pub const AUTH_ECDSA_P256: u8 = 9;
/// AUTH method 10: ECDSA with SHA-384 on P-384 (RFC 4754), raw `r | s`.
pub const AUTH_ECDSA_P384: u8 = 10;
/// AUTH method 11: ECDSA with SHA-512 on P-521 (RFC 4754; not supported).
pub const AUTH_ECDSA_P521: u8 = 11;
/// AUTH method 14: digital signature (RFC 7427).
pub const AUTH_DIGITAL_SIGNATURE: u8 = 14;

/// SIGNATURE_HASH_ALGORITHMS value 2: SHA-256 (RFC 7427 §7).
pub const HASH_SHA256: u16 = 2;
/// SIGNATURE_HASH_ALGORITHMS value 3: SHA-384.
pub const HASH_SHA384: u16 = 3;
/// SIGNATURE_HASH_ALGORITHMS value 4: SHA-512.
pub const HASH_SHA512: u16 = 4;
/// SIGNATURE_HASH_ALGORITHMS value 5: Identity (RFC 8420, for Ed25519).
pub const HASH_IDENTITY: u16 = 5;

// OBJECT IDENTIFIER contents (DER, without tag and length).
const OID_ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const OID_ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const OID_RSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
const OID_RSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
const OID_RSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
const OID_RSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
const OID_MGF1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08];
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const OID_SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const OID_SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

// RFC 7427 AlgorithmIdentifiers as we send them (RFC 7427 Appendix A).
const ALGID_ECDSA_SHA256: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];
const ALGID_ECDSA_SHA384: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
];
const ALGID_RSA_SHA256: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
];
const ALGID_RSA_SHA384: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c, 0x05, 0x00,
];
const ALGID_RSA_SHA512: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d, 0x05, 0x00,
];
const ALGID_ED25519: &[u8] = &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];

/// Extended key usages that make a certificate fit for an IKE server, as decoded OIDs.
const IKE_EKUS: &[&[usize]] = &[
    &[1, 3, 6, 1, 5, 5, 7, 3, 1],  // serverAuth
    &[1, 3, 6, 1, 5, 5, 8, 2, 2],  // iKEIntermediate
    &[1, 3, 6, 1, 5, 5, 7, 3, 17], // id-kp-ipsecIKE (RFC 4945)
    &[2, 5, 29, 37, 0],            // anyExtendedKeyUsage
];

/// Signature algorithms accepted in certificate chains (the table of *ring*'s rustls provider).
static CHAIN_ALGORITHMS: &[&dyn rustls::pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
];

/// Why a certificate, an identity or a signature was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// No certificate could be read from `cacerts`.
    #[error("no CA certificate could be read from cacerts")]
    NoCaCertificate,
    /// The server's certificate (or one sent with it) cannot be parsed.
    #[error("the server's certificate cannot be parsed: {0}")]
    BadCertificate(String),
    /// The chain does not lead to a configured CA.
    #[error(
        "the server's certificate ({subject}) is not signed by a configured CA (cacerts), or \
         an intermediate certificate is missing"
    )]
    NotSignedByCa {
        /// The server certificate's subject.
        subject: String,
    },
    /// A certificate of the chain has expired.
    #[error(
        "the server's certificate ({subject}) or its chain expired on {} (the time is now {})",
        utc(*not_after),
        utc(*now)
    )]
    Expired {
        /// The server certificate's subject.
        subject: String,
        /// When it stopped being valid (Unix seconds).
        not_after: u64,
        /// The time of the check (Unix seconds).
        now: u64,
    },
    /// A certificate of the chain is not valid yet.
    #[error(
        "the server's certificate ({subject}) or its chain is not valid before {} (the time is \
         now {}): check the clock",
        utc(*not_before),
        utc(*now)
    )]
    NotValidYet {
        /// The server certificate's subject.
        subject: String,
        /// When it starts being valid (Unix seconds).
        not_before: u64,
        /// The time of the check (Unix seconds).
        now: u64,
    },
    /// The extended key usage excludes IKE.
    #[error(
        "the server's certificate ({subject}) is not meant for IKE: its extended key usage has \
         neither serverAuth nor ikeIntermediate"
    )]
    WrongPurpose {
        /// The server certificate's subject.
        subject: String,
    },
    /// Any other chain failure.
    #[error("the server's certificate ({subject}) was refused: {reason}")]
    Chain {
        /// The server certificate's subject.
        subject: String,
        /// What the chain check said.
        reason: String,
    },
    /// The certificate does not contain the identity the server sent in IDr.
    #[error("the server's certificate ({subject}) does not name {id}")]
    IdNotInCertificate {
        /// The identity, as text.
        id: String,
        /// The server certificate's subject.
        subject: String,
    },
    /// The server identified as someone other than the configured `remote.id`.
    #[error(
        "the server identifies as {received}, but remote.id expects {expected} (and its \
         certificate does not name {expected} either)"
    )]
    IdMismatch {
        /// The configured identity, as text.
        expected: String,
        /// The identity the server sent, as text.
        received: String,
    },
    /// An ID payload that cannot be read.
    #[error("malformed IKE identity: {0}")]
    BadId(String),
    /// The server's AUTH signature is wrong.
    #[error("the server's AUTH signature does not verify")]
    BadSignature,
    /// The server's AUTH payload cannot be parsed.
    #[error("the server's AUTH payload is malformed: {0}")]
    BadAuth(String),
    /// The server's AUTH uses a method or algorithm we do not verify.
    #[error("the server's AUTH is not supported: {0}")]
    UnsupportedAuth(String),
    /// The server's AUTH signature algorithm does not fit its certificate's key.
    #[error("the server's AUTH uses {algorithm}, which does not fit its certificate's key")]
    AuthKeyMismatch {
        /// The signature algorithm.
        algorithm: String,
    },
    /// Our `certs` hold no certificate.
    #[error("no certificate could be read from our certs")]
    NoLocalCertificate,
    /// Our certificate cannot be parsed.
    #[error("our certificate cannot be parsed: {0}")]
    BadLocalCertificate(String),
    /// Our private key cannot be read.
    #[error("our private key cannot be read: {0}")]
    BadKey(String),
    /// Our private key is encrypted.
    #[error("our private key is encrypted with a passphrase; encrypted keys are not supported")]
    EncryptedKey,
    /// Our private key is of a type or size that cannot sign.
    #[error("our private key cannot be used: {0}")]
    UnsupportedKey(String),
    /// Our private key does not belong to our certificate.
    #[error("our private key does not belong to our certificate")]
    KeyMismatch,
    /// The server accepts none of the hashes our key can sign with.
    #[error(
        "the server accepts none of the signature hashes our {key} key can use \
         (SIGNATURE_HASH_ALGORITHMS {offered:?})"
    )]
    NoCommonHash {
        /// Our key type.
        key: &'static str,
        /// What the server offered.
        offered: Vec<u16>,
    },
    /// Signing failed.
    #[error("signing our AUTH failed: {0}")]
    SigningFailed(String),
}

/// `YYYY-MM-DD HH:MM:SS UTC` for Unix seconds.
fn utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    // Days to civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

// ---------------------------------------------------------------------------------------------
// Identities.

/// An IKE identity (ID payload, RFC 7296 §3.5).
#[derive(Clone, PartialEq, Eq)]
pub enum IkeId {
    /// ID_IPV4_ADDR.
    Ipv4(Ipv4Addr),
    /// ID_IPV6_ADDR.
    Ipv6(Ipv6Addr),
    /// ID_FQDN: a host name (a leading `*.` is a wildcard when it is a configured identity).
    Fqdn(String),
    /// ID_RFC822_ADDR: a user name with a domain (`user@host`).
    Rfc822(String),
    /// ID_DER_ASN1_DN: a distinguished name, DER.
    DerDn(Vec<u8>),
    /// ID_KEY_ID: opaque bytes.
    KeyId(Vec<u8>),
}

impl fmt::Debug for IkeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IkeId({self})")
    }
}

impl fmt::Display for IkeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ipv4(addr) => write!(f, "{addr}"),
            Self::Ipv6(addr) => write!(f, "{addr}"),
            Self::Fqdn(name) | Self::Rfc822(name) => f.write_str(name),
            Self::DerDn(der) => match X509Name::from_der(der) {
                Ok((_, name)) => write!(f, "\"{name}\""),
                Err(_) => write!(f, "<DN {}>", hex(der)),
            },
            Self::KeyId(bytes) => write!(f, "@#{}", hex(bytes)),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| {
            let pair = core::str::from_utf8(pair).ok()?;
            u8::from_str_radix(pair, 16).ok()
        })
        .collect()
}

impl IkeId {
    /// An identity from swanctl.conf text (`local.id`, `remote.id`), with strongSwan's rules:
    ///
    /// * an optional type prefix: `ipv4:`, `ipv6:`, `fqdn:`, `email:`/`rfc822:`/`userfqdn:`,
    ///   `asn1dn:`/`dn:`, `keyid:` (hex, with or without `#`);
    /// * text containing `=` is a distinguished name (`C=CH, O=strongSwan, CN=moon`, or
    ///   `/C=CH/O=...`), if it parses as one;
    /// * a dotted quad is an IPv4 address, and an IPv6 address is one too;
    /// * a leading `@` means an FQDN without the `@` (`@#hex` is a key ID, `@@` an RFC 822
    ///   address); any other text with `@` is an RFC 822 address;
    /// * anything else is an FQDN.
    ///
    /// `%any` has no identity type: the caller handles it (as "no expected identity").
    pub fn from_config(text: &str) -> Self {
        let text = text.trim();
        if let Some((prefix, rest)) = text.split_once(':') {
            let typed = match prefix.to_ascii_lowercase().as_str() {
                "ipv4" => rest.parse().ok().map(Self::Ipv4),
                "ipv6" => rest.parse().ok().map(Self::Ipv6),
                "fqdn" => Some(Self::Fqdn(rest.to_owned())),
                "email" | "rfc822" | "userfqdn" => Some(Self::Rfc822(rest.to_owned())),
                "asn1dn" | "dn" => encode_dn(rest).map(Self::DerDn),
                "keyid" => unhex(rest.trim_start_matches('#')).map(Self::KeyId),
                _ => None,
            };
            if let Some(id) = typed {
                return id;
            }
        }
        if text.contains('=')
            && let Some(der) = encode_dn(text)
        {
            return Self::DerDn(der);
        }
        if let Ok(addr) = text.parse::<Ipv4Addr>() {
            return Self::Ipv4(addr);
        }
        if let Ok(addr) = text.parse::<Ipv6Addr>() {
            return Self::Ipv6(addr);
        }
        if let Some(rest) = text.strip_prefix('@') {
            if let Some(hex) = rest.strip_prefix('#')
                && let Some(bytes) = unhex(hex)
            {
                return Self::KeyId(bytes);
            }
            if let Some(user) = rest.strip_prefix('@') {
                return Self::Rfc822(user.to_owned());
            }
            return Self::Fqdn(rest.to_owned());
        }
        if text.contains('@') {
            return Self::Rfc822(text.to_owned());
        }
        Self::Fqdn(text.to_owned())
    }

    /// The ID Type of an ID payload.
    pub fn id_type(&self) -> u8 {
        match self {
            Self::Ipv4(_) => ID_IPV4_ADDR,
            Self::Ipv6(_) => ID_IPV6_ADDR,
            Self::Fqdn(_) => ID_FQDN,
            Self::Rfc822(_) => ID_RFC822_ADDR,
            Self::DerDn(_) => ID_DER_ASN1_DN,
            Self::KeyId(_) => ID_KEY_ID,
        }
    }

    /// The identification data of an ID payload.
    pub fn data(&self) -> Vec<u8> {
        match self {
            Self::Ipv4(addr) => addr.octets().to_vec(),
            Self::Ipv6(addr) => addr.octets().to_vec(),
            Self::Fqdn(text) | Self::Rfc822(text) => text.as_bytes().to_vec(),
            Self::DerDn(bytes) | Self::KeyId(bytes) => bytes.clone(),
        }
    }

    /// An identity from an ID payload's type and data.
    ///
    /// # Errors
    ///
    /// [`CertError::BadId`] for an unknown type, an address of the wrong length, a name that
    /// is not UTF-8 or a DN that is not DER.
    pub fn parse(id_type: u8, data: &[u8]) -> Result<Self, CertError> {
        let text = || {
            String::from_utf8(data.to_vec())
                .map_err(|_| CertError::BadId(format!("ID type {id_type} is not UTF-8 text")))
        };
        match id_type {
            ID_IPV4_ADDR => <[u8; 4]>::try_from(data)
                .map(|b| Self::Ipv4(Ipv4Addr::from(b)))
                .map_err(|_| CertError::BadId(format!("an IPv4 ID of {} bytes", data.len()))),
            ID_IPV6_ADDR => <[u8; 16]>::try_from(data)
                .map(|b| Self::Ipv6(Ipv6Addr::from(b)))
                .map_err(|_| CertError::BadId(format!("an IPv6 ID of {} bytes", data.len()))),
            ID_FQDN => Ok(Self::Fqdn(text()?)),
            ID_RFC822_ADDR => Ok(Self::Rfc822(text()?)),
            ID_DER_ASN1_DN => match X509Name::from_der(data) {
                Ok(([], _)) => Ok(Self::DerDn(data.to_vec())),
                _ => Err(CertError::BadId("a DN ID that is not DER".to_owned())),
            },
            ID_KEY_ID => Ok(Self::KeyId(data.to_vec())),
            other => Err(CertError::BadId(format!("unsupported ID type {other}"))),
        }
    }

    /// Whether `self`, a configured identity, accepts the identity `other` a peer sent: same
    /// type, and equal (names and addresses ignoring ASCII case; DNs attribute by attribute).
    /// A configured FQDN or RFC 822 address may start with `*` (matching any prefix), and a
    /// configured DN attribute value may be `*` (matching any value).
    pub fn matches(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Ipv4(a), Self::Ipv4(b)) => a == b,
            (Self::Ipv6(a), Self::Ipv6(b)) => a == b,
            (Self::Fqdn(a), Self::Fqdn(b)) | (Self::Rfc822(a), Self::Rfc822(b)) => {
                wildcard_eq(a, b)
            }
            (Self::DerDn(a), Self::DerDn(b)) => dn_matches(a, b, true),
            (Self::KeyId(a), Self::KeyId(b)) => a == b,
            _ => false,
        }
    }
}

/// `pattern` equals `text` ignoring ASCII case, where a leading `*` in `pattern` matches any
/// prefix.
fn wildcard_eq(pattern: &str, text: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => {
            text.len() >= suffix.len()
                && text
                    .get(text.len() - suffix.len()..)
                    .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
        }
        None => pattern.eq_ignore_ascii_case(text),
    }
}

/// Whether the DER DN `pattern` matches the DER DN `name`: the same attribute types in the same
/// order, each value equal ignoring ASCII case (string types) or byte for byte, or `*` in the
/// pattern when `wildcards` is set (for configured identities only).
fn dn_matches(pattern: &[u8], name: &[u8], wildcards: bool) -> bool {
    let (Ok((_, pattern)), Ok((_, name))) = (X509Name::from_der(pattern), X509Name::from_der(name))
    else {
        return false;
    };
    let pattern: Vec<_> = pattern.iter_attributes().collect();
    let name: Vec<_> = name.iter_attributes().collect();
    pattern.len() == name.len()
        && pattern.iter().zip(&name).all(|(p, n)| {
            p.attr_type() == n.attr_type()
                && match (p.as_str(), n.as_str()) {
                    (Ok("*"), _) if wildcards => true,
                    (Ok(p), Ok(n)) => p.eq_ignore_ascii_case(n),
                    _ => p.as_slice() == n.as_slice(),
                }
        })
}

/// An X.501 attribute name of strongSwan's DN syntax: its OID arcs and the string type of its
/// value (`None`: PrintableString when possible, else UTF8String).
fn dn_attribute(name: &str) -> Option<(&'static [u64], Option<u8>)> {
    const IA5: Option<u8> = Some(0x16);
    Some(match name.to_ascii_lowercase().as_str() {
        "cn" | "commonname" => (&[2, 5, 4, 3], None),
        "s" | "surname" => (&[2, 5, 4, 4], None),
        "sn" | "serialnumber" => (&[2, 5, 4, 5], None),
        "c" | "countryname" => (&[2, 5, 4, 6], None),
        "l" | "localityname" => (&[2, 5, 4, 7], None),
        "st" | "stateorprovincename" => (&[2, 5, 4, 8], None),
        "street" => (&[2, 5, 4, 9], None),
        "o" | "organizationname" => (&[2, 5, 4, 10], None),
        "ou" | "organizationalunitname" => (&[2, 5, 4, 11], None),
        "t" | "title" => (&[2, 5, 4, 12], None),
        "d" | "description" => (&[2, 5, 4, 13], None),
        "postalcode" => (&[2, 5, 4, 17], None),
        "n" | "name" => (&[2, 5, 4, 41], None),
        "g" | "gn" | "givenname" => (&[2, 5, 4, 42], None),
        "i" | "initials" => (&[2, 5, 4, 43], None),
        "id" | "uniqueidentifier" => (&[2, 5, 4, 45], None),
        "dnq" | "dnqualifier" => (&[2, 5, 4, 46], None),
        "pseudonym" => (&[2, 5, 4, 65], None),
        "e" | "email" | "emailaddress" => (&[1, 2, 840, 113_549, 1, 9, 1], IA5),
        "un" | "unstructuredname" => (&[1, 2, 840, 113_549, 1, 9, 2], IA5),
        "uid" | "userid" => (&[0, 9, 2342, 19_200_300, 100, 1, 1], None),
        "dc" | "domaincomponent" => (&[0, 9, 2342, 19_200_300, 100, 1, 25], IA5),
        _ => return None,
    })
}

/// A DER TLV.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap_or_default());
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        let significant = bytes.get(skip..).unwrap_or_default();
        out.push(0x80 | u8::try_from(significant.len()).unwrap_or_default());
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

/// The DER of an OBJECT IDENTIFIER.
fn der_oid(arcs: &[u64]) -> Vec<u8> {
    let mut content = Vec::new();
    let mut push_arc = |mut value: u64| {
        let mut groups = vec![u8::try_from(value & 0x7f).unwrap_or_default()];
        value >>= 7;
        while value > 0 {
            groups.push(0x80 | u8::try_from(value & 0x7f).unwrap_or_default());
            value >>= 7;
        }
        content.extend(groups.iter().rev());
    };
    if let [first, second, rest @ ..] = arcs {
        push_arc(first * 40 + second);
        for &arc in rest {
            push_arc(arc);
        }
    }
    der(0x06, &content)
}

/// Whether `text` fits a PrintableString.
fn is_printable(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b))
}

/// The DER of a DN in strongSwan's text syntax, or `None` when it does not parse.
fn encode_dn(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    let (separator, body) = match text.strip_prefix('/') {
        Some(rest) => ('/', rest),
        None => (',', text),
    };
    // Split on unescaped separators; `\` escapes the next character.
    let mut parts = vec![String::new()];
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => parts.last_mut()?.push(chars.next()?),
            c if c == separator => parts.push(String::new()),
            c => parts.last_mut()?.push(c),
        }
    }
    let mut rdns = Vec::new();
    for part in &parts {
        let (name, value) = part.split_once('=')?;
        let (arcs, string_type) = dn_attribute(name.trim())?;
        let value = value.trim();
        let tag = string_type.unwrap_or(if is_printable(value) { 0x13 } else { 0x0c });
        let attribute = [der_oid(arcs), der(tag, value.as_bytes())].concat();
        rdns.extend(der(0x31, &der(0x30, &attribute)));
    }
    if rdns.is_empty() {
        return None;
    }
    Some(der(0x30, &rdns))
}

// ---------------------------------------------------------------------------------------------
// Reading certificates.

/// The certificates in `bytes`: every CERTIFICATE of PEM text, or `bytes` as one DER
/// certificate.
fn read_certificates(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    if contains(bytes, b"-----BEGIN") {
        CertificateDer::pem_slice_iter(bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("bad PEM: {e}"))
    } else {
        X509Certificate::from_der(bytes).map_err(|e| format!("not a DER certificate: {e}"))?;
        Ok(vec![CertificateDer::from(bytes.to_vec())])
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// SHA-1 of a CA certificate's SubjectPublicKeyInfo (DER): what a CERTREQ payload lists for it
/// (RFC 7296 §3.7).
///
/// # Errors
///
/// [`CertError::BadCertificate`] when `ca_der` is not a DER certificate.
pub fn ca_keyid(ca_der: &[u8]) -> Result<[u8; 20], CertError> {
    let (_, cert) =
        X509Certificate::from_der(ca_der).map_err(|e| CertError::BadCertificate(e.to_string()))?;
    Ok(Sha1::digest(cert.public_key().raw).into())
}

/// The subject of a certificate, as text, for messages.
fn subject_text(cert: &X509Certificate<'_>) -> String {
    cert.subject().to_string()
}

// ---------------------------------------------------------------------------------------------
// The server's certificate.

/// The EKU rule for IKE servers: none, or one of [`IKE_EKUS`].
struct IkeUsage;

impl ExtendedKeyUsageValidator for IkeUsage {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        let mut present = Vec::new();
        for id in iter {
            let oid = id?.to_decoded_oid();
            if IKE_EKUS.contains(&oid.as_slice()) {
                return Ok(());
            }
            present.push(oid);
        }
        if present.is_empty() {
            return Ok(());
        }
        Err(webpki::Error::RequiredEkuNotFoundContext(
            RequiredEkuNotFoundContext {
                required: KeyUsage::server_auth(),
                present,
            },
        ))
    }
}

/// Trust anchors and the identity the server must prove.
pub struct ServerCheck {
    cas: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
    expected_id: Option<IkeId>,
}

impl fmt::Debug for ServerCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCheck")
            .field("ca_certificates", &self.anchors.len())
            .field("expected_id", &self.expected_id)
            .finish()
    }
}

impl ServerCheck {
    /// Trusts the CA certificates of `cacerts` (each PEM, possibly with several certificates,
    /// or one DER certificate); the server must prove `expected_id` (`remote.id`) when set.
    /// Certificates that cannot be read are skipped with a warning.
    ///
    /// # Errors
    ///
    /// [`CertError::NoCaCertificate`] when no certificate could be read.
    pub fn new(cacerts: &[&[u8]], expected_id: Option<&IkeId>) -> Result<Self, CertError> {
        let mut cas = Vec::new();
        let mut anchors = Vec::new();
        for (index, bytes) in cacerts.iter().enumerate() {
            let certs = match read_certificates(bytes) {
                Ok(certs) => certs,
                Err(reason) => {
                    tracing::warn!(index, %reason, "skipping an unreadable CA certificate");
                    continue;
                }
            };
            for cert in certs {
                match webpki::anchor_from_trusted_cert(&cert) {
                    Ok(anchor) => {
                        anchors.push(anchor.to_owned());
                        cas.push(cert);
                    }
                    Err(error) => {
                        tracing::warn!(index, %error, "skipping an unusable CA certificate");
                    }
                }
            }
        }
        if anchors.is_empty() {
            return Err(CertError::NoCaCertificate);
        }
        Ok(Self {
            cas,
            anchors,
            expected_id: expected_id.cloned(),
        })
    }

    /// The SHA-1 key IDs of the trusted CAs ([`ca_keyid`]), for a CERTREQ payload.
    pub fn ca_keyids(&self) -> Vec<[u8; 20]> {
        self.cas
            .iter()
            .filter_map(|cert| ca_keyid(cert).ok())
            .collect()
    }

    /// Verifies that `end_entity` (DER), with `intermediates` (DER), chains to a trust anchor
    /// at `now_unix` (Unix seconds), that it names `id` (the server's IDr), and that `id`
    /// satisfies the configured identity.
    ///
    /// The certificate names `id` when: an FQDN matches a dNSName subjectAltName (wildcards as
    /// webpki allows them), an IP address an iPAddress subjectAltName, an RFC 822 address an
    /// rfc822Name subjectAltName (ignoring ASCII case), a DN the subject, and a key ID the
    /// subjectKeyIdentifier or the SHA-1 of the public key (or of the SubjectPublicKeyInfo).
    ///
    /// The configured identity is satisfied when `id` [matches](IkeId::matches) it, or
    /// otherwise when the certificate names it too (strongSwan servers send their subject DN
    /// as IDr unless configured otherwise, while a client configures the host name).
    ///
    /// # Errors
    ///
    /// The first check that fails, as a [`CertError`].
    pub fn verify(
        &self,
        end_entity: &[u8],
        intermediates: &[&[u8]],
        id: &IkeId,
        now_unix: u64,
    ) -> Result<VerifiedPeer, CertError> {
        let (_, parsed) = X509Certificate::from_der(end_entity)
            .map_err(|e| CertError::BadCertificate(e.to_string()))?;
        let subject = subject_text(&parsed);

        let ee_der = CertificateDer::from(end_entity);
        let ee = EndEntityCert::try_from(&ee_der)
            .map_err(|e| CertError::BadCertificate(e.to_string()))?;
        let intermediates: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .map(|der| CertificateDer::from(*der))
            .collect();
        let time = rustls::pki_types::UnixTime::since_unix_epoch(core::time::Duration::from_secs(
            now_unix,
        ));
        ee.verify_for_usage(
            CHAIN_ALGORITHMS,
            &self.anchors,
            &intermediates,
            time,
            IkeUsage,
            None,
            None,
        )
        .map_err(|e| chain_error(e, &subject))?;

        if !certificate_names(&ee, &parsed, id) {
            return Err(CertError::IdNotInCertificate {
                id: id.to_string(),
                subject,
            });
        }
        if let Some(expected) = &self.expected_id
            && !expected.matches(id)
            && !certificate_names(&ee, &parsed, expected)
        {
            return Err(CertError::IdMismatch {
                expected: expected.to_string(),
                received: id.to_string(),
            });
        }
        Ok(VerifiedPeer {
            der: end_entity.to_vec(),
            subject,
        })
    }
}

fn chain_error(error: webpki::Error, subject: &str) -> CertError {
    let subject = subject.to_owned();
    match error {
        // A CA of the same name whose key did not sign the certificate is no issuer either.
        webpki::Error::UnknownIssuer
        | webpki::Error::InvalidSignatureForPublicKey
        | webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            CertError::NotSignedByCa { subject }
        }
        webpki::Error::CertExpired { time, not_after } => CertError::Expired {
            subject,
            not_after: not_after.as_secs(),
            now: time.as_secs(),
        },
        webpki::Error::CertNotValidYet { time, not_before } => CertError::NotValidYet {
            subject,
            not_before: not_before.as_secs(),
            now: time.as_secs(),
        },
        webpki::Error::RequiredEkuNotFoundContext(_) => CertError::WrongPurpose { subject },
        other => {
            #[allow(deprecated)]
            match other {
                webpki::Error::RequiredEkuNotFound => return CertError::WrongPurpose { subject },
                webpki::Error::UnsupportedSignatureAlgorithmForPublicKey => {
                    return CertError::NotSignedByCa { subject };
                }
                _ => {}
            }
            CertError::Chain {
                subject,
                reason: other.to_string(),
            }
        }
    }
}

/// Whether the (verified) certificate names `id`.
fn certificate_names(ee: &EndEntityCert<'_>, cert: &X509Certificate<'_>, id: &IkeId) -> bool {
    let sans = || {
        cert.subject_alternative_name()
            .ok()
            .flatten()
            .map(|ext| ext.value.general_names.clone())
            .unwrap_or_default()
    };
    match id {
        IkeId::Fqdn(name) => ServerName::try_from(name.as_str())
            .is_ok_and(|name| ee.verify_is_valid_for_subject_name(&name).is_ok()),
        IkeId::Ipv4(addr) => ee
            .verify_is_valid_for_subject_name(&ServerName::IpAddress(
                std::net::IpAddr::V4(*addr).into(),
            ))
            .is_ok(),
        IkeId::Ipv6(addr) => ee
            .verify_is_valid_for_subject_name(&ServerName::IpAddress(
                std::net::IpAddr::V6(*addr).into(),
            ))
            .is_ok(),
        IkeId::Rfc822(address) => sans().iter().any(
            |name| matches!(name, GeneralName::RFC822Name(san) if san.eq_ignore_ascii_case(address)),
        ),
        IkeId::DerDn(der) => dn_matches(der, cert.subject().as_raw(), false),
        IkeId::KeyId(key_id) => {
            let spki = cert.public_key();
            let skid = cert.iter_extensions().find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(skid) => Some(skid.0),
                _ => None,
            });
            skid == Some(key_id.as_slice())
                || Sha1::digest(&spki.subject_public_key.data).as_slice() == key_id.as_slice()
                || Sha1::digest(spki.raw).as_slice() == key_id.as_slice()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The server's AUTH signature.

/// A server certificate that [`ServerCheck::verify`] accepted: its public key checks AUTH.
#[derive(Clone)]
pub struct VerifiedPeer {
    der: Vec<u8>,
    subject: String,
}

impl fmt::Debug for VerifiedPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedPeer")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// The verification algorithms a signature may use: one fits the certificate's key.
type Algorithms = &'static [&'static dyn rustls::pki_types::SignatureVerificationAlgorithm];

static ALGS_ECDSA_P256_SHA256: Algorithms = &[webpki::ring::ECDSA_P256_SHA256];
static ALGS_ECDSA_P384_SHA384: Algorithms = &[webpki::ring::ECDSA_P384_SHA384];
static ALGS_ECDSA_SHA256: Algorithms = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P384_SHA256,
];
static ALGS_ECDSA_SHA384: Algorithms = &[
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ECDSA_P256_SHA384,
];
static ALGS_RSA_SHA256: Algorithms = &[webpki::ring::RSA_PKCS1_2048_8192_SHA256];
static ALGS_RSA_SHA384: Algorithms = &[webpki::ring::RSA_PKCS1_2048_8192_SHA384];
static ALGS_RSA_SHA512: Algorithms = &[webpki::ring::RSA_PKCS1_2048_8192_SHA512];
static ALGS_PSS_SHA256: Algorithms = &[webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY];
static ALGS_PSS_SHA384: Algorithms = &[webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY];
static ALGS_PSS_SHA512: Algorithms = &[webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY];
static ALGS_ED25519: Algorithms = &[webpki::ring::ED25519];

impl VerifiedPeer {
    /// The certificate's subject, as text.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.der
    }

    /// Verifies an IKEv2 AUTH payload body (its `method` and authentication `data`) over
    /// `signed_octets` with the certificate's key.
    ///
    /// Method 14 (RFC 7427: one length byte, a DER AlgorithmIdentifier, the signature) with
    /// ecdsa-with-SHA256/384 (DER signature), sha256/384/512WithRSAEncryption (PKCS#1 v1.5),
    /// RSASSA-PSS with SHA-256/384/512, MGF1 with the same hash and a salt of the hash's length,
    /// or Ed25519; methods 9 and 10 (ECDSA P-256/SHA-256 and P-384/SHA-384, raw `r | s`).
    ///
    /// # Errors
    ///
    /// [`CertError::BadSignature`] when the signature is wrong, [`CertError::BadAuth`] when the
    /// data cannot be parsed, [`CertError::UnsupportedAuth`] for other methods and algorithms,
    /// and [`CertError::AuthKeyMismatch`] when the algorithm does not fit the key.
    pub fn verify_auth(
        &self,
        method: u8,
        data: &[u8],
        signed_octets: &[u8],
    ) -> Result<(), CertError> {
        let (algorithms, name, signature): (Algorithms, String, Vec<u8>) = match method {
            AUTH_DIGITAL_SIGNATURE => {
                let (&len, rest) = data
                    .split_first()
                    .ok_or_else(|| CertError::BadAuth("empty authentication data".to_owned()))?;
                let (algid, signature) =
                    rest.split_at_checked(usize::from(len)).ok_or_else(|| {
                        CertError::BadAuth(
                            "the AlgorithmIdentifier is longer than the data".to_owned(),
                        )
                    })?;
                let (algorithms, name) = rfc7427_algorithms(algid)?;
                (algorithms, name, signature.to_vec())
            }
            AUTH_ECDSA_P256 => (
                ALGS_ECDSA_P256_SHA256,
                "ECDSA P-256 with SHA-256 (method 9)".to_owned(),
                raw_ecdsa_to_der(data, 32)?,
            ),
            AUTH_ECDSA_P384 => (
                ALGS_ECDSA_P384_SHA384,
                "ECDSA P-384 with SHA-384 (method 10)".to_owned(),
                raw_ecdsa_to_der(data, 48)?,
            ),
            AUTH_RSA_SHA1 => {
                return Err(CertError::UnsupportedAuth(
                    "method 1 (RSA with SHA-1); the client sends SIGNATURE_HASH_ALGORITHMS so \
                     that the server uses method 14"
                        .to_owned(),
                ));
            }
            AUTH_ECDSA_P521 => {
                return Err(CertError::UnsupportedAuth(
                    "method 11 (ECDSA P-521)".to_owned(),
                ));
            }
            AUTH_SHARED_KEY => {
                return Err(CertError::UnsupportedAuth(
                    "method 2 (shared key) where a certificate signature was expected".to_owned(),
                ));
            }
            other => {
                return Err(CertError::UnsupportedAuth(format!("method {other}")));
            }
        };

        let der = CertificateDer::from(self.der.as_slice());
        let ee =
            EndEntityCert::try_from(&der).map_err(|e| CertError::BadCertificate(e.to_string()))?;
        let mut key_fits = false;
        for algorithm in algorithms {
            match ee.verify_signature(*algorithm, signed_octets, &signature) {
                Ok(()) => return Ok(()),
                Err(webpki::Error::InvalidSignatureForPublicKey) => key_fits = true,
                Err(_) => {}
            }
        }
        if key_fits {
            Err(CertError::BadSignature)
        } else {
            Err(CertError::AuthKeyMismatch { algorithm: name })
        }
    }
}

/// The webpki algorithms for an RFC 7427 AlgorithmIdentifier (DER), and its name.
fn rfc7427_algorithms(algid: &[u8]) -> Result<(Algorithms, String), CertError> {
    let bad = |what: &str| CertError::BadAuth(format!("the AlgorithmIdentifier {what}"));
    let (rest, alg) = AlgorithmIdentifier::from_der(algid).map_err(|_| bad("is not DER"))?;
    if !rest.is_empty() {
        return Err(bad("has trailing bytes"));
    }
    let oid = alg.algorithm.as_bytes();
    let no_params = alg
        .parameters
        .as_ref()
        .is_none_or(|p| p.tag() == x509_parser::der_parser::asn1_rs::Tag::Null);
    let supported: (Algorithms, &str) = match oid {
        o if o == OID_ECDSA_SHA256 => (ALGS_ECDSA_SHA256, "ecdsa-with-SHA256"),
        o if o == OID_ECDSA_SHA384 => (ALGS_ECDSA_SHA384, "ecdsa-with-SHA384"),
        o if o == OID_RSA_SHA256 && no_params => (ALGS_RSA_SHA256, "sha256WithRSAEncryption"),
        o if o == OID_RSA_SHA384 && no_params => (ALGS_RSA_SHA384, "sha384WithRSAEncryption"),
        o if o == OID_RSA_SHA512 && no_params => (ALGS_RSA_SHA512, "sha512WithRSAEncryption"),
        o if o == OID_ED25519 => (ALGS_ED25519, "Ed25519"),
        o if o == OID_RSA_PSS => {
            let params = alg
                .parameters
                .as_ref()
                .ok_or_else(|| bad("RSASSA-PSS has no parameters"))?;
            let params = RsaSsaPssParams::try_from(params)
                .map_err(|_| bad("RSASSA-PSS has malformed parameters"))?;
            return pss_algorithms(&params);
        }
        _ => {
            return Err(CertError::UnsupportedAuth(format!(
                "signature algorithm {}",
                alg.algorithm
            )));
        }
    };
    Ok((supported.0, supported.1.to_owned()))
}

/// The webpki algorithm for RSASSA-PSS parameters: *ring* verifies PSS with MGF1 over the same
/// hash and a salt as long as the hash.
fn pss_algorithms(params: &RsaSsaPssParams<'_>) -> Result<(Algorithms, String), CertError> {
    let hash = params.hash_algorithm_oid().as_bytes();
    let (algorithms, salt, name): (Algorithms, u32, &str) = match hash {
        h if h == OID_SHA256 => (ALGS_PSS_SHA256, 32, "RSASSA-PSS with SHA-256"),
        h if h == OID_SHA384 => (ALGS_PSS_SHA384, 48, "RSASSA-PSS with SHA-384"),
        h if h == OID_SHA512 => (ALGS_PSS_SHA512, 64, "RSASSA-PSS with SHA-512"),
        _ => {
            return Err(CertError::UnsupportedAuth(format!(
                "RSASSA-PSS with hash {}",
                params.hash_algorithm_oid()
            )));
        }
    };
    let mgf = params
        .mask_gen_algorithm()
        .map_err(|_| CertError::BadAuth("RSASSA-PSS has a malformed MGF".to_owned()))?;
    if mgf.mgf.as_bytes() != OID_MGF1 || mgf.hash.as_bytes() != hash {
        return Err(CertError::UnsupportedAuth(format!(
            "{name} with a mask generation function other than MGF1 with the same hash"
        )));
    }
    if params.salt_length() != salt || params.trailer_field() != 1 {
        return Err(CertError::UnsupportedAuth(format!(
            "{name} with a salt of {} bytes (only {salt} is supported)",
            params.salt_length()
        )));
    }
    Ok((algorithms, name.to_owned()))
}

/// A DER ECDSA-Sig-Value from a raw `r | s` of two `half`-byte integers (RFC 4754).
fn raw_ecdsa_to_der(raw: &[u8], half: usize) -> Result<Vec<u8>, CertError> {
    if raw.len() != 2 * half {
        return Err(CertError::BadAuth(format!(
            "an ECDSA signature of {} bytes (expected {})",
            raw.len(),
            2 * half
        )));
    }
    let (r, s) = raw.split_at(half);
    let integer = |value: &[u8]| {
        let skip = value.iter().take_while(|&&b| b == 0).count();
        let trimmed = value.get(skip..).unwrap_or_default();
        let mut content = Vec::with_capacity(trimmed.len() + 1);
        if trimmed.first().is_none_or(|&b| b & 0x80 != 0) {
            content.push(0);
        }
        content.extend_from_slice(trimmed);
        der(0x02, &content)
    };
    Ok(der(0x30, &[integer(r), integer(s)].concat()))
}

// ---------------------------------------------------------------------------------------------
// Our certificate.

/// Our certificate and key for `local.auth = pubkey`.
///
/// Signing uses *ring* through rustls. ECDSA signatures need a random nonce, which *ring* draws
/// from the operating system itself (its `SystemRandom`); this is the one place where this
/// crate's output depends on randomness the caller did not pass in. RSA PKCS#1 v1.5 and
/// Ed25519 signatures are deterministic.
pub struct LocalSigner {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<dyn SigningKey>,
}

impl fmt::Debug for LocalSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalSigner")
            .field("certificates", &self.chain.len())
            .field("key", &self.key.algorithm())
            .finish()
    }
}

impl LocalSigner {
    /// Our certificate (the first one of `cert_chain`) with any intermediates after it (each
    /// entry PEM, possibly with several certificates, or one DER certificate), and its private
    /// `key`: PEM (PKCS#8 `PRIVATE KEY`, SEC1 `EC PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY`) or
    /// DER of one of those. RSA (2048 bits or more), ECDSA P-256/P-384 and Ed25519 keys work.
    ///
    /// # Errors
    ///
    /// [`CertError`] when there is no certificate, the key cannot be read or used, or does not
    /// belong to the certificate.
    pub fn new(cert_chain: &[&[u8]], key: &[u8]) -> Result<Self, CertError> {
        let mut chain = Vec::new();
        for bytes in cert_chain {
            chain.extend(read_certificates(bytes).map_err(CertError::BadLocalCertificate)?);
        }
        let first = chain.first().ok_or(CertError::NoLocalCertificate)?;
        let (_, cert) = X509Certificate::from_der(first)
            .map_err(|e| CertError::BadLocalCertificate(e.to_string()))?;

        let key_der = if contains(key, b"-----BEGIN") {
            if contains(key, b"ENCRYPTED") {
                return Err(CertError::EncryptedKey);
            }
            PrivateKeyDer::from_pem_slice(key).map_err(|e| match e {
                rustls::pki_types::pem::Error::NoItemsFound => {
                    CertError::BadKey("no PEM private key found".to_owned())
                }
                other => CertError::BadKey(other.to_string()),
            })?
        } else {
            PrivateKeyDer::try_from(key)
                .map_err(|e| CertError::BadKey(e.to_owned()))?
                .clone_key()
        };
        let signer = rustls::crypto::ring::sign::any_supported_type(&key_der)
            .map_err(|e| CertError::UnsupportedKey(e.to_string()))?;
        match signer.public_key() {
            Some(spki) if spki.as_ref() == cert.public_key().raw => {}
            Some(_) => return Err(CertError::KeyMismatch),
            None => {}
        }
        Ok(Self { chain, key: signer })
    }

    /// Our certificate, DER (for a CERT payload with encoding 4).
    pub fn certificate_der(&self) -> &[u8] {
        self.chain.first().map(|c| c.as_ref()).unwrap_or_default()
    }

    /// The intermediate certificates after ours, DER.
    pub fn intermediates_der(&self) -> Vec<&[u8]> {
        self.chain.iter().skip(1).map(|c| c.as_ref()).collect()
    }

    /// Our certificate's subject as an ID_DER_ASN1_DN identity (strongSwan's default `local.id`
    /// with a certificate).
    pub fn subject_id(&self) -> IkeId {
        match X509Certificate::from_der(self.certificate_der()) {
            Ok((_, cert)) => IkeId::DerDn(cert.subject().as_raw().to_vec()),
            Err(_) => IkeId::DerDn(Vec::new()),
        }
    }

    /// Signs `signed_octets` (the InitiatorSignedOctets) for an AUTH payload with method 14
    /// (RFC 7427), with a hash the server listed in SIGNATURE_HASH_ALGORITHMS (`hashes`;
    /// empty: the key's default). Returns the AUTH data: the AlgorithmIdentifier's length byte,
    /// the AlgorithmIdentifier, the signature.
    ///
    /// ECDSA P-256 signs with SHA-256 and P-384 with SHA-384; RSA uses PKCS#1 v1.5 with the
    /// first of SHA-256, SHA-384, SHA-512 the server accepts; Ed25519 needs "Identity" (5).
    ///
    /// # Errors
    ///
    /// [`CertError::NoCommonHash`] when the server accepts none of our hashes,
    /// [`CertError::SigningFailed`] when signing fails.
    pub fn sign_auth(&self, hashes: &[u16], signed_octets: &[u8]) -> Result<Vec<u8>, CertError> {
        let accepts = |hash: u16| hashes.is_empty() || hashes.contains(&hash);
        let candidates: &[(SignatureScheme, u16, &[u8])] = match self.key.algorithm() {
            rustls::SignatureAlgorithm::ECDSA => &[
                (
                    SignatureScheme::ECDSA_NISTP256_SHA256,
                    HASH_SHA256,
                    ALGID_ECDSA_SHA256,
                ),
                (
                    SignatureScheme::ECDSA_NISTP384_SHA384,
                    HASH_SHA384,
                    ALGID_ECDSA_SHA384,
                ),
            ],
            rustls::SignatureAlgorithm::RSA => &[
                (
                    SignatureScheme::RSA_PKCS1_SHA256,
                    HASH_SHA256,
                    ALGID_RSA_SHA256,
                ),
                (
                    SignatureScheme::RSA_PKCS1_SHA384,
                    HASH_SHA384,
                    ALGID_RSA_SHA384,
                ),
                (
                    SignatureScheme::RSA_PKCS1_SHA512,
                    HASH_SHA512,
                    ALGID_RSA_SHA512,
                ),
            ],
            rustls::SignatureAlgorithm::ED25519 => {
                &[(SignatureScheme::ED25519, HASH_IDENTITY, ALGID_ED25519)]
            }
            other => {
                return Err(CertError::UnsupportedKey(format!("{other:?} keys")));
            }
        };
        let key_name = match self.key.algorithm() {
            rustls::SignatureAlgorithm::ECDSA => "ECDSA",
            rustls::SignatureAlgorithm::RSA => "RSA",
            _ => "Ed25519",
        };
        for &(scheme, hash, algid) in candidates {
            if !accepts(hash) {
                continue;
            }
            let Some(signer) = self.key.choose_scheme(&[scheme]) else {
                continue;
            };
            let signature = signer
                .sign(signed_octets)
                .map_err(|e| CertError::SigningFailed(e.to_string()))?;
            let mut out = Vec::with_capacity(1 + algid.len() + signature.len());
            out.push(u8::try_from(algid.len()).unwrap_or_default());
            out.extend_from_slice(algid);
            out.extend_from_slice(&signature);
            return Ok(out);
        }
        Err(CertError::NoCommonHash {
            key: key_name,
            offered: hashes.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(2_110_655_795), "2036-11-18 21:16:35 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn raw_ecdsa_becomes_der() {
        let mut raw = [0u8; 64];
        raw[0] = 0x80;
        raw[31] = 1;
        raw[63] = 5;
        let der = raw_ecdsa_to_der(&raw, 32).unwrap();
        // r has its high bit set: 33 bytes with a leading zero; s is 5: one byte.
        assert_eq!(&der[..5], &[0x30, 2 + 33 + 3, 0x02, 33, 0x00]);
        assert_eq!(&der[der.len() - 3..], &[0x02, 1, 5]);
        assert!(raw_ecdsa_to_der(&raw[..63], 32).is_err());
        // All zero: INTEGER 0.
        assert_eq!(
            raw_ecdsa_to_der(&[0; 64], 32).unwrap(),
            [0x30, 6, 2, 1, 0, 2, 1, 0]
        );
    }

    #[test]
    fn oids_encode() {
        assert_eq!(der_oid(&[2, 5, 4, 3]), [0x06, 3, 0x55, 4, 3]);
        assert_eq!(
            der_oid(&[1, 2, 840, 113_549, 1, 9, 1]),
            [0x06, 9, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 9, 1]
        );
        assert_eq!(
            der_oid(&[0, 9, 2342, 19_200_300, 100, 1, 25]),
            [
                0x06, 10, 0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19
            ]
        );
    }

    #[test]
    fn long_der_lengths() {
        let content = vec![0u8; 300];
        let out = der(0x04, &content);
        assert_eq!(&out[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(out.len(), 304);
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_eq("*.example.test", "vpn.EXAMPLE.test"));
        assert!(!wildcard_eq("*.example.test", "example.test"));
        assert!(wildcard_eq("VPN.example.test", "vpn.example.test"));
        assert!(!wildcard_eq("vpn.example.test", "vpn2.example.test"));
    }
}
