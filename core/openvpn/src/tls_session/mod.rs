//! OpenVPN's TLS client mode as a [`Tunnel`]: the control channel's state machine over the
//! reliability layer, TLS, the key-method-2 exchange and the push, driving the data channel's
//! key slots.
//!
//! # The sequence
//!
//! 1. **Hard reset.** The session sends `P_CONTROL_HARD_RESET_CLIENT_V2` (message id 0, no
//!    acknowledgements) with a random session id, and retransmits it at 2, 6, 14, ... s.
//! 2. **The server's reset** (`HARD_RESET_SERVER_V2`) acknowledges ours and names the server's
//!    session id. From then on every packet acknowledges what arrived, with the server's session
//!    id behind the list: a 2.6 server over UDP creates its state only when the next packet
//!    acknowledges its reset with its (HMAC cookie) session id.
//! 3. **TLS.** Once our reset is acknowledged and the server's received, a fresh rustls session
//!    starts; its bytes are cut into `P_CONTROL_V1` payloads of at most
//!    [`TLS_MTU`]-sized datagrams, message ids 1, 2, ...
//! 4. **Key method 2.** When the handshake completes, the client's key-method message (options
//!    string, credentials or auth-token, peer-info) goes as one TLS record; the server answers
//!    with its own, then (unasked, as `IV_PROTO` announces `REQUEST_PUSH`) `PUSH_REPLY`. Should
//!    it not, `PUSH_REQUEST` goes 1 s after the key became active and every 5 s after.
//! 5. **Push.** The pushed cipher must be one of the profile's data ciphers; the data keys come
//!    from the TLS exporter (`tls-ekm` pushed) or the legacy PRF. The key-0 data channel is
//!    installed and [`TunnelEvent::Up`] reports the [`TunnelConfig`].
//!
//! Everything from the first reset to the push must happen within `hand-window` (60 s), or the
//! session ends with [`Fault::Timeout`].
//!
//! # Renegotiation
//!
//! Either side starts one (`reneg-sec` on our side, default 3600 s, or a data key near the end
//! of its packet ids) with `P_CONTROL_SOFT_RESET_V1` under the next key id (1..7, never 0
//! again). The new key id gets a fresh reliability layer and a fresh TLS session; session ids
//! and the tls-auth/tls-crypt replay counters carry on. After its key-method exchange (no push;
//! the auth-token replaces the password when one was pushed) the new data key is accepted on
//! receive at once, and used for sending as soon as the server sends with it, or at the latest
//! `min(hand-window, reneg-sec / 2)` after the renegotiation started: a 2.6 server keeps
//! sending on the old key for about that long. The old key then stays a lame duck, accepted
//! on receive for `tran-window` (3600 s).
//!
//! # Ending
//!
//! - [`Tunnel::close`]: over UDP with `explicit-exit-notify`, the control message `EXIT` when
//!   the server pushed `protocol-flags cc-exit` (done once it is acknowledged), else one
//!   `OCC_EXIT` a second; then [`TunnelEvent::Down`] with [`Fault::Closed`].
//! - `AUTH_FAILED`: [`Fault::Auth`] (or [`Fault::PeerIncompatible`] when the server found no
//!   common data cipher); but when the session holds an `auth-token`, the token is dropped and
//!   the fault is [`Fault::Closed`], so that the next session authenticates with the password,
//!   as the stock client does. `RESTART`, `HALT` and `EXIT` from the server, and its `OCC_EXIT`:
//!   [`Fault::Closed`], the message saying which. A TLS failure: [`TlsError::fault`]. A pushed
//!   cipher not in the profile: [`Fault::PeerIncompatible`]. No progress within `hand-window`,
//!   or nothing received for `ping-restart`: [`Fault::Timeout`], or [`Fault::Config`] when
//!   every packet from the server failed tls-auth/tls-crypt authentication (a wrong key).
//!
//! The session never restarts by itself: after `Down` it sends nothing and asks for no timer,
//! and the layer above decides whether to build a new one.
//!
//! # TCP
//!
//! Outer packets are the same over TCP; the layer above frames them with
//! a 16-bit length prefix (the client's `framing` module, shared by every protocol), which
//! needs two more bytes of headroom than [`Tunnel::overhead`] reports. The reliability layer still acknowledges and retransmits, as
//! OpenVPN does.

#[cfg(test)]
mod capture_tests;
#[cfg(test)]
pub(crate) mod fake_server;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use erebus_sansio::io::TransportError;
use erebus_sansio::tunnel::{
    Decapsulated, DropReason, Failure, Fault, Overhead, TransportKind, TransportSpec, TunnelEvent,
};
use erebus_sansio::{Instant, Seed, SeededRng, Tunnel, TunnelConfig, WallClock};

use crate::config::{Compression as ProfileCompression, Credentials, Profile, SecretString};
use crate::control::keymethod::{self, ClientKeySource, PeerInfoParams, ServerKeySource, UserPass};
use crate::control::prf::Key2;
use crate::control::push::{self, PushAccumulator, PushError, PushedOptions, ServerMessage};
use crate::control::reliable::{MAX_PIGGYBACK_ACKS, Reliable};
use crate::control::wrap::{ControlWrap, ReplayId};
use crate::data::inband::{self, OccMessage, Payload, occ_opcode};
use crate::data::{Compression, DataCipher, DataConfig, DataKeys, DropCounts, Key2Role};
use crate::packet::{
    AckList, ControlBody, ControlPacket, KeyId, Opcode, OpcodeByte, PeerId, SessionId,
};
use crate::replay::{PacketId, ReplayConfig, ReplayWindow};
use crate::tls::{
    ClientCredentials, ControlTls, RustlsSession, ServerPolicy, TlsClientConfig, TlsError,
    TlsProvider, WallTime,
};

/// The largest control datagram, IP and UDP headers included (`--tls-mtu`'s default).
pub const TLS_MTU: usize = 1250;
/// `--hand-window`'s default: how long one key negotiation may take.
pub const DEFAULT_HAND_WINDOW: Duration = Duration::from_secs(60);
/// `--tran-window`'s default: how long the previous data key stays accepted.
pub const DEFAULT_TRAN_WINDOW: Duration = Duration::from_secs(3600);
/// `--reneg-sec`'s default.
pub const DEFAULT_RENEG_SEC: Duration = Duration::from_secs(3600);
/// The first `PUSH_REQUEST` goes this long after the key became active without a push.
pub const PUSH_REQUEST_DELAY: Duration = Duration::from_secs(1);
/// `PUSH_REQUEST` repeats this often until `PUSH_REPLY` arrives (`PUSH_REQUEST_INTERVAL`).
pub const PUSH_REQUEST_INTERVAL: Duration = Duration::from_secs(5);
/// The largest inner packet accepted from the layer above when nothing says otherwise.
const MAX_TUN_MTU: u16 = 1600;

