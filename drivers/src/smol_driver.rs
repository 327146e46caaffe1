//! The smol driver: one task owns the machine and reads the UDP transport itself; small tasks
//! read the other sockets and feed it through a channel.
//!
//! Each input still goes to the machine one at a time, followed by a full drain, exactly as
//! under the mio driver; only the waiting is async. Datagrams are read in batches straight
//! into the machine, one drain per batch, as under mio: the hot path has no task, no channel
//! and no copy.
//!
//! The socket tasks run on the driver's own executor, inside [`SmolDriver::run`] and so on the
//! thread that polls it: a message from a socket task reaches the machine without waking
//! another thread. They make progress only while `run` is polled, and the loop gives them
//! their turn whenever it would otherwise go round without waiting. When `run` returns,
//! every socket task is dropped, and with it every socket.
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

use erebus_sansio::Driven;
use erebus_sansio::io::{ConnId, Event, ListenerId, TransportError};
use erebus_sansio::tunnel::{Failure, TransportKind, TransportSpec};
use smol::channel::{Receiver, Sender, unbounded};
use smol::future::{self, FutureExt};
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smol::{Async, Executor, Task, Timer};

use crate::clock::Clock;
use crate::connector::{Credentials, DEFAULT_CONNECT_TIMEOUT, Handshake, SessionWatch};
use crate::datagrams;
use crate::pump::{
    Io, LocalReadBuffer, Pump, Unwritten, literal, resolve, size_udp_buffers, transport_error,
    unspecified_for,
};
use crate::record::Tap;

/// Bytes read from a local connection at a time.
const LOCAL_READ_CHUNK: usize = 64 * 1024;
/// Largest outer packet or stream chunk read from the transport.
const TRANSPORT_READ_CHUNK: usize = 65_536;
/// Datagrams (or stream chunks) from the transport handed to the machine before one drain.
const TRANSPORT_BATCH: usize = 64;
/// Bytes the TCP transport's writer gathers from its queue into one write, at most.
const TRANSPORT_WRITE_GATHER: usize = 256 * 1024;
/// How long a closed connection may take to receive what was written to it before it is
/// dropped anyway (a client that stopped reading must not keep its socket and its task).
const CLOSE_LINGER: Duration = Duration::from_secs(10);

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
    /// A UDP transport is open: its socket, the server's address and ours. The driver reads
    /// it from then on.
    UdpOpened(u64, Async<UdpSocket>, SocketAddr, SocketAddr),
    /// A TCP transport connected to the server's address from ours: its stream, which the
    /// driver reads from then on (its task writes it).
    TcpConnected(u64, SocketAddr, SocketAddr, Arc<Async<TcpStream>>),
    TransportClosed(u64, TransportError),
    Accepted(ListenerId, LocalStream),
    LocalData(ConnId, Vec<u8>),
    LocalEof(ConnId),
    LocalReset(ConnId),
    /// The writer task wrote this many bytes since its last report, and has nothing left.
    LocalWritten(ConnId, usize),
}

/// A local connection's socket: accepted from a listener, or handed over by a [`Connector`].
enum LocalStream {
    Tcp(Async<TcpStream>),
    Unix(Async<UnixStream>),
}

/// What the reader and writer tasks of a local connection need from its socket.
trait LocalSocket: Send + Sync + 'static {
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
    /// Writes what the socket takes now, without waiting (the socket is non-blocking).
    fn write_now(&self, bytes: &[u8]) -> io::Result<usize>;
}

impl LocalSocket for TcpStream {
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        Self::shutdown(self, how)
    }
    fn write_now(&self, bytes: &[u8]) -> io::Result<usize> {
        io::Write::write(&mut &*self, bytes)
    }
}

impl LocalSocket for UnixStream {
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        Self::shutdown(self, how)
    }
    fn write_now(&self, bytes: &[u8]) -> io::Result<usize> {
        io::Write::write(&mut &*self, bytes)
    }
}

/// A local socket written directly from the driver's loop while its writer task is idle.
trait DirectWrite: Send + Sync {
    fn write_now(&self, bytes: &[u8]) -> io::Result<usize>;
}

