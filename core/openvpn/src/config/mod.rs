//! OpenVPN `.ovpn` profiles: parsing a client profile into typed settings.
//!
//! [`Profile::parse`] reads the bytes of a profile with OpenVPN 2.6's own syntax: one directive
//! per line, `#` and `;` comments, optional leading `--`, double and single quotes and backslash
//! escapes, inline blocks such as `<ca>...</ca>`, `<connection>` blocks, CRLF line endings and
//! a UTF-8 byte order mark.
//!
//! The parser reads no files. A directive that names a file (`ca ca.crt`) yields
//! [`Material::File`] with the path as written; the caller resolves it against the profile's
//! directory and reads it. Inline blocks yield [`Material::Inline`]. Key material and passwords
//! are zeroized when dropped and never appear in `Debug` output.
//!
//! Directives fall in three groups:
//!
//! - those erebus uses, parsed into the typed fields of [`Profile`] and [`Connection`];
//! - those that only make sense for a system VPN (scripts, `user`/`group`, route and DNS
//!   installation, the management interface, ...): accepted, with one [`Warning`] each;
//! - those erebus cannot honour (`dev tap`, a cipher it does not implement, HTTP and SOCKS
//!   proxies, server options): a [`ProfileError`] naming the line and saying why.
//!
//! An unknown directive is an error, except when it is listed in an earlier
//! `ignore-unknown-option` or written as `setenv opt <directive> ...`; then it is a warning.
//! That is OpenVPN's own rule.
//!
//! ```
//! use erebus_openvpn::config::{Mode, Profile, Transport};
//!
//! let text = b"client\ndev tun\nremote vpn.example.net 1194 udp\n\
//!              <ca>\n-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n</ca>\n\
//!              auth-user-pass\nscript-security 2\n";
//! let (profile, warnings) = Profile::parse(text).unwrap();
//! assert_eq!(profile.mode(), Mode::Tls);
//! assert_eq!(profile.connections[0].host, "vpn.example.net");
//! assert_eq!(profile.connections[0].transport, Transport::Udp);
//! assert_eq!(warnings[0].directive, "script-security");
//! ```

mod lexer;
mod parser;
pub mod server;
mod values;

#[cfg(test)]
mod tests;

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use erebus_sansio::tunnel::IpNet;
use zeroize::Zeroizing;

pub use values::{
    AddressFamily, AllowCompression, AuthRetry, CertRole, Compression, DataCipher, Digest,
    KeyDirection, PullFilterAction, TlsVersion, Topology, Transport, UnsupportedCipher,
    UnsupportedDigest, X509NameKind,
};

/// The default server port (`port 1194`).
pub const DEFAULT_PORT: u16 = 1194;

/// The data ciphers OpenVPN 2.6 offers when a profile sets no `data-ciphers`.
pub const DEFAULT_DATA_CIPHERS: [DataCipher; 3] = [
    DataCipher::Aes256Gcm,
    DataCipher::Aes128Gcm,
    DataCipher::ChaCha20Poly1305,
];

/// Bytes that must stay secret: zeroized on drop, redacted in `Debug`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Wraps bytes; they are zeroized when the value is dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The secret bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// How many bytes the secret has.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

/// Text that must stay secret (a password, a session token): zeroized on drop, redacted in
/// `Debug`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Wraps text; it is zeroized when the value is dropped.
    pub fn new(text: String) -> Self {
        Self(Zeroizing::new(text))
    }

    /// The secret text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

/// Key, certificate or credential material: inline in the profile, or in a file the caller
/// must read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Material {
    /// The contents of an inline block such as `<key>...</key>`, with LF line endings.
    Inline(SecretBytes),
    /// A path as written in the profile. Relative paths are relative to the profile's
    /// directory; resolving and reading the file is the caller's job.
    File(PathBuf),
}

/// Where the username and password of `auth-user-pass` come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthUserPass {
    /// `auth-user-pass` without an argument: ask the user.
    Prompt,
    /// A file, or an inline `<auth-user-pass>` block: the username on the first line, the
    /// password on the second (see [`Credentials::parse`]).
    From(Material),
}

/// Where the private key's passphrase comes from (`askpass`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Askpass {
    /// `askpass` without an argument: ask the user.
    Prompt,
    /// The first line of a file.
    File(PathBuf),
}

