//! OpenVPN server configurations: the subset of a stock OpenVPN 2.6 `server.conf` that the
//! rootless, user-space `erebus serve` honours.
//!
//! [`parse_server`] reads a configuration with the same syntax as a client profile (the same
//! lexer: quoting, comments, `--` prefixes, inline `<ca>...</ca>` blocks, CRLF, a byte order
//! mark) and asks the caller, through a [`FileReader`], for every file it needs: `ca`, `cert`,
//! `key`, `tls-auth`, `tls-crypt`. Paths are passed exactly as written; the caller resolves a
//! relative one (normally against the configuration's directory, as OpenVPN does). Nothing
//! here touches the file system.
//!
//! Two modes are understood: a multi-client TLS server (`server NETWORK NETMASK`, `ca`,
//! `cert`, `key`) and OpenVPN's static-key point-to-point mode (`secret`, `ifconfig LOCAL
//! REMOTE`, one peer, no TLS); see [`ServerMode`]. Mixing them is refused.
//!
//! Directives fall in three groups, as for client profiles:
//!
//! - those `erebus serve` uses, parsed into the fields of [`ServerProfile`];
//! - those that only make sense for OpenVPN's root daemon with a kernel tun device
//!   (`persist-tun`, `user`, `route`, `status`, `verb`, ...): accepted with one [`Warning`]
//!   each, naming the line;
//! - those it cannot honour (`dev tap`, `client-to-client`, compression, IPv6, ...) and every
//!   unknown directive: a [`ProfileError`] naming the line, the directive and the reason.
//!
//! ```
//! use std::path::Path;
//!
//! use erebus_openvpn::config::server::parse_server;
//! use zeroize::Zeroizing;
//!
//! let text = b"port 1194\nproto udp\ndev tun\ntopology subnet\n\
//!              server 10.8.0.0 255.255.255.0\n\
//!              ca ca.crt\ncert server.crt\nkey server.key\ndh none\n\
//!              push \"dhcp-option DNS 10.8.0.1\"\nkeepalive 10 120\n";
//! let mut read = |path: &Path| -> Result<Zeroizing<Vec<u8>>, String> {
//!     let pem = if path == Path::new("server.key") {
//!         "-----BEGIN PRIVATE KEY-----\nMC4C\n-----END PRIVATE KEY-----\n"
//!     } else {
//!         "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
//!     };
//!     Ok(Zeroizing::new(pem.as_bytes().to_vec()))
//! };
//! let (server, warnings) = parse_server(text, &mut read).unwrap();
//! assert_eq!(server.port, 1194);
//! assert_eq!(server.pool.prefix(), 24);
//! assert_eq!(server.pushes, ["dhcp-option DNS 10.8.0.1"]);
//! assert!(warnings.is_empty());
//! ```

use core::fmt;
use core::str::FromStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use erebus_sansio::tunnel::IpNet;
use zeroize::Zeroizing;

use super::lexer::{self, InlineBlock, RawDirective};
use super::values::{AddressFamily, ProtoSpec, parse_proto};
use super::{
    DEFAULT_DATA_CIPHERS, DEFAULT_PORT, DataCipher, Digest, Keepalive, ProfileError, RenegSec,
    SecretBytes, TlsVersion, Topology, Transport, Warning,
};
use crate::keys::{self, KeyFileError, StaticKey};

/// Reads a file the configuration names, by its path as written there; the caller resolves a
/// relative path (normally against the configuration's directory). An error is a sentence
/// saying why the file cannot be read.
pub type FileReader<'a> = dyn FnMut(&Path) -> Result<Zeroizing<Vec<u8>>, String> + 'a;

/// OpenVPN's default `hand-window`, in seconds.
pub const DEFAULT_HAND_WINDOW: u32 = 60;

/// OpenVPN's default `script-security` level.
pub const DEFAULT_SCRIPT_SECURITY: u8 = 1;

/// Parses a server configuration; see [`ServerProfile::parse`].
///
/// # Errors
///
/// The first problem, as a [`ProfileError`] naming the line (where there is one), the
/// directive and the reason.
pub fn parse_server(
    bytes: &[u8],
    read_file: &mut FileReader<'_>,
) -> Result<(ServerProfile, Vec<Warning>), ProfileError> {
    let mut parser = Parser::default();
    for directive in lexer::directives(bytes, 1)? {
        parser.apply(directive, read_file)?;
    }
    parser.finish()
}

/// The client address pool of `server NETWORK NETMASK`: the server takes the first address
/// and hands out the others, up to the last one before the broadcast address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServerPool {
    /// The network address (no host bits set).
    pub network: Ipv4Addr,
    /// The netmask, contiguous, /30 or larger.
    pub netmask: Ipv4Addr,
}

impl ServerPool {
    /// The prefix length of the netmask.
    pub fn prefix(&self) -> u8 {
        // A contiguous mask has at most 32 leading ones.
        u8::try_from(u32::from(self.netmask).leading_ones()).unwrap_or(32)
    }

    /// The pool as a network.
    pub fn net(&self) -> IpNet {
        IpNet::new(IpAddr::V4(self.network), self.prefix())
            .unwrap_or_else(|| IpNet::host(IpAddr::V4(self.network)))
    }

    /// The server's own address in the tunnel: the first of the network (OpenVPN's choice in
    /// `topology subnet`).
    pub fn server_address(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network).saturating_add(1))
    }

    /// The broadcast address, the last of the network.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !u32::from(self.netmask))
    }

    /// The first address handed to a client.
    pub fn first_client(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network).saturating_add(2))
    }

    /// The last address handed to a client (the one before the broadcast address).
    pub fn last_client(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.broadcast()).saturating_sub(1))
    }

    /// How many clients the pool can address at once.
    pub fn capacity(&self) -> u32 {
        (!u32::from(self.netmask)).saturating_sub(2)
    }

    /// Whether `addr` is one the pool hands to clients.
    pub fn contains_client(&self, addr: Ipv4Addr) -> bool {
        (self.first_client()..=self.last_client()).contains(&addr)
    }
}

/// The control-channel wrapping the server requires of every client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerTlsWrap {
    /// `tls-auth`: an HMAC (the `auth` digest) over every control packet.
    Auth {
        /// The 2048-bit static key.
        key: StaticKey,
        /// From `tls-auth FILE DIR` or `key-direction`; bidirectional when neither is given
        /// (clients must then give no direction either).
        direction: keys::KeyDirection,
    },
    /// `tls-crypt`: control packets encrypted and authenticated with a shared key (no
    /// direction: the server always uses the server half).
    Crypt {
        /// The 2048-bit static key.
        key: StaticKey,
    },
}

/// `verify-client-cert`: whether clients must present a certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum VerifyClientCert {
    /// `none`: clients present no certificate; they must authenticate another way
    /// (`auth-user-pass-verify`, or a users file the caller supplies).
    None,
    /// `optional`: a certificate, if presented, must verify against `ca`.
    Optional,
    /// `require` (the default): every client presents a certificate signed by `ca`.
    #[default]
    Require,
}

/// How `auth-user-pass-verify` hands the username and password to its command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthVerifyMethod {
    /// `via-file`: a temporary file with the username on the first line and the password on
    /// the second, whose path is the command's last argument.
    ViaFile,
    /// `via-env`: the `username` and `password` environment variables.
    ViaEnv,
}

/// `auth-user-pass-verify CMD METHOD`: a command that decides whether a client's username and
/// password are good (exit status 0) or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthVerify {
    /// The program and its arguments, split the way OpenVPN splits the command (white space
    /// separates, quotes and backslash escapes as in the configuration). Never empty. The
    /// program is named as written; a relative path is the caller's to resolve.
    pub command: Vec<String>,
    /// How the credentials reach the command.
    pub method: AuthVerifyMethod,
}

/// Static-key point-to-point mode (`secret`, `ifconfig LOCAL REMOTE`): no TLS, one peer,
/// both ends holding the same 2048-bit key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticKeyPeer {
    /// `secret FILE`: the shared key.
    pub key: StaticKey,
    /// From `secret FILE DIR` or `key-direction`; bidirectional when neither is given (the
    /// peer must then give no direction either). A server normally uses 0 and its peer 1.
    pub direction: keys::KeyDirection,
    /// `ifconfig`'s first address: the server's own in the tunnel.
    pub local: Ipv4Addr,
    /// `ifconfig`'s second address: the peer's, the only source its packets may carry.
    pub remote: Ipv4Addr,
    /// `cipher`: the data cipher, a CBC cipher or `none` (OpenVPN's static-key mode has no
    /// AEAD ciphers; its default, BF-CBC, is not implemented, so `cipher` is required).
    pub cipher: DataCipher,
    /// `ping` in seconds (or `keepalive`'s interval): send a ping after this long without
    /// sending anything.
    pub ping: Option<u32>,
    /// `ping-restart` in seconds (or `keepalive`'s timeout): forget the peer after this long
    /// without an authentic packet from it.
    pub ping_restart: Option<u32>,
}

/// How the server meets its peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerMode {
    /// TLS (`server NETWORK NETMASK`, `ca`, `cert`, `key`): many clients, each with a
    /// pool address; the TLS fields of [`ServerProfile`] apply.
    Tls,
    /// Static-key point-to-point: one peer and no TLS. [`ServerProfile::pool`] is then the
    /// /30 around `ifconfig`'s local address and `cert`, `key`, `ca`, `tls_wrap`, `pushes`
    /// are empty: nothing uses them. Boxed: the key is 256 bytes.
    StaticKey(Box<StaticKeyPeer>),
}

/// A parsed server configuration.
///
/// Fields holding OpenVPN's defaults say so; `None` means the directive is absent and the
/// server uses OpenVPN's default behaviour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerProfile {
    /// `port` or `lport` (the later wins): the port to listen on. Default 1194.
    pub port: u16,
    /// `local`: the address to listen on; `None` listens on every address (the driver
    /// decides which unspecified address that is).
    pub local: Option<Ipv4Addr>,
    /// `proto`: [`Transport::Udp`] (the default), or [`Transport::Tcp`], which for a server
    /// always means `tcp-server`: listen for TCP connections.
    pub transport: Transport,
    /// TLS or static-key point-to-point.
    pub mode: ServerMode,
    /// `server NETWORK NETMASK`: the tunnel network and the client address pool (in
    /// static-key mode, the /30 around `ifconfig`'s local address, unused).
    pub pool: ServerPool,
    /// `topology` as written (`None`: OpenVPN's default, net30). `erebus serve` always serves
    /// clients with `topology subnet`, which it pushes; anything else gets a warning.
    pub topology: Option<Topology>,

    /// `ca`: the PEM certificates that sign client certificates. `None` only with
    /// `verify-client-cert none`.
    pub ca: Option<Vec<u8>>,
    /// `cert`: the server's PEM certificate (chain).
    pub cert: Vec<u8>,
    /// `key`: the server's PEM private key, unencrypted.
    pub key: SecretBytes,
    /// `tls-auth` or `tls-crypt`.
    pub tls_wrap: Option<ServerTlsWrap>,
    /// `remote-cert-tls client`: client certificates must carry the TLS Web Client
    /// Authentication extended key usage (and a fitting key usage).
    pub remote_cert_tls_client: bool,
    /// `verify-client-cert`; default [`VerifyClientCert::Require`].
    pub verify_client_cert: VerifyClientCert,
    /// `tls-version-min`: the lowest TLS version to accept (rustls offers 1.2 and 1.3 only).
    pub tls_version_min: Option<TlsVersion>,

    /// The data ciphers to negotiate, in order of preference: `data-ciphers` (alias
    /// `ncp-ciphers`) or OpenVPN 2.6's default list, followed by `cipher` when that is not in
    /// the list already.
    pub data_ciphers: Vec<DataCipher>,
    /// `data-ciphers-fallback`: the cipher for clients that cannot negotiate one.
    pub data_ciphers_fallback: Option<DataCipher>,
    /// `auth`: the HMAC digest of tls-auth and of CBC data ciphers. Default SHA1.
    pub auth: Digest,

    /// `push "OPTION ..."` lines, in order, each option's text as written between the quotes.
    pub pushes: Vec<String>,
    /// `keepalive INTERVAL TIMEOUT` in seconds (the timeout at least twice the interval). As
    /// in OpenVPN, a server pushes `ping INTERVAL` and `ping-restart TIMEOUT` to clients and
    /// drops a client after twice the timeout without traffic.
    pub keepalive: Option<Keepalive>,
    /// `reneg-sec`: renegotiate the data channel keys this often.
    pub reneg_sec: Option<RenegSec>,
    /// `hand-window` in seconds: how long a TLS handshake may take. Default 60.
    pub hand_window: u32,
    /// `tun-mtu`: the largest inner packet (100 to 65535).
    pub tun_mtu: Option<u16>,
    /// `max-clients`: how many clients may be connected at once (at least 1).
    pub max_clients: Option<u32>,
    /// `duplicate-cn`: let several clients connect with the same common name (or username,
    /// with `username-as-common-name`) at once.
    pub duplicate_cn: bool,
    /// `explicit-exit-notify [N]`: tell UDP clients when the server shuts down (N = 2 asks
    /// them to try their next server). Ignored over TCP.
    pub explicit_exit_notify: Option<u32>,

    /// `username-as-common-name`: use the authenticated username as the client's name.
    pub username_as_common_name: bool,
    /// `auth-user-pass-verify`: the command that checks usernames and passwords.
    pub auth_verify: Option<AuthVerify>,
    /// `script-security` (0 to 3). Default 1; `auth-user-pass-verify` needs 2 or more.
    pub script_security: u8,
}

