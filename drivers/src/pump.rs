//! The part of every driver that does not depend on the runtime: feeding one input, draining
//! the machine to its deadline, recording, following the session's events, and keeping the
//! transport in step with what the machine asks for.
//!
//! A runtime supplies an [`Io`]: the sockets, and nothing else. It tells the [`Pump`] what
//! happened ([`Pump::accepted`], [`Pump::local_data`], [`Pump::batch_transport_data`], ...) with
//! the time from its [`Clock`], and the pump turns every [`Output`] into a call on the `Io`. The
//! mio and smol drivers are each a loop around a pump; another event loop is one more `Io`
//! ([`crate::thread_driver`], on blocking sockets and threads, is the worked example).
//!
//! # Batches of datagrams
//!
//! Bytes from the transport always come in batches (of one, at least): a runtime hands every
//! datagram (or stream chunk) it found readable to [`Pump::batch_transport_data`], which
//! applies it without draining, and then calls [`Pump::end_batch`], which drains once. The
//! machine's answers then cover the whole batch: one acknowledgment for many segments instead
//! of one per datagram, and one pass over the connections. Any other input ends an open batch first. The recording marks every datagram
//! of a batch but the last as held, so that a replay drains where the driver did.
//!
//! # Stream writes
//!
//! On a stream transport every [`Output::Transmit`] is one length-prefixed packet, and a drain
//! often makes several (acknowledgments for many connections, a window's worth of an upload).
//! The pump calls [`Io::flush_transport`] at the end of every drain, after the last
//! [`Io::transmit`] of it: a runtime keeps the chunks of one drain and writes them there, as
//! one write, instead of one write (and one TCP segment, with `TCP_NODELAY`) per packet.
//!
//! # The stream transport's queue
//!
//! Stream bytes the transport socket has not taken wait in the runtime. When the server
//! stops reading, they would pile up without end: once more than the pump's transport queue
//! ([`DEFAULT_TRANSPORT_QUEUE`], [`Pump::set_transport_queue`]) waits
//! ([`Io::transport_backlog`]), further packets are dropped whole, as a full UDP socket drops
//! datagrams, counted and logged. The protocols above retransmit what matters, and the
//! recording still holds every packet the machine sent.
//!
//! # Local writes
//!
//! A local connection is reported [`LocalEvent::WriteBlocked`] when more than
//! [`LOCAL_WRITE_HIGH_WATER`] bytes wait behind its socket after a drain, and
//! [`LocalEvent::Writable`] once the runtime says all of them were written
//! ([`Pump::local_flushed`]). The meaning is the same under every runtime.
//!
//! # The transport
//!
//! After every drain the pump compares the machine's [`Driven::transport`] attempt with the
//! one the `Io` was last asked for; when it changed, it calls [`Io::open_transport`] (which
//! closes the old socket and starts opening the new one) or [`Io::close_transport`]. The
//! runtime reports the outcome, tagged with the attempt, through [`Pump::transport_connected`]
//! or [`Pump::transport_closed`]; reports about an attempt that is no longer current are
//! dropped, so a late answer from an old socket never reaches the machine.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use erebus_sansio::io::{
    ConnId, Event, Input, ListenerId, LocalAction, LocalEvent, Output, TransportError,
    TransportEvent,
};
use erebus_sansio::tunnel::{Failure, TransportKind, TransportSpec};
use erebus_sansio::{Driven, Instant};

use crate::clock::Clock;
use crate::connector::SessionWatch;
use crate::record::Tap;

/// Bytes waiting behind a local socket beyond which the machine is told to hold off. Small,
/// because the tunnel connection's receive buffer is what absorbs a slow reader (and its
/// window is what slows the sender down): bytes here are only a second copy of them.
pub const LOCAL_WRITE_HIGH_WATER: usize = 16 * 1024;

/// The default most bytes that may wait to be written to a stream transport before packets
/// are dropped: about what Linux's send buffer grows to for one connection.
pub const DEFAULT_TRANSPORT_QUEUE: usize = 4 << 20;

/// The least time between two warnings about a full transport queue.
const QUEUE_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Bytes handed to a runtime's transport writer (a task or a thread) and not yet written, shared
/// between the loop that hands them over and the writer.
#[derive(Clone, Default)]
pub(crate) struct Unwritten(Arc<AtomicUsize>);

