//! erebus in the server role: an OpenVPN server whose exit is a user-space TCP/IP stack.
//!
//! A classic VPN server hands its clients' packets to the kernel through a TUN device and
//! lets NAT carry them on. This one needs neither: every inner TCP connection and UDP flow
//! a client sends beyond the server ends in the server's own [`Stack`] (in exit mode), and
//! the driver opens an ordinary host socket for it ([`ServeOutput::OpenFlow`]). Bytes then
//! move between the two like a proxy's. DNS queries to the pushed DNS address are answered
//! from the host's resolver. An [`AllowList`] decides which destinations a flow may reach;
//! a refused flow gets ICMP administratively prohibited, a destination that refuses gets a
//! TCP reset, one that cannot be reached an ICMP host unreachable.
//!
//! ```text
//! client --UDP/TCP--> ServerSession (per client) --inner IP--> Stack (exit mode)
//!                                                                 | FlowRequest
//!                      driver <--OpenFlow/Flow Write-- Server <---+ socket bytes
//! ```
//!
//! Peers are TLS clients (many, each with an address from the pool) or, in OpenVPN's
//! static-key point-to-point mode ([`Peers::StaticKey`]), exactly one peer with no TLS: its
//! inner address is `ifconfig`'s remote one, and its outer address is learned from its first
//! authentic packet. A packet from another address moves the peer there only if it
//! authenticates (OpenVPN's `float`).
//!
//! [`Server`] is a [`ServeDriven`] machine: a driver feeds one [`ServeInput`], drains
//! [`Server::poll_output`] to [`ServeOutput::Timeout`], and repeats. Like every core crate it
//! never reads a clock, opens a socket or draws randomness of its own: the same inputs and
//! seed give the same outputs, byte for byte.

#![forbid(unsafe_code)]

pub mod allow;
pub mod dns;
pub mod load;
pub mod pool;
pub mod users;

mod exit;
mod session;

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use erebus_client::framing::Deframer;
use erebus_net::stack::Stack;
use erebus_net::tcp::TcpConfig;
use erebus_openvpn::p2p::{P2pConfig, P2pSession};
use erebus_openvpn::server::{
    self as ovpn, ClientLease, ServerSession, ServerSetup, data_v2_peer_id,
};
use erebus_sansio::io::{ConnId, LocalAction};
use erebus_sansio::serve::{
    FlowId, ListenSpec, PeerEvent, ServeDriven, ServeEvent, ServeInput, ServeOutput,
};
use erebus_sansio::tunnel::{Decapsulated, Failure, Fault, IpNet, TransportKind, TunnelConfig};
use erebus_sansio::{Instant, Seed, WallClock};
use zeroize::Zeroizing;

pub use allow::{AllowList, AllowRule};
pub use load::{AuthCommand, LoadError, Loaded, ServeOptions, load};
pub use pool::AddressPool;
pub use users::UserTable;

use crate::exit::Exit;
use crate::session::{Session, SessionEvent};

/// How long clients get to acknowledge the server's goodbye before it stops anyway.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// The largest outer packet a client may send; anything longer is not OpenVPN.
const MAX_OUTER: usize = 65_535;

/// How usernames and passwords are checked.
#[derive(Clone, Debug, Default)]
pub enum CredentialCheck {
    /// Clients send none (certificates only); a client that sends some is not refused for it.
    #[default]
    None,
    /// Against this table.
    Users(UserTable),
    /// By the driver ([`ServeOutput::CheckCredentials`]), which may run a command.
    Driver,
}

/// What the exit lets clients reach.
#[derive(Clone, Debug)]
pub struct ExitConfig {
    /// The destinations flows may reach.
    pub allow: AllowList,
    /// Inner addresses whose port 53 is answered from the host's resolver (the DNS servers
    /// the server pushes, usually its own inner address).
    pub dns_relay: Vec<Ipv4Addr>,
    /// A UDP flow with no datagram either way for this long is closed.
    pub udp_idle: Duration,
    /// At most this many flows per client; more are refused.
    pub max_flows_per_client: usize,
}

impl Default for ExitConfig {
    fn default() -> Self {
        Self {
            allow: AllowList::default(),
            dns_relay: Vec::new(),
            udp_idle: Duration::from_secs(60),
            max_flows_per_client: 1024,
        }
    }
}

/// How the server meets its peers.
#[derive(Clone)]
pub enum Peers {
    /// TLS clients, many at once.
    Tls {
        /// The OpenVPN server's certificates, keys, ciphers and pushes, shared by every
        /// client.
        setup: Arc<ServerSetup>,
        /// The clients' inner addresses.
        pool: AddressPool,
    },
    /// One static-key point-to-point peer (`secret`, `ifconfig LOCAL REMOTE`): the session's
    /// configuration, whose `local_ip` is the server's inner address and `remote_ip` the
    /// peer's. Its `remote` is not used: the peer's address is learned from its first
    /// authentic packet.
    StaticKey(Box<P2pConfig>),
}

