//! The mio driver moves bytes between local connections, the transport and the machine, runs
//! its timers and stops gracefully; checked with a relay machine and loopback echo servers.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use erebus::Clock;
use erebus::mio_driver::MioDriver;
use erebus::record::Recorder;
use erebus_sansio::Seed;
use erebus_sansio::tunnel::{Fault, TransportKind};

fn run_relay(kind: TransportKind) {
    let echo = match kind {
        TransportKind::Udp => common::udp_echo(),
        TransportKind::TcpLengthPrefixed => common::tcp_echo(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = listener.local_addr().unwrap();
    let record_dir =
        std::env::temp_dir().join(format!("erebus-mio-record-{}-{kind:?}", std::process::id()));
    let (tx, rx) = std::sync::mpsc::channel();
    let dir = record_dir.clone();
    let driver_thread = std::thread::spawn(move || {
        // The driver (and its recorder) is dropped at the end of this thread, flushing files.
        let relay = common::Relay::new(echo, kind);
        let clock = Clock::start();
        let mut driver = MioDriver::new(relay, clock, vec![listener]).unwrap();
        let recorder = Recorder::create(&dir, &Seed::from_byte(1), b"relay", clock.wall_clock());
        driver.record(Box::new(recorder.unwrap()));
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
    assert!(connected, "the transport reported where it connected");

    // The recording replays: the same inputs give the same transmits, which match the pcap.
    let journal = std::fs::read(record_dir.join("journal")).unwrap();
    let replayed = common::replay(&journal, &mut common::Relay::new(echo, kind));
    assert_eq!(replayed, [b"hello through the driver".to_vec()]);
    let pcap = std::fs::read(record_dir.join("transport.pcap")).unwrap();
    let header_len = if kind == TransportKind::Udp { 8 } else { 20 };
    let inbound = common::pcap_payloads(&pcap, header_len, echo.port());
    assert_eq!(
        inbound, replayed,
        "the echo server's packets are in the pcap"
    );
    assert_eq!(std::fs::read(record_dir.join("seed")).unwrap(), [1u8; 32]);
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