impl ServerProfile {
    /// Parses a server configuration, asking `read_file` for each file it names. Returns it
    /// with the warnings about directives it accepted but ignores or reinterprets.
    ///
    /// # Errors
    ///
    /// The first problem, as a [`ProfileError`] naming the line (where there is one), the
    /// directive and the reason.
    pub fn parse(
        bytes: &[u8],
        read_file: &mut FileReader<'_>,
    ) -> Result<(Self, Vec<Warning>), ProfileError> {
        parse_server(bytes, read_file)
    }

    /// Why clients could connect without authenticating, if they could: with
    /// `verify-client-cert none` (or `optional`) and no `auth-user-pass-verify`. The parser
    /// accepts such a configuration because the caller may authenticate clients another way
    /// (a users file given on the command line); a caller that has none must refuse to start
    /// with this error.
    pub fn missing_client_auth(&self) -> Option<ProfileError> {
        if self.auth_verify.is_some() {
            return None;
        }
        let message = match self.verify_client_cert {
            VerifyClientCert::Require => return None,
            VerifyClientCert::None => {
                "clients present no certificate (`verify-client-cert none`) and nothing checks \
                 their username and password: add `auth-user-pass-verify` or give erebus serve \
                 a users file"
            }
            VerifyClientCert::Optional => {
                "clients without a certificate (`verify-client-cert optional`) would connect \
                 unauthenticated: add `auth-user-pass-verify`, give erebus serve a users file, \
                 or use `verify-client-cert require`"
            }
        };
        Some(ProfileError {
            line: None,
            directive: "verify-client-cert".to_owned(),
            message: message.to_owned(),
        })
    }
}

/// One directive being applied.
struct Dir {
    line: usize,
    name: String,
    args: Vec<String>,
    inline: Option<InlineBlock>,
}

type Outcome = Result<(), ProfileError>;

impl Dir {
    fn error(&self, message: impl Into<String>) -> ProfileError {
        ProfileError::at(self.line, &self.name, message)
    }

    /// Checks the number of arguments (words after the name).
    fn count(&self, min: usize, max: usize) -> Outcome {
        let n = self.args.len();
        let plural = |k: usize| if k == 1 { "argument" } else { "arguments" };
        let message = if n < min && min == max {
            format!("needs {min} {}, got {n}", plural(min))
        } else if n < min {
            format!("needs at least {min} {}, got {n}", plural(min))
        } else if n > max && max == 0 {
            "takes no arguments".to_owned()
        } else if n > max {
            format!("takes at most {max} {}, got {n}", plural(max))
        } else {
            return Ok(());
        };
        Err(self.error(message))
    }

    /// The argument at `index`, or "" past the end (callers check counts first).
    fn word(&self, index: usize) -> &str {
        self.args.get(index).map_or("", String::as_str)
    }

    fn opt(&self, index: usize) -> Option<&str> {
        self.args.get(index).map(String::as_str)
    }

    /// A whole decimal number.
    fn number<T: FromStr>(&self, index: usize) -> Result<T, ProfileError> {
        let word = self.word(index);
        let digits = word.strip_prefix('+').unwrap_or(word);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.error(format!("`{word}` is not a whole number")));
        }
        digits
            .parse()
            .map_err(|_| self.error(format!("the number `{word}` is too large")))
    }

    /// A port to listen on, 1 to 65535.
    fn port(&self, index: usize) -> Result<u16, ProfileError> {
        let word = self.word(index);
        match word.parse::<u16>() {
            Ok(port) if port != 0 => Ok(port),
            _ => Err(self.error(format!("`{word}` is not a port number (1 to 65535)"))),
        }
    }

    fn ipv4(&self, index: usize, what: &str) -> Result<Ipv4Addr, ProfileError> {
        let word = self.word(index);
        word.parse()
            .map_err(|_| self.error(format!("the {what} `{word}` is not an IPv4 address")))
    }

    fn warn_into(&self, warnings: &mut Vec<Warning>, message: impl Into<String>) {
        warnings.push(Warning {
            line: self.line,
            directive: self.name.clone(),
            message: message.into(),
        });
    }
}

/// Where loaded material came from, to name it in messages.
enum Source {
    /// An inline block whose first content line has this number.
    Inline { first_line: usize },
    /// A file, by its path as written.
    File(PathBuf),
}

struct Loaded {
    bytes: Zeroizing<Vec<u8>>,
    source: Source,
}

impl Loaded {
    /// "the inline <ca> block" or "`ca.crt`".
    fn describe(&self, directive: &str) -> String {
        match &self.source {
            Source::Inline { .. } => format!("the inline <{directive}> block"),
            Source::File(path) => format!("`{}`", path.display()),
        }
    }

    /// Moves the bytes out (without copying them).
    fn into_bytes(mut self) -> Vec<u8> {
        core::mem::take(&mut *self.bytes)
    }
}

#[derive(Default)]
struct Parser {
    warnings: Vec<Warning>,

    port: Option<u16>,
    local: Option<Ipv4Addr>,
    transport: Option<(usize, Transport)>,
    pool: Option<(usize, ServerPool)>,
    /// `secret FILE [DIR]`: static-key mode.
    secret: Option<(usize, StaticKey)>,
    /// `ifconfig LOCAL REMOTE`.
    ifconfig: Option<(usize, Ipv4Addr, Ipv4Addr)>,
    /// Lines of `mode server` and `tls-server`, which exclude static-key mode.
    tls_role: Option<(usize, &'static str)>,
    /// `mode p2p`.
    mode_p2p: Option<usize>,
    ping: Option<(usize, u32)>,
    ping_restart: Option<(usize, u32)>,
    /// The first directive that belongs to TLS mode only (`ca`, `cert`, `push`, ...).
    tls_only: Option<(usize, String)>,
    topology: Option<(usize, Topology)>,
    dev: Option<(usize, String)>,
    dev_type: Option<(usize, String)>,

    ca: Option<Vec<u8>>,
    cert: Option<Vec<u8>>,
    key: Option<SecretBytes>,
    tls_auth: Option<(usize, StaticKey)>,
    tls_crypt: Option<(usize, StaticKey)>,
    /// `key-direction`, or the direction argument of `tls-auth`: last one wins, as in
    /// OpenVPN.
    key_direction: Option<(usize, String, keys::KeyDirection)>,
    remote_cert_tls_client: bool,
    verify_client_cert: Option<VerifyClientCert>,
    tls_version_min: Option<TlsVersion>,

    data_ciphers: Option<Vec<DataCipher>>,
    data_ciphers_fallback: Option<DataCipher>,
    cipher: Option<(usize, DataCipher)>,
    auth: Option<Digest>,

    pushes: Vec<String>,
    keepalive: Option<(usize, Keepalive)>,
    reneg_sec: Option<RenegSec>,
    hand_window: Option<u32>,
    tun_mtu: Option<u16>,
    max_clients: Option<u32>,
    duplicate_cn: bool,
    explicit_exit_notify: Option<(usize, u32)>,

    username_as_common_name: bool,
    auth_verify: Option<(usize, AuthVerify)>,
    script_security: Option<(usize, u8)>,
}

/// Directives that may be given as an inline block.
const INLINE_DIRECTIVES: &[&str] = &[
    "ca",
    "cert",
    "key",
    "dh",
    "tls-auth",
    "tls-crypt",
    "tls-crypt-v2",
    "crl-verify",
    "secret",
    "connection",
];

/// Directives that make sense in TLS mode only.
const TLS_ONLY: &[&str] = &[
    "ca",
    "cert",
    "key",
    "tls-auth",
    "tls-crypt",
    "push",
    "verify-client-cert",
    "remote-cert-tls",
    "auth-user-pass-verify",
    "username-as-common-name",
    "data-ciphers",
    "ncp-ciphers",
    "data-ciphers-fallback",
    "reneg-sec",
    "max-clients",
    "duplicate-cn",
];

const PROCESS: &str = "ignored: it configures OpenVPN's root daemon; erebus serve runs \
                       unprivileged, in the foreground, as the user who starts it";
const LOGGING: &str = "ignored: erebus serve logs through its own logging settings";
const PERSIST: &str = "ignored: erebus serve has no tun device and never re-reads its keys, so \
                       there is nothing to persist";
const ROUTE: &str = "ignored: erebus serve installs no kernel routes (client traffic leaves \
                     through its user-space exit); routes pushed with `push \"route ...\"` \
                     still reach the clients";
const DEVICE: &str = "ignored: erebus serve has no tun device and leaves socket tuning to the \
                      system";
const IPV6_LATER: &str = "IPv6 is not supported yet: erebus serve tunnels IPv4 only";
const COMPRESSION: &str = "compression is not offered by erebus serve (VORACLE); remove it";
const FRAMING: &str = "compression framing is not offered by erebus serve (compression is \
                       off because of VORACLE); remove it here and from the client profiles";
const UNENCRYPTED: &str = "clients that negotiate the cipher `none` send their traffic \
                           unencrypted";
const CLIENT_OPTION: &str = "is a client option; erebus serve reads server configurations \
                             (is this a client profile?)";
const HOOKS: &str = "is not supported: erebus serve runs no hooks or plugins besides \
                     auth-user-pass-verify, and ignoring this one could change who gets in or \
                     what they reach";

impl Parser {
    fn apply(&mut self, raw: RawDirective, read_file: &mut FileReader<'_>) -> Outcome {
        let RawDirective {
            line,
            name,
            args,
            inline,
        } = raw;
        let mut d = Dir {
            line,
            name,
            args,
            inline,
        };
        if d.inline.is_some() && !INLINE_DIRECTIVES.contains(&d.name.as_str()) {
            return Err(d.error(format!(
                "`{}` cannot be given as an inline <{}> block",
                d.name, d.name
            )));
        }
        if self.tls_only.is_none() && TLS_ONLY.contains(&d.name.as_str()) {
            self.tls_only = Some((d.line, d.name.clone()));
        }
        self.dispatch(&mut d, read_file)
    }

    fn warn(&mut self, d: &Dir, message: impl Into<String>) {
        d.warn_into(&mut self.warnings, message);
    }

