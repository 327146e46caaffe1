//! erebus's user-space TCP against the Linux kernel's TCP, over a TUN device in a network
//! namespace of the test's own (see `erebus_testvectors::tun_netns`).
//!
//! - `stack_connects_to_kernel_*`: the stack connects to a kernel listener; each side sends
//!   the pattern stream and reads the other's to the end, at the same time.
//! - `kernel_connects_to_stack_*`: the same with a kernel client and a stack listener.
//! - `tun_device_*`: the TUN adapter alone, in blocking mode, one UDP datagram each way.
//! - `stack_resolves_through_dnsmasq_over_udp`: erebus's DNS stub resolver over the stack's
//!   UDP, asking dnsmasq on the kernel's side of the device.
//!
//! The transfers check the SHA-256 of every byte on both sides and that both ends close
//! cleanly, and print throughput per direction, the stack's retransmission counters and the
//! kernel's TCP counters for the namespace. On failure they print the last packets.
//!
//! Needs root; without it every test prints a banner and fails, unless `EREBUS_SKIP_INTEROP=1`
//! is set outside CI. `EREBUS_TUN_TRANSFER_MIB` sets the size of each direction (default 64
//! in release builds, 16 in debug builds); `EREBUS_TUN_TRACE=<dir>` writes every packet the
//! stack saw, one line each, to `<dir>/<scenario>.trace`.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant as StdInstant};

use erebus::tun::{TunDevice, TunMode};
use erebus_net::dns::{Addresses, Family, ResolveError, Resolver, ResolverOptions};
use erebus_net::{SocketHandle, Stack, State, TcpConfig, TcpStats};
use erebus_sansio::{Instant, Seed};
use erebus_testvectors::netns::{
    HarnessError, PatternStream, hex, pattern_sha256, should_run_interop,
};
use erebus_testvectors::tun_netns::{
    KERNEL_ADDR, KernelTcpCounters, STACK_ADDR, TUN_NAME, TunNamespace, stack_tunnel_config,
    wait_for_carrier,
};
use erebus_testvectors::tun_stack::{LoopCounters, PacketTrace, RunError, StackResolver, TunStack};
use erebus_wire::IpProtocol;
use erebus_wire::ipv4::{self, Ipv4Packet, Ipv4Repr};
use erebus_wire::udp::{UdpPacket, UdpRepr};
use sha2::{Digest, Sha256};

const KERNEL_PORT: u16 = 5001;
const STACK_PORT: u16 = 5002;
/// Bytes handed to one `send` or `write` at a time.
const CHUNK: usize = 256 * 1024;

/// The bulk tests run one at a time: they share two cores, and their figures mean something
/// only alone.
static BULK: Mutex<()> = Mutex::new(());

fn transfer_len() -> u64 {
    let default_mib = if cfg!(debug_assertions) { 16 } else { 64 };
    let mib = std::env::var("EREBUS_TUN_TRANSFER_MIB")
        .ok()
        .and_then(|value| value.parse::<u64>().ok())
        .unwrap_or(default_mib);
    mib << 20
}

fn time_limit() -> Duration {
    // Generous: release moves 64 MiB each way in a few seconds; debug is far slower.
    if cfg!(debug_assertions) {
        Duration::from_secs(240)
    } else {
        Duration::from_secs(45)
    }
}

fn seed() -> Seed {
    Seed::from_byte(0x77)
}

/// A thread in the namespace: `Err` outside when it could not enter, inside when it failed.
type SideThread<T> = JoinHandle<Result<Result<T, String>, HarnessError>>;

/// What one side of a transfer saw.
#[derive(Debug)]
struct SideReport {
    bytes_received: u64,
    received_sha256: [u8; 32],
    /// When the last byte (and the end of stream) arrived.
    received_all_at: StdInstant,
}

/// What the stack side saw, with its counters.
#[derive(Debug)]
struct StackReport {
    side: SideReport,
    /// When the stack opened its socket (connect or listen), with the device running.
    opened_at: StdInstant,
    tcp: TcpStats,
    /// The counters of the stack's loop, with the packets it dropped on purpose.
    counters: LoopCounters,
    final_state: State,
    summary: String,
}

fn mbps(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)
}

