//! The mio driver for server machines: one thread, one `Poll`, woken at the machine's
//! deadline, by a socket, by a finished blocking request, or by a [`ServeStopHandle`].
//!
//! It owns the listening socket (UDP, or a TCP listener whose accepted streams are the
//! clients' *peers*), the flows' host sockets, and nothing else: it never looks at what the
//! bytes mean. Reads go through one reused buffer; a datagram on the listening socket is
//! handed to the machine as a slice of it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::mio::net::{TcpListener, TcpStream, UdpSocket};
use ::mio::{Events, Interest, Poll, Registry, Token, Waker};
use erebus_sansio::io::{ConnId, TransportError};
use erebus_sansio::serve::{FlowId, FlowKind, ServeDriven, ServeEvent};
use erebus_sansio::tunnel::TransportKind;

use super::{
    CLOSE_LINGER, CredentialsChecker, FLOW_CONNECT_TIMEOUT, STOP_GRACE, ServeIo, ServePump,
};
use crate::clock::Clock;
use crate::pump::{transport_error, unspecified_for};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_STREAM: usize = 2;

/// Datagrams or accepts taken from the listening socket per wake-up before others get a turn.
const LISTENER_READS_PER_TURN: usize = 64;
/// Reads taken from one stream or flow per wake-up before others get a turn.
const STREAM_READS_PER_TURN: usize = 8;
/// The reused read buffer: the largest datagram, and a good chunk of a stream.
const READ_BUF: usize = 65_536;
/// Bytes already written from an outbox before they are dropped from its front.
const OUTBOX_COMPACT: usize = 64 * 1024;

/// A handle that stops a running [`MioServeDriver`] from another thread (a signal handler's,
/// for instance): the machine is asked to close gracefully. Cheap to clone.
#[derive(Clone)]
pub struct ServeStopHandle {
    requested: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ServeStopHandle {
    /// Asks the driver to stop the server.
    pub fn stop(&self) {
        self.requested.store(true, Ordering::SeqCst);
        // A failed wake only delays the stop until the next deadline.
        let _ = self.waker.wake();
    }
}

enum Listening {
    Udp(UdpSocket),
    Tcp(TcpListener),
}

#[derive(Clone, Copy)]
enum Owner {
    Peer(ConnId),
    Flow(FlowId),
}

enum Sock {
    Tcp(TcpStream),
    Udp(UdpSocket),
}

/// Bytes a stream's socket did not take yet, in order.
#[derive(Default)]
struct Outbox {
    bytes: Vec<u8>,
    /// How much of `bytes` was already written.
    start: usize,
}

impl Outbox {
    fn len(&self) -> usize {
        self.bytes.len() - self.start
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// Writes as much as `stream` takes now.
    fn flush(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        let written = write_some(stream, &self.bytes[self.start..])?;
        self.start += written;
        if self.start == self.bytes.len() {
            self.bytes.clear();
            self.start = 0;
        } else if self.start >= OUTBOX_COMPACT && self.start * 2 >= self.bytes.len() {
            self.bytes.drain(..self.start);
            self.start = 0;
        }
        Ok(())
    }
}

/// A client's stream or a flow's socket.
struct Stream {
    owner: Owner,
    sock: Sock,
    /// A TCP flow whose handshake has not finished; it fails at `connect_by`.
    connecting: bool,
    connect_by: Option<std::time::Instant>,
    outbox: Outbox,
    paused: bool,
    /// End of stream read, or reading given up by a close.
    read_done: bool,
    /// Shut the sending side down once the outbox is empty.
    shutdown_wanted: bool,
    write_shut: bool,
    /// Closed by the machine (or, for a peer, after its end of stream): dropped once the
    /// outbox is empty, or at this time. Nothing more is reported about it.
    closing: Option<std::time::Instant>,
    /// Queued in `ready`: bytes may wait to be read.
    readable: bool,
    /// The interest mio has for the socket, if registered.
    registered: Option<Interest>,
}

impl Stream {
    fn new(owner: Owner, sock: Sock, connecting: bool) -> Self {
        Self {
            owner,
            sock,
            connecting,
            connect_by: None,
            outbox: Outbox::default(),
            paused: false,
            read_done: false,
            shutdown_wanted: false,
            write_shut: false,
            closing: None,
            readable: false,
            registered: None,
        }
    }

