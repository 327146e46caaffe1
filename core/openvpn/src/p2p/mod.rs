//! Point-to-point OpenVPN without TLS: static-key (`--secret`) and plaintext modes, as a
//! [`Tunnel`].
//!
//! There is no handshake. Both ends know everything from their configuration, so the tunnel is
//! up the moment the session exists: [`P2pSession::new`] queues [`TunnelEvent::Up`] at once and
//! its first transmit is the start-up ping OpenVPN also sends. Waiting for the server's first
//! packet would stall for up to its ping interval, because a 2.6 p2p server stays silent until
//! its own ping timer fires.
//!
//! Each outer packet is one data-channel packet ([`DataChannel`]): an IP packet, a keepalive
//! ping, or an OCC message. The session
//!
//! - sends a ping after `ping` seconds without sending anything, and one at start;
//! - restarts after `ping_restart` seconds without receiving an authentic packet;
//! - asks for the peer's options string (`OCC_REQUEST`) 10 s after start and every 10 s until it
//!   gets a reply, 11 times at most, answers the peer's requests with its own string, and
//!   compares the peer's string with the one it expects ([`P2pSession::peer_options_match`]);
//! - treats the peer's `OCC_EXIT` as the peer leaving, and restarts;
//! - on [`Tunnel::close`] sends `OCC_EXIT` once a second for `explicit_exit_notify` seconds
//!   (UDP only, as OpenVPN), then reports [`TunnelEvent::Down`].
//!
//! # Restarts
//!
//! Where OpenVPN restarts its process state (`SIGUSR1` after ping-restart or the peer's exit),
//! the session ends with [`TunnelEvent::Down`] and [`Fault::Timeout`] or [`Fault::Closed`]. A
//! supervisor builds the next session, on a new socket: its packet ids start at 1 again with a
//! later time, which the peer accepts.
//!
//! # TCP
//!
//! Outer packets are the same for UDP and TCP. Over TCP the layer above frames them with
//! a 16-bit length prefix (the client's `framing` module, shared by every protocol), which
//! needs two more bytes of headroom than [`Tunnel::overhead`] reports.

#[cfg(test)]
mod capture_tests;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use erebus_sansio::io::TransportError;
use erebus_sansio::tunnel::{
    Decapsulated, DropReason, Failure, Fault, IpNet, Overhead, TransportKind, TransportSpec,
    TunnelEvent,
};
use erebus_sansio::{Instant, Seed, Tunnel, TunnelConfig, WallClock};

use crate::config::Mssfix;
use crate::data::inband::{self, OccMessage, Payload, occ_opcode};
use crate::data::{AuthAlg, CipherAlg, DataChannel, DataChannelError, DropCounts};
use crate::keys::{KeyDirection, StaticKey};
use crate::replay::ReplayConfig;

/// How often OpenVPN asks for the peer's options string.
pub const OCC_INTERVAL: Duration = Duration::from_secs(10);
/// OpenVPN gives up asking on the 12th attempt, so at most 11 requests go out.
pub const OCC_MAX_REQUESTS: u32 = 11;
/// OpenVPN's smallest `tun-mtu`.
pub const MIN_TUN_MTU: u16 = 100;

/// The static-key mode's parameters (`--secret`, `--key-direction`, `--cipher`, `--auth`).
#[derive(Clone, Debug)]
pub struct StaticKeyMode {
    /// The shared key.
    pub key: StaticKey,
    /// Which key slot sends and which receives; the peer uses the opposite direction.
    pub direction: KeyDirection,
    /// The data cipher. OpenVPN 2.6 defaults to BF-CBC, which is not supported: configure one.
    pub cipher: CipherAlg,
    /// The data HMAC (OpenVPN's default is SHA1).
    pub auth: AuthAlg,
}

/// What protects the packets.
#[derive(Clone, Debug)]
pub enum P2pMode {
    /// No key: packets travel as they are, with no packet id, HMAC or encryption.
    Plaintext,
    /// A pre-shared static key (boxed: the key is 256 bytes).
    StaticKey(Box<StaticKeyMode>),
}

