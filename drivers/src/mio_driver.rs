//! The mio driver: one thread, one `Poll`, woken at the machine's deadline.
//!
//! It owns the transport socket towards the VPN server, the proxy listeners and the accepted
//! local connections, and translates their readiness into [`Input`](erebus_sansio::Input)s. It never looks at what
//! the bytes mean.
//!
//! A program that uses erebus as a library opens streams through the tunnel with a
//! [`Connector`] (see [`crate::connector`]): blocking [`UnixStream`]s, usable from any thread
//! while [`MioDriver::run`] runs on its own. The driver is not `Send`: build it on the thread
//! that runs it and send its handles out.
//!
//! ```no_run
//! # use erebus::mio_driver::MioDriver;
//! # fn demo<D: erebus_sansio::Driven + 'static>(
//! #     make_driver: impl FnOnce() -> std::io::Result<MioDriver<D>> + Send + 'static,
//! #     internal: erebus_sansio::io::ListenerId,
//! # ) -> std::io::Result<()> {
//! use std::io::{Read, Write};
//! use std::time::Duration;
//!
//! // `internal` came from `erebus::connector::add_internal_listener(&mut client_config)`.
//! let (handles_tx, handles_rx) = std::sync::mpsc::channel();
//! let session = std::thread::spawn(move || {
//!     let mut driver = make_driver()?;
//!     let _ = handles_tx.send((driver.connector(internal), driver.stop_handle()));
//!     driver.run()
//! });
//! let (connector, stop) = handles_rx
//!     .recv()
//!     .map_err(|_| std::io::Error::other("the driver did not start"))?;
//! connector.wait_until_up(Duration::from_secs(30))?;
//! let mut stream = connector.connect("web.erebus.test", 8080)?;
//! stream.write_all(b"GET / HTTP/1.1\r\nHost: web.erebus.test\r\nConnection: close\r\n\r\n")?;
//! let mut page = String::new();
//! stream.read_to_string(&mut page)?;
//! stop.stop();
//! # let _ = session.join();
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use erebus_sansio::Driven;
use erebus_sansio::io::{ConnId, Event, ListenerId, TransportError};
use erebus_sansio::tunnel::{Failure, TransportKind, TransportSpec};
use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use crate::clock::Clock;
use crate::connector::{
    Credentials, DEFAULT_CONNECT_TIMEOUT, Handshake, SessionWatch, closed_early,
};
use crate::datagrams;
use crate::pump::{Io, Pump, literal, resolve, size_udp_buffers, transport_error, unspecified_for};
use crate::record::Tap;

const TRANSPORT: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_LISTENER: usize = 2;
const FIRST_CONN: usize = 1 << 20;

/// How many reads one source may take per wake-up before others get a turn: bounds the work
/// between two deadline checks.
const READS_PER_TURN: usize = 64;
/// Bytes read from a local connection at a time.
const LOCAL_READ_CHUNK: usize = 64 * 1024;
/// How long a closed connection may take to receive what was written to it before it is
/// dropped anyway.
const CLOSE_LINGER: Duration = Duration::from_secs(10);
/// Capacity a local connection's write backlog may keep once written out; a larger one,
/// left by a burst, is freed so that a thousand idle connections hold little.
const PENDING_KEEP: usize = 16 * 1024;
/// Largest outer packet or stream chunk the driver reads from the transport.
const TRANSPORT_READ_CHUNK: usize = 65_536;
/// Capacity the TCP transport's write backlog may keep once written out (a burst that grew it
/// larger is freed).
const TRANSPORT_PENDING_KEEP: usize = 256 * 1024;

/// A handle that stops a running [`MioDriver`] from another thread (a signal handler thread,
/// for instance): the machine is asked to close gracefully.
#[derive(Clone)]
pub struct StopHandle {
    requested: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl StopHandle {
    /// Asks the driver to close the session.
    pub fn stop(&self) {
        self.requested.store(true, Ordering::SeqCst);
        // A failed wake only delays the stop until the next deadline.
        let _ = self.waker.wake();
    }
}

enum Transport {
    Udp(UdpSocket),
    Tcp {
        stream: TcpStream,
        connected: bool,
        out: StreamOut,
        /// The interests the stream is registered with now.
        interest: Interest,
    },
}

/// The bytes bound for a stream transport that it has not taken yet: the packets of the
/// current drain, written together at its end ([`Io::flush_transport`]), and whatever the
/// socket refused, written once it is writable.
#[derive(Default)]
struct StreamOut {
    pending: Vec<u8>,
}

impl StreamOut {
    /// Keeps `bytes` behind those already kept.
    fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Writes as much as `stream` takes now, in as few writes as it allows.
    fn flush(&mut self, stream: &mut impl Write) {
        if self.pending.is_empty() {
            return;
        }
        let written = write_some(stream, &self.pending);
        self.pending.drain(..written);
        if self.pending.is_empty() && self.pending.capacity() > TRANSPORT_PENDING_KEEP {
            self.pending = Vec::new();
        }
    }
}

/// The transport socket of one attempt.
struct TransportSocket {
    attempt: u64,
    remote: SocketAddr,
    socket: Transport,
}

/// What happened to the transport, to be told to the pump once the `Io` call that caused it
/// has returned.
enum Notice {
    Connected {
        attempt: u64,
        remote: SocketAddr,
        local: SocketAddr,
    },
    Closed {
        attempt: u64,
        error: TransportError,
    },
}

/// A name resolved off the event loop: the attempt, its kind, and the outcome.
type Resolved = (u64, TransportKind, Result<SocketAddr, TransportError>);

/// A local connection's socket: accepted from a listener, or handed over by a [`Connector`].
enum LocalStream {
    Tcp(TcpStream),
    Unix(mio::net::UnixStream),
}

impl LocalStream {
    fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        match self {
            Self::Tcp(stream) => stream.shutdown(how),
            Self::Unix(stream) => stream.shutdown(how),
        }
    }
}