/// A username and password read from an `auth-user-pass` file or block.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The username (first line).
    pub username: String,
    /// The password (second line). `None` when the file holds only a username, in which case
    /// OpenVPN asks for the password.
    pub password: Option<SecretString>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why [`Credentials::parse`] failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// The first line, the username, is empty or missing.
    #[error("the auth-user-pass file has no username on its first line")]
    NoUsername,
    /// The file is not UTF-8 text.
    #[error("the auth-user-pass file is not valid UTF-8 text")]
    NotUtf8,
}

impl Credentials {
    /// Reads the `auth-user-pass` file format: the username on the first line, the password
    /// on the second, LF or CRLF line endings. Later lines are ignored, as OpenVPN does.
    pub fn parse(bytes: &[u8]) -> Result<Self, CredentialsError> {
        let text = core::str::from_utf8(bytes).map_err(|_| CredentialsError::NotUtf8)?;
        let mut lines = text
            .split('\n')
            .map(|line| line.strip_suffix('\r').unwrap_or(line));
        let username = lines.next().unwrap_or_default();
        if username.is_empty() {
            return Err(CredentialsError::NoUsername);
        }
        let password = lines
            .next()
            .filter(|password| !password.is_empty())
            .map(|password| SecretString::new(password.to_owned()));
        Ok(Self {
            username: username.to_owned(),
            password,
        })
    }
}

/// The control-channel wrapping of a connection: tls-auth, tls-crypt or tls-crypt-v2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsWrap {
    /// `tls-auth`: an HMAC over every control packet.
    Auth {
        /// The static key file (OpenVPN Static key V1 format).
        key: Material,
        /// The key direction, from `tls-auth <file> <dir>` or `key-direction`. `None` means
        /// bidirectional.
        direction: Option<KeyDirection>,
    },
    /// `tls-crypt`: control packets encrypted and authenticated with a shared key.
    Crypt {
        /// The static key file (OpenVPN Static key V1 format).
        key: Material,
    },
    /// `tls-crypt-v2`: a per-client key with a wrapped copy the server can open.
    CryptV2 {
        /// The client key file (`-----BEGIN OpenVPN tls-crypt-v2 client key-----`).
        key: Material,
    },
}

/// A static-key (`secret`) point-to-point setup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedSecret {
    /// The static key file (OpenVPN Static key V1 format).
    pub key: Material,
    /// The key direction, from `secret <file> <dir>` or `key-direction`. `None` means
    /// bidirectional.
    pub direction: Option<KeyDirection>,
}

/// `connect-retry <seconds> [max]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectRetry {
    /// Seconds to wait before the first retry (OpenVPN caps it at 65535).
    pub initial: u32,
    /// The upper bound of the exponential backoff, if given.
    pub max: Option<u32>,
}

/// `resolv-retry`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResolvRetry {
    /// `infinite`: keep trying to resolve the server's name.
    Infinite,
    /// Give up after this many seconds.
    Seconds(u32),
}

/// `mssfix [max [mtu|fixed]]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mssfix {
    /// The size, or `None` for `mssfix` alone (OpenVPN's default size).
    pub size: Option<u32>,
    /// How the size is meant.
    pub mode: MssfixMode,
}

impl Mssfix {
    /// OpenVPN's default size, counted as the whole outer packet (`mssfix 1492 mtu`).
    pub const DEFAULT_SIZE: u32 = 1492;

    /// The TCP MSS that keeps every data packet within this limit, for a data channel that
    /// adds `overhead` bytes to an inner packet (header, packet id, tag or HMAC and IV,
    /// worst-case padding, compression framing), over TCP when `tcp` (two bytes of length
    /// prefix, a TCP header) or else UDP. `None` for `mssfix 0`, which turns clamping off.
    ///
    /// The inner headers are IPv4 and TCP without options (40 bytes), as OpenVPN counts them;
    /// the outer IP header of the `mtu` and `fixed` forms is counted as IPv4.
    pub fn tcp_mss(self, overhead: usize, tcp: bool) -> Option<u16> {
        let size = usize::try_from(self.size.unwrap_or(Self::DEFAULT_SIZE)).ok()?;
        if size == 0 {
            return None;
        }
        let outer = match self.mode {
            MssfixMode::Payload => 0,
            MssfixMode::Mtu | MssfixMode::Fixed => 20 + if tcp { 22 } else { 8 },
        };
        // Never below the IPv4 minimum MSS: a tiny limit still lets TCP work.
        let mss = size.saturating_sub(outer + overhead + 40).max(536);
        Some(u16::try_from(mss).unwrap_or(u16::MAX))
    }
}

