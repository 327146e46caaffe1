//! erebus's client and erebus's server in OpenVPN's static-key point-to-point mode, in
//! memory, over a seeded lossy link: a name resolved through the tunnel by the relay on the
//! server's own inner address, a TCP flow through the exit to a loopback origin the test
//! plays, 1 MiB each way, and packets that must not move the peer: garbage, a packet with a
//! wrong HMAC and a replayed packet, from another address. Then the peer's lifecycle: it
//! leaves, returns from another port, is forgotten after ping-restart and believed again.
//!
//! The client is built from a stock p2p profile (`secret`, `ifconfig`, no TLS; its own `route`
//! and `dhcp-option DNS`, since nothing is pushed) by `erebus_session::load`, the server from a
//! stock p2p `server.conf` by `erebus_server::load`.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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

const STATIC_KEY: &str = include_str!("../../../testvectors/captures/static-key/static.key");
const NOW_UNIX: u64 = 1_800_000_000;

const SERVER: &str = "192.0.2.1:1194";
const CLIENT: &str = "198.51.100.7:40000";
/// Where the forged packets come from.
const INTRUDER: &str = "203.0.113.66:40000";
const ORIGIN: &str = "127.0.0.1:8080";
const ORIGIN_NAME: &str = "origin.sim.test";

fn server_conf(tcp: bool) -> String {
    format!(
        "dev tun\nproto {}\nport 1194\nifconfig 10.9.0.1 10.9.0.2\nsecret static.key 0\n\
         cipher AES-256-CBC\nauth SHA256\nkeepalive 10 60\n\
         allow-deprecated-insecure-static-crypto\n",
        if tcp { "tcp-server" } else { "udp" }
    )
}

fn client_ovpn(tcp: bool) -> String {
    format!(
        "dev tun\nproto {}\nremote 192.0.2.1 1194\nnobind\nifconfig 10.9.0.2 10.9.0.1\n\
         secret static.key 1\ncipher AES-256-CBC\nauth SHA256\nkeepalive 10 60\n\
         route 127.0.0.0 255.0.0.0\ndhcp-option DNS 10.9.0.1\n\
         allow-deprecated-insecure-static-crypto\n",
        if tcp { "tcp-client" } else { "udp" }
    )
}

fn key_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    if path == Path::new("static.key") {
        Ok(Zeroizing::new(STATIC_KEY.as_bytes().to_vec()))
    } else {
        Err(format!("{} (the test has only static.key)", path.display()))
    }
}

struct Outcome {
    uploaded: u64,
    downloaded: u64,
    packets: u64,
    lost: u64,
    resolved: Vec<String>,
    /// Outer packets the server dropped after the forgeries went in, minus before.
    forged_dropped: u64,
    forged: u64,
    elapsed: Duration,
}

/// The client's stream on the server's TCP listener, in TCP runs.
const PEER: ConnId = ConnId(77);

