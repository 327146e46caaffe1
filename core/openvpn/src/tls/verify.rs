//! Checking the server's certificate the way OpenVPN does, and loading the client's own.
//!
//! OpenVPN never compares the server's certificate with the host name it connected to. It
//! checks, in this order:
//!
//! 1. the chain: the certificate must lead to a CA of the profile's `ca`, every certificate in
//!    it must be valid at the current wall-clock time, and (OpenSSL's "SSL server" purpose) an
//!    extended key usage extension, when present, must allow serverAuth and a key usage
//!    extension, when present, must allow a TLS key exchange;
//! 2. `ns-cert-type server`: the Netscape certificate type must include "SSL server";
//! 3. `remote-cert-tls server`: the key usage extension must be present, and the extended key
//!    usage must be present and include serverAuth;
//! 4. `verify-x509-name`: the subject (`subject`), the common name (`name`) or a prefix of it
//!    (`name-prefix`) must equal the configured text, compared after OpenVPN's own rewriting
//!    of unprintable characters.
//!
//! The chain is checked by webpki through rustls (with server-auth usage, no host name); the
//! policy checks read the certificate with `x509-parser`. Each failure is a
//! [`CertVerifyError`] whose message names the certificate and the rule it broke.
//!
//! Not implemented yet: `crl-verify`, `peer-fingerprint`, `verify-hash`, `tls-verify` scripts
//! (scripts are never run) and `x509-username-field` (the common name is always the field
//! compared).

use core::fmt;
use std::sync::Arc;

use erebus_sansio::UnixTime;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

use super::provider::{SIGNATURE_ALGORITHMS, TlsProvider};
use super::sign::ClientKey;
use crate::config::{CertRole, VerifyX509Name, X509NameKind};

/// Why the server's certificate was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertVerifyError {
    /// The certificate is not valid DER.
    #[error("the server sent a certificate that cannot be parsed")]
    BadEncoding,
    /// The chain does not lead to any CA of the profile.
    #[error(
        "the server certificate ({subject}) was not issued by the CA in the profile's `ca` \
         (wrong CA, or a missing intermediate certificate)"
    )]
    UnknownIssuer {
        /// The server certificate's subject.
        subject: String,
    },
    /// A certificate in the chain has expired.
    #[error(
        "the server certificate ({subject}) or its chain expired on {} (the time is now {})",
        utc(*not_after),
        utc(*now)
    )]
    Expired {
        /// The server certificate's subject.
        subject: String,
        /// When the certificate stopped being valid.
        not_after: UnixTime,
        /// The time of the check.
        now: UnixTime,
    },
    /// A certificate in the chain is not valid yet.
    #[error(
        "the server certificate ({subject}) or its chain is not valid before {} (the time is now \
         {}): check the clock",
        utc(*not_before),
        utc(*now)
    )]
    NotValidYet {
        /// The server certificate's subject.
        subject: String,
        /// When the certificate starts being valid.
        not_before: UnixTime,
        /// The time of the check.
        now: UnixTime,
    },
    /// The extended key usage does not allow TLS server authentication.
    #[error(
        "the server certificate ({subject}) is not a TLS server certificate: its extended key \
         usage does not include serverAuth"
    )]
    NotForServerAuth {
        /// The server certificate's subject.
        subject: String,
    },
    /// The key usage allows neither signatures nor key exchange.
    #[error(
        "the server certificate ({subject}) has a key usage that allows neither \
         digitalSignature, keyEncipherment nor keyAgreement"
    )]
    WrongKeyUsage {
        /// The server certificate's subject.
        subject: String,
    },
    /// `remote-cert-tls`: the key usage extension is missing.
    #[error(
        "remote-cert-tls {role}: the server certificate ({subject}) has no key usage extension"
    )]
    MissingKeyUsage {
        /// The server certificate's subject.
        subject: String,
        /// The role the profile requires.
        role: Role,
    },
    /// `remote-cert-tls`: the extended key usage is missing or lacks the role's purpose.
    #[error(
        "remote-cert-tls {role}: the server certificate ({subject}) {}",
        if *present { "has an extended key usage without the required purpose" }
        else { "has no extended key usage extension" }
    )]
    MissingExtendedKeyUsage {
        /// The server certificate's subject.
        subject: String,
        /// The role the profile requires.
        role: Role,
        /// Whether the extension is there at all.
        present: bool,
    },
    /// `ns-cert-type`: the Netscape certificate type is missing or wrong.
    #[error("ns-cert-type {role}: the server certificate ({subject}) is not marked for that role")]
    NsCertType {
        /// The server certificate's subject.
        subject: String,
        /// The role the profile requires.
        role: Role,
    },
    /// `verify-x509-name` did not match.
    #[error(
        "verify-x509-name: the server certificate is '{subject}' (common name '{common_name}'), \
         but the profile expects {} '{expected}'",
        match kind {
            X509NameKind::Subject => "the subject",
            X509NameKind::Name => "the common name",
            X509NameKind::NamePrefix => "a common name starting with",
        }
    )]
    NameMismatch {
        /// The server certificate's subject, as OpenVPN prints it.
        subject: String,
        /// Its common name.
        common_name: String,
        /// What the profile expects.
        expected: String,
        /// How the profile compares.
        kind: X509NameKind,
    },
    /// Any other failure of the chain (bad signature, unsupported algorithm, ...).
    #[error("the server certificate ({subject}) was refused: {reason}")]
    Chain {
        /// The server certificate's subject.
        subject: String,
        /// What the chain check said.
        reason: String,
    },
}

