//! The erebus client: one [`Tunnel`], the user-space TCP/IP stack and the local proxy front
//! ends, composed behind the one driver-facing contract of [`erebus_sansio::io`].
//!
//! Data flows like this, every arrow a function call:
//!
//! ```text
//! local connection --Input::Local--> ProxyConn --connect/send--> TcpSocket (Stack)
//!      ^                                 |                           | IP packets
//!      +--Output::Local(Write)-----------+        Tunnel::encapsulate v
//!                                                 Output::Transmit --> driver --> server
//! ```
//!
//! The client is a [`Driven`] machine: a driver feeds one [`Input`], drains
//! [`Client::poll_output`] until [`Output::Timeout`], and repeats.
//!
//! Names are never resolved here with the host's resolver: a proxied name goes to the DNS
//! servers the tunnel provides.

#![forbid(unsafe_code)]

pub mod framing;
pub mod link;
pub mod ping;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use erebus_net::dns::{
    DnsTransport, Family, LookupId, ResolveError, Resolver, ResolverOptions, tcp_frame_len,
};
use erebus_net::stack::{SocketHandle, Stack, StackError};
use erebus_net::tcp::{ConnectionError, Events, RecvError, State, TcpConfig};
use erebus_proxy::{Action, FrontEnd, Host, ProxyConfig, ProxyConn, UpstreamFailure};
use erebus_sansio::io::{
    ConnId, Event, Input, InputError, LocalAction, LocalEvent, Output, TransportError,
    TransportEvent,
};
use erebus_sansio::tunnel::{
    Decapsulated, DropReason, DropTally, TransportKind, TransportSpec, Tunnel, TunnelConfig,
    TunnelEvent,
};
use erebus_sansio::{Driven, Instant, Seed};

use crate::link::Link;

/// How the client serves its listeners.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The front end of each listener, in [`erebus_sansio::io::ListenerId`] order.
    pub listeners: Vec<FrontEnd>,
    /// Proxy timeouts, buffer sizes and authentication.
    pub proxy: ProxyConfig,
    /// Tunables of the user-space TCP sockets.
    pub tcp: TcpConfig,
    /// DNS servers inside the tunnel to use instead of those the tunnel provides (`--dns`).
    pub dns_servers: Vec<IpAddr>,
    /// How long a proxied connection waits for the tunnel to come (back) up before it is
    /// refused (HTTP 503, a SOCKS5 failure reply).
    pub tunnel_wait: Duration,
    /// How much the client serves at once.
    pub limits: Limits,
}

impl ClientConfig {
    /// The default [`ClientConfig::tunnel_wait`].
    pub const DEFAULT_TUNNEL_WAIT: Duration = Duration::from_secs(10);
}

/// Bounds on what the client holds at once. Reaching one refuses the work beyond it, with an
/// answer the proxy client understands and a warning in the log; nothing queues without end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Local connections served at once. One accepted beyond it is answered (HTTP 503, SOCKS5
    /// general failure; a port forward is closed) once its request is read, and closed.
    pub connections: usize,
    /// Name lookups in progress at once. A request needing one more is answered with HTTP 503
    /// or a SOCKS5 general failure.
    pub dns_lookups: usize,
}

impl Limits {
    /// Connections being refused at once, beyond [`Limits::connections`]; more are closed
    /// without a word. Each costs a little memory until its request is read (bounded by the
    /// proxy's handshake timeout), and a flood must not turn that into growth.
    pub const MAX_REFUSING: usize = 256;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections: 4096,
            dns_lookups: ResolverOptions::default().max_lookups,
        }
    }
}

/// Says in the log that a limit was reached: the first time, then at most once per
/// [`LimitWarning::INTERVAL`], with how many more times it was reached meanwhile, so a flood
/// of refusals is one line every few seconds and not one per connection.
#[derive(Debug, Default)]
struct LimitWarning {
    last: Option<Instant>,
    unreported: u64,
}

impl LimitWarning {
    const INTERVAL: Duration = Duration::from_secs(10);