#[allow(clippy::too_many_lines)] // one loop drives both machines, as in sim.rs
fn run(seed: u8, total: u64, tcp: bool) -> Outcome {
    let seed = Seed::from_byte(seed);
    let wall = WallClock::new(Instant::ZERO, UnixTime::from_secs(NOW_UNIX));
    let now = Instant::ZERO;
    let server_addr: SocketAddr = SERVER.parse().unwrap();
    let client_addr: SocketAddr = CLIENT.parse().unwrap();
    let intruder: SocketAddr = INTRUDER.parse().unwrap();
    let origin: SocketAddr = ORIGIN.parse().unwrap();

    let loaded = erebus_server::load(
        server_conf(tcp).as_bytes(),
        "p2p-server.conf",
        &mut key_file,
        ServeOptions {
            listen: Some(server_addr),
            allow: AllowList::loopback(),
            users: None,
            wall_clock: wall,
        },
    )
    .unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert!(loaded.auth_command.is_none());
    let mut server = Server::new(loaded.config, &seed.child("server"), now);

    let plan = erebus_session::load(
        client_ovpn(tcp).as_bytes(),
        "p2p-client.ovpn",
        &mut key_file,
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
    let mut peer_up = 0;
    let mut accepted = false;
    let mut flow: Option<FlowId> = None;
    let mut flow_connected = false;
    let mut flow_closed = false;
    let mut local_closed = false;
    let mut download_closed = false;
    let mut upload = Stream::default();
    let mut download = Stream::default();
    let mut resolved = Vec::new();
    let mut forged = 0;
    let mut forged_dropped = 0;
    let mut client_inputs: Vec<(ConnId, LocalEvent<'static>)> = Vec::new();
    let mut server_inputs: Vec<ServeInput<'static>> = Vec::new();
    let mut answers: Vec<(u64, Vec<IpAddr>)> = Vec::new();
    let limit = Instant::ZERO + Duration::from_secs(600);

    loop {
        loop {
            match client.poll_output(&mut buf) {
                Output::Transmit { to, bytes } => {
                    assert_eq!(to, server_addr);
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
        loop {
            match server.poll_output(&mut buf) {
                ServeOutput::Datagram { to, bytes } => {
                    // Never to the intruder: the peer did not move.
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
                ServeOutput::CheckCredentials { .. } => panic!("no credentials in p2p mode"),
                ServeOutput::Peer { conn: c, action } => {
                    assert!(tcp && c == PEER, "a stream in a UDP run");
                    match action {
                        LocalAction::Write(bytes) => link.send(now, Way::ToClient, bytes),
                        other => panic!("the server acted on the client's stream: {other:?}"),
                    }
                }
                ServeOutput::Event(event) => match event {
                    ServeEvent::ClientUp { peer, address, .. } => {
                        assert_eq!(peer, client_addr);
                        assert_eq!(address, IpAddr::V4(Ipv4Addr::new(10, 9, 0, 2)));
                        peer_up += 1;
                    }
                    ServeEvent::ClientDown { reason, .. } => {
                        panic!("server lost the peer: {reason}")
                    }
                    ServeEvent::ClientFloated { from, to } => {
                        panic!("the peer moved from {from} to {to}")
                    }
                    ServeEvent::FlowRefused { to, reason, .. } => {
                        panic!("flow to {to} refused: {reason}")
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
            && download.sent < total
        {
            let chunk = download.next_chunk(DOWN_SALT, total, 16 * 1024);
            server.handle_input(ServeInput::Flow {
                now,
                flow: id,
                event: FlowEvent::Socket(LocalEvent::Data(&chunk)),
            });
            fed = true;
        }
        // The origin closes its side once it has everything it was sent, as a server
        // answering a request does (sim.rs also covers an origin that closes first).
        if let Some(id) = flow.filter(|_| flow_connected)
            && download.sent == total
            && upload.received == total
            && !download_closed
        {
            download_closed = true;
            server.handle_input(ServeInput::Flow {
                now,
                flow: id,
                event: FlowEvent::Socket(LocalEvent::ReadClosed),
            });
            fed = true;
        }
        if fed {
            continue;
        }
        let transferred = upload.received == total && download.received == total;
        if transferred && upload.eof && download.eof && flow_closed && local_closed {
            break;
        }
        let next = [link.next_at(), client_deadline, server_deadline]
            .into_iter()
            .flatten()
            .min()
            .expect("something is always scheduled while the transfer runs");
        assert!(
            next < limit,
            "the transfer did not finish in 600 simulated seconds: up {} of {total}, down {} of {total} \
             (client up {up}, peer up {peer_up}, resolved {resolved:?}, flow {flow:?}, server {:?}, \
             local closed {local_closed}, flow closed {flow_closed})",
            upload.received,
            download.received,
            server.stats(),
        );
        now = now.max(next);
        while let Some((way, mut bytes)) = link.take_due(now) {
            match way {
                Way::ToServer if tcp => server.handle_input(ServeInput::Peer {
                    now,
                    conn: PEER,
                    event: PeerEvent::Data(&bytes),
                }),
                Way::ToServer => {
                    // Half-way through the upload, forgeries around one real packet: garbage
                    // from elsewhere and from the peer's own address, the packet with a
                    // wrong HMAC from elsewhere and from the peer, and the packet itself
                    // replayed from elsewhere once the peer's copy is in.
                    let forge = forged == 0 && upload.received > total / 2;
                    let before = server.stats().packets_dropped;
                    if forge {
                        let mut rng = seed.child("forgeries").rng();
                        let garbage: Vec<u8> =
                            (0..bytes.len()).map(|_| rng.below(256) as u8).collect();
                        let mut wrong_hmac = bytes.clone();
                        wrong_hmac[3] ^= 0x40;
                        for (from, forgery) in [
                            (intruder, &garbage),
                            (client_addr, &garbage),
                            (intruder, &wrong_hmac),
                            (client_addr, &wrong_hmac),
                        ] {
                            server.handle_input(ServeInput::Datagram {
                                now,
                                from,
                                bytes: forgery,
                            });
                            forged += 1;
                        }
                    }
                    server.handle_input(ServeInput::Datagram {
                        now,
                        from: client_addr,
                        bytes: &bytes,
                    });
                    if forge {
                        server.handle_input(ServeInput::Datagram {
                            now,
                            from: intruder,
                            bytes: &bytes,
                        });
                        forged += 1;
                        forged_dropped = server.stats().packets_dropped - before;
                    }
                }
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
    assert!(!upload.corrupt, "the upload arrived corrupted");
    assert!(!download.corrupt, "the download arrived corrupted");
    assert_eq!(peer_up, 1, "the peer came up once");
    assert_eq!(server.clients(), 1);
    assert_eq!(server.flows(), 0, "the flow was not cleaned up");
    Outcome {
        uploaded: upload.received,
        downloaded: download.received,
        packets: link.sent,
        lost: link.lost,
        resolved,
        forged_dropped,
        forged,
        elapsed: now - Instant::ZERO,
    }
}

#[test]
fn static_key_peer_moves_a_mebibyte_each_way_and_forgeries_do_not_move_it() {
    const TOTAL: u64 = 1 << 20;
    let outcome = run(11, TOTAL, false);
    assert_eq!((outcome.uploaded, outcome.downloaded), (TOTAL, TOTAL));
    assert_eq!(outcome.resolved, [ORIGIN_NAME]);
    assert!(outcome.lost > 0, "the link lost nothing: not a lossy test");
    assert_eq!(outcome.forged, 5, "the forgeries went in");
    assert_eq!(outcome.forged_dropped, 5, "every forgery was dropped");
    eprintln!(
        "static key: 1 MiB each way in {:?} simulated, {} datagrams, {} lost",
        outcome.elapsed, outcome.packets, outcome.lost
    );
}

#[test]
fn static_key_peer_over_tcp() {
    const TOTAL: u64 = 256 << 10;
    let outcome = run(12, TOTAL, true);
    assert_eq!((outcome.uploaded, outcome.downloaded), (TOTAL, TOTAL));
    assert_eq!(outcome.lost, 0);
}

/// The peer's side of a lifecycle test: erebus's p2p session, driven by hand.
mod lifecycle {
    use erebus_openvpn::data::{AuthAlg, CipherAlg};
    use erebus_openvpn::keys::{KeyDirection, StaticKey};
    use erebus_openvpn::p2p::{P2pConfig, P2pMode, P2pSession, StaticKeyMode};
    use erebus_sansio::Tunnel;

    use super::*;

    fn peer(now: Instant, seed: u8) -> P2pSession {
        let mode = P2pMode::StaticKey(Box::new(StaticKeyMode {
            key: StaticKey::parse(STATIC_KEY.as_bytes()).unwrap(),
            direction: KeyDirection::Inverse,
            cipher: CipherAlg::Aes256Cbc,
            auth: AuthAlg::Sha256,
        }));
        let mut config = P2pConfig::new(
            SERVER.parse().unwrap(),
            Ipv4Addr::new(10, 9, 0, 2),
            Ipv4Addr::new(10, 9, 0, 1),
            mode,
            WallClock::new(Instant::ZERO, UnixTime::from_secs(NOW_UNIX)),
        )
        .with_keepalive(Duration::from_secs(10), Duration::from_secs(60));
        config.explicit_exit_notify = 1;
        P2pSession::new(config, &Seed::from_byte(seed), now).unwrap()
    }

    /// Moves what `peer` (at `from`) has to send to the server, and what the server sends
    /// back to the peer, until neither has more; returns the server's events. A datagram to
    /// another address, or one the peer cannot open, fails the test.
    fn exchange(
        server: &mut Server,
        peer: &mut P2pSession,
        from: SocketAddr,
        now: Instant,
    ) -> Vec<ServeEvent> {
        let mut buf = vec![0u8; 70_000];
        let mut events = Vec::new();
        for _ in 0..8 {
            let mut moved = false;
            while let Some(Ok(len)) = peer.poll_transmit(now, &mut buf) {
                server.handle_input(ServeInput::Datagram {
                    now,
                    from,
                    bytes: &buf[..len],
                });
                moved = true;
            }
            loop {
                match server.poll_output(&mut buf) {
                    ServeOutput::Datagram { to, bytes } => {
                        assert_eq!(to, from, "the server sent elsewhere");
                        let mut packet = bytes.to_vec();
                        assert!(peer.decapsulate(now, &mut packet).is_ok());
                        moved = true;
                    }
                    ServeOutput::Event(event) => events.push(event),
                    ServeOutput::Timeout(_) => break,
                    other => panic!("unexpected {other:?}"),
                }
            }
            if !moved {
                break;
            }
        }
        events
    }

    fn ups_and_downs(events: &[ServeEvent]) -> Vec<String> {
        events
            .iter()
            .filter_map(|event| match event {
                ServeEvent::ClientUp { peer, .. } => Some(format!("up {peer}")),
                ServeEvent::ClientDown { peer, reason, .. } => {
                    Some(format!("down {peer}: {reason}"))
                }
                _ => None,
            })
            .collect()
    }

    /// The peer comes up, leaves with its exit notification, comes back from another port as
    /// a new process, goes silent until ping-restart forgets it, and is believed again as soon
    /// as it speaks.
    #[test]
    fn static_key_peer_leaves_returns_and_times_out() {
        let wall = WallClock::new(Instant::ZERO, UnixTime::from_secs(NOW_UNIX));
        let loaded = erebus_server::load(
            server_conf(false).as_bytes(),
            "p2p-server.conf",
            &mut key_file,
            ServeOptions {
                listen: Some(SERVER.parse().unwrap()),
                allow: AllowList::loopback(),
                users: None,
                wall_clock: wall,
            },
        )
        .unwrap();
        let mut server = Server::new(loaded.config, &Seed::from_byte(9), Instant::ZERO);
        let first: SocketAddr = CLIENT.parse().unwrap();
        let second: SocketAddr = INTRUDER.parse().unwrap();
        let at = |s: u64| Instant::ZERO + Duration::from_secs(s);

        let mut one = peer(at(0), 1);
        let events = exchange(&mut server, &mut one, first, at(0));
        assert_eq!(ups_and_downs(&events), [format!("up {first}")]);
        assert_eq!(server.clients(), 1);

        one.close(at(1));
        let events = exchange(&mut server, &mut one, first, at(1));
        let log = ups_and_downs(&events);
        assert_eq!(log.len(), 1, "{log:?}");
        assert!(log[0].starts_with(&format!("down {first}: ")), "{log:?}");
        assert!(log[0].contains("exit notification"), "{log:?}");
        assert_eq!(server.clients(), 0);

        let mut two = peer(at(3), 2);
        let events = exchange(&mut server, &mut two, second, at(3));
        assert_eq!(ups_and_downs(&events), [format!("up {second}")]);

        // Silence: the server's ping-restart (60 s) forgets the peer.
        let mut now = at(3);
        let mut events = Vec::new();
        while server.clients() == 1 {
            let ServeOutput::Timeout(Some(deadline)) = server.poll_output(&mut [0u8; 70_000])
            else {
                panic!("the server has nothing scheduled");
            };
            assert!(deadline < at(100), "ping-restart did not come");
            now = deadline;
            server.handle_input(ServeInput::Timeout { now });
            let mut buf = vec![0u8; 70_000];
            loop {
                match server.poll_output(&mut buf) {
                    ServeOutput::Event(event) => events.push(event),
                    ServeOutput::Timeout(_) => break,
                    _ => {}
                }
            }
        }
        let log = ups_and_downs(&events);
        assert_eq!(log.len(), 1, "{log:?}");
        assert!(log[0].contains("ping-restart"), "{log:?}");
        // The same peer speaks again and is believed at once (a new session on the server).
        let events = exchange(&mut server, &mut two, second, now + Duration::from_secs(1));
        assert_eq!(ups_and_downs(&events), [format!("up {second}")]);
    }
}
