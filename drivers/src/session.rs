//! From a loaded profile to a running tunnel: resolving the server and building the session
//! the profile's mode asks for. Shared by the `erebus` and `erebus-ping` commands, and, through
//! [`Settings`] and [`build_client`], by the replay of a recorded session.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use erebus_client::{Client, ClientConfig};
use erebus_net::tcp::TcpConfig;
use erebus_openvpn::config::{AuthUserPass, Connection, Credentials, Material, Mode, TlsWrap};
use erebus_openvpn::setup::{TlsMaterials, p2p_config, tls_config};
use erebus_openvpn::{P2pSession, TlsSession};
use erebus_proxy::{FrontEnd, Host, ProxyAuth, ProxyConfig};
use erebus_sansio::tunnel::{Failure, Fault, Tunnel};
use erebus_sansio::{Instant, Seed, UnixTime, WallClock};

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
    build_tunnel_at(loaded, connection, remote, seed, clock.wall_clock(), now)
}

/// [`build_tunnel`] with the wall clock given directly rather than read from a running
/// [`Clock`]: what a replay needs.
///
/// # Errors
///
/// What in the profile (or the files it names) prevents the session.
pub fn build_tunnel_at(
    loaded: &LoadedProfile,
    connection: &Connection,
    remote: SocketAddr,
    seed: &Seed,
    wall_clock: WallClock,
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
                wall_clock,
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
            let config = tls_config(profile, index, remote, &materials, wall_clock)
                .map_err(|e| SetupError::Config(e.into()))?;
            let session = TlsSession::new(config, &seed.child("openvpn.session"), now)
                .map_err(|e| SetupError::Config(e.into()))?;
            Ok(Box::new(session))
        }
    }
}

/// What the `erebus` command decided before running a session, beyond the seed and the
/// profile: enough to build the same client again ([`build_client`]), and what `--record`
/// writes into the recording's `settings` file ([`Settings::to_text`]).
///
/// No secret is kept here: the proxy password and the `--auth-user-pass` credentials are only
/// noted as present, and whoever rebuilds the client supplies them again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The Unix time at the monotonic epoch ([`Instant::ZERO`]): the anchor of
    /// [`Clock::wall_clock`], which static-key packet ids and certificate checks read.
    pub wall_clock_at_epoch: UnixTime,
    /// The monotonic time at which the tunnel and the client were built.
    pub built_at: Instant,
    /// The VPN server's address, as resolved when the session started.
    pub remote: SocketAddr,
    /// The local front ends in [`ListenerId`](erebus_sansio::io::ListenerId) order.
    pub listeners: Vec<FrontEnd>,
    /// `--dns` servers, in order.
    pub dns_servers: Vec<IpAddr>,
    /// Whether proxy clients had to authenticate (`--proxy-auth`).
    pub proxy_auth: bool,
    /// Whether the credentials came from `--auth-user-pass` rather than from the profile.
    pub auth_user_pass: bool,
    /// The absolute directory the profile's relative file names are resolved against, when it
    /// can be written on one line of UTF-8.
    pub profile_dir: Option<PathBuf>,
}

/// The version of the `settings` text written by [`Settings::to_text`].
const SETTINGS_VERSION: u32 = 1;

/// Why a `settings` text could not be read. Every variant names the line (1-based) or key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A line that is neither blank, a `#` comment nor `key=value`.
    #[error("settings line {line}: expected key=value, found {text:?}")]
    Syntax {
        /// The line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// A key this version does not know.
    #[error("settings line {line}: unknown key {key:?}")]
    UnknownKey {
        /// The line number.
        line: usize,
        /// The key.
        key: String,
    },
    /// A key that may appear once appears again.
    #[error("settings line {line}: {key} given twice")]
    Duplicate {
        /// The line number.
        line: usize,
        /// The key.
        key: &'static str,
    },
    /// A value that does not parse.
    #[error("settings line {line}: {key}: {reason}")]
    Value {
        /// The line number.
        line: usize,
        /// The key.
        key: &'static str,
        /// What is wrong with the value.
        reason: String,
    },
    /// A required key is absent.
    #[error("settings: {key} is missing")]
    Missing {
        /// The key.
        key: &'static str,
    },
}

impl Settings {
    /// The wall clock the session ran with.
    pub fn wall_clock(&self) -> WallClock {
        WallClock::new(Instant::ZERO, self.wall_clock_at_epoch)
    }