    /// Counts one more hit; returns the hits to report now (this one included), if it is time.
    fn hit(&mut self, now: Instant) -> Option<u64> {
        self.unreported += 1;
        if self.last.is_some_and(|last| now < last + Self::INTERVAL) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

/// Counters of what the client moved and dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Outer packets received from the server.
    pub packets_in: u64,
    /// Outer packets sent to the server.
    pub packets_out: u64,
    /// Outer packets from the server that the tunnel dropped, by reason: malformed,
    /// unauthentic, replayed, for no current key, before the keys, unsupported.
    pub server_drops: DropTally,
    /// Inner packets the stack dropped.
    pub stack_drops: u64,
    /// Inner packets the stack sent that the tunnel could not take (no session yet, or too
    /// big); TCP sends again what matters.
    pub unsent: u64,
    /// Local connections accepted, the refused ones included.
    pub connections: u64,
    /// Outer packets from an address other than the server's, dropped unread.
    pub foreign_packets: u64,
    /// Local connections closed because the session under them was lost.
    pub cut_by_reconnect: u64,
    /// Local connections refused because [`Limits::connections`] were open.
    pub refused_connections: u64,
    /// Requests refused because [`Limits::dns_lookups`] lookups were in progress.
    pub refused_lookups: u64,
}

impl ClientStats {
    /// Outer packets from the server that the tunnel dropped, whatever the reason.
    pub const fn tunnel_drops(&self) -> u64 {
        self.server_drops.total()
    }
}

/// The totals a person reads when the session ends: packets each way and every drop, the
/// server's broken down by reason (only the reasons that happened).
impl fmt::Display for ClientStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "packets in {}, out {}; dropped: {} from the server (bad, replayed or unexpected",
            self.packets_in,
            self.packets_out,
            self.tunnel_drops()
        )?;
        let mut first = true;
        for (reason, count) in self.server_drops.by_reason() {
            if count > 0 {
                f.write_str(if first { ": " } else { ", " })?;
                write!(f, "{count} {reason}")?;
                first = false;
            }
        }
        write!(
            f,
            "), {} from other addresses, {} inner packets; {} inner packets not sent; \
             {} local connections, {} refused at the connection limit, {} requests refused at \
             the lookup limit",
            self.foreign_packets,
            self.stack_drops,
            self.unsent,
            self.connections,
            self.refused_connections,
            self.refused_lookups
        )
    }
}

/// A local command with no bytes, queued until the next drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LocalCommand {
    Pause,
    Resume,
    Shutdown,
    Close,
}

impl LocalCommand {
    fn action(self) -> LocalAction<'static> {
        match self {
            Self::Pause => LocalAction::PauseReading,
            Self::Resume => LocalAction::ResumeReading,
            Self::Shutdown => LocalAction::Shutdown,
            Self::Close => LocalAction::Close,
        }
    }
}

/// What one step of the drain produced, described by ranges of the caller's buffer so the
/// buffer is borrowed only when the output is finally built.
enum Step {
    Transmit(Range<usize>),
    Write(ConnId, Range<usize>),
    TooSmall(usize),
}

/// One accepted local connection and the upstream stream it drives.
#[derive(Debug)]
struct Conn {
    proxy: ProxyConn,
    upstream: Option<SocketHandle>,
    /// The front end asked us to stop reading the upstream (its client side is full).
    upstream_paused: bool,
    /// The upstream's end of stream was passed to the front end.
    upstream_eof_sent: bool,
    /// The driver could not write everything; wait for `Writable`.
    write_blocked: bool,
    /// The driver dropped the connection (reset) or we told it to close.
    gone: bool,
    /// The name lookup in progress for the upstream, if any.
    lookup: Option<LookupId>,
    /// Accepted beyond [`Limits::connections`]: its request is answered with a refusal.
    over_limit: bool,
}

/// A DNS query that fell back to TCP (a truncated answer), on its own stack socket.
#[derive(Debug)]
struct DnsOverTcp {
    server: SocketAddr,
    id: u16,
    /// The length-prefixed query, until the socket has taken it all.
    query: Vec<u8>,
    /// What arrived so far.
    answer: Vec<u8>,
}

/// The client: a [`Driven`] machine over a [`Tunnel`].
#[derive(Debug)]
pub struct Client<T> {
    tunnel: T,
    stack: Stack,
    /// The transport the inputs are about.
    link: Link,
    rx: Vec<u8>,
    listeners: Vec<FrontEnd>,
    proxy_config: Arc<ProxyConfig>,
    conns: BTreeMap<ConnId, Conn>,
    by_socket: BTreeMap<SocketHandle, ConnId>,
    /// Sockets released by their connection, kept until their close completes.
    closing: BTreeSet<SocketHandle>,
    /// Connections that may have work to do.
    dirty: BTreeSet<ConnId>,
    commands: VecDeque<(ConnId, LocalCommand)>,
    events: VecDeque<Event>,
    tunnel_config: Option<TunnelConfig>,
    resolver: Resolver,
    /// Lookups in flight: the connection and port waiting for each.
    lookups: BTreeMap<LookupId, (ConnId, u16)>,
    /// Connections waiting for the tunnel to come up: where to, and until when.
    awaiting_tunnel: BTreeMap<ConnId, (Host, u16, Instant)>,
    tunnel_wait: Duration,
    /// UDP ports bound for the resolver's queries.
    dns_ports: BTreeSet<u16>,
    dns_tcp: BTreeMap<SocketHandle, DnsOverTcp>,
    dns_servers: Vec<IpAddr>,
    limits: Limits,
    /// Connections in `conns` accepted beyond the limit, being refused.
    refusing: usize,
    connection_warning: LimitWarning,
    lookup_warning: LimitWarning,
    down: bool,
    now: Instant,
    stats: ClientStats,
}

/// Largest outer packet the client handles (a UDP datagram's limit).
const MAX_PACKET: usize = 65_535;

