//! `erebus-ping`: checks a VPN profile by sending ICMP echo requests to an address inside the
//! tunnel, written as raw IPv4 packets straight into the tunnel (no TCP/IP stack, no proxy),
//! and printing the replies. Needs no root, like erebus itself.

#![allow(clippy::print_stdout)] // Printing the replies is what this command is for.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use erebus::mio_driver::MioDriver;
use erebus::session::{ConfigFile, SetupError};
use erebus::smol_driver::SmolDriver;
use erebus::thread_driver::ThreadDriver;
use erebus::{Clock, os_seed};
use erebus_client::ping::PingProbe;
use erebus_sansio::tunnel::Fault;

/// Pings an address inside the VPN tunnel a profile opens.
#[derive(Parser, Debug)]
#[command(name = "erebus-ping", version)]
struct Args {
    /// The VPN configuration (an OpenVPN profile) to connect with.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// How many echo requests to send.
    #[arg(short = 'c', long, default_value_t = 3)]
    count: u16,
    /// Seconds between requests.
    #[arg(short = 'i', long, default_value_t = 1.0)]
    interval: f64,
    /// Seconds to wait for replies after the last request.
    #[arg(short = 'W', long, default_value_t = 5.0)]
    wait: f64,
    /// The event loop that runs the probe, as `erebus --runtime`.
    #[arg(long, value_enum, default_value_t = Runtime::Mio)]
    runtime: Runtime,
    /// The address inside the tunnel to ping.
    target: Ipv4Addr,
}

/// The drivers `erebus` offers, so that a profile can be checked under the one it will run
/// with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Runtime {
    /// One thread, one mio poll.
    Mio,
    /// One smol task.
    Smol,
    /// Blocking sockets, a thread each.
    Threads,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("erebus-ping: {error}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<ExitCode, SetupError> {
    let config = ConfigFile::read(&args.config)?;
    let clock = Clock::start();
    let plan = config.plan(None, clock.wall_clock())?;
    let seed = os_seed().map_err(|e| SetupError(e.to_string()))?;
    let tunnel = plan.start(&seed.child("session"), clock.wall_clock(), clock.now());
    let interval = Duration::from_secs_f64(args.interval.clamp(0.01, 3600.0));
    let wait = Duration::from_secs_f64(args.wait.clamp(0.0, 3600.0));
    let ident = seed.child("ping").rng().next_u32() as u16;
    let probe = PingProbe::new(
        tunnel,
        args.target,
        args.count,
        interval,
        wait,
        ident,
        clock.now(),
    );
    let loop_failed = |e: std::io::Error| SetupError(format!("event loop failed: {e}"));
    let (outcome, replies) = match args.runtime {
        Runtime::Mio => {
            let mut driver = MioDriver::new(probe, clock, Vec::new())
                .map_err(|e| SetupError(format!("cannot start the event loop: {e}")))?;
            (
                driver.run().map_err(loop_failed)?,
                driver.machine().replies().to_vec(),
            )
        }
        Runtime::Smol => {
            let mut driver = SmolDriver::new(probe, clock, Vec::new())
                .map_err(|e| SetupError(format!("cannot start the event loop: {e}")))?;
            (
                smol::block_on(driver.run()).map_err(loop_failed)?,
                driver.machine().replies().to_vec(),
            )
        }
        Runtime::Threads => {
            let mut driver = ThreadDriver::new(probe, clock, Vec::new());
            (
                driver.run().map_err(loop_failed)?,
                driver.machine().replies().to_vec(),
            )
        }
    };
    for reply in &replies {
        println!(
            "reply from {}: icmp_seq={} time={:.2} ms",
            args.target,
            reply.seq,
            reply.rtt.as_secs_f64() * 1000.0
        );
    }
    println!("{}", outcome.message);
    Ok(if outcome.fault == Fault::Closed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(4)
    })
}
