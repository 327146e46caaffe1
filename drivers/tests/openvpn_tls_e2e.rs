//! erebus in TLS client mode against a real OpenVPN 2.6 server in network namespaces the test
//! creates: the `erebus` binary runs unprivileged (as nobody) in the client namespace with the
//! harness's TLS profiles, and curl reaches the HTTP server behind the tunnel through erebus's
//! HTTP proxy. Nothing else leads to the server's tunnel address, so every success went through
//! erebus.
//!
//! Every scenario (tls-crypt over UDP and TCP, tls-auth with username/password and
//! `compress stub-v2`, `comp-lzo no`, and a server that keys the session with the legacy
//! OpenVPN PRF) runs under both drivers, `--runtime mio` and `--runtime smol`; tls-crypt over
//! UDP and TCP also under the third, `--runtime threads`. A 64 MiB
//! download crosses a renegotiation the server starts (`reneg-sec 20`) under both drivers.
//! Failures (wrong password, wrong CA, wrong tls-crypt key) end erebus with the documented
//! exit status and one line naming the cause, after a handful of packets and no retries.
//! Without `--dns`, proxied names resolve through the DNS server the server pushed. Against
//! `auth-gen-token`, erebus authenticates with the pushed token instead of the password in a
//! renegotiation and after a reconnection, and with the password again once the token is
//! refused.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod e2e;

use std::fs::File;
use std::process::Stdio;
use std::time::{Duration, Instant};

use e2e::{EREBUS, read_log};

use erebus_testvectors::netns::{
    self, HTTP_MARKER, NsProcess, OpenVpnServer, RunAs, ServerOptions, ServerProfile, ServerStop,
    Transport,
};

/// `IV_PROTO` erebus announces: DATA_V2, REQUEST_PUSH, TLS_KEY_EXPORT and CC_EXIT_NOTIFY.
const EREBUS_IV_PROTO: u32 = 142;
/// Bit 3 of `IV_PROTO`: the client can derive keys with TLS-EKM.
const TLS_KEY_EXPORT: u32 = 8;

fn erebus_log(server: &OpenVpnServer) -> String {
    read_log(&server.instance_dir().join("erebus.log"))
}

fn server_log(server: &OpenVpnServer) -> String {
    read_log(&server.server_log())
}

/// Runs curl as nobody in the client namespace and returns its stdout.
fn curl(server: &OpenVpnServer, args: &[&str]) -> Vec<u8> {
    let curl = netns::find_program("curl").expect("curl is installed");
    let mut argv = vec![curl.to_str().unwrap(), "-sS", "--fail", "--max-time", "75"];
    argv.extend_from_slice(args);
    let output = server
        .run_in_client(RunAs::Nobody, &argv, Duration::from_secs(90))
        .unwrap();
    assert!(
        output.success(),
        "curl {args:?} failed: {}\n--- erebus ---\n{}\n--- server ---\n{}",
        output.stderr_text(),
        erebus_log(server),
        server.server_log_tail(30)
    );
    output.stdout
}

/// The arguments of an erebus run with `config` and, when given, a credentials file; the
/// HTTP proxy listens on 127.0.0.1:8080.
fn erebus_args<'a>(
    config: &'a str,
    credentials: Option<&'a str>,
    runtime: &'a str,
) -> Vec<&'a str> {
    let mut argv = vec![
        EREBUS,
        "--config",
        config,
        "--runtime",
        runtime,
        "--http",
        "127.0.0.1:8080",
        "--no-socks",
    ];
    if let Some(file) = credentials {
        argv.extend_from_slice(&["--auth-user-pass", file]);
    }
    argv
}

/// Starts erebus with `config` and waits until its proxy listens and the tunnel is up.
fn start_erebus<'s>(
    server: &'s OpenVpnServer,
    config: &std::path::Path,
    runtime: &str,
) -> NsProcess<'s> {
    let credentials = server.credentials_path();
    let credentials = server
        .profile()
        .uses_username_password()
        .then(|| credentials.to_str().unwrap());
    let argv = erebus_args(config.to_str().unwrap(), credentials, runtime);
    let mut erebus = server
        .spawn_in_client(RunAs::Nobody, &argv, "erebus.log")
        .unwrap();
    erebus
        .wait_until_listening(8080, Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        netns::uid_of(erebus.pid()),
        Some(e2e::NOBODY_UID),
        "erebus must run unprivileged"
    );
    let up = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        erebus_log(server).contains("erebus: up:")
    });
    assert!(
        up,
        "erebus did not come up:\n{}\n--- server ---\n{}",
        erebus_log(server),
        server.server_log_tail(40)
    );
    erebus
}

