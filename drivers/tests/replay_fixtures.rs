//! The committed recordings in `testvectors/replays/`, replayed byte for byte with no server,
//! no network and no root: every transmit must equal the recorded packet at the same index,
//! every recorded inbound packet must be a journal input, and the replay must cover every
//! packet of the pcap. A copy of each with one outbound byte changed must fail at that packet
//! and byte, so the comparison is known to compare.
//!
//! `record_fixtures` (ignored; `testvectors/replays/record.sh` runs it as root) records them
//! all again against the real OpenVPN 2.6 server of the namespace harness.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::net::{IpAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use erebus::replay::{ReplayError, ReplayOptions, ReplayReport, replay_dir_with};
use erebus::session::Settings;
use erebus_sansio::UnixTime;
use erebus_sansio::tunnel::Fault;
use erebus_testvectors::netns::{
    self, CLIENT_TUNNEL_ADDR, HTTP_MARKER, OPENVPN_PORT, OpenVpnServer, RunAs, SERVER_OUTER_ADDR,
    ServerOptions, ServerProfile, Transport,
};

mod replay_support;
use replay_support::{
    copy_recording, count_packets, payloads, recorded_server, recording_dir, tampered_copy,
};

const EREBUS: &str = env!("CARGO_BIN_EXE_erebus");

/// The `--auth-user-pass` file a fixture keeps beside the recording (the recording itself
/// never keeps a password; the harness's test password is public anyway).
const AUTH_USER_PASS: &str = "auth-user-pass";

/// The size of the download in every harness-recorded fixture.
const DOWNLOAD: usize = 64 << 10;

/// Where the fixtures are.
fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testvectors/replays")
}

/// The OpenVPN server of every harness-recorded fixture.
fn harness_server() -> SocketAddrV4 {
    SocketAddrV4::new(SERVER_OUTER_ADDR, OPENVPN_PORT)
}

/// The secrets a fixture keeps beside its recording.
fn options(dir: &Path) -> ReplayOptions {
    ReplayOptions {
        auth_user_pass: std::fs::read(dir.join(AUTH_USER_PASS)).ok().map(Into::into),
        proxy_auth: None,
    }
}

/// Replays the recording in `dir` and checks that it matched to its end and covered every
/// packet of its pcap (the server is `server`).
fn replay_covering_everything(dir: &Path, server: SocketAddrV4) -> ReplayReport {
    let report = match replay_dir_with(dir, options(dir)) {
        Ok(report) => report,
        Err(error) => panic!("{}: does not replay: {error}", dir.display()),
    };
    assert!(report.complete, "{}: {report:?}", dir.display());
    let pcap = std::fs::read(dir.join("transport.pcap")).unwrap();
    let (outbound, inbound) = count_packets(&pcap, server);
    assert!(
        outbound > 0 && inbound > 0,
        "{}: an empty pcap",
        dir.display()
    );
    assert_eq!(
        (report.transmits, report.received),
        (outbound, inbound),
        "{}: the replay did not cover every packet: {report:?}",
        dir.display()
    );
    report
}

/// Replays the fixture `name` (a directory of `testvectors/replays/`) in full, then a copy
/// with one byte of an outbound packet changed, which must fail at that packet and byte.
/// Returns the report of the full replay.
///
/// This is all a new fixture needs: `replay_fixture("my-session");`.
fn replay_fixture(name: &str) -> ReplayReport {
    let dir = fixtures_dir().join(name);
    let server = recorded_server(&std::fs::read(dir.join("transport.pcap")).unwrap());
    let report = replay_covering_everything(&dir, server);

    // Tamper with a packet in the middle (past the handshake in every fixture here).
    let target = report.transmits / 2;
    let scratch = scratch_dir(&format!("{name}-tampered"));
    let len = tampered_copy(&dir, &scratch, &[AUTH_USER_PASS], server, target);
    match replay_dir_with(&scratch, options(&scratch)) {
        Err(ReplayError::Diverged {
            index,
            offset,
            recorded,
            replayed,
            ..
        }) => {
            assert_eq!((index, offset), (target, len - 1), "{name}");
            assert_eq!(recorded.len(), replayed.len(), "{name}");
        }
        other => panic!("{name}: a changed recording replayed: {other:?}"),
    }
    std::fs::remove_dir_all(&scratch).unwrap();
    report
}

