//! erebus end to end against a real OpenVPN 2.6 server in network namespaces the test creates:
//! the `erebus` binary runs unprivileged (as nobody) in the client namespace with the
//! harness's profile, and curl reaches the HTTP server behind the tunnel through erebus's HTTP
//! proxy (absolute-form and CONNECT), its SOCKS5 proxy and a port forward. Nothing else leads
//! to the server's tunnel address, so every success went through erebus.
//!
//! The client namespace has a logging resolver of its own outside the tunnel (the harness's
//! `start_client_resolver`): a name erebus resolved outside the tunnel would show in its log,
//! and each session checks that none did, and that the trap does catch the namespace's system
//! lookups (getent's, and erebus's own for a server named by host name).

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::time::Duration;

use erebus_testvectors::netns::{
    self, CLIENT_RESOLVER_ANSWER, HTTP_MARKER, OpenVpnServer, RunAs, SERVER_TUNNEL_ADDR,
    ServerProfile, Transport,
};

const EREBUS: &str = env!("CARGO_BIN_EXE_erebus");
/// The uid of nobody, which the harness runs erebus as.
const NOBODY_UID: u32 = 65534;

/// Runs curl as nobody in the client namespace and returns its stdout; fails with curl's
/// stderr and erebus's log when curl fails.
fn curl(server: &OpenVpnServer, erebus_log: &str, args: &[&str]) -> Vec<u8> {
    let curl = netns::find_program("curl").expect("curl is installed");
    let curl = curl.to_str().unwrap();
    let mut argv = vec![curl, "-sS", "--fail", "--max-time", "60"];
    argv.extend_from_slice(args);
    let output = server
        .run_in_client(RunAs::Nobody, &argv, Duration::from_secs(90))
        .unwrap();
    assert!(
        output.success(),
        "curl {args:?} failed: {}\n--- erebus ---\n{erebus_log}",
        output.stderr_text()
    );
    output.stdout
}

