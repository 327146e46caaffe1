//! The TCP socket: a pure state machine over [`TcpRepr`]s.
//!
//! Read RFC 9293 (the protocol), RFC 7323 (window scaling and timestamps), RFC 2018 and
//! RFC 6675 (SACK and SACK-based loss recovery), RFC 6298 (the retransmission timer),
//! RFC 5681 and RFC 6582 (congestion control, NewReno), RFC 9438 (CUBIC) and RFC 1122 (delayed
//! acknowledgments, silly window avoidance) before changing this module.
//!
//! # Shape
//!
//! The socket never sees a clock or a buffer of the network: the stack above hands it parsed
//! segments with [`TcpSocket::process`], asks it for the next segment with
//! [`TcpSocket::dispatch`] (one segment per call, borrowed from the socket's own send buffer,
//! so the caller can write it straight into an outgoing packet), and asks when to come back
//! with [`TcpSocket::poll_at`]. The application side is [`TcpSocket::send`],
//! [`TcpSocket::recv`], [`TcpSocket::close`] and [`TcpSocket::take_events`].
//!
//! # Loss recovery in one paragraph
//!
//! Every byte between the oldest unacknowledged one (`snd_una`) and the highest sent
//! (`snd_max`) is either acknowledged selectively (the SACK scoreboard), deemed lost and
//! waiting for retransmission (`rexmit_from..lost_until`, minus SACKed bytes), or in flight.
//! The congestion window bounds the estimate of bytes in flight ("pipe", RFC 6675). Three
//! duplicate acknowledgments or more than two segments' worth of SACKed bytes start fast
//! recovery: the window is reduced once, everything below the highest SACKed byte is deemed
//! lost, and each partial acknowledgment marks the next segment lost (NewReno). A
//! retransmission timeout deems everything outstanding lost and restarts from one segment.

pub mod congestion;
pub mod rtt;

#[cfg(test)]
mod close_tests;
#[cfg(test)]
mod tests;

use core::fmt;
use core::time::Duration;
use std::net::SocketAddr;

use erebus_sansio::{Instant, Seed, SeededRng};
use erebus_wire::tcp::{MAX_SACK_BLOCKS, SackBlock, SeqNumber, TcpControl, TcpRepr, TcpTimestamp};

use crate::assembler::Assembler;
use crate::ring::RingBuffer;
use congestion::{CongestionAlgorithm, CongestionController};
use rtt::RttEstimator;

/// The connection states of RFC 9293 section 3.3.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// No connection.
    Closed,
    /// Waiting for a SYN.
    Listen,
    /// SYN sent, waiting for the SYN-ACK.
    SynSent,
    /// SYN received and answered, waiting for its acknowledgment.
    SynReceived,
    /// Open in both directions.
    Established,
    /// We closed; our FIN is not acknowledged yet.
    FinWait1,
    /// We closed and our FIN is acknowledged; the peer may still send.
    FinWait2,
    /// The peer closed; we may still send.
    CloseWait,
    /// Both closed at once; our FIN is not acknowledged yet.
    Closing,
    /// The peer closed, then we did; waiting for the acknowledgment of our FIN.
    LastAck,
    /// Both closed; lingering so that a lost final ACK can be repeated.
    TimeWait,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why a connection ended abnormally. Kept in [`TcpSocket::error`] once the socket is
/// closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ConnectionError {
    /// The peer answered our SYN with a reset: nothing listens there.
    #[error("connection refused")]
    Refused,
    /// The peer reset an open connection.
    #[error("connection reset by peer")]
    Reset,
    /// Too many retransmissions (or keepalive probes) went unanswered.
    #[error("connection timed out")]
    TimedOut,
    /// The network reported the destination unreachable while connecting.
    #[error("destination unreachable")]
    Unreachable,
    /// The local side aborted the connection.
    #[error("connection aborted")]
    Aborted,
}

/// Why [`TcpSocket::connect`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ConnectError {
    /// The socket is not closed.
    #[error("socket is already in use")]
    InvalidState,
    /// A port is zero or the address families differ.
    #[error("address cannot be used")]
    Unaddressable,
}

/// Why [`TcpSocket::listen`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ListenError {
    /// The socket is not closed.
    #[error("socket is already in use")]
    InvalidState,
    /// The port is zero.
    #[error("address cannot be used")]
    Unaddressable,
}

/// Why [`TcpSocket::send`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SendError {
    /// The connection is not open for sending (never opened, closed by us, or failed).
    #[error("socket cannot send in this state")]
    InvalidState,
}

/// Why [`TcpSocket::recv`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum RecvError {
    /// The connection is not open for receiving.
    #[error("socket cannot receive in this state")]
    InvalidState,
    /// The peer closed its direction and every byte was read.
    #[error("peer finished sending")]
    Finished,
}

/// Things that happened to a socket since the application last asked, as bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Events(u8);

impl Events {
    /// No event.
    pub const NONE: Self = Self(0);
    /// The handshake completed.
    pub const CONNECTED: Self = Self(1);
    /// New bytes (or the end of the stream) can be read.
    pub const READABLE: Self = Self(2);
    /// Send buffer space was freed.
    pub const WRITABLE: Self = Self(4);
    /// The connection is over (closed, timed out, reset or refused); see
    /// [`TcpSocket::error`].
    pub const CLOSED: Self = Self(8);

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Sets the bits of `other`.
    pub fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }
}

impl core::ops::BitOr for Events {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Self::CONNECTED, "CONNECTED"),
            (Self::READABLE, "READABLE"),
            (Self::WRITABLE, "WRITABLE"),
            (Self::CLOSED, "CLOSED"),
        ];
        let mut first = true;
        f.write_str("Events(")?;
        for (bit, name) in names {
            if self.contains(bit) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        f.write_str(")")
    }
}

/// Tunables of a TCP socket. The defaults suit proxied bulk traffic over a VPN tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// The largest receive buffer in bytes; it bounds the window we advertise. The window
    /// starts at [`INITIAL_RECEIVE_WINDOW`](Self::INITIAL_RECEIVE_WINDOW) and grows towards
    /// this while the application keeps up with the data (receive-buffer autotuning), and the
    /// memory behind it grows only as far as unread data needs.
    pub rx_buffer_size: usize,
    /// Send buffer size in bytes; it bounds the data in flight. Its memory grows only as far
    /// as queued data needs.
    pub tx_buffer_size: usize,
    /// The receive memory of all connections of a [`Stack`](crate::Stack) together (like
    /// Linux's `tcp_mem`): each connection may hold its share of it, unread bytes plus the
    /// window it advertises, and never less than [`MIN_RECEIVE_SHARE`](Self::MIN_RECEIVE_SHARE).
    /// A thousand connections whose applications stop reading then hold this much, not a
    /// thousand full windows, while a few busy ones still get their whole buffers.
    pub receive_memory: usize,
    /// The largest segment payload we accept and send (MTU minus IP and TCP headers).
    pub mss: u16,
    /// Offer window scaling (RFC 7323); without it the window stops at 64 KiB.
    pub window_scaling: bool,
    /// Offer timestamps (RFC 7323) for RTT measurement.
    pub timestamps: bool,
    /// Offer selective acknowledgments (RFC 2018).
    pub sack: bool,
    /// Delay for acknowledgments of in-order data, or `None` to acknowledge every segment.
    pub delayed_ack: Option<Duration>,
    /// Data segments acknowledged at once, before delayed acknowledgments apply, at the start
    /// of a connection and again whenever data arrives after longer than the retransmission
    /// timeout without any (Linux's quick-ACK mode). A peer that holds back its next small
    /// segment until the last one is acknowledged (Nagle's algorithm: an HTTP server writing
    /// its head, then its body) would otherwise wait out the whole delay on every exchange.
    pub quick_acks: u32,
    /// Full-sized segments' worth of in-order data acknowledged together, once the quick ACKs
    /// are spent (a stretch ACK). Less waits for the delayed-ACK timer, unless a segment
    /// carries PSH (its sender has nothing more queued and may wait for this ACK): then the
    /// ACK leaves with the next output, after everything that arrived in the same batch. Each
    /// ACK costs a tunnel server a decryption and a TUN write; Linux, with GRO, likewise
    /// acknowledges a coalesced batch of segments at once. 2 is the classic rule of RFC 1122;
    /// a Linux sender grows its window by the segments acknowledged, not by the ACKs, so
    /// stretch ACKs do not slow it down. Values below 2 act as 2.
    pub ack_every: u32,
    /// Nagle's algorithm: hold back small segments while data is unacknowledged. Off by
    /// default, because a proxy forwards whatever it reads and latency matters more.
    pub nagle: bool,
    /// Send keepalive probes after this much idle time.
    pub keep_alive: Option<Duration>,
    /// Unanswered keepalive probes before the connection is declared dead.
    pub keep_alive_probes: u32,
    /// How long TIME-WAIT lasts (2 MSL).
    pub time_wait: Duration,
    /// How long a socket the application released ([`TcpSocket::release`]) waits in
    /// FIN-WAIT-2 for the peer's FIN before it closes (Linux's `tcp_fin_timeout`). A peer that
    /// never closes its direction would otherwise keep the socket for ever, with nobody left
    /// to read what it sends. A socket the application still holds waits as long as it is
    /// held, since the application may still be reading.
    pub fin_wait_2_timeout: Duration,
    /// The retransmission timeout before any RTT sample.
    pub initial_rto: Duration,
    /// The lowest retransmission timeout.
    pub min_rto: Duration,
    /// The highest retransmission timeout (backoff stops there).
    pub max_rto: Duration,
    /// Consecutive timeouts of the same data before the connection is aborted.
    pub max_retransmissions: u32,
    /// SYN (or SYN-ACK) retransmissions before the connection attempt fails.
    pub max_syn_retransmissions: u32,
    /// The congestion controller.
    pub congestion: CongestionAlgorithm,
}

impl TcpConfig {
    /// The default buffer size: 2 MiB each way, enough to keep a 1.5 Gbit/s path with 10 ms of
    /// RTT full.
    pub const DEFAULT_BUFFER: usize = 2 << 20;

    /// The receive window a connection starts with (at most the receive buffer size), like
    /// Linux's default `tcp_rmem`: enough for a modest path, and a thousand idle-but-open
    /// connections cannot be sent more than this each before their applications read.
    pub const INITIAL_RECEIVE_WINDOW: usize = 64 << 10;

    /// The send buffer a connection starts with (at most the send buffer size). It grows to
    /// twice the congestion window as that opens, as Linux sizes `sk_sndbuf`: enough that the
    /// sender never starves between ACKs, and a slow path does not hold the application's
    /// whole 2 MiB queued.
    pub const INITIAL_SEND_BUFFER: usize = 64 << 10;

