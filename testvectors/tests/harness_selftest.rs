//! Proves the interop harness with the stock OpenVPN client (kernel tun, in the client
//! namespace): for every profile and transport, the tunnel address is unreachable before the
//! client connects; afterwards ping, HTTP, HTTPS, DNS and a 1 MiB download all go through the
//! tunnel, and dropping the server leaves no namespace, process or directory behind. The TLS
//! profiles also push their DNS settings, refuse a wrong password, a wrong CA and a wrong
//! tls-crypt key, and the legacy-PRF server (an `LD_PRELOAD` library hides TLS_KEY_EXPORT from
//! it) gives even the stock 2.6 client a session keyed with the OpenVPN PRF, not TLS-EKM.
//!
//! Needs root (see `erebus_testvectors::netns::require_netns`); without it every test prints a
//! banner and fails, unless `EREBUS_SKIP_INTEROP=1` is set outside CI.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use erebus_testvectors::netns::{
    self, HTTP_MARKER, OpenVpnServer, RunAs, SERVER_TUNNEL_ADDR, ServerOptions, ServerProfile,
    ServerStop, Transport,
};

const ONE_MIB: usize = 1 << 20;

fn namespace_list() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn namespace_exists(name: &str) -> bool {
    namespace_list()
        .lines()
        .any(|line| line.split_whitespace().next() == Some(name))
}

/// What a dropped server must have removed.
struct Footprint {
    namespaces: [String; 2],
    pids: Vec<u32>,
    dir: std::path::PathBuf,
}

impl Footprint {
    fn of(server: &OpenVpnServer) -> Self {
        Self {
            namespaces: [
                server.server_netns().to_owned(),
                server.client_netns().to_owned(),
            ],
            pids: server.pids(),
            dir: server.instance_dir().to_owned(),
        }
    }

    fn assert_gone(&self) {
        for namespace in &self.namespaces {
            assert!(
                !namespace_exists(namespace),
                "namespace {namespace} still exists"
            );
        }
        for pid in &self.pids {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "process {pid} still exists"
            );
        }
        assert!(!self.dir.exists(), "{} still exists", self.dir.display());
    }
}

fn curl(server: &OpenVpnServer, args: &[&str]) -> netns::CommandOutput {
    let curl = netns::find_program("curl").expect("curl is installed");
    let curl = curl.to_string_lossy();
    let mut argv = vec![&*curl, "-sS", "--max-time", "20"];
    argv.extend_from_slice(args);
    server
        .run_in_client(RunAs::Nobody, &argv, Duration::from_secs(30))
        .expect("curl runs")
}

