//! Bulk TCP between two stacks joined by an in-memory link, shared by the zero-allocation test
//! and the throughput benchmark: 16 MiB one way with the default buffers at an MTU of 1500, no
//! loss, a short constant delay, optionally paced.
//!
//! Virtual time jumps from one arrival or timer to the next, so a transfer costs what the
//! stacks do (segmenting, checksumming, acknowledging, copying through the buffers), not what
//! the link does. The link's queues and packet buffers are sized up front and recycled, so the
//! link allocates nothing while a transfer runs and an allocation count is the stacks' own.

#![allow(dead_code)] // The test and the benchmark each use a different part.

use core::time::Duration;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use erebus_alloc_counter::thread_allocations;
use erebus_net::{RecvError, SocketHandle, Stack, TcpConfig};
use erebus_sansio::tunnel::IpNet;
use erebus_sansio::{Instant, Seed, TunnelConfig};

/// The tunnel MTU, and so the size of every packet buffer.
pub(crate) const MTU: usize = 1500;
/// Bytes moved from the client to the server per transfer.
pub(crate) const TRANSFER: usize = 16 << 20;
/// One-way delay of the link: short enough that the stacks, not the path, set the pace.
pub(crate) const DELAY: Duration = Duration::from_micros(100);
/// Allocations are counted between these two amounts of data received: after the handshake
/// and slow start have sized every queue, and before the close.
pub(crate) const STEADY_FROM: usize = 2 << 20;
pub(crate) const STEADY_UNTIL: usize = 14 << 20;
/// The paced link's rate: 10 Gbit/s, about 1.2 µs per full-size packet.
pub(crate) const PACED_RATE: u64 = 1_250_000_000;
/// Packets the link holds at most without allocating: more than a full default window
/// (2 MiB of 1460-byte segments) plus its acknowledgments.
pub(crate) const LINK_CAPACITY: usize = 4096;
/// Bound on loop rounds, so that a stalled connection fails the benchmark instead of hanging.
pub(crate) const MAX_ROUNDS: u64 = 10_000_000;

/// A packet on the link: when it arrives, and its bytes.
pub(crate) struct InFlight {
    pub(crate) arrival: Instant,
    pub(crate) len: usize,
    pub(crate) bytes: Vec<u8>,
}

/// Both directions of a lossless link with a constant delay and an optional rate, so each is
/// a FIFO queue. Its
/// queues and packet buffers are sized for the largest flight up front and recycled, so the
/// link allocates nothing while a transfer runs and the allocation count is the stacks' own.
pub(crate) struct Link {
    /// Packets towards side 0 and towards side 1.
    pub(crate) queues: [VecDeque<InFlight>; 2],
    pub(crate) spare: Vec<Vec<u8>>,
    pub(crate) packets: u64,
    /// Bytes per second each way, or unlimited.
    pub(crate) rate: Option<u64>,
    /// When each direction's sender finishes serialising its last packet, in nanoseconds
    /// (finer than an `Instant`, so that back-to-back packets keep their spacing).
    pub(crate) busy_until_nanos: [u64; 2],
}

impl Link {
    pub(crate) fn new(rate: Option<u64>) -> Self {
        Self {
            rate,
            busy_until_nanos: [0; 2],
            queues: [
                VecDeque::with_capacity(LINK_CAPACITY),
                VecDeque::with_capacity(LINK_CAPACITY),
            ],
            spare: (0..LINK_CAPACITY).map(|_| vec![0; MTU]).collect(),
            packets: 0,
        }
    }

    /// Empties the link for the next transfer, keeping its memory.
    pub(crate) fn clear(&mut self) {
        for queue in &mut self.queues {
            self.spare.extend(queue.drain(..).map(|p| p.bytes));
        }
        self.packets = 0;
        self.busy_until_nanos = [0; 2];
    }

    /// Sends `len` bytes of `bytes` from side `from` at `now`.
    pub(crate) fn send(&mut self, now: Instant, from: usize, bytes: Vec<u8>, len: usize) {
        let now_nanos = now.as_micros() * 1_000;
        let start = now_nanos.max(self.busy_until_nanos[from]);
        let serialisation = self
            .rate
            .map_or(0, |rate| len as u64 * 1_000_000_000 / rate);
        self.busy_until_nanos[from] = start + serialisation;
        let arrival = Instant::from_micros(self.busy_until_nanos[from].div_ceil(1_000)) + DELAY;
        self.packets += 1;
        self.queues[1 - from].push_back(InFlight {
            arrival,
            len,
            bytes,
        });
    }