    /// The settings as `key=value` lines, the format [`Settings::parse`] reads.
    ///
    /// Keys: `version`, `wall_clock_at_epoch` (Unix seconds), `built_at_micros`, `remote`
    /// (`ip:port`, IPv6 in brackets), one `listener` per front end (`http`, `socks5` or
    /// `forward HOST:PORT`), one `dns` per server, `proxy_auth` and `auth_user_pass` (`yes` or
    /// `no`), and optionally `profile_dir`.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "# erebus session settings: one key=value per line\n\
             version={SETTINGS_VERSION}\n\
             wall_clock_at_epoch={}\n\
             built_at_micros={}\n\
             remote={}\n",
            self.wall_clock_at_epoch.as_secs(),
            self.built_at.as_micros(),
            self.remote
        );
        for listener in &self.listeners {
            let line = match listener {
                FrontEnd::Http => "listener=http\n".to_owned(),
                FrontEnd::Socks5 => "listener=socks5\n".to_owned(),
                FrontEnd::Forward { host, port } => {
                    format!("listener=forward {}:{port}\n", host.authority())
                }
            };
            text.push_str(&line);
        }
        for dns in &self.dns_servers {
            text.push_str(&format!("dns={dns}\n"));
        }
        let yes_no = |flag: bool| if flag { "yes" } else { "no" };
        text.push_str(&format!("proxy_auth={}\n", yes_no(self.proxy_auth)));
        text.push_str(&format!("auth_user_pass={}\n", yes_no(self.auth_user_pass)));
        if let Some(dir) = self.profile_dir.as_deref().and_then(one_line) {
            text.push_str(&format!("profile_dir={dir}\n"));
        }
        text
    }

    /// Reads what [`Settings::to_text`] wrote. Blank lines and `#` comments are skipped;
    /// unknown keys, repeated single keys and missing required keys are errors.
    ///
    /// # Errors
    ///
    /// [`SettingsError`] naming the line or the key.
    pub fn parse(text: &str) -> Result<Self, SettingsError> {
        let mut version = None;
        let mut wall = None;
        let mut built_at = None;
        let mut remote = None;
        let mut proxy_auth = None;
        let mut auth_user_pass = None;
        let mut profile_dir = None;
        let mut listeners = Vec::new();
        let mut dns_servers = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let Some((key, value)) = trimmed.split_once('=') else {
                return Err(SettingsError::Syntax {
                    line,
                    text: raw.to_owned(),
                });
            };
            let value = value.trim();
            match key.trim() {
                "version" => {
                    let found: u32 = parse_value(line, "version", value)?;
                    if found != SETTINGS_VERSION {
                        return Err(SettingsError::Value {
                            line,
                            key: "version",
                            reason: format!(
                                "version {found} is not supported (this erebus reads version \
                                 {SETTINGS_VERSION})"
                            ),
                        });
                    }
                    set_once(&mut version, line, "version", found)?;
                }
                "wall_clock_at_epoch" => {
                    let secs = parse_value(line, "wall_clock_at_epoch", value)?;
                    set_once(
                        &mut wall,
                        line,
                        "wall_clock_at_epoch",
                        UnixTime::from_secs(secs),
                    )?;
                }
                "built_at_micros" => {
                    let micros = parse_value(line, "built_at_micros", value)?;
                    set_once(
                        &mut built_at,
                        line,
                        "built_at_micros",
                        Instant::from_micros(micros),
                    )?;
                }
                "remote" => {
                    let addr = parse_value(line, "remote", value)?;
                    set_once(&mut remote, line, "remote", addr)?;
                }
                "listener" => listeners.push(parse_listener(line, value)?),
                "dns" => dns_servers.push(parse_value(line, "dns", value)?),
                "proxy_auth" => {
                    let flag = parse_flag(line, "proxy_auth", value)?;
                    set_once(&mut proxy_auth, line, "proxy_auth", flag)?;
                }
                "auth_user_pass" => {
                    let flag = parse_flag(line, "auth_user_pass", value)?;
                    set_once(&mut auth_user_pass, line, "auth_user_pass", flag)?;
                }
                "profile_dir" => {
                    if value.is_empty() {
                        return Err(SettingsError::Value {
                            line,
                            key: "profile_dir",
                            reason: "empty path".into(),
                        });
                    }
                    set_once(&mut profile_dir, line, "profile_dir", PathBuf::from(value))?;
                }
                other => {
                    return Err(SettingsError::UnknownKey {
                        line,
                        key: other.to_owned(),
                    });
                }
            }
        }
        let missing = |key| SettingsError::Missing { key };
        version.ok_or(missing("version"))?;
        Ok(Self {
            wall_clock_at_epoch: wall.ok_or(missing("wall_clock_at_epoch"))?,
            built_at: built_at.ok_or(missing("built_at_micros"))?,
            remote: remote.ok_or(missing("remote"))?,
            listeners,
            dns_servers,
            proxy_auth: proxy_auth.ok_or(missing("proxy_auth"))?,
            auth_user_pass: auth_user_pass.ok_or(missing("auth_user_pass"))?,
            profile_dir,
        })
    }
}

