//! erebus's user-space stack attached to a TUN device: a small poll loop for tests against
//! the kernel's TCP (see [`crate::tun_netns`]).
//!
//! [`TunStack`] owns the [`Stack`], the non-blocking [`TunDevice`] and a `mio::Poll`. Each
//! turn of [`TunStack::run_until`] reads the packets the kernel queued (a bounded batch, so
//! acknowledgments keep flowing under load), gives them to [`Stack::ingress`], lets the
//! caller's application step drive the sockets, writes everything [`Stack::poll_egress`]
//! yields, and then sleeps until the device is readable or the stack's deadline
//! ([`Stack::poll_timeout`]) comes. Time is the driver's monotonic [`Clock`].
//!
//! Every packet in either direction is summarised in a [`PacketTrace`] that keeps the last
//! few thousand, so a failing transfer can show what was on the wire just before.
//!
//! [`TunStack::set_loss`] makes the loop drop a share of the packets in each direction
//! (seeded, so a run can be repeated), to exercise both ends' loss recovery.
//!
//! [`StackResolver`] drives erebus's DNS stub over the stack's UDP sockets from an
//! application step, the way the client does.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use erebus::Clock;
use erebus::tun::{MAX_PACKET_LEN, TunDevice, TunMode};
use erebus_net::dns::{Addresses, DnsTransport, LookupId, ResolveError, Resolver};
use erebus_net::{Stack, TcpConfig};
use erebus_sansio::{Instant, Seed, SeededRng, TunnelConfig};
use erebus_wire::IpProtocol;
use erebus_wire::ipv4::Ipv4Packet;
use erebus_wire::tcp::{MAX_SACK_BLOCKS, TcpPacket, TcpRepr};
use mio::{Events, Interest, Poll, Token};

/// Packets read from the device per turn before the application and egress get theirs.
const READS_PER_TURN: usize = 128;
/// The longest sleep of one turn, so a caller's deadline is noticed.
const MAX_SLEEP: Duration = Duration::from_millis(50);
const TUN_TOKEN: Token = Token(0);

/// Counters of the loop itself (the stack keeps its own in [`Stack::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopCounters {
    /// Packets read from the device.
    pub packets_in: u64,
    /// Packets written to the device.
    pub packets_out: u64,
    /// Packets the stack refused ([`Stack::ingress`] errors: IPv6, not for us, malformed).
    pub ingress_refused: u64,
    /// Writes the kernel refused; the packet counts as lost.
    pub write_errors: u64,
    /// Turns of the loop.
    pub turns: u64,
    /// Turns that slept in `poll`.
    pub sleeps: u64,
    /// Packets from the kernel dropped on purpose ([`TunStack::set_loss`]).
    pub dropped_in: u64,
    /// Packets from the stack dropped on purpose.
    pub dropped_out: u64,
}

/// Packets the loop drops on purpose, in thousandths.
#[derive(Debug)]
struct Loss {
    in_per_mille: u32,
    out_per_mille: u32,
    rng: SeededRng,
}

impl Loss {
    fn drops(&mut self, direction: Direction) -> bool {
        let per_mille = match direction {
            Direction::In => self.in_per_mille,
            Direction::Out => self.out_per_mille,
        };
        per_mille > 0 && self.rng.below(1000) < per_mille
    }
}

/// Why [`TunStack::run_until`] stopped without a result.
#[derive(Debug)]
pub enum RunError {
    /// The deadline passed.
    TimedOut,
    /// The application step failed.
    App(String),
    /// Reading the device or polling failed.
    Io(io::Error),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TimedOut => f.write_str("timed out"),
            Self::App(message) => write!(f, "application: {message}"),
            Self::Io(error) => write!(f, "I/O: {error}"),
        }
    }
}

impl From<io::Error> for RunError {
    fn from(error: io::Error) -> Self {
        Self::Io(error)
    }
}

