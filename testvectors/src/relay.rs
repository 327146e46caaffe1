//! A seeded fault-injecting relay for tests, between a VPN client and its real server.
//!
//! The relay runs on a thread of the test process that entered the client's network namespace
//! (`setns`), so erebus reaches it on the namespace's loopback and it reaches the server over
//! the veth pair. Point the client's profile at [`UdpRelay::listen_addr`] or
//! [`TcpRelay::listen_addr`] instead of the server.
//!
//! [`UdpRelay`] forwards datagrams both ways and applies [`Faults`] to each: independent loss,
//! burst loss, reordering (a datagram held back), duplication, delay with jitter, an MTU black
//! hole (datagrams above a size vanish without an ICMP error), and NAT rebinding (its upstream
//! socket moves to a new source port, as a NAT that forgot the mapping does). Toward the
//! client it can also inject hostile packets beside the intact originals: replays of earlier
//! datagrams, copies with a byte flipped or cut short, and spoofed datagrams (garbage, or
//! copies of the server's) sent from another port, i.e. not from the address the client
//! talks to. [`TcpRelay`]
//! forwards one stream at a time, cutting it into random pieces with a delay between them, and
//! can cut the connection as a middlebox that drops state does.
//!
//! Every random choice comes from a [`Seed`], one generator per direction, so a run with the
//! same seed and the same arrival order drops and reorders the same datagrams. [`RelayStats`]
//! counts what the relay did; tests assert that the faults were injected, not merely
//! configured.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, ErrorKind, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use erebus_sansio::rng::{Seed, SeededRng};

use crate::netns::HarnessError;

/// What the relay does to each datagram (per direction, independently). Probabilities are per
/// mille (parts per thousand).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Probability that a datagram is dropped.
    pub loss_per_mille: u32,
    /// Probability that a burst of losses starts at a datagram.
    pub burst_per_mille: u32,
    /// How many datagrams in a row a burst drops.
    pub burst_len: u32,
    /// Probability that a datagram is held back by [`reorder_delay`](Self::reorder_delay), so
    /// later ones overtake it.
    pub reorder_per_mille: u32,
    /// How long a reordered datagram is held back.
    pub reorder_delay: Duration,
    /// Probability that a datagram is sent twice.
    pub duplicate_per_mille: u32,
    /// Delay added to every datagram.
    pub delay: Duration,
    /// A random extra delay between zero and this, per datagram.
    pub jitter: Duration,
    /// The MTU black hole: datagrams with more payload bytes than this vanish.
    pub max_datagram: Option<usize>,
    /// Toward the client only: probability that after a datagram one of the last
    /// [`REPLAY_HISTORY`] ones is sent again, byte for byte.
    pub replay_per_mille: u32,
    /// Toward the client only: probability that a datagram is accompanied by a copy with
    /// one byte flipped, sent just before or just after it (half and half).
    pub tamper_per_mille: u32,
    /// Toward the client only: probability that a datagram is accompanied by a copy cut
    /// short (at least one byte kept, at least one cut), sent just before or after it.
    pub truncate_per_mille: u32,
    /// Toward the client only: probability that a datagram is accompanied by a spoofed one,
    /// sent to the client from another port of the relay: random bytes or a copy of the
    /// datagram, half and half.
    pub spoof_per_mille: u32,
}

/// How many of the latest datagrams to the client a replay picks from.
pub const REPLAY_HISTORY: usize = 32;

impl Faults {
    /// No faults: a plain relay.
    pub fn none() -> Self {
        Self::default()
    }

    /// Independent loss of `per_mille` datagrams in a thousand, nothing else.
    pub fn loss(per_mille: u32) -> Self {
        Self {
            loss_per_mille: per_mille,
            ..Self::default()
        }
    }
}

