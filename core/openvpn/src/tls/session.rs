//! The TLS session of one OpenVPN key id, as an in-memory codec.
//!
//! OpenVPN carries TLS inside its own reliable control channel: the reliability layer hands
//! the in-order payload of `P_CONTROL_V1` packets to [`ControlTls::feed`], cuts what
//! [`ControlTls::take_tls`] returns into packets, and exchanges the key-method messages and
//! text control messages through [`ControlTls::send_plaintext`] and
//! [`ControlTls::take_plaintext`]. Data-channel keys come from
//! [`ControlTls::export_keying_material`].
//!
//! [`RustlsSession`] implements the trait with rustls 0.23's buffered `ClientConnection`. It is
//! the only type outside this module's siblings that touches rustls, so a rustls upgrade changes
//! one file.
//!
//! What the OpenVPN peer relies on, and how rustls gives it:
//! - each [`ControlTls::send_plaintext`] call becomes its own TLS record(s); a write of up to
//!   16 KiB is exactly one record, so the key-method message (at most 2048 bytes, §5.1 of the
//!   wire notes) never shares a record with anything else;
//! - plaintext read back is the concatenation of every record received: parse it by length
//!   fields and NUL terminators, not by record;
//! - a fresh session per key id, no resumption, no SNI (OpenVPN's OpenSSL client sends none);
//! - TLS 1.3 session tickets sent by the server are accepted and dropped.

use core::fmt;
use std::io::{Read, Write};
use std::sync::Arc;

use erebus_sansio::UnixTime;
use erebus_sansio::tunnel::{Failure, Fault};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::pki_types::ServerName;
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, ClientConfig, ClientConnection, SignatureScheme};

use super::provider::{TlsProvider, WallTime};
use super::verify::{CertVerifyError, ClientCredentials, ServerPolicy};
use crate::config::{Profile, TlsVersion};

/// The name given to rustls for the server: OpenVPN checks no host name and sends no SNI, so
/// this never leaves the process and is never compared.
const PLACEHOLDER_SERVER_NAME: &str = "openvpn-server.invalid";

/// Why the TLS session failed, with who is to blame ([`TlsError::fault`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The server's certificate broke the profile's rules.
    #[error("{0}")]
    ServerCertificate(#[from] CertVerifyError),
    /// rustls refused the server's certificate for a reason of its own.
    #[error("the server's certificate was refused: {0}")]
    Certificate(String),
    /// The server ended the handshake with an alert.
    #[error("the server aborted TLS with the alert '{alert}'{}", alert_hint(*fault))]
    AlertReceived {
        /// The alert, as rustls names it.
        alert: String,
        /// What the alert means for us.
        fault: Fault,
    },
    /// The server offers nothing this client can use (TLS version, cipher suite, group).
    #[error("the server's TLS is incompatible with erebus: {0}")]
    Incompatible(String),
    /// The server broke the TLS protocol.
    #[error("the server broke the TLS protocol: {0}")]
    Protocol(String),
    /// The local configuration cannot work.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// Keying material was asked for before the handshake finished.
    #[error("TLS keying material is not available before the handshake completes")]
    HandshakeIncomplete,
    /// An internal failure of the TLS library (random source, clock).
    #[error("TLS failure: {0}")]
    Internal(String),
}

fn alert_hint(fault: Fault) -> &'static str {
    match fault {
        Fault::Auth => ": it refused our certificate (check `cert`, `key` and the server's CA)",
        Fault::PeerIncompatible => ": no common TLS version, cipher suite or group",
        _ => "",
    }
}

impl TlsError {
    /// Who is at fault.
    pub fn fault(&self) -> Fault {
        match self {
            Self::ServerCertificate(_) | Self::Certificate(_) => Fault::Auth,
            Self::AlertReceived { fault, .. } => *fault,
            Self::Incompatible(_) => Fault::PeerIncompatible,
            Self::Protocol(_) => Fault::PeerMisbehaved,
            Self::Config(_) | Self::HandshakeIncomplete | Self::Internal(_) => Fault::Config,
        }
    }
}

impl From<TlsError> for Failure {
    fn from(error: TlsError) -> Self {
        Self::new(error.fault(), error.to_string())
    }
}