fn session(profile: ServerProfile, transport: Transport, runtime: &str) {
    let name = format!("erebus_{}_{}_{runtime}", profile.name(), transport.name());
    if !netns::should_run_interop(&name) {
        return;
    }
    let mut server = OpenVpnServer::start(profile, transport).unwrap();
    // The leak trap: from here on the client namespace's system resolver is a logging dnsmasq
    // outside the tunnel.
    server.start_client_resolver().unwrap();
    let server = server;
    let config = server.client_profile_path();
    // Everything that leaves the client namespace on the outer link, for the leak check.
    let capture = server.instance_dir().join("outer.pcap");
    let tcpdump = netns::find_program("tcpdump").expect("tcpdump is installed");
    let tcpdump = server
        .spawn_in_client(
            RunAs::Root,
            &[
                tcpdump.to_str().unwrap(),
                "-i",
                "vcli",
                "-U",
                "-n",
                "-w",
                capture.to_str().unwrap(),
                "port 53 or port 1194",
            ],
            "tcpdump.log",
        )
        .unwrap();
    let listening = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        std::fs::read_to_string(server.instance_dir().join("tcpdump.log"))
            .is_ok_and(|l| l.contains("listening on"))
    });
    assert!(listening, "tcpdump did not start");
    let mut erebus = server
        .spawn_in_client(
            RunAs::Nobody,
            &[
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
            ],
            "erebus.log",
        )
        .unwrap();
    erebus
        .wait_until_listening(8080, Duration::from_secs(10))
        .unwrap();
    erebus
        .wait_until_listening(9090, Duration::from_secs(10))
        .unwrap();
    // erebus never needs root: the harness started it as nobody, and it still is.
    assert_eq!(netns::uid_of(erebus.pid()), Some(NOBODY_UID));
    let log = || erebus_log(&server);

    // Absolute-form GET through the HTTP proxy.
    let page = curl(
        &server,
        &log(),
        &["-x", "http://127.0.0.1:8080", &server.http_url()],
    );
    assert!(String::from_utf8_lossy(&page).contains(HTTP_MARKER));
    // CONNECT through the HTTP proxy.
    let page = curl(
        &server,
        &log(),
        &["-p", "-x", "http://127.0.0.1:8080", &server.http_url()],
    );
    assert!(String::from_utf8_lossy(&page).contains(HTTP_MARKER));
    // SOCKS5 to an address.
    let echo_url = format!("{}echo", server.http_url());
    let echo = curl(&server, &log(), &["--socks5", "127.0.0.1:1080", &echo_url]);
    let echo = String::from_utf8_lossy(&echo);
    assert!(echo.starts_with("GET /echo HTTP/1.1"), "{echo}");
    // Names only the tunnel's DNS server knows, resolved through the tunnel (socks5h
    // semantics), through SOCKS5 and through the HTTP proxy.
    let page = curl(
        &server,
        &log(),
        &[
            "--socks5-hostname",
            "127.0.0.1:1080",
            &server.http_name_url(),
        ],
    );
    assert!(String::from_utf8_lossy(&page).contains(HTTP_MARKER));
    let named_echo = format!("{}echo", server.http_name_url());
    let echo = curl(
        &server,
        &log(),
        &["-x", "http://127.0.0.1:8080", &named_echo],
    );
    assert!(String::from_utf8_lossy(&echo).contains("web.erebus.test"));
    let dns_log = std::fs::read_to_string(server.dnsmasq_log()).unwrap();
    assert!(
        dns_log.contains(&format!("query[A] {} from 10.8.0.2", netns::DNS_NAME)),
        "dnsmasq did not see erebus's query through the tunnel:\n{dns_log}"
    );
    // CONNECT to an HTTPS origin behind the tunnel, by name, certificate verified.
    let ca = server.ca_cert_path();
    let page = curl(
        &server,
        &log(),
        &[
            "--cacert",
            ca.to_str().unwrap(),
            "-x",
            "http://127.0.0.1:8080",
            &server.https_name_url(),
        ],
    );
    assert!(String::from_utf8_lossy(&page).contains(HTTP_MARKER));
    // The port forward.
    let page = curl(&server, &log(), &["http://127.0.0.1:9090/"]);
    assert!(String::from_utf8_lossy(&page).contains(HTTP_MARKER));

    // 64 MiB down, checked against the server's deterministic pattern.
    const DOWN: usize = 64 << 20;
    let url = format!("{}bytes/{DOWN}", server.http_url());
    let body = curl(&server, &log(), &["-x", "http://127.0.0.1:8080", &url]);
    assert_eq!(body.len(), DOWN);
    assert_eq!(
        netns::sha256(&body),
        netns::pattern_sha256(DOWN as u64),
        "download corrupted"
    );

    // 10 MiB up, counted and hashed by the server.
    let sh = netns::find_program("sh").unwrap();
    let upload = format!(
        "head -c 10485760 /dev/zero | {} -sS --fail --max-time 60 -x http://127.0.0.1:8080 \
         --data-binary @- -H 'Content-Type: application/octet-stream' {}upload",
        netns::find_program("curl").unwrap().display(),
        server.http_url()
    );
    let output = server
        .run_in_client(
            RunAs::Nobody,
            &[sh.to_str().unwrap(), "-c", &upload],
            Duration::from_secs(90),
        )
        .unwrap();
    assert!(
        output.success(),
        "upload failed: {}\n{}",
        output.stderr_text(),
        log()
    );
    let zeros_sha = netns::hex(&netns::sha256(&vec![0u8; 10 << 20]));
    assert_eq!(
        output.stdout_text().trim(),
        format!("bytes=10485760 sha256={zeros_sha}")
    );

    // Keep-alive: two requests on one client connection reuse one upstream stream (the
    // server sees the same source port twice).
    let output = curl(
        &server,
        &log(),
        &[
            "-i",
            "-x",
            "http://127.0.0.1:8080",
            &echo_url,
            &echo_url,
            "-w",
            "connects=%{num_connects}\n",
        ],
    );
    let text = String::from_utf8_lossy(&output);
    let peers: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("X-Erebus-Peer: "))
        .map(str::trim)
        .collect();
    assert_eq!(peers.len(), 2, "{text}");
    assert_eq!(
        peers[0], peers[1],
        "the upstream stream was not reused: {text}"
    );
    assert!(
        text.contains("connects=1") && text.contains("connects=0"),
        "{text}"
    );

    // 100 connections through the HTTP proxy, all open at once: each CONNECT is answered (and
    // the server has it established) before any of them sends its request.
    hold_concurrent_connections(&server, &log(), 100);

    // No DNS query left outside the tunnel: the outer link carried the tunnel and nothing on
    // port 53.
    tcpdump.stop(Duration::from_secs(5));
    let (tunnel_packets, dns_packets) = count_outer_packets(&std::fs::read(&capture).unwrap());
    assert!(
        tunnel_packets > 100,
        "the capture saw only {tunnel_packets} tunnel packets"
    );
    assert_eq!(dns_packets, 0, "DNS leaked outside the tunnel");
    // Nor did any name go to the client namespace's own resolver, which erebus's system
    // lookups would have reached (checked below).
    let trap_log = std::fs::read_to_string(server.client_resolver_log()).unwrap();
    assert!(
        !trap_log.contains("query["),
        "a lookup went to the resolver outside the tunnel:\n{trap_log}"
    );

    // SIGTERM: a clean exit (status 0), with the exit notification over UDP.
    let status = erebus.stop(Duration::from_secs(10)).expect("erebus exited");
    assert!(status.success(), "erebus exited with {status}\n{}", log());
    if transport == Transport::Udp {
        let seen = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            std::fs::read_to_string(server.server_log())
                .is_ok_and(|l| l.contains("OCC exit message received"))
        });
        assert!(
            seen,
            "the server did not see the exit notification:\n{}",
            server.server_log_tail(20)
        );
    }
    assert_leak_trap_catches_lookups(&server, runtime);
}