/// What a relay did, in both directions together.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Datagrams (or stream pieces) forwarded, duplicates included.
    pub forwarded: AtomicU64,
    /// Datagrams dropped by independent loss.
    pub lost: AtomicU64,
    /// Datagrams dropped inside a burst.
    pub burst_lost: AtomicU64,
    /// Datagrams held back so that later ones overtook them.
    pub reordered: AtomicU64,
    /// Datagrams sent twice.
    pub duplicated: AtomicU64,
    /// Datagrams that fell into the MTU black hole.
    pub too_big: AtomicU64,
    /// Earlier datagrams sent to the client again.
    pub replayed: AtomicU64,
    /// Copies with a byte flipped sent to the client.
    pub tampered: AtomicU64,
    /// Copies cut short sent to the client.
    pub truncated: AtomicU64,
    /// Datagrams sent to the client from another port.
    pub spoofed: AtomicU64,
    /// Times the upstream socket moved to a new source port.
    pub rebinds: AtomicU64,
    /// TCP connections accepted.
    pub connections: AtomicU64,
    /// TCP connections the relay cut.
    pub cuts: AtomicU64,
}

impl RelayStats {
    /// Every counter on one line, for messages.
    pub fn summary(&self) -> String {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        format!(
            "forwarded {}, lost {}, burst-lost {}, reordered {}, duplicated {}, too big {}, \
             replayed {}, tampered {}, truncated {}, spoofed {}, rebinds {}, connections {}, \
             cuts {}",
            get(&self.forwarded),
            get(&self.lost),
            get(&self.burst_lost),
            get(&self.reordered),
            get(&self.duplicated),
            get(&self.too_big),
            get(&self.replayed),
            get(&self.tampered),
            get(&self.truncated),
            get(&self.spoofed),
            get(&self.rebinds),
            get(&self.connections),
            get(&self.cuts)
        )
    }

    /// The value of one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Settings shared between a relay thread and its handle.
#[derive(Debug)]
struct Shared {
    faults: Mutex<Faults>,
    stats: RelayStats,
    stop: AtomicBool,
    rebind: AtomicBool,
    cut: AtomicBool,
}

impl Shared {
    fn new(faults: Faults) -> Arc<Self> {
        Arc::new(Self {
            faults: Mutex::new(faults),
            stats: RelayStats::default(),
            stop: AtomicBool::new(false),
            rebind: AtomicBool::new(false),
            cut: AtomicBool::new(false),
        })
    }

    fn faults(&self) -> Faults {
        self.faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn io_error(context: String) -> impl FnOnce(io::Error) -> HarnessError {
    move |source| HarnessError::Io { context, source }
}

/// Enters the network namespace named `netns` (as `ip netns` names it) on this thread.
fn enter_netns(netns: &str) -> Result<(), HarnessError> {
    let path = PathBuf::from("/run/netns").join(netns);
    let file =
        std::fs::File::open(&path).map_err(io_error(format!("opening {}", path.display())))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|errno| {
        HarnessError::Io {
            context: format!("setns into {}", path.display()),
            source: errno.into(),
        }
    })
}

/// Starts `body` on a thread inside `netns` once `setup` (run there first) succeeded, and
/// returns the thread and the address `setup`'s socket is bound to.
fn spawn_in_netns<S>(
    netns: &str,
    name: &str,
    setup: impl FnOnce() -> Result<S, HarnessError> + Send + 'static,
    body: impl FnOnce(S) + Send + 'static,
) -> Result<(JoinHandle<()>, SocketAddr), HarnessError>
where
    S: Bound + 'static,
{
    let netns = netns.to_owned();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || match enter_netns(&netns).and_then(|()| setup()) {
            Ok(state) => {
                let _ = ready_tx.send(state.local_addr());
                body(state);
            }
            Err(error) => {
                let _ = ready_tx.send(Err(error));
            }
        })
        .map_err(io_error(format!("spawning {name}")))?;
    let addr = ready_rx.recv().map_err(|_| HarnessError::Io {
        context: format!("starting {name}"),
        source: io::Error::other("the relay thread ended before it was ready"),
    })??;
    Ok((thread, addr))
}

/// A relay's listening socket, whose address the handle reports.
trait Bound {
    fn local_addr(&self) -> Result<SocketAddr, HarnessError>;
}

/// One direction of a UDP relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Direction {
    ToServer,
    ToClient,
    /// To the client, from the relay's other port.
    Spoofed,
}

