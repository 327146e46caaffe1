//! The server-role mio driver listens, serves clients' datagrams and streams, opens flows to
//! loopback origins with backpressure, resolves names, checks credentials and stops
//! gracefully; checked with a small echo-and-proxy machine that knows no protocol. Loopback
//! only.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant as StdInstant};

use erebus::Clock;
use erebus::serve::{CredentialsChecker, MioServeDriver, ServeStopHandle};
use erebus_sansio::Instant;
use erebus_sansio::io::{ConnId, LocalAction, LocalEvent};
use erebus_sansio::serve::{
    FlowEvent, FlowId, FlowKind, ListenSpec, PeerEvent, ServeDriven, ServeEvent, ServeInput,
    ServeOutput,
};
use erebus_sansio::tunnel::TransportKind;

/// Bytes each way in the bulk test.
const BULK: usize = 8 * 1024 * 1024;
/// The bulk writes' size: larger than the driver's first output buffer, on purpose.
const BULK_CHUNK: usize = 96 * 1024;
/// The machine pauses reading a bulk flow every this many bytes, until its next timer.
const PAUSE_EVERY: usize = 1024 * 1024;
const WAIT: Duration = Duration::from_secs(20);

fn up_byte(i: usize) -> u8 {
    (i % 251) as u8
}

fn down_byte(i: usize) -> u8 {
    ((i % 253) as u8) ^ 0x5a
}

enum Act {
    Write(Vec<u8>),
    Pause,
    Resume,
    Shutdown,
    Close,
}

enum Out {
    Datagram(SocketAddr, Vec<u8>),
    Peer(ConnId, Act),
    Open(FlowId, FlowKind, SocketAddr),
    Flow(FlowId, Act),
    Resolve(u64, String),
    Check(u64, String, String),
    Event(ServeEvent),
}

impl Out {
    fn bytes_needed(&self) -> usize {
        match self {
            Self::Datagram(_, b) | Self::Peer(_, Act::Write(b)) | Self::Flow(_, Act::Write(b)) => {
                b.len()
            }
            Self::Resolve(_, name) => name.len(),
            Self::Check(_, user, password) => user.len() + password.len(),
            _ => 0,
        }
    }
}

#[derive(Default)]
struct Bulk {
    sent: usize,
    received: usize,
    corrupt: bool,
    blocked: bool,
    blocks: u32,
    writables: u32,
    pauses: u32,
    paused: bool,
    read_closed: bool,
}

enum Mode {
    /// Write the request once connected; send what comes back to the client.
    Forward(Vec<u8>),
    /// Send and receive [`BULK`] patterned bytes, obeying backpressure.
    Bulk(Bulk),
    /// Send one datagram once connected; send the answer to the client.
    Udp(Vec<u8>),
}

struct Flow {
    client: SocketAddr,
    mode: Mode,
}

/// What the machine saw, for the test to check.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Accepted(ConnId),
    PeerClosed(ConnId),
    Closing,
}

/// An echo-and-proxy machine: text commands in datagrams, an echo on streams.
struct Fake {
    listen: ListenSpec,
    out: VecDeque<Out>,
    flows: HashMap<FlowId, Flow>,
    next_id: u64,
    askers: HashMap<u64, SocketAddr>,
    clients: Vec<SocketAddr>,
    seen: mpsc::Sender<Seen>,
    stop_at: Option<Instant>,
    never_stop: bool,
    deadline: Option<Instant>,
}