/// Everything a TLS client session needs: the profile and what its file references resolved
/// to. [`crate::setup::tls_config`] builds one from a profile.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    /// The profile: data ciphers, options string, pull filters, routes, compression.
    pub profile: Profile,
    /// Which of the profile's connections this session uses (for the options string).
    pub connection_index: usize,
    /// The server's transport address, already resolved.
    pub remote: SocketAddr,
    /// UDP datagrams or a length-prefixed TCP stream.
    pub transport: TransportKind,
    /// tls-auth, tls-crypt or nothing.
    pub wrap: ControlWrap,
    /// How the server's certificate must look (`ca`, `remote-cert-tls`, `verify-x509-name`).
    pub policy: ServerPolicy,
    /// The client certificate and key (`cert`, `key`), when the profile has them.
    pub client_credentials: Option<ClientCredentials>,
    /// The username and password of `auth-user-pass`, when the profile asks for them.
    pub user_pass: Option<Credentials>,
    /// A token the server pushed (`auth-token`) in an earlier session to the same profile: sent
    /// instead of the password, as the stock client does after a reconnect.
    pub auth_token: Option<SecretString>,
    /// Wall time, for certificate validity and the replay ids of wrapped control packets.
    pub wall_clock: WallClock,
    /// The peer-info text's parameters (`IV_VER`, `IV_PLAT`, `IV_PROTO`).
    pub peer_info: PeerInfoParams,
    /// `--hand-window`.
    pub hand_window: Duration,
    /// `--tls-timeout`: the first retransmission timeout of control packets.
    pub tls_timeout: Duration,
    /// `--reneg-sec`: renegotiate this long after a key was established; `None` never.
    pub reneg_sec: Option<Duration>,
    /// `--tran-window`.
    pub tran_window: Duration,
    /// `--ping` from the profile (a pushed `ping` wins).
    pub ping: Option<Duration>,
    /// `--ping-restart` from the profile (a pushed one wins).
    pub ping_restart: Option<Duration>,
    /// `--explicit-exit-notify` seconds (a pushed one wins); UDP only.
    pub explicit_exit_notify: u32,
    /// The replay window of data and wrapped control packets (`--replay-window`).
    pub replay: ReplayConfig,
}

impl TlsConfig {
    /// A UDP configuration with OpenVPN's defaults for everything the profile does not say:
    /// no tls-auth/tls-crypt, no client certificate, no credentials.
    pub fn new(
        profile: Profile,
        remote: SocketAddr,
        policy: ServerPolicy,
        wall_clock: WallClock,
    ) -> Self {
        Self {
            profile,
            connection_index: 0,
            remote,
            transport: TransportKind::Udp,
            wrap: ControlWrap::None,
            policy,
            client_credentials: None,
            user_pass: None,
            auth_token: None,
            wall_clock,
            peer_info: PeerInfoParams::default(),
            hand_window: DEFAULT_HAND_WINDOW,
            tls_timeout: crate::control::reliable::INITIAL_TIMEOUT,
            reneg_sec: Some(DEFAULT_RENEG_SEC),
            tran_window: DEFAULT_TRAN_WINDOW,
            ping: None,
            ping_restart: None,
            explicit_exit_notify: 0,
            replay: ReplayConfig::default(),
        }
    }
}

/// Why a TLS session cannot start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSessionError {
    /// TLS could not be set up with this configuration.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Counters of a TLS session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsSessionStats {
    /// Control packets with a message id sent for the first time.
    pub control_sent: u64,
    /// Control packets retransmitted.
    pub control_retransmitted: u64,
    /// `P_ACK_V1` packets sent.
    pub acks_sent: u64,
    /// Control packets received and accepted.
    pub control_received: u64,
    /// Control packets whose tls-auth/tls-crypt authentication failed.
    pub control_unauthentic: u64,
    /// Inner packets sealed by [`Tunnel::encapsulate`].
    pub packets_sent: u64,
    /// Inner packets handed up by [`Tunnel::decapsulate`].
    pub packets_received: u64,
    /// Keepalive pings sent.
    pub pings_sent: u64,
    /// Keepalive pings received.
    pub pings_received: u64,
    /// `PUSH_REQUEST`s sent.
    pub push_requests_sent: u64,
    /// Renegotiations completed (new data keys installed).
    pub renegotiations: u64,
    /// Outer packets dropped, by reason (control and data).
    pub drops: DropCounts,
}

/// Where the session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Handshaking; no data keys yet.
    Connecting,
    /// Data flows.
    Up,
    /// Telling the server we leave.
    Closing {
        until: Instant,
        /// `Some`: OCC_EXIT packets, the next one at this time; `None`: the EXIT message.
        next_occ_exit: Option<Instant>,
        /// Message id of the `EXIT` message's last packet, once queued.
        exit_message: Option<u32>,
    },
    /// Over.
    Down,
}

/// Which key state of the control channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Current,
    Next,
}

/// The control channel of one key id: its reliability layer, TLS session and key exchange.
struct KeyState {
    key_id: KeyId,
    reliable: Reliable,
    tls: RustlsSession,
    /// Our reset's message id (always 0).
    reset_id: u32,
    peer_reset_seen: bool,
    tls_started: bool,
    /// TLS bytes not yet cut into packets (the send window was full).
    tls_out: Vec<u8>,
    /// Plaintext received, not yet parsed.
    plaintext: Vec<u8>,
    key_source: ClientKeySource,
    key_method_sent: bool,
    server_keys: Option<ServerKeySource>,
    /// The server's options string, from its key-method message.
    server_options: String,
    /// Both key-method messages exchanged and ours acknowledged (OpenVPN's `S_ACTIVE`).
    active: bool,
    started: Instant,
    deadline: Instant,
}

impl KeyState {
    fn new(
        key_id: KeyId,
        reset: Opcode,
        tls_config: &TlsClientConfig,
        rng: &mut SeededRng,
        timeout: Duration,
        now: Instant,
        hand_window: Duration,
    ) -> Result<Self, TlsError> {
        let mut reliable = Reliable::new(timeout);
        let reset_id = reliable.queue(reset, Vec::new(), now).unwrap_or(0);
        Ok(Self {
            key_id,
            reliable,
            tls: RustlsSession::new(tls_config)?,
            reset_id,
            peer_reset_seen: false,
            tls_started: false,
            tls_out: Vec::new(),
            plaintext: Vec::new(),
            key_source: ClientKeySource::generate(rng),
            key_method_sent: false,
            server_keys: None,
            server_options: String::new(),
            active: false,
            started: now,
            deadline: now + hand_window,
        })
    }
}

impl core::fmt::Debug for KeyState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyState")
            .field("key_id", &self.key_id.get())
            .field("tls_started", &self.tls_started)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// What the push settled for every data key of the session.
#[derive(Clone, Copy, Debug)]
struct Negotiated {
    data: DataConfig,
    ekm: bool,
}

/// What `poll_transmit` sends over the data channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InBand {
    OccExit,
    OccReply,
    Ping,
}

