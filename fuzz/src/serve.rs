//! `serve`: the whole exit server, [`erebus_server::Server`], loaded by
//! [`erebus_server::load`] from one of [`CONFS`] (a server.conf with the test PKI), fed
//! steps from a few client addresses and drained to `Timeout` after each, as a driver does.
//!
//! Input: a configuration byte (bits 0-1 pick the server.conf; bit 7 adds a harness client,
//! an erebus [`TlsSession`] on the first address that connects before the steps and then
//! follows everything the server sends it), then steps (tag, u16 length, bytes; see
//! [`crate::Records`]). The tag's bits 4-5 pick the source address (of three), bits 0-3 the
//! step:
//!
//! - 0 (and 11-15): the bytes as a datagram (UDP) or as stream bytes of that address's
//!   connection (TCP; accepted first if it was not);
//! - 1: the connection is accepted; 2: it closes;
//! - 3: the clock moves on by the body's big-endian milliseconds (up to 4 bytes) and the
//!   server gets a timeout;
//! - 4: an event on a flow the server opened (body: flow index, event kind, data);
//! - 5: the oldest pending name lookup is answered with the body's IPv4 addresses;
//! - 6: the oldest pending credential check is answered (body bit 0: accepted);
//! - 7: the harness client sends the body as an inner packet;
//! - 8: the harness client sends an IPv4 UDP or TCP packet it builds with valid checksums
//!   from its own address (body: protocol bit, destination address and port, source port,
//!   TCP flags and numbers, payload), so the fuzzer reaches the exit's stack, the DNS relay
//!   and flows;
//! - 9: the server is asked to stop; 10: the clock jumps to the server's deadline.
//!
//! Without the client flag the seeds carry captured-looking client packets (a hard reset).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use erebus_client::framing::Deframer;
use erebus_openvpn::tls_session::TlsSession;
use erebus_sansio::io::{ConnId, LocalAction, LocalEvent, TransportError};
use erebus_sansio::serve::{FlowEvent, FlowId, PeerEvent, ServeDriven, ServeInput, ServeOutput};
use erebus_sansio::tunnel::{Decapsulated, TransportKind, Tunnel, TunnelEvent};
use erebus_sansio::{Instant, Seed};
use erebus_server::{AllowList, AllowRule, Server, ServeOptions, ServerConfig, UserTable};

use crate::Records;
use crate::ovpn_common::{SessionConfig, Wrap, client, wall_clock};
use crate::server_conf::reader;

/// The server configurations: text, and the client that fits each.
pub const CONFS: [(&str, SessionConfig, bool); 4] = [
    (
        "port 1194\nproto udp\ndev tun\ntopology subnet\nserver 10.8.0.0 255.255.255.0\n\
         ca ca.crt\ncert server.crt\nkey server.key\ndh none\ntls-crypt tc.key\n\
         data-ciphers AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\n\
         push \"dhcp-option DNS 10.8.0.1\"\nkeepalive 10 60\nexplicit-exit-notify 1\n",
        SessionConfig {
            wrap: Wrap::Crypt,
            client_cert: true,
            user_pass: false,
            reneg: None,
        },
        false,
    ),
    (
        "port 1194\nproto udp\ndev tun\ntopology subnet\nserver 10.8.0.0 255.255.255.248\n\
         ca ca.crt\ncert server.crt\nkey server.key\ndh none\ntls-auth ta.key 0\n\
         verify-client-cert none\nusername-as-common-name\n\
         push \"dhcp-option DNS 10.8.0.1\"\npush \"route 10.0.0.0 255.0.0.0\"\n\
         keepalive 5 20\nreneg-sec 30\nmax-clients 2\n",
        SessionConfig {
            wrap: Wrap::Auth,
            client_cert: false,
            user_pass: true,
            reneg: None,
        },
        false,
    ),
    (
        "port 443\nproto tcp-server\ndev tun\ntopology subnet\nserver 10.8.0.0 255.255.255.0\n\
         ca ca.crt\ncert server.crt\nkey server.key\ndh none\ntls-crypt tc.key\n\
         push \"dhcp-option DNS 10.8.0.1\"\nkeepalive 10 60\n",
        SessionConfig {
            wrap: Wrap::Crypt,
            client_cert: true,
            user_pass: false,
            reneg: None,
        },
        true,
    ),
    (
        "proto udp\ndev tun\ntopology subnet\nserver 10.9.0.0 255.255.0.0\n\
         ca ca.crt\ncert server.crt\nkey server.key\ndh none\n\
         verify-client-cert none\nauth-user-pass-verify check.sh via-file\nscript-security 2\n\
         push \"dhcp-option DNS 10.9.0.1\"\ntun-mtu 1400\n",
        SessionConfig {
            wrap: Wrap::None,
            client_cert: false,
            user_pass: true,
            reneg: None,
        },
        false,
    ),
];

