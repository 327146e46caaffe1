//! From a parsed profile to a session: the protocol knowledge of what each directive means for
//! the session it configures. File references in the profile are resolved by the caller, which
//! passes their bytes.

use std::net::SocketAddr;
use std::time::Duration;

use erebus_sansio::WallClock;

use crate::config::{Connection, KeyDirection as ProfileKeyDirection, Mode, Profile};
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
