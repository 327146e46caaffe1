//! `net_dns`: a configuration byte, then steps (tag, u16 length, bytes; see
//! [`crate::Records`]) fed to the stub [`Resolver`] of the client's user-space stack, which
//! checks and interprets DNS responses (its `response` module) and caches them.
//!
//! The tunnel gives two DNS servers and a search domain; the configuration byte picks the
//! family (modulo 3) and the first name (bits 2-3, one of [`NAMES`]). Tags (modulo 8): 0, a UDP response whose
//! first two bytes the harness replaces with the id of a query in flight (the one the tag's
//! upper bits pick), from that query's server to its port; 1, the body as a UDP datagram as
//! it is, from the first server to the last query's port; 2, a TCP response to a query in
//! flight (id written in and the length prefix added); 3, the clock moves on by the body's
//! big-endian milliseconds (up to 4 bytes) and expired attempts time out; 4, the TCP
//! connection of the latest query fails; 5, a new lookup of the body as a name; 6, the
//! oldest lookup is cancelled. Every body also goes through [`Message::parse`].
//!
//! After each step the harness drains `poll_transmit` (every query must parse as a question
//! for a name) and `poll_result`: addresses are never empty, have no duplicates, and IPv4 comes
//! before IPv6.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use erebus_net::dns::{DnsTransmit, DnsTransport, Family, LookupId, Resolver, ResolverOptions};
use erebus_sansio::{Instant, Seed, TunnelConfig};
use erebus_wire::dns::Message;

use crate::Records;

/// Tags of the steps.
pub const UDP: u8 = 0;
/// A raw UDP datagram.
pub const UDP_RAW: u8 = 1;
/// A TCP response.
pub const TCP: u8 = 2;
/// Advance the clock.
pub const ADVANCE: u8 = 3;
/// A TCP connection fails.
pub const TCP_FAILURE: u8 = 4;
/// A new lookup.
pub const RESOLVE: u8 = 5;
/// Cancel a lookup.
pub const CANCEL: u8 = 6;

/// The names the configuration byte picks from.
pub const NAMES: [&str; 4] = [
    "www.example.com",
    "intranet",
    "a.b.c.example.org.",
    "localhost",
];
/// The tunnel's DNS servers.
pub const SERVERS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 8, 0, 1), Ipv4Addr::new(10, 8, 0, 53)];
/// The tunnel's search domain.
pub const SEARCH: &str = "corp.example";

/// The family of a configuration byte's bits.
pub fn family(bits: u8) -> Family {
    match bits % 3 {
        0 => Family::V4,
        1 => Family::V6,
        _ => Family::Both,
    }
}

/// One resolver and what it did.
pub struct Driver {
    /// The resolver.
    pub resolver: Resolver,
    /// The clock.
    pub now: Instant,
    /// Every query sent, in order.
    pub sent: Vec<DnsTransmit>,
    /// Lookups started.
    pub lookups: Vec<LookupId>,
    /// Successful results.
    pub resolved: usize,
    /// Failed results.
    pub failed: usize,
}

impl Driver {
    /// A resolver of configuration `config` with its first lookup started.
    pub fn new(config: u8) -> Self {
        let tunnel = TunnelConfig {
            dns_servers: SERVERS.iter().map(|s| IpAddr::V4(*s)).collect(),
            search_domains: vec![SEARCH.to_owned()],
            ..TunnelConfig::default()
        };
        let options = ResolverOptions {
            cache_capacity: 8,
            ..ResolverOptions::default()
        };
        let resolver = Resolver::new(&tunnel, options, &Seed::from_byte(5));
        let mut driver = Self {
            resolver,
            now: Instant::ZERO,
            sent: Vec::new(),
            lookups: Vec::new(),
            resolved: 0,
            failed: 0,
        };
        let name = NAMES[usize::from(config >> 2) % NAMES.len()];
        if let Ok(id) = driver.resolver.resolve(Instant::ZERO, name, family(config)) {
            driver.lookups.push(id);
        }
        driver.drain();
        driver
    }

    /// The query in flight that `pick` selects, the latest first.
    fn query(&self, pick: u8, transport: DnsTransport) -> Option<&DnsTransmit> {
        let matching: Vec<&DnsTransmit> = self
            .sent
            .iter()
            .rev()
            .filter(|t| t.transport == transport)
            .collect();
        matching
            .get(usize::from(pick) % matching.len().max(1))
            .copied()
    }

