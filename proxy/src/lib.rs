//! Local proxy front ends (HTTP/1.1, SOCKS5, port forwards) as sans-IO state machines, shared
//! by every driver.
//!
//! A driver accepts a local TCP connection and creates one [`ProxyConn`] for it. From then on
//! it only moves bytes and events:
//!
//! - bytes read from the client go in with [`ProxyConn::on_client_data`], its close with
//!   [`ProxyConn::on_client_eof`];
//! - the front end asks the layer below (the tunnel's TCP/IP stack and DNS) for a stream with
//!   [`Action::Connect`]; that layer answers with [`ProxyConn::on_upstream_connected`] or
//!   [`ProxyConn::on_upstream_failed`], then delivers [`ProxyConn::on_upstream_data`] and
//!   [`ProxyConn::on_upstream_eof`];
//! - bytes for either side are taken from [`ProxyConn::client_output`] and
//!   [`ProxyConn::upstream_output`], and acknowledged with [`ProxyConn::advance_client`] and
//!   [`ProxyConn::advance_upstream`] once written;
//! - control actions ([`Action`]) are drained with [`ProxyConn::poll_action`], and
//!   [`ProxyConn::poll_timeout`] says when to call [`ProxyConn::handle_timeout`].
//!
//! # The loop
//!
//! After every input (and after every `advance_*`), a driver:
//!
//! 1. drains [`ProxyConn::poll_action`] until `None`, acting on each action in order;
//! 2. writes as much of [`ProxyConn::client_output`] as the client socket takes and reports it
//!    with [`ProxyConn::advance_client`]; the same for the upstream;
//! 3. goes back to 1 while step 2 moved bytes (draining can release a deferred half-close or
//!    resume reading); then waits for I/O or [`ProxyConn::poll_timeout`].
//!
//! The queues are bounded: when the bytes queued for one side pass
//! [`ProxyConfig::buffer_size`], the front end emits [`Action::PauseClient`] or
//! [`Action::PauseUpstream`] to stop reading the other side, and the matching `Resume*` once
//! half of it has drained. Bytes already read when a pause arrives are still accepted.
//!
//! # Upstream streams
//!
//! Every [`Action::Connect`] is answered by the layer below (connected or failed), and is
//! followed, sooner or later, by exactly one [`Action::CloseUpstream`] that releases the
//! stream. After `CloseUpstream` the layer below delivers no more events for that stream; the
//! next upstream events refer to the stream of the next `Connect`. An HTTP connection may open
//! several streams in turn (keep-alive to another host); the others open at most one.
//!
//! # The end
//!
//! Every connection ends with exactly one [`Action::CloseClient`]; after it
//! [`ProxyConn::is_closed`] is true and the connection produces nothing more, whatever it is
//! fed. A graceful end first sends [`Action::ShutdownClient`] once everything for the client
//! was written, then waits (at most [`ProxyConfig::linger_timeout`], restarted whenever the
//! client reads) for the client to close too, so that closing does not reset a connection
//! whose last response the client has not read yet.

#![forbid(unsafe_code)]

mod config;
mod forward;
mod host;
mod http;
mod pipes;
mod socks5;
pub mod socks5_client;

use std::net::SocketAddr;
use std::sync::Arc;

pub use erebus_sansio::Instant;

pub use crate::config::{AuthConfigError, ProxyAuth, ProxyConfig};
pub use crate::forward::{ForwardSpec, ForwardSpecError};
pub use crate::host::{AuthorityHost, Host, HostError};

use crate::forward::Forward;
use crate::http::Http;
use crate::pipes::Pipes;
use crate::socks5::Socks5;

/// Which front end serves a connection: what its listener was configured as.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum FrontEnd {
    /// An HTTP/1.1 proxy: CONNECT and absolute-form requests.
    Http,
    /// A SOCKS5 proxy: CONNECT to addresses and to names resolved through the tunnel.
    Socks5,
    /// A port forward: every connection goes to this destination.
    Forward {
        /// The destination host.
        host: Host,
        /// The destination port.
        port: u16,
    },
}

/// Why the layer below could not open (or keep) an upstream stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum UpstreamFailure {
    /// The destination answered with a reset (TCP RST): nothing listens there.
    Refused,
    /// The destination cannot be reached (ICMP unreachable, no route inside the tunnel).
    Unreachable,
    /// The layer below gave up waiting for the destination.
    Timeout,
    /// The VPN tunnel is not up, so nothing can be reached.
    TunnelDown,
    /// The tunnel's DNS servers say the name does not exist (or gave no address).
    NameNotFound,
    /// Policy forbids this destination.
    NotAllowed,
    /// An open stream was reset by the destination.
    Reset,
    /// The layer below is serving as many connections as it is configured to: this one is
    /// refused until others close.
    TooManyConnections,
    /// The layer below has as many name lookups in progress as it is configured to.
    TooManyLookups,
    /// Any other failure.
    Other,
}