/// Everything a point-to-point session needs, as given in the profile.
///
/// The session is the same at both ends: static-key mode is symmetric apart from the key
/// direction. A responder (`erebus serve` with `secret`, whose peer connects to it) differs
/// only in [`P2pConfig::responder`], and its composer learns the peer's address from the first
/// authentic packet rather than from [`P2pConfig::remote`].
#[derive(Clone, Debug)]
pub struct P2pConfig {
    /// The peer's transport address, already resolved (unused by a responder).
    pub remote: SocketAddr,
    /// UDP datagrams, or a TCP stream of length-prefixed packets.
    pub transport: TransportKind,
    /// This end answers a peer that connects to it (`tcp-server`, a server without
    /// `remote`); only the options string (`proto TCPv4_SERVER`) depends on it.
    pub responder: bool,
    /// Our tunnel address (`ifconfig <local> <remote>`, first argument).
    pub local_ip: Ipv4Addr,
    /// The peer's tunnel address (`ifconfig`, second argument); the gateway of the tunnel.
    pub remote_ip: Ipv4Addr,
    /// Static key or plaintext.
    pub mode: P2pMode,
    /// Networks reached through the tunnel besides the peer's address: the profile's `route`
    /// lines and `redirect-gateway` (a point-to-point peer pushes nothing).
    pub routes: Vec<IpNet>,
    /// DNS servers inside the tunnel: the profile's `dhcp-option DNS`.
    pub dns_servers: Vec<IpAddr>,
    /// Send a ping after this long without sending anything (`--ping`); `None` never.
    pub ping: Option<Duration>,
    /// Restart after this long without receiving an authentic packet (`--ping-restart`);
    /// `None` never.
    pub ping_restart: Option<Duration>,
    /// Seconds of `OCC_EXIT` packets to send on close (`--explicit-exit-notify`); UDP only.
    pub explicit_exit_notify: u32,
    /// The largest inner packet (`--tun-mtu`).
    pub tun_mtu: u16,
    /// `--mssfix`: the TCP MSS the stack above offers is capped so that a full segment's
    /// packet stays within it. `None`: no cap beyond `tun_mtu`.
    pub mssfix: Option<Mssfix>,
    /// The replay window (`--replay-window`).
    pub replay: ReplayConfig,
    /// Wall time, for the packet-id time of static-key mode.
    pub wall_clock: WallClock,
}

impl P2pConfig {
    /// A UDP configuration with OpenVPN's defaults: no keepalive, no exit notification,
    /// `tun-mtu 1500`, replay window 64 / 15 s.
    pub fn new(
        remote: SocketAddr,
        local_ip: Ipv4Addr,
        remote_ip: Ipv4Addr,
        mode: P2pMode,
        wall_clock: WallClock,
    ) -> Self {
        Self {
            remote,
            transport: TransportKind::Udp,
            responder: false,
            local_ip,
            remote_ip,
            mode,
            routes: Vec::new(),
            dns_servers: Vec::new(),
            ping: None,
            ping_restart: None,
            explicit_exit_notify: 0,
            tun_mtu: TunnelConfig::DEFAULT_MTU,
            mssfix: None,
            replay: ReplayConfig::default(),
            wall_clock,
        }
    }

    /// Sets `--keepalive ping restart` as OpenVPN does in p2p mode: `--ping ping` and
    /// `--ping-restart restart`.
    pub fn with_keepalive(mut self, ping: Duration, restart: Duration) -> Self {
        self.ping = Some(ping);
        self.ping_restart = Some(restart);
        self
    }

