//! erebus sends the server no more datagrams per megabyte downloaded than the stock OpenVPN
//! client does.
//!
//! During a bulk download nearly everything a client sends is a TCP acknowledgment, and each
//! one costs a single-threaded OpenVPN server a decryption and a TUN write. The stock client
//! leaves acknowledging to the kernel, which acknowledges several segments at once; erebus's
//! own stack must not do worse. The test downloads the same bytes through the stock client
//! (kernel TUN, as root) and through erebus (as nobody, under the mio, smol and thread
//! drivers) from the same kind of server, counts the packets the server namespace's veth
//! receives during each download, checks the bytes, and compares. It prints datagrams per MB,
//! MB/s, the client process's CPU seconds per GB, and the datagrams the client namespace
//! dropped for a full socket receive buffer.
//!
//! The ignored benchmark repeats the comparison, interleaved, over UDP and TCP and prints the
//! medians:
//!
//! ```text
//! cargo test --release -p erebus --test ack_e2e -- --ignored --nocapture
//! ```

#![allow(clippy::unwrap_used, clippy::print_stdout)] // Test code that reports figures.

mod e2e;

use std::time::{Duration, Instant};

use e2e::compare::{self, Client, clock_ticks, cpu_seconds, download_url, median};
use erebus_testvectors::netns::{self, OpenVpnServer, ServerProfile, Transport};

/// The size of each download.
const BYTES: u64 = 32 << 20;

/// What one download cost.
#[derive(Clone, Copy, Debug)]
struct Figures {
    /// Packets the server's veth received per MB (10^6 bytes) downloaded.
    datagrams_per_mb: f64,
    /// Download speed in MB/s.
    mb_per_s: f64,
    /// The client process's CPU time (user + system) per GB downloaded.
    cpu_s_per_gb: f64,
    /// Datagrams the client's UDP socket dropped for a full receive buffer.
    receive_buffer_drops: u64,
}

/// Datagrams the client namespace's UDP sockets dropped for a full receive buffer so far
/// (`RcvbufErrors` of `/proc/net/snmp`): a burst from the server the client could not take.
fn udp_receive_buffer_drops(server: &OpenVpnServer) -> u64 {
    let ip = netns::find_program("ip").unwrap();
    let out = std::process::Command::new(ip)
        .args([
            "netns",
            "exec",
            server.client_netns(),
            "cat",
            "/proc/net/snmp",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|line| line.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
    let column = names
        .split_whitespace()
        .position(|name| name == "RcvbufErrors")
        .unwrap();
    values
        .split_whitespace()
        .nth(column)
        .unwrap()
        .parse()
        .unwrap()
}

/// Downloads [`BYTES`] through `client` (process `pid`) from `server` and checks them.
fn download(server: &OpenVpnServer, client: Client, pid: u32) -> Figures {
    let curl = netns::find_program("curl").unwrap();
    let url = download_url(server, BYTES);
    let argv = client.curl_argv(curl.to_str().unwrap(), &[&url]);
    let ticks_per_second = clock_ticks();
    let packets_before = server.server_veth_rx_packets().unwrap();
    let drops_before = udp_receive_buffer_drops(server);
    let cpu_before = cpu_seconds(pid, ticks_per_second).unwrap();
    let started = Instant::now();
    let out = server
        .run_in_client(client.run_as(), &argv, Duration::from_secs(180))
        .unwrap();
    let elapsed = started.elapsed();
    let cpu = cpu_seconds(pid, ticks_per_second).unwrap() - cpu_before;
    let packets = server.server_veth_rx_packets().unwrap() - packets_before;
    let drops = udp_receive_buffer_drops(server) - drops_before;
    assert!(out.success(), "{}: {}", client.name(), out.stderr_text());
    assert_eq!(out.stdout.len() as u64, BYTES, "{}", client.name());
    assert!(
        netns::sha256(&out.stdout) == netns::pattern_sha256(BYTES),
        "{}: the download is corrupt",
        client.name()
    );
    let mb = BYTES as f64 / 1e6;
    Figures {
        datagrams_per_mb: packets as f64 / mb,
        mb_per_s: mb / elapsed.as_secs_f64(),
        cpu_s_per_gb: cpu / (mb / 1e3),
        receive_buffer_drops: drops,
    }
}

/// Starts a server of `profile` over `transport`, connects `client` and downloads once.
fn measure(profile: ServerProfile, transport: Transport, client: Client) -> Figures {
    let server = OpenVpnServer::start(profile, transport).unwrap();
    let process = compare::start_client(&server, client);
    let figures = download(&server, client, process.pid());
    if let Client::Erebus(_) = client {
        assert!(process.stop(Duration::from_secs(10)).unwrap().success());
    }
    println!(
        "{} {} {}: {:.0} datagrams/MB, {:.1} MB/s, {:.2} CPU s/GB, {} datagrams dropped \
         for a full receive buffer",
        profile.name(),
        transport.name(),
        client.name(),
        figures.datagrams_per_mb,
        figures.mb_per_s,
        figures.cpu_s_per_gb,
        figures.receive_buffer_drops
    );
    figures
}

const CLIENTS: [Client; 4] = [
    Client::Stock,
    Client::Erebus("mio"),
    Client::Erebus("smol"),
    Client::Erebus("threads"),
];

#[test]
fn erebus_sends_no_more_datagrams_per_mb_than_the_stock_client() {
    if !netns::should_run_interop("erebus_sends_no_more_datagrams_per_mb_than_the_stock_client") {
        return;
    }
    let figures: Vec<Figures> = CLIENTS
        .iter()
        .map(|client| measure(ServerProfile::TlsCrypt, Transport::Udp, *client))
        .collect();
    let stock = figures[0].datagrams_per_mb;
    for (client, figures) in CLIENTS.iter().zip(&figures).skip(1) {
        assert!(
            figures.datagrams_per_mb <= stock,
            "{} sends {:.0} datagrams per MB, the stock client {stock:.0}",
            client.name(),
            figures.datagrams_per_mb
        );
    }
}

#[test]
#[ignore = "a benchmark: run with --ignored --nocapture"]
fn datagrams_speed_and_cpu_against_the_stock_client() {
    if !netns::should_run_interop("datagrams_speed_and_cpu_against_the_stock_client") {
        return;
    }
    let rounds: usize = std::env::var("EREBUS_BENCH_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(3);
    let mut rows = Vec::new();
    for transport in [Transport::Udp, Transport::Tcp] {
        let mut runs: Vec<Vec<Figures>> = vec![Vec::new(); CLIENTS.len()];
        for _ in 0..rounds {
            for (index, client) in CLIENTS.iter().enumerate() {
                runs[index].push(measure(ServerProfile::TlsCrypt, transport, *client));
            }
        }
        for (client, runs) in CLIENTS.iter().zip(runs) {
            let pick = |field: fn(&Figures) -> f64| median(runs.iter().map(field).collect());
            rows.push(format!(
                "| {} {} | {:.0} | {:.1} | {:.2} |",
                transport.name(),
                client.name(),
                pick(|f| f.datagrams_per_mb),
                pick(|f| f.mb_per_s),
                pick(|f| f.cpu_s_per_gb)
            ));
        }
    }
    println!("| tls-crypt, {rounds} rounds, medians | datagrams/MB | MB/s | client CPU s/GB |");
    println!("|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
}
