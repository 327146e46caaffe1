//! The third event loop: plain blocking sockets and standard threads, no readiness API at all.
//!
//! It exists to show what porting erebus to another event loop takes: an [`Io`] for the
//! [`Pump`] and a loop that turns socket activity into pump calls. Every socket gets a thread
//! that blocks on it and sends what happened over one channel; the driver's thread owns the
//! machine, waits on that channel until the machine's deadline, and calls the pump. Nothing
//! here knows what the bytes mean.
//!
//! It is simpler and heavier than the mio and smol drivers (a thread per socket, a buffer per
//! message): fine for a handful of connections, and the shape to copy for an embedding whose
//! own loop is not one of those two.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use erebus_sansio::Driven;
use erebus_sansio::io::{ConnId, Event, ListenerId, TransportError};
use erebus_sansio::tunnel::{Failure, TransportKind, TransportSpec};

use crate::clock::Clock;
use crate::pump::{
    Io, LocalReadBuffer, Pump, Unwritten, resolve, size_udp_buffers, transport_error,
    unspecified_for,
};
use crate::record::Tap;

/// How often a blocked socket thread looks whether it should stop.
const STOP_CHECK: Duration = Duration::from_millis(100);
/// How long a write to a local connection may block before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Datagrams (or stream chunks) from the transport handed to the machine before one drain.
const TRANSPORT_BATCH: usize = 64;
/// Bytes the TCP transport's writer gathers from its queue into one write, at most.
const TRANSPORT_WRITE_GATHER: usize = 256 * 1024;

enum Message {
    Stop,
    UdpOpened(u64, UdpSocket, SocketAddr, SocketAddr),
    TcpConnected(u64, SocketAddr, SocketAddr),
    TransportData(u64, SocketAddr, Vec<u8>),
    TransportClosed(u64, TransportError),
    Accepted(ListenerId, TcpStream),
    LocalData(ConnId, Vec<u8>),
    LocalEof(ConnId),
    LocalReset(ConnId),
    LocalFlushed(ConnId),
}

/// Stops a running [`ThreadDriver`] gracefully, from any thread.
#[derive(Clone)]
pub struct StopHandle(Sender<Message>);

impl StopHandle {
    /// Asks the driver to close the session.
    pub fn stop(&self) {
        let _ = self.0.send(Message::Stop);
    }
}

enum TransportWriter {
    /// Opening: nothing is sent before the transport connected.
    Opening,
    Udp(UdpSocket),
    /// The writer thread's queue, and what it holds that is not yet written.
    Tcp(Sender<Vec<u8>>, Unwritten),
}