impl<S: LocalSocket> DirectWrite for Async<S> {
    fn write_now(&self, bytes: &[u8]) -> io::Result<usize> {
        self.get_ref().write_now(bytes)
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
                handshake.feed(answer).map_err(|e| self.watch.explain(e))?;
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
    /// Opening: nothing is sent before the transport connected.
    Opening,
    /// An open UDP transport, connected to the server's address.
    Udp(Async<UdpSocket>, SocketAddr),
    Tcp(TcpWriter),
}

/// The way to a TCP transport's writer task: the stream bytes of the current drain are kept
/// here and handed over as one buffer at its end ([`Io::flush_transport`]), so the task writes
/// a drain's packets with one system call, not one each.
struct TcpWriter {
    queue: Sender<Vec<u8>>,
    staged: Vec<u8>,
    /// Handed to the task and not yet written.
    unwritten: Unwritten,
}

impl TcpWriter {
    fn new(queue: Sender<Vec<u8>>, unwritten: Unwritten) -> Self {
        Self {
            queue,
            staged: Vec::new(),
            unwritten,
        }
    }

    /// Bytes kept here or in the task, not yet written.
    fn backlog(&self) -> usize {
        self.staged.len() + self.unwritten.get()
    }

    /// Keeps `bytes` for the end of the drain.
    fn stage(&mut self, pool: &BufferPool, bytes: &[u8]) {
        if self.staged.is_empty() {
            // A buffer from the pool, as the writer gives them back.
            self.staged = pool.copy_of(bytes);
        } else {
            self.staged.extend_from_slice(bytes);
        }
    }