    /// The options string this end sends in `OCC_REPLY`, as OpenVPN 2.6 builds it; with
    /// `as_peer` the string this end expects from a correctly configured peer.
    pub fn options_string(&self, as_peer: bool) -> String {
        let tcp = self.transport == TransportKind::TcpLengthPrefixed;
        let link_mtu = usize::from(self.tun_mtu)
            + match &self.mode {
                P2pMode::Plaintext => 0,
                P2pMode::StaticKey(mode) => {
                    // OpenVPN's `calc_options_string_link_mtu`: the payload grows by the packet
                    // id (inside the CBC plaintext), the header by the TCP prefix, the IV, one
                    // block of padding and the HMAC; without a cipher the packet id counts once.
                    let packet_id = 8;
                    let cipher = if mode.cipher == CipherAlg::None {
                        0
                    } else {
                        2 * mode.cipher.block_len()
                    };
                    packet_id + cipher + mode.auth.digest_len() + if tcp { 2 } else { 0 }
                }
            };
        let proto = match (tcp, as_peer != self.responder) {
            (false, _) => "UDPv4",
            (true, false) => "TCPv4_CLIENT",
            (true, true) => "TCPv4_SERVER",
        };
        // The peer's address comes first in our own string; the peer writes its own the same
        // way, so the expected string has ours first.
        let (first, second) = if as_peer {
            (self.local_ip, self.remote_ip)
        } else {
            (self.remote_ip, self.local_ip)
        };
        let mut out = format!(
            "V4,dev-type tun,link-mtu {link_mtu},tun-mtu {},proto {proto},ifconfig {first} {second}",
            self.tun_mtu
        );
        if let P2pMode::StaticKey(mode) = &self.mode {
            let direction = if as_peer {
                mode.direction.peer()
            } else {
                mode.direction
            };
            if let Some(arg) = direction.as_arg() {
                out.push_str(",keydir ");
                out.push_str(arg);
            }
            let cipher = match mode.cipher {
                CipherAlg::None => "[null-cipher]",
                other => other.openvpn_name(),
            };
            let auth = match mode.auth {
                AuthAlg::None => "[null-digest]",
                other => other.openvpn_name(),
            };
            out.push_str(&format!(
                ",cipher {cipher},auth {auth},keysize {},secret",
                mode.cipher.key_len() * 8
            ));
        }
        out
    }
}

/// Why a point-to-point session cannot start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum P2pError {
    /// The key cannot be used.
    #[error(transparent)]
    Key(#[from] DataChannelError),
    /// `tun-mtu` below OpenVPN's minimum of 100.
    #[error("tun-mtu {0} is below the minimum of 100")]
    TunMtuTooSmall(u16),
}

/// Counters of a point-to-point session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct P2pStats {
    /// Inner packets sealed by [`Tunnel::encapsulate`].
    pub packets_sent: u64,
    /// Inner packets handed up by [`Tunnel::decapsulate`].
    pub packets_received: u64,
    /// Keepalive pings sent.
    pub pings_sent: u64,
    /// Keepalive pings received.
    pub pings_received: u64,
    /// `OCC_REQUEST`s sent.
    pub occ_requests_sent: u64,
    /// `OCC_REPLY`s sent.
    pub occ_replies_sent: u64,
    /// `OCC_EXIT`s sent.
    pub exit_notifications_sent: u64,
    /// Restarts after ping-restart or the peer's exit.
    pub restarts: u64,
    /// Outer packets dropped, by reason.
    pub drops: DropCounts,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Active,
    /// Sending exit notifications until `until`.
    Closing {
        next_exit: Instant,
        until: Instant,
    },
    Down,
}

/// What `poll_transmit` sends next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Control {
    Exit,
    OccReply,
    OccRequest,
    Ping,
}

/// A point-to-point OpenVPN session. See the [module documentation](self).
#[derive(Debug)]
pub struct P2pSession {
    transport: TransportSpec,
    tunnel_config: TunnelConfig,
    options: String,
    expected_peer_options: String,
    ping: Option<Duration>,
    ping_restart: Option<Duration>,
    explicit_exit_notify: u32,
    data: DataChannel,
    state: State,
    /// The latest `now` seen: time never goes backwards.
    now: Instant,
    /// When anything was last sent; `None` until the start-up ping.
    last_sent: Option<Instant>,
    /// When an authentic packet was last received (or the session started).
    last_received: Instant,
    next_occ_request: Option<Instant>,
    occ_requests: u32,
    occ_reply_pending: bool,
    peer_options_match: Option<bool>,
    events: VecDeque<TunnelEvent>,
    stats: P2pStats,
}