/// Everything a [`Server`] needs.
#[derive(Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: ListenSpec,
    /// TLS clients or one static-key peer.
    pub peers: Peers,
    /// How credentials are checked.
    pub credentials: CredentialCheck,
    /// What the exit allows.
    pub exit: ExitConfig,
    /// Tunables of the exit's TCP sockets.
    pub tcp: TcpConfig,
    /// At most this many clients at once.
    pub max_clients: usize,
    /// The inner MTU (`tun-mtu`).
    pub mtu: u16,
    /// Wall time, for certificate validity and replay ids.
    pub wall_clock: WallClock,
}

impl core::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field(
                "peers",
                &match &self.peers {
                    Peers::Tls { pool, .. } => format!("TLS, pool {pool:?}"),
                    Peers::StaticKey(config) => {
                        format!("static key, {} <-> {}", config.local_ip, config.remote_ip)
                    }
                },
            )
            .field("exit", &self.exit)
            .field("max_clients", &self.max_clients)
            .field("mtu", &self.mtu)
            .finish_non_exhaustive()
    }
}

/// Counters of what the server moved and dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Outer packets received.
    pub packets_in: u64,
    /// Outer packets sent.
    pub packets_out: u64,
    /// Outer packets dropped: from unknown addresses, not authentic, replayed.
    pub packets_dropped: u64,
    /// Inner packets whose source was not the client's own address.
    pub spoofed: u64,
    /// Inner packets from the stack for an address no client has.
    pub unroutable: u64,
    /// Clients that finished their handshake.
    pub clients_up: u64,
    /// New clients turned away (pool or `max_clients` exhausted).
    pub clients_refused: u64,
}

/// Where a client's packets come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Udp(SocketAddr),
    Tcp(ConnId, SocketAddr),
}

impl Link {
    const fn peer(self) -> SocketAddr {
        match self {
            Self::Udp(addr) | Self::Tcp(_, addr) => addr,
        }
    }
}

/// One client.
struct Client {
    session: Session,
    link: Link,
    ip: Ipv4Addr,
    name: Option<String>,
    up: bool,
}

/// One output, described by ranges of the caller's buffer so that the buffer is borrowed only
/// when the output is finally built ([`Step::build`]).
pub(crate) enum Step {
    /// An output that borrows nothing.
    Out(ServeOutput<'static>),
    Datagram(SocketAddr, Range<usize>),
    PeerWrite(ConnId, Range<usize>),
    FlowWrite(FlowId, Range<usize>),
    Resolve(u64, Range<usize>),
    Check(u64, Range<usize>, Range<usize>),
}

impl Step {
    fn build(self, buf: &mut [u8]) -> ServeOutput<'_> {
        match self {
            Self::Out(out) => out,
            Self::Datagram(to, range) => ServeOutput::Datagram {
                to,
                bytes: &buf[range],
            },
            Self::PeerWrite(conn, range) => ServeOutput::Peer {
                conn,
                action: LocalAction::Write(&buf[range]),
            },
            Self::FlowWrite(flow, range) => ServeOutput::Flow {
                flow,
                action: LocalAction::Write(&buf[range]),
            },
            Self::Resolve(query, range) => ServeOutput::Resolve {
                query,
                name: text(&buf[range]),
            },
            Self::Check(request, user, pass) => {
                let (head, tail) = buf.split_at(pass.start);
                ServeOutput::CheckCredentials {
                    request,
                    username: text(&head[user]),
                    password: text(&tail[..pass.len()]),
                }
            }
        }
    }
}

/// Bytes the machine wrote as text; never invalid, since it copied them from a `str`.
fn text(bytes: &[u8]) -> &str {
    core::str::from_utf8(bytes).unwrap_or_default()
}

/// What became of a datagram from an unknown address.
enum Arrival {
    /// A new client's first packet: hand it to this client.
    Client(u32),
    /// A known client's packet from its new address, handled already.
    Handled,
    /// Nothing we know.
    Dropped,
}

/// A client's TCP stream on the listener.
struct Stream {
    from: SocketAddr,
    deframer: Deframer,
    client: Option<u32>,
}

/// Outputs without bytes of their own, or whose bytes are owned, waiting for the next drain.
enum Pending {
    Event(ServeEvent),
    Peer(ConnId, PeerCommand),
    Check(u64, String, Zeroizing<String>),
}

#[derive(Clone, Copy)]
enum PeerCommand {
    Close,
}

