//! The end-to-end benchmark: erebus (mio and smol drivers, HTTP proxy, running as nobody)
//! against the stock OpenVPN 2.6 client (kernel TUN) on the same real OpenVPN 2.6 server,
//! for AES-256-GCM and CHACHA20-POLY1305 over UDP and AES-256-GCM over TCP.
//!
//! Ignored by default (it takes many minutes and needs root for the namespaces); run it with
//! `testvectors/bench/run.sh`, which calls
//!
//! ```text
//! cargo test --release --locked -p erebus --test bench_e2e -- --ignored --nocapture
//! ```
//!
//! Every client gets a fresh server per round and the clients take turns (stock, mio, smol,
//! stock, ...), so a noisy machine affects all alike; the tables show medians over the
//! rounds. Per session it measures start-up (stock: "Initialization Sequence Completed";
//! both: the first byte of a page), idle RSS, one large download (speed; CPU of the VPN
//! client, of curl and of the server openvpn per GB; packets the server received per MB),
//! and a run of sequential small requests. In the last round, erebus also serves many
//! concurrent 1 MiB downloads (all checked by `testvectors/bench/load.py`) for its peak RSS,
//! and its RSS is read again after a pause. The tables are printed and written to
//! `target/bench/erebus-vs-openvpn.md`. Settings come from the environment; see
//! [`Settings::from_env`].

#![allow(clippy::unwrap_used, clippy::print_stdout)] // Benchmark code that reports figures.

mod e2e;

use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use erebus_testvectors::netns::{
    self, HTTP_MARKER, NsProcess, OpenVpnServer, RunAs, ServerOptions, ServerProfile, Transport,
};

/// erebus's HTTP proxy, as curl and the load generator reach it.
const PROXY: &str = "http://127.0.0.1:8080";
/// The load generator, copied into each server's instance directory (readable by nobody).
const LOAD_PY: &str = include_str!("../../testvectors/bench/load.py");
/// Bytes in a megabyte and a gigabyte, as the tables count them.
const MB: f64 = 1e6;
const GB: f64 = 1e9;
const MIB: f64 = 1024.0 * 1024.0;

/// What to run, from `EREBUS_BENCH_*` environment variables (defaults in brackets).
struct Settings {
    /// `EREBUS_BENCH_BYTES` [268435456]: size of the large download.
    download_bytes: u64,
    /// `EREBUS_BENCH_ROUNDS` [3]: sessions per case and client.
    rounds: usize,
    /// `EREBUS_BENCH_SMALL` [500]: sequential small requests per session.
    small_requests: usize,
    /// `EREBUS_BENCH_LOAD` [1000]: concurrent downloads for erebus's peak RSS (0: skip).
    load_connections: usize,
    /// `EREBUS_BENCH_LOAD_BYTES` [1048576]: size of each of those downloads.
    load_bytes: u64,
    /// `EREBUS_BENCH_LOAD_TIMEOUT_SECS` [300]: how long the concurrent downloads may take
    /// in all; those still unfinished then count as failed.
    load_timeout: Duration,
    /// `EREBUS_BENCH_SETTLE_SECS` [60]: pause after the load before RSS is read again.
    settle: Duration,
    /// `EREBUS_BENCH_CASES` [all]: comma-separated case names to run (e.g. `aes-udp`).
    cases: Option<Vec<String>>,
    /// `EREBUS_BENCH_PERF` [unset]: a file to `perf record -g` erebus into during the first
    /// AES-256-GCM UDP download of the driver `EREBUS_BENCH_PERF_RUNTIME` names [mio].
    perf_output: Option<PathBuf>,
    perf_runtime: String,
    /// `EREBUS_BENCH_OUT` [target/bench/erebus-vs-openvpn.md]: where the tables go.
    output: PathBuf,
}

