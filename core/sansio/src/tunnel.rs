//! The [`Tunnel`] trait that OpenVPN and IPsec both implement, and the [`TunnelConfig`] they
//! both produce.
//!
//! A tunnel turns inner IP packets into outer transport packets and back. It owns its control
//! plane (handshakes, keepalives, rekeys) and reports what it learned as a [`TunnelConfig`].
//! It never sees sockets: the client above it moves bytes between the tunnel, the TCP/IP stack
//! and the driver.
//!
//! # Buffers
//!
//! The data path is in place. To send, the caller writes the inner packet into a buffer at
//! offset [`Overhead::headroom`] and leaves [`Overhead::tailroom`] free bytes after it;
//! [`Tunnel::encapsulate`] encrypts there and writes its header into the headroom. To receive,
//! [`Tunnel::decapsulate`] decrypts the outer packet where it lies and returns where the inner
//! packet ended up. Nothing is allocated per packet.

use core::fmt;
use core::ops::Range;
use core::time::Duration;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::io::TransportError;
use crate::time::Instant;

/// How the outer packets travel to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// One outer packet per UDP datagram.
    Udp,
    /// A TCP stream of outer packets, each preceded by its length as a 16-bit big-endian
    /// integer (OpenVPN over TCP, RFC 8229 for IKE and ESP).
    TcpLengthPrefixed,
}

impl TransportKind {
    /// Bytes in front of every outer packet on the wire: none over UDP, the 16-bit length over
    /// a stream.
    pub const fn prefix_len(self) -> usize {
        match self {
            Self::Udp => 0,
            Self::TcpLengthPrefixed => 2,
        }
    }

    /// `udp` or `tcp`, as a profile writes it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::TcpLengthPrefixed => "tcp",
        }
    }
}

/// Where and how the driver must connect for one attempt of a tunnel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TransportSpec {
    /// Which attempt this is. A new value means a new socket, even to the same server: the
    /// driver closes the old one and opens another (with a new source port).
    pub attempt: u64,
    /// The server's host name or address literal, as the configuration gives it. The driver
    /// resolves it for every attempt, so a server whose address changes is found again.
    pub host: String,
    /// The server's port.
    pub port: u16,
    /// Datagrams or a framed stream.
    pub kind: TransportKind,
}

impl TransportSpec {
    /// A spec for attempt 0 to an address already known (tests, tools with a fixed server).
    pub fn to_addr(remote: SocketAddr, kind: TransportKind) -> Self {
        Self {
            attempt: 0,
            host: remote.ip().to_string(),
            port: remote.port(),
            kind,
        }
    }
}

impl fmt::Display for TransportSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{} ({})", self.host, self.port, self.kind.name())
        } else {
            write!(f, "{}:{} ({})", self.host, self.port, self.kind.name())
        }
    }
}

/// Bytes a tunnel needs around an inner packet to encapsulate it in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Overhead {
    /// Bytes reserved before the inner packet for the tunnel's header.
    pub headroom: usize,
    /// Bytes reserved after the inner packet for padding and authentication tags.
    pub tailroom: usize,
}

impl Overhead {
    /// Total bytes added to an inner packet at most.
    pub const fn total(&self) -> usize {
        self.headroom + self.tailroom
    }
}

/// What [`Tunnel::decapsulate`] made of one outer packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decapsulated {
    /// An inner IP packet, now plaintext, at this range of the caller's buffer.
    Inner(Range<usize>),
    /// A control-plane or keepalive packet the tunnel consumed; poll for what it caused.
    Consumed,
}

/// Why an outer packet was dropped. A drop never changes the session's state: an attacker can
/// send anything, so every reason here is counted and otherwise ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Too short, or a header field that cannot be.
    Malformed,
    /// The authentication tag or HMAC did not verify.
    Unauthentic,
    /// Already received, or too old for the replay window.
    Replayed,
    /// A key id, SPI or peer id that names no current key.
    UnknownKey,
    /// The session has no keys for this yet (still handshaking).
    NotReady,
    /// A well-formed packet of a kind this client does not handle.
    Unsupported,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "malformed packet",
            Self::Unauthentic => "authentication failed",
            Self::Replayed => "replayed or too old",
            Self::UnknownKey => "unknown key",
            Self::NotReady => "no keys yet",
            Self::Unsupported => "unsupported packet",
        })
    }
}

/// Dropped outer packets counted by [`DropReason`]: one fixed counter per reason, so counting
/// a drop allocates nothing and a flood of bad packets cannot grow it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropTally {
    /// [`DropReason::Malformed`].
    pub malformed: u64,
    /// [`DropReason::Unauthentic`].
    pub unauthentic: u64,
    /// [`DropReason::Replayed`].
    pub replayed: u64,
    /// [`DropReason::UnknownKey`].
    pub unknown_key: u64,
    /// [`DropReason::NotReady`].
    pub not_ready: u64,
    /// [`DropReason::Unsupported`].
    pub unsupported: u64,
}

