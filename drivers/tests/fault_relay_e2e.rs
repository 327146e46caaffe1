//! erebus on a bad link: a seeded fault-injecting relay (`erebus_testvectors::relay`) sits in
//! the client namespace between erebus (as nobody) and a real OpenVPN 2.6 server, and every
//! test runs under both drivers.
//!
//! - 64 MiB arrive intact at 5% loss each way with reordering and duplication;
//! - the TLS handshake completes at 20% loss each way;
//! - a renegotiation the server starts during a download under loss loses no byte;
//! - a NAT rebinding mid-download (the relay's source port changes) keeps the session: the
//!   server floats the client to its new address;
//! - an MTU black hole (datagrams above 1,350 bytes vanish) stalls a download without
//!   `mssfix`, and with `mssfix 1300` the download arrives whole;
//! - over TCP, a stream cut into random small pieces still carries a checksummed download, and
//!   after the relay resets the connection erebus reconnects by itself;
//! - hostile packets beside the real ones (replays, copies with a byte flipped or cut short,
//!   spoofed datagrams from another port) cost no byte of a 64 MiB download nor the session,
//!   and erebus's totals line counts every one it saw;
//! - bursts of loss (runs of datagrams dropped together) cost no byte of a 16 MiB download.
//!
//! Each test asserts the relay's counters: the faults were injected, not merely configured.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod e2e;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::{EREBUS, NOBODY_UID, read_log};

use erebus_sansio::rng::Seed;
use erebus_testvectors::netns::{
    self, HTTP_MARKER, NsProcess, OpenVpnServer, RunAs, ServerOptions, ServerProfile, Transport,
};
use erebus_testvectors::relay::{Faults, RelayStats, TcpRelay, UdpRelay};

/// The relay's listening address in the client namespace (any free port).
fn relay_listen() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn server_addr() -> SocketAddr {
    SocketAddr::V4(std::net::SocketAddrV4::new(
        netns::SERVER_OUTER_ADDR,
        netns::OPENVPN_PORT,
    ))
}

/// A UDP relay with `faults` in `server`'s client namespace, in front of its OpenVPN port.
fn udp_relay(server: &OpenVpnServer, faults: Faults) -> UdpRelay {
    UdpRelay::start(
        server.client_netns(),
        relay_listen(),
        server_addr(),
        faults,
        &seed(),
    )
    .unwrap()
}

/// The server's client profile pointed at the relay, with `extra` lines appended.
fn profile_via(server: &OpenVpnServer, relay: SocketAddr, extra: &str) -> PathBuf {
    let direct = format!(
        "remote {} {}",
        netns::SERVER_OUTER_ADDR,
        netns::OPENVPN_PORT
    );
    let profile = server.client_profile();
    assert!(profile.contains(&direct));
    let text = format!(
        "{}\n{extra}\n",
        profile.replace(&direct, &format!("remote {} {}", relay.ip(), relay.port()))
    );
    server.write_client_file("via-relay.ovpn", &text).unwrap()
}

fn erebus_log(server: &OpenVpnServer) -> String {
    read_log(&server.instance_dir().join("erebus.log"))
}

