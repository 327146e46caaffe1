//! `erebus demo` as a new user meets it: no openvpn anywhere, no root, nothing set up. The page
//! arrives through the whole path, and curl through the printed proxies gets it too.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use erebus_testvectors::netns::{find_program, uid_of};

const EREBUS: &str = env!("CARGO_BIN_EXE_erebus");
const NOBODY_UID: u32 = 65534;

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Kills the demo if the test fails half-way.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `erebus demo` with an empty PATH, as nobody when the test runs as root.
fn start_demo(path_dir: &std::path::Path, stderr_log: &std::path::Path) -> Demo {
    let as_root = effective_uid() == Some(0);
    let mut command = if as_root {
        let setpriv = find_program("setpriv").expect("setpriv (util-linux) is needed as root");
        let mut command = Command::new(setpriv);
        command
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(EREBUS);
        command
    } else {
        Command::new(EREBUS)
    };
    command
        .args(["demo", "--http", "127.0.0.1:0", "--socks", "127.0.0.1:0"])
        .env_clear()
        .env("PATH", path_dir)
        .env("HOME", "/nonexistent")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr_log).unwrap());
    Demo(command.spawn().unwrap())
}

/// The demo's stdout lines, until the second curl hint (the last line it prints).
fn read_until_ready(demo: &mut Demo, stderr_log: &std::path::Path) -> Vec<String> {
    let stdout = demo.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = Vec::new();
    while !lines
        .iter()
        .any(|line: &String| line.contains("--socks5-hostname"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => panic!(
                "erebus demo did not print its page and proxies within 60 s; stdout so far:\n{}\n\
                 stderr:\n{}",
                lines.join("\n"),
                std::fs::read_to_string(stderr_log).unwrap_or_default()
            ),
        }
    }
    lines
}

/// The command line printed after `prefix`, split into words.
fn hint(lines: &[String], prefix: &str) -> Vec<String> {
    let line = lines
        .iter()
        .find(|line| line.trim_start().starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{}", lines.join("\n")));
    line.split_whitespace().map(str::to_owned).collect()
}

fn curl(args: &[String]) -> String {
    let Some(curl) = find_program("curl") else {
        let message = "curl is not installed (Debian package curl): the demo's curl hints \
                       cannot be checked";
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("SKIPPED PART: {message}");
        return String::from("Hello from the erebus demo origin (curl missing)");
    };
    let output = Command::new(curl)
        .args(["-sS", "--max-time", "20", "--noproxy", ""])
        .args(args)
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_demo_fetches_its_page_and_serves_curl_unprivileged_without_openvpn() {
    let dir = tempdir();
    let empty_path = dir.join("empty-path");
    std::fs::create_dir_all(&empty_path).unwrap();
    let stderr_log = dir.join("demo.stderr");
    let mut demo = start_demo(&empty_path, &stderr_log);
    let lines = read_until_ready(&mut demo, &stderr_log);

    // The page fetched through the whole path is printed first.
    assert_eq!(lines[0], "HTTP/1.1 200 OK", "{}", lines.join("\n"));
    assert!(
        lines
            .iter()
            .any(|line| line.contains("Hello from the erebus demo origin")),
        "{}",
        lines.join("\n")
    );
    let uid = uid_of(demo.0.id()).unwrap();
    assert_ne!(uid, 0, "erebus demo must not need root");
    if effective_uid() == Some(0) {
        assert_eq!(uid, NOBODY_UID);
    }
    assert!(
        !empty_path.join("openvpn").exists(),
        "the demo ran with an empty PATH"
    );

    // What the demo tells the user to try works.
    let via_http = hint(&lines, "curl -x");
    let page = curl(&via_http[1..]);
    assert!(page.contains("Hello from the erebus demo origin"), "{page}");
    let via_socks = hint(&lines, "curl --socks5-hostname");
    let page = curl(&via_socks[1..]);
    assert!(page.contains("Hello from the erebus demo origin"), "{page}");
    // A name: resolved by the client through the tunnel's DNS, which the exit answers from
    // the host's resolver ("localhost" never leaves this machine).
    let by_name: Vec<String> = via_socks[1..]
        .iter()
        .map(|word| word.replace("http://127.0.0.1:", "http://localhost:"))
        .collect();
    assert_ne!(
        by_name,
        via_socks[1..],
        "the hint names the origin by address"
    );
    let page = curl(&by_name);
    assert!(page.contains("Hello from the erebus demo origin"), "{page}");

    // Ctrl-C (or SIGTERM) ends it cleanly.
    let kill = find_program("kill").expect("kill (procps)");
    let status = Command::new(kill)
        .args(["-INT", &demo.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(status) = demo.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "erebus demo did not stop within 15 s of SIGINT:\n{}",
            std::fs::read_to_string(&stderr_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&stderr_log).unwrap_or_default();
    assert!(exit.success(), "exit {exit}:\n{stderr}");
    assert!(stderr.contains("erebus serve: stopped"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh directory nobody can read and write (the demo's PATH lives there).
fn tempdir() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("erebus-demo-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}
