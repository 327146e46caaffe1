//! erebus sessions: from a VPN configuration's bytes to a [`Tunnel`](erebus_sansio::Tunnel) that survives its server.
//!
//! [`load`] reads a configuration (an OpenVPN `.ovpn` profile today; the format is recognised
//! from the content) and asks the caller, through a [`FileReader`], for every file it names:
//! certificates, keys, credentials. Nothing here touches the file system: the caller decides
//! where a relative path points (the configuration's directory, as OpenVPN does) and reads it.
//! The result is a [`Plan`]; [`Plan::start`] turns it into a [`SessionTunnel`], a
//! [`Supervisor`] over the protocol's sessions that connects, notices a lost session and builds
//! the next one with backoff, cycling through the configuration's servers. A driver never
//! learns which protocol it runs.

#![forbid(unsafe_code)]

pub mod ipsec;
pub mod openvpn;
pub mod retry;
pub mod supervisor;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use erebus_openvpn::config::Profile;
use erebus_sansio::tunnel::Failure;
use erebus_sansio::{Instant, Seed, WallClock};
use zeroize::Zeroizing;

pub use ipsec::IpsecProtocol;
pub use openvpn::{OpenVpnProtocol, OpenVpnTunnel};
pub use retry::{Remote, RetryPolicy};
pub use supervisor::{Protocol, Supervisor, SupervisorStats};

/// Reads a file a configuration names, by the path as written there; the caller resolves a
/// relative path (normally against the configuration's directory). An error is a sentence
/// saying why the file cannot be read.
pub type FileReader<'a> = dyn FnMut(&Path) -> Result<Zeroizing<Vec<u8>>, String> + 'a;

/// What the command line says in place of the configuration.
#[derive(Default)]
pub struct Overrides {
    /// The bytes of a credentials file (username line, password line) given on the command
    /// line, used instead of the configuration's `auth-user-pass`.
    pub auth_user_pass: Option<Zeroizing<Vec<u8>>>,
    /// The connection to use from a swanctl.conf with several (`--connection`).
    pub connection: Option<String>,
    /// The certificates in the `x509ca/` directory beside a swanctl.conf, which swanctl
    /// trusts for every connection (the caller lists the directory; this crate cannot).
    pub x509ca: Vec<Zeroizing<Vec<u8>>>,
}

impl core::fmt::Debug for Overrides {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Overrides")
            .field(
                "auth_user_pass",
                &self.auth_user_pass.as_ref().map(|_| "<secret>"),
            )
            .field("connection", &self.connection)
            .field("x509ca", &self.x509ca.len())
            .finish()
    }
}

/// Why a configuration cannot be used. Every message names the file and, where there is one,
/// the line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The configuration does not parse or cannot be honoured.
    #[error("{0}")]
    Config(String),
    /// A file the configuration names could not be read.
    #[error("{}: {reason}", path.display())]
    File {
        /// The path as the configuration writes it.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The configuration formats erebus reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// An OpenVPN profile (`.ovpn`, `.conf`).
    OpenVpn,
    /// A strongSwan `swanctl.conf`.
    Swanctl,
}

impl Format {
    /// Recognises the format from the content: a `connections {` section is strongSwan's,
    /// anything else is read as an OpenVPN profile (whose parser names what it cannot read).
    pub fn detect(bytes: &[u8]) -> Self {
        let text = String::from_utf8_lossy(bytes);
        let swanctl = text.lines().any(|line| {
            let line = line.trim();
            let mut words = line.split_whitespace();
            matches!(
                (words.next(), words.next()),
                (Some("connections"), Some("{")) | (Some("connections{"), _)
            )
        });
        if swanctl {
            Self::Swanctl
        } else {
            Self::OpenVpn
        }
    }
}

/// The protocols behind the supervisor. A new protocol is one more arm here.
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyProtocol {
    /// OpenVPN.
    OpenVpn(Box<OpenVpnProtocol>),
    /// IPsec: IKEv2 and ESP in UDP.
    Ipsec(Box<IpsecProtocol>),
}

/// A session of any protocol.
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyTunnel {
    /// An OpenVPN session.
    OpenVpn(OpenVpnTunnel),
    /// An IPsec session.
    Ipsec(Box<erebus_ipsec::IpsecSession>),
}

impl erebus_sansio::Tunnel for AnyTunnel {
    fn transport(&self) -> Option<&erebus_sansio::tunnel::TransportSpec> {
        match self {
            Self::OpenVpn(t) => t.transport(),
            Self::Ipsec(t) => t.transport(),
        }
    }

    fn overhead(&self) -> erebus_sansio::tunnel::Overhead {
        match self {
            Self::OpenVpn(t) => t.overhead(),
            Self::Ipsec(t) => t.overhead(),
        }
    }

    fn transport_connected(&mut self, now: Instant, remote: SocketAddr) {
        match self {
            Self::OpenVpn(t) => t.transport_connected(now, remote),
            Self::Ipsec(t) => t.transport_connected(now, remote),
        }
    }

    fn transport_closed(&mut self, now: Instant, error: erebus_sansio::io::TransportError) {
        match self {
            Self::OpenVpn(t) => t.transport_closed(now, error),
            Self::Ipsec(t) => t.transport_closed(now, error),
        }
    }

    fn decapsulate(
        &mut self,
        now: Instant,
        packet: &mut [u8],
    ) -> Result<erebus_sansio::tunnel::Decapsulated, erebus_sansio::tunnel::DropReason> {
        match self {
            Self::OpenVpn(t) => t.decapsulate(now, packet),
            Self::Ipsec(t) => t.decapsulate(now, packet),
        }
    }