impl<T: Tunnel> Client<T> {
    /// A client over `tunnel`, serving `config`'s listeners; `seed` feeds the TCP/IP stack.
    pub fn new(tunnel: T, config: ClientConfig, seed: &Seed, now: Instant) -> Self {
        let stack = Stack::new(
            &TunnelConfig::default(),
            config.tcp,
            &seed.child("client.stack"),
        );
        let resolver = Resolver::new(
            &TunnelConfig::default(),
            ResolverOptions {
                max_lookups: config.limits.dns_lookups,
                ..ResolverOptions::default()
            },
            &seed.child("client.dns"),
        );
        Self {
            tunnel,
            stack,
            link: Link::default(),
            rx: vec![0; MAX_PACKET],
            listeners: config.listeners,
            proxy_config: Arc::new(config.proxy),
            conns: BTreeMap::new(),
            by_socket: BTreeMap::new(),
            closing: BTreeSet::new(),
            dirty: BTreeSet::new(),
            commands: VecDeque::new(),
            events: VecDeque::new(),
            tunnel_config: None,
            resolver,
            lookups: BTreeMap::new(),
            awaiting_tunnel: BTreeMap::new(),
            tunnel_wait: config.tunnel_wait,
            dns_ports: BTreeSet::new(),
            dns_tcp: BTreeMap::new(),
            dns_servers: config.dns_servers,
            limits: config.limits,
            refusing: 0,
            connection_warning: LimitWarning::default(),
            lookup_warning: LimitWarning::default(),
            down: false,
            now,
            stats: ClientStats::default(),
        }
    }

    /// The tunnel, for its statistics.
    pub fn tunnel(&self) -> &T {
        &self.tunnel
    }

    /// The TCP/IP stack, for its statistics.
    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    /// The client's counters.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// The configuration the tunnel reported, once it is up.
    pub fn tunnel_config(&self) -> Option<&TunnelConfig> {
        self.tunnel_config.as_ref()
    }

    /// Where the current transport connected, once it did.
    pub fn remote(&self) -> Option<SocketAddr> {
        self.link.remote()
    }

    fn transport_kind(&self) -> TransportKind {
        self.tunnel
            .transport()
            .map_or(TransportKind::Udp, |spec| spec.kind)
    }

    fn framing_len(&self) -> usize {
        self.transport_kind().prefix_len()
    }

    /// Forgets the old transport's address and stream bytes when the tunnel asks for another.
    fn sync_transport(&mut self) {
        self.link.follow(self.tunnel.transport());
    }

    fn advance_time(&mut self, now: Instant) {
        // Time never goes backwards inside core, whatever a driver's clock does.
        self.now = self.now.max(now);
    }

    fn on_transport(&mut self, event: TransportEvent<'_>) {
        self.sync_transport();
        let now = self.now;
        match event {
            TransportEvent::Connected { remote } => {
                if self.link.connect(remote) {
                    self.tunnel.transport_connected(now, remote);
                }
            }
            TransportEvent::Data { from, bytes } => {
                if !self.link.is_server(from) {
                    // Not the server: nothing it sends reaches the tunnel.
                    self.stats.foreign_packets += 1;
                    return;
                }
                match self.transport_kind() {
                    TransportKind::Udp => self.datagram(bytes),
                    TransportKind::TcpLengthPrefixed => self.stream_chunk(bytes),
                }
            }
            TransportEvent::Closed { error } => {
                if self.link.close() {
                    self.tunnel.transport_closed(now, error);
                }
            }
        }
    }

    fn datagram(&mut self, bytes: &[u8]) {
        let Some(packet) = self.rx.get_mut(..bytes.len()) else {
            self.stats.packets_in += 1;
            self.dropped(DropReason::Malformed);
            return;
        };
        packet.copy_from_slice(bytes);
        self.stats.packets_in += 1;
        let result = self.tunnel.decapsulate(self.now, packet);
        let inner = self.decapsulated(result);
        if let Some(range) = inner {
            let Self {
                rx,
                stack,
                stats,
                now,
                ..
            } = self;
            if let Some(inner) = rx.get(range)
                && stack.ingress(*now, inner).is_err()
            {
                stats.stack_drops += 1;
            }
        }
    }