    /// Runs one step, then drains.
    pub fn step(&mut self, tag: u8, body: &[u8]) {
        let _ = Message::parse(body).map(|m| m.answers().count());
        let pick = tag >> 3;
        match tag % 8 {
            UDP_RAW => {
                let from = SocketAddr::new(SERVERS[0].into(), 53);
                let port = self.sent.last().map_or(0, |t| t.local_port);
                let _ = self
                    .resolver
                    .handle_udp_response(self.now, from, port, body);
            }
            TCP => {
                if let Some(query) = self.query(pick, DnsTransport::Tcp) {
                    let (server, id) = (query.server, query.id);
                    let mut frame = Vec::with_capacity(body.len() + 2);
                    let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
                    frame.extend_from_slice(&len.to_be_bytes());
                    frame.extend_from_slice(&body[..usize::from(len)]);
                    if frame.len() >= 4 {
                        frame[2..4].copy_from_slice(&id.to_be_bytes());
                    }
                    let _ = self.resolver.handle_tcp_response(self.now, server, &frame);
                }
            }
            ADVANCE => {
                let mut ms = [0u8; 4];
                let n = body.len().min(4);
                ms[4 - n..].copy_from_slice(&body[..n]);
                self.now += Duration::from_millis(u64::from(u32::from_be_bytes(ms)));
                if self
                    .resolver
                    .poll_timeout()
                    .is_some_and(|at| at <= self.now)
                {
                    self.resolver.handle_timeout(self.now);
                }
            }
            TCP_FAILURE => {
                if let Some(query) = self.query(pick, DnsTransport::Tcp) {
                    let (server, id) = (query.server, query.id);
                    let _ = self.resolver.handle_tcp_failure(self.now, server, id);
                }
            }
            RESOLVE => {
                let name = String::from_utf8_lossy(body);
                let family = family(body.first().copied().unwrap_or(0));
                if let Ok(id) = self.resolver.resolve(self.now, &name, family) {
                    self.lookups.push(id);
                }
            }
            CANCEL => {
                if !self.lookups.is_empty() {
                    let id = self.lookups.remove(0);
                    let _ = self.resolver.cancel(id);
                }
            }
            _ => {
                if let Some(query) = self.query(pick, DnsTransport::Udp) {
                    let (server, port, id) = (query.server, query.local_port, query.id);
                    let mut datagram = body.to_vec();
                    if datagram.len() >= 2 {
                        datagram[..2].copy_from_slice(&id.to_be_bytes());
                    }
                    let _ = self
                        .resolver
                        .handle_udp_response(self.now, server, port, &datagram);
                }
            }
        }
        self.drain();
    }

    /// Drains queries and results.
    pub fn drain(&mut self) {
        while let Some(transmit) = self.resolver.poll_transmit(self.now) {
            let message = match transmit.transport {
                DnsTransport::Udp => &transmit.bytes[..],
                DnsTransport::Tcp => &transmit.bytes[2..],
            };
            let parsed = Message::parse(message).expect("a query the resolver wrote parses");
            assert_eq!(parsed.header().id(), transmit.id);
            assert_eq!(parsed.questions().count(), 1);
            assert!(
                SERVERS
                    .iter()
                    .any(|s| IpAddr::V4(*s) == transmit.server.ip())
            );
            let _ = self.resolver.is_listening_on(transmit.local_port);
            self.sent.push(transmit);
            if self.sent.len() > 64 {
                self.sent.remove(0);
            }
        }
        while let Some((id, result)) = self.resolver.poll_result() {
            let _ = id;
            match result {
                Ok(addresses) => {
                    assert!(!addresses.is_empty(), "an empty answer");
                    let unique: HashSet<&IpAddr> = addresses.iter().collect();
                    assert_eq!(unique.len(), addresses.len(), "duplicates: {addresses:?}");
                    let first_v6 = addresses.iter().position(IpAddr::is_ipv6);
                    if let Some(at) = first_v6 {
                        assert!(addresses[at..].iter().all(IpAddr::is_ipv6), "{addresses:?}");
                    }
                    self.resolved += 1;
                }
                Err(e) => {
                    let _ = e.to_string();
                    self.failed += 1;
                }
            }
        }
        let _ = self.resolver.lookups_in_progress();
    }
}

/// The harness.
pub fn run(data: &[u8]) {
    let Some((&config, records)) = data.split_first() else {
        return;
    };
    let mut driver = Driver::new(config);
    for (tag, body) in Records::new(records) {
        driver.step(tag, body);
    }
}