/// An OpenVPN TLS client session. See the [module documentation](self).
#[derive(Debug)]
pub struct TlsSession {
    profile: Profile,
    /// Which of the profile's connections this session uses (its `mssfix`).
    connection_index: usize,
    transport: TransportSpec,
    wrap: ControlWrap,
    tls_config: TlsClientConfig,
    wall_time: WallTime,
    wall_clock: WallClock,
    rng: SeededRng,
    data_seed: Seed,
    user_pass: Option<Credentials>,
    auth_token: Option<SecretString>,
    options: String,
    peer_info: String,
    hand_window: Duration,
    tls_timeout: Duration,
    reneg_sec: Option<Duration>,
    tran_window: Duration,
    local_sid: SessionId,
    remote_sid: Option<SessionId>,
    /// The last replay id sent on a wrapped control packet.
    replay_sent: u32,
    replay_time: u32,
    replay_in: ReplayWindow,
    max_payload: usize,
    current: KeyState,
    next: Option<KeyState>,
    data: DataKeys,
    negotiated: Option<Negotiated>,
    push: PushAccumulator,
    tunnel_config: Option<TunnelConfig>,
    phase: Phase,
    ping: Option<Duration>,
    ping_restart: Option<Duration>,
    explicit_exit_notify: u32,
    cc_exit: bool,
    last_sent: Instant,
    last_received: Instant,
    push_request_at: Option<Instant>,
    push_deadline: Instant,
    reneg_at: Option<Instant>,
    promote_at: Option<Instant>,
    occ_reply_pending: bool,
    authentic_received: bool,
    max_overhead: Overhead,
    events: VecDeque<TunnelEvent>,
    stats: TlsSessionStats,
    now: Instant,
}

/// The data cipher a profile's cipher name stands for, with the profile's `auth` for CBC.
fn data_cipher(profile: &Profile, cipher: crate::config::DataCipher) -> Option<DataCipher> {
    DataCipher::from_openvpn_names(cipher.name(), profile.digest().name())
}

/// The data channel's framing for a configured or pushed compression option.
fn framing(compression: Option<ProfileCompression>) -> Compression {
    match compression {
        None | Some(ProfileCompression::Migrate) => Compression::None,
        Some(ProfileCompression::LzoStub) => Compression::LzoStub,
        Some(ProfileCompression::Lzo { .. }) => Compression::Lzo,
        Some(ProfileCompression::Stub) => Compression::Stub,
        Some(ProfileCompression::StubV2) => Compression::StubV2,
        Some(ProfileCompression::Lz4) => Compression::Lz4,
        Some(ProfileCompression::Lz4V2) => Compression::Lz4V2,
    }
}

/// The `cipher` token of an options string, when there is one.
fn options_cipher(options: &str) -> Option<&str> {
    options
        .split(',')
        .find_map(|item| item.strip_prefix("cipher "))
}

impl TlsSession {
    /// Starts a session at `now`; the hard reset is ready in [`Tunnel::poll_transmit`] at
    /// once. Every random byte (session id, key-method randoms, TLS) comes from `seed`.
    ///
    /// # Errors
    ///
    /// When TLS cannot be configured (the profile's TLS versions leave nothing erebus speaks).
    pub fn new(config: TlsConfig, seed: &Seed, now: Instant) -> Result<Self, TlsSessionError> {
        let provider = TlsProvider::new(seed);
        let tls_config = TlsClientConfig::from_profile(
            &provider,
            &config.profile,
            config.policy.clone(),
            config.client_credentials.as_ref(),
        )?;
        let mut rng = seed.child("openvpn.session").rng();
        let local_sid = loop {
            let sid = SessionId(rng.array());
            if sid.is_defined() {
                break sid;
            }
        };
        let current = KeyState::new(
            KeyId::ZERO,
            Opcode::ControlHardResetClientV2,
            &tls_config,
            &mut rng,
            config.tls_timeout,
            now,
            config.hand_window,
        )?;
        let ip_udp = if config.remote.is_ipv4() { 28 } else { 48 };
        let tcp_prefix = match config.transport {
            TransportKind::Udp => 0,
            TransportKind::TcpLengthPrefixed => 2,
        };
        // What is left of the datagram for TLS bytes with the most acknowledgements a packet
        // with a message id carries: 1144 bytes with tls-crypt over IPv4, as OpenVPN cuts.
        let max_payload = TLS_MTU
            .saturating_sub(ip_udp + tcp_prefix + config.wrap.overhead())
            .saturating_sub(ControlPacket::HEADER_LEN + 1 + 4 * MAX_PIGGYBACK_ACKS + 8 + 4)
            .max(64);
        let max_overhead = Self::max_overhead(&config.profile);
        let replay_time = u32::try_from(config.wall_clock.at(now).as_secs()).unwrap_or(u32::MAX);
        let options = keymethod::options_string(&config.profile, config.connection_index);
        let peer_info = keymethod::peer_info(&config.profile, &config.peer_info);
        Ok(Self {
            transport: TransportSpec::to_addr(config.remote, config.transport),
            wrap: config.wrap,
            wall_time: provider.wall_time().clone(),
            tls_config,
            wall_clock: config.wall_clock,
            rng,
            data_seed: seed.child("openvpn.data"),
            user_pass: config.user_pass,
            auth_token: config.auth_token,
            options,
            peer_info,
            hand_window: config.hand_window,
            tls_timeout: config.tls_timeout,
            reneg_sec: config.reneg_sec.filter(|d| !d.is_zero()),
            tran_window: config.tran_window,
            local_sid,
            remote_sid: None,
            replay_sent: 0,
            replay_time,
            replay_in: ReplayWindow::new(config.replay),
            max_payload,
            current,
            next: None,
            data: DataKeys::new(),
            negotiated: None,
            push: PushAccumulator::new(),
            tunnel_config: None,
            phase: Phase::Connecting,
            ping: config.ping.filter(|d| !d.is_zero()),
            ping_restart: config.ping_restart.filter(|d| !d.is_zero()),
            explicit_exit_notify: config.explicit_exit_notify,
            cc_exit: false,
            last_sent: now,
            last_received: now,
            push_request_at: None,
            push_deadline: now + config.hand_window,
            reneg_at: None,
            promote_at: None,
            occ_reply_pending: false,
            authentic_received: false,
            max_overhead,
            events: VecDeque::new(),
            stats: TlsSessionStats::default(),
            now,
            connection_index: config.connection_index,
            profile: config.profile,
        })
    }

    /// The most any negotiable cipher needs around an inner packet, with the 4-byte
    /// `P_DATA_V2` header and the largest compression framing.
    fn max_overhead(profile: &Profile) -> Overhead {
        let ciphers = profile
            .negotiable_ciphers()
            .iter()
            .copied()
            .chain(profile.data_ciphers_fallback)
            .chain(profile.cipher)
            .filter_map(|c| data_cipher(profile, c));
        let (mut headroom, mut tailroom) = (0, 0);
        for cipher in ciphers {
            headroom = headroom.max(cipher.headroom());
            tailroom = tailroom.max(cipher.tailroom());
        }
        Overhead {
            headroom: crate::packet::DataHeader::V2_LEN + headroom + 2,
            tailroom: tailroom + 1,
        }
    }

    /// The session's counters.
    pub fn stats(&self) -> TlsSessionStats {
        let mut stats = self.stats;
        stats.drops = stats.drops.merged(&self.data.drops());
        for ks in [Some(&self.current), self.next.as_ref()]
            .into_iter()
            .flatten()
        {
            let r = ks.reliable.stats();
            stats.control_sent += r.sent;
            stats.control_retransmitted += r.retransmitted;
        }
        stats
    }

    /// Our control-channel session id.
    pub fn local_session_id(&self) -> SessionId {
        self.local_sid
    }

    /// The server's session id, once its reset arrived.
    pub fn remote_session_id(&self) -> Option<SessionId> {
        self.remote_sid
    }

    /// The key id data packets are sent with, once there are data keys.
    pub fn data_key_id(&self) -> Option<KeyId> {
        self.data.primary_key_id()
    }