/// A datagram waiting for its release time.
type Pending = Reverse<(Instant, u64, Direction, Vec<u8>)>;

struct UdpState {
    listen: UdpSocket,
    upstream: UdpSocket,
    /// Where spoofed datagrams come from: the relay's address, another port.
    spoofer: UdpSocket,
    server: SocketAddr,
}

impl Bound for UdpState {
    fn local_addr(&self) -> Result<SocketAddr, HarnessError> {
        self.listen
            .local_addr()
            .map_err(io_error("the relay's address".into()))
    }
}

/// The per-direction fault state: its generator, the burst in progress, and the latest
/// datagrams (for replays).
struct FaultDice {
    rng: SeededRng,
    burst_left: u32,
    history: VecDeque<Vec<u8>>,
}

impl FaultDice {
    fn roll(&mut self, per_mille: u32) -> bool {
        per_mille > 0 && self.rng.below(1000) < per_mille
    }

    /// A number in `0..bound`, 0 for an empty range.
    fn below(&mut self, bound: usize) -> usize {
        match u32::try_from(bound) {
            Ok(0) => 0,
            Ok(bound) => self.rng.below(bound) as usize,
            Err(_) => self.rng.next_u64() as usize % bound,
        }
    }

    fn jitter(&mut self, max: Duration) -> Duration {
        let micros = u32::try_from(max.as_micros()).unwrap_or(u32::MAX);
        if micros == 0 {
            Duration::ZERO
        } else {
            Duration::from_micros(u64::from(self.rng.below(micros)))
        }
    }
}