/// A [`Stack`] attached to a TUN device.
pub struct TunStack {
    tun: TunDevice,
    poll: Poll,
    events: Events,
    /// The stack; the application step gets it every turn.
    pub stack: Stack,
    clock: Clock,
    rx: Box<[u8]>,
    tx: Box<[u8]>,
    /// The last packets in both directions.
    pub trace: PacketTrace,
    /// Counters of the loop.
    pub counters: LoopCounters,
    loss: Option<Loss>,
}

impl fmt::Debug for TunStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunStack")
            .field("tun", &self.tun)
            .field("stack", &self.stack)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl TunStack {
    /// Attaches a new stack for `tunnel` to the TUN device `tun_name` of the calling thread's
    /// namespace.
    ///
    /// # Errors
    ///
    /// When the device cannot be opened or registered.
    pub fn open(
        tun_name: &str,
        tunnel: &TunnelConfig,
        tcp: TcpConfig,
        seed: &Seed,
    ) -> io::Result<Self> {
        let mut tun = TunDevice::open(tun_name, TunMode::NonBlocking)?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut tun, TUN_TOKEN, Interest::READABLE)?;
        let stack = Stack::new(tunnel, tcp, seed);
        let tx_len = stack.mtu();
        Ok(Self {
            tun,
            poll,
            events: Events::with_capacity(8),
            stack,
            clock: Clock::start(),
            rx: vec![0u8; MAX_PACKET_LEN].into_boxed_slice(),
            tx: vec![0u8; tx_len].into_boxed_slice(),
            trace: PacketTrace::new(PacketTrace::DEFAULT_CAPACITY),
            counters: LoopCounters::default(),
            loss: None,
        })
    }

    /// Drops about `in_per_mille` thousandths of the packets from the kernel and
    /// `out_per_mille` of those from the stack, chosen by a generator seeded with `seed`.
    /// Dropped packets still appear in the trace, marked as dropped.
    pub fn set_loss(&mut self, in_per_mille: u32, out_per_mille: u32, seed: &Seed) {
        self.loss = Some(Loss {
            in_per_mille,
            out_per_mille,
            rng: seed.child("tun-stack.loss").rng(),
        });
    }

    fn drops(&mut self, direction: Direction) -> bool {
        let dropped = self.loss.as_mut().is_some_and(|loss| loss.drops(direction));
        if dropped {
            match direction {
                Direction::In => self.counters.dropped_in += 1,
                Direction::Out => self.counters.dropped_out += 1,
            }
        }
        dropped
    }

    /// The loop's current time.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Runs turns until `step` returns a result, fails, or `limit` passes. `step` gets the
    /// stack and the time after each batch of input; what it queues goes out in the same
    /// turn.
    ///
    /// # Errors
    ///
    /// [`RunError::TimedOut`] after `limit`, [`RunError::App`] with the step's error, and
    /// [`RunError::Io`] when the device or the poll fails.
    pub fn run_until<T>(
        &mut self,
        limit: Duration,
        mut step: impl FnMut(&mut Stack, Instant) -> Result<Option<T>, String>,
    ) -> Result<T, RunError> {
        let deadline = self.clock.now().checked_add(limit);
        loop {
            self.counters.turns += 1;
            let drained = self.read_batch()?;
            let now = self.clock.now();
            let outcome = step(&mut self.stack, now).map_err(RunError::App)?;
            self.flush(now);
            if let Some(result) = outcome {
                return Ok(result);
            }
            if deadline.is_some_and(|deadline| now >= deadline) {
                return Err(RunError::TimedOut);
            }
            if drained {
                self.sleep()?;
            }
        }
    }

    /// Reads up to a batch of packets into the stack; `true` when the device is drained.
    fn read_batch(&mut self) -> io::Result<bool> {
        for _ in 0..READS_PER_TURN {
            let len = match self.tun.recv(&mut self.rx) {
                Ok(len) => len,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            let now = self.clock.now();
            self.counters.packets_in += 1;
            let dropped = self.drops(Direction::In);
            let packet = &self.rx[..len];
            self.trace.record(now, Direction::In, dropped, packet);
            if dropped {
                continue;
            }
            if self.stack.ingress(now, packet).is_err() {
                self.counters.ingress_refused += 1;
            }
        }
        Ok(false)
    }

    /// Writes every packet the stack has due.
    fn flush(&mut self, now: Instant) {
        while let Some(len) = self.stack.poll_egress(now, &mut self.tx) {
            let dropped = self.drops(Direction::Out);
            let packet = &self.tx[..len];
            self.trace.record(now, Direction::Out, dropped, packet);
            if dropped {
                continue;
            }
            match self.tun.send(packet) {
                Ok(()) => self.counters.packets_out += 1,
                Err(_) => self.counters.write_errors += 1,
            }
        }
    }

    /// Sleeps until the device is readable or the stack's next deadline (at most
    /// [`MAX_SLEEP`]).
    fn sleep(&mut self) -> io::Result<()> {
        let timeout = match self.stack.poll_timeout() {
            Some(at) => self.clock.until(at).min(MAX_SLEEP),
            None => MAX_SLEEP,
        };
        if timeout.is_zero() {
            return Ok(());
        }
        self.counters.sleeps += 1;
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// A finished lookup of [`StackResolver::pump`].
pub type LookupResult = (LookupId, Result<Addresses, ResolveError>);

/// erebus's DNS stub resolver wired to a [`Stack`]'s UDP sockets, as the client wires it:
/// each query goes out from the source port the resolver chose (bound on first use and
/// unbound once the resolver no longer waits on it), and every datagram the stack received
/// goes back to the resolver. Queries that would fall back to TCP (truncated answers) fail at
/// once: the tests here need only UDP.
#[derive(Debug)]
pub struct StackResolver {
    /// The resolver; start lookups with [`Resolver::resolve`].
    pub resolver: Resolver,
    ports: BTreeSet<u16>,
    /// Datagrams the resolver refused (malformed or unsolicited).
    pub dropped_responses: u64,
    /// Queries the stack would not send.
    pub unsent_queries: u64,
}

impl StackResolver {
    /// Wires `resolver` to a stack.
    pub fn new(resolver: Resolver) -> Self {
        Self {
            resolver,
            ports: BTreeSet::new(),
            dropped_responses: 0,
            unsent_queries: 0,
        }
    }

    /// One round at `now`: fires the resolver's timeouts, queues its queries on `stack`,
    /// hands it the datagrams `stack` received (all of them: the stack's UDP is the
    /// resolver's here) and returns the lookups that finished.
    pub fn pump(&mut self, stack: &mut Stack, now: Instant) -> Vec<LookupResult> {
        if self.resolver.poll_timeout().is_some_and(|at| at <= now) {
            self.resolver.handle_timeout(now);
        }
        while let Some(query) = self.resolver.poll_transmit(now) {
            match query.transport {
                DnsTransport::Udp => {
                    if !stack.udp_is_bound(query.local_port)
                        && stack.udp_bind(query.local_port).is_ok()
                    {
                        self.ports.insert(query.local_port);
                    }
                    if stack
                        .udp_send(query.local_port, query.server, &query.bytes)
                        .is_err()
                    {
                        self.unsent_queries += 1;
                    }
                }
                DnsTransport::Tcp => {
                    self.resolver
                        .handle_tcp_failure(now, query.server, query.id);
                }
            }
        }
        while let Some(datagram) = stack.udp_recv() {
            let handled = self.resolver.handle_udp_response(
                now,
                datagram.remote,
                datagram.local_port,
                &datagram.payload,
            );
            if handled.is_err() {
                self.dropped_responses += 1;
            }
        }
        let finished = std::iter::from_fn(|| self.resolver.poll_result()).collect();
        let idle: Vec<u16> = self
            .ports
            .iter()
            .copied()
            .filter(|port| !self.resolver.is_listening_on(*port))
            .collect();
        for port in idle {
            self.ports.remove(&port);
            stack.udp_unbind(port);
        }
        finished
    }

    /// The source ports bound on the stack for queries still waiting for an answer.
    pub fn bound_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports.iter().copied()
    }
}

/// Which way a packet went, seen from the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the kernel to the stack.
    In,
    /// From the stack to the kernel.
    Out,
}

