//! The harness of `erebus serve`: the rootless exit server, run as nobody in a network
//! namespace, with real OpenVPN 2.6 clients (or erebus itself) in another.
//!
//! ```text
//!  netns ebsv<pid>n<counter>c (client side)          netns ebsv<pid>n<counter>s (server side)
//!  the stock openvpn client (root, tun0 10.203.0.x)  erebus serve as nobody, no tun device:
//!  or erebus as nobody (no tun)                      udp or tcp-server 10.201.0.1:11194
//!  vsv-cli 10.201.0.2/24 <========= veth =========> vsv-srv 10.201.0.1/24
//!  route 10.202.0.0/24 via the tunnel (pushed)       lo 10.202.0.1/32, the origin:
//!                                                      httpd.py 10.202.0.1:8080 (allowed)
//!                                                      httpd.py 10.202.0.1:8081 (not allowed)
//!                                                    [udp echo 10.202.0.1:7007 (allowed), :7008]
//! ```
//!
//! The server's clients get addresses from `server 10.203.0.0 255.255.255.0` and a pushed
//! `route 10.202.0.0 255.255.255.0`; erebus serve runs with `--allow 10.202.0.0/24:8080`, so
//! every inner flow to the origin's port 8080 leaves through an ordinary socket of the server
//! namespace, and the origin's port 8081 (which answers from inside the server namespace) is
//! refused by the allow-list. The client namespace has no route to 10.202.0.0/24 but the
//! pushed one: whatever reaches the origin from there went through erebus serve.
//!
//! The server's certificate, the CA and the good client (`CN=client1`) come from
//! `testvectors/tls-pki`; the `tls-crypt` key is made with `openvpn --genkey secret` for every
//! instance, and so is the untrusted client certificate ([`ClientIdentity::UntrustedCertificate`]:
//! also `CN=client1`, EKU clientAuth, but issued by a CA made with `openssl` that the server
//! does not trust). The username/password servers check [`AUTH_USERNAME`] and
//! [`AUTH_PASSWORD`] against a users file (`--users`).
//!
//! Every instance has its own pair of namespaces (named after the test process's PID, so the
//! next run in any process removes what a killed one left behind) and its own directory.
//! Dropping the harness stops erebus serve (`SIGTERM`), the HTTP servers, then whatever still
//! runs in its namespaces, deletes the namespaces and removes the directory (kept when the
//! thread is panicking or `EREBUS_KEEP_HARNESS=1` is set).
//!
//! With [`ServerAuth::StaticKey`] the server is OpenVPN's static-key point-to-point one
//! instead: `ifconfig 10.203.0.1 10.203.0.2`, `secret static.key 0` (a key made with `openvpn
//! --genkey secret` for the instance), AES-256-CBC with SHA256, one peer and no TLS; its
//! profile ([`ClientIdentity::StaticKey`]) has `ifconfig 10.203.0.2 10.203.0.1`, the key
//! inline with `key-direction 1`, and the route to the origin itself (nothing is pushed).
//!
//! Needs root, `/dev/net/tun` (for the stock client) and the programs of
//! [`crate::netns::require_netns`], plus `curl`; tests start with [`should_run_interop`].

use std::fmt;
use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once, PoisonError};
use std::time::Duration;

pub use crate::netns::{
    AUTH_PASSWORD, AUTH_USERNAME, CommandOutput, HTTP_MARKER, HarnessError, NsProcess, RunAs,
    Transport, WRONG_AUTH_PASSWORD,
};
use crate::netns::{
    LOG_TAIL_LINES, NETNS_LOCK, STOP_GRACE, TrackedProcess, client_command, delete_namespace,
    file_contains, file_tail, find_program, harness_name_owner, interop_gate, io_error, poll_until,
    require_netns, root_command_in, run_checked, run_to_completion, spawn_tracked,
    sweep_dead_instances,
};

// ---------------------------------------------------------------------------------------------
// Addresses and names
// ---------------------------------------------------------------------------------------------

/// Outer (veth) address of the server namespace, where erebus serve listens.
pub const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
/// Outer (veth) address of the client namespace.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
/// Prefix length of the veth network.
pub const OUTER_PREFIX_LEN: u8 = 24;
/// The port erebus serve listens on (UDP or TCP): above 1023, as an unprivileged user's.
pub const SERVE_PORT: u16 = 11194;
/// The origin's address, on `lo` of the server namespace.
pub const ORIGIN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 202, 0, 1);
/// The network the server pushes as a route, holding [`ORIGIN_ADDR`].
pub const ORIGIN_NET: &str = "10.202.0.0/24";
/// The origin's HTTP port that the exit allows.
pub const ORIGIN_PORT: u16 = 8080;
/// A second HTTP server on [`ORIGIN_ADDR`] that the exit does not allow: it answers inside the
/// server namespace, but no client reaches it.
pub const REFUSED_ORIGIN_PORT: u16 = 8081;
/// The rule erebus serve gets as `--allow`.
pub const ALLOW_RULE: &str = "10.202.0.0/24:8080";
/// The origin's UDP echo port that the exit allows (with [`ServeOptions::udp_echo`]).
pub const ORIGIN_UDP_PORT: u16 = 7007;
/// A second UDP echo port on [`ORIGIN_ADDR`] that the exit does not allow.
pub const REFUSED_ORIGIN_UDP_PORT: u16 = 7008;
/// The second `--allow` rule erebus serve gets with [`ServeOptions::udp_echo`].
pub const UDP_ALLOW_RULE: &str = "10.202.0.1/32:7007";
/// The server's inner address (`server 10.203.0.0 255.255.255.0`).
pub const SERVER_TUNNEL_ADDR: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 1);
/// The inner address the first client gets.
pub const FIRST_CLIENT_TUNNEL_ADDR: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 2);
/// Name of the veth end in the server namespace.
pub const SERVER_VETH: &str = "vsv-srv";
/// Name of the veth end in the client namespace.
pub const CLIENT_VETH: &str = "vsv-cli";
/// Prefix of every namespace and directory this harness creates: `ebsv<pid>n<counter>`, then
/// `s` (server) or `c` (client) for the namespaces.
pub const NAME_PREFIX: &str = "ebsv";
/// Common name of the server certificate, pinned by the client profiles.
pub const SERVER_CERT_NAME: &str = "server.erebus.test";
/// Common name of the client certificates (the trusted one and the untrusted one).
pub const CLIENT_CERT_NAME: &str = "client1";
/// The line erebus serve prints once its socket is bound.
pub const SERVE_READY: &str = "erebus serve: listening on";
/// The line the stock client logs once its tunnel is up.
pub const STOCK_CLIENT_READY: &str = "Initialization Sequence Completed";
/// Data ciphers of the server and of the client profiles.
const DATA_CIPHERS: &str = "AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305";
/// Bound for erebus serve and the HTTP servers to come up.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long erebus serve gets between `SIGTERM` and `SIGKILL` (it tells its clients and stops
/// within 2 s).
const SERVE_STOP_GRACE: Duration = Duration::from_secs(5);