    /// How long a connection's buffers stay allocated after it last sent or received: when
    /// they are empty by then, their storage is freed (their capacities stay, so they grow
    /// again when data comes). An idle keep-alive connection then costs its socket, not its
    /// last burst's buffers.
    pub const IDLE_BUFFER_RELEASE: Duration = Duration::from_secs(1);

    /// The default [`receive_memory`](Self::receive_memory): 8 MiB, four full 2 MiB windows,
    /// or 8 KiB each for a thousand connections.
    pub const DEFAULT_RECEIVE_MEMORY: usize = 8 << 20;

    /// The least receive share a connection gets however many there are: a window of a few
    /// segments keeps data moving (and fast retransmit possible).
    pub const MIN_RECEIVE_SHARE: usize = 8 << 10;

    /// The MSS for an IPv4 path of `mtu` bytes (IPv4 and TCP headers without options).
    pub fn mss_for_ipv4_mtu(mtu: u16) -> u16 {
        mtu.saturating_sub(40).max(88)
    }

    /// The MSS for an IPv6 path of `mtu` bytes.
    pub fn mss_for_ipv6_mtu(mtu: u16) -> u16 {
        mtu.saturating_sub(60).max(88)
    }
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            rx_buffer_size: Self::DEFAULT_BUFFER,
            tx_buffer_size: Self::DEFAULT_BUFFER,
            receive_memory: Self::DEFAULT_RECEIVE_MEMORY,
            mss: Self::mss_for_ipv4_mtu(1500),
            window_scaling: true,
            timestamps: true,
            sack: true,
            delayed_ack: Some(Duration::from_millis(40)),
            quick_acks: 16,
            ack_every: 4,
            nagle: false,
            keep_alive: None,
            keep_alive_probes: 9,
            time_wait: Duration::from_secs(60),
            fin_wait_2_timeout: Duration::from_secs(60),
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(60),
            max_retransmissions: 15,
            max_syn_retransmissions: 5,
            congestion: CongestionAlgorithm::default(),
        }
    }
}

/// Counters for one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Segments handed to the stack for sending.
    pub segments_sent: u64,
    /// Segments received for this connection.
    pub segments_received: u64,
    /// Segments that repeated bytes already sent (including SYN and FIN).
    pub retransmitted_segments: u64,
    /// Retransmission timeouts.
    pub timeouts: u64,
    /// Fast recovery episodes.
    pub fast_recoveries: u64,
    /// Retransmissions found lost again (by SACKs of data sent after them).
    pub lost_retransmissions: u64,
    /// Zero-window probes sent.
    pub window_probes: u64,
    /// Payload bytes acknowledged by the peer.
    pub bytes_acked: u64,
    /// Payload bytes delivered in order to the receive buffer.
    pub bytes_received: u64,
}

/// The peer's MSS when its SYN names none (RFC 9293 section 3.7.1).
const DEFAULT_PEER_MSS: usize = 536;
/// The largest window scale shift (RFC 7323 section 2.3).
const MAX_WINDOW_SHIFT: u8 = 14;
/// Bytes the timestamp option adds to every segment once negotiated.
const TIMESTAMP_OPTION_LEN: usize = 12;
/// Duplicate acknowledgments that signal a loss (RFC 5681).
const DUP_ACK_THRESHOLD: u32 = 3;
/// Out-of-order blocks remembered for SACK reporting. More than fit in one option, so that
/// several holes opened by one batch of input are all reported, over several ACKs.
const SACK_HISTORY: usize = 8;
/// The shortest receive-buffer autotuning measurement.
const MIN_AUTOTUNE_INTERVAL: Duration = Duration::from_millis(1);

/// A block of out-of-order data in the SACK history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SackRecord {
    block: SackBlock,
    /// Whether a segment we sent carried it since it last changed.
    reported: bool,
}

/// A segment chosen for sending.
#[derive(Clone, Copy, Debug)]
struct Segment {
    seq: SeqNumber,
    len: usize,
    fin: bool,
    retransmit: bool,
}

/// A TCP connection endpoint.
pub struct TcpSocket {
    config: TcpConfig,
    rng: SeededRng,
    state: State,
    error: Option<ConnectionError>,
    events: Events,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
    /// The socket was listening before this connection, and returns there on a reset.
    passive: bool,
    /// The connection began with a SYN the stack took for it ([`TcpSocket::accept_syn`]):
    /// a reset during the handshake means the peer gave up, not that it refused.
    accepted: bool,
    stats: TcpStats,

    // Send side.
    tx: RingBuffer,
    iss: SeqNumber,
    snd_una: SeqNumber,
    snd_max: SeqNumber,
    snd_wnd: usize,
    max_snd_wnd: usize,
    snd_wl1: SeqNumber,
    snd_wl2: SeqNumber,
    snd_wscale: u8,
    peer_mss: usize,
    fin_queued: bool,
    syn_pending: bool,
    rst_pending: Option<TcpRepr<'static>>,

    // Receive side.
    rx: RingBuffer,
    irs: SeqNumber,
    rcv_nxt: SeqNumber,
    rcv_wscale: u8,
    /// The right edge of the window we advertised last; it never moves left.
    rcv_adv: SeqNumber,
    /// Bytes the application read since `rcv_space_since`, for receive-buffer autotuning.
    rcv_space_read: usize,
    /// When the current autotuning measurement began (the first read of it).
    rcv_space_since: Option<Instant>,
    /// This connection's share of [`TcpConfig::receive_memory`]: unread bytes plus the
    /// window advertised stay within it (the window is never shrunk to get there).
    receive_share: usize,
    ooo: Assembler,
    /// Out-of-order blocks, the one holding the latest out-of-order segment first, then
    /// the others by when a segment last landed in them, most recent first (the order of
    /// RFC 2018 section 4), each marked once a segment of ours carried it.
    sack_history: [Option<SackRecord>; SACK_HISTORY],
    remote_fin: Option<SeqNumber>,
    fin_received: bool,
    /// The application let go of the socket ([`TcpSocket::release`]): nobody reads any more.
    released: bool,

    // Negotiated options.
    ws_enabled: bool,
    ts_enabled: bool,
    sack_enabled: bool,
    ts_offset: u32,
    ts_recent: u32,
    last_ack_sent: SeqNumber,

    // Acknowledgments we owe.
    ack_now: bool,
    delayed_ack_at: Option<Instant>,
    /// Data segments still to acknowledge at once (quick-ACK mode), and when data last came.
    quick_acks_left: u32,
    last_data_at: Option<Instant>,

    // Timers.
    rtt: RttEstimator,
    rto_at: Option<Instant>,
    retries: u32,
    rtt_probe: Option<(SeqNumber, Instant)>,
    persist_at: Option<Instant>,
    persist_backoff: u32,
    persist_fired: bool,
    unanswered_probes: u32,
    time_wait_at: Option<Instant>,
    /// When a released socket stops waiting in FIN-WAIT-2.
    fin_wait_2_at: Option<Instant>,
    keepalive_at: Option<Instant>,
    keepalive_probe: bool,
    /// When to free empty buffers, and when data last moved (the timer is rearmed lazily
    /// from it rather than moved on every segment).
    idle_release_at: Option<Instant>,
    last_activity: Instant,
    unanswered_keepalives: u32,

    // Loss recovery.
    cc: Box<dyn CongestionController>,
    dupacks: u32,
    in_recovery: bool,
    /// `snd_max` when the last recovery or timeout began (RFC 6582's `recover`).
    recover: SeqNumber,
    /// The SACK scoreboard, offsets relative to `snd_una`.
    sacked: Assembler,
    /// Bytes the peer holds above `snd_una` by the duplicate-ACK count, without SACK.
    reno_sacked: usize,
    /// Lost bytes below this and at or above `rexmit_from` wait for retransmission.
    rexmit_from: SeqNumber,
    lost_until: SeqNumber,
    /// `snd_max` when the latest retransmission of this recovery went out: a SACK above it
    /// shows that later data overtook the retransmissions still missing.
    rexmit_mark: Option<SeqNumber>,
}

impl fmt::Debug for TcpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpSocket")
            .field("state", &self.state)
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("snd_una", &self.snd_una)
            .field("snd_max", &self.snd_max)
            .field("rcv_nxt", &self.rcv_nxt)
            .field("cwnd", &self.cc.window())
            .finish_non_exhaustive()
    }
}

impl TcpSocket {
    /// A closed socket with buffers of the configured sizes; `seed` feeds its initial
    /// sequence numbers and timestamp offset.
    pub fn new(config: TcpConfig, seed: &Seed) -> Self {
        let rng = seed.child("net.tcp.socket").rng();
        Self::with_rng(config, rng)
    }

    fn with_rng(config: TcpConfig, rng: SeededRng) -> Self {
        let mss = usize::from(config.mss);
        Self {
            rtt: RttEstimator::new(config.initial_rto, config.min_rto, config.max_rto),
            cc: config.congestion.build(mss),
            tx: RingBuffer::new(config.tx_buffer_size.min(TcpConfig::INITIAL_SEND_BUFFER)),
            rx: RingBuffer::new(config.rx_buffer_size.min(TcpConfig::INITIAL_RECEIVE_WINDOW)),
            config,
            rng,
            state: State::Closed,
            error: None,
            events: Events::NONE,
            local: None,
            remote: None,
            passive: false,
            accepted: false,
            stats: TcpStats::default(),
            iss: SeqNumber(0),
            snd_una: SeqNumber(0),
            snd_max: SeqNumber(0),
            snd_wnd: 0,
            max_snd_wnd: 0,
            snd_wl1: SeqNumber(0),
            snd_wl2: SeqNumber(0),
            snd_wscale: 0,
            peer_mss: DEFAULT_PEER_MSS,
            fin_queued: false,
            syn_pending: false,
            rst_pending: None,
            irs: SeqNumber(0),
            rcv_nxt: SeqNumber(0),
            rcv_wscale: 0,
            rcv_adv: SeqNumber(0),
            rcv_space_read: 0,
            rcv_space_since: None,
            receive_share: usize::MAX,
            ooo: Assembler::new(),
            sack_history: [None; SACK_HISTORY],
            remote_fin: None,
            fin_received: false,
            released: false,
            ws_enabled: false,
            ts_enabled: false,
            sack_enabled: false,
            ts_offset: 0,
            ts_recent: 0,
            last_ack_sent: SeqNumber(0),
            ack_now: false,
            delayed_ack_at: None,
            quick_acks_left: 0,
            last_data_at: None,
            rto_at: None,
            retries: 0,
            rtt_probe: None,
            persist_at: None,
            persist_backoff: 0,
            persist_fired: false,
            unanswered_probes: 0,
            time_wait_at: None,
            fin_wait_2_at: None,
            keepalive_at: None,
            keepalive_probe: false,
            idle_release_at: None,
            last_activity: Instant::ZERO,
            unanswered_keepalives: 0,
            dupacks: 0,
            in_recovery: false,
            recover: SeqNumber(0),
            sacked: Assembler::new(),
            reno_sacked: 0,
            rexmit_from: SeqNumber(0),
            lost_until: SeqNumber(0),
            rexmit_mark: None,
        }
    }

