//! The IPsec interop harness: a real strongSwan 5.9 IKEv2 responder (charon-systemd with
//! user-space ESP), a DNS server and an HTTP server in network namespaces that each test
//! creates and deletes. The IPsec counterpart of [`crate::netns`] (the OpenVPN harness).
//!
//! ```text
//!  netns ebsw<pid>n<k>c (client side)            netns ebsw<pid>n<k>s (server side)
//!  erebus as nobody, or the stock strongSwan     charon-systemd, kernel-libipsec (TUN ipsec0)
//!  initiator (root, test-only)                   IKE on udp 10.99.0.1:500 and :4500
//!  vsw-cli 10.99.0.2/24 <========= veth =========> vsw-srv 10.99.0.1/24
//!  (ipsec0 with a 10.10.10.x virtual IP only     lo: 10.98.0.1/32    httpd.py :8080
//!   for the stock initiator)                     lo: 10.98.0.53/32   dnsmasq :53
//!                                                    *.erebus.test -> 10.98.0.1
//! ```
//!
//! [`StrongSwanServer::start`] builds a fresh pair of namespaces for every instance, so tests
//! run in parallel threads and processes without sharing anything. The veth pair is created
//! directly inside the two namespaces and IPv6 is off in both; the host namespace is never
//! touched. The client namespace has only its veth address: the inner network 10.98.0.0/24
//! is reachable only through an IPsec tunnel.
//!
//! The responder offers three connections with the same IKE proposals ([`IKE_PROPOSALS`],
//! [`ESP_PROPOSALS`]); it picks one in IKE_AUTH from the identities:
//!
//! | connection | client (IDi) | client authenticates with | server authenticates with |
//! |---|---|---|---|
//! | [`CONN_PSK`] | [`PSK_CLIENT_ID`] | [`PSK`] | [`PSK`] |
//! | [`CONN_EAP`] | any other ID | EAP-MSCHAPv2, [`EAP_USER`] / [`EAP_PASSWORD`] | its certificate |
//! | [`CONN_CERT`] | [`CERT_CLIENT_ID`] | [a certificate](StrongSwanServer::client_cert_pem) from the harness CA | its certificate |
//!
//! The server's identity (IDr) is [`SERVER_ID`]; its certificate is issued by
//! [the harness CA](StrongSwanServer::ca_cert_pem). Every connection hands out a virtual IP
//! from [`POOL`] and the DNS server [`DNS_ADDR`] (configuration payload), offers
//! [`INNER_NET`] as the responder's traffic selector, and forces UDP encapsulation of ESP
//! (`encap = yes`: charon fakes its NAT detection hash, and kernel-libipsec requires it
//! anyway), so ESP always travels in UDP on port 4500. No rekeys and no DPD happen unless
//! [`StrongSwanOptions`] asks for them; tests start rekeys with
//! [`StrongSwanServer::rekey_child`] and [`StrongSwanServer::rekey_ike`].
//!
//! Tests of a client that must survive losing its server stop charon alone
//! ([`StrongSwanServer::stop_charon`]) and start it again with the same configuration and
//! keys ([`StrongSwanServer::start_charon_again`]); dnsmasq and the HTTP server keep running.
//!
//! Dropping the server stops exactly the processes it started (by PID), then anything still
//! running inside its two namespaces, deletes the namespaces and removes its directory. When a
//! test process dies without unwinding, the next harness start in any process removes the
//! namespaces and directories left behind (their names carry the dead process's PID).
//!
//! Everything here needs root, `/dev/net/tun`, `ip netns` and the programs and strongSwan
//! plugins listed by [`require_strongswan`]. Interop tests start with
//! [`should_run_interop`], which never lets a test pass silently when the machine cannot run
//! it. As in [`crate::netns`], the processes started as root are bound to the thread that
//! started them (`SIGKILL` when it ends): keep each [`StrongSwanServer`] inside the test that
//! made it.
//!
//! The PKI (a CA, the server certificate, a client certificate and an unrelated second CA;
//! certificates valid 2020-2049 whatever the clock says) is made with `openssl` once per test
//! process and kept in memory. The configuration templates are in
//! `testvectors/harness/strongswan/`, compiled in.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, Once, PoisonError};
use std::time::{Duration, Instant};

pub use crate::netns::{
    CERT_NOT_AFTER, CERT_NOT_BEFORE, CommandOutput, DNS_DOMAIN, DNS_NAME, DNS_PORT, HTTP_MARKER,
    HTTP_PORT, HarnessError, NsProcess, RunAs, ServerStop,
};
use crate::netns::{
    LOG_TAIL_LINES, NETNS_LOCK, STOP_GRACE, TrackedProcess, client_command, delete_namespace,
    effective_uid, file_contains, file_count, file_tail, find_program, harness_name_owner,
    interop_gate, io_error, poll_until, root_command_in, run_checked, run_to_completion,
    spawn_tracked, sweep_dead_instances,
};

// ---------------------------------------------------------------------------------------------
// Addresses, names and secrets
// ---------------------------------------------------------------------------------------------

/// Outer (veth) address of the server namespace, where charon listens for IKE.
pub const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// Outer (veth) address of the client namespace.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
/// Prefix length of the veth network.
pub const OUTER_PREFIX_LEN: u8 = 24;
/// IKE port (IKE_SA_INIT may start here, without the non-ESP marker).
pub const IKE_PORT: u16 = 500;
/// NAT-T port: IKE with the 4-byte non-ESP marker, and ESP in UDP.
pub const NAT_T_PORT: u16 = 4500;
/// The inner network the responder offers as its traffic selector (`local_ts`).
pub const INNER_NET: &str = "10.98.0.0/24";
/// Address of the HTTP server (on `lo` of the server namespace, inside [`INNER_NET`]).
pub const HTTP_ADDR: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 1);
/// Address of the DNS server (on `lo` of the server namespace), handed out through CP.
pub const DNS_ADDR: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 53);
/// The pool `rw-pool` of virtual IPs the responder hands out.
pub const POOL: &str = "10.10.10.0/24";
/// The first address of [`POOL`]: what the first client gets.
pub const FIRST_VIRTUAL_IP: Ipv4Addr = Ipv4Addr::new(10, 10, 10, 1);
/// Name of the veth end in the server namespace.
pub const SERVER_VETH: &str = "vsw-srv";
/// Name of the veth end in the client namespace.
pub const CLIENT_VETH: &str = "vsw-cli";
/// The TUN device kernel-libipsec creates (in the server namespace, and in the client
/// namespace for the stock initiator).
pub const IPSEC_TUN: &str = "ipsec0";
/// Prefix of every namespace and directory this harness creates: `ebsw<pid>n<counter>`, then
/// `s` (server) or `c` (client) for the namespaces, `pki` for the PKI work directory.
pub const NAME_PREFIX: &str = "ebsw";

/// The IKE proposals of every responder connection.
pub const IKE_PROPOSALS: &str = "aes256gcm16-prfsha256-x25519, chacha20poly1305-prfsha256-x25519, \
                                 aes128gcm16-prfsha256-ecp256, aes256-sha256-modp2048";
/// The ESP proposals of every responder CHILD_SA (the last two with PFS).
pub const ESP_PROPOSALS: &str =
    "aes256gcm16, chacha20poly1305, aes128gcm16, aes256gcm16-x25519, chacha20poly1305-x25519";

/// The server's identity (IDr, `ID_FQDN`), also the server certificate's DNS name.
pub const SERVER_ID: &str = "vpn.example.test";
/// The PSK connection (remote id [`PSK_CLIENT_ID`], [`PSK`] both ways). Its CHILD_SA has the
/// same name.
pub const CONN_PSK: &str = "rw-psk";
/// The EAP-MSCHAPv2 connection (any other client identity; the server authenticates with its
/// certificate). Its CHILD_SA has the same name.
pub const CONN_EAP: &str = "rw-eap";
/// The certificate connection (remote id [`CERT_CLIENT_ID`]). Its CHILD_SA has the same
/// name.
pub const CONN_CERT: &str = "rw-cert";
/// The client identity of [`CONN_PSK`] (IDi, `ID_RFC822_ADDR`).
pub const PSK_CLIENT_ID: &str = "psk-client@example.test";
/// The pre-shared key of [`CONN_PSK`]. Test data only.
pub const PSK: &str = "test-psk-not-secret-0123456789";
/// A PSK the responder does not know: its AUTH payload fails (`AUTHENTICATION_FAILED`).
pub const WRONG_PSK: &str = "wrong-psk-not-the-harness-one-9876543210";
/// The EAP-MSCHAPv2 user of [`CONN_EAP`] (the EAP identity).
pub const EAP_USER: &str = "carol";
/// The password of [`EAP_USER`]. Test data only.
pub const EAP_PASSWORD: &str = "carol-password";
/// A password the responder refuses for [`EAP_USER`] (EAP failure).
pub const WRONG_EAP_PASSWORD: &str = "not-carols-password";
/// The client identity of [`CONN_CERT`] (IDi, `ID_FQDN`), also the client certificate's
/// common name and DNS name.
pub const CERT_CLIENT_ID: &str = "client.example.test";

/// The stock initiator's PSK connection ([`StrongSwanServer::start_stock_initiator`]): IKE
/// `aes256gcm16-prfsha256-x25519`, ESP `aes256gcm16`.
pub const STOCK_PSK: &str = "psk";
/// The stock initiator's PSK connection that sends IKE_SA_INIT straight to port 4500.
pub const STOCK_PSK_4500: &str = "psk-4500";
/// The stock initiator's EAP-MSCHAPv2 connection (IDi `carol@example.test`), IKE and ESP
/// ChaCha20-Poly1305.
pub const STOCK_EAP: &str = "eap";
/// The stock initiator's certificate connection, IKE `aes128gcm16-prfsha256-ecp256`, ESP
/// `aes128gcm16`.
pub const STOCK_CERT: &str = "cert";
/// Every connection of the stock initiator.
pub const STOCK_CONNECTIONS: [&str; 4] = [STOCK_PSK, STOCK_PSK_4500, STOCK_EAP, STOCK_CERT];

const RESPONDER_STRONGSWAN_CONF: &str =
    include_str!("../harness/strongswan/responder-strongswan.conf.in");
const RESPONDER_SWANCTL_CONF: &str =
    include_str!("../harness/strongswan/responder-swanctl.conf.in");
const INITIATOR_STRONGSWAN_CONF: &str =
    include_str!("../harness/strongswan/initiator-strongswan.conf.in");
const INITIATOR_SWANCTL_CONF: &str =
    include_str!("../harness/strongswan/initiator-swanctl.conf.in");
/// The HTTP server, shared with the OpenVPN harness.
const HTTPD_PY: &str = include_str!("../harness/httpd.py");
/// The DNS probe, shared with the OpenVPN harness.
const PROBE_PY: &str = include_str!("../harness/probe.py");

