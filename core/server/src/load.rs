//! From an OpenVPN server configuration's bytes to a [`ServerConfig`]: what `erebus serve
//! --config server.conf` runs.
//!
//! The configuration is read as stock OpenVPN reads it (the subset a rootless exit can
//! honour; everything else is refused with its line and the reason, or warned about once).
//! Files it names are read through the caller's [`FileReader`]; nothing here touches the file
//! system.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use erebus_net::tcp::TcpConfig;
use erebus_openvpn::config::server::{
    AuthVerify, ServerMode, ServerProfile, ServerTlsWrap, StaticKeyPeer, VerifyClientCert,
};
use erebus_openvpn::config::{Transport, Warning};
use erebus_openvpn::data::DataCipher;
use erebus_openvpn::data::{AuthAlg, CipherAlg};
use erebus_openvpn::keys::KeyDirection;
use erebus_openvpn::p2p::{P2pConfig, P2pMode, StaticKeyMode};
use erebus_openvpn::server::{ServerParams, ServerSetup, WrapKey};
use erebus_sansio::WallClock;
use erebus_sansio::serve::ListenSpec;
use erebus_sansio::tunnel::TransportKind;
use zeroize::Zeroizing;

use crate::{AddressPool, AllowList, CredentialCheck, ExitConfig, Peers, ServerConfig, UserTable};

/// Reads a file the configuration names, by the path as written there.
pub type FileReader<'a> = dyn FnMut(&Path) -> Result<Zeroizing<Vec<u8>>, String> + 'a;

/// What the command line adds to the configuration.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Listen here instead of the configuration's `local`/`port` (`--listen`).
    pub listen: Option<SocketAddr>,
    /// What the exit lets clients reach (`--allow`); nothing when empty.
    pub allow: AllowList,
    /// Usernames and passwords (`--users FILE`).
    pub users: Option<UserTable>,
    /// Wall time, for certificate validity.
    pub wall_clock: WallClock,
}

/// A loaded configuration.
#[derive(Debug)]
pub struct Loaded {
    /// What the [`crate::Server`] needs.
    pub config: ServerConfig,
    /// What was ignored and why, one line each.
    pub warnings: Vec<String>,
    /// `auth-user-pass-verify`: the command the driver runs to check credentials (the
    /// machine asks with [`erebus_sansio::serve::ServeOutput::CheckCredentials`]).
    pub auth_command: Option<AuthCommand>,
}

/// A credentials-checking command, as OpenVPN runs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthCommand {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// `via-file`: the username and password are written to a temporary file whose path is
    /// the last argument; `via-env`: they are in the `username` and `password` environment
    /// variables.
    pub via_file: bool,
}

/// Why a configuration cannot be served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct LoadError {
    /// The configuration's name, for messages.
    pub source_name: String,
    /// What is wrong, with the line where there is one.
    pub message: String,
}