/// How the size of `mssfix` is meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MssfixMode {
    /// The size of the encapsulated UDP payload (the meaning without a keyword).
    Payload,
    /// `mtu`: the size of the whole outer IP packet.
    Mtu,
    /// `fixed`: the size of the whole outer packet, without OpenVPN's own estimate.
    Fixed,
}

/// `fragment <max> [mtu]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// The maximum size (at least 68).
    pub size: u32,
    /// `mtu`: the size counts the outer IP and UDP headers too.
    pub mtu: bool,
}

/// One server to try: a `remote` line, or a `<connection>` block, with the transport settings
/// that apply to it.
///
/// Settings given at the top level apply to every remote; a `<connection>` block starts from
/// the top-level settings given *before* it and may override them, as in OpenVPN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The line of the `remote` directive.
    pub line: usize,
    /// The server's name or address, unresolved.
    pub host: String,
    /// The server's port: from the `remote` line, else `rport`/`port`, else 1194.
    pub port: u16,
    /// UDP or TCP: from the `remote` line, else `proto`, else UDP.
    pub transport: Transport,
    /// The address families the name may resolve to.
    pub family: AddressFamily,
    /// `local`: the local address to bind, if any.
    pub local: Option<String>,
    /// `lport` (or `port`): the local port to bind, if any.
    pub local_port: Option<u16>,
    /// `nobind`: use an ephemeral local port.
    pub nobind: bool,
    /// `connect-retry`.
    pub connect_retry: Option<ConnectRetry>,
    /// `server-poll-timeout` (alias `connect-timeout`) in seconds.
    pub server_poll_timeout: Option<u32>,
    /// `explicit-exit-notify [n]`: how many exit notifications to send (UDP only).
    pub explicit_exit_notify: Option<u32>,
    /// `float`: accept packets from another server address.
    pub float: bool,
    /// `mssfix`.
    pub mssfix: Option<Mssfix>,
    /// `fragment`.
    pub fragment: Option<Fragment>,
    /// `tun-mtu`.
    pub tun_mtu: Option<u32>,
    /// `link-mtu`.
    pub link_mtu: Option<u32>,
    /// The control-channel wrap: the block's own, else the profile's.
    pub tls_wrap: Option<TlsWrap>,
}

/// `verify-x509-name <name> [kind]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyX509Name {
    /// The name, or subject, to compare with.
    pub name: String,
    /// How to compare.
    pub kind: X509NameKind,
}

/// `tls-version-min <version> [or-highest]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsVersionMin {
    /// The lowest version, or `None` when the version was not understood and `or-highest`
    /// asked for the highest one available instead.
    pub version: Option<TlsVersion>,
    /// `or-highest`: fall back to the highest supported version.
    pub or_highest: bool,
}

/// `reneg-sec <max> [min]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenegSec {
    /// Renegotiate after this many seconds (0 disables).
    pub max: u32,
    /// The lower bound of the randomised interval, if given.
    pub min: Option<u32>,
}

/// `keepalive <interval> <timeout>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// Send a ping after this many seconds without sending.
    pub interval: u32,
    /// Restart after this many seconds without receiving.
    pub timeout: u32,
}

/// `inactive <seconds> [bytes]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inactive {
    /// Exit after this many seconds of too little traffic.
    pub seconds: u32,
    /// The traffic, in bytes, below which the tunnel counts as inactive.
    pub bytes: Option<u64>,
}

/// `static-challenge <text> <echo> [format]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticChallenge {
    /// The question shown to the user.
    pub text: String,
    /// Whether the answer may be echoed while typed.
    pub echo: bool,
    /// The optional format word (`scrv1` or `concat`) of newer OpenVPN versions.
    pub format: Option<String>,
}