/// The strongSwan plugins both daemons load, with the Debian package of each.
const REQUIRED_PLUGINS: [(&str, &str); 16] = [
    ("random", "libstrongswan"),
    ("nonce", "libstrongswan"),
    ("openssl", "libstrongswan-standard-plugins"),
    ("kdf", "libstrongswan"),
    ("pem", "libstrongswan"),
    ("pkcs1", "libstrongswan"),
    ("pkcs8", "libstrongswan"),
    ("x509", "libstrongswan"),
    ("pubkey", "libstrongswan"),
    ("constraints", "libstrongswan"),
    ("kernel-libipsec", "libcharon-extra-plugins"),
    ("kernel-netlink", "libstrongswan"),
    ("socket-default", "strongswan-libcharon"),
    ("vici", "strongswan-swanctl"),
    ("eap-identity", "libcharon-extra-plugins"),
    ("eap-mschapv2", "libcharon-extauth-plugins"),
];
/// Where distributions put strongSwan's plugins.
const PLUGIN_DIRS: [&str; 5] = [
    "/usr/lib/ipsec/plugins",
    "/usr/lib64/ipsec/plugins",
    "/usr/libexec/ipsec/plugins",
    "/usr/lib/x86_64-linux-gnu/ipsec/plugins",
    "/usr/lib/strongswan/plugins",
];
/// Every credential subdirectory `swanctl --load-all` looks into (it complains about each
/// missing one).
const SWANCTL_SUBDIRS: [&str; 13] = [
    "x509", "x509ca", "x509ocsp", "x509aa", "x509ac", "x509crl", "pubkey", "private", "rsa",
    "ecdsa", "bliss", "pkcs8", "pkcs12",
];

/// How long charon gets after `SIGTERM` before `SIGKILL` (it sends DELETE for its IKE_SAs
/// first, without waiting for answers).
const CHARON_TERMINATE_GRACE: Duration = Duration::from_secs(5);
/// How long [`StrongSwanServer::stop_charon`] waits for `ipsec0` to go once charon exited.
const TUN_GONE_TIMEOUT: Duration = Duration::from_secs(5);
/// The least time between a configured rekey and the hard expiry of an SA that was not
/// rekeyed (strongSwan's default margin, 10 %, is too short for rekey times of a few seconds).
pub const HARD_LIMIT_MIN_MARGIN_SECS: u32 = 10;
/// Bound for one swanctl command.
const SWANCTL_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound for a rekey or a DELETE started by [`StrongSwanServer`] to complete.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

/// The key type of the server certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ServerKeyType {
    /// ECDSA P-256 (AUTH method 14 with ecdsa-with-SHA256).
    #[default]
    EcdsaP256,
    /// RSA 3072 (sha256WithRSAEncryption). The certificate makes the EAP IKE_AUTH response
    /// larger than strongSwan's fragment size (1280), so a client that announces
    /// IKEV2_FRAGMENTATION_SUPPORTED gets it in several SKF fragments.
    Rsa3072,
    /// Ed25519 (RFC 8420).
    Ed25519,
}

impl ServerKeyType {
    fn name(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::Rsa3072 => "rsa3072",
            Self::Ed25519 => "ed25519",
        }
    }

    fn genpkey_args(self) -> &'static [&'static str] {
        match self {
            Self::EcdsaP256 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            Self::Rsa3072 => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"],
            Self::Ed25519 => &["-algorithm", "ED25519"],
        }
    }
}

/// What the responder is configured for. `Default` is what most tests want: no DPD, no
/// automatic rekeys, strongSwan's retransmission defaults, an ECDSA server certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StrongSwanOptions {
    /// `dpd_delay` in seconds: the responder sends an empty INFORMATIONAL after this much
    /// idle time. 0 = no DPD.
    pub dpd_delay_secs: u32,
    /// The IKE_SA `rekey_time` in seconds (the responder rekeys the IKE_SA itself, exactly
    /// then: `rand_time = 0`). 0 = never. An IKE_SA whose rekey fails is closed 10 % later,
    /// at least [`HARD_LIMIT_MIN_MARGIN_SECS`] later (`over_time`).
    pub ike_rekey_secs: u32,
    /// The CHILD_SA `rekey_time` in seconds (exactly, as for the IKE_SA). 0 = never. A
    /// CHILD_SA whose rekey fails expires 10 %, at least [`HARD_LIMIT_MIN_MARGIN_SECS`], later
    /// (`life_time`).
    pub child_rekey_secs: u32,
    /// `retransmit_tries`: how often the responder retransmits a request of its own (rekey,
    /// DPD, DELETE) before it gives the IKE_SA up.
    pub retransmit_tries: u32,
    /// `retransmit_timeout`: the first retransmission's timeout (then times 1.8 each time).
    pub retransmit_timeout: Duration,
    /// The key type of the server certificate.
    pub server_key: ServerKeyType,
    /// Bound for charon, dnsmasq and the HTTP server to come up.
    pub startup_timeout: Duration,
}

