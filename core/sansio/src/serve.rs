//! The contract between a machine in the server role and a driver.
//!
//! A server machine listens on one socket its configuration names ([`ServeDriven::listen`]),
//! speaks to many clients through it, and terminates the flows those clients send beyond it
//! (an *exit*): for every inner TCP connection or UDP flow it accepts, it asks the driver to
//! open an ordinary host socket ([`ServeOutput::OpenFlow`]) and then moves bytes between the
//! two. Names are resolved by the host ([`ServeOutput::Resolve`]); credentials the machine
//! cannot check itself go to the driver ([`ServeOutput::CheckCredentials`]), which may run a
//! configured command.
//!
//! The loop is the client's ([`crate::io::Driven`]): feed one [`ServeInput`], drain
//! [`ServeDriven::poll_output`] until [`ServeOutput::Timeout`], wait, repeat. Local
//! connections and flows reuse the client's vocabulary ([`LocalEvent`], [`LocalAction`]) so a
//! runtime's socket code serves both roles.

use core::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::io::{ConnId, LocalAction, LocalEvent, TransportError};
use crate::time::Instant;
use crate::tunnel::{Failure, TransportKind};

/// Where and how the server listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenSpec {
    /// The address to bind (`0.0.0.0:1194`, `127.0.0.1:0` for any free port, ...).
    pub addr: SocketAddr,
    /// One socket for every client's datagrams, or a listener whose accepted streams each
    /// carry one client's length-prefixed packets.
    pub kind: TransportKind,
}

/// One host socket the machine asked for, for one inner flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowId(pub u64);

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flow {}", self.0)
    }
}

/// What kind of host socket a flow needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowKind {
    /// A TCP connection to the destination.
    Tcp,
    /// A UDP socket connected to the destination: each [`LocalAction::Write`] is one datagram,
    /// each [`FlowEvent::Data`] one datagram received from it.
    Udp,
}

/// Something that happened to a flow's host socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowEvent<'a> {
    /// The socket is open (the TCP handshake with the destination completed; a UDP socket is
    /// bound and connected).
    Connected,
    /// The socket could not be opened. No more events follow for the flow.
    Failed(TransportError),
    /// Any other event, with the meaning it has for a local connection: bytes (one datagram
    /// for UDP), end of stream, reset, write backpressure.
    Socket(LocalEvent<'a>),
}

/// Something that happened to a client's stream on a TCP listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerEvent<'a> {
    /// A client connected from this address.
    Accepted {
        /// The client's address.
        from: SocketAddr,
    },
    /// Bytes from the client: any chunk of its length-prefixed stream.
    Data(&'a [u8]),
    /// The client closed the stream or it failed. No more events follow.
    Closed,
}

/// One input to a server machine. Every input carries the time it happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServeInput<'a> {
    /// The deadline of the last [`ServeOutput::Timeout`] passed.
    Timeout {
        /// The current time.
        now: Instant,
    },
    /// A datagram on the UDP listening socket.
    Datagram {
        /// When it arrived.
        now: Instant,
        /// Who sent it.
        from: SocketAddr,
        /// Its bytes.
        bytes: &'a [u8],
    },
    /// A client's stream on the TCP listener.
    Peer {
        /// When it happened.
        now: Instant,
        /// Which stream.
        conn: ConnId,
        /// What happened.
        event: PeerEvent<'a>,
    },
    /// A flow's host socket.
    Flow {
        /// When it happened.
        now: Instant,
        /// Which flow.
        flow: FlowId,
        /// What happened.
        event: FlowEvent<'a>,
    },
    /// The answer to a [`ServeOutput::Resolve`]: the name's addresses, none when it does not
    /// resolve.
    Resolved {
        /// When the answer came.
        now: Instant,
        /// The query it answers.
        query: u64,
        /// The addresses, in the resolver's order.
        addrs: &'a [IpAddr],
    },
    /// The answer to a [`ServeOutput::CheckCredentials`].
    CredentialsChecked {
        /// When the answer came.
        now: Instant,
        /// The request it answers.
        request: u64,
        /// Whether the credentials are good.
        accepted: bool,
    },
    /// The user asked the server to stop: clients are told (so they reconnect elsewhere or
    /// later) and the machine reports [`ServeEvent::Stopped`].
    Close {
        /// When the user asked.
        now: Instant,
    },
}

