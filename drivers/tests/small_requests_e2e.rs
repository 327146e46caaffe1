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

use e2e::compare::{self, Client};
use erebus_testvectors::netns::{self, HTTP_MARKER, OpenVpnServer, ServerProfile, Transport};

/// The delayed-ACK interval these exchanges must not wait for.
const DELAYED_ACK: Duration = Duration::from_millis(40);

/// Runs one curl in the client namespace fetching the server's page `count` times through
/// `client`, each on a fresh connection or all on one; returns each request's time.
fn fetch_times(server: &OpenVpnServer, client: Client, count: usize, fresh: bool) -> Vec<Duration> {
    let curl = netns::find_program("curl").unwrap();
    let url = server.http_url();
    let mut args = Vec::new();
    if fresh {
        args.extend_from_slice(&["-H", "Connection: close"]);
    }
    args.extend_from_slice(&["-w", "\n@%{time_total}\n"]);
    args.extend(std::iter::repeat_n(url.as_str(), count));
    let argv = client.curl_argv(curl.to_str().unwrap(), &args);
    let out = server
        .run_in_client(client.run_as(), &argv, Duration::from_secs(120))
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

fn small_responses_do_not_wait(runtime: &'static str) {
    let name = format!("small_responses_do_not_wait_for_a_delayed_ack_with_{runtime}");
    if !netns::should_run_interop(&name) {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).unwrap();
    let client = Client::Erebus(runtime);
    let erebus = compare::start_client(&server, client);
    for fresh in [true, false] {
        let times = fetch_times(&server, client, 40, fresh);
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
    let session = |client: Client| {
        let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).unwrap();
        let _client = compare::start_client(&server, client);
        total(fetch_times(&server, client, COUNT, true))
    };
    for round in 0..3 {
        let stock = session(Client::Stock);
        let erebus = session(Client::Erebus("mio"));
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