    #[allow(clippy::too_many_lines)] // one arm per directive, like OpenVPN's add_option
    fn dispatch(&mut self, d: &mut Dir, read_file: &mut FileReader<'_>) -> Outcome {
        match d.name.as_str() {
            // Role and listening socket.
            "mode" => {
                d.count(1, 1)?;
                match d.word(0) {
                    "server" => {
                        self.tls_role = Some((d.line, "mode server"));
                        Ok(())
                    }
                    "p2p" if self.pool.is_some() => Err(d.error(
                        "erebus serve is a multi-client server with `server NETWORK NETMASK`: \
                         use `mode server` (`mode p2p` is for static-key mode, with `secret` \
                         and `ifconfig`)",
                    )),
                    "p2p" => {
                        self.mode_p2p = Some(d.line);
                        Ok(())
                    }
                    other => Err(d.error(format!("unknown mode `{other}`; use server"))),
                }
            }
            "tls-server" => {
                d.count(0, 0)?;
                self.tls_role = Some((d.line, "tls-server"));
                Ok(())
            }
            // OpenVPN 2.6 insists on it for static keys; its warning is the user's to heed.
            "allow-deprecated-insecure-static-crypto" => d.count(0, 0),
            // A server without `remote` floats anyway: its peer may move.
            "float" => d.count(0, 0),
            "port" | "lport" => {
                d.count(1, 1)?;
                self.port = Some(d.port(0)?);
                Ok(())
            }
            "local" => {
                d.count(1, 1)?;
                let word = d.word(0);
                if let Ok(addr) = word.parse::<Ipv4Addr>() {
                    self.local = Some(addr);
                    Ok(())
                } else if word.parse::<Ipv6Addr>().is_ok() {
                    Err(d.error(format!(
                        "`{word}` is an IPv6 address, and IPv6 is not supported yet: erebus \
                         serve listens on IPv4 only"
                    )))
                } else {
                    Err(d.error(format!(
                        "`{word}` is not an IPv4 address; erebus serve does not resolve names \
                         for the address it listens on"
                    )))
                }
            }
            "proto" => {
                d.count(1, 1)?;
                let transport = server_proto(d)?;
                self.transport = Some((d.line, transport));
                Ok(())
            }

            // The device and the address pool.
            "dev" => {
                d.count(1, 1)?;
                self.dev = Some((d.line, d.word(0).to_owned()));
                Ok(())
            }
            "dev-type" => {
                d.count(1, 1)?;
                self.dev_type = Some((d.line, d.word(0).to_owned()));
                Ok(())
            }
            "topology" => {
                d.count(1, 1)?;
                let topology = match d.word(0) {
                    "net30" => Topology::Net30,
                    "p2p" => Topology::P2p,
                    "subnet" => Topology::Subnet,
                    other => {
                        return Err(d.error(format!(
                            "unknown topology `{other}`; use subnet (or net30 or p2p)"
                        )));
                    }
                };
                self.topology = Some((d.line, topology));
                Ok(())
            }
            "server" => {
                d.count(2, 3)?;
                let pool = server_pool(d)?;
                match d.opt(2) {
                    None => {}
                    Some("nopool") => {
                        return Err(d.error(
                            "`nopool` leaves clients without addresses unless a \
                             client-config-dir assigns them, which erebus serve does not \
                             support; remove `nopool`",
                        ));
                    }
                    Some(other) => {
                        return Err(d.error(format!("unknown server flag `{other}`; use nopool")));
                    }
                }
                self.pool = Some((d.line, pool));
                Ok(())
            }
            "ifconfig" => {
                d.count(2, 2)?;
                let local = d.ipv4(0, "local address")?;
                let remote = d.ipv4(1, "remote address")?;
                if local == remote {
                    return Err(d.error("the local and remote addresses must differ"));
                }
                self.ifconfig = Some((d.line, local, remote));
                Ok(())
            }
            "ifconfig-pool" => Err(d.error(format!(
                "`{}` is not supported: erebus serve takes its tunnel address and client pool \
                 from `server NETWORK NETMASK` (with `topology subnet`); write that instead",
                d.name
            ))),
            "server-bridge" => Err(d.error(
                "bridging (tap) is not supported: erebus serve carries IP packets only; use \
                 `dev tun` and `server NETWORK NETMASK`",
            )),
            "server-ipv6" | "ifconfig-ipv6-pool" => {
                Err(d.error(format!("`{}`: {IPV6_LATER}", d.name)))
            }
            "ifconfig-pool-persist" => {
                d.count(1, 2)?;
                self.warn(
                    d,
                    "ignored: leases are not persisted; a client may get another address after \
                     erebus serve restarts",
                );
                Ok(())
            }

            // Certificates, keys and the control channel.
            "ca" => {
                let loaded = load(d, read_file, 0)?;
                check_pem(d, &loaded, "CERTIFICATE-----", "PEM certificate")?;
                self.ca = Some(loaded.into_bytes());
                Ok(())
            }
            "cert" => {
                let loaded = load(d, read_file, 0)?;
                check_pem(d, &loaded, "CERTIFICATE-----", "PEM certificate")?;
                self.cert = Some(loaded.into_bytes());
                Ok(())
            }
            "key" => {
                let loaded = load(d, read_file, 0)?;
                check_pem(d, &loaded, "PRIVATE KEY-----", "PEM private key")?;
                if contains(&loaded.bytes, b"ENCRYPTED PRIVATE KEY")
                    || contains(&loaded.bytes, b"Proc-Type: 4,ENCRYPTED")
                {
                    return Err(d.error(format!(
                        "{} is encrypted, and erebus serve cannot ask for its passphrase; \
                         decrypt it (`openssl pkey -in server.key -out server-plain.key`) and \
                         keep it readable only by its owner",
                        loaded.describe(&d.name)
                    )));
                }
                self.key = Some(SecretBytes(loaded.bytes));
                Ok(())
            }
            "dh" => {
                if d.inline.is_none() {
                    d.count(1, 1)?;
                    if d.word(0) == "none" {
                        return Ok(());
                    }
                }
                self.warn(
                    d,
                    "ignored: erebus uses ECDHE; the DH parameters are not used (write \
                     `dh none`)",
                );
                Ok(())
            }
            "ecdh-curve" | "tls-groups" => {
                d.count(1, 1)?;
                self.warn(
                    d,
                    "ignored: rustls chooses the key exchange group (X25519, P-256 or P-384)",
                );
                Ok(())
            }
            "tls-cipher" | "tls-ciphersuites" => {
                d.count(1, 1)?;
                self.warn(d, "ignored: rustls's default cipher suites are used");
                Ok(())
            }
            "tls-version-min" => {
                d.count(1, 2)?;
                let or_highest = match d.opt(1) {
                    None => false,
                    Some("or-highest") => true,
                    Some(other) => {
                        return Err(d.error(format!(
                            "unknown tls-version-min keyword `{other}`; use or-highest"
                        )));
                    }
                };
                let version = TlsVersion::parse(d.word(0));
                if version.is_none() && !or_highest {
                    return Err(d.error(format!(
                        "unknown TLS version `{}`; use 1.2 or 1.3",
                        d.word(0)
                    )));
                }
                if version.is_some_and(|v| v < TlsVersion::V1_2) {
                    self.warn(
                        d,
                        "rustls offers TLS 1.2 and 1.3 only, so the lowest version accepted is \
                         1.2",
                    );
                }
                self.tls_version_min = version;
                Ok(())
            }
            "tls-version-max" => {
                d.count(1, 1)?;
                self.warn(d, "ignored: rustls offers TLS 1.2 and 1.3");
                Ok(())
            }
            "tls-auth" => {
                let loaded = load(d, read_file, 1)?;
                let key = static_key(d, &loaded)?;
                if let Some(word) = d.opt(1) {
                    self.key_direction = Some((d.line, d.name.clone(), key_direction(d, word)?));
                }
                self.tls_auth = Some((d.line, key));
                Ok(())
            }
            "key-direction" => {
                d.count(1, 1)?;
                let direction = key_direction(d, d.word(0))?;
                self.key_direction = Some((d.line, d.name.clone(), direction));
                Ok(())
            }
            "tls-crypt" => {
                let loaded = load(d, read_file, 0)?;
                let key = static_key(d, &loaded)?;
                self.tls_crypt = Some((d.line, key));
                Ok(())
            }
            "tls-crypt-v2" | "tls-crypt-v2-verify" => Err(d.error(
                "tls-crypt-v2 is not supported yet by erebus serve; use `tls-crypt` with a \
                 key shared by all clients",
            )),
            "remote-cert-tls" => {
                d.count(1, 1)?;
                match d.word(0) {
                    "client" => {
                        self.remote_cert_tls_client = true;
                        Ok(())
                    }
                    "server" => Err(d.error(
                        "a server checks its clients' certificates: write `remote-cert-tls \
                         client`",
                    )),
                    other => {
                        Err(d.error(format!("unknown certificate role `{other}`; use client")))
                    }
                }
            }
            "verify-client-cert" => {
                d.count(1, 1)?;
                self.verify_client_cert = Some(match d.word(0) {
                    "none" => VerifyClientCert::None,
                    "optional" => VerifyClientCert::Optional,
                    "require" => VerifyClientCert::Require,
                    other => {
                        return Err(d.error(format!(
                            "unknown verify-client-cert mode `{other}`; use none, optional or \
                             require"
                        )));
                    }
                });
                Ok(())
            }
            "crl-verify" => Err(d.error(
                "is not supported yet: erebus serve cannot check a certificate revocation \
                 list, and ignoring it would let revoked clients in; remove it only if no \
                 client certificate has been revoked",
            )),

            // The data channel.
            "data-ciphers" | "ncp-ciphers" => self.data_ciphers(d),
            "data-ciphers-fallback" => {
                d.count(1, 1)?;
                self.data_ciphers_fallback = Some(cipher(d, d.word(0))?);
                Ok(())
            }
            "cipher" => {
                d.count(1, 1)?;
                let cipher = cipher(d, d.word(0))?;
                if cipher == DataCipher::None {
                    self.warn(d, UNENCRYPTED);
                }
                self.cipher = Some((d.line, cipher));
                Ok(())
            }
            "auth" => {
                d.count(1, 1)?;
                let name = d.word(0);
                self.auth = Some(name.parse::<Digest>().map_err(|_| {
                    d.error(format!(
                        "erebus does not implement the HMAC digest `{name}`; use SHA1, SHA224, \
                         SHA256, SHA384, SHA512 or none"
                    ))
                })?);
                Ok(())
            }
            "comp-lzo" => {
                d.count(0, 1)?;
                match d.opt(0) {
                    None | Some("yes" | "adaptive") => Err(d.error(COMPRESSION)),
                    Some("no") => Err(d.error(FRAMING)),
                    Some(other) => Err(d.error(format!(
                        "unknown comp-lzo mode `{other}`; and {COMPRESSION}"
                    ))),
                }
            }
            "compress" => {
                d.count(0, 1)?;
                match d.opt(0) {
                    None => {
                        self.warn(
                            d,
                            "accepted without effect: erebus serve neither compresses nor adds \
                             compression framing; remove `compress` from the client profiles \
                             too",
                        );
                        Ok(())
                    }
                    Some("stub" | "stub-v2") => Err(d.error(FRAMING)),
                    Some(_) => Err(d.error(COMPRESSION)),
                }
            }
            "allow-compression" => {
                d.count(1, 1)?;
                match d.word(0) {
                    "no" => Ok(()),
                    "asym" => {
                        self.warn(
                            d,
                            "ignored: erebus serve neither compresses nor decompresses, as with \
                             `allow-compression no`",
                        );
                        Ok(())
                    }
                    "yes" => Err(d.error(COMPRESSION)),
                    other => {
                        Err(d.error(format!("unknown allow-compression value `{other}`; use no")))
                    }
                }
            }

            // What clients get, and timers.
            "push" => {
                if d.args.is_empty() {
                    return Err(d.error(
                        "needs the option to push, in double quotes: push \"route 10.0.0.0 \
                         255.0.0.0\"",
                    ));
                }
                if d.args.len() > 1 {
                    return Err(d.error(format!(
                        "takes one argument: put the whole option in double quotes, as in \
                         push \"{}\"",
                        d.args.join(" ")
                    )));
                }
                let text = d.word(0).trim();
                if text.is_empty() {
                    return Err(d.error("the option to push is empty"));
                }
                let first = text.split_ascii_whitespace().next().unwrap_or_default();
                if matches!(first, "comp-lzo" | "compress") {
                    return Err(d.error(format!(
                        "pushing `{first}` makes clients frame or compress packets, and {FRAMING}"
                    )));
                }
                self.pushes.push(text.to_owned());
                Ok(())
            }
            "keepalive" => {
                d.count(2, 2)?;
                let interval: u32 = d.number(0)?;
                let timeout: u32 = d.number(1)?;
                if interval == 0 || timeout == 0 {
                    return Err(d.error("both keepalive values must be above 0 seconds"));
                }
                if u64::from(timeout) < 2 * u64::from(interval) {
                    return Err(d.error(format!(
                        "the timeout ({timeout} s) must be at least twice the ping interval \
                         ({interval} s), as OpenVPN requires; `keepalive 10 120` is the usual \
                         setting"
                    )));
                }
                self.keepalive = Some((d.line, Keepalive { interval, timeout }));
                Ok(())
            }
            "reneg-sec" => {
                d.count(1, 2)?;
                let max: u32 = d.number(0)?;
                let min: Option<u32> = match d.opt(1) {
                    Some(_) => Some(d.number(1)?),
                    None => None,
                };
                if min.is_some_and(|min| min > max) {
                    return Err(d.error(
                        "the lower bound (second value) must not exceed the renegotiation \
                         interval",
                    ));
                }
                self.reneg_sec = Some(RenegSec { max, min });
                Ok(())
            }
            "hand-window" => {
                d.count(1, 1)?;
                let seconds: u32 = d.number(0)?;
                if seconds == 0 {
                    return Err(d.error("the handshake window must be above 0 seconds"));
                }
                self.hand_window = Some(seconds);
                Ok(())
            }
            "tun-mtu" => {
                d.count(1, 1)?;
                let mtu: u32 = d.number(0)?;
                match u16::try_from(mtu) {
                    Ok(mtu) if mtu >= 100 => {
                        self.tun_mtu = Some(mtu);
                        Ok(())
                    }
                    _ => Err(d.error(format!(
                        "the MTU {mtu} is out of range: use 100 to 65535 (usually 1500)"
                    ))),
                }
            }
            "max-clients" => {
                d.count(1, 1)?;
                let max: u32 = d.number(0)?;
                if max == 0 {
                    return Err(d.error("max-clients must be at least 1"));
                }
                self.max_clients = Some(max);
                Ok(())
            }
            "duplicate-cn" => {
                d.count(0, 0)?;
                self.duplicate_cn = true;
                Ok(())
            }
            "explicit-exit-notify" => {
                d.count(0, 1)?;
                let n = match d.opt(0) {
                    Some(_) => d.number(0)?,
                    None => 1,
                };
                self.explicit_exit_notify = Some((d.line, n));
                Ok(())
            }

            // Client authentication.
            "username-as-common-name" => {
                d.count(0, 0)?;
                self.username_as_common_name = true;
                Ok(())
            }
            "auth-user-pass-verify" => {
                d.count(2, 2)?;
                let method = match d.word(1) {
                    "via-file" => AuthVerifyMethod::ViaFile,
                    "via-env" => AuthVerifyMethod::ViaEnv,
                    other => {
                        return Err(
                            d.error(format!("unknown method `{other}`; use via-file or via-env"))
                        );
                    }
                };
                let command = lexer::split_words(d.word(0).as_bytes())
                    .map_err(|why| d.error(format!("the command cannot be split: {why}")))?;
                if command.first().is_none_or(String::is_empty) {
                    return Err(d.error("the command is empty"));
                }
                self.auth_verify = Some((d.line, AuthVerify { command, method }));
                Ok(())
            }
            "script-security" => {
                d.count(1, 1)?;
                let level: u8 = d.number(0)?;
                if level > 3 {
                    return Err(d.error(format!(
                        "script-security {level} does not exist; use 0 to 3"
                    )));
                }
                self.script_security = Some((d.line, level));
                Ok(())
            }

            // Accepted and ignored, one warning each.
            "persist-key" | "persist-tun" => {
                d.count(0, 0)?;
                self.warn(d, PERSIST);
                Ok(())
            }
            "user" | "group" | "chroot" | "daemon" | "writepid" | "nice" => {
                self.warn(d, PROCESS);
                Ok(())
            }
            "status"
            | "status-version"
            | "log"
            | "log-append"
            | "verb"
            | "mute"
            | "mute-replay-warnings"
            | "syslog"
            | "suppress-timestamps" => {
                self.warn(d, LOGGING);
                Ok(())
            }
            "route" | "route-ipv6" => {
                self.warn(d, ROUTE);
                Ok(())
            }
            "txqueuelen" | "sndbuf" | "rcvbuf" | "fast-io" | "disable-dco" => {
                self.warn(d, DEVICE);
                Ok(())
            }
            "up" | "down" => {
                self.warn(
                    d,
                    "ignored: erebus serve has no tun device to bring up or down, and needs no \
                     NAT or forwarding rules",
                );
                Ok(())
            }
            "management" => {
                self.warn(d, "ignored: erebus serve has no management interface");
                Ok(())
            }
            "ifconfig-ipv6" => {
                self.warn(d, format!("ignored: {IPV6_LATER}"));
                Ok(())
            }

            // Refused with a reason.
            "client-to-client" => {
                Err(d.error("client-to-client is not supported: clients reach only the exit"))
            }
            "client-config-dir" | "ccd-exclusive" => Err(d.error(format!(
                "`{}` is not supported: erebus serve has no per-client configuration",
                d.name
            ))),
            "client-connect" | "client-disconnect" | "learn-address" | "tls-verify" | "plugin" => {
                Err(d.error(format!("`{}` {HOOKS}", d.name)))
            }
            "secret" => {
                if let Some((line, _)) = self.pool {
                    return Err(d.error(format!(
                        "static-key point-to-point mode (`secret`) cannot be combined with \
                         `server` (line {line}): use TLS (`ca`, `cert`, `key`) for many \
                         clients, or `secret` with `ifconfig LOCAL REMOTE` for one peer"
                    )));
                }
                let loaded = load(d, read_file, 1)?;
                let key = static_key(d, &loaded)?;
                if let Some(word) = d.opt(1) {
                    self.key_direction = Some((d.line, d.name.clone(), key_direction(d, word)?));
                }
                self.secret = Some((d.line, key));
                Ok(())
            }
            "ping" | "ping-restart" => {
                d.count(1, 1)?;
                let seconds: u32 = d.number(0)?;
                if seconds == 0 {
                    return Err(d.error("must be above 0 seconds"));
                }
                if d.name == "ping" {
                    self.ping = Some((d.line, seconds));
                } else {
                    self.ping_restart = Some((d.line, seconds));
                }
                Ok(())
            }
            "cd" => Err(d.error(
                "is not supported: write paths relative to the configuration's directory, or \
                 absolute",
            )),
            "config" => Err(d.error(
                "erebus serve reads a single configuration; paste the included file into this \
                 one",
            )),
            "client" | "remote" | "pull" | "tls-client" | "nobind" | "auth-user-pass"
            | "resolv-retry" | "connection" => {
                Err(d.error(format!("`{}` {CLIENT_OPTION}", d.name)))
            }
            _ => Err(d.error(format!(
                "`{}` is not supported by `erebus serve` (or is not an OpenVPN 2.6 server \
                 option); remove it",
                d.name
            ))),
        }
    }