/// A summary of one packet: the TCP header fields that explain a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEntry {
    /// Microseconds on the loop's clock.
    pub at_micros: u64,
    /// Which way.
    pub direction: Direction,
    /// Whether the loop dropped it on purpose.
    pub dropped: bool,
    /// Length of the IP packet.
    pub len: usize,
    /// The TCP fields, `None` for anything that is not a well-formed IPv4 TCP segment.
    pub tcp: Option<TcpSummary>,
}

/// The TCP fields of a [`TraceEntry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSummary {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// The flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10).
    pub flags: u8,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (meaningful with ACK).
    pub ack: u32,
    /// Raw window field.
    pub window: u16,
    /// Payload bytes.
    pub payload_len: usize,
    /// The SACK blocks as `(left, right)`, in the order of the option.
    pub sack: [Option<(u32, u32)>; MAX_SACK_BLOCKS],
}

impl TcpSummary {
    fn parse(packet: &[u8]) -> Option<Self> {
        let ip = Ipv4Packet::new_checked(packet).ok()?;
        if ip.protocol() != IpProtocol::Tcp || ip.is_fragment() {
            return None;
        }
        let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
        let repr = TcpRepr::parse(&tcp, IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr())).ok();
        let mut sack = [None; MAX_SACK_BLOCKS];
        if let Some(repr) = repr {
            for (slot, block) in sack.iter_mut().zip(repr.sack_ranges.iter().flatten()) {
                *slot = Some((block.left.0, block.right.0));
            }
        }
        Some(Self {
            src_port: tcp.src_port(),
            dst_port: tcp.dst_port(),
            flags: tcp.flags(),
            seq: tcp.seq_number().0,
            ack: tcp.ack_number().0,
            window: tcp.window_len(),
            payload_len: tcp.payload().len(),
            sack,
        })
    }
}