impl Read for LocalStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(stream) => stream.read(buf),
            Self::Unix(stream) => stream.read(buf),
        }
    }
}

impl Write for LocalStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(stream) => stream.write(buf),
            Self::Unix(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for LocalStream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Self::Tcp(stream) => stream.register(registry, token, interests),
            Self::Unix(stream) => stream.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Self::Tcp(stream) => stream.reregister(registry, token, interests),
            Self::Unix(stream) => stream.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Self::Tcp(stream) => stream.deregister(registry),
            Self::Unix(stream) => stream.deregister(registry),
        }
    }
}

/// A stream end handed over by a [`Connector`], with the front end that serves it.
type Handoff = (ListenerId, UnixStream);

/// Opens streams through the tunnel, from any thread, while the [`MioDriver`] that made it
/// runs; cheap to clone. See [`crate::connector`] for how, and the module documentation for an
/// example.
#[derive(Clone)]
pub struct Connector {
    listener: ListenerId,
    handoff: mpsc::Sender<Handoff>,
    waker: Arc<Waker>,
    watch: Arc<SessionWatch>,
    credentials: Option<Credentials>,
    timeout: Duration,
}

impl Connector {
    /// Uses `credentials` when the internal front end asks for them (when the client's
    /// `ProxyConfig::auth` is set).
    #[must_use]
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Gives up a connect whose answer takes longer than `timeout` (default
    /// [`DEFAULT_CONNECT_TIMEOUT`]) with [`ErrorKind::TimedOut`].
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether the tunnel is up now: connects made while it is not fail with
    /// [`ErrorKind::NetworkUnreachable`].
    pub fn is_up(&self) -> bool {
        self.watch.is_up()
    }

    /// Blocks until the tunnel is up.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::TimedOut`] after `timeout`; [`ErrorKind::NotConnected`] once the
    /// session ended or the driver was dropped.
    pub fn wait_until_up(&self, timeout: Duration) -> io::Result<()> {
        self.watch.wait_up(timeout)
    }

    /// Opens a stream to `host:port` through the tunnel; `host` is an IP address or a name,
    /// which the tunnel's DNS servers resolve. Blocks until the destination accepted or
    /// refused. The stream is a blocking socket whose bytes are the destination's; shutting
    /// down its writing side sends a FIN to the destination.
    ///
    /// # Errors
    ///
    /// The destination's refusal as in [`Handshake`] (`ConnectionRefused`, `NotFound`,
    /// `HostUnreachable`, `TimedOut`, `NetworkUnreachable` while the tunnel is down),
    /// [`ErrorKind::NotConnected`] once the session ended or the driver was dropped,
    /// [`ErrorKind::InvalidInput`] for a bad host or port 0.
    pub fn connect(&self, host: &str, port: u16) -> io::Result<UnixStream> {
        self.watch.check_running()?;
        let mut handshake = Handshake::new(host, port, self.credentials.clone())?;
        let (mut ours, theirs) = UnixStream::pair()?;
        theirs.set_nonblocking(true)?;
        self.handoff
            .send((self.listener, theirs))
            .map_err(|_| io::Error::new(ErrorKind::NotConnected, "the driver was dropped"))?;
        self.waker.wake()?;
        let deadline = std::time::Instant::now() + self.timeout;
        let timed_out = || {
            io::Error::new(
                ErrorKind::TimedOut,
                format!("{host}:{port}: no answer from the driver in time"),
            )
        };
        let mut answer = [0u8; 256];
        while let Some((bytes, want)) = handshake.next() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            ours.set_write_timeout(Some(left))?;
            ours.set_read_timeout(Some(left))?;
            let answer = answer
                .get_mut(..want)
                .ok_or_else(|| io::Error::new(ErrorKind::InvalidData, "oversized SOCKS5 answer"))?;
            let exchanged = ours
                .write_all(&bytes)
                .and_then(|()| ours.read_exact(answer));
            match exchanged {
                Ok(()) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(timed_out());
                }
                Err(e) if closed_early(&e) => {
                    // The client closes connections of listeners it does not know.
                    self.watch.check_running()?;
                    return Err(io::Error::new(
                        ErrorKind::ConnectionAborted,
                        format!(
                            "{host}:{port}: the stream was closed during the handshake \
                             (is listener {} the internal SOCKS5 front end?)",
                            self.listener.0
                        ),
                    ));
                }
                Err(e) => return Err(e),
            }
            handshake.feed(answer).map_err(|e| self.watch.explain(e))?;
        }
        ours.set_write_timeout(None)?;
        ours.set_read_timeout(None)?;
        Ok(ours)
    }
}

