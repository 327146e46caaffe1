//! The smol driver: one task owns the machine; small tasks read sockets and feed it through a
//! channel.
//!
//! Each input still goes to the machine one at a time, followed by a full drain, exactly as
//! under the mio driver; only the waiting is async.
//!
//! A program that uses erebus as a library opens streams through the tunnel with a
//! [`Connector`] (see [`crate::connector`]): each is an [`Async`]`<`[`UnixStream`]`>`, which
//! implements futures' `AsyncRead` and `AsyncWrite` (`smol::io`'s traits are the same).
//!
//! ```no_run
//! # async fn demo(
//! #     mut driver: erebus::smol_driver::SmolDriver<impl erebus_sansio::Driven + Send + 'static>,
//! #     internal: erebus_sansio::io::ListenerId,
//! # ) -> std::io::Result<()> {
//! use smol::io::{AsyncReadExt, AsyncWriteExt};
//!
//! // `internal` came from `erebus::connector::add_internal_listener(&mut client_config)`.
//! let connector = driver.connector(internal);
//! let stop = driver.stop_handle();
//! let session = smol::spawn(async move { driver.run().await });
//! connector.until_up().await?;
//! let mut stream = connector.connect("web.erebus.test", 8080).await?;
//! stream
//!     .write_all(b"GET / HTTP/1.1\r\nHost: web.erebus.test\r\nConnection: close\r\n\r\n")
//!     .await?;
//! let mut page = String::new();
//! stream.read_to_string(&mut page).await?;
//! stop.stop();
//! session.await?;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use erebus_sansio::io::{
    ConnId, Event, Input, ListenerId, LocalAction, LocalEvent, Output, TransportEvent,
};
use erebus_sansio::tunnel::{Failure, TransportKind, TransportSpec};
use erebus_sansio::{Driven, Instant};
use smol::channel::{Receiver, Sender, unbounded};
use smol::future::FutureExt;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smol::{Async, Task, Timer};

use crate::clock::Clock;
use crate::connector::{Credentials, DEFAULT_CONNECT_TIMEOUT, Handshake, SessionWatch};
use crate::record::Tap;

/// Bytes read from a local connection at a time.
const LOCAL_READ_CHUNK: usize = 64 * 1024;
/// Largest outer packet or stream chunk read from the transport.
const TRANSPORT_READ_CHUNK: usize = 65_536;
/// Bytes queued towards one local connection before the machine is told to hold off.
const LOCAL_WRITE_HIGH_WATER: usize = 256 * 1024;

/// Stops a running [`SmolDriver`] gracefully, from any thread or task.
#[derive(Clone)]
pub struct StopHandle(Sender<Message>);

impl StopHandle {
    /// Asks the driver to close the session.
    pub fn stop(&self) {
        let _ = self.0.try_send(Message::Stop);
    }
}

enum Message {
    Stop,
    TransportConnected(u64, Option<SocketAddr>),
    TransportData(u64, Vec<u8>),
    TransportClosed(u64),
    Accepted(ListenerId, LocalStream),
    LocalData(ConnId, Vec<u8>),
    LocalEof(ConnId),
    LocalReset(ConnId),
    LocalFlushed(ConnId),
}

/// A local connection's socket: accepted from a listener, or handed over by a [`Connector`].
enum LocalStream {
    Tcp(Async<TcpStream>),
    Unix(Async<UnixStream>),
}

/// What the reader and writer tasks of a local connection need from its socket.
trait LocalSocket: Send + Sync + 'static {
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
}

impl LocalSocket for TcpStream {
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        Self::shutdown(self, how)
    }
}

impl LocalSocket for UnixStream {
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        Self::shutdown(self, how)
    }
}

/// Opens streams through the tunnel while the [`SmolDriver`] that made it runs; cheap to
/// clone, usable from any task or thread. See [`crate::connector`] for how, and the module
/// documentation for an example.
#[derive(Clone)]
pub struct Connector {
    listener: ListenerId,
    tx: Sender<Message>,
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
    /// [`DEFAULT_CONNECT_TIMEOUT`]) with [`io::ErrorKind::TimedOut`].
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether the tunnel is up now: connects made while it is not fail with
    /// [`io::ErrorKind::NetworkUnreachable`].
    pub fn is_up(&self) -> bool {
        self.watch.is_up()
    }