    fn wanted_interest(&self) -> Option<Interest> {
        let read = !self.paused && !self.read_done;
        let write = self.connecting || !self.outbox.is_empty();
        match (read, write) {
            (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
            (true, false) => Some(Interest::READABLE),
            (false, true) => Some(Interest::WRITABLE),
            (false, false) => None,
        }
    }

    /// Nothing more can happen on it: both directions are finished.
    fn finished(&self) -> bool {
        self.read_done && self.write_shut && self.outbox.is_empty()
    }
}

/// What happened to a socket during an `Io` call or a readiness event, to be told to the pump
/// once that call has returned.
enum Notice {
    FlowConnected(FlowId),
    FlowFailed(FlowId, TransportError),
    FlowReset(FlowId),
    FlowFlushed(FlowId),
    PeerClosed(ConnId),
}

/// The mio side of the sockets, behind the pump's [`ServeIo`].
struct MioServeIo {
    registry: Registry,
    listening: Listening,
    streams: HashMap<usize, Stream>,
    flows: HashMap<FlowId, usize>,
    next_token: usize,
    notices: VecDeque<Notice>,
    /// Streams that may have bytes to read, each once (see [`Stream::readable`]).
    ready: VecDeque<usize>,
    /// Connect timeouts and close lingers; stale entries are skipped when they come due.
    timers: BinaryHeap<Reverse<(std::time::Instant, usize)>>,
}

/// Runs a [`ServeDriven`] machine with mio: one thread, one `Poll`, woken at the machine's
/// deadline, by a socket, by a finished blocking request, or by a [`ServeStopHandle`]. See the
/// [`serve` module documentation](crate::serve) for what it does with the machine's outputs.
///
/// It owns the listening socket (UDP, or a TCP listener whose accepted streams are the
/// clients' *peers*) and the flows' host sockets, and never looks at what the bytes mean. All
/// reads go through one reused buffer. The driver is built, and [`run`](Self::run), on one
/// thread; its handles ([`ServeStopHandle`]) go to others.
///
/// ```no_run
/// # use erebus::serve::{CredentialsChecker, MioServeDriver};
/// # fn demo<M: erebus_sansio::ServeDriven + Send + 'static>(machine: M) -> std::io::Result<()> {
/// use std::sync::Arc;
///
/// let mut driver = MioServeDriver::new(machine, erebus::Clock::start())?;
/// println!("listening on {}", driver.local_addr());
/// driver.on_event(|event| eprintln!("{event:?}"));
/// let checker: CredentialsChecker = Arc::new(|user, password| user == "demo" && password == "demo");
/// driver.set_credentials_checker(checker);
/// let stop = driver.stop_handle();
/// std::thread::spawn(move || {
///     std::thread::sleep(std::time::Duration::from_secs(60));
///     stop.stop();
/// });
/// driver.run()
/// # }
/// ```
pub struct MioServeDriver<M> {
    pump: ServePump<M>,
    io: MioServeIo,
    poll: Poll,
    events: Events,
    stop: ServeStopHandle,
    local_addr: SocketAddr,
    /// The listening socket may have datagrams or connections waiting.
    listener_ready: bool,
    read_buf: Vec<u8>,
    stop_grace: Duration,
}

impl<M: ServeDriven> MioServeDriver<M> {
    /// Binds what `machine` listens on ([`ServeDriven::listen`]): a UDP socket, or a TCP
    /// listener for [`TransportKind::TcpLengthPrefixed`].
    ///
    /// # Errors
    ///
    /// Fails when the address cannot be bound or the OS refuses a poll instance.
    pub fn new(machine: M, clock: Clock) -> io::Result<Self> {
        let spec = machine.listen();
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (listening, local_addr) = match spec.kind {
            TransportKind::Udp => {
                let mut socket = UdpSocket::bind(spec.addr)?;
                poll.registry()
                    .register(&mut socket, LISTENER, Interest::READABLE)?;
                let local = socket.local_addr()?;
                (Listening::Udp(socket), local)
            }
            TransportKind::TcpLengthPrefixed => {
                let mut listener = TcpListener::bind(spec.addr)?;
                poll.registry()
                    .register(&mut listener, LISTENER, Interest::READABLE)?;
                let local = listener.local_addr()?;
                (Listening::Tcp(listener), local)
            }
        };
        let wake = {
            let waker = waker.clone();
            move || {
                let _ = waker.wake();
            }
        };
        Ok(Self {
            pump: ServePump::new(machine, clock, wake),
            io: MioServeIo {
                registry: poll.registry().try_clone()?,
                listening,
                streams: HashMap::new(),
                flows: HashMap::new(),
                next_token: FIRST_STREAM,
                notices: VecDeque::new(),
                ready: VecDeque::new(),
                timers: BinaryHeap::new(),
            },
            poll,
            events: Events::with_capacity(256),
            stop: ServeStopHandle {
                requested: Arc::new(AtomicBool::new(false)),
                waker,
            },
            local_addr,
            listener_ready: true,
            read_buf: vec![0; READ_BUF],
            stop_grace: STOP_GRACE,
        })
    }