/// The server's side of its peers.
enum Mode {
    Tls {
        setup: Arc<ServerSetup>,
        pool: AddressPool,
    },
    StaticKey {
        config: Box<P2pConfig>,
        /// Sessions started so far, to seed each one differently.
        generation: u64,
    },
}

/// The static-key peer's peer id (there is one peer, and its packets carry no id).
const STATIC_PEER: u32 = 0;

/// The server. See the [crate documentation](crate).
pub struct Server {
    listen: ListenSpec,
    mode: Mode,
    credentials: CredentialCheck,
    max_clients: usize,
    wall_clock: WallClock,
    seed: Seed,
    now: Instant,
    clients: BTreeMap<u32, Client>,
    /// Sessions that ended, kept until their last packets (a TLS alert, the acknowledgement
    /// of the client's EXIT) are sent.
    departing: Vec<(Link, Session)>,
    by_addr: BTreeMap<SocketAddr, u32>,
    by_ip: BTreeMap<Ipv4Addr, u32>,
    streams: BTreeMap<ConnId, Stream>,
    next_peer_id: u32,
    exit: Exit,
    queue: VecDeque<Pending>,
    /// Credential checks the driver has not answered yet: request → peer id.
    checks: BTreeMap<u64, u32>,
    next_request: u64,
    /// Reused for decrypting datagrams in place.
    scratch: Vec<u8>,
    /// When the user asked to stop, the moment we stop anyway.
    stop_by: Option<Instant>,
    stopped: bool,
    stats: ServerStats,
}

impl Server {
    /// A server with `config`, its randomness drawn from `seed`, starting at `now`.
    pub fn new(config: ServerConfig, seed: &Seed, now: Instant) -> Self {
        // The exit's own address: the pool's gateway, or `ifconfig`'s local address with the
        // peer's as the point-to-point gateway (so that the exit's replies route to it).
        let (ipv4, gateway, mode) = match config.peers {
            Peers::Tls { setup, pool } => (
                IpNet::new(IpAddr::V4(pool.gateway()), pool.prefix()),
                None,
                Mode::Tls { setup, pool },
            ),
            Peers::StaticKey(config) => (
                Some(IpNet::host(IpAddr::V4(config.local_ip))),
                Some(IpAddr::V4(config.remote_ip)),
                Mode::StaticKey {
                    config,
                    generation: 0,
                },
            ),
        };
        let tunnel = TunnelConfig {
            ipv4,
            gateway,
            mtu: config.mtu,
            ..TunnelConfig::default()
        };
        let mut stack = Stack::new(&tunnel, config.tcp.clone(), &seed.child("server.exit"));
        stack.set_exit_mode(true);
        Self {
            listen: config.listen,
            mode,
            credentials: config.credentials,
            max_clients: config.max_clients,
            wall_clock: config.wall_clock,
            seed: seed.child("server.clients"),
            now,
            clients: BTreeMap::new(),
            departing: Vec::new(),
            by_addr: BTreeMap::new(),
            by_ip: BTreeMap::new(),
            streams: BTreeMap::new(),
            next_peer_id: 0,
            exit: Exit::new(stack, config.exit),
            queue: VecDeque::new(),
            checks: BTreeMap::new(),
            next_request: 0,
            scratch: vec![0; MAX_OUTER],
            stop_by: None,
            stopped: false,
            stats: ServerStats::default(),
        }
    }

    /// Counters.
    pub const fn stats(&self) -> ServerStats {
        self.stats
    }

    /// Clients connected now (handshake finished or not).
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Flows open through the exit now.
    pub fn flows(&self) -> usize {
        self.exit.flows()
    }

    /// The exit's stack, for its counters.
    pub const fn stack(&self) -> &Stack {
        self.exit.stack()
    }

    /// Whether the server stopped after [`ServeInput::Close`].
    pub const fn is_stopped(&self) -> bool {
        self.stopped
    }

    // -----------------------------------------------------------------------------------------
    // Inputs.

