//! erebus keeps its proxies up across a lost session and reconnects, against a real OpenVPN
//! 2.6 server in network namespaces the test creates. The `erebus` binary runs unprivileged
//! (as nobody) in the client namespace; the harness stops the server (`SIGTERM`: a TLS server
//! over UDP tells its clients `RESTART`; `SIGKILL`: nothing is said, `ping-restart` must
//! notice; over TCP the connection ends) and starts it again with the same keys.
//!
//! erebus prints one line per event on stderr: `erebus: connecting to HOST:PORT (udp|tcp)`,
//! `erebus: up: ...`, `erebus: reconnecting: <reason>; next try in N s` and `erebus: down:
//! <reason>`. While the tunnel is down a new HTTP proxy request waits `--tunnel-wait` seconds
//! and then gets `503 Service Unavailable` with `Retry-After`, a SOCKS5 request a general
//! failure, and a download that was running when the tunnel went is cut on the local side.
//! A refused password still ends erebus at once with status 3.
//!
//! Every scenario runs under the three drivers, `--runtime mio`, `--runtime smol` and
//! `--runtime threads`. The profiles add `connect-retry 1 2` so the tests stay short.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod e2e;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use erebus_testvectors::netns::{
    self, HTTP_MARKER, NsProcess, OpenVpnServer, RunAs, ServerOptions, ServerProfile, ServerStop,
    Transport,
};

use e2e::{EREBUS, NOBODY_UID, read_log};

/// Where erebus's HTTP proxy listens in the client namespace.
const HTTP_PROXY: &str = "http://127.0.0.1:8080";
const HTTP_PROXY_PORT: u16 = 8080;
/// Where erebus's SOCKS5 proxy listens, in the tests that turn it on.
const SOCKS_PROXY: &str = "127.0.0.1:1080";
/// Appended to every profile: retry after 1 s, then at most every 2 s.
const FAST_RETRY: &str = "connect-retry 1 2";
/// Size of the download checked by its SHA-256 after a reconnection.
const CHECKED_DOWNLOAD: usize = 4 << 20;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Everything erebus wrote (stdout and stderr), from `<instance dir>/erebus.log`.
fn erebus_log(server: &OpenVpnServer) -> String {
    read_log(&server.instance_dir().join("erebus.log"))
}