    /// The address the server listens on (the real port when the machine asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Calls `on_event` for every [`ServeEvent`] the machine reports (for the operator's log).
    pub fn on_event(&mut self, on_event: impl FnMut(&ServeEvent) + Send + 'static) {
        self.pump.on_event(on_event);
    }

    /// Answers the machine's credential checks with `checker`, run on a worker thread.
    /// Without one, every check is refused.
    pub fn set_credentials_checker(&mut self, checker: CredentialsChecker) {
        self.pump.set_credentials_checker(checker);
    }

    /// How long [`run`](Self::run) waits, after a stop was asked, for the machine to report
    /// [`ServeEvent::Stopped`] (and for what it wrote last to be flushed); [`STOP_GRACE`]
    /// unless set.
    pub fn set_stop_grace(&mut self, grace: Duration) {
        self.stop_grace = grace;
    }

    /// A handle that stops the driver gracefully from another thread.
    pub fn stop_handle(&self) -> ServeStopHandle {
        self.stop.clone()
    }

    /// The machine, for inspection after [`run`](Self::run) returns.
    pub fn machine(&self) -> &M {
        self.pump.machine()
    }

    /// Serves until the machine reports [`ServeEvent::Stopped`] (after a stop was asked
    /// through a [`ServeStopHandle`], or on its own), and what it wrote last is flushed; or
    /// until the stop grace passes. Every stream and flow is closed when it returns.
    ///
    /// # Errors
    ///
    /// Fails only when polling itself fails; socket errors become inputs.
    pub fn run(&mut self) -> io::Result<()> {
        self.pump.start(&mut self.io);
        let mut stop_by: Option<std::time::Instant> = None;
        let result = loop {
            self.deliver_notices();
            let now = std::time::Instant::now();
            if !self.pump.is_stopping() && self.stop.requested.load(Ordering::SeqCst) {
                self.pump.stop(&mut self.io);
                self.deliver_notices();
            }
            if (self.pump.is_stopping() || self.pump.is_stopped()) && stop_by.is_none() {
                stop_by = Some(now + self.stop_grace);
            }
            if self.pump.is_stopped() && self.io.all_flushed() {
                break Ok(());
            }
            if stop_by.is_some_and(|by| now >= by) {
                if !self.pump.is_stopped() {
                    tracing::warn!("the server did not stop in time; stopping anyway");
                }
                break Ok(());
            }
            self.io.expire_timers(now);
            self.deliver_notices();

            let busy = self.listener_ready || !self.io.ready.is_empty();
            let timeout = if busy {
                Some(Duration::ZERO)
            } else {
                [
                    self.pump.deadline().map(|d| self.pump.clock().until(d)),
                    self.io
                        .next_timer()
                        .map(|t| t.saturating_duration_since(now)),
                    stop_by.map(|by| by.saturating_duration_since(now)),
                ]
                .into_iter()
                .flatten()
                .min()
            };
            match self.poll.poll(&mut self.events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => break Err(e),
            }
            for event in &self.events {
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                let writable = event.is_writable() || event.is_write_closed() || event.is_error();
                match event.token() {
                    LISTENER => self.listener_ready = true,
                    WAKER => {}
                    Token(token) => self.io.mark_ready(token, readable, writable),
                }
            }
            self.deliver_notices();
            self.pump.take_answers(&mut self.io);
            self.deliver_notices();
            self.read_listener();
            self.deliver_notices();
            self.read_streams();
            self.deliver_notices();
            self.pump.check_deadline(&mut self.io);
        };
        self.io.drop_all();
        result
    }