/// Checks how the session's data-channel keys were derived, from both ends: TLS-EKM on a 2.6
/// server, the OpenVPN PRF on the legacy-PRF server (which read erebus's `IV_PROTO` without
/// TLS_KEY_EXPORT and pushed no `tls-ekm`).
fn check_key_derivation(server: &OpenVpnServer) {
    let push = server
        .last_push_reply()
        .unwrap_or_else(|| panic!("no PUSH_REPLY in the server log:\n{}", server_log(server)));
    let flags = push
        .split(',')
        .find(|option| option.starts_with("protocol-flags "))
        .unwrap_or_else(|| panic!("no protocol-flags pushed: {push}"));
    let iv_proto = server.last_client_iv_proto().expect("IV_PROTO logged");
    // The cipher: the server's first data cipher that erebus offers too.
    let expected = match server.profile() {
        ServerProfile::TlsAuthUserPass | ServerProfile::TlsAuthUserPassLzo => "CHACHA20-POLY1305",
        _ => "AES-256-GCM",
    };
    let server_text = server_log(server);
    let installed: Vec<&str> = server_text
        .lines()
        .filter(|line| line.contains("Outgoing Data Channel: Cipher"))
        .collect();
    assert!(
        !installed.is_empty()
            && installed
                .iter()
                .all(|line| line.contains(&format!("Cipher '{expected}' initialized"))),
        "expected {expected}: {installed:?}"
    );
    let log = erebus_log(server);
    if server.profile() == ServerProfile::TlsLegacyPrf {
        let read = EREBUS_IV_PROTO & !TLS_KEY_EXPORT;
        assert_eq!(server.iv_proto_rewrites(), vec![(EREBUS_IV_PROTO, read)]);
        assert_eq!(iv_proto, read);
        assert!(!flags.contains("tls-ekm"), "{push}");
        assert!(
            log.contains("tunnel up") && log.contains("ekm=false"),
            "{log}"
        );
    } else {
        assert_eq!(iv_proto, EREBUS_IV_PROTO);
        assert!(flags.contains("tls-ekm"), "{push}");
        assert!(
            log.contains("tunnel up") && log.contains("ekm=true"),
            "{log}"
        );
    }
}

/// A whole session: up, a page and 4 MiB through the HTTP proxy, the key derivation the
/// server chose, then SIGTERM and the exit notification.
fn session(profile: ServerProfile, transport: Transport, runtime: &str) {
    let name = format!(
        "erebus_tls_{}_{}_{runtime}",
        profile.name(),
        transport.name()
    );
    if !netns::should_run_interop(&name) {
        return;
    }
    let started = Instant::now();
    let server = OpenVpnServer::start(profile, transport).unwrap();
    let erebus = start_erebus(&server, &server.client_profile_path(), runtime);
    let up = started.elapsed();

    let page = curl(
        &server,
        &["-x", "http://127.0.0.1:8080", &server.http_url()],
    );
    assert!(String::from_utf8_lossy(&page).contains(HTTP_MARKER));
    const DOWN: usize = 4 << 20;
    let url = format!("{}bytes/{DOWN}", server.http_url());
    let body = curl(&server, &["-x", "http://127.0.0.1:8080", &url]);
    assert_eq!(body.len(), DOWN);
    assert_eq!(netns::sha256(&body), netns::pattern_sha256(DOWN as u64));
    check_key_derivation(&server);

    let status = erebus.stop(Duration::from_secs(10)).expect("erebus exited");
    assert!(
        status.success(),
        "erebus exited with {status}\n{}",
        erebus_log(&server)
    );
    if transport == Transport::Udp {
        // The server pushed cc-exit: the notification is the EXIT control message.
        let seen = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            server_log(&server).contains("exit message received")
        });
        assert!(
            seen,
            "the server did not see the exit notification:\n{}",
            server.server_log_tail(20)
        );
    }
    eprintln!("{name}: up after {up:?}, total {:?}", started.elapsed());
}