impl Settings {
    fn from_env() -> Self {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
            std::env::var(name)
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .unwrap_or(default)
        }
        // The workspace's target directory: the drivers crate sits one level below the root.
        let manifest_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = manifest_dir
            .parent()
            .unwrap_or(manifest_dir)
            .join("target/bench");
        Self {
            download_bytes: var("EREBUS_BENCH_BYTES", 256 << 20),
            rounds: var("EREBUS_BENCH_ROUNDS", 3).max(1),
            small_requests: var("EREBUS_BENCH_SMALL", 500).max(1),
            load_connections: var("EREBUS_BENCH_LOAD", 1000),
            load_bytes: var("EREBUS_BENCH_LOAD_BYTES", 1 << 20),
            load_timeout: Duration::from_secs(var("EREBUS_BENCH_LOAD_TIMEOUT_SECS", 300)),
            settle: Duration::from_secs(var("EREBUS_BENCH_SETTLE_SECS", 60)),
            cases: std::env::var("EREBUS_BENCH_CASES")
                .ok()
                .map(|list| list.split(',').map(|c| c.trim().to_owned()).collect()),
            perf_output: std::env::var_os("EREBUS_BENCH_PERF").map(PathBuf::from),
            perf_runtime: std::env::var("EREBUS_BENCH_PERF_RUNTIME")
                .unwrap_or_else(|_| "mio".to_owned()),
            output: std::env::var_os("EREBUS_BENCH_OUT")
                .map_or_else(|| target.join("erebus-vs-openvpn.md"), PathBuf::from),
        }
    }
}

/// A data-channel cipher over a transport.
#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    cipher: &'static str,
    transport: Transport,
}

const CASES: [Case; 3] = [
    Case {
        name: "aes-udp",
        cipher: "AES-256-GCM",
        transport: Transport::Udp,
    },
    Case {
        name: "chacha-udp",
        cipher: "CHACHA20-POLY1305",
        transport: Transport::Udp,
    },
    Case {
        name: "aes-tcp",
        cipher: "AES-256-GCM",
        transport: Transport::Tcp,
    },
];

/// The VPN client under test.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Client {
    /// openvpn with a kernel TUN device, as root; curl goes straight through the tunnel.
    Stock,
    /// erebus as nobody with the given `--runtime`; curl goes through its HTTP proxy.
    Erebus(&'static str),
}

const CLIENTS: [Client; 3] = [Client::Stock, Client::Erebus("mio"), Client::Erebus("smol")];

impl Client {
    fn name(self) -> String {
        match self {
            Self::Stock => "openvpn (kernel tun)".into(),
            Self::Erebus(runtime) => format!("erebus {runtime}"),
        }
    }

    fn run_as(self) -> RunAs {
        match self {
            Self::Stock => RunAs::Root,
            Self::Erebus(_) => RunAs::Nobody,
        }
    }

    fn proxy(self) -> Option<&'static str> {
        match self {
            Self::Stock => None,
            Self::Erebus(_) => Some(PROXY),
        }
    }
}

/// What one session of one client measured.
#[derive(Clone, Default)]
struct Sample {
    mb_per_s: f64,
    client_cpu_s_per_gb: f64,
    curl_cpu_s_per_gb: f64,
    server_cpu_s_per_gb: f64,
    packets_per_mb: f64,
    small_requests_s: f64,
    /// Stock client only: seconds from its start to "Initialization Sequence Completed".
    init_completed_s: Option<f64>,
    first_byte_s: f64,
    idle_rss_mib: f64,
    /// erebus in the last round: the concurrent downloads (or why they failed).
    load: Option<Result<LoadSample, String>>,
}

/// erebus's memory around the concurrent downloads.
#[derive(Clone)]
struct LoadSample {
    peak_rss_mib: f64,
    settled_rss_mib: f64,
    /// The load generator's summary line.
    outcome: String,
}

/// CPU seconds (user + system) the process has used so far, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32, ticks_per_second: f64) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may contain spaces; the fields after it do not. utime and stime are
    // fields 14 and 15, the 12th and 13th after the name.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("no ')' in stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("short stat")?.parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / ticks_per_second)
}