    /// Hands what was kept to the writer task.
    fn flush(&mut self) {
        if !self.staged.is_empty() {
            let staged = std::mem::take(&mut self.staged);
            let len = staged.len();
            if self.queue.try_send(staged).is_ok() {
                self.unwritten.add(len);
            }
        }
    }
}

/// The transport socket the loop reads itself, if any.
enum Readable<'a> {
    Udp(&'a Async<UdpSocket>),
    Tcp(&'a Async<TcpStream>),
    /// Opening, or no transport.
    Nothing,
}

/// What ended a wait of the driver's loop.
enum Wake {
    Message(Message),
    /// The UDP transport has datagrams to read.
    Transport,
    /// The last read of the UDP transport stopped at a full batch: more datagrams may wait.
    Backlog,
    /// The machine's deadline came.
    Timer,
}

/// The transport of one attempt: how to send on it, and the task that opens it (and reads a
/// TCP transport).
struct TransportSlot {
    attempt: u64,
    writer: Writer,
    /// A connected TCP transport's stream and the server's address, read by the loop.
    tcp_reader: Option<(Arc<Async<TcpStream>>, SocketAddr)>,
    _task: Task<()>,
}

struct LocalConn {
    /// The writer task's queue. What it holds is bounded by the pump's high-water mark: once
    /// `queued` passes [`crate::pump::LOCAL_WRITE_HIGH_WATER`] the machine is told the
    /// connection is blocked and writes nothing more to it until every queued byte is written,
    /// so the queue holds at most the mark plus what one drain wrote (which the connection's
    /// buffers in the machine bound).
    writer: Sender<WriteCommand>,
    /// Bytes handed to the writer task and not yet reported written.
    queued: usize,
    /// The socket, for writes made at once while nothing is queued: most writes then cost no
    /// copy, no task wake-up and no memory kept behind a slow task.
    socket: Arc<dyn DirectWrite>,
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

/// The smol side of the sockets, behind the pump's [`Io`]: each socket has tasks that report
/// to the driver's channel.
struct SmolIo {
    /// Runs every socket task of this driver, inside [`SmolDriver::run`]: on the thread that
    /// runs the driver, so a message from a socket task reaches the machine without waking
    /// another thread (smol's global executor would run them on its own threads, a hop per
    /// datagram).
    executor: Arc<Executor<'static>>,
    /// Buffers that carry bytes between the socket tasks and the machine, reused so that no
    /// packet costs an allocation once the pool has warmed up.
    pool: BufferPool,
    tx: Sender<Message>,
    transport: Option<TransportSlot>,
    conns: BTreeMap<ConnId, LocalConn>,
    /// The writer tasks of connections the machine closed, finishing their writes and the
    /// close; kept (not detached) so that the end of [`SmolDriver::run`] can drop them.
    closing: Vec<Task<()>>,
}

/// Runs a [`Driven`] machine on smol.
pub struct SmolDriver<D> {
    pump: Pump<D>,
    io: SmolIo,
    listeners: Vec<Arc<Async<TcpListener>>>,
    rx: Receiver<Message>,
    next_conn: u64,
    /// Where chunks of a TCP transport's stream are read into.
    read_buf: Vec<u8>,
    /// The last read of the transport stopped at a full batch.
    transport_backlog: bool,
}

/// Buffers handed between tasks and given back after use. Bounded in number and in the
/// capacity it keeps (a buffer grows to the largest copy it carried), so that a burst does not
/// keep memory for ever.
#[derive(Clone, Default)]
struct BufferPool(Arc<std::sync::Mutex<IdleBuffers>>);

#[derive(Default)]
struct IdleBuffers {
    buffers: Vec<Vec<u8>>,
    /// The summed capacity of `buffers`.
    bytes: usize,
}

impl BufferPool {
    /// At most this many idle buffers are kept.
    const MAX_IDLE: usize = 64;
    /// At most this much capacity is kept over all idle buffers: a few dozen local reads and
    /// writes or TCP transport chunks.
    const MAX_IDLE_BYTES: usize = 1 << 20;
    /// A buffer with more capacity than this is freed, not kept.
    const MAX_KEPT: usize = 64 * 1024;

    /// A buffer holding a copy of `data`, reused from the pool when one is idle.
    fn copy_of(&self, data: &[u8]) -> Vec<u8> {
        let reused = self.0.lock().ok().and_then(|mut idle| {
            let buf = idle.buffers.pop()?;
            idle.bytes -= buf.capacity();
            Some(buf)
        });
        let mut buf = reused.unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(data);
        buf
    }

    /// Returns a buffer for reuse; it is freed when the pool is full or it is too large.
    fn give(&self, buf: Vec<u8>) {
        let capacity = buf.capacity();
        if capacity > Self::MAX_KEPT {
            return;
        }
        if let Ok(mut idle) = self.0.lock()
            && idle.buffers.len() < Self::MAX_IDLE
            && idle.bytes + capacity <= Self::MAX_IDLE_BYTES
        {
            idle.bytes += capacity;
            idle.buffers.push(buf);
        }
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
            pump: Pump::new(machine, clock),
            io: SmolIo {
                executor: Arc::new(Executor::new()),
                pool: BufferPool::default(),
                tx,
                transport: None,
                conns: BTreeMap::new(),
                closing: Vec::new(),
            },
            listeners,
            rx,
            next_conn: 0,
            read_buf: vec![0; TRANSPORT_READ_CHUNK],
            transport_backlog: false,
        })
    }

    /// A handle that opens streams through the tunnel, served by the front end of
    /// `listener`: the SOCKS5 front end [`crate::connector::add_internal_listener`] added to
    /// the client's configuration.
    pub fn connector(&self, listener: ListenerId) -> Connector {
        Connector {
            listener,
            tx: self.io.tx.clone(),
            watch: self.pump.watch().clone(),
            credentials: None,
            timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// Calls `on_event` for every [`Event`] the machine reports.
    pub fn on_event(&mut self, on_event: impl FnMut(&Event) + Send + 'static) {
        self.pump.on_event(on_event);
    }

    /// Records every input and every transmit through `tap`.
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

    /// A handle that stops the driver gracefully.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.io.tx.clone())
    }

    /// The machine, for inspection after [`SmolDriver::run`] returns.
    pub fn machine(&self) -> &D {
        self.pump.machine()
    }

    /// Runs until the machine reports [`Event::Down`], and returns why. The socket tasks run
    /// while this is polled; when it returns, they and their sockets are gone.
    ///
    /// # Errors
    ///
    /// Fails only if the driver's own channel breaks; socket errors become inputs.
    pub async fn run(&mut self) -> io::Result<Failure> {
        let executor = self.io.executor.clone();
        let outcome = executor.run(self.serve()).await;
        self.io.drop_sockets();
        outcome
    }

    /// The driver's loop, inside its executor.
    async fn serve(&mut self) -> io::Result<Failure> {
        let _acceptors: Vec<Task<()>> = self
            .listeners
            .iter()
            .enumerate()
            .map(|(index, listener)| {
                self.io.executor.spawn(accept_loop(
                    ListenerId(index as u32),
                    listener.clone(),
                    self.io.tx.clone(),
                ))
            })
            .collect();
        // The first drain opens the transport the machine starts with.
        self.pump.start(&mut self.io);
        loop {
            if let Some(failure) = self.pump.take_down() {
                return Ok(failure);
            }
            let transport = match self.io.transport.as_ref() {
                Some(TransportSlot {
                    writer: Writer::Udp(socket, _),
                    ..
                }) => Readable::Udp(socket),
                Some(TransportSlot {
                    tcp_reader: Some((stream, _)),
                    ..
                }) => Readable::Tcp(stream),
                _ => Readable::Nothing,
            };
            let wait = self
                .pump
                .deadline()
                .map(|deadline| self.pump.clock().until(deadline));
            match wait_for(&self.rx, transport, wait, self.transport_backlog).await {
                Wake::Message(message) => self.take_messages(message),
                Wake::Transport => self.read_transport(),
                Wake::Backlog => {
                    // What the socket tasks sent during their turn first, so that a busy
                    // transport cannot hold them off; then the datagrams that wait.
                    for _ in 0..self.rx.len() {
                        let Ok(message) = self.rx.try_recv() else {
                            break;
                        };
                        self.handle_message(message);
                    }
                    self.read_transport();
                }
                Wake::Timer => {}
            }
            self.pump.check_deadline(&mut self.io);
        }
    }

    /// Handles `first`, then drains the machine.
    fn take_messages(&mut self, first: Message) {
        self.handle_message(first);
        self.pump.end_batch(&mut self.io);
    }

    /// Reads what the transport has into the machine, then drains it once.
    fn read_transport(&mut self) {
        match self.io.transport.as_ref() {
            Some(TransportSlot {
                tcp_reader: Some(_),
                ..
            }) => self.read_tcp(),
            _ => self.read_udp(),
        }
    }

    /// Reads up to [`TRANSPORT_BATCH`] chunks of the TCP transport's stream straight into the
    /// machine, then drains it once.
    fn read_tcp(&mut self) {
        let Self {
            pump,
            io,
            read_buf,
            transport_backlog,
            ..
        } = self;
        *transport_backlog = false;
        let mut closed = None;
        if let Some(TransportSlot {
            attempt,
            tcp_reader: Some((stream, remote)),
            ..
        }) = &io.transport
        {
            let attempt = *attempt;
            for taken in 1..=TRANSPORT_BATCH {
                match io::Read::read(&mut stream.get_ref(), read_buf) {
                    Ok(0) => {
                        closed = Some((attempt, TransportError::Closed));
                        break;
                    }
                    Ok(n) => {
                        let chunk = read_buf.get(..n).unwrap_or_default();
                        pump.batch_transport_data(attempt, *remote, chunk);
                        *transport_backlog = taken == TRANSPORT_BATCH;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        closed = Some((attempt, transport_error(&e)));
                        break;
                    }
                }
            }
        }
        pump.end_batch(io);
        if let Some((attempt, error)) = closed {
            // Dropping the slot cancels the writer task and closes the stream.
            io.transport = None;
            *transport_backlog = false;
            pump.transport_closed(io, attempt, error);
        }
    }

    /// Reads up to [`TRANSPORT_BATCH`] datagrams from the UDP transport straight into the
    /// machine, then drains it once.
    fn read_udp(&mut self) {
        let Self {
            pump,
            io,
            transport_backlog,
            ..
        } = self;
        *transport_backlog = false;
        if let Some(TransportSlot {
            attempt,
            writer: Writer::Udp(socket, remote),
            ..
        }) = &io.transport
        {
            let mut taken = 0;
            while taken < TRANSPORT_BATCH {
                let read = datagrams::recv_batch(socket.get_ref(), |datagram| {
                    pump.batch_transport_data(*attempt, *remote, datagram);
                });
                match read {
                    Ok(count) => {
                        taken += count.max(1);
                        *transport_backlog = taken >= TRANSPORT_BATCH;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => taken += 1,
                    Err(e) => {
                        // ICMP errors on a connected UDP socket are spoofable and transient:
                        // server-poll-timeout or ping-restart decide, not them.
                        tracing::debug!("transport read error: {e}");
                        break;
                    }
                }
            }
        }
        pump.end_batch(io);
    }

    fn handle_message(&mut self, message: Message) {
        let (pump, io) = (&mut self.pump, &mut self.io);
        match message {
            Message::Stop => pump.stop(io),
            Message::UdpOpened(attempt, socket, remote, local) => {
                match &mut io.transport {
                    Some(slot) if slot.attempt == attempt => {
                        slot.writer = Writer::Udp(socket, remote);
                    }
                    _ => return,
                }
                pump.transport_connected(io, attempt, remote, local);
            }
            Message::TcpConnected(attempt, remote, local, stream) => {
                match &mut io.transport {
                    Some(slot) if slot.attempt == attempt => {
                        slot.tcp_reader = Some((stream, remote));
                    }
                    _ => return,
                }
                pump.transport_connected(io, attempt, remote, local);
            }
            Message::TransportClosed(attempt, error) => {
                if io.transport.as_ref().is_some_and(|t| t.attempt == attempt) {
                    io.transport = None;
                }
                pump.transport_closed(io, attempt, error);
            }
            Message::Accepted(listener, stream) => self.accept(listener, stream),
            Message::LocalData(conn, bytes) => {
                pump.local_data(io, conn, &bytes);
                io.pool.give(bytes);
            }
            Message::LocalEof(conn) => pump.local_eof(io, conn),
            Message::LocalReset(conn) => {
                if io.conns.remove(&conn).is_some() {
                    pump.local_reset(io, conn);
                }
            }
            Message::LocalWritten(conn, written) => {
                let Some(state) = io.conns.get_mut(&conn) else {
                    return;
                };
                // Writes queued after the writer found its queue empty are still to come.
                state.queued = state.queued.saturating_sub(written);
                if state.queued == 0 {
                    pump.local_flushed(io, conn);
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
        let reader = self.io.executor.spawn(read_local(
            self.io.pool.clone(),
            id,
            stream.clone(),
            paused.clone(),
            resume_rx,
            self.io.tx.clone(),
        ));
        let writer = self.io.executor.spawn(write_local(
            self.io.pool.clone(),
            id,
            stream.clone(),
            write_rx,
            self.io.tx.clone(),
        ));
        self.io.conns.insert(
            id,
            LocalConn {
                writer: write_tx,
                queued: 0,
                socket: stream,
                paused,
                resume: resume_tx,
                _reader: reader,
                _writer: writer,
            },
        );
        self.pump.accepted(&mut self.io, id, listener);
    }
}

impl Io for SmolIo {
    fn transmit(&mut self, _to: SocketAddr, bytes: &[u8]) {
        // The socket is connected to the one server the machine talks to.
        match self.transport.as_mut().map(|t| &mut t.writer) {
            Some(Writer::Udp(socket, _)) => {
                // A full socket buffer drops the datagram; the protocols retransmit.
                if let Err(e) = socket.get_ref().send(bytes) {
                    tracing::debug!("datagram dropped: {e}");
                }
            }
            Some(Writer::Tcp(writer)) => writer.stage(&self.pool, bytes),
            Some(Writer::Opening) | None => {
                tracing::debug!("transmit without a transport dropped");
            }
        }
    }

    fn flush_transport(&mut self) {
        if let Some(Writer::Tcp(writer)) = self.transport.as_mut().map(|t| &mut t.writer) {
            writer.flush();
        }
    }

    fn transport_backlog(&self) -> usize {
        match self.transport.as_ref().map(|t| &t.writer) {
            Some(Writer::Tcp(writer)) => writer.backlog(),
            _ => 0,
        }
    }

    fn open_transport(&mut self, spec: &TransportSpec) {
        self.close_transport();
        let attempt = spec.attempt;
        let (host, port) = (spec.host.clone(), spec.port);
        let (pool, tx) = (self.pool.clone(), self.tx.clone());
        let (writer, task) = match spec.kind {
            TransportKind::Udp => (
                Writer::Opening,
                self.executor.spawn(open_udp(attempt, host, port, tx)),
            ),
            TransportKind::TcpLengthPrefixed => {
                // Bytes written before the stream connects wait in the channel.
                let (write_tx, write_rx) = unbounded();
                let unwritten = Unwritten::default();
                (
                    Writer::Tcp(TcpWriter::new(write_tx, unwritten.clone())),
                    self.executor.spawn(run_tcp(
                        pool,
                        attempt,
                        host,
                        port,
                        (write_rx, unwritten),
                        tx,
                    )),
                )
            }
        };
        self.transport = Some(TransportSlot {
            attempt,
            writer,
            tcp_reader: None,
            _task: task,
        });
    }

    fn close_transport(&mut self) {
        // Dropping the task cancels it and closes its socket.
        self.transport = None;
    }

    fn write_local(&mut self, conn: ConnId, bytes: &[u8]) -> usize {
        let Some(state) = self.conns.get_mut(&conn) else {
            return 0;
        };
        let mut bytes = bytes;
        if state.queued == 0 {
            // Nothing waits in the writer task (all it was handed was reported written), so
            // writing here keeps the order. An error is left for the task to meet and report.
            if let Ok(written) = state.socket.write_now(bytes) {
                bytes = bytes.get(written..).unwrap_or_default();
            }
            if bytes.is_empty() {
                return 0;
            }
        }
        state.queued += bytes.len();
        let _ = state
            .writer
            .try_send(WriteCommand::Data(self.pool.copy_of(bytes)));
        state.queued
    }

    fn pause_local(&mut self, conn: ConnId, paused: bool) {
        if let Some(state) = self.conns.get_mut(&conn) {
            state.paused.store(paused, Ordering::SeqCst);
            if !paused {
                let _ = state.resume.try_send(());
            }
        }
    }

    fn shutdown_local(&mut self, conn: ConnId) {
        if let Some(state) = self.conns.get_mut(&conn) {
            let _ = state.writer.try_send(WriteCommand::Shutdown);
        }
    }

    fn close_local(&mut self, conn: ConnId) {
        if let Some(state) = self.conns.remove(&conn) {
            let _ = state.writer.try_send(WriteCommand::Close);
            // The writer task finishes the close, within the linger; the reader ended with
            // the connection's entry (dropping a task cancels it).
            let writer = state._writer;
            let linger = async {
                Timer::after(CLOSE_LINGER).await;
            };
            self.closing.retain(|task| !task.is_finished());
            self.closing
                .push(self.executor.spawn(async move { writer.or(linger).await }));
        }
    }
}

impl SmolIo {
    /// Drops every socket task, and runs the executor until each has dropped its future (a
    /// dropped task is only cancelled; its future, which owns the socket, goes on the
    /// executor's next turn, and there is none after [`SmolDriver::run`]).
    fn drop_sockets(&mut self) {
        self.transport = None;
        self.conns.clear();
        self.closing.clear();
        while self.executor.try_tick() {}
    }
}

/// Waits for what comes first: a message from a socket task on `rx`, datagrams on the UDP
/// transport `udp`, or the machine's deadline, `wait` from now; after a read that stopped at a
/// full batch (`backlog`), only for the socket tasks' turn.
///
/// The socket tasks run on this thread while it waits, and it always waits a little: when
/// datagrams or the deadline are already there, the socket tasks have their turn first,
/// however busy the transport or however often the machine is due at once.
async fn wait_for(
    rx: &Receiver<Message>,
    transport: Readable<'_>,
    wait: Option<Duration>,
    backlog: bool,
) -> Wake {
    if backlog {
        future::yield_now().await;
        return Wake::Backlog;
    }
    let message = async { rx.recv().await.map_or(Wake::Timer, Wake::Message) };
    let readable = async {
        // An error shows up again when the socket is read.
        let _ = match transport {
            Readable::Udp(socket) => socket.readable().await,
            Readable::Tcp(stream) => stream.readable().await,
            Readable::Nothing => future::pending().await,
        };
        Wake::Transport
    };
    let timer = async {
        match wait {
            None => future::pending().await,
            Some(wait) if wait.is_zero() => future::yield_now().await,
            Some(wait) => {
                Timer::after(wait).await;
            }
        }
        Wake::Timer
    };
    message.or(readable).or(timer).await
}

/// The server's address for a transport task: an address literal at once, a name through the
/// system resolver on a blocking thread.
async fn resolve_async(host: String, port: u16) -> Result<SocketAddr, TransportError> {
    match literal(&host, port) {
        Some(addr) => Ok(addr),
        None => smol::unblock(move || resolve(&host, port)).await,
    }
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

/// Opens a UDP transport and hands it to the driver, which reads it.
async fn open_udp(attempt: u64, host: String, port: u16, tx: Sender<Message>) {
    let remote = match resolve_async(host, port).await {
        Ok(remote) => remote,
        Err(error) => {
            let _ = tx.send(Message::TransportClosed(attempt, error)).await;
            return;
        }
    };
    let opened = UdpSocket::bind(unspecified_for(remote))
        .inspect(size_udp_buffers)
        .and_then(|socket| socket.connect(remote).map(|()| socket))
        .and_then(|socket| Ok((socket.local_addr()?, Async::new(socket)?)));
    let message = match opened {
        Ok((local, socket)) => Message::UdpOpened(attempt, socket, remote, local),
        Err(e) => Message::TransportClosed(attempt, transport_error(&e)),
    };
    let _ = tx.send(message).await;
}

/// Connects a TCP transport, then writes what the driver sends and reads what the server
/// sends, until either side ends or the driver drops this task.
async fn run_tcp(
    pool: BufferPool,
    attempt: u64,
    host: String,
    port: u16,
    (writes, unwritten): (Receiver<Vec<u8>>, Unwritten),
    tx: Sender<Message>,
) {
    let connected = match resolve_async(host, port).await {
        Ok(remote) => Async::<TcpStream>::connect(remote)
            .await
            .map(|stream| (remote, stream))
            .map_err(|e| transport_error(&e)),
        Err(error) => Err(error),
    };
    let (remote, stream) = match connected {
        Ok((remote, stream)) => (remote, Arc::new(stream)),
        Err(error) => {
            let _ = tx.send(Message::TransportClosed(attempt, error)).await;
            return;
        }
    };
    let _ = stream.get_ref().set_nodelay(true);
    let local = stream
        .get_ref()
        .local_addr()
        .unwrap_or_else(|_| unspecified_for(remote));
    if tx
        .send(Message::TcpConnected(
            attempt,
            remote,
            local,
            stream.clone(),
        ))
        .await
        .is_err()
    {
        return;
    }
    // The driver's loop reads the stream; this task writes it.
    let writer = {
        async move {
            let mut stream = &*stream;
            while let Ok(mut bytes) = writes.recv().await {
                // What queued up while the last write waited goes out with this one.
                while bytes.len() < TRANSPORT_WRITE_GATHER {
                    let Ok(more) = writes.try_recv() else {
                        break;
                    };
                    bytes.extend_from_slice(&more);
                    pool.give(more);
                }
                let written = stream.write_all(&bytes).await;
                unwritten.written(bytes.len());
                pool.give(bytes);
                if let Err(e) = written {
                    return transport_error(&e);
                }
            }
            TransportError::Other
        }
    };
    let error = writer.await;
    let _ = tx.send(Message::TransportClosed(attempt, error)).await;
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
    let mut buf = LocalReadBuffer::new(LOCAL_READ_CHUNK);
    let mut stream = &*stream;
    loop {
        while paused.load(Ordering::SeqCst) {
            if resume.recv().await.is_err() {
                return;
            }
        }
        let message = match stream.read(buf.space()).await {
            Ok(0) => Message::LocalEof(id),
            Ok(n) => {
                let data = pool.copy_of(buf.filled(n));
                buf.after_read(n);
                Message::LocalData(id, data)
            }
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
    // Bytes written since the last report: reported once the queue is empty, so the driver
    // counts exactly what still waits, whatever was queued meanwhile.
    let mut written = 0;
    while let Ok(command) = commands.recv().await {
        match command {
            WriteCommand::Data(bytes) => {
                let result = stream_ref.write_all(&bytes).await;
                written += bytes.len();
                pool.give(bytes);
                if result.is_err() {
                    let _ = tx.send(Message::LocalReset(id)).await;
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
        if written > 0
            && commands.is_empty()
            && tx
                .send(Message::LocalWritten(id, std::mem::take(&mut written)))
                .await
                .is_err()
        {
            return;
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
        assert_eq!(pool.0.lock().unwrap().buffers.len(), BufferPool::MAX_IDLE);
    }

    /// The writer reports every byte it wrote, once its queue is empty, so the driver's count
    /// of what waits is exact even with writes queued while it was writing.
    #[test]
    fn the_writer_reports_every_byte_it_wrote() {
        smol::block_on(async {
            let (ours, theirs) = Async::<UnixStream>::pair().unwrap();
            let (tx, rx) = unbounded();
            let (commands, queue) = unbounded();
            for len in [100, 2_000, 300_000] {
                commands.try_send(WriteCommand::Data(vec![1; len])).unwrap();
            }
            let writer = smol::spawn(write_local(
                BufferPool::default(),
                ConnId(1),
                Arc::new(theirs),
                queue,
                tx,
            ));
            let mut got = vec![0; 302_100];
            (&ours).read_exact(&mut got).await.unwrap();
            commands.try_send(WriteCommand::Data(vec![2; 50])).unwrap();
            let mut more = [0; 50];
            (&ours).read_exact(&mut more).await.unwrap();
            drop(commands);
            writer.await;
            let mut reported = 0;
            while let Ok(message) = rx.try_recv() {
                match message {
                    Message::LocalWritten(ConnId(1), n) => reported += n,
                    _ => panic!("unexpected message"),
                }
            }
            assert_eq!(reported, 302_150);
        });
    }

    #[test]
    fn pool_keeps_bounded_capacity() {
        let pool = BufferPool::default();
        pool.give(Vec::with_capacity(BufferPool::MAX_KEPT + 1));
        assert!(
            pool.0.lock().unwrap().buffers.is_empty(),
            "an oversized buffer is freed"
        );
        let chunk = BufferPool::MAX_KEPT;
        for _ in 0..BufferPool::MAX_IDLE {
            pool.give(Vec::with_capacity(chunk));
        }
        let kept = pool.0.lock().unwrap().buffers.len();
        assert_eq!(kept, BufferPool::MAX_IDLE_BYTES / chunk);
        let idle = pool.0.lock().unwrap();
        let capacity: usize = idle.buffers.iter().map(Vec::capacity).sum();
        assert_eq!(idle.bytes, capacity);
        assert!(capacity <= BufferPool::MAX_IDLE_BYTES);
    }

    #[test]
    fn pool_accounts_for_buffers_that_grew() {
        let pool = BufferPool::default();
        pool.give(Vec::with_capacity(16));
        let grown = pool.copy_of(&[7; 4096]);
        assert_eq!(pool.0.lock().unwrap().bytes, 0);
        let capacity = grown.capacity();
        pool.give(grown);
        assert_eq!(pool.0.lock().unwrap().bytes, capacity);
    }

    #[test]
    fn the_packets_of_one_drain_reach_the_tcp_writer_as_one_buffer() {
        let pool = BufferPool::default();
        let (queue, writes) = unbounded();
        let mut writer = TcpWriter::new(queue, Unwritten::default());
        for packet in [&b"\x00\x03one"[..], b"\x00\x03two", b"\x00\x05three"] {
            writer.stage(&pool, packet);
        }
        assert!(
            writes.is_empty(),
            "nothing goes to the writer before the drain ends"
        );
        writer.flush();
        assert_eq!(
            writes.try_recv().unwrap(),
            b"\x00\x03one\x00\x03two\x00\x05three"
        );
        assert!(writes.is_empty(), "one buffer for the whole drain");
        writer.flush();
        assert!(writes.is_empty(), "a drain without packets sends nothing");
    }
}