const HTTPD_PY: &str = include_str!("../harness/httpd.py");
/// The UDP echo server (`python3 -c`, arguments `ADDRESS PORT...`): one socket per port, every
/// datagram logged (`udpecho: <n> bytes to port <port> from <addr>:<port>`) and sent back.
const UDP_ECHO_PY: &str = "\
import selectors, socket, sys
addr = sys.argv[1]
sel = selectors.DefaultSelector()
for port in sys.argv[2:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, int(port)))
    sel.register(s, selectors.EVENT_READ)
    print(f'udpecho: listening on {addr}:{port}', flush=True)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        data, peer = s.recvfrom(65535)
        port = s.getsockname()[1]
        print(f'udpecho: {len(data)} bytes to port {port} from {peer[0]}:{peer[1]}', flush=True)
        s.sendto(data, peer)
";
const CA_CERT: &str = include_str!("../tls-pki/ca.crt");
const SERVER_CERT: &str = include_str!("../tls-pki/server.crt");
const SERVER_KEY: &str = include_str!("../tls-pki/server.key");
const CLIENT_CERT: &str = include_str!("../tls-pki/client.crt");
const CLIENT_KEY: &str = include_str!("../tls-pki/client.pkcs8.key");

// ---------------------------------------------------------------------------------------------
// Requirements and the interop gate
// ---------------------------------------------------------------------------------------------

/// Absolute paths of the programs the harness runs.
#[derive(Debug)]
struct Programs {
    ip: PathBuf,
    setpriv: PathBuf,
    openvpn: PathBuf,
    python3: PathBuf,
    sysctl: PathBuf,
    kill: PathBuf,
    openssl: PathBuf,
    curl: PathBuf,
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
        python3: need("python3", "python3"),
        sysctl: need("sysctl", "procps"),
        kill: need("kill", "procps"),
        openssl: need("openssl", "openssl"),
        curl: need("curl", "curl"),
    };
    if missing.is_empty() {
        Ok(programs)
    } else {
        Err(missing.join("\n"))
    }
}

fn programs() -> Result<&'static Programs, HarnessError> {
    static PROGRAMS: std::sync::OnceLock<Result<Programs, String>> = std::sync::OnceLock::new();
    PROGRAMS
        .get_or_init(find_programs)
        .as_ref()
        .map_err(|missing| HarnessError::Unsupported(missing.clone()))
}

/// What this harness needs: everything [`require_netns`] checks, plus `curl`. The error lists
/// what is missing, one item per line.
pub fn require_serve_netns() -> Result<(), String> {
    let mut missing = Vec::new();
    if let Err(netns) = require_netns() {
        missing.push(netns);
    }
    if let Err(programs) = find_programs() {
        missing.push(programs);
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("\n"))
    }
}

/// The gate of every test of this harness, with the rule of
/// [`crate::netns::should_run_interop`]: `true` when the machine can run it; otherwise a
/// banner on stderr, then a failure (always under `CI=true`), or `false` with
/// `EREBUS_SKIP_INTEROP=1` outside CI.
pub fn should_run_interop(test_name: &str) -> bool {
    interop_gate(
        test_name,
        require_serve_netns(),
        "erebus serve network-namespace harness",
        "# Run the interop tests as root on Linux with /dev/net/tun; .ci/run installs the\n\
         # packages (openvpn openssl dnsmasq-base iproute2 util-linux procps python3 curl gcc \
         libc6-dev).",
    )
}

// ---------------------------------------------------------------------------------------------
// Names, files and users
// ---------------------------------------------------------------------------------------------

