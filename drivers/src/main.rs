//! The `erebus` command: a rootless VPN client that exposes the private network through local
//! proxies.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use erebus::record::Recorder;
use erebus::session::{Capacity, ConfigFile, Settings, build_client};
use erebus::{Clock, os_seed};
use erebus_client::Limits;
use erebus_proxy::{ForwardSpec, FrontEnd};
use erebus_sansio::Instant;
use erebus_sansio::io::Event;
use erebus_sansio::tunnel::{Failure, Fault, TransportSpec, TunnelConfig};

const EXIT_HELP: &str = "\
Exit status:
  0  the session ended cleanly (Ctrl-C, or the server closed it)
  1  an unexpected internal error
  2  configuration error: bad arguments, unreadable or unusable profile
  3  authentication failure: the server refused our credentials or certificate, or
     its certificate failed verification against the profile's CA and rules
  4  network failure: the profile's retry limits (connect-retry-max, resolv-retry)
     ran out, or the server ended the session for good (HALT)

A lost session is not an exit: erebus reconnects by itself, with backoff, trying the
profile's servers in turn, and its proxies stay up meanwhile. One line on stderr per
event: connecting, up, reconnecting (with the reason and the wait), down.

Proxies listen on 127.0.0.1 unless told otherwise. Logs go to stderr; set RUST_LOG
(e.g. RUST_LOG=erebus=debug) for more.";

/// A rootless VPN client: speaks OpenVPN itself and serves the private network through local
/// HTTP and SOCKS5 proxies and port forwards. Needs no root, no TUN device, no route changes.
#[derive(Parser, Debug)]
#[command(
    name = "erebus",
    version,
    after_help = EXIT_HELP,
    args_conflicts_with_subcommands = true
)]
struct Args {
    /// Something other than connecting: `demo` or `serve`.
    #[command(subcommand)]
    command: Option<Command>,
    /// The configuration to connect with: an OpenVPN profile (.ovpn) or a strongSwan
    /// swanctl.conf, recognised from its content.
    #[arg(long, value_name = "FILE", required = true)]
    config: Option<PathBuf>,
    /// Address of the HTTP proxy (CONNECT and absolute-form requests).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Address of the SOCKS5 proxy (names are resolved through the tunnel).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:1080")]
    socks: SocketAddr,
    /// Do not start the HTTP proxy.
    #[arg(long)]
    no_http: bool,
    /// Do not start the SOCKS5 proxy.
    #[arg(long)]
    no_socks: bool,
    /// Forward a local port through the tunnel: [bind:]port:host:hostport. Repeatable.
    #[arg(short = 'L', value_name = "SPEC")]
    forward: Vec<String>,
    /// A DNS server inside the tunnel to resolve proxied names with, instead of those the
    /// tunnel provides. Repeatable.
    #[arg(long, value_name = "IP")]
    dns: Vec<std::net::IpAddr>,
    /// The event loop that runs the client.
    #[arg(long, value_enum, default_value_t = Runtime::Mio)]
    runtime: Runtime,
    /// Record the session (seed, profile, every input and a pcap) into this directory so it can
    /// be replayed in a test. The recording holds secrets: keep it private.
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
    /// Require proxy clients to authenticate (HTTP Basic, SOCKS5 username/password) with the
    /// username on the first line of FILE and the password on the second. Kept out of argv so
    /// other users cannot read it.
    #[arg(long, value_name = "FILE")]
    proxy_auth: Option<PathBuf>,
    /// The username (first line) and password (second line) for a profile with
    /// `auth-user-pass`; overrides a file the profile names. Keep the file private.
    #[arg(long, value_name = "FILE")]
    auth_user_pass: Option<PathBuf>,
    /// How long a proxied connection waits for the tunnel to come (back) up before it is
    /// refused: HTTP 503 with Retry-After, or a SOCKS5 general failure.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    tunnel_wait: u64,
    /// The connection to use from a strongSwan swanctl.conf that has several; may be left out
    /// when it has one.
    #[arg(long, value_name = "NAME")]
    connection: Option<String>,
    /// The most local connections served at once, over all proxies and forwards. Beyond it a
    /// connection is answered with HTTP 503 or a SOCKS5 failure (a forward is closed), and a
    /// warning is logged.
    #[arg(long, value_name = "N", default_value_t = Limits::default().connections)]
    max_connections: usize,
    /// The most names being resolved through the tunnel at once. A request needing one more is
    /// answered with HTTP 503 or a SOCKS5 failure, and a warning is logged.
    #[arg(long, value_name = "N", default_value_t = Limits::default().dns_lookups)]
    max_dns_queries: usize,
    /// The largest TCP receive and send buffer of each proxied connection (bytes, or with a K,
    /// M or G suffix): it bounds the window offered and the data in flight.
    #[arg(long, value_name = "SIZE", default_value = "2M", value_parser = parse_size)]
    tcp_buffer: usize,
    /// The receive memory all proxied connections share (bytes, or with a K, M or G suffix):
    /// however many connections stop reading, together they hold no more than this.
    #[arg(long, value_name = "SIZE", default_value = "8M", value_parser = parse_size)]
    receive_memory: usize,
    /// The most bytes of packets that may wait to be written to a TCP connection to the server
    /// (bytes, or with a K, M or G suffix). Beyond it packets are dropped, as a full UDP
    /// socket drops them, and a warning is logged: a server that stops reading cannot make
    /// erebus grow.
    #[arg(long, value_name = "SIZE", default_value = "4M", value_parser = parse_size)]
    transport_queue: usize,
}