impl P2pSession {
    /// Starts a session at `now`. The tunnel is up at once: [`Tunnel::poll_event`] yields
    /// [`TunnelEvent::Up`] and [`Tunnel::poll_transmit`] the start-up ping.
    ///
    /// # Errors
    ///
    /// A [`P2pError`] when the configuration cannot work.
    pub fn new(config: P2pConfig, seed: &Seed, now: Instant) -> Result<Self, P2pError> {
        if config.tun_mtu < MIN_TUN_MTU {
            return Err(P2pError::TunMtuTooSmall(config.tun_mtu));
        }
        let data = match &config.mode {
            P2pMode::Plaintext => DataChannel::plaintext(),
            P2pMode::StaticKey(mode) => DataChannel::static_key(
                &mode.key.directional(mode.direction),
                mode.cipher,
                mode.auth,
                config.replay,
                config.wall_clock,
                &seed.child("openvpn.p2p"),
            )?,
        };
        let overhead = data.overhead();
        let tcp_mss = config.mssfix.and_then(|mssfix| {
            mssfix.tcp_mss(
                overhead.headroom + overhead.tailroom,
                config.transport == TransportKind::TcpLengthPrefixed,
            )
        });
        let tunnel_config = TunnelConfig {
            ipv4: Some(IpNet::host(IpAddr::V4(config.local_ip))),
            tcp_mss,
            gateway: Some(IpAddr::V4(config.remote_ip)),
            routes: config.routes.clone(),
            dns_servers: config.dns_servers.clone(),
            mtu: config.tun_mtu,
            cipher: Some(match &config.mode {
                P2pMode::Plaintext => "none (plaintext)".to_owned(),
                P2pMode::StaticKey(mode) => format!(
                    "{}/{} (static key)",
                    mode.cipher.openvpn_name(),
                    mode.auth.openvpn_name()
                ),
            }),
            ..TunnelConfig::default()
        };
        let mut events = VecDeque::new();
        events.push_back(TunnelEvent::Up(tunnel_config.clone()));
        Ok(Self {
            transport: TransportSpec::to_addr(config.remote, config.transport),
            options: config.options_string(false),
            expected_peer_options: config.options_string(true),
            tunnel_config,
            ping: config.ping.filter(|d| !d.is_zero()),
            ping_restart: config.ping_restart.filter(|d| !d.is_zero()),
            explicit_exit_notify: config.explicit_exit_notify,
            data,
            state: State::Active,
            now,
            last_sent: None,
            last_received: now,
            next_occ_request: Some(now + OCC_INTERVAL),
            occ_requests: 0,
            occ_reply_pending: false,
            peer_options_match: None,
            events,
            stats: P2pStats::default(),
        })
    }

    /// The options string this end sends in `OCC_REPLY`.
    pub fn options_string(&self) -> &str {
        &self.options
    }

    /// Whether the peer's options string, once received, equals the one expected from a peer
    /// configured to match. OpenVPN only warns about a mismatch, and so does nothing here.
    pub fn peer_options_match(&self) -> Option<bool> {
        self.peer_options_match
    }

    /// The session's counters.
    pub fn stats(&self) -> P2pStats {
        P2pStats {
            drops: self.stats.drops.merged(self.data.drops()),
            ..self.stats
        }
    }

    /// The data channel, for inspection.
    pub fn data_channel(&self) -> &DataChannel {
        &self.data
    }

    /// Whether the session has ended.
    pub fn is_down(&self) -> bool {
        self.state == State::Down
    }

    fn go_down(&mut self) {
        self.state = State::Down;
        self.events.push_back(TunnelEvent::Down(Failure::new(
            Fault::Closed,
            "the session was closed",
        )));
    }

    fn advance(&mut self, now: Instant) -> Instant {
        self.now = self.now.max(now);
        self.now
    }

