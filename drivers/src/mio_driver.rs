//! The mio driver: one thread, one `Poll`, woken at the machine's deadline.
//!
//! It owns the transport socket towards the VPN server, the proxy listeners and the accepted
//! local connections, and translates their readiness into [`Input`]s. It never looks at what
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

use std::collections::BTreeMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use erebus_sansio::io::{
    ConnId, Event, Input, ListenerId, LocalAction, LocalEvent, Output, TransportEvent,
};
use erebus_sansio::tunnel::{Failure, TransportKind, TransportSpec};
use erebus_sansio::{Driven, Instant};
use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use crate::clock::Clock;
use crate::connector::{
    Credentials, DEFAULT_CONNECT_TIMEOUT, Handshake, SessionWatch, closed_early,
};
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
/// Largest outer packet or stream chunk the driver reads from the transport.
const TRANSPORT_READ_CHUNK: usize = 65_536;

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
        pending: Vec<u8>,
    },
}

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
            handshake.feed(answer)?;
        }
        ours.set_write_timeout(None)?;
        ours.set_read_timeout(None)?;
        Ok(ours)
    }
}

struct LocalConn {
    stream: LocalStream,
    /// Bytes the socket did not take yet.
    pending: Vec<u8>,
    /// Set when a write was refused; cleared (with a `Writable` input) once `pending` drains.
    blocked: bool,
    /// Reported to the machine after the drain in which the block happened.
    block_unreported: bool,
    paused: bool,
    read_closed: bool,
    shutdown_after_flush: bool,
    /// Readable data may be waiting (edge-triggered readiness not yet consumed).
    maybe_readable: bool,
}

/// Runs a [`Driven`] machine with mio.
pub struct MioDriver<D> {
    machine: D,
    clock: Clock,
    poll: Poll,
    events: Events,
    stop: StopHandle,
    stop_sent: bool,
    transport: Option<(TransportSpec, Transport)>,
    transport_maybe_readable: bool,
    listeners: Vec<TcpListener>,
    conns: BTreeMap<ConnId, LocalConn>,
    next_conn: u64,
    out_buf: Vec<u8>,
    read_buf: Vec<u8>,
    down: Option<Failure>,
    /// The deadline from the last drain.
    deadline: Option<Instant>,
    tap: Option<Box<dyn Tap>>,
    on_event: Box<dyn FnMut(&Event)>,
    handoff_tx: mpsc::Sender<Handoff>,
    handoff_rx: mpsc::Receiver<Handoff>,
    watch: Arc<SessionWatch>,
}