    /// The key id of the previous data key while it is still accepted.
    pub fn lame_duck_key_id(&self) -> Option<KeyId> {
        self.data.lame_duck_key_id()
    }

    /// The negotiated data cipher, once pushed.
    pub fn data_cipher(&self) -> Option<DataCipher> {
        self.negotiated.map(|n| n.data.cipher)
    }

    /// The options string this client sends in its key-method message.
    pub fn options_string(&self) -> &str {
        &self.options
    }

    /// The token the server pushed with `auth-token`, if any: give it to the next session
    /// ([`TlsConfig::auth_token`]) so a reconnect does not ask for the password again. `None`
    /// also after the server refused the token the session started with: the next session
    /// must send the password.
    pub fn auth_token(&self) -> Option<&SecretString> {
        self.auth_token.as_ref()
    }

    /// Whether data flows.
    pub fn is_up(&self) -> bool {
        self.phase == Phase::Up
    }

    /// Whether the session has ended.
    pub fn is_down(&self) -> bool {
        self.phase == Phase::Down
    }

    /// Whether a renegotiation is under way.
    pub fn is_renegotiating(&self) -> bool {
        self.next.is_some()
    }

    /// Starts a renegotiation now, as `reneg-sec` would. Ignored unless the session is up and
    /// no renegotiation is running.
    pub fn renegotiate(&mut self, now: Instant) {
        let now = self.advance(now);
        self.start_renegotiation(now);
        self.progress(now);
    }

    fn advance(&mut self, now: Instant) -> Instant {
        self.now = self.now.max(now);
        self.now
    }

    fn key_mut(&mut self, which: Which) -> Option<&mut KeyState> {
        match which {
            Which::Current => Some(&mut self.current),
            Which::Next => self.next.as_mut(),
        }
    }

    fn fail(&mut self, failure: Failure) {
        if self.phase == Phase::Down {
            return;
        }
        tracing::debug!(fault = ?failure.fault, message = %failure.message, "session down");
        self.phase = Phase::Down;
        self.data.clear();
        if let Some(next) = self.next.take() {
            self.retire_key_state(&next);
        }
        self.events.push_back(TunnelEvent::Down(failure));
    }

    /// A timeout's failure, pointing at the wrapping key when nothing authentic ever arrived
    /// but forged-looking packets did.
    fn timeout_failure(&self, what: &str) -> Failure {
        if !self.authentic_received && self.stats.control_unauthentic > 0 {
            let wrap = match self.wrap {
                ControlWrap::Auth(_) => "tls-auth key or key-direction",
                _ => "tls-crypt key",
            };
            return Failure::new(
                Fault::Config,
                format!(
                    "{what}: all {} control packets from the server failed authentication; \
                     the {wrap} differs from the server's",
                    self.stats.control_unauthentic
                ),
            );
        }
        Failure::new(Fault::Timeout, what.to_owned())
    }

    /// Keeps the counters of a key state that goes away.
    fn retire_key_state(&mut self, ks: &KeyState) {
        let r = ks.reliable.stats();
        self.stats.control_sent += r.sent;
        self.stats.control_retransmitted += r.retransmitted;
    }

    fn start_renegotiation(&mut self, now: Instant) {
        if self.phase != Phase::Up || self.next.is_some() {
            return;
        }
        let key_id = self.current.key_id.next();
        match KeyState::new(
            key_id,
            Opcode::ControlSoftResetV1,
            &self.tls_config,
            &mut self.rng,
            self.tls_timeout,
            now,
            self.hand_window,
        ) {
            Ok(ks) => {
                tracing::debug!(key_id = key_id.get(), "renegotiating");
                self.next = Some(ks);
            }
            Err(e) => self.fail(e.into()),
        }
    }

    /// Moves every key state forward after an input: starts TLS, sends the key-method
    /// message, cuts TLS output into packets, reads the server's messages.
    fn progress(&mut self, now: Instant) {
        for which in [Which::Current, Which::Next] {
            if self.phase == Phase::Down {
                return;
            }
            match self.progress_key(which, now) {
                Ok((messages, became_active)) => {
                    for message in messages {
                        self.handle_message(which, &message, now);
                        if self.phase == Phase::Down {
                            return;
                        }
                    }
                    if became_active {
                        self.key_active(which, now);
                    }
                }
                Err(failure) => self.fail(failure),
            }
        }
        if let Phase::Closing {
            exit_message: Some(id),
            ..
        } = self.phase
            && self.current.reliable.is_acknowledged(id)
        {
            self.fail(Failure::new(Fault::Closed, "the session was closed"));
        }
    }

    fn progress_key(&mut self, which: Which, now: Instant) -> Result<(Vec<String>, bool), Failure> {
        let password = self
            .auth_token
            .as_ref()
            .or(self.user_pass.as_ref().and_then(|c| c.password.as_ref()))
            .map(SecretString::expose)
            .unwrap_or_default();
        let credentials = self.user_pass.as_ref().map(|c| UserPass {
            username: &c.username,
            password,
        });
        let (options, peer_info, max_payload) = (&self.options, &self.peer_info, self.max_payload);
        let ks = match which {
            Which::Current => &mut self.current,
            Which::Next => match self.next.as_mut() {
                Some(ks) => ks,
                None => return Ok((Vec::new(), false)),
            },
        };
        if !ks.tls_started && ks.peer_reset_seen && ks.reliable.is_acknowledged(ks.reset_id) {
            ks.tls_started = true;
        }
        if !ks.tls_started {
            return Ok((Vec::new(), false));
        }
        if !ks.key_method_sent && !ks.tls.is_handshaking() {
            let mut message = Vec::new();
            keymethod::encode_client_message(
                &ks.key_source,
                options,
                credentials,
                peer_info,
                &mut message,
            )
            .map_err(|e| Failure::new(Fault::Config, e.to_string()))?;
            let sent = ks.tls.send_plaintext(&message);
            zeroize::Zeroize::zeroize(&mut message);
            sent?;
            ks.key_method_sent = true;
        }
        ks.tls.take_tls(&mut ks.tls_out);
        while !ks.tls_out.is_empty() && ks.reliable.can_queue() {
            let take = ks.tls_out.len().min(max_payload);
            let chunk: Vec<u8> = ks.tls_out.drain(..take).collect();
            ks.reliable.queue(Opcode::ControlV1, chunk, now);
        }
        ks.tls.take_plaintext(&mut ks.plaintext);
        let mut messages = Vec::new();
        if ks.server_keys.is_none() && !ks.plaintext.is_empty() {
            match keymethod::parse_server_message(&ks.plaintext) {
                Ok(Some((message, used))) => {
                    ks.plaintext.drain(..used);
                    ks.server_keys = Some(message.key_source.clone());
                    tracing::debug!(options = %message.options, "server key-method message");
                    ks.server_options = message.options;
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(Failure::new(
                        Fault::PeerMisbehaved,
                        format!("the server's key-method message: {e}"),
                    ));
                }
            }
        }
        if ks.server_keys.is_some() {
            messages = push::split_messages(&mut ks.plaintext);
        }
        if ks.plaintext.len() > push::MAX_MESSAGE_LEN * 32 {
            return Err(Failure::new(
                Fault::PeerMisbehaved,
                "the server sent control-channel text without a terminating NUL",
            ));
        }
        let became_active = !ks.active
            && ks.key_method_sent
            && ks.server_keys.is_some()
            && ks.tls_out.is_empty()
            && ks.reliable.all_acknowledged();
        if became_active {
            ks.active = true;
        }
        if ks.tls.peer_closed() && !ks.active {
            return Err(Failure::new(
                Fault::PeerMisbehaved,
                "the server closed TLS before the key exchange completed",
            ));
        }
        Ok((messages, became_active))
    }