/// `pull-filter <action> <text>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullFilter {
    /// What to do with a matching pushed option.
    pub action: PullFilterAction,
    /// The text a pushed option must start with to match.
    pub text: String,
}

/// `redirect-gateway [flags...]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)] // one bool per flag of the directive
pub struct RedirectGateway {
    /// Route IPv4 through the tunnel (cleared by `!ipv4`).
    pub ipv4: bool,
    /// `ipv6`: route IPv6 through the tunnel too.
    pub ipv6: bool,
    /// `def1`: use two /1 routes instead of replacing the default route.
    pub def1: bool,
    /// `local`: the server is on the local network.
    pub local: bool,
    /// `autolocal`: detect `local`.
    pub autolocal: bool,
    /// `bypass-dhcp`.
    pub bypass_dhcp: bool,
    /// `bypass-dns`.
    pub bypass_dns: bool,
    /// `block-local`.
    pub block_local: bool,
}

/// `route <network> [netmask] [gateway] [metric]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// An address, a name, or one of OpenVPN's keywords (`vpn_gateway`, `net_gateway`,
    /// `remote_host`), as written.
    pub network: String,
    /// The netmask; `None` means 255.255.255.255 (or `default` was written).
    pub netmask: Option<Ipv4Addr>,
    /// The gateway as written (an address or a keyword); `None` for the tunnel's gateway.
    pub gateway: Option<String>,
    /// The route metric.
    pub metric: Option<u32>,
}

impl Route {
    /// The route as a network, when `network` is a literal IPv4 address.
    pub fn ipv4_net(&self) -> Option<IpNet> {
        let addr: Ipv4Addr = self.network.parse().ok()?;
        IpNet::from_netmask(addr, self.netmask.unwrap_or(Ipv4Addr::BROADCAST))
    }
}

/// `route-ipv6 <network/bits> [gateway] [metric]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteIpv6 {
    /// The network.
    pub network: IpNet,
    /// The gateway, if given.
    pub gateway: Option<Ipv6Addr>,
    /// The route metric.
    pub metric: Option<u32>,
}

/// `dhcp-option <type> [value]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DhcpOption {
    /// `DNS` or `DNS6`: a DNS server.
    Dns(IpAddr),
    /// `DOMAIN` (or `ADAPTER_DOMAIN_SUFFIX`): the connection's DNS suffix.
    Domain(String),
    /// `DOMAIN-SEARCH`: a search domain.
    DomainSearch(String),
    /// Any other type (`WINS`, `NTP`, `NBT`, `DISABLE-NBT`, `PROXY_HTTP`, ...), as written.
    Other {
        /// The type word.
        kind: String,
        /// The value words, joined by a space.
        value: Option<String>,
    },
}

/// `ifconfig <local> <remote-or-netmask>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ifconfig {
    /// The local tunnel address.
    pub local: Ipv4Addr,
    /// The peer's tunnel address (`net30`/`p2p`) or the netmask (`subnet`).
    pub remote_or_netmask: Ipv4Addr,
}

/// `ifconfig-ipv6 <local/bits> <remote>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfconfigIpv6 {
    /// The local address and prefix length (64 to 124).
    pub local: IpNet,
    /// The peer's address.
    pub remote: Ipv6Addr,
}

/// `replay-window <size> [seconds]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayWindow {
    /// How many packets back are still accepted (0 to 65536).
    pub size: u32,
    /// How many seconds back are still accepted (0 to 600).
    pub seconds: Option<u32>,
}

/// `setenv <name> [value]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetEnv {
    /// The variable's name.
    pub name: String,
    /// Its value (empty when none was given).
    pub value: String,
}

/// Which kind of tunnel a profile sets up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Point-to-point without any cryptography: no `secret`, no TLS.
    Plaintext,
    /// Point-to-point with a pre-shared static key (`secret`).
    StaticKey,
    /// A TLS client (`client` or `tls-client`).
    Tls,
}

/// A parsed client profile.
///
/// Fields are `None`/empty/`false` when the profile does not set them; defaults are applied
/// by the code that uses them, except where a field says otherwise.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)] // the profile format is a list of flags
pub struct Profile {
    /// `client`: shorthand for `pull` and `tls-client`, which are set too.
    pub client: bool,
    /// `pull` (or `client`): accept options pushed by the server.
    pub pull: bool,
    /// `tls-client` (or `client`): run the TLS control channel as a client.
    pub tls_client: bool,

