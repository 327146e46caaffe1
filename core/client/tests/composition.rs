//! The client composed with a pass-through tunnel and a second user-space stack standing in
//! for the private network: proxy requests become TCP connections through the tunnel, bytes
//! flow both ways, and failures become the right proxy answers.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::rc::Rc;
use std::time::Duration;

use erebus_client::{Client, ClientConfig, Limits};
use erebus_net::{SocketHandle, Stack, TcpConfig};
use erebus_proxy::{FrontEnd, ProxyConfig};
use erebus_sansio::io::{
    ConnId, Event, Input, ListenerId, LocalAction, LocalEvent, Output, TransportError,
    TransportEvent,
};
use erebus_sansio::tunnel::{
    Decapsulated, DropReason, Failure, Fault, IpNet, Overhead, TransportKind, TransportSpec,
    Tunnel, TunnelConfig, TunnelEvent,
};
use erebus_sansio::{Driven, Instant, Seed};

const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 2);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 1);

const SERVER_ADDR: &str = "192.0.2.1:1194";

fn up_config() -> TunnelConfig {
    TunnelConfig {
        ipv4: IpNet::new(IpAddr::V4(CLIENT_IP), 24),
        gateway: Some(IpAddr::V4(SERVER_IP)),
        mtu: 1500,
        ..TunnelConfig::default()
    }
}

/// First bytes of outer packets the pass-through tunnel refuses, each for its reason. No inner
/// IP packet starts with them: the version nibble is 4 or 6.
const REFUSED: [(u8, DropReason); 3] = [
    (0xd1, DropReason::Replayed),
    (0xd2, DropReason::Unauthentic),
    (0xd3, DropReason::Malformed),
];

/// A tunnel that carries inner packets as they are, up at once. The test can queue more
/// events for it (a lost session, a new one) through the shared queue.
struct PassThrough {
    spec: TransportSpec,
    events: Rc<RefCell<VecDeque<TunnelEvent>>>,
    closing: bool,
    closed_by_transport: Rc<RefCell<Vec<TransportError>>>,
}

impl Tunnel for PassThrough {
    fn transport(&self) -> Option<&TransportSpec> {
        Some(&self.spec)
    }
    fn overhead(&self) -> Overhead {
        Overhead::default()
    }
    fn transport_connected(&mut self, _: Instant, _: SocketAddr) {}
    fn transport_closed(&mut self, _: Instant, error: TransportError) {
        self.closed_by_transport.borrow_mut().push(error);
    }
    fn decapsulate(&mut self, _: Instant, packet: &mut [u8]) -> Result<Decapsulated, DropReason> {
        if let Some((_, reason)) = REFUSED
            .iter()
            .find(|(first, _)| packet.first() == Some(first))
        {
            return Err(*reason);
        }
        Ok(Decapsulated::Inner(0..packet.len()))
    }
    fn encapsulate(
        &mut self,
        _: Instant,
        _: &mut [u8],
        inner: Range<usize>,
    ) -> Result<Range<usize>, DropReason> {
        Ok(inner)
    }
    fn handle_timeout(&mut self, _: Instant) {}
    fn close(&mut self, _: Instant) {
        self.closing = true;
    }
    fn poll_transmit(&mut self, _: Instant, _: &mut [u8]) -> Option<Result<usize, usize>> {
        None
    }
    fn poll_event(&mut self) -> Option<TunnelEvent> {
        if self.closing {
            self.closing = false;
            return Some(TunnelEvent::Down(Failure::new(Fault::Closed, "closed")));
        }
        self.events.borrow_mut().pop_front()
    }
    fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        None
    }
}

/// The client, a server stack behind the tunnel, and what each local connection received.
struct World {
    client: Client<PassThrough>,
    tunnel_events: Rc<RefCell<VecDeque<TunnelEvent>>>,
    transport_errors: Rc<RefCell<Vec<TransportError>>>,
    server: Stack,
    now: Instant,
    received: std::collections::BTreeMap<ConnId, Vec<u8>>,
    closed: Vec<ConnId>,
    events: Vec<Event>,
    to_server: VecDeque<Vec<u8>>,
    buf: Vec<u8>,
}

