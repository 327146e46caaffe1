//! The DNS stub resolver, sans-IO.
//!
//! Every name a proxy client asks for is resolved through the DNS servers the tunnel provides
//! ([`TunnelConfig::dns_servers`]), never through the host's resolver, so a proxied name never
//! leaves the tunnel. The [`Resolver`] owns no socket: it says what to send and where
//! ([`DnsTransmit`]), the caller sends it through the user-space stack and hands the responses
//! back.
//!
//! # Driving it
//!
//! 1. [`Resolver::resolve`] starts a lookup and returns its [`LookupId`]. IP literals, the
//!    `localhost` names and answers still in the cache complete at once.
//! 2. Drain [`Resolver::poll_transmit`]. A UDP query goes from the transmit's `local_port`
//!    to its `server`; a TCP query is written, length prefix included, on a new connection to
//!    its `server`.
//! 3. Feed what comes back to [`Resolver::handle_udp_response`] or
//!    [`Resolver::handle_tcp_response`] (a failed connection to
//!    [`Resolver::handle_tcp_failure`]), and call [`Resolver::handle_timeout`] once
//!    [`Resolver::poll_timeout`] has passed.
//! 4. Drain [`Resolver::poll_result`] for finished lookups.
//!
//! # Behaviour
//!
//! Names are expanded with the search domains like resolv.conf does (`ndots`, default 1): a
//! name with fewer dots than `ndots` tries the search domains first and itself last, any
//! other name itself first, and a name ending in a dot only itself. Each candidate name is
//! asked for A, AAAA or both; a candidate that does not exist or has no address moves on to
//! the next one.
//!
//! Each query tries every server in turn, for `attempts` rounds, and the time it waits for an
//! answer doubles each round. SERVFAIL, REFUSED and the like move to the next server at once
//! and that server is not asked again for this query; a truncated answer asks the same server
//! again over TCP. A response counts only when it comes from a server the query was sent to,
//! to the port it was sent from, with the query's id and exactly its question: anything else
//! is dropped and changes nothing. Query ids and source ports are drawn from the seed.
//!
//! Answers are cached for their TTL, clamped to the configured bounds; a name that does not
//! exist, or has no address of a type, is cached for the SOA minimum the server sent (RFC
//! 2308), or a short default.

mod cache;
mod response;
#[cfg(test)]
mod tests;

use core::fmt;
use core::ops::RangeInclusive;
use core::time::Duration;
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use erebus_sansio::{Instant, Seed, SeededRng, TunnelConfig};
use erebus_wire::dns::{RecordType, emit_query, query_len};

use cache::{Cache, Cached};
use response::Verdict;

/// The port DNS servers listen on.
pub const DNS_PORT: u16 = 53;

/// The largest number of search domains used; resolv.conf has the same limit.
const MAX_SEARCH_DOMAINS: usize = 6;

/// The largest `ndots`; resolv.conf caps it the same way.
const MAX_NDOTS: u8 = 15;

/// How many ids [`Resolver::fresh_id`] draws looking for one not in flight.
const MAX_ID_DRAWS: usize = 16;

/// Which address families a lookup asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 only: A records.
    V4,
    /// IPv6 only: AAAA records.
    V6,
    /// Both: A and AAAA queries side by side; IPv4 addresses come first in the result.
    Both,
}

impl Family {
    fn record_types(self) -> &'static [RecordType] {
        match self {
            Self::V4 => &[RecordType::A],
            Self::V6 => &[RecordType::Aaaa],
            Self::Both => &[RecordType::A, RecordType::Aaaa],
        }
    }
}

/// How a query travels to its server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DnsTransport {
    /// One UDP datagram each way.
    Udp,
    /// A TCP connection carrying the query and the response, each preceded by its length as a
    /// 16-bit big-endian integer (RFC 1035 section 4.2.2).
    Tcp,
}

/// A query to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsTransmit {
    /// The server to send it to.
    pub server: SocketAddr,
    /// Over UDP or TCP.
    pub transport: DnsTransport,
    /// For UDP, the source port to send from; the response must come back to it. For TCP, a
    /// suggested source port that the caller may ignore.
    pub local_port: u16,
    /// The query's id, as in `bytes`; with `server` it names this query in
    /// [`Resolver::handle_tcp_failure`].
    pub id: u16,
    /// What to send: the DNS message for UDP, the length prefix and the message for TCP.
    pub bytes: Vec<u8>,
}