/// Clock ticks per second for `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 if that fails).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// A `VmRSS`/`VmHWM`-style line of `/proc/<pid>/status`, in MiB.
fn status_mib(pid: u32, key: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .with_context(|| format!("no {key} in /proc/{pid}/status"))?;
    let kib: f64 = line.trim().trim_end_matches("kB").trim().parse()?;
    Ok(kib * 1024.0 / MIB)
}

/// Parses one `XmY.YYYs` time of the shell's `times` builtin.
fn shell_time(text: &str) -> Option<f64> {
    let (minutes, seconds) = text.trim().strip_suffix('s')?.split_once('m')?;
    Some(minutes.parse::<f64>().ok()? * 60.0 + seconds.parse::<f64>().ok()?)
}

/// What a curl run printed with `-w`, and the CPU seconds curl used.
struct CurlRun {
    stdout: String,
    cpu_s: f64,
}

/// Runs curl with `args` in the client namespace as the client's user (through its proxy,
/// if it has one), under `sh` so the shell's `times` reports curl's CPU time on stderr.
fn curl(
    server: &OpenVpnServer,
    client: Client,
    args: &[&str],
    timeout: Duration,
) -> anyhow::Result<CurlRun> {
    let curl = netns::find_program("curl").context("curl not found")?;
    let mut argv = vec![
        "/bin/sh",
        "-c",
        "\"$@\"; status=$?; times >&2; exit $status",
        "sh",
        curl.to_str().unwrap(),
        "-sS",
        "--fail",
    ];
    if let Some(proxy) = client.proxy() {
        argv.extend_from_slice(&["-x", proxy]);
    }
    argv.extend_from_slice(args);
    let out = server.run_in_client(client.run_as(), &argv, timeout)?;
    let stderr = out.stderr_text();
    ensure!(out.success(), "curl failed: {}", stderr.trim());
    // `times` prints the shell's own times, then its children's: the last line is curl's.
    let children = stderr.lines().last().unwrap_or_default();
    let cpu_s = children
        .split_whitespace()
        .map(shell_time)
        .sum::<Option<f64>>()
        .with_context(|| format!("no `times` line in curl's stderr: {stderr}"))?;
    Ok(CurlRun {
        stdout: out.stdout_text(),
        cpu_s,
    })
}