impl From<rustls::Error> for TlsError {
    fn from(error: rustls::Error) -> Self {
        use rustls::Error as E;
        match error {
            E::InvalidCertificate(cert) => match CertVerifyError::from_rustls(&cert) {
                Some(ours) => Self::ServerCertificate(ours),
                None => Self::Certificate(E::InvalidCertificate(cert).to_string()),
            },
            E::AlertReceived(alert) => Self::AlertReceived {
                alert: format!("{alert:?}"),
                fault: alert_fault(alert),
            },
            E::PeerIncompatible(_) => Self::Incompatible(error.to_string()),
            E::HandshakeNotComplete => Self::HandshakeIncomplete,
            E::General(_) | E::FailedToGetCurrentTime | E::FailedToGetRandomBytes => {
                Self::Internal(error.to_string())
            }
            E::InconsistentKeys(_) | E::NoApplicationProtocol | E::BadMaxFragmentSize => {
                Self::Config(error.to_string())
            }
            _ => Self::Protocol(error.to_string()),
        }
    }
}

/// What an alert from the server says about who is at fault.
fn alert_fault(alert: AlertDescription) -> Fault {
    use AlertDescription as A;
    match alert {
        A::BadCertificate
        | A::UnsupportedCertificate
        | A::CertificateRevoked
        | A::CertificateExpired
        | A::CertificateUnknown
        | A::UnknownCA
        | A::AccessDenied
        | A::CertificateRequired => Fault::Auth,
        A::HandshakeFailure
        | A::ProtocolVersion
        | A::InsufficientSecurity
        | A::UnsupportedExtension => Fault::PeerIncompatible,
        A::CloseNotify | A::UserCanceled => Fault::Closed,
        _ => Fault::PeerMisbehaved,
    }
}

/// The TLS session of one key id, as the control channel uses it.
pub trait ControlTls {
    /// Processes TLS bytes received from the server, in order, at wall time `now` (used for
    /// certificate validity).
    ///
    /// # Errors
    ///
    /// The session is dead after an error; [`ControlTls::take_tls`] may still hold an alert to
    /// send.
    fn feed(&mut self, now: UnixTime, tls_bytes: &[u8]) -> Result<(), TlsError>;

    /// Appends all plaintext received so far to `out`; returns how many bytes were added.
    fn take_plaintext(&mut self, out: &mut Vec<u8>) -> usize;

    /// Queues `data` to be sent as its own TLS record(s), after the handshake if it is still
    /// running.
    ///
    /// # Errors
    ///
    /// When the session has failed or the send buffer is full.
    fn send_plaintext(&mut self, data: &[u8]) -> Result<(), TlsError>;

    /// Appends the TLS bytes waiting to be sent to `out`; returns how many bytes were added.
    fn take_tls(&mut self, out: &mut Vec<u8>) -> usize;

    /// Fills `out` from the TLS exporter (RFC 5705 / RFC 8446 §7.5) with `label` and *no*
    /// context, as OpenVPN's `SSL_export_keying_material(..., use_context = 0)` does.
    ///
    /// # Errors
    ///
    /// [`TlsError::HandshakeIncomplete`] before the handshake completes.
    fn export_keying_material(&self, label: &[u8], out: &mut [u8]) -> Result<(), TlsError>;

    /// Whether the handshake is still running.
    fn is_handshaking(&self) -> bool;

    /// Whether the server closed the TLS session (close_notify).
    fn peer_closed(&self) -> bool;
}

/// Which TLS versions to offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsVersions {
    /// Offer TLS 1.2.
    pub tls12: bool,
    /// Offer TLS 1.3.
    pub tls13: bool,
}

impl Default for TlsVersions {
    fn default() -> Self {
        Self {
            tls12: true,
            tls13: true,
        }
    }
}

impl TlsVersions {
    /// The versions a profile's `tls-version-min` and `tls-version-max` allow, of the two this
    /// client speaks.
    ///
    /// # Errors
    ///
    /// [`TlsError::Config`] when the range excludes both TLS 1.2 and 1.3.
    pub fn from_profile(profile: &Profile) -> Result<Self, TlsError> {
        let min = match profile.tls_version_min {
            // `or-highest`: a minimum above what we speak becomes our highest version.
            Some(min) => match min.version {
                Some(v) if v > TlsVersion::V1_3 && min.or_highest => TlsVersion::V1_3,
                Some(v) => v,
                None => TlsVersion::V1_2,
            },
            None => TlsVersion::V1_0,
        };
        let max = profile.tls_version_max.unwrap_or(TlsVersion::V1_3);
        let versions = Self {
            tls12: min <= TlsVersion::V1_2 && TlsVersion::V1_2 <= max,
            tls13: min <= TlsVersion::V1_3 && TlsVersion::V1_3 <= max,
        };
        if !versions.tls12 && !versions.tls13 {
            return Err(TlsError::Config(
                "tls-version-min/tls-version-max leave no TLS version erebus speaks (only 1.2 \
                 and 1.3)"
                    .into(),
            ));
        }
        Ok(versions)
    }
}

