//! The IP-level stack: a set of TCP sockets behind one tunnel address.
//!
//! Inner IPv4 packets come in through [`Stack::ingress`], are checked, and go to the socket
//! whose 4-tuple (or listening port) they name; a segment for no socket gets a reset.
//! [`Stack::poll_egress`] writes the next outgoing packet into the caller's buffer, taking one
//! segment from each socket in turn so that one bulk transfer cannot starve the others.
//! ICMP echo requests to our address are answered, as any host does (RFC 1122 section
//! 3.2.2.6), so the far end can ping us through the tunnel.
//! Addresses and the MTU come from the tunnel's [`TunnelConfig`]. IPv6 is not carried yet:
//! the socket layer is address-family neutral, and the demultiplexing keys are full
//! `SocketAddr`s, so adding it touches only this module.
//!
//! # Exit mode
//!
//! A VPN server that terminates its clients' inner flows in user space (as slirp or tun2socks
//! do) turns on [`Stack::set_exit_mode`]. The stack then takes packets to *any* unicast
//! destination, not only to our tunnel address:
//!
//! - a TCP SYN that no socket, listener or TIME-WAIT record takes becomes a [`FlowRequest`]
//!   ([`Stack::poll_flow_request`]); the caller opens a host socket to
//!   [`FlowRequest::local`] and answers with [`Stack::accept_flow`] (a socket that behaves as
//!   if it had listened there) or [`Stack::refuse_flow`] (a reset or an ICMP destination
//!   unreachable);
//! - a UDP datagram that no bound port takes is delivered through [`Stack::udp_recv`] with its
//!   full destination in [`UdpDatagram::local`]; answer with [`Stack::udp_send_from`] or
//!   refuse with [`Stack::udp_refuse`];
//! - ICMP echo requests to other hosts go unanswered, so no host seems alive that is not;
//! - packets from or to broadcast, multicast or unspecified addresses are dropped.

use core::fmt;
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use erebus_sansio::{Instant, Seed, SeededRng, TunnelConfig};
use erebus_wire::IpProtocol;
use erebus_wire::icmp::{IcmpPacket, IcmpRepr};
use erebus_wire::ipv4::{self, Ipv4Packet, Ipv4Repr};
use erebus_wire::tcp::{SeqNumber, TcpControl, TcpPacket, TcpRepr};
use erebus_wire::udp::{self, UdpPacket, UdpRepr};

use crate::schedule::Schedule;
use crate::tcp::{self, Events, TcpConfig, TcpSocket};

/// Names one socket of a [`Stack`]. Handles are never reused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SocketHandle(u64);

impl SocketHandle {
    /// A handle made up for a unit test.
    #[cfg(test)]
    pub(crate) const fn for_tests(n: u64) -> Self {
        Self(n)
    }
}

impl fmt::Debug for SocketHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Display for SocketHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why [`Stack::connect`] or [`Stack::listen`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum StackError {
    /// The tunnel does not route to this address.
    #[error("no route to host through the tunnel")]
    NoRoute,
    /// The tunnel gave us no address of this family.
    #[error("the tunnel has no local address of this family")]
    NoLocalAddress,
    /// IPv6 is not carried yet.
    #[error("address family not supported")]
    Unsupported,
    /// Every ephemeral port is in use towards this peer.
    #[error("no free local port")]
    PortsExhausted,
    /// A socket already listens on that port.
    #[error("port already in use")]
    PortInUse,
    /// A UDP datagram from a port that is not bound.
    #[error("UDP port not bound")]
    NotBound,
    /// A UDP payload too large for the tunnel's MTU (there is no IP fragmentation).
    #[error("datagram larger than the tunnel MTU")]
    TooLarge,
    /// Too many datagrams are already queued for sending.
    #[error("send queue full")]
    QueueFull,
    /// The socket refused the operation.
    #[error("socket: {0}")]
    Connect(#[from] tcp::ConnectError),
    /// The socket refused to listen.
    #[error("socket: {0}")]
    Listen(#[from] tcp::ListenError),
}

/// Why [`Stack::ingress`] dropped a packet. A drop changes no state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IngressError {
    /// The packet did not parse (truncated, bad checksum, bad field).
    #[error("malformed packet: {0}")]
    Malformed(#[from] erebus_wire::Error),
    /// The packet is addressed to someone else.
    #[error("packet not addressed to us")]
    NotForUs,
    /// A well-formed packet this stack does not handle (IPv6, fragments, other ICMP).
    #[error("unsupported packet")]
    Unsupported,
    /// A UDP datagram to a port nothing is bound to, or one more than the receive queue holds.
    #[error("no UDP socket takes the datagram")]
    UdpNotDelivered,
}

/// Counters of the stack.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackStats {
    /// Packets passed to [`Stack::ingress`].
    pub rx_packets: u64,
    /// Of those, packets dropped.
    pub rx_dropped: u64,
    /// Packets written by [`Stack::poll_egress`].
    pub tx_packets: u64,
    /// Resets sent for segments that matched no socket.
    pub resets_sent: u64,
    /// Acknowledgments sent again for a connection already removed in TIME-WAIT (its peer
    /// retransmitted its FIN).
    pub time_wait_acks: u64,
    /// Segments that did not fit the caller's egress buffer (they count as lost).
    pub tx_too_big: u64,
    /// UDP datagrams delivered to a bound port.
    pub udp_rx: u64,
    /// UDP datagrams sent.
    pub udp_tx: u64,
    /// ICMP echo requests to our address that were queued for an answer.
    pub echo_rx: u64,
    /// ICMP echo replies sent.
    pub echo_tx: u64,
    /// ICMP echo requests left unanswered because too many replies were already queued.
    pub echo_dropped: u64,
    /// Exit mode: TCP SYNs queued as [`FlowRequest`]s.
    pub flow_requests: u64,
    /// Exit mode: SYNs repeated for a flow already waiting for an answer, and absorbed.
    pub flow_syns_absorbed: u64,
    /// Exit mode: SYNs reset because [`MAX_PENDING_FLOWS`] requests were already waiting.
    pub flows_overflowed: u64,
    /// Exit mode: ICMP echo requests to other hosts, dropped unanswered.
    pub exit_echo_dropped: u64,
    /// ICMP destination unreachable messages sent ([`Stack::refuse_flow`],
    /// [`Stack::udp_refuse`]).
    pub icmp_unreachable_sent: u64,
    /// ICMP destination unreachable messages not sent because too many were already queued.
    pub icmp_unreachable_dropped: u64,
}

/// A UDP datagram received on a bound port, or in exit mode for any destination
/// ([`Stack::udp_recv`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpDatagram {
    /// The port it was sent to (the port of [`local`](Self::local)).
    pub local_port: u16,
    /// The address and port it was sent to: our tunnel address, or in exit mode whatever
    /// destination the sender wrote.
    pub local: SocketAddr,
    /// Who sent it.
    pub remote: SocketAddr,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// Datagrams queued either way per stack; more are dropped, like a full socket buffer.
const MAX_UDP_QUEUE: usize = 256;

/// Exit mode: at most this many TCP flow requests wait for an answer (queued for
/// [`Stack::poll_flow_request`] or offered and not yet accepted or refused); SYNs of further
/// flows are reset.
pub const MAX_PENDING_FLOWS: usize = 256;
/// A flow request unanswered for this long is forgotten when room is needed, and a SYN for
/// it then makes a new request. A client's connect gives up after about two minutes (Linux:
/// six retransmissions), and one that still retransmits after a minute has likely been
/// forgotten by the caller.
const FLOW_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// ICMP errors queued for sending; more are dropped.
const MAX_PENDING_ICMP: usize = 64;
/// The quote of an ICMP error we send: an IPv4 header without options and the first eight
/// bytes of its payload (RFC 792).
const ICMP_QUOTE_LEN: usize = ipv4::HEADER_LEN + 8;

/// The ICMP destination unreachable (type 3) codes a refusal can carry (RFC 792, RFC 1812).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum UnreachableCode {
    /// Network unreachable (0): no route. Sent from our tunnel address, as a router does.
    Net = 0,
    /// Host unreachable (1): the host does not answer. Sent from our tunnel address.
    Host = 1,
    /// Port unreachable (3): nothing there takes the protocol and port. Sent from the
    /// destination itself, as a host does.
    Port = 3,
    /// Communication administratively prohibited (13): filtered by policy. Sent from our
    /// tunnel address, as a filtering router does.
    AdminProhibited = 13,
}

impl UnreachableCode {
    /// The code field of the ICMP message.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// Whether the message comes from the destination (port unreachable) rather than from us
    /// as the router.
    const fn sent_by_destination(self) -> bool {
        matches!(self, Self::Port)
    }
}

impl From<UnreachableCode> for u8 {
    fn from(code: UnreachableCode) -> Self {
        code.code()
    }
}

/// How [`Stack::refuse_flow`] turns a flow down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// A reset answers the SYN, as from a host with nothing listening on the port: the client
    /// sees "connection refused".
    Reset,
    /// An ICMP destination unreachable quoting the SYN: the client's connect fails at once
    /// with "unreachable" (or "prohibited").
    Unreachable(UnreachableCode),
}

/// A TCP connection a client tries to open through an exit-mode stack
/// ([`Stack::poll_flow_request`]): answer it with [`Stack::accept_flow`] or
/// [`Stack::refuse_flow`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRequest {
    /// The destination the client wants to reach; an accepted socket has this local address.
    pub local: SocketAddr,
    /// The client.
    pub remote: SocketAddr,
    /// The SYN (without payload), for its sequence number and options.
    syn: TcpRepr<'static>,
}

/// A flow request waiting for an answer.
#[derive(Clone, Debug)]
struct PendingFlow {
    request: FlowRequest,
    /// Handed to the caller already (and not queued any more).
    offered: bool,
    /// When its first SYN arrived.
    since: Instant,
}

/// An ICMP destination unreachable waiting to be sent.
#[derive(Clone, Copy, Debug)]
struct IcmpError {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    code: u8,
    quote: [u8; ICMP_QUOTE_LEN],
}

/// Replies queued for sending without a socket (resets); more are dropped, as a flood of
/// stray segments must not grow memory.
const MAX_PENDING_REPLIES: usize = 64;
/// Echo replies queued for sending; more requests go unanswered, so a ping flood cannot grow
/// memory beyond this many MTU-sized buffers.
const MAX_PENDING_ECHO_REPLIES: usize = 16;
/// The TTL of our packets.
const TTL: u8 = 64;
/// The first ephemeral port (IANA, RFC 6335).
const EPHEMERAL_FIRST: u16 = 49_152;

