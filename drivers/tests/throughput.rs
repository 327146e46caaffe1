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

use std::time::Duration;

use erebus_testvectors::netns::{self, OpenVpnServer, RunAs, ServerProfile, Transport};

const EREBUS: &str = env!("CARGO_BIN_EXE_erebus");
const BYTES: u64 = 128 << 20;
const ROUNDS: usize = 3;

/// curl's measured download speed in bytes per second.
fn download(server: &OpenVpnServer, run_as: RunAs, proxy: Option<&str>) -> f64 {
    let curl = netns::find_program("curl").unwrap();
    let url = format!("{}bytes/{BYTES}", server.http_url());
    let mut argv = vec![
        curl.to_str().unwrap(),
        "-sS",
        "--fail",
        "-o",
        "/dev/null",
        "-w",
        "%{speed_download}",
    ];
    if let Some(proxy) = proxy {
        argv.extend_from_slice(&["-x", proxy]);
    }
    argv.push(&url);
    let out = server
        .run_in_client(run_as, &argv, Duration::from_secs(120))
        .unwrap();
    assert!(out.success(), "{}", out.stderr_text());
    out.stdout_text().trim().parse().unwrap()
}

fn stock(profile: ServerProfile, transport: Transport) -> f64 {
    let server = OpenVpnServer::start(profile, transport).unwrap();
    let _client = server.start_stock_client("stock.log").unwrap();
    server.wait_for_client_tun(Duration::from_secs(20)).unwrap();
    assert!(
        server
            .ping_from_client(server.server_tunnel_addr(), 30, Duration::from_millis(500))
            .unwrap()
    );
    download(&server, RunAs::Root, None)
}

fn erebus(profile: ServerProfile, transport: Transport) -> f64 {
    let server = OpenVpnServer::start(profile, transport).unwrap();
    let config = server.client_profile_path();
    let mut erebus = server
        .spawn_in_client(
            RunAs::Nobody,
            &[EREBUS, "--config", config.to_str().unwrap()],
            "erebus.log",
        )
        .unwrap();
    erebus
        .wait_until_listening(8080, Duration::from_secs(10))
        .unwrap();
    download(&server, RunAs::Nobody, Some("http://127.0.0.1:8080"))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
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
            stock_runs.push(stock(profile, transport) / 1e6);
            erebus_runs.push(erebus(profile, transport) / 1e6);
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