impl Default for StrongSwanOptions {
    fn default() -> Self {
        Self {
            dpd_delay_secs: 0,
            ike_rekey_secs: 0,
            child_rekey_secs: 0,
            retransmit_tries: 3,
            retransmit_timeout: Duration::from_secs(4),
            server_key: ServerKeyType::EcdsaP256,
            startup_timeout: crate::netns::DEFAULT_STARTUP_TIMEOUT,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requirements and the interop gate
// ---------------------------------------------------------------------------------------------

/// Absolute paths of the programs the harness runs.
#[derive(Debug)]
struct Programs {
    ip: PathBuf,
    setpriv: PathBuf,
    dnsmasq: PathBuf,
    python3: PathBuf,
    sysctl: PathBuf,
    kill: PathBuf,
    openssl: PathBuf,
    charon: PathBuf,
    swanctl: PathBuf,
    /// Optional: only [`StrongSwanServer::start_capture`] needs it.
    tcpdump: Option<PathBuf>,
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
        dnsmasq: need("dnsmasq", "dnsmasq-base"),
        python3: need("python3", "python3"),
        sysctl: need("sysctl", "procps"),
        kill: need("kill", "procps"),
        openssl: need("openssl", "openssl"),
        charon: need("charon-systemd", "charon-systemd"),
        swanctl: need("swanctl", "strongswan-swanctl"),
        tcpdump: find_program("tcpdump"),
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

/// The strongSwan plugins of [`REQUIRED_PLUGINS`] that are not installed, one item per line.
fn missing_plugins() -> Vec<String> {
    let Some(dir) = PLUGIN_DIRS.iter().map(Path::new).find(|dir| dir.is_dir()) else {
        return vec![format!(
            "  - strongSwan's plugin directory (none of {}; Debian packages libstrongswan, \
             strongswan-charon)",
            PLUGIN_DIRS.join(", ")
        )];
    };
    REQUIRED_PLUGINS
        .iter()
        .filter(|(plugin, _)| !dir.join(format!("libstrongswan-{plugin}.so")).is_file())
        .map(|(plugin, package)| {
            format!(
                "  - strongSwan plugin `{plugin}` not in {} (Debian package {package})",
                dir.display()
            )
        })
        .collect()
}

/// Checks that this machine can run the strongSwan harness: root, `/dev/net/tun` (for
/// kernel-libipsec), working `ip netns`, the programs it starts (`charon-systemd`, `swanctl`,
/// `dnsmasq`, `python3`, `openssl`, `setpriv`, `sysctl`, `kill`) and the strongSwan plugins
/// it loads (among them `kernel-libipsec`, `eap-mschapv2`, `openssl`). The error lists
/// everything that is missing, one item per line.
pub fn require_strongswan() -> Result<(), String> {
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
            match Command::new(&found.ip)
                .args(["netns", "list"])
                .stdin(Stdio::null())
                .output()
            {
                Ok(out) if out.status.success() => {}
                Ok(out) => missing.push(format!(
                    "  - `ip netns list` failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(error) => missing.push(format!("  - `ip netns list` failed: {error}")),
            }
            // Never run charon-systemd to ask for its version: it has no such option and
            // would start a daemon in the host namespace.
        }
        Err(programs_missing) => missing.push(programs_missing),
    }
    missing.extend(missing_plugins());
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("\n"))
    }
}

/// The gate every strongSwan interop test passes first:
/// `if !strongswan::should_run_interop("name") { return; }`.
///
/// Returns `true` when [`require_strongswan`] is satisfied. Otherwise it prints a banner to
/// stderr saying what is missing and that the test did NOT run, and then, like
/// [`crate::netns::should_run_interop`]:
/// - under `CI=true` it panics (the test fails), whatever else is set;
/// - with `EREBUS_SKIP_INTEROP=1` it returns `false`, and the test returns early;
/// - otherwise it panics, so an interop test never passes without having run.
pub fn should_run_interop(test_name: &str) -> bool {
    interop_gate(
        test_name,
        require_strongswan(),
        "strongSwan harness",
        "# Run the interop tests as root on Linux with /dev/net/tun; .ci/run installs the\n\
         # packages (charon-systemd strongswan-swanctl strongswan-charon\n\
         # libcharon-extra-plugins libcharon-extauth-plugins libstrongswan-standard-plugins\n\
         # openssl dnsmasq-base iproute2 util-linux procps python3 curl tcpdump).",
    )
}

// ---------------------------------------------------------------------------------------------
// Names and the sweep of leftovers from dead processes
// ---------------------------------------------------------------------------------------------

static INSTANCE_COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// The PID embedded in a name of this harness (`ebsw<pid>n<counter>` plus `s`, `c` or
/// `pki`), if it is one.
fn owner_pid(name: &str) -> Option<u32> {
    harness_name_owner(NAME_PREFIX, &["", "s", "c", "pki"], name)
}

/// A fresh `ebsw<pid>n<counter>` name.
fn fresh_name() -> String {
    let counter = INSTANCE_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{NAME_PREFIX}{}n{counter}", std::process::id())
}

fn create_dir(path: &Path, mode: u32) -> Result<(), HarnessError> {
    fs::create_dir_all(path).map_err(io_error(format!("creating {}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_error(format!("chmod {}", path.display())))
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<PathBuf, HarnessError> {
    fs::write(path, contents).map_err(io_error(format!("writing {}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_error(format!("chmod {}", path.display())))?;
    Ok(path.to_owned())
}

// ---------------------------------------------------------------------------------------------
// The run-time test PKI
// ---------------------------------------------------------------------------------------------

/// Throw-away certificates and keys (PEM text), made once per test process by [`test_pki`].
/// Nothing here protects anything.
#[derive(Debug)]
struct TestPki {
    /// The CA that issued the server and client certificates (P-256).
    ca_cert: String,
    ca_key: String,
    /// `CN=client.example.test`, SAN DNS:client.example.test, EKU clientAuth, P-256.
    client_cert: String,
    client_key: String,
    /// A CA that issued nothing the responder uses or trusts (P-256).
    other_ca_cert: String,
    /// A certificate for [`CERT_CLIENT_ID`] issued by the other CA: the responder refuses it.
    other_client_cert: String,
    other_client_key: String,
}

/// A server certificate and its key (PEM).
#[derive(Debug)]
struct ServerCert {
    cert: String,
    key: String,
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
         [ ext_server ]\n\
         basicConstraints = CA:FALSE\n\
         keyUsage = critical, digitalSignature, keyEncipherment\n\
         # serverAuth + ikeIntermediate: what Windows and macOS clients want to see\n\
         extendedKeyUsage = serverAuth, 1.3.6.1.5.5.8.2.2\n\
         subjectKeyIdentifier = hash\n\
         authorityKeyIdentifier = keyid, issuer\n\
         subjectAltName = DNS:{SERVER_ID}, IP:{SERVER_ADDR}\n\
         [ ext_client ]\n\
         basicConstraints = CA:FALSE\n\
         keyUsage = critical, digitalSignature, keyEncipherment\n\
         extendedKeyUsage = clientAuth\n\
         subjectKeyIdentifier = hash\n\
         authorityKeyIdentifier = keyid, issuer\n\
         subjectAltName = DNS:{CERT_CLIENT_ID}\n",
        dir = dir.display()
    )
}

/// Runs `work` in a fresh private work directory (`ebsw<pid>n<k>pki`), removed afterwards
/// (the sweep removes it if this process dies in between).
fn in_pki_dir<T>(
    work: impl FnOnce(&Path, &dyn Fn() -> Command) -> Result<T, HarnessError>,
) -> Result<T, HarnessError> {
    let programs = programs()?;
    let dir = std::env::temp_dir().join(format!("{}pki", fresh_name()));
    let _ = fs::remove_dir_all(&dir);
    create_dir(&dir, 0o700)?;
    let result = (|| {
        let config = dir.join("ca.cnf");
        write_file(&config, openssl_ca_config(&dir).as_bytes(), 0o600)?;
        write_file(&dir.join("index.txt"), b"", 0o600)?;
        write_file(&dir.join("serial"), b"1000\n", 0o600)?;
        let openssl = || {
            let mut command = Command::new(&programs.openssl);
            command
                .current_dir(&dir)
                .env("OPENSSL_CONF", &config)
                .stdin(Stdio::null());
            command
        };
        work(&dir, &openssl)
    })();
    let _ = fs::remove_dir_all(&dir);
    result
}

/// Makes `<name>.key` (with `genpkey_args`) and `<name>.crt` for `/CN=<subject>` with the
/// `extensions` section, issued by `<issuer>.crt`/`.key` or self-signed.
fn make_certificate(
    openssl: &dyn Fn() -> Command,
    dir: &Path,
    name: &str,
    genpkey_args: &[&str],
    subject: &str,
    extensions: &str,
    issuer: Option<&str>,
) -> Result<(), HarnessError> {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let crt = format!("{name}.crt");
    run_checked(
        openssl()
            .arg("genpkey")
            .args(genpkey_args)
            .args(["-out", &key]),
    )?;
    run_checked(openssl().args([
        "req",
        "-new",
        "-key",
        &key,
        "-subj",
        &format!("/CN={subject}"),
        "-out",
        &csr,
    ]))?;
    let mut command = openssl();
    command
        .args(["ca", "-batch", "-notext", "-config"])
        .arg(dir.join("ca.cnf"))
        .args(["-startdate", CERT_NOT_BEFORE, "-enddate", CERT_NOT_AFTER])
        .args(["-extensions", extensions]);
    match issuer {
        Some(ca) => command.args([
            "-cert",
            &format!("{ca}.crt"),
            "-keyfile",
            &format!("{ca}.key"),
        ]),
        None => command.args(["-selfsign", "-keyfile", &key]),
    };
    command.args(["-in", &csr, "-out", &crt]);
    run_checked(&mut command).map(drop)
}

fn read_text(dir: &Path, name: &str) -> Result<String, HarnessError> {
    let path = dir.join(name);
    fs::read_to_string(&path).map_err(io_error(format!("reading {}", path.display())))
}

const P256: &[&str] = &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];

/// The harness PKI, made on first use (a fraction of a second: P-256 keys only) and shared
/// by every instance of this process. Nothing of it stays on disk.
fn test_pki() -> Result<&'static TestPki, HarnessError> {
    static PKI: Mutex<Option<&'static TestPki>> = Mutex::new(None);
    // Held while generating, so concurrent first starts wait for one generation.
    let mut cached = PKI.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(pki) = *cached {
        return Ok(pki);
    }
    let pki = in_pki_dir(|dir, openssl| {
        make_certificate(
            openssl,
            dir,
            "ca",
            P256,
            "erebus strongSwan harness CA",
            "ext_ca",
            None,
        )?;
        make_certificate(
            openssl,
            dir,
            "client",
            P256,
            CERT_CLIENT_ID,
            "ext_client",
            Some("ca"),
        )?;
        make_certificate(
            openssl,
            dir,
            "other-ca",
            P256,
            "erebus strongSwan harness other CA",
            "ext_ca",
            None,
        )?;
        make_certificate(
            openssl,
            dir,
            "other-client",
            P256,
            CERT_CLIENT_ID,
            "ext_client",
            Some("other-ca"),
        )?;
        run_checked(openssl().args(["verify", "-CAfile", "ca.crt", "client.crt"]))?;
        run_checked(openssl().args(["verify", "-CAfile", "other-ca.crt", "other-client.crt"]))?;
        Ok(TestPki {
            ca_cert: read_text(dir, "ca.crt")?,
            ca_key: read_text(dir, "ca.key")?,
            client_cert: read_text(dir, "client.crt")?,
            client_key: read_text(dir, "client.key")?,
            other_ca_cert: read_text(dir, "other-ca.crt")?,
            other_client_cert: read_text(dir, "other-client.crt")?,
            other_client_key: read_text(dir, "other-client.key")?,
        })
    })?;
    let pki: &'static TestPki = Box::leak(Box::new(pki));
    *cached = Some(pki);
    Ok(pki)
}

/// The server certificate with a `key_type` key, issued by the harness CA; made on first use
/// per key type and kept for the process.
fn server_cert(key_type: ServerKeyType) -> Result<&'static ServerCert, HarnessError> {
    static CERTS: Mutex<Option<HashMap<ServerKeyType, &'static ServerCert>>> = Mutex::new(None);
    let pki = test_pki()?;
    let mut cached = CERTS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(cert) = cached.as_ref().and_then(|certs| certs.get(&key_type)) {
        return Ok(cert);
    }
    let cert = in_pki_dir(|dir, openssl| {
        write_file(&dir.join("ca.crt"), pki.ca_cert.as_bytes(), 0o600)?;
        write_file(&dir.join("ca.key"), pki.ca_key.as_bytes(), 0o600)?;
        make_certificate(
            openssl,
            dir,
            "server",
            key_type.genpkey_args(),
            SERVER_ID,
            "ext_server",
            Some("ca"),
        )?;
        run_checked(openssl().args(["verify", "-CAfile", "ca.crt", "server.crt"]))?;
        Ok(ServerCert {
            cert: read_text(dir, "server.crt")?,
            key: read_text(dir, "server.key")?,
        })
    })
    .map_err(|error| match error {
        HarnessError::Command {
            command,
            status,
            output,
        } => HarnessError::Command {
            command,
            status,
            output: format!(
                "{output}\n(making the {} server certificate)",
                key_type.name()
            ),
        },
        other => other,
    })?;
    let cert: &'static ServerCert = Box::leak(Box::new(cert));
    cached
        .get_or_insert_with(HashMap::new)
        .insert(key_type, cert);
    Ok(cert)
}

// ---------------------------------------------------------------------------------------------
// SAs as swanctl lists them
// ---------------------------------------------------------------------------------------------

/// One IKE_SA of `swanctl --list-sas` ([`StrongSwanServer::ike_sas`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IkeSa {
    /// The connection name (`rw-psk`, ...).
    pub name: String,
    /// charon's unique ID of the SA; a rekeyed IKE_SA gets a new one.
    pub unique_id: u32,
    /// `ESTABLISHED`, `CONNECTING`, `REKEYING`, `DELETING`, ...
    pub state: String,
    /// The responder's port of the SA (4500 once NAT-T is in use, as always here).
    pub local_port: String,
    /// The remote (client) identity.
    pub remote_id: String,
    /// The client's outer address.
    pub remote_host: String,
    /// The client's port (its NAT-T socket's, once it floated).
    pub remote_port: String,
    /// SPI of the initiator (hex, as swanctl prints it).
    pub initiator_spi: String,
    /// SPI of the responder (hex).
    pub responder_spi: String,
    /// The virtual IPs handed to the client.
    pub remote_vips: Vec<String>,
    /// The negotiated encryption algorithm (`AES_GCM_16`, `CHACHA20_POLY1305`, ...).
    pub encryption: String,
    /// The negotiated key exchange (`CURVE_25519`, `ECP_256`, `MODP_2048`, ...).
    pub dh_group: String,
    /// Its CHILD_SAs.
    pub children: Vec<ChildSa>,
}

/// One CHILD_SA of an [`IkeSa`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildSa {
    /// The CHILD_SA's config name (the connection's name here).
    pub name: String,
    /// charon's unique ID of the CHILD_SA; a rekeyed CHILD_SA gets a new one.
    pub unique_id: u32,
    /// `INSTALLED`, `REKEYING`, `REKEYED`, `DELETING`, ...
    pub state: String,
    /// The encapsulation: `yes` for ESP in UDP.
    pub encap: String,
    /// Inbound SPI (hex).
    pub spi_in: String,
    /// Outbound SPI (hex).
    pub spi_out: String,
    /// The negotiated encryption algorithm.
    pub encryption: String,
    /// The PFS group of the last key exchange, if any.
    pub dh_group: Option<String>,
    /// Bytes received (decrypted) on this CHILD_SA.
    pub bytes_in: u64,
    /// Bytes sent on this CHILD_SA.
    pub bytes_out: u64,
    /// The local (responder) traffic selectors.
    pub local_ts: Vec<String>,
    /// The remote (client) traffic selectors.
    pub remote_ts: Vec<String>,
}

impl IkeSa {
    /// The CHILD_SAs in state `INSTALLED`. After a rekey strongSwan keeps the old CHILD_SA,
    /// in state `DELETED`, for 5 s more (`delete_rekeyed_delay`: its inbound SA still takes
    /// packets in flight); this leaves it out.
    pub fn installed_children(&self) -> Vec<&ChildSa> {
        self.children
            .iter()
            .filter(|child| child.state == "INSTALLED")
            .collect()
    }
}

/// A node of swanctl's `--pretty` output: a value, a list or a section.
#[derive(Debug, PartialEq, Eq)]
enum Vici {
    Value(String),
    List(Vec<String>),
    Section(Vec<(String, Self)>),
}

impl Vici {
    fn get(&self, key: &str) -> Option<&Self> {
        match self {
            Self::Section(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn text(&self, key: &str) -> String {
        match self.get(key) {
            Some(Self::Value(value)) => value.clone(),
            _ => String::new(),
        }
    }

    fn list(&self, key: &str) -> Vec<String> {
        match self.get(key) {
            Some(Self::List(items)) => items.clone(),
            Some(Self::Value(value)) => vec![value.clone()],
            _ => Vec::new(),
        }
    }

    fn entries(&self) -> &[(String, Self)] {
        match self {
            Self::Section(entries) => entries,
            _ => &[],
        }
    }
}

/// Parses swanctl's `--pretty` output: `name {` ... `}` sections, `key = value` lines and
/// `key = [` ... `]` lists, possibly several top-level sections (one per event).
fn parse_pretty(text: &str) -> Vec<(String, Vici)> {
    fn section<'a>(lines: &mut impl Iterator<Item = &'a str>) -> Vec<(String, Vici)> {
        let mut entries = Vec::new();
        while let Some(line) = lines.next() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if line == "}" {
                break;
            }
            if let Some(name) = line.strip_suffix(" {") {
                entries.push((name.trim().to_owned(), Vici::Section(section(lines))));
            } else if let Some(name) = line.strip_suffix(" = [") {
                let mut items = Vec::new();
                for item in lines.by_ref() {
                    let item = item.trim();
                    if item == "]" {
                        break;
                    }
                    items.push(item.to_owned());
                }
                entries.push((name.trim().to_owned(), Vici::List(items)));
            } else if let Some((key, value)) = line.split_once(" = ") {
                entries.push((key.trim().to_owned(), Vici::Value(value.trim().to_owned())));
            }
        }
        entries
    }
    section(&mut text.lines())
}

/// The IKE_SAs in the output of `swanctl --list-sas --pretty`.
fn parse_list_sas(text: &str) -> Vec<IkeSa> {
    let mut sas = Vec::new();
    for (event, body) in parse_pretty(text) {
        if event != "list-sa event" {
            continue;
        }
        for (name, ike) in body.entries() {
            let children = ike
                .get("child-sas")
                .map(Vici::entries)
                .unwrap_or_default()
                .iter()
                .map(|(_, child)| ChildSa {
                    name: child.text("name"),
                    unique_id: child.text("uniqueid").parse().unwrap_or(0),
                    state: child.text("state"),
                    encap: child.text("encap"),
                    spi_in: child.text("spi-in"),
                    spi_out: child.text("spi-out"),
                    encryption: child.text("encr-alg"),
                    dh_group: Some(child.text("dh-group")).filter(|group| !group.is_empty()),
                    bytes_in: child.text("bytes-in").parse().unwrap_or(0),
                    bytes_out: child.text("bytes-out").parse().unwrap_or(0),
                    local_ts: child.list("local-ts"),
                    remote_ts: child.list("remote-ts"),
                })
                .collect();
            sas.push(IkeSa {
                name: name.clone(),
                unique_id: ike.text("uniqueid").parse().unwrap_or(0),
                state: ike.text("state"),
                local_port: ike.text("local-port"),
                remote_id: ike.text("remote-id"),
                remote_host: ike.text("remote-host"),
                remote_port: ike.text("remote-port"),
                initiator_spi: ike.text("initiator-spi"),
                responder_spi: ike.text("responder-spi"),
                remote_vips: ike.list("remote-vips"),
                encryption: ike.text("encr-alg"),
                dh_group: ike.text("dh-group"),
                children,
            });
        }
    }
    sas
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// A charon daemon (the responder, or the stock initiator) and how often it was started.
#[derive(Debug, Default)]
struct CharonRun {
    /// The process of the last start; `None` before the first start and after a stop.
    process: Option<TrackedProcess>,
    /// How many times it was started.
    starts: u32,
}

/// A running strongSwan IKEv2 responder with its DNS and HTTP servers, in a namespace pair of
/// its own (see the [module documentation](self)).
///
/// Dropping it stops everything it started (by PID), then anything left in its two
/// namespaces, deletes the namespaces and removes the instance directory (kept, and its path
/// printed, when the thread is panicking or `EREBUS_KEEP_HARNESS=1` is set; the next harness
/// run removes it once this process is gone).
#[derive(Debug)]
pub struct StrongSwanServer {
    options: StrongSwanOptions,
    programs: &'static Programs,
    pki: &'static TestPki,
    /// The certificate and key the responder presents.
    server_cert: &'static ServerCert,
    server_ns: String,
    client_ns: String,
    dir: PathBuf,
    /// Namespaces created so far, deleted by `Drop`.
    namespaces: Vec<String>,
    /// The responder (behind a lock: tests stop and start it through `&self`).
    charon: Mutex<CharonRun>,
    /// dnsmasq and the HTTP server, in start order.
    helpers: Vec<TrackedProcess>,
    /// tcpdump on the server's veth, if [`start_capture`](Self::start_capture) started it.
    capture: Mutex<Option<TrackedProcess>>,
    /// Whether a stock initiator runs in the client namespace.
    initiator_running: AtomicBool,
    /// Numbers the output files of commands and the stock initiators' directories.
    counter: AtomicU32,
}

impl StrongSwanServer {
    /// Starts a responder: creates the namespaces and the veth pair, writes the configuration
    /// and the certificates, starts dnsmasq and the HTTP server on the inner addresses, then
    /// charon-systemd, loads the configuration with `swanctl --load-all`, and waits until
    /// all are ready. On error everything created so far is removed again.
    pub fn start(options: StrongSwanOptions) -> Result<Self, HarnessError> {
        require_strongswan().map_err(HarnessError::Unsupported)?;
        let programs = programs()?;
        SWEEP.call_once(|| {
            sweep_dead_instances(
                &programs.ip,
                &programs.kill,
                owner_pid,
                "strongswan harness sweep",
            );
        });
        let pki = test_pki()?;
        let server_cert = server_cert(options.server_key)?;

        let base = fresh_name();
        let dir = std::env::temp_dir().join(&base);
        // Leftover from an earlier process that had the same PID.
        let _ = fs::remove_dir_all(&dir);
        // World-readable: erebus runs as nobody and reads its files from client/.
        create_dir(&dir, 0o755)?;

        // From here on, `Drop` cleans up whatever exists if a step fails.
        let mut server = Self {
            options,
            programs,
            pki,
            server_cert,
            server_ns: format!("{base}s"),
            client_ns: format!("{base}c"),
            dir,
            namespaces: Vec::new(),
            charon: Mutex::new(CharonRun::default()),
            helpers: Vec::new(),
            capture: Mutex::new(None),
            initiator_running: AtomicBool::new(false),
            counter: AtomicU32::new(0),
        };
        server.create_network()?;
        server.write_files()?;
        let timeout = server.options.startup_timeout;
        server.start_dnsmasq(timeout)?;
        server.start_httpd(timeout)?;
        server.start_charon()?;
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
            // IPv4 only; done before the veth exists so it never gets an IPv6 address (and
            // neither veth nor ipsec0 send router solicitations or MLD reports).
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
        // The inner network: reachable from the client only through the tunnel.
        for addr in [HTTP_ADDR, DNS_ADDR] {
            run_checked(self.ip().args([
                "-n",
                &self.server_ns,
                "addr",
                "add",
                &format!("{addr}/32"),
                "dev",
                "lo",
            ]))?;
        }
        Ok(())
    }

    fn responder_dir(&self) -> PathBuf {
        self.dir.join("responder")
    }

    fn write_files(&self) -> Result<(), HarnessError> {
        let server_cert = self.server_cert;
        write_file(&self.dir.join("httpd.py"), HTTPD_PY.as_bytes(), 0o644)?;
        write_file(&self.dir.join("probe.py"), PROBE_PY.as_bytes(), 0o644)?;
        create_dir(&self.dir.join("client"), 0o755)?;
        let responder = self.responder_dir();
        create_dir(&responder, 0o755)?;
        let swanctl = responder.join("swanctl");
        create_swanctl_dir(&swanctl)?;
        write_file(
            &responder.join("strongswan.conf"),
            responder_strongswan_conf(&responder, &self.options).as_bytes(),
            0o644,
        )?;
        write_file(
            &swanctl.join("swanctl.conf"),
            responder_swanctl_conf(&self.options).as_bytes(),
            0o600,
        )?;
        write_file(
            &swanctl.join("x509/server.crt"),
            server_cert.cert.as_bytes(),
            0o644,
        )?;
        write_file(
            &swanctl.join("x509ca/ca.crt"),
            self.pki.ca_cert.as_bytes(),
            0o644,
        )?;
        write_file(
            &swanctl.join("private/server.key"),
            server_cert.key.as_bytes(),
            0o600,
        )?;
        // Kept for reference (and decode tests): the certificate the server presents.
        write_file(
            &self.dir.join("server.crt"),
            server_cert.cert.as_bytes(),
            0o644,
        )?;
        write_file(&self.dir.join("ca.crt"), self.pki.ca_cert.as_bytes(), 0o644)?;
        Ok(())
    }

    fn next_number(&self) -> u32 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    fn root_command_in(&self, namespace: &str, program: &Path) -> Command {
        root_command_in(
            &self.programs.ip,
            &self.programs.setpriv,
            namespace,
            program,
            &self.dir,
        )
    }

    /// swanctl against the daemon whose files are in `run` (its `strongswan.conf`,
    /// `swanctl/` and `charon.vici`), inside `namespace`. swanctl's options belong to the
    /// command, so the command (`args[0]`) comes first, then `--uri`, then the rest.
    fn swanctl_in(
        &self,
        namespace: &str,
        run: &Path,
        args: &[&str],
        timeout: Duration,
    ) -> Result<CommandOutput, HarnessError> {
        let mut command = self.root_command_in(namespace, &self.programs.swanctl);
        command
            .env("STRONGSWAN_CONF", run.join("strongswan.conf"))
            .env("SWANCTL_DIR", run.join("swanctl"));
        if let Some((first, rest)) = args.split_first() {
            command
                .arg(first)
                .arg("--uri")
                .arg(format!("unix://{}", run.join("charon.vici").display()))
                .args(rest);
        }
        let number = self.next_number();
        run_to_completion(
            command,
            &self.dir,
            &format!("swanctl{number}"),
            &self.programs.kill,
            timeout,
        )
    }

    /// Starts charon-systemd in `namespace` with the configuration in `run`, waits until its
    /// vici socket answers, and loads the configuration (`swanctl --load-all`).
    fn spawn_charon(
        &self,
        what: &str,
        namespace: &str,
        run: &Path,
        timeout: Duration,
    ) -> Result<TrackedProcess, HarnessError> {
        // A socket left by a killed run.
        let _ = fs::remove_file(run.join("charon.vici"));
        let mut command = self.root_command_in(namespace, &self.programs.charon);
        command.env("STRONGSWAN_CONF", run.join("strongswan.conf"));
        let mut process =
            spawn_tracked(what, command, &run.join("stdout.log"), &self.programs.kill)?;
        let diagnostics = || {
            format!(
                "--- {run}/charon.log (tail) ---\n{}\n--- {run}/stdout.log ---\n{}",
                file_tail(&run.join("charon.log"), LOG_TAIL_LINES),
                file_tail(&run.join("stdout.log"), LOG_TAIL_LINES),
                run = run.display(),
            )
        };
        let up = poll_until(timeout, || {
            if let Some(status) = process.exit_status() {
                return Err(HarnessError::Exited {
                    what: what.to_owned(),
                    status: status.to_string(),
                    detail: diagnostics(),
                });
            }
            let stats = self.swanctl_in(namespace, run, &["--stats"], SWANCTL_TIMEOUT)?;
            Ok(stats.success().then_some(()))
        });
        match up {
            Ok(Some(())) => {}
            Ok(None) => {
                process.stop(STOP_GRACE);
                return Err(HarnessError::NotReady {
                    what: format!("{what} (its vici socket)"),
                    waited: timeout,
                    detail: diagnostics(),
                });
            }
            Err(error) => {
                process.stop(STOP_GRACE);
                return Err(error);
            }
        }
        let loaded = self.swanctl_in(namespace, run, &["--load-all"], SWANCTL_TIMEOUT);
        match loaded {
            Ok(out) if out.success() => {
                write_file(&run.join("swanctl-load.log"), &out.stdout, 0o644)?;
                Ok(process)
            }
            Ok(out) => {
                process.stop(STOP_GRACE);
                Err(HarnessError::Command {
                    command: format!("swanctl --load-all ({what})"),
                    status: out.status.to_string(),
                    output: format!(
                        "{}{}\n{}",
                        out.stdout_text(),
                        out.stderr_text(),
                        diagnostics()
                    ),
                })
            }
            Err(error) => {
                process.stop(STOP_GRACE);
                Err(error)
            }
        }
    }

    /// Starts the responder (first start and [`start_charon_again`](Self::start_charon_again)).
    /// Before a restart the previous run's logs are kept as `charon-run<N>.log`,
    /// `charon-keys-run<N>.log` and `stdout-run<N>.log`.
    fn start_charon(&self) -> Result<(), HarnessError> {
        let mut run = self.charon.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(process) = run.process.as_mut()
            && process.exit_status().is_none()
        {
            return Err(HarnessError::Io {
                context: format!("starting charon again in {}", self.server_ns),
                source: io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "it is still running (pid {}); stop it first with stop_charon",
                        process.pid()
                    ),
                ),
            });
        }
        if run.starts > 0 {
            let responder = self.responder_dir();
            for (name, kept) in [
                ("charon.log", "charon-run{}.log"),
                ("charon-keys.log", "charon-keys-run{}.log"),
                ("stdout.log", "stdout-run{}.log"),
            ] {
                let to = responder.join(kept.replace("{}", &run.starts.to_string()));
                match fs::rename(responder.join(name), &to) {
                    Ok(()) => {}
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(error) => {
                        return Err(HarnessError::Io {
                            context: format!("keeping {name} as {}", to.display()),
                            source: error,
                        });
                    }
                }
            }
        }
        run.starts += 1;
        let process = self.spawn_charon(
            "the strongSwan responder (charon-systemd)",
            &self.server_ns,
            &self.responder_dir(),
            self.options.startup_timeout,
        )?;
        run.process = Some(process);
        Ok(())
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
        let output = self.dir.join(output_name);
        let process = spawn_tracked(what, command, &output, &self.programs.kill)?;
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
            detail: diagnostics(),
        })
    }

    fn start_dnsmasq(&mut self, timeout: Duration) -> Result<(), HarnessError> {
        let mut command = self.root_command_in(&self.server_ns, &self.programs.dnsmasq);
        let log = self.dnsmasq_log();
        command.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            &format!("--listen-address={DNS_ADDR}"),
            &format!("--port={DNS_PORT}"),
            "--user=root",
            "--group=root",
            &format!("--address=/{DNS_DOMAIN}/{HTTP_ADDR}"),
            "--log-queries",
        ]);
        command.arg(format!("--log-facility={}", log.display()));
        command.arg(format!(
            "--pid-file={}",
            self.dir.join("dnsmasq.pid").display()
        ));
        // Startup errors go to stderr (dnsmasq.stderr), everything else to dnsmasq.log.
        self.start_helper(
            "dnsmasq",
            command,
            "dnsmasq.stderr",
            &log,
            "started, version",
            timeout,
        )
    }

    fn start_httpd(&mut self, timeout: Duration) -> Result<(), HarnessError> {
        let mut command = self.root_command_in(&self.server_ns, &self.programs.python3);
        command
            .arg(self.dir.join("httpd.py"))
            .args(["--bind", &HTTP_ADDR.to_string()])
            .args(["--port", &HTTP_PORT.to_string()]);
        let log = self.httpd_log();
        self.start_helper(
            "the HTTP server (httpd.py)",
            command,
            "httpd.log",
            &log,
            &format!("httpd: listening on {HTTP_ADDR}:{HTTP_PORT}"),
            timeout,
        )
    }

    /// Whether `device` exists in `namespace`.
    fn has_device(&self, namespace: &str, device: &str) -> bool {
        self.ip()
            .args(["-n", namespace, "link", "show", "dev", device])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    fn responder_diagnostics(&self) -> String {
        let responder = self.responder_dir();
        format!(
            "--- {} (tail) ---\n{}\n--- {} ---\n{}",
            responder.join("charon.log").display(),
            file_tail(&responder.join("charon.log"), LOG_TAIL_LINES),
            responder.join("stdout.log").display(),
            file_tail(&responder.join("stdout.log"), LOG_TAIL_LINES)
        )
    }

    // --- what tests need to know --------------------------------------------------------------

    /// The options this server was started with.
    pub fn options(&self) -> &StrongSwanOptions {
        &self.options
    }

    /// Name of the client namespace, where erebus (or the stock initiator) runs.
    pub fn client_netns(&self) -> &str {
        &self.client_ns
    }

    /// Name of the server namespace.
    pub fn server_netns(&self) -> &str {
        &self.server_ns
    }

    /// Where charon listens for IKE (UDP [`IKE_PORT`] and [`NAT_T_PORT`]): `10.99.0.1`,
    /// reachable from the client namespace only.
    pub fn server_addr(&self) -> Ipv4Addr {
        SERVER_ADDR
    }

    /// The client namespace's own (outer) address, `10.99.0.2`.
    pub fn client_addr(&self) -> Ipv4Addr {
        CLIENT_ADDR
    }

    /// `http://10.98.0.1:8080/` (through the tunnel only). `/bytes/N` serves the
    /// [pattern stream](crate::netns::PatternStream).
    pub fn http_url(&self) -> String {
        format!("http://{HTTP_ADDR}:{HTTP_PORT}/")
    }

    /// `http://web.erebus.test:8080/`, for tests of name resolution through the DNS server
    /// the tunnel hands out ([`dns_server`](Self::dns_server)), which answers every
    /// `*.erebus.test` name with [`HTTP_ADDR`].
    pub fn http_name_url(&self) -> String {
        format!("http://{DNS_NAME}:{HTTP_PORT}/")
    }

    /// The DNS server handed out through CP, `10.98.0.53` (port 53, through the tunnel only).
    pub fn dns_server(&self) -> Ipv4Addr {
        DNS_ADDR
    }

    /// The instance directory: `client/` (files for erebus, readable by nobody; see
    /// [`write_client_file`](Self::write_client_file)), `responder/` (charon's configuration,
    /// logs and vici socket), `ca.crt` and `server.crt`, the logs of dnsmasq and the HTTP
    /// server, the capture `outer.pcap`, and one `initiator<N>/` per stock initiator.
    /// Readable by everyone, writable by root (the server's private key is not readable).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `contents` to `dir()/client/<relative>`, readable by nobody (erebus runs as
    /// nobody), creating subdirectories (e.g. `"x509ca/ca.crt"`), and returns its path.
    /// `relative` must be a relative path without `.` or `..` components.
    pub fn write_client_file(
        &self,
        relative: &str,
        contents: &[u8],
    ) -> Result<PathBuf, HarnessError> {
        let client = self.dir.join("client");
        if !is_relative_client_path(relative) {
            return Err(HarnessError::Io {
                context: format!("writing {relative:?} into {}", client.display()),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a plain relative path below the client directory",
                ),
            });
        }
        let path = client.join(relative);
        let mut parent = client;
        if let Some(directories) = Path::new(relative).parent() {
            for component in directories.components() {
                parent.push(component);
                create_dir(&parent, 0o755)?;
            }
        }
        write_file(&path, contents, 0o644)
    }

    /// The harness CA certificate (PEM) that issued the server and client certificates: a
    /// client's trust anchor.
    pub fn ca_cert_pem(&self) -> Vec<u8> {
        self.pki.ca_cert.clone().into_bytes()
    }

    /// An unrelated CA certificate (PEM) that issued nothing the server uses: a client
    /// trusting only it must refuse the server.
    pub fn other_ca_cert_pem(&self) -> Vec<u8> {
        self.pki.other_ca_cert.clone().into_bytes()
    }

    /// The server certificate (PEM) the responder presents (ECDSA P-256 unless
    /// [`StrongSwanOptions::server_key`] says otherwise).
    pub fn server_cert_pem(&self) -> Vec<u8> {
        self.server_cert.cert.clone().into_bytes()
    }

    /// The client certificate (PEM) for [`CONN_CERT`]: `CN=client.example.test`, SAN
    /// DNS:client.example.test, EKU clientAuth, P-256, issued by the harness CA.
    pub fn client_cert_pem(&self) -> Vec<u8> {
        self.pki.client_cert.clone().into_bytes()
    }

    /// The private key (PEM, PKCS#8, P-256) of [`client_cert_pem`](Self::client_cert_pem).
    pub fn client_key_pem(&self) -> Vec<u8> {
        self.pki.client_key.clone().into_bytes()
    }

    /// A certificate (PEM) for [`CERT_CLIENT_ID`] issued by the
    /// [other CA](Self::other_ca_cert_pem): the responder refuses a client that
    /// authenticates with it.
    pub fn untrusted_client_cert_pem(&self) -> Vec<u8> {
        self.pki.other_client_cert.clone().into_bytes()
    }

    /// The private key (PEM, PKCS#8, P-256) of
    /// [`untrusted_client_cert_pem`](Self::untrusted_client_cert_pem).
    pub fn untrusted_client_key_pem(&self) -> Vec<u8> {
        self.pki.other_client_key.clone().into_bytes()
    }

    // --- running things in the client namespace ------------------------------------------------

    /// A command for the client namespace, not yet started: `ip netns exec <ns>` then, for
    /// [`RunAs::Nobody`], `setpriv --reuid=nobody --regid=nogroup --clear-groups --`. Proxy
    /// variables of the host are removed; the working directory is [`dir`](Self::dir).
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
    /// command is killed).
    pub fn run_in_client(
        &self,
        run_as: RunAs,
        argv: &[&str],
        timeout: Duration,
    ) -> Result<CommandOutput, HarnessError> {
        let number = self.next_number();
        run_to_completion(
            self.client_command(run_as, argv),
            &self.dir,
            &format!("cmd{number}"),
            &self.programs.kill,
            timeout,
        )
    }

    /// Starts `argv` in the client namespace in the background; stdout and stderr go to
    /// `<dir>/<log_name>`. The process is stopped when the returned handle is dropped.
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

    /// Looks `name` up (type A) at the tunnel DNS server ([`DNS_ADDR`]) from the client
    /// namespace and returns the addresses of the answer (empty when there is none, e.g.
    /// without a tunnel).
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
                &DNS_ADDR.to_string(),
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

    // --- controlling the responder -------------------------------------------------------------

    /// Runs swanctl against the responder (its vici socket, configuration and credentials),
    /// e.g. `["--list-sas"]` or `["--rekey", "--ike-id", "3"]`. The command comes first: the
    /// harness inserts `--uri` after it (swanctl's options belong to the command). A non-zero
    /// exit status is not an error (check [`CommandOutput::success`]).
    pub fn swanctl(&self, args: &[&str]) -> Result<CommandOutput, HarnessError> {
        self.swanctl_in(
            &self.server_ns,
            &self.responder_dir(),
            args,
            SWANCTL_TIMEOUT,
        )
    }

    /// Like [`swanctl`](Self::swanctl), failing on a non-zero exit status.
    fn swanctl_checked(&self, args: &[&str]) -> Result<CommandOutput, HarnessError> {
        let out = self.swanctl(args)?;
        if out.success() {
            Ok(out)
        } else {
            Err(HarnessError::Command {
                command: format!("swanctl {} (responder)", args.join(" ")),
                status: out.status.to_string(),
                output: format!(
                    "{}{}\n{}",
                    out.stdout_text(),
                    out.stderr_text(),
                    self.responder_diagnostics()
                ),
            })
        }
    }

    /// The responder's IKE_SAs and their CHILD_SAs (`swanctl --list-sas --pretty`, parsed).
    pub fn ike_sas(&self) -> Result<Vec<IkeSa>, HarnessError> {
        let out = self.swanctl_checked(&["--list-sas", "--pretty"])?;
        Ok(parse_list_sas(&out.stdout_text()))
    }

    /// `swanctl --list-sas` as text (or what went wrong), for assertion messages and logs.
    pub fn list_sas(&self) -> String {
        match self.swanctl(&["--list-sas"]) {
            Ok(out) => format!("{}{}", out.stdout_text(), out.stderr_text()),
            Err(error) => format!("(swanctl --list-sas failed: {error})"),
        }
    }

    /// The only IKE_SA, with exactly one installed CHILD_SA if `with_child`.
    fn single_ike_sa(&self, what: &str, with_child: bool) -> Result<IkeSa, HarnessError> {
        let sas = self.ike_sas()?;
        let established: Vec<&IkeSa> = sas.iter().filter(|sa| sa.state == "ESTABLISHED").collect();
        let problem = match established.as_slice() {
            [sa] if !with_child || sa.installed_children().len() == 1 => {
                return Ok((*sa).clone());
            }
            [sa] => format!(
                "the IKE_SA has {} installed CHILD_SAs, not one",
                sa.installed_children().len()
            ),
            [] => "no IKE_SA is established".to_owned(),
            more => format!("{} IKE_SAs are established, not one", more.len()),
        };
        Err(HarnessError::NotReady {
            what: format!("{what}: {problem}"),
            waited: Duration::ZERO,
            detail: self.list_sas(),
        })
    }

    /// Waits until `done` holds for the responder's SAs.
    fn wait_for_sas(
        &self,
        what: &str,
        mut done: impl FnMut(&[IkeSa]) -> bool,
    ) -> Result<(), HarnessError> {
        let outcome = poll_until(EXCHANGE_TIMEOUT, || {
            let sas = self.ike_sas()?;
            Ok(done(&sas).then_some(()))
        })?;
        outcome.ok_or_else(|| HarnessError::NotReady {
            what: what.to_owned(),
            waited: EXCHANGE_TIMEOUT,
            detail: format!("{}\n{}", self.list_sas(), self.responder_diagnostics()),
        })
    }

    /// Rekeys the one CHILD_SA (of the one IKE_SA) from the responder's side
    /// (`CREATE_CHILD_SA` with `N(REKEY_SA)`, then the DELETE of the old CHILD_SA) and waits
    /// until the new CHILD_SA is installed and the old one deleted (strongSwan lists it as
    /// `DELETED` for 5 s more, see [`IkeSa::installed_children`]). strongSwan offers the PFS
    /// proposals first in its own rekeys (with a KE payload), but accepts a proposal without
    /// PFS. Fails if there is not exactly one IKE_SA with one CHILD_SA, or if the rekey does
    /// not complete within 15 s.
    pub fn rekey_child(&self) -> Result<(), HarnessError> {
        let sa = self.single_ike_sa("rekeying the CHILD_SA", true)?;
        let old = sa.installed_children()[0].unique_id;
        self.swanctl_checked(&["--rekey", "--child-id", &old.to_string()])?;
        self.wait_for_sas(
            &format!("the responder's rekey of CHILD_SA #{old}"),
            |sas| {
                let children = || sas.iter().flat_map(|sa| &sa.children);
                children().all(|child| child.unique_id != old || child.state == "DELETED")
                    && children().any(|child| child.unique_id != old && child.state == "INSTALLED")
            },
        )
    }

    /// Rekeys the one IKE_SA from the responder's side (`CREATE_CHILD_SA` with SA, Ni, KE,
    /// then the DELETE of the old IKE_SA) and waits until the new IKE_SA is established with
    /// the CHILD_SAs moved over and the old one is gone. Afterwards the responder is the
    /// "original initiator" of the new IKE_SA. Fails if there is not exactly one IKE_SA, or if
    /// the rekey does not complete within 15 s.
    pub fn rekey_ike(&self) -> Result<(), HarnessError> {
        let sa = self.single_ike_sa("rekeying the IKE_SA", false)?;
        let old = sa.unique_id;
        let children = sa.installed_children().len();
        self.swanctl_checked(&["--rekey", "--ike-id", &old.to_string()])?;
        self.wait_for_sas(&format!("the responder's rekey of IKE_SA #{old}"), |sas| {
            sas.iter().all(|sa| sa.unique_id != old)
                && sas.iter().any(|sa| {
                    sa.state == "ESTABLISHED" && sa.installed_children().len() == children
                })
        })
    }

    /// Deletes the one IKE_SA from the responder's side (INFORMATIONAL with a DELETE payload)
    /// and waits until it is gone: the client answered, or the responder gave up after its
    /// retransmissions (`retransmit_tries`). Fails if there is not exactly one IKE_SA.
    pub fn terminate_ike(&self) -> Result<(), HarnessError> {
        let sa = self.single_ike_sa("terminating the IKE_SA", false)?;
        let id = sa.unique_id;
        // swanctl waits for the exchange; --timeout only detaches it from a silent client.
        self.swanctl(&[
            "--terminate",
            "--ike-id",
            &id.to_string(),
            "--timeout",
            "10",
        ])?;
        self.wait_for_sas(&format!("the responder's DELETE of IKE_SA #{id}"), |sas| {
            sas.iter().all(|sa| sa.unique_id != id)
        })
    }

    /// Deletes the one CHILD_SA from the responder's side (INFORMATIONAL with a DELETE
    /// payload for ESP); the IKE_SA stays. Waits until the CHILD_SA is gone.
    pub fn terminate_child(&self) -> Result<(), HarnessError> {
        let sa = self.single_ike_sa("terminating the CHILD_SA", true)?;
        let id = sa.installed_children()[0].unique_id;
        self.swanctl(&[
            "--terminate",
            "--child-id",
            &id.to_string(),
            "--timeout",
            "10",
        ])?;
        self.wait_for_sas(
            &format!("the responder's DELETE of CHILD_SA #{id}"),
            |sas| {
                sas.iter()
                    .flat_map(|sa| &sa.children)
                    .all(|child| child.unique_id != id)
            },
        )
    }

    /// Stops the responder's charon (signalled by PID; nothing else is touched), e.g. to test
    /// how a client handles losing its server. dnsmasq and the HTTP server keep running.
    ///
    /// [`ServerStop::Terminate`] sends `SIGTERM`: charon sends a DELETE for each IKE_SA
    /// (without waiting for answers) and exits; it gets 5 s, then `SIGKILL`.
    /// [`ServerStop::Kill`] sends `SIGKILL`: the server vanishes without a word. Returns once
    /// charon has exited and its TUN device `ipsec0` is gone. Stopping a stopped server does
    /// nothing.
    pub fn stop_charon(&self, how: ServerStop) -> Result<(), HarnessError> {
        let mut run = self.charon.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(mut process) = run.process.take() else {
            return Ok(());
        };
        let pid = process.pid();
        let grace = match how {
            ServerStop::Terminate => {
                process.terminate();
                CHARON_TERMINATE_GRACE
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
                "strongswan harness: charon (pid {pid}) ignored SIGTERM for {grace:?} and was \
                 killed"
            );
        }
        if status.is_none() {
            // `finish` killed it and could not reap it; keep it so `Drop` tries again.
            run.process = Some(process);
            return Err(HarnessError::StillThere {
                what: format!("the strongSwan responder (pid {pid})"),
                waited: grace,
                detail: self.responder_diagnostics(),
            });
        }
        drop(process);
        let gone = poll_until(TUN_GONE_TIMEOUT, || {
            Ok((!self.has_device(&self.server_ns, IPSEC_TUN)).then_some(()))
        })?;
        gone.ok_or_else(|| HarnessError::StillThere {
            what: format!(
                "{IPSEC_TUN} in {} after charon (pid {pid}) exited",
                self.server_ns
            ),
            waited: TUN_GONE_TIMEOUT,
            detail: self.responder_diagnostics(),
        })
    }

    /// Starts the responder's charon again after [`stop_charon`](Self::stop_charon), with the
    /// same configuration and keys, and loads the configuration again (`swanctl
    /// --load-all`). It knows no SAs: clients must connect anew. The previous run's logs are
    /// kept as `responder/charon-run<N>.log` and `responder/charon-keys-run<N>.log`;
    /// [`charon_log`](Self::charon_log) is the new run's. Fails if charon is still running.
    pub fn start_charon_again(&self) -> Result<(), HarnessError> {
        self.start_charon()
    }

    /// Whether the responder's charon is running (neither stopped nor exited by itself).
    pub fn charon_running(&self) -> bool {
        let mut run = self.charon.lock().unwrap_or_else(PoisonError::into_inner);
        run.process
            .as_mut()
            .is_some_and(|process| process.exit_status().is_none())
    }

    /// How many times charon was started: 1 after [`start`](Self::start), plus one per
    /// [`start_charon_again`](Self::start_charon_again).
    pub fn charon_starts(&self) -> u32 {
        self.charon
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .starts
    }

    /// The responder's log file of the current run (`responder/charon.log`).
    pub fn charon_log_path(&self) -> PathBuf {
        self.responder_dir().join("charon.log")
    }

    /// The responder's readable log of the current run: default level 1, ike/cfg/knl/net/
    /// esp/chd level 2 (`parsed IKE_AUTH request 1 [ IDi N(INIT_CONTACT) ... ]` lines show
    /// every message's payloads).
    pub fn charon_log(&self) -> String {
        fs::read(self.charon_log_path())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// How often `needle` occurs in the responder's log of the current run.
    pub fn charon_log_count(&self, needle: &str) -> usize {
        file_count(&self.charon_log_path(), needle)
    }

    /// The responder's key log of the current run (`responder/charon-keys.log`, ike/chd level
    /// 4): DH shared secrets, SKEYSEED, SK_*, AUTH octets and ESP keys of every SA. Test keys
    /// only; this is test-vector material.
    pub fn charon_keys_log(&self) -> String {
        fs::read(self.responder_dir().join("charon-keys.log"))
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The dnsmasq log (one line per query).
    pub fn dnsmasq_log(&self) -> PathBuf {
        self.dir.join("dnsmasq.log")
    }

    /// The HTTP server log (one line per request).
    pub fn httpd_log(&self) -> PathBuf {
        self.dir.join("httpd.log")
    }

    /// PIDs of the processes this server runs in its namespaces: charon (unless stopped),
    /// dnsmasq, the HTTP server and tcpdump (if capturing).
    pub fn pids(&self) -> Vec<u32> {
        let run = self.charon.lock().unwrap_or_else(PoisonError::into_inner);
        let capture = self.capture.lock().unwrap_or_else(PoisonError::into_inner);
        run.process
            .iter()
            .chain(&self.helpers)
            .chain(capture.iter())
            .map(TrackedProcess::pid)
            .collect()
    }

    // --- packet capture ----------------------------------------------------------------------

    /// Where [`start_capture`](Self::start_capture) writes: `dir()/outer.pcap`.
    pub fn capture_path(&self) -> PathBuf {
        self.dir.join("outer.pcap")
    }

    /// Starts tcpdump on the server's veth ([`SERVER_VETH`]): every IKE message and every
    /// ESP-in-UDP packet, unbuffered (`-U`), into [`capture_path`](Self::capture_path);
    /// waits until it listens. Returns the path. Fails when tcpdump is not installed or a
    /// capture runs already.
    pub fn start_capture(&self) -> Result<PathBuf, HarnessError> {
        let Some(tcpdump) = &self.programs.tcpdump else {
            return Err(HarnessError::Unsupported(
                "  - `tcpdump` not found (Debian package tcpdump)".into(),
            ));
        };
        let mut capture = self.capture.lock().unwrap_or_else(PoisonError::into_inner);
        if capture.is_some() {
            return Err(HarnessError::Io {
                context: "starting a capture".into(),
                source: io::Error::new(io::ErrorKind::AlreadyExists, "a capture is running"),
            });
        }
        let path = self.capture_path();
        let mut command = self.root_command_in(&self.server_ns, tcpdump);
        // -Z root: Debian's tcpdump would otherwise drop to user tcpdump and could not write
        // into the instance directory.
        command
            .args(["-Z", "root", "-i", SERVER_VETH, "-n", "-s", "0", "-U", "-w"])
            .arg(&path);
        let log = self.dir.join("tcpdump.log");
        let process = spawn_tracked("tcpdump", command, &log, &self.programs.kill)?;
        let process = capture.insert(process);
        let ready = poll_until(self.options.startup_timeout, || {
            if let Some(status) = process.exit_status() {
                return Err(HarnessError::Exited {
                    what: "tcpdump".into(),
                    status: status.to_string(),
                    detail: file_tail(&log, LOG_TAIL_LINES),
                });
            }
            Ok(file_contains(&log, "listening on").then_some(()))
        });
        match ready {
            Ok(Some(())) => Ok(path),
            Ok(None) => {
                capture.take();
                Err(HarnessError::NotReady {
                    what: "tcpdump (`listening on` in tcpdump.log)".into(),
                    waited: self.options.startup_timeout,
                    detail: file_tail(&log, LOG_TAIL_LINES),
                })
            }
            Err(error) => {
                capture.take();
                Err(error)
            }
        }
    }

    /// Stops the capture ([`start_capture`](Self::start_capture)) so that the pcap file is
    /// complete, and returns its path. Does nothing (but return the path) without a capture.
    pub fn stop_capture(&self) -> PathBuf {
        let process = self
            .capture
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut process) = process {
            // tcpdump flushes and closes the file on SIGTERM.
            process.stop(STOP_GRACE);
        }
        self.capture_path()
    }

    // --- the stock strongSwan initiator (self-tests) -------------------------------------------

    /// Starts a stock strongSwan initiator (charon-systemd with kernel-libipsec, as root) in
    /// the client namespace, with its own configuration under `dir()/initiator<N>/` (the
    /// connections of [`STOCK_CONNECTIONS`], random local ports), and connects with `conn`.
    /// It installs the virtual IP on its own `ipsec0` and routes [`INNER_NET`] there, so
    /// plain programs in the client namespace (curl) reach the inner network through the
    /// tunnel. Test-only: it proves the responder without erebus.
    ///
    /// Only one stock initiator can run at a time (they would share `ipsec0`); dropping the
    /// handle stops it.
    pub fn start_stock_initiator(&self, conn: &str) -> Result<StockInitiator<'_>, HarnessError> {
        if self.initiator_running.swap(true, Ordering::SeqCst) {
            return Err(HarnessError::Io {
                context: "starting a stock initiator".into(),
                source: io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "one runs already in the client namespace",
                ),
            });
        }
        let run = self.dir.join(format!("initiator{}", self.next_number()));
        // From here on the handle's Drop stops what was started and clears the flag.
        let mut initiator = StockInitiator {
            server: self,
            run,
            process: None,
        };
        initiator.write_files()?;
        initiator.process = Some(self.spawn_charon(
            "the stock strongSwan initiator (charon-systemd)",
            &self.client_ns,
            &initiator.run,
            self.options.startup_timeout,
        )?);
        initiator.initiate(conn)?;
        Ok(initiator)
    }
}