/// A TCP/IP stack for one tunnel.
pub struct Stack {
    tunnel: TunnelConfig,
    tcp_config: TcpConfig,
    mtu: usize,
    seed: Seed,
    rng: SeededRng,
    sockets: BTreeMap<SocketHandle, TcpSocket>,
    /// (local, remote) of each connected socket.
    by_tuple: BTreeMap<(SocketAddr, SocketAddr), SocketHandle>,
    /// The key each handle is filed under in `by_tuple`, to unfile it.
    tuple_of: BTreeMap<SocketHandle, (SocketAddr, SocketAddr)>,
    listeners: BTreeMap<u16, SocketHandle>,
    next_handle: u64,
    next_port: u16,
    replies: VecDeque<(SocketAddr, SocketAddr, TcpRepr<'static>)>,
    /// Which sockets to dispatch, which may have events, and their timers.
    schedule: Schedule,
    /// Bound UDP ports.
    udp_ports: BTreeSet<u16>,
    /// Whole IPv4 packets carrying UDP, ready to go. UDP here is control-plane traffic (DNS),
    /// so owning each datagram is fine.
    udp_out: VecDeque<Vec<u8>>,
    udp_in: VecDeque<UdpDatagram>,
    /// What is left of connections removed in TIME-WAIT, by (local, remote): enough to
    /// acknowledge a retransmitted FIN again instead of resetting it (RFC 9293 section
    /// 3.10.7.4), until TIME-WAIT would have ended. Bounded by [`MAX_TIME_WAIT`].
    time_wait: BTreeMap<(SocketAddr, SocketAddr), TimeWait>,
    /// The latest time an input or poll carried.
    now: Instant,
    /// Echo replies waiting for [`Stack::poll_egress`].
    echo_replies: VecDeque<EchoReply>,
    /// Data buffers of replies already sent, kept for the next requests so that answering
    /// pings does not allocate once the queue has been used.
    spare_echo_data: Vec<Vec<u8>>,
    /// Exit mode: take flows to any destination ([`Stack::set_exit_mode`]).
    exit_mode: bool,
    /// Flow requests waiting for an answer, by (local, remote). At most
    /// [`MAX_PENDING_FLOWS`].
    flows: BTreeMap<(SocketAddr, SocketAddr), PendingFlow>,
    /// The keys of the requests not offered yet, in arrival order.
    flow_queue: VecDeque<(SocketAddr, SocketAddr)>,
    /// ICMP errors waiting for [`Stack::poll_egress`]. At most [`MAX_PENDING_ICMP`].
    icmp_out: VecDeque<IcmpError>,
    stats: StackStats,
}

/// A connection removed in TIME-WAIT.
#[derive(Clone, Copy, Debug)]
struct TimeWait {
    /// Our next sequence number (after our FIN).
    seq: SeqNumber,
    /// What we acknowledge (after the peer's FIN).
    ack: SeqNumber,
    /// When TIME-WAIT ends: 2 MSL after we acknowledged the peer's FIN the last time.
    until: Instant,
}

/// At most this many removed connections are remembered in TIME-WAIT; beyond, the one that
/// would end first is forgotten.
const MAX_TIME_WAIT: usize = 4096;

/// An ICMP echo reply waiting to be sent.
#[derive(Debug)]
struct EchoReply {
    /// Our address the request was sent to: the reply's source.
    local: Ipv4Addr,
    /// Who asked.
    remote: Ipv4Addr,
    ident: u16,
    seq_no: u16,
    /// The request's data, echoed unchanged.
    data: Vec<u8>,
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("local", &self.tunnel.local_ipv4())
            .field("mtu", &self.mtu)
            .field("sockets", &self.sockets.len())
            .field("exit_mode", &self.exit_mode)
            .finish_non_exhaustive()
    }
}

impl Stack {
    /// A stack with the tunnel's address and MTU. Sockets get `tcp` as their configuration,
    /// with the MSS lowered to fit the MTU; `seed` feeds ports and sequence numbers.
    pub fn new(tunnel: &TunnelConfig, tcp: TcpConfig, seed: &Seed) -> Self {
        let seed = seed.child("net.stack");
        let mut rng = seed.child("net.stack.ports").rng();
        let span = u32::from(u16::MAX - EPHEMERAL_FIRST) + 1;
        let next_port = EPHEMERAL_FIRST + rng.below(span) as u16;
        let mut stack = Self {
            tunnel: TunnelConfig::default(),
            tcp_config: tcp,
            mtu: 0,
            seed,
            rng,
            sockets: BTreeMap::new(),
            by_tuple: BTreeMap::new(),
            tuple_of: BTreeMap::new(),
            listeners: BTreeMap::new(),
            next_handle: 0,
            next_port,
            replies: VecDeque::new(),
            time_wait: BTreeMap::new(),
            now: Instant::ZERO,
            schedule: Schedule::default(),
            udp_ports: BTreeSet::new(),
            udp_out: VecDeque::new(),
            udp_in: VecDeque::new(),
            echo_replies: VecDeque::new(),
            spare_echo_data: Vec::new(),
            exit_mode: false,
            flows: BTreeMap::new(),
            flow_queue: VecDeque::new(),
            icmp_out: VecDeque::new(),
            stats: StackStats::default(),
        };
        stack.set_tunnel_config(tunnel);
        stack
    }

    /// Adopts a new tunnel configuration (after a reconnect). Open sockets keep their
    /// addresses; new ones use the new MTU.
    pub fn set_tunnel_config(&mut self, tunnel: &TunnelConfig) {
        self.tunnel = tunnel.clone();
        let mtu = if tunnel.mtu == 0 {
            TunnelConfig::DEFAULT_MTU
        } else {
            tunnel.mtu
        };
        self.mtu = usize::from(mtu);
        self.tcp_config.mss = self
            .tcp_config
            .mss
            .min(TcpConfig::mss_for_ipv4_mtu(mtu))
            .min(tunnel.tcp_mss.unwrap_or(u16::MAX));
    }

    /// The largest packet [`poll_egress`](Self::poll_egress) writes: the tunnel's MTU.
    pub const fn mtu(&self) -> usize {
        self.mtu
    }

    /// The configuration new sockets get.
    pub const fn tcp_config(&self) -> &TcpConfig {
        &self.tcp_config
    }

    /// Counters.
    pub const fn stats(&self) -> &StackStats {
        &self.stats
    }

    /// Opens a connection to `remote` from our tunnel address and a free ephemeral port.
    ///
    /// # Errors
    ///
    /// [`StackError::NoRoute`] when the tunnel does not reach `remote`, and the other
    /// variants for a missing address, IPv6, or no free port.
    pub fn connect(
        &mut self,
        now: Instant,
        remote: SocketAddr,
    ) -> Result<SocketHandle, StackError> {
        self.now = self.now.max(now);
        if !self.tunnel.routes_to(remote.ip()) {
            return Err(StackError::NoRoute);
        }
        let local_ip = match remote {
            SocketAddr::V4(_) => self.tunnel.local_ipv4().ok_or(StackError::NoLocalAddress)?,
            SocketAddr::V6(_) => return Err(StackError::Unsupported),
        };
        let local = self.free_port(local_ip, remote)?;
        let handle = self.new_handle();
        let mut socket = TcpSocket::new(self.tcp_config.clone(), &self.socket_seed(handle));
        socket.connect(now, local, remote)?;
        self.sockets.insert(handle, socket);
        self.file(handle);
        self.schedule.touch(handle);
        Ok(handle)
    }

    /// Waits for one connection on `port` of our tunnel address. The socket becomes that
    /// connection; listen again for the next one.
    ///
    /// # Errors
    ///
    /// [`StackError::PortInUse`] when a socket already listens there,
    /// [`StackError::NoLocalAddress`] without an IPv4 address.
    pub fn listen(&mut self, port: u16) -> Result<SocketHandle, StackError> {
        if self.listeners.contains_key(&port) {
            return Err(StackError::PortInUse);
        }
        let ip = self.tunnel.local_ipv4().ok_or(StackError::NoLocalAddress)?;
        let handle = self.new_handle();
        let mut socket = TcpSocket::new(self.tcp_config.clone(), &self.socket_seed(handle));
        socket.listen(SocketAddr::V4(SocketAddrV4::new(ip, port)))?;
        self.sockets.insert(handle, socket);
        self.file(handle);
        self.schedule.touch(handle);
        Ok(handle)
    }

    /// The socket behind `handle`.
    pub fn socket(&self, handle: SocketHandle) -> Option<&TcpSocket> {
        self.sockets.get(&handle)
    }

    /// The socket behind `handle`, for sending, receiving and closing. Poll egress after
    /// using it: what it queued goes out there.
    pub fn socket_mut(&mut self, handle: SocketHandle) -> Option<&mut TcpSocket> {
        let share = self.receive_share();
        let socket = self.sockets.get_mut(&handle)?;
        socket.set_receive_share(share);
        // Whatever the caller does may leave something to send or to report.
        self.schedule.touch(handle);
        Some(socket)
    }