    /// A key state finished its exchange: key 0 starts asking for the push; a renegotiated key
    /// becomes the control channel's current one and its data key is installed.
    fn key_active(&mut self, which: Which, now: Instant) {
        match which {
            Which::Current => {
                if self.phase == Phase::Connecting && self.tunnel_config.is_none() {
                    self.push_request_at = Some(now + PUSH_REQUEST_DELAY);
                }
            }
            Which::Next => {
                let Some(next) = self.next.take() else {
                    return;
                };
                let started = next.started;
                let old = core::mem::replace(&mut self.current, next);
                self.retire_key_state(&old);
                if let Err(failure) = self.install_data_key(Which::Current, false) {
                    self.fail(failure);
                    return;
                }
                self.stats.renegotiations += 1;
                let delay = match self.reneg_sec {
                    Some(reneg) => self.hand_window.min(reneg / 2),
                    None => self.hand_window,
                };
                self.promote_at = Some((started + delay).max(now));
                if self.data.needs_rekey() {
                    self.promote(now);
                }
                self.reneg_at = self.reneg_sec.map(|d| now + d);
            }
        }
    }

    /// Derives the data key of the key state `which` and installs it: as the only key (the
    /// first), or as the secondary one (a renegotiation).
    fn install_data_key(&mut self, which: Which, first: bool) -> Result<(), Failure> {
        let Some(negotiated) = self.negotiated else {
            return Err(Failure::new(
                Fault::PeerMisbehaved,
                "data keys asked for before any cipher was negotiated",
            ));
        };
        let (local, remote) = (self.local_sid, self.remote_sid.unwrap_or_default());
        let seed = self.data_seed.clone();
        let ks = self
            .key_mut(which)
            .ok_or_else(|| Failure::new(Fault::PeerMisbehaved, "no key state for the data key"))?;
        let key2 = if negotiated.ekm {
            Key2::from_ekm(&ks.tls)?
        } else {
            let server = ks.server_keys.as_ref().ok_or_else(|| {
                Failure::new(Fault::PeerMisbehaved, "no server key-method message")
            })?;
            Key2::from_legacy_prf(&ks.key_source, server, local.0, remote.0)
        };
        let key_id = ks.key_id;
        let channel = crate::data::DataChannel::from_key2(
            key2.as_bytes(),
            Key2Role::Client,
            key_id,
            &negotiated.data,
            &seed,
        )
        .map_err(|e| Failure::new(Fault::PeerMisbehaved, e.to_string()))?;
        let installed = if first {
            self.data.set_primary(channel)
        } else {
            self.data.install_secondary(channel)
        };
        installed.map_err(|e| Failure::new(Fault::PeerMisbehaved, e.to_string()))
    }

    fn promote(&mut self, now: Instant) {
        if self.data.secondary_key_id().is_some() {
            let _ = self.data.promote(now + self.tran_window);
            tracing::debug!(key_id = ?self.data.primary_key_id(), "sending with the new key");
        }
        self.promote_at = None;
    }