impl Unwritten {
    /// `bytes` more were handed to the writer.
    pub(crate) fn add(&self, bytes: usize) {
        self.0.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The writer wrote (or dropped) `bytes`.
    pub(crate) fn written(&self, bytes: usize) {
        self.0.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// What waits now.
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Closed connections after which freed memory is given back even while others stay open.
const RELEASE_AFTER_CLOSES: usize = 256;

/// The least time between two releases: each walks the allocator's free lists.
const RELEASE_INTERVAL: Duration = Duration::from_secs(1);

/// When to give the memory of closed connections back to the system
/// ([`erebus_allocator::release_free_memory`]): once every local connection has closed, or
/// after [`RELEASE_AFTER_CLOSES`] closes, at most once per [`RELEASE_INTERVAL`]. Without it
/// glibc keeps a burst's peak resident for as long as erebus runs.
#[derive(Default)]
struct MemoryRelease {
    open: BTreeSet<ConnId>,
    closed_since: usize,
    last: Option<Instant>,
    /// When the next release is to happen, if one is wanted.
    due: Option<Instant>,
}

impl MemoryRelease {
    fn opened(&mut self, conn: ConnId) {
        self.open.insert(conn);
    }

    fn closed(&mut self, conn: ConnId, now: Instant) {
        if !self.open.remove(&conn) {
            return;
        }
        self.closed_since += 1;
        if self.due.is_none() && (self.open.is_empty() || self.closed_since >= RELEASE_AFTER_CLOSES)
        {
            let earliest = self.last.map_or(now, |last| last + RELEASE_INTERVAL);
            self.due = Some(earliest.max(now));
        }
    }

    fn poll(&mut self, now: Instant) {
        if self.due.is_some_and(|due| now >= due) {
            let released = erebus_allocator::release_free_memory();
            tracing::debug!(
                closed = self.closed_since,
                released,
                "freed memory released"
            );
            self.due = None;
            self.last = Some(now);
            self.closed_since = 0;
        }
    }
}

/// The read buffer of one local connection in a runtime that reads each connection on its own
/// (a task or a thread). It starts at a page and doubles, up to its maximum, each time a read
/// fills it: a thousand connections that only send requests hold a page each, while an upload
/// soon reads in large chunks.
pub(crate) struct LocalReadBuffer {
    buf: Vec<u8>,
    max: usize,
}

impl LocalReadBuffer {
    /// The size a connection's buffer starts at.
    const INITIAL: usize = 4 * 1024;

    /// A buffer growing up to `max` bytes.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            buf: vec![0; Self::INITIAL.min(max)],
            max,
        }
    }

    /// Where the next read goes.
    pub(crate) fn space(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// The first `len` bytes of the last read.
    pub(crate) fn filled(&self, len: usize) -> &[u8] {
        self.buf.get(..len).unwrap_or_default()
    }

    /// Notes that a read returned `len` bytes: one that filled the buffer grows it.
    pub(crate) fn after_read(&mut self, len: usize) {
        if len == self.buf.len() && self.buf.len() < self.max {
            let size = (self.buf.len() * 2).min(self.max);
            self.buf.resize(size, 0);
        }
    }
}

/// The sockets of one runtime, as the pump drives them.
pub trait Io {
    /// Sends one datagram, or one chunk of the stream, on the current transport. A datagram
    /// the socket refuses is dropped (the protocols above retransmit what matters); stream
    /// bytes are kept, in order, and may wait for [`Io::flush_transport`].
    fn transmit(&mut self, to: SocketAddr, bytes: &[u8]);

    /// The drain that called [`Io::transmit`] is over: stream bytes kept since the last call
    /// go out now, together (see the [module documentation](self#stream-writes)); what the
    /// socket does not take stays kept, in order. A runtime that sends every chunk at once
    /// (datagrams) has nothing to do.
    fn flush_transport(&mut self) {}

    /// Stream bytes kept and not yet written to the transport socket (0 for datagrams).
    fn transport_backlog(&self) -> usize {
        0
    }

    /// Closes the current transport socket, if any, and starts opening one for `spec`:
    /// resolve its host, connect. The outcome is reported to the pump with `spec.attempt`.
    fn open_transport(&mut self, spec: &TransportSpec);

    /// Closes the current transport socket, if any.
    fn close_transport(&mut self);

    /// Writes `bytes` to a local connection, keeping what the socket does not take now, and
    /// returns how many bytes now wait behind its socket.
    fn write_local(&mut self, conn: ConnId, bytes: &[u8]) -> usize;

    /// Stops (`true`) or resumes (`false`) reading from a local connection.
    fn pause_local(&mut self, conn: ConnId, paused: bool);

    /// Closes a local connection's sending side once everything kept is written.
    fn shutdown_local(&mut self, conn: ConnId);

    /// Drops a local connection now.
    fn close_local(&mut self, conn: ConnId);
}

/// Feeds and drains one [`Driven`] machine for a runtime. See the [module
/// documentation](self).
pub struct Pump<D> {
    machine: D,
    clock: Clock,
    out_buf: Vec<u8>,
    deadline: Option<Instant>,
    down: Option<Failure>,
    /// The attempt the `Io` was last asked to open, if any, and its kind.
    attempt: Option<u64>,
    kind: TransportKind,
    blocked: BTreeSet<ConnId>,
    newly_blocked: Vec<ConnId>,
    tap: Option<Box<dyn Tap + Send>>,
    on_event: Box<dyn FnMut(&Event) + Send>,
    watch: Arc<SessionWatch>,
    stop_sent: bool,
    /// Inputs were applied since the last drain ([`Pump::batch_transport_data`]).
    batch_open: bool,
    /// When recording: the last datagram of the open batch, recorded once it is known whether
    /// another follows it before the drain (`now`, sender; the bytes in `held_bytes`).
    held: Option<(Instant, SocketAddr)>,
    held_bytes: Vec<u8>,
    /// When to give the memory of closed connections back to the system.
    release: MemoryRelease,
    /// The bound on stream bytes waiting for the transport socket.
    queue: TransportQueue,
}

/// The bound on stream bytes waiting for the transport socket, and the packets it dropped.
struct TransportQueue {
    limit: usize,
    drops: u64,
    /// Drops since the last warning, and when that was.
    unreported: u64,
    warned_at: Option<Instant>,
}

impl TransportQueue {
    /// Whether a packet of `len` bytes may be handed to a transport of `kind` behind whose
    /// socket `backlog` bytes wait; counts and (at most every [`QUEUE_WARNING_INTERVAL`]) logs
    /// the one that may not.
    fn admits(&mut self, kind: TransportKind, backlog: usize, len: usize, now: Instant) -> bool {
        if kind == TransportKind::Udp || backlog.saturating_add(len) <= self.limit {
            return true;
        }
        self.drops += 1;
        self.unreported += 1;
        if self
            .warned_at
            .is_none_or(|at| now >= at + QUEUE_WARNING_INTERVAL)
        {
            tracing::warn!(
                "{} packet(s) to the server dropped: {backlog} bytes wait for the transport, \
                 the limit (--transport-queue); the server is not reading",
                self.unreported
            );
            self.warned_at = Some(now);
            self.unreported = 0;
        }
        false
    }
}

impl<D> Drop for Pump<D> {
    fn drop(&mut self) {
        self.watch.driver_gone();
    }
}

impl<D: Driven> Pump<D> {
    /// A pump for `machine`, reading `clock`.
    pub fn new(machine: D, clock: Clock) -> Self {
        Self {
            machine,
            clock,
            out_buf: vec![0; 65_536],
            deadline: None,
            down: None,
            attempt: None,
            kind: TransportKind::Udp,
            blocked: BTreeSet::new(),
            newly_blocked: Vec::new(),
            tap: None,
            on_event: Box::new(|_| {}),
            watch: Arc::default(),
            stop_sent: false,
            batch_open: false,
            held: None,
            held_bytes: Vec::new(),
            release: MemoryRelease::default(),
            queue: TransportQueue {
                limit: DEFAULT_TRANSPORT_QUEUE,
                drops: 0,
                unreported: 0,
                warned_at: None,
            },
        }
    }

    /// The machine.
    pub fn machine(&self) -> &D {
        &self.machine
    }

    /// The clock inputs are stamped with.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The session watch connectors share.
    pub(crate) fn watch(&self) -> &Arc<SessionWatch> {
        &self.watch
    }

    /// Calls `on_event` for every [`Event`] the machine reports.
    pub fn on_event(&mut self, on_event: impl FnMut(&Event) + Send + 'static) {
        self.on_event = Box::new(on_event);
    }

    /// Records every input and every transmit through `tap`.
    pub fn record(&mut self, tap: Box<dyn Tap + Send>) {
        self.tap = Some(tap);
    }

    /// Sets the most stream bytes that may wait for the transport socket (see the [module
    /// documentation](self#the-stream-transports-queue)).
    pub fn set_transport_queue(&mut self, bytes: usize) {
        self.queue.limit = bytes;
    }

    /// Packets dropped so far because the stream transport's queue was full.
    pub fn transport_queue_drops(&self) -> u64 {
        self.queue.drops
    }

    /// When [`check_deadline`](Self::check_deadline) has something to do: the machine's
    /// deadline of the last drain, or a due release of freed memory.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.deadline, self.release.due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Why the machine stopped, once it did; taken once.
    pub fn take_down(&mut self) -> Option<Failure> {
        self.down.take()
    }

    /// The first drain, before any input: opens the transport the machine starts with.
    pub fn start(&mut self, io: &mut impl Io) {
        self.drain(io);
    }

    /// Applies one input, then drains the machine (the sans-IO rule). An open batch is
    /// drained first.
    pub fn feed(&mut self, io: &mut impl Io, input: Input<'_>) {
        self.end_batch(io);
        if let Some(tap) = &mut self.tap {
            tap.input(&input);
        }
        if let Err(e) = self.machine.handle_input(input) {
            tracing::debug!("input refused: {e}");
        }
        self.drain(io);
    }

    /// Feeds [`Input::Timeout`] when the deadline has passed, by the clock (never trust a
    /// timer to have fired on time).
    pub fn check_deadline(&mut self, io: &mut impl Io) {
        let now = self.clock.now();
        self.release.poll(now);
        if self.deadline.is_some_and(|deadline| now >= deadline) {
            self.feed(io, Input::Timeout { now });
        }
    }

    /// Asks the machine to close gracefully (once).
    pub fn stop(&mut self, io: &mut impl Io) {
        if !self.stop_sent {
            self.stop_sent = true;
            let now = self.clock.now();
            self.feed(io, Input::Close { now });
        }
    }

    /// A listener accepted `conn` (a number the runtime chose, unique while it lives).
    pub fn accepted(&mut self, io: &mut impl Io, conn: ConnId, listener: ListenerId) {
        self.release.opened(conn);
        self.local(io, conn, LocalEvent::Accepted { listener });
    }

    /// Bytes read from a local connection.
    pub fn local_data(&mut self, io: &mut impl Io, conn: ConnId, bytes: &[u8]) {
        self.local(io, conn, LocalEvent::Data(bytes));
    }

    /// A local connection's reading side ended.
    pub fn local_eof(&mut self, io: &mut impl Io, conn: ConnId) {
        self.local(io, conn, LocalEvent::ReadClosed);
    }

    /// A local connection failed; the runtime has dropped it.
    pub fn local_reset(&mut self, io: &mut impl Io, conn: ConnId) {
        self.blocked.remove(&conn);
        self.release.closed(conn, self.clock.now());
        self.local(io, conn, LocalEvent::Reset);
    }

    /// Everything kept for a local connection was written.
    pub fn local_flushed(&mut self, io: &mut impl Io, conn: ConnId) {
        if self.blocked.remove(&conn) {
            self.local(io, conn, LocalEvent::Writable);
        }
    }

    /// A local connection is gone without the machine's asking (closed by the runtime).
    pub fn forget_local(&mut self, conn: ConnId) {
        self.blocked.remove(&conn);
        self.release.closed(conn, self.clock.now());
    }

    fn local(&mut self, io: &mut impl Io, conn: ConnId, event: LocalEvent<'_>) {
        let now = self.clock.now();
        self.feed(io, Input::Local { now, conn, event });
    }

    /// The transport of `attempt` is open to `remote` from `local`.
    pub fn transport_connected(
        &mut self,
        io: &mut impl Io,
        attempt: u64,
        remote: SocketAddr,
        local: SocketAddr,
    ) {
        if self.attempt != Some(attempt) {
            return;
        }
        if let Some(tap) = &mut self.tap {
            tap.transport_opened(self.kind, remote, local);
        }
        let now = self.clock.now();
        self.feed(
            io,
            Input::Transport {
                now,
                event: TransportEvent::Connected { remote },
            },
        );
    }

    /// Bytes from the transport of `attempt`, applied without draining: one datagram (or
    /// stream chunk) of those the runtime read at once. Call [`Pump::end_batch`] after the
    /// last; see the [module documentation](self#batches-of-datagrams).
    pub fn batch_transport_data(&mut self, attempt: u64, from: SocketAddr, bytes: &[u8]) {
        if self.attempt != Some(attempt) {
            return;
        }
        let now = self.clock.now();
        if let Some(tap) = &mut self.tap {
            // The previous datagram was not the last of the batch.
            if let Some((held_now, held_from)) = self.held.take() {
                tap.held_input(&Input::Transport {
                    now: held_now,
                    event: TransportEvent::Data {
                        from: held_from,
                        bytes: &self.held_bytes,
                    },
                });
            }
            self.held_bytes.clear();
            self.held_bytes.extend_from_slice(bytes);
            self.held = Some((now, from));
        }
        let input = Input::Transport {
            now,
            event: TransportEvent::Data { from, bytes },
        };
        if let Err(e) = self.machine.handle_input(input) {
            tracing::debug!("input refused: {e}");
        }
        self.batch_open = true;
    }

    /// Drains the machine once after the datagrams of a batch
    /// ([`Pump::batch_transport_data`]); nothing when no batch is open.
    pub fn end_batch(&mut self, io: &mut impl Io) {
        if !self.batch_open {
            return;
        }
        self.batch_open = false;
        if let Some(tap) = &mut self.tap
            && let Some((now, from)) = self.held.take()
        {
            tap.input(&Input::Transport {
                now,
                event: TransportEvent::Data {
                    from,
                    bytes: &self.held_bytes,
                },
            });
        }
        self.drain(io);
    }

    /// The transport of `attempt` could not be opened, failed, or was closed by the server.
    pub fn transport_closed(&mut self, io: &mut impl Io, attempt: u64, error: TransportError) {
        if self.attempt != Some(attempt) {
            return;
        }
        tracing::debug!(attempt, "transport closed: {error}");
        let now = self.clock.now();
        self.feed(
            io,
            Input::Transport {
                now,
                event: TransportEvent::Closed { error },
            },
        );
    }

    fn drain(&mut self, io: &mut impl Io) {
        loop {
            let now = self.clock.now();
            self.deadline = loop {
                match self.machine.poll_output(&mut self.out_buf) {
                    Output::Transmit { to, bytes } => {
                        if let Some(tap) = &mut self.tap {
                            tap.transmit(now, bytes);
                        }
                        let backlog = io.transport_backlog();
                        if self.queue.admits(self.kind, backlog, bytes.len(), now) {
                            io.transmit(to, bytes);
                        }
                    }
                    Output::Local { conn, action } => match action {
                        LocalAction::Write(bytes) => {
                            let queued = io.write_local(conn, bytes);
                            if queued > LOCAL_WRITE_HIGH_WATER && self.blocked.insert(conn) {
                                self.newly_blocked.push(conn);
                            }
                        }
                        LocalAction::PauseReading => io.pause_local(conn, true),
                        LocalAction::ResumeReading => io.pause_local(conn, false),
                        LocalAction::Shutdown => io.shutdown_local(conn),
                        LocalAction::Close => {
                            self.blocked.remove(&conn);
                            self.release.closed(conn, now);
                            io.close_local(conn);
                        }
                    },
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
            // Before the transport may change: the bytes belong to the socket they were for.
            io.flush_transport();
            self.sync_transport(io);
            // Writes refused during the drain are reported now, one input each, each drained.
            let Some(conn) = self.newly_blocked.pop() else {
                return;
            };
            let input = Input::Local {
                now: self.clock.now(),
                conn,
                event: LocalEvent::WriteBlocked,
            };
            if let Some(tap) = &mut self.tap {
                tap.input(&input);
            }
            if let Err(e) = self.machine.handle_input(input) {
                tracing::debug!("input refused: {e}");
            }
        }
    }

    /// Opens, replaces or closes the transport so it matches what the machine asks for.
    fn sync_transport(&mut self, io: &mut impl Io) {
        let wanted = self.machine.transport();
        let attempt = wanted.map(|spec| spec.attempt);
        if attempt == self.attempt {
            return;
        }
        self.attempt = attempt;
        match wanted {
            Some(spec) => {
                self.kind = spec.kind;
                tracing::debug!(attempt = spec.attempt, %spec, "opening the transport");
                io.open_transport(spec);
            }
            None => io.close_transport(),
        }
    }
}

/// Receive buffer asked for on a UDP transport socket: room for a burst from the server (a
/// whole TCP window of the tunnel arriving while the loop is busy) instead of dropping it. The
/// kernel counts about twice the payload, and caps the request at `net.core.rmem_max`.
pub const UDP_RECEIVE_BUFFER: usize = 4 << 20;
/// Send buffer asked for on a UDP transport socket (capped at `net.core.wmem_max`).
pub const UDP_SEND_BUFFER: usize = 1 << 20;

/// Sizes a UDP transport socket's kernel buffers ([`UDP_RECEIVE_BUFFER`],
/// [`UDP_SEND_BUFFER`]); a refusal leaves the system's defaults.
pub fn size_udp_buffers(socket: &impl std::os::fd::AsFd) {
    use nix::sys::socket::{setsockopt, sockopt};
    if let Err(e) = setsockopt(socket, sockopt::RcvBuf, &UDP_RECEIVE_BUFFER) {
        tracing::debug!("cannot size the transport's receive buffer: {e}");
    }
    if let Err(e) = setsockopt(socket, sockopt::SndBuf, &UDP_SEND_BUFFER) {
        tracing::debug!("cannot size the transport's send buffer: {e}");
    }
}

/// Maps a socket error to what the machine is told about its transport.
pub fn transport_error(error: &std::io::Error) -> TransportError {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionRefused => TransportError::Refused,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            TransportError::Reset
        }
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable | ErrorKind::NetworkDown => {
            TransportError::Unreachable
        }
        ErrorKind::TimedOut => TransportError::TimedOut,
        _ => TransportError::Other,
    }
}

/// Resolves a transport's host with the system resolver: the only name erebus ever resolves
/// outside the tunnel is the VPN server's own. An address literal resolves at once. Blocks for
/// a name: run it off the event loop.
///
/// # Errors
///
/// [`TransportError::Unresolved`] when the name has no address.
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, TransportError> {
    use std::net::ToSocketAddrs;
    if let Some(addr) = literal(host, port) {
        return Ok(addr);
    }
    let mut addrs = (host, port).to_socket_addrs().map_err(|e| {
        tracing::debug!("cannot resolve {host}: {e}");
        TransportError::Unresolved
    })?;
    addrs.next().ok_or(TransportError::Unresolved)
}

/// `host` as an address, when it is one (IPv6 with or without brackets).
pub fn literal(host: &str, port: u16) -> Option<SocketAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port))
}

