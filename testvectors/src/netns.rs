//! The interop harness: a real OpenVPN 2.6 server, a DNS server and an HTTP server in network
//! namespaces that each test creates and deletes.
//!
//! ```text
//!  netns <name>c (client side)                      netns <name>s (server side)
//!  erebus as nobody, or the stock openvpn client    openvpn 2.6 (udp 10.99.0.1:1194 or tcp-server)
//!  vcli 10.99.0.2/24 <============ veth ============> vsrv 10.99.0.1/24
//!  (tun0 10.8.0.2 only for the stock client)        tun0 10.8.0.1 (peer 10.8.0.2, or /24)
//!                                                   dnsmasq 10.8.0.1:53  *.erebus.test -> 10.8.0.1
//!                                                   httpd.py 10.8.0.1:8080, https 10.8.0.1:8443
//! ```
//!
//! [`OpenVpnServer::start`] builds a fresh pair of namespaces for every instance, so tests run
//! in parallel threads and processes without sharing anything. The veth pair is created
//! directly inside the two namespaces and IPv6 is off in both; the host namespace is never
//! touched. The client namespace has no route to `10.8.0.0/24`: the tunnel addresses are
//! reachable only through a VPN tunnel.
//!
//! Tests of a client that must survive losing its server stop openvpn alone
//! ([`OpenVpnServer::stop_openvpn`]: `SIGTERM`, which tells UDP clients `RESTART`, or
//! `SIGKILL`) and start it again with the same keys ([`OpenVpnServer::start_openvpn_again`]);
//! dnsmasq and the HTTP server keep running, bound to 10.8.0.1, and answer again once openvpn
//! has brought the address back.
//!
//! Dropping the server kills exactly the processes it started (by PID), then anything still
//! running inside its two namespaces, deletes the namespaces and removes its directory. When a
//! test process dies without unwinding, the next harness run in any process removes the
//! namespaces and directories left behind (their names carry the dead process's PID).
//!
//! Everything here needs root, `/dev/net/tun`, `ip netns` and the programs listed in
//! [`require_netns`]. Interop tests start with [`should_run_interop`], which never lets a
//! test pass silently when the machine cannot run it.
//!
//! A started server process is bound to the thread that started it: it gets `SIGKILL` when
//! that thread ends (so nothing survives a test process killed by a timeout). Keep each
//! [`OpenVpnServer`] inside the test that made it; do not share one through a `static`.
//!
//! The HTTP server also serves the [pattern stream](PatternStream) at `/bytes/N`, so tests can
//! check the SHA-256 of large downloads without storing files. It serves the same paths over
//! HTTPS on port 8443 with a certificate for `web.erebus.test` and `10.8.0.1`.
//!
//! The TLS profiles and the HTTPS server use a throw-away PKI made with `openssl` once per test
//! process (certificates valid 2020-2049, whatever the clock says) and kept in memory; each
//! instance writes the files it needs into its own directory.

use std::fmt;
use std::fs;
use std::io;
use std::marker::PhantomData;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Outer (veth) address of the server namespace, where OpenVPN listens.
pub const SERVER_OUTER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// Outer (veth) address of the client namespace.
pub const CLIENT_OUTER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
/// Prefix length of the veth network.
pub const OUTER_PREFIX_LEN: u8 = 24;
/// Port OpenVPN listens on, for UDP and TCP alike.
pub const OPENVPN_PORT: u16 = 1194;
/// A port of [`SERVER_OUTER_ADDR`] where nothing listens, UDP or TCP
/// ([`OpenVpnServer::dead_remote`]).
pub const DEAD_REMOTE_PORT: u16 = 1195;
/// Server end of the tunnel; dnsmasq and the HTTP server listen here only.
pub const SERVER_TUNNEL_ADDR: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 1);
/// Client end of the tunnel, the address every profile gives the client.
pub const CLIENT_TUNNEL_ADDR: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 2);
/// Port of the HTTP server on [`SERVER_TUNNEL_ADDR`].
pub const HTTP_PORT: u16 = 8080;
/// Port of the DNS server on [`SERVER_TUNNEL_ADDR`].
pub const DNS_PORT: u16 = 53;
/// Domain whose every name (and the domain itself) resolves to [`SERVER_TUNNEL_ADDR`].
pub const DNS_DOMAIN: &str = "erebus.test";
/// The name tests look up through the tunnel DNS.
pub const DNS_NAME: &str = "web.erebus.test";
/// Text contained in the page the HTTP server returns for `GET /`.
pub const HTTP_MARKER: &str = "erebus-harness-ok";
/// Port of the HTTPS server on [`SERVER_TUNNEL_ADDR`] (same paths as the HTTP server).
pub const HTTPS_PORT: u16 = 8443;
/// Common name (and DNS name) of the OpenVPN server's certificate. TLS client profiles pin it
/// with `verify-x509-name server.erebus.test name`.
pub const SERVER_CERT_NAME: &str = "server.erebus.test";
/// Common name of the client certificate in the `tls-crypt` and `tls-legacy-prf` profiles.
pub const CLIENT_CERT_NAME: &str = "client1";
/// Username the username/password servers accept.
pub const AUTH_USERNAME: &str = "erebus";
/// The password the username/password servers accept for [`AUTH_USERNAME`].
pub const AUTH_PASSWORD: &str = "erebus-harness-secret-7";
/// A password the username/password servers refuse (`AUTH_FAILED`).
pub const WRONG_AUTH_PASSWORD: &str = "not-the-erebus-password";
/// Start of the validity of every harness certificate (`openssl ca -startdate`).
pub const CERT_NOT_BEFORE: &str = "20200101000000Z";
/// End of the validity of every harness certificate (`openssl ca -enddate`).
pub const CERT_NOT_AFTER: &str = "20491231235959Z";
/// Name of the veth end in the server namespace.
pub const SERVER_VETH: &str = "vsrv";
/// Name of the veth end in the client namespace.
pub const CLIENT_VETH: &str = "vcli";
/// Prefix of every namespace and directory the harness creates: `ebt<pid>n<counter>`, then
/// `s` (server) or `c` (client) for the namespaces.
pub const NAME_PREFIX: &str = "ebt";
/// The address of the client namespace's own resolver outside the tunnel (see
/// [`OpenVpnServer::start_client_resolver`]): on the namespace's loopback.
pub const CLIENT_RESOLVER_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 53);
/// What that resolver answers for every name (TEST-NET-1: nothing here routes to it).
pub const CLIENT_RESOLVER_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Where `ip netns exec` looks for the files it bind-mounts over `/etc` (`<dir>/<ns>/<file>`).
const NETNS_ETC_DIR: &str = "/etc/netns";

/// Source of the HTTP server, written into each instance directory.
const HTTPD_PY: &str = include_str!("../harness/httpd.py");
/// Source of the DNS and ICMP probes, written into each instance directory.
const PROBE_PY: &str = include_str!("../harness/probe.py");
const PLAINTEXT_CONF: &str = include_str!("../harness/server/plaintext.conf");
const STATIC_KEY_CONF: &str = include_str!("../harness/server/static-key.conf");
const TLS_CRYPT_CONF: &str = include_str!("../harness/server/tls-crypt.conf");
const TLS_AUTH_USERPASS_CONF: &str = include_str!("../harness/server/tls-auth-userpass.conf");
const TLS_AUTH_USERPASS_LZO_CONF: &str =
    include_str!("../harness/server/tls-auth-userpass-lzo.conf");
const TLS_LEGACY_PRF_CONF: &str = include_str!("../harness/server/tls-legacy-prf.conf");
/// auth-user-pass-verify script of the username/password profiles.
const VERIFY_USER_SH: &str = include_str!("../harness/server/verify-user.sh");
/// Source of the `LD_PRELOAD` library that hides TLS_KEY_EXPORT from the legacy-PRF server;
/// compiled with `cc` once per process ([`legacy_prf_shim`]).
const LEGACY_PRF_SHIM_C: &str = include_str!("../harness/legacy-prf-shim.c");
/// The compiled shim in each legacy-PRF instance directory.
const LEGACY_PRF_SHIM_SO: &str = "legacy-prf-shim.so";
/// What the shim logs (the harness sets `EREBUS_PRF_SHIM_LOG` to this file).
const LEGACY_PRF_SHIM_LOG: &str = "legacy-prf-shim.log";
/// The line the shim logs once it is loaded into openvpn with its hook in place.
const LEGACY_PRF_SHIM_READY: &str = "BIO_read hooked";
/// Data ciphers of the certificate profiles, on the server and in the client profile.
const TLS_CRYPT_DATA_CIPHERS: &str = "AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305";

/// Default bound for the server, dnsmasq and the HTTP server to come up.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a stopped process gets between `SIGTERM` and `SIGKILL`. The stock client needs
/// about a second to send its exit notification.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(3);
/// How long [`OpenVpnServer::stop_openvpn`] gives openvpn after `SIGTERM` (a TLS server over
/// UDP first tells its clients `RESTART`, which takes it about 2 s).
const OPENVPN_TERMINATE_GRACE: Duration = Duration::from_secs(5);
/// How long [`OpenVpnServer::stop_openvpn`] waits for the tun address to go once openvpn has
/// exited.
const TUN_GONE_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines of a log file quoted in errors.
pub(crate) const LOG_TAIL_LINES: usize = 25;

/// What the OpenVPN server in the namespace is configured for.
///
/// Each profile has a config in `testvectors/harness/server/<name>.conf`; its keys are
/// generated at run time into the instance directory and the client profile
/// ([`OpenVpnServer::client_profile`]) carries everything inline, as a provider's would.
///
/// The TLS profiles run `server 10.8.0.0 255.255.255.0` with `topology subnet`, `dh none`,
/// `keepalive 10 60`, and push `dhcp-option DNS 10.8.0.1` and `dhcp-option DOMAIN
/// erebus.test`; the client always gets `10.8.0.2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServerProfile {
    /// Point-to-point without TLS and without a key: bare IP packets on the wire.
    Plaintext,
    /// Point-to-point with a pre-shared `--secret` key (key direction 0 on the server, 1 on
    /// the client), `cipher AES-256-CBC`, `auth SHA256`.
    StaticKey,
    /// TLS with a client certificate (`CN=client1`), `tls-crypt`, data ciphers
    /// `AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305`. The client profile pins the server with
    /// `remote-cert-tls server` and `verify-x509-name server.erebus.test name`.
    TlsCrypt,
    /// TLS with username and password and no client certificate (`verify-client-cert none`),
    /// `tls-auth` (key direction 0 on the server, 1 in the client profile) with `auth SHA512`,
    /// `data-ciphers CHACHA20-POLY1305`, and `compress stub-v2` pushed. The client profile says
    /// `auth-user-pass` without a file: pass [`OpenVpnServer::credentials_path`].
    TlsAuthUserPass,
    /// [`TlsAuthUserPass`](Self::TlsAuthUserPass) with `comp-lzo no` pushed instead of
    /// `compress stub-v2`: every data-channel payload starts with the byte `0xFA`.
    TlsAuthUserPassLzo,
    /// The [`TlsCrypt`](Self::TlsCrypt) setup on a server that behaves like OpenVPN 2.5: it
    /// never sees `TLS_KEY_EXPORT` (bit 3 of `IV_PROTO`), pushes no `tls-ekm` in
    /// `protocol-flags`, and both sides derive the data-channel keys with the OpenVPN TLS PRF.
    /// OpenVPN 2.6 has no option for that (it uses TLS-EKM whenever the client announces the
    /// bit), so the server runs with an `LD_PRELOAD` library (`legacy-prf-shim.c`, compiled at
    /// test time with `cc`) that clears the bit in the peer info it reads. Every client is
    /// admitted, the stock 2.6 one included; [`OpenVpnServer::iv_proto_rewrites`] lists what
    /// the library changed.
    TlsLegacyPrf,
}

impl ServerProfile {
    /// Every profile the harness supports.
    pub const ALL: [Self; 6] = [
        Self::Plaintext,
        Self::StaticKey,
        Self::TlsCrypt,
        Self::TlsAuthUserPass,
        Self::TlsAuthUserPassLzo,
        Self::TlsLegacyPrf,
    ];

    /// The point-to-point profiles (no TLS).
    pub const POINT_TO_POINT: [Self; 2] = [Self::Plaintext, Self::StaticKey];

    /// The TLS (client/server mode) profiles.
    pub const TLS: [Self; 4] = [
        Self::TlsCrypt,
        Self::TlsAuthUserPass,
        Self::TlsAuthUserPassLzo,
        Self::TlsLegacyPrf,
    ];

    /// Short name, as used in file names and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::StaticKey => "static-key",
            Self::TlsCrypt => "tls-crypt",
            Self::TlsAuthUserPass => "tls-auth-userpass",
            Self::TlsAuthUserPassLzo => "tls-auth-userpass-lzo",
            Self::TlsLegacyPrf => "tls-legacy-prf",
        }
    }

    /// The profile called `name` (see [`name`](Self::name)).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|profile| profile.name() == name)
    }

    /// The server configuration (`testvectors/harness/server/<name>.conf`).
    pub fn server_config(self) -> &'static str {
        match self {
            Self::Plaintext => PLAINTEXT_CONF,
            Self::StaticKey => STATIC_KEY_CONF,
            Self::TlsCrypt => TLS_CRYPT_CONF,
            Self::TlsAuthUserPass => TLS_AUTH_USERPASS_CONF,
            Self::TlsAuthUserPassLzo => TLS_AUTH_USERPASS_LZO_CONF,
            Self::TlsLegacyPrf => TLS_LEGACY_PRF_CONF,
        }
    }

    /// Whether the server runs TLS (`server` mode, pushed options), i.e. not point-to-point.
    pub fn is_tls(self) -> bool {
        !self.is_point_to_point()
    }

    /// Whether the client authenticates with a certificate (`<cert>` and `<key>` inline in
    /// the client profile).
    pub fn uses_client_certificate(self) -> bool {
        matches!(self, Self::TlsCrypt | Self::TlsLegacyPrf)
    }

    /// Whether the client authenticates with [`AUTH_USERNAME`] and [`AUTH_PASSWORD`]
    /// (`auth-user-pass` in the client profile).
    pub fn uses_username_password(self) -> bool {
        matches!(self, Self::TlsAuthUserPass | Self::TlsAuthUserPassLzo)
    }

    /// The option that protects the control channel with a pre-shared key: `tls-crypt` or
    /// `tls-auth` (also the name of the inline block in the client profile); `None` without
    /// TLS.
    pub fn control_channel_key(self) -> Option<&'static str> {
        match self {
            Self::TlsCrypt | Self::TlsLegacyPrf => Some("tls-crypt"),
            Self::TlsAuthUserPass | Self::TlsAuthUserPassLzo => Some("tls-auth"),
            Self::Plaintext | Self::StaticKey => None,
        }
    }

    /// Whether the server runs in point-to-point mode (no `--server`, no pushed options).
    ///
    /// A p2p server logs `Initialization Sequence Completed` only once a client has sent
    /// something, and the stock p2p client logs it only once the server has sent something,
    /// which can take up to the `ping` interval (10 s): wait for traffic, not for that line.
    pub fn is_point_to_point(self) -> bool {
        matches!(self, Self::Plaintext | Self::StaticKey)
    }
}

impl fmt::Display for ServerProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Transport between client and server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// OpenVPN over UDP.
    Udp,
    /// OpenVPN over TCP; the client connects to the server.
    Tcp,
}

impl Transport {
    /// Both transports.
    pub const ALL: [Self; 2] = [Self::Udp, Self::Tcp];

    /// Short name: `udp` or `tcp`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }

    /// The server's `proto` value. A p2p server must say `tcp-server` explicitly.
    pub fn server_proto(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp-server",
        }
    }

    /// The client profile's `proto` value. A p2p client must say `tcp-client` explicitly
    /// (plain `tcp` is refused by OpenVPN as ambiguous without `client`/`tls-client`).
    pub fn client_proto(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp-client",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What protects the control channel of a [`TlsSetup`] server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControlWrap {
    /// `tls-crypt`: every control packet encrypted and authenticated with a pre-shared key.
    TlsCrypt,
    /// `tls-auth` with key direction 0 on the server and 1 on the client: an HMAC on every
    /// control packet.
    TlsAuth,
    /// Neither: plain TLS records in the control channel.
    Neither,
}