    fn data_ciphers(&mut self, d: &Dir) -> Outcome {
        d.count(1, 1)?;
        let mut ciphers: Vec<DataCipher> = Vec::new();
        for name in d.word(0).split(':') {
            // OpenVPN 2.6 lets a `?` mark a cipher that may be skipped when unavailable.
            let parsed = if let Some(optional) = name.strip_prefix('?') {
                match optional.parse::<DataCipher>() {
                    Ok(cipher) => Some(cipher),
                    Err(_) => {
                        self.warn(
                            d,
                            format!(
                                "the optional cipher `{optional}` is skipped: erebus does not \
                                 implement it"
                            ),
                        );
                        None
                    }
                }
            } else {
                Some(cipher(d, name)?)
            };
            if let Some(cipher) = parsed
                && !ciphers.contains(&cipher)
            {
                ciphers.push(cipher);
            }
        }
        if ciphers.is_empty() {
            return Err(d.error("the list names no cipher erebus implements"));
        }
        if ciphers.contains(&DataCipher::None) {
            self.warn(d, UNENCRYPTED);
        }
        self.data_ciphers = Some(ciphers);
        Ok(())
    }

    /// Checks the configuration as a whole.
    fn finish(mut self) -> Result<(ServerProfile, Vec<Warning>), ProfileError> {
        self.check_device()?;
        if self.secret.is_some() {
            return self.finish_static_key();
        }
        if let Some((line, ..)) = self.ifconfig {
            return Err(ProfileError::at(
                line,
                "ifconfig",
                "`ifconfig` without `secret`: static-key point-to-point mode needs \
                 `secret static.key 0`; a TLS server takes its tunnel address and client pool \
                 from `server NETWORK NETMASK` (with `topology subnet`) instead",
            ));
        }
        if let Some(line) = self.mode_p2p {
            return Err(ProfileError::at(
                line,
                "mode",
                "`mode p2p` without `secret`: erebus serve is a multi-client TLS server (use \
                 `mode server`, or just `server NETWORK NETMASK`), or a static-key \
                 point-to-point one with `secret` and `ifconfig`",
            ));
        }
        if let Some((line, directive)) = [
            self.ping.map(|(line, _)| (line, "ping")),
            self.ping_restart.map(|(line, _)| (line, "ping-restart")),
        ]
        .into_iter()
        .flatten()
        .next()
        {
            return Err(ProfileError::at(
                line,
                directive,
                "a TLS server sets its clients' timers with `keepalive INTERVAL TIMEOUT` \
                 (`ping` and `ping-restart` are for static-key point-to-point mode)",
            ));
        }
        let Some((pool_line, pool)) = self.pool else {
            return Err(missing(
                "server",
                "the configuration has no `server NETWORK NETMASK` line: erebus serve needs \
                 the tunnel network its clients get addresses from",
            ));
        };
        match self.topology {
            Some((_, Topology::Subnet)) => {}
            Some((line, topology)) => self.warnings.push(Warning {
                line,
                directive: "topology".to_owned(),
                message: format!(
                    "clients are served with topology subnet, not {}: erebus serve pushes \
                     `topology subnet` itself",
                    match topology {
                        Topology::Net30 => "net30",
                        _ => "p2p",
                    }
                ),
            }),
            None => self.warnings.push(Warning {
                line: pool_line,
                directive: "server".to_owned(),
                message: "clients are served with topology subnet (OpenVPN 2.6's default is \
                          net30): erebus serve pushes `topology subnet` itself; add \
                          `topology subnet` to say so"
                    .to_owned(),
            }),
        }

        let Some(cert) = self.cert.take() else {
            return Err(missing(
                "cert",
                "a server needs its certificate: add `cert` (and `key`)",
            ));
        };
        let Some(key) = self.key.take() else {
            return Err(missing(
                "key",
                "a server needs the private key of its certificate: add `key`",
            ));
        };
        let verify_client_cert = self.verify_client_cert.unwrap_or_default();
        if self.ca.is_none() && verify_client_cert != VerifyClientCert::None {
            return Err(missing(
                "ca",
                "`ca` is needed to verify client certificates: add it, or use \
                 `verify-client-cert none` with another way to authenticate clients",
            ));
        }

        let script_security = self
            .script_security
            .map_or(DEFAULT_SCRIPT_SECURITY, |(_, level)| level);
        if let Some((line, _)) = &self.auth_verify
            && script_security < 2
        {
            let level = match self.script_security {
                Some((ss_line, level)) => format!("{level} (line {ss_line})"),
                None => format!("{DEFAULT_SCRIPT_SECURITY}, the default"),
            };
            return Err(ProfileError::at(
                *line,
                "auth-user-pass-verify",
                format!(
                    "running the command needs `script-security 2` or higher, as in OpenVPN; \
                     the level is {level}"
                ),
            ));
        }

        let tls_wrap = self.tls_wrap()?;
        let data_ciphers = self.negotiable_ciphers();

        if let (Some((line, _)), Some((_, Transport::Tcp))) =
            (self.explicit_exit_notify, self.transport)
        {
            self.warnings.push(Warning {
                line,
                directive: "explicit-exit-notify".to_owned(),
                message: "ignored over TCP: clients see the connection close".to_owned(),
            });
        }

        let profile = ServerProfile {
            port: self.port.unwrap_or(DEFAULT_PORT),
            local: self.local,
            transport: self.transport.map_or(Transport::Udp, |(_, t)| t),
            mode: ServerMode::Tls,
            pool,
            topology: self.topology.map(|(_, topology)| topology),
            ca: self.ca,
            cert,
            key,
            tls_wrap,
            remote_cert_tls_client: self.remote_cert_tls_client,
            verify_client_cert,
            tls_version_min: self.tls_version_min,
            data_ciphers,
            data_ciphers_fallback: self.data_ciphers_fallback,
            auth: self.auth.unwrap_or(Digest::Sha1),
            pushes: self.pushes,
            keepalive: self.keepalive.map(|(_, k)| k),
            reneg_sec: self.reneg_sec,
            hand_window: self.hand_window.unwrap_or(DEFAULT_HAND_WINDOW),
            tun_mtu: self.tun_mtu,
            max_clients: self.max_clients,
            duplicate_cn: self.duplicate_cn,
            explicit_exit_notify: self.explicit_exit_notify.map(|(_, n)| n),
            username_as_common_name: self.username_as_common_name,
            auth_verify: self.auth_verify.map(|(_, verify)| verify),
            script_security,
        };
        Ok((profile, self.warnings))
    }

    /// Checks a static-key point-to-point configuration (`secret` given).
    fn finish_static_key(mut self) -> Result<(ServerProfile, Vec<Warning>), ProfileError> {
        let Some((secret_line, key)) = self.secret.take() else {
            return Err(missing("secret", "static-key mode needs `secret`"));
        };
        let conflict = |line: usize, directive: &str, reason: &str| {
            ProfileError::at(
                line,
                directive,
                format!(
                    "`{directive}` cannot be combined with static-key point-to-point mode \
                     (`secret`, line {secret_line}): {reason}"
                ),
            )
        };
        if let Some((line, _)) = self.pool {
            return Err(conflict(
                line,
                "server",
                "one peer gets `ifconfig`'s remote address, there is no pool; use TLS for \
                 many clients",
            ));
        }
        if let Some((line, directive)) = self.tls_role {
            return Err(conflict(
                line,
                directive,
                "there is no TLS and exactly one peer",
            ));
        }
        if let Some((line, directive)) = self.tls_only.take() {
            return Err(conflict(line, &directive, "it belongs to TLS mode"));
        }
        let Some((_, local, remote)) = self.ifconfig else {
            return Err(missing(
                "ifconfig",
                "static-key mode needs the tunnel addresses: add `ifconfig LOCAL REMOTE` (the \
                 server's, then the peer's)",
            ));
        };
        let cipher = match self.cipher {
            None => {
                return Err(missing(
                    "cipher",
                    "static-key mode needs `cipher` (OpenVPN's default, BF-CBC, is not \
                     implemented): add `cipher AES-256-CBC` here and in the peer's profile",
                ));
            }
            Some((line, cipher)) if cipher.is_aead() => {
                return Err(ProfileError::at(
                    line,
                    "cipher",
                    format!(
                        "{cipher} is an AEAD cipher, which static-key mode does not have (as \
                         in OpenVPN); use a CBC cipher such as AES-256-CBC"
                    ),
                ));
            }
            Some((_, cipher)) => cipher,
        };
        let direction = self
            .key_direction
            .as_ref()
            .map_or(keys::KeyDirection::Bidirectional, |(_, _, direction)| {
                *direction
            });
        let keepalive = self.keepalive.map(|(_, k)| k);
        let ping = self
            .ping
            .map(|(_, seconds)| seconds)
            .or(keepalive.map(|k| k.interval));
        let ping_restart = self
            .ping_restart
            .map(|(_, seconds)| seconds)
            .or(keepalive.map(|k| k.timeout));
        if let (Some((line, _)), Some((_, Transport::Tcp))) =
            (self.explicit_exit_notify, self.transport)
        {
            self.warnings.push(Warning {
                line,
                directive: "explicit-exit-notify".to_owned(),
                message: "ignored over TCP: the peer sees the connection close".to_owned(),
            });
        }
        let network = Ipv4Addr::from(u32::from(local) & !3);
        let profile = ServerProfile {
            port: self.port.unwrap_or(DEFAULT_PORT),
            local: self.local,
            transport: self.transport.map_or(Transport::Udp, |(_, t)| t),
            mode: ServerMode::StaticKey(Box::new(StaticKeyPeer {
                key,
                direction,
                local,
                remote,
                cipher,
                ping,
                ping_restart,
            })),
            pool: ServerPool {
                network,
                netmask: Ipv4Addr::new(255, 255, 255, 252),
            },
            topology: self.topology.map(|(_, topology)| topology),
            ca: None,
            cert: Vec::new(),
            key: SecretBytes(Zeroizing::new(Vec::new())),
            tls_wrap: None,
            remote_cert_tls_client: false,
            verify_client_cert: VerifyClientCert::default(),
            tls_version_min: None,
            data_ciphers: vec![cipher],
            data_ciphers_fallback: None,
            auth: self.auth.unwrap_or(Digest::Sha1),
            pushes: Vec::new(),
            keepalive,
            reneg_sec: None,
            hand_window: self.hand_window.unwrap_or(DEFAULT_HAND_WINDOW),
            tun_mtu: self.tun_mtu,
            max_clients: Some(1),
            duplicate_cn: false,
            explicit_exit_notify: self.explicit_exit_notify.map(|(_, n)| n),
            username_as_common_name: false,
            auth_verify: None,
            script_security: self
                .script_security
                .map_or(DEFAULT_SCRIPT_SECURITY, |(_, level)| level),
        };
        Ok((profile, self.warnings))
    }

