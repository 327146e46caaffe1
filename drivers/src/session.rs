//! From a configuration file to a running client: reading the file and the files it names,
//! and building the client a session runs. Shared by the `erebus` and `erebus-ping` commands,
//! and, through [`Settings`] and [`build_client`], by the replay of a recorded session.
//!
//! Nothing here knows which VPN protocol a configuration speaks: [`erebus_session::load`]
//! recognises it and builds the supervised tunnel.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use erebus_client::{Client, ClientConfig, Limits};
use erebus_net::tcp::TcpConfig;
use erebus_proxy::{FrontEnd, Host, ProxyAuth, ProxyConfig};
use erebus_sansio::{Instant, Seed, UnixTime, WallClock};
use erebus_session::{Overrides, Plan, SessionTunnel};
use zeroize::Zeroizing;

/// The client every erebus program runs: the supervised tunnel behind the proxies.
pub type SessionClient = Client<SessionTunnel>;

/// Why a session could not be set up: always something in the configuration or the files it
/// names, never the network (the server is only contacted once the session runs).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

/// A configuration file as read from disk.
pub struct ConfigFile {
    /// Its path, for messages.
    pub path: PathBuf,
    /// The directory its relative file names are resolved against.
    pub dir: PathBuf,
    /// Its bytes (for `--record`).
    pub bytes: Zeroizing<Vec<u8>>,
    /// The connection to use, for a swanctl.conf with several (`--connection`).
    pub connection: Option<String>,
}

impl std::fmt::Debug for ConfigFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigFile")
            .field("path", &self.path)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl ConfigFile {
    /// Reads the configuration at `path`.
    ///
    /// # Errors
    ///
    /// The path and what the operating system said.
    pub fn read(path: &Path) -> Result<Self, SetupError> {
        let bytes = std::fs::read(path)
            .map(Zeroizing::new)
            .map_err(|e| SetupError(format!("{}: {e}", path.display())))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(Self {
            path: path.into(),
            dir,
            bytes,
            connection: None,
        })
    }

    /// The configuration with bytes recorded earlier, whose files are found in `dir`.
    pub fn recorded(bytes: Zeroizing<Vec<u8>>, dir: PathBuf, path: PathBuf) -> Self {
        Self {
            path,
            dir,
            bytes,
            connection: None,
        }
    }

    /// Parses the configuration and reads every file it names, relative to its directory.
    /// `auth_user_pass` holds the bytes of a credentials file given on the command line.
    ///
    /// # Errors
    ///
    /// What in the configuration, or in a file it names, cannot work, with the file and the
    /// line.
    pub fn plan(
        &self,
        auth_user_pass: Option<Zeroizing<Vec<u8>>>,
        wall_clock: WallClock,
    ) -> Result<Plan, SetupError> {
        let dir = self.dir.clone();
        let mut files = move |path: &Path| read_relative(&dir, path);
        erebus_session::load(
            &self.bytes,
            &self.path.display().to_string(),
            &mut files,
            Overrides {
                auth_user_pass,
                connection: self.connection.clone(),
                x509ca: self.x509ca(),
            },
            wall_clock,
        )
        .map_err(|e| SetupError(e.to_string()))
    }
}

impl ConfigFile {
    /// The certificates in the `x509ca/` directory beside a swanctl.conf, which swanctl trusts
    /// for every connection; nothing for other formats or when there is no such directory.
    fn x509ca(&self) -> Vec<Zeroizing<Vec<u8>>> {
        if erebus_session::Format::detect(&self.bytes) != erebus_session::Format::Swanctl {
            return Vec::new();
        }
        let Ok(entries) = std::fs::read_dir(self.dir.join("x509ca")) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.is_file())
            .collect();
        paths.sort();
        paths
            .iter()
            .filter_map(|path| std::fs::read(path).ok().map(Zeroizing::new))
            .collect()
    }
}

