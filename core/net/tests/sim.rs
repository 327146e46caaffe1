//! Two stacks joined by a deterministic simulated link.
//!
//! The link has a rate, a queue, a delay, jitter, random loss, duplication and reordering, all
//! drawn from a seeded generator. Virtual time jumps to the next timer or arrival, so a
//! transfer of minutes takes milliseconds, and the same seed gives the same run: the same
//! final time and the same packet counts. A run that stops making progress fails after a
//! bounded number of steps instead of hanging.

use core::time::Duration;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use erebus_net::tcp::congestion::CongestionAlgorithm;
use erebus_net::{RecvError, SocketHandle, Stack, State, TcpConfig};
use erebus_sansio::tunnel::IpNet;
use erebus_sansio::{Instant, Seed, SeededRng, TunnelConfig};

/// One direction of the link.
#[derive(Clone, Copy, Debug)]
struct LinkParams {
    /// Propagation delay.
    delay: Duration,
    /// Extra delay, uniform in `0..jitter`, per packet.
    jitter: Duration,
    /// Packets lost, per million.
    loss_ppm: u32,
    /// Packets delivered twice, per million.
    duplicate_ppm: u32,
    /// Packets held back by an extra half delay, per million (reordering).
    reorder_ppm: u32,
    /// Bottleneck rate in bytes per second, or unlimited.
    rate: Option<u64>,
    /// Longest queueing delay before tail drop.
    max_queue: Duration,
}

impl LinkParams {
    fn clean(delay_ms: u64) -> Self {
        Self {
            delay: Duration::from_millis(delay_ms),
            jitter: Duration::ZERO,
            loss_ppm: 0,
            duplicate_ppm: 0,
            reorder_ppm: 0,
            rate: Some(12_500_000),
            max_queue: Duration::from_millis(100),
        }
    }