    /// The handles of every socket, in order.
    pub fn handles(&self) -> impl Iterator<Item = SocketHandle> + '_ {
        self.sockets.keys().copied()
    }

    /// Each socket's share of [`TcpConfig::receive_memory`]: it is set on a socket whenever
    /// the socket is about to process a segment, be used or send, which are the moments its
    /// window is computed.
    fn receive_share(&self) -> usize {
        self.tcp_config.receive_memory / self.sockets.len().max(1)
    }

    /// Removes a socket. One still open is aborted and its reset queued, so the peer learns.
    pub fn remove(&mut self, handle: SocketHandle) -> Option<TcpSocket> {
        self.unfile(handle);
        let mut socket = self.sockets.remove(&handle)?;
        if let (Some((seq, ack, until)), Some(local), Some(remote)) = (
            socket.time_wait_record(),
            socket.local_endpoint(),
            socket.remote_endpoint(),
        ) {
            // The final ACK may still be owed (the peer's FIN just arrived): send it, then
            // keep what is needed to acknowledge a retransmission of that FIN.
            let now = self.now;
            if let Some(ack) = socket.dispatch(now, |repr| TcpRepr {
                payload: &[],
                ..*repr
            }) {
                self.queue_reply(local, remote, ack);
            }
            self.remember_time_wait(local, remote, TimeWait { seq, ack, until });
        }
        if socket.is_active()
            && let (Some(local), Some(remote)) = (socket.local_endpoint(), socket.remote_endpoint())
        {
            socket.abort();
            if let Some(rst) = socket.dispatch(Instant::ZERO, |repr| TcpRepr {
                payload: &[],
                ..*repr
            }) {
                self.queue_reply(local, remote, rst);
            }
        }
        self.schedule.forget(handle);
        Some(socket)
    }

    /// The next socket with events, and the events (which are cleared).
    pub fn poll_event(&mut self) -> Option<(SocketHandle, Events)> {
        while let Some(handle) = self.schedule.next_eventful() {
            if let Some(socket) = self.sockets.get_mut(&handle) {
                let events = socket.take_events();
                if !events.is_empty() {
                    return Some((handle, events));
                }
            }
        }
        None
    }

    // -----------------------------------------------------------------------------------------
    // Exit mode.

    /// Turns exit mode on or off (it is off by default). On, TCP SYNs and UDP datagrams to
    /// any unicast destination that no socket takes are offered to the caller
    /// ([`poll_flow_request`](Self::poll_flow_request), [`udp_recv`](Self::udp_recv))
    /// instead of being reset or dropped; that includes ports of our own tunnel address
    /// nothing listens on or is bound to. Sockets, listeners, bound ports and echo replies of
    /// our own address work as before and take precedence. ICMP echo requests to other hosts
    /// go unanswered, and packets from or to broadcast, multicast or unspecified addresses are
    /// dropped.
    ///
    /// Turning it off forgets the flow requests not answered yet; sockets already accepted
    /// stay, but packets for them are no longer taken: remove them.
    pub fn set_exit_mode(&mut self, on: bool) {
        self.exit_mode = on;
        if !on {
            self.flows.clear();
            self.flow_queue.clear();
        }
    }

    /// Whether exit mode is on.
    pub const fn exit_mode(&self) -> bool {
        self.exit_mode
    }

    /// Exit mode: the next new TCP flow a client tried to open (a SYN to
    /// [`FlowRequest::local`] from [`FlowRequest::remote`]), in arrival order. Answer each
    /// with [`accept_flow`](Self::accept_flow) or [`refuse_flow`](Self::refuse_flow): until
    /// then it counts against [`MAX_PENDING_FLOWS`] and the client's retransmitted SYNs are
    /// absorbed. A request left unanswered for a minute is forgotten when room is needed.
    pub fn poll_flow_request(&mut self) -> Option<FlowRequest> {
        while let Some(key) = self.flow_queue.pop_front() {
            if let Some(pending) = self.flows.get_mut(&key)
                && !pending.offered
            {
                pending.offered = true;
                return Some(pending.request.clone());
            }
        }
        None
    }

    /// Flow requests waiting for an answer: queued for
    /// [`poll_flow_request`](Self::poll_flow_request) or offered and not answered yet.
    pub fn pending_flows(&self) -> usize {
        self.flows.len()
    }

    /// Accepts a flow: creates a socket for it as if it had been listening at
    /// `request.local`, answers the client's SYN with a SYN-ACK (with the SYN's options: our
    /// MSS, within the tunnel's MTU, window scaling, SACK and timestamps as the client
    /// offered them) and returns its handle. From then on the socket is like any other: its
    /// packets have `request.local` as their source, it reports
    /// [`Events::CONNECTED`] once the client's ACK arrives, and it is read, written, closed
    /// and removed as usual. Accepting a request that was not (or no longer) pending works
    /// too: the client answers a SYN-ACK it does not expect with a reset.
    ///
    /// # Errors
    ///
    /// [`StackError::PortInUse`] when a socket already has this pair of endpoints (the flow
    /// was accepted already), [`StackError::Unsupported`] for IPv6.
    pub fn accept_flow(
        &mut self,
        now: Instant,
        request: FlowRequest,
    ) -> Result<SocketHandle, StackError> {
        self.now = self.now.max(now);
        let key = (request.local, request.remote);
        if !request.local.is_ipv4() || !request.remote.is_ipv4() {
            return Err(StackError::Unsupported);
        }
        if self.by_tuple.contains_key(&key) {
            return Err(StackError::PortInUse);
        }
        let handle = self.new_handle();
        let mut socket = TcpSocket::new(self.tcp_config.clone(), &self.socket_seed(handle));
        socket.accept_syn(now, request.local, request.remote, &request.syn)?;
        self.forget_flow(key);
        self.time_wait.remove(&key);
        self.sockets.insert(handle, socket);
        self.file(handle);
        self.schedule.touch(handle);
        Ok(handle)
    }

    /// Refuses a flow. [`Refusal::Reset`] answers the SYN with a reset (the client sees
    /// "connection refused"); [`Refusal::Unreachable`] sends an ICMP destination unreachable
    /// quoting the SYN's IP header and first eight bytes (ports and sequence number), from
    /// the destination for [`UnreachableCode::Port`] and from our tunnel address otherwise,
    /// so the client's connect fails at once. Does nothing when the flow was accepted
    /// already.
    pub fn refuse_flow(&mut self, request: FlowRequest, how: Refusal) {
        let key = (request.local, request.remote);
        if self.by_tuple.contains_key(&key) {
            return;
        }
        self.forget_flow(key);
        match how {
            Refusal::Reset => {
                if let Some(rst) = tcp::reset_for(&request.syn) {
                    self.stats.resets_sent += 1;
                    self.queue_reply(request.local, request.remote, rst);
                }
            }
            Refusal::Unreachable(code) => {
                let (SocketAddr::V4(local), SocketAddr::V4(remote)) =
                    (request.local, request.remote)
                else {
                    return;
                };
                let mut quote = [0u8; ICMP_QUOTE_LEN];
                let ip = Ipv4Repr {
                    src_addr: *remote.ip(),
                    dst_addr: *local.ip(),
                    protocol: IpProtocol::Tcp,
                    payload_len: request.syn.buffer_len(),
                    ttl: TTL,
                };
                ip.emit(&mut Ipv4Packet::new_unchecked(&mut quote[..]));
                let transport = &mut quote[ipv4::HEADER_LEN..];
                transport[0..2].copy_from_slice(&remote.port().to_be_bytes());
                transport[2..4].copy_from_slice(&local.port().to_be_bytes());
                transport[4..8].copy_from_slice(&request.syn.seq_number.0.to_be_bytes());
                self.queue_unreachable(*local.ip(), *remote.ip(), code, quote);
            }
        }
    }

    /// Queues a UDP datagram from any `local` address and port to `remote`: in exit mode,
    /// the answer to a datagram [`udp_recv`](Self::udp_recv) delivered, from the address the
    /// client wrote to (its [`UdpDatagram::local`]). With exit mode off, `local` must be a
    /// bound port of our tunnel address, as for [`udp_send`](Self::udp_send).
    ///
    /// # Errors
    ///
    /// [`StackError::Unsupported`] for IPv6, [`StackError::NoLocalAddress`] for a `local`
    /// that is not unicast (or, with exit mode off, not ours), [`StackError::NotBound`] for
    /// port 0 (or, with exit mode off, an unbound port), [`StackError::NoRoute`] when the
    /// tunnel does not reach `remote`, and as [`udp_send`](Self::udp_send) for the size and
    /// the queue.
    pub fn udp_send_from(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        payload: &[u8],
    ) -> Result<(), StackError> {
        let (SocketAddr::V4(local), SocketAddr::V4(remote_v4)) = (local, remote) else {
            return Err(StackError::Unsupported);
        };
        let ours = Some(*local.ip()) == self.tunnel.local_ipv4();
        if !is_unicast(*local.ip()) || (!self.exit_mode && !ours) {
            return Err(StackError::NoLocalAddress);
        }
        if local.port() == 0 || (!self.exit_mode && !self.udp_ports.contains(&local.port())) {
            return Err(StackError::NotBound);
        }
        if !is_unicast(*remote_v4.ip()) || !self.tunnel.routes_to(remote.ip()) {
            return Err(StackError::NoRoute);
        }
        self.queue_udp(*local.ip(), local.port(), remote_v4, payload)
    }

    /// Refuses a datagram [`udp_recv`](Self::udp_recv) delivered: sends the ICMP destination
    /// unreachable for it, from its destination for [`UnreachableCode::Port`] (what a host
    /// with nothing on the port does) and from our tunnel address otherwise. The quote is a
    /// rebuilt IPv4 and UDP header (addresses, ports and length; no checksum).
    pub fn udp_refuse(&mut self, datagram: &UdpDatagram, code: UnreachableCode) {
        let (SocketAddr::V4(local), SocketAddr::V4(remote)) = (datagram.local, datagram.remote)
        else {
            return;
        };
        let udp_len = (udp::HEADER_LEN + datagram.payload.len()).min(Ipv4Repr::MAX_PAYLOAD_LEN);
        let mut quote = [0u8; ICMP_QUOTE_LEN];
        let ip = Ipv4Repr {
            src_addr: *remote.ip(),
            dst_addr: *local.ip(),
            protocol: IpProtocol::Udp,
            payload_len: udp_len,
            ttl: TTL,
        };
        ip.emit(&mut Ipv4Packet::new_unchecked(&mut quote[..]));
        let transport = &mut quote[ipv4::HEADER_LEN..];
        transport[0..2].copy_from_slice(&remote.port().to_be_bytes());
        transport[2..4].copy_from_slice(&local.port().to_be_bytes());
        let len = u16::try_from(udp_len).unwrap_or(u16::MAX);
        transport[4..6].copy_from_slice(&len.to_be_bytes());
        self.queue_unreachable(*local.ip(), *remote.ip(), code, quote);
    }

    /// Queues an ICMP destination unreachable to `client` about a packet it sent to
    /// `destination`.
    fn queue_unreachable(
        &mut self,
        destination: Ipv4Addr,
        client: Ipv4Addr,
        code: UnreachableCode,
        quote: [u8; ICMP_QUOTE_LEN],
    ) {
        if !is_unicast(client) {
            return;
        }
        if self.icmp_out.len() >= MAX_PENDING_ICMP {
            self.stats.icmp_unreachable_dropped += 1;
            return;
        }
        let src = if code.sent_by_destination() {
            destination
        } else {
            self.tunnel.local_ipv4().unwrap_or(destination)
        };
        self.icmp_out.push_back(IcmpError {
            src,
            dst: client,
            code: code.code(),
            quote,
        });
    }

    /// Forgets the flow request of `key`, queued or offered.
    fn forget_flow(&mut self, key: (SocketAddr, SocketAddr)) {
        if let Some(pending) = self.flows.remove(&key)
            && !pending.offered
        {
            self.flow_queue.retain(|k| *k != key);
        }
    }

    /// Exit mode: a segment from `remote` to `local` that no socket took. A new SYN becomes a
    /// flow request; returns the reset to send for anything else.
    fn offer_flow(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        repr: &TcpRepr<'_>,
    ) -> Option<TcpRepr<'static>> {
        let key = (local, remote);
        if repr.control == TcpControl::Rst {
            // The client gave up on a flow not answered yet.
            self.forget_flow(key);
            return None;
        }
        if repr.control != TcpControl::Syn || repr.ack_number.is_some() {
            return self.reset_for_no_socket(repr);
        }
        let syn = TcpRepr {
            payload: &[],
            sack_ranges: [None; erebus_wire::tcp::MAX_SACK_BLOCKS],
            ..*repr
        };
        if let Some(pending) = self.flows.get_mut(&key) {
            if now.saturating_duration_since(pending.since) < FLOW_REQUEST_TIMEOUT {
                // A retransmission (or, before the caller saw it, a new attempt: the latest
                // SYN is the one to answer).
                if !pending.offered {
                    pending.request.syn = syn;
                }
                self.stats.flow_syns_absorbed += 1;
                return None;
            }
            self.forget_flow(key);
        }
        if self.flows.len() >= MAX_PENDING_FLOWS {
            self.flows
                .retain(|_, p| now.saturating_duration_since(p.since) < FLOW_REQUEST_TIMEOUT);
            let flows = &self.flows;
            self.flow_queue.retain(|k| flows.contains_key(k));
        }
        if self.flows.len() >= MAX_PENDING_FLOWS {
            self.stats.flows_overflowed += 1;
            return self.reset_for_no_socket(repr);
        }
        self.flows.insert(
            key,
            PendingFlow {
                request: FlowRequest { local, remote, syn },
                offered: false,
                since: now,
            },
        );
        self.flow_queue.push_back(key);
        self.stats.flow_requests += 1;
        None
    }

    /// The reset for a segment that belongs to no socket (none for a reset), counted.
    fn reset_for_no_socket(&mut self, repr: &TcpRepr<'_>) -> Option<TcpRepr<'static>> {
        let reply = tcp::reset_for(repr);
        if reply.is_some() {
            self.stats.resets_sent += 1;
        }
        reply
    }

    /// Binds a UDP port of our tunnel address, so datagrams to it are kept for
    /// [`udp_recv`](Self::udp_recv).
    ///
    /// # Errors
    ///
    /// [`StackError::PortInUse`] when it is bound already.
    pub fn udp_bind(&mut self, port: u16) -> Result<(), StackError> {
        if port == 0 || !self.udp_ports.insert(port) {
            return Err(StackError::PortInUse);
        }
        Ok(())
    }

    /// Unbinds a UDP port; datagrams to it are dropped from now on (in exit mode: delivered
    /// as for any destination), and queued ones discarded (in exit mode: those to our tunnel
    /// address).
    pub fn udp_unbind(&mut self, port: u16) {
        self.udp_ports.remove(&port);
        let ours = self.tunnel.local_ipv4().map(IpAddr::V4);
        let exit_mode = self.exit_mode;
        self.udp_in
            .retain(|d| d.local_port != port || (exit_mode && Some(d.local.ip()) != ours));
    }

    /// Whether a UDP port is bound.
    pub fn udp_is_bound(&self, port: u16) -> bool {
        self.udp_ports.contains(&port)
    }

    /// Queues a UDP datagram from our `local_port` to `remote`; it goes out with the next
    /// [`poll_egress`](Self::poll_egress).
    ///
    /// # Errors
    ///
    /// No route, no address, an unbound port, a payload over the MTU, or a full queue.
    pub fn udp_send(
        &mut self,
        local_port: u16,
        remote: SocketAddr,
        payload: &[u8],
    ) -> Result<(), StackError> {
        if !self.udp_ports.contains(&local_port) {
            return Err(StackError::NotBound);
        }
        if !self.tunnel.routes_to(remote.ip()) {
            return Err(StackError::NoRoute);
        }
        let SocketAddr::V4(remote) = remote else {
            return Err(StackError::Unsupported);
        };
        let local_ip = self.tunnel.local_ipv4().ok_or(StackError::NoLocalAddress)?;
        self.queue_udp(local_ip, local_port, remote, payload)
    }

    /// Builds the IPv4 packet of a datagram and queues it for sending.
    fn queue_udp(
        &mut self,
        local_ip: Ipv4Addr,
        local_port: u16,
        remote: SocketAddrV4,
        payload: &[u8],
    ) -> Result<(), StackError> {
        if self.udp_out.len() >= MAX_UDP_QUEUE {
            return Err(StackError::QueueFull);
        }
        let repr = UdpRepr {
            src_port: local_port,
            dst_port: remote.port(),
        };
        let ip = Ipv4Repr {
            src_addr: local_ip,
            dst_addr: *remote.ip(),
            protocol: IpProtocol::Udp,
            payload_len: repr.buffer_len(payload.len()),
            ttl: TTL,
        };
        if ip.buffer_len() > self.mtu || payload.len() > UdpRepr::MAX_PAYLOAD_LEN {
            return Err(StackError::TooLarge);
        }
        let mut packet = vec![0; ip.buffer_len()];
        ip.emit(&mut Ipv4Packet::new_unchecked(&mut packet[..]));
        let mut datagram = UdpPacket::new_unchecked(&mut packet[ipv4::HEADER_LEN..]);
        repr.emit(
            &mut datagram,
            IpAddr::V4(local_ip),
            IpAddr::V4(*remote.ip()),
            payload.len(),
            |out| out.copy_from_slice(payload),
        );
        self.udp_out.push_back(packet);
        Ok(())
    }

    /// The next datagram received on a bound port, or in exit mode for any destination (see
    /// [`UdpDatagram::local`]). At most 256 wait; more are dropped.
    pub fn udp_recv(&mut self) -> Option<UdpDatagram> {
        self.udp_in.pop_front()
    }

    /// When the stack next needs [`poll_egress`](Self::poll_egress) without new input; an
    /// instant in the past means "now".
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.replies.is_empty()
            || !self.udp_out.is_empty()
            || !self.echo_replies.is_empty()
            || !self.icmp_out.is_empty()
        {
            return Some(Instant::ZERO);
        }
        // A socket that is not due has not changed since it filed its timer; a due one is
        // asked.
        let due = self
            .schedule
            .due()
            .filter_map(|h| self.sockets.get(&h).and_then(TcpSocket::poll_at))
            .min();
        [due, self.schedule.earliest_timer()]
            .into_iter()
            .flatten()
            .min()
    }

    // -----------------------------------------------------------------------------------------
    // Ingress.

    /// Processes one inner IP packet from the tunnel.
    ///
    /// # Errors
    ///
    /// Why the packet was dropped; nothing changed then.
    pub fn ingress(&mut self, now: Instant, packet: &[u8]) -> Result<(), IngressError> {
        self.now = self.now.max(now);
        self.stats.rx_packets += 1;
        let result = self.ingress_inner(now, packet);
        if result.is_err() {
            self.stats.rx_dropped += 1;
        }
        result
    }

    fn ingress_inner(&mut self, now: Instant, packet: &[u8]) -> Result<(), IngressError> {
        match erebus_wire::ip_version(packet)? {
            erebus_wire::IpVersion::V4 => {}
            erebus_wire::IpVersion::V6 => return Err(IngressError::Unsupported),
        }
        let ip_packet = Ipv4Packet::new_checked(packet)?;
        let ip = Ipv4Repr::parse(&ip_packet)?;
        let ours = Some(ip.dst_addr) == self.tunnel.local_ipv4();
        let exit_destination = self.exit_mode && self.is_exit_destination(ip.dst_addr);
        if !ours && !exit_destination {
            return Err(IngressError::NotForUs);
        }
        if self.exit_mode && !is_unicast(ip.src_addr) {
            return Err(IngressError::Unsupported);
        }
        let payload = ip_packet.payload();
        match ip.protocol {
            IpProtocol::Tcp => self.ingress_tcp(now, ip.src_addr, ip.dst_addr, ours, payload),
            IpProtocol::Icmp => self.ingress_icmp(ip.src_addr, ip.dst_addr, ours, payload),
            IpProtocol::Udp => self.ingress_udp(ip.src_addr, ip.dst_addr, ours, payload),
            _ => Err(IngressError::Unsupported),
        }
    }

    /// Exit mode: whether a packet to `dst` (not our address) may be taken: a unicast address
    /// that is not the broadcast address of the tunnel's subnet.
    fn is_exit_destination(&self, dst: Ipv4Addr) -> bool {
        if !is_unicast(dst) {
            return false;
        }
        match self.tunnel.ipv4 {
            Some(net) if net.prefix() <= 30 && net.contains(IpAddr::V4(dst)) => {
                let host_bits = u32::MAX >> net.prefix();
                u32::from(dst) & host_bits != host_bits
            }
            _ => true,
        }
    }

    fn ingress_tcp(
        &mut self,
        now: Instant,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ours: bool,
        segment: &[u8],
    ) -> Result<(), IngressError> {
        let tcp_packet = TcpPacket::new_checked(segment)?;
        let repr = TcpRepr::parse(&tcp_packet, IpAddr::V4(src), IpAddr::V4(dst))?;
        let remote = SocketAddr::V4(SocketAddrV4::new(src, repr.src_port));
        let local = SocketAddr::V4(SocketAddrV4::new(dst, repr.dst_port));
        let connected = self.by_tuple.get(&(local, remote)).copied();
        // Listeners listen on our address only (in exit mode other destinations come here).
        let handle = connected.or_else(|| {
            ours.then(|| self.listeners.get(&repr.dst_port).copied())
                .flatten()
        });
        let share = self.receive_share();
        let reply = match handle.and_then(|h| self.sockets.get_mut(&h).map(|s| (h, s))) {
            Some((handle, socket)) => {
                socket.set_receive_share(share);
                let reply = socket.process(now, remote, local, &repr);
                self.schedule.touch(handle);
                // A socket found under its 4-tuple that is still connected to the same peer
                // keeps that key, and filing it again would change nothing: skip it on the
                // path every data segment takes. Anything else (a listener that took a SYN,
                // a reset back to listening) is filed anew.
                let same_key = connected.is_some()
                    && socket.state() != tcp::State::Listen
                    && socket.local_endpoint() == Some(local)
                    && socket.remote_endpoint() == Some(remote);
                if !same_key {
                    self.file(handle);
                }
                reply
            }
            None => match self.time_wait_answer(now, local, remote, &repr) {
                Some(answer) => answer,
                None if self.exit_mode => self.offer_flow(now, local, remote, &repr),
                None => self.reset_for_no_socket(&repr),
            },
        };
        if let Some(reply) = reply {
            self.queue_reply(local, remote, reply);
        }
        Ok(())
    }

    fn ingress_udp(
        &mut self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ours: bool,
        datagram: &[u8],
    ) -> Result<(), IngressError> {
        let packet = UdpPacket::new_checked(datagram)?;
        let repr = UdpRepr::parse(&packet, IpAddr::V4(src), IpAddr::V4(dst))?;
        let bound = ours && self.udp_ports.contains(&repr.dst_port);
        if !(bound || self.exit_mode) || self.udp_in.len() >= MAX_UDP_QUEUE {
            return Err(IngressError::UdpNotDelivered);
        }
        self.stats.udp_rx += 1;
        self.udp_in.push_back(UdpDatagram {
            local_port: repr.dst_port,
            local: SocketAddr::V4(SocketAddrV4::new(dst, repr.dst_port)),
            remote: SocketAddr::V4(SocketAddrV4::new(src, repr.src_port)),
            payload: packet.payload().to_vec(),
        });
        Ok(())
    }

    fn ingress_icmp(
        &mut self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ours: bool,
        message: &[u8],
    ) -> Result<(), IngressError> {
        let packet = IcmpPacket::new_checked(message)?;
        let repr = IcmpRepr::parse(&packet)?;
        match repr {
            IcmpRepr::EchoRequest { .. } if !ours => {
                // Exit mode: answering for another host would pretend it is alive.
                self.stats.exit_echo_dropped += 1;
                return Err(IngressError::NotForUs);
            }
            IcmpRepr::EchoRequest {
                ident,
                seq_no,
                data,
            } => return self.answer_echo(src, dst, ident, seq_no, data),
            IcmpRepr::DstUnreachable { .. } => {}
            _ => return Err(IngressError::Unsupported),
        }
        let original = repr.original().ok_or(IngressError::Unsupported)?;
        if original.protocol != IpProtocol::Tcp {
            return Err(IngressError::Unsupported);
        }
        let (src_port, dst_port) = original.ports().ok_or(IngressError::Unsupported)?;
        let local = SocketAddr::V4(SocketAddrV4::new(original.src_addr, src_port));
        let remote = SocketAddr::V4(SocketAddrV4::new(original.dst_addr, dst_port));
        if let Some(&handle) = self.by_tuple.get(&(local, remote))
            && let Some(socket) = self.sockets.get_mut(&handle)
        {
            socket.on_unreachable();
            self.schedule.touch(handle);
        }
        Ok(())
    }

    /// Queues the reply to an echo request from `remote` to our address `local`.
    fn answer_echo(
        &mut self,
        remote: Ipv4Addr,
        local: Ipv4Addr,
        ident: u16,
        seq_no: u16,
        data: &[u8],
    ) -> Result<(), IngressError> {
        // A request from a broadcast, multicast or unspecified source is invalid
        // (RFC 1122 section 3.2.1.3); answering it would send to many hosts or to none.
        if remote.is_broadcast() || remote.is_multicast() || remote.is_unspecified() {
            return Err(IngressError::Unsupported);
        }
        // Without fragmentation, a reply that exceeds the MTU could never be sent.
        let reply = IcmpRepr::EchoReply {
            ident,
            seq_no,
            data,
        };
        if ipv4::HEADER_LEN + reply.buffer_len() > self.mtu {
            return Err(IngressError::Unsupported);
        }
        if self.echo_replies.len() >= MAX_PENDING_ECHO_REPLIES {
            self.stats.echo_dropped += 1;
            return Ok(());
        }
        let mut echoed = self.spare_echo_data.pop().unwrap_or_default();
        echoed.clear();
        echoed.extend_from_slice(data);
        self.echo_replies.push_back(EchoReply {
            local,
            remote,
            ident,
            seq_no,
            data: echoed,
        });
        self.stats.echo_rx += 1;
        Ok(())
    }

    /// Fails a pending connection attempt to `remote` at once, for a caller that learned
    /// from elsewhere that it is unreachable (an ICMP error the tunnel consumed, say).
    pub fn fail_unreachable(&mut self, remote: SocketAddr) {
        for (&handle, socket) in &mut self.sockets {
            if socket.remote_endpoint() == Some(remote) {
                socket.on_unreachable();
                self.schedule.touch(handle);
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Egress.

    /// Writes the next outgoing IPv4 packet into `buf` and returns its length, or `None` when
    /// nothing is due. Call it until it returns `None`. `buf` must hold [`mtu`](Self::mtu)
    /// bytes; a segment that does not fit is counted and treated as lost.
    pub fn poll_egress(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        self.now = self.now.max(now);
        while let Some(packet) = self.udp_out.pop_front() {
            if let Some(out) = buf.get_mut(..packet.len()) {
                out.copy_from_slice(&packet);
                self.stats.tx_packets += 1;
                self.stats.udp_tx += 1;
                return Some(packet.len());
            }
            self.stats.tx_too_big += 1;
        }
        while let Some(reply) = self.echo_replies.pop_front() {
            let written = write_echo_reply(buf, &reply);
            self.spare_echo_data.push(reply.data);
            if let Some(len) = written {
                self.stats.tx_packets += 1;
                self.stats.echo_tx += 1;
                return Some(len);
            }
            self.stats.tx_too_big += 1;
        }
        while let Some((local, remote, reply)) = self.replies.pop_front() {
            if let Some(len) = write_packet(buf, local, remote, &reply) {
                self.stats.tx_packets += 1;
                return Some(len);
            }
            self.stats.tx_too_big += 1;
        }
        while let Some(error) = self.icmp_out.pop_front() {
            if let Some(len) = write_unreachable(buf, &error) {
                self.stats.tx_packets += 1;
                self.stats.icmp_unreachable_sent += 1;
                return Some(len);
            }
            self.stats.tx_too_big += 1;
        }
        // Only due sockets are dispatched: those that received a segment, were used, or
        // whose timer expired. Each that sends goes to the back of the queue, so busy sockets
        // take turns.
        self.schedule.expire(now);
        let share = self.receive_share();
        while let Some(handle) = self.schedule.next_due() {
            let Some(socket) = self.sockets.get_mut(&handle) else {
                self.schedule.idle(handle, None);
                continue;
            };
            socket.set_receive_share(share);
            let endpoints = (socket.local_endpoint(), socket.remote_endpoint());
            let dispatched = match endpoints {
                (Some(local), Some(remote)) => {
                    socket.dispatch(now, |repr| write_packet(buf, local, remote, repr))
                }
                _ => None,
            };
            match dispatched {
                Some(Some(len)) => {
                    self.schedule.sent(handle);
                    self.stats.tx_packets += 1;
                    return Some(len);
                }
                // The segment did not fit and counts as lost; the socket goes on with the next.
                Some(None) => {
                    self.schedule.sent(handle);
                    self.stats.tx_too_big += 1;
                }
                None => {
                    let deadline = socket.poll_at();
                    self.schedule.idle(handle, deadline);
                }
            }
        }
        None
    }

    // -----------------------------------------------------------------------------------------
    // Bookkeeping.

    fn new_handle(&mut self) -> SocketHandle {
        let handle = SocketHandle(self.next_handle);
        self.next_handle += 1;
        handle
    }

    fn socket_seed(&self, handle: SocketHandle) -> Seed {
        self.seed.child(&format!("net.tcp.{}", handle.0))
    }

    fn free_port(&mut self, ip: Ipv4Addr, remote: SocketAddr) -> Result<SocketAddr, StackError> {
        let span = u32::from(u16::MAX - EPHEMERAL_FIRST) + 1;
        for _ in 0..span {
            let port = self.next_port;
            self.next_port = if port == u16::MAX {
                EPHEMERAL_FIRST
            } else {
                port + 1
            };
            let local = SocketAddr::V4(SocketAddrV4::new(ip, port));
            if !self.by_tuple.contains_key(&(local, remote)) && !self.listeners.contains_key(&port)
            {
                return Ok(local);
            }
        }
        // Keep the generator in use so that port choice stays a function of the seed.
        let _ = self.rng.next_u32();
        Err(StackError::PortsExhausted)
    }

    /// Files `handle` under its current demultiplexing key (a listener moves to its 4-tuple
    /// once a SYN arrives, and back on a reset).
    fn file(&mut self, handle: SocketHandle) {
        let Some(socket) = self.sockets.get(&handle) else {
            return;
        };
        let listening = socket.state() == tcp::State::Listen;
        let tuple = match (socket.local_endpoint(), socket.remote_endpoint()) {
            (Some(local), Some(remote)) if !listening => Some((local, remote)),
            _ => None,
        };
        let port = socket.local_endpoint().map(|l| l.port());
        if self.tuple_of.get(&handle).copied() != tuple {
            if let Some(old) = self.tuple_of.remove(&handle) {
                self.by_tuple.remove(&old);
            }
            if let Some(key) = tuple {
                self.by_tuple.insert(key, handle);
                self.tuple_of.insert(handle, key);
            }
        }
        if let Some(port) = port {
            if listening {
                self.listeners.insert(port, handle);
            } else if self.listeners.get(&port) == Some(&handle) {
                self.listeners.remove(&port);
            }
        }
    }

    fn unfile(&mut self, handle: SocketHandle) {
        if let Some(old) = self.tuple_of.remove(&handle) {
            self.by_tuple.remove(&old);
        }
        self.listeners.retain(|_, h| *h != handle);
    }

    fn remember_time_wait(&mut self, local: SocketAddr, remote: SocketAddr, entry: TimeWait) {
        let now = self.now;
        if self.time_wait.len() >= MAX_TIME_WAIT {
            self.time_wait.retain(|_, e| e.until > now);
        }
        if self.time_wait.len() >= MAX_TIME_WAIT
            && let Some(first) = self
                .time_wait
                .iter()
                .min_by_key(|(_, e)| e.until)
                .map(|(key, _)| *key)
        {
            self.time_wait.remove(&first);
        }
        self.time_wait.insert((local, remote), entry);
    }

    /// The answer to a segment for a connection removed in TIME-WAIT: `Some` with the ACK to
    /// send again (or nothing, for a reset), `None` when no such connection is remembered.
    fn time_wait_answer(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        repr: &TcpRepr<'_>,
    ) -> Option<Option<TcpRepr<'static>>> {
        let key = (local, remote);
        let time_wait = self.tcp_config.time_wait;
        let entry = self.time_wait.get_mut(&key)?;
        let new_syn = repr.control == TcpControl::Syn
            && repr.ack_number.is_none()
            && repr.seq_number > entry.ack;
        if now >= entry.until || new_syn {
            // Over, or a new connection, which may reuse the ports once its SYN is above
            // everything the old one used (RFC 1122 section 4.2.2.13): the connection is
            // forgotten and the segment is answered as for no socket. An older SYN is an old
            // duplicate, answered with the ACK below.
            self.time_wait.remove(&key);
            return None;
        }
        match repr.control {
            // Only a RST at the sequence number we expect ends TIME-WAIT (RFC 5961 section
            // 3.2, which RFC 9293 adopts); others are dropped unanswered, as Linux drops them
            // in TIME-WAIT (no window is left to challenge them in).
            TcpControl::Rst if repr.seq_number == entry.ack => {
                self.time_wait.remove(&key);
                return Some(None);
            }
            TcpControl::Rst => return Some(None),
            // The peer did not hear our final ACK: 2 MSL start again from its retransmission
            // (RFC 9293 section 3.10.7.4), which it may repeat for as long as it retries. Only
            // the FIN that ends where ours acknowledged: any other is answered, not obeyed.
            TcpControl::Fin if repr.seq_number + repr.segment_len() == entry.ack => {
                entry.until = now + time_wait;
            }
            _ => {}
        }
        let entry = *entry;
        self.stats.time_wait_acks += 1;
        Some(Some(TcpRepr {
            src_port: local.port(),
            dst_port: remote.port(),
            seq_number: entry.seq,
            ack_number: Some(entry.ack),
            window_len: 0,
            ..TcpRepr::default()
        }))
    }

    fn queue_reply(&mut self, local: SocketAddr, remote: SocketAddr, reply: TcpRepr<'static>) {
        if self.replies.len() < MAX_PENDING_REPLIES {
            self.replies.push_back((local, remote, reply));
        }
    }
}

/// Whether `ip` can be the source or destination of a flow: not broadcast, multicast or
/// unspecified.
fn is_unicast(ip: Ipv4Addr) -> bool {
    !(ip.is_broadcast() || ip.is_multicast() || ip.is_unspecified())
}

/// Writes the IPv4 packet carrying an ICMP destination unreachable into `buf`; `None` when it
/// does not fit.
fn write_unreachable(buf: &mut [u8], error: &IcmpError) -> Option<usize> {
    let icmp = IcmpRepr::DstUnreachable {
        code: error.code,
        next_hop_mtu: 0,
        original: &error.quote,
    };
    let ip = Ipv4Repr {
        src_addr: error.src,
        dst_addr: error.dst,
        protocol: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        ttl: TTL,
    };
    let total = ip.buffer_len();
    let out = buf.get_mut(..total)?;
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut *out));
    icmp.emit(&mut IcmpPacket::new_unchecked(&mut out[ipv4::HEADER_LEN..]));
    Some(total)
}

