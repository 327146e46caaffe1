//! erebus never sends a TCP segment larger than the peer's MSS or the tunnel allows, whatever
//! the sizes of the local writes, seen in a capture on the server's tun device.
//!
//! The OpenVPN 2.6 server runs `tun-mtu 1280` and pushes it. Through erebus (running as
//! nobody), a client uploads 4 MiB in writes of 1 byte to 100 KB each:
//! - to the harness's web server, whose kernel offers MSS 1240 (the tun's 1280 less 40): every
//!   segment from erebus carries at most 1240 bytes, and its SYN offers no more than that;
//! - to a sink that offers MSS 600 (`TCP_MAXSEG` on its listening socket): at most 600 each;
//! - with `mssfix 1000` in the profile: the SYN offers the MSS `mssfix` gives for the
//!   negotiated cipher (AES-256-GCM) and no segment is larger.
//!
//! Every upload must arrive whole: the server side counts the bytes. Under the mio and smol
//! drivers.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod e2e;

use std::time::Duration;

use erebus_testvectors::netns::{
    self, CLIENT_TUNNEL_ADDR, ControlWrap, HTTP_PORT, OpenVpnServer, RunAs, ServerOptions,
    TlsSetup, Transport,
};

/// The tunnel MTU the server runs and pushes.
const TUN_MTU: usize = 1280;
/// The MSS the server's kernel offers on that tunnel: the MTU less IPv4 and TCP headers.
const ORIGIN_MSS: usize = TUN_MTU - 40;
/// The port of the sink, and the MSS it offers.
const SINK_PORT: u16 = 9000;
const SINK_MSS: usize = 600;
/// Bytes each upload carries.
const UPLOAD: usize = 4 << 20;
/// `mssfix 1000` with AES-256-GCM over UDP: 1000 less the data packet's overhead (opcode and
/// peer id 4, packet id 4, tag 16) less IPv4 and TCP headers (40).
const MSSFIX: usize = 1000;
const MSSFIX_MSS: usize = MSSFIX - 4 - 4 - 16 - 40;

