//! erebus's client and erebus's server, in memory, over a seeded lossy link: a port forward
//! on the client, a name resolved through the tunnel by the server's DNS relay, a TCP flow
//! through the exit to a loopback origin the test plays, and 16 MiB each way.
//!
//! Everything runs on simulated time from one seed: the same seed gives the same run, and
//! nothing touches a socket or a clock. This is the fastest test of the whole protocol path:
//! proxy, user-space TCP, OpenVPN client (TLS, tls-crypt, data channel), the link, the
//! OpenVPN server, the exit's stack, and the flow to the host.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use common::{DOWN_SALT, Link, Stream, UP_SALT, Way};
use erebus_client::{Client, ClientConfig};
use erebus_net::TcpConfig;
use erebus_proxy::{FrontEnd, Host, ProxyConfig};
use erebus_sansio::io::{
    ConnId, Event, Input, ListenerId, LocalAction, LocalEvent, Output, TransportEvent,
};
use erebus_sansio::serve::{
    FlowEvent, FlowId, FlowKind, PeerEvent, ServeDriven, ServeEvent, ServeInput, ServeOutput,
};
use erebus_sansio::{Driven, Instant, Seed, UnixTime, WallClock};
use erebus_server::{AllowList, ServeOptions, Server};
use erebus_session::{Overrides, SessionTunnel};
use zeroize::Zeroizing;

const CA: &str = include_str!("../../../testvectors/tls-pki/ed25519/ed-ca.crt");
const SERVER_CERT: &str = include_str!("../../../testvectors/tls-pki/ed25519/ed-server.crt");
const SERVER_KEY: &str = include_str!("../../../testvectors/tls-pki/ed25519/ed-server.key");
const CLIENT_CERT: &str = include_str!("../../../testvectors/tls-pki/ed25519/ed-client.crt");
const CLIENT_KEY: &str = include_str!("../../../testvectors/tls-pki/ed25519/ed-client.key");
/// Inside the Ed25519 certificates' validity.
const NOW_UNIX: u64 = 1_800_000_000;

const SERVER: &str = "192.0.2.1:1194";
const CLIENT: &str = "198.51.100.7:40000";
const ORIGIN: &str = "127.0.0.1:8080";
const ORIGIN_NAME: &str = "origin.sim.test";

/// A tls-crypt key: any 256 bytes will do for a test.
fn tls_crypt_key() -> String {
    let mut text = String::from("-----BEGIN OpenVPN Static key V1-----\n");
    for line in 0..16u8 {
        for i in 0..16u8 {
            text.push_str(&format!(
                "{:02x}",
                line.wrapping_mul(31) ^ i.wrapping_mul(7)
            ));
        }
        text.push('\n');
    }
    text.push_str("-----END OpenVPN Static key V1-----\n");
    text
}

fn inline(tag: &str, body: &str) -> String {
    format!("<{tag}>\n{}\n</{tag}>\n", body.trim_end())
}

fn server_conf(tcp: bool) -> String {
    let mut text = String::from(if tcp {
        "proto tcp-server\n"
    } else {
        "proto udp\n"
    });
    text.push_str(
        "mode server\ntls-server\nport 1194\ndev tun\ntopology subnet\n\
         server 10.8.0.0 255.255.255.0\ndh none\n\
         data-ciphers AES-256-GCM:CHACHA20-POLY1305\nkeepalive 10 60\n\
         push \"route 127.0.0.0 255.0.0.0\"\npush \"dhcp-option DNS 10.8.0.1\"\n",
    );
    text += &inline("ca", CA);
    text += &inline("cert", SERVER_CERT);
    text += &inline("key", SERVER_KEY);
    text += &inline("tls-crypt", &tls_crypt_key());
    text
}

fn client_ovpn(tcp: bool) -> String {
    let mut text = String::from(if tcp {
        "proto tcp-client\n"
    } else {
        "proto udp\n"
    });
    text.push_str(
        "client\ndev tun\nremote 192.0.2.1 1194\nnobind\nremote-cert-tls server\n\
         data-ciphers AES-256-GCM:CHACHA20-POLY1305\n",
    );
    text += &inline("ca", CA);
    text += &inline("cert", CLIENT_CERT);
    text += &inline("key", CLIENT_KEY);
    text += &inline("tls-crypt", &tls_crypt_key());
    text
}

fn no_files(path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    Err(format!("{} (the test names no files)", path.display()))
}

/// What a run sets up.
#[derive(Clone)]
struct Scenario {
    seed: u8,
    /// Bytes each way.
    total: u64,
    /// Bytes from the origin, when not `total` (it closes its side after sending them).
    down_total: Option<u64>,
    /// UDP (lossy link) or TCP (a reliable, ordered stream).
    tcp: bool,
    /// What the exit allows; a run with nothing allowed expects the flow to be refused.
    allow: AllowList,
}

