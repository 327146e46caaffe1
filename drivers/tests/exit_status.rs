//! The binary as a user runs it, where no network namespace is needed: the exit statuses the
//! README promises for a bad profile (2) and an internal error (1), and files named in a
//! profile found relative to the profile's directory. The profiles name only loopback
//! addresses, and their servers are sockets these tests bound.

use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Command, Output, Stdio};

const EREBUS: &str = env!("CARGO_BIN_EXE_erebus");

/// Runs erebus with `args` and no stdin, and returns what it printed and its status.
fn run_erebus(args: &[&str]) -> Output {
    Command::new(EREBUS)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("erebus runs")
}

/// A point-to-point profile whose server is a bound (and silent) loopback UDP socket.
fn loopback_profile(dir: &Path, server: &UdpSocket) -> String {
    let port = server.local_addr().expect("a bound socket").port();
    let path = dir.join("loopback.ovpn");
    std::fs::write(
        &path,
        format!("remote 127.0.0.1 {port} udp4\ndev tun\nifconfig 10.9.0.2 10.9.0.1\n"),
    )
    .expect("the profile is written");
    path.to_str().expect("a UTF-8 temporary path").to_owned()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("erebus-exit-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

#[test]
fn a_profile_erebus_cannot_use_exits_2_naming_the_option() {
    let profile =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../testvectors/profiles/bad/dev-tap.ovpn");
    let output = run_erebus(&["--config", profile.to_str().unwrap(), "--no-socks"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("erebus: "), "{stderr}");
    assert!(
        stderr.contains("tap"),
        "the error names the option: {stderr}"
    );
}

#[test]
fn a_missing_profile_exits_2() {
    let output = run_erebus(&["--config", "/nonexistent/erebus/profile.ovpn"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("profile.ovpn"),
        "the error names the file: {stderr}"
    );
}

#[test]
fn a_listen_address_in_use_exits_1_naming_it() {
    let dir = temp_dir("listen");
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let profile = loopback_profile(&dir, &server);
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = run_erebus(&["--config", &profile, "--http", &addr, "--no-socks"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "the error names the address: {stderr}"
    );
    // It failed before the tunnel: nothing was sent to the server.
    server.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    assert!(
        server.recv(&mut buf).is_err(),
        "a datagram reached the server"
    );
    drop(taken);
    let _ = std::fs::remove_dir_all(dir);
}

/// The static key of `testvectors/profiles/static-key-p2p.ovpn`, as a file of its own.
fn static_key() -> String {
    let profile = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../testvectors/profiles/static-key-p2p.ovpn"),
    )
    .expect("the static-key profile");
    let start = profile.find("-----BEGIN").expect("a key block");
    let end = profile.find("</secret>").expect("the end of the key block");
    profile[start..end].to_owned()
}

#[test]
fn files_named_in_a_profile_are_found_next_to_it_whatever_the_working_directory() {
    let dir = temp_dir("relative");
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    std::fs::write(dir.join("keys/static.key"), static_key()).unwrap();
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let profile = |key: &str| {
        format!(
            "dev tun\nremote 127.0.0.1 {port} udp4\nifconfig 10.8.0.2 10.8.0.1\n\
             cipher AES-256-CBC\nauth SHA256\nsecret {key} 1\n"
        )
    };
    std::fs::write(dir.join("good.ovpn"), profile("keys/static.key")).unwrap();
    std::fs::write(dir.join("bad.ovpn"), profile("keys/missing.key")).unwrap();
    let start = |name: &str| {
        Command::new(EREBUS)
            .args(["--config", dir.join(name).to_str().unwrap()])
            .args(["--http", "127.0.0.1:0", "--no-socks"])
            // Not the profile's directory, and no `keys/` here.
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    // A key that is not there: a configuration error naming the file, at once.
    let missing = start("bad.ovpn").wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("missing.key"), "{stderr}");

    // The key next to the profile: erebus reads it and goes on to connect (a profile it could
    // not load would have ended it with status 2 before this line).
    let mut running = start("good.ovpn");
    let stderr = running.stderr.take().unwrap();
    let mut seen = Vec::new();
    let connecting = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map_while(Result::ok)
        .inspect(|line| seen.push(line.clone()))
        .any(|line| line.contains("erebus: connecting to 127.0.0.1"));
    let _ = running.kill();
    let _ = running.wait();
    assert!(connecting, "erebus did not get to connecting: {seen:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn limits_no_client_can_run_with_exit_2_naming_the_option() {
    let dir = temp_dir("limits");
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let profile = loopback_profile(&dir, &server);
    for (flag, value, named) in [
        (
            "--max-connections",
            "0",
            "--max-connections must be at least 1",
        ),
        (
            "--max-dns-queries",
            "0",
            "--max-dns-queries must be at least 1",
        ),
        ("--tcp-buffer", "1K", "--tcp-buffer must be between"),
        (
            "--receive-memory",
            "100",
            "--receive-memory must be at least",
        ),
        ("--tcp-buffer", "2X", "unknown unit"),
        ("--receive-memory", "lots", "is not a size"),
    ] {
        let output = run_erebus(&["--config", &profile, "--no-socks", flag, value]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(named), "{flag} {value}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