/// A fresh directory for a scratch copy, private to this process.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("erebus-replay-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// What every harness-recorded session went through: the tunnel came up with the harness's
/// address, the download came in, and erebus stopped cleanly.
fn check_harness_session(report: &ReplayReport) {
    let connected = report.connected.as_ref().expect("the tunnel came up");
    assert_eq!(
        connected.ipv4.map(|net| net.addr()),
        Some(IpAddr::V4(CLIENT_TUNNEL_ADDR)),
        "{connected:?}"
    );
    assert!(
        report.received_bytes > DOWNLOAD as u64,
        "only {} bytes received: {report:?}",
        report.received_bytes
    );
    let down = report.down.as_ref().expect("the client stopped");
    assert_eq!(down.fault, Fault::Closed, "{down:?}");
}

// One line per fixture. The harness-recorded ones also check what the session did.

#[test]
fn replays_plaintext_over_udp_recorded_with_mio() {
    check_harness_session(&replay_fixture("plaintext-udp-mio"));
}

#[test]
fn replays_static_key_over_udp_recorded_with_smol() {
    check_harness_session(&replay_fixture("static-key-udp-smol"));
}

#[test]
fn replays_tls_crypt_with_a_client_certificate_over_udp_recorded_with_mio() {
    check_harness_session(&replay_fixture("tls-crypt-udp-mio"));
}

#[test]
fn replays_tls_crypt_with_a_client_certificate_over_tcp_recorded_with_smol() {
    check_harness_session(&replay_fixture("tls-crypt-tcp-smol"));
}

/// The server's `--reneg-sec 6` renegotiated the session in its middle: it sent a soft reset
/// for key 1, both sides ran the TLS handshake of key 1, and data flowed before and after.
/// (The data after it still goes under key 0: both sides move their sending to a new key
/// only after a transition window, as OpenVPN does, and the session is over before that.)
#[test]
fn replays_a_renegotiation_started_by_the_server_recorded_with_smol() {
    let name = "tls-crypt-reneg-udp-smol";
    check_harness_session(&replay_fixture(name));
    let pcap = std::fs::read(fixtures_dir().join(name).join("transport.pcap")).unwrap();
    // Over UDP each packet starts with the opcode (high five bits) and the key id.
    let first_bytes = |outbound| -> Vec<u8> {
        payloads(&pcap, harness_server(), outbound)
            .iter()
            .map(|payload| payload[0])
            .collect()
    };
    const SOFT_RESET_KEY_1: u8 = (3 << 3) | 1; // P_CONTROL_SOFT_RESET_V1
    const CONTROL_KEY_1: u8 = (4 << 3) | 1; // P_CONTROL_V1
    const DATA_V2_KEY_0: u8 = 9 << 3; // P_DATA_V2
    let inbound = first_bytes(false);
    let reset = inbound
        .iter()
        .position(|byte| *byte == SOFT_RESET_KEY_1)
        .expect("no soft reset from the server");
    assert!(inbound[..reset].contains(&DATA_V2_KEY_0), "no data before");
    assert!(inbound[reset..].contains(&DATA_V2_KEY_0), "no data after");
    assert!(inbound[reset..].contains(&CONTROL_KEY_1));
    assert!(
        first_bytes(true).contains(&CONTROL_KEY_1),
        "no key 1 handshake"
    );
}