/// The transport of one attempt: how to send on it, and the flag that ends its threads.
struct Transport {
    attempt: u64,
    writer: TransportWriter,
    stop: Arc<AtomicBool>,
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

enum WriteCommand {
    Data(Vec<u8>),
    Shutdown,
    /// Write what came before, then close.
    Close,
}

/// A local connection: its socket (to close it), its writer thread's queue, and its reader's
/// pause switch.
struct Local {
    stream: TcpStream,
    writer: Sender<WriteCommand>,
    queued: usize,
    paused: Arc<(Mutex<bool>, Condvar)>,
}

struct ThreadIo {
    tx: Sender<Message>,
    transport: Option<Transport>,
    /// The stream bytes of the current drain, handed to the TCP transport's writer thread as
    /// one buffer at its end ([`Io::flush_transport`]).
    staged: Vec<u8>,
    conns: BTreeMap<ConnId, Local>,
}

/// Runs a [`Driven`] machine on blocking sockets and threads.
pub struct ThreadDriver<D> {
    pump: Pump<D>,
    io: ThreadIo,
    rx: Receiver<Message>,
    listeners: Vec<TcpListener>,
    next_conn: u64,
    stopping: Arc<AtomicBool>,
}

impl<D: Driven> ThreadDriver<D> {
    /// Wraps `machine`, serving the given listeners (their order gives the [`ListenerId`]s).
    pub fn new(machine: D, clock: Clock, listeners: Vec<TcpListener>) -> Self {
        let (tx, rx) = mpsc::channel();
        Self {
            pump: Pump::new(machine, clock),
            io: ThreadIo {
                tx,
                transport: None,
                staged: Vec::new(),
                conns: BTreeMap::new(),
            },
            rx,
            listeners,
            next_conn: 0,
            stopping: Arc::new(AtomicBool::new(false)),
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

    /// The machine, for inspection after [`ThreadDriver::run`] returns.
    pub fn machine(&self) -> &D {
        self.pump.machine()
    }

    /// Runs until the machine reports [`Event::Down`], and returns why.
    ///
    /// # Errors
    ///
    /// Fails when a listener cannot be watched; socket errors become inputs.
    pub fn run(&mut self) -> io::Result<Failure> {
        for (index, listener) in self.listeners.iter().enumerate() {
            let listener = listener.try_clone()?;
            listener.set_nonblocking(true)?;
            let (tx, stopping) = (self.io.tx.clone(), self.stopping.clone());
            let id = ListenerId(u32::try_from(index).unwrap_or(u32::MAX));
            std::thread::spawn(move || accept_loop(id, &listener, &tx, &stopping));
        }
        // The first drain opens the transport the machine starts with.
        self.pump.start(&mut self.io);
        let failure = loop {
            if let Some(failure) = self.pump.take_down() {
                break failure;
            }
            let message = match self.pump.deadline() {
                Some(deadline) => match self.rx.recv_timeout(self.pump.clock().until(deadline)) {
                    Ok(message) => Some(message),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break closed_channel(),
                },
                None => match self.rx.recv() {
                    Ok(message) => Some(message),
                    Err(_) => break closed_channel(),
                },
            };
            if let Some(message) = message {
                let mut batched = matches!(message, Message::TransportData(..));
                self.handle(message);
                // Take the datagrams already queued behind it, so that one drain (and one
                // acknowledgment) answers them all.
                let mut taken = 1;
                while batched && taken < TRANSPORT_BATCH {
                    let Ok(next) = self.rx.try_recv() else {
                        break;
                    };
                    batched = matches!(next, Message::TransportData(..));
                    self.handle(next);
                    taken += 1;
                }
                self.pump.end_batch(&mut self.io);
            }
            self.pump.check_deadline(&mut self.io);
        };
        self.stopping.store(true, Ordering::SeqCst);
        self.io.transport = None;
        for (_, conn) in std::mem::take(&mut self.io.conns) {
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
        Ok(failure)
    }

    fn handle(&mut self, message: Message) {
        let (pump, io) = (&mut self.pump, &mut self.io);
        match message {
            Message::Stop => pump.stop(io),
            Message::UdpOpened(attempt, socket, remote, local) => {
                match &mut io.transport {
                    Some(t) if t.attempt == attempt => t.writer = TransportWriter::Udp(socket),
                    _ => return,
                }
                pump.transport_connected(io, attempt, remote, local);
            }
            Message::TcpConnected(attempt, remote, local) => {
                pump.transport_connected(io, attempt, remote, local);
            }
            Message::TransportData(attempt, from, bytes) => {
                pump.batch_transport_data(attempt, from, &bytes);
            }
            Message::TransportClosed(attempt, error) => {
                if io.transport.as_ref().is_some_and(|t| t.attempt == attempt) {
                    io.transport = None;
                }
                pump.transport_closed(io, attempt, error);
            }
            Message::Accepted(listener, stream) => self.adopt(listener, stream),
            Message::LocalData(conn, bytes) => pump.local_data(io, conn, &bytes),
            Message::LocalEof(conn) => pump.local_eof(io, conn),
            Message::LocalReset(conn) => {
                if io.conns.remove(&conn).is_some() {
                    pump.local_reset(io, conn);
                }
            }
            Message::LocalFlushed(conn) => {
                if let Some(local) = io.conns.get_mut(&conn) {
                    local.queued = 0;
                    pump.local_flushed(io, conn);
                }
            }
        }
    }

    /// Starts the reader and writer threads of a new local connection and tells the machine.
    fn adopt(&mut self, listener: ListenerId, stream: TcpStream) {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        let _ = stream.set_nodelay(true);
        let clones = stream
            .try_clone()
            .and_then(|r| Ok((r, stream.try_clone()?)));
        let Ok((reader, writer)) = clones else {
            tracing::warn!("cannot use an accepted connection");
            return;
        };
        // A client that reads nothing does not hold its writer thread for ever.
        let _ = writer.set_write_timeout(Some(WRITE_TIMEOUT));
        let paused = Arc::new((Mutex::new(false), Condvar::new()));
        let (write_tx, write_rx) = mpsc::channel();
        let tx = self.io.tx.clone();
        let pause = paused.clone();
        std::thread::spawn(move || read_local(id, reader, &pause, &tx));
        let tx = self.io.tx.clone();
        std::thread::spawn(move || write_local(id, writer, &write_rx, &tx));
        self.io.conns.insert(
            id,
            Local {
                stream,
                writer: write_tx,
                queued: 0,
                paused,
            },
        );
        self.pump.accepted(&mut self.io, id, listener);
    }
}

fn closed_channel() -> Failure {
    Failure::new(
        erebus_sansio::tunnel::Fault::Closed,
        "the driver's channel closed",
    )
}

impl Io for ThreadIo {
    fn transmit(&mut self, _to: SocketAddr, bytes: &[u8]) {
        // The socket is connected to the one server the machine talks to.
        match self.transport.as_ref().map(|t| &t.writer) {
            Some(TransportWriter::Udp(socket)) => {
                if let Err(e) = socket.send(bytes) {
                    tracing::debug!("datagram dropped: {e}");
                }
            }
            // Sent to the writer at the end of the drain, with the drain's other packets.
            Some(TransportWriter::Tcp(..)) => self.staged.extend_from_slice(bytes),
            Some(TransportWriter::Opening) | None => {
                tracing::debug!("transmit without a transport dropped");
            }
        }
    }

    fn flush_transport(&mut self) {
        if self.staged.is_empty() {
            return;
        }
        let staged = std::mem::take(&mut self.staged);
        if let Some(TransportWriter::Tcp(writes, unwritten)) =
            self.transport.as_ref().map(|t| &t.writer)
        {
            let len = staged.len();
            if writes.send(staged).is_ok() {
                unwritten.add(len);
            }
        }
    }

    fn transport_backlog(&self) -> usize {
        match self.transport.as_ref().map(|t| &t.writer) {
            Some(TransportWriter::Tcp(_, unwritten)) => self.staged.len() + unwritten.get(),
            _ => 0,
        }
    }

    fn open_transport(&mut self, spec: &TransportSpec) {
        let stop = Arc::new(AtomicBool::new(false));
        let (attempt, host, port) = (spec.attempt, spec.host.clone(), spec.port);
        let tx = self.tx.clone();
        let flag = stop.clone();
        let writer = match spec.kind {
            TransportKind::Udp => {
                std::thread::spawn(move || run_udp(attempt, &host, port, &tx, &flag));
                TransportWriter::Opening
            }
            TransportKind::TcpLengthPrefixed => {
                let (writes_tx, writes_rx) = mpsc::channel();
                let unwritten = Unwritten::default();
                let writer_unwritten = unwritten.clone();
                std::thread::spawn(move || {
                    run_tcp(
                        attempt,
                        &host,
                        port,
                        (writes_rx, writer_unwritten),
                        &tx,
                        &flag,
                    );
                });
                TransportWriter::Tcp(writes_tx, unwritten)
            }
        };
        // Replacing the old transport raises its stop flag.
        self.transport = Some(Transport {
            attempt,
            writer,
            stop,
        });
    }

    fn close_transport(&mut self) {
        self.transport = None;
        self.staged.clear();
    }

    fn write_local(&mut self, conn: ConnId, bytes: &[u8]) -> usize {
        let Some(local) = self.conns.get_mut(&conn) else {
            return 0;
        };
        local.queued += bytes.len();
        let _ = local.writer.send(WriteCommand::Data(bytes.to_vec()));
        local.queued
    }

    fn pause_local(&mut self, conn: ConnId, paused: bool) {
        if let Some(local) = self.conns.get(&conn) {
            set_paused(local, paused);
        }
    }

    fn shutdown_local(&mut self, conn: ConnId) {
        if let Some(local) = self.conns.get(&conn) {
            let _ = local.writer.send(WriteCommand::Shutdown);
        }
    }

    fn close_local(&mut self, conn: ConnId) {
        if let Some(local) = self.conns.remove(&conn) {
            // The writer writes what came before, then closes the socket; the reader sees it
            // end (a paused reader is woken for it).
            let _ = local.writer.send(WriteCommand::Close);
            set_paused(&local, false);
        }
    }
}

fn set_paused(local: &Local, paused: bool) {
    let (flag, changed) = &*local.paused;
    *flag.lock().unwrap_or_else(PoisonError::into_inner) = paused;
    changed.notify_all();
}

fn accept_loop(id: ListenerId, listener: &TcpListener, tx: &Sender<Message>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                if stream.set_nonblocking(false).is_err()
                    || tx.send(Message::Accepted(id, stream)).is_err()
                {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(STOP_CHECK / 4),
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                std::thread::sleep(STOP_CHECK);
            }
        }
    }
}

fn run_udp(attempt: u64, host: &str, port: u16, tx: &Sender<Message>, stop: &AtomicBool) {
    let opened = resolve(host, port).and_then(|remote| {
        let socket = UdpSocket::bind(unspecified_for(remote))
            .inspect(size_udp_buffers)
            .and_then(|s| s.connect(remote).map(|()| s))
            .and_then(|s| s.set_read_timeout(Some(STOP_CHECK)).map(|()| s))
            .map_err(|e| transport_error(&e))?;
        let local = socket.local_addr().map_err(|e| transport_error(&e))?;
        let writer = socket.try_clone().map_err(|e| transport_error(&e))?;
        Ok((remote, local, socket, writer))
    });
    let (remote, local, socket, writer) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            let _ = tx.send(Message::TransportClosed(attempt, error));
            return;
        }
    };
    if tx
        .send(Message::UdpOpened(attempt, writer, remote, local))
        .is_err()
    {
        return;
    }
    let mut buf = vec![0u8; READ_CHUNK];
    while !stop.load(Ordering::SeqCst) {
        // Timeouts let the loop look at the stop flag; ICMP errors are transient.
        if let Ok(n) = socket.recv(&mut buf) {
            let data = buf.get(..n).unwrap_or_default().to_vec();
            if tx
                .send(Message::TransportData(attempt, remote, data))
                .is_err()
            {
                return;
            }
        }
    }
}