    fn handle_message(&mut self, which: Which, text: &str, now: Instant) {
        match ServerMessage::parse(text) {
            ServerMessage::PushReply(rest) => match self.push.feed(&self.profile, &rest) {
                Ok(Some(options)) => self.apply_push(which, options, now),
                Ok(None) => {}
                Err(e @ PushError::Rejected(_)) => {
                    self.fail(Failure::new(Fault::Config, e.to_string()))
                }
                Err(e) => self.fail(Failure::new(Fault::PeerMisbehaved, e.to_string())),
            },
            ServerMessage::AuthFailed { reason, .. } => {
                let reason = reason.unwrap_or_default();
                // A refused token says nothing about the password: the token expired, or the
                // server restarted with another token secret. Like the stock client, forget
                // it and let the next session authenticate with the password.
                if self.auth_token.take().is_some() {
                    let detail = if reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {reason}")
                    };
                    return self.fail(Failure::new(
                        Fault::Closed,
                        format!(
                            "the server refused the auth-token (AUTH_FAILED{detail}); \
                             authenticating with the password again"
                        ),
                    ));
                }
                let fault = if reason.contains("cipher negotiation failed") {
                    Fault::PeerIncompatible
                } else {
                    Fault::Auth
                };
                let detail = if reason.is_empty() {
                    String::new()
                } else {
                    format!(": {reason}")
                };
                self.fail(Failure::new(
                    fault,
                    format!("the server refused the authentication (AUTH_FAILED{detail})"),
                ));
            }
            ServerMessage::Restart { message, .. } => self.fail(Failure::new(
                Fault::Closed,
                format!(
                    "the server asked to reconnect (RESTART{})",
                    message.map(|m| format!(": {m}")).unwrap_or_default()
                ),
            )),
            ServerMessage::Halt(message) => self.fail(Failure::new(
                Fault::Halted,
                format!(
                    "the server ended the session for good (HALT{})",
                    message.map(|m| format!(": {m}")).unwrap_or_default()
                ),
            )),
            ServerMessage::Exit => self.fail(Failure::new(
                Fault::Closed,
                "the server is shutting down (EXIT)",
            )),
            ServerMessage::AuthPending { timeout } => {
                let extra = timeout.map_or(self.hand_window, |s| Duration::from_secs(u64::from(s)));
                self.push_deadline = self.push_deadline.max(now + extra);
                self.current.deadline = self.current.deadline.max(now + extra);
            }
            ServerMessage::InfoPre(text) | ServerMessage::Info(text) => {
                tracing::info!(info = %text, "message from the server");
            }
            ServerMessage::Unknown(text) => {
                tracing::debug!(message = %text, "unknown control message ignored");
            }
        }
    }

    fn apply_push(&mut self, which: Which, options: PushedOptions, now: Instant) {
        if let Some(token) = options.auth_token.clone() {
            self.auth_token = Some(token);
        }
        if self.phase != Phase::Connecting || which != Which::Current {
            // A later push (after a renegotiation) refreshes the token only.
            return;
        }
        let negotiated = match self.negotiate(&options) {
            Ok(n) => n,
            Err(failure) => return self.fail(failure),
        };
        let config = match options.tunnel_config(&self.profile) {
            Ok(config) => config,
            Err(e) => return self.fail(Failure::new(Fault::PeerMisbehaved, e.to_string())),
        };
        self.negotiated = Some(negotiated);
        if let Err(failure) = self.install_data_key(Which::Current, true) {
            return self.fail(failure);
        }
        if let Some(ping) = options.ping {
            self.ping = (ping > 0).then(|| Duration::from_secs(u64::from(ping)));
        }
        if let Some(restart) = options.ping_restart {
            self.ping_restart = (restart > 0).then(|| Duration::from_secs(u64::from(restart)));
        }
        if let Some(exit) = options.explicit_exit_notify {
            self.explicit_exit_notify = exit;
        }
        self.cc_exit = options.protocol_flags.cc_exit;
        self.push_request_at = None;
        self.phase = Phase::Up;
        self.last_received = now;
        self.last_sent = now;
        self.reneg_at = self.reneg_sec.map(|d| self.current.started + d);
        tracing::info!(
            cipher = ?negotiated.data.cipher,
            ekm = negotiated.ekm,
            compression = ?negotiated.data.compression,
            "tunnel up"
        );
        let mut config = config;
        config.cipher = Some(negotiated.data.cipher.label());
        config.tcp_mss = self.mssfix_limit(&negotiated.data);
        self.tunnel_config = Some(config.clone());
        self.events.push_back(TunnelEvent::Up(config));
    }

    /// The TCP MSS the profile's `mssfix` allows with this data channel; `None` without
    /// `mssfix` (the server clamps the segments it forwards by its own) or with `mssfix 0`.
    fn mssfix_limit(&self, data: &DataConfig) -> Option<u16> {
        let mssfix = self
            .profile
            .connections
            .get(self.connection_index)
            .or_else(|| self.profile.connections.first())
            .and_then(|connection| connection.mssfix)?;
        let header = if data.peer_id.is_some() { 4 } else { 1 };
        let overhead = header
            + data.cipher.headroom()
            + data.cipher.tailroom()
            + data.compression.headroom()
            + data.compression.tailroom();
        mssfix.tcp_mss(
            overhead,
            self.transport.kind == TransportKind::TcpLengthPrefixed,
        )
    }

    /// The data channel's parameters from the push, checked against the profile.
    fn negotiate(&self, options: &PushedOptions) -> Result<Negotiated, Failure> {
        let profile = &self.profile;
        let allowed = |c: crate::config::DataCipher| {
            profile.negotiable_ciphers().contains(&c) || profile.data_ciphers_fallback == Some(c)
        };
        let cipher = match options.cipher {
            Some(pushed) if allowed(pushed) => pushed,
            Some(pushed) => {
                return Err(Failure::new(
                    Fault::PeerIncompatible,
                    format!(
                        "the server chose the data cipher {}, which is not in data-ciphers ({})",
                        pushed.name(),
                        profile
                            .negotiable_ciphers()
                            .iter()
                            .map(|c| c.name())
                            .collect::<Vec<_>>()
                            .join(":")
                    ),
                ));
            }
            None => {
                // An old server: its options string's cipher if we allow it, else our fallback.
                let from_server = options_cipher(&self.current.server_options).and_then(|name| {
                    crate::config::DataCipher::ALL
                        .into_iter()
                        .find(|c| c.name().eq_ignore_ascii_case(name))
                        .filter(|c| allowed(*c))
                });
                from_server
                    .or(profile.data_ciphers_fallback)
                    .or(profile.cipher)
                    .ok_or_else(|| {
                        Failure::new(
                            Fault::PeerIncompatible,
                            "the server pushed no data cipher and the profile has no \
                             data-ciphers-fallback",
                        )
                    })?
            }
        };
        let data_cipher = data_cipher(profile, cipher).ok_or_else(|| {
            Failure::new(
                Fault::PeerIncompatible,
                format!("the data cipher {} is not supported", cipher.name()),
            )
        })?;
        let peer_id = match options.peer_id {
            Some(id) => Some(PeerId::new(id).ok_or_else(|| {
                Failure::new(
                    Fault::PeerMisbehaved,
                    format!("pushed peer-id {id} is out of range"),
                )
            })?),
            None => None,
        };
        let compression = framing(options.compression.or(profile.compression));
        let mut data = DataConfig::new(data_cipher);
        data.peer_id = peer_id;
        data.compression = compression;
        data.replay = self.replay_in.config();
        Ok(Negotiated {
            data,
            ekm: options.uses_tls_ekm(),
        })
    }

    /// Queues a NUL-terminated control message on the current key's TLS session.
    fn send_control_message(&mut self, text: &str) -> Result<(), Failure> {
        let mut message = Vec::with_capacity(text.len() + 1);
        message.extend_from_slice(text.as_bytes());
        message.push(0);
        self.current.tls.send_plaintext(&message)?;
        Ok(())
    }

    /// Processes a control packet in place.
    fn decapsulate_control(
        &mut self,
        now: Instant,
        packet: &mut [u8],
    ) -> Result<Decapsulated, DropReason> {
        let (replay, len) = self.wrap.unwrap(packet).map_err(|_| {
            self.stats.control_unauthentic += 1;
            DropReason::Unauthentic
        })?;
        let plain = packet.get(..len).ok_or(DropReason::Malformed)?;
        let control = ControlPacket::parse(plain).map_err(|_| DropReason::Malformed)?;
        let replay = replay.map(|r| PacketId {
            id: r.packet_id,
            time: r.time,
        });
        if let Some(pid) = replay {
            self.replay_in
                .check(pid, now)
                .map_err(|_| DropReason::Replayed)?;
        }
        let opcode = control.op.opcode;
        let key_id = control.op.key_id;
        match opcode {
            Opcode::ControlHardResetServerV2
            | Opcode::ControlSoftResetV1
            | Opcode::ControlV1
            | Opcode::AckV1 => {}
            _ => return Err(DropReason::Unsupported),
        }
        match self.remote_sid {
            None if opcode == Opcode::ControlHardResetServerV2 && key_id == KeyId::ZERO => {}
            None => return Err(DropReason::NotReady),
            Some(sid) if sid == control.session_id => {}
            Some(_) => return Err(DropReason::UnknownKey),
        }
        if !control.body.acks.is_empty() && control.body.remote_session_id != Some(self.local_sid) {
            return Err(DropReason::UnknownKey);
        }
        if opcode == Opcode::ControlHardResetServerV2 && key_id != KeyId::ZERO {
            return Err(DropReason::Malformed);
        }
        let which = if key_id == self.current.key_id {
            Which::Current
        } else if self.next.as_ref().is_some_and(|k| k.key_id == key_id) {
            Which::Next
        } else if opcode == Opcode::ControlSoftResetV1
            && self.phase == Phase::Up
            && self.next.is_none()
            && key_id == self.current.key_id.next()
        {
            // The server renegotiates: answer with our own soft reset under its key id.
            let ks = KeyState::new(
                key_id,
                Opcode::ControlSoftResetV1,
                &self.tls_config,
                &mut self.rng,
                self.tls_timeout,
                now,
                self.hand_window,
            )
            .map_err(|_| DropReason::NotReady)?;
            tracing::debug!(key_id = key_id.get(), "the server renegotiates");
            self.next = Some(ks);
            Which::Next
        } else {
            return Err(DropReason::UnknownKey);
        };
        // Accepted: from here on the packet changes state.
        if let Some(pid) = replay {
            self.replay_in.commit(pid, now);
        }
        if self.remote_sid.is_none() {
            self.remote_sid = Some(control.session_id);
        }
        self.authentic_received = true;
        self.last_received = now;
        self.stats.control_received += 1;
        let unix_now = self.wall_clock.at(now);
        self.wall_time.set(unix_now);
        let mut tls_error = None;
        if let Some(ks) = self.key_mut(which) {
            ks.reliable.acknowledge(control.body.acks.as_slice(), now);
            if let Some(id) = control.body.message_id {
                ks.reliable.receive(id, opcode, control.body.payload);
            }
            while let Some((opcode, payload)) = ks.reliable.take_in_order() {
                match opcode {
                    Opcode::ControlHardResetServerV2 | Opcode::ControlSoftResetV1
                        if !ks.peer_reset_seen =>
                    {
                        ks.peer_reset_seen = true;
                        // The peer is there: whatever waits for a retry goes now.
                        ks.reliable.retransmit_now(now);
                    }
                    Opcode::ControlV1 if ks.peer_reset_seen => {
                        if let Err(e) = ks.tls.feed(unix_now, &payload) {
                            tls_error = Some(e);
                            break;
                        }
                    }
                    _ => {}
                }
            }
        }
        if let Some(e) = tls_error {
            self.fail(e.into());
            return Ok(Decapsulated::Consumed);
        }
        self.progress(now);
        Ok(Decapsulated::Consumed)
    }

    /// Processes a data packet in place.
    fn decapsulate_data(
        &mut self,
        now: Instant,
        packet: &mut [u8],
    ) -> Result<Decapsulated, DropReason> {
        let key_id = packet.first().map(|b| KeyId::new(b & 7));
        let payload = self.data.open(now, packet)?;
        self.last_received = now;
        if key_id.flatten().is_some() && key_id.flatten() == self.data.secondary_key_id() {
            // The server sends with the new key: so can we.
            self.promote(now);
        }
        match inband::classify(packet.get(payload.clone()).unwrap_or(&[])) {
            Payload::Ping => {
                self.stats.pings_received += 1;
                Ok(Decapsulated::Consumed)
            }
            Payload::Occ(OccMessage::Request) => {
                self.occ_reply_pending = true;
                Ok(Decapsulated::Consumed)
            }
            Payload::Occ(OccMessage::Exit) => {
                self.fail(Failure::new(
                    Fault::Closed,
                    "the server sent an exit notification",
                ));
                Ok(Decapsulated::Consumed)
            }
            Payload::Occ(_) => Ok(Decapsulated::Consumed),
            Payload::Packet => {
                self.stats.packets_received += 1;
                Ok(Decapsulated::Inner(payload))
            }
        }
    }

    /// The next control packet of key state `which`, written into `buf`.
    fn transmit_control(
        &mut self,
        which: Which,
        now: Instant,
        buf: &mut [u8],
    ) -> Option<Result<usize, usize>> {
        let (local, remote) = (self.local_sid, self.remote_sid);
        let ks = match which {
            Which::Current => &mut self.current,
            Which::Next => self.next.as_mut()?,
        };
        let message = ks.reliable.next_due(now);
        let max_acks = match message {
            Some(_) => MAX_PIGGYBACK_ACKS,
            None if ks.reliable.has_pending_acks() && remote.is_some() => AckList::MAX,
            None => return None,
        };
        let acks = match remote {
            Some(_) => ks.reliable.ack_list(max_acks),
            None => AckList::new(),
        };
        let packet = ControlPacket {
            op: OpcodeByte {
                opcode: message.map_or(Opcode::AckV1, |m| m.opcode),
                key_id: ks.key_id,
            },
            session_id: local,
            body: ControlBody {
                acks,
                remote_session_id: remote.filter(|_| !acks.is_empty()),
                message_id: message.map(|m| m.message_id),
                payload: message.map_or(&[][..], |m| m.payload),
            },
        };
        let plain_len = packet.encoded_len();
        let needed = plain_len + self.wrap.overhead();
        if buf.len() < needed {
            return Some(Err(needed));
        }
        packet.emit(buf).ok()?;
        let replay = ReplayId {
            packet_id: self.replay_sent.wrapping_add(1),
            time: self.replay_time,
        };
        let len = self.wrap.wrap(replay, buf, plain_len).ok()?;
        self.replay_sent = replay.packet_id;
        let message_id = message.map(|m| m.message_id);
        match message_id {
            Some(id) => ks.reliable.sent(id, now),
            None => self.stats.acks_sent += 1,
        }
        ks.reliable.acks_sent(&acks);
        self.last_sent = now;
        Some(Ok(len))
    }

    fn ping_due(&self) -> Option<Instant> {
        (self.phase == Phase::Up)
            .then_some(self.ping)
            .flatten()
            .map(|ping| self.last_sent + ping)
    }

    /// The in-band message due at `now`, if any.
    fn due_in_band(&self, now: Instant) -> Option<InBand> {
        if !self.data.is_ready() {
            return None;
        }
        match self.phase {
            Phase::Closing {
                next_occ_exit: Some(at),
                until,
                ..
            } if now >= at && now < until => Some(InBand::OccExit),
            Phase::Up if self.occ_reply_pending => Some(InBand::OccReply),
            Phase::Up if self.ping_due().is_some_and(|at| now >= at) => Some(InBand::Ping),
            _ => None,
        }
    }

    fn transmit_in_band(
        &mut self,
        kind: InBand,
        now: Instant,
        buf: &mut [u8],
    ) -> Option<Result<usize, usize>> {
        let overhead = self.data.overhead()?;
        let payload_len = match kind {
            InBand::OccExit => inband::OCC_MAGIC.len() + 1,
            InBand::OccReply => inband::occ_reply_len(self.options.as_bytes()),
            InBand::Ping => inband::PING_MAGIC.len(),
        };
        let needed = overhead.headroom + payload_len + overhead.tailroom;
        if buf.len() < needed {
            return Some(Err(needed));
        }
        let payload = buf.get_mut(overhead.headroom..)?;
        let written = match kind {
            InBand::OccExit => inband::write_occ(payload, occ_opcode::EXIT),
            InBand::OccReply => inband::write_occ_reply(payload, self.options.as_bytes()),
            InBand::Ping => inband::write_ping(payload),
        }?;
        let outer = self
            .data
            .seal(now, buf, overhead.headroom..overhead.headroom + written)
            .ok()?;
        // Under the v2 framings the packet may start after byte 0: move it to the front.
        let len = outer.len();
        buf.copy_within(outer, 0);
        self.last_sent = now;
        match kind {
            InBand::OccExit => {
                if let Phase::Closing {
                    until,
                    next_occ_exit: Some(at),
                    exit_message,
                } = self.phase
                {
                    self.phase = Phase::Closing {
                        until,
                        next_occ_exit: Some(at.max(now) + Duration::from_secs(1)),
                        exit_message,
                    };
                }
            }
            InBand::OccReply => self.occ_reply_pending = false,
            InBand::Ping => self.stats.pings_sent += 1,
        }
        Some(Ok(len))
    }
}