    fn stream_chunk(&mut self, bytes: &[u8]) {
        self.link.deframer().push(bytes);
        loop {
            let Self {
                link,
                tunnel,
                stack,
                stats,
                now,
                ..
            } = self;
            let frame = match link.deframer().next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => {
                    tracing::debug!("the server sent a zero-length frame on the TCP transport");
                    self.link.close();
                    self.tunnel
                        .transport_closed(self.now, TransportError::Reset);
                    return;
                }
            };
            stats.packets_in += 1;
            match tunnel.decapsulate(*now, frame) {
                Ok(Decapsulated::Inner(range)) => {
                    if let Some(inner) = frame.get(range)
                        && stack.ingress(*now, inner).is_err()
                    {
                        stats.stack_drops += 1;
                    }
                }
                Ok(Decapsulated::Consumed) => {}
                Err(reason) => {
                    stats.server_drops.record(reason);
                    tracing::debug!("dropped a packet from the server: {reason}");
                }
            }
        }
    }

    fn decapsulated(&mut self, result: Result<Decapsulated, DropReason>) -> Option<Range<usize>> {
        match result {
            Ok(Decapsulated::Inner(range)) => Some(range),
            Ok(Decapsulated::Consumed) => None,
            Err(reason) => {
                self.dropped(reason);
                None
            }
        }
    }

    /// Counts an outer packet from the server that the tunnel dropped.
    fn dropped(&mut self, reason: DropReason) {
        self.stats.server_drops.record(reason);
        tracing::debug!("dropped a packet from the server: {reason}");
    }

    fn on_local(&mut self, id: ConnId, event: LocalEvent<'_>) -> Result<(), InputError> {
        let now = self.now;
        if let LocalEvent::Accepted { listener } = event {
            let Some(front_end) = self.listeners.get(listener.0 as usize).cloned() else {
                // A listener the client was not configured with: refuse the connection.
                self.commands.push_back((id, LocalCommand::Close));
                return Ok(());
            };
            let over_limit = self.conns.len() - self.refusing >= self.limits.connections;
            if over_limit {
                self.stats.refused_connections += 1;
                if let Some(hits) = self.connection_warning.hit(now) {
                    tracing::warn!(
                        "{hits} connection(s) refused: {} are open, the limit \
                         (--max-connections)",
                        self.limits.connections
                    );
                }
                if self.refusing >= Limits::MAX_REFUSING {
                    // Too many being refused already: no answer, only the close.
                    self.stats.connections += 1;
                    self.commands.push_back((id, LocalCommand::Close));
                    return Ok(());
                }
                self.refusing += 1;
            }
            let proxy = ProxyConn::new(now, front_end, self.proxy_config.clone());
            self.stats.connections += 1;
            self.conns.insert(
                id,
                Conn {
                    proxy,
                    upstream: None,
                    upstream_paused: false,
                    upstream_eof_sent: false,
                    write_blocked: false,
                    gone: false,
                    lookup: None,
                    over_limit,
                },
            );
            self.dirty.insert(id);
            return Ok(());
        }
        let conn = self
            .conns
            .get_mut(&id)
            .ok_or(InputError::UnknownConnection(id))?;
        match event {
            LocalEvent::Accepted { .. } => {}
            LocalEvent::Data(bytes) => conn.proxy.on_client_data(now, bytes),
            LocalEvent::ReadClosed => conn.proxy.on_client_eof(now),
            LocalEvent::WriteBlocked => conn.write_blocked = true,
            LocalEvent::Writable => conn.write_blocked = false,
            LocalEvent::Reset => {
                conn.gone = true;
                conn.proxy.on_client_reset(now);
            }
        }
        self.dirty.insert(id);
        Ok(())
    }

    fn on_timeout(&mut self) {
        let now = self.now;
        let expired: Vec<ConnId> = self
            .awaiting_tunnel
            .iter()
            .filter(|(_, (.., deadline))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.awaiting_tunnel.remove(&id);
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.proxy
                    .on_upstream_failed(now, UpstreamFailure::TunnelDown);
                self.dirty.insert(id);
            }
        }
        self.tunnel.handle_timeout(now);
        self.resolver.handle_timeout(now);
        for (id, conn) in &mut self.conns {
            if conn
                .proxy
                .poll_timeout()
                .is_some_and(|deadline| deadline <= now)
            {
                conn.proxy.handle_timeout(now);
                self.dirty.insert(*id);
            }
        }
    }

    /// Handles what the tunnel reported. Returns whether anything happened.
    fn drain_tunnel_events(&mut self) -> bool {
        let Some(event) = self.tunnel.poll_event() else {
            return false;
        };
        match event {
            TunnelEvent::Connecting(spec) => {
                self.sync_transport();
                self.events.push_back(Event::Connecting(spec));
            }
            TunnelEvent::Up(mut config) => {
                if !self.dns_servers.is_empty() {
                    config.dns_servers.clone_from(&self.dns_servers);
                }
                // A new session may bring another address or routes: the stack follows.
                self.stack.set_tunnel_config(&config);
                self.resolver.set_tunnel_config(&config);
                self.tunnel_config = Some(config.clone());
                self.events.push_back(Event::Connected(config));
                let waiting: Vec<(ConnId, (Host, u16, Instant))> =
                    std::mem::take(&mut self.awaiting_tunnel)
                        .into_iter()
                        .collect();
                for (id, (host, port, _)) in waiting {
                    self.dirty.insert(id);
                    self.connect(id, &host, port);
                }
            }
            TunnelEvent::Reconnecting { reason, retry_in } => {
                self.tunnel_lost();
                self.events
                    .push_back(Event::Reconnecting { reason, retry_in });
            }
            TunnelEvent::Down(failure) => {
                self.tunnel_lost();
                let now = self.now;
                for (id, _) in std::mem::take(&mut self.awaiting_tunnel) {
                    if let Some(conn) = self.conns.get_mut(&id) {
                        conn.proxy
                            .on_upstream_failed(now, UpstreamFailure::TunnelDown);
                        self.dirty.insert(id);
                    }
                }
                if !self.down {
                    self.down = true;
                    self.events.push_back(Event::Down(failure));
                }
            }
            _ => {}
        }
        true
    }

    /// The session under the stack is gone, and every stream through it with it: their
    /// local connections are closed (a client sees a cut transfer, never a hang) and the
    /// stack forgets their sockets. Connections still waiting for their first byte of
    /// upstream keep waiting for the next session, within their bound.
    fn tunnel_lost(&mut self) {
        self.tunnel_config = None;
        let cut: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, conn)| conn.upstream.is_some() || conn.lookup.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in cut {
            if let Some(conn) = self.remove_conn(id) {
                self.stats.cut_by_reconnect += 1;
                if !conn.gone {
                    self.commands.push_back((id, LocalCommand::Close));
                }
            }
            self.dirty.remove(&id);
        }
        let handles: Vec<SocketHandle> = self.stack.handles().collect();
        for handle in handles {
            self.stack.remove(handle);
        }
        self.by_socket.clear();
        self.closing.clear();
        self.dns_tcp.clear();
        for (lookup, _) in std::mem::take(&mut self.lookups) {
            self.resolver.cancel(lookup);
        }
    }

    /// Routes socket events to their connections. Returns whether there were any.
    fn drain_socket_events(&mut self) -> bool {
        let mut any = false;
        while let Some((handle, events)) = self.stack.poll_event() {
            any = true;
            if self.closing.contains(&handle) {
                self.reap(handle);
                continue;
            }
            let Some(&id) = self.by_socket.get(&handle) else {
                continue;
            };
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            if events.contains(Events::CONNECTED) {
                let local = self.stack.socket(handle).and_then(|s| s.local_endpoint());
                conn.proxy.on_upstream_connected(self.now, local);
            }
            self.dirty.insert(id);
        }
        any
    }

    /// Removes a released socket once its close has completed.
    fn reap(&mut self, handle: SocketHandle) {
        let finished = self
            .stack
            .socket(handle)
            .is_none_or(|s| matches!(s.state(), State::Closed | State::TimeWait));
        if finished {
            self.closing.remove(&handle);
            self.stack.remove(handle);
        }
    }

    /// Forgets a connection, keeping the count of those being refused right.
    fn remove_conn(&mut self, id: ConnId) -> Option<Conn> {
        let conn = self.conns.remove(&id)?;
        if conn.over_limit {
            self.refusing -= 1;
        }
        // A lookup nobody waits for would hold a place under the lookup limit until it timed
        // out.
        if let Some(lookup) = conn.lookup {
            self.resolver.cancel(lookup);
            self.lookups.remove(&lookup);
        }
        Some(conn)
    }

    fn connect(&mut self, id: ConnId, host: &Host, port: u16) {
        let now = self.now;
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.over_limit {
            conn.proxy
                .on_upstream_failed(now, UpstreamFailure::TooManyConnections);
            return;
        }
        if self.tunnel_config.is_none() {
            if self.down {
                conn.proxy
                    .on_upstream_failed(now, UpstreamFailure::TunnelDown);
            } else {
                // The tunnel is (re)connecting: wait for it, within a bound.
                self.awaiting_tunnel
                    .insert(id, (host.clone(), port, now + self.tunnel_wait));
            }
            return;
        }
        match host {
            Host::Ip(ip) => self.connect_ip(id, *ip, port),
            Host::Name(name) => {
                // Through the tunnel's DNS servers only: never the host's resolver.
                match self.resolver.resolve(now, name, Family::V4) {
                    Ok(lookup) => {
                        conn.lookup = Some(lookup);
                        self.lookups.insert(lookup, (id, port));
                    }
                    Err(ResolveError::TooManyLookups) => {
                        self.stats.refused_lookups += 1;
                        if let Some(hits) = self.lookup_warning.hit(now) {
                            tracing::warn!(
                                "{hits} request(s) refused: {} names are being resolved, the \
                                 limit (--max-dns-queries)",
                                self.limits.dns_lookups
                            );
                        }
                        conn.proxy
                            .on_upstream_failed(now, UpstreamFailure::TooManyLookups);
                    }
                    Err(error) => {
                        tracing::debug!(conn = id.0, %name, "cannot resolve: {error}");
                        conn.proxy.on_upstream_failed(now, resolve_failure(error));
                    }
                }
            }
        }
    }

    fn connect_ip(&mut self, id: ConnId, ip: IpAddr, port: u16) {
        let now = self.now;
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        match self.stack.connect(now, SocketAddr::new(ip, port)) {
            Ok(handle) => {
                conn.upstream = Some(handle);
                conn.upstream_eof_sent = false;
                conn.upstream_paused = false;
                self.by_socket.insert(handle, id);
            }
            Err(e) => {
                let failure = match e {
                    StackError::NoRoute => UpstreamFailure::Unreachable,
                    _ => UpstreamFailure::Other,
                };
                tracing::debug!(conn = id.0, "cannot connect to {ip}:{port}: {e}");
                conn.proxy.on_upstream_failed(now, failure);
            }
        }
    }

    /// Moves DNS traffic between the resolver and the stack, and hands finished lookups to
    /// their connections. Returns whether anything happened.
    fn pump_dns(&mut self) -> bool {
        let now = self.now;
        let mut any = false;
        while let Some(query) = self.resolver.poll_transmit(now) {
            any = true;
            match query.transport {
                DnsTransport::Udp => {
                    if !self.stack.udp_is_bound(query.local_port)
                        && self.stack.udp_bind(query.local_port).is_ok()
                    {
                        self.dns_ports.insert(query.local_port);
                    }
                    if let Err(e) =
                        self.stack
                            .udp_send(query.local_port, query.server, &query.bytes)
                    {
                        tracing::debug!("DNS query to {} not sent: {e}", query.server);
                    }
                }
                DnsTransport::Tcp => match self.stack.connect(now, query.server) {
                    Ok(handle) => {
                        self.dns_tcp.insert(
                            handle,
                            DnsOverTcp {
                                server: query.server,
                                id: query.id,
                                query: query.bytes,
                                answer: Vec::new(),
                            },
                        );
                    }
                    Err(_) => {
                        self.resolver
                            .handle_tcp_failure(now, query.server, query.id);
                    }
                },
            }
        }
        while let Some(datagram) = self.stack.udp_recv() {
            any = true;
            let result = self.resolver.handle_udp_response(
                now,
                datagram.remote,
                datagram.local_port,
                &datagram.payload,
            );
            if let Err(drop) = result {
                tracing::debug!("DNS response from {} dropped: {drop:?}", datagram.remote);
            }
        }
        any |= self.pump_dns_tcp();
        while let Some((lookup, result)) = self.resolver.poll_result() {
            any = true;
            let Some((id, port)) = self.lookups.remove(&lookup) else {
                continue;
            };
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            conn.lookup = None;
            self.dirty.insert(id);
            match result {
                Ok(addresses) => match addresses.first() {
                    Some(ip) => self.connect_ip(id, *ip, port),
                    None => conn
                        .proxy
                        .on_upstream_failed(now, UpstreamFailure::NameNotFound),
                },
                Err(error) => conn.proxy.on_upstream_failed(now, resolve_failure(error)),
            }
        }
        let idle: Vec<u16> = self
            .dns_ports
            .iter()
            .copied()
            .filter(|port| !self.resolver.is_listening_on(*port))
            .collect();
        for port in idle {
            self.dns_ports.remove(&port);
            self.stack.udp_unbind(port);
        }
        any
    }

    /// Drives the DNS queries that fell back to TCP. Returns whether anything happened.
    fn pump_dns_tcp(&mut self) -> bool {
        let now = self.now;
        let mut finished = Vec::new();
        for (handle, query) in &mut self.dns_tcp {
            let Some(socket) = self.stack.socket_mut(*handle) else {
                finished.push((*handle, None));
                continue;
            };
            if !query.query.is_empty()
                && socket.may_send()
                && let Ok(n) = socket.send(&query.query)
            {
                query.query.drain(..n);
            }
            let answer = &mut query.answer;
            let read = socket.recv_with(|data| {
                answer.extend_from_slice(data);
                data.len()
            });
            if let Some(len) = tcp_frame_len(&query.answer)
                && query.answer.len() >= len
            {
                finished.push((*handle, Some(true)));
            } else if read.is_err() || socket.error().is_some() {
                finished.push((*handle, Some(false)));
            }
        }
        let any = !finished.is_empty();
        for (handle, answered) in finished {
            let Some(query) = self.dns_tcp.remove(&handle) else {
                continue;
            };
            match answered {
                Some(true) => {
                    let len = tcp_frame_len(&query.answer).unwrap_or(0);
                    let frame = query.answer.get(..len).unwrap_or_default();
                    let _ = self.resolver.handle_tcp_response(now, query.server, frame);
                }
                _ => {
                    self.resolver
                        .handle_tcp_failure(now, query.server, query.id);
                }
            }
            if let Some(socket) = self.stack.socket_mut(handle) {
                socket.release(now);
                self.closing.insert(handle);
                self.reap(handle);
            }
        }
        any
    }

    fn release_upstream(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(handle) = conn.upstream.take() else {
            return;
        };
        self.by_socket.remove(&handle);
        if let Some(socket) = self.stack.socket_mut(handle) {
            if socket.recv_queue() > 0 {
                // Unread data: tell the peer the stream was cut short (RFC 9293 3.6.1).
                socket.abort();
            } else {
                // Bytes still queued are delivered before the FIN: a connection whose client
                // finished first (its last bytes in flight to a slow peer) loses nothing.
                // Released, the socket does not wait for the peer's FIN for ever.
                socket.release(self.now);
            }
            self.closing.insert(handle);
            self.reap(handle);
        }
    }

    /// Carries out a connection's proxy actions and moves bytes between it and its socket.
    /// Returns an output when the connection has bytes for the driver.
    fn service(&mut self, id: ConnId, buf: &mut [u8]) -> Option<Step> {
        let now = self.now;
        // Actions first, in order: they may open or release the upstream.
        loop {
            let action = match self.conns.get_mut(&id) {
                Some(conn) => conn.proxy.poll_action(),
                None => return None,
            };
            let Some(action) = action else { break };
            match action {
                Action::Connect { host, port } => self.connect(id, &host, port),
                Action::ShutdownUpstream => {
                    if let Some(handle) = self.conns.get(&id).and_then(|c| c.upstream)
                        && let Some(socket) = self.stack.socket_mut(handle)
                    {
                        socket.close();
                    }
                }
                Action::CloseUpstream => self.release_upstream(id),
                Action::PauseClient => self.commands.push_back((id, LocalCommand::Pause)),
                Action::ResumeClient => self.commands.push_back((id, LocalCommand::Resume)),
                Action::PauseUpstream => {
                    if let Some(conn) = self.conns.get_mut(&id) {
                        conn.upstream_paused = true;
                    }
                }
                Action::ResumeUpstream => {
                    if let Some(conn) = self.conns.get_mut(&id) {
                        conn.upstream_paused = false;
                    }
                }
                Action::ShutdownClient => self.commands.push_back((id, LocalCommand::Shutdown)),
                Action::CloseClient => {
                    self.release_upstream(id);
                    if let Some(conn) = self.remove_conn(id)
                        && !conn.gone
                    {
                        self.commands.push_back((id, LocalCommand::Close));
                    }
                    self.dirty.remove(&id);
                    return None;
                }
            }
        }
        let conn = self.conns.get_mut(&id)?;
        if let Some(handle) = conn.upstream
            && let Some(socket) = self.stack.socket_mut(handle)
        {
            // Client to upstream: as much as the socket's send buffer takes.
            loop {
                let data = conn.proxy.upstream_output();
                if data.is_empty() || !socket.may_send() {
                    break;
                }
                match socket.send(data) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => conn.proxy.advance_upstream(now, n),
                }
            }
            // Upstream to client, as much as the client side has room for: the rest stays
            // in the socket's receive buffer, and its window tells the origin to wait.
            while !conn.upstream_paused {
                let room = conn.proxy.upstream_room();
                if room == 0 {
                    break;
                }
                let proxy = &mut conn.proxy;
                match socket.recv_with(|data| {
                    let taken = data.get(..room).unwrap_or(data);
                    proxy.on_upstream_data(now, taken);
                    taken.len()
                }) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(RecvError::Finished) => {
                        if !conn.upstream_eof_sent {
                            conn.upstream_eof_sent = true;
                            conn.proxy.on_upstream_eof(now);
                            // The front end may now want to act (shut the client down) even
                            // with no bytes left for it: service it again.
                            self.dirty.insert(id);
                        }
                        break;
                    }
                    Err(RecvError::InvalidState) => {
                        if let Some(error) = socket.error() {
                            conn.proxy.on_upstream_failed(now, upstream_failure(error));
                            // The front end now wants to act (answer or close the client),
                            // which the next pass does: nothing else may wake this
                            // connection, since its client may have finished sending.
                            self.dirty.insert(id);
                        }
                        break;
                    }
                }
            }
        }
        // Bytes for the local connection.
        if !conn.write_blocked && !conn.gone {
            let data = conn.proxy.client_output();
            if !data.is_empty() {
                let n = data.len().min(buf.len());
                buf.get_mut(..n)?.copy_from_slice(data.get(..n)?);
                conn.proxy.advance_client(now, n);
                // More may follow, and advancing may have released actions.
                self.dirty.insert(id);
                return Some(Step::Write(id, 0..n));
            }
        }
        None
    }

    /// Writes the next control-plane packet of the tunnel into `buf`, framed for the transport.
    fn tunnel_transmit(&mut self, buf: &mut [u8]) -> Option<Step> {
        let frame = self.framing_len();
        let room = buf.get_mut(frame..)?;
        match self.tunnel.poll_transmit(self.now, room)? {
            Ok(len) => {
                if frame > 0 {
                    framing::write_prefix(buf, len)?;
                }
                self.stats.packets_out += 1;
                Some(Step::Transmit(0..frame + len))
            }
            Err(needed) => Some(Step::TooSmall(needed + frame)),
        }
    }

    /// Lets the stack write its next packet into `buf`, leaving room for the tunnel, and
    /// encapsulates it in place.
    fn egress(&mut self, buf: &mut [u8]) -> Option<Step> {
        let frame = self.framing_len();
        let overhead = self.tunnel.overhead();
        let start = frame + overhead.headroom;
        let needed = start + self.stack.mtu() + overhead.tailroom;
        if buf.len() < needed {
            return Some(Step::TooSmall(needed));
        }
        loop {
            let end = buf.len() - overhead.tailroom;
            let len = self.stack.poll_egress(self.now, buf.get_mut(start..end)?)?;
            match self.tunnel.encapsulate(
                self.now,
                buf.get_mut(frame..)?,
                overhead.headroom..overhead.headroom + len,
            ) {
                Ok(outer) => {
                    let outer = (outer.start + frame)..(outer.end + frame);
                    if frame > 0 {
                        framing::write_prefix(buf.get_mut(outer.start - frame..)?, outer.len())?;
                    }
                    self.stats.packets_out += 1;
                    return Some(Step::Transmit(outer.start - frame..outer.end));
                }
                Err(reason) => {
                    // Not up yet or the packet cannot go: TCP retransmits what matters.
                    self.stats.unsent += 1;
                    tracing::debug!("inner packet not sent: {reason}");
                }
            }
        }
    }

    /// Whether the stack's packets can leave now: a session is up and its transport connected.
    fn can_egress(&self) -> bool {
        self.tunnel_config.is_some() && self.link.remote().is_some()
    }

    fn next_deadline(&self) -> Option<Instant> {
        let proxies = self
            .conns
            .values()
            .filter_map(|c| c.proxy.poll_timeout())
            .min();
        let waits = self
            .awaiting_tunnel
            .values()
            .map(|(.., deadline)| *deadline)
            .min();
        // The stack's timers are served by its egress, which waits while no session is up:
        // its deadline then (the resets still queued for a lost session's connections, say)
        // would only wake the driver again and again, at once, for the whole outage.
        let stack = self
            .can_egress()
            .then(|| self.stack.poll_timeout())
            .flatten();
        [
            self.tunnel.poll_timeout().map(|(t, _)| t),
            stack,
            // A DNS query whose answer is overdue is sent again (or to the next server).
            self.resolver.poll_timeout(),
            proxies,
            waits,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|t| t.max(self.now))
    }
}