    // ---------------------------------------------------------------------------------------
    // Getters.

    /// The connection state.
    pub const fn state(&self) -> State {
        self.state
    }

    /// Why the connection failed, once it has.
    pub const fn error(&self) -> Option<ConnectionError> {
        self.error
    }

    /// The local address and port, once bound.
    pub const fn local_endpoint(&self) -> Option<SocketAddr> {
        self.local
    }

    /// The peer's address and port, once known.
    pub const fn remote_endpoint(&self) -> Option<SocketAddr> {
        self.remote
    }

    /// Counters.
    pub const fn stats(&self) -> &TcpStats {
        &self.stats
    }

    /// The configuration.
    pub const fn config(&self) -> &TcpConfig {
        &self.config
    }

    /// The congestion window in bytes.
    pub fn congestion_window(&self) -> usize {
        self.cc.window()
    }

    /// The smoothed round-trip time, once measured.
    pub const fn smoothed_rtt(&self) -> Option<Duration> {
        self.rtt.srtt()
    }

    /// The current retransmission timeout.
    pub fn retransmission_timeout(&self) -> Duration {
        self.rtt.rto()
    }

    /// In TIME-WAIT: our next sequence number, the peer's (what we acknowledge), and when
    /// TIME-WAIT ends. What a stack keeps of a closed connection once the socket is gone.
    pub fn time_wait_record(&self) -> Option<(SeqNumber, SeqNumber, Instant)> {
        match (self.state, self.time_wait_at) {
            (State::TimeWait, Some(until)) => Some((self.snd_max, self.rcv_nxt, until)),
            _ => None,
        }
    }

    /// Whether the connection is open or opening (not closed, listening or lingering).
    pub const fn is_active(&self) -> bool {
        !matches!(self.state, State::Closed | State::Listen | State::TimeWait)
    }

    /// Whether the application may still queue data (it has not closed its direction).
    pub const fn may_send(&self) -> bool {
        matches!(
            self.state,
            State::SynSent | State::SynReceived | State::Established | State::CloseWait
        ) && !self.fin_queued
    }

    /// Whether [`send`](Self::send) would accept at least one byte now.
    pub fn can_send(&self) -> bool {
        self.may_send() && !self.tx.is_full()
    }

    /// Free bytes in the send buffer.
    pub fn send_capacity(&self) -> usize {
        if self.may_send() { self.tx.free() } else { 0 }
    }

    /// Bytes queued for sending or awaiting acknowledgment.
    pub const fn send_queue(&self) -> usize {
        self.tx.len()
    }

    /// Whether [`recv`](Self::recv) would return bytes now.
    pub const fn can_recv(&self) -> bool {
        !self.rx.is_empty()
    }

    /// Bytes waiting to be read.
    pub const fn recv_queue(&self) -> usize {
        self.rx.len()
    }

    /// Whether the peer closed its direction and every byte was read.
    pub const fn recv_finished(&self) -> bool {
        self.fin_received && self.rx.is_empty()
    }

    /// Takes the events that happened since the last call.
    pub fn take_events(&mut self) -> Events {
        core::mem::take(&mut self.events)
    }

    /// Looks at the pending events without clearing them.
    pub const fn events(&self) -> Events {
        self.events
    }

    // ---------------------------------------------------------------------------------------
    // Application commands.

    /// Starts an active open from `local` to `remote`.
    ///
    /// # Errors
    ///
    /// [`ConnectError::InvalidState`] unless the socket is closed,
    /// [`ConnectError::Unaddressable`] for a zero port or mixed address families.
    pub fn connect(
        &mut self,
        _now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<(), ConnectError> {
        if self.state != State::Closed {
            return Err(ConnectError::InvalidState);
        }
        if local.port() == 0 || remote.port() == 0 || local.is_ipv4() != remote.is_ipv4() {
            return Err(ConnectError::Unaddressable);
        }
        self.reset_connection();
        self.local = Some(local);
        self.remote = Some(remote);
        self.passive = false;
        self.choose_iss();
        self.rcv_wscale = if self.config.window_scaling {
            window_shift_for(self.config.rx_buffer_size)
        } else {
            0
        };
        self.syn_pending = true;
        self.set_state(State::SynSent);
        Ok(())
    }

    /// Waits for a connection to `local`.
    ///
    /// # Errors
    ///
    /// [`ListenError::InvalidState`] unless the socket is closed,
    /// [`ListenError::Unaddressable`] for port zero.
    pub fn listen(&mut self, local: SocketAddr) -> Result<(), ListenError> {
        if self.state != State::Closed {
            return Err(ListenError::InvalidState);
        }
        if local.port() == 0 {
            return Err(ListenError::Unaddressable);
        }
        self.reset_connection();
        self.local = Some(local);
        self.remote = None;
        self.passive = true;
        self.set_state(State::Listen);
        Ok(())
    }

    /// Takes `syn`, a SYN from `remote` to `local` that arrived before this socket existed,
    /// as if the socket had been listening at `local`: its options are adopted and the
    /// SYN-ACK goes out with the next [`dispatch`](Self::dispatch). Unlike a listener, the
    /// socket does not go back to listening when the handshake is reset: it fails with
    /// [`ConnectionError::Reset`].
    ///
    /// # Errors
    ///
    /// [`ListenError::InvalidState`] unless the socket is closed,
    /// [`ListenError::Unaddressable`] for a zero port, mixed address families, or a segment
    /// that is not a bare SYN.
    pub(crate) fn accept_syn(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        syn: &TcpRepr<'_>,
    ) -> Result<(), ListenError> {
        if self.state != State::Closed {
            return Err(ListenError::InvalidState);
        }
        if local.port() == 0
            || remote.port() == 0
            || local.is_ipv4() != remote.is_ipv4()
            || syn.control != TcpControl::Syn
            || syn.ack_number.is_some()
        {
            return Err(ListenError::Unaddressable);
        }
        self.reset_connection();
        self.passive = false;
        self.accepted = true;
        self.stats.segments_received += 1;
        let _ = self.process_listen(now, remote, local, syn);
        Ok(())
    }

    /// Queues as much of `data` as fits in the send buffer and returns how much that was.
    /// Data queued before the handshake completes goes out right after it.
    ///
    /// # Errors
    ///
    /// [`SendError::InvalidState`] when the connection is not open for sending.
    pub fn send(&mut self, data: &[u8]) -> Result<usize, SendError> {
        if !self.may_send() {
            return Err(SendError::InvalidState);
        }
        Ok(self.tx.enqueue(data))
    }

    /// Reads up to `buf.len()` bytes and returns how many.
    ///
    /// # Errors
    ///
    /// [`RecvError::Finished`] once the peer's FIN was read past, [`RecvError::InvalidState`]
    /// when the connection never opened or failed with nothing left to read.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize, RecvError> {
        if self.rx.is_empty() {
            if self.fin_received {
                return Err(RecvError::Finished);
            }
            return match self.state {
                State::SynSent
                | State::SynReceived
                | State::Established
                | State::FinWait1
                | State::FinWait2 => Ok(0),
                _ => Err(RecvError::InvalidState),
            };
        }
        let read = self.rx.dequeue(buf);
        self.after_app_read(read);
        Ok(read)
    }

