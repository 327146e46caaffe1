//! The client composed with a pass-through tunnel and a second user-space stack standing in
//! for the private network: proxy requests become TCP connections through the tunnel, bytes
//! flow both ways, and failures become the right proxy answers.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;

use erebus_client::{Client, ClientConfig};
use erebus_net::{SocketHandle, Stack, TcpConfig};
use erebus_proxy::{FrontEnd, ProxyConfig};
use erebus_sansio::io::{
    ConnId, Event, Input, ListenerId, LocalAction, LocalEvent, Output, TransportEvent,
};
use erebus_sansio::tunnel::{
    Decapsulated, DropReason, Failure, Fault, IpNet, Overhead, TransportKind, TransportSpec,
    Tunnel, TunnelConfig, TunnelEvent,
};
use erebus_sansio::{Driven, Instant, Seed};

const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 2);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 1);

/// A tunnel that carries inner packets as they are, up at once.
struct PassThrough {
    up_sent: bool,
    closing: bool,
}

impl Tunnel for PassThrough {
    fn transport(&self) -> TransportSpec {
        TransportSpec {
            remote: "192.0.2.1:1194".parse().unwrap(),
            kind: TransportKind::Udp,
        }
    }
    fn overhead(&self) -> Overhead {
        Overhead::default()
    }
    fn decapsulate(&mut self, _: Instant, packet: &mut [u8]) -> Result<Decapsulated, DropReason> {
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
        if self.up_sent {
            return None;
        }
        self.up_sent = true;
        Some(TunnelEvent::Up(TunnelConfig {
            ipv4: IpNet::new(IpAddr::V4(CLIENT_IP), 24),
            gateway: Some(IpAddr::V4(SERVER_IP)),
            mtu: 1500,
            ..TunnelConfig::default()
        }))
    }
    fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        None
    }
}

/// The client, a server stack behind the tunnel, and what each local connection received.
struct World {
    client: Client<PassThrough>,
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
        let config = ClientConfig {
            listeners: vec![FrontEnd::Http, FrontEnd::Socks5],
            proxy: ProxyConfig::default(),
            tcp: TcpConfig::default(),
            dns_servers: vec![IpAddr::V4(SERVER_IP)],
        };
        let tunnel = PassThrough {
            up_sent: false,
            closing: false,
        };
        let client = Client::new(tunnel, config, &Seed::from_byte(1), Instant::ZERO);
        let server_config = TunnelConfig {
            ipv4: IpNet::new(IpAddr::V4(SERVER_IP), 24),
            mtu: 1500,
            ..TunnelConfig::default()
        };
        let server = Stack::new(&server_config, TcpConfig::default(), &Seed::from_byte(2));
        let mut world = Self {
            client,
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
                    Output::Transmit(bytes) => self.to_server.push_back(bytes.to_vec()),
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
                        event: TransportEvent::Data(&reply),
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
            self.now = next.max(self.now + std::time::Duration::from_micros(1));
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
        world.run_until(world.now + std::time::Duration::from_millis(1));
    }
    world.run_until(world.now + std::time::Duration::from_secs(1));
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