/// The whole proof for one profile and transport.
fn prove(profile: ServerProfile, transport: Transport) {
    let test = format!("harness_selftest {profile} over {transport}");
    if !netns::should_run_interop(&test) {
        return;
    }
    let started = Instant::now();
    let server = OpenVpnServer::start(profile, transport).expect("harness server starts");
    let footprint = Footprint::of(&server);
    let server_up = started.elapsed();
    assert!(
        server
            .client_profile()
            .contains(&format!("proto {}", transport.client_proto()))
    );

    // The veth lives only in the two namespaces, which have IPv4 only.
    for name in [netns::SERVER_VETH, netns::CLIENT_VETH] {
        let host = Command::new("ip").args(["link", "show", name]).output();
        assert!(
            !host.expect("ip runs").status.success(),
            "{name} in the host namespace"
        );
    }
    for namespace in [server.server_netns(), server.client_netns()] {
        let v6 = Command::new("ip")
            .args(["-n", namespace, "-6", "addr", "show"])
            .output()
            .expect("ip runs");
        assert!(v6.stdout.is_empty(), "IPv6 addresses in {namespace}");
    }

    // Before any client: no route to the tunnel network from the client namespace.
    assert!(
        !server
            .ping_from_client(SERVER_TUNNEL_ADDR, 1, Duration::from_millis(200))
            .expect("ping runs"),
        "10.8.0.1 answered pings before the client connected"
    );
    // erebus runs as nobody: it must be able to read the profile.
    let whoami = server
        .run_in_client(
            RunAs::Nobody,
            &[
                "sh",
                "-c",
                "id -u; cat \"$1\"",
                "sh",
                &server.client_profile_path().to_string_lossy(),
            ],
            Duration::from_secs(5),
        )
        .expect("sh runs");
    assert_eq!(
        whoami.stdout_text(),
        format!("65534\n{}", server.client_profile()),
        "{whoami}"
    );
    let early = curl(&server, &["--max-time", "2", &server.http_url()]);
    assert!(
        !early.success(),
        "HTTP answered before the client connected: {early}"
    );
    assert!(
        server
            .resolve_from_client(RunAs::Nobody, netns::DNS_NAME, Duration::from_millis(300))
            .expect("dns probe runs")
            .is_empty(),
        "DNS answered before the client connected"
    );

    let client = server
        .start_stock_client("stock-client.log")
        .expect("stock client starts");
    server
        .wait_for_client_tun(Duration::from_secs(15))
        .unwrap_or_else(|error| panic!("{error}\n--- stock client ---\n{}", client.log_tail(30)));
    let connecting = Instant::now();
    let pinged = server
        .ping_from_client(SERVER_TUNNEL_ADDR, 30, Duration::from_millis(500))
        .expect("ping runs");
    assert!(
        pinged,
        "no ping reply through the tunnel\n--- stock client ---\n{}\n--- server ---\n{}",
        client.log_tail(30),
        server.server_log_tail(30)
    );
    let first_ping = connecting.elapsed();

    let page = curl(&server, &[&server.http_url()]);
    assert!(page.success(), "GET / failed: {page}");
    assert!(
        page.stdout_text().contains(HTTP_MARKER),
        "no marker in {page}"
    );
    check_https(&server);
    if profile.is_tls() {
        check_tls_session(&server, &client);
    }

    for name in [netns::DNS_NAME, "anything.erebus.test"] {
        let addrs = server
            .resolve_from_client(RunAs::Nobody, name, Duration::from_secs(3))
            .expect("dns probe runs");
        assert_eq!(addrs, vec![SERVER_TUNNEL_ADDR], "lookup of {name}");
    }
    assert!(
        std::fs::read_to_string(server.dnsmasq_log())
            .expect("dnsmasq log")
            .contains(&format!(
                "query[A] {} from {}",
                netns::DNS_NAME,
                netns::CLIENT_TUNNEL_ADDR
            )),
        "dnsmasq did not log the query from the tunnel address"
    );

    let download_started = Instant::now();
    let url = format!("{}bytes/{ONE_MIB}", server.http_url());
    let download = curl(&server, &[&url]);
    let download_time = download_started.elapsed();
    assert!(download.success(), "download failed: {download}");
    assert_eq!(download.stdout.len(), ONE_MIB);
    assert_eq!(
        netns::hex(&netns::sha256(&download.stdout)),
        netns::hex(&netns::pattern_sha256(ONE_MIB as u64)),
        "1 MiB /bytes download does not match the pattern stream"
    );

    let log = std::fs::read_to_string(server.server_log()).expect("server log");
    assert!(
        log.contains("Peer Connection Initiated with [AF_INET]10.99.0.2:"),
        "server log lacks the peer connection:\n{}",
        server.server_log_tail(30)
    );

    let stopping = Instant::now();
    let status = client.stop(Duration::from_secs(5));
    assert!(status.is_some(), "stock client was not reaped");
    let client_stop = stopping.elapsed();
    let dropping = Instant::now();
    drop(server);
    let server_drop = dropping.elapsed();
    footprint.assert_gone();
    eprintln!(
        "{test}: server up {server_up:?}, first ping {first_ping:?}, 1 MiB in {download_time:?}, \
         client stop {client_stop:?}, teardown {server_drop:?}, total {:?}",
        started.elapsed()
    );
}

/// HTTPS through the tunnel, verified with the harness CA, by address and by name.
fn check_https(server: &OpenVpnServer) {
    let ca = server.ca_cert_path().to_string_lossy().into_owned();
    let page = curl(server, &["--cacert", &ca, &server.https_url()]);
    assert!(page.success(), "HTTPS GET / failed: {page}");
    assert!(page.stdout_text().contains(HTTP_MARKER), "{page}");
    let resolve = format!(
        "{}:{}:{}",
        netns::DNS_NAME,
        netns::HTTPS_PORT,
        SERVER_TUNNEL_ADDR
    );
    let echo = curl(
        server,
        &[
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            &format!("{}echo", server.https_name_url()),
        ],
    );
    assert!(echo.success(), "HTTPS GET /echo by name failed: {echo}");
    assert!(
        echo.stdout_text().starts_with("GET /echo HTTP/1.1\r\n"),
        "{echo}"
    );
    // Without the harness CA the certificate is refused: curl really verifies it.
    let untrusted = curl(server, &["--max-time", "5", &server.https_url()]);
    assert!(!untrusted.success(), "HTTPS without the CA succeeded");
    let httpd_log = std::fs::read_to_string(server.httpd_log()).expect("httpd log");
    assert!(
        httpd_log.contains(&format!("httpd: https {}:", netns::CLIENT_TUNNEL_ADDR)),
        "{httpd_log}"
    );
}

