//! erebus in TLS client mode against a real OpenVPN 2.6 server in network namespaces the test
//! creates: the `erebus` binary runs unprivileged (as nobody) in the client namespace with the
//! harness's TLS profiles, and curl reaches the HTTP server behind the tunnel through erebus's
//! HTTP proxy. Failures (wrong password, wrong CA, wrong tls-crypt key) must end erebus with
//! the documented exit status and a message naming the cause.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::time::Duration;

use erebus_testvectors::netns::{
    self, HTTP_MARKER, OpenVpnServer, RunAs, ServerProfile, Transport,
};

const EREBUS: &str = env!("CARGO_BIN_EXE_erebus");

fn erebus_log(server: &OpenVpnServer) -> String {
    std::fs::read_to_string(server.instance_dir().join("erebus.log")).unwrap_or_default()
}

/// Runs curl as nobody in the client namespace and returns its stdout.
fn curl(server: &OpenVpnServer, args: &[&str]) -> Vec<u8> {
    let curl = netns::find_program("curl").expect("curl is installed");
    let mut argv = vec![curl.to_str().unwrap(), "-sS", "--fail", "--max-time", "60"];
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

/// The arguments of an erebus run with `config` and, when given, a credentials file.
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

/// A whole session: up, a page and 4 MiB through the HTTP proxy, then SIGTERM and the exit
/// notification.
fn session(profile: ServerProfile, transport: Transport, runtime: &str) {
    let name = format!(
        "erebus_tls_{}_{}_{runtime}",
        profile.name(),
        transport.name()
    );
    if !netns::should_run_interop(&name) {
        return;
    }
    let server = OpenVpnServer::start(profile, transport).unwrap();
    let config = server.client_profile_path();
    let credentials = server.credentials_path();
    let credentials = profile
        .uses_username_password()
        .then(|| credentials.to_str().unwrap());
    let argv = erebus_args(config.to_str().unwrap(), credentials, runtime);
    let mut erebus = server
        .spawn_in_client(RunAs::Nobody, &argv, "erebus.log")
        .unwrap();
    erebus
        .wait_until_listening(8080, Duration::from_secs(10))
        .unwrap();
    let up = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        erebus_log(&server).contains("erebus: up:")
    });
    assert!(
        up,
        "erebus did not come up:\n{}\n--- server ---\n{}",
        erebus_log(&server),
        server.server_log_tail(40)
    );

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
            std::fs::read_to_string(server.server_log())
                .is_ok_and(|l| l.contains("exit message received"))
        });
        assert!(
            seen,
            "the server did not see the exit notification:\n{}",
            server.server_log_tail(20)
        );
    }
}

/// Runs erebus until it exits by itself; returns its exit code and log.
fn failing_run(
    server: &OpenVpnServer,
    config: &str,
    credentials: Option<&str>,
    within: Duration,
) -> (i32, String) {
    let argv = erebus_args(config, credentials, "mio");
    let mut erebus = server
        .spawn_in_client(RunAs::Nobody, &argv, "erebus.log")
        .unwrap();
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if let Some(status) = erebus.exit_status() {
            return (status.code().unwrap_or(-1), erebus_log(server));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "erebus did not give up within {within:?}:\n{}",
        erebus_log(server)
    );
}

#[test]
fn tls_crypt_over_udp_with_mio() {
    session(ServerProfile::TlsCrypt, Transport::Udp, "mio");
}