impl DropTally {
    /// Counts one drop for `reason`.
    pub fn record(&mut self, reason: DropReason) {
        let slot = match reason {
            DropReason::Malformed => &mut self.malformed,
            DropReason::Unauthentic => &mut self.unauthentic,
            DropReason::Replayed => &mut self.replayed,
            DropReason::UnknownKey => &mut self.unknown_key,
            DropReason::NotReady => &mut self.not_ready,
            DropReason::Unsupported => &mut self.unsupported,
        };
        *slot = slot.saturating_add(1);
    }

    /// The drops counted for `reason`.
    pub const fn get(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::Malformed => self.malformed,
            DropReason::Unauthentic => self.unauthentic,
            DropReason::Replayed => self.replayed,
            DropReason::UnknownKey => self.unknown_key,
            DropReason::NotReady => self.not_ready,
            DropReason::Unsupported => self.unsupported,
        }
    }

    /// Every reason with its count, in a fixed order.
    pub const fn by_reason(&self) -> [(DropReason, u64); 6] {
        [
            (DropReason::Replayed, self.replayed),
            (DropReason::Unauthentic, self.unauthentic),
            (DropReason::Malformed, self.malformed),
            (DropReason::UnknownKey, self.unknown_key),
            (DropReason::NotReady, self.not_ready),
            (DropReason::Unsupported, self.unsupported),
        ]
    }

    /// All drops.
    pub const fn total(&self) -> u64 {
        self.malformed
            .saturating_add(self.unauthentic)
            .saturating_add(self.replayed)
            .saturating_add(self.unknown_key)
            .saturating_add(self.not_ready)
            .saturating_add(self.unsupported)
    }
}

/// Who is at fault when a session ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// The local configuration cannot work (bad profile, unusable key).
    Config,
    /// The server rejected our credentials or certificate.
    Auth,
    /// The server broke the protocol.
    PeerMisbehaved,
    /// The server speaks something we do not (cipher, protocol version).
    PeerIncompatible,
    /// The server stopped answering, or could not be reached.
    Timeout,
    /// The server or the user closed the session in an orderly way. A supervisor starts over
    /// unless the user asked for the close.
    Closed,
    /// The server ended the session and told the client not to come back (OpenVPN's `HALT`).
    Halted,
}

impl Fault {
    /// Whether starting a new session may help: not for faults in our configuration or
    /// credentials, an incompatible server, or a server that told us to stay away.
    pub const fn is_retryable(self) -> bool {
        matches!(self, Self::PeerMisbehaved | Self::Timeout | Self::Closed)
    }
}

/// Why a session ended or restarts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Who is at fault.
    pub fault: Fault,
    /// A sentence for the user, naming what went wrong.
    pub message: String,
}

impl Failure {
    /// A failure of class `fault` described by `message`.
    pub fn new(fault: Fault, message: impl Into<String>) -> Self {
        Self {
            fault,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What a tunnel tells the layer above.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TunnelEvent {
    /// A connection attempt to this server starts (a supervisor's event).
    Connecting(TransportSpec),
    /// Inner packets can flow, with this configuration. May repeat with a new configuration
    /// after a reconnect.
    Up(TunnelConfig),
    /// The session was lost, or an attempt failed; the tunnel starts over by itself in
    /// `retry_in` (a supervisor's event).
    Reconnecting {
        /// Why.
        reason: Failure,
        /// How long until the next attempt.
        retry_in: Duration,
    },
    /// The session is over for good.
    Down(Failure),
}

/// An IP network: an address and a prefix length.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// A network of `addr` with `prefix` leading bits, or `None` when the prefix is too long for
    /// the address family.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Self { addr, prefix })
    }

    /// An IPv4 network from an address and a dotted netmask such as `255.255.255.0`, or `None`
    /// when the mask is not contiguous.
    pub fn from_netmask(addr: Ipv4Addr, netmask: Ipv4Addr) -> Option<Self> {
        let mask = u32::from(netmask);
        let prefix = mask.leading_ones();
        (mask.checked_shl(prefix).unwrap_or(0) == 0).then_some(Self {
            addr: IpAddr::V4(addr),
            prefix: prefix as u8,
        })
    }

    /// A single host: `/32` or `/128`.
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            prefix: if addr.is_ipv4() { 32 } else { 128 },
        }
    }

    /// The address as given (not masked).
    pub const fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub const fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Debug for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What a tunnel learned about the private network: the same shape whether it came from an