/// The lines of erebus's own event `event` (`up:`, `reconnecting:`, `connecting to`, ...):
/// those starting with `erebus: <event>`.
fn events(log: &str, event: &str) -> Vec<String> {
    let prefix = format!("erebus: {event}");
    log.lines()
        .filter(|line| line.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

/// How many `erebus: <event>` lines erebus has written so far.
fn event_count(server: &OpenVpnServer, event: &str) -> usize {
    events(&erebus_log(server), event).len()
}

/// Erebus's log and the server's, for failure messages.
fn logs(server: &OpenVpnServer) -> String {
    format!(
        "--- erebus ---\n{}\n--- server (current run) ---\n{}",
        erebus_log(server),
        server.server_log_tail(40)
    )
}

/// Polls `done` every 100 ms for up to `timeout`; whether it became true.
fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn curl_path() -> String {
    netns::find_program("curl")
        .expect("curl is installed")
        .to_str()
        .unwrap()
        .to_owned()
}

/// Runs curl as nobody in the client namespace (no `--fail`) and returns what it did; the
/// harness kills it after `limit`.
fn curl_raw(server: &OpenVpnServer, args: &[&str], limit: Duration) -> netns::CommandOutput {
    let curl = curl_path();
    let mut argv = vec![curl.as_str()];
    argv.extend_from_slice(args);
    server
        .run_in_client(RunAs::Nobody, &argv, limit)
        .unwrap_or_else(|error| panic!("curl {args:?}: {error}\n{}", logs(server)))
}

/// Runs curl as nobody in the client namespace with `--fail` and returns its stdout; fails the
/// test with curl's stderr and both logs when curl fails.
fn curl(server: &OpenVpnServer, args: &[&str]) -> Vec<u8> {
    let mut argv = vec!["-sS", "--fail", "--max-time", "60"];
    argv.extend_from_slice(args);
    let output = curl_raw(server, &argv, Duration::from_secs(75));
    assert!(
        output.success(),
        "curl {args:?} failed: {}\n{}",
        output.stderr_text(),
        logs(server)
    );
    output.stdout
}

/// `GET /` through the HTTP proxy has the harness marker.
fn page_works(server: &OpenVpnServer) {
    let page = curl(server, &["-x", HTTP_PROXY, &server.http_url()]);
    assert!(
        String::from_utf8_lossy(&page).contains(HTTP_MARKER),
        "no marker in {}",
        String::from_utf8_lossy(&page)
    );
}

/// 4 MiB of the pattern stream through the HTTP proxy, checked by its SHA-256.
fn download_works(server: &OpenVpnServer) {
    let url = format!("{}bytes/{CHECKED_DOWNLOAD}", server.http_url());
    let body = curl(server, &["-x", HTTP_PROXY, &url]);
    assert_eq!(body.len(), CHECKED_DOWNLOAD, "{}", logs(server));
    assert!(
        netns::sha256(&body) == netns::pattern_sha256(CHECKED_DOWNLOAD as u64),
        "the {CHECKED_DOWNLOAD}-byte download is corrupt"
    );
}

/// The harness's client profile with `extra` lines appended, written as `name` (readable by
/// nobody).
fn profile_with(server: &OpenVpnServer, name: &str, extra: &[&str]) -> PathBuf {
    let mut text = server.client_profile().to_owned();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    for line in extra {
        text.push_str(line);
        text.push('\n');
    }
    server.write_client_file(name, &text).unwrap()
}

/// The harness's client profile with a `remote` line for the dead address
/// ([`OpenVpnServer::dead_remote`]) inserted before the real one, and `extra` lines appended.
fn profile_with_dead_first_remote(server: &OpenVpnServer, name: &str, extra: &[&str]) -> PathBuf {
    let real = format!(
        "\nremote {} {}\n",
        netns::SERVER_OUTER_ADDR,
        netns::OPENVPN_PORT
    );
    let dead = server.dead_remote();
    let profile = server.client_profile();
    assert_eq!(profile.matches(&real).count(), 1, "{profile}");
    let mut text = profile.replacen(
        &real,
        &format!("\nremote {} {}{real}", dead.ip(), dead.port()),
        1,
    );
    if !text.ends_with('\n') {
        text.push('\n');
    }
    for line in extra {
        text.push_str(line);
        text.push('\n');
    }
    server.write_client_file(name, &text).unwrap()
}

/// How erebus is started.
struct Launch<'a> {
    config: &'a Path,
    runtime: &'a str,
    /// Turn the SOCKS5 proxy on at [`SOCKS_PROXY`] (otherwise `--no-socks`).
    socks: bool,
    /// `--auth-user-pass` file; the harness's right credentials for the username/password
    /// profiles when `None`.
    credentials: Option<&'a Path>,
    /// More arguments, e.g. `--tunnel-wait 3`.
    extra: &'a [&'a str],
}

impl<'a> Launch<'a> {
    fn new(config: &'a Path, runtime: &'a str) -> Self {
        Self {
            config,
            runtime,
            socks: false,
            credentials: None,
            extra: &[],
        }
    }

    fn argv(&self, server: &OpenVpnServer) -> Vec<String> {
        let mut argv: Vec<String> = [
            EREBUS,
            "--config",
            self.config.to_str().unwrap(),
            "--runtime",
            self.runtime,
            "--http",
            "127.0.0.1:8080",
        ]
        .map(str::to_owned)
        .into();
        if self.socks {
            argv.extend(["--socks".to_owned(), SOCKS_PROXY.to_owned()]);
        } else {
            argv.push("--no-socks".to_owned());
        }
        let credentials = match self.credentials {
            Some(path) => Some(path.to_path_buf()),
            None => server
                .profile()
                .uses_username_password()
                .then(|| server.credentials_path()),
        };
        if let Some(path) = credentials {
            argv.extend([
                "--auth-user-pass".to_owned(),
                path.to_str().unwrap().to_owned(),
            ]);
        }
        argv.extend(self.extra.iter().map(|arg| (*arg).to_owned()));
        argv
    }