impl Scenario {
    fn udp(seed: u8, total: u64) -> Self {
        Self {
            seed,
            total,
            down_total: None,
            tcp: false,
            allow: AllowList::loopback(),
        }
    }
}

struct Outcome {
    uploaded: u64,
    downloaded: u64,
    packets: u64,
    lost: u64,
    resolved: Vec<String>,
    elapsed: Duration,
    refusals: Vec<String>,
}

/// The client's stream on the server's TCP listener, in TCP scenarios.
const PEER: ConnId = ConnId(77);

fn run(scenario: &Scenario) -> Outcome {
    let total = scenario.total;
    let down_total = scenario.down_total.unwrap_or(total);
    let tcp = scenario.tcp;
    let expect_refusal = scenario.allow.rules().is_empty();
    let seed = Seed::from_byte(scenario.seed);
    let wall = WallClock::new(Instant::ZERO, UnixTime::from_secs(NOW_UNIX));
    let now = Instant::ZERO;
    let server_addr: SocketAddr = SERVER.parse().unwrap();
    let client_addr: SocketAddr = CLIENT.parse().unwrap();
    let origin: SocketAddr = ORIGIN.parse().unwrap();

    let loaded = erebus_server::load(
        server_conf(tcp).as_bytes(),
        "sim-server.conf",
        &mut no_files,
        ServeOptions {
            listen: Some(server_addr),
            allow: scenario.allow.clone(),
            users: None,
            wall_clock: wall,
        },
    )
    .unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let mut server = Server::new(loaded.config, &seed.child("server"), now);

    let plan = erebus_session::load(
        client_ovpn(tcp).as_bytes(),
        "sim-client.ovpn",
        &mut no_files,
        Overrides::default(),
        wall,
    )
    .unwrap();
    let tunnel: SessionTunnel = plan.start(&seed.child("session"), wall, now);
    let mut client = Client::new(
        tunnel,
        ClientConfig {
            listeners: vec![FrontEnd::Forward {
                host: Host::Name(ORIGIN_NAME.into()),
                port: origin.port(),
            }],
            proxy: ProxyConfig::default(),
            tcp: TcpConfig::default(),
            dns_servers: Vec::new(),
            tunnel_wait: Duration::from_secs(30),
            limits: erebus_client::Limits::default(),
        },
        &seed.child("client"),
        now,
    );

    let mut link = Link::new(tcp, seed.child("link").rng());
    let conn = ConnId(1);
    let mut now = now;
    let mut buf = vec![0u8; 70_000];
    let mut client_deadline: Option<Instant>;
    let mut server_deadline: Option<Instant>;
    let mut attempt = None;
    let mut up = false;
    let mut accepted = false;
    let mut flow: Option<FlowId> = None;
    let mut flow_connected = false;
    let mut flow_closed = false;
    let mut local_closed = false;
    let mut upload = Stream::default();
    let mut download = Stream::default();
    let mut resolved = Vec::new();
    let mut refusals = Vec::new();
    let mut client_inputs: Vec<(ConnId, LocalEvent<'static>)> = Vec::new();
    let mut server_inputs: Vec<ServeInput<'static>> = Vec::new();
    let mut answers: Vec<(u64, Vec<IpAddr>)> = Vec::new();
    let limit = Instant::ZERO + Duration::from_secs(600);

    loop {
        // The client's outputs.
        loop {
            match client.poll_output(&mut buf) {
                Output::Transmit { to, bytes } => {
                    assert_eq!(to, server_addr);
                    // A stream chunk or a datagram: the link carries either.
                    link.send(now, Way::ToServer, bytes);
                }
                Output::Local { conn: c, action } => {
                    assert_eq!(c, conn);
                    match action {
                        LocalAction::Write(bytes) => download.check(DOWN_SALT, bytes),
                        LocalAction::PauseReading => upload.paused = true,
                        LocalAction::ResumeReading => upload.paused = false,
                        LocalAction::Shutdown => download.eof = true,
                        LocalAction::Close => {
                            download.eof = true;
                            upload.paused = true;
                            local_closed = true;
                        }
                    }
                }
                Output::Event(Event::Connected(_)) => up = true,
                Output::Event(Event::Down(failure)) => panic!("client down: {failure}"),
                Output::Event(_) => {}
                Output::BufferTooSmall { needed } => buf.resize(needed, 0),
                Output::Timeout(deadline) => {
                    client_deadline = deadline;
                    break;
                }
            }
        }
        if client.transport().map(|spec| spec.attempt) != attempt {
            attempt = client.transport().map(|spec| spec.attempt);
            assert!(attempt.is_some(), "the client gave up its transport");
            assert_eq!(attempt, Some(1), "the client had to reconnect");
            client
                .handle_input(Input::Transport {
                    now,
                    event: TransportEvent::Connected {
                        remote: server_addr,
                    },
                })
                .unwrap();
            if tcp {
                server.handle_input(ServeInput::Peer {
                    now,
                    conn: PEER,
                    event: PeerEvent::Accepted { from: client_addr },
                });
            }
            continue;
        }
        // The server's outputs.
        loop {
            match server.poll_output(&mut buf) {
                ServeOutput::Datagram { to, bytes } => {
                    assert_eq!(to, client_addr);
                    link.send(now, Way::ToClient, bytes);
                }
                ServeOutput::OpenFlow { flow: id, kind, to } => {
                    assert_eq!((kind, to), (FlowKind::Tcp, origin));
                    assert!(flow.is_none(), "one flow expected");
                    flow = Some(id);
                    server_inputs.push(ServeInput::Flow {
                        now,
                        flow: id,
                        event: FlowEvent::Connected,
                    });
                }
                ServeOutput::Flow { flow: id, action } => {
                    assert_eq!(Some(id), flow);
                    match action {
                        LocalAction::Write(bytes) => upload.check(UP_SALT, bytes),
                        LocalAction::PauseReading => download.paused = true,
                        LocalAction::ResumeReading => download.paused = false,
                        LocalAction::Shutdown => upload.eof = true,
                        LocalAction::Close => {
                            upload.eof = true;
                            flow_closed = true;
                        }
                    }
                }
                ServeOutput::Resolve { query, name } => {
                    resolved.push(name.to_owned());
                    let addrs = if name == ORIGIN_NAME {
                        vec![origin.ip()]
                    } else {
                        Vec::new()
                    };
                    answers.push((query, addrs));
                }
                ServeOutput::CheckCredentials { .. } => panic!("no credentials in this test"),
                ServeOutput::Peer { conn: c, action } => {
                    assert!(tcp && c == PEER, "a stream in a UDP scenario");
                    match action {
                        LocalAction::Write(bytes) => link.send(now, Way::ToClient, bytes),
                        other => panic!("the server acted on the client's stream: {other:?}"),
                    }
                }
                ServeOutput::Event(event) => match event {
                    ServeEvent::ClientDown { reason, .. } => {
                        panic!("server lost the client: {reason}")
                    }
                    ServeEvent::FlowRefused { to, reason, .. } => {
                        refusals.push(format!("{to}: {reason}"));
                    }
                    _ => {}
                },
                ServeOutput::BufferTooSmall { needed } => buf.resize(needed, 0),
                ServeOutput::Timeout(deadline) => {
                    server_deadline = deadline;
                    break;
                }
            }
        }
        // Deferred inputs (never fed while a machine is being drained).
        let mut fed = false;
        for input in server_inputs.drain(..) {
            if matches!(
                input,
                ServeInput::Flow {
                    event: FlowEvent::Connected,
                    ..
                }
            ) {
                flow_connected = true;
            }
            server.handle_input(input);
            fed = true;
        }
        for (query, addrs) in answers.drain(..) {
            server.handle_input(ServeInput::Resolved {
                now,
                query,
                addrs: &addrs,
            });
            fed = true;
        }
        for (c, event) in client_inputs.drain(..) {
            client
                .handle_input(Input::Local {
                    now,
                    conn: c,
                    event,
                })
                .unwrap();
            fed = true;
        }
        // The local connection opens once the tunnel is up; then both ends send while they
        // may.
        if up && !accepted {
            accepted = true;
            client_inputs.push((
                conn,
                LocalEvent::Accepted {
                    listener: ListenerId(0),
                },
            ));
            continue;
        }
        if accepted && !upload.paused && upload.sent < total {
            let chunk = upload.next_chunk(UP_SALT, total, 16 * 1024);
            client
                .handle_input(Input::Local {
                    now,
                    conn,
                    event: LocalEvent::Data(&chunk),
                })
                .unwrap();
            if upload.sent == total {
                client
                    .handle_input(Input::Local {
                        now,
                        conn,
                        event: LocalEvent::ReadClosed,
                    })
                    .unwrap();
            }
            fed = true;
        }
        if let Some(id) = flow.filter(|_| flow_connected)
            && !download.paused
            && download.sent < down_total
        {
            let chunk = download.next_chunk(DOWN_SALT, down_total, 16 * 1024);
            server.handle_input(ServeInput::Flow {
                now,
                flow: id,
                event: FlowEvent::Socket(LocalEvent::Data(&chunk)),
            });
            if download.sent == down_total {
                server.handle_input(ServeInput::Flow {
                    now,
                    flow: id,
                    event: FlowEvent::Socket(LocalEvent::ReadClosed),
                });
            }
            fed = true;
        }
        if fed {
            continue;
        }
        if expect_refusal && local_closed {
            assert!(flow.is_none(), "a refused flow reached the host");
            break;
        }
        let transferred = upload.received == total && download.received == down_total;
        if transferred && upload.eof && download.eof && flow_closed && local_closed {
            break;
        }
        // Nothing to do now: move time to the next thing that happens.
        let next = [link.next_at(), client_deadline, server_deadline]
            .into_iter()
            .flatten()
            .min()
            .expect("something is always scheduled while the transfer runs");
        assert!(
            next < limit,
            "the transfer did not finish in 600 simulated seconds: up {} of {total}, down {} of {down_total}",
            upload.received,
            download.received
        );
        now = now.max(next);
        while let Some((way, mut bytes)) = link.take_due(now) {
            match way {
                Way::ToServer if tcp => server.handle_input(ServeInput::Peer {
                    now,
                    conn: PEER,
                    event: PeerEvent::Data(&bytes),
                }),
                Way::ToServer => server.handle_input(ServeInput::Datagram {
                    now,
                    from: client_addr,
                    bytes: &bytes,
                }),
                Way::ToClient => client
                    .handle_input(Input::Transport {
                        now,
                        event: TransportEvent::Data {
                            from: server_addr,
                            bytes: &mut bytes,
                        },
                    })
                    .unwrap(),
            }
        }
        if client_deadline.is_some_and(|at| at <= now) {
            client.handle_input(Input::Timeout { now }).unwrap();
        }
        if server_deadline.is_some_and(|at| at <= now) {
            server.handle_input(ServeInput::Timeout { now });
        }
    }
    if expect_refusal {
        assert_eq!(download.received, 0);
    }
    assert!(!upload.corrupt, "the upload arrived corrupted");
    assert!(!download.corrupt, "the download arrived corrupted");
    assert_eq!(server.flows(), 0, "the flow was not cleaned up");
    Outcome {
        uploaded: upload.received,
        downloaded: download.received,
        packets: link.sent,
        lost: link.lost,
        resolved,
        elapsed: now - Instant::ZERO,
        refusals,
    }
}

#[test]
fn sixteen_mebibytes_each_way_through_the_exit_over_a_lossy_link() {
    const TOTAL: u64 = 16 << 20;
    let outcome = run(&Scenario::udp(1, TOTAL));
    assert_eq!(outcome.uploaded, TOTAL);
    assert_eq!(outcome.downloaded, TOTAL);
    assert_eq!(outcome.resolved, [ORIGIN_NAME]);
    assert!(outcome.lost > 0, "the link lost nothing: not a lossy test");
    assert!(outcome.refusals.is_empty(), "{:?}", outcome.refusals);
    eprintln!(
        "16 MiB each way in {:?} simulated, {} datagrams, {} lost",
        outcome.elapsed, outcome.packets, outcome.lost
    );
}

#[test]
fn four_mebibytes_each_way_over_tcp() {
    const TOTAL: u64 = 4 << 20;
    let outcome = run(&Scenario {
        tcp: true,
        ..Scenario::udp(2, TOTAL)
    });
    assert_eq!((outcome.uploaded, outcome.downloaded), (TOTAL, TOTAL));
    assert_eq!(outcome.lost, 0);
}

#[test]
fn the_origin_closing_first_loses_none_of_the_upload() {
    // The origin answers with 64 KiB and closes its side at once; the client is still
    // uploading 4 MiB, and all of it must arrive before the connection ends.
    let outcome = run(&Scenario {
        down_total: Some(64 << 10),
        ..Scenario::udp(5, 4 << 20)
    });
    assert_eq!(outcome.uploaded, 4 << 20);
    assert_eq!(outcome.downloaded, 64 << 10);
}

#[test]
fn a_destination_outside_the_allow_list_is_refused_and_reaches_no_host() {
    let outcome = run(&Scenario {
        allow: AllowList::default(),
        ..Scenario::udp(3, 64 << 10)
    });
    assert_eq!(
        outcome.refusals,
        [format!("{ORIGIN}: not in the exit's allow-list")],
        "resolved {:?}, uploaded {}",
        outcome.resolved,
        outcome.uploaded
    );
    // The name still resolved: the DNS relay is not subject to the allow-list.
    assert_eq!(outcome.resolved, [ORIGIN_NAME]);
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let key = |o: &Outcome| (o.packets, o.lost, o.elapsed);
    let first = run(&Scenario::udp(7, 256 << 10));
    let second = run(&Scenario::udp(7, 256 << 10));
    assert_eq!(key(&first), key(&second));
    let other = run(&Scenario::udp(8, 256 << 10));
    assert_ne!(
        key(&first),
        key(&other),
        "a different seed should give a different run"
    );
}