struct LocalConn {
    stream: LocalStream,
    /// The interests the socket is registered with now.
    interest: Interest,
    /// Bytes the socket did not take yet.
    pending: Vec<u8>,
    paused: bool,
    read_closed: bool,
    shutdown_after_flush: bool,
    /// Readable data may be waiting (edge-triggered readiness not yet consumed).
    maybe_readable: bool,
    /// `pending` went from full to empty: the pump is to be told.
    flushed: bool,
    /// The machine closed the connection: it is dropped once `pending` is written, or at
    /// this time.
    close_by: Option<std::time::Instant>,
}

/// The mio side of the sockets: the transport, the local connections and the resolver
/// threads, behind the pump's [`Io`].
struct MioIo {
    registry: Registry,
    waker: Arc<Waker>,
    transport: Option<TransportSocket>,
    transport_maybe_readable: bool,
    /// The attempt whose host name a thread is resolving.
    resolving: Option<u64>,
    resolved_tx: mpsc::Sender<Resolved>,
    notices: VecDeque<Notice>,
    conns: BTreeMap<ConnId, LocalConn>,
}

/// Runs a [`Driven`] machine with mio.
pub struct MioDriver<D> {
    pump: Pump<D>,
    io: MioIo,
    poll: Poll,
    events: Events,
    stop: StopHandle,
    listeners: Vec<TcpListener>,
    /// Listeners that reported readiness and have not yet said `WouldBlock`: only these are
    /// asked to accept (an `accept` on an idle listener is a wasted system call every turn).
    listener_ready: Vec<bool>,
    next_conn: u64,
    read_buf: Vec<u8>,
    resolved_rx: mpsc::Receiver<Resolved>,
    handoff_tx: mpsc::Sender<Handoff>,
    handoff_rx: mpsc::Receiver<Handoff>,
}

impl<D: Driven> MioDriver<D> {
    /// Wraps `machine`, serving the given listeners (their order gives the [`ListenerId`]s).
    ///
    /// # Errors
    ///
    /// Fails when the OS refuses a poll instance or a listener registration.
    pub fn new(
        machine: D,
        clock: Clock,
        listeners: Vec<std::net::TcpListener>,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut mio_listeners = Vec::with_capacity(listeners.len());
        for (index, listener) in listeners.into_iter().enumerate() {
            listener.set_nonblocking(true)?;
            let mut listener = TcpListener::from_std(listener);
            poll.registry().register(
                &mut listener,
                Token(FIRST_LISTENER + index),
                Interest::READABLE,
            )?;
            mio_listeners.push(listener);
        }
        let (handoff_tx, handoff_rx) = mpsc::channel();
        let (resolved_tx, resolved_rx) = mpsc::channel();
        Ok(Self {
            pump: Pump::new(machine, clock),
            io: MioIo {
                registry: poll.registry().try_clone()?,
                waker: waker.clone(),
                transport: None,
                transport_maybe_readable: false,
                resolving: None,
                resolved_tx,
                notices: VecDeque::new(),
                conns: BTreeMap::new(),
            },
            poll,
            events: Events::with_capacity(256),
            stop: StopHandle {
                requested: Arc::new(AtomicBool::new(false)),
                waker,
            },
            listener_ready: vec![true; mio_listeners.len()],
            listeners: mio_listeners,
            next_conn: 0,
            read_buf: vec![0; TRANSPORT_READ_CHUNK.max(LOCAL_READ_CHUNK)],
            resolved_rx,
            handoff_tx,
            handoff_rx,
        })
    }