    /// Starts erebus as nobody in the client namespace (output to `erebus.log`) without
    /// waiting for anything.
    fn spawn<'s>(&self, server: &'s OpenVpnServer) -> NsProcess<'s> {
        let argv = self.argv(server);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        server
            .spawn_in_client(RunAs::Nobody, &argv, "erebus.log")
            .unwrap()
    }

    /// Starts erebus and waits until its HTTP proxy listens and the tunnel is up (one
    /// `erebus: up:` line), then checks that it runs as nobody.
    fn start<'s>(&self, server: &'s OpenVpnServer) -> NsProcess<'s> {
        let mut erebus = self.spawn(server);
        erebus
            .wait_until_listening(HTTP_PROXY_PORT, Duration::from_secs(10))
            .unwrap_or_else(|error| panic!("{error}\n{}", logs(server)));
        wait_up(server, &mut erebus, 1, Duration::from_secs(30));
        assert_runs_as_nobody(&erebus);
        erebus
    }
}

/// Checks that erebus runs as nobody: its real uid, from `/proc/PID/status`, is 65534. Polls
/// briefly, since right after the start the PID may still be `ip netns exec` or `setpriv`
/// (root) on its way to exec erebus. A process that has exited but is not reaped still shows
/// its uid.
fn assert_runs_as_nobody(erebus: &NsProcess<'_>) {
    let pid = erebus.pid();
    let nobody = wait_for(Duration::from_secs(5), || {
        netns::uid_of(pid) == Some(NOBODY_UID)
    });
    assert!(
        nobody,
        "erebus (pid {pid}) does not run as nobody: uid {:?}",
        netns::uid_of(pid)
    );
}

/// Waits until erebus has written `count` `erebus: up:` lines, failing early if it exits, and
/// then checks that there are exactly `count` (no extra session).
fn wait_up(server: &OpenVpnServer, erebus: &mut NsProcess<'_>, count: usize, timeout: Duration) {
    let started = Instant::now();
    let mut exited = None;
    let up = wait_for(timeout, || {
        if let Some(status) = erebus.exit_status() {
            exited = Some(status);
            return true;
        }
        event_count(server, "up:") >= count
    });
    if let Some(status) = exited {
        panic!(
            "erebus exited ({status}) while waiting for up #{count}\n{}",
            logs(server)
        );
    }
    assert!(
        up,
        "erebus was not up (#{count}) within {timeout:?}\n{}",
        logs(server)
    );
    assert_eq!(event_count(server, "up:"), count, "{}", erebus_log(server));
    eprintln!("up #{count} after {:?}", started.elapsed());
}

/// Waits until erebus says `erebus: reconnecting:` (more often than `before`), and checks that
/// it is still running. Returns how long it took.
fn wait_reconnecting(
    server: &OpenVpnServer,
    erebus: &mut NsProcess<'_>,
    before: usize,
    timeout: Duration,
) -> Duration {
    let started = Instant::now();
    let seen = wait_for(timeout, || event_count(server, "reconnecting:") > before);
    assert!(
        seen,
        "no `erebus: reconnecting:` within {timeout:?} of the server going away\n{}",
        logs(server)
    );
    let took = started.elapsed();
    // The session is lost, the program is not: it stays to reconnect.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        erebus.exit_status().is_none(),
        "erebus exited after losing its server\n{}",
        logs(server)
    );
    assert_runs_as_nobody(erebus);
    took
}

/// Stops erebus with `SIGTERM` and checks that it exits with status 0.
fn stop_cleanly(server: &OpenVpnServer, erebus: NsProcess<'_>) {
    let status = erebus.stop(Duration::from_secs(10)).expect("erebus exited");
    assert!(
        status.success(),
        "erebus exited with {status}\n{}",
        logs(server)
    );
}