static INSTANCE_COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// The PID embedded in a name of this harness (`ebsv<pid>n<counter>` plus `s` or `c`), if it
/// is one.
fn owner_pid(name: &str) -> Option<u32> {
    harness_name_owner(NAME_PREFIX, &["", "s", "c"], name)
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<PathBuf, HarnessError> {
    fs::write(path, contents).map_err(io_error(format!("writing {}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_error(format!("chmod {}", path.display())))?;
    Ok(path.to_owned())
}

/// The numeric id of `name` in `/etc/passwd` (`field` 2, the uid) or `/etc/group` (the gid).
fn account_id(file: &str, name: &str) -> Result<u32, HarnessError> {
    let text = fs::read_to_string(file).map_err(io_error(format!("reading {file}")))?;
    text.lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next() == Some(name))
                .then(|| fields.nth(1)?.parse().ok())
                .flatten()
        })
        .ok_or_else(|| HarnessError::Unsupported(format!("  - no `{name}` in {file}")))
}

/// Makes `path` nobody's, readable by nobody alone: the secrets erebus serve reads as nobody.
fn give_to_nobody(path: &Path) -> Result<(), HarnessError> {
    let uid = account_id("/etc/passwd", "nobody")?;
    let gid = account_id("/etc/group", "nogroup")?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(io_error(format!("chown nobody:nogroup {}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(io_error(format!("chmod {}", path.display())))
}

// ---------------------------------------------------------------------------------------------
// Options and client profiles
// ---------------------------------------------------------------------------------------------

/// How the server authenticates its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServerAuth {
    /// Client certificates issued by the test CA (`verify-client-cert require`, the default).
    Certificate,
    /// No client certificate (`verify-client-cert none`); usernames and passwords checked by
    /// erebus serve against a users file (`--users`) holding [`AUTH_USERNAME`] and
    /// [`AUTH_PASSWORD`].
    UsersFile,
    /// No TLS: OpenVPN's static-key point-to-point mode, one peer holding the instance's
    /// static key (see the [module documentation](self)).
    StaticKey,
}

/// Options for [`ServeHarness::start`].
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// UDP, or TCP (`proto tcp-server`).
    pub transport: Transport,
    /// How clients authenticate.
    pub auth: ServerAuth,
    /// Bound for erebus serve and the HTTP servers to come up.
    pub startup_timeout: Duration,
    /// Also a UDP echo server on [`ORIGIN_ADDR`], ports [`ORIGIN_UDP_PORT`] and
    /// [`REFUSED_ORIGIN_UDP_PORT`], and erebus serve with a second rule,
    /// `--allow` [`UDP_ALLOW_RULE`] (off by default).
    pub udp_echo: bool,
}

impl ServeOptions {
    /// Options for `transport` and `auth`, with the default startup timeout.
    pub fn new(transport: Transport, auth: ServerAuth) -> Self {
        Self {
            transport,
            auth,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            udp_echo: false,
        }
    }
}

/// Who a client profile says the client is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientIdentity {
    /// The test CA's client certificate (`CN=client1`).
    Certificate,
    /// A client certificate (`CN=client1`, EKU clientAuth) issued by a CA the server does not
    /// trust, made with `openssl` for this instance.
    UntrustedCertificate,
    /// No certificate; `auth-user-pass` (the credentials file comes on the command line).
    Password,
    /// The static-key point-to-point profile, for a [`ServerAuth::StaticKey`] server.
    StaticKey,
}

/// The static-key peer's inner address (`ifconfig 10.203.0.1 10.203.0.2`), the same as the
/// first TLS client's.
pub const STATIC_KEY_PEER_TUNNEL_ADDR: Ipv4Addr = FIRST_CLIENT_TUNNEL_ADDR;
/// The name erebus serve logs for the static-key peer.
pub const STATIC_KEY_PEER_NAME: &str = "static-key peer";
/// The static-key mode's cipher and HMAC digest, at both ends.
const STATIC_KEY_CRYPTO: &str = "cipher AES-256-CBC\nauth SHA256\n";

/// The server configuration for `options` (`server.conf` in the instance directory; the
/// files it names are beside it).
pub fn server_conf_text(options: &ServeOptions) -> String {
    if options.auth == ServerAuth::StaticKey {
        let mut text = format!(
            "# erebus serve harness: a stock-looking OpenVPN 2.6 static-key point-to-point\n\
             # server, over {transport}.\n\
             port {SERVE_PORT}\n\
             proto {proto}\n\
             local {SERVER_ADDR}\n\
             dev tun\n\
             ifconfig {SERVER_TUNNEL_ADDR} {STATIC_KEY_PEER_TUNNEL_ADDR}\n\
             secret static.key 0\n\
             {STATIC_KEY_CRYPTO}\
             keepalive 10 60\n\
             persist-tun\n",
            transport = options.transport,
            proto = options.transport.server_proto(),
        );
        if options.transport == Transport::Udp {
            text.push_str("explicit-exit-notify 1\n");
        }
        return text;
    }
    let mut text = format!(
        "# erebus serve harness: a stock-looking OpenVPN 2.6 server.conf, over {transport}.\n\
         port {SERVE_PORT}\n\
         proto {proto}\n\
         local {SERVER_ADDR}\n\
         dev tun\n\
         topology subnet\n\
         server 10.203.0.0 255.255.255.0\n\
         dh none\n\
         ca ca.crt\n\
         cert server.crt\n\
         key server.key\n\
         tls-crypt tls-crypt.key\n\
         data-ciphers {DATA_CIPHERS}\n\
         keepalive 10 60\n\
         push \"route 10.202.0.0 255.255.255.0\"\n",
        transport = options.transport,
        proto = options.transport.server_proto(),
    );
    if options.auth == ServerAuth::UsersFile {
        text.push_str("verify-client-cert none\n");
    }
    if options.transport == Transport::Udp {
        text.push_str("explicit-exit-notify 1\n");
    }
    text
}

/// Appends `<tag>\n<pem>\n</tag>\n`.
fn push_inline_block(text: &mut String, tag: &str, pem: &str) {
    text.push_str(&format!("<{tag}>\n{}\n</{tag}>\n", pem.trim_end()));
}

/// The static-key point-to-point profile for this harness's server over `transport`: the
/// tunnel addresses, the route to the origin (nothing is pushed in this mode) and the key
/// inline. OpenVPN 2.6 needs nothing more (2.7 will want
/// `allow-deprecated-insecure-static-crypto`, which 2.6 refuses).
pub fn static_key_profile_text(transport: Transport, static_key: &str) -> String {
    let mut text = format!(
        "# erebus serve harness: static-key point-to-point profile over {transport}.\n\
         # The key below is a throw-away test key.\n\
         dev tun\n\
         proto {}\n\
         remote {SERVER_ADDR} {SERVE_PORT}\n\
         nobind\n\
         ifconfig {STATIC_KEY_PEER_TUNNEL_ADDR} {SERVER_TUNNEL_ADDR}\n\
         route 10.202.0.0 255.255.255.0\n\
         {STATIC_KEY_CRYPTO}\
         keepalive 10 60\n\
         key-direction 1\n",
        transport.client_proto()
    );
    if transport == Transport::Udp {
        text.push_str("explicit-exit-notify 1\n");
    }
    text.push_str("verb 3\n");
    push_inline_block(&mut text, "secret", static_key);
    text
}

/// A client profile for this harness's server over `transport`, everything inline, as a
/// provider would hand it out: the CA, the identity's certificate and key (or
/// `auth-user-pass`), and the `tls-crypt` key.
pub fn client_profile_text(
    transport: Transport,
    certificate: Option<(&str, &str)>,
    tls_crypt_key: &str,
) -> String {
    let mut text = format!(
        "# erebus serve harness: client profile over {transport}.\n\
         # The keys below are throw-away test keys; the certificates come from a test CA.\n\
         client\n\
         dev tun\n\
         proto {}\n\
         remote {SERVER_ADDR} {SERVE_PORT}\n\
         nobind\n\
         remote-cert-tls server\n\
         verify-x509-name {SERVER_CERT_NAME} name\n\
         data-ciphers {DATA_CIPHERS}\n",
        transport.client_proto()
    );
    if certificate.is_none() {
        text.push_str("auth-user-pass\n");
    }
    if transport == Transport::Udp {
        text.push_str("explicit-exit-notify 1\n");
    }
    text.push_str("verb 3\n");
    push_inline_block(&mut text, "ca", CA_CERT);
    if let Some((cert, key)) = certificate {
        push_inline_block(&mut text, "cert", cert);
        push_inline_block(&mut text, "key", key);
    }
    push_inline_block(&mut text, "tls-crypt", tls_crypt_key);
    text
}

// ---------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------

/// erebus serve as nobody in a server namespace with an HTTP origin, and a client namespace
/// for the clients. See the [module documentation](self).
pub struct ServeHarness {
    options: ServeOptions,
    programs: &'static Programs,
    server_ns: String,
    client_ns: String,
    dir: PathBuf,
    /// The instance's `tls-crypt` key (OpenVPN static key text).
    tls_crypt_key: String,
    /// The instance's `secret` key in static-key mode (empty otherwise).
    static_key: String,
    /// The untrusted client's certificate and key, made on first use.
    untrusted: Mutex<Option<(String, String)>>,
    /// Namespaces created so far, deleted by `Drop`.
    namespaces: Vec<String>,
    /// erebus serve (behind a lock: tests stop it through `&self`).
    serve: Mutex<Option<TrackedProcess>>,
    /// The HTTP servers, in start order.
    helpers: Vec<TrackedProcess>,
    /// Numbers the output files of commands.
    counter: AtomicU32,
}

impl fmt::Debug for ServeHarness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeHarness")
            .field("options", &self.options)
            .field("server_ns", &self.server_ns)
            .field("client_ns", &self.client_ns)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl ServeHarness {
    /// Creates the namespaces and the veth pair, writes the configuration, keys and users
    /// file, starts the two HTTP servers on the origin address and then `erebus` (the binary
    /// at `erebus`) as `erebus serve --config server.conf --allow 10.202.0.0/24:8080
    /// [--users users.txt]`, as nobody in the server namespace, and waits until it listens.
    /// On error everything created so far is removed again.
    pub fn start(erebus: &Path, options: ServeOptions) -> Result<Self, HarnessError> {
        require_serve_netns().map_err(HarnessError::Unsupported)?;
        let programs = programs()?;
        SWEEP.call_once(|| {
            sweep_dead_instances(
                &programs.ip,
                &programs.kill,
                owner_pid,
                "serve harness sweep",
            );
        });
        let counter = INSTANCE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = format!("{NAME_PREFIX}{}n{counter}", std::process::id());
        let dir = std::env::temp_dir().join(&base);
        // Leftover from an earlier process that had the same PID.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).map_err(io_error(format!("creating {}", dir.display())))?;
        // World-readable: erebus runs as nobody and reads its configuration from here.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .map_err(io_error(format!("chmod {}", dir.display())))?;

        // From here on, `Drop` cleans up whatever exists if a step fails.
        let mut harness = Self {
            options,
            programs,
            server_ns: format!("{base}s"),
            client_ns: format!("{base}c"),
            dir,
            tls_crypt_key: String::new(),
            static_key: String::new(),
            untrusted: Mutex::new(None),
            namespaces: Vec::new(),
            serve: Mutex::new(None),
            helpers: Vec::new(),
            counter: AtomicU32::new(0),
        };
        harness.create_network()?;
        harness.write_files()?;
        let timeout = harness.options.startup_timeout;
        for port in [ORIGIN_PORT, REFUSED_ORIGIN_PORT] {
            harness.start_httpd(port, timeout)?;
        }
        if harness.options.udp_echo {
            harness.start_udp_echo(timeout)?;
        }
        harness.start_serve(erebus)?;
        Ok(harness)
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
            (&self.server_ns, SERVER_VETH, SERVER_ADDR),
            (&self.client_ns, CLIENT_VETH, CLIENT_ADDR),
        ] {
            let cidr = format!("{addr}/{OUTER_PREFIX_LEN}");
            run_checked(
                self.ip()
                    .args(["-n", namespace, "addr", "add", &cidr, "dev", veth]),
            )?;
            run_checked(self.ip().args(["-n", namespace, "link", "set", veth, "up"]))?;
        }
        // The origin: reachable from the client namespace only through the tunnel.
        run_checked(self.ip().args([
            "-n",
            &self.server_ns,
            "addr",
            "add",
            &format!("{ORIGIN_ADDR}/32"),
            "dev",
            "lo",
        ]))?;
        Ok(())
    }

    fn write_files(&mut self) -> Result<(), HarnessError> {
        let dir = self.dir.clone();
        write_file(&dir.join("httpd.py"), HTTPD_PY.as_bytes(), 0o644)?;
        write_file(
            &dir.join("server.conf"),
            server_conf_text(&self.options).as_bytes(),
            0o644,
        )?;
        write_file(&dir.join("ca.crt"), CA_CERT.as_bytes(), 0o644)?;
        write_file(&dir.join("server.crt"), SERVER_CERT.as_bytes(), 0o644)?;
        give_to_nobody(&write_file(
            &dir.join("server.key"),
            SERVER_KEY.as_bytes(),
            0o600,
        )?)?;
        let key = dir.join("tls-crypt.key");
        run_checked(
            Command::new(&self.programs.openvpn)
                .args(["--genkey", "secret"])
                .arg(&key),
        )?;
        give_to_nobody(&key)?;
        self.tls_crypt_key =
            fs::read_to_string(&key).map_err(io_error(format!("reading {}", key.display())))?;
        if self.options.auth == ServerAuth::StaticKey {
            let key = dir.join("static.key");
            run_checked(
                Command::new(&self.programs.openvpn)
                    .args(["--genkey", "secret"])
                    .arg(&key),
            )?;
            give_to_nobody(&key)?;
            self.static_key =
                fs::read_to_string(&key).map_err(io_error(format!("reading {}", key.display())))?;
        }
        let users =
            format!("# erebus serve harness: username password\n{AUTH_USERNAME} {AUTH_PASSWORD}\n");
        give_to_nobody(&write_file(
            &dir.join("users.txt"),
            users.as_bytes(),
            0o600,
        )?)?;
        // Credentials files for the clients (the stock one as root, erebus as nobody).
        let pair = |password: &str| format!("{AUTH_USERNAME}\n{password}\n");
        write_file(
            &dir.join("credentials.txt"),
            pair(AUTH_PASSWORD).as_bytes(),
            0o644,
        )?;
        write_file(
            &dir.join("wrong-credentials.txt"),
            pair(WRONG_AUTH_PASSWORD).as_bytes(),
            0o644,
        )?;
        Ok(())
    }

    fn start_httpd(&mut self, port: u16, timeout: Duration) -> Result<(), HarnessError> {
        let mut command = root_command_in(
            &self.programs.ip,
            &self.programs.setpriv,
            &self.server_ns,
            &self.programs.python3,
            &self.dir,
        );
        command
            .arg(self.dir.join("httpd.py"))
            .args(["--bind", &ORIGIN_ADDR.to_string()])
            .args(["--port", &port.to_string()]);
        let log = self.dir.join(format!("httpd-{port}.log"));
        let what = format!("the HTTP server on {ORIGIN_ADDR}:{port}");
        let mut process = spawn_tracked(&what, command, &log, &self.programs.kill)?;
        let ready = format!("httpd: listening on {ORIGIN_ADDR}:{port}");
        let outcome = poll_until(timeout, || {
            if let Some(status) = process.exit_status() {
                return Err(HarnessError::Exited {
                    what: what.clone(),
                    status: status.to_string(),
                    detail: file_tail(&log, LOG_TAIL_LINES),
                });
            }
            Ok(file_contains(&log, &ready).then_some(()))
        });
        // Kept even if it failed: `Drop` stops it.
        self.helpers.push(process);
        outcome?.ok_or_else(|| HarnessError::NotReady {
            what: format!("{what} (`{ready}` in {})", log.display()),
            waited: timeout,
            detail: file_tail(&log, LOG_TAIL_LINES),
        })
    }

    fn start_udp_echo(&mut self, timeout: Duration) -> Result<(), HarnessError> {
        let mut command = root_command_in(
            &self.programs.ip,
            &self.programs.setpriv,
            &self.server_ns,
            &self.programs.python3,
            &self.dir,
        );
        command
            .args(["-c", UDP_ECHO_PY, &ORIGIN_ADDR.to_string()])
            .args([ORIGIN_UDP_PORT, REFUSED_ORIGIN_UDP_PORT].map(|port| port.to_string()));
        let log = self.udp_echo_log();
        let what = format!("the UDP echo server on {ORIGIN_ADDR}");
        let mut process = spawn_tracked(&what, command, &log, &self.programs.kill)?;
        let ready = format!("udpecho: listening on {ORIGIN_ADDR}:{REFUSED_ORIGIN_UDP_PORT}");
        let outcome = poll_until(timeout, || {
            if let Some(status) = process.exit_status() {
                return Err(HarnessError::Exited {
                    what: what.clone(),
                    status: status.to_string(),
                    detail: file_tail(&log, LOG_TAIL_LINES),
                });
            }
            Ok(file_contains(&log, &ready).then_some(()))
        });
        // Kept even if it failed: `Drop` stops it.
        self.helpers.push(process);
        outcome?.ok_or_else(|| HarnessError::NotReady {
            what: format!("{what} (`{ready}` in {})", log.display()),
            waited: timeout,
            detail: file_tail(&log, LOG_TAIL_LINES),
        })
    }

    fn start_serve(&self, erebus: &Path) -> Result<(), HarnessError> {
        let erebus = erebus.to_string_lossy().into_owned();
        let config = self.dir.join("server.conf").to_string_lossy().into_owned();
        let users = self.dir.join("users.txt").to_string_lossy().into_owned();
        let mut argv = vec![
            erebus.as_str(),
            "serve",
            "--config",
            &config,
            "--allow",
            ALLOW_RULE,
        ];
        if self.options.udp_echo {
            argv.extend_from_slice(&["--allow", UDP_ALLOW_RULE]);
        }
        if self.options.auth == ServerAuth::UsersFile {
            argv.extend_from_slice(&["--users", &users]);
        }
        let command = client_command(
            &self.programs.ip,
            &self.programs.setpriv,
            &self.server_ns,
            &self.dir,
            RunAs::Nobody,
            &argv,
        );
        let what = format!("erebus serve in {}", self.server_ns);
        let mut process = spawn_tracked(&what, command, &self.serve_log(), &self.programs.kill)?;
        let log = self.serve_log();
        let outcome = poll_until(self.options.startup_timeout, || {
            if let Some(status) = process.exit_status() {
                return Err(HarnessError::Exited {
                    what: what.clone(),
                    status: status.to_string(),
                    detail: file_tail(&log, LOG_TAIL_LINES),
                });
            }
            Ok(file_contains(&log, SERVE_READY).then_some(()))
        });
        // Kept even if it failed: `Drop` stops it.
        *self.serve.lock().unwrap_or_else(PoisonError::into_inner) = Some(process);
        outcome?.ok_or_else(|| HarnessError::NotReady {
            what: format!("{what} (`{SERVE_READY}` in {})", log.display()),
            waited: self.options.startup_timeout,
            detail: file_tail(&log, LOG_TAIL_LINES),
        })
    }

    // --- the server ---------------------------------------------------------------------------

    /// The options the harness was started with.
    pub fn options(&self) -> &ServeOptions {
        &self.options
    }

    /// The PID of erebus serve (`None` once stopped).
    pub fn serve_pid(&self) -> Option<u32> {
        self.serve
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(TrackedProcess::pid)
    }

    /// Whether erebus serve is still running (neither stopped nor exited by itself).
    pub fn serve_running(&self) -> bool {
        self.serve
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
            .is_some_and(|process| process.exit_status().is_none())
    }

    /// Stops erebus serve with `SIGTERM` (what Ctrl-C does), gives it up to 5 s, then kills
    /// it. Returns its exit status, `None` if it was already stopped or could not be reaped.
    pub fn stop_serve(&self) -> Option<ExitStatus> {
        let process = self
            .serve
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        process.and_then(|mut process| process.stop(SERVE_STOP_GRACE))
    }

    /// erebus serve's stdout and stderr.
    pub fn serve_log(&self) -> PathBuf {
        self.dir.join("serve.log")
    }

    /// erebus serve's output so far, as text.
    pub fn serve_log_text(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.serve_log()).unwrap_or_default()).into_owned()
    }

    /// The last `lines` lines of erebus serve's output.
    pub fn serve_log_tail(&self, lines: usize) -> String {
        file_tail(&self.serve_log(), lines)
    }

    /// Waits up to `timeout` for a line of erebus serve's output that contains every one of
    /// `needles`, and returns it.
    pub fn wait_for_serve_line(&self, needles: &[&str], timeout: Duration) -> Option<String> {
        let found = poll_until(timeout, || {
            Ok(self
                .serve_log_text()
                .lines()
                .find(|line| needles.iter().all(|needle| line.contains(needle)))
                .map(str::to_owned))
        });
        found.ok().flatten()
    }

    /// The network devices of the server namespace (`ip -o link show`, one per line): erebus
    /// serve needs no tun device, so there are only `lo` and the veth.
    pub fn server_links(&self) -> Result<String, HarnessError> {
        run_checked(
            self.ip()
                .args(["-n", &self.server_ns, "-o", "link", "show"]),
        )
    }

    /// How the client namespace routes to `addr` (`ip route get`): through the stock client's
    /// tun device once the pushed route is in place, nowhere before.
    pub fn client_route_to(&self, addr: Ipv4Addr) -> Result<String, HarnessError> {
        run_checked(
            self.ip()
                .args(["-n", &self.client_ns, "route", "get", &addr.to_string()]),
        )
    }

    /// The HTTP origin's log of requests on `port` ([`ORIGIN_PORT`] or
    /// [`REFUSED_ORIGIN_PORT`]).
    pub fn httpd_log(&self, port: u16) -> PathBuf {
        self.dir.join(format!("httpd-{port}.log"))
    }

    /// The UDP echo server's log (with [`ServeOptions::udp_echo`]): a line per datagram.
    pub fn udp_echo_log(&self) -> PathBuf {
        self.dir.join("udpecho.log")
    }

    /// Runs `argv` as root in the server namespace (for probes of the origin from its own
    /// side) and waits up to `timeout` for it.
    pub fn run_in_server(
        &self,
        argv: &[&str],
        timeout: Duration,
    ) -> Result<CommandOutput, HarnessError> {
        let number = self.counter.fetch_add(1, Ordering::Relaxed);
        run_to_completion(
            client_command(
                &self.programs.ip,
                &self.programs.setpriv,
                &self.server_ns,
                &self.dir,
                RunAs::Root,
                argv,
            ),
            &self.dir,
            &format!("srv{number}"),
            &self.programs.kill,
            timeout,
        )
    }

    // --- addresses ----------------------------------------------------------------------------

    /// Where erebus serve listens, `10.201.0.1:11194`.
    pub fn server_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(SERVER_ADDR, SERVE_PORT)
    }

    /// `http://10.202.0.1:8080/`: the allowed origin.
    pub fn origin_url(&self) -> String {
        format!("http://{ORIGIN_ADDR}:{ORIGIN_PORT}/")
    }

    /// `http://10.202.0.1:8081/`: the origin's port the exit refuses.
    pub fn refused_origin_url(&self) -> String {
        format!("http://{ORIGIN_ADDR}:{REFUSED_ORIGIN_PORT}/")
    }

    /// Name of the client namespace.
    pub fn client_netns(&self) -> &str {
        &self.client_ns
    }

    /// Name of the server namespace.
    pub fn server_netns(&self) -> &str {
        &self.server_ns
    }

    /// The instance directory (configuration, keys, logs).
    pub fn instance_dir(&self) -> &Path {
        &self.dir
    }

    /// The `curl` program.
    pub fn curl(&self) -> &Path {
        &self.programs.curl
    }

    /// The `python3` program.
    pub fn python3(&self) -> &Path {
        &self.programs.python3
    }

    // --- clients ------------------------------------------------------------------------------

    /// A credentials file (`auth-user-pass FILE`) with [`AUTH_USERNAME`] and
    /// [`AUTH_PASSWORD`], readable by nobody.
    pub fn credentials_path(&self) -> PathBuf {
        self.dir.join("credentials.txt")
    }

    /// The same with [`WRONG_AUTH_PASSWORD`].
    pub fn wrong_credentials_path(&self) -> PathBuf {
        self.dir.join("wrong-credentials.txt")
    }

    /// The certificate and key of the untrusted client, made on first use: a P-256 CA and a
    /// `CN=client1` client certificate (EKU clientAuth) it issues.
    fn untrusted_client(&self) -> Result<(String, String), HarnessError> {
        let mut cached = self
            .untrusted
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(pair) = cached.as_ref() {
            return Ok(pair.clone());
        }
        let work = self.dir.join("untrusted-pki");
        fs::create_dir(&work).map_err(io_error(format!("creating {}", work.display())))?;
        let openssl = || {
            let mut command = Command::new(&self.programs.openssl);
            command.current_dir(&work);
            command
        };
        run_checked(openssl().args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "3650",
            "-subj",
            "/O=not the erebus test CA/CN=untrusted test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]))?;
        run_checked(openssl().args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "client.key",
            "-out",
            "client.csr",
            "-subj",
            &format!("/O=erebus test/CN={CLIENT_CERT_NAME}"),
        ]))?;
        write_file(
            &work.join("client.ext"),
            b"[ext]\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
              extendedKeyUsage=clientAuth\n",
            0o644,
        )?;
        run_checked(openssl().args([
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "client.crt",
            "-days",
            "3650",
            "-sha256",
            "-extfile",
            "client.ext",
            "-extensions",
            "ext",
        ]))?;
        let read = |name: &str| {
            let path = work.join(name);
            fs::read_to_string(&path).map_err(io_error(format!("reading {}", path.display())))
        };
        let pair = (read("client.crt")?, read("client.key")?);
        *cached = Some(pair.clone());
        Ok(pair)
    }

    /// The client profile for `identity` over the server's transport (see
    /// [`client_profile_text`]).
    pub fn client_profile(&self, identity: ClientIdentity) -> Result<String, HarnessError> {
        let transport = self.options.transport;
        Ok(match identity {
            ClientIdentity::Certificate => client_profile_text(
                transport,
                Some((CLIENT_CERT, CLIENT_KEY)),
                &self.tls_crypt_key,
            ),
            ClientIdentity::UntrustedCertificate => {
                let (cert, key) = self.untrusted_client()?;
                client_profile_text(transport, Some((&cert, &key)), &self.tls_crypt_key)
            }
            ClientIdentity::Password => client_profile_text(transport, None, &self.tls_crypt_key),
            ClientIdentity::StaticKey => static_key_profile_text(transport, &self.static_key),
        })
    }

    /// Writes the client profile for `identity` as `<name>` in the instance directory
    /// (readable by nobody: test keys only) and returns its path. `name` must be a plain file
    /// name ending in `.ovpn`.
    pub fn write_client_profile(
        &self,
        name: &str,
        identity: ClientIdentity,
    ) -> Result<PathBuf, HarnessError> {
        let plain = name.ends_with(".ovpn") && !name.contains('/') && !name.starts_with('.');
        if !plain {
            return Err(HarnessError::Io {
                context: format!("writing the client profile {name:?}"),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "not a plain file name ending in .ovpn",
                ),
            });
        }
        write_file(
            &self.dir.join(name),
            self.client_profile(identity)?.as_bytes(),
            0o644,
        )
    }

    /// A command for the client namespace as `run_as`, not yet started (see
    /// [`crate::netns::OpenVpnServer::client_command`]).
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
    /// status is not an error; exceeding `timeout` is (the command is killed).
    pub fn run_in_client(
        &self,
        run_as: RunAs,
        argv: &[&str],
        timeout: Duration,
    ) -> Result<CommandOutput, HarnessError> {
        let number = self.counter.fetch_add(1, Ordering::Relaxed);
        run_to_completion(
            self.client_command(run_as, argv),
            &self.dir,
            &format!("cmd{number}"),
            &self.programs.kill,
            timeout,
        )
    }

    /// Starts `argv` in the client namespace in the background; stdout and stderr go to
    /// `<instance dir>/<log_name>`. Dropping the handle stops it.
    pub fn spawn_in_client(
        &self,
        run_as: RunAs,
        argv: &[&str],
        log_name: &str,
    ) -> Result<NsProcess<'_>, HarnessError> {
        let command = self.client_command(run_as, argv);
        let what = crate::netns::command_line(&command);
        let process = spawn_tracked(
            &what,
            command,
            &self.dir.join(log_name),
            &self.programs.kill,
        )?;
        Ok(NsProcess::new(process))
    }

    /// Starts the stock OpenVPN client (kernel tun, as root) in the client namespace with the
    /// profile at `profile`, `--disable-dco --verb 4`, then `extra_args` (e.g.
    /// `--auth-user-pass FILE`). Its log is `<instance dir>/<log_name>`.
    pub fn start_stock_client(
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

    /// Waits up to `timeout` for `needle` in the output of `process` (a client started here).
    /// Fails early, with its output and erebus serve's, if it exits first.
    pub fn wait_for_client_log(
        &self,
        process: &mut NsProcess<'_>,
        needle: &str,
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        let log = process.log_path().to_owned();
        let detail = |process: &NsProcess<'_>| {
            format!(
                "--- {} ---\n{}\n--- erebus serve ---\n{}",
                log.display(),
                process.log_tail(LOG_TAIL_LINES),
                self.serve_log_tail(LOG_TAIL_LINES)
            )
        };
        let outcome = poll_until(timeout, || {
            if file_contains(&log, needle) {
                return Ok(Some(()));
            }
            if let Some(status) = process.exit_status() {
                return Err(HarnessError::Exited {
                    what: format!("the client logging to {}", log.display()),
                    status: status.to_string(),
                    detail: detail(process),
                });
            }
            Ok(None)
        })?;
        outcome.ok_or_else(|| HarnessError::NotReady {
            what: format!("`{needle}` in {}", log.display()),
            waited: timeout,
            detail: detail(process),
        })
    }
}