/// Names one lookup, from [`Resolver::resolve`] to its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LookupId(u64);

/// The addresses a lookup found: never empty, without duplicates, IPv4 before IPv6.
pub type Addresses = Vec<IpAddr>;

/// Why a lookup failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The name is not a valid host name: empty, a label longer than 63 characters or empty,
    /// longer than 253 characters, or characters outside printable ASCII.
    #[error("not a valid host name")]
    InvalidName,
    /// The tunnel provided no DNS server.
    #[error("the tunnel provides no DNS server")]
    NoServers,
    /// Too many lookups are running already.
    #[error("too many DNS lookups in progress")]
    TooManyLookups,
    /// The name does not exist (NXDOMAIN), under every search domain tried.
    #[error("name not found")]
    NameNotFound,
    /// The name exists but has no address of the family asked for.
    #[error("the name has no address of the requested family")]
    NoAddresses,
    /// The servers failed or refused to answer (SERVFAIL, REFUSED).
    #[error("the DNS servers failed to answer")]
    ServerFailure,
    /// No server answered in time.
    #[error("no DNS server answered in time")]
    Timeout,
}

/// Why a response was dropped. A dropped response changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ResponseDrop {
    /// The bytes are not a DNS message (or a TCP frame whose length does not match).
    #[error("malformed DNS response")]
    Malformed,
    /// No query in flight matches its server, port, id and question.
    #[error("unsolicited DNS response")]
    Unsolicited,
}

/// How the resolver behaves. [`Default`] gives resolv.conf's defaults where it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolverOptions {
    /// How long the first round of attempts waits for each server; doubled every round.
    pub attempt_timeout: Duration,
    /// The longest wait for one attempt, however many rounds have passed.
    pub max_attempt_timeout: Duration,
    /// How many rounds over all servers a query makes before it times out (at least 1).
    pub attempts: u8,
    /// Names with at least this many dots are tried as they are before the search domains
    /// (at most 15).
    pub ndots: u8,
    /// How many answers the cache keeps (name and record type each); 0 disables it.
    pub cache_capacity: usize,
    /// The shortest time an answer is cached, whatever its TTL.
    pub min_ttl: Duration,
    /// The longest time an answer is cached, whatever its TTL.
    pub max_ttl: Duration,
    /// How long a negative answer is cached when the server sent no SOA record.
    pub negative_ttl: Duration,
    /// The longest time a negative answer is cached, whatever the SOA says.
    pub max_negative_ttl: Duration,
    /// How many lookups may be in progress at once.
    pub max_lookups: usize,
    /// The source ports UDP queries are sent from, drawn at random per query.
    pub source_ports: RangeInclusive<u16>,
    /// The port of the tunnel's DNS servers.
    pub server_port: u16,
}

impl Default for ResolverOptions {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(2),
            max_attempt_timeout: Duration::from_secs(8),
            attempts: 2,
            ndots: 1,
            cache_capacity: 512,
            min_ttl: Duration::ZERO,
            max_ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(10),
            max_negative_ttl: Duration::from_secs(300),
            max_lookups: 256,
            source_ports: 49_152..=u16::MAX,
            server_port: DNS_PORT,
        }
    }
}

/// One transmission of a query that may still be answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sent {
    server: usize,
    transport: DnsTransport,
    local_port: u16,
    id: u16,
}

/// How one query (a candidate name and one record type) ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Addresses(Vec<IpAddr>),
    NoData,
    NxDomain,
    ServerFailure,
    Timeout,
}

impl From<&Cached> for Outcome {
    fn from(cached: &Cached) -> Self {
        match cached {
            Cached::Addresses(addresses) => Self::Addresses(addresses.clone()),
            Cached::NoData => Self::NoData,
            Cached::NxDomain => Self::NxDomain,
        }
    }
}

/// One record type asked about one candidate name, across servers and attempts.
#[derive(Debug)]
struct Query {
    qtype: RecordType,
    outcome: Option<Outcome>,
    /// The round over the servers, from 0.
    round: u8,
    /// The server of the current attempt, an index into the resolver's servers.
    server: usize,
    /// How the current attempt is (or is to be) sent.
    transport: DnsTransport,
    /// Whether the current attempt still has to be handed to the caller.
    send_pending: bool,
    /// When the current attempt gives up, once sent.
    deadline: Option<Instant>,
    /// Every transmission that may still be answered; a late answer from an earlier attempt
    /// is as good as one from the current attempt.
    sent: Vec<Sent>,
    /// Servers that failed or refused this query; they are skipped in later rounds.
    failed_servers: Vec<usize>,
}