    /// A handle that opens streams through the tunnel from any thread, served by the front end
    /// of `listener`: the SOCKS5 front end [`crate::connector::add_internal_listener`] added
    /// to the client's configuration.
    pub fn connector(&self, listener: ListenerId) -> Connector {
        Connector {
            listener,
            handoff: self.handoff_tx.clone(),
            waker: self.stop.waker.clone(),
            watch: self.pump.watch().clone(),
            credentials: None,
            timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// Calls `on_event` for every [`Event`] the machine reports (to print status lines).
    pub fn on_event(&mut self, on_event: impl FnMut(&Event) + Send + 'static) {
        self.pump.on_event(on_event);
    }

    /// Records every input and every transmit through `tap` (see `--record`).
    pub fn record(&mut self, tap: Box<dyn Tap + Send>) {
        self.pump.record(tap);
    }

    /// Sets the most stream bytes that may wait for the transport socket before packets to the
    /// server are dropped (`--transport-queue`).
    pub fn set_transport_queue(&mut self, bytes: usize) {
        self.pump.set_transport_queue(bytes);
    }

    /// Packets to the server dropped so far because the stream transport's queue was full.
    pub fn transport_queue_drops(&self) -> u64 {
        self.pump.transport_queue_drops()
    }

    /// A handle that stops the driver gracefully from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// The machine, for inspection after [`MioDriver::run`] returns.
    pub fn machine(&self) -> &D {
        self.pump.machine()
    }

    /// Runs until the machine reports [`Event::Down`], and returns why.
    ///
    /// # Errors
    ///
    /// Fails only when polling itself fails; socket errors become inputs.
    pub fn run(&mut self) -> io::Result<Failure> {
        // The first drain opens the transport the machine starts with.
        self.pump.start(&mut self.io);
        self.deliver_notices();
        loop {
            if let Some(failure) = self.pump.take_down() {
                return Ok(failure);
            }
            if self.stop.requested.load(Ordering::SeqCst) {
                self.pump.stop(&mut self.io);
                self.deliver_notices();
                if let Some(failure) = self.pump.take_down() {
                    return Ok(failure);
                }
            }
            self.io.close_finished();
            self.io.register_interests();
            let busy = self.io.transport_maybe_readable
                || self.listener_ready.contains(&true)
                || self
                    .io
                    .conns
                    .values()
                    .any(|c| (c.maybe_readable && !c.paused && !c.read_closed) || c.flushed);
            let timeout = if busy {
                Some(Duration::ZERO)
            } else {
                self.pump.deadline().map(|d| self.pump.clock().until(d))
            };
            match self.poll.poll(&mut self.events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            // Straight from the event list: a copy of it would be an allocation per turn.
            for event in &self.events {
                let token = event.token();
                let readable = event.is_readable() || event.is_read_closed();
                let writable = event.is_writable() || event.is_write_closed() || event.is_error();
                match token.0.checked_sub(FIRST_LISTENER) {
                    Some(index) if token.0 < FIRST_CONN => {
                        if let Some(ready) = self.listener_ready.get_mut(index) {
                            *ready |= readable;
                        }
                    }
                    _ => self.io.mark_ready(token, readable, writable),
                }
            }
            self.take_resolved();
            self.deliver_notices();
            self.report_flushed();
            self.accept_all();
            self.accept_handoffs();
            self.read_transport();
            self.read_locals();
            self.deliver_notices();
            self.pump.check_deadline(&mut self.io);
            self.deliver_notices();
        }
    }

    /// Tells the pump what happened to the transport since it last heard.
    fn deliver_notices(&mut self) {
        while let Some(notice) = self.io.notices.pop_front() {
            match notice {
                Notice::Connected {
                    attempt,
                    remote,
                    local,
                } => {
                    self.io.transport_maybe_readable = true;
                    self.pump
                        .transport_connected(&mut self.io, attempt, remote, local);
                }
                Notice::Closed { attempt, error } => {
                    self.pump.transport_closed(&mut self.io, attempt, error);
                }
            }
        }
    }

    /// Opens the socket of an attempt whose name a resolver thread has resolved.
    fn take_resolved(&mut self) {
        while let Ok((attempt, kind, result)) = self.resolved_rx.try_recv() {
            if self.io.resolving != Some(attempt) {
                continue;
            }
            self.io.resolving = None;
            match result {
                Ok(remote) => self.io.open_socket(attempt, kind, remote),
                Err(error) => self.io.notices.push_back(Notice::Closed { attempt, error }),
            }
        }
    }

    /// Tells the pump about connections whose kept bytes are now all written.
    fn report_flushed(&mut self) {
        let flushed: Vec<ConnId> = self
            .io
            .conns
            .iter_mut()
            .filter_map(|(id, c)| std::mem::take(&mut c.flushed).then_some(*id))
            .collect();
        for conn in flushed {
            self.pump.local_flushed(&mut self.io, conn);
        }
    }

    fn accept_all(&mut self) {
        for index in 0..self.listeners.len() {
            if !self.listener_ready.get(index).copied().unwrap_or(false) {
                continue;
            }
            for _ in 0..READS_PER_TURN {
                let accepted = match self.listeners.get(index) {
                    Some(listener) => listener.accept(),
                    None => break,
                };
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        if let Some(ready) = self.listener_ready.get_mut(index) {
                            *ready = false;
                        }
                        break;
                    }
                    // A client that gave up before we accepted it.
                    Err(e) if e.kind() == ErrorKind::ConnectionAborted => continue,
                    Err(e) => {
                        // Out of descriptors and the like. Spinning would not help; the next
                        // connection to arrive wakes the listener and the backlog is retried.
                        tracing::warn!("accept failed: {e}");
                        if let Some(ready) = self.listener_ready.get_mut(index) {
                            *ready = false;
                        }
                        break;
                    }
                };
                let _ = stream.set_nodelay(true);
                self.adopt(
                    ListenerId(index as u32),
                    LocalStream::Tcp(stream),
                    &peer.to_string(),
                );
            }
        }
    }

    /// Takes the streams connectors handed over, as if their listener had accepted them.
    fn accept_handoffs(&mut self) {
        while let Ok((listener, stream)) = self.handoff_rx.try_recv() {
            let stream = LocalStream::Unix(mio::net::UnixStream::from_std(stream));
            self.adopt(listener, stream, "connector");
        }
    }

    /// Registers a new local connection and tells the machine.
    fn adopt(&mut self, listener: ListenerId, mut stream: LocalStream, peer: &str) {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        let token = Token(FIRST_CONN + id.0 as usize);
        if let Err(e) = self
            .io
            .registry
            .register(&mut stream, token, Interest::READABLE)
        {
            tracing::warn!("cannot register connection from {peer}: {e}");
            return;
        }
        tracing::debug!(conn = id.0, %peer, "accepted");
        self.io.conns.insert(
            id,
            LocalConn {
                stream,
                interest: Interest::READABLE,
                pending: Vec::new(),
                paused: false,
                read_closed: false,
                shutdown_after_flush: false,
                maybe_readable: true,
                flushed: false,
                close_by: None,
            },
        );
        self.pump.accepted(&mut self.io, id, listener);
    }

    /// Reads what the transport has, up to [`READS_PER_TURN`] datagrams or chunks, and hands
    /// it to the machine as one batch.
    fn read_transport(&mut self) {
        let mut reads = 0;
        while reads < READS_PER_TURN {
            if !self.io.transport_maybe_readable {
                break;
            }
            let Some(transport) = &mut self.io.transport else {
                self.io.transport_maybe_readable = false;
                break;
            };
            let (attempt, remote) = (transport.attempt, transport.remote);
            let (result, is_tcp) = match &mut transport.socket {
                Transport::Udp(socket) => {
                    let pump = &mut self.pump;
                    let read = datagrams::recv_batch(socket, |datagram| {
                        pump.batch_transport_data(attempt, remote, datagram);
                    });
                    match read {
                        Ok(count) => {
                            reads += count.max(1);
                            continue;
                        }
                        Err(e) => (Err(e), false),
                    }
                }
                Transport::Tcp {
                    stream,
                    connected: true,
                    ..
                } => (stream.read(&mut self.read_buf), true),
                Transport::Tcp { .. } => {
                    self.io.transport_maybe_readable = false;
                    break;
                }
            };
            match result {
                Ok(0) if is_tcp => {
                    self.io.transport_failed(TransportError::Closed);
                    break;
                }
                Ok(n) => {
                    // Read again even after a short read: what arrives while this chunk is
                    // decrypted joins the batch, and the batch is what one drain answers.
                    let data = &self.read_buf[..n];
                    self.pump.batch_transport_data(attempt, remote, data);
                    reads += 1;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.io.transport_maybe_readable = false;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => reads += 1,
                Err(e) => {
                    // ICMP port unreachable and friends surface here on a connected UDP
                    // socket: spoofable and transient, so UDP ignores them (as OpenVPN does)
                    // and lets server-poll-timeout or ping-restart decide.
                    tracing::debug!("transport read error: {e}");
                    if is_tcp {
                        self.io.transport_failed(transport_error(&e));
                    }
                    break;
                }
            }
        }
        // One drain for everything read: one acknowledgment covers the whole batch.
        self.pump.end_batch(&mut self.io);
    }

    fn read_locals(&mut self) {
        let ready: Vec<ConnId> = self
            .io
            .conns
            .iter()
            .filter(|(_, c)| c.maybe_readable && !c.paused && !c.read_closed)
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            for _ in 0..READS_PER_TURN / 8 {
                let Some(conn) = self.io.conns.get_mut(&id) else {
                    break;
                };
                if conn.paused || conn.read_closed {
                    break;
                }
                let chunk = &mut self.read_buf[..LOCAL_READ_CHUNK];
                match conn.stream.read(chunk) {
                    Ok(0) => {
                        conn.read_closed = true;
                        conn.maybe_readable = false;
                        self.pump.local_eof(&mut self.io, id);
                        break;
                    }
                    Ok(n) => {
                        let data = &self.read_buf[..n];
                        self.pump.local_data(&mut self.io, id, data);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        conn.maybe_readable = false;
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.io.remove_conn(id);
                        self.pump.local_reset(&mut self.io, id);
                        break;
                    }
                }
            }
        }
    }
}

impl MioIo {
    fn mark_ready(&mut self, token: Token, readable: bool, writable: bool) {
        match token {
            TRANSPORT => {
                if readable {
                    self.transport_maybe_readable = true;
                }
                if writable {
                    self.transport_writable();
                }
            }
            WAKER => {}
            Token(n) if n >= FIRST_CONN => {
                let id = ConnId((n - FIRST_CONN) as u64);
                if let Some(conn) = self.conns.get_mut(&id) {
                    if readable {
                        conn.maybe_readable = true;
                    }
                    if writable && !conn.pending.is_empty() {
                        flush_local(conn);
                    }
                }
            }
            _ => {}
        }
    }