/// The client addresses.
pub const ADDRS: [SocketAddr; 3] = [
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), 40_000),
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11)), 40_001),
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 12)), 50_000),
];

/// Step kinds (the tag's low four bits).
pub const DATA: u8 = 0;
/// Accept the address's connection.
pub const ACCEPT: u8 = 1;
/// Close it.
pub const CLOSE_CONN: u8 = 2;
/// Advance the clock and time out.
pub const ADVANCE: u8 = 3;
/// A flow event.
pub const FLOW: u8 = 4;
/// Answer a lookup.
pub const RESOLVED: u8 = 5;
/// Answer a credential check.
pub const CHECKED: u8 = 6;
/// A raw inner packet from the harness client.
pub const INNER: u8 = 7;
/// A built inner packet from the harness client.
pub const BUILT: u8 = 8;
/// Stop the server.
pub const STOP: u8 = 9;
/// Jump to the deadline.
pub const DEADLINE: u8 = 10;

/// The largest number of outputs drained after one input.
const DRAIN_LIMIT: usize = 4096;

thread_local! {
    static CONFIGS: Vec<ServerConfig> = CONFS
        .iter()
        .map(|(text, session, _)| {
            let users = UserTable::default().with_user("alice", "wonderland");
            let options = ServeOptions {
                listen: None,
                allow: AllowList::new(vec![
                    "127.0.0.0/8".parse::<AllowRule>().expect("a rule"),
                    "192.0.2.0/24:80-443".parse().expect("a rule"),
                    "0.0.0.0/0:53".parse().expect("a rule"),
                ]),
                // A users file makes every client send a password; auth-user-pass-verify
                // checks passwords itself (a users file would clash).
                users: (session.user_pass && !text.contains("auth-user-pass-verify"))
                    .then_some(users),
                wall_clock: wall_clock(),
            };
            let mut read = reader(None);
            erebus_server::load(text.as_bytes(), "server.conf", &mut read, options)
                .unwrap_or_else(|e| panic!("{e}"))
                .config
        })
        .collect();
}

/// The harness client and its link.
pub struct Client {
    /// The session.
    pub session: TlsSession,
    tcp: bool,
    deframer: Deframer,
    /// Whether it came up.
    pub up: bool,
    /// Its inner address.
    pub ip: Option<Ipv4Addr>,
    /// Inner packets it received.
    pub inner: usize,
}

/// The server, the harness client, and what is pending.
pub struct Driver {
    /// The server.
    pub server: Server,
    /// The clock.
    pub now: Instant,
    tcp: bool,
    accepted: [bool; 3],
    /// The harness client, if any.
    pub client: Option<Client>,
    flows: Vec<FlowId>,
    lookups: VecDeque<u64>,
    checks: VecDeque<u64>,
    to_client: Vec<Vec<u8>>,
    buf: Vec<u8>,
    /// Flows the server opened.
    pub opened: usize,
    /// Clients the server reported up.
    pub clients_up: usize,
}

