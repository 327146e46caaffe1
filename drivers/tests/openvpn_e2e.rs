//! erebus end to end against a real OpenVPN 2.6 server in network namespaces the test creates:
//! the `erebus` binary runs unprivileged (as nobody) in the client namespace with the
//! harness's profile, and curl reaches the HTTP server behind the tunnel through erebus's HTTP
//! proxy (absolute-form and CONNECT), its SOCKS5 proxy and a port forward. Nothing else leads
//! to the server's tunnel address, so every success went through erebus.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::time::Duration;

use erebus_testvectors::netns::{
    self, HTTP_MARKER, OpenVpnServer, RunAs, ServerProfile, Transport,
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
    let server = OpenVpnServer::start(profile, transport).unwrap();
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

    // 100 concurrent connections through the HTTP proxy, each fetching 64 KiB.
    let url = format!("{}bytes/65536", server.http_url());
    let mut args = vec![
        "--parallel",
        "--parallel-immediate",
        "--parallel-max",
        "100",
        "-x",
        "http://127.0.0.1:8080",
    ];
    let urls = vec![url.as_str(); 100];
    for url in &urls {
        args.extend_from_slice(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}\n",
            url,
        ]);
    }
    let output = curl(&server, &log(), &args);
    let text = String::from_utf8_lossy(&output);
    let done = text.lines().filter(|l| *l == "200 65536").count();
    assert_eq!(done, 100, "not every concurrent fetch completed:\n{text}");

    // No DNS query left outside the tunnel: the outer link carried the tunnel and nothing on
    // port 53.
    tcpdump.stop(Duration::from_secs(5));
    let (tunnel_packets, dns_packets) = count_outer_packets(&std::fs::read(&capture).unwrap());
    assert!(
        tunnel_packets > 100,
        "the capture saw only {tunnel_packets} tunnel packets"
    );
    assert_eq!(dns_packets, 0, "DNS leaked outside the tunnel");

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
}

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