/// Something the driver or the layer below must do. Drained with [`ProxyConn::poll_action`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Action {
    /// Open a stream to `host:port` through the tunnel (names resolved by the tunnel's DNS).
    /// Answer with [`ProxyConn::on_upstream_connected`] or [`ProxyConn::on_upstream_failed`].
    Connect {
        /// The destination host, as the client gave it.
        host: Host,
        /// The destination port.
        port: u16,
    },
    /// Half-close the upstream stream (send FIN) after everything already taken from
    /// [`ProxyConn::upstream_output`].
    ShutdownUpstream,
    /// Release the upstream stream: close it (aborting an attempt in progress), drop anything
    /// unsent, deliver no more events for it.
    CloseUpstream,
    /// Stop reading the client (its bytes have nowhere to go yet).
    PauseClient,
    /// Read the client again.
    ResumeClient,
    /// Stop reading the upstream stream (the client is not draining).
    PauseUpstream,
    /// Read the upstream stream again.
    ResumeUpstream,
    /// Half-close the client connection (send FIN) after everything already taken from
    /// [`ProxyConn::client_output`].
    ShutdownClient,
    /// Close the client connection now. Always the last action of a connection.
    CloseClient,
}

/// The front-end state of one accepted connection.
#[derive(Debug)]
enum Front {
    Http(Http),
    Socks5(Socks5),
    Forward(Forward),
}

/// One accepted local connection and its proxy front end, as a sans-IO state machine.
///
/// See the [crate documentation](crate) for how a driver runs it.
#[derive(Debug)]
pub struct ProxyConn {
    pipes: Pipes,
    front: Front,
}

impl ProxyConn {
    /// Starts serving a connection accepted at `now`. A port forward asks for its stream at
    /// once ([`Action::Connect`] is the first action).
    pub fn new(now: Instant, front_end: FrontEnd, config: Arc<ProxyConfig>) -> Self {
        let mut pipes = Pipes::new(config, now);
        let front = match front_end {
            FrontEnd::Http => Front::Http(Http::new(now, &pipes)),
            FrontEnd::Socks5 => Front::Socks5(Socks5::new(now, &pipes)),
            FrontEnd::Forward { host, port } => {
                Front::Forward(Forward::new(now, &mut pipes, host, port))
            }
        };
        Self { pipes, front }
    }

    /// Bytes read from the client.
    pub fn on_client_data(&mut self, now: Instant, data: &[u8]) {
        if self.pipes.is_closed() || self.pipes.client_eof || data.is_empty() {
            return;
        }
        if self.pipes.is_lingering() {
            // Closing: the bytes are read only so the client's own close can be seen.
        } else if self.pipes.relaying {
            self.pipes.relay_client_data(now, data);
        } else {
            match &mut self.front {
                Front::Http(http) => http.on_client_data(now, &mut self.pipes, data),
                Front::Socks5(socks) => socks.on_client_data(now, &mut self.pipes, data),
                Front::Forward(forward) => forward.on_client_data(now, &mut self.pipes, data),
            }
        }
        self.settle();
    }

    /// The client closed its sending side (a read returned 0).
    pub fn on_client_eof(&mut self, now: Instant) {
        if self.pipes.is_closed() || self.pipes.client_eof {
            return;
        }
        self.pipes.client_eof = true;
        if self.pipes.is_lingering() {
            // `settle` closes once the shutdown has gone out.
        } else if self.pipes.relaying {
            self.pipes.shutdown_upstream_after_flush();
        } else {
            match &mut self.front {
                Front::Http(http) => http.on_client_eof(now, &mut self.pipes),
                Front::Socks5(socks) => socks.on_client_eof(now, &mut self.pipes),
                Front::Forward(forward) => forward.on_client_eof(now, &mut self.pipes),
            }
        }
        self.settle();
    }

    /// The client connection failed or was reset; it is gone. The upstream is released and
    /// the connection ends.
    pub fn on_client_reset(&mut self, _now: Instant) {
        self.pipes.close();
    }

    /// The stream asked for with [`Action::Connect`] is open. `local` is its local address in
    /// the tunnel, which SOCKS5 reports to the client as the bound address (0.0.0.0:0 when
    /// `None`).
    pub fn on_upstream_connected(&mut self, now: Instant, local: Option<SocketAddr>) {
        if self.pipes.is_closed() || !self.pipes.mark_connected(now) {
            return;
        }
        match &mut self.front {
            Front::Http(http) => http.on_upstream_connected(now, &mut self.pipes, local),
            Front::Socks5(socks) => socks.on_upstream_connected(now, &mut self.pipes, local),
            Front::Forward(forward) => forward.on_upstream_connected(now, &mut self.pipes),
        }
        self.settle();
    }