/// erebus's own `reneg-sec 10` renegotiated the session: it sent the soft reset for key 1,
/// moved its sending to key 1 half a reneg-sec later, and the last page went under key 1.
#[test]
fn replays_a_renegotiation_started_by_erebus_recorded_with_mio() {
    let name = "tls-crypt-client-reneg-udp-mio";
    check_harness_session(&replay_fixture(name));
    let pcap = std::fs::read(fixtures_dir().join(name).join("transport.pcap")).unwrap();
    let outbound: Vec<u8> = payloads(&pcap, harness_server(), true)
        .iter()
        .map(|payload| payload[0])
        .collect();
    const SOFT_RESET_KEY_1: u8 = (3 << 3) | 1; // P_CONTROL_SOFT_RESET_V1
    const DATA_V2_KEY_0: u8 = 9 << 3;
    const DATA_V2_KEY_1: u8 = (9 << 3) | 1;
    let reset = outbound
        .iter()
        .position(|byte| *byte == SOFT_RESET_KEY_1)
        .expect("erebus sent no soft reset");
    assert!(outbound[..reset].contains(&DATA_V2_KEY_0), "no data before");
    assert!(
        outbound[reset..].contains(&DATA_V2_KEY_1),
        "no data under key 1"
    );
}

/// The password comes back from the fixture's `auth-user-pass` file.
#[test]
fn replays_tls_auth_with_username_and_password_over_udp_recorded_with_mio() {
    check_harness_session(&replay_fixture("tls-auth-userpass-udp-mio"));
}

/// A fixture replays whatever year it is run in: the replay reads wall time only from the
/// recorded anchor (`settings`) plus the journal's monotonic times, and the TLS layer checks
/// certificates against that time (rustls's only clock is the provider's `WallTime`, set from
/// it). The harness's certificates are valid 2020-2049 and the anchor is inside that range;
/// the same recording with its anchor one second later fails at once (tls-crypt's packet ids
/// carry the time), so the anchor is what the replay uses.
/// IKEv2 with a pre-shared key and ESP in UDP against strongSwan 5.9 (recorded by
/// `record_ipsec_fixture` in `ipsec_e2e.rs`): the virtual IP came from the configuration
/// payload, 64 KiB came in, and erebus left with DELETE.
#[test]
fn replays_ipsec_with_a_psk_recorded_with_mio() {
    let report = replay_fixture("ipsec-psk-udp-mio");
    let connected = report.connected.as_ref().expect("the tunnel came up");
    assert_eq!(
        connected.ipv4.map(|net| net.addr()),
        Some(IpAddr::V4(erebus_testvectors::strongswan::FIRST_VIRTUAL_IP)),
        "{connected:?}"
    );
    assert!(report.received_bytes > DOWNLOAD as u64, "{report:?}");
    assert_eq!(
        report.down.as_ref().map(|down| down.fault),
        Some(Fault::Closed)
    );
}