/// The path as one line of UTF-8, or `None` when it cannot be written that way.
fn one_line(path: &Path) -> Option<&str> {
    path.to_str()
        .filter(|text| !text.is_empty() && !text.contains(['\n', '\r']) && text.trim() == *text)
}

fn set_once<T>(
    slot: &mut Option<T>,
    line: usize,
    key: &'static str,
    value: T,
) -> Result<(), SettingsError> {
    if slot.is_some() {
        return Err(SettingsError::Duplicate { line, key });
    }
    *slot = Some(value);
    Ok(())
}

fn parse_value<T: std::str::FromStr>(
    line: usize,
    key: &'static str,
    value: &str,
) -> Result<T, SettingsError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| SettingsError::Value {
        line,
        key,
        reason: format!("{value:?}: {e}"),
    })
}

fn parse_flag(line: usize, key: &'static str, value: &str) -> Result<bool, SettingsError> {
    match value {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => Err(SettingsError::Value {
            line,
            key,
            reason: format!("expected yes or no, found {other:?}"),
        }),
    }
}

fn parse_listener(line: usize, value: &str) -> Result<FrontEnd, SettingsError> {
    let error = |reason: String| SettingsError::Value {
        line,
        key: "listener",
        reason,
    };
    match value.split_once(' ') {
        None if value == "http" => Ok(FrontEnd::Http),
        None if value == "socks5" => Ok(FrontEnd::Socks5),
        Some(("forward", target)) => {
            let (host, port) = target
                .trim()
                .rsplit_once(':')
                .ok_or_else(|| error(format!("forward {target:?}: expected HOST:PORT")))?;
            if host.contains(':') && !host.starts_with('[') {
                return Err(error(format!(
                    "forward host {host:?}: an IPv6 address must be in brackets"
                )));
            }
            let host =
                Host::parse(host).map_err(|e| error(format!("forward host {host:?}: {e}")))?;
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|port| *port != 0)
                .ok_or_else(|| error(format!("forward port {port:?}: expected 1 to 65535")))?;
            Ok(FrontEnd::Forward { host, port })
        }
        _ => Err(error(format!(
            "expected http, socks5 or forward HOST:PORT, found {value:?}"
        ))),
    }
}

