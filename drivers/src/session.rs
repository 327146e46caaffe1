//! From a loaded profile to a running tunnel: resolving the server and building the session
//! the profile's mode asks for. Shared by the `erebus` and `erebus-ping` commands.

use std::net::{SocketAddr, ToSocketAddrs};

use erebus_openvpn::config::{AuthUserPass, Connection, Credentials, Material, Mode, TlsWrap};
use erebus_openvpn::setup::{TlsMaterials, p2p_config, tls_config};
use erebus_openvpn::{P2pSession, TlsSession};
use erebus_sansio::tunnel::{Failure, Fault, Tunnel};
use erebus_sansio::{Instant, Seed};

use crate::clock::Clock;
use crate::profile::{LoadError, LoadedProfile};

/// A tunnel of whichever protocol the profile uses.
pub type AnyTunnel = Box<dyn Tunnel + Send>;

/// Why a tunnel could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The profile, or a file it names, cannot work.
    #[error("{0:#}")]
    Config(anyhow::Error),
    /// The server cannot be reached (its name does not resolve).
    #[error("{0}")]
    Network(Failure),
}

/// The connection to use: the profile's first (`remote-random` is honoured by the caller's
/// ordering, later).
///
/// # Errors
///
/// A profile without `remote`.
pub fn first_connection(loaded: &LoadedProfile) -> Result<&Connection, SetupError> {
    loaded
        .profile
        .connections
        .first()
        .ok_or_else(|| SetupError::Config(anyhow::anyhow!("the profile names no remote")))
}

/// Resolves the VPN server's address. Only the server's own name uses the host's resolver;
/// everything proxied resolves through the tunnel.
///
/// # Errors
///
/// A name that does not resolve, as a network failure.
pub fn resolve_remote(connection: &Connection) -> Result<SocketAddr, SetupError> {
    let host = connection.host.as_str();
    let mut addrs = (host, connection.port).to_socket_addrs().map_err(|e| {
        SetupError::Network(Failure::new(
            Fault::Timeout,
            format!("cannot resolve the server name {host}: {e}"),
        ))
    })?;
    addrs.next().ok_or_else(|| {
        SetupError::Network(Failure::new(
            Fault::Timeout,
            format!("the server name {host} has no address"),
        ))
    })
}

/// Builds the session `loaded` describes for `connection`, talking to `remote`.
///
/// # Errors
///
/// What in the profile (or the files it names) prevents the session.
pub fn build_tunnel(
    loaded: &LoadedProfile,
    connection: &Connection,
    remote: SocketAddr,
    seed: &Seed,
    clock: &Clock,
    now: Instant,
) -> Result<AnyTunnel, SetupError> {
    let profile = &loaded.profile;
    match profile.mode() {
        Mode::Plaintext | Mode::StaticKey => {
            let secret = match &profile.secret {
                Some(secret) => Some(
                    loaded
                        .material(&secret.key)
                        .map_err(|e| SetupError::Config(e.into()))?,
                ),
                None => None,
            };
            let config = p2p_config(
                profile,
                connection,
                remote,
                secret.as_deref().map(Vec::as_slice),
                clock.wall_clock(),
            )
            .map_err(|e| SetupError::Config(e.into()))?;
            let session = P2pSession::new(config, &seed.child("openvpn.session"), now)
                .map_err(|e| SetupError::Config(e.into()))?;
            Ok(Box::new(session))
        }
        Mode::Tls => {
            let config_error = |e: LoadError| SetupError::Config(e.into());
            let read = |material: Option<&Material>| {
                material
                    .map(|m| loaded.material(m))
                    .transpose()
                    .map_err(config_error)
            };
            let ca = read(profile.ca.as_ref())?;
            let cert = read(profile.cert.as_ref())?;
            let key = read(profile.key.as_ref())?;
            let extra_certs = read(profile.extra_certs.as_ref())?;
            let wrap_key = read(connection.tls_wrap.as_ref().map(|wrap| match wrap {
                TlsWrap::Auth { key, .. } | TlsWrap::Crypt { key } | TlsWrap::CryptV2 { key } => {
                    key
                }
            }))?;
            let credentials = match &profile.auth_user_pass {
                None => None,
                Some(AuthUserPass::Prompt) => {
                    return Err(SetupError::Config(anyhow::anyhow!(
                        "{}: the profile asks for a username and password ('auth-user-pass'): \
                         pass them with --auth-user-pass FILE (username on the first line, \
                         password on the second)",
                        loaded.path.display()
                    )));
                }
                Some(AuthUserPass::From(material)) => {
                    let bytes = loaded.material(material).map_err(config_error)?;
                    Some(Credentials::parse(&bytes).map_err(|e| SetupError::Config(e.into()))?)
                }
            };
            let index = profile
                .connections
                .iter()
                .position(|c| std::ptr::eq(c, connection))
                .unwrap_or(0);
            let materials = TlsMaterials {
                ca: ca.as_deref().map(Vec::as_slice),
                cert: cert.as_deref().map(Vec::as_slice),
                key: key.as_deref().map(Vec::as_slice),
                extra_certs: extra_certs.as_deref().map(Vec::as_slice),
                tls_wrap_key: wrap_key.as_deref().map(Vec::as_slice),
                user_pass: credentials.as_ref(),
            };
            let config = tls_config(profile, index, remote, &materials, clock.wall_clock())
                .map_err(|e| SetupError::Config(e.into()))?;
            let session = TlsSession::new(config, &seed.child("openvpn.session"), now)
                .map_err(|e| SetupError::Config(e.into()))?;
            Ok(Box::new(session))
        }
    }
}
