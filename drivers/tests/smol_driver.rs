//! The smol driver does what the mio driver does, checked the same way.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use erebus::Clock;
use erebus::record::Recorder;
use erebus::smol_driver::SmolDriver;
use erebus_sansio::Seed;
use erebus_sansio::tunnel::{Fault, TransportKind};

fn run_relay(kind: TransportKind) {
    let echo = match kind {
        TransportKind::Udp => common::udp_echo(),
        TransportKind::TcpLengthPrefixed => common::tcp_echo(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = listener.local_addr().unwrap();
    let relay = common::Relay::new(echo, kind);
    let clock = Clock::start();
    let mut driver = SmolDriver::new(relay, clock, vec![listener]).unwrap();
    let record_dir = std::env::temp_dir().join(format!(
        "erebus-smol-record-{}-{kind:?}",
        std::process::id()
    ));
    let recorder = Recorder::create(
        &record_dir,
        &Seed::from_byte(2),
        b"relay",
        clock.wall_clock(),
    );
    driver.record(Box::new(recorder.unwrap()));
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
    assert!(
        driver.machine().connected,
        "the transport reported where it connected"
    );
    drop(driver);

    // The recording replays: the same inputs give the same transmits, which match the pcap.
    let journal = std::fs::read(record_dir.join("journal")).unwrap();
    let replayed = common::replay(&journal, &mut common::Relay::new(echo, kind));
    assert_eq!(replayed, [b"hello through smol".to_vec()]);
    let pcap = std::fs::read(record_dir.join("transport.pcap")).unwrap();
    let header_len = if kind == TransportKind::Udp { 8 } else { 20 };
    assert_eq!(
        common::pcap_payloads(&pcap, header_len, echo.port()),
        replayed
    );
    std::fs::remove_dir_all(&record_dir).unwrap();
}

#[test]
fn relays_over_udp() {
    run_relay(TransportKind::Udp);
}

#[test]
fn relays_over_tcp() {
    run_relay(TransportKind::TcpLengthPrefixed);
}
