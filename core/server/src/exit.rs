//! The exit: inner flows that end in the server's stack, each joined to a host socket.
//!
//! A TCP flow is answered only once its host socket is connected, so a client sees exactly
//! what the destination did: a handshake, a reset for a closed port, an ICMP host
//! unreachable for a host that cannot be reached. Then bytes move both ways with
//! backpressure: a host socket that cannot take more stops us reading the stack socket
//! (whose window then closes towards the client), and a stack socket whose send buffer is
//! full pauses reading from the host.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use erebus_net::stack::{FlowRequest, Refusal, SocketHandle, Stack, UdpDatagram, UnreachableCode};
use erebus_net::tcp::{RecvError, State};
use erebus_sansio::Instant;
use erebus_sansio::io::{LocalAction, LocalEvent, TransportError};
use erebus_sansio::serve::{FlowEvent, FlowId, FlowKind, ServeEvent, ServeOutput};

use crate::dns::{self, Query, Request};
use crate::{ExitConfig, Step};

/// At most this many DNS queries wait for the host's resolver; more get SERVFAIL.
const MAX_DNS_PENDING: usize = 256;
/// At most this many datagrams wait for a UDP flow's socket to open.
const MAX_UDP_WAITING: usize = 8;
/// The largest chunk handed to a host socket at once.
const READ_CHUNK: usize = 32 * 1024;

/// A command for the driver, waiting for the next drain.
enum Command {
    Open(FlowId, FlowKind, SocketAddr),
    Act(FlowId, Act),
    /// One datagram to a UDP flow's host socket.
    Send(FlowId, Vec<u8>),
    Resolve(u64, String),
    Event(ServeEvent),
}

#[derive(Clone, Copy)]
enum Act {
    Pause,
    Resume,
    Close,
}

impl Act {
    const fn action(self) -> LocalAction<'static> {
        match self {
            Self::Pause => LocalAction::PauseReading,
            Self::Resume => LocalAction::ResumeReading,
            Self::Close => LocalAction::Close,
        }
    }
}

/// A TCP flow.
struct TcpFlow {
    client: Ipv4Addr,
    to: SocketAddr,
    /// The client's SYN, until the host socket connects; then the stack socket.
    request: Option<FlowRequest>,
    handle: Option<SocketHandle>,
    /// The host socket cannot take more: leave the stack socket's bytes where they are.
    host_blocked: bool,
    /// Host bytes the stack socket has not taken yet (only while the host is paused).
    backlog: Vec<u8>,
    host_paused: bool,
    /// The host closed its sending side; the stack socket closes after the backlog.
    host_eof: bool,
    /// We told the host socket to shut down its sending side.
    shutdown_sent: bool,
    /// The host socket is gone (closed by us or reset).
    host_gone: bool,
}

/// A UDP flow: one client address and port to one destination.
struct UdpFlow {
    client: SocketAddr,
    to: SocketAddr,
    open: bool,
    waiting: VecDeque<Vec<u8>>,
    last_active: Instant,
}

enum Flow {
    Tcp(TcpFlow),
    Udp(UdpFlow),
}

impl Flow {
    const fn client_ip(&self) -> IpAddr {
        match self {
            Self::Tcp(flow) => IpAddr::V4(flow.client),
            Self::Udp(flow) => flow.client.ip(),
        }
    }
}

/// A DNS query waiting for the host's resolver.
struct DnsWait {
    query: Query,
    /// The relay address the client asked.
    server: SocketAddr,
    client: SocketAddr,
}

pub(crate) struct Exit {
    stack: Stack,
    config: ExitConfig,
    flows: BTreeMap<FlowId, Flow>,
    by_handle: BTreeMap<SocketHandle, FlowId>,
    /// UDP flows by (client, destination).
    by_tuple: BTreeMap<(SocketAddr, SocketAddr), FlowId>,
    /// Flows per client address, for the per-client limit.
    per_client: BTreeMap<IpAddr, usize>,
    /// TCP flows whose stack socket may have bytes (or an end of stream) for the host.
    readable: BTreeSet<FlowId>,
    next_flow: u64,
    dns: BTreeMap<u64, DnsWait>,
    next_query: u64,
    commands: VecDeque<Command>,
}