    /// Only tun devices: erebus serve carries IP packets, not Ethernet frames.
    fn check_device(&self) -> Outcome {
        let (line, directive, kind) = match (&self.dev_type, &self.dev) {
            (Some((line, kind)), _) => (*line, "dev-type", kind.as_str()),
            (None, Some((line, name))) => {
                let kind = ["tun", "tap", "null"]
                    .into_iter()
                    .find(|kind| name.starts_with(kind))
                    .unwrap_or(name);
                (*line, "dev", kind)
            }
            (None, None) => return Ok(()),
        };
        let message = match kind {
            "tun" => return Ok(()),
            "tap" => "only tun is supported: erebus serve carries IP packets, and tap devices, \
                      which bridge Ethernet frames, are not supported; use `dev tun`"
                .to_owned(),
            "null" => "a null device carries no traffic; use `dev tun`".to_owned(),
            other => format!(
                "cannot tell whether the device `{other}` is tun or tap; add `dev-type tun`"
            ),
        };
        Err(ProfileError::at(line, directive, message))
    }

    /// The control-channel wrap, with its key direction and the warnings about it.
    fn tls_wrap(&mut self) -> Result<Option<ServerTlsWrap>, ProfileError> {
        if let (Some((auth_line, _)), Some((crypt_line, _))) = (&self.tls_auth, &self.tls_crypt) {
            let (line, name, other) = if crypt_line > auth_line {
                (*crypt_line, "tls-crypt", "tls-auth")
            } else {
                (*auth_line, "tls-auth", "tls-crypt")
            };
            return Err(ProfileError::at(
                line,
                name,
                format!(
                    "`{name}` cannot be combined with `{other}`: the control channel is wrapped \
                     one way only"
                ),
            ));
        }
        if let Some((_, key)) = self.tls_crypt.take() {
            if let Some((line, directive, _)) = &self.key_direction {
                self.warnings.push(Warning {
                    line: *line,
                    directive: directive.clone(),
                    message: "ignored: tls-crypt has no key direction".to_owned(),
                });
            }
            return Ok(Some(ServerTlsWrap::Crypt { key }));
        }
        let Some((_, key)) = self.tls_auth.take() else {
            if let Some((line, directive, _)) = &self.key_direction {
                self.warnings.push(Warning {
                    line: *line,
                    directive: directive.clone(),
                    message: "ignored: there is no tls-auth key to apply it to".to_owned(),
                });
            }
            return Ok(None);
        };
        let direction = match &self.key_direction {
            Some((line, directive, keys::KeyDirection::Inverse)) => {
                self.warnings.push(Warning {
                    line: *line,
                    directive: directive.clone(),
                    message: "key direction 1 on a server: OpenVPN servers normally use 0 and \
                              their clients 1, so clients must use `key-direction 0` here"
                        .to_owned(),
                });
                keys::KeyDirection::Inverse
            }
            Some((_, _, direction)) => *direction,
            None => keys::KeyDirection::Bidirectional,
        };
        Ok(Some(ServerTlsWrap::Auth { key, direction }))
    }

    /// `data-ciphers` or the default, with a legacy `cipher` appended.
    fn negotiable_ciphers(&mut self) -> Vec<DataCipher> {
        let mut ciphers = self
            .data_ciphers
            .take()
            .unwrap_or_else(|| DEFAULT_DATA_CIPHERS.to_vec());
        if let Some((line, cipher)) = self.cipher
            && !ciphers.contains(&cipher)
        {
            ciphers.push(cipher);
            self.warnings.push(Warning {
                line,
                directive: "cipher".to_owned(),
                message: format!(
                    "{cipher} is added to the negotiable data ciphers for old clients (as \
                     OpenVPN 2.5 and `--compat-mode 2.4` do); list it in `data-ciphers` instead"
                ),
            });
        }
        ciphers
    }
}

/// An error about something the configuration lacks as a whole.
fn missing(directive: &str, message: &str) -> ProfileError {
    ProfileError {
        line: None,
        directive: directive.to_owned(),
        message: message.to_owned(),
    }
}

/// A `proto` word as a server transport.
fn server_proto(d: &Dir) -> Result<Transport, ProfileError> {
    let word = d.word(0);
    match parse_proto(word) {
        Some((_, AddressFamily::Ipv6)) => Err(d.error(format!(
            "`{word}`: IPv6 is not supported yet; use udp or tcp-server (IPv4)"
        ))),
        Some((ProtoSpec::Udp, _)) => Ok(Transport::Udp),
        Some((ProtoSpec::Tcp | ProtoSpec::TcpServer, _)) => Ok(Transport::Tcp),
        Some((ProtoSpec::TcpClient, _)) => Err(d.error(format!(
            "`{word}` connects out; a server waits for clients: use tcp-server"
        ))),
        None => Err(d.error(format!(
            "unknown protocol `{word}`; use udp, udp4, tcp-server, tcp4-server, tcp or tcp4"
        ))),
    }
}

/// `server NETWORK NETMASK`, checked: a contiguous netmask, room for a client, no host bits.
fn server_pool(d: &Dir) -> Result<ServerPool, ProfileError> {
    let network = d.ipv4(0, "network")?;
    let netmask = d.ipv4(1, "netmask")?;
    if IpNet::from_netmask(network, netmask).is_none() {
        return Err(d.error(format!(
            "the netmask `{netmask}` is not contiguous (write it like 255.255.255.0)"
        )));
    }
    let pool = ServerPool { network, netmask };
    let prefix = pool.prefix();
    if prefix == 0 {
        return Err(d.error(
            "the netmask 0.0.0.0 would make every IPv4 address part of the tunnel; use a \
             private network such as 10.8.0.0 255.255.255.0",
        ));
    }
    if prefix > 30 {
        return Err(d.error(format!(
            "the netmask `{netmask}` (/{prefix}) leaves no address for a client: the server \
             takes the first address and the network the last; use /30 (255.255.255.252) or \
             larger"
        )));
    }
    let mask = u32::from(netmask);
    if u32::from(network) & !mask != 0 {
        let aligned = Ipv4Addr::from(u32::from(network) & mask);
        return Err(d.error(format!(
            "`{network}` is not the network address of a /{prefix}: its host bits are set; \
             write {aligned}"
        )));
    }
    Ok(pool)
}

fn cipher(d: &Dir, name: &str) -> Result<DataCipher, ProfileError> {
    name.parse::<DataCipher>().map_err(|_| {
        let supported: Vec<&str> = DataCipher::ALL.iter().map(|c| c.name()).collect();
        d.error(format!(
            "erebus does not implement the data cipher `{name}`; use one of {}",
            supported.join(", ")
        ))
    })
}

fn key_direction(d: &Dir, word: &str) -> Result<keys::KeyDirection, ProfileError> {
    match keys::KeyDirection::from_arg(Some(word)) {
        Ok(direction) => Ok(direction),
        Err(_) => Err(d.error(format!("unknown key direction `{word}`; use 0 or 1"))),
    }
}

/// Material from an inline block, or from the file named by the first argument, which may be
/// followed by up to `extra` words the caller reads. A file is read through `read_file`.
fn load(d: &mut Dir, read_file: &mut FileReader<'_>, extra: usize) -> Result<Loaded, ProfileError> {
    if let Some(block) = d.inline.take() {
        return Ok(Loaded {
            bytes: block.content,
            source: Source::Inline {
                first_line: block.first_line,
            },
        });
    }
    d.count(1, 1 + extra)?;
    let path = PathBuf::from(d.word(0));
    if d.word(0).is_empty() {
        return Err(d.error("the file name is empty"));
    }
    if path == Path::new("[[INLINE]]") {
        return Err(d.error(format!(
            "`[[INLINE]]` stands for an inline block; write the contents between <{0}> and \
             </{0}> instead",
            d.name
        )));
    }
    let bytes = read_file(&path)
        .map_err(|why| d.error(format!("cannot read `{}`: {why}", path.display())))?;
    Ok(Loaded {
        bytes,
        source: Source::File(path),
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

/// Checks that material looks like PEM of the expected kind (`-----BEGIN ...<suffix>`).
fn check_pem(d: &Dir, loaded: &Loaded, suffix: &str, what: &str) -> Outcome {
    let name = loaded.describe(&d.name);
    if loaded.bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(d.error(format!("{name} is empty")));
    }
    let begins = loaded
        .bytes
        .windows(11)
        .enumerate()
        .filter(|(_, window)| *window == b"-----BEGIN ")
        .any(|(start, _)| {
            let rest = loaded.bytes.get(start..).unwrap_or_default();
            let line_end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            contains(rest.get(..line_end).unwrap_or_default(), suffix.as_bytes())
        });
    if !begins {
        return Err(d.error(format!(
            "{name} holds no {what} (no `-----BEGIN ...{suffix}` line); a DER file must be \
             converted to PEM first"
        )));
    }
    Ok(())
}

/// A tls-auth or tls-crypt key, with errors located in the configuration when inline.
fn static_key(d: &Dir, loaded: &Loaded) -> Result<StaticKey, ProfileError> {
    let error = match StaticKey::parse(&loaded.bytes) {
        Ok(key) => return Ok(key),
        Err(error) => error,
    };
    let (inner_line, reason) = match error {
        KeyFileError::MissingHeader if contains(&loaded.bytes, b"OpenVPN tls-crypt-v2") => (
            None,
            "it is a tls-crypt-v2 key, and tls-crypt-v2 is not supported yet; make a shared \
             key with `openvpn --genkey tls-crypt`"
                .to_owned(),
        ),
        KeyFileError::MissingHeader => (
            None,
            format!(
                "no line starts with `{}` (make one with `openvpn --genkey secret`)",
                StaticKey::HEADER
            ),
        ),
        KeyFileError::NonHex { line, byte } => (
            Some(line),
            if byte.is_ascii_graphic() {
                format!(
                    "the non-hex character '{}' inside the key",
                    char::from(byte)
                )
            } else {
                format!("the unprintable byte 0x{byte:02x} inside the key")
            },
        ),
        KeyFileError::MissingFooter { .. } => (
            None,
            format!("the key never ends with a `{}` line", StaticKey::FOOTER),
        ),
        KeyFileError::TooShort { found, footer_line } => (
            Some(footer_line),
            format!("the key has {found} bytes; an OpenVPN static key has 256"),
        ),
    };
    let name = loaded.describe(&d.name);
    match (&loaded.source, inner_line) {
        (Source::Inline { first_line }, Some(inner)) => Err(ProfileError::at(
            first_line.saturating_add(inner).saturating_sub(1),
            &d.name,
            format!("{name} is not an OpenVPN static key: {reason}"),
        )),
        (Source::File(_), Some(inner)) => Err(d.error(format!(
            "{name} is not an OpenVPN static key: its line {inner}: {reason}"
        ))),
        (_, None) => Err(d.error(format!("{name} is not an OpenVPN static key: {reason}"))),
    }
}

impl fmt::Display for ServerPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix())
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use proptest::prelude::*;

    use super::*;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBcaCA\n-----END CERTIFICATE-----\n";
    /// An easy-rsa style certificate: a text dump before the PEM block.
    const CERT: &str = "Certificate:\n    Data:\n        Version: 3 (0x2)\n\
                        -----BEGIN CERTIFICATE-----\nMIIBserver\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQserver\n-----END PRIVATE KEY-----\n";
    const ENCRYPTED_KEY: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkq\n-----END ENCRYPTED PRIVATE KEY-----\n";
    const STATIC_KEY: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testvectors/captures/static-key/static.key"
    ));
    const TLS_CRYPT_V2_KEY: &str = "-----BEGIN OpenVPN tls-crypt-v2 server key-----\n\
                                    AAAA\n-----END OpenVPN tls-crypt-v2 server key-----\n";

    /// The files every test may read, by the names the configurations use.
    fn stock_files() -> Vec<(&'static str, &'static [u8])> {
        vec![
            ("ca.crt", CA.as_bytes()),
            ("server.crt", CERT.as_bytes()),
            ("server.key", KEY.as_bytes()),
            ("ta.key", STATIC_KEY.as_bytes()),
            ("empty.crt", b"\n  \n"),
            ("enc.key", ENCRYPTED_KEY.as_bytes()),
            ("v2.key", TLS_CRYPT_V2_KEY.as_bytes()),
            ("der.crt", b"\x30\x82\x01\x0a\x02\x82"),
            ("not-a-key.key", b"# nothing here\n"),
        ]
    }

    type Parsed = Result<(ServerProfile, Vec<Warning>), ProfileError>;

    /// Parses `text` with `files` readable; returns the result and the paths asked for.
    fn run_with(text: &str, files: &[(&str, &[u8])]) -> (Parsed, Vec<PathBuf>) {
        let mut asked = Vec::new();
        let mut read = |path: &Path| -> Result<Zeroizing<Vec<u8>>, String> {
            asked.push(path.to_path_buf());
            files
                .iter()
                .find(|(name, _)| Path::new(name) == path)
                .map(|(_, bytes)| Zeroizing::new(bytes.to_vec()))
                .ok_or_else(|| "No such file or directory (os error 2)".to_owned())
        };
        let parsed = parse_server(text.as_bytes(), &mut read);
        (parsed, asked)
    }

    fn run(text: &str) -> Parsed {
        run_with(text, &stock_files()).0
    }

    fn parse(text: &str) -> (ServerProfile, Vec<Warning>) {
        match run(text) {
            Ok(parsed) => parsed,
            Err(error) => panic!("configuration refused: {error}"),
        }
    }

    fn refused(text: &str) -> ProfileError {
        match run(text) {
            Ok((profile, _)) => panic!("configuration accepted: {profile:?}"),
            Err(error) => error,
        }
    }

    /// The 1-based line of the first line of `text` that starts with `start`.
    fn line_of(text: &str, start: &str) -> usize {
        text.lines()
            .position(|line| line.starts_with(start))
            .map(|index| index + 1)
            .unwrap_or_else(|| panic!("no line starts with {start:?}"))
    }

    fn warned(warnings: &[Warning]) -> Vec<(usize, &str)> {
        warnings
            .iter()
            .map(|w| (w.line, w.directive.as_str()))
            .collect()
    }

    /// The least a configuration needs, seven lines; tests append their line as line 8.
    const BASE: &str = "dev tun\ntopology subnet\nserver 10.8.0.0 255.255.255.0\nca ca.crt\n\
                        cert server.crt\nkey server.key\ndh none\n";

    /// OpenVPN's sample-config-files/server.conf, adapted: tun with `topology subnet`,
    /// tls-crypt instead of tls-auth, data-ciphers, no DH parameters.
    const STOCK: &str = r#"#################################################