    /// Hands the readable bytes (the first contiguous run of them) to `consume`, which
    /// returns how many it took; they are then removed. Returns what `consume` returned.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub fn recv_with(&mut self, consume: impl FnOnce(&[u8]) -> usize) -> Result<usize, RecvError> {
        if self.rx.is_empty() {
            return self.recv(&mut []);
        }
        let chunk = self.rx.contiguous(0, usize::MAX);
        let taken = consume(chunk).min(chunk.len());
        self.rx.discard(taken);
        self.after_app_read(taken);
        Ok(taken)
    }

    /// Closes our direction: a FIN follows the queued data (after the handshake, when it is
    /// still under way). Reading stays possible until the peer closes too, for as long as it
    /// takes; [`release`](Self::release) instead once nothing will be read. Closing a
    /// listening socket just closes it; [`abort`](Self::abort) cancels a connection attempt.
    pub fn close(&mut self) {
        match self.state {
            State::Listen => {
                self.set_state(State::Closed);
            }
            State::SynSent | State::SynReceived => {
                // The FIN goes out once the handshake completes (see `establish`).
                self.fin_queued = true;
            }
            State::Established => {
                self.fin_queued = true;
                self.set_state(State::FinWait1);
            }
            State::CloseWait => {
                self.fin_queued = true;
                self.set_state(State::LastAck);
            }
            _ => {}
        }
    }

    /// The application is done with the socket: it closes our direction as
    /// [`close`](Self::close) does, and will read no more. Whatever is queued is still
    /// delivered before our FIN; but once the FIN is acknowledged, the socket waits for the
    /// peer's at most [`TcpConfig::fin_wait_2_timeout`], then closes without a reset (as
    /// Linux closes an orphaned socket after `tcp_fin_timeout`). Every other closing state
    /// ends by itself already: through the retransmission limit or TIME-WAIT.
    pub fn release(&mut self, now: Instant) {
        self.close();
        self.released = true;
        self.arm_fin_wait_2(now);
    }

    /// Starts the FIN-WAIT-2 timeout of a released socket.
    fn arm_fin_wait_2(&mut self, now: Instant) {
        if self.released && self.state == State::FinWait2 && self.fin_wait_2_at.is_none() {
            self.fin_wait_2_at = Some(now + self.config.fin_wait_2_timeout);
        }
    }

    /// Aborts the connection: a reset goes to the peer and the socket closes at once.
    pub fn abort(&mut self) {
        if matches!(
            self.state,
            State::SynReceived
                | State::Established
                | State::FinWait1
                | State::FinWait2
                | State::CloseWait
                | State::Closing
                | State::LastAck
        ) {
            let mut rst = self.header(None, self.snd_max, TcpControl::Rst);
            rst.window_len = 0;
            rst.timestamp = None;
            rst.sack_ranges = [None; MAX_SACK_BLOCKS];
            self.rst_pending = Some(rst);
        }
        self.fail(ConnectionError::Aborted);
    }

    /// The network reported the peer unreachable (ICMP destination unreachable). A pending
    /// connection attempt fails at once; an open connection treats it as a soft error and
    /// carries on (RFC 1122 section 4.2.3.9).
    pub fn on_unreachable(&mut self) {
        if matches!(self.state, State::SynSent | State::SynReceived) {
            self.fail(ConnectionError::Unreachable);
        }
    }

    // ---------------------------------------------------------------------------------------
    // Network input.

    /// Whether a segment from `remote` to `local` belongs to this socket.
    pub fn accepts(&self, remote: SocketAddr, local: SocketAddr) -> bool {
        match self.state {
            State::Closed => false,
            State::Listen => self.local.is_some_and(|l| {
                l.port() == local.port() && (l.ip().is_unspecified() || l.ip() == local.ip())
            }),
            _ => self.local == Some(local) && self.remote == Some(remote),
        }
    }

    /// Processes one segment from `remote` to `local`. Returns a segment to send back at once
    /// that belongs to no connection state (a reset for an unacceptable segment); everything
    /// else the segment causes comes out of [`dispatch`](Self::dispatch).
    pub fn process(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local: SocketAddr,
        seg: &TcpRepr<'_>,
    ) -> Option<TcpRepr<'static>> {
        self.run_timers(now);
        self.stats.segments_received += 1;
        match self.state {
            State::Closed => return reset_for(seg),
            State::Listen => return self.process_listen(now, remote, local, seg),
            State::SynSent => return self.process_syn_sent(now, seg),
            _ => {}
        }
        self.keepalive_seen(now);
        self.note_activity(now);

        // Sequence number check (RFC 9293 section 3.10.7.4, first step).
        if !self.acceptable(seg) {
            if seg.control != TcpControl::Rst {
                self.ack_now = true;
            }
            if self.state == State::SynReceived
                && seg.control == TcpControl::Syn
                && seg.seq_number == self.irs
            {
                // Our SYN-ACK was lost: the peer repeats its SYN.
                self.ack_now = false;
                self.syn_pending = true;
            }
            if self.state == State::TimeWait && seg.control == TcpControl::Fin {
                self.time_wait_at = Some(now + self.config.time_wait);
            }
            return None;
        }

        // Reset (RFC 5961 section 3.2: only an exact match resets, others get a challenge).
        if seg.control == TcpControl::Rst {
            if seg.seq_number == self.rcv_nxt {
                if self.state == State::SynReceived && self.passive {
                    let local = self.local;
                    self.reset_connection();
                    self.local = local;
                    self.remote = None;
                    self.passive = true;
                    self.set_state(State::Listen);
                } else if self.state == State::SynReceived && self.accepted {
                    self.fail(ConnectionError::Reset);
                } else if self.state == State::SynReceived {
                    self.fail(ConnectionError::Refused);
                } else if matches!(
                    self.state,
                    State::LastAck | State::TimeWait | State::Closing
                ) {
                    self.set_state(State::Closed);
                } else {
                    self.fail(ConnectionError::Reset);
                }
            } else {
                self.ack_now = true;
            }
            return None;
        }

        // A SYN in a synchronised state gets a challenge ACK (RFC 5961 section 4.2).
        if seg.control == TcpControl::Syn {
            self.ack_now = true;
            return None;
        }

        let ack = seg.ack_number?;
        if self.state == State::SynReceived {
            if ack > self.snd_una && ack <= self.snd_max {
                self.snd_wnd = usize::from(seg.window_len) << self.snd_wscale;
                self.max_snd_wnd = self.snd_wnd;
                self.snd_wl1 = seg.seq_number;
                self.snd_wl2 = ack;
                self.ack_syn(now, seg, ack);
                self.establish();
            } else {
                return Some(reset_with_seq(seg, ack));
            }
        }
        if ack > self.snd_max {
            // It acknowledges something never sent.
            self.ack_now = true;
            return None;
        }
        self.update_timestamp(seg);
        let fin_acked = self.process_ack(now, seg, ack);
        if fin_acked {
            match self.state {
                State::FinWait1 => {
                    self.set_state(State::FinWait2);
                    self.arm_fin_wait_2(now);
                }
                State::Closing => self.enter_time_wait(now),
                State::LastAck => self.set_state(State::Closed),
                _ => {}
            }
        }
        if matches!(
            self.state,
            State::Established | State::FinWait1 | State::FinWait2
        ) {
            self.process_data(now, seg);
        } else if seg.segment_len() > 0 && self.state != State::Closed {
            // Data or FIN after the peer's FIN: acknowledge what we have.
            self.ack_now = true;
        }
        self.update_persist(now);
        None
    }

    fn process_listen(
        &mut self,
        _now: Instant,
        remote: SocketAddr,
        local: SocketAddr,
        seg: &TcpRepr<'_>,
    ) -> Option<TcpRepr<'static>> {
        match seg.control {
            TcpControl::Rst => None,
            _ if seg.ack_number.is_some() => reset_for(seg),
            TcpControl::Syn => {
                self.local = Some(local);
                self.remote = Some(remote);
                self.choose_iss();
                self.take_syn_options(seg);
                self.irs = seg.seq_number;
                self.rcv_nxt = seg.seq_number + 1;
                self.rcv_adv = self.rcv_nxt;
                self.snd_wnd = usize::from(seg.window_len);
                self.max_snd_wnd = self.snd_wnd;
                self.snd_wl1 = seg.seq_number;
                self.syn_pending = true;
                self.set_state(State::SynReceived);
                None
            }
            _ => None,
        }
    }

    fn process_syn_sent(&mut self, now: Instant, seg: &TcpRepr<'_>) -> Option<TcpRepr<'static>> {
        if let Some(ack) = seg.ack_number
            && (ack <= self.iss || ack > self.snd_max)
        {
            return (seg.control != TcpControl::Rst).then(|| reset_with_seq(seg, ack));
        }
        match seg.control {
            TcpControl::Rst => {
                if seg.ack_number.is_some() {
                    self.fail(ConnectionError::Refused);
                }
                None
            }
            TcpControl::Syn => {
                self.take_syn_options(seg);
                self.irs = seg.seq_number;
                self.rcv_nxt = seg.seq_number + 1;
                self.rcv_adv = self.rcv_nxt;
                // The window of a SYN is never scaled (RFC 7323 section 2.2).
                self.snd_wnd = usize::from(seg.window_len);
                self.max_snd_wnd = self.snd_wnd;
                self.snd_wl1 = seg.seq_number;
                self.update_timestamp(seg);
                match seg.ack_number {
                    Some(ack) => {
                        self.snd_wl2 = ack;
                        self.ack_syn(now, seg, ack);
                        self.establish();
                        self.ack_now = true;
                    }
                    None => {
                        // Simultaneous open: answer with a SYN-ACK of our own ISN.
                        self.syn_pending = true;
                        self.set_state(State::SynReceived);
                    }
                }
                None
            }
            _ => None,
        }
    }

    /// Our SYN was acknowledged: take an RTT sample and stop its timer.
    fn ack_syn(&mut self, now: Instant, seg: &TcpRepr<'_>, ack: SeqNumber) {
        self.sample_rtt(now, seg, ack);
        self.snd_una = ack;
        self.rexmit_from = ack;
        self.lost_until = ack;
        self.recover = ack;
        self.rto_at = None;
        self.retries = 0;
        self.rtt.reset_backoff();
    }

    fn take_syn_options(&mut self, seg: &TcpRepr<'_>) {
        self.peer_mss = seg
            .max_seg_size
            .map_or(DEFAULT_PEER_MSS, usize::from)
            .max(64);
        let ws = self.config.window_scaling && seg.window_scale.is_some();
        self.ws_enabled = ws;
        // RFC 7323 section 2.3: a shift above 14 is taken as 14. The wire parser clamps it
        // already, but a segment handed to `process` may come from elsewhere, and a larger
        // shift would overflow the window computations.
        self.snd_wscale = if ws {
            seg.window_scale.unwrap_or(0).min(MAX_WINDOW_SHIFT)
        } else {
            0
        };
        self.rcv_wscale = if ws {
            window_shift_for(self.config.rx_buffer_size)
        } else {
            0
        };
        self.sack_enabled = self.config.sack && seg.sack_permitted;
        self.ts_enabled = self.config.timestamps && seg.timestamp.is_some();
        if let Some(ts) = seg.timestamp {
            self.ts_recent = ts.tsval;
        }
        self.cc.set_mss(self.send_mss());
    }

    fn establish(&mut self) {
        self.set_state(State::Established);
        self.events.insert(Events::CONNECTED | Events::WRITABLE);
        if self.fin_queued {
            self.set_state(State::FinWait1);
        }
    }

    /// RFC 9293's acceptability test, with the window being what the buffer can hold.
    fn acceptable(&self, seg: &TcpRepr<'_>) -> bool {
        let window = self.receive_capacity();
        let len = seg.segment_len();
        let start = seg.seq_number;
        let in_window = |seq: SeqNumber| seq >= self.rcv_nxt && seq < self.rcv_nxt + window;
        match (len, window) {
            (0, 0) => start == self.rcv_nxt,
            (0, _) => in_window(start) || start == self.rcv_nxt,
            // A zero window still takes ACKs: the data is trimmed away later.
            (_, 0) => start == self.rcv_nxt,
            (_, _) => in_window(start) || in_window(start + (len - 1)),
        }
    }

    fn receive_capacity(&self) -> usize {
        self.rx.free()
    }

    /// RFC 7323 section 4.3: remember the peer's timestamp of the segment at the left edge.
    fn update_timestamp(&mut self, seg: &TcpRepr<'_>) {
        if let Some(ts) = seg.timestamp
            && self.ts_enabled
            && seg.seq_number <= self.last_ack_sent
            && (ts.tsval.wrapping_sub(self.ts_recent) as i32) >= 0
        {
            self.ts_recent = ts.tsval;
        }
    }

    /// Handles the acknowledgment field; returns whether it acknowledged our FIN.
    fn process_ack(&mut self, now: Instant, seg: &TcpRepr<'_>, ack: SeqNumber) -> bool {
        let seg_wnd = usize::from(seg.window_len) << self.snd_wscale;
        let sacked_before = self.sacked.covered();
        if self.sack_enabled {
            for block in seg.sack_ranges.iter().flatten() {
                self.record_sack(*block);
            }
        }
        let newly_sacked = self.sacked.covered() > sacked_before;
        let mut fin_acked = false;
        // Any acknowledgment shows the peer is alive, even one that moves nothing.
        self.unanswered_probes = 0;

        if ack > self.snd_una {
            let acked = ack.bytes_since(self.snd_una);
            let fin_seq = self.fin_seq();
            fin_acked = fin_seq.is_some_and(|fin| ack > fin);
            let data_acked = acked - usize::from(fin_acked);
            self.sample_rtt(now, seg, ack);
            self.tx.discard(data_acked);
            self.tx.rewind_if_empty();
            self.stats.bytes_acked += data_acked as u64;
            self.sacked
                .advance(u32::try_from(acked).unwrap_or(u32::MAX));
            self.snd_una = ack;
            self.rexmit_from = self.rexmit_from.max(ack);
            self.lost_until = self.lost_until.max(ack);
            self.retries = 0;
            self.unanswered_probes = 0;
            self.rtt.reset_backoff();
            self.dupacks = 0;
            if self.in_recovery {
                if ack >= self.recover {
                    self.in_recovery = false;
                    self.reno_sacked = 0;
                    self.lost_until = ack;
                    self.rexmit_mark = None;
                } else {
                    // A partial acknowledgment: the next segment was lost too (RFC 6582).
                    self.reno_sacked = self.reno_sacked.saturating_sub(data_acked);
                    let next = (ack + self.segment_payload()).min(self.snd_max);
                    self.lost_until = self.lost_until.max(next);
                }
            } else {
                self.cc.on_ack(now, data_acked, self.rtt.srtt());
                self.autotune_send_buffer();
            }
            self.rto_at = (self.snd_una != self.snd_max).then(|| now + self.rtt.rto());
            if data_acked > 0 {
                self.events.insert(Events::WRITABLE);
            }
        } else if ack == self.snd_una
            && self.snd_max != self.snd_una
            && seg.segment_len() == 0
            && seg_wnd == self.snd_wnd
        {
            self.dupacks += 1;
            if self.in_recovery && !self.sack_enabled {
                self.reno_sacked += self.segment_payload();
            }
        }

        // Window update (RFC 9293 section 3.10.7.4, SND.WL1/WL2 rule).
        if self.snd_wl1 < seg.seq_number || (self.snd_wl1 == seg.seq_number && self.snd_wl2 <= ack)
        {
            self.snd_wnd = seg_wnd;
            self.max_snd_wnd = self.max_snd_wnd.max(seg_wnd);
            self.snd_wl1 = seg.seq_number;
            self.snd_wl2 = ack;
        }

        if self.in_recovery {
            if newly_sacked {
                self.mark_sacked_holes_lost();
                self.detect_lost_retransmissions();
            }
        } else if self.snd_una >= self.recover {
            let sack_loss =
                self.sack_enabled && self.sacked.covered() > 2 * self.segment_payload() as u64;
            if self.dupacks >= DUP_ACK_THRESHOLD || sack_loss {
                self.enter_recovery(now);
            }
        }
        fin_acked
    }

    fn record_sack(&mut self, block: SackBlock) {
        // Only blocks inside what is outstanding mean anything; others are stale or bogus.
        if block.left < self.snd_una || block.right > self.snd_max || block.left >= block.right {
            return;
        }
        let start = u32::try_from(block.left.bytes_since(self.snd_una)).unwrap_or(u32::MAX);
        let end = u32::try_from(block.right.bytes_since(self.snd_una)).unwrap_or(u32::MAX);
        // A full scoreboard only costs needless retransmissions.
        let _ = self.sacked.add(start, end);
    }

    /// Everything below the highest SACKed byte is deemed lost (a simplification of RFC
    /// 6675's IsLost that suits paths with little reordering).
    fn mark_sacked_holes_lost(&mut self) {
        let highest = self.snd_una + self.sacked.highest_end() as usize;
        self.lost_until = self.lost_until.max(highest).min(self.snd_max);
    }

    /// Data sent after our latest retransmission was SACKed, yet holes below the
    /// retransmitted range remain: those retransmissions were lost as well. Without this only
    /// the retransmission timer would find them. Assumes little reordering, like the rest of
    /// the loss detection.
    fn detect_lost_retransmissions(&mut self) {
        let Some(mark) = self.rexmit_mark else {
            return;
        };
        let highest = self.snd_una + self.sacked.highest_end() as usize;
        if highest <= mark || self.rexmit_from <= self.snd_una {
            return;
        }
        let end = u32::try_from(self.rexmit_from.bytes_since(self.snd_una)).unwrap_or(u32::MAX);
        if self.sacked.first_uncovered(0, end).is_some() {
            self.stats.lost_retransmissions += 1;
            self.rexmit_from = self.snd_una;
            self.rexmit_mark = None;
        }
    }

    fn enter_recovery(&mut self, now: Instant) {
        self.in_recovery = true;
        self.rexmit_mark = None;
        self.recover = self.snd_max;
        let flight = self.snd_max.bytes_since(self.snd_una);
        self.cc.on_congestion_event(now, flight);
        self.rexmit_from = self.snd_una;
        let first = (self.snd_una + self.segment_payload()).min(self.snd_max);
        self.lost_until = self.lost_until.max(first);
        self.mark_sacked_holes_lost();
        if !self.sack_enabled {
            self.reno_sacked = self.dupacks as usize * self.segment_payload();
        }
        // Karn: the timed segment may be retransmitted now.
        self.rtt_probe = None;
        self.stats.fast_recoveries += 1;
    }

    fn sample_rtt(&mut self, now: Instant, seg: &TcpRepr<'_>, ack: SeqNumber) {
        if self.ts_enabled {
            if let Some(ts) = seg.timestamp
                && ts.tsecr != 0
            {
                let elapsed = self.ts_clock(now).wrapping_sub(ts.tsecr);
                if elapsed < 60_000 {
                    self.rtt.sample(Duration::from_millis(u64::from(elapsed)));
                }
            }
            return;
        }
        if let Some((probe, sent_at)) = self.rtt_probe
            && ack >= probe
        {
            self.rtt.sample(now - sent_at);
            self.rtt_probe = None;
        }
    }

    fn process_data(&mut self, now: Instant, seg: &TcpRepr<'_>) {
        let payload = seg.payload;
        let had_hole = !self.ooo.is_empty();
        let offset = seg.seq_number.distance_from(self.rcv_nxt);
        let (skip, offset) = if offset < 0 {
            (offset.unsigned_abs() as usize, 0usize)
        } else {
            (0, offset as usize)
        };
        let data = payload.get(skip..).unwrap_or(&[]);
        let written = self.rx.write_unallocated(offset, data);
        let trimmed = written < data.len();
        let before = self.rcv_nxt;

        if written > 0 {
            if offset == 0 {
                self.rx.commit(written);
                self.ooo.advance(u32::try_from(written).unwrap_or(u32::MAX));
                let mut delivered = written;
                let front = self.ooo.front_len() as usize;
                if front > 0 {
                    self.rx.commit(front);
                    self.ooo.advance(u32::try_from(front).unwrap_or(u32::MAX));
                    delivered += front;
                }
                self.rcv_nxt += delivered;
                self.forget_acknowledged_sack_blocks();
            } else {
                let start = u32::try_from(offset).unwrap_or(u32::MAX);
                let end = start.saturating_add(u32::try_from(written).unwrap_or(u32::MAX));
                if self.ooo.add(start, end).is_ok() {
                    self.report_sack_block_first(start);
                }
            }
        }
        if seg.control == TcpControl::Fin && !trimmed {
            self.remote_fin = Some(seg.seq_number + payload.len());
        }

        let delivered = self.rcv_nxt.bytes_since(before);
        if delivered > 0 {
            self.stats.bytes_received += delivered as u64;
            self.events.insert(Events::READABLE);
        }
        if self.remote_fin == Some(self.rcv_nxt) && !self.fin_received {
            self.rcv_nxt += 1;
            self.fin_received = true;
            self.ack_now = true;
            self.events.insert(Events::READABLE);
            match self.state {
                State::Established => self.set_state(State::CloseWait),
                State::FinWait1 => self.set_state(State::Closing),
                State::FinWait2 => self.enter_time_wait(now),
                _ => {}
            }
        }

        if seg.payload.is_empty() {
            return;
        }
        // The first data, or data after an idle spell, starts a run of immediate ACKs; so does
        // the end of a loss, when the sender resumes with a small window (after a timeout,
        // one segment) that a stretch ACK would leave waiting for the timer.
        let idle = self
            .last_data_at
            .is_none_or(|last| now.saturating_duration_since(last) > self.rtt.rto());
        let hole_filled = had_hole && self.ooo.is_empty();
        if idle || hole_filled {
            self.quick_acks_left = self.config.quick_acks;
        }
        self.last_data_at = Some(now);
        if offset > 0 || !self.ooo.is_empty() || delivered == 0 || trimmed {
            // Out of order, filling a hole, a duplicate, or more than fits: tell the sender
            // at once, so it can repair the loss (RFC 5681 section 4.2).
            self.ack_now = true;
        } else if self.quick_acks_left > 0 {
            self.quick_acks_left -= 1;
            self.ack_now = true;
        } else if seg.control == TcpControl::Psh {
            // The end of what the sender had queued: it may be waiting for this ACK (Nagle's
            // algorithm holds its next small segment; a full window holds everything), so
            // acknowledge once the current batch of input is through, as Linux does once the
            // application has read a pushed segment.
            self.ack_now = true;
        } else {
            let stretch = self.full_segment() * self.config.ack_every.max(2) as usize;
            match self.config.delayed_ack {
                Some(delay) if self.rcv_nxt.bytes_since(self.last_ack_sent) < stretch => {
                    self.delayed_ack_at.get_or_insert(now + delay);
                }
                _ => self.ack_now = true,
            }
        }
    }

    fn enter_time_wait(&mut self, now: Instant) {
        self.set_state(State::TimeWait);
        self.time_wait_at = Some(now + self.config.time_wait);
        self.fin_wait_2_at = None;
        self.rto_at = None;
        self.persist_at = None;
        self.keepalive_at = None;
        // Nothing more can be sent or received: free what is empty now rather than a second
        // from now.
        self.idle_release_at = None;
        self.release_idle_buffers();
    }

    /// The application read `read` bytes: count them for autotuning, keep a drained buffer
    /// compact, and open the window if it grew enough to matter.
    fn after_app_read(&mut self, read: usize) {
        self.rcv_space_read += read;
        // The timer may have found the buffer still full; read now, it is free to go a
        // second after the data came (at once if that was longer ago).
        self.arm_idle_release();
        if self.rx.is_empty() && self.ooo.is_empty() {
            // Nothing is written ahead: the next data lands at the start of the storage, so a
            // buffer the application drains as fast as it fills stays within its first pages.
            self.rx.rewind_if_empty();
            if self.fin_received {
                // No more data can come.
                self.rx.release_if_empty();
            }
        }
        if self.ooo.is_empty() {
            // Storage grown for a larger window than this connection's share now allows
            // (it was promised before many other connections came) is given back once the
            // application has read enough of it. The margin of two keeps a connection whose
            // share covers its storage from shrinking and growing again.
            let needed = self
                .window_capacity()
                .max(RingBuffer::MIN_STORAGE)
                .next_power_of_two();
            if self.rx.allocated() > 2 * needed {
                self.rx.shrink_storage(needed);
            }
        }
        if !matches!(
            self.state,
            State::Established | State::FinWait1 | State::FinWait2
        ) {
            return;
        }
        let promised = self.rcv_adv.bytes_since(self.rcv_nxt);
        // Update only when the advertised window had shrunk below half the buffer and can
        // grow by a useful amount (RFC 1122 section 4.2.3.3); otherwise the next ACK carries
        // the larger window anyway.
        if promised < self.window_capacity() / 2
            && self.window_room() >= promised + self.sws_threshold()
        {
            self.ack_now = true;
        }
    }

    /// Receive-buffer autotuning (like Linux's dynamic right-sizing): once per RTT, when the
    /// application read more than half the receive buffer's capacity in that RTT, the sender
    /// is likely held back by our window, so the capacity (and with it the window we
    /// advertise) doubles, up to the configured size. A slow reader keeps a small window, so
    /// the peer cannot park megabytes in our memory.
    fn autotune_receive_window(&mut self, now: Instant) {
        let capacity = self.rx.capacity();
        let ceiling = self.config.rx_buffer_size.min(self.receive_share);
        if capacity >= ceiling
            || !matches!(
                self.state,
                State::Established | State::FinWait1 | State::FinWait2
            )
        {
            return;
        }
        let Some(since) = self.rcv_space_since else {
            if self.rcv_space_read > 0 {
                self.rcv_space_since = Some(now);
                self.rcv_space_read = 0;
            }
            return;
        };
        // Timestamps tick in milliseconds, so a short path measures an RTT of zero; a
        // measurement that short would see only a packet or two.
        let rtt = self
            .rtt
            .smoothed()
            .unwrap_or_else(|| self.rtt.rto())
            .max(MIN_AUTOTUNE_INTERVAL);
        if now.saturating_duration_since(since) < rtt {
            return;
        }
        if self.rcv_space_read > capacity / 2 {
            // Twice what was read, as Linux sizes it, so a fast reader reaches its window in
            // a few RTTs; at least double.
            let wanted = capacity.max(self.rcv_space_read).saturating_mul(2);
            self.rx.raise_capacity(wanted.min(ceiling));
        }
        self.rcv_space_read = 0;
        self.rcv_space_since = Some(now);
    }

    /// Lets the send buffer hold twice the congestion window, up to the configured size: the
    /// application can queue the next window while this one is in flight.
    fn autotune_send_buffer(&mut self) {
        // A power of two, so that the storage grows by doubling (a few times per connection)
        // rather than by a segment on every ACK of congestion avoidance.
        let wanted = self.cc.window().saturating_mul(2).next_power_of_two();
        if wanted > self.tx.capacity() {
            self.tx
                .raise_capacity(wanted.min(self.config.tx_buffer_size));
        }
    }

    /// Notes that data moved now, and arms the idle-release timer if buffers are allocated.
    fn note_activity(&mut self, now: Instant) {
        self.last_activity = now;
        self.arm_idle_release();
    }

    /// Arms the idle-release timer for a second after data last moved, unless it is armed.
    fn arm_idle_release(&mut self) {
        if self.idle_release_at.is_none()
            && self.buffer_memory() > 0
            && !matches!(self.state, State::TimeWait | State::Closed)
        {
            self.idle_release_at = Some(self.last_activity + TcpConfig::IDLE_BUFFER_RELEASE);
        }
    }

    /// Frees the storage of buffers that hold nothing and will not be written ahead into:
    /// the send buffer when everything was acknowledged, the receive buffer when no
    /// out-of-order data waits in it. The capacities stay, so the buffers grow again when
    /// data comes. Meant for connections that went idle after a burst.
    pub fn release_idle_buffers(&mut self) -> usize {
        let mut released = 0;
        if self.tx.is_empty() {
            let size = self.tx.allocated();
            if self.tx.release_if_empty() {
                released += size;
            }
        }
        if self.rx.is_empty() && self.ooo.is_empty() {
            let size = self.rx.allocated();
            if self.rx.release_if_empty() {
                released += size;
            }
        }
        released
    }

    /// Whether [`release_idle_buffers`](Self::release_idle_buffers) would free anything now.
    fn has_releasable_buffers(&self) -> bool {
        (self.tx.is_empty() && self.tx.allocated() > 0)
            || (self.rx.is_empty() && self.ooo.is_empty() && self.rx.allocated() > 0)
    }

    /// Bytes of buffer storage this socket holds now (send and receive).
    pub fn buffer_memory(&self) -> usize {
        self.tx.allocated() + self.rx.allocated()
    }

    /// The receive buffer's current capacity: what autotuning lets the peer send ahead of
    /// the application.
    pub const fn receive_buffer_capacity(&self) -> usize {
        self.rx.capacity()
    }

    /// Sets this connection's share of the receive memory (see
    /// [`TcpConfig::receive_memory`]); the [`Stack`](crate::Stack) sets it as connections
    /// come and go. A smaller share stops the window from moving forward until unread bytes
    /// fall below it; the window already advertised is kept, since the peer may have sent
    /// into it.
    pub fn set_receive_share(&mut self, share: usize) {
        self.receive_share = share.max(TcpConfig::MIN_RECEIVE_SHARE);
    }

    /// The receive buffer as far as this connection's share lets the window reach.
    fn window_capacity(&self) -> usize {
        self.rx.capacity().min(self.receive_share)
    }

    /// How far past `rcv_nxt` the window may reach now: the free buffer, within the share.
    fn window_room(&self) -> usize {
        self.rx
            .free()
            .min(self.receive_share.saturating_sub(self.rx.len()))
    }

    // ---------------------------------------------------------------------------------------
    // Timers.

    /// When the socket next needs [`dispatch`](Self::dispatch) even without input: the
    /// earliest timer, or an instant in the past when a segment is ready to go now.
    pub fn poll_at(&self) -> Option<Instant> {
        if self.rst_pending.is_some()
            || self.syn_pending
            || self.ack_now
            || self.keepalive_probe
            || (self.persist_fired && self.has_unsent())
        {
            return Some(Instant::ZERO);
        }
        if self.is_synchronized() && self.next_segment().is_some() {
            return Some(Instant::ZERO);
        }
        [
            self.rto_at,
            self.delayed_ack_at,
            self.persist_at,
            self.time_wait_at,
            self.fin_wait_2_at,
            self.keepalive_at,
            self.idle_release_at
                .filter(|_| self.has_releasable_buffers()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn run_timers(&mut self, now: Instant) {
        if self.time_wait_at.is_some_and(|at| now >= at) {
            self.time_wait_at = None;
            self.set_state(State::Closed);
            return;
        }
        if self.fin_wait_2_at.is_some_and(|at| now >= at) {
            // Released, and the peer never closed: nobody would read what it still sends.
            // Closing without a reset is what Linux does; a later segment gets one.
            self.fin_wait_2_at = None;
            self.set_state(State::Closed);
            return;
        }
        if self.rto_at.is_some_and(|at| now >= at) {
            self.on_rto(now);
        }
        if self.delayed_ack_at.is_some_and(|at| now >= at) {
            self.delayed_ack_at = None;
            self.ack_now = true;
        }
        if self.persist_at.is_some_and(|at| now >= at) {
            self.persist_at = None;
            self.unanswered_probes += 1;
            if self.unanswered_probes > self.config.max_retransmissions {
                self.fail(ConnectionError::TimedOut);
                return;
            }
            self.persist_fired = true;
            self.persist_backoff = self.persist_backoff.saturating_add(1);
        }
        if self.idle_release_at.is_some_and(|at| now >= at) {
            let idle_until = self.last_activity + TcpConfig::IDLE_BUFFER_RELEASE;
            if now >= idle_until {
                // Buffers still holding data stay; the next activity arms the timer again.
                self.idle_release_at = None;
                self.release_idle_buffers();
            } else {
                self.idle_release_at = Some(idle_until);
            }
        }
        if self.keepalive_at.is_some_and(|at| now >= at) {
            self.keepalive_at = None;
            if self.unanswered_keepalives >= self.config.keep_alive_probes {
                self.fail(ConnectionError::TimedOut);
                return;
            }
            if self.state == State::Established || self.state == State::CloseWait {
                self.keepalive_probe = true;
                self.unanswered_keepalives += 1;
            }
            if let Some(interval) = self.config.keep_alive {
                self.keepalive_at = Some(now + interval);
            }
        }
    }

    fn on_rto(&mut self, now: Instant) {
        self.rto_at = None;
        self.retries += 1;
        self.stats.timeouts += 1;
        let limit = if matches!(self.state, State::SynSent | State::SynReceived) {
            self.config.max_syn_retransmissions
        } else {
            self.config.max_retransmissions
        };
        if self.retries > limit {
            self.fail(ConnectionError::TimedOut);
            return;
        }
        self.rtt.back_off();
        // Karn: no sample from anything that may now be sent twice.
        self.rtt_probe = None;
        match self.state {
            State::SynSent | State::SynReceived => {
                self.syn_pending = true;
            }
            _ if self.snd_una != self.snd_max => {
                let flight = self.snd_max.bytes_since(self.snd_una);
                self.cc.on_rto(now, flight);
                self.in_recovery = false;
                self.rexmit_mark = None;
                self.reno_sacked = 0;
                self.dupacks = 0;
                self.recover = self.snd_max;
                if self.retries >= 2 {
                    // The peer may have dropped what it SACKed (RFC 2018 allows reneging);
                    // after a second timeout resend everything.
                    self.sacked.clear();
                }
                self.rexmit_from = self.snd_una;
                self.lost_until = self.snd_max;
                self.rto_at = Some(now + self.rtt.rto());
            }
            _ => {}
        }
    }

    fn update_persist(&mut self, now: Instant) {
        let stalled = self.is_synchronized()
            && self.snd_una == self.snd_max
            && self.has_unsent()
            && self.next_segment().is_none();
        if !stalled {
            self.persist_at = None;
            self.persist_backoff = 0;
            return;
        }
        if self.persist_at.is_none() && !self.persist_fired {
            let factor = 1u32.checked_shl(self.persist_backoff).unwrap_or(u32::MAX);
            let delay = self
                .rtt
                .rto()
                .checked_mul(factor)
                .unwrap_or(self.config.max_rto)
                .min(self.config.max_rto);
            self.persist_at = Some(now + delay);
        }
    }

    fn keepalive_seen(&mut self, now: Instant) {
        self.unanswered_keepalives = 0;
        if let Some(interval) = self.config.keep_alive {
            self.keepalive_at = Some(now + interval);
        }
    }

    // ---------------------------------------------------------------------------------------
    // Output.

    /// Builds the next segment, if any, and hands it to `emit`; returns what `emit` returned.
    /// Call it until it returns `None`. The payload borrows the send buffer, so `emit` can
    /// copy it straight into an outgoing packet.
    pub fn dispatch<R>(&mut self, now: Instant, emit: impl FnOnce(&TcpRepr<'_>) -> R) -> Option<R> {
        self.run_timers(now);
        self.autotune_receive_window(now);
        if let Some(rst) = self.rst_pending.take() {
            self.stats.segments_sent += 1;
            return Some(emit(&rst));
        }
        match self.state {
            State::Closed | State::Listen => return None,
            State::SynSent | State::SynReceived => return self.dispatch_syn(now, emit),
            _ => {}
        }
        self.update_persist(now);
        if let Some(segment) = self.next_segment() {
            return Some(self.dispatch_data(now, segment, emit));
        }
        let probe = self.persist_fired && self.has_unsent();
        if self.ack_now || probe || self.keepalive_probe {
            // A zero-window or keepalive probe repeats the last byte's sequence number so
            // that the peer must answer with an ACK carrying its window.
            let seq = if probe || self.keepalive_probe {
                self.snd_una - 1
            } else {
                self.snd_max
            };
            if probe {
                self.stats.window_probes += 1;
            }
            self.persist_fired = false;
            self.keepalive_probe = false;
            let repr = self.header(Some(now), seq, TcpControl::None);
            let out = emit(&repr);
            self.stats.segments_sent += 1;
            self.after_send(now, &repr);
            self.update_persist(now);
            return Some(out);
        }
        None
    }

    fn dispatch_syn<R>(&mut self, now: Instant, emit: impl FnOnce(&TcpRepr<'_>) -> R) -> Option<R> {
        if !self.syn_pending {
            return None;
        }
        self.syn_pending = false;
        let synack = self.state == State::SynReceived;
        let mut repr = self.header(Some(now), self.iss, TcpControl::Syn);
        if !synack {
            repr.ack_number = None;
            repr.timestamp = self.config.timestamps.then(|| TcpTimestamp {
                tsval: self.ts_clock(now),
                tsecr: 0,
            });
        }
        repr.window_len = u16::try_from(self.window_room()).unwrap_or(u16::MAX);
        repr.max_seg_size = Some(self.config.mss);
        repr.window_scale = if synack {
            self.ws_enabled.then_some(self.rcv_wscale)
        } else {
            self.config.window_scaling.then_some(self.rcv_wscale)
        };
        repr.sack_permitted = if synack {
            self.sack_enabled
        } else {
            self.config.sack
        };
        repr.sack_ranges = [None; MAX_SACK_BLOCKS];
        let out = emit(&repr);
        self.stats.segments_sent += 1;
        if self.snd_max == self.iss {
            self.snd_max = self.iss + 1;
            self.rtt_probe = Some((self.iss + 1, now));
        } else {
            self.stats.retransmitted_segments += 1;
        }
        if synack {
            self.last_ack_sent = self.rcv_nxt;
            self.rcv_adv = self.rcv_nxt + usize::from(repr.window_len);
            self.ack_now = false;
        }
        if self.rto_at.is_none() {
            self.rto_at = Some(now + self.rtt.rto());
        }
        Some(out)
    }

    fn dispatch_data<R>(
        &mut self,
        now: Instant,
        segment: Segment,
        emit: impl FnOnce(&TcpRepr<'_>) -> R,
    ) -> R {
        self.note_activity(now);
        let offset = segment.seq.bytes_since(self.snd_una);
        let mut repr = self.header(Some(now), segment.seq, TcpControl::None);
        let payload = self.tx.contiguous(offset, segment.len);
        // At the ring's wrap point the segment is cut short, and the FIN waits for the next.
        let fin = segment.fin && payload.len() == segment.len;
        repr.control = if fin {
            TcpControl::Fin
        } else if offset + payload.len() == self.tx.len() && !payload.is_empty() {
            TcpControl::Psh
        } else {
            TcpControl::None
        };
        repr.payload = payload;
        let sent_len = payload.len() + usize::from(fin);
        let out = emit(&repr);
        let end = segment.seq + sent_len;
        self.stats.segments_sent += 1;
        self.persist_fired = false;
        if segment.retransmit {
            self.stats.retransmitted_segments += 1;
            self.rexmit_from = self.rexmit_from.max(end);
            self.rexmit_mark = self.in_recovery.then_some(self.snd_max);
            self.rtt_probe = None;
        } else {
            if end > self.snd_max {
                self.snd_max = end;
            }
            if self.rtt_probe.is_none() && !self.ts_enabled && self.retries == 0 {
                self.rtt_probe = Some((end, now));
            }
        }
        if self.rto_at.is_none() {
            self.rto_at = Some(now + self.rtt.rto());
        }
        let sent = TcpRepr {
            payload: &[],
            ..repr
        };
        self.after_send(now, &sent);
        out
    }

    /// Bookkeeping for any segment that carried our ACK.
    fn after_send(&mut self, now: Instant, repr: &TcpRepr<'_>) {
        self.ack_now = false;
        self.note_sack_blocks_sent(&repr.sack_ranges);
        self.delayed_ack_at = None;
        self.last_ack_sent = self.rcv_nxt;
        let edge = self.rcv_nxt + (usize::from(repr.window_len) << self.rcv_wscale);
        if edge > self.rcv_adv {
            self.rcv_adv = edge;
        }
        if let Some(interval) = self.config.keep_alive
            && !self.keepalive_probe
            && self.keepalive_at.is_none()
        {
            self.keepalive_at = Some(now + interval);
        }
    }

    /// The common header of our segments: ports, ACK, window, timestamp and SACK blocks.
    fn header(
        &self,
        now: Option<Instant>,
        seq: SeqNumber,
        control: TcpControl,
    ) -> TcpRepr<'static> {
        TcpRepr {
            src_port: self.local.map_or(0, |a| a.port()),
            dst_port: self.remote.map_or(0, |a| a.port()),
            control,
            seq_number: seq,
            ack_number: Some(self.rcv_nxt),
            window_len: self.window_field(),
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: self.sack_blocks(),
            timestamp: match now {
                Some(now) if self.ts_enabled => Some(TcpTimestamp {
                    tsval: self.ts_clock(now),
                    tsecr: self.ts_recent,
                }),
                _ => None,
            },
            payload: &[],
        }
    }

    fn ts_clock(&self, now: Instant) -> u32 {
        (now.as_millis() as u32).wrapping_add(self.ts_offset)
    }

    /// The window field: what the buffer can take, moved forward only in useful steps
    /// (receiver-side silly window avoidance) and never shrunk.
    fn window_field(&self) -> u16 {
        let promised = self.rcv_adv.bytes_since(self.rcv_nxt).min(self.rx.free());
        let room = self.window_room();
        let window = if room >= promised + self.sws_threshold() {
            room
        } else {
            promised
        };
        u16::try_from(window >> self.rcv_wscale).unwrap_or(u16::MAX)
    }

    fn sws_threshold(&self) -> usize {
        (self.window_capacity() / 2)
            .min(usize::from(self.config.mss))
            .max(1)
    }

    /// The out-of-order block holding `offset` (relative to `rcv_nxt`), as sequence numbers.
    fn ooo_block_holding(&self, offset: u32) -> Option<SackBlock> {
        self.ooo
            .iter()
            .find(|range| range.contains(&offset))
            .map(|range| SackBlock {
                left: self.rcv_nxt + range.start as usize,
                right: self.rcv_nxt + range.end as usize,
            })
    }

    /// The current extent of a block in the history, if its bytes are still out of order:
    /// `rcv_nxt` may have passed it.
    fn current_sack_block(&self, recorded: SackBlock) -> Option<SackBlock> {
        let offset = recorded.left.distance_from(self.rcv_nxt);
        let offset = u32::try_from(offset).ok().filter(|offset| *offset > 0)?;
        self.ooo_block_holding(offset)
    }

    /// Puts the block holding the out-of-order segment just received (at `offset`) first in
    /// the SACK history, not yet reported; the blocks it absorbed leave, the others move
    /// down one place.
    fn report_sack_block_first(&mut self, offset: u32) {
        let Some(first) = self.ooo_block_holding(offset) else {
            return;
        };
        let mut history = [None; SACK_HISTORY];
        history[0] = Some(SackRecord {
            block: first,
            reported: false,
        });
        let older = self.sack_history.iter().flatten().filter(|record| {
            !(first.left <= record.block.left && record.block.right <= first.right)
        });
        for (slot, record) in history[1..].iter_mut().zip(older) {
            *slot = Some(*record);
        }
        self.sack_history = history;
    }

    /// Drops the blocks `rcv_nxt` has reached from the SACK history, keeping the order.
    fn forget_acknowledged_sack_blocks(&mut self) {
        let rcv_nxt = self.rcv_nxt;
        let mut history = [None; SACK_HISTORY];
        let kept = self
            .sack_history
            .iter()
            .flatten()
            .filter(|record| record.block.right > rcv_nxt);
        for (slot, record) in history.iter_mut().zip(kept) {
            *slot = Some(*record);
        }
        self.sack_history = history;
    }

    /// The SACK blocks of our next segment (RFC 2018 section 4): the block of the latest
    /// out-of-order segment first, then the blocks no segment of ours has carried yet, then
    /// those reported most recently, and, while room is left, the other out-of-order ranges
    /// (lowest first), so that the peer learns of as many as fit.
    ///
    /// Reporting the unreported ones before the RFC's most recent ones matters when one
    /// batch of input opened more holes than an option holds: each ACK then carries new
    /// blocks until every one was reported ([`Self::note_sack_blocks_sent`]), where only the
    /// latest would otherwise ever be, and the peer would resend the bytes of the others.
    fn sack_blocks(&self) -> [Option<SackBlock>; MAX_SACK_BLOCKS] {
        let mut blocks = [None; MAX_SACK_BLOCKS];
        if !self.sack_enabled || self.ooo.is_empty() {
            return blocks;
        }
        let history = self.sack_history.iter().flatten();
        let first = history.clone().take(1);
        let unreported = history.clone().skip(1).filter(|record| !record.reported);
        let reported = history.skip(1).filter(|record| record.reported);
        let recorded = first
            .chain(unreported)
            .chain(reported)
            .filter_map(|record| self.current_sack_block(record.block));
        let others = self.ooo.iter().map(|range| SackBlock {
            left: self.rcv_nxt + range.start as usize,
            right: self.rcv_nxt + range.end as usize,
        });
        let mut count = 0;
        for block in recorded.chain(others) {
            if count == MAX_SACK_BLOCKS {
                break;
            }
            if !blocks[..count].contains(&Some(block)) {
                blocks[count] = Some(block);
                count += 1;
            }
        }
        blocks
    }

    /// Marks the history's blocks in `sent` as reported. When blocks are left that no
    /// segment carried yet, another ACK is owed at once, to carry them.
    fn note_sack_blocks_sent(&mut self, sent: &[Option<SackBlock>; MAX_SACK_BLOCKS]) {
        if !self.sack_enabled {
            return;
        }
        let mut unreported = false;
        for index in 0..SACK_HISTORY {
            let Some(record) = self.sack_history[index] else {
                break;
            };
            let Some(current) = self.current_sack_block(record.block) else {
                continue;
            };
            if sent.contains(&Some(current)) {
                self.sack_history[index] = Some(SackRecord {
                    block: current,
                    reported: true,
                });
            } else if !record.reported {
                unreported = true;
            }
        }
        if unreported {
            self.ack_now = true;
        }
    }

    // ---------------------------------------------------------------------------------------
    // Choosing what to send.

    const fn is_synchronized(&self) -> bool {
        matches!(
            self.state,
            State::Established
                | State::FinWait1
                | State::FinWait2
                | State::CloseWait
                | State::Closing
                | State::LastAck
                | State::TimeWait
        )
    }

    const fn sends_data(&self) -> bool {
        matches!(
            self.state,
            State::Established
                | State::FinWait1
                | State::CloseWait
                | State::Closing
                | State::LastAck
        )
    }

    /// The sequence number just after the last queued byte.
    fn data_end(&self) -> SeqNumber {
        self.snd_una + self.tx.len()
    }

    /// Our FIN's sequence number, while it is queued and unacknowledged.
    fn fin_seq(&self) -> Option<SeqNumber> {
        (self.fin_queued && self.sends_data()).then(|| self.data_end())
    }

    fn has_unsent(&self) -> bool {
        self.sends_data()
            && (self.snd_max < self.data_end()
                || self.fin_seq().is_some_and(|fin| self.snd_max <= fin))
    }

    /// The payload of a full-sized segment from the peer: our MSS less the timestamp option.
    fn full_segment(&self) -> usize {
        let ts = if self.ts_enabled {
            TIMESTAMP_OPTION_LEN
        } else {
            0
        };
        usize::from(self.config.mss).saturating_sub(ts)
    }

    /// The segment size the peer accepts, less the timestamp option.
    fn send_mss(&self) -> usize {
        let mss = self.peer_mss.min(usize::from(self.config.mss));
        let ts = if self.ts_enabled {
            TIMESTAMP_OPTION_LEN
        } else {
            0
        };
        mss.saturating_sub(ts).max(1)
    }

    /// Payload room in a segment that also carries our current SACK blocks.
    fn segment_payload(&self) -> usize {
        let blocks = self.sack_blocks().iter().flatten().count();
        let sack = if blocks > 0 { 4 + 8 * blocks } else { 0 };
        self.send_mss().saturating_sub(sack).max(1)
    }

    /// Bytes in the network by RFC 6675's estimate: outstanding, less what the peer SACKed
    /// and what is deemed lost but not yet retransmitted.
    fn pipe(&self) -> usize {
        let outstanding = self.snd_max.bytes_since(self.snd_una);
        let sacked = usize::try_from(self.sacked.covered()).unwrap_or(usize::MAX);
        outstanding
            .saturating_sub(sacked)
            .saturating_sub(self.reno_sacked)
            .saturating_sub(self.lost_pending())
    }

    fn lost_pending(&self) -> usize {
        let from = self.rexmit_from.max(self.snd_una);
        if self.lost_until <= from {
            return 0;
        }
        let start = u32::try_from(from.bytes_since(self.snd_una)).unwrap_or(u32::MAX);
        let end = u32::try_from(self.lost_until.bytes_since(self.snd_una)).unwrap_or(u32::MAX);
        let total = u64::from(end - start);
        usize::try_from(total - self.sacked.covered_in(start..end)).unwrap_or(usize::MAX)
    }

    /// The next segment to send, if the windows allow one.
    fn next_segment(&self) -> Option<Segment> {
        if !self.sends_data() {
            return None;
        }
        let cwnd = self.cc.window();
        let pipe = self.pipe();
        let max_payload = self.segment_payload();
        let data_end = self.data_end();
        let fin_seq = self.fin_seq();

        // Retransmissions first (RFC 6675 NextSeg rule 1).
        let from = self.rexmit_from.max(self.snd_una);
        if self.lost_until > from {
            let start = u32::try_from(from.bytes_since(self.snd_una)).unwrap_or(u32::MAX);
            let end = u32::try_from(self.lost_until.bytes_since(self.snd_una)).unwrap_or(u32::MAX);
            if let Some(hole) = self.sacked.first_uncovered(start, end) {
                if pipe >= cwnd {
                    return None;
                }
                let seq = self.snd_una + hole.start as usize;
                let hole_end = self.snd_una + hole.end as usize;
                let len = hole_end.min(data_end).bytes_since(seq).min(max_payload);
                let fin = fin_seq.is_some_and(|f| seq + len == f && hole_end > f);
                if len == 0 && !fin {
                    return None;
                }
                return Some(Segment {
                    seq,
                    len,
                    fin,
                    retransmit: true,
                });
            }
        }

        // New data (rule 2), within the peer's window and ours.
        if !self.has_unsent() {
            return None;
        }
        let seq = self.snd_max;
        let available = data_end.bytes_since(seq);
        let window_end = self.snd_una + self.snd_wnd;
        let window_room = window_end.bytes_since(seq);
        let cwnd_room = cwnd.saturating_sub(pipe);
        let len = available.min(max_payload).min(window_room).min(cwnd_room);
        let fin = fin_seq.is_some_and(|f| seq + len == f);
        if len == 0 {
            // A FIN needs no window, but waits for the congestion window like data.
            return (fin && (cwnd_room > 0 || pipe == 0)).then_some(Segment {
                seq,
                len,
                fin,
                retransmit: false,
            });
        }
        if len < max_payload && len < available {
            if len < window_room.min(available) {
                // Limited by the congestion window: wait for room for a full segment.
                return None;
            }
            // Limited by the peer's window: sender-side silly window avoidance (RFC 1122
            // section 4.2.3.4), overridden when the persist timer fired.
            if len < self.max_snd_wnd / 2 && !self.persist_fired {
                return None;
            }
        }
        if self.config.nagle && len < max_payload && self.snd_max != self.snd_una && !fin {
            return None;
        }
        Some(Segment {
            seq,
            len,
            fin,
            retransmit: false,
        })
    }

    // ---------------------------------------------------------------------------------------
    // State helpers.

    fn choose_iss(&mut self) {
        self.iss = SeqNumber(self.rng.next_u32());
        self.ts_offset = self.rng.next_u32();
        self.snd_una = self.iss;
        self.snd_max = self.iss;
        self.rexmit_from = self.iss;
        self.lost_until = self.iss;
        self.recover = self.iss;
    }

    fn set_state(&mut self, state: State) {
        if self.state == state {
            return;
        }
        tracing::trace!(from = %self.state, to = %state, "tcp state");
        self.state = state;
        match state {
            State::Closed => {
                self.events.insert(Events::CLOSED);
                self.rto_at = None;
                self.persist_at = None;
                self.delayed_ack_at = None;
                self.keepalive_at = None;
                self.time_wait_at = None;
                self.fin_wait_2_at = None;
                self.idle_release_at = None;
                self.syn_pending = false;
                self.ack_now = false;
                // Nothing queued can be sent any more: free the send buffer. Unread received
                // bytes stay readable.
                self.tx = RingBuffer::new(self.tx.capacity());
                if self.rx.is_empty() {
                    self.rx.release_if_empty();
                }
            }
            State::TimeWait => self.events.insert(Events::CLOSED),
            _ => {}
        }
    }

    fn fail(&mut self, error: ConnectionError) {
        self.error = Some(error);
        self.set_state(State::Closed);
        self.events
            .insert(Events::CLOSED | Events::READABLE | Events::WRITABLE);
    }

    /// Forgets the connection but keeps the configuration and the generator. The buffers'
    /// memory is freed: a reused socket starts small again, like a new one.
    fn reset_connection(&mut self) {
        let config = self.config.clone();
        let rng = self.rng.clone();
        let events = self.events;
        let stats = self.stats;
        *self = Self::with_rng(config, rng);
        self.events = events;
        self.stats = stats;
    }
}

/// The smallest shift that lets the 16-bit window field cover `buffer` bytes.
fn window_shift_for(buffer: usize) -> u8 {
    let mut shift = 0u8;
    while shift < MAX_WINDOW_SHIFT && (buffer >> shift) > usize::from(u16::MAX) {
        shift += 1;
    }
    shift
}

/// The reset answering a segment that belongs to no connection (RFC 9293 section 3.10.7.1).
pub fn reset_for(seg: &TcpRepr<'_>) -> Option<TcpRepr<'static>> {
    if seg.control == TcpControl::Rst {
        return None;
    }
    Some(match seg.ack_number {
        Some(ack) => reset_with_seq(seg, ack),
        None => TcpRepr {
            src_port: seg.dst_port,
            dst_port: seg.src_port,
            control: TcpControl::Rst,
            seq_number: SeqNumber(0),
            ack_number: Some(seg.seq_number + seg.segment_len()),
            ..TcpRepr::default()
        },
    })
}

fn reset_with_seq(seg: &TcpRepr<'_>, seq: SeqNumber) -> TcpRepr<'static> {
    TcpRepr {
        src_port: seg.dst_port,
        dst_port: seg.src_port,
        control: TcpControl::Rst,
        seq_number: seq,
        ack_number: None,
        ..TcpRepr::default()
    }
}