impl Fake {
    fn new(kind: TransportKind, seen: mpsc::Sender<Seen>, never_stop: bool) -> Self {
        Self {
            listen: ListenSpec {
                addr: "127.0.0.1:0".parse().unwrap(),
                kind,
            },
            out: VecDeque::new(),
            flows: HashMap::new(),
            next_id: 1,
            askers: HashMap::new(),
            clients: Vec::new(),
            seen,
            stop_at: None,
            never_stop,
            deadline: None,
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn reply(&mut self, to: SocketAddr, text: impl Into<Vec<u8>>) {
        self.out.push_back(Out::Datagram(to, text.into()));
    }

    fn command(&mut self, from: SocketAddr, text: &str) {
        let mut words = text.splitn(3, ' ');
        let (verb, arg, rest) = (
            words.next().unwrap_or(""),
            words.next().unwrap_or(""),
            words.next().unwrap_or(""),
        );
        match verb {
            "echo" => self.reply(from, text["echo ".len()..].to_owned()),
            "tcp" | "bulk" | "udp" => {
                let to: SocketAddr = arg.parse().unwrap();
                let flow = FlowId(self.id());
                let (kind, mode) = match verb {
                    "tcp" => (FlowKind::Tcp, Mode::Forward(rest.as_bytes().to_vec())),
                    "bulk" => (FlowKind::Tcp, Mode::Bulk(Bulk::default())),
                    _ => (FlowKind::Udp, Mode::Udp(rest.as_bytes().to_vec())),
                };
                self.flows.insert(flow, Flow { client: from, mode });
                self.out.push_back(Out::Open(flow, kind, to));
            }
            "resolve" => {
                let query = self.id();
                self.askers.insert(query, from);
                self.out.push_back(Out::Resolve(query, arg.to_owned()));
            }
            "login" => {
                let request = self.id();
                self.askers.insert(request, from);
                self.out
                    .push_back(Out::Check(request, arg.to_owned(), rest.to_owned()));
            }
            _ => self.reply(from, "unknown command"),
        }
    }

    fn peer(&mut self, conn: ConnId, event: PeerEvent<'_>) {
        match event {
            PeerEvent::Accepted { .. } => {
                let _ = self.seen.send(Seen::Accepted(conn));
            }
            PeerEvent::Data(b"flood") => {
                // Far more than a client that reads nothing may be owed.
                for _ in 0..256 {
                    self.out
                        .push_back(Out::Peer(conn, Act::Write(vec![7; 64 * 1024])));
                }
            }
            PeerEvent::Data(bytes) => self
                .out
                .push_back(Out::Peer(conn, Act::Write(bytes.to_vec()))),
            PeerEvent::Closed => {
                let _ = self.seen.send(Seen::PeerClosed(conn));
            }
        }
    }

    fn flow(&mut self, id: FlowId, event: FlowEvent<'_>) {
        let Some(flow) = self.flows.get_mut(&id) else {
            return;
        };
        let client = flow.client;
        let mut done = false;
        let mut replies: Vec<Vec<u8>> = Vec::new();
        match (&mut flow.mode, event) {
            (Mode::Forward(request), FlowEvent::Connected) => {
                replies.push(b"connected".to_vec());
                self.out
                    .push_back(Out::Flow(id, Act::Write(std::mem::take(request))));
            }
            (Mode::Udp(payload), FlowEvent::Connected) => {
                self.out
                    .push_back(Out::Flow(id, Act::Write(std::mem::take(payload))));
            }
            (_, FlowEvent::Failed(error)) => {
                replies.push(format!("failed {error:?}").into_bytes());
                done = true;
            }
            (Mode::Forward(_), FlowEvent::Socket(LocalEvent::Data(bytes))) => {
                replies.push([b"data:", bytes].concat());
            }
            (Mode::Udp(_), FlowEvent::Socket(LocalEvent::Data(bytes))) => {
                replies.push([b"udp:", bytes].concat());
                self.out.push_back(Out::Flow(id, Act::Close));
                done = true;
            }
            (Mode::Forward(_), FlowEvent::Socket(LocalEvent::ReadClosed)) => {
                replies.push(b"eof".to_vec());
                self.out.push_back(Out::Flow(id, Act::Close));
                done = true;
            }
            (_, FlowEvent::Socket(LocalEvent::Reset)) => {
                replies.push(b"reset".to_vec());
                done = true;
            }
            (Mode::Bulk(bulk), FlowEvent::Socket(LocalEvent::Data(bytes))) => {
                let start = bulk.received;
                bulk.corrupt |= bytes
                    .iter()
                    .enumerate()
                    .any(|(i, b)| *b != down_byte(start + i));
                bulk.received += bytes.len();
                if start / PAUSE_EVERY != bulk.received / PAUSE_EVERY && !bulk.paused {
                    bulk.paused = true;
                    bulk.pauses += 1;
                    self.out.push_back(Out::Flow(id, Act::Pause));
                }
            }
            (Mode::Bulk(bulk), FlowEvent::Socket(LocalEvent::WriteBlocked)) => {
                bulk.blocked = true;
                bulk.blocks += 1;
            }
            (Mode::Bulk(bulk), FlowEvent::Socket(LocalEvent::Writable)) => {
                bulk.blocked = false;
                bulk.writables += 1;
            }
            (Mode::Bulk(bulk), FlowEvent::Socket(LocalEvent::ReadClosed)) => {
                // Reported once everything was also handed over for sending.
                bulk.read_closed = true;
            }
            _ => {}
        }
        for reply in replies {
            self.reply(client, reply);
        }
        if done {
            self.flows.remove(&id);
        }
    }

    /// Moves every bulk flow along: resumes reading, writes a few chunks unless blocked;
    /// reports and closes those done both ways.
    fn pump_bulk(&mut self, timer: bool) {
        let mut done = Vec::new();
        for (id, flow) in &mut self.flows {
            let Mode::Bulk(bulk) = &mut flow.mode else {
                continue;
            };
            if timer && bulk.paused {
                bulk.paused = false;
                self.out.push_back(Out::Flow(*id, Act::Resume));
            }
            for _ in 0..4 {
                if bulk.blocked || bulk.sent >= BULK {
                    break;
                }
                let len = BULK_CHUNK.min(BULK - bulk.sent);
                let chunk: Vec<u8> = (bulk.sent..bulk.sent + len).map(up_byte).collect();
                bulk.sent += len;
                self.out.push_back(Out::Flow(*id, Act::Write(chunk)));
                if bulk.sent == BULK {
                    self.out.push_back(Out::Flow(*id, Act::Shutdown));
                }
            }
            if bulk.read_closed && bulk.sent == BULK {
                let report = format!(
                    "bulk sent={} received={} corrupt={} blocks={} writables={} pauses={}",
                    bulk.sent,
                    bulk.received,
                    bulk.corrupt,
                    bulk.blocks,
                    bulk.writables,
                    bulk.pauses
                );
                // What was written still reaches the origin after the close.
                self.out.push_back(Out::Flow(*id, Act::Close));
                self.out
                    .push_back(Out::Datagram(flow.client, report.into_bytes()));
                done.push(*id);
            }
        }
        for id in done {
            self.flows.remove(&id);
        }
    }

    fn bulk_busy(&self) -> bool {
        self.flows.values().any(|f| match &f.mode {
            Mode::Bulk(b) => b.paused || (!b.blocked && b.sent < BULK),
            _ => false,
        })
    }
}

impl ServeDriven for Fake {
    fn listen(&self) -> ListenSpec {
        self.listen
    }

    fn handle_input(&mut self, input: ServeInput<'_>) {
        let now = input.now();
        let mut timer = false;
        match input {
            ServeInput::Timeout { now } => {
                timer = true;
                if self.stop_at.is_some_and(|at| now >= at) {
                    self.stop_at = None;
                    self.out.push_back(Out::Event(ServeEvent::Stopped));
                }
            }
            ServeInput::Datagram { from, bytes, .. } => {
                if !self.clients.contains(&from) {
                    self.clients.push(from);
                }
                self.command(from, std::str::from_utf8(bytes).unwrap());
            }
            ServeInput::Peer { conn, event, .. } => self.peer(conn, event),
            ServeInput::Flow { flow, event, .. } => self.flow(flow, event),
            ServeInput::Resolved { query, addrs, .. } => {
                let to = self.askers.remove(&query).unwrap();
                let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                self.reply(to, format!("resolved {}", list.join(",")));
            }
            ServeInput::CredentialsChecked {
                request, accepted, ..
            } => {
                let to = self.askers.remove(&request).unwrap();
                self.reply(to, format!("login {accepted}"));
            }
            ServeInput::Close { now } => {
                let _ = self.seen.send(Seen::Closing);
                for client in self.clients.clone() {
                    self.reply(client, "bye");
                }
                if !self.never_stop {
                    // Not at once: the driver keeps serving until the machine says so.
                    self.stop_at = Some(now + Duration::from_millis(30));
                }
            }
        }
        self.pump_bulk(timer);
        self.deadline = if self.bulk_busy() {
            Some(now + Duration::from_millis(1))
        } else {
            self.stop_at
        };
    }

    fn poll_output<'b>(&mut self, buf: &'b mut [u8]) -> ServeOutput<'b> {
        let Some(out) = self.out.pop_front() else {
            return ServeOutput::Timeout(self.deadline);
        };
        let needed = out.bytes_needed();
        if needed > buf.len() {
            self.out.push_front(out);
            return ServeOutput::BufferTooSmall { needed };
        }
        let action = |act: Act, buf: &'b mut [u8]| match act {
            Act::Write(bytes) => LocalAction::Write(put(buf, &bytes)),
            Act::Pause => LocalAction::PauseReading,
            Act::Resume => LocalAction::ResumeReading,
            Act::Shutdown => LocalAction::Shutdown,
            Act::Close => LocalAction::Close,
        };
        match out {
            Out::Datagram(to, bytes) => ServeOutput::Datagram {
                to,
                bytes: put(buf, &bytes),
            },
            Out::Peer(conn, act) => ServeOutput::Peer {
                conn,
                action: action(act, buf),
            },
            Out::Open(flow, kind, to) => ServeOutput::OpenFlow { flow, kind, to },
            Out::Flow(flow, act) => ServeOutput::Flow {
                flow,
                action: action(act, buf),
            },
            Out::Resolve(query, name) => ServeOutput::Resolve {
                query,
                name: std::str::from_utf8(put(buf, name.as_bytes())).unwrap(),
            },
            Out::Check(request, user, password) => {
                let (head, tail) = buf.split_at_mut(user.len());
                ServeOutput::CheckCredentials {
                    request,
                    username: std::str::from_utf8(put(head, user.as_bytes())).unwrap(),
                    password: std::str::from_utf8(put(tail, password.as_bytes())).unwrap(),
                }
            }
            Out::Event(event) => ServeOutput::Event(event),
        }
    }
}