impl fmt::Display for TraceEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let arrow = match self.direction {
            Direction::In => "kernel->stack",
            Direction::Out => "stack->kernel",
        };
        let dropped = if self.dropped { " DROPPED" } else { "" };
        write!(
            f,
            "{:>6}.{:06} {arrow}{dropped} len {:>4}",
            self.at_micros / 1_000_000,
            self.at_micros % 1_000_000,
            self.len
        )?;
        let Some(tcp) = self.tcp else {
            return f.write_str(" (not TCP/IPv4)");
        };
        let names = [
            (0x02, 'S'),
            (0x01, 'F'),
            (0x04, 'R'),
            (0x08, 'P'),
            (0x10, '.'),
        ];
        let flags: String = names
            .iter()
            .filter(|(bit, _)| tcp.flags & bit != 0)
            .map(|(_, name)| *name)
            .collect();
        write!(
            f,
            " {}>{} [{flags}] seq {} ack {} win {} payload {}",
            tcp.src_port, tcp.dst_port, tcp.seq, tcp.ack, tcp.window, tcp.payload_len
        )?;
        for (index, (left, right)) in tcp.sack.iter().flatten().enumerate() {
            let label = if index == 0 { " sack" } else { "," };
            write!(f, "{label} {left}-{right}")?;
        }
        Ok(())
    }
}

/// The last packets in both directions.
#[derive(Clone, Debug)]
pub struct PacketTrace {
    entries: VecDeque<TraceEntry>,
    capacity: usize,
    /// Every packet ever recorded, including those no longer kept.
    pub total: u64,
}

impl PacketTrace {
    /// Entries kept by default.
    pub const DEFAULT_CAPACITY: usize = 4096;