/// Loads an OpenVPN server configuration.
///
/// # Errors
///
/// A [`LoadError`] naming the line and the reason: an unsupported or malformed directive, a
/// file that cannot be read, certificates or keys that cannot be used, no way to
/// authenticate clients.
pub fn load(
    bytes: &[u8],
    source_name: &str,
    read_file: &mut FileReader<'_>,
    options: ServeOptions,
) -> Result<Loaded, LoadError> {
    let fail = |message: String| LoadError {
        source_name: source_name.to_owned(),
        message,
    };
    let (profile, warnings) =
        ServerProfile::parse(bytes, read_file).map_err(|e| fail(e.to_string()))?;
    if let ServerMode::StaticKey(peer) = &profile.mode {
        let config = static_key(&profile, peer, options).map_err(fail)?;
        return Ok(Loaded {
            config,
            warnings: warnings.iter().map(describe_warning).collect(),
            auth_command: None,
        });
    }
    let credentials = match (&options.users, &profile.auth_verify) {
        (Some(_), Some(_)) => {
            return Err(fail(
                "both --users and auth-user-pass-verify check passwords: use one".to_owned(),
            ));
        }
        (Some(users), None) => CredentialCheck::Users(users.clone()),
        (None, Some(_)) => CredentialCheck::Driver,
        (None, None) => {
            if let Some(error) = profile.missing_client_auth() {
                return Err(fail(format!(
                    "{error} (or give erebus serve a users file with --users)"
                )));
            }
            CredentialCheck::None
        }
    };
    let require_user_pass = !matches!(credentials, CredentialCheck::None);
    let client_ca_pem = match profile.verify_client_cert {
        VerifyClientCert::None => None,
        VerifyClientCert::Require => profile.ca.clone(),
        VerifyClientCert::Optional => {
            return Err(fail(
                "verify-client-cert optional is not supported: use require or none".to_owned(),
            ));
        }
    };
    let wrap = match &profile.tls_wrap {
        None => WrapKey::None,
        Some(ServerTlsWrap::Crypt { key }) => WrapKey::TlsCrypt {
            key: key.to_bytes(),
        },
        Some(ServerTlsWrap::Auth { key, direction }) => WrapKey::TlsAuth {
            key: key.to_bytes(),
            direction: match direction {
                KeyDirection::Bidirectional => None,
                KeyDirection::Normal => Some(0),
                KeyDirection::Inverse => Some(1),
            },
            digest: profile.auth,
        },
    };
    let keepalive = profile.keepalive.map(|k| {
        (
            Duration::from_secs(u64::from(k.interval)),
            Duration::from_secs(u64::from(k.timeout)),
        )
    });
    // CBC ciphers take their HMAC from `auth`; a name the data channel cannot run is refused.
    let mut data_ciphers = Vec::new();
    for cipher in &profile.data_ciphers {
        match DataCipher::from_openvpn_names(cipher.name(), profile.auth.name()) {
            Some(cipher) => data_ciphers.push(cipher),
            None => {
                return Err(fail(format!(
                    "data-ciphers: {} with auth {} is not supported",
                    cipher.name(),
                    profile.auth.name()
                )));
            }
        }
    }
    let params = ServerParams {
        cert_chain_pem: profile.cert.clone(),
        key_pem: Zeroizing::new(profile.key.expose().to_vec()),
        client_ca_pem,
        require_user_pass,
        wrap,
        data_ciphers,
        push: profile.pushes.clone(),
        keepalive,
        reneg: profile
            .reneg_sec
            .and_then(|r| (r.max > 0).then(|| Duration::from_secs(u64::from(r.max)))),
        hand_window: Duration::from_secs(u64::from(profile.hand_window)),
        tun_mtu: profile.tun_mtu.unwrap_or(1500),
    };
    let setup = ServerSetup::new(params).map_err(|e| fail(e.to_string()))?;
    let pool = AddressPool::new(profile.pool.network, profile.pool.netmask)
        .map_err(|e| fail(format!("server: {e}")))?;
    let listen = listen_spec(&profile, &options);
    // A pushed DNS server inside the VPN's own subnet can only be the server: answer it from
    // the host's resolver. Others are ordinary destinations for the allow-list.
    let subnet = profile.pool.net();
    let dns_relay = profile
        .pushes
        .iter()
        .filter_map(|push| pushed_dns(push))
        .filter(|ip| subnet.contains(IpAddr::V4(*ip)))
        .collect();
    let auth_command = profile
        .auth_verify
        .as_ref()
        .map(|AuthVerify { command, method }| AuthCommand {
            argv: command.clone(),
            via_file: matches!(
                method,
                erebus_openvpn::config::server::AuthVerifyMethod::ViaFile
            ),
        });
    let config = ServerConfig {
        listen,
        peers: Peers::Tls {
            setup: Arc::new(setup),
            pool,
        },
        credentials,
        exit: ExitConfig {
            allow: options.allow,
            dns_relay,
            ..ExitConfig::default()
        },
        tcp: TcpConfig::default(),
        max_clients: profile.max_clients.map_or(1024, |n| n as usize),
        mtu: profile.tun_mtu.unwrap_or(1500),
        wall_clock: options.wall_clock,
    };
    Ok(Loaded {
        config,
        warnings: warnings.iter().map(describe_warning).collect(),
        auth_command,
    })
}

/// Where to listen: `--listen`, or the configuration's `local` and `port`.
fn listen_spec(profile: &ServerProfile, options: &ServeOptions) -> ListenSpec {
    ListenSpec {
        addr: options.listen.unwrap_or_else(|| {
            SocketAddr::new(
                IpAddr::V4(profile.local.unwrap_or(Ipv4Addr::UNSPECIFIED)),
                profile.port,
            )
        }),
        kind: match profile.transport {
            Transport::Udp => TransportKind::Udp,
            Transport::Tcp => TransportKind::TcpLengthPrefixed,
        },
    }
}