/// What a TLS session shows in the logs: the pushed DNS settings, the negotiated cipher, and
/// for the username/password profiles the accepted user.
fn check_tls_session(server: &OpenVpnServer, client: &netns::NsProcess<'_>) {
    let client_log = std::fs::read_to_string(client.log_path()).expect("client log");
    let push = client_log
        .lines()
        .find(|line| line.contains("PUSH: Received control message: 'PUSH_REPLY"))
        .unwrap_or_else(|| panic!("no PUSH_REPLY in the client log:\n{client_log}"));
    assert!(push.contains("dhcp-option DNS 10.8.0.1"), "{push}");
    assert!(push.contains("dhcp-option DOMAIN erebus.test"), "{push}");
    assert!(push.contains("ifconfig 10.8.0.2 255.255.255.0"), "{push}");
    let server_log = std::fs::read_to_string(server.server_log()).expect("server log");
    let expected = match server.profile() {
        ServerProfile::TlsAuthUserPass => {
            assert!(push.contains("compress stub-v2"), "{push}");
            "Data Channel: cipher 'CHACHA20-POLY1305', peer-id: 0, compression: 'stubv2'"
        }
        ServerProfile::TlsAuthUserPassLzo => {
            assert!(push.contains("comp-lzo no"), "{push}");
            "Data Channel: cipher 'CHACHA20-POLY1305', peer-id: 0, compression: 'stub'"
        }
        _ => "Data Channel: cipher 'AES-256-GCM'",
    };
    // The client logs its data channel at once (the server a while later).
    assert!(
        client_log.contains(expected),
        "{expected} not in the client log"
    );
    if server.profile().uses_username_password() {
        assert!(
            server_log.contains(&format!(
                "verify-user.sh: accepted user '{}'",
                netns::AUTH_USERNAME
            )),
            "the server log lacks the accepted user"
        );
    } else {
        assert!(
            server_log.contains(&format!(
                "[{}] Peer Connection Initiated",
                netns::CLIENT_CERT_NAME
            )),
            "the server log lacks the client certificate's name"
        );
    }
    let iv_proto = server
        .last_client_iv_proto()
        .expect("IV_PROTO in the server log");
    let sent_push = server
        .last_push_reply()
        .expect("the server log shows the PUSH_REPLY it sent");
    assert!(sent_push.contains("protocol-flags "), "{sent_push}");
    if server.profile() == ServerProfile::TlsLegacyPrf {
        // The stock client announced TLS_KEY_EXPORT (990); the server read it without the bit
        // (982), as a 2.5 server would, and so chose the PRF: no tls-ekm in protocol-flags.
        assert_eq!(server.iv_proto_rewrites(), vec![(990, 982)]);
        assert_eq!(iv_proto, 982, "IV_PROTO={iv_proto}");
        assert!(!sent_push.contains("tls-ekm"), "{sent_push}");
        assert!(!push.contains("tls-ekm"), "{push}");
    } else {
        // The stock client announces TLS_KEY_EXPORT, so the session uses EKM.
        assert_ne!(iv_proto & 8, 0, "IV_PROTO={iv_proto}");
        assert!(sent_push.contains("tls-ekm"), "{sent_push}");
        assert!(push.contains("tls-ekm"), "{push}");
    }
}

#[test]
fn tls_crypt_over_udp() {
    prove(ServerProfile::TlsCrypt, Transport::Udp);
}

#[test]
fn tls_crypt_over_tcp() {
    prove(ServerProfile::TlsCrypt, Transport::Tcp);
}

#[test]
fn tls_auth_userpass_over_udp() {
    prove(ServerProfile::TlsAuthUserPass, Transport::Udp);
}

#[test]
fn tls_auth_userpass_lzo_over_tcp() {
    prove(ServerProfile::TlsAuthUserPassLzo, Transport::Tcp);
}