fn put<'b>(buf: &'b mut [u8], bytes: &[u8]) -> &'b [u8] {
    let head = &mut buf[..bytes.len()];
    head.copy_from_slice(bytes);
    head
}

/// A driver running a [`Fake`] on its own thread.
struct Server {
    addr: SocketAddr,
    stop: ServeStopHandle,
    thread: JoinHandle<io::Result<()>>,
    seen: mpsc::Receiver<Seen>,
    events: mpsc::Receiver<ServeEvent>,
}

fn serve(
    kind: TransportKind,
    never_stop: bool,
    configure: impl FnOnce(&mut MioServeDriver<Fake>) + Send + 'static,
) -> Server {
    let (seen_tx, seen) = mpsc::channel();
    let (events_tx, events) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let thread = thread::spawn(move || {
        let fake = Fake::new(kind, seen_tx, never_stop);
        let mut driver = MioServeDriver::new(fake, Clock::start())?;
        driver.on_event(move |event| {
            let _ = events_tx.send(event.clone());
        });
        configure(&mut driver);
        ready_tx
            .send((driver.local_addr(), driver.stop_handle()))
            .unwrap();
        driver.run()
    });
    let (addr, stop) = ready_rx.recv_timeout(WAIT).unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    Server {
        addr,
        stop,
        thread,
        seen,
        events,
    }
}