    /// The stream could not be opened, or an open stream failed.
    pub fn on_upstream_failed(&mut self, now: Instant, failure: UpstreamFailure) {
        if self.pipes.is_closed() || !self.pipes.mark_failed() {
            return;
        }
        if self.pipes.relaying {
            self.pipes.close();
        } else {
            match &mut self.front {
                Front::Http(http) => http.on_upstream_failed(now, &mut self.pipes, failure),
                Front::Socks5(socks) => socks.on_upstream_failed(now, &mut self.pipes, failure),
                Front::Forward(forward) => forward.on_upstream_failed(&mut self.pipes),
            }
        }
        self.settle();
    }

    /// Bytes received on the upstream stream.
    pub fn on_upstream_data(&mut self, now: Instant, data: &[u8]) {
        if !self.upstream_open() || data.is_empty() {
            return;
        }
        if self.pipes.relaying {
            self.pipes.relay_upstream_data(now, data);
        } else if let Front::Http(http) = &mut self.front {
            http.on_upstream_data(now, &mut self.pipes, data);
        }
        self.settle();
    }

    /// The upstream stream closed its sending side.
    pub fn on_upstream_eof(&mut self, now: Instant) {
        if !self.upstream_open() {
            return;
        }
        self.pipes.upstream_eof = true;
        if self.pipes.relaying {
            self.pipes.shutdown_client_after_flush();
        } else if let Front::Http(http) = &mut self.front {
            http.on_upstream_eof(now, &mut self.pipes);
        }
        self.settle();
    }

    /// Time passed; call when [`ProxyConn::poll_timeout`]'s deadline is reached (calling early
    /// or more than once is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.pipes.is_closed() {
            return;
        }
        if !self.pipes.on_timeout(now) {
            match &mut self.front {
                Front::Http(http) => http.on_timeout(now, &mut self.pipes),
                Front::Socks5(socks) => socks.on_timeout(now, &mut self.pipes),
                Front::Forward(forward) => forward.on_timeout(now, &mut self.pipes),
            }
        }
        self.settle();
    }

    /// The next action, in the order they must be carried out.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.pipes.poll_action()
    }

    /// When [`ProxyConn::handle_timeout`] must next be called; `None` while only the peers
    /// can make progress (or once closed).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.pipes.is_closed() {
            return None;
        }
        let front = match &self.front {
            Front::Http(http) => http.deadline(&self.pipes),
            Front::Socks5(socks) => socks.deadline(&self.pipes),
            Front::Forward(forward) => forward.deadline(&self.pipes),
        };
        match (self.pipes.deadline(), front) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Bytes to write to the client (a contiguous prefix of what is queued; more may follow
    /// once it is advanced past).
    pub fn client_output(&self) -> &[u8] {
        self.pipes.client_output()
    }

    /// `written` bytes of [`ProxyConn::client_output`] were written to the client.
    pub fn advance_client(&mut self, now: Instant, written: usize) {
        if self.pipes.is_closed() {
            return;
        }
        self.pipes.advance_client(now, written);
        self.settle();
    }

    /// Bytes to write to the upstream stream; empty until it is connected.
    pub fn upstream_output(&self) -> &[u8] {
        self.pipes.upstream_output()
    }

    /// `written` bytes of [`ProxyConn::upstream_output`] were written to the upstream.
    pub fn advance_upstream(&mut self, now: Instant, written: usize) {
        if self.pipes.is_closed() {
            return;
        }
        self.pipes.advance_upstream(now, written);
        self.settle();
    }

    /// Whether the connection has ended ([`Action::CloseClient`] was emitted).
    pub fn is_closed(&self) -> bool {
        self.pipes.is_closed()
    }

    /// Bytes queued for the client and not yet advanced past.
    pub fn client_backlog(&self) -> usize {
        self.pipes.client_backlog()
    }

    /// How many more upstream bytes the client side takes now: the room left in its queue
    /// of [`ProxyConfig::buffer_size`]. A caller that reads the upstream's bytes from a
    /// buffer of its own (a TCP socket's receive buffer) takes no more than this, so what the
    /// client has not read yet waits in that one buffer, where the upstream's flow control
    /// sees it, instead of being copied into a second one.
    pub fn upstream_room(&self) -> usize {
        self.pipes.client_room()
    }

    /// Bytes queued for the upstream (including those held until it connects).
    pub fn upstream_backlog(&self) -> usize {
        self.pipes.upstream_backlog()
    }

    fn upstream_open(&self) -> bool {
        !self.pipes.is_closed()
            && self.pipes.upstream == pipes::Upstream::Connected
            && !self.pipes.upstream_eof
    }

    fn settle(&mut self) {
        let (backlog, limit) = match &self.front {
            Front::Http(http) => (http.backlog(), http.backlog_limit(&self.pipes)),
            Front::Socks5(socks) => (socks.backlog(), usize::MAX),
            Front::Forward(_) => (0, usize::MAX),
        };
        self.pipes.settle(backlog, limit);
    }
}