    /// A TCP transport that was connecting is writable: connected, or refused.
    fn transport_writable(&mut self) {
        let Some(transport) = &mut self.transport else {
            return;
        };
        let Transport::Tcp {
            stream,
            connected,
            out,
            ..
        } = &mut transport.socket
        else {
            return;
        };
        if *connected {
            out.flush(stream);
            return;
        }
        let attempt = transport.attempt;
        match stream.take_error() {
            Ok(Some(e)) | Err(e) => self.transport_failed(transport_error(&e)),
            Ok(None) => match (stream.peer_addr(), stream.local_addr()) {
                (Ok(remote), Ok(local)) => {
                    *connected = true;
                    out.flush(stream);
                    self.notices.push_back(Notice::Connected {
                        attempt,
                        remote,
                        local,
                    });
                }
                // Not connected after all (a spurious wake-up): wait for the next one.
                (Err(e), _) if e.kind() == ErrorKind::NotConnected => {}
                (Err(e), _) | (_, Err(e)) => self.transport_failed(transport_error(&e)),
            },
        }
    }

    /// The transport failed: drop its socket and tell the machine.
    fn transport_failed(&mut self, error: TransportError) {
        self.transport_maybe_readable = false;
        if let Some(mut transport) = self.transport.take() {
            deregister_transport(&self.registry, &mut transport.socket);
            self.notices.push_back(Notice::Closed {
                attempt: transport.attempt,
                error,
            });
        }
    }