/// The smallest `--transport-queue`: one packet of the largest size (65,535 bytes) with its
/// two-byte length prefix.
const MIN_TRANSPORT_QUEUE: usize = 65_537;

/// Reads a size: a number of bytes, or one followed by `K`, `M` or `G` (binary multiples; `KiB`,
/// `MiB` and `GiB` are read too).
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: usize = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (bytes, or a number with K, M or G)"))?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use K, M or G)")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the whole path on this machine with nothing installed: a throwaway PKI, an exit
    /// server on loopback, the client with its proxies and a small HTTP origin; fetch one page
    /// through all of it, print it, and stay up for curl.
    Demo {
        /// Address of the HTTP proxy.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        http: SocketAddr,
        /// Address of the SOCKS5 proxy.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:1080")]
        socks: SocketAddr,
        /// Stop after the first page.
        #[arg(long)]
        once: bool,
    },
    /// Serve OpenVPN clients with an exit to this host's network, without root or a TUN
    /// device: every flow a client sends beyond the server leaves through an ordinary socket.
    Serve {
        /// The OpenVPN server configuration (server.conf).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Listen here instead of the configuration's `local` and `port`.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Let clients reach NET[/PREFIX][:PORT[-PORT]] through the exit. Repeatable; nothing is
        /// reachable until allowed.
        #[arg(long, value_name = "RULE")]
        allow: Vec<String>,
        /// Check usernames and passwords against FILE: one `username password` per line.
        #[arg(long, value_name = "FILE")]
        users: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Runtime {
    /// One thread, one mio poll.
    Mio,
    /// One smol task.
    Smol,
    /// Blocking sockets, a thread each.
    Threads,
}

/// What ended the program, mapped to the documented exit status.
enum Outcome {
    Clean,
    Config(anyhow::Error),
    Session(Failure),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only for a terminal: logs redirected to a file or a pipe stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    raise_open_files_limit();
    match run(&args) {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::Config(error)) => {
            eprintln!("erebus: {error:#}");
            ExitCode::from(2)
        }
        Ok(Outcome::Session(failure)) => {
            // The reason was printed with the `down` event.
            ExitCode::from(match failure.fault {
                Fault::Closed => 0,
                Fault::Config | Fault::PeerIncompatible => 2,
                Fault::Auth => 3,
                _ => 4,
            })
        }
        Err(error) => {
            eprintln!("erebus: {error:#}");
            ExitCode::from(1)
        }
    }
}

/// Raises the soft limit on open files to the hard limit: each proxied connection holds a
/// descriptor, and the usual soft limit of 1024 would refuse the thousandth.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!("open files limit: {limit}"),
        Err(e) => tracing::warn!("cannot raise the open files limit: {e}"),
    }
}