/// The certificate role of `remote-cert-tls` and `ns-cert-type`, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `server`.
    Server,
    /// `client`.
    Client,
}

impl From<CertRole> for Role {
    fn from(role: CertRole) -> Self {
        match role {
            CertRole::Server => Self::Server,
            CertRole::Client => Self::Client,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Server => "server",
            Self::Client => "client",
        })
    }
}

impl CertVerifyError {
    /// Recovers the error from what rustls reports after [`ServerPolicy`] refused a
    /// certificate, or `None` for a certificate error that did not come from here.
    pub(crate) fn from_rustls(error: &CertificateError) -> Option<Self> {
        match error {
            CertificateError::Other(OtherError(inner)) => inner.downcast_ref::<Self>().cloned(),
            _ => None,
        }
    }
}

/// Why the `ca`, `cert` or `key` material could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The `ca` material holds no PEM certificate.
    #[error("the `ca` material holds no PEM certificate")]
    NoCaCertificate,
    /// A CA certificate cannot serve as a trust anchor.
    #[error("`ca` certificate number {index} cannot be used: {reason}")]
    BadCaCertificate {
        /// 1-based position in the file.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The `cert` material holds no PEM certificate.
    #[error("the `cert` material holds no PEM certificate")]
    NoClientCertificate,
    /// The `key` material holds no supported PEM private key.
    #[error(
        "the `key` material holds no PEM private key (expected RSA PRIVATE KEY, EC PRIVATE KEY \
         or PRIVATE KEY)"
    )]
    NoPrivateKey,
    /// The key is encrypted with a passphrase.
    #[error("the `key` is encrypted with a passphrase; encrypted keys are not supported yet")]
    EncryptedKey,
    /// The key is of a type or size that cannot sign TLS handshakes.
    #[error("the `key` cannot be used: {0}")]
    UnsupportedKey(String),
    /// The key does not belong to the certificate.
    #[error("the `key` does not belong to the `cert` certificate")]
    KeyMismatch,
    /// The PEM text is malformed.
    #[error("malformed PEM in `{what}`: {reason}")]
    BadPem {
        /// Which directive.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// Every certificate in PEM text, in order.
fn pem_certificates(
    pem: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, CredentialError> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CredentialError::BadPem {
            what,
            reason: e.to_string(),
        })
}

/// How the server's certificate must look: the profile's `ca`, `remote-cert-tls`,
/// `ns-cert-type` and `verify-x509-name`.
#[derive(Clone)]
pub struct ServerPolicy {
    roots: Arc<RootCertStore>,
    remote_cert_tls: Option<Role>,
    ns_cert_type: Option<Role>,
    verify_x509_name: Option<VerifyX509Name>,
}