impl Drop for ServeHarness {
    fn drop(&mut self) {
        // Signal everything first so the processes wind down in parallel, then reap them.
        // erebus serve first: it tells its clients goodbye (no client can be left by now: an
        // `NsProcess` cannot outlive the harness).
        let mut serve = self
            .serve
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        for process in serve.iter_mut().chain(self.helpers.iter_mut().rev()) {
            process.terminate();
        }
        for process in serve.iter_mut().chain(self.helpers.iter_mut().rev()) {
            let grace = if process.what.starts_with("erebus serve") {
                SERVE_STOP_GRACE
            } else {
                STOP_GRACE
            };
            if process.finish(grace).is_none() {
                eprintln!(
                    "serve harness: could not reap {} (pid {})",
                    process.what,
                    process.pid()
                );
            }
        }
        drop(serve);
        self.helpers.clear();
        for namespace in std::mem::take(&mut self.namespaces).iter().rev() {
            for problem in delete_namespace(&self.programs.ip, &self.programs.kill, namespace) {
                eprintln!("serve harness: {problem}");
            }
        }
        let keep = std::thread::panicking()
            || std::env::var("EREBUS_KEEP_HARNESS").is_ok_and(|value| value == "1");
        if keep {
            eprintln!("serve harness: logs kept in {}", self.dir.display());
        } else if let Err(error) = fs::remove_dir_all(&self.dir) {
            eprintln!(
                "serve harness: could not remove {}: {error}",
                self.dir.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_reads_this_harness_names_only() {
        assert_eq!(owner_pid("ebsv1234n0s"), Some(1234));
        assert_eq!(owner_pid("ebsv1234n17c"), Some(1234));
        assert_eq!(owner_pid("ebsv1234n17"), Some(1234));
        assert_eq!(owner_pid("ebsv1234n17pki"), None);
        assert_eq!(owner_pid("ebt1234n0s"), None);
        assert_eq!(owner_pid("ebsw1234n0s"), None);
    }

    #[test]
    fn server_conf_is_a_stock_server_conf_for_the_harness() {
        let udp = server_conf_text(&ServeOptions::new(Transport::Udp, ServerAuth::Certificate));
        for line in [
            "port 11194",
            "proto udp",
            "local 10.201.0.1",
            "server 10.203.0.0 255.255.255.0",
            "tls-crypt tls-crypt.key",
            "push \"route 10.202.0.0 255.255.255.0\"",
            "explicit-exit-notify 1",
        ] {
            assert!(udp.contains(&format!("\n{line}\n")), "{line}\n{udp}");
        }
        assert!(!udp.contains("verify-client-cert"));
        let tcp = server_conf_text(&ServeOptions::new(Transport::Tcp, ServerAuth::UsersFile));
        assert!(tcp.contains("\nproto tcp-server\n"));
        assert!(tcp.contains("\nverify-client-cert none\n"));
        assert!(!tcp.contains("explicit-exit-notify"));
    }

    #[test]
    fn static_key_configurations_are_point_to_point() {
        let udp = server_conf_text(&ServeOptions::new(Transport::Udp, ServerAuth::StaticKey));
        for line in [
            "port 11194",
            "proto udp",
            "ifconfig 10.203.0.1 10.203.0.2",
            "secret static.key 0",
            "cipher AES-256-CBC",
            "auth SHA256",
            "explicit-exit-notify 1",
        ] {
            assert!(udp.contains(&format!("\n{line}\n")), "{line}\n{udp}");
        }
        assert!(!udp.contains("server 10.203") && !udp.contains("push") && !udp.contains("ca "));
        let key =
            "-----BEGIN OpenVPN Static key V1-----\nab\n-----END OpenVPN Static key V1-----\n";
        let profile = static_key_profile_text(Transport::Udp, key);
        for line in [
            "remote 10.201.0.1 11194",
            "ifconfig 10.203.0.2 10.203.0.1",
            "route 10.202.0.0 255.255.255.0",
            "cipher AES-256-CBC",
            "key-direction 1",
        ] {
            assert!(
                profile.contains(&format!("\n{line}\n")),
                "{line}\n{profile}"
            );
        }
        assert!(profile.ends_with("-----END OpenVPN Static key V1-----\n</secret>\n"));
        assert!(!profile.contains("client\n") && !profile.contains("tls-crypt"));
        let tcp = server_conf_text(&ServeOptions::new(Transport::Tcp, ServerAuth::StaticKey));
        assert!(tcp.contains("\nproto tcp-server\n") && !tcp.contains("explicit-exit-notify"));
    }

    #[test]
    fn client_profiles_inline_everything() {
        let key =
            "-----BEGIN OpenVPN Static key V1-----\nab\n-----END OpenVPN Static key V1-----\n";
        let cert = client_profile_text(Transport::Udp, Some(("CERT", "KEY")), key);
        for line in [
            "client",
            "proto udp",
            "remote 10.201.0.1 11194",
            "remote-cert-tls server",
            "verify-x509-name server.erebus.test name",
            "explicit-exit-notify 1",
        ] {
            assert!(cert.contains(&format!("\n{line}\n")), "{line}\n{cert}");
        }
        assert!(cert.contains("\n<cert>\nCERT\n</cert>\n<key>\nKEY\n</key>\n"));
        assert!(cert.ends_with("-----END OpenVPN Static key V1-----\n</tls-crypt>\n"));
        assert!(!cert.contains("auth-user-pass"));
        let password = client_profile_text(Transport::Tcp, None, key);
        assert!(password.contains("\nproto tcp-client\n"));
        assert!(password.contains("\nauth-user-pass\n"));
        assert!(!password.contains("<cert>") && !password.contains("explicit-exit-notify"));
    }

    #[test]
    fn account_ids_are_read_from_the_account_files() {
        assert_eq!(account_id("/etc/passwd", "root").unwrap(), 0);
        assert!(account_id("/etc/passwd", "no-such-user-here").is_err());
    }
}
