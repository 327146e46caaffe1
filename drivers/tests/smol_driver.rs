//! The smol driver does what the mio driver does, checked the same way.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use erebus::Clock;
use erebus::smol_driver::SmolDriver;
use erebus_sansio::tunnel::{Fault, TransportKind};

fn run_relay(kind: TransportKind) {
    let echo = match kind {
        TransportKind::Udp => common::udp_echo(),
        TransportKind::TcpLengthPrefixed => common::tcp_echo(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = listener.local_addr().unwrap();
    let relay = common::Relay::new(echo, kind);
    let mut driver = SmolDriver::new(relay, Clock::start(), vec![listener]).unwrap();
    let stop = driver.stop_handle();
    let client = std::thread::spawn(move || {
        let echoed = common::round_trip(proxy, b"hello through smol");
        std::thread::sleep(Duration::from_millis(200));
        stop.stop();
        echoed
    });
    let failure = smol::block_on(driver.run()).unwrap();
    assert_eq!(client.join().unwrap(), b"hello through smol");
    assert_eq!(failure.fault, Fault::Closed);
    let ticks = driver.machine().ticks();
    assert!(
        ticks >= 3,
        "the 20 ms timer ran only {ticks} times in 200 ms"
    );
    assert_eq!(
        driver.machine().connected,
        kind == TransportKind::TcpLengthPrefixed
    );
}

#[test]
fn relays_over_udp() {
    run_relay(TransportKind::Udp);
}

#[test]
fn relays_over_tcp() {
    run_relay(TransportKind::TcpLengthPrefixed);
}