impl World {
    fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    fn with_limits(limits: Limits) -> Self {
        let config = ClientConfig {
            listeners: vec![FrontEnd::Http, FrontEnd::Socks5],
            proxy: ProxyConfig::default(),
            tcp: TcpConfig::default(),
            dns_servers: vec![IpAddr::V4(SERVER_IP)],
            tunnel_wait: Duration::from_secs(10),
            limits,
        };
        let tunnel_events = Rc::new(RefCell::new(VecDeque::from([TunnelEvent::Up(up_config())])));
        let transport_errors = Rc::new(RefCell::new(Vec::new()));
        let tunnel = PassThrough {
            spec: TransportSpec::to_addr(SERVER_ADDR.parse().unwrap(), TransportKind::Udp),
            events: tunnel_events.clone(),
            closing: false,
            closed_by_transport: transport_errors.clone(),
        };
        let mut client = Client::new(tunnel, config, &Seed::from_byte(1), Instant::ZERO);
        client
            .handle_input(Input::Transport {
                now: Instant::ZERO,
                event: TransportEvent::Connected {
                    remote: SERVER_ADDR.parse().unwrap(),
                },
            })
            .unwrap();
        let server_config = TunnelConfig {
            ipv4: IpNet::new(IpAddr::V4(SERVER_IP), 24),
            mtu: 1500,
            ..TunnelConfig::default()
        };
        let server = Stack::new(&server_config, TcpConfig::default(), &Seed::from_byte(2));
        let mut world = Self {
            client,
            tunnel_events,
            transport_errors,
            server,
            now: Instant::ZERO,
            received: Default::default(),
            closed: Vec::new(),
            events: Vec::new(),
            to_server: VecDeque::new(),
            buf: vec![0; 65_536],
        };
        world.drain();
        world
    }

    fn input(&mut self, input: Input<'_>) {
        self.client.handle_input(input).unwrap();
        self.drain();
    }

    fn local(&mut self, conn: u64, event: LocalEvent<'_>) {
        self.input(Input::Local {
            now: self.now,
            conn: ConnId(conn),
            event,
        });
    }

    /// Drains the client, then moves packets both ways until both sides are quiet.
    fn drain(&mut self) -> Option<Instant> {
        loop {
            let deadline = loop {
                match self.client.poll_output(&mut self.buf) {
                    Output::Transmit { to, bytes } => {
                        assert_eq!(to, SERVER_ADDR.parse::<SocketAddr>().unwrap());
                        self.to_server.push_back(bytes.to_vec());
                    }
                    Output::Local { conn, action } => match action {
                        LocalAction::Write(bytes) => self
                            .received
                            .entry(conn)
                            .or_default()
                            .extend_from_slice(bytes),
                        LocalAction::Close => self.closed.push(conn),
                        _ => {}
                    },
                    Output::Event(event) => self.events.push(event),
                    Output::BufferTooSmall { needed } => self.buf.resize(needed, 0),
                    Output::Timeout(deadline) => break deadline,
                }
            };
            let mut moved = false;
            while let Some(packet) = self.to_server.pop_front() {
                self.server.ingress(self.now, &packet).unwrap();
                moved = true;
            }
            let mut packet = vec![0; 1500];
            let mut replies = Vec::new();
            while let Some(n) = self.server.poll_egress(self.now, &mut packet) {
                replies.push(packet[..n].to_vec());
            }
            for reply in replies {
                moved = true;
                self.client
                    .handle_input(Input::Transport {
                        now: self.now,
                        event: TransportEvent::Data {
                            from: SERVER_ADDR.parse().unwrap(),
                            bytes: &reply,
                        },
                    })
                    .unwrap();
            }
            if !moved {
                return deadline;
            }
        }
    }

    /// Lets virtual time pass up to `until`, firing every deadline on the way.
    fn run_until(&mut self, until: Instant) {
        while let Some(deadline) = self.drain() {
            let server_deadline = self.server.poll_timeout().unwrap_or(Instant::MAX);
            let next = deadline.min(server_deadline).max(self.now);
            if next > until {
                break;
            }
            self.now = next.max(self.now + Duration::from_micros(1));
            self.input(Input::Timeout { now: self.now });
        }
        self.now = self.now.max(until);
    }

    fn server_socket(&mut self, handle: SocketHandle) -> &mut erebus_net::TcpSocket {
        self.server.socket_mut(handle).unwrap()
    }
}