/// Everything needed to start TLS sessions to one server: the provider, the server policy, the
/// client's own certificate if any, and the TLS versions. Build it once; start a
/// [`RustlsSession`] from it for every key id.
#[derive(Clone)]
pub struct TlsClientConfig {
    config: Arc<ClientConfig>,
    time: WallTime,
}

impl fmt::Debug for TlsClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClientConfig").finish_non_exhaustive()
    }
}

/// Always presents the one certificate of the profile.
#[derive(Debug)]
struct FixedClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for FixedClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl TlsClientConfig {
    /// A configuration drawing randomness and time from `provider`, checking the server with
    /// `policy`, and presenting `credentials` when the server asks for a certificate (`None`:
    /// no client certificate, as with `auth-user-pass` alone).
    ///
    /// # Errors
    ///
    /// [`TlsError::Config`] when the provider supports none of `versions`.
    pub fn new(
        provider: &TlsProvider,
        policy: ServerPolicy,
        credentials: Option<&ClientCredentials>,
        versions: TlsVersions,
    ) -> Result<Self, TlsError> {
        let mut offered: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
        if versions.tls13 {
            offered.push(&rustls::version::TLS13);
        }
        if versions.tls12 {
            offered.push(&rustls::version::TLS12);
        }
        let builder = ClientConfig::builder_with_details(
            Arc::clone(provider.crypto()),
            Arc::new(provider.wall_time().clone()),
        )
        .with_protocol_versions(&offered)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        // OpenVPN's own certificate rules instead of web PKI host-name checks; see verify.rs.
        .with_custom_certificate_verifier(policy.into_verifier());
        let mut config = match credentials {
            Some(credentials) => builder.with_client_cert_resolver(Arc::new(FixedClientCert(
                credentials.certified_key(provider),
            ))),
            None => builder.with_no_client_auth(),
        };
        config.resumption = Resumption::disabled();
        config.enable_sni = false;
        Ok(Self {
            config: Arc::new(config),
            time: provider.wall_time().clone(),
        })
    }

    /// A configuration from a profile: its TLS version range, with `policy` and `credentials`
    /// loaded from its `ca`, `cert` and `key` by the caller.
    ///
    /// `tls-cipher`, `tls-ciphersuites`, `tls-groups` and `tls-cert-profile` are not applied:
    /// the provider's suites (AEAD only) and X25519 are always offered.
    ///
    /// # Errors
    ///
    /// As [`TlsClientConfig::new`] and [`TlsVersions::from_profile`].
    pub fn from_profile(
        provider: &TlsProvider,
        profile: &Profile,
        policy: ServerPolicy,
        credentials: Option<&ClientCredentials>,
    ) -> Result<Self, TlsError> {
        Self::new(
            provider,
            policy,
            credentials,
            TlsVersions::from_profile(profile)?,
        )
    }
}

/// [`ControlTls`] over a rustls `ClientConnection`.
pub struct RustlsSession {
    conn: ClientConnection,
    time: WallTime,
    /// Plaintext drained from rustls after every record, so its bounded receive buffer never
    /// fills while the caller is busy.
    plaintext: Vec<u8>,
    peer_closed: bool,
}

impl fmt::Debug for RustlsSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RustlsSession")
            .field("handshaking", &self.conn.is_handshaking())
            .field("plaintext_buffered", &self.plaintext.len())
            .field("peer_closed", &self.peer_closed)
            .finish()
    }
}