/// Builds the client a session runs: the tunnel the profile describes, talking to
/// `settings.remote` and anchored on `settings`' wall clock, behind the listed front ends.
///
/// The `erebus` command and [`crate::replay`] both build their client here, so a recorded
/// session is rebuilt exactly as it ran. `proxy_auth` is the secret `settings.proxy_auth`
/// only notes; credentials from `--auth-user-pass` must already be in
/// `loaded.profile.auth_user_pass`.
///
/// # Errors
///
/// What in the profile (or the files it names) prevents the session; a `proxy_auth` that
/// disagrees with `settings.proxy_auth`.
pub fn build_client(
    loaded: &LoadedProfile,
    settings: &Settings,
    seed: &Seed,
    proxy_auth: Option<ProxyAuth>,
) -> Result<Client<AnyTunnel>, SetupError> {
    if proxy_auth.is_some() != settings.proxy_auth {
        return Err(SetupError::Config(anyhow::anyhow!(
            "the settings say proxy authentication is {}, but credentials were {}",
            if settings.proxy_auth { "on" } else { "off" },
            if proxy_auth.is_some() {
                "given"
            } else {
                "not given"
            }
        )));
    }
    let connection = first_connection(loaded)?;
    let tunnel = build_tunnel_at(
        loaded,
        connection,
        settings.remote,
        seed,
        settings.wall_clock(),
        settings.built_at,
    )?;
    let config = ClientConfig {
        listeners: settings.listeners.clone(),
        proxy: ProxyConfig {
            auth: proxy_auth,
            ..ProxyConfig::default()
        },
        tcp: TcpConfig::default(),
        dns_servers: settings.dns_servers.clone(),
    };
    Ok(Client::new(
        tunnel,
        config,
        &seed.child("client"),
        settings.built_at,
    ))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    fn sample() -> Settings {
        Settings {
            wall_clock_at_epoch: UnixTime::from_secs(1_700_000_123),
            built_at: Instant::from_micros(4_321),
            remote: "[2001:db8::1]:1194".parse().unwrap(),
            listeners: vec![
                FrontEnd::Http,
                FrontEnd::Socks5,
                FrontEnd::Forward {
                    host: Host::Ip(IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 5))),
                    port: 22,
                },
                FrontEnd::Forward {
                    host: Host::Name("intranet.example".into()),
                    port: 443,
                },
            ],
            dns_servers: vec!["10.8.0.1".parse().unwrap(), "fd00::53".parse().unwrap()],
            proxy_auth: true,
            auth_user_pass: false,
            profile_dir: Some(PathBuf::from("/etc/erebus/profiles")),
        }
    }

    #[test]
    fn text_round_trips() {
        let settings = sample();
        let text = settings.to_text();
        assert!(text.contains("\nlistener=forward [fd00::5]:22\n"), "{text}");
        assert!(text.contains("\nremote=[2001:db8::1]:1194\n"), "{text}");
        assert_eq!(Settings::parse(&text).unwrap(), settings);
        let bare = Settings {
            listeners: Vec::new(),
            dns_servers: Vec::new(),
            profile_dir: None,
            proxy_auth: false,
            ..sample()
        };
        assert_eq!(Settings::parse(&bare.to_text()).unwrap(), bare);
    }

    #[test]
    fn a_directory_that_is_not_one_line_is_left_out() {
        let settings = Settings {
            profile_dir: Some(PathBuf::from("/tmp/two\nlines")),
            ..sample()
        };
        let parsed = Settings::parse(&settings.to_text()).unwrap();
        assert_eq!(parsed.profile_dir, None);
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let good = sample().to_text();
        let with = |extra: &str| Settings::parse(&format!("{good}{extra}\n")).unwrap_err();
        let lines = good.lines().count();
        assert_eq!(
            with("no equals sign"),
            SettingsError::Syntax {
                line: lines + 1,
                text: "no equals sign".into()
            }
        );
        assert_eq!(
            with("colour=blue"),
            SettingsError::UnknownKey {
                line: lines + 1,
                key: "colour".into()
            }
        );
        assert_eq!(
            with("remote=192.0.2.1:1194"),
            SettingsError::Duplicate {
                line: lines + 1,
                key: "remote"
            }
        );
        for bad in [
            "dns=10.8.0",
            "listener=ftp",
            "listener=forward 10.8.0.1",
            "listener=forward 10.8.0.1:0",
            "listener=forward bad host:80",
            "listener=forward fd00::1:80",
        ] {
            assert!(
                matches!(with(bad), SettingsError::Value { line, key: "listener" | "dns", .. } if line == lines + 1),
                "{bad}: {:?}",
                with(bad)
            );
        }
        let err = Settings::parse(&good.replace("proxy_auth=yes", "proxy_auth=maybe")).unwrap_err();
        assert!(err.to_string().contains("expected yes or no"), "{err}");
        let err = Settings::parse(&good.replace("version=1", "version=9")).unwrap_err();
        assert!(
            err.to_string().contains("version 9 is not supported"),
            "{err}"
        );
        let without_remote: String = good
            .lines()
            .filter(|l| !l.starts_with("remote="))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            Settings::parse(&without_remote).unwrap_err(),
            SettingsError::Missing { key: "remote" }
        );
        assert_eq!(
            Settings::parse("").unwrap_err(),
            SettingsError::Missing { key: "version" }
        );
    }

    /// Arbitrary text (mutations of a valid file and random bytes) gives a value or an error,
    /// never a panic.
    #[test]
    fn arbitrary_text_never_panics() {
        let good = sample().to_text().into_bytes();
        let mut rng = Seed::from_byte(42).rng();
        for _ in 0..2_000 {
            let mut bytes = good.clone();
            for _ in 0..=rng.below(8) {
                let at = rng.below(bytes.len() as u32) as usize;
                match rng.below(3) {
                    0 => bytes[at] = rng.below(128) as u8,
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, b"=: []\n#x9"[rng.below(9) as usize]),
                }
            }
            let _ = Settings::parse(&String::from_utf8_lossy(&bytes));
            let random: Vec<u8> = (0..rng.below(200)).map(|_| rng.below(256) as u8).collect();
            let _ = Settings::parse(&String::from_utf8_lossy(&random));
        }
    }
}