impl Drop for StrongSwanServer {
    fn drop(&mut self) {
        // Signal everything first so the processes wind down in parallel, then reap them.
        let mut charon = self
            .charon
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .process
            .take();
        for process in self.helpers.iter_mut().rev().chain(charon.as_mut()) {
            process.terminate();
        }
        for process in self.helpers.iter_mut().rev().chain(charon.as_mut()) {
            if process.finish(STOP_GRACE).is_none() {
                eprintln!(
                    "strongswan harness: could not reap {} (pid {})",
                    process.what,
                    process.pid()
                );
            }
        }
        self.helpers.clear();
        drop(charon);
        // The capture last, so that it has charon's DELETEs.
        if let Some(mut capture) = self
            .capture
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            capture.stop(STOP_GRACE);
        }
        for namespace in std::mem::take(&mut self.namespaces).iter().rev() {
            for problem in delete_namespace(&self.programs.ip, &self.programs.kill, namespace) {
                eprintln!("strongswan harness: {problem}");
            }
        }
        let keep = std::thread::panicking()
            || std::env::var("EREBUS_KEEP_HARNESS").is_ok_and(|value| value == "1");
        if keep {
            eprintln!("strongswan harness: logs kept in {}", self.dir.display());
        } else if let Err(error) = fs::remove_dir_all(&self.dir) {
            eprintln!(
                "strongswan harness: could not remove {}: {error}",
                self.dir.display()
            );
        }
    }
}