impl fmt::Debug for ServerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerPolicy")
            .field("ca_certificates", &self.roots.len())
            .field("remote_cert_tls", &self.remote_cert_tls)
            .field("ns_cert_type", &self.ns_cert_type)
            .field("verify_x509_name", &self.verify_x509_name)
            .finish()
    }
}

impl ServerPolicy {
    /// A policy trusting every certificate of the PEM `ca` material, with no further rules.
    ///
    /// # Errors
    ///
    /// [`CredentialError`] when the material holds no certificate or one cannot be a trust
    /// anchor.
    pub fn new(ca_pem: &[u8]) -> Result<Self, CredentialError> {
        let certs = pem_certificates(ca_pem, "ca")?;
        if certs.is_empty() {
            return Err(CredentialError::NoCaCertificate);
        }
        let mut roots = RootCertStore::empty();
        for (index, cert) in certs.into_iter().enumerate() {
            roots
                .add(cert)
                .map_err(|e| CredentialError::BadCaCertificate {
                    index: index + 1,
                    reason: e.to_string(),
                })?;
        }
        Ok(Self {
            roots: Arc::new(roots),
            remote_cert_tls: None,
            ns_cert_type: None,
            verify_x509_name: None,
        })
    }

    /// The policy of a profile: its `remote-cert-tls`, `ns-cert-type` and `verify-x509-name`,
    /// trusting `ca_pem` (the contents of the profile's `ca`, read by the caller).
    ///
    /// # Errors
    ///
    /// As [`ServerPolicy::new`].
    pub fn from_profile(
        profile: &crate::config::Profile,
        ca_pem: &[u8],
    ) -> Result<Self, CredentialError> {
        Ok(Self::new(ca_pem)?
            .remote_cert_tls(profile.remote_cert_tls.map(Role::from))
            .ns_cert_type(profile.ns_cert_type.map(Role::from))
            .verify_x509_name(profile.verify_x509_name.clone()))
    }

    /// Sets `remote-cert-tls`.
    #[must_use]
    pub fn remote_cert_tls(mut self, role: Option<Role>) -> Self {
        self.remote_cert_tls = role;
        self
    }

    /// Sets `ns-cert-type`.
    #[must_use]
    pub fn ns_cert_type(mut self, role: Option<Role>) -> Self {
        self.ns_cert_type = role;
        self
    }

    /// Sets `verify-x509-name`.
    #[must_use]
    pub fn verify_x509_name(mut self, rule: Option<VerifyX509Name>) -> Self {
        self.verify_x509_name = rule;
        self
    }

    /// Checks the server's certificate `end_entity`, sent with `intermediates`, at `now`.
    ///
    /// # Errors
    ///
    /// The first rule the certificate breaks, in the order of the module documentation.
    pub fn check(
        &self,
        end_entity: &[u8],
        intermediates: &[&[u8]],
        now: UnixTime,
    ) -> Result<(), CertVerifyError> {
        let intermediates: Vec<_> = intermediates
            .iter()
            .map(|der| CertificateDer::from(*der))
            .collect();
        self.check_der(&CertificateDer::from(end_entity), &intermediates, now)
    }

    fn check_der(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), CertVerifyError> {
        let (_, cert) =
            X509Certificate::from_der(end_entity).map_err(|_| CertVerifyError::BadEncoding)?;
        let subject = openvpn_subject(&cert);

        let parsed =
            ParsedCertificate::try_from(end_entity).map_err(|_| CertVerifyError::BadEncoding)?;
        let pki_now = rustls::pki_types::UnixTime::since_unix_epoch(
            core::time::Duration::from_secs(now.as_secs()),
        );
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            pki_now,
            SIGNATURE_ALGORITHMS.all,
        )
        .map_err(|e| chain_error(e, &subject, now))?;

        // OpenSSL's "SSL server" purpose also looks at the key usage; webpki does not.
        let key_usage = cert
            .key_usage()
            .map_err(|_| CertVerifyError::BadEncoding)?
            .map(|ext| *ext.value);
        if let Some(ku) = key_usage
            && !(ku.digital_signature() || ku.key_encipherment() || ku.key_agreement())
        {
            return Err(CertVerifyError::WrongKeyUsage { subject });
        }