/// Polls `path` until it contains `needle`; false after `timeout`.
fn wait_for_log(path: &Path, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if std::fs::read(path).is_ok_and(|bytes| String::from_utf8_lossy(&bytes).contains(needle)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A stock client that must not get a tunnel: waits for each of `server_needles` in the
/// server log and `client_needles` in the client's, then checks that the client namespace has
/// no tunnel.
fn expect_refused(
    server: &OpenVpnServer,
    client: netns::NsProcess<'_>,
    server_needles: &[&str],
    client_needles: &[&str],
) {
    let timeout = Duration::from_secs(20);
    for needle in server_needles {
        assert!(
            wait_for_log(&server.server_log(), needle, timeout),
            "`{needle}` not in the server log:\n{}\n--- client ---\n{}",
            server.server_log_tail(40),
            client.log_tail(40)
        );
    }
    for needle in client_needles {
        assert!(
            wait_for_log(client.log_path(), needle, timeout),
            "`{needle}` not in the client log:\n{}\n--- server ---\n{}",
            client.log_tail(40),
            server.server_log_tail(40)
        );
    }
    let client_log = std::fs::read_to_string(client.log_path()).expect("client log");
    assert!(
        !client_log.contains("Initialization Sequence Completed"),
        "the refused client completed:\n{client_log}"
    );
    assert!(
        !server
            .ping_from_client(SERVER_TUNNEL_ADDR, 1, Duration::from_millis(200))
            .expect("ping runs"),
        "10.8.0.1 answered a refused client"
    );
    client.stop(Duration::from_secs(3));
}

/// `reneg-sec` on the server: the session renegotiates (new data-channel keys) and the tunnel
/// keeps working.
#[test]
fn tls_crypt_renegotiates_with_reneg_sec() {
    if !netns::should_run_interop("harness_selftest tls_crypt_renegotiates_with_reneg_sec") {
        return;
    }
    let options = ServerOptions::default().with_reneg_sec(2);
    let server = OpenVpnServer::start_with(ServerProfile::TlsCrypt, Transport::Udp, &options)
        .expect("harness server starts");
    let client = server
        .start_stock_client("stock-client.log")
        .expect("client");
    server
        .wait_for_client_tun(Duration::from_secs(15))
        .unwrap_or_else(|error| panic!("{error}\n{}", client.log_tail(30)));
    assert!(
        server
            .ping_from_client(SERVER_TUNNEL_ADDR, 20, Duration::from_millis(500))
            .expect("ping runs")
    );
    let keys_installed = |log: &Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("Incoming Data Channel: Cipher 'AES-256-GCM' initialized")
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while keys_installed(&server.server_log()) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        keys_installed(&server.server_log()) >= 2,
        "no renegotiation within 15 s:\n{}",
        server.server_log_tail(40)
    );
    // The client installed the new keys too.
    assert!(
        keys_installed(client.log_path()) >= 2,
        "{}",
        client.log_tail(40)
    );
    assert!(
        server
            .ping_from_client(SERVER_TUNNEL_ADDR, 10, Duration::from_millis(500))
            .expect("ping runs"),
        "no ping after the renegotiation"
    );
    let page = curl(&server, &[&server.http_url()]);
    assert!(page.stdout_text().contains(HTTP_MARKER), "{page}");
}

#[test]
fn tls_auth_wrong_password_gets_auth_failed() {
    if !netns::should_run_interop("harness_selftest tls_auth_wrong_password_gets_auth_failed") {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::TlsAuthUserPass, Transport::Udp)
        .expect("harness server starts");
    let wrong = server
        .wrong_credentials_path()
        .to_string_lossy()
        .into_owned();
    let client = server
        .start_stock_client_with(
            "wrong-password.log",
            &server.client_profile_path(),
            &["--auth-user-pass", &wrong],
        )
        .expect("stock client starts");
    expect_refused(
        &server,
        client,
        &[
            &format!("verify-user.sh: REJECTED user '{}'", netns::AUTH_USERNAME),
            "'AUTH_FAILED'",
        ],
        &["AUTH: Received control message: AUTH_FAILED"],
    );

    // The same server still admits the right password afterwards.
    let client = server
        .start_stock_client("right-password.log")
        .expect("client");
    server
        .wait_for_client_tun(Duration::from_secs(15))
        .unwrap_or_else(|error| panic!("{error}\n{}", client.log_tail(30)));
    assert!(
        server
            .ping_from_client(SERVER_TUNNEL_ADDR, 20, Duration::from_millis(500))
            .expect("ping runs")
    );
}

#[test]
fn tls_crypt_wrong_ca_fails_verification() {
    if !netns::should_run_interop("harness_selftest tls_crypt_wrong_ca_fails_verification") {
        return;
    }
    let server =
        OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).expect("harness server");
    let profile = server
        .client_profile_with_wrong_ca()
        .expect("a TLS profile has a CA");
    assert_ne!(profile, server.client_profile());
    let path = server
        .write_client_file("wrong-ca.ovpn", &profile)
        .expect("profile written");
    let client = server
        .start_stock_client_with("wrong-ca.log", &path, &[])
        .expect("stock client starts");
    // The server logs nothing at verb 4: the client aborts the handshake.
    expect_refused(
        &server,
        client,
        &[],
        &[
            "VERIFY ERROR: depth=1, error=self-signed certificate in certificate chain",
            "TLS Error: TLS handshake failed",
        ],
    );
}