    /// Waits until the tunnel is up (combine it with a [`Timer`] to bound the wait).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotConnected`] once the session ended or the driver was dropped.
    pub async fn until_up(&self) -> io::Result<()> {
        self.watch.until_up().await
    }

    /// Opens a stream to `host:port` through the tunnel; `host` is an IP address or a name,
    /// which the tunnel's DNS servers resolve. Completes once the destination accepted or
    /// refused. The stream's bytes are the destination's; closing its writing side
    /// (`AsyncWriteExt::close`) sends a FIN to the destination.
    ///
    /// # Errors
    ///
    /// The destination's refusal as in [`Handshake`] (`ConnectionRefused`, `NotFound`,
    /// `HostUnreachable`, `TimedOut`, `NetworkUnreachable` while the tunnel is down),
    /// [`io::ErrorKind::NotConnected`] once the session ended or the driver was dropped,
    /// [`io::ErrorKind::InvalidInput`] for a bad host or port 0.
    pub async fn connect(&self, host: &str, port: u16) -> io::Result<Async<UnixStream>> {
        self.watch.check_running()?;
        let mut handshake = Handshake::new(host, port, self.credentials.clone())?;
        let (ours, theirs) = Async::<UnixStream>::pair()?;
        self.tx
            .send(Message::Accepted(self.listener, LocalStream::Unix(theirs)))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::NotConnected, "the driver was dropped"))?;
        let exchange = async {
            let mut stream = &ours;
            let mut answer = [0u8; 256];
            while let Some((bytes, want)) = handshake.next() {
                let answer = answer.get_mut(..want).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "oversized SOCKS5 answer")
                })?;
                let exchanged = match stream.write_all(&bytes).await {
                    Ok(()) => stream.read_exact(answer).await,
                    Err(e) => Err(e),
                };
                match exchanged {
                    Ok(()) => {}
                    Err(e) if crate::connector::closed_early(&e) => {
                        // The client closes connections of listeners it does not know.
                        self.watch.check_running()?;
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
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
            Ok(())
        };
        let timeout = async {
            Timer::after(self.timeout).await;
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{host}:{port}: no answer from the driver in time"),
            ))
        };
        exchange.or(timeout).await?;
        Ok(ours)
    }
}

enum Writer {
    Udp(Arc<Async<UdpSocket>>),
    Tcp(Sender<Vec<u8>>),
}

struct LocalConn {
    writer: Sender<WriteCommand>,
    queued: usize,
    blocked: bool,
    paused: Arc<AtomicBool>,
    resume: Sender<()>,
    _reader: Task<()>,
    _writer: Task<()>,
}

enum WriteCommand {
    Data(Vec<u8>),
    Shutdown,
    Close,
}

/// Runs a [`Driven`] machine on smol.
pub struct SmolDriver<D> {
    /// Buffers that carry bytes between the socket tasks and the machine, reused so that no
    /// packet costs an allocation once the pool has warmed up.
    pool: BufferPool,
    machine: D,
    clock: Clock,
    listeners: Vec<Arc<Async<TcpListener>>>,
    tx: Sender<Message>,
    rx: Receiver<Message>,
    transport: Option<(TransportSpec, u64, Writer, Task<()>)>,
    transport_generation: u64,
    conns: BTreeMap<ConnId, LocalConn>,
    next_conn: u64,
    out_buf: Vec<u8>,
    deadline: Option<Instant>,
    down: Option<Failure>,
    tap: Option<Box<dyn Tap + Send>>,
    on_event: Box<dyn FnMut(&Event) + Send>,
    watch: Arc<SessionWatch>,
}