impl<D> Drop for MioDriver<D> {
    fn drop(&mut self) {
        self.watch.driver_gone();
    }
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
        Ok(Self {
            machine,
            clock,
            poll,
            events: Events::with_capacity(256),
            stop: StopHandle {
                requested: Arc::new(AtomicBool::new(false)),
                waker,
            },
            stop_sent: false,
            transport: None,
            transport_maybe_readable: false,
            listeners: mio_listeners,
            conns: BTreeMap::new(),
            next_conn: 0,
            out_buf: vec![0; 65_536],
            read_buf: vec![0; TRANSPORT_READ_CHUNK.max(LOCAL_READ_CHUNK)],
            down: None,
            deadline: None,
            tap: None,
            on_event: Box::new(|_| {}),
            handoff_tx,
            handoff_rx,
            watch: Arc::default(),
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
            watch: self.watch.clone(),
            credentials: None,
            timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// Calls `on_event` for every [`Event`] the machine reports (to print status lines).
    pub fn on_event(&mut self, on_event: impl FnMut(&Event) + 'static) {
        self.on_event = Box::new(on_event);
    }

    /// Records every input and every transmit through `tap` (see `--record`).
    pub fn record(&mut self, tap: Box<dyn Tap>) {
        self.tap = Some(tap);
    }

    /// A handle that stops the driver gracefully from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// The machine, for inspection after [`MioDriver::run`] returns.
    pub fn machine(&self) -> &D {
        &self.machine
    }

    /// Runs until the machine reports [`Event::Down`], and returns why.
    ///
    /// # Errors
    ///
    /// Fails only when polling itself fails; socket errors become inputs.
    pub fn run(&mut self) -> io::Result<Failure> {
        // Open the transport before the first drain: the machine's first output is usually its
        // first packet to the server, and dropping it would cost a retransmission timeout.
        self.sync_transport();
        self.drain();
        loop {
            if let Some(failure) = self.down.take() {
                return Ok(failure);
            }
            self.sync_transport();
            if self.stop.requested.load(Ordering::SeqCst) && !self.stop_sent {
                self.stop_sent = true;
                self.feed(Input::Close {
                    now: self.clock.now(),
                });
                continue;
            }
            let busy = self.transport_maybe_readable
                || self
                    .conns
                    .values()
                    .any(|c| c.maybe_readable && !c.paused && !c.read_closed);
            let timeout = if busy {
                Some(Duration::ZERO)
            } else {
                self.deadline.map(|d| self.clock.until(d))
            };
            match self.poll.poll(&mut self.events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let ready: Vec<(Token, bool, bool)> = self
                .events
                .iter()
                .map(|e| {
                    (
                        e.token(),
                        e.is_readable() || e.is_read_closed(),
                        e.is_writable(),
                    )
                })
                .collect();
            for (token, readable, writable) in ready {
                self.mark_ready(token, readable, writable);
            }
            self.handle_writable();
            self.accept_all();
            self.accept_handoffs();
            self.read_transport();
            self.read_locals();
            // Compare the clock with the deadline rather than trusting the poll timeout.
            if self.deadline.is_some_and(|d| self.clock.now() >= d) {
                self.feed(Input::Timeout {
                    now: self.clock.now(),
                });
            }
        }
    }

    /// Applies one input, then drains the machine (the sans-IO rule).
    fn feed(&mut self, input: Input<'_>) {
        if let Some(tap) = &mut self.tap {
            tap.input(&input);
        }
        if let Err(e) = self.machine.handle_input(input) {
            tracing::debug!("input refused: {e}");
        }
        self.drain()
    }

    /// Drains outputs until the deadline; then reports write blocks that happened meanwhile.
    fn drain(&mut self) {
        let now = self.clock.now();
        let deadline = loop {
            let output = self.machine.poll_output(&mut self.out_buf);
            match output {
                Output::Transmit(bytes) => {
                    if let Some(tap) = &mut self.tap {
                        tap.transmit(now, bytes);
                    }
                    send_transport(&mut self.transport, bytes);
                }
                Output::Local { conn, action } => apply_local(&mut self.conns, conn, action),
                Output::Event(event) => {
                    self.watch.observe(&event);
                    (self.on_event)(&event);
                    if let Event::Down(failure) = event {
                        self.down = Some(failure);
                    }
                }
                Output::BufferTooSmall { needed } => {
                    let needed = needed.max(self.out_buf.len() * 2);
                    self.out_buf.resize(needed, 0);
                }
                Output::Timeout(deadline) => break deadline,
            }
        };
        // Writes refused during the drain are reported now, one input each, each drained.
        let blocked: Vec<ConnId> = self
            .conns
            .iter_mut()
            .filter(|(_, c)| c.block_unreported)
            .map(|(id, c)| {
                c.block_unreported = false;
                *id
            })
            .collect();
        self.deadline = deadline;
        self.register_interests();
        for conn in blocked {
            self.feed(Input::Local {
                now: self.clock.now(),
                conn,
                event: LocalEvent::WriteBlocked,
            });
        }
        self.close_finished();
    }

    /// Opens, replaces or keeps the transport so it matches what the machine asks for.
    fn sync_transport(&mut self) {
        let wanted = self.machine.transport();
        if self.transport.as_ref().map(|(spec, _)| *spec) == wanted {
            return;
        }
        if let Some((_, mut old)) = self.transport.take() {
            let _ = match &mut old {
                Transport::Udp(s) => self.poll.registry().deregister(s),
                Transport::Tcp { stream, .. } => self.poll.registry().deregister(stream),
            };
        }
        let Some(spec) = wanted else { return };
        match open_transport(self.poll.registry(), spec) {
            Ok(transport) => {
                let local = match &transport {
                    Transport::Udp(s) => s.local_addr(),
                    Transport::Tcp { stream, .. } => stream.local_addr(),
                };
                if let (Some(tap), Ok(local)) = (&mut self.tap, local) {
                    tap.transport_opened(spec, local);
                }
                self.transport = Some((spec, transport));
                self.transport_maybe_readable = false;
            }
            Err(e) => {
                tracing::warn!("cannot open transport to {}: {e}", spec.remote);
                self.transport = None;
                self.feed(Input::Transport {
                    now: self.clock.now(),
                    event: TransportEvent::Closed,
                });
            }
        }
    }

    fn mark_ready(&mut self, token: Token, readable: bool, writable: bool) {
        match token {
            TRANSPORT => {
                if readable {
                    self.transport_maybe_readable = true;
                }
                if writable {
                    if let Some((_, Transport::Tcp { connected, .. })) = &mut self.transport
                        && !*connected
                    {
                        *connected = true;
                        self.transport_maybe_readable = true;
                        self.feed(Input::Transport {
                            now: self.clock.now(),
                            event: TransportEvent::Connected,
                        });
                    }
                    flush_transport(&mut self.transport);
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

    /// Feeds `Writable` for connections whose kept bytes are now flushed.
    fn handle_writable(&mut self) {
        let flushed: Vec<ConnId> = self
            .conns
            .iter_mut()
            .filter(|(_, c)| c.blocked && c.pending.is_empty())
            .map(|(id, c)| {
                c.blocked = false;
                *id
            })
            .collect();
        for conn in flushed {
            self.feed(Input::Local {
                now: self.clock.now(),
                conn,
                event: LocalEvent::Writable,
            });
        }
    }

    fn accept_all(&mut self) {
        for index in 0..self.listeners.len() {
            for _ in 0..READS_PER_TURN {
                let accepted = match self.listeners.get(index) {
                    Some(listener) => listener.accept(),
                    None => break,
                };
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
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
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE)
        {
            tracing::warn!("cannot register connection from {peer}: {e}");
            return;
        }
        tracing::debug!(conn = id.0, %peer, "accepted");
        self.conns.insert(
            id,
            LocalConn {
                stream,
                pending: Vec::new(),
                blocked: false,
                block_unreported: false,
                paused: false,
                read_closed: false,
                shutdown_after_flush: false,
                maybe_readable: true,
            },
        );
        self.feed(Input::Local {
            now: self.clock.now(),
            conn: id,
            event: LocalEvent::Accepted { listener },
        });
    }

    fn read_transport(&mut self) {
        for _ in 0..READS_PER_TURN {
            if !self.transport_maybe_readable {
                break;
            }
            let result = match &mut self.transport {
                Some((_, Transport::Udp(socket))) => socket.recv(&mut self.read_buf),
                Some((
                    _,
                    Transport::Tcp {
                        stream,
                        connected: true,
                        ..
                    },
                )) => stream.read(&mut self.read_buf),
                _ => {
                    self.transport_maybe_readable = false;
                    break;
                }
            };
            let is_tcp = matches!(self.transport, Some((_, Transport::Tcp { .. })));
            match result {
                Ok(0) if is_tcp => {
                    self.transport_maybe_readable = false;
                    self.transport_closed();
                    break;
                }
                Ok(n) => {
                    let now = self.clock.now();
                    let data = &self.read_buf[..n];
                    if let Some(tap) = &mut self.tap {
                        tap.input(&Input::Transport {
                            now,
                            event: TransportEvent::Data(data),
                        });
                    }
                    if let Err(e) = self.machine.handle_input(Input::Transport {
                        now,
                        event: TransportEvent::Data(data),
                    }) {
                        tracing::debug!("input refused: {e}");
                    }
                    self.drain();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.transport_maybe_readable = false;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // ICMP port unreachable and friends surface here on a connected UDP socket.
                    tracing::debug!("transport read error: {e}");
                    if is_tcp {
                        self.transport_maybe_readable = false;
                        self.transport_closed();
                    }
                    break;
                }
            }
        }
    }

    fn transport_closed(&mut self) {
        if let Some((_, Transport::Tcp { stream, .. })) = &mut self.transport {
            let _ = self.poll.registry().deregister(stream);
        }
        self.transport = None;
        self.feed(Input::Transport {
            now: self.clock.now(),
            event: TransportEvent::Closed,
        })
    }

    fn read_locals(&mut self) {
        let ready: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.maybe_readable && !c.paused && !c.read_closed)
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            for _ in 0..READS_PER_TURN / 8 {
                let Some(conn) = self.conns.get_mut(&id) else {
                    break;
                };
                if conn.paused || conn.read_closed {
                    break;
                }
                let chunk = &mut self.read_buf[..LOCAL_READ_CHUNK];
                let event = match conn.stream.read(chunk) {
                    Ok(0) => {
                        conn.read_closed = true;
                        conn.maybe_readable = false;
                        LocalEvent::ReadClosed
                    }
                    Ok(n) => LocalEvent::Data(&self.read_buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        conn.maybe_readable = false;
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => {
                        conn.maybe_readable = false;
                        conn.read_closed = true;
                        LocalEvent::Reset
                    }
                };
                let finished = !matches!(event, LocalEvent::Data(_));
                let now = self.clock.now();
                let input = Input::Local {
                    now,
                    conn: id,
                    event,
                };
                if let Some(tap) = &mut self.tap {
                    tap.input(&input);
                }
                if let Err(e) = self.machine.handle_input(input) {
                    tracing::debug!("input refused: {e}");
                }
                if matches!(event, LocalEvent::Reset) {
                    self.remove_conn(id);
                }
                self.drain();
                if finished {
                    break;
                }
            }
        }
    }

    fn register_interests(&mut self) {
        let registry = self.poll.registry();
        for (id, conn) in &mut self.conns {
            let token = Token(FIRST_CONN + id.0 as usize);
            let interest = if conn.pending.is_empty() {
                Interest::READABLE
            } else {
                Interest::READABLE | Interest::WRITABLE
            };
            let _ = registry.reregister(&mut conn.stream, token, interest);
        }
        if let Some((
            _,
            Transport::Tcp {
                stream,
                connected,
                pending,
            },
        )) = &mut self.transport
        {
            let interest = if !*connected || !pending.is_empty() {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let _ = registry.reregister(stream, TRANSPORT, interest);
        }
    }

    /// Closes connections that were asked to shut down once their bytes are flushed.
    fn close_finished(&mut self) {
        let done: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.shutdown_after_flush && c.pending.is_empty() && c.read_closed)
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            self.remove_conn(id);
        }
    }

    fn remove_conn(&mut self, id: ConnId) {
        if let Some(mut conn) = self.conns.remove(&id) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
    }
}

fn open_transport(registry: &Registry, spec: TransportSpec) -> io::Result<Transport> {
    let local: SocketAddr = if spec.remote.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    match spec.kind {
        TransportKind::Udp => {
            let mut socket = UdpSocket::bind(local)?;
            socket.connect(spec.remote)?;
            registry.register(&mut socket, TRANSPORT, Interest::READABLE)?;
            Ok(Transport::Udp(socket))
        }
        TransportKind::TcpLengthPrefixed => {
            let mut stream = TcpStream::connect(spec.remote)?;
            let _ = stream.set_nodelay(true);
            registry.register(
                &mut stream,
                TRANSPORT,
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(Transport::Tcp {
                stream,
                connected: false,
                pending: Vec::new(),
            })
        }
    }
}

fn send_transport(transport: &mut Option<(TransportSpec, Transport)>, bytes: &[u8]) {
    match transport {
        Some((_, Transport::Udp(socket))) => {
            if let Err(e) = socket.send(bytes) {
                // UDP may drop; the protocols above retransmit what matters.
                tracing::debug!("datagram dropped: {e}");
            }
        }
        Some((
            _,
            Transport::Tcp {
                stream,
                connected,
                pending,
            },
        )) => {
            if !*connected || !pending.is_empty() {
                pending.extend_from_slice(bytes);
                return;
            }
            let written = write_some(stream, bytes);
            if let Some(rest) = bytes.get(written..) {
                pending.extend_from_slice(rest);
            }
        }
        None => tracing::debug!("transmit without a transport dropped"),
    }
}

fn flush_transport(transport: &mut Option<(TransportSpec, Transport)>) {
    if let Some((
        _,
        Transport::Tcp {
            stream,
            connected: true,
            pending,
        },
    )) = transport
    {
        let written = write_some(stream, pending);
        pending.drain(..written);
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
    if conn.pending.is_empty() && conn.shutdown_after_flush {
        let _ = conn.stream.shutdown(std::net::Shutdown::Write);
    }
}

fn apply_local(conns: &mut BTreeMap<ConnId, LocalConn>, id: ConnId, action: LocalAction<'_>) {
    let Some(conn) = conns.get_mut(&id) else {
        return;
    };
    match action {
        LocalAction::Write(bytes) => {
            if conn.pending.is_empty() {
                let written = write_some(&mut conn.stream, bytes);
                if let Some(rest) = bytes.get(written..).filter(|r| !r.is_empty()) {
                    conn.pending.extend_from_slice(rest);
                }
            } else {
                conn.pending.extend_from_slice(bytes);
            }
            if !conn.pending.is_empty() && !conn.blocked {
                conn.blocked = true;
                conn.block_unreported = true;
            }
        }
        LocalAction::PauseReading => conn.paused = true,
        LocalAction::ResumeReading => {
            conn.paused = false;
            conn.maybe_readable = true;
        }
        LocalAction::Shutdown => {
            conn.shutdown_after_flush = true;
            if conn.pending.is_empty() {
                let _ = conn.stream.shutdown(std::net::Shutdown::Write);
            }
        }
        LocalAction::Close => {
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
            conn.read_closed = true;
            conn.pending.clear();
            conn.shutdown_after_flush = true;
        }
    }
}