    /// 5 % loss, 1 % duplication, 2 % reordering, 2 ms jitter at 100 Mbit/s.
    fn hostile(delay_ms: u64) -> Self {
        Self {
            jitter: Duration::from_millis(2),
            loss_ppm: 50_000,
            duplicate_ppm: 10_000,
            reorder_ppm: 20_000,
            ..Self::clean(delay_ms)
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct LinkStats {
    sent: u64,
    lost: u64,
    queue_drops: u64,
    duplicated: u64,
    reordered: u64,
}

struct Link {
    rng: SeededRng,
    params: [LinkParams; 2],
    busy_until: [Instant; 2],
    in_flight: BTreeMap<(Instant, u64), (usize, Vec<u8>)>,
    counter: u64,
    stats: LinkStats,
}

impl Link {
    fn new(seed: &Seed, params: [LinkParams; 2]) -> Self {
        Self {
            rng: seed.child("sim.link").rng(),
            params,
            busy_until: [Instant::ZERO; 2],
            in_flight: BTreeMap::new(),
            counter: 0,
            stats: LinkStats::default(),
        }
    }

    fn chance(&mut self, ppm: u32) -> bool {
        self.rng.below(1_000_000) < ppm
    }

    fn jitter(&mut self, jitter: Duration) -> Duration {
        let micros = u32::try_from(jitter.as_micros()).unwrap_or(u32::MAX);
        Duration::from_micros(u64::from(self.rng.below(micros)))
    }

    fn send(&mut self, now: Instant, from: usize, packet: &[u8]) {
        self.stats.sent += 1;
        let params = self.params[from];
        let start = now.max(self.busy_until[from]);
        if start - now > params.max_queue {
            self.stats.queue_drops += 1;
            return;
        }
        let serialisation = params.rate.map_or(Duration::ZERO, |rate| {
            Duration::from_nanos(packet.len() as u64 * 1_000_000_000 / rate)
        });
        self.busy_until[from] = start + serialisation;
        if self.chance(params.loss_ppm) {
            self.stats.lost += 1;
            return;
        }
        let mut arrival = self.busy_until[from] + params.delay + self.jitter(params.jitter);
        if self.chance(params.reorder_ppm) {
            self.stats.reordered += 1;
            arrival += params.delay / 2;
        }
        self.push(arrival, 1 - from, packet.to_vec());
        if self.chance(params.duplicate_ppm) {
            self.stats.duplicated += 1;
            let again = arrival + self.jitter(params.jitter);
            self.push(again, 1 - from, packet.to_vec());
        }
    }

    fn push(&mut self, at: Instant, to: usize, packet: Vec<u8>) {
        self.counter += 1;
        self.in_flight.insert((at, self.counter), (to, packet));
    }

    fn next_arrival(&self) -> Option<Instant> {
        self.in_flight.keys().next().map(|&(at, _)| at)
    }

    fn pop_due(&mut self, now: Instant) -> Option<(usize, Vec<u8>)> {
        let (&key, _) = self.in_flight.iter().next()?;
        if key.0 > now {
            return None;
        }
        self.in_flight.remove(&key)
    }
}

struct Side {
    stack: Stack,
    handle: SocketHandle,
    to_send: Vec<u8>,
    sent: usize,
    expected: Vec<u8>,
    received: usize,
    got_fin: bool,
    closed: bool,
}

impl Side {
    fn app(&mut self, buf: &mut [u8]) {
        let socket = self.stack.socket_mut(self.handle).expect("socket exists");
        if let Some(error) = socket.error() {
            panic!("connection failed: {error} ({socket:?})");
        }
        if socket.may_send() && self.sent < self.to_send.len() {
            self.sent += socket
                .send(&self.to_send[self.sent..])
                .expect("open for sending");
        }
        if self.sent == self.to_send.len() && !self.closed && socket.may_send() {
            socket.close();
            self.closed = true;
        }
        loop {
            match socket.recv(buf) {
                Ok(0) => break,
                Ok(n) => {
                    let want = &self.expected[self.received..self.received + n];
                    assert!(
                        &buf[..n] == want,
                        "corrupted bytes at offset {}",
                        self.received
                    );
                    self.received += n;
                }
                Err(RecvError::Finished) => {
                    self.got_fin = true;
                    break;
                }
                Err(RecvError::InvalidState) => break,
            }
        }
    }

    fn done(&self) -> bool {
        let Some(socket) = self.stack.socket(self.handle) else {
            return false;
        };
        self.got_fin
            && self.received == self.expected.len()
            && matches!(socket.state(), State::TimeWait | State::Closed)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Outcome {
    final_time: Instant,
    packets: [u64; 2],
    retransmitted: [u64; 2],
    timeouts: [u64; 2],
    fast_recoveries: [u64; 2],
    link: LinkStats,
    steps: u64,
}

fn tunnel(local: u8) -> TunnelConfig {
    TunnelConfig {
        ipv4: IpNet::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, local)), 24),
        mtu: 1500,
        ..TunnelConfig::default()
    }
}

fn data(seed: &Seed, label: &str, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    seed.child(label).rng().fill(&mut bytes);
    bytes
}

/// Moves `bytes[0]` from the client to the server and `bytes[1]` back, both at once, then
/// closes both ways; panics on corruption, a failed connection or a stall.
fn run(seed: u8, params: [LinkParams; 2], bytes: [usize; 2], tcp: &TcpConfig) -> Outcome {
    let seed = Seed::from_byte(seed);
    let client_data = data(&seed, "sim.client", bytes[0]);
    let server_data = data(&seed, "sim.server", bytes[1]);
    let mut server_stack = Stack::new(&tunnel(1), tcp.clone(), &seed.child("sim.server"));
    let server_handle = server_stack.listen(80).expect("listen");
    let mut client_stack = Stack::new(&tunnel(2), tcp.clone(), &seed.child("sim.client"));
    let server_addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 80));
    let client_handle = client_stack
        .connect(Instant::ZERO, server_addr)
        .expect("connect");
    let mut sides = [
        Side {
            stack: client_stack,
            handle: client_handle,
            to_send: client_data.clone(),
            sent: 0,
            expected: server_data.clone(),
            received: 0,
            got_fin: false,
            closed: false,
        },
        Side {
            stack: server_stack,
            handle: server_handle,
            to_send: server_data,
            sent: 0,
            expected: client_data,
            received: 0,
            got_fin: false,
            closed: false,
        },
    ];
    let mut link = Link::new(&seed, params);
    let mut now = Instant::ZERO;
    let mut packet = vec![0u8; 1500];
    let mut read_buf = vec![0u8; 256 * 1024];
    let mut steps = 0u64;
    let mut steps_without_progress = 0u64;
    let deadline = Instant::from_secs(3600);
    loop {
        steps += 1;
        for side in &mut sides {
            side.app(&mut read_buf);
        }
        for (from, side) in sides.iter_mut().enumerate() {
            while let Some(len) = side.stack.poll_egress(now, &mut packet) {
                link.send(now, from, &packet[..len]);
            }
        }
        if sides.iter().all(Side::done) {
            break;
        }
        let next = [
            sides[0].stack.poll_timeout(),
            sides[1].stack.poll_timeout(),
            link.next_arrival(),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(|| {
            panic!(
                "stall at {now}: nothing left to happen before both sides finished\n{:?}\n{:?}\nsent {} {} received {} {}",
                sides[0].stack.socket(sides[0].handle),
                sides[1].stack.socket(sides[1].handle),
                sides[0].sent, sides[1].sent, sides[0].received, sides[1].received,
            )
        });
        if next > now {
            now = next;
            steps_without_progress = 0;
        } else {
            steps_without_progress += 1;
            assert!(
                steps_without_progress < 10_000,
                "livelock at {now}: a deadline in the past that produces nothing"
            );
        }
        assert!(
            now < deadline,
            "no completion within an hour of virtual time"
        );
        while let Some((to, bytes)) = link.pop_due(now) {
            sides[to]
                .stack
                .ingress(now, &bytes)
                .expect("every simulated packet parses");
        }
    }
    let stat = |i: usize| {
        *sides[i]
            .stack
            .socket(sides[i].handle)
            .expect("socket")
            .stats()
    };
    Outcome {
        final_time: now,
        packets: [
            sides[0].stack.stats().tx_packets,
            sides[1].stack.stats().tx_packets,
        ],
        retransmitted: [
            stat(0).retransmitted_segments,
            stat(1).retransmitted_segments,
        ],
        timeouts: [stat(0).timeouts, stat(1).timeouts],
        fast_recoveries: [stat(0).fast_recoveries, stat(1).fast_recoveries],
        link: link.stats,
        steps,
    }
}

fn megabytes_per_second(bytes: usize, time: Instant) -> f64 {
    bytes as f64 / 1e6 / Duration::from_micros(time.as_micros()).as_secs_f64()
}

const MIB: usize = 1 << 20;

#[test]
fn one_mib_each_way_clean() {
    let outcome = run(
        1,
        [LinkParams::clean(10); 2],
        [MIB, MIB],
        &TcpConfig::default(),
    );
    println!("{outcome:?}");
    assert_eq!(outcome.retransmitted, [0, 0]);
    assert_eq!(outcome.timeouts, [0, 0]);
    // 2 MiB over a shared 100 Mbit/s, 20 ms RTT link in well under two seconds.
    assert!(outcome.final_time < Instant::from_secs(2), "{outcome:?}");
}

#[test]
fn one_mib_each_way_through_five_percent_loss() {
    let outcome = run(
        2,
        [LinkParams::hostile(20); 2],
        [MIB, MIB],
        &TcpConfig::default(),
    );
    println!("{outcome:?}");
    assert!(outcome.link.lost > 0 && outcome.link.duplicated > 0 && outcome.link.reordered > 0);
    assert!(outcome.fast_recoveries[0] + outcome.fast_recoveries[1] > 0);
}

#[test]
fn new_reno_without_sack_or_timestamps_survives_loss() {
    let tcp = TcpConfig {
        congestion: CongestionAlgorithm::NewReno,
        sack: false,
        timestamps: false,
        ..TcpConfig::default()
    };
    let outcome = run(3, [LinkParams::hostile(20); 2], [MIB, 64 * 1024], &tcp);
    println!("{outcome:?}");
    assert!(outcome.fast_recoveries[0] > 0, "{outcome:?}");
}

#[test]
fn small_buffers_and_no_window_scaling_still_complete() {
    let tcp = TcpConfig {
        rx_buffer_size: 20_000,
        tx_buffer_size: 7_000,
        window_scaling: false,
        delayed_ack: None,
        ..TcpConfig::default()
    };
    let outcome = run(4, [LinkParams::hostile(5); 2], [300_000, 300_000], &tcp);
    println!("{outcome:?}");
}

#[test]
fn same_seed_same_run() {
    let params = [LinkParams::hostile(20); 2];
    let first = run(5, params, [MIB / 2, MIB / 2], &TcpConfig::default());
    let second = run(5, params, [MIB / 2, MIB / 2], &TcpConfig::default());
    assert_eq!(first, second);
    let other = run(6, params, [MIB / 2, MIB / 2], &TcpConfig::default());
    assert_ne!(first, other);
}

/// 1.5 Gbit/s with 1 ms of RTT: the default buffers must keep the path full.
#[test]
fn fast_short_path_is_kept_full() {
    let params = LinkParams {
        delay: Duration::from_micros(500),
        rate: Some(187_500_000),
        max_queue: Duration::from_millis(5),
        ..LinkParams::clean(0)
    };
    let bytes = 32 * MIB;
    let outcome = run(7, [params; 2], [bytes, 0], &TcpConfig::default());
    let rate = megabytes_per_second(bytes, outcome.final_time);
    println!("{outcome:?}\n{rate:.1} MB/s of virtual time");
    assert!(rate > 150.0, "only {rate:.1} MB/s of 187.5: {outcome:?}");
}

/// The goal: 16 MiB each way through loss, reordering, duplication and 20 ms of delay; run
/// twice with the same seed, it replays exactly (every packet, retransmission and timer).
#[test]
fn sixteen_mib_each_way_through_a_hostile_link() {
    let hostile = || {
        run(
            8,
            [LinkParams::hostile(20); 2],
            [16 * MIB, 16 * MIB],
            &TcpConfig::default(),
        )
    };
    let outcome = hostile();
    println!(
        "{outcome:?}\nvirtual {:.2} MB/s (both directions)",
        megabytes_per_second(32 * MIB, outcome.final_time)
    );
    // The link really was hostile, and the stacks really repaired it.
    let link = &outcome.link;
    assert!(
        link.lost > 0 && link.duplicated > 0 && link.reordered > 0,
        "{link:?}"
    );
    assert!(outcome.retransmitted.iter().all(|&r| r > 0), "{outcome:?}");
    assert_eq!(hostile(), outcome, "the same seed must replay the same run");
}