impl Driver {
    /// A server with configuration `config`; bit 7 adds the harness client, which connects.
    pub fn new(config: u8) -> Self {
        let index = usize::from(config & 3);
        let (_, session_config, tcp) = CONFS[index];
        let server_config = CONFIGS.with(|c| c[index].clone());
        let server = Server::new(server_config, &Seed::from_byte(9), Instant::ZERO);
        let client = (config & 0x80 != 0).then(|| {
            let listen = server.listen().addr;
            let remote = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)), listen.port());
            let mut session = client(&session_config, remote, tcp, 3);
            session.transport_connected(Instant::ZERO, remote);
            Client {
                session,
                tcp,
                deframer: Deframer::default(),
                up: false,
                ip: None,
                inner: 0,
            }
        });
        let mut driver = Self {
            server,
            now: Instant::ZERO,
            tcp,
            accepted: [false; 3],
            client,
            flows: Vec::new(),
            lookups: VecDeque::new(),
            checks: VecDeque::new(),
            to_client: Vec::new(),
            buf: vec![0; 65_536],
            opened: 0,
            clients_up: 0,
        };
        if driver.client.is_some() {
            if tcp {
                driver.accept(0);
            }
            driver.pump();
            // Let the handshake finish (virtual time, no loss).
            for _ in 0..20 {
                if driver.client.as_ref().is_some_and(|c| c.up) {
                    break;
                }
                // auth-user-pass-verify: the driver accepts the harness client's password.
                while let Some(request) = driver.checks.pop_front() {
                    driver.input(ServeInput::CredentialsChecked {
                        now: driver.now,
                        request,
                        accepted: true,
                    });
                    driver.pump();
                }
                driver.advance(Duration::from_millis(500));
            }
        }
        driver
    }

    fn accept(&mut self, index: usize) {
        if self.accepted[index] {
            return;
        }
        self.accepted[index] = true;
        self.input(ServeInput::Peer {
            now: self.now,
            conn: ConnId(index as u64),
            event: PeerEvent::Accepted { from: ADDRS[index] },
        });
    }

    /// Bytes from address `index`, as its transport carries them.
    fn from_addr(&mut self, index: usize, bytes: &[u8]) {
        if self.tcp {
            self.accept(index);
            self.input(ServeInput::Peer {
                now: self.now,
                conn: ConnId(index as u64),
                event: PeerEvent::Data(bytes),
            });
        } else {
            self.input(ServeInput::Datagram {
                now: self.now,
                from: ADDRS[index],
                bytes,
            });
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        if let Some(client) = &mut self.client
            && client
                .session
                .poll_timeout()
                .is_some_and(|(at, _)| at <= self.now)
        {
            client.session.handle_timeout(self.now);
        }
        self.input(ServeInput::Timeout { now: self.now });
        self.pump();
    }

    /// One input, then the drain.
    fn input(&mut self, input: ServeInput<'_>) {
        self.server.handle_input(input);
        self.drain();
    }

    fn drain(&mut self) {
        for _ in 0..DRAIN_LIMIT {
            let output = self.server.poll_output(&mut self.buf);
            match output {
                ServeOutput::Timeout(_) => return,
                ServeOutput::Datagram { to, bytes } => {
                    assert!(!self.tcp, "a datagram from a TCP server");
                    if to == ADDRS[0] && self.client.is_some() {
                        self.to_client.push(bytes.to_vec());
                    }
                }
                ServeOutput::Peer { conn, action } => {
                    assert!(self.tcp, "stream output from a UDP server");
                    if let (ConnId(0), LocalAction::Write(bytes), Some(client)) =
                        (conn, action, &mut self.client)
                    {
                        client.deframer.push(bytes);
                        while let Ok(Some(frame)) = client.deframer.next_frame() {
                            self.to_client.push(frame.to_vec());
                        }
                    }
                }
                ServeOutput::OpenFlow { flow, .. } => {
                    self.opened += 1;
                    if self.flows.len() < 64 {
                        self.flows.push(flow);
                    }
                }
                ServeOutput::Flow { .. } => {}
                ServeOutput::Resolve { query, name } => {
                    assert!(!name.is_empty());
                    self.lookups.push_back(query);
                }
                ServeOutput::CheckCredentials { request, .. } => self.checks.push_back(request),
                ServeOutput::Event(event) => {
                    if std::env::var_os("SERVE_DEBUG").is_some() {
                        eprintln!("{event:?}");
                    }
                    if let erebus_sansio::serve::ServeEvent::ClientUp { .. } = event {
                        self.clients_up += 1;
                    }
                }
                ServeOutput::BufferTooSmall { needed } => {
                    panic!("the server needs {needed} bytes, more than 64 KiB")
                }
            }
        }
        panic!("the server does not settle");
    }

    /// Moves packets between the harness client and the server until both are quiet.
    fn pump(&mut self) {
        let Some(mut client) = self.client.take() else {
            return;
        };
        let mut buf = vec![0u8; 2048];
        for _ in 0..64 {
            let mut progress = false;
            for mut packet in std::mem::take(&mut self.to_client) {
                if let Ok(Decapsulated::Inner(_)) = client.session.decapsulate(self.now, &mut packet)
                {
                    client.inner += 1;
                }
                progress = true;
            }
            let mut out = Vec::new();
            while let Some(result) = client.session.poll_transmit(self.now, &mut buf) {
                match result {
                    Ok(n) => out.push(buf[..n].to_vec()),
                    Err(needed) => buf.resize(needed, 0),
                }
            }
            while let Some(event) = client.session.poll_event() {
                if std::env::var_os("SERVE_DEBUG").is_some() {
                    eprintln!("client: {event:?}");
                }
                if let TunnelEvent::Up(config) = event {
                    client.up = true;
                    client.ip = config.ipv4.and_then(|net| match net.addr() {
                        IpAddr::V4(v4) => Some(v4),
                        IpAddr::V6(_) => None,
                    });
                }
            }
            for packet in out {
                progress = true;
                self.send_from_client(&client, &packet);
            }
            if !progress {
                break;
            }
        }
        self.client = Some(client);
    }

    fn send_from_client(&mut self, client: &Client, packet: &[u8]) {
        if client.tcp {
            let mut framed = u16::try_from(packet.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes()
                .to_vec();
            framed.extend_from_slice(packet);
            self.from_addr(0, &framed);
        } else {
            self.from_addr(0, packet);
        }
    }

    /// The harness client sends `inner`.
    fn client_inner(&mut self, inner: &[u8]) {
        let Some(mut client) = self.client.take() else {
            return;
        };
        let overhead = client.session.overhead();
        let mut buf = vec![0u8; overhead.headroom + inner.len() + overhead.tailroom];
        let range = overhead.headroom..overhead.headroom + inner.len();
        buf[range.clone()].copy_from_slice(inner);
        let sent = client.session.encapsulate(self.now, &mut buf, range);
        if let Ok(outer) = sent {
            let packet = buf[outer].to_vec();
            self.send_from_client(&client, &packet);
        }
        self.client = Some(client);
        self.pump();
    }

    /// Runs one step.
    pub fn step(&mut self, tag: u8, body: &[u8]) {
        let index = usize::from(tag >> 4) % ADDRS.len();
        match tag & 0x0f {
            ACCEPT if self.tcp => self.accept(index),
            CLOSE_CONN if self.tcp => {
                self.accepted[index] = false;
                self.input(ServeInput::Peer {
                    now: self.now,
                    conn: ConnId(index as u64),
                    event: PeerEvent::Closed,
                });
            }
            ADVANCE => {
                let mut ms = [0u8; 4];
                let n = body.len().min(4);
                ms[4 - n..].copy_from_slice(&body[..n]);
                self.advance(Duration::from_millis(u64::from(u32::from_be_bytes(ms))));
            }
            FLOW => self.flow_event(body),
            RESOLVED => {
                if let Some(query) = self.lookups.pop_front() {
                    let addrs: Vec<IpAddr> = body
                        .chunks_exact(4)
                        .take(8)
                        .map(|c| IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3])))
                        .collect();
                    self.input(ServeInput::Resolved {
                        now: self.now,
                        query,
                        addrs: &addrs,
                    });
                }
            }
            CHECKED => {
                if let Some(request) = self.checks.pop_front() {
                    self.input(ServeInput::CredentialsChecked {
                        now: self.now,
                        request,
                        accepted: body.first().is_some_and(|b| b & 1 == 1),
                    });
                }
            }
            INNER => self.client_inner(body),
            BUILT => {
                let src = self
                    .client
                    .as_ref()
                    .and_then(|c| c.ip)
                    .unwrap_or(Ipv4Addr::new(10, 8, 0, 2));
                let packet = build_ipv4(src, body);
                self.client_inner(&packet);
            }
            STOP => self.input(ServeInput::Close { now: self.now }),
            DEADLINE => {
                if let ServeOutput::Timeout(Some(at)) = self.server.poll_output(&mut self.buf) {
                    self.now = self.now.max(at);
                }
                self.advance(Duration::ZERO);
            }
            _ => self.from_addr(index, body),
        }
        self.pump();
    }

    fn flow_event(&mut self, body: &[u8]) {
        let (Some(&which), Some(&kind)) = (body.first(), body.get(1)) else {
            return;
        };
        let Some(&flow) = self.flows.get(usize::from(which) % self.flows.len().max(1)) else {
            return;
        };
        let data = &body[2..];
        let event = match kind % 8 {
            0 => FlowEvent::Connected,
            1 => FlowEvent::Failed(match data.first().copied().unwrap_or(0) % 4 {
                0 => TransportError::Refused,
                1 => TransportError::Unreachable,
                2 => TransportError::TimedOut,
                _ => TransportError::Reset,
            }),
            2 => FlowEvent::Socket(LocalEvent::ReadClosed),
            3 => FlowEvent::Socket(LocalEvent::Reset),
            4 => FlowEvent::Socket(LocalEvent::WriteBlocked),
            5 => FlowEvent::Socket(LocalEvent::Writable),
            _ => FlowEvent::Socket(LocalEvent::Data(data)),
        };
        self.input(ServeInput::Flow {
            now: self.now,
            flow,
            event,
        });
    }
}