fn run_tcp(
    attempt: u64,
    host: &str,
    port: u16,
    (writes, unwritten): (Receiver<Vec<u8>>, Unwritten),
    tx: &Sender<Message>,
    stop: &Arc<AtomicBool>,
) {
    let connected = resolve(host, port).and_then(|remote| {
        let stream = TcpStream::connect(remote).map_err(|e| transport_error(&e))?;
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(STOP_CHECK));
        let local = stream.local_addr().map_err(|e| transport_error(&e))?;
        let writer = stream.try_clone().map_err(|e| transport_error(&e))?;
        Ok((remote, local, stream, writer))
    });
    let (remote, local, mut stream, mut writer) = match connected {
        Ok(connected) => connected,
        Err(error) => {
            let _ = tx.send(Message::TransportClosed(attempt, error));
            return;
        }
    };
    if tx
        .send(Message::TcpConnected(attempt, remote, local))
        .is_err()
    {
        return;
    }
    let writing_stop = stop.clone();
    std::thread::spawn(move || {
        while let Ok(mut bytes) = writes.recv() {
            // What queued up while the last write blocked goes out with this one.
            for more in writes.try_iter() {
                bytes.extend_from_slice(&more);
                if bytes.len() >= TRANSPORT_WRITE_GATHER {
                    break;
                }
            }
            let failed = writing_stop.load(Ordering::SeqCst) || writer.write_all(&bytes).is_err();
            // Written or dropped with the transport: either way no longer waiting.
            unwritten.written(bytes.len());
            if failed {
                break;
            }
        }
        let _ = writer.shutdown(Shutdown::Both);
    });
    let mut buf = vec![0u8; READ_CHUNK];
    let error = loop {
        if stop.load(Ordering::SeqCst) {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) => break TransportError::Closed,
            Ok(n) => {
                let data = buf.get(..n).unwrap_or_default().to_vec();
                if tx
                    .send(Message::TransportData(attempt, remote, data))
                    .is_err()
                {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => break transport_error(&e),
        }
    };
    let _ = tx.send(Message::TransportClosed(attempt, error));
}