// ---------------------------------------------------------------------------------------------
// The server goes away and comes back
// ---------------------------------------------------------------------------------------------

/// Up and working; the server stops (`how`); erebus says it is reconnecting within
/// `notice_within` and keeps running; the server starts again; erebus is up a second time and
/// a page and 4 MiB go through; SIGTERM ends erebus with status 0.
fn server_goes_away_and_comes_back(
    name: &str,
    transport: Transport,
    how: ServerStop,
    options: &ServerOptions,
    notice_within: Duration,
    runtime: &str,
) {
    if !netns::should_run_interop(name) {
        return;
    }
    let started = Instant::now();
    let server = OpenVpnServer::start_with(ServerProfile::TlsCrypt, transport, options).unwrap();
    let config = profile_with(&server, "reconnect.ovpn", &[FAST_RETRY]);
    let mut erebus = Launch::new(&config, runtime).start(&server);
    page_works(&server);
    assert_eq!(
        event_count(&server, "reconnecting:"),
        0,
        "{}",
        erebus_log(&server)
    );

    server.stop_openvpn(how).unwrap();
    let noticed = wait_reconnecting(&server, &mut erebus, 0, notice_within);
    let reconnecting = events(&erebus_log(&server), "reconnecting:");
    assert!(
        reconnecting[0].contains("next try in"),
        "{}",
        reconnecting[0]
    );

    server.start_openvpn_again().unwrap();
    let restarted = Instant::now();
    wait_up(&server, &mut erebus, 2, Duration::from_secs(30));
    let back_after = restarted.elapsed();
    assert_runs_as_nobody(&erebus);
    page_works(&server);
    download_works(&server);
    stop_cleanly(&server, erebus);
    eprintln!(
        "{name}: reconnecting after {noticed:?}, up again {back_after:?} after the restart, \
         total {:?}",
        started.elapsed()
    );
}

fn server_restart_udp(runtime: &str) {
    server_goes_away_and_comes_back(
        &format!("server_restart_udp_{runtime}"),
        Transport::Udp,
        ServerStop::Terminate,
        &ServerOptions::default(),
        // explicit-exit-notify: the server said RESTART before it went.
        Duration::from_secs(5),
        runtime,
    );
}

#[test]
fn server_restart_udp_mio() {
    server_restart_udp("mio");
}

#[test]
fn server_restart_udp_smol() {
    server_restart_udp("smol");
}

#[test]
fn server_restart_udp_threads() {
    server_restart_udp("threads");
}

fn server_killed_udp(runtime: &str) {
    server_goes_away_and_comes_back(
        &format!("server_killed_udp_{runtime}"),
        Transport::Udp,
        ServerStop::Kill,
        // Pushes ping 1, ping-restart 4: the silence is noticed after about 4 s.
        &ServerOptions::default().with_openvpn_args(["--keepalive", "1", "4"]),
        Duration::from_secs(10),
        runtime,
    );
}

#[test]
fn server_killed_udp_mio() {
    server_killed_udp("mio");
}

#[test]
fn server_killed_udp_smol() {
    server_killed_udp("smol");
}

#[test]
fn server_killed_udp_threads() {
    server_killed_udp("threads");
}

fn server_restart_tcp(runtime: &str) {
    server_goes_away_and_comes_back(
        &format!("server_restart_tcp_{runtime}"),
        Transport::Tcp,
        ServerStop::Terminate,
        &ServerOptions::default(),
        // The TCP connection ends with the server.
        Duration::from_secs(5),
        runtime,
    );
}

#[test]
fn server_restart_tcp_mio() {
    server_restart_tcp("mio");
}

#[test]
fn server_restart_tcp_smol() {
    server_restart_tcp("smol");
}

#[test]
fn server_restart_tcp_threads() {
    server_restart_tcp("threads");
}

// ---------------------------------------------------------------------------------------------
// Several remotes
// ---------------------------------------------------------------------------------------------

