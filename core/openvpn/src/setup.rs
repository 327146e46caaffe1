//! From a parsed profile to a session: the protocol knowledge of what each directive means for
//! the session it configures. File references in the profile are resolved by the caller, which
//! passes their bytes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use erebus_sansio::WallClock;
use erebus_sansio::tunnel::IpNet;

use crate::config::{
    Connection, DhcpOption, KeyDirection as ProfileKeyDirection, Mode, Profile, Route,
};
use crate::data::{AuthAlg, CipherAlg};
use crate::keys::{KeyDirection, KeyFileError, StaticKey};
use crate::p2p::{P2pConfig, P2pMode, StaticKeyMode};
use crate::replay::ReplayConfig;

/// Why a profile cannot configure a session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A point-to-point session was asked of a TLS profile.
    #[error("the profile uses TLS client mode, not a point-to-point mode")]
    NotPointToPoint,
    /// A point-to-point profile without `ifconfig`.
    #[error(
        "a point-to-point profile needs 'ifconfig <local> <remote>' to know the tunnel addresses"
    )]
    MissingIfconfig,
    /// The static key's bytes were not supplied.
    #[error("the static key named by 'secret' was not supplied")]
    MissingSecret,
    /// The static key file is not in OpenVPN's format.
    #[error("the static key named by 'secret' is unusable: {0}")]
    BadSecret(#[from] KeyFileError),
    /// A cipher or digest the data channel of this mode does not implement.
    #[error("'{0}' cannot be used in static-key mode")]
    UnsupportedAlgorithm(&'static str),
    /// A static-key profile without `cipher` (OpenVPN would fall back to BF-CBC).
    #[error("a static-key profile must name its cipher: OpenVPN's default BF-CBC is not supported")]
    MissingCipher,
    /// `tun-mtu` out of range.
    #[error("tun-mtu {0} is outside 100..=65535")]
    BadMtu(u32),
}

/// The configuration of a point-to-point (plaintext or static-key) session for `connection`
/// of `profile`, whose server resolved to `remote`. `secret` holds the bytes of the static key
/// file when the profile has `secret`.
///
/// # Errors
///
/// Names what in the profile prevents the session.
pub fn p2p_config(
    profile: &Profile,
    connection: &Connection,
    remote: SocketAddr,
    secret: Option<&[u8]>,
    wall_clock: WallClock,
) -> Result<P2pConfig, SetupError> {
    let mode = match profile.mode() {
        Mode::Tls => return Err(SetupError::NotPointToPoint),
        Mode::Plaintext => P2pMode::Plaintext,
        Mode::StaticKey => {
            let key = StaticKey::parse(secret.ok_or(SetupError::MissingSecret)?)?;
            let direction = match profile.secret.as_ref().and_then(|s| s.direction) {
                None => KeyDirection::Bidirectional,
                Some(ProfileKeyDirection::Normal) => KeyDirection::Normal,
                Some(ProfileKeyDirection::Inverse) => KeyDirection::Inverse,
            };
            let cipher_name = profile.cipher.ok_or(SetupError::MissingCipher)?.name();
            let cipher = CipherAlg::from_openvpn_name(cipher_name)
                .ok_or(SetupError::UnsupportedAlgorithm(cipher_name))?;
            let digest_name = profile.digest().name();
            let auth = AuthAlg::from_openvpn_name(digest_name)
                .ok_or(SetupError::UnsupportedAlgorithm(digest_name))?;
            P2pMode::StaticKey(Box::new(StaticKeyMode {
                key,
                direction,
                cipher,
                auth,
            }))
        }
    };
    let ifconfig = profile
        .ifconfig
        .as_ref()
        .ok_or(SetupError::MissingIfconfig)?;
    let mut config = P2pConfig::new(
        remote,
        ifconfig.local,
        ifconfig.remote_or_netmask,
        mode,
        wall_clock,
    );
    config.transport = connection.transport.kind();
    // Nothing is pushed in point-to-point mode: routes and DNS servers come from the profile.
    for route in profile.routes.iter().filter_map(Route::ipv4_net) {
        if !config.routes.contains(&route) {
            config.routes.push(route);
        }
    }
    if profile.redirect_gateway.is_some_and(|r| r.ipv4) {
        config
            .routes
            .extend(IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
    }
    config.dns_servers = profile
        .dhcp_options
        .iter()
        .filter_map(|option| match option {
            DhcpOption::Dns(ip) => Some(*ip),
            _ => None,
        })
        .collect();
    // `keepalive n m` is shorthand for `ping n` and `ping-restart m`; explicit ones win.
    let keepalive = profile.keepalive.as_ref();
    config.ping = profile
        .ping
        .or(keepalive.map(|k| k.interval))
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(u64::from(s)));
    config.ping_restart = profile
        .ping_restart
        .or(keepalive.map(|k| k.timeout))
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(u64::from(s)));
    config.explicit_exit_notify = connection.explicit_exit_notify.unwrap_or(0);
    config.mssfix = connection.mssfix;
    if let Some(mtu) = connection.tun_mtu {
        config.tun_mtu = u16::try_from(mtu)
            .ok()
            .filter(|m| *m >= 100)
            .ok_or(SetupError::BadMtu(mtu))?;
    }
    if let Some(window) = &profile.replay_window {
        let mut replay = ReplayConfig {
            window: window.size,
            ..ReplayConfig::default()
        };
        if let Some(seconds) = window.seconds {
            replay.time_backtrack = Duration::from_secs(u64::from(seconds));
        }
        config.replay = replay;
    }
    Ok(config)
}