    /// Where OpenVPN restarts (`SIGUSR1`): this session is over, and a supervisor starts the
    /// next one.
    fn restart(&mut self, failure: Failure) {
        if self.state == State::Down {
            return;
        }
        self.state = State::Down;
        self.stats.restarts += 1;
        self.events.push_back(TunnelEvent::Down(failure));
    }

    fn ping_due(&self) -> Option<Instant> {
        let interval = self.ping?;
        Some(self.last_sent.map_or(self.now, |sent| sent + interval))
    }

    /// The control packet due at `now`, if any, in priority order.
    fn due_control(&self, now: Instant) -> Option<Control> {
        match self.state {
            State::Down => None,
            State::Closing { next_exit, until } => {
                (now >= next_exit && now < until).then_some(Control::Exit)
            }
            State::Active => {
                if self.occ_reply_pending {
                    Some(Control::OccReply)
                } else if self.next_occ_request.is_some_and(|at| now >= at) {
                    Some(Control::OccRequest)
                } else if self.ping_due().is_some_and(|at| now >= at) {
                    Some(Control::Ping)
                } else {
                    None
                }
            }
        }
    }

    fn handle_occ(&mut self, message: OccMessage<'_>) {
        match message {
            OccMessage::Request => self.occ_reply_pending = true,
            OccMessage::Reply(options) => {
                self.next_occ_request = None;
                self.peer_options_match = Some(options == self.expected_peer_options.as_bytes());
                if self.peer_options_match == Some(false) {
                    tracing::warn!(
                        peer = %String::from_utf8_lossy(options),
                        expected = %self.expected_peer_options,
                        "the peer's options differ from ours"
                    );
                }
            }
            OccMessage::Exit => {
                if self.state == State::Active {
                    self.restart(Failure::new(
                        Fault::Closed,
                        "the peer sent an exit notification",
                    ));
                }
            }
            // MTU tests (`--mtu-test`) are not run; their messages are consumed unanswered.
            OccMessage::MtuLoadRequest(_)
            | OccMessage::MtuLoad
            | OccMessage::MtuRequest
            | OccMessage::MtuReply(_)
            | OccMessage::Unknown(_) => {}
        }
    }
}

impl Tunnel for P2pSession {
    fn transport(&self) -> Option<&TransportSpec> {
        (self.state != State::Down).then_some(&self.transport)
    }

    fn transport_connected(&mut self, now: Instant, _remote: SocketAddr) {
        self.advance(now);
    }

    fn transport_closed(&mut self, now: Instant, error: TransportError) {
        self.advance(now);
        self.restart(Failure::new(Fault::Timeout, error.to_string()));
    }

    fn overhead(&self) -> Overhead {
        self.data.overhead()
    }

    fn decapsulate(&mut self, now: Instant, packet: &mut [u8]) -> Result<Decapsulated, DropReason> {
        let now = self.advance(now);
        if self.state == State::Down {
            self.stats.drops.record(DropReason::NotReady);
            return Err(DropReason::NotReady);
        }
        let payload = self.data.open(now, packet)?;
        self.last_received = now;
        match inband::classify(packet.get(payload.clone()).unwrap_or(&[])) {
            Payload::Ping => {
                self.stats.pings_received += 1;
                Ok(Decapsulated::Consumed)
            }
            Payload::Occ(message) => {
                self.handle_occ(message);
                Ok(Decapsulated::Consumed)
            }
            Payload::Packet => {
                self.stats.packets_received += 1;
                Ok(Decapsulated::Inner(payload))
            }
        }
    }

    fn encapsulate(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        inner: Range<usize>,
    ) -> Result<Range<usize>, DropReason> {
        let now = self.advance(now);
        if self.state != State::Active {
            return Err(DropReason::NotReady);
        }
        if inner.len() > usize::from(self.tunnel_config.mtu) {
            return Err(DropReason::Malformed);
        }
        let outer = self.data.seal(now, buf, inner)?;
        self.last_sent = Some(now);
        self.stats.packets_sent += 1;
        Ok(outer)
    }

    fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance(now);
        match self.state {
            State::Active => {
                if let Some(limit) = self.ping_restart
                    && now >= self.last_received + limit
                {
                    self.restart(Failure::new(
                        Fault::Timeout,
                        format!(
                            "nothing received from the peer for {} s (ping-restart)",
                            limit.as_secs()
                        ),
                    ));
                }
            }
            State::Closing { until, .. } => {
                if now >= until {
                    self.go_down();
                }
            }
            State::Down => {}
        }
    }

    /// Closes the session: over UDP with `explicit_exit_notify` set, sends `OCC_EXIT` once a
    /// second for that many seconds and then reports [`TunnelEvent::Down`]; otherwise reports
    /// it at once. Inner packets are refused from now on.
    fn close(&mut self, now: Instant) {
        let now = self.advance(now);
        if self.state != State::Active {
            return;
        }
        if self.transport.kind == TransportKind::Udp && self.explicit_exit_notify > 0 {
            self.state = State::Closing {
                next_exit: now,
                until: now + Duration::from_secs(u64::from(self.explicit_exit_notify)),
            };
        } else {
            self.go_down();
        }
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Result<usize, usize>> {
        let now = self.advance(now);
        let control = self.due_control(now)?;
        let headroom = self.data.overhead().headroom;
        let tailroom = self.data.overhead().tailroom;
        let payload_len = match control {
            Control::Exit | Control::OccRequest => inband::OCC_MAGIC.len() + 1,
            Control::OccReply => inband::occ_reply_len(self.options.as_bytes()),
            Control::Ping => inband::PING_MAGIC.len(),
        };
        let needed = headroom + payload_len + tailroom;
        if buf.len() < needed {
            return Some(Err(needed));
        }
        let payload = buf.get_mut(headroom..)?;
        let written = match control {
            Control::Exit => inband::write_occ(payload, occ_opcode::EXIT),
            Control::OccRequest => inband::write_occ(payload, occ_opcode::REQUEST),
            Control::OccReply => inband::write_occ_reply(payload, self.options.as_bytes()),
            Control::Ping => inband::write_ping(payload),
        }?;
        let outer = self
            .data
            .seal(now, buf, headroom..headroom + written)
            .ok()?;
        self.last_sent = Some(now);
        match control {
            Control::Exit => {
                self.stats.exit_notifications_sent += 1;
                if let State::Closing { next_exit, until } = self.state {
                    self.state = State::Closing {
                        next_exit: next_exit.max(now) + Duration::from_secs(1),
                        until,
                    };
                }
            }
            Control::OccReply => {
                self.occ_reply_pending = false;
                self.stats.occ_replies_sent += 1;
            }
            Control::OccRequest => {
                self.occ_requests += 1;
                self.stats.occ_requests_sent += 1;
                // After the last attempt OpenVPN notes the silence and stops asking; the tunnel
                // is unaffected.
                self.next_occ_request =
                    (self.occ_requests < OCC_MAX_REQUESTS).then_some(now + OCC_INTERVAL);
            }
            Control::Ping => self.stats.pings_sent += 1,
        }
        // The seal starts exactly `headroom` before the payload, at 0.
        Some(Ok(outer.end - outer.start))
    }

    fn poll_event(&mut self) -> Option<TunnelEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        match self.state {
            State::Down => None,
            State::Closing { next_exit, until } => Some(if next_exit < until {
                (next_exit, "explicit-exit-notify")
            } else {
                (until, "close")
            }),
            State::Active => {
                let mut deadlines: [Option<(Instant, &'static str)>; 4] = [
                    self.occ_reply_pending.then_some((self.now, "occ-reply")),
                    self.next_occ_request.map(|at| (at, "occ-request")),
                    self.ping_due().map(|at| (at, "ping")),
                    self.ping_restart
                        .map(|limit| (self.last_received + limit, "ping-restart")),
                ];
                deadlines.sort_by_key(|d| d.map(|(at, _)| at));
                deadlines.into_iter().flatten().next()
            }
        }
    }
}