/// Where in `log` the first `erebus: connecting to <addr>` line is (a byte offset).
fn first_connecting_to(log: &str, addr: &str) -> Option<usize> {
    let needle = format!("erebus: connecting to {addr} ");
    let mut offset = 0;
    for line in log.split_inclusive('\n') {
        if line.starts_with(&needle) {
            return Some(offset);
        }
        offset += line.len();
    }
    None
}

/// The first `remote` is dead (nothing listens there), the second is the server: erebus gives
/// the first up after `server-poll-timeout 3` (or at once on the ICMP error), comes up on the
/// second, and a page goes through.
fn first_remote_dead(runtime: &str) {
    let name = format!("first_remote_dead_{runtime}");
    if !netns::should_run_interop(&name) {
        return;
    }
    let started = Instant::now();
    let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).unwrap();
    let config = profile_with_dead_first_remote(
        &server,
        "dead-first.ovpn",
        &["server-poll-timeout 3", FAST_RETRY],
    );
    let erebus = Launch::new(&config, runtime).start(&server);
    let log = erebus_log(&server);
    let dead = first_connecting_to(&log, &server.dead_remote().to_string());
    let live = first_connecting_to(&log, &server.server_addr().to_string());
    let (Some(dead), Some(live)) = (dead, live) else {
        panic!("erebus did not try both remotes:\n{log}");
    };
    assert!(dead < live, "the second remote was tried first:\n{log}");
    page_works(&server);
    assert_runs_as_nobody(&erebus);
    stop_cleanly(&server, erebus);
    eprintln!("{name}: total {:?}", started.elapsed());
}

#[test]
fn first_remote_dead_mio() {
    first_remote_dead("mio");
}

#[test]
fn first_remote_dead_smol() {
    first_remote_dead("smol");
}

#[test]
fn first_remote_dead_threads() {
    first_remote_dead("threads");
}

/// The same two remotes with `remote-random`: whichever erebus tries first, it comes up and a
/// page goes through.
fn remote_random(runtime: &str) {
    let name = format!("remote_random_{runtime}");
    if !netns::should_run_interop(&name) {
        return;
    }
    let started = Instant::now();
    let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).unwrap();
    let config = profile_with_dead_first_remote(
        &server,
        "random.ovpn",
        &["remote-random", "server-poll-timeout 3", FAST_RETRY],
    );
    let erebus = Launch::new(&config, runtime).start(&server);
    let log = erebus_log(&server);
    assert!(
        first_connecting_to(&log, &server.server_addr().to_string()).is_some(),
        "erebus came up without connecting to the server:\n{log}"
    );
    page_works(&server);
    assert_runs_as_nobody(&erebus);
    stop_cleanly(&server, erebus);
    let dead_first = first_connecting_to(&log, &server.dead_remote().to_string()).is_some();
    eprintln!(
        "{name}: tried the dead remote first: {dead_first}, total {:?}",
        started.elapsed()
    );
}

#[test]
fn remote_random_mio() {
    remote_random("mio");
}

#[test]
fn remote_random_smol() {
    remote_random("smol");
}

#[test]
fn remote_random_threads() {
    remote_random("threads");
}

// ---------------------------------------------------------------------------------------------
// The proxies while the tunnel is down
// ---------------------------------------------------------------------------------------------