    fn on_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.stats.packets_in += 1;
        let Some(packet) = self.scratch.get_mut(..bytes.len()) else {
            self.stats.packets_dropped += 1;
            return;
        };
        packet.copy_from_slice(bytes);
        let peer_id = match self.by_addr.get(&from) {
            Some(&id) if self.is_restart(id, bytes) => {
                // The client at this address started over (a restarted process behind the
                // same port): the old session is finished.
                self.end_client(
                    id,
                    Failure::new(Fault::Closed, "the client started a new session"),
                    false,
                );
                match self.admit(now, Link::Udp(from)) {
                    Some(id) => id,
                    None => return,
                }
            }
            Some(&id) => id,
            None => match self.new_client_or_float(now, from, bytes) {
                Arrival::Client(id) => id,
                Arrival::Handled => return,
                Arrival::Dropped => {
                    self.stats.packets_dropped += 1;
                    return;
                }
            },
        };
        self.receive_outer(now, peer_id, bytes.len(), from);
    }

    /// A datagram from an address we do not know: a new client's first packet, or a known
    /// client's data packet from its new address (checked by decrypting it before the
    /// address is believed).
    fn new_client_or_float(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> Arrival {
        if self.stop_by.is_some() {
            return Arrival::Dropped;
        }
        if self.is_initial_packet(bytes) {
            return self
                .admit(now, Link::Udp(from))
                .map_or(Arrival::Dropped, Arrival::Client);
        }
        let peer_id = match &self.mode {
            Mode::Tls { .. } => data_v2_peer_id(bytes),
            Mode::StaticKey { .. } if self.clients.is_empty() => {
                return self.admit_static_key(now, Link::Udp(from), bytes.len());
            }
            Mode::StaticKey { .. } => Some(STATIC_PEER),
        };
        let Some(peer_id) = peer_id else {
            return Arrival::Dropped;
        };
        let Some(client) = self.clients.get_mut(&peer_id) else {
            return Arrival::Dropped;
        };
        let Link::Udp(old) = client.link else {
            return Arrival::Dropped;
        };
        let Some(packet) = self.scratch.get_mut(..bytes.len()) else {
            return Arrival::Dropped;
        };
        // Decrypting proves the packet (a replayed one fails); it is then handled here rather
        // than decrypted twice.
        let Ok(inner) = client.session.receive(now, packet) else {
            return Arrival::Dropped;
        };
        client.link = Link::Udp(from);
        self.by_addr.remove(&old);
        self.by_addr.insert(from, peer_id);
        self.queue
            .push_back(Pending::Event(ServeEvent::ClientFloated {
                from: old,
                to: from,
            }));
        if let Decapsulated::Inner(range) = inner {
            self.deliver_inner(now, peer_id, range);
        }
        self.drain_session_events(now, peer_id);
        Arrival::Handled
    }

    /// Whether `packet`, from client `peer_id`'s address, starts a new session of its own.
    fn is_restart(&self, peer_id: u32, packet: &[u8]) -> bool {
        let Some(client) = self.clients.get(&peer_id) else {
            return false;
        };
        let Mode::Tls { setup, .. } = &self.mode else {
            return false;
        };
        self.stop_by.is_none()
            && setup.is_initial_packet(packet)
            && client.session.client_session_id().is_some()
            && setup.initial_session_id(packet) != client.session.client_session_id()
    }

    /// Whether `packet` is a TLS client's first (a hard reset); never in static-key mode.
    fn is_initial_packet(&self, packet: &[u8]) -> bool {
        match &self.mode {
            Mode::Tls { setup, .. } => setup.is_initial_packet(packet),
            Mode::StaticKey { .. } => false,
        }
    }

    /// The static-key peer's first packet, `scratch[..len]`, from `link`: a new session opens
    /// it, and only if it is authentic does the peer exist (at that address). The packet is
    /// handled here.
    fn admit_static_key(&mut self, now: Instant, link: Link, len: usize) -> Arrival {
        let Mode::StaticKey { config, generation } = &mut self.mode else {
            return Arrival::Dropped;
        };
        let seed = self.seed.child(&format!("static-key.{generation}"));
        let mut session = match P2pSession::new(config.as_ref().clone(), &seed, now) {
            Ok(session) => session,
            Err(error) => {
                tracing::warn!(%error, "the static-key session cannot start");
                return Arrival::Dropped;
            }
        };
        let Some(packet) = self.scratch.get_mut(..len) else {
            return Arrival::Dropped;
        };
        let Ok(inner) = erebus_sansio::Tunnel::decapsulate(&mut session, now, packet) else {
            return Arrival::Dropped;
        };
        *generation += 1;
        let ip = config.remote_ip;
        self.clients.insert(
            STATIC_PEER,
            Client {
                session: Session::StaticKey(Box::new(session)),
                link,
                ip,
                name: None,
                up: false,
            },
        );
        if let Link::Udp(addr) = link {
            self.by_addr.insert(addr, STATIC_PEER);
        }
        self.by_ip.insert(ip, STATIC_PEER);
        if let Decapsulated::Inner(range) = inner {
            self.deliver_inner(now, STATIC_PEER, range);
        }
        self.drain_session_events(now, STATIC_PEER);
        Arrival::Handled
    }

    /// Takes a new client: an address from the pool, a peer id, a session.
    fn admit(&mut self, now: Instant, link: Link) -> Option<u32> {
        let refused = |server: &mut Self, why: &str| {
            server.stats.clients_refused += 1;
            server
                .queue
                .push_back(Pending::Event(ServeEvent::ClientDown {
                    peer: link.peer(),
                    name: None,
                    reason: Failure::new(Fault::PeerIncompatible, why),
                }));
            None
        };
        if self.clients.len() >= self.max_clients {
            return refused(self, "the server has max-clients clients already");
        }
        let Mode::Tls { setup, pool } = &mut self.mode else {
            return None;
        };
        let Some(ip) = pool.lease() else {
            return refused(self, "the address pool is exhausted");
        };
        let lease = ClientLease {
            ip,
            netmask: pool.netmask(),
            gateway: pool.gateway(),
            peer_id: 0,
        };
        let setup = Arc::clone(setup);
        let peer_id = self.next_free_peer_id();
        let lease = ClientLease { peer_id, ..lease };
        let kind = match link {
            Link::Udp(_) => TransportKind::Udp,
            Link::Tcp(..) => TransportKind::TcpLengthPrefixed,
        };
        let seed = self
            .seed
            .child(&format!("client.{peer_id}.{}", link.peer()));
        let session = ServerSession::new(setup, lease, kind, &seed, now, self.wall_clock);
        self.clients.insert(
            peer_id,
            Client {
                session: Session::Tls(Box::new(session)),
                link,
                ip,
                name: None,
                up: false,
            },
        );
        if let Link::Udp(addr) = link {
            self.by_addr.insert(addr, peer_id);
        }
        self.by_ip.insert(ip, peer_id);
        Some(peer_id)
    }

    /// The next peer id no client uses (24 bits, as DATA_V2 carries it).
    fn next_free_peer_id(&mut self) -> u32 {
        loop {
            let id = self.next_peer_id;
            // 24 bits, as DATA_V2 carries it; 0xFFFFFF is left unused.
            self.next_peer_id = (self.next_peer_id + 1) % 0x00FF_FFFF;
            if !self.clients.contains_key(&id) {
                return id;
            }
        }
    }

    /// Hands `scratch[..len]`, an outer packet from `from`, to client `peer_id`.
    fn receive_outer(&mut self, now: Instant, peer_id: u32, len: usize, from: SocketAddr) {
        let Some(client) = self.clients.get_mut(&peer_id) else {
            return;
        };
        debug_assert_eq!(client.link.peer(), from);
        let Some(packet) = self.scratch.get_mut(..len) else {
            return;
        };
        match client.session.receive(now, packet) {
            Ok(Decapsulated::Inner(range)) => self.deliver_inner(now, peer_id, range),
            Ok(Decapsulated::Consumed) => {}
            Err(_) => self.stats.packets_dropped += 1,
        }
        self.drain_session_events(now, peer_id);
    }

    /// An inner packet (in `scratch[range]`) from client `peer_id` into the exit.
    fn deliver_inner(&mut self, now: Instant, peer_id: u32, range: Range<usize>) {
        let Some(client) = self.clients.get(&peer_id) else {
            return;
        };
        let Some(packet) = self.scratch.get(range) else {
            return;
        };
        // A client speaks only from the address it was given (OpenVPN's source check).
        if ipv4_source(packet) != Some(client.ip) {
            self.stats.spoofed += 1;
            return;
        }
        self.exit.ingress(now, packet);
    }

    fn on_peer(&mut self, now: Instant, conn: ConnId, event: PeerEvent<'_>) {
        match event {
            PeerEvent::Accepted { from } => {
                self.streams.insert(
                    conn,
                    Stream {
                        from,
                        deframer: Deframer::default(),
                        client: None,
                    },
                );
            }
            PeerEvent::Data(bytes) => self.on_peer_data(now, conn, bytes),
            PeerEvent::Closed => {
                if let Some(stream) = self.streams.remove(&conn)
                    && let Some(peer_id) = stream.client
                {
                    self.end_client(
                        peer_id,
                        Failure::new(Fault::Closed, "the client closed its connection"),
                        false,
                    );
                }
            }
        }
    }

    fn on_peer_data(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        let Some(stream) = self.streams.get_mut(&conn) else {
            return;
        };
        stream.deframer.push(bytes);
        loop {
            let Some(stream) = self.streams.get_mut(&conn) else {
                return;
            };
            let from = stream.from;
            let frame = match stream.deframer.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(_) => {
                    self.close_stream(conn, "the client's stream is out of sync");
                    return;
                }
            };
            self.stats.packets_in += 1;
            let len = frame.len();
            let Some(packet) = self.scratch.get_mut(..len) else {
                return;
            };
            packet.copy_from_slice(frame);
            let peer_id = match stream.client {
                Some(id) => id,
                None if matches!(self.mode, Mode::StaticKey { .. }) => {
                    let admitted = if self.clients.is_empty() && self.stop_by.is_none() {
                        self.admit_static_key(now, Link::Tcp(conn, from), len)
                    } else {
                        Arrival::Dropped
                    };
                    if !matches!(admitted, Arrival::Handled) {
                        self.close_stream(
                            conn,
                            "the stream does not start with an authentic static-key packet, \
                             or the server has its peer already",
                        );
                        return;
                    }
                    if let Some(stream) = self.streams.get_mut(&conn) {
                        stream.client = Some(STATIC_PEER);
                    }
                    continue;
                }
                None => {
                    let initial = self.is_initial_packet(&self.scratch[..len]);
                    let admitted = if initial && self.stop_by.is_none() {
                        self.admit(now, Link::Tcp(conn, from))
                    } else {
                        None
                    };
                    let Some(id) = admitted else {
                        self.close_stream(conn, "the stream does not start an OpenVPN session");
                        return;
                    };
                    if let Some(stream) = self.streams.get_mut(&conn) {
                        stream.client = Some(id);
                    }
                    id
                }
            };
            self.receive_outer(now, peer_id, len, from);
        }
    }

    fn close_stream(&mut self, conn: ConnId, why: &str) {
        if let Some(stream) = self.streams.remove(&conn) {
            self.stats.packets_dropped += 1;
            tracing::debug!(from = %stream.from, why, "closing a client stream");
            if let Some(peer_id) = stream.client {
                self.end_client(peer_id, Failure::new(Fault::PeerMisbehaved, why), false);
            }
            self.queue
                .push_back(Pending::Peer(conn, PeerCommand::Close));
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        let due: Vec<u32> = self
            .clients
            .iter()
            .filter(|(_, c)| c.session.poll_timeout().is_some_and(|at| at <= now))
            .map(|(&id, _)| id)
            .collect();
        for peer_id in due {
            if let Some(client) = self.clients.get_mut(&peer_id) {
                client.session.handle_timeout(now);
            }
            self.drain_session_events(now, peer_id);
        }
        self.exit.handle_timeout(now);
        if self.stop_by.is_some_and(|at| now >= at) {
            let ids: Vec<u32> = self.clients.keys().copied().collect();
            for peer_id in ids {
                self.end_client(
                    peer_id,
                    Failure::new(Fault::Closed, "the server stopped"),
                    true,
                );
            }
        }
    }

    fn on_close(&mut self, now: Instant) {
        if self.stop_by.is_some() {
            return;
        }
        self.stop_by = Some(now + STOP_GRACE);
        for client in self.clients.values_mut() {
            client.session.close(now, true);
        }
        let ids: Vec<u32> = self.clients.keys().copied().collect();
        for peer_id in ids {
            self.drain_session_events(now, peer_id);
        }
    }

    /// Acts on what a client's session reported.
    fn drain_session_events(&mut self, now: Instant, peer_id: u32) {
        while let Some(event) = self
            .clients
            .get_mut(&peer_id)
            .and_then(|c| c.session.poll_event())
        {
            match event {
                SessionEvent::Authenticate { username, password } => {
                    self.authenticate(now, peer_id, username, password);
                }
                SessionEvent::Up { name } => {
                    let Some(client) = self.clients.get_mut(&peer_id) else {
                        continue;
                    };
                    let name = name.unwrap_or_else(|| match self.mode {
                        Mode::Tls { .. } => format!("peer-{peer_id}"),
                        Mode::StaticKey { .. } => "static-key peer".to_owned(),
                    });
                    client.name = Some(name.clone());
                    client.up = true;
                    self.stats.clients_up += 1;
                    self.queue.push_back(Pending::Event(ServeEvent::ClientUp {
                        peer: client.link.peer(),
                        name,
                        address: IpAddr::V4(client.ip),
                    }));
                }
                SessionEvent::Down(reason) => {
                    self.end_client(peer_id, reason, true);
                    return;
                }
            }
        }
    }

    fn authenticate(
        &mut self,
        now: Instant,
        peer_id: u32,
        username: String,
        password: erebus_openvpn::config::SecretString,
    ) {
        let verdict = match &self.credentials {
            CredentialCheck::None => Some(Ok(())),
            CredentialCheck::Users(table) => Some(if table.check(&username, password.expose()) {
                Ok(())
            } else {
                Err(format!("wrong username or password for {username:?}"))
            }),
            CredentialCheck::Driver => None,
        };
        match verdict {
            Some(verdict) => {
                if let Some(client) = self.clients.get_mut(&peer_id) {
                    client.session.auth_verdict(now, verdict);
                }
            }
            None => {
                let request = self.next_request;
                self.next_request += 1;
                self.checks.insert(request, peer_id);
                self.queue.push_back(Pending::Check(
                    request,
                    username,
                    Zeroizing::new(password.expose().to_owned()),
                ));
            }
        }
    }

    fn on_credentials_checked(&mut self, now: Instant, request: u64, accepted: bool) {
        let Some(peer_id) = self.checks.remove(&request) else {
            return;
        };
        if let Some(client) = self.clients.get_mut(&peer_id) {
            let verdict = if accepted {
                Ok(())
            } else {
                Err("the credentials check refused the username or password".to_owned())
            };
            client.session.auth_verdict(now, verdict);
        }
        self.drain_session_events(now, peer_id);
    }

    /// Forgets a client: its address, its flows, its stream.
    fn end_client(&mut self, peer_id: u32, reason: Failure, close_stream: bool) {
        let Some(client) = self.clients.remove(&peer_id) else {
            return;
        };
        match client.link {
            Link::Udp(addr) => {
                self.by_addr.remove(&addr);
            }
            Link::Tcp(conn, _) => {
                if close_stream && self.streams.remove(&conn).is_some() {
                    self.queue
                        .push_back(Pending::Peer(conn, PeerCommand::Close));
                }
            }
        }
        self.by_ip.remove(&client.ip);
        if let Mode::Tls { pool, .. } = &mut self.mode {
            pool.release(client.ip);
        }
        self.departing.push((client.link, client.session));
        self.checks.retain(|_, id| *id != peer_id);
        self.exit.drop_client(client.ip);
        self.queue.push_back(Pending::Event(ServeEvent::ClientDown {
            peer: client.link.peer(),
            name: client.name,
            reason,
        }));
    }

    // -----------------------------------------------------------------------------------------
    // Outputs.

    /// The control packets and pings of some client, framed for its link.
    fn poll_sessions(&mut self, buf: &mut [u8]) -> Option<Step> {
        let now = self.now;
        while let Some((link, session)) = self.departing.last_mut() {
            let link = *link;
            let prefix = link_prefix(link);
            match session.poll_transmit(now, &mut buf[prefix..]) {
                Some(len) => {
                    self.stats.packets_out += 1;
                    return Some(transmit(link, buf, 0..prefix + len));
                }
                None => {
                    self.departing.pop();
                }
            }
        }
        for client in self.clients.values_mut() {
            let prefix = link_prefix(client.link);
            let Some(len) = client.session.poll_transmit(now, &mut buf[prefix..]) else {
                continue;
            };
            self.stats.packets_out += 1;
            return Some(transmit(client.link, buf, 0..prefix + len));
        }
        None
    }

    /// The next inner packet the exit sends, sealed for the client it is addressed to.
    fn poll_egress(&mut self, buf: &mut [u8]) -> Option<Step> {
        let now = self.now;
        let headroom = 2 + ovpn::HEADROOM;
        loop {
            let mtu = self.exit.stack().mtu();
            let area = buf.get_mut(headroom..headroom + mtu)?;
            let len = self.exit.poll_egress(now, area)?;
            let dst = ipv4_destination(&buf[headroom..headroom + len]);
            let Some(client) = dst
                .and_then(|ip| self.by_ip.get(&ip))
                .and_then(|id| self.clients.get_mut(id))
            else {
                self.stats.unroutable += 1;
                continue;
            };
            let payload = ovpn::HEADROOM..ovpn::HEADROOM + len;
            let Some(sealed) = client.session.encapsulate(now, &mut buf[2..], payload) else {
                self.stats.unroutable += 1;
                continue;
            };
            self.stats.packets_out += 1;
            // `sealed` is relative to buf[2..]; over TCP the two bytes before it take the
            // length.
            let range = match client.link {
                Link::Udp(_) => sealed.start + 2..sealed.end + 2,
                Link::Tcp(..) => sealed.start..sealed.end + 2,
            };
            return Some(transmit(client.link, buf, range));
        }
    }

    fn emit(&mut self, pending: Pending, buf: &mut [u8]) -> Step {
        match pending {
            Pending::Event(event) => Step::Out(ServeOutput::Event(event)),
            Pending::Peer(conn, PeerCommand::Close) => Step::Out(ServeOutput::Peer {
                conn,
                action: LocalAction::Close,
            }),
            Pending::Check(request, username, password) => {
                let (user_len, pass_len) = (username.len(), password.len());
                if buf.len() < user_len + pass_len {
                    self.queue
                        .push_front(Pending::Check(request, username, password));
                    return Step::Out(ServeOutput::BufferTooSmall {
                        needed: user_len + pass_len,
                    });
                }
                buf[..user_len].copy_from_slice(username.as_bytes());
                buf[user_len..user_len + pass_len].copy_from_slice(password.as_bytes());
                Step::Check(request, 0..user_len, user_len..user_len + pass_len)
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let sessions = self
            .clients
            .values()
            .filter_map(|c| c.session.poll_timeout());
        sessions
            .chain(self.exit.poll_timeout())
            .chain(self.stop_by)
            .min()
    }

    /// The size `poll_output` needs for a whole packet with its framing.
    fn needed(&self) -> usize {
        2 + ovpn::HEADROOM + self.exit.stack().mtu() + ovpn::TAILROOM
    }
}

/// The bytes in front of each packet on `link`: the length over TCP.
const fn link_prefix(link: Link) -> usize {
    match link {
        Link::Udp(_) => 0,
        Link::Tcp(..) => 2,
    }
}

/// The step that sends `buf[range]` over `link`; over TCP `range` starts with two free bytes
/// for the length.
fn transmit(link: Link, buf: &mut [u8], range: Range<usize>) -> Step {
    match link {
        Link::Udp(to) => Step::Datagram(to, range),
        Link::Tcp(conn, _) => {
            let len = u16::try_from(range.len() - 2).unwrap_or(u16::MAX);
            buf[range.start..range.start + 2].copy_from_slice(&len.to_be_bytes());
            Step::PeerWrite(conn, range)
        }
    }
}

fn ipv4_source(packet: &[u8]) -> Option<Ipv4Addr> {
    let head = packet.get(..20)?;
    (head[0] >> 4 == 4).then(|| Ipv4Addr::new(head[12], head[13], head[14], head[15]))
}

fn ipv4_destination(packet: &[u8]) -> Option<Ipv4Addr> {
    let head = packet.get(..20)?;
    (head[0] >> 4 == 4).then(|| Ipv4Addr::new(head[16], head[17], head[18], head[19]))
}

impl ServeDriven for Server {
    fn listen(&self) -> ListenSpec {
        self.listen
    }

    fn handle_input(&mut self, input: ServeInput<'_>) {
        let now = input.now().max(self.now);
        self.now = now;
        match input {
            ServeInput::Timeout { .. } => self.on_timeout(now),
            ServeInput::Datagram { from, bytes, .. } => self.on_datagram(now, from, bytes),
            ServeInput::Peer { conn, event, .. } => self.on_peer(now, conn, event),
            ServeInput::Flow { flow, event, .. } => self.exit.on_flow(now, flow, event),
            ServeInput::Resolved { query, addrs, .. } => self.exit.on_resolved(now, query, addrs),
            ServeInput::CredentialsChecked {
                request, accepted, ..
            } => self.on_credentials_checked(now, request, accepted),
            ServeInput::Close { .. } => self.on_close(now),
        }
    }

    fn poll_output<'b>(&mut self, buf: &'b mut [u8]) -> ServeOutput<'b> {
        let needed = self.needed();
        if buf.len() < needed {
            return ServeOutput::BufferTooSmall { needed };
        }
        let step = self.next_step(buf);
        step.build(buf)
    }
}