impl Server {
    fn udp(configure: impl FnOnce(&mut MioServeDriver<Fake>) + Send + 'static) -> Self {
        serve(TransportKind::Udp, false, configure)
    }

    /// Stops the server and checks it stopped as it should, quickly.
    fn stop(self) {
        let started = StdInstant::now();
        self.stop.stop();
        self.thread.join().unwrap().unwrap();
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(self.events.try_iter().any(|e| e == ServeEvent::Stopped));
    }
}

/// A UDP client of the server.
struct Client {
    socket: UdpSocket,
    server: SocketAddr,
}

impl Client {
    fn new(server: SocketAddr) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(WAIT)).unwrap();
        Self { socket, server }
    }

    fn send(&self, command: &str) {
        self.socket
            .send_to(command.as_bytes(), self.server)
            .unwrap();
    }

    fn recv(&self) -> String {
        let mut buf = [0; 2048];
        let (n, from) = self.socket.recv_from(&mut buf).unwrap();
        assert_eq!(from, self.server);
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    fn ask(&self, command: &str) -> String {
        self.send(command);
        self.recv()
    }
}

#[test]
fn udp_listener_answers_each_sender() {
    let server = Server::udp(|_| {});
    let (a, b) = (Client::new(server.addr), Client::new(server.addr));
    for i in 0..20 {
        assert_eq!(a.ask(&format!("echo a{i}")), format!("a{i}"));
        assert_eq!(b.ask(&format!("echo b{i}")), format!("b{i}"));
    }
    server.stop();
}

