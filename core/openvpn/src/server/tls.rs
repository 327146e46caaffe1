//! The server's TLS session of one key id, as an in-memory codec over a rustls
//! `ServerConnection`: the mirror of [`crate::tls::RustlsSession`].
//!
//! The certificate and the client CA are loaded once ([`ServerTlsMaterial`]); every session
//! builds its own rustls configuration around its own seeded [`TlsProvider`], so that each
//! session's TLS bytes are a function of its seed.

use core::fmt;
use std::io::{Read, Write};
use std::sync::Arc;

use erebus_sansio::UnixTime;
use erebus_sansio::tunnel::{Failure, Fault};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, RootCertStore, ServerConfig, ServerConnection};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::tls::{ClientCredentials, TlsProvider, WallTime};

/// The server's certificate and key, and the CA its clients' certificates must chain to.
#[derive(Clone)]
pub(crate) struct ServerTlsMaterial {
    key: Arc<CertifiedKey>,
    client_roots: Option<Arc<RootCertStore>>,
}

impl fmt::Debug for ServerTlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTlsMaterial")
            .field("chain", &self.key.cert.len())
            .field("client_ca", &self.client_roots.as_ref().map(|r| r.len()))
            .finish_non_exhaustive()
    }
}

impl ServerTlsMaterial {
    /// Loads the PEM chain and key, and the PEM client CA when there is one.
    pub(crate) fn new(
        cert_chain_pem: &[u8],
        key_pem: &[u8],
        client_ca_pem: Option<&[u8]>,
    ) -> Result<Self, String> {
        let credentials = ClientCredentials::from_pem(cert_chain_pem, key_pem, None)
            .map_err(|e| e.to_string().replace("`cert`", "server certificate"))?;
        let client_roots = match client_ca_pem {
            None => None,
            Some(pem) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("the client CA is not valid PEM: {e}"))?;
                if certs.is_empty() {
                    return Err("the client CA holds no PEM certificate".into());
                }
                let mut roots = RootCertStore::empty();
                for (index, cert) in certs.into_iter().enumerate() {
                    roots.add(cert).map_err(|e| {
                        format!(
                            "client CA certificate number {} cannot be used: {e}",
                            index + 1
                        )
                    })?;
                }
                Some(Arc::new(roots))
            }
        };
        Ok(Self {
            key: credentials.plain_certified_key(),
            client_roots,
        })
    }

    /// Whether clients must present a certificate.
    pub(crate) fn requires_client_cert(&self) -> bool {
        self.client_roots.is_some()
    }

    /// A rustls configuration drawing randomness and time from `provider`.
    pub(crate) fn config(&self, provider: &TlsProvider) -> Result<Arc<ServerConfig>, Failure> {
        let config_error = |e: rustls::Error| Failure::new(Fault::Config, format!("TLS: {e}"));
        let builder = ServerConfig::builder_with_details(
            Arc::clone(provider.crypto()),
            Arc::new(provider.wall_time().clone()),
        )
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(config_error)?;
        let builder = match &self.client_roots {
            Some(roots) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::clone(roots),
                    Arc::clone(provider.crypto()),
                )
                .build()
                .map_err(|e| Failure::new(Fault::Config, format!("client CA: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config =
            builder.with_cert_resolver(Arc::new(FixedServerCert(Arc::clone(&self.key))));
        // A fresh session per key id, as OpenVPN: no tickets, no resumption.
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(NoServerSessionStorage {});
        Ok(Arc::new(config))
    }
}

/// Always presents the server's one certificate.
#[derive(Debug)]
struct FixedServerCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedServerCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// The TLS failure of a client, with who is at fault.
fn failure(error: &rustls::Error) -> Failure {
    use rustls::Error as E;
    match error {
        E::InvalidCertificate(cert) => Failure::new(
            Fault::Auth,
            format!("the client's certificate was refused: {cert}"),
        ),
        E::NoCertificatesPresented => {
            Failure::new(Fault::Auth, "the client presented no certificate")
        }
        E::AlertReceived(alert) => {
            let fault = match alert {
                AlertDescription::BadCertificate
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnknownCA
                | AlertDescription::AccessDenied => Fault::Auth,
                AlertDescription::HandshakeFailure
                | AlertDescription::ProtocolVersion
                | AlertDescription::InsufficientSecurity => Fault::PeerIncompatible,
                AlertDescription::CloseNotify | AlertDescription::UserCanceled => Fault::Closed,
                _ => Fault::PeerMisbehaved,
            };
            Failure::new(
                fault,
                format!("the client aborted TLS with the alert '{alert:?}'"),
            )
        }
        E::PeerIncompatible(_) => Failure::new(
            Fault::PeerIncompatible,
            format!("the client's TLS is incompatible: {error}"),
        ),
        E::General(_) | E::FailedToGetCurrentTime | E::FailedToGetRandomBytes => {
            Failure::new(Fault::Config, format!("TLS failure: {error}"))
        }
        _ => Failure::new(
            Fault::PeerMisbehaved,
            format!("the client broke the TLS protocol: {error}"),
        ),
    }
}

/// The server's TLS session of one key id.
pub(crate) struct ServerTls {
    conn: ServerConnection,
    time: WallTime,
    plaintext: Vec<u8>,
    peer_closed: bool,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("handshaking", &self.conn.is_handshaking())
            .field("peer_closed", &self.peer_closed)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// A session waiting for the client's hello.
    pub(crate) fn new(config: &Arc<ServerConfig>, time: WallTime) -> Result<Self, Failure> {
        let conn = ServerConnection::new(Arc::clone(config))
            .map_err(|e| Failure::new(Fault::Config, format!("TLS: {e}")))?;
        Ok(Self {
            conn,
            time,
            plaintext: Vec::new(),
            peer_closed: false,
        })
    }

    /// Processes TLS bytes from the client, in order, at wall time `now`.
    pub(crate) fn feed(&mut self, now: UnixTime, tls_bytes: &[u8]) -> Result<(), Failure> {
        self.time.set(now);
        let mut rest = tls_bytes;
        while !rest.is_empty() {
            let read = self.conn.read_tls(&mut rest).map_err(|e| {
                Failure::new(
                    Fault::PeerMisbehaved,
                    format!("the client broke the TLS protocol: {e}"),
                )
            })?;
            let state = self.conn.process_new_packets().map_err(|e| failure(&e))?;
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

    fn drain_plaintext(&mut self) -> Result<(), Failure> {
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
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => {
                    return Err(Failure::new(
                        Fault::PeerMisbehaved,
                        format!("the client broke the TLS protocol: {e}"),
                    ));
                }
            }
        }
    }

    /// Appends the plaintext received so far to `out`.
    pub(crate) fn take_plaintext(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.plaintext);
    }

    /// Queues `data` as its own TLS record(s).
    pub(crate) fn send_plaintext(&mut self, data: &[u8]) -> Result<(), Failure> {
        let written = self
            .conn
            .writer()
            .write(data)
            .map_err(|e| Failure::new(Fault::Config, format!("TLS: {e}")))?;
        if written != data.len() {
            return Err(Failure::new(
                Fault::Config,
                format!(
                    "the TLS send buffer is full: {written} of {} bytes queued",
                    data.len()
                ),
            ));
        }
        Ok(())
    }

    /// Appends the TLS bytes waiting to be sent to `out`.
    pub(crate) fn take_tls(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            match self.conn.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Fills `out` from the TLS exporter with `label` and no context.
    pub(crate) fn export_keying_material(
        &self,
        label: &[u8],
        out: &mut [u8],
    ) -> Result<(), Failure> {
        if self.conn.is_handshaking() {
            return Err(Failure::new(
                Fault::PeerMisbehaved,
                "TLS keying material asked for before the handshake completed",
            ));
        }
        self.conn
            .export_keying_material(out, label, None)
            .map_err(|e| Failure::new(Fault::Config, format!("TLS exporter: {e}")))?;
        Ok(())
    }

    /// Whether the handshake is still running.
    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether the client closed TLS.
    pub(crate) fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// The common name of the client's certificate, once verified.
    pub(crate) fn common_name(&self) -> Option<String> {
        let der = self.conn.peer_certificates()?.first()?;
        let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
        crate::tls::verify::openvpn_common_name(&cert)
    }
}