/// The name the trap checks resolve, each answered by the client namespace's own resolver.
const TRAP_NAME: &str = "trap-check.erebus.invalid";
const TRAP_REMOTE: &str = "vpn.trap-check.erebus.invalid";

/// The leak trap works: a system lookup in the client namespace (getent's, as nobody) reaches
/// the client namespace's resolver and gets its answer, and so does erebus's own lookup of a
/// server named by host name, the one name it resolves outside the tunnel. So a proxied name
/// erebus resolved outside the tunnel would have shown in the trap's log.
fn assert_leak_trap_catches_lookups(server: &OpenVpnServer, runtime: &str) {
    let getent = netns::find_program("getent").expect("getent is installed");
    let output = server
        .run_in_client(
            RunAs::Nobody,
            &[getent.to_str().unwrap(), "hosts", TRAP_NAME],
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(
        output.success()
            && output
                .stdout_text()
                .contains(&CLIENT_RESOLVER_ANSWER.to_string()),
        "getent in the client namespace did not get the trap's answer: {output}"
    );
    let trap_log = || std::fs::read_to_string(server.client_resolver_log()).unwrap_or_default();
    assert!(
        trap_log().contains(&format!("query[A] {TRAP_NAME} ")),
        "the trap did not log getent's lookup:\n{}",
        trap_log()
    );

    let remote = server.server_addr();
    let profile = server.client_profile().replace(
        &format!("remote {} {}", remote.ip(), remote.port()),
        &format!("remote {TRAP_REMOTE} {}", remote.port()),
    );
    assert!(profile.contains(TRAP_REMOTE), "{profile}");
    let profile = server
        .write_client_file("trap-remote.ovpn", &profile)
        .unwrap();
    let erebus = server
        .spawn_in_client(
            RunAs::Nobody,
            &[
                EREBUS,
                "--config",
                profile.to_str().unwrap(),
                "--runtime",
                runtime,
                "--no-http",
                "--no-socks",
            ],
            "erebus-trap.log",
        )
        .unwrap();
    let asked = format!("query[A] {TRAP_REMOTE} ");
    let seen = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        trap_log().contains(&asked)
    });
    let erebus_log = erebus.log_tail(20);
    erebus.stop(Duration::from_secs(5));
    assert!(
        seen,
        "erebus's lookup of {TRAP_REMOTE} did not reach the trap:\n{}\n--- erebus ---\n{erebus_log}",
        trap_log()
    );
}

