//! A real session, recorded and replayed byte for byte: the `erebus` binary runs as nobody
//! against a real OpenVPN 2.6 server in network namespaces the test creates, with
//! `--record DIR`; curl fetches a page and 1 MiB through its HTTP proxy, a name through its
//! SOCKS5 proxy and a page through a port forward; erebus is stopped with SIGTERM. Then the test
//! replays the recording in its own process with `erebus::replay` and requires every transmit
//! to equal the recorded packet at the same index, and every recorded inbound packet to be a
//! journal input. A recording with one outbound byte changed must fail at that packet and
//! byte, so the comparison is known to compare. Every session runs under both drivers.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use erebus::replay::{ReplayError, ReplayOptions, ReplayReport, replay_dir, replay_dir_with};
use erebus::session::Settings;
use erebus_proxy::{FrontEnd, Host};
use erebus_sansio::tunnel::Fault;
use erebus_testvectors::netns::{
    self, HTTP_MARKER, OpenVpnServer, RunAs, ServerProfile, Transport,
};

mod replay_support;
use replay_support::{RECORDING_FILES, count_packets, nobody_ids, recording_dir, tampered_copy};

const EREBUS: &str = env!("CARGO_BIN_EXE_erebus");

/// The download's size: enough for hundreds of data packets each way.
const DOWNLOAD: usize = 1 << 20;

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
        "curl {args:?} failed: {}\n--- erebus ---\n{}",
        output.stderr_text(),
        erebus_log(server)
    );
    output.stdout
}

fn erebus_log(server: &OpenVpnServer) -> String {
    String::from_utf8_lossy(
        &std::fs::read(server.instance_dir().join("erebus.log")).unwrap_or_default(),
    )
    .into_owned()
}

/// Records a session of `profile` over `transport` under `runtime`, checks what the recording
/// holds, and returns its directory.
fn record(server: &OpenVpnServer, runtime: &str) -> PathBuf {
    let profile = server.profile();
    let dir = recording_dir(server);
    let config = server.client_profile_path();
    let credentials = server.credentials_path();
    let mut argv = vec![
        EREBUS,
        "--config",
        config.to_str().unwrap(),
        "--runtime",
        runtime,
        "--http",
        "127.0.0.1:8080",
        "--socks",
        "127.0.0.1:1080",
        "-L",
        "9090:10.8.0.1:8080",
        "--dns",
        "10.8.0.1",
        "--record",
        dir.to_str().unwrap(),
    ];
    if profile.uses_username_password() {
        argv.extend_from_slice(&["--auth-user-pass", credentials.to_str().unwrap()]);
    }
    let mut erebus = server
        .spawn_in_client(RunAs::Nobody, &argv, "erebus.log")
        .unwrap();
    for port in [8080, 1080, 9090] {
        erebus
            .wait_until_listening(port, Duration::from_secs(10))
            .unwrap();
    }

    let page = curl(server, &["-x", "http://127.0.0.1:8080", &server.http_url()]);
    assert!(String::from_utf8_lossy(&page).contains(HTTP_MARKER));
    let url = format!("{}bytes/{DOWNLOAD}", server.http_url());
    let body = curl(server, &["-x", "http://127.0.0.1:8080", &url]);
    assert_eq!(body.len(), DOWNLOAD);
    assert_eq!(
        netns::sha256(&body),
        netns::pattern_sha256(DOWNLOAD as u64),
        "download corrupted"
    );
    // A name resolved by the DNS server inside the tunnel, and the port forward.
    let page = curl(
        server,
        &[
            "--socks5-hostname",
            "127.0.0.1:1080",
            &server.http_name_url(),
        ],
    );
    assert!(String::from_utf8_lossy(&page).contains(HTTP_MARKER));
    let page = curl(server, &["http://127.0.0.1:9090/"]);
    assert!(String::from_utf8_lossy(&page).contains(HTTP_MARKER));

    let status = erebus.stop(Duration::from_secs(10)).expect("erebus exited");
    assert!(
        status.success(),
        "erebus exited with {status}\n{}",
        erebus_log(server)
    );

    // Nobody wrote the recording; the secret files are private.
    use std::os::unix::fs::MetadataExt;
    let (uid, _) = nobody_ids();
    for name in RECORDING_FILES {
        let meta = std::fs::metadata(dir.join(name)).unwrap();
        assert_eq!(meta.uid(), uid, "{name} is not nobody's");
        assert_eq!(meta.mode() & 0o077, 0, "{name} is readable by others");
    }
    assert_eq!(std::fs::read(dir.join("seed")).unwrap().len(), 32);
    assert_eq!(
        std::fs::read(dir.join("config")).unwrap(),
        std::fs::read(&config).unwrap()
    );
    let settings =
        Settings::parse(&std::fs::read_to_string(dir.join("settings")).unwrap()).unwrap();
    assert_eq!(settings.tunnel_wait, Duration::from_secs(10));
    assert_eq!(
        settings.listeners,
        [
            FrontEnd::Http,
            FrontEnd::Socks5,
            FrontEnd::Forward {
                host: Host::Ip(IpAddr::V4(Ipv4Addr::new(10, 8, 0, 1))),
                port: 8080
            }
        ]
    );
    assert_eq!(
        settings.dns_servers,
        [IpAddr::V4(Ipv4Addr::new(10, 8, 0, 1))]
    );
    assert!(!settings.proxy_auth);
    assert_eq!(settings.auth_user_pass, profile.uses_username_password());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let anchor = settings.wall_clock_at_epoch.as_secs();
    // The anchor is rounded up to the next whole second, so it may be one ahead of `now`.
    assert!(
        anchor <= now + 1 && now + 1 - anchor < 600,
        "wall clock anchor {anchor}, now {now}"
    );
    let text = std::fs::read_to_string(dir.join("settings")).unwrap();
    assert!(
        !text.contains(netns::AUTH_PASSWORD),
        "the password is in the settings"
    );
    dir
}

