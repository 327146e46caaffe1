//! The resource limits as a user meets them: erebus started with `--max-connections 4` and
//! `--tcp-buffer`/`--receive-memory` set, against a real OpenVPN 2.6 server, running as nobody.
//!
//! A python client in the client namespace holds four connections open with half-sent
//! requests, the limit. A fifth HTTP client then gets `503` with `Retry-After`, and a SOCKS5
//! client a general failure reply (0x01). erebus logs a warning naming the limit and the
//! option. Once the held connections close, a request is served again, and the page arrives
//! whole (the buffer options only have to be accepted here). Under the mio and smol drivers.

#![allow(clippy::unwrap_used)] // Test code.

mod e2e;

use std::time::Duration;

use erebus_testvectors::netns::{
    self, HTTP_MARKER, HTTP_PORT, OpenVpnServer, RunAs, SERVER_TUNNEL_ADDR, ServerProfile,
    Transport,
};

/// The limit erebus runs with in this test.
const MAX_CONNECTIONS: usize = 4;

/// The client: holds `MAX_CONNECTIONS` half-sent requests, checks the refusals of an HTTP and a
/// SOCKS5 client, releases the held ones, and checks that a request is served again. Prints
/// one `ok ...` line per step, or exits non-zero naming what was wrong.
const CLIENT_PY: &str = r#"
import socket, sys, time

held_count, web_ip, web_port, marker = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
url = "http://%s:%d/" % (web_ip, web_port)
request = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n" % (url, web_ip, web_port)).encode()

def fail(what):
    print("FAIL " + what, flush=True)
    sys.exit(1)

def read_all(s):
    s.settimeout(10)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk

held = []
for _ in range(held_count):
    s = socket.create_connection(("127.0.0.1", 8080), timeout=10)
    s.sendall(b"GET " + url.encode())  # the rest of the request line never comes
    held.append(s)
time.sleep(0.5)
print("ok held %d" % len(held), flush=True)

s = socket.create_connection(("127.0.0.1", 8080), timeout=10)
s.sendall(request)
answer = read_all(s)
s.close()
head = answer.split(b"\r\n\r\n", 1)[0]
if not head.startswith(b"HTTP/1.1 503 "):
    fail("beyond the limit: %r" % answer[:200])
if b"\r\nRetry-After: " not in head:
    fail("503 without Retry-After: %r" % head)
print("ok http refused: %s" % head.split(b"\r\n")[0].decode(), flush=True)

s = socket.create_connection(("127.0.0.1", 1080), timeout=10)
s.sendall(b"\x05\x01\x00")
if s.recv(2) != b"\x05\x00":
    fail("SOCKS5 method selection")
s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(web_ip) + web_port.to_bytes(2, "big"))
reply = read_all(s)
s.close()
if reply[:2] != b"\x05\x01":
    fail("SOCKS5 beyond the limit: %r" % reply[:10])
print("ok socks refused: reply %d" % reply[1], flush=True)

for s in held:
    s.close()
time.sleep(0.5)
s = socket.create_connection(("127.0.0.1", 8080), timeout=10)
s.sendall(request)
answer = read_all(s)
s.close()
if not answer.startswith(b"HTTP/1.1 200 ") or marker.encode() not in answer:
    fail("after the held connections closed: %r" % answer[:200])
print("ok served again", flush=True)
"#;

fn limits_refuse_and_recover(runtime: &str) {
    let name = format!("connections_beyond_the_limit_are_refused_with_{runtime}");
    if !netns::should_run_interop(&name) {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).unwrap();
    let config = server.client_profile_path();
    let limit = MAX_CONNECTIONS.to_string();
    let mut erebus = e2e::start_erebus(
        &server,
        &[
            "--config",
            config.to_str().unwrap(),
            "--runtime",
            runtime,
            "--max-connections",
            &limit,
            "--tcp-buffer",
            "256K",
            "--receive-memory",
            "1M",
        ],
    );
    let script = server.instance_dir().join("limits.py");
    std::fs::write(&script, CLIENT_PY).unwrap();
    let python = netns::find_program("python3").unwrap();
    let out = server
        .run_in_client(
            RunAs::Root,
            &[
                python.to_str().unwrap(),
                script.to_str().unwrap(),
                &limit,
                &SERVER_TUNNEL_ADDR.to_string(),
                &HTTP_PORT.to_string(),
                HTTP_MARKER,
            ],
            Duration::from_secs(60),
        )
        .unwrap();
    let report = out.stdout_text();
    eprintln!("{name}:\n{report}");
    assert!(
        out.success() && report.contains("ok served again"),
        "{report}\n{}\nerebus log:\n{}",
        out.stderr_text(),
        erebus.log_tail(30)
    );
    let log = e2e::read_log(erebus.log_path());
    assert!(
        log.contains(&format!(
            "refused: {MAX_CONNECTIONS} are open, the limit (--max-connections)"
        )),
        "the refusal is logged:\n{log}"
    );
    assert!(erebus.exit_status().is_none(), "erebus is still running");
    assert!(erebus.stop(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn connections_beyond_the_limit_are_refused_with_mio() {
    limits_refuse_and_recover("mio");
}

#[test]
fn connections_beyond_the_limit_are_refused_with_smol() {
    limits_refuse_and_recover("smol");
}