fn resolve_failure(error: ResolveError) -> UpstreamFailure {
    match error {
        ResolveError::Timeout => UpstreamFailure::Timeout,
        ResolveError::NoServers => {
            tracing::warn!(
                "a name cannot be resolved: the tunnel provides no DNS server (give one with --dns)"
            );
            UpstreamFailure::NameNotFound
        }
        ResolveError::NameNotFound | ResolveError::NoAddresses | ResolveError::InvalidName => {
            UpstreamFailure::NameNotFound
        }
        _ => UpstreamFailure::Other,
    }
}

fn upstream_failure(error: ConnectionError) -> UpstreamFailure {
    match error {
        ConnectionError::Refused => UpstreamFailure::Refused,
        ConnectionError::Reset | ConnectionError::Aborted => UpstreamFailure::Reset,
        ConnectionError::TimedOut => UpstreamFailure::Timeout,
        ConnectionError::Unreachable => UpstreamFailure::Unreachable,
    }
}

impl<T: Tunnel> Driven for Client<T> {
    fn transport(&self) -> Option<&TransportSpec> {
        if self.down {
            return None;
        }
        self.tunnel.transport()
    }

    fn handle_input(&mut self, input: Input<'_>) -> Result<(), InputError> {
        self.advance_time(input.now());
        match input {
            Input::Timeout { .. } => self.on_timeout(),
            Input::Close { .. } => self.tunnel.close(self.now),
            Input::Transport { event, .. } => self.on_transport(event),
            Input::Local { conn, event, .. } => self.on_local(conn, event)?,
        }
        Ok(())
    }