/// Checks a replay that matched: the whole session, through to the clean stop.
fn check_report(report: &ReplayReport) {
    assert!(report.complete, "{report:?}");
    // The 1 MiB download came in through the transport, and the stack acknowledged it. Over
    // UDP that takes hundreds of transmits; over TCP the driver reads the stream in large
    // chunks and the stack acknowledges each chunk once, so a few dozen. Every one compared.
    assert!(
        report.received_bytes > DOWNLOAD as u64,
        "only {} bytes received: {report:?}",
        report.received_bytes
    );
    assert!(report.transmits > 30, "{report:?}");
    assert!(report.inputs > report.received, "{report:?}");
    let connected = report.connected.as_ref().expect("the tunnel came up");
    assert_eq!(
        connected.ipv4.map(|net| net.addr()),
        Some(IpAddr::V4(netns::CLIENT_TUNNEL_ADDR)),
        "{connected:?}"
    );
    let down = report.down.as_ref().expect("the client stopped");
    assert_eq!(down.fault, Fault::Closed, "{down:?}");
}

fn record_and_replay(profile: ServerProfile, transport: Transport, runtime: &str) {
    let name = format!("replay_{}_{}_{runtime}", profile.name(), transport.name());
    if !netns::should_run_interop(&name) {
        return;
    }
    let server = OpenVpnServer::start(profile, transport).unwrap();
    let dir = record(&server, runtime);
    let options = || ReplayOptions {
        auth_user_pass: profile
            .uses_username_password()
            .then(|| std::fs::read(server.credentials_path()).unwrap().into()),
        proxy_auth: None,
    };
    let report = match replay_dir_with(&dir, options()) {
        Ok(report) => report,
        Err(error) => panic!("{name}: the recording does not replay: {error}"),
    };
    check_report(&report);
    // Every packet of the pcap was compared: each outbound one with a transmit, each inbound
    // one with a journal input.
    let pcap = std::fs::read(dir.join("transport.pcap")).unwrap();
    assert_eq!(
        count_packets(&pcap, server.server_addr()),
        (report.transmits, report.received),
        "{name}: the replay did not cover every packet: {report:?}"
    );
    eprintln!(
        "{name}: replayed {} inputs, {} transmits ({} bytes) equal to the recording, {} \
         inbound packets ({} bytes)",
        report.inputs,
        report.transmits,
        report.transmitted_bytes,
        report.received,
        report.received_bytes
    );

    // The same recording with one byte of the 20th outbound packet changed fails there.
    let tampered = dir.with_file_name("tampered");
    let len = tampered_copy(&dir, &tampered, &[], server.server_addr(), 19);
    match replay_dir_with(&tampered, options()) {
        Err(ReplayError::Diverged {
            index,
            offset,
            recorded,
            replayed,
            ..
        }) => {
            assert_eq!((index, offset), (19, len - 1));
            assert_eq!(recorded.len(), replayed.len());
        }
        other => panic!("a changed recording replayed: {other:?}"),
    }
    if profile.uses_username_password() {
        assert!(matches!(
            replay_dir(&dir),
            Err(ReplayError::SecretNeeded("--auth-user-pass"))
        ));
    }
}

// Each session under both drivers: the recording and the replay must not depend on which
// one fed the machine.

#[test]
fn static_key_over_udp_with_mio_replays() {
    record_and_replay(ServerProfile::StaticKey, Transport::Udp, "mio");
}

#[test]
fn static_key_over_udp_with_smol_replays() {
    record_and_replay(ServerProfile::StaticKey, Transport::Udp, "smol");
}

#[test]
fn plaintext_over_tcp_with_mio_replays() {
    record_and_replay(ServerProfile::Plaintext, Transport::Tcp, "mio");
}

#[test]
fn plaintext_over_tcp_with_smol_replays() {
    record_and_replay(ServerProfile::Plaintext, Transport::Tcp, "smol");
}

/// TLS without a client certificate: every random draw of the handshake comes from the seeded
/// provider, so the whole session replays, password included (given back to the replay).
#[test]
fn tls_with_username_and_password_over_udp_with_mio_replays() {
    record_and_replay(ServerProfile::TlsAuthUserPass, Transport::Udp, "mio");
}

#[test]
fn tls_with_username_and_password_over_udp_with_smol_replays() {
    record_and_replay(ServerProfile::TlsAuthUserPass, Transport::Udp, "smol");
}

/// TLS with a client certificate: the client's CertificateVerify signature draws from the
/// seed as well, so this session replays too.
#[test]
fn tls_with_a_client_certificate_over_udp_with_mio_replays() {
    record_and_replay(ServerProfile::TlsCrypt, Transport::Udp, "mio");
}

#[test]
fn tls_with_a_client_certificate_over_udp_with_smol_replays() {
    record_and_replay(ServerProfile::TlsCrypt, Transport::Udp, "smol");
}

#[test]
fn tls_with_a_client_certificate_over_tcp_with_mio_replays() {
    record_and_replay(ServerProfile::TlsCrypt, Transport::Tcp, "mio");
}

#[test]
fn tls_with_a_client_certificate_over_tcp_with_smol_replays() {
    record_and_replay(ServerProfile::TlsCrypt, Transport::Tcp, "smol");
}