    /// Opens the socket of `attempt` to an address already resolved.
    fn open_socket(&mut self, attempt: u64, kind: TransportKind, remote: SocketAddr) {
        match open_transport(&self.registry, kind, remote) {
            Ok(socket) => {
                if let Transport::Udp(udp) = &socket {
                    match udp.local_addr() {
                        Ok(local) => self.notices.push_back(Notice::Connected {
                            attempt,
                            remote,
                            local,
                        }),
                        Err(e) => {
                            self.notices.push_back(Notice::Closed {
                                attempt,
                                error: transport_error(&e),
                            });
                            return;
                        }
                    }
                }
                self.transport = Some(TransportSocket {
                    attempt,
                    remote,
                    socket,
                });
                self.transport_maybe_readable = false;
            }
            Err(e) => {
                tracing::debug!("cannot open the transport to {remote}: {e}");
                self.notices.push_back(Notice::Closed {
                    attempt,
                    error: transport_error(&e),
                });
            }
        }
    }

    /// Asks for writability where bytes wait, and only there. A socket is registered again
    /// only when that changes: readiness is edge-triggered, so an unchanged registration
    /// still reports every new edge, and one system call per socket per turn is saved.
    fn register_interests(&mut self) {
        for (id, conn) in &mut self.conns {
            let interest = if conn.pending.is_empty() {
                Interest::READABLE
            } else {
                Interest::READABLE | Interest::WRITABLE
            };
            if interest != conn.interest {
                let token = Token(FIRST_CONN + id.0 as usize);
                let _ = self.registry.reregister(&mut conn.stream, token, interest);
                conn.interest = interest;
            }
        }
        if let Some(TransportSocket {
            socket:
                Transport::Tcp {
                    stream,
                    connected,
                    out,
                    interest: registered,
                },
            ..
        }) = &mut self.transport
        {
            let interest = if !*connected || !out.is_empty() {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if interest != *registered {
                let _ = self.registry.reregister(stream, TRANSPORT, interest);
                *registered = interest;
            }
        }
    }

    /// Closes connections that were asked to shut down once their bytes are flushed, and
    /// closed ones whose client would not read them in time.
    fn close_finished(&mut self) {
        let now = std::time::Instant::now();
        let done: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                (c.shutdown_after_flush && c.pending.is_empty() && c.read_closed)
                    || c.close_by.is_some_and(|by| now >= by)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            self.remove_conn(id);
        }
    }