        if let Some(role) = self.ns_cert_type {
            let marked = cert.extensions().iter().any(|ext| {
                matches!(ext.parsed_extension(), ParsedExtension::NSCertType(t)
                    if match role { Role::Server => t.ssl_server(), Role::Client => t.ssl_client() })
            });
            if !marked {
                return Err(CertVerifyError::NsCertType { subject, role });
            }
        }

        if let Some(role) = self.remote_cert_tls {
            if key_usage.is_none() {
                return Err(CertVerifyError::MissingKeyUsage { subject, role });
            }
            let eku = cert
                .extended_key_usage()
                .map_err(|_| CertVerifyError::BadEncoding)?;
            let has_purpose = eku.as_ref().is_some_and(|ext| match role {
                Role::Server => ext.value.server_auth,
                Role::Client => ext.value.client_auth,
            });
            if !has_purpose {
                return Err(CertVerifyError::MissingExtendedKeyUsage {
                    subject,
                    role,
                    present: eku.is_some(),
                });
            }
        }

        if let Some(rule) = &self.verify_x509_name {
            let common_name = openvpn_common_name(&cert).unwrap_or_default();
            let matches = match rule.kind {
                X509NameKind::Subject => subject == rule.name,
                X509NameKind::Name => common_name == rule.name,
                X509NameKind::NamePrefix => common_name.starts_with(&rule.name),
            };
            if !matches {
                return Err(CertVerifyError::NameMismatch {
                    subject,
                    common_name,
                    expected: rule.name.clone(),
                    kind: rule.kind,
                });
            }
        }
        Ok(())
    }

    /// The rustls verifier applying this policy.
    pub(crate) fn into_verifier(self) -> Arc<dyn ServerCertVerifier> {
        Arc::new(OpenVpnServerVerifier { policy: self })
    }
}

fn chain_error(error: rustls::Error, subject: &str, now: UnixTime) -> CertVerifyError {
    let subject = subject.to_owned();
    let secs = |t: rustls::pki_types::UnixTime| UnixTime::from_secs(t.as_secs());
    match error {
        rustls::Error::InvalidCertificate(cert_error) => match cert_error {
            CertificateError::UnknownIssuer => CertVerifyError::UnknownIssuer { subject },
            CertificateError::ExpiredContext { time, not_after } => CertVerifyError::Expired {
                subject,
                not_after: secs(not_after),
                now: secs(time),
            },
            CertificateError::Expired => CertVerifyError::Expired {
                subject,
                not_after: now,
                now,
            },
            CertificateError::NotValidYetContext { time, not_before } => {
                CertVerifyError::NotValidYet {
                    subject,
                    not_before: secs(not_before),
                    now: secs(time),
                }
            }
            CertificateError::NotValidYet => CertVerifyError::NotValidYet {
                subject,
                not_before: now,
                now,
            },
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                CertVerifyError::NotForServerAuth { subject }
            }
            other => CertVerifyError::Chain {
                subject,
                reason: rustls::Error::InvalidCertificate(other).to_string(),
            },
        },
        other => CertVerifyError::Chain {
            subject,
            reason: other.to_string(),
        },
    }
}

/// The rustls side of [`ServerPolicy`].
struct OpenVpnServerVerifier {
    policy: ServerPolicy,
}

impl fmt::Debug for OpenVpnServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.policy.fmt(f)
    }
}

impl ServerCertVerifier for OpenVpnServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        // OpenVPN checks no host name: the name rustls was given is a placeholder.
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.policy
            .check_der(
                end_entity,
                intermediates,
                UnixTime::from_secs(now.as_secs()),
            )
            .map(|()| ServerCertVerified::assertion())
            .map_err(|e| {
                rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &SIGNATURE_ALGORITHMS)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &SIGNATURE_ALGORITHMS)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SIGNATURE_ALGORITHMS.supported_schemes()
    }
}

/// The client's certificate chain and private key (`cert`, `key`, `extra-certs`).
#[derive(Clone)]
pub struct ClientCredentials {
    key: Arc<CertifiedKey>,
    /// The same private key, for signers that draw from a session's seed.
    signing: Arc<ClientKey>,
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("certificates", &self.key.cert.len())
            .finish_non_exhaustive()
    }
}