/// Opens `count` connections through the HTTP proxy (CONNECT to the HTTP server behind the
/// tunnel) and holds them: once every CONNECT is answered, the server must have `count` of
/// them established at once, none having sent a request yet. Then each fetches 64 KiB of the
/// pattern stream, checked by length and hash.
fn hold_concurrent_connections(server: &OpenVpnServer, erebus_log: &str, count: usize) {
    const LEN: usize = 65536;
    let script = server
        .write_client_file("hold-connections", HOLD_CONNECTIONS_PY)
        .unwrap();
    // Written by the test (root) once the count is checked; the script (nobody) waits for it.
    let go = server.instance_dir().join("hold-connections-go");
    let python = netns::find_program("python3").expect("python3 is installed");
    let target = format!("{SERVER_TUNNEL_ADDR}:{}", netns::HTTP_PORT);
    let mut holder = server
        .spawn_in_client(
            RunAs::Nobody,
            &[
                python.to_str().unwrap(),
                script.to_str().unwrap(),
                "8080",
                &target,
                &count.to_string(),
                &format!("/bytes/{LEN}"),
                go.to_str().unwrap(),
            ],
            "hold-connections.log",
        )
        .unwrap();
    let held = format!("held {count}\n");
    let mut all_held = false;
    for _ in 0..600 {
        if std::fs::read_to_string(holder.log_path()).is_ok_and(|l| l.contains(&held)) {
            all_held = true;
            break;
        }
        if holder.exit_status().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        all_held,
        "the {count} CONNECTs were not all answered:\n{}\n--- erebus ---\n{erebus_log}",
        holder.log_tail(20)
    );
    // Counted where the connections end: none has sent a request, so none can have finished.
    let established = established_at_server(server, netns::HTTP_PORT);
    eprintln!(
        "{count} connections held through the proxy: {established} established at the server"
    );
    assert!(
        established >= count,
        "the server had {established} connections established, not {count}"
    );
    std::fs::write(&go, b"").unwrap();
    let mut status = None;
    for _ in 0..900 {
        status = holder.exit_status();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(holder.log_path()).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "the held connections did not all complete ({status:?}):\n{text}"
    );
    let expected = format!(
        " 200 OK {LEN} {}",
        netns::hex(&netns::pattern_sha256(LEN as u64))
    );
    let done = text.lines().filter(|l| l.ends_with(&expected)).count();
    assert_eq!(
        done, count,
        "not every held connection fetched its bytes:\n{text}"
    );
}

/// Connections in state ESTABLISHED to local port `port` in the server namespace.
fn established_at_server(server: &OpenVpnServer, port: u16) -> usize {
    let ip = netns::find_program("ip").expect("ip is installed");
    let ss = netns::find_program("ss").expect("ss is installed");
    let output = std::process::Command::new(ip)
        .args(["netns", "exec", server.server_netns()])
        .arg(ss)
        .args(["-Htn", "state", "established"])
        .arg(format!("( sport = :{port} )"))
        .output()
        .unwrap();
    assert!(output.status.success(), "ss failed: {output:?}");
    String::from_utf8_lossy(&output.stdout).lines().count()
}

/// Opens `count` connections to the proxy on 127.0.0.1:`port`, sends CONNECT `target` on
/// every one, reads every answer (200 or exit), prints `held <count>`, then waits for the file
/// `go` before it sends `GET <path>` (Connection: close) on each and prints, per connection,
/// the status line, the body's length and its SHA-256.
const HOLD_CONNECTIONS_PY: &str = r#"
import hashlib, os, socket, sys, time

port, target, count, path, go = sys.argv[1:6]
count = int(count)
deadline = time.monotonic() + 120


def head_of(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        byte = sock.recv(1)
        if not byte:
            sys.exit("the proxy closed a connection after %r" % data)
        data += byte
    return data


conns = []
for _ in range(count):
    sock = socket.create_connection(("127.0.0.1", int(port)), timeout=60)
    sock.sendall(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target.encode(), target.encode()))
    conns.append(sock)
for sock in conns:
    head = head_of(sock)
    status = head.split(b"\r\n")[0].split()
    if len(status) < 2 or status[1] != b"200":
        sys.exit("CONNECT refused: %r" % head)
print("held %d" % count, flush=True)
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("no go")
    time.sleep(0.02)
for sock in conns:
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path.encode(), target.encode()))
for sock in conns:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    print(head.split(b"\r\n")[0].decode(), len(body), hashlib.sha256(body).hexdigest(), flush=True)
"#;

/// Counts the packets of an Ethernet pcap by port: (port 1194, port 53).
fn count_outer_packets(pcap: &[u8]) -> (usize, usize) {
    let mut reader = pcap_file::pcap::PcapReader::new(pcap).unwrap();
    let (mut tunnel, mut dns) = (0, 0);
    while let Some(packet) = reader.next_packet() {
        let data = packet.unwrap().data;
        // Ethernet, then IPv4 with its header length, then the ports of UDP or TCP.
        let Some(&version_ihl) = data.get(14) else {
            continue;
        };
        let l4 = 14 + usize::from(version_ihl & 0x0f) * 4;
        let Some(ports) = data.get(l4..l4 + 4) else {
            continue;
        };
        let src = u16::from_be_bytes([ports[0], ports[1]]);
        let dst = u16::from_be_bytes([ports[2], ports[3]]);
        if src == 53 || dst == 53 {
            dns += 1;
        } else if src == 1194 || dst == 1194 {
            tunnel += 1;
        }
    }
    (tunnel, dns)
}