/// Up (HTTP and SOCKS5 proxies work); the server stops and stays away: a new HTTP proxy
/// request waits `--tunnel-wait 3` and gets 503 with `Retry-After`, a SOCKS5 request fails,
/// each within 8 s; the server comes back, erebus is up again and both proxies work.
fn outage_gives_503_then_recovers(runtime: &str) {
    let name = format!("outage_gives_503_then_recovers_{runtime}");
    if !netns::should_run_interop(&name) {
        return;
    }
    let started = Instant::now();
    let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).unwrap();
    let config = profile_with(&server, "outage.ovpn", &[FAST_RETRY]);
    let launch = Launch {
        socks: true,
        extra: &["--tunnel-wait", "3"],
        ..Launch::new(&config, runtime)
    };
    let mut erebus = launch.start(&server);
    let url = server.http_url();
    page_works(&server);
    let socks_page = curl(&server, &["--socks5-hostname", SOCKS_PROXY, &url]);
    assert!(String::from_utf8_lossy(&socks_page).contains(HTTP_MARKER));

    server.stop_openvpn(ServerStop::Terminate).unwrap();
    wait_reconnecting(&server, &mut erebus, 0, Duration::from_secs(5));

    // HTTP: the status code after the response headers (-D - puts them on stdout too).
    let asking = Instant::now();
    let http = curl_raw(
        &server,
        &[
            "-s",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "20",
            "-x",
            HTTP_PROXY,
            &url,
        ],
        Duration::from_secs(30),
    );
    let http_time = asking.elapsed();
    let answer = http.stdout_text();
    assert!(
        answer.ends_with("503"),
        "expected 503 while the tunnel is down, got {answer:?} ({http})\n{}",
        logs(&server)
    );
    assert!(
        answer
            .lines()
            .any(|line| line.to_ascii_lowercase().starts_with("retry-after:")),
        "no Retry-After in the 503:\n{answer}"
    );
    assert!(
        http_time < Duration::from_secs(8),
        "the 503 took {http_time:?} with --tunnel-wait 3"
    );

    let asking = Instant::now();
    let socks = curl_raw(
        &server,
        &[
            "-sS",
            "--max-time",
            "20",
            "--socks5-hostname",
            SOCKS_PROXY,
            &url,
        ],
        Duration::from_secs(30),
    );
    let socks_time = asking.elapsed();
    assert!(
        !socks.success(),
        "SOCKS5 succeeded while the tunnel is down: {socks}"
    );
    assert!(
        socks_time < Duration::from_secs(8),
        "the SOCKS5 failure took {socks_time:?} with --tunnel-wait 3: {socks}"
    );
    assert!(
        erebus.exit_status().is_none(),
        "erebus exited during the outage\n{}",
        logs(&server)
    );

    server.start_openvpn_again().unwrap();
    wait_up(&server, &mut erebus, 2, Duration::from_secs(30));
    page_works(&server);
    let socks_page = curl(&server, &["--socks5-hostname", SOCKS_PROXY, &url]);
    assert!(String::from_utf8_lossy(&socks_page).contains(HTTP_MARKER));
    assert_runs_as_nobody(&erebus);
    stop_cleanly(&server, erebus);
    eprintln!(
        "{name}: 503 after {http_time:?}, SOCKS5 failure ({:?}) after {socks_time:?}, total {:?}",
        socks.status.code(),
        started.elapsed()
    );
}

#[test]
fn outage_gives_503_then_recovers_mio() {
    outage_gives_503_then_recovers("mio");
}

#[test]
fn outage_gives_503_then_recovers_smol() {
    outage_gives_503_then_recovers("smol");
}

#[test]
fn outage_gives_503_then_recovers_threads() {
    outage_gives_503_then_recovers("threads");
}