impl ControlWrap {
    /// All three.
    pub const ALL: [Self; 3] = [Self::TlsCrypt, Self::TlsAuth, Self::Neither];

    /// The option (and inline block) name: `tls-crypt` or `tls-auth`; `None` for
    /// [`Neither`](Self::Neither).
    pub fn option(self) -> Option<&'static str> {
        match self {
            Self::TlsCrypt => Some("tls-crypt"),
            Self::TlsAuth => Some("tls-auth"),
            Self::Neither => None,
        }
    }

    /// Short name for scenario names: `tls-crypt`, `tls-auth` or `no-wrap`.
    pub fn name(self) -> &'static str {
        self.option().unwrap_or("no-wrap")
    }
}

/// How the client of a [`TlsSetup`] server authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientAuth {
    /// A client certificate (`CN=client1`) only.
    Certificate,
    /// [`AUTH_USERNAME`] and [`AUTH_PASSWORD`] only (`verify-client-cert none`).
    Password,
    /// Both: the certificate and the username and password.
    CertificateAndPassword,
}

impl ClientAuth {
    /// Whether the client presents a certificate.
    pub fn certificate(self) -> bool {
        !matches!(self, Self::Password)
    }

    /// Whether the client sends a username and password.
    pub fn password(self) -> bool {
        !matches!(self, Self::Certificate)
    }
}

/// A TLS server assembled from parts, for scenarios the fixed [`ServerProfile`]s do not
/// cover (see [`OpenVpnServer::start_setup`]). The server offers `data-ciphers`
/// [`TlsSetup::SERVER_DATA_CIPHERS`] with `auth SHA256`, so the client picks the data cipher by
/// the `data-ciphers` line of its profile; it runs `topology subnet` with
/// `server 10.8.0.0 255.255.255.0` and pushes the DNS server and domain as the profiles do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSetup {
    /// The control-channel protection.
    pub control: ControlWrap,
    /// How the client authenticates.
    pub client_auth: ClientAuth,
    /// Whether the server keys the data channel with the OpenVPN PRF instead of TLS-EKM (as
    /// OpenVPN 2.5 does): the legacy-PRF library of [`ServerProfile::TlsLegacyPrf`] hides the
    /// client's `TLS_KEY_EXPORT` bit.
    pub legacy_prf: bool,
    /// Lines appended to the server's configuration (later options win): `compress`,
    /// `topology`, `tun-mtu`, `push "route ..."`.
    pub server_lines: Vec<String>,
    /// Lines appended to the client profile.
    pub client_lines: Vec<String>,
    /// An address the server namespace gets on its loopback device, with a second HTTP server
    /// (the same pages) bound to it: the target of a pushed route beyond the tunnel subnet.
    pub routed_http: Option<Ipv4Addr>,
}

impl TlsSetup {
    /// The data ciphers every [`TlsSetup`] server offers, in its order of preference.
    pub const SERVER_DATA_CIPHERS: &'static str =
        "AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305:AES-256-CBC";

    /// A server with `control`, client certificates and TLS-EKM, nothing appended.
    pub fn new(control: ControlWrap) -> Self {
        Self {
            control,
            client_auth: ClientAuth::Certificate,
            legacy_prf: false,
            server_lines: Vec::new(),
            client_lines: Vec::new(),
            routed_http: None,
        }
    }

    /// The server's configuration file.
    fn server_config(&self) -> String {
        let mut text = format!(
            "# erebus interop harness: an assembled TLS server ({:?}).\n\
             dev tun\n\
             local {SERVER_OUTER_ADDR}\n\
             port {OPENVPN_PORT}\n\
             topology subnet\n\
             server 10.8.0.0 255.255.255.0\n\
             ca ca.crt\n\
             cert server.crt\n\
             key server.key\n\
             dh none\n\
             auth SHA256\n\
             data-ciphers {}\n",
            self.control,
            Self::SERVER_DATA_CIPHERS
        );
        match self.control {
            ControlWrap::TlsCrypt => text.push_str("tls-crypt tls-crypt.key\n"),
            ControlWrap::TlsAuth => text.push_str("tls-auth tls-auth.key 0\n"),
            ControlWrap::Neither => {}
        }
        if self.client_auth.password() {
            text.push_str(
                "script-security 2\n\
                 auth-user-pass-verify ./verify-user.sh via-file\n",
            );
        }
        if !self.client_auth.certificate() {
            text.push_str("verify-client-cert none\nusername-as-common-name\n");
        }
        text.push_str(&format!(
            "push \"dhcp-option DNS {SERVER_TUNNEL_ADDR}\"\n\
             push \"dhcp-option DOMAIN {DNS_DOMAIN}\"\n\
             keepalive 10 60\n\
             disable-dco\n"
        ));
        for line in &self.server_lines {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// The client profile, everything inline.
    fn client_profile(
        &self,
        transport: Transport,
        ca: &str,
        certificate: (&str, &str),
        control_channel_key: Option<&str>,
    ) -> String {
        let mut text = format!(
            "# erebus interop harness: client profile for an assembled TLS server over \
             {transport}.\n\
             # The keys below are throw-away test keys; the certificates come from a test CA.\n\
             client\n\
             dev tun\n\
             proto {}\n\
             remote {SERVER_OUTER_ADDR} {OPENVPN_PORT}\n\
             nobind\n\
             remote-cert-tls server\n\
             verify-x509-name {SERVER_CERT_NAME} name\n\
             auth SHA256\n",
            transport.client_proto()
        );
        if self.client_auth.password() {
            text.push_str("auth-user-pass\n");
        }
        if transport == Transport::Udp {
            text.push_str("explicit-exit-notify 1\n");
        }
        text.push_str("verb 3\n");
        push_inline_block(&mut text, "ca", ca);
        if self.client_auth.certificate() {
            push_inline_block(&mut text, "cert", certificate.0);
            push_inline_block(&mut text, "key", certificate.1);
        }
        if let (Some(option), Some(key)) = (self.control.option(), control_channel_key) {
            if self.control == ControlWrap::TlsAuth {
                text.push_str("key-direction 1\n");
            }
            push_inline_block(&mut text, option, key);
        }
        for line in &self.client_lines {
            text.push_str(line);
            text.push('\n');
        }
        text
    }
}

/// Why the harness could not do something.
///
/// `Debug` prints the same multi-line text as `Display`, so `.expect()` in a test shows the
/// log excerpts readably.
#[non_exhaustive]
pub enum HarnessError {
    /// The machine cannot run the harness (see [`require_netns`]).
    Unsupported(String),
    /// A setup command failed.
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed.
        output: String,
    },
    /// Something did not become ready in time.
    NotReady {
        /// What was awaited.
        what: String,
        /// How long the harness waited.
        waited: Duration,
        /// Log excerpts that explain it.
        detail: String,
    },
    /// A process exited while it should have kept running.
    Exited {
        /// Which process.
        what: String,
        /// Its exit status.
        status: String,
        /// Log excerpts that explain it.
        detail: String,
    },
    /// Something that should have gone away (a stopped process, an address on its device) was
    /// still there.
    StillThere {
        /// What should have gone.
        what: String,
        /// How long the harness waited.
        waited: Duration,
        /// Log excerpts that explain it.
        detail: String,
    },
    /// A command run in a namespace did not finish in time (it was killed).
    Timeout {
        /// The command line.
        command: String,
        /// The time limit.
        limit: Duration,
        /// What it printed before it was killed.
        output: String,
    },
    /// A file or process operation failed.
    Io {
        /// What the harness was doing.
        context: String,
        /// The error.
        source: io::Error,
    },
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unsupported(missing) => {
                write!(f, "the interop harness cannot run here:\n{missing}")
            }
            Self::Command {
                command,
                status,
                output,
            } => write!(f, "`{command}` failed ({status}):\n{output}"),
            Self::NotReady {
                what,
                waited,
                detail,
            } => write!(f, "{what} did not come up within {waited:?}\n{detail}"),
            Self::Exited {
                what,
                status,
                detail,
            } => write!(f, "{what} exited unexpectedly ({status})\n{detail}"),
            Self::StillThere {
                what,
                waited,
                detail,
            } => write!(f, "{what} was still there after {waited:?}\n{detail}"),
            Self::Timeout {
                command,
                limit,
                output,
            } => write!(
                f,
                "`{command}` did not finish within {limit:?} and was killed\n{output}"
            ),
            Self::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl fmt::Debug for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for HarnessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub(crate) fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> HarnessError {
    let context = context.into();
    move |source| HarnessError::Io { context, source }
}

// ---------------------------------------------------------------------------------------------
// Requirements and the interop gate
// ---------------------------------------------------------------------------------------------

/// Absolute paths of the programs the harness runs.
#[derive(Debug)]
struct Programs {
    ip: PathBuf,
    setpriv: PathBuf,
    openvpn: PathBuf,
    dnsmasq: PathBuf,
    python3: PathBuf,
    sysctl: PathBuf,
    kill: PathBuf,
    openssl: PathBuf,
    /// The C compiler, for the legacy-PRF server's `LD_PRELOAD` library.
    cc: PathBuf,
}

/// Looks a program up in the system directories (`/usr/sbin`, `/usr/bin`, `/sbin`, `/bin`)
/// first, then in `PATH`. Use it for programs run as nobody: a `PATH` entry under `/root`
/// (a version-manager shim, say) is not executable for nobody.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let system = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from);
    let from_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    system
        .into_iter()
        .chain(from_path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

pub(crate) fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn find_programs() -> Result<Programs, String> {
    let mut missing = Vec::new();
    let mut need = |name: &str, package: &str| {
        find_program(name).unwrap_or_else(|| {
            missing.push(format!("  - `{name}` not found (Debian package {package})"));
            PathBuf::new()
        })
    };
    let programs = Programs {
        ip: need("ip", "iproute2"),
        setpriv: need("setpriv", "util-linux"),
        openvpn: need("openvpn", "openvpn"),
        dnsmasq: need("dnsmasq", "dnsmasq-base"),
        python3: need("python3", "python3"),
        sysctl: need("sysctl", "procps"),
        kill: need("kill", "procps"),
        openssl: need("openssl", "openssl"),
        cc: need("cc", "gcc, with libc6-dev"),
    };
    if missing.is_empty() {
        Ok(programs)
    } else {
        Err(missing.join("\n"))
    }
}

fn programs() -> Result<&'static Programs, HarnessError> {
    static PROGRAMS: OnceLock<Result<Programs, String>> = OnceLock::new();
    PROGRAMS
        .get_or_init(find_programs)
        .as_ref()
        .map_err(|missing| HarnessError::Unsupported(missing.clone()))
}

/// Checks that this machine can run the interop harness: root, `/dev/net/tun`, working
/// `ip netns`, and the programs it starts (`openvpn`, `dnsmasq`, `python3`, `setpriv`,
/// `sysctl`, `kill`, `openssl`, and `cc` for the legacy-PRF server's preloaded library). The
/// error lists everything that is missing, one item per line.
pub fn require_netns() -> Result<(), String> {
    let mut missing = Vec::new();
    match effective_uid() {
        Some(0) => {}
        Some(uid) => missing.push(format!(
            "  - root: this process runs as uid {uid}; namespaces and tun devices need root"
        )),
        None => missing.push("  - root: cannot read the uid from /proc/self/status".into()),
    }
    if let Err(error) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        missing.push(format!("  - /dev/net/tun: cannot open it ({error})"));
    }
    match find_programs() {
        Ok(found) => {
            let listed = Command::new(&found.ip).args(["netns", "list"]).output();
            match listed {
                Ok(out) if out.status.success() => {}
                Ok(out) => missing.push(format!(
                    "  - `ip netns list` failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(error) => missing.push(format!("  - `ip netns list` failed: {error}")),
            }
            match Command::new(&found.openvpn).arg("--version").output() {
                // `openvpn --version` exits with status 1 by design; it must print its banner.
                Ok(out) if String::from_utf8_lossy(&out.stdout).starts_with("OpenVPN 2.") => {}
                Ok(out) => missing.push(format!(
                    "  - `openvpn --version` did not print an OpenVPN 2.x banner: {}",
                    String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .next()
                        .unwrap_or("")
                )),
                Err(error) => missing.push(format!("  - `openvpn --version` failed: {error}")),
            }
        }
        Err(programs_missing) => missing.push(programs_missing),
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("\n"))
    }
}

/// The gate every interop test passes first: `if !should_run_interop("name") { return; }`.
///
/// Returns `true` when [`require_netns`] is satisfied. Otherwise it prints a banner to stderr
/// saying what is missing and that the test did NOT run, and then:
/// - under `CI=true` it panics (the test fails), whatever else is set;
/// - with `EREBUS_SKIP_INTEROP=1` it returns `false`, and the test returns early;
/// - otherwise it panics, so an interop test never passes without having run.
pub fn should_run_interop(test_name: &str) -> bool {
    interop_gate(
        test_name,
        require_netns(),
        "network-namespace harness",
        "# Run the interop tests as root on Linux with /dev/net/tun; .ci/run installs the\n\
         # packages (openvpn openssl dnsmasq-base iproute2 util-linux procps python3 curl gcc \
         libc6-dev).",
    )
}

/// The rule of [`should_run_interop`] for any harness: `requirement` is what its
/// `require_*` check returned, `harness` names it in the banner ("network-namespace
/// harness"), and `install_note` (lines starting with `# `) says how to get what is missing.
pub(crate) fn interop_gate(
    test_name: &str,
    requirement: Result<(), String>,
    harness: &str,
    install_note: &str,
) -> bool {
    let Err(missing) = requirement else {
        return true;
    };
    let in_ci = std::env::var("CI").is_ok_and(|value| value == "true" || value == "1");
    let skip_allowed = std::env::var("EREBUS_SKIP_INTEROP").is_ok_and(|value| value == "1");
    let rule = "#".repeat(78);
    let missing_lines = missing
        .lines()
        .map(|line| format!("# {line}"))
        .collect::<Vec<_>>()
        .join("\n");
    let verdict = if in_ci {
        "It FAILS because CI=true."
    } else if skip_allowed {
        "It is SKIPPED because EREBUS_SKIP_INTEROP=1 (test.sh counts it as skipped)."
    } else {
        "It FAILS; set EREBUS_SKIP_INTEROP=1 to skip it outside CI."
    };
    shout(&format!(
        "\n{rule}\n# INTEROP TEST NOT RUN: {test_name}\n#\n# This machine cannot run the \
         {harness}. Missing:\n{missing_lines}\n#\n{install_note}\n# {verdict}\n{rule}\n"
    ));
    if in_ci {
        panic!("interop test {test_name} did not run (CI=true): missing\n{missing}");
    }
    if skip_allowed {
        return false;
    }
    panic!(
        "interop test {test_name} cannot run: missing\n{missing}\n\
         (set EREBUS_SKIP_INTEROP=1 to skip it outside CI)"
    );
}

/// Writes to the process's stderr directly: the test harness captures `eprintln!` of
/// passing tests, and a skipped interop test passes.
fn shout(text: &str) {
    use std::io::Write as _;
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// Who runs a command in the client namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunAs {
    /// root, with all capabilities (for the stock OpenVPN client, raw-socket pings).
    Root,
    /// `nobody:nogroup` without supplementary groups or capabilities, as erebus runs.
    Nobody,
}

/// What a finished command printed.
#[derive(Debug)]
pub struct CommandOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr.
    pub stderr: Vec<u8>,
}

impl CommandOutput {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Stdout as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stderr as text (lossy).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

impl fmt::Display for CommandOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            tail_text(&self.stdout_text(), LOG_TAIL_LINES),
            tail_text(&self.stderr_text(), LOG_TAIL_LINES)
        )
    }
}

/// A child process the harness started and must stop. Its PID cannot be reused while the
/// `Child` is not reaped, so signalling it by PID is always safe.
#[derive(Debug)]
pub(crate) struct TrackedProcess {
    /// What it is, for messages.
    pub(crate) what: String,
    pub(crate) child: Child,
    /// Where its stdout and stderr go.
    pub(crate) log: PathBuf,
    /// The `kill` program.
    pub(crate) kill: PathBuf,
}