    /// Tells the pump what happened to the sockets since it last heard.
    fn deliver_notices(&mut self) {
        while let Some(notice) = self.io.notices.pop_front() {
            let io = &mut self.io;
            match notice {
                Notice::FlowConnected(flow) => self.pump.flow_connected(io, flow),
                Notice::FlowFailed(flow, error) => self.pump.flow_failed(io, flow, error),
                Notice::FlowReset(flow) => self.pump.flow_reset(io, flow),
                Notice::FlowFlushed(flow) => self.pump.flow_flushed(io, flow),
                Notice::PeerClosed(conn) => self.pump.peer_closed(io, conn),
            }
        }
    }

    /// Takes datagrams (no allocation: each is a slice of the read buffer) or connections
    /// from the listening socket.
    fn read_listener(&mut self) {
        if !self.listener_ready {
            return;
        }
        for _ in 0..LISTENER_READS_PER_TURN {
            match &self.io.listening {
                Listening::Udp(socket) => match socket.recv_from(&mut self.read_buf) {
                    Ok((n, from)) => {
                        let bytes = &self.read_buf[..n];
                        self.pump.datagram(&mut self.io, from, bytes);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        self.listener_ready = false;
                        return;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    // An error queued on the socket (an ICMP answer to an earlier datagram)
                    // is no client's business: the next read takes the next datagram.
                    Err(e) => tracing::debug!("receive on the listening socket failed: {e}"),
                },
                Listening::Tcp(listener) => match listener.accept() {
                    Ok((stream, from)) => self.adopt_peer(stream, from),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        self.listener_ready = false;
                        return;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        // Out of descriptors, typically: retried at the next connection.
                        tracing::warn!("accept failed: {e}");
                        self.listener_ready = false;
                        return;
                    }
                },
            }
        }
    }

    /// Registers a client's new stream and tells the machine.
    fn adopt_peer(&mut self, stream: TcpStream, from: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let token = self.io.next_token();
        let conn = ConnId(token as u64);
        let stream = Stream::new(Owner::Peer(conn), Sock::Tcp(stream), false);
        if let Err(e) = self.io.insert(token, stream) {
            tracing::warn!("cannot register the stream from {from}: {e}");
            return;
        }
        tracing::debug!(conn = conn.0, %from, "accepted");
        self.pump.peer_accepted(&mut self.io, conn, from);
    }

    /// Reads the streams and flows that may have bytes, a few reads each.
    fn read_streams(&mut self) {
        for _ in 0..self.io.ready.len() {
            let Some(token) = self.io.ready.pop_front() else {
                break;
            };
            self.read_stream(token);
        }
    }

