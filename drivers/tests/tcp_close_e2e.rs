//! erebus closes proxied TCP connections as RFC 9293 says, seen from the server's side of the
//! tunnel: a capture on the OpenVPN server's tun device shows no reset from erebus and no FIN
//! the origin had to send twice, whether the origin closes first (`Connection: close` inside a
//! CONNECT tunnel, with a client that reads until the end of the stream) or erebus does (the
//! proxy knows the response's length and closes its upstream). Against a real OpenVPN 2.6
//! server, erebus running as nobody, under the mio and smol drivers.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod e2e;

use std::time::Duration;

use erebus_testvectors::netns::{
    self, CLIENT_TUNNEL_ADDR, HTTP_MARKER, HTTP_PORT, OpenVpnServer, RunAs, ServerProfile,
    Transport,
};

use e2e::read_log as read;

/// One captured segment: source, destination and the flags tcpdump printed.
#[derive(Debug)]
struct Segment {
    from: String,
    to: String,
    flags: String,
}

fn segments(capture: &str) -> Vec<Segment> {
    capture
        .lines()
        .filter_map(|line| {
            let rest = &line[line.find(" IP ")? + 4..];
            let (from, rest) = rest.split_once(" > ")?;
            let (to, rest) = rest.split_once(": Flags [")?;
            let (flags, _) = rest.split_once(']')?;
            Some(Segment {
                from: from.to_owned(),
                to: to.to_owned(),
                flags: flags.to_owned(),
            })
        })
        .collect()
}

fn closes_cleanly(runtime: &str) {
    let name = format!("tcp_close_is_clean_on_the_server_side_with_{runtime}");
    if !netns::should_run_interop(&name) {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).unwrap();
    let erebus = e2e::start_erebus_with_runtime(&server, runtime);

    // The server's tun device carries the inner packets as the origin sees them.
    let filter = format!("tcp and host {CLIENT_TUNNEL_ADDR} and port {HTTP_PORT}");
    let capture = server
        .start_server_capture(&filter, "tcpdump-tun.log")
        .unwrap();
    let log = server.instance_dir().join("tcpdump-tun.log");

    // The origin closes first: through a CONNECT tunnel, a client that reads until the end of
    // the stream asks with `Connection: close`; the origin answers and hangs up, and only
    // then does the client close. (curl would close as soon as it has the response's length.)
    let python = netns::find_program("python3").unwrap();
    let script = format!(
        "import socket\n\
         s = socket.create_connection(('127.0.0.1', 8080))\n\
         s.sendall(b'CONNECT {origin}:{HTTP_PORT} HTTP/1.1\\r\\nHost: {origin}\\r\\n\\r\\n')\n\
         head = b''\n\
         while not head.endswith(b'\\r\\n\\r\\n'):\n\
         \x20   head += s.recv(1)\n\
         s.sendall(b'GET / HTTP/1.1\\r\\nHost: {origin}\\r\\nConnection: close\\r\\n\\r\\n')\n\
         body = b''\n\
         while True:\n\
         \x20   chunk = s.recv(65536)\n\
         \x20   if not chunk:\n\
         \x20       break\n\
         \x20   body += chunk\n\
         s.close()\n\
         print(body.decode())\n",
        origin = server.server_tunnel_addr()
    );
    let out = server
        .run_in_client(
            RunAs::Nobody,
            &[python.to_str().unwrap(), "-c", &script],
            Duration::from_secs(30),
        )
        .unwrap();
    assert!(out.success(), "{out}");
    assert!(out.stdout_text().contains(HTTP_MARKER), "{out}");
    // erebus closes first: the proxy has the whole response (its length is known) and closes
    // its upstream when curl leaves.
    let curl = netns::find_program("curl").unwrap();
    let url = server.http_url();
    let out = server
        .run_in_client(
            RunAs::Nobody,
            &[
                curl.to_str().unwrap(),
                "-sS",
                "--fail",
                "-x",
                "http://127.0.0.1:8080",
                &url,
            ],
            Duration::from_secs(30),
        )
        .unwrap();
    assert!(out.success(), "{}", out.stderr_text());
    assert!(out.stdout_text().contains(HTTP_MARKER));
    // Retransmitted FINs come after 200 ms or more: give them time to show.
    std::thread::sleep(Duration::from_millis(1500));
    capture.stop(Duration::from_secs(3));
    let text = read(&log);
    let seen = segments(&text);
    let ours = format!("{CLIENT_TUNNEL_ADDR}.");
    let origin = format!("{}.{HTTP_PORT}", server.server_tunnel_addr());
    let resets: Vec<&Segment> = seen
        .iter()
        .filter(|s| s.from.starts_with(&ours) && s.flags.contains('R'))
        .collect();
    assert!(resets.is_empty(), "erebus reset connections:\n{text}");
    let mut origin_fins: Vec<&str> = seen
        .iter()
        .filter(|s| s.from == origin && s.flags.contains('F'))
        .map(|s| s.to.as_str())
        .collect();
    let connections = seen
        .iter()
        .filter(|s| s.from.starts_with(&ours) && s.flags.contains('S'))
        .count();
    assert_eq!(connections, 2, "{text}");
    assert_eq!(
        origin_fins.len(),
        2,
        "one FIN from the origin per connection, none sent twice:\n{text}"
    );
    origin_fins.dedup();
    assert_eq!(origin_fins.len(), 2, "{text}");
    // Who closed first, connection by connection (in the order they were opened).
    let first_fins: Vec<bool> = origin_fins
        .iter()
        .map(|client| {
            let first = seen
                .iter()
                .find(|s| {
                    s.flags.contains('F')
                        && ((s.from == origin && s.to == *client)
                            || (s.from == *client && s.to == origin))
                })
                .unwrap();
            first.from == origin
        })
        .collect();
    assert_eq!(
        first_fins,
        [true, false],
        "the origin closes first, then erebus:\n{text}"
    );
    assert!(erebus.stop(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn tcp_close_is_clean_on_the_server_side_with_mio() {
    closes_cleanly("mio");
}

#[test]
fn tcp_close_is_clean_on_the_server_side_with_smol() {
    closes_cleanly("smol");
}