/// Writes the IPv4 packet carrying an echo reply into `buf`; `None` when it does not fit.
fn write_echo_reply(buf: &mut [u8], reply: &EchoReply) -> Option<usize> {
    let icmp = IcmpRepr::EchoReply {
        ident: reply.ident,
        seq_no: reply.seq_no,
        data: &reply.data,
    };
    let ip = Ipv4Repr {
        src_addr: reply.local,
        dst_addr: reply.remote,
        protocol: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        ttl: TTL,
    };
    let total = ip.buffer_len();
    let out = buf.get_mut(..total)?;
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut *out));
    icmp.emit(&mut IcmpPacket::new_unchecked(&mut out[ipv4::HEADER_LEN..]));
    Some(total)
}

/// Writes an IPv4 packet carrying `repr` from `local` to `remote` into `buf`; `None` when it
/// does not fit or the addresses are not IPv4.
fn write_packet(
    buf: &mut [u8],
    local: SocketAddr,
    remote: SocketAddr,
    repr: &TcpRepr<'_>,
) -> Option<usize> {
    let (SocketAddr::V4(local), SocketAddr::V4(remote)) = (local, remote) else {
        return None;
    };
    let ip = Ipv4Repr {
        src_addr: *local.ip(),
        dst_addr: *remote.ip(),
        protocol: IpProtocol::Tcp,
        payload_len: repr.buffer_len(),
        ttl: TTL,
    };
    let total = ip.buffer_len();
    let out = buf.get_mut(..total)?;
    let mut packet = Ipv4Packet::new_unchecked(&mut *out);
    ip.emit(&mut packet);
    let mut segment = TcpPacket::new_unchecked(&mut out[ipv4::HEADER_LEN..]);
    repr.emit(
        &mut segment,
        IpAddr::V4(*local.ip()),
        IpAddr::V4(*remote.ip()),
    );
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use erebus_sansio::tunnel::IpNet;
    use erebus_wire::tcp::{SeqNumber, TcpControl};

    fn v4(d: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 8, 0, d)
    }

    fn tunnel(local: u8) -> TunnelConfig {
        TunnelConfig {
            ipv4: IpNet::new(IpAddr::V4(v4(local)), 24),
            mtu: 1400,
            ..TunnelConfig::default()
        }
    }

    fn packet_from(src: SocketAddr, dst: SocketAddr, repr: &TcpRepr<'_>) -> Vec<u8> {
        let mut buf = vec![0u8; 1500];
        let len = write_packet(&mut buf, src, dst, repr).unwrap();
        buf.truncate(len);
        buf
    }

    fn parse(packet: &[u8]) -> (Ipv4Repr, TcpRepr<'_>) {
        let ip_packet = Ipv4Packet::new_checked(packet).unwrap();
        let ip = Ipv4Repr::parse(&ip_packet).unwrap();
        let tcp = TcpPacket::new_checked(ip_packet.payload()).unwrap();
        let repr = TcpRepr::parse(&tcp, IpAddr::V4(ip.src_addr), IpAddr::V4(ip.dst_addr)).unwrap();
        (ip, repr)
    }

    fn addr(d: u8, port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(v4(d), port))
    }

    #[test]
    fn every_idle_socket_still_retransmits_its_syn_when_its_timer_expires() {
        let mut stack = Stack::new(&tunnel(2), TcpConfig::default(), &Seed::from_byte(1));
        let mut buf = [0u8; 1500];
        let handles: Vec<_> = (0..1000u16)
            .map(|i| stack.connect(Instant::ZERO, addr(1, 1000 + i)).unwrap())
            .collect();
        let mut first_syns = 0;
        while stack.poll_egress(Instant::ZERO, &mut buf).is_some() {
            first_syns += 1;
        }
        assert_eq!(first_syns, 1000);
        // Nothing is due until the retransmission timers, which all fall together.
        let rto = stack.poll_timeout().unwrap();
        assert!(rto > Instant::ZERO);
        assert_eq!(
            stack.poll_egress(rto - Duration::from_millis(1), &mut buf),
            None
        );
        let mut again = BTreeSet::new();
        while let Some(len) = stack.poll_egress(rto, &mut buf) {
            let (_, repr) = parse(&buf[..len]);
            assert_eq!(repr.control, TcpControl::Syn);
            again.insert(repr.dst_port);
        }
        assert_eq!(again.len(), 1000, "every socket retransmitted once");
        // A removed socket's timer is forgotten with it.
        for handle in &handles[1..] {
            stack.remove(*handle);
        }
        let next = stack.poll_timeout().unwrap();
        let mut left = 0;
        while stack.poll_egress(next, &mut buf).is_some() {
            left += 1;
        }
        // The first socket's second retransmission, and nothing for the removed ones.
        assert!(left <= 1, "{left}");
    }

    #[test]
    fn udp_datagrams_go_both_ways_between_two_stacks() {
        let mut a = Stack::new(&tunnel(2), TcpConfig::default(), &Seed::from_byte(1));
        let mut b = Stack::new(&tunnel(1), TcpConfig::default(), &Seed::from_byte(2));
        assert_eq!(
            a.udp_send(5353, addr(1, 53), b"q"),
            Err(StackError::NotBound)
        );
        a.udp_bind(5353).unwrap();
        assert_eq!(a.udp_bind(5353), Err(StackError::PortInUse));
        assert_eq!(
            a.udp_send(5353, "192.0.2.1:53".parse().unwrap(), b"q"),
            Err(StackError::NoRoute)
        );
        assert_eq!(
            a.udp_send(5353, addr(1, 53), &[0; 1400]),
            Err(StackError::TooLarge)
        );
        a.udp_send(5353, addr(1, 53), b"query").unwrap();
        assert_eq!(a.poll_timeout(), Some(Instant::ZERO));
        let mut buf = [0u8; 1400];
        let len = a.poll_egress(Instant::ZERO, &mut buf).unwrap();
        // Nothing listens on b's port 53 yet: the datagram is refused and counted.
        assert_eq!(
            b.ingress(Instant::ZERO, &buf[..len]),
            Err(IngressError::UdpNotDelivered)
        );
        b.udp_bind(53).unwrap();
        b.ingress(Instant::ZERO, &buf[..len]).unwrap();
        let got = b.udp_recv().unwrap();
        assert_eq!(
            (got.local_port, got.remote, &got.payload[..]),
            (53, addr(2, 5353), &b"query"[..])
        );
        b.udp_send(53, got.remote, b"answer").unwrap();
        let len = b.poll_egress(Instant::ZERO, &mut buf).unwrap();
        a.ingress(Instant::ZERO, &buf[..len]).unwrap();
        assert_eq!(a.udp_recv().unwrap().payload, b"answer");
        // A corrupted checksum is a drop, not a delivery.
        b.udp_send(53, got.remote, b"again").unwrap();
        let len = b.poll_egress(Instant::ZERO, &mut buf).unwrap();
        buf[len - 1] ^= 1;
        assert!(matches!(
            a.ingress(Instant::ZERO, &buf[..len]),
            Err(IngressError::Malformed(_))
        ));
        a.udp_unbind(5353);
        assert!(!a.udp_is_bound(5353));
        assert_eq!(a.stats().udp_rx, 1);
    }

    #[test]
    fn mss_follows_the_tunnels_mss_limit() {
        let mut config = tunnel(2);
        config.tcp_mss = Some(1200);
        let mut stack = Stack::new(&config, TcpConfig::default(), &Seed::from_byte(1));
        assert_eq!(stack.tcp_config().mss, 1200);
        let mut buf = [0u8; 1400];
        stack.connect(Instant::ZERO, addr(1, 80)).unwrap();
        let len = stack.poll_egress(Instant::ZERO, &mut buf).unwrap();
        let (_, syn) = parse(&buf[..len]);
        assert_eq!(syn.max_seg_size, Some(1200));
        // A limit above what the MTU allows changes nothing.
        config.tcp_mss = Some(9000);
        let stack = Stack::new(&config, TcpConfig::default(), &Seed::from_byte(1));
        assert_eq!(stack.tcp_config().mss, 1360);
    }

    #[test]
    fn mss_follows_the_tunnel_mtu() {
        let stack = Stack::new(&tunnel(2), TcpConfig::default(), &Seed::from_byte(1));
        assert_eq!(stack.tcp_config().mss, 1360);
        assert_eq!(stack.mtu(), 1400);
    }

    #[test]
    fn connect_checks_routes_and_sends_a_syn() {
        let mut stack = Stack::new(&tunnel(2), TcpConfig::default(), &Seed::from_byte(1));
        assert_eq!(
            stack.connect(Instant::ZERO, "192.0.2.1:80".parse().unwrap()),
            Err(StackError::NoRoute)
        );
        let handle = stack.connect(Instant::ZERO, addr(1, 80)).unwrap();
        assert_eq!(stack.poll_timeout(), Some(Instant::ZERO));
        let mut buf = [0u8; 1400];
        let len = stack.poll_egress(Instant::ZERO, &mut buf).unwrap();
        let (ip, syn) = parse(&buf[..len]);
        assert_eq!((ip.src_addr, ip.dst_addr), (v4(2), v4(1)));
        assert_eq!(syn.control, TcpControl::Syn);
        assert_eq!(syn.max_seg_size, Some(1360));
        assert_eq!(syn.dst_port, 80);
        assert!(syn.src_port >= EPHEMERAL_FIRST);
        assert_eq!(stack.poll_egress(Instant::ZERO, &mut buf), None);
        assert_eq!(
            stack.socket(handle).map(TcpSocket::state),
            Some(tcp::State::SynSent)
        );
    }

    #[test]
    fn segment_for_no_socket_gets_a_reset() {
        let mut stack = Stack::new(&tunnel(2), TcpConfig::default(), &Seed::from_byte(1));
        let peer = addr(1, 5555);
        let us = addr(2, 80);
        let syn = TcpRepr {
            src_port: 5555,
            dst_port: 80,
            control: TcpControl::Syn,
            seq_number: SeqNumber(100),
            window_len: 1000,
            ..TcpRepr::default()
        };
        stack
            .ingress(Instant::ZERO, &packet_from(peer, us, &syn))
            .unwrap();
        let mut buf = [0u8; 1400];
        let len = stack.poll_egress(Instant::ZERO, &mut buf).unwrap();
        let (_, rst) = parse(&buf[..len]);
        assert_eq!(rst.control, TcpControl::Rst);
        assert_eq!(rst.ack_number, Some(SeqNumber(101)));
        assert_eq!(stack.stats().resets_sent, 1);
        // A reset is never answered.
        let rst_in = TcpRepr {
            control: TcpControl::Rst,
            ..syn
        };
        stack
            .ingress(Instant::ZERO, &packet_from(peer, us, &rst_in))
            .unwrap();
        assert_eq!(stack.poll_egress(Instant::ZERO, &mut buf), None);
    }

    #[test]
    fn a_connection_removed_in_time_wait_still_acknowledges_the_peers_fin() {
        let config = TcpConfig {
            timestamps: false,
            ..TcpConfig::default()
        };
        let mut stack = Stack::new(&tunnel(2), config, &Seed::from_byte(1));
        let peer = addr(1, 80);
        let handle = stack.connect(Instant::ZERO, peer).unwrap();
        let mut buf = [0u8; 1400];
        let len = stack.poll_egress(Instant::ZERO, &mut buf).unwrap();
        let (_, syn) = parse(&buf[..len]);
        let us = SocketAddr::V4(SocketAddrV4::new(v4(2), syn.src_port));
        let from_peer = |seq: u32, ack: SeqNumber, control| TcpRepr {
            src_port: 80,
            dst_port: syn.src_port,
            control,
            seq_number: SeqNumber(seq),
            ack_number: Some(ack),
            window_len: 60_000,
            ..TcpRepr::default()
        };
        let syn_ack = TcpRepr {
            max_seg_size: Some(1360),
            ..from_peer(500, syn.seq_number + 1, TcpControl::Syn)
        };
        let at = Instant::from_millis;
        stack
            .ingress(at(1), &packet_from(peer, us, &syn_ack))
            .unwrap();
        while stack.poll_egress(at(1), &mut buf).is_some() {}
        // We close first: our FIN, then the peer's ACK and FIN in one segment.
        stack.socket_mut(handle).unwrap().close();
        let len = stack.poll_egress(at(2), &mut buf).unwrap();
        let (_, fin) = parse(&buf[..len]);
        assert_eq!(fin.control, TcpControl::Fin);
        let our_fin = fin.seq_number;
        let peer_fin = from_peer(501, our_fin + 1, TcpControl::Fin);
        stack
            .ingress(at(3), &packet_from(peer, us, &peer_fin))
            .unwrap();
        assert_eq!(
            stack.socket(handle).map(TcpSocket::state),
            Some(tcp::State::TimeWait)
        );
        // The proxy releases the socket before the final ACK went out: it still goes.
        stack.remove(handle);
        let len = stack.poll_egress(at(3), &mut buf).unwrap();
        let (_, last_ack) = parse(&buf[..len]);
        assert_eq!(last_ack.control, TcpControl::None);
        assert_eq!(last_ack.ack_number, Some(SeqNumber(502)));
        // The peer did not hear it and sends its FIN again: acknowledged again, not reset.
        stack
            .ingress(at(200), &packet_from(peer, us, &peer_fin))
            .unwrap();
        let len = stack.poll_egress(at(200), &mut buf).unwrap();
        let (_, again) = parse(&buf[..len]);
        assert_eq!(again.control, TcpControl::None);
        assert_eq!(again.ack_number, Some(SeqNumber(502)));
        assert_eq!(again.seq_number, our_fin + 1);
        assert_eq!(stack.stats().resets_sent, 0);
        assert_eq!(stack.stats().time_wait_acks, 1);
        // Once TIME-WAIT is over, the connection is forgotten.
        stack
            .ingress(at(61_000), &packet_from(peer, us, &peer_fin))
            .unwrap();
        let len = stack.poll_egress(at(61_000), &mut buf).unwrap();
        assert_eq!(parse(&buf[..len]).1.control, TcpControl::Rst);
        assert!(stack.time_wait.is_empty());
    }

    /// A connection closed by us, then by the peer, and removed from the stack in TIME-WAIT
    /// at 3 ms: what is left of it is the stack's TIME-WAIT record.
    struct RemovedInTimeWait {
        stack: Stack,
        peer: SocketAddr,
        us: SocketAddr,
        /// Our next sequence number (after our FIN).
        our_next: SeqNumber,
        /// The peer's next sequence number (after its FIN): what we acknowledge.
        peer_next: SeqNumber,
    }

    /// A segment's control, sequence and acknowledgment numbers: what the record's answers
    /// are checked by.
    type Answer = (TcpControl, SeqNumber, Option<SeqNumber>);

    impl RemovedInTimeWait {
        fn new() -> Self {
            let config = TcpConfig {
                timestamps: false,
                ..TcpConfig::default()
            };
            let mut stack = Stack::new(&tunnel(2), config, &Seed::from_byte(1));
            let peer = addr(1, 80);
            let handle = stack.connect(Instant::ZERO, peer).unwrap();
            let mut buf = [0u8; 1400];
            let len = stack.poll_egress(Instant::ZERO, &mut buf).unwrap();
            let (_, syn) = parse(&buf[..len]);
            let us = SocketAddr::V4(SocketAddrV4::new(v4(2), syn.src_port));
            let our_fin = syn.seq_number + 1;
            let mut this = Self {
                stack,
                peer,
                us,
                our_next: our_fin + 1,
                peer_next: SeqNumber(502),
            };
            let syn_ack = TcpRepr {
                ack_number: Some(our_fin),
                max_seg_size: Some(1360),
                ..this.segment(SeqNumber(500), TcpControl::Syn, &[])
            };
            this.exchange(1, &syn_ack);
            this.stack.socket_mut(handle).unwrap().close();
            let len = this
                .stack
                .poll_egress(Instant::from_millis(2), &mut buf)
                .unwrap();
            assert_eq!(parse(&buf[..len]).1.control, TcpControl::Fin);
            let fin = this.peer_fin();
            assert_eq!(this.exchange(3, &fin), [this.ack()]);
            assert_eq!(
                this.stack.socket(handle).map(TcpSocket::state),
                Some(tcp::State::TimeWait)
            );
            this.stack.remove(handle);
            assert_eq!(this.answers(3), []);
            assert_eq!(this.stack.time_wait.len(), 1);
            this
        }

        /// A segment from the peer, acknowledging our FIN.
        fn segment(
            &self,
            seq: SeqNumber,
            control: TcpControl,
            payload: &'static [u8],
        ) -> TcpRepr<'static> {
            TcpRepr {
                src_port: self.peer.port(),
                dst_port: self.us.port(),
                control,
                seq_number: seq,
                ack_number: Some(self.our_next),
                window_len: 60_000,
                payload,
                ..TcpRepr::default()
            }
        }

        fn peer_fin(&self) -> TcpRepr<'static> {
            self.segment(self.peer_next - 1, TcpControl::Fin, &[])
        }

        /// The record's ACK.
        fn ack(&self) -> Answer {
            (TcpControl::None, self.our_next, Some(self.peer_next))
        }

        /// The answer to a segment for no connection at all.
        fn reset(&self) -> Answer {
            (TcpControl::Rst, self.our_next, None)
        }

        /// What the stack sends at `ms` (after anything it received).
        fn answers(&mut self, ms: u64) -> Vec<Answer> {
            let mut buf = [0u8; 1400];
            let mut answers = Vec::new();
            while let Some(len) = self.stack.poll_egress(Instant::from_millis(ms), &mut buf) {
                let (_, repr) = parse(&buf[..len]);
                answers.push((repr.control, repr.seq_number, repr.ack_number));
            }
            answers
        }

        /// Hands the stack `repr` from the peer at `ms` and returns the answers.
        fn exchange(&mut self, ms: u64, repr: &TcpRepr<'_>) -> Vec<Answer> {
            let packet = packet_from(self.peer, self.us, repr);
            self.stack
                .ingress(Instant::from_millis(ms), &packet)
                .unwrap();
            self.answers(ms)
        }
    }

    /// The record answers as the socket did in TIME-WAIT (see `tcp::close_tests`): a
    /// retransmitted FIN, data, a pure ACK, an out-of-window segment, RSTs and SYNs, each
    /// with the exact answer and whether the record is kept.
    #[test]
    fn the_time_wait_record_answers_each_segment_as_the_socket_would() {
        let probe = RemovedInTimeWait::new();
        let (next, fin) = (probe.peer_next, probe.peer_fin());
        let cases: [(&str, TcpRepr<'static>, Vec<Answer>, bool); 8] = [
            ("retransmitted FIN", fin, vec![probe.ack()], true),
            (
                "data after the FIN",
                probe.segment(next, TcpControl::Psh, b"late"),
                vec![probe.ack()],
                true,
            ),
            (
                "pure ACK",
                probe.segment(next, TcpControl::None, &[]),
                vec![probe.ack()],
                true,
            ),
            (
                "out of window",
                probe.segment(next + 1_000_000, TcpControl::Psh, b"x"),
                vec![probe.ack()],
                true,
            ),
            // Only an exact RST ends TIME-WAIT (RFC 5961 section 3.2); another is dropped
            // without an answer, as Linux drops it in TIME-WAIT.
            (
                "exact RST",
                probe.segment(next, TcpControl::Rst, &[]),
                vec![],
                false,
            ),
            (
                "inexact RST",
                probe.segment(next + 100, TcpControl::Rst, &[]),
                vec![],
                true,
            ),
            // A SYN above everything the old connection used may open a new one (RFC 1122
            // section 4.2.2.13); with no listener, it is refused as for no connection.
            (
                "new SYN",
                TcpRepr {
                    ack_number: None,
                    ..probe.segment(next + 10_000, TcpControl::Syn, &[])
                },
                vec![(TcpControl::Rst, SeqNumber(0), Some(next + 10_001))],
                false,
            ),
            // An older one is an old duplicate: it gets the ACK, like any other segment.
            (
                "old SYN",
                TcpRepr {
                    ack_number: None,
                    ..probe.segment(next - 100, TcpControl::Syn, &[])
                },
                vec![probe.ack()],
                true,
            ),
        ];
        for (name, segment, answer, kept) in cases {
            let mut t = RemovedInTimeWait::new();
            assert_eq!(t.exchange(1_000, &segment), answer, "{name}");
            assert_eq!(t.stack.time_wait.len(), usize::from(kept), "{name}");
            // A kept record still acknowledges the FIN; a forgotten one is reset.
            let fin = t.peer_fin();
            let then = if kept { t.ack() } else { t.reset() };
            assert_eq!(t.exchange(1_001, &fin), [then], "{name}: then");
        }
    }

    /// RFC 9293 section 3.10.7.4: a retransmitted FIN in TIME-WAIT restarts the 2 MSL
    /// timeout, in the record as in the socket: the peer that sent it has not heard our ACK
    /// and may send it again for as long as its own retransmissions go on.
    #[test]
    fn a_retransmitted_fin_restarts_the_time_wait_record() {
        let mut t = RemovedInTimeWait::new();
        let fin = t.peer_fin();
        // The record was made at 3 ms, to last until 60 003 ms; the FIN at 30 s moves that to
        // 90 s.
        assert_eq!(t.exchange(30_000, &fin), [t.ack()]);
        let data = t.segment(t.peer_next, TcpControl::Psh, b"late");
        assert_eq!(t.exchange(60_003, &data), [t.ack()]);
        // Neither data nor a pure ACK moves it again.
        let ack = t.segment(t.peer_next, TcpControl::None, &[]);
        assert_eq!(t.exchange(89_999, &ack), [t.ack()]);
        assert_eq!(t.exchange(90_000, &fin), [t.reset()]);
        assert!(t.stack.time_wait.is_empty());
    }

    #[test]
    fn bad_packets_are_counted_drops() {
        let mut stack = Stack::new(&tunnel(2), TcpConfig::default(), &Seed::from_byte(1));
        let seg = TcpRepr {
            src_port: 1,
            dst_port: 2,
            ..TcpRepr::default()
        };
        let mut packet = packet_from(addr(1, 1), addr(2, 2), &seg);
        let last = packet.len() - 1;
        packet[last] ^= 0xff;
        assert!(matches!(
            stack.ingress(Instant::ZERO, &packet),
            Err(IngressError::Malformed(_))
        ));
        let other = packet_from(addr(1, 1), addr(3, 2), &seg);
        assert_eq!(
            stack.ingress(Instant::ZERO, &other),
            Err(IngressError::NotForUs)
        );
        assert!(stack.ingress(Instant::ZERO, &[0x45]).is_err());
        assert_eq!(stack.stats().rx_dropped, 3);
    }

    /// An IPv4 packet carrying `icmp` from `src` to `dst`.
    fn icmp_packet(src: Ipv4Addr, dst: Ipv4Addr, icmp: &IcmpRepr<'_>) -> Vec<u8> {
        let ip = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            protocol: IpProtocol::Icmp,
            payload_len: icmp.buffer_len(),
            ttl: 64,
        };
        let mut packet = vec![0u8; ip.buffer_len()];
        ip.emit(&mut Ipv4Packet::new_unchecked(&mut packet[..]));
        icmp.emit(&mut IcmpPacket::new_unchecked(
            &mut packet[ipv4::HEADER_LEN..],
        ));
        packet
    }

    #[test]
    fn echo_request_to_us_is_answered_with_the_same_id_seq_and_data() {
        let mut stack = Stack::new(&tunnel(2), TcpConfig::default(), &Seed::from_byte(1));
        let data: Vec<u8> = (0..56u8).collect();
        let request = IcmpRepr::EchoRequest {
            ident: 0x1234,
            seq_no: 7,
            data: &data,
        };
        stack
            .ingress(Instant::ZERO, &icmp_packet(v4(1), v4(2), &request))
            .unwrap();
        assert_eq!(stack.poll_timeout(), Some(Instant::ZERO));
        let mut buf = [0u8; 1400];
        let len = stack.poll_egress(Instant::ZERO, &mut buf).unwrap();
        assert_eq!(len, 20 + 8 + 56);

        // The reply checks out with the wire crate's parsers, checksums included.
        let ip_packet = Ipv4Packet::new_checked(&buf[..len]).unwrap();
        let ip = Ipv4Repr::parse(&ip_packet).unwrap();
        assert_eq!(
            (ip.src_addr, ip.dst_addr, ip.protocol, ip.ttl),
            (v4(2), v4(1), IpProtocol::Icmp, TTL)
        );
        let message = IcmpPacket::new_checked(ip_packet.payload()).unwrap();
        assert!(message.verify_checksum());
        assert_eq!(
            IcmpRepr::parse(&message).unwrap(),
            IcmpRepr::EchoReply {
                ident: 0x1234,
                seq_no: 7,
                data: &data,
            }
        );
        // The ICMP message is the request's with type 8 turned into 0, and the checksum
        // adjusted for that one change by hand (RFC 1624): 0x0800 more, end-around carry.
        let request_bytes = icmp_packet(v4(1), v4(2), &request);
        let mut expected = request_bytes[ipv4::HEADER_LEN..].to_vec();
        expected[0] = 0;
        let old = u32::from(u16::from_be_bytes([expected[2], expected[3]]));
        let sum = old + 0x0800;
        let adjusted = ((sum & 0xffff) + (sum >> 16)) as u16;
        expected[2..4].copy_from_slice(&adjusted.to_be_bytes());
        assert_eq!(&buf[ipv4::HEADER_LEN..len], &expected[..]);

        assert_eq!(stack.poll_egress(Instant::ZERO, &mut buf), None);
        let stats = *stack.stats();
        assert_eq!((stats.echo_rx, stats.echo_tx, stats.tx_packets), (1, 1, 1));
        assert_eq!(stats.rx_dropped, 0);
    }

    #[test]
    fn echo_requests_for_others_or_from_broadcast_are_dropped() {
        let mut stack = Stack::new(&tunnel(2), TcpConfig::default(), &Seed::from_byte(1));
        let request = IcmpRepr::EchoRequest {
            ident: 1,
            seq_no: 1,
            data: b"ping",
        };
        assert_eq!(
            stack.ingress(Instant::ZERO, &icmp_packet(v4(1), v4(3), &request)),
            Err(IngressError::NotForUs)
        );
        assert_eq!(
            stack.ingress(Instant::ZERO, &icmp_packet(v4(1), v4(255), &request)),
            Err(IngressError::NotForUs)
        );
        assert_eq!(
            stack.ingress(
                Instant::ZERO,
                &icmp_packet(Ipv4Addr::BROADCAST, v4(2), &request)
            ),
            Err(IngressError::Unsupported)
        );
        // A corrupted checksum is a drop too.
        let mut corrupted = icmp_packet(v4(1), v4(2), &request);
        let last = corrupted.len() - 1;
        corrupted[last] ^= 1;
        assert!(matches!(
            stack.ingress(Instant::ZERO, &corrupted),
            Err(IngressError::Malformed(_))
        ));
        // An echo reply is not answered.
        let reply = IcmpRepr::EchoReply {
            ident: 1,
            seq_no: 1,
            data: b"ping",
        };
        assert_eq!(
            stack.ingress(Instant::ZERO, &icmp_packet(v4(1), v4(2), &reply)),
            Err(IngressError::Unsupported)
        );
        let mut buf = [0u8; 1400];
        assert_eq!(stack.poll_egress(Instant::ZERO, &mut buf), None);
        assert_eq!(stack.stats().rx_dropped, 5);
        assert_eq!(stack.stats().echo_rx, 0);
    }

    #[test]
    fn echo_replies_are_bounded_and_reuse_their_buffers() {
        let mut stack = Stack::new(&tunnel(2), TcpConfig::default(), &Seed::from_byte(1));
        let data = [0xa5u8; 100];
        let flood = MAX_PENDING_ECHO_REPLIES as u16 + 5;
        for seq_no in 0..flood {
            let request = IcmpRepr::EchoRequest {
                ident: 9,
                seq_no,
                data: &data,
            };
            stack
                .ingress(Instant::ZERO, &icmp_packet(v4(1), v4(2), &request))
                .unwrap();
        }
        assert_eq!(stack.stats().echo_rx, MAX_PENDING_ECHO_REPLIES as u64);
        assert_eq!(stack.stats().echo_dropped, 5);
        let mut buf = [0u8; 1400];
        let mut seqs = Vec::new();
        while let Some(len) = stack.poll_egress(Instant::ZERO, &mut buf) {
            let ip_packet = Ipv4Packet::new_checked(&buf[..len]).unwrap();
            let icmp = IcmpPacket::new_checked(ip_packet.payload()).unwrap();
            seqs.push(icmp.echo_seq_no());
        }
        // The earliest requests are answered, in order.
        let expected: Vec<u16> = (0..MAX_PENDING_ECHO_REPLIES as u16).collect();
        assert_eq!(seqs, expected);
        assert_eq!(stack.spare_echo_data.len(), MAX_PENDING_ECHO_REPLIES);
        // A request too large to answer within the MTU is refused.
        let big = [0u8; 1400 - 28 + 1];
        let request = IcmpRepr::EchoRequest {
            ident: 9,
            seq_no: 0,
            data: &big,
        };
        assert_eq!(
            stack.ingress(Instant::ZERO, &icmp_packet(v4(1), v4(2), &request)),
            Err(IngressError::Unsupported)
        );
    }

    #[test]
    fn icmp_unreachable_fails_a_pending_connect() {
        let mut stack = Stack::new(&tunnel(2), TcpConfig::default(), &Seed::from_byte(1));
        let handle = stack.connect(Instant::ZERO, addr(1, 80)).unwrap();
        let mut buf = [0u8; 1400];
        let len = stack.poll_egress(Instant::ZERO, &mut buf).unwrap();
        let quote = buf[..28].to_vec();
        let _ = len;
        let icmp = IcmpRepr::DstUnreachable {
            code: erebus_wire::icmp::unreachable::HOST,
            next_hop_mtu: 0,
            original: &quote,
        };
        let ip = Ipv4Repr {
            src_addr: v4(1),
            dst_addr: v4(2),
            protocol: IpProtocol::Icmp,
            payload_len: icmp.buffer_len(),
            ttl: 64,
        };
        let mut packet = vec![0u8; ip.buffer_len()];
        let mut view = Ipv4Packet::new_unchecked(&mut packet[..]);
        ip.emit(&mut view);
        icmp.emit(&mut IcmpPacket::new_unchecked(
            &mut packet[ipv4::HEADER_LEN..],
        ));
        stack.ingress(Instant::ZERO, &packet).unwrap();
        assert_eq!(
            stack.socket(handle).and_then(TcpSocket::error),
            Some(tcp::ConnectionError::Unreachable)
        );
        assert_eq!(
            stack.poll_event(),
            Some((handle, Events::CLOSED | Events::READABLE | Events::WRITABLE))
        );
    }
}