impl Exit {
    pub(crate) fn new(stack: Stack, config: ExitConfig) -> Self {
        Self {
            stack,
            config,
            flows: BTreeMap::new(),
            by_handle: BTreeMap::new(),
            by_tuple: BTreeMap::new(),
            per_client: BTreeMap::new(),
            readable: BTreeSet::new(),
            next_flow: 0,
            dns: BTreeMap::new(),
            next_query: 0,
            commands: VecDeque::new(),
        }
    }

    pub(crate) fn flows(&self) -> usize {
        self.flows.len()
    }

    pub(crate) const fn stack(&self) -> &Stack {
        &self.stack
    }

    /// An inner packet from a client.
    pub(crate) fn ingress(&mut self, now: Instant, packet: &[u8]) {
        // Counted by the stack when dropped.
        let _ = self.stack.ingress(now, packet);
        self.service(now);
    }

    pub(crate) fn poll_egress(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        self.stack.poll_egress(now, buf)
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let idle = self
            .flows
            .values()
            .filter_map(|flow| match flow {
                Flow::Udp(udp) => Some(udp.last_active + self.config.udp_idle),
                Flow::Tcp(_) => None,
            })
            .min();
        let pending =
            (!self.commands.is_empty() || !self.readable.is_empty()).then_some(Instant::ZERO);
        [self.stack.poll_timeout(), idle, pending]
            .into_iter()
            .flatten()
            .min()
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let idle: Vec<FlowId> = self
            .flows
            .iter()
            .filter_map(|(&id, flow)| match flow {
                Flow::Udp(udp) if udp.last_active + self.config.udp_idle <= now => Some(id),
                _ => None,
            })
            .collect();
        for id in idle {
            self.commands.push_back(Command::Act(id, Act::Close));
            self.forget(id);
        }
    }