impl Tunnel for TlsSession {
    fn transport(&self) -> Option<&TransportSpec> {
        (self.phase != Phase::Down).then_some(&self.transport)
    }

    fn transport_connected(&mut self, now: Instant, _remote: SocketAddr) {
        self.advance(now);
    }

    /// Over TCP the session cannot go on without its stream; over UDP a failed socket is as
    /// good as a silent server. Either way the session is over: a supervisor starts another.
    fn transport_closed(&mut self, now: Instant, error: TransportError) {
        self.advance(now);
        self.fail(Failure::new(Fault::Timeout, error.to_string()));
    }

    /// The most any cipher the profile may negotiate needs, with the `P_DATA_V2` header and
    /// the largest compression framing: the same before and after the push.
    fn overhead(&self) -> Overhead {
        self.max_overhead
    }

    fn decapsulate(&mut self, now: Instant, packet: &mut [u8]) -> Result<Decapsulated, DropReason> {
        let now = self.advance(now);
        let result = if self.phase == Phase::Down {
            Err(DropReason::NotReady)
        } else {
            match packet.first().map(|&b| OpcodeByte::parse(b)) {
                None | Some(Err(_)) => Err(DropReason::Malformed),
                Some(Ok(op)) if op.opcode.is_data() => {
                    // Counted by the data keys themselves.
                    return self.decapsulate_data(now, packet);
                }
                Some(Ok(_)) => self.decapsulate_control(now, packet),
            }
        };
        if let Err(reason) = result {
            self.stats.drops.record(reason);
        }
        result
    }