    pub(crate) fn buffer(&mut self) -> Vec<u8> {
        // Growing here would count the link's allocations as the stacks'.
        self.spare
            .pop()
            .expect("more packets in flight than LINK_CAPACITY")
    }

    pub(crate) fn next_arrival(&self) -> Option<Instant> {
        self.queues
            .iter()
            .filter_map(|q| q.front().map(|p| p.arrival))
            .min()
    }
}

/// One transfer's end points and progress.
pub(crate) struct Transfer {
    pub(crate) stacks: [Stack; 2],
    pub(crate) handles: [SocketHandle; 2],
    pub(crate) sent: usize,
    pub(crate) received: usize,
    pub(crate) closed: bool,
    pub(crate) finished: bool,
}

pub(crate) fn tunnel(last_octet: u8) -> TunnelConfig {
    TunnelConfig {
        ipv4: IpNet::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last_octet)), 24),
        mtu: MTU as u16,
        ..TunnelConfig::default()
    }
}

impl Transfer {
    /// Bytes of buffer storage the client's and the server's sockets hold.
    fn buffer_memory(&self) -> [usize; 2] {
        [0, 1].map(|side| {
            self.stacks[side]
                .socket(self.handles[side])
                .map_or(0, erebus_net::TcpSocket::buffer_memory)
        })
    }

    /// A client (side 0) connecting to a server (side 1) listening on port 80.
    pub(crate) fn new() -> Self {
        let seed = Seed::from_byte(1);
        let mut server = Stack::new(&tunnel(1), TcpConfig::default(), &seed.child("server"));
        let server_handle = server.listen(80).expect("listen");
        let mut client = Stack::new(&tunnel(2), TcpConfig::default(), &seed.child("client"));
        let server_addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 80));
        let client_handle = client.connect(Instant::ZERO, server_addr).expect("connect");
        Self {
            stacks: [client, server],
            handles: [client_handle, server_handle],
            sent: 0,
            received: 0,
            closed: false,
            finished: false,
        }
    }

    /// The applications: the client writes `source` and closes, the server reads (checking
    /// the bytes when `verify`) until the end of the stream.
    pub(crate) fn app(&mut self, source: &[u8], read_buf: &mut [u8], verify: bool) {
        let [client, server] = &mut self.stacks;
        let socket = client.socket_mut(self.handles[0]).expect("client socket");
        assert!(socket.error().is_none(), "client failed: {socket:?}");
        if self.sent < source.len() && socket.may_send() {
            self.sent += socket.send(&source[self.sent..]).expect("open for sending");
        }
        if self.sent == source.len() && !self.closed {
            socket.close();
            self.closed = true;
        }
        let socket = server.socket_mut(self.handles[1]).expect("server socket");
        assert!(socket.error().is_none(), "server failed: {socket:?}");
        loop {
            match socket.recv(read_buf) {
                Ok(0) | Err(RecvError::InvalidState) => break,
                Ok(n) => {
                    if verify {
                        assert!(
                            read_buf[..n] == source[self.received..self.received + n],
                            "corrupted bytes at offset {}",
                            self.received
                        );
                    }
                    self.received += n;
                }
                Err(RecvError::Finished) => {
                    self.finished = true;
                    break;
                }
            }
        }
    }
}

/// How many times storage of `from` bytes doubled to reach `to` (at least one step for any
/// growth: the last step may stop at the configured size).
fn doublings(from: usize, to: usize) -> u64 {
    let mut steps = 0;
    let mut size = from.max(1);
    while size < to {
        size *= 2;
        steps += 1;
    }
    steps
}