/// The sink, in the server namespace: offers MSS `SINK_MSS`, reads each connection to its end
/// and answers with the byte count.
const SINK_PY: &str = r#"
import socket, sys, threading
addr, port, mss = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
ls.bind((addr, port))
ls.listen(16)
print("sink: listening", flush=True)
def serve(c):
    n = 0
    while True:
        data = c.recv(1 << 20)
        if not data:
            break
        n += len(data)
    c.sendall(b"got %d\n" % n)
    c.close()
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// The uploader, in the client namespace: through erebus's HTTP proxy, a CONNECT to the sink
/// or a POST to the web server, writing `UPLOAD` bytes in writes of many sizes.
const UPLOAD_PY: &str = r#"
import socket, sys
target, host, port, total = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sizes = [1, 2999, 65536, 7, 1500, 100000, 1241, 601, 3]
s = socket.create_connection(("127.0.0.1", 8080), timeout=60)
if target == "sink":
    s.sendall(b"CONNECT %s:%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (host.encode(), port, host.encode()))
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
else:
    s.sendall(b"POST http://%s:%d/upload HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (host.encode(), port, host.encode(), total))
sent, i = 0, 0
chunk = bytes(range(256)) * 400
while sent < total:
    n = min(sizes[i % len(sizes)], total - sent)
    s.sendall(chunk[:n] if n <= len(chunk) else (chunk * (n // len(chunk) + 1))[:n])
    sent += n
    i += 1
if target == "sink":
    s.shutdown(socket.SHUT_WR)
answer = b""
while True:
    data = s.recv(65536)
    if not data:
        break
    answer += data
print(answer.decode(errors="replace"), flush=True)
"#;

/// One segment from erebus in tcpdump's output: its destination port, whether it is a SYN,
/// the MSS it offers (SYN only) and its payload length.
#[derive(Debug)]
struct Sent {
    to_port: u16,
    syn: bool,
    mss: Option<usize>,
    length: usize,
}

fn sent_by_erebus(capture: &str) -> Vec<Sent> {
    let ours = format!(" IP {CLIENT_TUNNEL_ADDR}.");
    capture
        .lines()
        .filter_map(|line| {
            let rest = &line[line.find(&ours)? + ours.len()..];
            let (_, rest) = rest.split_once(" > ")?;
            let (to, rest) = rest.split_once(": Flags [")?;
            let to_port = to.rsplit('.').next()?.parse().ok()?;
            let (flags, rest) = rest.split_once(']')?;
            let mss = rest
                .split_once("mss ")
                .and_then(|(_, m)| m.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|m| m.parse().ok());
            let length = rest
                .rsplit_once("length ")
                .and_then(|(_, l)| l.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            Some(Sent {
                to_port,
                syn: flags.contains('S'),
                mss,
                length,
            })
        })
        .collect()
}

/// Runs the uploader to `target` (`sink` or `web`) and checks that all of it arrived.
fn upload(server: &OpenVpnServer, target: &str) {
    let script = server.instance_dir().join("upload.py");
    std::fs::write(&script, UPLOAD_PY).unwrap();
    let python = netns::find_program("python3").unwrap();
    let port = if target == "sink" {
        SINK_PORT
    } else {
        HTTP_PORT
    };
    let out = server
        .run_in_client(
            RunAs::Nobody,
            &[
                python.to_str().unwrap(),
                script.to_str().unwrap(),
                target,
                &server.server_tunnel_addr().to_string(),
                &port.to_string(),
                &UPLOAD.to_string(),
            ],
            Duration::from_secs(120),
        )
        .unwrap();
    assert!(out.success(), "{target} upload failed: {out}");
    let answer = out.stdout_text();
    let whole = if target == "sink" {
        answer.contains(&format!("got {UPLOAD}"))
    } else {
        answer.starts_with("HTTP/1.") && answer.contains(&UPLOAD.to_string())
    };
    assert!(whole, "the {target} upload did not arrive whole: {answer}");
}

/// The largest payload erebus sent to `port`, and the MSS its SYNs to it offered.
fn largest_and_offered(sent: &[Sent], port: u16) -> (usize, Vec<usize>) {
    let to_port: Vec<&Sent> = sent.iter().filter(|s| s.to_port == port).collect();
    let largest = to_port.iter().map(|s| s.length).max().unwrap_or(0);
    let offered = to_port
        .iter()
        .filter(|s| s.syn)
        .filter_map(|s| s.mss)
        .collect();
    (largest, offered)
}

fn segments_fit(runtime: &str) {
    let name = format!("segments_fit_the_peer_mss_and_the_tunnel_with_{runtime}");
    if !netns::should_run_interop(&name) {
        return;
    }
    let mut setup = TlsSetup::new(ControlWrap::TlsCrypt);
    setup.server_lines = vec![
        format!("tun-mtu {TUN_MTU}"),
        format!("push \"tun-mtu {TUN_MTU}\""),
    ];
    let server =
        OpenVpnServer::start_setup(setup, Transport::Udp, &ServerOptions::default()).unwrap();
    let python = netns::find_program("python3").unwrap();
    let sink_script = server.instance_dir().join("sink.py");
    std::fs::write(&sink_script, SINK_PY).unwrap();
    let _sink = server
        .spawn_in_server_until(
            &[
                python.to_str().unwrap(),
                sink_script.to_str().unwrap(),
                &server.server_tunnel_addr().to_string(),
                &SINK_PORT.to_string(),
                &SINK_MSS.to_string(),
            ],
            "sink.log",
            "sink: listening",
        )
        .unwrap();

    // The pushed MTU alone: segments fit the origin's MSS and the sink's smaller one.
    let filter = format!("tcp and host {CLIENT_TUNNEL_ADDR}");
    let tcpdump = server
        .start_server_capture(&filter, "tcpdump-mtu.log")
        .unwrap();
    let erebus = e2e::start_erebus_with_runtime(&server, runtime);
    let log = e2e::read_log(erebus.log_path());
    assert!(
        log.contains(&format!("mtu {TUN_MTU}")),
        "the pushed tun-mtu is taken:\n{log}"
    );
    upload(&server, "web");
    upload(&server, "sink");
    std::thread::sleep(Duration::from_millis(300));
    tcpdump.stop(Duration::from_secs(3));
    assert!(erebus.stop(Duration::from_secs(10)).unwrap().success());
    let text = e2e::read_log(&server.instance_dir().join("tcpdump-mtu.log"));
    let sent = sent_by_erebus(&text);
    let (web_largest, web_offered) = largest_and_offered(&sent, HTTP_PORT);
    let (sink_largest, sink_offered) = largest_and_offered(&sent, SINK_PORT);
    eprintln!(
        "{name}: tun-mtu {TUN_MTU}: to the web server (MSS {ORIGIN_MSS}) largest {web_largest}, \
         SYN offered {web_offered:?}; to the sink (MSS {SINK_MSS}) largest {sink_largest}"
    );
    assert!(
        web_offered.iter().all(|&mss| mss <= ORIGIN_MSS) && !web_offered.is_empty(),
        "SYN offered more than the tunnel carries: {web_offered:?}"
    );
    assert!(
        (ORIGIN_MSS / 2..=ORIGIN_MSS).contains(&web_largest),
        "segments of {web_largest} bytes against MSS {ORIGIN_MSS}"
    );
    assert!(!sink_offered.is_empty(), "{text}");
    assert!(
        (SINK_MSS / 2..=SINK_MSS).contains(&sink_largest),
        "segments of {sink_largest} bytes against the sink's MSS {SINK_MSS}"
    );

    // With mssfix in the profile: erebus's own cap, below the tunnel's.
    let profile = format!("{}\nmssfix {MSSFIX}\n", server.client_profile());
    let path = server.write_client_file("mssfix.ovpn", &profile).unwrap();
    let tcpdump = server
        .start_server_capture(&filter, "tcpdump-mssfix.log")
        .unwrap();
    let erebus = e2e::start_erebus(
        &server,
        &[
            "--config",
            path.to_str().unwrap(),
            "--runtime",
            runtime,
            "--no-socks",
        ],
    );
    upload(&server, "web");
    std::thread::sleep(Duration::from_millis(300));
    tcpdump.stop(Duration::from_secs(3));
    assert!(erebus.stop(Duration::from_secs(10)).unwrap().success());
    let text = e2e::read_log(&server.instance_dir().join("tcpdump-mssfix.log"));
    let (largest, offered) = largest_and_offered(&sent_by_erebus(&text), HTTP_PORT);
    eprintln!("{name}: mssfix {MSSFIX}: largest {largest}, SYN offered {offered:?}");
    assert_eq!(offered, [MSSFIX_MSS], "the SYN offers what mssfix gives");
    assert!(
        (MSSFIX_MSS / 2..=MSSFIX_MSS).contains(&largest),
        "segments of {largest} bytes against mssfix's {MSSFIX_MSS}"
    );
}

#[test]
fn segments_fit_the_peer_mss_and_the_tunnel_with_mio() {
    segments_fit("mio");
}

#[test]
fn segments_fit_the_peer_mss_and_the_tunnel_with_smol() {
    segments_fit("smol");
}