#[test]
fn tcp_listener_serves_client_streams() {
    let server = serve(TransportKind::TcpLengthPrefixed, false, |_| {});
    let mut first = TcpStream::connect(server.addr).unwrap();
    let mut second = TcpStream::connect(server.addr).unwrap();
    for stream in [&first, &second] {
        stream.set_read_timeout(Some(WAIT)).unwrap();
    }
    let next_seen = || server.seen.recv_timeout(WAIT).unwrap();
    let Seen::Accepted(first_conn) = next_seen() else {
        panic!("no accept")
    };
    let Seen::Accepted(second_conn) = next_seen() else {
        panic!("no second accept")
    };
    assert_ne!(first_conn, second_conn);

    // Data both ways on both streams, 1 MiB of it on the first.
    let big: Vec<u8> = (0..1024 * 1024).map(up_byte).collect();
    let mut writer = first.try_clone().unwrap();
    let sent = big.clone();
    let writing = thread::spawn(move || writer.write_all(&sent).unwrap());
    second.write_all(b"hello").unwrap();
    let mut echoed = vec![0; big.len()];
    first.read_exact(&mut echoed).unwrap();
    writing.join().unwrap();
    assert!(echoed == big, "the echo differs");
    let mut hello = [0; 5];
    second.read_exact(&mut hello).unwrap();
    assert_eq!(&hello, b"hello");

    // A client that closes is reported closed, and only that one.
    drop(first);
    assert_eq!(next_seen(), Seen::PeerClosed(first_conn));

    // A client that reads nothing is dropped once too much waits for it.
    second.write_all(b"flood").unwrap();
    assert_eq!(next_seen(), Seen::PeerClosed(second_conn));
    let mut sink = Vec::new();
    let _ = second.read_to_end(&mut sink); // EOF or a reset: the stream is gone.
    assert!(sink.len() < 16 * 1024 * 1024);

    // New clients are still served.
    let mut third = TcpStream::connect(server.addr).unwrap();
    third.set_read_timeout(Some(WAIT)).unwrap();
    third.write_all(b"again").unwrap();
    let mut again = [0; 5];
    third.read_exact(&mut again).unwrap();
    assert_eq!(&again, b"again");
    server.stop();
}

#[test]
fn tcp_flow_forwards_to_a_loopback_origin() {
    let origin = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin_addr = origin.local_addr().unwrap();
    let origin_thread = thread::spawn(move || {
        let (mut stream, _) = origin.accept().unwrap();
        let mut request = [0; 4];
        stream.read_exact(&mut request).unwrap();
        assert_eq!(&request, b"ping");
        stream.write_all(b"pong").unwrap();
        // Closing the stream ends the flow: ReadClosed.
    });
    let server = Server::udp(|_| {});
    let client = Client::new(server.addr);
    client.send(&format!("tcp {origin_addr} ping"));
    assert_eq!(client.recv(), "connected");
    assert_eq!(client.recv(), "data:pong");
    assert_eq!(client.recv(), "eof");
    origin_thread.join().unwrap();
    server.stop();
}

#[test]
fn tcp_flow_moves_8_mib_both_ways_with_backpressure() {
    let origin = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin_addr = origin.local_addr().unwrap();
    let origin_thread = thread::spawn(move || {
        let (mut stream, _) = origin.accept().unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let writing = thread::spawn(move || {
            let data: Vec<u8> = (0..BULK).map(down_byte).collect();
            for chunk in data.chunks(64 * 1024) {
                writer.write_all(chunk).unwrap();
            }
            writer.shutdown(Shutdown::Write).unwrap();
        });
        // Read nothing for a while, then slowly: the driver must keep, and say so.
        thread::sleep(Duration::from_millis(300));
        let (mut received, mut intact) = (0usize, true);
        let mut buf = vec![0; 32 * 1024];
        loop {
            let n = stream.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            intact &= buf[..n]
                .iter()
                .enumerate()
                .all(|(i, b)| *b == up_byte(received + i));
            received += n;
            if received % (1024 * 1024) < n {
                thread::sleep(Duration::from_millis(5));
            }
        }
        writing.join().unwrap();
        (received, intact)
    });
    let server = Server::udp(|_| {});
    let client = Client::new(server.addr);
    client.send(&format!("bulk {origin_addr}"));
    let report = client.recv();
    let (received, intact) = origin_thread.join().unwrap();
    assert_eq!(received, BULK);
    assert!(intact, "the origin received other bytes than were sent");
    let fields: HashMap<&str, &str> = report
        .strip_prefix("bulk ")
        .unwrap_or_else(|| panic!("{report}"))
        .split(' ')
        .filter_map(|f| f.split_once('='))
        .collect();
    let number = |k: &str| fields[k].parse::<usize>().unwrap();
    assert_eq!(number("sent"), BULK, "{report}");
    assert_eq!(number("received"), BULK, "{report}");
    assert_eq!(fields["corrupt"], "false", "{report}");
    assert!(number("blocks") >= 1, "never WriteBlocked: {report}");
    // Every WriteBlocked but perhaps the last (the flow may close while blocked) was lifted.
    assert!(number("writables") + 1 >= number("blocks"), "{report}");
    assert!(number("writables") >= 1, "never Writable: {report}");
    assert!(number("pauses") >= 1, "{report}");
    server.stop();
}