impl Query {
    fn new(qtype: RecordType) -> Self {
        Self {
            qtype,
            outcome: None,
            round: 0,
            server: 0,
            transport: DnsTransport::Udp,
            send_pending: true,
            deadline: None,
            sent: Vec::new(),
            failed_servers: Vec::new(),
        }
    }

    fn finished(outcome: Outcome, qtype: RecordType) -> Self {
        Self {
            outcome: Some(outcome),
            send_pending: false,
            ..Self::new(qtype)
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        self.outcome = Some(outcome);
        self.send_pending = false;
        self.deadline = None;
        self.sent.clear();
    }

    /// Starts over from the first server, as after a change of servers.
    fn restart(&mut self) {
        *self = Self::new(self.qtype);
    }

    /// Moves to the next server that has not failed this query, starting a new round after
    /// the last one; finishes the query when every attempt is used.
    fn advance(&mut self, server_count: usize, rounds: u8) {
        self.deadline = None;
        self.send_pending = false;
        self.transport = DnsTransport::Udp;
        loop {
            self.server += 1;
            if self.server >= server_count {
                self.server = 0;
                self.round = self.round.saturating_add(1);
            }
            if self.round >= rounds {
                let outcome = if self.failed_servers.is_empty() {
                    Outcome::Timeout
                } else {
                    Outcome::ServerFailure
                };
                self.finish(outcome);
                return;
            }
            if self.failed_servers.len() >= server_count {
                self.finish(Outcome::ServerFailure);
                return;
            }
            if !self.failed_servers.contains(&self.server) {
                self.send_pending = true;
                return;
            }
        }
    }
}

/// A lookup in progress: the candidate names and the queries for the current one.
#[derive(Debug)]
struct Lookup {
    family: Family,
    /// Fully qualified names to try in order, lower-cased, without the trailing dot.
    candidates: Vec<String>,
    candidate: usize,
    queries: Vec<Query>,
    /// Whether an earlier candidate existed without an address of the family.
    saw_no_data: bool,
    /// Whether an earlier candidate could not be answered by any server.
    saw_server_failure: bool,
}

impl Lookup {
    fn name(&self) -> &str {
        self.candidates
            .get(self.candidate)
            .map_or("", String::as_str)
    }
}

/// A DNS stub resolver over the tunnel's DNS servers, as a pure state machine.
///
/// See the [module documentation](self) for how to drive it.
pub struct Resolver {
    options: ResolverOptions,
    servers: Vec<SocketAddr>,
    search_domains: Vec<String>,
    rng: SeededRng,
    cache: Cache,
    lookups: BTreeMap<LookupId, Lookup>,
    results: VecDeque<(LookupId, Result<Addresses, ResolveError>)>,
    next_lookup: u64,
    /// The latest `now` seen; time never goes backwards.
    last_now: Instant,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("servers", &self.servers)
            .field("search_domains", &self.search_domains)
            .field("lookups", &self.lookups.len())
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver over the DNS servers and search domains of `tunnel`, drawing query ids and
    /// source ports from the child `"net.dns"` of `seed`.
    pub fn new(tunnel: &TunnelConfig, options: ResolverOptions, seed: &Seed) -> Self {
        let mut resolver = Self {
            cache: Cache::new(options.cache_capacity),
            options,
            servers: Vec::new(),
            search_domains: Vec::new(),
            rng: seed.child("net.dns").rng(),
            lookups: BTreeMap::new(),
            results: VecDeque::new(),
            next_lookup: 0,
            last_now: Instant::ZERO,
        };
        resolver.set_tunnel_config(tunnel);
        resolver
    }