// ---------------------------------------------------------------------------------------------
// The stack side: one connection that sends the pattern, reads to the end and closes.
// ---------------------------------------------------------------------------------------------

struct StackBulk {
    handle: SocketHandle,
    total: u64,
    pattern: PatternStream,
    chunk: Vec<u8>,
    chunk_start: usize,
    chunk_end: usize,
    sent: u64,
    close_requested: bool,
    hash: Sha256,
    received: u64,
    received_all_at: Option<StdInstant>,
}

impl StackBulk {
    fn new(handle: SocketHandle, total: u64) -> Self {
        Self {
            handle,
            total,
            pattern: PatternStream::new(),
            chunk: vec![0u8; CHUNK],
            chunk_start: 0,
            chunk_end: 0,
            sent: 0,
            close_requested: false,
            hash: Sha256::new(),
            received: 0,
            received_all_at: None,
        }
    }

    /// One turn: queue what fits, read what arrived, close once everything is queued.
    /// `Some(final state)` once both directions are done and our FIN is acknowledged.
    fn step(&mut self, stack: &mut Stack) -> Result<Option<State>, String> {
        let handle = self.handle;
        let Some(socket) = stack.socket_mut(handle) else {
            return Err(format!("socket {handle} vanished"));
        };
        if let Some(error) = socket.error() {
            return Err(format!(
                "connection failed: {error} (state {}, sent {} of {}, received {})",
                socket.state(),
                self.sent,
                self.total,
                self.received
            ));
        }
        if matches!(
            socket.state(),
            State::Listen | State::SynSent | State::SynReceived
        ) {
            return Ok(None);
        }
        while self.sent < self.total {
            if self.chunk_start == self.chunk_end {
                let left = usize::try_from(self.total - self.sent).unwrap_or(usize::MAX);
                let len = left.min(self.chunk.len());
                self.pattern.fill(&mut self.chunk[..len]);
                self.chunk_start = 0;
                self.chunk_end = len;
            }
            let queued = socket
                .send(&self.chunk[self.chunk_start..self.chunk_end])
                .map_err(|error| format!("send after {} bytes: {error}", self.sent))?;
            if queued == 0 {
                break;
            }
            self.chunk_start += queued;
            self.sent += queued as u64;
        }
        if self.sent == self.total && !self.close_requested {
            socket.close();
            self.close_requested = true;
        }
        while self.received_all_at.is_none() {
            let hash = &mut self.hash;
            match socket.recv_with(|data| {
                hash.update(data);
                data.len()
            }) {
                Ok(0) => break,
                Ok(read) => self.received += read as u64,
                Err(erebus_net::RecvError::Finished) => {
                    self.received_all_at = Some(StdInstant::now());
                }
                Err(error) => {
                    return Err(format!(
                        "recv after {} bytes: {error} (state {})",
                        self.received,
                        socket.state()
                    ));
                }
            }
        }
        let state = socket.state();
        let finished = self.close_requested
            && self.received_all_at.is_some()
            && matches!(state, State::TimeWait | State::Closed);
        Ok(finished.then_some(state))
    }

    fn report(
        self,
        stack: &Stack,
        final_state: State,
        opened_at: StdInstant,
    ) -> Result<StackReport, String> {
        let socket = stack
            .socket(self.handle)
            .ok_or_else(|| "socket vanished".to_owned())?;
        Ok(StackReport {
            opened_at,
            side: SideReport {
                bytes_received: self.received,
                received_sha256: self.hash.finalize().into(),
                received_all_at: self
                    .received_all_at
                    .ok_or_else(|| "no end of stream".to_owned())?,
            },
            tcp: *socket.stats(),
            counters: LoopCounters::default(),
            final_state,
            summary: format!(
                "srtt {:?}, rto {:?}, cwnd {}",
                socket.smoothed_rtt(),
                socket.retransmission_timeout(),
                socket.congestion_window()
            ),
        })
    }
}