/// A UDP relay between one client and its server (see the module documentation). Stopped
/// and joined on drop.
#[derive(Debug)]
pub struct UdpRelay {
    shared: Arc<Shared>,
    listen: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl UdpRelay {
    /// Starts a relay inside the namespace `netns`, listening on `listen` (port 0 for any)
    /// and forwarding to `server`, with `faults` drawn from `seed`.
    pub fn start(
        netns: &str,
        listen: SocketAddr,
        server: SocketAddr,
        faults: Faults,
        seed: &Seed,
    ) -> Result<Self, HarnessError> {
        let shared = Shared::new(faults);
        let thread_shared = Arc::clone(&shared);
        let seeds = [seed.child("relay.to-server"), seed.child("relay.to-client")];
        let (thread, listen) = spawn_in_netns(
            netns,
            "udp-relay",
            move || {
                let listen = UdpSocket::bind(listen)
                    .map_err(io_error(format!("binding the relay to {listen}")))?;
                let upstream = upstream_socket(server)?;
                let spoofer = UdpSocket::bind(SocketAddr::new(
                    listen
                        .local_addr()
                        .map_err(io_error("the relay's address".into()))?
                        .ip(),
                    0,
                ))
                .and_then(|socket| socket.set_nonblocking(true).map(|()| socket))
                .map_err(io_error("binding the relay's spoofing socket".into()))?;
                Ok(UdpState {
                    listen,
                    upstream,
                    spoofer,
                    server,
                })
            },
            move |state| run_udp(state, &thread_shared, seeds),
        )?;
        Ok(Self {
            shared,
            listen,
            thread: Some(thread),
        })
    }

    /// Where the client sends: the relay's address in the client namespace.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// What the relay did so far.
    pub fn stats(&self) -> &RelayStats {
        &self.shared.stats
    }

    /// Replaces the faults, e.g. to start losing datagrams once a session is up.
    pub fn set_faults(&self, faults: Faults) {
        *self
            .shared
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = faults;
    }

    /// Moves the upstream socket to a new source port before the next datagram to the server:
    /// the server sees its client come from another address, as after a NAT rebinding.
    pub fn rebind(&self) {
        self.shared.rebind.store(true, Ordering::Relaxed);
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn upstream_socket(server: SocketAddr) -> Result<UdpSocket, HarnessError> {
    let any: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().unwrap_or_else(|_| unreachable!())
    } else {
        "[::]:0".parse().unwrap_or_else(|_| unreachable!())
    };
    let socket = UdpSocket::bind(any).map_err(io_error("binding the relay's upstream".into()))?;
    socket
        .connect(server)
        .map_err(io_error(format!("connecting the relay to {server}")))?;
    socket
        .set_nonblocking(true)
        .map_err(io_error("the relay's upstream".into()))?;
    Ok(socket)
}

/// How long the relay sleeps at most between looks at its sockets and queue.
const TICK: Duration = Duration::from_micros(200);

fn run_udp(mut state: UdpState, shared: &Shared, seeds: [Seed; 2]) {
    let _ = state.listen.set_nonblocking(true);
    let mut dice = seeds.map(|seed| FaultDice {
        rng: seed.rng(),
        burst_left: 0,
        history: VecDeque::with_capacity(REPLAY_HISTORY),
    });
    let mut queue: BinaryHeap<Pending> = BinaryHeap::new();
    let mut sequence = 0u64;
    let mut client: Option<SocketAddr> = None;
    let mut buf = vec![0u8; 65536];
    let stats = &shared.stats;
    while !shared.stop.load(Ordering::Relaxed) {
        let mut idle = true;
        let faults = shared.faults();
        // From the client.
        loop {
            match state.listen.recv_from(&mut buf) {
                Ok((len, from)) => {
                    idle = false;
                    client = Some(from);
                    if shared.rebind.swap(false, Ordering::Relaxed)
                        && let Ok(socket) = upstream_socket(state.server)
                    {
                        state.upstream = socket;
                        stats.rebinds.fetch_add(1, Ordering::Relaxed);
                    }
                    let dice = &mut dice[0];
                    schedule(
                        &mut queue,
                        &mut sequence,
                        dice,
                        &faults,
                        stats,
                        Direction::ToServer,
                        &buf[..len],
                    );
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        // From the server.
        loop {
            match state.upstream.recv(&mut buf) {
                Ok(len) => {
                    idle = false;
                    let dice = &mut dice[1];
                    schedule(
                        &mut queue,
                        &mut sequence,
                        dice,
                        &faults,
                        stats,
                        Direction::ToClient,
                        &buf[..len],
                    );
                }
                // A refused send (no server yet) shows up here as ConnectionRefused.
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        // Release what is due.
        let now = Instant::now();
        while let Some(Reverse((at, _, _, _))) = queue.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, _, direction, datagram))) = queue.pop() else {
                break;
            };
            idle = false;
            let sent = match direction {
                Direction::ToServer => state.upstream.send(&datagram).is_ok(),
                Direction::ToClient => {
                    client.is_some_and(|to| state.listen.send_to(&datagram, to).is_ok())
                }
                Direction::Spoofed => {
                    // Counted whether or not the client's socket takes it: the kernel drops
                    // a datagram a connected socket is not connected to.
                    client.is_some_and(|to| state.spoofer.send_to(&datagram, to).is_ok())
                }
            };
            if sent {
                stats.forwarded.fetch_add(1, Ordering::Relaxed);
            }
        }
        if idle {
            std::thread::sleep(TICK);
        }
    }
}

/// Applies `faults` to one datagram and queues what survives.
fn schedule(
    queue: &mut BinaryHeap<Pending>,
    sequence: &mut u64,
    dice: &mut FaultDice,
    faults: &Faults,
    stats: &RelayStats,
    direction: Direction,
    datagram: &[u8],
) {
    let count = |counter: &AtomicU64| {
        counter.fetch_add(1, Ordering::Relaxed);
    };
    if faults.max_datagram.is_some_and(|max| datagram.len() > max) {
        return count(&stats.too_big);
    }
    if dice.burst_left > 0 {
        dice.burst_left -= 1;
        return count(&stats.burst_lost);
    }
    if faults.burst_len > 0 && dice.roll(faults.burst_per_mille) {
        dice.burst_left = faults.burst_len - 1;
        return count(&stats.burst_lost);
    }
    if dice.roll(faults.loss_per_mille) {
        return count(&stats.lost);
    }
    let mut at = Instant::now() + faults.delay + dice.jitter(faults.jitter);
    if dice.roll(faults.reorder_per_mille) {
        at += faults.reorder_delay;
        count(&stats.reordered);
    }
    let copies = if dice.roll(faults.duplicate_per_mille) {
        count(&stats.duplicated);
        2
    } else {
        1
    };
    // `early`: just ahead of the original, so the client meets the forgery first.
    let mut push = |direction: Direction, bytes: Vec<u8>, early: bool| {
        *sequence += 1;
        let at = if early {
            at.checked_sub(Duration::from_nanos(1)).unwrap_or(at)
        } else {
            at
        };
        queue.push(Reverse((at, *sequence, direction, bytes)));
    };
    for _ in 0..copies {
        push(direction, datagram.to_vec(), false);
    }
    if direction != Direction::ToClient {
        return;
    }
    // The hostile extras, beside the intact original: a replay after it, a damaged copy
    // before or after it (half and half), a spoofed one with it.
    if dice.roll(faults.replay_per_mille) && !dice.history.is_empty() {
        let back = dice.below(dice.history.len());
        if let Some(earlier) = dice.history.get(dice.history.len() - 1 - back) {
            push(Direction::ToClient, earlier.clone(), false);
            count(&stats.replayed);
        }
    }
    if dice.roll(faults.tamper_per_mille) && !datagram.is_empty() {
        let mut copy = datagram.to_vec();
        let at = dice.below(copy.len());
        // A non-zero mask: the byte always changes.
        let mask = 1 + dice.below(255) as u8;
        if let Some(byte) = copy.get_mut(at) {
            *byte ^= mask;
        }
        let early = dice.roll(500);
        push(Direction::ToClient, copy, early);
        count(&stats.tampered);
    }
    if dice.roll(faults.truncate_per_mille) && datagram.len() > 1 {
        let keep = 1 + dice.below(datagram.len() - 1);
        let early = dice.roll(500);
        push(Direction::ToClient, datagram[..keep].to_vec(), early);
        count(&stats.truncated);
    }
    if dice.roll(faults.spoof_per_mille) {
        let bytes = if dice.roll(500) {
            datagram.to_vec()
        } else {
            let mut garbage = vec![0; 1 + dice.below(1400)];
            dice.rng.fill(&mut garbage);
            garbage
        };
        push(Direction::Spoofed, bytes, false);
        count(&stats.spoofed);
    }
    if faults.replay_per_mille > 0 {
        // The oldest buffer is reused for the newest datagram.
        let mut slot = if dice.history.len() == REPLAY_HISTORY {
            dice.history.pop_front().unwrap_or_default()
        } else {
            Vec::new()
        };
        slot.clear();
        slot.extend_from_slice(datagram);
        dice.history.push_back(slot);
    }
}

struct TcpState {
    listener: TcpListener,
}

impl Bound for TcpState {
    fn local_addr(&self) -> Result<SocketAddr, HarnessError> {
        self.listener
            .local_addr()
            .map_err(io_error("the relay's address".into()))
    }
}

/// A TCP relay: accepts a client connection, connects to the server, and copies each way in
/// pieces of random size (1 to `max_piece` bytes) with `faults.delay` plus jitter between
/// them. One connection at a time; a new one replaces the old. [`cut`](Self::cut) resets the
/// current connection both ways. Stopped and joined on drop.
#[derive(Debug)]
pub struct TcpRelay {
    shared: Arc<Shared>,
    listen: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl TcpRelay {
    /// Starts a relay inside `netns` listening on `listen`, forwarding to `server`.
    pub fn start(
        netns: &str,
        listen: SocketAddr,
        server: SocketAddr,
        faults: Faults,
        max_piece: usize,
        seed: &Seed,
    ) -> Result<Self, HarnessError> {
        let shared = Shared::new(faults);
        let thread_shared = Arc::clone(&shared);
        let seed = seed.child("relay.tcp");
        let (thread, listen) = spawn_in_netns(
            netns,
            "tcp-relay",
            move || {
                let listener = TcpListener::bind(listen)
                    .map_err(io_error(format!("binding the relay to {listen}")))?;
                listener
                    .set_nonblocking(true)
                    .map_err(io_error("the relay's listener".into()))?;
                Ok(TcpState { listener })
            },
            move |state| run_tcp(&state, server, &thread_shared, &seed, max_piece.max(1)),
        )?;
        Ok(Self {
            shared,
            listen,
            thread: Some(thread),
        })
    }

    /// Where the client connects.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// What the relay did so far.
    pub fn stats(&self) -> &RelayStats {
        &self.shared.stats
    }

    /// Resets the current connection both ways, as a middlebox that lost its state does.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::Relaxed);
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One relayed connection: the client's and the server's streams.
struct Pair {
    client: TcpStream,
    server: TcpStream,
}

fn run_tcp(state: &TcpState, server: SocketAddr, shared: &Shared, seed: &Seed, max_piece: usize) {
    let mut rng = seed.rng();
    let mut pair: Option<Pair> = None;
    let mut buf = vec![0u8; max_piece];
    let stats = &shared.stats;
    let max_piece = u32::try_from(max_piece).unwrap_or(u32::MAX);
    while !shared.stop.load(Ordering::Relaxed) {
        if let Ok((client, _)) = state.listener.accept()
            && let Ok(upstream) = TcpStream::connect_timeout(&server, Duration::from_secs(5))
        {
            let _ = client.set_nonblocking(true);
            let _ = upstream.set_nonblocking(true);
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            stats.connections.fetch_add(1, Ordering::Relaxed);
            pair = Some(Pair {
                client,
                server: upstream,
            });
        }
        if shared.cut.swap(false, Ordering::Relaxed)
            && let Some(old) = pair.take()
        {
            // Linger 0: the close sends a reset.
            let _ = socket_linger_zero(&old.client);
            let _ = socket_linger_zero(&old.server);
            stats.cuts.fetch_add(1, Ordering::Relaxed);
        }
        let mut idle = true;
        let mut closed = false;
        if let Some(pair) = pair.as_mut() {
            let faults = shared.faults();
            for (from, to) in [(0, 1), (1, 0)] {
                let mut streams = [&pair.client, &pair.server];
                let piece = (1 + rng.below(max_piece) as usize).min(buf.len());
                match streams[from].read(&mut buf[..piece]) {
                    Ok(0) => closed = true,
                    Ok(len) => {
                        idle = false;
                        let pause = faults.delay
                            + Duration::from_micros(u64::from(
                                rng.below(
                                    u32::try_from(faults.jitter.as_micros())
                                        .unwrap_or(u32::MAX)
                                        .max(1),
                                ),
                            ));
                        if !pause.is_zero() {
                            std::thread::sleep(pause);
                        }
                        if write_all_blocking(streams[to], &buf[..len]).is_err() {
                            closed = true;
                        } else {
                            stats.forwarded.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(error) if error.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => closed = true,
                }
            }
        }
        if closed && let Some(old) = pair.take() {
            let _ = old.client.shutdown(Shutdown::Both);
            let _ = old.server.shutdown(Shutdown::Both);
        }
        if idle {
            std::thread::sleep(TICK);
        }
    }
}

/// Writes all of `data` to a non-blocking stream, waiting while it is full.
fn write_all_blocking(mut stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !data.is_empty() {
        match stream.write(data) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(written) => data = &data[written..],
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err(ErrorKind::TimedOut.into());
                }
                std::thread::sleep(TICK);
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

fn socket_linger_zero(stream: &TcpStream) -> io::Result<()> {
    nix::sys::socket::setsockopt(
        stream,
        nix::sys::socket::sockopt::Linger,
        &nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .map_err(io::Error::from)
}
