//! The driver-facing contract: one [`Input`] type that carries `now`, and one [`Output`] drain
//! that ends with the next deadline.
//!
//! See the crate documentation for the rule that binds them: mutate, drain to the deadline,
//! mutate.

use core::fmt;
use core::time::Duration;
use std::net::SocketAddr;

use crate::time::Instant;
use crate::tunnel::{Failure, TransportSpec, TunnelConfig};

/// Identifies one local connection accepted by a driver's listener (a proxy client or a port
/// forward), chosen by the driver and unique while the connection lives.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ConnId(pub u64);

/// Identifies one of the driver's listening sockets, in the order the client configured them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ListenerId(pub u32);

/// Something that happened to a local connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LocalEvent<'a> {
    /// The listener accepted this new connection.
    Accepted {
        /// Which listener.
        listener: ListenerId,
    },
    /// Bytes read from the connection. The machine must take them all; it answers
    /// [`LocalAction::PauseReading`] when it wants no more for a while.
    Data(&'a [u8]),
    /// The application closed its sending side (read returned 0).
    ReadClosed,
    /// The socket could not take all of the last [`LocalAction::Write`]; the driver keeps the
    /// rest. Emit no more writes for this connection until [`LocalEvent::Writable`].
    WriteBlocked,
    /// The driver flushed everything it kept after [`LocalEvent::WriteBlocked`]; writes may
    /// resume.
    Writable,
    /// The connection failed or was reset; it is gone.
    Reset,
}

/// Why the transport towards the VPN server failed, as far as the driver can tell.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum TransportError {
    /// The server's host name did not resolve to an address.
    Unresolved,
    /// The server refused the connection (nothing listens on its port).
    Refused,
    /// The stream was reset.
    Reset,
    /// The server closed the stream in an orderly way (end of file).
    Closed,
    /// No route to the server, or the network is down.
    Unreachable,
    /// Connecting took longer than the operating system allows.
    TimedOut,
    /// Any other socket error.
    Other,
}

impl TransportError {
    /// The error's number in the session journal.
    pub const fn code(self) -> u8 {
        match self {
            Self::Unresolved => 0,
            Self::Refused => 1,
            Self::Reset => 2,
            Self::Closed => 3,
            Self::Unreachable => 4,
            Self::TimedOut => 5,
            Self::Other => 6,
        }
    }

    /// The error with journal number `code`; unknown numbers read as [`TransportError::Other`].
    pub const fn from_code(code: u8) -> Self {
        match code {
            0 => Self::Unresolved,
            1 => Self::Refused,
            2 => Self::Reset,
            3 => Self::Closed,
            4 => Self::Unreachable,
            5 => Self::TimedOut,
            _ => Self::Other,
        }
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unresolved => "the server's name did not resolve",
            Self::Refused => "the server refused the connection",
            Self::Reset => "the connection to the server was reset",
            Self::Closed => "the server closed the connection",
            Self::Unreachable => "the server is unreachable",
            Self::TimedOut => "connecting to the server timed out",
            Self::Other => "the socket to the server failed",
        })
    }
}

/// Something that happened to the transport socket towards the VPN server.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TransportEvent<'a> {
    /// The transport the machine asked for ([`Driven::transport`]) is open: a UDP socket
    /// connected to `remote`, or a TCP stream to `remote` that finished connecting. `remote` is
    /// what the host name resolved to for this attempt.
    Connected {
        /// The server's address.
        remote: SocketAddr,
    },
    /// Bytes from the server: one datagram over UDP, any chunk of the stream over TCP.
    Data {
        /// Who sent them.
        from: SocketAddr,
        /// The datagram or stream chunk.
        bytes: &'a [u8],
    },
    /// The transport could not be opened, failed, or the server closed the stream. The driver
    /// opens nothing again until the machine asks for a new attempt.
    Closed {
        /// Why.
        error: TransportError,
    },
}

/// One input to a sans-IO state machine. Every input carries the time it happened.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Input<'a> {
    /// Nothing happened but time passed: the deadline from the last [`Output::Timeout`] (or
    /// any later moment) was reached.
    Timeout {
        /// The current time.
        now: Instant,
    },
    /// The transport towards the VPN server.
    Transport {
        /// When it happened.
        now: Instant,
        /// What happened.
        event: TransportEvent<'a>,
    },
    /// The user asked to stop: end the session gracefully (for example with OpenVPN's
    /// explicit-exit-notify). The machine reports [`Event::Down`] when it is done.
    Close {
        /// When the user asked.
        now: Instant,
    },
    /// A local connection.
    Local {
        /// When it happened.
        now: Instant,
        /// Which connection.
        conn: ConnId,
        /// What happened.
        event: LocalEvent<'a>,
    },
}