/// Reads `path` as a configuration in `dir` names it: relative paths are relative to `dir`.
///
/// # Errors
///
/// The full path and what the operating system said.
pub fn read_relative(dir: &Path, path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    let full = dir.join(path);
    std::fs::read(&full)
        .map(Zeroizing::new)
        .map_err(|e| format!("{}: {e}", full.display()))
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
    /// [`Clock::wall_clock`](crate::Clock::wall_clock), which static-key packet ids and certificate checks read.
    pub wall_clock_at_epoch: UnixTime,
    /// The monotonic time at which the tunnel and the client were built.
    pub built_at: Instant,
    /// The local front ends in [`ListenerId`](erebus_sansio::io::ListenerId) order.
    pub listeners: Vec<FrontEnd>,
    /// `--dns` servers, in order.
    pub dns_servers: Vec<IpAddr>,
    /// Whether proxy clients had to authenticate (`--proxy-auth`).
    pub proxy_auth: bool,
    /// Whether the credentials came from `--auth-user-pass` rather than from the profile.
    pub auth_user_pass: bool,
    /// How long a proxied connection waits for the tunnel (`--tunnel-wait`).
    pub tunnel_wait: Duration,
    /// The absolute directory the profile's relative file names are resolved against, when it
    /// can be written on one line of UTF-8.
    pub profile_dir: Option<PathBuf>,
    /// The swanctl.conf connection chosen with `--connection`.
    pub connection: Option<String>,
    /// How much the client serves and buffers at once.
    pub capacity: Capacity,
}

/// How much a client serves and buffers at once: `--max-connections`, `--max-dns-queries`,
/// `--tcp-buffer` and `--receive-memory`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Local connections and name lookups at once.
    pub limits: Limits,
    /// The largest receive and send buffer of each proxied connection's TCP socket, in bytes.
    pub tcp_buffer: usize,
    /// The receive memory of all proxied connections together, in bytes.
    pub receive_memory: usize,
}

impl Capacity {
    /// The smallest `tcp_buffer` accepted: below a few segments a connection crawls.
    pub const MIN_TCP_BUFFER: usize = 16 << 10;
    /// The largest `tcp_buffer` accepted: the most a scaled TCP window can say is 1 GiB.
    pub const MAX_TCP_BUFFER: usize = 1 << 30;
    /// The smallest `receive_memory` accepted.
    pub const MIN_RECEIVE_MEMORY: usize = 64 << 10;

    /// Checks the values, naming the option and the bound a wrong one breaks.
    ///
    /// # Errors
    ///
    /// A sentence naming the option.
    pub fn check(&self) -> Result<(), String> {
        if self.limits.connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        if self.limits.dns_lookups == 0 {
            return Err("--max-dns-queries must be at least 1".into());
        }
        if !(Self::MIN_TCP_BUFFER..=Self::MAX_TCP_BUFFER).contains(&self.tcp_buffer) {
            return Err(format!(
                "--tcp-buffer must be between {} and {} bytes, not {}",
                Self::MIN_TCP_BUFFER,
                Self::MAX_TCP_BUFFER,
                self.tcp_buffer
            ));
        }
        if self.receive_memory < Self::MIN_RECEIVE_MEMORY {
            return Err(format!(
                "--receive-memory must be at least {} bytes, not {}",
                Self::MIN_RECEIVE_MEMORY,
                self.receive_memory
            ));
        }
        Ok(())
    }

    /// The TCP tunables these values give.
    pub fn tcp_config(&self) -> TcpConfig {
        TcpConfig {
            rx_buffer_size: self.tcp_buffer,
            tx_buffer_size: self.tcp_buffer,
            receive_memory: self.receive_memory,
            ..TcpConfig::default()
        }
    }
}

impl Default for Capacity {
    fn default() -> Self {
        let tcp = TcpConfig::default();
        Self {
            limits: Limits::default(),
            tcp_buffer: tcp.rx_buffer_size,
            receive_memory: tcp.receive_memory,
        }
    }
}