/// Runs the stack's loop on `ns`: opens the stack on the TUN device, waits until the kernel
/// runs the device, lets `open` create the socket (connect or listen), signals `ready`, then
/// moves the pattern both ways.
fn spawn_stack_side(
    label: &str,
    ns: &TunNamespace,
    total: u64,
    loss: Loss,
    ready: mpsc::Sender<()>,
    open: impl FnOnce(&mut Stack, Instant) -> Result<SocketHandle, String> + Send + 'static,
) -> Result<SideThread<StackReport>, HarnessError> {
    let namespace = ns.name().to_owned();
    let label = label.to_owned();
    ns.spawn("erebus-stack", move || {
        let mut tun_stack = TunStack::open(
            TUN_NAME,
            &stack_tunnel_config(),
            TcpConfig::default(),
            &seed(),
        )
        .map_err(|error| format!("attaching the stack to {TUN_NAME}: {error}"))?;
        wait_for_carrier(&namespace, Duration::from_secs(10)).map_err(|e| e.to_string())?;
        if let Some((in_per_mille, out_per_mille)) = loss {
            tun_stack.set_loss(in_per_mille, out_per_mille, &seed());
        }
        let trace_file = std::env::var_os("EREBUS_TUN_TRACE").map(|dir| {
            tun_stack.trace = PacketTrace::new(usize::MAX);
            std::path::PathBuf::from(dir).join(format!("{}.trace", label.replace(' ', "_")))
        });
        let now = tun_stack.now();
        let opened_at = StdInstant::now();
        let handle = open(&mut tun_stack.stack, now)?;
        let _ = ready.send(());
        let mut bulk = StackBulk::new(handle, total);
        let outcome = tun_stack.run_until(time_limit(), |stack, _now| bulk.step(stack));
        if let Some(path) = trace_file {
            let all = tun_stack.trace.tail(usize::MAX);
            match std::fs::write(&path, all + "\n") {
                Ok(()) => eprintln!("{label}: packet trace in {}", path.display()),
                Err(error) => eprintln!("{label}: cannot write {}: {error}", path.display()),
            }
        }
        let failure = match outcome {
            Ok(state) => {
                let mut report = bulk.report(&tun_stack.stack, state, opened_at)?;
                report.counters = tun_stack.counters;
                report.summary += &format!("\nstack loop: {:?}", tun_stack.counters);
                return Ok(report);
            }
            Err(RunError::TimedOut) => format!(
                "timed out: sent {} of {total}, received {}, state {:?}",
                bulk.sent,
                bulk.received,
                tun_stack.stack.socket(handle).map(|s| s.state())
            ),
            Err(error) => error.to_string(),
        };
        Err(format!(
            "{failure}\nsocket stats: {:?}\nstack stats: {:?}\nloop: {:?}\n\
             last packets ({} recorded):\n{}",
            tun_stack.stack.socket(handle).map(|s| *s.stats()),
            tun_stack.stack.stats(),
            tun_stack.counters,
            tun_stack.trace.total,
            tun_stack.trace.tail(300)
        ))
    })
}

// ---------------------------------------------------------------------------------------------
// The kernel side: a std TcpStream that writes the pattern and reads to the end, at once.
// ---------------------------------------------------------------------------------------------

fn kernel_bulk(stream: TcpStream, total: u64, limit: Duration) -> Result<SideReport, String> {
    stream
        .set_read_timeout(Some(limit))
        .and_then(|()| stream.set_write_timeout(Some(limit)))
        .map_err(|error| format!("socket timeouts: {error}"))?;
    let mut writer = stream
        .try_clone()
        .map_err(|error| format!("cloning the stream: {error}"))?;
    let write_half = std::thread::spawn(move || -> io::Result<()> {
        let mut pattern = PatternStream::new();
        let mut chunk = vec![0u8; CHUNK];
        let mut left = total;
        while left > 0 {
            let len = usize::try_from(left).unwrap_or(usize::MAX).min(CHUNK);
            pattern.fill(&mut chunk[..len]);
            writer.write_all(&chunk[..len])?;
            left -= len as u64;
        }
        writer.shutdown(Shutdown::Write)
    });
    let mut reader = &stream;
    let mut buf = vec![0u8; CHUNK];
    let mut hash = Sha256::new();
    let mut received = 0u64;
    let read_result = loop {
        match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(len) => {
                hash.update(&buf[..len]);
                received += len as u64;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => break Err(error),
        }
    };
    let received_all_at = StdInstant::now();
    let written = write_half
        .join()
        .map_err(|_| "the kernel writer panicked".to_owned())?;
    read_result.map_err(|error| format!("kernel read after {received} bytes: {error}"))?;
    written.map_err(|error| format!("kernel write: {error}"))?;
    Ok(SideReport {
        bytes_received: received,
        received_sha256: hash.finalize().into(),
        received_all_at,
    })
}