#[test]
fn connect_relays_bytes_both_ways_through_the_tunnel() {
    let mut world = World::new();
    assert!(matches!(world.events.first(), Some(Event::Connected(_))));
    let listener = world.server.listen(80).unwrap();

    world.local(
        1,
        LocalEvent::Accepted {
            listener: ListenerId(0),
        },
    );
    world.local(
        1,
        LocalEvent::Data(b"CONNECT 10.8.0.1:80 HTTP/1.1\r\nHost: 10.8.0.1:80\r\n\r\nhello"),
    );
    world.run_until(Instant::from_millis(50));
    assert_eq!(
        world.received[&ConnId(1)],
        b"HTTP/1.1 200 Connection established\r\n\r\n"
    );

    let mut got = vec![0; 64];
    let n = world.server_socket(listener).recv(&mut got).unwrap();
    assert_eq!(
        &got[..n],
        b"hello",
        "early data after the CONNECT head reaches the server"
    );

    // A megabyte back from the server, through the tunnel, to the local connection.
    let payload: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
    let mut sent = 0;
    while sent < payload.len() {
        sent += world
            .server_socket(listener)
            .send(&payload[sent..])
            .unwrap();
        world.run_until(world.now + Duration::from_millis(1));
    }
    world.run_until(world.now + Duration::from_secs(1));
    let received = &world.received[&ConnId(1)];
    let body = &received[b"HTTP/1.1 200 Connection established\r\n\r\n".len()..];
    assert_eq!(body.len(), payload.len());
    assert!(body == payload.as_slice());
}

/// Answers every A query in `query` with `answer` (a minimal authoritative DNS server).
fn dns_answer(query: &[u8], answer: Option<Ipv4Addr>) -> Vec<u8> {
    let mut response = query.to_vec();
    response[2] = 0x84 | (query[2] & 0x01); // QR, AA, RD copied
    response[3] = if answer.is_some() { 0x80 } else { 0x83 }; // RA; NXDOMAIN without an answer
    if let Some(ip) = answer {
        response[7] = 1; // ANCOUNT
        response.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        response.extend_from_slice(&ip.octets());
    }
    response
}