#[test]
fn a_flow_to_a_closed_port_is_refused() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let server = Server::udp(|_| {});
    let client = Client::new(server.addr);
    assert_eq!(
        client.ask(&format!("tcp {closed_addr} hello")),
        "failed Refused"
    );
    // The server goes on serving.
    assert_eq!(client.ask("echo still here"), "still here");
    server.stop();
}

#[test]
fn udp_flow_to_a_loopback_echo() {
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let echo_addr = echo.local_addr().unwrap();
    echo.set_read_timeout(Some(WAIT)).unwrap();
    let echo_thread = thread::spawn(move || {
        let mut buf = [0; 1500];
        let (n, from) = echo.recv_from(&mut buf).unwrap();
        echo.send_to(&buf[..n], from).unwrap();
    });
    let server = Server::udp(|_| {});
    let client = Client::new(server.addr);
    assert_eq!(
        client.ask(&format!("udp {echo_addr} over udp")),
        "udp:over udp"
    );
    echo_thread.join().unwrap();
    server.stop();
}

#[test]
fn a_udp_flow_to_a_closed_port_is_reset() {
    let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let server = Server::udp(|_| {});
    let client = Client::new(server.addr);
    // The ICMP port unreachable comes back as an error on the flow's socket.
    assert_eq!(client.ask(&format!("udp {closed_addr} anyone?")), "reset");
    assert_eq!(client.ask("echo still here"), "still here");
    server.stop();
}

#[test]
fn names_resolve_on_the_host() {
    let server = Server::udp(|_| {});
    let client = Client::new(server.addr);
    let answer = client.ask("resolve localhost");
    let addrs = answer.strip_prefix("resolved ").unwrap();
    assert!(
        addrs.split(',').any(|a| a == "127.0.0.1" || a == "::1"),
        "{answer}"
    );
    assert_eq!(client.ask("resolve 192.0.2.7"), "resolved 192.0.2.7");
    server.stop();
}

#[test]
fn credentials_go_to_the_checker() {
    let checker: CredentialsChecker =
        Arc::new(|user, password| user == "alice" && password == "secret phrase");
    let server = Server::udp(move |driver| driver.set_credentials_checker(checker));
    let client = Client::new(server.addr);
    assert_eq!(client.ask("login alice secret phrase"), "login true");
    assert_eq!(client.ask("login alice wrong"), "login false");
    assert_eq!(client.ask("login bob secret phrase"), "login false");
    server.stop();

    // Without a checker, nobody gets in.
    let server = Server::udp(|_| {});
    let client = Client::new(server.addr);
    assert_eq!(client.ask("login alice secret phrase"), "login false");
    server.stop();
}

#[test]
fn stopping_closes_then_waits_for_the_machine() {
    let server = Server::udp(|_| {});
    let client = Client::new(server.addr);
    assert_eq!(client.ask("echo hi"), "hi");
    let started = StdInstant::now();
    server.stop.stop();
    assert_eq!(client.recv(), "bye");
    assert_eq!(server.seen.recv_timeout(WAIT).unwrap(), Seen::Closing);
    server.thread.join().unwrap().unwrap();
    let took = started.elapsed();
    // The machine stops 30 ms after Close; the driver waited for it, and no longer.
    assert!(took >= Duration::from_millis(30), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(
        server.events.try_iter().collect::<Vec<_>>(),
        [ServeEvent::Stopped]
    );
}

#[test]
fn a_machine_that_never_stops_is_given_up_after_the_grace() {
    let server = serve(TransportKind::Udp, true, |driver| {
        driver.set_stop_grace(Duration::from_millis(300));
    });
    let started = StdInstant::now();
    server.stop.stop();
    server.thread.join().unwrap().unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(server.seen.recv_timeout(WAIT).unwrap(), Seen::Closing);
}