fn run(args: &Args) -> anyhow::Result<Outcome> {
    match &args.command {
        Some(Command::Demo { http, socks, once }) => {
            erebus::demo::run(&erebus::demo::DemoOptions {
                http: *http,
                socks: *socks,
                once: *once,
            })?;
            return Ok(Outcome::Clean);
        }
        Some(Command::Serve {
            config,
            listen,
            allow,
            users,
        }) => return serve(config, *listen, allow, users.as_deref()),
        None => {}
    }
    let Some(config_path) = &args.config else {
        return Ok(Outcome::Config(anyhow::anyhow!(
            "--config FILE is required (or a command: demo, serve)"
        )));
    };
    let mut config = match ConfigFile::read(config_path) {
        Ok(config) => config,
        Err(error) => return Ok(Outcome::Config(error.into())),
    };
    config.connection.clone_from(&args.connection);
    // The credentials are read here and handed over as bytes: they never appear in argv or
    // the logs.
    let auth_user_pass = match &args.auth_user_pass {
        Some(file) => match std::fs::read(file) {
            Ok(bytes) => Some(zeroize::Zeroizing::new(bytes)),
            Err(e) => {
                return Ok(Outcome::Config(anyhow::anyhow!(
                    "--auth-user-pass {}: {e}",
                    file.display()
                )));
            }
        },
        None => None,
    };
    let clock = Clock::start();
    let plan = match config.plan(auth_user_pass, clock.wall_clock()) {
        Ok(plan) => plan,
        Err(error) => return Ok(Outcome::Config(error.into())),
    };
    for warning in &plan.warnings {
        tracing::warn!("{warning}");
    }
    let mut proxy_auth = None;
    if let Some(path) = &args.proxy_auth {
        match read_proxy_auth(path) {
            Ok(auth) => proxy_auth = Some(auth),
            Err(error) => return Ok(Outcome::Config(error)),
        }
    }
    // The listeners in ListenerId order: where each binds, what it is (for messages), whether
    // it asks for credentials, its front end, and its part of the status line.
    let mut planned = Vec::new();
    if !args.no_http {
        planned.push((
            args.http,
            "HTTP proxy",
            proxy_auth.is_some(),
            FrontEnd::Http,
            format!("HTTP proxy {}", args.http),
        ));
    }
    if !args.no_socks {
        planned.push((
            args.socks,
            "SOCKS5 proxy",
            proxy_auth.is_some(),
            FrontEnd::Socks5,
            format!("SOCKS5 {}", args.socks),
        ));
    }
    for spec in &args.forward {
        let forward = match ForwardSpec::parse(spec) {
            Ok(forward) => forward,
            Err(error) => {
                return Ok(Outcome::Config(anyhow::anyhow!("-L {spec}: {error}")));
            }
        };
        let summary = format!(
            "forward {} -> {}:{}",
            forward.bind, forward.host, forward.host_port
        );
        planned.push((
            forward.bind,
            "port forward",
            false,
            FrontEnd::Forward {
                host: forward.host,
                port: forward.host_port,
            },
            summary,
        ));
    }
    let capacity = Capacity {
        limits: Limits {
            connections: args.max_connections,
            dns_lookups: args.max_dns_queries,
        },
        tcp_buffer: args.tcp_buffer,
        receive_memory: args.receive_memory,
    };
    if let Err(reason) = capacity.check() {
        return Ok(Outcome::Config(anyhow::anyhow!(reason)));
    }
    if args.transport_queue < MIN_TRANSPORT_QUEUE {
        return Ok(Outcome::Config(anyhow::anyhow!(
            "--transport-queue must be at least {MIN_TRANSPORT_QUEUE} bytes (the largest \
             packet), not {}",
            args.transport_queue
        )));
    }
    let seed = os_seed()?;
    let settings = Settings {
        // The clock's epoch is Instant::ZERO, so this is its Unix time at start.
        wall_clock_at_epoch: clock.wall_clock().at(Instant::ZERO),
        built_at: clock.now(),
        listeners: planned
            .iter()
            .map(|(.., front_end, _)| front_end.clone())
            .collect(),
        dns_servers: args.dns.clone(),
        proxy_auth: proxy_auth.is_some(),
        auth_user_pass: args.auth_user_pass.is_some(),
        tunnel_wait: Duration::from_secs(args.tunnel_wait),
        // A profile named without a directory resolves its files against the working one.
        profile_dir: std::path::absolute(if config.dir.as_os_str().is_empty() {
            std::path::Path::new(".")
        } else {
            &config.dir
        })
        .ok(),
        connection: args.connection.clone(),
        capacity,
    };
    let client = match build_client(plan, &settings, &seed, proxy_auth) {
        Ok(client) => client,
        Err(error) => return Ok(Outcome::Config(error.into())),
    };

    let mut listeners = Vec::new();
    let mut summary = Vec::new();
    for (addr, what, authenticated, _, line) in planned {
        listeners.push(bind(addr, what, authenticated)?);
        summary.push(line);
    }
    let recorder = match &args.record {
        Some(dir) => Some(
            Recorder::create_session(dir, &seed, &config.bytes, &settings)
                .with_context(|| format!("cannot record into {}", dir.display()))?,
        ),
        None => None,
    };
    let listeners_line = summary.join(", ");
    let mut transport: Option<TransportSpec> = None;
    // One line per event, each once: what a person watching the terminal needs.
    let on_event = move |event: &Event| match event {
        Event::Connecting(spec) => {
            eprintln!("erebus: connecting to {spec}");
            transport = Some(spec.clone());
        }
        Event::Connected(config) => {
            let via = transport
                .as_ref()
                .map(|spec| format!(", {} to {}:{}", spec.kind.name(), spec.host, spec.port))
                .unwrap_or_default();
            eprintln!("erebus: up: {}{via}; {listeners_line}", describe(config));
        }
        Event::Reconnecting { reason, retry_in } => eprintln!(
            "erebus: reconnecting: {reason}; next try in {} s",
            seconds(*retry_in)
        ),
        Event::Down(failure) => eprintln!("erebus: down: {failure}"),
        _ => {}
    };

    // Every driver is set up the same way: events, the recording, Ctrl-C; only how it runs
    // differs.
    macro_rules! run_with {
        ($driver:expr, |$d:ident| $run:expr) => {{
            let mut $d = $driver;
            $d.on_event(on_event);
            $d.set_transport_queue(args.transport_queue);
            if let Some(recorder) = recorder {
                $d.record(Box::new(recorder));
            }
            let stop = $d.stop_handle();
            ctrlc::set_handler(move || stop.stop()).context("cannot install the Ctrl-C handler")?;
            let failure = $run?;
            // Stopped (Ctrl-C, SIGTERM, the server closing): what moved and what was dropped,
            // for the whole run, ends the log. A failure's reason stays the last line.
            if failure.fault == Fault::Closed {
                eprintln!(
                    "erebus: totals: {}; {} packets to the server dropped at the full \
                     transport queue",
                    $d.machine().stats(),
                    $d.transport_queue_drops()
                );
            }
            failure
        }};
    }
    let failure = match args.runtime {
        Runtime::Mio => run_with!(
            erebus::mio_driver::MioDriver::new(client, clock, listeners)?,
            |driver| driver.run()
        ),
        Runtime::Smol => run_with!(
            erebus::smol_driver::SmolDriver::new(client, clock, listeners)?,
            |driver| smol::block_on(driver.run())
        ),
        Runtime::Threads => run_with!(
            erebus::thread_driver::ThreadDriver::new(client, clock, listeners),
            |driver| driver.run()
        ),
    };
    if failure.fault == Fault::Closed {
        return Ok(Outcome::Clean);
    }
    Ok(Outcome::Session(failure))
}