impl ClientCredentials {
    /// Loads a PEM certificate (with any chain certificates after it, and those of
    /// `extra-certs`) and its PEM private key: RSA or ECDSA P-256/P-384 in PKCS#1 (`RSA PRIVATE
    /// KEY`), SEC1 (`EC PRIVATE KEY`) or PKCS#8 (`PRIVATE KEY`), or Ed25519 in PKCS#8.
    ///
    /// # Errors
    ///
    /// [`CredentialError`] naming what is missing, unsupported or mismatched.
    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        extra_certs_pem: Option<&[u8]>,
    ) -> Result<Self, CredentialError> {
        let mut chain = pem_certificates(cert_pem, "cert")?;
        if chain.is_empty() {
            return Err(CredentialError::NoClientCertificate);
        }
        if let Some(extra) = extra_certs_pem {
            chain.extend(pem_certificates(extra, "extra-certs")?);
        }
        // Encrypted keys would otherwise surface as "no key" or as a base64 error.
        if contains(key_pem, b"ENCRYPTED") {
            return Err(CredentialError::EncryptedKey);
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => CredentialError::NoPrivateKey,
            other => CredentialError::BadPem {
                what: "key",
                reason: other.to_string(),
            },
        })?;
        let signing =
            ClientKey::load(&key).map_err(|e| CredentialError::UnsupportedKey(e.to_string()))?;
        let certified = CertifiedKey::new(chain, signing.plain());
        match certified.keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(CredentialError::KeyMismatch);
            }
            // The signer cannot tell its public key (not the case for ring's keys): go on and
            // let the server judge.
            Err(_) => {}
        }
        Ok(Self {
            key: Arc::new(certified),
            signing: Arc::new(signing),
        })
    }

    /// The chain and rustls's own signer, which draws from the operating system (the server
    /// side, whose signatures no replay compares).
    pub(crate) fn plain_certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.key)
    }

    /// The chain and a signer for rustls whose every random byte comes from `provider`'s
    /// seeded generator, so that a recorded session replays through the client's signature.
    pub(crate) fn certified_key(&self, provider: &TlsProvider) -> Arc<CertifiedKey> {
        Arc::new(CertifiedKey::new(
            self.key.cert.clone(),
            self.signing.seeded(provider.random()),
        ))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// OpenSSL's short name of an attribute type, as `X509_NAME_print_ex` with `XN_FLAG_FN_SN`
/// prints it; unknown types print as a dotted OID.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.15" => "businessCategory",
        "2.5.4.17" => "postalCode",
        "2.5.4.41" => "name",
        "2.5.4.42" => "GN",
        "2.5.4.43" => "initials",
        "2.5.4.44" => "generationQualifier",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        _ => return None,
    })
}

/// An attribute value as text: the string types directly, BMPString decoded from UCS-2,
/// anything else as OpenSSL's `#` followed by the DER bytes in hex.
fn attribute_text(attr: &x509_parser::x509::AttributeTypeAndValue<'_>) -> String {
    if let Ok(text) = attr.as_str() {
        return text.to_owned();
    }
    let bytes = attr.as_slice();
    match attr.attr_value().tag() {
        x509_parser::der_parser::asn1_rs::Tag::BmpString => {
            let units = bytes
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
            char::decode_utf16(units)
                .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect()
        }
        // T61String and similar: one byte per character, close to Latin-1.
        x509_parser::der_parser::asn1_rs::Tag::T61String => {
            bytes.iter().map(|&b| char::from(b)).collect()
        }
        _ => {
            let mut text = String::from("#");
            for b in bytes {
                text.push_str(&format!("{b:02X}"));
            }
            text
        }
    }
}

/// OpenVPN's `string_mod_remap_name`: every byte that is not printable ASCII becomes `_`
/// (multi-byte UTF-8 characters become one `_` per byte). Control characters, CR and LF
/// included, were already escaped as `\XX` by `ASN1_STRFLGS_ESC_CTRL` and stay printable.
fn remap_name(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b < 0x20 || b == 0x7f {
            out.push_str(&format!("\\{b:02X}"));
        } else if b.is_ascii() {
            out.push(char::from(b));
        } else {
            out.push('_');
        }
    }
    out
}