fn join<T>(handle: SideThread<T>, what: &str) -> Result<T, String> {
    match handle.join() {
        Ok(Ok(result)) => result.map_err(|error| format!("{what}: {error}")),
        Ok(Err(error)) => Err(format!("{what}: {error}")),
        Err(_) => Err(format!("{what} panicked")),
    }
}

fn kernel_counters(ns: &TunNamespace) -> KernelTcpCounters {
    ns.spawn("kernel-counters", KernelTcpCounters::read_current_thread)
        .ok()
        .and_then(|handle| handle.join().ok())
        .and_then(|result| result.ok())
        .and_then(Result::ok)
        .unwrap_or_default()
}

/// Checks and prints one finished transfer. `started` is when the connection was opened.
fn check_and_report(
    name: &str,
    ns: &TunNamespace,
    started: StdInstant,
    stack: &StackReport,
    kernel: &SideReport,
    kernel_counters: &KernelTcpCounters,
    total: u64,
) {
    let expected = pattern_sha256(total);
    let to_stack = stack.side.received_all_at.duration_since(started);
    let to_kernel = kernel.received_all_at.duration_since(started);
    eprintln!(
        "\n== {name}: {} MiB each way over {TUN_NAME}\n\
         kernel -> stack: {} bytes in {to_stack:.2?}: {:.1} MB/s, sha256 {}\n\
         stack -> kernel: {} bytes in {to_kernel:.2?}: {:.1} MB/s, sha256 {}\n\
         stack socket: final state {}, {}\n\
         stack counters: {:?}\n\
         kernel TCP counters (namespace, this test): {kernel_counters}\n\
         {}",
        total >> 20,
        stack.side.bytes_received,
        mbps(stack.side.bytes_received, to_stack),
        hex(&stack.side.received_sha256),
        kernel.bytes_received,
        mbps(kernel.bytes_received, to_kernel),
        hex(&kernel.received_sha256),
        stack.final_state,
        stack.summary,
        stack.tcp,
        ns.tun_link_stats().trim_end(),
    );
    assert_eq!(stack.side.bytes_received, total, "bytes the stack received");
    assert_eq!(kernel.bytes_received, total, "bytes the kernel received");
    assert_eq!(
        hex(&stack.side.received_sha256),
        hex(&expected),
        "SHA-256 of what the stack received"
    );
    assert_eq!(
        hex(&kernel.received_sha256),
        hex(&expected),
        "SHA-256 of what the kernel received"
    );
    assert!(
        stack.tcp.bytes_acked >= total,
        "the kernel acknowledged {} of {total} bytes",
        stack.tcp.bytes_acked
    );
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

/// Losses the stack's loop injects, in thousandths of the packets: (from the kernel, from
/// the stack).
type Loss = Option<(u32, u32)>;

/// What a checked transfer leaves for a test's own assertions.
struct Finished {
    /// The stack side's report, with its socket's and its loop's counters.
    stack: StackReport,
    /// The kernel's TCP counters of the namespace, over this transfer.
    kernel_counters: KernelTcpCounters,
}

/// The stack connects to a kernel listener; both send `total` bytes and read to the end.
fn stack_connects_to_kernel(label: &str, total: u64, loss: Loss) -> Finished {
    let ns = TunNamespace::create().expect("namespace with a TUN device");
    let name = ns.name().to_owned();
    let before = kernel_counters(&ns);

    let (listening_tx, listening_rx) = mpsc::channel();
    let kernel = ns
        .spawn("kernel-server", move || -> Result<SideReport, String> {
            let address = SocketAddrV4::new(KERNEL_ADDR, KERNEL_PORT);
            let listener =
                TcpListener::bind(address).map_err(|error| format!("bind {address}: {error}"))?;
            listener
                .set_nonblocking(true)
                .map_err(|error| format!("nonblocking listener: {error}"))?;
            let _ = listening_tx.send(());
            let deadline = StdInstant::now() + time_limit();
            let stream = loop {
                match listener.accept() {
                    Ok((stream, _)) => break stream,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                        if StdInstant::now() >= deadline {
                            return Err("no connection from the stack".into());
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(error) => return Err(format!("accept: {error}")),
                }
            };
            stream
                .set_nonblocking(false)
                .map_err(|error| format!("blocking stream: {error}"))?;
            kernel_bulk(stream, total, time_limit())
        })
        .expect("kernel server thread");
    listening_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the kernel listens");

    let (ready_tx, _ready_rx) = mpsc::channel();
    let stack = spawn_stack_side(label, &ns, total, loss, ready_tx, |stack, now| {
        stack
            .connect(
                now,
                SocketAddr::V4(SocketAddrV4::new(KERNEL_ADDR, KERNEL_PORT)),
            )
            .map_err(|error| format!("connect: {error}"))
    })
    .expect("stack thread");

    let stack_result = join(stack, "stack side");
    let kernel_result = join(kernel, "kernel side");
    finish(
        label,
        ns,
        &name,
        None,
        stack_result,
        kernel_result,
        &before,
        total,
    )
}

/// A kernel client connects to a stack listener; both send `total` bytes and read to the end.
fn kernel_connects_to_stack(label: &str, total: u64, loss: Loss) -> Finished {
    let ns = TunNamespace::create().expect("namespace with a TUN device");
    let name = ns.name().to_owned();
    let before = kernel_counters(&ns);

    let (ready_tx, ready_rx) = mpsc::channel();
    let stack = spawn_stack_side(label, &ns, total, loss, ready_tx, |stack, _now| {
        stack
            .listen(STACK_PORT)
            .map_err(|error| format!("listen: {error}"))
    })
    .expect("stack thread");
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the stack listens");

    let started = StdInstant::now();
    let kernel = ns
        .spawn("kernel-client", move || -> Result<SideReport, String> {
            let address = SocketAddr::V4(SocketAddrV4::new(STACK_ADDR, STACK_PORT));
            let stream = TcpStream::connect_timeout(&address, Duration::from_secs(10))
                .map_err(|error| format!("connect to {address}: {error}"))?;
            kernel_bulk(stream, total, time_limit())
        })
        .expect("kernel client thread");

    let stack_result = join(stack, "stack side");
    let kernel_result = join(kernel, "kernel side");
    finish(
        label,
        ns,
        &name,
        Some(started),
        stack_result,
        kernel_result,
        &before,
        total,
    )
}

/// Checks and prints the outcome, then removes the namespace and checks that it is gone.
/// `started` defaults to when the stack opened its socket.
fn finish(
    label: &str,
    ns: TunNamespace,
    name: &str,
    started: Option<StdInstant>,
    stack_result: Result<StackReport, String>,
    kernel_result: Result<SideReport, String>,
    before: &KernelTcpCounters,
    total: u64,
) -> Finished {
    let after = kernel_counters(&ns);
    let (stack_report, kernel_report) = match (stack_result, kernel_result) {
        (Ok(stack), Ok(kernel)) => (stack, kernel),
        (stack, kernel) => {
            let detail = format!(
                "{label}: transfer failed\n--- stack side ---\n{}\n--- kernel side ---\n{}\n\
                 --- kernel counters ---\n{}\n{}",
                stack.err().unwrap_or_else(|| "ok".into()),
                kernel.err().unwrap_or_else(|| "ok".into()),
                after.since(before),
                ns.tun_link_stats()
            );
            drop(ns);
            assert_namespace_gone(name);
            panic!("{detail}");
        }
    };
    let kernel_counters = after.since(before);
    check_and_report(
        label,
        &ns,
        started.unwrap_or(stack_report.opened_at),
        &stack_report,
        &kernel_report,
        &kernel_counters,
        total,
    );
    drop(ns);
    assert_namespace_gone(name);
    Finished {
        stack: stack_report,
        kernel_counters,
    }
}

#[test]
fn stack_connects_to_kernel_and_moves_the_pattern_both_ways() {
    if !should_run_interop("stack_connects_to_kernel_and_moves_the_pattern_both_ways") {
        return;
    }
    let _alone = BULK.lock().unwrap_or_else(PoisonError::into_inner);
    stack_connects_to_kernel("stack connects to kernel", transfer_len(), None);
}

#[test]
fn kernel_connects_to_stack_and_moves_the_pattern_both_ways() {
    if !should_run_interop("kernel_connects_to_stack_and_moves_the_pattern_both_ways") {
        return;
    }
    let _alone = BULK.lock().unwrap_or_else(PoisonError::into_inner);
    kernel_connects_to_stack("kernel connects to stack", transfer_len(), None);
}

/// 1 % of the packets lost in each direction (dropped by the stack's loop, seeded), 64 MiB
/// each way in release builds: both ends must recover every byte, each by its own
/// retransmissions. The test checks that packets were in fact dropped both ways and that both
/// ends retransmitted, so a loss setting that stopped working cannot pass as recovery.
#[test]
fn stack_and_kernel_recover_from_one_percent_loss_each_way() {
    if !should_run_interop("stack_and_kernel_recover_from_one_percent_loss_each_way") {
        return;
    }
    let _alone = BULK.lock().unwrap_or_else(PoisonError::into_inner);
    let total = transfer_len();
    for (label, run) in [
        (
            "1% loss, stack connects",
            stack_connects_to_kernel as fn(&str, u64, Loss) -> Finished,
        ),
        ("1% loss, kernel connects", kernel_connects_to_stack),
    ] {
        let finished = run(label, total, Some((10, 10)));
        assert_losses_recovered(label, &finished);
    }
}

/// Checks that a lossy transfer lost packets both ways and that both TCPs retransmitted.
fn assert_losses_recovered(label: &str, finished: &Finished) {
    let counters = &finished.stack.counters;
    let tcp = &finished.stack.tcp;
    let kernel_retransmitted = finished.kernel_counters.get("RetransSegs");
    let context = format!(
        "{label}: loop {counters:?}\nstack socket {tcp:?}\nkernel {}",
        finished.kernel_counters
    );
    assert!(
        counters.dropped_in > 0,
        "no packet from the kernel was dropped\n{context}"
    );
    assert!(
        counters.dropped_out > 0,
        "no packet from the stack was dropped\n{context}"
    );
    assert!(
        tcp.retransmitted_segments > 0,
        "the stack never retransmitted\n{context}"
    );
    assert!(
        kernel_retransmitted > 0,
        "the kernel never retransmitted\n{context}"
    );
}

/// The TUN adapter in blocking mode: a datagram the kernel sends to the stack's address is
/// read as one bare IPv4 packet, and a packet written to the device reaches a kernel socket.
#[test]
fn tun_device_blocking_mode_carries_one_datagram_each_way() {
    if !should_run_interop("tun_device_blocking_mode_carries_one_datagram_each_way") {
        return;
    }
    let ns = TunNamespace::create().expect("namespace with a TUN device");
    let name = ns.name().to_owned();
    let namespace = name.clone();
    let worker = ns
        .spawn("tun-blocking", move || -> Result<(), String> {
            let tun = TunDevice::open(TUN_NAME, TunMode::Blocking)
                .map_err(|error| format!("open: {error}"))?;
            wait_for_carrier(&namespace, Duration::from_secs(10)).map_err(|e| e.to_string())?;
            assert_eq!(tun.name(), TUN_NAME);
            assert_eq!(tun.mode(), TunMode::Blocking);
            assert_eq!(tun.mtu().map_err(|error| error.to_string())?, 1500);

            let socket = UdpSocket::bind(SocketAddrV4::new(KERNEL_ADDR, 0))
                .map_err(|error| format!("bind: {error}"))?;
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .map_err(|error| error.to_string())?;
            let kernel_port = socket.local_addr().map_err(|e| e.to_string())?.port();
            // The datagram goes out every 20 ms until the device delivered one: a blocking
            // read cannot time out, and the test must not hang if the kernel drops the first.
            let sender = socket.try_clone().map_err(|e| e.to_string())?;
            let delivered = Arc::new(AtomicBool::new(false));
            let stop = Arc::clone(&delivered);
            let repeat = std::thread::spawn(move || {
                let give_up = StdInstant::now() + Duration::from_secs(10);
                while !stop.load(Ordering::SeqCst) && StdInstant::now() < give_up {
                    let _ = sender.send_to(b"to the stack", SocketAddrV4::new(STACK_ADDR, 7));
                    std::thread::sleep(Duration::from_millis(20));
                }
            });

            // Blocking read: the datagram, as the kernel routed it down the device.
            let mut buf = vec![0u8; erebus::tun::MAX_PACKET_LEN];
            let received = tun.recv(&mut buf);
            delivered.store(true, Ordering::SeqCst);
            let _ = repeat.join();
            let len = received.map_err(|error| format!("recv: {error}"))?;
            let ip = Ipv4Packet::new_checked(&buf[..len]).map_err(|e| e.to_string())?;
            let ip_repr = Ipv4Repr::parse(&ip).map_err(|e| e.to_string())?;
            assert_eq!(ip_repr.src_addr, KERNEL_ADDR);
            assert_eq!(ip_repr.dst_addr, STACK_ADDR);
            assert_eq!(ip_repr.protocol, IpProtocol::Udp);
            let udp = UdpPacket::new_checked(ip.payload()).map_err(|e| e.to_string())?;
            let udp_repr = UdpRepr::parse(&udp, KERNEL_ADDR.into(), STACK_ADDR.into())
                .map_err(|e| e.to_string())?;
            assert_eq!((udp_repr.src_port, udp_repr.dst_port), (kernel_port, 7));
            assert_eq!(udp.payload(), b"to the stack");

            // Blocking write: an answer from the stack's address reaches the kernel socket.
            let answer = b"from the stack";
            let reply = UdpRepr {
                src_port: 7,
                dst_port: kernel_port,
            };
            let reply_ip = Ipv4Repr {
                src_addr: STACK_ADDR,
                dst_addr: KERNEL_ADDR,
                protocol: IpProtocol::Udp,
                payload_len: reply.buffer_len(answer.len()),
                ttl: 64,
            };
            let mut packet = vec![0u8; reply_ip.buffer_len()];
            reply_ip.emit(&mut Ipv4Packet::new_unchecked(&mut packet[..]));
            reply.emit(
                &mut UdpPacket::new_unchecked(&mut packet[ipv4::HEADER_LEN..]),
                STACK_ADDR.into(),
                KERNEL_ADDR.into(),
                answer.len(),
                |payload| payload.copy_from_slice(answer),
            );
            tun.send(&packet)
                .map_err(|error| format!("send: {error}"))?;
            let mut got = [0u8; 64];
            let (read, from) = socket
                .recv_from(&mut got)
                .map_err(|error| format!("kernel recv_from: {error}"))?;
            assert_eq!(&got[..read], answer);
            assert_eq!(from, SocketAddr::V4(SocketAddrV4::new(STACK_ADDR, 7)));
            Ok(())
        })
        .expect("tun thread");
    match worker.join() {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => panic!("{error}"),
        Ok(Err(error)) => panic!("{error}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
    drop(ns);
    assert_namespace_gone(&name);
}

/// What the stack's resolver found for each name, with its counters.
#[derive(Debug)]
struct DnsReport {
    results: BTreeMap<&'static str, Result<Addresses, ResolveError>>,
    dropped_responses: u64,
    unsent_queries: u64,
    ports_left_bound: Vec<u16>,
}

/// erebus's DNS stub resolver, over the stack's UDP sockets on the TUN device, asks dnsmasq
/// on the kernel's side: a name under its domain resolves to the address it was given, a
/// name it holds no record for in its local zone does not exist, and a name outside both is
/// refused (it has no upstream). dnsmasq's log shows the queries came from the stack's
/// address, so they crossed the device.
#[test]
fn stack_resolves_through_dnsmasq_over_udp() {
    if !should_run_interop("stack_resolves_through_dnsmasq_over_udp") {
        return;
    }
    const KNOWN: &str = "web.erebus.test";
    const UNKNOWN: &str = "missing.test";
    const OUTSIDE: &str = "nothing.example";
    let ns = TunNamespace::create().expect("namespace with a TUN device");
    let name = ns.name().to_owned();
    let dnsmasq = ns
        .start_dnsmasq("erebus.test", KERNEL_ADDR, "test", Duration::from_secs(10))
        .expect("dnsmasq starts");
    let dnsmasq_pid = dnsmasq.pid();

    let namespace = name.clone();
    let worker = ns
        .spawn("erebus-dns", move || -> Result<DnsReport, String> {
            let mut tunnel = stack_tunnel_config();
            tunnel.dns_servers = vec![IpAddr::V4(KERNEL_ADDR)];
            let mut tun_stack = TunStack::open(TUN_NAME, &tunnel, TcpConfig::default(), &seed())
                .map_err(|error| format!("attaching the stack to {TUN_NAME}: {error}"))?;
            wait_for_carrier(&namespace, Duration::from_secs(10)).map_err(|e| e.to_string())?;
            let resolver = Resolver::new(&tunnel, ResolverOptions::default(), &seed());
            let mut dns = StackResolver::new(resolver);
            let now = tun_stack.now();
            let mut pending = BTreeMap::new();
            for name in [KNOWN, UNKNOWN, OUTSIDE] {
                let id = dns
                    .resolver
                    .resolve(now, name, Family::V4)
                    .map_err(|error| format!("resolve {name}: {error}"))?;
                pending.insert(id, name);
            }
            let mut results = BTreeMap::new();
            let outcome = tun_stack.run_until(Duration::from_secs(20), |stack, now| {
                for (id, result) in dns.pump(stack, now) {
                    if let Some(name) = pending.remove(&id) {
                        results.insert(name, result);
                    }
                }
                Ok(pending.is_empty().then_some(()))
            });
            if let Err(error) = outcome {
                return Err(format!(
                    "{error}: answers so far {results:?}, loop {:?}",
                    tun_stack.counters
                ));
            }
            Ok(DnsReport {
                results,
                dropped_responses: dns.dropped_responses,
                unsent_queries: dns.unsent_queries,
                ports_left_bound: dns
                    .bound_ports()
                    .filter(|port| tun_stack.stack.udp_is_bound(*port))
                    .collect(),
            })
        })
        .expect("stack thread");
    let report = match worker.join() {
        Ok(Ok(Ok(report))) => report,
        Ok(Ok(Err(error))) => panic!("{error}\n--- dnsmasq ---\n{}", dnsmasq.log()),
        Ok(Err(error)) => panic!("{error}"),
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let log = dnsmasq.log();
    eprintln!("\n== DNS over the stack's UDP: {report:?}\n--- dnsmasq ---\n{log}");

    assert_eq!(
        report.results.get(KNOWN),
        Some(&Ok(vec![IpAddr::V4(KERNEL_ADDR)])),
        "{KNOWN}"
    );
    assert_eq!(
        report.results.get(UNKNOWN),
        Some(&Err(ResolveError::NameNotFound)),
        "{UNKNOWN}"
    );
    assert_eq!(
        report.results.get(OUTSIDE),
        Some(&Err(ResolveError::ServerFailure)),
        "{OUTSIDE}"
    );
    assert_eq!(
        report.dropped_responses, 0,
        "responses the resolver refused"
    );
    assert_eq!(report.unsent_queries, 0, "queries the stack would not send");
    assert!(
        report.ports_left_bound.is_empty(),
        "source ports still bound: {:?}",
        report.ports_left_bound
    );
    for queried in [KNOWN, UNKNOWN, OUTSIDE] {
        let line = format!("query[A] {queried} from {STACK_ADDR}");
        assert!(log.contains(&line), "dnsmasq logged `{line}`");
    }
    assert!(log.contains(&format!("config {KNOWN} is {KERNEL_ADDR}")));
    assert!(log.contains(&format!("config {UNKNOWN} is NXDOMAIN")));

    // dnsmasq is gone once dropped, before the namespace is deleted.
    drop(dnsmasq);
    let pids = std::process::Command::new("ip")
        .args(["netns", "pids", &name])
        .output()
        .expect("ip netns pids runs");
    let pids = String::from_utf8_lossy(&pids.stdout);
    assert!(
        !pids
            .split_whitespace()
            .any(|pid| pid == dnsmasq_pid.to_string()),
        "dnsmasq ({dnsmasq_pid}) still runs in {name}"
    );
    drop(ns);
    assert_namespace_gone(&name);
}

fn assert_namespace_gone(name: &str) {
    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list runs");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        !listed
            .lines()
            .any(|line| line.split_whitespace().next() == Some(name)),
        "namespace {name} still exists"
    );
}