fn erebus_log(server: &OpenVpnServer) -> String {
    std::fs::read_to_string(server.instance_dir().join("erebus.log")).unwrap_or_default()
}

#[test]
fn plaintext_over_udp_with_mio() {
    session(ServerProfile::Plaintext, Transport::Udp, "mio");
}

#[test]
fn plaintext_over_tcp_with_smol() {
    session(ServerProfile::Plaintext, Transport::Tcp, "smol");
}

#[test]
fn static_key_over_udp_with_smol() {
    session(ServerProfile::StaticKey, Transport::Udp, "smol");
}

#[test]
fn static_key_over_tcp_with_mio() {
    session(ServerProfile::StaticKey, Transport::Tcp, "mio");
}

#[test]
fn static_key_over_udp_with_mio() {
    session(ServerProfile::StaticKey, Transport::Udp, "mio");
}

#[test]
fn plaintext_over_udp_with_smol() {
    session(ServerProfile::Plaintext, Transport::Udp, "smol");
}

#[test]
fn plaintext_over_tcp_with_mio() {
    session(ServerProfile::Plaintext, Transport::Tcp, "mio");
}

#[test]
fn static_key_over_tcp_with_smol() {
    session(ServerProfile::StaticKey, Transport::Tcp, "smol");
}

/// Raw IPv4 injection: erebus-ping writes ICMP echo requests straight into the tunnel (no
/// TCP/IP stack) and the server's kernel answers through it, for every point-to-point
/// profile and transport, under the driver `runtime` (`erebus-ping --runtime`). A
/// point-to-point OpenVPN 2.6 server sometimes loses the request that arrives right behind the
/// packet that first tells it the client's address, as it would the stock client's, so only
/// the first of five may go unanswered: every later one must be.
fn icmp_echo_through_the_tunnel(runtime: &str) {
    if !netns::should_run_interop(&format!("icmp_echo_through_the_tunnel_with_{runtime}")) {
        return;
    }
    let ping = env!("CARGO_BIN_EXE_erebus-ping");
    for profile in [ServerProfile::Plaintext, ServerProfile::StaticKey] {
        for transport in [Transport::Udp, Transport::Tcp] {
            let server = OpenVpnServer::start(profile, transport).unwrap();
            let config = server.client_profile_path();
            let output = server
                .run_in_client(
                    RunAs::Nobody,
                    &[
                        ping,
                        "--config",
                        config.to_str().unwrap(),
                        "--runtime",
                        runtime,
                        "-c",
                        "5",
                        "-i",
                        "0.2",
                        "-W",
                        "1",
                        "10.8.0.1",
                    ],
                    Duration::from_secs(30),
                )
                .unwrap();
            let text = output.stdout_text();
            assert!(
                output.success(),
                "{} over {} with {runtime}: {text}\n{}\n{}",
                profile.name(),
                transport.name(),
                output.stderr_text(),
                server.server_log_tail(10)
            );
            for seq in 2..=5 {
                assert!(text.contains(&format!("icmp_seq={seq} ")), "{text}");
            }
            assert!(
                text.contains("4/5 replies") || text.contains("5/5 replies"),
                "{text}"
            );
        }
    }
}

#[test]
fn icmp_echo_through_the_tunnel_with_mio() {
    icmp_echo_through_the_tunnel("mio");
}

#[test]
fn icmp_echo_through_the_tunnel_with_smol() {
    icmp_echo_through_the_tunnel("smol");
}

