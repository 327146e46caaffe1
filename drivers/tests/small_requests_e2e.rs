//! Small proxied responses arrive without waiting for a delayed acknowledgment.
//!
//! The test server writes a response's head and its body in two sends; under Nagle's
//! algorithm its kernel holds the body until the head is acknowledged. A client that delays
//! that acknowledgment by 40 ms makes every small exchange take 40 ms. erebus's stack
//! acknowledges at once at a connection's start, after idle, and for the short end of a write
//! (PSH), as Linux does, so a page through the proxy takes a few milliseconds, on a fresh
//! connection and on a reused one alike. Against a real OpenVPN 2.6 server, erebus running as
//! nobody, under the mio and smol drivers.
//!
//! The ignored benchmark compares 500 sequential small requests with the stock client:
//!
//! ```text
//! cargo test --release -p erebus --test small_requests_e2e -- --ignored --nocapture
//! ```

#![allow(clippy::unwrap_used, clippy::print_stdout)] // Test code that reports figures.

mod e2e;

use std::time::Duration;

use erebus_testvectors::netns::{
    self, HTTP_MARKER, OpenVpnServer, RunAs, ServerProfile, Transport,
};

/// The delayed-ACK interval these exchanges must not wait for.
const DELAYED_ACK: Duration = Duration::from_millis(40);

/// Runs one curl in the client namespace fetching the server's page `count` times, each on a
/// fresh connection or all on one, through `proxy` if given; returns each request's time.
fn fetch_times(
    server: &OpenVpnServer,
    run_as: RunAs,
    proxy: Option<&str>,
    count: usize,
    fresh: bool,
) -> Vec<Duration> {
    let curl = netns::find_program("curl").unwrap();
    let url = server.http_url();
    let mut argv = vec![curl.to_str().unwrap(), "-sS", "--fail"];
    if let Some(proxy) = proxy {
        argv.extend_from_slice(&["-x", proxy]);
    }
    if fresh {
        argv.extend_from_slice(&["-H", "Connection: close"]);
    }
    argv.extend_from_slice(&["-w", "\n@%{time_total}\n"]);
    for _ in 0..count {
        argv.push(&url);
    }
    let out = server
        .run_in_client(run_as, &argv, Duration::from_secs(120))
        .unwrap();
    assert!(out.success(), "curl failed: {}", out.stderr_text());
    let text = out.stdout_text();
    assert_eq!(text.matches(HTTP_MARKER).count(), count, "{text}");
    text.lines()
        .filter_map(|line| line.strip_prefix('@'))
        .map(|secs| Duration::from_secs_f64(secs.parse().unwrap()))
        .collect()
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort_unstable();
    values[values.len() / 2]
}

fn small_responses_do_not_wait(runtime: &str) {
    let name = format!("small_responses_do_not_wait_for_a_delayed_ack_with_{runtime}");
    if !netns::should_run_interop(&name) {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).unwrap();
    let erebus = e2e::start_erebus_with_runtime(&server, runtime);
    let proxy = Some("http://127.0.0.1:8080");
    for fresh in [true, false] {
        let times = fetch_times(&server, RunAs::Nobody, proxy, 40, fresh);
        let typical = median(times.clone());
        let slow = times.iter().filter(|t| **t >= DELAYED_ACK).count();
        eprintln!(
            "{name}: {} connections: median {typical:?}, {slow} of 40 at 40 ms or more",
            if fresh { "fresh" } else { "reused" }
        );
        assert!(
            typical < DELAYED_ACK / 2 && slow <= 4,
            "small responses wait for the delayed ACK ({} connections): {times:?}",
            if fresh { "fresh" } else { "reused" }
        );
    }
    assert!(erebus.stop(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn small_responses_do_not_wait_for_a_delayed_ack_with_mio() {
    small_responses_do_not_wait("mio");
}

#[test]
fn small_responses_do_not_wait_for_a_delayed_ack_with_smol() {
    small_responses_do_not_wait("smol");
}

#[test]
#[ignore = "a benchmark: run with --ignored --nocapture"]
fn five_hundred_small_requests_against_the_stock_client() {
    const COUNT: usize = 500;
    let total = |times: Vec<Duration>| times.iter().sum::<Duration>();
    let mut rows = Vec::new();
    for round in 0..3 {
        let stock = {
            let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).unwrap();
            let _client = server.start_stock_client("stock.log").unwrap();
            server.wait_for_client_tun(Duration::from_secs(20)).unwrap();
            total(fetch_times(&server, RunAs::Root, None, COUNT, true))
        };
        let erebus = {
            let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).unwrap();
            let _erebus = e2e::start_erebus_with_runtime(&server, "mio");
            total(fetch_times(
                &server,
                RunAs::Nobody,
                Some("http://127.0.0.1:8080"),
                COUNT,
                true,
            ))
        };
        println!("round {round}: stock {stock:?}, erebus {erebus:?}");
        rows.push((stock, erebus));
    }
    let stock = median(rows.iter().map(|r| r.0).collect());
    let erebus = median(rows.iter().map(|r| r.1).collect());
    println!(
        "{COUNT} sequential small requests, medians: stock client {stock:?}, erebus {erebus:?}, \
         ratio {:.2}",
        erebus.as_secs_f64() / stock.as_secs_f64()
    );
}