/// What a TLS profile's file references resolved to: the bytes of `ca`, `cert`, `key`,
/// `extra-certs` and the tls-auth/tls-crypt key, and the `auth-user-pass` credentials.
#[derive(Clone, Copy, Debug, Default)]
pub struct TlsMaterials<'a> {
    /// The PEM text of `ca`.
    pub ca: Option<&'a [u8]>,
    /// The PEM text of `cert`.
    pub cert: Option<&'a [u8]>,
    /// The PEM text of `key`.
    pub key: Option<&'a [u8]>,
    /// The PEM text of `extra-certs`.
    pub extra_certs: Option<&'a [u8]>,
    /// The static key file of `tls-auth` or `tls-crypt`.
    pub tls_wrap_key: Option<&'a [u8]>,
    /// The username and password, when the profile has `auth-user-pass`.
    pub user_pass: Option<&'a crate::config::Credentials>,
}

/// Why a TLS profile cannot configure a session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// A TLS session was asked of a point-to-point profile.
    #[error("the profile is a point-to-point profile, not a TLS client profile")]
    NotTls,
    /// The profile has no connection with this index.
    #[error("the profile has no connection number {0}")]
    NoSuchConnection(usize),
    /// No `ca` bytes were supplied (or the profile has no `ca`).
    #[error("a TLS profile needs 'ca' to check the server's certificate")]
    MissingCa,
    /// `cert` without `key`, or the other way round, or their bytes were not supplied.
    #[error("the profile's 'cert' and 'key' must both be given and readable")]
    MissingCertOrKey,
    /// The certificate material cannot be used.
    #[error(transparent)]
    Credentials(#[from] crate::tls::CredentialError),
    /// `auth-user-pass` without credentials, or credentials without a password.
    #[error(
        "the profile has 'auth-user-pass': a username and a password are needed (the \
         username on the first line of the file, the password on the second)"
    )]
    MissingCredentials,
    /// The tls-auth or tls-crypt key's bytes were not supplied.
    #[error("the key of 'tls-auth'/'tls-crypt' was not supplied")]
    MissingTlsWrapKey,
    /// The tls-auth or tls-crypt key is not an OpenVPN static key.
    #[error("the key of 'tls-auth'/'tls-crypt' is unusable: {0}")]
    BadTlsWrapKey(#[from] KeyFileError),
    /// tls-auth with `auth none`.
    #[error("tls-auth needs an HMAC digest, but 'auth' is none")]
    TlsAuthWithoutDigest,
    /// `tls-crypt-v2` is not implemented.
    #[error("'tls-crypt-v2' is not supported yet")]
    TlsCryptV2,
    /// `pkcs12` is not implemented.
    #[error("'pkcs12' is not supported yet: convert it to 'cert' and 'key' PEM files")]
    Pkcs12,
    /// `tun-mtu` out of range.
    #[error("tun-mtu {0} is outside 100..=65535")]
    BadMtu(u32),
}