    fn encapsulate(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        inner: core::ops::Range<usize>,
    ) -> Result<core::ops::Range<usize>, erebus_sansio::tunnel::DropReason> {
        match self {
            Self::OpenVpn(t) => t.encapsulate(now, buf, inner),
            Self::Ipsec(t) => t.encapsulate(now, buf, inner),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        match self {
            Self::OpenVpn(t) => t.handle_timeout(now),
            Self::Ipsec(t) => t.handle_timeout(now),
        }
    }

    fn close(&mut self, now: Instant) {
        match self {
            Self::OpenVpn(t) => t.close(now),
            Self::Ipsec(t) => t.close(now),
        }
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Result<usize, usize>> {
        match self {
            Self::OpenVpn(t) => t.poll_transmit(now, buf),
            Self::Ipsec(t) => t.poll_transmit(now, buf),
        }
    }

    fn poll_event(&mut self) -> Option<erebus_sansio::tunnel::TunnelEvent> {
        match self {
            Self::OpenVpn(t) => t.poll_event(),
            Self::Ipsec(t) => t.poll_event(),
        }
    }

    fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        match self {
            Self::OpenVpn(t) => t.poll_timeout(),
            Self::Ipsec(t) => t.poll_timeout(),
        }
    }
}

impl Protocol for AnyProtocol {
    type Tunnel = AnyTunnel;

    fn build(
        &mut self,
        index: usize,
        remote: SocketAddr,
        seed: &Seed,
        wall_clock: WallClock,
        now: Instant,
    ) -> Result<AnyTunnel, Failure> {
        match self {
            Self::OpenVpn(p) => p
                .build(index, remote, seed, wall_clock, now)
                .map(AnyTunnel::OpenVpn),
            Self::Ipsec(p) => p
                .build(index, remote, seed, wall_clock, now)
                .map(|t| AnyTunnel::Ipsec(Box::new(t))),
        }
    }

    fn retire(&mut self, tunnel: &AnyTunnel) {
        // Only OpenVPN carries something (its pushed auth-token) from one session to the next.
        if let (Self::OpenVpn(p), AnyTunnel::OpenVpn(t)) = (self, tunnel) {
            p.retire(t);
        }
    }
}

/// The tunnel every erebus program runs: the supervisor over any protocol.
pub type SessionTunnel = Supervisor<AnyProtocol>;

/// A loaded configuration, ready to start: the protocol with its files, the servers in order
/// and the retry rules, and remarks for the user.
#[derive(Debug)]
pub struct Plan {
    /// The protocol and what its sessions need.
    pub protocol: AnyProtocol,
    /// The servers, in the configuration's order.
    pub remotes: Vec<Remote>,
    /// The rules across servers.
    pub policy: RetryPolicy,
    /// One sentence per option that was accepted but is ignored, each naming its line.
    pub warnings: Vec<String>,
}

impl Plan {
    /// The supervised tunnel, whose first attempt starts at `now`.
    pub fn start(self, seed: &Seed, wall_clock: WallClock, now: Instant) -> SessionTunnel {
        Supervisor::new(
            self.protocol,
            self.remotes,
            self.policy,
            seed,
            wall_clock,
            now,
        )
    }
}

/// Reads a configuration: `bytes` are its contents, `name` how messages call it (its path),
/// `files` reads what it names, `overrides` what the command line says instead. The bytes of
/// every named file are read now, once; `wall_clock` checks certificates' validity only in
/// the sense that a session can be built (the real check happens against the server).
///
/// # Errors
///
/// [`LoadError`] naming the file and the line, or the named file that cannot be read.
pub fn load(
    bytes: &[u8],
    name: &str,
    files: &mut FileReader<'_>,
    overrides: Overrides,
    wall_clock: WallClock,
) -> Result<Plan, LoadError> {
    match Format::detect(bytes) {
        Format::Swanctl => {
            let (connection, warnings) = erebus_ipsec::swanctl::load_with_options(
                bytes,
                name,
                overrides.connection.as_deref(),
                files,
                &erebus_ipsec::swanctl::LoadOptions {
                    x509ca: overrides
                        .x509ca
                        .iter()
                        .map(|bytes| erebus_ipsec::config::Secret::new(bytes.to_vec()))
                        .collect(),
                },
            )
            .map_err(|e| LoadError::Config(e.to_string()))?;
            let warnings = warnings
                .iter()
                .map(|w| {
                    format!(
                        "{}: line {}: {}: {}",
                        w.file.display(),
                        w.line,
                        w.key,
                        w.message
                    )
                })
                .collect();
            let protocol = IpsecProtocol::new(connection);
            protocol
                .check(wall_clock)
                .map_err(|e| LoadError::Config(format!("{name}: {e}")))?;
            Ok(Plan {
                remotes: protocol.remotes(),
                policy: protocol.policy(),
                protocol: AnyProtocol::Ipsec(Box::new(protocol)),
                warnings,
            })
        }
        Format::OpenVpn => {
            let (profile, warnings) =
                Profile::parse(bytes).map_err(|e| LoadError::Config(format!("{name}: {e}")))?;
            let warnings = warnings
                .iter()
                .map(|w| format!("{name}: line {}: {}: {}", w.line, w.directive, w.message))
                .collect();
            let protocol = OpenVpnProtocol::load(profile, name, files, overrides)?;
            protocol
                .check(wall_clock)
                .map_err(|e| LoadError::Config(format!("{name}: {e}")))?;
            Ok(Plan {
                remotes: protocol.remotes(),
                policy: protocol.policy(),
                protocol: AnyProtocol::OpenVpn(Box::new(protocol)),
                warnings,
            })
        }
    }
}