    /// Takes the DNS servers and search domains of a new tunnel configuration, as after a
    /// reconnect.
    ///
    /// When the servers change, the cache is emptied (the answers came from another view of
    /// the network) and the queries in flight start over on the new servers, or fail with
    /// [`ResolveError::NoServers`] when there are none. Lookups in progress keep the search
    /// domains they started with.
    pub fn set_tunnel_config(&mut self, tunnel: &TunnelConfig) {
        let port = self.options.server_port;
        let mut servers: Vec<SocketAddr> = Vec::new();
        for ip in &tunnel.dns_servers {
            let server = SocketAddr::new(*ip, port);
            if !ip.is_unspecified() && !servers.contains(&server) {
                servers.push(server);
            }
        }
        let mut search_domains: Vec<String> = Vec::new();
        for domain in &tunnel.search_domains {
            let domain = domain.trim_matches('.').to_ascii_lowercase();
            if query_len(&domain).is_ok() && !search_domains.contains(&domain) {
                search_domains.push(domain);
            }
        }
        search_domains.truncate(MAX_SEARCH_DOMAINS);
        self.search_domains = search_domains;

        if servers == self.servers {
            return;
        }
        self.servers = servers;
        self.cache.clear();
        if self.servers.is_empty() {
            let ids: Vec<LookupId> = self.lookups.keys().copied().collect();
            for id in ids {
                self.complete(id, Err(ResolveError::NoServers));
            }
            return;
        }
        for lookup in self.lookups.values_mut() {
            for query in &mut lookup.queries {
                if query.outcome.is_none() {
                    query.restart();
                }
            }
        }
    }

    /// The DNS servers in use, in order of preference.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// The search domains in use, in order.
    pub fn search_domains(&self) -> &[String] {
        &self.search_domains
    }

    /// Starts looking up the addresses of `name`.
    ///
    /// An IP literal (`10.1.2.3`, `fd00::1`, `[fd00::1]`) is its own answer, whatever
    /// `family` says. `localhost` and names under it are the loopback addresses; names under
    /// `invalid` and `onion` (RFC 6761, RFC 7686) do not exist. These, and names whose answers
    /// are all in the cache, complete at once: the result is ready in
    /// [`poll_result`](Self::poll_result) before this returns.
    ///
    /// # Errors
    ///
    /// [`ResolveError::InvalidName`] when `name` is not a host name,
    /// [`ResolveError::NoServers`] when the tunnel gave no DNS server and the cache cannot
    /// answer, and [`ResolveError::TooManyLookups`] at the limit of lookups in progress.
    pub fn resolve(
        &mut self,
        now: Instant,
        name: &str,
        family: Family,
    ) -> Result<LookupId, ResolveError> {
        let now = self.clock(now);
        if let Some(ip) = ip_literal(name) {
            return Ok(self.push_result(Ok(vec![ip])));
        }
        if query_len(name).is_err() {
            return Err(ResolveError::InvalidName);
        }
        if let Some(answer) = special_use_answer(name, family) {
            return Ok(self.push_result(answer));
        }
        if self.lookups.len() >= self.options.max_lookups {
            return Err(ResolveError::TooManyLookups);
        }
        let candidates = self.candidates(name);
        if candidates.is_empty() {
            return Err(ResolveError::InvalidName);
        }
        let id = LookupId(self.next_lookup);
        self.next_lookup += 1;
        let lookup = Lookup {
            family,
            candidates,
            candidate: 0,
            queries: Vec::new(),
            saw_no_data: false,
            saw_server_failure: false,
        };
        self.lookups.insert(id, lookup);
        self.start_candidate(now, id);
        let waiting_on_servers = self
            .lookups
            .get(&id)
            .is_some_and(|lookup| lookup.queries.iter().any(|q| q.outcome.is_none()));
        if waiting_on_servers && self.servers.is_empty() {
            self.lookups.remove(&id);
            return Err(ResolveError::NoServers);
        }
        Ok(id)
    }

    /// Abandons a lookup: nothing more is sent for it and no result is reported, even one
    /// already waiting in [`poll_result`](Self::poll_result). Returns whether it existed.
    pub fn cancel(&mut self, id: LookupId) -> bool {
        let running = self.lookups.remove(&id).is_some();
        let queued = self.results.len();
        self.results.retain(|(lookup, _)| *lookup != id);
        running || self.results.len() != queued
    }

    /// How many lookups are waiting for servers.
    pub fn lookups_in_progress(&self) -> usize {
        self.lookups.len()
    }

    /// The next query to send, or `None` when there is nothing to send.
    ///
    /// The wait for its answer starts at `now`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<DnsTransmit> {
        let now = self.clock(now);
        loop {
            let (lookup_id, index) = self.lookups.iter().find_map(|(id, lookup)| {
                let index = lookup.queries.iter().position(|q| q.send_pending)?;
                Some((*id, index))
            })?;
            if let Some(transmit) = self.transmit(now, lookup_id, index) {
                return Some(transmit);
            }
        }
    }

