//! What the examples share: their command line, and a client for an OpenVPN profile with the
//! internal front end that connectors use.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use erebus::Clock;
use erebus::connector::add_internal_listener;
use erebus::session::{ConfigFile, SessionClient};
use erebus_client::{Client, ClientConfig};
use erebus_net::tcp::TcpConfig;
use erebus_proxy::ProxyConfig;
use erebus_sansio::io::ListenerId;

/// Fetches a page through an OpenVPN tunnel, with no listening socket and no root: erebus
/// runs in this process. The page goes to stdout, the status line to stderr.
#[derive(Parser, Debug)]
pub(crate) struct Args {
    /// The VPN configuration (an OpenVPN profile) to connect with.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: PathBuf,
    /// A DNS server inside the tunnel to resolve names with, instead of those the tunnel
    /// provides. Repeatable.
    #[arg(long, value_name = "IP")]
    pub(crate) dns: Vec<IpAddr>,
    /// How long to wait for the tunnel to come up, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub(crate) up_timeout: u64,
    /// The page to fetch: http://host[:port]/path. The host may be a name only the tunnel's
    /// DNS knows.
    pub(crate) url: String,
}

/// A client ready for a driver, and the listener id of its internal front end.
pub(crate) struct Session {
    pub(crate) client: SessionClient,
    pub(crate) internal: ListenerId,
    pub(crate) clock: Clock,
}

impl Session {
    /// Loads the profile and builds the client. Only the VPN server's own name uses the
    /// host's resolver.
    pub(crate) fn new(args: &Args) -> anyhow::Result<Self> {
        let config = ConfigFile::read(&args.config)?;
        let clock = Clock::start();
        let plan = config
            .plan(None, clock.wall_clock())
            .context("cannot set up the tunnel")?;
        for warning in &plan.warnings {
            tracing::warn!("{warning}");
        }
        let seed = erebus::os_seed()?;
        let tunnel = plan.start(&seed.child("session"), clock.wall_clock(), clock.now());
        let mut config = ClientConfig {
            // No listening socket: only the front end connectors hand their streams to.
            listeners: Vec::new(),
            proxy: ProxyConfig::default(),
            tcp: TcpConfig::default(),
            dns_servers: args.dns.clone(),
            tunnel_wait: ClientConfig::DEFAULT_TUNNEL_WAIT,
            limits: erebus_client::Limits::default(),
        };
        let internal = add_internal_listener(&mut config);
        let client = Client::new(tunnel, config, &seed.child("client"), clock.now());
        Ok(Self {
            client,
            internal,
            clock,
        })
    }
}

/// Logs to stderr; `RUST_LOG` (e.g. `RUST_LOG=erebus=debug`) says how much.
pub(crate) fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
}