#[test]
fn names_resolve_through_the_tunnel_dns_server() {
    let mut world = World::new();
    let listener = world.server.listen(80).unwrap();
    world.server.udp_bind(53).unwrap();
    world.local(
        5,
        LocalEvent::Accepted {
            listener: ListenerId(1),
        },
    );
    world.local(5, LocalEvent::Data(&[5, 1, 0]));
    // SOCKS5 CONNECT to the name web.erebus.test:80, resolved remotely.
    let mut request = vec![5, 1, 0, 3, 15];
    request.extend_from_slice(b"web.erebus.test");
    request.extend_from_slice(&[0, 80]);
    world.local(5, LocalEvent::Data(&request));
    let query = world
        .server
        .udp_recv()
        .expect("a DNS query went through the tunnel");
    assert_eq!(query.remote.ip(), IpAddr::V4(CLIENT_IP));
    assert!(
        query.payload.windows(3).any(|w| w == b"web"),
        "the query names the host"
    );
    world
        .server
        .udp_send(
            53,
            query.remote,
            &dns_answer(&query.payload, Some(SERVER_IP)),
        )
        .unwrap();
    world.run_until(Instant::from_millis(50));
    let reply = &world.received[&ConnId(5)];
    assert_eq!(
        reply[2..4],
        [5, 0],
        "SOCKS5 success after resolving through the tunnel"
    );
    assert_eq!(
        world.server_socket(listener).state(),
        erebus_net::State::Established
    );

    // An unknown name: NXDOMAIN from the tunnel's server is a 502 for an HTTP client.
    world.local(
        6,
        LocalEvent::Accepted {
            listener: ListenerId(0),
        },
    );
    world.local(
        6,
        LocalEvent::Data(
            b"GET http://nowhere.erebus.test/ HTTP/1.1\r\nHost: nowhere.erebus.test\r\n\r\n",
        ),
    );
    let query = world
        .server
        .udp_recv()
        .expect("a DNS query for the unknown name");
    world
        .server
        .udp_send(53, query.remote, &dns_answer(&query.payload, None))
        .unwrap();
    world.run_until(Instant::from_millis(100));
    let answer = String::from_utf8_lossy(&world.received[&ConnId(6)]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 502 "), "{answer}");
}

#[test]
fn refused_connection_is_a_502_and_closes() {
    let mut world = World::new();
    world.local(
        7,
        LocalEvent::Accepted {
            listener: ListenerId(0),
        },
    );
    world.local(
        7,
        LocalEvent::Data(b"GET http://10.8.0.1:81/ HTTP/1.1\r\nHost: 10.8.0.1:81\r\n\r\n"),
    );
    world.run_until(Instant::from_millis(100));
    let answer = String::from_utf8_lossy(&world.received[&ConnId(7)]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 502 "), "{answer}");
}

#[test]
fn unreachable_destination_is_a_socks_host_unreachable() {
    let mut world = World::new();
    world.local(
        3,
        LocalEvent::Accepted {
            listener: ListenerId(1),
        },
    );
    // Greeting (no auth), then CONNECT to 192.0.2.9:80, which no route covers.
    world.local(3, LocalEvent::Data(&[5, 1, 0]));
    world.local(3, LocalEvent::Data(&[5, 1, 0, 1, 192, 0, 2, 9, 0, 80]));
    world.run_until(Instant::from_millis(10));
    let reply = &world.received[&ConnId(3)];
    assert_eq!(&reply[..2], &[5, 0], "method selection: no authentication");
    assert_eq!(reply[2..4], [5, 4], "reply: host unreachable");
}

fn accept(world: &mut World, conn: u64, listener: u32) {
    world.local(
        conn,
        LocalEvent::Accepted {
            listener: ListenerId(listener),
        },
    );
}

#[test]
fn connections_beyond_the_limit_are_refused_and_the_limit_frees_up() {
    let mut world = World::with_limits(Limits {
        connections: 2,
        ..Limits::default()
    });
    let listener = world.server.listen(80).unwrap();
    // Two connections that have not sent their request yet fill the limit.
    accept(&mut world, 1, 0);
    accept(&mut world, 2, 1);

    // A third HTTP client is told to come back later, and closed.
    accept(&mut world, 3, 0);
    world.local(
        3,
        LocalEvent::Data(b"GET http://10.8.0.1/ HTTP/1.1\r\nHost: 10.8.0.1\r\n\r\n"),
    );
    world.run_until(Instant::from_millis(10));
    let answer = String::from_utf8_lossy(&world.received[&ConnId(3)]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("\r\nRetry-After: "), "{answer}");
    assert!(answer.contains("as many connections as it may"), "{answer}");
    // Closed once the client has read the answer and closed its side (no reset on unread data).
    world.local(3, LocalEvent::ReadClosed);
    world.run_until(Instant::from_millis(15));
    assert!(
        world.closed.contains(&ConnId(3)),
        "the refused connection is closed"
    );

    // A SOCKS5 client gets through its greeting, then a general failure for its request.
    accept(&mut world, 4, 1);
    world.local(4, LocalEvent::Data(&[5, 1, 0]));
    world.local(4, LocalEvent::Data(&[5, 1, 0, 1, 10, 8, 0, 1, 0, 80]));
    world.run_until(Instant::from_millis(20));
    let reply = &world.received[&ConnId(4)];
    assert_eq!(&reply[..2], &[5, 0], "method selection");
    assert_eq!(reply[2..4], [5, 1], "reply: general SOCKS server failure");
    world.local(4, LocalEvent::ReadClosed);
    world.run_until(Instant::from_millis(25));
    assert!(world.closed.contains(&ConnId(4)));
    assert_eq!(world.client.stats().refused_connections, 2);
    // Nothing was opened through the tunnel for either.
    assert_eq!(
        world.server_socket(listener).state(),
        erebus_net::State::Listen
    );

    // Refused connections do not hold the limit: once a served connection goes, the next one
    // is served.
    world.local(1, LocalEvent::Reset);
    world.run_until(Instant::from_millis(30));
    accept(&mut world, 5, 1);
    world.local(5, LocalEvent::Data(&[5, 1, 0]));
    world.local(5, LocalEvent::Data(&[5, 1, 0, 1, 10, 8, 0, 1, 0, 80]));
    world.run_until(Instant::from_millis(40));
    assert_eq!(
        world.received[&ConnId(5)][2..4],
        [5, 0],
        "served once a slot is free"
    );
    assert_eq!(world.client.stats().refused_connections, 2);
    let totals = world.client.stats().to_string();
    assert!(
        totals.contains("2 refused at the connection limit"),
        "{totals}"
    );
}

#[test]
fn a_flood_beyond_the_limit_is_closed_without_an_answer() {
    let mut world = World::with_limits(Limits {
        connections: 1,
        ..Limits::default()
    });
    accept(&mut world, 1, 0);
    let flood = Limits::MAX_REFUSING as u64;
    for conn in 2..2 + flood {
        accept(&mut world, conn, 0);
    }
    assert!(
        world.closed.is_empty(),
        "up to MAX_REFUSING are kept to be answered"
    );
    accept(&mut world, 2 + flood, 0);
    assert_eq!(world.closed, [ConnId(2 + flood)], "closed at once");
    assert_eq!(world.client.stats().refused_connections, flood + 1);
}

#[test]
fn lookups_beyond_the_limit_are_refused() {
    let mut world = World::with_limits(Limits {
        dns_lookups: 1,
        ..Limits::default()
    });
    world.server.udp_bind(53).unwrap();
    accept(&mut world, 1, 0);
    world.local(
        1,
        LocalEvent::Data(b"GET http://one.erebus.test/ HTTP/1.1\r\nHost: one.erebus.test\r\n\r\n"),
    );
    assert!(world.server.udp_recv().is_some(), "the first name is asked");
    accept(&mut world, 2, 0);
    world.local(
        2,
        LocalEvent::Data(b"GET http://two.erebus.test/ HTTP/1.1\r\nHost: two.erebus.test\r\n\r\n"),
    );
    world.run_until(Instant::from_millis(10));
    let answer = String::from_utf8_lossy(&world.received[&ConnId(2)]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("resolving as many names"), "{answer}");
    assert!(world.server.udp_recv().is_none(), "no second query");
    assert_eq!(world.client.stats().refused_lookups, 1);
    assert!(
        !world.received.contains_key(&ConnId(1)),
        "the first still waits"
    );
}

#[test]
fn a_lookup_whose_connection_went_frees_its_place() {
    let mut world = World::with_limits(Limits {
        dns_lookups: 1,
        ..Limits::default()
    });
    world.server.udp_bind(53).unwrap();
    accept(&mut world, 1, 0);
    world.local(
        1,
        LocalEvent::Data(b"GET http://one.erebus.test/ HTTP/1.1\r\nHost: one.erebus.test\r\n\r\n"),
    );
    assert!(world.server.udp_recv().is_some(), "the first name is asked");
    // Its client goes before the answer: the lookup goes with it.
    world.local(1, LocalEvent::Reset);
    accept(&mut world, 2, 0);
    world.local(
        2,
        LocalEvent::Data(b"GET http://two.erebus.test/ HTTP/1.1\r\nHost: two.erebus.test\r\n\r\n"),
    );
    assert!(
        world.server.udp_recv().is_some(),
        "the second name is asked, not refused"
    );
    assert_eq!(world.client.stats().refused_lookups, 0);
}

#[test]
fn close_input_ends_the_session() {
    let mut world = World::new();
    world.input(Input::Close { now: world.now });
    assert!(
        world
            .events
            .iter()
            .any(|e| matches!(e, Event::Down(f) if f.fault == Fault::Closed))
    );
    assert_eq!(world.client.transport(), None);
}

#[test]
fn unknown_connection_is_refused_without_effect() {
    let mut world = World::new();
    let result = world.client.handle_input(Input::Local {
        now: world.now,
        conn: ConnId(99),
        event: LocalEvent::Data(b"x"),
    });
    assert!(result.is_err());
}

/// The tunnel loses its session: the supervisor's `Reconnecting`.
fn lose_session(world: &mut World) {
    world
        .tunnel_events
        .borrow_mut()
        .push_back(TunnelEvent::Reconnecting {
            reason: Failure::new(Fault::Timeout, "ping-restart"),
            retry_in: Duration::from_secs(1),
        });
    world.input(Input::Timeout { now: world.now });
}

/// A world with one proxied connection (local connection 1, through the HTTP proxy to port 80
/// of the server) that has received its first bytes.
fn world_with_a_connection_midway() -> World {
    let mut world = World::new();
    let listener = world.server.listen(80).unwrap();
    world.local(
        1,
        LocalEvent::Accepted {
            listener: ListenerId(0),
        },
    );
    world.local(
        1,
        LocalEvent::Data(b"CONNECT 10.8.0.1:80 HTTP/1.1\r\nHost: 10.8.0.1:80\r\n\r\n"),
    );
    world.run_until(Instant::from_millis(50));
    world.server_socket(listener).send(b"partial").unwrap();
    world.run_until(Instant::from_millis(100));
    world
}

#[test]
fn a_lost_session_closes_the_connections_through_it() {
    let mut world = world_with_a_connection_midway();
    assert!(world.received[&ConnId(1)].ends_with(b"partial"));
    assert!(world.closed.is_empty());

    lose_session(&mut world);
    assert_eq!(
        world.closed,
        [ConnId(1)],
        "the cut connection is closed, not left hanging"
    );
    assert!(matches!(
        world.events.last(),
        Some(Event::Reconnecting { .. })
    ));
    assert_eq!(world.client.stats().cut_by_reconnect, 1);
    assert_eq!(
        world.client.stack().handles().count(),
        0,
        "the stack forgets the lost session's sockets"
    );
    // The connection's later events are refused quietly: it is gone.
    assert!(
        world
            .client
            .handle_input(Input::Local {
                now: world.now,
                conn: ConnId(1),
                event: LocalEvent::Data(b"more"),
            })
            .is_err()
    );
}

/// While the tunnel is down nothing can leave, so the packets the stack still holds for the
/// lost session (the resets of its aborted connections) must not make the client ask to be
/// woken at once: a driver would go round its loop without pause for the whole outage, and one
/// that runs its socket tasks on the same thread would starve them.
#[test]
fn an_outage_asks_for_no_immediate_wake_up() {
    let mut world = world_with_a_connection_midway();

    lose_session(&mut world);
    assert_eq!(world.closed, [ConnId(1)]);
    for _ in 0..3 {
        let deadline = world.drain();
        assert!(
            deadline.is_none_or(|deadline| deadline > world.now),
            "woken at once ({deadline:?} at {:?}) while the tunnel is down",
            world.now
        );
        world.now += Duration::from_millis(500);
        world.input(Input::Timeout { now: world.now });
    }
}

#[test]
fn a_request_during_an_outage_waits_for_the_next_session() {
    let mut world = World::new();
    let listener = world.server.listen(80).unwrap();
    lose_session(&mut world);
    world.local(
        2,
        LocalEvent::Accepted {
            listener: ListenerId(0),
        },
    );
    world.local(
        2,
        LocalEvent::Data(b"CONNECT 10.8.0.1:80 HTTP/1.1\r\nHost: 10.8.0.1:80\r\n\r\n"),
    );
    world.run_until(Instant::from_secs(3));
    assert!(
        !world.received.contains_key(&ConnId(2)),
        "no answer while the tunnel is down and the wait is not over"
    );
    // The next session comes up, with another address: the stack follows it.
    world.server.set_tunnel_config(&TunnelConfig {
        ipv4: IpNet::new(IpAddr::V4(SERVER_IP), 24),
        mtu: 1500,
        ..TunnelConfig::default()
    });
    let mut next = up_config();
    next.ipv4 = IpNet::new(IpAddr::V4(Ipv4Addr::new(10, 8, 0, 7)), 24);
    world
        .tunnel_events
        .borrow_mut()
        .push_back(TunnelEvent::Up(next));
    world.input(Input::Timeout { now: world.now });
    world.run_until(world.now + Duration::from_millis(100));
    assert_eq!(
        world.received[&ConnId(2)],
        b"HTTP/1.1 200 Connection established\r\n\r\n"
    );
    let accepted = world.server_socket(listener).remote_endpoint();
    assert_eq!(
        accepted.map(|a| a.ip()),
        Some(IpAddr::V4(Ipv4Addr::new(10, 8, 0, 7)))
    );
}

#[test]
fn a_request_during_a_long_outage_gets_503_after_the_wait() {
    let mut world = World::new();
    lose_session(&mut world);
    let lost_at = world.now;
    world.local(
        3,
        LocalEvent::Accepted {
            listener: ListenerId(0),
        },
    );
    world.local(
        3,
        LocalEvent::Data(b"GET http://10.8.0.1/ HTTP/1.1\r\nHost: 10.8.0.1\r\n\r\n"),
    );
    world.run_until(lost_at + Duration::from_millis(9_900));
    assert!(!world.received.contains_key(&ConnId(3)));
    world.run_until(lost_at + Duration::from_millis(10_100));
    let answer = String::from_utf8_lossy(&world.received[&ConnId(3)]).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    assert!(answer.contains("\r\nRetry-After: 5\r\n"), "{answer}");
    assert!(answer.contains("the VPN tunnel is down"), "{answer}");
}

#[test]
fn a_socks_request_during_an_outage_gets_a_general_failure() {
    let mut world = World::new();
    lose_session(&mut world);
    world.local(
        4,
        LocalEvent::Accepted {
            listener: ListenerId(1),
        },
    );
    world.local(4, LocalEvent::Data(&[5, 1, 0]));
    world.local(4, LocalEvent::Data(&[5, 1, 0, 1, 10, 8, 0, 1, 0, 80]));
    world.run_until(world.now + Duration::from_secs(11));
    let answer = &world.received[&ConnId(4)];
    assert_eq!(&answer[..2], &[5, 0], "method selection");
    assert_eq!(&answer[2..4], &[5, 1], "general SOCKS server failure");
}

#[test]
fn packets_from_another_address_are_dropped_and_counted() {
    let mut world = World::new();
    let before = world.client.stats();
    world
        .client
        .handle_input(Input::Transport {
            now: world.now,
            event: TransportEvent::Data {
                from: "192.0.2.66:1194".parse().unwrap(),
                bytes: &[0x45; 40],
            },
        })
        .unwrap();
    let after = world.client.stats();
    assert_eq!(after.foreign_packets, before.foreign_packets + 1);
    assert_eq!(after.packets_in, before.packets_in);
}

#[test]
fn every_drop_is_counted_by_where_it_came_from_and_why() {
    let mut world = World::new();
    let before = world.client.stats();
    let server: SocketAddr = SERVER_ADDR.parse().unwrap();
    let stranger: SocketAddr = "192.0.2.66:1194".parse().unwrap();
    let oversized = vec![0x45; 65_536];
    // An inner packet the stack refuses: an IPv4 header cut short.
    let truncated_inner = [0x45, 0, 0, 20];
    let packets: [(SocketAddr, &[u8]); 10] = [
        (server, &[0xd1, 1, 2, 3]),
        (server, &[0xd1, 4]),
        (server, &[0xd1]),
        (server, &[0xd2, 0, 0]),
        (server, &[0xd2]),
        (server, &[0xd3]),
        (server, &oversized),
        (server, &truncated_inner),
        (stranger, &[0xd1, 1, 2, 3]),
        (stranger, &[0x45; 40]),
    ];
    for (from, bytes) in packets {
        world.input(Input::Transport {
            now: world.now,
            event: TransportEvent::Data { from, bytes },
        });
    }
    let after = world.client.stats();
    let drops = after.server_drops;
    assert_eq!(drops.get(DropReason::Replayed), 3);
    assert_eq!(drops.get(DropReason::Unauthentic), 2);
    // The oversized datagram too: no tunnel could read it.
    assert_eq!(drops.get(DropReason::Malformed), 2);
    assert_eq!(drops.get(DropReason::UnknownKey), 0);
    assert_eq!(after.tunnel_drops(), 7);
    assert_eq!(after.foreign_packets, before.foreign_packets + 2);
    assert_eq!(after.stack_drops, before.stack_drops + 1);
    assert_eq!(after.packets_in, before.packets_in + 8);
    let line = after.to_string();
    assert!(
        line.contains(
            "dropped: 7 from the server (bad, replayed or unexpected: 3 replayed or too old, \
             2 authentication failed, 2 malformed packet), 2 from other addresses, 1 inner \
             packets"
        ),
        "{line}"
    );
    // The session goes on: a drop changes nothing else.
    assert!(world.events.iter().all(|e| !matches!(e, Event::Down(_))));
}

#[test]
fn a_closed_transport_is_the_tunnels_to_handle() {
    let mut world = World::new();
    world
        .client
        .handle_input(Input::Transport {
            now: world.now,
            event: TransportEvent::Closed {
                error: TransportError::Reset,
            },
        })
        .unwrap();
    assert_eq!(*world.transport_errors.borrow(), [TransportError::Reset]);
    assert_eq!(world.client.remote(), None);
    // Nothing is sent until the transport is connected again.
    let mut buf = vec![0; 2048];
    assert!(matches!(
        world.client.poll_output(&mut buf),
        Output::Timeout(_)
    ));
}