    fn remove_conn(&mut self, id: ConnId) {
        if let Some(mut conn) = self.conns.remove(&id) {
            let _ = self.registry.deregister(&mut conn.stream);
        }
    }
}

impl Io for MioIo {
    fn transmit(&mut self, _to: SocketAddr, bytes: &[u8]) {
        // The socket is connected to the one server the machine talks to.
        match self.transport.as_mut().map(|t| &mut t.socket) {
            Some(Transport::Udp(socket)) => {
                if let Err(e) = socket.send(bytes) {
                    // UDP may drop; the protocols above retransmit what matters.
                    tracing::debug!("datagram dropped: {e}");
                }
            }
            // Written at the end of the drain, with the drain's other packets.
            Some(Transport::Tcp { out, .. }) => out.push(bytes),
            None => tracing::debug!("transmit without a transport dropped"),
        }
    }

    fn transport_backlog(&self) -> usize {
        match self.transport.as_ref().map(|t| &t.socket) {
            Some(Transport::Tcp { out, .. }) => out.pending.len(),
            _ => 0,
        }
    }

    fn flush_transport(&mut self) {
        if let Some(TransportSocket {
            socket:
                Transport::Tcp {
                    stream,
                    connected: true,
                    out,
                    ..
                },
            ..
        }) = &mut self.transport
        {
            out.flush(stream);
        }
    }

    fn open_transport(&mut self, spec: &TransportSpec) {
        self.close_transport();
        let (attempt, kind) = (spec.attempt, spec.kind);
        match literal(&spec.host, spec.port) {
            Some(remote) => self.open_socket(attempt, kind, remote),
            None => {
                // The system resolver blocks: a thread asks it, and wakes the loop.
                self.resolving = Some(attempt);
                let (host, port) = (spec.host.clone(), spec.port);
                let (tx, waker) = (self.resolved_tx.clone(), self.waker.clone());
                let spawned = std::thread::Builder::new()
                    .name("erebus-resolve".into())
                    .spawn(move || {
                        let _ = tx.send((attempt, kind, resolve(&host, port)));
                        let _ = waker.wake();
                    });
                if let Err(e) = spawned {
                    tracing::warn!("cannot start a resolver thread: {e}");
                    self.resolving = None;
                    self.notices.push_back(Notice::Closed {
                        attempt,
                        error: TransportError::Unresolved,
                    });
                }
            }
        }
    }

    fn close_transport(&mut self) {
        self.resolving = None;
        self.transport_maybe_readable = false;
        if let Some(mut transport) = self.transport.take() {
            deregister_transport(&self.registry, &mut transport.socket);
        }
    }

    fn write_local(&mut self, conn: ConnId, bytes: &[u8]) -> usize {
        let Some(conn) = self.conns.get_mut(&conn) else {
            return 0;
        };
        if conn.pending.is_empty() {
            let written = write_some(&mut conn.stream, bytes);
            if let Some(rest) = bytes.get(written..).filter(|r| !r.is_empty()) {
                conn.pending.extend_from_slice(rest);
            }
        } else {
            conn.pending.extend_from_slice(bytes);
        }
        conn.pending.len()
    }

    fn pause_local(&mut self, conn: ConnId, paused: bool) {
        if let Some(conn) = self.conns.get_mut(&conn) {
            conn.paused = paused;
            if !paused {
                conn.maybe_readable = true;
            }
        }
    }

    fn shutdown_local(&mut self, conn: ConnId) {
        if let Some(conn) = self.conns.get_mut(&conn) {
            conn.shutdown_after_flush = true;
            if conn.pending.is_empty() {
                let _ = conn.stream.shutdown(std::net::Shutdown::Write);
            }
        }
    }