#[test]
fn tls_crypt_wrong_key_is_dropped() {
    if !netns::should_run_interop("harness_selftest tls_crypt_wrong_key_is_dropped") {
        return;
    }
    let server =
        OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).expect("harness server");
    let profile = server
        .client_profile_with_wrong_key()
        .expect("tls-crypt has a key");
    let path = server
        .write_client_file("wrong-key.ovpn", &profile)
        .expect("profile written");
    let client = server
        .start_stock_client_with("wrong-key.log", &path, &[])
        .expect("stock client starts");
    // The client only notices after hand-window (60 s); the server drops every packet.
    expect_refused(
        &server,
        client,
        &["tls-crypt unwrap error: packet authentication failed"],
        &[],
    );
}

/// The legacy-PRF server admits the stock 2.6 client and, not seeing its TLS_KEY_EXPORT bit,
/// keys the session with the OpenVPN PRF: the whole proof runs over it (ping, HTTP, HTTPS, DNS,
/// a 1 MiB download) and `check_tls_session` checks the rewrite and the missing `tls-ekm`.
#[test]
fn legacy_prf_server_gives_the_stock_client_the_prf() {
    prove(ServerProfile::TlsLegacyPrf, Transport::Udp);
}

#[test]
fn plaintext_over_udp() {
    prove(ServerProfile::Plaintext, Transport::Udp);
}

#[test]
fn plaintext_over_tcp() {
    prove(ServerProfile::Plaintext, Transport::Tcp);
}

#[test]
fn static_key_over_udp() {
    prove(ServerProfile::StaticKey, Transport::Udp);
}

#[test]
fn static_key_over_tcp() {
    prove(ServerProfile::StaticKey, Transport::Tcp);
}

/// The HTTP server's features, through a static-key tunnel: /echo, HEAD, keep-alive, uploads
/// with Content-Length and chunked bodies, chunked /bytes, 404.
#[test]
fn http_server_features_through_the_tunnel() {
    if !netns::should_run_interop("harness_selftest http_server_features_through_the_tunnel") {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::StaticKey, Transport::Udp)
        .expect("harness server starts");
    let footprint = Footprint::of(&server);
    let client = server
        .start_stock_client("stock-client.log")
        .expect("stock client starts");
    server
        .wait_for_client_tun(Duration::from_secs(15))
        .expect("client tun");
    assert!(
        server
            .ping_from_client(SERVER_TUNNEL_ADDR, 30, Duration::from_millis(500))
            .expect("ping runs"),
        "no ping reply through the tunnel\n{}",
        client.log_tail(30)
    );
    let base = server.http_url();

    let echo = curl(
        &server,
        &["-H", "X-Probe: harness-42", &format!("{base}echo")],
    );
    assert!(echo.success(), "{echo}");
    let text = echo.stdout_text();
    assert!(text.starts_with("GET /echo HTTP/1.1\r\n"), "{text}");
    assert!(text.contains("X-Probe: harness-42"), "{text}");

    // HEAD: headers only, with the length the GET would have.
    let head = curl(&server, &["-I", &format!("{base}bytes/12345")]);
    assert!(head.success(), "{head}");
    let headers = head.stdout_text();
    assert!(headers.starts_with("HTTP/1.1 200"), "{headers}");
    assert!(headers.contains("Content-Length: 12345"), "{headers}");
    assert!(
        headers.contains(&format!("X-Erebus-Peer: {}:", netns::CLIENT_TUNNEL_ADDR)),
        "{headers}"
    );

    // Keep-alive: two requests in one curl run share one connection.
    let twice = curl(
        &server,
        &["-v", "-o", "/dev/null", "-o", "/dev/null", &base, &base],
    );
    assert!(twice.success(), "{twice}");
    assert!(
        twice.stderr_text().contains("Re-using existing connection"),
        "{twice}"
    );

    // Uploads: 300 000 pattern bytes, once with Content-Length, once chunked.
    let body = netns::pattern_bytes(300_000);
    let body_path = server.instance_dir().join("upload.bin");
    std::fs::write(&body_path, &body).expect("write upload body");
    let expected = format!(
        "bytes={} sha256={}\n",
        body.len(),
        netns::hex(&netns::sha256(&body))
    );
    let data = format!("@{}", body_path.display());
    let upload_url = format!("{base}upload");
    let sized = curl(&server, &["--data-binary", &data, &upload_url]);
    assert_eq!(sized.stdout_text(), expected, "{sized}");
    let chunked = curl(
        &server,
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &data,
            &upload_url,
        ],
    );
    assert_eq!(chunked.stdout_text(), expected, "{chunked}");

    // Chunked download of the pattern stream, decoded by curl (-i: headers, then the body).
    let streamed = curl(&server, &["-i", &format!("{base}bytes/200000?chunked=1")]);
    assert!(streamed.success(), "{streamed}");
    let split = streamed
        .stdout
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("headers end");
    let streamed_headers = String::from_utf8_lossy(&streamed.stdout[..split]);
    assert!(
        streamed_headers.contains("Transfer-Encoding: chunked"),
        "{streamed_headers}"
    );
    assert!(
        !streamed_headers.contains("Content-Length"),
        "{streamed_headers}"
    );
    assert_eq!(streamed.stdout[split + 4..], netns::pattern_bytes(200_000));

    let missing = curl(
        &server,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{base}nope"),
        ],
    );
    assert_eq!(missing.stdout_text(), "404");

    drop(client);
    drop(server);
    footprint.assert_gone();
}