impl RustlsSession {
    /// Starts a session; its ClientHello is ready in [`ControlTls::take_tls`] at once.
    ///
    /// # Errors
    ///
    /// When rustls cannot start (the random source failed).
    pub fn new(config: &TlsClientConfig) -> Result<Self, TlsError> {
        let name = ServerName::try_from(PLACEHOLDER_SERVER_NAME)
            .map_err(|e| TlsError::Internal(e.to_string()))?;
        let conn = ClientConnection::new(Arc::clone(&config.config), name)?;
        Ok(Self {
            conn,
            time: config.time.clone(),
            plaintext: Vec::new(),
            peer_closed: false,
        })
    }

    /// The negotiated TLS version and cipher suite, for logs, once known.
    pub fn negotiated(&self) -> Option<(String, String)> {
        let version = self.conn.protocol_version()?;
        let suite = self.conn.negotiated_cipher_suite()?;
        Some((format!("{version:?}"), format!("{:?}", suite.suite())))
    }

    fn drain_plaintext(&mut self) -> Result<(), TlsError> {
        let mut chunk = [0u8; 4096];
        loop {
            match self.conn.reader().read(&mut chunk) {
                Ok(0) => {
                    self.peer_closed = true;
                    return Ok(());
                }
                Ok(n) => self
                    .plaintext
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                // UnexpectedEof: the server vanished without close_notify. For OpenVPN this is
                // harmless (the control channel tells us when the session ends).
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(TlsError::Protocol(e.to_string())),
            }
        }
    }
}

impl ControlTls for RustlsSession {
    fn feed(&mut self, now: UnixTime, tls_bytes: &[u8]) -> Result<(), TlsError> {
        self.time.set(now);
        let mut rest = tls_bytes;
        while !rest.is_empty() {
            let read = self
                .conn
                .read_tls(&mut rest)
                .map_err(|e| TlsError::Protocol(e.to_string()))?;
            let state = self.conn.process_new_packets()?;
            if state.plaintext_bytes_to_read() > 0 {
                self.drain_plaintext()?;
            }
            if state.peer_has_closed() {
                self.peer_closed = true;
            }
            if read == 0 {
                break;
            }
        }
        Ok(())
    }

    fn take_plaintext(&mut self, out: &mut Vec<u8>) -> usize {
        let n = self.plaintext.len();
        out.append(&mut self.plaintext);
        n
    }

    fn send_plaintext(&mut self, data: &[u8]) -> Result<(), TlsError> {
        let written = self
            .conn
            .writer()
            .write(data)
            .map_err(|e| TlsError::Internal(e.to_string()))?;
        if written != data.len() {
            return Err(TlsError::Internal(format!(
                "the TLS send buffer is full: {written} of {} bytes queued",
                data.len()
            )));
        }
        Ok(())
    }