#[test]
fn the_replay_reads_the_recorded_wall_clock() {
    let dir = fixtures_dir().join("tls-crypt-udp-mio");
    let text = std::fs::read_to_string(dir.join("settings")).unwrap();
    let mut settings = Settings::parse(&text).unwrap();
    let recorded = settings.wall_clock_at_epoch.as_secs();
    // After 2020-01-01 and before 2049-12-31 23:59:59, the certificates' validity.
    assert!(
        (1_577_836_800..2_524_607_999).contains(&recorded),
        "{recorded}"
    );

    let scratch = scratch_dir("tls-crypt-udp-mio-one-second-later");
    copy_recording(&dir, &scratch, &[]);
    settings.wall_clock_at_epoch = UnixTime::from_secs(recorded + 1);
    std::fs::write(scratch.join("settings"), settings.to_text()).unwrap();
    match replay_dir_with(&scratch, ReplayOptions::default()) {
        Err(ReplayError::Diverged { index: 0, .. }) => {}
        other => panic!("the replay ignored the recorded wall clock: {other:?}"),
    }
    std::fs::remove_dir_all(&scratch).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Recording the fixtures again
// ---------------------------------------------------------------------------------------------

/// One harness-recorded fixture.
struct Fixture {
    name: &'static str,
    profile: ServerProfile,
    transport: Transport,
    runtime: &'static str,
    /// The server's `--reneg-sec`: the session lasts until the server has renegotiated once.
    server_reneg_sec: Option<u32>,
    /// erebus's own `reneg-sec` (added to the profile): the session lasts until erebus has
    /// renegotiated once and sent data under the new key.
    client_reneg_sec: Option<u32>,
}

/// Every fixture `record_fixtures` writes, with the driver it is recorded under (half with
/// each).
const FIXTURES: [Fixture; 7] = [
    Fixture {
        name: "plaintext-udp-mio",
        profile: ServerProfile::Plaintext,
        transport: Transport::Udp,
        runtime: "mio",
        server_reneg_sec: None,
        client_reneg_sec: None,
    },
    Fixture {
        name: "static-key-udp-smol",
        profile: ServerProfile::StaticKey,
        transport: Transport::Udp,
        runtime: "smol",
        server_reneg_sec: None,
        client_reneg_sec: None,
    },
    Fixture {
        name: "tls-crypt-udp-mio",
        profile: ServerProfile::TlsCrypt,
        transport: Transport::Udp,
        runtime: "mio",
        server_reneg_sec: None,
        client_reneg_sec: None,
    },
    Fixture {
        name: "tls-crypt-tcp-smol",
        profile: ServerProfile::TlsCrypt,
        transport: Transport::Tcp,
        runtime: "smol",
        server_reneg_sec: None,
        client_reneg_sec: None,
    },
    Fixture {
        name: "tls-crypt-reneg-udp-smol",
        profile: ServerProfile::TlsCrypt,
        transport: Transport::Udp,
        runtime: "smol",
        server_reneg_sec: Some(6),
        client_reneg_sec: None,
    },
    Fixture {
        name: "tls-crypt-client-reneg-udp-mio",
        profile: ServerProfile::TlsCrypt,
        transport: Transport::Udp,
        runtime: "mio",
        server_reneg_sec: None,
        client_reneg_sec: Some(10),
    },
    Fixture {
        name: "tls-auth-userpass-udp-mio",
        profile: ServerProfile::TlsAuthUserPass,
        transport: Transport::Udp,
        runtime: "mio",
        server_reneg_sec: None,
        client_reneg_sec: None,
    },
];

/// Runs curl as nobody in the client namespace and returns its stdout.
fn curl(server: &OpenVpnServer, args: &[&str]) -> Vec<u8> {
    let curl = netns::find_program("curl").expect("curl is installed");
    let mut argv = vec![curl.to_str().unwrap(), "-sS", "--fail", "--max-time", "30"];
    argv.extend_from_slice(args);
    let output = server
        .run_in_client(RunAs::Nobody, &argv, Duration::from_secs(45))
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

fn server_log_count(server: &OpenVpnServer, needle: &str) -> usize {
    String::from_utf8_lossy(&std::fs::read(server.server_log()).unwrap_or_default())
        .matches(needle)
        .count()
}

/// Records `fixture` against a fresh harness server into `testvectors/replays/<name>/`: a
/// page and a download through the HTTP proxy, a name resolved inside the tunnel through the
/// SOCKS5 proxy, then SIGTERM.
fn record_fixture(fixture: &Fixture) {
    let mut options = ServerOptions::default();
    if let Some(seconds) = fixture.server_reneg_sec {
        options = options.with_reneg_sec(seconds);
    }
    let server = OpenVpnServer::start_with(fixture.profile, fixture.transport, &options).unwrap();
    assert_eq!(server.server_addr(), harness_server());
    let dir = recording_dir(&server);
    let config = match fixture.client_reneg_sec {
        Some(seconds) => {
            let profile = format!("{}\nreneg-sec {seconds}\n", server.client_profile());
            server.write_client_file("reneg.ovpn", &profile).unwrap()
        }
        None => server.client_profile_path(),
    };
    let credentials = server.credentials_path();
    let mut argv = vec![
        EREBUS,
        "--config",
        config.to_str().unwrap(),
        "--runtime",
        fixture.runtime,
        "--http",
        "127.0.0.1:8080",
        "--socks",
        "127.0.0.1:1080",
        "--dns",
        "10.8.0.1",
        "--record",
        dir.to_str().unwrap(),
    ];
    if fixture.profile.uses_username_password() {
        argv.extend_from_slice(&["--auth-user-pass", credentials.to_str().unwrap()]);
    }
    let mut erebus = server
        .spawn_in_client(RunAs::Nobody, &argv, "erebus.log")
        .unwrap();
    for port in [8080, 1080] {
        erebus
            .wait_until_listening(port, Duration::from_secs(10))
            .unwrap();
    }

    let proxy = ["-x", "http://127.0.0.1:8080"];
    let page = curl(&server, &[&proxy[..], &[&server.http_url()]].concat());
    assert!(String::from_utf8_lossy(&page).contains(HTTP_MARKER));
    let url = format!("{}bytes/{DOWNLOAD}", server.http_url());
    let body = curl(&server, &[&proxy[..], &[&url]].concat());
    assert_eq!(netns::sha256(&body), netns::pattern_sha256(DOWNLOAD as u64));
    let page = curl(
        &server,
        &[
            "--socks5-hostname",
            "127.0.0.1:1080",
            &server.http_name_url(),
        ],
    );
    assert!(String::from_utf8_lossy(&page).contains(HTTP_MARKER));

    if fixture.server_reneg_sec.is_some() || fixture.client_reneg_sec.is_some() {
        // Wait for the renegotiation to finish (new keys in), then use them.
        let keys = "Incoming Data Channel: Cipher";
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while server_log_count(&server, keys) < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "no renegotiation:\n{}",
                server.server_log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(server_log_count(&server, "Peer Connection Initiated"), 1);
        if let Some(seconds) = fixture.client_reneg_sec {
            // erebus sends under the new key half its reneg-sec after starting it.
            std::thread::sleep(Duration::from_secs(u64::from(seconds / 2 + 1)));
        }
        let page = curl(&server, &[&proxy[..], &[&server.http_url()]].concat());
        assert!(String::from_utf8_lossy(&page).contains(HTTP_MARKER));
    }

    let status = erebus.stop(Duration::from_secs(10)).expect("erebus exited");
    assert!(
        status.success(),
        "erebus exited with {status}\n{}",
        erebus_log(&server)
    );
    if fixture.profile.uses_username_password() {
        std::fs::copy(&credentials, dir.join(AUTH_USER_PASS)).unwrap();
    }

    let target = fixtures_dir().join(fixture.name);
    copy_recording(&dir, &target, &[AUTH_USER_PASS]);
    for entry in std::fs::read_dir(&target).unwrap() {
        use std::os::unix::fs::PermissionsExt;
        let path = entry.unwrap().path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let size: u64 = std::fs::read_dir(&target)
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .sum();
    eprintln!("{}: recorded, {size} bytes", fixture.name);
}

/// Records every fixture again against the real server in network namespaces (root), then
/// replays what it wrote. Ignored, and also needs `EREBUS_RECORD_FIXTURES=1`, so that running
/// the ignored tests does not rewrite committed files by accident:
///
///     testvectors/replays/record.sh
#[test]
#[ignore = "rewrites testvectors/replays/; run testvectors/replays/record.sh"]
fn record_fixtures() {
    if std::env::var("EREBUS_RECORD_FIXTURES").as_deref() != Ok("1") {
        panic!("set EREBUS_RECORD_FIXTURES=1 to rewrite testvectors/replays/");
    }
    if !netns::should_run_interop("record_fixtures") {
        return;
    }
    let only = std::env::var("EREBUS_RECORD_ONLY").ok();
    for fixture in &FIXTURES {
        if only.as_deref().is_some_and(|only| only != fixture.name) {
            continue;
        }
        record_fixture(fixture);
        check_harness_session(&replay_fixture(fixture.name));
    }
}