    /// The servers to try, in order, one per `remote` line or `<connection>` block.
    pub connections: Vec<Connection>,
    /// `remote-random`: try the servers in random order.
    pub remote_random: bool,
    /// `remote-random-hostname`: prepend a random label to the server's name.
    pub remote_random_hostname: bool,
    /// `resolv-retry`.
    pub resolv_retry: Option<ResolvRetry>,
    /// `connect-retry-max`: how many times to try the whole list.
    pub connect_retry_max: Option<u32>,

    /// `dev`: the device name as written (always a tun device once parsed).
    pub dev: Option<String>,
    /// `topology`.
    pub topology: Option<Topology>,
    /// `persist-key`.
    pub persist_key: bool,
    /// `persist-tun`.
    pub persist_tun: bool,

    /// `cipher`: the static-key or point-to-point cipher, and the TLS fallback of old
    /// servers. Required in static-key mode.
    pub cipher: Option<DataCipher>,
    /// `data-ciphers` (alias `ncp-ciphers`): the ciphers to negotiate, in order. See
    /// [`Profile::negotiable_ciphers`] for the default.
    pub data_ciphers: Option<Vec<DataCipher>>,
    /// `data-ciphers-fallback`: the cipher to use with a server that cannot negotiate.
    pub data_ciphers_fallback: Option<DataCipher>,
    /// `auth`: the HMAC digest (OpenVPN's default is SHA1).
    pub auth: Option<Digest>,
    /// `secret`: the static key of static-key mode.
    pub secret: Option<SharedSecret>,

    /// `ca`.
    pub ca: Option<Material>,
    /// `cert`.
    pub cert: Option<Material>,
    /// `key`.
    pub key: Option<Material>,
    /// `pkcs12` (inline blocks hold base64 text).
    pub pkcs12: Option<Material>,
    /// `extra-certs`.
    pub extra_certs: Option<Material>,
    /// `crl-verify`.
    pub crl_verify: Option<Material>,
    /// `askpass`: the private key's passphrase.
    pub askpass: Option<Askpass>,
    /// `peer-fingerprint`: accepted SHA-256 fingerprints of the server certificate.
    pub peer_fingerprints: Vec<[u8; 32]>,
    /// `remote-cert-tls`.
    pub remote_cert_tls: Option<CertRole>,
    /// `ns-cert-type`.
    pub ns_cert_type: Option<CertRole>,
    /// `verify-x509-name`.
    pub verify_x509_name: Option<VerifyX509Name>,
    /// `tls-version-min`.
    pub tls_version_min: Option<TlsVersionMin>,
    /// `tls-version-max`.
    pub tls_version_max: Option<TlsVersion>,
    /// `tls-cipher`: TLS 1.2 cipher list, in OpenSSL syntax.
    pub tls_cipher: Option<String>,
    /// `tls-ciphersuites`: TLS 1.3 cipher suites, in OpenSSL syntax.
    pub tls_ciphersuites: Option<String>,
    /// `tls-groups`: key exchange groups, colon separated.
    pub tls_groups: Option<String>,
    /// `tls-cert-profile`.
    pub tls_cert_profile: Option<String>,
    /// `hand-window`: seconds a TLS handshake may take.
    pub hand_window: Option<u32>,
    /// `reneg-sec`.
    pub reneg_sec: Option<RenegSec>,
    /// `reneg-bytes`.
    pub reneg_bytes: Option<u64>,
    /// `reneg-pkts`.
    pub reneg_pkts: Option<u64>,
    /// `push-peer-info` (or `setenv PUSH_PEER_INFO`): send more peer info to the server.
    pub push_peer_info: bool,
    /// `setenv CLIENT_CERT 0`: the profile deliberately has no client certificate.
    pub no_client_cert: bool,

    /// `auth-user-pass`.
    pub auth_user_pass: Option<AuthUserPass>,
    /// `auth-nocache`: forget the password after use.
    pub auth_nocache: bool,
    /// `auth-retry`.
    pub auth_retry: Option<AuthRetry>,
    /// `auth-token`: a session token to send instead of the password.
    pub auth_token: Option<SecretString>,
    /// `auth-token-user`: the username (base64) to send with the token.
    pub auth_token_user: Option<SecretString>,
    /// `static-challenge`.
    pub static_challenge: Option<StaticChallenge>,

