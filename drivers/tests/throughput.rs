//! Throughput of erebus against the stock OpenVPN 2.6 client (kernel TUN) on the same server,
//! measured in the same run and interleaved so that a noisy machine affects both alike.
//! Ignored by default (it takes a minute or two); run it with
//!
//! ```text
//! cargo test --release -p erebus --test throughput -- --ignored --nocapture
//! ```
//!
//! and read the table it prints: the median download speed of each client over several
//! rounds, and erebus's ratio to the stock client.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // Test code that reports figures.

mod e2e;

use std::time::Duration;

use e2e::compare::{self, Client, download_url, median};
use erebus_testvectors::netns::{self, OpenVpnServer, ServerProfile, Transport};

const BYTES: u64 = 128 << 20;
const ROUNDS: usize = 3;

/// curl's measured download speed through `client`, in bytes per second.
fn download(server: &OpenVpnServer, client: Client) -> f64 {
    let curl = netns::find_program("curl").unwrap();
    let url = download_url(server, BYTES);
    let args = ["-o", "/dev/null", "-w", "%{speed_download}", &url];
    let argv = client.curl_argv(curl.to_str().unwrap(), &args);
    let out = server
        .run_in_client(client.run_as(), &argv, Duration::from_secs(120))
        .unwrap();
    assert!(out.success(), "{}", out.stderr_text());
    out.stdout_text().trim().parse().unwrap()
}

/// A fresh server of `profile` over `transport`, `client` on it, and one download's speed.
fn speed(profile: ServerProfile, transport: Transport, client: Client) -> f64 {
    let server = OpenVpnServer::start(profile, transport).unwrap();
    let _client = compare::start_client(&server, client);
    download(&server, client)
}

#[test]
#[ignore = "a benchmark: run with --ignored --nocapture"]
fn erebus_against_the_stock_client() {
    if !netns::should_run_interop("erebus_against_the_stock_client") {
        return;
    }
    let cases = [
        (ServerProfile::TlsCrypt, Transport::Udp),
        (ServerProfile::StaticKey, Transport::Udp),
        (ServerProfile::Plaintext, Transport::Udp),
        (ServerProfile::StaticKey, Transport::Tcp),
    ];
    println!(
        "| case | stock client MB/s | erebus MB/s | erebus / stock | rounds (stock; erebus) |"
    );
    println!("|---|---|---|---|---|");
    for (profile, transport) in cases {
        let (mut stock_runs, mut erebus_runs) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            stock_runs.push(speed(profile, transport, Client::Stock) / 1e6);
            erebus_runs.push(speed(profile, transport, Client::Erebus("mio")) / 1e6);
        }
        let (s, e) = (median(stock_runs.clone()), median(erebus_runs.clone()));
        let fmt = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join("/")
        };
        println!(
            "| {} {} | {s:.1} | {e:.1} | {:.2} | {}; {} |",
            profile.name(),
            transport.name(),
            e / s,
            fmt(&stock_runs),
            fmt(&erebus_runs)
        );
    }
}