    fn take_tls(&mut self, out: &mut Vec<u8>) -> usize {
        let before = out.len();
        while self.conn.wants_write() {
            // Writing into a Vec cannot fail.
            match self.conn.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        out.len() - before
    }

    fn export_keying_material(&self, label: &[u8], out: &mut [u8]) -> Result<(), TlsError> {
        if self.conn.is_handshaking() {
            return Err(TlsError::HandshakeIncomplete);
        }
        self.conn.export_keying_material(out, label, None)?;
        Ok(())
    }

    fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    fn peer_closed(&self) -> bool {
        self.peer_closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::verify::Role;
    use erebus_sansio::Seed;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::server::WebPkiClientVerifier;
    use rustls::{RootCertStore, ServerConfig, ServerConnection};

    const CA: &[u8] = include_bytes!("../../../../testvectors/tls-pki/ca.crt");
    const OTHER_CA: &[u8] = include_bytes!("../../../../testvectors/tls-pki/other-ca.crt");
    const SERVER: &[u8] = include_bytes!("../../../../testvectors/tls-pki/server.crt");
    const SERVER_KEY: &[u8] = include_bytes!("../../../../testvectors/tls-pki/server.key");
    const SERVER_EC: &[u8] = include_bytes!("../../../../testvectors/tls-pki/server-ec.crt");
    const SERVER_EC_KEY: &[u8] = include_bytes!("../../../../testvectors/tls-pki/server-ec.key");
    const CLIENT: &[u8] = include_bytes!("../../../../testvectors/tls-pki/client.crt");
    const CLIENT_KEY: &[u8] = include_bytes!("../../../../testvectors/tls-pki/client.pkcs1.key");
    const CLIENT_EC: &[u8] = include_bytes!("../../../../testvectors/tls-pki/client-ec.crt");
    const CLIENT_EC_KEY: &[u8] =
        include_bytes!("../../../../testvectors/tls-pki/client-ec.sec1.key");
    const NOW: UnixTime = UnixTime::from_secs(1_796_083_200);
    const EKM_LABEL: &[u8] = b"EXPORTER-OpenVPN-datakeys";

    /// An in-memory TLS server standing in for OpenVPN's, trusting our test CA for clients.
    fn server(
        cert: &[u8],
        key: &[u8],
        require_client_cert: bool,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> ServerConnection {
        let provider = TlsProvider::new(&Seed::from_byte(200));
        let chain: Vec<_> = CertificateDer::pem_slice_iter(cert)
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_slice(key).unwrap();
        let builder = ServerConfig::builder_with_provider(Arc::clone(provider.crypto()))
            .with_protocol_versions(versions)
            .unwrap();
        let builder = if require_client_cert {
            let mut roots = RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(CA).unwrap())
                .unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::clone(provider.crypto()),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = builder.with_single_cert(chain, key).unwrap();
        ServerConnection::new(Arc::new(config)).unwrap()
    }

    fn client(
        ca: &[u8],
        credentials: Option<(&[u8], &[u8])>,
        versions: TlsVersions,
    ) -> RustlsSession {
        let provider = TlsProvider::new(&Seed::from_byte(100));
        let policy = ServerPolicy::new(ca)
            .unwrap()
            .remote_cert_tls(Some(Role::Server));
        let credentials =
            credentials.map(|(cert, key)| ClientCredentials::from_pem(cert, key, None).unwrap());
        let config =
            TlsClientConfig::new(&provider, policy, credentials.as_ref(), versions).unwrap();
        RustlsSession::new(&config).unwrap()
    }

    /// Moves bytes both ways until neither side has anything to send; returns the client's
    /// first error. `c2s` and `s2c` count the bytes moved.
    fn pump(
        client: &mut RustlsSession,
        server: &mut ServerConnection,
    ) -> Result<(usize, usize), TlsError> {
        let (mut c2s, mut s2c) = (0, 0);
        for _ in 0..20 {
            let mut to_server = Vec::new();
            client.take_tls(&mut to_server);
            c2s += to_server.len();
            let mut rest = &to_server[..];
            while !rest.is_empty() {
                server.read_tls(&mut rest).unwrap();
                // A server-side failure (our certificate refused) shows up as its alert.
                if server.process_new_packets().is_err() {
                    break;
                }
            }
            let mut to_client = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut to_client).unwrap();
            }
            s2c += to_client.len();
            if to_server.is_empty() && to_client.is_empty() {
                return Ok((c2s, s2c));
            }
            client.feed(NOW, &to_client)?;
        }
        panic!("the handshake did not settle");
    }

    fn server_plaintext(server: &mut ServerConnection) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = server.reader().read_to_end(&mut out);
        out
    }

    #[test]
    fn tls_session_full_handshake_tls13_with_client_cert() {
        let mut client = client(CA, Some((CLIENT, CLIENT_KEY)), TlsVersions::default());
        let mut server = server(SERVER, SERVER_KEY, true, &[&rustls::version::TLS13]);
        assert!(client.is_handshaking());
        assert_eq!(
            client.export_keying_material(EKM_LABEL, &mut [0; 256]),
            Err(TlsError::HandshakeIncomplete)
        );
        // Queued before the handshake ends, sent right behind the client's Finished, as the
        // stock client sends its key-method message.
        client.send_plaintext(b"key method 2").unwrap();
        pump(&mut client, &mut server).unwrap();
        assert!(!client.is_handshaking());
        assert!(!server.is_handshaking());
        assert_eq!(
            client.negotiated(),
            Some(("TLSv1_3".into(), "TLS13_AES_256_GCM_SHA384".into()))
        );
        assert_eq!(server_plaintext(&mut server), b"key method 2");
        let seen_cert = server.peer_certificates().unwrap()[0].to_vec();
        assert_eq!(
            seen_cert,
            CertificateDer::from_pem_slice(CLIENT).unwrap().to_vec()
        );

        server.writer().write_all(b"PUSH_REPLY,ping 10\0").unwrap();
        pump(&mut client, &mut server).unwrap();
        let mut got = Vec::new();
        assert_eq!(client.take_plaintext(&mut got), 19);
        assert_eq!(got, b"PUSH_REPLY,ping 10\0");
        assert_eq!(client.take_plaintext(&mut got), 0);

        let mut ours = [0u8; 256];
        client.export_keying_material(EKM_LABEL, &mut ours).unwrap();
        let theirs = server
            .export_keying_material([0u8; 256], EKM_LABEL, None)
            .unwrap();
        assert_eq!(ours, theirs);
        assert_ne!(ours, [0u8; 256]);
    }