impl ServeInput<'_> {
    /// When the input happened.
    pub const fn now(&self) -> Instant {
        match *self {
            Self::Timeout { now }
            | Self::Close { now }
            | Self::Datagram { now, .. }
            | Self::Peer { now, .. }
            | Self::Flow { now, .. }
            | Self::Resolved { now, .. }
            | Self::CredentialsChecked { now, .. } => now,
        }
    }
}

/// An event for the operator's log.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServeEvent {
    /// A client finished its handshake and has this inner address.
    ClientUp {
        /// Where the client's packets come from.
        peer: SocketAddr,
        /// Its certificate's common name or its username.
        name: String,
        /// Its inner address.
        address: IpAddr,
    },
    /// A client's session ended (or never got up: a failed handshake, a refused login).
    ClientDown {
        /// Where the client's packets came from.
        peer: SocketAddr,
        /// Its name, when it got that far.
        name: Option<String>,
        /// Why.
        reason: Failure,
    },
    /// A client's session now arrives from a new address (a NAT rebinding).
    ClientFloated {
        /// The old address.
        from: SocketAddr,
        /// The new one.
        to: SocketAddr,
    },
    /// A flow was refused or could not be opened.
    FlowRefused {
        /// The client's inner address.
        client: IpAddr,
        /// Where the flow was going.
        to: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The server stopped (after [`ServeInput::Close`]).
    Stopped,
}

/// One output of a server machine, drained with [`ServeDriven::poll_output`].
#[derive(PartialEq, Eq, Debug)]
pub enum ServeOutput<'b> {
    /// Send a datagram from the listening UDP socket.
    Datagram {
        /// To which client.
        to: SocketAddr,
        /// The bytes.
        bytes: &'b [u8],
    },
    /// Act on a client's stream (writes are already length-prefixed).
    Peer {
        /// Which stream.
        conn: ConnId,
        /// What to do.
        action: LocalAction<'b>,
    },
    /// Open a host socket for a flow and report [`FlowEvent::Connected`] or
    /// [`FlowEvent::Failed`].
    OpenFlow {
        /// The new flow's id.
        flow: FlowId,
        /// TCP or UDP.
        kind: FlowKind,
        /// The destination.
        to: SocketAddr,
    },
    /// Act on a flow's host socket, with the meaning the action has for a local connection.
    Flow {
        /// Which flow.
        flow: FlowId,
        /// What to do.
        action: LocalAction<'b>,
    },
    /// Resolve a name with the host's resolver and answer with [`ServeInput::Resolved`].
    Resolve {
        /// The query id to answer with.
        query: u64,
        /// The name.
        name: &'b str,
    },
    /// Check a username and password (for example with a configured command) and answer with
    /// [`ServeInput::CredentialsChecked`]. Never log the password.
    CheckCredentials {
        /// The request id to answer with.
        request: u64,
        /// The username.
        username: &'b str,
        /// The password.
        password: &'b str,
    },
    /// Tell the operator.
    Event(ServeEvent),
    /// The next output does not fit the buffer; call again with at least `needed` bytes.
    BufferTooSmall {
        /// The buffer size the next output needs.
        needed: usize,
    },
    /// Fully drained until an input arrives or this deadline passes.
    Timeout(Option<Instant>),
}

/// A machine in the server role a driver can run. See the [module documentation](self).
pub trait ServeDriven {
    /// Where to listen. Fixed for the machine's life.
    fn listen(&self) -> ListenSpec;

    /// Applies one input. Inputs about unknown streams or flows (already closed) are ignored.
    fn handle_input(&mut self, input: ServeInput<'_>);

    /// The next output, written into `buf` where it carries bytes. Call until it returns
    /// [`ServeOutput::Timeout`] before the next [`handle_input`](Self::handle_input).
    fn poll_output<'b>(&mut self, buf: &'b mut [u8]) -> ServeOutput<'b>;
}