/// Starts erebus as nobody with `config` under `runtime` and waits up to `within` for the
/// tunnel.
fn start<'s>(
    server: &'s OpenVpnServer,
    config: &std::path::Path,
    runtime: &str,
    within: Duration,
) -> NsProcess<'s> {
    let argv = [
        EREBUS,
        "--config",
        config.to_str().unwrap(),
        "--runtime",
        runtime,
        "--http",
        "127.0.0.1:8080",
        "--no-socks",
    ];
    let mut erebus = server
        .spawn_in_client(RunAs::Nobody, &argv, "erebus.log")
        .unwrap();
    erebus
        .wait_until_listening(8080, Duration::from_secs(10))
        .unwrap();
    assert_eq!(netns::uid_of(erebus.pid()), Some(NOBODY_UID));
    let deadline = Instant::now() + within;
    while !erebus_log(server).contains("erebus: up:") {
        assert!(
            Instant::now() < deadline && erebus.exit_status().is_none(),
            "erebus did not come up within {within:?}:\n{}\n--- server ---\n{}",
            erebus_log(server),
            server.server_log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    erebus
}

/// curl as nobody through erebus's HTTP proxy; `Err` with its message when it fails.
fn curl(server: &OpenVpnServer, args: &[&str], max_time: u32) -> Result<Vec<u8>, String> {
    let curl = netns::find_program("curl").expect("curl is installed");
    let max_time = max_time.to_string();
    let mut argv = vec![
        curl.to_str().unwrap(),
        "-sS",
        "--fail",
        "--max-time",
        &max_time,
        "-x",
        "http://127.0.0.1:8080",
    ];
    argv.extend_from_slice(args);
    let output = server
        .run_in_client(RunAs::Nobody, &argv, Duration::from_secs(300))
        .unwrap();
    if output.success() {
        Ok(output.stdout)
    } else {
        Err(output.stderr_text())
    }
}

/// Downloads `len` bytes of the pattern and checks every byte.
fn download(server: &OpenVpnServer, len: usize, extra: &[&str]) {
    let url = format!("{}bytes/{len}", server.http_url());
    let mut args = extra.to_vec();
    args.push(&url);
    let body = curl(server, &args, 240).unwrap_or_else(|error| {
        panic!(
            "download of {len} bytes failed: {error}\n--- erebus ---\n{}",
            erebus_log(server)
        )
    });
    assert_eq!(body.len(), len);
    assert!(
        netns::sha256(&body) == netns::pattern_sha256(len as u64),
        "the download is corrupt"
    );
}

/// One session throughout: no reconnection on either side.
fn assert_one_session(server: &OpenVpnServer) {
    let log = read_log(&server.server_log());
    assert_eq!(
        log.matches("Peer Connection Initiated").count(),
        1,
        "{}",
        server.server_log_tail(40)
    );
    let client = erebus_log(server);
    assert_eq!(client.matches("erebus: up:").count(), 1, "{client}");
    assert!(!client.contains("reconnecting"), "{client}");
}

fn stop(server: &OpenVpnServer, erebus: NsProcess<'_>) {
    let status = erebus.stop(Duration::from_secs(10)).expect("erebus exited");
    assert!(status.success(), "{}", erebus_log(server));
}

fn count(counter: &std::sync::atomic::AtomicU64) -> u64 {
    RelayStats::get(counter)
}

fn seed() -> Seed {
    Seed::from_byte(0x5e)
}

fn lossy_link_carries_64_mib(runtime: &str) {
    if !netns::should_run_interop(&format!("lossy_link_carries_64_mib_with_{runtime}")) {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).unwrap();
    let faults = Faults {
        loss_per_mille: 50,
        reorder_per_mille: 50,
        reorder_delay: Duration::from_millis(4),
        duplicate_per_mille: 20,
        delay: Duration::from_millis(1),
        jitter: Duration::from_millis(1),
        ..Faults::none()
    };
    let relay = udp_relay(&server, faults);
    let config = profile_via(&server, relay.listen_addr(), "");
    let erebus = start(&server, &config, runtime, Duration::from_secs(60));
    let started = Instant::now();
    download(&server, 64 << 20, &[]);
    let stats = relay.stats();
    eprintln!(
        "64 MiB at 5% loss with {runtime} in {:?}: {}",
        started.elapsed(),
        stats.summary()
    );
    assert!(count(&stats.lost) > 100, "{}", stats.summary());
    assert!(count(&stats.reordered) > 100, "{}", stats.summary());
    assert!(count(&stats.duplicated) > 50, "{}", stats.summary());
    assert_one_session(&server);
    stop(&server, erebus);
}

#[test]
fn lossy_link_carries_64_mib_with_mio() {
    lossy_link_carries_64_mib("mio");
}

#[test]
fn lossy_link_carries_64_mib_with_smol() {
    lossy_link_carries_64_mib("smol");
}

fn handshake_completes_at_20_percent_loss(runtime: &str) {
    if !netns::should_run_interop(&format!("handshake_at_20_percent_loss_with_{runtime}")) {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).unwrap();
    let relay = udp_relay(&server, Faults::loss(200));
    let config = profile_via(&server, relay.listen_addr(), "");
    let started = Instant::now();
    let erebus = start(&server, &config, runtime, Duration::from_secs(90));
    let up = started.elapsed();
    let page = curl(&server, &[&server.http_url()], 60).unwrap();
    assert!(String::from_utf8_lossy(&page).contains(HTTP_MARKER));
    let stats = relay.stats();
    eprintln!(
        "up at 20% loss with {runtime} after {up:?}: {}",
        stats.summary()
    );
    assert!(count(&stats.lost) > 0, "{}", stats.summary());
    stop(&server, erebus);
}

#[test]
fn handshake_completes_at_20_percent_loss_with_mio() {
    handshake_completes_at_20_percent_loss("mio");
}

#[test]
fn handshake_completes_at_20_percent_loss_with_smol() {
    handshake_completes_at_20_percent_loss("smol");
}

fn renegotiation_under_loss_loses_nothing(runtime: &str) {
    if !netns::should_run_interop(&format!("renegotiation_under_loss_with_{runtime}")) {
        return;
    }
    let options = ServerOptions::default().with_reneg_sec(8);
    let server =
        OpenVpnServer::start_with(ServerProfile::TlsCrypt, Transport::Udp, &options).unwrap();
    let relay = udp_relay(&server, Faults::loss(20));
    let config = profile_via(&server, relay.listen_addr(), "");
    let erebus = start(&server, &config, runtime, Duration::from_secs(60));
    // About 12 s: across the renegotiation at 6-8 s.
    download(&server, 24 << 20, &["--limit-rate", "2M"]);
    let log = read_log(&server.server_log());
    let resets = log.matches("TLS: soft reset").count();
    let stats = relay.stats();
    eprintln!(
        "renegotiation under 2% loss with {runtime}: {resets} soft resets; {}",
        stats.summary()
    );
    assert!(
        resets >= 1,
        "no renegotiation:\n{}",
        server.server_log_tail(40)
    );
    assert!(count(&stats.lost) > 0, "{}", stats.summary());
    assert_one_session(&server);
    stop(&server, erebus);
}

#[test]
fn renegotiation_under_loss_loses_nothing_with_mio() {
    renegotiation_under_loss_loses_nothing("mio");
}

#[test]
fn renegotiation_under_loss_loses_nothing_with_smol() {
    renegotiation_under_loss_loses_nothing("smol");
}

fn nat_rebinding_keeps_the_session(runtime: &str) {
    if !netns::should_run_interop(&format!("nat_rebinding_keeps_the_session_with_{runtime}")) {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).unwrap();
    let relay = udp_relay(&server, Faults::none());
    let config = profile_via(&server, relay.listen_addr(), "");
    let erebus = start(&server, &config, runtime, Duration::from_secs(30));
    std::thread::scope(|scope| {
        let downloading = scope.spawn(|| download(&server, 16 << 20, &["--limit-rate", "4M"]));
        // Mid-download: once about a quarter of it (3,000 datagrams) has crossed.
        let deadline = Instant::now() + Duration::from_secs(30);
        while count(&relay.stats().forwarded) < 3_000 {
            assert!(Instant::now() < deadline, "{}", relay.stats().summary());
            std::thread::sleep(Duration::from_millis(20));
        }
        relay.rebind();
        downloading.join().unwrap();
    });
    let stats = relay.stats();
    assert_eq!(count(&stats.rebinds), 1, "{}", stats.summary());
    // The server moved the session to the client's new address.
    let log = read_log(&server.server_log());
    assert!(
        log.contains("float"),
        "the server did not float the client:\n{}",
        server.server_log_tail(40)
    );
    assert_one_session(&server);
    // And it still works afterwards.
    let page = curl(&server, &[&server.http_url()], 30).unwrap();
    assert!(String::from_utf8_lossy(&page).contains(HTTP_MARKER));
    stop(&server, erebus);
}

#[test]
fn nat_rebinding_keeps_the_session_with_mio() {
    nat_rebinding_keeps_the_session("mio");
}

#[test]
fn nat_rebinding_keeps_the_session_with_smol() {
    nat_rebinding_keeps_the_session("smol");
}

/// The black hole: outer datagrams above this many bytes vanish.
const BLACK_HOLE: usize = 1350;

fn mtu_black_hole_is_survived_with_mssfix(runtime: &str) {
    if !netns::should_run_interop(&format!("mtu_black_hole_with_{runtime}")) {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).unwrap();
    let faults = Faults {
        max_datagram: Some(BLACK_HOLE),
        ..Faults::none()
    };
    let relay = udp_relay(&server, faults);

    // Without mssfix the full-size segments fall into the hole and the download stalls.
    let config = profile_via(&server, relay.listen_addr(), "");
    let erebus = start(&server, &config, runtime, Duration::from_secs(30));
    let before = count(&relay.stats().too_big);
    let url = format!("{}bytes/{}", server.http_url(), 4 << 20);
    let stalled = curl(&server, &[&url], 6);
    assert!(
        stalled.is_err(),
        "the download crossed the black hole without mssfix"
    );
    assert!(
        count(&relay.stats().too_big) > before,
        "{}",
        relay.stats().summary()
    );
    stop(&server, erebus);

    // With mssfix 1300 every segment fits.
    let config = profile_via(&server, relay.listen_addr(), "mssfix 1300");
    let erebus = start(&server, &config, runtime, Duration::from_secs(30));
    let before = count(&relay.stats().too_big);
    download(&server, 16 << 20, &[]);
    let dropped = count(&relay.stats().too_big) - before;
    eprintln!(
        "black hole at {BLACK_HOLE} bytes with {runtime}: {dropped} datagrams too big with \
         mssfix 1300; {}",
        relay.stats().summary()
    );
    assert_eq!(dropped, 0, "{}", relay.stats().summary());
    stop(&server, erebus);
}

#[test]
fn mtu_black_hole_is_survived_with_mssfix_with_mio() {
    mtu_black_hole_is_survived_with_mssfix("mio");
}

#[test]
fn mtu_black_hole_is_survived_with_mssfix_with_smol() {
    mtu_black_hole_is_survived_with_mssfix("smol");
}

fn chopped_tcp_stream_carries_the_download(runtime: &str) {
    if !netns::should_run_interop(&format!("chopped_tcp_stream_with_{runtime}")) {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Tcp).unwrap();
    let relay = TcpRelay::start(
        server.client_netns(),
        relay_listen(),
        server_addr(),
        Faults {
            jitter: Duration::from_micros(200),
            ..Faults::none()
        },
        700,
        &seed(),
    )
    .unwrap();
    let config = profile_via(&server, relay.listen_addr(), "");
    let erebus = start(&server, &config, runtime, Duration::from_secs(30));
    download(&server, 8 << 20, &[]);
    let stats = relay.stats();
    eprintln!("chopped TCP stream with {runtime}: {}", stats.summary());
    // 8 MiB in pieces of at most 700 bytes: well over 12,000 of them.
    assert!(count(&stats.forwarded) > 12_000, "{}", stats.summary());
    assert_one_session(&server);

    // A middlebox that forgets the connection resets it: erebus reconnects on its own and
    // the proxy works again.
    relay.cut();
    let deadline = Instant::now() + Duration::from_secs(45);
    while erebus_log(&server).matches("erebus: up:").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "erebus did not reconnect after the cut:\n{}",
            erebus_log(&server)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(count(&stats.cuts), 1);
    assert!(count(&stats.connections) >= 2, "{}", stats.summary());
    let page = curl(&server, &[&server.http_url()], 30).unwrap();
    assert!(String::from_utf8_lossy(&page).contains(HTTP_MARKER));
    stop(&server, erebus);
}

#[test]
fn chopped_tcp_stream_carries_the_download_with_mio() {
    chopped_tcp_stream_carries_the_download("mio");
}

#[test]
fn chopped_tcp_stream_carries_the_download_with_smol() {
    chopped_tcp_stream_carries_the_download("smol");
}

/// A counter of the client namespace's UDP statistics (`/proc/net/snmp`), e.g. `NoPorts`.
fn client_udp_counter(server: &OpenVpnServer, name: &str) -> u64 {
    let cat = netns::find_program("cat").expect("cat is installed");
    let output = server
        .run_in_client(
            RunAs::Root,
            &[cat.to_str().unwrap(), "/proc/net/snmp"],
            Duration::from_secs(10),
        )
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut udp = text.lines().filter(|line| line.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        panic!("no Udp lines in /proc/net/snmp:\n{text}");
    };
    let index = names
        .split_whitespace()
        .position(|field| field == name)
        .unwrap_or_else(|| panic!("no {name} in {names}"));
    values
        .split_whitespace()
        .nth(index)
        .unwrap()
        .parse()
        .unwrap()
}

/// The number just before `label` in erebus's last totals line.
fn totals_figure(log: &str, label: &str) -> u64 {
    let line = log
        .lines()
        .rev()
        .find(|line| line.starts_with("erebus: totals:"))
        .unwrap_or_else(|| panic!("no totals line:\n{log}"));
    let before = &line[..line
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in {line}"))];
    before
        .split_whitespace()
        .last()
        .and_then(|figure| figure.parse().ok())
        .unwrap_or_else(|| panic!("no figure before {label:?} in {line}"))
}

fn hostile_packets_cost_nothing(runtime: &str) {
    if !netns::should_run_interop(&format!("hostile_packets_with_{runtime}")) {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).unwrap();
    let relay = udp_relay(&server, Faults::none());
    let config = profile_via(&server, relay.listen_addr(), "");
    let erebus = start(&server, &config, runtime, Duration::from_secs(30));
    let no_ports = client_udp_counter(&server, "NoPorts");
    let rcvbuf_errors = client_udp_counter(&server, "RcvbufErrors");
    // Once the session is up: the hostile packets go at the data channel.
    relay.set_faults(Faults {
        replay_per_mille: 30,
        tamper_per_mille: 30,
        truncate_per_mille: 30,
        spoof_per_mille: 60,
        ..Faults::none()
    });
    let started = Instant::now();
    download(&server, 64 << 20, &[]);
    let elapsed = started.elapsed();
    relay.set_faults(Faults::none());
    // What the relay still held has gone out.
    std::thread::sleep(Duration::from_millis(100));
    let refused = client_udp_counter(&server, "NoPorts") - no_ports;
    // Datagrams the kernel dropped at a full socket buffer in the client namespace (erebus's
    // socket is the only busy one there): an injected copy among them never reached erebus.
    let overflowed = client_udp_counter(&server, "RcvbufErrors") - rcvbuf_errors;
    assert_one_session(&server);
    stop(&server, erebus);
    let stats = relay.stats();
    let injected = count(&stats.replayed) + count(&stats.tampered) + count(&stats.truncated);
    let spoofed = count(&stats.spoofed);
    let log = erebus_log(&server);
    let from_server = totals_figure(&log, " from the server");
    let foreign = totals_figure(&log, " from other addresses");
    eprintln!(
        "hostile packets with {runtime}, 64 MiB in {elapsed:?}: relay {}; erebus dropped \
         {from_server} from the server for {injected} injected, {foreign} from other addresses \
         and the kernel refused {refused} for {spoofed} spoofed\n{}",
        stats.summary(),
        log.lines()
            .rev()
            .find(|line| line.starts_with("erebus: totals:"))
            .unwrap_or_default()
    );
    assert!(count(&stats.replayed) > 500, "{}", stats.summary());
    assert!(count(&stats.tampered) > 500, "{}", stats.summary());
    assert!(count(&stats.truncated) > 500, "{}", stats.summary());
    assert!(spoofed > 2_000, "{}", stats.summary());
    // Every injected copy was refused by the tunnel (a replayed copy may overtake its
    // original, which is then the one refused: still one drop each), unless the kernel
    // dropped it first at a full socket buffer.
    assert!(
        from_server + overflowed >= injected,
        "{from_server} + {overflowed} < {injected}\n{log}"
    );
    // Every spoofed datagram was dropped: by erebus, or already by the kernel, since the
    // socket is connected to the relay and takes nothing from another address.
    assert!(
        foreign + refused >= spoofed,
        "{foreign} + {refused} < {spoofed}\n{log}"
    );
}

#[test]
fn hostile_packets_cost_nothing_with_mio() {
    hostile_packets_cost_nothing("mio");
}

#[test]
fn hostile_packets_cost_nothing_with_smol() {
    hostile_packets_cost_nothing("smol");
}

fn burst_loss_loses_nothing(runtime: &str) {
    if !netns::should_run_interop(&format!("burst_loss_with_{runtime}")) {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).unwrap();
    let relay = udp_relay(&server, Faults::none());
    let config = profile_via(&server, relay.listen_addr(), "");
    let erebus = start(&server, &config, runtime, Duration::from_secs(30));
    // About one datagram in 200 starts a run of 8 lost together, each way: 4% of the
    // datagrams, lost in bursts that take out whole windows' worth of segments.
    relay.set_faults(Faults {
        burst_per_mille: 5,
        burst_len: 8,
        delay: Duration::from_millis(1),
        ..Faults::none()
    });
    let started = Instant::now();
    download(&server, 16 << 20, &[]);
    let stats = relay.stats();
    eprintln!(
        "16 MiB through burst loss with {runtime} in {:?}: {}",
        started.elapsed(),
        stats.summary()
    );
    // Several whole bursts, not only a stray lost datagram.
    assert!(count(&stats.burst_lost) >= 8 * 10, "{}", stats.summary());
    assert_eq!(count(&stats.lost), 0, "{}", stats.summary());
    assert_one_session(&server);
    stop(&server, erebus);
}

#[test]
fn burst_loss_loses_nothing_with_mio() {
    burst_loss_loses_nothing("mio");
}

#[test]
fn burst_loss_loses_nothing_with_smol() {
    burst_loss_loses_nothing("smol");
}