#[test]
fn tls_crypt_over_udp_with_mio() {
    session(ServerProfile::TlsCrypt, Transport::Udp, "mio");
}

#[test]
fn tls_crypt_over_udp_with_smol() {
    session(ServerProfile::TlsCrypt, Transport::Udp, "smol");
}

#[test]
fn tls_crypt_over_tcp_with_mio() {
    session(ServerProfile::TlsCrypt, Transport::Tcp, "mio");
}

#[test]
fn tls_crypt_over_tcp_with_smol() {
    session(ServerProfile::TlsCrypt, Transport::Tcp, "smol");
}

#[test]
fn tls_crypt_over_udp_with_threads() {
    session(ServerProfile::TlsCrypt, Transport::Udp, "threads");
}

#[test]
fn tls_crypt_over_tcp_with_threads() {
    session(ServerProfile::TlsCrypt, Transport::Tcp, "threads");
}

#[test]
fn tls_auth_user_pass_over_udp_with_mio() {
    session(ServerProfile::TlsAuthUserPass, Transport::Udp, "mio");
}

#[test]
fn tls_auth_user_pass_over_udp_with_smol() {
    session(ServerProfile::TlsAuthUserPass, Transport::Udp, "smol");
}

#[test]
fn tls_auth_user_pass_lzo_over_udp_with_mio() {
    session(ServerProfile::TlsAuthUserPassLzo, Transport::Udp, "mio");
}

#[test]
fn tls_auth_user_pass_lzo_over_udp_with_smol() {
    session(ServerProfile::TlsAuthUserPassLzo, Transport::Udp, "smol");
}

#[test]
fn tls_legacy_prf_over_udp_with_mio() {
    session(ServerProfile::TlsLegacyPrf, Transport::Udp, "mio");
}

#[test]
fn tls_legacy_prf_over_tcp_with_smol() {
    session(ServerProfile::TlsLegacyPrf, Transport::Tcp, "smol");
}

/// How often `needle` occurs in the server log.
fn server_log_count(server: &OpenVpnServer, needle: &str) -> usize {
    server_log(server).matches(needle).count()
}

/// One 64 MiB download, rate-limited to about 30 s, through a renegotiation the server starts
/// (`reneg-sec 20`: after 18-20 s): every byte arrives, on the same session.
fn server_renegotiates_during_a_download(runtime: &str) {
    let name = format!("tls_server_renegotiates_during_a_64_mib_download_with_{runtime}");
    if !netns::should_run_interop(&name) {
        return;
    }
    let started = Instant::now();
    let options = ServerOptions::default().with_reneg_sec(20);
    let server =
        OpenVpnServer::start_with(ServerProfile::TlsCrypt, Transport::Udp, &options).unwrap();
    let erebus = start_erebus(&server, &server.client_profile_path(), runtime);
    let keys_installed = "Incoming Data Channel: Cipher 'AES-256-GCM' initialized";
    let soft_reset = "TLS: soft reset";
    let keys_before = server_log_count(&server, keys_installed);
    let resets_before = server_log_count(&server, soft_reset);
    assert_eq!(
        (keys_before, resets_before),
        (1, 0),
        "renegotiated before the download:\n{}",
        server.server_log_tail(40)
    );

    const DOWN: usize = 64 << 20;
    let url = format!("{}bytes/{DOWN}", server.http_url());
    let downloading = Instant::now();
    let body = curl(
        &server,
        &["--limit-rate", "2200k", "-x", "http://127.0.0.1:8080", &url],
    );
    let download = downloading.elapsed();
    let keys_after = server_log_count(&server, keys_installed);
    let resets_after = server_log_count(&server, soft_reset);
    assert_eq!(body.len(), DOWN);
    assert!(
        netns::sha256(&body) == netns::pattern_sha256(DOWN as u64),
        "the 64 MiB download is corrupt"
    );
    assert!(
        resets_after > resets_before && keys_after > keys_before,
        "no renegotiation during the {download:?} download: {resets_after} soft resets, \
         {keys_after} key installations\n{}",
        server.server_log_tail(40)
    );
    let log = server_log(&server);
    assert!(!log.contains("TLS Error"), "{}", server.server_log_tail(60));
    // One session throughout: the new keys came from a renegotiation, not a reconnection.
    assert_eq!(log.matches("Peer Connection Initiated").count(), 1);
    let client_log = erebus_log(&server);
    assert_eq!(client_log.matches("erebus: up:").count(), 1, "{client_log}");
    assert!(!client_log.contains("reconnecting"), "{client_log}");

    let status = erebus.stop(Duration::from_secs(10)).expect("erebus exited");
    assert!(status.success(), "{}", erebus_log(&server));
    eprintln!(
        "{name}: 64 MiB in {download:?} across {} renegotiation(s), total {:?}",
        resets_after - resets_before,
        started.elapsed()
    );
}