/// With --proxy-auth, both proxies demand the credentials: 407 without them, the page with
/// them (HTTP Basic and SOCKS5 username/password).
fn proxy_authentication(runtime: &str) {
    if !netns::should_run_interop(&format!("proxy_authentication_with_{runtime}")) {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::Plaintext, Transport::Udp).unwrap();
    let auth = server
        .write_client_file("proxy-auth.txt", "alice\ns3cret pass\n")
        .unwrap();
    let config = server.client_profile_path();
    let mut erebus = server
        .spawn_in_client(
            RunAs::Nobody,
            &[
                EREBUS,
                "--config",
                config.to_str().unwrap(),
                "--runtime",
                runtime,
                "--proxy-auth",
                auth.to_str().unwrap(),
            ],
            "erebus.log",
        )
        .unwrap();
    erebus
        .wait_until_listening(8080, Duration::from_secs(10))
        .unwrap();
    erebus
        .wait_until_listening(1080, Duration::from_secs(10))
        .unwrap();
    let curl = netns::find_program("curl").unwrap();
    let curl = curl.to_str().unwrap();
    let url = server.http_url();
    let status = |args: &[&str]| {
        let mut argv = vec![curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}"];
        argv.extend_from_slice(args);
        let out = server
            .run_in_client(RunAs::Nobody, &argv, Duration::from_secs(30))
            .unwrap();
        out.stdout_text()
    };
    assert_eq!(status(&["-x", "http://127.0.0.1:8080", &url]), "407");
    assert_eq!(
        status(&["-x", "http://127.0.0.1:8080", "-U", "alice:wrong", &url]),
        "407"
    );
    assert_eq!(
        status(&[
            "-x",
            "http://127.0.0.1:8080",
            "-U",
            "alice:s3cret pass",
            &url
        ]),
        "200"
    );
    assert_eq!(
        status(&[
            "-x",
            "socks5://127.0.0.1:1080",
            "-U",
            "alice:s3cret pass",
            &url
        ]),
        "200"
    );
    assert_ne!(status(&["--socks5", "127.0.0.1:1080", &url]), "200");
    let log = std::fs::read_to_string(server.instance_dir().join("erebus.log")).unwrap_or_default();
    assert!(
        !log.contains("s3cret"),
        "the password leaked into the log:\n{log}"
    );
}

#[test]
fn proxy_authentication_with_mio() {
    proxy_authentication("mio");
}

#[test]
fn proxy_authentication_with_smol() {
    proxy_authentication("smol");
}

/// The listening sockets erebus (process `pid`) holds in the client namespace, as `ss` prints
/// their local addresses (`127.0.0.1:8080`, ...), sorted.
fn listening_addresses(server: &OpenVpnServer, pid: u32) -> Vec<String> {
    let ss = netns::find_program("ss").expect("ss is installed");
    let out = server
        .run_in_client(
            RunAs::Root,
            &[ss.to_str().unwrap(), "-ltnpH"],
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(out.success(), "{}", out.stderr_text());
    let mut addresses: Vec<String> = out
        .stdout_text()
        .lines()
        .filter(|line| line.contains(&format!("pid={pid},")))
        .filter_map(|line| line.split_whitespace().nth(3).map(str::to_owned))
        .collect();
    addresses.sort();
    addresses
}

/// The listeners as the README describes them: the HTTP proxy and SOCKS5 on 127.0.0.1:8080 and
/// 127.0.0.1:1080 when not told otherwise, never on every address; `-L` with a bind address
/// listening there and forwarding; `--no-http` leaving only SOCKS5.
fn listeners_as_documented(runtime: &str) {
    let name = format!("listeners_as_documented_with_{runtime}");
    if !netns::should_run_interop(&name) {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::Plaintext, Transport::Udp).unwrap();
    let config = server.client_profile_path();
    let config = config.to_str().unwrap();
    let mut erebus = server
        .spawn_in_client(
            RunAs::Nobody,
            &[
                EREBUS,
                "--config",
                config,
                "--runtime",
                runtime,
                "-L",
                "127.0.0.2:9091:10.8.0.1:8080",
            ],
            "erebus.log",
        )
        .unwrap();
    for port in [8080, 1080, 9091] {
        erebus
            .wait_until_listening(port, Duration::from_secs(10))
            .unwrap();
    }
    assert_eq!(
        listening_addresses(&server, erebus.pid()),
        ["127.0.0.1:1080", "127.0.0.1:8080", "127.0.0.2:9091"]
    );
    let page = curl(&server, &erebus_log(&server), &["http://127.0.0.2:9091/"]);
    assert!(
        String::from_utf8_lossy(&page).contains(HTTP_MARKER),
        "the forward on 127.0.0.2 reached the origin"
    );
    let status = erebus.stop(Duration::from_secs(10)).expect("erebus exited");
    assert!(status.success(), "{}", erebus_log(&server));

    let mut erebus = server
        .spawn_in_client(
            RunAs::Nobody,
            &[
                EREBUS,
                "--config",
                config,
                "--runtime",
                runtime,
                "--no-http",
            ],
            "erebus-no-http.log",
        )
        .unwrap();
    erebus
        .wait_until_listening(1080, Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        listening_addresses(&server, erebus.pid()),
        ["127.0.0.1:1080"]
    );
    let status = erebus.stop(Duration::from_secs(10)).expect("erebus exited");
    assert!(status.success());
}

#[test]
fn listeners_as_documented_with_mio() {
    listeners_as_documented("mio");
}

#[test]
fn listeners_as_documented_with_smol() {
    listeners_as_documented("smol");
}