/// A 64 MiB download at 4 MB/s runs when the server stops: erebus closes it on the local side
/// and curl ends with an error well before it could have finished; after the restart a 4 MiB
/// download is intact.
fn download_cut_by_restart(runtime: &str) {
    let name = format!("download_cut_by_restart_{runtime}");
    if !netns::should_run_interop(&name) {
        return;
    }
    let started = Instant::now();
    let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).unwrap();
    let config = profile_with(&server, "cut.ovpn", &[FAST_RETRY]);
    let mut erebus = Launch::new(&config, runtime).start(&server);

    const BIG: usize = 64 << 20;
    let url = format!("{}bytes/{BIG}", server.http_url());
    let curl_program = curl_path();
    let mut download = server
        .spawn_in_client(
            RunAs::Nobody,
            &[
                &curl_program,
                "-sS",
                "--fail",
                "--max-time",
                "60",
                "--limit-rate",
                "4M",
                "-o",
                "/dev/null",
                "-w",
                "downloaded %{size_download}\n",
                "-x",
                HTTP_PROXY,
                &url,
            ],
            "cut-download.log",
        )
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        download.exit_status().is_none(),
        "the 64 MiB download ended before the server stopped:\n{}",
        download.log_tail(10)
    );

    server.stop_openvpn(ServerStop::Terminate).unwrap();
    let stopped = Instant::now();
    let mut status = None;
    let ended = wait_for(Duration::from_secs(20), || {
        status = download.exit_status();
        status.is_some()
    });
    assert!(
        ended,
        "the download still runs 20 s after the server stopped:\n{}\n{}",
        download.log_tail(10),
        logs(&server)
    );
    let cut_after = stopped.elapsed();
    let status = status.unwrap();
    assert!(
        !status.success(),
        "the download ended successfully across the server's stop:\n{}",
        download.log_tail(10)
    );
    let curl_says = download.log_tail(10);
    assert!(
        !curl_says.contains(&format!("downloaded {BIG}")),
        "curl got every byte:\n{curl_says}"
    );

    server.start_openvpn_again().unwrap();
    wait_up(&server, &mut erebus, 2, Duration::from_secs(30));
    download_works(&server);
    assert_runs_as_nobody(&erebus);
    stop_cleanly(&server, erebus);
    eprintln!(
        "{name}: curl ended with {status} {cut_after:?} after the stop ({}), total {:?}",
        curl_says.trim().replace('\n', " | "),
        started.elapsed()
    );
}

#[test]
fn download_cut_by_restart_mio() {
    download_cut_by_restart("mio");
}

#[test]
fn download_cut_by_restart_smol() {
    download_cut_by_restart("smol");
}

#[test]
fn download_cut_by_restart_threads() {
    download_cut_by_restart("threads");
}

// ---------------------------------------------------------------------------------------------
// A refused password is final
// ---------------------------------------------------------------------------------------------

/// A wrong password (with `connect-retry 1 2` in the profile) ends erebus with status 3 at once:
/// `AUTH_FAILED` in its log and no reconnection attempt.
fn wrong_password_exits_3_at_once(runtime: &str) {
    let name = format!("wrong_password_exits_3_at_once_{runtime}");
    if !netns::should_run_interop(&name) {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::TlsAuthUserPass, Transport::Udp).unwrap();
    let config = profile_with(&server, "wrong-password.ovpn", &[FAST_RETRY]);
    let wrong = server.wrong_credentials_path();
    let launch = Launch {
        credentials: Some(&wrong),
        ..Launch::new(&config, runtime)
    };
    let started = Instant::now();
    let mut erebus = launch.spawn(&server);
    // Before anything reaps it: even a process that has already exited shows its uid.
    assert_runs_as_nobody(&erebus);
    let mut status = None;
    let exited = wait_for(Duration::from_secs(15), || {
        status = erebus.exit_status();
        status.is_some()
    });
    let elapsed = started.elapsed();
    assert!(
        exited,
        "erebus still runs 15 s after a wrong password\n{}",
        logs(&server)
    );
    let status = status.unwrap();
    let log = erebus_log(&server);
    assert_eq!(status.code(), Some(3), "{status}\n{log}");
    assert!(log.contains("AUTH_FAILED"), "{log}");
    assert!(
        events(&log, "reconnecting").is_empty() && !log.contains("erebus: reconnecting"),
        "erebus tried again after AUTH_FAILED:\n{log}"
    );
    assert!(
        !log.contains(netns::WRONG_AUTH_PASSWORD),
        "the password leaked into the log"
    );
    eprintln!("{name}: exit 3 after {elapsed:?}");
}

#[test]
fn wrong_password_exits_3_at_once_mio() {
    wrong_password_exits_3_at_once("mio");
}

#[test]
fn wrong_password_exits_3_at_once_smol() {
    wrong_password_exits_3_at_once("smol");
}

#[test]
fn wrong_password_exits_3_at_once_threads() {
    wrong_password_exits_3_at_once("threads");
}
