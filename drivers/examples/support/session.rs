//! What the examples share: their command line, and a client for an OpenVPN profile with the
//! internal front end that connectors use.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use erebus::Clock;
use erebus::connector::add_internal_listener;
use erebus::profile::LoadedProfile;
use erebus::session::{AnyTunnel, build_tunnel, first_connection, resolve_remote};
use erebus_client::{Client, ClientConfig};
use erebus_net::tcp::TcpConfig;
use erebus_proxy::ProxyConfig;
use erebus_sansio::io::ListenerId;

/// Fetches a page through an OpenVPN tunnel, with no listening socket and no root: erebus
/// runs in this process. The page goes to stdout, the status line to stderr.
#[derive(Parser, Debug)]
pub(crate) struct Args {
    /// The OpenVPN profile (.ovpn) to connect with.
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
    pub(crate) client: Client<AnyTunnel>,
    pub(crate) internal: ListenerId,
    pub(crate) clock: Clock,
}

impl Session {
    /// Loads the profile and builds the client. Only the VPN server's own name uses the
    /// host's resolver.
    pub(crate) fn new(args: &Args) -> anyhow::Result<Self> {
        let loaded = LoadedProfile::load(&args.config)?;
        for warning in &loaded.warnings {
            tracing::warn!(
                "{}: line {}: {}: {}",
                loaded.path.display(),
                warning.line,
                warning.directive,
                warning.message
            );
        }
        let connection = first_connection(&loaded)?;
        let remote = resolve_remote(connection)?;
        let seed = erebus::os_seed()?;
        let clock = Clock::start();
        let tunnel = build_tunnel(&loaded, connection, remote, &seed, &clock, clock.now())
            .context("cannot set up the tunnel")?;
        let mut config = ClientConfig {
            // No listening socket: only the front end connectors hand their streams to.
            listeners: Vec::new(),
            proxy: ProxyConfig::default(),
            tcp: TcpConfig::default(),
            dns_servers: args.dns.clone(),
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