impl Input<'_> {
    /// When the input happened.
    pub const fn now(&self) -> Instant {
        match *self {
            Self::Timeout { now }
            | Self::Close { now }
            | Self::Transport { now, .. }
            | Self::Local { now, .. } => now,
        }
    }
}

/// What a driver must do to a local connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LocalAction<'b> {
    /// Write these bytes. If the socket takes only part, the driver keeps the rest (and any
    /// further writes of the same drain), reports [`LocalEvent::WriteBlocked`] after the drain,
    /// and [`LocalEvent::Writable`] once everything kept is flushed.
    Write(&'b [u8]),
    /// Stop reading from the connection (backpressure).
    PauseReading,
    /// Start reading again.
    ResumeReading,
    /// Close the sending side after all written bytes are flushed.
    Shutdown,
    /// The machine is done with the connection: read nothing more, write what was already
    /// written (bounded in time: a client that reads nothing is dropped), then close it.
    /// Bytes handed over with [`LocalAction::Write`] are never discarded by a close.
    Close,
}

/// An event for the user or the supervising program. Each happens once per occurrence, in
/// the order: `Connecting`, then `Connected` or `Reconnecting`, and so on, then `Down` last.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Event {
    /// A connection attempt to this server starts.
    Connecting(TransportSpec),
    /// The tunnel is up with this configuration.
    Connected(TunnelConfig),
    /// The session was lost, or an attempt failed; the next attempt starts in `retry_in`.
    Reconnecting {
        /// Why.
        reason: Failure,
        /// How long until the next attempt.
        retry_in: Duration,
    },
    /// The client has stopped for good.
    Down(Failure),
}

/// One output of a sans-IO state machine, drained with [`Driven::poll_output`].
#[derive(PartialEq, Eq, Debug)]
pub enum Output<'b> {
    /// Send these bytes on the transport to the VPN server.
    Transmit {
        /// Where to: the address of the current transport's [`TransportEvent::Connected`].
        to: SocketAddr,
        /// The datagram, or the chunk of the stream (already framed).
        bytes: &'b [u8],
    },
    /// Act on a local connection.
    Local {
        /// Which connection.
        conn: ConnId,
        /// What to do.
        action: LocalAction<'b>,
    },
    /// Tell the user.
    Event(Event),
    /// The next output does not fit the buffer given to `poll_output`; call again with at least
    /// `needed` bytes. The output stays queued.
    BufferTooSmall {
        /// The buffer size the next output needs.
        needed: usize,
    },
    /// Fully drained: nothing more until an input arrives or this deadline passes (`None`: no
    /// deadline). Always the last output of a drain.
    Timeout(Option<Instant>),
}

/// Why an input was refused. Refusing an input changes no state.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum InputError {
    /// The input names a connection that does not exist (already closed, or never accepted).
    UnknownConnection(ConnId),
    /// A transport event arrived while no transport is open.
    NoTransport,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownConnection(conn) => write!(f, "no local connection {}", conn.0),
            Self::NoTransport => f.write_str("no transport is open"),
        }
    }
}

impl std::error::Error for InputError {}

/// A state machine a driver can run: the whole contract between core and any event loop.
///
/// A driver's loop, for any runtime:
/// 1. drain [`poll_output`](Self::poll_output) until [`Output::Timeout`], acting on each
///    output (send, write, pause, report);
/// 2. wait until the transport or a local socket is ready, or the deadline passes;
/// 3. read one thing, stamp it with the clock, pass it to
///    [`handle_input`](Self::handle_input), and go back to 1.
///
/// A driver may also pass several inputs before it drains (in practice, every datagram the
/// transport has ready at once, so that the machine answers a batch with one acknowledgment):
/// a machine must take any number of inputs between drains, keeping what it owes for the next
/// drain (it may answer a batch with less than it would answer each input alone, never with
/// less than the batch needs). Inputs still come in time order.
pub trait Driven {
    /// The transport the machine wants open now, or `None` for none (between attempts, or once
    /// down). When the [`TransportSpec::attempt`] changes, the driver closes the socket it has
    /// and opens a new one: resolving [`TransportSpec::host`] again, connecting, and reporting
    /// [`TransportEvent::Connected`] or [`TransportEvent::Closed`]. Check it after every
    /// drain.
    fn transport(&self) -> Option<&TransportSpec>;

    /// Applies one input.
    ///
    /// # Errors
    ///
    /// Refuses inputs that name unknown connections; a refused input changes nothing.
    fn handle_input(&mut self, input: Input<'_>) -> Result<(), InputError>;

    /// The next output, written into `buf` where it carries bytes. Once called, call until it
    /// returns [`Output::Timeout`] before the next [`handle_input`](Self::handle_input).
    fn poll_output<'b>(&mut self, buf: &'b mut [u8]) -> Output<'b>;
}