impl TrackedProcess {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends `SIGTERM` (while the child is not yet reaped).
    pub(crate) fn terminate(&mut self) {
        if self.exit_status().is_none() {
            let _ = Command::new(&self.kill)
                .args(["-TERM", &self.pid().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Waits up to `grace` for the process to exit, then kills it. Never panics.
    pub(crate) fn finish(&mut self, grace: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }

    pub(crate) fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.terminate();
        self.finish(grace)
    }

    /// Sends `SIGKILL` at once (while the child is not yet reaped).
    pub(crate) fn kill_now(&mut self) {
        if self.exit_status().is_none() {
            let _ = self.child.kill();
        }
    }
}

impl Drop for TrackedProcess {
    fn drop(&mut self) {
        self.stop(STOP_GRACE);
    }
}

/// A process started in the client namespace ([`OpenVpnServer::spawn_in_client`], or
/// [`StrongSwanServer::spawn_in_client`](crate::strongswan::StrongSwanServer::spawn_in_client)).
/// It cannot outlive its server; dropping it stops it (`SIGTERM`, then `SIGKILL` after 3 s).
#[derive(Debug)]
pub struct NsProcess<'server> {
    process: TrackedProcess,
    _server: PhantomData<&'server ()>,
}

impl NsProcess<'_> {
    /// Wraps a process a server started; the caller ties the lifetime to the server.
    pub(crate) fn new(process: TrackedProcess) -> Self {
        Self {
            process,
            _server: PhantomData,
        }
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The file that receives its stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.process.log
    }

    /// The last `lines` lines of its output.
    pub fn log_tail(&self, lines: usize) -> String {
        file_tail(&self.process.log, lines)
    }

    /// Its exit status if it has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.process.exit_status()
    }

    /// Sends `SIGTERM`, waits up to `grace`, then `SIGKILL`s it. Returns the exit status.
    pub fn stop(mut self, grace: Duration) -> Option<ExitStatus> {
        self.process.stop(grace)
    }

    /// Whether a TCP socket listens on `port` (any address) in this process's network
    /// namespace, read from `/proc/<pid>/net/tcp`. In the client namespace that is the
    /// process's own listener: nothing else listens there.
    pub fn tcp_listening(&self, port: u16) -> bool {
        let Ok(table) = fs::read_to_string(format!("/proc/{}/net/tcp", self.pid())) else {
            return false;
        };
        table
            .lines()
            .skip(1)
            .any(|line| tcp_table_line_listens(line, port))
    }

    /// Waits until [`tcp_listening`](Self::tcp_listening) on `port`, e.g. for erebus's proxy
    /// to come up. Fails early, with the process's output, if it exits.
    pub fn wait_until_listening(
        &mut self,
        port: u16,
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        let outcome = poll_until(timeout, || {
            if let Some(status) = self.exit_status() {
                return Err(HarnessError::Exited {
                    what: self.process.what.clone(),
                    status: status.to_string(),
                    detail: self.log_tail(LOG_TAIL_LINES),
                });
            }
            Ok(self.tcp_listening(port).then_some(()))
        })?;
        outcome.ok_or_else(|| HarnessError::NotReady {
            what: format!("a TCP listener on port {port} of `{}`", self.process.what),
            waited: timeout,
            detail: self.log_tail(LOG_TAIL_LINES),
        })
    }
}

/// Whether one line of `/proc/net/tcp` is a listening socket (state 0A) on `port`. The local
/// address column is `HEXADDR:HEXPORT`.
fn tcp_table_line_listens(line: &str, port: u16) -> bool {
    let mut columns = line.split_whitespace();
    let (Some(_slot), Some(local), Some(_remote), Some(state)) = (
        columns.next(),
        columns.next(),
        columns.next(),
        columns.next(),
    ) else {
        return false;
    };
    let local_port = local
        .rsplit_once(':')
        .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
    state == "0A" && local_port == Some(port)
}

pub(crate) fn tail_text(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub(crate) fn file_tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => tail_text(&String::from_utf8_lossy(&bytes), lines),
        Err(error) => format!("(cannot read {}: {error})", path.display()),
    }
}

pub(crate) fn file_contains(path: &Path, needle: &str) -> bool {
    fs::read(path).is_ok_and(|bytes| String::from_utf8_lossy(&bytes).contains(needle))
}

/// How often `needle` occurs in the file at `path` (0 when it cannot be read).
pub(crate) fn file_count(path: &Path, needle: &str) -> usize {
    fs::read(path).map_or(0, |bytes| {
        String::from_utf8_lossy(&bytes).matches(needle).count()
    })
}

