//! The mio driver moves bytes between local connections, the transport and the machine, runs
//! its timers and stops gracefully; checked with a relay machine and loopback echo servers.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use erebus::Clock;
use erebus::mio_driver::MioDriver;
use erebus_sansio::tunnel::{Fault, TransportKind};

fn run_relay(kind: TransportKind) {
    let echo = match kind {
        TransportKind::Udp => common::udp_echo(),
        TransportKind::TcpLengthPrefixed => common::tcp_echo(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let driver_thread = std::thread::spawn(move || {
        let relay = common::Relay::new(echo, kind);
        let mut driver = MioDriver::new(relay, Clock::start(), vec![listener]).unwrap();
        tx.send(driver.stop_handle()).unwrap();
        let failure = driver.run().unwrap();
        (
            failure,
            driver.machine().ticks(),
            driver.machine().connected,
        )
    });
    let stop = rx.recv().unwrap();
    assert_eq!(
        common::round_trip(proxy, b"hello through the driver"),
        b"hello through the driver"
    );
    std::thread::sleep(Duration::from_millis(200));
    stop.stop();
    let (failure, ticks, connected) = driver_thread.join().unwrap();
    assert_eq!(failure.fault, Fault::Closed);
    assert!(
        ticks >= 3,
        "the 20 ms timer ran only {ticks} times in 200 ms"
    );
    assert_eq!(connected, kind == TransportKind::TcpLengthPrefixed);
}

#[test]
fn relays_over_udp() {
    run_relay(TransportKind::Udp);
}

#[test]
fn relays_over_tcp() {
    run_relay(TransportKind::TcpLengthPrefixed);
}