# Sample OpenVPN 2.6 config file for a
# multi-client server, for erebus serve.
#
# Comments are preceded with '#' or ';'
#################################################

# Which local IP address should OpenVPN
# listen on? (optional)
;local a.b.c.d

# Which TCP/UDP port should OpenVPN listen on?
port 1194

# TCP or UDP server?
;proto tcp
proto udp

# "dev tun" will create a routed IP tunnel.
;dev tap
dev tun

# Network topology
topology subnet

# SSL/TLS root certificate (ca), certificate
# (cert), and private key (key).
ca ca.crt
cert server.crt
key server.key  # This file should be kept secret

# Diffie hellman parameters: not needed with ECDHE.
dh none

# Configure server mode and supply a VPN subnet.
server 10.8.0.0 255.255.255.0

# Maintain a record of client <-> virtual IP address
# associations in this file.
ifconfig-pool-persist /var/log/openvpn/ipp.txt

# Push routes to the client to allow it
# to reach other private subnets behind
# the server.
push "route 192.168.10.0 255.255.255.0"
push "route 192.168.20.0 255.255.255.0"

# Certain Windows-specific network settings
# can be pushed to clients, such as DNS
# or WINS server addresses.
push "dhcp-option DNS 208.67.222.222"
push "dhcp-option DNS 208.67.220.220"

;client-to-client
;duplicate-cn

# Ping every 10 seconds, assume that remote
# peer is down if no ping received during
# a 120 second time period.
keepalive 10 120

# For extra security beyond that provided
# by SSL/TLS, create an "HMAC firewall"
# and encrypt the control channel.
tls-crypt ta.key

# Select a cryptographic cipher.
data-ciphers AES-256-GCM:CHACHA20-POLY1305
;cipher AES-256-CBC

;compress lz4-v2
;push "compress lz4-v2"

# The maximum number of concurrently connected
# clients we want to allow.
max-clients 100

# It's a good idea to reduce the OpenVPN
# daemon's privileges after initialization.
user nobody
group nogroup

# The persist options will try to avoid
# accessing certain resources on restart.
persist-key
persist-tun

# Output a short status file showing
# current connections.
status /var/log/openvpn/openvpn-status.log

# Set the appropriate level of log file verbosity.
verb 3
;mute 20