/// The subject as OpenVPN 2.6 compares it for `verify-x509-name ... subject`:
/// `X509_NAME_print_ex` with `XN_FLAG_SEP_CPLUS_SPC | XN_FLAG_FN_SN` (`C=DE, O=x, CN=y`,
/// multi-valued RDNs joined with ` + `), then unprintable bytes remapped and leading `-`
/// replaced by `_`.
fn openvpn_subject(cert: &X509Certificate<'_>) -> String {
    let rdns: Vec<String> = cert
        .subject()
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let oid = attr.attr_type().to_id_string();
                    let name = short_name(&oid).map_or(oid, str::to_owned);
                    format!("{name}={}", attribute_text(attr))
                })
                .collect::<Vec<_>>()
                .join(" + ")
        })
        .collect();
    let mut subject = remap_name(&rdns.join(", "));
    let leading = subject.bytes().take_while(|&b| b == b'-').count();
    subject.replace_range(..leading, &"_".repeat(leading));
    subject
}

/// The common name OpenVPN compares for `verify-x509-name ... name`: the last CN of the
/// subject, remapped like the subject.
pub(crate) fn openvpn_common_name(cert: &X509Certificate<'_>) -> Option<String> {
    cert.subject()
        .iter_common_name()
        .last()
        .map(|attr| remap_name(&attribute_text(attr)))
}