impl Server {
    fn next_step(&mut self, buf: &mut [u8]) -> Step {
        if let Some(pending) = self.queue.pop_front() {
            return self.emit(pending, buf);
        }
        self.exit.service(self.now);
        if let Some(step) = self.exit.poll_command(buf) {
            return step;
        }
        if let Some(step) = self.poll_sessions(buf) {
            return step;
        }
        if let Some(step) = self.poll_egress(buf) {
            return step;
        }
        if let Some(step) = self.exit.poll_flow_read(buf) {
            return step;
        }
        // Sending may have fired timers whose results (a socket that gave up, say) are news.
        self.exit.service(self.now);
        if let Some(step) = self.exit.poll_command(buf) {
            return step;
        }
        if let Some(pending) = self.queue.pop_front() {
            return self.emit(pending, buf);
        }
        if self.stop_by.is_some() && self.clients.is_empty() && !self.stopped {
            self.stopped = true;
            return Step::Out(ServeOutput::Event(ServeEvent::Stopped));
        }
        if self.stopped {
            return Step::Out(ServeOutput::Timeout(None));
        }
        Step::Out(ServeOutput::Timeout(self.next_deadline()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_addresses_are_read_only_from_ipv4_headers() {
        let mut packet = [0u8; 20];
        packet[0] = 0x45;
        packet[12..16].copy_from_slice(&[10, 8, 0, 2]);
        packet[16..20].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(ipv4_source(&packet), Some(Ipv4Addr::new(10, 8, 0, 2)));
        assert_eq!(ipv4_destination(&packet), Some(Ipv4Addr::LOCALHOST));
        packet[0] = 0x60;
        assert_eq!(ipv4_source(&packet), None);
        assert_eq!(ipv4_source(&packet[..10]), None);
    }
}