/// OpenVPN profile or PUSH_REPLY, or from an IKEv2 configuration payload.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TunnelConfig {
    /// Our inner IPv4 address and the prefix of the tunnel's subnet.
    pub ipv4: Option<IpNet>,
    /// Our inner IPv6 address and prefix, when the server assigns one.
    pub ipv6: Option<IpNet>,
    /// The server's inner address, when it has one (point-to-point peer, route-gateway).
    pub gateway: Option<IpAddr>,
    /// Networks reachable through the tunnel, besides the tunnel's own subnets.
    pub routes: Vec<IpNet>,
    /// DNS servers inside the tunnel, in order of preference.
    pub dns_servers: Vec<IpAddr>,
    /// Domains appended to short names, in order.
    pub search_domains: Vec<String>,
    /// The largest inner packet the tunnel carries, in bytes.
    pub mtu: u16,
    /// The largest TCP segment payload for connections through the tunnel when the VPN limits
    /// it below what `mtu` allows (OpenVPN's `mssfix`): the stack advertises no more in its
    /// SYNs, so neither end sends a segment whose encapsulation outgrows the path.
    pub tcp_mss: Option<u16>,
    /// The data-channel cipher in use, by its protocol name, for status lines.
    pub cipher: Option<String>,
}

impl TunnelConfig {
    /// The default inner MTU (OpenVPN's `tun-mtu` default).
    pub const DEFAULT_MTU: u16 = 1500;

    /// Whether packets to `dst` belong in the tunnel: inside an assigned subnet, the gateway,
    /// or one of the routes.
    pub fn routes_to(&self, dst: IpAddr) -> bool {
        self.ipv4.is_some_and(|net| net.contains(dst))
            || self.ipv6.is_some_and(|net| net.contains(dst))
            || self.gateway == Some(dst)
            || self.routes.iter().any(|net| net.contains(dst))
    }

    /// Our inner IPv4 address, if any.
    pub fn local_ipv4(&self) -> Option<Ipv4Addr> {
        match self.ipv4?.addr() {
            IpAddr::V4(addr) => Some(addr),
            IpAddr::V6(_) => None,
        }
    }

    /// Our inner IPv6 address, if any.
    pub fn local_ipv6(&self) -> Option<Ipv6Addr> {
        match self.ipv6?.addr() {
            IpAddr::V6(addr) => Some(addr),
            IpAddr::V4(_) => None,
        }
    }
}

/// A VPN tunnel as a pure state machine: OpenVPN and IPsec both implement it.
///
/// Method groups, in the order a caller uses them:
/// - getters: [`transport`](Self::transport), [`overhead`](Self::overhead);
/// - input: [`transport_connected`](Self::transport_connected) and
///   [`transport_closed`](Self::transport_closed) for the socket's fate,
///   [`decapsulate`](Self::decapsulate) for each outer packet from the server,
///   [`handle_timeout`](Self::handle_timeout) when the deadline passes, and
///   [`encapsulate`](Self::encapsulate) for each inner packet to send;
/// - output: [`poll_transmit`](Self::poll_transmit) until `None`, then
///   [`poll_event`](Self::poll_event) until `None`, then
///   [`poll_timeout`](Self::poll_timeout).
///
/// Every input carries `now`; time never goes backwards (a `now` earlier than one already seen
/// is treated as that one). Calling `handle_timeout` early or twice is harmless.
pub trait Tunnel {
    /// The transport the tunnel wants open now, or `None` (between attempts, or once down).
    fn transport(&self) -> Option<&TransportSpec>;

    /// Room to reserve around an inner packet for [`Tunnel::encapsulate`].
    fn overhead(&self) -> Overhead;

    /// The transport of the current [`transport`](Self::transport) attempt is open, to
    /// `remote`. Nothing is sent before this.
    fn transport_connected(&mut self, now: Instant, remote: SocketAddr);

    /// The transport of the current attempt failed or was closed by the server. A session
    /// reports [`TunnelEvent::Down`]; a supervisor starts over.
    fn transport_closed(&mut self, now: Instant, error: TransportError);

    /// Processes one outer packet from the server, decrypting it in place in `packet`.
    ///
    /// # Errors
    ///
    /// Returns why the packet was dropped. A drop changes no session state.
    fn decapsulate(&mut self, now: Instant, packet: &mut [u8]) -> Result<Decapsulated, DropReason>;