/// Fetches the server's page until it works (at most `patience`); returns seconds from
/// `started` to curl's first byte (the launch instant plus curl's `time_starttransfer`).
fn first_byte(
    server: &OpenVpnServer,
    client: Client,
    started: Instant,
    patience: Duration,
) -> anyhow::Result<f64> {
    let url = server.http_url();
    let deadline = Instant::now() + patience;
    loop {
        let launched = started.elapsed().as_secs_f64();
        let args = [
            "--max-time",
            "15",
            "-o",
            "/dev/null",
            "-w",
            "%{time_starttransfer}",
            &url,
        ];
        match curl(server, client, &args, Duration::from_secs(20)) {
            Ok(run) => return Ok(launched + run.stdout.trim().parse::<f64>()?),
            Err(error) if Instant::now() >= deadline => return Err(error.context("first byte")),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Waits for the stock client's "Initialization Sequence Completed"; seconds since `started`.
fn wait_for_init(process: &mut NsProcess<'_>, started: Instant) -> anyhow::Result<f64> {
    let deadline = started + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = process.exit_status() {
            bail!(
                "the stock client exited ({status}): {}",
                process.log_tail(20)
            );
        }
        let log = std::fs::read_to_string(process.log_path()).unwrap_or_default();
        if log.contains("Initialization Sequence Completed") {
            return Ok(started.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!(
        "no \"Initialization Sequence Completed\": {}",
        process.log_tail(20)
    )
}

/// Fails when the server's log names a data-channel cipher other than `cipher`.
fn check_cipher(server: &OpenVpnServer, cipher: &str) -> anyhow::Result<()> {
    let log = std::fs::read_to_string(server.server_log()).unwrap_or_default();
    // "Outgoing Data Channel: Cipher '...' initialized" comes with the keys; "Data Channel:
    // cipher '...'" only a second later.
    let names_cipher = |line: &&str| {
        line.contains("Outgoing Data Channel: Cipher") || line.contains("Data Channel: cipher")
    };
    match log.lines().rfind(names_cipher) {
        Some(line) if !line.contains(cipher) => bail!("wrong cipher negotiated: {line}"),
        Some(_) => Ok(()),
        None => {
            eprintln!("bench: the server log does not name the data-channel cipher");
            Ok(())
        }
    }
}

/// Starts `perf record -g` on `pid`, writing `output`.
fn start_perf(pid: u32, output: &std::path::Path) -> anyhow::Result<Child> {
    Command::new("perf")
        .args(["record", "-g", "-p", &pid.to_string(), "-o"])
        .arg(output)
        .stdout(Stdio::null())
        .spawn()
        .context("starting perf record")
}

/// Stops a `perf record` started by [`start_perf`] (SIGINT, so it writes its file).
fn stop_perf(mut perf: Child) {
    let _ = Command::new("kill")
        .args(["-INT", &perf.id().to_string()])
        .status();
    let _ = perf.wait();
}

/// The large download: fills the throughput and cost fields of `sample`.
fn measure_download(
    server: &OpenVpnServer,
    client: Client,
    client_pid: u32,
    settings: &Settings,
    perf: Option<&std::path::Path>,
    sample: &mut Sample,
) -> anyhow::Result<()> {
    let ticks = clock_ticks();
    let server_pid = server
        .openvpn_pid()
        .context("the openvpn server is not running")?;
    let url = format!("{}bytes/{}", server.http_url(), settings.download_bytes);
    let (client_cpu, server_cpu) = (
        cpu_seconds(client_pid, ticks)?,
        cpu_seconds(server_pid, ticks)?,
    );
    let packets = server.server_veth_rx_packets()?;
    let perf = perf.map(|file| start_perf(client_pid, file)).transpose()?;
    let args = [
        "-o",
        "/dev/null",
        "-w",
        "%{speed_download} %{size_download}",
        &url,
    ];
    let run = curl(server, client, &args, Duration::from_secs(600));
    if let Some(perf) = perf {
        stop_perf(perf);
    }
    let run = run?;
    let packets = server.server_veth_rx_packets()? - packets;
    let client_cpu = cpu_seconds(client_pid, ticks)? - client_cpu;
    let server_cpu = cpu_seconds(server_pid, ticks)? - server_cpu;
    let (speed, size) = run
        .stdout
        .trim()
        .split_once(' ')
        .with_context(|| format!("curl printed {:?}", run.stdout))?;
    let size: f64 = size.parse()?;
    ensure!(
        size == settings.download_bytes as f64,
        "downloaded {size} of {} bytes",
        settings.download_bytes
    );
    sample.mb_per_s = speed.parse::<f64>()? / MB;
    sample.client_cpu_s_per_gb = client_cpu / (size / GB);
    sample.curl_cpu_s_per_gb = run.cpu_s / (size / GB);
    sample.server_cpu_s_per_gb = server_cpu / (size / GB);
    sample.packets_per_mb = packets as f64 / (size / MB);
    Ok(())
}

/// Seconds for `count` sequential requests of the server's small page, each on a fresh
/// connection (the sum of curl's `time_total`s).
fn small_requests(server: &OpenVpnServer, client: Client, count: usize) -> anyhow::Result<f64> {
    let url = server.http_url();
    let mut args = vec!["-H", "Connection: close", "-w", "\n@%{time_total}\n"];
    args.extend(std::iter::repeat_n(url.as_str(), count));
    let run = curl(server, client, &args, Duration::from_secs(600))?;
    let pages = run.stdout.matches(HTTP_MARKER).count();
    ensure!(pages == count, "{pages} of {count} small pages arrived");
    run.stdout
        .lines()
        .filter_map(|line| line.strip_prefix('@'))
        .map(|secs| Ok(secs.parse::<f64>()?))
        .sum()
}

/// The concurrent downloads through erebus's proxy, then the pause: erebus's peak and
/// settled RSS, and how many downloads arrived intact.
fn measure_load(
    server: &OpenVpnServer,
    erebus_pid: u32,
    settings: &Settings,
) -> anyhow::Result<LoadSample> {
    let script = server.write_client_file("bench-load", LOAD_PY)?;
    let python = netns::find_program("python3").context("python3 not found")?;
    let url = format!("{}bytes/{}", server.http_url(), settings.load_bytes);
    let sha = netns::hex(&netns::pattern_sha256(settings.load_bytes));
    let timeout = settings.load_timeout.as_secs().to_string();
    let (count, size) = (
        settings.load_connections.to_string(),
        settings.load_bytes.to_string(),
    );
    let argv = [
        python.to_str().unwrap(),
        script.to_str().unwrap(),
        "--proxy",
        "127.0.0.1:8080",
        "--url",
        &url,
        "--count",
        &count,
        "--size",
        &size,
        "--sha256",
        &sha,
        "--timeout",
        &timeout,
    ];
    let limit = settings.load_timeout + Duration::from_secs(60);
    let out = server.run_in_client(RunAs::Nobody, &argv, limit)?;
    let peak_rss_mib = status_mib(erebus_pid, "VmHWM")?;
    let outcome = out.stdout_text().trim().replace('\n', "; ");
    // Failed downloads are part of the result (the outcome says how many); only a load
    // generator that reported nothing is an error.
    ensure!(
        outcome.starts_with("load: ok="),
        "the load generator failed: {outcome} {}",
        out.stderr_text().trim()
    );
    std::thread::sleep(settings.settle);
    Ok(LoadSample {
        peak_rss_mib,
        settled_rss_mib: status_mib(erebus_pid, "VmRSS")?,
        outcome,
    })
}

/// One session: a fresh server for `case`, `client` started on it, and every measurement.
fn session(
    case: Case,
    client: Client,
    settings: &Settings,
    with_load: bool,
    perf: Option<&std::path::Path>,
) -> anyhow::Result<Sample> {
    let options = ServerOptions::default().with_openvpn_args(["--data-ciphers", case.cipher]);
    let server = OpenVpnServer::start_with(ServerProfile::TlsCrypt, case.transport, &options)?;
    let mut sample = Sample::default();
    let started = Instant::now();
    let mut process = match client {
        Client::Stock => server.start_stock_client("stock.log")?,
        Client::Erebus(runtime) => {
            let config = server.client_profile_path();
            let argv = [
                e2e::EREBUS,
                "--config",
                config.to_str().unwrap(),
                "--runtime",
                runtime,
                "--no-socks",
            ];
            server.spawn_in_client(RunAs::Nobody, &argv, "erebus.log")?
        }
    };
    match client {
        Client::Stock => sample.init_completed_s = Some(wait_for_init(&mut process, started)?),
        Client::Erebus(_) => process.wait_until_listening(8080, Duration::from_secs(10))?,
    }
    sample.first_byte_s = first_byte(&server, client, started, Duration::from_secs(30))?;
    check_cipher(&server, case.cipher)?;
    std::thread::sleep(Duration::from_secs(1));
    sample.idle_rss_mib = status_mib(process.pid(), "VmRSS")?;
    measure_download(&server, client, process.pid(), settings, perf, &mut sample)?;
    sample.small_requests_s = small_requests(&server, client, settings.small_requests)?;
    if with_load && client != Client::Stock && settings.load_connections > 0 {
        let load = measure_load(&server, process.pid(), settings);
        sample.load = Some(load.map_err(|error| format!("{error:#}")));
    }
    if let Some(status) = process.exit_status() {
        bail!("the client exited during the session ({status})");
    }
    Ok(sample)
}

/// [`session`], with a panic turned into an error so one failure cannot end the run.
fn guarded_session(
    case: Case,
    client: Client,
    settings: &Settings,
    with_load: bool,
    perf: Option<&std::path::Path>,
) -> anyhow::Result<Sample> {
    catch_unwind(AssertUnwindSafe(|| {
        session(case, client, settings, with_load, perf)
    }))
    .unwrap_or_else(|panic| {
        let text = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        Err(anyhow!("panicked: {text}"))
    })
}

/// The median of the values `field` gives (`None` when there are none).
fn median(samples: &[Sample], field: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    let mut values: Vec<f64> = samples.iter().filter_map(field).collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// A table cell: the value with `decimals` places, or `—`.
fn cell(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "—".to_owned(), |v| format!("{v:.decimals$}"))
}

/// A ratio cell: `value / stock`.
fn ratio(value: Option<f64>, stock: Option<f64>) -> String {
    cell(value.zip(stock).map(|(v, s)| v / s), 2)
}

/// Everything one case produced per client: samples and error messages.
struct CaseResults {
    case: Case,
    per_client: Vec<(Client, Vec<Sample>, Vec<String>)>,
}

/// Runs every round of `case`, the clients taking turns.
fn run_case(case: Case, settings: &Settings) -> CaseResults {
    let mut per_client: Vec<_> = CLIENTS
        .iter()
        .map(|c| (*c, Vec::new(), Vec::new()))
        .collect();
    for round in 0..settings.rounds {
        for (client, samples, errors) in &mut per_client {
            let with_load = round + 1 == settings.rounds;
            let perf = settings.perf_output.as_deref().filter(|_| {
                round == 0
                    && case.name == "aes-udp"
                    && matches!(client, Client::Erebus(runtime) if *runtime == settings.perf_runtime)
            });
            eprintln!("bench: {} round {} {}", case.name, round + 1, client.name());
            match guarded_session(case, *client, settings, with_load, perf) {
                Ok(sample) => samples.push(sample),
                Err(error) => {
                    eprintln!("bench: {} {}: {error:#}", case.name, client.name());
                    errors.push(format!("{error:#}"));
                }
            }
        }
    }
    CaseResults { case, per_client }
}

/// The throughput table's rows for one case.
fn throughput_rows(results: &CaseResults, out: &mut String) {
    let stock = &results.per_client[0].1;
    let stock_speed = median(stock, |s| Some(s.mb_per_s));
    let stock_small = median(stock, |s| Some(s.small_requests_s));
    for (client, samples, errors) in &results.per_client {
        let label = format!("{} {}", results.case.cipher, results.case.transport.name());
        if samples.is_empty() {
            let error = errors.first().map_or("", String::as_str);
            let _ = writeln!(
                out,
                "| {label} | {} | error: {} |||||||||",
                client.name(),
                one_line(error)
            );
            continue;
        }
        let m = |f: fn(&Sample) -> f64| median(samples, |s| Some(f(s)));
        let speed = m(|s| s.mb_per_s);
        let small = m(|s| s.small_requests_s);
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} |",
            client.name(),
            cell(speed, 1),
            ratio(speed, stock_speed),
            cell(m(|s| s.client_cpu_s_per_gb), 2),
            cell(m(|s| s.curl_cpu_s_per_gb), 2),
            cell(m(|s| s.server_cpu_s_per_gb), 2),
            cell(m(|s| s.packets_per_mb), 0),
            cell(small, 2),
            ratio(small, stock_small),
            samples.len(),
            samples.len() + errors.len(),
        );
    }
}

/// The start-up and memory table's rows for one case.
fn memory_rows(results: &CaseResults, out: &mut String) {
    for (client, samples, errors) in &results.per_client {
        let label = format!("{} {}", results.case.cipher, results.case.transport.name());
        if samples.is_empty() {
            let error = errors.first().map_or("", String::as_str);
            let _ = writeln!(
                out,
                "| {label} | {} | error: {} ||||||",
                client.name(),
                one_line(error)
            );
            continue;
        }
        let load_result = samples.iter().find_map(|s| s.load.clone());
        let load = load_result.as_ref().and_then(|result| result.as_ref().ok());
        let load_note = match (client, &load_result) {
            (Client::Stock, _) => "—".to_owned(),
            (_, Some(Ok(load))) => load.outcome.clone(),
            (_, Some(Err(error))) => format!("error: {}", one_line(error)),
            (_, None) => errors.last().map_or("not run".to_owned(), |e| one_line(e)),
        };
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} | {} | {} | {} | {} |",
            client.name(),
            cell(median(samples, |s| s.init_completed_s), 3),
            cell(median(samples, |s| Some(s.first_byte_s)), 3),
            cell(median(samples, |s| Some(s.idle_rss_mib)), 1),
            cell(load.as_ref().map(|l| l.peak_rss_mib), 1),
            cell(load.as_ref().map(|l| l.settled_rss_mib), 1),
            load_note,
        );
    }
}

/// `text` fit for a table cell: one line, no pipes, at most 160 characters.
fn one_line(text: &str) -> String {
    text.replace(['\n', '|'], " ").chars().take(160).collect()
}

/// The machine, the date and the settings, as a markdown preamble.
fn preamble(settings: &Settings) -> String {
    let output = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
            .unwrap_or_default()
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            Some(
                line.strip_prefix("model name")?
                    .split_once(':')?
                    .1
                    .trim()
                    .to_owned(),
            )
        })
        .unwrap_or_default();
    format!(
        "Date: {} · machine: {} CPUs, {cpu} · {}\n\n\
         Download {} MiB; {} rounds per case and client (medians); {} sequential small \
         requests; {} concurrent {} KiB downloads for erebus's peak RSS, RSS read again {} s \
         after. MB = 10^6 bytes, GB = 10^9 bytes. Client CPU is the VPN client process \
         (openvpn or erebus) alone; curl's CPU is its own column; server CPU is the server's \
         openvpn. Packets are those the server's veth received (UDP datagrams or TCP segments) \
         per MB downloaded.\n",
        output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        output("nproc", &[]),
        output("openvpn", &["--version"]),
        settings.download_bytes >> 20,
        settings.rounds,
        settings.small_requests,
        settings.load_connections,
        settings.load_bytes >> 10,
        settings.settle.as_secs(),
    )
}