    #[test]
    fn tls_session_tls12_ecdsa_and_ekm_without_context() {
        let tls12 = TlsVersions {
            tls12: true,
            tls13: false,
        };
        let mut client = client(CA, Some((CLIENT_EC, CLIENT_EC_KEY)), tls12);
        let mut server = server(SERVER_EC, SERVER_EC_KEY, true, &[&rustls::version::TLS12]);
        pump(&mut client, &mut server).unwrap();
        assert_eq!(client.negotiated().unwrap().0, "TLSv1_2");
        let mut ours = [0u8; 256];
        client.export_keying_material(EKM_LABEL, &mut ours).unwrap();
        // In TLS 1.2 "no context" and "empty context" differ; OpenVPN uses no context.
        let none = server
            .export_keying_material([0u8; 256], EKM_LABEL, None)
            .unwrap();
        let empty = server
            .export_keying_material([0u8; 256], EKM_LABEL, Some(&[]))
            .unwrap();
        assert_eq!(ours, none);
        assert_ne!(ours, empty);
    }

    #[test]
    fn tls_session_without_client_cert() {
        let mut client = client(CA, None, TlsVersions::default());
        let mut server = server(SERVER, SERVER_KEY, false, &[&rustls::version::TLS13]);
        pump(&mut client, &mut server).unwrap();
        assert!(!client.is_handshaking());
        assert!(server.peer_certificates().is_none());
    }

    #[test]
    fn tls_session_server_refusing_missing_client_cert_is_auth_fault() {
        let mut client = client(CA, None, TlsVersions::default());
        let mut server = server(SERVER, SERVER_KEY, true, &[&rustls::version::TLS13]);
        let err = pump(&mut client, &mut server).unwrap_err();
        assert_eq!(
            err,
            TlsError::AlertReceived {
                alert: "CertificateRequired".into(),
                fault: Fault::Auth
            }
        );
        assert!(err.to_string().contains("refused our certificate"), "{err}");
    }

    #[test]
    fn tls_session_wrong_ca_fails_with_reason_and_alert() {
        let mut client = client(OTHER_CA, Some((CLIENT, CLIENT_KEY)), TlsVersions::default());
        let mut server = server(SERVER, SERVER_KEY, true, &[&rustls::version::TLS13]);
        let err = pump(&mut client, &mut server).unwrap_err();
        assert!(
            matches!(
                err,
                TlsError::ServerCertificate(CertVerifyError::UnknownIssuer { .. })
            ),
            "{err:?}"
        );
        assert_eq!(err.fault(), Fault::Auth);
        let failure = Failure::from(err);
        assert!(failure.message.contains("not issued by the CA"));
        // The client tells the server why, in an encrypted alert record (type 21 in TLS 1.2,
        // disguised as application data 23 in TLS 1.3).
        // A middlebox-compatibility ChangeCipherSpec (20) may come first.
        let mut alert = Vec::new();
        assert!(client.take_tls(&mut alert) > 0);
        let sent = records(&alert);
        assert!(matches!(sent.last(), Some((21 | 23, _))), "{sent:?}");
    }