# Notify the client that when the server restarts so it
# can automatically reconnect.
explicit-exit-notify 1
"#;

    #[test]
    fn config_server_stock_configuration() {
        let (files, asked) = run_with(STOCK, &stock_files());
        let (server, warnings) = match files {
            Ok(parsed) => parsed,
            Err(error) => panic!("refused: {error}"),
        };
        assert_eq!(
            asked,
            [
                PathBuf::from("ca.crt"),
                PathBuf::from("server.crt"),
                PathBuf::from("server.key"),
                PathBuf::from("ta.key"),
            ]
        );
        assert_eq!(server.port, 1194);
        assert_eq!(server.local, None);
        assert_eq!(server.transport, Transport::Udp);
        assert_eq!(
            server.pool,
            ServerPool {
                network: Ipv4Addr::new(10, 8, 0, 0),
                netmask: Ipv4Addr::new(255, 255, 255, 0),
            }
        );
        assert_eq!(server.pool.prefix(), 24);
        assert_eq!(server.pool.server_address(), Ipv4Addr::new(10, 8, 0, 1));
        assert_eq!(server.pool.first_client(), Ipv4Addr::new(10, 8, 0, 2));
        assert_eq!(server.pool.last_client(), Ipv4Addr::new(10, 8, 0, 254));
        assert_eq!(server.pool.capacity(), 253);
        assert_eq!(server.pool.to_string(), "10.8.0.0/24");
        assert_eq!(server.topology, Some(Topology::Subnet));
        assert_eq!(server.ca.as_deref(), Some(CA.as_bytes()));
        assert_eq!(server.cert, CERT.as_bytes());
        assert_eq!(server.key.expose(), KEY.as_bytes());
        let expected_key = StaticKey::parse(STATIC_KEY.as_bytes()).unwrap();
        assert_eq!(
            server.tls_wrap,
            Some(ServerTlsWrap::Crypt { key: expected_key })
        );
        assert!(!server.remote_cert_tls_client);
        assert_eq!(server.verify_client_cert, VerifyClientCert::Require);
        assert_eq!(server.tls_version_min, None);
        assert_eq!(
            server.data_ciphers,
            [DataCipher::Aes256Gcm, DataCipher::ChaCha20Poly1305]
        );
        assert_eq!(server.data_ciphers_fallback, None);
        assert_eq!(server.auth, Digest::Sha1);
        assert_eq!(
            server.pushes,
            [
                "route 192.168.10.0 255.255.255.0",
                "route 192.168.20.0 255.255.255.0",
                "dhcp-option DNS 208.67.222.222",
                "dhcp-option DNS 208.67.220.220",
            ]
        );
        assert_eq!(
            server.keepalive,
            Some(Keepalive {
                interval: 10,
                timeout: 120
            })
        );
        assert_eq!(server.reneg_sec, None);
        assert_eq!(server.hand_window, 60);
        assert_eq!(server.tun_mtu, None);
        assert_eq!(server.max_clients, Some(100));
        assert!(!server.duplicate_cn);
        assert_eq!(server.explicit_exit_notify, Some(1));
        assert!(!server.username_as_common_name);
        assert_eq!(server.auth_verify, None);
        assert_eq!(server.script_security, 1);
        assert_eq!(server.missing_client_auth(), None);

        assert_eq!(
            warned(&warnings),
            [
                (
                    line_of(STOCK, "ifconfig-pool-persist"),
                    "ifconfig-pool-persist"
                ),
                (line_of(STOCK, "user"), "user"),
                (line_of(STOCK, "group"), "group"),
                (line_of(STOCK, "persist-key"), "persist-key"),
                (line_of(STOCK, "persist-tun"), "persist-tun"),
                (line_of(STOCK, "status"), "status"),
                (line_of(STOCK, "verb"), "verb"),
            ]
        );
        assert_eq!(line_of(STOCK, "verb"), 93);
        assert!(warnings[0].message.contains("leases are not persisted"));
        assert!(warnings[1].message.contains("unprivileged"));
        assert!(warnings[3].message.contains("nothing to persist"));
        assert!(warnings[5].message.contains("logs through its own"));
        assert_eq!(
            warnings[0].to_string(),
            format!("line 40: ifconfig-pool-persist: {}", warnings[0].message)
        );
    }

    #[test]
    fn config_server_tcp_tls_auth_and_password_auth() {
        let text = "port 443\nlocal 192.0.2.10\nproto tcp-server\ndev tun0\n\
                    server 10.9.8.0 255.255.255.252\n\
                    ca ca.crt\ncert server.crt\nkey server.key\ndh dh2048.pem\n\
                    tls-auth ta.key 0\nauth SHA256\ncipher AES-256-CBC\n\
                    data-ciphers-fallback AES-256-CBC\ntls-version-min 1.2\n\
                    remote-cert-tls client\nverify-client-cert optional\n\
                    script-security 2\n\
                    auth-user-pass-verify \"/usr/local/bin/check --db 'my users.db' -v\" via-env\n\
                    username-as-common-name\nduplicate-cn\nreneg-sec 3600 1800\nhand-window 30\n\
                    tun-mtu 1400\nexplicit-exit-notify 2\n";
        let (server, warnings) = parse(text);
        assert_eq!(server.port, 443);
        assert_eq!(server.local, Some(Ipv4Addr::new(192, 0, 2, 10)));
        assert_eq!(server.transport, Transport::Tcp);
        assert_eq!(server.pool.capacity(), 1);
        assert_eq!(server.pool.first_client(), server.pool.last_client());
        assert!(server.pool.contains_client(Ipv4Addr::new(10, 9, 8, 2)));
        assert!(!server.pool.contains_client(Ipv4Addr::new(10, 9, 8, 1)));
        assert_eq!(server.topology, None);
        match &server.tls_wrap {
            Some(ServerTlsWrap::Auth { direction, .. }) => {
                assert_eq!(*direction, keys::KeyDirection::Normal);
            }
            other => panic!("not tls-auth: {other:?}"),
        }
        assert_eq!(server.auth, Digest::Sha256);
        assert_eq!(
            server.data_ciphers,
            [
                DataCipher::Aes256Gcm,
                DataCipher::Aes128Gcm,
                DataCipher::ChaCha20Poly1305,
                DataCipher::Aes256Cbc
            ]
        );
        assert_eq!(server.data_ciphers_fallback, Some(DataCipher::Aes256Cbc));
        assert_eq!(server.tls_version_min, Some(TlsVersion::V1_2));
        assert!(server.remote_cert_tls_client);
        assert_eq!(server.verify_client_cert, VerifyClientCert::Optional);
        assert_eq!(server.script_security, 2);
        assert_eq!(
            server.auth_verify,
            Some(AuthVerify {
                command: vec![
                    "/usr/local/bin/check".to_owned(),
                    "--db".to_owned(),
                    "my users.db".to_owned(),
                    "-v".to_owned()
                ],
                method: AuthVerifyMethod::ViaEnv,
            })
        );
        assert!(server.username_as_common_name && server.duplicate_cn);
        assert_eq!(
            server.reneg_sec,
            Some(RenegSec {
                max: 3600,
                min: Some(1800)
            })
        );
        assert_eq!(server.hand_window, 30);
        assert_eq!(server.tun_mtu, Some(1400));
        assert_eq!(server.explicit_exit_notify, Some(2));
        assert_eq!(server.missing_client_auth(), None);
        assert_eq!(
            warned(&warnings),
            [
                (9, "dh"),
                (5, "server"),
                (12, "cipher"),
                (24, "explicit-exit-notify")
            ]
        );
        assert!(
            warnings[0]
                .message
                .contains("erebus uses ECDHE; the DH parameters are not used")
        );
        assert!(warnings[1].message.contains("topology subnet"));
        assert!(warnings[2].message.contains("AES-256-CBC is added"));
        assert!(warnings[3].message.contains("TCP"));
    }

    #[test]
    fn config_server_proto_variants() {
        for (proto, transport) in [
            ("udp", Transport::Udp),
            ("udp4", Transport::Udp),
            ("tcp", Transport::Tcp),
            ("tcp4", Transport::Tcp),
            ("tcp-server", Transport::Tcp),
            ("tcp4-server", Transport::Tcp),
        ] {
            let (server, _) = parse(&format!("{BASE}proto {proto}\n"));
            assert_eq!(server.transport, transport, "{proto}");
        }
        for proto in ["udp6", "tcp6", "tcp6-server"] {
            let error = refused(&format!("{BASE}proto {proto}\n"));
            assert_eq!(error.line, Some(8));
            assert!(
                error.message.contains("IPv6 is not supported yet"),
                "{error}"
            );
        }
    }

    #[test]
    fn config_server_inline_blocks() {
        let text = format!(
            "dev tun\ntopology subnet\nserver 10.8.0.0 255.255.0.0\n<ca>\n{CA}</ca>\n\
             <cert>\r\n{CERT}</cert>\n<key>\n{KEY}</key>\n<tls-crypt>\n{STATIC_KEY}</tls-crypt>\n\
             <dh>\n-----BEGIN DH PARAMETERS-----\nMIIB\n-----END DH PARAMETERS-----\n</dh>\n"
        );
        let (parsed, asked) = run_with(&text, &[]);
        let (server, warnings) = parsed.unwrap();
        assert!(asked.is_empty(), "no file is read: {asked:?}");
        assert_eq!(server.ca.as_deref(), Some(CA.as_bytes()));
        assert_eq!(server.cert, CERT.as_bytes());
        assert_eq!(server.key.expose(), KEY.as_bytes());
        assert_eq!(server.pool.prefix(), 16);
        assert_eq!(
            server.tls_wrap,
            Some(ServerTlsWrap::Crypt {
                key: StaticKey::parse(STATIC_KEY.as_bytes()).unwrap()
            })
        );
        assert_eq!(warned(&warnings), [(line_of(&text, "<dh>"), "dh")]);
    }

    #[test]
    fn config_server_inline_key_errors_point_into_the_block() {
        // The fifth line of the key body (line 9 + 1 + 5) has a non-hex character.
        let mut lines: Vec<String> = STATIC_KEY.lines().map(str::to_owned).collect();
        let header = lines.iter().position(|l| l == StaticKey::HEADER).unwrap();
        lines[header + 5].replace_range(3..4, "z");
        let key = lines.join("\n");
        let text = format!("{BASE}verb 3\n<tls-crypt>\n{key}\n</tls-crypt>\n");
        let error = refused(&text);
        assert_eq!(error.directive, "tls-crypt");
        assert_eq!(error.line, Some(9 + 1 + header + 5));
        assert!(
            error.message.contains("the inline <tls-crypt> block"),
            "{error}"
        );
        assert!(error.message.contains("'z'"), "{error}");

        // A file's problem is reported on the directive's line, with the file's own line.
        let mut files = stock_files();
        files.push(("bad.key", key.as_bytes()));
        let (parsed, _) = run_with(&format!("{BASE}tls-auth bad.key 0\n"), &files);
        let error = parsed.unwrap_err();
        assert_eq!(error.line, Some(8));
        assert!(
            error.message.contains(&format!(
                "`bad.key` is not an OpenVPN static key: its line {}",
                header + 6
            )),
            "{error}"
        );
    }

    #[test]
    fn config_server_files_are_read_by_the_names_written() {
        let text = "dev tun\ntopology subnet\nserver 10.8.0.0 255.255.255.0\n\
                    ca keys/ca.crt\ncert \"My Keys/server.crt\"\n\
                    key /etc/openvpn/server/server.key\ntls-auth 'keys/ta.key'\n";
        let files: Vec<(&str, &[u8])> = vec![
            ("keys/ca.crt", CA.as_bytes()),
            ("My Keys/server.crt", CERT.as_bytes()),
            ("/etc/openvpn/server/server.key", KEY.as_bytes()),
            ("keys/ta.key", STATIC_KEY.as_bytes()),
        ];
        let (parsed, asked) = run_with(text, &files);
        let (server, _) = parsed.unwrap();
        assert_eq!(
            asked,
            [
                PathBuf::from("keys/ca.crt"),
                PathBuf::from("My Keys/server.crt"),
                PathBuf::from("/etc/openvpn/server/server.key"),
                PathBuf::from("keys/ta.key"),
            ]
        );
        match server.tls_wrap {
            Some(ServerTlsWrap::Auth { direction, .. }) => {
                assert_eq!(direction, keys::KeyDirection::Bidirectional);
            }
            other => panic!("not tls-auth: {other:?}"),
        }
    }

    #[test]
    fn config_server_missing_file_names_file_and_line() {
        let text = format!("{BASE}tls-crypt keys/missing-ta.key\n");
        let (parsed, asked) = run_with(&text, &stock_files());
        let error = parsed.unwrap_err();
        assert_eq!(asked.last(), Some(&PathBuf::from("keys/missing-ta.key")));
        assert_eq!(error.line, Some(8));
        assert_eq!(error.directive, "tls-crypt");
        assert_eq!(
            error.to_string(),
            "line 8: tls-crypt: cannot read `keys/missing-ta.key`: No such file or directory \
             (os error 2)"
        );
        let error = refused("dev tun\nca nowhere.crt\n");
        assert_eq!(error.line, Some(2));
        assert!(error.message.contains("`nowhere.crt`"), "{error}");
    }

    /// Each bad line, appended to [`BASE`] as line 8 (or replacing a line of it), with the
    /// line the error must name and a distinctive part of its message.
    #[test]
    fn config_server_bad_configurations_name_line_and_reason() {
        let base_lines: Vec<&str> = BASE.lines().collect();
        let replaced = |index: usize, with: &str| {
            let mut lines = base_lines.clone();
            lines[index] = with;
            lines.join("\n") + "\n"
        };
        let appended = |extra: &str| format!("{BASE}{extra}\n");
        let cases: Vec<(String, usize, &str)> = vec![
            (replaced(0, "dev tap"), 1, "only tun"),
            (replaced(0, "dev tap0"), 1, "only tun"),
            (replaced(0, "dev foo"), 1, "dev-type tun"),
            (format!("{BASE}dev-type tap\n"), 8, "only tun"),
            (appended("proto udp6"), 8, "IPv6 is not supported yet"),
            (appended("proto tcp-client"), 8, "use tcp-server"),
            (appended("proto sctp"), 8, "unknown protocol `sctp`"),
            (
                appended("client-to-client"),
                8,
                "clients reach only the exit",
            ),
            (appended("comp-lzo"), 8, "VORACLE"),
            (appended("comp-lzo no"), 8, "compression framing"),
            (appended("compress lz4-v2"), 8, "VORACLE"),
            (appended("compress stub-v2"), 8, "compression framing"),
            (appended("allow-compression yes"), 8, "VORACLE"),
            (appended("push \"comp-lzo no\""), 8, "compression framing"),
            (
                replaced(2, "server 10.8.0.0 255.0.255.0"),
                3,
                "not contiguous",
            ),
            (
                replaced(2, "server 10.8.0.1 255.255.255.0"),
                3,
                "write 10.8.0.0",
            ),
            (
                replaced(2, "server 10.8.0.0 255.255.255.254"),
                3,
                "leaves no address",
            ),
            (replaced(2, "server 10.8.0.0 255.255.255.255"), 3, "/30"),
            (
                replaced(2, "server 10.8.0.0 0.0.0.0"),
                3,
                "every IPv4 address",
            ),
            (
                replaced(2, "server 10.8.0.0/24"),
                3,
                "needs at least 2 arguments",
            ),
            (
                replaced(2, "server 10.8.0.0 255.255.255.0 nopool"),
                3,
                "nopool",
            ),
            (
                replaced(2, "server fd00:: 255.255.255.0"),
                3,
                "not an IPv4 address",
            ),
            (appended("keepalive 10"), 8, "needs 2 arguments, got 1"),
            (appended("keepalive 10 15"), 8, "at least twice"),
            (
                appended("keepalive ten 120"),
                8,
                "`ten` is not a whole number",
            ),
            (appended("keepalive 0 0"), 8, "above 0"),
            (appended("data-ciphers AES-256-GCM:BF-CBC"), 8, "`BF-CBC`"),
            (appended("data-ciphers ?BF-CBC"), 8, "names no cipher"),
            (appended("cipher DES-EDE3-CBC"), 8, "`DES-EDE3-CBC`"),
            (appended("auth MD5"), 8, "`MD5`"),
            (
                appended("frobnicate 3"),
                8,
                "not supported by `erebus serve`",
            ),
            (appended("remote vpn.example.net 1194"), 8, "client option"),
            (
                appended("tls-crypt-v2 v2.key"),
                8,
                "tls-crypt-v2 is not supported yet",
            ),
            (appended("tls-crypt v2.key"), 8, "tls-crypt-v2 key"),
            (
                appended("tls-crypt not-a-key.key"),
                8,
                "not an OpenVPN static key",
            ),
            (
                appended("script-security 1\nauth-user-pass-verify check.sh via-file"),
                9,
                "`script-security 2` or higher",
            ),
            (
                appended("auth-user-pass-verify check.sh via-file"),
                8,
                "the level is 1, the default",
            ),
            (
                appended("script-security 2\nauth-user-pass-verify check.sh via-stdin"),
                9,
                "via-file or via-env",
            ),
            (
                appended("script-security 2\nauth-user-pass-verify \"\" via-env"),
                9,
                "the command is empty",
            ),
            (
                appended("auth-user-pass-verify check.sh"),
                8,
                "needs 2 arguments",
            ),
            (appended("script-security 4"), 8, "use 0 to 3"),
            (appended("push"), 8, "needs the option to push"),
            (appended("push \"\""), 8, "is empty"),
            (
                appended("push route 10.0.0.0 255.0.0.0"),
                8,
                "double quotes",
            ),
            (appended("server-ipv6 fd00::/64"), 8, "IPv6"),
            (
                appended("client-config-dir ccd"),
                8,
                "per-client configuration",
            ),
            (appended("ccd-exclusive"), 8, "per-client configuration"),
            (appended("crl-verify crl.pem"), 8, "revocation list"),
            (
                appended("plugin auth-pam.so login"),
                8,
                "no hooks or plugins",
            ),
            (
                appended("tls-auth ta.key 2"),
                8,
                "unknown key direction `2`",
            ),
            (
                appended("tls-auth ta.key 0\ntls-crypt ta.key"),
                9,
                "cannot be combined",
            ),
            (
                appended("remote-cert-tls server"),
                8,
                "remote-cert-tls client",
            ),
            (
                appended("verify-client-cert maybe"),
                8,
                "none, optional or require",
            ),
            (appended("local ::1"), 8, "IPv6"),
            (
                appended("local vpn.example.net"),
                8,
                "does not resolve names",
            ),
            (appended("port 0"), 8, "port number"),
            (appended("port 70000"), 8, "port number"),
            (appended("tun-mtu 50"), 8, "out of range"),
            (appended("max-clients 0"), 8, "at least 1"),
            (appended("mode p2p"), 8, "multi-client"),
            (
                appended("ifconfig 10.8.0.1 10.8.0.2"),
                8,
                "server NETWORK NETMASK",
            ),
            (
                appended("ifconfig-pool 10.8.0.4 10.8.0.200"),
                8,
                "server NETWORK NETMASK",
            ),
            (appended("secret static.key"), 8, "static-key"),
            (appended("topology star"), 8, "unknown topology"),
            (appended("reneg-sec 60 120"), 8, "must not exceed"),
            (appended("tls-version-min 1.4"), 8, "unknown TLS version"),
            (appended("persist-key now"), 8, "takes no arguments"),
            (replaced(3, "ca empty.crt"), 4, "`empty.crt` is empty"),
            (replaced(3, "ca der.crt"), 4, "holds no PEM certificate"),
            (
                replaced(4, "cert server.key"),
                5,
                "holds no PEM certificate",
            ),
            (replaced(5, "key server.crt"), 6, "holds no PEM private key"),
            (replaced(5, "key enc.key"), 6, "is encrypted"),
            (replaced(5, "key"), 6, "needs 1 argument, got 0"),
            (
                appended("<push>\nroute 10.0.0.0 255.0.0.0\n</push>"),
                8,
                "inline <push> block",
            ),
            (appended("<ca>\nMIIB"), 8, "never closed"),
            (appended("</ca>"), 8, "never opened"),
            (appended("verb \"3"), 8, "no closing quote"),
            (appended("ca C:\\keys\\ca.crt"), 8, "backslash"),
        ];
        assert!(cases.len() >= 20);
        for (text, line, fragment) in &cases {
            let error = refused(text);
            assert_eq!(error.line, Some(*line), "{text:?}: {error}");
            assert!(
                error.message.contains(fragment),
                "{text:?}: {error} should say {fragment:?}"
            );
            assert!(!error.directive.is_empty(), "{text:?}: {error}");
            assert!(error.to_string().starts_with(&format!("line {line}: ")));
        }
    }

    #[test]
    fn config_server_required_directives() {
        let without = |directive: &str| {
            BASE.lines()
                .filter(|line| !line.starts_with(directive))
                .map(|line| format!("{line}\n"))
                .collect::<String>()
        };
        for (directive, fragment) in [
            ("server", "no `server NETWORK NETMASK` line"),
            ("cert", "add `cert`"),
            ("key", "add `key`"),
            ("ca", "`ca` is needed"),
        ] {
            let error = refused(&without(directive));
            assert_eq!(error.line, None, "{error}");
            assert_eq!(error.directive, directive);
            assert!(error.message.contains(fragment), "{error}");
        }
        for text in ["", "# only a comment\n", "\u{feff}\r\n"] {
            assert_eq!(refused(text).directive, "server");
        }
    }

    #[test]
    fn config_server_ignored_options_warn_once_each() {
        let extra = [
            "persist-key",
            "persist-tun",
            "user nobody",
            "group nogroup",
            "chroot /var/empty",
            "daemon",
            "writepid /run/openvpn.pid",
            "status status.log 10",
            "status-version 2",
            "log openvpn.log",
            "log-append openvpn.log",
            "verb 4",
            "mute 20",
            "mute-replay-warnings",
            "route 192.168.10.0 255.255.255.0",
            "txqueuelen 1000",
            "sndbuf 393216",
            "rcvbuf 393216",
            "fast-io",
            "disable-dco",
            "management 127.0.0.1 7505",
            "ifconfig-ipv6 fd00::1 fd00::2",
            "up ./up.sh",
            "ifconfig-pool-persist ipp.txt 600",
            "ecdh-curve secp384r1",
            "tls-cipher TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384",
            "tls-ciphersuites TLS_AES_256_GCM_SHA384",
            "tls-version-max 1.3",
            "compress",
            "allow-compression asym",
        ];
        let text = format!("{BASE}{}\n", extra.join("\n"));
        let (_, warnings) = parse(&text);
        let expected: Vec<(usize, &str)> = extra
            .iter()
            .enumerate()
            .map(|(index, line)| (8 + index, line.split(' ').next().unwrap()))
            .collect();
        assert_eq!(warned(&warnings), expected);
        let route = warnings.iter().find(|w| w.directive == "route").unwrap();
        assert!(
            route
                .message
                .contains("push \"route ...\"` still reach the clients")
        );
        let management = warnings
            .iter()
            .find(|w| w.directive == "management")
            .unwrap();
        assert!(management.message.contains("no management interface"));
        // Accepted silently: the role, the device, `dh none`, `allow-compression no`.
        let (_, warnings) = parse(&format!(
            "{BASE}mode server\ntls-server\ndev-type tun\nallow-compression no\n"
        ));
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn config_server_topology_warnings() {
        let (server, warnings) = parse(BASE);
        assert_eq!(server.topology, Some(Topology::Subnet));
        assert!(warnings.is_empty());
        for (topology, expected) in [("net30", Topology::Net30), ("p2p", Topology::P2p)] {
            let text = BASE.replace("topology subnet", &format!("topology {topology}"));
            let (server, warnings) = parse(&text);
            assert_eq!(server.topology, Some(expected));
            assert_eq!(warned(&warnings), [(2, "topology")]);
            assert!(warnings[0].message.contains(&format!("not {topology}")));
        }
        let (server, warnings) = parse(&BASE.replace("topology subnet\n", ""));
        assert_eq!(server.topology, None);
        assert_eq!(warned(&warnings), [(2, "server")]);
        assert!(warnings[0].message.contains("net30"));
    }

    #[test]
    fn config_server_key_directions() {
        let direction = |extra: &str| {
            let (server, warnings) = parse(&format!("{BASE}{extra}\n"));
            match server.tls_wrap {
                Some(ServerTlsWrap::Auth { direction, .. }) => (direction, warnings),
                other => panic!("not tls-auth: {other:?}"),
            }
        };
        let (d, w) = direction("tls-auth ta.key");
        assert_eq!((d, w.len()), (keys::KeyDirection::Bidirectional, 0));
        let (d, w) = direction("tls-auth ta.key 0");
        assert_eq!((d, w.len()), (keys::KeyDirection::Normal, 0));
        let (d, w) = direction("key-direction 0\ntls-auth ta.key");
        assert_eq!((d, w.len()), (keys::KeyDirection::Normal, 0));
        // The later of the two wins, as in OpenVPN.
        let (d, w) = direction("tls-auth ta.key 0\nkey-direction 1");
        assert_eq!(d, keys::KeyDirection::Inverse);
        assert_eq!(warned(&w), [(9, "key-direction")]);
        assert!(w[0].message.contains("servers normally use 0"));
        let (d, w) = direction("tls-auth ta.key 1");
        assert_eq!(d, keys::KeyDirection::Inverse);
        assert_eq!(warned(&w), [(8, "tls-auth")]);

        let (server, warnings) = parse(&format!("{BASE}key-direction 0\ntls-crypt ta.key\n"));
        assert!(matches!(server.tls_wrap, Some(ServerTlsWrap::Crypt { .. })));
        assert_eq!(warned(&warnings), [(8, "key-direction")]);
        assert!(
            warnings[0]
                .message
                .contains("tls-crypt has no key direction")
        );
    }

    #[test]
    fn config_server_client_authentication() {
        // No CA needed when clients present no certificate; the caller decides what is enough.
        let text = BASE.replace("ca ca.crt\n", "") + "verify-client-cert none\n";
        let (server, _) = parse(&text);
        assert_eq!(server.ca, None);
        assert_eq!(server.verify_client_cert, VerifyClientCert::None);
        let gap = server.missing_client_auth().unwrap();
        assert_eq!(gap.directive, "verify-client-cert");
        assert!(gap.message.contains("users file"), "{gap}");

        let (server, _) = parse(&format!("{BASE}verify-client-cert optional\n"));
        assert!(
            server
                .missing_client_auth()
                .unwrap()
                .message
                .contains("unauthenticated")
        );

        let text =
            format!("{text}script-security 2\nauth-user-pass-verify ./verify-user.sh via-file\n");
        let (server, _) = parse(&text);
        assert_eq!(server.missing_client_auth(), None);
        let verify = server.auth_verify.unwrap();
        assert_eq!(verify.command, ["./verify-user.sh"]);
        assert_eq!(verify.method, AuthVerifyMethod::ViaFile);
    }

    #[test]
    fn config_server_data_ciphers() {
        let ciphers = |extra: &str| {
            let (server, warnings) = parse(&format!("{BASE}{extra}\n"));
            (server.data_ciphers, warnings)
        };
        let (list, warnings) = ciphers("ncp-ciphers aes-128-gcm:?BF-CBC:AES-128-GCM");
        assert_eq!(list, [DataCipher::Aes128Gcm]);
        assert_eq!(warned(&warnings), [(8, "ncp-ciphers")]);
        assert!(warnings[0].message.contains("`BF-CBC` is skipped"));
        // A cipher already in the list is not added again, and needs no warning.
        let (list, warnings) = ciphers("cipher AES-256-GCM");
        assert_eq!(list, DEFAULT_DATA_CIPHERS);
        assert!(warnings.is_empty());
        let (list, warnings) = ciphers("data-ciphers AES-256-GCM\ncipher AES-128-CBC");
        assert_eq!(list, [DataCipher::Aes256Gcm, DataCipher::Aes128Cbc]);
        assert_eq!(warned(&warnings), [(9, "cipher")]);
        let (list, warnings) = ciphers("data-ciphers AES-256-GCM:none");
        assert_eq!(list, [DataCipher::Aes256Gcm, DataCipher::None]);
        assert!(warnings[0].message.contains("unencrypted"));
    }

    #[test]
    fn config_server_port_and_lport() {
        let (server, _) = parse(&format!("{BASE}port 1195\nlport 1196\n"));
        assert_eq!(server.port, 1196);
        let (server, _) = parse(&format!("{BASE}lport 1196\n--port 443\n"));
        assert_eq!(server.port, 443);
    }

    #[test]
    fn config_server_secrets_stay_out_of_debug_output() {
        let (server, _) = parse(&format!("{BASE}tls-crypt ta.key\n"));
        let debug = format!("{server:?}");
        assert!(!debug.contains("MC4CAQAwBQserver"), "{debug}");
        assert!(!debug.contains("e2b3139f"), "{debug}");
        assert!(debug.contains("redacted"), "{debug}");
    }

    /// A static-key point-to-point server, six lines; tests append their line as line 7.
    const P2P: &str = "dev tun\nproto udp\nifconfig 10.9.0.1 10.9.0.2\nsecret ta.key 0\n\
                       cipher AES-256-CBC\nauth SHA256\n";

    #[test]
    fn config_server_static_key_mode() {
        let text = format!(
            "{P2P}keepalive 10 60\nallow-deprecated-insecure-static-crypto\nfloat\n\
             persist-key\nmode p2p\n"
        );
        let (server, warnings) = parse(&text);
        assert_eq!(warned(&warnings), [(10, "persist-key")]);
        let ServerMode::StaticKey(peer) = &server.mode else {
            panic!("not static-key: {:?}", server.mode);
        };
        assert_eq!(peer.key, StaticKey::parse(STATIC_KEY.as_bytes()).unwrap());
        assert_eq!(peer.direction, keys::KeyDirection::Normal);
        assert_eq!(peer.local, Ipv4Addr::new(10, 9, 0, 1));
        assert_eq!(peer.remote, Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(peer.cipher, DataCipher::Aes256Cbc);
        assert_eq!((peer.ping, peer.ping_restart), (Some(10), Some(60)));
        assert_eq!(server.auth, Digest::Sha256);
        assert_eq!(server.transport, Transport::Udp);
        assert_eq!(server.pool.prefix(), 30);
        assert!(server.pushes.is_empty() && server.cert.is_empty());

        // Explicit timers win over keepalive's; no direction means bidirectional; TCP.
        let text = P2P
            .replace("secret ta.key 0", "secret ta.key")
            .replace("udp", "tcp-server")
            + "ping 5\nping-restart 30\n";
        let (server, _) = parse(&text);
        let ServerMode::StaticKey(peer) = &server.mode else {
            panic!("not static-key");
        };
        assert_eq!(peer.direction, keys::KeyDirection::Bidirectional);
        assert_eq!((peer.ping, peer.ping_restart), (Some(5), Some(30)));
        assert_eq!(server.transport, Transport::Tcp);
        let (server, _) = parse(&format!("{P2P}key-direction 1\n"));
        assert!(
            matches!(&server.mode, ServerMode::StaticKey(p) if p.direction == keys::KeyDirection::Inverse)
        );
        // An inline key.
        let text = P2P.replace("secret ta.key 0\n", "key-direction 0\n")
            + &format!("<secret>\n{STATIC_KEY}</secret>\n");
        assert!(matches!(parse(&text).0.mode, ServerMode::StaticKey(_)));
        // TLS mode is still TLS mode.
        assert_eq!(parse(BASE).0.mode, ServerMode::Tls);
    }

    #[test]
    fn config_server_static_key_refusals() {
        let appended = |extra: &str| format!("{P2P}{extra}\n");
        let cases: Vec<(String, usize, &str)> = vec![
            (
                appended("server 10.8.0.0 255.255.255.0"),
                7,
                "cannot be combined",
            ),
            (
                format!("server 10.8.0.0 255.255.255.0\n{P2P}"),
                5,
                "`server` (line 1)",
            ),
            (appended("tls-server"), 7, "no TLS"),
            (appended("mode server"), 7, "no TLS"),
            (appended("ca ca.crt"), 7, "belongs to TLS mode"),
            (
                appended("push \"route 10.0.0.0 255.0.0.0\""),
                7,
                "belongs to TLS mode",
            ),
            (appended("tls-crypt ta.key"), 7, "belongs to TLS mode"),
            (
                P2P.replace("cipher AES-256-CBC", "cipher AES-256-GCM"),
                5,
                "AEAD",
            ),
            (appended("ifconfig 10.9.0.1 10.9.0.1"), 7, "must differ"),
            (
                appended("ifconfig 10.9.0.1 vpn.example.net"),
                7,
                "not an IPv4 address",
            ),
            (appended("secret missing.key"), 7, "missing.key"),
            (appended("secret ta.key 2"), 7, "unknown key direction"),
            (appended("ping 0"), 7, "above 0"),
            (appended("remote 192.0.2.1"), 7, "client option"),
            (
                "dev tun\nifconfig 10.9.0.1 10.9.0.2\ncipher AES-256-CBC\n".to_owned(),
                2,
                "without `secret`",
            ),
            ("dev tun\nmode p2p\n".to_owned(), 2, "without `secret`"),
            (format!("{BASE}ping 10"), 8, "keepalive"),
            (format!("{BASE}ping-restart 60"), 8, "keepalive"),
        ];
        for (text, line, fragment) in &cases {
            let error = refused(text);
            assert_eq!(error.line, Some(*line), "{text:?}: {error}");
            assert!(
                error.message.contains(fragment),
                "{text:?}: {error} should say {fragment:?}"
            );
        }
        for (text, directive) in [
            (P2P.replace("ifconfig 10.9.0.1 10.9.0.2\n", ""), "ifconfig"),
            (P2P.replace("cipher AES-256-CBC\n", ""), "cipher"),
        ] {
            let error = refused(&text);
            assert_eq!((error.line, error.directive.as_str()), (None, directive));
        }
    }

    const WORDS: &[&str] = &[
        "server",
        "10.8.0.0",
        "255.255.255.0",
        "255.255.255.252",
        "topology",
        "subnet",
        "dev",
        "tun",
        "tap",
        "proto",
        "udp",
        "tcp-server",
        "udp6",
        "port",
        "1194",
        "0",
        "1",
        "2",
        "ca",
        "ca.crt",
        "cert",
        "server.crt",
        "key",
        "server.key",
        "dh",
        "none",
        "tls-auth",
        "tls-crypt",
        "ta.key",
        "key-direction",
        "secret",
        "ifconfig",
        "10.8.0.1",
        "10.8.0.2",
        "ping",
        "ping-restart",
        "mode",
        "p2p",
        "AES-256-CBC",
        "push",
        "\"route 10.0.0.0 255.0.0.0\"",
        "keepalive",
        "10",
        "120",
        "data-ciphers",
        "AES-256-GCM:CHACHA20-POLY1305",
        "cipher",
        "verify-client-cert",
        "auth-user-pass-verify",
        "via-file",
        "script-security",
        "comp-lzo",
        "compress",
        "<ca>",
        "</ca>",
        "<tls-crypt>",
        "</tls-crypt>",
        "-----BEGIN CERTIFICATE-----",
        "-----BEGIN OpenVPN Static key V1-----",
        "-----END OpenVPN Static key V1-----",
        "0123456789abcdef0123456789abcdef",
        "\"",
        "'",
        "\\",
        "#",
        ";",
        "--",
        "\r",
        "\t",
        " ",
    ];

    proptest! {
        #[test]
        fn config_server_arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            file in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut read = |_: &Path| -> Result<Zeroizing<Vec<u8>>, String> {
                Ok(Zeroizing::new(file.clone()))
            };
            let _ = parse_server(&bytes, &mut read);
        }

        #[test]
        fn config_server_word_salad_never_panics(
            lines in proptest::collection::vec(
                proptest::collection::vec(proptest::sample::select(WORDS), 0..6), 0..40),
            readable in any::<bool>(),
        ) {
            let text: String = lines
                .iter()
                .map(|words| words.join(" "))
                .collect::<Vec<_>>()
                .join("\n");
            let files = stock_files();
            let mut read = |path: &Path| -> Result<Zeroizing<Vec<u8>>, String> {
                files
                    .iter()
                    .find(|(name, _)| readable && Path::new(name) == path)
                    .map(|(_, bytes)| Zeroizing::new(bytes.to_vec()))
                    .ok_or_else(|| "unreadable".to_owned())
            };
            if let Err(error) = parse_server(text.as_bytes(), &mut read) {
                // Every error that names a line names one the configuration has.
                if let Some(line) = error.line {
                    prop_assert!(line >= 1 && line <= lines.len().max(1), "{error}");
                }
                prop_assert!(!error.message.is_empty());
            }
        }

        #[test]
        fn config_server_valid_configuration_survives_any_trailing_comment(
            comment in "[^\n\r]{0,80}",
        ) {
            let text = format!("{BASE}# {comment}\n");
            prop_assert!(run(&text).is_ok());
        }
    }
}