    fn encapsulate(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        inner: Range<usize>,
    ) -> Result<Range<usize>, DropReason> {
        let now = self.advance(now);
        if self.phase != Phase::Up {
            return Err(DropReason::NotReady);
        }
        let mtu = self.tunnel_config.as_ref().map_or(MAX_TUN_MTU, |c| c.mtu);
        if inner.len() > usize::from(mtu) {
            return Err(DropReason::Malformed);
        }
        let outer = self.data.seal(now, buf, inner)?;
        self.last_sent = now;
        self.stats.packets_sent += 1;
        if self.data.needs_rekey() {
            self.start_renegotiation(now);
            self.progress(now);
        }
        Ok(outer)
    }

    fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance(now);
        if self.phase == Phase::Down {
            return;
        }
        self.data.handle_timeout(now);
        if !self.current.active && now >= self.current.deadline && self.phase == Phase::Connecting {
            let what = format!(
                "the TLS handshake with the server did not complete within hand-window ({} s)",
                self.hand_window.as_secs()
            );
            let failure = self.timeout_failure(&what);
            return self.fail(failure);
        }
        if let Some(next) = &self.next
            && now >= next.deadline
        {
            return self.fail(Failure::new(
                Fault::Timeout,
                format!(
                    "the renegotiation of key {} did not complete within hand-window ({} s)",
                    next.key_id.get(),
                    self.hand_window.as_secs()
                ),
            ));
        }
        if self.phase == Phase::Connecting && self.current.active && now >= self.push_deadline {
            return self.fail(Failure::new(
                Fault::Timeout,
                "no reply from the server to PUSH_REQUEST within hand-window",
            ));
        }
        if self.phase == Phase::Connecting
            && let Some(at) = self.push_request_at
            && now >= at
        {
            match self.send_control_message("PUSH_REQUEST") {
                Ok(()) => {
                    self.stats.push_requests_sent += 1;
                    self.push_request_at = Some(now + PUSH_REQUEST_INTERVAL);
                }
                Err(failure) => return self.fail(failure),
            }
        }
        if matches!(self.phase, Phase::Up | Phase::Closing { .. })
            && let Some(limit) = self.ping_restart
            && now >= self.last_received + limit
        {
            return self.fail(Failure::new(
                Fault::Timeout,
                format!(
                    "nothing received from the server for {} s (ping-restart)",
                    limit.as_secs()
                ),
            ));
        }
        if let Phase::Closing { until, .. } = self.phase
            && now >= until
        {
            return self.fail(Failure::new(Fault::Closed, "the session was closed"));
        }
        if self.promote_at.is_some_and(|at| now >= at) {
            self.promote(now);
        }
        if self.reneg_at.is_some_and(|at| now >= at) || self.data.needs_rekey() {
            self.reneg_at = None;
            self.start_renegotiation(now);
        }
        self.progress(now);
    }

    /// Closes the session. Over UDP with `explicit-exit-notify`, tells the server first: the
    /// `EXIT` message when it pushed `cc-exit` (down once acknowledged, or after that many
    /// seconds), else `OCC_EXIT` once a second for that many seconds. Otherwise, and before the
    /// tunnel is up, reports [`TunnelEvent::Down`] at once.
    fn close(&mut self, now: Instant) {
        let now = self.advance(now);
        if self.phase != Phase::Up && self.phase != Phase::Connecting {
            return;
        }
        let notify = self.transport.kind == TransportKind::Udp && self.explicit_exit_notify > 0;
        if self.phase == Phase::Connecting || !notify {
            return self.fail(Failure::new(Fault::Closed, "the session was closed"));
        }
        let until = now + Duration::from_secs(u64::from(self.explicit_exit_notify));
        if self.cc_exit {
            if let Err(failure) = self.send_control_message("EXIT") {
                return self.fail(failure);
            }
            self.progress(now);
            let exit_message = self.current.reliable.newest_unacknowledged();
            self.phase = Phase::Closing {
                until,
                next_occ_exit: None,
                exit_message,
            };
        } else {
            self.phase = Phase::Closing {
                until,
                next_occ_exit: Some(now),
                exit_message: None,
            };
        }
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Result<usize, usize>> {
        let now = self.advance(now);
        if self.phase == Phase::Down {
            return None;
        }
        for which in [Which::Current, Which::Next] {
            if let Some(result) = self.transmit_control(which, now, buf) {
                return Some(result);
            }
        }
        let kind = self.due_in_band(now)?;
        self.transmit_in_band(kind, now, buf)
    }

    fn poll_event(&mut self) -> Option<TunnelEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        if self.phase == Phase::Down {
            return None;
        }
        let mut deadlines: Vec<(Instant, &'static str)> = Vec::with_capacity(12);
        for ks in [Some(&self.current), self.next.as_ref()]
            .into_iter()
            .flatten()
        {
            if let Some(at) = ks.reliable.poll_timeout() {
                deadlines.push((at, "control-retransmit"));
            }
            if ks.reliable.has_pending_acks() && self.remote_sid.is_some() {
                deadlines.push((self.now, "control-ack"));
            }
            if !ks.active {
                deadlines.push((ks.deadline, "hand-window"));
            }
        }
        if self.phase == Phase::Connecting {
            if let Some(at) = self.push_request_at {
                deadlines.push((at, "push-request"));
            }
            if self.current.active {
                deadlines.push((self.push_deadline, "push-reply"));
            }
        }
        if let Some(at) = self.ping_due() {
            deadlines.push((at, "ping"));
        }
        if self.occ_reply_pending && self.phase == Phase::Up {
            deadlines.push((self.now, "occ-reply"));
        }
        if matches!(self.phase, Phase::Up | Phase::Closing { .. })
            && let Some(limit) = self.ping_restart
        {
            deadlines.push((self.last_received + limit, "ping-restart"));
        }
        if let Phase::Closing {
            until,
            next_occ_exit,
            ..
        } = self.phase
        {
            deadlines.push((until, "close"));
            if let Some(at) = next_occ_exit.filter(|at| *at < until) {
                deadlines.push((at, "explicit-exit-notify"));
            }
        }
        if let Some(at) = self.promote_at {
            deadlines.push((at, "key-transition"));
        }
        if let Some(at) = self.reneg_at.filter(|_| self.phase == Phase::Up) {
            deadlines.push((at, "reneg-sec"));
        }
        if let Some(at) = self.data.poll_timeout() {
            deadlines.push((at, "lame-duck"));
        }
        deadlines.into_iter().min_by_key(|(at, _)| *at)
    }
}