/// Whether `relative` is a relative path of plain names (no empty, `.` or `..` parts).
fn is_relative_client_path(relative: &str) -> bool {
    !relative.contains('\0')
        && relative
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

fn create_swanctl_dir(swanctl: &Path) -> Result<(), HarnessError> {
    create_dir(swanctl, 0o755)?;
    for sub in SWANCTL_SUBDIRS {
        let mode = if sub == "private" { 0o700 } else { 0o755 };
        create_dir(&swanctl.join(sub), mode)?;
    }
    Ok(())
}

/// Replaces every `@KEY@` of `template` with its value.
fn fill_template(template: &str, values: &[(&str, String)]) -> String {
    values
        .iter()
        .fold(template.to_owned(), |text, (key, value)| {
            text.replace(&format!("@{key}@"), value)
        })
}

/// The responder's strongswan.conf, its files in `run`.
fn responder_strongswan_conf(run: &Path, options: &StrongSwanOptions) -> String {
    fill_template(
        RESPONDER_STRONGSWAN_CONF,
        &[
            ("RUN", run.display().to_string()),
            ("RETRANSMIT_TRIES", options.retransmit_tries.to_string()),
            (
                "RETRANSMIT_TIMEOUT",
                format!("{:.3}", options.retransmit_timeout.as_secs_f64()),
            ),
        ],
    )
}

/// How long after `rekey_secs` an SA that was not rekeyed expires: 10 % of it, at least
/// [`HARD_LIMIT_MIN_MARGIN_SECS`]; 0 (no limit) without rekeys.
fn hard_limit_margin(rekey_secs: u32) -> u32 {
    if rekey_secs == 0 {
        0
    } else {
        (rekey_secs / 10).max(HARD_LIMIT_MIN_MARGIN_SECS)
    }
}

/// The responder's swanctl.conf.
fn responder_swanctl_conf(options: &StrongSwanOptions) -> String {
    fill_template(
        RESPONDER_SWANCTL_CONF,
        &[
            ("IKE_PROPOSALS", IKE_PROPOSALS.to_owned()),
            ("ESP_PROPOSALS", ESP_PROPOSALS.to_owned()),
            ("DPD_DELAY", options.dpd_delay_secs.to_string()),
            ("IKE_REKEY", options.ike_rekey_secs.to_string()),
            (
                "IKE_OVER",
                hard_limit_margin(options.ike_rekey_secs).to_string(),
            ),
            ("CHILD_REKEY", options.child_rekey_secs.to_string()),
            (
                "CHILD_LIFE",
                (options.child_rekey_secs + hard_limit_margin(options.child_rekey_secs))
                    .to_string(),
            ),
        ],
    )
}

// ---------------------------------------------------------------------------------------------
// The stock initiator
// ---------------------------------------------------------------------------------------------

/// A stock strongSwan initiator in the client namespace
/// ([`StrongSwanServer::start_stock_initiator`]). Dropping it stops its charon (`SIGTERM`:
/// it sends DELETE for its IKE_SAs first; `SIGKILL` after 3 s).
#[derive(Debug)]
pub struct StockInitiator<'server> {
    server: &'server StrongSwanServer,
    /// Its directory: strongswan.conf, swanctl/, charon.vici, charon.log, resolv.conf.
    run: PathBuf,
    process: Option<TrackedProcess>,
}