fn read_local(
    id: ConnId,
    mut stream: TcpStream,
    paused: &(Mutex<bool>, Condvar),
    tx: &Sender<Message>,
) {
    let mut buf = LocalReadBuffer::new(READ_CHUNK);
    loop {
        {
            let (flag, changed) = paused;
            let mut is_paused = flag.lock().unwrap_or_else(PoisonError::into_inner);
            while *is_paused {
                is_paused = changed
                    .wait(is_paused)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
        let message = match stream.read(buf.space()) {
            Ok(0) => Message::LocalEof(id),
            Ok(n) => {
                let data = buf.filled(n).to_vec();
                buf.after_read(n);
                Message::LocalData(id, data)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => Message::LocalReset(id),
        };
        let done = !matches!(message, Message::LocalData(..));
        if tx.send(message).is_err() || done {
            return;
        }
    }
}

fn write_local(
    id: ConnId,
    mut stream: TcpStream,
    commands: &Receiver<WriteCommand>,
    tx: &Sender<Message>,
) {
    let mut pending = VecDeque::new();
    loop {
        if pending.is_empty() {
            match commands.recv() {
                Ok(command) => pending.push_back(command),
                Err(_) => return,
            }
        }
        pending.extend(commands.try_iter());
        let Some(command) = pending.pop_front() else {
            continue;
        };
        match command {
            WriteCommand::Data(bytes) => {
                if stream.write_all(&bytes).is_err() {
                    let _ = tx.send(Message::LocalReset(id));
                    return;
                }
                // Everything queued so far is written once nothing else waits.
                pending.extend(commands.try_iter());
                if pending.is_empty() && tx.send(Message::LocalFlushed(id)).is_err() {
                    return;
                }
            }
            WriteCommand::Shutdown => {
                let _ = stream.shutdown(Shutdown::Write);
            }
            WriteCommand::Close => {
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packets_of_one_drain_reach_the_tcp_writer_as_one_buffer() {
        let (tx, _rx) = mpsc::channel();
        let (queue, writes) = mpsc::channel();
        let mut io = ThreadIo {
            tx,
            transport: Some(Transport {
                attempt: 0,
                writer: TransportWriter::Tcp(queue, Unwritten::default()),
                stop: Arc::default(),
            }),
            staged: Vec::new(),
            conns: BTreeMap::new(),
        };
        let to: SocketAddr = "10.0.0.1:1194".parse().unwrap();
        for packet in [&b"\x00\x03one"[..], b"\x00\x03two", b"\x00\x05three"] {
            io.transmit(to, packet);
        }
        assert!(
            writes.try_recv().is_err(),
            "nothing goes to the writer before the drain ends"
        );
        io.flush_transport();
        assert_eq!(
            writes.try_recv().unwrap(),
            b"\x00\x03one\x00\x03two\x00\x05three"
        );
        assert!(writes.try_recv().is_err(), "one buffer for the whole drain");
    }
}