    /// Sends the pending attempt of one query. `None` when it cannot be sent, which finishes
    /// the query, so the caller's loop moves on.
    fn transmit(&mut self, now: Instant, lookup_id: LookupId, index: usize) -> Option<DnsTransmit> {
        let (server_index, transport, qtype, round, name) = {
            let lookup = self.lookups.get(&lookup_id)?;
            let query = lookup.queries.get(index)?;
            let name = lookup.name().to_owned();
            (
                query.server,
                query.transport,
                query.qtype,
                query.round,
                name,
            )
        };
        let server = self.servers.get(server_index).copied();
        let len = query_len(&name).ok();
        let (Some(server), Some(len)) = (server, len) else {
            // Cannot happen: set_tunnel_config restarts queries on new servers, and names were
            // validated when the lookup started. Failing the query beats sending nowhere.
            self.finish_query(now, lookup_id, index, Outcome::ServerFailure);
            return None;
        };
        let id = self.fresh_id(server_index);
        let local_port = self.fresh_port();
        let prefix = match transport {
            DnsTransport::Udp => 0,
            DnsTransport::Tcp => 2,
        };
        let mut bytes = vec![0; prefix + len];
        let written = bytes
            .get_mut(prefix..)
            .and_then(|message| emit_query(message, id, &name, qtype, true).ok());
        let frame_len = u16::try_from(len).ok();
        let (Some(_), Some(frame_len)) = (written, frame_len) else {
            self.finish_query(now, lookup_id, index, Outcome::ServerFailure);
            return None;
        };
        if let (DnsTransport::Tcp, Some(length)) = (transport, bytes.get_mut(..2)) {
            length.copy_from_slice(&frame_len.to_be_bytes());
        }
        let timeout = self.attempt_timeout(round);
        let query = self.lookups.get_mut(&lookup_id)?.queries.get_mut(index)?;
        query.send_pending = false;
        query.deadline = Some(now + timeout);
        query.sent.push(Sent {
            server: server_index,
            transport,
            local_port,
            id,
        });
        Some(DnsTransmit {
            server,
            transport,
            local_port,
            id,
            bytes,
        })
    }

    /// Whether a UDP query is waiting for an answer on `local_port`: lets the stack hand the
    /// resolver exactly the datagrams meant for it.
    pub fn is_listening_on(&self, local_port: u16) -> bool {
        self.lookups.values().any(|lookup| {
            lookup.queries.iter().any(|query| {
                query.sent.iter().any(|sent| {
                    sent.transport == DnsTransport::Udp && sent.local_port == local_port
                })
            })
        })
    }