/// A Unix time as `YYYY-MM-DD hh:mm:ss UTC`, for messages.
fn utc(time: UnixTime) -> String {
    let secs = time.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    // Days to civil date (the proleptic Gregorian calendar), after Howard Hinnant's algorithm.
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
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &[u8] = include_bytes!("../../../../testvectors/tls-pki/ca.crt");
    const SERVER: &[u8] = include_bytes!("../../../../testvectors/tls-pki/server.crt");
    const SERVER_OTHER_CA: &[u8] =
        include_bytes!("../../../../testvectors/tls-pki/server-other-ca.crt");
    const SERVER_CLIENT_EKU: &[u8] =
        include_bytes!("../../../../testvectors/tls-pki/server-client-eku.crt");
    const SERVER_NO_EKU: &[u8] =
        include_bytes!("../../../../testvectors/tls-pki/server-no-eku.crt");
    const SERVER_NO_KU: &[u8] = include_bytes!("../../../../testvectors/tls-pki/server-no-ku.crt");
    const OTHER_CA: &[u8] = include_bytes!("../../../../testvectors/tls-pki/other-ca.crt");
    const CLIENT: &[u8] = include_bytes!("../../../../testvectors/tls-pki/client.crt");
    const CLIENT_PKCS1: &[u8] = include_bytes!("../../../../testvectors/tls-pki/client.pkcs1.key");
    const CLIENT_PKCS8: &[u8] = include_bytes!("../../../../testvectors/tls-pki/client.pkcs8.key");
    const CLIENT_EC: &[u8] = include_bytes!("../../../../testvectors/tls-pki/client-ec.crt");
    const CLIENT_EC_SEC1: &[u8] =
        include_bytes!("../../../../testvectors/tls-pki/client-ec.sec1.key");
    const CLIENT_EC_PKCS8: &[u8] =
        include_bytes!("../../../../testvectors/tls-pki/client-ec.pkcs8.key");

    /// 2026-12-01, inside every test certificate's validity.
    const VALID_AT: UnixTime = UnixTime::from_secs(1_796_083_200);
    /// 2046-12-01, after every test certificate expired (2046-11-16).
    const EXPIRED_AT: UnixTime = UnixTime::from_secs(2_427_235_200);
    /// 2026-11-01, before the test certificates were made (2026-11-21).
    const BEFORE_AT: UnixTime = UnixTime::from_secs(1_793_491_200);

    fn der(pem: &[u8]) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem).unwrap().to_vec()
    }

    fn strict() -> ServerPolicy {
        ServerPolicy::new(CA)
            .unwrap()
            .remote_cert_tls(Some(Role::Server))
    }

    #[test]
    fn tls_verify_accepts_good_server() {
        strict().check(&der(SERVER), &[], VALID_AT).unwrap();
        ServerPolicy::new(CA)
            .unwrap()
            .check(&der(SERVER), &[], VALID_AT)
            .unwrap();
    }

    #[test]
    fn tls_verify_rejects_wrong_ca() {
        let err = strict()
            .check(&der(SERVER_OTHER_CA), &[], VALID_AT)
            .unwrap_err();
        assert_eq!(
            err,
            CertVerifyError::UnknownIssuer {
                subject: "C=DE, O=erebus test, CN=server.erebus.test".into()
            }
        );
        assert!(err.to_string().contains("not issued by the CA"), "{err}");
        // Trusting the other CA instead makes it pass: the failure was the CA, nothing else.
        ServerPolicy::new(OTHER_CA)
            .unwrap()
            .check(&der(SERVER_OTHER_CA), &[], VALID_AT)
            .unwrap();
    }

    #[test]
    fn tls_verify_rejects_expired_and_not_yet_valid() {
        let err = strict().check(&der(SERVER), &[], EXPIRED_AT).unwrap_err();
        let CertVerifyError::Expired { not_after, now, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(*now, EXPIRED_AT);
        assert!(not_after.as_secs() < EXPIRED_AT.as_secs());
        assert!(
            err.to_string()
                .contains("expired on 2046-11-16 22:13:09 UTC"),
            "{err}"
        );
        assert!(err.to_string().contains("2046-12-01 00:00:00 UTC"), "{err}");

        let err = strict().check(&der(SERVER), &[], BEFORE_AT).unwrap_err();
        assert!(
            matches!(err, CertVerifyError::NotValidYet { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("check the clock"), "{err}");
    }

    #[test]
    fn tls_verify_rejects_wrong_eku() {
        // A clientAuth-only certificate fails the purpose check with or without remote-cert-tls.
        for policy in [strict(), ServerPolicy::new(CA).unwrap()] {
            let err = policy
                .check(&der(SERVER_CLIENT_EKU), &[], VALID_AT)
                .unwrap_err();
            assert!(
                matches!(err, CertVerifyError::NotForServerAuth { .. }),
                "{err:?}"
            );
        }
        // No EKU at all chains, but remote-cert-tls server requires it.
        ServerPolicy::new(CA)
            .unwrap()
            .check(&der(SERVER_NO_EKU), &[], VALID_AT)
            .unwrap();
        let err = strict()
            .check(&der(SERVER_NO_EKU), &[], VALID_AT)
            .unwrap_err();
        assert_eq!(
            err,
            CertVerifyError::MissingExtendedKeyUsage {
                subject: "C=DE, O=erebus test, CN=server.erebus.test".into(),
                role: Role::Server,
                present: false,
            }
        );
        assert!(err.to_string().starts_with("remote-cert-tls server:"));
    }

    #[test]
    fn tls_verify_remote_cert_tls_requires_key_usage() {
        ServerPolicy::new(CA)
            .unwrap()
            .check(&der(SERVER_NO_KU), &[], VALID_AT)
            .unwrap();
        let err = strict()
            .check(&der(SERVER_NO_KU), &[], VALID_AT)
            .unwrap_err();
        assert!(
            matches!(
                err,
                CertVerifyError::MissingKeyUsage {
                    role: Role::Server,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn tls_verify_x509_name_kinds() {
        let check = |name: &str, kind| {
            strict()
                .verify_x509_name(Some(VerifyX509Name {
                    name: name.into(),
                    kind,
                }))
                .check(&der(SERVER), &[], VALID_AT)
        };
        check("server.erebus.test", X509NameKind::Name).unwrap();
        check("server.", X509NameKind::NamePrefix).unwrap();
        check(
            "C=DE, O=erebus test, CN=server.erebus.test",
            X509NameKind::Subject,
        )
        .unwrap();

        let err = check("vpn.example.com", X509NameKind::Name).unwrap_err();
        assert_eq!(
            err,
            CertVerifyError::NameMismatch {
                subject: "C=DE, O=erebus test, CN=server.erebus.test".into(),
                common_name: "server.erebus.test".into(),
                expected: "vpn.example.com".into(),
                kind: X509NameKind::Name,
            }
        );
        assert!(
            err.to_string()
                .contains("expects the common name 'vpn.example.com'"),
            "{err}"
        );
        assert!(check("server.erebus", X509NameKind::Name).is_err());
        assert!(check("vpn.", X509NameKind::NamePrefix).is_err());
        assert!(check("CN=server.erebus.test", X509NameKind::Subject).is_err());
    }

    #[test]
    fn tls_verify_from_profile() {
        let text =
            b"client\nremote vpn.example.net\nca ca.crt\nauth-user-pass\nremote-cert-tls server\n\
                     verify-x509-name wrong.example name\n";
        let (profile, _) = crate::config::Profile::parse(text).unwrap();
        let policy = ServerPolicy::from_profile(&profile, CA).unwrap();
        let err = policy.check(&der(SERVER), &[], VALID_AT).unwrap_err();
        assert!(
            matches!(err, CertVerifyError::NameMismatch { .. }),
            "{err:?}"
        );
        let err = policy
            .check(&der(SERVER_NO_EKU), &[], VALID_AT)
            .unwrap_err();
        assert!(
            matches!(err, CertVerifyError::MissingExtendedKeyUsage { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn tls_verify_ns_cert_type_needs_the_extension() {
        let policy = ServerPolicy::new(CA)
            .unwrap()
            .ns_cert_type(Some(Role::Server));
        let err = policy.check(&der(SERVER), &[], VALID_AT).unwrap_err();
        assert!(matches!(err, CertVerifyError::NsCertType { .. }), "{err:?}");
    }

    #[test]
    fn tls_verify_garbage_is_bad_encoding() {
        assert_eq!(
            strict().check(b"\x30\x03\x02\x01\x01", &[], VALID_AT),
            Err(CertVerifyError::BadEncoding)
        );
        assert_eq!(
            strict().check(&[], &[], VALID_AT),
            Err(CertVerifyError::BadEncoding)
        );
    }

    #[test]
    fn tls_verify_ca_material_errors() {
        assert_eq!(
            ServerPolicy::new(b"no pem here").unwrap_err(),
            CredentialError::NoCaCertificate
        );
        let mut two = CA.to_vec();
        two.extend_from_slice(OTHER_CA);
        let policy = ServerPolicy::new(&two).unwrap();
        policy.check(&der(SERVER), &[], VALID_AT).unwrap();
        policy.check(&der(SERVER_OTHER_CA), &[], VALID_AT).unwrap();
    }

    #[test]
    fn tls_client_credentials_load_every_key_format() {
        for (cert, key) in [
            (CLIENT, CLIENT_PKCS1),
            (CLIENT, CLIENT_PKCS8),
            (CLIENT_EC, CLIENT_EC_SEC1),
            (CLIENT_EC, CLIENT_EC_PKCS8),
        ] {
            let creds = ClientCredentials::from_pem(cert, key, None).unwrap();
            assert_eq!(creds.plain_certified_key().cert.len(), 1);
        }
        let creds = ClientCredentials::from_pem(CLIENT, CLIENT_PKCS1, Some(CA)).unwrap();
        assert_eq!(creds.plain_certified_key().cert.len(), 2);
    }

    #[test]
    fn tls_client_credentials_errors() {
        assert_eq!(
            ClientCredentials::from_pem(CLIENT, CLIENT_EC_SEC1, None).unwrap_err(),
            CredentialError::KeyMismatch
        );
        assert_eq!(
            ClientCredentials::from_pem(b"", CLIENT_PKCS1, None).unwrap_err(),
            CredentialError::NoClientCertificate
        );
        assert_eq!(
            ClientCredentials::from_pem(CLIENT, CLIENT, None).unwrap_err(),
            CredentialError::NoPrivateKey
        );
        let encrypted =
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert_eq!(
            ClientCredentials::from_pem(CLIENT, encrypted, None).unwrap_err(),
            CredentialError::EncryptedKey
        );
    }

    #[test]
    fn tls_subject_formatting_follows_openvpn() {
        assert_eq!(remap_name("a\u{e9}b"), "a__b");
        assert_eq!(remap_name("x\ny\u{1}"), "x\\0Ay\\01");
        assert_eq!(utc(UnixTime::from_secs(0)), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            utc(UnixTime::from_secs(951_782_400)),
            "2000-02-29 00:00:00 UTC"
        );
    }
}
