//! A stream transport whose server stops reading cannot make a driver grow: once
//! `--transport-queue` bytes wait for the socket, further packets are dropped and counted.
//! Checked under mio, smol and threads with the relay machine, a loopback TCP server that
//! accepts and never reads, and 48 MiB pushed through a local connection.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use erebus::Clock;
use erebus_sansio::tunnel::{Fault, TransportKind};

/// The queue the drivers are given.
const QUEUE: usize = 256 << 10;
/// What the local client pushes.
const PUSHED: usize = 48 << 20;
/// How much the process may grow while the driver is fed: the kernel's socket buffers are not
/// resident memory, so this leaves the queue, buffers in flight and allocator slack.
const GROWTH_LIMIT: u64 = 16 << 20;

/// A TCP server on loopback that accepts one connection and never reads it.
fn deaf_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (_stream, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_secs(120));
    });
    addr
}

/// This process's resident memory, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

/// Pushes [`PUSHED`] bytes into the local listener at `proxy` (the relay sends each read to
/// the transport), then returns the growth of this process's RSS meanwhile.
fn push_through(proxy: SocketAddr) -> u64 {
    let before = rss();
    let mut client = TcpStream::connect(proxy).unwrap();
    client
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let chunk = vec![0x5a; 64 << 10];
    for _ in 0..PUSHED / chunk.len() {
        client.write_all(&chunk).unwrap();
        // The relay machine never pauses its local reads (the client does, through its
        // proxies' flow control): paced, the reads cannot pile up on their way into the
        // driver's loop, and what grows is only what waits for the transport.
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(300));
    rss().saturating_sub(before)
}

/// Runs the driver made by `run` (on its own thread) against a deaf server, pushes the data,
/// stops it, and checks the drops and the growth.
fn bounded(name: &str, run: impl FnOnce(common::Relay, TcpListener, Channel) + Send + 'static) {
    let server = deaf_server();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let driver = std::thread::spawn(move || {
        run(
            common::Relay::new(server, TransportKind::TcpLengthPrefixed),
            listener,
            tx,
        );
    });
    let Ok(Report::Stop(stop)) = rx.recv() else {
        panic!("{name}: no stop handle");
    };
    let growth = push_through(proxy);
    stop();
    let Ok(Report::Done { fault, drops }) = rx.recv() else {
        panic!("{name}: the driver did not report");
    };
    driver.join().unwrap();
    eprintln!(
        "{name}: {} MiB pushed at a server that does not read: {drops} packets dropped, the \
         process grew {:.1} MiB",
        PUSHED >> 20,
        growth as f64 / f64::from(1 << 20)
    );
    assert_eq!(fault, Fault::Closed);
    assert!(drops > 0, "{name}: nothing was dropped");
    assert!(
        growth <= GROWTH_LIMIT,
        "{name}: grew {growth} bytes with a {QUEUE}-byte queue"
    );
}

/// What a driver thread tells the test.
enum Report {
    Stop(Box<dyn FnOnce() + Send>),
    Done { fault: Fault, drops: u64 },
}

type Channel = std::sync::mpsc::Sender<Report>;

/// Runs one driver against the deaf server: `$new` builds it from the relay and the listener,
/// `$run` runs it to the end (it has been given the queue and handed its stop handle).
macro_rules! behind_a_deaf_server {
    ($name:expr, |$relay:ident, $listener:ident| $new:expr, |$driver:ident| $run:expr) => {
        bounded($name, |$relay, $listener, tx| {
            let mut $driver = $new;
            $driver.set_transport_queue(QUEUE);
            let stop = $driver.stop_handle();
            tx.send(Report::Stop(Box::new(move || stop.stop())))
                .unwrap();
            let failure = $run.unwrap();
            let drops = $driver.transport_queue_drops();
            tx.send(Report::Done {
                fault: failure.fault,
                drops,
            })
            .unwrap();
        })
    };
}

/// The drivers one after the other, in one test: the growth is measured on the whole process.
#[test]
fn no_driver_grows_behind_a_server_that_does_not_read() {
    behind_a_deaf_server!(
        "mio",
        |relay, listener| erebus::mio_driver::MioDriver::new(relay, Clock::start(), vec![listener])
            .unwrap(),
        |driver| driver.run()
    );
    behind_a_deaf_server!(
        "smol",
        |relay, listener| erebus::smol_driver::SmolDriver::new(
            relay,
            Clock::start(),
            vec![listener]
        )
        .unwrap(),
        |driver| smol::block_on(driver.run())
    );
    behind_a_deaf_server!(
        "threads",
        |relay, listener| erebus::thread_driver::ThreadDriver::new(
            relay,
            Clock::start(),
            vec![listener]
        ),
        |driver| driver.run()
    );
}