/// The configuration of a static-key point-to-point server: one peer, no TLS, no
/// credentials. The server's own inner address answers DNS from the host's resolver, as a
/// TLS server's pushed DNS address does.
fn static_key(
    profile: &ServerProfile,
    peer: &StaticKeyPeer,
    options: ServeOptions,
) -> Result<ServerConfig, String> {
    if options.users.is_some() {
        return Err(
            "--users has nothing to check in static-key mode: the peer sends no username"
                .to_owned(),
        );
    }
    let cipher = CipherAlg::from_openvpn_name(peer.cipher.name())
        .ok_or_else(|| format!("cipher {} is not supported in static-key mode", peer.cipher))?;
    let auth = AuthAlg::from_openvpn_name(profile.auth.name())
        .ok_or_else(|| format!("auth {} is not supported", profile.auth.name()))?;
    let listen = listen_spec(profile, &options);
    let mode = P2pMode::StaticKey(Box::new(StaticKeyMode {
        key: peer.key.clone(),
        direction: peer.direction,
        cipher,
        auth,
    }));
    let mtu = profile.tun_mtu.unwrap_or(1500);
    let mut p2p = P2pConfig::new(
        listen.addr,
        peer.local,
        peer.remote,
        mode,
        options.wall_clock,
    );
    p2p.transport = listen.kind;
    p2p.responder = true;
    let seconds = |s: Option<u32>| {
        s.filter(|s| *s > 0)
            .map(|s| Duration::from_secs(u64::from(s)))
    };
    p2p.ping = seconds(peer.ping);
    p2p.ping_restart = seconds(peer.ping_restart);
    p2p.explicit_exit_notify = profile.explicit_exit_notify.unwrap_or(0);
    p2p.tun_mtu = mtu;
    Ok(ServerConfig {
        listen,
        peers: Peers::StaticKey(Box::new(p2p)),
        credentials: CredentialCheck::None,
        exit: ExitConfig {
            allow: options.allow,
            dns_relay: vec![peer.local],
            ..ExitConfig::default()
        },
        tcp: TcpConfig::default(),
        max_clients: 1,
        mtu,
        wall_clock: options.wall_clock,
    })
}

fn describe_warning(warning: &Warning) -> String {
    format!(
        "line {}: {}: {}",
        warning.line, warning.directive, warning.message
    )
}

/// The address of a pushed `dhcp-option DNS a.b.c.d`.
fn pushed_dns(push: &str) -> Option<Ipv4Addr> {
    let mut words = push.split_whitespace();
    (words.next()? == "dhcp-option" && words.next()?.eq_ignore_ascii_case("DNS"))
        .then(|| words.next()?.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_static_key_configuration_loads_one_peer() {
        const KEY: &str = include_str!("../../../testvectors/captures/static-key/static.key");
        let text = "dev tun\nproto tcp-server\nport 1195\nifconfig 10.9.0.1 10.9.0.2\n\
                    secret static.key 0\ncipher AES-256-CBC\nauth SHA256\nkeepalive 10 60\n";
        let mut read = |path: &Path| -> Result<Zeroizing<Vec<u8>>, String> {
            (path == Path::new("static.key"))
                .then(|| Zeroizing::new(KEY.as_bytes().to_vec()))
                .ok_or_else(|| "no such file".to_owned())
        };
        let options = ServeOptions {
            listen: None,
            allow: AllowList::loopback(),
            users: None,
            wall_clock: WallClock::new(
                erebus_sansio::Instant::ZERO,
                erebus_sansio::UnixTime::from_secs(1_800_000_000),
            ),
        };
        let loaded = load(text.as_bytes(), "p2p.conf", &mut read, options.clone()).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert!(loaded.auth_command.is_none());
        let config = loaded.config;
        assert_eq!(config.listen.kind, TransportKind::TcpLengthPrefixed);
        assert_eq!(config.listen.addr.port(), 1195);
        assert_eq!(config.max_clients, 1);
        assert_eq!(config.exit.dns_relay, [Ipv4Addr::new(10, 9, 0, 1)]);
        let Peers::StaticKey(p2p) = config.peers else {
            panic!("not static-key");
        };
        assert_eq!(p2p.local_ip, Ipv4Addr::new(10, 9, 0, 1));
        assert_eq!(p2p.remote_ip, Ipv4Addr::new(10, 9, 0, 2));
        assert!(p2p.responder);
        assert_eq!(p2p.transport, TransportKind::TcpLengthPrefixed);
        assert_eq!(p2p.ping, Some(Duration::from_secs(10)));
        assert_eq!(p2p.ping_restart, Some(Duration::from_secs(60)));

        let users = ServeOptions {
            users: Some(UserTable::default()),
            ..options
        };
        let error = load(text.as_bytes(), "p2p.conf", &mut read, users).unwrap_err();
        assert!(error.message.contains("--users"), "{error}");
    }

    #[test]
    fn pushed_dns_servers_are_found() {
        assert_eq!(
            pushed_dns("dhcp-option DNS 10.8.0.1"),
            Some(Ipv4Addr::new(10, 8, 0, 1))
        );
        assert_eq!(pushed_dns("dhcp-option DOMAIN corp"), None);
        assert_eq!(pushed_dns("route 10.0.0.0 255.0.0.0"), None);
        assert_eq!(pushed_dns("dhcp-option DNS fd00::1"), None);
    }
}