    /// Encrypts the inner packet at `buf[inner]` in place and returns the range of `buf` that
    /// now holds the outer packet, ready for the transport.
    ///
    /// `inner.start` must be at least [`Overhead::headroom`] and `buf.len() - inner.end` at least
    /// [`Overhead::tailroom`].
    ///
    /// # Errors
    ///
    /// [`DropReason::NotReady`] before the data channel has keys; [`DropReason::Malformed`] when
    /// the range leaves too little room.
    fn encapsulate(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        inner: Range<usize>,
    ) -> Result<Range<usize>, DropReason>;

    /// Runs the timers that are due at `now`.
    fn handle_timeout(&mut self, now: Instant);

    /// Starts an orderly shutdown, telling the server we leave where the protocol can (for
    /// OpenVPN, explicit-exit-notify). The tunnel reports [`TunnelEvent::Down`] with
    /// [`Fault::Closed`] once done; keep draining until then.
    fn close(&mut self, now: Instant);

    /// Writes the next control-plane packet (handshake, acknowledgement, keepalive, rekey) into
    /// `buf` and returns its length, or `None` when there is nothing to send. A packet larger
    /// than `buf` stays queued and `Some(Err(needed))` says how large `buf` must be.
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Result<usize, usize>>;

    /// The next event for the layer above.
    fn poll_event(&mut self) -> Option<TunnelEvent>;

    /// When the tunnel next wants [`Tunnel::handle_timeout`], and why.
    fn poll_timeout(&self) -> Option<(Instant, &'static str)>;
}

/// A boxed tunnel is a tunnel, so a program can pick the protocol at run time.
impl<T: Tunnel + ?Sized> Tunnel for Box<T> {
    fn transport(&self) -> Option<&TransportSpec> {
        (**self).transport()
    }

    fn overhead(&self) -> Overhead {
        (**self).overhead()
    }

    fn transport_connected(&mut self, now: Instant, remote: SocketAddr) {
        (**self).transport_connected(now, remote);
    }

    fn transport_closed(&mut self, now: Instant, error: TransportError) {
        (**self).transport_closed(now, error);
    }

    fn decapsulate(&mut self, now: Instant, packet: &mut [u8]) -> Result<Decapsulated, DropReason> {
        (**self).decapsulate(now, packet)
    }

    fn encapsulate(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        inner: Range<usize>,
    ) -> Result<Range<usize>, DropReason> {
        (**self).encapsulate(now, buf, inner)
    }

    fn handle_timeout(&mut self, now: Instant) {
        (**self).handle_timeout(now);
    }

    fn close(&mut self, now: Instant) {
        (**self).close(now);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Result<usize, usize>> {
        (**self).poll_transmit(now, buf)
    }

    fn poll_event(&mut self) -> Option<TunnelEvent> {
        (**self).poll_event()
    }

    fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        (**self).poll_timeout()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn netmask_to_prefix() {
        let net = IpNet::from_netmask(Ipv4Addr::new(10, 8, 0, 2), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(net.map(|n| n.prefix()), Some(24));
        assert!(
            IpNet::from_netmask(Ipv4Addr::new(10, 8, 0, 2), Ipv4Addr::new(255, 0, 255, 0))
                .is_none()
        );
        let all = IpNet::from_netmask(Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED);
        assert_eq!(all.map(|n| n.prefix()), Some(0));
    }

    #[test]
    fn contains_respects_prefix_and_family() {
        let net = IpNet::new(v4(10, 8, 0, 0), 24).unwrap();
        assert!(net.contains(v4(10, 8, 0, 77)));
        assert!(!net.contains(v4(10, 8, 1, 1)));
        assert!(!net.contains("::1".parse().unwrap()));
        assert!(
            IpNet::new(v4(0, 0, 0, 0), 0)
                .unwrap()
                .contains(v4(192, 0, 2, 1))
        );
        assert!(IpNet::new(v4(1, 2, 3, 4), 33).is_none());
        let v6 = IpNet::new("fd00::".parse().unwrap(), 64).unwrap();
        assert!(v6.contains("fd00::5".parse().unwrap()));
        assert!(!v6.contains("fd01::5".parse().unwrap()));
    }

    #[test]
    fn routes_to_covers_subnet_gateway_and_routes() {
        let config = TunnelConfig {
            ipv4: IpNet::new(v4(10, 8, 0, 2), 24),
            gateway: Some(v4(10, 9, 9, 9)),
            routes: vec![IpNet::new(v4(192, 168, 50, 0), 24).unwrap()],
            ..TunnelConfig::default()
        };
        assert!(config.routes_to(v4(10, 8, 0, 1)));
        assert!(config.routes_to(v4(10, 9, 9, 9)));
        assert!(config.routes_to(v4(192, 168, 50, 10)));
        assert!(!config.routes_to(v4(192, 168, 51, 10)));
        assert_eq!(config.local_ipv4(), Some(Ipv4Addr::new(10, 8, 0, 2)));
    }
}