impl StockInitiator<'_> {
    fn write_files(&self) -> Result<(), HarnessError> {
        let server = self.server;
        create_dir(&self.run, 0o755)?;
        let swanctl = self.run.join("swanctl");
        create_swanctl_dir(&swanctl)?;
        // The resolve plugin would run resolvconf (the host's DNS!) if there is one.
        let resolve = if find_program("resolvconf").is_some() {
            ""
        } else {
            "resolve"
        };
        let conf = fill_template(
            INITIATOR_STRONGSWAN_CONF,
            &[
                ("RUN", self.run.display().to_string()),
                ("RESOLVE", resolve.to_owned()),
            ],
        );
        write_file(&self.run.join("strongswan.conf"), conf.as_bytes(), 0o644)?;
        write_file(
            &swanctl.join("swanctl.conf"),
            INITIATOR_SWANCTL_CONF.as_bytes(),
            0o600,
        )?;
        write_file(
            &swanctl.join("x509ca/ca.crt"),
            server.pki.ca_cert.as_bytes(),
            0o644,
        )?;
        write_file(
            &swanctl.join("x509/client.crt"),
            server.pki.client_cert.as_bytes(),
            0o644,
        )?;
        write_file(
            &swanctl.join("private/client.key"),
            server.pki.client_key.as_bytes(),
            0o600,
        )?;
        write_file(&self.run.join("resolv.conf"), b"", 0o644)?;
        Ok(())
    }

    /// Runs swanctl against this initiator (command first, as for
    /// [`StrongSwanServer::swanctl`]).
    pub fn swanctl(&self, args: &[&str]) -> Result<CommandOutput, HarnessError> {
        self.server
            .swanctl_in(&self.server.client_ns, &self.run, args, SWANCTL_TIMEOUT)
    }

    /// Connects with `conn` (one of [`STOCK_CONNECTIONS`]): `swanctl --initiate --ike conn
    /// --child conn`, and fails with both daemons' logs unless the CHILD_SA came up within
    /// 20 s.
    pub fn initiate(&self, conn: &str) -> Result<CommandOutput, HarnessError> {
        let out = self.swanctl(&[
            "--initiate",
            "--ike",
            conn,
            "--child",
            conn,
            "--timeout",
            "20",
        ])?;
        if out.success() {
            Ok(out)
        } else {
            Err(HarnessError::Command {
                command: format!("swanctl --initiate {conn} (stock initiator)"),
                status: out.status.to_string(),
                output: format!(
                    "{}{}\n--- initiator charon.log (tail) ---\n{}\n{}",
                    out.stdout_text(),
                    out.stderr_text(),
                    file_tail(&self.run.join("charon.log"), LOG_TAIL_LINES),
                    self.server.responder_diagnostics()
                ),
            })
        }
    }

    /// Deletes this initiator's IKE_SA of `conn` (DELETE sent by the client) and waits for
    /// the answer.
    pub fn terminate(&self, conn: &str) -> Result<CommandOutput, HarnessError> {
        self.swanctl(&["--terminate", "--ike", conn, "--timeout", "10"])
    }

    /// The initiator's IKE_SAs, parsed like [`StrongSwanServer::ike_sas`].
    pub fn ike_sas(&self) -> Result<Vec<IkeSa>, HarnessError> {
        let out = self.swanctl(&["--list-sas", "--pretty"])?;
        Ok(parse_list_sas(&out.stdout_text()))
    }

    /// `swanctl --list-sas` of the initiator, as text.
    pub fn list_sas(&self) -> String {
        match self.swanctl(&["--list-sas"]) {
            Ok(out) => format!("{}{}", out.stdout_text(), out.stderr_text()),
            Err(error) => format!("(swanctl --list-sas failed: {error})"),
        }
    }

    /// The virtual IP on the initiator's `ipsec0`, if it has one.
    pub fn virtual_ip(&self) -> Option<Ipv4Addr> {
        let out = self
            .server
            .ip()
            .args([
                "-n",
                &self.server.client_ns,
                "-4",
                "-o",
                "addr",
                "show",
                "dev",
            ])
            .arg(IPSEC_TUN)
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|line| {
                let (_, rest) = line.split_once("inet ")?;
                rest.split(['/', ' ']).next()?.parse().ok()
            })
    }

    /// What the resolve plugin wrote (`nameserver <the CP DNS server>`), empty if nothing (or
    /// if the plugin is left out because a `resolvconf` program exists).
    pub fn resolv_conf(&self) -> String {
        fs::read_to_string(self.run.join("resolv.conf")).unwrap_or_default()
    }

    /// The initiator's readable log.
    pub fn charon_log(&self) -> String {
        fs::read(self.run.join("charon.log"))
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The initiator's directory (`dir()/initiator<N>`).
    pub fn dir(&self) -> &Path {
        &self.run
    }

    /// The PID of the initiator's charon.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(TrackedProcess::pid)
    }

    /// Stops the initiator (`SIGTERM`, then `SIGKILL` after 3 s) and waits until its
    /// `ipsec0` is gone from the client namespace.
    pub fn stop(mut self) -> Result<(), HarnessError> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<(), HarnessError> {
        if let Some(mut process) = self.process.take() {
            process.stop(STOP_GRACE);
        }
        let server = self.server;
        let gone = poll_until(TUN_GONE_TIMEOUT, || {
            Ok((!server.has_device(&server.client_ns, IPSEC_TUN)).then_some(()))
        })?;
        gone.ok_or_else(|| HarnessError::StillThere {
            what: format!("{IPSEC_TUN} of the stock initiator in {}", server.client_ns),
            waited: TUN_GONE_TIMEOUT,
            detail: file_tail(&self.run.join("charon.log"), LOG_TAIL_LINES),
        })
    }
}