/// The configuration of a TLS client session for the connection `connection_index` of
/// `profile`, whose server resolved to `remote`; `materials` holds what the profile's file
/// references resolved to.
///
/// # Errors
///
/// Names what in the profile or the materials prevents the session.
pub fn tls_config(
    profile: &Profile,
    connection_index: usize,
    remote: SocketAddr,
    materials: &TlsMaterials<'_>,
    wall_clock: WallClock,
) -> Result<crate::tls_session::TlsConfig, TlsSetupError> {
    use crate::config::TlsWrap;
    use crate::control::wrap::{ControlWrap, TlsAuth, TlsCrypt};
    use crate::keys::KeySlotIndex;
    use crate::tls::{ClientCredentials, ServerPolicy};

    if profile.mode() != Mode::Tls {
        return Err(TlsSetupError::NotTls);
    }
    let connection = profile
        .connections
        .get(connection_index)
        .ok_or(TlsSetupError::NoSuchConnection(connection_index))?;
    if profile.pkcs12.is_some() {
        return Err(TlsSetupError::Pkcs12);
    }
    let policy =
        ServerPolicy::from_profile(profile, materials.ca.ok_or(TlsSetupError::MissingCa)?)?;
    let client_credentials = match (profile.cert.is_some(), profile.key.is_some()) {
        (false, false) => None,
        (true, true) => {
            let (Some(cert), Some(key)) = (materials.cert, materials.key) else {
                return Err(TlsSetupError::MissingCertOrKey);
            };
            Some(ClientCredentials::from_pem(
                cert,
                key,
                materials.extra_certs,
            )?)
        }
        _ => return Err(TlsSetupError::MissingCertOrKey),
    };
    let user_pass = match &profile.auth_user_pass {
        None => None,
        Some(_) => {
            let credentials = materials
                .user_pass
                .filter(|c| c.password.is_some())
                .ok_or(TlsSetupError::MissingCredentials)?;
            Some(credentials.clone())
        }
    };
    // The raw 256 bytes of a static key file, as the wrappers take them.
    let key2 = |bytes: &[u8]| -> Result<zeroize::Zeroizing<[u8; 256]>, TlsSetupError> {
        let key = StaticKey::parse(bytes)?;
        let mut raw = zeroize::Zeroizing::new([0u8; 256]);
        for (i, index) in [KeySlotIndex::Zero, KeySlotIndex::One]
            .into_iter()
            .enumerate()
        {
            let slot = key.slot(index);
            raw[i * 128..i * 128 + 64].copy_from_slice(slot.cipher_key());
            raw[i * 128 + 64..i * 128 + 128].copy_from_slice(slot.hmac_key());
        }
        Ok(raw)
    };
    let wrap = match &connection.tls_wrap {
        None => ControlWrap::None,
        Some(TlsWrap::Auth { direction, .. }) => {
            let raw = key2(
                materials
                    .tls_wrap_key
                    .ok_or(TlsSetupError::MissingTlsWrapKey)?,
            )?;
            ControlWrap::Auth(
                TlsAuth::new(&raw, *direction, profile.digest())
                    .map_err(|_| TlsSetupError::TlsAuthWithoutDigest)?,
            )
        }
        Some(TlsWrap::Crypt { .. }) => {
            let raw = key2(
                materials
                    .tls_wrap_key
                    .ok_or(TlsSetupError::MissingTlsWrapKey)?,
            )?;
            ControlWrap::Crypt(TlsCrypt::client(&raw))
        }
        Some(TlsWrap::CryptV2 { .. }) => return Err(TlsSetupError::TlsCryptV2),
    };
    let mut config =
        crate::tls_session::TlsConfig::new(profile.clone(), remote, policy, wall_clock);
    config.connection_index = connection_index;
    config.transport = connection.transport.kind();
    config.wrap = wrap;
    config.client_credentials = client_credentials;
    config.user_pass = user_pass;
    if let Some(seconds) = profile.hand_window.filter(|s| *s > 0) {
        config.hand_window = Duration::from_secs(u64::from(seconds));
    }
    if let Some(reneg) = &profile.reneg_sec {
        config.reneg_sec = (reneg.max > 0).then(|| Duration::from_secs(u64::from(reneg.max)));
    }
    let keepalive = profile.keepalive.as_ref();
    config.ping = profile
        .ping
        .or(keepalive.map(|k| k.interval))
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(u64::from(s)));
    config.ping_restart = profile
        .ping_restart
        .or(keepalive.map(|k| k.timeout))
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(u64::from(s)));
    config.explicit_exit_notify = connection.explicit_exit_notify.unwrap_or(0);
    if let Some(mtu) = connection.tun_mtu
        && !(100..=65535).contains(&mtu)
    {
        return Err(TlsSetupError::BadMtu(mtu));
    }
    if let Some(window) = &profile.replay_window {
        let mut replay = ReplayConfig {
            window: window.size,
            ..ReplayConfig::default()
        };
        if let Some(seconds) = window.seconds {
            replay.time_backtrack = Duration::from_secs(u64::from(seconds));
        }
        config.replay = replay;
    }
    Ok(config)
}
