//! erebus used as a library, end to end against a real OpenVPN 2.6 server in network
//! namespaces the test creates: the examples run unprivileged (as nobody) in the client
//! namespace, each runs a driver inside its own process and fetches the harness's page
//! through a connector, by a name only the tunnel's DNS server knows. No listening socket
//! is involved, and nothing else leads to the server's tunnel address.
//!
//! * `blocking_get`: the mio driver on a thread, a blocking `std` stream, an HTTP/1.1 request
//!   written by hand;
//! * `hyper_client`: the smol driver, a futures-io stream, hyper 1.x on top.
//!
//! `cargo test` builds the examples; `cargo test --test library_e2e` alone does not, so the
//! test builds them first (a no-op when they are fresh) with the profile it was built with.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use erebus_testvectors::netns::{
    self, HTTP_MARKER, OpenVpnServer, RunAs, ServerProfile, Transport,
};

const EXAMPLES: [&str; 2] = ["blocking_get", "hyper_client"];

/// The path of example `name`, built with this test's profile (tests live in
/// `target/<profile>/deps/`, examples in `target/<profile>/examples/`).
fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let examples = BUILT.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
        let target_dir = profile_dir.parent().unwrap();
        let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
            "debug" => "dev",
            other => other,
        };
        let examples = profile_dir.join("examples");
        if EXAMPLES.iter().all(|name| is_fresh(&examples.join(name))) {
            // `cargo test` of the workspace built them along with this test: building again
            // with another feature set would only rebuild the dependencies.
            return examples;
        }
        let mut build = Command::new(env!("CARGO"));
        // What cargo set for this test process only: left in, it would change the
        // fingerprints of crates whose build scripts watch it (ring) and make this build and
        // the next `cargo test` rebuild each other's dependencies.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_PKG_")
                || matches!(
                    &*key,
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                )
            {
                build.env_remove(&*key);
            }
        }
        build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", target_dir)
            .args(["build", "--quiet", "-p", "erebus", "--profile", profile]);
        for example in EXAMPLES {
            build.args(["--example", example]);
        }
        let status = build.status().unwrap();
        assert!(status.success(), "building the examples failed: {status}");
        profile_dir.join("examples")
    });
    let path = examples.join(name);
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

/// Whether `binary` exists and is newer than every source file of the drivers crate.
fn is_fresh(binary: &std::path::Path) -> bool {
    fn newest(dir: &std::path::Path) -> Option<std::time::SystemTime> {
        let mut latest = None;
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let path = entry.path();
            let modified = if path.is_dir() {
                newest(&path)
            } else {
                entry.metadata().ok()?.modified().ok()
            };
            latest = latest.max(modified);
        }
        latest
    }
    let Ok(built) = std::fs::metadata(binary).and_then(|m| m.modified()) else {
        return false;
    };
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    ["src", "examples"]
        .iter()
        .filter_map(|dir| newest(&crate_dir.join(dir)))
        .all(|source| source <= built)
}

/// Runs example `name` as nobody in the client namespace against a static-key server over UDP
/// and checks it printed the page, resolved the name through the tunnel and left gracefully.
fn fetch_page(name: &str) {
    if !netns::should_run_interop(&format!("library_{name}")) {
        return;
    }
    let binary = example(name);
    let server = OpenVpnServer::start(ServerProfile::StaticKey, Transport::Udp).unwrap();
    let config = server.client_profile_path();
    let url = server.http_name_url();
    let output = server
        .run_in_client(
            RunAs::Nobody,
            &[
                binary.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
                "--dns",
                &server.server_tunnel_addr().to_string(),
                &url,
            ],
            Duration::from_secs(60),
        )
        .unwrap();
    let (stdout, stderr) = (output.stdout_text(), output.stderr_text());
    assert!(
        output.success(),
        "{name} {url} failed:\n{stderr}\n--- server ---\n{}",
        server.server_log_tail(20)
    );
    assert!(stdout.contains(HTTP_MARKER), "{name} printed:\n{stdout}");
    assert!(stderr.contains("200 OK"), "{name} reported:\n{stderr}");

    // The name went to the DNS server behind the tunnel, from the client's tunnel address,
    // and the page was asked for from there too.
    let client = server.client_tunnel_addr().to_string();
    let dns_log = std::fs::read_to_string(server.dnsmasq_log()).unwrap();
    assert!(
        dns_log.contains(&format!("query[A] {} from {client}", netns::DNS_NAME)),
        "dnsmasq did not see the query through the tunnel:\n{dns_log}"
    );
    let httpd_log = std::fs::read_to_string(server.httpd_log()).unwrap();
    assert!(
        httpd_log
            .lines()
            .any(|l| l.contains(&client) && l.contains("GET / ")),
        "the HTTP server did not see the request from {client}:\n{httpd_log}"
    );

    // The example stopped its driver gracefully: the exit notification reached the server.
    let notified = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        std::fs::read_to_string(server.server_log())
            .is_ok_and(|l| l.contains("OCC exit message received"))
    });
    assert!(
        notified,
        "the server did not see the exit notification:\n{}",
        server.server_log_tail(20)
    );
}

#[test]
fn blocking_std_stream_through_the_mio_driver() {
    fetch_page("blocking_get");
}

#[test]
fn hyper_over_the_smol_driver() {
    fetch_page("hyper_client");
}