/// `erebus serve`: loads the server configuration and runs the exit server until Ctrl-C.
fn serve(
    path: &std::path::Path,
    listen: Option<SocketAddr>,
    allow: &[String],
    users: Option<&std::path::Path>,
) -> anyhow::Result<Outcome> {
    let mut rules = Vec::new();
    for rule in allow {
        match rule.parse::<erebus_server::AllowRule>() {
            Ok(rule) => rules.push(rule),
            Err(error) => return Ok(Outcome::Config(anyhow::anyhow!("--allow: {error}"))),
        }
    }
    let users = match users {
        Some(file) => {
            let bytes = match std::fs::read(file) {
                Ok(bytes) => zeroize::Zeroizing::new(bytes),
                Err(e) => {
                    return Ok(Outcome::Config(anyhow::anyhow!(
                        "--users {}: {e}",
                        file.display()
                    )));
                }
            };
            match erebus_server::UserTable::parse(&bytes) {
                Ok(table) => Some(table),
                Err(e) => {
                    return Ok(Outcome::Config(anyhow::anyhow!(
                        "--users {}: {e}",
                        file.display()
                    )));
                }
            }
        }
        None => None,
    };
    let config = match ConfigFile::read(path) {
        Ok(config) => config,
        Err(error) => return Ok(Outcome::Config(error.into())),
    };
    let clock = Clock::start();
    let dir = config.dir.clone();
    let mut files = move |file: &std::path::Path| erebus::session::read_relative(&dir, file);
    let loaded = match erebus_server::load(
        &config.bytes,
        &path.display().to_string(),
        &mut files,
        erebus_server::ServeOptions {
            listen,
            allow: erebus_server::AllowList::new(rules),
            users,
            wall_clock: clock.wall_clock(),
        },
    ) {
        Ok(loaded) => loaded,
        Err(error) => return Ok(Outcome::Config(error.into())),
    };
    for warning in &loaded.warnings {
        tracing::warn!("{}: {warning}", path.display());
    }
    let allowed = loaded.config.exit.allow.rules().to_vec();
    let seed = os_seed()?;
    let server = erebus_server::Server::new(loaded.config, &seed, clock.now());
    let mut driver = erebus::serve::MioServeDriver::new(server, clock)
        .with_context(|| format!("cannot listen on {}", driver_listen_hint(listen)))?;
    if let Some(command) = loaded.auth_command {
        driver.set_credentials_checker(std::sync::Arc::new(move |user: &str, password: &str| {
            erebus::serve::run_auth_command(&command.argv, command.via_file, user, password)
        }));
    }
    driver.on_event(erebus::demo::log_server_event);
    eprintln!(
        "erebus serve: listening on {}; exit allows {}",
        driver.local_addr(),
        if allowed.is_empty() {
            "nothing (add --allow NET[:PORTS])".to_owned()
        } else {
            allowed
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let stop = driver.stop_handle();
    ctrlc::set_handler(move || stop.stop()).context("cannot install the Ctrl-C handler")?;
    driver.run()?;
    Ok(Outcome::Clean)
}

fn driver_listen_hint(listen: Option<SocketAddr>) -> String {
    listen.map_or_else(|| "the configured address".to_owned(), |a| a.to_string())
}

/// Reads `--proxy-auth`'s file: the username on the first line, the password on the second.
fn read_proxy_auth(path: &std::path::Path) -> anyhow::Result<erebus_proxy::ProxyAuth> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?,
    );
    let mut lines = text.lines();
    let (Some(user), Some(password)) = (lines.next(), lines.next()) else {
        anyhow::bail!(
            "{}: expected a username line and a password line",
            path.display()
        );
    };
    erebus_proxy::ProxyAuth::new(user.trim_end_matches('\r'), password.trim_end_matches('\r'))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Binds a listener, warning when it is reachable from other hosts without authentication.
fn bind(addr: SocketAddr, what: &str, authenticated: bool) -> anyhow::Result<TcpListener> {
    if !addr.ip().is_loopback() && !authenticated {
        tracing::warn!(
            "the {what} listens on {addr}, reachable from other hosts, without authentication: \
             anyone who can reach it can use the tunnel"
        );
    }
    listen(addr).with_context(|| format!("cannot listen on {addr} for the {what}"))
}

/// Connections a proxy listener queues before it accepts them. std's 128 overflows when a
/// client opens hundreds of connections at once; each overflow costs that client a SYN
/// retransmission (a second or more).
const LISTEN_BACKLOG: i32 = 1024;

/// A listening TCP socket on `addr` with a [`LISTEN_BACKLOG`] queue (the kernel caps it at
/// `net.core.somaxconn`).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // As std does: a restarted proxy can listen again while old connections linger.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// One line about a tunnel configuration: address, routes, DNS.
fn describe(config: &TunnelConfig) -> String {
    let mut parts = Vec::new();
    if let Some(net) = config.ipv4 {
        parts.push(format!("address {net}"));
    }
    if let Some(net) = config.ipv6 {
        parts.push(format!("address {net}"));
    }
    if let Some(gateway) = config.gateway {
        parts.push(format!("peer {gateway}"));
    }
    if !config.routes.is_empty() {
        let routes: Vec<String> = config.routes.iter().map(ToString::to_string).collect();
        parts.push(format!("routes {}", routes.join(" ")));
    }
    if !config.dns_servers.is_empty() {
        let dns: Vec<String> = config.dns_servers.iter().map(ToString::to_string).collect();
        parts.push(format!("DNS {}", dns.join(" ")));
    }
    if let Some(cipher) = &config.cipher {
        parts.push(format!("cipher {cipher}"));
    }
    // The default MTU goes unsaid; a smaller one (pushed, or the profile's) and an MSS cap
    // (mssfix) explain slower transfers.
    if config.mtu != TunnelConfig::DEFAULT_MTU {
        parts.push(format!("mtu {}", config.mtu));
    }
    if let Some(mss) = config.tcp_mss {
        parts.push(format!("mss {mss}"));
    }
    parts.join(", ")
}

/// A wait in seconds as a person reads it: whole seconds, or tenths below ten.
fn seconds(wait: Duration) -> String {
    if wait >= Duration::from_secs(10) {
        format!("{}", wait.as_secs())
    } else {
        format!("{:.1}", wait.as_secs_f64())
    }
}
