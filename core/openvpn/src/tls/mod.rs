//! The TLS layer of the control channel: a deterministic rustls provider, OpenVPN's
//! certificate rules, and the TLS session as an in-memory codec.
//!
//! - [`provider`]: [`TlsProvider`], every random byte drawn from the session's seed, wall time
//!   set by the caller;
//! - [`verify`]: [`ServerPolicy`] (`ca`, `remote-cert-tls`, `ns-cert-type`,
//!   `verify-x509-name`) and [`ClientCredentials`] (`cert`, `key`);
//! - [`session`]: the [`ControlTls`] trait the control channel drives, implemented by
//!   [`RustlsSession`], and the [`TlsClientConfig`] it starts from;
//! - `sign`: the client's signatures, their randomness drawn from the provider's generator.
//!
//! These four files are the only ones in the crate that name rustls.

pub mod provider;
pub mod session;
mod sign;
pub mod verify;

pub use provider::{TlsProvider, WallTime};
pub use session::{ControlTls, RustlsSession, TlsClientConfig, TlsError, TlsVersions};
pub use verify::{CertVerifyError, ClientCredentials, CredentialError, Role, ServerPolicy};