/// The whole report: preamble, throughput table, start-up and memory table, errors.
fn report(settings: &Settings, results: &[CaseResults]) -> String {
    let mut out = preamble(settings);
    out.push_str(
        "\n| case | client | MB/s | vs stock | client CPU s/GB | curl CPU s/GB | server CPU \
         s/GB | packets to server / MB | small requests (s) | vs stock | sessions ok |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    results.iter().for_each(|r| throughput_rows(r, &mut out));
    out.push_str(
        "\n| case | client | init completed (s) | first byte (s) | idle RSS (MiB) | peak RSS \
         under load (MiB) | RSS after pause (MiB) | load |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    results.iter().for_each(|r| memory_rows(r, &mut out));
    let errors: Vec<String> = results
        .iter()
        .flat_map(|r| {
            r.per_client.iter().flat_map(move |(client, _, errors)| {
                errors
                    .iter()
                    .map(move |e| format!("- {} {}: {}", r.case.name, client.name(), one_line(e)))
            })
        })
        .collect();
    if !errors.is_empty() {
        out.push_str("\nFailed sessions:\n\n");
        out.push_str(&errors.join("\n"));
        out.push('\n');
    }
    out
}

#[test]
#[ignore = "a benchmark: run testvectors/bench/run.sh"]
fn erebus_against_the_stock_openvpn_client() {
    if !netns::should_run_interop("erebus_against_the_stock_openvpn_client") {
        return;
    }
    let settings = Settings::from_env();
    let cases = CASES.iter().filter(|case| {
        settings
            .cases
            .as_ref()
            .is_none_or(|names| names.iter().any(|name| name == case.name))
    });
    let results: Vec<CaseResults> = cases.map(|case| run_case(*case, &settings)).collect();
    let text = report(&settings, &results);
    println!("\n{text}");
    if let Some(dir) = settings.output.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(&settings.output, &text) {
        Ok(()) => println!("written to {}", settings.output.display()),
        Err(error) => println!("cannot write {}: {error}", settings.output.display()),
    }
}