    /// `comp-lzo` or `compress`, whichever came last.
    pub compression: Option<Compression>,
    /// `allow-compression`.
    pub allow_compression: Option<AllowCompression>,

    /// `keepalive`.
    pub keepalive: Option<Keepalive>,
    /// `ping` in seconds.
    pub ping: Option<u32>,
    /// `ping-restart` in seconds.
    pub ping_restart: Option<u32>,
    /// `ping-exit` in seconds.
    pub ping_exit: Option<u32>,
    /// `inactive`.
    pub inactive: Option<Inactive>,
    /// `session-timeout` in seconds.
    pub session_timeout: Option<u32>,

    /// `route-nopull`: ignore pushed routes.
    pub route_nopull: bool,
    /// `pull-filter` rules, in order.
    pub pull_filters: Vec<PullFilter>,
    /// `redirect-gateway`.
    pub redirect_gateway: Option<RedirectGateway>,
    /// `route` lines.
    pub routes: Vec<Route>,
    /// `route-ipv6` lines.
    pub routes_ipv6: Vec<RouteIpv6>,
    /// `dhcp-option` lines.
    pub dhcp_options: Vec<DhcpOption>,
    /// `ifconfig`.
    pub ifconfig: Option<Ifconfig>,
    /// `ifconfig-ipv6`.
    pub ifconfig_ipv6: Option<IfconfigIpv6>,

    /// `setenv` lines (other than `setenv opt`).
    pub setenv: Vec<SetEnv>,
    /// `ignore-unknown-option` names.
    pub ignore_unknown_options: Vec<String>,
    /// `verb`.
    pub verb: Option<u32>,
    /// `mute`.
    pub mute: Option<u32>,
    /// `mute-replay-warnings`.
    pub mute_replay_warnings: bool,
    /// `replay-window`.
    pub replay_window: Option<ReplayWindow>,
    /// `sndbuf`.
    pub sndbuf: Option<u32>,
    /// `rcvbuf`.
    pub rcvbuf: Option<u32>,
    /// `txqueuelen`.
    pub txqueuelen: Option<u32>,
}

impl Profile {
    /// Parses a profile. Returns it with the warnings about options it accepted but ignores,
    /// or the first error.
    pub fn parse(bytes: &[u8]) -> Result<(Self, Vec<Warning>), ProfileError> {
        parser::parse(bytes)
    }

    /// Which kind of tunnel the profile sets up.
    pub fn mode(&self) -> Mode {
        if self.tls_client {
            Mode::Tls
        } else if self.secret.is_some() {
            Mode::StaticKey
        } else {
            Mode::Plaintext
        }
    }

    /// The data ciphers to offer in TLS mode: `data-ciphers`, or OpenVPN 2.6's default list.
    pub fn negotiable_ciphers(&self) -> &[DataCipher] {
        self.data_ciphers
            .as_deref()
            .unwrap_or(&DEFAULT_DATA_CIPHERS)
    }

    /// The HMAC digest: `auth`, or OpenVPN's default SHA1.
    pub fn digest(&self) -> Digest {
        self.auth.unwrap_or(Digest::Sha1)
    }
}

/// An option accepted but ignored, or accepted with a caveat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The 1-based line of the directive.
    pub line: usize,
    /// The directive's name.
    pub directive: String,
    /// What erebus does with it, and why.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: {}: {}",
            self.line, self.directive, self.message
        )
    }
}

/// Why a profile was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{directive}: {message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct ProfileError {
    /// The 1-based line of the offending directive; `None` when the problem is something the
    /// profile lacks as a whole (such as a server to connect to).
    pub line: Option<usize>,
    /// The directive's name.
    pub directive: String,
    /// A sentence saying what is wrong and, where it helps, what to write instead.
    pub message: String,
}

impl ProfileError {
    fn at(line: usize, directive: &str, message: impl Into<String>) -> Self {
        Self {
            line: Some(line),
            directive: directive.to_owned(),
            message: message.into(),
        }
    }
}