pub(crate) fn command_line(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a short setup command in the host context and fails on a non-zero status.
pub(crate) fn run_checked(command: &mut Command) -> Result<String, HarnessError> {
    let line = command_line(command);
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(io_error(format!("running `{line}`")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(HarnessError::Command {
            command: line,
            status: out.status.to_string(),
            output: format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
        })
    }
}

/// Polls `probe` every 20 ms until it yields a value or `timeout` passes (then `Ok(None)`).
pub(crate) fn poll_until<T>(
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Option<T>, HarnessError>,
) -> Result<Option<T>, HarnessError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe()? {
            return Ok(Some(value));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Environment variables that would send commands in a namespace to a proxy of the host.
pub(crate) const PROXY_VARIABLES: [&str; 8] = [
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
];

/// A command that runs `program` as root in `namespace` (`ip netns exec`, then `setpriv
/// --pdeathsig KILL`, so it gets `SIGKILL` when the thread that started it ends), in `dir`,
/// without the host's proxy variables.
pub(crate) fn root_command_in(
    ip: &Path,
    setpriv: &Path,
    namespace: &str,
    program: &Path,
    dir: &Path,
) -> Command {
    let mut command = Command::new(ip);
    command
        .stdin(Stdio::null())
        .args(["netns", "exec", namespace])
        .arg(setpriv)
        .args(["--pdeathsig", "KILL", "--"])
        .arg(program)
        .current_dir(dir);
    for variable in PROXY_VARIABLES {
        command.env_remove(variable);
    }
    command
}

/// A command that runs `argv` in `namespace` as `run_as` (see
/// [`OpenVpnServer::client_command`]), in `dir`.
pub(crate) fn client_command(
    ip: &Path,
    setpriv: &Path,
    namespace: &str,
    dir: &Path,
    run_as: RunAs,
    argv: &[&str],
) -> Command {
    let mut command = Command::new(ip);
    command
        .stdin(Stdio::null())
        .args(["netns", "exec", namespace])
        .arg(setpriv);
    match run_as {
        RunAs::Root => {
            command.args(["--pdeathsig", "KILL", "--"]);
        }
        RunAs::Nobody => {
            // The kernel clears the parent-death signal when the uid changes, so no
            // --pdeathsig here; the server's Drop kills what is left in the namespace.
            command
                .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
                .env("HOME", "/nonexistent")
                .env("USER", "nobody")
                .env("LOGNAME", "nobody");
        }
    }
    command.args(argv).current_dir(dir);
    for variable in PROXY_VARIABLES {
        command.env_remove(variable);
    }
    command
}

/// Starts `command` in the background with stdout and stderr going to `log` (created or
/// truncated).
pub(crate) fn spawn_tracked(
    what: &str,
    mut command: Command,
    log: &Path,
    kill: &Path,
) -> Result<TrackedProcess, HarnessError> {
    let out = fs::File::create(log).map_err(io_error(format!("creating {}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(io_error(format!("duplicating {}", log.display())))?;
    let line = command_line(&command);
    let child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(io_error(format!("starting `{line}`")))?;
    Ok(TrackedProcess {
        what: what.to_owned(),
        child,
        log: log.to_owned(),
        kill: kill.to_owned(),
    })
}

/// Runs `command` and waits up to `timeout` for it, its output going through
/// `<dir>/<stem>.stdout` and `.stderr` (removed afterwards), so a command that leaves a
/// background child behind cannot block the harness. A non-zero exit status is not an error;
/// exceeding `timeout` is (the command is killed).
pub(crate) fn run_to_completion(
    mut command: Command,
    dir: &Path,
    stem: &str,
    kill: &Path,
    timeout: Duration,
) -> Result<CommandOutput, HarnessError> {
    let stdout_path = dir.join(format!("{stem}.stdout"));
    let stderr_path = dir.join(format!("{stem}.stderr"));
    let stdout = fs::File::create(&stdout_path)
        .map_err(io_error(format!("creating {}", stdout_path.display())))?;
    let stderr = fs::File::create(&stderr_path)
        .map_err(io_error(format!("creating {}", stderr_path.display())))?;
    let line = command_line(&command);
    let child = command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(io_error(format!("starting `{line}`")))?;
    let mut process = TrackedProcess {
        what: line.clone(),
        child,
        log: stdout_path.clone(),
        kill: kill.to_owned(),
    };
    let status = poll_until(timeout, || Ok(process.exit_status()))?;
    let read = |path: &Path| {
        let bytes = fs::read(path).unwrap_or_default();
        let _ = fs::remove_file(path);
        bytes
    };
    match status {
        Some(status) => Ok(CommandOutput {
            status,
            stdout: read(&stdout_path),
            stderr: read(&stderr_path),
        }),
        None => {
            process.stop(Duration::ZERO);
            let output = format!(
                "--- stdout ---\n{}\n--- stderr ---\n{}",
                tail_text(
                    &String::from_utf8_lossy(&read(&stdout_path)),
                    LOG_TAIL_LINES
                ),
                tail_text(
                    &String::from_utf8_lossy(&read(&stderr_path)),
                    LOG_TAIL_LINES
                )
            );
            Err(HarnessError::Timeout {
                command: line,
                limit: timeout,
                output,
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Namespaces: naming, creation, removal, and the sweep of leftovers from dead processes
// ---------------------------------------------------------------------------------------------

/// `ip netns add/del` race on the first mount of /run/netns; one at a time per process.
pub(crate) static NETNS_LOCK: Mutex<()> = Mutex::new(());
static INSTANCE_COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// The PID embedded in a harness name (`ebt<pid>n<counter>` plus `s`, `c`, `pki` or `shim`),
/// if it is one.
fn owner_pid(name: &str) -> Option<u32> {
    harness_name_owner(NAME_PREFIX, &["", "s", "c", "pki", "shim"], name)
}

/// The PID embedded in a name `<prefix><pid>n<counter><suffix>` with one of `suffixes`, if
/// `name` is one.
pub(crate) fn harness_name_owner(prefix: &str, suffixes: &[&str], name: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let (pid, tail) = rest.split_once('n')?;
    let counter_len = tail.bytes().take_while(u8::is_ascii_digit).count();
    let suffix = tail.get(counter_len..)?;
    let well_formed = !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && counter_len > 0
        && suffixes.contains(&suffix);
    if well_formed { pid.parse().ok() } else { None }
}

pub(crate) fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn namespace_names(ip: &Path) -> Vec<String> {
    let listed = Command::new(ip)
        .args(["netns", "list"])
        .stdin(Stdio::null())
        .output();
    let Ok(out) = listed else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Kills whatever still runs in `namespace` (by PID) and deletes the namespace, which also
/// destroys its veth end and tun devices. Returns a description of what went wrong, if
/// anything; never panics.
pub(crate) fn delete_namespace(ip: &Path, kill: &Path, namespace: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let pids = Command::new(ip)
        .args(["netns", "pids", namespace])
        .stdin(Stdio::null())
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    for pid in pids.split_whitespace() {
        let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
            .unwrap_or_default();
        problems.push(format!(
            "killed leftover process {pid} in {namespace}: {}",
            cmdline.trim()
        ));
        let _ = Command::new(kill)
            .args(["-KILL", pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _guard = NETNS_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    match Command::new(ip)
        .args(["netns", "del", namespace])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => problems.push(format!(
            "`ip netns del {namespace}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(error) => problems.push(format!("`ip netns del {namespace}` failed: {error}")),
    }
    // The namespace's /etc files (OpenVpnServer::start_client_resolver), and their directory
    // once no namespace has any; under the lock, so no instance creates its own meanwhile.
    let etc = Path::new(NETNS_ETC_DIR).join(namespace);
    match fs::remove_dir_all(&etc) {
        Ok(()) => {
            let _ = fs::remove_dir(NETNS_ETC_DIR);
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => problems.push(format!("removing {}: {error}", etc.display())),
    }
    problems
}

/// Removes the namespaces and directories of harness instances whose process is gone (a test
/// binary killed by a timeout or a signal never runs its destructors).
fn sweep_leftovers(programs: &Programs) {
    sweep_dead_instances(
        &programs.ip,
        &programs.kill,
        owner_pid,
        "netns harness sweep",
    );
}

/// Deletes the namespaces, and removes the directories in the temporary directory, whose
/// names `owner` maps to the PID of a process that is gone (never this process's). `label`
/// starts each message.
pub(crate) fn sweep_dead_instances(
    ip: &Path,
    kill: &Path,
    owner: impl Fn(&str) -> Option<u32>,
    label: &str,
) {
    let own_pid = std::process::id();
    let dead = |name: &str| owner(name).is_some_and(|pid| pid != own_pid && !process_alive(pid));
    for namespace in namespace_names(ip) {
        if dead(&namespace) {
            for problem in delete_namespace(ip, kill, &namespace) {
                eprintln!("{label}: {problem}");
            }
            eprintln!("{label}: removed namespace {namespace} of a dead test process");
        }
    }
    if let Ok(entries) = fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if dead(&name) && entry.path().is_dir() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The run-time test PKI
// ---------------------------------------------------------------------------------------------

/// Throw-away certificates and keys, made once per test process by [`test_pki`] and kept in
/// memory (PEM text). Nothing here protects anything.
#[derive(Debug)]
struct TestPki {
    /// The CA every harness certificate chains to.
    ca_cert: String,
    /// `CN=server.erebus.test`, EKU serverAuth, KU digitalSignature + keyEncipherment.
    server_cert: String,
    server_key: String,
    /// `CN=client1`, EKU clientAuth.
    client_cert: String,
    client_key: String,
    /// The HTTPS server: `CN=web.erebus.test`, SAN `web.erebus.test` and `10.8.0.1`.
    web_cert: String,
    web_key: String,
    /// A CA that signed nothing the servers use: a client trusting it refuses the server.
    wrong_ca_cert: String,
    /// An OpenVPN static key that belongs to no server (`tls-crypt`, `tls-auth`, `secret`).
    wrong_openvpn_key: String,
}

/// The `openssl ca` configuration: one database in the work directory, fixed validity given
/// on the command line, extensions chosen per certificate.
fn openssl_ca_config(dir: &Path) -> String {
    format!(
        "[ ca ]\n\
         default_ca = harness_ca\n\
         [ harness_ca ]\n\
         dir = {dir}\n\
         database = {dir}/index.txt\n\
         serial = {dir}/serial\n\
         new_certs_dir = {dir}\n\
         default_md = sha256\n\
         policy = policy_cn_only\n\
         unique_subject = no\n\
         copy_extensions = none\n\
         email_in_dn = no\n\
         [ policy_cn_only ]\n\
         commonName = supplied\n\
         [ req ]\n\
         distinguished_name = req_subject\n\
         prompt = no\n\
         [ req_subject ]\n\
         CN = unused\n\
         [ ext_ca ]\n\
         basicConstraints = critical, CA:TRUE\n\
         keyUsage = critical, keyCertSign, cRLSign\n\
         subjectKeyIdentifier = hash\n\
         [ ext_openvpn_server ]\n\
         basicConstraints = CA:FALSE\n\
         keyUsage = critical, digitalSignature, keyEncipherment\n\
         extendedKeyUsage = serverAuth\n\
         subjectKeyIdentifier = hash\n\
         authorityKeyIdentifier = keyid, issuer\n\
         subjectAltName = DNS:{SERVER_CERT_NAME}\n\
         [ ext_openvpn_client ]\n\
         basicConstraints = CA:FALSE\n\
         keyUsage = critical, digitalSignature, keyEncipherment\n\
         extendedKeyUsage = clientAuth\n\
         subjectKeyIdentifier = hash\n\
         authorityKeyIdentifier = keyid, issuer\n\
         [ ext_web ]\n\
         basicConstraints = CA:FALSE\n\
         keyUsage = critical, digitalSignature, keyEncipherment\n\
         extendedKeyUsage = serverAuth\n\
         subjectKeyIdentifier = hash\n\
         authorityKeyIdentifier = keyid, issuer\n\
         subjectAltName = DNS:{DNS_NAME}, IP:{SERVER_TUNNEL_ADDR}\n",
        dir = dir.display()
    )
}

/// The harness PKI, made on first use (about a second: three RSA keys, made in parallel) and
/// shared by every instance of this process. Nothing of it stays on disk.
fn test_pki(programs: &Programs) -> Result<&'static TestPki, HarnessError> {
    static PKI: Mutex<Option<&'static TestPki>> = Mutex::new(None);
    // Held while generating, so concurrent first starts wait for one generation.
    let mut cached = PKI.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(pki) = *cached {
        return Ok(pki);
    }
    let counter = INSTANCE_COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("{NAME_PREFIX}{}n{counter}pki", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir(&dir).map_err(io_error(format!("creating {}", dir.display())))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
        .map_err(io_error(format!("chmod {}", dir.display())))?;
    let generated = generate_pki(programs, &dir);
    // The sweep removes it if this process dies in between.
    let _ = fs::remove_dir_all(&dir);
    let pki: &'static TestPki = Box::leak(Box::new(generated?));
    *cached = Some(pki);
    Ok(pki)
}

fn generate_pki(programs: &Programs, dir: &Path) -> Result<TestPki, HarnessError> {
    let config = dir.join("ca.cnf");
    fs::write(&config, openssl_ca_config(dir))
        .map_err(io_error(format!("writing {}", config.display())))?;
    fs::write(dir.join("index.txt"), "").map_err(io_error("writing index.txt"))?;
    fs::write(dir.join("serial"), "1000\n").map_err(io_error("writing serial"))?;
    let openssl = || {
        let mut command = Command::new(&programs.openssl);
        command.current_dir(dir).env("OPENSSL_CONF", &config);
        command
    };

    // RSA keys for the OpenVPN certificates, as providers hand them out; they take a while,
    // so all three are made at once. P-256 for the others.
    let rsa_keys = ["ca", "server", "client"];
    let mut pending = Vec::new();
    for name in rsa_keys {
        let mut command = openssl();
        command
            .args(["genpkey", "-algorithm", "RSA", "-pkeyopt"])
            .args(["rsa_keygen_bits:2048", "-out", &format!("{name}.key")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let line = command_line(&command);
        let child = command
            .spawn()
            .map_err(io_error(format!("starting `{line}`")))?;
        pending.push((line, child));
    }
    for name in ["web", "wrong-ca"] {
        run_checked(
            openssl()
                .args(["genpkey", "-algorithm", "EC", "-pkeyopt"])
                .args(["ec_paramgen_curve:P-256", "-out", &format!("{name}.key")]),
        )?;
    }
    for (line, child) in pending {
        let out = child
            .wait_with_output()
            .map_err(io_error(format!("waiting for `{line}`")))?;
        if !out.status.success() {
            return Err(HarnessError::Command {
                command: line,
                status: out.status.to_string(),
                output: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
    }

    let sign = |name: &str, subject: &str, extensions: &str, issuer: Option<&str>| {
        run_checked(openssl().args(["req", "-new", "-key"]).args([
            &format!("{name}.key"),
            "-subj",
            &format!("/CN={subject}"),
            "-out",
            &format!("{name}.csr"),
        ]))?;
        let mut command = openssl();
        command
            .args(["ca", "-batch", "-notext", "-config"])
            .arg(&config);
        command.args(["-startdate", CERT_NOT_BEFORE, "-enddate", CERT_NOT_AFTER]);
        command.args(["-extensions", extensions]);
        match issuer {
            Some(ca) => command.args([
                "-cert",
                &format!("{ca}.crt"),
                "-keyfile",
                &format!("{ca}.key"),
            ]),
            None => command.args(["-selfsign", "-keyfile", &format!("{name}.key")]),
        };
        command.args([
            "-in",
            &format!("{name}.csr"),
            "-out",
            &format!("{name}.crt"),
        ]);
        run_checked(&mut command).map(drop)
    };
    sign("ca", "erebus harness test CA", "ext_ca", None)?;
    sign("server", SERVER_CERT_NAME, "ext_openvpn_server", Some("ca"))?;
    sign("client", CLIENT_CERT_NAME, "ext_openvpn_client", Some("ca"))?;
    sign("web", DNS_NAME, "ext_web", Some("ca"))?;
    sign("wrong-ca", "erebus harness wrong CA", "ext_ca", None)?;
    run_checked(openssl().args([
        "verify",
        "-CAfile",
        "ca.crt",
        "server.crt",
        "client.crt",
        "web.crt",
    ]))?;
    run_checked(Command::new(&programs.openvpn).current_dir(dir).args([
        "--genkey",
        "secret",
        "wrong-openvpn.key",
    ]))?;

    let read = |name: &str| {
        let path = dir.join(name);
        fs::read_to_string(&path).map_err(io_error(format!("reading {}", path.display())))
    };
    Ok(TestPki {
        ca_cert: read("ca.crt")?,
        server_cert: read("server.crt")?,
        server_key: read("server.key")?,
        client_cert: read("client.crt")?,
        client_key: read("client.key")?,
        web_cert: read("web.crt")?,
        web_key: read("web.key")?,
        wrong_ca_cert: read("wrong-ca.crt")?,
        wrong_openvpn_key: read("wrong-openvpn.key")?,
    })
}

// ---------------------------------------------------------------------------------------------
// The legacy-PRF server's preloaded library
// ---------------------------------------------------------------------------------------------

/// The compiled `legacy-prf-shim.c` (a shared object), built on the first legacy-PRF start of
/// this process (about 0.2 s) and kept in memory; each instance writes it into its directory.
fn legacy_prf_shim(programs: &Programs) -> Result<&'static [u8], HarnessError> {
    static SHIM: Mutex<Option<&'static [u8]>> = Mutex::new(None);
    // Held while compiling, so concurrent first starts wait for one compilation.
    let mut cached = SHIM.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(shim) = *cached {
        return Ok(shim);
    }
    let counter = INSTANCE_COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("{NAME_PREFIX}{}n{counter}shim", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir(&dir).map_err(io_error(format!("creating {}", dir.display())))?;
    let compiled = compile_legacy_prf_shim(programs, &dir);
    // The sweep removes it if this process dies in between.
    let _ = fs::remove_dir_all(&dir);
    let shim: &'static [u8] = Box::leak(compiled?.into_boxed_slice());
    *cached = Some(shim);
    Ok(shim)
}

fn compile_legacy_prf_shim(programs: &Programs, dir: &Path) -> Result<Vec<u8>, HarnessError> {
    let source = dir.join("legacy-prf-shim.c");
    fs::write(&source, LEGACY_PRF_SHIM_C)
        .map_err(io_error(format!("writing {}", source.display())))?;
    let object = dir.join(LEGACY_PRF_SHIM_SO);
    let compiled = run_checked(
        Command::new(&programs.cc)
            .args(["-shared", "-fPIC", "-O2", "-Wall", "-o"])
            .arg(&object)
            .arg(&source)
            .arg("-ldl"),
    );
    if let Err(HarnessError::Command {
        command,
        status,
        output,
    }) = compiled
    {
        return Err(HarnessError::Command {
            command,
            status,
            output: format!(
                "{output}\n(the legacy-PRF server needs a working C compiler: Debian packages \
                 gcc and libc6-dev)"
            ),
        });
    }
    compiled?;
    fs::read(&object).map_err(io_error(format!("reading {}", object.display())))
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// Options for [`OpenVpnServer::start_with`].
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// OpenVPN log verbosity of the server (`--verb`); 4 shows every connection event.
    pub verb: u8,
    /// Extra `openvpn` arguments, appended after the config (later options win).
    pub extra_openvpn_args: Vec<String>,
    /// Bound for openvpn, dnsmasq and the HTTP server to come up.
    pub startup_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            verb: 4,
            extra_openvpn_args: Vec::new(),
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
        }
    }
}

impl ServerOptions {
    /// Adds `--reneg-sec seconds`: the server renegotiates the TLS session (new data-channel
    /// keys) that often. TLS profiles only.
    pub fn with_reneg_sec(mut self, seconds: u32) -> Self {
        self.extra_openvpn_args
            .extend(["--reneg-sec".to_owned(), seconds.to_string()]);
        self
    }

    /// Adds `args` to [`extra_openvpn_args`](Self::extra_openvpn_args).
    pub fn with_openvpn_args<I, A>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<String>,
    {
        self.extra_openvpn_args
            .extend(args.into_iter().map(Into::into));
        self
    }
}

/// A running OpenVPN server with its DNS and HTTP servers, in a namespace pair of its own.
///
/// Dropping it stops everything and removes the namespaces and the instance directory (kept,
/// and its path printed, when the thread is panicking or `EREBUS_KEEP_HARNESS=1` is set; the
/// next harness run removes it once this process is gone).
#[derive(Debug)]
pub struct OpenVpnServer {
    profile: ServerProfile,
    /// The assembled server of [`start_setup`](Self::start_setup); `profile` is then
    /// [`ServerProfile::TlsCrypt`] or, with the legacy PRF, [`ServerProfile::TlsLegacyPrf`].
    setup: Option<TlsSetup>,
    transport: Transport,
    programs: &'static Programs,
    server_ns: String,
    client_ns: String,
    dir: PathBuf,
    client_profile: String,
    /// The process's test PKI (certificates of the TLS profiles and of the HTTPS server).
    pki: &'static TestPki,
    /// This instance's `secret`, `tls-crypt` or `tls-auth` key, if the profile has one.
    openvpn_key: Option<String>,
    /// Namespaces created so far, deleted by `Drop`.
    namespaces: Vec<String>,
    /// The options of [`start_with`](Self::start_with), for
    /// [`start_openvpn_again`](Self::start_openvpn_again).
    options: ServerOptions,
    /// The openvpn server process (behind a lock: tests stop and start it through `&self`).
    openvpn: Mutex<OpenVpnRun>,
    /// The helper daemons started in the server namespace (dnsmasq, the HTTP server), in
    /// start order.
    helpers: Vec<TrackedProcess>,
    command_counter: AtomicU32,
}

/// The openvpn server process of an [`OpenVpnServer`] and how often it was started.
#[derive(Debug, Default)]
struct OpenVpnRun {
    /// The process of the last start; `None` before the first start and after
    /// [`OpenVpnServer::stop_openvpn`].
    process: Option<TrackedProcess>,
    /// How many times openvpn was started (1 after [`OpenVpnServer::start_with`]).
    starts: u32,
}

/// How [`OpenVpnServer::stop_openvpn`] stops the openvpn server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServerStop {
    /// `SIGTERM`, as an administrator stops a server. A TLS server over UDP (started with
    /// `--explicit-exit-notify 1`) first sends its clients `RESTART`, so they know at once; it
    /// gets up to 5 s to exit, then `SIGKILL`.
    Terminate,
    /// `SIGKILL`: the server vanishes without a word, as in a crash or a power cut. Clients
    /// notice only through their keepalive (`ping-restart`) or a TCP reset.
    Kill,
}

/// The real uid of process `pid` (the first field of the `Uid:` line of
/// `/proc/<pid>/status`), or `None` when there is no such process. A test checks with it that
/// erebus runs as nobody (65534).
pub fn uid_of(pid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_real_uid(&status)
}

/// The real uid in the text of a `/proc/<pid>/status` file.
fn parse_real_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl OpenVpnServer {
    /// Starts a server for `profile` over `transport` with default options.
    pub fn start(profile: ServerProfile, transport: Transport) -> Result<Self, HarnessError> {
        Self::start_with(profile, transport, &ServerOptions::default())
    }

    /// Starts a server: creates the namespaces and the veth pair, generates the keys, starts
    /// openvpn, then dnsmasq and the HTTP server on the tunnel address, and waits until all
    /// three are ready. On error everything created so far is removed again.
    pub fn start_with(
        profile: ServerProfile,
        transport: Transport,
        options: &ServerOptions,
    ) -> Result<Self, HarnessError> {
        Self::start_inner(profile, None, transport, options)
    }

    /// Starts an assembled TLS server (see [`TlsSetup`]) as [`start_with`](Self::start_with)
    /// starts a profile's. [`profile`](Self::profile) then says
    /// [`ServerProfile::TlsLegacyPrf`] for a legacy-PRF setup and [`ServerProfile::TlsCrypt`]
    /// otherwise; [`setup`](Self::setup) gives the parts.
    pub fn start_setup(
        setup: TlsSetup,
        transport: Transport,
        options: &ServerOptions,
    ) -> Result<Self, HarnessError> {
        let profile = if setup.legacy_prf {
            ServerProfile::TlsLegacyPrf
        } else {
            ServerProfile::TlsCrypt
        };
        Self::start_inner(profile, Some(setup), transport, options)
    }

    fn start_inner(
        profile: ServerProfile,
        setup: Option<TlsSetup>,
        transport: Transport,
        options: &ServerOptions,
    ) -> Result<Self, HarnessError> {
        require_netns().map_err(HarnessError::Unsupported)?;
        let programs = programs()?;
        SWEEP.call_once(|| sweep_leftovers(programs));
        let pki = test_pki(programs)?;

        let counter = INSTANCE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = format!("{NAME_PREFIX}{}n{counter}", std::process::id());
        let dir = std::env::temp_dir().join(&base);
        // Leftover from an earlier process that had the same PID.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).map_err(io_error(format!("creating {}", dir.display())))?;
        // World-readable: erebus runs as nobody and reads the client profile from here.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .map_err(io_error(format!("chmod {}", dir.display())))?;

        // From here on, `Drop` cleans up whatever exists if a step fails.
        let mut server = Self {
            profile,
            setup,
            transport,
            programs,
            server_ns: format!("{base}s"),
            client_ns: format!("{base}c"),
            dir,
            client_profile: String::new(),
            pki,
            openvpn_key: None,
            namespaces: Vec::new(),
            options: options.clone(),
            openvpn: Mutex::new(OpenVpnRun::default()),
            helpers: Vec::new(),
            command_counter: AtomicU32::new(0),
        };
        server.create_network()?;
        server.write_files()?;
        server.start_openvpn()?;
        server.start_dnsmasq(options.startup_timeout)?;
        server.start_httpd(SERVER_TUNNEL_ADDR, options.startup_timeout)?;
        if let Some(addr) = server.setup.as_ref().and_then(|setup| setup.routed_http) {
            run_checked(server.ip().args([
                "-n",
                &server.server_ns,
                "addr",
                "add",
                &format!("{addr}/32"),
                "dev",
                "lo",
            ]))?;
            server.start_httpd(addr, options.startup_timeout)?;
        }
        Ok(server)
    }

    fn ip(&self) -> Command {
        let mut command = Command::new(&self.programs.ip);
        command.stdin(Stdio::null());
        command
    }

    fn create_network(&mut self) -> Result<(), HarnessError> {
        for namespace in [self.server_ns.clone(), self.client_ns.clone()] {
            {
                let _guard = NETNS_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
                run_checked(self.ip().args(["netns", "add", &namespace]))?;
            }
            self.namespaces.push(namespace.clone());
            // IPv4 only; done before the veth exists so it never gets an IPv6 address.
            run_checked(
                self.ip()
                    .args(["netns", "exec", &namespace])
                    .arg(&self.programs.sysctl)
                    .args([
                        "-qw",
                        "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1",
                    ]),
            )?;
            run_checked(
                self.ip()
                    .args(["-n", &namespace, "link", "set", "lo", "up"]),
            )?;
        }
        // Both ends are created directly inside their namespaces: nothing appears in the host's.
        run_checked(self.ip().args([
            "link",
            "add",
            SERVER_VETH,
            "netns",
            &self.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            CLIENT_VETH,
            "netns",
            &self.client_ns,
        ]))?;
        for (namespace, veth, addr) in [
            (&self.server_ns, SERVER_VETH, SERVER_OUTER_ADDR),
            (&self.client_ns, CLIENT_VETH, CLIENT_OUTER_ADDR),
        ] {
            let cidr = format!("{addr}/{OUTER_PREFIX_LEN}");
            run_checked(
                self.ip()
                    .args(["-n", namespace, "addr", "add", &cidr, "dev", veth]),
            )?;
            run_checked(self.ip().args(["-n", namespace, "link", "set", veth, "up"]))?;
        }
        Ok(())
    }

    fn write_file(&self, name: &str, contents: &str, mode: u32) -> Result<PathBuf, HarnessError> {
        let path = self.dir.join(name);
        fs::write(&path, contents).map_err(io_error(format!("writing {}", path.display())))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(io_error(format!("chmod {}", path.display())))?;
        Ok(path)
    }

    /// Generates an OpenVPN key (`openvpn --genkey secret`) in the instance directory, for
    /// `--secret`, `--tls-auth` or `--tls-crypt`. Returns its text. Test-only key material.
    fn generate_openvpn_key(&self, name: &str) -> Result<String, HarnessError> {
        let path = self.dir.join(name);
        run_checked(
            Command::new(&self.programs.openvpn)
                .args(["--genkey", "secret"])
                .arg(&path),
        )?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
            .map_err(io_error(format!("chmod {}", path.display())))?;
        fs::read_to_string(&path).map_err(io_error(format!("reading {}", path.display())))
    }

    fn write_files(&mut self) -> Result<(), HarnessError> {
        self.write_file("httpd.py", HTTPD_PY, 0o644)?;
        self.write_file("probe.py", PROBE_PY, 0o644)?;
        let config = match &self.setup {
            Some(setup) => setup.server_config(),
            None => self.profile.server_config().to_owned(),
        };
        self.write_file("server.conf", &config, 0o644)?;
        // The HTTPS server's certificate, and the CA for the clients (readable by nobody).
        self.write_file("ca.crt", &self.pki.ca_cert, 0o644)?;
        self.write_file("web.crt", &self.pki.web_cert, 0o644)?;
        self.write_file("web.key", &self.pki.web_key, 0o600)?;
        // Credentials files for the stock client or erebus (as nobody), and the server's
        // reference copy for verify-user.sh. Written for every profile; only the
        // username/password profiles use them.
        let pair = |password: &str| format!("{AUTH_USERNAME}\n{password}\n");
        self.write_file("credentials.txt", &pair(AUTH_PASSWORD), 0o644)?;
        self.write_file("wrong-credentials.txt", &pair(WRONG_AUTH_PASSWORD), 0o644)?;
        self.write_file("auth-users.txt", &pair(AUTH_PASSWORD), 0o600)?;
        if self.profile.is_tls() {
            self.write_file("server.crt", &self.pki.server_cert, 0o644)?;
            self.write_file("server.key", &self.pki.server_key, 0o600)?;
        }
        if self.uses_username_password() {
            self.write_file("verify-user.sh", VERIFY_USER_SH, 0o755)?;
        }
        if self.profile == ServerProfile::TlsLegacyPrf {
            let shim = legacy_prf_shim(self.programs)?;
            let path = self.dir.join(LEGACY_PRF_SHIM_SO);
            fs::write(&path, shim).map_err(io_error(format!("writing {}", path.display())))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
                .map_err(io_error(format!("chmod {}", path.display())))?;
        }
        let control_channel_key = match &self.setup {
            Some(setup) => setup.control.option(),
            None => self.profile.control_channel_key(),
        };
        self.openvpn_key = match control_channel_key {
            Some(option) => Some(self.generate_openvpn_key(&format!("{option}.key"))?),
            None if self.profile == ServerProfile::StaticKey => {
                Some(self.generate_openvpn_key("static.key")?)
            }
            None => None,
        };
        self.client_profile =
            self.client_profile_with(&self.pki.ca_cert, self.openvpn_key.as_deref());
        // Readable by nobody: the profile's keys are throw-away test keys.
        self.write_file("client.ovpn", &self.client_profile, 0o644)?;
        Ok(())
    }

    /// This instance's client profile, with `ca` as the trusted CA and `key` as the
    /// `secret`/`tls-crypt`/`tls-auth` key.
    fn client_profile_with(&self, ca: &str, key: Option<&str>) -> String {
        if let Some(setup) = &self.setup {
            let certificate = (self.pki.client_cert.as_str(), self.pki.client_key.as_str());
            return setup.client_profile(self.transport, ca, certificate, key);
        }
        if self.profile.is_tls() {
            let certificate = self
                .profile
                .uses_client_certificate()
                .then_some((self.pki.client_cert.as_str(), self.pki.client_key.as_str()));
            tls_client_profile_text(self.profile, self.transport, ca, certificate, key)
        } else {
            client_profile_text(self.profile, self.transport, key)
        }
    }

    /// A command run as root in `namespace` that gets `SIGKILL` when the thread that started
    /// it ends (so it cannot outlive a killed test process).
    fn root_command_in(&self, namespace: &str, program: &Path) -> Command {
        root_command_in(
            &self.programs.ip,
            &self.programs.setpriv,
            namespace,
            program,
            &self.dir,
        )
    }

    fn spawn_tracked(
        &self,
        what: &str,
        command: Command,
        log_name: &str,
    ) -> Result<TrackedProcess, HarnessError> {
        spawn_tracked(what, command, &self.dir.join(log_name), &self.programs.kill)
    }

    /// Starts openvpn (the first time from [`start_with`](Self::start_with), again from
    /// [`start_openvpn_again`](Self::start_openvpn_again)) with the same arguments every time,
    /// and waits until it is ready: its ready line in `server.log` and
    /// [`SERVER_TUNNEL_ADDR`] on its tun device. Before a restart the previous run's
    /// `server.log` and `server.stdout` are kept as `server-run<N>.log` and
    /// `server-run<N>.stdout`, so the new log starts empty.
    fn start_openvpn(&self) -> Result<(), HarnessError> {
        let options = &self.options;
        let mut run = self.openvpn.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(process) = run.process.as_mut()
            && process.exit_status().is_none()
        {
            return Err(HarnessError::Io {
                context: format!("starting the openvpn server again in {}", self.server_ns),
                source: io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "it is still running (pid {}); stop it first with stop_openvpn",
                        process.pid()
                    ),
                ),
            });
        }
        if run.starts > 0 {
            self.keep_openvpn_logs(run.starts)?;
        }
        let mut command = self.root_command_in(&self.server_ns, &self.programs.openvpn);
        command
            .arg("--cd")
            .arg(&self.dir)
            .args(["--config", "server.conf"])
            .args(["--proto", self.transport.server_proto()])
            .args(["--log", "server.log"])
            .args(["--verb", &options.verb.to_string()]);
        if self.profile.is_tls() && self.transport == Transport::Udp {
            // Tells clients to reconnect at once when the server stops (UDP only).
            command.args(["--explicit-exit-notify", "1"]);
        }
        command.args(&options.extra_openvpn_args);
        // The shim appends to its log: count its ready lines of earlier runs.
        let shim_log = self.legacy_prf_shim_log();
        let shim_ready_before = file_count(&shim_log, LEGACY_PRF_SHIM_READY);
        if self.profile == ServerProfile::TlsLegacyPrf {
            // `ip` and `setpriv` load it too; it hooks and logs only inside openvpn.
            command
                .env("LD_PRELOAD", self.dir.join(LEGACY_PRF_SHIM_SO))
                .env("EREBUS_PRF_SHIM_LOG", &shim_log);
        }
        // Messages printed before --log takes effect (deprecations, option errors) land here.
        let process = self.spawn_tracked("openvpn server", command, "server.stdout")?;
        run.starts += 1;
        // Kept here even if it does not become ready: `stop_openvpn` or `Drop` stops it.
        let process = run.process.insert(process);

        let log = self.server_log();
        let ready_line = match (self.profile.is_tls(), self.transport) {
            // A TLS server says so as soon as its socket and tun are set up.
            (true, _) => "Initialization Sequence Completed",
            // A p2p server says it only once a client has sent something.
            (false, Transport::Udp) => "link local (bound)",
            (false, Transport::Tcp) => "Listening for incoming TCP connection",
        };
        let ready = poll_until(options.startup_timeout, || {
            if let Some(status) = process.exit_status() {
                return Err(HarnessError::Exited {
                    what: "the openvpn server".into(),
                    status: status.to_string(),
                    detail: self.server_diagnostics(),
                });
            }
            Ok((file_contains(&log, ready_line)
                && self.has_address(&self.server_ns, SERVER_TUNNEL_ADDR))
            .then_some(()))
        })?;
        if ready.is_none() {
            return Err(HarnessError::NotReady {
                what: format!(
                    "the openvpn server ({} over {}: `{ready_line}` in its log and {SERVER_TUNNEL_ADDR} on its tun)",
                    self.profile, self.transport
                ),
                waited: options.startup_timeout,
                detail: self.server_diagnostics(),
            });
        }
        // The shim logs from its constructor, before openvpn reads its config: by now it is
        // there, or the preload did not happen.
        if self.profile == ServerProfile::TlsLegacyPrf
            && file_count(&shim_log, LEGACY_PRF_SHIM_READY) <= shim_ready_before
        {
            return Err(HarnessError::NotReady {
                what: format!(
                    "the legacy-PRF shim in openvpn (`{LEGACY_PRF_SHIM_READY}` in {})",
                    shim_log.display()
                ),
                waited: options.startup_timeout,
                detail: format!(
                    "--- {} ---\n{}\n{}",
                    shim_log.display(),
                    file_tail(&shim_log, LOG_TAIL_LINES),
                    self.server_diagnostics()
                ),
            });
        }
        Ok(())
    }

    /// Renames `server.log` and `server.stdout` of openvpn run `run` (1 for the first) to
    /// `server-run<run>.log` and `server-run<run>.stdout`.
    fn keep_openvpn_logs(&self, run: u32) -> Result<(), HarnessError> {
        for (name, extension) in [("server.log", "log"), ("server.stdout", "stdout")] {
            let from = self.dir.join(name);
            let to = self.dir.join(format!("server-run{run}.{extension}"));
            match fs::rename(&from, &to) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(HarnessError::Io {
                        context: format!("renaming {} to {}", from.display(), to.display()),
                        source: error,
                    });
                }
            }
        }
        Ok(())
    }

    /// Stops the openvpn server this instance started (signalled by PID; nothing else is
    /// touched), e.g. to test how a client handles losing its server. dnsmasq and the HTTP
    /// server keep running; their sockets stay bound to [`SERVER_TUNNEL_ADDR`] while the
    /// address is gone and answer again once [`start_openvpn_again`](Self::start_openvpn_again)
    /// has brought it back.
    ///
    /// Returns once openvpn has exited and [`SERVER_TUNNEL_ADDR`] is gone from the server
    /// namespace (its tun device went with it). [`ServerStop::Terminate`] gives openvpn up to
    /// 5 s to exit (a TLS server over UDP spends about 2 s telling its clients `RESTART`), then
    /// kills it; the address then gets 5 s to disappear. Stopping a server that is not running
    /// does nothing.
    pub fn stop_openvpn(&self, how: ServerStop) -> Result<(), HarnessError> {
        let mut run = self.openvpn.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(mut process) = run.process.take() else {
            return Ok(());
        };
        let pid = process.pid();
        let grace = match how {
            ServerStop::Terminate => {
                process.terminate();
                OPENVPN_TERMINATE_GRACE
            }
            ServerStop::Kill => {
                process.kill_now();
                STOP_GRACE
            }
        };
        let started = Instant::now();
        let status = process.finish(grace);
        if how == ServerStop::Terminate && started.elapsed() >= grace {
            eprintln!(
                "netns harness: the openvpn server (pid {pid}) ignored SIGTERM for {grace:?} and \
                 was killed"
            );
        }
        if status.is_none() {
            // `finish` killed it and could not reap it; keep it so `Drop` tries again.
            run.process = Some(process);
            return Err(HarnessError::StillThere {
                what: format!("the openvpn server (pid {pid})"),
                waited: grace,
                detail: self.server_diagnostics(),
            });
        }
        drop(process);
        let gone = poll_until(TUN_GONE_TIMEOUT, || {
            Ok((!self.has_address(&self.server_ns, SERVER_TUNNEL_ADDR)).then_some(()))
        })?;
        gone.ok_or_else(|| HarnessError::StillThere {
            what: format!(
                "{SERVER_TUNNEL_ADDR} in {} after the openvpn server (pid {pid}) exited",
                self.server_ns
            ),
            waited: TUN_GONE_TIMEOUT,
            detail: self.server_diagnostics(),
        })
    }

    /// Starts the openvpn server again after [`stop_openvpn`](Self::stop_openvpn), with the
    /// same configuration and arguments as the first time, and waits for the same readiness
    /// (bounded by [`ServerOptions::startup_timeout`]). The keys do not change, so the client
    /// profile stays valid. The previous run's log is kept as `server-run<N>.log`;
    /// [`server_log`](Self::server_log) is the new run's.
    ///
    /// Fails if openvpn is still running.
    pub fn start_openvpn_again(&self) -> Result<(), HarnessError> {
        self.start_openvpn()
    }

    /// Whether the openvpn server this instance started is running (neither stopped by
    /// [`stop_openvpn`](Self::stop_openvpn) nor exited by itself).
    pub fn openvpn_running(&self) -> bool {
        let mut run = self.openvpn.lock().unwrap_or_else(PoisonError::into_inner);
        run.process
            .as_mut()
            .is_some_and(|process| process.exit_status().is_none())
    }

    /// How many times openvpn was started: 1 after [`start_with`](Self::start_with), plus one
    /// per [`start_openvpn_again`](Self::start_openvpn_again).
    pub fn openvpn_starts(&self) -> u32 {
        self.openvpn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .starts
    }

    fn server_diagnostics(&self) -> String {
        format!(
            "--- {} (tail) ---\n{}\n--- {} ---\n{}",
            self.server_log().display(),
            file_tail(&self.server_log(), LOG_TAIL_LINES),
            self.dir.join("server.stdout").display(),
            file_tail(&self.dir.join("server.stdout"), LOG_TAIL_LINES)
        )
    }

    /// Whether `addr` is configured on an interface in `namespace`. p2p tun devices show
    /// `inet 10.8.0.1 peer 10.8.0.2/32`, subnet ones `inet 10.8.0.1/24`: both match.
    fn has_address(&self, namespace: &str, addr: Ipv4Addr) -> bool {
        let out = self
            .ip()
            .args(["-n", namespace, "-4", "-o", "addr", "show"])
            .output();
        let Ok(out) = out else {
            return false;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let with_space = format!("inet {addr} ");
        let with_slash = format!("inet {addr}/");
        text.lines()
            .any(|line| line.contains(&with_space) || line.contains(&with_slash))
    }

    /// Starts a helper daemon in the server namespace (stdout and stderr to `output_name`)
    /// and waits for `ready` to appear in `ready_log`.
    fn start_helper(
        &mut self,
        what: &str,
        command: Command,
        output_name: &str,
        ready_log: &Path,
        ready: &str,
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        let process = self.spawn_tracked(what, command, output_name)?;
        let output = process.log.clone();
        self.helpers.push(process);
        let diagnostics = || {
            let mut text = format!(
                "--- {} ---\n{}",
                output.display(),
                file_tail(&output, LOG_TAIL_LINES)
            );
            if ready_log != output {
                text.push_str(&format!(
                    "\n--- {} ---\n{}",
                    ready_log.display(),
                    file_tail(ready_log, LOG_TAIL_LINES)
                ));
            }
            text
        };
        let outcome = poll_until(timeout, || {
            if let Some(status) = self
                .helpers
                .last_mut()
                .and_then(TrackedProcess::exit_status)
            {
                return Err(HarnessError::Exited {
                    what: what.to_owned(),
                    status: status.to_string(),
                    detail: diagnostics(),
                });
            }
            Ok(file_contains(ready_log, ready).then_some(()))
        })?;
        outcome.ok_or_else(|| HarnessError::NotReady {
            what: format!("{what} (`{ready}` in {})", ready_log.display()),
            waited: timeout,
            detail: format!("{}\n{}", diagnostics(), self.server_diagnostics()),
        })
    }

    fn start_dnsmasq(&mut self, timeout: Duration) -> Result<(), HarnessError> {
        let namespace = self.server_ns.clone();
        let log = self.dnsmasq_log();
        self.start_dnsmasq_in(
            "dnsmasq",
            &namespace,
            SERVER_TUNNEL_ADDR,
            &format!("/{DNS_DOMAIN}/{SERVER_TUNNEL_ADDR}"),
            &log,
            "dnsmasq",
            timeout,
        )
    }

    /// Starts a query-logging dnsmasq in `namespace` listening on `listen`:53 that answers
    /// the names of `address_rule` (dnsmasq's `--address`) and nothing else. It logs to `log`;
    /// its startup errors go to `<files>.stderr` and its pid to `<files>.pid`.
    fn start_dnsmasq_in(
        &mut self,
        what: &str,
        namespace: &str,
        listen: Ipv4Addr,
        address_rule: &str,
        log: &Path,
        files: &str,
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        let mut command = self.root_command_in(namespace, &self.programs.dnsmasq);
        command.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            &format!("--listen-address={listen}"),
            &format!("--port={DNS_PORT}"),
            "--user=root",
            "--group=root",
            &format!("--address={address_rule}"),
            "--log-queries",
        ]);
        command.arg(format!("--log-facility={}", log.display()));
        command.arg(format!(
            "--pid-file={}",
            self.dir.join(format!("{files}.pid")).display()
        ));
        self.start_helper(
            what,
            command,
            &format!("{files}.stderr"),
            log,
            "started, version",
            timeout,
        )
    }

    fn start_httpd(&mut self, addr: Ipv4Addr, timeout: Duration) -> Result<(), HarnessError> {
        let mut command = self.root_command_in(&self.server_ns, &self.programs.python3);
        command
            .arg(self.dir.join("httpd.py"))
            .args(["--bind", &addr.to_string()])
            .args(["--port", &HTTP_PORT.to_string()])
            .args(["--tls-port", &HTTPS_PORT.to_string()])
            .args(["--tls-cert", "web.crt", "--tls-key", "web.key"]);
        let log_name = if addr == SERVER_TUNNEL_ADDR {
            "httpd.log".to_owned()
        } else {
            format!("httpd-{addr}.log")
        };
        let log = self.dir.join(&log_name);
        // The HTTPS listener is announced last.
        self.start_helper(
            "the HTTP server (httpd.py)",
            command,
            &log_name,
            &log,
            &format!("httpd: listening on {addr}:{HTTPS_PORT} (https)"),
            timeout,
        )
    }

    /// Gives the client namespace a resolver of its own, outside the tunnel, to catch DNS
    /// leaks: dnsmasq on [`CLIENT_RESOLVER_ADDR`] answering every name with
    /// [`CLIENT_RESOLVER_ANSWER`] and logging each query to
    /// [`client_resolver_log`](Self::client_resolver_log), named by
    /// `/etc/netns/<client namespace>/resolv.conf`. `ip netns exec` bind-mounts that file over
    /// `/etc/resolv.conf` for every command started in the client namespace from now on, so
    /// glibc's resolver there (`getaddrinfo`, which erebus's system lookups and `getent` use
    /// through `hosts: files dns`) asks this dnsmasq. The file goes when the namespace does.
    ///
    /// # Errors
    ///
    /// When the file cannot be written or dnsmasq does not start.
    pub fn start_client_resolver(&mut self) -> Result<(), HarnessError> {
        let etc = Path::new(NETNS_ETC_DIR).join(&self.client_ns);
        {
            let _guard = NETNS_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
            fs::create_dir_all(&etc).map_err(io_error(format!("creating {}", etc.display())))?;
            let resolv = etc.join("resolv.conf");
            fs::write(&resolv, format!("nameserver {CLIENT_RESOLVER_ADDR}\n"))
                .map_err(io_error(format!("writing {}", resolv.display())))?;
            // Readable by nobody, whom the tests run erebus and curl as.
            fs::set_permissions(&resolv, fs::Permissions::from_mode(0o644))
                .map_err(io_error(format!("chmod {}", resolv.display())))?;
        }
        let namespace = self.client_ns.clone();
        let log = self.client_resolver_log();
        self.start_dnsmasq_in(
            "the client namespace's dnsmasq",
            &namespace,
            CLIENT_RESOLVER_ADDR,
            &format!("/#/{CLIENT_RESOLVER_ANSWER}"),
            &log,
            "client-dnsmasq",
            DEFAULT_STARTUP_TIMEOUT,
        )
    }

    /// The query log of the client namespace's resolver
    /// ([`start_client_resolver`](Self::start_client_resolver)).
    pub fn client_resolver_log(&self) -> PathBuf {
        self.dir.join("client-dnsmasq.log")
    }

    // --- what tests need to know --------------------------------------------------------------

    /// The profile this server runs.
    pub fn profile(&self) -> ServerProfile {
        self.profile
    }

    /// The parts of an assembled server ([`start_setup`](Self::start_setup)); `None` for a
    /// profile's.
    pub fn setup(&self) -> Option<&TlsSetup> {
        self.setup.as_ref()
    }

    /// Whether the client authenticates with [`AUTH_USERNAME`] and [`AUTH_PASSWORD`]: pass
    /// [`credentials_path`](Self::credentials_path) with `--auth-user-pass`.
    pub fn uses_username_password(&self) -> bool {
        match &self.setup {
            Some(setup) => setup.client_auth.password(),
            None => self.profile.uses_username_password(),
        }
    }

    /// The transport this server listens on.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Name of the client namespace, where erebus (or the stock client) runs.
    pub fn client_netns(&self) -> &str {
        &self.client_ns
    }

    /// Name of the server namespace.
    pub fn server_netns(&self) -> &str {
        &self.server_ns
    }

    /// Packets the server namespace's veth end ([`SERVER_VETH`]) has received so far: every
    /// datagram or segment the client namespace sent towards the server (and the odd ARP).
    ///
    /// # Errors
    ///
    /// When the counter cannot be read.
    pub fn server_veth_rx_packets(&self) -> Result<u64, HarnessError> {
        let path = format!("/sys/class/net/{SERVER_VETH}/statistics/rx_packets");
        let mut command = self.ip();
        command.args(["netns", "exec", &self.server_ns, "cat", &path]);
        let text = run_checked(&mut command)?;
        text.trim().parse().map_err(|_| HarnessError::Command {
            command: format!("cat {path}"),
            status: "unparsable counter".to_owned(),
            output: text.clone(),
        })
    }

    /// Where the OpenVPN server listens (`10.99.0.1:1194`), reachable from the client
    /// namespace only.
    pub fn server_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(SERVER_OUTER_ADDR, OPENVPN_PORT)
    }

    /// An address where nothing listens, for a `remote` line that must fail ("the first remote
    /// is dead"): the server namespace's outer address with [`DEAD_REMOTE_PORT`]
    /// (`10.99.0.1:1195`). A UDP datagram sent there gets an ICMP port-unreachable from the
    /// server namespace, a TCP SYN a reset; nothing leaves the test's namespaces.
    pub fn dead_remote(&self) -> SocketAddrV4 {
        SocketAddrV4::new(SERVER_OUTER_ADDR, DEAD_REMOTE_PORT)
    }

    /// The server's tunnel address, `10.8.0.1`.
    pub fn server_tunnel_addr(&self) -> Ipv4Addr {
        SERVER_TUNNEL_ADDR
    }

    /// The client's tunnel address, `10.8.0.2`.
    pub fn client_tunnel_addr(&self) -> Ipv4Addr {
        CLIENT_TUNNEL_ADDR
    }

    /// `http://10.8.0.1:8080/`.
    pub fn http_url(&self) -> String {
        format!("http://{SERVER_TUNNEL_ADDR}:{HTTP_PORT}/")
    }

    /// `http://web.erebus.test:8080/`, for tests of name resolution through the tunnel DNS.
    pub fn http_name_url(&self) -> String {
        format!("http://{DNS_NAME}:{HTTP_PORT}/")
    }

    /// The tunnel DNS server, `10.8.0.1:53`.
    pub fn dns_server(&self) -> SocketAddrV4 {
        SocketAddrV4::new(SERVER_TUNNEL_ADDR, DNS_PORT)
    }

    /// `https://10.8.0.1:8443/`: the HTTP server's paths over TLS. The certificate names
    /// `10.8.0.1` too, so this verifies with [`ca_cert_path`](Self::ca_cert_path).
    pub fn https_url(&self) -> String {
        format!("https://{SERVER_TUNNEL_ADDR}:{HTTPS_PORT}/")
    }

    /// `https://web.erebus.test:8443/`, for the CONNECT path of a proxy that resolves the name
    /// through the tunnel DNS.
    pub fn https_name_url(&self) -> String {
        format!("https://{DNS_NAME}:{HTTPS_PORT}/")
    }

    /// The CA certificate (PEM, readable by nobody) that issued every harness certificate: the
    /// OpenVPN server's (TLS profiles) and the HTTPS server's (all profiles). Give it to
    /// `curl --cacert`.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A credentials file for `auth-user-pass FILE` (username line, password line) with
    /// [`AUTH_USERNAME`] and [`AUTH_PASSWORD`], readable by nobody. It exists for every
    /// profile; only [`ServerProfile::uses_username_password`] servers check it.
    pub fn credentials_path(&self) -> PathBuf {
        self.dir.join("credentials.txt")
    }

    /// Like [`credentials_path`](Self::credentials_path), with [`WRONG_AUTH_PASSWORD`]: the
    /// server answers `AUTH_FAILED`.
    pub fn wrong_credentials_path(&self) -> PathBuf {
        self.dir.join("wrong-credentials.txt")
    }

    /// Writes a credentials file `name` (in the instance directory, readable by nobody) with
    /// `username` and `password`, and returns its path.
    pub fn write_credentials(
        &self,
        name: &str,
        username: &str,
        password: &str,
    ) -> Result<PathBuf, HarnessError> {
        self.write_client_file(name, &format!("{username}\n{password}\n"))
    }

    /// Writes `contents` to the file `name` in the instance directory, readable by nobody
    /// (e.g. an altered client profile), and returns its path. `name` must be a plain file
    /// name; the harness's own files cannot be replaced (its fixed names, and anything ending
    /// in `.key`, `.sh`, `.py`, `.crt`, `.conf`, `.log`, `.stdout`, `.stderr`, `.pid`, `.so` or
    /// `.c`).
    pub fn write_client_file(&self, name: &str, contents: &str) -> Result<PathBuf, HarnessError> {
        if !is_client_file_name(name) {
            return Err(HarnessError::Io {
                context: format!("writing {name:?} into {}", self.dir.display()),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a plain file name, or one the harness uses itself",
                ),
            });
        }
        self.write_file(name, contents, 0o644)
    }

    /// The client profile with a CA that did not issue the server's certificate: the client
    /// must refuse the server (`VERIFY ERROR` in the stock client's log). `None` for the
    /// point-to-point profiles, which have no CA.
    pub fn client_profile_with_wrong_ca(&self) -> Option<String> {
        self.profile
            .is_tls()
            .then(|| self.client_profile_with(&self.pki.wrong_ca_cert, self.openvpn_key.as_deref()))
    }

    /// The client profile with a `tls-crypt`, `tls-auth` or `secret` key that is not the
    /// server's: the server drops every packet of that client (`tls-crypt unwrap error`,
    /// `TLS Error: cannot locate HMAC in incoming packet`, or `Authenticate/Decrypt packet
    /// error` for `secret`). `None` for [`ServerProfile::Plaintext`], which has no key.
    pub fn client_profile_with_wrong_key(&self) -> Option<String> {
        self.openvpn_key
            .as_ref()
            .map(|_| self.client_profile_with(&self.pki.ca_cert, Some(&self.pki.wrong_openvpn_key)))
    }

    /// `IV_PROTO` of the last client that connected, from the server log (`peer info:
    /// IV_PROTO=990`); TLS profiles only. Bit 3 (8) is `TLS_KEY_EXPORT`: without it the
    /// session derives its data-channel keys with the OpenVPN PRF.
    pub fn last_client_iv_proto(&self) -> Option<u32> {
        let log = fs::read(self.server_log()).ok()?;
        parse_last_iv_proto(&String::from_utf8_lossy(&log))
    }

    /// What the legacy-PRF server's `LD_PRELOAD` library logged
    /// ([`ServerProfile::TlsLegacyPrf`] only; the file does not exist for other profiles):
    /// `legacy-prf-shim: loaded into openvpn (pid N), BIO_read hooked` at start, then one line
    /// per `IV_PROTO` it saw, e.g. `legacy-prf-shim: rewrote IV_PROTO=990 to IV_PROTO=982
    /// (TLS_KEY_EXPORT hidden)`.
    pub fn legacy_prf_shim_log(&self) -> PathBuf {
        self.dir.join(LEGACY_PRF_SHIM_LOG)
    }

    /// Every `IV_PROTO` the legacy-PRF server's library rewrote, in order, as (what the client
    /// sent, what the server read): `(990, 982)` for the stock 2.6 client. Empty for other
    /// profiles and before a client has sent its peer info.
    pub fn iv_proto_rewrites(&self) -> Vec<(u32, u32)> {
        let log = fs::read(self.legacy_prf_shim_log()).unwrap_or_default();
        parse_iv_proto_rewrites(&String::from_utf8_lossy(&log))
    }

    /// The last `PUSH_REPLY` the server sent, from its log at verb 4 or more (`SENT CONTROL
    /// [client1]: 'PUSH_REPLY,...'`): the text between the quotes, e.g. `PUSH_REPLY,dhcp-option
    /// DNS 10.8.0.1,...,protocol-flags cc-exit tls-ekm dyn-tls-crypt,...`. Its
    /// `protocol-flags` say whether the session uses TLS-EKM.
    pub fn last_push_reply(&self) -> Option<String> {
        let log = fs::read(self.server_log()).ok()?;
        parse_last_push_reply(&String::from_utf8_lossy(&log))
    }

    /// The client profile for this instance, everything inline (keys included).
    pub fn client_profile(&self) -> &str {
        &self.client_profile
    }

    /// The client profile as a file (`client.ovpn`, readable by nobody).
    pub fn client_profile_path(&self) -> PathBuf {
        self.dir.join("client.ovpn")
    }

    /// The instance directory (configs, keys, logs); readable by everyone, writable by root.
    pub fn instance_dir(&self) -> &Path {
        &self.dir
    }

    /// The OpenVPN server log of the current (last started) openvpn run. After
    /// [`start_openvpn_again`](Self::start_openvpn_again) the log of run N is
    /// `server-run<N>.log` in the [instance directory](Self::instance_dir).
    pub fn server_log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The calls of the server's `auth-user-pass-verify` script, one line each (`accepted
    /// USER` or `rejected USER`), across restarts of openvpn; absent before the first call.
    pub fn verify_user_calls(&self) -> PathBuf {
        self.dir.join("verify-user.calls")
    }

    /// The dnsmasq log (one line per query).
    pub fn dnsmasq_log(&self) -> PathBuf {
        self.dir.join("dnsmasq.log")
    }

    /// The HTTP server log (one line per request).
    pub fn httpd_log(&self) -> PathBuf {
        self.dir.join("httpd.log")
    }

    /// The last `lines` lines of the server log.
    pub fn server_log_tail(&self, lines: usize) -> String {
        file_tail(&self.server_log(), lines)
    }

    /// PIDs of the processes this server runs in its namespace: openvpn (unless it is stopped,
    /// see [`stop_openvpn`](Self::stop_openvpn)), dnsmasq and httpd.
    pub fn pids(&self) -> Vec<u32> {
        let run = self.openvpn.lock().unwrap_or_else(PoisonError::into_inner);
        run.process
            .iter()
            .chain(&self.helpers)
            .map(TrackedProcess::pid)
            .collect()
    }

    /// The PID of the openvpn server process, or `None` while it is stopped (see
    /// [`stop_openvpn`](Self::stop_openvpn)). `ip netns exec` and `setpriv` replace themselves
    /// with openvpn, so this is openvpn itself: its `/proc/<pid>/stat` counts the server's CPU
    /// time.
    pub fn openvpn_pid(&self) -> Option<u32> {
        let run = self.openvpn.lock().unwrap_or_else(PoisonError::into_inner);
        run.process.as_ref().map(TrackedProcess::pid)
    }

    /// A command for the client namespace, not yet started: `ip netns exec <ns>` then, for
    /// [`RunAs::Nobody`], `setpriv --reuid=nobody --regid=nogroup --clear-groups --`. Proxy
    /// variables of the host are removed; stdio is left to the caller.
    pub fn client_command(&self, run_as: RunAs, argv: &[&str]) -> Command {
        client_command(
            &self.programs.ip,
            &self.programs.setpriv,
            &self.client_ns,
            &self.dir,
            run_as,
            argv,
        )
    }

    /// Runs `argv` in the client namespace and waits up to `timeout` for it. A non-zero exit
    /// status is not an error (check [`CommandOutput::success`]); exceeding `timeout` is (the
    /// command is killed). Output goes through files, so a command leaving a background child
    /// behind cannot block the harness.
    pub fn run_in_client(
        &self,
        run_as: RunAs,
        argv: &[&str],
        timeout: Duration,
    ) -> Result<CommandOutput, HarnessError> {
        let number = self.command_counter.fetch_add(1, Ordering::Relaxed);
        run_to_completion(
            self.client_command(run_as, argv),
            &self.dir,
            &format!("cmd{number}"),
            &self.programs.kill,
            timeout,
        )
    }

    /// Starts `argv` in the client namespace in the background; stdout and stderr go to
    /// `<instance dir>/<log_name>`. The process is stopped when the returned handle is dropped.
    pub fn spawn_in_client(
        &self,
        run_as: RunAs,
        argv: &[&str],
        log_name: &str,
    ) -> Result<NsProcess<'_>, HarnessError> {
        let command = self.client_command(run_as, argv);
        let what = command_line(&command);
        let process = self.spawn_tracked(&what, command, log_name)?;
        Ok(NsProcess::new(process))
    }

    /// Starts `argv` as root in the server namespace in the background (a sink, a capture);
    /// stdout and stderr go to `<instance dir>/<log_name>`. The process is stopped when the
    /// returned handle is dropped.
    pub fn spawn_in_server(
        &self,
        argv: &[&str],
        log_name: &str,
    ) -> Result<NsProcess<'_>, HarnessError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(HarnessError::Unsupported(
                "spawn_in_server needs a program".into(),
            ));
        };
        let mut command = self.root_command_in(&self.server_ns, Path::new(program));
        command.args(args);
        let what = command_line(&command);
        let process = self.spawn_tracked(&what, command, log_name)?;
        Ok(NsProcess::new(process))
    }

    /// Starts `argv` with [`spawn_in_server`](Self::spawn_in_server) and waits up to 5 s
    /// until its log contains `ready`.
    pub fn spawn_in_server_until(
        &self,
        argv: &[&str],
        log_name: &str,
        ready: &str,
    ) -> Result<NsProcess<'_>, HarnessError> {
        let process = self.spawn_in_server(argv, log_name)?;
        let log = self.dir.join(log_name);
        let waited = Duration::from_secs(5);
        let deadline = Instant::now() + waited;
        loop {
            let text = fs::read_to_string(&log).unwrap_or_default();
            if text.contains(ready) {
                return Ok(process);
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::NotReady {
                    what: format!("{} ({ready:?} in {log_name})", argv.join(" ")),
                    waited,
                    detail: text,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Captures the TCP segments matching `filter` on every interface of the server
    /// namespace (the server's tun device shows the inner packets as the origin sees them):
    /// tcpdump prints one line per segment, with its flags, options and length, into
    /// `<instance dir>/<log_name>`. Returns once it listens; stop the handle to end it.
    pub fn start_server_capture(
        &self,
        filter: &str,
        log_name: &str,
    ) -> Result<NsProcess<'_>, HarnessError> {
        let tcpdump = find_program("tcpdump")
            .ok_or_else(|| HarnessError::Unsupported("tcpdump is not installed".into()))?;
        let tcpdump = tcpdump.to_string_lossy().into_owned();
        self.spawn_in_server_until(
            &[&tcpdump, "-i", "any", "-n", "-l", filter],
            log_name,
            "listening on",
        )
    }

    /// Starts the stock OpenVPN client (kernel tun, as root) in the client namespace with
    /// this instance's client profile (and `--auth-user-pass` with
    /// [`credentials_path`](Self::credentials_path) for the username/password profiles). Its
    /// log is `<instance dir>/<log_name>`.
    pub fn start_stock_client(&self, log_name: &str) -> Result<NsProcess<'_>, HarnessError> {
        let credentials = self.credentials_path().to_string_lossy().into_owned();
        let extra: &[&str] = if self.uses_username_password() {
            &["--auth-user-pass", &credentials]
        } else {
            &[]
        };
        self.start_stock_client_with(log_name, &self.client_profile_path(), extra)
    }

    /// Starts the stock OpenVPN client (kernel tun, as root) with the client profile at
    /// `profile` (e.g. one written by [`write_client_file`](Self::write_client_file)) and
    /// `extra_args` after it (later options win; `--auth-user-pass FILE` for the
    /// username/password profiles: the client has no terminal to ask on). It runs with
    /// `--verb 4`, so its log shows the pushed options (`PUSH: Received control message`).
    pub fn start_stock_client_with(
        &self,
        log_name: &str,
        profile: &Path,
        extra_args: &[&str],
    ) -> Result<NsProcess<'_>, HarnessError> {
        let openvpn = self.programs.openvpn.to_string_lossy().into_owned();
        let dir = self.dir.to_string_lossy().into_owned();
        let profile = profile.to_string_lossy().into_owned();
        let mut argv = vec![
            openvpn.as_str(),
            "--cd",
            &dir,
            "--config",
            &profile,
            "--disable-dco",
            "--verb",
            "4",
        ];
        argv.extend_from_slice(extra_args);
        self.spawn_in_client(RunAs::Root, &argv, log_name)
    }

    /// Waits until the client namespace has [`CLIENT_TUNNEL_ADDR`] on a tun device (the stock
    /// client configured it). In p2p mode this happens before any packet is exchanged; it is
    /// not a proof of connectivity.
    pub fn wait_for_client_tun(&self, timeout: Duration) -> Result<(), HarnessError> {
        let ready = poll_until(timeout, || {
            Ok(self
                .has_address(&self.client_ns, CLIENT_TUNNEL_ADDR)
                .then_some(()))
        })?;
        ready.ok_or_else(|| HarnessError::NotReady {
            what: format!("{CLIENT_TUNNEL_ADDR} on a tun device in {}", self.client_ns),
            waited: timeout,
            detail: self.server_diagnostics(),
        })
    }

    /// Sends up to `count` ICMP echo requests to `addr` from the client namespace, waiting
    /// `per_attempt` for each reply. `Ok(true)` as soon as one reply arrives.
    pub fn ping_from_client(
        &self,
        addr: Ipv4Addr,
        count: u32,
        per_attempt: Duration,
    ) -> Result<bool, HarnessError> {
        let python = self.programs.python3.to_string_lossy().into_owned();
        let out = self.run_in_client(
            RunAs::Root,
            &[
                &python,
                "probe.py",
                "ping",
                &addr.to_string(),
                "--count",
                &count.to_string(),
                "--timeout",
                &per_attempt.as_secs_f64().to_string(),
            ],
            per_attempt * count + Duration::from_secs(5),
        )?;
        Ok(out.success())
    }

    /// Looks `name` up (type A) at the tunnel DNS server from the client namespace and returns
    /// the addresses of the answer (empty when there is none, e.g. before the tunnel is up).
    pub fn resolve_from_client(
        &self,
        run_as: RunAs,
        name: &str,
        timeout: Duration,
    ) -> Result<Vec<Ipv4Addr>, HarnessError> {
        let python = self.programs.python3.to_string_lossy().into_owned();
        let out = self.run_in_client(
            run_as,
            &[
                &python,
                "probe.py",
                "dns",
                &SERVER_TUNNEL_ADDR.to_string(),
                name,
                "--timeout",
                &timeout.as_secs_f64().to_string(),
            ],
            timeout + Duration::from_secs(5),
        )?;
        Ok(out
            .stdout_text()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect())
    }
}

impl Drop for OpenVpnServer {
    fn drop(&mut self) {
        // Signal everything first so the processes wind down in parallel, then reap them.
        // A TLS server over UDP answers SIGTERM by sending RESTART (explicit-exit-notify) to
        // its client instances and waiting 2 s for them; no client can be left by now (an
        // `NsProcess` cannot outlive its server), so it is killed outright.
        let kill_openvpn_now = self.profile.is_tls() && self.transport == Transport::Udp;
        let mut openvpn = self
            .openvpn
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .process
            .take();
        for process in self.helpers.iter_mut().rev() {
            process.terminate();
        }
        if let Some(process) = openvpn.as_mut() {
            if kill_openvpn_now {
                process.kill_now();
            } else {
                process.terminate();
            }
        }
        for process in self.helpers.iter_mut().rev().chain(openvpn.as_mut()) {
            if process.finish(STOP_GRACE).is_none() {
                eprintln!(
                    "netns harness: could not reap {} (pid {})",
                    process.what,
                    process.pid()
                );
            }
        }
        self.helpers.clear();
        drop(openvpn);
        for namespace in std::mem::take(&mut self.namespaces).iter().rev() {
            for problem in delete_namespace(&self.programs.ip, &self.programs.kill, namespace) {
                eprintln!("netns harness: {problem}");
            }
        }
        let keep = std::thread::panicking()
            || std::env::var("EREBUS_KEEP_HARNESS").is_ok_and(|value| value == "1");
        if keep {
            eprintln!(
                "netns harness: logs of {} over {} kept in {}",
                self.profile,
                self.transport,
                self.dir.display()
            );
        } else if let Err(error) = fs::remove_dir_all(&self.dir) {
            eprintln!(
                "netns harness: could not remove {}: {error}",
                self.dir.display()
            );
        }
    }
}

/// Whether a test may write `name` with [`OpenVpnServer::write_client_file`]: a plain file
/// name that is none of the harness's own files.
fn is_client_file_name(name: &str) -> bool {
    const RESERVED: [&str; 4] = [
        "client.ovpn",
        "credentials.txt",
        "wrong-credentials.txt",
        "auth-users.txt",
    ];
    const HARNESS_EXTENSIONS: [&str; 11] = [
        ".key", ".sh", ".py", ".crt", ".conf", ".log", ".stdout", ".stderr", ".pid", ".so", ".c",
    ];
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0');
    let harness_owned = RESERVED.contains(&name)
        || HARNESS_EXTENSIONS
            .iter()
            .any(|extension| name.ends_with(extension));
    plain && !harness_owned
}

/// The `IV_PROTO` value of the last `peer info: IV_PROTO=N` line in an OpenVPN server log.
fn parse_last_iv_proto(log: &str) -> Option<u32> {
    log.lines().rev().find_map(|line| {
        let (_, rest) = line.split_once("peer info: IV_PROTO=")?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// The `(sent, read)` pairs of the shim's `rewrote IV_PROTO=A to IV_PROTO=B` lines.
fn parse_iv_proto_rewrites(log: &str) -> Vec<(u32, u32)> {
    log.lines()
        .filter_map(|line| {
            let rest = line.split_once("rewrote IV_PROTO=")?.1;
            let (sent, rest) = rest.split_once(" to IV_PROTO=")?;
            let read: String = rest.chars().take_while(char::is_ascii_digit).collect();
            Some((sent.parse().ok()?, read.parse().ok()?))
        })
        .collect()
}

/// The quoted text of the last `SENT CONTROL [...]: 'PUSH_REPLY,...'` line of a server log.
fn parse_last_push_reply(log: &str) -> Option<String> {
    log.lines().rev().find_map(|line| {
        let (_, rest) = line.split_once("SENT CONTROL [")?;
        let (_, quoted) = rest.split_once("]: '")?;
        let text = quoted.strip_suffix('\'').unwrap_or(quoted);
        text.starts_with("PUSH_REPLY,").then(|| {
            text.split_once("' (status=")
                .map_or(text, |(t, _)| t)
                .to_owned()
        })
    })
}

/// Appends `<tag>\n<pem>\n</tag>\n`.
fn push_inline_block(text: &mut String, tag: &str, pem: &str) {
    text.push('<');
    text.push_str(tag);
    text.push_str(">\n");
    text.push_str(pem.trim_end());
    text.push_str("\n</");
    text.push_str(tag);
    text.push_str(">\n");
}

/// The client profile of a TLS profile over `transport`, everything inline, provider style:
/// `ca`, the client's certificate and key if it has one, and the control-channel key.
fn tls_client_profile_text(
    profile: ServerProfile,
    transport: Transport,
    ca: &str,
    certificate: Option<(&str, &str)>,
    control_channel_key: Option<&str>,
) -> String {
    let mut text = format!(
        "# erebus interop harness: client profile \"{profile}\" over {transport}.\n\
         # The keys below are throw-away test keys; the certificates come from a test CA.\n\
         client\n\
         dev tun\n\
         proto {}\n\
         remote {SERVER_OUTER_ADDR} {OPENVPN_PORT}\n\
         nobind\n\
         remote-cert-tls server\n\
         verify-x509-name {SERVER_CERT_NAME} name\n",
        transport.client_proto()
    );
    if profile.uses_username_password() {
        text.push_str("auth SHA512\nauth-user-pass\n");
    } else {
        text.push_str(&format!("data-ciphers {TLS_CRYPT_DATA_CIPHERS}\n"));
    }
    if transport == Transport::Udp {
        text.push_str("explicit-exit-notify 1\n");
    }
    text.push_str("verb 3\n");
    push_inline_block(&mut text, "ca", ca);
    if let Some((cert, key)) = certificate {
        push_inline_block(&mut text, "cert", cert);
        push_inline_block(&mut text, "key", key);
    }
    if let (Some(option), Some(key)) = (profile.control_channel_key(), control_channel_key) {
        if option == "tls-auth" {
            text.push_str("key-direction 1\n");
        }
        push_inline_block(&mut text, option, key);
    }
    text
}

/// The client profile for a point-to-point `profile` over `transport`, with its key inline.
/// It is what a provider would hand out, and the stock client accepts it as it is. (The TLS
/// profiles need certificates: use [`OpenVpnServer::client_profile`].)
pub fn client_profile_text(
    profile: ServerProfile,
    transport: Transport,
    static_key: Option<&str>,
) -> String {
    let mut text = format!(
        "# erebus interop harness: client profile \"{profile}\" over {transport}.\n\
         # Any key below is a throw-away test key generated for one harness instance.\n\
         dev tun\n\
         proto {}\n\
         remote {SERVER_OUTER_ADDR} {OPENVPN_PORT}\n\
         nobind\n\
         ifconfig {CLIENT_TUNNEL_ADDR} {SERVER_TUNNEL_ADDR}\n",
        transport.client_proto()
    );
    if profile == ServerProfile::StaticKey {
        text.push_str("cipher AES-256-CBC\nauth SHA256\n");
    }
    text.push_str("keepalive 10 60\n");
    if transport == Transport::Udp {
        // Lets the p2p server restart at once when the client leaves, ready for the next one.
        text.push_str("explicit-exit-notify 1\n");
    }
    text.push_str("verb 3\n");
    if let Some(key) = static_key {
        text.push_str("key-direction 1\n<secret>\n");
        text.push_str(key.trim_end());
        text.push_str("\n</secret>\n");
    }
    text
}

// ---------------------------------------------------------------------------------------------
// The pattern stream served at /bytes/N
// ---------------------------------------------------------------------------------------------

/// Length of one chunk of the pattern stream.
pub const PATTERN_CHUNK_LEN: usize = 65536;

/// The deterministic byte stream the HTTP server sends for `GET /bytes/N` (the first N
/// bytes). `httpd.py` implements the same definition:
///
/// ```text
/// base    = SHA256("erebus-harness-bytes" || u32be(i))  for i in 0..2048      (64 KiB)
/// chunk j = base XOR (SHA256("erebus-harness-chunk" || u64be(j)) repeated 2048 times)
/// stream  = chunk 0 || chunk 1 || ...
/// ```
///
/// No 32-byte block repeats within a chunk and every chunk differs, so lost, duplicated or
/// reordered data changes the hash; and both sides make it fast (one XOR pass per 64 KiB).
#[derive(Clone)]
pub struct PatternStream {
    base: Box<[u8]>,
    chunk: Box<[u8]>,
    /// Index of the chunk currently in `chunk`.
    chunk_index: Option<u64>,
    position: u64,
}

impl fmt::Debug for PatternStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PatternStream")
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl Default for PatternStream {
    fn default() -> Self {
        Self::new()
    }
}

impl PatternStream {
    /// A stream positioned at its first byte.
    pub fn new() -> Self {
        let mut base = vec![0u8; PATTERN_CHUNK_LEN].into_boxed_slice();
        for (index, block) in (0u32..).zip(base.chunks_exact_mut(32)) {
            let mut hash = Sha256::new();
            hash.update(b"erebus-harness-bytes");
            hash.update(index.to_be_bytes());
            block.copy_from_slice(&hash.finalize());
        }
        Self {
            base,
            chunk: vec![0u8; PATTERN_CHUNK_LEN].into_boxed_slice(),
            chunk_index: None,
            position: 0,
        }
    }

    /// How many bytes have been produced so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    fn load_chunk(&mut self, index: u64) {
        if self.chunk_index == Some(index) {
            return;
        }
        let mut hash = Sha256::new();
        hash.update(b"erebus-harness-chunk");
        hash.update(index.to_be_bytes());
        let pad: [u8; 32] = hash.finalize().into();
        for ((out, base), pad) in self
            .chunk
            .iter_mut()
            .zip(self.base.iter())
            .zip(pad.iter().cycle())
        {
            *out = base ^ pad;
        }
        self.chunk_index = Some(index);
    }

    /// Fills `out` with the next `out.len()` bytes of the stream.
    pub fn fill(&mut self, out: &mut [u8]) {
        let chunk_len = PATTERN_CHUNK_LEN as u64;
        let mut written = 0;
        while written < out.len() {
            self.load_chunk(self.position / chunk_len);
            // `position % chunk_len` < 65536, so it fits any usize.
            let offset = (self.position % chunk_len) as usize;
            let take = (PATTERN_CHUNK_LEN - offset).min(out.len() - written);
            out[written..written + take].copy_from_slice(&self.chunk[offset..offset + take]);
            written += take;
            self.position += take as u64;
        }
    }
}

/// The first `len` bytes of the [pattern stream](PatternStream).
pub fn pattern_bytes(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    PatternStream::new().fill(&mut out);
    out
}

/// SHA-256 of the first `len` bytes of the [pattern stream](PatternStream), computed in
/// 1 MiB steps (no allocation of `len` bytes).
pub fn pattern_sha256(len: u64) -> [u8; 32] {
    let mut stream = PatternStream::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut hash = Sha256::new();
    let mut remaining = len;
    while remaining > 0 {
        let step = buffer
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        stream.fill(&mut buffer[..step]);
        hash.update(&buffer[..step]);
        remaining -= step as u64;
    }
    hash.finalize().into()
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Lower-case hex of `bytes`, as `sha256sum` and `httpd.py` print it.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_first_block_follows_the_definition() {
        let base0 =
            Sha256::digest([b"erebus-harness-bytes".as_slice(), &0u32.to_be_bytes()].concat());
        let pad0 =
            Sha256::digest([b"erebus-harness-chunk".as_slice(), &0u64.to_be_bytes()].concat());
        let expected: Vec<u8> = base0.iter().zip(pad0.iter()).map(|(a, b)| a ^ b).collect();
        assert_eq!(pattern_bytes(32), expected);
    }

    #[test]
    fn pattern_second_chunk_starts_with_its_own_pad() {
        let base0 =
            Sha256::digest([b"erebus-harness-bytes".as_slice(), &0u32.to_be_bytes()].concat());
        let pad1 =
            Sha256::digest([b"erebus-harness-chunk".as_slice(), &1u64.to_be_bytes()].concat());
        let expected: Vec<u8> = base0.iter().zip(pad1.iter()).map(|(a, b)| a ^ b).collect();
        let bytes = pattern_bytes(PATTERN_CHUNK_LEN + 32);
        assert_eq!(&bytes[PATTERN_CHUNK_LEN..], expected.as_slice());
        assert_ne!(&bytes[..32], &bytes[PATTERN_CHUNK_LEN..]);
    }

    #[test]
    fn pattern_fill_is_independent_of_the_read_sizes() {
        let whole = pattern_bytes(3 * PATTERN_CHUNK_LEN + 1000);
        let mut stream = PatternStream::new();
        let mut pieces = Vec::new();
        for size in [1usize, 31, 65503, 2, 70000, 65536, 65536].iter().cycle() {
            let left = whole.len() - pieces.len();
            if left == 0 {
                break;
            }
            let mut buf = vec![0u8; (*size).min(left)];
            stream.fill(&mut buf);
            pieces.extend_from_slice(&buf);
        }
        assert_eq!(stream.position(), whole.len() as u64);
        assert_eq!(pieces, whole);
    }

    #[test]
    fn pattern_sha256_matches_hashing_the_bytes() {
        for len in [0usize, 1, 65535, 65536, (1 << 20) + 7] {
            assert_eq!(
                pattern_sha256(len as u64),
                sha256(&pattern_bytes(len)),
                "len {len}"
            );
        }
    }

    #[test]
    fn pattern_blocks_do_not_repeat_within_a_chunk() {
        let bytes = pattern_bytes(PATTERN_CHUNK_LEN);
        let blocks: std::collections::BTreeSet<&[u8]> = bytes.chunks_exact(32).collect();
        assert_eq!(blocks.len(), PATTERN_CHUNK_LEN / 32);
    }

    #[test]
    fn tcp_table_lines_are_read_by_state_and_port() {
        let listen = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 65534 0 1 1";
        let established =
            "   1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000 0 0 2 1";
        assert!(tcp_table_line_listens(listen, 8080));
        assert!(!tcp_table_line_listens(listen, 8081));
        assert!(!tcp_table_line_listens(established, 8080));
        assert!(!tcp_table_line_listens(
            "  sl  local_address rem_address   st",
            8080
        ));
        assert!(!tcp_table_line_listens("", 8080));
    }

    #[test]
    fn client_files_cannot_replace_harness_files() {
        for name in ["wrong-ca.ovpn", "creds2.txt", "profile.ovpn"] {
            assert!(is_client_file_name(name), "{name}");
        }
        for name in [
            "",
            ".",
            "..",
            "../x.ovpn",
            "a/b.ovpn",
            "client.ovpn",
            "credentials.txt",
            "auth-users.txt",
            "server.conf",
            "tls-crypt.key",
            "verify-user.sh",
            "httpd.py",
            "ca.crt",
            "server.log",
            "server.stdout",
            "legacy-prf-shim.so",
            "legacy-prf-shim.c",
        ] {
            assert!(!is_client_file_name(name), "{name}");
        }
    }

    #[test]
    fn real_uid_is_the_first_uid_field() {
        let status = "Name:\terebus\nState:\tS (sleeping)\nUid:\t65534\t0\t0\t0\n\
                      Gid:\t65534\t65534\t65534\t65534\n";
        assert_eq!(parse_real_uid(status), Some(65534));
        assert_eq!(parse_real_uid("Name:\tx\n"), None);
        assert_eq!(parse_real_uid("Uid:\tnope\n"), None);
        assert_eq!(
            uid_of(std::process::id()),
            parse_real_uid(&fs::read_to_string("/proc/self/status").unwrap())
        );
    }

    #[test]
    fn profile_names_round_trip() {
        for profile in ServerProfile::ALL {
            assert_eq!(ServerProfile::from_name(profile.name()), Some(profile));
        }
        assert_eq!(ServerProfile::from_name("tls"), None);
        assert_eq!(
            ServerProfile::ALL.len(),
            ServerProfile::POINT_TO_POINT.len() + ServerProfile::TLS.len()
        );
    }

    #[test]
    fn iv_proto_is_read_from_the_last_peer_info_line() {
        let log = "2026-11-21 10.99.0.2:40000 peer info: IV_VER=2.6.14\n\
                   2026-11-21 10.99.0.2:40000 peer info: IV_PROTO=990\n\
                   2026-11-21 10.99.0.2:40001 peer info: IV_PROTO=982\n\
                   2026-11-21 10.99.0.2:40001 peer info: IV_CIPHERS=AES-256-GCM\n";
        assert_eq!(parse_last_iv_proto(log), Some(982));
        assert_eq!(parse_last_iv_proto("no peer here\n"), None);
        assert_eq!(parse_last_iv_proto("peer info: IV_PROTO=\n"), None);
    }

    #[test]
    fn shim_rewrites_are_read_from_its_log() {
        let log = "legacy-prf-shim: loaded into openvpn (pid 7), BIO_read hooked\n\
                   legacy-prf-shim: rewrote IV_PROTO=990 to IV_PROTO=982 (TLS_KEY_EXPORT hidden)\n\
                   legacy-prf-shim: IV_PROTO=134 has no TLS_KEY_EXPORT, left as is\n\
                   legacy-prf-shim: rewrote IV_PROTO=142 to IV_PROTO=134 (TLS_KEY_EXPORT hidden)\n";
        assert_eq!(parse_iv_proto_rewrites(log), vec![(990, 982), (142, 134)]);
        assert!(parse_iv_proto_rewrites("rewrote IV_PROTO=x to IV_PROTO=1\n").is_empty());
    }

    #[test]
    fn push_reply_is_read_from_the_last_sent_control_line() {
        let log = "t [client1] SENT CONTROL [client1]: 'PUSH_REPLY,ping 10,protocol-flags cc-exit tls-ekm' (status=1)\n\
                   t [client1] SENT CONTROL [client1]: 'AUTH_FAILED' (status=1)\n\
                   t [client1] SENT CONTROL [client1]: 'PUSH_REPLY,ping 10,protocol-flags cc-exit' (status=1)\n\
                   t [client1] SENT CONTROL [client1]: 'RESTART' (status=1)\n";
        assert_eq!(
            parse_last_push_reply(log).as_deref(),
            Some("PUSH_REPLY,ping 10,protocol-flags cc-exit")
        );
        assert_eq!(parse_last_push_reply("no push here\n"), None);
    }

    #[test]
    fn tls_client_profiles_inline_everything() {
        let ca = "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n";
        let cert = "-----BEGIN CERTIFICATE-----\nC1\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN PRIVATE KEY-----\nK1\n-----END PRIVATE KEY-----\n";
        let tls = "-----BEGIN OpenVPN Static key V1-----\nT\n-----END OpenVPN Static key V1-----\n";

        let crypt = tls_client_profile_text(
            ServerProfile::TlsCrypt,
            Transport::Udp,
            ca,
            Some((cert, key)),
            Some(tls),
        );
        for line in [
            "client",
            "proto udp",
            "remote 10.99.0.1 1194",
            "remote-cert-tls server",
            "verify-x509-name server.erebus.test name",
            "data-ciphers AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305",
            "explicit-exit-notify 1",
        ] {
            assert!(crypt.contains(&format!("\n{line}\n")), "{line}\n{crypt}");
        }
        assert!(crypt.contains("\n<ca>\n-----BEGIN CERTIFICATE-----\nCA\n"));
        assert!(crypt.contains("\n<cert>\n-----BEGIN CERTIFICATE-----\nC1\n"));
        assert!(crypt.contains("\n<key>\n-----BEGIN PRIVATE KEY-----\nK1\n"));
        assert!(crypt.ends_with("-----END OpenVPN Static key V1-----\n</tls-crypt>\n"));
        assert!(!crypt.contains("auth-user-pass") && !crypt.contains("key-direction"));

        let userpass = tls_client_profile_text(
            ServerProfile::TlsAuthUserPass,
            Transport::Tcp,
            ca,
            None,
            Some(tls),
        );
        assert!(userpass.contains("\nproto tcp-client\n"));
        assert!(userpass.contains("\nauth SHA512\nauth-user-pass\n"));
        assert!(userpass.contains("\nkey-direction 1\n<tls-auth>\n"));
        assert!(!userpass.contains("<cert>") && !userpass.contains("<key>"));
        assert!(!userpass.contains("explicit-exit-notify"));
        assert!(!userpass.contains("data-ciphers"));
    }

    #[test]
    fn owner_pid_reads_harness_names_only() {
        assert_eq!(owner_pid("ebt1234n0s"), Some(1234));
        assert_eq!(owner_pid("ebt1234n17c"), Some(1234));
        assert_eq!(owner_pid("ebt1234n17"), Some(1234));
        assert_eq!(owner_pid("ebt1234n17x"), None);
        assert_eq!(owner_pid("ebt1234n3pki"), Some(1234));
        assert_eq!(owner_pid("ebt1234n4shim"), Some(1234));
        assert_eq!(owner_pid("ebt1234pki"), None);
        assert_eq!(owner_pid("ebtn1s"), None);
        assert_eq!(owner_pid("ebt12a4n1s"), None);
        assert_eq!(owner_pid("ebt1234n"), None);
        assert_eq!(owner_pid("ovh-srv"), None);
        assert_eq!(owner_pid("sswan-init"), None);
    }

    #[test]
    fn client_profiles_inline_the_key_and_match_the_transport() {
        let udp = client_profile_text(ServerProfile::Plaintext, Transport::Udp, None);
        assert!(udp.contains("\nproto udp\n"));
        assert!(udp.contains("\nremote 10.99.0.1 1194\n"));
        assert!(udp.contains("\nifconfig 10.8.0.2 10.8.0.1\n"));
        assert!(udp.contains("\nexplicit-exit-notify 1\n"));
        assert!(!udp.contains("<secret>") && !udp.contains("cipher"));

        let key =
            "-----BEGIN OpenVPN Static key V1-----\nabcd\n-----END OpenVPN Static key V1-----\n";
        let tcp = client_profile_text(ServerProfile::StaticKey, Transport::Tcp, Some(key));
        assert!(tcp.contains("\nproto tcp-client\n"));
        assert!(tcp.contains("\ncipher AES-256-CBC\nauth SHA256\n"));
        assert!(tcp.contains(
            "\nkey-direction 1\n<secret>\n-----BEGIN OpenVPN Static key V1-----\nabcd\n"
        ));
        assert!(tcp.ends_with("-----END OpenVPN Static key V1-----\n</secret>\n"));
        assert!(!tcp.contains("explicit-exit-notify"));
    }

    #[test]
    fn server_configs_leave_proto_to_the_harness() {
        for profile in ServerProfile::ALL {
            let config = profile.server_config();
            assert!(
                !config.lines().any(|line| line.starts_with("proto")),
                "{profile}"
            );
            assert!(config.contains("\nlocal 10.99.0.1\n"), "{profile}");
            assert!(config.contains("\ndisable-dco\n"), "{profile}");
            assert!(config.contains("\nkeepalive 10 60\n"), "{profile}");
            // explicit-exit-notify is UDP only; the harness adds it on the command line.
            assert!(
                !config
                    .lines()
                    .any(|line| line.starts_with("explicit-exit-notify")),
                "{profile}"
            );
        }
        for profile in ServerProfile::POINT_TO_POINT {
            assert!(profile.is_point_to_point() && !profile.is_tls());
            assert!(
                profile
                    .server_config()
                    .contains("\nifconfig 10.8.0.1 10.8.0.2\n"),
                "{profile}"
            );
        }
        for profile in ServerProfile::TLS {
            let config = profile.server_config();
            assert!(profile.is_tls() && !profile.is_point_to_point());
            for line in [
                "server 10.8.0.0 255.255.255.0",
                "topology subnet",
                "dh none",
                "ca ca.crt",
                "cert server.crt",
                "key server.key",
                "push \"dhcp-option DNS 10.8.0.1\"",
                "push \"dhcp-option DOMAIN erebus.test\"",
            ] {
                assert!(config.contains(&format!("\n{line}\n")), "{profile}: {line}");
            }
            assert!(!config.contains("ifconfig "), "{profile}");
        }
        for profile in [ServerProfile::TlsCrypt, ServerProfile::TlsLegacyPrf] {
            let config = profile.server_config();
            assert!(config.contains("\ntls-crypt tls-crypt.key\n"), "{profile}");
            assert!(config.contains(&format!("\ndata-ciphers {TLS_CRYPT_DATA_CIPHERS}\n")));
            assert!(profile.uses_client_certificate() && !profile.uses_username_password());
        }
        // The legacy-PRF server differs only by its preloaded library: no script gate.
        assert!(
            !ServerProfile::TlsLegacyPrf
                .server_config()
                .lines()
                .any(|line| line.starts_with("client-connect") || line.starts_with("script"))
        );
        for profile in [
            ServerProfile::TlsAuthUserPass,
            ServerProfile::TlsAuthUserPassLzo,
        ] {
            let config = profile.server_config();
            for line in [
                "tls-auth tls-auth.key 0",
                "auth SHA512",
                "data-ciphers CHACHA20-POLY1305",
                "script-security 2",
                "auth-user-pass-verify ./verify-user.sh via-file",
                "verify-client-cert none",
            ] {
                assert!(config.contains(&format!("\n{line}\n")), "{profile}: {line}");
            }
            assert!(profile.uses_username_password() && !profile.uses_client_certificate());
        }
        assert!(
            ServerProfile::TlsAuthUserPass
                .server_config()
                .contains("\ncompress stub-v2\npush \"compress stub-v2\"\n")
        );
        assert!(
            ServerProfile::TlsAuthUserPassLzo
                .server_config()
                .contains("\ncomp-lzo no\npush \"comp-lzo no\"\n")
        );
        assert!(
            ServerProfile::StaticKey
                .server_config()
                .contains("\nsecret static.key 0\n")
        );
        assert!(!ServerProfile::Plaintext.server_config().contains("secret"));
    }
}