    /// Processes a UDP datagram from `from` to our port `local_port`.
    ///
    /// # Errors
    ///
    /// Says why the datagram was dropped; a dropped datagram changes nothing.
    pub fn handle_udp_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        local_port: u16,
        bytes: &[u8],
    ) -> Result<(), ResponseDrop> {
        let now = self.clock(now);
        let id = message_id(bytes)?;
        self.handle_response(now, from, DnsTransport::Udp, Some(local_port), id, bytes)
    }

    /// Processes the response read from a TCP connection to `from`: the two-byte length
    /// prefix and the message, as [`tcp_frame_len`] delimits it.
    ///
    /// # Errors
    ///
    /// Says why the response was dropped; a dropped response changes nothing.
    pub fn handle_tcp_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        frame: &[u8],
    ) -> Result<(), ResponseDrop> {
        let now = self.clock(now);
        if tcp_frame_len(frame) != Some(frame.len()) {
            return Err(ResponseDrop::Malformed);
        }
        let message = frame.get(2..).ok_or(ResponseDrop::Malformed)?;
        let id = message_id(message)?;
        self.handle_response(now, from, DnsTransport::Tcp, None, id, message)
    }

    /// Reports that the TCP connection carrying query `id` to `server` failed or closed
    /// without a response: the query moves on to the next server without waiting for its
    /// timeout. Returns whether such a query was waiting.
    pub fn handle_tcp_failure(&mut self, now: Instant, server: SocketAddr, id: u16) -> bool {
        let now = self.clock(now);
        let Some(server_index) = self.servers.iter().position(|s| *s == server) else {
            return false;
        };
        let Some((lookup_id, index, _)) = self.find_sent(server_index, DnsTransport::Tcp, None, id)
        else {
            return false;
        };
        let server_count = self.servers.len();
        let rounds = self.options.attempts.max(1);
        let Some(query) = self
            .lookups
            .get_mut(&lookup_id)
            .and_then(|lookup| lookup.queries.get_mut(index))
        else {
            return false;
        };
        query
            .sent
            .retain(|sent| !(sent.server == server_index && sent.id == id));
        let current = query.server == server_index
            && query.transport == DnsTransport::Tcp
            && query.deadline.is_some();
        if current {
            query.advance(server_count, rounds);
            self.after_query_change(now, lookup_id);
        }
        true
    }

    /// Runs the attempts whose wait ended at or before `now`: each moves on to the next
    /// server, or fails its query when it was the last.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock(now);
        let server_count = self.servers.len();
        let rounds = self.options.attempts.max(1);
        let mut changed = Vec::new();
        for (id, lookup) in &mut self.lookups {
            let mut any = false;
            for query in &mut lookup.queries {
                if query.deadline.is_some_and(|deadline| deadline <= now) {
                    query.advance(server_count, rounds);
                    any = true;
                }
            }
            if any {
                changed.push(*id);
            }
        }
        for id in changed {
            self.after_query_change(now, id);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due, if any query sent is
    /// waiting for its answer. Queries not yet drained from
    /// [`poll_transmit`](Self::poll_transmit) have no deadline: drain it first.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.lookups
            .values()
            .flat_map(|lookup| lookup.queries.iter())
            .filter_map(|query| query.deadline)
            .min()
    }

    /// The next finished lookup and its addresses, or why it failed.
    pub fn poll_result(&mut self) -> Option<(LookupId, Result<Addresses, ResolveError>)> {
        self.results.pop_front()
    }

    fn clock(&mut self, now: Instant) -> Instant {
        self.last_now = self.last_now.max(now);
        self.last_now
    }

    fn push_result(&mut self, result: Result<Addresses, ResolveError>) -> LookupId {
        let id = LookupId(self.next_lookup);
        self.next_lookup += 1;
        self.results.push_back((id, result));
        id
    }

    fn complete(&mut self, id: LookupId, result: Result<Addresses, ResolveError>) {
        if self.lookups.remove(&id).is_some() {
            self.results.push_back((id, result));
        }
    }

    /// The fully qualified names to try for `name`, in order (resolv.conf's rules).
    fn candidates(&self, name: &str) -> Vec<String> {
        let lower = name.to_ascii_lowercase();
        if let Some(absolute) = lower.strip_suffix('.') {
            return vec![absolute.to_owned()];
        }
        let dots = lower.bytes().filter(|&b| b == b'.').count();
        let as_is_first = dots >= usize::from(self.options.ndots.min(MAX_NDOTS));
        let mut candidates = Vec::new();
        if as_is_first {
            candidates.push(lower.clone());
        }
        for domain in &self.search_domains {
            let candidate = format!("{lower}.{domain}");
            if query_len(&candidate).is_ok() && !candidates.contains(&candidate) {
                candidates.push(candidate);
            }
        }
        if !as_is_first && !candidates.contains(&lower) {
            candidates.push(lower);
        }
        candidates
    }

    /// Sets up the queries of the lookup's current candidate, answering from the cache what
    /// it can, and moves on while the cache settles whole candidates.
    fn start_candidate(&mut self, now: Instant, id: LookupId) {
        let Some(lookup) = self.lookups.get_mut(&id) else {
            return;
        };
        let name = lookup.name().to_owned();
        lookup.queries = lookup
            .family
            .record_types()
            .iter()
            .map(|&qtype| match self.cache.get(now, &name, qtype) {
                Some(cached) => Query::finished(Outcome::from(cached), qtype),
                None => Query::new(qtype),
            })
            .collect();
        self.after_query_change(now, id);
    }

    /// Once every query of the current candidate has finished, completes the lookup or moves
    /// to the next candidate.
    fn after_query_change(&mut self, now: Instant, id: LookupId) {
        let Some(lookup) = self.lookups.get_mut(&id) else {
            return;
        };
        let mut outcomes = Vec::with_capacity(lookup.queries.len());
        for query in &lookup.queries {
            match &query.outcome {
                Some(outcome) => outcomes.push(outcome),
                None => return,
            }
        }
        let mut addresses = Vec::new();
        let mut timed_out = false;
        for outcome in outcomes {
            match outcome {
                Outcome::Addresses(found) => addresses.extend(found.iter().copied()),
                Outcome::NoData => lookup.saw_no_data = true,
                Outcome::ServerFailure => lookup.saw_server_failure = true,
                Outcome::Timeout => timed_out = true,
                Outcome::NxDomain => {}
            }
        }
        // Addresses of one family are worth returning even when the other family's query
        // failed: the caller can connect.
        if !addresses.is_empty() {
            self.complete(id, Ok(addresses));
            return;
        }
        // Servers that do not answer will not answer for the next candidate either.
        if timed_out {
            self.complete(id, Err(ResolveError::Timeout));
            return;
        }
        lookup.candidate += 1;
        if lookup.candidate < lookup.candidates.len() {
            self.start_candidate(now, id);
            return;
        }
        // Like resolv.conf: a name that exists somewhere says more than a failure, and a
        // failure more than "not found".
        let error = if lookup.saw_no_data {
            ResolveError::NoAddresses
        } else if lookup.saw_server_failure {
            ResolveError::ServerFailure
        } else {
            ResolveError::NameNotFound
        };
        self.complete(id, Err(error));
    }

    fn finish_query(&mut self, now: Instant, id: LookupId, index: usize, outcome: Outcome) {
        if let Some(query) = self
            .lookups
            .get_mut(&id)
            .and_then(|lookup| lookup.queries.get_mut(index))
        {
            query.finish(outcome);
        }
        self.after_query_change(now, id);
    }

    /// The lookup and query that sent query `id` to `server` over `transport` (from
    /// `local_port`, for UDP), and the transmission's index in the query's list.
    fn find_sent(
        &self,
        server: usize,
        transport: DnsTransport,
        local_port: Option<u16>,
        id: u16,
    ) -> Option<(LookupId, usize, usize)> {
        self.lookups.iter().find_map(|(lookup_id, lookup)| {
            lookup
                .queries
                .iter()
                .enumerate()
                .find_map(|(index, query)| {
                    let sent = query.sent.iter().position(|sent| {
                        sent.server == server
                            && sent.transport == transport
                            && sent.id == id
                            && local_port.is_none_or(|port| port == sent.local_port)
                    })?;
                    Some((*lookup_id, index, sent))
                })
        })
    }

    fn handle_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transport: DnsTransport,
        local_port: Option<u16>,
        id: u16,
        message: &[u8],
    ) -> Result<(), ResponseDrop> {
        let server = self
            .servers
            .iter()
            .position(|s| *s == from)
            .ok_or(ResponseDrop::Unsolicited)?;
        let (lookup_id, index, sent_index) = self
            .find_sent(server, transport, local_port, id)
            .ok_or(ResponseDrop::Unsolicited)?;
        let lookup = self
            .lookups
            .get(&lookup_id)
            .ok_or(ResponseDrop::Unsolicited)?;
        let query = lookup.queries.get(index).ok_or(ResponseDrop::Unsolicited)?;
        let name = lookup.name().to_owned();
        let qtype = query.qtype;
        let verdict = response::interpret(message, id, &name, qtype)?;

        let server_count = self.servers.len();
        let rounds = self.options.attempts.max(1);
        let options = &self.options;
        let Some(query) = self
            .lookups
            .get_mut(&lookup_id)
            .and_then(|lookup| lookup.queries.get_mut(index))
        else {
            return Err(ResponseDrop::Unsolicited);
        };
        query.sent.remove(sent_index);
        match verdict {
            Verdict::Truncated if transport == DnsTransport::Udp => {
                // Ask the server that has the long answer again, over TCP.
                query.server = server;
                query.transport = DnsTransport::Tcp;
                query.send_pending = true;
                query.deadline = None;
                return Ok(());
            }
            Verdict::Truncated | Verdict::ServerFailure => {
                if !query.failed_servers.contains(&server) {
                    query.failed_servers.push(server);
                }
                let current = query.server == server && !query.send_pending;
                if current {
                    query.advance(server_count, rounds);
                } else if query.failed_servers.len() >= server_count {
                    query.finish(Outcome::ServerFailure);
                }
            }
            Verdict::Addresses { addresses, ttl } => {
                let ttl = Duration::from_secs(u64::from(ttl))
                    .clamp(options.min_ttl, options.max_ttl.max(options.min_ttl));
                self.cache.insert(
                    now,
                    &name,
                    qtype,
                    now + ttl,
                    Cached::Addresses(addresses.clone()),
                );
                query.finish(Outcome::Addresses(addresses));
            }
            Verdict::NoData { negative_ttl } => {
                let expires = now + negative_ttl_of(options, negative_ttl);
                self.cache
                    .insert(now, &name, qtype, expires, Cached::NoData);
                query.finish(Outcome::NoData);
            }
            Verdict::NxDomain { negative_ttl } => {
                // The name does not exist, whatever the type: remember it for both.
                let expires = now + negative_ttl_of(options, negative_ttl);
                for qtype in Family::Both.record_types() {
                    self.cache
                        .insert(now, &name, *qtype, expires, Cached::NxDomain);
                }
                query.finish(Outcome::NxDomain);
            }
        }
        self.after_query_change(now, lookup_id);
        Ok(())
    }

    /// How long the attempts of round `round` wait: doubling from the first, up to the cap.
    fn attempt_timeout(&self, round: u8) -> Duration {
        let factor = 1u32.checked_shl(u32::from(round)).unwrap_or(u32::MAX);
        self.options.attempt_timeout.saturating_mul(factor).min(
            self.options
                .max_attempt_timeout
                .max(self.options.attempt_timeout),
        )
    }

    /// A random id, not used by any query in flight to `server` when one is free after a
    /// few draws, so that each response names exactly one query. (A clash would still be
    /// told apart by the question; the bound only keeps a huge `max_lookups` from looping.)
    fn fresh_id(&mut self, server: usize) -> u16 {
        let mut id = (self.rng.next_u32() >> 16) as u16;
        for _ in 0..MAX_ID_DRAWS {
            if self
                .find_sent(server, DnsTransport::Udp, None, id)
                .is_none()
                && self
                    .find_sent(server, DnsTransport::Tcp, None, id)
                    .is_none()
            {
                break;
            }
            id = (self.rng.next_u32() >> 16) as u16;
        }
        id
    }

    /// A random source port from the configured range.
    fn fresh_port(&mut self) -> u16 {
        let (first, last) = (
            *self.options.source_ports.start(),
            *self.options.source_ports.end(),
        );
        let (first, last) = (first.min(last), first.max(last));
        let span = u32::from(last - first) + 1;
        first.saturating_add(self.rng.below(span) as u16)
    }
}