/// Buffers handed between tasks and given back after use. Bounded, so a burst does not keep
/// memory for ever.
#[derive(Clone, Default)]
struct BufferPool(Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

impl BufferPool {
    /// At most this many idle buffers are kept.
    const MAX_IDLE: usize = 64;

    /// A buffer holding a copy of `data`, reused from the pool when one is idle.
    fn copy_of(&self, data: &[u8]) -> Vec<u8> {
        let reused = self.0.lock().ok().and_then(|mut idle| idle.pop());
        let mut buf = reused.unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(data);
        buf
    }

    /// Returns a buffer for reuse.
    fn give(&self, buf: Vec<u8>) {
        if let Ok(mut idle) = self.0.lock()
            && idle.len() < Self::MAX_IDLE
        {
            idle.push(buf);
        }
    }
}

impl<D> Drop for SmolDriver<D> {
    fn drop(&mut self) {
        self.watch.driver_gone();
    }
}

impl<D: Driven> SmolDriver<D> {
    /// Wraps `machine`, serving the given listeners (their order gives the [`ListenerId`]s).
    ///
    /// # Errors
    ///
    /// Fails when a listener cannot be made non-blocking.
    pub fn new(machine: D, clock: Clock, listeners: Vec<TcpListener>) -> io::Result<Self> {
        let listeners = listeners
            .into_iter()
            .map(|l| Async::new(l).map(Arc::new))
            .collect::<io::Result<Vec<_>>>()?;
        let (tx, rx) = unbounded();
        Ok(Self {
            pool: BufferPool::default(),
            machine,
            clock,
            listeners,
            tx,
            rx,
            transport: None,
            transport_generation: 0,
            conns: BTreeMap::new(),
            next_conn: 0,
            out_buf: vec![0; 65_536],
            deadline: None,
            down: None,
            tap: None,
            on_event: Box::new(|_| {}),
            watch: Arc::default(),
        })
    }

    /// A handle that opens streams through the tunnel, served by the front end of
    /// `listener`: the SOCKS5 front end [`crate::connector::add_internal_listener`] added to
    /// the client's configuration.
    pub fn connector(&self, listener: ListenerId) -> Connector {
        Connector {
            listener,
            tx: self.tx.clone(),
            watch: self.watch.clone(),
            credentials: None,
            timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// Calls `on_event` for every [`Event`] the machine reports.
    pub fn on_event(&mut self, on_event: impl FnMut(&Event) + Send + 'static) {
        self.on_event = Box::new(on_event);
    }

    /// Records every input and every transmit through `tap`.
    pub fn record(&mut self, tap: Box<dyn Tap + Send>) {
        self.tap = Some(tap);
    }

    /// A handle that stops the driver gracefully.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.tx.clone())
    }

    /// The machine, for inspection after [`SmolDriver::run`] returns.
    pub fn machine(&self) -> &D {
        &self.machine
    }

    /// Runs until the machine reports [`Event::Down`], and returns why.
    ///
    /// # Errors
    ///
    /// Fails only if the driver's own channel breaks; socket errors become inputs.
    pub async fn run(&mut self) -> io::Result<Failure> {
        let _acceptors: Vec<Task<()>> = self
            .listeners
            .iter()
            .enumerate()
            .map(|(index, listener)| {
                smol::spawn(accept_loop(
                    ListenerId(index as u32),
                    listener.clone(),
                    self.tx.clone(),
                ))
            })
            .collect();
        // Open the transport before the first drain: the machine's first output is usually its
        // first packet to the server, and dropping it would cost a retransmission timeout.
        self.sync_transport();
        self.drain();
        loop {
            if let Some(failure) = self.down.take() {
                return Ok(failure);
            }
            self.sync_transport();
            let message = match self.deadline {
                Some(deadline) => {
                    let wait = self.clock.until(deadline);
                    let timer = async {
                        Timer::after(wait).await;
                        None
                    };
                    async { self.rx.recv().await.ok() }.or(timer).await
                }
                None => self.rx.recv().await.ok(),
            };
            if let Some(message) = message {
                self.handle_message(message);
            }
            // Compare the clock with the deadline rather than trusting the timer.
            if self.deadline.is_some_and(|d| self.clock.now() >= d) {
                self.feed(Input::Timeout {
                    now: self.clock.now(),
                });
            }
        }
    }

    fn handle_message(&mut self, message: Message) {
        let current = self
            .transport
            .as_ref()
            .map(|(_, generation, ..)| *generation);
        match message {
            Message::Stop => self.feed(Input::Close {
                now: self.clock.now(),
            }),
            Message::TransportConnected(generation, local) if Some(generation) == current => {
                if let (Some(tap), Some(local), Some((spec, ..))) =
                    (&mut self.tap, local, &self.transport)
                {
                    tap.transport_opened(*spec, local);
                }
                self.feed(Input::Transport {
                    now: self.clock.now(),
                    event: TransportEvent::Connected,
                });
            }
            Message::TransportData(generation, bytes) if Some(generation) == current => {
                self.feed(Input::Transport {
                    now: self.clock.now(),
                    event: TransportEvent::Data(&bytes),
                });
                self.pool.give(bytes);
            }
            Message::TransportClosed(generation) if Some(generation) == current => {
                self.transport = None;
                self.feed(Input::Transport {
                    now: self.clock.now(),
                    event: TransportEvent::Closed,
                });
            }
            Message::TransportData(_, bytes) => self.pool.give(bytes),
            Message::TransportConnected(..) | Message::TransportClosed(_) => {}
            Message::Accepted(listener, stream) => self.accept(listener, stream),
            Message::LocalData(conn, bytes) => {
                self.feed(Input::Local {
                    now: self.clock.now(),
                    conn,
                    event: LocalEvent::Data(&bytes),
                });
                self.pool.give(bytes);
            }
            Message::LocalEof(conn) => {
                self.feed(Input::Local {
                    now: self.clock.now(),
                    conn,
                    event: LocalEvent::ReadClosed,
                });
            }
            Message::LocalReset(conn) => {
                if self.conns.remove(&conn).is_some() {
                    self.feed(Input::Local {
                        now: self.clock.now(),
                        conn,
                        event: LocalEvent::Reset,
                    });
                }
            }
            Message::LocalFlushed(conn) => {
                let Some(state) = self.conns.get_mut(&conn) else {
                    return;
                };
                state.queued = 0;
                if state.blocked {
                    state.blocked = false;
                    self.feed(Input::Local {
                        now: self.clock.now(),
                        conn,
                        event: LocalEvent::Writable,
                    });
                }
            }
        }
    }

    fn accept(&mut self, listener: ListenerId, stream: LocalStream) {
        match stream {
            LocalStream::Tcp(stream) => {
                let _ = stream.get_ref().set_nodelay(true);
                self.adopt(listener, stream);
            }
            LocalStream::Unix(stream) => self.adopt(listener, stream),
        }
    }

    /// Starts the reader and writer tasks of a new local connection and tells the machine.
    fn adopt<S: LocalSocket>(&mut self, listener: ListenerId, stream: Async<S>)
    where
        for<'a> &'a Async<S>: AsyncRead + AsyncWrite + Unpin,
    {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        let stream = Arc::new(stream);
        let paused = Arc::new(AtomicBool::new(false));
        let (resume_tx, resume_rx) = unbounded();
        let (write_tx, write_rx) = unbounded();
        let reader = smol::spawn(read_local(
            self.pool.clone(),
            id,
            stream.clone(),
            paused.clone(),
            resume_rx,
            self.tx.clone(),
        ));
        let writer = smol::spawn(write_local(
            self.pool.clone(),
            id,
            stream,
            write_rx,
            self.tx.clone(),
        ));
        self.conns.insert(
            id,
            LocalConn {
                writer: write_tx,
                queued: 0,
                blocked: false,
                paused,
                resume: resume_tx,
                _reader: reader,
                _writer: writer,
            },
        );
        self.feed(Input::Local {
            now: self.clock.now(),
            conn: id,
            event: LocalEvent::Accepted { listener },
        });
    }

    /// Applies one input, then drains the machine (the sans-IO rule).
    fn feed(&mut self, input: Input<'_>) {
        if let Some(tap) = &mut self.tap {
            tap.input(&input);
        }
        if let Err(e) = self.machine.handle_input(input) {
            tracing::debug!("input refused: {e}");
        }
        self.drain();
    }

    fn drain(&mut self) {
        let now = self.clock.now();
        let mut newly_blocked = Vec::new();
        self.deadline = loop {
            match self.machine.poll_output(&mut self.out_buf) {
                Output::Transmit(bytes) => {
                    if let Some(tap) = &mut self.tap {
                        tap.transmit(now, bytes);
                    }
                    match &self.transport {
                        Some((_, _, Writer::Udp(socket), _)) => {
                            // A full socket buffer drops the datagram; the protocols retransmit.
                            if let Err(e) = socket.get_ref().send(bytes) {
                                tracing::debug!("datagram dropped: {e}");
                            }
                        }
                        Some((_, _, Writer::Tcp(tx), _)) => {
                            let _ = tx.try_send(self.pool.copy_of(bytes));
                        }
                        None => tracing::debug!("transmit without a transport dropped"),
                    }
                }
                Output::Local { conn, action } => {
                    let Some(state) = self.conns.get_mut(&conn) else {
                        continue;
                    };
                    match action {
                        LocalAction::Write(bytes) => {
                            state.queued += bytes.len();
                            let _ = state
                                .writer
                                .try_send(WriteCommand::Data(self.pool.copy_of(bytes)));
                            if state.queued > LOCAL_WRITE_HIGH_WATER && !state.blocked {
                                state.blocked = true;
                                newly_blocked.push(conn);
                            }
                        }
                        LocalAction::PauseReading => state.paused.store(true, Ordering::SeqCst),
                        LocalAction::ResumeReading => {
                            state.paused.store(false, Ordering::SeqCst);
                            let _ = state.resume.try_send(());
                        }
                        LocalAction::Shutdown => {
                            let _ = state.writer.try_send(WriteCommand::Shutdown);
                        }
                        LocalAction::Close => {
                            let _ = state.writer.try_send(WriteCommand::Close);
                            if let Some(state) = self.conns.remove(&conn) {
                                // The writer task finishes the close; the reader ends with it.
                                state._writer.detach();
                            }
                        }
                    }
                }
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
        for conn in newly_blocked {
            self.feed(Input::Local {
                now: self.clock.now(),
                conn,
                event: LocalEvent::WriteBlocked,
            });
        }
    }

    fn sync_transport(&mut self) {
        let wanted = self.machine.transport();
        if self.transport.as_ref().map(|(spec, ..)| *spec) == wanted {
            return;
        }
        self.transport = None;
        let Some(spec) = wanted else { return };
        self.transport_generation += 1;
        let generation = self.transport_generation;
        match spec.kind {
            TransportKind::Udp => match open_udp(spec.remote) {
                Ok(socket) => {
                    if let (Some(tap), Ok(local)) = (&mut self.tap, socket.get_ref().local_addr()) {
                        tap.transport_opened(spec, local);
                    }
                    let socket = Arc::new(socket);
                    let task = smol::spawn(read_udp(
                        self.pool.clone(),
                        generation,
                        socket.clone(),
                        self.tx.clone(),
                    ));
                    self.transport = Some((spec, generation, Writer::Udp(socket), task));
                }
                Err(e) => {
                    tracing::warn!("cannot open transport to {}: {e}", spec.remote);
                    self.feed(Input::Transport {
                        now: self.clock.now(),
                        event: TransportEvent::Closed,
                    });
                }
            },
            TransportKind::TcpLengthPrefixed => {
                let (write_tx, write_rx) = unbounded();
                let task = smol::spawn(run_tcp(
                    self.pool.clone(),
                    generation,
                    spec.remote,
                    write_rx,
                    self.tx.clone(),
                ));
                self.transport = Some((spec, generation, Writer::Tcp(write_tx), task));
            }
        }
    }
}

fn open_udp(remote: SocketAddr) -> io::Result<Async<UdpSocket>> {
    let local: SocketAddr = if remote.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(remote)?;
    Async::new(socket)
}

async fn accept_loop(
    listener_id: ListenerId,
    listener: Arc<Async<TcpListener>>,
    tx: Sender<Message>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                if tx
                    .send(Message::Accepted(listener_id, LocalStream::Tcp(stream)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                Timer::after(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn read_udp(
    pool: BufferPool,
    generation: u64,
    socket: Arc<Async<UdpSocket>>,
    tx: Sender<Message>,
) {
    let mut buf = vec![0u8; TRANSPORT_READ_CHUNK];
    loop {
        match socket.recv(&mut buf).await {
            Ok(n) => {
                let data = pool.copy_of(buf.get(..n).unwrap_or_default());
                if tx
                    .send(Message::TransportData(generation, data))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // ICMP errors on a connected UDP socket are transient; keep reading.
            Err(e) => tracing::debug!("transport read error: {e}"),
        }
    }
}

async fn run_tcp(
    pool: BufferPool,
    generation: u64,
    remote: SocketAddr,
    writes: Receiver<Vec<u8>>,
    tx: Sender<Message>,
) {
    let stream = match Async::<TcpStream>::connect(remote).await {
        Ok(stream) => Arc::new(stream),
        Err(e) => {
            tracing::warn!("cannot connect to {remote}: {e}");
            let _ = tx.send(Message::TransportClosed(generation)).await;
            return;
        }
    };
    let _ = stream.get_ref().set_nodelay(true);
    let local = stream.get_ref().local_addr().ok();
    let _ = tx
        .send(Message::TransportConnected(generation, local))
        .await;
    let writer = {
        let stream = stream.clone();
        let pool = pool.clone();
        async move {
            let mut stream = &*stream;
            while let Ok(bytes) = writes.recv().await {
                let written = stream.write_all(&bytes).await;
                pool.give(bytes);
                if written.is_err() {
                    break;
                }
            }
        }
    };
    let reader = {
        let tx = tx.clone();
        async move {
            let mut stream = &*stream;
            let mut buf = vec![0u8; TRANSPORT_READ_CHUNK];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let data = pool.copy_of(buf.get(..n).unwrap_or_default());
                        if tx
                            .send(Message::TransportData(generation, data))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        }
    };
    reader.or(writer).await;
    let _ = tx.send(Message::TransportClosed(generation)).await;
}

async fn read_local<S: LocalSocket>(
    pool: BufferPool,
    id: ConnId,
    stream: Arc<Async<S>>,
    paused: Arc<AtomicBool>,
    resume: Receiver<()>,
    tx: Sender<Message>,
) where
    for<'a> &'a Async<S>: AsyncRead + Unpin,
{
    let mut buf = vec![0u8; LOCAL_READ_CHUNK];
    let mut stream = &*stream;
    loop {
        while paused.load(Ordering::SeqCst) {
            if resume.recv().await.is_err() {
                return;
            }
        }
        let message = match stream.read(&mut buf).await {
            Ok(0) => Message::LocalEof(id),
            Ok(n) => Message::LocalData(id, pool.copy_of(buf.get(..n).unwrap_or_default())),
            Err(_) => Message::LocalReset(id),
        };
        let done = !matches!(message, Message::LocalData(..));
        if tx.send(message).await.is_err() || done {
            return;
        }
    }
}

async fn write_local<S: LocalSocket>(
    pool: BufferPool,
    id: ConnId,
    stream: Arc<Async<S>>,
    commands: Receiver<WriteCommand>,
    tx: Sender<Message>,
) where
    for<'a> &'a Async<S>: AsyncWrite + Unpin,
{
    let mut stream_ref = &*stream;
    while let Ok(command) = commands.recv().await {
        match command {
            WriteCommand::Data(bytes) => {
                let written = stream_ref.write_all(&bytes).await;
                pool.give(bytes);
                if written.is_err() {
                    let _ = tx.send(Message::LocalReset(id)).await;
                    return;
                }
                if commands.is_empty() && tx.send(Message::LocalFlushed(id)).await.is_err() {
                    return;
                }
            }
            WriteCommand::Shutdown => {
                let _ = stream.get_ref().shutdown(Shutdown::Write);
            }
            WriteCommand::Close => {
                let _ = stream.get_ref().shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_reuses_buffers_and_stays_bounded() {
        let pool = BufferPool::default();
        let first = pool.copy_of(&[1; 1500]);
        let address = first.as_ptr();
        pool.give(first);
        let again = pool.copy_of(&[2; 100]);
        assert_eq!(
            again.as_ptr(),
            address,
            "an idle buffer is reused, not reallocated"
        );
        assert_eq!(again, [2; 100]);
        for _ in 0..BufferPool::MAX_IDLE * 2 {
            pool.give(Vec::with_capacity(16));
        }
        assert_eq!(pool.0.lock().unwrap().len(), BufferPool::MAX_IDLE);
    }
}