#[test]
fn tls_crypt_over_tcp_with_smol() {
    session(ServerProfile::TlsCrypt, Transport::Tcp, "smol");
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
fn tls_wrong_password_is_an_authentication_failure() {
    if !netns::should_run_interop("tls_wrong_password_is_an_authentication_failure") {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::TlsAuthUserPass, Transport::Udp).unwrap();
    let config = server.client_profile_path();
    let wrong = server.wrong_credentials_path();
    let (code, log) = failing_run(
        &server,
        config.to_str().unwrap(),
        Some(wrong.to_str().unwrap()),
        Duration::from_secs(30),
    );
    assert_eq!(code, 3, "{log}");
    assert!(log.contains("AUTH_FAILED"), "{log}");
    assert!(
        !log.contains(netns::WRONG_AUTH_PASSWORD),
        "the password leaked into the log"
    );
}

#[test]
fn tls_wrong_ca_is_refused() {
    if !netns::should_run_interop("tls_wrong_ca_is_refused") {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).unwrap();
    let profile = server.client_profile_with_wrong_ca().unwrap();
    let config = server.write_client_file("wrong-ca.ovpn", &profile).unwrap();
    let (code, log) = failing_run(
        &server,
        config.to_str().unwrap(),
        None,
        Duration::from_secs(30),
    );
    // The certificate check is classed as an authentication failure (TlsError::fault).
    assert_eq!(code, 3, "{log}");
    assert!(log.contains("not issued by the CA"), "{log}");
}

#[test]
fn tls_wrong_tls_crypt_key_gives_up_after_hand_window() {
    if !netns::should_run_interop("tls_wrong_tls_crypt_key_gives_up_after_hand_window") {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).unwrap();
    let profile = server.client_profile_with_wrong_key().unwrap();
    let profile = format!("{profile}\nhand-window 8\n");
    let config = server
        .write_client_file("wrong-key.ovpn", &profile)
        .unwrap();
    let (code, log) = failing_run(
        &server,
        config.to_str().unwrap(),
        None,
        Duration::from_secs(30),
    );
    assert_eq!(code, 4, "{log}");
    assert!(log.contains("hand-window"), "{log}");
    let server_log = std::fs::read_to_string(server.server_log()).unwrap();
    assert!(
        server_log.contains("tls-crypt unwrap error"),
        "{server_log}"
    );
}

#[test]
fn tls_legacy_prf_server_refuses_an_ekm_client() {
    if !netns::should_run_interop("tls_legacy_prf_server_refuses_an_ekm_client") {
        return;
    }
    // This server only admits clients that derive keys with the PRF; erebus announces
    // TLS-EKM (IV_PROTO bit 3), so the server answers AUTH_FAILED.
    let server = OpenVpnServer::start(ServerProfile::TlsLegacyPrf, Transport::Udp).unwrap();
    let config = server.client_profile_path();
    let (code, log) = failing_run(
        &server,
        config.to_str().unwrap(),
        None,
        Duration::from_secs(30),
    );
    assert_eq!(code, 3, "{log}");
    assert!(log.contains("AUTH_FAILED"), "{log}");
    assert_eq!(server.last_client_iv_proto(), Some(142));
}

/// A slow download across several renegotiations, started by the server (`reneg-sec` on the
/// server) or by erebus (`reneg-sec` in the profile): every byte arrives intact.
fn renegotiation(server_starts: bool, name: &str) {
    if !netns::should_run_interop(name) {
        return;
    }
    let options = if server_starts {
        netns::ServerOptions::default().with_reneg_sec(8)
    } else {
        netns::ServerOptions::default()
    };
    let server =
        OpenVpnServer::start_with(ServerProfile::TlsCrypt, Transport::Udp, &options).unwrap();
    let config = if server_starts {
        server.client_profile_path()
    } else {
        let profile = format!("{}\nreneg-sec 8\n", server.client_profile());
        server.write_client_file("reneg.ovpn", &profile).unwrap()
    };
    let argv = erebus_args(config.to_str().unwrap(), None, "mio");
    let mut erebus = server
        .spawn_in_client(RunAs::Nobody, &argv, "erebus.log")
        .unwrap();
    erebus
        .wait_until_listening(8080, Duration::from_secs(10))
        .unwrap();
    let up = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        erebus_log(&server).contains("erebus: up:")
    });
    assert!(up, "erebus did not come up:\n{}", erebus_log(&server));
    // Downloads back to back for 25 s: three renegotiations happen during the transfers.
    const DOWN: usize = 1 << 20;
    let url = format!("{}bytes/{DOWN}", server.http_url());
    let start = std::time::Instant::now();
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
    let log = std::fs::read_to_string(server.server_log()).unwrap();
    let handshakes = log.matches("Control Channel: TLS").count();
    assert!(
        handshakes >= 3,
        "expected renegotiations, saw {handshakes} TLS handshakes:\n{}",
        server.server_log_tail(60)
    );
    assert!(!log.contains("TLS Error"), "{}", server.server_log_tail(60));
    let status = erebus.stop(Duration::from_secs(10)).expect("erebus exited");
    assert!(status.success(), "{}", erebus_log(&server));
}

#[test]
fn tls_renegotiation_started_by_the_server_keeps_the_download_intact() {
    renegotiation(
        true,
        "tls_renegotiation_started_by_the_server_keeps_the_download_intact",
    );
}

#[test]
fn tls_renegotiation_started_by_erebus_keeps_the_download_intact() {
    renegotiation(
        false,
        "tls_renegotiation_started_by_erebus_keeps_the_download_intact",
    );
}