/// An IPv4 packet from `src` with valid checksums. `body`: byte 0 bit 0 TCP (else UDP),
/// bytes 1-4 the destination, 5-6 its port, 7-8 the source port; for TCP byte 9 the flags,
/// 10-13 the sequence and 14-17 the acknowledgement number; then the payload.
pub fn build_ipv4(src: Ipv4Addr, body: &[u8]) -> Vec<u8> {
    let byte = |i: usize| body.get(i).copied().unwrap_or(0);
    let tcp = byte(0) & 1 == 1;
    let dst = [byte(1), byte(2), byte(3), byte(4)];
    let (dport, sport) = ([byte(5), byte(6)], [byte(7), byte(8)]);
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport);
    l4.extend_from_slice(&dport);
    let payload_at = if tcp { 18 } else { 9 };
    let payload = body.get(payload_at..).unwrap_or_default();
    let payload = &payload[..payload.len().min(1400)];
    if tcp {
        l4.extend_from_slice(&[byte(10), byte(11), byte(12), byte(13)]);
        l4.extend_from_slice(&[byte(14), byte(15), byte(16), byte(17)]);
        l4.extend_from_slice(&[0x50, byte(9), 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        let len = u16::try_from(8 + payload.len()).unwrap_or(u16::MAX);
        l4.extend_from_slice(&len.to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
    }
    l4.extend_from_slice(payload);
    let proto: u8 = if tcp { 6 } else { 17 };
    let mut pseudo = Vec::with_capacity(12 + l4.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&u16::try_from(l4.len()).unwrap_or(u16::MAX).to_be_bytes());
    pseudo.extend_from_slice(&l4);
    let sum = checksum(&pseudo);
    let at = if tcp { 16 } else { 6 };
    l4[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    let total = u16::try_from(20 + l4.len()).unwrap_or(u16::MAX);
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst);
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(&l4);
    ip
}

/// The Internet checksum.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in bytes.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], chunk.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let sum = !(sum as u16);
    if sum == 0 { 0xffff } else { sum }
}

/// The harness.
pub fn run(data: &[u8]) {
    let Some((&config, records)) = data.split_first() else {
        return;
    };
    let mut driver = Driver::new(config);
    for (tag, body) in Records::new(records).take(256) {
        driver.step(tag, body);
    }
    let _ = driver.server.stats();
    let _ = driver.server.clients();
    let _ = driver.server.flows();
}

/// Reads the files of [`crate::server_conf::FILES`] (for seeds and tests).
pub fn read(path: &Path) -> Option<Vec<u8>> {
    reader(None)(path).ok().map(|b| b.to_vec())
}

/// The kind of transport of configuration `config`.
pub fn transport(config: u8) -> TransportKind {
    if CONFS[usize::from(config & 3)].2 {
        TransportKind::TcpLengthPrefixed
    } else {
        TransportKind::Udp
    }
}