/// What one counted transfer saw in its steady state.
#[derive(Debug)]
pub(crate) struct Steady {
    pub(crate) allocations: u64,
    /// Times a socket's buffer storage doubled (the receive window grew with the transfer):
    /// each is one allocation, and the only kind allowed.
    pub(crate) buffer_growths: u64,
    /// Packets carried by the link, both ways.
    pub(crate) packets: u64,
    /// Packets the client sent (data segments, nearly all of them).
    pub(crate) client_packets: u64,
    /// Bytes the server received.
    pub(crate) bytes: usize,
}

/// Moves `source` from the client to the server over a fresh pair of stacks. With `count`,
/// returns the allocations and packets between [`STEADY_FROM`] and [`STEADY_UNTIL`] bytes
/// received; the bytes are then also checked.
pub(crate) fn transfer(
    link: &mut Link,
    read_buf: &mut [u8],
    source: &[u8],
    count: bool,
) -> Option<Steady> {
    let mut t = Transfer::new();
    link.clear();
    let mut now = Instant::ZERO;
    // (allocations, link packets, client packets, bytes received, buffer memory) at the start
    // of the window.
    let mut window_start: Option<(u64, u64, u64, usize, [usize; 2])> = None;
    let mut steady = None;
    for _ in 0..MAX_ROUNDS {
        t.app(source, read_buf, count);
        if count {
            let snapshot = || {
                (
                    thread_allocations(),
                    link.packets,
                    t.stacks[0].stats().tx_packets,
                    t.received,
                    t.buffer_memory(),
                )
            };
            if window_start.is_none() && t.received >= STEADY_FROM {
                window_start = Some(snapshot());
            } else if let Some(start) = window_start
                && steady.is_none()
                && t.received >= STEADY_UNTIL
            {
                let end = snapshot();
                steady = Some(Steady {
                    allocations: end.0 - start.0,
                    buffer_growths: (0..2)
                        .map(|side| doublings(start.4[side], end.4[side]))
                        .sum(),
                    packets: end.1 - start.1,
                    client_packets: end.2 - start.2,
                    bytes: end.3 - start.3,
                });
            }
        }
        if t.finished {
            assert_eq!(t.received, source.len(), "the stream ended early");
            return steady;
        }
        for (from, stack) in t.stacks.iter_mut().enumerate() {
            loop {
                let mut bytes = link.buffer();
                let Some(len) = stack.poll_egress(now, &mut bytes[..]) else {
                    link.spare.push(bytes);
                    break;
                };
                link.send(now, from, bytes, len);
            }
        }
        let next = [
            t.stacks[0].poll_timeout(),
            t.stacks[1].poll_timeout(),
            link.next_arrival(),
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("something is pending while the transfer is unfinished");
        now = now.max(next);
        for (to, stack) in t.stacks.iter_mut().enumerate() {
            while let Some(packet) = link.queues[to].front() {
                if packet.arrival > now {
                    break;
                }
                let packet = link.queues[to].pop_front().expect("front exists");
                stack
                    .ingress(now, &packet.bytes[..packet.len])
                    .expect("every packet on the link is valid");
                link.spare.push(packet.bytes);
            }
        }
    }
    panic!("no completion within {MAX_ROUNDS} rounds");
}

/// The bytes to send: a pattern that does not repeat at any small period, so misplaced
/// segments show up as corruption.
pub(crate) fn source() -> Vec<u8> {
    let mut bytes = vec![0u8; TRANSFER];
    Seed::from_byte(7).child("payload").rng().fill(&mut bytes);
    bytes
}

/// Runs one counted transfer over a link of `rate` and panics unless the stacks made no heap
/// allocation in its steady state (with the counting allocator installed) beyond the steps in
/// which a socket's buffer grew to follow the transfer (never one per packet).
pub(crate) fn steady_state_allocates_nothing(rate: Option<u64>) {
    assert!(erebus_alloc_counter::is_installed());
    let mut link = Link::new(rate);
    let mut read_buf = vec![0u8; 64 * 1024];
    let steady = transfer(&mut link, &mut read_buf, &source(), true)
        .expect("the transfer passes the counting window");
    assert!(
        steady.client_packets > 1000 && steady.packets > steady.client_packets,
        "the window saw the bulk of the transfer: {steady:?}"
    );
    assert!(
        steady.allocations <= steady.buffer_growths,
        "the stacks allocated in steady state beyond their buffers' growth: {steady:?}"
    );
}