    fn poll_output<'b>(&mut self, buf: &'b mut [u8]) -> Output<'b> {
        let step = loop {
            if let Some((conn, command)) = self.commands.pop_front() {
                return Output::Local {
                    conn,
                    action: command.action(),
                };
            }
            if let Some(event) = self.events.pop_front() {
                return Output::Event(event);
            }
            if self.drain_tunnel_events() {
                continue;
            }
            self.sync_transport();
            // The tunnel's own packets first: handshakes and keepalives must not starve. No
            // packet leaves before the transport is open: there is nowhere to send it.
            if self.link.remote().is_some()
                && let Some(step) = self.tunnel_transmit(buf)
            {
                break step;
            }
            if self.drain_socket_events() {
                continue;
            }
            if self.pump_dns() {
                continue;
            }
            if let Some(id) = self.dirty.pop_first() {
                if let Some(step) = self.service(id, buf) {
                    break step;
                }
                continue;
            }
            if self.can_egress()
                && let Some(step) = self.egress(buf)
            {
                break step;
            }
            return Output::Timeout(self.next_deadline());
        };
        match step {
            Step::Transmit(range) => match self.link.remote() {
                Some(to) => Output::Transmit {
                    to,
                    bytes: buf.get(range).unwrap_or_default(),
                },
                None => Output::Timeout(self.next_deadline()),
            },
            Step::Write(conn, range) => Output::Local {
                conn,
                action: LocalAction::Write(buf.get(range).unwrap_or_default()),
            },
            Step::TooSmall(needed) => Output::BufferTooSmall { needed },
        }
    }
}