#[test]
fn tls_server_renegotiates_during_a_64_mib_download_with_mio() {
    server_renegotiates_during_a_download("mio");
}

#[test]
fn tls_server_renegotiates_during_a_64_mib_download_with_smol() {
    server_renegotiates_during_a_download("smol");
}

/// Slow downloads back to back for 25 s while erebus renegotiates every 8 s (`reneg-sec 8` in
/// the profile): every byte arrives intact, and it is one session throughout.
fn renegotiation_started_by_erebus_keeps_the_download_intact(runtime: &str) {
    let name =
        format!("tls_renegotiation_started_by_erebus_keeps_the_download_intact_with_{runtime}");
    if !netns::should_run_interop(&name) {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).unwrap();
    let profile = format!("{}\nreneg-sec 8\n", server.client_profile());
    let config = server.write_client_file("reneg.ovpn", &profile).unwrap();
    let erebus = start_erebus(&server, &config, runtime);
    let keys_installed = "Incoming Data Channel: Cipher 'AES-256-GCM' initialized";
    let keys_before = server_log_count(&server, keys_installed);
    const DOWN: usize = 1 << 20;
    let url = format!("{}bytes/{DOWN}", server.http_url());
    let start = Instant::now();
    let mut downloads = 0;
    while start.elapsed() < Duration::from_secs(25) {
        let body = curl(
            &server,
            &["--limit-rate", "400k", "-x", "http://127.0.0.1:8080", &url],
        );
        assert_eq!(body.len(), DOWN);
        assert_eq!(netns::sha256(&body), netns::pattern_sha256(DOWN as u64));
        downloads += 1;
    }
    assert!(downloads >= 3);
    let log = server_log(&server);
    let handshakes = log.matches("Control Channel: TLS").count();
    assert!(
        handshakes >= 3,
        "expected renegotiations, saw {handshakes} TLS handshakes:\n{}",
        server.server_log_tail(60)
    );
    assert!(!log.contains("TLS Error"), "{}", server.server_log_tail(60));
    // New keys were installed on the way, and they came from renegotiations of the one
    // session, not from reconnections.
    let keys_after = server_log_count(&server, keys_installed);
    assert!(
        keys_after >= keys_before + 2,
        "{keys_before} then {keys_after} key installations:\n{}",
        server.server_log_tail(60)
    );
    assert_eq!(
        log.matches("Peer Connection Initiated").count(),
        1,
        "{}",
        server.server_log_tail(60)
    );
    let client_log = erebus_log(&server);
    assert_eq!(client_log.matches("erebus: up:").count(), 1, "{client_log}");
    assert!(!client_log.contains("reconnecting"), "{client_log}");
    let status = erebus.stop(Duration::from_secs(10)).expect("erebus exited");
    assert!(status.success(), "{}", erebus_log(&server));
}

#[test]
fn tls_renegotiation_started_by_erebus_keeps_the_download_intact_with_mio() {
    renegotiation_started_by_erebus_keeps_the_download_intact("mio");
}

#[test]
fn tls_renegotiation_started_by_erebus_keeps_the_download_intact_with_smol() {
    renegotiation_started_by_erebus_keeps_the_download_intact("smol");
}

/// What a failed erebus run left behind.
struct Refusal {
    /// Exit status.
    code: i32,
    /// Everything erebus wrote to stderr (without colours).
    stderr: String,
    /// Packets erebus sent to the server (port 1194), counted by tcpdump in the client
    /// namespace: on the veth, what the client sent is what the server received.
    packets_to_server: usize,
    /// From start to exit.
    elapsed: Duration,
}