/// The wildcard address of `remote`'s family, for binding a transport socket.
pub fn unspecified_for(remote: SocketAddr) -> SocketAddr {
    if remote.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_need_no_resolver() {
        assert_eq!(
            literal("10.99.0.1", 1194),
            Some("10.99.0.1:1194".parse().unwrap())
        );
        assert_eq!(
            literal("[2001:db8::1]", 4500),
            Some("[2001:db8::1]:4500".parse().unwrap())
        );
        assert_eq!(
            literal("2001:db8::1", 4500),
            Some("[2001:db8::1]:4500".parse().unwrap())
        );
        assert_eq!(literal("vpn.example", 1194), None);
        assert_eq!(resolve("127.0.0.1", 1), Ok("127.0.0.1:1".parse().unwrap()));
    }

    /// A machine on a stream transport that answers every chunk it reads with three packets.
    struct ThreeAnswers {
        spec: TransportSpec,
        queued: u8,
    }

    impl Driven for ThreeAnswers {
        fn transport(&self) -> Option<&TransportSpec> {
            Some(&self.spec)
        }

        fn handle_input(&mut self, input: Input<'_>) -> Result<(), erebus_sansio::io::InputError> {
            if let Input::Transport {
                event: TransportEvent::Data { .. },
                ..
            } = input
            {
                self.queued += 3;
            }
            Ok(())
        }

        fn poll_output<'b>(&mut self, buf: &'b mut [u8]) -> Output<'b> {
            if self.queued == 0 {
                return Output::Timeout(None);
            }
            self.queued -= 1;
            let bytes = &mut buf[..3];
            bytes.copy_from_slice(&[0, 1, self.queued]);
            Output::Transmit {
                to: "10.0.0.1:1194".parse().unwrap(),
                bytes,
            }
        }
    }

    /// What the pump asked of the runtime, in order, and the stream bytes that wait behind
    /// its transport socket (every transmit adds to them; the test takes them away).
    #[derive(Default)]
    struct Calls(Vec<String>, usize);

    impl Io for Calls {
        fn transmit(&mut self, _to: SocketAddr, bytes: &[u8]) {
            self.0.push(format!("transmit {bytes:?}"));
            self.1 += bytes.len();
        }
        fn transport_backlog(&self) -> usize {
            self.1
        }
        fn flush_transport(&mut self) {
            self.0.push("flush".into());
        }
        fn open_transport(&mut self, _spec: &TransportSpec) {
            self.0.push("open".into());
        }
        fn close_transport(&mut self) {}
        fn write_local(&mut self, _conn: ConnId, _bytes: &[u8]) -> usize {
            0
        }
        fn pause_local(&mut self, _conn: ConnId, _paused: bool) {}
        fn shutdown_local(&mut self, _conn: ConnId) {}
        fn close_local(&mut self, _conn: ConnId) {}
    }

    #[test]
    fn the_packets_of_one_drain_are_flushed_once_after_the_last() {
        let remote: SocketAddr = "10.0.0.1:1194".parse().unwrap();
        let machine = ThreeAnswers {
            spec: TransportSpec::to_addr(remote, TransportKind::TcpLengthPrefixed),
            queued: 0,
        };
        let mut pump = Pump::new(machine, Clock::start());
        let mut io = Calls::default();
        pump.start(&mut io);
        assert_eq!(
            io.0,
            ["flush", "open"],
            "flushed before the transport changes"
        );
        io.0.clear();
        // A batch of two chunks is one drain: six packets, one flush.
        pump.batch_transport_data(0, remote, b"a");
        pump.batch_transport_data(0, remote, b"b");
        pump.end_batch(&mut io);
        let mut expected: Vec<String> = (0..6u8)
            .rev()
            .map(|n| format!("transmit {:?}", [0, 1, n]))
            .collect();
        expected.push("flush".into());
        assert_eq!(io.0, expected);
        io.0.clear();
        pump.batch_transport_data(0, remote, b"c");
        pump.end_batch(&mut io);
        assert_eq!(
            io.0,
            [
                "transmit [0, 1, 2]",
                "transmit [0, 1, 1]",
                "transmit [0, 1, 0]",
                "flush"
            ]
        );
    }

    #[test]
    fn a_full_stream_transport_drops_whole_packets_and_counts_them() {
        let remote: SocketAddr = "10.0.0.1:1194".parse().unwrap();
        let machine = ThreeAnswers {
            spec: TransportSpec::to_addr(remote, TransportKind::TcpLengthPrefixed),
            queued: 0,
        };
        let mut pump = Pump::new(machine, Clock::start());
        // Room for two 3-byte packets behind the four bytes already waiting.
        pump.set_transport_queue(10);
        let mut io = Calls(Vec::new(), 4);
        pump.start(&mut io);
        io.0.clear();
        pump.batch_transport_data(0, remote, b"a");
        pump.end_batch(&mut io);
        assert_eq!(
            io.0,
            ["transmit [0, 1, 2]", "transmit [0, 1, 1]", "flush"],
            "the third packet does not fit and is not handed over, not even in part"
        );
        assert_eq!(pump.transport_queue_drops(), 1);
        // Once the socket took most of the bytes, packets go out again.
        io.1 = 1;
        io.0.clear();
        pump.batch_transport_data(0, remote, b"b");
        pump.end_batch(&mut io);
        assert_eq!(io.0.len(), 4, "three packets and the flush: {:?}", io.0);
        assert_eq!(pump.transport_queue_drops(), 1);
    }

    #[test]
    fn datagrams_are_never_held_to_the_stream_queue() {
        let remote: SocketAddr = "10.0.0.1:1194".parse().unwrap();
        let machine = ThreeAnswers {
            spec: TransportSpec::to_addr(remote, TransportKind::Udp),
            queued: 0,
        };
        let mut pump = Pump::new(machine, Clock::start());
        pump.set_transport_queue(0);
        let mut io = Calls(Vec::new(), 1 << 30);
        pump.start(&mut io);
        io.0.clear();
        pump.batch_transport_data(0, remote, b"a");
        pump.end_batch(&mut io);
        assert_eq!(io.0.len(), 4, "three packets and the flush: {:?}", io.0);
        assert_eq!(pump.transport_queue_drops(), 0);
    }

    #[test]
    fn names_resolve_with_the_system_resolver() {
        // `localhost` comes from the hosts file: no query leaves the machine.
        let addr = resolve("localhost", 1194).unwrap();
        assert!(addr.ip().is_loopback() && addr.port() == 1194, "{addr}");
    }
}