    /// An empty trace keeping the last `capacity` packets.
    pub fn new(capacity: usize) -> Self {
        Self {
            // Grown on demand: a trace of everything is given `usize::MAX`.
            entries: VecDeque::with_capacity(capacity.min(Self::DEFAULT_CAPACITY)),
            capacity,
            total: 0,
        }
    }

    /// Summarises `packet`, which went `direction` or was `dropped` on purpose.
    pub fn record(&mut self, now: Instant, direction: Direction, dropped: bool, packet: &[u8]) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(TraceEntry {
            at_micros: now.as_micros(),
            direction,
            dropped,
            len: packet.len(),
            tcp: TcpSummary::parse(packet),
        });
        self.total += 1;
    }

    /// The kept entries, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &TraceEntry> {
        self.entries.iter()
    }

    /// The last `count` entries, one per line.
    pub fn tail(&self, count: usize) -> String {
        let skip = self.entries.len().saturating_sub(count);
        self.entries
            .iter()
            .skip(skip)
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use erebus_wire::ipv4::{self, Ipv4Repr};
    use erebus_wire::tcp::{SackBlock, SeqNumber, TcpControl};
    use std::net::Ipv4Addr;

    fn segment(payload: &[u8], sack: Option<SackBlock>) -> Vec<u8> {
        let src = Ipv4Addr::new(10, 77, 0, 1);
        let dst = Ipv4Addr::new(10, 77, 0, 2);
        let mut sack_ranges = [None; 3];
        sack_ranges[0] = sack;
        let tcp = TcpRepr {
            src_port: 5001,
            dst_port: 49999,
            control: TcpControl::Psh,
            seq_number: SeqNumber(1000),
            ack_number: Some(SeqNumber(77)),
            window_len: 512,
            sack_ranges,
            payload,
            ..TcpRepr::default()
        };
        let ip = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            protocol: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            ttl: 64,
        };
        let mut packet = vec![0u8; ip.buffer_len()];
        ip.emit(&mut Ipv4Packet::new_unchecked(&mut packet[..]));
        tcp.emit(
            &mut TcpPacket::new_unchecked(&mut packet[ipv4::HEADER_LEN..]),
            IpAddr::V4(src),
            IpAddr::V4(dst),
        );
        packet
    }

    #[test]
    fn trace_summarises_tcp_segments() {
        let mut trace = PacketTrace::new(8);
        let sack = SackBlock {
            left: SeqNumber(2000),
            right: SeqNumber(3000),
        };
        trace.record(
            Instant::from_micros(1_500_000),
            Direction::In,
            false,
            &segment(b"hello", Some(sack)),
        );
        let entry = *trace.entries().next().unwrap();
        let tcp = entry.tcp.unwrap();
        assert_eq!((tcp.src_port, tcp.dst_port), (5001, 49999));
        assert_eq!((tcp.seq, tcp.ack, tcp.window), (1000, 77, 512));
        assert_eq!(tcp.payload_len, 5);
        assert_eq!(tcp.sack, [Some((2000, 3000)), None, None]);
        assert_eq!(
            entry.to_string(),
            "     1.500000 kernel->stack len   57 5001>49999 [P.] seq 1000 ack 77 win 512 \
             payload 5 sack 2000-3000"
        );
    }

    #[test]
    fn trace_keeps_the_last_entries_and_marks_other_packets() {
        let mut trace = PacketTrace::new(2);
        for micros in 0..5 {
            trace.record(
                Instant::from_micros(micros),
                Direction::Out,
                false,
                &segment(&[], None),
            );
        }
        trace.record(Instant::from_micros(9), Direction::Out, true, &[0x60, 0, 0]);
        assert_eq!(trace.total, 6);
        let kept: Vec<u64> = trace.entries().map(|e| e.at_micros).collect();
        assert_eq!(kept, [4, 9]);
        assert!(
            trace
                .tail(1)
                .ends_with("stack->kernel DROPPED len    3 (not TCP/IPv4)")
        );
        assert_eq!(trace.tail(5).lines().count(), 2);
    }
}