    fn close_local(&mut self, conn: ConnId) {
        if let Some(conn) = self.conns.get_mut(&conn) {
            // What was written still goes out first; then the socket closes.
            conn.read_closed = true;
            conn.paused = true;
            conn.shutdown_after_flush = true;
            conn.close_by = Some(std::time::Instant::now() + CLOSE_LINGER);
            if conn.pending.is_empty() {
                let _ = conn.stream.shutdown(std::net::Shutdown::Write);
            }
        }
    }
}

fn deregister_transport(registry: &Registry, socket: &mut Transport) {
    let _ = match socket {
        Transport::Udp(s) => registry.deregister(s),
        Transport::Tcp { stream, .. } => registry.deregister(stream),
    };
}

fn open_transport(
    registry: &Registry,
    kind: TransportKind,
    remote: SocketAddr,
) -> io::Result<Transport> {
    match kind {
        TransportKind::Udp => {
            let mut socket = UdpSocket::bind(unspecified_for(remote))?;
            size_udp_buffers(&socket);
            socket.connect(remote)?;
            registry.register(&mut socket, TRANSPORT, Interest::READABLE)?;
            Ok(Transport::Udp(socket))
        }
        TransportKind::TcpLengthPrefixed => {
            let mut stream = TcpStream::connect(remote)?;
            let _ = stream.set_nodelay(true);
            registry.register(
                &mut stream,
                TRANSPORT,
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(Transport::Tcp {
                stream,
                connected: false,
                out: StreamOut::default(),
                interest: Interest::READABLE | Interest::WRITABLE,
            })
        }
    }
}

/// Writes as much of `bytes` as the socket takes now; returns how much.
fn write_some(stream: &mut impl Write, bytes: &[u8]) -> usize {
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    written
}

fn flush_local(conn: &mut LocalConn) {
    let written = write_some(&mut conn.stream, &conn.pending);
    conn.pending.drain(..written);
    if conn.pending.is_empty() {
        if conn.pending.capacity() > PENDING_KEEP {
            conn.pending = Vec::new();
        }
        conn.flushed = true;
        if conn.shutdown_after_flush {
            let _ = conn.stream.shutdown(std::net::Shutdown::Write);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that counts the writes it is asked for and takes at most `room` bytes.
    struct Socket {
        writes: usize,
        taken: Vec<u8>,
        room: usize,
    }

    impl Write for Socket {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.writes += 1;
            let n = buf.len().min(self.room);
            if n == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            self.room -= n;
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_packets_of_one_drain_are_one_write() {
        let mut out = StreamOut::default();
        let mut socket = Socket {
            writes: 0,
            taken: Vec::new(),
            room: usize::MAX,
        };
        for packet in [&b"\x00\x03one"[..], b"\x00\x03two", b"\x00\x05three"] {
            out.push(packet);
        }
        assert_eq!(socket.writes, 0, "nothing is written before the drain ends");
        out.flush(&mut socket);
        assert_eq!(socket.writes, 1);
        assert_eq!(socket.taken, b"\x00\x03one\x00\x03two\x00\x05three");
        assert!(out.is_empty());
    }

    #[test]
    fn the_tcp_transport_is_written_at_the_end_of_the_drain() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let remote = listener.local_addr().unwrap();
        let stream = std::net::TcpStream::connect(remote).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        stream.set_nonblocking(true).unwrap();
        let poll = Poll::new().unwrap();
        let (resolved_tx, _resolved_rx) = mpsc::channel();
        let mut io = MioIo {
            registry: poll.registry().try_clone().unwrap(),
            waker: Arc::new(Waker::new(poll.registry(), WAKER).unwrap()),
            transport: Some(TransportSocket {
                attempt: 0,
                remote,
                socket: Transport::Tcp {
                    stream: TcpStream::from_std(stream),
                    connected: true,
                    out: StreamOut::default(),
                    interest: Interest::READABLE,
                },
            }),
            transport_maybe_readable: false,
            resolving: None,
            resolved_tx,
            notices: VecDeque::new(),
            conns: BTreeMap::new(),
        };
        let kept = |io: &MioIo| match &io.transport {
            Some(TransportSocket {
                socket: Transport::Tcp { out, .. },
                ..
            }) => out.pending.clone(),
            _ => panic!("the transport is gone"),
        };
        for packet in [&b"\x00\x03one"[..], b"\x00\x03two", b"\x00\x05three"] {
            io.transmit(remote, packet);
        }
        assert_eq!(
            kept(&io),
            b"\x00\x03one\x00\x03two\x00\x05three",
            "a drain's packets wait for its end"
        );
        io.flush_transport();
        assert!(kept(&io).is_empty());
        let mut received = [0u8; 17];
        server.read_exact(&mut received).unwrap();
        assert_eq!(&received, b"\x00\x03one\x00\x03two\x00\x05three");
    }

    #[test]
    fn what_the_socket_refuses_waits_in_order() {
        let mut out = StreamOut::default();
        let mut socket = Socket {
            writes: 0,
            taken: Vec::new(),
            room: 4,
        };
        out.push(b"\x00\x03one");
        out.push(b"\x00\x03two");
        out.flush(&mut socket);
        assert_eq!(socket.taken, b"\x00\x03on");
        out.push(b"\x00\x01!");
        socket.room = usize::MAX;
        out.flush(&mut socket);
        assert_eq!(socket.taken, b"\x00\x03one\x00\x03two\x00\x01!");
        assert!(out.is_empty());
    }
}