/// How long a negative answer is cached: the SOA's word if there was one, the default if not,
/// never more than the cap.
fn negative_ttl_of(options: &ResolverOptions, soa: Option<u32>) -> Duration {
    soa.map_or(options.negative_ttl, |secs| {
        Duration::from_secs(u64::from(secs))
    })
    .min(options.max_negative_ttl)
}

/// The id of a DNS message, or [`ResponseDrop::Malformed`] if it is too short to have one.
fn message_id(message: &[u8]) -> Result<u16, ResponseDrop> {
    match message.get(..2) {
        Some(&[high, low]) => Ok(u16::from_be_bytes([high, low])),
        _ => Err(ResponseDrop::Malformed),
    }
}

/// The length of the first whole DNS-over-TCP frame at the start of `stream` (the two-byte
/// length prefix and the message), or `None` while it is incomplete.
pub fn tcp_frame_len(stream: &[u8]) -> Option<usize> {
    let prefix = stream.get(..2)?;
    let len = 2 + usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
    (stream.len() >= len).then_some(len)
}

/// The address `name` spells, if it is an IP literal (IPv6 possibly in brackets).
fn ip_literal(name: &str) -> Option<IpAddr> {
    let literal = name
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(name);
    literal.parse().ok()
}

/// The answer to the special-use names that must never go to a server: `localhost` and names
/// under it are the loopback addresses (RFC 6761 section 6.3), names under `invalid` and
/// `onion` do not exist (RFC 6761 section 6.4, RFC 7686).
fn special_use_answer(name: &str, family: Family) -> Option<Result<Addresses, ResolveError>> {
    let lower = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let under = |domain: &str| {
        lower == domain
            || lower
                .strip_suffix(domain)
                .is_some_and(|rest| rest.ends_with('.'))
    };
    if under("localhost") {
        let addresses = match family {
            Family::V4 => vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            Family::V6 => vec![IpAddr::V6(Ipv6Addr::LOCALHOST)],
            Family::Both => vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ],
        };
        return Some(Ok(addresses));
    }
    (under("invalid") || under("onion")).then_some(Err(ResolveError::NameNotFound))
}