impl Drop for StockInitiator<'_> {
    fn drop(&mut self) {
        if let Err(error) = self.shut_down() {
            eprintln!("strongswan harness: {error}");
        }
        self.server.initiator_running.store(false, Ordering::SeqCst);
    }
}

impl fmt::Display for IkeSa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} #{} {} {}_i {}_r remote {} @ {}[{}] vips {:?} {}/{}",
            self.name,
            self.unique_id,
            self.state,
            self.initiator_spi,
            self.responder_spi,
            self.remote_id,
            self.remote_host,
            self.remote_port,
            self.remote_vips,
            self.encryption,
            self.dh_group
        )?;
        for child in &self.children {
            write!(
                f,
                "\n  {} #{} {} encap={} in {} out {} {} ts {:?} === {:?}",
                child.name,
                child.unique_id,
                child.state,
                child.encap,
                child.spi_in,
                child.spi_out,
                child.encryption,
                child.local_ts,
                child.remote_ts
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_reads_this_harness_names_only() {
        assert_eq!(owner_pid("ebsw1234n0s"), Some(1234));
        assert_eq!(owner_pid("ebsw1234n17c"), Some(1234));
        assert_eq!(owner_pid("ebsw1234n17"), Some(1234));
        assert_eq!(owner_pid("ebsw1234n3pki"), Some(1234));
        assert_eq!(owner_pid("ebsw1234n4shim"), None);
        assert_eq!(owner_pid("ebt1234n0s"), None);
        assert_eq!(owner_pid("ebtun1234n0"), None);
        assert_eq!(owner_pid("sswan-resp"), None);
    }

    #[test]
    fn client_paths_stay_below_the_client_directory() {
        for ok in ["ca.crt", "x509ca/ca.crt", "a/b/c.pem"] {
            assert!(is_relative_client_path(ok), "{ok}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../b", "./a", "a/", "a/./b"] {
            assert!(!is_relative_client_path(bad), "{bad}");
        }
    }

    /// The `@NAME@` placeholders in `text` (e-mail addresses are not).
    fn placeholders(text: &str) -> std::collections::BTreeSet<String> {
        let mut found = std::collections::BTreeSet::new();
        let mut at = 0;
        while let Some(offset) = text[at..].find('@') {
            let start = at + offset + 1;
            let len = text[start..]
                .bytes()
                .take_while(|b| b.is_ascii_uppercase() || *b == b'_')
                .count();
            if len > 0 && text[start + len..].starts_with('@') {
                found.insert(text[start..start + len].to_owned());
                at = start + len + 1;
            } else {
                at = start;
            }
        }
        found
    }

    #[test]
    fn templates_are_filled_completely() {
        let names = |list: &[&str]| list.iter().map(|name| (*name).to_owned()).collect();
        assert_eq!(
            placeholders(RESPONDER_SWANCTL_CONF),
            names(&[
                "IKE_PROPOSALS",
                "ESP_PROPOSALS",
                "DPD_DELAY",
                "IKE_REKEY",
                "IKE_OVER",
                "CHILD_REKEY",
                "CHILD_LIFE"
            ])
        );
        assert_eq!(
            placeholders(RESPONDER_STRONGSWAN_CONF),
            names(&["RUN", "RETRANSMIT_TRIES", "RETRANSMIT_TIMEOUT"])
        );
        assert_eq!(
            placeholders(INITIATOR_STRONGSWAN_CONF),
            names(&["RUN", "RESOLVE"])
        );
        assert!(placeholders(INITIATOR_SWANCTL_CONF).is_empty());
        let options = StrongSwanOptions {
            dpd_delay_secs: 7,
            ike_rekey_secs: 300,
            child_rekey_secs: 120,
            retransmit_tries: 2,
            retransmit_timeout: Duration::from_millis(1500),
            ..StrongSwanOptions::default()
        };
        let conf = responder_strongswan_conf(Path::new("/tmp/x/responder"), &options);
        assert!(placeholders(&conf).is_empty(), "{conf}");
        assert!(conf.contains("retransmit_tries = 2\n"));
        assert!(conf.contains("retransmit_timeout = 1.500\n"));
        assert!(conf.contains("socket = unix:///tmp/x/responder/charon.vici\n"));
        // kernel-libipsec must be registered before kernel-netlink.
        let load = conf
            .lines()
            .find(|line| line.trim_start().starts_with("load = random"))
            .unwrap();
        assert!(load.find("kernel-libipsec") < load.find("kernel-netlink"));

        let swanctl = responder_swanctl_conf(&options);
        assert!(placeholders(&swanctl).is_empty(), "{swanctl}");
        for conn in [CONN_PSK, CONN_EAP, CONN_CERT] {
            assert!(swanctl.contains(&format!("\n\t{conn} {{\n")), "{conn}");
            assert!(swanctl.contains(&format!("\n\t\t\t{conn} {{\n")), "{conn}");
        }
        assert_eq!(
            swanctl
                .matches(&format!("proposals = {IKE_PROPOSALS}\n"))
                .count(),
            3
        );
        assert_eq!(
            swanctl
                .matches(&format!("esp_proposals = {ESP_PROPOSALS}\n"))
                .count(),
            3
        );
        assert_eq!(swanctl.matches("dpd_delay = 7s\n").count(), 3);
        assert_eq!(swanctl.matches("rekey_time = 300s\n").count(), 3);
        assert_eq!(swanctl.matches("rekey_time = 120s\n").count(), 3);
        assert_eq!(swanctl.matches("over_time = 30s\n").count(), 3);
        assert_eq!(swanctl.matches("life_time = 132s\n").count(), 3);
        assert_eq!(swanctl.matches("encap = yes\n").count(), 3);
        assert_eq!(
            swanctl
                .matches(&format!("local_ts = {INNER_NET}\n"))
                .count(),
            3
        );
        for needle in [
            format!("id = {SERVER_ID}\n"),
            format!("id = {PSK_CLIENT_ID}\n"),
            format!("id-1 = {PSK_CLIENT_ID}\n"),
            format!("secret = \"{PSK}\"\n"),
            format!("id = {EAP_USER}\n"),
            format!("secret = \"{EAP_PASSWORD}\"\n"),
            format!("id = {CERT_CLIENT_ID}\n"),
            format!("addrs = {POOL}\n"),
            format!("dns = {DNS_ADDR}\n"),
        ] {
            assert!(swanctl.contains(&needle), "{needle}");
        }
        let defaults = responder_swanctl_conf(&StrongSwanOptions::default());
        assert_eq!(defaults.matches("dpd_delay = 0s\n").count(), 3);
        assert_eq!(defaults.matches("rekey_time = 0s\n").count(), 6);
        assert_eq!(defaults.matches("over_time = 0s\n").count(), 3);
        assert_eq!(defaults.matches("life_time = 0s\n").count(), 3);
        assert_eq!(hard_limit_margin(3), 10);
        assert_eq!(hard_limit_margin(3600), 360);
    }

    #[test]
    fn initiator_templates_match_the_constants() {
        for conn in STOCK_CONNECTIONS {
            assert!(
                INITIATOR_SWANCTL_CONF.contains(&format!("\n\t{conn} {{\n")),
                "{conn}"
            );
        }
        assert!(INITIATOR_SWANCTL_CONF.contains(&format!("remote_addrs = {SERVER_ADDR}\n")));
        assert!(INITIATOR_SWANCTL_CONF.contains(&format!("remote_ts = {INNER_NET}\n")));
        assert!(INITIATOR_SWANCTL_CONF.contains(&format!("secret = \"{PSK}\"\n")));
        assert!(INITIATOR_SWANCTL_CONF.contains(&format!("eap_id = {EAP_USER}\n")));
        assert!(INITIATOR_SWANCTL_CONF.contains(&format!("id = {CERT_CLIENT_ID}\n")));
        assert!(INITIATOR_STRONGSWAN_CONF.contains("port = 0\n"));
    }

    #[test]
    fn pretty_list_sas_is_parsed() {
        let text = "list-sa event {\n  rw-psk {\n    uniqueid = 3\n    version = 2\n    \
                    state = ESTABLISHED\n    local-host = 10.99.0.1\n    remote-host = 10.99.0.2\n    \
                    local-port = 4500\n    remote-port = 4500\n    remote-id = psk-client@example.test\n    \
                    initiator-spi = 1122334455667788\n    responder-spi = 99aabbccddeeff00\n    \
                    encr-alg = AES_GCM_16\n    encr-keysize = 256\n    dh-group = CURVE_25519\n    \
                    remote-vips = [\n      10.10.10.1\n    ]\n    child-sas {\n      rw-psk-5 {\n        \
                    name = rw-psk\n        uniqueid = 5\n        state = INSTALLED\n        \
                    encap = yes\n        spi-in = c1234567\n        spi-out = c7654321\n        \
                    encr-alg = AES_GCM_16\n        bytes-in = 1234\n        bytes-out = 99\n        \
                    local-ts = [\n          10.98.0.0/24\n        ]\n        remote-ts = [\n          \
                    10.10.10.1/32\n        ]\n      }\n    }\n  }\n}\n";
        let sas = parse_list_sas(text);
        assert_eq!(sas.len(), 1);
        let sa = &sas[0];
        assert_eq!(sa.name, "rw-psk");
        assert_eq!(sa.unique_id, 3);
        assert_eq!(sa.state, "ESTABLISHED");
        assert_eq!(sa.remote_vips, vec!["10.10.10.1"]);
        assert_eq!(sa.dh_group, "CURVE_25519");
        assert_eq!(sa.local_port, "4500");
        assert_eq!(sa.children.len(), 1);
        let child = &sa.children[0];
        assert_eq!(child.name, "rw-psk");
        assert_eq!(child.unique_id, 5);
        assert_eq!(child.spi_in, "c1234567");
        assert_eq!(child.bytes_in, 1234);
        assert_eq!(child.dh_group, None);
        assert_eq!(child.local_ts, vec!["10.98.0.0/24"]);
        assert_eq!(child.remote_ts, vec!["10.10.10.1/32"]);
        assert!(parse_list_sas("").is_empty());
    }
}