/// The version of the `settings` text written by [`Settings::to_text`].
const SETTINGS_VERSION: u32 = 2;

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
    /// The capacity keys hold values no client can run with.
    #[error("settings: {0}")]
    Capacity(String),
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
    /// Keys: `version`, `wall_clock_at_epoch` (Unix seconds), `built_at_micros`, one
    /// `listener` per front end (`http`, `socks5` or `forward HOST:PORT`), one `dns` per
    /// server, `proxy_auth` and `auth_user_pass` (`yes` or `no`), `tunnel_wait_millis`, the
    /// [`Capacity`] (`max_connections`, `max_dns_queries`, `tcp_buffer`, `receive_memory`;
    /// defaults when absent, as in older recordings), and optionally `profile_dir` and
    /// `connection`. The server's address is not here: it is an input of the
    /// journal, since every attempt resolves it again.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "# erebus session settings: one key=value per line\n\
             version={SETTINGS_VERSION}\n\
             wall_clock_at_epoch={}\n\
             built_at_micros={}\n\
             tunnel_wait_millis={}\n\
             max_connections={}\n\
             max_dns_queries={}\n\
             tcp_buffer={}\n\
             receive_memory={}\n",
            self.wall_clock_at_epoch.as_secs(),
            self.built_at.as_micros(),
            self.tunnel_wait.as_millis(),
            self.capacity.limits.connections,
            self.capacity.limits.dns_lookups,
            self.capacity.tcp_buffer,
            self.capacity.receive_memory,
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
        if let Some(name) = self.connection.as_deref().filter(|n| !n.contains('\n')) {
            text.push_str(&format!("connection={name}\n"));
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
        let mut tunnel_wait = None;
        let mut proxy_auth = None;
        let mut auth_user_pass = None;
        let mut profile_dir = None;
        let mut connection = None;
        let mut max_connections = None;
        let mut max_dns_queries = None;
        let mut tcp_buffer = None;
        let mut receive_memory = None;
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
                "tunnel_wait_millis" => {
                    let millis = parse_value(line, "tunnel_wait_millis", value)?;
                    set_once(
                        &mut tunnel_wait,
                        line,
                        "tunnel_wait_millis",
                        Duration::from_millis(millis),
                    )?;
                }
                "max_connections" => {
                    let count = parse_value(line, "max_connections", value)?;
                    set_once(&mut max_connections, line, "max_connections", count)?;
                }
                "max_dns_queries" => {
                    let count = parse_value(line, "max_dns_queries", value)?;
                    set_once(&mut max_dns_queries, line, "max_dns_queries", count)?;
                }
                "tcp_buffer" => {
                    let bytes = parse_value(line, "tcp_buffer", value)?;
                    set_once(&mut tcp_buffer, line, "tcp_buffer", bytes)?;
                }
                "receive_memory" => {
                    let bytes = parse_value(line, "receive_memory", value)?;
                    set_once(&mut receive_memory, line, "receive_memory", bytes)?;
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
                "connection" => {
                    set_once(&mut connection, line, "connection", value.to_owned())?;
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
        let default = Capacity::default();
        let capacity = Capacity {
            limits: Limits {
                connections: max_connections.unwrap_or(default.limits.connections),
                dns_lookups: max_dns_queries.unwrap_or(default.limits.dns_lookups),
            },
            tcp_buffer: tcp_buffer.unwrap_or(default.tcp_buffer),
            receive_memory: receive_memory.unwrap_or(default.receive_memory),
        };
        capacity.check().map_err(SettingsError::Capacity)?;
        Ok(Self {
            wall_clock_at_epoch: wall.ok_or(missing("wall_clock_at_epoch"))?,
            built_at: built_at.ok_or(missing("built_at_micros"))?,
            tunnel_wait: tunnel_wait.ok_or(missing("tunnel_wait_millis"))?,
            listeners,
            dns_servers,
            proxy_auth: proxy_auth.ok_or(missing("proxy_auth"))?,
            auth_user_pass: auth_user_pass.ok_or(missing("auth_user_pass"))?,
            profile_dir,
            connection,
            capacity,
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

/// Builds the client a session runs: the supervised tunnel `plan` describes, anchored on
/// `settings`' wall clock, behind the listed front ends.
///
/// The `erebus` command and [`crate::replay`] both build their client here, so a recorded
/// session is rebuilt exactly as it ran. `proxy_auth` is the secret `settings.proxy_auth`
/// only notes.
///
/// # Errors
///
/// A `proxy_auth` that disagrees with `settings.proxy_auth`.
pub fn build_client(
    plan: Plan,
    settings: &Settings,
    seed: &Seed,
    proxy_auth: Option<ProxyAuth>,
) -> Result<SessionClient, SetupError> {
    if proxy_auth.is_some() != settings.proxy_auth {
        return Err(SetupError(format!(
            "the settings say proxy authentication is {}, but credentials were {}",
            if settings.proxy_auth { "on" } else { "off" },
            if proxy_auth.is_some() {
                "given"
            } else {
                "not given"
            }
        )));
    }
    let tunnel = plan.start(
        &seed.child("session"),
        settings.wall_clock(),
        settings.built_at,
    );
    let config = ClientConfig {
        listeners: settings.listeners.clone(),
        proxy: ProxyConfig {
            auth: proxy_auth,
            ..ProxyConfig::default()
        },
        tcp: settings.capacity.tcp_config(),
        dns_servers: settings.dns_servers.clone(),
        tunnel_wait: settings.tunnel_wait,
        limits: settings.capacity.limits,
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
            tunnel_wait: Duration::from_secs(10),
            profile_dir: Some(PathBuf::from("/etc/erebus/profiles")),
            connection: Some("home".into()),
            capacity: Capacity {
                limits: Limits {
                    connections: 100,
                    dns_lookups: 7,
                },
                tcp_buffer: 256 << 10,
                receive_memory: 4 << 20,
            },
        }
    }

    #[test]
    fn capacity_defaults_when_absent_and_is_checked() {
        let good = sample().to_text();
        let without: String = good
            .lines()
            .filter(|l| {
                ![
                    "max_connections=",
                    "max_dns_queries=",
                    "tcp_buffer=",
                    "receive_memory=",
                ]
                .iter()
                .any(|key| l.starts_with(key))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            Settings::parse(&without).unwrap().capacity,
            Capacity::default()
        );
        for (from, to, option) in [
            (
                "max_connections=100",
                "max_connections=0",
                "--max-connections",
            ),
            (
                "max_dns_queries=7",
                "max_dns_queries=0",
                "--max-dns-queries",
            ),
            ("tcp_buffer=262144", "tcp_buffer=100", "--tcp-buffer"),
            (
                "receive_memory=4194304",
                "receive_memory=1",
                "--receive-memory",
            ),
        ] {
            let err = Settings::parse(&good.replace(from, to)).unwrap_err();
            assert!(
                matches!(&err, SettingsError::Capacity(reason) if reason.contains(option)),
                "{to}: {err}"
            );
        }
        let tcp = sample().capacity.tcp_config();
        assert_eq!(
            (tcp.rx_buffer_size, tcp.tx_buffer_size, tcp.receive_memory),
            (256 << 10, 256 << 10, 4 << 20)
        );
    }

    #[test]
    fn text_round_trips() {
        let settings = sample();
        let text = settings.to_text();
        assert!(text.contains("\nlistener=forward [fd00::5]:22\n"), "{text}");
        assert!(text.contains("\ntunnel_wait_millis=10000\n"), "{text}");
        assert_eq!(Settings::parse(&text).unwrap(), settings);
        let bare = Settings {
            listeners: Vec::new(),
            dns_servers: Vec::new(),
            profile_dir: None,
            connection: None,
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
            with("tunnel_wait_millis=5"),
            SettingsError::Duplicate {
                line: lines + 1,
                key: "tunnel_wait_millis"
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
        let err = Settings::parse(&good.replace("version=2", "version=9")).unwrap_err();
        assert!(
            err.to_string().contains("version 9 is not supported"),
            "{err}"
        );
        let without_wait: String = good
            .lines()
            .filter(|l| !l.starts_with("tunnel_wait_millis="))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            Settings::parse(&without_wait).unwrap_err(),
            SettingsError::Missing {
                key: "tunnel_wait_millis"
            }
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