    fn read_stream(&mut self, token: usize) {
        for _ in 0..STREAM_READS_PER_TURN {
            let Some(stream) = self.io.streams.get_mut(&token) else {
                return;
            };
            if stream.paused || stream.read_done || stream.connecting {
                // Resuming or connecting queues it again.
                stream.readable = false;
                return;
            }
            let owner = stream.owner;
            let (result, udp) = match &mut stream.sock {
                Sock::Tcp(socket) => (socket.read(&mut self.read_buf), false),
                Sock::Udp(socket) => (socket.recv(&mut self.read_buf), true),
            };
            match result {
                Ok(0) if !udp => {
                    stream.read_done = true;
                    stream.readable = false;
                    match owner {
                        Owner::Peer(conn) => {
                            // The client is gone: what was written to it still goes out.
                            self.io.close(token);
                            self.pump.peer_closed(&mut self.io, conn);
                        }
                        Owner::Flow(flow) => {
                            self.io.refresh(token);
                            self.pump.flow_eof(&mut self.io, flow);
                            self.io.drop_if_finished(token);
                        }
                    }
                    return;
                }
                Ok(n) => {
                    let bytes = &self.read_buf[..n];
                    match owner {
                        Owner::Peer(conn) => self.pump.peer_data(&mut self.io, conn, bytes),
                        Owner::Flow(flow) => self.pump.flow_data(&mut self.io, flow, bytes),
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    stream.readable = false;
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if udp && e.kind() != ErrorKind::ConnectionRefused => {
                    tracing::debug!("flow receive failed: {e}");
                }
                Err(e) => {
                    self.io.fail(token, &e);
                    return;
                }
            }
        }
        // More may wait: the stream's next turn comes after the others'.
        self.io.ready.push_back(token);
    }
}

impl MioServeIo {
    fn next_token(&mut self) -> usize {
        let token = self.next_token;
        self.next_token += 1;
        token
    }

    /// Registers a new stream under `token`; it may already have bytes to read.
    fn insert(&mut self, token: usize, mut stream: Stream) -> io::Result<()> {
        if let Some(interest) = stream.wanted_interest() {
            let source = sock_source(&mut stream.sock);
            self.registry.register(source, Token(token), interest)?;
            stream.registered = Some(interest);
        }
        if let Owner::Flow(flow) = stream.owner {
            self.flows.insert(flow, token);
        }
        if let Some(by) = stream.connect_by {
            self.timers.push(Reverse((by, token)));
        }
        stream.readable = !stream.connecting;
        if stream.readable {
            self.ready.push_back(token);
        }
        self.streams.insert(token, stream);
        Ok(())
    }

    /// Forgets a stream and closes its socket; nothing is reported.
    fn remove(&mut self, token: usize) {
        if let Some(mut stream) = self.streams.remove(&token) {
            if stream.registered.is_some() {
                let _ = self.registry.deregister(sock_source(&mut stream.sock));
            }
            if let Owner::Flow(flow) = stream.owner
                && self.flows.get(&flow) == Some(&token)
            {
                self.flows.remove(&flow);
            }
        }
    }

    /// A stream's socket failed: drop it, and tell the machine unless it closed it already.
    fn fail(&mut self, token: usize, error: &io::Error) {
        let Some(stream) = self.streams.get(&token) else {
            return;
        };
        let (owner, connecting, closing) =
            (stream.owner, stream.connecting, stream.closing.is_some());
        self.remove(token);
        if closing {
            return;
        }
        self.notices.push_back(match owner {
            Owner::Peer(conn) => {
                tracing::debug!(conn = conn.0, "client stream failed: {error}");
                Notice::PeerClosed(conn)
            }
            Owner::Flow(flow) if connecting => Notice::FlowFailed(flow, transport_error(error)),
            Owner::Flow(flow) => {
                tracing::debug!(flow = flow.0, "flow failed: {error}");
                Notice::FlowReset(flow)
            }
        });
    }

    /// Brings mio's interest for a stream in line with what it waits for.
    fn refresh(&mut self, token: usize) {
        let Some(stream) = self.streams.get_mut(&token) else {
            return;
        };
        let wanted = stream.wanted_interest();
        if wanted == stream.registered {
            return;
        }
        let source = sock_source(&mut stream.sock);
        let result = match (stream.registered, wanted) {
            (None, Some(interest)) => self.registry.register(source, Token(token), interest),
            (Some(_), Some(interest)) => self.registry.reregister(source, Token(token), interest),
            (Some(_), None) => self.registry.deregister(source),
            (None, None) => Ok(()),
        };
        match result {
            Ok(()) => stream.registered = wanted,
            Err(e) => self.fail(token, &e),
        }
    }

    /// A socket is ready: finish a connect, flush kept bytes, queue a read.
    fn mark_ready(&mut self, token: usize, readable: bool, writable: bool) {
        let Some(stream) = self.streams.get_mut(&token) else {
            return;
        };
        if readable && !stream.readable {
            stream.readable = true;
            self.ready.push_back(token);
        }
        if writable {
            if stream.connecting {
                self.finish_connect(token);
            } else if !stream.outbox.is_empty() {
                self.flush(token);
            }
        }
    }

    /// A connecting TCP flow is writable: connected, or refused.
    fn finish_connect(&mut self, token: usize) {
        let Some(stream) = self.streams.get_mut(&token) else {
            return;
        };
        let (Sock::Tcp(socket), Owner::Flow(flow)) = (&mut stream.sock, stream.owner) else {
            return;
        };
        let error = match socket.take_error() {
            Ok(Some(e)) | Err(e) => e,
            Ok(None) => match socket.peer_addr() {
                Ok(_) => {
                    stream.connecting = false;
                    stream.connect_by = None;
                    if !stream.readable {
                        stream.readable = true;
                        self.ready.push_back(token);
                    }
                    self.notices.push_back(Notice::FlowConnected(flow));
                    self.flush(token);
                    return;
                }
                // Not connected after all (a spurious wake-up): wait for the next one.
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(e) => e,
            },
        };
        self.fail(token, &error);
    }

    /// Writes what a stream keeps; acts on an emptied outbox (report, shut down, close).
    fn flush(&mut self, token: usize) {
        let Some(stream) = self.streams.get_mut(&token) else {
            return;
        };
        let Sock::Tcp(socket) = &mut stream.sock else {
            return;
        };
        if stream.connecting {
            return;
        }
        let had = !stream.outbox.is_empty();
        if let Err(e) = stream.outbox.flush(socket) {
            self.fail(token, &e);
            return;
        }
        if stream.outbox.is_empty() {
            if had && let Owner::Flow(flow) = stream.owner {
                self.notices.push_back(Notice::FlowFlushed(flow));
            }
            if stream.shutdown_wanted && !stream.write_shut {
                stream.write_shut = true;
                let _ = socket.shutdown(Shutdown::Write);
            }
            if stream.closing.is_some() || stream.finished() {
                self.remove(token);
                return;
            }
        }
        self.refresh(token);
    }

    fn drop_if_finished(&mut self, token: usize) {
        if self.streams.get(&token).is_some_and(Stream::finished) {
            self.remove(token);
        }
    }

    /// Writes to a stream, keeping what its socket does not take; returns what it keeps.
    fn write(&mut self, token: usize, bytes: &[u8]) -> usize {
        let Some(stream) = self.streams.get_mut(&token) else {
            return 0;
        };
        if stream.closing.is_some() || stream.shutdown_wanted {
            tracing::debug!("write after close dropped");
            return stream.outbox.len();
        }
        match &mut stream.sock {
            Sock::Udp(socket) => {
                match socket.send(bytes) {
                    Ok(_) => {}
                    // The answer to an earlier datagram: nothing listens there.
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => self.fail(token, &e),
                    // UDP may drop; whatever runs inside the flow retransmits what matters.
                    Err(e) => tracing::debug!("flow datagram dropped: {e}"),
                }
                0
            }
            Sock::Tcp(socket) => {
                if stream.connecting || !stream.outbox.is_empty() {
                    stream.outbox.push(bytes);
                    return stream.outbox.len();
                }
                match write_some(socket, bytes) {
                    Ok(written) => {
                        if let Some(rest) = bytes.get(written..).filter(|r| !r.is_empty()) {
                            stream.outbox.push(rest);
                            let kept = stream.outbox.len();
                            self.refresh(token);
                            return kept;
                        }
                        0
                    }
                    Err(e) => {
                        self.fail(token, &e);
                        0
                    }
                }
            }
        }
    }

    fn pause(&mut self, token: usize, paused: bool) {
        let Some(stream) = self.streams.get_mut(&token) else {
            return;
        };
        stream.paused = paused;
        if !paused && !stream.readable && !stream.read_done {
            // Bytes that arrived while paused raised no new readiness.
            stream.readable = true;
            self.ready.push_back(token);
        }
        self.refresh(token);
    }

    fn shutdown(&mut self, token: usize) {
        let Some(stream) = self.streams.get_mut(&token) else {
            return;
        };
        if matches!(stream.sock, Sock::Udp(_)) {
            return;
        }
        stream.shutdown_wanted = true;
        self.flush(token);
    }

    /// Reads nothing more; writes what is kept, for at most [`CLOSE_LINGER`]; then drops.
    fn close(&mut self, token: usize) {
        let Some(stream) = self.streams.get_mut(&token) else {
            return;
        };
        if matches!(stream.sock, Sock::Udp(_)) || (stream.connecting && stream.outbox.is_empty()) {
            self.remove(token);
            return;
        }
        let by = std::time::Instant::now() + CLOSE_LINGER;
        stream.read_done = true;
        stream.shutdown_wanted = true;
        stream.closing = Some(by);
        // The machine is done with the id: a new flow may take it while this one lingers.
        if let Owner::Flow(flow) = stream.owner
            && self.flows.get(&flow) == Some(&token)
        {
            self.flows.remove(&flow);
        }
        self.timers.push(Reverse((by, token)));
        self.flush(token);
        self.refresh(token);
    }

    /// Fails flows that took too long to connect and drops closed streams whose client did
    /// not take what was written in time.
    fn expire_timers(&mut self, now: std::time::Instant) {
        while let Some(&Reverse((at, token))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(stream) = self.streams.get(&token) else {
                continue;
            };
            if stream.connecting && stream.connect_by.is_some_and(|by| by <= now) {
                let error = io::Error::new(ErrorKind::TimedOut, "connect timed out");
                self.fail(token, &error);
            } else if stream.closing.is_some_and(|by| by <= now) {
                tracing::debug!("a closed stream did not take its last bytes in time");
                self.remove(token);
            }
        }
    }

    fn next_timer(&self) -> Option<std::time::Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    fn all_flushed(&self) -> bool {
        self.streams.values().all(|s| s.outbox.is_empty())
    }

    fn drop_all(&mut self) {
        let tokens: Vec<usize> = self.streams.keys().copied().collect();
        for token in tokens {
            self.remove(token);
        }
        self.ready.clear();
        self.timers.clear();
        self.notices.clear();
    }

    /// The stream of a client, if it is one.
    fn peer_token(&self, conn: ConnId) -> Option<usize> {
        let token = usize::try_from(conn.0).ok()?;
        self.streams
            .get(&token)
            .is_some_and(|s| matches!(s.owner, Owner::Peer(c) if c == conn))
            .then_some(token)
    }

    fn flow_token(&self, flow: FlowId) -> Option<usize> {
        self.flows.get(&flow).copied()
    }

    fn open(&mut self, flow: FlowId, kind: FlowKind, to: SocketAddr) -> io::Result<()> {
        let token = self.next_token();
        let stream = match kind {
            FlowKind::Tcp => {
                let socket = TcpStream::connect(to)?;
                let _ = socket.set_nodelay(true);
                let mut stream = Stream::new(Owner::Flow(flow), Sock::Tcp(socket), true);
                stream.connect_by = Some(std::time::Instant::now() + FLOW_CONNECT_TIMEOUT);
                stream
            }
            FlowKind::Udp => {
                let socket = UdpSocket::bind(unspecified_for(to))?;
                socket.connect(to)?;
                Stream::new(Owner::Flow(flow), Sock::Udp(socket), false)
            }
        };
        self.insert(token, stream)?;
        if kind == FlowKind::Udp {
            self.notices.push_back(Notice::FlowConnected(flow));
        }
        Ok(())
    }
}

impl ServeIo for MioServeIo {
    fn send_datagram(&mut self, to: SocketAddr, bytes: &[u8]) {
        match &self.listening {
            Listening::Udp(socket) => {
                if let Err(e) = socket.send_to(bytes, to) {
                    // UDP may drop; the protocols above retransmit what matters.
                    tracing::debug!("datagram to {to} dropped: {e}");
                }
            }
            Listening::Tcp(_) => tracing::debug!("a datagram without a UDP socket dropped"),
        }
    }

    fn write_peer(&mut self, conn: ConnId, bytes: &[u8]) -> usize {
        match self.peer_token(conn) {
            Some(token) => self.write(token, bytes),
            None => 0,
        }
    }

    fn pause_peer(&mut self, conn: ConnId, paused: bool) {
        if let Some(token) = self.peer_token(conn) {
            self.pause(token, paused);
        }
    }

    fn shutdown_peer(&mut self, conn: ConnId) {
        if let Some(token) = self.peer_token(conn) {
            self.shutdown(token);
        }
    }

    fn close_peer(&mut self, conn: ConnId) {
        if let Some(token) = self.peer_token(conn) {
            self.close(token);
        }
    }

    fn drop_peer(&mut self, conn: ConnId) {
        if let Some(token) = self.peer_token(conn) {
            self.remove(token);
        }
    }

    fn open_flow(&mut self, flow: FlowId, kind: FlowKind, to: SocketAddr) {
        if let Some(token) = self.flow_token(flow) {
            tracing::debug!(
                flow = flow.0,
                "flow opened again; the old socket is dropped"
            );
            self.remove(token);
        }
        if let Err(e) = self.open(flow, kind, to) {
            tracing::debug!(flow = flow.0, "cannot open a flow to {to}: {e}");
            self.notices
                .push_back(Notice::FlowFailed(flow, transport_error(&e)));
        }
    }

    fn write_flow(&mut self, flow: FlowId, bytes: &[u8]) -> usize {
        match self.flow_token(flow) {
            Some(token) => self.write(token, bytes),
            None => 0,
        }
    }

    fn pause_flow(&mut self, flow: FlowId, paused: bool) {
        if let Some(token) = self.flow_token(flow) {
            self.pause(token, paused);
        }
    }

    fn shutdown_flow(&mut self, flow: FlowId) {
        if let Some(token) = self.flow_token(flow) {
            self.shutdown(token);
        }
    }

    fn close_flow(&mut self, flow: FlowId) {
        if let Some(token) = self.flow_token(flow) {
            self.close(token);
        }
    }
}

fn sock_source(sock: &mut Sock) -> &mut dyn ::mio::event::Source {
    match sock {
        Sock::Tcp(socket) => socket,
        Sock::Udp(socket) => socket,
    }
}

/// Writes as much of `bytes` as the socket takes now; returns how much, or the error that
/// broke the stream.
fn write_some(stream: &mut impl Write, bytes: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}