/// A server that cannot start reports what failed with its log, and removes everything.
#[test]
fn failed_start_names_the_cause_and_cleans_up() {
    if !netns::should_run_interop("harness_selftest failed_start_names_the_cause_and_cleans_up") {
        return;
    }
    let options = ServerOptions {
        extra_openvpn_args: vec!["--cipher".into(), "NO-SUCH-CIPHER-42".into()],
        startup_timeout: Duration::from_secs(10),
        ..ServerOptions::default()
    };
    let error = OpenVpnServer::start_with(ServerProfile::StaticKey, Transport::Udp, &options)
        .expect_err("a server with an unknown cipher must not start");
    let message = error.to_string();
    eprintln!("expected failure, reported as:\n{message}");
    assert!(message.contains("openvpn server"), "{message}");
    assert!(message.contains("NO-SUCH-CIPHER-42"), "{message}");

    // The message names the instance directory; its namespaces and the directory are gone.
    let prefix = format!("{}{}n", netns::NAME_PREFIX, std::process::id());
    let start = message.find(&prefix).expect("message names the instance");
    let digits: String = message[start + prefix.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let base = format!("{prefix}{digits}");
    assert!(!namespace_exists(&format!("{base}s")));
    assert!(!namespace_exists(&format!("{base}c")));
    assert!(!std::env::temp_dir().join(&base).exists());
}

/// Two servers at once use the same addresses in different namespaces without interfering.
#[test]
fn parallel_instances_are_isolated() {
    if !netns::should_run_interop("harness_selftest parallel_instances_are_isolated") {
        return;
    }
    let first = OpenVpnServer::start(ServerProfile::Plaintext, Transport::Udp).expect("first");
    let second = OpenVpnServer::start(ServerProfile::Plaintext, Transport::Udp).expect("second");
    assert_ne!(first.client_netns(), second.client_netns());
    assert_ne!(first.server_netns(), second.server_netns());
    let client = first
        .start_stock_client("stock-client.log")
        .expect("client");
    first
        .wait_for_client_tun(Duration::from_secs(15))
        .expect("client tun");
    assert!(
        first
            .ping_from_client(SERVER_TUNNEL_ADDR, 30, Duration::from_millis(500))
            .expect("ping runs")
    );
    // The second instance's client namespace still has no tunnel.
    assert!(
        !second
            .ping_from_client(Ipv4Addr::new(10, 8, 0, 1), 1, Duration::from_millis(200))
            .expect("ping runs")
    );
    drop(client);
}

/// A p2p server keeps 10.8.0.1 and serves a second client session after the first one left
/// (persist-tun, explicit-exit-notify over UDP, the TCP listener re-armed), as tests that
/// reconnect erebus need.
fn second_session(transport: Transport) {
    let test = format!("harness_selftest second session over {transport}");
    if !netns::should_run_interop(&test) {
        return;
    }
    let server =
        OpenVpnServer::start(ServerProfile::StaticKey, transport).expect("harness server starts");
    let footprint = Footprint::of(&server);
    for session in 1..=2 {
        let started = Instant::now();
        let client = server
            .start_stock_client(&format!("stock-client-{session}.log"))
            .expect("stock client starts");
        server
            .wait_for_client_tun(Duration::from_secs(15))
            .expect("client tun");
        assert!(
            server
                .ping_from_client(SERVER_TUNNEL_ADDR, 40, Duration::from_millis(500))
                .expect("ping runs"),
            "session {session}: no ping reply\n--- client ---\n{}\n--- server ---\n{}",
            client.log_tail(30),
            server.server_log_tail(30)
        );
        let page = curl(&server, &[&server.http_url()]);
        assert!(page.stdout_text().contains(HTTP_MARKER), "{page}");
        eprintln!("{test}: session {session} up in {:?}", started.elapsed());
        client.stop(Duration::from_secs(5));
    }
    drop(server);
    footprint.assert_gone();
}

#[test]
fn second_session_over_udp() {
    second_session(Transport::Udp);
}

#[test]
fn second_session_over_tcp() {
    second_session(Transport::Tcp);
}

/// Polls a page through the tunnel (curl as nobody, 3 s per attempt) until it has the marker;
/// the time it took, or `None` after `timeout`.
fn page_within(server: &OpenVpnServer, timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        let page = curl(server, &["--max-time", "3", &server.http_url()]);
        if page.success() && page.stdout_text().contains(HTTP_MARKER) {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// `stop_openvpn` and `start_openvpn_again` under a connected stock client: stopping ends the
/// openvpn process (only it) and takes 10.8.0.1 away; after the restart, with the same keys,
/// the stock client reconnects by itself, and the HTTP server, the HTTPS server and dnsmasq,
/// which kept running bound to 10.8.0.1, answer through the tunnel again.
fn restart_under_stock_client(transport: Transport, how: ServerStop, options: &ServerOptions) {
    let test = format!("harness_selftest openvpn {how:?} and restart over {transport}");
    if !netns::should_run_interop(&test) {
        return;
    }
    let started = Instant::now();
    let server = OpenVpnServer::start_with(ServerProfile::TlsCrypt, transport, options)
        .expect("harness server starts");
    let first_pids = server.pids();
    assert_eq!(
        first_pids.len(),
        3,
        "openvpn, dnsmasq, httpd: {first_pids:?}"
    );
    let (openvpn_pid, helper_pids) = (first_pids[0], &first_pids[1..]);
    assert!(server.openvpn_running());
    assert_eq!(server.openvpn_starts(), 1);
    assert!(
        server.start_openvpn_again().is_err(),
        "started a second openvpn while the first runs"
    );
    assert_eq!(server.openvpn_starts(), 1);

    let client = server
        .start_stock_client("stock-client.log")
        .expect("stock client starts");
    server
        .wait_for_client_tun(Duration::from_secs(15))
        .unwrap_or_else(|error| panic!("{error}\n{}", client.log_tail(30)));
    assert!(
        page_within(&server, Duration::from_secs(20)).is_some(),
        "no page before the stop\n--- client ---\n{}\n--- server ---\n{}",
        client.log_tail(30),
        server.server_log_tail(30)
    );

    let stopping = Instant::now();
    server.stop_openvpn(how).expect("openvpn stops");
    let stop_time = stopping.elapsed();
    assert!(!server.openvpn_running());
    assert!(
        !Path::new(&format!("/proc/{openvpn_pid}")).exists(),
        "openvpn {openvpn_pid} still exists"
    );
    assert_eq!(server.pids(), helper_pids, "the helpers were touched");
    for pid in helper_pids {
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "helper {pid} died"
        );
    }
    let old_log = std::fs::read_to_string(server.server_log()).expect("server log");
    if how == ServerStop::Terminate && transport == Transport::Udp {
        // explicit-exit-notify: the server told its client to restart before it exited.
        assert!(
            wait_for_log(
                client.log_path(),
                "SIGUSR1[soft,server-pushed-connection-reset]",
                Duration::from_secs(5)
            ),
            "the stock client was not told to restart:\n{}",
            client.log_tail(30)
        );
    }
    let down = curl(&server, &["--max-time", "2", &server.http_url()]);
    assert!(
        !down.success(),
        "HTTP answered with openvpn stopped: {down}"
    );
    server
        .stop_openvpn(how)
        .expect("stopping twice does nothing");

    let restarting = Instant::now();
    server.start_openvpn_again().expect("openvpn starts again");
    let restart_time = restarting.elapsed();
    assert!(server.openvpn_running());
    assert_eq!(server.openvpn_starts(), 2);
    let new_pids = server.pids();
    assert_eq!(new_pids.len(), 3);
    assert_ne!(new_pids[0], openvpn_pid);
    assert_eq!(&new_pids[1..], helper_pids);
    let kept = server.instance_dir().join("server-run1.log");
    assert_eq!(
        std::fs::read_to_string(&kept).expect("first run's log kept"),
        old_log
    );

    let reconnect = page_within(&server, Duration::from_secs(60)).unwrap_or_else(|| {
        panic!(
            "no page after the restart\n--- client ---\n{}\n--- server ---\n{}\n--- httpd ---\n{}",
            client.log_tail(40),
            server.server_log_tail(40),
            std::fs::read_to_string(server.httpd_log()).unwrap_or_default()
        )
    });
    check_https(&server);
    assert_eq!(
        server
            .resolve_from_client(RunAs::Nobody, netns::DNS_NAME, Duration::from_secs(3))
            .expect("dns probe runs"),
        vec![SERVER_TUNNEL_ADDR],
        "dnsmasq does not answer after the restart"
    );
    let url = format!("{}bytes/{ONE_MIB}", server.http_url());
    let download = curl(&server, &[&url]);
    assert!(download.success(), "download failed: {download}");
    assert_eq!(
        netns::sha256(&download.stdout),
        netns::pattern_sha256(ONE_MIB as u64)
    );
    assert!(
        std::fs::read_to_string(server.server_log())
            .expect("new server log")
            .contains("Peer Connection Initiated"),
        "{}",
        server.server_log_tail(30)
    );
    client.stop(Duration::from_secs(5));
    let footprint = Footprint::of(&server);
    drop(server);
    footprint.assert_gone();
    eprintln!(
        "{test}: stop {stop_time:?}, start again {restart_time:?}, page again after \
         {reconnect:?}, total {:?}",
        started.elapsed()
    );
}

#[test]
fn openvpn_terminated_and_restarted_over_udp() {
    restart_under_stock_client(
        Transport::Udp,
        ServerStop::Terminate,
        &ServerOptions::default(),
    );
}

#[test]
fn openvpn_killed_and_restarted_over_udp() {
    // Nothing tells the client: it notices by ping-restart.
    let options = ServerOptions::default().with_openvpn_args(["--keepalive", "1", "4"]);
    restart_under_stock_client(Transport::Udp, ServerStop::Kill, &options);
}

#[test]
fn openvpn_terminated_and_restarted_over_tcp() {
    restart_under_stock_client(
        Transport::Tcp,
        ServerStop::Terminate,
        &ServerOptions::default(),
    );
}

/// Not a test: keeps one server running for manual work, e.g.
/// `EREBUS_HARNESS_PROFILE=static-key EREBUS_HARNESS_TRANSPORT=tcp EREBUS_HOLD_SECS=600 cargo
/// test -p erebus-testvectors --test harness_selftest -- --ignored hold_server --nocapture`.
/// The profile is any `ServerProfile::name()` (`tls-crypt`, `tls-auth-userpass`, ...); for the
/// username/password profiles add `--auth-user-pass credentials.txt` to the stock client.
#[test]
#[ignore = "manual: holds a harness server open for EREBUS_HOLD_SECS seconds"]
fn hold_server() {
    if !netns::should_run_interop("harness_selftest hold_server") {
        return;
    }
    let profile = std::env::var("EREBUS_HARNESS_PROFILE")
        .ok()
        .and_then(|name| ServerProfile::from_name(&name))
        .unwrap_or(ServerProfile::Plaintext);
    let transport = match std::env::var("EREBUS_HARNESS_TRANSPORT").as_deref() {
        Ok("tcp") => Transport::Tcp,
        _ => Transport::Udp,
    };
    let seconds: u64 = std::env::var("EREBUS_HOLD_SECS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(300);
    let server = OpenVpnServer::start(profile, transport).expect("harness server starts");
    eprintln!(
        "{profile} over {transport} for {seconds} s\n  client netns: {}\n  server: {}\n  \
         client profile: {}\n  http: {}\n  dns: {}\n  logs: {}\n  try: ip netns exec {} openvpn \
         --cd {} --config client.ovpn",
        server.client_netns(),
        server.server_addr(),
        server.client_profile_path().display(),
        server.http_url(),
        server.dns_server(),
        server.instance_dir().display(),
        server.client_netns(),
        server.instance_dir().display(),
    );
    std::thread::sleep(Duration::from_secs(seconds));
}

/// What an erebus test does: start a long-running unprivileged process in the client
/// namespace, wait for its local listener, talk to it over the namespace's loopback, stop it.
#[test]
fn unprivileged_listener_in_the_client_namespace() {
    if !netns::should_run_interop("harness_selftest unprivileged_listener_in_the_client_namespace")
    {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::Plaintext, Transport::Udp)
        .expect("harness server starts");
    let dir = server.instance_dir().to_string_lossy().into_owned();
    let python = netns::find_program("python3").expect("python3");
    let python = python.to_string_lossy();
    let mut listener = server
        .spawn_in_client(
            RunAs::Nobody,
            &[
                &python,
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "--directory",
                &dir,
                "18080",
            ],
            "listener.log",
        )
        .expect("listener starts");
    listener
        .wait_until_listening(18080, Duration::from_secs(10))
        .expect("listener comes up");
    let status = std::fs::read_to_string(format!("/proc/{}/status", listener.pid()))
        .expect("listener status");
    assert!(
        status
            .lines()
            .any(|line| line.split_whitespace().collect::<Vec<_>>()
                == ["Uid:", "65534", "65534", "65534", "65534"]),
        "listener does not run as nobody:\n{status}"
    );
    let page = curl(&server, &["http://127.0.0.1:18080/client.ovpn"]);
    assert_eq!(page.stdout_text(), server.client_profile(), "{page}");
    assert!(listener.stop(Duration::from_secs(3)).is_some());
}