/// Runs erebus until it exits by itself (within `within`), counting the packets it sends to
/// the server.
fn refused_run(
    server: &OpenVpnServer,
    config: &str,
    credentials: Option<&str>,
    runtime: &str,
    within: Duration,
) -> Refusal {
    let tcpdump = netns::find_program("tcpdump").expect("tcpdump is installed");
    let filter = format!(
        "src host {} and dst host {} and port {}",
        netns::CLIENT_OUTER_ADDR,
        netns::SERVER_OUTER_ADDR,
        netns::OPENVPN_PORT
    );
    let capture = server
        .spawn_in_client(
            RunAs::Root,
            &[
                tcpdump.to_str().unwrap(),
                "-i",
                netns::CLIENT_VETH,
                "-n",
                "-l",
                &filter,
            ],
            "tcpdump.log",
        )
        .unwrap();
    let tcpdump_log = server.instance_dir().join("tcpdump.log");
    let listening = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        read_log(&tcpdump_log).contains("listening on")
    });
    assert!(listening, "tcpdump did not start");

    // stdout and stderr apart, to check what erebus says on stderr.
    let argv = erebus_args(config, credentials, runtime);
    let stdout = server.instance_dir().join("erebus.stdout");
    let stderr = server.instance_dir().join("erebus.stderr");
    let mut child = server
        .client_command(RunAs::Nobody, &argv)
        .stdin(Stdio::null())
        .stdout(File::create(&stdout).unwrap())
        .stderr(File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > within {
            // By PID: the child is ours and not yet reaped.
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "erebus did not give up within {within:?}:\n{}",
                read_log(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = start.elapsed();
    // Late packets would be a retry after the exit decision: give them a moment to show.
    std::thread::sleep(Duration::from_millis(300));
    capture.stop(Duration::from_secs(3));
    let sent = read_log(&tcpdump_log)
        .lines()
        .filter(|line| line.contains(&format!(" > {}.", netns::SERVER_OUTER_ADDR)))
        .count();
    assert!(
        read_log(&stdout).is_empty(),
        "erebus wrote to stdout:\n{}",
        read_log(&stdout)
    );
    Refusal {
        code: status.code().unwrap_or(-1),
        stderr: read_log(&stderr),
        packets_to_server: sent,
        elapsed,
    }
}

impl Refusal {
    /// The run ended with `code` after one connection attempt and exactly one line of its own
    /// besides it, the last, starting with `erebus: down: ` and naming the problem
    /// (`expected`): no "up", no "reconnecting".
    fn assert_single_reason(&self, code: i32, expected: &str) -> &str {
        assert_eq!(self.code, code, "{}", self.stderr);
        let attempts = self
            .stderr
            .lines()
            .filter(|line| line.starts_with("erebus: connecting to "))
            .count();
        assert_eq!(attempts, 1, "expected one attempt:\n{}", self.stderr);
        let own: Vec<&str> = self
            .stderr
            .lines()
            .filter(|line| line.starts_with("erebus: ") && !line.starts_with("erebus: connecting"))
            .collect();
        assert_eq!(
            own.len(),
            1,
            "expected one line of erebus's own:\n{}",
            self.stderr
        );
        let last = self.stderr.lines().last().unwrap_or_default();
        assert_eq!(
            last, own[0],
            "the reason is not the last line:\n{}",
            self.stderr
        );
        assert!(
            last.starts_with("erebus: down: ") && last.contains(expected),
            "`{expected}` not in the reason `{last}`"
        );
        last
    }

    /// At most `bound` packets reached the server.
    fn assert_no_retry_storm(&self, bound: usize) {
        assert!(
            self.packets_to_server > 0 && self.packets_to_server <= bound,
            "erebus sent {} packets to the server in {:?} (bound {bound}):\n{}",
            self.packets_to_server,
            self.elapsed,
            self.stderr
        );
    }
}

#[test]
fn tls_wrong_password_is_an_authentication_failure() {
    if !netns::should_run_interop("tls_wrong_password_is_an_authentication_failure") {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::TlsAuthUserPass, Transport::Udp).unwrap();
    let config = server.client_profile_path();
    let wrong = server.wrong_credentials_path();
    let refusal = refused_run(
        &server,
        config.to_str().unwrap(),
        Some(wrong.to_str().unwrap()),
        "mio",
        Duration::from_secs(30),
    );
    let reason = refusal.assert_single_reason(3, "AUTH_FAILED");
    eprintln!(
        "wrong password: `{reason}` after {:?}, {} packets to the server",
        refusal.elapsed, refusal.packets_to_server
    );
    refusal.assert_no_retry_storm(20);
    assert!(
        !refusal.stderr.contains(netns::WRONG_AUTH_PASSWORD),
        "the password leaked into the log"
    );
    // The server refused exactly one attempt.
    let log = server_log(&server);
    assert_eq!(
        log.matches("verify-user.sh: REJECTED user").count(),
        1,
        "{log}"
    );
}

fn wrong_ca_is_refused(runtime: &str) {
    if !netns::should_run_interop(&format!("tls_wrong_ca_is_refused_with_{runtime}")) {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).unwrap();
    let profile = server.client_profile_with_wrong_ca().unwrap();
    let config = server.write_client_file("wrong-ca.ovpn", &profile).unwrap();
    let refusal = refused_run(
        &server,
        config.to_str().unwrap(),
        None,
        runtime,
        Duration::from_secs(30),
    );
    // The certificate check is classed as an authentication failure.
    let reason = refusal.assert_single_reason(3, "not issued by the CA");
    eprintln!(
        "wrong CA: `{reason}` after {:?}, {} packets to the server",
        refusal.elapsed, refusal.packets_to_server
    );
    refusal.assert_no_retry_storm(12);
}

#[test]
fn tls_wrong_ca_is_refused_with_mio() {
    wrong_ca_is_refused("mio");
}

#[test]
fn tls_wrong_ca_is_refused_with_smol() {
    wrong_ca_is_refused("smol");
}

fn wrong_tls_crypt_key_gives_up_after_hand_window(runtime: &str) {
    let name = format!("tls_wrong_tls_crypt_key_gives_up_after_hand_window_with_{runtime}");
    if !netns::should_run_interop(&name) {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).unwrap();
    let profile = server.client_profile_with_wrong_key().unwrap();
    // A silent server is retried for ever, as the stock client does; `connect-retry-max 1`
    // makes this run give up after its one attempt.
    let profile = format!("{profile}\nhand-window 8\nconnect-retry-max 1\n");
    let config = server
        .write_client_file("wrong-key.ovpn", &profile)
        .unwrap();
    let refusal = refused_run(
        &server,
        config.to_str().unwrap(),
        None,
        runtime,
        Duration::from_secs(30),
    );
    let reason = refusal.assert_single_reason(4, "hand-window");
    // The server dropped every packet, one log line each.
    let dropped = server_log_count(&server, "tls-crypt unwrap error");
    eprintln!(
        "wrong tls-crypt key: `{reason}` after {:?}, {} packets to the server, {dropped} \
         dropped by it",
        refusal.elapsed, refusal.packets_to_server
    );
    assert!(
        refusal.elapsed >= Duration::from_secs(7),
        "gave up before hand-window"
    );
    assert_eq!(dropped, refusal.packets_to_server);
    // Hard-reset retransmissions with backoff over 8 s: a handful, not one per tick.
    refusal.assert_no_retry_storm(6);
}

#[test]
fn tls_wrong_tls_crypt_key_gives_up_after_hand_window_with_mio() {
    wrong_tls_crypt_key_gives_up_after_hand_window("mio");
}

#[test]
fn tls_wrong_tls_crypt_key_gives_up_after_hand_window_with_smol() {
    wrong_tls_crypt_key_gives_up_after_hand_window("smol");
}

/// The DNS server the server pushed (`dhcp-option DNS 10.8.0.1`) resolves proxied names when
/// the command line names none: no `--dns`, and a name only the tunnel's dnsmasq knows
/// reaches its page through the HTTP proxy, the query in dnsmasq's log from the client's
/// tunnel address.
fn pushed_dns_resolves_proxied_names(runtime: &str) {
    let name = format!("tls_pushed_dns_resolves_proxied_names_with_{runtime}");
    if !netns::should_run_interop(&name) {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).unwrap();
    let config = server.client_profile_path();
    let argv = erebus_args(config.to_str().unwrap(), None, runtime);
    assert!(
        !argv.contains(&"--dns"),
        "this test is about the pushed DNS server: {argv:?}"
    );
    let erebus = start_erebus(&server, &config, runtime);
    let push = server.last_push_reply().expect("a PUSH_REPLY in the log");
    assert!(push.contains("dhcp-option DNS 10.8.0.1"), "{push}");

    let page = curl(
        &server,
        &["-x", "http://127.0.0.1:8080", &server.http_name_url()],
    );
    assert!(String::from_utf8_lossy(&page).contains(HTTP_MARKER));
    let dns_log = read_log(&server.dnsmasq_log());
    assert!(
        dns_log.contains(&format!("query[A] {} from 10.8.0.2", netns::DNS_NAME)),
        "dnsmasq did not see the query through the tunnel:\n{dns_log}\n--- erebus ---\n{}",
        erebus_log(&server)
    );
    let status = erebus.stop(Duration::from_secs(10)).expect("erebus exited");
    assert!(status.success(), "{}", erebus_log(&server));
}

#[test]
fn tls_pushed_dns_resolves_proxied_names_with_mio() {
    pushed_dns_resolves_proxied_names("mio");
}

#[test]
fn tls_pushed_dns_resolves_proxied_names_with_smol() {
    pushed_dns_resolves_proxied_names("smol");
}

/// The server renegotiates this often in the auth-token test.
const TOKEN_RENEG_SEC: u32 = 15;
/// What a 2.6 server logs when a client authenticated with a valid auth-token.
const TOKEN_ACCEPTED: &str = "Username/auth-token authentication succeeded for username 'erebus'";

/// A `--auth-gen-token-secret` file outside the instance directory (the server's options are
/// fixed before that exists), removed on drop.
struct TokenSecret(std::path::PathBuf);

impl TokenSecret {
    fn new(runtime: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "erebus-auth-token-{}-{runtime}.key",
            std::process::id()
        ));
        let secret = Self(path);
        secret.generate();
        secret
    }

    /// Writes a fresh secret (`openvpn --genkey auth-token`): tokens made with the old one
    /// no longer verify.
    fn generate(&self) {
        let _ = std::fs::remove_file(&self.0);
        let openvpn = netns::find_program("openvpn").expect("openvpn is installed");
        let out = std::process::Command::new(openvpn)
            .args(["--genkey", "auth-token"])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openvpn --genkey auth-token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TokenSecret {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The lines of the server's verify-script call log.
fn verify_calls(server: &OpenVpnServer) -> Vec<String> {
    read_log(&server.verify_user_calls())
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Polls `done` every 200 ms for up to `timeout`.
fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    done()
}

/// A page and 1 MiB through the HTTP proxy, the download checked by its SHA-256.
fn data_flows(server: &OpenVpnServer) {
    let page = curl(server, &["-x", "http://127.0.0.1:8080", &server.http_url()]);
    assert!(String::from_utf8_lossy(&page).contains(HTTP_MARKER));
    const DOWN: usize = 1 << 20;
    let url = format!("{}bytes/{DOWN}", server.http_url());
    let body = curl(server, &["-x", "http://127.0.0.1:8080", &url]);
    assert_eq!(body.len(), DOWN);
    assert_eq!(netns::sha256(&body), netns::pattern_sha256(DOWN as u64));
}

/// Waits until erebus has said `erebus: up:` `count` times, failing if it exits.
fn wait_up_count(server: &OpenVpnServer, erebus: &mut NsProcess<'_>, count: usize) {
    let mut exited = None;
    let up = wait_until(Duration::from_secs(40), || {
        if let Some(status) = erebus.exit_status() {
            exited = Some(status);
            return true;
        }
        erebus_log(server).matches("erebus: up:").count() >= count
    });
    assert!(
        up && exited.is_none(),
        "erebus not up (#{count}), exited: {exited:?}\n{}\n--- server ---\n{}",
        erebus_log(server),
        server.server_log_tail(40)
    );
}

/// A server with username/password authentication and `auth-gen-token` pushes `auth-token`;
/// erebus authenticates with the token, not the password, from then on: in the renegotiation
/// the server starts (`reneg-sec 15`), and after the server restarts with the same token
/// secret. The verify script runs once, for the first authentication; the server logs each
/// token it accepted; data flows after every re-authentication. Then the server restarts
/// with a new secret: it refuses the token, and erebus reconnects with the password (a second
/// call of the script) instead of giving up.
fn auth_token_replaces_the_password(runtime: &str) {
    let name = format!("tls_auth_token_replaces_the_password_with_{runtime}");
    if !netns::should_run_interop(&name) {
        return;
    }
    let started = Instant::now();
    let secret = TokenSecret::new(runtime);
    // Lifetime unlimited, renewal window 120 s: a token stays valid across the restarts.
    let options = ServerOptions::default()
        .with_reneg_sec(TOKEN_RENEG_SEC)
        .with_openvpn_args([
            "--auth-gen-token",
            "0",
            "120",
            "--auth-gen-token-secret",
            secret.path(),
        ]);
    let server =
        OpenVpnServer::start_with(ServerProfile::TlsAuthUserPass, Transport::Udp, &options)
            .unwrap();
    let profile = format!("{}\nconnect-retry 1 2\n", server.client_profile());
    let config = server.write_client_file("token.ovpn", &profile).unwrap();
    let mut erebus = start_erebus(&server, &config, runtime);
    let push = server.last_push_reply().expect("a PUSH_REPLY in the log");
    // The server's log hides the token itself: `auth-tokenSESS_ID`.
    assert!(push.contains(",auth-token"), "no auth-token pushed: {push}");
    assert_eq!(verify_calls(&server), ["accepted erebus"]);
    data_flows(&server);

    // The renegotiation the server starts: the token, not the password.
    let renegotiated = wait_until(Duration::from_secs(2 * u64::from(TOKEN_RENEG_SEC)), || {
        server_log(&server).contains(TOKEN_ACCEPTED)
    });
    assert!(
        renegotiated,
        "no renegotiation authenticated with the token:\n{}\n--- erebus ---\n{}",
        server.server_log_tail(60),
        erebus_log(&server)
    );
    assert!(server_log(&server).contains("TLS: soft reset"));
    data_flows(&server);
    assert_eq!(verify_calls(&server), ["accepted erebus"]);
    let log = server_log(&server);
    assert_eq!(log.matches("Peer Connection Initiated").count(), 1, "{log}");
    assert_eq!(erebus_log(&server).matches("erebus: up:").count(), 1);

    // The server restarts with the same secret: the new session authenticates with the token.
    server.stop_openvpn(ServerStop::Terminate).unwrap();
    server.start_openvpn_again().unwrap();
    wait_up_count(&server, &mut erebus, 2);
    let log = server_log(&server);
    assert!(
        log.contains(TOKEN_ACCEPTED),
        "the reconnection did not authenticate with the token:\n{}",
        server.server_log_tail(60)
    );
    assert_eq!(verify_calls(&server), ["accepted erebus"]);
    data_flows(&server);

    // A new secret: the token is refused, and erebus comes back with the password.
    server.stop_openvpn(ServerStop::Terminate).unwrap();
    secret.generate();
    server.start_openvpn_again().unwrap();
    wait_up_count(&server, &mut erebus, 3);
    let client_log = erebus_log(&server);
    assert!(
        client_log.contains("refused the auth-token"),
        "{client_log}"
    );
    assert_eq!(
        verify_calls(&server),
        ["accepted erebus", "accepted erebus"],
        "{}",
        server.server_log_tail(60)
    );
    data_flows(&server);
    assert_eq!(
        client_log.matches("erebus: down:").count(),
        0,
        "{client_log}"
    );

    let status = erebus.stop(Duration::from_secs(10)).expect("erebus exited");
    assert!(status.success(), "{}", erebus_log(&server));
    eprintln!("{name}: total {:?}", started.elapsed());
}

#[test]
fn tls_auth_token_replaces_the_password_with_mio() {
    auth_token_replaces_the_password("mio");
}

#[test]
fn tls_auth_token_replaces_the_password_with_smol() {
    auth_token_replaces_the_password("smol");
}