    #[test]
    fn tls_session_expired_server_cert() {
        let mut client = client(CA, Some((CLIENT, CLIENT_KEY)), TlsVersions::default());
        let mut server = server(SERVER, SERVER_KEY, true, &[&rustls::version::TLS13]);
        let mut hello = Vec::new();
        client.take_tls(&mut hello);
        let mut rest = &hello[..];
        server.read_tls(&mut rest).unwrap();
        server.process_new_packets().unwrap();
        let mut flight = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut flight).unwrap();
        }
        let late = UnixTime::from_secs(2_427_235_200);
        let err = client.feed(late, &flight).unwrap_err();
        assert!(
            matches!(
                err,
                TlsError::ServerCertificate(CertVerifyError::Expired { .. })
            ),
            "{err:?}"
        );
    }

    /// Splits TLS bytes into records: (content type, length).
    fn records(mut bytes: &[u8]) -> Vec<(u8, usize)> {
        let mut out = Vec::new();
        while bytes.len() >= 5 {
            let len = usize::from(u16::from_be_bytes([bytes[3], bytes[4]]));
            out.push((bytes[0], len));
            bytes = &bytes[5 + len..];
        }
        assert!(bytes.is_empty());
        out
    }

    #[test]
    fn tls_session_each_send_is_its_own_record() {
        let mut client = client(CA, Some((CLIENT, CLIENT_KEY)), TlsVersions::default());
        let mut server = server(SERVER, SERVER_KEY, true, &[&rustls::version::TLS13]);
        pump(&mut client, &mut server).unwrap();
        let key_method = [0x42u8; 399];
        client.send_plaintext(&key_method).unwrap();
        client.send_plaintext(b"PUSH_REQUEST\0").unwrap();
        let mut wire = Vec::new();
        client.take_tls(&mut wire);
        // TLS 1.3 record: plaintext + 1 content-type byte + 16 tag bytes.
        assert_eq!(records(&wire), [(23, 399 + 17), (23, 13 + 17)]);
        let mut rest = &wire[..];
        while !rest.is_empty() {
            server.read_tls(&mut rest).unwrap();
        }
        server.process_new_packets().unwrap();
        let got = server_plaintext(&mut server);
        assert_eq!(&got[..399], &key_method[..]);
        assert_eq!(&got[399..], b"PUSH_REQUEST\0");
    }

    #[test]
    fn tls_session_feeding_in_small_pieces_and_garbage() {
        let mut client = client(CA, Some((CLIENT, CLIENT_KEY)), TlsVersions::default());
        let mut server = server(SERVER, SERVER_KEY, true, &[&rustls::version::TLS13]);
        let mut hello = Vec::new();
        client.take_tls(&mut hello);
        let mut rest = &hello[..];
        server.read_tls(&mut rest).unwrap();
        server.process_new_packets().unwrap();
        let mut flight = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut flight).unwrap();
        }
        // The reliability layer may deliver the stream cut anywhere.
        for piece in flight.chunks(7) {
            client.feed(NOW, piece).unwrap();
        }
        assert!(!client.is_handshaking());

        let mut other = self::client(CA, None, TlsVersions::default());
        // Application data before any handshake.
        let err = other.feed(NOW, b"\x17\x03\x03\x00\x05hello").unwrap_err();
        assert_eq!(err.fault(), Fault::PeerMisbehaved);
    }

    #[test]
    fn tls_session_first_flight_is_deterministic_and_has_no_sni() {
        let hello = |seed: u8| {
            let provider = TlsProvider::new(&Seed::from_byte(seed));
            let policy = ServerPolicy::new(CA).unwrap();
            let config =
                TlsClientConfig::new(&provider, policy, None, TlsVersions::default()).unwrap();
            let mut session = RustlsSession::new(&config).unwrap();
            let mut out = Vec::new();
            session.take_tls(&mut out);
            out
        };
        assert_eq!(hello(5), hello(5));
        assert_ne!(hello(5), hello(6));
        let bytes = hello(5);
        assert!(
            !bytes
                .windows(PLACEHOLDER_SERVER_NAME.len())
                .any(|w| w == PLACEHOLDER_SERVER_NAME.as_bytes()),
            "no server name is sent"
        );
    }

    #[test]
    fn tls_versions_from_profile() {
        let parse = |extra: &str| {
            let text =
                format!("client\nremote vpn.example.net\nca ca.crt\nauth-user-pass\n{extra}");
            let (profile, _) = Profile::parse(text.as_bytes()).unwrap();
            TlsVersions::from_profile(&profile)
        };
        assert_eq!(parse("").unwrap(), TlsVersions::default());
        assert_eq!(
            parse("tls-version-min 1.3\n").unwrap(),
            TlsVersions {
                tls12: false,
                tls13: true
            }
        );
        assert_eq!(
            parse("tls-version-max 1.2\n").unwrap(),
            TlsVersions {
                tls12: true,
                tls13: false
            }
        );
        assert!(parse("tls-version-max 1.1\n").is_err());
    }
}