    /// Closes every flow of a client that went away.
    pub(crate) fn drop_client(&mut self, client: Ipv4Addr) {
        let ids: Vec<FlowId> = self
            .flows
            .iter()
            .filter(|(_, flow)| flow.client_ip() == IpAddr::V4(client))
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            if let Some(Flow::Tcp(tcp)) = self.flows.get(&id)
                && let Some(handle) = tcp.handle
                && let Some(socket) = self.stack.socket_mut(handle)
            {
                socket.abort();
            }
            let gone = matches!(self.flows.get(&id), Some(Flow::Tcp(tcp)) if tcp.host_gone);
            if !gone {
                self.commands.push_back(Command::Act(id, Act::Close));
            }
            self.forget(id);
        }
    }

    /// Takes in everything the stack has for us: new flows, socket events, datagrams.
    pub(crate) fn service(&mut self, now: Instant) {
        while let Some(request) = self.stack.poll_flow_request() {
            self.on_flow_request(request);
        }
        while let Some((handle, _events)) = self.stack.poll_event() {
            if let Some(&id) = self.by_handle.get(&handle) {
                self.readable.insert(id);
                self.push_backlog(id);
                self.reap(id);
            }
        }
        while let Some(datagram) = self.stack.udp_recv() {
            self.on_datagram(now, datagram);
        }
    }

    fn new_flow_id(&mut self) -> FlowId {
        let id = FlowId(self.next_flow);
        self.next_flow += 1;
        id
    }

    fn refused(&mut self, client: IpAddr, to: SocketAddr, reason: impl Into<String>) {
        self.commands
            .push_back(Command::Event(ServeEvent::FlowRefused {
                client,
                to,
                reason: reason.into(),
            }));
    }

    fn over_limit(&self, client: IpAddr) -> bool {
        self.per_client.get(&client).copied().unwrap_or(0) >= self.config.max_flows_per_client
    }

    fn on_flow_request(&mut self, request: FlowRequest) {
        let to = request.local;
        let client = request.remote.ip();
        let IpAddr::V4(client_v4) = client else {
            self.stack.refuse_flow(request, Refusal::Reset);
            return;
        };
        if !self.config.allow.allows(to) {
            self.refused(client, to, "not in the exit's allow-list");
            self.stack.refuse_flow(
                request,
                Refusal::Unreachable(UnreachableCode::AdminProhibited),
            );
            return;
        }
        if self.over_limit(client) {
            self.refused(client, to, "the client has too many flows open");
            self.stack.refuse_flow(request, Refusal::Reset);
            return;
        }
        let id = self.new_flow_id();
        *self.per_client.entry(client).or_default() += 1;
        self.flows.insert(
            id,
            Flow::Tcp(TcpFlow {
                client: client_v4,
                to,
                request: Some(request),
                handle: None,
                host_blocked: false,
                backlog: Vec::new(),
                host_paused: false,
                host_eof: false,
                shutdown_sent: false,
                host_gone: false,
            }),
        );
        self.commands
            .push_back(Command::Open(id, FlowKind::Tcp, to));
    }

    fn on_datagram(&mut self, now: Instant, datagram: UdpDatagram) {
        let to = datagram.local;
        let client = datagram.remote;
        if to.port() == 53 && self.is_dns_relay(to.ip()) {
            self.on_dns(datagram);
            return;
        }
        if let Some(&id) = self.by_tuple.get(&(client, to)) {
            if let Some(Flow::Udp(flow)) = self.flows.get_mut(&id) {
                flow.last_active = now;
                if flow.open {
                    self.commands.push_back(Command::Send(id, datagram.payload));
                } else if flow.waiting.len() < MAX_UDP_WAITING {
                    flow.waiting.push_back(datagram.payload);
                }
            }
            return;
        }
        if !self.config.allow.allows(to) {
            self.refused(client.ip(), to, "not in the exit's allow-list");
            self.stack
                .udp_refuse(&datagram, UnreachableCode::AdminProhibited);
            return;
        }
        if self.over_limit(client.ip()) {
            self.refused(client.ip(), to, "the client has too many flows open");
            self.stack.udp_refuse(&datagram, UnreachableCode::Port);
            return;
        }
        let id = self.new_flow_id();
        *self.per_client.entry(client.ip()).or_default() += 1;
        self.by_tuple.insert((client, to), id);
        self.flows.insert(
            id,
            Flow::Udp(UdpFlow {
                client,
                to,
                open: false,
                waiting: VecDeque::from([datagram.payload]),
                last_active: now,
            }),
        );
        self.commands
            .push_back(Command::Open(id, FlowKind::Udp, to));
    }

    fn is_dns_relay(&self, ip: IpAddr) -> bool {
        matches!(ip, IpAddr::V4(v4) if self.config.dns_relay.contains(&v4))
    }

    fn on_dns(&mut self, datagram: UdpDatagram) {
        match dns::read_query(&datagram.payload) {
            Request::Drop => {}
            Request::Reply(bytes) => {
                let _ = self
                    .stack
                    .udp_send_from(datagram.local, datagram.remote, &bytes);
            }
            Request::Resolve(query) => {
                if self.dns.len() >= MAX_DNS_PENDING {
                    let bytes = query.server_failure();
                    let _ = self
                        .stack
                        .udp_send_from(datagram.local, datagram.remote, &bytes);
                    return;
                }
                let id = self.next_query;
                self.next_query += 1;
                self.commands
                    .push_back(Command::Resolve(id, query.name.clone()));
                self.dns.insert(
                    id,
                    DnsWait {
                        query,
                        server: datagram.local,
                        client: datagram.remote,
                    },
                );
            }
        }
    }

    pub(crate) fn on_resolved(&mut self, now: Instant, query: u64, addrs: &[IpAddr]) {
        let Some(wait) = self.dns.remove(&query) else {
            return;
        };
        let bytes = if addrs.is_empty() {
            wait.query.not_found()
        } else {
            wait.query.answer(addrs)
        };
        let _ = self.stack.udp_send_from(wait.server, wait.client, &bytes);
        self.service(now);
    }

    pub(crate) fn on_flow(&mut self, now: Instant, id: FlowId, event: FlowEvent<'_>) {
        match self.flows.get(&id) {
            Some(Flow::Tcp(_)) => self.on_tcp_flow(now, id, event),
            Some(Flow::Udp(_)) => self.on_udp_flow(now, id, event),
            None => {}
        }
        self.service(now);
    }

    fn on_tcp_flow(&mut self, now: Instant, id: FlowId, event: FlowEvent<'_>) {
        let Some(Flow::Tcp(flow)) = self.flows.get_mut(&id) else {
            return;
        };
        match event {
            FlowEvent::Connected => {
                let Some(request) = flow.request.take() else {
                    return;
                };
                match self.stack.accept_flow(now, request) {
                    Ok(handle) => {
                        flow.handle = Some(handle);
                        self.by_handle.insert(handle, id);
                    }
                    Err(_) => {
                        self.commands.push_back(Command::Act(id, Act::Close));
                        self.forget(id);
                    }
                }
            }
            FlowEvent::Failed(error) => {
                let (client, to) = (IpAddr::V4(flow.client), flow.to);
                flow.host_gone = true;
                if let Some(request) = flow.request.take() {
                    let refusal = match error {
                        TransportError::Refused | TransportError::Reset => Refusal::Reset,
                        _ => Refusal::Unreachable(UnreachableCode::Host),
                    };
                    self.stack.refuse_flow(request, refusal);
                }
                self.refused(client, to, error.to_string());
                self.forget(id);
            }
            FlowEvent::Socket(LocalEvent::Data(bytes)) => {
                let socket = flow.handle.and_then(|h| self.stack.socket_mut(h));
                let taken = match socket {
                    Some(socket) if flow.backlog.is_empty() => socket.send(bytes).unwrap_or(0),
                    _ => 0,
                };
                if taken < bytes.len() {
                    flow.backlog.extend_from_slice(&bytes[taken..]);
                    if !flow.host_paused {
                        flow.host_paused = true;
                        self.commands.push_back(Command::Act(id, Act::Pause));
                    }
                }
            }
            FlowEvent::Socket(LocalEvent::ReadClosed) => {
                flow.host_eof = true;
                self.push_backlog(id);
            }
            FlowEvent::Socket(LocalEvent::Reset) => {
                flow.host_gone = true;
                if let Some(socket) = flow.handle.and_then(|h| self.stack.socket_mut(h)) {
                    socket.abort();
                }
                self.forget(id);
            }
            FlowEvent::Socket(LocalEvent::WriteBlocked) => flow.host_blocked = true,
            FlowEvent::Socket(LocalEvent::Writable) => {
                flow.host_blocked = false;
                self.readable.insert(id);
            }
            FlowEvent::Socket(LocalEvent::Accepted { .. }) => {}
        }
    }

    fn on_udp_flow(&mut self, now: Instant, id: FlowId, event: FlowEvent<'_>) {
        let Some(Flow::Udp(flow)) = self.flows.get_mut(&id) else {
            return;
        };
        match event {
            FlowEvent::Connected => {
                flow.open = true;
                for datagram in flow.waiting.drain(..) {
                    self.commands.push_back(Command::Send(id, datagram));
                }
            }
            FlowEvent::Failed(error) => {
                let (client, to) = (flow.client.ip(), flow.to);
                self.refused(client, to, error.to_string());
                self.forget(id);
            }
            FlowEvent::Socket(LocalEvent::Data(bytes)) => {
                flow.last_active = now;
                let (client, to) = (flow.client, flow.to);
                let _ = self.stack.udp_send_from(to, client, bytes);
            }
            FlowEvent::Socket(LocalEvent::Reset | LocalEvent::ReadClosed) => {
                // The destination's port is closed (an ICMP error on the host socket); the
                // client will time out or retry, as it would behind a NAT.
            }
            FlowEvent::Socket(_) => {}
        }
    }

    /// Moves a flow's backlog into its stack socket as space allows; once it is empty,
    /// resumes the host and passes on the host's end of stream.
    fn push_backlog(&mut self, id: FlowId) {
        let Some(Flow::Tcp(flow)) = self.flows.get_mut(&id) else {
            return;
        };
        let Some(socket) = flow.handle.and_then(|h| self.stack.socket_mut(h)) else {
            return;
        };
        if !flow.backlog.is_empty() {
            let taken = socket.send(&flow.backlog).unwrap_or(0);
            flow.backlog.drain(..taken);
        }
        if flow.backlog.is_empty() {
            if flow.host_paused && !flow.host_eof {
                flow.host_paused = false;
                self.commands.push_back(Command::Act(id, Act::Resume));
            }
            if flow.host_eof {
                socket.close();
            }
            // Give the memory back once a burst is over.
            if flow.backlog.capacity() > READ_CHUNK {
                flow.backlog = Vec::new();
            }
        }
    }

    /// Forgets a TCP flow whose stack socket is finished and whose host socket is closed.
    fn reap(&mut self, id: FlowId) {
        let Some(Flow::Tcp(flow)) = self.flows.get_mut(&id) else {
            return;
        };
        let Some(handle) = flow.handle else {
            return;
        };
        let state = self.stack.socket(handle).map(|s| s.state());
        let finished = matches!(state, None | Some(State::Closed | State::TimeWait));
        if !finished {
            return;
        }
        let drained = self.stack.socket(handle).is_none_or(|s| !s.can_recv());
        if !drained && !flow.host_gone {
            // Bytes still to hand to the host first (once it can take them).
            return;
        }
        if !flow.host_gone {
            flow.host_gone = true;
            self.commands.push_back(Command::Act(id, Act::Close));
        }
        self.forget(id);
    }

    /// Removes a flow and its stack socket.
    fn forget(&mut self, id: FlowId) {
        let Some(flow) = self.flows.remove(&id) else {
            return;
        };
        self.readable.remove(&id);
        let client = flow.client_ip();
        if let Some(count) = self.per_client.get_mut(&client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_client.remove(&client);
            }
        }
        match flow {
            Flow::Tcp(tcp) => {
                if let Some(handle) = tcp.handle {
                    self.by_handle.remove(&handle);
                    self.stack.remove(handle);
                }
            }
            Flow::Udp(udp) => {
                self.by_tuple.remove(&(udp.client, udp.to));
            }
        }
    }

    /// The next queued command for the driver.
    pub(crate) fn poll_command(&mut self, buf: &mut [u8]) -> Option<Step> {
        let command = self.commands.pop_front()?;
        Some(match command {
            Command::Open(flow, kind, to) => Step::Out(ServeOutput::OpenFlow { flow, kind, to }),
            Command::Act(flow, act) => Step::Out(ServeOutput::Flow {
                flow,
                action: act.action(),
            }),
            Command::Send(flow, datagram) => {
                let Some(out) = buf.get_mut(..datagram.len()) else {
                    let needed = datagram.len();
                    self.commands.push_front(Command::Send(flow, datagram));
                    return Some(Step::Out(ServeOutput::BufferTooSmall { needed }));
                };
                out.copy_from_slice(&datagram);
                Step::FlowWrite(flow, 0..datagram.len())
            }
            Command::Resolve(query, name) => {
                let Some(out) = buf.get_mut(..name.len()) else {
                    let needed = name.len();
                    self.commands.push_front(Command::Resolve(query, name));
                    return Some(Step::Out(ServeOutput::BufferTooSmall { needed }));
                };
                out.copy_from_slice(name.as_bytes());
                Step::Resolve(query, 0..name.len())
            }
            Command::Event(event) => Step::Out(ServeOutput::Event(event)),
        })
    }

    /// The next bytes (or end of stream) a stack socket has for its host socket.
    pub(crate) fn poll_flow_read(&mut self, buf: &mut [u8]) -> Option<Step> {
        while let Some(&id) = self.readable.iter().next() {
            let Some(Flow::Tcp(flow)) = self.flows.get_mut(&id) else {
                self.readable.remove(&id);
                continue;
            };
            let socket = flow.handle.and_then(|h| self.stack.socket_mut(h));
            let (Some(socket), false, false) = (socket, flow.host_blocked, flow.host_gone) else {
                self.readable.remove(&id);
                continue;
            };
            let limit = buf.len().min(READ_CHUNK);
            let out = &mut buf[..limit];
            let result = socket.recv_with(|chunk| {
                let n = chunk.len().min(out.len());
                out[..n].copy_from_slice(&chunk[..n]);
                n
            });
            match result {
                Ok(0) => {
                    self.readable.remove(&id);
                    self.reap(id);
                }
                Ok(n) => return Some(Step::FlowWrite(id, 0..n)),
                Err(RecvError::Finished) => {
                    self.readable.remove(&id);
                    if !flow.shutdown_sent {
                        flow.shutdown_sent = true;
                        return Some(Step::Out(ServeOutput::Flow {
                            flow: id,
                            action: LocalAction::Shutdown,
                        }));
                    }
                    self.reap(id);
                }
                Err(RecvError::InvalidState) => {
                    self.readable.remove(&id);
                    self.reap(id);
                }
            }
        }
        None
    }
}
